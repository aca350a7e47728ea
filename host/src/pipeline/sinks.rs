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

/// Drains the bus into the sinks until every sender is gone.
pub async fn run_sinks(
    mut bus: mpsc::Receiver<Vec<MetricsGroup>>,
    json_lines: Option<PathBuf>,
    store: Arc<dyn Storage>,
    stats: Arc<SinkStats>,
) -> anyhow::Result<()> {
    let mut json: Option<Box<dyn Write + Send>> = match &json_lines {
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
    let mut latest: Vec<MetricsGroup> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            batch = bus.recv() => {
                let Some(batch) = batch else { break };
                stats.groups.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if let Some(out) = json.as_mut() {
                    for group in &batch {
                        if let Err(e) = write_json_line(group, out) {
                            stats.write_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::error!(error = %e, "writing JSON lines");
                        }
                    }
                }
                latest.extend(batch);
            }
            _ = tick.tick() => flush(&mut json, &mut latest, &store).await,
        }
    }
    flush(&mut json, &mut latest, &store).await;
    Ok(())
}

async fn flush(
    json: &mut Option<Box<dyn Write + Send>>,
    latest: &mut Vec<MetricsGroup>,
    store: &Arc<dyn Storage>,
) {
    if let Some(out) = json.as_mut()
        && let Err(e) = out.flush()
    {
        tracing::error!(error = %e, "flushing JSON lines");
    }
    if latest.is_empty() {
        return;
    }
    let groups = std::mem::take(latest);
    off_runtime(store, "storing latest values", move |store| {
        store.store_latest(&groups)
    })
    .await;
}
