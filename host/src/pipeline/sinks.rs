//! The pipeline's last stage: consumers of the metrics bus.
//!
//! * JSON lines in Panoptes' schema v0.2, to a file or stdout;
//! * the latest value of every series, kept in the store for the CLI.
//!
//! Both batch: writes are flushed every second and when the bus closes, so
//! a clean shutdown loses nothing that was accepted.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::encode::write_json_line;
use crate::model::MetricsGroup;
use crate::store::{Storage, off_runtime};

/// Counts of what the sinks handled.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub groups: std::sync::atomic::AtomicU64,
    pub write_errors: std::sync::atomic::AtomicU64,
}

/// The sinks of one process: JSON lines and the latest-value store.
pub struct Sinks {
    json: Option<Box<dyn Write + Send>>,
    latest: Vec<MetricsGroup>,
    store: Arc<dyn Storage>,
    stats: Arc<SinkStats>,
}

impl Sinks {
    pub fn open(
        json_lines: Option<&PathBuf>,
        store: Arc<dyn Storage>,
        stats: Arc<SinkStats>,
    ) -> anyhow::Result<Sinks> {
        let json: Option<Box<dyn Write + Send>> = match json_lines {
            None => None,
            Some(path) if path.as_os_str() == "-" => {
                Some(Box::new(std::io::LineWriter::new(std::io::stdout())))
            }
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                Some(Box::new(std::io::BufWriter::with_capacity(1 << 20, file)))
            }
        };
        Ok(Sinks {
            json,
            latest: Vec::new(),
            store,
            stats,
        })
    }

    /// Takes a batch; it is durable after the next [`Sinks::flush`].
    pub fn accept(&mut self, batch: Vec<MetricsGroup>) {
        self.stats
            .groups
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(out) = self.json.as_mut() {
            for group in &batch {
                if let Err(e) = write_json_line(group, out) {
                    self.stats
                        .write_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(error = %e, "writing JSON lines");
                }
            }
        }
        self.latest.extend(batch);
    }

    /// Writes out what was accepted. An error means the last batches may
    /// not be durable (a consumer then must not commit them).
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(out) = self.json.as_mut() {
            out.flush()
                .map_err(|e| anyhow::anyhow!("flushing JSON lines: {e}"))?;
        }
        if self.latest.is_empty() {
            return Ok(());
        }
        let groups = std::mem::take(&mut self.latest);
        off_runtime(&self.store, "storing latest values", move |store| {
            store.store_latest(&groups)
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("storing latest values failed (see the log)"))
    }
}

/// Drains the bus into the sinks until every sender is gone.
pub async fn run_sinks(
    mut bus: mpsc::Receiver<Vec<MetricsGroup>>,
    json_lines: Option<PathBuf>,
    store: Arc<dyn Storage>,
    stats: Arc<SinkStats>,
) -> anyhow::Result<()> {
    let mut sinks = Sinks::open(json_lines.as_ref(), store, stats)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            batch = bus.recv() => {
                let Some(batch) = batch else { break };
                sinks.accept(batch);
            }
            _ = tick.tick() => {
                if let Err(e) = sinks.flush().await {
                    tracing::error!("{e:#}");
                }
            }
        }
    }
    sinks.flush().await
}
