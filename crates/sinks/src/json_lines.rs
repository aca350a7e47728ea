//! The two local sinks:
//!
//! * [`JsonLines`]: Panoptes' metrics group JSON (schema v0.2, the one
//!   encoder in [`vigil_core::panoptes`]), one group per line, to a file
//!   or stdout;
//! * [`LatestValues`]: the latest value of every series, kept in the store
//!   for `vigil metrics`.
//!
//! Both batch: writes are made durable by [`JsonLines::flush`] and
//! [`LatestValues::flush`], which the sink loop calls every second and at
//! shutdown, so a clean stop loses nothing that was accepted.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::buffer::{SharedGroup, SinkCounters, reason};
use crate::LatestStore;
use vigil_core::panoptes::write_json_line;

pub struct JsonLines {
    out: Box<dyn Write + Send>,
    counters: Arc<SinkCounters>,
    pending: u64,
}

impl JsonLines {
    /// Appends to `path` (`-` = stdout), creating its directory.
    pub fn open(path: &Path) -> anyhow::Result<JsonLines> {
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::LineWriter::new(std::io::stdout()))
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
            Box::new(std::io::BufWriter::with_capacity(1 << 20, file))
        };
        Ok(JsonLines {
            out,
            counters: Arc::default(),
            pending: 0,
        })
    }

    pub fn counters(&self) -> Arc<SinkCounters> {
        self.counters.clone()
    }

    pub fn accept(&mut self, batch: &[SharedGroup]) {
        self.counters.accepted(batch.len() as u64);
        for group in batch {
            match write_json_line(group, &mut self.out) {
                Ok(()) => self.pending += 1,
                Err(e) => {
                    self.counters.dropped(reason::WRITE_ERROR, 1);
                    tracing::error!(error = %e, "writing JSON lines");
                }
            }
        }
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        match self.out.flush() {
            Ok(()) => {
                self.counters.delivered(pending);
                Ok(())
            }
            Err(e) => {
                self.counters.dropped(reason::WRITE_ERROR, pending);
                Err(anyhow::anyhow!("flushing JSON lines: {e}"))
            }
        }
    }
}

pub struct LatestValues {
    store: Arc<dyn LatestStore>,
    pending: Vec<SharedGroup>,
    counters: Arc<SinkCounters>,
}

impl LatestValues {
    pub fn new(store: Arc<dyn LatestStore>) -> LatestValues {
        LatestValues {
            store,
            pending: Vec::new(),
            counters: Arc::default(),
        }
    }

    pub fn counters(&self) -> Arc<SinkCounters> {
        self.counters.clone()
    }

    pub fn accept(&mut self, batch: Vec<SharedGroup>) {
        self.counters.accepted(batch.len() as u64);
        self.pending.extend(batch);
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let groups = std::mem::take(&mut self.pending);
        let count = groups.len() as u64;
        match self.store.store_latest(&groups).await {
            Ok(()) => {
                self.counters.delivered(count);
                Ok(())
            }
            Err(e) => {
                self.counters.dropped(reason::WRITE_ERROR, count);
                Err(anyhow::anyhow!("storing latest values: {e}"))
            }
        }
    }
}
