//! Endpoint history (issue #14) on MongoDB: the [`HistoryStore`] of
//! `vigil-endpoints` on [`MongoStorage`], with the semantics of the embedded
//! store (`vigil_store::endpoints::SqliteHistory`) method for method.
//!
//! # Collections and document shapes
//!
//! - `ept_history`: one document per (fabric, vnid, addr, node), EPT's
//!   `ept_history`. `{_id: '["<fabric>",<vnid>,"<addr>",<node>]',
//!   endpoint: '["<fabric>",<vnid>,"<addr>"]', fabric, vnid: i64, addr,
//!   node: i64, body: <the HistoryRecord as JSON text>}`. Indexes:
//!   `endpoint` (every node of one endpoint, for
//!   [`HistoryStore::histories`]); `fabric, node`.
//! - `ept_endpoint`: one document per (fabric, vnid, addr), EPT's
//!   `ept_endpoint`. `{_id: '["<fabric>",<vnid>,"<addr>"]', fabric,
//!   vnid: i64, addr, type: "mac"|"ipv4"|"ipv6", body: <the EndpointRecord
//!   as JSON text>}`. Index: `addr`.
//!
//! Ids are JSON arrays, so no fabric or address (which may hold any
//! character) can make two keys collide. The record is kept as JSON text
//! with EPT's field names rather than as a subdocument, for the same
//! reasons as `status`'s body: the model has booleans (`is_stale`), u64
//! counts and nested arrays of documents, which nx-27017 would not give
//! back as written, and the text is exactly what the SQLite store keeps, so
//! both backends read back identical records (timestamps to the last bit:
//! this crate turns on serde_json's `float_roundtrip`). Every write replaces the
//! whole document (an upsert carrying its `_id`); a retried write leaves the
//! same state. A body that does not parse or names another key than its
//! document is reported as [`StoreError::Malformed`].

use std::collections::BTreeMap;

use mongodb::bson::{Document, doc};

use vigil_endpoints::model::{EndpointKey, EndpointRecord, EndpointType, HistoryRecord};
use vigil_endpoints::store::{HistoryStore, StoreError};

use crate::{MongoStorage, text};
use vigil_endpoints::query::{AddrMatch, EndpointFilter, prefix_upper};

pub(crate) const EPT_HISTORY: &str = "ept_history";
pub(crate) const EPT_ENDPOINT: &str = "ept_endpoint";
/// The indexes of `ept_endpoint` that serve
/// [`HistoryStore::find_endpoints`]: page order (addr, fabric, vnid) across
/// fabrics, and within a fabric.
pub(crate) const EPT_ENDPOINT_QUERY_INDEXES: &[&[&str]] =
    &[&["addr", "fabric", "vnid"], &["fabric", "addr", "vnid"]];

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

/// The `_id` of an endpoint document (and `endpoint` of its histories).
fn endpoint_id(fabric: &str, vnid: u32, addr: &str) -> Result<String, StoreError> {
    serde_json::to_string(&(fabric, vnid, addr)).map_err(storage)
}

fn history_id(fabric: &str, vnid: u32, addr: &str, node: u32) -> Result<String, StoreError> {
    serde_json::to_string(&(fabric, vnid, addr, node)).map_err(storage)
}

fn type_name(t: EndpointType) -> &'static str {
    match t {
        EndpointType::Mac => "mac",
        EndpointType::Ipv4 => "ipv4",
        EndpointType::Ipv6 => "ipv6",
    }
}

fn body(document: &Document, what: &'static str, key: String) -> Result<String, StoreError> {
    text(document, "body").map_err(|e| malformed(what, key, e))
}

/// The filter of [`HistoryStore::find_endpoints`]: the address range, the
/// fabric and vnid, and "after" in page order (addr, fabric, vnid).
fn find_filter(filter: &EndpointFilter, after: Option<&EndpointKey>) -> Document {
    let mut parts: Vec<Document> = Vec::new();
    match &filter.addr {
        AddrMatch::Any => {}
        AddrMatch::Exact(addr) => parts.push(doc! { "addr": addr }),
        AddrMatch::Prefix(prefix) => {
            let mut range = doc! { "$gte": prefix };
            if let Some(upper) = prefix_upper(prefix) {
                range.insert("$lt", upper);
            }
            parts.push(doc! { "addr": range });
        }
    }
    if let Some(fabric) = &filter.fabric {
        parts.push(doc! { "fabric": fabric });
    }
    if let Some(vnid) = filter.vnid {
        parts.push(doc! { "vnid": i64::from(vnid) });
    }
    if let Some(after) = after {
        let vnid = i64::from(after.vnid);
        parts.push(doc! { "$or": [
            { "addr": { "$gt": &after.addr } },
            { "addr": &after.addr, "fabric": { "$gt": &after.fabric } },
            { "addr": &after.addr, "fabric": &after.fabric, "vnid": { "$gt": vnid } },
        ] });
    }
    match parts.len() {
        0 => Document::new(),
        1 => parts.pop().unwrap_or_default(),
        _ => doc! { "$and": parts },
    }
}

#[async_trait::async_trait]
impl HistoryStore for MongoStorage {
    async fn histories(
        &self,
        key: &EndpointKey,
    ) -> Result<BTreeMap<u32, HistoryRecord>, StoreError> {
        let endpoint = endpoint_id(&key.fabric, key.vnid, &key.addr)?;
        let documents = self
            .find_all(EPT_HISTORY, doc! { "endpoint": &endpoint }, None, None)
            .await
            .map_err(storage)?;
        let mut histories = BTreeMap::new();
        for d in &documents {
            let record: HistoryRecord = serde_json::from_str(&body(d, "history", key.to_string())?)
                .map_err(|e| malformed("history", key.to_string(), e))?;
            if record.fabric != key.fabric || record.vnid != key.vnid || record.addr != key.addr {
                return Err(malformed(
                    "history",
                    key.to_string(),
                    format!(
                        "body names {} vnid {} {} node {}",
                        record.fabric, record.vnid, record.addr, record.node
                    ),
                ));
            }
            let id = history_id(&record.fabric, record.vnid, &record.addr, record.node)?;
            if d.get_str("_id").ok() != Some(id.as_str()) {
                return Err(malformed(
                    "history",
                    key.to_string(),
                    format!("body names node {}, not its _id's", record.node),
                ));
            }
            histories.insert(record.node, record);
        }
        Ok(histories)
    }

    async fn put_history(&self, record: HistoryRecord) -> Result<(), StoreError> {
        let id = history_id(&record.fabric, record.vnid, &record.addr, record.node)?;
        let endpoint = endpoint_id(&record.fabric, record.vnid, &record.addr)?;
        let body = serde_json::to_string(&record).map_err(storage)?;
        let update = doc! {
            "q": { "_id": &id },
            "u": {
                "_id": &id,
                "endpoint": endpoint,
                "fabric": record.fabric.as_str(),
                "vnid": i64::from(record.vnid),
                "addr": record.addr.as_str(),
                "node": i64::from(record.node),
                "body": body,
            },
            "upsert": true,
        };
        self.upsert_all(EPT_HISTORY, vec![update])
            .await
            .map_err(storage)?;
        Ok(())
    }

    async fn endpoint(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>, StoreError> {
        let id = endpoint_id(&key.fabric, key.vnid, &key.addr)?;
        let documents = self
            .find_all(EPT_ENDPOINT, doc! { "_id": &id }, None, Some(1))
            .await
            .map_err(storage)?;
        let Some(d) = documents.first() else {
            return Ok(None);
        };
        let record: EndpointRecord = serde_json::from_str(&body(d, "endpoint", key.to_string())?)
            .map_err(|e| malformed("endpoint", key.to_string(), e))?;
        if record.key() != *key {
            return Err(malformed(
                "endpoint",
                key.to_string(),
                format!("body names {}", record.key()),
            ));
        }
        Ok(Some(record))
    }

    async fn find_endpoints(
        &self,
        filter: &EndpointFilter,
        after: Option<&EndpointKey>,
        limit: usize,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let documents = self
            .find_all(
                EPT_ENDPOINT,
                find_filter(filter, after),
                Some(doc! { "addr": 1, "fabric": 1, "vnid": 1 }),
                Some(i64::try_from(limit).unwrap_or(i64::MAX)),
            )
            .await
            .map_err(storage)?;
        let mut records = Vec::with_capacity(documents.len());
        for d in &documents {
            let id = d.get_str("_id").unwrap_or_default().to_owned();
            let record: EndpointRecord = serde_json::from_str(&body(d, "endpoint", id.clone())?)
                .map_err(|e| malformed("endpoint", id.clone(), e))?;
            if endpoint_id(&record.fabric, record.vnid, &record.addr)? != id {
                return Err(malformed(
                    "endpoint",
                    id,
                    format!("body names {}", record.key()),
                ));
            }
            records.push(record);
        }
        Ok(records)
    }

    async fn put_endpoint(&self, record: EndpointRecord) -> Result<(), StoreError> {
        let id = endpoint_id(&record.fabric, record.vnid, &record.addr)?;
        let body = serde_json::to_string(&record).map_err(storage)?;
        let update = doc! {
            "q": { "_id": &id },
            "u": {
                "_id": &id,
                "fabric": record.fabric.as_str(),
                "vnid": i64::from(record.vnid),
                "addr": record.addr.as_str(),
                "type": type_name(record.endpoint_type),
                "body": body,
            },
            "upsert": true,
        };
        self.upsert_all(EPT_ENDPOINT, vec![update])
            .await
            .map_err(storage)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unambiguous() -> Result<(), StoreError> {
        // A fabric or address holding the separator cannot collide.
        assert_ne!(endpoint_id("a\",1,\"b", 2, "c")?, endpoint_id("a", 1, "b")?);
        assert_eq!(endpoint_id("f", 7, "10.0.0.1")?, r#"["f",7,"10.0.0.1"]"#);
        assert_eq!(
            history_id("f", 7, "10.0.0.1", 101)?,
            r#"["f",7,"10.0.0.1",101]"#
        );
        Ok(())
    }
}
