//! EPT's scale (issue #14): the initial build of a fabric of 400 leaves with
//! 4.18 million per-node endpoint records (100,000 unique endpoints). Target:
//! loaded in under 60 s, held in under 2 GiB.
//!
//! The fabric: 400 leaves (nodes 101..=500) in 200 vpc pairs, a tunnel from
//! every leaf to every other leaf and to every pair's anycast TEP, 10 VRFs,
//! 100 BDs, 100 EPGs. 50,000 hosts, each a MAC (scope: its BD) and an IPv4
//! address (scope: its VRF) = 100,000 unique endpoints. Half the hosts sit
//! on a vpc (learned `local,vpc-attached` on both leaves of the pair, on
//! `po<n>`), half on one leaf's `eth1/<n>`; each host's MAC and IP are also
//! known remotely (over a tunnel) on 40 or 41 other leaves spread over the
//! fabric (a pseudo-random stride per host), so every
//! endpoint has 41.8 per-node records on average: 4.18 million in all. The
//! build is APIC's: class queries of `epmMacEp`, then `epmIpEp`, then
//! `epmRsMacEpToIpEpAtt` (the rewrite of each local IP), each in pages of
//! 10,000 objects (`{"totalCount":..,"imdata":[..]}`, full attribute sets),
//! in DN order (node by node), generated before the clock starts into a
//! file (one page per line) and read back during the build as they would
//! arrive from the APIC.
//!
//! Each page is parsed ([`EpmParser`], EPT's DN grammar) and its events
//! dispatched in one batch per worker to 2 [`HistoryWorker`]s (this
//! machine has 2 cores) with their [`WriteBehind`] caches; the build ends
//! with [`Dispatcher::flush`], so everything counted is durable. Two runs,
//! each in a process of its own so peak RSS (`VmHWM`) is its own:
//!
//! - `sqlite`: into the embedded store (`SqliteHistory`, a fresh file);
//! - `memory`: held in the workers' memory only (a store that keeps
//!   nothing, the cache bound above the record count): what the tracker
//!   needs to hold the whole fabric in RAM.
//!
//! Scale by environment: `VIGIL_EPT_ENDPOINTS` (unique endpoints, default
//! 100000; records stay 41.8 per endpoint), `VIGIL_EPT_LEAVES` (default
//! 400), `VIGIL_EPT_MODE` (`sqlite`, `memory` or `both`, default both),
//! `VIGIL_EPT_CACHE_RECORDS` (the write-behind bound per worker, default
//! [`WriteBehindConfig`]'s).
//!
//! Run: `cargo bench -p vigil-store --bench ept_scale` (prints figures; no
//! timed assertions). Quick: `VIGIL_EPT_ENDPOINTS=10000 cargo bench ...`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_endpoints::apic::{ApicObject, EpmParser};
use vigil_endpoints::dispatch::{DispatchConfig, Dispatcher};
use vigil_endpoints::fabric::{Fabric, Tunnel, vpc_node_id};
use vigil_endpoints::model::{EndpointKey, EndpointRecord, EpmEvent, HistoryRecord, Settings};
use vigil_endpoints::store::{EndpointState, HistoryStore, StoreError};
use vigil_endpoints::write_behind::{HistoryWorker, WriteBehind, WriteBehindConfig};
use vigil_store::endpoints::SqliteHistory;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FABRIC: &str = "fab1";
const OVERLAY: u32 = 16_777_199;
const PAGE: usize = 10_000;
const BDS: usize = 100;
const VRFS: usize = 10;
const PORT_CHANNELS: usize = 16;

#[derive(Clone, Copy)]
struct Scale {
    hosts: usize,
    leaves: usize,
}

impl Scale {
    fn from_env() -> Scale {
        let get = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let endpoints = get("VIGIL_EPT_ENDPOINTS", 100_000).max(2);
        let leaves = (get("VIGIL_EPT_LEAVES", 400).max(46) / 2) * 2;
        Scale {
            hosts: endpoints / 2,
            leaves,
        }
    }
    fn pairs(&self) -> usize {
        self.leaves / 2
    }
}

fn node_id(leaf: usize) -> u32 {
    101 + leaf as u32
}

fn bd_vnid(h: usize) -> u32 {
    15_000_000 + (h % BDS) as u32
}

fn vrf_vnid(h: usize) -> u32 {
    2_000_000 + (h % BDS % VRFS) as u32
}

fn pctag(h: usize) -> i64 {
    32_770 + (h % BDS) as i64
}

fn mac(h: usize) -> String {
    format!(
        "00:50:56:{:02X}:{:02X}:{:02X}",
        (h >> 16) & 0xff,
        (h >> 8) & 0xff,
        h & 0xff
    )
}

fn ip(h: usize) -> String {
    format!("10.{}.{}.{}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff)
}

/// How host `h` is seen on `leaf`.
enum Seen {
    Local { intf: String, vpc: bool },
    Remote { tunnel: String },
    No,
}

fn pair_of(h: usize, scale: Scale) -> usize {
    h % scale.pairs()
}

fn on_vpc(h: usize) -> bool {
    h.is_multiple_of(2)
}

/// Remote leaves of `h`: 40, or 41 for 3 hosts in 10 (40.3, plus 1.5
/// local on average: 41.8 records per endpoint), fewer on a small fabric.
fn remotes(h: usize, scale: Scale) -> usize {
    let r = if (h / scale.pairs()) % 10 < 3 { 41 } else { 40 };
    r.min(scale.leaves - 3)
}

/// A stride coprime with `leaves` for host `h` (pseudo-random), and its
/// inverse modulo `leaves`.
fn stride(h: usize, leaves: usize) -> (usize, usize) {
    let mut x = (h as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    loop {
        let s = 1 + (x as usize) % (leaves - 1);
        if let Some(inv) = (1..leaves).find(|i| (s * i) % leaves == 1) {
            return (s, inv);
        }
        x += 1;
    }
}

fn seen(h: usize, leaf: usize, scale: Scale, inverse: usize) -> Seen {
    let q = pair_of(h, scale);
    let (a, b) = (2 * q, 2 * q + 1);
    let vpc = on_vpc(h);
    let local_leaf = if vpc {
        None
    } else {
        Some(a + (h / scale.pairs()) % 2)
    };
    if leaf == a || leaf == b {
        return match (vpc, local_leaf) {
            (true, _) => Seen::Local {
                intf: format!("po{}", 1 + h % PORT_CHANNELS),
                vpc: true,
            },
            (false, Some(l)) if l == leaf => Seen::Local {
                intf: format!("eth1/{}", 1 + h % 48),
                vpc: false,
            },
            _ => Seen::No,
        };
    }
    // The remote leaves are b + k·stride (mod leaves) for k = 1..=r, with a
    // pseudo-random stride per host: spread over the whole fabric, so the
    // node-by-node build order touches every endpoint from start to end of
    // each class (no locality for the caches to lean on). Leaf a, when it
    // falls in the range, is skipped and one more k taken.
    let position = |n: usize| ((n + scale.leaves - b) % scale.leaves) * inverse % scale.leaves;
    let r = remotes(h, scale);
    let r = if (1..=r).contains(&position(a)) {
        r + 1
    } else {
        r
    };
    if !(1..=r).contains(&position(leaf)) {
        return Seen::No;
    }
    let tunnel = match local_leaf {
        None => format!("tunnel{}", 1000 + q),
        Some(l) => format!("tunnel{}", 1 + l),
    };
    Seen::Remote { tunnel }
}

fn fabric(scale: Scale) -> Fabric {
    let mut f = Fabric::new(FABRIC, OVERLAY);
    for leaf in 0..scale.leaves {
        f.add_node(node_id(leaf), 1, "leaf");
    }
    for q in 0..scale.pairs() {
        let (a, b) = (node_id(2 * q), node_id(2 * q + 1));
        f.add_vpc_pair(a, b);
        for k in 0..PORT_CHANNELS {
            let vpc = (q * PORT_CHANNELS + k + 1) as u32;
            let name = format!("vpc-policy-{q}-{k}");
            f.add_port_channel(a, &format!("po{}", k + 1), &name, vpc);
            f.add_port_channel(b, &format!("po{}", k + 1), &name, vpc);
        }
    }
    for leaf in 0..scale.leaves {
        for other in 0..scale.leaves {
            if other != leaf {
                f.add_tunnel(Tunnel {
                    node: node_id(leaf),
                    intf: format!("tunnel{}", 1 + other),
                    dst: format!("10.0.{}.{}", other / 256, other % 256),
                    remote: node_id(other),
                    encap: "ivxlan".into(),
                    flags: "physical".into(),
                });
            }
        }
        for q in 0..scale.pairs() {
            f.add_tunnel(Tunnel {
                node: node_id(leaf),
                intf: format!("tunnel{}", 1000 + q),
                dst: format!("10.1.{}.{}", q / 256, q % 256),
                remote: vpc_node_id(node_id(2 * q), node_id(2 * q + 1)).unwrap_or(0),
                encap: "ivxlan".into(),
                flags: "physical".into(),
            });
        }
    }
    for v in 0..VRFS {
        f.add_vnid(
            2_000_000 + v as u32,
            &format!("uni/tn-t{v}/ctx-vrf{v}"),
            false,
            "",
        );
    }
    for b in 0..BDS {
        let v = b % VRFS;
        let bd = 15_000_000 + b as u32;
        f.add_vnid(bd, &format!("uni/tn-t{v}/BD-bd{b}"), false, "");
        f.add_epg(
            2_000_000 + v as u32,
            32_770 + b as i64,
            &format!("uni/tn-t{v}/ap-app/epg-epg{b}"),
            bd,
        );
    }
    f
}

#[derive(Clone, Copy, PartialEq)]
enum Class {
    Mac,
    Ip,
    Rs,
}

fn object(out: &mut String, class: Class, h: usize, leaf: usize, how: &Seen) {
    let node = node_id(leaf);
    let (vrf, bd, vlan) = (vrf_vnid(h), bd_vnid(h), 100 + h % BDS);
    let (m, i) = (mac(h), ip(h));
    let (flags, intf, dn) = match (class, how) {
        (Class::Mac, Seen::Local { intf, vpc }) => (
            if *vpc { "local,vpc-attached" } else { "local" },
            intf.as_str(),
            format!(
                "topology/pod-1/node-{node}/sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/vlan-[vlan-{vlan}]/db-ep/mac-{m}"
            ),
        ),
        (Class::Mac, Seen::Remote { tunnel }) => (
            "",
            tunnel.as_str(),
            format!(
                "topology/pod-1/node-{node}/sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/db-ep/mac-{m}"
            ),
        ),
        (Class::Ip, Seen::Local { intf, vpc }) => (
            if *vpc { "local,vpc-attached" } else { "local" },
            intf.as_str(),
            format!(
                "topology/pod-1/node-{node}/sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/vlan-[vlan-{vlan}]/db-ep/ip-[{i}]"
            ),
        ),
        (Class::Ip, Seen::Remote { tunnel }) => (
            "",
            tunnel.as_str(),
            format!("topology/pod-1/node-{node}/sys/ctx-[vxlan-{vrf}]/db-ep/ip-[{i}]"),
        ),
        (Class::Rs, Seen::Local { .. }) => {
            let _ = write!(
                out,
                r#"{{"epmRsMacEpToIpEpAtt":{{"attributes":{{"childAction":"","dn":"topology/pod-1/node-{node}/sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/vlan-[vlan-{vlan}]/db-ep/mac-{m}/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/vlan-[vlan-{vlan}]/db-ep/ip-[{i}]]","forceResolve":"yes","lcOwn":"local","modTs":"never","rType":"mo","state":"formed","stateQual":"none","status":"","tCl":"epmIpEp","tDn":"sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/vlan-[vlan-{vlan}]/db-ep/ip-[{i}]","tType":"mo"}}}}}}"#
            );
            return;
        }
        _ => return,
    };
    let (class_name, addr) = match class {
        Class::Mac => ("epmMacEp", m.as_str()),
        _ => ("epmIpEp", i.as_str()),
    };
    let _ = write!(
        out,
        r#"{{"{class_name}":{{"attributes":{{"addr":"{addr}","childAction":"","createTs":"2026-12-01T10:00:00.000+00:00","dn":"{dn}","flags":"{flags}","ifId":"{intf}","lcC":"learned","lcOwn":"local","modTs":"never","monPolDn":"","name":"","nameAlias":"","pcTag":"{pctag}","status":""}}}}}}"#,
        pctag = pctag(h),
    );
}

/// The class queries' pages, in APIC order, to `send`. Returns the number
/// of objects and the time spent generating.
fn generate(scale: Scale, send: std::sync::mpsc::SyncSender<String>) -> (usize, Duration) {
    let mut busy = Duration::ZERO;
    let mut total = 0usize;
    let mut page = String::new();
    let mut in_page = 0usize;
    let mut page_no = 0u64;
    let mut started = Instant::now();
    let inverses: Vec<usize> = (0..scale.hosts)
        .map(|h| stride(h, scale.leaves).1)
        .collect();
    for class in [Class::Mac, Class::Ip, Class::Rs] {
        for leaf in 0..scale.leaves {
            for (h, &inverse) in inverses.iter().enumerate() {
                let how = seen(h, leaf, scale, inverse);
                if matches!(how, Seen::No)
                    || (class == Class::Rs && !matches!(how, Seen::Local { .. }))
                {
                    continue;
                }
                if in_page == 0 {
                    let _ = write!(
                        page,
                        r#"{{"ts":{ts},"totalCount":"{PAGE}","imdata":["#,
                        ts = 1_765_000_000.0 + page_no as f64 * 0.5,
                    );
                } else {
                    page.push(',');
                }
                object(&mut page, class, h, leaf, &how);
                in_page += 1;
                total += 1;
                if in_page == PAGE {
                    page.push_str("]}");
                    busy += started.elapsed();
                    page_no += 1;
                    in_page = 0;
                    if send.send(std::mem::take(&mut page)).is_err() {
                        return (total, busy);
                    }
                    started = Instant::now();
                }
            }
        }
    }
    if in_page > 0 {
        page.push_str("]}");
        busy += started.elapsed();
        let _ = send.send(page);
    }
    (total, busy)
}

/// A store that keeps nothing: the records live in the workers' caches only.
struct Discard;

#[async_trait::async_trait]
impl HistoryStore for Discard {
    async fn histories(&self, _: &EndpointKey) -> Result<BTreeMap<u32, HistoryRecord>, StoreError> {
        Ok(BTreeMap::new())
    }
    async fn put_history(&self, _: HistoryRecord) -> Result<(), StoreError> {
        Ok(())
    }
    async fn endpoint(&self, _: &EndpointKey) -> Result<Option<EndpointRecord>, StoreError> {
        Ok(None)
    }
    async fn put_endpoint(&self, _: EndpointRecord) -> Result<(), StoreError> {
        Ok(())
    }
    async fn load_many(&self, keys: &[EndpointKey]) -> Result<Vec<EndpointState>, StoreError> {
        Ok(keys.iter().map(|_| EndpointState::default()).collect())
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn run(mode: &str, scale: Scale) {
    let settings = Settings::default();
    let fabric = Arc::new(fabric(scale));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vigil.db");
    let default_cache = WriteBehindConfig::default().max_records;
    let cache_records = std::env::var("VIGIL_EPT_CACHE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cache);
    let store: Arc<dyn HistoryStore> = match mode {
        "sqlite" => Arc::new(SqliteHistory::open(&path).expect("open sqlite")),
        _ => Arc::new(Discard),
    };
    // The build is acknowledged as a whole: no background writes, records
    // written when the bound evicts them and by the closing flush.
    let config = WriteBehindConfig::initial_build(if mode == "memory" {
        vigil_endpoints::write_behind::MAX_RECORDS
    } else {
        cache_records
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The APIC's responses, generated before the clock starts (the APIC's
    // work, not vigil's) into a file, one page per line, read back during
    // the build as they would arrive from the network.
    let pages_path = dir.path().join("pages.jsonl");
    let (objects, generate_busy) = {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(2);
        let generator = std::thread::spawn(move || generate(scale, tx));
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(&pages_path).expect("pages file"));
        for page in rx {
            use std::io::Write as _;
            out.write_all(page.as_bytes()).expect("write pages");
            out.write_all(b"\n").expect("write pages");
        }
        drop(out);
        generator.join().expect("generator")
    };
    let rss_before = status_kib("VmRSS:");
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(2);
    let reader_path = pages_path.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let file = std::io::BufReader::new(std::fs::File::open(reader_path).expect("pages"));
        for line in file.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let parser = EpmParser::new(FABRIC, OVERLAY);
    let mut parse_busy = Duration::ZERO;
    let mut events = 0u64;
    let mut rejected = 0u64;
    let (handled, failed, flushed, stats) = runtime.block_on(async {
        let dispatcher = Dispatcher::start(
            DispatchConfig {
                workers: 2,
                queue_capacity: 8,
            },
            |_| {
                let fabric = fabric.clone();
                let cache = WriteBehind::new(store.clone(), config).expect("config");
                HistoryWorker::new(cache, settings, move |_: &str| fabric.clone())
            },
        )
        .expect("dispatcher");
        // Pages are parsed on the blocking pool, two at a time, and their
        // events dispatched in page order (the subscriber can do the same:
        // parsing is per page, order matters only at dispatch).
        type Parsed = (Vec<EpmEvent>, u64, Duration);
        let mut parsing: std::collections::VecDeque<tokio::task::JoinHandle<Parsed>> =
            std::collections::VecDeque::new();
        let mut pages = rx.into_iter();
        loop {
            // The main thread is not a runtime worker: waiting here blocks no task.
            let next = if parsing.len() < 2 {
                pages.next()
            } else {
                None
            };
            let Some(page) = next else {
                let Some(task) = parsing.pop_front() else {
                    break;
                };
                let parsed: Parsed = task.await.expect("parse task");
                let (batch, bad, took) = parsed;
                rejected += bad;
                parse_busy += took;
                events += batch.len() as u64;
                let mut batch = batch.into_iter().peekable();
                while batch.peek().is_some() {
                    let part: Vec<_> = batch.by_ref().take(1000).collect();
                    dispatcher.dispatch_batch(part).await.expect("dispatch");
                }
                continue;
            };
            let parser = parser.clone();
            parsing.push_back(tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let mut bad = 0u64;
                let mut batch = Vec::new();
                match parser.parse_payload(&page, 0.0) {
                    Ok(payload) => {
                        drop(page);
                        batch.reserve(payload.objects.len());
                        for object in payload.objects {
                            match object {
                                Ok(ApicObject::Endpoint(ev)) => batch.push(ev),
                                _ => bad += 1,
                            }
                        }
                    }
                    Err(_) => bad += 1,
                }
                (batch, bad, t.elapsed())
            }));
        }
        let flushed = dispatcher.flush().await;
        let workers = dispatcher.shutdown().await.expect("shutdown");
        let handled: u64 = workers.iter().map(|w| w.handled()).sum();
        let failed: u64 = workers.iter().map(|w| w.failed()).sum();
        let stats: Vec<_> = workers.iter().map(|w| w.cache().stats()).collect();
        (handled, failed, flushed, stats)
    });
    let elapsed = started.elapsed();
    let _ = reader.join();
    let _ = std::fs::remove_file(&pages_path);
    let peak = status_kib("VmHWM:");
    let records: usize = stats.iter().map(|s| s.records - s.endpoints).sum();
    let endpoints: usize = stats.iter().map(|s| s.endpoints).sum();
    println!(
        "ept_scale {mode}: {leaves} leaves, {objects} APIC objects -> {events} events, {handled} into history ({failed} failed, {rejected} rejected), flush {flushed:?}",
        leaves = scale.leaves,
    );
    println!(
        "  held: {endpoints} endpoints, {records} per-node records; loads {loads}, evictions {evictions}, batches {batches}, records written {written}",
        loads = stats.iter().map(|s| s.loads).sum::<u64>(),
        evictions = stats.iter().map(|s| s.evictions).sum::<u64>(),
        batches = stats.iter().map(|s| s.batches).sum::<u64>(),
        written = stats.iter().map(|s| s.records_written).sum::<u64>(),
    );
    println!(
        "  initial build: {:.1} s wall ({:.0} events/s); parsing {:.1} s of CPU (on the blocking pool, 2 pages at a time); generating the APIC pages beforehand took {:.1} s",
        elapsed.as_secs_f64(),
        handled as f64 / elapsed.as_secs_f64(),
        parse_busy.as_secs_f64(),
        generate_busy.as_secs_f64(),
    );
    println!(
        "  peak RSS (VmHWM) {:.2} GiB; RSS before the build {:.0} MiB (fabric model, runtime){}",
        peak as f64 / (1024.0 * 1024.0),
        rss_before as f64 / 1024.0,
        if mode == "sqlite" {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
                + std::fs::metadata(path.with_extension("db-wal"))
                    .map(|m| m.len())
                    .unwrap_or(0);
            format!(
                "; database {:.2} GiB; write-behind bound {} records per worker",
                size as f64 / (1u64 << 30) as f64,
                cache_records
            )
        } else {
            String::new()
        }
    );
}

fn main() {
    let scale = Scale::from_env();
    let mode = std::env::var("VIGIL_EPT_MODE").unwrap_or_else(|_| "both".into());
    if mode == "both" {
        // Each run in a process of its own, so each peak RSS is its own.
        let exe = std::env::current_exe().expect("current exe");
        for mode in ["memory", "sqlite"] {
            let status = std::process::Command::new(&exe)
                .args(std::env::args().skip(1))
                .env("VIGIL_EPT_MODE", mode)
                .status()
                .expect("run a child");
            if !status.success() {
                println!("ept_scale {mode}: failed ({status})");
            }
        }
        return;
    }
    run(&mode, scale);
}
