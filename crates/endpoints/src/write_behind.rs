//! Write-behind history for a dispatcher worker (issue #14's throughput
//! target): the worker holds the records of the endpoints it owns in
//! memory, handles each event there ([`process_event_in_place`]: no store
//! round trip, no copy of the endpoint's records), and writes what changed
//! to the [`HistoryStore`] in batches ([`HistoryStore::put_batch`]: one
//! transaction per batch on SQLite).
//!
//! # Contract
//!
//! - **Ownership.** One [`WriteBehind`] per worker, and every event of an
//!   endpoint goes to the same worker ([`crate::dispatch`]), so the cache is
//!   the only writer of its endpoints' records; nothing else may write them
//!   while it runs (other readers of the store see each record as of the
//!   last flush).
//! - **Durability is explicit.** An event handled by [`WriteBehind::process`]
//!   is in memory only. [`WriteBehind::flush`] returns when everything
//!   handled before it is written to the store; only then may a caller
//!   acknowledge the events (commit a Kafka offset, answer an HTTP push).
//!   Through a [`crate::Dispatcher`] of [`HistoryWorker`]s that is
//!   [`crate::Dispatcher::flush`]: once it returns `Ok`, every event
//!   dispatched before the call is durable. A process that dies loses at
//!   most what was handled since the last completed flush, and those events
//!   were not acknowledged, so they are delivered again.
//! - **Background writes.** Between explicit flushes, a batch is started
//!   every [`WriteBehindConfig::flush_events`] events or when the oldest
//!   unwritten change is [`WriteBehindConfig::flush_interval`] old, and
//!   written while the worker goes on (at most one batch in flight; the
//!   next waits for it). A failed batch marks its endpoints dirty again, so
//!   the next flush writes their current records; the failure is returned by
//!   the next [`WriteBehind::flush`] (or the `process` that waits for it).
//! - **Bounded memory.** At most [`WriteBehindConfig::max_records`] records
//!   (per-node history records plus one per endpoint) are held; past that,
//!   the least recently used endpoints are dropped down to 75 % of the
//!   bound: clean ones (already in the store) at once, dirty ones moved,
//!   every record of each, into one batch written in the background, sorted
//!   by key. Until that batch is written no endpoint is read from the store
//!   (a read waits for it), and if it fails its endpoints are put back in
//!   memory, dirty. An evicted endpoint is read back when its next event
//!   comes and gives the same records as if it had never left.
//! - **Same records.** The records in the store after a flush are the ones
//!   [`crate::store::process_event`] on the store itself would have written
//!   (the conformance suite checks it on every backend).

use crate::dispatch::Handler;
use crate::fabric::Fabric;
use crate::model::{EndpointKey, EpmEvent, Settings};
use crate::store::{
    BatchFailed, EndpointState, EventOutcome, HistoryStore, StoreError, WriteBatch,
    process_event_in_place,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Bounds of a [`WriteBehind`]. Every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBehindConfig {
    /// Most records held in memory by one worker: per-node history records
    /// plus one per endpoint (default 1,000,000, about 0.3 GB: an EPT-shaped
    /// record with one event takes about 260 bytes with its strings shared,
    /// [`crate::text`]; `vigil-store`'s `ept_scale` bench). A worker whose
    /// endpoints' records do not fit re-reads evicted ones from the store;
    /// at EPT's scale (4.18 million records, 2 workers) 1,100,000 holds one
    /// class query's working set.
    pub max_records: usize,
    /// Start writing a batch after this many events (default 20,000).
    pub flush_events: usize,
    /// Start writing a batch when the oldest unwritten change is this old
    /// (default 200 ms); also the idle tick of a [`HistoryWorker`].
    pub flush_interval: Duration,
    /// Most records copied into one batch by a flush (default 50,000; a
    /// flush of more writes several batches one after the other, so the
    /// copies stay bounded).
    pub batch_records: usize,
}

impl Default for WriteBehindConfig {
    fn default() -> Self {
        WriteBehindConfig {
            max_records: 1_000_000,
            flush_events: 20_000,
            flush_interval: Duration::from_millis(200),
            batch_records: 50_000,
        }
    }
}

/// Largest allowed [`WriteBehindConfig::max_records`].
pub const MAX_RECORDS: usize = 1 << 30;
/// Largest allowed [`WriteBehindConfig::flush_events`].
pub const MAX_FLUSH_EVENTS: usize = 1 << 24;

/// A [`WriteBehindConfig`] field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("write-behind setting `{setting}` = {value} is out of range ({allowed})")]
pub struct WriteBehindConfigError {
    pub setting: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

impl WriteBehindConfig {
    /// For an initial build that is acknowledged only as a whole (a
    /// subscriber's class queries): no background writes; records are
    /// written when the memory bound evicts them (each endpoint's rows
    /// together, sorted by key, which is several times less I/O for a
    /// B-tree store than row by row) and at the closing
    /// [`WriteBehind::flush`]. `max_records` as given.
    pub fn initial_build(max_records: usize) -> Self {
        WriteBehindConfig {
            max_records,
            flush_events: MAX_FLUSH_EVENTS,
            flush_interval: Duration::from_secs(3600),
            ..WriteBehindConfig::default()
        }
    }

    /// Check the bounds.
    pub fn validate(&self) -> Result<(), WriteBehindConfigError> {
        if !(1..=MAX_RECORDS).contains(&self.max_records) {
            return Err(WriteBehindConfigError {
                setting: "max_records",
                value: self.max_records.to_string(),
                allowed: "1..=2^30",
            });
        }
        if !(1..=MAX_FLUSH_EVENTS).contains(&self.flush_events) {
            return Err(WriteBehindConfigError {
                setting: "flush_events",
                value: self.flush_events.to_string(),
                allowed: "1..=2^24",
            });
        }
        if !(1..=MAX_FLUSH_EVENTS).contains(&self.batch_records) {
            return Err(WriteBehindConfigError {
                setting: "batch_records",
                value: self.batch_records.to_string(),
                allowed: "1..=2^24",
            });
        }
        if self.flush_interval.is_zero() || self.flush_interval > Duration::from_secs(3600) {
            return Err(WriteBehindConfigError {
                setting: "flush_interval",
                value: format!("{:?}", self.flush_interval),
                allowed: "1 ns..=1 h",
            });
        }
        Ok(())
    }
}

/// One endpoint held in memory.
struct Entry {
    state: EndpointState,
    /// Nodes whose history record changed since it was last written.
    dirty_nodes: Vec<u32>,
    endpoint_dirty: bool,
    /// In the dirty list.
    listed: bool,
    last_used: u64,
}

impl Entry {
    fn cost(&self) -> usize {
        self.state.histories.len() + 1
    }
}

/// What a copied batch carries, to mark it dirty again if it fails.
type Written = Vec<(EndpointKey, Vec<u32>, bool)>;

struct InFlight {
    task: JoinHandle<Result<(), BatchFailed>>,
    /// A batch of copies: the keys and records it carries.
    written: Written,
    /// A batch of evicted endpoints (every record of each, moved out of
    /// memory), by key: until it is written, the store does not have them,
    /// so a load of one of them waits for it; on failure they are put back.
    evicted: Option<HashSet<EndpointKey>>,
}

/// Counters of a [`WriteBehind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBehindStats {
    /// Endpoints held in memory.
    pub endpoints: usize,
    /// Records held (per-node history records plus one per endpoint).
    pub records: usize,
    /// Endpoints read from the store (first sight or after eviction).
    pub loads: u64,
    /// Endpoints dropped from memory.
    pub evictions: u64,
    /// Batches written.
    pub batches: u64,
    /// History and endpoint records written.
    pub records_written: u64,
    /// Background writes that failed (their records were written again by
    /// a later batch or flush, or are still dirty).
    pub write_errors: u64,
}

/// A worker's write-behind cache over a [`HistoryStore`] (module docs).
pub struct WriteBehind<S: ?Sized> {
    store: Arc<S>,
    config: WriteBehindConfig,
    cache: HashMap<EndpointKey, Entry>,
    dirty: Vec<EndpointKey>,
    records: usize,
    clock: u64,
    events_since_write: usize,
    dirty_since: Option<Instant>,
    in_flight: Option<InFlight>,
    stats: WriteBehindStats,
    last_write_error: Option<String>,
}

impl<S: HistoryStore + ?Sized + 'static> WriteBehind<S> {
    /// A cache over `store` with `config`'s bounds.
    pub fn new(store: Arc<S>, config: WriteBehindConfig) -> Result<Self, WriteBehindConfigError> {
        config.validate()?;
        Ok(Self::validated(store, config))
    }

    /// [`WriteBehind::new`] with a `config` already validated.
    pub(crate) fn validated(store: Arc<S>, config: WriteBehindConfig) -> Self {
        WriteBehind {
            store,
            config,
            cache: HashMap::new(),
            dirty: Vec::new(),
            records: 0,
            clock: 0,
            events_since_write: 0,
            dirty_since: None,
            in_flight: None,
            stats: WriteBehindStats::default(),
            last_write_error: None,
        }
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The bounds.
    pub fn config(&self) -> WriteBehindConfig {
        self.config
    }

    /// Counters.
    pub fn stats(&self) -> WriteBehindStats {
        WriteBehindStats {
            endpoints: self.cache.len(),
            records: self.records,
            ..self.stats
        }
    }

    /// Whether anything handled is not yet durable.
    pub fn has_unwritten(&self) -> bool {
        !self.dirty.is_empty() || self.in_flight.is_some()
    }

    /// The records held for `key`, if it is in memory (as the store will
    /// have them after the next flush).
    pub fn cached(&self, key: &EndpointKey) -> Option<&EndpointState> {
        self.cache.get(key).map(|e| &e.state)
    }

    /// Read the endpoints of `events` that are not in memory, in one
    /// [`HistoryStore::load_many`] call (a batch's misses cost one round
    /// trip instead of one each). Optional: [`WriteBehind::process`] loads a
    /// miss by itself.
    pub async fn prefetch(&mut self, events: &[EpmEvent]) -> Result<(), StoreError> {
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for ev in events {
            let key = ev.key();
            if !self.cache.contains_key(&key) && seen.insert(key.clone()) {
                missing.push(key);
            }
        }
        self.load(missing).await
    }

    async fn load(&mut self, keys: Vec<EndpointKey>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        // Evicted records not yet in the store must land (or come back)
        // before one of them is read from it.
        let waits = self.in_flight.as_ref().is_some_and(|f| {
            f.evicted
                .as_ref()
                .is_some_and(|evicted| keys.iter().any(|k| evicted.contains(k)))
        });
        let keys = if waits {
            self.wait_in_flight().await?;
            keys.into_iter()
                .filter(|k| !self.cache.contains_key(k))
                .collect()
        } else {
            keys
        };
        if keys.is_empty() {
            return Ok(());
        }
        let states = self.store.load_many(&keys).await?;
        if states.len() != keys.len() {
            return Err(StoreError::Backend(format!(
                "load_many returned {} states for {} keys",
                states.len(),
                keys.len()
            )));
        }
        for (key, state) in keys.into_iter().zip(states) {
            let entry = Entry {
                state,
                dirty_nodes: Vec::new(),
                endpoint_dirty: false,
                listed: false,
                last_used: self.clock,
            };
            self.records += entry.cost();
            self.stats.loads += 1;
            self.cache.insert(key, entry);
        }
        Ok(())
    }

    /// Handle one event in memory (§4 + §5, as [`crate::store::process_event`]),
    /// reading its endpoint from the store first if it is not held. May
    /// start a background write or, past the memory bound, flush and evict.
    /// The event is durable only after a later [`WriteBehind::flush`].
    pub async fn process(
        &mut self,
        settings: &Settings,
        fabric: &Fabric,
        ev: &EpmEvent,
    ) -> Result<EventOutcome, StoreError> {
        let key = ev.key();
        if !self.cache.contains_key(&key) {
            self.load(vec![key.clone()]).await?;
        }
        self.clock += 1;
        let Some(entry) = self.cache.get_mut(&key) else {
            return Err(StoreError::Backend(format!("{key} not held after loading")));
        };
        entry.last_used = self.clock;
        let before = entry.cost();
        let (outcome, changed) = process_event_in_place(settings, fabric, &mut entry.state, ev);
        let after = entry.cost();
        // A step only adds records (an endpoint never loses a node's).
        self.records = (self.records + after).saturating_sub(before);
        let mut dirtied = false;
        if let Some(node) = changed.history_node
            && !entry.dirty_nodes.contains(&node)
        {
            entry.dirty_nodes.push(node);
            dirtied = true;
        }
        if changed.endpoint && !entry.endpoint_dirty {
            entry.endpoint_dirty = true;
            dirtied = true;
        }
        if dirtied && !entry.listed {
            entry.listed = true;
            self.dirty.push(key);
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        self.events_since_write += 1;
        // The event is handled; a failed background write only means its
        // records stay dirty for the next flush, which reports it.
        let background = if self.records > self.config.max_records {
            self.evict().await
        } else if self.write_due() {
            self.start_write().await
        } else {
            Ok(())
        };
        if let Err(error) = background {
            self.stats.write_errors += 1;
            self.last_write_error = Some(error.to_string());
        }
        Ok(outcome)
    }

    /// Flush, then let go of every record held: the next event of any
    /// endpoint reads it from the store again. For a worker that shares
    /// the store with workers of other processes (a Kafka consumer group),
    /// whose partitions, and with them endpoints, may move between batches:
    /// what it held could be stale by the next batch.
    pub async fn flush_and_release(&mut self) -> Result<(), StoreError> {
        self.flush().await?;
        if self.dirty.is_empty() && self.in_flight.is_none() {
            self.cache.clear();
            self.records = 0;
        }
        Ok(())
    }

    /// The last failed background write, if any (the records it carried
    /// were marked dirty again; a later successful flush wrote them).
    pub fn last_write_error(&self) -> Option<&str> {
        self.last_write_error.as_deref()
    }

    fn write_due(&self) -> bool {
        if self.dirty.is_empty() {
            return false;
        }
        if self.events_since_write >= self.config.flush_events {
            return true;
        }
        // Checking the clock every 64 events keeps it off the per-event cost.
        self.events_since_write.is_multiple_of(64)
            && self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= self.config.flush_interval)
    }

    /// Whether the oldest unwritten change is older than the flush interval
    /// (for an idle tick).
    pub fn interval_elapsed(&self) -> bool {
        self.dirty_since
            .is_some_and(|t| t.elapsed() >= self.config.flush_interval)
    }

    /// Wait for the batch in flight; on failure, mark its endpoints dirty
    /// again (or put evicted ones back) and return the error.
    async fn wait_in_flight(&mut self) -> Result<(), StoreError> {
        let Some(InFlight {
            task,
            written,
            evicted,
        }) = self.in_flight.take()
        else {
            return Ok(());
        };
        let failed = match task.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(failed)) => failed,
            Err(joined) => BatchFailed {
                error: StoreError::Storage(Box::new(joined)),
                batch: WriteBatch::default(),
            },
        };
        if evicted.is_some() {
            self.put_back(failed.batch);
        } else {
            for (key, nodes, endpoint) in written {
                let Some(entry) = self.cache.get_mut(&key) else {
                    continue;
                };
                for node in nodes {
                    if !entry.dirty_nodes.contains(&node) {
                        entry.dirty_nodes.push(node);
                    }
                }
                entry.endpoint_dirty |= endpoint;
                if !entry.listed {
                    entry.listed = true;
                    self.dirty.push(key);
                }
            }
        }
        self.dirty_since.get_or_insert_with(Instant::now);
        Err(failed.error)
    }

    /// Put the endpoints of a failed eviction batch back, dirty (each
    /// carried every record of its endpoint).
    fn put_back(&mut self, batch: WriteBatch) {
        let mut states: HashMap<EndpointKey, EndpointState> = HashMap::new();
        for record in batch.histories {
            let key = EndpointKey {
                fabric: record.fabric.to_string(),
                vnid: record.vnid,
                addr: record.addr.to_string(),
            };
            states
                .entry(key)
                .or_default()
                .histories
                .insert(record.node, record);
        }
        for record in batch.endpoints {
            let key = record.key();
            states.entry(key).or_default().endpoint = Some(record);
        }
        for (key, state) in states {
            let entry = Entry {
                dirty_nodes: state.histories.keys().copied().collect(),
                endpoint_dirty: state.endpoint.is_some(),
                state,
                listed: true,
                last_used: self.clock,
            };
            self.records += entry.cost();
            self.dirty.push(key.clone());
            self.cache.insert(key, entry);
        }
    }

    /// Start writing the dirty records (copies, at most
    /// [`WriteBehindConfig::batch_records`]; the rest stay dirty) as one
    /// batch in the background, after the previous batch is written.
    async fn start_write(&mut self) -> Result<(), StoreError> {
        self.wait_in_flight().await?;
        self.events_since_write = 0;
        if self.dirty.is_empty() {
            self.dirty_since = None;
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let mut written: Written = Vec::new();
        let mut taken = 0;
        let mut keys = std::mem::take(&mut self.dirty).into_iter();
        for key in keys.by_ref() {
            let Some(entry) = self.cache.get_mut(&key) else {
                continue;
            };
            if !entry.listed {
                continue;
            }
            entry.listed = false;
            let nodes = std::mem::take(&mut entry.dirty_nodes);
            for node in &nodes {
                if let Some(r) = entry.state.histories.get(node) {
                    batch.histories.push(r.clone());
                }
            }
            let endpoint = std::mem::take(&mut entry.endpoint_dirty);
            if endpoint && let Some(e) = &entry.state.endpoint {
                batch.endpoints.push(e.clone());
            }
            taken += nodes.len() + usize::from(endpoint);
            written.push((key, nodes, endpoint));
            if taken >= self.config.batch_records {
                break;
            }
        }
        self.dirty = keys.collect();
        if self.dirty.is_empty() {
            self.dirty_since = None;
        }
        if !batch.is_empty() {
            self.spawn_write(batch, written, None);
        }
        Ok(())
    }

    fn spawn_write(
        &mut self,
        mut batch: WriteBatch,
        written: Written,
        evicted: Option<HashSet<EndpointKey>>,
    ) {
        self.stats.batches += 1;
        self.stats.records_written += batch.len() as u64;
        let store = self.store.clone();
        let task = tokio::spawn(async move {
            batch.sort_by_key();
            store.put_batch(batch).await
        });
        self.in_flight = Some(InFlight {
            task,
            written,
            evicted,
        });
    }

    /// Write everything handled so far and wait until it is in the store.
    /// When this returns `Ok`, every event given to [`WriteBehind::process`]
    /// before the call is durable (the point to acknowledge them). On an
    /// error nothing is lost from memory: the records stay dirty and the
    /// next flush writes them again.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        loop {
            self.start_write().await?;
            self.wait_in_flight().await?;
            if self.dirty.is_empty() {
                return Ok(());
            }
        }
    }

    /// Drop the least recently used endpoints down to 75 % of the bound:
    /// clean ones are already in the store; dirty ones are moved, every
    /// record of each, into one batch written in the background (sorted by
    /// key, so each endpoint's rows go together).
    async fn evict(&mut self) -> Result<(), StoreError> {
        // Whatever is in flight lands first, so "clean" means "in the store".
        self.wait_in_flight().await?;
        let target = self.config.max_records - self.config.max_records / 4;
        if self.records <= target {
            return Ok(());
        }
        let mut ages: Vec<(u64, usize)> = self
            .cache
            .values()
            .map(|e| (e.last_used, e.cost()))
            .collect();
        ages.sort_unstable_by_key(|&(used, _)| used);
        let mut excess = self.records - target;
        let mut cutoff = 0;
        for (used, cost) in ages {
            cutoff = used;
            excess = excess.saturating_sub(cost);
            if excess == 0 {
                break;
            }
        }
        let victims: Vec<EndpointKey> = self
            .cache
            .iter()
            .filter(|(_, e)| e.last_used <= cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        let mut batch = WriteBatch::default();
        let mut moved = HashSet::new();
        for key in victims {
            let Some(entry) = self.cache.remove(&key) else {
                continue;
            };
            self.records -= entry.cost();
            self.stats.evictions += 1;
            if entry.listed {
                batch.histories.extend(entry.state.histories.into_values());
                batch.endpoints.extend(entry.state.endpoint);
                moved.insert(key);
            }
        }
        if !batch.is_empty() {
            self.spawn_write(batch, Vec::new(), Some(moved));
        }
        Ok(())
    }
}

/// A dispatcher worker that takes events into history through a
/// [`WriteBehind`] ([`crate::Dispatcher`] of these: `dispatch_batch` the
/// events, `flush` before acknowledging them).
///
/// `fabric_of(name)` gives the newest model of the event's fabric (for
/// example the tracker's shared models). A failed event (its endpoint could
/// not be read, so it is not in history) is counted and reported by the
/// next [`Handler::flush`], which then fails so the caller does not
/// acknowledge it.
pub struct HistoryWorker<S: ?Sized, F> {
    cache: WriteBehind<S>,
    settings: Settings,
    fabric_of: F,
    handled: u64,
    failed: u64,
    /// The first error since the last flush, with how many followed.
    unreported: Option<(String, u64)>,
}

impl<S, F> HistoryWorker<S, F>
where
    S: HistoryStore + ?Sized + 'static,
    F: FnMut(&str) -> Arc<Fabric> + Send + 'static,
{
    /// A worker over `cache`.
    pub fn new(cache: WriteBehind<S>, settings: Settings, fabric_of: F) -> Self {
        HistoryWorker {
            cache,
            settings,
            fabric_of,
            handled: 0,
            failed: 0,
            unreported: None,
        }
    }

    /// Events taken into history (in memory; durable after a flush).
    pub fn handled(&self) -> u64 {
        self.handled
    }

    /// Events that could not be handled (a store read failed).
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// The cache.
    pub fn cache(&self) -> &WriteBehind<S> {
        &self.cache
    }

    /// The cache, to flush it after [`crate::Dispatcher::shutdown`].
    pub fn cache_mut(&mut self) -> &mut WriteBehind<S> {
        &mut self.cache
    }

    fn note_error(&mut self, error: &StoreError) {
        match &mut self.unreported {
            Some((_, more)) => *more += 1,
            None => self.unreported = Some((error.to_string(), 0)),
        }
    }

    async fn one(&mut self, ev: EpmEvent) {
        let fabric = (self.fabric_of)(&ev.fabric);
        match self.cache.process(&self.settings, &fabric, &ev).await {
            Ok(_) => self.handled += 1,
            Err(error) => {
                // `process` fails only before handling the event (its
                // endpoint could not be read).
                self.failed += 1;
                self.note_error(&error);
            }
        }
    }
}

impl<S, F> Handler<EpmEvent> for HistoryWorker<S, F>
where
    S: HistoryStore + ?Sized + 'static,
    F: FnMut(&str) -> Arc<Fabric> + Send + 'static,
{
    async fn handle(&mut self, ev: EpmEvent) {
        self.one(ev).await;
    }

    async fn handle_batch(&mut self, events: Vec<EpmEvent>) {
        if let Err(error) = self.cache.prefetch(&events).await {
            // Each event will try its own load again.
            self.note_error(&error);
        }
        for ev in events {
            self.one(ev).await;
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        let flushed = self.cache.flush().await;
        let unreported = self.unreported.take();
        match (flushed, unreported) {
            (Err(error), _) => Err(error.to_string()),
            (Ok(()), Some((first, more))) => Err(format!(
                "events failed since the last flush: {first} (and {more} more)"
            )),
            (Ok(()), None) => Ok(()),
        }
    }

    fn idle_interval(&self) -> Option<Duration> {
        Some(self.cache.config().flush_interval)
    }

    async fn idle(&mut self) {
        if self.cache.has_unwritten()
            && let Err(error) = self.cache.flush().await
        {
            self.note_error(&error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointRecord, HistoryRecord};
    use crate::store::{MemoryStore, process_event};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A memory store whose next `fail` batch writes fail.
    struct Flaky {
        inner: MemoryStore,
        fail: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl HistoryStore for Flaky {
        async fn histories(
            &self,
            key: &EndpointKey,
        ) -> Result<BTreeMap<u32, HistoryRecord>, StoreError> {
            self.inner.histories(key).await
        }
        async fn put_history(&self, record: HistoryRecord) -> Result<(), StoreError> {
            self.inner.put_history(record).await
        }
        async fn endpoint(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>, StoreError> {
            self.inner.endpoint(key).await
        }
        async fn put_endpoint(&self, record: EndpointRecord) -> Result<(), StoreError> {
            self.inner.put_endpoint(record).await
        }
        async fn put_batch(&self, batch: WriteBatch) -> Result<(), BatchFailed> {
            let left = self.fail.load(Ordering::SeqCst);
            if left > 0 {
                self.fail.store(left - 1, Ordering::SeqCst);
                return Err(BatchFailed {
                    error: StoreError::Backend("disk full".into()),
                    batch,
                });
            }
            self.inner.put_batch(batch).await
        }
    }

    fn events() -> Vec<EpmEvent> {
        // 30 MACs, each learned on a leaf, moved, then deleted on the first.
        let mut out = Vec::new();
        for round in 0..3u32 {
            for i in 0..30u32 {
                let node = 101 + (i + round) % 4;
                let mut flags = vec!["local".to_owned()];
                let mut status = crate::model::Status::Created;
                if round == 2 {
                    flags.clear();
                    status = crate::model::Status::Deleted;
                }
                out.push(EpmEvent {
                    fabric: "f".into(),
                    ts: f64::from(round * 100 + i),
                    classname: crate::model::EpmClass::MacEp,
                    history_type: crate::model::HistoryType::Mac,
                    status,
                    flags,
                    if_id: format!("eth1/{}", 1 + i % 8),
                    pctag: 32771,
                    encap: "vlan-101".into(),
                    addr: format!("00:00:00:00:00:{i:02X}"),
                    ip: String::new(),
                    node: if round == 2 { 101 + i % 4 } else { node },
                    vnid: 7,
                    vrf: 5,
                    bd: 7,
                });
            }
        }
        out
    }

    async fn reference(events: &[EpmEvent]) -> MemoryStore {
        let store = MemoryStore::new();
        for ev in events {
            process_event(&Settings::default(), &Fabric::default(), &store, ev)
                .await
                .unwrap();
        }
        store
    }

    async fn same(a: &dyn HistoryStore, b: &dyn HistoryStore, events: &[EpmEvent]) {
        for ev in events {
            let k = ev.key();
            assert_eq!(
                a.histories(&k).await.unwrap(),
                b.histories(&k).await.unwrap(),
                "{k}"
            );
            assert_eq!(
                a.endpoint(&k).await.unwrap(),
                b.endpoint(&k).await.unwrap(),
                "{k}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_batches_lose_nothing_and_the_next_flush_writes_them() {
        let events = events();
        let want = reference(&events).await;
        for max_records in [1_000_000, 5] {
            let store = Arc::new(Flaky {
                inner: MemoryStore::new(),
                fail: AtomicUsize::new(3),
            });
            let config = WriteBehindConfig {
                max_records,
                flush_events: 10,
                ..WriteBehindConfig::default()
            };
            let mut cache = WriteBehind::new(store.clone(), config).unwrap();
            for ev in &events {
                cache
                    .process(&Settings::default(), &Fabric::default(), ev)
                    .await
                    .unwrap();
            }
            // Failures (of background or eviction writes, then of flushes)
            // are reported; once the store works again everything lands.
            let mut attempts = 0;
            while cache.flush().await.is_err() {
                attempts += 1;
                assert!(attempts < 10, "flush never succeeded");
            }
            assert_eq!(store.fail.load(Ordering::SeqCst), 0);
            assert!(!cache.has_unwritten());
            same(&store.inner, &want, &events).await;
        }
    }

    #[tokio::test]
    async fn config_bounds_and_defaults() {
        assert!(WriteBehindConfig::default().validate().is_ok());
        assert!(WriteBehindConfig::initial_build(10).validate().is_ok());
        for bad in [
            WriteBehindConfig {
                max_records: 0,
                ..WriteBehindConfig::default()
            },
            WriteBehindConfig {
                flush_events: 0,
                ..WriteBehindConfig::default()
            },
            WriteBehindConfig {
                batch_records: 0,
                ..WriteBehindConfig::default()
            },
            WriteBehindConfig {
                flush_interval: Duration::ZERO,
                ..WriteBehindConfig::default()
            },
        ] {
            assert!(WriteBehind::new(Arc::new(MemoryStore::new()), bad).is_err());
        }
    }

    #[tokio::test]
    async fn small_batches_flush_everything_in_several_writes() {
        let events = events();
        let want = reference(&events).await;
        let store = Arc::new(MemoryStore::new());
        let config = WriteBehindConfig {
            batch_records: 4,
            ..WriteBehindConfig::initial_build(1_000_000)
        };
        let mut cache = WriteBehind::new(store.clone(), config).unwrap();
        for ev in &events {
            cache
                .process(&Settings::default(), &Fabric::default(), ev)
                .await
                .unwrap();
        }
        assert_eq!(
            cache.stats().batches,
            0,
            "initial_build writes only on flush"
        );
        cache.flush().await.unwrap();
        assert!(cache.stats().batches > 10, "{:?}", cache.stats());
        same(store.as_ref(), &want, &events).await;
    }
}
