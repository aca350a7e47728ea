//! The delivery loop every networked sink shares: batch from its
//! [`SinkBuffer`], send, and on a transient failure put the batch back and
//! retry with capped exponential backoff, while new groups keep arriving
//! in the buffer (and the oldest go once it is full). A sink that is down
//! never blocks polling or any other sink: each sink has its own buffer and
//! its own task.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::buffer::{SharedGroup, SinkBuffer, reason};

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
    /// How long a stopping sink keeps trying to deliver what it holds.
    pub shutdown_grace: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            batch_size: 5_000,
            flush_interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
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
    loop {
        let batch = buffer
            .next_batch(delivery.batch_size, delivery.flush_interval)
            .await;
        if buffer.is_closed() && shutdown_deadline.is_none() {
            shutdown_deadline = Some(tokio::time::Instant::now() + delivery.shutdown_grace);
        }
        if batch.is_empty() && buffer.is_closed() {
            break;
        }
        match writer.send(&batch).await {
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
                buffer.requeue(batch);
                let mut pause = jittered(backoff);
                if let Some(deadline) = shutdown_deadline {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        let lost = buffer.discard_all(reason::SHUTDOWN);
                        tracing::error!(sink = %name, groups = lost, "stopping with undeliverable groups; dropped");
                        break;
                    }
                    pause = pause.min(deadline - now);
                }
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(delivery.backoff_max);
            }
        }
    }
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
    use crate::model::{Datetime, MetricsGroup, Resource};
    use std::sync::Mutex;

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
            resource: Resource::named("r", "127.0.0.1"),
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
