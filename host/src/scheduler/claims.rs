//! Who may run a (plugin, resource) job now. The scheduler asks before every
//! run; the answer enforces two rules:
//!
//! * never two runs of the same (plugin, resource) at once;
//! * Panoptes' over-polling guard: no run for a window less than one
//!   interval after the previous run's window (a reload, a restart or a
//!   schedule change never polls a device twice in quick succession).
//!
//! [`LocalClaims`] is the single-node implementation; a distributed one
//! (locks with fencing, shared due times) implements the same trait.

use std::collections::HashMap;
use std::sync::Mutex;

use super::JobKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Go ahead; call [`WorkClaims::release`] when the run ends.
    Granted,
    /// The previous run of this job is still going.
    StillRunning,
    /// The job ran for a window less than one interval ago.
    TooSoon,
}

pub trait WorkClaims: Send + Sync + 'static {
    /// Claims `job` for the window starting at `due` (seconds since the
    /// epoch) on a schedule of `interval` seconds.
    fn try_claim(&self, job: &JobKey, due: f64, interval: f64) -> Claim;
    fn release(&self, job: &JobKey);
    /// Forgets jobs for which `keep` is false (removed plugins or resources).
    fn retain(&self, keep: &dyn Fn(&JobKey) -> bool);
}

#[derive(Debug, Default)]
struct State {
    running: bool,
    last_window: Option<f64>,
}

#[derive(Debug, Default)]
pub struct LocalClaims {
    jobs: Mutex<HashMap<JobKey, State>>,
}

/// Windows closer than this fraction of an interval count as the same one
/// (absorbs float rounding of due times).
const WINDOW_TOLERANCE: f64 = 0.001;

impl WorkClaims for LocalClaims {
    fn try_claim(&self, job: &JobKey, due: f64, interval: f64) -> Claim {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = jobs.entry(job.clone()).or_default();
        if state.running {
            return Claim::StillRunning;
        }
        if let Some(last) = state.last_window
            && due - last < interval * (1.0 - WINDOW_TOLERANCE)
        {
            return Claim::TooSoon;
        }
        state.running = true;
        state.last_window = Some(due);
        Claim::Granted
    }

    fn release(&self, job: &JobKey) {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(state) = jobs.get_mut(job) {
            state.running = false;
        }
    }

    fn retain(&self, keep: &dyn Fn(&JobKey) -> bool) {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        jobs.retain(|key, state| state.running || keep(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_overlap_and_no_over_polling() {
        let claims = LocalClaims::default();
        let job = JobKey::new("p", Some("r"));
        assert_eq!(claims.try_claim(&job, 100.0, 60.0), Claim::Granted);
        assert_eq!(claims.try_claim(&job, 160.0, 60.0), Claim::StillRunning);
        claims.release(&job);
        // A rescheduled window 30 s after the last one is too soon.
        assert_eq!(claims.try_claim(&job, 130.0, 60.0), Claim::TooSoon);
        assert_eq!(claims.try_claim(&job, 160.0, 60.0), Claim::Granted);
        // Other jobs are independent.
        assert_eq!(
            claims.try_claim(&JobKey::new("p", Some("s")), 160.0, 60.0),
            Claim::Granted
        );
    }
}
