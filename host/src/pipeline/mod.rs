//! The data path, as a pipeline:
//!
//! ```text
//! scheduler ──job──▶ executor (sandbox run) ─┬─ discovery  ─▶ resource store ─▶ scheduler replans
//!                                            ├─ enrichment ─▶ enrichment cache ─▶ later polls
//!                                            ├─ polling    ─▶ transform (rates) ─▶ bus ─▶ sinks
//!                                            │    + polling status ─┘   (see [`crate::sinks`])
//!                                            └─ endpoints  ─▶ snapshot differ ─▶ endpoint tracker
//!                                                             (see [`endpoints`])
//! ```
//!
//! Every run, whatever its outcome, is counted ([`stats`]) and recorded in
//! the run history.

pub use vigil_core::panoptes as encode;
pub use vigil_enrichment as enrichment_cache;
pub mod endpoints;
pub mod failures;
pub mod stats;
pub mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc};

use crate::model::{MetricsGroup, Resource};
use crate::plugin::PluginKind;
use crate::sandbox::{RunContext, RunInput, RunOutcome, RunOutput, Sandbox};
use crate::scheduler::{Job, JobKey, JobRunner};
use crate::store::{RunRecord, Storage, logged};
use crate::transform::RateTransformer;
use enrichment_cache::EnrichmentCache;
use stats::RunStats;

pub fn epoch_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Runs jobs in the sandbox and routes their output down the pipeline.
/// Cloning is cheap: it is a set of shared handles.
#[derive(Clone)]
pub struct Executor {
    pub sandbox: Arc<Sandbox>,
    /// Where discovered resources go.
    pub store: Arc<dyn Storage>,
    /// Filled by enrichment runs, read by polling runs.
    pub enrichments: Arc<EnrichmentCache>,
    pub transformer: Arc<RateTransformer>,
    /// The metrics bus to the sinks; each batch names its plugin.
    pub bus: mpsc::Sender<crate::bus::Batch>,
    /// Finished runs, for the run history.
    pub runs: mpsc::UnboundedSender<RunRecord>,
    pub stats: Arc<RunStats>,
    /// Woken when discovery adds resources, so the scheduler replans.
    pub resources_changed: Arc<Notify>,
    /// Expired resource ids, to the sinks (their series and Pushgateway
    /// groups go too).
    pub expired: mpsc::UnboundedSender<Vec<String>>,
    /// The site's rules for discovered resources (site, TTL ceiling).
    pub resources: crate::store::ResourceSettings,
    /// Which jobs are failing: failures are logged when they start,
    /// change and end, not at every run.
    pub failures: Arc<failures::FailureLog>,
    /// Where endpoints runs' address tables go: compared with the previous
    /// snapshots and sent to the endpoint tracker's sink as events. `None`:
    /// no tracker; the runs still happen and are recorded, their tables
    /// are dropped.
    pub endpoints: Option<Arc<endpoints::EndpointFeed>>,
}

impl Executor {
    async fn execute(&self, job: Job) {
        let manifest = job.plugin.manifest();
        let started = SystemTime::now();
        let now = epoch_seconds(started);
        let lateness_ms = started
            .duration_since(job.due)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1000.0;

        let (input, mut context) = match (manifest.kind, job.resource.clone()) {
            (PluginKind::Discovery, _) => (RunInput::Discover, RunContext::new(job.due, None)),
            (PluginKind::Enrichment, Some(r)) => {
                let context = RunContext::new(job.due, Some(r.id.clone()));
                (RunInput::Enrich(r), context)
            }
            (PluginKind::Polling, Some(r)) => {
                let context = RunContext::new(job.due, Some(r.id.clone()));
                (RunInput::Poll(r), context)
            }
            (PluginKind::Endpoints, Some(r)) => {
                let context = RunContext::new(job.due, Some(r.id.clone()));
                (RunInput::Collect(r), context)
            }
            (kind, _) => {
                tracing::error!(plugin = %manifest.name, %kind, "scheduler produced a job this kind cannot run");
                return;
            }
        };
        if let RunInput::Poll(resource) | RunInput::Collect(resource) = &input {
            context.enrichments = self
                .enrichments
                .get(&resource.id, &manifest.preload, now)
                .await;
        }

        let mut report = self.sandbox.run(&job.plugin.prepared, input, context).await;
        let finished = epoch_seconds(SystemTime::now());
        let mut label = report.outcome.label();
        let mut detail = String::new();
        // Fencing: an agent that lost the job's lease while running (paused,
        // cut off from the coordinator) must not publish; the new holder does.
        if report.outcome.is_ok() && !job.lease.confirm().await {
            label = "fenced";
            detail = format!(
                "lease (token {}) lost before the output was accepted; output dropped",
                job.lease.token()
            );
            report.outcome = RunOutcome::HostFailure(detail.clone());
        }
        // Every polling run says why its device has data or not.
        let status = match (&job.resource, manifest.kind) {
            (Some(resource), PluginKind::Polling) => status::status_groups(
                status::classify(&report.outcome, report.snmp.as_ref(), &report.missing),
                &manifest.name,
                &manifest.status,
                resource,
                manifest.schedule.interval().as_secs().max(1) as u32,
                crate::model::Datetime::from_system(job.due),
            ),
            _ => Vec::new(),
        };

        match report.outcome {
            RunOutcome::Ok(RunOutput::Resources(resources)) => {
                let policy = self.resources.policy(
                    manifest.resource_ttl,
                    manifest.limits.max_resources,
                    &manifest.sites,
                );
                detail = self
                    .store_resources(&manifest.name, resources, policy, now)
                    .await;
            }
            RunOutcome::Ok(RunOutput::Enrichments(groups)) => {
                if let Some(resource) = &job.resource {
                    let count = groups.len();
                    let summary = self
                        .enrichments
                        .put(
                            &manifest.name,
                            &resource.id,
                            groups,
                            now,
                            manifest.enrichment_ttl.map(|d| d.as_secs_f64()),
                        )
                        .await;
                    detail = summary.describe(count);
                    if summary.refused() > 0 || summary.evicted > 0 {
                        tracing::warn!(
                            plugin = %manifest.name,
                            resource = %resource.id,
                            conflicts = summary.conflicts,
                            evicted = summary.evicted,
                            "enrichment groups refused or entries evicted: {detail}"
                        );
                    }
                }
            }
            RunOutcome::Ok(RunOutput::Metrics(mut groups)) => {
                self.transformer
                    .apply_async(&manifest.name, &manifest.transforms, &mut groups)
                    .await;
                detail = format!("{} metrics groups", groups.len());
                if report.missing.any() {
                    // What the plugin expected and did not get: named in
                    // the run record, so no data vanishes silently.
                    detail = format!("{detail}; missing: {}", report.missing.summary());
                    tracing::debug!(
                        plugin = %manifest.name,
                        resource = job.resource.as_ref().map_or("", |r| r.id.as_str()),
                        "expected metrics missing: {}",
                        report.missing.summary()
                    );
                }
                groups.extend(status.iter().cloned());
                self.publish(&manifest.name, groups).await;
            }
            RunOutcome::Ok(RunOutput::Analysis(_)) => {}
            RunOutcome::Ok(RunOutput::Endpoints(tables)) => {
                let cut_short = report.snmp.as_ref().is_some_and(|s| s.walks_cut_short > 0);
                detail = match (&self.endpoints, &job.resource) {
                    (Some(feed), Some(resource)) => {
                        let summary = feed
                            .apply(
                                resource,
                                tables,
                                epoch_seconds(SystemTime::now()),
                                cut_short,
                            )
                            .await;
                        if let Some(error) = &summary.error {
                            tracing::warn!(
                                plugin = %manifest.name,
                                resource = %resource.id,
                                "endpoint events not sent: {error}"
                            );
                        }
                        summary.describe()
                    }
                    _ => format!(
                        "{} address tables (no endpoint tracker: dropped)",
                        tables.len()
                    ),
                };
                if report.missing.any() {
                    detail = format!("{detail}; missing: {}", report.missing.summary());
                }
            }
            ref failure if label == "fenced" => {
                tracing::warn!(plugin = %manifest.name, "{failure}");
            }
            ref failure => {
                detail = failure.to_string();
                if let Some(snmp) = &report.snmp {
                    detail = format!("{detail} ({})", snmp.describe(&detail));
                }
                let resource = job.resource.as_ref().map_or("", |r| r.id.as_str());
                match self.failures.observe(&job.key, label, now) {
                    failures::Transition::StillFailing { runs } => tracing::debug!(
                        plugin = %manifest.name,
                        resource,
                        outcome = label,
                        failed_runs = runs,
                        "run failed again: {detail}"
                    ),
                    _ => tracing::warn!(
                        plugin = %manifest.name,
                        resource,
                        outcome = label,
                        "run failed: {detail} (logged again when it recovers or fails differently)"
                    ),
                }
                if !status.is_empty() {
                    self.publish(&manifest.name, status).await;
                }
            }
        }
        if label == "ok" {
            let resource = job.resource.as_ref().map_or("", |r| r.id.as_str());
            if let failures::Transition::Recovered { runs, seconds } =
                self.failures.observe(&job.key, label, now)
            {
                tracing::info!(
                    plugin = %manifest.name,
                    resource,
                    failed_runs = runs,
                    "run succeeded again after {runs} failed runs over {seconds:.0} s"
                );
            }
        }
        if label == "ok"
            && let Some(snmp) = report.snmp.as_ref().filter(|s| s.last_error.is_some())
        {
            detail = format!("{detail} ({})", snmp.describe(&detail));
        }
        self.stats.record(&stats::RunObservation {
            plugin: &manifest.name,
            outcome: label,
            started_at: now,
            lateness_ms,
            duration: report.duration,
            fuel_consumed: report.fuel_consumed,
            peak_memory: report.peak_memory,
        });
        let record = RunRecord {
            plugin: manifest.name.clone(),
            resource_id: job.resource.map(|r| r.id.clone()),
            scheduled_at: epoch_seconds(job.due),
            started_at: now,
            finished_at: finished,
            outcome: label.to_owned(),
            detail,
        };
        // The recorder only goes away at shutdown, after the last run.
        let _ = self.runs.send(record);
    }

    /// Sends groups down the bus, as produced by `plugin` (the sinks
    /// budget series per plugin); waits when it is full (back-pressure,
    /// never loss).
    async fn publish(&self, plugin: &str, groups: Vec<MetricsGroup>) {
        if !groups.is_empty()
            && self
                .bus
                .send(crate::bus::Batch::from_plugin(plugin, groups))
                .await
                .is_err()
        {
            tracing::error!(plugin, "metrics bus closed; dropping a poll's output");
        }
    }

    /// Stores what a discovery run reported, under the host's rules (see
    /// [`crate::store`]); refusals go to the log and the run's detail.
    async fn store_resources(
        &self,
        plugin: &str,
        resources: Vec<Resource>,
        policy: crate::store::ResourcePolicy,
        now: f64,
    ) -> String {
        let count = resources.len();
        let stored = logged(
            "storing discovered resources",
            self.store
                .upsert_resources(plugin, &resources, &policy, now),
        )
        .await;
        let Some(summary) = stored else {
            return "storing resources failed (see the log)".to_owned();
        };
        if summary.added > 0 {
            tracing::info!(
                plugin,
                added = summary.added,
                refreshed = summary.refreshed,
                "resources discovered"
            );
            self.resources_changed.notify_one();
        }
        let detail = summary.describe(count);
        if summary.refused() > 0 {
            for refusal in &summary.refusals {
                if let crate::store::Refusal::Owned { id, owner } = refusal {
                    tracing::warn!(resource = %id, owner = %owner, claimant = plugin, "resource claimed by another discovery plugin: refused");
                }
            }
            tracing::warn!(
                plugin,
                conflicts = summary.conflicts,
                wrong_site = summary.wrong_site,
                over_budget = summary.over_budget,
                duplicates = summary.duplicates,
                "discovered resources refused: {detail}"
            );
        }
        detail
    }
}

impl JobRunner for Executor {
    fn run(&self, job: Job) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        // The future must own what it uses; the executor is shared.
        let this = self.clone();
        Box::pin(async move { this.execute(job).await })
    }

    fn resources_expired(&self, ids: &[String]) {
        self.failures.forget_resources(ids);
        let forgotten: usize = ids
            .iter()
            .map(|id| self.transformer.forget_resource(id))
            .sum();
        tracing::debug!(
            resources = ids.len(),
            series = forgotten,
            "dropped rate state of expired resources"
        );
        // The sinks go away only at shutdown.
        let _ = self.expired.send(ids.to_vec());
    }

    fn skipped(&self, job: &JobKey, reason: &'static str) {
        self.stats.skipped(&job.plugin);
        tracing::debug!(plugin = %job.plugin, resource = job.resource.as_deref().unwrap_or(""), reason, "run skipped");
    }
}

/// Writes run records to the store in batches (every second, and at the end).
pub async fn record_runs(store: Arc<dyn Storage>, mut runs: mpsc::UnboundedReceiver<RunRecord>) {
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            record = runs.recv() => match record {
                Some(record) => batch.push(record),
                None => break,
            },
            _ = tick.tick() => flush_runs(&store, &mut batch).await,
        }
    }
    flush_runs(&store, &mut batch).await;
}

async fn flush_runs(store: &Arc<dyn Storage>, batch: &mut Vec<RunRecord>) {
    if batch.is_empty() {
        return;
    }
    let records = std::mem::take(batch);
    logged("recording run history", store.record_runs(&records)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Datetime, Metric, MetricType, MetricValue};
    use crate::plugin::manifest::RateTransform;
    use crate::sandbox::SandboxSettings;
    use crate::site::SiteConfig;
    use crate::store::sqlite::SqliteStorage;

    #[test]
    fn expired_resources_lose_their_rate_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = SiteConfig {
            cache_dir: dir.path().join("cache"),
            ..SiteConfig::embedded()
        };
        let sandbox = Arc::new(Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox"));
        let store: Arc<dyn Storage> =
            Arc::new(SqliteStorage::open(&dir.path().join("vigil.db")).expect("store"));
        let (bus, _bus_rx) = mpsc::channel(1);
        let (runs, _runs_rx) = mpsc::unbounded_channel();
        let transformer = Arc::new(RateTransformer::new(100));
        let executor = Executor {
            sandbox,
            store,
            enrichments: Arc::new(EnrichmentCache::default()),
            transformer: transformer.clone(),
            bus,
            runs,
            stats: Arc::new(RunStats::default()),
            resources_changed: Arc::new(Notify::new()),
            expired: mpsc::unbounded_channel().0,
            resources: crate::store::ResourceSettings::new("local"),
            failures: Arc::default(),
            endpoints: None,
        };
        let transforms = vec![RateTransform {
            name: "r".into(),
            group_type: "g".into(),
            metrics: vec!["c".into()],
        }];
        for id in ["sw1", "sw2"] {
            let at = Datetime {
                seconds: 100,
                nanoseconds: 0,
            };
            let mut groups = vec![MetricsGroup {
                group_type: "g".into(),
                interval_seconds: 10,
                creation_timestamp: at,
                schema_version: "0.2".into(),
                resource: Resource::named(id, "127.0.0.1").into(),
                dimensions: Vec::new(),
                metrics: vec![Metric {
                    name: "c".into(),
                    value: MetricValue::Unsigned(1),
                    type_: MetricType::Counter,
                    creation_timestamp: at,
                }],
            }];
            transformer.apply("p", &transforms, &mut groups);
        }
        assert_eq!(transformer.series(), 2);
        executor.resources_expired(&["sw1".to_owned()]);
        assert_eq!(transformer.series(), 1);
    }
}
