//! Sharing the work between agents.
//!
//! One host alone is the embedded default ([`SingleNode`]: it owns every
//! job and its local claims are all the coordination it needs). With
//! `[coordination] backend = "redis"` many agents run the same site and
//! split the (plugin, resource) jobs between them (`vigil_redis::RedisCoordinator`).
//!
//! # Why rendezvous ownership plus leases
//!
//! Two designs fit "every job exactly once per window, spread evenly":
//! a shared due-queue that agents pop from, or each agent computing which
//! jobs it owns and taking a lease before running one. vigil does the
//! second:
//!
//! * **Ownership** is rendezvous (highest-random-weight) hashing of the job
//!   key over the agents that are alive and past their join grace. Every
//!   agent computes it from the same membership list, so they agree without
//!   talking; load is even (each agent owns ~1/N of the jobs); and when an
//!   agent joins or leaves only ~1/N of the jobs move, so nothing
//!   stampedes. The schedule itself (due times) stays local and identical
//!   on every agent, so a job changing owners keeps its phase.
//! * **A lease** per (plugin, resource) in Redis, with a TTL, renewed while
//!   the run lasts, and a fencing token checked before the run's output is
//!   accepted, backs the ownership up during handovers: two agents that
//!   briefly disagree on membership can both try a job, and only one gets
//!   the lease. The lease script also keeps Panoptes' over-polling guard
//!   (no two windows of one job closer than one interval), so a job moving
//!   to a new owner is never run twice for the same window.
//! * **Join grace**: an agent counts as a member only once it has been
//!   registered for `join_grace`, so the first agent up does not take
//!   everything while the others are still starting (gNMIc's failure), and
//!   agents that start together split the work from the first window.
//!
//! A shared due-queue would need every agent to poll a central structure
//! for every run (a round trip per job per window even when idle) and a
//! separate mechanism for fairness; ownership costs one Redis round trip
//! per run (the lease) and one per heartbeat.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::time::Duration;

/// One unit of scheduled work: a plugin, and the resource it runs for
/// (none for discovery).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub plugin: Arc<str>,
    pub resource: Option<Arc<str>>,
}

impl JobKey {
    pub fn new(plugin: &str, resource: Option<&str>) -> JobKey {
        JobKey {
            plugin: plugin.into(),
            resource: resource.map(Into::into),
        }
    }
}

/// Coordination settings (`[coordination]` in the site config).
/// (Plain settings: they parse whether or not this build has Redis.)
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    pub url: String,
    pub site: String,
    /// How long a lease lives without renewal (peers use ~10 s).
    pub lease_ttl: Duration,
    /// How often a running job renews its lease (~half the TTL).
    pub renew_every: Duration,
    /// How often an agent says it is alive.
    pub heartbeat: Duration,
    /// Silence after which an agent is dead and its jobs move.
    pub member_timeout: Duration,
    /// How long a new agent waits, registered, before owning anything.
    pub join_grace: Duration,
}

impl RedisSettings {
    pub fn new(url: &str, site: &str) -> RedisSettings {
        RedisSettings {
            url: url.to_owned(),
            site: site.to_owned(),
            lease_ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            member_timeout: Duration::from_secs(5),
            join_grace: Duration::from_secs(3),
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What asking for a lease on a job gave.
pub enum LeaseOutcome {
    /// Run it; keep the lease until the run's output is accepted.
    Granted(Arc<dyn Lease>),
    /// Another agent holds the job's lease (it is running it).
    Held,
    /// The job ran for a window less than one interval ago.
    TooSoon,
    /// The coordination backend cannot be reached; the run is skipped.
    Unavailable(String),
}

/// The right to run one job for one window.
pub trait Lease: Send + Sync {
    /// The fencing token: strictly increasing per job across all agents.
    fn token(&self) -> u64;
    /// Whether the lease is still this agent's. Checked before the run's
    /// output is accepted: an agent that lost its lease (paused, cut off)
    /// must not publish what a newer holder may publish too.
    fn confirm(&self) -> BoxFuture<'_, bool>;
    /// Gives the lease back (only if still held by this agent).
    fn release(&self) -> BoxFuture<'_, ()>;
}

/// How jobs are shared between agents.
pub trait Coordinator: Send + Sync + 'static {
    /// Whether this agent should run `job`; cheap (no I/O).
    fn owns(&self, job: &JobKey) -> bool;
    /// Takes the lease for `job`'s window starting at `due` (seconds since
    /// the epoch) on a schedule of `interval` seconds.
    fn lease<'a>(&'a self, job: &'a JobKey, due: f64, interval: f64)
    -> BoxFuture<'a, LeaseOutcome>;
    /// This agent's id, for status and logs.
    fn agent_id(&self) -> &str;
    /// Leaves the group at shutdown, so the others take over at once
    /// rather than after the member timeout. Nothing to do alone.
    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The embedded default: one agent owns everything; leases are local
/// no-ops (the scheduler's local claims already prevent overlap).
#[derive(Debug, Default)]
pub struct SingleNode;

struct LocalLease;

impl Lease for LocalLease {
    fn token(&self) -> u64 {
        0
    }
    fn confirm(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

impl Coordinator for SingleNode {
    fn owns(&self, _job: &JobKey) -> bool {
        true
    }
    fn lease<'a>(
        &'a self,
        _job: &'a JobKey,
        _due: f64,
        _interval: f64,
    ) -> BoxFuture<'a, LeaseOutcome> {
        Box::pin(async { LeaseOutcome::Granted(Arc::new(LocalLease)) })
    }
    fn agent_id(&self) -> &str {
        "local"
    }
}

/// Rendezvous hashing: the member with the highest weight for `job` owns
/// it. FNV-1a over (member, job) keeps the choice stable across processes
/// and versions (std's hasher is randomly seeded).
pub fn rendezvous_owner<'m>(members: &'m [String], job: &JobKey) -> Option<&'m str> {
    members
        .iter()
        .max_by_key(|member| {
            weight(&[
                member.as_bytes(),
                job.plugin.as_bytes(),
                job.resource.as_deref().unwrap_or("").as_bytes(),
            ])
        })
        .map(String::as_str)
}

fn weight(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // Finalise (splitmix64) so similar keys spread over the whole range.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(n: usize) -> Vec<JobKey> {
        (0..n)
            .map(|i| JobKey::new("interface_polling", Some(&format!("device-{i}"))))
            .collect()
    }

    #[test]
    fn rendezvous_spreads_evenly_and_moves_little() {
        let three: Vec<String> = ["agent-a", "agent-b", "agent-c"].map(String::from).to_vec();
        let jobs = jobs(30_000);
        let mut counts = std::collections::HashMap::new();
        for job in &jobs {
            *counts
                .entry(rendezvous_owner(&three, job).expect("owner"))
                .or_insert(0usize) += 1;
        }
        for (agent, count) in &counts {
            let share = *count as f64 / jobs.len() as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.02, "{agent}: {share}");
        }
        // A fourth agent takes about a quarter, only from the others.
        let four: Vec<String> = ["agent-a", "agent-b", "agent-c", "agent-d"]
            .map(String::from)
            .to_vec();
        let moved = jobs
            .iter()
            .filter(|job| rendezvous_owner(&three, job) != rendezvous_owner(&four, job))
            .collect::<Vec<_>>();
        assert!(
            moved
                .iter()
                .all(|job| rendezvous_owner(&four, job) == Some("agent-d")),
            "jobs only move to the newcomer"
        );
        let share = moved.len() as f64 / jobs.len() as f64;
        assert!((share - 0.25).abs() < 0.02, "{share}");
        assert_eq!(rendezvous_owner(&[], &jobs[0]), None);
    }
}

// --- `[coordination]` in the site config -----------------------------------

/// How agents share the work.
#[derive(Debug, Clone, PartialEq)]
pub enum Coordination {
    /// This process is the only agent.
    Local,
    Redis(RedisSettings),
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationSection {
    backend: Option<toml::Spanned<String>>,
    url: Option<toml::Spanned<String>>,
    lease_ttl: Option<toml::Spanned<String>>,
    renew_every: Option<toml::Spanned<String>>,
    heartbeat: Option<toml::Spanned<String>>,
    member_timeout: Option<toml::Spanned<String>>,
    join_grace: Option<toml::Spanned<String>>,
}

impl CoordinationSection {
    /// `url`, which the cache also uses unless it names its own.
    pub fn url(&self) -> Option<&toml::Spanned<String>> {
        self.url.as_ref()
    }

    /// Checks the section for the agents of site `site`.
    pub fn resolve(
        &self,
        site: &str,
        at: vigil_core::At<'_>,
    ) -> Result<Coordination, vigil_core::LocatedError> {
        coordination(self, site, at)
    }
}

fn coordination(
    section: &CoordinationSection,
    site: &str,
    at: vigil_core::At<'_>,
) -> Result<Coordination, vigil_core::LocatedError> {
    if vigil_core::located::backend_name("coordination", &section.backend, &["local", "redis"], at)?
        != "redis"
    {
        return Ok(Coordination::Local);
    }
    let url =
        vigil_core::located::required("coordination", "url", &section.url, &section.backend, at)?;
    let mut settings = RedisSettings::new(&url, site);
    for (key, value, slot) in [
        ("lease_ttl", &section.lease_ttl, &mut settings.lease_ttl),
        (
            "renew_every",
            &section.renew_every,
            &mut settings.renew_every,
        ),
        ("heartbeat", &section.heartbeat, &mut settings.heartbeat),
        (
            "member_timeout",
            &section.member_timeout,
            &mut settings.member_timeout,
        ),
        ("join_grace", &section.join_grace, &mut settings.join_grace),
    ] {
        if let Some(value) = value {
            *slot = vigil_core::units::parse_duration(value.get_ref())
                .map_err(|e| at(value.span(), format!("coordination.{key}: {e}")))?;
        }
    }
    let span = section.backend.as_ref().map_or(0..0, toml::Spanned::span);
    if settings.renew_every >= settings.lease_ttl {
        return Err(at(
            span,
            "coordination.renew_every must be shorter than coordination.lease_ttl".to_owned(),
        ));
    }
    if settings.member_timeout <= settings.heartbeat {
        return Err(at(
            span,
            "coordination.member_timeout must be longer than coordination.heartbeat".to_owned(),
        ));
    }
    Ok(Coordination::Redis(settings))
}
