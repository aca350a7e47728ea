//! Logging failing jobs by their transitions, not by their runs.
//!
//! A device that is down fails every run: with 1,000 unreachable devices
//! polled every minute, one line per failed run is 1.44 million lines a
//! day, which buries everything else in the journal. Instead a job
//! (plugin, resource) is logged when it starts failing, when its failure
//! changes (a timeout becomes an authentication failure), and when it
//! recovers, with how many runs failed and for how long; the runs in
//! between are logged at debug level only. Every run is still recorded in
//! the run history and counted in the health metrics.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] failing jobs are remembered.
//! An entry holds the scheduler's [`JobKey`] (two `Arc<str>` shared with
//! the plan, so a plugin's long resource ids are not copied) and the
//! outcome label: under 100 bytes, ~10 MB at the bound. Past it, new
//! failures are logged every time, as before, so nothing is hidden.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::scheduler::JobKey;

/// Failing jobs remembered at once.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
struct Failing {
    /// A run outcome label (`trap.panic`...): one of a fixed set.
    outcome: &'static str,
    since: f64,
    runs: u64,
}

/// What the log should say about one run's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The job started failing (or fails differently): log it.
    Failing,
    /// Failing again the same way: debug level only.
    StillFailing { runs: u64 },
    /// The job ran fine after `runs` failed runs over `seconds`.
    Recovered { runs: u64, seconds: f64 },
    /// Fine, and fine before: nothing to say.
    Fine,
}

/// Which jobs are failing, and since when.
#[derive(Debug, Default)]
pub struct FailureLog {
    failing: Mutex<HashMap<JobKey, Failing>>,
}

impl FailureLog {
    /// Records a run of job `key` at `now` that ended as `outcome` (`ok`
    /// or a failure label).
    pub fn observe(&self, key: &JobKey, outcome: &'static str, now: f64) -> Transition {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if outcome == "ok" {
            return match failing.remove(key) {
                Some(was) => Transition::Recovered {
                    runs: was.runs,
                    seconds: (now - was.since).max(0.0),
                },
                None => Transition::Fine,
            };
        }
        match failing.get_mut(key) {
            Some(was) if was.outcome == outcome => {
                was.runs += 1;
                Transition::StillFailing { runs: was.runs }
            }
            Some(was) => {
                *was = Failing {
                    outcome,
                    since: now,
                    runs: 1,
                };
                Transition::Failing
            }
            None => {
                if failing.len() < MAX_TRACKED {
                    failing.insert(
                        key.clone(),
                        Failing {
                            outcome,
                            since: now,
                            runs: 1,
                        },
                    );
                }
                Transition::Failing
            }
        }
    }

    /// Forgets jobs whose resource is gone (expired), so they neither
    /// count against the bound nor log a recovery that never comes.
    pub fn forget_resources(&self, ids: &[String]) {
        let gone: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.retain(|key, _| !key.resource.as_deref().is_some_and(|r| gone.contains(r)));
    }

    /// Jobs failing now.
    pub fn failing(&self) -> usize {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(plugin: &str, resource: &str) -> JobKey {
        JobKey::new(plugin, Some(resource))
    }

    #[test]
    fn a_down_device_is_logged_when_it_fails_changes_and_recovers() {
        let log = FailureLog::default();
        assert_eq!(log.observe(&job("if", "sw1"), "ok", 0.0), Transition::Fine);
        assert_eq!(
            log.observe(&job("if", "sw1"), "plugin_error", 60.0),
            Transition::Failing
        );
        for run in 2..=1440 {
            assert_eq!(
                log.observe(&job("if", "sw1"), "plugin_error", 60.0 * run as f64),
                Transition::StillFailing { runs: run }
            );
        }
        // Another job on the same device is its own story.
        assert_eq!(
            log.observe(&job("cpu", "sw1"), "plugin_error", 61.0),
            Transition::Failing
        );
        // A different failure is news.
        assert_eq!(
            log.observe(&job("if", "sw1"), "trap.deadline", 90_000.0),
            Transition::Failing
        );
        assert_eq!(
            log.observe(&job("if", "sw1"), "ok", 90_060.0),
            Transition::Recovered {
                runs: 1,
                seconds: 60.0
            }
        );
        assert_eq!(
            log.observe(&job("if", "sw1"), "ok", 90_120.0),
            Transition::Fine
        );
        assert_eq!(log.failing(), 1);
        log.forget_resources(&["sw1".to_owned()]);
        assert_eq!(log.failing(), 0);
    }

    #[test]
    fn past_the_bound_every_failure_is_logged() {
        let log = FailureLog::default();
        for i in 0..MAX_TRACKED {
            log.observe(&job("p", &format!("r{i}")), "timeout", 0.0);
        }
        assert_eq!(log.failing(), MAX_TRACKED);
        for _ in 0..3 {
            assert_eq!(
                log.observe(&job("p", "one-more"), "timeout", 1.0),
                Transition::Failing
            );
        }
        assert_eq!(log.failing(), MAX_TRACKED);
    }
}
