//! Endpoint workers as separate processes (issue #14): two real `vigil run
//! --role endpoint-worker` processes share the topic `<site>-endpoint-events`
//! of a real Kafka-API broker (tansu) and one history database; one is
//! killed with SIGKILL while events flow. Nothing is lost, nothing is
//! recorded twice, and every endpoint's history is in order.
//!
//! A binary of its own (like `scale.rs`): it runs several processes on a
//! 2-core machine and must not be skewed by, or skew, other tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vigil_endpoints::dispatch::key_hash;
use vigil_endpoints::model::EndpointKey;
use vigil_host::bus::kafka::{KafkaPublisher, KafkaSettings, Topic, ensure_topics};
use vigil_tests::kafka_servers::Tansu;

const SITE: &str = "ekill";
const PARTITIONS: i32 = 4;
const ENDPOINTS: u32 = 40;
const EVENTS: u32 = 30;
const BD: u32 = 15_000_001;

fn vigil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

fn mac(i: u32) -> String {
    format!("00:50:56:00:{:02X}:{:02X}", i / 256, i % 256)
}

/// Event `j` of endpoint `i`: a move to port j+1, with ts rising per
/// endpoint.
fn event(i: u32, j: u32) -> Value {
    json!({
        "fabric": "fab1", "node": 101, "vnid": BD, "type": "mac", "addr": mac(i),
        "status": if j == 0 { "created" } else { "modified" },
        "ts": 1_765_000_000.0 + f64::from(j) + f64::from(i) / 1000.0,
        "intf_id": format!("eth1/{}", j + 1), "encap": "vlan-10", "pctag": 32771,
        "flags": ["local"], "vrf": 2_949_120,
    })
}

struct Worker {
    child: Child,
    log: PathBuf,
}

fn start_worker(dir: &Path, site: &Path, id: &str) -> Worker {
    let log = dir.join(format!("{id}.log"));
    let child = Command::new(vigil_bin())
        .arg("--site")
        .arg(site)
        .args(["run", "--role", "endpoint-worker", "--agent-id", id])
        .env("XDG_CACHE_HOME", dir.join("xdg"))
        .env("VIGIL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_or(Stdio::null(), Stdio::from))
        .spawn()
        .expect("start vigil");
    Worker { child, log }
}

/// (endpoint mac, count, interfaces newest first, ts newest first) of every
/// history record in the database.
fn histories(db: &Path) -> Vec<(String, u64, Vec<String>, Vec<f64>)> {
    let Ok(connection) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let _ = connection.busy_timeout(Duration::from_secs(5));
    let Ok(mut statement) = connection.prepare("SELECT addr, count, body FROM ept_history") else {
        return Vec::new();
    };
    let rows = statement.query_map([], |row| {
        let body = vigil_host::store::endpoints::decode_history_body(row.get_ref(2)?)
            .map_err(|e| rusqlite::Error::InvalidColumnName(format!("history body: {e}")))?;
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, body))
    });
    let Ok(rows) = rows else {
        return Vec::new();
    };
    rows.map(|row| row.expect("a readable history row"))
        .map(|(addr, count, body)| {
            (
                addr,
                u64::try_from(count).unwrap_or(0),
                body.events.iter().map(|e| e.intf_id.to_string()).collect(),
                body.events.iter().map(|e| e.ts).collect(),
            )
        })
        .collect()
}

fn total(db: &Path) -> u64 {
    histories(db).iter().map(|h| h.1).sum()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_workers_and_a_sigkill_lose_nothing_and_keep_order() {
    let broker = Tansu::start().expect("tansu");
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        format!(
            "[site]\nname = \"{SITE}\"\n[storage]\npath = \"vigil.db\"\n\
             [bus]\nbackend = \"kafka\"\nbrokers = \"{}\"\npartitions = {PARTITIONS}\n\
             [endpoints]\nenabled = true\nworkers = 2\n",
            broker.brokers()
        ),
    )
    .expect("site");
    let db = dir.path().join("vigil.db");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut settings = KafkaSettings::new(broker.brokers(), SITE);
    settings.partitions = PARTITIONS;
    runtime.block_on(ensure_topics(&settings)).expect("topics");
    let publisher = {
        let _guard = runtime.enter();
        KafkaPublisher::new(&settings).expect("publisher")
    };
    // One message per produce request: tansu 0.6.0 skips the rest of a
    // record batch when a consumer resumes inside it (see
    // `vigil_tests::kafka_servers`), which a real Kafka does not; one
    // message per batch keeps that broker defect out of what is judged.
    let publish = |i: u32, j: u32| {
        let key = EndpointKey {
            fabric: "fab1".into(),
            vnid: BD,
            addr: mac(i),
        };
        let partition = i32::try_from(key_hash(&key) % PARTITIONS as u64).expect("partition");
        let report = publisher.publish_keyed(
            Topic::EndpointEvents,
            partition,
            format!("fab1/{BD}/{}", mac(i)).as_bytes(),
            event(i, j).to_string().as_bytes(),
        );
        assert_eq!(report.dropped_buffer_full, 0);
        assert!(runtime.block_on(publisher.flush(Duration::from_secs(10))));
    };

    let mut a = start_worker(dir.path(), &site, "a");
    let mut b = start_worker(dir.path(), &site, "b");
    // A bad message among them: refused, counted, committed past.
    let report = publisher.publish_keyed(Topic::EndpointEvents, 0, b"junk", b"{\"fabric\": 7}");
    assert_eq!(report.dropped_buffer_full, 0);

    for j in 0..EVENTS / 3 {
        for i in 0..ENDPOINTS {
            publish(i, j);
        }
    }
    // Both workers take part before one is killed.
    wait_for(
        "the first third in history",
        Duration::from_secs(90),
        || total(&db) >= u64::from(ENDPOINTS * EVENTS / 3),
    );
    for j in EVENTS / 3..2 * EVENTS / 3 {
        for i in 0..ENDPOINTS {
            publish(i, j);
        }
        if j == EVENTS / 3 + 2 {
            a.child.kill().expect("SIGKILL a");
            let _ = a.child.wait();
        }
    }
    // The killed worker's supervisor starts it again once the broker has
    // had time to notice (session timeout 10 s). tansu 0.6.0 was seen not
    // to rebalance a group when a member's session merely expires, only
    // when a member joins; with Kafka the survivor alone would take over.
    let killed_at = Instant::now();
    for j in 2 * EVENTS / 3..EVENTS {
        for i in 0..ENDPOINTS {
            publish(i, j);
        }
    }
    std::thread::sleep(Duration::from_secs(12).saturating_sub(killed_at.elapsed()));
    let mut a = start_worker(dir.path(), &site, "a2");
    let expected = u64::from(ENDPOINTS * EVENTS);
    let log_b = || std::fs::read_to_string(&b.log).unwrap_or_default();
    let start = Instant::now();
    while total(&db) < expected {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} of {expected} events in history after 120 s\n--- a ---\n{}\n--- b ---\n{}\n--- broker ---\n{}",
            total(&db),
            std::fs::read_to_string(&a.log).unwrap_or_default(),
            log_b(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Settle: nothing more arrives (a redelivery recorded twice would).
    std::thread::sleep(Duration::from_secs(2));
    let records = histories(&db);
    assert_eq!(records.len(), ENDPOINTS as usize);
    for (addr, count, interfaces, ts) in &records {
        assert_eq!(*count, u64::from(EVENTS), "{addr}: {interfaces:?}");
        let expected: Vec<String> = (0..EVENTS)
            .rev()
            .map(|j| format!("eth1/{}", j + 1))
            .collect();
        assert_eq!(interfaces, &expected, "{addr}: in order, once each");
        assert!(ts.windows(2).all(|w| w[0] > w[1]), "{addr}: {ts:?}");
    }
    let logs: String = ["a", "a2", "b"]
        .iter()
        .map(|id| std::fs::read_to_string(dir.path().join(format!("{id}.log"))).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("endpoint input rejected") && logs.contains("wrong_type"),
        "the bad message was not refused by a worker\n{logs}"
    );
    // `vigil status` shows each worker's tracker: b took events from
    // Kafka, and one worker refused the bad message (the refusal died
    // with a if a had it; then the restarted a2 did not see it again, as
    // it was committed past).
    std::thread::sleep(Duration::from_secs(3));
    let output = Command::new(vigil_bin())
        .arg("--site")
        .arg(&site)
        .args(["status", "--json"])
        .output()
        .expect("vigil status");
    let text = String::from_utf8_lossy(&output.stdout);
    let view: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    let agents = view["agents"].as_array().cloned().unwrap_or_default();
    let b_view = agents
        .iter()
        .find(|agent| agent["agent_id"] == "b")
        .unwrap_or_else(|| panic!("no status of b: {text}"));
    assert_eq!(b_view["role"], "endpoint-worker", "{text}");
    let endpoints = &b_view["health"]["endpoints"];
    assert!(
        endpoints["received"]["kafka"].as_u64().unwrap_or(0) > 0,
        "{endpoints}"
    );
    assert_eq!(
        endpoints["workers"].as_array().map(Vec::len),
        Some(2),
        "{endpoints}"
    );

    for worker in [&mut a, &mut b] {
        let _ = Command::new("kill")
            .args(["-TERM", &worker.child.id().to_string()])
            .status();
        let exit = worker.child.wait().expect("wait");
        assert!(
            exit.success(),
            "a worker exited with {exit}\n{}",
            std::fs::read_to_string(&worker.log).unwrap_or_default()
        );
    }
    drop(broker);
}
