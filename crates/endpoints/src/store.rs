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
use crate::local::{LocalChange, LocalResult, update_local};
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

    /// Endpoint records matching `filter`, in page order (address, then
    /// fabric, then vnid: [`crate::query::page_order`]), strictly after
    /// `after` in that order when given, at most `limit` of them (callers
    /// bound it by [`crate::query::MAX_PAGE`]). What `vigil endpoints
    /// search|show` and the API read ([`crate::query`]); the stores index it.
    /// The default refuses: every store that is read implements it.
    async fn find_endpoints(
        &self,
        filter: &crate::query::EndpointFilter,
        after: Option<&EndpointKey>,
        limit: usize,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let _ = (filter, after, limit);
        Err(StoreError::Backend(
            "this history store cannot be searched".to_owned(),
        ))
    }

    /// Everything stored about each of `keys`, in the order of `keys`: every
    /// node's history record and the endpoint record. A backend overrides
    /// this to read many endpoints in one round trip (the write-behind cache,
    /// [`crate::write_behind`], loads the endpoints a batch misses with it);
    /// the default calls [`HistoryStore::histories`] and
    /// [`HistoryStore::endpoint`] per key.
    async fn load_many(&self, keys: &[EndpointKey]) -> Result<Vec<EndpointState>, StoreError> {
        let mut states = Vec::with_capacity(keys.len());
        for key in keys {
            states.push(EndpointState {
                histories: self.histories(key).await?,
                endpoint: self.endpoint(key).await?,
            });
        }
        Ok(states)
    }

    /// Insert or replace many records at once, in order (a later record of
    /// the same key wins). A backend overrides this to write the whole batch
    /// in one transaction (all or nothing), which is what makes write-behind
    /// cheap; the default writes record by record (a failure can leave part
    /// of the batch written, which is harmless: every write replaces a whole
    /// record, and a retried batch writes the same records again).
    ///
    /// The batch is taken by value so a caller can hand it to a background
    /// task (a backend may serialise it off the caller's thread), and is
    /// handed back whole on failure ([`BatchFailed`]), so records moved out
    /// of memory into a batch are never lost.
    async fn put_batch(&self, batch: WriteBatch) -> Result<(), BatchFailed> {
        for record in &batch.histories {
            if let Err(error) = self.put_history(record.clone()).await {
                return Err(BatchFailed { error, batch });
            }
        }
        for record in &batch.endpoints {
            if let Err(error) = self.put_endpoint(record.clone()).await {
                return Err(BatchFailed { error, batch });
            }
        }
        Ok(())
    }
}

/// Records to write at once ([`HistoryStore::put_batch`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub histories: Vec<HistoryRecord>,
    pub endpoints: Vec<EndpointRecord>,
}

impl WriteBatch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.histories.len() + self.endpoints.len()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.histories.is_empty() && self.endpoints.is_empty()
    }

    /// Sort by key (fabric, vnid, addr, then node), keeping the order of
    /// records of one key: a B-tree store then writes each endpoint's rows
    /// together instead of one page per row.
    pub fn sort_by_key(&mut self) {
        self.histories.sort_by(|a, b| {
            (&a.fabric, a.vnid, &a.addr, a.node).cmp(&(&b.fabric, b.vnid, &b.addr, b.node))
        });
        self.endpoints
            .sort_by(|a, b| (&a.fabric, a.vnid, &a.addr).cmp(&(&b.fabric, b.vnid, &b.addr)));
    }
}

/// A [`WriteBatch`] that could not be written, handed back with why.
#[derive(Debug)]
pub struct BatchFailed {
    pub error: StoreError,
    pub batch: WriteBatch,
}

/// What a store holds about one endpoint: every node's history record (by
/// node id) and the endpoint record. The unit [`process_event_in_place`]
/// works on and [`HistoryStore::load_many`] returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointState {
    pub histories: BTreeMap<u32, HistoryRecord>,
    pub endpoint: Option<EndpointRecord>,
}

impl EndpointState {
    /// Number of per-node history records.
    pub fn record_count(&self) -> usize {
        self.histories.len()
    }
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

    async fn find_endpoints(
        &self,
        filter: &crate::query::EndpointFilter,
        after: Option<&EndpointKey>,
        limit: usize,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        (**self).find_endpoints(filter, after, limit).await
    }

    async fn load_many(&self, keys: &[EndpointKey]) -> Result<Vec<EndpointState>, StoreError> {
        (**self).load_many(keys).await
    }

    async fn put_batch(&self, batch: WriteBatch) -> Result<(), BatchFailed> {
        (**self).put_batch(batch).await
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
            fabric: record.fabric.to_string(),
            vnid: record.vnid,
            addr: record.addr.to_string(),
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

    async fn find_endpoints(
        &self,
        filter: &crate::query::EndpointFilter,
        after: Option<&EndpointKey>,
        limit: usize,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        use crate::query::page_order;
        let inner = self.lock();
        let mut found: Vec<&EndpointRecord> = inner
            .endpoints
            .iter()
            .filter(|(key, _)| filter.matches(key))
            .filter(|(key, _)| after.is_none_or(|a| page_order(key, a).is_gt()))
            .map(|(_, record)| record)
            .collect();
        found.sort_by(|a, b| page_order(&a.key(), &b.key()));
        Ok(found.into_iter().take(limit).cloned().collect())
    }

    async fn load_many(&self, keys: &[EndpointKey]) -> Result<Vec<EndpointState>, StoreError> {
        let inner = self.lock();
        Ok(keys
            .iter()
            .map(|key| EndpointState {
                histories: inner.histories.get(key).cloned().unwrap_or_default(),
                endpoint: inner.endpoints.get(key).cloned(),
            })
            .collect())
    }

    async fn put_batch(&self, batch: WriteBatch) -> Result<(), BatchFailed> {
        let mut inner = self.lock();
        for record in batch.histories {
            let key = EndpointKey {
                fabric: record.fabric.to_string(),
                vnid: record.vnid,
                addr: record.addr.to_string(),
            };
            inner
                .histories
                .entry(key)
                .or_default()
                .insert(record.node, record);
        }
        for record in batch.endpoints {
            inner.endpoints.insert(record.key(), record);
        }
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

/// Which records of an [`EndpointState`] one event changed (what
/// [`process_event_in_place`] says must be written back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed {
    /// The history record of this node was pushed to.
    pub history_node: Option<u32>,
    /// The endpoint record was created or changed.
    pub endpoint: bool,
}

/// The worker step on an endpoint's records held in memory: update the
/// event node's history (§4), then the endpoint (§5), in place, and say
/// which records changed. Nothing is cloned but the fields of the new
/// events. [`process_event`] is this between a load and a write-back;
/// the write-behind cache ([`crate::write_behind`]) calls it on the records
/// it holds.
///
/// `state` must hold everything stored about `ev`'s endpoint (all nodes).
pub fn process_event_in_place(
    settings: &Settings,
    fabric: &Fabric,
    state: &mut EndpointState,
    ev: &EpmEvent,
) -> (EventOutcome, Changed) {
    let mut changed = Changed::default();
    // A stored record with no events counts as absent (as in EPT); it is
    // put back untouched unless the step creates the node's record anew.
    let (mut record, empty) = match state.histories.remove(&ev.node) {
        Some(r) if r.events.is_empty() => (None, Some(r)),
        other => (other, None),
    };
    let history = update_endpoint_history(settings, fabric, ev, &mut record);
    match (record, empty) {
        (Some(mut r), _) => {
            if matches!(
                history,
                HistoryOutcome::Pushed {
                    new_record: true,
                    ..
                }
            ) {
                // One copy of the address per endpoint, not per node.
                let shared = state
                    .histories
                    .values()
                    .next()
                    .map(|other| other.addr.clone())
                    .or_else(|| state.endpoint.as_ref().map(|e| e.addr.clone()));
                if let Some(addr) = shared
                    && addr == r.addr
                {
                    r.addr = addr;
                }
            }
            if history.pushed() {
                changed.history_node = Some(ev.node);
            }
            state.histories.insert(ev.node, r);
        }
        (None, Some(e)) => {
            state.histories.insert(ev.node, e);
        }
        (None, None) => {}
    }
    let existed = state.endpoint.is_some();
    let learn_type = state.endpoint.as_ref().map(|e| e.learn_type);
    let local = update_local(settings, fabric, ev, &state.histories, &mut state.endpoint);
    // update_local changes the record exactly when it creates it, records
    // a location or a delete, or changes the learn type (local.rs); the
    // other outcomes leave it as it was.
    changed.endpoint = match local {
        None => false,
        Some(l) => {
            !existed
                || l.record_created
                || !matches!(l.change, LocalChange::Unchanged | LocalChange::NoVpcPeer)
                || state.endpoint.as_ref().map(|e| e.learn_type) != learn_type
        }
    };
    (EventOutcome { history, local }, changed)
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
    let mut state = EndpointState {
        histories: store.histories(&key).await?,
        endpoint: store.endpoint(&key).await?,
    };
    let (outcome, changed) = process_event_in_place(settings, fabric, &mut state, ev);
    if let Some(node) = changed.history_node
        && let Some(r) = state.histories.remove(&node)
    {
        store.put_history(r).await?;
    }
    if changed.endpoint
        && let Some(e) = state.endpoint
    {
        store.put_endpoint(e).await?;
    }
    Ok(outcome)
}
