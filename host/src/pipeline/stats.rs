//! Per-plugin run statistics: outcomes, skips, run durations, start
//! lateness, sandbox limit hits, fuel and memory. `vigil status` and the
//! health metrics on `/metrics` both read them ([`crate::health`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::PluginStatus;

/// Lateness samples kept per plugin for the percentiles.
const LATENESS_SAMPLES: usize = 4096;

/// Bucket bounds (seconds) of the duration and lateness histograms: from a
/// 1 ms poll to the longest deadline.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// A fixed-bucket histogram, as Prometheus exposes one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Cumulative counts per bound of [`SECONDS_BUCKETS`].
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, value: f64) {
        if self.buckets.len() != SECONDS_BUCKETS.len() {
            self.buckets = vec![0; SECONDS_BUCKETS.len()];
        }
        for (bound, count) in SECONDS_BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    /// `(le, cumulative count)` pairs.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        SECONDS_BUCKETS
            .iter()
            .copied()
            .zip(self.buckets.iter().copied().chain(std::iter::repeat(0)))
            .collect()
    }
}

/// What one finished run tells the statistics.
#[derive(Debug, Clone)]
pub struct RunObservation<'a> {
    pub plugin: &'a str,
    /// [`crate::sandbox::RunOutcome::label`] (or `fenced`).
    pub outcome: &'a str,
    pub started_at: f64,
    pub lateness_ms: f64,
    pub duration: Duration,
    pub fuel_consumed: u64,
    pub peak_memory: u64,
}

/// The sandbox limit an outcome label says was hit, if any.
pub fn limit_hit(outcome: &str) -> Option<&'static str> {
    Some(match outcome {
        "trap.deadline" => "deadline",
        "trap.out_of_fuel" => "fuel",
        "trap.memory_limit" => "memory",
        "trap.table_limit" => "table",
        "trap.stack_overflow" => "stack",
        "trap.host_call_quota" => "host_call_quota",
        "rejected.too_large" => "output_size",
        _ => return None,
    })
}

/// One plugin's numbers, as `/metrics` and `vigil status` show them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginRunStats {
    pub name: String,
    pub runs: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub skipped: u64,
    pub limit_hits: BTreeMap<String, u64>,
    pub duration_seconds: Histogram,
    pub lateness_seconds: Histogram,
    pub fuel_consumed: u64,
    /// Peak linear memory of the latest run.
    pub memory_peak_bytes: u64,
    pub last_run_at: Option<f64>,
}

#[derive(Default)]
struct Counters {
    stats: PluginRunStats,
    lateness_ms: VecDeque<f64>,
}

#[derive(Default)]
pub struct RunStats {
    plugins: Mutex<HashMap<String, Counters>>,
}

impl RunStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counters>> {
        self.plugins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record(&self, run: &RunObservation<'_>) {
        let mut plugins = self.lock();
        let counters = plugins.entry(run.plugin.to_owned()).or_default();
        let stats = &mut counters.stats;
        stats.runs += 1;
        *stats.outcomes.entry(run.outcome.to_owned()).or_default() += 1;
        if let Some(limit) = limit_hit(run.outcome) {
            *stats.limit_hits.entry(limit.to_owned()).or_default() += 1;
        }
        stats.last_run_at = Some(run.started_at);
        stats.duration_seconds.observe(run.duration.as_secs_f64());
        let lateness_ms = run.lateness_ms.max(0.0);
        stats.lateness_seconds.observe(lateness_ms / 1000.0);
        stats.fuel_consumed = stats.fuel_consumed.saturating_add(run.fuel_consumed);
        stats.memory_peak_bytes = run.peak_memory;
        if counters.lateness_ms.len() == LATENESS_SAMPLES {
            counters.lateness_ms.pop_front();
        }
        counters.lateness_ms.push_back(lateness_ms);
    }

    pub fn skipped(&self, plugin: &str) {
        self.lock()
            .entry(plugin.to_owned())
            .or_default()
            .stats
            .skipped += 1;
    }

    /// Every plugin's numbers, by name.
    pub fn snapshot(&self) -> Vec<PluginRunStats> {
        let plugins = self.lock();
        let mut all: Vec<PluginRunStats> = plugins
            .iter()
            .map(|(name, counters)| PluginRunStats {
                name: name.clone(),
                ..counters.stats.clone()
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Fills the counters of `status` (matched by name).
    pub fn fill(&self, status: &mut PluginStatus) {
        let plugins = self.lock();
        let Some(counters) = plugins.get(&status.name) else {
            return;
        };
        status.runs = counters.stats.runs;
        status.outcomes = counters.stats.outcomes.clone();
        status.skipped = counters.stats.skipped;
        status.last_run_at = counters.stats.last_run_at;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fill_histograms_and_limit_hits() {
        let stats = RunStats::default();
        for (outcome, ms) in [("ok", 3), ("trap.deadline", 1000), ("ok", 30)] {
            stats.record(&RunObservation {
                plugin: "p",
                outcome,
                started_at: 1.0,
                lateness_ms: 2.0,
                duration: Duration::from_millis(ms),
                fuel_consumed: 10,
                peak_memory: 65536,
            });
        }
        let all = stats.snapshot();
        let p = &all[0];
        assert_eq!(p.runs, 3);
        assert_eq!(p.outcomes.get("ok"), Some(&2));
        assert_eq!(p.limit_hits.get("deadline"), Some(&1));
        assert_eq!(p.fuel_consumed, 30);
        assert_eq!(p.duration_seconds.count, 3);
        let buckets = p.duration_seconds.cumulative();
        // 3 ms lands in le=0.005 and above; 30 ms in le=0.05; 1 s in le=1.
        assert_eq!(buckets[1], (0.0025, 0));
        assert_eq!(buckets[2], (0.005, 1));
        assert_eq!(buckets[5], (0.05, 2));
        assert_eq!(buckets[9], (1.0, 3));
        assert!((p.duration_seconds.sum - 1.033).abs() < 1e-9);
    }
}
