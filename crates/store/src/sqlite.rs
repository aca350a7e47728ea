//! The embedded [`Storage`]: one SQLite file in WAL mode.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    HostStatus, Refusal, ResourcePolicy, RunQuery, RunRecord, STATUS_RETENTION, SeriesQuery,
    SeriesValue, Storage, StoreError, StoreResult, StoredResource, UpsertSummary, prepare_batch,
};
use vigil_core::model::{CachedEnrichment, Datetime, MetricType, MetricsGroup, Resource};

/// Run history kept, across all plugins; older runs are pruned.
const RUN_HISTORY: i64 = 200_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL, endpoint TEXT NOT NULL, class TEXT NOT NULL,
    subclass TEXT NOT NULL, type TEXT NOT NULL,
    metadata TEXT NOT NULL,
    creation_plugin TEXT NOT NULL, creation_timestamp REAL NOT NULL,
    ttl_seconds INTEGER NOT NULL,
    discovered_by TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_expiry ON resources(expires_at);
CREATE INDEX IF NOT EXISTS resources_owner ON resources(discovered_by, expires_at);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin TEXT NOT NULL, resource_id TEXT,
    scheduled_at REAL NOT NULL, started_at REAL NOT NULL, finished_at REAL NOT NULL,
    outcome TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_plugin ON runs(plugin, id);
CREATE INDEX IF NOT EXISTS runs_resource ON runs(resource_id, id);
DROP TABLE IF EXISTS latest;
CREATE TABLE IF NOT EXISTS latest_series (
    key BLOB NOT NULL UNIQUE,
    resource_id TEXT NOT NULL, group_type TEXT NOT NULL, dimensions TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS latest_series_resource ON latest_series(resource_id);
CREATE TABLE IF NOT EXISTS latest_values (
    series INTEGER NOT NULL, metric TEXT NOT NULL,
    value TEXT NOT NULL, metric_type TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (series, metric)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS latest_series_gone AFTER DELETE ON latest_series
BEGIN DELETE FROM latest_values WHERE series = OLD.rowid; END;
DROP TABLE IF EXISTS status;
CREATE TABLE IF NOT EXISTS agent_status (
    agent_id TEXT PRIMARY KEY, updated_at REAL NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enrichment_mirror (
    resource_id TEXT NOT NULL, namespace TEXT NOT NULL,
    plugin TEXT NOT NULL, expires_at REAL NOT NULL, ttl_seconds INTEGER NOT NULL,
    sets TEXT NOT NULL,
    PRIMARY KEY (resource_id, namespace)
);
CREATE INDEX IF NOT EXISTS enrichment_mirror_expiry ON enrichment_mirror(expires_at);
";

/// Page size of a new database file, in bytes (SQLite's default is 4096).
/// Endpoint history writes hundreds of thousands of small rows a second at
/// random keys; with 16 KiB pages a B-tree is shallower and a batch dirties
/// fewer pages: the history store alone wrote 15-20 % more records a
/// second (`vigil-store`'s benches). An existing file keeps the size it was
/// created with.
const PAGE_SIZE: i64 = 16_384;

/// Opens (creating if needed) the database at `path` for writing, in WAL
/// mode so readers in other processes (the CLI) never block the host, and
/// applies `schema`.
pub(crate) fn open_database(path: &Path, schema: &str) -> StoreResult<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let connection = Connection::open(path)?;
    // Only a new file takes it (before its first write): see PAGE_SIZE.
    connection.pragma_update(None, "page_size", PAGE_SIZE)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.execute_batch(schema)?;
    Ok(connection)
}

/// The embedded store. Every call runs on tokio's blocking pool (SQLite
/// calls block: a write waits for the file lock up to the busy timeout), so
/// async callers (the pipeline, the scheduler, the HTTP API to come) never
/// stall a runtime worker; one connection behind a mutex serialises this
/// process's calls, as SQLite serialises writers anyway.
#[derive(Clone)]
pub struct SqliteStorage {
    db: Arc<Database>,
}

/// The connection and the blocking calls on it.
struct Database {
    connection: Mutex<Connection>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> StoreResult<SqliteStorage> {
        let connection = open_database(path, SCHEMA)?;
        Ok(SqliteStorage::with(connection))
    }

    /// Opens an existing database read-only (for the CLI).
    pub fn open_read_only(path: &Path) -> StoreResult<SqliteStorage> {
        let connection =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(SqliteStorage::with(connection))
    }

    fn with(connection: Connection) -> SqliteStorage {
        SqliteStorage {
            db: Arc::new(Database {
                connection: Mutex::new(connection),
            }),
        }
    }

    /// Runs `call` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || call(&db))
            .await
            .map_err(|e| StoreError::Blocking(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl Storage for SqliteStorage {
    async fn upsert_resources(
        &self,
        plugin: &str,
        resources: &[Resource],
        policy: &ResourcePolicy,
        now: f64,
    ) -> StoreResult<UpsertSummary> {
        let (plugin, resources, policy) = (plugin.to_owned(), resources.to_vec(), policy.clone());
        self.blocking(move |db| db.upsert_resources(&plugin, &resources, &policy, now))
            .await
    }
    async fn expire_plugin_resources(&self, plugin: &str, now: f64) -> StoreResult<Vec<String>> {
        let plugin = plugin.to_owned();
        self.blocking(move |db| db.expire_plugin_resources(&plugin, now))
            .await
    }
    async fn live_resources(&self, now: f64) -> StoreResult<Vec<StoredResource>> {
        self.blocking(move |db| db.live_resources(now)).await
    }
    async fn expire_resources(&self, now: f64) -> StoreResult<Vec<String>> {
        self.blocking(move |db| db.expire_resources(now)).await
    }
    async fn record_runs(&self, runs: &[RunRecord]) -> StoreResult<()> {
        let runs = runs.to_vec();
        self.blocking(move |db| db.record_runs(&runs)).await
    }
    async fn query_runs(&self, query: &RunQuery) -> StoreResult<Vec<RunRecord>> {
        let query = query.clone();
        self.blocking(move |db| db.query_runs(&query)).await
    }
    async fn store_latest(&self, groups: &[Arc<MetricsGroup>]) -> StoreResult<()> {
        let groups = groups.to_vec();
        self.blocking(move |db| db.store_latest(&groups)).await
    }
    async fn query_latest(&self, query: &SeriesQuery) -> StoreResult<Vec<SeriesValue>> {
        let query = query.clone();
        self.blocking(move |db| db.query_latest(&query)).await
    }
    async fn put_status(&self, status: &HostStatus) -> StoreResult<()> {
        let status = status.clone();
        self.blocking(move |db| db.put_status(&status)).await
    }
    async fn statuses(&self) -> StoreResult<Vec<HostStatus>> {
        self.blocking(|db| db.statuses()).await
    }
    async fn mirror_enrichments(
        &self,
        held: &[CachedEnrichment],
        removed: &[(String, String)],
        now: f64,
    ) -> StoreResult<()> {
        let (held, removed) = (held.to_vec(), removed.to_vec());
        self.blocking(move |db| db.mirror_enrichments(&held, &removed, now))
            .await
    }
    async fn mirrored_enrichments(
        &self,
        resource_id: Option<&str>,
        namespace: Option<&str>,
        now: f64,
    ) -> StoreResult<Vec<CachedEnrichment>> {
        let resource_id = resource_id.map(str::to_owned);
        let namespace = namespace.map(str::to_owned);
        self.blocking(move |db| {
            db.mirrored_enrichments(resource_id.as_deref(), namespace.as_deref(), now)
        })
        .await
    }
}

impl Database {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-statement leaves SQLite consistent (transactions roll
        // back), so a poisoned lock is safe to keep using.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn upsert_resources(
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
        let mut connection = self.lock();
        // Immediate: the write lock is taken (waiting out the busy timeout)
        // before the ownership reads, so no other writer can slip between a
        // check and its write, and no read-to-write upgrade can fail busy.
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut owned: u64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM resources WHERE discovered_by = ?1 AND expires_at > ?2",
                )?
                .query_row(params![plugin, now], |row| row.get::<_, i64>(0))?
                .max(0) as u64;
            let mut current =
                tx.prepare_cached("SELECT discovered_by, expires_at FROM resources WHERE id = ?1")?;
            let mut refresh = tx.prepare_cached(
                "UPDATE resources SET endpoint = ?2, class = ?3, subclass = ?4, type = ?5,
                     metadata = ?6, ttl_seconds = ?7, last_seen = ?8, expires_at = ?9
                 WHERE id = ?1",
            )?;
            // A new resource, or an expired one taken afresh: everything
            // from this sighting, the owner and creation time included.
            let mut claim = tx.prepare_cached(
                "INSERT OR REPLACE INTO resources (id, site, endpoint, class, subclass, type, metadata,
                     creation_plugin, creation_timestamp, ttl_seconds, discovered_by, first_seen,
                     last_seen, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?8, ?9, ?9, ?11)",
            )?;
            for (r, ttl) in &batch {
                let existing: Option<(String, f64)> = current
                    .query_row(params![r.id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                let metadata = serde_json::to_string(&r.metadata)?;
                match existing {
                    Some((owner, expires_at)) if expires_at > now && owner != plugin => {
                        summary.refuse(Refusal::Owned {
                            id: r.id.clone(),
                            owner,
                        });
                    }
                    Some((_, expires_at)) if expires_at > now => {
                        refresh.execute(params![
                            r.id,
                            r.endpoint,
                            r.class,
                            r.subclass,
                            r.type_,
                            metadata,
                            *ttl as i64,
                            now,
                            now + ttl
                        ])?;
                        summary.refreshed += 1;
                    }
                    _ if owned >= policy.max_resources => {
                        summary.refuse(Refusal::Budget {
                            id: r.id.clone(),
                            limit: policy.max_resources,
                        });
                    }
                    _ => {
                        claim.execute(params![
                            r.id,
                            r.site,
                            r.endpoint,
                            r.class,
                            r.subclass,
                            r.type_,
                            metadata,
                            plugin,
                            now,
                            *ttl as i64,
                            now + ttl
                        ])?;
                        owned += 1;
                        summary.added += 1;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(summary)
    }

    fn expire_plugin_resources(&self, plugin: &str, now: f64) -> StoreResult<Vec<String>> {
        self.lock().execute(
            "UPDATE resources SET expires_at = ?2 WHERE discovered_by = ?1 AND expires_at > ?2",
            params![plugin, now],
        )?;
        self.expire_resources(now)
    }

    fn live_resources(&self, now: f64) -> StoreResult<Vec<StoredResource>> {
        let connection = self.lock();
        let mut query = connection.prepare_cached(
            "SELECT id, site, endpoint, class, subclass, type, metadata, creation_plugin, creation_timestamp,
                    ttl_seconds, discovered_by, first_seen, last_seen, expires_at
             FROM resources WHERE expires_at > ?1 ORDER BY id",
        )?;
        let rows = query.query_map(params![now], |row| {
            let metadata: String = row.get(6)?;
            Ok((
                Resource {
                    id: row.get(0)?,
                    site: row.get(1)?,
                    endpoint: row.get(2)?,
                    class: row.get(3)?,
                    subclass: row.get(4)?,
                    type_: row.get(5)?,
                    creation_plugin: row.get(7)?,
                    creation_timestamp: Datetime::from_seconds(row.get(8)?),
                    ttl_seconds: row.get::<_, i64>(9)?.max(0) as u64,
                    metadata: Vec::new(),
                },
                metadata,
                row.get::<_, String>(10)?,
                row.get::<_, f64>(11)?,
                row.get::<_, f64>(12)?,
                row.get::<_, f64>(13)?,
            ))
        })?;
        let mut resources = Vec::new();
        for row in rows {
            let (mut resource, metadata, discovered_by, first_seen, last_seen, expires_at) = row?;
            resource.metadata = serde_json::from_str(&metadata)?;
            resources.push(StoredResource {
                resource,
                discovered_by,
                first_seen,
                last_seen,
                expires_at,
            });
        }
        Ok(resources)
    }

    fn expire_resources(&self, now: f64) -> StoreResult<Vec<String>> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let expired: Vec<String> = {
            let mut query = tx.prepare_cached("SELECT id FROM resources WHERE expires_at <= ?1")?;
            query
                .query_map(params![now], |row| row.get(0))?
                .collect::<Result<_, _>>()?
        };
        for id in &expired {
            tx.execute("DELETE FROM resources WHERE id = ?1", params![id])?;
            tx.execute(
                "DELETE FROM latest_series WHERE resource_id = ?1",
                params![id],
            )?;
        }
        tx.commit()?;
        Ok(expired)
    }

    fn record_runs(&self, runs: &[RunRecord]) -> StoreResult<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO runs (plugin, resource_id, scheduled_at, started_at, finished_at, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for run in runs {
                insert.execute(params![
                    run.plugin,
                    run.resource_id,
                    run.scheduled_at,
                    run.started_at,
                    run.finished_at,
                    run.outcome,
                    run.detail
                ])?;
            }
            tx.execute(
                "DELETE FROM runs WHERE id <= (SELECT max(id) FROM runs) - ?1",
                params![RUN_HISTORY],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn query_runs(&self, q: &RunQuery) -> StoreResult<Vec<RunRecord>> {
        let connection = self.lock();
        let mut query = connection.prepare_cached(
            "SELECT plugin, resource_id, scheduled_at, started_at, finished_at, outcome, detail FROM runs
             WHERE (?1 IS NULL OR plugin = ?1) AND (?2 IS NULL OR resource_id = ?2)
               AND (?3 IS NULL OR outcome = ?3) AND (?4 IS NULL OR started_at >= ?4)
             ORDER BY id DESC LIMIT ?5",
        )?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let params = params![q.plugin, q.resource_id, q.outcome, q.since, limit];
        let rows = query.query_map(params, |row| {
            Ok(RunRecord {
                plugin: row.get(0)?,
                resource_id: row.get(1)?,
                scheduled_at: row.get(2)?,
                started_at: row.get(3)?,
                finished_at: row.get(4)?,
                outcome: row.get(5)?,
                detail: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A series (resource id, group type, sorted dimensions) is stored once
    /// in `latest_series` under its compact id
    /// ([`vigil_sinks::series::series_id`], 16 bytes, `key`); each metric is
    /// a row of `latest_values` keyed by the series' rowid and the metric
    /// name. So the dimension text is written once per series, not once per
    /// metric (it was twice per metric, row and index: a 229 KB poll of
    /// 2,000 metrics over 14 KB of dimensions wrote 66.7 MB; it now writes
    /// 82 KB). Expiring a resource deletes its series; a trigger deletes
    /// their values.
    fn store_latest(&self, groups: &[std::sync::Arc<MetricsGroup>]) -> StoreResult<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        {
            let mut find = tx.prepare_cached("SELECT rowid FROM latest_series WHERE key = ?1")?;
            let mut add = tx.prepare_cached(
                "INSERT INTO latest_series (key, resource_id, group_type, dimensions)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO latest_values (series, metric, value, metric_type, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(series, metric) DO UPDATE SET value = ?3, metric_type = ?4, at = ?5",
            )?;
            for group in groups {
                if group.metrics.is_empty() {
                    continue;
                }
                let mut dimensions: Vec<(&str, &str)> = group
                    .dimensions
                    .iter()
                    .map(|d| (d.name.as_str(), d.value.as_str()))
                    .collect();
                dimensions.sort();
                let key = vigil_sinks::series::series_id(
                    &group.resource.id,
                    &group.group_type,
                    dimensions.iter().copied(),
                );
                let known: Option<i64> = find
                    .query_row(params![&key.0[..]], |row| row.get(0))
                    .optional()?;
                let series = match known {
                    Some(rowid) => rowid,
                    None => {
                        add.execute(params![
                            &key.0[..],
                            group.resource.id,
                            group.group_type,
                            serde_json::to_string(&dimensions)?
                        ])?;
                        tx.last_insert_rowid()
                    }
                };
                for metric in &group.metrics {
                    let kind = match metric.type_ {
                        MetricType::Counter => "counter",
                        MetricType::Gauge => "gauge",
                    };
                    upsert.execute(params![
                        series,
                        metric.name,
                        metric.value.to_text(),
                        kind,
                        metric.creation_timestamp.as_seconds()
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn query_latest(&self, q: &SeriesQuery) -> StoreResult<Vec<SeriesValue>> {
        let connection = self.lock();
        let mut query = connection.prepare_cached(
            "SELECT s.rowid, s.resource_id, s.group_type, s.dimensions,
                    v.metric, v.value, v.metric_type, v.at
             FROM latest_series s JOIN latest_values v ON v.series = s.rowid
             WHERE (?1 IS NULL OR s.group_type = ?1) AND (?2 IS NULL OR s.resource_id = ?2)
               AND (?3 IS NULL OR v.metric = ?3) AND (?4 IS NULL OR v.at >= ?4)
             ORDER BY s.resource_id, s.group_type, s.dimensions, v.metric
             LIMIT ?5",
        )?;
        // SQLite: a negative LIMIT is no limit.
        let limit = q
            .limit
            .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let mut rows = query.query(params![
            q.group_type,
            q.resource_id,
            q.metric,
            q.since,
            limit
        ])?;
        let mut series = Vec::new();
        // The dimensions of the series at hand, parsed once per series.
        let mut current: Option<(i64, Vec<(String, String)>)> = None;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            let dimensions = match &current {
                Some((id, dimensions)) if *id == rowid => dimensions.clone(),
                _ => {
                    let text: String = row.get(3)?;
                    let dimensions: Vec<(String, String)> = serde_json::from_str(&text)?;
                    current = Some((rowid, dimensions.clone()));
                    dimensions
                }
            };
            series.push(SeriesValue {
                resource_id: row.get(1)?,
                group_type: row.get(2)?,
                dimensions,
                metric: row.get(4)?,
                value: row.get(5)?,
                metric_type: row.get(6)?,
                at: row.get(7)?,
            });
        }
        Ok(series)
    }

    fn put_status(&self, status: &HostStatus) -> StoreResult<()> {
        let body = serde_json::to_string(status)?;
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "INSERT INTO agent_status (agent_id, updated_at, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(agent_id) DO UPDATE SET updated_at = ?2, body = ?3",
            params![status.agent_id, status.updated_at, body],
        )?;
        tx.execute(
            "DELETE FROM agent_status WHERE updated_at < ?1",
            params![status.updated_at - STATUS_RETENTION],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn mirror_enrichments(
        &self,
        held: &[CachedEnrichment],
        removed: &[(String, String)],
        now: f64,
    ) -> StoreResult<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        for entry in held {
            tx.execute(
                "INSERT INTO enrichment_mirror (resource_id, namespace, plugin, expires_at, ttl_seconds, sets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(resource_id, namespace) DO UPDATE SET
                   plugin = ?3, expires_at = ?4, ttl_seconds = ?5, sets = ?6",
                params![
                    entry.resource_id,
                    entry.namespace,
                    entry.plugin,
                    entry.expires_at,
                    i64::try_from(entry.group.ttl_seconds).unwrap_or(i64::MAX),
                    super::sets_json(&entry.group)?,
                ],
            )?;
        }
        for (resource_id, namespace) in removed {
            tx.execute(
                "DELETE FROM enrichment_mirror WHERE resource_id = ?1 AND namespace = ?2",
                params![resource_id, namespace],
            )?;
        }
        tx.execute(
            "DELETE FROM enrichment_mirror WHERE expires_at <= ?1",
            params![now],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn mirrored_enrichments(
        &self,
        resource_id: Option<&str>,
        namespace: Option<&str>,
        now: f64,
    ) -> StoreResult<Vec<CachedEnrichment>> {
        let connection = self.lock();
        // A database of an earlier version (the CLI opens it read-only, so
        // the schema is not applied) has no mirror: nothing cached.
        let exists: Option<i64> = connection
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'enrichment_mirror'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        let mut query = connection.prepare_cached(
            "SELECT resource_id, namespace, plugin, expires_at, ttl_seconds, sets
             FROM enrichment_mirror
             WHERE expires_at > ?1 AND (?2 IS NULL OR resource_id = ?2) AND (?3 IS NULL OR namespace = ?3)
             ORDER BY resource_id, namespace",
        )?;
        let rows = query.query_map(params![now, resource_id, namespace], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, f64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, String>(5)?,
            ))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (resource_id, namespace, plugin, expires_at, ttl, sets) = row?;
            entries.push(CachedEnrichment {
                resource_id,
                group: vigil_core::model::EnrichmentGroup {
                    namespace: namespace.clone(),
                    ttl_seconds: u64::try_from(ttl).unwrap_or(0),
                    sets: super::sets_from_json(&sets)?,
                },
                namespace,
                plugin,
                expires_at,
            });
        }
        Ok(entries)
    }

    fn statuses(&self) -> StoreResult<Vec<HostStatus>> {
        let connection = self.lock();
        // A database written by an earlier version has no such table (the
        // CLI opens it read-only, so the schema is not applied): no agent.
        let exists: Option<i64> = connection
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'agent_status'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        let mut query =
            connection.prepare_cached("SELECT body FROM agent_status ORDER BY agent_id")?;
        let bodies = query.query_map([], |row| row.get::<_, String>(0))?;
        let mut statuses = Vec::new();
        for body in bodies {
            statuses.push(serde_json::from_str(&body?)?);
        }
        Ok(statuses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::model::{Dimension, Metric, MetricValue};

    fn resource(id: &str, ttl: u64) -> Resource {
        let mut r = Resource::named(id, "127.0.0.1");
        r.class = "network".into();
        r.ttl_seconds = ttl;
        r.metadata = vec![("model".into(), "mx960".into())];
        r
    }

    #[tokio::test]
    async fn resources_belong_to_their_first_discoverer_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStorage::open(&dir.path().join("vigil.db")).expect("open");
        let policy = crate::ResourceSettings::new("lab").policy(
            std::time::Duration::from_secs(100),
            10,
            &[],
        );
        let summary = store
            .upsert_resources(
                "disco",
                &[resource("a", 0), resource("b", 30)],
                &policy,
                1000.0,
            )
            .await
            .expect("upsert");
        assert_eq!((summary.added, summary.refreshed), (2, 0));
        let mut stolen = resource("a", 0);
        stolen.endpoint = "192.0.2.66".into();
        let summary = store
            .upsert_resources("disco2", &[stolen], &policy, 1010.0)
            .await
            .expect("upsert");
        assert_eq!(
            (summary.added, summary.refreshed, summary.conflicts),
            (0, 0, 1)
        );

        let live = store.live_resources(1020.0).await.expect("live");
        assert_eq!(live.len(), 2);
        let a = live.iter().find(|r| r.resource.id == "a").expect("a");
        assert_eq!(
            (
                a.discovered_by.as_str(),
                a.resource.endpoint.as_str(),
                a.expires_at
            ),
            ("disco", "127.0.0.1", 1100.0)
        );
        assert_eq!(a.resource.site, "lab", "an empty site is the host's");
        assert_eq!(
            a.resource.metadata,
            vec![("model".to_owned(), "mx960".to_owned())]
        );

        // b's own TTL (30 s) beats the default.
        assert_eq!(store.live_resources(1031.0).await.expect("live").len(), 1);
        assert_eq!(
            store.expire_resources(1031.0).await.expect("expire"),
            vec!["b".to_owned()]
        );
        assert_eq!(store.live_resources(0.0).await.expect("live").len(), 1);
        // The owner's file is deleted: what it owned goes at once.
        assert_eq!(
            store
                .expire_plugin_resources("disco", 1040.0)
                .await
                .expect("expire"),
            vec!["a".to_owned()]
        );
        assert!(store.live_resources(0.0).await.expect("live").is_empty());
    }

    #[tokio::test]
    async fn latest_keeps_one_value_per_series_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStorage::open(&dir.path().join("vigil.db")).expect("open");
        let group = |value: u64, at: u64| MetricsGroup {
            group_type: "interface".into(),
            interval_seconds: 60,
            creation_timestamp: Datetime {
                seconds: at,
                nanoseconds: 0,
            },
            schema_version: "0.2".into(),
            resource: resource("sw1", 0).into(),
            dimensions: vec![Dimension {
                name: "interface_name".into(),
                value: "ge-0/0/0".into(),
            }],
            metrics: vec![Metric {
                name: "bits_in".into(),
                value: MetricValue::Unsigned(value),
                type_: MetricType::Counter,
                creation_timestamp: Datetime {
                    seconds: at,
                    nanoseconds: 0,
                },
            }],
        };
        store
            .store_latest(&[group(1, 10).into()])
            .await
            .expect("store");
        store
            .store_latest(&[group(u64::MAX, 20).into()])
            .await
            .expect("store");
        let latest = store.latest(Some("interface")).await.expect("latest");
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].value, u64::MAX.to_string());
        assert_eq!(
            latest[0].dimensions,
            vec![("interface_name".to_owned(), "ge-0/0/0".to_owned())]
        );
        assert!(store.latest(Some("cpu")).await.expect("latest").is_empty());
    }

    #[tokio::test]
    async fn run_history_and_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStorage::open(&dir.path().join("vigil.db")).expect("open");
        let run = |plugin: &str, at: f64| RunRecord {
            plugin: plugin.into(),
            resource_id: Some("r".into()),
            scheduled_at: at,
            started_at: at,
            finished_at: at + 1.0,
            outcome: "ok".into(),
            detail: String::new(),
        };
        store
            .record_runs(&[run("a", 1.0), run("b", 2.0), run("a", 3.0)])
            .await
            .expect("record");
        let runs = store.recent_runs(Some("a"), 10).await.expect("runs");
        assert_eq!(
            runs.iter().map(|r| r.started_at).collect::<Vec<_>>(),
            vec![3.0, 1.0]
        );
        assert!(store.status().await.expect("status").is_none());
        let status = HostStatus {
            site: "lab".into(),
            pid: 7,
            ..HostStatus::default()
        };
        store.put_status(&status).await.expect("put");
        let reader = SqliteStorage::open_read_only(&dir.path().join("vigil.db")).expect("reader");
        assert_eq!(reader.status().await.expect("status"), Some(status));
    }

    #[tokio::test]
    async fn a_database_of_an_earlier_version_has_no_agent_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vigil.db");
        Connection::open(&path)
            .expect("open")
            .execute_batch(
                "CREATE TABLE status (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);",
            )
            .expect("old schema");
        let reader = SqliteStorage::open_read_only(&path).expect("reader");
        assert!(reader.statuses().await.expect("statuses").is_empty());
    }
}
