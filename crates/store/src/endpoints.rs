//! Endpoint history (issue #14) in the embedded database: the
//! [`HistoryStore`] of `vigil-endpoints` on SQLite, the default store.
//!
//! Two tables in the host's database file (its own connection, like the
//! plugin key/value store, so a worker's writes never queue behind a
//! resource upsert on the host's connection):
//!
//! - `ept_history`: one row per (fabric, vnid, addr, node), EPT's
//!   `ept_history`: the key columns, `count` (the record's, for whoever
//!   reads the table with SQL) and `body`, the [`HistoryRecord`] (below).
//!   Its primary key (fabric, vnid, addr, node) serves
//!   [`HistoryStore::histories`] and [`HistoryStore::load_many`] (every
//!   node of one endpoint) with one range scan. It has no other index:
//!   nothing reads history by node, and the `ept_history_node` (fabric,
//!   node) index of earlier versions cost a second B-tree insert per new
//!   row, so opening drops it (below).
//! - `ept_endpoint`: one row per (fabric, vnid, addr), EPT's `ept_endpoint`:
//!   the key columns, `type` ("mac", "ipv4", "ipv6"), `count`, and `body`,
//!   the [`EndpointRecord`]. [`HistoryStore::find_endpoints`] pages in
//!   (addr, fabric, vnid) order, and each index serves one shape of it
//!   (the test `searches_are_index_range_scans_in_page_order` checks the
//!   plans): `ept_endpoint_addr` (addr; a WITHOUT ROWID table's index also
//!   holds the rest of the key, so it is in page order) an address, exact
//!   or prefix, in every fabric, and the unfiltered listing;
//!   `ept_endpoint_fabric_addr` the same within one fabric (without it
//!   such a search walks every fabric's matches or sorts them); the primary
//!   key [`HistoryStore::endpoint`] and a search within one scope. An index
//!   entry is written when an endpoint is first stored, not when it is
//!   updated (an upsert changes neither fabric nor addr): dropping both
//!   moved `ept_throughput` (100,000 new endpoints) by less than its noise.
//!
//! # Body
//!
//! `body` is a BLOB: one format byte, then the record in postcard (fields
//! in declaration order without names, integers as varints, each `f64` as
//! its 8 bytes, so timestamps read back exactly). Format 1 is the only one
//! written. A TEXT body is the JSON (EPT's field names) of versions before
//! it: such rows stay readable and become binary when their record is next
//! written; nothing rewrites the file. JSON numbers read back exactly as
//! well: this crate turns on serde_json's `float_roundtrip` (without it
//! some timestamps read back one ulp off). A row whose body does not
//! decode, or names another key than its columns, is
//! [`StoreError::Malformed`] naming the key, never returned.
//!
//! Postcard's bytes depend on the order of the model's fields and enum
//! variants: a change to [`HistoryRecord`], [`EndpointRecord`] or what
//! they hold needs a new format byte, keeping format 1's decoder (the test
//! `the_binary_format_is_pinned` fails when the encoding changes). Every
//! type involved reads back through postcard: the shared strings and flag
//! lists of the model serialize as a string and a list of strings with
//! their lengths known and deserialize through `deserialize_str` and
//! `deserialize_seq`, and nothing is skipped when serializing or read with
//! `deserialize_any`.
//!
//! Why: JSON was most of each row. The per-node records of `ept_scale`
//! (one or two events each) average 425 bytes as JSON and 129 in
//! format 1. With the node index dropped, `ept_scale` at 20,000 endpoints
//! (851,000 events, 856,000 records) ends with 0.19 GiB of database and
//! WAL instead of 0.56 GiB (about 240 bytes per record instead of 700;
//! 196 instead of 623 once checkpointed), at full scale (4.18 million
//! per-node records) 0.93 GiB instead of 2.80 GiB. Less to write is most of
//! the gain: SQLite and the kernel's file I/O (WAL appends, checkpoints)
//! were 40% of the build's profile.
//!
//! # Writes
//!
//! Writes replace the whole row (`INSERT ... ON CONFLICT DO UPDATE`), as
//! the trait asks: a worker owns each endpoint key, so there is no
//! read-modify-write race to guard against. Every call runs on tokio's
//! blocking pool, as the rest of the store does. The write-behind cache of
//! `vigil-endpoints` writes through [`HistoryStore::put_batch`]: the
//! batch's bodies are encoded on the blocking pool into one buffer before
//! the connection is taken (so one worker encodes while another's batch is
//! written; no allocation per row), then written in one transaction with
//! cached statements, the batch handed back on failure. It reads its
//! misses through [`HistoryStore::load_many`] on a second connection, so
//! one worker's reads do not wait behind another's batch.
//!
//! Measured on 2 cores shared with other builds (ranges over runs, before
//! and after the binary body and the dropped node index, same model):
//! `ept_scale` at 20,000 endpoints, 15 to 28 s before, 10 to 14 s after;
//! at full scale 102 s before, 78 s after; `ept_throughput`'s history
//! phase, 27,000 to 53,000 events/s before, 55,000 to 127,000 after.
//! `ept_scale`'s 856,000 records written again through `put_batch` alone
//! (two writers): 70,000 to 74,000 records/s before, 190,000 to 243,000
//! after, and 159,000 to 171,000 with the binary body but the node index
//! kept.
//!
//! Kept after measuring the store alone: a 64 MiB page cache per
//! connection (256 MiB: no change), a checkpoint every 4096 WAL pages
//! (16,384: within the noise, with a WAL 40 MiB larger; no checkpoints at
//! all would be about 10% faster on `ept_scale` but lets the WAL grow
//! without bound), no memory-mapped I/O (3 to 5% faster, within the
//! noise). The page size is the host file's (SQLite's 4 KiB, fixed when
//! the host's store creates it): 16 KiB pages wrote 15 to 20% faster, but
//! that is a choice for every table of the file, left to the host's store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Statement, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use vigil_endpoints::model::{EndpointKey, EndpointRecord, EndpointType, HistoryRecord};
use vigil_endpoints::store::{BatchFailed, EndpointState, HistoryStore, StoreError, WriteBatch};

use crate::sqlite::open_database;
use vigil_endpoints::query::{AddrMatch, EndpointFilter, prefix_upper};

/// The tables, and the indexes the searches use (module docs). Run on
/// every opening: an older database keeps its tables (a `body` declared
/// TEXT holds BLOBs as well) and loses the index no query used.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ept_history (
    fabric TEXT NOT NULL, vnid INTEGER NOT NULL, addr TEXT NOT NULL,
    node INTEGER NOT NULL,
    count INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (fabric, vnid, addr, node)
) WITHOUT ROWID;
DROP INDEX IF EXISTS ept_history_node;
CREATE TABLE IF NOT EXISTS ept_endpoint (
    fabric TEXT NOT NULL, vnid INTEGER NOT NULL, addr TEXT NOT NULL,
    type TEXT NOT NULL, count INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (fabric, vnid, addr)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ept_endpoint_addr ON ept_endpoint(addr);
CREATE INDEX IF NOT EXISTS ept_endpoint_fabric_addr ON ept_endpoint(fabric, addr);
";

const PUT_HISTORY: &str = "INSERT INTO ept_history (fabric, vnid, addr, node, count, body)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (fabric, vnid, addr, node)
     DO UPDATE SET count = excluded.count, body = excluded.body";

const PUT_ENDPOINT: &str = "INSERT INTO ept_endpoint (fabric, vnid, addr, type, count, body)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (fabric, vnid, addr)
     DO UPDATE SET type = excluded.type, count = excluded.count, body = excluded.body";

/// The history connection's page cache, in KiB (negative: SQLite's unit).
const HISTORY_CACHE_KIB: i64 = -65_536;

/// WAL pages after which the history connection checkpoints.
const HISTORY_WAL_PAGES: i64 = 4096;

/// The first byte of a binary `body`: format 1, the record in postcard
/// (module docs). A body stored as TEXT is the JSON of earlier versions.
const BODY_POSTCARD_V1: u8 = 1;

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

/// Appends `record`'s body (format byte, then postcard) to `out`.
fn encode_body<T: Serialize>(record: &T, mut out: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    out.push(BODY_POSTCARD_V1);
    postcard::to_extend(record, out).map_err(storage)
}

/// `record`'s body on its own.
fn body_of<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    encode_body(record, Vec::with_capacity(256))
}

/// A stored `body` as its record: a BLOB in a format this version writes
/// (its first byte), or TEXT, the JSON of versions before the binary
/// format. The error says what is wrong, for [`StoreError::Malformed`].
fn decode_body<T: DeserializeOwned>(body: ValueRef<'_>) -> Result<T, String> {
    match body {
        ValueRef::Blob([BODY_POSTCARD_V1, encoded @ ..]) => {
            let (record, rest) = postcard::take_from_bytes(encoded)
                .map_err(|e| format!("binary body (format {BODY_POSTCARD_V1}): {e}"))?;
            if rest.is_empty() {
                Ok(record)
            } else {
                Err(format!(
                    "binary body (format {BODY_POSTCARD_V1}): {} bytes after the record",
                    rest.len()
                ))
            }
        }
        ValueRef::Blob([format, ..]) => Err(format!("body in unknown format {format}")),
        ValueRef::Blob([]) => Err("empty body".to_owned()),
        ValueRef::Text(json) => serde_json::from_slice(json).map_err(|e| format!("JSON body: {e}")),
        ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => Err(format!(
            "body is {}, neither BLOB nor TEXT",
            body.data_type()
        )),
    }
}

/// A history row's `body` read back as its record, in either format
/// (binary, or the JSON of earlier versions): for tools and tests that
/// read `ept_history` with SQL rather than through [`SqliteHistory`].
pub fn decode_history_body(body: ValueRef<'_>) -> Result<HistoryRecord, String> {
    decode_body(body)
}

/// An endpoint row's `body` read back as its record, in either format
/// ([`decode_history_body`]).
pub fn decode_endpoint_body(body: ValueRef<'_>) -> Result<EndpointRecord, String> {
    decode_body(body)
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
    let mut rows = statement
        .query(params![key.fabric, key.vnid, key.addr])
        .map_err(storage)?;
    let mut histories = BTreeMap::new();
    while let Some(row) = rows.next().map_err(storage)? {
        let node = row.get::<_, i64>(0).map_err(storage)?;
        let at = || format!("{key} node {node}");
        let body = row.get_ref(1).map_err(storage)?;
        let record: HistoryRecord = decode_body(body).map_err(|e| malformed("history", at(), e))?;
        if i64::from(record.node) != node
            || record.fabric.as_str() != key.fabric.as_str()
            || record.vnid != key.vnid
            || record.addr.as_str() != key.addr.as_str()
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
    let mut statement = connection
        .prepare_cached(
            "SELECT body FROM ept_endpoint WHERE fabric = ?1 AND vnid = ?2 AND addr = ?3",
        )
        .map_err(storage)?;
    let mut rows = statement
        .query(params![key.fabric, key.vnid, key.addr])
        .map_err(storage)?;
    let Some(row) = rows.next().map_err(storage)? else {
        return Ok(None);
    };
    let body = row.get_ref(0).map_err(storage)?;
    let record: EndpointRecord =
        decode_body(body).map_err(|e| malformed("endpoint", key.to_string(), e))?;
    if record.fabric.as_str() != key.fabric.as_str()
        || record.vnid != key.vnid
        || record.addr.as_str() != key.addr.as_str()
    {
        return Err(malformed(
            "endpoint",
            key.to_string(),
            format!("body names {}", record.key()),
        ));
    }
    Ok(Some(record))
}

/// The bodies of a batch's records, encoded before the connection is
/// taken (so one worker encodes while another's batch is being written),
/// end to end in one buffer: two allocations per batch, none per record.
struct Bodies {
    bytes: Vec<u8>,
    /// Where each record's body ends in `bytes`.
    ends: Vec<usize>,
}

impl Bodies {
    fn encode<T: Serialize>(records: &[T]) -> Result<Bodies, StoreError> {
        // Most bodies take 100 to 250 bytes; the buffer grows past that.
        let mut bytes = Vec::with_capacity(records.len() * 192);
        let mut ends = Vec::with_capacity(records.len());
        for record in records {
            bytes = encode_body(record, bytes)?;
            ends.push(bytes.len());
        }
        Ok(Bodies { bytes, ends })
    }

    /// Each record's body, in order.
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let body = self.bytes.get(start..end).unwrap_or_default();
            start = end;
            body
        })
    }
}

/// A batch's records with their encoded bodies.
struct Encoded<'a> {
    histories: &'a [HistoryRecord],
    history_bodies: Bodies,
    endpoints: &'a [EndpointRecord],
    endpoint_bodies: Bodies,
}

impl<'a> Encoded<'a> {
    fn new(
        histories: &'a [HistoryRecord],
        endpoints: &'a [EndpointRecord],
    ) -> Result<Self, StoreError> {
        Ok(Encoded {
            histories,
            history_bodies: Bodies::encode(histories)?,
            endpoints,
            endpoint_bodies: Bodies::encode(endpoints)?,
        })
    }
}

fn put_history_row(
    statement: &mut Statement<'_>,
    record: &HistoryRecord,
    body: &[u8],
) -> Result<(), StoreError> {
    statement
        .execute(params![
            record.fabric.as_str(),
            record.vnid,
            record.addr.as_str(),
            record.node,
            sql_count(record.count),
            body
        ])
        .map_err(storage)?;
    Ok(())
}

fn put_endpoint_row(
    statement: &mut Statement<'_>,
    record: &EndpointRecord,
    body: &[u8],
) -> Result<(), StoreError> {
    statement
        .execute(params![
            record.fabric.as_str(),
            record.vnid,
            record.addr.as_str(),
            type_name(record.endpoint_type),
            sql_count(record.count),
            body
        ])
        .map_err(storage)?;
    Ok(())
}

/// Writes a batch in one transaction (all or nothing), in order, so a
/// later record of the same key wins.
fn write_batch(connection: &Connection, batch: &Encoded<'_>) -> Result<(), StoreError> {
    let transaction = connection.unchecked_transaction().map_err(storage)?;
    {
        let mut statement = transaction.prepare_cached(PUT_HISTORY).map_err(storage)?;
        for (record, body) in batch.histories.iter().zip(batch.history_bodies.iter()) {
            put_history_row(&mut statement, record, body)?;
        }
        let mut statement = transaction.prepare_cached(PUT_ENDPOINT).map_err(storage)?;
        for (record, body) in batch.endpoints.iter().zip(batch.endpoint_bodies.iter()) {
            put_endpoint_row(&mut statement, record, body)?;
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
    let mut rows = statement
        .query(rusqlite::params_from_iter(args))
        .map_err(storage)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(storage)? {
        let fabric = row.get_ref(0).map_err(storage)?.as_str().map_err(storage)?;
        let vnid = row.get::<_, i64>(1).map_err(storage)?;
        let addr = row.get_ref(2).map_err(storage)?.as_str().map_err(storage)?;
        let at = || format!("{fabric} vnid {vnid} {addr}");
        let body = row.get_ref(3).map_err(storage)?;
        let record: EndpointRecord =
            decode_body(body).map_err(|e| malformed("endpoint", at(), e))?;
        if record.fabric.as_str() != fabric
            || i64::from(record.vnid) != vnid
            || record.addr.as_str() != addr
        {
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
        let body = body_of(&record)?;
        self.blocking(move |c| {
            let mut statement = c.prepare_cached(PUT_HISTORY).map_err(storage)?;
            put_history_row(&mut statement, &record, &body)
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
        let body = body_of(&record)?;
        self.blocking(move |c| {
            let mut statement = c.prepare_cached(PUT_ENDPOINT).map_err(storage)?;
            put_endpoint_row(&mut statement, &record, &body)
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

    /// One transaction for the whole batch, its records encoded on the
    /// blocking pool before the connection is taken; the batch comes back
    /// on failure.
    async fn put_batch(&self, batch: WriteBatch) -> Result<(), BatchFailed> {
        let connection = self.connection.clone();
        let task = tokio::task::spawn_blocking(move || {
            let written = Encoded::new(&batch.histories, &batch.endpoints).and_then(|encoded| {
                let connection = connection
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                write_batch(&connection, &encoded)
            });
            match written {
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
    use vigil_endpoints::model::{
        EndpointEvent, EpmClass, HistoryEvent, HistoryType, LearnType, Status,
    };
    use vigil_endpoints::text::Flags;

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
        // The binary body holds each f64's 8 bytes. A JSON body (earlier
        // versions) needs serde_json's `float_roundtrip`: without it some of
        // these read back one ulp off (seen on 1765000000.1234567 + k * 0.001).
        let dir = tempfile::tempdir().map_err(storage)?;
        let path = dir.path().join("vigil.db");
        let store = SqliteHistory::open(&path)?;
        let mut r = record(101);
        r.events = (0..64)
            .map(|k| {
                let ts = 1_765_000_000.123_456_7 + f64::from(k) * 0.001;
                HistoryEvent::empty(EpmClass::MacEp, ts, Status::Created)
            })
            .collect();
        store.put_history(r.clone()).await?;
        let mut json = r.clone();
        json.node = 102;
        Connection::open(&path)
            .map_err(storage)?
            .execute(
                "INSERT INTO ept_history VALUES ('f', 7, '00:11:22:33:44:55', 102, 3, ?1)",
                [serde_json::to_string(&json).map_err(storage)?],
            )
            .map_err(storage)?;
        let got = store.histories(&r_key()).await?;
        assert_eq!(got.get(&101), Some(&r));
        assert_eq!(got.get(&102), Some(&json));
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

    /// A history record with every field set: several events (each class
    /// and status), flags, empty strings among the set ones, non-ASCII
    /// text, extreme numbers.
    fn full_history(node: u32) -> HistoryRecord {
        let classes = [EpmClass::MacEp, EpmClass::IpEp, EpmClass::RsMacEpToIpEpAtt];
        let statuses = [Status::Created, Status::Modified, Status::Deleted];
        let events = (0..3u32)
            .map(|k| HistoryEvent {
                classname: classes[k as usize],
                ts: 1_765_000_000.123_456_7 + f64::from(k) * 0.001,
                status: statuses[k as usize],
                remote: if k == 0 { 0 } else { u32::MAX - k },
                pctag: [32_770, -1, i64::MIN][k as usize],
                flags: match k {
                    0 => Flags::new(["local", "vpc-attached"]),
                    1 => Flags::default(),
                    _ => Flags::new(["svi", "peer-attached", "local"]),
                },
                tunnel_flags: if k == 1 {
                    ""
                } else {
                    "proxy-acast-v4,physical"
                }
                .into(),
                encap: "vlan-100".into(),
                intf_id: if k == 2 { "" } else { "tunnel12" }.into(),
                intf_name: "".into(),
                epg_name: "uni/tn-t\u{e9}/ap-app/epg-\u{1f600}".into(),
                vnid_name: "uni/tn-t0/BD-bd0".into(),
                rw_mac: "00:50:56:00:00:01".into(),
                rw_bd: 15_000_000 + k,
            })
            .collect();
        HistoryRecord {
            fabric: "fab1".into(),
            node,
            vnid: 2_000_000,
            addr: "2001:db8::1".into(),
            history_type: HistoryType::Ip,
            count: u64::MAX,
            events,
            is_stale: true,
            is_offsubnet: true,
        }
    }

    /// An endpoint record with every field set (a delete among its events).
    fn full_endpoint() -> EndpointRecord {
        let event = |node: u32, status: Status, intf: &str| EndpointEvent {
            node,
            pod: if node == 0 { 0 } else { 1 },
            status,
            ts: 1_765_000_000.987_654_3 + f64::from(node),
            pctag: -32_770,
            encap: "vxlan-16777209".into(),
            intf_id: intf.into(),
            intf_name: if intf.is_empty() {
                ""
            } else {
                "vpc-policy-0-0"
            }
            .into(),
            rw_mac: "00:50:56:00:00:01".into(),
            rw_bd: 15_000_000,
            epg_name: "uni/tn-t0/ap-app/epg-epg0".into(),
            vnid_name: "".into(),
        };
        EndpointRecord {
            fabric: "fab1".into(),
            vnid: 2_000_000,
            addr: "2001:db8::1".into(),
            endpoint_type: EndpointType::Ipv6,
            count: 1 << 40,
            events: vec![
                event(0, Status::Deleted, ""),
                event(6_619_238, Status::Modified, "vpc-1"),
                event(101, Status::Created, "eth1/1"),
            ],
            first_learn: event(101, Status::Created, "eth1/1"),
            learn_type: LearnType::Overlay,
            is_stale: true,
            is_offsubnet: true,
        }
    }

    fn full_key() -> EndpointKey {
        full_endpoint().key()
    }

    #[test]
    fn bodies_round_trip_through_the_binary_format() -> Result<(), StoreError> {
        let empty = HistoryRecord {
            fabric: "".into(),
            node: 0,
            vnid: 0,
            addr: "".into(),
            history_type: HistoryType::Mac,
            count: 0,
            events: vec![HistoryEvent::empty(EpmClass::MacEp, 0.0, Status::Created)],
            is_stale: false,
            is_offsubnet: false,
        };
        for history in [full_history(101), empty, record(101)] {
            let body = body_of(&history)?;
            assert_eq!(body.first(), Some(&BODY_POSTCARD_V1));
            let back: HistoryRecord = decode_body(ValueRef::Blob(&body))
                .map_err(|e| malformed("history", "test".into(), e))?;
            assert_eq!(back, history);
        }
        let endpoint = full_endpoint();
        let body = body_of(&endpoint)?;
        let back: EndpointRecord = decode_body(ValueRef::Blob(&body))
            .map_err(|e| malformed("endpoint", "test".into(), e))?;
        assert_eq!(back, endpoint);
        // Well under half the JSON (no field names, numbers in binary).
        let json = serde_json::to_vec(&endpoint).map_err(storage)?;
        assert!(
            body.len() * 2 < json.len(),
            "{} vs {}",
            body.len(),
            json.len()
        );
        Ok(())
    }

    #[tokio::test]
    async fn records_round_trip_through_the_store() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(storage)?;
        let path = dir.path().join("vigil.db");
        let store = SqliteHistory::open(&path)?;
        let histories: Vec<HistoryRecord> = [101, 102, 201].map(full_history).into();
        let batch = WriteBatch {
            histories: histories.clone(),
            endpoints: vec![full_endpoint()],
        };
        store
            .put_batch(batch)
            .await
            .map_err(|failed| failed.error)?;
        let states = store.load_many(&[full_key()]).await?;
        let [state] = states.as_slice() else {
            panic!("{} states", states.len());
        };
        let by_node: BTreeMap<u32, HistoryRecord> =
            histories.into_iter().map(|h| (h.node, h)).collect();
        assert_eq!(state.histories, by_node);
        assert_eq!(state.endpoint, Some(full_endpoint()));
        let found = store
            .find_endpoints(&EndpointFilter::all(), None, 10)
            .await?;
        assert_eq!(found, vec![full_endpoint()]);
        // Stored as BLOBs; the count column saturates, the body does not.
        let c = Connection::open(&path).map_err(storage)?;
        let types: Vec<(String, i64)> = c
            .prepare("SELECT typeof(body), count FROM ept_history")
            .map_err(storage)?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(storage)?
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        assert_eq!(types, vec![("blob".to_owned(), i64::MAX); 3]);
        Ok(())
    }

    /// The schema of versions that stored bodies as JSON text.
    const JSON_SCHEMA: &str = "
        CREATE TABLE ept_history (
            fabric TEXT NOT NULL, vnid INTEGER NOT NULL, addr TEXT NOT NULL,
            node INTEGER NOT NULL,
            count INTEGER NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (fabric, vnid, addr, node)
        ) WITHOUT ROWID;
        CREATE INDEX ept_history_node ON ept_history(fabric, node);
        CREATE TABLE ept_endpoint (
            fabric TEXT NOT NULL, vnid INTEGER NOT NULL, addr TEXT NOT NULL,
            type TEXT NOT NULL, count INTEGER NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (fabric, vnid, addr)
        ) WITHOUT ROWID;
        CREATE INDEX ept_endpoint_addr ON ept_endpoint(addr);
        CREATE INDEX ept_endpoint_fabric_addr ON ept_endpoint(fabric, addr);
    ";

    #[tokio::test]
    async fn rows_of_earlier_versions_are_still_read() -> Result<(), StoreError> {
        // A database written before the binary format: JSON text bodies and
        // the per-node index.
        let dir = tempfile::tempdir().map_err(storage)?;
        let path = dir.path().join("vigil.db");
        let old = full_history(101);
        let endpoint = full_endpoint();
        {
            let c = Connection::open(&path).map_err(storage)?;
            c.execute_batch(JSON_SCHEMA).map_err(storage)?;
            c.execute(
                "INSERT INTO ept_history VALUES (?1, ?2, ?3, ?4, 3, ?5)",
                params![
                    old.fabric.as_str(),
                    old.vnid,
                    old.addr.as_str(),
                    old.node,
                    serde_json::to_string(&old).map_err(storage)?
                ],
            )
            .map_err(storage)?;
            c.execute(
                "INSERT INTO ept_endpoint VALUES (?1, ?2, ?3, 'ipv6', 3, ?4)",
                params![
                    endpoint.fabric.as_str(),
                    endpoint.vnid,
                    endpoint.addr.as_str(),
                    serde_json::to_string(&endpoint).map_err(storage)?
                ],
            )
            .map_err(storage)?;
        }
        let store = SqliteHistory::open(&path)?;
        assert_eq!(store.histories(&full_key()).await?.get(&101), Some(&old));
        assert_eq!(store.endpoint(&full_key()).await?, Some(endpoint.clone()));
        let found = store
            .find_endpoints(&EndpointFilter::all(), None, 10)
            .await?;
        assert_eq!(found, vec![endpoint]);
        // New writes are binary beside the old text rows, and both read.
        let new = full_history(102);
        store.put_history(new.clone()).await?;
        let c = Connection::open(&path).map_err(storage)?;
        let types: Vec<(i64, String)> = c
            .prepare("SELECT node, typeof(body) FROM ept_history ORDER BY node")
            .map_err(storage)?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(storage)?
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        assert_eq!(types, [(101, "text".to_owned()), (102, "blob".to_owned())]);
        let states = store.load_many(&[full_key()]).await?;
        let histories = states.first().map(|s| s.histories.clone());
        assert_eq!(histories, Some([(101, old), (102, new)].into()));
        // The index no query used is gone; the search indexes stay.
        let indexes: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ept_%' ORDER BY name")
            .map_err(storage)?
            .query_map([], |row| row.get(0))
            .map_err(storage)?
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        assert_eq!(indexes, ["ept_endpoint_addr", "ept_endpoint_fabric_addr"]);
        Ok(())
    }

    #[tokio::test]
    async fn a_body_that_does_not_decode_is_malformed_and_names_its_key() -> Result<(), StoreError>
    {
        let dir = tempfile::tempdir().map_err(storage)?;
        let path = dir.path().join("vigil.db");
        let store = SqliteHistory::open(&path)?;
        store.put_history(full_history(101)).await?;
        store.put_endpoint(full_endpoint()).await?;
        let good = body_of(&full_history(101))?;
        let mut trailing = good.clone();
        trailing.push(0);
        let mut unknown = good.clone();
        if let Some(format) = unknown.first_mut() {
            *format = 9;
        }
        let truncated = good.get(..good.len() / 2).unwrap_or_default().to_vec();
        let c = Connection::open(&path).map_err(storage)?;
        let bodies = [
            (rusqlite::types::Value::Blob(trailing), "after the record"),
            (rusqlite::types::Value::Blob(unknown), "unknown format 9"),
            (rusqlite::types::Value::Blob(truncated), "binary body"),
            (rusqlite::types::Value::Blob(Vec::new()), "empty body"),
            (rusqlite::types::Value::Integer(7), "body is Integer"),
            (rusqlite::types::Value::Text("{".into()), "JSON body"),
        ];
        for (body, problem) in bodies {
            c.execute("UPDATE ept_history SET body = ?1", [&body])
                .map_err(storage)?;
            let error = store.histories(&full_key()).await.err();
            let Some(StoreError::Malformed {
                what,
                key,
                problem: got,
            }) = error
            else {
                panic!("{body:?}: {error:?}");
            };
            assert_eq!(what, "history");
            assert_eq!(key, "fab1 vnid 2000000 2001:db8::1 node 101");
            assert!(got.contains(problem), "{body:?}: {got}");
            c.execute("UPDATE ept_endpoint SET body = ?1", [&body])
                .map_err(storage)?;
            for error in [
                store.endpoint(&full_key()).await.err(),
                store
                    .find_endpoints(&EndpointFilter::all(), None, 10)
                    .await
                    .err(),
            ] {
                assert!(
                    matches!(&error, Some(StoreError::Malformed { what: "endpoint", key, .. })
                        if key == "fab1 vnid 2000000 2001:db8::1"),
                    "{body:?}: {error:?}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn the_binary_format_is_pinned() -> Result<(), StoreError> {
        // Postcard writes fields in declaration order and enum variants by
        // index, without names: a change to the model (a field added,
        // removed or moved, a variant reordered) changes these bytes and
        // would misread every stored body. If this fails, keep the old
        // model's decoder under format 1 and write the new model as
        // format 2.
        let mut event = HistoryEvent::empty(EpmClass::IpEp, 1.5, Status::Modified);
        event.remote = 300;
        event.pctag = -2;
        event.flags = Flags::new(["local", "vpc-attached"]);
        event.tunnel_flags = "t".into();
        event.encap = "e".into();
        event.intf_id = "i".into();
        event.intf_name = "n".into();
        event.epg_name = "g".into();
        event.vnid_name = "v".into();
        event.rw_mac = "m".into();
        event.rw_bd = 5;
        let history = HistoryRecord {
            fabric: "f".into(),
            node: 101,
            vnid: 7,
            addr: "a".into(),
            history_type: HistoryType::Ip,
            count: 2,
            events: vec![event],
            is_stale: true,
            is_offsubnet: false,
        };
        let mut endpoint_event = EndpointEvent {
            node: 101,
            pod: 1,
            status: Status::Deleted,
            ts: 2.5,
            pctag: 3,
            encap: "e".into(),
            intf_id: "i".into(),
            intf_name: "n".into(),
            rw_mac: "m".into(),
            rw_bd: 4,
            epg_name: "g".into(),
            vnid_name: "v".into(),
        };
        let endpoint = EndpointRecord {
            fabric: "f".into(),
            vnid: 7,
            addr: "a".into(),
            endpoint_type: EndpointType::Ipv6,
            count: 1,
            events: vec![endpoint_event.clone()],
            first_learn: {
                endpoint_event.status = Status::Created;
                endpoint_event
            },
            learn_type: LearnType::Psvi,
            is_stale: false,
            is_offsubnet: true,
        };
        let hex = |bytes: Vec<u8>| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        assert_eq!(
            hex(body_of(&history)?),
            "0101666507016101020101000000000000f83f01ac020302056c6f63616c0c7670632d6174746163686564017401650169016e01670176016d050100"
        );
        assert_eq!(
            hex(body_of(&endpoint)?),
            "01016607016102010165010200000000000004400601650169016e016d040167017665010000000000000004400601650169016e016d0401670176040001"
        );
        Ok(())
    }
}
