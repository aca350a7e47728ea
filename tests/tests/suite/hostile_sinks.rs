//! Hostile input to the sink stage and the metrics bus, against the real
//! servers the suite runs (Prometheus, Pushgateway, tansu) and a local
//! black-hole listener. Each attack runs next to a well-behaved
//! neighbour, whose series must survive.
//!
//! * a page with names made to collide (a fake `vigil_plugin_runs_total`,
//!   a gauge `x_total` next to a counter `x`, a gauge named like a counter's
//!   OpenMetrics `_created`) and a group of 20,000 dimensions of one name is
//!   scraped by a real Prometheus (OpenMetrics, its preferred format) and
//!   read by `promtool check metrics` (the text format): both parse it;
//! * resource ids `..`, `.`, empty and other unsafe ones each push to (and
//!   delete) their own Pushgateway group, never the job-level one;
//! * a sink whose server accepts TCP and never answers, with 5,000 groups
//!   queued, does not hold shutdown past the documented grace: everything
//!   is counted as lost (`shutdown`);
//! * a poll of 2,000 metrics over 64 wide dimensions grows the latest-value
//!   store by a small multiple of its own size;
//! * the producing plugin travels in a Kafka header next to an unchanged
//!   Panoptes value, and old-style messages without it still arrive.
//!
//! No assertion is on time: the bounds are counts and sizes; timeouts are
//! only hang guards.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use vigil_host::bus::kafka::{
    KafkaPublisher, KafkaSettings, Topic, consume, consume_batches, ensure_topics, run_publisher,
};
use vigil_host::bus::{Batch, UNKNOWN_PLUGIN};
use vigil_host::health::Health;
use vigil_host::model::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource,
};
use vigil_host::pipeline::encode::encode_metrics_group;
use vigil_host::pipeline::stats::{RunObservation, RunStats};
use vigil_host::sinks::buffer::{SinkSnapshot, reason};
use vigil_host::sinks::delivery::{Delivery, SHUTDOWN_GRACE};
use vigil_host::sinks::influxdb::{InfluxApi, InfluxSettings, Precision};
use vigil_host::sinks::prometheus::{PrometheusSettings, SeriesRegistry};
use vigil_host::sinks::pushgateway::PushgatewaySettings;
use vigil_host::sinks::{DeliverySettings, OutputSettings, SinkProbes, SinkSet};
use vigil_host::store::Storage;
use vigil_host::store::sqlite::SqliteStorage;
use vigil_tests::kafka_servers::Tansu;
use vigil_tests::metrics_servers::{Prometheus, Pushgateway};
use vigil_tests::servers::{find_program, free_tcp_port, wait_until};
use vigil_tests::{PluginFile, artifacts};

const WAIT: Duration = Duration::from_secs(30);

/// Now, in whole seconds (Panoptes' float times round-trip them exactly).
fn now() -> Datetime {
    Datetime {
        seconds: Datetime::from_system(std::time::SystemTime::now()).seconds,
        nanoseconds: 0,
    }
}

fn metric(name: &str, type_: MetricType, value: MetricValue) -> Metric {
    Metric {
        name: name.into(),
        value,
        type_,
        creation_timestamp: now(),
    }
}

fn group(
    group_type: &str,
    resource: &str,
    dimensions: Vec<(String, String)>,
    metrics: Vec<Metric>,
) -> MetricsGroup {
    MetricsGroup {
        group_type: group_type.into(),
        interval_seconds: 60,
        creation_timestamp: now(),
        schema_version: "0.2".into(),
        resource: Resource {
            creation_timestamp: now(),
            ..Resource::named(resource, "127.0.0.1")
        }
        .into(),
        dimensions: dimensions
            .into_iter()
            .map(|(name, value)| Dimension { name, value })
            .collect(),
        metrics,
    }
}

/// The neighbour: one interface group of a well-behaved plugin.
fn neighbour(resource: &str) -> MetricsGroup {
    group(
        "interface",
        resource,
        vec![("interface_name".into(), "ge-0/0/0".into())],
        vec![
            metric("bits_in", MetricType::Gauge, MetricValue::Float(42.5)),
            metric("errors", MetricType::Counter, MetricValue::Unsigned(7)),
        ],
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn store(dir: &tempfile::TempDir) -> Arc<dyn Storage> {
    Arc::new(SqliteStorage::open(&dir.path().join("vigil.db")).expect("store"))
}

/// The store as the sinks see it.
fn latest(store: Arc<dyn Storage>) -> Arc<dyn vigil_host::sinks::LatestStore> {
    Arc::new(vigil_host::store::StorageLatest(store))
}

/// What the hostile plugin sends: names vigil reserves, families that
/// collide once suffixed, and one group of 20,000 dimensions of one name.
fn hostile_groups() -> Vec<MetricsGroup> {
    let counter = |n| MetricValue::Unsigned(n);
    vec![
        // A fake health series.
        group(
            "vigil",
            "sw1",
            vec![("plugin".into(), "good".into())],
            vec![metric("plugin_runs", MetricType::Counter, counter(999))],
        ),
        // A counter `x` (written `x_total`), then a gauge `x_total`, a
        // gauge `x_created` and a gauge `x`.
        group(
            "clash",
            "sw1",
            vec![],
            vec![metric("x", MetricType::Counter, counter(1))],
        ),
        group(
            "clash",
            "sw1",
            vec![],
            vec![
                metric("x_total", MetricType::Gauge, MetricValue::Float(2.0)),
                metric("x_created", MetricType::Gauge, MetricValue::Float(3.0)),
                metric("x", MetricType::Gauge, MetricValue::Float(4.0)),
            ],
        ),
        group(
            "dup",
            "sw1",
            (0..20_000)
                .map(|i| ("d".to_owned(), format!("{i}")))
                .collect(),
            vec![metric("m", MetricType::Gauge, MetricValue::Float(1.0))],
        ),
    ]
}

/// `promtool check metrics` on `page` (Prometheus' own text-format parser,
/// from the same Debian package): its parse errors, if any. Lint remarks
/// about names or help texts are not parse errors.
fn promtool_parse_errors(page: &str) -> String {
    vigil_tests::metrics_servers::ensure_installed().expect("prometheus installed");
    let promtool = find_program("promtool").expect("promtool");
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("writing the page");
    let output = child.wait_with_output().expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .filter(|line| line.contains("parsing error"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn collided_and_reserved_names_never_break_the_page() {
    let rt = runtime();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_tcp_port().expect("port");
    let settings = PrometheusSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        ..PrometheusSettings::default()
    };
    let registry = Arc::new(SeriesRegistry::new(settings.clone()));
    let probes = SinkProbes::default();
    let stats = Arc::new(RunStats::default());
    stats.record(&RunObservation {
        plugin: "good",
        outcome: "ok",
        started_at: 1.0,
        lateness_ms: 1.0,
        duration: Duration::from_millis(5),
        fuel_consumed: 10,
        peak_memory: 1 << 16,
    });
    let health = Arc::new(Health::new(1.0, stats, probes.clone()));
    let outputs = OutputSettings {
        prometheus: Some(settings.clone()),
        ..OutputSettings::default()
    };
    let mut sinks = SinkSet::open(
        &outputs,
        latest(store(&dir)),
        Some(registry.clone()),
        &probes,
    )
    .expect("sinks");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = rt
        .block_on(vigil_host::sinks::prometheus::serve(
            settings.listen,
            health,
            Some(registry.clone()),
            stop_rx,
        ))
        .expect("serve /metrics");
    rt.block_on(async {
        sinks
            .accept_async(Batch::from_plugin("evil", hostile_groups()))
            .await;
        sinks
            .accept_async(Batch::from_plugin("good", vec![neighbour("sw2")]))
            .await;
    });

    let per_plugin = probes.plugin_series();
    let evil = per_plugin
        .iter()
        .find(|p| p.plugin == "evil")
        .expect("evil's usage");
    assert_eq!(
        evil.dropped.get(reason::RESERVED_NAME),
        Some(&1),
        "{evil:?}"
    );
    // The gauge `x_total` is written `clash_total_x` (no gauge ends in
    // `_total`), so only `x_created` and the gauge `x` clash with the
    // counter `clash_x`.
    assert_eq!(
        evil.dropped.get(reason::TYPE_CONFLICT),
        Some(&2),
        "{evil:?}"
    );
    // clash_x (a counter), clash_total_x and the 20,000-dimension group's
    // one series.
    assert_eq!(evil.series, 3, "{evil:?}");

    // The text format, read by Prometheus' own parser (promtool).
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = client
        .get(&url)
        .send()
        .expect("GET /metrics")
        .text()
        .expect("body");
    assert_eq!(
        text.matches("# TYPE vigil_plugin_runs_total counter")
            .count(),
        1,
        "one vigil_plugin_runs family, vigil's"
    );
    assert!(!text.contains("vigil_plugin_runs_total{plugin=\"good\",resource_id"));
    assert_eq!(text.matches("# TYPE clash_x_total ").count(), 1);
    assert_eq!(text.matches("# TYPE clash_total_x gauge").count(), 1);
    assert!(text.contains("exported_d_19999=\"19999\""));
    // promtool itself catches what the registry refused (so the check
    // can fail).
    assert!(
        promtool_parse_errors("# TYPE x counter\nx_total 1\n# TYPE x_total gauge\nx_total 2\n")
            .contains("second TYPE"),
    );
    // All but the 20,000-label sample line: promtool's linter takes over a
    // minute on it (the scrape below reads the whole page).
    let checked: String = text
        .lines()
        .filter(|line| !line.starts_with("dup_m{"))
        .map(|line| format!("{line}\n"))
        .collect();
    let errors = promtool_parse_errors(&checked);
    assert!(errors.is_empty(), "promtool: {errors}");

    // OpenMetrics (Prometheus' preferred format), by a real scrape: `up`
    // is 1 only when the whole page parsed.
    let prometheus =
        Prometheus::start(&[("vigil", format!("127.0.0.1:{port}"))]).expect("prometheus");
    prometheus
        .wait_for("up{job=\"vigil\"}", |r| has_value(r, "1"), WAIT)
        .expect("the scrape parses");
    let result = prometheus
        .wait_for(
            "interface_bits_in{resource_id=\"sw2\"}",
            |r| r.len() == 1,
            WAIT,
        )
        .expect("the neighbour's series");
    assert_eq!(result[0]["value"][1], "42.5");
    let result = prometheus.query("vigil_plugin_runs_total").expect("query");
    assert_eq!(result.len(), 1, "only vigil's own: {result:?}");
    assert_eq!(result[0]["value"][1], "1");
    let result = prometheus.query("dup_m").expect("query");
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["metric"]["exported_d_19999"], "19999");
    let result = prometheus.query("clash_x_total").expect("query");
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["value"][1], "1", "the counter, the first family");

    let _ = stop_tx.send(true);
    rt.block_on(async {
        let _ = server.await;
        sinks.close().await
    })
    .expect("close");
}

fn has_value(result: &[Value], value: &str) -> bool {
    result.len() == 1 && result[0]["value"][1] == value
}

/// The Pushgateway's groups: (its grouping labels, the `resource_id` of
/// its `unsafe_ids_bits_in` series, if any), from its JSON API.
fn gateway_groups(gateway: &Pushgateway) -> Vec<(BTreeMap<String, String>, Option<String>)> {
    let url = format!("{}/api/v1/metrics", gateway.url());
    let answer: Value = reqwest::blocking::get(&url)
        .and_then(|r| r.json())
        .expect("GET /api/v1/metrics");
    answer["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|g| {
            let labels = g["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let resource = g["unsafe_ids_bits_in"]["metrics"][0]["labels"]["resource_id"]
                .as_str()
                .map(str::to_owned);
            (labels, resource)
        })
        .collect()
}

#[test]
fn unsafe_resource_ids_push_to_their_own_pushgateway_group_only() {
    let rt = runtime();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Pushgateway::start().expect("pushgateway");
    let ids = ["..", ".", "", " ", "%2e%2e", "a/../b", "../job", "%", "sw1"];
    let settings = PushgatewaySettings {
        name: "pushgateway".into(),
        url: gateway.url(),
        job: "vigil".into(),
        username: None,
        password: None,
        stale_after: Duration::from_secs(600),
        max_series: 1000,
        max_series_per_plugin: 1000,
        namespace: None,
        delivery: DeliverySettings {
            buffer: 1000,
            delivery: Delivery {
                batch_size: 100,
                flush_interval: Duration::from_millis(100),
                ..Delivery::default()
            },
            timeout: Duration::from_secs(5),
        },
    };
    let outputs = OutputSettings {
        pushgateway: vec![settings],
        ..OutputSettings::default()
    };
    let probes = SinkProbes::default();
    let mut sinks = SinkSet::open(&outputs, latest(store(&dir)), None, &probes).expect("sinks");
    let groups: Vec<MetricsGroup> = ids
        .iter()
        .map(|id| {
            group(
                "unsafe_ids",
                id,
                vec![],
                vec![metric(
                    "bits_in",
                    MetricType::Gauge,
                    MetricValue::Float(1.0),
                )],
            )
        })
        .collect();
    sinks.accept(Batch::from_plugin("evil", groups));
    assert!(
        wait_until(WAIT, Duration::from_millis(100), || {
            gateway_groups(&gateway).len() == ids.len()
        }),
        "one group per id: {:?}",
        gateway_groups(&gateway)
    );
    let groups = gateway_groups(&gateway);
    for id in ids {
        let found = groups
            .iter()
            .filter(|(_, resource)| resource.as_deref() == Some(id))
            .collect::<Vec<_>>();
        assert_eq!(found.len(), 1, "{id:?}: {groups:?}");
        let (labels, _) = found[0];
        assert_eq!(labels.get("job").map(String::as_str), Some("vigil"));
        // The group is the resource's own: its instance is the id (the
        // Pushgateway drops an empty label from the map it shows).
        assert_eq!(
            labels.get("instance").map(String::as_str).unwrap_or(""),
            id,
            "{labels:?}"
        );
        if !id.is_empty() {
            assert_eq!(labels.len(), 2, "{labels:?}");
        }
    }
    // Nothing went to the job level: only the empty id's group has no
    // instance, and it is the one holding resource_id="".
    let job_level: Vec<_> = groups
        .iter()
        .filter(|(labels, _)| !labels.contains_key("instance"))
        .collect();
    assert!(
        job_level
            .iter()
            .all(|(_, resource)| resource.as_deref() == Some("")),
        "{job_level:?}"
    );

    // Expiring `..` deletes its group and nothing else.
    sinks.resources_expired(&["..".to_owned()]);
    assert!(
        wait_until(WAIT, Duration::from_millis(100), || {
            gateway_groups(&gateway).len() == ids.len() - 1
        }),
        "{:?}",
        gateway_groups(&gateway)
    );
    let groups = gateway_groups(&gateway);
    assert!(
        !groups
            .iter()
            .any(|(_, resource)| resource.as_deref() == Some("..")),
        "{groups:?}"
    );
    for id in ids.iter().filter(|id| **id != "..") {
        assert!(
            groups
                .iter()
                .any(|(_, resource)| resource.as_deref() == Some(*id)),
            "{id:?} survived: {groups:?}"
        );
    }
    rt.block_on(sinks.close()).expect("close");
    let snapshot = probes
        .snapshots()
        .into_iter()
        .find(|s| s.kind == "pushgateway")
        .expect("snapshot");
    assert!(snapshot.dropped.is_empty(), "{snapshot:?}");
}

/// Accepts TCP connections and never reads or answers: a server that hung.
struct BlackHole {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        BlackHole { port, connections }
    }
}

#[test]
fn a_sink_that_never_answers_cannot_hold_shutdown() {
    let rt = runtime();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().expect("tempdir");
    let hole = BlackHole::start();
    let url = format!("http://127.0.0.1:{}", hole.port);
    // The longest request timeout allowed: the grace must bound shutdown,
    // not the timeout.
    let delivery = DeliverySettings {
        buffer: 100_000,
        delivery: Delivery {
            batch_size: 1_000,
            flush_interval: Duration::from_millis(50),
            ..Delivery::default()
        },
        timeout: Duration::from_secs(300),
    };
    assert_eq!(delivery.delivery.shutdown_grace, SHUTDOWN_GRACE);
    let outputs = OutputSettings {
        influxdb: vec![InfluxSettings {
            name: "influxdb".into(),
            url: url.clone(),
            api: InfluxApi::V1 {
                database: "db".into(),
                retention_policy: None,
                username: None,
                password: None,
            },
            precision: Precision::Seconds,
            field_names: Default::default(),
            delivery,
        }],
        pushgateway: vec![PushgatewaySettings {
            name: "pushgateway".into(),
            url,
            job: "vigil".into(),
            username: None,
            password: None,
            stale_after: Duration::from_secs(600),
            max_series: 100_000,
            max_series_per_plugin: 100_000,
            namespace: None,
            delivery,
        }],
        ..OutputSettings::default()
    };
    let probes = SinkProbes::default();
    let mut sinks = SinkSet::open(&outputs, latest(store(&dir)), None, &probes).expect("sinks");
    const GROUPS: u64 = 5_000;
    for chunk in 0..50 {
        let groups: Vec<MetricsGroup> = (0..GROUPS / 50)
            .map(|i| neighbour(&format!("sw{}", chunk * 100 + i)))
            .collect();
        sinks.accept(Batch::from_plugin("good", groups));
    }
    // Both sinks are inside a send that will never return.
    assert!(
        wait_until(WAIT, Duration::from_millis(20), || {
            hole.connections.load(Ordering::SeqCst) >= 2
        }),
        "both sinks connected"
    );
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), sinks.close())
            .await
            .expect("close returns (hang guard; the grace is 5 s)")
    })
    .expect("close");
    let networked: Vec<SinkSnapshot> = probes
        .snapshots()
        .into_iter()
        .filter(|s| s.kind == "influxdb" || s.kind == "pushgateway")
        .collect();
    assert_eq!(networked.len(), 2);
    for snapshot in networked {
        assert_eq!(snapshot.accepted, GROUPS, "{snapshot:?}");
        assert_eq!(snapshot.delivered, 0, "{snapshot:?}");
        assert_eq!(
            snapshot.dropped.get(reason::SHUTDOWN),
            Some(&GROUPS),
            "everything counted as lost at shutdown: {snapshot:?}"
        );
        assert_eq!(snapshot.buffered, 0, "{snapshot:?}");
    }
}

/// The wide poll: 2,000 metrics over 64 dimensions of 224 bytes.
fn wide_poll(round: i64) -> MetricsGroup {
    group(
        "wide",
        "sw1",
        (0..64)
            .map(|i| (format!("dimension_{i:014}"), format!("{i:0200}")))
            .collect(),
        (0..2_000)
            .map(|i| {
                metric(
                    &format!("m{i}"),
                    MetricType::Gauge,
                    MetricValue::Signed(round * 10_000 + i),
                )
            })
            .collect(),
    )
}

fn database_bytes(path: &std::path::Path) -> u64 {
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    size(path.to_owned())
        + size(path.with_extension("db-wal"))
        + size(path.with_extension("db-shm"))
}

/// The latest-value store keys series by a compact id: a poll grows the
/// database by a small multiple of its own size (it was ~600 times), and
/// polling again does not grow it further.
#[test]
fn a_wide_poll_grows_the_latest_value_store_by_a_bounded_factor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vigil.db");
    drop(SqliteStorage::open(&path).expect("create"));
    let empty = database_bytes(&path);
    let poll = Arc::new(wide_poll(1));
    let input = encode_metrics_group(&poll).len() as u64;
    {
        let store = SqliteStorage::open(&path).expect("open");
        vigil_tests::block_on(store.store_latest(&[poll])).expect("store");
    }
    // Closing checkpointed the WAL into the file.
    let once = database_bytes(&path) - empty;
    eprintln!(
        "a {input}-byte poll grew the database by {once} bytes ({:.2} per input byte)",
        once as f64 / input as f64
    );
    assert!(
        once <= 3 * input + 64 * 1024,
        "{once} bytes for a {input}-byte poll"
    );
    {
        let store = SqliteStorage::open(&path).expect("open");
        for round in 2..5 {
            vigil_tests::block_on(store.store_latest(&[Arc::new(wide_poll(round))]))
                .expect("store");
        }
        let latest = vigil_tests::block_on(store.latest(Some("wide"))).expect("latest");
        assert_eq!(latest.len(), 2_000);
        assert!(latest.iter().all(|s| s.dimensions.len() == 64));
        let m7 = latest.iter().find(|s| s.metric == "m7").expect("m7");
        assert_eq!(m7.value, "40007");
    }
    let again = database_bytes(&path) - empty;
    assert!(
        again <= once + 64 * 1024,
        "updates do not grow it: {once} then {again}"
    );
}

#[test]
fn the_producing_plugin_travels_in_a_kafka_header() {
    let rt = runtime();
    rt.block_on(async {
        let tansu = Tansu::start().expect("tansu");
        let settings = KafkaSettings::new(tansu.brokers(), "hdr");
        ensure_topics(&settings).await.expect("topics");
        let publisher = Arc::new(KafkaPublisher::new(&settings).expect("publisher"));
        let (bus, rx) = tokio::sync::mpsc::channel::<Batch>(4);
        let stage = tokio::spawn(run_publisher(rx, publisher, Topic::Processed));
        let from_good: Vec<MetricsGroup> = (0..3).map(|i| neighbour(&format!("g{i}"))).collect();
        let from_old: Vec<MetricsGroup> = (0..2).map(|i| neighbour(&format!("o{i}"))).collect();
        bus.send(Batch::from_plugin("good", from_good.clone()))
            .await
            .expect("send");
        // An older agent's messages: no header.
        bus.send(Batch::from(from_old.clone())).await.expect("send");
        drop(bus);
        let stats = tokio::time::timeout(Duration::from_secs(60), stage)
            .await
            .expect("publisher stage (hang guard)")
            .expect("task");
        assert_eq!(stats.delivered, 5, "{stats:?}");

        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let report = tokio::time::timeout(
            Duration::from_secs(60),
            consume_batches(
                &settings,
                "hdr-sinks",
                Topic::Processed,
                100,
                move |batch: Batch| {
                    let sink = sink.clone();
                    let stop_tx = stop_tx.clone();
                    async move {
                        let mut all = sink.lock().expect("lock");
                        for (plugin, group) in batch.iter() {
                            all.push((plugin.to_string(), group.clone()));
                        }
                        if all.len() >= 5 {
                            let _ = stop_tx.send(true);
                        }
                        Ok(())
                    }
                },
                stop,
            ),
        )
        .await
        .expect("consumer (hang guard)")
        .expect("consume");
        assert_eq!(report.groups, 5, "{report:?}");
        let received = received.lock().expect("lock").clone();
        for original in &from_good {
            let (plugin, got) = received
                .iter()
                .find(|(_, g)| g.resource.id == original.resource.id)
                .expect("received");
            assert_eq!(plugin, "good");
            // The value is Panoptes JSON, exactly as before.
            assert_eq!(
                String::from_utf8_lossy(&encode_metrics_group(got)),
                String::from_utf8_lossy(&encode_metrics_group(original))
            );
        }
        for original in &from_old {
            let (plugin, got) = received
                .iter()
                .find(|(_, g)| g.resource.id == original.resource.id)
                .expect("received");
            assert_eq!(plugin, UNKNOWN_PLUGIN);
            assert_eq!(
                String::from_utf8_lossy(&encode_metrics_group(got)),
                String::from_utf8_lossy(&encode_metrics_group(original))
            );
        }

        // A consumer that knows nothing of headers reads the same groups.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let plain = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = plain.clone();
        tokio::time::timeout(
            Duration::from_secs(60),
            consume(
                &settings,
                "hdr-plain",
                Topic::Processed,
                100,
                move |groups: Vec<MetricsGroup>| {
                    let sink = sink.clone();
                    let stop_tx = stop_tx.clone();
                    async move {
                        let mut all = sink.lock().expect("lock");
                        all.extend(groups);
                        if all.len() >= 5 {
                            let _ = stop_tx.send(true);
                        }
                        Ok(())
                    }
                },
                stop,
            ),
        )
        .await
        .expect("consumer (hang guard)")
        .expect("consume");
        assert_eq!(plain.lock().expect("lock").len(), 5);
    });
}

/// The whole host, in process: a plugin polling 150 devices floods the
/// Prometheus registry (4 series a device) next to a well-behaved plugin
/// polling 2. The registry holds 80 series, 40 per plugin: the flooder
/// fills its budget, the neighbour keeps every series, and `/metrics`
/// says who was refused what. The plugins' names come from the executor,
/// over the embedded bus.
#[test]
fn a_plugin_flooding_series_fills_its_own_budget_in_the_running_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_tcp_port().expect("port");
    for sub in ["plugins", "data"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
    }
    std::fs::write(
        dir.path().join("site.toml"),
        format!(
            "[site]\nname = \"test\"\n[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n\
             [storage]\npath = \"state/vigil.db\"\n\
             [outputs.prometheus]\nlisten = \"127.0.0.1:{port}\"\nmax_series = 80\nmax_series_per_plugin = 40\n\
             [sandbox]\nmax_concurrent_runs = 8\n[scheduler]\nmax_runs_per_plugin = 4\n\
             [capabilities]\nallowed = [\"files\"]\nfile_roots = [\"data\"]\n"
        ),
    )
    .expect("site.toml");
    let inventory: Vec<Value> = (0..152)
        .map(|i| {
            let class = if i < 2 { "network" } else { "bulk" };
            serde_json::json!({
                "resource_id": format!("dev{i}"), "resource_site": "lab",
                "resource_class": class, "resource_subclass": "switch",
                "resource_type": "test", "resource_endpoint": format!("127.0.{}.{}", i / 200, i % 200 + 1),
                "resource_metadata": {}, "resource_ttl": 3600,
            })
        })
        .collect();
    std::fs::write(
        dir.path().join("data/resources.json"),
        serde_json::to_vec(&inventory).expect("json"),
    )
    .expect("inventory");
    let plugins = dir.path().join("plugins");
    PluginFile::new("inventory", "discovery", artifacts::DISCOVERY_JSON_FILE)
        .frequency("1h")
        .set("capabilities", "files", "../data")
        .set("json_file", "path", "resources.json")
        .set("main", "sites", "lab")
        .write(&plugins, "inventory");
    PluginFile::new("beat", "polling", artifacts::HEARTBEAT)
        .frequency("1s")
        .set("main", "resource_filter", r#"resource_class = "network""#)
        .write(&plugins, "beat");
    PluginFile::new("hog", "polling", artifacts::HEARTBEAT)
        .frequency("1s")
        .set("main", "resource_filter", r#"resource_class = "bulk""#)
        .write(&plugins, "hog");
    let site = vigil_host::site::SiteConfig::load(&dir.path().join("site.toml")).expect("site");

    let rt = runtime();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let host = rt.spawn(vigil_host::agent::run(
        Arc::new(site),
        vigil_host::agent::AgentSettings::default(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let metrics = || {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
            .and_then(|r| r.text())
            .unwrap_or_default()
    };
    let hog_refused = |page: &str| {
        page.lines().any(|l| {
            l.starts_with(
                "vigil_sink_dropped_series_total{sink=\"prometheus\",kind=\"prometheus\",plugin=\"hog\",reason=\"plugin_series_limit\"}",
            )
        })
    };
    let beat_series = |page: &str| {
        page.lines()
            .filter(|l| {
                (l.starts_with("heartbeat_") || l.starts_with("polling_status{"))
                    && l.contains("resource_class=\"network\"")
            })
            .count()
    };
    let mut page = String::new();
    let done = wait_until(Duration::from_secs(90), Duration::from_millis(200), || {
        page = metrics();
        hog_refused(&page) && beat_series(&page) == 8
    });
    let _ = stop_tx.send(());
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), host)
            .await
            .expect("the host stops (hang guard)")
            .expect("host task")
            .expect("host run")
    });
    assert!(
        done,
        "beat's 8 series and hog's refusals: {}",
        page.lines()
            .filter(|l| l.starts_with("vigil_sink") || l.contains("network"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        page.contains(
            "vigil_sink_series{sink=\"prometheus\",kind=\"prometheus\",plugin=\"hog\"} 40\n"
        ),
        "{}",
        page.lines()
            .filter(|l| l.starts_with("vigil_sink_series"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(page.contains(
        "vigil_sink_series{sink=\"prometheus\",kind=\"prometheus\",plugin=\"beat\"} 8\n"
    ));
    assert!(
        !page.contains("plugin=\"beat\",reason="),
        "nothing of beat's refused"
    );
}
