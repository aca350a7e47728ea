//! Per-plugin run statistics: outcomes, skips and start lateness, for
//! `vigil status`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use crate::store::PluginStatus;

/// Lateness samples kept per plugin for the percentiles.
const LATENESS_SAMPLES: usize = 4096;

#[derive(Default)]
struct Counters {
    runs: u64,
    outcomes: BTreeMap<String, u64>,
    skipped: u64,
    last_run_at: Option<f64>,
    lateness_ms: VecDeque<f64>,
}

#[derive(Default)]
pub struct RunStats {
    plugins: Mutex<HashMap<String, Counters>>,
}

impl RunStats {
    pub fn record(&self, plugin: &str, outcome: &str, started_at: f64, lateness_ms: f64) {
        let mut plugins = self
            .plugins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counters = plugins.entry(plugin.to_owned()).or_default();
        counters.runs += 1;
        *counters.outcomes.entry(outcome.to_owned()).or_default() += 1;
        counters.last_run_at = Some(started_at);
        if counters.lateness_ms.len() == LATENESS_SAMPLES {
            counters.lateness_ms.pop_front();
        }
        counters.lateness_ms.push_back(lateness_ms.max(0.0));
    }

    pub fn skipped(&self, plugin: &str) {
        let mut plugins = self
            .plugins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        plugins.entry(plugin.to_owned()).or_default().skipped += 1;
    }

    /// Fills the counters of `status` (matched by name).
    pub fn fill(&self, status: &mut PluginStatus) {
        let plugins = self
            .plugins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(counters) = plugins.get(&status.name) else {
            return;
        };
        status.runs = counters.runs;
        status.outcomes = counters.outcomes.clone();
        status.skipped = counters.skipped;
        status.last_run_at = counters.last_run_at;
        let mut sorted: Vec<f64> = counters.lateness_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        status.lateness_p50_ms = percentile(&sorted, 0.50);
        status.lateness_p99_ms = percentile(&sorted, 0.99);
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
