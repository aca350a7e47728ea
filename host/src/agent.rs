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

#[cfg(feature = "kafka")]
use crate::bus::kafka::{self, KafkaPublisher, KafkaSettings, Topic};
use crate::health::{Health, Inventory};
use crate::pipeline::stats::RunStats;
use crate::pipeline::{Executor, epoch_seconds, record_runs};
use crate::plugin::PluginRegistry;
use crate::plugin::watcher::{self, WatchSettings};
use crate::sandbox::{Sandbox, SandboxSettings};
use crate::scheduler::{LocalClaims, Scheduler, SchedulerSettings};
use crate::sinks::prometheus::SeriesRegistry;
use crate::sinks::{SinkProbes, SinkSet, run_sinks};
use crate::site::SiteConfig;
use crate::store::{HostStatus, PluginStatus, Storage, logged};

/// How often the status the CLI reads is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Shutdown waits for runs in flight up to the site's deadline cap plus
/// this (the async timeout a run gets past its deadline is 200 ms).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

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
    /// Both (and, with `[endpoints]`, an endpoint worker too).
    #[default]
    All,
    /// Take `<site>-endpoint-events` into the endpoint history (a member
    /// of the consumer group `<site>-endpoint-workers`); needs the Kafka
    /// bus and `[endpoints] enabled`.
    EndpointWorker,
}

impl Role {
    /// As `--role` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Consumer => "consumer",
            Role::All => "all",
            Role::EndpointWorker => "endpoint-worker",
        }
    }
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
#[cfg(not(feature = "kafka"))]
async fn consume_bus(
    _site: Arc<SiteConfig>,
    _outputs: Outputs,
    _stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    Err(crate::backends::not_built(
        "kafka",
        "the consumer role (bus.backend = \"kafka\")",
    ))
}

/// Consumes the site's processed-metrics topic into this process's sinks
/// until `stop` turns true.
#[cfg(feature = "kafka")]
async fn consume_bus(
    site: Arc<SiteConfig>,
    outputs: Outputs,
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
    let sinks = Arc::new(tokio::sync::Mutex::new(outputs.open()?));
    let handler_sinks = sinks.clone();
    let group = format!("{}-sinks", site.name);
    let report = kafka::consume_batches(
        &kafka,
        &group,
        Topic::Processed,
        1000,
        move |batch| {
            let sinks = handler_sinks.clone();
            async move {
                let mut sinks = sinks.lock().await;
                sinks.accept_async(batch).await;
                // Offsets are committed only once this returns Ok.
                sinks.flush().await
            }
        },
        stop,
    )
    .await?;
    tracing::info!(?report, "consumer stopped");
    match Arc::try_unwrap(sinks) {
        Ok(sinks) => sinks.into_inner().close().await,
        Err(_) => Ok(()),
    }
}

/// What a process needs to open its sinks, and the `/metrics` endpoint
/// that shows them.
#[derive(Clone)]
struct Outputs {
    site: Arc<SiteConfig>,
    store: Arc<dyn Storage>,
    registry: Option<Arc<SeriesRegistry>>,
    probes: SinkProbes,
}

impl Outputs {
    fn new(site: &Arc<SiteConfig>, store: &Arc<dyn Storage>) -> Outputs {
        Outputs {
            site: site.clone(),
            store: store.clone(),
            registry: site
                .outputs
                .prometheus
                .clone()
                .map(|settings| Arc::new(SeriesRegistry::new(settings))),
            probes: SinkProbes::default(),
        }
    }

    fn open(&self) -> anyhow::Result<SinkSet> {
        SinkSet::open(
            &self.site.outputs,
            Arc::new(crate::store::StorageLatest(self.store.clone())),
            self.registry.clone(),
            &self.probes,
        )
    }

    /// Serves `/metrics` when the site asks for it, and `/api/v1` beside
    /// it when `[api]` is enabled.
    async fn serve_metrics(
        &self,
        health: &Arc<Health>,
        api: Option<axum::Router>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(settings) = &self.site.outputs.prometheus else {
            return Ok(None);
        };
        let server = crate::sinks::prometheus::serve_with(
            settings.listen,
            health.clone(),
            self.registry.clone(),
            api,
            stop,
        )
        .await?;
        Ok(Some(server))
    }
}

/// Runs the host as `identity` until `shutdown` completes.
pub async fn run_as(
    site: Arc<SiteConfig>,
    settings: AgentSettings,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // From here on SIGHUP reloads the site config instead of ending vigil.
    let hangups = crate::reload::hangups();
    let store = crate::backends::open_storage(&site, false).await?;
    let started_at = epoch_seconds(SystemTime::now());
    let outputs = Outputs::new(&site, &store);
    let stats = Arc::new(RunStats::default());
    let health = Arc::new(Health::new(
        started_at,
        stats.clone(),
        outputs.probes.clone(),
    ));
    // The endpoint tracker, when the site enables it: every endpoint
    // source of this process writes to its sink.
    let endpoints = crate::endpoints::EndpointRuntime::start(&site, identity.role).await?;
    if let Some(runtime) = &endpoints {
        let tracker = Arc::downgrade(&runtime.tracker);
        health.set_endpoints(move || {
            tracker
                .upgrade()
                .map(|t| crate::endpoints::health(&t.stats()))
                .unwrap_or_default()
        });
    }
    let api = match &site.api {
        Some(settings) => Some(crate::api::router(
            settings.clone(),
            crate::endpoints::api_sink(endpoints.as_ref()),
            crate::endpoints::api_store(&site, endpoints.as_ref()).await?,
        )),
        None => None,
    };
    let (metrics_stop_tx, metrics_stop_rx) = watch::channel(false);
    let metrics_server = outputs.serve_metrics(&health, api, metrics_stop_rx).await?;
    if identity.role == Role::Consumer {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut consumer = tokio::spawn(consume_bus(site.clone(), outputs, stop_rx));
        let _hangups = crate::reload::spawn_unsupported(hangups);
        tracing::info!(site = %site.name, "vigil consumer running");
        let result = tokio::select! {
            _ = shutdown => {
                let _ = stop_tx.send(true);
                (&mut consumer).await
            }
            result = &mut consumer => result,
        };
        let _ = metrics_stop_tx.send(true);
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        return result.context("consumer task")?;
    }
    if identity.role == Role::EndpointWorker {
        let _hangups = crate::reload::spawn_unsupported(hangups);
        tracing::info!(site = %site.name, agent = %identity.agent_id, "vigil endpoint worker running");
        // Its status record (`vigil status`): no plugins, the tracker's
        // numbers in its health.
        let status = {
            let (site, identity, health, store) = (
                site.clone(),
                identity.clone(),
                health.clone(),
                store.clone(),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(STATUS_EVERY);
                loop {
                    tick.tick().await;
                    write_worker_status(&site, &identity, &health, &store, started_at).await;
                }
            })
        };
        shutdown.await;
        status.abort();
        write_worker_status(&site, &identity, &health, &store, started_at).await;
        if let Some(runtime) = endpoints {
            runtime.shutdown().await?;
        }
        let _ = metrics_stop_tx.send(true);
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        tracing::info!("vigil stopped");
        return Ok(());
    }
    if site.plugin_directories.is_empty() && endpoints.is_none() {
        anyhow::bail!(
            "the site config lists no plugin directories (plugins.directories): nothing to run"
        );
    }
    // Plugin key/value state survives restarts, and follows a job that
    // moves to another agent when the site shares state in Redis.
    let kv = crate::backends::open_kv(&site)?;
    let sandbox = Arc::new(Sandbox::with_kv(&SandboxSettings::from_site(&site), kv)?);
    {
        let budgets = sandbox.log_budgets().clone();
        health.set_log_drops(move || {
            budgets
                .dropped()
                .into_iter()
                .map(|(plugin, reason, lines)| crate::health::LogDrops {
                    plugin,
                    reason: reason.to_owned(),
                    lines,
                })
                .collect()
        });
    }
    let registry = Arc::new(PluginRegistry::new(
        sandbox.clone(),
        site.plugin_policy(),
        site.plugin_directories.clone(),
    ));
    {
        let registry = registry.clone();
        // Cached plugins load now; the rest compile in the background.
        tokio::task::spawn_blocking(move || registry.start_rescan()).await?;
    }
    let watcher = watcher::watch(registry.clone(), settings.watch)?;
    // SIGHUP: new plugin directories and rules apply at once (the watcher
    // moves with them); the rest is reported as needing a restart.
    let reloads = crate::reload::spawn(
        site.clone(),
        registry.clone(),
        settings.watch,
        watcher,
        hangups,
    );

    let (bus_tx, bus_rx) = mpsc::channel(site.bus_capacity);
    // Weak: the health probe must not keep the bus open at shutdown.
    let bus_probe = bus_tx.downgrade();
    health.add_queue("bus", move || {
        bus_probe
            .upgrade()
            .map_or(0, |bus| (bus.max_capacity() - bus.capacity()) as u64)
    });
    let (runs_tx, runs_rx) = mpsc::unbounded_channel();
    let (expired_tx, expired_rx) = mpsc::unbounded_channel();
    let (enrichments, transformer) = crate::backends::shared_state(&site, &store).await?;
    let coordinator = crate::backends::coordinator(&site, &identity.agent_id).await?;
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
        expired: expired_tx,
        resources: site.resources.clone(),
        failures: Arc::default(),
        // SNMP endpoint plugins' snapshots become events of the tracker's
        // sink; the previous snapshots and node ids live in the plugin
        // key/value backend, under a namespace no plugin can name.
        endpoints: endpoints.as_ref().map(|runtime| {
            Arc::new(crate::pipeline::endpoints::EndpointFeed::new(
                runtime.sink.clone(),
                sandbox.kv().clone(),
                crate::pipeline::endpoints::EndpointFeedSettings { fabric: None },
            ))
        }),
    });
    let scheduler = Scheduler::new(
        registry.clone(),
        store.clone(),
        Arc::new(LocalClaims::default()),
        coordinator.clone(),
        executor,
        SchedulerSettings {
            max_concurrent_runs: site.max_concurrent_runs as usize,
            max_runs_per_plugin: site.max_runs_per_plugin as usize,
            housekeeping: settings.housekeeping,
            shutdown_wait: site.limit_caps.deadline + SHUTDOWN_GRACE,
        },
        // The executor notifies it when discovery adds resources.
        resources_changed,
    );
    for (queue, depth) in [
        (
            "runs_in_flight",
            Scheduler::runs_in_flight as fn(&Scheduler) -> usize,
        ),
        ("scheduled_jobs", Scheduler::job_count),
    ] {
        // Weak too: the scheduler holds the executor and with it the bus.
        let scheduler = Arc::downgrade(&scheduler);
        health.add_queue(queue, move || {
            scheduler.upgrade().map_or(0, |s| depth(&s) as u64)
        });
    }
    // The bus's far end: this process's sinks, or Kafka (and, for the
    // `all` role, a consumer of it feeding this process's sinks).
    let (consumer_stop_tx, consumer_stop_rx) = watch::channel(false);
    let (sinks, consumer): (_, Option<tokio::task::JoinHandle<anyhow::Result<()>>>) =
        match &site.bus_backend {
            crate::site::BusBackend::Embedded => (
                tokio::spawn(run_sinks(bus_rx, outputs.open()?, expired_rx)),
                None,
            ),
            #[cfg(not(feature = "kafka"))]
            crate::site::BusBackend::Kafka { .. } => {
                drop(consumer_stop_rx);
                return Err(crate::backends::not_built(
                    "kafka",
                    "bus.backend = \"kafka\"",
                ));
            }
            #[cfg(feature = "kafka")]
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
                let consumer = (identity.role == Role::All).then(|| {
                    tokio::spawn(consume_bus(site.clone(), outputs.clone(), consumer_stop_rx))
                });
                (sinks, consumer)
            }
        };
    let recorder = tokio::spawn(record_runs(store.clone(), runs_rx));
    let (stop_tx, stop_rx) = watch::channel(false);
    let status = {
        let (site, registry, scheduler, stats, store, enrichments, health) = (
            site.clone(),
            registry.clone(),
            scheduler.clone(),
            stats.clone(),
            store.clone(),
            enrichments.clone(),
            health.clone(),
        );
        let identity = identity.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATUS_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                enrichments.sweep(epoch_seconds(SystemTime::now()));
                write_status(
                    &site, &identity, &registry, &scheduler, &stats, &health, &store, started_at,
                )
                .await;
            }
        })
    };
    tracing::info!(site = %site.name, agent = %identity.agent_id, role = ?identity.role, plugins = registry.plugins().len(), "vigil running");
    let scheduling = tokio::spawn(scheduler.clone().run(stop_rx));

    shutdown.await;
    reloads.abort();
    // Say what the stop waits for, now and every few seconds, so an
    // operator knows why vigil has not exited yet.
    let waiting = ShutdownProgress::start();
    waiting.stage(&format!(
        "runs in flight (each within its deadline; at most {:?})",
        site.limit_caps.deadline + SHUTDOWN_GRACE
    ));
    let _ = stop_tx.send(true);
    scheduling.await.context("scheduler task")?;
    if let Some(runtime) = endpoints {
        waiting.stage("the endpoint workers to store what is queued");
        runtime.shutdown().await?;
    }
    let _ = status.await;
    waiting.stage("the final status write");
    write_status(
        &site, &identity, &registry, &scheduler, &stats, &health, &store, started_at,
    )
    .await;
    waiting.stage("leaving the site's membership");
    coordinator.leave().await;
    // The scheduler held the executor, and with it the bus and run senders.
    drop(scheduler);
    waiting.stage("the sinks to deliver what they buffered");
    sinks.await.context("sink task")??;
    if let Some(consumer) = consumer {
        waiting.stage("the bus consumer");
        // Let the consumer pick up what was just published before stopping.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = consumer_stop_tx.send(true);
        consumer.await.context("consumer task")??;
    }
    waiting.stage("the run history to be written");
    recorder.await.context("run recorder task")?;
    let _ = metrics_stop_tx.send(true);
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    drop(waiting);
    tracing::info!("vigil stopped");
    Ok(())
}

/// What an orderly stop is waiting for: logged at each stage and every
/// [`SHUTDOWN_REMINDER`] while one lasts.
struct ShutdownProgress {
    stage: Arc<std::sync::Mutex<String>>,
    reminder: tokio::task::JoinHandle<()>,
}

/// How often a long stop says again what it waits for.
const SHUTDOWN_REMINDER: Duration = Duration::from_secs(5);

impl ShutdownProgress {
    fn start() -> ShutdownProgress {
        let stage = Arc::new(std::sync::Mutex::new(String::new()));
        let started = std::time::Instant::now();
        let reminder = {
            let stage = stage.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SHUTDOWN_REMINDER);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let waiting_for = stage.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    tracing::warn!(
                        elapsed_seconds = started.elapsed().as_secs(),
                        "still shutting down, waiting for {waiting_for}; a second Ctrl-C or SIGTERM exits at once"
                    );
                }
            })
        };
        ShutdownProgress { stage, reminder }
    }

    fn stage(&self, waiting_for: &str) {
        tracing::info!("shutting down: waiting for {waiting_for}");
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = waiting_for.to_owned();
    }
}

impl Drop for ShutdownProgress {
    fn drop(&mut self) {
        self.reminder.abort();
    }
}

/// The status record of a process that runs no plugins (`endpoint-worker`).
async fn write_worker_status(
    site: &SiteConfig,
    identity: &Identity,
    health: &Health,
    store: &Arc<dyn Storage>,
    started_at: f64,
) {
    let status = HostStatus {
        agent_id: identity.agent_id.clone(),
        role: identity.role.name().to_owned(),
        site: site.name.clone(),
        pid: std::process::id(),
        started_at,
        updated_at: epoch_seconds(SystemTime::now()),
        resources: 0,
        plugins: Vec::new(),
        broken: Vec::new(),
        health: serde_json::to_value(health.snapshot()).unwrap_or_default(),
    };
    logged("writing status", store.put_status(&status)).await;
}

#[allow(clippy::too_many_arguments)]
async fn write_status(
    site: &SiteConfig,
    identity: &Identity,
    registry: &PluginRegistry,
    scheduler: &Scheduler,
    stats: &RunStats,
    health: &Health,
    store: &Arc<dyn Storage>,
    started_at: f64,
) {
    let failures = registry.failures();
    health.set_inventory(Inventory {
        resources_by_discovery: scheduler.resources_by_discovery(),
        plugins_loaded: registry.plugins().len() as u64,
        plugins_broken: failures.len() as u64,
    });
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
    // Each agent writes its own status, keyed by its id; `updated_at` is
    // its heartbeat (`vigil status` marks it stale when it stops).
    let status = HostStatus {
        agent_id: identity.agent_id.clone(),
        role: identity.role.name().to_owned(),
        site: site.name.clone(),
        pid: std::process::id(),
        started_at,
        updated_at: epoch_seconds(SystemTime::now()),
        resources: scheduler.resource_count(),
        plugins,
        broken: failures
            .into_iter()
            .map(|(path, error)| (path.display().to_string(), error))
            .collect(),
        health: serde_json::to_value(health.snapshot()).unwrap_or_default(),
    };
    logged("writing status", store.put_status(&status)).await;
}
