//! Ordered dispatch (issue #14 "Ordered, scalable dispatch"; EPT's manager
//! hashing every event to one worker): every event of one endpoint
//! (fabric, vnid, addr) goes to the same worker and is handled in order;
//! different endpoints are handled in parallel by N workers.
//!
//! The worker is chosen by a **stable** hash, 64-bit FNV-1a over
//! `fabric ‖ 0x00 ‖ vnid (4 bytes, big-endian) ‖ 0x00 ‖ addr`, modulo the
//! number of workers ([`worker_for`]). Unlike Rust's `HashMap` hasher
//! (SipHash with random keys), the same key goes to the same worker in every
//! process and every run, so separate processes (and Kafka partitioning)
//! can agree on it.
//!
//! Queues are bounded tokio channels: [`Dispatcher::dispatch`] waits for
//! room (back-pressure), it never drops an event.

use crate::model::{EndpointKey, EpmEvent};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most workers in one process.
pub const MAX_WORKERS: usize = 64;
/// Largest queue per worker.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

/// 64-bit FNV-1a.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a_64_more(0xcbf2_9ce4_8422_2325, bytes)
}

/// 64-bit FNV-1a continued from `hash` over `bytes`.
fn fnv1a_64_more(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The stable hash of an endpoint key (see the module doc).
pub fn key_hash(key: &EndpointKey) -> u64 {
    key_hash_parts(&key.fabric, key.vnid, &key.addr)
}

/// [`key_hash`] of the key (fabric, vnid, addr), without building it.
pub fn key_hash_parts(fabric: &str, vnid: u32, addr: &str) -> u64 {
    let mut hash = fnv1a_64(fabric.as_bytes());
    hash = fnv1a_64_more(hash, &[0]);
    hash = fnv1a_64_more(hash, &vnid.to_be_bytes());
    hash = fnv1a_64_more(hash, &[0]);
    fnv1a_64_more(hash, addr.as_bytes())
}

/// Something dispatched by endpoint: its endpoint key's [`key_hash`].
pub trait Keyed {
    /// The stable hash of the endpoint key.
    fn endpoint_hash(&self) -> u64;
}

impl Keyed for EndpointKey {
    fn endpoint_hash(&self) -> u64 {
        key_hash(self)
    }
}

impl Keyed for EpmEvent {
    fn endpoint_hash(&self) -> u64 {
        key_hash_parts(&self.fabric, self.vnid, self.key_addr())
    }
}

fn worker_of_hash(hash: u64, workers: usize) -> usize {
    if workers == 0 {
        return 0;
    }
    // usize → u64 is lossless on every supported target, and the result is
    // below `workers`, so it fits back.
    (hash % workers as u64) as usize
}

/// The worker (0..workers) that handles `key`; 0 when `workers` is 0.
pub fn worker_for(key: &EndpointKey, workers: usize) -> usize {
    worker_of_hash(key_hash(key), workers)
}

/// Dispatch configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// Number of workers, 1..=64 (default: the available parallelism).
    pub workers: usize,
    /// Events queued per worker before `dispatch` waits, 1..=2^20.
    pub queue_capacity: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, MAX_WORKERS);
        DispatchConfig {
            workers,
            queue_capacity: 1024,
        }
    }
}

/// A dispatch failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DispatchError {
    #[error("setting `{setting}` = {value} is out of range (allowed 1..={max})")]
    OutOfRange {
        setting: &'static str,
        value: usize,
        max: usize,
    },
    #[error("worker {0} has stopped (its handler panicked)")]
    WorkerStopped(usize),
    /// A worker's [`Handler::flush`] failed: what it handled is not
    /// (all) durable.
    #[error("worker {worker} could not flush: {message}")]
    FlushFailed { worker: usize, message: String },
}

impl DispatchConfig {
    /// Check the bounds.
    pub fn validate(&self) -> Result<(), DispatchError> {
        for (setting, value, max) in [
            ("workers", self.workers, MAX_WORKERS),
            ("queue_capacity", self.queue_capacity, MAX_QUEUE_CAPACITY),
        ] {
            if !(1..=max).contains(&value) {
                return Err(DispatchError::OutOfRange {
                    setting,
                    value,
                    max,
                });
            }
        }
        Ok(())
    }
}

/// What a worker does with each event, in order.
///
/// Only [`Handler::handle`] is required. A handler that keeps work in
/// memory (the write-behind history worker,
/// [`crate::write_behind::HistoryWorker`]) also implements
/// [`Handler::flush`] (make everything handled so far durable) and may ask
/// for an idle tick ([`Handler::idle_interval`]) to flush when its queue is
/// quiet.
pub trait Handler<T: Send + 'static>: Send + 'static {
    /// Handle one event; the next one of this worker waits for it.
    fn handle(&mut self, item: T) -> impl Future<Output = ()> + Send;

    /// Handle a batch of events, in order (from
    /// [`Dispatcher::dispatch_batch`]). The default handles them one by one.
    fn handle_batch(&mut self, items: Vec<T>) -> impl Future<Output = ()> + Send {
        async move {
            for item in items {
                self.handle(item).await;
            }
        }
    }

    /// Make everything handled so far durable ([`Dispatcher::flush`]). The
    /// default has nothing to do.
    fn flush(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// How long the queue may stay empty before [`Handler::idle`] is
    /// called; `None` (the default) never calls it.
    fn idle_interval(&self) -> Option<Duration> {
        None
    }

    /// Called when the queue has been empty for [`Handler::idle_interval`].
    fn idle(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What travels on a worker's queue.
enum Message<T> {
    One(T),
    Batch(Vec<T>),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// N workers, each with a bounded queue and its own handler.
pub struct Dispatcher<T, H> {
    senders: Vec<mpsc::Sender<Message<T>>>,
    tasks: Vec<JoinHandle<H>>,
}

async fn run_worker<T: Send + 'static, H: Handler<T>>(
    mut handler: H,
    mut rx: mpsc::Receiver<Message<T>>,
) -> H {
    loop {
        let message = match handler.idle_interval() {
            None => rx.recv().await,
            Some(interval) => match tokio::time::timeout(interval, rx.recv()).await {
                Ok(message) => message,
                Err(_) => {
                    handler.idle().await;
                    continue;
                }
            },
        };
        match message {
            None => break,
            Some(Message::One(item)) => handler.handle(item).await,
            Some(Message::Batch(items)) => handler.handle_batch(items).await,
            Some(Message::Flush(done)) => {
                let result = handler.flush().await;
                // The caller may have given up waiting; nothing to do then.
                let _ = done.send(result);
            }
        }
    }
    handler
}

impl<T: Send + 'static, H: Handler<T>> Dispatcher<T, H> {
    /// Start the workers on the current tokio runtime; `make(i)` builds
    /// worker i's handler.
    pub fn start(
        config: DispatchConfig,
        mut make: impl FnMut(usize) -> H,
    ) -> Result<Self, DispatchError> {
        config.validate()?;
        let mut senders = Vec::with_capacity(config.workers);
        let mut tasks = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let (tx, rx) = mpsc::channel::<Message<T>>(config.queue_capacity);
            tasks.push(tokio::spawn(run_worker(make(i), rx)));
            senders.push(tx);
        }
        Ok(Dispatcher { senders, tasks })
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    async fn send(&self, i: usize, message: Message<T>) -> Result<(), DispatchError> {
        match self.senders.get(i) {
            Some(tx) => tx
                .send(message)
                .await
                .map_err(|_| DispatchError::WorkerStopped(i)),
            None => Err(DispatchError::WorkerStopped(i)),
        }
    }

    /// Queue `item` for the worker of `key`, waiting while its queue is full.
    pub async fn dispatch(&self, key: &EndpointKey, item: T) -> Result<(), DispatchError> {
        let i = worker_for(key, self.senders.len());
        self.send(i, Message::One(item)).await
    }

    /// Queue many items: each goes to the worker of its endpoint key, in
    /// the given order per worker (so per endpoint), as one queue message
    /// per worker — one channel hop for the lot instead of one per item. A
    /// batch takes one slot of a queue's `queue_capacity`, so bound batch
    /// sizes (a few hundred to a few thousand items) to keep memory bounded.
    pub async fn dispatch_batch(&self, items: Vec<T>) -> Result<(), DispatchError>
    where
        T: Keyed,
    {
        let workers = self.senders.len();
        if workers == 1 {
            return self.send(0, Message::Batch(items)).await;
        }
        let mut parts: Vec<Vec<T>> = (0..workers)
            .map(|_| Vec::with_capacity(items.len() / workers + 1))
            .collect();
        for item in items {
            let i = worker_of_hash(item.endpoint_hash(), workers);
            if let Some(part) = parts.get_mut(i) {
                part.push(item);
            }
        }
        for (i, part) in parts.into_iter().enumerate() {
            if !part.is_empty() {
                self.send(i, Message::Batch(part)).await?;
            }
        }
        Ok(())
    }

    /// A barrier: every worker handles what was queued before this call,
    /// then flushes ([`Handler::flush`]); returns when all have. When it
    /// returns `Ok`, everything dispatched before the call is durable (as
    /// far as the handlers' flush makes it so) — the moment to commit a
    /// Kafka offset covering those events. Events dispatched concurrently
    /// with the call may or may not be covered.
    pub async fn flush(&self) -> Result<(), DispatchError> {
        let mut waits = Vec::with_capacity(self.senders.len());
        for i in 0..self.senders.len() {
            let (done, wait) = oneshot::channel();
            self.send(i, Message::Flush(done)).await?;
            waits.push(wait);
        }
        let mut first_error = None;
        for (worker, wait) in waits.into_iter().enumerate() {
            match wait.await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    first_error.get_or_insert(DispatchError::FlushFailed { worker, message });
                }
                Err(_) => {
                    first_error.get_or_insert(DispatchError::WorkerStopped(worker));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Messages waiting in each worker's queue (an item or a batch each).
    pub fn queue_depths(&self) -> Vec<usize> {
        self.senders
            .iter()
            .map(|tx| tx.max_capacity() - tx.capacity())
            .collect()
    }

    /// Close the queues, let the workers finish what is queued, and return
    /// their handlers in worker order. Handlers are not flushed: call
    /// [`Dispatcher::flush`] first, or flush the returned handlers.
    pub async fn shutdown(self) -> Result<Vec<H>, DispatchError> {
        drop(self.senders);
        let mut handlers = Vec::with_capacity(self.tasks.len());
        for (i, task) in self.tasks.into_iter().enumerate() {
            handlers.push(task.await.map_err(|_| DispatchError::WorkerStopped(i))?);
        }
        Ok(handlers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn key(i: usize) -> EndpointKey {
        EndpointKey {
            fabric: "fab1".into(),
            vnid: 2949120,
            addr: format!("10.0.{}.{}", i / 256, i % 256),
        }
    }

    #[test]
    fn fnv1a_known_vectors_and_pinned_worker() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x85944171f73967e8);
        // Pinned: the same key maps to the same worker in every process.
        let k = key(1);
        assert_eq!(key_hash(&k), key_hash(&k.clone()));
        // Computed independently (Python) from the documented byte layout.
        assert_eq!(key_hash(&k), 0x11b9_0223_0ed8_c7e4);
        assert_eq!(worker_for(&k, 8), 4);
        assert_eq!(worker_for(&k, 0), 0);
        // Spread: 1000 keys over 8 workers leave no worker empty.
        let mut seen = [0usize; 8];
        for i in 0..1000 {
            seen[worker_for(&key(i), 8)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
    }

    #[test]
    fn config_bounds() {
        assert!(DispatchConfig::default().validate().is_ok());
        assert!(DispatchConfig::default().workers <= MAX_WORKERS);
        let bad = DispatchConfig {
            workers: 65,
            queue_capacity: 1,
        };
        assert_eq!(
            bad.validate(),
            Err(DispatchError::OutOfRange {
                setting: "workers",
                value: 65,
                max: 64
            })
        );
        let bad = DispatchConfig {
            workers: 1,
            queue_capacity: 0,
        };
        assert!(bad.validate().is_err());
    }

    /// Records (key index, seq) per key, yielding in between to interleave.
    struct Recorder {
        seen: Arc<Mutex<HashMap<usize, Vec<usize>>>>,
    }

    impl Handler<(usize, usize)> for Recorder {
        async fn handle(&mut self, (k, seq): (usize, usize)) {
            if seq % 3 == 0 {
                tokio::task::yield_now().await;
            }
            self.seen.lock().unwrap().entry(k).or_default().push(seq);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn order_per_endpoint_under_concurrency() {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let d = Dispatcher::start(
            DispatchConfig {
                workers: 8,
                queue_capacity: 4,
            },
            |_| Recorder { seen: seen.clone() },
        )
        .unwrap();
        let keys = 50;
        let per_key = 200;
        for seq in 0..per_key {
            for k in 0..keys {
                d.dispatch(&key(k), (k, seq)).await.unwrap();
            }
        }
        let handlers = d.shutdown().await.unwrap();
        assert_eq!(handlers.len(), 8);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), keys);
        for k in 0..keys {
            let want: Vec<usize> = (0..per_key).collect();
            assert_eq!(seen[&k], want, "key {k} out of order or lost");
        }
    }

    /// Blocks until a second handler reaches the barrier.
    struct Meet {
        barrier: Arc<tokio::sync::Barrier>,
    }

    impl Handler<()> for Meet {
        async fn handle(&mut self, _: ()) {
            self.barrier.wait().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn different_endpoints_run_in_parallel() {
        let workers = 4;
        let a = key(0);
        let b = (1..)
            .map(key)
            .find(|k| worker_for(k, workers) != worker_for(&a, workers))
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let d = Dispatcher::start(
            DispatchConfig {
                workers,
                queue_capacity: 4,
            },
            |_| Meet {
                barrier: barrier.clone(),
            },
        )
        .unwrap();
        d.dispatch(&a, ()).await.unwrap();
        d.dispatch(&b, ()).await.unwrap();
        // Both handlers must be inside `handle` at once to pass the barrier.
        tokio::time::timeout(Duration::from_secs(10), d.shutdown())
            .await
            .expect("two endpoints on different workers were not handled in parallel")
            .unwrap();
    }

    /// Waits for a permit per event and counts them.
    struct Gate {
        permits: Arc<tokio::sync::Semaphore>,
        count: usize,
    }

    impl Handler<usize> for Gate {
        async fn handle(&mut self, _: usize) {
            self.permits.acquire().await.unwrap().forget();
            self.count += 1;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_waits_and_loses_nothing() {
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let d = Arc::new(
            Dispatcher::start(
                DispatchConfig {
                    workers: 1,
                    queue_capacity: 2,
                },
                |_| Gate {
                    permits: permits.clone(),
                    count: 0,
                },
            )
            .unwrap(),
        );
        let k = key(0);
        // One in the handler, two queued: the fourth must wait.
        for i in 0..3 {
            d.dispatch(&k, i).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(d.queue_depths(), vec![2]);
        let blocked = tokio::time::timeout(Duration::from_millis(100), d.dispatch(&k, 3)).await;
        assert!(blocked.is_err(), "dispatch into a full queue did not wait");
        permits.add_permits(100);
        d.dispatch(&k, 3).await.unwrap();
        d.dispatch(&k, 4).await.unwrap();
        let d = Arc::into_inner(d).unwrap();
        let handlers = d.shutdown().await.unwrap();
        assert_eq!(handlers[0].count, 5);
    }
}
