//! The delivery loop every networked sink shares: batch from its
//! [`SinkBuffer`], send, and on a transient failure put the batch back and
//! retry with capped exponential backoff, while new groups keep arriving
//! in the buffer (and the oldest go once it is full). A sink that is down
//! never blocks polling or any other sink: each sink has its own buffer and
//! its own task, and its CPU work (encoding, rendering) runs on tokio's
//! blocking pool, not on the runtime's workers.
//!
//! # Shutdown is bounded
//!
//! Once the buffer is closed, the sink has [`Delivery::shutdown_grace`]
//! (5 s by default, [`SHUTDOWN_GRACE`]; the `shutdown_grace` key of a sink's
//! section, 100 ms to 120 s) to deliver what it holds, counted
//! from the moment of the close, **including a send already in flight**:
//! a server that accepts connections and never answers (a request timeout
//! may be up to 300 s) does not stretch it. At the deadline the send in
//! flight is abandoned, and it and everything still buffered are counted as
//! dropped (`shutdown`) and logged in one line with the count. So
//! [`super::SinkSet::close`] returns within the grace (all sinks count it
//! from the same moment) plus one encoding step, whatever the servers do.
//! A healthy sink with a backlog delivers what it can in that time (the
//! bench delivers ~4,500 groups/s into InfluxDB over one connection, so
//! about 20,000 groups fit in 5 s); the rest is counted, not waited for.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::buffer::{SharedGroup, SinkBuffer, Taken, reason};
use vigil_core::batch::PluginName;

/// The default time a stopping sink keeps trying to deliver what it holds.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a send failed.
#[derive(Debug)]
pub enum SendError {
    /// Worth retrying: no connection, a timeout, 5xx, 429.
    Retry(String),
    /// The server refused this data for good (e.g. 400 malformed): retrying
    /// would block the sink forever, so the batch is dropped and counted.
    Rejected(String),
    /// Part of the batch was refused for good (the rest was delivered).
    PartlyRejected { rejected: usize, message: String },
}

/// The network half of a sink.
pub trait BatchWriter: Send + 'static {
    /// Delivers `batch` in order. Called with an empty batch on every idle
    /// flush interval, for work that is not data (e.g. deletions).
    fn send(&mut self, batch: &[SharedGroup])
    -> impl Future<Output = Result<(), SendError>> + Send;

    /// [`BatchWriter::send`], knowing that `plugins[i]` produced
    /// `batch[i]`; writers that budget per plugin override it.
    fn send_from(
        &mut self,
        batch: &[SharedGroup],
        plugins: &[PluginName],
    ) -> impl Future<Output = Result<(), SendError>> + Send {
        let _ = plugins;
        self.send(batch)
    }
}

/// Batching and retry settings of one sink.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    /// Groups per request.
    pub batch_size: usize,
    /// The longest a group waits for its batch to fill.
    pub flush_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a stopping sink keeps trying to deliver what it holds,
    /// from the close on (see the module doc).
    pub shutdown_grace: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            batch_size: 5_000,
            flush_interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// How a send ended.
enum Sent {
    Done(Result<(), SendError>),
    /// The shutdown deadline passed while it was in flight.
    OutOfTime,
}

/// Runs until the buffer is closed and drained (or the shutdown grace
/// period ends, dropping the rest as `shutdown`).
pub async fn deliver<W: BatchWriter>(
    name: String,
    buffer: Arc<SinkBuffer>,
    mut writer: W,
    delivery: Delivery,
) {
    let mut backoff = delivery.backoff_min;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut retries_in_outage = 0u64;
    let mut shutdown_deadline: Option<tokio::time::Instant> = None;
    let deadline_of = |deadline: &mut Option<tokio::time::Instant>| {
        *deadline.get_or_insert_with(|| tokio::time::Instant::now() + delivery.shutdown_grace)
    };
    loop {
        let batch = buffer
            .next_batch(delivery.batch_size, delivery.flush_interval)
            .await;
        if buffer.is_closed() {
            deadline_of(&mut shutdown_deadline);
        }
        if batch.is_empty() && buffer.is_closed() {
            break;
        }
        let sent = {
            let send = writer.send_from(&batch.groups, &batch.plugins);
            tokio::pin!(send);
            loop {
                match shutdown_deadline {
                    None => tokio::select! {
                        result = &mut send => break Sent::Done(result),
                        _ = buffer.closed() => {
                            deadline_of(&mut shutdown_deadline);
                        }
                    },
                    Some(deadline) => tokio::select! {
                        result = &mut send => break Sent::Done(result),
                        _ = tokio::time::sleep_until(deadline) => break Sent::OutOfTime,
                    },
                }
            }
        };
        let result = match sent {
            Sent::Done(result) => result,
            Sent::OutOfTime => {
                give_up(&name, &buffer, batch);
                break;
            }
        };
        match result {
            Ok(()) => {
                buffer.counters.delivered(batch.len() as u64);
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        sink = %name,
                        retries = retries_in_outage,
                        outage_s = since.elapsed().as_secs(),
                        "sink delivering again"
                    );
                }
                retries_in_outage = 0;
                backoff = delivery.backoff_min;
            }
            Err(SendError::Rejected(why)) => {
                tracing::warn!(sink = %name, groups = batch.len(), "server refused a batch; dropped: {why}");
                buffer
                    .counters
                    .dropped(reason::REJECTED, batch.len() as u64);
            }
            Err(SendError::PartlyRejected { rejected, message }) => {
                let rejected = rejected.min(batch.len());
                tracing::warn!(sink = %name, groups = rejected, "server refused part of a batch; dropped: {message}");
                buffer.counters.delivered((batch.len() - rejected) as u64);
                buffer.counters.dropped(reason::REJECTED, rejected as u64);
                backoff = delivery.backoff_min;
            }
            Err(SendError::Retry(why)) => {
                if failing_since.is_none() {
                    failing_since = Some(tokio::time::Instant::now());
                    tracing::warn!(sink = %name, buffered = buffer.len() + batch.len(), "sink cannot deliver, buffering and retrying: {why}");
                } else {
                    tracing::debug!(sink = %name, "retry failed: {why}");
                }
                retries_in_outage += 1;
                buffer.counters.retried();
                if let Some(deadline) = shutdown_deadline
                    && tokio::time::Instant::now() >= deadline
                {
                    give_up(&name, &buffer, batch);
                    break;
                }
                buffer.requeue(batch);
                let pause = jittered(backoff);
                // A close during the pause starts the grace; the pause never
                // outlasts it.
                let wake = tokio::time::Instant::now() + pause;
                let wake = match shutdown_deadline {
                    Some(deadline) => wake.min(deadline),
                    None => wake,
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = buffer.closed(), if shutdown_deadline.is_none() => {
                        let deadline = deadline_of(&mut shutdown_deadline);
                        tokio::time::sleep_until(wake.min(deadline)).await;
                    }
                }
                backoff = (backoff * 2).min(delivery.backoff_max);
            }
        }
    }
}

/// Counts `in_flight` and everything still buffered as lost at shutdown,
/// in one log line.
fn give_up(name: &str, buffer: &SinkBuffer, in_flight: Taken) {
    let in_flight = in_flight.len();
    buffer.counters.dropped(reason::SHUTDOWN, in_flight as u64);
    let lost = in_flight + buffer.discard_all(reason::SHUTDOWN);
    tracing::error!(
        sink = %name,
        groups = lost,
        reason = reason::SHUTDOWN,
        "sink stopping with {lost} undelivered metrics groups after its shutdown grace period; counted as dropped"
    );
}

/// 75% to 125% of `base`, so sinks of many agents do not retry in step.
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    base.mul_f64(0.75 + f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vigil_core::model::{Datetime, MetricsGroup, Resource};

    /// Fails while `down` is set; records what it delivered.
    struct Flaky {
        down: Arc<Mutex<bool>>,
        reject_type: Option<&'static str>,
        delivered: Arc<Mutex<Vec<u32>>>,
    }

    impl BatchWriter for Flaky {
        async fn send(&mut self, batch: &[SharedGroup]) -> Result<(), SendError> {
            if *self.down.lock().expect("lock") {
                return Err(SendError::Retry("connection refused".into()));
            }
            if let Some(bad) = self.reject_type
                && batch.iter().any(|g| g.group_type == bad)
            {
                return Err(SendError::Rejected("400 bad line".into()));
            }
            self.delivered
                .lock()
                .expect("lock")
                .extend(batch.iter().map(|g| g.interval_seconds));
            Ok(())
        }
    }

    fn group(kind: &str, n: u32) -> SharedGroup {
        Arc::new(MetricsGroup {
            group_type: kind.into(),
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

    fn fast() -> Delivery {
        Delivery {
            batch_size: 4,
            flush_interval: Duration::from_millis(5),
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            shutdown_grace: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn an_outage_within_the_bound_loses_nothing_and_keeps_order() {
        let buffer = SinkBuffer::new(100);
        let down = Arc::new(Mutex::new(true));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let writer = Flaky {
            down: down.clone(),
            reject_type: None,
            delivered: delivered.clone(),
        };
        let task = tokio::spawn(deliver("t".into(), buffer.clone(), writer, fast()));
        for n in 0..50 {
            buffer.push(&[group("g", n)]);
        }
        // Wait for failed attempts (not for a time): the data must stay.
        let waiting = tokio::time::Instant::now();
        while buffer.counters.snapshot("t", "k", 0, 0).retries < 3 {
            assert!(waiting.elapsed() < Duration::from_secs(10), "no retries");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(delivered.lock().expect("lock").is_empty());
        *down.lock().expect("lock") = false;
        buffer.close();
        task.await.expect("delivery task");
        assert_eq!(
            *delivered.lock().expect("lock"),
            (0..50).collect::<Vec<_>>()
        );
        assert_eq!(buffer.counters.dropped_total(), 0);
    }

    #[tokio::test]
    async fn past_the_bound_the_oldest_are_dropped_and_counted() {
        let buffer = SinkBuffer::new(10);
        let down = Arc::new(Mutex::new(true));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let writer = Flaky {
            down: down.clone(),
            reject_type: None,
            delivered: delivered.clone(),
        };
        let task = tokio::spawn(deliver("t".into(), buffer.clone(), writer, fast()));
        for n in 0..30 {
            buffer.push(&[group("g", n)]);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        *down.lock().expect("lock") = false;
        buffer.close();
        task.await.expect("delivery task");
        let got = delivered.lock().expect("lock").clone();
        // Every group is either delivered or counted as dropped, and what
        // survived is the newest, in order.
        assert_eq!(got.len() as u64 + buffer.counters.dropped_total(), 30);
        assert_eq!(got, (30 - got.len() as u32..30).collect::<Vec<_>>());
        assert!(got.len() <= 10 + 4, "bound is capacity plus one batch");
    }

    #[tokio::test]
    async fn a_refused_batch_is_dropped_not_retried_forever() {
        let buffer = SinkBuffer::new(100);
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let writer = Flaky {
            down: Arc::new(Mutex::new(false)),
            reject_type: Some("bad"),
            delivered: delivered.clone(),
        };
        let task = tokio::spawn(deliver("t".into(), buffer.clone(), writer, fast()));
        buffer.push(&[group("bad", 1)]);
        tokio::time::sleep(Duration::from_millis(30)).await;
        buffer.push(&[group("good", 2)]);
        buffer.close();
        task.await.expect("delivery task");
        assert_eq!(*delivered.lock().expect("lock"), vec![2]);
        let snapshot = buffer.counters.snapshot("t", "k", 0, 0);
        assert_eq!(snapshot.dropped.get(reason::REJECTED), Some(&1));
    }

    /// Never answers: a server that accepted the connection and went
    /// silent, with a request timeout far past the grace.
    struct Stuck {
        sends: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl BatchWriter for Stuck {
        async fn send(&mut self, _batch: &[SharedGroup]) -> Result<(), SendError> {
            self.sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok(())
        }
    }

    /// A close while a send hangs starts the grace; at its end the batch
    /// in flight and everything buffered are counted as `shutdown`, and
    /// the loop returns.
    #[tokio::test]
    async fn a_send_that_never_returns_does_not_stretch_the_grace() {
        let buffer = SinkBuffer::new(10_000);
        let sends = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = Stuck {
            sends: sends.clone(),
        };
        let task = tokio::spawn(deliver("t".into(), buffer.clone(), writer, fast()));
        let groups: Vec<SharedGroup> = (0..5_000).map(|n| group("g", n)).collect();
        buffer.push(&groups);
        // Wait for the first send to be in flight (not for a time).
        let waiting = tokio::time::Instant::now();
        while sends.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(waiting.elapsed() < Duration::from_secs(10), "no send");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        buffer.close();
        // A hang guard only: the grace is 200 ms.
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the loop returns after its grace")
            .expect("delivery task");
        let snapshot = buffer.counters.snapshot("t", "k", 0, 0);
        assert_eq!(snapshot.dropped.get(reason::SHUTDOWN), Some(&5_000));
        assert_eq!(snapshot.delivered, 0);
        assert_eq!(buffer.len(), 0);
        assert_eq!(sends.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_sink_still_down_at_shutdown_gives_up_after_the_grace_period() {
        let buffer = SinkBuffer::new(100);
        let writer = Flaky {
            down: Arc::new(Mutex::new(true)),
            reject_type: None,
            delivered: Arc::new(Mutex::new(Vec::new())),
        };
        buffer.push(&[group("g", 1), group("g", 2)]);
        buffer.close();
        deliver("t".into(), buffer.clone(), writer, fast()).await;
        let snapshot = buffer.counters.snapshot("t", "k", 0, 0);
        assert_eq!(snapshot.dropped.get(reason::SHUTDOWN), Some(&2));
    }
}
