//! vigil's own health, as numbers: plugin runs by outcome, run durations,
//! start lateness, sandbox limit hits, fuel and memory, queue depths, every
//! sink's buffer and drops, each plugin's series and refused series in the
//! sinks that budget them, and resources by discovery plugin.
//!
//! Every family here is named `vigil_*`, except the `process_*` families
//! every Prometheus client library exports for its process (resident and
//! virtual memory, CPU seconds, open and maximum file descriptors, start
//! time; read from `/proc/self` on Linux, absent elsewhere, see
//! [`process`]), so the usual process dashboards and alerts work on vigil
//! unchanged. The sinks refuse collected families named `vigil_*`, so what
//! `/metrics` says about vigil is vigil's; a plugin's `process_*` family
//! would need a group type `process`, and sits on `/metrics` only, never
//! on `/health/metrics`, which serves this module's families alone.
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
    log_drops: Mutex<Option<LogDropSource>>,
    endpoints: Mutex<Option<EndpointSource>>,
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
    /// Plugin log lines dropped, by plugin and reason (`run_limit`,
    /// `rate_limit`; see `vigil_capabilities::log`).
    #[serde(default)]
    pub log_dropped: Vec<LogDrops>,
    /// This process, as `process_*` (Linux; `None` elsewhere).
    #[serde(default)]
    pub process: Option<process::ProcessStats>,
    /// The endpoint tracker, when it runs here.
    #[serde(default)]
    pub endpoints: Option<EndpointHealth>,
}

/// The endpoint tracker's numbers (issue #14; see
/// `vigil_endpoints::tracker`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointHealth {
    /// Events received, by source (`apic`, `snmp`, `kafka`, `http`).
    pub received: BTreeMap<String, u64>,
    /// Inputs refused, by source and reason, with the latest sample.
    pub rejected: Vec<EndpointRejections>,
    /// Per worker, in worker order.
    pub workers: Vec<EndpointWorker>,
    /// Each APIC fabric's subscriber state (`building`, `in_sync`,
    /// `reconnecting`, `stopped`).
    pub subscribers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointRejections {
    pub source: String,
    pub reason: String,
    pub count: u64,
    pub sample: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointWorker {
    pub queue_depth: u64,
    pub handled: u64,
    pub store_errors: u64,
    pub lag_seconds: f64,
    pub max_lag_seconds: f64,
}

/// The subscriber states `vigil_endpoint_subscriber_state` has a series for.
pub const SUBSCRIBER_STATES: [&str; 4] = ["building", "in_sync", "reconnecting", "stopped"];

type EndpointSource = Arc<dyn Fn() -> EndpointHealth + Send + Sync>;

/// Log lines of one plugin dropped for one reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogDrops {
    pub plugin: String,
    pub reason: String,
    pub lines: u64,
}

type LogDropSource = Arc<dyn Fn() -> Vec<LogDrops> + Send + Sync>;

impl Health {
    pub fn new(started_at: f64, runs: Arc<RunStats>, sinks: SinkProbes) -> Health {
        Health {
            started_at,
            runs,
            sinks,
            queues: Mutex::new(Vec::new()),
            inventory: Mutex::new(Inventory::default()),
            log_drops: Mutex::new(None),
            endpoints: Mutex::new(None),
        }
    }

    /// Reports the endpoint tracker's numbers (`vigil_endpoint_*`).
    pub fn set_endpoints(&self, source: impl Fn() -> EndpointHealth + Send + Sync + 'static) {
        *self.endpoints.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(source));
    }

    /// Reports `drops()` as `vigil_plugin_log_lines_dropped_total`.
    pub fn set_log_drops(&self, drops: impl Fn() -> Vec<LogDrops> + Send + Sync + 'static) {
        *self.log_drops.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(drops));
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
            log_dropped: self
                .log_drops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|drops| drops())
                .unwrap_or_default(),
            process: process::ProcessStats::read(),
            endpoints: self
                .endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|source| source()),
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
        doc.family(
            "vigil_plugin_log_lines_dropped",
            Kind::Counter,
            "Plugin log lines dropped, by plugin and reason: run_limit (sandbox max_log_lines per run) or rate_limit (the plugin's budget across runs).",
        );
        for d in &self.log_dropped {
            doc.sample(
                "vigil_plugin_log_lines_dropped_total",
                &render_labels(&[("plugin", &d.plugin), ("reason", &d.reason)]),
                SampleValue::Unsigned(d.lines),
            );
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
        if let Some(endpoints) = &self.endpoints {
            endpoints.render(doc);
        }
        if let Some(process) = &self.process {
            process.render(doc);
        }
    }
}

impl EndpointHealth {
    /// The `vigil_endpoint_*` families.
    pub fn render(&self, doc: &mut Exposition) {
        doc.family(
            "vigil_endpoint_events_received",
            Kind::Counter,
            "Endpoint events received, by source.",
        );
        for (source, n) in &self.received {
            doc.sample(
                "vigil_endpoint_events_received_total",
                &render_labels(&[("source", source)]),
                SampleValue::Unsigned(*n),
            );
        }
        doc.family(
            "vigil_endpoint_events_rejected",
            Kind::Counter,
            "Endpoint inputs refused, by source and reason.",
        );
        for r in &self.rejected {
            doc.sample(
                "vigil_endpoint_events_rejected_total",
                &render_labels(&[("source", &r.source), ("reason", &r.reason)]),
                SampleValue::Unsigned(r.count),
            );
        }
        type Pick = fn(&EndpointWorker) -> SampleValue;
        let per_worker: [(&str, Kind, &str, Pick); 5] = [
            (
                "vigil_endpoint_queue_depth",
                Kind::Gauge,
                "Endpoint events waiting in each worker's queue.",
                |w| SampleValue::Unsigned(w.queue_depth),
            ),
            (
                "vigil_endpoint_events_handled",
                Kind::Counter,
                "Endpoint events taken into history, by worker.",
                |w| SampleValue::Unsigned(w.handled),
            ),
            (
                "vigil_endpoint_store_errors",
                Kind::Counter,
                "Endpoint events whose history could not be written, by worker.",
                |w| SampleValue::Unsigned(w.store_errors),
            ),
            (
                "vigil_endpoint_lag_seconds",
                Kind::Gauge,
                "Seconds from receipt to history of each worker's newest event.",
                |w| SampleValue::Float(w.lag_seconds),
            ),
            (
                "vigil_endpoint_max_lag_seconds",
                Kind::Gauge,
                "The largest receipt-to-history lag of each worker since start.",
                |w| SampleValue::Float(w.max_lag_seconds),
            ),
        ];
        for (name, kind, help, pick) in per_worker {
            doc.family(name, kind, help);
            let sample = if kind == Kind::Counter {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            for (i, w) in self.workers.iter().enumerate() {
                doc.sample(
                    &sample,
                    &render_labels(&[("worker", &i.to_string())]),
                    pick(w),
                );
            }
        }
        doc.family(
            "vigil_endpoint_subscriber_state",
            Kind::Gauge,
            "1 for each APIC fabric's current subscriber state, 0 for the others.",
        );
        for (fabric, state) in &self.subscribers {
            for candidate in SUBSCRIBER_STATES {
                doc.sample(
                    "vigil_endpoint_subscriber_state",
                    &render_labels(&[("fabric", fabric), ("state", candidate)]),
                    SampleValue::Unsigned(u64::from(candidate == state)),
                );
            }
        }
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

/// vigil's process as the standard `process_*` families, the names every
/// Prometheus client library uses (client_golang's and the Python
/// client's process collectors), read from `/proc/self` on Linux.
///
/// Each number is read on its own and left out when its file is missing
/// or does not parse (no unwrap on anything read): a page with five of
/// the six families beats none. Reading costs four small files and one
/// directory listing per scrape (an open fd per entry is not needed:
/// `/proc/self/fd` is listed, not opened entry by entry).
///
/// CPU time and start time are in clock ticks; like client_golang's
/// `procfs`, vigil takes `USER_HZ` as 100, the value Linux exports to
/// user space on every architecture it supports (the kernel's own `HZ`
/// may differ; `USER_HZ` does not), which spares an `unsafe` `sysconf`.
pub mod process {
    use serde::{Deserialize, Serialize};

    use crate::sinks::exposition::{Exposition, Kind, SampleValue};

    /// Clock ticks per second in `/proc` (see the module doc).
    pub const USER_HZ: f64 = 100.0;

    /// What `/proc/self` says; each `None` when unreadable.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ProcessStats {
        pub cpu_seconds: Option<f64>,
        pub resident_memory_bytes: Option<u64>,
        pub virtual_memory_bytes: Option<u64>,
        pub open_fds: Option<u64>,
        pub max_fds: Option<u64>,
        pub start_time_seconds: Option<f64>,
    }

    impl ProcessStats {
        /// This process now; `None` off Linux.
        #[cfg(target_os = "linux")]
        pub fn read() -> Option<ProcessStats> {
            let text = |path: &str| std::fs::read_to_string(path).ok();
            let stat = text("/proc/self/stat");
            let stat = stat.as_deref().and_then(parse_stat);
            let status = text("/proc/self/status").unwrap_or_default();
            let boot = text("/proc/stat").as_deref().and_then(parse_boot_time);
            Some(ProcessStats {
                cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / USER_HZ),
                resident_memory_bytes: status_kib(&status, "VmRSS:").map(|k| k * 1024),
                virtual_memory_bytes: status_kib(&status, "VmSize:").map(|k| k * 1024),
                open_fds: std::fs::read_dir("/proc/self/fd")
                    .ok()
                    .map(|dir| dir.count() as u64),
                max_fds: text("/proc/self/limits")
                    .as_deref()
                    .and_then(parse_max_open_files),
                start_time_seconds: match (stat, boot) {
                    (Some(s), Some(boot)) => Some(boot as f64 + s.starttime as f64 / USER_HZ),
                    _ => None,
                },
            })
        }

        /// This process now; `None` off Linux.
        #[cfg(not(target_os = "linux"))]
        pub fn read() -> Option<ProcessStats> {
            None
        }

        /// Writes the families it has.
        pub fn render(&self, doc: &mut Exposition) {
            if let Some(seconds) = self.cpu_seconds {
                doc.family(
                    "process_cpu_seconds",
                    Kind::Counter,
                    "Total user and system CPU time spent in seconds.",
                );
                doc.sample("process_cpu_seconds_total", "", SampleValue::Float(seconds));
            }
            let gauges = [
                (
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                    self.resident_memory_bytes,
                ),
                (
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                    self.virtual_memory_bytes,
                ),
                (
                    "process_open_fds",
                    "Number of open file descriptors.",
                    self.open_fds,
                ),
                (
                    "process_max_fds",
                    "Maximum number of open file descriptors.",
                    self.max_fds,
                ),
            ];
            for (name, help, value) in gauges {
                if let Some(value) = value {
                    doc.family(name, Kind::Gauge, help);
                    doc.sample(name, "", SampleValue::Unsigned(value));
                }
            }
            if let Some(start) = self.start_time_seconds {
                doc.family(
                    "process_start_time_seconds",
                    Kind::Gauge,
                    "Start time of the process since unix epoch in seconds.",
                );
                doc.sample("process_start_time_seconds", "", SampleValue::Float(start));
            }
        }
    }

    /// The fields of `/proc/self/stat` vigil uses, in clock ticks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Stat {
        pub utime: u64,
        pub stime: u64,
        pub starttime: u64,
    }

    /// `/proc/<pid>/stat`: the command name is in parentheses and may hold
    /// spaces and parentheses itself, so fields are counted from the last
    /// `)`; after it come field 3 (state) onwards, so utime (field 14) is
    /// the 12th, stime the 13th and starttime (field 22) the 20th.
    pub fn parse_stat(text: &str) -> Option<Stat> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
        })
    }

    /// A `Key:   1234 kB` line of `/proc/self/status`, in KiB.
    pub fn status_kib(text: &str, key: &str) -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let mut words = line[key.len()..].split_whitespace();
        let value = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") | None => Some(value),
            Some(_) => None,
        }
    }

    /// `btime` of `/proc/stat`: boot time, seconds since the epoch.
    pub fn parse_boot_time(text: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The soft limit of `Max open files` in `/proc/self/limits`; `None`
    /// when unlimited.
    pub fn parse_max_open_files(text: &str) -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stat_fields_count_from_the_last_parenthesis() {
            // A command name with spaces and parentheses in it.
            let text = "4242 (vig (il) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                        250 75 0 0 20 0 9 0 123456 104857600 2048 18446744073709551615\n";
            assert_eq!(
                parse_stat(text),
                Some(Stat {
                    utime: 250,
                    stime: 75,
                    starttime: 123456
                })
            );
            assert_eq!(parse_stat("4242 (x) S 1 2"), None);
            assert_eq!(parse_stat("garbage"), None);
        }

        #[test]
        fn status_limits_and_boot_time() {
            let status = "Name:\tvigil\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n";
            assert_eq!(status_kib(status, "VmRSS:"), Some(10_240));
            assert_eq!(status_kib(status, "VmSize:"), Some(204_800));
            assert_eq!(status_kib(status, "VmSwap:"), None);
            assert_eq!(status_kib("VmRSS:\tlots kB\n", "VmRSS:"), None);
            let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                          Max open files            1024                 524288               files     \n";
            assert_eq!(parse_max_open_files(limits), Some(1024));
            assert_eq!(
                parse_max_open_files(
                    "Max open files            unlimited            unlimited            files\n"
                ),
                None
            );
            assert_eq!(
                parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
                Some(1_700_000_000)
            );
        }

        /// On Linux every family is there, with plausible values for this
        /// very test process.
        #[cfg(target_os = "linux")]
        #[test]
        fn this_process_reports_every_family() {
            let stats = ProcessStats::read().expect("linux");
            let rss = stats.resident_memory_bytes.expect("rss");
            let vsz = stats.virtual_memory_bytes.expect("vsz");
            assert!(rss > 0 && vsz >= rss, "{stats:?}");
            let open = stats.open_fds.expect("open fds");
            assert!(open >= 3, "{stats:?}");
            if let Some(max) = stats.max_fds {
                assert!(max >= open, "{stats:?}");
            }
            assert!(stats.cpu_seconds.expect("cpu") >= 0.0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs_f64();
            let start = stats.start_time_seconds.expect("start");
            // Started within the last day and not in the future (ticks
            // round to 10 ms).
            assert!(
                start <= now + 1.0 && start > now - 86_400.0,
                "{start} {now}"
            );
            let mut doc = Exposition::new(crate::sinks::exposition::Format::Text);
            stats.render(&mut doc);
            let page = doc.finish();
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_virtual_memory_bytes ",
                "process_open_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(page.contains(name), "{name}: {page}");
            }
            assert!(page.contains("# TYPE process_cpu_seconds_total counter\n"));
        }
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

    /// Log drops and the process families are on the health page, which
    /// is all `/health/metrics` serves.
    #[test]
    fn health_carries_log_drops_and_the_process() {
        let health = Health::new(0.0, Arc::new(RunStats::default()), SinkProbes::default());
        health.set_log_drops(|| {
            vec![LogDrops {
                plugin: "chatty".into(),
                reason: "rate_limit".into(),
                lines: 170,
            }]
        });
        let mut doc = Exposition::new(exposition::Format::Text);
        health.render(&mut doc);
        let page = doc.finish();
        assert!(
            page.contains("# TYPE vigil_plugin_log_lines_dropped_total counter\n"),
            "{page}"
        );
        assert!(
            page.contains(
                "vigil_plugin_log_lines_dropped_total{plugin=\"chatty\",reason=\"rate_limit\"} 170\n"
            ),
            "{page}"
        );
        if cfg!(target_os = "linux") {
            for family in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_virtual_memory_bytes",
                "process_open_fds",
                "process_max_fds",
                "process_start_time_seconds",
            ] {
                assert!(page.contains(&format!("\n{family} ")), "{family}: {page}");
            }
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
