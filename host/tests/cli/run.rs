//! `vigil run` end to end, with the real binary and real plugins:
//! discovery from a JSON inventory -> resource filter -> schedule -> poll
//! -> transform -> JSON lines and the latest-value store, observed through
//! the operator's own commands (`vigil runs --json`, `vigil status --json`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{signal, stop, wait_until};
use serde_json::{Value, json};
use vigil_tests::{PluginFile, artifacts};

fn vigil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

/// A site in a temporary directory, with its own plugin directory,
/// inventory, database and JSON lines file.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(max_runs_per_plugin: u32) -> Site {
        Site::with_config(max_runs_per_plugin, "")
    }

    /// A site whose `site.toml` ends with `extra` (more sections).
    fn with_config(max_runs_per_plugin: u32, extra: &str) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["plugins", "data"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::write(
            dir.path().join("site.toml"),
            format!(
                "[site]\nname = \"test\"\n[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n\
                 [storage]\npath = \"state/vigil.db\"\n[outputs]\njson_lines = \"out/metrics.jsonl\"\n\
                 [sandbox]\nmax_concurrent_runs = 8\n[scheduler]\nmax_runs_per_plugin = {max_runs_per_plugin}\n\
                 [capabilities]\nallowed = [\"files\", \"snmp\"]\nfile_roots = [\"data\"]\n{extra}"
            ),
        )
        .expect("site.toml");
        Site { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn plugins(&self) -> PathBuf {
        self.path("plugins")
    }

    /// Writes the inventory: `(id, class)` pairs, each living `ttl` seconds.
    fn inventory(&self, resources: &[(&str, &str)], ttl: u64) {
        let at: Vec<(&str, &str, String)> = resources
            .iter()
            .enumerate()
            .map(|(i, (id, class))| (*id, *class, format!("127.0.0.{}", i + 1)))
            .collect();
        self.inventory_at(&at, ttl);
    }

    /// Writes the inventory: `(id, class, endpoint)`, each living `ttl` seconds.
    fn inventory_at(&self, resources: &[(&str, &str, String)], ttl: u64) {
        let entries: Vec<Value> = resources
            .iter()
            .enumerate()
            .map(|(i, (id, class, endpoint))| {
                serde_json::json!({
                    "resource_id": id, "resource_site": "lab", "resource_class": class,
                    "resource_subclass": "switch", "resource_type": "test",
                    "resource_endpoint": endpoint,
                    "resource_metadata": {"rack": format!("r{i}")}, "resource_ttl": ttl,
                })
            })
            .collect();
        // Write then rename: the plugin never reads half a file.
        let tmp = self.path("data/.resources.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&entries).expect("json")).expect("write");
        std::fs::rename(tmp, self.path("data/resources.json")).expect("rename");
    }

    fn discovery(&self, every: &str) -> PathBuf {
        PluginFile::new("inventory", "discovery", artifacts::DISCOVERY_JSON_FILE)
            .frequency(every)
            .set("capabilities", "files", "../data")
            .set("json_file", "path", "resources.json")
            .set("main", "sites", "lab")
            .write(&self.plugins(), "inventory")
    }

    fn start(&self) -> Child {
        self.start_with_log(Stdio::null())
    }

    /// Starts `vigil run` with its log (plain text: stderr is a file) in
    /// `vigil.log`.
    fn start_logged(&self) -> Child {
        let log = std::fs::File::create(self.path("vigil.log")).expect("log file");
        self.start_with_log(log.into())
    }

    fn start_with_log(&self, stderr: Stdio) -> Child {
        Command::new(vigil_bin())
            .args([
                "--site",
                self.path("site.toml").to_str().expect("utf-8"),
                "run",
            ])
            .env("XDG_CACHE_HOME", self.path("xdg"))
            .env("VIGIL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start vigil run")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("vigil.log")).unwrap_or_default()
    }

    fn vigil(&self, args: &[&str]) -> Output {
        Command::new(vigil_bin())
            .args(["--site", self.path("site.toml").to_str().expect("utf-8")])
            .args(args)
            .output()
            .expect("vigil")
    }

    /// Every run recorded so far, oldest first.
    fn runs(&self) -> Vec<Value> {
        let output = self.vigil(&["runs", "--json", "--limit", "100000"]);
        if !output.status.success() {
            return Vec::new();
        }
        let mut runs: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .map(epoch_times)
            .collect();
        runs.reverse();
        runs
    }

    /// The status of the site's one agent.
    fn status(&self) -> Value {
        let output = self.vigil(&["status", "--json"]);
        serde_json::from_slice::<Value>(&output.stdout)
            .map(|status| status["agents"][0].clone())
            .unwrap_or(Value::Null)
    }

    fn json_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("out/metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is complete JSON"))
            .collect()
    }
}

/// An RFC 3339 time of the JSON output as seconds since the epoch (0 when
/// absent or malformed).
fn epoch(time: &Value) -> f64 {
    time.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0)
}

/// A run of `vigil runs --json` with its times as epoch seconds, which the
/// checks compare.
fn epoch_times(mut run: Value) -> Value {
    for field in ["scheduled_at", "started_at", "finished_at"] {
        let at = epoch(&run[field]);
        run[field] = serde_json::json!(at);
    }
    run
}

fn runs_of<'a>(runs: &'a [Value], plugin: &str, resource: Option<&str>) -> Vec<&'a Value> {
    runs.iter()
        .filter(|r| r["plugin"] == plugin && resource.is_none_or(|id| r["resource_id"] == id))
        .collect()
}

fn heartbeat(name: &str, every: &str, filter: &str) -> PluginFile {
    PluginFile::new(name, "polling", artifacts::HEARTBEAT)
        .frequency(every)
        .set("main", "resource_filter", filter)
        .set("transforms", "run_rate", "rate:heartbeat:runs")
}

#[test]
fn discovery_filter_schedule_poll_transform_sink() {
    let site = Site::new(4);
    site.inventory(
        &[
            ("sw1", "network"),
            ("sw2", "network"),
            ("srv1", "system"),
            ("short", "network"),
        ],
        600,
    );
    site.discovery("1s");
    PluginFile::new(
        "inventory_enrichment",
        "enrichment",
        artifacts::METADATA_ENRICHMENT,
    )
    .frequency("1s")
    .set("main", "resource_filter", r#"resource_class = "network""#)
    .write(&site.plugins(), "enrich");
    heartbeat("beat", "1s", r#"resource_class = "network""#)
        .set("enrichment", "preload", "self:inventory")
        .set("heartbeat", "inventory_dimensions", "rack")
        .write(&site.plugins(), "beat");
    let vigil = site.start();

    // Discovery -> filter -> schedule -> poll: every network resource is
    // polled, the system one never.
    wait_until(
        "polls of every network resource",
        Duration::from_secs(30),
        || {
            let runs = site.runs();
            ["sw1", "sw2", "short"]
                .iter()
                .all(|id| runs_of(&runs, "beat", Some(id)).len() >= 3)
        },
    );
    assert!(
        runs_of(&site.runs(), "beat", Some("srv1")).is_empty(),
        "the filter excludes srv1"
    );

    // A plugin added to the watched directory while running is scheduled.
    // It asks for inventory labels but does not preload the namespace: it
    // must never see them.
    heartbeat("late_beat", "1s", r#"resource_id IN ("sw1")"#)
        .set("heartbeat", "inventory_dimensions", "rack")
        .write(&site.plugins(), "late");
    wait_until("the added plugin to run", Duration::from_secs(20), || {
        runs_of(&site.runs(), "late_beat", Some("sw1")).len() >= 2
    });

    // A resource that leaves the inventory expires after its TTL and stops
    // being polled; the others carry on.
    site.inventory(
        &[
            ("sw1", "network"),
            ("sw2", "network"),
            ("srv1", "system"),
            ("short", "network"),
        ],
        2,
    );
    std::thread::sleep(Duration::from_secs(2));
    site.inventory(
        &[("sw1", "network"), ("sw2", "network"), ("srv1", "system")],
        600,
    );
    let removed_at = Instant::now();
    // TTL (2 s) + housekeeping sweep (5 s) + a run in flight.
    std::thread::sleep(Duration::from_secs(9));
    let polls_of_short = runs_of(&site.runs(), "beat", Some("short")).len();
    std::thread::sleep(Duration::from_secs(4));
    let runs = site.runs();
    assert_eq!(
        runs_of(&runs, "beat", Some("short")).len(),
        polls_of_short,
        "expired resource still polled"
    );
    assert!(removed_at.elapsed() > Duration::from_secs(12));
    assert!(
        runs_of(&runs, "beat", Some("sw2")).len() > polls_of_short,
        "others kept running"
    );

    // A malformed plugin file is reported with its line, and the rest runs on.
    std::fs::write(
        site.plugins().join("broken.vigil-plugin"),
        "[Core]\nName = broken\nKind = polling\nModule\n",
    )
    .expect("write");
    wait_until(
        "the broken plugin in the status",
        Duration::from_secs(20),
        || {
            site.status()["broken"].as_array().is_some_and(|broken| {
                broken.iter().any(|entry| {
                    entry["error"].as_str().is_some_and(|e| {
                        e.contains("broken.vigil-plugin:4: expected `key = value`")
                    })
                })
            })
        },
    );
    let before = runs_of(&site.runs(), "beat", Some("sw1")).len();
    wait_until("runs to continue", Duration::from_secs(20), || {
        runs_of(&site.runs(), "beat", Some("sw1")).len() > before + 2
    });

    stop(vigil);

    // Nothing accepted is lost: every group an ok run produced is in the
    // JSON lines, complete, in Panoptes' schema, and every polling run, ok
    // or not, added one polling-status group.
    let runs = site.runs();
    let produced: u64 = runs
        .iter()
        .filter(|r| r["outcome"] == "ok")
        .filter_map(|r| {
            r["detail"]
                .as_str()?
                .strip_suffix(" metrics groups")?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let all_lines = site.json_lines();
    let (statuses, lines): (Vec<Value>, Vec<Value>) = all_lines
        .into_iter()
        .partition(|g| g["metrics_group_type"] == "status");
    assert!(produced > 10, "{:?}", &runs[runs.len().saturating_sub(3)..]);
    assert_eq!(lines.len() as u64, produced);
    let polling_runs = runs
        .iter()
        .filter(|r| r["plugin"] == "beat" || r["plugin"] == "late_beat")
        .count();
    assert_eq!(statuses.len(), polling_runs);
    assert!(statuses.iter().all(|g| {
        g["metrics"][0]["metric_name"] == "polling_status"
            && g["metrics"][0]["metric_value"] == 0
            && g["dimensions"]
                .as_array()
                .is_some_and(|d| d[0]["dimension_name"] == "plugin")
    }));
    assert!(
        lines
            .iter()
            .all(|g| g["metrics_group_schema_version"] == "0.2"
                && g["resource"]["resource_class"] == "network")
    );
    assert!(
        lines
            .iter()
            .any(|g| g["resource"]["resource_plugin"] == "inventory"
                && g["resource"]["resource_metadata"]["rack"].is_string())
    );
    // Enrichment reached the polling plugin that preloads it, and only it:
    // sw1 is inventory entry 0, so its rack is "r0".
    let rack = |g: &Value| {
        g["dimensions"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["dimension_name"] == "rack"))
            .map(|d| d["dimension_value"].clone())
    };
    let labelled: Vec<&Value> = lines.iter().filter(|g| rack(g).is_some()).collect();
    assert!(!labelled.is_empty(), "no group carried enrichment data");
    assert!(labelled.iter().all(|g| {
        let id = g["resource"]["resource_id"].as_str().unwrap_or("");
        let expected = match id {
            "sw1" => "r0",
            "sw2" => "r1",
            "short" => "r3",
            _ => "?",
        };
        rack(g) == Some(Value::from(expected))
    }));
    assert!(
        runs_of(&runs, "inventory_enrichment", None)
            .iter()
            .all(|r| r["outcome"] == "ok"),
        "enrichment runs failed"
    );
    // (late_beat and beat emit identical groups for sw1 but late_beat never
    // preloads: groups without the label for sw1 must exist.)
    assert!(
        lines
            .iter()
            .any(|g| g["resource"]["resource_id"] == "sw1" && rack(g).is_none())
    );

    // The rate transform: `runs` grows by one per interval, so its rate is
    // about 1/s; the first sample of each series carries no rate.
    let rates: Vec<f64> = lines
        .iter()
        .flat_map(|g| g["metrics"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["metric_name"] == "runs")
        .map(|m| {
            assert_eq!(m["metric_type"], "gauge");
            m["metric_value"].as_f64().expect("number")
        })
        .collect();
    assert!(!rates.is_empty());
    assert!(
        rates.iter().all(|r| (0.2..=5.0).contains(r)),
        "rates {rates:?}"
    );

    // The latest-value store answers the CLI.
    let metrics = site.vigil(&[
        "metrics",
        "--group",
        "heartbeat",
        "--filter",
        r#"resource_id = "sw2""#,
        "--json",
    ]);
    let text = String::from_utf8_lossy(&metrics.stdout);
    let values: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        values.iter().any(|v| v["resource_id"] == "sw2"
            && v["group_type"] == "heartbeat"
            && v["metric"] == "up"
            && v["value"] == 1),
        "{text}"
    );
    assert!(values.iter().all(|v| v["resource_id"] == "sw2"), "{text}");
}

#[test]
fn runs_never_overlap_and_a_hung_plugin_does_not_delay_others() {
    let site = Site::new(2);
    let devices: Vec<String> = (0..6).map(|i| format!("dev{i}")).collect();
    let inventory: Vec<(&str, &str)> = devices.iter().map(|d| (d.as_str(), "network")).collect();
    site.inventory(&inventory, 600);
    site.discovery("30s");
    // Hangs every run until its 3 s deadline, on a 1 s schedule.
    PluginFile::new("hang", "polling", artifacts::FIXTURE_HOSTILE)
        .frequency("1s")
        .set("fixture", "behaviour", "sleep-forever")
        .set("sandbox", "deadline", "3s")
        .write(&site.plugins(), "hang");
    heartbeat("beat", "1s", r#"resource_class = "network""#).write(&site.plugins(), "beat");
    let vigil = site.start();

    wait_until("a few hung runs to finish", Duration::from_secs(40), || {
        runs_of(&site.runs(), "hang", None).len() >= 6
    });
    std::thread::sleep(Duration::from_secs(3));
    stop(vigil);
    let runs = site.runs();

    // Never two runs of one (plugin, resource) at once.
    for device in &devices {
        let mut spans: Vec<(f64, f64)> = runs_of(&runs, "hang", Some(device))
            .iter()
            .map(|r| {
                (
                    r["started_at"].as_f64().unwrap_or(0.0),
                    r["finished_at"].as_f64().unwrap_or(0.0),
                )
            })
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in spans.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "{device}: overlapping runs {pair:?}"
            );
        }
    }
    let hung = runs_of(&runs, "hang", None);
    assert!(hung.iter().all(|r| r["outcome"] == "trap.deadline"));
    let skipped = site.status()["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == "hang"))
        .and_then(|p| p["skipped"].as_u64())
        .unwrap_or(0);
    assert!(
        skipped > 0,
        "hung jobs were due again while still running: they must be skipped"
    );

    // The hung plugin holds at most its own 2 slots: the well-behaved
    // plugin's runs all succeed and start close to their due times.
    let beats = runs_of(&runs, "beat", None);
    assert!(
        beats.len() >= devices.len() * 4,
        "only {} heartbeat runs",
        beats.len()
    );
    assert!(
        beats.iter().all(|r| r["outcome"] == "ok"),
        "{:?}",
        beats
            .iter()
            .filter(|r| r["outcome"] != "ok")
            .take(3)
            .collect::<Vec<_>>()
    );
    let mut lateness: Vec<f64> = beats
        .iter()
        .map(|r| {
            r["started_at"].as_f64().unwrap_or(0.0) - r["scheduled_at"].as_f64().unwrap_or(0.0)
        })
        .collect();
    lateness.sort_by(f64::total_cmp);
    let worst = lateness.last().copied().unwrap_or(0.0);
    assert!(
        worst < 0.5,
        "a heartbeat run started {worst:.3} s late while the other plugin hung"
    );
}

/// The `runs` counter the heartbeat plugin keeps for `sw1`, as the latest
/// value `vigil metrics` reports.
fn runs_counter(site: &Site) -> Option<u64> {
    let output = site.vigil(&[
        "metrics",
        "--group",
        "heartbeat",
        "--resource",
        "sw1",
        "--metric",
        "runs",
        "--json",
    ]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| serde_json::from_str::<Value>(line).ok()?["value"].as_u64())
}

#[test]
fn plugin_state_survives_a_restart() {
    let site = Site::new(4);
    site.inventory(&[("sw1", "network")], 600);
    site.discovery("1h");
    PluginFile::new("beat", "polling", artifacts::HEARTBEAT)
        .frequency("1s")
        .write(&site.plugins(), "beat");

    let vigil = site.start();
    wait_until("a few polls", Duration::from_secs(30), || {
        runs_counter(&site).is_some_and(|n| n >= 3)
    });
    stop(vigil);
    let before = runs_counter(&site).expect("counter");

    let vigil = site.start();
    wait_until("polls after the restart", Duration::from_secs(30), || {
        runs_of(&site.runs(), "beat", Some("sw1")).len() as u64 > before + 1
    });
    stop(vigil);
    // The counter kept counting from where it was, not from 1.
    let after = runs_counter(&site).expect("counter");
    assert!(after > before + 1, "before {before}, after {after}");
    assert_eq!(
        after,
        runs_of(&site.runs(), "beat", Some("sw1")).len() as u64
    );
}

/// The embedded enrichment cache, seen from another process: `vigil
/// enrichment` reads its mirror in the site's store while `vigil run`
/// enriches, and after a restart the cache starts with what it held (a
/// warm start, said in the log).
#[test]
fn the_embedded_enrichment_cache_is_visible_and_survives_a_restart() {
    let site = Site::new(4);
    site.inventory(&[("sw1", "network"), ("sw2", "network")], 600);
    site.discovery("1h");
    PluginFile::new("meta", "enrichment", artifacts::METADATA_ENRICHMENT)
        .frequency("2s")
        .write(&site.plugins(), "meta");
    let cached = || -> Vec<Value> {
        let output = site.vigil(&["enrichment", "--json"]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    };

    let vigil = site.start();
    wait_until("both devices enriched", Duration::from_secs(40), || {
        cached().len() == 2
    });
    stop(vigil);
    let entries = cached();
    let rendered = serde_json::to_string(&entries).expect("json");
    for (id, rack) in [("sw1", "r0"), ("sw2", "r1")] {
        assert!(
            entries.iter().any(|e| e["resource_id"] == id
                && e["namespace"] == "inventory"
                && e["plugin"] == "meta"),
            "{rendered}"
        );
        assert!(rendered.contains(rack), "{rendered}");
    }
    let one = site.vigil(&["enrichment", "--json", "--resource", "sw2"]);
    assert_eq!(String::from_utf8_lossy(&one.stdout).lines().count(), 1);

    let vigil = site.start_logged();
    wait_until(
        "the restored cache in the log",
        Duration::from_secs(30),
        || {
            site.log()
                .contains("enrichment cache restored from the store")
        },
    );
    stop(vigil);
    let log = site.log();
    let line = log
        .lines()
        .find(|l| l.contains("enrichment cache restored"))
        .unwrap_or_default();
    assert!(line.contains("groups=2"), "{line}");
}

/// SNMP through `vigil run`: a device that answers, one whose community is
/// wrong (silence) and one whose v3 password is wrong, all on one real
/// snmpd. Each poll's status group says why, and the run history names the
/// device that timed out.
#[test]
fn snmp_polling_status_says_why_a_device_has_no_data() {
    use vigil_tests::snmp_servers::{Snmpd, SnmpdConfig, V3User};
    let agent = Snmpd::start(SnmpdConfig {
        communities: vec!["public".to_owned()],
        v3_users: vec![V3User {
            name: "ops".to_owned(),
            auth_password: "right-password".to_owned(),
            privacy_password: "right-privacy".to_owned(),
        }],
        extra_lines: Vec::new(),
    })
    .expect("snmpd");
    let site = Site::with_config(
        4,
        "[snmp]\ntimeout = \"300ms\"\nretries = 1\n\
         [[snmp.credentials]]\ndiscovery_plugins = [\"inventory\"]\nfilter = 'resource_id = \"alive\"'\nversion = \"2c\"\ncommunity = \"public\"\n\
         [[snmp.credentials]]\ndiscovery_plugins = [\"inventory\"]\nfilter = 'resource_id = \"silent\"'\nversion = \"2c\"\ncommunity = \"wrong\"\n\
         [[snmp.credentials]]\ndiscovery_plugins = [\"inventory\"]\nversion = \"3\"\nuser = \"ops\"\nauth_protocol = \"sha\"\nauth_password = \"wrong-password\"\nprivacy_protocol = \"aes\"\nprivacy_password = \"right-privacy\"\n",
    );
    let endpoint = agent.endpoint();
    site.inventory_at(
        &[
            ("alive", "network", endpoint.clone()),
            ("silent", "network", endpoint.clone()),
            ("locked", "network", endpoint.clone()),
        ],
        600,
    );
    site.discovery("1s");
    PluginFile::new("health", "polling", artifacts::SNMP_DEVICE_HEALTH)
        .frequency("1s")
        .set("capabilities", "snmp", "yes")
        .set("sandbox", "deadline", "5s")
        .write(&site.plugins(), "health");
    let vigil = site.start();
    wait_until("two polls of each device", Duration::from_secs(40), || {
        let runs = site.runs();
        ["alive", "silent", "locked"]
            .iter()
            .all(|id| runs_of(&runs, "health", Some(id)).len() >= 2)
    });
    stop(vigil);

    let runs = site.runs();
    let silent = runs_of(&runs, "health", Some("silent"));
    assert!(
        silent.iter().all(|r| r["outcome"] == "plugin_error"),
        "{silent:?}"
    );
    let named = format!("silent ({endpoint})");
    assert!(
        silent.iter().all(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&named) && d.contains("no reply after 2 attempts"))),
        "{silent:?}"
    );
    let status_of = |id: &str| -> BTreeSet<i64> {
        site.json_lines()
            .iter()
            .filter(|g| g["metrics_group_type"] == "status" && g["resource"]["resource_id"] == id)
            .filter_map(|g| g["metrics"][0]["metric_value"].as_i64())
            .collect()
    };
    assert_eq!(status_of("alive"), BTreeSet::from([0]));
    assert_eq!(status_of("silent"), BTreeSet::from([3]));
    assert_eq!(status_of("locked"), BTreeSet::from([1]));
    let alive_data = site
        .json_lines()
        .iter()
        .filter(|g| g["metrics_group_type"] == "system" && g["resource"]["resource_id"] == "alive")
        .count();
    assert!(alive_data >= 2, "the answering device produced data");
}

/// The interface poller through `vigil run`, against snmpsim serving a
/// real recording with one ifHCInOctets row stored past the end of
/// ifXTable (where no walk finds it): the run record names the missing
/// object, and both status forms (Panoptes' `interface_polling_status`
/// without dimensions, vigil's `polling_status{plugin}`) say 4, partial.
#[test]
fn a_missing_counter_is_named_in_the_run_record_and_both_status_forms() {
    use vigil_tests::snmp_servers::{Snmpsim, fixtures_dir};
    let original =
        std::fs::read_to_string(fixtures_dir().join("generic-switch.snmprec")).expect("recording");
    let moved = "1.3.6.1.2.1.31.1.1.1.6.3|";
    let mut lines: Vec<&str> = original.lines().filter(|l| !l.starts_with(moved)).collect();
    let end = lines
        .iter()
        .rposition(|l| l.starts_with("1.3.6.1.2.1.31.1.1.1."))
        .expect("ifXTable");
    lines.insert(end + 1, "1.3.6.1.2.1.31.1.2.1.3.0.3|2|1");
    lines.insert(end + 2, "1.3.6.1.2.1.31.1.1.1.6.3|70|5");
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = dir.path().join("pastend.snmprec");
    std::fs::write(&recording, lines.join("\n") + "\n").expect("write");
    let sim = Snmpsim::start(&[("pastend".to_owned(), recording)]).expect("snmpsim");

    let site = Site::with_config(
        4,
        "[snmp]\ntimeout = \"2s\"\nretries = 1\n\
         [[snmp.credentials]]\ndiscovery_plugins = [\"inventory\"]\nversion = \"2c\"\ncommunity = \"pastend\"\n",
    );
    site.inventory_at(&[("sw", "network", sim.endpoint())], 600);
    site.discovery("1h");
    PluginFile::new("ifpoll", "polling", artifacts::SNMP_INTERFACE_POLLING)
        .frequency("2s")
        .set("capabilities", "snmp", "yes")
        .set("status", "metric", "interface_polling_status")
        .set("sandbox", "deadline", "10s")
        .write(&site.plugins(), "ifpoll");
    let vigil = site.start();
    wait_until("a poll of the device", Duration::from_secs(40), || {
        !runs_of(&site.runs(), "ifpoll", Some("sw")).is_empty()
    });
    stop(vigil);

    let all_runs = site.runs();
    let runs = runs_of(&all_runs, "ifpoll", Some("sw"));
    assert!(
        runs.iter().all(|r| r["outcome"] == "ok"
            && r["detail"].as_str().is_some_and(|d| {
                d.contains("12 metrics groups") && d.contains("missing: ifHCInOctets of ifIndex 3")
            })),
        "{runs:?}"
    );
    let status: Vec<(String, Value, i64)> = site
        .json_lines()
        .iter()
        .filter(|g| g["metrics_group_type"] == "status" && g["resource"]["resource_id"] == "sw")
        .filter_map(|g| {
            Some((
                g["metrics"][0]["metric_name"].as_str()?.to_owned(),
                g["dimensions"].clone(),
                g["metrics"][0]["metric_value"].as_i64()?,
            ))
        })
        .collect();
    let panoptes: Vec<_> = status
        .iter()
        .filter(|(name, _, _)| name == "interface_polling_status")
        .collect();
    let generic: Vec<_> = status
        .iter()
        .filter(|(name, _, _)| name == "polling_status")
        .collect();
    assert!(
        !panoptes.is_empty() && panoptes.len() == generic.len(),
        "{status:?}"
    );
    assert!(
        panoptes
            .iter()
            .all(|(_, dims, code)| *code == 4 && dims.as_array().is_none_or(Vec::is_empty)),
        "{status:?}"
    );
    assert!(
        generic
            .iter()
            .all(|(_, dims, code)| *code == 4 && dims.to_string().contains("ifpoll")),
        "{status:?}"
    );
}

/// A number from a text-format `/metrics` document: the sample whose line
/// starts with `series` (name and labels exactly as vigil writes them).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

fn get_metrics(port: u16) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default()
}

#[test]
fn prometheus_scrapes_the_running_host_and_status_reads_the_same_numbers() {
    use vigil_tests::metrics_servers::Prometheus;
    let port = vigil_tests::servers::free_tcp_port().expect("port");
    let site = Site::with_config(
        4,
        &format!("[outputs.prometheus]\nlisten = \"127.0.0.1:{port}\"\nstale_after = \"1m\"\n"),
    );
    site.inventory(
        &[("sw1", "network"), ("sw2", "network"), ("srv1", "system")],
        3600,
    );
    // Discovery runs once at start, then not for an hour: its counters
    // stay put while the test compares them.
    site.discovery("1h");
    heartbeat("beat", "1s", r#"resource_class = "network""#).write(&site.plugins(), "beat");
    let vigil = site.start();
    let prometheus =
        Prometheus::start(&[("vigil", format!("127.0.0.1:{port}"))]).expect("prometheus");

    // Collected series, with resource labels, through PromQL.
    let result = prometheus
        .wait_for("heartbeat_up", |r| r.len() == 2, Duration::from_secs(60))
        .expect("two devices' heartbeat_up");
    let ids: BTreeSet<&str> = result
        .iter()
        .filter_map(|s| s["metric"]["resource_id"].as_str())
        .collect();
    assert_eq!(ids, BTreeSet::from(["sw1", "sw2"]));
    assert!(result.iter().all(|s| s["value"][1] == "1"));
    assert!(
        result
            .iter()
            .all(|s| s["metric"]["resource_class"] == "network")
    );
    // The polling status of each device (0 = ok).
    prometheus
        .wait_for(
            "polling_status{plugin=\"beat\"} == 0",
            |r| r.len() == 2,
            Duration::from_secs(30),
        )
        .expect("polling status 0 for both devices");

    // vigil's own health, through PromQL.
    prometheus
        .wait_for(
            "vigil_plugin_runs_total{plugin=\"beat\",outcome=\"ok\"} > 4",
            |r| r.len() == 1,
            Duration::from_secs(30),
        )
        .expect("beat runs counted");
    let result = prometheus
        .query("vigil_resources{discovery_plugin=\"inventory\"}")
        .expect("query");
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["value"][1], "3");
    let result = prometheus
        .query("vigil_sink_delivered_groups_total{sink=\"json_lines\"} > 0")
        .expect("query");
    assert_eq!(result.len(), 1, "json lines delivered: {result:?}");
    let result = prometheus
        .query("vigil_plugin_run_duration_seconds_count{plugin=\"beat\"} > 0")
        .expect("query");
    assert_eq!(result.len(), 1, "{result:?}");

    // `vigil status` reads the numbers /metrics shows. Counters that are
    // frozen are equal; moving ones are bracketed by two scrapes.
    let before = get_metrics(port);
    let first_update = epoch(&site.status()["heartbeat_at"]);
    wait_until("a fresh status", Duration::from_secs(10), || {
        epoch(&site.status()["heartbeat_at"]) > first_update
    });
    let status = site.status();
    let after = get_metrics(port);
    let health = &status["health"];
    let plugin = |name: &str| {
        health["plugins"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let discovery_ok = sample(
        &after,
        "vigil_plugin_runs_total{plugin=\"inventory\",outcome=\"ok\"}",
    );
    assert_eq!(discovery_ok, Some(1.0));
    assert_eq!(plugin("inventory")["outcomes"]["ok"], 1);
    assert_eq!(
        health["inventory"]["resources_by_discovery"]["inventory"],
        3
    );
    assert_eq!(health["inventory"]["plugins_loaded"], 2);
    let series = "vigil_plugin_runs_total{plugin=\"beat\",outcome=\"ok\"}";
    let in_status = plugin("beat")["outcomes"]["ok"]
        .as_f64()
        .expect("beat runs");
    let (low, high) = (
        sample(&before, series).expect("before"),
        sample(&after, series).expect("after"),
    );
    assert!(
        low <= in_status && in_status <= high,
        "status says {in_status} beat runs, /metrics said {low} then {high}"
    );
    let json_sink = health["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "json_lines"))
        .cloned()
        .expect("json_lines sink in status");
    let accepted = json_sink["accepted"].as_f64().expect("accepted");
    let series = "vigil_sink_accepted_groups_total{sink=\"json_lines\",kind=\"json_lines\"}";
    let (low, high) = (
        sample(&before, series).expect("before"),
        sample(&after, series).expect("after"),
    );
    assert!(
        low <= accepted && accepted <= high,
        "{low} <= {accepted} <= {high}"
    );

    // The human summary shows the sinks.
    let text = String::from_utf8_lossy(&site.vigil(&["status"]).stdout).into_owned();
    assert!(text.contains("SINK"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("prometheus ") && l.contains("prometheus")),
        "{text}"
    );
    assert!(
        text.contains("resources by discovery plugin: inventory=3"),
        "{text}"
    );
    stop(vigil);
}

/// SIGTERM starts an orderly stop that waits for runs in flight and says
/// so; a second SIGTERM ends vigil at once (exit 128 + 15).
#[test]
fn a_second_signal_ends_a_waiting_stop_at_once() {
    let site = Site::new(2);
    site.inventory(&[("sw1", "network")], 600);
    site.discovery("1h");
    // Each run spins until its 120 s deadline: a stop must wait for it.
    PluginFile::new("spinner", "polling", artifacts::FIXTURE_HOSTILE)
        .frequency("1")
        .set("main", "resource_filter", "resource_class = \"network\"")
        .set("fixture", "behaviour", "infinite-loop")
        .set("sandbox", "deadline", "120s")
        .write(&site.plugins(), "spinner");
    let mut vigil = site.start_logged();
    wait_until(
        "the spinner compiled and its device discovered",
        Duration::from_secs(60),
        || {
            let log = site.log();
            log.contains("resources discovered")
                && log
                    .lines()
                    .any(|l| l.contains("plugin loaded") && l.contains("spinner"))
        },
    );
    // The spinner's first run starts within its 1 s schedule (compiling
    // it, which takes seconds on a loaded machine, is behind us).
    std::thread::sleep(Duration::from_secs(3));
    signal(&vigil, "TERM");
    wait_until(
        "the stop to say what it waits for",
        Duration::from_secs(10),
        || {
            site.log()
                .contains("shutting down: waiting for runs in flight")
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        vigil.try_wait().expect("wait").is_none(),
        "vigil stopped without waiting for the run in flight:\n{}",
        site.log()
    );
    let asked = Instant::now();
    signal(&vigil, "TERM");
    let exit = loop {
        if let Some(exit) = vigil.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "vigil did not exit within 10 s of a second SIGTERM:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(128 + 15), "{}", site.log());
    assert!(
        site.log().contains("second signal: exiting at once"),
        "{}",
        site.log()
    );
}

/// A job that fails every run is logged when it starts failing, not at
/// every run (1,000 dead devices must not write a million lines a day);
/// every run is still in the run history.
#[test]
fn a_failing_job_is_logged_once_not_at_every_run() {
    let site = Site::new(2);
    site.inventory(&[("sw1", "network")], 600);
    site.discovery("1h");
    PluginFile::new("broken", "polling", artifacts::FIXTURE_HOSTILE)
        .frequency("1")
        .set("main", "resource_filter", "resource_class = \"network\"")
        .set("fixture", "behaviour", "panic")
        .write(&site.plugins(), "broken");
    let vigil = site.start_logged();
    wait_until("five failed runs", Duration::from_secs(90), || {
        runs_of(&site.runs(), "broken", Some("sw1")).len() >= 5
    });
    stop(vigil);
    let runs = site.runs();
    let failed = runs_of(&runs, "broken", Some("sw1"));
    assert!(failed.len() >= 5);
    assert!(
        failed.iter().all(|r| r["outcome"] == "trap.panic"),
        "{failed:?}"
    );
    let log = site.log();
    let logged = log
        .lines()
        .filter(|l| l.contains("run failed") && l.contains("broken"))
        .count();
    assert_eq!(
        logged,
        1,
        "{} failed runs, logged {logged} times:\n{log}",
        failed.len()
    );
}

/// Issue #14 end to end: a running host with `[endpoints]` and `[api]`
/// takes a batch of pushed events over HTTP (the bad one refused by index,
/// the good ones kept), writes their history, serves it to the CLI and
/// the API, and counts it all on `/metrics`.
#[test]
fn pushed_events_reach_the_history_of_a_running_host() {
    let port = vigil_tests::servers::free_tcp_port().expect("port");
    let read = "r".repeat(40);
    let operator = "o".repeat(40);
    let site = Site::with_config(
        4,
        &format!(
            "[outputs.prometheus]\nlisten = \"127.0.0.1:{port}\"\n\
             [endpoints]\nenabled = true\nworkers = 2\n\
             [api]\nenabled = true\nread_tokens = [\"{read}\"]\noperator_tokens = [\"{operator}\"]\n"
        ),
    );
    let vigil = site.start_logged();
    let base = format!("http://127.0.0.1:{port}");
    wait_until("/metrics to answer", Duration::from_secs(60), || {
        !get_metrics(port).is_empty()
    });
    let client = reqwest::blocking::Client::new();
    let mac = "00:50:56:aa:bb:01";
    let event = |ts: f64, intf: &str| {
        json!({"fabric": "fab1", "node": 101, "vnid": 15990734, "type": "mac", "addr": mac,
               "status": "created", "ts": ts, "intf_id": intf, "encap": "vlan-10",
               "pctag": 32771, "flags": ["local"]})
    };
    let batch = json!([
        event(1_765_000_000.0, "eth1/1"),
        event(1_765_000_001.0, "eth1/2"),
        {"fabric": 7},
    ]);
    // A read token may not push.
    let refused = client
        .post(format!("{base}/api/v1/endpoints/events"))
        .bearer_auth(&read)
        .json(&batch)
        .send()
        .expect("post");
    assert_eq!(refused.status().as_u16(), 403);
    let answer: Value = client
        .post(format!("{base}/api/v1/endpoints/events"))
        .bearer_auth(&operator)
        .json(&batch)
        .send()
        .and_then(|r| r.json())
        .expect("post");
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["errors"][0]["index"], 2, "{answer}");

    // The CLI reads the history the host wrote.
    let show = || {
        let output = site.vigil(&["endpoints", "show", mac, "--json"]);
        serde_json::from_slice::<Value>(&output.stdout).unwrap_or(Value::Null)
    };
    wait_until(
        "the history of the pushed MAC",
        Duration::from_secs(30),
        || show()["history"][0]["count"] == 2,
    );
    let shown = show();
    assert_eq!(
        shown["history"][0]["events"][0]["intf_id"], "eth1/2",
        "{shown}"
    );
    assert_eq!(
        shown["history"][0]["events"][1]["intf_id"], "eth1/1",
        "{shown}"
    );

    // The API reads it too.
    let page: Value = client
        .get(format!("{base}/api/v1/endpoints?search=00-50-56-AA-BB"))
        .bearer_auth(&read)
        .send()
        .and_then(|r| r.json())
        .expect("get");
    assert_eq!(page["items"][0]["addr"], "00:50:56:AA:BB:01", "{page}");

    let metrics = get_metrics(port);
    for line in [
        "vigil_endpoint_events_received_total{source=\"http\"} 2",
        "vigil_endpoint_events_rejected_total{source=\"http\",reason=\"wrong_type\"} 1",
        "vigil_endpoint_queue_depth{worker=\"1\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(
        metrics.contains("vigil_endpoint_events_handled_total{worker="),
        "{metrics}"
    );
    stop(vigil);
}

/// Issue #14's proof with real hosts: a Linux bridge in a network
/// namespace is the switch (snmpd answering the ARP tables and BRIDGE-MIB),
/// hosts on its ports; `vigil run` polls it with the bundled SNMP endpoint
/// plugin, and a host moved from swp1 to swp3 shows in `vigil endpoints
/// show` within two polls of the move.
#[test]
fn a_host_moved_between_switch_ports_shows_in_the_history_within_two_polls() {
    use vigil_tests::netns_switch::{COMMUNITY, H1_MAC, NetnsSwitch};
    if let Err(reason) = NetnsSwitch::available() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let switch = NetnsSwitch::start().unwrap_or_else(|e| panic!("namespace switch: {e:#}"));
    let site = Site::with_config(
        4,
        &format!(
            "[endpoints]\nenabled = true\n[snmp]\ntimeout = \"2s\"\nretries = 1\n\
             [[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"2c\"\ncommunity = \"{COMMUNITY}\"\n"
        ),
    );
    site.inventory_at(&[("netns-switch", "network", switch.endpoint())], 3600);
    site.discovery("1h");
    const POLL_SECONDS: u64 = 3;
    PluginFile::new("snmp_endpoints", "endpoints", artifacts::SNMP_ENDPOINTS)
        .frequency(&format!("{POLL_SECONDS}s"))
        .set("main", "resource_filter", r#"resource_class = "network""#)
        .set("capabilities", "snmp", "yes")
        .set("snmp", "max_repetitions", "25")
        .set("sandbox", "deadline", "20s")
        .write(&site.plugins(), "snmp_endpoints");
    let vigil = site.start_logged();
    let show = || {
        let output = site.vigil(&["endpoints", "show", H1_MAC, "--json"]);
        serde_json::from_slice::<Value>(&output.stdout).unwrap_or(Value::Null)
    };
    let newest_port = |shown: &Value| {
        shown["history"][0]["events"][0]["intf_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    wait_until(
        "host 1 on swp1 in the history",
        Duration::from_secs(90),
        || newest_port(&show()) == "swp1",
    );
    let shown = show();
    assert_eq!(shown["fabric"], "lab", "{shown}");
    assert_eq!(shown["history"][0]["count"], 1, "{shown}");

    // RFC 3339 in UTC with milliseconds, as `vigil runs --json` and
    // `vigil endpoints show --json` write times: such strings sort as
    // the times do.
    let moved_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    switch.move_h1_to_swp3().expect("move host 1");
    wait_until(
        "host 1 on swp3 in the history",
        Duration::from_secs(4 * POLL_SECONDS + 60),
        || newest_port(&show()) == "swp3",
    );
    // The poll that recorded the move is at most the second run that
    // started after it.
    let seen_at = show()["history"][0]["events"][0]["ts"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The run's record is written when the run has ended, shortly after
    // its history.
    std::thread::sleep(Duration::from_secs(2));
    let output = site.vigil(&["runs", "--json", "--limit", "100000"]);
    let runs = String::from_utf8_lossy(&output.stdout).into_owned();
    let polls = runs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|run| run["plugin"] == "snmp_endpoints")
        .filter_map(|run| run["started_at"].as_str().map(str::to_owned))
        .filter(|started| *started > moved_at && *started <= seen_at)
        .count();
    assert!(
        (1..=2).contains(&polls),
        "the move reached the history after {polls} polls (moved {moved_at}, recorded {seen_at})\n{runs}"
    );
    let shown = show();
    assert_eq!(shown["history"][0]["count"], 2, "{shown}");
    assert_eq!(
        shown["history"][0]["events"][1]["intf_id"], "swp1",
        "{shown}"
    );
    stop(vigil);
    drop(switch);
}

/// Issue #14 end to end with an ACI fabric: `vigil run` with one
/// `[[endpoints.fabrics]]` entry subscribes to the APIC simulator, builds
/// the fabric (a vpc pair, EPG names), and takes a vpc learn and a move
/// pushed over the websocket into the history `vigil endpoints show`
/// reads; `/metrics` says the subscriber is in sync. The password is read
/// from a file and never appears in the log.
#[test]
fn an_aci_fabric_is_subscribed_and_its_moves_reach_the_history() {
    use vigil_tests::apic_sim::ApicSim;
    const VRF: u32 = 2949120;
    const BD: u32 = 15990734;
    const PASSWORD: &str = "sim-password-e2e-1";
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sim = runtime
        .block_on(ApicSim::start("vigil-ro", PASSWORD))
        .expect("simulator");
    let nodes: Vec<Value> = [101, 102, 103]
        .iter()
        .map(|n| json!({"dn": format!("topology/pod-1/node-{n}"), "id": n.to_string(), "role": "leaf", "address": format!("10.0.80.{n}")}))
        .collect();
    sim.set_class("fabricNode", nodes);
    sim.set_class(
        "fabricExplicitGEp",
        vec![json!({"dn": "uni/fabric/protpol/expgep-vpc-101-102", "name": "vpc-101-102", "virtualIp": "10.0.72.64/32"})],
    );
    sim.set_class(
        "fabricNodePEp",
        [101, 102]
            .iter()
            .map(|n| json!({"dn": format!("uni/fabric/protpol/expgep-vpc-101-102/nodepep-{n}"), "id": n.to_string()}))
            .collect(),
    );
    sim.set_class(
        "fabricProtPol",
        vec![json!({"dn": "uni/fabric/protpol", "pairT": "explicit"})],
    );
    sim.set_class(
        "fvCtx",
        vec![
            json!({"dn": "uni/tn-t/ctx-v1", "scope": VRF.to_string(), "name": "v1"}),
            json!({"dn": "uni/tn-infra/ctx-overlay-1", "scope": "16777199", "name": "overlay-1"}),
        ],
    );
    sim.set_class(
        "fvBD",
        vec![json!({"dn": "uni/tn-t/BD-bd1", "seg": BD.to_string(), "name": "bd1"})],
    );
    sim.set_class(
        "fvAEPg",
        vec![json!({"dn": "uni/tn-t/ap-a/epg-web", "scope": VRF.to_string(), "pcTag": "32771"})],
    );
    sim.set_class(
        "fvRsBd",
        vec![json!({"dn": "uni/tn-t/ap-a/epg-web/rsbd", "tDn": "uni/tn-t/BD-bd1"})],
    );
    let mac = "00:50:56:01:00:01";
    let dn = |node: u32| {
        format!(
            "topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/mac-{mac}"
        )
    };
    let learn = |node: u32, flags: &str, intf: &str| {
        json!({"dn": dn(node), "status": "created", "flags": flags, "ifId": intf,
               "pcTag": "32771", "encap": "vlan-101"})
    };
    // Known at the build: on the vpc pair (both peers).
    sim.set_class(
        "epmMacEp",
        vec![
            learn(101, "local,vpc-attached", "po1"),
            learn(102, "local,vpc-attached", "po2"),
        ],
    );

    let port = vigil_tests::servers::free_tcp_port().expect("port");
    let site = Site::with_config(
        4,
        &format!(
            "[outputs.prometheus]\nlisten = \"127.0.0.1:{port}\"\n[endpoints]\nenabled = true\n\
             [[endpoints.fabrics]]\nname = \"fab1\"\napic = \"{}\"\nusername = \"vigil-ro\"\n\
             password = {{ file = \"apic.password\" }}\nsubscription_refresh = \"5s\"\n",
            sim.url()
        ),
    );
    std::fs::write(site.path("apic.password"), PASSWORD).expect("password file");
    let check = site.vigil(&["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let vigil = site.start_logged();
    let show = || {
        let output = site.vigil(&["endpoints", "show", mac, "--json"]);
        serde_json::from_slice::<Value>(&output.stdout).unwrap_or(Value::Null)
    };
    let vpc = (101u64 << 16) + 102;
    wait_until(
        "the build's vpc learn in the history",
        Duration::from_secs(60),
        || show()["events"][0]["node"] == vpc,
    );
    let shown = show();
    assert_eq!(
        shown["events"][0]["epg_name"], "uni/tn-t/ap-a/epg-web",
        "{shown}"
    );

    // A move to leaf 103, pushed over the websocket once in sync.
    wait_until("a websocket to push on", Duration::from_secs(30), || {
        sim.open_websockets() > 0
    });
    wait_until("the move to 103", Duration::from_secs(30), || {
        sim.notify("epmMacEp", vec![learn(103, "local", "eth1/7")]);
        std::thread::sleep(Duration::from_millis(500));
        show()["events"][0]["node"] == 103
    });
    let shown = show();
    assert_eq!(shown["events"][0]["intf_id"], "eth1/7", "{shown}");
    assert_eq!(shown["events"][1]["node"], vpc, "{shown}");
    let metrics = get_metrics(port);
    for line in [
        "vigil_endpoint_subscriber_state{fabric=\"fab1\",state=\"in_sync\"} 1",
        "vigil_endpoint_subscriber_state{fabric=\"fab1\",state=\"reconnecting\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(
        metrics.contains("vigil_endpoint_events_received_total{source=\"apic\"}"),
        "{metrics}"
    );
    stop(vigil);
    let log = std::fs::read_to_string(site.path("vigil.log")).unwrap_or_default();
    assert!(log.contains("APIC subscriber started"), "{log}");
    assert!(!log.contains(PASSWORD), "the password reached the log");
    drop(sim);
}
