//! Many agents sharing one site through a real Redis and a real Kafka-API
//! broker (tansu), with the real `vigil` binary: every (plugin, resource)
//! runs once per window across the agents, the load is even, a killed
//! agent's work moves within two intervals and comes back when it returns,
//! and outages of Redis and of the broker crash nothing and lose nothing
//! the agent accepted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vigil_tests::kafka_servers::Tansu;
use vigil_tests::redis_servers::RedisServer;
use vigil_tests::{PluginFile, artifacts};

const INTERVAL: f64 = 2.0;

/// These tests each run several vigil processes on a 2-core machine: one
/// at a time, so neither starves the other's heartbeats.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn vigil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A site shared by several processes, each with its own site file (same
/// site name, own database and JSON lines file).
struct Cluster {
    dir: tempfile::TempDir,
    redis: RedisServer,
    broker: Tansu,
}

impl Cluster {
    fn new(resources: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["plugins", "data"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let entries: Vec<Value> = (0..resources)
            .map(|i| {
                serde_json::json!({
                    "resource_id": format!("dev-{i:04}"), "resource_site": "lab",
                    "resource_class": "network", "resource_subclass": "switch",
                    "resource_type": "test", "resource_endpoint": "127.0.0.1",
                    "resource_metadata": {}, "resource_ttl": 3600,
                })
            })
            .collect();
        std::fs::write(
            dir.path().join("data/resources.json"),
            serde_json::to_vec(&entries).expect("json"),
        )
        .expect("inventory");
        PluginFile::new("inventory", "discovery", artifacts::DISCOVERY_JSON_FILE)
            .frequency("5s")
            .set("capabilities", "files", "../data")
            .set("json_file", "path", "resources.json")
            .write(&dir.path().join("plugins"), "inventory");
        PluginFile::new("beat", "polling", artifacts::HEARTBEAT)
            .frequency("2s")
            .set("main", "resource_filter", r#"resource_class = "network""#)
            .write(&dir.path().join("plugins"), "beat");
        Cluster {
            dir,
            redis: RedisServer::start().expect("redis-server"),
            broker: Tansu::start().expect("tansu"),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// The site file of process `name`.
    fn site(&self, name: &str) -> PathBuf {
        let path = self.path(&format!("site-{name}.toml"));
        if !path.exists() {
            let text = format!(
                "[site]\nname = \"lab\"\n[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n\
                 [storage]\npath = \"state-{name}/vigil.db\"\n[outputs]\njson_lines = \"out-{name}.jsonl\"\n\
                 [sandbox]\nmax_concurrent_runs = 16\n\
                 [capabilities]\nallowed = [\"files\"]\nfile_roots = [\"data\"]\n\
                 [cache]\nbackend = \"redis\"\n\
                 [coordination]\nbackend = \"redis\"\nurl = \"{redis}\"\nheartbeat = \"250ms\"\n\
                 member_timeout = \"2s\"\njoin_grace = \"1s\"\nlease_ttl = \"3s\"\nrenew_every = \"1s\"\n\
                 [bus]\nbackend = \"kafka\"\nbrokers = \"{brokers}\"\npartitions = 3\n",
                redis = self.redis.url(),
                brokers = self.broker.brokers(),
            );
            std::fs::write(&path, text).expect("site file");
        }
        path
    }

    fn start(&self, name: &str, args: &[&str]) -> Child {
        Command::new(vigil_bin())
            .arg("--site")
            .arg(self.site(name))
            .args(args)
            .env("XDG_CACHE_HOME", self.path("xdg"))
            .env("VIGIL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.path(&format!("{name}.log")))
                    .map_or(Stdio::null(), Stdio::from),
            )
            .spawn()
            .expect("start vigil")
    }

    fn agent(&self, id: &str) -> Child {
        self.start(id, &["run", "--role", "agent", "--agent-id", id])
    }

    /// Every run agent `id` recorded.
    fn runs(&self, id: &str) -> Vec<Value> {
        let output = Command::new(vigil_bin())
            .arg("--site")
            .arg(self.site(id))
            .args(["runs", "--json", "--limit", "1000000"])
            .output()
            .expect("vigil runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .map(epoch_times)
            .collect()
    }

    fn consumed(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.path(&format!("out-{name}.jsonl")))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// How long a stop may take: runs in flight end by their deadline, and a
/// publisher whose broker is still away waits up to its close-flush bound
/// (`CLOSE_FLUSH_TIMEOUT`, 30 s) before counting the rest as lost; plus
/// slack for a loaded machine.
const STOP_WITHIN: Duration = Duration::from_secs(60);

fn terminate(child: &mut Child, log: &Path) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < STOP_WITHIN {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "vigil exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    panic!(
        "vigil did not stop within {STOP_WITHIN:?} of SIGTERM; log tail:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

fn assert_alive(child: &mut Child, what: &str, log: &Path) {
    if let Ok(Some(status)) = child.try_wait() {
        panic!(
            "{what} exited ({status}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// A run of `vigil runs --json` with its RFC 3339 times as epoch seconds,
/// which the checks compare.
fn epoch_times(mut run: Value) -> Value {
    for field in ["scheduled_at", "started_at", "finished_at"] {
        let at = run[field]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis() as f64 / 1000.0);
        run[field] = serde_json::json!(at);
    }
    run
}

/// `(resource, scheduled_at, agent)` of every polling run, by resource.
fn windows(runs: &[(String, Value)]) -> BTreeMap<String, Vec<(f64, String)>> {
    let mut by_resource: BTreeMap<String, Vec<(f64, String)>> = BTreeMap::new();
    for (agent, run) in runs {
        if run["plugin"] != "beat" {
            continue;
        }
        let (Some(resource), Some(at)) =
            (run["resource_id"].as_str(), run["scheduled_at"].as_f64())
        else {
            continue;
        };
        by_resource
            .entry(resource.to_owned())
            .or_default()
            .push((at, agent.clone()));
    }
    for runs in by_resource.values_mut() {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    by_resource
}

#[test]
fn three_agents_share_the_work_and_hand_it_over() {
    let _heavy = one_at_a_time();
    let cluster = Cluster::new(600);
    let ids = ["agent-1", "agent-2", "agent-3"];
    let mut agents: HashMap<&str, Child> = ids.iter().map(|id| (*id, cluster.agent(id))).collect();
    let mut consumer = cluster.start("consumer", &["consume"]);

    // Steady state: ten windows after start-up, the join grace and the
    // first discovery.
    std::thread::sleep(Duration::from_secs(6));
    let steady_from = now();
    std::thread::sleep(Duration::from_secs_f64(10.0 * INTERVAL));
    let steady_to = now();

    // Kill agent-3 outright (no deregistration, leases left to expire).
    let victim = agents.remove("agent-3").expect("agent-3");
    let mut victim = victim;
    let _ = victim.kill();
    let _ = victim.wait();
    let killed_at = now();
    std::thread::sleep(Duration::from_secs_f64(5.0 * INTERVAL));

    // Bring it back under the same id.
    let returned_at = now();
    agents.insert("agent-3", cluster.agent("agent-3"));
    std::thread::sleep(Duration::from_secs_f64(6.0 * INTERVAL));
    let ended_at = now();

    for id in ids {
        let child = agents.get_mut(id).expect("agent");
        assert_alive(child, id, &cluster.path(&format!("{id}.log")));
        terminate(child, &cluster.path(&format!("{id}.log")));
    }
    std::thread::sleep(Duration::from_secs(2));
    terminate(&mut consumer, &cluster.path("consumer.log"));

    let runs: Vec<(String, Value)> = ids
        .iter()
        .flat_map(|id| {
            cluster
                .runs(id)
                .into_iter()
                .map(move |r| (id.to_string(), r))
        })
        .collect();
    let by_resource = windows(&runs);
    assert_eq!(by_resource.len(), 600, "every resource was polled");

    // Exactly once per window: no two runs of a resource closer than half
    // an interval (no double poll, ever, including the handovers), and in
    // steady state no window missed.
    for (resource, runs) in &by_resource {
        for pair in runs.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(
                gap > 0.5 * INTERVAL,
                "{resource} ran twice within {gap:.2}s: {pair:?}"
            );
            if pair[0].0 >= steady_from && pair[1].0 <= steady_to {
                assert!(
                    gap < 1.5 * INTERVAL,
                    "{resource} missed a window in steady state: {pair:?}"
                );
            }
        }
    }

    // Even load in steady state: each agent within 20% of a third.
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for runs in by_resource.values() {
        for (at, agent) in runs {
            if (steady_from..steady_to).contains(at) {
                *load
                    .entry(ids.iter().find(|id| *id == agent).copied().unwrap_or("?"))
                    .or_default() += 1;
            }
        }
    }
    let total: usize = load.values().sum();
    for id in ids {
        let share = *load.get(id).unwrap_or(&0) as f64 / total as f64;
        assert!(
            (share - 1.0 / 3.0).abs() < 0.2 / 3.0,
            "{id} ran {share:.3} of the steady-state load: {load:?}"
        );
    }

    // Handover: every resource agent-3 owned ran elsewhere within two
    // intervals of the kill.
    let owned_by_victim: Vec<&String> = by_resource
        .iter()
        .filter(|(_, runs)| {
            runs.iter()
                .any(|(at, agent)| agent == "agent-3" && (steady_from..steady_to).contains(at))
        })
        .map(|(resource, _)| resource)
        .collect();
    assert!(!owned_by_victim.is_empty());
    for resource in &owned_by_victim {
        let taken_over = by_resource[*resource]
            .iter()
            .find(|(at, agent)| *at > killed_at && agent != "agent-3");
        let Some((at, _)) = taken_over else {
            panic!("{resource} was never picked up after agent-3 died");
        };
        assert!(
            *at - killed_at <= 2.0 * INTERVAL + 0.5,
            "{resource} picked up {:.2}s after the kill",
            at - killed_at
        );
    }

    // Return: after its join grace, agent-3 takes back a fair share.
    let late: usize = by_resource
        .values()
        .flat_map(|runs| runs.iter())
        .filter(|(at, agent)| {
            agent == "agent-3" && *at > returned_at + 2.0 * INTERVAL && *at < ended_at - 0.5
        })
        .count();
    let windows_late = (ended_at - 0.5 - (returned_at + 2.0 * INTERVAL)) / INTERVAL;
    let per_window = late as f64 / windows_late;
    let steady_per_window =
        *load.get("agent-3").unwrap_or(&0) as f64 / ((steady_to - steady_from) / INTERVAL);
    assert!(
        per_window > 0.8 * steady_per_window,
        "agent-3 took back {per_window:.1} runs per window, had {steady_per_window:.1}"
    );

    // The bus carried the agents' output to the consumer.
    let consumed = cluster.consumed("consumer");
    assert!(
        consumed
            .iter()
            .filter(|g| g["metrics_group_type"] == "heartbeat")
            .count()
            > 1000,
        "the consumer received {} groups",
        consumed.len()
    );
}

#[test]
fn redis_and_broker_outages_crash_nothing_and_lose_nothing_accepted() {
    let _heavy = one_at_a_time();
    let mut cluster = Cluster::new(50);
    let mut agent = cluster.agent("solo");
    let mut consumer = cluster.start("consumer", &["consume"]);
    let log = cluster.path("solo.log");
    std::thread::sleep(Duration::from_secs(5));

    // Redis goes away and comes back empty: the agent keeps running and
    // polls again once it has re-registered.
    cluster.redis.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert_alive(&mut agent, "the agent during the redis outage", &log);
    cluster.redis.restart().expect("redis back");
    let redis_back = now();
    std::thread::sleep(Duration::from_secs(6));
    assert_alive(&mut agent, "the agent after the redis outage", &log);

    // The broker goes away: polling goes on, output is buffered. (tansu
    // with memory storage comes back empty, consumer-group offsets
    // included, so a consumer started after it returns reads the new log
    // from the start: that is the consumer the buffered output must reach.)
    terminate(&mut consumer, &cluster.path("consumer.log"));
    cluster.broker.stop();
    let down_from = now();
    std::thread::sleep(Duration::from_secs(6));
    let down_to = now();
    assert_alive(&mut agent, "the agent during the broker outage", &log);
    cluster.broker.restart().expect("broker back");
    let mut consumer = cluster.start("after", &["consume"]);
    std::thread::sleep(Duration::from_secs(12));

    terminate(&mut agent, &log);
    std::thread::sleep(Duration::from_secs(3));
    terminate(&mut consumer, &cluster.path("after.log"));

    let runs = cluster.runs("solo");
    let polls_after_redis = runs
        .iter()
        .filter(|r| r["plugin"] == "beat" && r["outcome"] == "ok")
        .filter(|r| {
            r["started_at"]
                .as_f64()
                .is_some_and(|t| t > redis_back + 2.0)
        })
        .count();
    assert!(
        polls_after_redis > 50,
        "polling resumed after redis came back"
    );

    // Every poll that ran while the broker was down reached the consumer.
    let accepted: Vec<(String, f64)> = runs
        .iter()
        .filter(|r| r["plugin"] == "beat" && r["outcome"] == "ok")
        .filter(|r| {
            r["started_at"]
                .as_f64()
                .is_some_and(|t| t > down_from + 0.5 && t < down_to - 0.5)
        })
        .filter_map(|r| {
            Some((
                r["resource_id"].as_str()?.to_owned(),
                r["scheduled_at"].as_f64()?,
            ))
        })
        .collect();
    assert!(
        accepted.len() > 50,
        "{} polls during the outage",
        accepted.len()
    );
    let consumed: Vec<(String, f64)> = cluster
        .consumed("after")
        .iter()
        .filter(|g| g["metrics_group_type"] == "heartbeat")
        .filter_map(|g| {
            Some((
                g["resource"]["resource_id"].as_str()?.to_owned(),
                g["metrics_group_creation_timestamp"].as_f64()?,
            ))
        })
        .collect();
    let missing = accepted
        .iter()
        .filter(|(resource, at)| {
            !consumed
                .iter()
                .any(|(r, t)| r == resource && (t - at).abs() < 0.01)
        })
        .count();
    if missing > 0 {
        let after = consumed.iter().filter(|(_, t)| *t > down_from).count();
        let agent_log = std::fs::read_to_string(&log).unwrap_or_default();
        let kafka_lines: Vec<&str> = agent_log
            .lines()
            .filter(|l| l.contains("vigil_host::bus") || l.contains("publisher"))
            .collect();
        let consumer_log = std::fs::read_to_string(cluster.path("after.log")).unwrap_or_default();
        let consumer_lines: Vec<&str> = consumer_log
            .lines()
            .filter(|l| l.contains("ffset") || l.contains("eset") || !l.contains("librdkafka"))
            .collect();
        eprintln!(
            "{missing} of {} outage polls missing; {after} groups consumed after the outage began\nagent:\n{}\nconsumer:\n{}",
            accepted.len(),
            kafka_lines.join("\n"),
            consumer_lines.join("\n")
        );
    }
    for (resource, at) in &accepted {
        assert!(
            consumed
                .iter()
                .any(|(r, t)| r == resource && (t - at).abs() < 0.01),
            "the poll of {resource} due at {at} (during the broker outage) never reached the consumer"
        );
    }
}
