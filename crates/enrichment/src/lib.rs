//! Enrichment groups cached per (resource, namespace) until their TTL, for
//! polling plugins to read through the `enrichment-cache` import.
//!
//! In this process's memory by default; in Redis when agents share a site
//! (`[cache] backend = "redis"`, through an [`EnrichmentStore`]), with the local
//! copy as the fallback while Redis is unreachable. Both apply the same
//! rules.
//!
//! # Ownership
//!
//! A namespace belongs to the first enrichment plugin that writes it, for
//! as long as it has a cached entry anywhere. Another plugin writing it is
//! refused (its group is dropped, the owner's entries are untouched),
//! counted, and named in the run's detail and the log; so a polling plugin
//! that preloads `self:interface` reads what the interface enrichment
//! wrote, never a neighbour's forgery (before: last writer won). When the
//! namespace's last entry expires or is evicted it is free again.
//!
//! # Bounds ([`EnrichmentLimits`], `[enrichment]` in the site config)
//!
//! A plugin chooses namespaces, TTLs and sizes; the host bounds each, so
//! the cache's memory is at most `max_bytes` whatever plugins do (before,
//! a new namespace per run with a TTL of `u64::MAX` grew it forever):
//!
//! | limit | default | ceiling | why |
//! |---|---|---|---|
//! | `max_ttl` | 1 day | 30 days | enrichment is refreshed every few intervals (Panoptes: 3) |
//! | `max_namespaces_per_resource` | 32 | 1,024 | the bundled plugins use 1 or 2 per resource |
//! | `max_sets_per_group` | 10,000 | 100,000 | one set per interface; the largest chassis recorded has about 1,200 |
//! | `max_values_per_set` | 64 | 256 | an interface set has about 10 |
//! | `max_entries` | 100,000 | 10,000,000 | 10,000 devices with 10 namespaces each |
//! | `max_bytes` | 512 MiB | 64 GiB | 10,000 devices with a 48-port interface group of about 15 KB take 150 MB |
//!
//! The TTL is the smallest of the group's, the plugin ini's
//! `enrichment_ttl` and `max_ttl`. Groups over the set or value bounds are
//! refused whole (a truncated enrichment would silently mislabel series).
//! When a write takes the cache past `max_entries` or `max_bytes`, the
//! entries closest to expiry are evicted (and counted) until it fits: they
//! are the ones that would have gone first anyway, and a hostile flood of
//! long-lived entries evicts its own oldest entries as much as anyone's.
//! Entries are charged [`group_bytes`]: their strings plus 64 bytes per
//! value, 96 per set and 512 per entry, close to what the host allocates
//! (see [`group_bytes`] for the measurement).
//!
//! Expired entries are dropped in expiry order (an ordered index, so a
//! sweep costs O(expired * log n), not a scan of the whole cache).

/// Sets (keys) in one enrichment group: an interface enrichment has one set
/// per interface.
pub const MAX_SETS: usize = 100_000;
/// Values in one enrichment set.
pub const MAX_SET_VALUES: usize = 256;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;

use vigil_core::LocatedError;
use vigil_core::model::EnrichmentGroup;

/// Refusals named one by one in a [`PutSummary`]; the rest are counted.
pub const REFUSALS_NAMED: usize = 8;

/// Bounds on the enrichment cache; see the module doc for the numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichmentLimits {
    pub max_ttl: Duration,
    pub max_namespaces_per_resource: usize,
    pub max_sets_per_group: usize,
    pub max_values_per_set: usize,
    pub max_entries: usize,
    pub max_bytes: u64,
}

impl Default for EnrichmentLimits {
    fn default() -> Self {
        EnrichmentLimits {
            max_ttl: Duration::from_secs(86_400),
            max_namespaces_per_resource: 32,
            max_sets_per_group: 10_000,
            max_values_per_set: 64,
            max_entries: 100_000,
            max_bytes: 512 << 20,
        }
    }
}

/// `(key, ceiling)` of each count limit, in the order of the module doc.
const CEILINGS: [(&str, u64); 5] = [
    ("max_namespaces_per_resource", 1_024),
    ("max_sets_per_group", MAX_SETS as u64),
    ("max_values_per_set", MAX_SET_VALUES as u64),
    ("max_entries", 10_000_000),
    ("max_bytes", 64 << 30),
];
const MAX_TTL_CEILING: Duration = Duration::from_secs(30 * 86_400);

/// `[enrichment]` as written in the site config.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichmentSection {
    max_ttl: Option<toml::Spanned<String>>,
    max_namespaces_per_resource: Option<toml::Spanned<u64>>,
    max_sets_per_group: Option<toml::Spanned<u64>>,
    max_values_per_set: Option<toml::Spanned<u64>>,
    max_entries: Option<toml::Spanned<u64>>,
    max_bytes: Option<toml::Spanned<String>>,
}

impl EnrichmentSection {
    pub fn resolve(&self, at: vigil_core::At<'_>) -> Result<EnrichmentLimits, LocatedError> {
        let mut limits = EnrichmentLimits::default();
        if let Some(written) = &self.max_ttl {
            let ttl = vigil_core::units::parse_duration(written.get_ref())
                .map_err(|e| at(written.span(), format!("enrichment.max_ttl: {e}")))?;
            if ttl < Duration::from_secs(1) || ttl > MAX_TTL_CEILING {
                return Err(at(
                    written.span(),
                    format!(
                        "enrichment.max_ttl must be 1s to {}h, found {:?}",
                        MAX_TTL_CEILING.as_secs() / 3600,
                        written.get_ref()
                    ),
                ));
            }
            limits.max_ttl = ttl;
        }
        let bytes = match &self.max_bytes {
            None => None,
            Some(written) => Some(toml::Spanned::new(
                written.span(),
                vigil_core::units::parse_size(written.get_ref())
                    .map_err(|e| at(written.span(), format!("enrichment.max_bytes: {e}")))?,
            )),
        };
        let values = [
            &self.max_namespaces_per_resource,
            &self.max_sets_per_group,
            &self.max_values_per_set,
            &self.max_entries,
            &bytes,
        ];
        let mut resolved = [0u64; 5];
        for (i, ((key, ceiling), value)) in CEILINGS.iter().zip(values).enumerate() {
            resolved[i] = match value {
                None => 0,
                Some(v) if (1..=*ceiling).contains(v.get_ref()) => *v.get_ref(),
                Some(v) => {
                    return Err(at(
                        v.span(),
                        format!(
                            "enrichment.{key} must be 1 to {ceiling}, found {}",
                            v.get_ref()
                        ),
                    ));
                }
            };
        }
        let set = |slot: &mut usize, value: u64| {
            if value > 0 {
                *slot = usize::try_from(value).unwrap_or(usize::MAX);
            }
        };
        set(&mut limits.max_namespaces_per_resource, resolved[0]);
        set(&mut limits.max_sets_per_group, resolved[1]);
        set(&mut limits.max_values_per_set, resolved[2]);
        set(&mut limits.max_entries, resolved[3]);
        if resolved[4] > 0 {
            limits.max_bytes = resolved[4];
        }
        Ok(limits)
    }
}

/// Why a group was not cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrichmentRefusal {
    /// The namespace has live entries written by another plugin.
    Owned { namespace: String, owner: String },
    /// The resource already has `max_namespaces_per_resource` namespaces.
    Namespaces { namespace: String, limit: usize },
    /// Over `max_sets_per_group`, `max_values_per_set` or `max_bytes`.
    TooLarge { namespace: String, what: String },
}

impl std::fmt::Display for EnrichmentRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnrichmentRefusal::Owned { namespace, owner } => {
                write!(f, "namespace {namespace:?} is owned by {owner:?}")
            }
            EnrichmentRefusal::Namespaces { namespace, limit } => write!(
                f,
                "namespace {namespace:?} would be past max_namespaces_per_resource = {limit}"
            ),
            EnrichmentRefusal::TooLarge { namespace, what } => {
                write!(f, "namespace {namespace:?}: {what}")
            }
        }
    }
}

/// What one enrichment run's groups did to the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutSummary {
    pub stored: usize,
    /// Groups for a namespace another plugin owns.
    pub conflicts: usize,
    /// Groups past the per-resource namespace bound.
    pub over_namespaces: usize,
    /// Groups over the set, value or byte bounds.
    pub too_large: usize,
    /// Entries (anyone's) evicted to make room.
    pub evicted: usize,
    /// The first [`REFUSALS_NAMED`] refusals.
    pub refusals: Vec<EnrichmentRefusal>,
}

impl PutSummary {
    fn refuse(&mut self, refusal: EnrichmentRefusal) {
        *match &refusal {
            EnrichmentRefusal::Owned { .. } => &mut self.conflicts,
            EnrichmentRefusal::Namespaces { .. } => &mut self.over_namespaces,
            EnrichmentRefusal::TooLarge { .. } => &mut self.too_large,
        } += 1;
        if self.refusals.len() < REFUSALS_NAMED {
            self.refusals.push(refusal);
        }
    }

    pub fn refused(&self) -> usize {
        self.conflicts + self.over_namespaces + self.too_large
    }

    /// Adds what another stage decided.
    fn absorb(&mut self, other: PutSummary) {
        self.stored += other.stored;
        self.evicted += other.evicted;
        self.conflicts += other.conflicts;
        self.over_namespaces += other.over_namespaces;
        self.too_large += other.too_large;
        for refusal in other.refusals {
            if self.refusals.len() < REFUSALS_NAMED {
                self.refusals.push(refusal);
            }
        }
    }

    /// `"N enrichment groups (S cached)"`, then refusals and evictions.
    pub fn describe(&self, reported: usize) -> String {
        let mut text = format!("{reported} enrichment groups ({} cached)", self.stored);
        if self.refused() > 0 {
            let named: Vec<String> = self.refusals.iter().map(ToString::to_string).collect();
            text.push_str(&format!(
                "; refused {} ({} owned by another plugin, {} past the namespace bound, {} too large): {}",
                self.refused(),
                self.conflicts,
                self.over_namespaces,
                self.too_large,
                named.join("; ")
            ));
        }
        if self.evicted > 0 {
            text.push_str(&format!(
                "; {} entries closest to expiry evicted (cache full)",
                self.evicted
            ));
        }
        text
    }
}

/// Bytes charged per value (two strings' headers and allocations), per set
/// (a key and a list) and per entry (its keys in the three indexes and the
/// namespace's owner record). Measured: 100,000 entries of one 512-byte
/// value each raised the peak RSS of a test process by about 160 MB while
/// churning through 300,000 writes; these constants charge them 114 MB
/// (the rest is allocator slack from the churn).
const VALUE_OVERHEAD: u64 = 64;
const SET_OVERHEAD: u64 = 96;
const ENTRY_OVERHEAD: u64 = 512;

/// What an entry is charged against `max_bytes`.
pub fn group_bytes(group: &EnrichmentGroup) -> u64 {
    let sets: u64 = group
        .sets
        .iter()
        .map(|s| {
            let values: u64 = s
                .values
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64 + VALUE_OVERHEAD)
                .sum();
            s.key.len() as u64 + values + SET_OVERHEAD
        })
        .sum();
    group.namespace.len() as u64 + sets + ENTRY_OVERHEAD
}

/// Checks the bounds a group must meet on its own; returns what it breaks.
fn oversize(group: &EnrichmentGroup, limits: &EnrichmentLimits) -> Option<String> {
    if group.sets.len() > limits.max_sets_per_group {
        return Some(format!(
            "{} sets, max_sets_per_group = {}",
            group.sets.len(),
            limits.max_sets_per_group
        ));
    }
    if let Some(set) = group
        .sets
        .iter()
        .find(|s| s.values.len() > limits.max_values_per_set)
    {
        return Some(format!(
            "{} values under key {:?}, max_values_per_set = {}",
            set.values.len(),
            set.key,
            limits.max_values_per_set
        ));
    }
    let bytes = group_bytes(group);
    if bytes > limits.max_bytes {
        return Some(format!(
            "{bytes} bytes, more than the whole cache (max_bytes = {})",
            limits.max_bytes
        ));
    }
    None
}

/// A group the host accepted for caching, with its effective TTL.
pub struct Admitted {
    pub group: EnrichmentGroup,
    pub ttl: f64,
    pub bytes: u64,
}

/// Applies the checks that need no state: sizes, and the TTL (the
/// smallest of the group's, the plugin's and the site's).
fn admit(
    groups: Vec<EnrichmentGroup>,
    limits: &EnrichmentLimits,
    plugin_max_ttl: Option<f64>,
    summary: &mut PutSummary,
) -> Vec<Admitted> {
    let site_max = limits.max_ttl.as_secs_f64().max(1.0);
    let max_ttl = plugin_max_ttl.map_or(site_max, |p| p.min(site_max));
    let mut admitted = Vec::with_capacity(groups.len());
    for mut group in groups {
        if let Some(what) = oversize(&group, limits) {
            summary.refuse(EnrichmentRefusal::TooLarge {
                namespace: group.namespace.clone(),
                what,
            });
            continue;
        }
        let ttl = (group.ttl_seconds as f64).min(max_ttl).max(1.0);
        group.ttl_seconds = ttl as u64;
        let bytes = group_bytes(&group);
        admitted.push(Admitted { group, ttl, bytes });
    }
    admitted
}

type Key = (String, String);

struct Entry {
    group: EnrichmentGroup,
    expires: f64,
    bytes: u64,
}

/// The in-memory cache and its indexes.
#[derive(Default)]
struct Local {
    entries: HashMap<Key, Entry>,
    /// `(expiry as ordered bits, resource, namespace)`: soonest first.
    by_expiry: BTreeSet<(u64, String, String)>,
    /// Namespace -> (owner, live entries).
    owners: HashMap<String, (String, usize)>,
    /// Resource -> namespaces cached for it.
    per_resource: HashMap<String, usize>,
    bytes: u64,
    /// Evictions are recorded for the mirror (drained after each put, so
    /// at most one put's worth is held).
    track_evictions: bool,
    evicted_keys: Vec<Key>,
}

/// Orders non-negative times by their bits (monotonic for f64 >= 0).
fn order(expires: f64) -> u64 {
    if expires.is_nan() {
        0
    } else {
        expires.max(0.0).to_bits()
    }
}

impl Local {
    /// The live entry of (`resource_id`, `namespace`) with its owner.
    fn cached(&self, resource_id: &str, namespace: &str, now: f64) -> Option<CachedEnrichment> {
        let entry = self
            .entries
            .get(&(resource_id.to_owned(), namespace.to_owned()))
            .filter(|entry| entry.expires > now)?;
        Some(CachedEnrichment {
            resource_id: resource_id.to_owned(),
            namespace: namespace.to_owned(),
            plugin: self
                .owners
                .get(namespace)
                .map(|(owner, _)| owner.clone())
                .unwrap_or_default(),
            expires_at: entry.expires,
            group: entry.group.clone(),
        })
    }

    fn remove(&mut self, key: &Key) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.by_expiry
            .remove(&(order(entry.expires), key.0.clone(), key.1.clone()));
        self.bytes = self.bytes.saturating_sub(entry.bytes);
        if let Some(count) = self.per_resource.get_mut(&key.0) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_resource.remove(&key.0);
            }
        }
        if let Some((_, count)) = self.owners.get_mut(&key.1) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // The namespace's last entry is gone: it is free again.
                self.owners.remove(&key.1);
            }
        }
        true
    }

    /// Removes the entry closest to expiry; false when empty.
    fn evict_first(&mut self) -> bool {
        let Some((_, resource, namespace)) = self.by_expiry.first().cloned() else {
            return false;
        };
        let key = (resource, namespace);
        let removed = self.remove(&key);
        if removed && self.track_evictions {
            self.evicted_keys.push(key);
        }
        removed
    }

    fn purge(&mut self, now: f64) -> usize {
        let mut purged = 0;
        while let Some((at, resource, namespace)) = self.by_expiry.first().cloned() {
            if f64::from_bits(at) > now {
                break;
            }
            self.remove(&(resource, namespace));
            purged += 1;
        }
        purged
    }

    fn put(
        &mut self,
        plugin: &str,
        resource_id: &str,
        admitted: Vec<Admitted>,
        now: f64,
        limits: &EnrichmentLimits,
        summary: &mut PutSummary,
    ) {
        self.purge(now);
        for Admitted { group, ttl, bytes } in admitted {
            let namespace = group.namespace.clone();
            if let Some((owner, _)) = self.owners.get(&namespace)
                && owner != plugin
            {
                summary.refuse(EnrichmentRefusal::Owned {
                    namespace,
                    owner: owner.clone(),
                });
                continue;
            }
            let key = (resource_id.to_owned(), namespace.clone());
            let replacing = self.remove(&key);
            if !replacing
                && self.per_resource.get(resource_id).copied().unwrap_or(0)
                    >= limits.max_namespaces_per_resource
            {
                summary.refuse(EnrichmentRefusal::Namespaces {
                    namespace,
                    limit: limits.max_namespaces_per_resource,
                });
                continue;
            }
            let expires = now + ttl;
            self.by_expiry
                .insert((order(expires), key.0.clone(), key.1.clone()));
            *self.per_resource.entry(key.0.clone()).or_insert(0) += 1;
            self.owners
                .entry(namespace)
                .or_insert_with(|| (plugin.to_owned(), 0))
                .1 += 1;
            self.bytes += bytes;
            self.entries.insert(
                key,
                Entry {
                    group,
                    expires,
                    bytes,
                },
            );
            summary.stored += 1;
            while (self.entries.len() > limits.max_entries || self.bytes > limits.max_bytes)
                && self.evict_first()
            {
                summary.evicted += 1;
            }
        }
    }
}

pub use vigil_core::BackendError;

/// One cached group as `vigil enrichment` lists it.
pub use vigil_core::model::CachedEnrichment;

/// Where the embedded cache (held in the memory of `vigil run`) writes
/// what it holds, so another process can read it: `vigil enrichment`
/// reads the site's store. After every put, the mirror gets the live
/// groups of the resource just enriched and the keys evicted to make room;
/// rows past their expiry are for the mirror to drop. It costs one small
/// write per enrichment run (a few groups of one resource), against the
/// run's own SNMP walks. A failed write is logged and changes nothing in
/// the cache itself.
pub trait EnrichmentMirror: Send + Sync + 'static {
    fn write<'a>(
        &'a self,
        held: &'a [CachedEnrichment],
        removed: &'a [(String, String)],
        now: f64,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
}

/// What a shared store decided for each group of a write: `None` stored,
/// else why not; and how many entries were evicted to make room.
pub struct EnrichmentVerdicts {
    pub groups: Vec<Option<EnrichmentRefusal>>,
    pub evicted: usize,
}

/// Where enrichments live when agents share a site (the same rules as the
/// local cache, applied atomically by the backend). Declared here, by the
/// cache; the Redis backend implements it
/// (`vigil_redis::shared::RedisEnrichments`).
pub trait EnrichmentStore: Send + Sync + 'static {
    /// Caches `groups` (already admitted: sizes checked, TTLs clamped)
    /// that `plugin` returned for `resource_id`.
    fn put<'a>(
        &'a self,
        plugin: &'a str,
        resource_id: &'a str,
        groups: &'a [Admitted],
        limits: &'a EnrichmentLimits,
        now: f64,
    ) -> BoxFuture<'a, Result<EnrichmentVerdicts, BackendError>>;
    /// The live groups of `namespaces` for `resource_id`.
    fn get<'a>(
        &'a self,
        resource_id: &'a str,
        namespaces: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<EnrichmentGroup>, BackendError>>;
}

pub struct EnrichmentCache {
    limits: EnrichmentLimits,
    local: Mutex<Local>,
    shared: Option<Box<dyn EnrichmentStore>>,
    mirror: Option<Box<dyn EnrichmentMirror>>,
    /// Entries evicted to make room, since start.
    evicted: std::sync::atomic::AtomicU64,
}

impl Default for EnrichmentCache {
    fn default() -> Self {
        EnrichmentCache::new(EnrichmentLimits::default())
    }
}

impl EnrichmentCache {
    pub fn new(limits: EnrichmentLimits) -> EnrichmentCache {
        EnrichmentCache {
            limits,
            local: Mutex::default(),
            shared: None,
            mirror: None,
            evicted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The embedded cache, mirrored into `mirror` (see [`EnrichmentMirror`]).
    pub fn mirrored(mut self, mirror: impl EnrichmentMirror) -> EnrichmentCache {
        self.mirror = Some(Box::new(mirror));
        self.lock().track_evictions = true;
        self
    }

    /// Shared through Redis, with the default limits.
    pub fn shared(store: impl EnrichmentStore) -> EnrichmentCache {
        EnrichmentCache::shared_with(store, EnrichmentLimits::default())
    }

    pub fn shared_with(store: impl EnrichmentStore, limits: EnrichmentLimits) -> EnrichmentCache {
        EnrichmentCache {
            shared: Some(Box::new(store)),
            ..EnrichmentCache::new(limits)
        }
    }

    pub fn limits(&self) -> &EnrichmentLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        // Every statement leaves the indexes consistent with the entries,
        // so a poisoned lock is safe to keep using.
        self.local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Caches what enrichment plugin `plugin` returned for `resource_id`
    /// under the rules of the module doc; `plugin_max_ttl` is its ini's
    /// `enrichment_ttl`.
    pub async fn put(
        &self,
        plugin: &str,
        resource_id: &str,
        groups: Vec<EnrichmentGroup>,
        now: f64,
        plugin_max_ttl: Option<f64>,
    ) -> PutSummary {
        let mut summary = PutSummary::default();
        let mut admitted = admit(groups, &self.limits, plugin_max_ttl, &mut summary);
        let mut decided_by_redis = false;
        if let Some(shared) = &self.shared {
            match shared
                .put(plugin, resource_id, &admitted, &self.limits, now)
                .await
            {
                Ok(verdicts) => {
                    // Keep locally (the fallback) only what Redis accepted.
                    let mut kept = Vec::with_capacity(admitted.len());
                    for (a, verdict) in admitted.into_iter().zip(verdicts.groups) {
                        match verdict {
                            None => kept.push(a),
                            Some(refusal) => summary.refuse(refusal),
                        }
                    }
                    summary.stored = kept.len();
                    summary.evicted = verdicts.evicted;
                    admitted = kept;
                    decided_by_redis = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, resource = resource_id, "enrichment not saved in redis; kept locally");
                }
            }
        }
        // The namespaces this put may change: all the mirror needs to
        // rewrite (looked up by key, not by scanning the whole cache).
        let touched: Vec<String> = if self.mirror.is_some() {
            admitted.iter().map(|a| a.group.namespace.clone()).collect()
        } else {
            Vec::new()
        };
        let mut local = PutSummary::default();
        self.lock()
            .put(plugin, resource_id, admitted, now, &self.limits, &mut local);
        if !decided_by_redis {
            summary.absorb(local);
        }
        if let Some(mirror) = &self.mirror {
            let (held, removed) = {
                let mut local = self.lock();
                let held: Vec<CachedEnrichment> = touched
                    .iter()
                    .filter_map(|ns| local.cached(resource_id, ns, now))
                    .collect();
                (held, std::mem::take(&mut local.evicted_keys))
            };
            if let Err(e) = mirror.write(&held, &removed, now).await {
                tracing::warn!(error = %e, resource = resource_id, "enrichment cache not mirrored to the store; `vigil enrichment` shows it late");
            }
        }
        self.evicted
            .fetch_add(summary.evicted as u64, std::sync::atomic::Ordering::Relaxed);
        summary
    }

    /// Takes back what a mirror held when the last `vigil run` stopped
    /// (a warm start: polls right after a restart keep their dimensions
    /// instead of waiting for the first enrichment runs). Each group goes
    /// through the same size and TTL checks as a plugin's, keeps its
    /// remaining lifetime, and counts against the same limits; expired
    /// ones are skipped. Returns how many were taken back.
    pub fn restore(&self, entries: Vec<CachedEnrichment>, now: f64) -> usize {
        let mut restored = 0;
        let mut local = self.lock();
        for entry in entries {
            let left = entry.expires_at - now;
            if !left.is_finite() || left <= 0.0 || entry.plugin.is_empty() {
                continue;
            }
            let mut summary = PutSummary::default();
            let mut admitted = admit(vec![entry.group], &self.limits, None, &mut summary);
            for a in &mut admitted {
                a.ttl = a.ttl.min(left);
            }
            local.put(
                &entry.plugin,
                &entry.resource_id,
                admitted,
                now,
                &self.limits,
                &mut summary,
            );
            restored += summary.stored;
        }
        // What the limits evicted here leaves the mirror with the next
        // put's write (the keys stay recorded until then).
        restored
    }

    /// The fresh groups of `namespaces` for `resource_id`.
    pub async fn get(
        &self,
        resource_id: &str,
        namespaces: &[String],
        now: f64,
    ) -> Vec<EnrichmentGroup> {
        if namespaces.is_empty() {
            return Vec::new();
        }
        if let Some(shared) = &self.shared {
            match shared.get(resource_id, namespaces).await {
                Ok(groups) => return groups,
                Err(e) => {
                    tracing::warn!(error = %e, "enrichment cache unreachable in redis; using the local copy");
                }
            }
        }
        let local = self.lock();
        namespaces
            .iter()
            .filter_map(|ns| local.entries.get(&(resource_id.to_owned(), ns.clone())))
            .filter(|entry| entry.expires > now)
            .map(|entry| entry.group.clone())
            .collect()
    }

    /// Drops expired groups; returns how many.
    pub fn sweep(&self, now: f64) -> usize {
        self.lock().purge(now)
    }

    /// Entries, bytes and namespaces held locally, and evictions since
    /// start.
    pub fn usage(&self) -> CacheUsage {
        let local = self.lock();
        CacheUsage {
            entries: local.entries.len(),
            bytes: local.bytes,
            namespaces: local.owners.len(),
            evicted: self.evicted.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The live groups held locally, of `resource_id` and `namespace` when
    /// given, by resource id then namespace.
    pub fn entries(
        &self,
        resource_id: Option<&str>,
        namespace: Option<&str>,
        now: f64,
    ) -> Vec<CachedEnrichment> {
        let local = self.lock();
        let mut entries: Vec<CachedEnrichment> = local
            .entries
            .keys()
            .filter(|(resource, ns)| {
                resource_id.is_none_or(|r| r == resource) && namespace.is_none_or(|n| n == ns)
            })
            .filter_map(|(resource, ns)| local.cached(resource, ns, now))
            .collect();
        entries.sort_by(|a, b| (&a.resource_id, &a.namespace).cmp(&(&b.resource_id, &b.namespace)));
        entries
    }

    /// The plugin that owns `namespace` locally, if any.
    pub fn owner(&self, namespace: &str) -> Option<String> {
        self.lock().owners.get(namespace).map(|(o, _)| o.clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUsage {
    pub entries: usize,
    pub bytes: u64,
    pub namespaces: usize,
    pub evicted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::model::EnrichmentSet;

    fn group(namespace: &str, ttl: u64) -> EnrichmentGroup {
        EnrichmentGroup {
            namespace: namespace.into(),
            ttl_seconds: ttl,
            sets: vec![EnrichmentSet {
                key: "1".into(),
                values: vec![("name".into(), "ge-0/0/0".into())],
            }],
        }
    }

    fn ns(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[tokio::test]
    async fn scoped_to_resource_and_namespace_and_expires() {
        let cache = EnrichmentCache::default();
        let summary = cache
            .put(
                "p",
                "sw1",
                vec![group("interface", 100), group("device", 10)],
                0.0,
                Some(50.0),
            )
            .await;
        assert_eq!(summary.stored, 2);
        assert_eq!(cache.get("sw1", &ns(&["interface"]), 1.0).await.len(), 1);
        assert!(
            cache.get("sw2", &ns(&["interface"]), 1.0).await.is_empty(),
            "other resources are invisible"
        );
        assert!(
            cache.get("sw1", &ns(&[]), 1.0).await.is_empty(),
            "nothing unless preloaded"
        );
        assert_eq!(
            cache
                .get("sw1", &ns(&["interface", "device"]), 20.0)
                .await
                .len(),
            1,
            "device expired at 10 s"
        );
        assert!(
            cache.get("sw1", &ns(&["interface"]), 60.0).await.is_empty(),
            "capped by the plugin's max TTL"
        );
        assert_eq!(cache.sweep(60.0), 2);
        assert_eq!(cache.usage().entries, 0);
        assert_eq!(cache.usage().bytes, 0);
    }

    #[tokio::test]
    async fn a_namespace_belongs_to_its_first_writer_until_its_last_entry_goes() {
        let cache = EnrichmentCache::default();
        cache
            .put("owner", "sw1", vec![group("interface", 100)], 0.0, None)
            .await;
        let mut forged = group("interface", 1000);
        forged.sets[0].values[0].1 = "forged".into();
        // On the same resource and on another one: both refused.
        for resource in ["sw1", "sw2"] {
            let summary = cache
                .put("thief", resource, vec![forged.clone()], 1.0, None)
                .await;
            assert_eq!((summary.stored, summary.conflicts), (0, 1));
            assert!(
                summary.describe(1).contains("owned by \"owner\""),
                "{}",
                summary.describe(1)
            );
        }
        let read = cache.get("sw1", &ns(&["interface"]), 2.0).await;
        assert_eq!(read[0].sets[0].values[0].1, "ge-0/0/0");
        assert!(cache.get("sw2", &ns(&["interface"]), 2.0).await.is_empty());
        // The owner's entry expires: the namespace is free.
        cache.sweep(100.0);
        assert_eq!(cache.owner("interface"), None);
        let summary = cache
            .put("thief", "sw2", vec![forged.clone()], 100.0, None)
            .await;
        assert_eq!(summary.stored, 1);
    }

    #[tokio::test]
    async fn ttl_namespaces_sizes_and_the_whole_cache_are_bounded() {
        let limits = EnrichmentLimits {
            max_ttl: Duration::from_secs(3600),
            max_namespaces_per_resource: 3,
            max_sets_per_group: 2,
            max_values_per_set: 2,
            max_entries: 10,
            max_bytes: 1 << 20,
        };
        let cache = EnrichmentCache::new(limits);
        // u64::MAX becomes the site's ceiling.
        cache
            .put("p", "r", vec![group("a", u64::MAX)], 0.0, None)
            .await;
        assert_eq!(cache.get("r", &ns(&["a"]), 0.0).await[0].ttl_seconds, 3600);
        assert!(cache.get("r", &ns(&["a"]), 3600.0).await.is_empty());
        // A new namespace per run: the fourth on one resource is refused.
        let summary = cache
            .put(
                "p",
                "r",
                vec![group("b", 10), group("c", 10), group("d", 10)],
                1.0,
                None,
            )
            .await;
        assert_eq!((summary.stored, summary.over_namespaces), (2, 1));
        // Rewriting a namespace it has is fine.
        assert_eq!(
            cache
                .put("p", "r", vec![group("b", 10)], 2.0, None)
                .await
                .stored,
            1
        );
        // Too many sets or values: refused whole.
        let mut wide = group("e", 10);
        wide.sets[0].values = vec![("k".into(), "v".into()); 3];
        let mut many = group("e", 10);
        many.sets = vec![many.sets[0].clone(); 3];
        let summary = cache.put("p", "r2", vec![wide, many], 2.0, None).await;
        assert_eq!((summary.stored, summary.too_large), (0, 2));
        // A flood of resources: the cache keeps 10 entries, evicting the
        // soonest to expire first.
        let mut evicted = 0;
        for i in 0..100u64 {
            let summary = cache
                .put(
                    "p",
                    &format!("flood{i}"),
                    vec![group("f", 100 + i)],
                    3.0,
                    None,
                )
                .await;
            evicted += summary.evicted;
        }
        let usage = cache.usage();
        assert_eq!(usage.entries, 10);
        // r/b and r/c expire first, then the flood's oldest; r/a (3600 s)
        // outlives every flood entry and stays.
        assert_eq!(evicted, 93);
        assert_eq!(cache.get("flood99", &ns(&["f"]), 4.0).await.len(), 1);
        assert!(cache.get("flood0", &ns(&["f"]), 4.0).await.is_empty());
        assert_eq!(cache.get("r", &ns(&["a"]), 4.0).await.len(), 1);

        // Bytes: one 600 KB group fits a 1 MiB cache, two do not; the one
        // closer to expiry goes.
        let cache = EnrichmentCache::new(EnrichmentLimits {
            max_bytes: 1 << 20,
            ..EnrichmentLimits::default()
        });
        let big = |ttl: u64| EnrichmentGroup {
            namespace: "g".into(),
            ttl_seconds: ttl,
            sets: vec![EnrichmentSet {
                key: "k".into(),
                values: vec![("v".into(), "x".repeat(300_000)); 2],
            }],
        };
        assert_eq!(
            cache
                .put("p", "big1", vec![big(100)], 5.0, None)
                .await
                .evicted,
            0
        );
        let summary = cache.put("p", "big2", vec![big(200)], 5.0, None).await;
        assert_eq!((summary.stored, summary.evicted), (1, 1));
        assert!(cache.get("big1", &ns(&["g"]), 6.0).await.is_empty());
        assert_eq!(cache.get("big2", &ns(&["g"]), 6.0).await.len(), 1);
        assert!(cache.usage().bytes <= 1 << 20);
        // Bigger than the whole cache: refused, nothing evicted for it.
        let mut huge = big(10);
        huge.sets = vec![huge.sets[0].clone(); 2];
        let summary = cache.put("p", "huge", vec![huge], 6.0, None).await;
        assert_eq!((summary.too_large, summary.evicted), (1, 0));
    }

    #[test]
    fn site_section_bounds() {
        let at = |_: std::ops::Range<usize>, m: String| {
            LocatedError::new(std::path::Path::new("s"), 1, m)
        };
        let parsed: EnrichmentSection =
            toml::from_str("max_ttl = \"2h\"\nmax_entries = 5\nmax_bytes = \"1MiB\"\n")
                .expect("toml");
        let limits = parsed.resolve(&at).expect("valid");
        assert_eq!(limits.max_ttl, Duration::from_secs(7200));
        assert_eq!((limits.max_entries, limits.max_bytes), (5, 1 << 20));
        assert_eq!(limits.max_sets_per_group, 10_000);
        for bad in [
            "max_ttl = \"1000h\"",
            "max_entries = 0",
            "max_values_per_set = 257",
            "max_bytes = \"1TiB\"",
        ] {
            let parsed: EnrichmentSection = toml::from_str(bad).expect("toml");
            assert!(parsed.resolve(&at).is_err(), "{bad}");
        }
    }

    /// One mirror write: the groups held, the keys removed.
    type Write = (Vec<CachedEnrichment>, Vec<Key>);

    /// Records every mirror write.
    #[derive(Clone, Default)]
    struct Recorder(std::sync::Arc<Mutex<Vec<Write>>>);

    impl EnrichmentMirror for Recorder {
        fn write<'a>(
            &'a self,
            held: &'a [CachedEnrichment],
            removed: &'a [(String, String)],
            _now: f64,
        ) -> BoxFuture<'a, Result<(), BackendError>> {
            Box::pin(async move {
                if let Ok(mut writes) = self.0.lock() {
                    writes.push((held.to_vec(), removed.to_vec()));
                }
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn the_mirror_gets_each_put_and_each_eviction_and_restores() {
        let recorder = Recorder::default();
        let limits = EnrichmentLimits {
            max_entries: 2,
            ..EnrichmentLimits::default()
        };
        let cache = EnrichmentCache::new(limits.clone()).mirrored(recorder.clone());
        cache
            .put("p", "sw1", vec![group("interface", 100)], 0.0, None)
            .await;
        cache
            .put(
                "p",
                "sw2",
                vec![group("interface", 50), group("device", 300)],
                0.0,
                None,
            )
            .await;
        let writes = recorder.0.lock().map(|w| w.clone()).unwrap_or_default();
        assert_eq!(writes.len(), 2);
        let keys = |held: &[CachedEnrichment]| -> Vec<(String, String, f64)> {
            held.iter()
                .map(|e| (e.resource_id.clone(), e.namespace.clone(), e.expires_at))
                .collect()
        };
        assert_eq!(
            keys(&writes[0].0),
            [("sw1".into(), "interface".into(), 100.0)]
        );
        assert!(writes[0].1.is_empty());
        // Three entries over a limit of two: the one closest to expiry
        // (sw2/interface at 50) goes, and the mirror is told.
        assert_eq!(keys(&writes[1].0), [("sw2".into(), "device".into(), 300.0)]);
        assert_eq!(writes[1].1, [("sw2".to_owned(), "interface".to_owned())]);

        // A new cache takes back what is still live, with its remaining
        // lifetime, under the same limits and ownership rules.
        let mirrored: Vec<CachedEnrichment> = writes
            .iter()
            .flat_map(|(held, _)| held.clone())
            .chain([CachedEnrichment {
                resource_id: "sw9".into(),
                namespace: "old".into(),
                plugin: "p".into(),
                expires_at: 10.0,
                group: group("old", 100),
            }])
            .collect();
        let restored = EnrichmentCache::new(limits);
        assert_eq!(restored.restore(mirrored, 20.0), 2);
        assert_eq!(
            keys(&restored.entries(None, None, 20.0)),
            [
                ("sw1".into(), "interface".into(), 100.0),
                ("sw2".into(), "device".into(), 300.0)
            ]
        );
        assert_eq!(
            restored.get("sw2", &ns(&["device"]), 20.0).await,
            [group("device", 300)]
        );
        // The owner came back too: another plugin cannot take the namespace.
        let summary = restored
            .put("q", "sw3", vec![group("interface", 10)], 20.0, None)
            .await;
        assert_eq!(summary.stored, 0);
    }
}
