//! Where vigil keeps what it knows: discovered resources (with their TTLs),
//! plugin run history, the latest value of every series, and each agent's
//! status for the CLI (keyed by agent id; its write time is the agent's
//! heartbeat).
//!
//! [`Storage`] is the seam for other backends; [`sqlite::SqliteStorage`] is
//! the embedded default; [`endpoints::SqliteHistory`] keeps endpoint
//! history (issue #14) in the same file. SQLite in WAL mode lets `vigil status`,
//! `vigil resources` and `vigil metrics` read a running host's state from
//! another process without any server.
//!
//! # Resources belong to the host, not to the plugin that names them
//!
//! A discovery plugin only proposes resources; what is stored is decided
//! by rules every backend applies the same way (SQLite in one immediate
//! transaction, MongoDB with conditional writes, Redis in one script), so a
//! plugin running inside all its limits still cannot:
//!
//! * **take over a resource**: a resource belongs to the discovery plugin
//!   that first reported it, for as long as it is live. Another plugin
//!   reporting the same id is refused (nothing of its record is stored, the
//!   owner's is untouched), counted, and named in the run's detail and the
//!   log (resource id, owner, claimant). Credentials and polling follow the
//!   owner's endpoint, never the claimant's. Once the resource expires it is
//!   free again.
//! * **place a resource in another site**: this host runs one site
//!   (`[site] name`); an empty site becomes it, any other is refused.
//! * **flood the registry**: each discovery plugin owns at most
//!   `max_resources` live resources (default 10,000, ceiling 1,000,000).
//!   New ones past it are refused and counted; refreshes of owned ones
//!   always go through, so a plugin at its budget keeps what it has. One
//!   stored resource costs about 1 KiB in SQLite (a row with 16 KiB of
//!   metadata at most), so the default budget bounds one plugin to about
//!   10 MB of registry and 10,000 jobs per polling plugin that matches it.
//! * **live forever**: a resource's TTL is the plugin's (or its ini's
//!   `resource_ttl`), clamped to the site's `[resources] max_ttl` (default
//!   7 days, ceiling 30 days); `u64::MAX` becomes 7 days. Creation times
//!   are the host's clock at first sight, kept on refresh; a plugin's
//!   timestamp is ignored. When a discovery plugin's file is deleted, its
//!   resources expire at once ([`Storage::expire_plugin_resources`]) and
//!   the sinks are told, like any expiry.
//!
//! One id appears once per batch: later copies are refused as duplicates,
//! so a batch of n resources does at most n lookups and n writes.

pub mod endpoints;
pub mod kv;
pub mod sqlite;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use vigil_core::model::{CachedEnrichment, Datetime, MetricsGroup, Resource};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    /// A blocking call panicked or was cancelled on the blocking pool.
    #[error("storage: {0}")]
    Blocking(String),
    /// The MongoDB backend failed; `url` has any password masked.
    #[error("storage: MongoDB at {url}: {message}")]
    Mongo { url: String, message: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A resource as the host keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    /// Its `creation_plugin` is the owner and its `creation_timestamp` the
    /// host's clock at first sight; `ttl_seconds` is the effective TTL.
    pub resource: Resource,
    /// The discovery plugin that owns it (the first to report it).
    pub discovered_by: String,
    pub first_seen: f64,
    pub last_seen: f64,
    /// When it stops being polled unless rediscovered.
    pub expires_at: f64,
}

/// Default ceiling on resource TTLs (`[resources] max_ttl`): a daily
/// discovery may miss six runs before its resources go.
pub const DEFAULT_MAX_RESOURCE_TTL: Duration = Duration::from_secs(7 * 86_400);
/// No site may keep a resource longer than this without rediscovering it.
pub const MAX_RESOURCE_TTL_CEILING: Duration = Duration::from_secs(30 * 86_400);
/// Refusals named one by one in a summary; the rest are only counted, so a
/// run refused 200,000 times writes a detail of a few hundred bytes.
pub const REFUSALS_NAMED: usize = 8;

/// The site's rules for resources (`[resources]` in the site config).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSettings {
    /// The one site this host runs (`[site] name`).
    pub site: String,
    /// Ceiling on any resource's TTL.
    pub max_ttl: Duration,
}

impl ResourceSettings {
    pub fn new(site: &str) -> ResourceSettings {
        ResourceSettings {
            site: site.to_owned(),
            max_ttl: DEFAULT_MAX_RESOURCE_TTL,
        }
    }

    /// The policy for one run of a discovery plugin whose ini says
    /// `resource_ttl` and whose limits allow `max_resources`.
    pub fn policy(
        &self,
        resource_ttl: Duration,
        max_resources: u64,
        sites: &[String],
    ) -> ResourcePolicy {
        let max_ttl = self.max_ttl.as_secs_f64().max(1.0);
        ResourcePolicy {
            site: sites.first().unwrap_or(&self.site).clone(),
            sites: sites.to_vec(),
            default_ttl: resource_ttl.as_secs_f64().clamp(1.0, max_ttl),
            max_ttl,
            max_resources,
        }
    }
}

/// `[resources]` as written in the site config.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSection {
    max_ttl: Option<toml::Spanned<String>>,
}

impl ResourcesSection {
    /// Checks the section for the host running `site`.
    pub fn resolve(
        &self,
        site: &str,
        at: vigil_core::At<'_>,
    ) -> Result<ResourceSettings, vigil_core::LocatedError> {
        let mut settings = ResourceSettings::new(site);
        if let Some(written) = &self.max_ttl {
            let ttl = vigil_core::units::parse_duration(written.get_ref())
                .map_err(|e| at(written.span(), format!("resources.max_ttl: {e}")))?;
            if ttl < Duration::from_secs(1) || ttl > MAX_RESOURCE_TTL_CEILING {
                return Err(at(
                    written.span(),
                    format!(
                        "resources.max_ttl must be 1s to {}h, found {:?}",
                        MAX_RESOURCE_TTL_CEILING.as_secs() / 3600,
                        written.get_ref()
                    ),
                ));
            }
            settings.max_ttl = ttl;
        }
        Ok(settings)
    }
}

/// What one discovery run may store: set by the site and the plugin's
/// limits, never by the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePolicy {
    /// The site an empty resource site becomes: the plugin's first
    /// configured site, else the host's.
    pub site: String,
    /// Further sites the plugin is configured for (`[main] sites`); a
    /// resource in any other site is refused.
    pub sites: Vec<String>,
    /// TTL of resources that give none (seconds, already within `max_ttl`).
    pub default_ttl: f64,
    /// Ceiling on every TTL (seconds).
    pub max_ttl: f64,
    /// Live resources the plugin may own.
    pub max_resources: u64,
}

impl ResourcePolicy {
    /// The TTL `r` gets: its own when non-zero, else the default, within
    /// 1 s and `max_ttl`.
    pub fn ttl(&self, r: &Resource) -> f64 {
        let asked = if r.ttl_seconds > 0 {
            r.ttl_seconds as f64
        } else {
            self.default_ttl
        };
        asked.min(self.max_ttl).max(1.0)
    }
}

/// Why a proposed resource was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Live and owned by another discovery plugin.
    Owned { id: String, owner: String },
    /// In a site this host does not run.
    Site { id: String, site: String },
    /// New, while the plugin already owns `limit` live resources.
    Budget { id: String, limit: u64 },
    /// Reported again in the same batch.
    Duplicate { id: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Owned { id, owner } => write!(f, "{id:?} is owned by {owner:?}"),
            Refusal::Site { id, site } => write!(f, "{id:?} is in site {site:?}"),
            Refusal::Budget { id, limit } => {
                write!(f, "{id:?} is past max_resources = {limit}")
            }
            Refusal::Duplicate { id } => write!(f, "{id:?} is repeated"),
        }
    }
}

/// What a discovery run changed, and what it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertSummary {
    pub added: usize,
    pub refreshed: usize,
    /// Claims on live resources another plugin owns.
    pub conflicts: usize,
    /// Resources in another site.
    pub wrong_site: usize,
    /// New resources past the plugin's `max_resources`.
    pub over_budget: usize,
    /// Ids repeated within the batch.
    pub duplicates: usize,
    /// The first [`REFUSALS_NAMED`] refusals.
    pub refusals: Vec<Refusal>,
}

impl UpsertSummary {
    pub fn refuse(&mut self, refusal: Refusal) {
        *match &refusal {
            Refusal::Owned { .. } => &mut self.conflicts,
            Refusal::Site { .. } => &mut self.wrong_site,
            Refusal::Budget { .. } => &mut self.over_budget,
            Refusal::Duplicate { .. } => &mut self.duplicates,
        } += 1;
        if self.refusals.len() < REFUSALS_NAMED {
            self.refusals.push(refusal);
        }
    }

    pub fn refused(&self) -> usize {
        self.conflicts + self.wrong_site + self.over_budget + self.duplicates
    }

    /// `"N resources (A new)"`, then what was refused, with examples.
    pub fn describe(&self, reported: usize) -> String {
        let mut text = format!("{reported} resources ({} new)", self.added);
        if self.refused() > 0 {
            let counts: Vec<String> = [
                (self.conflicts, "owned by another plugin"),
                (self.wrong_site, "in another site"),
                (self.over_budget, "over max_resources"),
                (self.duplicates, "repeated"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
            let named: Vec<String> = self.refusals.iter().map(ToString::to_string).collect();
            text.push_str(&format!(
                "; refused {}: {} (e.g. {})",
                self.refused(),
                counts.join(", "),
                named.join("; ")
            ));
        }
        text
    }
}

/// The host's pass over a proposed batch, before any backend looks at it:
/// one entry per id (later copies refused), the site checked (an empty
/// site becomes the host's), the owner, creation time and TTL set by the
/// host. Returns the resources to store with their TTLs.
pub fn prepare_batch(
    plugin: &str,
    resources: &[Resource],
    policy: &ResourcePolicy,
    now: f64,
    summary: &mut UpsertSummary,
) -> Vec<(Resource, f64)> {
    let mut seen = std::collections::HashSet::with_capacity(resources.len());
    let mut batch = Vec::with_capacity(resources.len());
    for r in resources {
        if !seen.insert(r.id.as_str()) {
            summary.refuse(Refusal::Duplicate { id: r.id.clone() });
            continue;
        }
        if !r.site.is_empty() && r.site != policy.site && !policy.sites.contains(&r.site) {
            summary.refuse(Refusal::Site {
                id: r.id.clone(),
                site: r.site.clone(),
            });
            continue;
        }
        let ttl = policy.ttl(r);
        let mut r = r.clone();
        if r.site.is_empty() {
            r.site = policy.site.clone();
        }
        r.creation_plugin = plugin.to_owned();
        r.creation_timestamp = Datetime::from_seconds(now);
        r.ttl_seconds = ttl as u64;
        batch.push((r, ttl));
    }
    batch
}

/// One finished plugin run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub plugin: String,
    pub resource_id: Option<String>,
    /// When the run was due, started and finished (seconds since the epoch).
    pub scheduled_at: f64,
    pub started_at: f64,
    pub finished_at: f64,
    /// The outcome label (`ok`, `trap.deadline`...).
    pub outcome: String,
    pub detail: String,
}

/// The latest value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValue {
    pub resource_id: String,
    pub group_type: String,
    pub dimensions: Vec<(String, String)>,
    pub metric: String,
    /// The exact value as text (counters can exceed f64's precision).
    pub value: String,
    pub metric_type: String,
    pub at: f64,
}

/// Which runs [`Storage::query_runs`] returns: newest first, those that
/// match every field set, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunQuery {
    pub plugin: Option<String>,
    pub resource_id: Option<String>,
    /// The exact outcome label (`ok`, `trap.deadline`...).
    pub outcome: Option<String>,
    /// Runs started at or after this time (seconds since the epoch).
    pub since: Option<f64>,
    pub limit: usize,
}

/// Which latest values [`Storage::query_latest`] returns: those that match
/// every field set, in the order of [`Storage::latest`], at most `limit`
/// (`None`: all).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesQuery {
    pub group_type: Option<String>,
    pub resource_id: Option<String>,
    pub metric: Option<String>,
    /// Values measured at or after this time (seconds since the epoch).
    pub since: Option<f64>,
    pub limit: Option<usize>,
}

/// How long the status of an agent that stopped writing it is kept: past
/// this, the next status write of any agent of the site deletes it (so
/// agents named `HOSTNAME-PID` do not pile up over restarts).
pub const STATUS_RETENTION: f64 = 86_400.0;

/// What `vigil status` shows, written by each running agent every few
/// seconds under its agent id (its heartbeat is `updated_at`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The agent that wrote it, unique in the site; a status of an
    /// earlier version without one reads as `""`.
    #[serde(default)]
    pub agent_id: String,
    /// `agent`, `consumer` or `all`.
    #[serde(default)]
    pub role: String,
    pub site: String,
    pub pid: u32,
    pub started_at: f64,
    pub updated_at: f64,
    pub resources: usize,
    pub plugins: Vec<PluginStatus>,
    /// Plugin files that failed to load, with their errors.
    pub broken: Vec<(String, String)>,
    /// The numbers `/metrics` shows about vigil itself: the agent's health
    /// snapshot, kept as the JSON it serialises to (the store needs not
    /// know its shape; `vigil status` reads it back).
    #[serde(default)]
    pub health: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginStatus {
    pub name: String,
    pub kind: String,
    pub schedule: String,
    pub runs: u64,
    pub outcomes: BTreeMap<String, u64>,
    /// Runs skipped because the previous run of the same (plugin, resource)
    /// was still going or ran too recently.
    pub skipped: u64,
    pub last_run_at: Option<f64>,
    /// Start lateness against the schedule, in milliseconds.
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
}

/// The store as the sinks see it: where `latest` values go.
pub struct StorageLatest(pub std::sync::Arc<dyn Storage>);

#[async_trait::async_trait]
impl vigil_sinks::LatestStore for StorageLatest {
    async fn store_latest(
        &self,
        groups: &[std::sync::Arc<MetricsGroup>],
    ) -> Result<(), vigil_core::BackendError> {
        Ok(self.0.store_latest(groups).await?)
    }
}

/// Seconds since the epoch, as a float (the store's time unit).
pub fn epoch_seconds(at: std::time::SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Awaits a storage call whose failure must not stop the pipeline: a
/// failure is logged as `what` and yields `None`.
pub async fn logged<T>(
    what: &'static str,
    call: impl std::future::Future<Output = StoreResult<T>>,
) -> Option<T> {
    match call.await {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::error!(error = %e, "{what}");
            None
        }
    }
}

/// Expires the resources of plugin `plugin` whose file `path` was
/// unloaded, if the file is gone (a broken file being edited keeps its
/// resources until their TTL). Returns the ids deleted, for the sinks.
pub async fn expire_removed_plugin(
    store: &dyn Storage,
    plugin: &str,
    path: &std::path::Path,
) -> Vec<String> {
    if path.exists() {
        return Vec::new();
    }
    let now = epoch_seconds(std::time::SystemTime::now());
    let expired = logged(
        "expiring a removed plugin's resources",
        store.expire_plugin_resources(plugin, now),
    )
    .await
    .unwrap_or_default();
    if !expired.is_empty() {
        tracing::info!(
            plugin,
            count = expired.len(),
            "plugin file removed: the resources it discovered expired"
        );
    }
    expired
}

/// The storage seam, async: the pipeline, the scheduler and the HTTP API
/// call it from async tasks. A backend whose client blocks (SQLite) runs
/// its calls on tokio's blocking pool behind this trait; MongoDB and Redis
/// use their drivers' async APIs, so a call costs no OS thread.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Records resources reported by discovery plugin `plugin` under
    /// `policy` (see the module doc): each lives `policy.ttl(r)` seconds
    /// from `now`; claims on another plugin's live resources, other sites,
    /// repeats and new resources past the budget are refused and counted.
    async fn upsert_resources(
        &self,
        plugin: &str,
        resources: &[Resource],
        policy: &ResourcePolicy,
        now: f64,
    ) -> StoreResult<UpsertSummary>;
    /// Expires at `now` every resource `plugin` owns (its discovery plugin
    /// is gone), then deletes everything expired at `now` as
    /// [`Storage::expire_resources`] does; returns the deleted ids.
    async fn expire_plugin_resources(&self, plugin: &str, now: f64) -> StoreResult<Vec<String>>;
    /// Resources not expired at `now`.
    async fn live_resources(&self, now: f64) -> StoreResult<Vec<StoredResource>>;
    /// Deletes resources expired at `now` (and their latest series);
    /// returns their ids.
    async fn expire_resources(&self, now: f64) -> StoreResult<Vec<String>>;
    async fn record_runs(&self, runs: &[RunRecord]) -> StoreResult<()>;
    /// The runs `query` selects, newest first (as recorded).
    async fn query_runs(&self, query: &RunQuery) -> StoreResult<Vec<RunRecord>>;
    /// Newest first.
    async fn recent_runs(&self, plugin: Option<&str>, limit: usize) -> StoreResult<Vec<RunRecord>> {
        self.query_runs(&RunQuery {
            plugin: plugin.map(str::to_owned),
            limit,
            ..RunQuery::default()
        })
        .await
    }
    /// Takes the groups shared with the other sinks (no copy).
    async fn store_latest(&self, groups: &[std::sync::Arc<MetricsGroup>]) -> StoreResult<()>;
    /// The latest values `query` selects, ordered by resource id, group
    /// type, dimensions (as JSON text) and metric.
    async fn query_latest(&self, query: &SeriesQuery) -> StoreResult<Vec<SeriesValue>>;
    async fn latest(&self, group_type: Option<&str>) -> StoreResult<Vec<SeriesValue>> {
        self.query_latest(&SeriesQuery {
            group_type: group_type.map(str::to_owned),
            ..SeriesQuery::default()
        })
        .await
    }
    /// Writes (replaces) the status of agent `status.agent_id`, and deletes
    /// those of agents silent for [`STATUS_RETENTION`].
    async fn put_status(&self, status: &HostStatus) -> StoreResult<()>;
    /// The status of every agent of the site, by agent id.
    async fn statuses(&self) -> StoreResult<Vec<HostStatus>>;
    /// The most recently written status, if any.
    async fn status(&self) -> StoreResult<Option<HostStatus>> {
        Ok(self
            .statuses()
            .await?
            .into_iter()
            .max_by(|a, b| a.updated_at.total_cmp(&b.updated_at)))
    }
    /// The embedded enrichment cache's mirror (see
    /// `vigil_enrichment::EnrichmentMirror`): upserts `held`, deletes
    /// `removed` (resource id, namespace) and every row expired at `now`.
    async fn mirror_enrichments(
        &self,
        held: &[CachedEnrichment],
        removed: &[(String, String)],
        now: f64,
    ) -> StoreResult<()>;
    /// The mirrored groups live at `now`, of `resource_id` and `namespace`
    /// when given, by resource id then namespace.
    async fn mirrored_enrichments(
        &self,
        resource_id: Option<&str>,
        namespace: Option<&str>,
        now: f64,
    ) -> StoreResult<Vec<CachedEnrichment>>;
}

/// An enrichment group's sets as the stores keep them: JSON, `[{"key":
/// ..., "values": [[name, value], ...]}]`.
#[derive(Serialize, Deserialize)]
pub struct StoredSet {
    pub key: String,
    pub values: Vec<(String, String)>,
}

/// `group`'s sets as [`StoredSet`] JSON.
pub fn sets_json(group: &vigil_core::model::EnrichmentGroup) -> StoreResult<String> {
    let sets: Vec<StoredSet> = group
        .sets
        .iter()
        .map(|set| StoredSet {
            key: set.key.clone(),
            values: set.values.clone(),
        })
        .collect();
    Ok(serde_json::to_string(&sets)?)
}

/// Sets back from [`sets_json`]'s JSON.
pub fn sets_from_json(text: &str) -> StoreResult<Vec<vigil_core::model::EnrichmentSet>> {
    let sets: Vec<StoredSet> = serde_json::from_str(text)?;
    Ok(sets
        .into_iter()
        .map(|set| vigil_core::model::EnrichmentSet {
            key: set.key,
            values: set.values,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_section_and_policy_bound_ttls() {
        let at = |_: std::ops::Range<usize>, m: String| {
            vigil_core::LocatedError::new(std::path::Path::new("site.toml"), 1, m)
        };
        let parse = |text: &str| -> ResourcesSection { toml::from_str(text).expect("toml") };
        let settings = parse("").resolve("lab", &at).expect("default");
        assert_eq!(settings, ResourceSettings::new("lab"));
        assert_eq!(settings.max_ttl, DEFAULT_MAX_RESOURCE_TTL);
        let settings = parse("max_ttl = \"2h\"").resolve("lab", &at).expect("2h");
        assert_eq!(settings.max_ttl, Duration::from_secs(7200));
        for bad in [
            "max_ttl = \"0\"",
            "max_ttl = \"721h\"",
            "max_ttl = \"soon\"",
        ] {
            let error = parse(bad).resolve("lab", &at).expect_err(bad);
            assert!(error.message.contains("resources.max_ttl"), "{error}");
        }
        // The ini's resource_ttl and the plugin's own TTL are clamped.
        let policy = settings.policy(Duration::from_secs(86_400), 5, &[]);
        assert_eq!((policy.default_ttl, policy.max_ttl), (7200.0, 7200.0));
        let mut r = Resource::named("r", "127.0.0.1");
        r.ttl_seconds = u64::MAX;
        assert_eq!(policy.ttl(&r), 7200.0);
        r.ttl_seconds = 60;
        assert_eq!(policy.ttl(&r), 60.0);
        r.ttl_seconds = 0;
        assert_eq!(policy.ttl(&r), 7200.0);
    }

    #[test]
    fn summaries_name_a_few_refusals_and_count_all() {
        let mut summary = UpsertSummary::default();
        for i in 0..1000 {
            summary.refuse(Refusal::Owned {
                id: format!("sw{i}"),
                owner: "inventory".into(),
            });
        }
        summary.refuse(Refusal::Site {
            id: "x".into(),
            site: "dc9".into(),
        });
        assert_eq!((summary.conflicts, summary.wrong_site), (1000, 1));
        assert_eq!(summary.refusals.len(), REFUSALS_NAMED);
        let detail = summary.describe(1001);
        assert!(
            detail.starts_with("1001 resources (0 new); refused 1001: 1000 owned by another plugin, 1 in another site (e.g. \"sw0\" is owned by \"inventory\""),
            "{detail}"
        );
        assert!(detail.len() < 600, "{} bytes", detail.len());
    }
}
