//! Agents sharing a site through Redis: membership by heartbeat, ownership
//! by rendezvous hashing, and per-job leases with fencing tokens (see the
//! parent module for why).
//!
//! Keys, all under the site's hash tag so a Redis Cluster keeps each
//! script's keys in one slot:
//!
//! * `vigil:{SITE}:agents:seen` / `:since`: sorted sets of agent ids by last
//!   heartbeat and by registration (Redis server time, so agents' clocks
//!   do not matter);
//! * `vigil:{SITE|PLUGIN|RESOURCE}:lease`: `AGENT#TOKEN` while a run holds
//!   the job, with a TTL renewed during the run;
//! * `...:window`: the due time of the job's last window (the over-polling
//!   guard); `...:fence`: the job's fencing-token counter.
//!
//! When Redis is unreachable nothing crashes: the last membership is kept,
//! leases are refused (`Unavailable`, the run is skipped and counted), and
//! the connection manager reconnects with backoff.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use vigil_coordination::RedisSettings;
use vigil_coordination::{BoxFuture, Coordinator, JobKey, Lease, LeaseOutcome, rendezvous_owner};

/// Lease counts, for status and benchmarks.
#[derive(Debug, Default)]
pub struct LeaseStats {
    pub granted: AtomicU64,
    pub held: AtomicU64,
    pub too_soon: AtomicU64,
    pub unavailable: AtomicU64,
    /// Leases found gone at renewal or confirmation.
    pub lost: AtomicU64,
}

const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
for _, id in ipairs(dead) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
";

const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local last = redis.call('GET', KEYS[2])
if last and (tonumber(ARGV[2]) - tonumber(last)) < tonumber(ARGV[3]) * 0.999 then return -2 end
local token = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], 604800000)
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. token, 'PX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
return token
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

struct Scripts {
    heartbeat: Script,
    acquire: Script,
    renew: Script,
    release: Script,
}

pub struct RedisCoordinator {
    settings: RedisSettings,
    agent_id: String,
    connection: ConnectionManager,
    /// Active members (past their join grace), sorted; replaced whole.
    members: RwLock<Arc<Vec<String>>>,
    scripts: Arc<Scripts>,
    pub stats: Arc<LeaseStats>,
    stopping: AtomicBool,
}

/// Opens a connection manager that reconnects by itself, with timeouts so
/// a dead server never hangs a caller.
pub async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).with_context(|| format!("redis URL {url:?}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client, config)
        .await
        .with_context(|| format!("connecting to redis at {url}"))
}

impl RedisCoordinator {
    /// Connects, registers this agent and starts its heartbeat.
    pub async fn start(settings: RedisSettings, agent_id: String) -> anyhow::Result<Arc<Self>> {
        let connection = connect(&settings.url).await?;
        let coordinator = Arc::new(RedisCoordinator {
            settings,
            agent_id,
            connection,
            members: RwLock::new(Arc::new(Vec::new())),
            scripts: Arc::new(Scripts {
                heartbeat: Script::new(HEARTBEAT),
                acquire: Script::new(ACQUIRE),
                renew: Script::new(RENEW),
                release: Script::new(RELEASE),
            }),
            stats: Arc::new(LeaseStats::default()),
            stopping: AtomicBool::new(false),
        });
        coordinator
            .beat()
            .await
            .with_context(|| format!("registering agent {} in redis", coordinator.agent_id))?;
        let weak = Arc::downgrade(&coordinator);
        let every = coordinator.settings.heartbeat;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(coordinator) = weak.upgrade() else {
                    break;
                };
                if coordinator.stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = coordinator.beat().await {
                    tracing::warn!(error = %e, "redis heartbeat failed; keeping the last membership");
                }
            }
        });
        Ok(coordinator)
    }

    fn key(&self, suffix: &str) -> String {
        format!("vigil:{{{}}}:{suffix}", self.settings.site)
    }

    fn job_keys(&self, job: &JobKey) -> [String; 3] {
        let tag = format!(
            "vigil:{{{}|{}|{}}}",
            self.settings.site,
            job.plugin,
            job.resource.as_deref().unwrap_or("")
        );
        [
            format!("{tag}:lease"),
            format!("{tag}:window"),
            format!("{tag}:fence"),
        ]
    }

    async fn beat(&self) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        let mut members: Vec<String> = self
            .scripts
            .heartbeat
            .key(self.key("agents:seen"))
            .key(self.key("agents:since"))
            .arg(&self.agent_id)
            .arg(self.settings.member_timeout.as_millis() as u64)
            .arg(self.settings.join_grace.as_millis() as u64)
            .invoke_async(&mut connection)
            .await?;
        members.sort();
        let changed = **self.members.read().unwrap_or_else(|p| p.into_inner()) != members;
        if changed {
            tracing::info!(agent = %self.agent_id, members = ?members, "agent membership changed");
            *self.members.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(members);
        }
        Ok(())
    }

    /// The active members as this agent last saw them.
    pub fn members(&self) -> Arc<Vec<String>> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Leaves the membership at once, so the others take over without
    /// waiting for the member timeout.
    pub async fn leave(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<()> = redis::pipe()
            .zrem(self.key("agents:seen"), &self.agent_id)
            .zrem(self.key("agents:since"), &self.agent_id)
            .query_async(&mut connection)
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not deregister from redis; peers will time this agent out");
        }
    }
}

impl Coordinator for RedisCoordinator {
    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(RedisCoordinator::leave(self))
    }

    fn owns(&self, job: &JobKey) -> bool {
        let members = self.members();
        rendezvous_owner(&members, job) == Some(self.agent_id.as_str())
    }

    fn lease<'a>(
        &'a self,
        job: &'a JobKey,
        due: f64,
        interval: f64,
    ) -> BoxFuture<'a, LeaseOutcome> {
        Box::pin(async move {
            let [lease_key, window_key, fence_key] = self.job_keys(job);
            let ttl_ms = self.settings.lease_ttl.as_millis() as u64;
            // The guard outlives a few windows; after that a returning job
            // simply runs.
            let window_ttl_ms = ((interval * 3.0 * 1000.0) as u64).max(60_000);
            let mut connection = self.connection.clone();
            let result: redis::RedisResult<i64> = self
                .scripts
                .acquire
                .key(&lease_key)
                .key(&window_key)
                .key(&fence_key)
                .arg(&self.agent_id)
                .arg(format!("{due:.3}"))
                .arg(format!("{interval:.3}"))
                .arg(ttl_ms)
                .arg(window_ttl_ms)
                .invoke_async(&mut connection)
                .await;
            match result {
                Ok(-1) => {
                    self.stats.held.fetch_add(1, Ordering::Relaxed);
                    LeaseOutcome::Held
                }
                Ok(-2) => {
                    self.stats.too_soon.fetch_add(1, Ordering::Relaxed);
                    LeaseOutcome::TooSoon
                }
                Ok(token) => {
                    self.stats.granted.fetch_add(1, Ordering::Relaxed);
                    let token = token.max(0) as u64;
                    LeaseOutcome::Granted(RedisLease::start(
                        self,
                        lease_key,
                        format!("{}#{token}", self.agent_id),
                        token,
                    ))
                }
                Err(e) => {
                    self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    LeaseOutcome::Unavailable(format!("redis: {e}"))
                }
            }
        })
    }

    fn agent_id(&self) -> &str {
        &self.agent_id
    }
}

struct RedisLease {
    connection: ConnectionManager,
    scripts: Arc<Scripts>,
    stats: Arc<LeaseStats>,
    key: String,
    value: String,
    token: u64,
    lost: Arc<AtomicBool>,
    /// Until when the lease is certainly ours, from the last renewal.
    valid_until: Arc<RwLock<Instant>>,
    renewal: tokio::task::JoinHandle<()>,
}

impl RedisLease {
    fn start(owner: &RedisCoordinator, key: String, value: String, token: u64) -> Arc<dyn Lease> {
        let ttl = owner.settings.lease_ttl;
        let lost = Arc::new(AtomicBool::new(false));
        let valid_until = Arc::new(RwLock::new(Instant::now() + ttl));
        let renewal = {
            let (mut connection, scripts, stats) = (
                owner.connection.clone(),
                owner.scripts.clone(),
                owner.stats.clone(),
            );
            let (key, value, lost, valid_until) = (
                key.clone(),
                value.clone(),
                lost.clone(),
                valid_until.clone(),
            );
            let every = owner.settings.renew_every;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let renewed_at = Instant::now();
                    let result: redis::RedisResult<i64> = scripts
                        .renew
                        .key(&key)
                        .arg(&value)
                        .arg(ttl.as_millis() as u64)
                        .invoke_async(&mut connection)
                        .await;
                    match result {
                        Ok(1) => {
                            *valid_until.write().unwrap_or_else(|p| p.into_inner()) =
                                renewed_at + ttl;
                        }
                        Ok(_) => {
                            stats.lost.fetch_add(1, Ordering::Relaxed);
                            lost.store(true, Ordering::Relaxed);
                            break;
                        }
                        // Unreachable: keep trying; `valid_until` runs out.
                        Err(e) => tracing::debug!(error = %e, "lease renewal failed"),
                    }
                }
            })
        };
        Arc::new(RedisLease {
            connection: owner.connection.clone(),
            scripts: owner.scripts.clone(),
            stats: owner.stats.clone(),
            key,
            value,
            token,
            lost,
            valid_until,
            renewal,
        })
    }
}

impl Lease for RedisLease {
    fn token(&self) -> u64 {
        self.token
    }

    fn confirm(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            if self.lost.load(Ordering::Relaxed) {
                return false;
            }
            let mut connection = self.connection.clone();
            let current: redis::RedisResult<Option<String>> = redis::cmd("GET")
                .arg(&self.key)
                .query_async(&mut connection)
                .await;
            match current {
                Ok(current) => {
                    let ours = current.as_deref() == Some(self.value.as_str());
                    if !ours {
                        self.stats.lost.fetch_add(1, Ordering::Relaxed);
                        self.lost.store(true, Ordering::Relaxed);
                    }
                    ours
                }
                // Redis cannot say; the lease is ours while its TTL, counted
                // from the last renewal, has not run out.
                Err(_) => {
                    Instant::now() < *self.valid_until.read().unwrap_or_else(|p| p.into_inner())
                }
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.renewal.abort();
            let mut connection = self.connection.clone();
            let result: redis::RedisResult<i64> = self
                .scripts
                .release
                .key(&self.key)
                .arg(&self.value)
                .invoke_async(&mut connection)
                .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "lease release failed; it expires by its TTL");
            }
        })
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}
