//! Endpoints runs → endpoint events: the host side of issue #14's SNMP
//! source.
//!
//! An endpoints plugin (`Kind = endpoints`, e.g. the bundled
//! `snmp-endpoints`) returns whole address-table snapshots of the device it
//! ran for. [`EndpointFeed::apply`] compares each with the previous snapshot
//! of the same (device, kind, context) through the pure differ
//! ([`vigil_endpoints::snapshot`]) and hands the events to the endpoint
//! tracker's [`EventSink`] with [`Source::Snmp`].
//!
//! # Where state lives
//!
//! The previous snapshot of every table and the device → node id
//! assignments are kept in the site's key/value backend (the one plugins'
//! `kv` uses: in memory, SQLite, or Redis when agents share it), under a
//! namespace no plugin can name ([`STATE_NAMESPACE`]: plugin names cannot
//! contain control characters). So a restart compares the first snapshot
//! with the last one seen before it, and reports exactly what changed while
//! vigil was down: no spurious deletes, no lost ones; a node id once given
//! never changes. Without a persistent backend (the embedded in-memory
//! kv), the first snapshot after a start only creates (the differ never
//! deletes without a previous table), and the history step ignores a
//! `created` identical to what it already holds.
//!
//! # Fabric and node
//!
//! Events belong to the fabric named by [`EndpointFeedSettings::fabric`],
//! by default the device's site. The node is the device: its resource id
//! gets a stable id in 1..=0xfffe ([`vigil_endpoints::snapshot::NodeIds`]),
//! and the node's name for operators is the resource id
//! ([`EndpointFeed::node_name`]). The feed publishes the fabric's model
//! (its SNMP nodes, role `switch`) through [`EventSink::fabric`] when it
//! first sends events for a fabric and whenever a new device joins it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use vigil_core::kv::KvBackend;
use vigil_endpoints::snapshot::{self, DiffContext, NodeIds, StoredTable, TableSnapshot};
use vigil_endpoints::{EventSink, Fabric, Source, Status};

use crate::model::Resource;

/// The key/value namespace of the feed's state (see the module docs).
pub const STATE_NAMESPACE: &str = "\u{7f}vigil.endpoint-snapshots";
/// Bytes the feed's state may take in the key/value backend.
pub const STATE_QUOTA: u64 = 1 << 30;

/// How the feed names what it reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointFeedSettings {
    /// The fabric every SNMP endpoint event belongs to; `None` = the
    /// device's site (`resource_site`).
    pub fabric: Option<String>,
}

/// What one run's snapshots became (the run record's detail).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedSummary {
    pub tables: usize,
    pub entries: usize,
    pub incomplete: usize,
    pub created: usize,
    pub modified: usize,
    pub deleted: usize,
    pub rejected: usize,
    /// Why nothing was sent, when nothing could be.
    pub error: Option<String>,
}

impl FeedSummary {
    /// `2 tables, 14 entries; events: 3 created, 1 modified, 0 deleted`.
    pub fn describe(&self) -> String {
        let mut text = format!("{} address tables, {} entries", self.tables, self.entries);
        if self.incomplete > 0 {
            text.push_str(&format!(" ({} incomplete: no deletes)", self.incomplete));
        }
        text.push_str(&format!(
            "; endpoint events: {} created, {} modified, {} deleted",
            self.created, self.modified, self.deleted
        ));
        if self.rejected > 0 {
            text.push_str(&format!("; {} entries refused", self.rejected));
        }
        if let Some(error) = &self.error {
            text.push_str(&format!("; {error}"));
        }
        text
    }
}

/// Node ids per fabric, loaded from the backend on first use.
#[derive(Default)]
struct Nodes {
    fabrics: HashMap<String, NodeIds>,
    /// Fabrics whose model was published in this process.
    published: std::collections::HashSet<String>,
}

/// Turns endpoints runs into endpoint events (see the module docs).
pub struct EndpointFeed {
    sink: Arc<dyn EventSink>,
    kv: Arc<dyn KvBackend>,
    settings: EndpointFeedSettings,
    nodes: tokio::sync::Mutex<Nodes>,
}

impl EndpointFeed {
    /// A feed writing to `sink`, keeping its state in `kv` (pass the
    /// sandbox's, [`crate::sandbox::Sandbox::kv`]).
    pub fn new(
        sink: Arc<dyn EventSink>,
        kv: Arc<dyn KvBackend>,
        settings: EndpointFeedSettings,
    ) -> EndpointFeed {
        EndpointFeed {
            sink,
            kv,
            settings,
            nodes: tokio::sync::Mutex::new(Nodes::default()),
        }
    }

    fn fabric_of(&self, resource: &Resource) -> String {
        match &self.settings.fabric {
            Some(f) => f.clone(),
            None if resource.site.is_empty() => "default".to_owned(),
            None => resource.site.clone(),
        }
    }

    /// The node name of `id` in `fabric` (the device's resource id), once
    /// the feed has seen it.
    pub async fn node_name(&self, fabric: &str, id: u32) -> Option<String> {
        let nodes = self.nodes.lock().await;
        nodes
            .fabrics
            .get(fabric)
            .and_then(|n| n.name(id))
            .map(str::to_owned)
    }

    async fn kv_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn KvBackend) -> T + Send + 'static,
    ) -> Result<T, String> {
        let kv = self.kv.clone();
        if kv.blocking() {
            tokio::task::spawn_blocking(move || f(kv.as_ref()))
                .await
                .map_err(|e| format!("key/value task failed: {e}"))
        } else {
            Ok(f(kv.as_ref()))
        }
    }

    /// The node id of `resource` in `fabric`, assigning (and persisting)
    /// one if needed; publishes the fabric's model when it changed.
    async fn node_id(&self, fabric: &str, resource: &str) -> Result<u32, String> {
        let mut nodes = self.nodes.lock().await;
        if !nodes.fabrics.contains_key(fabric) {
            let prefix = format!("n/{fabric}/");
            let loaded = self
                .kv_call({
                    let prefix = prefix.clone();
                    move |kv| -> Result<Vec<(String, u32)>, String> {
                        let mut found = Vec::new();
                        for key in kv.keys(STATE_NAMESPACE).map_err(|e| e.to_string())? {
                            let Some(name) = key.strip_prefix(&prefix) else {
                                continue;
                            };
                            let value = kv.get(STATE_NAMESPACE, &key).map_err(|e| e.to_string())?;
                            if let Some(id) = value
                                .and_then(|v| String::from_utf8(v).ok())
                                .and_then(|v| v.parse::<u32>().ok())
                            {
                                found.push((name.to_owned(), id));
                            }
                        }
                        Ok(found)
                    }
                })
                .await??;
            let mut ids = NodeIds::new();
            for (name, id) in loaded {
                if !ids.insert(&name, id) {
                    tracing::warn!(fabric, resource = %name, id, "conflicting stored node id ignored");
                }
            }
            nodes.fabrics.insert(fabric.to_owned(), ids);
        }
        let ids = nodes.fabrics.entry(fabric.to_owned()).or_default();
        let Some((id, new)) = ids.assign(resource) else {
            return Err(format!("fabric {fabric:?} has no free node id"));
        };
        if new {
            let key = state_key(&format!("n/{fabric}/{resource}"));
            let value = id.to_string().into_bytes();
            self.kv_call(move |kv| {
                kv.set(STATE_NAMESPACE, &key, &value, STATE_QUOTA)
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{e:?}"))
            })
            .await??;
        }
        if new || !nodes.published.contains(fabric) {
            let mut model = Fabric::new(fabric, 0);
            if let Some(ids) = nodes.fabrics.get(fabric) {
                for n in 1..=snapshot::MAX_NODE_ID {
                    if ids.name(n).is_some() {
                        model.add_node(n, 1, "switch");
                    }
                    if model.nodes.len() >= ids.len() {
                        break;
                    }
                }
            }
            nodes.published.insert(fabric.to_owned());
            drop(nodes);
            self.sink
                .fabric(Arc::new(model))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(id)
    }

    /// Compare one run's snapshots of `resource` with the stored ones and
    /// send what changed. `cut_short`: the SNMP capability saw a walk cut
    /// short this run, so no table of it may delete.
    pub async fn apply(
        &self,
        resource: &Resource,
        tables: Vec<TableSnapshot>,
        ts: f64,
        cut_short: bool,
    ) -> FeedSummary {
        let mut summary = FeedSummary {
            tables: tables.len(),
            entries: tables.iter().map(|t| t.entries.len()).sum(),
            ..FeedSummary::default()
        };
        let fabric = self.fabric_of(resource);
        let node = match self.node_id(&fabric, &resource.id).await {
            Ok(node) => node,
            Err(e) => {
                summary.error = Some(format!("no endpoint events: {e}"));
                return summary;
            }
        };
        let ctx = DiffContext {
            fabric: fabric.clone(),
            node,
            ts,
        };
        // One snapshot per (kind, context): a later one of the same key
        // replaces an earlier one of the same run.
        let mut by_key: BTreeMap<String, TableSnapshot> = BTreeMap::new();
        for mut table in tables {
            let Some(kind) = table.kind else { continue };
            if cut_short {
                table.complete = false;
            }
            by_key.insert(
                state_key(&format!(
                    "t/{}",
                    snapshot::table_key(&fabric, node, kind, &table.context)
                )),
                table,
            );
        }
        for (key, table) in by_key {
            let previous = {
                let key = key.clone();
                match self
                    .kv_call(move |kv| kv.get(STATE_NAMESPACE, &key).map_err(|e| e.to_string()))
                    .await
                    .and_then(|r| r)
                {
                    Ok(bytes) => bytes.and_then(|b| serde_json::from_slice::<StoredTable>(&b).ok()),
                    Err(e) => {
                        // Without the previous table the diff could not
                        // tell deletes: skip this table this run.
                        summary.error = Some(format!("reading the previous snapshot: {e}"));
                        continue;
                    }
                }
            };
            let diff = snapshot::diff(previous.as_ref(), &table, &ctx);
            if !diff.complete {
                summary.incomplete += 1;
            }
            summary.rejected += diff.rejected.len();
            for (reason, sample) in &diff.rejected {
                self.sink.rejected(Source::Snmp, reason, sample);
            }
            // Events first, then the table: a run cut off in between (the
            // tracker shutting down, the backend failing) leaves the old
            // table stored, so the next run finds the same changes again
            // (at least once; the history ignores a repeated created or
            // deleted) instead of losing them.
            let changed = previous.as_ref() != Some(&diff.next);
            for event in diff.events {
                match event.status {
                    Status::Created => summary.created += 1,
                    Status::Modified => summary.modified += 1,
                    Status::Deleted => summary.deleted += 1,
                }
                if self.sink.event(Source::Snmp, event).await.is_err() {
                    summary.error = Some("the endpoint tracker is shutting down".to_owned());
                    return summary;
                }
            }
            if changed {
                let bytes = match serde_json::to_vec(&diff.next) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        summary.error = Some(format!("encoding a snapshot: {e}"));
                        continue;
                    }
                };
                let stored = self
                    .kv_call(move |kv| {
                        kv.set(STATE_NAMESPACE, &key, &bytes, STATE_QUOTA)
                            .map_err(|e| e.to_string())?
                            .map_err(|e| format!("{e:?}"))
                    })
                    .await
                    .and_then(|r| r);
                if let Err(e) = stored {
                    summary.error = Some(format!(
                        "storing the snapshot (its changes are reported again next run): {e}"
                    ));
                }
            }
        }
        summary
    }
}

/// A key the backends accept (1 to 256 bytes): long ones are hashed.
fn state_key(key: &str) -> String {
    if key.len() <= 256 {
        key.to_owned()
    } else {
        format!("h/{}", crate::sandbox::sha256_hex(key.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::kv::MemoryKv;
    use vigil_endpoints::ingest::CollectingSink;
    use vigil_endpoints::snapshot::{TableEntry, TableKind};

    fn fdb(mac: &str, port: &str) -> TableSnapshot {
        TableSnapshot {
            kind: Some(TableKind::Forwarding),
            source: "dot1dTpFdbTable".into(),
            context: String::new(),
            complete: true,
            entries: vec![TableEntry {
                mac: mac.into(),
                interface: port.into(),
                ..TableEntry::default()
            }],
        }
    }

    #[tokio::test]
    async fn a_restart_resumes_from_the_stored_snapshot() {
        let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
        let sink = Arc::new(CollectingSink::new());
        let resource = Resource::named("sw1", "127.0.0.1");
        let feed = EndpointFeed::new(sink.clone(), kv.clone(), EndpointFeedSettings::default());
        let first = feed
            .apply(
                &resource,
                vec![fdb("02:00:00:00:00:01", "swp1")],
                1.0,
                false,
            )
            .await;
        assert_eq!(first.created, 1, "{first:?}");
        // A new feed on the same backend (a restart): the same table is no
        // change, a moved MAC is one modified event.
        let feed = EndpointFeed::new(sink.clone(), kv.clone(), EndpointFeedSettings::default());
        let same = feed
            .apply(
                &resource,
                vec![fdb("02:00:00:00:00:01", "swp1")],
                2.0,
                false,
            )
            .await;
        assert_eq!((same.created, same.modified, same.deleted), (0, 0, 0));
        let moved = feed
            .apply(
                &resource,
                vec![fdb("02:00:00:00:00:01", "swp2")],
                3.0,
                false,
            )
            .await;
        assert_eq!(moved.modified, 1, "{moved:?}");
        // A walk cut short never deletes.
        let mut empty = fdb("02:00:00:00:00:01", "swp2");
        empty.entries.clear();
        let cut = feed.apply(&resource, vec![empty.clone()], 4.0, true).await;
        assert_eq!(cut.deleted, 0);
        let gone = feed.apply(&resource, vec![empty], 5.0, false).await;
        assert_eq!(gone.deleted, 1);
        let collected = sink.collected();
        let nodes: Vec<u32> = collected.events.iter().map(|(_, e)| e.node).collect();
        assert!(nodes.iter().all(|n| *n == nodes[0] && *n > 0));
        assert_eq!(
            feed.node_name(&feed.fabric_of(&resource), nodes[0])
                .await
                .as_deref(),
            Some("sw1")
        );
        assert!(!collected.fabrics.is_empty());
    }

    #[tokio::test]
    async fn the_embedded_store_keeps_snapshots_and_node_ids_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vigil.db");
        let resource = Resource::named("sw9", "127.0.0.1");
        let sink = Arc::new(CollectingSink::new());
        let node = {
            let kv: Arc<dyn KvBackend> =
                Arc::new(crate::store::kv::SqliteKv::open(&path).expect("kv"));
            let feed = EndpointFeed::new(sink.clone(), kv, EndpointFeedSettings::default());
            let first = feed
                .apply(
                    &resource,
                    vec![fdb("02:00:00:00:00:09", "swp9")],
                    1.0,
                    false,
                )
                .await;
            assert_eq!(first.created, 1, "{first:?}");
            sink.take_events()[0].1.node
        };
        // A new process: same file, same tables, nothing to report, and the
        // node keeps its id.
        let kv: Arc<dyn KvBackend> = Arc::new(crate::store::kv::SqliteKv::open(&path).expect("kv"));
        let feed = EndpointFeed::new(sink.clone(), kv, EndpointFeedSettings::default());
        let again = feed
            .apply(
                &resource,
                vec![fdb("02:00:00:00:00:09", "swp9")],
                2.0,
                false,
            )
            .await;
        assert_eq!(
            (again.created, again.modified, again.deleted),
            (0, 0, 0),
            "{again:?}"
        );
        let mut gone = fdb("02:00:00:00:00:09", "swp9");
        gone.entries.clear();
        let deleted = feed.apply(&resource, vec![gone], 3.0, false).await;
        assert_eq!(deleted.deleted, 1);
        assert_eq!(sink.take_events()[0].1.node, node);
    }
}
