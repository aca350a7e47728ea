//! The hostile SNMP suite: plugins inside their limits try to use the
//! host's SNMP capability against someone, with real agents (Debian's
//! `snmpd`) and a UDP capture listener on loopback that records every
//! datagram the host sends it.
//!
//! - credentials reach no plugin-chosen place: a resource whose owner the
//!   host recorded as another plugin, with a forged id and site and an
//!   endpoint of the attacker's, gets no credential, and the listener hears
//!   nothing (while a resource the operator's rule does cover makes it hear
//!   the community: the listener works);
//! - endpoints the site does not allow (link-local metadata, multicast,
//!   broadcast, unspecified, outside `allowed_networks`, DNS names) are
//!   refused with a reason and nothing is sent;
//! - the OID bomb that panicked the host is an `invalid-request`, and the
//!   host serves the next run;
//! - resources aliased onto a healthy device with a credential it ignores,
//!   and a plugin flooding the same device, do not starve the legitimate
//!   polls (success counts, not times);
//! - the reported theft end to end: takeover and other-site discovery
//!   plugins in a whole host, with the real store and scheduler;
//! - a panic inside the SNMP library (an agent's 40,000-byte v3 engine id)
//!   ends that one call and is counted; the host keeps serving.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use vigil_host::model::{MetricValue, MetricsGroup, Resource};
use vigil_host::plugin::PluginManifest;
use vigil_host::sandbox::{
    PreparedPlugin, RunContext, RunInput, RunOutcome, RunOutput, RunReport, Sandbox,
    SandboxSettings,
};
use vigil_host::site::SiteConfig;
use vigil_tests::snmp_servers::{Snmpd, SnmpdConfig};
use vigil_tests::{PluginFile, artifacts};

/// A UDP socket on loopback that keeps every datagram it receives.
struct Capture {
    port: u16,
    datagrams: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl Capture {
    fn start() -> Capture {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind capture");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let port = socket.local_addr().expect("address").port();
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, halt) = (datagrams.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65_535];
            while !halt.load(Ordering::Relaxed) {
                if let Ok(len) = socket.recv(&mut buffer) {
                    kept.lock().expect("capture").push(buffer[..len].to_vec());
                }
            }
        });
        Capture {
            port,
            datagrams,
            stop,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn count(&self) -> usize {
        self.datagrams.lock().expect("capture").len()
    }

    /// Whether any datagram carries `secret`.
    fn heard(&self, secret: &str) -> bool {
        self.datagrams
            .lock()
            .expect("capture")
            .iter()
            .any(|d| d.windows(secret.len()).any(|w| w == secret.as_bytes()))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A site (written to a temporary directory, so secrets can come from
/// files) with a sandbox that allows SNMP.
struct Lab {
    dir: tempfile::TempDir,
    site: SiteConfig,
    sandbox: Arc<Sandbox>,
}

impl Lab {
    fn new(snmp: &str, files: &[(&str, &str)]) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write");
        }
        let text = format!(
            "[site]\nname = \"lab\"\n[plugins]\ncache_dir = \"cache\"\n\
             [sandbox]\nmax_concurrent_runs = 32\n\
             [capabilities]\nallowed = [\"snmp\"]\n{snmp}"
        );
        let path = dir.path().join("site.toml");
        std::fs::write(&path, text).expect("site");
        let site = SiteConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let sandbox = Arc::new(Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox"));
        Lab { dir, site, sandbox }
    }

    fn plugin(&self, file: PluginFile, stem: &str) -> PreparedPlugin {
        let path = file.write(self.dir.path(), stem);
        let manifest = PluginManifest::load(&path, &self.site.plugin_policy())
            .unwrap_or_else(|e| panic!("{e}"));
        self.sandbox
            .prepare(Arc::new(manifest))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The hostile fixture with SNMP behaviour `behaviour`.
    fn fixture(&self, name: &str, behaviour: &str, extra: &[(&str, &str, &str)]) -> PreparedPlugin {
        let mut file = PluginFile::new(name, "polling", artifacts::FIXTURE_HOSTILE_SNMP)
            .set("fixture", "behaviour", behaviour)
            .set("capabilities", "snmp", "yes")
            .set("snmp", "timeout", "300ms")
            .set("snmp", "retries", "0");
        if !extra.iter().any(|(_, key, _)| *key == "deadline") {
            file = file.set("sandbox", "deadline", "5s");
        }
        for (section, key, value) in extra {
            file = file.set(section, key, value);
        }
        self.plugin(file, name)
    }

    async fn poll(&self, plugin: &PreparedPlugin, resource: &Resource) -> RunReport {
        poll(&self.sandbox, plugin, resource).await
    }
}

async fn poll(sandbox: &Sandbox, plugin: &PreparedPlugin, resource: &Resource) -> RunReport {
    let context = RunContext::new(SystemTime::now(), Some(resource.id.clone()));
    sandbox
        .run(plugin, RunInput::Poll(resource.clone().into()), context)
        .await
}

/// A resource as the host stores it: `owner` is the discovery plugin the
/// pipeline recorded, whatever the plugin wrote.
fn resource(id: &str, site: &str, endpoint: &str, owner: &str) -> Resource {
    let mut resource = Resource::named(id, endpoint);
    resource.site = site.to_owned();
    resource.class = "network".to_owned();
    resource.creation_plugin = owner.to_owned();
    resource
}

/// The one probe group a fixture run returned.
fn probe(report: &RunReport) -> &MetricsGroup {
    match &report.outcome {
        RunOutcome::Ok(RunOutput::Metrics(groups)) => groups
            .iter()
            .find(|g| g.group_type == "probe")
            .unwrap_or_else(|| panic!("{}: no probe group", report.plugin)),
        other => panic!("{}: expected a probe, got {other}", report.plugin),
    }
}

fn dimension<'a>(group: &'a MetricsGroup, name: &str) -> &'a str {
    group
        .dimensions
        .iter()
        .find(|d| d.name == name)
        .map(|d| d.value.as_str())
        .unwrap_or_else(|| panic!("probe has no dimension {name}"))
}

fn gauge(group: &MetricsGroup, name: &str) -> u64 {
    match group
        .metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| &m.value)
    {
        Some(MetricValue::Unsigned(v)) => *v,
        other => panic!("probe metric {name}: {other:?}"),
    }
}

/// What the fixture's single GET got.
fn result(report: &RunReport) -> String {
    dimension(probe(report), "result").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_a_plugin_chosen_place() {
    let capture = Capture::start();
    let lab = Lab::new(
        "[[snmp.credentials]]\ndiscovery_plugins = [\"inventory\"]\nfilter = 'resource_site = \"dc1\"'\n\
         version = \"2c\"\ncommunity = { file = \"dc1-community\" }\n\
         [[snmp.credentials]]\ndiscovery_plugins = [\"inventory\"]\nfilter = 'resource_id = \"core-1\"'\n\
         version = \"2c\"\ncommunity = \"core-1-secret\"\n\
         [[snmp.credentials]]\nnetworks = [\"10.99.0.0/16\"]\nversion = \"2c\"\ncommunity = \"net-secret\"\n",
        &[("dc1-community", "file-secret-dc1\n")],
    );
    let poller = lab.fixture("poller", "snmp-get", &[]);
    let listener = capture.endpoint();
    let attempts = [
        // Another plugin re-reported inventory's id, in inventory's site,
        // at its own listener: the host recorded it as the owner.
        ("core-1", "dc1", "rogue"),
        // A resource of its own in a site a credential covers.
        ("x-1", "dc1", "rogue"),
        // Outside every credential's networks (10.99.0.0/16).
        ("y-1", "lab", "rogue"),
        // The operator's own plugin, but the filter narrows it out.
        ("z-1", "lab", "inventory"),
    ];
    for (id, site, owner) in attempts {
        let report = lab
            .poll(&poller, &resource(id, site, &listener, owner))
            .await;
        let got = result(&report);
        assert!(
            got.starts_with("snmp not granted: no [[snmp.credentials]] entry")
                && got.contains(&format!("resource {id}")),
            "{id} ({owner}, {site}): {got}"
        );
        let summary = report.snmp.as_ref().expect("snmp summary");
        assert_eq!(summary.attempts, 0, "{id}: {summary:?}");
    }
    assert_eq!(
        capture.count(),
        0,
        "a credential went to a plugin-chosen place"
    );

    // The control: the operator's resource (owner and site as the rule
    // says) at the same listener is sent the file's community, first rule
    // first. So silence above was the host's doing, not the listener's.
    let report = lab
        .poll(&poller, &resource("core-1", "dc1", &listener, "inventory"))
        .await;
    assert!(
        result(&report).starts_with("timeout:"),
        "{}",
        result(&report)
    );
    wait_for(|| capture.count() == 1);
    assert!(capture.heard("file-secret-dc1"));
    assert!(!capture.heard("core-1-secret") && !capture.heard("net-secret"));
}

/// Polls `condition` (the capture thread runs on its own) for up to 5 s.
fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(condition(), "condition not reached in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_endpoints_get_a_reason_and_no_packet() {
    let capture = Capture::start();
    let port = capture.port;
    // An operator who trusts every address with a community still gets
    // the site's reach rules.
    let trusting = "[[snmp.credentials]]\nnetworks = [\"0.0.0.0/0\", \"::/0\"]\nversion = \"2c\"\ncommunity = \"everywhere\"\n";
    let lab = Lab::new(trusting, &[]);
    let poller = lab.fixture("poller", "snmp-get", &[]);
    let refused = [
        ("169.254.169.254", "IPv4 link-local"),
        ("169.254.169.254:80", "IPv4 link-local"),
        ("[::ffff:169.254.169.254]:161", "IPv4 link-local"),
        ("[fd00:ec2::254]:161", "cloud metadata"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        // Linux delivers 0.0.0.0 to the host itself: to the listener.
        (&format!("0.0.0.0:{port}") as &str, "unspecified"),
        // A name is not looked up at all (it would resolve to the listener).
        (
            &format!("localhost:{port}") as &str,
            "names are not looked up",
        ),
        (
            "exfiltrated-data.attacker.example",
            "names are not looked up",
        ),
        ("not an address", "not an IP address"),
    ];
    for (endpoint, why) in refused {
        let report = lab
            .poll(&poller, &resource("dev-1", "lab", endpoint, "inventory"))
            .await;
        let got = result(&report);
        assert!(
            got.starts_with("snmp not granted: resource dev-1: endpoint ")
                && got.contains(&format!(
                    "{:?}",
                    endpoint.chars().take(128).collect::<String>()
                ))
                && got.contains(why)
                && got.contains("nothing was sent"),
            "{endpoint}: {got}"
        );
        assert_eq!(report.snmp.as_ref().expect("summary").attempts, 0);
    }

    // Outside allowed_networks, even on loopback.
    let narrow = Lab::new(
        &format!("[snmp]\nallowed_networks = [\"10.0.0.0/8\"]\n{trusting}"),
        &[],
    );
    let narrow_poller = narrow.fixture("poller", "snmp-get", &[]);
    let report = narrow
        .poll(
            &narrow_poller,
            &resource("dev-2", "lab", &capture.endpoint(), "inventory"),
        )
        .await;
    let got = result(&report);
    assert!(
        got.contains("127.0.0.1 is outside [snmp] allowed_networks (10.0.0.0/8)"),
        "{got}"
    );
    assert_eq!(capture.count(), 0, "a refused endpoint was sent a packet");

    // Controls, on the same listener: an allowed address is sent to, and
    // so is the name once the operator allows names.
    let report = lab
        .poll(
            &poller,
            &resource("dev-3", "lab", &capture.endpoint(), "inventory"),
        )
        .await;
    assert!(
        result(&report).starts_with("timeout:"),
        "{}",
        result(&report)
    );
    wait_for(|| capture.count() == 1);
    let names = Lab::new(&format!("[snmp]\nresolve_names = true\n{trusting}"), &[]);
    let names_poller = names.fixture("poller", "snmp-get", &[]);
    let report = names
        .poll(
            &names_poller,
            &resource("dev-4", "lab", &format!("localhost:{port}"), "inventory"),
        )
        .await;
    assert!(
        result(&report).starts_with("timeout:"),
        "{}",
        result(&report)
    );
    wait_for(|| capture.count() == 2);
    assert!(capture.heard("everywhere"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oid_bomb_is_an_invalid_request_and_the_host_serves_the_next_run() {
    let agent = Snmpd::start(SnmpdConfig {
        communities: vec!["public".to_owned()],
        ..SnmpdConfig::default()
    })
    .expect("snmpd");
    let credential = "[[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"2c\"\ncommunity = \"public\"\n";
    let device = resource("dev-1", "lab", &agent.endpoint(), "inventory");

    // Default site: at most 64 OIDs per call, so the count stops it.
    let lab = Lab::new(credential, &[]);
    let bomber = lab.fixture("bomber", "snmp-oid-bomb", &[]);
    let report = lab.poll(&bomber, &device).await;
    let group = probe(&report);
    for call in ["get", "get_next"] {
        assert_eq!(
            dimension(group, call),
            "invalid request: 128 OIDs in one call; at most 64 ([snmp] max_oids_per_request in the site config)",
            "{call}"
        );
    }
    assert!(dimension(group, "count").starts_with("invalid request: 65 OIDs in one call"));
    // A single 128-arc OID is legal and small: walked (nothing under it).
    assert_eq!(dimension(group, "walk"), "ok 0 varbinds");
    assert_eq!(dimension(group, "after"), "ok 1 varbinds");

    // At the ceiling of 128 OIDs, the encoded size stops it: about 82 KB
    // would not fit the library's 65,507-byte buffer (it panicked there).
    let wide = Lab::new(
        &format!("[snmp]\nmax_oids_per_request = 128\n{credential}"),
        &[],
    );
    let bomber = wide.fixture("bomber", "snmp-oid-bomb", &[]);
    let poller = wide.fixture("poller", "snmp-get", &[]);
    for run in 0..3 {
        let report = wide.poll(&bomber, &device).await;
        let group = probe(&report);
        for call in ["get", "get_next"] {
            let got = dimension(group, call);
            assert!(
                got.starts_with(&format!(
                    "invalid request: dev-1 ({}): 128 OIDs (16384 arcs in all) encode to ",
                    agent.endpoint()
                )) && got
                    .contains("bytes, more than the 65506 the SNMP library can put in one message"),
                "run {run} {call}: {got}"
            );
        }
        assert_eq!(dimension(group, "count"), "ok 65 varbinds");
        assert_eq!(dimension(group, "after"), "ok 1 varbinds");
        // Nothing of it reached the device: only the count, walk and
        // after calls were sent.
        let summary = report.snmp.as_ref().expect("summary");
        assert_eq!(summary.attempts, 3, "run {run}: {summary:?}");
        // The host keeps serving: another plugin's next run works.
        let report = wide.poll(&poller, &device).await;
        assert_eq!(result(&report), "ok 1 varbinds");
    }
    assert_eq!(wide.sandbox.snmp().caught_panics(), 0);
    assert_eq!(wide.sandbox.snmp().busy_devices(), 0);
}

/// Counts of what the legitimate polls and the attacks got.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliased_resources_and_a_flood_do_not_starve_a_healthy_device() {
    let agent = Snmpd::start(SnmpdConfig {
        communities: vec!["right".to_owned()],
        ..SnmpdConfig::default()
    })
    .expect("snmpd");
    // The operator's inventory has the device with its community; a
    // lab-wide default community (which this device does not know) covers
    // anything else on loopback. 200 requests a second per device.
    let lab = Lab::new(
        "[snmp]\nmax_requests_per_second_per_device = 200\n\
         [[snmp.credentials]]\ndiscovery_plugins = [\"inventory\"]\nfilter = 'resource_id = \"core-1\"'\nversion = \"2c\"\ncommunity = \"right\"\n\
         [[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"2c\"\ncommunity = \"lab-default\"\n",
        &[],
    );
    // One real polling plugin polls everything of class network: the
    // inventory's device and, once a hostile discovery plugin aliased them
    // onto the same address, its resources. Each attempt on those waits
    // out a 1 s timeout, 3 attempts a call.
    let health = lab.plugin(
        PluginFile::new("health", "polling", artifacts::SNMP_DEVICE_HEALTH)
            .set("capabilities", "snmp", "yes")
            .set("snmp", "timeout", "1s")
            .set("snmp", "retries", "2")
            .set("snmp", "max_repetitions", "5")
            .set("sandbox", "deadline", "8s"),
        "health",
    );
    // Another plugin floods the device's own resource with GETs.
    let flooder = lab.fixture(
        "flooder",
        "snmp-flood",
        &[
            ("sandbox", "deadline", "3s"),
            ("sandbox", "max_host_calls", "100000"),
        ],
    );
    let endpoint = agent.endpoint();
    let device = resource("core-1", "lab", &endpoint, "inventory");

    // Before the attack: the device answers, with many requests a poll
    // (walks of 5 rows a request): more than the 8 s deadline would allow
    // if each had to wait for one 1 s attempt of the attacker's, as it
    // would with one gate per device however fair.
    let report = poll(&lab.sandbox, &health, &device).await;
    assert!(report.outcome.is_ok(), "{}", report.outcome);
    let requests_per_poll = report.snmp.as_ref().expect("summary").attempts;
    assert!(requests_per_poll >= 10, "{:?}", report.snmp);

    let stop = Arc::new(AtomicBool::new(false));
    let aliases = Arc::new(Tally::default());
    let mut attackers = Vec::new();
    // 16 runs at once, again and again, on 64 aliased resources.
    for worker in 0..16 {
        let (sandbox, health, stop, aliases, endpoint) = (
            lab.sandbox.clone(),
            health.clone(),
            stop.clone(),
            aliases.clone(),
            endpoint.clone(),
        );
        attackers.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let alias = resource(
                    &format!("alias-{}", (worker * 4 + round) % 64),
                    "lab",
                    &endpoint,
                    "rogue",
                );
                let report = poll(&sandbox, &health, &alias).await;
                let tally = if report.outcome.is_ok() {
                    &aliases.ok
                } else {
                    &aliases.failed
                };
                tally.fetch_add(1, Ordering::Relaxed);
                round += 1;
            }
        }));
    }
    // The legitimate polls while the aliases are polled. Each needs many
    // requests, so they would fail if each waited for one of the
    // aliases' 1 s attempts.
    let mut legitimate = Vec::new();
    for _ in 0..6 {
        let report = poll(&lab.sandbox, &health, &device).await;
        legitimate.push(report.outcome.is_ok());
        if !report.outcome.is_ok() {
            eprintln!(
                "legitimate poll failed: {} / {:?}",
                report.outcome, report.snmp
            );
        }
    }

    // Then another plugin floods the device's own resource with GETs too:
    // it shares the device's gate and bucket with the legitimate polls.
    let floods = Arc::new(Tally::default());
    let flood_answered = Arc::new(AtomicU64::new(0));
    let flood = {
        let (sandbox, flooder, stop, floods, answered, device) = (
            lab.sandbox.clone(),
            flooder.clone(),
            stop.clone(),
            floods.clone(),
            flood_answered.clone(),
            device.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let report = poll(&sandbox, &flooder, &device).await;
                let group = probe(&report);
                answered.fetch_add(gauge(group, "answered"), Ordering::Relaxed);
                let run = floods.ok.fetch_add(1, Ordering::Relaxed);
                // Each flood run ends at its own deadline, never at the
                // device's: its rate is the host's to set.
                let stopped_by = dimension(group, "stopped_by");
                assert!(
                    stopped_by.starts_with("timeout:"),
                    "flood {run}: {stopped_by}"
                );
            }
        })
    };
    while floods.ok.load(Ordering::Relaxed) == 0 {
        let report = poll(&lab.sandbox, &health, &device).await;
        legitimate.push(report.outcome.is_ok());
        if !report.outcome.is_ok() {
            eprintln!(
                "legitimate poll failed under the flood: {} / {:?}",
                report.outcome, report.snmp
            );
        }
    }
    let still_attacking = attackers.iter().all(|a| !a.is_finished());
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.await.expect("attacker");
    }
    flood.await.expect("flood");

    let polls = legitimate.len();
    let succeeded = legitimate.iter().filter(|ok| **ok).count();
    let (alias_ok, alias_failed) = (
        aliases.ok.load(Ordering::Relaxed),
        aliases.failed.load(Ordering::Relaxed),
    );
    let flood_runs = floods.ok.load(Ordering::Relaxed);
    let answered = flood_answered.load(Ordering::Relaxed);
    eprintln!(
        "legitimate polls ({requests_per_poll} requests each) {succeeded}/{polls} ok; aliased polls {alias_ok} ok, {alias_failed} failed; \
         flood: {flood_runs} runs, {answered} GETs answered"
    );
    assert!(still_attacking, "the attackers ran throughout");
    assert!(polls > 6, "no legitimate poll ran during the flood");
    assert_eq!(succeeded, polls, "the device's own polls were starved");
    assert_eq!(
        alias_ok, 0,
        "the device never answered the default community"
    );
    assert!(alias_failed >= 16, "{alias_failed} aliased polls");
    assert!(flood_runs >= 1 && answered > 0);
    // The flood got at most the device's rate: 200 a second plus a burst
    // of 200 per 3 s run, shared with everyone else.
    assert!(
        answered <= flood_runs * (200 * 3 + 200),
        "{answered} GETs in {flood_runs} runs of 3 s"
    );
    assert_eq!(lab.sandbox.snmp().busy_devices(), 0);
}

// --- the reported theft, end to end ------------------------------------------

/// A whole host (`vigil run` in-process): store, scheduler, pipeline.
struct Host {
    dir: tempfile::TempDir,
    /// Loaded when the host starts (after the secret files exist).
    site: Option<Arc<SiteConfig>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    fn start(extra: &str) -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["plugins", "data", "secrets"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::write(
            dir.path().join("site.toml"),
            format!(
                "[site]\nname = \"dc1\"\n[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n\
                 [storage]\npath = \"state/vigil.db\"\n[outputs]\njson_lines = \"out/metrics.jsonl\"\n\
                 [sandbox]\nmax_concurrent_runs = 8\n\
                 [capabilities]\nallowed = [\"files\", \"snmp\"]\nfile_roots = [\"data\"]\n{extra}"
            ),
        )
        .expect("site.toml");
        Host {
            dir,
            site: None,
            stop: None,
            thread: None,
        }
    }

    fn path(&self, relative: &str) -> std::path::PathBuf {
        self.dir.path().join(relative)
    }

    fn run(&mut self) {
        let site =
            Arc::new(SiteConfig::load(&self.path("site.toml")).unwrap_or_else(|e| panic!("{e}")));
        self.site = Some(site.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let settings = vigil_host::agent::AgentSettings {
            watch: vigil_host::plugin::watcher::WatchSettings {
                debounce: Duration::from_millis(100),
                max_delay: Duration::from_millis(500),
                rescan_every: Duration::from_secs(1),
            },
            housekeeping: Duration::from_millis(500),
        };
        self.thread = Some(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime
                .block_on(vigil_host::agent::run(site, settings, async {
                    let _ = stopped.await;
                }))
                .expect("vigil run");
        }));
        self.stop = Some(stop);
    }

    /// `(resource id, probe result)` of every probe group written so far.
    fn probes(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.path("out/metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|g| g["metrics_group_type"] == "probe")
            .filter_map(|g| {
                let id = g["resource"]["resource_id"].as_str()?.to_owned();
                let result = g["dimensions"]
                    .as_array()?
                    .iter()
                    .find(|d| d["dimension_name"] == "result")?["dimension_value"]
                    .as_str()?
                    .to_owned();
                Some((id, result))
            })
            .collect()
    }

    fn runs_of(&self, plugin: &str) -> usize {
        use vigil_host::store::Storage;
        let Some(site) = &self.site else { return 0 };
        vigil_host::store::sqlite::SqliteStorage::open_read_only(&site.database)
            .and_then(|s| vigil_tests::block_on(s.recent_runs(Some(plugin), 100_000)))
            .map(|runs| runs.len())
            .unwrap_or(0)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reported attack, through the real store and scheduler: a discovery
/// plugin re-reports the inventory's device id, and a resource of another
/// site, at a listener of its own; the site's credential (read from a
/// secret file) is bound to the inventory. The device keeps being polled
/// with it, the attacker's resources are polled and get no credential, and
/// the listener hears nothing.
#[test]
fn a_discovery_plugin_cannot_steal_a_credential_through_the_whole_host() {
    let secret = "dc1-secret-from-a-file";
    let agent = Snmpd::start(SnmpdConfig {
        communities: vec![secret.to_owned()],
        ..SnmpdConfig::default()
    })
    .expect("snmpd");
    let capture = Capture::start();
    let mut host = Host::start(
        "[snmp]\ntimeout = \"300ms\"\nretries = 0\n\
         [[snmp.credentials]]\ndiscovery_plugins = [\"inventory\"]\nfilter = 'resource_site = \"dc1\" OR resource_site = \"dc9\"'\n\
         version = \"2c\"\ncommunity = { file = \"secrets/dc1\" }\n",
    );
    std::fs::write(host.path("secrets/dc1"), format!("{secret}\n")).expect("secret");
    std::fs::write(
        host.path("data/resources.json"),
        serde_json::to_vec(&serde_json::json!([{
            "resource_id": "core-1", "resource_site": "dc1", "resource_class": "network",
            "resource_subclass": "router", "resource_type": "test",
            "resource_endpoint": agent.endpoint(), "resource_metadata": {}, "resource_ttl": 600,
        }]))
        .expect("json"),
    )
    .expect("inventory");
    let plugins = host.path("plugins");
    PluginFile::new("inventory", "discovery", artifacts::DISCOVERY_JSON_FILE)
        .frequency("1")
        .set("capabilities", "files", "../data")
        .set("json_file", "path", "resources.json")
        .write(&plugins, "inventory");
    PluginFile::new("poller", "polling", artifacts::FIXTURE_HOSTILE_SNMP)
        .frequency("1")
        .set("main", "resource_filter", r#"resource_class = "network""#)
        .set("fixture", "behaviour", "snmp-get")
        .set("capabilities", "snmp", "yes")
        .set("snmp", "timeout", "300ms")
        .set("snmp", "retries", "0")
        .write(&plugins, "poller");
    let listener = capture.endpoint();
    PluginFile::new(
        "takeover",
        "discovery",
        artifacts::FIXTURE_HOSTILE_DISCOVERY,
    )
    .frequency("1")
    .set("fixture", "behaviour", "takeover")
    .set("fixture", "victim", "core-1")
    .set("fixture", "endpoint", &listener)
    .set("fixture", "site", "dc1")
    .write(&plugins, "takeover");
    PluginFile::new(
        "elsewhere",
        "discovery",
        artifacts::FIXTURE_HOSTILE_DISCOVERY,
    )
    .frequency("1")
    .set("fixture", "behaviour", "takeover")
    .set("fixture", "victim", "remote-1")
    .set("fixture", "endpoint", &listener)
    .set("fixture", "site", "dc9")
    .set("fixture", "own", "elsewhere-own")
    .write(&plugins, "elsewhere");
    host.run();

    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let probes = host.probes();
        let count = |id: &str| probes.iter().filter(|(r, _)| r == id).count();
        let done = host.runs_of("takeover") >= 5
            && host.runs_of("elsewhere") >= 5
            && count("core-1") >= 5
            && count("hostile-own") >= 3
            && count("elsewhere-own") >= 3;
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "attacks and polls did not run: {probes:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(stop) = host.stop.take() {
        let _ = stop.send(());
    }
    if let Some(thread) = host.thread.take() {
        thread.join().expect("host thread");
    }

    let probes = host.probes();
    // The device answered every poll, with the secret it knows.
    let core: Vec<&String> = probes
        .iter()
        .filter(|(id, _)| id == "core-1")
        .map(|(_, r)| r)
        .collect();
    assert!(core.iter().all(|r| *r == "ok 1 varbinds"), "{core:?}");
    // The attacker's own resources were polled and refused a credential.
    for own in ["hostile-own", "elsewhere-own"] {
        let results: Vec<&String> = probes
            .iter()
            .filter(|(id, _)| id == own)
            .map(|(_, r)| r)
            .collect();
        assert!(
            results
                .iter()
                .all(|r| r.starts_with("snmp not granted: no [[snmp.credentials]] entry")),
            "{own}: {results:?}"
        );
    }
    // No resource of the other site was ever polled.
    assert!(!probes.iter().any(|(id, _)| id == "remote-1"), "{probes:?}");
    assert_eq!(capture.count(), 0, "the listener was sent something");
    assert!(!capture.heard(secret));
}

// --- a panic inside the library ----------------------------------------------

fn ber(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if body.len() < 0x80 {
        out.push(body.len() as u8);
    } else {
        let len = body.len().to_be_bytes();
        let significant: Vec<u8> = len.iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | significant.len() as u8);
        out.extend(significant);
    }
    out.extend_from_slice(body);
    out
}

fn ber_int(value: u8) -> Vec<u8> {
    ber(0x02, &[value])
}

/// An SNMPv3 discovery report (unauthenticated) announcing an engine id
/// of `engine_id_len` bytes, far past RFC 3411's 32.
fn discovery_report(engine_id_len: usize) -> Vec<u8> {
    let security = ber(
        0x30,
        &[
            ber(0x04, &vec![0x80; engine_id_len]),
            ber_int(1),
            ber_int(1),
            ber(0x04, b""),
            ber(0x04, b""),
            ber(0x04, b""),
        ]
        .concat(),
    );
    // usmStatsUnknownEngineIDs.0 = 1
    let varbind = ber(
        0x30,
        &[
            ber(0x06, &[0x2b, 6, 1, 6, 3, 15, 1, 1, 4, 0]),
            ber(0x41, &[1]),
        ]
        .concat(),
    );
    let report = ber(
        0xa8,
        &[ber_int(1), ber_int(0), ber_int(0), ber(0x30, &varbind)].concat(),
    );
    let scoped = ber(0x30, &[ber(0x04, b""), ber(0x04, b""), report].concat());
    let global = ber(
        0x30,
        &[
            ber_int(1),
            ber(0x02, &[0x00, 0xff, 0xe3]),
            ber(0x04, &[0]),
            ber_int(3),
        ]
        .concat(),
    );
    ber(
        0x30,
        &[ber_int(3), global, ber(0x04, &security), scoped].concat(),
    )
}

/// An agent whose v3 engine id is 40,000 bytes: the library stores it and
/// then panics encoding the request that repeats it. The panic ends that
/// call as `malformed-response`, is counted, and the same host keeps
/// serving other devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_the_library_ends_one_call_only() {
    use vigil_host::capabilities::snmp::{RequestOptions, SnmpError, SnmpRun, SnmpService};
    let agent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    agent
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let endpoint = agent.local_addr().expect("address").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let report = discovery_report(40_000);
    assert!(report.len() < 65_507);
    let agent_thread = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65_535];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = agent.recv_from(&mut buffer) {
                    received.fetch_add(1, Ordering::Relaxed);
                    let _ = agent.send_to(&report, peer);
                }
            }
        })
    };
    let healthy = Snmpd::start(SnmpdConfig {
        communities: vec!["public".to_owned()],
        ..SnmpdConfig::default()
    })
    .expect("snmpd");
    let text = "[site]\nname = \"lab\"\n\
        [[snmp.credentials]]\nfilter = 'resource_id = \"odd\"'\nnetworks = [\"127.0.0.0/8\"]\nversion = \"3\"\nuser = \"probe\"\n\
        [[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"2c\"\ncommunity = \"public\"\n";
    let site = SiteConfig::parse(std::path::Path::new("/etc/vigil/site.toml"), text)
        .unwrap_or_else(|e| panic!("{e}"));
    let service = Arc::new(SnmpService::new(site.snmp));
    let options = RequestOptions {
        timeout: Duration::from_secs(2),
        retries: 1,
        max_repetitions: 25,
    };
    let soon = || std::time::Instant::now() + Duration::from_secs(10);
    for call in 1..=3u64 {
        let mut odd = SnmpRun::new(
            service.clone(),
            resource("odd", "lab", &endpoint, "inventory"),
            options,
        );
        let error = odd
            .get(vec!["1.3.6.1.2.1.1.3.0".to_owned()], soon())
            .await
            .expect_err("the library panics on this agent");
        assert!(
            matches!(&error, SnmpError::MalformedResponse(m) if m.contains("the SNMP library failed on this exchange")),
            "{error:?}"
        );
        assert_eq!(service.caught_panics(), call);
        // The healthy device, through the same host-wide service.
        let mut good = SnmpRun::new(
            service.clone(),
            resource("good", "lab", &healthy.endpoint(), "inventory"),
            options,
        );
        let got = good
            .get(vec!["1.3.6.1.2.1.1.3.0".to_owned()], soon())
            .await
            .expect("healthy device");
        assert_eq!(got.len(), 1);
    }
    // Each call reached the agent (its discovery) and went no further.
    assert!(received.load(Ordering::Relaxed) >= 3);
    assert_eq!(service.busy_devices(), 0);
    stop.store(true, Ordering::Relaxed);
    agent_thread.join().expect("agent");
}
