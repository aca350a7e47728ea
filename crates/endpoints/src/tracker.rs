//! The tracker a process runs: an [`EventSink`] that every source writes to,
//! N workers that take each endpoint's events in order into a
//! [`HistoryStore`], and the numbers an operator needs to trust it
//! (events received per source, rejected by reason, queue depth per
//! worker, subscriber state per fabric, lag).
//!
//! # Design
//!
//! - **Order.** [`Tracker::event`] hands an event to the worker that owns
//!   its endpoint key ([`crate::dispatch::worker_for`], a stable hash), so
//!   every event of one endpoint is handled in arrival order by one task,
//!   and different endpoints in parallel. A full queue makes the source
//!   wait (bounded memory: `workers × queue_capacity` events, 2 × 4,096 by
//!   default, about 2 MB of EPT-shaped events).
//! - **Fabric models.** Sources publish a fabric's model whole
//!   ([`EventSink::fabric`]); a worker reads the newest model when it
//!   handles an event, as EPT's workers read the fabric tables when they
//!   handle one. An event of a fabric nobody described (SNMP networks,
//!   pushed events) is read against an empty model of that name: no vpc
//!   pairs, no tunnels, no EPG names.
//! - **Failures.** A store error is counted and logged with the endpoint
//!   key; the worker goes on with the next event. A rejected input is
//!   counted by (source, reason); the first of each pair and then at most
//!   one line per [`REJECT_LOG_INTERVAL`] per source reach the log, each
//!   with a sample, so a hostile source cannot flood the log.
//! - **Lag.** For each handled event, the time from its `ts` (when the
//!   source received it) to the end of its handling; `/metrics` shows the
//!   newest and the largest since start per worker.

use crate::dispatch::{DispatchConfig, DispatchError, Dispatcher, Handler};
use crate::fabric::Fabric;
use crate::ingest::{EventSink, SinkClosed, Source, SubscriberState};
use crate::model::{EpmEvent, Settings};
use crate::store::HistoryStore;
use crate::write_behind::{WriteBehind, WriteBehindConfig};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// At most one rejection log line per source per this interval (after the
/// first of each reason).
pub const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A sample kept with a rejection is cut to this many bytes.
pub const MAX_SAMPLE_BYTES: usize = 256;

/// What a tracker is built from.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    pub dispatch: DispatchConfig,
    pub settings: Settings,
    /// Each worker's write-behind cache ([`crate::write_behind`]).
    pub write_behind: WriteBehindConfig,
    /// Other processes write the same store (Kafka consumer group
    /// members): every [`Tracker::barrier`] also lets go of what the
    /// workers hold, so no worker acts on records another process has
    /// changed since.
    pub shared_store: bool,
}

impl TrackerConfig {
    /// `dispatch` and `settings`, the default cache, a store of its own.
    pub fn new(dispatch: DispatchConfig, settings: Settings) -> Self {
        TrackerConfig {
            dispatch,
            settings,
            write_behind: WriteBehindConfig::default(),
            shared_store: false,
        }
    }
}

/// One worker's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStats {
    /// Events waiting in its queue.
    pub queue_depth: u64,
    /// Events handled.
    pub handled: u64,
    /// Events whose store write failed.
    pub store_errors: u64,
    /// Lag of the newest handled event, seconds.
    pub lag_seconds: f64,
    /// Largest lag since start, seconds.
    pub max_lag_seconds: f64,
}

/// Rejections of one (source, reason).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejections {
    pub source: Source,
    pub reason: &'static str,
    pub count: u64,
    /// The latest sample (bounded).
    pub sample: String,
}

/// A snapshot of the tracker's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackerStats {
    /// Events received, by source.
    pub received: BTreeMap<Source, u64>,
    pub rejected: Vec<Rejections>,
    pub workers: Vec<WorkerStats>,
    /// Each fabric's subscriber state (fabrics with a subscriber only).
    pub subscribers: BTreeMap<String, SubscriberState>,
    /// Fabrics with a published model.
    pub fabrics: Vec<String>,
}

#[derive(Default)]
struct WorkerCounters {
    handled: AtomicU64,
    store_errors: AtomicU64,
    /// f64 bits.
    lag: AtomicU64,
    max_lag: AtomicU64,
}

#[derive(Default)]
struct RejectState {
    counts: BTreeMap<(Source, &'static str), (u64, String)>,
    last_logged: HashMap<Source, Instant>,
}

struct Shared {
    settings: Settings,
    /// The models sources published, by name.
    fabrics: RwLock<HashMap<String, Arc<Fabric>>>,
    received: [AtomicU64; Source::ALL.len()],
    rejects: Mutex<RejectState>,
    subscribers: Mutex<BTreeMap<String, SubscriberState>>,
    workers: Vec<WorkerCounters>,
}

impl Shared {
    /// The published model of `name`, or an empty one. The empty ones are
    /// not kept: pushed events may name any number of fabrics, and an
    /// empty model costs nothing to make.
    fn fabric(&self, name: &str) -> Arc<Fabric> {
        match read(&self.fabrics).get(name) {
            Some(f) => f.clone(),
            None => Arc::new(Fabric::new(name, 0)),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn source_index(source: Source) -> usize {
    Source::ALL.iter().position(|s| *s == source).unwrap_or(0)
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Cut `text` to at most `max` bytes on a character boundary.
pub fn bounded_sample(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

struct Worker {
    index: usize,
    shared: Arc<Shared>,
    cache: WriteBehind<dyn HistoryStore>,
    release_on_flush: bool,
}

impl Worker {
    async fn one(&mut self, ev: EpmEvent) {
        let fabric = self.shared.fabric(&ev.fabric);
        let result = self
            .cache
            .process(&self.shared.settings, &fabric, &ev)
            .await;
        let Some(counters) = self.shared.workers.get(self.index) else {
            return;
        };
        match result {
            Ok(_) => {
                counters.handled.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                counters.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(endpoint = %ev.key(), node = ev.node, %error, "endpoint event not stored");
            }
        }
        let lag = (now_seconds() - ev.ts).max(0.0);
        counters.lag.store(lag.to_bits(), Ordering::Relaxed);
        let max = f64::from_bits(counters.max_lag.load(Ordering::Relaxed));
        if lag > max {
            counters.max_lag.store(lag.to_bits(), Ordering::Relaxed);
        }
    }

    fn note_flush_error(&self, error: &crate::store::StoreError) {
        if let Some(counters) = self.shared.workers.get(self.index) {
            counters.store_errors.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(worker = self.index, %error, "endpoint history not written (kept, written again at the next flush)");
    }
}

impl Handler<EpmEvent> for Worker {
    async fn handle(&mut self, ev: EpmEvent) {
        self.one(ev).await;
    }

    async fn handle_batch(&mut self, events: Vec<EpmEvent>) {
        // One read of the store for the endpoints not held; each event
        // tries its own read again should this fail.
        let _ = self.cache.prefetch(&events).await;
        for ev in events {
            self.one(ev).await;
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        let flushed = if self.release_on_flush {
            self.cache.flush_and_release().await
        } else {
            self.cache.flush().await
        };
        flushed.map_err(|error| {
            self.note_flush_error(&error);
            error.to_string()
        })
    }

    fn idle_interval(&self) -> Option<Duration> {
        Some(self.cache.config().flush_interval)
    }

    async fn idle(&mut self) {
        if self.cache.has_unwritten()
            && let Err(error) = self.cache.flush().await
        {
            self.note_flush_error(&error);
        }
    }
}

/// A tracker that cannot start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error(transparent)]
    WriteBehind(#[from] crate::write_behind::WriteBehindConfigError),
}

/// Why [`Tracker::barrier`] could not confirm the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BarrierError {
    #[error("the history store refused an endpoint event")]
    StoreFailed,
    #[error("the endpoint tracker stopped")]
    Stopped,
}

/// Sources write to it; workers take events into the store (module docs).
pub struct Tracker {
    shared: Arc<Shared>,
    dispatcher: tokio::sync::RwLock<Option<Dispatcher<EpmEvent, Worker>>>,
    depths: Mutex<Vec<usize>>,
}

impl Tracker {
    /// Start the workers on the current runtime.
    pub fn start(
        config: TrackerConfig,
        store: Arc<dyn HistoryStore>,
    ) -> Result<Arc<Tracker>, TrackerError> {
        config.dispatch.validate()?;
        config.write_behind.validate()?;
        let shared = Arc::new(Shared {
            settings: config.settings,
            fabrics: RwLock::new(HashMap::new()),
            received: Default::default(),
            rejects: Mutex::new(RejectState::default()),
            subscribers: Mutex::new(BTreeMap::new()),
            workers: (0..config.dispatch.workers)
                .map(|_| WorkerCounters::default())
                .collect(),
        });
        let dispatcher = Dispatcher::start(config.dispatch, |index| Worker {
            index,
            shared: shared.clone(),
            cache: WriteBehind::validated(store.clone(), config.write_behind),
            release_on_flush: config.shared_store,
        })?;
        Ok(Arc::new(Tracker {
            shared,
            dispatcher: tokio::sync::RwLock::new(Some(dispatcher)),
            depths: Mutex::new(Vec::new()),
        }))
    }

    /// The newest model of `name`, if a source published one.
    pub fn fabric_model(&self, name: &str) -> Option<Arc<Fabric>> {
        read(&self.shared.fabrics).get(name).cloned()
    }

    /// The numbers (module docs).
    pub fn stats(&self) -> TrackerStats {
        let received = Source::ALL
            .iter()
            .map(|s| {
                let n = self.shared.received[source_index(*s)].load(Ordering::Relaxed);
                (*s, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let rejected = lock(&self.shared.rejects)
            .counts
            .iter()
            .map(|((source, reason), (count, sample))| Rejections {
                source: *source,
                reason,
                count: *count,
                sample: sample.clone(),
            })
            .collect();
        if let Ok(guard) = self.dispatcher.try_read()
            && let Some(d) = guard.as_ref()
        {
            *lock(&self.depths) = d.queue_depths();
        }
        let depths = lock(&self.depths).clone();
        let workers = self
            .shared
            .workers
            .iter()
            .enumerate()
            .map(|(i, c)| WorkerStats {
                queue_depth: depths.get(i).copied().unwrap_or(0) as u64,
                handled: c.handled.load(Ordering::Relaxed),
                store_errors: c.store_errors.load(Ordering::Relaxed),
                lag_seconds: f64::from_bits(c.lag.load(Ordering::Relaxed)),
                max_lag_seconds: f64::from_bits(c.max_lag.load(Ordering::Relaxed)),
            })
            .collect();
        let mut fabrics: Vec<String> = read(&self.shared.fabrics).keys().cloned().collect();
        fabrics.sort();
        TrackerStats {
            received,
            rejected,
            workers,
            subscribers: lock(&self.shared.subscribers).clone(),
            fabrics,
        }
    }

    /// Wait until every event accepted before this call is in the history
    /// store (each worker flushes its cache, in queue order). `Err` when
    /// the store refused any of them (or a worker stopped): the caller must
    /// not acknowledge them to their source (a Kafka consumer leaves their
    /// offsets uncommitted, so they are delivered again); what a worker
    /// could not write stays in its cache and is written at the next
    /// flush.
    pub async fn barrier(&self) -> Result<(), BarrierError> {
        let guard = self.dispatcher.read().await;
        let Some(dispatcher) = guard.as_ref() else {
            return Err(BarrierError::Stopped);
        };
        dispatcher.flush().await.map_err(|e| match e {
            DispatchError::FlushFailed { .. } => BarrierError::StoreFailed,
            _ => BarrierError::Stopped,
        })
    }

    /// Hand a batch of events to their workers (one queue message per
    /// worker), in order per endpoint.
    pub async fn events(&self, source: Source, events: Vec<EpmEvent>) -> Result<(), SinkClosed> {
        self.shared.received[source_index(source)]
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let guard = self.dispatcher.read().await;
        let Some(dispatcher) = guard.as_ref() else {
            return Err(SinkClosed);
        };
        dispatcher
            .dispatch_batch(events)
            .await
            .map_err(|_| SinkClosed)
    }

    /// Stop taking events, let the workers store what is queued.
    pub async fn shutdown(&self) -> Result<(), TrackerError> {
        let dispatcher = self.dispatcher.write().await.take();
        if let Some(d) = dispatcher {
            d.flush().await?;
            d.shutdown().await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventSink for Tracker {
    async fn fabric(&self, fabric: Arc<Fabric>) -> Result<(), SinkClosed> {
        write(&self.shared.fabrics).insert(fabric.name.clone(), fabric);
        Ok(())
    }

    async fn event(&self, source: Source, event: EpmEvent) -> Result<(), SinkClosed> {
        self.shared.received[source_index(source)].fetch_add(1, Ordering::Relaxed);
        let guard = self.dispatcher.read().await;
        let Some(dispatcher) = guard.as_ref() else {
            return Err(SinkClosed);
        };
        let key = event.key();
        dispatcher
            .dispatch(&key, event)
            .await
            .map_err(|_| SinkClosed)
    }

    fn rejected(&self, source: Source, reason: &'static str, sample: &str) {
        let sample = bounded_sample(sample, MAX_SAMPLE_BYTES);
        let mut state = lock(&self.shared.rejects);
        let entry = state
            .counts
            .entry((source, reason))
            .or_insert((0, String::new()));
        entry.0 += 1;
        let first = entry.0 == 1;
        let count = entry.0;
        entry.1.clone_from(&sample);
        let now = Instant::now();
        let due = state
            .last_logged
            .get(&source)
            .is_none_or(|at| now.duration_since(*at) >= REJECT_LOG_INTERVAL);
        if first || due {
            state.last_logged.insert(source, now);
            tracing::warn!(%source, reason, count, sample = %sample, "endpoint input rejected");
        }
    }

    fn subscriber_state(&self, fabric: &str, state: SubscriberState) {
        let before = lock(&self.shared.subscribers).insert(fabric.to_owned(), state);
        if before != Some(state) {
            tracing::info!(fabric, %state, "endpoint subscriber");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EpmClass, HistoryType, Status};
    use crate::store::MemoryStore;

    fn mac_event(addr: &str, node: u32, ts: f64, intf: &str) -> EpmEvent {
        EpmEvent {
            fabric: "fab".into(),
            ts,
            classname: EpmClass::MacEp,
            history_type: HistoryType::Mac,
            status: Status::Created,
            flags: vec!["local".into()],
            if_id: intf.into(),
            pctag: 32770,
            encap: "vlan-10".into(),
            addr: addr.into(),
            ip: String::new(),
            node,
            vnid: 15_000_001,
            vrf: 2_949_120,
            bd: 15_000_001,
        }
    }

    #[tokio::test]
    async fn events_reach_history_in_order_and_are_counted() {
        let store = Arc::new(MemoryStore::new());
        let tracker = Tracker::start(
            TrackerConfig::new(
                DispatchConfig {
                    workers: 2,
                    queue_capacity: 4,
                },
                Settings::default(),
            ),
            store.clone(),
        )
        .unwrap();
        let now = now_seconds();
        for i in 0..20u32 {
            let addr = format!("00:00:00:00:00:{:02X}", i % 5);
            let intf = format!("eth1/{}", i);
            tracker
                .event(
                    Source::Http,
                    mac_event(&addr, 101, now + f64::from(i), &intf),
                )
                .await
                .unwrap();
        }
        tracker.rejected(Source::Http, "bad_mac", &"x".repeat(1000));
        tracker.rejected(Source::Http, "bad_mac", "zz");
        tracker.subscriber_state("fab", SubscriberState::InSync);
        // Every accepted event is handled once the barrier returns.
        tracker.barrier().await.unwrap();
        assert_eq!(
            tracker
                .stats()
                .workers
                .iter()
                .map(|w| w.handled)
                .sum::<u64>(),
            20
        );
        tracker.shutdown().await.unwrap();
        let stats = tracker.stats();
        assert_eq!(stats.received.get(&Source::Http), Some(&20));
        assert_eq!(stats.workers.iter().map(|w| w.handled).sum::<u64>(), 20);
        assert_eq!(stats.rejected.len(), 1);
        assert_eq!(stats.rejected[0].count, 2);
        assert_eq!(stats.rejected[0].sample, "zz");
        assert_eq!(stats.subscribers.get("fab"), Some(&SubscriberState::InSync));
        // Each endpoint's newest event is its last: order held per endpoint.
        for m in 0..5u32 {
            let key = crate::model::EndpointKey {
                fabric: "fab".into(),
                vnid: 15_000_001,
                addr: format!("00:00:00:00:00:{m:02X}"),
            };
            let histories = store.histories(&key).await.unwrap();
            let record = &histories[&101];
            assert_eq!(record.count, 4, "{key}");
            assert_eq!(record.events[0].intf_id, format!("eth1/{}", 15 + m));
        }
        // After shutdown the sink refuses events instead of losing them.
        assert_eq!(
            tracker
                .event(
                    Source::Http,
                    mac_event("00:00:00:00:00:01", 101, now, "eth1/1")
                )
                .await,
            Err(SinkClosed)
        );
    }

    /// A store that refuses every write.
    struct Refusing;

    #[async_trait::async_trait]
    impl HistoryStore for Refusing {
        async fn histories(
            &self,
            _: &crate::model::EndpointKey,
        ) -> Result<BTreeMap<u32, crate::model::HistoryRecord>, crate::store::StoreError> {
            Ok(BTreeMap::new())
        }
        async fn put_history(
            &self,
            _: crate::model::HistoryRecord,
        ) -> Result<(), crate::store::StoreError> {
            Err(crate::store::StoreError::Backend("disk full".into()))
        }
        async fn endpoint(
            &self,
            _: &crate::model::EndpointKey,
        ) -> Result<Option<crate::model::EndpointRecord>, crate::store::StoreError> {
            Ok(None)
        }
        async fn put_endpoint(
            &self,
            _: crate::model::EndpointRecord,
        ) -> Result<(), crate::store::StoreError> {
            Err(crate::store::StoreError::Backend("disk full".into()))
        }
    }

    #[tokio::test]
    async fn a_refused_write_fails_the_barrier_and_is_counted() {
        let tracker = Tracker::start(
            TrackerConfig::new(
                DispatchConfig {
                    workers: 2,
                    queue_capacity: 4,
                },
                Settings::default(),
            ),
            Arc::new(Refusing),
        )
        .unwrap();
        tracker.barrier().await.unwrap();
        tracker
            .event(
                Source::Kafka,
                mac_event("00:00:00:00:00:01", 101, 1.0, "eth1/1"),
            )
            .await
            .unwrap();
        assert_eq!(tracker.barrier().await, Err(BarrierError::StoreFailed));
        let stats = tracker.stats();
        assert_eq!(stats.workers.iter().map(|w| w.store_errors).sum::<u64>(), 1);
        // What could not be written is not dropped quietly at shutdown.
        assert!(tracker.shutdown().await.is_err());
    }

    #[test]
    fn samples_are_cut_on_character_boundaries() {
        assert_eq!(bounded_sample("abc", 5), "abc");
        assert_eq!(bounded_sample("ééé", 3), "é…");
    }
}
