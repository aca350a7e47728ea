//! Scenario tests written from EPT's rules (`shared/notes/ept-rules.md`,
//! §3-§5, §10). Every event goes through the APIC parser and
//! `process_event` on the in-memory store, as the subscriber will feed it.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use vigil_endpoints::apic::EpmParser;
use vigil_endpoints::fabric::{Fabric, Tunnel, vpc_node_id};
use vigil_endpoints::history::{HistoryOutcome, IgnoreReason};
use vigil_endpoints::local::LocalChange;
use vigil_endpoints::model::{
    EndpointKey, EndpointRecord, EndpointType, EpmClass, HistoryRecord, LearnType, Settings, Status,
};
use vigil_endpoints::store::{EventOutcome, HistoryStore, MemoryStore, process_event};

const FABRIC: &str = "fab1";
const VRF: u32 = 2949120;
const BD: u32 = 15990734;
const EXT_BD: u32 = 15007713;
const OVERLAY: u32 = 16777199;
const PCTAG: i64 = 32771;
const MAC: &str = "00:50:56:AD:BB:16";
const IP4: &str = "10.1.1.101";
const IP6: &str = "2001:db8:1::65";
const VPC_101_102: u32 = (101 << 16) + 102;

struct H {
    settings: Settings,
    fabric: Fabric,
    parser: EpmParser,
    store: MemoryStore,
}

fn fabric() -> Fabric {
    let mut f = Fabric::new(FABRIC, OVERLAY);
    f.add_node(101, 1, "leaf");
    f.add_node(102, 1, "leaf");
    f.add_node(103, 2, "leaf");
    f.add_node(104, 2, "leaf");
    f.add_vpc_pair(101, 102);
    // vpc 5 on po1 (101) and po2 (102), a plain pc po7 on 103.
    f.add_port_channel(101, "po1", "vpc-policy-A", 5);
    f.add_port_channel(102, "po2", "vpc-policy-A", 5);
    f.add_port_channel(103, "po7", "pc-policy-B", 0);
    // 103 reaches the 101/102 vpc anycast TEP over tunnel1, 101 over tunnel2.
    f.add_tunnel(Tunnel {
        node: 103,
        intf: "tunnel1".into(),
        dst: "10.0.72.64".into(),
        remote: VPC_101_102,
        encap: "ivxlan".into(),
        flags: "physical".into(),
    });
    f.add_tunnel(Tunnel {
        node: 103,
        intf: "tunnel2".into(),
        dst: "10.0.72.65".into(),
        remote: 101,
        encap: "ivxlan".into(),
        flags: "physical,proxy".into(),
    });
    // A virtual leaf (AVS/AVE) reached over vxlan tunnels from both vpc peers.
    for n in [101, 102] {
        f.add_tunnel(Tunnel {
            node: n,
            intf: "tunnel9".into(),
            dst: "10.9.9.9".into(),
            remote: 0,
            encap: "vxlan".into(),
            flags: "virtual".into(),
        });
    }
    f.add_epg(VRF, PCTAG, "uni/tn-t/ap-a/epg-web", BD);
    f.add_vnid(VRF, "uni/tn-t/ctx-v1", false, "");
    f.add_vnid(BD, "uni/tn-t/BD-bd1", false, "");
    f.add_vnid(EXT_BD, "uni/tn-t/out-l3/ext-bd", true, "vlan-2000");
    f
}

impl H {
    fn new() -> Self {
        Self::with_settings(Settings::default())
    }

    fn with_settings(settings: Settings) -> Self {
        H {
            settings,
            fabric: fabric(),
            parser: EpmParser::new(FABRIC, OVERLAY),
            store: MemoryStore::new(),
        }
    }

    async fn send(&self, class: &str, attrs: Value, ts: f64) -> EventOutcome {
        let payload = json!({ "ts": ts, "imdata": [{ class: { "attributes": attrs } }] });
        let parsed = self
            .parser
            .parse_payload(&payload.to_string(), 0.0)
            .unwrap();
        let obj = parsed.objects.into_iter().next().unwrap().unwrap();
        let vigil_endpoints::apic::ApicObject::Endpoint(ev) = obj else {
            panic!("not an endpoint object");
        };
        process_event(&self.settings, &self.fabric, &self.store, &ev)
            .await
            .unwrap()
    }

    async fn history(&self, node: u32, vnid: u32, addr: &str) -> Option<HistoryRecord> {
        self.store
            .histories(&key(vnid, addr))
            .await
            .unwrap()
            .remove(&node)
    }

    async fn endpoint(&self, vnid: u32, addr: &str) -> Option<EndpointRecord> {
        self.store.endpoint(&key(vnid, addr)).await.unwrap()
    }
}

fn key(vnid: u32, addr: &str) -> EndpointKey {
    EndpointKey {
        fabric: FABRIC.into(),
        vnid,
        addr: addr.into(),
    }
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
    format!("topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/db-ep/ip-[{ip}]")
}

fn rs_dn(node: u32, mac: &str, ip: &str) -> String {
    format!(
        "topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/mac-{mac}/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/ip-[{ip}]]"
    )
}

fn ep(dn: String, status: &str, flags: &str, if_id: &str, pctag: i64) -> Value {
    json!({"dn": dn, "status": status, "flags": flags, "ifId": if_id, "pcTag": pctag.to_string()})
}

fn mac_local(
    node: u32,
    if_id: &str,
    ts: f64,
    h: &H,
) -> impl std::future::Future<Output = EventOutcome> {
    h.send(
        "epmMacEp",
        ep(mac_dn(node, MAC), "created", "local", if_id, PCTAG),
        ts,
    )
}

fn pushed(analysis: bool) -> HistoryOutcome {
    HistoryOutcome::Pushed {
        new_record: false,
        analysis,
    }
}

fn created(analysis: bool) -> HistoryOutcome {
    HistoryOutcome::Pushed {
        new_record: true,
        analysis,
    }
}

// ---------------------------------------------------------------- MAC

#[tokio::test]
async fn mac_first_local_learn() {
    let h = H::new();
    let out = mac_local(101, "eth1/1", 10.0, &h).await;
    // W:652-675: a new record; a MAC learn needs analysis.
    assert_eq!(out.history, created(true));
    let local = out.local.unwrap();
    // W:944-953: first complete local → first_learn, events = [it], count 1.
    assert_eq!(local.change, LocalChange::FirstLearn);
    assert!(local.record_created && local.analyze_move);
    assert!(out.analyze_move());

    let hist = h.history(101, BD, MAC).await.unwrap();
    assert_eq!(hist.count, 1);
    let e = &hist.events[0];
    assert_eq!(e.classname, EpmClass::MacEp);
    assert_eq!(e.intf_id, "eth1/1");
    assert_eq!(e.encap, "vlan-101");
    // W:624: epg name from (vrf, pcTag); W:630: vnid name from the BD vnid.
    assert_eq!(e.epg_name, "uni/tn-t/ap-a/epg-web");
    assert_eq!(e.vnid_name, "uni/tn-t/BD-bd1");
    assert_eq!(e.remote, 0);

    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!(rec.endpoint_type, EndpointType::Mac);
    assert_eq!(rec.learn_type, LearnType::Epg);
    assert_eq!(rec.count, 1);
    assert_eq!(rec.events.len(), 1);
    assert_eq!(rec.first_learn, rec.events[0]);
    assert_eq!(rec.events[0].node, 101);
    // W:932: pod of the node.
    assert_eq!(rec.events[0].pod, 1);
    assert_eq!(rec.events[0].status, Status::Created);
}

#[tokio::test]
async fn older_event_of_the_same_class_is_ignored() {
    let h = H::new();
    mac_local(101, "eth1/1", 20.0, &h).await;
    // W:690-693: older ts on the same class is ignored.
    let out = mac_local(101, "eth1/9", 19.0, &h).await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::OlderThanNewest)
    );
    let hist = h.history(101, BD, MAC).await.unwrap();
    assert_eq!(hist.count, 1);
    assert_eq!(hist.events[0].intf_id, "eth1/1");
    // An equal ts is not older: it is compared and pushed.
    let out = mac_local(101, "eth1/9", 20.0, &h).await;
    assert_eq!(out.history, pushed(true));
}

#[tokio::test]
async fn created_identical_is_not_pushed() {
    let h = H::new();
    mac_local(101, "eth1/1", 10.0, &h).await;
    // W:745-751: created is pushed only if remote/pctag/flags/encap/intf_id differ.
    let out = mac_local(101, "eth1/1", 11.0, &h).await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::Unchanged)
    );
    assert!(!out.analysis_required());
    // Flags in another order are the same flags (stored sorted).
    h.send(
        "epmMacEp",
        ep(mac_dn(101, MAC), "", "vpc-attached,local", "eth1/1", PCTAG),
        12.0,
    )
    .await;
    let out = h
        .send(
            "epmMacEp",
            ep(mac_dn(101, MAC), "", "local,vpc-attached", "eth1/1", PCTAG),
            13.0,
        )
        .await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::Unchanged)
    );
    assert_eq!(h.history(101, BD, MAC).await.unwrap().count, 2);
}

#[tokio::test]
async fn delete_for_unknown_endpoint_is_ignored() {
    let h = H::new();
    // W:652-654: no record on the node → ignored; W:873-875: no endpoint → no analysis.
    let out = h
        .send("epmMacEp", ep(mac_dn(101, MAC), "deleted", "", "", 0), 5.0)
        .await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::UnknownOnNode)
    );
    assert_eq!(out.local, None);
    let out = h
        .send(
            "epmMacEp",
            ep(mac_dn(101, MAC), "modified", "local", "eth1/1", 0),
            6.0,
        )
        .await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::UnknownOnNode)
    );
    assert_eq!(out.local, None);
    assert_eq!(h.store.history_count(), 0);
    assert_eq!(h.store.endpoint_count(), 0);
}

#[tokio::test]
async fn delete_is_pushed_once_then_ignored() {
    let h = H::new();
    mac_local(101, "eth1/1", 10.0, &h).await;
    // W:752-756: a delete is always pushed, keeping vnid_name; the rest is empty.
    let out = h
        .send("epmMacEp", ep(mac_dn(101, MAC), "deleted", "", "", 0), 20.0)
        .await;
    assert_eq!(out.history, pushed(true));
    let hist = h.history(101, BD, MAC).await.unwrap();
    let d = &hist.events[0];
    assert_eq!(d.status, Status::Deleted);
    assert_eq!(d.vnid_name, "uni/tn-t/BD-bd1");
    assert_eq!((d.intf_id.as_str(), d.pctag, d.flags.len()), ("", 0, 0));
    // W:897-917: no local anywhere → endpoint delete with node 0, names kept.
    let local = out.local.unwrap();
    assert_eq!(local.change, LocalChange::PushedDelete);
    assert!(!local.analyze_move);
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!(rec.count, 2);
    assert_eq!(rec.events[0].node, 0);
    assert_eq!(rec.events[0].status, Status::Deleted);
    assert_eq!(rec.events[0].ts, 20.0);
    assert_eq!(rec.events[0].epg_name, "uni/tn-t/ap-a/epg-web");
    assert_eq!(rec.events[0].vnid_name, "uni/tn-t/BD-bd1");
    // W:695-697: a delete or modify after a delete is ignored.
    let out = h
        .send("epmMacEp", ep(mac_dn(101, MAC), "deleted", "", "", 0), 21.0)
        .await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::AfterDelete)
    );
    let out = h
        .send(
            "epmMacEp",
            ep(mac_dn(101, MAC), "modified", "local", "eth1/2", 0),
            22.0,
        )
        .await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::AfterDelete)
    );
    // W:897-917: the endpoint already shows node 0: no second delete.
    assert_eq!(out.local.unwrap().change, LocalChange::Unchanged);
    assert_eq!(h.endpoint(BD, MAC).await.unwrap().count, 2);
    assert_eq!(h.history(101, BD, MAC).await.unwrap().count, 2);
}

#[tokio::test]
async fn modified_merges_and_changes_nothing_unless_a_field_differs() {
    let h = H::new();
    mac_local(101, "eth1/1", 10.0, &h).await;
    // W:757-777: zero/empty fields inherit → nothing differs → not pushed.
    let out = h
        .send(
            "epmMacEp",
            json!({"dn": mac_dn(101, MAC), "status": "modified"}),
            11.0,
        )
        .await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::Unchanged)
    );
    // Only the pcTag changes: pushed, the other fields inherited.
    let out = h
        .send(
            "epmMacEp",
            json!({"dn": mac_dn(101, MAC), "status": "modified", "pcTag": "49153"}),
            12.0,
        )
        .await;
    assert_eq!(out.history, pushed(true));
    let hist = h.history(101, BD, MAC).await.unwrap();
    let e = &hist.events[0];
    assert_eq!(e.status, Status::Modified);
    assert_eq!(e.pctag, 49153);
    assert_eq!(e.flags.to_vec(), ["local"]);
    assert_eq!(e.intf_id, "eth1/1");
    assert_eq!(e.vnid_name, "uni/tn-t/BD-bd1");
    // §5: pctag changed → the endpoint's location event changes too.
    let local = out.local.unwrap();
    assert_eq!(local.change, LocalChange::Pushed);
    assert_eq!(h.endpoint(BD, MAC).await.unwrap().events[0].pctag, 49153);
}

#[tokio::test]
async fn move_between_leaves_latest_local_wins() {
    let h = H::new();
    mac_local(101, "eth1/1", 10.0, &h).await;
    // W:883-894: 101 still claims local (ts 10), 103 is newer (ts 20) → 103.
    let out = mac_local(103, "eth1/2", 20.0, &h).await;
    let local = out.local.unwrap();
    assert_eq!(local.change, LocalChange::Pushed);
    assert!(out.analyze_move());
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!(rec.count, 2);
    assert_eq!(rec.events[0].node, 103);
    assert_eq!(rec.events[0].pod, 2);
    assert_eq!(rec.events[1].node, 101);
    assert_eq!(rec.first_learn.node, 101);
    // An XR report from 101 (pointing at 103) does not move it back.
    let out = h
        .send(
            "epmMacEp",
            ep(mac_dn(101, MAC), "created", "", "tunnel2", PCTAG),
            30.0,
        )
        .await;
    assert_eq!(out.local.unwrap().change, LocalChange::Unchanged);
    assert_eq!(h.endpoint(BD, MAC).await.unwrap().count, 2);
}

#[tokio::test]
async fn older_best_local_pushes_a_delete() {
    let h = H::new();
    mac_local(101, "eth1/1", 50.0, &h).await;
    mac_local(103, "eth1/2", 100.0, &h).await;
    // 103 deletes: the best local is now 101 (ts 50) < last event (ts 100).
    // W:957-975: push a delete (node 0), do not reuse the previous local.
    let out = h
        .send(
            "epmMacEp",
            ep(mac_dn(103, MAC), "deleted", "", "", 0),
            120.0,
        )
        .await;
    let local = out.local.unwrap();
    assert_eq!(local.change, LocalChange::PushedDeleteOlderLocal);
    assert!(!local.analyze_move);
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!(rec.events[0].node, 0);
    assert_eq!(rec.events[0].ts, 120.0);
    assert_eq!(rec.count, 3);
}

// ---------------------------------------------------------------- transitory delete

async fn learn_then_delete(h: &H) {
    mac_local(103, "eth1/2", 100.0, h).await;
    h.send(
        "epmMacEp",
        ep(mac_dn(103, MAC), "deleted", "", "", 0),
        110.0,
    )
    .await;
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!((rec.events[0].node, rec.count), (0, 2));
}

#[tokio::test]
async fn transitory_delete_is_overwritten_within_60s() {
    let h = H::new();
    learn_then_delete(&h).await;
    // W:991-999: last event is a delete and ts_delta = 150 - 110 <= 60 → overwrite.
    let out = mac_local(104, "eth1/3", 150.0, &h).await;
    let local = out.local.unwrap();
    assert_eq!(local.change, LocalChange::OverwroteDelete);
    assert!(local.analyze_move);
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!(rec.events.len(), 2);
    assert_eq!(rec.count, 2, "an overwrite is not a push");
    assert_eq!(rec.events[0].node, 104);
    assert_eq!(rec.events[1].node, 103);
}

#[tokio::test]
async fn transitory_delete_boundary_is_inclusive() {
    let h = H::new();
    learn_then_delete(&h).await;
    // C:83 TRANSITORY_DELETE = 60.0, compared with <=.
    let out = mac_local(104, "eth1/3", 170.0, &h).await;
    assert_eq!(out.local.unwrap().change, LocalChange::OverwroteDelete);
}

#[tokio::test]
async fn delete_is_kept_after_60s() {
    let h = H::new();
    learn_then_delete(&h).await;
    let out = mac_local(104, "eth1/3", 170.5, &h).await;
    assert_eq!(out.local.unwrap().change, LocalChange::Pushed);
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!(rec.count, 3);
    assert_eq!(
        rec.events.iter().map(|e| e.node).collect::<Vec<_>>(),
        vec![104, 0, 103]
    );
}

// ---------------------------------------------------------------- vpc and virtual leaf

#[tokio::test]
async fn vpc_peers_on_the_same_vpc_are_one_pseudo_node() {
    let h = H::new();
    let vpc = vpc_node_id(101, 102).unwrap();
    assert_eq!(vpc, 6619238); // §10
    let out = h
        .send(
            "epmMacEp",
            ep(
                mac_dn(101, MAC),
                "created",
                "local,vpc-attached",
                "po1",
                PCTAG,
            ),
            10.0,
        )
        .await;
    assert_eq!(out.local.unwrap().change, LocalChange::FirstLearn);
    // W:585-597: local on a vpc's pc → intf_id vpc-<id>, intf_name the pc policy.
    let hist = h.history(101, BD, MAC).await.unwrap();
    assert_eq!(hist.events[0].intf_id, "vpc-5");
    assert_eq!(hist.events[0].intf_name, "vpc-policy-A");
    let rec = h.endpoint(BD, MAC).await.unwrap();
    // W:935-940: vpc-attached → the pseudo-node; W:932: pod of the real node.
    assert_eq!(rec.events[0].node, vpc);
    assert_eq!(rec.events[0].pod, 1);
    assert_eq!(rec.events[0].intf_id, "vpc-5");
    // The peer learns it on its own pc of the same vpc, later: same location.
    let out = h
        .send(
            "epmMacEp",
            ep(
                mac_dn(102, MAC),
                "created",
                "local,vpc-attached",
                "po2",
                PCTAG,
            ),
            11.0,
        )
        .await;
    assert_eq!(out.history, created(true));
    assert_eq!(out.local.unwrap().change, LocalChange::Unchanged);
    assert!(!out.analyze_move());
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!(rec.count, 1);
}

#[tokio::test]
async fn vpc_attached_without_a_peer_leaves_the_endpoint_unchanged() {
    let h = H::new();
    // 103 has no vpc peer: W:935-940 returns with the endpoint unchanged.
    let out = h
        .send(
            "epmMacEp",
            ep(
                mac_dn(103, MAC),
                "created",
                "local,vpc-attached",
                "po7",
                PCTAG,
            ),
            10.0,
        )
        .await;
    let local = out.local.unwrap();
    assert_eq!(local.change, LocalChange::NoVpcPeer);
    assert!(local.record_created);
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert!(rec.events.is_empty());
    assert_eq!(rec.count, 0);
    // A plain pc: the name is the policy's, the id stays po7 (no vpc id).
    let hist = h.history(103, BD, MAC).await.unwrap();
    assert_eq!(hist.events[0].intf_id, "po7");
    assert_eq!(hist.events[0].intf_name, "pc-policy-B");
}

#[tokio::test]
async fn virtual_leaf_behind_both_peers() {
    let h = H::new();
    // W:599-610: local on a vxlan tunnel → intf vl-<dst>, tunnel flags recorded.
    h.send(
        "epmMacEp",
        ep(
            mac_dn(101, MAC),
            "created",
            "local,vpc-attached",
            "tunnel9",
            PCTAG,
        ),
        10.0,
    )
    .await;
    let hist = h.history(101, BD, MAC).await.unwrap();
    assert_eq!(hist.events[0].intf_id, "vl-10.9.9.9");
    assert_eq!(hist.events[0].intf_name, "vl-10.9.9.9");
    assert_eq!(hist.events[0].tunnel_flags, "virtual");
    let out = h
        .send(
            "epmMacEp",
            ep(
                mac_dn(102, MAC),
                "created",
                "local,vpc-attached",
                "tunnel9",
                PCTAG,
            ),
            12.0,
        )
        .await;
    // §6: same pseudo-node, same vl-<dst> → no location change.
    assert_eq!(out.local.unwrap().change, LocalChange::Unchanged);
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!(rec.events[0].node, VPC_101_102);
    assert_eq!(rec.events[0].intf_id, "vl-10.9.9.9");
    assert_eq!(rec.count, 1);
}

#[tokio::test]
async fn remote_node_resolution() {
    let h = H::new();
    // W:613-621: XR over a tunnel → tunnel.remote, which may be a vpc pseudo-node.
    h.send(
        "epmMacEp",
        ep(mac_dn(103, MAC), "created", "", "tunnel1", PCTAG),
        10.0,
    )
    .await;
    let e = h.history(103, BD, MAC).await.unwrap().events[0].clone();
    assert_eq!(e.remote, VPC_101_102);
    assert_eq!(e.tunnel_flags, "physical");
    // peer-attached → the vpc peer.
    h.send(
        "epmMacEp",
        ep(
            mac_dn(102, MAC),
            "created",
            "peer-attached",
            "tunnel5",
            PCTAG,
        ),
        10.0,
    )
    .await;
    assert_eq!(h.history(102, BD, MAC).await.unwrap().events[0].remote, 101);
    // cached → not mapped, even over a known tunnel.
    h.send(
        "epmMacEp",
        ep(mac_dn(103, MAC), "created", "cached", "tunnel2", PCTAG),
        11.0,
    )
    .await;
    let e = h.history(103, BD, MAC).await.unwrap().events[0].clone();
    assert_eq!(e.remote, 0);
    assert_eq!(e.tunnel_flags, "physical,proxy");
    // A plain XR over tunnel2 → remote 101; a change of remote is pushed (W:745-751).
    let out = h
        .send(
            "epmMacEp",
            ep(mac_dn(103, MAC), "created", "", "tunnel2", PCTAG),
            12.0,
        )
        .await;
    assert_eq!(out.history, pushed(true));
    assert_eq!(h.history(103, BD, MAC).await.unwrap().events[0].remote, 101);
    // No local anywhere: the endpoint exists with no location.
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert!(rec.events.is_empty());
}

// ---------------------------------------------------------------- IP and rewrite merging

#[tokio::test]
async fn ipv4_rewrite_info_after_the_ip_learn() {
    let h = H::new();
    let out = h
        .send(
            "epmIpEp",
            ep(ip_dn(101, IP4), "created", "local", "eth1/1", PCTAG),
            10.0,
        )
        .await;
    // W:670-675: a new local epmIpEp has no rewrite info → no analysis.
    assert_eq!(out.history, created(false));
    // W:883-894: an IP is complete local only with rw_bd > 0 and rw_mac set.
    let local = out.local.unwrap();
    assert!(local.record_created);
    assert_eq!(local.change, LocalChange::Unchanged);
    let rec = h.endpoint(VRF, IP4).await.unwrap();
    assert_eq!(rec.endpoint_type, EndpointType::Ipv4);
    assert!(rec.events.is_empty());
    // The scope of an IP is the VRF vnid (M:627).
    assert_eq!(rec.first_learn.vnid_name, "uni/tn-t/ctx-v1");

    // W:700-732: the rs object brings rw_mac/rw_bd; the rest is the previous event's.
    let out = h
        .send(
            "epmRsMacEpToIpEpAtt",
            json!({"dn": rs_dn(101, MAC, IP4)}),
            11.0,
        )
        .await;
    assert_eq!(out.history, pushed(true));
    let hist = h.history(101, VRF, IP4).await.unwrap();
    let e = &hist.events[0];
    assert_eq!(e.classname, EpmClass::RsMacEpToIpEpAtt);
    assert_eq!((e.rw_mac.as_str(), e.rw_bd), (MAC, BD));
    assert_eq!(e.flags.to_vec(), ["local"]);
    assert_eq!(e.intf_id, "eth1/1");
    assert_eq!(e.pctag, PCTAG);
    assert_eq!(e.status, Status::Created);
    assert_eq!(hist.count, 2);
    let local = out.local.unwrap();
    assert_eq!(local.change, LocalChange::FirstLearn);
    let rec = h.endpoint(VRF, IP4).await.unwrap();
    assert_eq!(
        (rec.events[0].rw_mac.as_str(), rec.events[0].rw_bd),
        (MAC, BD)
    );

    // The same rs again: nothing changes.
    let out = h
        .send(
            "epmRsMacEpToIpEpAtt",
            json!({"dn": rs_dn(101, MAC, IP4)}),
            12.0,
        )
        .await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::RewriteUnchanged)
    );

    // W:736-738: a later epmIpEp keeps the rewrite info.
    h.send(
        "epmIpEp",
        ep(ip_dn(101, IP4), "created", "local", "eth1/4", PCTAG),
        13.0,
    )
    .await;
    let e = h.history(101, VRF, IP4).await.unwrap().events[0].clone();
    assert_eq!(
        (e.intf_id.as_str(), e.rw_mac.as_str(), e.rw_bd),
        ("eth1/4", MAC, BD)
    );
    assert_eq!(
        h.endpoint(VRF, IP4).await.unwrap().events[0].intf_id,
        "eth1/4"
    );

    // An rs delete clears the rewrite info, no analysis; no complete local remains.
    let out = h
        .send(
            "epmRsMacEpToIpEpAtt",
            json!({"dn": rs_dn(101, MAC, IP4), "status": "deleted"}),
            14.0,
        )
        .await;
    assert_eq!(out.history, pushed(false));
    let e = h.history(101, VRF, IP4).await.unwrap().events[0].clone();
    assert_eq!((e.rw_mac.as_str(), e.rw_bd), ("", 0));
    assert_eq!(
        e.status,
        Status::Created,
        "status is merged from the previous event"
    );
    assert_eq!(out.local.unwrap().change, LocalChange::PushedDelete);
}

#[tokio::test]
async fn ipv4_rewrite_info_before_the_ip_learn() {
    let h = H::new();
    // W:656-661: a new rs record carries rw_mac = MAC and rw_bd = the DN's bd,
    // W:670-675: and needs no analysis.
    let out = h
        .send(
            "epmRsMacEpToIpEpAtt",
            json!({"dn": rs_dn(101, MAC, IP4)}),
            10.0,
        )
        .await;
    assert_eq!(out.history, created(false));
    let hist = h.history(101, VRF, IP4).await.unwrap();
    assert_eq!(hist.addr, IP4, "rs objects are keyed on the IP (W:497)");
    assert_eq!(
        (hist.events[0].rw_mac.as_str(), hist.events[0].rw_bd),
        (MAC, BD)
    );
    assert!(h.endpoint(VRF, IP4).await.unwrap().events.is_empty());

    // The IP learn inherits the rewrite info (W:736-738) and is now complete.
    let out = h
        .send(
            "epmIpEp",
            ep(ip_dn(101, IP4), "created", "local", "eth1/1", PCTAG),
            11.0,
        )
        .await;
    assert_eq!(out.history, pushed(true));
    assert_eq!(out.local.unwrap().change, LocalChange::FirstLearn);
    let rec = h.endpoint(VRF, IP4).await.unwrap();
    assert_eq!(rec.events[0].node, 101);
    assert_eq!(rec.events[0].rw_mac, MAC);
    assert_eq!(rec.events[0].epg_name, "uni/tn-t/ap-a/epg-web");
}

#[tokio::test]
async fn out_of_order_across_classes_is_still_merged() {
    let h = H::new();
    h.send(
        "epmIpEp",
        ep(ip_dn(101, IP4), "created", "local", "eth1/1", PCTAG),
        10.0,
    )
    .await;
    // W:690-693 compares ts only within one class: an older rs still merges.
    let out = h
        .send(
            "epmRsMacEpToIpEpAtt",
            json!({"dn": rs_dn(101, MAC, IP4)}),
            5.0,
        )
        .await;
    assert_eq!(out.history, pushed(true));
    // And an older epmIpEp after the rs (last class differs) is compared too:
    // same fields → not pushed.
    let out = h
        .send(
            "epmIpEp",
            ep(ip_dn(101, IP4), "created", "local", "eth1/1", PCTAG),
            4.0,
        )
        .await;
    assert_eq!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::Unchanged)
    );
}

#[tokio::test]
async fn local_ip_update_without_rewrite_needs_no_analysis() {
    let h = H::new();
    h.send(
        "epmIpEp",
        ep(ip_dn(101, IP4), "created", "local", "eth1/1", PCTAG),
        10.0,
    )
    .await;
    // W:787-789: a pushed local epmIpEp with rw_bd == 0 → no analysis; the
    // modified event's empty flags inherit "local" (W:757-777).
    let out = h
        .send(
            "epmIpEp",
            json!({"dn": ip_dn(101, IP4), "status": "modified", "ifId": "eth1/7"}),
            11.0,
        )
        .await;
    assert_eq!(out.history, pushed(false));
    assert!(!out.analysis_required());
    // An XR epmIpEp on another node is analysed (W:790-792).
    let out = h
        .send(
            "epmIpEp",
            ep(ip_xr_dn(103, IP4), "created", "", "tunnel1", PCTAG),
            12.0,
        )
        .await;
    assert_eq!(out.history, created(true));
    assert_eq!(
        h.history(103, VRF, IP4).await.unwrap().events[0].remote,
        VPC_101_102
    );
}

#[tokio::test]
async fn ipv6_learn_and_move() {
    let h = H::new();
    h.send(
        "epmIpEp",
        ep(ip_dn(101, IP6), "created", "local", "eth1/1", PCTAG),
        10.0,
    )
    .await;
    h.send(
        "epmRsMacEpToIpEpAtt",
        json!({"dn": rs_dn(101, MAC, IP6)}),
        10.5,
    )
    .await;
    let rec = h.endpoint(VRF, IP6).await.unwrap();
    assert_eq!(rec.endpoint_type, EndpointType::Ipv6);
    assert_eq!(rec.events[0].node, 101);
    // The MAC behind the IP changes on the same node: rw_mac differs → a new location.
    let out = h
        .send(
            "epmRsMacEpToIpEpAtt",
            json!({"dn": rs_dn(101, "00:50:56:AD:BB:17", IP6)}),
            20.0,
        )
        .await;
    assert_eq!(out.history, pushed(true));
    assert_eq!(out.local.unwrap().change, LocalChange::Pushed);
    let rec = h.endpoint(VRF, IP6).await.unwrap();
    assert_eq!(rec.count, 2);
    assert_eq!(rec.events[0].rw_mac, "00:50:56:AD:BB:17");
    assert_eq!(rec.events[1].rw_mac, MAC);
}

// ---------------------------------------------------------------- names and learn type

#[tokio::test]
async fn external_bd_encap_and_learn_types() {
    let h = H::new();
    // W:630-636: an external BD vnid replaces the encap with the BD's encap.
    let dn = format!(
        "topology/pod-1/node-101/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{EXT_BD}]/vlan-[vlan-55]/db-ep/mac-{MAC}"
    );
    h.send("epmMacEp", ep(dn, "created", "local", "eth1/1", 0), 10.0)
        .await;
    let hist = h.history(101, EXT_BD, MAC).await.unwrap();
    assert_eq!(hist.events[0].encap, "vlan-2000");
    assert_eq!(hist.events[0].epg_name, "", "W:624: no epg for pcTag <= 1");
    // F:115-134: an external vnid → external.
    assert_eq!(
        h.endpoint(EXT_BD, MAC).await.unwrap().learn_type,
        LearnType::External
    );

    // F:115-134: loopback flag → loopback.
    h.send(
        "epmIpEp",
        ep(
            ip_dn(102, "10.2.2.2"),
            "created",
            "local,loopback",
            "lo1",
            0,
        ),
        10.0,
    )
    .await;
    assert_eq!(
        h.endpoint(VRF, "10.2.2.2").await.unwrap().learn_type,
        LearnType::Loopback
    );

    // F:115-134: the overlay vnid → overlay.
    let dn = "topology/pod-1/node-101/sys/inst-overlay-1/db-ep/ip-[10.0.0.32]".to_string();
    h.send("epmIpEp", ep(dn, "created", "local", "lo0", 0), 10.0)
        .await;
    assert_eq!(
        h.endpoint(OVERLAY, "10.0.0.32").await.unwrap().learn_type,
        LearnType::Overlay
    );
}

#[tokio::test]
async fn learn_type_moves_from_epg_without_a_local() {
    let h = H::new();
    h.send(
        "epmIpEp",
        ep(ip_xr_dn(103, "10.3.3.3"), "created", "", "tunnel2", PCTAG),
        10.0,
    )
    .await;
    assert_eq!(
        h.endpoint(VRF, "10.3.3.3").await.unwrap().learn_type,
        LearnType::Epg
    );
    // W:902-906: with no local, learn_type moves from epg to non-epg.
    h.send(
        "epmIpEp",
        ep(
            ip_xr_dn(103, "10.3.3.3"),
            "created",
            "psvi",
            "tunnel2",
            PCTAG,
        ),
        11.0,
    )
    .await;
    assert_eq!(
        h.endpoint(VRF, "10.3.3.3").await.unwrap().learn_type,
        LearnType::Psvi
    );
    // ... and not from one non-epg type to another (only epg → non-epg).
    h.send(
        "epmIpEp",
        ep(
            ip_xr_dn(103, "10.3.3.3"),
            "created",
            "loopback",
            "tunnel2",
            PCTAG,
        ),
        11.5,
    )
    .await;
    assert_eq!(
        h.endpoint(VRF, "10.3.3.3").await.unwrap().learn_type,
        LearnType::Psvi
    );
    // ... nor back to epg.
    h.send(
        "epmIpEp",
        ep(ip_xr_dn(103, "10.3.3.3"), "created", "", "tunnel2", PCTAG),
        12.0,
    )
    .await;
    assert_eq!(
        h.endpoint(VRF, "10.3.3.3").await.unwrap().learn_type,
        LearnType::Psvi
    );
}

// ---------------------------------------------------------------- caps and counts

#[tokio::test]
async fn caps_keep_the_newest_and_count_everything() {
    let h = H::new();
    // S:189-205 caps, C:317-327: push 100 events with cap 64 → 64 kept, count 100.
    for i in 0..100 {
        mac_local(101, &format!("eth1/{i}"), 10.0 + f64::from(i), &h).await;
    }
    let hist = h.history(101, BD, MAC).await.unwrap();
    assert_eq!(hist.count, 100);
    assert_eq!(hist.events.len(), 64);
    assert_eq!(hist.events[0].intf_id, "eth1/99");
    assert_eq!(hist.events[63].intf_id, "eth1/36");
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!(rec.count, 100);
    assert_eq!(rec.events.len(), 64);
    assert_eq!(rec.events[0].intf_id, "eth1/99");
    assert_eq!(rec.first_learn.intf_id, "eth1/0");
}

#[tokio::test]
async fn the_two_caps_are_separate() {
    let h = H::with_settings(Settings::new(16, 8).unwrap());
    for i in 0..20 {
        mac_local(101, &format!("eth1/{i}"), 10.0 + f64::from(i), &h).await;
    }
    let hist = h.history(101, BD, MAC).await.unwrap();
    assert_eq!((hist.events.len(), hist.count), (16, 20));
    let rec = h.endpoint(BD, MAC).await.unwrap();
    assert_eq!((rec.events.len(), rec.count), (8, 20));
}

#[tokio::test]
async fn json_field_names_are_epts() {
    let h = H::new();
    mac_local(101, "eth1/1", 10.0, &h).await;
    let v = serde_json::to_value(h.history(101, BD, MAC).await.unwrap()).unwrap();
    for k in ["fabric", "node", "vnid", "addr", "type", "count", "events"] {
        assert!(v.get(k).is_some(), "history lacks {k}");
    }
    assert_eq!(v["type"], "mac");
    let v = serde_json::to_value(h.endpoint(BD, MAC).await.unwrap()).unwrap();
    for k in ["first_learn", "learn_type", "count", "events", "type"] {
        assert!(v.get(k).is_some(), "endpoint lacks {k}");
    }
    let e = &v["events"][0];
    for k in [
        "node",
        "pod",
        "status",
        "ts",
        "pctag",
        "encap",
        "intf_id",
        "intf_name",
        "rw_mac",
        "rw_bd",
        "epg_name",
        "vnid_name",
    ] {
        assert!(e.get(k).is_some(), "endpoint event lacks {k}");
    }
}

#[tokio::test]
async fn equal_ts_locals_resolve_to_the_lowest_node() {
    // W:883-894 (strict `<`): on a tie the first node considered stays; vigil
    // considers nodes in ascending order (crate doc: ties).
    let h = H::new();
    mac_local(104, "eth1/4", 10.0, &h).await;
    let out = mac_local(103, "eth1/3", 10.0, &h).await;
    assert_eq!(out.local.unwrap().change, LocalChange::Pushed);
    assert_eq!(h.endpoint(BD, MAC).await.unwrap().events[0].node, 103);
}

// ---------------------------------------------------------- redelivery

/// vigil, not EPT: an at-least-once bus redelivers what a killed worker had
/// handled but not committed. Replaying a whole mixed sequence (ip learn,
/// rs, ip modify, a move to another port) changes nothing, where EPT's ts
/// rule alone would push the older ip events again (the newest event is of
/// another class).
#[tokio::test]
async fn redelivered_events_change_nothing() {
    let h = H::new();
    let sequence = [
        (
            "epmIpEp",
            ep(ip_dn(101, IP4), "created", "local", "eth1/1", PCTAG),
            10.0,
        ),
        (
            "epmRsMacEpToIpEpAtt",
            json!({"dn": rs_dn(101, MAC, IP4)}),
            11.0,
        ),
        (
            "epmIpEp",
            ep(ip_dn(101, IP4), "modified", "local", "eth1/2", PCTAG),
            12.0,
        ),
        (
            "epmRsMacEpToIpEpAtt",
            json!({"dn": rs_dn(101, MAC, IP4), "status": "deleted"}),
            13.0,
        ),
    ];
    for (class, attrs, ts) in sequence.clone() {
        h.send(class, attrs, ts).await;
    }
    let history = h.history(101, VRF, IP4).await.unwrap();
    let endpoint = h.endpoint(VRF, IP4).await.unwrap();
    assert_eq!(history.count, 4, "{history:?}");
    for (class, attrs, ts) in sequence {
        let out = h.send(class, attrs, ts).await;
        assert_eq!(
            out.history,
            HistoryOutcome::Ignored(IgnoreReason::Redelivered),
            "{class} at {ts}"
        );
    }
    assert_eq!(h.history(101, VRF, IP4).await.unwrap(), history);
    assert_eq!(h.endpoint(VRF, IP4).await.unwrap(), endpoint);
    // A new event with the same ts but other content is not a redelivery.
    let out = h
        .send(
            "epmIpEp",
            ep(ip_dn(101, IP4), "modified", "local", "eth1/7", PCTAG),
            12.0,
        )
        .await;
    assert_ne!(
        out.history,
        HistoryOutcome::Ignored(IgnoreReason::Redelivered)
    );
}
