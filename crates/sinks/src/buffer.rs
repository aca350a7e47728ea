//! The bounded buffer in front of every networked sink, and the counters
//! every sink keeps.
//!
//! Producers never wait: [`SinkBuffer::push`] takes a batch and, past the
//! capacity, drops the **oldest** groups and counts each one
//! (`buffer_full`). The delivery loop takes batches from the front and puts
//! a failed batch back at the front ([`SinkBuffer::requeue`]), where the
//! same bound applies. So a sink holds at most `capacity` groups plus the
//! one batch being sent, whatever happens downstream.
//!
//! Each group travels with the plugin that produced it ([`Batch`]), for
//! sinks that budget per plugin (the Pushgateway's series budget); the
//! name is a shared `Arc<str>`, 16 bytes per buffered group.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use vigil_core::batch::{PluginName, UNKNOWN_PLUGIN};
use vigil_core::model::MetricsGroup;

/// A metrics group shared by every sink of the process (encoded once per
/// sink, copied never).
pub type SharedGroup = Arc<MetricsGroup>;

/// Why a sink dropped groups; the `reason` label of
/// `vigil_sink_dropped_groups_total`.
pub mod reason {
    /// The buffer was full: the oldest groups made room.
    pub const BUFFER_FULL: &str = "buffer_full";
    /// The server refused the data itself (malformed, too large to split):
    /// retrying could never succeed.
    pub const REJECTED: &str = "rejected";
    /// Still buffered when the shutdown grace period ended.
    pub const SHUTDOWN: &str = "shutdown";
    /// The Prometheus registry reached its series bound.
    pub const SERIES_LIMIT: &str = "series_limit";
    /// The producing plugin reached its own series budget
    /// (`max_series_per_plugin`).
    pub const PLUGIN_SERIES_LIMIT: &str = "plugin_series_limit";
    /// A family whose name is taken on the page by a family of another
    /// type (`x` as a gauge and a counter, or a gauge `x_total` next to a
    /// counter `x`): the later one is refused, so the page always parses.
    pub const TYPE_CONFLICT: &str = "type_conflict";
    /// A family named like vigil's own (`vigil_*`), or like a name the
    /// Pushgateway adds itself.
    pub const RESERVED_NAME: &str = "reserved_name";
    /// A series another plugin created (it stays that plugin's until it
    /// goes stale or its resource expires).
    pub const OTHER_PLUGIN: &str = "series_of_another_plugin";
    /// Writing failed locally (file sinks).
    pub const WRITE_ERROR: &str = "write_error";
}

/// What a sink has done since start; lock-free except the drop reasons.
#[derive(Debug, Default)]
pub struct SinkCounters {
    accepted: AtomicU64,
    delivered: AtomicU64,
    retries: AtomicU64,
    dropped: Mutex<BTreeMap<&'static str, u64>>,
}

impl SinkCounters {
    pub fn accepted(&self, groups: u64) {
        self.accepted.fetch_add(groups, Ordering::Relaxed);
    }

    pub fn delivered(&self, groups: u64) {
        self.delivered.fetch_add(groups, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: &'static str, groups: u64) {
        if groups == 0 {
            return;
        }
        *lock(&self.dropped).entry(reason).or_default() += groups;
    }

    pub fn dropped_total(&self) -> u64 {
        lock(&self.dropped).values().sum()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One sink's numbers, as `vigil status` and `/metrics` show them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkSnapshot {
    pub name: String,
    pub kind: String,
    /// Groups (series, for the Prometheus registry) held right now.
    pub buffered: u64,
    pub capacity: u64,
    pub accepted: u64,
    pub delivered: u64,
    pub retries: u64,
    pub dropped: BTreeMap<String, u64>,
}

impl SinkCounters {
    pub fn snapshot(&self, name: &str, kind: &str, buffered: u64, capacity: u64) -> SinkSnapshot {
        SinkSnapshot {
            name: name.to_owned(),
            kind: kind.to_owned(),
            buffered,
            capacity,
            accepted: self.accepted.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dropped: lock(&self.dropped)
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }
}

/// One sink's series and refusals for one plugin (sinks that budget
/// series per plugin: the Prometheus registry and the Pushgateway).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginSeries {
    pub sink: String,
    pub kind: String,
    pub plugin: String,
    /// Series it holds now.
    pub series: u64,
    /// Series refused, by reason.
    pub dropped: BTreeMap<String, u64>,
}

/// Groups taken from a [`SinkBuffer`], each with its producer:
/// `plugins[i]` produced `groups[i]`.
#[derive(Debug, Default)]
pub struct Taken {
    pub groups: Vec<SharedGroup>,
    pub plugins: Vec<PluginName>,
}

impl Taken {
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// A bounded, drop-oldest queue of metrics groups for one sink.
#[derive(Debug)]
pub struct SinkBuffer {
    capacity: usize,
    queue: Mutex<VecDeque<(SharedGroup, PluginName)>>,
    ready: Notify,
    closed: AtomicBool,
    /// Turns true at [`SinkBuffer::close`], for a delivery loop in the
    /// middle of a send.
    closing: tokio::sync::watch::Sender<bool>,
    unknown: PluginName,
    pub counters: SinkCounters,
}

impl SinkBuffer {
    pub fn new(capacity: usize) -> Arc<SinkBuffer> {
        Arc::new(SinkBuffer {
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            closing: tokio::sync::watch::Sender::new(false),
            unknown: PluginName::from(UNKNOWN_PLUGIN),
            counters: SinkCounters::default(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        lock(&self.queue).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds groups of an unknown producer at the back (see
    /// [`SinkBuffer::push_from`]).
    pub fn push(&self, groups: &[SharedGroup]) {
        self.push_from(groups, &[]);
    }

    /// Adds groups at the back, `plugins[i]` having produced `groups[i]`
    /// (unknown where `plugins` is short); never waits. Past the capacity
    /// the oldest groups are dropped and counted.
    pub fn push_from(&self, groups: &[SharedGroup], plugins: &[PluginName]) {
        if groups.is_empty() {
            return;
        }
        self.counters.accepted(groups.len() as u64);
        let dropped = {
            let mut queue = lock(&self.queue);
            queue.extend(
                groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (g.clone(), plugins.get(i).unwrap_or(&self.unknown).clone())),
            );
            let excess = queue.len().saturating_sub(self.capacity);
            queue.drain(..excess);
            excess
        };
        self.counters.dropped(reason::BUFFER_FULL, dropped as u64);
        self.ready.notify_one();
    }

    /// Puts a batch that could not be delivered back at the front, in
    /// order; past the capacity the oldest (this batch first) are dropped.
    pub fn requeue(&self, batch: Taken) {
        let dropped = {
            let mut queue = lock(&self.queue);
            for pair in batch.groups.into_iter().zip(batch.plugins).rev() {
                queue.push_front(pair);
            }
            let excess = queue.len().saturating_sub(self.capacity);
            queue.drain(..excess);
            excess
        };
        self.counters.dropped(reason::BUFFER_FULL, dropped as u64);
    }

    /// Takes up to `max` groups from the front, without waiting.
    pub fn take(&self, max: usize) -> Taken {
        let mut queue = lock(&self.queue);
        let n = max.min(queue.len());
        let mut taken = Taken {
            groups: Vec::with_capacity(n),
            plugins: Vec::with_capacity(n),
        };
        for (group, plugin) in queue.drain(..n) {
            taken.groups.push(group);
            taken.plugins.push(plugin);
        }
        taken
    }

    /// Waits until at least `max` groups are buffered, `linger` has passed
    /// or the buffer is closed, then takes up to `max` (possibly none).
    pub async fn next_batch(&self, max: usize, linger: Duration) -> Taken {
        let deadline = tokio::time::Instant::now() + linger;
        loop {
            let ready = self.ready.notified();
            if self.len() >= max || self.closed.load(Ordering::Acquire) {
                break;
            }
            if tokio::time::timeout_at(deadline, ready).await.is_err() {
                break;
            }
        }
        self.take(max)
    }

    /// No more pushes will come: the delivery loop drains and stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closing.send_replace(true);
        self.ready.notify_one();
    }

    /// Returns once [`SinkBuffer::close`] was called (at once if it was).
    pub async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        // The sender lives as long as `self`.
        let _ = closing.wait_for(|closed| *closed).await;
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Drops whatever is left, counted as `reason`.
    pub fn discard_all(&self, why: &'static str) -> usize {
        let n = {
            let mut queue = lock(&self.queue);
            let n = queue.len();
            queue.clear();
            n
        };
        self.counters.dropped(why, n as u64);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::model::{Datetime, Resource};

    fn group(n: u32) -> SharedGroup {
        Arc::new(MetricsGroup {
            group_type: "g".into(),
            interval_seconds: n,
            creation_timestamp: Datetime {
                seconds: 0,
                nanoseconds: 0,
            },
            schema_version: "0.2".into(),
            resource: Resource::named("r", "127.0.0.1").into(),
            dimensions: Vec::new(),
            metrics: Vec::new(),
        })
    }

    fn ids(taken: &Taken) -> Vec<u32> {
        taken.groups.iter().map(|g| g.interval_seconds).collect()
    }

    #[test]
    fn past_the_capacity_the_oldest_go_and_are_counted() {
        let buffer = SinkBuffer::new(3);
        buffer.push(&[group(1), group(2)]);
        buffer.push(&[group(3), group(4), group(5)]);
        assert_eq!(buffer.len(), 3);
        assert_eq!(ids(&buffer.take(10)), vec![3, 4, 5]);
        let snapshot = buffer.counters.snapshot("s", "k", 0, 3);
        assert_eq!(snapshot.accepted, 5);
        assert_eq!(snapshot.dropped.get(reason::BUFFER_FULL), Some(&2));
    }

    #[test]
    fn a_requeued_batch_goes_back_in_front_and_is_dropped_first() {
        let buffer = SinkBuffer::new(4);
        buffer.push(&[group(1), group(2)]);
        let batch = buffer.take(2);
        buffer.push(&[group(3), group(4), group(5)]);
        buffer.requeue(batch);
        // 1 2 3 4 5 over a capacity of 4: the oldest, 1, goes.
        assert_eq!(ids(&buffer.take(10)), vec![2, 3, 4, 5]);
        assert_eq!(buffer.counters.dropped_total(), 1);
    }

    #[test]
    fn each_group_keeps_its_producer_through_requeues() {
        let buffer = SinkBuffer::new(10);
        let a = PluginName::from("a");
        buffer.push_from(&[group(1), group(2)], &[a.clone(), PluginName::from("b")]);
        buffer.push(&[group(3)]);
        let taken = buffer.take(2);
        assert_eq!(&*taken.plugins[0], "a");
        assert_eq!(&*taken.plugins[1], "b");
        buffer.requeue(taken);
        let all = buffer.take(10);
        assert_eq!(ids(&all), vec![1, 2, 3]);
        let plugins: Vec<&str> = all.plugins.iter().map(|p| &**p).collect();
        assert_eq!(plugins, vec!["a", "b", UNKNOWN_PLUGIN]);
    }

    #[tokio::test]
    async fn closed_wakes_a_waiter_and_returns_at_once_after() {
        let buffer = SinkBuffer::new(1);
        let waiter = {
            let buffer = buffer.clone();
            tokio::spawn(async move { buffer.closed().await })
        };
        buffer.close();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .expect("task");
        tokio::time::timeout(Duration::from_secs(10), buffer.closed())
            .await
            .expect("at once");
    }

    #[tokio::test]
    async fn next_batch_waits_for_a_full_batch_or_the_linger() {
        let buffer = SinkBuffer::new(100);
        buffer.push(&[group(1)]);
        // Not full: returns what there is once the linger passes.
        let batch = buffer.next_batch(10, Duration::from_millis(20)).await;
        assert_eq!(ids(&batch), vec![1]);
        // Full: returns at once, with exactly `max`.
        let groups: Vec<_> = (0..15).map(group).collect();
        buffer.push(&groups);
        let batch = buffer.next_batch(10, Duration::from_secs(3600)).await;
        assert_eq!(batch.len(), 10);
        // Closed: returns at once even when short.
        buffer.close();
        let batch = buffer.next_batch(10, Duration::from_secs(3600)).await;
        assert_eq!(batch.len(), 5);
    }
}
