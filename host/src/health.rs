//! vigil's own health, as numbers: plugin runs by outcome, run durations,
//! start lateness, sandbox limit hits, fuel and memory, queue depths, every
//! sink's buffer and drops, each plugin's series and refused series in the
//! sinks that budget them, and resources by discovery plugin.
//!
//! Every family here is named `vigil_*`; the sinks refuse collected
//! families of that prefix, so what `/metrics` says about vigil is vigil's.
//!
//! [`Health::snapshot`] gathers them into one [`HealthSnapshot`]; the
//! `/metrics` endpoint renders that snapshot and `vigil status` prints the
//! one the running host last stored, so both always show the same numbers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::pipeline::stats::{Histogram, PluginRunStats, RunStats};
use crate::sinks::SinkProbes;
use crate::sinks::buffer::{PluginSeries, SinkSnapshot};
use crate::sinks::exposition::{Exposition, Kind, SampleValue, render_labels};

type Gauge = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Where the health numbers come from; filled in as the host starts.
pub struct Health {
    started_at: f64,
    runs: Arc<RunStats>,
    sinks: SinkProbes,
    queues: Mutex<Vec<(String, Gauge)>>,
    inventory: Mutex<Inventory>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub resources_by_discovery: BTreeMap<String, u64>,
    pub plugins_loaded: u64,
    pub plugins_broken: u64,
}

/// Everything `/metrics` says about vigil itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    pub started_at: f64,
    pub plugins: Vec<PluginRunStats>,
    pub sinks: Vec<SinkSnapshot>,
    pub queues: BTreeMap<String, u64>,
    pub inventory: Inventory,
    /// Series and refused series per sink and plugin (sinks with series
    /// budgets: Prometheus, Pushgateway).
    #[serde(default)]
    pub sink_plugins: Vec<PluginSeries>,
}

impl Health {
    pub fn new(started_at: f64, runs: Arc<RunStats>, sinks: SinkProbes) -> Health {
        Health {
            started_at,
            runs,
            sinks,
            queues: Mutex::new(Vec::new()),
            inventory: Mutex::new(Inventory::default()),
        }
    }

    /// Reports `depth()` as `vigil_queue_depth{queue="<name>"}`.
    pub fn add_queue(&self, name: &str, depth: impl Fn() -> u64 + Send + Sync + 'static) {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_owned(), Arc::new(depth)));
    }

    pub fn set_inventory(&self, inventory: Inventory) {
        *self.inventory.lock().unwrap_or_else(|p| p.into_inner()) = inventory;
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let queues = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        HealthSnapshot {
            started_at: self.started_at,
            plugins: self.runs.snapshot(),
            sinks: self.sinks.snapshots(),
            sink_plugins: self.sinks.plugin_series(),
            queues: queues
                .iter()
                .map(|(name, depth)| (name.clone(), depth()))
                .collect(),
            inventory: self
                .inventory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    pub fn render(&self, doc: &mut Exposition) {
        self.snapshot().render(doc);
    }
}

/// `/metrics` serves vigil's health before the collected series.
impl crate::sinks::SelfMetrics for Health {
    fn render(&self, doc: &mut Exposition) {
        Health::render(self, doc);
    }
}

impl HealthSnapshot {
    /// Writes every health family (`vigil_*`).
    pub fn render(&self, doc: &mut Exposition) {
        let version = env!("CARGO_PKG_VERSION");
        doc.family("vigil_build_info", Kind::Gauge, "vigil's version.");
        doc.sample(
            "vigil_build_info",
            &render_labels(&[("version", version)]),
            SampleValue::Unsigned(1),
        );
        doc.family(
            "vigil_start_time_seconds",
            Kind::Gauge,
            "When this vigil process started, in seconds since the epoch.",
        );
        doc.sample(
            "vigil_start_time_seconds",
            "",
            SampleValue::Float(self.started_at),
        );

        let plugins = &self.plugins;
        counter_per_plugin_and(
            doc,
            plugins,
            "vigil_plugin_runs",
            "Plugin runs by plugin and outcome.",
            "outcome",
            |p| &p.outcomes,
        );
        counter_per_plugin(
            doc,
            plugins,
            "vigil_plugin_runs_skipped",
            "Runs not started because the previous one was still going or too recent.",
            |p| p.skipped,
        );
        counter_per_plugin_and(
            doc,
            plugins,
            "vigil_sandbox_limit_hits",
            "Runs stopped by a sandbox limit, by plugin and limit.",
            "limit",
            |p| &p.limit_hits,
        );
        for (name, help, pick) in [
            (
                "vigil_plugin_run_duration_seconds",
                "Wall-clock duration of plugin runs.",
                (|p| &p.duration_seconds) as fn(&PluginRunStats) -> &Histogram,
            ),
            (
                "vigil_scheduler_lateness_seconds",
                "How late runs started against their schedule.",
                |p| &p.lateness_seconds,
            ),
        ] {
            doc.family(name, Kind::Histogram, help);
            for p in plugins {
                let h = pick(p);
                doc.histogram(
                    name,
                    &[("plugin", &p.name)],
                    &h.cumulative(),
                    h.sum,
                    h.count,
                );
            }
        }
        counter_per_plugin(
            doc,
            plugins,
            "vigil_plugin_fuel_consumed",
            "Fuel (wasm instructions, roughly) plugins consumed.",
            |p| p.fuel_consumed,
        );
        doc.family(
            "vigil_plugin_memory_peak_bytes",
            Kind::Gauge,
            "Peak linear memory of the plugin's latest run.",
        );
        for p in plugins {
            doc.sample(
                "vigil_plugin_memory_peak_bytes",
                &render_labels(&[("plugin", &p.name)]),
                SampleValue::Unsigned(p.memory_peak_bytes),
            );
        }

        doc.family(
            "vigil_queue_depth",
            Kind::Gauge,
            "Items waiting in a queue.",
        );
        for (queue, depth) in &self.queues {
            doc.sample(
                "vigil_queue_depth",
                &render_labels(&[("queue", queue)]),
                SampleValue::Unsigned(*depth),
            );
        }

        let sinks = &self.sinks;
        for (name, help, pick) in [
            (
                "vigil_sink_buffer_groups",
                "Metrics groups (series, for prometheus) a sink holds now.",
                (|s: &SinkSnapshot| s.buffered) as fn(&SinkSnapshot) -> u64,
            ),
            (
                "vigil_sink_buffer_capacity_groups",
                "The most a sink holds before dropping the oldest.",
                |s: &SinkSnapshot| s.capacity,
            ),
        ] {
            doc.family(name, Kind::Gauge, help);
            for s in sinks {
                doc.sample(name, &sink_labels(s), SampleValue::Unsigned(pick(s)));
            }
        }
        for (name, help, pick) in [
            (
                "vigil_sink_accepted_groups",
                "Metrics groups handed to a sink.",
                (|s: &SinkSnapshot| s.accepted) as fn(&SinkSnapshot) -> u64,
            ),
            (
                "vigil_sink_delivered_groups",
                "Metrics groups a sink delivered.",
                |s: &SinkSnapshot| s.delivered,
            ),
            (
                "vigil_sink_retries",
                "Failed deliveries a sink retried.",
                |s: &SinkSnapshot| s.retries,
            ),
        ] {
            doc.family(name, Kind::Counter, help);
            for s in sinks {
                doc.sample(
                    &format!("{name}_total"),
                    &sink_labels(s),
                    SampleValue::Unsigned(pick(s)),
                );
            }
        }
        doc.family(
            "vigil_sink_dropped_groups",
            Kind::Counter,
            "Metrics groups a sink dropped, by reason.",
        );
        for s in sinks {
            for (why, n) in &s.dropped {
                doc.sample(
                    "vigil_sink_dropped_groups_total",
                    &render_labels(&[("sink", &s.name), ("kind", &s.kind), ("reason", why)]),
                    SampleValue::Unsigned(*n),
                );
            }
        }

        doc.family(
            "vigil_sink_series",
            Kind::Gauge,
            "Series a sink holds, by the plugin that produced them.",
        );
        for p in &self.sink_plugins {
            doc.sample(
                "vigil_sink_series",
                &render_labels(&[("sink", &p.sink), ("kind", &p.kind), ("plugin", &p.plugin)]),
                SampleValue::Unsigned(p.series),
            );
        }
        doc.family(
            "vigil_sink_dropped_series",
            Kind::Counter,
            "Series a sink refused, by producing plugin and reason.",
        );
        for p in &self.sink_plugins {
            for (why, n) in &p.dropped {
                doc.sample(
                    "vigil_sink_dropped_series_total",
                    &render_labels(&[
                        ("sink", &p.sink),
                        ("kind", &p.kind),
                        ("plugin", &p.plugin),
                        ("reason", why),
                    ]),
                    SampleValue::Unsigned(*n),
                );
            }
        }

        doc.family(
            "vigil_resources",
            Kind::Gauge,
            "Live resources by the discovery plugin that found them.",
        );
        for (plugin, n) in &self.inventory.resources_by_discovery {
            doc.sample(
                "vigil_resources",
                &render_labels(&[("discovery_plugin", plugin)]),
                SampleValue::Unsigned(*n),
            );
        }
        doc.family(
            "vigil_plugins_loaded",
            Kind::Gauge,
            "Plugins loaded and scheduled.",
        );
        doc.sample(
            "vigil_plugins_loaded",
            "",
            SampleValue::Unsigned(self.inventory.plugins_loaded),
        );
        doc.family(
            "vigil_plugins_broken",
            Kind::Gauge,
            "Plugin files that failed to load.",
        );
        doc.sample(
            "vigil_plugins_broken",
            "",
            SampleValue::Unsigned(self.inventory.plugins_broken),
        );
    }
}

fn sink_labels(s: &SinkSnapshot) -> String {
    render_labels(&[("sink", &s.name), ("kind", &s.kind)])
}

/// A counter family with one series per plugin and key of `pick`'s map,
/// the key as the label `key`.
fn counter_per_plugin_and(
    doc: &mut Exposition,
    plugins: &[PluginRunStats],
    name: &str,
    help: &str,
    key: &str,
    pick: impl Fn(&PluginRunStats) -> &BTreeMap<String, u64>,
) {
    doc.family(name, Kind::Counter, help);
    let sample = format!("{name}_total");
    for p in plugins {
        for (value, n) in pick(p) {
            doc.sample(
                &sample,
                &render_labels(&[("plugin", &p.name), (key, value)]),
                SampleValue::Unsigned(*n),
            );
        }
    }
}

fn counter_per_plugin(
    doc: &mut Exposition,
    plugins: &[PluginRunStats],
    name: &str,
    help: &str,
    pick: impl Fn(&PluginRunStats) -> u64,
) {
    doc.family(name, Kind::Counter, help);
    for p in plugins {
        doc.sample(
            &format!("{name}_total"),
            &render_labels(&[("plugin", &p.name)]),
            SampleValue::Unsigned(pick(p)),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::bus::Batch;
    use crate::model::{Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup};
    use crate::sinks::{OutputSettings, SinkSet, buffer, exposition, prometheus, run_sinks};
    use crate::store::sqlite::SqliteStorage;
    use crate::store::{Storage, StorageLatest};

    fn interface(resource: &str, interface: usize) -> MetricsGroup {
        let at = Datetime {
            seconds: 1,
            nanoseconds: 0,
        };
        MetricsGroup {
            group_type: "interface".into(),
            interval_seconds: 60,
            creation_timestamp: at,
            schema_version: "0.2".into(),
            resource: crate::model::Resource::named(resource, "127.0.0.1").into(),
            dimensions: vec![Dimension {
                name: "interface_name".into(),
                value: format!("e{interface}"),
            }],
            metrics: vec![Metric {
                name: "bits_in".into(),
                value: MetricValue::Float(1.0),
                type_: MetricType::Gauge,
                creation_timestamp: at,
            }],
        }
    }

    /// Through the embedded bus: a plugin that floods series fills its own
    /// budget; the neighbour's series all get in; both are counted per
    /// plugin, on `/metrics` and in the health snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bus_carries_each_plugins_name_to_its_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Storage> =
            Arc::new(SqliteStorage::open(&dir.path().join("vigil.db")).expect("store"));
        let registry = Arc::new(prometheus::SeriesRegistry::new(
            prometheus::PrometheusSettings {
                max_series: 1_500,
                max_series_per_plugin: 1_000,
                ..prometheus::PrometheusSettings::default()
            },
        ));
        let probes = SinkProbes::default();
        let outputs = OutputSettings::default();
        let sinks = SinkSet::open(
            &outputs,
            Arc::new(StorageLatest(store)),
            Some(registry.clone()),
            &probes,
        )
        .expect("sinks");
        let (bus, rx) = tokio::sync::mpsc::channel(4);
        let (_expired_tx, expired_rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(run_sinks(rx, sinks, expired_rx));
        for round in 0..5 {
            let flood = (0..1_000)
                .map(|i| interface("hog-device", round * 1_000 + i))
                .collect();
            bus.send(Batch::from_plugin("hog", flood))
                .await
                .expect("send");
        }
        let good = (0..300).map(|i| interface("good-device", i)).collect();
        bus.send(Batch::from_plugin("good", good))
            .await
            .expect("send");
        drop(bus);
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the sink loop ends with the bus")
            .expect("task")
            .expect("close");
        let per_plugin = probes.plugin_series();
        let of = |plugin: &str| {
            per_plugin
                .iter()
                .find(|p| p.plugin == plugin)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(of("hog").series, 1_000);
        assert_eq!(
            of("hog").dropped.get(buffer::reason::PLUGIN_SERIES_LIMIT),
            Some(&4_000)
        );
        assert_eq!(of("good").series, 300);
        assert!(of("good").dropped.is_empty());
        let health = Health::new(0.0, Arc::new(RunStats::default()), probes.clone());
        let page = prometheus::render_metrics(exposition::Format::Text, &health, Some(&registry));
        assert!(
            page.contains(
                "vigil_sink_series{sink=\"prometheus\",kind=\"prometheus\",plugin=\"good\"} 300\n"
            ),
            "{}",
            &page[..page.len().min(4000)]
        );
        assert!(page.contains(
            "vigil_sink_dropped_series_total{sink=\"prometheus\",kind=\"prometheus\",plugin=\"hog\",reason=\"plugin_series_limit\"} 4000\n"
        ));
        assert_eq!(page.matches("resource_id=\"good-device\"").count(), 300);
    }
}
