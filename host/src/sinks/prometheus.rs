//! The Prometheus exposition sink: every collected series, kept in memory
//! and served on `/metrics` next to vigil's own health
//! ([`crate::health`]), in the text format or OpenMetrics as the scraper
//! asks.
//!
//! A series is `<group>_<metric>` (counters `..._total`) labelled with the
//! group's dimensions and the resource's fields
//! ([`super::exposition::group_labels`]). Its sample is the latest value.
//! A series not updated for `stale_after` is dropped, as are the series of
//! an expired resource, so a device that went away stops being reported
//! instead of flat-lining. The registry holds at most `max_series`; past
//! that, new series are dropped and counted (`series_limit`). A name that
//! arrives with a second type keeps the first (`type_conflict`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use toml::Spanned;

use super::buffer::{SharedGroup, SinkCounters, SinkSnapshot, reason};
use super::exposition::{Exposition, Format, Kind, SampleValue, family_name, group_labels};
use super::{At, LocatedError, STALE_AFTER_RANGE, duration_in_range, in_range};
use crate::model::{MetricType, MetricsGroup};

/// `[outputs.prometheus]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusSettings {
    /// Where `/metrics` is served.
    pub listen: SocketAddr,
    pub stale_after: Duration,
    pub max_series: usize,
}

impl Default for PrometheusSettings {
    fn default() -> Self {
        PrometheusSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            stale_after: Duration::from_secs(300),
            max_series: 1_000_000,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSection {
    listen: Option<Spanned<String>>,
    stale_after: Option<Spanned<String>>,
    max_series: Option<Spanned<u64>>,
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
        if let Some(max) = &self.max_series {
            settings.max_series =
                in_range("outputs.prometheus.max_series", max, 1..=50_000_000, "", at)? as usize;
        }
        Ok(settings)
    }
}

/// A metric family: its name, type and help text.
struct Family {
    name: String,
    kind: Kind,
    help: String,
}

/// One sample of a label set.
struct Sample {
    family: u32,
    value: SampleValue,
    updated: Instant,
}

/// Every sample sharing one label set (the metrics of one group's
/// dimensions and resource), so a group costs one label lookup, not one
/// per metric.
struct LabelSet {
    resource_id: Arc<str>,
    samples: Vec<Sample>,
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
    label_sets: HashMap<Arc<str>, LabelSet>,
    series: usize,
}

/// Why a group's metric was not kept.
pub type DropReason = &'static str;

impl Families {
    pub fn len(&self) -> usize {
        self.series
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// The family of `metric` in `group_type`: its index, or why it has
    /// none (a name already used with another type).
    fn family(
        &mut self,
        group_type: &str,
        metric: &crate::model::Metric,
        kinds: Option<&mut HashMap<String, Kind>>,
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
                let mut name = family_name(group_type, &metric.name);
                if metric.type_ == MetricType::Counter
                    && let Some(stripped) = name.strip_suffix("_total")
                {
                    name = stripped.to_owned();
                }
                let index = match self.by_name.get(&name) {
                    Some(index) => *index,
                    None => {
                        let index = self.families.len() as u32;
                        self.families.push(Family {
                            name: name.clone(),
                            kind,
                            help: format!(
                                "vigil: metric {} of metrics group {group_type}",
                                metric.name
                            ),
                        });
                        self.by_name.insert(name, index);
                        index
                    }
                };
                self.by_metric
                    .entry(group_type.to_owned())
                    .or_default()
                    .insert(metric.name.clone(), index);
                index
            }
        };
        let family = &self.families[index as usize];
        if family.kind != kind {
            return Err(reason::TYPE_CONFLICT);
        }
        // A type fixed elsewhere (the Pushgateway sees every resource).
        if let Some(kinds) = kinds {
            let fixed = *kinds.entry(family.name.clone()).or_insert(kind);
            if fixed != kind {
                return Err(reason::TYPE_CONFLICT);
            }
        }
        Ok(index)
    }

    /// Records a group's samples; the reason if any metric was dropped.
    /// `labels` is the group's rendered label set.
    pub fn accept(
        &mut self,
        group: &MetricsGroup,
        labels: &str,
        now: Instant,
        max_series: usize,
        mut kinds: Option<&mut HashMap<String, Kind>>,
    ) -> Option<DropReason> {
        let mut dropped = None;
        let mut indexes = Vec::with_capacity(group.metrics.len());
        for metric in &group.metrics {
            match self.family(&group.group_type, metric, kinds.as_deref_mut()) {
                Ok(index) => indexes.push(Some(index)),
                Err(why) => {
                    dropped = Some(why);
                    indexes.push(None);
                }
            }
        }
        let set = match self.label_sets.get_mut(labels) {
            Some(set) => set,
            None => self
                .label_sets
                .entry(Arc::from(labels))
                .or_insert_with(|| LabelSet {
                    resource_id: Arc::from(group.resource.id.as_str()),
                    samples: Vec::with_capacity(group.metrics.len()),
                }),
        };
        for (metric, index) in group.metrics.iter().zip(indexes) {
            let Some(family) = index else { continue };
            match set.samples.iter_mut().find(|s| s.family == family) {
                Some(sample) => {
                    sample.value = metric.value.into();
                    sample.updated = now;
                }
                None if self.series >= max_series => dropped = Some(reason::SERIES_LIMIT),
                None => {
                    set.samples.push(Sample {
                        family,
                        value: metric.value.into(),
                        updated: now,
                    });
                    self.series += 1;
                }
            }
        }
        if set.samples.is_empty() {
            self.label_sets.remove(labels);
        }
        dropped
    }

    /// Drops series last updated before `cutoff`.
    pub fn sweep(&mut self, cutoff: Instant) {
        self.retain(|_, sample| sample.updated >= cutoff);
    }

    pub fn forget_resource(&mut self, id: &str) {
        self.retain(|resource_id, _| resource_id != id);
    }

    /// Keeps the samples `keep(resource id, sample)` says to.
    fn retain(&mut self, keep: impl Fn(&str, &Sample) -> bool) {
        let mut removed = 0;
        self.label_sets.retain(|_, set| {
            let LabelSet {
                resource_id,
                samples,
            } = set;
            let before = samples.len();
            samples.retain(|sample| keep(resource_id, sample));
            removed += before - samples.len();
            !samples.is_empty()
        });
        self.series -= removed;
        // Names no series uses any more would otherwise pile up (metric
        // names come from plugins): compact once they dominate.
        if self.families.len() > 2 * self.series + 1024 {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut used = vec![false; self.families.len()];
        for set in self.label_sets.values() {
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
        for set in self.label_sets.values_mut() {
            for sample in &mut set.samples {
                sample.family = remap[sample.family as usize];
            }
        }
        self.by_name.retain(|_, index| {
            *index = remap[*index as usize];
            *index != u32::MAX
        });
        for metrics in self.by_metric.values_mut() {
            metrics.retain(|_, index| {
                *index = remap[*index as usize];
                *index != u32::MAX
            });
        }
        self.by_metric.retain(|_, metrics| !metrics.is_empty());
    }

    /// Writes every family with its series.
    pub fn render(&self, doc: &mut Exposition) {
        let mut by_family: Vec<Vec<(&str, SampleValue)>> = vec![Vec::new(); self.families.len()];
        for (labels, set) in &self.label_sets {
            for sample in &set.samples {
                by_family[sample.family as usize].push((labels, sample.value));
            }
        }
        let mut order: Vec<usize> = (0..self.families.len()).collect();
        order.sort_by(|a, b| self.families[*a].name.cmp(&self.families[*b].name));
        for index in order {
            let series = &by_family[index];
            if series.is_empty() {
                continue;
            }
            let family = &self.families[index];
            doc.family(&family.name, family.kind, &family.help);
            let sample_name = match family.kind {
                Kind::Counter => format!("{}_total", family.name),
                _ => family.name.clone(),
            };
            for (labels, value) in series {
                doc.sample(&sample_name, labels, *value);
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
}

impl SeriesRegistry {
    pub fn new(settings: PrometheusSettings) -> SeriesRegistry {
        SeriesRegistry {
            settings,
            families: Mutex::new(Families::default()),
            counters: SinkCounters::default(),
        }
    }

    pub fn settings(&self) -> &PrometheusSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn accept(&self, groups: &[SharedGroup]) {
        let now = Instant::now();
        // Labels are rendered outside the lock; a scrape waits only for the
        // map updates.
        let labelled: Vec<(&SharedGroup, String)> =
            groups.iter().map(|g| (g, group_labels(g, &[]))).collect();
        let mut families = self.lock();
        for (group, labels) in labelled {
            self.counters.accepted(1);
            match families.accept(group, &labels, now, self.settings.max_series, None) {
                None => self.counters.delivered(1),
                Some(why) => self.counters.dropped(why, 1),
            }
        }
    }

    pub fn forget_resource(&self, id: &str) {
        self.lock().forget_resource(id);
    }

    /// Drops stale series, then writes the rest.
    pub fn render(&self, doc: &mut Exposition) {
        let mut families = self.lock();
        if let Some(cutoff) = Instant::now().checked_sub(self.settings.stale_after) {
            families.sweep(cutoff);
        }
        families.render(doc);
    }

    pub fn series(&self) -> usize {
        self.lock().len()
    }

    pub fn snapshot(&self, name: &str) -> SinkSnapshot {
        self.counters.snapshot(
            name,
            "prometheus",
            self.series() as u64,
            self.settings.max_series as u64,
        )
    }
}

/// The `/metrics` document: vigil's health, then the collected series.
pub fn render_metrics(
    format: Format,
    health: &crate::health::Health,
    registry: Option<&SeriesRegistry>,
) -> String {
    let mut doc = Exposition::new(format);
    health.render(&mut doc);
    if let Some(registry) = registry {
        registry.render(&mut doc);
    }
    doc.finish()
}

/// Serves `/metrics` on `listen` until `stop` turns true. Binding errors
/// are returned at once (a taken port is a configuration error).
pub async fn serve(
    listen: SocketAddr,
    health: Arc<crate::health::Health>,
    registry: Option<Arc<SeriesRegistry>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("outputs.prometheus.listen {listen}: {e}"))?;
    let metrics = move |headers: HeaderMap| {
        let health = health.clone();
        let registry = registry.clone();
        async move {
            let format =
                Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
            // Rendering a large registry is CPU work; keep it off the
            // runtime's reactor threads.
            let body = tokio::task::spawn_blocking(move || {
                render_metrics(format, &health, registry.as_deref())
            })
            .await;
            match body {
                Ok(body) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, format.content_type())],
                    body,
                )
                    .into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route(
            "/",
            axum::routing::get(|| async { "vigil: metrics at /metrics\n" }),
        );
    tracing::info!(%listen, "serving /metrics");
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
    use crate::model::{Datetime, Dimension, Metric, MetricValue, Resource};

    fn group(
        resource: &str,
        interface: &str,
        metrics: &[(&str, MetricType, MetricValue)],
    ) -> SharedGroup {
        let at = Datetime {
            seconds: 1,
            nanoseconds: 0,
        };
        Arc::new(MetricsGroup {
            group_type: "interface".into(),
            interval_seconds: 60,
            creation_timestamp: at,
            schema_version: "0.2".into(),
            resource: Resource::named(resource, "127.0.0.1"),
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

    fn render(registry: &SeriesRegistry, format: Format) -> String {
        let mut doc = Exposition::new(format);
        registry.render(&mut doc);
        doc.finish()
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
        registry.accept(&[group(
            "old",
            "e0",
            &[("bits_in", MetricType::Gauge, MetricValue::Float(1.0))],
        )]);
        std::thread::sleep(Duration::from_millis(80));
        registry.accept(&[
            group(
                "new",
                "e0",
                &[("bits_in", MetricType::Gauge, MetricValue::Float(1.0))],
            ),
            group(
                "gone",
                "e0",
                &[("bits_in", MetricType::Gauge, MetricValue::Float(1.0))],
            ),
        ]);
        registry.forget_resource("gone");
        let text = render(&registry, Format::Text);
        assert!(text.contains("resource_id=\"new\""), "{text}");
        assert!(!text.contains("resource_id=\"old\""), "stale: {text}");
        assert!(!text.contains("resource_id=\"gone\""), "expired: {text}");
        assert_eq!(registry.series(), 1);
    }

    #[test]
    fn names_no_series_uses_are_forgotten() {
        let mut families = Families::default();
        let now = Instant::now();
        for i in 0..3000 {
            let g = group(
                &format!("r{i}"),
                "e0",
                &[(&format!("m{i}"), MetricType::Gauge, MetricValue::Float(1.0))],
            );
            families.accept(&g, &group_labels(&g, &[]), now, usize::MAX, None);
            families.forget_resource(&format!("r{i}"));
        }
        let g = group(
            "kept",
            "e0",
            &[("bits_in", MetricType::Gauge, MetricValue::Float(2.0))],
        );
        families.accept(&g, &group_labels(&g, &[]), now, usize::MAX, None);
        assert!(
            families.families.len() <= 1025,
            "{}",
            families.families.len()
        );
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
            ..PrometheusSettings::default()
        });
        for i in 0..4 {
            registry.accept(&[group(
                &format!("sw{i}"),
                "e0",
                &[("bits_in", MetricType::Gauge, MetricValue::Float(1.0))],
            )]);
        }
        registry.accept(&[group(
            "sw0",
            "e0",
            &[("bits_in", MetricType::Counter, MetricValue::Unsigned(1))],
        )]);
        let snapshot = registry.snapshot("prometheus");
        assert_eq!(snapshot.buffered, 2);
        assert_eq!(snapshot.dropped.get(reason::SERIES_LIMIT), Some(&2));
        assert_eq!(snapshot.dropped.get(reason::TYPE_CONFLICT), Some(&1));
        assert_eq!(snapshot.delivered, 2);
    }
}
