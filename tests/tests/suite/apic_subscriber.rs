//! The APIC subscriber (`vigil-apic`) against the APIC simulator
//! (`vigil_tests::apic_sim`), issue #14: a fabric of five leaves (vpc pairs
//! 101/102 and 103/104, a single leaf 105, tunnels to the vpc anycast TEP
//! and to single leaves), built with paged class queries (page size 5, so
//! every big class takes several pages), then notifications: learns, moves
//! between ports and between leaves, deletes, vpc learns, IPv4 and IPv6
//! with their rewrite objects, and notifications that arrive during the
//! build (one of them older than the page that follows it, so EPT's rules
//! ignore it). Then the failures: a dropped websocket, an expired
//! subscription, a failed heartbeat, an expired token, a wrong password,
//! hostile messages. Every event goes through `process_event` on a
//! `MemoryStore` (the sink below), and the history and endpoint records are
//! checked against what EPT's rules (`shared/notes/ept-rules.md`) give;
//! the recording of each run, replayed with `vigil_endpoints::replay`,
//! must give the same records as the live path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use tokio::sync::watch;
use vigil_apic::{
    ApicConfig, ApicUrl, SecretSource, Subscriber, SubscriberError, SubscriberStatus,
};
use vigil_endpoints::fabric::{Fabric, vpc_node_id};
use vigil_endpoints::ingest::{EventSink, SinkClosed, Source, SubscriberState};
use vigil_endpoints::model::{
    EndpointKey, EndpointRecord, EpmEvent, HistoryRecord, Settings, Status,
};
use vigil_endpoints::replay::{ReplayOptions, replay};
use vigil_endpoints::store::{HistoryStore, MemoryStore, process_event};
use vigil_tests::apic_sim::ApicSim;

const FABRIC: &str = "fab1";
const USER: &str = "vigil-ro";
const PASS: &str = "sim-password-1";
const VRF: u32 = 2949120;
const BD: u32 = 15990734;
const OVERLAY: u32 = 16777199;
const PCTAG: i64 = 32771;
const WAIT: Duration = Duration::from_secs(90);

// --- the sink: history as the tracker's worker would write it ------------------

/// Runs every event through `process_event` against the fabric last
/// published, and keeps what the subscriber reported.
struct HistorySink {
    settings: Settings,
    store: MemoryStore,
    fabric: Mutex<Option<Arc<Fabric>>>,
    events: Mutex<Vec<EpmEvent>>,
    keys: Mutex<BTreeSet<EndpointKey>>,
    rejected: Mutex<Vec<(&'static str, String)>>,
    states: Mutex<Vec<SubscriberState>>,
    fabrics: Mutex<usize>,
    errors: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HistorySink {
    fn new() -> Arc<HistorySink> {
        Arc::new(HistorySink {
            settings: Settings::default(),
            store: MemoryStore::new(),
            fabric: Mutex::new(None),
            events: Mutex::new(Vec::new()),
            keys: Mutex::new(BTreeSet::new()),
            rejected: Mutex::new(Vec::new()),
            states: Mutex::new(Vec::new()),
            fabrics: Mutex::new(0),
            errors: Mutex::new(Vec::new()),
        })
    }

    fn event_count(&self) -> usize {
        lock(&self.events).len()
    }

    fn rejections(&self, reason: &str) -> Vec<String> {
        lock(&self.rejected)
            .iter()
            .filter(|(r, _)| *r == reason)
            .map(|(_, s)| s.clone())
            .collect()
    }

    fn latest_fabric(&self) -> Option<Arc<Fabric>> {
        lock(&self.fabric).clone()
    }

    fn states(&self) -> Vec<SubscriberState> {
        lock(&self.states).clone()
    }
}

#[async_trait::async_trait]
impl EventSink for HistorySink {
    async fn fabric(&self, fabric: Arc<Fabric>) -> Result<(), SinkClosed> {
        *lock(&self.fabric) = Some(fabric);
        *lock(&self.fabrics) += 1;
        Ok(())
    }

    async fn event(&self, source: Source, event: EpmEvent) -> Result<(), SinkClosed> {
        if source != Source::Apic {
            lock(&self.errors).push(format!("event from source {source}"));
        }
        let fabric = self
            .latest_fabric()
            .unwrap_or_else(|| Arc::new(Fabric::new(FABRIC, 0)));
        if let Err(e) = process_event(&self.settings, &fabric, &self.store, &event).await {
            lock(&self.errors).push(e.to_string());
        }
        lock(&self.keys).insert(event.key());
        lock(&self.events).push(event);
        Ok(())
    }

    fn rejected(&self, source: Source, reason: &'static str, sample: &str) {
        if source != Source::Apic {
            lock(&self.errors).push(format!("rejection from source {source}"));
        }
        lock(&self.rejected).push((reason, sample.to_owned()));
    }

    fn subscriber_state(&self, fabric: &str, state: SubscriberState) {
        if fabric != FABRIC {
            lock(&self.errors).push(format!("state for fabric {fabric}"));
        }
        lock(&self.states).push(state);
    }
}

// --- the fabric ------------------------------------------------------------------

fn mac(n: u32) -> String {
    format!("00:50:56:01:00:{n:02X}")
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

fn rs_dn(node: u32, mac: &str, ip: &str) -> String {
    format!(
        "topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/mac-{mac}/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/ip-[{ip}]]"
    )
}

fn ep(dn: String, status: &str, flags: &str, if_id: &str) -> Value {
    json!({"dn": dn, "status": status, "flags": flags, "ifId": if_id, "pcTag": PCTAG.to_string(),
           "encap": "vlan-101", "modTs": "2026-12-07T05:00:00.000+00:00"})
}

fn local_mac(node: u32, mac: &str, if_id: &str) -> Value {
    ep(mac_dn(node, mac), "created", "local", if_id)
}

fn vpc_mac(node: u32, mac: &str, if_id: &str) -> Value {
    ep(mac_dn(node, mac), "created", "local,vpc-attached", if_id)
}

const VPC_A: u32 = (101 << 16) + 102;

/// Fabric objects: nodes with TEPs, two explicit vpc groups, vpc ports,
/// tunnels, a VRF, the overlay, a BD, two EPGs, and classes the model
/// ignores.
fn load_fabric(sim: &ApicSim) {
    let mut nodes = Vec::new();
    for n in 101..=105 {
        nodes.push(json!({"dn": format!("topology/pod-1/node-{n}"), "id": n.to_string(),
                          "role": "leaf", "address": format!("10.0.80.{n}"), "name": format!("leaf{n}")}));
    }
    nodes.push(json!({"dn": "topology/pod-1/node-201", "id": "201", "role": "spine", "address": "10.0.80.201"}));
    sim.set_class("fabricNode", nodes);
    sim.set_class(
        "fabricExplicitGEp",
        vec![
            json!({"dn": "uni/fabric/protpol/expgep-vpc-101-102", "name": "vpc-101-102", "virtualIp": "10.0.72.64/32"}),
            json!({"dn": "uni/fabric/protpol/expgep-vpc-103-104", "name": "vpc-103-104", "virtualIp": "10.0.72.65/32"}),
        ],
    );
    sim.set_class(
        "fabricNodePEp",
        [(101, 102), (103, 104)]
            .iter()
            .flat_map(|(a, b)| {
                [*a, *b].map(|n| json!({"dn": format!("uni/fabric/protpol/expgep-vpc-{a}-{b}/nodepep-{n}"), "id": n.to_string()}))
            })
            .collect(),
    );
    sim.set_class(
        "fabricProtPol",
        vec![json!({"dn": "uni/fabric/protpol", "pairT": "explicit"})],
    );
    sim.set_class(
        "vpcRsVpcConf",
        [
            (101, "po1", 5),
            (102, "po2", 5),
            (103, "po3", 7),
            (104, "po4", 7),
        ]
        .iter()
        .map(|(n, po, vpc)| {
            json!({"dn": format!("topology/pod-1/node-{n}/sys/vpc/inst/dom-1/if-{vpc}/rsvpcConf"),
                                      "tSKey": po, "parentSKey": vpc.to_string()})
        })
        .collect(),
    );
    sim.set_class(
        "pcAggrIf",
        [(101, "po1"), (102, "po2"), (103, "po3"), (104, "po4")]
            .iter()
            .map(|(n, po)| json!({"dn": format!("topology/pod-1/node-{n}/sys/aggr-[{po}]"), "id": po, "name": format!("vpc-policy-{n}")}))
            .collect(),
    );
    sim.set_class(
        "tunnelIf",
        vec![
            // 105 reaches the 101/102 anycast TEP and leaf 103.
            json!({"dn": "topology/pod-1/node-105/sys/tunnel-[tunnel1]", "id": "tunnel1", "dest": "10.0.72.64/32", "tType": "ivxlan", "type": "physical"}),
            json!({"dn": "topology/pod-1/node-105/sys/tunnel-[tunnel2]", "id": "tunnel2", "dest": "10.0.80.103/32", "tType": "ivxlan", "type": "physical"}),
            json!({"dn": "topology/pod-1/node-101/sys/tunnel-[tunnel5]", "id": "tunnel5", "dest": "10.0.80.105/32", "tType": "ivxlan", "type": "physical"}),
            json!({"dn": "topology/pod-1/node-103/sys/tunnel-[tunnel6]", "id": "tunnel6", "dest": "10.0.72.64/32", "tType": "ivxlan", "type": "physical"}),
        ],
    );
    sim.set_class(
        "fvCtx",
        vec![
            json!({"dn": "uni/tn-t/ctx-v1", "scope": VRF.to_string(), "name": "v1"}),
            json!({"dn": "uni/tn-infra/ctx-overlay-1", "scope": OVERLAY.to_string(), "name": "overlay-1"}),
        ],
    );
    sim.set_class(
        "fvBD",
        vec![json!({"dn": "uni/tn-t/BD-bd1", "seg": BD.to_string(), "name": "bd1"})],
    );
    sim.set_class(
        "fvAEPg",
        vec![
            json!({"dn": "uni/tn-t/ap-a/epg-web", "scope": VRF.to_string(), "pcTag": PCTAG.to_string()}),
            json!({"dn": "uni/tn-t/ap-a/epg-app", "scope": VRF.to_string(), "pcTag": (PCTAG + 1).to_string()}),
        ],
    );
    sim.set_class(
        "fvRsBd",
        vec![
            json!({"dn": "uni/tn-t/ap-a/epg-web/rsbd", "tDn": "uni/tn-t/BD-bd1"}),
            json!({"dn": "uni/tn-t/ap-a/epg-app/rsbd", "tDn": "uni/tn-t/BD-bd1"}),
        ],
    );
    sim.set_class(
        "fvSubnet",
        vec![json!({"dn": "uni/tn-t/BD-bd1/subnet-[10.1.1.1/24]", "ip": "10.1.1.1/24"})],
    );
    sim.set_class(
        "datetimeFormat",
        vec![json!({"dn": "uni/fabric/format-default", "tz": "p0_UTC"})],
    );
}

/// Endpoints known at the build: 14 MAC objects (three pages of 5), an
/// IPv4 and an IPv6 address with their rewrite objects.
fn load_endpoints(sim: &ApicSim) {
    let mut macs = vec![
        // M01 on vpc 5 (101 po1, 102 po2), seen remotely by 105 over tunnel1.
        vpc_mac(101, &mac(1), "po1"),
        vpc_mac(102, &mac(1), "po2"),
        ep(mac_dn(105, &mac(1)), "created", "", "tunnel1"),
        local_mac(103, &mac(2), "eth1/2"),
        local_mac(105, &mac(3), "eth1/3"),
    ];
    for n in 4..=12 {
        macs.push(local_mac(104, &mac(n), &format!("eth1/{n}")));
    }
    sim.set_class("epmMacEp", macs);
    sim.set_class(
        "epmIpEp",
        vec![
            ep(ip_dn(103, "10.1.1.101"), "created", "local", "eth1/2"),
            ep(ip_dn(105, "2001:db8:1::65"), "created", "local", "eth1/3"),
        ],
    );
    sim.set_class(
        "epmRsMacEpToIpEpAtt",
        vec![
            json!({"dn": rs_dn(103, &mac(2), "10.1.1.101")}),
            json!({"dn": rs_dn(105, &mac(3), "2001:db8:1::65")}),
        ],
    );
}

// --- the harness -------------------------------------------------------------------

struct Harness {
    sim: ApicSim,
    sink: Arc<HistorySink>,
    status: watch::Receiver<SubscriberStatus>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<(), SubscriberError>>>,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

fn test_config(sim: &ApicSim, password: &str, record: &Path) -> Result<ApicConfig> {
    let password = SecretSource::Inline(password.to_owned())
        .read(Path::new("."))
        .map_err(|e| anyhow!("password: {e}"))?;
    let url = ApicUrl::parse(&sim.url()).map_err(|e| anyhow!(e))?;
    let mut c = ApicConfig::new(FABRIC, vec![url], USER, password);
    c.page_size = 5;
    c.subscription_refresh = Duration::from_millis(300);
    c.heartbeat_interval = Duration::from_millis(500);
    c.heartbeat_timeout = Duration::from_secs(5);
    c.reconnect_initial = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(20);
    c.connect_timeout = Duration::from_secs(10);
    c.record_to = Some(record.to_owned());
    Ok(c)
}

impl Harness {
    async fn start(sim: ApicSim, tweak: impl FnOnce(&mut ApicConfig)) -> Result<Harness> {
        Self::start_with(sim, PASS, tweak).await
    }

    async fn start_with(
        sim: ApicSim,
        password: &str,
        tweak: impl FnOnce(&mut ApicConfig),
    ) -> Result<Harness> {
        let dir = tempfile::tempdir()?;
        let record = dir.path().join("fab1.jsonl");
        let mut config = test_config(&sim, password, &record)?;
        tweak(&mut config);
        let sink = HistorySink::new();
        let subscriber = Subscriber::new(config, sink.clone());
        let status = subscriber.status();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(subscriber.run(stop_rx));
        Ok(Harness {
            sim,
            sink,
            status,
            stop,
            task: Some(task),
            record,
            _dir: dir,
        })
    }

    async fn wait_status(
        &mut self,
        what: &str,
        pred: impl FnMut(&SubscriberStatus) -> bool,
    ) -> Result<SubscriberStatus> {
        let waited = tokio::time::timeout(WAIT, self.status.wait_for(pred))
            .await
            .map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => bail!("{what}: the subscriber's status is gone"),
            Err(_) => bail!(
                "timed out waiting for {what}; status {:?}; sim {:?}",
                *self.status.borrow(),
                self.sim.counters()
            ),
        }
    }

    /// Waits for the `builds`-th build to finish.
    async fn in_sync(&mut self, builds: u64) -> Result<SubscriberStatus> {
        self.wait_status(&format!("build {builds} in sync"), |s| {
            s.builds >= builds && s.state == SubscriberState::InSync
        })
        .await
    }

    async fn events(&self, n: usize) -> Result<()> {
        until(&format!("{n} events"), || self.sink.event_count() >= n).await
    }

    /// Pushes a notification that must reach the subscriber, and waits for
    /// its endpoint events to be handled.
    async fn notify(&self, class: &str, objects: Vec<Value>) -> Result<()> {
        let before = self.sink.event_count();
        let n = objects.len();
        let reached = self.sim.notify(class, objects);
        ensure!(
            reached == 1,
            "notification of {class} reached {reached} websockets"
        );
        self.events(before + n).await
    }

    /// Stops the subscriber and checks it stopped cleanly.
    async fn stop(&mut self) -> Result<()> {
        self.stop.send_replace(true);
        let task = self.task.take().context("stopped twice")?;
        let result = tokio::time::timeout(WAIT, task)
            .await
            .context("the subscriber did not stop")??;
        result.map_err(|e| anyhow!("the subscriber failed: {e}"))?;
        ensure!(
            self.status.borrow().state == SubscriberState::Stopped,
            "state after stop: {:?}",
            self.status.borrow().state
        );
        ensure!(self.sink.states().last() == Some(&SubscriberState::Stopped));
        let errors = lock(&self.sink.errors).clone();
        ensure!(errors.is_empty(), "sink errors: {errors:?}");
        Ok(())
    }

    fn key(vnid: u32, addr: &str) -> EndpointKey {
        EndpointKey {
            fabric: FABRIC.into(),
            vnid,
            addr: addr.into(),
        }
    }

    async fn endpoint(&self, vnid: u32, addr: &str) -> Result<EndpointRecord> {
        self.sink
            .store
            .endpoint(&Self::key(vnid, addr))
            .await?
            .with_context(|| format!("no endpoint record for {addr} in {vnid}"))
    }

    async fn history(&self, node: u32, vnid: u32, addr: &str) -> Result<HistoryRecord> {
        self.sink
            .store
            .histories(&Self::key(vnid, addr))
            .await?
            .remove(&node)
            .with_context(|| format!("no history of {addr} in {vnid} on node {node}"))
    }

    /// The recording, replayed, gives exactly the live records.
    async fn replay_matches(&self) -> Result<()> {
        let file = std::fs::File::open(&self.record)
            .with_context(|| format!("opening {}", self.record.display()))?;
        let r = replay(
            std::io::BufReader::new(file),
            "fab1.jsonl",
            &ReplayOptions::new(FABRIC),
        )
        .await?;
        let live_keys = lock(&self.sink.keys).clone();
        ensure!(
            r.keys == live_keys,
            "replay saw endpoints {:?}, live {:?}",
            r.keys,
            live_keys
        );
        ensure!(!live_keys.is_empty());
        for key in &live_keys {
            let live = self.sink.store.histories(key).await?;
            let replayed = r.store.histories(key).await?;
            ensure!(
                live == replayed,
                "history of {key:?}: live {live:#?}\nreplay {replayed:#?}"
            );
            let live = self.sink.store.endpoint(key).await?;
            let replayed = r.store.endpoint(key).await?;
            ensure!(
                live == replayed,
                "endpoint {key:?}: live {live:#?}\nreplay {replayed:#?}"
            );
        }
        ensure!(
            r.summary.endpoint_events == self.sink.event_count(),
            "replay handled {} events, live {}",
            r.summary.endpoint_events,
            self.sink.event_count()
        );
        Ok(())
    }
}

async fn until(what: &str, mut pred: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !pred() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn fabric_sim() -> Result<ApicSim> {
    let sim = ApicSim::start(USER, PASS).await?;
    load_fabric(&sim);
    load_endpoints(&sim);
    Ok(sim)
}

// --- the tests ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_build_then_notifications_give_epts_history() -> Result<()> {
    paged_build_then_notifications(true).await
}

/// The same scenario without a recording: the subscriber then reads its
/// pages and notifications straight from the text (the path a production
/// subscriber takes), not through a `serde_json::Value`, and must give the
/// same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_recording_the_text_path_gives_the_same_history() -> Result<()> {
    paged_build_then_notifications(false).await
}

async fn paged_build_then_notifications(record: bool) -> Result<()> {
    let sim = fabric_sim().await?;
    // Hold the second page of epmMacEp to push notifications mid-build.
    let mut dns: Vec<(String, u32, String, String)> = Vec::new(); // (dn, node, mac, ifId)
    for (node, m, ifid) in [
        (101, 1, "po1"),
        (102, 1, "po2"),
        (105, 1, "tunnel1"),
        (103, 2, "eth1/2"),
        (105, 3, "eth1/3"),
    ]
    .into_iter()
    .map(|(n, m, i)| (n, m, i.to_owned()))
    .chain((4..=12).map(|n| (104, n, format!("eth1/{n}"))))
    {
        dns.push((mac_dn(node, &mac(m)), node, mac(m), ifid));
    }
    dns.sort();
    let (held_dn, held_node, held_mac, held_if) = dns[5..10]
        .iter()
        .find(|(_, _, _, i)| i.starts_with("eth"))
        .cloned()
        .context("an eth port on page 1")?;
    sim.hold("epmMacEp", 1);
    let mut h = Harness::start(sim, |c| {
        if !record {
            c.record_to = None;
        }
    })
    .await?;

    until("the held page to be asked for", || {
        h.sim.queries().contains(&("epmMacEp".to_owned(), 1))
    })
    .await?;
    ensure!(h.status.borrow().state == SubscriberState::Building);
    // An older claim about an object of the held page (the page, received
    // later, says otherwise), and a learn of a new MAC.
    let stale = ep(held_dn.clone(), "created", "local", "eth1/40");
    ensure!(h.sim.notify_only("epmMacEp", vec![stale]) == 1);
    ensure!(
        h.sim
            .notify_only("epmMacEp", vec![local_mac(105, &mac(0x20), "eth1/20")])
            == 1
    );
    h.wait_status("two messages received mid-build", |s| {
        s.messages_received >= 2
    })
    .await?;
    ensure!(
        h.sink.event_count() <= 5,
        "notifications were applied before the build ended"
    );
    h.sim.release("epmMacEp", 1);
    let status = h.in_sync(1).await?;

    // Paging: every page of every big class, with subscriptions on page 0.
    let queries = h.sim.queries();
    for page in 0..3 {
        ensure!(
            queries.contains(&("epmMacEp".to_owned(), page)),
            "epmMacEp page {page}: {queries:?}"
        );
    }
    ensure!(
        !queries.contains(&("epmMacEp".to_owned(), 3)),
        "{queries:?}"
    );
    ensure!(
        queries.contains(&("fabricNode".to_owned(), 1)),
        "{queries:?}"
    );
    let classes =
        vigil_apic::FABRIC_SUBSCRIPTION_CLASSES.len() + vigil_apic::ENDPOINT_CLASSES.len();
    ensure!(status.subscriptions == classes, "{status:?}");
    ensure!(h.sim.counters().subscriptions_created == classes as u64);
    ensure!(status.logins == 1 && status.failures == 0, "{status:?}");
    // 14 MAC + 2 IP + 2 rs objects from the build, then the 2 buffered.
    h.events(20).await?;

    // The fabric model, from the fabric objects.
    let fabric = h.sink.latest_fabric().context("no fabric published")?;
    ensure!(fabric.peer_of(101) == 102 && fabric.peer_of(104) == 103);
    ensure!(fabric.tunnel(105, "tunnel1").map(|t| t.remote) == Some(VPC_A));
    ensure!(fabric.tunnel(105, "tunnel2").map(|t| t.remote) == Some(103));
    ensure!(fabric.overlay_vnid == OVERLAY);
    ensure!(fabric.epg_name(VRF, PCTAG) == "uni/tn-t/ap-a/epg-web");

    // M01 on vpc 5 of 101/102: one location, the pseudo-node, intf vpc-5
    // (§5, §10); 105's remote learn over tunnel1 resolves to the pseudo-node.
    let m1 = h.endpoint(BD, &mac(1)).await?;
    ensure!(m1.events.len() == 1, "{m1:#?}");
    ensure!(
        m1.events[0].node == VPC_A && m1.events[0].intf_id == "vpc-5",
        "{m1:#?}"
    );
    ensure!(h.history(105, BD, &mac(1)).await?.events[0].remote == VPC_A);
    ensure!(h.history(101, BD, &mac(1)).await?.events[0].intf_id == "vpc-5");

    // The older notification of the held page's object was ignored
    // (W:690-693): the page's port stands.
    let held = h.history(held_node, BD, &held_mac).await?;
    ensure!(
        held.events.len() == 1 && held.events[0].intf_id == held_if,
        "{held:#?}"
    );
    let ep_held = h.endpoint(BD, &held_mac).await?;
    ensure!(ep_held.events.len() == 1 && ep_held.events[0].intf_id == held_if);
    // The buffered learn was applied after the build.
    let m20 = h.endpoint(BD, &mac(0x20)).await?;
    ensure!(m20.events[0].node == 105 && m20.events[0].intf_id == "eth1/20");

    // IPv4 and IPv6 from the build: the rewrite object gives the MAC and
    // BD (W:700-732), then the complete local (W:883-894).
    for (ip, node, m) in [("10.1.1.101", 103, 2), ("2001:db8:1::65", 105, 3)] {
        let e = h.endpoint(VRF, ip).await?;
        ensure!(e.events.len() == 1, "{ip}: {e:#?}");
        let ev = &e.events[0];
        ensure!(
            ev.node == node && ev.rw_mac == mac(m) && ev.rw_bd == BD,
            "{ip}: {e:#?}"
        );
    }

    // --- in sync: a learn, a move between ports, a move between leaves,
    // a delete on the old leaf.
    let m21 = mac(0x21);
    h.notify("epmMacEp", vec![local_mac(101, &m21, "eth1/21")])
        .await?;
    h.notify(
        "epmMacEp",
        vec![json!({"dn": mac_dn(101, &m21), "status": "modified", "ifId": "eth1/22"})],
    )
    .await?;
    h.notify("epmMacEp", vec![local_mac(103, &m21, "eth1/5")])
        .await?;
    h.notify(
        "epmMacEp",
        vec![json!({"dn": mac_dn(101, &m21), "status": "deleted"})],
    )
    .await?;
    let e = h.endpoint(BD, &m21).await?;
    let path: Vec<(u32, &str)> = e
        .events
        .iter()
        .map(|e| (e.node, e.intf_id.as_str()))
        .collect();
    ensure!(
        path == vec![(103, "eth1/5"), (101, "eth1/22"), (101, "eth1/21")],
        "M21 moves: {path:?}"
    );
    let h101 = h.history(101, BD, &m21).await?;
    let statuses: Vec<Status> = h101.events.iter().map(|e| e.status).collect();
    ensure!(
        statuses == vec![Status::Deleted, Status::Modified, Status::Created],
        "{statuses:?}"
    );
    // A modify carrying only ifId inherits the rest (W:757-777).
    ensure!(h101.events[1].flags.to_vec() == ["local"] && h101.events[1].pctag == PCTAG);

    // A delete of the only location: the endpoint is deleted (node 0, W:897-917).
    h.notify(
        "epmMacEp",
        vec![json!({"dn": mac_dn(103, &mac(2)), "status": "deleted"})],
    )
    .await?;
    let m2 = h.endpoint(BD, &mac(2)).await?;
    ensure!(
        m2.events.len() == 2 && m2.events[0].node == 0 && m2.events[0].status == Status::Deleted
    );
    // A delete of an endpoint never seen changes nothing (W:652-654).
    h.notify(
        "epmMacEp",
        vec![json!({"dn": mac_dn(104, &mac(0x99)), "status": "deleted"})],
    )
    .await?;
    ensure!(
        h.sink
            .store
            .endpoint(&Harness::key(BD, &mac(0x99)))
            .await?
            .is_none()
    );

    // A vpc learn on both peers: the pseudo-node, no move.
    let m22 = mac(0x22);
    h.notify("epmMacEp", vec![vpc_mac(103, &m22, "po3")])
        .await?;
    h.notify("epmMacEp", vec![vpc_mac(104, &m22, "po4")])
        .await?;
    let e = h.endpoint(BD, &m22).await?;
    ensure!(e.events.len() == 1, "{e:#?}");
    ensure!(
        e.events[0].node == vpc_node_id(103, 104).unwrap_or(0) && e.events[0].intf_id == "vpc-7"
    );

    // IPv4 learned on 104, its rewrite, then a new MAC behind it: the
    // endpoint follows the rewrite (W:700-732, §5).
    let ip = "10.1.1.102";
    h.notify(
        "epmIpEp",
        vec![ep(ip_dn(104, ip), "created", "local", "eth1/4")],
    )
    .await?;
    ensure!(
        h.endpoint(VRF, ip).await?.events.is_empty(),
        "no local before the rewrite"
    );
    h.notify(
        "epmRsMacEpToIpEpAtt",
        vec![json!({"dn": rs_dn(104, &mac(4), ip), "status": "created"})],
    )
    .await?;
    h.notify(
        "epmRsMacEpToIpEpAtt",
        vec![json!({"dn": rs_dn(104, &mac(5), ip), "status": "created"})],
    )
    .await?;
    let e = h.endpoint(VRF, ip).await?;
    let rw: Vec<&str> = e.events.iter().map(|e| e.rw_mac.as_str()).collect();
    ensure!(rw == vec![mac(5).as_str(), mac(4).as_str()], "{rw:?}");
    ensure!(e.events.iter().all(|e| e.node == 104));

    // IPv6 moves from 105 to 103 (learn and rewrite on 103, delete on 105).
    let ip6 = "2001:db8:1::65";
    h.notify(
        "epmIpEp",
        vec![ep(ip_dn(103, ip6), "created", "local", "eth1/7")],
    )
    .await?;
    h.notify(
        "epmRsMacEpToIpEpAtt",
        vec![json!({"dn": rs_dn(103, &mac(3), ip6), "status": "created"})],
    )
    .await?;
    h.notify(
        "epmIpEp",
        vec![json!({"dn": ip_dn(105, ip6), "status": "deleted"})],
    )
    .await?;
    let e = h.endpoint(VRF, ip6).await?;
    let path: Vec<u32> = e.events.iter().map(|e| e.node).collect();
    ensure!(path == vec![103, 105], "{path:?}");
    ensure!(e.events[0].rw_mac == mac(3) && e.events[0].intf_id == "eth1/7");

    // A fabric notification (a new tunnel from 104 to 105) is published
    // before the events that need it: a remote learn over it resolves.
    let published = *lock(&h.sink.fabrics);
    let tunnel = json!({"dn": "topology/pod-1/node-104/sys/tunnel-[tunnel9]", "status": "created",
                        "id": "tunnel9", "dest": "10.0.80.105/32", "tType": "ivxlan", "type": "physical"});
    ensure!(h.sim.notify("tunnelIf", vec![tunnel]) == 1);
    until("the fabric with tunnel9", || {
        *lock(&h.sink.fabrics) > published
    })
    .await?;
    let fabric = h.sink.latest_fabric().context("fabric")?;
    ensure!(fabric.tunnel(104, "tunnel9").map(|t| t.remote) == Some(105));
    h.notify(
        "epmMacEp",
        vec![ep(mac_dn(104, &mac(3)), "created", "", "tunnel9")],
    )
    .await?;
    ensure!(h.history(104, BD, &mac(3)).await?.events[0].remote == 105);

    let status = h.status.borrow().clone();
    ensure!(status.failures == 0 && status.logins == 1, "{status:?}");
    ensure!(
        lock(&h.sink.rejected).is_empty(),
        "{:?}",
        lock(&h.sink.rejected)
    );
    h.stop().await?;
    if record {
        h.replay_matches().await
    } else {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_is_rebuilt_with_what_changed_meanwhile() -> Result<()> {
    let sim = fabric_sim().await?;
    let mut h = Harness::start(sim, |_| {}).await?;
    h.in_sync(1).await?;
    h.events(18).await?;
    let m30 = mac(0x30);
    h.notify("epmMacEp", vec![local_mac(101, &m30, "eth1/30")])
        .await?;
    ensure!(
        h.sink
            .latest_fabric()
            .context("fabric")?
            .epg_name(VRF, PCTAG + 1)
            == "uni/tn-t/ap-a/epg-app"
    );

    // While nobody listens: M30 moves to 103, M04 is gone, an EPG removed.
    h.sim.change(
        "epmMacEp",
        json!({"dn": mac_dn(101, &m30), "status": "deleted"}),
    );
    h.sim.change("epmMacEp", local_mac(103, &m30, "eth1/31"));
    h.sim.change(
        "epmMacEp",
        json!({"dn": mac_dn(104, &mac(4)), "status": "deleted"}),
    );
    h.sim.change(
        "fvAEPg",
        json!({"dn": "uni/tn-t/ap-a/epg-app", "status": "deleted"}),
    );
    h.sim.drop_websockets();
    let status = h.in_sync(2).await?;
    ensure!(status.logins == 2 && status.failures == 1, "{status:?}");
    ensure!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("websocket")),
        "{status:?}"
    );
    let states = h.sink.states();
    use SubscriberState::*;
    ensure!(
        states == vec![Building, InSync, Reconnecting, Building, InSync],
        "{states:?}"
    );
    // The rebuild's pages: M30's newest local learn is on 103.
    until("M30 on 103", || {
        lock(&h.sink.events)
            .iter()
            .any(|e| e.node == 103 && e.addr == m30)
    })
    .await?;
    let e = h.endpoint(BD, &m30).await?;
    ensure!(
        e.events[0].node == 103 && e.events[0].intf_id == "eth1/31",
        "{e:#?}"
    );
    // The EPG deleted meanwhile is gone from the model.
    let fabric = h.sink.latest_fabric().context("fabric")?;
    ensure!(
        fabric.epg_name(VRF, PCTAG + 1).is_empty(),
        "the EPG was not swept"
    );
    ensure!(fabric.epg_name(VRF, PCTAG) == "uni/tn-t/ap-a/epg-web");
    // Notifications flow again on the new socket.
    h.notify("epmMacEp", vec![local_mac(105, &m30, "eth1/32")])
        .await?;
    ensure!(h.endpoint(BD, &m30).await?.events[0].node == 105);
    h.stop().await?;
    h.replay_matches().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_subscription_is_re_established() -> Result<()> {
    let sim = fabric_sim().await?;
    let mut h = Harness::start(sim, |_| {}).await?;
    h.in_sync(1).await?;
    h.wait_status("subscription refreshes", |s| s.subscription_refreshes >= 30)
        .await?;
    ensure!(h.sim.counters().failed_subscription_refreshes == 0);
    h.sim.expire_subscriptions();
    ensure!(
        h.sim
            .notify("epmMacEp", vec![local_mac(101, &mac(0x40), "eth1/40")])
            == 0
    );
    let status = h.in_sync(2).await?;
    ensure!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("subscription") && e.contains("does not exist")),
        "{status:?}"
    );
    ensure!(h.sim.counters().failed_subscription_refreshes >= 1);
    let classes =
        (vigil_apic::FABRIC_SUBSCRIPTION_CLASSES.len() + vigil_apic::ENDPOINT_CLASSES.len()) as u64;
    ensure!(h.sim.counters().subscriptions_created == 2 * classes);
    // The learn made while the subscription was dead came with the rebuild.
    until("M40 from the rebuild", || {
        lock(&h.sink.events).iter().any(|e| e.addr == mac(0x40))
    })
    .await?;
    h.notify("epmMacEp", vec![local_mac(102, &mac(0x41), "eth1/41")])
        .await?;
    ensure!(h.endpoint(BD, &mac(0x41)).await?.events[0].node == 102);
    h.stop().await?;
    h.replay_matches().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_heartbeat_reconnects() -> Result<()> {
    let sim = fabric_sim().await?;
    let mut h = Harness::start(sim, |c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.heartbeat_timeout = Duration::from_millis(1500);
    })
    .await?;
    h.in_sync(1).await?;
    h.sim.set_heartbeat_fail(true);
    let status = h
        .wait_status("a heartbeat failure", |s| s.failures >= 1)
        .await?;
    ensure!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("heartbeat")),
        "{status:?}"
    );
    h.sim.set_heartbeat_fail(false);
    let status = h.in_sync(2).await?;
    ensure!(status.logins >= 2, "{status:?}");
    h.notify("epmMacEp", vec![local_mac(101, &mac(0x50), "eth1/50")])
        .await?;
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_refreshed_and_an_expired_one_means_a_new_login() -> Result<()> {
    let sim = fabric_sim().await?;
    // Tokens live 2 s unless refreshed; the subscriber refreshes at 1 s.
    sim.set_refresh_timeout(2);
    let mut h = Harness::start(sim, |_| {}).await?;
    h.in_sync(1).await?;
    h.wait_status("three token refreshes", |s| s.token_refreshes >= 3)
        .await?;
    // Subscription refreshes kept working past the token's first 2 s.
    let before = h.sim.counters().subscription_refreshes;
    until("more subscription refreshes", || {
        h.sim.counters().subscription_refreshes > before + 30
    })
    .await?;
    let counters = h.sim.counters();
    ensure!(
        counters.logins == 1 && counters.rejected_tokens == 0,
        "{counters:?}"
    );
    ensure!(h.status.borrow().failures == 0);

    h.sim.expire_tokens();
    let status = h.in_sync(2).await?;
    ensure!(status.logins == 2, "{status:?}");
    ensure!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("403")),
        "{status:?}"
    );
    h.notify("epmMacEp", vec![local_mac(101, &mac(0x60), "eth1/60")])
        .await?;
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_and_retried_with_backoff() -> Result<()> {
    let sim = fabric_sim().await?;
    let mut h = Harness::start_with(sim, "not-the-password", |c| {
        c.reconnect_initial = Duration::from_millis(100);
        c.reconnect_max = Duration::from_millis(400);
    })
    .await?;
    until("six login attempts", || {
        h.sim.counters().login_attempts >= 6
    })
    .await?;
    let status = h.status.borrow().clone();
    let error = status.last_error.clone().unwrap_or_default();
    ensure!(
        error.contains("login")
            && error.contains("401")
            && error.contains("Username or password is incorrect"),
        "{error}"
    );
    ensure!(
        !error.contains("not-the-password"),
        "the password leaked: {error}"
    );
    ensure!(status.logins == 0 && status.builds == 0, "{status:?}");
    let states = h.sink.states();
    ensure!(
        states.contains(&SubscriberState::Reconnecting),
        "{states:?}"
    );
    ensure!(!states.contains(&SubscriberState::InSync), "{states:?}");
    ensure!(h.sim.counters().class_queries == 0);
    // Backoff: 100, 200, 400 ms, then capped at 400 ms.
    let times = h.sim.login_times();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let floor = [100u64, 200, 400, 400, 400];
    for (i, (gap, min)) in gaps.iter().zip(floor).enumerate() {
        ensure!(
            *gap >= Duration::from_millis(min * 9 / 10),
            "gap {i} is {gap:?}, less than the backoff of {min} ms: {gaps:?}"
        );
    }
    ensure!(
        gaps[3] < Duration::from_millis(400 + 5000),
        "the backoff is not capped: {gaps:?}"
    );
    h.stop().await?;
    ensure!(h.sink.event_count() == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_rejected_and_the_subscriber_goes_on() -> Result<()> {
    let sim = fabric_sim().await?;
    let mut h = Harness::start(sim, |c| c.max_message_bytes = 64 << 10).await?;
    h.in_sync(1).await?;
    h.events(18).await?;
    let before = h.sink.event_count();

    ensure!(h.sim.push_raw("{not json at all") == 1);
    ensure!(h.sim.push_raw(r#"{"imdata": 5}"#) == 1);
    ensure!(h.sim.push_raw("[1, 2]") == 1);
    // One bad endpoint object, one bad fabric object, one good learn.
    let mixed = json!({"subscriptionId": ["1"], "imdata": [
        {"epmMacEp": {"attributes": {"dn": "topology/pod-1/node-101/sys/nonsense", "status": "created"}}},
        {"fvBD": {"attributes": {"dn": "uni/tn-t/BD-x", "seg": "not-a-vnid"}}},
        {"epmMacEp": {"attributes": local_mac(103, &mac(0x70), "eth1/70")}},
        {"epmMacEp": {"attributes": {"dn": mac_dn(103, &mac(0x71)), "status": "exploded"}}},
    ]});
    ensure!(h.sim.push_raw(&mixed.to_string()) == 1);
    h.events(before + 1).await?;
    ensure!(h.endpoint(BD, &mac(0x70)).await?.events[0].node == 103);
    until("six rejections", || lock(&h.sink.rejected).len() >= 6).await?;
    ensure!(h.sink.rejections("not_json").len() == 1);
    ensure!(h.sink.rejections("bad_payload").len() == 2);
    ensure!(
        h.sink.rejections("bad_object").len() == 2,
        "{:?}",
        lock(&h.sink.rejected)
    );
    ensure!(h.sink.rejections("bad_fabric_object").len() == 1);
    ensure!(
        lock(&h.sink.rejected).iter().all(|(_, s)| s.len() <= 256),
        "a sample is not bounded"
    );
    ensure!(
        h.status.borrow().failures == 0,
        "garbage must not end the session"
    );

    // An oversized message: rejected; the socket cannot go on, so the
    // session is rebuilt and the subscriber keeps working.
    let huge = format!(
        r#"{{"subscriptionId":["1"],"imdata":[],"pad":"{}"}}"#,
        "x".repeat(100 << 10)
    );
    ensure!(h.sim.push_raw(&huge) == 1);
    let status = h.in_sync(2).await?;
    ensure!(
        h.sink.rejections("message_too_large").len() == 1,
        "{status:?}"
    );
    ensure!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("max_message_bytes")),
        "{status:?}"
    );
    h.notify("epmMacEp", vec![local_mac(101, &mac(0x72), "eth1/72")])
        .await?;
    ensure!(h.endpoint(BD, &mac(0x72)).await?.events[0].node == 101);
    ensure!(h.task.as_ref().is_some_and(|t| !t.is_finished()));
    h.stop().await?;
    h.replay_matches().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_and_buffers_are_bounded() -> Result<()> {
    // Too many objects for one build: every build is refused, none applied
    // past the bound.
    let sim = fabric_sim().await?;
    let mut h = Harness::start(sim, |c| c.max_objects_per_build = 20).await?;
    h.wait_status("two refused builds", |s| s.failures >= 2)
        .await?;
    let status = h.status.borrow().clone();
    ensure!(status.builds == 0, "{status:?}");
    ensure!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("max_objects_per_build")),
        "{status:?}"
    );
    ensure!(!h.sink.states().contains(&SubscriberState::InSync));
    h.stop().await?;

    // Notifications waiting for a build past max_buffered_bytes: the
    // session ends (interrupting the held query), and the next one builds.
    let sim = fabric_sim().await?;
    sim.hold("epmMacEp", 1);
    let mut h = Harness::start(sim, |c| c.max_buffered_bytes = 4096).await?;
    until("the held page to be asked for", || {
        h.sim.queries().contains(&("epmMacEp".to_owned(), 1))
    })
    .await?;
    let pad = "p".repeat(1500);
    for n in 0..3 {
        let mut o = local_mac(105, &mac(0x80 + n), "eth1/8");
        o["descr"] = json!(pad);
        ensure!(h.sim.notify("epmMacEp", vec![o]) == 1);
    }
    let status = h
        .wait_status("a backlog failure", |s| s.failures >= 1)
        .await?;
    ensure!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("max_buffered_bytes")),
        "{status:?}"
    );
    ensure!(status.builds == 0, "{status:?}");
    h.sim.release("epmMacEp", 1);
    h.in_sync(1).await?;
    // The learns came with the rebuild's pages.
    for n in 0..3 {
        ensure!(h.endpoint(BD, &mac(0x80 + n)).await?.events[0].node == 105);
    }
    h.stop().await?;
    h.replay_matches().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apic_that_does_not_answer_is_passed_over_for_the_next() -> Result<()> {
    // A port nobody listens on (bound, then released), then the simulator.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead =
        ApicUrl::parse(&format!("http://{}", closed.local_addr()?)).map_err(|e| anyhow!(e))?;
    drop(closed);
    let sim = fabric_sim().await?;
    let mut h = Harness::start(sim, |c| c.apics.insert(0, dead)).await?;
    let status = h.in_sync(1).await?;
    ensure!(
        status.login_attempts == 2 && status.logins == 1,
        "{status:?}"
    );
    ensure!(status.failures == 0, "{status:?}");
    h.events(18).await?;
    h.stop().await?;
    h.replay_matches().await
}

#[test]
fn a_site_file_entry_is_read_and_checked() -> Result<()> {
    let text = r#"
        name = "fab1"
        apic = ["https://apic1.example.net", "https://apic2.example.net:8443"]
        username = "vigil-ro"
        password = "from-the-file"
        page_size = 5000
        subscription_refresh = "20s"
    "#;
    let raw: vigil_apic::RawApicConfig = toml::from_str(text)?;
    let config = raw
        .validate(Path::new("/etc/vigil"))
        .map_err(|e| anyhow!("{e}"))?;
    ensure!(config.apics.len() == 2 && config.page_size == 5000);
    ensure!(config.apics[1].ws_base() == "wss://apic2.example.net:8443");
    ensure!(config.tls_verify && config.record_to.is_none());
    ensure!(!format!("{config:?}").contains("from-the-file"));
    let bad: vigil_apic::RawApicConfig =
        toml::from_str(&text.replace("page_size = 5000", "page_size = 0"))?;
    let e = bad
        .validate(Path::new("."))
        .err()
        .context("page_size 0 accepted")?;
    ensure!(
        e.key == "page_size" && e.to_string().contains("\"fab1\""),
        "{e}"
    );
    Ok(())
}
