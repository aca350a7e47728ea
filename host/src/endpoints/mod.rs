//! The endpoint tracker in a running host (issue #14): the `[endpoints]`
//! section of the site config, the history store it writes to, and the
//! [`Tracker`] that every endpoint source of this process (APIC fabrics,
//! the SNMP endpoint plugins, pushed events over HTTP and Kafka) writes to.
//!
//! The rules, the dispatch and the numbers live in `vigil-endpoints`
//! ([`vigil_endpoints::tracker`]); this module only assembles them from the
//! site config. History goes where the site's storage goes: the embedded
//! database by default (`vigil_store::endpoints::SqliteHistory`, tables
//! `ept_history` and `ept_endpoint` next to the host's other tables), or
//! MongoDB when `storage.backend = "mongodb"`.
//!
//! ```toml
//! [endpoints]
//! enabled = true                     # off by default
//! workers = 2                        # 1..=64, default: the CPUs
//! queue_capacity = 4096              # per worker, 1..=1048576
//! max_per_node_endpoint_events = 64  # EPT's caps (8..=1024)
//! max_endpoint_events = 64           # (8..=8192)
//! max_records_per_worker = 1000000 # write-behind cache per worker
//! ```

#[cfg(feature = "kafka")]
pub mod kafka;

use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use vigil_core::LocatedError;
use vigil_endpoints::dispatch::{DispatchConfig, MAX_QUEUE_CAPACITY, MAX_WORKERS};
use vigil_endpoints::tracker::{Tracker, TrackerConfig};
use vigil_endpoints::{HistoryStore, Settings};

use crate::site::{SiteConfig, StorageBackend};

/// Default per-worker queue: 2 workers × 4,096 EPT-shaped events is about
/// 2 MB, and about 20 ms of work at the measured history rate.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Records a worker holds in memory by default: an EPT-shaped record takes
/// about 260 bytes (its strings shared, `vigil_endpoints::text`), so
/// 1,000,000 is about 0.3 GB per worker when full; an EPT-scale fabric
/// (4.18 million records, 2 workers) builds in 41 s with it, re-reading
/// what it evicts. More (up to 2^30) holds larger fabrics whole, at that
/// cost per record; less bounds a small machine.
pub const DEFAULT_RECORDS_PER_WORKER: usize = 1_000_000;

/// `[endpoints]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsSection {
    #[serde(default)]
    enabled: bool,
    workers: Option<Spanned<usize>>,
    queue_capacity: Option<Spanned<usize>>,
    max_per_node_endpoint_events: Option<Spanned<usize>>,
    max_endpoint_events: Option<Spanned<usize>>,
    max_records_per_worker: Option<Spanned<usize>>,
    /// ACI fabrics (`[[endpoints.fabrics]]`), see `vigil_apic::config`.
    #[serde(default)]
    fabrics: Vec<Spanned<vigil_apic::RawApicConfig>>,
}

/// The endpoint tracker's settings.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub enabled: bool,
    pub dispatch: DispatchConfig,
    pub settings: Settings,
    /// Each worker's write-behind cache.
    pub write_behind: vigil_endpoints::write_behind::WriteBehindConfig,
    /// The ACI fabrics this site subscribes to.
    pub fabrics: Vec<vigil_apic::ApicConfig>,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        EndpointSettings {
            enabled: false,
            dispatch: DispatchConfig {
                queue_capacity: DEFAULT_QUEUE_CAPACITY,
                ..DispatchConfig::default()
            },
            settings: Settings::default(),
            write_behind: vigil_endpoints::write_behind::WriteBehindConfig {
                max_records: DEFAULT_RECORDS_PER_WORKER,
                ..Default::default()
            },
            fabrics: Vec::new(),
        }
    }
}

impl EndpointsSection {
    /// `base`: the site file's directory (relative `ca_file` and
    /// `record_to` paths are read from there).
    pub fn resolve(
        &self,
        base: &std::path::Path,
        at: vigil_core::At<'_>,
    ) -> Result<EndpointSettings, LocatedError> {
        let mut out = EndpointSettings {
            enabled: self.enabled,
            ..EndpointSettings::default()
        };
        let bounded = |key: &str, value: &Option<Spanned<usize>>, max: usize| match value {
            None => Ok(None),
            Some(v) if (1..=max).contains(v.get_ref()) => Ok(Some(*v.get_ref())),
            Some(v) => Err(at(
                v.span(),
                format!("endpoints.{key} must be 1 to {max}, found {}", v.get_ref()),
            )),
        };
        if let Some(workers) = bounded("workers", &self.workers, MAX_WORKERS)? {
            out.dispatch.workers = workers;
        }
        if let Some(capacity) = bounded("queue_capacity", &self.queue_capacity, MAX_QUEUE_CAPACITY)?
        {
            out.dispatch.queue_capacity = capacity;
        }
        if let Some(records) = bounded(
            "max_records_per_worker",
            &self.max_records_per_worker,
            vigil_endpoints::write_behind::MAX_RECORDS,
        )? {
            out.write_behind.max_records = records;
        }
        let per_node = self
            .max_per_node_endpoint_events
            .as_ref()
            .map_or(out.settings.max_per_node_endpoint_events(), |v| {
                *v.get_ref()
            });
        let per_endpoint = self
            .max_endpoint_events
            .as_ref()
            .map_or(out.settings.max_endpoint_events(), |v| *v.get_ref());
        out.settings = Settings::new(per_node, per_endpoint).map_err(|e| {
            let span = match e.setting {
                "max_per_node_endpoint_events" => self.max_per_node_endpoint_events.as_ref(),
                _ => self.max_endpoint_events.as_ref(),
            }
            .map_or(0..0, Spanned::span);
            at(span, format!("endpoints.{e}"))
        })?;
        let mut names: Vec<&str> = Vec::new();
        for entry in &self.fabrics {
            let config = entry
                .get_ref()
                .validate(base)
                .map_err(|e| at(entry.span(), e.to_string()))?;
            if names.contains(&config.fabric.as_str()) {
                return Err(at(
                    entry.span(),
                    format!(
                        "endpoints.fabrics {:?}: `name`: is the name of an earlier fabric too",
                        config.fabric
                    ),
                ));
            }
            out.fabrics.push(config);
            names = out.fabrics.iter().map(|f| f.fabric.as_str()).collect();
        }
        if !out.fabrics.is_empty() && !out.enabled {
            return Err(at(
                self.fabrics.first().map_or(0..0, Spanned::span),
                "endpoints.fabrics needs endpoints.enabled = true".to_owned(),
            ));
        }
        Ok(out)
    }
}

/// The site's endpoint history: the embedded database, or MongoDB.
pub async fn open_history(
    site: &SiteConfig,
    read_only: bool,
) -> anyhow::Result<Arc<dyn HistoryStore>> {
    use anyhow::Context;
    Ok(match &site.storage_backend {
        StorageBackend::Embedded => {
            let path = &site.database;
            let store = if read_only {
                if !path.is_file() {
                    anyhow::bail!(
                        "no vigil database at {} (has `vigil run` run with this site config?)",
                        path.display()
                    );
                }
                vigil_store::endpoints::SqliteHistory::open_read_only(path)
            } else {
                vigil_store::endpoints::SqliteHistory::open(path)
            };
            Arc::new(store.with_context(|| format!("opening {}", path.display()))?)
        }
        #[cfg(feature = "mongodb")]
        StorageBackend::MongoDb { url, database } => {
            Arc::new(vigil_mongo::MongoStorage::open(url, database).await?)
        }
        #[cfg(not(feature = "mongodb"))]
        StorageBackend::MongoDb { .. } => {
            return Err(crate::backends::not_built(
                "mongodb",
                "storage.backend = \"mongodb\"",
            ));
        }
    })
}

/// The endpoint tracker of a running host (when `[endpoints] enabled`):
/// the tracker, the sink this process's sources write to, and with the
/// Kafka bus the consumer that feeds the tracker from
/// `<site>-endpoint-events`.
///
/// | role | bus | sources write to | tracker fed by |
/// |---|---|---|---|
/// | `all`, `agent` | embedded | the tracker | its sources |
/// | `all` | kafka | the topic | the topic (group `<site>-endpoint-workers`) |
/// | `agent` | kafka | the topic | nothing (its numbers only) |
/// | `endpoint-worker` | kafka | - | the topic |
pub struct EndpointRuntime {
    pub tracker: Arc<Tracker>,
    /// The history store the tracker writes (what the API reads).
    pub store: Arc<dyn HistoryStore>,
    /// Where this process's endpoint sources write.
    pub sink: Arc<dyn vigil_endpoints::EventSink>,
    consumer: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// One APIC subscriber per fabric (roles `all` and `agent`).
    subscribers: Vec<(String, tokio::task::JoinHandle<()>)>,
    subscribers_stop: tokio::sync::watch::Sender<bool>,
    #[cfg(feature = "kafka")]
    producer: Option<Arc<kafka::KafkaEventSink>>,
}

impl EndpointRuntime {
    /// Starts what `role` runs of the tracker; `None` when the site does
    /// not enable it.
    pub async fn start(
        site: &SiteConfig,
        role: crate::agent::Role,
    ) -> anyhow::Result<Option<EndpointRuntime>> {
        use crate::agent::Role;
        if role == Role::Consumer {
            return Ok(None);
        }
        if !site.endpoints.enabled {
            if role == Role::EndpointWorker {
                anyhow::bail!(
                    "the endpoint-worker role needs [endpoints] enabled = true in the site config"
                );
            }
            return Ok(None);
        }
        let store = open_history(site, false).await?;
        let kafka_bus = matches!(site.bus_backend, crate::site::BusBackend::Kafka { .. });
        let tracker = Tracker::start(
            TrackerConfig {
                dispatch: site.endpoints.dispatch,
                settings: site.endpoints.settings,
                write_behind: site.endpoints.write_behind,
                // Other members of the consumer group write the same store.
                shared_store: kafka_bus,
            },
            store.clone(),
        )?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        if role == Role::EndpointWorker && !kafka_bus {
            anyhow::bail!(
                "the endpoint-worker role consumes <site>-endpoint-events: it needs bus.backend = \"kafka\""
            );
        }
        let mut runtime = EndpointRuntime {
            store,
            sink: tracker.clone(),
            tracker: tracker.clone(),
            consumer: None,
            stop,
            subscribers: Vec::new(),
            subscribers_stop: tokio::sync::watch::channel(false).0,
            #[cfg(feature = "kafka")]
            producer: None,
        };
        if kafka_bus {
            #[cfg(not(feature = "kafka"))]
            {
                drop(stop_rx);
                return Err(crate::backends::not_built(
                    "kafka",
                    "endpoint events over bus.backend = \"kafka\"",
                ));
            }
            #[cfg(feature = "kafka")]
            {
                let settings = kafka::settings(site)?;
                if let Err(e) = vigil_kafka::ensure_topics(&settings).await {
                    tracing::warn!("{e:#} (going on; the topic may appear later)");
                }
                let models = kafka::FabricModels::new(crate::backends::open_kv(site)?);
                if matches!(role, Role::All | Role::Agent) {
                    let producer = Arc::new(kafka::KafkaEventSink::new(
                        &settings,
                        models.clone(),
                        Some(tracker.clone()),
                    )?);
                    runtime.sink = producer.clone();
                    runtime.producer = Some(producer);
                }
                if matches!(role, Role::All | Role::EndpointWorker) {
                    let tracker = tracker.clone();
                    runtime.consumer = Some(tokio::spawn(async move {
                        let report =
                            kafka::consume_into(&settings, tracker, models, stop_rx).await?;
                        tracing::info!(?report, "endpoint event consumer stopped");
                        Ok(())
                    }));
                }
            }
        }
        if matches!(role, Role::All | Role::Agent) {
            runtime.start_subscribers(site)?;
        }
        tracing::info!(
            role = role.name(),
            workers = site.endpoints.dispatch.workers,
            queue_capacity = site.endpoints.dispatch.queue_capacity,
            bus = if kafka_bus { "kafka" } else { "embedded" },
            "endpoint tracker running"
        );
        Ok(Some(runtime))
    }

    /// One subscriber per `[[endpoints.fabrics]]` entry, writing to this
    /// process's sink.
    #[cfg(feature = "apic")]
    fn start_subscribers(&mut self, site: &SiteConfig) -> anyhow::Result<()> {
        for config in &site.endpoints.fabrics {
            let fabric = config.fabric.clone();
            let subscriber = vigil_apic::Subscriber::new(config.clone(), self.sink.clone());
            let stop = self.subscribers_stop.subscribe();
            let name = fabric.clone();
            let task = tokio::spawn(async move {
                match subscriber.run(stop).await {
                    Ok(()) => tracing::info!(fabric = %name, "APIC subscriber stopped"),
                    Err(e) => tracing::error!(fabric = %name, "APIC subscriber ended: {e}"),
                }
            });
            tracing::info!(fabric = %fabric, "APIC subscriber started");
            self.subscribers.push((fabric, task));
        }
        Ok(())
    }

    #[cfg(not(feature = "apic"))]
    fn start_subscribers(&mut self, site: &SiteConfig) -> anyhow::Result<()> {
        if site.endpoints.fabrics.is_empty() {
            return Ok(());
        }
        Err(crate::backends::not_built("apic", "[[endpoints.fabrics]]"))
    }

    /// Stops the subscribers and the consumer (what it took but did not
    /// commit is left to the group), delivers what this process produced,
    /// and lets the workers store what is queued.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        use anyhow::Context;
        let _ = self.subscribers_stop.send(true);
        for (fabric, task) in self.subscribers {
            if task.await.is_err() {
                tracing::warn!(fabric = %fabric, "the APIC subscriber task failed");
            }
        }
        #[cfg(feature = "kafka")]
        if let Some(producer) = &self.producer
            && !producer.flush(std::time::Duration::from_secs(10)).await
        {
            tracing::warn!("endpoint events not yet acknowledged by the broker at shutdown");
        }
        let _ = self.stop.send(true);
        if let Some(consumer) = self.consumer {
            consumer.await.context("endpoint event consumer")??;
        }
        self.tracker.shutdown().await.context("endpoint tracker")?;
        Ok(())
    }
}

/// Where `POST /api/v1/endpoints/events` writes: this process's endpoint
/// sink, or, without a tracker here, a sink that refuses (the API answers
/// that the tracker is not running).
pub fn api_sink(runtime: Option<&EndpointRuntime>) -> Arc<dyn vigil_endpoints::EventSink> {
    match runtime {
        Some(runtime) => runtime.sink.clone(),
        None => Arc::new(NotTracking),
    }
}

/// What the API reads: the tracker's store, or the site's history opened
/// for reading.
pub async fn api_store(
    site: &SiteConfig,
    runtime: Option<&EndpointRuntime>,
) -> anyhow::Result<Arc<dyn HistoryStore>> {
    match runtime {
        Some(runtime) => Ok(runtime.store.clone()),
        None => open_history(site, false).await,
    }
}

/// The sink of a process without a tracker.
struct NotTracking;

#[async_trait::async_trait]
impl vigil_endpoints::EventSink for NotTracking {
    async fn fabric(
        &self,
        _: Arc<vigil_endpoints::Fabric>,
    ) -> Result<(), vigil_endpoints::SinkClosed> {
        Err(vigil_endpoints::SinkClosed)
    }

    async fn event(
        &self,
        _: vigil_endpoints::Source,
        _: vigil_endpoints::model::EpmEvent,
    ) -> Result<(), vigil_endpoints::SinkClosed> {
        Err(vigil_endpoints::SinkClosed)
    }

    fn rejected(&self, _: vigil_endpoints::Source, _: &'static str, _: &str) {}

    fn subscriber_state(&self, _: &str, _: vigil_endpoints::SubscriberState) {}
}

/// The tracker's numbers as `/metrics` and `vigil status` show them.
pub fn health(stats: &vigil_endpoints::tracker::TrackerStats) -> crate::health::EndpointHealth {
    use crate::health::{EndpointHealth, EndpointRejections, EndpointWorker};
    EndpointHealth {
        received: stats
            .received
            .iter()
            .map(|(source, n)| (source.as_str().to_owned(), *n))
            .collect(),
        rejected: stats
            .rejected
            .iter()
            .map(|r| EndpointRejections {
                source: r.source.as_str().to_owned(),
                reason: r.reason.to_owned(),
                count: r.count,
                sample: r.sample.clone(),
            })
            .collect(),
        workers: stats
            .workers
            .iter()
            .map(|w| EndpointWorker {
                queue_depth: w.queue_depth,
                handled: w.handled,
                store_errors: w.store_errors,
                lag_seconds: w.lag_seconds,
                max_lag_seconds: w.max_lag_seconds,
            })
            .collect(),
        subscribers: stats
            .subscribers
            .iter()
            .map(|(fabric, state)| (fabric.clone(), state.as_str().to_owned()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<EndpointSettings, LocatedError> {
        let section: EndpointsSection = toml::from_str(text)
            .map_err(|e| LocatedError::new(Path::new("site.toml"), 0, e.message().to_owned()))?;
        let at = |span: std::ops::Range<usize>, message: String| {
            let line = text
                .get(..span.start)
                .map_or(0, |p| p.matches('\n').count() + 1);
            LocatedError::new(Path::new("site.toml"), line, message)
        };
        section.resolve(Path::new("."), &at)
    }

    #[test]
    fn defaults_are_bounded_and_errors_are_located() {
        let s = parse("").expect("empty");
        assert!(!s.enabled);
        assert_eq!(s.dispatch.queue_capacity, DEFAULT_QUEUE_CAPACITY);
        let s = parse("enabled = true\nworkers = 3\nmax_endpoint_events = 128\n").expect("ok");
        assert!(s.enabled);
        assert_eq!(s.dispatch.workers, 3);
        assert_eq!(s.settings.max_endpoint_events(), 128);
        let e = parse("enabled = true\nworkers = 0\n").expect_err("0 workers");
        assert_eq!(
            e.to_string(),
            "site.toml:2: endpoints.workers must be 1 to 64, found 0"
        );
        let e = parse("\n\nmax_per_node_endpoint_events = 4\n").expect_err("below EPT's range");
        assert!(e.to_string().starts_with("site.toml:3: endpoints."), "{e}");
        assert!(
            e.to_string().contains("max_per_node_endpoint_events"),
            "{e}"
        );
        assert!(parse("queue = 1\n").is_err());
    }
}
