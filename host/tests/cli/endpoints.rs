//! `vigil endpoints replay` as an operator uses it: a small recorded fabric
//! (three leaves, 101/102 a vpc pair, tunnels, vpc conf, a VRF, BD and EPG)
//! then endpoint notifications, replayed by the real binary; the printed
//! JSON carries EPT's field names and the locations and counts EPT's rules
//! give, and a malformed line is reported with its line number while
//! everything else is processed.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

const VRF: u64 = 2949120;
const BD: u64 = 15990734;
const PCTAG: u64 = 32771;
const MAC: &str = "00:50:56:AA:BB:01";
const IP: &str = "10.1.1.5";
/// The vpc pseudo-node of 101 and 102: (101 << 16) + 102.
const VPC_101_102: u64 = 6619238;
const EPG: &str = "uni/tn-t1/ap-app/epg-web";
const BD_DN: &str = "uni/tn-t1/BD-bd1";
const CTX_DN: &str = "uni/tn-t1/ctx-v1";

fn vigil(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env_remove("VIGIL_SITE")
        .output()
        .expect("running vigil");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn ep_prefix(node: u32) -> String {
    format!("topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-10]/db-ep")
}

fn mac(node: u32, status: &str, flags: &str, if_id: &str) -> Value {
    json!({"epmMacEp": {"attributes": {
        "dn": format!("{}/mac-{MAC}", ep_prefix(node)), "status": status, "flags": flags,
        "ifId": if_id, "pcTag": PCTAG.to_string(), "addr": MAC}}})
}

fn note(ts: f64, objects: Vec<Value>) -> String {
    json!({"ts": ts, "subscriptionId": ["72057611217780737"], "imdata": objects}).to_string()
}

fn query(objects: Vec<Value>) -> String {
    json!({"totalCount": objects.len().to_string(), "imdata": objects}).to_string()
}

/// The recording; line 9 is malformed.
fn recording() -> String {
    let node = |id: u32| {
        json!({"fabricNode": {"attributes": {
            "dn": format!("topology/pod-1/node-{id}"), "id": id.to_string(), "role": "leaf",
            "address": format!("10.0.0.{id}"), "name": format!("leaf{id}"), "fabricSt": "active"}}})
    };
    let tunnel = |node: u32, id: &str, dest: &str| {
        json!({"tunnelIf": {"attributes": {
            "dn": format!("topology/pod-1/node-{node}/sys/tunnel-[{id}]"), "id": id,
            "dest": dest, "src": format!("10.0.0.{node}/32"), "operSt": "up",
            "tType": "ivxlan", "type": "physical"}}})
    };
    let vpc_conf = |node: u32, pc: &str| {
        json!({"vpcRsVpcConf": {"attributes": {
            "dn": format!("topology/pod-1/node-{node}/sys/vpc/inst/dom-10/if-5/rsvpcConf"),
            "tSKey": pc, "parentSKey": "5", "tDn": format!("sys/intf/aggr-[{pc}]")}}})
    };
    let pc = |node: u32, pc: &str| {
        json!({"pcAggrIf": {"attributes": {
            "dn": format!("topology/pod-1/node-{node}/sys/aggr-[{pc}]"), "id": pc,
            "name": "host1-vpc"}}})
    };
    let lines = [
        // 1-5: the fabric, as class queries.
        query(vec![node(101), node(102), node(103)]),
        query(vec![
            json!({"fabricExplicitGEp": {"attributes": {
                "dn": "uni/fabric/protpol/expgep-vpc-101-102", "id": "10",
                "name": "vpc-101-102", "virtualIp": "10.0.0.100/32"}}}),
            json!({"fabricNodePEp": {"attributes": {
                "dn": "uni/fabric/protpol/expgep-vpc-101-102/nodepep-101", "id": "101"}}}),
            json!({"fabricNodePEp": {"attributes": {
                "dn": "uni/fabric/protpol/expgep-vpc-101-102/nodepep-102", "id": "102"}}}),
        ]),
        query(vec![
            tunnel(103, "tunnel1", "10.0.0.100/32"),
            tunnel(101, "tunnel2", "10.0.0.103"),
            tunnel(102, "tunnel2", "10.0.0.103"),
        ]),
        query(vec![
            vpc_conf(101, "po1"),
            vpc_conf(102, "po2"),
            pc(101, "po1"),
            pc(102, "po2"),
        ]),
        query(vec![
            json!({"fvCtx": {"attributes": {"dn": CTX_DN, "scope": VRF.to_string(), "pcTag": "49153"}}}),
            json!({"fvBD": {"attributes": {"dn": BD_DN, "seg": BD.to_string(), "scope": VRF.to_string()}}}),
            json!({"fvAEPg": {"attributes": {"dn": EPG, "pcTag": PCTAG.to_string(), "scope": VRF.to_string()}}}),
            json!({"fvRsBd": {"attributes": {"dn": format!("{EPG}/rsbd"), "tDn": BD_DN, "tnFvBDName": "bd1"}}}),
        ]),
        // 6: a MAC learn on leaf 101 on the vpc.
        note(
            1000.0,
            vec![mac(101, "created", "local,vpc-attached", "po1")],
        ),
        // 7: the same on the vpc peer 102: the same location.
        note(
            1001.0,
            vec![mac(102, "created", "local,vpc-attached", "po2")],
        ),
        // 8: leaf 103 learns it behind the vpc's virtual TEP.
        note(1002.0, vec![mac(103, "created", "", "tunnel1")]),
        // 9: malformed.
        r#"{"subscriptionId":["1"],"imdata":[{"epmMacEp":"#.to_owned(),
        // 10: a move to leaf 103.
        note(
            1100.0,
            vec![
                mac(101, "deleted", "", ""),
                mac(102, "deleted", "", ""),
                mac(103, "created", "local", "eth1/5"),
            ],
        ),
        // 11: deleted.
        note(1200.0, vec![mac(103, "deleted", "", "")]),
        // 12: an IP, then its rewrite information.
        note(
            1300.0,
            vec![
                json!({"epmIpEp": {"attributes": {
                    "dn": format!("{}/ip-[{IP}]", ep_prefix(103)), "status": "created",
                    "flags": "local", "ifId": "eth1/5", "pcTag": PCTAG.to_string()}}}),
                json!({"epmRsMacEpToIpEpAtt": {"attributes": {
                    "dn": format!(
                        "{}/mac-{MAC}/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-10]/db-ep/ip-[{IP}]]",
                        ep_prefix(103)
                    ),
                    "status": "created"}}}),
            ],
        ),
    ];
    lines.join("\n") + "\n"
}

fn write_recording(dir: &Path) -> String {
    let path = dir.join("fabric.jsonl");
    std::fs::write(&path, recording()).expect("recording");
    path.to_str().expect("utf-8 path").to_owned()
}

fn history(endpoint: &Value, node: u64) -> &Value {
    endpoint["history"]
        .as_array()
        .expect("history list")
        .iter()
        .find(|h| h["node"] == node)
        .unwrap_or_else(|| panic!("no history of node {node}: {endpoint}"))
}

#[test]
fn replay_prints_locations_and_history_with_epts_field_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_recording(dir.path());
    let (code, stdout, stderr) =
        vigil(&["endpoints", "replay", &file, "--fabric", "fab1", "--json"]);
    assert_eq!(code, Some(0), "stderr: {stderr}");

    // The malformed line is reported with its line number; the rest ran.
    assert!(
        stderr.contains(&format!("{file}:9: ")),
        "line 9 not reported: {stderr}"
    );
    let located = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")))
        .count();
    assert_eq!(located, 1, "only line 9 is an error: {stderr}");
    assert!(
        stderr.contains(
            "12 lines, 11 payloads, 9 endpoint events, 17 fabric objects, 0 ignored, 1 errors"
        ),
        "{stderr}"
    );

    let endpoints: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    // Sorted by (fabric, vnid, addr): the IP (VRF vnid) before the MAC (BD vnid).
    assert_eq!(endpoints.len(), 2, "{stdout}");
    let (ip, mac) = (&endpoints[0], &endpoints[1]);

    // The MAC: vpc learn → one location on the pseudo-node, then the move
    // to 103, then the delete.
    assert_eq!(mac["fabric"], "fab1");
    assert_eq!(mac["vnid"], BD);
    assert_eq!(mac["addr"], MAC);
    assert_eq!(mac["type"], "mac");
    assert_eq!(mac["learn_type"], "epg");
    assert_eq!(mac["count"], 3);
    let events = mac["events"].as_array().expect("events");
    assert_eq!(events.len(), 3, "{mac}");
    assert_eq!(events[0]["status"], "deleted");
    assert_eq!(events[0]["node"], 0);
    assert_eq!(events[1]["node"], 103);
    assert_eq!(events[1]["intf_id"], "eth1/5");
    assert_eq!(events[1]["ts"], 1100.0);
    assert_eq!(events[2]["node"], VPC_101_102, "both peers: one location");
    assert_eq!(events[2]["intf_id"], "vpc-5");
    assert_eq!(events[2]["intf_name"], "host1-vpc");
    assert_eq!(events[2]["encap"], "vlan-10");
    assert_eq!(events[2]["pctag"], PCTAG);
    assert_eq!(events[2]["epg_name"], EPG);
    assert_eq!(events[2]["vnid_name"], BD_DN);
    assert_eq!(events[2]["pod"], 1);
    assert_eq!(mac["first_learn"]["node"], VPC_101_102);
    // Per-node history: newest first, with counts.
    assert_eq!(mac["history"].as_array().expect("history").len(), 3);
    for node in [101, 102] {
        let h = history(mac, node);
        assert_eq!(h["count"], 2, "{h}");
        assert_eq!(h["type"], "mac");
        assert_eq!(h["events"][0]["status"], "deleted");
        assert_eq!(h["events"][1]["flags"], json!(["local", "vpc-attached"]));
    }
    let h103 = history(mac, 103);
    assert_eq!(h103["count"], 3);
    let e = h103["events"].as_array().expect("events");
    assert_eq!(e[0]["status"], "deleted");
    assert_eq!(e[1]["intf_id"], "eth1/5");
    // The remote learn behind the vpc's virtual TEP points at the pseudo-node.
    assert_eq!(e[2]["intf_id"], "tunnel1");
    assert_eq!(e[2]["remote"], VPC_101_102);
    for field in [
        "classname",
        "ts",
        "status",
        "remote",
        "pctag",
        "flags",
        "encap",
        "intf_id",
        "intf_name",
        "epg_name",
        "vnid_name",
        "rw_mac",
        "rw_bd",
    ] {
        assert!(
            e[0].get(field).is_some(),
            "history event lacks {field}: {}",
            e[0]
        );
    }

    // The IP: its location carries the MAC rewrite information.
    assert_eq!(ip["vnid"], VRF);
    assert_eq!(ip["addr"], IP);
    assert_eq!(ip["type"], "ipv4");
    assert_eq!(ip["count"], 1);
    let now = &ip["events"][0];
    assert_eq!(now["node"], 103);
    assert_eq!(now["status"], "created");
    assert_eq!(now["rw_mac"], MAC);
    assert_eq!(now["rw_bd"], BD);
    assert_eq!(now["intf_id"], "eth1/5");
    assert_eq!(now["vnid_name"], CTX_DN);
    assert_eq!(now["epg_name"], EPG);
    let h = history(ip, 103);
    assert_eq!(h["count"], 2);
    assert_eq!(h["type"], "ip");
    assert_eq!(h["events"][0]["classname"], "epmRsMacEpToIpEpAtt");
    assert_eq!(h["events"][1]["classname"], "epmIpEp");
}

#[test]
fn replay_table_and_unreadable_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_recording(dir.path());
    let (code, stdout, stderr) = vigil(&["endpoints", "replay", &file, "--fabric", "fab1"]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("FABRIC"), "{stdout}");
    assert!(lines[1].contains(IP) && lines[1].contains(MAC), "{stdout}");
    assert!(lines[1].contains("1970-01-01T00:21:40.000Z"), "{stdout}");
    assert!(lines[1].contains("103:2"), "{stdout}");
    assert!(
        lines[2].contains("deleted") && lines[2].contains("101:2 102:2 103:3"),
        "{stdout}"
    );

    let missing = dir.path().join("nope.jsonl");
    let (code, _, stderr) = vigil(&[
        "endpoints",
        "replay",
        missing.to_str().expect("utf-8"),
        "--fabric",
        "fab1",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("nope.jsonl"), "{stderr}");
}

// --- `vigil endpoints search|show` on a site's history ----------------------------

/// A site `lab` whose embedded database holds the endpoint history that
/// `events` (pushed-event JSON, as `POST /api/v1/endpoints/events` takes
/// it) give, run through the tracker's own step.
struct HistorySite {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl HistorySite {
    fn new(events: &[Value]) -> HistorySite {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("site.toml");
        std::fs::write(
            &config,
            "[site]\nname = \"lab\"\n[storage]\npath = \"vigil.db\"\n",
        )
        .expect("site.toml");
        let path = dir.path().join("vigil.db");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let store = vigil_host::store::endpoints::SqliteHistory::open(&path).expect("open");
            let fabric = vigil_endpoints::Fabric::new("fab1", 0);
            let settings = vigil_endpoints::Settings::default();
            for event in events {
                let ev = vigil_endpoints::pushed::parse_event(event).expect("a good event");
                vigil_endpoints::process_event(&settings, &fabric, &store, &ev)
                    .await
                    .expect("process");
            }
        });
        HistorySite { dir, config }
    }

    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut all = vec!["--site", self.config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(&all)
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env_remove("VIGIL_SITE")
            .output()
            .expect("running vigil");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

fn pushed(
    node: u32,
    vnid: u64,
    kind: &str,
    addr: &str,
    status: &str,
    ts: f64,
    intf: &str,
) -> Value {
    json!({"fabric": "fab1", "node": node, "vnid": vnid, "type": kind, "addr": addr,
           "status": status, "ts": ts, "intf_id": intf, "encap": "vlan-10",
           "pctag": PCTAG, "flags": ["local"]})
}

/// MAC learned on 101, moved to 102 (deleted on 101); the same MAC in a
/// second BD; another MAC; an IPv4 and an IPv6 address.
fn history_events() -> Vec<Value> {
    vec![
        pushed(
            101,
            BD,
            "mac",
            "0050.56aa.bb01",
            "created",
            1_765_000_000.0,
            "eth1/5",
        ),
        pushed(101, BD, "mac", MAC, "modified", 1_765_000_010.0, "eth1/6"),
        pushed(101, BD, "mac", MAC, "deleted", 1_765_000_100.0, "eth1/6"),
        pushed(102, BD, "mac", MAC, "created", 1_765_000_100.5, "eth1/9"),
        pushed(
            103,
            BD + 1,
            "mac",
            MAC,
            "created",
            1_765_000_050.0,
            "eth1/1",
        ),
        pushed(
            101,
            BD,
            "mac",
            "00:50:56:aa:bb:02",
            "created",
            1_765_000_001.0,
            "eth1/7",
        ),
        pushed(101, VRF, "ip", IP, "created", 1_765_000_002.0, "eth1/5"),
        pushed(
            101,
            VRF,
            "ip",
            "2001:db8::5",
            "created",
            1_765_000_003.0,
            "eth1/5",
        ),
    ]
}

#[test]
fn search_finds_endpoints_by_prefix_and_mac_notation() {
    let site = HistorySite::new(&history_events());
    // A MAC prefix in Cisco notation: both MACs, the first in two scopes.
    let (code, out, err) = site.run(&["endpoints", "search", "0050.56aa", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let keys: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["addr"].as_str().unwrap_or("").to_owned(),
                l["vnid"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (MAC.to_owned(), BD),
            (MAC.to_owned(), BD + 1),
            ("00:50:56:AA:BB:02".to_owned(), BD)
        ]
    );
    let now = &lines[0]["current"];
    assert_eq!(now["node"], 102, "moved to 102: {now}");
    assert_eq!(now["intf_id"], "eth1/9");
    assert_eq!(now["ts"], "2025-12-06T05:48:20.500Z");
    assert_eq!(lines[0]["type"], "mac");
    // A table, an IPv4 prefix, a scope filter, a limit.
    let (code, out, err) = site.run(&["endpoints", "search", "10.1.1."]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("ADDRESS"), "{out}");
    assert!(out.contains(IP) && out.contains("ipv4"), "{out}");
    let (_, out, _) = site.run(&["endpoints", "search", "aa-bb", "--json"]);
    assert_eq!(
        out.lines().count(),
        0,
        "no AA:BB MAC nor aa:bb:: IPv6: {out}"
    );
    let (_, out, _) = site.run(&[
        "endpoints",
        "search",
        MAC,
        "--scope",
        &(BD + 1).to_string(),
        "--json",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (code, out, err) = site.run(&["endpoints", "search", "", "--limit", "2", "--json"]);
    assert_eq!((code, out.lines().count()), (Some(0), 2), "{err}");
    assert!(err.contains("more endpoints match"), "{err}");
    let (_, out, _) = site.run(&["endpoints", "search", "2001:DB8:0::5", "--json"]);
    assert!(out.contains("\"addr\":\"2001:db8::5\""), "{out}");
    // Bad input: an error that says why, not an empty answer.
    let (code, _, err) = site.run(&["endpoints", "search", "hello"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("not an address"), "{err}");
    let (code, _, err) = site.run(&["endpoints", "search", "10.", "--limit", "0"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--limit"), "{err}");
}

#[test]
fn show_prints_the_location_events_and_every_nodes_history() {
    let site = HistorySite::new(&history_events());
    let (code, out, err) = site.run(&[
        "endpoints",
        "show",
        "00-50-56-AA-BB-01",
        "--scope",
        &BD.to_string(),
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let view: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(view["addr"], MAC);
    assert_eq!(view["fabric"], "fab1");
    assert_eq!(view["current"]["node"], 102);
    let events = view["events"].as_array().expect("events");
    assert!(events.len() >= 2, "{view}");
    assert_eq!(events[0]["node"], 102, "newest first");
    let history = view["history"].as_array().expect("history");
    let nodes: Vec<u64> = history.iter().filter_map(|h| h["node"].as_u64()).collect();
    assert_eq!(nodes, [101, 102]);
    let on_101 = &history[0];
    assert_eq!(on_101["count"], 3);
    let statuses: Vec<&str> = on_101["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(statuses, ["deleted", "modified", "created"], "newest first");
    for field in [
        "intf_id",
        "intf_name",
        "pctag",
        "encap",
        "rw_mac",
        "rw_bd",
        "flags",
        "remote",
        "status",
        "ts",
        "epg_name",
        "vnid_name",
    ] {
        assert!(on_101["events"][0].get(field).is_some(), "{field}");
    }
    // As text.
    let (code, out, err) = site.run(&[
        "endpoints",
        "show",
        "0050.56aa.bb01",
        "--scope",
        &BD.to_string(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("node 101 (3 events in all"), "{out}");
    assert!(out.contains("node 102 (1 events in all"), "{out}");
    assert!(out.contains("now: created on node 102 eth1/9"), "{out}");
    // In two scopes: ambiguous, both listed.
    let (code, out, err) = site.run(&["endpoints", "show", "aabb", "--json"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains("not a MAC or IP address"), "{err}");
    let (code, out, err) = site.run(&["endpoints", "show", "0050.56aa.bb01"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(err.contains("in 2 scopes"), "{err}");
    assert!(
        err.contains(&format!("--fabric fab1 --scope {BD}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("--fabric fab1 --scope {}", BD + 1)),
        "{err}"
    );
    // Unknown: exit 1 naming it.
    let (code, _, err) = site.run(&["endpoints", "show", "00:50:56:aa:bb:99"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no endpoint 00:50:56:aa:bb:99"), "{err}");
    let (code, _, err) = site.run(&["endpoints", "show", IP, "--fabric", "fab2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("in fabric fab2"), "{err}");
    let (code, out, err) = site.run(&["endpoints", "show", IP, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"type\":\"ipv4\""), "{out}");
}

#[test]
fn search_and_show_need_a_site_with_history() {
    // No site config: a configuration error, as for the other read commands.
    let (code, _, err) = vigil(&["endpoints", "search", "10."]);
    assert_eq!(code, Some(78), "{err}");
    // A site whose database the tracker never wrote.
    let site = HistorySite::new(&[]);
    let db = site.dir.path().join("vigil.db");
    std::fs::remove_file(&db).expect("remove");
    vigil_host::store::sqlite::SqliteStorage::open(&db).expect("a host database");
    let (code, _, err) = site.run(&["endpoints", "show", IP]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no endpoint history"), "{err}");
    // No database at all.
    std::fs::remove_file(&db).expect("remove");
    let (code, _, err) = site.run(&["endpoints", "search", ""]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no vigil database"), "{err}");
}
