//! Endpoint history (issue #14) in the embedded database: the
//! [`HistoryStore`] of `vigil-endpoints` on SQLite, the default store.
//!
//! Two tables in the host's database file (its own connection, like the
//! plugin key/value store, so a worker's writes never queue behind a
//! resource upsert on the host's connection):
//!
//! - `ept_history`: one row per (fabric, vnid, addr, node), EPT's
//!   `ept_history`: the key columns, `count`, and `body`, the
//!   [`HistoryRecord`] as JSON with EPT's field names (`node`, `type`,
//!   `count`, `events` newest first with `intf_id`, `pctag`, `rw_mac`, ...).
//!   Its primary key (fabric, vnid, addr, node) serves
//!   [`HistoryStore::histories`] (every node of one endpoint) with one range
//!   scan; `ept_history_node` (fabric, node) serves per-node queries.
//! - `ept_endpoint`: one row per (fabric, vnid, addr), EPT's `ept_endpoint`:
//!   the key columns, `type` ("mac", "ipv4", "ipv6"), `count`, and `body`,
//!   the [`EndpointRecord`] as JSON. `ept_endpoint_addr` (addr) serves
//!   searches by address across fabrics and scopes.
//!
//! Writes replace the whole row (`INSERT ... ON CONFLICT DO UPDATE`), as
//! the trait asks: a worker owns each endpoint key, so there is no
//! read-modify-write race to guard against. Numbers in the JSON are exact:
//! `ts` is written in the shortest form that reads back as the same `f64`
//! (this crate turns on serde_json's `float_roundtrip`; without it some
//! timestamps read back one ulp off), counts as integers. A row whose body does not parse, or names another
//! key than its columns, is reported as [`StoreError::Malformed`], never
//! returned.
//!
//! Every call runs on tokio's blocking pool, as the rest of the store does.
//! The write-behind cache of `vigil-endpoints` writes through
//! [`HistoryStore::put_batch`] (one transaction per batch, the rows
//! serialised on the blocking pool, the batch handed back on failure) and
//! reads its misses through [`HistoryStore::load_many`] on a second
//! connection, so one worker's reads do not wait behind another's batch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use vigil_endpoints::model::{EndpointKey, EndpointRecord, EndpointType, HistoryRecord};
use vigil_endpoints::store::{BatchFailed, EndpointState, HistoryStore, StoreError, WriteBatch};

use crate::sqlite::open_database;
use vigil_endpoints::query::{AddrMatch, EndpointFilter, prefix_upper};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ept_history (
    fabric TEXT NOT NULL, vnid INTEGER NOT NULL, addr TEXT NOT NULL,
    node INTEGER NOT NULL,
    count INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (fabric, vnid, addr, node)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ept_history_node ON ept_history(fabric, node);
CREATE TABLE IF NOT EXISTS ept_endpoint (
    fabric TEXT NOT NULL, vnid INTEGER NOT NULL, addr TEXT NOT NULL,
    type TEXT NOT NULL, count INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (fabric, vnid, addr)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ept_endpoint_addr ON ept_endpoint(addr);
CREATE INDEX IF NOT EXISTS ept_endpoint_fabric_addr ON ept_endpoint(fabric, addr);
";

/// The history connection's page cache, in KiB (negative: SQLite's unit).
const HISTORY_CACHE_KIB: i64 = -65_536;

/// WAL pages after which the history connection checkpoints.
const HISTORY_WAL_PAGES: i64 = 4096;

/// Endpoint history in the embedded database. Cloning shares the
/// connection.
#[derive(Clone)]
pub struct SqliteHistory {
    connection: Arc<Mutex<Connection>>,
    /// A second connection for [`HistoryStore::load_many`], so a worker's
    /// reads do not queue behind another worker's batch write (WAL lets
    /// readers run beside the writer; a reader sees committed records). The
    /// same connection as `connection` when opened read-only.
    loader: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteHistory").finish_non_exhaustive()
    }
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Storage(Box::new(e))
}

fn malformed(what: &'static str, key: String, problem: impl ToString) -> StoreError {
    StoreError::Malformed {
        what,
        key,
        problem: problem.to_string(),
    }
}

impl SqliteHistory {
    /// Opens (creating if needed) the database at `path` (the host's
    /// database file) and its endpoint tables.
    pub fn open(path: &Path) -> Result<SqliteHistory, StoreError> {
        let connection = open_database(path, SCHEMA).map_err(storage)?;
        // History is written in large batches at random keys: a page cache
        // of its own (64 MiB, against SQLite's 2 MiB default) keeps the
        // upper levels of both tables' B-trees in memory.
        connection
            .pragma_update(None, "cache_size", HISTORY_CACHE_KIB)
            .map_err(storage)?;
        // Checkpoint after 16 MiB of WAL rather than 4 MiB: a page that
        // several batches rewrite (the endpoint table's) is copied back once.
        connection
            .pragma_update(None, "wal_autocheckpoint", HISTORY_WAL_PAGES)
            .map_err(storage)?;
        let loader = Connection::open(path).map_err(storage)?;
        loader
            .busy_timeout(crate::kv::BUSY_TIMEOUT)
            .map_err(storage)?;
        loader
            .pragma_update(None, "cache_size", HISTORY_CACHE_KIB)
            .map_err(storage)?;
        Ok(SqliteHistory {
            connection: Arc::new(Mutex::new(connection)),
            loader: Arc::new(Mutex::new(loader)),
        })
    }

    /// Opens an existing database read-only (for the CLI). Its tables must
    /// exist: a host that stored history created them.
    pub fn open_read_only(path: &Path) -> Result<SqliteHistory, StoreError> {
        let connection =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(storage)?;
        connection
            .busy_timeout(crate::kv::BUSY_TIMEOUT)
            .map_err(storage)?;
        Ok(SqliteHistory::with(connection))
    }

    /// Whether the database holds the endpoint tables (a host that stored
    /// history created them); a read-only opening cannot create them.
    pub async fn has_tables(&self) -> Result<bool, StoreError> {
        self.blocking(|c| {
            c.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'ept_endpoint'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(storage)
        })
        .await
    }

    fn with(connection: Connection) -> SqliteHistory {
        let connection = Arc::new(Mutex::new(connection));
        SqliteHistory {
            loader: connection.clone(),
            connection,
        }
    }

    /// Runs `call` on the blocking pool with the connection.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            // A panic mid-statement leaves SQLite consistent (each write is
            // one statement), so a poisoned lock is safe to keep using.
            let connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            call(&connection)
        })
        .await
        .map_err(storage)?
    }
}

/// A u64 count as SQLite's signed integer (saturating; counts never get
/// near 2^63).
fn sql_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn type_name(t: EndpointType) -> &'static str {
    match t {
        EndpointType::Mac => "mac",
        EndpointType::Ipv4 => "ipv4",
        EndpointType::Ipv6 => "ipv6",
    }
}

fn read_histories(
    connection: &Connection,
    key: &EndpointKey,
) -> Result<BTreeMap<u32, HistoryRecord>, StoreError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT node, body FROM ept_history WHERE fabric = ?1 AND vnid = ?2 AND addr = ?3",
        )
        .map_err(storage)?;
    let rows = statement
        .query_map(params![key.fabric, key.vnid, key.addr], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(storage)?;
    let mut histories = BTreeMap::new();
    for row in rows {
        let (node, body) = row.map_err(storage)?;
        let at = || format!("{key} node {node}");
        let record: HistoryRecord =
            serde_json::from_str(&body).map_err(|e| malformed("history", at(), e))?;
        if i64::from(record.node) != node
            || record.fabric != key.fabric
            || record.vnid != key.vnid
            || record.addr != key.addr
        {
            return Err(malformed(
                "history",
                at(),
                format!(
                    "body names {} vnid {} {} node {}",
                    record.fabric, record.vnid, record.addr, record.node
                ),
            ));
        }
        histories.insert(record.node, record);
    }
    Ok(histories)
}

fn read_endpoint(
    connection: &Connection,
    key: &EndpointKey,
) -> Result<Option<EndpointRecord>, StoreError> {
    let body: Option<String> = connection
        .prepare_cached(
            "SELECT body FROM ept_endpoint WHERE fabric = ?1 AND vnid = ?2 AND addr = ?3",
        )
        .map_err(storage)?
        .query_row(params![key.fabric, key.vnid, key.addr], |row| row.get(0))
        .optional()
        .map_err(storage)?;
    let Some(body) = body else {
        return Ok(None);
    };
    let record: EndpointRecord =
        serde_json::from_str(&body).map_err(|e| malformed("endpoint", key.to_string(), e))?;
    if record.key() != *key {
        return Err(malformed(
            "endpoint",
            key.to_string(),
            format!("body names {}", record.key()),
        ));
    }
    Ok(Some(record))
}

/// Writes `histories` and `endpoints` in one transaction (all or nothing),
/// in order, so a later record of the same key wins.
fn write_batch(
    connection: &Connection,
    histories: &[HistoryRecord],
    endpoints: &[EndpointRecord],
) -> Result<(), StoreError> {
    let transaction = connection.unchecked_transaction().map_err(storage)?;
    {
        let mut statement = transaction
            .prepare_cached(
                "INSERT INTO ept_history (fabric, vnid, addr, node, count, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (fabric, vnid, addr, node)
                 DO UPDATE SET count = excluded.count, body = excluded.body",
            )
            .map_err(storage)?;
        let mut body = Vec::with_capacity(1024);
        for record in histories {
            body.clear();
            serde_json::to_writer(&mut body, record).map_err(storage)?;
            let text = std::str::from_utf8(&body).map_err(storage)?;
            statement
                .execute(params![
                    record.fabric,
                    record.vnid,
                    record.addr,
                    record.node,
                    sql_count(record.count),
                    text
                ])
                .map_err(storage)?;
        }
        let mut statement = transaction
            .prepare_cached(
                "INSERT INTO ept_endpoint (fabric, vnid, addr, type, count, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (fabric, vnid, addr)
                 DO UPDATE SET type = excluded.type, count = excluded.count,
                               body = excluded.body",
            )
            .map_err(storage)?;
        for record in endpoints {
            body.clear();
            serde_json::to_writer(&mut body, record).map_err(storage)?;
            let text = std::str::from_utf8(&body).map_err(storage)?;
            statement
                .execute(params![
                    record.fabric,
                    record.vnid,
                    record.addr,
                    type_name(record.endpoint_type),
                    sql_count(record.count),
                    text
                ])
                .map_err(storage)?;
        }
    }
    transaction.commit().map_err(storage)
}

/// [`HistoryStore::find_endpoints`]: one statement, an index range scan
/// in page order (`ept_endpoint_addr`, which holds (addr, fabric, vnid) as
/// a WITHOUT ROWID table's index does; `ept_endpoint_fabric_addr` within a
/// fabric; the primary key within a scope).
fn find_endpoints(
    connection: &Connection,
    filter: &EndpointFilter,
    after: Option<&EndpointKey>,
    limit: usize,
) -> Result<Vec<EndpointRecord>, StoreError> {
    let (sql, args) = find_sql(filter, after, limit);
    let mut statement = connection.prepare_cached(&sql).map_err(storage)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(args), |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .map_err(storage)?;
    let mut records = Vec::new();
    for row in rows {
        let (fabric, vnid, addr, body) = row.map_err(storage)?;
        let at = || format!("{fabric} vnid {vnid} {addr}");
        let record: EndpointRecord =
            serde_json::from_str(&body).map_err(|e| malformed("endpoint", at(), e))?;
        if record.fabric != fabric || i64::from(record.vnid) != vnid || record.addr != addr {
            return Err(malformed(
                "endpoint",
                at(),
                format!("body names {}", record.key()),
            ));
        }
        records.push(record);
    }
    Ok(records)
}

/// The statement of [`find_endpoints`] and its arguments.
fn find_sql(
    filter: &EndpointFilter,
    after: Option<&EndpointKey>,
    limit: usize,
) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = String::from("SELECT fabric, vnid, addr, body FROM ept_endpoint WHERE 1");
    let mut args: Vec<Value> = Vec::new();
    match &filter.addr {
        AddrMatch::Any => {}
        AddrMatch::Exact(addr) => {
            sql.push_str(" AND addr = ?");
            args.push(Value::Text(addr.clone()));
        }
        AddrMatch::Prefix(prefix) => {
            sql.push_str(" AND addr >= ?");
            args.push(Value::Text(prefix.clone()));
            if let Some(upper) = prefix_upper(prefix) {
                sql.push_str(" AND addr < ?");
                args.push(Value::Text(upper));
            }
        }
    }
    if let Some(fabric) = &filter.fabric {
        sql.push_str(" AND fabric = ?");
        args.push(Value::Text(fabric.clone()));
    }
    if let Some(vnid) = filter.vnid {
        sql.push_str(" AND vnid = ?");
        args.push(Value::Integer(i64::from(vnid)));
    }
    if let Some(after) = after {
        sql.push_str(" AND (addr, fabric, vnid) > (?, ?, ?)");
        args.push(Value::Text(after.addr.clone()));
        args.push(Value::Text(after.fabric.clone()));
        args.push(Value::Integer(i64::from(after.vnid)));
    }
    sql.push_str(" ORDER BY addr, fabric, vnid LIMIT ?");
    args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    (sql, args)
}

#[async_trait::async_trait]
impl HistoryStore for SqliteHistory {
    async fn histories(
        &self,
        key: &EndpointKey,
    ) -> Result<BTreeMap<u32, HistoryRecord>, StoreError> {
        let key = key.clone();
        self.blocking(move |c| read_histories(c, &key)).await
    }

    async fn put_history(&self, record: HistoryRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(&record).map_err(storage)?;
        self.blocking(move |c| {
            c.prepare_cached(
                "INSERT INTO ept_history (fabric, vnid, addr, node, count, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (fabric, vnid, addr, node)
                 DO UPDATE SET count = excluded.count, body = excluded.body",
            )
            .map_err(storage)?
            .execute(params![
                record.fabric,
                record.vnid,
                record.addr,
                record.node,
                sql_count(record.count),
                body
            ])
            .map_err(storage)?;
            Ok(())
        })
        .await
    }

    async fn endpoint(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>, StoreError> {
        let key = key.clone();
        self.blocking(move |c| read_endpoint(c, &key)).await
    }

    async fn find_endpoints(
        &self,
        filter: &EndpointFilter,
        after: Option<&EndpointKey>,
        limit: usize,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let (filter, after) = (filter.clone(), after.cloned());
        self.blocking(move |c| find_endpoints(c, &filter, after.as_ref(), limit))
            .await
    }

    async fn put_endpoint(&self, record: EndpointRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(&record).map_err(storage)?;
        self.blocking(move |c| {
            c.prepare_cached(
                "INSERT INTO ept_endpoint (fabric, vnid, addr, type, count, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (fabric, vnid, addr)
                 DO UPDATE SET type = excluded.type, count = excluded.count,
                               body = excluded.body",
            )
            .map_err(storage)?
            .execute(params![
                record.fabric,
                record.vnid,
                record.addr,
                type_name(record.endpoint_type),
                sql_count(record.count),
                body
            ])
            .map_err(storage)?;
            Ok(())
        })
        .await
    }

    /// One blocking call for all keys (the write-behind cache's misses).
    async fn load_many(&self, keys: &[EndpointKey]) -> Result<Vec<EndpointState>, StoreError> {
        let keys = keys.to_vec();
        let loader = self.loader.clone();
        tokio::task::spawn_blocking(move || {
            let c = loader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // One read transaction: every key as of one commit.
            let read = c.unchecked_transaction().map_err(storage)?;
            let states = keys
                .iter()
                .map(|key| {
                    Ok(EndpointState {
                        histories: read_histories(&read, key)?,
                        endpoint: read_endpoint(&read, key)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            read.finish().map_err(storage)?;
            Ok(states)
        })
        .await
        .map_err(storage)?
    }

    /// One transaction for the whole batch, serialised row by row on the
    /// blocking pool; the batch comes back on failure.
    async fn put_batch(&self, batch: WriteBatch) -> Result<(), BatchFailed> {
        let connection = self.connection.clone();
        let task = tokio::task::spawn_blocking(move || {
            let connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match write_batch(&connection, &batch.histories, &batch.endpoints) {
                Ok(()) => Ok(()),
                Err(error) => Err(BatchFailed { error, batch }),
            }
        });
        match task.await {
            Ok(result) => result,
            // The batch was lost with the task (a panic): nothing to hand back.
            Err(joined) => Err(BatchFailed {
                error: storage(joined),
                batch: WriteBatch::default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_endpoints::model::{EpmClass, HistoryEvent, HistoryType, Status};

    fn record(node: u32) -> HistoryRecord {
        HistoryRecord {
            fabric: "f".into(),
            node,
            vnid: 7,
            addr: "00:11:22:33:44:55".into(),
            history_type: HistoryType::Mac,
            count: 3,
            events: vec![HistoryEvent::empty(EpmClass::MacEp, 0.1, Status::Created)],
            is_stale: false,
            is_offsubnet: false,
        }
    }

    #[tokio::test]
    async fn timestamps_read_back_to_the_last_bit() -> Result<(), StoreError> {
        // Without serde_json's `float_roundtrip`, some of these read back one
        // ulp off (seen on 1765000000.1234567 + k * 0.001).
        let dir = tempfile::tempdir().map_err(storage)?;
        let store = SqliteHistory::open(&dir.path().join("vigil.db"))?;
        let mut r = record(101);
        r.events = (0..64)
            .map(|k| {
                let ts = 1_765_000_000.123_456_7 + f64::from(k) * 0.001;
                HistoryEvent::empty(EpmClass::MacEp, ts, Status::Created)
            })
            .collect();
        store.put_history(r.clone()).await?;
        let got = store.histories(&r_key()).await?;
        assert_eq!(got.get(&101), Some(&r));
        Ok(())
    }

    #[tokio::test]
    async fn shares_the_hosts_database_file() -> Result<(), StoreError> {
        // The host's store and the history on one file, each with its own
        // connection; a read-only opening (the CLI) sees the history and
        // cannot write it.
        let dir = tempfile::tempdir().map_err(storage)?;
        let path = dir.path().join("vigil.db");
        let host = crate::sqlite::SqliteStorage::open(&path).map_err(storage)?;
        let history = SqliteHistory::open(&path)?;
        history.put_history(record(101)).await?;
        let status = crate::HostStatus::default();
        crate::Storage::put_status(&host, &status)
            .await
            .map_err(storage)?;
        let reader = SqliteHistory::open_read_only(&path)?;
        assert_eq!(reader.histories(&r_key()).await?.len(), 1);
        let refused = reader.put_history(record(102)).await;
        assert!(
            matches!(refused, Err(StoreError::Storage(_))),
            "{refused:?}"
        );
        assert_eq!(
            crate::Storage::statuses(&host)
                .await
                .map_err(storage)?
                .len(),
            1
        );
        Ok(())
    }

    fn r_key() -> EndpointKey {
        EndpointKey {
            fabric: "f".into(),
            vnid: 7,
            addr: "00:11:22:33:44:55".into(),
        }
    }

    #[tokio::test]
    async fn a_body_that_disagrees_with_its_key_is_malformed() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(storage)?;
        let path = dir.path().join("vigil.db");
        let store = SqliteHistory::open(&path)?;
        store.put_history(record(101)).await?;
        let key = EndpointKey {
            fabric: "f".into(),
            vnid: 7,
            addr: "00:11:22:33:44:55".into(),
        };
        assert_eq!(store.histories(&key).await?.len(), 1);
        // Another writer moved the row under a different node.
        let c = Connection::open(&path).map_err(storage)?;
        c.execute("UPDATE ept_history SET node = 102", [])
            .map_err(storage)?;
        let error = store.histories(&key).await.err();
        assert!(
            matches!(error, Some(StoreError::Malformed { .. })),
            "{error:?}"
        );
        c.execute("UPDATE ept_history SET node = 101, body = '{'", [])
            .map_err(storage)?;
        let error = store.histories(&key).await.err();
        assert!(
            matches!(error, Some(StoreError::Malformed { .. })),
            "{error:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn searches_are_index_range_scans_in_page_order() -> Result<(), StoreError> {
        use vigil_endpoints::query::{AddrMatch, EndpointFilter};
        let dir = tempfile::tempdir().map_err(storage)?;
        let path = dir.path().join("vigil.db");
        SqliteHistory::open(&path)?;
        let c = Connection::open(&path).map_err(storage)?;
        c.execute_batch("ANALYZE").map_err(storage)?;
        let after = r_key();
        let prefix = AddrMatch::Prefix("10.1.".into());
        let filters = [
            (None, None, prefix.clone()),
            (Some("f"), None, prefix.clone()),
            (Some("f"), Some(7), prefix),
            (Some("f"), None, AddrMatch::Any),
            (None, None, AddrMatch::Exact("10.1.1.1".into())),
            (None, None, AddrMatch::Any),
        ];
        for (fabric, vnid, addr) in filters {
            let filter = EndpointFilter {
                fabric: fabric.map(str::to_owned),
                vnid,
                addr,
            };
            for after in [None, Some(&after)] {
                let (sql, args) = find_sql(&filter, after, 10);
                let mut statement = c
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .map_err(storage)?;
                let plan: Vec<String> = statement
                    .query_map(rusqlite::params_from_iter(args), |row| {
                        row.get::<_, String>(3)
                    })
                    .map_err(storage)?
                    .collect::<Result<_, _>>()
                    .map_err(storage)?;
                let plan = plan.join("; ");
                // An index, and no sort of the matches (the index gives the
                // page order), except the whole-table scan, which is the
                // address index's order too.
                assert!(
                    plan.contains("INDEX") || plan.contains("PRIMARY KEY"),
                    "{filter:?}: {plan}"
                );
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: {plan}");
            }
        }
        Ok(())
    }
}
