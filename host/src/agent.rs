//! `vigil run`: puts the sandbox, the plugin registry and its watcher, the
//! store, the scheduler and the pipeline together, and runs them until
//! asked to stop.
//!
//! Roles ([`Role`]): an **agent** runs plugins; a **consumer** reads the
//! Kafka bus into this process's sinks (in a consumer group, committing
//! only what the sinks accepted); **all** (the default) is both. With the
//! embedded bus the agent feeds its own sinks directly.
//!
//! Shutdown is orderly: the scheduler stops starting runs and waits for the
//! ones in flight (each ends by its deadline); then the bus drains into the
//! sinks, the run history and the status are flushed, and only then does
//! `run` return. Nothing a run produced is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::bus::kafka::{self, KafkaPublisher, KafkaSettings, Topic};
use crate::pipeline::sinks::{SinkStats, Sinks, run_sinks};
use crate::pipeline::stats::RunStats;
use crate::pipeline::{Executor, epoch_seconds, record_runs};
use crate::plugin::PluginRegistry;
use crate::plugin::watcher::{self, WatchSettings};
use crate::sandbox::{Sandbox, SandboxSettings};
use crate::scheduler::{LocalClaims, Scheduler, SchedulerSettings};
use crate::site::SiteConfig;
use crate::store::{HostStatus, PluginStatus, Storage, off_runtime};

/// How often the status the CLI reads is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Tunables that tests shorten.
#[derive(Debug, Clone, Copy)]
pub struct AgentSettings {
    pub watch: WatchSettings,
    pub housekeeping: Duration,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            watch: WatchSettings::default(),
            housekeeping: Duration::from_secs(5),
        }
    }
}

/// What this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Run plugins and publish what they produce.
    Agent,
    /// Consume the Kafka bus into this process's sinks.
    Consumer,
    /// Both.
    #[default]
    All,
}

/// Who this process is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub role: Role,
    /// Unique among the agents of a site.
    pub agent_id: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            role: Role::All,
            agent_id: crate::backends::default_agent_id(),
        }
    }
}

/// Runs the host until `shutdown` completes.
pub async fn run(
    site: Arc<SiteConfig>,
    settings: AgentSettings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_as(site, settings, Identity::default(), shutdown).await
}

/// Consumes the site's processed-metrics topic into this process's sinks
/// until `stop` turns true.
async fn consume_bus(
    site: Arc<SiteConfig>,
    store: Arc<dyn Storage>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let crate::site::BusBackend::Kafka {
        brokers,
        partitions,
        buffer_messages,
    } = &site.bus_backend
    else {
        anyhow::bail!("the consumer role needs bus.backend = \"kafka\" in the site config");
    };
    let mut kafka = KafkaSettings::new(brokers.clone(), site.name.clone());
    kafka.partitions = *partitions;
    kafka.buffer_messages = *buffer_messages;
    let sinks = Arc::new(tokio::sync::Mutex::new(Sinks::open(
        site.json_lines.as_ref(),
        store,
        Arc::new(SinkStats::default()),
    )?));
    let group = format!("{}-sinks", site.name);
    let report = kafka::consume(
        &kafka,
        &group,
        Topic::Processed,
        1000,
        move |batch| {
            let sinks = sinks.clone();
            async move {
                let mut sinks = sinks.lock().await;
                sinks.accept(batch);
                // Offsets are committed only once this returns Ok.
                sinks.flush().await
            }
        },
        stop,
    )
    .await?;
    tracing::info!(?report, "consumer stopped");
    Ok(())
}

/// Runs the host as `identity` until `shutdown` completes.
pub async fn run_as(
    site: Arc<SiteConfig>,
    settings: AgentSettings,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = crate::backends::open_storage(&site, false)?;
    if identity.role == Role::Consumer {
        let (stop_tx, stop_rx) = watch::channel(false);
        let consumer = tokio::spawn(consume_bus(site.clone(), store, stop_rx));
        tracing::info!(site = %site.name, "vigil consumer running");
        tokio::select! {
            _ = shutdown => {}
            result = consumer => return result.context("consumer task")?,
        }
        let _ = stop_tx.send(true);
        return Ok(());
    }
    if site.plugin_directories.is_empty() {
        anyhow::bail!(
            "the site config lists no plugin directories (plugins.directories): nothing to run"
        );
    }
    let started_at = epoch_seconds(SystemTime::now());
    // Plugin key/value state lives in the same database, so it survives
    // restarts.
    let kv = crate::store::kv::SqliteKv::open(&site.database)
        .with_context(|| format!("opening {}", site.database.display()))?;
    let sandbox = Arc::new(Sandbox::with_kv(
        &SandboxSettings::from_site(&site),
        Arc::new(kv),
    )?);
    let registry = Arc::new(PluginRegistry::new(
        sandbox.clone(),
        site.clone(),
        site.plugin_directories.clone(),
    ));
    {
        let registry = registry.clone();
        tokio::task::spawn_blocking(move || registry.rescan()).await?;
    }
    let _watcher = watcher::watch(registry.clone(), settings.watch)?;

    let (bus_tx, bus_rx) = mpsc::channel(site.bus_capacity);
    let store_for_sinks = store.clone();
    let (runs_tx, runs_rx) = mpsc::unbounded_channel();
    let stats = Arc::new(RunStats::default());
    let sink_stats = Arc::new(SinkStats::default());
    let (enrichments, transformer) = crate::backends::shared_state(&site).await?;
    let (coordinator, redis_coordinator) =
        crate::backends::coordinator(&site, &identity.agent_id).await?;
    let resources_changed = Arc::new(tokio::sync::Notify::new());
    let executor = Arc::new(Executor {
        sandbox: sandbox.clone(),
        store: store.clone(),
        enrichments: enrichments.clone(),
        transformer,
        bus: bus_tx,
        runs: runs_tx,
        stats: stats.clone(),
        resources_changed: resources_changed.clone(),
    });
    let scheduler = Scheduler::new(
        registry.clone(),
        store.clone(),
        Arc::new(LocalClaims::default()),
        coordinator,
        executor,
        SchedulerSettings {
            max_concurrent_runs: site.max_concurrent_runs as usize,
            max_runs_per_plugin: site.max_runs_per_plugin as usize,
            housekeeping: settings.housekeeping,
        },
        // The executor notifies it when discovery adds resources.
        resources_changed,
    );
    // The bus's far end: this process's sinks, or Kafka (and, for the
    // `all` role, a consumer of it feeding this process's sinks).
    let (consumer_stop_tx, consumer_stop_rx) = watch::channel(false);
    let (sinks, consumer) = match &site.bus_backend {
        crate::site::BusBackend::Embedded => (
            tokio::spawn(run_sinks(
                bus_rx,
                site.json_lines.clone(),
                store_for_sinks,
                sink_stats,
            )),
            None,
        ),
        crate::site::BusBackend::Kafka {
            brokers,
            partitions,
            buffer_messages,
        } => {
            let mut kafka = KafkaSettings::new(brokers.clone(), site.name.clone());
            kafka.partitions = *partitions;
            kafka.buffer_messages = *buffer_messages;
            if let Err(e) = kafka::ensure_topics(&kafka).await {
                tracing::warn!("{e:#} (publishing anyway; the producer retries)");
            }
            let publisher = Arc::new(KafkaPublisher::new(&kafka)?);
            let sinks = tokio::spawn(async move {
                let stats = kafka::run_publisher(bus_rx, publisher, Topic::Processed).await;
                tracing::info!(?stats, "kafka publisher stopped");
                Ok(())
            });
            let consumer = (identity.role == Role::All)
                .then(|| tokio::spawn(consume_bus(site.clone(), store.clone(), consumer_stop_rx)));
            (sinks, consumer)
        }
    };
    let recorder = tokio::spawn(record_runs(store.clone(), runs_rx));
    let (stop_tx, stop_rx) = watch::channel(false);
    let status = {
        let (site, registry, scheduler, stats, store, enrichments) = (
            site.clone(),
            registry.clone(),
            scheduler.clone(),
            stats.clone(),
            store.clone(),
            enrichments.clone(),
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATUS_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                enrichments.sweep(epoch_seconds(SystemTime::now()));
                write_status(&site, &registry, &scheduler, &stats, &store, started_at).await;
            }
        })
    };
    tracing::info!(site = %site.name, agent = %identity.agent_id, role = ?identity.role, plugins = registry.plugins().len(), "vigil running");
    let scheduling = tokio::spawn(scheduler.clone().run(stop_rx));

    shutdown.await;
    tracing::info!("shutting down: finishing runs in flight");
    let _ = stop_tx.send(true);
    scheduling.await.context("scheduler task")?;
    let _ = status.await;
    write_status(&site, &registry, &scheduler, &stats, &store, started_at).await;
    if let Some(redis) = &redis_coordinator {
        redis.leave().await;
    }
    // The scheduler held the executor, and with it the bus and run senders.
    drop(scheduler);
    sinks.await.context("sink task")??;
    if let Some(consumer) = consumer {
        // Let the consumer pick up what was just published before stopping.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = consumer_stop_tx.send(true);
        consumer.await.context("consumer task")??;
    }
    recorder.await.context("run recorder task")?;
    tracing::info!("vigil stopped");
    Ok(())
}

async fn write_status(
    site: &SiteConfig,
    registry: &PluginRegistry,
    scheduler: &Scheduler,
    stats: &RunStats,
    store: &Arc<dyn Storage>,
    started_at: f64,
) {
    let plugins = registry
        .plugins()
        .iter()
        .map(|plugin| {
            let manifest = plugin.manifest();
            let mut status = PluginStatus {
                name: manifest.name.clone(),
                kind: manifest.kind.name().to_owned(),
                schedule: manifest.schedule.to_string(),
                ..PluginStatus::default()
            };
            stats.fill(&mut status);
            status
        })
        .collect();
    let status = HostStatus {
        site: site.name.clone(),
        pid: std::process::id(),
        started_at,
        updated_at: epoch_seconds(SystemTime::now()),
        resources: scheduler.resource_count(),
        plugins,
        broken: registry
            .failures()
            .into_iter()
            .map(|(path, error)| (path.display().to_string(), error))
            .collect(),
    };
    off_runtime(store, "writing status", move |store| {
        store.put_status(&status)
    })
    .await;
}
