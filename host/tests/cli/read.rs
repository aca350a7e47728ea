//! The read commands as an operator and a script use them: `--json` shapes
//! (RFC 3339 times, stable fields), the filters of `metrics` and `runs`,
//! tables that keep long ids and IPv6 endpoints whole, every agent in
//! `status`, and `vigil enrichment`. Each test writes a site's store
//! directly, then runs the real binary on it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use vigil_host::model::{
    Datetime, Dimension, EnrichmentGroup, EnrichmentSet, Metric, MetricType, MetricValue,
    MetricsGroup, Resource,
};
use vigil_host::store::sqlite::SqliteStorage;
use vigil_host::store::{HostStatus, ResourceSettings, RunRecord, Storage};
use vigil_tests::{PluginFile, artifacts};

/// A resource id of 60 characters, longer than any fixed column was.
const LONG_ID: &str = "core-router-01.dc-frankfurt-3.example-networks.internal.lab1";
const IPV6: &str = "[2001:db8::1]:161";

fn vigil(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("VIGIL_SITE")
        .output()
        .expect("running vigil")
}

/// A site `lab` in `dir` (`extra` appended to its config) and its store.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Site {
    fn new(extra: &str) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("site.toml");
        std::fs::write(
            &config,
            format!("[site]\nname = \"lab\"\n[storage]\npath = \"vigil.db\"\n{extra}"),
        )
        .expect("site.toml");
        Site { dir, config }
    }

    fn store(&self) -> SqliteStorage {
        SqliteStorage::open(&self.dir.path().join("vigil.db")).expect("database")
    }

    /// `vigil --site SITE args...`: exit code, stdout, stderr.
    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut all = vec!["--site", self.config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let output = vigil(self.dir.path(), &all);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The JSON lines of a command that must succeed.
    fn json(&self, args: &[&str]) -> Vec<Value> {
        let (code, out, err) = self.run(args);
        assert_eq!(code, Some(0), "{args:?}: {out}{err}");
        out.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
            .collect()
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// `2026-12-07T02:10:06.123Z`: RFC 3339, UTC, milliseconds.
fn is_rfc3339_utc_millis(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        chrono::DateTime::parse_from_rfc3339(text).is_ok()
            && text.len() == 24
            && text.ends_with('Z')
            && text.as_bytes()[19] == b'.'
    })
}

fn epoch(value: &Value) -> f64 {
    value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(f64::NAN, |t| t.timestamp_millis() as f64 / 1000.0)
}

/// The character offset of `column` in the table's header (the first
/// line naming it), and the offsets of the cells `cell_of` picks out of
/// the lines after it: a table is aligned when they are all equal.
fn column_offsets(
    text: &str,
    column: &str,
    cell_of: impl Fn(&str) -> Option<String>,
) -> Vec<usize> {
    let mut lines = text.lines().skip_while(|l| !l.contains(column));
    let header = lines.next().expect("a header naming the column");
    let mut offsets = vec![header.find(column).expect("the column in the header")];
    for line in lines {
        if let Some(cell) = cell_of(line) {
            offsets.push(line.find(&cell).expect("the cell in its row"));
        }
    }
    offsets
}

fn store_resources(store: &SqliteStorage, at: f64) {
    let mut long = Resource::named(LONG_ID, IPV6);
    long.class = "network".into();
    long.type_ = "juniper".into();
    long.metadata = vec![("os_version".into(), "21.4R3".into())];
    let mut short = Resource::named("sw1", "127.0.0.1");
    short.class = "network".into();
    let policy = ResourceSettings::new("lab").policy(std::time::Duration::from_secs(600), 10, &[]);
    vigil_tests::block_on(store.upsert_resources("inventory", &[long, short], &policy, at))
        .expect("resources");
}

#[test]
fn resources_keep_long_ids_and_ipv6_endpoints_whole_and_print_json() {
    let site = Site::new("");
    let at = now();
    store_resources(&site.store(), at);
    let (code, table, err) = site.run(&["resources"]);
    assert_eq!(code, Some(0), "{err}");
    // The whole id and endpoint, and every ENDPOINT cell where the header
    // says (the old fixed 24/16-column layout pushed them right).
    assert!(
        table.contains(&format!("{LONG_ID}  lab   {IPV6}  ")),
        "{table}"
    );
    let offsets = column_offsets(&table, "ENDPOINT", |line| {
        [IPV6, "127.0.0.1"]
            .iter()
            .find(|e| line.contains(*e))
            .map(|e| (*e).to_owned())
    });
    assert_eq!(offsets.len(), 3, "{table}");
    assert!(
        offsets.iter().all(|&o| o == offsets[0]),
        "{offsets:?}\n{table}"
    );

    let resources = site.json(&["resources", "--json"]);
    assert_eq!(resources.len(), 2);
    let long = resources
        .iter()
        .find(|r| r["resource_id"] == LONG_ID)
        .expect("the long id");
    assert_eq!(long["resource_endpoint"], IPV6);
    assert_eq!(long["resource_class"], "network");
    assert_eq!(long["resource_type"], "juniper");
    assert_eq!(long["resource_metadata"]["os_version"], "21.4R3");
    assert_eq!(long["discovered_by"], "inventory");
    for field in ["first_seen", "last_seen", "expires_at"] {
        assert!(is_rfc3339_utc_millis(&long[field]), "{field}: {long}");
    }
    assert!(
        (epoch(&long["expires_at"]) - (at + 600.0)).abs() < 0.01,
        "{long}"
    );
    // The filter still applies.
    let only = site.json(&[
        "resources",
        "--json",
        "--filter",
        r#"resource_type = "juniper""#,
    ]);
    assert_eq!(only.len(), 1);
}

fn interface(resource: &str, name: &str, bits_in: u64, at: f64) -> MetricsGroup {
    let when = Datetime::from_seconds(at);
    MetricsGroup {
        group_type: "interface".into(),
        interval_seconds: 60,
        creation_timestamp: when,
        schema_version: "0.2".into(),
        resource: Resource::named(resource, IPV6).into(),
        dimensions: vec![Dimension {
            name: "interface_name".into(),
            value: name.into(),
        }],
        metrics: vec![
            Metric {
                name: "bits_in".into(),
                value: MetricValue::Unsigned(bits_in),
                type_: MetricType::Counter,
                creation_timestamp: when,
            },
            Metric {
                name: "utilization".into(),
                value: MetricValue::Float(0.25),
                type_: MetricType::Gauge,
                creation_timestamp: when,
            },
        ],
    }
}

#[test]
fn metrics_filter_by_resource_metric_age_and_count_and_print_json() {
    let site = Site::new("");
    let store = site.store();
    let now = now();
    store_resources(&store, now);
    vigil_tests::block_on(store.store_latest(&[
        interface(LONG_ID, "ge-0/0/0", u64::MAX, now - 3600.0).into(),
        interface(LONG_ID, "ge-0/0/1", 7, now - 5.0).into(),
        interface("sw1", "eth0", 1, now - 5.0).into(),
    ]))
    .expect("latest");

    let all = site.json(&["metrics", "--json"]);
    assert_eq!(all.len(), 6);
    let exact = all
        .iter()
        .find(|v| {
            v["resource_id"] == LONG_ID
                && v["dimensions"]["interface_name"] == "ge-0/0/0"
                && v["metric"] == "bits_in"
        })
        .expect("the old counter");
    // Exact, as a number; the time RFC 3339.
    assert_eq!(exact["value"].as_u64(), Some(u64::MAX), "{exact}");
    assert_eq!(exact["metric_type"], "counter");
    assert_eq!(exact["group_type"], "interface");
    assert!(is_rfc3339_utc_millis(&exact["at"]), "{exact}");

    let ids = |values: &[Value]| -> Vec<String> {
        values
            .iter()
            .map(|v| {
                format!(
                    "{} {} {}",
                    v["resource_id"].as_str().unwrap_or(""),
                    v["dimensions"]["interface_name"].as_str().unwrap_or(""),
                    v["metric"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let long_bits = |name: &str| format!("{LONG_ID} {name} bits_in");
    assert_eq!(
        ids(&site.json(&[
            "metrics",
            "--json",
            "--resource",
            LONG_ID,
            "--metric",
            "bits_in"
        ])),
        [long_bits("ge-0/0/0"), long_bits("ge-0/0/1")]
    );
    assert_eq!(
        ids(&site.json(&["metrics", "--json", "--metric", "bits_in", "--since", "1m"])),
        [long_bits("ge-0/0/1"), "sw1 eth0 bits_in".to_owned()]
    );
    assert_eq!(site.json(&["metrics", "--json", "--limit", "4"]).len(), 4);
    // The limit counts what the filter lets through.
    assert_eq!(
        ids(&site.json(&[
            "metrics",
            "--json",
            "--filter",
            r#"resource_id = "sw1""#,
            "--limit",
            "1"
        ])),
        ["sw1 eth0 bits_in"]
    );
    let (code, _, err) = site.run(&["metrics", "--since", "yesterday"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--since: \"yesterday\" is not a duration"),
        "{err}"
    );

    // The table keeps the 60-character id whole and aligned.
    let (code, table, err) = site.run(&["metrics", "--metric", "utilization"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        table
            .lines()
            .filter(|l| l.starts_with(&format!("{LONG_ID}  interface  ")))
            .count()
            == 2,
        "{table}"
    );
    let offsets = column_offsets(&table, "METRIC", |line| {
        line.contains("utilization")
            .then(|| "utilization".to_owned())
    });
    assert!(
        offsets.iter().all(|&o| o == offsets[0]),
        "{offsets:?}\n{table}"
    );
}

fn run_record(plugin: &str, resource: Option<&str>, outcome: &str, started_at: f64) -> RunRecord {
    RunRecord {
        plugin: plugin.into(),
        resource_id: resource.map(Into::into),
        scheduled_at: started_at - 0.5,
        started_at,
        finished_at: started_at + 0.25,
        outcome: outcome.into(),
        detail: format!("{outcome} detail"),
    }
}

#[test]
fn runs_filter_by_resource_outcome_and_age_and_print_json() {
    let site = Site::new("");
    let store = site.store();
    let now = now();
    vigil_tests::block_on(store.record_runs(&[
        run_record("inventory", None, "ok", now - 7200.0),
        run_record("beat", Some(LONG_ID), "ok", now - 3600.0),
        run_record("beat", Some(LONG_ID), "trap.deadline", now - 30.0),
        run_record("beat", Some("sw1"), "ok", now - 20.0),
        run_record("health", Some("sw1"), "trap.deadline", now - 10.0),
    ]))
    .expect("runs");

    let runs = site.json(&["runs", "--json"]);
    assert_eq!(runs.len(), 5);
    let newest = &runs[0];
    assert_eq!(newest["plugin"], "health");
    assert_eq!(newest["resource_id"], "sw1");
    assert_eq!(newest["outcome"], "trap.deadline");
    assert_eq!(newest["detail"], "trap.deadline detail");
    for field in ["scheduled_at", "started_at", "finished_at"] {
        assert!(is_rfc3339_utc_millis(&newest[field]), "{field}: {newest}");
    }
    assert!((epoch(&newest["started_at"]) - (now - 10.0)).abs() < 0.01);
    assert_eq!(newest["late_ms"], 500.0);
    assert_eq!(newest["duration_ms"], 250.0);
    assert_eq!(runs[4]["resource_id"], Value::Null);

    let picked = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["runs", "--json"];
        all.extend_from_slice(args);
        site.json(&all)
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["plugin"].as_str().unwrap_or(""),
                    r["resource_id"].as_str().unwrap_or("-")
                )
            })
            .collect()
    };
    assert_eq!(picked(&["--resource", "sw1"]), ["health sw1", "beat sw1"]);
    assert_eq!(
        picked(&["--outcome", "trap.deadline"]),
        ["health sw1", format!("beat {LONG_ID}").as_str()]
    );
    assert_eq!(
        picked(&["--since", "1m"]),
        ["health sw1", "beat sw1", format!("beat {LONG_ID}").as_str()]
    );
    assert_eq!(
        picked(&[
            "--plugin",
            "beat",
            "--resource",
            LONG_ID,
            "--since",
            "2h",
            "--limit",
            "1"
        ]),
        [format!("beat {LONG_ID}")]
    );
    assert_eq!(picked(&["--outcome", "ok", "--since", "1d"]).len(), 3);
    // A misspelt outcome is an error naming the known ones, not silence.
    let (code, _, err) = site.run(&["runs", "--outcome", "timeout"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "--outcome \"timeout\" is not a run outcome (one of: ok, plugin_error, trap.deadline"
        ),
        "{err}"
    );

    // The table: the whole id, outcomes aligned under their header.
    let (code, table, err) = site.run(&["runs"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        table.contains(&format!("  beat       {LONG_ID}  trap.deadline")),
        "{table}"
    );
    let offsets = column_offsets(&table, "OUTCOME", |line| {
        ["trap.deadline", " ok "]
            .iter()
            .find(|o| line.contains(*o))
            .map(|o| o.trim().to_owned())
    });
    assert_eq!(offsets.len(), 6, "{table}");
    assert!(
        offsets.iter().all(|&o| o == offsets[0]),
        "{offsets:?}\n{table}"
    );
}

fn agent_status(agent: &str, updated_at: f64) -> HostStatus {
    HostStatus {
        agent_id: agent.into(),
        role: "agent".into(),
        site: "lab".into(),
        pid: 4242,
        started_at: updated_at - 600.0,
        updated_at,
        resources: 3,
        ..HostStatus::default()
    }
}

#[test]
fn status_shows_every_agent_and_marks_the_stale_ones() {
    let site = Site::new("");
    let store = site.store();
    let now = now();
    let long_agent = format!("{LONG_ID}-agent");
    vigil_tests::block_on(store.put_status(&agent_status("agent-b", now - 120.0))).expect("b");
    vigil_tests::block_on(store.put_status(&agent_status(&long_agent, now))).expect("long");
    vigil_tests::block_on(store.put_status(&agent_status("agent-a", now - 1.0))).expect("a");

    // Two live, one stale: running.
    let (code, text, err) = site.run(&["status"]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.starts_with("site lab: 2 of 3 agents live"), "{text}");
    let row = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row for {id}:\n{text}"))
            .to_owned()
    };
    assert!(row("agent-a").contains(" live "), "{text}");
    assert!(row(&long_agent).contains(" live "), "{text}");
    assert!(row("agent-b").contains(" stale "), "{text}");
    assert!(
        text.contains("agent agent-b (pid 4242, role agent): STALE: no status for 120s"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "agent {long_agent} (pid 4242, role agent): running;"
        )),
        "{text}"
    );
    // The STATE column is aligned despite the long id.
    let offsets = column_offsets(&text, "STATE", |line| {
        line.starts_with("agent-")
            .then(|| {
                if line.contains(" stale ") {
                    "stale"
                } else {
                    "live"
                }
                .to_owned()
            })
            .or_else(|| line.starts_with(LONG_ID).then(|| "live".to_owned()))
    });
    assert_eq!(offsets.len(), 4, "{text}");
    assert!(
        offsets.iter().all(|&o| o == offsets[0]),
        "{offsets:?}\n{text}"
    );

    let status = &site.json(&["status", "--json"])[0];
    assert_eq!(status["site"], "lab");
    assert_eq!(status["live_agents"], 2);
    assert_eq!(status["stale_after_seconds"], 10.0);
    assert!(is_rfc3339_utc_millis(&status["checked_at"]), "{status}");
    let agents: Vec<(&str, &str)> = status["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            (
                a["agent_id"].as_str().unwrap_or(""),
                a["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        agents,
        [
            ("agent-a", "live"),
            (long_agent.as_str(), "live"),
            ("agent-b", "stale")
        ]
    );
    let b = &status["agents"][2];
    assert_eq!(b["role"], "agent");
    assert_eq!(b["pid"], 4242);
    assert_eq!(b["resources"], 3);
    assert!(is_rfc3339_utc_millis(&b["heartbeat_at"]), "{b}");
    assert!(is_rfc3339_utc_millis(&b["started_at"]), "{b}");
    assert!(
        (epoch(&b["heartbeat_at"]) - (now - 120.0)).abs() < 0.01,
        "{b}"
    );
    assert!(
        (b["heartbeat_age_seconds"].as_f64().unwrap_or(0.0) - 120.0).abs() < 5.0,
        "{b}"
    );

    // Only stale agents left: not running, exit 3 (with --json too).
    vigil_tests::block_on(store.put_status(&agent_status("agent-a", now - 60.0))).expect("a");
    vigil_tests::block_on(store.put_status(&agent_status(&long_agent, now - 30.0))).expect("long");
    let (code, text, _) = site.run(&["status"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.starts_with("site lab: NOT RUNNING"), "{text}");
    let (code, json, _) = site.run(&["status", "--json"]);
    assert_eq!(code, Some(3), "{json}");
    let json: Value = serde_json::from_str(json.trim()).expect("one JSON line");
    assert_eq!(json["live_agents"], 0);
}

#[test]
fn plugins_list_check_and_run_print_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    let good = PluginFile::new("heartbeat", "polling", artifacts::HEARTBEAT)
        .frequency("30s")
        .write(&plugins, "a");
    let bad = PluginFile::new("broken", "polling", artifacts::HEARTBEAT)
        .frequency("0")
        .write(&plugins, "b");
    let lines = |output: &Output| -> Vec<Value> {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    };
    let path = |p: &PathBuf| p.to_str().expect("utf-8 path").to_owned();

    let output = vigil(
        dir.path(),
        &["plugins", "list", "--json", "--dir", &path(&plugins)],
    );
    assert_eq!(output.status.code(), Some(78));
    let listed = lines(&output);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let loaded = listed
        .iter()
        .find(|p| p["ok"] == true)
        .expect("the good one");
    assert_eq!(loaded["name"], "heartbeat");
    assert_eq!(loaded["kind"], "polling");
    assert_eq!(loaded["interval_seconds"], 30.0);
    assert_eq!(loaded["path"], path(&good));
    assert_eq!(loaded["error"], Value::Null);
    let broken = listed
        .iter()
        .find(|p| p["ok"] == false)
        .expect("the bad one");
    assert_eq!(broken["path"], path(&bad));
    assert!(
        broken["error"]
            .as_str()
            .is_some_and(|e| e.contains("[main] execute_frequency")),
        "{broken}"
    );

    let output = vigil(
        dir.path(),
        &["plugins", "check", "--json", &path(&good), &path(&bad)],
    );
    assert_eq!(output.status.code(), Some(78));
    let checked = lines(&output);
    assert_eq!(checked.len(), 2);
    let details = &checked[0]["details"];
    assert_eq!(checked[0]["name"], "heartbeat");
    assert_eq!(details["exports"], "vigil:plugin/poller@0.1.0");
    assert_eq!(details["module_sha256"].as_str().map(str::len), Some(64));
    assert!(
        details["imports"].as_array().is_some_and(|i| !i.is_empty()),
        "{details}"
    );
    assert_eq!(checked[1]["ok"], false);
    assert_eq!(checked[1]["details"], Value::Null);

    let output = vigil(
        dir.path(),
        &[
            "plugins",
            "run",
            "--json",
            &path(&good),
            "--resource-id",
            "sw1",
            "--endpoint",
            IPV6,
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = &lines(&output)[0];
    assert_eq!(run["plugin"], "heartbeat");
    assert_eq!(run["kind"], "polling");
    assert_eq!(run["resource_id"], "sw1");
    assert_eq!(run["outcome"], "ok");
    let groups = run["metrics_groups"].as_array().expect("groups");
    assert!(
        groups
            .iter()
            .any(|g| g["group_type"] == "heartbeat" && g["metrics"]["up"] == 1),
        "{run}"
    );
}

#[test]
fn enrichment_shows_the_redis_cache() {
    use vigil_host::coordination::redis::connect;
    use vigil_host::coordination::shared::RedisEnrichments;
    use vigil_host::pipeline::enrichment_cache::EnrichmentCache;

    // Embedded, before any `vigil run`: no database yet, said.
    let site = Site::new("");
    let (code, _, err) = site.run(&["enrichment"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("database"), "{err}");

    let redis = vigil_tests::redis_servers::RedisServer::start().expect("redis-server");
    let site = Site::new(&format!(
        "[cache]\nbackend = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ));
    let now = now();
    let group = |namespace: &str, key: &str| EnrichmentGroup {
        namespace: namespace.into(),
        ttl_seconds: 600,
        sets: vec![EnrichmentSet {
            key: key.into(),
            values: vec![
                ("interface_name".into(), "ge-0/0/0".into()),
                ("media_type".into(), "ethernetCsmacd".into()),
            ],
        }],
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let connection = connect(&redis.url()).await.expect("connect");
        let cache = EnrichmentCache::shared(RedisEnrichments::new(connection, "lab"));
        let stored = cache
            .put(
                "interfaces",
                LONG_ID,
                vec![group("interface", "1")],
                now,
                None,
            )
            .await;
        assert_eq!(stored.stored, 1);
        let stored = cache
            .put(
                "inventory",
                "sw1",
                vec![group("inventory", "chassis")],
                now,
                None,
            )
            .await;
        assert_eq!(stored.stored, 1);
    });

    let all = site.json(&["enrichment", "--json"]);
    assert_eq!(all.len(), 2, "{all:?}");
    let first = &all[0];
    assert_eq!(first["resource_id"], LONG_ID);
    assert_eq!(first["namespace"], "interface");
    assert_eq!(first["plugin"], "interfaces");
    assert_eq!(first["sets"]["1"]["media_type"], "ethernetCsmacd");
    assert!(is_rfc3339_utc_millis(&first["expires_at"]), "{first}");
    assert!(
        (epoch(&first["expires_at"]) - (now + 600.0)).abs() < 0.01,
        "{first}"
    );
    assert_eq!(
        site.json(&["enrichment", "--json", "--resource", "sw1"])
            .len(),
        1
    );
    let by_namespace = site.json(&["enrichment", "--json", "--namespace", "interface"]);
    assert_eq!(by_namespace.len(), 1);
    assert_eq!(by_namespace[0]["resource_id"], LONG_ID);
    assert!(
        site.json(&[
            "enrichment",
            "--json",
            "--resource",
            "sw1",
            "--namespace",
            "interface"
        ])
        .is_empty()
    );

    let (code, table, err) = site.run(&["enrichment"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        table.contains(&format!("{LONG_ID}  interface  interfaces")),
        "{table}"
    );
    assert!(
        table.contains("interface_name=\"ge-0/0/0\" media_type=\"ethernetCsmacd\""),
        "{table}"
    );
}

/// A `vigil run` of the test's own, killed (SIGKILL) when dropped.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Two real agents of one site each write their own status; one killed
/// goes stale while the other stays live (and `status` still exits 0).
#[test]
fn each_running_agent_writes_its_own_status_and_a_dead_one_goes_stale() {
    let site = Site::new("[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n");
    std::fs::create_dir(site.dir.path().join("plugins")).expect("plugins dir");
    let start = |id: &str| {
        Agent(
            Command::new(env!("CARGO_BIN_EXE_vigil"))
                .args(["--site", site.config.to_str().expect("utf-8 path")])
                .args(["run", "--role", "agent", "--agent-id", id])
                .env("XDG_CACHE_HOME", site.dir.path().join("xdg"))
                .env_remove("VIGIL_SITE")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("vigil run"),
        )
    };
    let status = || -> Value {
        let (_, out, _) = site.run(&["status", "--json"]);
        serde_json::from_str(out.trim()).unwrap_or(Value::Null)
    };
    let states = |status: &Value| -> Vec<(String, String, String)> {
        status["agents"]
            .as_array()
            .map(|agents| {
                agents
                    .iter()
                    .map(|a| {
                        let text = |k: &str| a[k].as_str().unwrap_or("").to_owned();
                        (text("agent_id"), text("state"), text("role"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let _a = start("agent-a");
    let mut b = start("agent-b");
    let both = |s: &str| {
        vec![
            ("agent-a".to_owned(), s.to_owned(), "agent".to_owned()),
            ("agent-b".to_owned(), s.to_owned(), "agent".to_owned()),
        ]
    };
    wait_for(
        "both agents live",
        std::time::Duration::from_secs(60),
        || states(&status()) == both("live"),
    );
    let _ = b.0.kill();
    let _ = b.0.wait();
    wait_for("agent-b stale", std::time::Duration::from_secs(30), || {
        states(&status())
            == [
                ("agent-a".to_owned(), "live".to_owned(), "agent".to_owned()),
                ("agent-b".to_owned(), "stale".to_owned(), "agent".to_owned()),
            ]
    });
    let (code, text, err) = site.run(&["status"]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.starts_with("site lab: 1 of 2 agents live"), "{text}");
}
