//! The pipeline's last stage: where metrics groups leave vigil.
//!
//! ```text
//!                 ┌─ json_lines   Panoptes schema v0.2, one group per line
//! bus ─▶ SinkSet ─┼─ latest       the latest value of every series (CLI)
//!   (accept)      ├─ prometheus   series served on /metrics, with vigil's health
//!                 ├─ influxdb     line protocol over HTTP  ┐ each: own bounded buffer,
//!                 └─ pushgateway  one group per resource   ┘ batching, retry, drop counts
//! ```
//!
//! [`SinkSet::accept`] never waits on a network: networked sinks get the
//! groups through their own [`buffer::SinkBuffer`] and deliver from their
//! own task ([`delivery`]), so one that is down neither blocks polling nor
//! delays another. Every sink counts what it accepted, delivered, retried
//! and dropped, and why ([`buffer::SinkSnapshot`]); `vigil status` and
//! `/metrics` show those counts. The sinks that budget series (the
//! Prometheus registry and the Pushgateway) also count per producing
//! plugin ([`buffer::PluginSeries`]), which the bus carries with every
//! group ([`vigil_core::batch::Batch`]).
//!
//! Stopping is bounded: see [`SinkSet::close`] and [`delivery`]; each
//! networked sink's `shutdown_grace` (default 5 s, 100 ms to 120 s) is the
//! most it delays a stop.

pub mod buffer;
pub mod delivery;
pub mod exposition;
pub mod influxdb;
pub mod json_lines;
pub mod prometheus;
pub mod pushgateway;
pub mod series;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use buffer::{SharedGroup, SinkBuffer, SinkCounters, SinkSnapshot};
use delivery::Delivery;
use vigil_core::LocatedError;
use vigil_core::batch::{Batch, PluginName};

/// Where the latest value of every series is kept for `vigil metrics`:
/// the agent's store, seen by the sinks through this one call. Declared
/// here, by its user, so the sinks depend on no storage backend.
#[async_trait::async_trait]
pub trait LatestStore: Send + Sync + 'static {
    /// Records the newest value of every metric of `groups` (the store's
    /// backend keeps blocking work off the runtime).
    async fn store_latest(
        &self,
        groups: &[Arc<vigil_core::model::MetricsGroup>],
    ) -> Result<(), vigil_core::BackendError>;
}

/// What `/metrics` serves before the collected series: the agent's own
/// health families (`vigil_*`). Declared here so the sinks do not depend
/// on the agent.
pub trait SelfMetrics: Send + Sync + 'static {
    /// Writes the families into `doc`.
    fn render(&self, doc: &mut exposition::Exposition);
}

/// Reports a config error at a span of the site file.
pub use vigil_core::At;

/// The site config's `[outputs]`: which sinks run.
#[derive(Debug, Clone, Default)]
pub struct OutputSettings {
    /// JSON lines in Panoptes' schema (`-` = stdout).
    pub json_lines: Option<PathBuf>,
    /// `[outputs.prometheus]`: the `/metrics` endpoint.
    pub prometheus: Option<prometheus::PrometheusSettings>,
    /// `[[outputs.pushgateway]]`.
    pub pushgateway: Vec<pushgateway::PushgatewaySettings>,
    /// `[[outputs.influxdb]]`.
    pub influxdb: Vec<influxdb::InfluxSettings>,
}

/// `[outputs]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputsSection {
    json_lines: Option<PathBuf>,
    prometheus: Option<prometheus::PrometheusSection>,
    #[serde(default)]
    pushgateway: Vec<Spanned<pushgateway::PushgatewaySection>>,
    #[serde(default)]
    influxdb: Vec<Spanned<influxdb::InfluxSection>>,
}

impl OutputsSection {
    /// Checks every sink's settings; `base` is the site file's directory.
    pub fn resolve(self, base: &Path, at: At<'_>) -> Result<OutputSettings, LocatedError> {
        let mut outputs = OutputSettings {
            json_lines: self.json_lines.map(|p| {
                if p.as_os_str() == "-" {
                    p
                } else {
                    base.join(p)
                }
            }),
            ..OutputSettings::default()
        };
        if let Some(section) = self.prometheus {
            outputs.prometheus = Some(section.resolve(at)?);
        }
        // Names tell sinks apart in `vigil status` and on /metrics; the
        // built-in sinks' names are taken.
        let mut names: Vec<String> = ["json_lines", "latest", "prometheus"]
            .map(str::to_owned)
            .to_vec();
        let mut check_name = |name: &str, span: std::ops::Range<usize>| {
            if names.iter().any(|taken| taken == name) {
                return Err(at(
                    span,
                    format!(
                        "outputs: another sink is already named {name:?}; give each a distinct `name`"
                    ),
                ));
            }
            names.push(name.to_owned());
            Ok(())
        };
        for section in self.pushgateway {
            let span = section.span();
            let settings = section.into_inner().resolve(span.clone(), base, at)?;
            check_name(&settings.name, span)?;
            outputs.pushgateway.push(settings);
        }
        for (index, section) in self.influxdb.into_iter().enumerate() {
            let span = section.span();
            let settings = section
                .into_inner()
                .resolve(index, span.clone(), base, at)?;
            check_name(&settings.name, span)?;
            outputs.influxdb.push(settings);
        }
        Ok(outputs)
    }
}

/// The settings every networked sink shares, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    /// Groups the sink buffers while its server is away (drop-oldest past it).
    pub buffer: Option<Spanned<u32>>,
    pub batch_size: Option<Spanned<u32>>,
    pub flush_interval: Option<Spanned<String>>,
    /// Per request.
    pub timeout: Option<Spanned<String>>,
    /// How long a stopping sink may keep delivering (see [`delivery`]).
    pub shutdown_grace: Option<Spanned<String>>,
}

/// Buffer bound and request timeout of a networked sink.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliverySettings {
    pub buffer: usize,
    pub delivery: Delivery,
    pub timeout: Duration,
}

impl DeliverySection {
    /// `what` prefixes messages, e.g. `outputs.influxdb[0]`.
    pub fn resolve(
        &self,
        what: &str,
        default_buffer: usize,
        at: At<'_>,
    ) -> Result<DeliverySettings, LocatedError> {
        let mut settings = DeliverySettings {
            buffer: default_buffer,
            delivery: Delivery::default(),
            timeout: Duration::from_secs(10),
        };
        if let Some(buffer) = &self.buffer {
            settings.buffer = in_range(
                &format!("{what}.buffer"),
                buffer,
                1..=10_000_000,
                " groups",
                at,
            )? as usize;
        }
        if let Some(batch) = &self.batch_size {
            settings.delivery.batch_size = in_range(
                &format!("{what}.batch_size"),
                batch,
                1..=100_000,
                " groups",
                at,
            )? as usize;
        }
        if let Some(flush) = &self.flush_interval {
            settings.delivery.flush_interval = duration_in_range(
                &format!("{what}.flush_interval"),
                flush,
                Duration::from_millis(10)..=Duration::from_secs(300),
                at,
            )?;
        }
        if let Some(grace) = &self.shutdown_grace {
            settings.delivery.shutdown_grace = duration_in_range(
                &format!("{what}.shutdown_grace"),
                grace,
                SHUTDOWN_GRACE_RANGE,
                at,
            )?;
        }
        if let Some(timeout) = &self.timeout {
            settings.timeout = duration_in_range(
                &format!("{what}.timeout"),
                timeout,
                Duration::from_millis(100)..=Duration::from_secs(300),
                at,
            )?;
        }
        Ok(settings)
    }
}

/// A number from the site file, checked against `range`; `key` names it
/// in the error (e.g. `outputs.influxdb[0].buffer`), `unit` follows the
/// range there (e.g. ` groups`).
pub fn in_range<T: Copy + PartialOrd + std::fmt::Display>(
    key: &str,
    value: &Spanned<T>,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
    at: At<'_>,
) -> Result<T, LocatedError> {
    let n = *value.get_ref();
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(at(
            value.span(),
            format!(
                "{key} must be {} to {}{unit}, found {n}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// A duration from the site file (`10s`, `250ms`, ...), checked against
/// `range`.
pub fn duration_in_range(
    key: &str,
    value: &Spanned<String>,
    range: std::ops::RangeInclusive<Duration>,
    at: At<'_>,
) -> Result<Duration, LocatedError> {
    let parsed = vigil_core::units::parse_duration(value.get_ref())
        .map_err(|e| at(value.span(), format!("{key}: {e}")))?;
    if range.contains(&parsed) {
        Ok(parsed)
    } else {
        Err(at(
            value.span(),
            format!(
                "{key} must be {:?} to {:?}, found {parsed:?}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// `shutdown_grace` of a networked sink: what `vigil` waits for a sink at
/// shutdown at most (default [`delivery::SHUTDOWN_GRACE`], 5 s).
pub const SHUTDOWN_GRACE_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(120);

/// How long a series may go without an update before a sink forgets it.
pub const STALE_AFTER_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(7 * 86_400);

/// One running networked sink.
struct NetworkedSink {
    name: String,
    kind: &'static str,
    buffer: Arc<SinkBuffer>,
    grace: Duration,
    task: tokio::task::JoinHandle<()>,
}

/// A sink's numbers, readable while it runs.
#[derive(Clone)]
enum Probe {
    Buffered(Arc<SinkBuffer>),
    /// A buffered sink that also budgets series per plugin.
    BufferedPerPlugin(Arc<SinkBuffer>, Arc<prometheus::UsageView>),
    Counters(Arc<SinkCounters>),
    Registry(Arc<prometheus::SeriesRegistry>),
}

/// Reads every sink's numbers for `vigil status` and `/metrics`; cheap to
/// clone, shared with the health endpoint. Never waits on a sink's work:
/// every number is a counter or a copy the sink publishes.
#[derive(Clone, Default)]
pub struct SinkProbes(Arc<Mutex<Vec<NamedProbe>>>);

/// A sink's name, kind and probe.
type NamedProbe = (String, &'static str, Probe);

impl SinkProbes {
    fn add(&self, name: &str, kind: &'static str, probe: Probe) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_owned(), kind, probe));
    }

    fn probes(&self) -> Vec<NamedProbe> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn snapshots(&self) -> Vec<SinkSnapshot> {
        self.probes()
            .iter()
            .map(|(name, kind, probe)| match probe {
                Probe::Buffered(buffer) | Probe::BufferedPerPlugin(buffer, _) => buffer
                    .counters
                    .snapshot(name, kind, buffer.len() as u64, buffer.capacity() as u64),
                Probe::Counters(counters) => counters.snapshot(name, kind, 0, 0),
                Probe::Registry(registry) => registry.snapshot(name),
            })
            .collect()
    }

    /// Series and refusals per plugin of the sinks that budget them.
    pub fn plugin_series(&self) -> Vec<buffer::PluginSeries> {
        let mut all = Vec::new();
        for (name, kind, probe) in self.probes() {
            match probe {
                Probe::BufferedPerPlugin(_, usage) => {
                    all.extend(prometheus::plugin_series(&name, kind, &usage.get()));
                }
                Probe::Registry(registry) => all.extend(registry.plugin_series(&name)),
                Probe::Buffered(_) | Probe::Counters(_) => {}
            }
        }
        all
    }
}

/// Every sink of this process.
///
/// # CPU work stays off the runtime
///
/// [`SinkSet::accept_async`] (what [`run_sinks`] uses) hands a batch to
/// the sinks on tokio's blocking pool: JSON encoding, the Prometheus
/// registry's label rendering and updates, and the buffer pushes. The
/// networked sinks encode on the blocking pool too, from their own tasks
/// (see [`delivery`]). Every encoder is linear (or n log n) in a group's
/// size whatever the input ([`exposition::UniqueNames`]), so one group
/// costs time in proportion to its bytes: a 20,000-dimension group of
/// ~200 KB takes milliseconds, not the hours the cubic renaming took.
/// [`SinkSet::accept`] does the same work on the caller's thread, for
/// callers that are not async.
pub struct SinkSet {
    json: Option<Arc<Mutex<json_lines::JsonLines>>>,
    latest: json_lines::LatestValues,
    prometheus: Option<Arc<prometheus::SeriesRegistry>>,
    networked: Vec<NetworkedSink>,
    pushgateways: Vec<Arc<pushgateway::Expiries>>,
}

/// What the synchronous half of [`SinkSet::accept`] touches, cheap to
/// clone into the blocking pool.
#[derive(Clone)]
struct LocalSinks {
    json: Option<Arc<Mutex<json_lines::JsonLines>>>,
    prometheus: Option<Arc<prometheus::SeriesRegistry>>,
    buffers: Vec<Arc<SinkBuffer>>,
}

impl LocalSinks {
    /// Shares the batch's groups and gives them to every sink but the
    /// latest values (which keep them until the next flush).
    fn accept(&self, batch: Batch) -> (Vec<SharedGroup>, Vec<PluginName>) {
        let (groups, plugins) = batch.into_parts();
        let shared: Vec<SharedGroup> = groups.into_iter().map(Arc::new).collect();
        if let Some(json) = &self.json {
            json.lock()
                .unwrap_or_else(|p| p.into_inner())
                .accept(&shared);
        }
        if let Some(registry) = &self.prometheus {
            registry.accept_from(&shared, &plugins);
        }
        for buffer in &self.buffers {
            buffer.push_from(&shared, &plugins);
        }
        (shared, plugins)
    }
}

impl SinkSet {
    /// Starts the sinks `outputs` configures. The Prometheus registry, if
    /// any, is `prometheus` (the `/metrics` endpoint renders it); every
    /// sink registers its numbers with `probes`. Needs a tokio runtime.
    pub fn open(
        outputs: &OutputSettings,
        store: Arc<dyn LatestStore>,
        prometheus: Option<Arc<prometheus::SeriesRegistry>>,
        probes: &SinkProbes,
    ) -> anyhow::Result<SinkSet> {
        let json = match &outputs.json_lines {
            Some(path) => {
                let sink = json_lines::JsonLines::open(path)?;
                probes.add("json_lines", "json_lines", Probe::Counters(sink.counters()));
                Some(Arc::new(Mutex::new(sink)))
            }
            None => None,
        };
        let latest = json_lines::LatestValues::new(store);
        probes.add("latest", "latest", Probe::Counters(latest.counters()));
        if let Some(registry) = &prometheus {
            probes.add(
                "prometheus",
                "prometheus",
                Probe::Registry(registry.clone()),
            );
        }
        let mut sinks = SinkSet {
            json,
            latest,
            prometheus,
            networked: Vec::new(),
            pushgateways: Vec::new(),
        };
        for settings in &outputs.pushgateway {
            let expiries = Arc::new(pushgateway::Expiries::default());
            let writer = pushgateway::PushgatewayWriter::new(settings, expiries.clone())?;
            let usage = writer.usage();
            let buffer = sinks.spawn(&settings.name, "pushgateway", settings.delivery, writer);
            probes.add(
                &settings.name,
                "pushgateway",
                Probe::BufferedPerPlugin(buffer, usage),
            );
            sinks.pushgateways.push(expiries);
        }
        for settings in &outputs.influxdb {
            let writer = influxdb::InfluxWriter::new(settings)?;
            let buffer = sinks.spawn(&settings.name, "influxdb", settings.delivery, writer);
            probes.add(&settings.name, "influxdb", Probe::Buffered(buffer));
        }
        Ok(sinks)
    }

    fn spawn(
        &mut self,
        name: &str,
        kind: &'static str,
        settings: DeliverySettings,
        writer: impl delivery::BatchWriter,
    ) -> Arc<SinkBuffer> {
        let buffer = SinkBuffer::new(settings.buffer);
        let task = tokio::spawn(delivery::deliver(
            name.to_owned(),
            buffer.clone(),
            writer,
            settings.delivery,
        ));
        self.networked.push(NetworkedSink {
            name: name.to_owned(),
            kind,
            buffer: buffer.clone(),
            grace: settings.delivery.shutdown_grace,
            task,
        });
        buffer
    }

    fn local(&self) -> LocalSinks {
        LocalSinks {
            json: self.json.clone(),
            prometheus: self.prometheus.clone(),
            buffers: self.networked.iter().map(|s| s.buffer.clone()).collect(),
        }
    }

    /// Takes a batch on the caller's thread (see [`SinkSet::accept_async`]
    /// for async callers); never waits on a network. JSON lines and the
    /// latest values are durable after the next [`SinkSet::flush`];
    /// networked sinks deliver from their buffers. A `Vec<MetricsGroup>`
    /// is a batch of an unknown producer.
    pub fn accept(&mut self, batch: impl Into<Batch>) {
        let (shared, _) = self.local().accept(batch.into());
        self.latest.accept(shared);
    }

    /// [`SinkSet::accept`] with the CPU work on tokio's blocking pool, so
    /// a large or hostile batch never holds a runtime worker.
    pub async fn accept_async(&mut self, batch: impl Into<Batch>) {
        let batch = batch.into();
        let groups = batch.len();
        let local = self.local();
        match tokio::task::spawn_blocking(move || local.accept(batch)).await {
            Ok((shared, _)) => self.latest.accept(shared),
            Err(e) => {
                // Only a bug gets here (the encoders do not panic on any
                // input); the batch is lost, and said.
                tracing::error!(groups, "the sinks failed to take a batch; dropped: {e}");
            }
        }
    }

    /// Makes the local sinks durable. An error means the last batches may
    /// not be (a Kafka consumer then must not commit them).
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(json) = self.json.clone() {
            // A file write: off the runtime.
            tokio::task::spawn_blocking(move || {
                json.lock().unwrap_or_else(|p| p.into_inner()).flush()
            })
            .await
            .map_err(|e| anyhow::anyhow!("flushing JSON lines: {e}"))??;
        }
        self.latest.flush().await
    }

    /// Resources that expired: their series leave the registry and their
    /// Pushgateway groups are deleted.
    /// The registry's part runs on tokio's blocking pool when there is a
    /// runtime (it waits for the registry's lock, which a large accept or
    /// scrape may hold).
    pub fn resources_expired(&self, ids: &[String]) {
        if let Some(registry) = &self.prometheus {
            let registry = registry.clone();
            let ids = ids.to_vec();
            let forget = move || {
                for id in &ids {
                    registry.forget_resource(id);
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(forget)),
                Err(_) => forget(),
            }
        }
        for expiries in &self.pushgateways {
            expiries.add(ids);
        }
    }

    /// Closes every networked sink's buffer (which starts each one's
    /// shutdown grace, [`delivery::SHUTDOWN_GRACE`] by default), flushes the
    /// local sinks, then waits for the networked sinks: each delivers what
    /// it can within its grace and counts the rest as dropped (`shutdown`),
    /// so this returns within the longest grace (plus one encoding step)
    /// however stuck a server is. A task still running a second past its
    /// grace (a bug) is aborted and its groups counted the same way.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        for sink in &self.networked {
            sink.buffer.close();
        }
        let flushed = self.flush().await;
        for sink in self.networked {
            let guard = started + sink.grace + Duration::from_secs(1);
            let mut task = sink.task;
            match tokio::time::timeout_at(guard, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(sink = %sink.name, kind = sink.kind, "sink task failed: {e}");
                }
                Err(_) => {
                    task.abort();
                    let lost = sink.buffer.discard_all(buffer::reason::SHUTDOWN);
                    tracing::error!(sink = %sink.name, kind = sink.kind, groups = lost, "sink still busy past its shutdown grace; stopped, {lost} buffered groups dropped");
                }
            }
        }
        flushed
    }
}

/// Drains the bus into the sinks until every sender is gone.
pub async fn run_sinks(
    mut bus: tokio::sync::mpsc::Receiver<Batch>,
    mut sinks: SinkSet,
    mut expired: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            batch = bus.recv() => {
                let Some(batch) = batch else { break };
                sinks.accept_async(batch).await;
            }
            Some(ids) = expired.recv() => sinks.resources_expired(&ids),
            _ = tick.tick() => {
                if let Err(e) = sinks.flush().await {
                    tracing::error!("{e:#}");
                }
            }
        }
    }
    sinks.close().await
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_shutdown_grace_has_a_default_and_a_ceiling() {
        let parse = |text: &str| {
            let section: DeliverySection = toml::from_str(text).expect("toml");
            section.resolve("outputs.influxdb[0]", 10, &|_, message| {
                LocatedError::new(std::path::Path::new("site.toml"), 1, message)
            })
        };
        let default = parse("").expect("default");
        assert_eq!(default.delivery.shutdown_grace, delivery::SHUTDOWN_GRACE);
        let set = parse("shutdown_grace = \"30s\"").expect("30s");
        assert_eq!(set.delivery.shutdown_grace, Duration::from_secs(30));
        let err = parse("shutdown_grace = \"1h\"").expect_err("too long");
        assert!(
            err.message
                .contains("outputs.influxdb[0].shutdown_grace must be"),
            "{err}"
        );
    }
}
