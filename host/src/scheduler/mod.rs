//! The scheduler: decides what runs when, and runs it on a bounded pool.
//!
//! * Discovery plugins run when loaded, then every `execute_frequency`.
//! * Enrichment and polling plugins run once per matching resource per
//!   interval. Each (plugin, resource) gets a deterministic start offset
//!   within the interval (a hash of both names), so 10,000 devices on a
//!   60 s schedule are spread over the minute instead of all polled at its
//!   top; due times are aligned to the epoch, so they survive restarts.
//! * Cron schedules fire at their exact times (no offset).
//! * Runs go through [`WorkClaims`] (no overlap per job, over-polling guard)
//!   and a bounded pool. Each plugin also has its own cap, so a plugin
//!   whose runs hang until their deadline holds at most that many slots and
//!   the others keep their schedule.
//! * The plan is rebuilt whenever plugins or resources change.

pub mod claims;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore, watch};

use crate::coordination::{Coordinator, Lease, LeaseOutcome};
use crate::model::Resource;
use crate::plugin::manifest::Schedule;
use crate::plugin::{LoadedPlugin, PluginKind, PluginRegistry};
use crate::store::{Storage, logged};
pub use claims::{Claim, LocalClaims, WorkClaims};

pub use crate::coordination::JobKey;

/// A run the scheduler hands to its [`JobRunner`].
pub struct Job {
    pub key: JobKey,
    pub plugin: Arc<LoadedPlugin>,
    /// Shared with every other job for this resource (never copied per job).
    pub resource: Option<Arc<Resource>>,
    /// When the run was due.
    pub due: SystemTime,
    /// The right to run this window; the runner confirms it before
    /// accepting the run's output (fencing).
    pub lease: Arc<dyn Lease>,
}

/// Executes jobs (the pipeline implements it).
pub trait JobRunner: Send + Sync + 'static {
    fn run(&self, job: Job) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
    /// A job was not started (`reason`: `still_running`, `too_soon`,
    /// `leased_elsewhere`, `coordination_unavailable`).
    fn skipped(&self, job: &JobKey, reason: &'static str);
    /// These resources expired: drop any state kept for them.
    fn resources_expired(&self, ids: &[String]);
}

pub struct SchedulerSettings {
    pub max_concurrent_runs: usize,
    pub max_runs_per_plugin: usize,
    /// How often expired resources are swept and the plan refreshed even
    /// without a change notification.
    pub housekeeping: Duration,
    /// How long shutdown waits for runs in flight (each ends by its own
    /// deadline, so the site's deadline cap plus a grace is enough); runs
    /// still going after it are cancelled, counted and logged.
    pub shutdown_wait: Duration,
}

pub struct Scheduler {
    registry: Arc<PluginRegistry>,
    store: Arc<dyn Storage>,
    claims: Arc<dyn WorkClaims>,
    /// Which jobs are this agent's, and their leases.
    coordinator: Arc<dyn Coordinator>,
    runner: Arc<dyn JobRunner>,
    settings: SchedulerSettings,
    pool: Arc<Semaphore>,
    per_plugin: std::sync::Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    /// Notified when resources change (discovery found new ones): replan.
    changed: Arc<Notify>,
    resources: std::sync::atomic::AtomicUsize,
    jobs: std::sync::atomic::AtomicUsize,
    /// Live resources by discovery plugin, at the last plan rebuild.
    by_discovery: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Turns true when shutdown gives up on runs still in flight: their
    /// tasks drop the run (and with it the instance) at once.
    cancel: watch::Sender<bool>,
}

/// Gives a job's claim back however its task ends: normally, cancelled at
/// shutdown, or unwinding from a panic (a panic used to leave the job
/// "still running" forever, so it was never scheduled again).
struct ClaimGuard {
    claims: Arc<dyn WorkClaims>,
    key: JobKey,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.claims.release(&self.key);
    }
}

struct Planned {
    plugin: Arc<LoadedPlugin>,
    resource: Option<Arc<Resource>>,
    /// Due time in milliseconds since the epoch.
    next_due: u64,
    /// Heap entries carry this; a mismatch marks them stale.
    generation: u64,
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// FNV-1a: stable across runs and builds (unlike std's hasher).
fn stable_hash(parts: &[&str]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    hash
}

/// How soon after it appears a resource gets its first enrichment, at most.
/// An enrichment interval is often minutes to hours (Panoptes' examples use
/// 5 minutes to a day); a new device's first polls would carry no
/// enrichment (`<not set>` dimensions) for all that time. New enrichment
/// jobs are spread over this window instead of waiting for their slot.
pub const FIRST_ENRICHMENT_WITHIN: Duration = Duration::from_secs(30);

/// When a job that just entered the plan first runs: an enrichment soon
/// (spread by its key over [`FIRST_ENRICHMENT_WITHIN`], or its interval if
/// shorter), anything else at its first slot.
pub fn first_due(kind: PluginKind, schedule: &Schedule, key: &JobKey, now_ms: u64) -> u64 {
    let slot = next_due(schedule, key, now_ms);
    if kind != PluginKind::Enrichment {
        return slot;
    }
    let window = schedule.interval().min(FIRST_ENRICHMENT_WITHIN).as_millis() as u64;
    let spread =
        stable_hash(&["first", &key.plugin, key.resource.as_deref().unwrap_or("")]) % window.max(1);
    slot.min(now_ms + spread)
}

/// The due time after a run due at `due_ms`: the next slot, and for a fixed
/// interval at least one interval later (an early first enrichment must
/// not be followed by its regular slot seconds later).
pub fn following_due(schedule: &Schedule, key: &JobKey, due_ms: u64) -> u64 {
    let after = match schedule {
        Schedule::Every(interval) => due_ms + (interval.as_millis() as u64).max(1),
        Schedule::Cron { .. } => due_ms + 1,
    };
    next_due(schedule, key, after).max(due_ms + 1)
}

/// The first due time at or after `after_ms` for `key` on `schedule`.
pub fn next_due(schedule: &Schedule, key: &JobKey, after_ms: u64) -> u64 {
    match schedule {
        Schedule::Every(interval) => {
            let interval = (interval.as_millis() as u64).max(1);
            let offset =
                stable_hash(&[&key.plugin, key.resource.as_deref().unwrap_or("")]) % interval;
            // Smallest t >= after_ms with t = offset (mod interval).
            let base = after_ms.saturating_sub(offset);
            let slots = base.div_ceil(interval);
            slots * interval + offset
        }
        Schedule::Cron {
            schedule, timezone, ..
        } => {
            // Fires fall on whole seconds: the first at or after `after_ms`
            // is the first strictly after the last whole second before it.
            let before = (after_ms.saturating_sub(1) / 1000) as i64;
            chrono::DateTime::<chrono::Utc>::from_timestamp(before, 0)
                .map(|t| t.with_timezone(timezone))
                .and_then(|t| schedule.find_next_occurrence(&t, false).ok())
                .map(|next| next.timestamp_millis().max(0) as u64)
                // A schedule that never fires again: park it far away.
                .unwrap_or(u64::MAX / 2)
        }
    }
}

impl Scheduler {
    pub fn new(
        registry: Arc<PluginRegistry>,
        store: Arc<dyn Storage>,
        claims: Arc<dyn WorkClaims>,
        coordinator: Arc<dyn Coordinator>,
        runner: Arc<dyn JobRunner>,
        settings: SchedulerSettings,
        resources_changed: Arc<Notify>,
    ) -> Arc<Scheduler> {
        let pool = Arc::new(Semaphore::new(settings.max_concurrent_runs));
        Arc::new(Scheduler {
            registry,
            store,
            claims,
            coordinator,
            runner,
            settings,
            pool,
            per_plugin: std::sync::Mutex::new(HashMap::new()),
            changed: resources_changed,
            resources: std::sync::atomic::AtomicUsize::new(0),
            jobs: std::sync::atomic::AtomicUsize::new(0),
            by_discovery: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            cancel: watch::channel(false).0,
        })
    }

    /// Live resources at the last plan rebuild.
    pub fn resource_count(&self) -> usize {
        self.resources.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Jobs in the plan at the last rebuild.
    pub fn job_count(&self) -> usize {
        self.jobs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs executing right now.
    pub fn runs_in_flight(&self) -> usize {
        self.settings
            .max_concurrent_runs
            .saturating_sub(self.pool.available_permits())
    }

    /// Live resources by the discovery plugin that found them.
    pub fn resources_by_discovery(&self) -> std::collections::BTreeMap<String, u64> {
        self.by_discovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs until `shutdown` turns true, then waits for runs in flight
    /// (each ends by its deadline).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut plan: HashMap<JobKey, Planned> = HashMap::new();
        let mut heap: BinaryHeap<Reverse<(u64, u64, JobKey)>> = BinaryHeap::new();
        let mut generation = 0u64;
        let mut events = self.registry.subscribe();
        let mut housekeeping = tokio::time::interval(self.settings.housekeeping);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            let wait = match heap.peek() {
                Some(Reverse((due, _, _))) => Duration::from_millis(due.saturating_sub(now_ms())),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(wait) => self.dispatch_due(&mut plan, &mut heap, &mut generation),
                _ = self.changed.notified() => self.replan(&mut plan, &mut heap, &mut generation).await,
                event = events.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event {
                        break;
                    }
                    // A deleted discovery plugin's resources expire now.
                    if let Ok(crate::plugin::RegistryEvent::Unloaded { name, path }) = &event
                        && self.registry.get(name).is_none()
                    {
                        let expired = crate::store::expire_removed_plugin(self.store.as_ref(), name, path).await;
                        if !expired.is_empty() {
                            self.runner.resources_expired(&expired);
                        }
                    }
                    self.replan(&mut plan, &mut heap, &mut generation).await;
                }
                _ = housekeeping.tick() => {
                    self.expire_resources().await;
                    self.replan(&mut plan, &mut heap, &mut generation).await;
                }
            }
        }
        self.drain().await;
    }

    /// Stops starting runs and waits, at most `shutdown_wait`, for those in
    /// flight, then cancels what is left. Closing the semaphores first
    /// matters: they are fair, so a drain that queued for the whole pool
    /// waited behind jobs queued before it, which kept starting runs after
    /// shutdown was asked (`tests/tests/hostile_scheduling.rs`).
    async fn drain(&self) {
        self.pool.close();
        for slots in self
            .per_plugin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
        {
            slots.close();
        }
        let total = self.settings.max_concurrent_runs;
        let all_back = async {
            while self.pool.available_permits() < total {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(self.settings.shutdown_wait, all_back)
            .await
            .is_err()
        {
            let left = self.runs_in_flight();
            tracing::warn!(
                runs = left,
                waited = ?self.settings.shutdown_wait,
                "runs still in flight at the end of the shutdown wait: cancelled, their output is lost"
            );
            self.cancel.send_replace(true);
            // Cancelled tasks drop their permits as they unwind the run.
            let cancelled = async {
                while self.pool.available_permits() < total {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), cancelled).await;
        }
    }

    async fn expire_resources(&self) {
        let now = epoch_now();
        let expired = logged("expiring resources", self.store.expire_resources(now)).await;
        if let Some(expired) = expired.filter(|e| !e.is_empty()) {
            tracing::info!(count = expired.len(), "resources expired; no longer polled");
            self.runner.resources_expired(&expired);
        }
    }

    /// Rebuilds the plan from the loaded plugins and live resources.
    async fn replan(
        &self,
        plan: &mut HashMap<JobKey, Planned>,
        heap: &mut BinaryHeap<Reverse<(u64, u64, JobKey)>>,
        generation: &mut u64,
    ) {
        let now = epoch_now();
        // On a storage error keep the current plan rather than drop every job.
        let Some(resources) = logged("reading resources", self.store.live_resources(now)).await
        else {
            return;
        };
        self.resources
            .store(resources.len(), std::sync::atomic::Ordering::Relaxed);
        let mut by_discovery = std::collections::BTreeMap::new();
        for stored in &resources {
            *by_discovery
                .entry(stored.resource.creation_plugin.clone())
                .or_insert(0u64) += 1;
        }
        *self.by_discovery.lock().unwrap_or_else(|p| p.into_inner()) = by_discovery;
        // One record per resource, shared by every job that runs for it.
        let resources: Vec<Arc<Resource>> = resources
            .into_iter()
            .map(|stored| Arc::new(stored.resource))
            .collect();
        let plugins = self.registry.plugins();
        let now = now_ms();
        let mut desired: HashSet<JobKey> = HashSet::new();

        for plugin in &plugins {
            let manifest = plugin.manifest();
            let name: Arc<str> = manifest.name.as_str().into();
            let mut place = |key: JobKey, resource: Option<Arc<Resource>>, immediately: bool| {
                desired.insert(key.clone());
                match plan.get_mut(&key) {
                    // Same plugin build: keep its schedule, refresh the resource.
                    Some(planned) if Arc::ptr_eq(&planned.plugin, plugin) => {
                        planned.resource = resource
                    }
                    _ => {
                        let due = if immediately {
                            now
                        } else {
                            first_due(manifest.kind, &manifest.schedule, &key, now)
                        };
                        *generation += 1;
                        heap.push(Reverse((due, *generation, key.clone())));
                        plan.insert(
                            key,
                            Planned {
                                plugin: plugin.clone(),
                                resource,
                                next_due: due,
                                generation: *generation,
                            },
                        );
                    }
                }
            };
            match manifest.kind {
                // Discovery feeds everything else: run it as soon as it loads.
                PluginKind::Discovery => place(
                    JobKey {
                        plugin: name.clone(),
                        resource: None,
                    },
                    None,
                    true,
                ),
                PluginKind::Enrichment | PluginKind::Polling | PluginKind::Endpoints => {
                    for resource in &resources {
                        let matches = manifest
                            .resource_filter
                            .as_ref()
                            .is_none_or(|f| f.matches(resource.as_ref()));
                        if matches {
                            let key = JobKey {
                                plugin: name.clone(),
                                resource: Some(resource.id.as_str().into()),
                            };
                            place(key, Some(Arc::clone(resource)), false);
                        }
                    }
                }
                // Driven by endpoint events, not by the clock.
                PluginKind::Analysis => {}
            }
        }
        plan.retain(|key, _| desired.contains(key));
        self.jobs
            .store(plan.len(), std::sync::atomic::Ordering::Relaxed);
        self.claims.retain(&|key| desired.contains(key));
        // Heap entries of removed jobs are dropped lazily when popped; rebuild
        // when they dominate so the heap stays proportional to the plan.
        if heap.len() > plan.len() * 2 + 1024 {
            heap.retain(|Reverse((_, generation, key))| {
                plan.get(key).is_some_and(|p| p.generation == *generation)
            });
        }
    }

    fn dispatch_due(
        &self,
        plan: &mut HashMap<JobKey, Planned>,
        heap: &mut BinaryHeap<Reverse<(u64, u64, JobKey)>>,
        generation: &mut u64,
    ) {
        let now = now_ms();
        while let Some(Reverse((due, entry_generation, _))) = heap.peek() {
            if *due > now {
                break;
            }
            let (due, entry_generation) = (*due, *entry_generation);
            let Some(Reverse((_, _, key))) = heap.pop() else {
                break;
            };
            let Some(planned) = plan.get_mut(&key) else {
                continue;
            };
            if planned.generation != entry_generation {
                continue;
            }
            let schedule = &planned.plugin.manifest().schedule;
            let interval = schedule.interval().as_secs_f64();
            // Next window first, so a skipped run never stalls the job.
            let next = following_due(schedule, &key, due);
            *generation += 1;
            planned.next_due = next;
            planned.generation = *generation;
            heap.push(Reverse((next, *generation, key.clone())));

            // Another agent's job: it stays planned, so it is picked up
            // the moment ownership moves here.
            if !self.coordinator.owns(&key) {
                continue;
            }
            match self.claims.try_claim(&key, due as f64 / 1000.0, interval) {
                Claim::Granted => {}
                Claim::StillRunning => {
                    self.runner.skipped(&key, "still_running");
                    continue;
                }
                Claim::TooSoon => {
                    self.runner.skipped(&key, "too_soon");
                    continue;
                }
            }
            let (plugin, resource) = (planned.plugin.clone(), planned.resource.clone());
            let plugin_slots = self.plugin_slots(&key.plugin);
            let (pool, runner, coordinator) = (
                self.pool.clone(),
                self.runner.clone(),
                self.coordinator.clone(),
            );
            let claim = ClaimGuard {
                claims: self.claims.clone(),
                key: key.clone(),
            };
            let mut cancel = self.cancel.subscribe();
            tokio::spawn(async move {
                let _claim = claim;
                // The plugin's own cap first: a plugin whose runs all hang
                // queues here without holding pool slots. Closed
                // semaphores (shutdown) end the wait at once.
                let Ok(_plugin_slot) = plugin_slots.acquire_owned().await else {
                    return;
                };
                let Ok(_slot) = pool.acquire_owned().await else {
                    return;
                };
                let lease = match coordinator.lease(&key, due as f64 / 1000.0, interval).await {
                    LeaseOutcome::Granted(lease) => lease,
                    outcome => {
                        let reason = match outcome {
                            LeaseOutcome::TooSoon => "too_soon",
                            LeaseOutcome::Held => "leased_elsewhere",
                            _ => "coordination_unavailable",
                        };
                        runner.skipped(&key, reason);
                        return;
                    }
                };
                let job = Job {
                    key: key.clone(),
                    plugin,
                    resource,
                    due: UNIX_EPOCH + Duration::from_millis(due),
                    lease: lease.clone(),
                };
                tokio::select! {
                    () = runner.run(job) => {}
                    _ = cancel.wait_for(|cancelled| *cancelled) => return,
                }
                lease.release().await;
            });
        }
    }

    fn plugin_slots(&self, plugin: &Arc<str>) -> Arc<Semaphore> {
        let mut slots = self
            .per_plugin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots
            .entry(plugin.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_runs_per_plugin)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_schedules_fire_at_their_exact_times() {
        let schedule = Schedule::parse("*/5 * * * *").expect("crontab syntax");
        assert_eq!(schedule.interval(), Duration::from_secs(300));
        let key = JobKey::new("p", Some("r"));
        let after = 1_700_000_123_456;
        let due = next_due(&schedule, &key, after);
        assert!(due >= after && due < after + 300_000, "{due}");
        assert_eq!(due % 300_000, 0, "on the five-minute marks");
        assert_eq!(next_due(&schedule, &key, due + 1), due + 300_000);
        assert!(Schedule::parse("every tuesday").is_err());
        assert!(
            Schedule::parse("* * * * * *").is_ok_and(|s| s.interval() == Duration::from_secs(1))
        );
        assert!(Schedule::parse("*/2 * * * * *").is_ok());
    }

    /// The fires of `schedule` from `after_ms`, as UTC `(weekday, hh:mm)`.
    fn fires(schedule: &Schedule, mut after_ms: u64, n: usize) -> Vec<(String, String)> {
        let key = JobKey::new("p", None);
        let mut out = Vec::new();
        for _ in 0..n {
            let due = next_due(schedule, &key, after_ms);
            let t =
                chrono::DateTime::<chrono::Utc>::from_timestamp_millis(due as i64).expect("a time");
            out.push((t.format("%a").to_string(), t.format("%H:%M").to_string()));
            after_ms = due + 1;
        }
        out
    }

    #[test]
    fn new_resources_are_enriched_soon_then_on_schedule() {
        let every = Schedule::Every(Duration::from_secs(300));
        let now = 1_000_000_123;
        let mut firsts = Vec::new();
        for i in 0..200 {
            let key = JobKey::new("interface_enrichment", Some(&format!("sw{i}")));
            let first = first_due(PluginKind::Enrichment, &every, &key, now);
            assert!((now..now + 30_000).contains(&first), "{first}");
            firsts.push(first);
            // Then its regular slots, the first at least an interval later.
            let second = following_due(&every, &key, first);
            let slot = next_due(&every, &key, now);
            assert!(second >= first + 300_000, "{second} after {first}");
            assert_eq!((second - slot) % 300_000, 0, "back on its slot");
            assert_eq!(following_due(&every, &key, second), second + 300_000);
            // Polling keeps its slot.
            assert_eq!(first_due(PluginKind::Polling, &every, &key, now), slot);
        }
        // Spread over the window, not all at once.
        firsts.sort_unstable();
        firsts.dedup();
        assert!(firsts.len() > 150, "{} distinct first times", firsts.len());
        // An interval shorter than the window keeps the first run within it.
        let fast = Schedule::Every(Duration::from_secs(10));
        let key = JobKey::new("e", Some("r"));
        assert!(first_due(PluginKind::Enrichment, &fast, &key, now) < now + 10_000);
    }

    #[test]
    fn cron_weekdays_are_crontabs() {
        // Sunday 2026-01-04 12:00 UTC.
        let sunday_noon = 1_767_528_000_000;
        let weekdays = Schedule::parse("0 9 * * 1-5").expect("weekdays");
        let days: Vec<String> = fires(&weekdays, sunday_noon, 6)
            .into_iter()
            .map(|(day, time)| {
                assert_eq!(time, "09:00");
                day
            })
            .collect();
        assert_eq!(days, ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon"]);
        // 0 and 7 are both Sunday, as in crontab(5).
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN"] {
            let schedule = Schedule::parse(sunday).expect(sunday);
            assert_eq!(fires(&schedule, sunday_noon, 1)[0].0, "Sun", "{sunday}");
        }
        // Both day fields restricted: either one fires (Vixie cron).
        let either = Schedule::parse("0 0 1 * MON").expect("dom or dow");
        assert_eq!(fires(&either, sunday_noon, 1)[0].0, "Mon");
    }

    #[test]
    fn cron_runs_in_the_sites_time_zone_across_dst() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().expect("zone");
        let schedule = Schedule::parse_in("0 9 * * *", berlin).expect("daily");
        // 2026-01-04 (CET, UTC+1) and 2026-07-05 (CEST, UTC+2), 00:00 UTC.
        assert_eq!(fires(&schedule, 1_767_484_800_000, 1)[0].1, "08:00");
        assert_eq!(fires(&schedule, 1_783_209_600_000, 1)[0].1, "07:00");
        assert!(schedule.to_string().contains("Europe/Berlin"), "{schedule}");
    }

    #[test]
    fn due_times_are_aligned_spread_and_stable() {
        let schedule = Schedule::Every(Duration::from_secs(60));
        let mut offsets = Vec::new();
        for i in 0..600 {
            let key = JobKey::new("interface_polling", Some(&format!("device-{i}")));
            let due = next_due(&schedule, &key, 1_000_000);
            assert!((1_000_000..1_060_000).contains(&due));
            // The same job gets the same slot in every later interval.
            assert_eq!(next_due(&schedule, &key, due + 1), due + 60_000);
            assert_eq!(next_due(&schedule, &key, due), due);
            offsets.push(due % 60_000);
        }
        // Spread: each tenth of the minute gets a fair share of the 600 jobs.
        let mut buckets = [0usize; 10];
        for offset in offsets {
            buckets[(offset / 6_000) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (30..=90).contains(&n)),
            "{buckets:?}"
        );
    }
}

// --- `[scheduler]` in the site config --------------------------------------

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    pub(crate) max_runs_per_plugin: Option<toml::Spanned<u32>>,
    pub(crate) timezone: Option<toml::Spanned<String>>,
}

impl SchedulerSection {
    /// `timezone`: an IANA zone name (`Europe/Berlin`), default `UTC`.
    pub fn timezone(
        &self,
        at: vigil_core::At<'_>,
    ) -> Result<chrono_tz::Tz, vigil_core::LocatedError> {
        match &self.timezone {
            None => Ok(chrono_tz::Tz::UTC),
            Some(written) => written.get_ref().trim().parse().map_err(|_| {
                at(
                    written.span(),
                    format!(
                        "scheduler.timezone: unknown time zone {:?} (an IANA name such as \"UTC\" or \"Europe/Berlin\")",
                        written.get_ref()
                    ),
                )
            }),
        }
    }

    /// `max_runs_per_plugin` (default: half the run slots), at most
    /// `max_concurrent_runs`.
    pub fn resolve(
        &self,
        max_concurrent_runs: u32,
        at: vigil_core::At<'_>,
    ) -> Result<u32, vigil_core::LocatedError> {
        let mut max_runs_per_plugin = (max_concurrent_runs / 2).max(1);
        if let Some(limit) = &self.max_runs_per_plugin {
            let value = *limit.get_ref();
            if value == 0 || value > max_concurrent_runs {
                return Err(at(
                    limit.span(),
                    format!(
                        "scheduler.max_runs_per_plugin must be 1 to sandbox.max_concurrent_runs ({}), found {value}",
                        max_concurrent_runs
                    ),
                ));
            }
            max_runs_per_plugin = value;
        }

        Ok(max_runs_per_plugin)
    }
}
