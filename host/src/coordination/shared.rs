//! State that agents sharing a site keep in Redis, so any agent can run any
//! job and an agent restart loses nothing: the resource registry (with
//! TTLs), the enrichment cache and the counter state of rate transforms.
//! (The over-polling guard lives with the leases, in [`super::redis`].)
//!
//! Every value is JSON under the site's hash tag. When Redis is
//! unreachable, callers fall back to their local copy and say so in the
//! log; nothing blocks longer than the connection's 2 s response timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::model::{Datetime, EnrichmentGroup, EnrichmentSet, MetricsGroup, Resource};
use crate::store::{
    HostStatus, RunRecord, SeriesValue, Storage, StoreError, StoreResult, StoredResource,
    UpsertSummary,
};
use crate::transform::rate::CounterSample;

fn io_error(e: redis::RedisError) -> StoreError {
    StoreError::Io(std::io::Error::other(format!("redis: {e}")))
}

/// Resources as every agent of the site sees them: a hash of JSON records
/// and a sorted set of expiry times. Everything else (run history, latest
/// values, status) stays in this agent's own store.
pub struct RedisResources {
    inner: Arc<dyn Storage>,
    client: redis::Client,
    connection: Mutex<Option<redis::Connection>>,
    records: String,
    expiry: String,
}

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
    pub fn new(inner: Arc<dyn Storage>, url: &str, site: &str) -> StoreResult<RedisResources> {
        let client = redis::Client::open(url).map_err(io_error)?;
        Ok(RedisResources {
            inner,
            client,
            connection: Mutex::new(None),
            records: format!("vigil:{{{site}}}:resources"),
            expiry: format!("vigil:{{{site}}}:resources:expiry"),
        })
    }

    /// Runs `call` on a connection, reconnecting once after a failure.
    fn with_connection<T>(
        &self,
        call: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> StoreResult<T> {
        let mut slot = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            if slot.is_none() {
                let connection = self
                    .client
                    .get_connection_with_timeout(Duration::from_secs(2))
                    .map_err(io_error)?;
                connection
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .map_err(io_error)?;
                connection
                    .set_write_timeout(Some(Duration::from_secs(2)))
                    .map_err(io_error)?;
                *slot = Some(connection);
            }
            let Some(connection) = slot.as_mut() else {
                continue;
            };
            match call(connection) {
                Ok(value) => return Ok(value),
                Err(e) if attempt == 0 && (e.is_io_error() || e.is_connection_dropped()) => {
                    *slot = None;
                }
                Err(e) => return Err(io_error(e)),
            }
        }
        Err(StoreError::Io(std::io::Error::other(
            "redis: reconnect failed",
        )))
    }

    fn records(&self, ids: &[String]) -> StoreResult<Vec<StoredResource>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> =
            self.with_connection(|c| redis::cmd("HMGET").arg(&self.records).arg(ids).query(c))?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_str::<ResourceRecord>(&json).ok())
            .map(ResourceRecord::into_stored)
            .collect())
    }
}

impl Storage for RedisResources {
    fn upsert_resources(
        &self,
        plugin: &str,
        resources: &[Resource],
        default_ttl: f64,
        now: f64,
    ) -> StoreResult<UpsertSummary> {
        if resources.is_empty() {
            return Ok(UpsertSummary::default());
        }
        let ids: Vec<String> = resources.iter().map(|r| r.id.clone()).collect();
        let known: BTreeMap<String, StoredResource> = self
            .records(&ids)?
            .into_iter()
            .map(|s| (s.resource.id.clone(), s))
            .collect();
        let mut summary = UpsertSummary::default();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for resource in resources {
            let ttl = if resource.ttl_seconds > 0 {
                resource.ttl_seconds as f64
            } else {
                default_ttl
            };
            let first_seen = match known.get(&resource.id) {
                Some(existing) => {
                    summary.refreshed += 1;
                    existing.first_seen
                }
                None => {
                    summary.added += 1;
                    now
                }
            };
            let stored = StoredResource {
                resource: resource.clone(),
                discovered_by: plugin.to_owned(),
                first_seen,
                last_seen: now,
                expires_at: now + ttl,
            };
            let json = serde_json::to_string(&ResourceRecord::from_stored(&stored))?;
            pipe.hset(&self.records, &resource.id, json).ignore();
            pipe.zadd(&self.expiry, &resource.id, now + ttl).ignore();
        }
        self.with_connection(|c| pipe.query::<()>(c))?;
        Ok(summary)
    }

    fn live_resources(&self, now: f64) -> StoreResult<Vec<StoredResource>> {
        let ids: Vec<String> = self.with_connection(|c| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&self.expiry)
                .arg(format!("({now}"))
                .arg("+inf")
                .query(c)
        })?;
        let mut live = self.records(&ids)?;
        live.sort_by(|a, b| a.resource.id.cmp(&b.resource.id));
        Ok(live)
    }

    fn expire_resources(&self, now: f64) -> StoreResult<Vec<String>> {
        let ids: Vec<String> = self.with_connection(|c| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&self.expiry)
                .arg("-inf")
                .arg(now)
                .query(c)
        })?;
        if ids.is_empty() {
            return Ok(ids);
        }
        // Another agent may have expired (or refreshed) them meanwhile:
        // remove only what is still expired, atomically.
        let script = redis::Script::new(
            r"
local gone = {}
local now = tonumber(ARGV[1])
for i = 2, #ARGV do
  local id = ARGV[i]
  local at = redis.call('ZSCORE', KEYS[2], id)
  if at and tonumber(at) <= now then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[1], id)
    table.insert(gone, id)
  end
end
return gone",
        );
        let gone: Vec<String> = self.with_connection(|c| {
            script
                .key(&self.records)
                .key(&self.expiry)
                .arg(now)
                .arg(&ids)
                .invoke(c)
        })?;
        Ok(gone)
    }

    fn record_runs(&self, runs: &[RunRecord]) -> StoreResult<()> {
        self.inner.record_runs(runs)
    }
    fn recent_runs(&self, plugin: Option<&str>, limit: usize) -> StoreResult<Vec<RunRecord>> {
        self.inner.recent_runs(plugin, limit)
    }
    fn store_latest(&self, groups: &[std::sync::Arc<MetricsGroup>]) -> StoreResult<()> {
        self.inner.store_latest(groups)
    }
    fn latest(&self, group_type: Option<&str>) -> StoreResult<Vec<SeriesValue>> {
        self.inner.latest(group_type)
    }
    fn put_status(&self, status: &HostStatus) -> StoreResult<()> {
        self.inner.put_status(status)
    }
    fn status(&self) -> StoreResult<Option<HostStatus>> {
        self.inner.status()
    }
}

/// The enrichment cache in Redis: one key per (resource, namespace) with
/// the group's TTL as the key's.
#[derive(Clone)]
pub struct RedisEnrichments {
    connection: ConnectionManager,
    prefix: String,
}

#[derive(Serialize, Deserialize)]
struct GroupRecord {
    namespace: String,
    ttl_seconds: u64,
    sets: Vec<(String, Vec<(String, String)>)>,
}

impl RedisEnrichments {
    pub fn new(connection: ConnectionManager, site: &str) -> RedisEnrichments {
        RedisEnrichments {
            connection,
            prefix: format!("vigil:{{{site}}}:enrichment"),
        }
    }

    fn key(&self, resource_id: &str, namespace: &str) -> String {
        format!("{}:{resource_id}:{namespace}", self.prefix)
    }

    /// Stores `groups` for `resource_id`, each for `ttl(group)` seconds.
    pub async fn put(
        &self,
        resource_id: &str,
        groups: &[(EnrichmentGroup, f64)],
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for (group, ttl) in groups {
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
            let millis = (ttl * 1000.0).max(1.0) as u64;
            pipe.pset_ex(self.key(resource_id, &group.namespace), json, millis)
                .ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async(&mut connection).await
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
            .map(|record| EnrichmentGroup {
                namespace: record.namespace,
                ttl_seconds: record.ttl_seconds,
                sets: record
                    .sets
                    .into_iter()
                    .map(|(key, values)| EnrichmentSet { key, values })
                    .collect(),
            })
            .collect())
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
