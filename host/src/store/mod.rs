//! Where vigil keeps what it knows: discovered resources (with their TTLs),
//! plugin run history, the latest value of every series, and the host's
//! status for the CLI.
//!
//! [`Storage`] is the seam for other backends; [`sqlite::SqliteStorage`] is
//! the embedded default. SQLite in WAL mode lets `vigil status`,
//! `vigil resources` and `vigil metrics` read a running host's state from
//! another process without any server.

pub mod kv;
pub mod mongo;
pub mod sqlite;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{MetricsGroup, Resource};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    /// The MongoDB backend failed; `url` has any password masked.
    #[error("storage: MongoDB at {url}: {message}")]
    Mongo { url: String, message: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A resource as the host keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    pub resource: Resource,
    /// The discovery plugin that last reported it.
    pub discovered_by: String,
    pub first_seen: f64,
    pub last_seen: f64,
    /// When it stops being polled unless rediscovered.
    pub expires_at: f64,
}

/// What a discovery run changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertSummary {
    pub added: usize,
    pub refreshed: usize,
}

/// One finished plugin run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub plugin: String,
    pub resource_id: Option<String>,
    /// When the run was due, started and finished (seconds since the epoch).
    pub scheduled_at: f64,
    pub started_at: f64,
    pub finished_at: f64,
    /// The outcome label (`ok`, `trap.deadline`...).
    pub outcome: String,
    pub detail: String,
}

/// The latest value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValue {
    pub resource_id: String,
    pub group_type: String,
    pub dimensions: Vec<(String, String)>,
    pub metric: String,
    /// The exact value as text (counters can exceed f64's precision).
    pub value: String,
    pub metric_type: String,
    pub at: f64,
}

/// What `vigil status` shows, written by the running host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub site: String,
    pub pid: u32,
    pub started_at: f64,
    pub updated_at: f64,
    pub resources: usize,
    pub plugins: Vec<PluginStatus>,
    /// Plugin files that failed to load, with their errors.
    pub broken: Vec<(String, String)>,
    /// The numbers `/metrics` shows about vigil itself.
    #[serde(default)]
    pub health: crate::health::HealthSnapshot,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginStatus {
    pub name: String,
    pub kind: String,
    pub schedule: String,
    pub runs: u64,
    pub outcomes: BTreeMap<String, u64>,
    /// Runs skipped because the previous run of the same (plugin, resource)
    /// was still going or ran too recently.
    pub skipped: u64,
    pub last_run_at: Option<f64>,
    /// Start lateness against the schedule, in milliseconds.
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
}

/// Runs a blocking storage call off the async runtime. Failures are logged
/// as `what` and yield `None`: a storage hiccup never stops the pipeline.
pub async fn off_runtime<T: Send + 'static>(
    store: &std::sync::Arc<dyn Storage>,
    what: &'static str,
    call: impl FnOnce(&dyn Storage) -> StoreResult<T> + Send + 'static,
) -> Option<T> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || call(store.as_ref())).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "{what}");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "{what}");
            None
        }
    }
}

/// The storage seam. Methods are blocking; async callers use
/// `spawn_blocking` for anything large.
pub trait Storage: Send + Sync + 'static {
    /// Records resources reported by discovery plugin `plugin`; each lives
    /// `ttl` seconds (its own `ttl_seconds` when non-zero, else
    /// `default_ttl`) from `now`.
    fn upsert_resources(
        &self,
        plugin: &str,
        resources: &[Resource],
        default_ttl: f64,
        now: f64,
    ) -> StoreResult<UpsertSummary>;
    /// Resources not expired at `now`.
    fn live_resources(&self, now: f64) -> StoreResult<Vec<StoredResource>>;
    /// Deletes resources expired at `now` (and their latest series);
    /// returns their ids.
    fn expire_resources(&self, now: f64) -> StoreResult<Vec<String>>;
    fn record_runs(&self, runs: &[RunRecord]) -> StoreResult<()>;
    /// Newest first.
    fn recent_runs(&self, plugin: Option<&str>, limit: usize) -> StoreResult<Vec<RunRecord>>;
    /// Takes the groups shared with the other sinks (no copy).
    fn store_latest(&self, groups: &[std::sync::Arc<MetricsGroup>]) -> StoreResult<()>;
    fn latest(&self, group_type: Option<&str>) -> StoreResult<Vec<SeriesValue>>;
    fn put_status(&self, status: &HostStatus) -> StoreResult<()>;
    fn status(&self) -> StoreResult<Option<HostStatus>>;
}
