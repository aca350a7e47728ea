//! One conformance suite for every endpoint-history backend (issue #14):
//! each check is a function of a `&dyn HistoryStore`, run against the
//! in-memory store of `vigil-endpoints`, the embedded SQLite store
//! (`vigil_store::endpoints::SqliteHistory`, in a temporary directory) and
//! MongoDB (`vigil_mongo::MongoStorage`, a fresh database per test on one
//! nx-27017 server shared by this module's tests). All must give the same
//! answers; the in-memory store is the reference the others are compared
//! with, record for record.
//!
//! The event sequence of [`sequence`] goes through the APIC parser and
//! `process_event`, as the subscriber feeds it: MAC learns on a vpc pair, a
//! remote learn over a tunnel to the vpc, a modify, a move to another leaf
//! with the deletes on the old ones, an out-of-order event, an IPv4 learn
//! with its rewrite (rs) object, a remote IP, a change of the MAC behind the
//! IP, a delete folded by a quick re-learn, an IPv6 learn with its rewrite,
//! and a delete of an unknown endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, ensure};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use vigil_endpoints::apic::{ApicObject, EpmParser};
use vigil_endpoints::dispatch::{DispatchConfig, Dispatcher};
use vigil_endpoints::fabric::{Fabric, Tunnel, vpc_node_id};
use vigil_endpoints::model::{
    EndpointEvent, EndpointKey, EndpointRecord, EndpointType, EpmClass, EpmEvent, HistoryEvent,
    HistoryRecord, HistoryType, LearnType, Settings, Status,
};
use vigil_endpoints::query::{self, AddrMatch, EndpointFilter, MAX_PAGE, Search};
use vigil_endpoints::store::{EventOutcome, HistoryStore, MemoryStore, process_event};
use vigil_endpoints::write_behind::{HistoryWorker, WriteBehind, WriteBehindConfig};
use vigil_host::store::endpoints::SqliteHistory;
use vigil_mongo::MongoStorage;
use vigil_tests::mongo_servers::{shared_nx_mongo, unique_database};

// --- backends ----------------------------------------------------------------

/// Opens the same store again each time it is called.
type Opener = Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn HistoryStore>>> + Send + Sync>;

/// The in-memory store: "reopening" gives the same store back.
fn memory_backend() -> Opener {
    let store: Arc<dyn HistoryStore> = Arc::new(MemoryStore::new());
    Box::new(move || {
        let store = store.clone();
        Box::pin(async move { Ok(store) })
    })
}

fn sqlite_backend() -> Result<(tempfile::TempDir, Opener)> {
    let dir = tempfile::tempdir().context("tempdir")?;
    let path = dir.path().join("vigil.db");
    let open: Opener = Box::new(move || {
        let path = path.clone();
        Box::pin(async move {
            let store = SqliteHistory::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            Ok(Arc::new(store) as Arc<dyn HistoryStore>)
        })
    });
    Ok((dir, open))
}

/// A database of its own for test `name` on the shared server.
fn mongo_backend(name: &str) -> Result<Opener> {
    let url = shared_nx_mongo()?.url();
    let database = unique_database("ept", name);
    Ok(Box::new(move || {
        let (url, database) = (url.clone(), database.clone());
        Box::pin(async move {
            let store = MongoStorage::open(&url, &database)
                .await
                .with_context(|| format!("opening database {database} at {url}"))?;
            Ok(Arc::new(store) as Arc<dyn HistoryStore>)
        })
    }))
}

/// Runs each check (a `fn(&dyn HistoryStore) -> Result<()>`) against a
/// fresh store of each backend, and each restart check (a `fn(&Opener) ->
/// Result<()>`) with a way to reopen the same store.
macro_rules! conformance {
    (checks: [$($check:ident),* $(,)?], restarts: [$($restart:ident),* $(,)?] $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() -> anyhow::Result<()> {
                    let open = super::memory_backend();
                    super::$check(open().await?.as_ref()).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() -> anyhow::Result<()> {
                    let (_dir, open) = super::sqlite_backend()?;
                    super::$check(open().await?.as_ref()).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $restart() -> anyhow::Result<()> {
                    let (_dir, open) = super::sqlite_backend()?;
                    super::$restart(&open).await
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() -> anyhow::Result<()> {
                    let open = super::mongo_backend(stringify!($check))?;
                    super::$check(open().await?.as_ref()).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $restart() -> anyhow::Result<()> {
                    let open = super::mongo_backend(stringify!($restart))?;
                    super::$restart(&open).await
                }
            )*
        }
    };
}

conformance! {
    checks: [
        records_round_trip_every_field,
        endpoints_are_isolated_by_fabric_vnid_and_addr,
        histories_returns_every_node_of_one_endpoint_only,
        a_put_replaces_the_whole_record,
        an_event_sequence_gives_the_reference_records,
        a_redelivered_event_changes_nothing,
        searches_match_addresses_in_any_notation,
        pages_walk_every_endpoint_once_in_order,
        locate_and_detail_give_one_endpoint_whole,
    ],
    restarts: [
        a_reopened_store_keeps_everything,
        write_behind_is_durable_after_flush_and_not_before,
        write_behind_eviction_then_reload_equals_never_evicted,
        write_behind_workers_keep_order_per_endpoint,
    ],
}

// --- the fabric and the events -------------------------------------------------

const FABRIC: &str = "fab1";
const VRF: u32 = 2949120;
const BD: u32 = 15990734;
const OVERLAY: u32 = 16777199;
const PCTAG: i64 = 32771;
const MAC: &str = "00:50:56:AD:BB:16";
const MAC2: &str = "00:50:56:AD:BB:17";
const UNKNOWN_MAC: &str = "00:50:56:AD:BB:99";
const IP4: &str = "10.1.1.101";
const IP6: &str = "2001:db8:1::65";

fn fabric() -> Fabric {
    let mut f = Fabric::new(FABRIC, OVERLAY);
    for (node, pod) in [(101, 1), (102, 1), (103, 2), (104, 2)] {
        f.add_node(node, pod, "leaf");
    }
    f.add_vpc_pair(101, 102);
    f.add_port_channel(101, "po1", "vpc-policy-A", 5);
    f.add_port_channel(102, "po2", "vpc-policy-A", 5);
    f.add_tunnel(Tunnel {
        node: 103,
        intf: "tunnel1".into(),
        dst: "10.0.72.64".into(),
        remote: vpc_node_id(101, 102).unwrap_or(0),
        encap: "ivxlan".into(),
        flags: "physical".into(),
    });
    f.add_tunnel(Tunnel {
        node: 104,
        intf: "tunnel3".into(),
        dst: "10.0.72.66".into(),
        remote: 103,
        encap: "ivxlan".into(),
        flags: "physical".into(),
    });
    f.add_epg(VRF, PCTAG, "uni/tn-t/ap-a/epg-web", BD);
    f.add_epg(VRF, PCTAG + 1, "uni/tn-t/ap-a/epg-app", BD);
    f.add_vnid(VRF, "uni/tn-t/ctx-v1", false, "");
    f.add_vnid(BD, "uni/tn-t/BD-bd1", false, "");
    f
}

fn mac_dn(node: u32, mac: &str) -> String {
    format!(
        "topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/mac-{mac}"
    )
}

fn ip_dn(node: u32, ip: &str) -> String {
    format!(
        "topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/ip-[{ip}]"
    )
}

fn ip_xr_dn(node: u32, ip: &str) -> String {
    format!("topology/pod-2/node-{node}/sys/ctx-[vxlan-{VRF}]/db-ep/ip-[{ip}]")
}

fn rs_dn(node: u32, mac: &str, ip: &str) -> String {
    format!(
        "topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/mac-{mac}/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/ip-[{ip}]]"
    )
}

fn ep(dn: String, status: &str, flags: &str, if_id: &str, pctag: i64) -> Value {
    json!({"dn": dn, "status": status, "flags": flags, "ifId": if_id, "pcTag": pctag.to_string()})
}

/// One APIC object through the parser, as the subscriber receives it.
fn event(parser: &EpmParser, class: &str, attrs: Value, ts: f64) -> Result<EpmEvent> {
    let payload = json!({ "ts": ts, "imdata": [{ class: { "attributes": attrs } }] });
    let parsed = parser
        .parse_payload(&payload.to_string(), 0.0)
        .map_err(|e| anyhow!("payload at ts {ts}: {e}"))?;
    let object = parsed
        .objects
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no object at ts {ts}"))?
        .map_err(|e| anyhow!("object at ts {ts}: {e}"))?;
    match object {
        ApicObject::Endpoint(ev) => Ok(ev),
        _ => Err(anyhow!("not an endpoint object at ts {ts}")),
    }
}

/// A realistic sequence for one fabric: MAC on a vpc pair, a remote learn,
/// a modify, a move with deletes, an out-of-order event, IPv4 with rewrite
/// changes and a folded delete, IPv6 with rewrite, an unknown delete.
fn sequence() -> Result<Vec<EpmEvent>> {
    let p = EpmParser::new(FABRIC, OVERLAY);
    let rs = |dn: String| json!({ "dn": dn });
    let deleted = |dn: String| json!({ "dn": dn, "status": "deleted" });
    Ok(vec![
        // MAC learned on both vpc peers: one vpc pseudo-node location.
        event(
            &p,
            "epmMacEp",
            ep(
                mac_dn(101, MAC),
                "created",
                "local,vpc-attached",
                "po1",
                PCTAG,
            ),
            100.0,
        )?,
        event(
            &p,
            "epmMacEp",
            ep(
                mac_dn(102, MAC),
                "created",
                "local,vpc-attached",
                "po2",
                PCTAG,
            ),
            100.5,
        )?,
        // 103 sees it behind the vpc's anycast TEP.
        event(
            &p,
            "epmMacEp",
            ep(mac_dn(103, MAC), "created", "", "tunnel1", PCTAG),
            101.0,
        )?,
        // The EPG changes (pctag) on 101.
        event(
            &p,
            "epmMacEp",
            ep(
                mac_dn(101, MAC),
                "modified",
                "local,vpc-attached",
                "po1",
                PCTAG + 1,
            ),
            102.0,
        )?,
        // Move to 103, deletes on the vpc pair.
        event(
            &p,
            "epmMacEp",
            ep(mac_dn(103, MAC), "created", "local", "eth1/5", PCTAG + 1),
            200.0,
        )?,
        event(&p, "epmMacEp", deleted(mac_dn(101, MAC)), 200.2)?,
        event(&p, "epmMacEp", deleted(mac_dn(102, MAC)), 200.3)?,
        // Out of order: older than 101's delete, ignored.
        event(
            &p,
            "epmMacEp",
            ep(
                mac_dn(101, MAC),
                "created",
                "local,vpc-attached",
                "po1",
                PCTAG,
            ),
            150.0,
        )?,
        // IPv4 on 103 with its rewrite information.
        event(
            &p,
            "epmIpEp",
            ep(ip_dn(103, IP4), "created", "local", "eth1/5", PCTAG + 1),
            201.0,
        )?,
        event(&p, "epmRsMacEpToIpEpAtt", rs(rs_dn(103, MAC, IP4)), 201.1)?,
        // 104 sees it remotely.
        event(
            &p,
            "epmIpEp",
            ep(ip_xr_dn(104, IP4), "created", "", "tunnel3", PCTAG + 1),
            201.5,
        )?,
        // The MAC behind the IP changes.
        event(&p, "epmRsMacEpToIpEpAtt", rs(rs_dn(103, MAC2, IP4)), 300.0)?,
        // A delete folded by a re-learn within 60 s, on another port.
        event(&p, "epmIpEp", deleted(ip_dn(103, IP4)), 400.0)?,
        event(
            &p,
            "epmIpEp",
            ep(ip_dn(103, IP4), "created", "local", "eth1/6", PCTAG + 1),
            420.0,
        )?,
        event(&p, "epmRsMacEpToIpEpAtt", rs(rs_dn(103, MAC2, IP4)), 420.1)?,
        // IPv6 on 101 with its rewrite.
        event(
            &p,
            "epmIpEp",
            ep(ip_dn(101, IP6), "created", "local", "eth1/1", PCTAG),
            500.0,
        )?,
        event(&p, "epmRsMacEpToIpEpAtt", rs(rs_dn(101, MAC, IP6)), 500.5)?,
        // A delete of an endpoint nobody learned: ignored.
        event(&p, "epmMacEp", deleted(mac_dn(104, UNKNOWN_MAC)), 600.0)?,
    ])
}

fn key(vnid: u32, addr: &str) -> EndpointKey {
    EndpointKey {
        fabric: FABRIC.into(),
        vnid,
        addr: addr.into(),
    }
}

/// Every endpoint the sequence touches.
fn sequence_keys() -> Vec<EndpointKey> {
    vec![
        key(BD, MAC),
        key(BD, UNKNOWN_MAC),
        key(VRF, IP4),
        key(VRF, IP6),
    ]
}

type Snapshot = Vec<(
    EndpointKey,
    BTreeMap<u32, HistoryRecord>,
    Option<EndpointRecord>,
)>;

async fn snapshot(store: &dyn HistoryStore, keys: &[EndpointKey]) -> Result<Snapshot> {
    let mut all = Vec::new();
    for k in keys {
        all.push((
            k.clone(),
            store.histories(k).await.with_context(|| format!("{k}"))?,
            store.endpoint(k).await.with_context(|| format!("{k}"))?,
        ));
    }
    Ok(all)
}

async fn apply(store: &dyn HistoryStore, events: &[EpmEvent]) -> Result<Vec<EventOutcome>> {
    let (settings, fabric) = (Settings::default(), fabric());
    let mut outcomes = Vec::new();
    for ev in events {
        outcomes.push(
            process_event(&settings, &fabric, store, ev)
                .await
                .with_context(|| format!("event at ts {}", ev.ts))?,
        );
    }
    Ok(outcomes)
}

/// The sequence on a fresh in-memory store: the reference.
async fn reference() -> Result<(Vec<EventOutcome>, Snapshot)> {
    let memory = MemoryStore::new();
    let outcomes = apply(&memory, &sequence()?).await?;
    Ok((outcomes, snapshot(&memory, &sequence_keys()).await?))
}

/// What the reference must show, so the sequence is known to exercise what
/// it claims (a move, a fold, rewrites, caps of nothing).
fn check_reference(snap: &Snapshot) -> Result<()> {
    let find = |k: &EndpointKey| snap.iter().find(|(key, _, _)| key == k);
    let (_, mac_hist, mac_ep) = find(&key(BD, MAC)).ok_or_else(|| anyhow!("no MAC"))?;
    ensure!(
        mac_hist.keys().copied().collect::<Vec<_>>() == vec![101, 102, 103],
        "MAC nodes {:?}",
        mac_hist.keys()
    );
    let mac_ep = mac_ep.as_ref().ok_or_else(|| anyhow!("no MAC endpoint"))?;
    ensure!(mac_ep.events[0].node == 103, "MAC is on 103: {mac_ep:?}");
    ensure!(mac_ep.count >= 2, "the move is recorded: {mac_ep:?}");
    let h101 = &mac_hist[&101];
    ensure!(
        h101.events[0].status == Status::Deleted && h101.count == 3,
        "101: learn, modify, delete; the out-of-order learn ignored: {h101:?}"
    );
    let (_, _, unknown) = find(&key(BD, UNKNOWN_MAC)).ok_or_else(|| anyhow!("no unknown"))?;
    ensure!(unknown.is_none(), "an unknown delete creates nothing");
    let (_, ip_hist, ip_ep) = find(&key(VRF, IP4)).ok_or_else(|| anyhow!("no IP4"))?;
    ensure!(ip_hist.contains_key(&104), "104's remote learn");
    let ip_ep = ip_ep.as_ref().ok_or_else(|| anyhow!("no IP4 endpoint"))?;
    ensure!(ip_ep.endpoint_type == EndpointType::Ipv4);
    ensure!(
        ip_ep.events[0].rw_mac == MAC2 && ip_ep.events[0].intf_id == "eth1/6",
        "IP4's current location: {:?}",
        ip_ep.events[0]
    );
    let (_, _, ip6_ep) = find(&key(VRF, IP6)).ok_or_else(|| anyhow!("no IP6"))?;
    let ip6_ep = ip6_ep.as_ref().ok_or_else(|| anyhow!("no IP6 endpoint"))?;
    ensure!(ip6_ep.endpoint_type == EndpointType::Ipv6 && ip6_ep.events[0].rw_mac == MAC);
    Ok(())
}

// --- records -------------------------------------------------------------------

/// A history event with every field set to something other than its default.
fn full_history_event(i: u32) -> HistoryEvent {
    HistoryEvent {
        classname: EpmClass::RsMacEpToIpEpAtt,
        ts: 1_765_000_000.123_456_7 + f64::from(i) * 0.001,
        status: Status::Modified,
        remote: 6_619_238,
        pctag: -(i64::from(i) + 1),
        flags: vigil_endpoints::Flags::parse("local,vpc-attached"),
        tunnel_flags: "physical,proxy".into(),
        encap: "vlan-101".into(),
        intf_id: format!("eth1/{i}").into(),
        intf_name: "vpc-policy-A \"quoted\" ünïcode".into(),
        epg_name: "uni/tn-t/ap-a/epg-web".into(),
        vnid_name: "uni/tn-t/ctx-v1".into(),
        rw_mac: MAC.into(),
        rw_bd: BD,
    }
}

fn history_record(fabric: &str, vnid: u32, addr: &str, node: u32, events: u32) -> HistoryRecord {
    HistoryRecord {
        fabric: fabric.into(),
        node,
        vnid,
        addr: addr.into(),
        history_type: HistoryType::Ip,
        // Capped: more pushed than kept.
        count: u64::from(events) * 3 + 1,
        events: (0..events).map(full_history_event).collect(),
        is_stale: true,
        is_offsubnet: true,
    }
}

fn full_endpoint_event(node: u32) -> EndpointEvent {
    EndpointEvent {
        node,
        pod: 2,
        status: Status::Created,
        ts: 0.1 + 0.2,
        pctag: PCTAG,
        encap: "vlan-2000".into(),
        intf_id: "vpc-5".into(),
        intf_name: "vpc-policy-A".into(),
        rw_mac: MAC.into(),
        rw_bd: BD,
        epg_name: "uni/tn-t/ap-a/epg-web".into(),
        vnid_name: "uni/tn-t/ctx-v1".into(),
    }
}

fn endpoint_record(fabric: &str, vnid: u32, addr: &str, events: u32) -> EndpointRecord {
    EndpointRecord {
        fabric: fabric.into(),
        vnid,
        addr: addr.into(),
        endpoint_type: EndpointType::Ipv6,
        // Beyond 2^53: exact only if stored as an integer.
        count: (1 << 60) + 1,
        events: (0..events).map(|i| full_endpoint_event(100 + i)).collect(),
        first_learn: full_endpoint_event(101),
        learn_type: LearnType::External,
        is_stale: true,
        is_offsubnet: true,
    }
}

// --- checks ----------------------------------------------------------------------

/// Every field of both records comes back as written: event lists at the
/// largest caps, counts above the cap (and above 2^53), fractional
/// timestamps to the last bit, booleans, negative numbers, quotes and
/// non-ASCII text.
async fn records_round_trip_every_field(store: &dyn HistoryStore) -> Result<()> {
    let max_per_node = u32::try_from(Settings::PER_NODE_RANGE.1)?;
    let max_endpoint = u32::try_from(Settings::ENDPOINT_RANGE.1)?;
    let h = history_record(FABRIC, VRF, IP6, 101, max_per_node);
    store.put_history(h.clone()).await?;
    let e = endpoint_record(FABRIC, VRF, IP6, max_endpoint);
    store.put_endpoint(e.clone()).await?;
    let k = key(VRF, IP6);
    let got = store.histories(&k).await?;
    ensure!(got.len() == 1, "one node: {:?}", got.keys());
    ensure!(
        got.get(&101) == Some(&h),
        "history differs after a round trip"
    );
    ensure!(got[&101].events.len() == Settings::PER_NODE_RANGE.1 && got[&101].count == h.count);
    let got = store
        .endpoint(&k)
        .await?
        .ok_or_else(|| anyhow!("no endpoint"))?;
    ensure!(got == e, "endpoint differs after a round trip");
    ensure!(got.count == (1 << 60) + 1 && got.events.len() == Settings::ENDPOINT_RANGE.1);
    Ok(())
}

/// Keys that differ only in fabric, vnid or address (including case and
/// prefix) are separate endpoints; an unknown key has nothing.
async fn endpoints_are_isolated_by_fabric_vnid_and_addr(store: &dyn HistoryStore) -> Result<()> {
    let keys = [
        (FABRIC, VRF, IP4),
        ("fab2", VRF, IP4),
        (FABRIC, VRF + 1, IP4),
        (FABRIC, VRF, "10.1.1.10"),
        (FABRIC, VRF, "10.1.1.1010"),
        (FABRIC, BD, MAC),
        (FABRIC, BD, "00:50:56:ad:bb:16"),
        ("fab1\",1,\"x", VRF, IP4),
    ];
    for (i, (fabric, vnid, addr)) in keys.iter().enumerate() {
        let n = u32::try_from(i)? + 1;
        store
            .put_history(history_record(fabric, *vnid, addr, 100 + n, n))
            .await?;
        store
            .put_endpoint(endpoint_record(fabric, *vnid, addr, n))
            .await?;
    }
    for (i, (fabric, vnid, addr)) in keys.iter().enumerate() {
        let n = u32::try_from(i)? + 1;
        let k = EndpointKey {
            fabric: (*fabric).into(),
            vnid: *vnid,
            addr: (*addr).into(),
        };
        let histories = store.histories(&k).await?;
        ensure!(
            histories.len() == 1
                && histories.get(&(100 + n))
                    == Some(&history_record(fabric, *vnid, addr, 100 + n, n)),
            "{k}: {:?}",
            histories.keys()
        );
        ensure!(
            store.endpoint(&k).await? == Some(endpoint_record(fabric, *vnid, addr, n)),
            "{k}: another endpoint's record"
        );
    }
    for k in [
        key(VRF + 2, IP4),
        key(VRF, "10.1.1"),
        EndpointKey {
            fabric: "fab3".into(),
            vnid: VRF,
            addr: IP4.into(),
        },
    ] {
        ensure!(store.histories(&k).await?.is_empty(), "{k} has histories");
        ensure!(store.endpoint(&k).await?.is_none(), "{k} has a record");
    }
    Ok(())
}

/// `histories` gives every node's record of one endpoint (plain nodes and a
/// vpc pseudo-node id), keyed by node, and nothing of another endpoint.
async fn histories_returns_every_node_of_one_endpoint_only(store: &dyn HistoryStore) -> Result<()> {
    let vpc = vpc_node_id(101, 102).ok_or_else(|| anyhow!("vpc id"))?;
    let nodes = [101, 102, 103, 4000, vpc];
    let mut expected = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let r = history_record(FABRIC, BD, MAC, *node, u32::try_from(i)? + 1);
        store.put_history(r.clone()).await?;
        expected.insert(*node, r);
        // Same node, neighbouring endpoints.
        store
            .put_history(history_record(FABRIC, BD, MAC2, *node, 1))
            .await?;
        store
            .put_history(history_record(FABRIC, BD + 1, MAC, *node, 1))
            .await?;
    }
    ensure!(
        store.histories(&key(BD, MAC)).await? == expected,
        "not exactly the endpoint's nodes"
    );
    ensure!(store.histories(&key(BD, MAC2)).await?.len() == nodes.len());
    ensure!(
        store.endpoint(&key(BD, MAC)).await?.is_none(),
        "histories make no endpoint record"
    );
    Ok(())
}

/// A put replaces the whole record (shorter lists, cleared flags), never
/// merges, and adds no second record.
async fn a_put_replaces_the_whole_record(store: &dyn HistoryStore) -> Result<()> {
    store
        .put_history(history_record(FABRIC, VRF, IP4, 103, 40))
        .await?;
    store
        .put_endpoint(endpoint_record(FABRIC, VRF, IP4, 40))
        .await?;
    let mut h = history_record(FABRIC, VRF, IP4, 103, 2);
    h.is_stale = false;
    h.history_type = HistoryType::Mac;
    h.count = 2;
    store.put_history(h.clone()).await?;
    let mut e = endpoint_record(FABRIC, VRF, IP4, 1);
    e.is_offsubnet = false;
    e.endpoint_type = EndpointType::Ipv4;
    e.learn_type = LearnType::Epg;
    e.count = 7;
    store.put_endpoint(e.clone()).await?;
    let got = store.histories(&key(VRF, IP4)).await?;
    ensure!(
        got.len() == 1 && got.get(&103) == Some(&h),
        "history not replaced"
    );
    ensure!(
        store.endpoint(&key(VRF, IP4)).await? == Some(e),
        "endpoint not replaced"
    );
    Ok(())
}

/// The sequence through `process_event` on this backend gives the same
/// outcomes, event by event, and the same records, field by field, as on
/// the in-memory reference.
async fn an_event_sequence_gives_the_reference_records(store: &dyn HistoryStore) -> Result<()> {
    let (expected_outcomes, expected) = reference().await?;
    check_reference(&expected)?;
    let outcomes = apply(store, &sequence()?).await?;
    ensure!(
        outcomes == expected_outcomes,
        "outcomes differ: {outcomes:?}"
    );
    let got = snapshot(store, &sequence_keys()).await?;
    for ((k, h, e), (_, want_h, want_e)) in got.iter().zip(&expected) {
        ensure!(h == want_h, "{k}: histories differ from the reference");
        ensure!(e == want_e, "{k}: endpoint differs from the reference");
    }
    Ok(())
}

/// Each event delivered twice in a row (at-least-once delivery): the second
/// copy is ignored by the history step (out of order, after a delete, or
/// unchanged) and leaves every record as the first left it.
///
/// Not claimed: that replaying a whole *older* stretch is harmless. EPT's
/// out-of-order rule (W:690-693) compares an event only with the node's
/// newest event of the same class, so replaying this sequence a second
/// time pushes again: the rs at 201.1 (MAC) lands after the newer epmIpEp
/// at 420 (which carries MAC2), and the delete at 400 after that. Redelivery
/// after a crash must resume per endpoint, not from an older offset.
async fn a_redelivered_event_changes_nothing(store: &dyn HistoryStore) -> Result<()> {
    let (settings, fabric) = (Settings::default(), fabric());
    let keys = sequence_keys();
    for ev in sequence()? {
        process_event(&settings, &fabric, store, &ev).await?;
        let before = snapshot(store, &keys).await?;
        let again = process_event(&settings, &fabric, store, &ev).await?;
        ensure!(
            !again.history.pushed(),
            "redelivery at ts {} pushed: {again:?}",
            ev.ts
        );
        ensure!(
            snapshot(store, &keys).await? == before,
            "redelivery at ts {} changed the records",
            ev.ts
        );
    }
    // And the records are the reference's.
    let (_, expected) = reference().await?;
    ensure!(snapshot(store, &keys).await? == expected);
    Ok(())
}

/// Closing and reopening the store keeps every record of the sequence, and
/// processing continues from them as if never closed.
async fn a_reopened_store_keeps_everything(open: &Opener) -> Result<()> {
    let events = sequence()?;
    let (first, rest) = events.split_at(9);
    {
        let store = open().await?;
        apply(store.as_ref(), first).await?;
    }
    {
        let store = open().await?;
        apply(store.as_ref(), rest).await?;
    }
    let store = open().await?;
    let (_, expected) = reference().await?;
    ensure!(
        snapshot(store.as_ref(), &sequence_keys()).await? == expected,
        "records differ after reopening"
    );
    Ok(())
}

// --- queries (search, pages, show) ----------------------------------------------

/// The endpoints the query checks search: MACs, IPv4 and IPv6 addresses in
/// two fabrics and several scopes, with neighbours that share a textual
/// prefix, and a fabric name holding quotes.
fn query_keys() -> Vec<EndpointKey> {
    let k = |fabric: &str, vnid: u32, addr: &str| EndpointKey {
        fabric: fabric.into(),
        vnid,
        addr: addr.into(),
    };
    vec![
        k(FABRIC, BD, MAC),
        k(FABRIC, BD, MAC2),
        k(FABRIC, BD + 1, MAC),
        k(FABRIC, BD, "00:50:57:00:00:01"),
        k(FABRIC, VRF, IP4),
        k(FABRIC, VRF, "10.1.1.10"),
        k(FABRIC, VRF, "10.1.10.1"),
        k(FABRIC, VRF, "10.11.0.1"),
        k(FABRIC, VRF, IP6),
        k(FABRIC, VRF, "2001:db8:2::1"),
        k("fab2", VRF, IP4),
        k("fab2", VRF, "aa:bb::1"),
        k("fab2", BD, "AA:BB:CC:00:00:01"),
        k("f\"a'b%_", VRF, "10.1.1.200"),
    ]
}

async fn put_query_keys(store: &dyn HistoryStore) -> Result<Vec<EndpointKey>> {
    let keys = query_keys();
    for (i, k) in keys.iter().enumerate() {
        let n = u32::try_from(i)? + 1;
        store
            .put_endpoint(endpoint_record(&k.fabric, k.vnid, &k.addr, n))
            .await?;
    }
    Ok(keys)
}

/// The keys of one search page (every page of it, at `limit` a page).
async fn search_all(
    store: &dyn HistoryStore,
    text: &str,
    fabric: Option<&str>,
    vnid: Option<u32>,
    limit: usize,
) -> Result<Vec<String>> {
    let mut search = Search {
        text: Some(text.into()),
        fabric: fabric.map(Into::into),
        vnid,
        cursor: None,
        limit,
    };
    let mut found = Vec::new();
    for _ in 0..1000 {
        let page = query::search(store, &search)
            .await
            .with_context(|| format!("search {text:?}"))?;
        ensure!(page.items.len() <= limit, "a page longer than its limit");
        found.extend(
            page.items
                .iter()
                .map(|r| format!("{}/{}/{}", r.fabric, r.vnid, r.addr)),
        );
        match page.next_cursor {
            Some(next) => search.cursor = Some(next),
            None => return Ok(found),
        }
    }
    Err(anyhow!("search {text:?} did not end"))
}

/// A search finds complete addresses in any notation, textual prefixes of
/// MACs (in any notation), IPv4 and IPv6 addresses, within a fabric and a
/// scope when asked, in page order (address, fabric, vnid).
async fn searches_match_addresses_in_any_notation(store: &dyn HistoryStore) -> Result<()> {
    put_query_keys(store).await?;
    let f1 = |vnid: u32, addr: &str| format!("{FABRIC}/{vnid}/{addr}");
    // (query, fabric, scope, expected keys)
    type Case<'a> = (&'a str, Option<&'a str>, Option<u32>, Vec<String>);
    let cases: Vec<Case<'_>> = vec![
        // A complete MAC in four notations: both scopes it is in.
        (
            "00-50-56-ad-bb-16",
            None,
            None,
            vec![f1(BD, MAC), f1(BD + 1, MAC)],
        ),
        ("0050.56ad.bb16", None, Some(BD), vec![f1(BD, MAC)]),
        (
            "005056adbb16",
            Some(FABRIC),
            Some(BD + 1),
            vec![f1(BD + 1, MAC)],
        ),
        ("00:50:56:AD:BB:16", Some("fab2"), None, vec![]),
        // MAC prefixes.
        (
            "00:50:56",
            None,
            None,
            vec![f1(BD, MAC), f1(BD + 1, MAC), f1(BD, MAC2)],
        ),
        (
            "0050.5",
            None,
            None,
            vec![
                f1(BD, MAC),
                f1(BD + 1, MAC),
                f1(BD, MAC2),
                f1(BD, "00:50:57:00:00:01"),
            ],
        ),
        // A complete IPv4 address is exact; a prefix is textual.
        (
            IP4,
            None,
            None,
            vec![f1(VRF, IP4), format!("fab2/{VRF}/{IP4}")],
        ),
        (
            "10.1.1.",
            None,
            None,
            vec![
                f1(VRF, "10.1.1.10"),
                f1(VRF, IP4),
                format!("fab2/{VRF}/{IP4}"),
                format!("f\"a'b%_/{VRF}/10.1.1.200"),
            ],
        ),
        (
            "10.1.1.0/24",
            Some(FABRIC),
            None,
            vec![f1(VRF, "10.1.1.10"), f1(VRF, IP4)],
        ),
        (
            "10.1",
            Some(FABRIC),
            Some(VRF),
            vec![
                f1(VRF, "10.1.1.10"),
                f1(VRF, IP4),
                f1(VRF, "10.1.10.1"),
                f1(VRF, "10.11.0.1"),
            ],
        ),
        // IPv6: normalised, prefixes with leading zeros dropped.
        ("2001:0DB8:1:0:0:0:0:65", None, None, vec![f1(VRF, IP6)]),
        (
            "2001:0db8:",
            None,
            None,
            vec![f1(VRF, IP6), f1(VRF, "2001:db8:2::1")],
        ),
        // Partial text that may be a MAC or an IPv6 prefix matches both.
        (
            "aa:bb",
            None,
            None,
            vec![
                format!("fab2/{BD}/AA:BB:CC:00:00:01"),
                format!("fab2/{VRF}/aa:bb::1"),
            ],
        ),
        // A quoted, percent-holding fabric name is just a name.
        (
            "",
            Some("f\"a'b%_"),
            None,
            vec![format!("f\"a'b%_/{VRF}/10.1.1.200")],
        ),
        ("", Some("f%"), None, vec![]),
        ("10.9.", None, None, vec![]),
    ];
    for (text, fabric, vnid, expected) in cases {
        for limit in [1, 2, MAX_PAGE] {
            let got = search_all(store, text, fabric, vnid, limit).await?;
            ensure!(
                got == expected,
                "search {text:?} fabric {fabric:?} vnid {vnid:?} limit {limit}: got {got:?}, expected {expected:?}"
            );
        }
    }
    // Everything, and every endpoint of a fabric, in page order.
    let mut all = query_keys();
    all.sort_by(query::page_order);
    let all: Vec<String> = all
        .iter()
        .map(|k| format!("{}/{}/{}", k.fabric, k.vnid, k.addr))
        .collect();
    ensure!(
        search_all(store, "", None, None, 3).await? == all,
        "every endpoint"
    );
    let fab2: Vec<String> = all
        .iter()
        .filter(|k| k.starts_with("fab2/"))
        .cloned()
        .collect();
    ensure!(
        search_all(store, "", Some("fab2"), None, 2).await? == fab2,
        "fab2"
    );
    // Bad input is refused, not matched.
    for bad in ["not-an-address", "10.1.0.0/12"] {
        let refused = query::search(
            store,
            &Search {
                text: Some(bad.into()),
                limit: 10,
                ..Search::default()
            },
        )
        .await;
        ensure!(refused.is_err(), "search {bad:?} was accepted");
    }
    for bad_cursor in ["zz", "7b7d", ""] {
        let refused = query::search(
            store,
            &Search {
                cursor: Some(bad_cursor.into()),
                limit: 10,
                ..Search::default()
            },
        )
        .await;
        ensure!(refused.is_err(), "cursor {bad_cursor:?} was accepted");
    }
    Ok(())
}

/// Paging through many endpoints, whatever the page size, gives each once,
/// in page order; a page ends exactly at the last record (no empty page);
/// records written between pages after the cursor appear, before it do not
/// move the walk.
async fn pages_walk_every_endpoint_once_in_order(store: &dyn HistoryStore) -> Result<()> {
    let mut keys = Vec::new();
    for i in 0..45u32 {
        let k = EndpointKey {
            fabric: if i % 3 == 0 {
                "fab2".into()
            } else {
                FABRIC.into()
            },
            vnid: VRF + i % 2,
            addr: format!("10.2.{}.{}", i / 10, i % 10),
        };
        store
            .put_endpoint(endpoint_record(&k.fabric, k.vnid, &k.addr, 1))
            .await?;
        keys.push(k);
    }
    keys.sort_by(query::page_order);
    let expected: Vec<String> = keys
        .iter()
        .map(|k| format!("{}/{}/{}", k.fabric, k.vnid, k.addr))
        .collect();
    for limit in [1, 4, 9, 15, 44, 45, 46] {
        let got = search_all(store, "10.2.", None, None, limit).await?;
        ensure!(got == expected, "limit {limit}: {got:?}");
    }
    // Directly on the store: after the last key there is nothing.
    let last = keys.last().ok_or_else(|| anyhow!("no keys"))?;
    let filter = EndpointFilter {
        fabric: None,
        vnid: None,
        addr: AddrMatch::Prefix("10.2.".into()),
    };
    ensure!(
        store
            .find_endpoints(&filter, Some(last), 10)
            .await?
            .is_empty()
    );
    let first = store.find_endpoints(&filter, None, 1).await?;
    ensure!(first.len() == 1 && first[0].key() == keys[0], "{first:?}");
    // A write between pages: a key after the cursor shows up on a later page.
    let mut search = Search {
        text: Some("10.2.".into()),
        limit: 10,
        ..Search::default()
    };
    let page = query::search(store, &search).await?;
    search.cursor = page.next_cursor;
    store
        .put_endpoint(endpoint_record(FABRIC, VRF, "10.2.9.9", 1))
        .await?;
    let mut rest = Vec::new();
    loop {
        let page = query::search(store, &search).await?;
        rest.extend(page.items.iter().map(|r| r.addr.clone()));
        match page.next_cursor {
            Some(next) => search.cursor = Some(next),
            None => break,
        }
    }
    ensure!(
        rest.len() == 36 && rest.last().map(|a| a.as_str()) == Some("10.2.9.9"),
        "{rest:?}"
    );
    Ok(())
}

/// `locate` finds an address (any notation) in every scope it is in, or in
/// the one asked; `detail` gives the record with every node's history and
/// nothing of a neighbour; unknown addresses have nothing.
async fn locate_and_detail_give_one_endpoint_whole(store: &dyn HistoryStore) -> Result<()> {
    put_query_keys(store).await?;
    let nodes = [101, 102, 103];
    for (i, node) in nodes.iter().enumerate() {
        let n = u32::try_from(i)? + 1;
        store
            .put_history(history_record(FABRIC, BD, MAC, *node, n))
            .await?;
    }
    store
        .put_history(history_record(FABRIC, BD + 1, MAC, 104, 1))
        .await?;
    store
        .put_history(history_record(FABRIC, BD, MAC2, 101, 1))
        .await?;
    let both = query::locate(store, "0050.56ad.bb16", None, None).await?;
    ensure!(both == vec![key(BD, MAC), key(BD + 1, MAC)], "{both:?}");
    let one = query::locate(store, "00-50-56-AD-BB-16", Some(FABRIC), Some(BD)).await?;
    ensure!(one == vec![key(BD, MAC)], "{one:?}");
    ensure!(
        query::locate(store, MAC, Some("fab2"), None)
            .await?
            .is_empty()
    );
    ensure!(
        query::locate(store, "00:50:56:AD:BB:FF", None, None)
            .await?
            .is_empty()
    );
    ensure!(
        query::locate(store, "10.1.1", None, None).await.is_err(),
        "a prefix is not an address"
    );
    let detail = query::detail(store, &key(BD, MAC))
        .await?
        .ok_or_else(|| anyhow!("no detail"))?;
    ensure!(
        detail.record == endpoint_record(FABRIC, BD, MAC, 1),
        "record"
    );
    ensure!(
        detail.histories.keys().copied().collect::<Vec<_>>() == nodes,
        "{:?}",
        detail.histories.keys()
    );
    ensure!(detail.histories[&102] == history_record(FABRIC, BD, MAC, 102, 2));
    ensure!(query::detail(store, &key(BD, UNKNOWN_MAC)).await?.is_none());
    Ok(())
}

// --- write-behind (a worker's records in memory, written in batches) ------------

/// The sequence through a write-behind cache over this backend: the same
/// outcomes as the reference, nothing in the store until `flush`, and after
/// it (read through a fresh opening) exactly the reference records.
async fn write_behind_is_durable_after_flush_and_not_before(open: &Opener) -> Result<()> {
    let (expected_outcomes, expected) = reference().await?;
    let (settings, fabric) = (Settings::default(), fabric());
    let mut cache = WriteBehind::new(open().await?, WriteBehindConfig::default())?;
    let mut outcomes = Vec::new();
    for ev in sequence()? {
        outcomes.push(cache.process(&settings, &fabric, &ev).await?);
    }
    ensure!(
        outcomes == expected_outcomes,
        "outcomes differ: {outcomes:?}"
    );
    // 18 events, fewer than any write trigger: all still in memory only.
    ensure!(cache.has_unwritten(), "nothing waits for a flush");
    let before = snapshot(open().await?.as_ref(), &sequence_keys()).await?;
    ensure!(
        before.iter().all(|(_, h, e)| h.is_empty() && e.is_none()),
        "records reached the store before flush: {before:?}"
    );
    cache.flush().await?;
    ensure!(!cache.has_unwritten(), "unwritten after flush");
    let after = snapshot(open().await?.as_ref(), &sequence_keys()).await?;
    ensure!(
        after == expected,
        "flushed records differ from the reference"
    );
    // What the cache holds is what the store has.
    for (k, h, e) in &after {
        if let Some(state) = cache.cached(k) {
            ensure!(
                &state.histories == h && &state.endpoint == e,
                "{k}: cache and store differ"
            );
        }
    }
    Ok(())
}

/// A cache bound of one record: every event evicts (dirty endpoints moved
/// into a background batch) and the next event of an endpoint reads it
/// back. Outcomes and records are those of a cache that never evicts.
async fn write_behind_eviction_then_reload_equals_never_evicted(open: &Opener) -> Result<()> {
    let (expected_outcomes, expected) = reference().await?;
    let (settings, fabric) = (Settings::default(), fabric());
    let config = WriteBehindConfig {
        max_records: 1,
        ..WriteBehindConfig::default()
    };
    let mut cache = WriteBehind::new(open().await?, config)?;
    let mut outcomes = Vec::new();
    for ev in sequence()? {
        outcomes.push(cache.process(&settings, &fabric, &ev).await?);
    }
    cache.flush().await?;
    let stats = cache.stats();
    ensure!(
        stats.evictions > 0 && stats.loads > sequence_keys().len() as u64,
        "nothing was evicted and read back: {stats:?}"
    );
    ensure!(
        outcomes == expected_outcomes,
        "outcomes differ after evictions: {outcomes:?}"
    );
    ensure!(
        snapshot(open().await?.as_ref(), &sequence_keys()).await? == expected,
        "records differ after evictions"
    );
    Ok(())
}

/// The sequence for 12 fabrics at once, interleaved event by event, through
/// a dispatcher of 2 write-behind workers (single events and batches of
/// several sizes, a small memory bound so endpoints are evicted and read
/// back, a flush barrier in the middle): after the final flush every
/// fabric's records equal the reference, so each endpoint's events were
/// taken in order.
async fn write_behind_workers_keep_order_per_endpoint(open: &Opener) -> Result<()> {
    let fabrics: Vec<String> = (1..=12).map(|i| format!("fab{i}")).collect();
    let mut per_fabric = Vec::new();
    for name in &fabrics {
        let events: Vec<EpmEvent> = sequence()?
            .into_iter()
            .map(|mut ev| {
                ev.fabric = name.clone();
                ev
            })
            .collect();
        per_fabric.push(events);
    }
    let mut interleaved = Vec::new();
    for i in 0..per_fabric[0].len() {
        for events in &per_fabric {
            interleaved.push(events[i].clone());
        }
    }
    // The reference: every event in order, on the in-memory store.
    let memory = MemoryStore::new();
    apply(&memory, &interleaved).await?;

    let store = open().await?;
    let model = Arc::new(fabric());
    let dispatcher = Dispatcher::start(
        DispatchConfig {
            workers: 2,
            queue_capacity: 4,
        },
        |_| {
            let model = model.clone();
            let config = WriteBehindConfig {
                max_records: 16,
                flush_events: 7,
                ..WriteBehindConfig::default()
            };
            let cache = WriteBehind::new(store.clone(), config).expect("valid config");
            HistoryWorker::new(cache, Settings::default(), move |_: &str| model.clone())
        },
    )?;
    let mut rest = interleaved.as_slice();
    let mut size = 1;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(size.min(rest.len()));
        if now.len() == 1 {
            dispatcher.dispatch(&now[0].key(), now[0].clone()).await?;
        } else {
            dispatcher.dispatch_batch(now.to_vec()).await?;
        }
        rest = later;
        size = size % 9 + 1;
        if rest.len() == interleaved.len() / 2 {
            dispatcher.flush().await?;
        }
    }
    dispatcher.flush().await?;
    let workers = dispatcher.shutdown().await?;
    ensure!(
        workers.iter().map(|w| w.handled()).sum::<u64>() == interleaved.len() as u64,
        "not every event was handled"
    );
    ensure!(
        workers.iter().map(|w| w.failed()).sum::<u64>() == 0,
        "events failed"
    );
    let keys: Vec<EndpointKey> = fabrics
        .iter()
        .flat_map(|name| {
            sequence_keys().into_iter().map(|mut k| {
                k.fabric = name.clone();
                k
            })
        })
        .collect();
    let got = snapshot(open().await?.as_ref(), &keys).await?;
    let want = snapshot(&memory, &keys).await?;
    for ((k, h, e), (_, want_h, want_e)) in got.iter().zip(&want) {
        ensure!(
            h == want_h,
            "{k}: histories differ from in-order processing"
        );
        ensure!(
            e == want_e,
            "{k}: endpoint differs from in-order processing"
        );
    }
    Ok(())
}
