//! `vigil run`: puts the sandbox, the plugin registry and its watcher, the
//! store, the scheduler and the pipeline together, and runs them until
//! asked to stop.
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

use crate::pipeline::enrichment_cache::EnrichmentCache;
use crate::pipeline::sinks::{SinkStats, run_sinks};
use crate::pipeline::stats::RunStats;
use crate::pipeline::{Executor, epoch_seconds, record_runs};
use crate::plugin::PluginRegistry;
use crate::plugin::watcher::{self, WatchSettings};
use crate::sandbox::{Sandbox, SandboxSettings};
use crate::scheduler::{LocalClaims, Scheduler, SchedulerSettings};
use crate::site::SiteConfig;
use crate::store::sqlite::SqliteStorage;
use crate::store::{HostStatus, PluginStatus, Storage, off_runtime};
use crate::transform::RateTransformer;

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

/// Runs the host until `shutdown` completes.
pub async fn run(
    site: Arc<SiteConfig>,
    settings: AgentSettings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
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
    let store: Arc<dyn Storage> = Arc::new(
        SqliteStorage::open(&site.database)
            .with_context(|| format!("opening {}", site.database.display()))?,
    );
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
    let (runs_tx, runs_rx) = mpsc::unbounded_channel();
    let stats = Arc::new(RunStats::default());
    let sink_stats = Arc::new(SinkStats::default());
    let enrichments = Arc::new(EnrichmentCache::default());
    let resources_changed = Arc::new(tokio::sync::Notify::new());
    let executor = Arc::new(Executor {
        sandbox: sandbox.clone(),
        store: store.clone(),
        enrichments: enrichments.clone(),
        transformer: Arc::new(RateTransformer::default()),
        bus: bus_tx,
        runs: runs_tx,
        stats: stats.clone(),
        resources_changed: resources_changed.clone(),
    });
    let scheduler = Scheduler::new(
        registry.clone(),
        store.clone(),
        Arc::new(LocalClaims::default()),
        executor,
        SchedulerSettings {
            max_concurrent_runs: site.max_concurrent_runs as usize,
            max_runs_per_plugin: site.max_runs_per_plugin as usize,
            housekeeping: settings.housekeeping,
        },
        // The executor notifies it when discovery adds resources.
        resources_changed,
    );
    let sinks = tokio::spawn(run_sinks(
        bus_rx,
        site.json_lines.clone(),
        store.clone(),
        sink_stats,
    ));
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
    tracing::info!(site = %site.name, plugins = registry.plugins().len(), database = %site.database.display(), "vigil running");
    let scheduling = tokio::spawn(scheduler.clone().run(stop_rx));

    shutdown.await;
    tracing::info!("shutting down: finishing runs in flight");
    let _ = stop_tx.send(true);
    scheduling.await.context("scheduler task")?;
    let _ = status.await;
    write_status(&site, &registry, &scheduler, &stats, &store, started_at).await;
    // The scheduler held the executor, and with it the bus and run senders.
    drop(scheduler);
    sinks.await.context("sink task")??;
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
