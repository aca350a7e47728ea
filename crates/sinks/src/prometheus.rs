//! The Prometheus exposition sink: every collected series, kept in memory
//! and served on `/metrics` next to vigil's own health
//! (any [`SelfMetrics`], vigil's health in the agent), in the text format or OpenMetrics as the scraper
//! asks. [`Families`] is also the Pushgateway sink's store.
//!
//! A series is `<group>_<metric>` (counters `..._total`), without doubled
//! words, no gauge ending in `_total`, under an optional namespace
//! ([`vigil_core::metric_names`]; two pairs that would share a name are
//! settled by [`Families`], the same in any arrival order), labelled with the
//! group's dimensions and the resource's fields
//! ([`super::exposition::group_labels`]). Its sample is the latest value.
//! A series not updated for `stale_after` is dropped, as are the series of
//! an expired resource, so a device that went away stops being reported
//! instead of flat-lining.
//!
//! # Memory: one label set, many samples
//!
//! A group's label set is rendered once and kept once, under its compact
//! id ([`super::series::label_set_id`], 16 bytes); each of its series is a
//! 40-byte sample (family index, producing plugin, value, time). So the
//! registry holds about the plugin's own bytes: a 2,000-metric group over
//! 14 KB of dimensions (229 KB of Panoptes JSON) costs 14.7 KB of label
//! text plus 80 KB of samples, 0.41 bytes per plugin byte, not 2,000
//! copies of the labels. The page itself must repeat the label set on
//! every sample line (that is the format): that group renders 29.6 MB,
//! 129 bytes per plugin byte. The sandbox charges a run's output with its
//! labels once per sample (`max_output`, see `sandbox::validate`), and a
//! label set holds at most 64 dimensions and 8 KiB of their text, so one
//! plugin's share of the page is at most `max_series_per_plugin` lines of
//! at most ~20 KB each (8 KiB of dimension text, doubled at worst by
//! escaping, plus the resource fields), and a run adds at most what its
//! output budget allows.
//!
//! # Fair share: budgets per plugin
//!
//! Every series belongs to the plugin whose group created it (the bus
//! carries each group's producer, [`vigil_core::batch::Batch`]). A plugin holds at
//! most `max_series_per_plugin` series (default 250,000); past it its new
//! series are refused and counted against it (`plugin_series_limit`), so
//! a plugin that floods cardinality fills its own budget, not the registry:
//! with the defaults (1,000,000 in all), three plugins at their budget
//! still leave 250,000 series for every other plugin. The registry as a
//! whole still holds at most `max_series` (`series_limit`); an operator
//! running more heavy plugins raises it or lowers the budgets (a budget
//! above `max_series` is a configuration error). A series
//! stays its creator's until it goes stale or its resource expires: a group
//! of another plugin that lands on the same name and labels is refused
//! (`series_of_another_plugin`), so no plugin can overwrite a neighbour's
//! values.
//!
//! # A page that always parses
//!
//! * Names vigil uses for itself are reserved: a collected family whose
//!   name starts with `vigil_` is refused (`reserved_name`), so no plugin
//!   can serve series under vigil's health families.
//! * Every family claims every name it puts on the page: its own, and its
//!   samples' (a counter `x` writes `x_total`, and OpenMetrics reserves
//!   `x_created`). A later family that would reuse any of them is refused
//!   (`type_conflict`): a gauge `x_created` next to a counter `x` would
//!   make an OpenMetrics parser see a sample outside its family, and it
//!   rejects the whole page (a gauge can no longer be called `x_total`,
//!   the other clash of this kind). A name that arrives with a second type
//!   keeps the first.
//!
//! # Two paths, gzip
//!
//! [`serve`] answers `/metrics` (vigil's health, then every collected
//! series) and `/health/metrics` (vigil's health alone), each gzipped
//! when the scraper asks ([`accepts_gzip`], [`gzip`]).
//!
//! Refusals are counted per group (`vigil_sink_dropped_groups_total`, the
//! group's first reason) and per plugin and series
//! (`vigil_sink_dropped_series_total{plugin,reason}`), and each plugin's
//! live series are `vigil_sink_series{plugin}`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use toml::Spanned;

use super::buffer::{PluginSeries, SharedGroup, SinkCounters, SinkSnapshot, reason};
use super::exposition::{
    Derived, Exposition, Format, Kind, SampleValue, derive_family_name, group_labels,
};
use super::series::{IdMap, IdSet, SeriesId, label_set_id};
use super::{At, LocatedError, STALE_AFTER_RANGE, SelfMetrics, duration_in_range, in_range};
use vigil_core::batch::{PluginName, UNKNOWN_PLUGIN};
use vigil_core::model::{MetricType, MetricsGroup};

/// Family names that start with this are vigil's own.
pub const RESERVED_PREFIX: &str = "vigil_";
/// `max_series` and `max_series_per_plugin` at most.
pub const MAX_SERIES_CEILING: u64 = 50_000_000;
/// Default of `max_series_per_plugin` (Prometheus registry and Pushgateway).
pub const DEFAULT_SERIES_PER_PLUGIN: usize = 250_000;
/// Plugins a [`Families`] accounts for separately; the names past these
/// (only a Kafka bus fed by many agents could have so many) share one
/// entry, [`OTHER_PLUGINS`].
pub const MAX_PLUGINS: usize = 4096;
/// Where plugins past [`MAX_PLUGINS`] are accounted.
pub const OTHER_PLUGINS: &str = "(other)";

/// `[outputs.prometheus]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusSettings {
    /// Where `/metrics` is served.
    pub listen: SocketAddr,
    pub stale_after: Duration,
    pub max_series: usize,
    pub max_series_per_plugin: usize,
    /// Prefix of every collected family (`<namespace>_<name>`); none by
    /// default. vigil's own `vigil_*` and `process_*` families keep their
    /// names.
    pub namespace: Option<String>,
}

impl Default for PrometheusSettings {
    fn default() -> Self {
        PrometheusSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            stale_after: Duration::from_secs(300),
            max_series: 1_000_000,
            max_series_per_plugin: DEFAULT_SERIES_PER_PLUGIN,
            namespace: None,
        }
    }
}

impl PrometheusSettings {
    pub fn limits(&self) -> SeriesLimits {
        SeriesLimits {
            max_series: self.max_series,
            max_series_per_plugin: self.max_series_per_plugin,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSection {
    listen: Option<Spanned<String>>,
    stale_after: Option<Spanned<String>>,
    max_series: Option<Spanned<u64>>,
    max_series_per_plugin: Option<Spanned<u64>>,
    namespace: Option<Spanned<String>>,
}

/// `namespace` of `[outputs.prometheus]` or `[[outputs.pushgateway]]`,
/// checked as a metric-name prefix.
pub fn namespace(
    what: &str,
    value: Option<&Spanned<String>>,
    at: At<'_>,
) -> Result<Option<String>, LocatedError> {
    let Some(value) = value else {
        return Ok(None);
    };
    vigil_core::metric_names::check_namespace(value.get_ref())
        .map_err(|e| at(value.span(), format!("{what}.namespace: {e}")))?;
    Ok(Some(value.get_ref().clone()))
}

impl PrometheusSection {
    pub fn resolve(self, at: At<'_>) -> Result<PrometheusSettings, LocatedError> {
        let mut settings = PrometheusSettings::default();
        if let Some(listen) = &self.listen {
            settings.listen = listen.get_ref().parse().map_err(|e| {
                at(
                    listen.span(),
                    format!(
                        "outputs.prometheus.listen {:?} is not an address:port ({e})",
                        listen.get_ref()
                    ),
                )
            })?;
        }
        if let Some(stale) = &self.stale_after {
            settings.stale_after = duration_in_range(
                "outputs.prometheus.stale_after",
                stale,
                STALE_AFTER_RANGE,
                at,
            )?;
        }
        let (max_series, per_plugin) = series_budgets(
            "outputs.prometheus",
            self.max_series.as_ref(),
            self.max_series_per_plugin.as_ref(),
            at,
        )?;
        settings.max_series = max_series;
        settings.max_series_per_plugin = per_plugin;
        settings.namespace = namespace("outputs.prometheus", self.namespace.as_ref(), at)?;
        Ok(settings)
    }
}

/// `max_series` (default 1,000,000) and `max_series_per_plugin` (default
/// 250,000, or `max_series` when that is lower), each 1 to 50,000,000;
/// a per-plugin budget above `max_series` is an error (it could never be
/// reached).
pub fn series_budgets(
    what: &str,
    max_series: Option<&Spanned<u64>>,
    per_plugin: Option<&Spanned<u64>>,
    at: At<'_>,
) -> Result<(usize, usize), LocatedError> {
    let max = match max_series {
        Some(max) => in_range(
            &format!("{what}.max_series"),
            max,
            1..=MAX_SERIES_CEILING,
            "",
            at,
        )? as usize,
        None => 1_000_000,
    };
    let per_plugin = match per_plugin {
        Some(budget) => {
            let n = in_range(
                &format!("{what}.max_series_per_plugin"),
                budget,
                1..=MAX_SERIES_CEILING,
                "",
                at,
            )? as usize;
            if n > max {
                return Err(at(
                    budget.span(),
                    format!("{what}.max_series_per_plugin ({n}) exceeds {what}.max_series ({max})"),
                ));
            }
            n
        }
        None => DEFAULT_SERIES_PER_PLUGIN.min(max),
    };
    Ok((max, per_plugin))
}

/// How many series a [`Families`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    pub max_series: usize,
    pub max_series_per_plugin: usize,
}

/// A metric family: its name, type and help text.
struct Family {
    name: String,
    kind: Kind,
    help: String,
    /// The name its samples carry (a counter's ends in `_total`).
    sample_name: String,
    /// The (group type, metric) that created it, and the names derived
    /// from them, to settle a later pair that derives the same name.
    group_type: String,
    metric: String,
    derived: Derived,
}

/// Every name a family of `kind` called `name` writes on a page, in
/// either format: its `# TYPE` names and its sample names (OpenMetrics
/// reserves `_created` for counters and histograms).
fn page_names(name: &str, kind: Kind) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        Kind::Gauge => &[""],
        Kind::Counter => &["", "_total", "_created"],
        Kind::Histogram => &["", "_bucket", "_sum", "_count", "_created"],
    };
    suffixes.iter().map(|s| format!("{name}{s}")).collect()
}

/// One sample of a label set.
#[derive(Debug, Clone, Copy)]
struct Sample {
    family: u32,
    /// The plugin that created the series (index into `Families::plugins`).
    plugin: u32,
    value: SampleValue,
    updated: Instant,
}

/// Every sample sharing one label set (the metrics of one group's
/// dimensions and resource), so a group costs one label lookup, not one
/// per metric. `samples` is sorted by family, so a group's metrics merge
/// into it in time linear in both (plus sorting the group's).
struct LabelSet {
    /// Shared, so a scrape copies a pointer, not the text (see
    /// [`Families::snapshot`]).
    labels: Arc<str>,
    resource: Arc<str>,
    samples: Vec<Sample>,
}

/// What one plugin holds and had refused.
#[derive(Debug, Clone)]
struct PluginUsage {
    name: PluginName,
    series: usize,
    /// Series refused, by reason.
    dropped: BTreeMap<&'static str, u64>,
}

/// Families of series, latest value each; not locked (see
/// [`SeriesRegistry`] for the shared one).
#[derive(Default)]
pub struct Families {
    families: Vec<Family>,
    /// Family index by name.
    by_name: HashMap<String, u32>,
    /// Family index by group type, then metric name (skips building and
    /// sanitising the name for every sample).
    by_metric: HashMap<String, HashMap<String, u32>>,
    /// Every name a family writes on the page, to that family.
    page_names: HashMap<String, u32>,
    /// Names refused besides the `vigil_` prefix (the Pushgateway's own).
    reserved: &'static [&'static str],
    /// Prefix of every family name (`outputs.prometheus.namespace`).
    namespace: Option<String>,
    sets: IdMap<LabelSet>,
    /// Label sets by resource id.
    resources: HashMap<Arc<str>, IdSet>,
    plugins: Vec<PluginUsage>,
    plugin_index: HashMap<PluginName, u32>,
    series: usize,
    /// Families in name order (`ranks[family]` is its position), rebuilt
    /// when families changed.
    ranks: Vec<u32>,
    /// Scratch space of [`Families::accept`], kept between groups.
    incoming: Vec<(u32, usize)>,
    fresh: Vec<(u32, usize)>,
}

/// Why a group's metric was not kept.
pub type DropReason = &'static str;

impl Families {
    /// Families that also refuse the family names `reserved`.
    pub fn with_reserved(reserved: &'static [&'static str]) -> Families {
        Families {
            reserved,
            ..Families::default()
        }
    }

    /// Prefixes every family name with `<namespace>_` (checked by
    /// [`vigil_core::metric_names::check_namespace`] when configured).
    pub fn namespaced(mut self, namespace: Option<String>) -> Families {
        self.namespace = namespace;
        self
    }

    pub fn len(&self) -> usize {
        self.series
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// Whether any series of resource `id` is held.
    pub fn has_resource(&self, id: &str) -> bool {
        self.resources.contains_key(id)
    }

    /// The index of `plugin` in the usage table.
    fn plugin(&mut self, plugin: &str) -> u32 {
        if let Some(index) = self.plugin_index.get(plugin) {
            return *index;
        }
        let name: PluginName = if self.plugins.len() >= MAX_PLUGINS {
            if let Some(index) = self.plugin_index.get(OTHER_PLUGINS) {
                return *index;
            }
            Arc::from(OTHER_PLUGINS)
        } else {
            Arc::from(plugin)
        };
        let index = self.plugins.len() as u32;
        self.plugins.push(PluginUsage {
            name: name.clone(),
            series: 0,
            dropped: BTreeMap::new(),
        });
        self.plugin_index.insert(name, index);
        index
    }

    fn refused(&mut self, plugin: u32, why: DropReason, series: u64) {
        if let Some(usage) = self.plugins.get_mut(plugin as usize) {
            *usage.dropped.entry(why).or_default() += series;
        }
    }

    /// The family of `metric` in `group_type`: its index, or why it has
    /// none.
    fn family(
        &mut self,
        group_type: &str,
        metric: &vigil_core::model::Metric,
    ) -> Result<u32, DropReason> {
        let kind = Kind::from(metric.type_);
        let known = self
            .by_metric
            .get(group_type)
            .and_then(|metrics| metrics.get(&metric.name))
            .copied();
        let index = match known {
            Some(index) => index,
            None => {
                let derived = derive_family_name(
                    group_type,
                    &metric.name,
                    metric.type_ == MetricType::Counter,
                    self.namespace.as_deref(),
                );
                let index = self.place(derived, kind, group_type, &metric.name)?;
                self.by_metric
                    .entry(group_type.to_owned())
                    .or_default()
                    .insert(metric.name.clone(), index);
                index
            }
        };
        if self.families[index as usize].kind != kind {
            return Err(reason::TYPE_CONFLICT);
        }
        Ok(index)
    }

    /// The family a (group type, metric) pair new to this registry goes
    /// to. When another pair already holds its name, the pair with the
    /// smaller [`Derived::precedence`] keeps the name and the other is
    /// written under its plain `<group>_<metric>` name, whatever order
    /// they came in (see [`vigil_core::metric_names`]); two plain names
    /// that coincide share one family, as they always did.
    fn place(
        &mut self,
        derived: Derived,
        kind: Kind,
        group_type: &str,
        metric: &str,
    ) -> Result<u32, DropReason> {
        let Some(holder) = self.by_name.get(&derived.name).copied() else {
            let name = derived.name.clone();
            return self.new_family(name, kind, group_type, metric, derived);
        };
        let held = &self.families[holder as usize];
        if !derived.shortened() && !held.derived.shortened() {
            return Ok(holder);
        }
        let ours = derived.precedence(group_type, metric);
        let theirs = held.derived.precedence(&held.group_type, &held.metric);
        if ours < theirs && self.rename_to_plain(holder) {
            let name = derived.name.clone();
            return self.new_family(name, kind, group_type, metric, derived);
        }
        if !derived.shortened() {
            // Ours is plain and the holder could not move: a name clash.
            return Err(reason::TYPE_CONFLICT);
        }
        match self.by_name.get(&derived.plain).copied() {
            Some(index) => Ok(index),
            None => {
                let name = derived.plain.clone();
                self.new_family(name, kind, group_type, metric, derived)
            }
        }
    }

    /// Moves family `index` to its plain name; false (nothing changed)
    /// when that name is reserved or another family writes it.
    fn rename_to_plain(&mut self, index: u32) -> bool {
        let family = &self.families[index as usize];
        let plain = family.derived.plain.clone();
        let kind = family.kind;
        let names = page_names(&plain, kind);
        if plain.starts_with(RESERVED_PREFIX)
            || names
                .iter()
                .any(|n| self.reserved.contains(&n.as_str()) || self.page_names.contains_key(n))
        {
            return false;
        }
        let old = std::mem::replace(&mut self.families[index as usize].name, plain.clone());
        for n in page_names(&old, kind) {
            self.page_names.remove(&n);
        }
        for n in names {
            self.page_names.insert(n, index);
        }
        self.by_name.remove(&old);
        self.by_name.insert(plain.clone(), index);
        self.families[index as usize].sample_name = match kind {
            Kind::Counter => format!("{plain}_total"),
            _ => plain,
        };
        self.ranks.clear();
        true
    }

    fn new_family(
        &mut self,
        name: String,
        kind: Kind,
        group_type: &str,
        metric: &str,
        derived: Derived,
    ) -> Result<u32, DropReason> {
        if name.starts_with(RESERVED_PREFIX) {
            return Err(reason::RESERVED_NAME);
        }
        let names = page_names(&name, kind);
        if names.iter().any(|n| self.reserved.contains(&n.as_str())) {
            return Err(reason::RESERVED_NAME);
        }
        if names.iter().any(|n| self.page_names.contains_key(n)) {
            return Err(reason::TYPE_CONFLICT);
        }
        let index = self.families.len() as u32;
        for n in names {
            self.page_names.insert(n, index);
        }
        let sample_name = match kind {
            Kind::Counter => format!("{name}_total"),
            _ => name.clone(),
        };
        self.families.push(Family {
            name: name.clone(),
            kind,
            help: format!("vigil: metric {metric} of metrics group {group_type}"),
            sample_name,
            group_type: group_type.to_owned(),
            metric: metric.to_owned(),
            derived,
        });
        self.by_name.insert(name, index);
        self.ranks.clear();
        Ok(index)
    }

    /// Records a group's samples for `plugin`; the reason if any metric was
    /// dropped (every dropped series is counted against `plugin`).
    /// `labels` is the group's rendered label set.
    pub fn accept(
        &mut self,
        group: &MetricsGroup,
        plugin: &str,
        labels: &str,
        now: Instant,
        limits: SeriesLimits,
    ) -> Option<DropReason> {
        let plugin = self.plugin(plugin);
        let mut dropped = None;
        // (family, position in the group), in the group's order.
        let mut incoming = std::mem::take(&mut self.incoming);
        incoming.clear();
        for (position, metric) in group.metrics.iter().enumerate() {
            match self.family(&group.group_type, metric) {
                Ok(index) => incoming.push((index, position)),
                Err(why) => {
                    dropped.get_or_insert(why);
                    self.refused(plugin, why, 1);
                }
            }
        }
        if incoming.is_empty() {
            self.incoming = incoming;
            return dropped;
        }
        let id = label_set_id(labels);
        let Families {
            sets,
            resources,
            plugins,
            series,
            fresh,
            ..
        } = self;
        let mut created = false;
        let set = sets.entry(id).or_insert_with(|| {
            created = true;
            LabelSet {
                labels: Arc::from(labels),
                resource: Arc::from(group.resource.id.as_str()),
                samples: Vec::with_capacity(incoming.len()),
            }
        });
        let mut refusals: Vec<(DropReason, u64)> = Vec::new();
        let mut refuse = |why: DropReason, dropped: &mut Option<DropReason>| {
            dropped.get_or_insert(why);
            match refusals.iter_mut().find(|(w, _)| *w == why) {
                Some((_, n)) => *n += 1,
                None => refusals.push((why, 1)),
            }
        };
        // Known series update in place (samples are sorted by family: a
        // binary search each); the rest are new. Within a group the last
        // metric of a family wins.
        fresh.clear();
        for &(family, position) in &incoming {
            match set.samples.binary_search_by_key(&family, |s| s.family) {
                Ok(at) => {
                    let sample = &mut set.samples[at];
                    if sample.plugin == plugin {
                        sample.value = group.metrics[position].value.into();
                        sample.updated = now;
                    } else {
                        refuse(reason::OTHER_PLUGIN, &mut dropped);
                    }
                }
                Err(_) => fresh.push((family, position)),
            }
        }
        if !fresh.is_empty() {
            // Stable, so of one family's metrics the last stays last.
            fresh.sort_by_key(|&(family, _)| family);
            fresh.dedup_by(|later, earlier| {
                if later.0 == earlier.0 {
                    earlier.1 = later.1;
                    true
                } else {
                    false
                }
            });
            let before = set.samples.len();
            for &(family, position) in fresh.iter() {
                if plugins[plugin as usize].series >= limits.max_series_per_plugin {
                    refuse(reason::PLUGIN_SERIES_LIMIT, &mut dropped);
                } else if *series >= limits.max_series {
                    refuse(reason::SERIES_LIMIT, &mut dropped);
                } else {
                    set.samples.push(Sample {
                        family,
                        plugin,
                        value: group.metrics[position].value.into(),
                        updated: now,
                    });
                    plugins[plugin as usize].series += 1;
                    *series += 1;
                }
            }
            if before > 0 && set.samples.len() > before {
                // Two sorted runs: the stable sort merges them in one pass.
                set.samples.sort_by_key(|s| s.family);
            }
        }
        if set.samples.is_empty() {
            sets.remove(&id);
        } else if created {
            resources
                .entry(Arc::from(group.resource.id.as_str()))
                .or_default()
                .insert(id);
        }
        self.incoming = incoming;
        for (why, n) in refusals {
            self.refused(plugin, why, n);
        }
        dropped
    }

    /// Drops series last updated before `cutoff`; returns the resources
    /// that lost any.
    pub fn sweep(&mut self, cutoff: Instant) -> Vec<Arc<str>> {
        let ids: Vec<SeriesId> = self.sets.keys().copied().collect();
        self.retain(ids, |sample| sample.updated >= cutoff)
    }

    /// Drops every series of resource `id`.
    pub fn forget_resource(&mut self, id: &str) {
        let Some(ids) = self.resources.get(id) else {
            return;
        };
        let ids: Vec<SeriesId> = ids.iter().copied().collect();
        self.retain(ids, |_| false);
    }

    /// Keeps the samples of label sets `ids` that `keep` says to; returns
    /// the resources that lost any.
    fn retain(&mut self, ids: Vec<SeriesId>, keep: impl Fn(&Sample) -> bool) -> Vec<Arc<str>> {
        let mut changed: Vec<Arc<str>> = Vec::new();
        for id in ids {
            let Some(set) = self.sets.get_mut(&id) else {
                continue;
            };
            let before = set.samples.len();
            let plugins = &mut self.plugins;
            set.samples.retain(|sample| {
                let kept = keep(sample);
                if !kept && let Some(usage) = plugins.get_mut(sample.plugin as usize) {
                    usage.series = usage.series.saturating_sub(1);
                }
                kept
            });
            let removed = before - set.samples.len();
            if removed == 0 {
                continue;
            }
            self.series -= removed;
            let resource = set.resource.clone();
            if set.samples.is_empty() {
                self.sets.remove(&id);
                if let Some(of_resource) = self.resources.get_mut(&resource) {
                    of_resource.remove(&id);
                    if of_resource.is_empty() {
                        self.resources.remove(&resource);
                    }
                }
            }
            if changed.last() != Some(&resource) {
                changed.push(resource);
            }
        }
        changed.sort();
        changed.dedup();
        // Names no series uses any more would otherwise pile up (metric
        // names come from plugins): compact once they dominate.
        if self.families.len() > 2 * self.series + 1024 {
            self.compact();
        }
        changed
    }

    fn compact(&mut self) {
        let mut used = vec![false; self.families.len()];
        for set in self.sets.values() {
            for sample in &set.samples {
                used[sample.family as usize] = true;
            }
        }
        let mut remap = vec![u32::MAX; self.families.len()];
        let families = std::mem::take(&mut self.families);
        for (old, family) in families.into_iter().enumerate() {
            if used[old] {
                remap[old] = self.families.len() as u32;
                self.families.push(family);
            }
        }
        // Remapping keeps the order, so every set stays sorted.
        for set in self.sets.values_mut() {
            for sample in &mut set.samples {
                sample.family = remap[sample.family as usize];
            }
        }
        for index in self.by_name.values_mut() {
            *index = remap[*index as usize];
        }
        self.by_name.retain(|_, index| *index != u32::MAX);
        self.page_names.clear();
        for (index, family) in self.families.iter().enumerate() {
            for name in page_names(&family.name, family.kind) {
                self.page_names.insert(name, index as u32);
            }
        }
        for metrics in self.by_metric.values_mut() {
            metrics.retain(|_, index| {
                *index = remap[*index as usize];
                *index != u32::MAX
            });
        }
        self.by_metric.retain(|_, metrics| !metrics.is_empty());
        self.ranks.clear();
    }

    /// Rebuilds the name order if families changed.
    fn rank(&mut self) {
        if self.ranks.len() == self.families.len() {
            return;
        }
        let mut order: Vec<u32> = (0..self.families.len() as u32).collect();
        order.sort_by(|a, b| {
            self.families[*a as usize]
                .name
                .cmp(&self.families[*b as usize].name)
        });
        self.ranks = vec![0; order.len()];
        for (rank, family) in order.into_iter().enumerate() {
            self.ranks[family as usize] = rank as u32;
        }
    }

    /// Writes every family with its series (samples bucketed by family:
    /// linear in the series, plus sorting the family names).
    pub fn render(&mut self, doc: &mut Exposition) {
        self.rank();
        let mut by_family: Vec<Vec<(&str, SampleValue)>> = vec![Vec::new(); self.families.len()];
        for set in self.sets.values() {
            for sample in &set.samples {
                by_family[sample.family as usize].push((&*set.labels, sample.value));
            }
        }
        let mut order = vec![0u32; self.families.len()];
        for (family, rank) in self.ranks.iter().enumerate() {
            order[*rank as usize] = family as u32;
        }
        for family in order {
            let series = &by_family[family as usize];
            if series.is_empty() {
                continue;
            }
            let family = &self.families[family as usize];
            doc.family(&family.name, family.kind, &family.help);
            for (labels, value) in series {
                doc.sample(&family.sample_name, labels, *value);
            }
        }
    }

    /// Every series, to write without holding the families: label sets are
    /// shared, so this copies a pointer and a value per series (a few tens
    /// of ms for a million), and a scrape of any size holds the registry's
    /// lock only that long, not for the rendering.
    pub fn snapshot(&mut self) -> Snapshot {
        self.rank();
        let mut order = vec![0u32; self.families.len()];
        for (family, rank) in self.ranks.iter().enumerate() {
            order[*rank as usize] = family as u32;
        }
        let mut samples = Vec::with_capacity(self.series);
        for set in self.sets.values() {
            for sample in &set.samples {
                let rank = self.ranks.get(sample.family as usize).copied().unwrap_or(0);
                samples.push((rank, set.labels.clone(), sample.value));
            }
        }
        Snapshot {
            families: order
                .into_iter()
                .map(|family| {
                    let family = &self.families[family as usize];
                    (
                        family.name.clone(),
                        family.kind,
                        family.help.clone(),
                        family.sample_name.clone(),
                    )
                })
                .collect(),
            samples,
        }
    }

    /// Writes the families of resource `id`'s series (the Pushgateway
    /// group of that resource); false when it has none. Linear in that
    /// resource's series (plus their sort by family name).
    pub fn render_resource(&mut self, id: &str, doc: &mut Exposition) -> bool {
        self.rank();
        let Some(ids) = self.resources.get(id) else {
            return false;
        };
        let mut samples: Vec<(u32, u32, &str, SampleValue)> = ids
            .iter()
            .filter_map(|id| self.sets.get(id))
            .flat_map(|set| {
                set.samples.iter().map(|s| {
                    let rank = self.ranks.get(s.family as usize).copied().unwrap_or(0);
                    (rank, s.family, &*set.labels, s.value)
                })
            })
            .collect();
        samples.sort_unstable_by_key(|s| s.0);
        let mut current = None;
        for (_, family, labels, value) in samples {
            let family = &self.families[family as usize];
            if current != Some(family.name.as_str()) {
                doc.family(&family.name, family.kind, &family.help);
                current = Some(family.name.as_str());
            }
            doc.sample(&family.sample_name, labels, value);
        }
        true
    }

    /// Each plugin's live series and refusals.
    pub fn plugin_usage(&self) -> Usage {
        self.plugins
            .iter()
            .map(|usage| {
                (
                    usage.name.to_string(),
                    usage.series as u64,
                    usage
                        .dropped
                        .iter()
                        .map(|(why, n)| ((*why).to_owned(), *n))
                        .collect(),
                )
            })
            .collect()
    }

    /// The label text held, in bytes (each label set once).
    pub fn label_bytes(&self) -> usize {
        self.sets.values().map(|set| set.labels.len()).sum()
    }
}

/// Every series of a [`Families`] at one moment ([`Families::snapshot`]).
pub struct Snapshot {
    /// (name, kind, help, sample name), in name order.
    families: Vec<(String, Kind, String, String)>,
    /// (rank of the family in `families`, labels, value).
    samples: Vec<(u32, Arc<str>, SampleValue)>,
}

impl Snapshot {
    /// Writes every family with its series (bucketed by family: linear).
    pub fn write(self, doc: &mut Exposition) {
        let mut by_family: Vec<Vec<(Arc<str>, SampleValue)>> =
            vec![Vec::new(); self.families.len()];
        for (rank, labels, value) in self.samples {
            if let Some(bucket) = by_family.get_mut(rank as usize) {
                bucket.push((labels, value));
            }
        }
        for ((name, kind, help, sample_name), series) in self.families.iter().zip(by_family) {
            if series.is_empty() {
                continue;
            }
            doc.family(name, *kind, help);
            for (labels, value) in series {
                doc.sample(sample_name, &labels, value);
            }
        }
    }
}

/// The collected series of this process, shared by the sink loop (writes)
/// and the `/metrics` endpoint (reads).
pub struct SeriesRegistry {
    settings: PrometheusSettings,
    families: Mutex<Families>,
    counters: SinkCounters,
    /// Copies of what the families hold, readable without their lock (a
    /// large accept holds it for a while, off the runtime; `vigil status`
    /// reads these from async code).
    series: AtomicUsize,
    plugins: UsageView,
}

/// Each plugin's live series and refusals (by reason).
pub type Usage = Vec<(String, u64, BTreeMap<String, u64>)>;

/// [`Usage`] as a sink last published it, readable without the sink's
/// own lock.
#[derive(Debug, Default)]
pub struct UsageView(Mutex<Usage>);

impl UsageView {
    pub fn set(&self, usage: Usage) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = usage;
    }

    pub fn get(&self) -> Usage {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl SeriesRegistry {
    pub fn new(settings: PrometheusSettings) -> SeriesRegistry {
        SeriesRegistry {
            families: Mutex::new(Families::default().namespaced(settings.namespace.clone())),
            settings,
            counters: SinkCounters::default(),
            series: AtomicUsize::new(0),
            plugins: UsageView::default(),
        }
    }

    pub fn settings(&self) -> &PrometheusSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the lock-free copies.
    fn published(&self, families: &Families) {
        self.series.store(families.len(), Ordering::Relaxed);
        self.plugins.set(families.plugin_usage());
    }

    /// Takes groups of an unknown producer (see [`Self::accept_from`]).
    pub fn accept(&self, groups: &[SharedGroup]) {
        self.accept_from(groups, &[]);
    }

    /// Takes groups, `plugins[i]` having produced `groups[i]` (an unknown
    /// producer where `plugins` is short). CPU work linear in the groups'
    /// size: call it off the async runtime for large batches.
    pub fn accept_from(&self, groups: &[SharedGroup], plugins: &[PluginName]) {
        let now = Instant::now();
        // Labels are rendered outside the lock; a scrape waits only for the
        // map updates.
        let labelled: Vec<String> = groups.iter().map(|g| group_labels(g, &[])).collect();
        let limits = self.settings.limits();
        let mut families = self.lock();
        for (i, (group, labels)) in groups.iter().zip(&labelled).enumerate() {
            let plugin = plugins.get(i).map_or(UNKNOWN_PLUGIN, |p| &**p);
            self.counters.accepted(1);
            match families.accept(group, plugin, labels, now, limits) {
                None => self.counters.delivered(1),
                Some(why) => self.counters.dropped(why, 1),
            }
        }
        self.published(&families);
    }

    pub fn forget_resource(&self, id: &str) {
        let mut families = self.lock();
        families.forget_resource(id);
        self.published(&families);
    }

    /// Drops stale series, then writes the rest; the lock is held for
    /// the sweep and a [`Families::snapshot`], not for the writing, so a
    /// scrape of a large registry does not hold up the sinks.
    pub fn render(&self, doc: &mut Exposition) {
        let snapshot = {
            let mut families = self.lock();
            if let Some(cutoff) = Instant::now().checked_sub(self.settings.stale_after) {
                families.sweep(cutoff);
            }
            self.published(&families);
            families.snapshot()
        };
        snapshot.write(doc);
    }

    pub fn series(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// The label text held, in bytes.
    pub fn label_bytes(&self) -> usize {
        self.lock().label_bytes()
    }

    pub fn snapshot(&self, name: &str) -> SinkSnapshot {
        self.counters.snapshot(
            name,
            "prometheus",
            self.series() as u64,
            self.settings.max_series as u64,
        )
    }

    /// Each plugin's series and refusals, as sink `name`.
    pub fn plugin_series(&self, name: &str) -> Vec<PluginSeries> {
        plugin_series(name, "prometheus", &self.plugins.get())
    }
}

/// [`Families::plugin_usage`] as snapshots of sink `name` of `kind`.
pub fn plugin_series(name: &str, kind: &str, usage: &Usage) -> Vec<PluginSeries> {
    usage
        .iter()
        .map(|(plugin, series, dropped)| PluginSeries {
            sink: name.to_owned(),
            kind: kind.to_owned(),
            plugin: plugin.clone(),
            series: *series,
            dropped: dropped.clone(),
        })
        .collect()
}

/// Where vigil's own health is served alone: `vigil_*` and `process_*`
/// families, no collected series.
pub const HEALTH_PATH: &str = "/health/metrics";
/// Where the collected series are served (with vigil's health before them).
pub const METRICS_PATH: &str = "/metrics";

/// The `/metrics` document: vigil's health, then the collected series.
pub fn render_metrics(
    format: Format,
    health: &dyn SelfMetrics,
    registry: Option<&SeriesRegistry>,
) -> String {
    let mut doc = Exposition::new(format);
    health.render(&mut doc);
    if let Some(registry) = registry {
        registry.render(&mut doc);
    }
    doc.finish()
}

/// Whether an `Accept-Encoding` header accepts gzip: `gzip` (or `x-gzip`,
/// or `*`) listed without `q=0`. An explicit `gzip;q=0` wins over `*`.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    let mut star = false;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        match coding.as_str() {
            "gzip" | "x-gzip" => return !refused,
            "*" => star = !refused,
            _ => {}
        }
    }
    star
}

/// gzip at level 1. Exposition text repeats every label set on each of
/// its samples, so even the fastest level shrinks it several times
/// (the test `gzip_shrinks_a_page_of_repeated_labels` holds a page of
/// interface series to under a fifth); the higher levels cost several
/// times the CPU for a few percent more, on every scrape of a page that
/// can reach tens of MB.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

/// Serves [`METRICS_PATH`] (vigil's health, then the collected series) and
/// [`HEALTH_PATH`] (vigil's health alone) on `listen` until `stop` turns
/// true, gzip-compressed for scrapers that ask for it. Binding errors are
/// returned at once (a taken port is a configuration error).
///
/// `/metrics` keeps the health families so that a Panoptes operator's one
/// scrape job sees devices and vigil together, as before; they are a few
/// hundred series next to the devices' up to millions. A scrape job for
/// vigil itself uses `/health/metrics`, which never renders a device
/// series however many the registry holds.
pub async fn serve(
    listen: SocketAddr,
    health: Arc<dyn SelfMetrics>,
    registry: Option<Arc<SeriesRegistry>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    serve_with(listen, health, registry, None, stop).await
}

/// [`serve`], with `extra` routes merged in on the same listener (vigil's
/// HTTP API, `/api/v1`: its router guards its own routes; `/metrics` stays
/// open as before). `extra` must not define `/`, [`METRICS_PATH`] or
/// [`HEALTH_PATH`], nor a fallback of its own at the top level.
pub async fn serve_with(
    listen: SocketAddr,
    health: Arc<dyn SelfMetrics>,
    registry: Option<Arc<SeriesRegistry>>,
    extra: Option<axum::Router>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("outputs.prometheus.listen {listen}: {e}"))?;
    let page = move |with_series: bool| {
        let health = health.clone();
        let registry = registry.clone();
        move |headers: HeaderMap| {
            let health = health.clone();
            let registry = if with_series { registry.clone() } else { None };
            async move {
                let format =
                    Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
                let compress = accepts_gzip(
                    headers
                        .get(header::ACCEPT_ENCODING)
                        .and_then(|v| v.to_str().ok()),
                );
                // Rendering (and compressing) a large registry is CPU
                // work; keep it off the runtime's reactor threads.
                let body = tokio::task::spawn_blocking(move || {
                    let text = render_metrics(format, health.as_ref(), registry.as_deref());
                    if compress {
                        gzip(text.as_bytes())
                    } else {
                        Ok(text.into_bytes())
                    }
                })
                .await;
                match body {
                    Ok(Ok(body)) => {
                        let mut response = (
                            StatusCode::OK,
                            [
                                (header::CONTENT_TYPE, format.content_type()),
                                (header::VARY, "Accept-Encoding"),
                            ],
                            body,
                        )
                            .into_response();
                        if compress {
                            response.headers_mut().insert(
                                header::CONTENT_ENCODING,
                                header::HeaderValue::from_static("gzip"),
                            );
                        }
                        response
                    }
                    Ok(Err(e)) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                    }
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }
    };
    let mut app = axum::Router::new()
        .route(METRICS_PATH, axum::routing::get(page(true)))
        .route(HEALTH_PATH, axum::routing::get(page(false)))
        .route(
            "/",
            axum::routing::get(|| async {
                "vigil: collected series and vigil's health at /metrics, vigil's health alone at /health/metrics\n"
            }),
        );
    let with_api = extra.is_some();
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    tracing::info!(%listen, with_api, "serving {METRICS_PATH} and {HEALTH_PATH}");
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("/metrics server: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::model::{Datetime, Dimension, Metric, MetricValue, Resource};

    fn group(
        resource: &str,
        interface: &str,
        metrics: &[(&str, MetricType, MetricValue)],
    ) -> SharedGroup {
        typed_group("interface", resource, interface, metrics)
    }

    fn typed_group(
        group_type: &str,
        resource: &str,
        interface: &str,
        metrics: &[(&str, MetricType, MetricValue)],
    ) -> SharedGroup {
        let at = Datetime {
            seconds: 1,
            nanoseconds: 0,
        };
        Arc::new(MetricsGroup {
            group_type: group_type.into(),
            interval_seconds: 60,
            creation_timestamp: at,
            schema_version: "0.2".into(),
            resource: Resource::named(resource, "127.0.0.1").into(),
            dimensions: vec![Dimension {
                name: "interface_name".into(),
                value: interface.into(),
            }],
            metrics: metrics
                .iter()
                .map(|(name, type_, value)| Metric {
                    name: (*name).into(),
                    value: *value,
                    type_: *type_,
                    creation_timestamp: at,
                })
                .collect(),
        })
    }

    fn gauge(name: &str) -> (&str, MetricType, MetricValue) {
        (name, MetricType::Gauge, MetricValue::Float(1.0))
    }

    fn render(registry: &SeriesRegistry, format: Format) -> String {
        let mut doc = Exposition::new(format);
        registry.render(&mut doc);
        doc.finish()
    }

    fn plugins(names: &[&str]) -> Vec<PluginName> {
        names.iter().map(|n| PluginName::from(*n)).collect()
    }

    fn usage_of(registry: &SeriesRegistry, plugin: &str) -> PluginSeries {
        registry
            .plugin_series("prometheus")
            .into_iter()
            .find(|p| p.plugin == plugin)
            .unwrap_or_default()
    }

    #[test]
    fn series_budgets_have_defaults_and_ceilings() {
        let parse = |text: &str| {
            let section: PrometheusSection = toml::from_str(text).expect("toml");
            section.resolve(&|_, message| {
                LocatedError::new(std::path::Path::new("site.toml"), 1, message)
            })
        };
        let defaults = parse("").expect("defaults");
        assert_eq!(
            (defaults.max_series, defaults.max_series_per_plugin),
            (1_000_000, DEFAULT_SERIES_PER_PLUGIN)
        );
        // A lower total lowers the default share with it.
        let small = parse("max_series = 1000").expect("small");
        assert_eq!(small.max_series_per_plugin, 1000);
        let err = parse("max_series = 1000\nmax_series_per_plugin = 2000").expect_err("over");
        assert!(
            err.message
                .contains("max_series_per_plugin (2000) exceeds outputs.prometheus.max_series"),
            "{err}"
        );
        let err = parse("max_series_per_plugin = 0").expect_err("zero");
        assert!(err.message.contains("1 to 50000000"), "{err}");
        let err = parse("max_series = 60000000").expect_err("ceiling");
        assert!(
            err.message.contains("max_series must be 1 to 50000000"),
            "{err}"
        );
    }

    #[test]
    fn latest_values_with_types_and_labels() {
        let registry = SeriesRegistry::new(PrometheusSettings::default());
        registry.accept(&[group(
            "sw1",
            "ge-0/0/0",
            &[
                ("bits_in", MetricType::Gauge, MetricValue::Float(1.5)),
                (
                    "error_packets_in",
                    MetricType::Counter,
                    MetricValue::Unsigned(7),
                ),
            ],
        )]);
        registry.accept(&[group(
            "sw1",
            "ge-0/0/0",
            &[("bits_in", MetricType::Gauge, MetricValue::Float(2.5))],
        )]);
        let text = render(&registry, Format::Text);
        assert!(text.contains("# TYPE interface_bits_in gauge\n"), "{text}");
        assert!(
            text.contains("# TYPE interface_error_packets_in_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("interface_bits_in{interface_name=\"ge-0/0/0\",resource_id=\"sw1\",")
                && text.contains("} 2.5\n"),
            "{text}"
        );
        assert!(!text.contains(" 1.5\n"), "latest value only: {text}");
        assert!(text.contains("interface_error_packets_in_total{"), "{text}");
        let om = render(&registry, Format::OpenMetrics);
        assert!(
            om.contains("# TYPE interface_error_packets_in counter\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        assert_eq!(registry.series(), 2);
    }

    #[test]
    fn stale_and_expired_series_leave() {
        let registry = SeriesRegistry::new(PrometheusSettings {
            stale_after: Duration::from_millis(50),
            ..PrometheusSettings::default()
        });
        registry.accept(&[group("old", "e0", &[gauge("bits_in")])]);
        std::thread::sleep(Duration::from_millis(80));
        registry.accept(&[
            group("new", "e0", &[gauge("bits_in")]),
            group("gone", "e0", &[gauge("bits_in")]),
        ]);
        registry.forget_resource("gone");
        let text = render(&registry, Format::Text);
        assert!(text.contains("resource_id=\"new\""), "{text}");
        assert!(!text.contains("resource_id=\"old\""), "stale: {text}");
        assert!(!text.contains("resource_id=\"gone\""), "expired: {text}");
        assert_eq!(registry.series(), 1);
        assert_eq!(usage_of(&registry, UNKNOWN_PLUGIN).series, 1);
    }

    #[test]
    fn names_no_series_uses_are_forgotten() {
        let mut families = Families::default();
        let now = Instant::now();
        let limits = PrometheusSettings::default().limits();
        for i in 0..3000 {
            let g = group(
                &format!("r{i}"),
                "e0",
                &[(&format!("m{i}"), MetricType::Gauge, MetricValue::Float(1.0))],
            );
            families.accept(&g, "p", &group_labels(&g, &[]), now, limits);
            families.forget_resource(&format!("r{i}"));
        }
        let g = group(
            "kept",
            "e0",
            &[("bits_in", MetricType::Gauge, MetricValue::Float(2.0))],
        );
        families.accept(&g, "p", &group_labels(&g, &[]), now, limits);
        assert!(
            families.families.len() <= 1025,
            "{}",
            families.families.len()
        );
        assert!(families.page_names.len() <= 3 * 1025);
        let mut doc = Exposition::new(Format::Text);
        families.render(&mut doc);
        let text = doc.finish();
        assert!(text.contains("interface_bits_in{"), "{text}");
        assert!(
            text.contains("resource_id=\"kept\"") && text.contains("} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn bounds_and_type_conflicts_are_counted() {
        let registry = SeriesRegistry::new(PrometheusSettings {
            max_series: 2,
            max_series_per_plugin: 2,
            ..PrometheusSettings::default()
        });
        for i in 0..4 {
            registry.accept(&[group(&format!("sw{i}"), "e0", &[gauge("bits_in")])]);
        }
        registry.accept(&[group(
            "sw0",
            "e0",
            &[("bits_in", MetricType::Counter, MetricValue::Unsigned(1))],
        )]);
        let snapshot = registry.snapshot("prometheus");
        assert_eq!(snapshot.buffered, 2);
        assert_eq!(
            snapshot.dropped.get(reason::PLUGIN_SERIES_LIMIT),
            Some(&2),
            "{snapshot:?}"
        );
        assert_eq!(snapshot.dropped.get(reason::TYPE_CONFLICT), Some(&1));
        assert_eq!(snapshot.delivered, 2);
    }

    /// A plugin that floods cardinality fills its own budget; the
    /// neighbour's new series still get in, and the refusals are counted
    /// against the flooder.
    #[test]
    fn one_plugin_cannot_take_another_plugins_series() {
        let registry = SeriesRegistry::new(PrometheusSettings {
            max_series: 1_000,
            max_series_per_plugin: 300,
            ..PrometheusSettings::default()
        });
        let flood: Vec<SharedGroup> = (0..5_000)
            .map(|i| group("sw1", &format!("e{i}"), &[gauge("bits_in")]))
            .collect();
        registry.accept_from(&flood, &vec![PluginName::from("hog"); flood.len()]);
        let neighbour: Vec<SharedGroup> = (0..100)
            .map(|i| group("sw2", &format!("e{i}"), &[gauge("bits_in")]))
            .collect();
        registry.accept_from(&neighbour, &vec![PluginName::from("good"); 100]);
        let hog = usage_of(&registry, "hog");
        assert_eq!(hog.series, 300);
        assert_eq!(hog.dropped.get(reason::PLUGIN_SERIES_LIMIT), Some(&4_700));
        let good = usage_of(&registry, "good");
        assert_eq!(good.series, 100);
        assert!(good.dropped.is_empty(), "{good:?}");
        assert_eq!(registry.series(), 400);
        // The flooder cannot overwrite the neighbour's values either.
        registry.accept_from(
            &[group(
                "sw2",
                "e0",
                &[("bits_in", MetricType::Gauge, MetricValue::Float(666.0))],
            )],
            &plugins(&["hog"]),
        );
        let text = render(&registry, Format::Text);
        assert!(!text.contains(" 666\n"), "{text}");
        assert_eq!(
            usage_of(&registry, "hog").dropped.get(reason::OTHER_PLUGIN),
            Some(&1)
        );
        // Once the neighbour's series leave, the budget is free again.
        registry.forget_resource("sw1");
        assert_eq!(usage_of(&registry, "hog").series, 0);
    }

    /// `vigil_*` families are vigil's: a plugin's are refused and counted.
    #[test]
    fn vigil_names_are_reserved() {
        let registry = SeriesRegistry::new(PrometheusSettings::default());
        registry.accept_from(
            &[
                typed_group(
                    "vigil",
                    "sw1",
                    "e0",
                    &[("plugin_runs", MetricType::Counter, MetricValue::Unsigned(9))],
                ),
                // `vigil-x` sanitises to `vigil_x`.
                typed_group("vigil-x", "sw1", "e0", &[gauge("y")]),
                typed_group("vigilant", "sw1", "e0", &[gauge("y")]),
            ],
            &plugins(&["evil", "evil", "evil"]),
        );
        let text = render(&registry, Format::Text);
        assert!(!text.contains("vigil_"), "{text}");
        assert!(text.contains("vigilant_y{"), "{text}");
        let evil = usage_of(&registry, "evil");
        assert_eq!(evil.dropped.get(reason::RESERVED_NAME), Some(&2));
        assert_eq!(evil.series, 1);
    }

    /// Families that would share a name on the page, in either format,
    /// are refused (the later one), so the page always parses.
    #[test]
    fn names_that_collide_after_suffixing_are_refused() {
        let registry = SeriesRegistry::new(PrometheusSettings::default());
        let counter = ("x", MetricType::Counter, MetricValue::Unsigned(1));
        type Case<'a> = (&'a str, Vec<(&'a str, MetricType, MetricValue)>);
        let cases: Vec<Case<'_>> = vec![
            // counter g_x: writes g_x_total (and reserves g_x_created).
            ("g", vec![counter]),
            // gauge x_total: would be the counter's sample name g_x_total,
            // but no gauge ends in `_total`: it is g_total_x.
            ("g", vec![gauge("x_total")]),
            // gauge g_x_created: OpenMetrics' counter suffix.
            ("g", vec![gauge("x_created")]),
            // gauge g_x: the counter's family name.
            ("g", vec![gauge("x")]),
            // gauge y_total first (h_total_y), then counter h_y (h_y_total):
            // they no longer clash.
            ("h", vec![gauge("y_total")]),
            (
                "h",
                vec![("y", MetricType::Counter, MetricValue::Unsigned(2))],
            ),
        ];
        for (group_type, metrics) in &cases {
            registry.accept(&[typed_group(group_type, "sw1", "e0", metrics)]);
        }
        let snapshot = registry.snapshot("prometheus");
        assert_eq!(snapshot.dropped.get(reason::TYPE_CONFLICT), Some(&2));
        for format in [Format::Text, Format::OpenMetrics] {
            let page = render(&registry, format);
            strict_parse(&page, format).unwrap_or_else(|e| panic!("{e}\n{page}"));
            assert!(page.contains("g_x_total{"), "{page}");
            assert!(page.contains("\ng_total_x{"), "{page}");
            assert!(page.contains("h_y_total{"), "{page}");
            assert!(page.contains("\nh_total_y{"), "{page}");
        }
    }

    /// A strict reader of what [`Exposition`] writes: every sample line
    /// belongs to the family declared just before it (its name is the
    /// family's, with the suffixes its type allows), no family or `# TYPE`
    /// name appears twice, no sample name appears in two families, and
    /// OpenMetrics ends with `# EOF`.
    pub(crate) fn strict_parse(page: &str, format: Format) -> Result<usize, String> {
        use std::collections::HashSet;
        let mut types: HashSet<String> = HashSet::new();
        let mut owner: HashMap<String, String> = HashMap::new();
        let mut family: Option<(String, String)> = None;
        let mut samples = 0;
        let mut lines = page.lines().peekable();
        while let Some(line) = lines.next() {
            if line == "# EOF" {
                if format != Format::OpenMetrics || lines.peek().is_some() {
                    return Err("# EOF misplaced".into());
                }
                return Ok(samples);
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                if family.as_ref().is_some_and(|(f, _)| f == name) {
                    return Err(format!("second HELP for {name}"));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap_or_default().to_owned();
                let kind = parts.next().unwrap_or_default().to_owned();
                if !types.insert(name.clone()) {
                    return Err(format!("second TYPE for {name}"));
                }
                family = Some((name, kind));
                continue;
            }
            let Some((name, kind)) = &family else {
                return Err(format!("sample before any TYPE: {line}"));
            };
            let sample = line.split(['{', ' ']).next().unwrap_or_default().to_owned();
            let base = match (format, kind.as_str()) {
                (Format::Text, "counter") => name.strip_suffix("_total").map(str::to_owned),
                _ => Some(name.clone()),
            }
            .ok_or_else(|| format!("counter {name} without _total"))?;
            let allowed: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "gauge" => &[""],
                "histogram" => &["_bucket", "_sum", "_count"],
                other => return Err(format!("unknown type {other}")),
            };
            if !allowed.iter().any(|s| sample == format!("{base}{s}")) {
                return Err(format!("sample {sample} outside family {name} ({kind})"));
            }
            if let Some(previous) = owner.insert(sample.clone(), name.clone())
                && previous != *name
            {
                return Err(format!("sample {sample} in families {previous} and {name}"));
            }
            if types.contains(&sample) && sample != *name && !(format == Format::Text) {
                return Err(format!("sample {sample} named like another family"));
            }
            samples += 1;
        }
        match format {
            Format::OpenMetrics => Err("no # EOF".into()),
            Format::Text => Ok(samples),
        }
    }

    /// The names the bundled plugins' groups get: no doubled words, no
    /// gauge ending in `_total`; the page parses in both formats.
    #[test]
    fn names_are_not_doubled_and_gauges_do_not_end_in_total() {
        let registry = SeriesRegistry::new(PrometheusSettings::default());
        let signed = |name| (name, MetricType::Gauge, MetricValue::Signed(5));
        registry.accept(&[
            typed_group("cpu", "sw1", "e0", &[signed("cpu_utilization")]),
            typed_group(
                "memory",
                "sw1",
                "e0",
                &[signed("memory_total"), signed("memory_used")],
            ),
            typed_group("status", "sw1", "e0", &[signed("polling_status")]),
            typed_group(
                "interface",
                "sw1",
                "e0",
                &[(
                    "total_packets_in",
                    MetricType::Counter,
                    MetricValue::Unsigned(9),
                )],
            ),
        ]);
        let page = render(&registry, Format::Text);
        for family in [
            "# TYPE cpu_utilization gauge\n",
            "# TYPE total_memory gauge\n",
            "# TYPE memory_used gauge\n",
            "# TYPE polling_status gauge\n",
            "# TYPE interface_total_packets_in_total counter\n",
        ] {
            assert!(page.contains(family), "{family}: {page}");
        }
        for doubled in ["cpu_cpu", "memory_memory", "status_polling", "memory_total"] {
            assert!(
                !page
                    .lines()
                    .any(|l| l.starts_with(doubled) || l.starts_with(&format!("# TYPE {doubled}"))),
                "{doubled}: {page}"
            );
        }
        for format in [Format::Text, Format::OpenMetrics] {
            let page = render(&registry, format);
            strict_parse(&page, format).unwrap_or_else(|e| panic!("{e}\n{page}"));
        }
    }

    /// Two pairs that derive one name: the pair whose name was not
    /// shortened keeps it, the other falls back to `<group>_<metric>`,
    /// in whichever order they arrive; of two shortened pairs the smaller
    /// (group, metric) keeps it.
    #[test]
    fn colliding_names_are_settled_the_same_in_any_order() {
        let plain = ("utilization", MetricType::Gauge, MetricValue::Float(1.0));
        let doubled = (
            "cpu_utilization",
            MetricType::Gauge,
            MetricValue::Float(2.0),
        );
        for order in [[plain, doubled], [doubled, plain]] {
            let registry = SeriesRegistry::new(PrometheusSettings::default());
            for metric in order {
                registry.accept(&[typed_group("cpu", "sw1", "e0", &[metric])]);
            }
            let page = render(&registry, Format::Text);
            assert!(
                page.contains("\ncpu_utilization{interface_name=\"e0\"") && page.contains("} 1\n"),
                "{page}"
            );
            assert!(
                page.contains("\ncpu_cpu_utilization{interface_name=\"e0\"")
                    && page.contains("} 2\n"),
                "{page}"
            );
            // Updates keep going to the same families.
            registry.accept(&[typed_group(
                "cpu",
                "sw1",
                "e0",
                &[(
                    "cpu_utilization",
                    MetricType::Gauge,
                    MetricValue::Float(3.0),
                )],
            )]);
            let page = render(&registry, Format::Text);
            assert!(page.contains("cpu_cpu_utilization{"), "{page}");
            assert!(page.contains("} 3\n") && !page.contains("} 2\n"), "{page}");
            assert_eq!(registry.series(), 2);
            strict_parse(&page, Format::Text).unwrap_or_else(|e| panic!("{e}\n{page}"));
        }
        // Two shortened pairs: `status`+`polling_status` and
        // `polling_status`+`status` both derive `polling_status`; the
        // smaller (group, metric), `polling_status`/`status`, keeps it.
        let a = ("polling_status", "status");
        let b = ("status", "polling_status");
        for order in [[a, b], [b, a]] {
            let registry = SeriesRegistry::new(PrometheusSettings::default());
            for (group, metric) in order {
                registry.accept(&[typed_group(group, "sw1", "e0", &[gauge(metric)])]);
            }
            let page = render(&registry, Format::Text);
            assert!(
                page.contains(
                    "# HELP polling_status vigil: metric status of metrics group polling_status\n"
                ),
                "{page}"
            );
            assert!(
                page.contains("# TYPE status_polling_status gauge\n"),
                "{page}"
            );
        }
    }

    #[test]
    fn a_namespace_prefixes_every_collected_family() {
        let parse = |text: &str| {
            let section: PrometheusSection = toml::from_str(text).expect("toml");
            section.resolve(&|_, message| {
                LocatedError::new(std::path::Path::new("site.toml"), 1, message)
            })
        };
        assert_eq!(parse("").expect("default").namespace, None);
        let settings = parse("namespace = \"panoptes\"").expect("namespace");
        assert_eq!(settings.namespace.as_deref(), Some("panoptes"));
        for bad in ["vigil", "9x", "a-b", "x_", ""] {
            let err = parse(&format!("namespace = {bad:?}")).expect_err(bad);
            assert!(
                err.message.contains("outputs.prometheus.namespace"),
                "{err}"
            );
        }
        let registry = SeriesRegistry::new(settings);
        registry.accept(&[
            group("sw1", "e0", &[gauge("bits_in")]),
            typed_group("cpu", "sw1", "e0", &[gauge("cpu_utilization")]),
            // With a namespace a group called `vigil` is no longer vigil's.
            typed_group("vigil", "sw1", "e0", &[gauge("x")]),
        ]);
        let page = render(&registry, Format::Text);
        assert!(page.contains("\npanoptes_interface_bits_in{"), "{page}");
        assert!(page.contains("\npanoptes_cpu_utilization{"), "{page}");
        assert!(page.contains("\npanoptes_vigil_x{"), "{page}");
        assert!(!page.contains("\ninterface_bits_in"), "{page}");
    }

    #[test]
    fn gzip_is_negotiated_on_accept_encoding() {
        assert!(!accepts_gzip(None));
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip;q=1.0, *;q=0.5")));
        assert!(accepts_gzip(Some("identity, *")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("*, gzip;q=0")));
        assert!(!accepts_gzip(Some("br")));
    }

    /// A page of interface series shrinks to under a fifth at level 1,
    /// and decompresses to the same bytes.
    #[test]
    fn gzip_shrinks_a_page_of_repeated_labels() {
        use std::io::Read as _;
        let registry = SeriesRegistry::new(PrometheusSettings::default());
        let groups: Vec<SharedGroup> = (0..500)
            .map(|i| {
                group(
                    &format!("sw{}", i % 7),
                    &format!("ge-0/0/{i}"),
                    &[
                        (
                            "bits_in",
                            MetricType::Gauge,
                            MetricValue::Float(i as f64 * 1.5),
                        ),
                        ("bits_out", MetricType::Gauge, MetricValue::Float(i as f64)),
                        ("errors_in", MetricType::Counter, MetricValue::Unsigned(i)),
                    ],
                )
            })
            .collect();
        registry.accept(&groups);
        let page = render(&registry, Format::Text);
        let packed = gzip(page.as_bytes()).expect("gzip");
        assert!(
            packed.len() * 5 < page.len(),
            "{} of {}",
            packed.len(),
            page.len()
        );
        let mut unpacked = String::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_string(&mut unpacked)
            .expect("gunzip");
        assert_eq!(unpacked, page);
    }

    /// A group of many metrics keeps its label text once: the registry
    /// holds about what the plugin sent, not the labels per sample.
    #[test]
    fn label_text_is_held_once_per_label_set() {
        let registry = SeriesRegistry::new(PrometheusSettings::default());
        let metrics: Vec<(String, MetricType, MetricValue)> = (0..2_000)
            .map(|i| (format!("m{i}"), MetricType::Gauge, MetricValue::Signed(i)))
            .collect();
        let metrics: Vec<(&str, MetricType, MetricValue)> = metrics
            .iter()
            .map(|(n, t, v)| (n.as_str(), *t, *v))
            .collect();
        let long = "x".repeat(10_000);
        let g = group("sw1", &long, &metrics);
        let labels = group_labels(&g, &[]).len();
        registry.accept(&[g]);
        assert_eq!(registry.series(), 2_000);
        assert_eq!(registry.label_bytes(), labels);
    }
}
