//! State that agents sharing a site keep in Redis, so any agent can run any
//! job and an agent restart loses nothing: the resource registry (with
//! TTLs), the enrichment cache and the counter state of rate transforms.
//! (The over-polling guard lives with the leases, in [`crate::coordinator`].)
//!
//! Every value is JSON under the site's hash tag. When Redis is
//! unreachable, callers fall back to their local copy and say so in the
//! log; nothing blocks longer than the connection's 2 s response timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use futures_util::future::BoxFuture;
use vigil_core::kv::{KvBackend, KvError, KvFailure};
use vigil_core::model::{Datetime, EnrichmentGroup, EnrichmentSet, MetricsGroup, Resource};
use vigil_enrichment::{
    Admitted, BackendError, CachedEnrichment, EnrichmentLimits, EnrichmentRefusal, EnrichmentStore,
    EnrichmentVerdicts,
};
use vigil_store::{
    HostStatus, Refusal, ResourcePolicy, RunQuery, RunRecord, SeriesQuery, SeriesValue, Storage,
    StoreError, StoreResult, StoredResource, UpsertSummary, prepare_batch,
};
use vigil_transform::RateState;
use vigil_transform::rate::CounterSample;

fn io_error(e: redis::RedisError) -> StoreError {
    StoreError::Io(std::io::Error::other(format!("redis: {e}")))
}

/// One blocking Redis connection (for callers already off the async
/// runtime: storage calls and plugin key/value), opened on first use with
/// 2 s timeouts and reopened once after a dropped connection.
struct Reconnecting {
    client: redis::Client,
    connection: Mutex<Option<redis::Connection>>,
}

impl Reconnecting {
    fn open(url: &str) -> redis::RedisResult<Reconnecting> {
        Ok(Reconnecting {
            client: redis::Client::open(url)?,
            connection: Mutex::new(None),
        })
    }

    /// Runs `call` on the connection, reconnecting once after a failure.
    fn call<T>(
        &self,
        call: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let mut slot = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        for _attempt in 0..2 {
            let connection = match slot.as_mut() {
                Some(connection) => connection,
                None => {
                    let connection = self
                        .client
                        .get_connection_with_timeout(Duration::from_secs(2))?;
                    connection.set_read_timeout(Some(Duration::from_secs(2)))?;
                    connection.set_write_timeout(Some(Duration::from_secs(2)))?;
                    slot.insert(connection)
                }
            };
            match call(connection) {
                Ok(value) => return Ok(value),
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    *slot = None;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from(std::io::Error::other("redis: reconnect failed"))
        }))
    }
}

/// Resources as every agent of the site sees them. Everything else (run
/// history, latest values, status) stays in this agent's own store.
///
/// Keys: `vigil:{SITE}:resources` (hash, id to JSON record),
/// `...:resources:expiry` (sorted set, id by expiry), `...:resources:owner`
/// (hash, id to owning plugin) and `...:resources:owned:PLUGIN` (sorted
/// set of the plugin's ids by expiry, so its budget is one `ZCOUNT`).
/// Ownership, the budget and the writes are decided in one Lua script per
/// 1,000 resources, so two agents (or two plugins) racing for one id
/// cannot both win: the script re-checks the owner and expiry it reads
/// against what it writes, atomically.
pub struct RedisResources {
    inner: Arc<dyn Storage>,
    connection: ConnectionManager,
    records: String,
    expiry: String,
    owners: String,
    /// `owned` keys are this plus the plugin name.
    owned_prefix: String,
}

/// Resources per upsert script call: bounds one script's run time (and so
/// how long it holds Redis) to a few milliseconds.
const SCRIPT_BATCH: usize = 1000;

/// KEYS: records, expiry, owners, owned:PLUGIN. ARGV: plugin, now, budget,
/// owned prefix, then (id, expires_at, JSON) per resource. Returns one
/// entry per resource: `A` added, `R` refreshed, `B` over budget, or `O`
/// followed by the owner that keeps it.
const CLAIM: &str = r"
local plugin, now, budget, prefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local owned = redis.call('ZCOUNT', KEYS[4], '(' .. ARGV[2], '+inf')
local out = {}
for i = 5, #ARGV, 3 do
  local id, expires, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local owner = redis.call('HGET', KEYS[3], id)
  local at = redis.call('ZSCORE', KEYS[2], id)
  local live = at and tonumber(at) > now
  local verdict
  if live and owner and owner ~= plugin then
    verdict = 'O' .. owner
  elseif live and owner == plugin then
    verdict = 'R'
  elseif owned >= budget then
    verdict = 'B'
  else
    if owner and owner ~= plugin then redis.call('ZREM', prefix .. owner, id) end
    owned = owned + 1
    verdict = 'A'
  end
  if verdict == 'R' or verdict == 'A' then
    redis.call('HSET', KEYS[1], id, json)
    redis.call('HSET', KEYS[3], id, plugin)
    redis.call('ZADD', KEYS[2], expires, id)
    redis.call('ZADD', KEYS[4], expires, id)
  end
  table.insert(out, verdict)
end
return out";

/// KEYS: records, expiry, owners. ARGV: now, owned prefix, then ids.
/// Removes the ids still expired at `now`; returns them.
const EXPIRE: &str = r"
local gone = {}
local now = tonumber(ARGV[1])
for i = 3, #ARGV do
  local id = ARGV[i]
  local at = redis.call('ZSCORE', KEYS[2], id)
  if at and tonumber(at) <= now then
    local owner = redis.call('HGET', KEYS[3], id)
    if owner then redis.call('ZREM', ARGV[2] .. owner, id) end
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[3], id)
    table.insert(gone, id)
  end
end
return gone";

/// KEYS: expiry, owners, owned:PLUGIN. ARGV: plugin, now. Moves the
/// expiry of every live resource the plugin owns to `now`.
const RETIRE: &str = r"
local now = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[2], '+inf')
for _, id in ipairs(ids) do
  if redis.call('HGET', KEYS[2], id) == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', now, id)
  end
  redis.call('ZADD', KEYS[3], 'XX', now, id)
end
return #ids";

#[derive(Serialize, Deserialize)]
struct ResourceRecord {
    id: String,
    site: String,
    endpoint: String,
    class: String,
    subclass: String,
    #[serde(rename = "type")]
    type_: String,
    creation_plugin: String,
    creation_seconds: u64,
    creation_nanoseconds: u32,
    ttl_seconds: u64,
    metadata: Vec<(String, String)>,
    discovered_by: String,
    first_seen: f64,
    last_seen: f64,
    expires_at: f64,
}

impl ResourceRecord {
    fn from_stored(stored: &StoredResource) -> ResourceRecord {
        let r = &stored.resource;
        ResourceRecord {
            id: r.id.clone(),
            site: r.site.clone(),
            endpoint: r.endpoint.clone(),
            class: r.class.clone(),
            subclass: r.subclass.clone(),
            type_: r.type_.clone(),
            creation_plugin: r.creation_plugin.clone(),
            creation_seconds: r.creation_timestamp.seconds,
            creation_nanoseconds: r.creation_timestamp.nanoseconds,
            ttl_seconds: r.ttl_seconds,
            metadata: r.metadata.clone(),
            discovered_by: stored.discovered_by.clone(),
            first_seen: stored.first_seen,
            last_seen: stored.last_seen,
            expires_at: stored.expires_at,
        }
    }

    fn into_stored(self) -> StoredResource {
        StoredResource {
            resource: Resource {
                id: self.id,
                site: self.site,
                endpoint: self.endpoint,
                class: self.class,
                subclass: self.subclass,
                type_: self.type_,
                creation_plugin: self.creation_plugin,
                creation_timestamp: Datetime {
                    seconds: self.creation_seconds,
                    nanoseconds: self.creation_nanoseconds,
                },
                ttl_seconds: self.ttl_seconds,
                metadata: self.metadata,
            },
            discovered_by: self.discovered_by,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            expires_at: self.expires_at,
        }
    }
}

impl RedisResources {
    /// Resources in Redis through `connection` (see
    /// [`super::redis::connect`]: 2 s timeouts, reconnects on its own),
    /// the rest in `inner`.
    pub fn new(
        inner: Arc<dyn Storage>,
        connection: ConnectionManager,
        site: &str,
    ) -> RedisResources {
        RedisResources {
            inner,
            connection,
            records: format!("vigil:{{{site}}}:resources"),
            expiry: format!("vigil:{{{site}}}:resources:expiry"),
            owners: format!("vigil:{{{site}}}:resources:owner"),
            owned_prefix: format!("vigil:{{{site}}}:resources:owned:"),
        }
    }

    /// A handle on the shared connection (cheap: the manager multiplexes).
    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    async fn records(&self, ids: &[String]) -> StoreResult<Vec<StoredResource>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.records)
            .arg(ids)
            .query_async(&mut self.connection())
            .await
            .map_err(io_error)?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_str::<ResourceRecord>(&json).ok())
            .map(ResourceRecord::into_stored)
            .collect())
    }
}

#[async_trait::async_trait]
impl Storage for RedisResources {
    async fn upsert_resources(
        &self,
        plugin: &str,
        resources: &[Resource],
        policy: &ResourcePolicy,
        now: f64,
    ) -> StoreResult<UpsertSummary> {
        let mut summary = UpsertSummary::default();
        let batch = prepare_batch(plugin, resources, policy, now, &mut summary);
        if batch.is_empty() {
            return Ok(summary);
        }
        let script = redis::Script::new(CLAIM);
        let owned_key = format!("{}{plugin}", self.owned_prefix);
        for chunk in batch.chunks(SCRIPT_BATCH) {
            let ids: Vec<String> = chunk.iter().map(|(r, _)| r.id.clone()).collect();
            // What a refresh keeps (first sight, creation time) comes from
            // the record; the script decides whether it is one.
            let known: BTreeMap<String, StoredResource> = self
                .records(&ids)
                .await?
                .into_iter()
                .map(|s| (s.resource.id.clone(), s))
                .collect();
            let mut invocation = script.prepare_invoke();
            invocation
                .key(&self.records)
                .key(&self.expiry)
                .key(&self.owners)
                .key(&owned_key)
                .arg(plugin)
                .arg(now)
                .arg(policy.max_resources)
                .arg(&self.owned_prefix);
            for (r, ttl) in chunk {
                let mut stored = StoredResource {
                    resource: r.clone(),
                    discovered_by: plugin.to_owned(),
                    first_seen: now,
                    last_seen: now,
                    expires_at: now + ttl,
                };
                if let Some(existing) = known
                    .get(&r.id)
                    .filter(|e| e.discovered_by == plugin && e.expires_at > now)
                {
                    stored.first_seen = existing.first_seen;
                    stored.resource.creation_timestamp = existing.resource.creation_timestamp;
                }
                let json = serde_json::to_string(&ResourceRecord::from_stored(&stored))?;
                invocation.arg(&r.id).arg(now + ttl).arg(json);
            }
            let verdicts: Vec<String> = invocation
                .invoke_async(&mut self.connection())
                .await
                .map_err(io_error)?;
            for ((r, _), verdict) in chunk.iter().zip(verdicts) {
                match verdict.as_str() {
                    "A" => summary.added += 1,
                    "R" => summary.refreshed += 1,
                    "B" => summary.refuse(Refusal::Budget {
                        id: r.id.clone(),
                        limit: policy.max_resources,
                    }),
                    other => summary.refuse(Refusal::Owned {
                        id: r.id.clone(),
                        owner: other.strip_prefix('O').unwrap_or(other).to_owned(),
                    }),
                }
            }
        }
        Ok(summary)
    }

    async fn expire_plugin_resources(&self, plugin: &str, now: f64) -> StoreResult<Vec<String>> {
        let script = redis::Script::new(RETIRE);
        let owned_key = format!("{}{plugin}", self.owned_prefix);
        let _: i64 = script
            .key(&self.expiry)
            .key(&self.owners)
            .key(&owned_key)
            .arg(plugin)
            .arg(now)
            .invoke_async(&mut self.connection())
            .await
            .map_err(io_error)?;
        self.expire_resources(now).await
    }

    async fn live_resources(&self, now: f64) -> StoreResult<Vec<StoredResource>> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.expiry)
            .arg(format!("({now}"))
            .arg("+inf")
            .query_async(&mut self.connection())
            .await
            .map_err(io_error)?;
        let mut live = self.records(&ids).await?;
        live.sort_by(|a, b| a.resource.id.cmp(&b.resource.id));
        Ok(live)
    }

    async fn expire_resources(&self, now: f64) -> StoreResult<Vec<String>> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.expiry)
            .arg("-inf")
            .arg(now)
            .query_async(&mut self.connection())
            .await
            .map_err(io_error)?;
        if ids.is_empty() {
            return Ok(ids);
        }
        // Another agent may have expired (or refreshed) them meanwhile:
        // remove only what is still expired, atomically.
        let script = redis::Script::new(EXPIRE);
        let mut gone = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCRIPT_BATCH) {
            let removed: Vec<String> = script
                .key(&self.records)
                .key(&self.expiry)
                .key(&self.owners)
                .arg(now)
                .arg(&self.owned_prefix)
                .arg(chunk)
                .invoke_async(&mut self.connection())
                .await
                .map_err(io_error)?;
            gone.extend(removed);
        }
        Ok(gone)
    }

    async fn record_runs(&self, runs: &[RunRecord]) -> StoreResult<()> {
        self.inner.record_runs(runs).await
    }
    async fn query_runs(&self, query: &RunQuery) -> StoreResult<Vec<RunRecord>> {
        self.inner.query_runs(query).await
    }
    async fn store_latest(&self, groups: &[std::sync::Arc<MetricsGroup>]) -> StoreResult<()> {
        self.inner.store_latest(groups).await
    }
    async fn query_latest(&self, query: &SeriesQuery) -> StoreResult<Vec<SeriesValue>> {
        self.inner.query_latest(query).await
    }
    async fn put_status(&self, status: &HostStatus) -> StoreResult<()> {
        self.inner.put_status(status).await
    }
    async fn statuses(&self) -> StoreResult<Vec<HostStatus>> {
        self.inner.statuses().await
    }
    async fn mirror_enrichments(
        &self,
        held: &[CachedEnrichment],
        removed: &[(String, String)],
        now: f64,
    ) -> StoreResult<()> {
        self.inner.mirror_enrichments(held, removed, now).await
    }
    async fn mirrored_enrichments(
        &self,
        resource_id: Option<&str>,
        namespace: Option<&str>,
        now: f64,
    ) -> StoreResult<Vec<CachedEnrichment>> {
        self.inner
            .mirrored_enrichments(resource_id, namespace, now)
            .await
    }
}

/// The enrichment cache in Redis, under the same rules as the local one
/// (see [`crate::pipeline::enrichment_cache`]), decided atomically in one
/// script per write.
///
/// Keys, under `vigil:{SITE}:enrichment`: `:g:NS|RESOURCE` (the group's
/// JSON, expiring with its TTL; a namespace holds no `|`), `:owner` (hash,
/// namespace to owning plugin), `:count` (hash, namespace to live
/// entries: at 0 the namespace is free), `:r:RESOURCE` (sorted set of the
/// resource's namespaces by expiry), `:index` (sorted set of every entry
/// by expiry: the purge and eviction order), `:size` (hash, entry to bytes)
/// and `:bytes` (the total).
#[derive(Clone)]
pub struct RedisEnrichments {
    connection: ConnectionManager,
    prefix: String,
    script: Arc<redis::Script>,
}

#[derive(Serialize, Deserialize)]
struct GroupRecord {
    namespace: String,
    ttl_seconds: u64,
    sets: Vec<(String, Vec<(String, String)>)>,
}

impl From<GroupRecord> for EnrichmentGroup {
    fn from(record: GroupRecord) -> EnrichmentGroup {
        EnrichmentGroup {
            namespace: record.namespace,
            ttl_seconds: record.ttl_seconds,
            sets: record
                .sets
                .into_iter()
                .map(|(key, values)| EnrichmentSet { key, values })
                .collect(),
        }
    }
}

/// KEYS: owner, count, index, size, bytes, r:RESOURCE. ARGV: plugin, now,
/// max namespaces per resource, max entries, max bytes, key prefix,
/// resource, then (namespace, ttl ms, expires at, bytes, JSON) per group.
/// Returns one verdict per group (`S` stored, `N` past the namespace
/// bound, `O` followed by the owner), then the eviction count.
const ENRICH: &str = r"
local plugin, now = ARGV[1], tonumber(ARGV[2])
local max_ns, max_entries, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local P, resource = ARGV[6], ARGV[7]
local function forget(member)
  local bar = string.find(member, '|', 1, true)
  if not bar then
    redis.call('ZREM', KEYS[3], member)
    return
  end
  local ns = string.sub(member, 1, bar - 1)
  redis.call('DEL', P .. ':g:' .. member)
  redis.call('ZREM', P .. ':r:' .. string.sub(member, bar + 1), ns)
  redis.call('ZREM', KEYS[3], member)
  local size = tonumber(redis.call('HGET', KEYS[4], member) or '0') or 0
  redis.call('HDEL', KEYS[4], member)
  redis.call('DECRBY', KEYS[5], size)
  if redis.call('HINCRBY', KEYS[2], ns, -1) <= 0 then
    redis.call('HDEL', KEYS[2], ns)
    redis.call('HDEL', KEYS[1], ns)
  end
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)) do
  forget(member)
end
local out = {}
local evicted = 0
for i = 8, #ARGV, 5 do
  local ns, ttl_ms, expires, size, json = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local member = ns .. '|' .. resource
  local owner = redis.call('HGET', KEYS[1], ns)
  if owner and owner ~= plugin then
    table.insert(out, 'O' .. owner)
  else
    local replacing = redis.call('ZSCORE', KEYS[3], member)
    if replacing then forget(member) end
    if not replacing and redis.call('ZCARD', KEYS[6]) >= max_ns then
      table.insert(out, 'N')
    else
      redis.call('SET', P .. ':g:' .. member, json, 'PX', ttl_ms)
      redis.call('HSET', KEYS[1], ns, plugin)
      redis.call('HINCRBY', KEYS[2], ns, 1)
      redis.call('ZADD', KEYS[6], expires, ns)
      redis.call('ZADD', KEYS[3], expires, member)
      redis.call('HSET', KEYS[4], member, size)
      redis.call('INCRBY', KEYS[5], size)
      table.insert(out, 'S')
      while redis.call('ZCARD', KEYS[3]) > max_entries
        or (tonumber(redis.call('GET', KEYS[5]) or '0') or 0) > max_bytes do
        local first = redis.call('ZRANGE', KEYS[3], 0, 0)
        if #first == 0 then break end
        forget(first[1])
        evicted = evicted + 1
      end
    end
  end
end
local last = redis.call('ZRANGE', KEYS[6], -1, -1, 'WITHSCORES')
if #last == 2 then
  redis.call('PEXPIREAT', KEYS[6], math.ceil(tonumber(last[2]) * 1000) + 1000)
end
table.insert(out, tostring(evicted))
return out";

impl RedisEnrichments {
    pub fn new(connection: ConnectionManager, site: &str) -> RedisEnrichments {
        RedisEnrichments {
            connection,
            prefix: format!("vigil:{{{site}}}:enrichment"),
            script: Arc::new(redis::Script::new(ENRICH)),
        }
    }

    fn key(&self, resource_id: &str, namespace: &str) -> String {
        format!("{}:g:{namespace}|{resource_id}", self.prefix)
    }

    /// Caches `groups` (already admitted: sizes checked, TTLs clamped) that
    /// `plugin` returned for `resource_id`, under the cache's rules.
    pub async fn put(
        &self,
        plugin: &str,
        resource_id: &str,
        groups: &[Admitted],
        limits: &EnrichmentLimits,
        now: f64,
    ) -> redis::RedisResult<EnrichmentVerdicts> {
        if groups.is_empty() {
            return Ok(EnrichmentVerdicts {
                groups: Vec::new(),
                evicted: 0,
            });
        }
        // `now` orders the index (purge and eviction); the group keys
        // themselves expire by Redis' clock, through PX.
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{}:owner", self.prefix))
            .key(format!("{}:count", self.prefix))
            .key(format!("{}:index", self.prefix))
            .key(format!("{}:size", self.prefix))
            .key(format!("{}:bytes", self.prefix))
            .key(format!("{}:r:{resource_id}", self.prefix))
            .arg(plugin)
            .arg(now)
            .arg(limits.max_namespaces_per_resource)
            .arg(limits.max_entries)
            .arg(limits.max_bytes)
            .arg(&self.prefix)
            .arg(resource_id);
        for admitted in groups {
            let group = &admitted.group;
            let record = GroupRecord {
                namespace: group.namespace.clone(),
                ttl_seconds: group.ttl_seconds,
                sets: group
                    .sets
                    .iter()
                    .map(|s| (s.key.clone(), s.values.clone()))
                    .collect(),
            };
            let json = serde_json::to_string(&record).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Client, "encoding", e.to_string()))
            })?;
            let millis = (admitted.ttl * 1000.0).max(1.0) as u64;
            invocation
                .arg(&group.namespace)
                .arg(millis)
                .arg(now + admitted.ttl)
                .arg(admitted.bytes)
                .arg(json);
        }
        let mut connection = self.connection.clone();
        let mut out: Vec<String> = invocation.invoke_async(&mut connection).await?;
        let evicted = out.pop().and_then(|n| n.parse().ok()).unwrap_or(0);
        let verdicts = groups
            .iter()
            .zip(out)
            .map(|(admitted, verdict)| {
                let namespace = admitted.group.namespace.clone();
                match verdict.as_str() {
                    "S" => None,
                    "N" => Some(EnrichmentRefusal::Namespaces {
                        namespace,
                        limit: limits.max_namespaces_per_resource,
                    }),
                    other => Some(EnrichmentRefusal::Owned {
                        namespace,
                        owner: other.strip_prefix('O').unwrap_or(other).to_owned(),
                    }),
                }
            })
            .collect();
        Ok(EnrichmentVerdicts {
            groups: verdicts,
            evicted,
        })
    }

    pub async fn get(
        &self,
        resource_id: &str,
        namespaces: &[String],
    ) -> redis::RedisResult<Vec<EnrichmentGroup>> {
        if namespaces.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = namespaces
            .iter()
            .map(|ns| self.key(resource_id, ns))
            .collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<String>> = connection.mget(keys).await?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_str::<GroupRecord>(&json).ok())
            .map(EnrichmentGroup::from)
            .collect())
    }

    /// The live groups of the site's cache, of `resource_id` and
    /// `namespace` when given, by resource id then namespace (for `vigil
    /// enrichment`). Reads the expiry index, then the groups in batches;
    /// a group that expires between the two is left out.
    pub async fn list(
        &self,
        resource_id: Option<&str>,
        namespace: Option<&str>,
        now: f64,
    ) -> redis::RedisResult<Vec<CachedEnrichment>> {
        let mut connection = self.connection.clone();
        let members: Vec<(String, f64)> = connection
            .zrangebyscore_withscores(format!("{}:index", self.prefix), format!("({now}"), "+inf")
            .await?;
        let mut wanted: Vec<(String, String, f64)> = members
            .into_iter()
            .filter_map(|(member, expires)| {
                let (ns, resource) = member.split_once('|')?;
                (resource_id.is_none_or(|r| r == resource) && namespace.is_none_or(|n| n == ns))
                    .then(|| (resource.to_owned(), ns.to_owned(), expires))
            })
            .collect();
        wanted.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let owners: HashMap<String, String> =
            connection.hgetall(format!("{}:owner", self.prefix)).await?;
        let mut listed = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|(r, ns, _)| self.key(r, ns)).collect();
            let values: Vec<Option<String>> = connection.mget(keys).await?;
            for ((resource, ns, expires), value) in chunk.iter().zip(values) {
                let Some(record) = value.and_then(|v| serde_json::from_str::<GroupRecord>(&v).ok())
                else {
                    continue;
                };
                listed.push(CachedEnrichment {
                    resource_id: resource.clone(),
                    plugin: owners.get(ns).cloned().unwrap_or_default(),
                    namespace: ns.clone(),
                    expires_at: *expires,
                    group: EnrichmentGroup::from(record),
                });
            }
        }
        Ok(listed)
    }

    /// The plugin that owns `namespace` in Redis, if any (for tests and
    /// tools).
    pub async fn owner(&self, namespace: &str) -> redis::RedisResult<Option<String>> {
        let mut connection = self.connection.clone();
        connection
            .hget(format!("{}:owner", self.prefix), namespace)
            .await
    }

    /// Entries and bytes the cache holds in Redis.
    pub async fn usage(&self) -> redis::RedisResult<(u64, u64)> {
        let mut connection = self.connection.clone();
        let entries: u64 = connection.zcard(format!("{}:index", self.prefix)).await?;
        let bytes: Option<i64> = connection.get(format!("{}:bytes", self.prefix)).await?;
        Ok((entries, bytes.unwrap_or(0).max(0) as u64))
    }
}

/// Counter samples for rate transforms, one key per series, living a few
/// intervals (older samples would be gaps anyway).
#[derive(Clone)]
pub struct RedisRates {
    connection: ConnectionManager,
    prefix: String,
}

impl RedisRates {
    pub fn new(connection: ConnectionManager, site: &str) -> RedisRates {
        RedisRates {
            connection,
            prefix: format!("vigil:{{{site}}}:rate"),
        }
    }

    fn key(&self, series: &str) -> String {
        format!("{}:{series}", self.prefix)
    }

    pub async fn load(&self, series: &[String]) -> redis::RedisResult<Vec<Option<CounterSample>>> {
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = series.iter().map(|s| self.key(s)).collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<String>> = connection.mget(keys).await?;
        Ok(values
            .into_iter()
            .map(|value| {
                let (count, at) = value?
                    .split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))?;
                Some(CounterSample {
                    value: count.parse().ok()?,
                    at: at.parse().ok()?,
                })
            })
            .collect())
    }

    pub async fn store(
        &self,
        samples: &[(String, CounterSample)],
        keep: Duration,
    ) -> redis::RedisResult<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let millis = keep.as_millis().max(1000) as u64;
        for (series, sample) in samples {
            pipe.pset_ex(
                self.key(series),
                format!("{} {}", sample.value, sample.at),
                millis,
            )
            .ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async(&mut connection).await
    }
}

impl EnrichmentStore for RedisEnrichments {
    fn put<'a>(
        &'a self,
        plugin: &'a str,
        resource_id: &'a str,
        groups: &'a [Admitted],
        limits: &'a EnrichmentLimits,
        now: f64,
    ) -> BoxFuture<'a, Result<EnrichmentVerdicts, BackendError>> {
        Box::pin(async move {
            Ok(RedisEnrichments::put(self, plugin, resource_id, groups, limits, now).await?)
        })
    }

    fn get<'a>(
        &'a self,
        resource_id: &'a str,
        namespaces: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<EnrichmentGroup>, BackendError>> {
        Box::pin(async move { Ok(RedisEnrichments::get(self, resource_id, namespaces).await?) })
    }
}

impl RateState for RedisRates {
    fn load<'a>(
        &'a self,
        series: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<CounterSample>>, BackendError>> {
        Box::pin(async move { Ok(RedisRates::load(self, series).await?) })
    }

    fn store<'a>(
        &'a self,
        samples: &'a [(String, CounterSample)],
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move { Ok(RedisRates::store(self, samples, keep).await?) })
    }
}

/// Plugin key/value state in Redis (`[cache] backend = "redis"`), so a job
/// that moves to another agent finds its plugin's state there.
///
/// Keys: `vigil:{SITE}:kv:PLUGIN` (hash, key to value bytes) and
/// `vigil:{SITE}:kv-used:PLUGIN` (bytes of keys plus values, as the quota
/// counts them). A write checks the quota and updates both in one script,
/// so two agents writing for one plugin cannot pass its quota together.
pub struct RedisKv {
    connection: Reconnecting,
    prefix: String,
    set: redis::Script,
    delete: redis::Script,
}

/// KEYS: hash, used. ARGV: key, value, quota. 1 stored, 0 over the quota.
const KV_SET: &str = r"
local before = 0
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  before = string.len(ARGV[1]) + redis.call('HSTRLEN', KEYS[1], ARGV[1])
end
local used = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local after = used - before + string.len(ARGV[1]) + string.len(ARGV[2])
if after > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], after)
return 1";

/// KEYS: hash, used. ARGV: key.
const KV_DELETE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local size = string.len(ARGV[1]) + redis.call('HSTRLEN', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('DECRBY', KEYS[2], size) <= 0 then redis.call('DEL', KEYS[2]) end
end
return 1";

impl RedisKv {
    pub fn open(url: &str, site: &str) -> redis::RedisResult<RedisKv> {
        Ok(RedisKv {
            connection: Reconnecting::open(url)?,
            prefix: format!("vigil:{{{site}}}"),
            set: redis::Script::new(KV_SET),
            delete: redis::Script::new(KV_DELETE),
        })
    }

    fn keys_of(&self, plugin: &str) -> [String; 2] {
        [
            format!("{}:kv:{plugin}", self.prefix),
            format!("{}:kv-used:{plugin}", self.prefix),
        ]
    }
}

fn kv_failure(
    operation: &'static str,
    plugin: &str,
) -> impl FnOnce(redis::RedisError) -> KvFailure {
    move |e| KvFailure::new(operation, plugin, format!("Redis: {e}"))
}

impl KvBackend for RedisKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        let [hash, _] = self.keys_of(plugin);
        self.connection
            .call(|c| redis::cmd("HGET").arg(&hash).arg(key).query(c))
            .map_err(kv_failure("get", plugin))
    }

    fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<Result<(), KvError>, KvFailure> {
        let [hash, used] = self.keys_of(plugin);
        let stored: i64 = self
            .connection
            .call(|c| {
                self.set
                    .key(&hash)
                    .key(&used)
                    .arg(key)
                    .arg(value)
                    .arg(quota)
                    .invoke(c)
            })
            .map_err(kv_failure("set", plugin))?;
        Ok(if stored == 1 {
            Ok(())
        } else {
            Err(KvError::QuotaExceeded(quota))
        })
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), KvFailure> {
        let [hash, used] = self.keys_of(plugin);
        self.connection
            .call(|c| self.delete.key(&hash).key(&used).arg(key).invoke::<i64>(c))
            .map(|_| ())
            .map_err(kv_failure("delete", plugin))
    }

    fn keys(&self, plugin: &str) -> Result<Vec<String>, KvFailure> {
        let [hash, _] = self.keys_of(plugin);
        let mut keys: Vec<String> = self
            .connection
            .call(|c| redis::cmd("HKEYS").arg(&hash).query(c))
            .map_err(kv_failure("keys", plugin))?;
        // Sorted, as the SQLite and in-memory stores list them.
        keys.sort_unstable();
        Ok(keys)
    }

    fn usage(&self, plugin: &str) -> Result<u64, KvFailure> {
        let [_, used] = self.keys_of(plugin);
        let used: Option<i64> = self
            .connection
            .call(|c| redis::cmd("GET").arg(&used).query(c))
            .map_err(kv_failure("usage", plugin))?;
        Ok(used.unwrap_or(0).max(0) as u64)
    }
}
