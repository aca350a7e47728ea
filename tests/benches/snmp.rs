//! SNMP interface polling, vigil next to Debian's `prometheus-snmp-exporter`:
//! `cargo bench -p vigil-tests --bench snmp`.
//!
//! Both collectors poll the same Debian snmpd agents (v2c, community
//! `public`, GETBULK with 25 repetitions) in the same run, with the same
//! number of polls in flight (by default one per agent; vigil never sends a
//! device more than one request at a time anyway):
//!
//! * **vigil**: one [`Sandbox`] running the bundled `snmp-interface-polling`
//!   plugin in a fresh wasm instance per poll on a 2-worker tokio runtime,
//!   with the `interface` enrichment preloaded as the scheduler would (so
//!   no ifStackTable walk). It walks ifTable, ifXTable and dot3StatsTable
//!   and returns one Panoptes metrics group per interface.
//! * **snmp_exporter 0.21**: `/snmp?module=if_mib` scraped over HTTP/1.0
//!   with its upstream `if_mib` module (walks `interfaces` and ifXTable,
//!   gets sysUpTime; ifAlias, ifDescr and ifName lookups as labels), which
//!   Debian does not ship (its `/etc/prometheus/snmp.yml` has no modules), so
//!   the bench writes it. The response is Prometheus text, not gzipped.
//!
//! Figures per collector: polls, wall time, device polls and interface
//! walks per second, varbinds per second, and CPU per device poll: vigil's
//! is this process's own CPU time (`/proc/self/stat`), the exporter's is its
//! process's; the agents are separate processes and counted apart. Then the
//! exporter/vigil CPU ratio (the target is at least 2x) and what 10,000
//! devices x 50 interfaces a minute would cost vigil out of 2 cores.
//!
//! # Devices with 50 interfaces
//!
//! As root, the bench makes the network namespace `vigil-bench-snmp` holding
//! `lo` and veth pairs (plus a bridge for an odd count), 50 interfaces in
//! all by default, re-runs itself inside it with `ip netns exec`, where the agents,
//! the exporter and vigil all talk over that namespace's own loopback. Each
//! snmpd there reports those 50 interfaces. The parent removes the namespace
//! (killing anything left in it) when the child ends, and first removes any
//! leftover of a run that was killed. Without root (or with
//! `VIGIL_BENCH_SNMP_INTERFACES=0`) the agents report the machine's own
//! interfaces and the projection scales per interface.
//!
//! Knobs: `VIGIL_BENCH_SNMP_AGENTS` (default 8), `VIGIL_BENCH_SNMP_POLLS`
//! per collector (default 2000), `VIGIL_BENCH_SNMP_CONCURRENCY` (default:
//! the number of agents), `VIGIL_BENCH_SNMP_INTERFACES` per device (default
//! 50; 0 = no namespace).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use vigil_host::model::{EnrichmentGroup, Resource};
use vigil_host::plugin::PluginManifest;
use vigil_host::sandbox::{
    PreparedPlugin, RunContext, RunInput, RunOutcome, RunOutput, Sandbox, SandboxSettings,
};
use vigil_host::site::SiteConfig;
use vigil_tests::snmp_servers::{Snmpd, SnmpdConfig, snmpbulkwalk};
use vigil_tests::{PluginFile, artifacts};

// The same allocator as the `vigil` binary, so figures match production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The namespace the agents' interfaces live in.
const NETNS: &str = "vigil-bench-snmp";
/// Set in the environment of the copy of the bench running inside [`NETNS`].
const IN_NETNS: &str = "VIGIL_BENCH_SNMP_IN_NETNS";
const COMMUNITY: &str = "public";
const MAX_REPETITIONS: u32 = 25;
/// ifIndex, the column counted to know how many interfaces a device has.
const IF_INDEX: &str = "1.3.6.1.2.1.2.2.1.1";
/// The target load and machine.
const TARGET_DEVICES_PER_MINUTE: f64 = 10_000.0;
const TARGET_INTERFACES: f64 = 50.0;
const CORES: f64 = 2.0;
const TARGET_CPU_RATIO: f64 = 2.0;

struct Knobs {
    agents: usize,
    polls: usize,
    concurrency: usize,
    interfaces: usize,
    warm_up: usize,
}

fn knob(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        _ => default,
    }
}

impl Knobs {
    fn from_env() -> Knobs {
        let agents = knob("VIGIL_BENCH_SNMP_AGENTS", 8).max(1);
        let polls = knob("VIGIL_BENCH_SNMP_POLLS", 2000).max(1);
        let concurrency = knob("VIGIL_BENCH_SNMP_CONCURRENCY", agents).max(1);
        let interfaces = knob("VIGIL_BENCH_SNMP_INTERFACES", 50);
        Knobs {
            agents,
            polls,
            concurrency,
            interfaces,
            warm_up: (polls / 10).max(4 * concurrency),
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a plain `cargo test` run passes nothing
    // and should not spend time here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let knobs = Knobs::from_env();
    if std::env::var_os(IN_NETNS).is_some() {
        bench(&knobs, Some(NETNS));
        return;
    }
    if knobs.interfaces == 0 {
        println!("VIGIL_BENCH_SNMP_INTERFACES=0: the agents report this machine's own interfaces");
        bench(&knobs, None);
        return;
    }
    let namespace = match Namespace::create(knobs.interfaces) {
        Ok(namespace) => namespace,
        Err(e) => {
            println!(
                "cannot make network namespace {NETNS} ({e}); the agents report this machine's own interfaces instead"
            );
            bench(&knobs, None);
            return;
        }
    };
    let status = namespace.run_self();
    drop(namespace);
    if !status.success() {
        eprintln!("the bench inside {NETNS} failed ({status})");
        std::process::exit(status.code().unwrap_or(1));
    }
}

/// The network namespace with the devices' interfaces; removed on drop.
struct Namespace;

impl Namespace {
    /// Removes a leftover namespace of the same name, then makes a fresh one
    /// holding `lo` (up) and `interfaces - 1` more, all up: veth pairs with
    /// both ends inside, and a bridge when the count is odd.
    fn create(interfaces: usize) -> Result<Namespace, String> {
        Namespace::remove();
        ip(&["netns", "add", NETNS], None)?;
        let namespace = Namespace;
        let mut batch = String::from("link set lo up\n");
        let others = interfaces.saturating_sub(1);
        for pair in 0..others / 2 {
            let _ = writeln!(
                batch,
                "link add va{pair} type veth peer name vb{pair}\nlink set va{pair} up\nlink set vb{pair} up"
            );
        }
        if others % 2 == 1 {
            batch.push_str("link add br0 type bridge\nlink set br0 up\n");
        }
        ip(&["-n", NETNS, "-batch", "-"], Some(&batch))?;
        Ok(namespace)
    }

    /// Runs this bench again, with the same arguments, inside the namespace.
    fn run_self(&self) -> std::process::ExitStatus {
        let exe = std::env::current_exe().expect("the path of the running bench");
        Command::new("ip")
            .args(["netns", "exec", NETNS])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(IN_NETNS, "1")
            .status()
            .expect("running `ip netns exec` (iproute2)")
    }

    /// Kills whatever still runs in the namespace (only this bench starts
    /// processes there) and deletes it. Quiet when it does not exist.
    fn remove() {
        let listed = Command::new("ip").args(["netns", "list"]).output();
        let exists = listed.is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line.split_whitespace().next() == Some(NETNS))
        });
        if !exists {
            return;
        }
        if let Ok(out) = Command::new("ip").args(["netns", "pids", NETNS]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if pid.parse::<u32>().is_ok() {
                    let _ = Command::new("kill")
                        .args(["-KILL", pid])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        if let Err(e) = ip(&["netns", "delete", NETNS], None) {
            eprintln!("could not delete network namespace {NETNS}: {e}");
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        Namespace::remove();
    }
}

/// Runs `ip ARGS` (with `input` on stdin); its stderr on failure.
fn ip(args: &[&str], input: Option<&str>) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running ip (iproute2): {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing to ip: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

// ---------------------------------------------------------------------------
// CPU accounting

/// Clock ticks per second of `/proc/*/stat` and `/proc/stat`.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .filter(|&ticks: &f64| ticks > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in ticks.
fn process_ticks(pid: &str) -> u64 {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    // The fields after the command name, which may hold spaces and ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let field = |i: usize| -> u64 {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("{path}: no field {}", i + 3))
    };
    field(11) + field(12)
}

/// (busy, total) ticks of the whole machine from `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("reading /proc/stat");
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .expect("/proc/stat has a cpu line");
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU counters of everything involved, at one instant.
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    own: u64,
    exporter: u64,
    agents: u64,
    machine_busy: u64,
    machine_total: u64,
}

struct Probe {
    ticks_per_second: f64,
    exporter_pid: String,
    agent_pids: Vec<String>,
}

impl Probe {
    fn snapshot(&self) -> Snapshot {
        let (machine_busy, machine_total) = machine_ticks();
        Snapshot {
            at: Instant::now(),
            own: process_ticks("self"),
            exporter: process_ticks(&self.exporter_pid),
            agents: self.agent_pids.iter().map(|pid| process_ticks(pid)).sum(),
            machine_busy,
            machine_total,
        }
    }
}

/// What one collector's measured phase did.
struct Phase {
    name: String,
    polls: usize,
    wall: Duration,
    /// The collector's own CPU seconds.
    cpu: f64,
    /// The bench process's CPU seconds when it is not the collector (the
    /// HTTP client scraping the exporter).
    client_cpu: f64,
    agents_cpu: f64,
    /// Share of the machine's CPUs busy (anything, this run or not).
    machine_busy: f64,
    varbinds: u64,
    requests: u64,
    /// Metrics groups (vigil) or exposition lines (exporter) produced.
    items: u64,
    bytes: u64,
    latencies: Vec<Duration>,
}

impl Phase {
    fn cpu_per_poll(&self) -> f64 {
        self.cpu / self.polls as f64
    }

    fn rate(&self, count: f64) -> f64 {
        count / self.wall.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// Runs `work` between two snapshots and fills in the CPU figures.
fn measured(
    probe: &Probe,
    name: String,
    polls: usize,
    collector_is_self: bool,
    work: impl FnOnce() -> Tally,
) -> Phase {
    let before = probe.snapshot();
    let tally = work();
    let after = probe.snapshot();
    let seconds = |ticks: u64| ticks as f64 / probe.ticks_per_second;
    let own = seconds(after.own - before.own);
    let exporter = seconds(after.exporter - before.exporter);
    let busy = (after.machine_busy - before.machine_busy) as f64;
    let total = (after.machine_total - before.machine_total).max(1) as f64;
    Phase {
        name,
        polls,
        wall: after.at - before.at,
        cpu: if collector_is_self { own } else { exporter },
        client_cpu: if collector_is_self { 0.0 } else { own },
        agents_cpu: seconds(after.agents - before.agents),
        machine_busy: busy / total,
        varbinds: tally.varbinds,
        requests: tally.requests,
        items: tally.items,
        bytes: tally.bytes,
        latencies: tally.latencies,
    }
}

#[derive(Default)]
struct Tally {
    varbinds: u64,
    requests: u64,
    items: u64,
    bytes: u64,
    latencies: Vec<Duration>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.varbinds += other.varbinds;
        self.requests += other.requests;
        self.items += other.items;
        self.bytes += other.bytes;
        self.latencies.extend(other.latencies);
    }
}

// ---------------------------------------------------------------------------
// vigil

struct Vigil {
    _dir: tempfile::TempDir,
    sandbox: Arc<Sandbox>,
    poller: PreparedPlugin,
    /// Per agent: the resource and its cached `interface` enrichment.
    devices: Vec<(Resource, Vec<EnrichmentGroup>)>,
}

impl Vigil {
    fn new(runtime: &tokio::runtime::Runtime, endpoints: &[String]) -> Vigil {
        let dir = tempfile::tempdir().expect("tempdir for the site");
        let site_text = format!(
            "[site]\nname = \"bench\"\n[plugins]\ncache_dir = \"cache\"\n\
             [capabilities]\nallowed = [\"snmp\"]\n\
             [snmp]\ntimeout = \"2s\"\nretries = 1\nmax_repetitions = {MAX_REPETITIONS}\n\
             [[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"2c\"\ncommunity = \"{COMMUNITY}\"\n"
        );
        let site_path = dir.path().join("site.toml");
        std::fs::write(&site_path, site_text).expect("writing site.toml");
        let site = SiteConfig::load(&site_path).expect("site config");
        let sandbox = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");
        let prepare = |name: &str, kind: &str, module: &str, preload: bool| {
            let mut file = PluginFile::new(name, kind, module)
                .set("capabilities", "snmp", "yes")
                .set("snmp", "max_repetitions", &MAX_REPETITIONS.to_string())
                .set("sandbox", "deadline", "30s");
            if preload {
                file = file.set("enrichment", "preload", "self:interface");
            }
            let path = file.write(dir.path(), name);
            let manifest = PluginManifest::load(&path, &site.plugin_policy())
                .unwrap_or_else(|e| panic!("{name} plugin file: {e}"));
            sandbox
                .prepare(Arc::new(manifest))
                .unwrap_or_else(|e| panic!("preparing {name}: {e:#}"))
        };
        let enricher = prepare(
            "snmp_interface_enrichment",
            "enrichment",
            artifacts::SNMP_INTERFACE_ENRICHMENT,
            false,
        );
        let poller = prepare(
            "snmp_interface_polling",
            "polling",
            artifacts::SNMP_INTERFACE_POLLING,
            true,
        );
        // The enrichment the scheduler would have cached for each device.
        let devices = endpoints
            .iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let resource = Resource::named(&format!("agent-{i}"), endpoint);
                let report = runtime.block_on(sandbox.run(
                    &enricher,
                    RunInput::Enrich(resource.clone().into()),
                    RunContext::new(SystemTime::now(), Some(resource.id.clone())),
                ));
                let groups = match report.outcome {
                    RunOutcome::Ok(RunOutput::Enrichments(groups)) => groups,
                    other => panic!("enrichment of {endpoint}: {other} {:?}", report.log),
                };
                (resource, groups)
            })
            .collect();
        Vigil {
            _dir: dir,
            sandbox: Arc::new(sandbox),
            poller,
            devices,
        }
    }

    /// `polls` polls, `concurrency` at a time; task `t` polls agent
    /// `t % agents`. Every poll must return one group per interface.
    fn run(
        &self,
        runtime: &tokio::runtime::Runtime,
        polls: usize,
        concurrency: usize,
        interfaces: usize,
    ) -> Tally {
        let next = Arc::new(AtomicUsize::new(0));
        let devices = Arc::new(self.devices.clone());
        runtime.block_on(async {
            let tasks: Vec<_> = (0..concurrency)
                .map(|task| {
                    let sandbox = self.sandbox.clone();
                    let poller = self.poller.clone();
                    let devices = devices.clone();
                    let next = next.clone();
                    tokio::spawn(async move {
                        let (resource, enrichments) = &devices[task % devices.len()];
                        let mut tally = Tally::default();
                        while next.fetch_add(1, Ordering::Relaxed) < polls {
                            let started = Instant::now();
                            let mut context =
                                RunContext::new(SystemTime::now(), Some(resource.id.clone()));
                            context.enrichments = enrichments.clone();
                            let report = sandbox
                                .run(&poller, RunInput::Poll(resource.clone().into()), context)
                                .await;
                            tally.latencies.push(started.elapsed());
                            let groups = match &report.outcome {
                                RunOutcome::Ok(RunOutput::Metrics(groups)) => groups.len(),
                                other => panic!(
                                    "vigil poll of {}: {other} {:?}",
                                    resource.endpoint, report.log
                                ),
                            };
                            assert_eq!(
                                groups, interfaces,
                                "vigil poll of {}: one group per interface",
                                resource.endpoint
                            );
                            tally.items += groups as u64;
                            if let Some(snmp) = &report.snmp {
                                tally.varbinds += snmp.varbinds;
                                tally.requests += snmp.requests;
                            }
                        }
                        tally
                    })
                })
                .collect();
            let mut total = Tally::default();
            for task in tasks {
                total.merge(task.await.expect("a vigil polling task panicked"));
            }
            total
        })
    }
}

// ---------------------------------------------------------------------------
// snmp_exporter

/// IF-MIB columns of upstream snmp_exporter 0.21's `if_mib` module, in its
/// order: (name, OID, type). sysUpTime and ifNumber are scalars; the rest
/// are indexed by ifIndex with the ifAlias, ifDescr and ifName lookups.
const IF_MIB_METRICS: &[(&str, &str, &str)] = &[
    ("sysUpTime", "1.3.6.1.2.1.1.3", "gauge"),
    ("ifNumber", "1.3.6.1.2.1.2.1", "gauge"),
    ("ifIndex", "1.3.6.1.2.1.2.2.1.1", "gauge"),
    ("ifType", "1.3.6.1.2.1.2.2.1.3", "EnumAsInfo"),
    ("ifMtu", "1.3.6.1.2.1.2.2.1.4", "gauge"),
    ("ifSpeed", "1.3.6.1.2.1.2.2.1.5", "gauge"),
    ("ifPhysAddress", "1.3.6.1.2.1.2.2.1.6", "PhysAddress48"),
    ("ifAdminStatus", "1.3.6.1.2.1.2.2.1.7", "gauge"),
    ("ifOperStatus", "1.3.6.1.2.1.2.2.1.8", "gauge"),
    ("ifLastChange", "1.3.6.1.2.1.2.2.1.9", "gauge"),
    ("ifInOctets", "1.3.6.1.2.1.2.2.1.10", "counter"),
    ("ifInUcastPkts", "1.3.6.1.2.1.2.2.1.11", "counter"),
    ("ifInNUcastPkts", "1.3.6.1.2.1.2.2.1.12", "counter"),
    ("ifInDiscards", "1.3.6.1.2.1.2.2.1.13", "counter"),
    ("ifInErrors", "1.3.6.1.2.1.2.2.1.14", "counter"),
    ("ifInUnknownProtos", "1.3.6.1.2.1.2.2.1.15", "counter"),
    ("ifOutOctets", "1.3.6.1.2.1.2.2.1.16", "counter"),
    ("ifOutUcastPkts", "1.3.6.1.2.1.2.2.1.17", "counter"),
    ("ifOutNUcastPkts", "1.3.6.1.2.1.2.2.1.18", "counter"),
    ("ifOutDiscards", "1.3.6.1.2.1.2.2.1.19", "counter"),
    ("ifOutErrors", "1.3.6.1.2.1.2.2.1.20", "counter"),
    ("ifOutQLen", "1.3.6.1.2.1.2.2.1.21", "gauge"),
    ("ifSpecific", "1.3.6.1.2.1.2.2.1.22", "OctetString"),
    ("ifInMulticastPkts", "1.3.6.1.2.1.31.1.1.1.2", "counter"),
    ("ifInBroadcastPkts", "1.3.6.1.2.1.31.1.1.1.3", "counter"),
    ("ifOutMulticastPkts", "1.3.6.1.2.1.31.1.1.1.4", "counter"),
    ("ifOutBroadcastPkts", "1.3.6.1.2.1.31.1.1.1.5", "counter"),
    ("ifHCInOctets", "1.3.6.1.2.1.31.1.1.1.6", "counter"),
    ("ifHCInUcastPkts", "1.3.6.1.2.1.31.1.1.1.7", "counter"),
    ("ifHCInMulticastPkts", "1.3.6.1.2.1.31.1.1.1.8", "counter"),
    ("ifHCInBroadcastPkts", "1.3.6.1.2.1.31.1.1.1.9", "counter"),
    ("ifHCOutOctets", "1.3.6.1.2.1.31.1.1.1.10", "counter"),
    ("ifHCOutUcastPkts", "1.3.6.1.2.1.31.1.1.1.11", "counter"),
    ("ifHCOutMulticastPkts", "1.3.6.1.2.1.31.1.1.1.12", "counter"),
    ("ifHCOutBroadcastPkts", "1.3.6.1.2.1.31.1.1.1.13", "counter"),
    ("ifLinkUpDownTrapEnable", "1.3.6.1.2.1.31.1.1.1.14", "gauge"),
    ("ifHighSpeed", "1.3.6.1.2.1.31.1.1.1.15", "gauge"),
    ("ifPromiscuousMode", "1.3.6.1.2.1.31.1.1.1.16", "gauge"),
    ("ifConnectorPresent", "1.3.6.1.2.1.31.1.1.1.17", "gauge"),
    (
        "ifCounterDiscontinuityTime",
        "1.3.6.1.2.1.31.1.1.1.19",
        "gauge",
    ),
];

/// The lookups every indexed `if_mib` metric carries: (label, OID).
const IF_MIB_LOOKUPS: &[(&str, &str)] = &[
    ("ifAlias", "1.3.6.1.2.1.31.1.1.1.18"),
    ("ifDescr", "1.3.6.1.2.1.2.2.1.2"),
    ("ifName", "1.3.6.1.2.1.31.1.1.1.1"),
];

/// ifType names for the types these agents report (upstream lists all 234;
/// only the lookup of a value present matters).
const IF_TYPES: &[(u32, &str)] = &[
    (1, "other"),
    (6, "ethernetCsmacd"),
    (24, "softwareLoopback"),
    (53, "propVirtual"),
    (209, "bridge"),
];

/// snmp_exporter 0.21's configuration: the upstream `if_mib` module (help
/// texts shortened) with v2c, community `public`, 25 repetitions, and the
/// same timeout and retries as vigil's site.
fn exporter_config() -> String {
    let mut yaml = format!(
        "if_mib:\n  version: 2\n  max_repetitions: {MAX_REPETITIONS}\n  retries: 1\n  timeout: 2s\n\
         \x20 auth:\n    community: {COMMUNITY}\n\
         \x20 walk:\n  - 1.3.6.1.2.1.2\n  - 1.3.6.1.2.1.31.1.1\n\
         \x20 get:\n  - 1.3.6.1.2.1.1.3.0\n  metrics:\n"
    );
    for &(name, oid, kind) in IF_MIB_METRICS {
        let _ = write!(
            yaml,
            "  - name: {name}\n    oid: {oid}\n    type: {kind}\n    help: {name} - {oid}\n"
        );
        if oid.starts_with("1.3.6.1.2.1.1.") || name == "ifNumber" {
            continue;
        }
        yaml.push_str("    indexes:\n    - labelname: ifIndex\n      type: gauge\n    lookups:\n");
        for (label, lookup) in IF_MIB_LOOKUPS {
            let _ = write!(
                yaml,
                "    - labels:\n      - ifIndex\n      labelname: {label}\n      oid: {lookup}\n      type: DisplayString\n"
            );
        }
        if kind == "EnumAsInfo" {
            yaml.push_str("    enum_values:\n");
            for (value, text) in IF_TYPES {
                let _ = writeln!(yaml, "      {value}: {text}");
            }
        }
    }
    yaml
}

/// `prometheus-snmp-exporter` on `127.0.0.1:<free port>`; killed on drop.
struct Exporter {
    port: u16,
    child: Child,
    version: String,
    _dir: tempfile::TempDir,
}

impl Exporter {
    fn start() -> Exporter {
        let program = "prometheus-snmp-exporter";
        let version = Command::new(program)
            .arg("--version")
            .output()
            .map(|out| {
                // It prints its version on stderr.
                let text = String::from_utf8_lossy(&out.stderr).into_owned()
                    + &String::from_utf8_lossy(&out.stdout);
                text.lines()
                    .next()
                    .and_then(|line| line.split("version ").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or("?")
                    .to_owned()
            })
            .expect("running prometheus-snmp-exporter --version (Debian package)");
        let dir = tempfile::tempdir().expect("tempdir for snmp_exporter");
        let config = dir.path().join("snmp.yml");
        std::fs::write(&config, exporter_config()).expect("writing snmp.yml");
        let log_path = dir.path().join("exporter.log");
        let mut last = String::new();
        // Another process may take the port between its release here and
        // the exporter's bind: then try another one.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free TCP port on 127.0.0.1")
                .port();
            let log = std::fs::File::create(&log_path).expect("creating the exporter log");
            let mut child = Command::new(program)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("duplicating the log handle"))
                .stderr(log)
                .spawn()
                .expect("starting prometheus-snmp-exporter");
            match wait_until_serving(&mut child, port) {
                Ok(()) => {
                    return Exporter {
                        port,
                        child,
                        version,
                        _dir: dir,
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!(
                        "{e}; its log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        }
        panic!("prometheus-snmp-exporter did not start: {last}");
    }

    /// Scrapes `polls` times, `concurrency` at a time; thread `t` scrapes
    /// agent `t % agents`. Every scrape must answer 200 with one
    /// `ifHCInOctets` sample per interface.
    fn run(
        &self,
        endpoints: &[String],
        polls: usize,
        concurrency: usize,
        interfaces: usize,
    ) -> Tally {
        let next = AtomicUsize::new(0);
        let total = Mutex::new(Tally::default());
        thread::scope(|scope| {
            for task in 0..concurrency {
                let (next, total) = (&next, &total);
                let target = &endpoints[task % endpoints.len()];
                scope.spawn(move || {
                    let path = format!("/snmp?module=if_mib&target={target}");
                    let mut tally = Tally::default();
                    while next.fetch_add(1, Ordering::Relaxed) < polls {
                        let started = Instant::now();
                        let (status, body) = http_get(self.port, &path)
                            .unwrap_or_else(|e| panic!("scraping {path}: {e}"));
                        tally.latencies.push(started.elapsed());
                        assert_eq!(status, 200, "scraping {path}: {body}");
                        let scrape = Scrape::parse(&body);
                        assert_eq!(
                            scrape.samples_of("ifHCInOctets"),
                            interfaces,
                            "scraping {path}: one ifHCInOctets sample per interface"
                        );
                        tally.varbinds += scrape.value("snmp_scrape_pdus_returned");
                        tally.requests += scrape.value("snmp_scrape_packets_sent");
                        tally.items += scrape.lines;
                        tally.bytes += body.len() as u64;
                    }
                    total
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .merge(tally);
                });
            }
        });
        total
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 10 s) until the exporter answers 200 on `/`.
fn wait_until_serving(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        if let Ok((200, _)) = http_get(port, "/") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("it did not answer on / within 10 s".to_owned());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The parts of a Prometheus text exposition the bench checks.
struct Scrape {
    lines: u64,
    samples: BTreeMap<String, usize>,
    values: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(body: &str) -> Scrape {
        let mut scrape = Scrape {
            lines: 0,
            samples: BTreeMap::new(),
            values: BTreeMap::new(),
        };
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            scrape.lines += 1;
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            *scrape.samples.entry(name.to_owned()).or_default() += 1;
            if name.starts_with("snmp_scrape_")
                && let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
            {
                scrape.values.insert(name.to_owned(), value);
            }
        }
        scrape
    }

    fn samples_of(&self, name: &str) -> usize {
        self.samples.get(name).copied().unwrap_or(0)
    }

    fn value(&self, name: &str) -> u64 {
        self.values.get(name).copied().unwrap_or(0.0) as u64
    }
}

/// GET over HTTP/1.0 (the server closes the connection): status and body.
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connecting: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| format!("setting a timeout: {e}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .map_err(|e| format!("sending: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("reading: {e}"))?;
    let text = String::from_utf8(response).map_err(|e| format!("not UTF-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

// ---------------------------------------------------------------------------
// The run

fn start_agents(count: usize) -> Vec<Snmpd> {
    thread::scope(|scope| {
        let starting: Vec<_> = (0..count)
            .map(|_| {
                scope.spawn(|| {
                    Snmpd::start(SnmpdConfig {
                        communities: vec![COMMUNITY.to_owned()],
                        ..SnmpdConfig::default()
                    })
                    .unwrap_or_else(|e| panic!("starting snmpd: {e:#}"))
                })
            })
            .collect();
        starting
            .into_iter()
            .map(|handle| handle.join().expect("a thread starting snmpd panicked"))
            .collect()
    })
}

fn bench(knobs: &Knobs, namespace: Option<&str>) {
    let started = Instant::now();
    let agents = start_agents(knobs.agents);
    let endpoints: Vec<String> = agents.iter().map(Snmpd::endpoint).collect();
    let interfaces = snmpbulkwalk(agents[0].port, COMMUNITY, IF_INDEX)
        .expect("walking ifIndex of the first agent")
        .len();
    assert!(interfaces > 0, "the agents report no interfaces");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let vigil = Vigil::new(&runtime, &endpoints);
    let exporter = Exporter::start();
    let probe = Probe {
        ticks_per_second: clock_ticks(),
        exporter_pid: exporter.child.id().to_string(),
        agent_pids: agents
            .iter()
            .map(|a| a.pid().expect("snmpd runs").to_string())
            .collect(),
    };

    let where_ = namespace.map_or_else(
        || "this machine's interfaces".to_owned(),
        |ns| format!("network namespace {ns}"),
    );
    println!(
        "SNMP interface polling: {} snmpd agents on 127.0.0.1 ({where_}), {interfaces} interfaces each, \
         v2c, max-repetitions {MAX_REPETITIONS}; {} polls per collector, {} in flight (at most one per agent \
         for vigil, which serialises requests per device); vigil on 2 tokio workers; {} warm-up polls each",
        knobs.agents, knobs.polls, knobs.concurrency, knobs.warm_up
    );

    // Warm up both (caches, the allocator, the agents' own caches), then
    // measure each alone.
    vigil.run(&runtime, knobs.warm_up, knobs.concurrency, interfaces);
    exporter.run(&endpoints, knobs.warm_up, knobs.concurrency, interfaces);

    let vigil_phase = measured(&probe, "vigil".to_owned(), knobs.polls, true, || {
        vigil.run(&runtime, knobs.polls, knobs.concurrency, interfaces)
    });
    let exporter_name = format!("snmp_exporter {}", exporter.version);
    let exporter_phase = measured(&probe, exporter_name, knobs.polls, false, || {
        exporter.run(&endpoints, knobs.polls, knobs.concurrency, interfaces)
    });

    report(&[&vigil_phase, &exporter_phase], interfaces);
    println!(
        "vigil: {:.0} metrics groups per poll, {:.1} SNMP requests per poll; snmp_exporter: {:.0} \
         exposition lines and {:.0} KiB per scrape, {:.1} requests per poll (its HTTP client here used \
         {:.3} CPU-s, not counted)",
        vigil_phase.items as f64 / vigil_phase.polls as f64,
        vigil_phase.requests as f64 / vigil_phase.polls as f64,
        exporter_phase.items as f64 / exporter_phase.polls as f64,
        exporter_phase.bytes as f64 / exporter_phase.polls as f64 / 1024.0,
        exporter_phase.requests as f64 / exporter_phase.polls as f64,
        exporter_phase.client_cpu,
    );
    println!("bench took {:.1?}", started.elapsed());
    drop(exporter);
    drop(agents);
}

fn report(phases: &[&Phase], interfaces: usize) {
    println!(
        "{:<22} {:>6} {:>7} {:>8} {:>10} {:>10} {:>11} {:>8} {:>8} {:>12} {:>7}",
        "collector",
        "polls",
        "wall s",
        "polls/s",
        "if walks/s",
        "varbinds/s",
        "CPU ms/poll",
        "p50 ms",
        "p99 ms",
        "agent ms/poll",
        "busy"
    );
    for phase in phases {
        println!(
            "{:<22} {:>6} {:>7.2} {:>8.1} {:>10.0} {:>10.0} {:>11.3} {:>8.2} {:>8.2} {:>12.3} {:>6.0}%",
            phase.name,
            phase.polls,
            phase.wall.as_secs_f64(),
            phase.rate(phase.polls as f64),
            phase.rate((phase.polls * interfaces) as f64),
            phase.rate(phase.varbinds as f64),
            phase.cpu_per_poll() * 1e3,
            phase.percentile(0.5).as_secs_f64() * 1e3,
            phase.percentile(0.99).as_secs_f64() * 1e3,
            phase.agents_cpu / phase.polls as f64 * 1e3,
            phase.machine_busy * 100.0,
        );
    }
    let (vigil, exporter) = (phases[0], phases[1]);
    let ratio = exporter.cpu_per_poll() / vigil.cpu_per_poll();
    println!(
        "CPU per device poll, snmp_exporter/vigil: {ratio:.2}x (target >= {TARGET_CPU_RATIO}x: {}); \
         per varbind: {:.2} us vigil, {:.2} us snmp_exporter",
        if ratio >= TARGET_CPU_RATIO {
            "met"
        } else {
            "NOT met"
        },
        vigil.cpu / vigil.varbinds.max(1) as f64 * 1e6,
        exporter.cpu / exporter.varbinds.max(1) as f64 * 1e6,
    );
    // The target load, scaled per interface when the devices here have a
    // different number of them.
    let scale = TARGET_INTERFACES / interfaces as f64;
    let polls_per_second = TARGET_DEVICES_PER_MINUTE / 60.0;
    let cores = |phase: &Phase| phase.cpu_per_poll() * scale * polls_per_second;
    let scaled = if interfaces == TARGET_INTERFACES as usize {
        String::new()
    } else {
        format!(" (scaled from {interfaces} to 50 interfaces per device)")
    };
    println!(
        "10,000 devices x 50 interfaces per minute = {polls_per_second:.1} device polls/s{scaled}: \
         vigil needs {:.2} cores = {:.0}% of {CORES} (target <= 100%: {}), snmp_exporter {:.2} cores = {:.0}%; \
         these agents would need {:.2} cores",
        cores(vigil),
        cores(vigil) / CORES * 100.0,
        if cores(vigil) <= CORES {
            "met"
        } else {
            "NOT met"
        },
        cores(exporter),
        cores(exporter) / CORES * 100.0,
        vigil.agents_cpu / vigil.polls as f64 * scale * polls_per_second,
    );
    println!(
        "vigil alone could sustain {:.0} device polls/s ({:.0} interface walks/s) on {CORES} cores; \
         measured end to end here, sharing them with the agents: {:.0}/s",
        CORES / vigil.cpu_per_poll(),
        CORES / vigil.cpu_per_poll() * interfaces as f64,
        vigil.rate(vigil.polls as f64),
    );
}
