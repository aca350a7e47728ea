//! Where history and endpoint records live, as a trait the worker logic is
//! written against ([`HistoryStore`]), an in-memory implementation
//! ([`MemoryStore`]), and the worker step that ties §4 and §5 together
//! ([`process_event`], EPT's `handle_endpoint_event` without rapid, W:487-561).
//! Embedded (SQLite) and MongoDB stores implement the same trait later.

use crate::fabric::Fabric;
use crate::history::{HistoryOutcome, update_endpoint_history};
use crate::local::{LocalResult, update_local};
use crate::model::{EndpointKey, EndpointRecord, EpmEvent, HistoryRecord, Settings};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store: {0}")]
    Backend(String),
}

/// Per-node history records and fabric-wide endpoint records.
///
/// Writes replace the whole record; a worker owns each endpoint key (see
/// [`crate::dispatch`]), so there are no concurrent writers of one key.
pub trait HistoryStore: Send + Sync {
    /// Every node's history record of the endpoint, by node id.
    fn histories(
        &self,
        key: &EndpointKey,
    ) -> impl Future<Output = Result<BTreeMap<u32, HistoryRecord>, StoreError>> + Send;

    /// Insert or replace one node's history record.
    fn put_history(
        &self,
        record: HistoryRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The endpoint record.
    fn endpoint(
        &self,
        key: &EndpointKey,
    ) -> impl Future<Output = Result<Option<EndpointRecord>, StoreError>> + Send;

    /// Insert or replace the endpoint record.
    fn put_endpoint(
        &self,
        record: EndpointRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An in-memory [`HistoryStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    histories: HashMap<EndpointKey, BTreeMap<u32, HistoryRecord>>,
    endpoints: HashMap<EndpointKey, EndpointRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave a record half-written (writes are
        // single inserts), so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Number of endpoint records.
    pub fn endpoint_count(&self) -> usize {
        self.lock().endpoints.len()
    }

    /// Number of per-node history records.
    pub fn history_count(&self) -> usize {
        self.lock().histories.values().map(BTreeMap::len).sum()
    }
}

impl HistoryStore for MemoryStore {
    async fn histories(
        &self,
        key: &EndpointKey,
    ) -> Result<BTreeMap<u32, HistoryRecord>, StoreError> {
        Ok(self.lock().histories.get(key).cloned().unwrap_or_default())
    }

    async fn put_history(&self, record: HistoryRecord) -> Result<(), StoreError> {
        let key = EndpointKey {
            fabric: record.fabric.clone(),
            vnid: record.vnid,
            addr: record.addr.clone(),
        };
        self.lock()
            .histories
            .entry(key)
            .or_default()
            .insert(record.node, record);
        Ok(())
    }

    async fn endpoint(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>, StoreError> {
        Ok(self.lock().endpoints.get(key).cloned())
    }

    async fn put_endpoint(&self, record: EndpointRecord) -> Result<(), StoreError> {
        self.lock().endpoints.insert(record.key(), record);
        Ok(())
    }
}

/// What one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOutcome {
    /// The per-node history step (§4).
    pub history: HistoryOutcome,
    /// The endpoint step (§5); `None` for a delete/modify of an unknown
    /// endpoint.
    pub local: Option<LocalResult>,
}

impl EventOutcome {
    /// Whether EPT would run analysis (W:552-561): the history asked for it
    /// and the endpoint step ran.
    pub fn analysis_required(&self) -> bool {
        self.history.analysis_required() && self.local.is_some()
    }

    /// Whether move analysis is due (W:552-557).
    pub fn analyze_move(&self) -> bool {
        self.analysis_required() && self.local.is_some_and(|l| l.analyze_move)
    }
}

/// Handle one endpoint event: update the node's history (§4), then the
/// endpoint (§5), writing back what changed. Like EPT, the endpoint step
/// runs whatever the history step decided.
pub async fn process_event<S: HistoryStore>(
    settings: &Settings,
    fabric: &Fabric,
    store: &S,
    ev: &EpmEvent,
) -> Result<EventOutcome, StoreError> {
    let key = ev.key();
    let mut histories = store.histories(&key).await?;
    let mut record = histories.remove(&ev.node).filter(|r| !r.events.is_empty());
    let history = update_endpoint_history(settings, fabric, ev, &mut record);
    if let Some(r) = record {
        if history.pushed() {
            store.put_history(r.clone()).await?;
        }
        histories.insert(ev.node, r);
    }
    let mut endpoint = store.endpoint(&key).await?;
    let before = endpoint.clone();
    let local = update_local(settings, fabric, ev, &histories, &mut endpoint);
    if endpoint != before
        && let Some(e) = endpoint
    {
        store.put_endpoint(e).await?;
    }
    Ok(EventOutcome { history, local })
}
