//! Where history and endpoint records live, as a trait the worker logic is
//! written against ([`HistoryStore`]), an in-memory implementation
//! ([`MemoryStore`]), and the worker step that ties §4 and §5 together
//! ([`process_event`], EPT's `handle_endpoint_event` without rapid, W:487-561).
//!
//! The trait is object safe (`async_trait`), so a worker can hold an
//! `Arc<dyn HistoryStore>` chosen at start: the embedded SQLite store
//! (`vigil_store::endpoints::SqliteHistory`, the default) or MongoDB
//! (`vigil_mongo::MongoStorage`). One conformance suite
//! (`tests/tests/suite/endpoint_history.rs`) runs over all three.

use crate::fabric::Fabric;
use crate::history::{HistoryOutcome, update_endpoint_history};
use crate::local::{LocalResult, update_local};
use crate::model::{EndpointKey, EndpointRecord, EpmEvent, HistoryRecord, Settings};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store: {0}")]
    Backend(String),
    /// The backend's own error (SQLite, MongoDB, the blocking pool...).
    #[error("history store: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A stored record that cannot be read back as the model, or whose
    /// body disagrees with the key it is stored under.
    #[error("history store: malformed {what} record {key}: {problem}")]
    Malformed {
        what: &'static str,
        key: String,
        problem: String,
    },
}

/// Per-node history records and fabric-wide endpoint records.
///
/// Writes replace the whole record; a worker owns each endpoint key (see
/// [`crate::dispatch`]), so there are no concurrent writers of one key.
#[async_trait::async_trait]
pub trait HistoryStore: Send + Sync {
    /// Every node's history record of the endpoint, by node id.
    async fn histories(
        &self,
        key: &EndpointKey,
    ) -> Result<BTreeMap<u32, HistoryRecord>, StoreError>;

    /// Insert or replace one node's history record.
    async fn put_history(&self, record: HistoryRecord) -> Result<(), StoreError>;

    /// The endpoint record.
    async fn endpoint(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>, StoreError>;

    /// Insert or replace the endpoint record.
    async fn put_endpoint(&self, record: EndpointRecord) -> Result<(), StoreError>;
}

#[async_trait::async_trait]
impl<T: HistoryStore + ?Sized> HistoryStore for std::sync::Arc<T> {
    async fn histories(
        &self,
        key: &EndpointKey,
    ) -> Result<BTreeMap<u32, HistoryRecord>, StoreError> {
        (**self).histories(key).await
    }

    async fn put_history(&self, record: HistoryRecord) -> Result<(), StoreError> {
        (**self).put_history(record).await
    }

    async fn endpoint(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>, StoreError> {
        (**self).endpoint(key).await
    }

    async fn put_endpoint(&self, record: EndpointRecord) -> Result<(), StoreError> {
        (**self).put_endpoint(record).await
    }
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

#[async_trait::async_trait]
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
pub async fn process_event<S: HistoryStore + ?Sized>(
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
