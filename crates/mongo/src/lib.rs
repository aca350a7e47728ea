//! MongoDB behind [`Storage`], for sites that keep their state in a shared
//! document store. The embedded [`SqliteStorage`](vigil_store::sqlite::SqliteStorage)
//! stays the default; this backend has the same semantics method for method.
//!
//! Every document is keyed by its natural key, so every write is an upsert
//! and a retried write (after a timeout, a reconnect, a host restart) leaves
//! the same state as one that went through once. Indexes are created when
//! the store opens; their names are never relied on.
//!
//! # Collections and document shapes
//!
//! - `resources`: one document per discovered resource.
//!   `{_id: <resource id>, site, endpoint, class, subclass, type,
//!   metadata: [[key, value], ...], creation_plugin, creation_timestamp: f64,
//!   ttl_seconds: i64, discovered_by, first_seen: f64, last_seen: f64,
//!   expires_at: f64}`. `discovered_by` is the owner. Ownership is kept by
//!   conditional writes, not by a transaction: a refresh matches
//!   `{_id, discovered_by: <plugin>}` (so it can never touch another
//!   plugin's record) and `$set`s everything but the owner, `site`,
//!   `creation_*` and `first_seen`; a new resource is an upsert on the same
//!   filter, so if another plugin inserted the id meanwhile the filter
//!   misses and the insert fails on the `_id` (duplicate key, counted as a
//!   conflict); an expired record not yet swept is taken only by a
//!   compare-and-set on its owner and expiry. The budget is one count of
//!   the plugin's live documents per run (a plugin's discovery never runs
//!   twice at once). Indexes: `expires_at`; `discovered_by, expires_at`.
//! - `runs`: plugin run history.
//!   `{_id: '["<plugin>","<resource id>"|null,<started_at>]', seq: i64, plugin,
//!   resource_id: string|null, scheduled_at, started_at, finished_at: f64,
//!   outcome, detail}`, written with `$setOnInsert` only, so a retried batch
//!   adds nothing. `seq` orders runs as recorded (newest first is `seq`
//!   descending, like SQLite's row id); each batch reserves its numbers with
//!   one `$inc` of `counters.runs`. The newest 200,000 are kept. Indexes:
//!   `seq`; `plugin, seq`.
//! - `counters`: `{_id: "runs", next: i64}`, the last run `seq` handed out.
//! - `latest_series` and `latest_values`: the latest value of every
//!   series, keyed by compact ids as in SQLite (the dimension text is
//!   stored once per series, not once per metric).
//!   `latest_series`: `{_id: <series id, 32 hex digits>, resource_id,
//!   group_type, dimensions: [[name, value], ...] (sorted)}`, written with
//!   `$setOnInsert` only. `latest_values`: `{_id: "<series id>:<metric>",
//!   series: <series id>, metric, value: string, metric_type:
//!   "counter"|"gauge", at: f64}`, replaced whole on every write. `value`
//!   is the exact decimal text, as in SQLite: a 64-bit counter above 2^53
//!   survives, which a double would not. Indexes: `latest_series`:
//!   `resource_id`; `group_type`; `latest_values`: `series`. (The
//!   `latest` collection of earlier versions, one document per metric with
//!   the whole dimension set in its `_id`, is no longer read.)
//! - `status`: one document per agent, `{_id: "agent:<agent id>", agent_id,
//!   site, pid: i64, updated_at: f64, body: <the HostStatus as JSON>}`,
//!   replaced whole; documents not updated for a day are deleted at the
//!   next write. `body` is what [`Storage::statuses`] reads (its `outcomes`
//!   map has keys with dots, and its counters are u64). (The single
//!   `{_id: "host"}` document of earlier versions is no longer read.)
//!
//! Created now (with their indexes) for the endpoint-analysis and topology
//! work; no [`Storage`] method uses them yet:
//!
//! - `endpoints`: endpoint-analysis state, one document per endpoint,
//!   `_id: '["<fabric>","<scope>","<address>"]'`, holding the endpoint's last
//!   event (family, mac, node, interface, encapsulation, group, flags), its
//!   first and last sighting, the analysis plugin's opaque state (hex text),
//!   and a short bounded history of where it was learned, rewritten whole.
//!   Indexes: `fabric, scope, address`; `fabric, mac`; `last_seen`.
//! - `findings`: what analysis plugins concluded (move, off-subnet, stale,
//!   rapid), one document per finding, `_id` from (plugin, fabric, scope,
//!   address, kind, at) so a re-delivered analysis does not duplicate it:
//!   severity, summary, details as pairs, when to recheck. Indexes: `fabric,
//!   scope, address, at`; `at`.
//! - `topology_links`: links between resources learned from neighbour tables
//!   (LLDP, CDP), `_id` from (local resource, local interface, remote
//!   resource, remote interface), with the protocol, first and last sighting
//!   and an expiry like resources'. Indexes: `local_resource`;
//!   `remote_resource`; `expires_at`.
//!
//! Endpoint history (issue #14): `ept_history` and `ept_endpoint`, the
//! `HistoryStore` of `vigil-endpoints`; see [`endpoints`].
//!
//! # Portability
//!
//! The documents use only strings, doubles, 64-bit integers, arrays and
//! whole-document writes, so they work on servers that implement the
//! MongoDB wire protocol without all of MongoDB's types. The tests run
//! against nx-27017 0.8.1 (a wire-compatible server on SQLite), whose
//! defects the design avoids: no booleans (a boolean `$set` reads back as
//! an integer), no `$push` (it stores a subdocument as a JSON string), no
//! Decimal128 (unsupported), no index names (they differ), no descending
//! index keys (they come back ascending), and every replacement carries its
//! `_id` (an upserted replacement without one gets an ObjectId there instead
//! of the filter's `_id`). Numbers are read back accepting any numeric BSON
//! type, in case a server narrows an int64 or widens a double.
//!
//! # Async
//!
//! Every call uses the driver's async API on the caller's runtime: a
//! storage call from the pipeline, the scheduler or an HTTP handler costs
//! no OS thread (the driver's sync API, used before, ran each call on a
//! thread of its own). The client and its connection pool belong to the
//! runtime that opened the store.

pub mod endpoints;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::{Client, Collection, Database};

use vigil_core::model::{
    CachedEnrichment, Datetime, EnrichmentGroup, MetricType, MetricsGroup, Resource,
};
use vigil_store::{
    HostStatus, Refusal, ResourcePolicy, RunQuery, RunRecord, STATUS_RETENTION, SeriesQuery,
    SeriesValue, Storage, StoreError, StoreResult, StoredResource, UpsertSummary, prepare_batch,
};

/// Run history kept, across all plugins; older runs are pruned.
const RUN_HISTORY: i64 = 200_000;
/// How long `open` (and any call) waits for a usable server, unless the URL
/// sets `serverSelectionTimeoutMS`.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP (and TLS) connection may take, unless the URL sets
/// `connectTimeoutMS`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Writes per `update` command, and their encoded size: well under the
/// server's 16 MiB command limit.
const BATCH_WRITES: usize = 1000;
const BATCH_BYTES: usize = 8 << 20;
/// Ids per `$in` list.
const BATCH_IDS: usize = 1000;

const RESOURCES: &str = "resources";
const RUNS: &str = "runs";
const COUNTERS: &str = "counters";
const LATEST_SERIES: &str = "latest_series";
const LATEST_VALUES: &str = "latest_values";
const STATUS: &str = "status";
const ENRICHMENT_MIRROR: &str = "enrichment_mirror";
const ENDPOINTS: &str = "endpoints";
const FINDINGS: &str = "findings";
const TOPOLOGY_LINKS: &str = "topology_links";

/// The indexes created at start-up, per collection (ascending keys only).
const INDEXES: &[(&str, &[&[&str]])] = &[
    (
        RESOURCES,
        &[&["expires_at"], &["discovered_by", "expires_at"]],
    ),
    (RUNS, &[&["seq"], &["plugin", "seq"]]),
    (LATEST_SERIES, &[&["resource_id"], &["group_type"]]),
    (LATEST_VALUES, &[&["series"]]),
    (
        ENRICHMENT_MIRROR,
        &[&["expires_at"], &["resource_id", "namespace"]],
    ),
    (
        ENDPOINTS,
        &[
            &["fabric", "scope", "address"],
            &["fabric", "mac"],
            &["last_seen"],
        ],
    ),
    (FINDINGS, &[&["fabric", "scope", "address", "at"], &["at"]]),
    (
        TOPOLOGY_LINKS,
        &[&["local_resource"], &["remote_resource"], &["expires_at"]],
    ),
    (
        endpoints::EPT_HISTORY,
        &[&["endpoint"], &["fabric", "node"]],
    ),
    (endpoints::EPT_ENDPOINT, &[&["addr"]]),
    (
        endpoints::EPT_ENDPOINT,
        endpoints::EPT_ENDPOINT_QUERY_INDEXES,
    ),
];

pub struct MongoStorage {
    db: Database,
    /// The connection string with any password masked, for errors.
    url: String,
}

impl MongoStorage {
    /// Connects to the server at `url` (a `mongodb://` or `mongodb+srv://`
    /// connection string), checks that it answers (waiting at most 3 s
    /// unless the URL sets `serverSelectionTimeoutMS`) and creates the
    /// indexes of `database` that are missing.
    pub async fn open(url: &str, database: &str) -> StoreResult<MongoStorage> {
        let shown = redact(url);
        let fail = |message: String| StoreError::Mongo {
            url: shown.clone(),
            message,
        };
        if database.is_empty()
            || database.len() > 63
            || database.contains(['/', '\\', '.', ' ', '"', '$', '\0'])
        {
            return Err(fail(format!(
                "invalid database name {database:?} (1-63 characters, none of /\\. \"$)"
            )));
        }
        let mut options = ClientOptions::parse(url)
            .await
            .map_err(|e| fail(format!("bad connection string: {e}")))?;
        options
            .server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        options.app_name.get_or_insert_with(|| "vigil".to_owned());
        let client = Client::with_options(options).map_err(|e| fail(e.to_string()))?;
        let db = client.database(database);
        db.run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| fail(format!("no usable server: {e}")))?;
        let store = MongoStorage { db, url: shown };
        store.create_indexes().await?;
        Ok(store)
    }

    /// The database this store writes (for tools and tests).
    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    async fn create_indexes(&self) -> StoreResult<()> {
        for (collection, indexes) in INDEXES {
            let coll = self.collection(collection);
            for keys in *indexes {
                let mut spec = Document::new();
                for key in *keys {
                    spec.insert(*key, 1i32);
                }
                coll.create_index(IndexModel::builder().keys(spec).build())
                    .await
                    .map_err(|e| {
                        self.error(format!("creating index {keys:?} on {collection}: {e}"))
                    })?;
            }
        }
        Ok(())
    }

    fn collection(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    fn error(&self, message: impl Into<String>) -> StoreError {
        StoreError::Mongo {
            url: self.url.clone(),
            message: message.into(),
        }
    }

    /// Runs `updates` (each `{q, u, upsert: true}`) as ordered `update`
    /// commands of bounded size; returns how many inserted a new document
    /// (the others matched one).
    async fn upsert_all(&self, collection: &str, updates: Vec<Document>) -> StoreResult<usize> {
        let mut inserted = 0;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for update in updates {
            let size = bson::to_vec(&update)
                .map_err(|e| self.error(format!("encoding a write to {collection}: {e}")))?
                .len();
            if !batch.is_empty() && (batch.len() >= BATCH_WRITES || bytes + size > BATCH_BYTES) {
                inserted += self
                    .update_command(collection, std::mem::take(&mut batch))
                    .await?;
                bytes = 0;
            }
            bytes += size;
            batch.push(update);
        }
        if !batch.is_empty() {
            inserted += self.update_command(collection, batch).await?;
        }
        Ok(inserted)
    }

    async fn update_command(&self, collection: &str, updates: Vec<Document>) -> StoreResult<usize> {
        let count = updates.len();
        let reply = self
            .db
            .run_command(doc! { "update": collection, "updates": updates, "ordered": true })
            .await
            .map_err(|e| self.error(format!("writing {collection}: {e}")))?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && let Some(first) = errors.first()
        {
            return Err(self.error(format!(
                "writing {collection}: {} of {count} writes failed, the first: {first}",
                errors.len()
            )));
        }
        if let Ok(error) = reply.get_document("writeConcernError") {
            return Err(self.error(format!("writing {collection}: {error}")));
        }
        Ok(reply.get_array("upserted").map_or(0, Vec::len))
    }

    async fn find_all(
        &self,
        collection: &str,
        filter: Document,
        sort: Option<Document>,
        limit: Option<i64>,
    ) -> StoreResult<Vec<Document>> {
        let coll = self.collection(collection);
        let mut find = coll.find(filter);
        if let Some(sort) = sort {
            find = find.sort(sort);
        }
        if let Some(limit) = limit {
            find = find.limit(limit);
        }
        let failed = |e: mongodb::error::Error| self.error(format!("reading {collection}: {e}"));
        let mut cursor = find.await.map_err(failed)?;
        let mut documents = Vec::new();
        while cursor.advance().await.map_err(failed)? {
            documents.push(cursor.deserialize_current().map_err(failed)?);
        }
        Ok(documents)
    }

    async fn delete_in(
        &self,
        collection: &str,
        field: &str,
        values: &[String],
        also: &Document,
    ) -> StoreResult<u64> {
        let coll = self.collection(collection);
        let mut deleted = 0;
        for chunk in values.chunks(BATCH_IDS) {
            let mut filter = doc! { field: { "$in": chunk } };
            filter.extend(also.clone());
            deleted += coll
                .delete_many(filter)
                .await
                .map_err(|e| self.error(format!("deleting from {collection}: {e}")))?
                .deleted_count;
        }
        Ok(deleted)
    }

    fn malformed(&self, collection: &str, document: &Document, problem: &str) -> StoreError {
        let id = document
            .get("_id")
            .map_or_else(|| "?".to_owned(), Bson::to_string);
        self.error(format!(
            "malformed document {id} in {collection}: {problem}"
        ))
    }
}

impl MongoStorage {
    /// Owner and expiry of each of `ids` that exists.
    async fn owners(&self, ids: &[String]) -> StoreResult<HashMap<String, (String, f64)>> {
        let coll = self.collection(RESOURCES);
        let mut owners = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_IDS) {
            let mut cursor = coll
                .find(doc! { "_id": { "$in": chunk } })
                .projection(doc! { "discovered_by": 1, "expires_at": 1 })
                .await
                .map_err(|e| self.error(format!("reading {RESOURCES}: {e}")))?;
            let failed = |e: mongodb::error::Error| self.error(format!("reading {RESOURCES}: {e}"));
            while cursor.advance().await.map_err(failed)? {
                let d = cursor.deserialize_current().map_err(failed)?;
                let read = || -> Result<(String, String, f64), String> {
                    Ok((
                        text(&d, "_id")?,
                        text(&d, "discovered_by")?,
                        number(&d, "expires_at")?,
                    ))
                };
                let (id, owner, expires_at) =
                    read().map_err(|e| self.malformed(RESOURCES, &d, &e))?;
                owners.insert(id, (owner, expires_at));
            }
        }
        Ok(owners)
    }

    /// Live resources `plugin` owns at `now`.
    async fn owned_live(&self, plugin: &str, now: f64) -> StoreResult<u64> {
        self.collection(RESOURCES)
            .count_documents(doc! { "discovered_by": plugin, "expires_at": { "$gt": now } })
            .await
            .map_err(|e| self.error(format!("counting {plugin}'s {RESOURCES}: {e}")))
    }

    /// Runs conditional `update`s on `resources` unordered, in bounded
    /// batches. Returns how many matched or inserted, and the indexes
    /// refused with a duplicate-key error (an upsert whose filter missed
    /// because another plugin holds the `_id`). Any other error fails.
    async fn conditional_writes(&self, updates: Vec<Document>) -> StoreResult<(u64, Vec<usize>)> {
        let mut done = 0u64;
        let mut refused = Vec::new();
        let mut batch: Vec<Document> = Vec::new();
        let mut first = 0usize;
        let mut bytes = 0usize;
        let total = updates.len();
        for (i, update) in updates.into_iter().enumerate() {
            let size = bson::to_vec(&update)
                .map_err(|e| self.error(format!("encoding a write to {RESOURCES}: {e}")))?
                .len();
            if !batch.is_empty() && (batch.len() >= BATCH_WRITES || bytes + size > BATCH_BYTES) {
                let sent = std::mem::take(&mut batch);
                done += self.unordered_update(sent, first, &mut refused).await?;
                first = i;
                bytes = 0;
            }
            bytes += size;
            batch.push(update);
        }
        if !batch.is_empty() {
            done += self.unordered_update(batch, first, &mut refused).await?;
        }
        debug_assert!(refused.iter().all(|i| *i < total));
        Ok((done, refused))
    }

    async fn unordered_update(
        &self,
        updates: Vec<Document>,
        first: usize,
        refused: &mut Vec<usize>,
    ) -> StoreResult<u64> {
        let count = updates.len();
        let reply = self
            .db
            .run_command(doc! { "update": RESOURCES, "updates": updates, "ordered": false })
            .await
            .map_err(|e| self.error(format!("writing {RESOURCES}: {e}")))?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            for error in errors {
                let Bson::Document(error) = error else {
                    return Err(self.error(format!("writing {RESOURCES}: odd write error {error}")));
                };
                let code = integer(error, "code").unwrap_or(0);
                let index = integer(error, "index")
                    .ok()
                    .and_then(|i| usize::try_from(i).ok());
                match index {
                    Some(index) if code == 11000 && index < count => refused.push(first + index),
                    _ => {
                        return Err(self.error(format!(
                            "writing {RESOURCES}: a write of {count} failed: {error}"
                        )));
                    }
                }
            }
        }
        if let Ok(error) = reply.get_document("writeConcernError") {
            return Err(self.error(format!("writing {RESOURCES}: {error}")));
        }
        let n = integer(&reply, "n").unwrap_or(0).max(0) as u64;
        Ok(n)
    }
}

/// `url` with the password of its user information (if any) masked.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

fn pairs_bson<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Bson {
    Bson::Array(
        pairs
            .into_iter()
            .map(|(k, v)| Bson::Array(vec![Bson::String(k.to_owned()), Bson::String(v.to_owned())]))
            .collect(),
    )
}

// Readers that tolerate a server storing a number as another numeric type.

fn text(document: &Document, key: &str) -> Result<String, String> {
    match document.get(key) {
        Some(Bson::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{key} is {other}, not a string")),
        None => Err(format!("{key} is missing")),
    }
}

fn optional_text(document: &Document, key: &str) -> Result<Option<String>, String> {
    match document.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key} is {other}, not a string or null")),
    }
}

fn number(document: &Document, key: &str) -> Result<f64, String> {
    match document.get(key) {
        Some(Bson::Double(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(f64::from(*v)),
        Some(Bson::Int64(v)) => Ok(*v as f64),
        Some(other) => Err(format!("{key} is {other}, not a number")),
        None => Err(format!("{key} is missing")),
    }
}

fn integer(document: &Document, key: &str) -> Result<i64, String> {
    match document.get(key) {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        Some(Bson::Double(v)) if v.fract() == 0.0 && v.abs() < 9.0e15 => Ok(*v as i64),
        Some(other) => Err(format!("{key} is {other}, not an integer")),
        None => Err(format!("{key} is missing")),
    }
}

fn pairs(document: &Document, key: &str) -> Result<Vec<(String, String)>, String> {
    let Some(Bson::Array(items)) = document.get(key) else {
        return Err(format!("{key} is not an array"));
    };
    items
        .iter()
        .map(|item| match item {
            Bson::Array(pair) => match pair.as_slice() {
                [Bson::String(k), Bson::String(v)] => Ok((k.clone(), v.clone())),
                _ => Err(format!("{key} holds {item}, not a pair of strings")),
            },
            _ => Err(format!("{key} holds {item}, not a pair of strings")),
        })
        .collect()
}

fn stored_resource(document: &Document) -> Result<StoredResource, String> {
    Ok(StoredResource {
        resource: Resource {
            id: text(document, "_id")?,
            site: text(document, "site")?,
            endpoint: text(document, "endpoint")?,
            class: text(document, "class")?,
            subclass: text(document, "subclass")?,
            type_: text(document, "type")?,
            creation_plugin: text(document, "creation_plugin")?,
            creation_timestamp: Datetime::from_seconds(number(document, "creation_timestamp")?),
            ttl_seconds: integer(document, "ttl_seconds")?.max(0) as u64,
            metadata: pairs(document, "metadata")?,
        },
        discovered_by: text(document, "discovered_by")?,
        first_seen: number(document, "first_seen")?,
        last_seen: number(document, "last_seen")?,
        expires_at: number(document, "expires_at")?,
    })
}

fn run_record(document: &Document) -> Result<RunRecord, String> {
    Ok(RunRecord {
        plugin: text(document, "plugin")?,
        resource_id: optional_text(document, "resource_id")?,
        scheduled_at: number(document, "scheduled_at")?,
        started_at: number(document, "started_at")?,
        finished_at: number(document, "finished_at")?,
        outcome: text(document, "outcome")?,
        detail: text(document, "detail")?,
    })
}

/// A `latest_series` document: its id, resource id, group type and
/// dimensions.
type SeriesDocument = (String, String, String, Vec<(String, String)>);

fn series_document(document: &Document) -> Result<SeriesDocument, String> {
    Ok((
        text(document, "_id")?,
        text(document, "resource_id")?,
        text(document, "group_type")?,
        pairs(document, "dimensions")?,
    ))
}

/// A `latest_values` document of series `series`.
fn series_value(series: &SeriesDocument, document: &Document) -> Result<SeriesValue, String> {
    Ok(SeriesValue {
        resource_id: series.1.clone(),
        group_type: series.2.clone(),
        dimensions: series.3.clone(),
        metric: text(document, "metric")?,
        value: text(document, "value")?,
        metric_type: text(document, "metric_type")?,
        at: number(document, "at")?,
    })
}

impl MongoStorage {
    /// Deletes the latest values of resources `ids`: their series' values,
    /// then their series.
    async fn delete_latest_of(&self, ids: &[String]) -> StoreResult<()> {
        for chunk in ids.chunks(BATCH_IDS) {
            let series = self
                .find_all(
                    LATEST_SERIES,
                    doc! { "resource_id": { "$in": chunk } },
                    None,
                    None,
                )
                .await?;
            let series: Vec<String> = series
                .iter()
                .map(|d| text(d, "_id").map_err(|e| self.malformed(LATEST_SERIES, d, &e)))
                .collect::<StoreResult<_>>()?;
            self.delete_in(LATEST_VALUES, "series", &series, &Document::new())
                .await?;
            self.delete_in(LATEST_SERIES, "resource_id", chunk, &Document::new())
                .await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Storage for MongoStorage {
    async fn upsert_resources(
        &self,
        plugin: &str,
        resources: &[Resource],
        policy: &ResourcePolicy,
        now: f64,
    ) -> StoreResult<UpsertSummary> {
        {
            let mut summary = UpsertSummary::default();
            let batch = prepare_batch(plugin, resources, policy, now, &mut summary);
            if batch.is_empty() {
                return Ok(summary);
            }
            let ids: Vec<String> = batch.iter().map(|(r, _)| r.id.clone()).collect();
            let current = self.owners(&ids).await?;
            let mut owned = self.owned_live(plugin, now).await?;
            let (mut refreshes, mut claims, mut claimed_ids, mut retakes) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (r, ttl) in &batch {
                let metadata = pairs_bson(r.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                match current.get(&r.id) {
                    Some((owner, expires_at)) if *expires_at > now && owner != plugin => {
                        summary.refuse(Refusal::Owned {
                            id: r.id.clone(),
                            owner: owner.clone(),
                        });
                    }
                    Some((_, expires_at)) if *expires_at > now => refreshes.push(doc! {
                        // Only while still the plugin's: never another's.
                        "q": { "_id": &r.id, "discovered_by": plugin },
                        "u": { "$set": {
                            "endpoint": &r.endpoint,
                            "class": &r.class,
                            "subclass": &r.subclass,
                            "type": &r.type_,
                            "metadata": metadata,
                            "ttl_seconds": *ttl as i64,
                            "last_seen": now,
                            "expires_at": now + ttl,
                        } },
                        "upsert": false,
                    }),
                    _ if owned >= policy.max_resources => {
                        summary.refuse(Refusal::Budget {
                            id: r.id.clone(),
                            limit: policy.max_resources,
                        });
                    }
                    existing => {
                        owned += 1;
                        let fields = doc! {
                            "site": &r.site,
                            "endpoint": &r.endpoint,
                            "class": &r.class,
                            "subclass": &r.subclass,
                            "type": &r.type_,
                            "metadata": metadata,
                            "creation_plugin": plugin,
                            "creation_timestamp": now,
                            "ttl_seconds": *ttl as i64,
                            "discovered_by": plugin,
                            "first_seen": now,
                            "last_seen": now,
                            "expires_at": now + ttl,
                        };
                        match existing {
                            // Expired, not yet swept: taken afresh only if
                            // nobody refreshed or took it since it was read.
                            Some((owner, expires_at)) => {
                                retakes.push((r.id.clone(), owner.clone(), *expires_at, fields))
                            }
                            // Absent: inserted with this owner; if another
                            // plugin inserted it meanwhile, the filter
                            // misses and the insert hits its `_id`.
                            None => {
                                claimed_ids.push(r.id.clone());
                                claims.push(doc! {
                                    "q": { "_id": &r.id, "discovered_by": plugin },
                                    "u": { "$set": fields },
                                    "upsert": true,
                                });
                            }
                        }
                    }
                }
            }
            summary.refreshed = self.conditional_writes(refreshes).await?.0 as usize;
            let (_, lost) = self.conditional_writes(claims).await?;
            summary.added += claimed_ids.len() - lost.len();
            let mut raced: Vec<String> = lost
                .into_iter()
                .filter_map(|i| claimed_ids.get(i).cloned())
                .collect();
            let coll = self.collection(RESOURCES);
            for (id, owner, expires_at, fields) in retakes {
                let taken = coll
                    .update_one(
                        doc! { "_id": &id, "discovered_by": &owner, "expires_at": expires_at },
                        doc! { "$set": fields },
                    )
                    .await
                    .map_err(|e| self.error(format!("writing {RESOURCES}: {e}")))?;
                if taken.matched_count == 1 {
                    summary.added += 1;
                } else {
                    raced.push(id);
                }
            }
            // Lost races: name who holds them now.
            let holders = self.owners(&raced).await?;
            for id in raced {
                let owner = holders
                    .get(&id)
                    .map_or_else(|| "another plugin".to_owned(), |(o, _)| o.clone());
                summary.refuse(Refusal::Owned { id, owner });
            }
            Ok(summary)
        }
    }

    async fn expire_plugin_resources(&self, plugin: &str, now: f64) -> StoreResult<Vec<String>> {
        {
            self.collection(RESOURCES)
                .update_many(
                    doc! { "discovered_by": plugin, "expires_at": { "$gt": now } },
                    doc! { "$set": { "expires_at": now } },
                )
                .await
                .map_err(|e| self.error(format!("expiring {plugin}'s {RESOURCES}: {e}")))?;
        }
        self.expire_resources(now).await
    }

    async fn live_resources(&self, now: f64) -> StoreResult<Vec<StoredResource>> {
        {
            let documents = self
                .find_all(RESOURCES, doc! { "expires_at": { "$gt": now } }, None, None)
                .await?;
            let mut resources = documents
                .iter()
                .map(|d| stored_resource(d).map_err(|e| self.malformed(RESOURCES, d, &e)))
                .collect::<StoreResult<Vec<_>>>()?;
            resources.sort_by(|a, b| a.resource.id.cmp(&b.resource.id));
            Ok(resources)
        }
    }

    async fn expire_resources(&self, now: f64) -> StoreResult<Vec<String>> {
        {
            let expired_filter = doc! { "expires_at": { "$lte": now } };
            let documents = self
                .find_all(RESOURCES, expired_filter.clone(), None, None)
                .await?;
            let mut expired = documents
                .iter()
                .map(|d| text(d, "_id").map_err(|e| self.malformed(RESOURCES, d, &e)))
                .collect::<StoreResult<Vec<_>>>()?;
            // Deleted only if still expired: one rediscovered meanwhile stays.
            let deleted = self
                .delete_in(RESOURCES, "_id", &expired, &expired_filter)
                .await?;
            if deleted != expired.len() as u64 {
                let mut still_there = HashSet::new();
                for chunk in expired.chunks(BATCH_IDS) {
                    for d in self
                        .find_all(RESOURCES, doc! { "_id": { "$in": chunk } }, None, None)
                        .await?
                    {
                        still_there.insert(
                            text(&d, "_id").map_err(|e| self.malformed(RESOURCES, &d, &e))?,
                        );
                    }
                }
                expired.retain(|id| !still_there.contains(id));
            }
            self.delete_latest_of(&expired).await?;
            expired.sort();
            Ok(expired)
        }
    }

    async fn record_runs(&self, runs: &[RunRecord]) -> StoreResult<()> {
        if runs.is_empty() {
            return Ok(());
        }
        {
            let count = i64::try_from(runs.len()).unwrap_or(i64::MAX);
            let counter = self
                .collection(COUNTERS)
                .find_one_and_update(doc! { "_id": RUNS }, doc! { "$inc": { "next": count } })
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await
                .map_err(|e| self.error(format!("numbering runs: {e}")))?
                .ok_or_else(|| self.error("numbering runs: the counter upsert returned nothing"))?;
            let last =
                integer(&counter, "next").map_err(|e| self.malformed(COUNTERS, &counter, &e))?;
            let first = last - count + 1;
            let mut updates = Vec::with_capacity(runs.len());
            for (seq, run) in (first..).zip(runs) {
                let key = serde_json::to_string(&(&run.plugin, &run.resource_id, run.started_at))?;
                let resource_id = match &run.resource_id {
                    Some(id) => Bson::String(id.clone()),
                    None => Bson::Null,
                };
                updates.push(doc! {
                    "q": { "_id": &key },
                    "u": { "$setOnInsert": {
                        "seq": seq,
                        "plugin": &run.plugin,
                        "resource_id": resource_id,
                        "scheduled_at": run.scheduled_at,
                        "started_at": run.started_at,
                        "finished_at": run.finished_at,
                        "outcome": &run.outcome,
                        "detail": &run.detail,
                    } },
                    "upsert": true,
                });
            }
            self.upsert_all(RUNS, updates).await?;
            if last > RUN_HISTORY {
                self.collection(RUNS)
                    .delete_many(doc! { "seq": { "$lte": last - RUN_HISTORY } })
                    .await
                    .map_err(|e| self.error(format!("pruning runs: {e}")))?;
            }
            Ok(())
        }
    }

    async fn query_runs(&self, query: &RunQuery) -> StoreResult<Vec<RunRecord>> {
        // A limit of 0 means "no limit" to MongoDB, "no rows" to SQLite.
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        {
            let mut filter = Document::new();
            if let Some(plugin) = &query.plugin {
                filter.insert("plugin", plugin);
            }
            if let Some(resource_id) = &query.resource_id {
                filter.insert("resource_id", resource_id);
            }
            if let Some(outcome) = &query.outcome {
                filter.insert("outcome", outcome);
            }
            if let Some(since) = query.since {
                filter.insert("started_at", doc! { "$gte": since });
            }
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            let documents = self
                .find_all(RUNS, filter, Some(doc! { "seq": -1 }), Some(limit))
                .await?;
            documents
                .iter()
                .map(|d| run_record(d).map_err(|e| self.malformed(RUNS, d, &e)))
                .collect()
        }
    }

    async fn store_latest(&self, groups: &[std::sync::Arc<MetricsGroup>]) -> StoreResult<()> {
        {
            let mut series_updates = Vec::new();
            let mut value_updates = Vec::new();
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
                let series = vigil_sinks::series::series_id(
                    &group.resource.id,
                    &group.group_type,
                    dimensions.iter().copied(),
                )
                .hex();
                // Written once: a series' text never changes under its id.
                series_updates.push(doc! {
                    "q": { "_id": &series },
                    "u": { "$setOnInsert": {
                        "resource_id": &group.resource.id,
                        "group_type": &group.group_type,
                        "dimensions": pairs_bson(dimensions.iter().copied()),
                    } },
                    "upsert": true,
                });
                for metric in &group.metrics {
                    let key = format!("{series}:{}", metric.name);
                    let kind = match metric.type_ {
                        MetricType::Counter => "counter",
                        MetricType::Gauge => "gauge",
                    };
                    value_updates.push(doc! {
                        "q": { "_id": &key },
                        "u": {
                            "_id": &key,
                            "series": &series,
                            "metric": &metric.name,
                            "value": metric.value.to_text(),
                            "metric_type": kind,
                            "at": metric.creation_timestamp.as_seconds(),
                        },
                        "upsert": true,
                    });
                }
            }
            self.upsert_all(LATEST_SERIES, series_updates).await?;
            self.upsert_all(LATEST_VALUES, value_updates).await?;
            Ok(())
        }
    }

    async fn query_latest(&self, query: &SeriesQuery) -> StoreResult<Vec<SeriesValue>> {
        {
            let mut filter = Document::new();
            if let Some(group_type) = &query.group_type {
                filter.insert("group_type", group_type);
            }
            if let Some(resource_id) = &query.resource_id {
                filter.insert("resource_id", resource_id);
            }
            let mut values_filter = Document::new();
            if let Some(metric) = &query.metric {
                values_filter.insert("metric", metric);
            }
            if let Some(since) = query.since {
                values_filter.insert("at", doc! { "$gte": since });
            }
            let documents = self.find_all(LATEST_SERIES, filter, None, None).await?;
            let mut all_series = std::collections::HashMap::with_capacity(documents.len());
            for d in &documents {
                let series =
                    series_document(d).map_err(|e| self.malformed(LATEST_SERIES, d, &e))?;
                all_series.insert(series.0.clone(), series);
            }
            let ids: Vec<&String> = all_series.keys().collect();
            let mut series = Vec::new();
            for chunk in ids.chunks(BATCH_IDS) {
                let mut filter = values_filter.clone();
                filter.insert("series", doc! { "$in": chunk });
                let values = self.find_all(LATEST_VALUES, filter, None, None).await?;
                for d in &values {
                    let owner =
                        text(d, "series").map_err(|e| self.malformed(LATEST_VALUES, d, &e))?;
                    let Some(of) = all_series.get(&owner) else {
                        continue;
                    };
                    let value =
                        series_value(of, d).map_err(|e| self.malformed(LATEST_VALUES, d, &e))?;
                    // SQLite's order: its dimensions column is this JSON text.
                    let dimensions = serde_json::to_string(&value.dimensions)?;
                    series.push((dimensions, value));
                }
            }
            series.sort_by(|(da, a), (db, b)| {
                (&a.resource_id, &a.group_type, da, &a.metric).cmp(&(
                    &b.resource_id,
                    &b.group_type,
                    db,
                    &b.metric,
                ))
            });
            Ok(series
                .into_iter()
                .map(|(_, value)| value)
                .take(query.limit.unwrap_or(usize::MAX))
                .collect())
        }
    }

    async fn put_status(&self, status: &HostStatus) -> StoreResult<()> {
        {
            let body = serde_json::to_string(status)?;
            let id = format!("agent:{}", status.agent_id);
            let update = doc! {
                "q": { "_id": &id },
                "u": {
                    "_id": &id,
                    "agent_id": &status.agent_id,
                    "site": &status.site,
                    "pid": i64::from(status.pid),
                    "updated_at": status.updated_at,
                    "body": body,
                },
                "upsert": true,
            };
            self.upsert_all(STATUS, vec![update]).await?;
            self.collection(STATUS)
                .delete_many(doc! { "updated_at": { "$lt": status.updated_at - STATUS_RETENTION } })
                .await
                .map_err(|e| self.error(format!("pruning {STATUS}: {e}")))?;
            Ok(())
        }
    }

    async fn statuses(&self) -> StoreResult<Vec<HostStatus>> {
        let documents = self.find_all(STATUS, Document::new(), None, None).await?;
        let mut statuses = Vec::new();
        for d in &documents {
            // The one-per-site document of earlier versions.
            if d.get_str("_id").is_ok_and(|id| id == "host") {
                continue;
            }
            let body = text(d, "body").map_err(|e| self.malformed(STATUS, d, &e))?;
            statuses.push(serde_json::from_str::<HostStatus>(&body)?);
        }
        statuses.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(statuses)
    }

    async fn mirror_enrichments(
        &self,
        held: &[CachedEnrichment],
        removed: &[(String, String)],
        now: f64,
    ) -> StoreResult<()> {
        // `_id`: the resource id's length, then both parts: unambiguous
        // whatever characters a plugin put in them.
        let id =
            |resource: &str, namespace: &str| format!("{}:{resource}{namespace}", resource.len());
        let mut updates = Vec::with_capacity(held.len());
        for entry in held {
            let key = id(&entry.resource_id, &entry.namespace);
            updates.push(doc! {
                "q": { "_id": &key },
                "u": {
                    "_id": &key,
                    "resource_id": &entry.resource_id,
                    "namespace": &entry.namespace,
                    "plugin": &entry.plugin,
                    "expires_at": entry.expires_at,
                    "ttl_seconds": i64::try_from(entry.group.ttl_seconds).unwrap_or(i64::MAX),
                    "sets": vigil_store::sets_json(&entry.group)?,
                },
                "upsert": true,
            });
        }
        if !updates.is_empty() {
            self.upsert_all(ENRICHMENT_MIRROR, updates).await?;
        }
        let gone: Vec<String> = removed.iter().map(|(r, ns)| id(r, ns)).collect();
        if !gone.is_empty() {
            self.delete_in(ENRICHMENT_MIRROR, "_id", &gone, &Document::new())
                .await?;
        }
        self.collection(ENRICHMENT_MIRROR)
            .delete_many(doc! { "expires_at": { "$lte": now } })
            .await
            .map_err(|e| self.error(format!("pruning {ENRICHMENT_MIRROR}: {e}")))?;
        Ok(())
    }

    async fn mirrored_enrichments(
        &self,
        resource_id: Option<&str>,
        namespace: Option<&str>,
        now: f64,
    ) -> StoreResult<Vec<CachedEnrichment>> {
        let mut filter = doc! { "expires_at": { "$gt": now } };
        if let Some(resource_id) = resource_id {
            filter.insert("resource_id", resource_id);
        }
        if let Some(namespace) = namespace {
            filter.insert("namespace", namespace);
        }
        let documents = self
            .find_all(
                ENRICHMENT_MIRROR,
                filter,
                Some(doc! { "resource_id": 1, "namespace": 1 }),
                None,
            )
            .await?;
        let mut entries = Vec::with_capacity(documents.len());
        for d in &documents {
            let read = || -> Result<CachedEnrichment, String> {
                let namespace = text(d, "namespace")?;
                let sets =
                    vigil_store::sets_from_json(&text(d, "sets")?).map_err(|e| e.to_string())?;
                Ok(CachedEnrichment {
                    resource_id: text(d, "resource_id")?,
                    plugin: text(d, "plugin")?,
                    expires_at: number(d, "expires_at")?,
                    group: EnrichmentGroup {
                        namespace: namespace.clone(),
                        ttl_seconds: number(d, "ttl_seconds")?.max(0.0) as u64,
                        sets,
                    },
                    namespace,
                })
            };
            entries.push(read().map_err(|e| self.malformed(ENRICHMENT_MIRROR, d, &e))?);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("mongodb://vigil:s3cr%40t@db1:27017,db2/admin?tls=true"),
            "mongodb://vigil:***@db1:27017,db2/admin?tls=true"
        );
        assert_eq!(redact("mongodb://vigil@db1/"), "mongodb://vigil@db1/");
        assert_eq!(redact("mongodb://127.0.0.1:1"), "mongodb://127.0.0.1:1");
        assert_eq!(redact("mongodb://h/?a=b@c"), "mongodb://h/?a=b@c");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn reads_numbers_of_any_numeric_type() {
        let d = doc! { "a": 1.5, "b": 2i32, "c": i64::MAX, "d": 3.0, "e": "x", "f": Bson::Null };
        assert_eq!(number(&d, "a"), Ok(1.5));
        assert_eq!(number(&d, "b"), Ok(2.0));
        assert_eq!(integer(&d, "b"), Ok(2));
        assert_eq!(integer(&d, "c"), Ok(i64::MAX));
        assert_eq!(integer(&d, "d"), Ok(3));
        assert!(integer(&d, "a").is_err());
        assert!(number(&d, "e").is_err());
        assert_eq!(optional_text(&d, "f"), Ok(None));
        assert_eq!(optional_text(&d, "missing"), Ok(None));
        assert_eq!(optional_text(&d, "e"), Ok(Some("x".to_owned())));
    }

    #[tokio::test]
    async fn open_fails_fast_on_a_bad_database_name() {
        let error = MongoStorage::open("mongodb://127.0.0.1:1", "a.b")
            .await
            .err()
            .expect("an error");
        assert!(
            error.to_string().contains("invalid database name"),
            "{error}"
        );
    }
}
