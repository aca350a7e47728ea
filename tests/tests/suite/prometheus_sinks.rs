//! The Prometheus side of the sinks against real servers (Debian's
//! `prometheus` 2.x and `prometheus-pushgateway`, on loopback):
//!
//! * vigil's `/metrics` (collected series and vigil's own health) is
//!   scraped by a real Prometheus, and PromQL over its HTTP API returns the
//!   exact values and labels, hostile label values included; series of an
//!   expired resource disappear.
//! * the Pushgateway sink pushes one group per resource, which Prometheus
//!   scrapes (`honor_labels`) and PromQL returns; a new push replaces the
//!   group; stale series leave it; an expired resource's group is deleted.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vigil_host::health::Health;
use vigil_host::model::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource,
};
use vigil_host::pipeline::stats::{RunObservation, RunStats};
use vigil_host::sinks::delivery::Delivery;
use vigil_host::sinks::prometheus::{PrometheusSettings, SeriesRegistry};
use vigil_host::sinks::pushgateway::PushgatewaySettings;
use vigil_host::sinks::{DeliverySettings, OutputSettings, SinkProbes, SinkSet};
use vigil_host::store::Storage;
use vigil_host::store::sqlite::SqliteStorage;
use vigil_tests::metrics_servers::{Prometheus, Pushgateway};
use vigil_tests::servers::free_tcp_port;

const WAIT: Duration = Duration::from_secs(30);

fn interface_group(resource: &str, interface: &str, bits_in: f64, errors: u64) -> MetricsGroup {
    let at = Datetime::from_system(std::time::SystemTime::now());
    let mut resource = Resource::named(resource, "127.0.0.1");
    resource.site = "lab".into();
    resource.class = "network".into();
    MetricsGroup {
        group_type: "interface".into(),
        interval_seconds: 60,
        creation_timestamp: at,
        schema_version: "0.2".into(),
        resource: resource.into(),
        dimensions: vec![
            Dimension {
                name: "interface_name".into(),
                value: interface.into(),
            },
            Dimension {
                name: "description".into(),
                value: "uplink to \"core\", via \\\\ backslashes\nand a newline, ünïcode".into(),
            },
        ],
        metrics: vec![
            Metric {
                name: "bits_in".into(),
                value: MetricValue::Float(bits_in),
                type_: MetricType::Gauge,
                creation_timestamp: at,
            },
            Metric {
                name: "error_packets_in".into(),
                value: MetricValue::Unsigned(errors),
                type_: MetricType::Counter,
                creation_timestamp: at,
            },
        ],
    }
}

fn store(dir: &tempfile::TempDir) -> Arc<dyn Storage> {
    Arc::new(SqliteStorage::open(&dir.path().join("vigil.db")).expect("store"))
}

/// The store as the sinks see it.
fn latest(store: Arc<dyn Storage>) -> Arc<dyn vigil_host::sinks::LatestStore> {
    Arc::new(vigil_host::store::StorageLatest(store))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The value of the one series of `result` as text.
fn only_value(result: &[Value]) -> String {
    assert_eq!(result.len(), 1, "one series expected: {result:?}");
    result[0]["value"][1]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn has_value(result: &[Value], value: &str) -> bool {
    result.len() == 1 && result[0]["value"][1] == value
}

#[test]
fn prometheus_scrapes_vigil_metrics_and_promql_returns_the_series() {
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
    for (outcome, n) in [("ok", 3), ("trap.deadline", 1)] {
        for _ in 0..n {
            stats.record(&RunObservation {
                plugin: "snmp_interface_polling",
                outcome,
                started_at: 1.0,
                lateness_ms: 4.0,
                duration: Duration::from_millis(20),
                fuel_consumed: 1000,
                peak_memory: 1 << 20,
            });
        }
    }
    let health = Arc::new(Health::new(1_700_000_000.0, stats, probes.clone()));
    health.add_queue("bus", || 7);
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
    sinks.accept(vec![
        interface_group("sw1", "ge-0/0/0", 1234.5, 123_456_789),
        interface_group("sw1", "ge-0/0/1", 0.25, 0),
        interface_group("sw2", "xe-1/0/0", 99.0, 5),
    ]);

    let prometheus =
        Prometheus::start(&[("vigil", format!("127.0.0.1:{port}"))]).expect("prometheus");
    // `up` is 1 only when Prometheus parsed the whole scrape.
    prometheus
        .wait_for("up{job=\"vigil\"}", |r| has_value(r, "1"), WAIT)
        .expect("the scrape parses");

    let result = prometheus
        .wait_for(
            "interface_bits_in{resource_id=\"sw1\",interface_name=\"ge-0/0/0\"}",
            |r| r.len() == 1,
            WAIT,
        )
        .expect("bits_in of sw1 ge-0/0/0");
    assert_eq!(only_value(&result), "1234.5");
    let labels = &result[0]["metric"];
    assert_eq!(
        labels["description"], "uplink to \"core\", via \\\\ backslashes\nand a newline, ünïcode",
        "hostile label values arrive intact: {labels}"
    );
    assert_eq!(labels["resource_site"], "lab");
    assert_eq!(labels["resource_class"], "network");
    assert_eq!(labels["resource_endpoint"], "127.0.0.1");

    let result = prometheus
        .query("interface_error_packets_in_total{resource_id=\"sw1\",interface_name=\"ge-0/0/0\"}")
        .expect("query");
    assert_eq!(only_value(&result), "123456789");
    let result = prometheus.query("count(interface_bits_in)").expect("query");
    assert_eq!(only_value(&result), "3");

    // vigil's own health, from the same scrape.
    let result = prometheus
        .query("vigil_plugin_runs_total{plugin=\"snmp_interface_polling\",outcome=\"ok\"}")
        .expect("query");
    assert_eq!(only_value(&result), "3");
    let result = prometheus
        .query(
            "vigil_sandbox_limit_hits_total{plugin=\"snmp_interface_polling\",limit=\"deadline\"}",
        )
        .expect("query");
    assert_eq!(only_value(&result), "1");
    let result = prometheus
        .query("vigil_plugin_run_duration_seconds_count{plugin=\"snmp_interface_polling\"}")
        .expect("query");
    assert_eq!(only_value(&result), "4");
    let result = prometheus
        .query("histogram_quantile(0.5, vigil_plugin_run_duration_seconds_bucket)")
        .expect("query");
    let median: f64 = only_value(&result).parse().expect("a number");
    assert!(
        (0.01..=0.025).contains(&median),
        "20 ms runs: median {median}"
    );
    let result = prometheus
        .query("vigil_queue_depth{queue=\"bus\"}")
        .expect("query");
    assert_eq!(only_value(&result), "7");
    let result = prometheus
        .query("vigil_sink_accepted_groups_total{sink=\"prometheus\"}")
        .expect("query");
    assert_eq!(only_value(&result), "3");

    // An expired resource's series leave /metrics, and so Prometheus.
    sinks.resources_expired(&["sw2".to_owned()]);
    prometheus
        .wait_for(
            "interface_bits_in{resource_id=\"sw2\"}",
            <[Value]>::is_empty,
            WAIT,
        )
        .expect("sw2's series go stale");
    let result = prometheus.query("count(interface_bits_in)").expect("query");
    assert_eq!(only_value(&result), "2");

    let _ = stop_tx.send(true);
    rt.block_on(async {
        let _ = server.await;
        sinks.close().await
    })
    .expect("close");
}

/// vigil's `/metrics` server on a free loopback port, holding `groups`
/// and an empty health: the port, the stop switch and the server task.
fn serve_groups(
    rt: &tokio::runtime::Runtime,
    groups: &[Arc<MetricsGroup>],
) -> (
    u16,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let port = free_tcp_port().expect("port");
    let settings = PrometheusSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        ..PrometheusSettings::default()
    };
    let registry = Arc::new(SeriesRegistry::new(settings.clone()));
    registry.accept(groups);
    let health = Arc::new(Health::new(
        0.0,
        Arc::new(RunStats::default()),
        SinkProbes::default(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = rt
        .block_on(vigil_host::sinks::prometheus::serve(
            settings.listen,
            health,
            Some(registry),
            stop_rx,
        ))
        .expect("serve");
    (port, stop_tx, server)
}

/// `vigil` serves both formats; the one a scraper gets follows its
/// `Accept` header.
#[test]
fn metrics_endpoint_negotiates_text_and_openmetrics() {
    let rt = runtime();
    let _guard = rt.enter();
    let (port, stop_tx, server) =
        serve_groups(&rt, &[Arc::new(interface_group("sw1", "e0", 1.0, 2))]);
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = client.get(&url).send().expect("GET /metrics");
    assert!(
        text.headers()["content-type"]
            .to_str()
            .expect("header")
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        text.headers()
    );
    let text = text.text().expect("body");
    assert!(
        text.contains("# TYPE interface_error_packets_in_total counter\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");
    let om = client
        .get(&url)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .expect("GET /metrics");
    assert!(
        om.headers()["content-type"]
            .to_str()
            .expect("header")
            .starts_with("application/openmetrics-text; version=1.0.0"),
    );
    let om = om.text().expect("body");
    assert!(
        om.contains("# TYPE interface_error_packets_in counter\n"),
        "{om}"
    );
    assert!(om.contains("interface_error_packets_in_total{"), "{om}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let _ = stop_tx.send(true);
    let _ = rt.block_on(server);
}

/// Real requests: `/metrics` is gzip-compressed only for a scraper that
/// sends `Accept-Encoding: gzip`, and says so; `/health/metrics` serves
/// vigil's own families (`vigil_*`, `process_*`) and no collected series,
/// while `/metrics` keeps both.
#[test]
fn metrics_endpoint_gzips_on_request_and_serves_health_alone() {
    use std::io::Read as _;
    let rt = runtime();
    let _guard = rt.enter();
    let groups: Vec<Arc<MetricsGroup>> = (0..200)
        .map(|i| Arc::new(interface_group("sw1", &format!("e{i}"), i as f64, i)))
        .collect();
    let (port, stop_tx, server) = serve_groups(&rt, &groups);
    // reqwest is built without its gzip feature: bodies arrive as sent.
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let plain = client.get(&url).send().expect("GET /metrics");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.text().expect("body");
    let packed = client
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .expect("GET /metrics gzip");
    assert_eq!(packed.headers()["content-encoding"], "gzip");
    assert_eq!(packed.headers()["vary"], "Accept-Encoding");
    let packed = packed.bytes().expect("body");
    assert!(
        packed.len() * 5 < plain.len(),
        "{} of {}",
        packed.len(),
        plain.len()
    );
    let mut unpacked = String::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_string(&mut unpacked)
        .expect("a gzip body");
    // Same page (the only sample that moves between scrapes is the CPU
    // time and fds of this process; compare the collected series).
    let series = |page: &str| -> Vec<String> {
        page.lines()
            .filter(|l| l.starts_with("interface_"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(series(&unpacked), series(&plain));
    assert_eq!(series(&plain).len(), 400);
    assert!(plain.contains("\nvigil_plugins_loaded "), "{plain}");
    assert!(
        plain.contains("\nprocess_resident_memory_bytes "),
        "{plain}"
    );

    let health_url = format!("http://127.0.0.1:{port}/health/metrics");
    let own = client
        .get(&health_url)
        .send()
        .expect("GET /health/metrics")
        .text()
        .expect("body");
    assert!(own.contains("\nvigil_plugins_loaded "), "{own}");
    assert!(own.contains("\nprocess_resident_memory_bytes "), "{own}");
    assert!(own.contains("\nprocess_cpu_seconds_total "), "{own}");
    assert!(!own.contains("interface_"), "{own}");
    assert!(!own.contains("resource_id="), "{own}");
    let _ = stop_tx.send(true);
    let _ = rt.block_on(server);
}

fn instances(result: &[Value]) -> BTreeSet<String> {
    result
        .iter()
        .map(|s| {
            s["metric"]["instance"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn pushgateway_groups_per_resource_replace_expire_and_reach_prometheus() {
    let rt = runtime();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Pushgateway::start().expect("pushgateway");
    let prometheus = Prometheus::start(&[("gateway", format!("127.0.0.1:{}", gateway.port))])
        .expect("prometheus");
    let settings = pushgateway_settings(&gateway, "vigil", Duration::from_secs(600));
    let outputs = OutputSettings {
        pushgateway: vec![settings],
        ..OutputSettings::default()
    };
    let probes = SinkProbes::default();
    let mut sinks = SinkSet::open(&outputs, latest(store(&dir)), None, &probes).expect("sinks");
    // One id needs the Pushgateway's base64 path encoding.
    sinks.accept(vec![
        interface_group("sw1", "e0", 10.0, 1),
        interface_group("sw1", "e1", 11.0, 1),
        interface_group("rack 4/sw2", "e0", 20.0, 1),
    ]);
    let result = prometheus
        .wait_for("interface_bits_in{job=\"vigil\"}", |r| r.len() == 3, WAIT)
        .expect("three pushed series");
    assert_eq!(
        instances(&result),
        BTreeSet::from(["sw1".to_owned(), "rack 4/sw2".to_owned()])
    );
    let sw2 = result
        .iter()
        .find(|s| s["metric"]["instance"] == "rack 4/sw2")
        .expect("sw2");
    assert_eq!(sw2["value"][1], "20");
    assert_eq!(sw2["metric"]["resource_id"], "rack 4/sw2");
    let result = prometheus
        .query("interface_error_packets_in_total{job=\"vigil\",instance=\"sw1\",interface_name=\"e1\"}")
        .expect("query");
    assert_eq!(only_value(&result), "1");

    // A new push replaces sw1's value (one series, the new value).
    sinks.accept(vec![interface_group("sw1", "e0", 12.5, 2)]);
    prometheus
        .wait_for(
            "interface_bits_in{job=\"vigil\",instance=\"sw1\",interface_name=\"e0\"}",
            |r| has_value(r, "12.5"),
            WAIT,
        )
        .expect("replaced value");

    // A resource that expires has its group deleted.
    sinks.resources_expired(&["rack 4/sw2".to_owned()]);
    prometheus
        .wait_for(
            "interface_bits_in{job=\"vigil\",instance=\"rack 4/sw2\"}",
            <[Value]>::is_empty,
            WAIT,
        )
        .expect("sw2's group deleted");
    assert!(
        !gateway
            .metrics_text()
            .expect("gateway metrics")
            .contains("rack 4/sw2"),
        "the Pushgateway no longer holds sw2"
    );
    let result = prometheus
        .query("count(interface_bits_in{job=\"vigil\"})")
        .expect("query");
    assert_eq!(only_value(&result), "2", "sw1's two interfaces remain");

    rt.block_on(sinks.close()).expect("close");
    let snapshot = probes
        .snapshots()
        .into_iter()
        .find(|s| s.kind == "pushgateway")
        .expect("pushgateway snapshot");
    assert_eq!(snapshot.accepted, 4);
    assert_eq!(snapshot.delivered, 4, "{snapshot:?}");
    assert!(snapshot.dropped.is_empty(), "{snapshot:?}");
}

/// Series a resource stops reporting leave its group after
/// `stale_after`; when none is left the group is deleted.
#[test]
fn pushgateway_drops_stale_series_from_a_group() {
    let rt = runtime();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Pushgateway::start().expect("pushgateway");
    let settings = pushgateway_settings(&gateway, "stale", Duration::from_secs(2));
    let outputs = OutputSettings {
        pushgateway: vec![settings],
        ..OutputSettings::default()
    };
    let mut sinks =
        SinkSet::open(&outputs, latest(store(&dir)), None, &SinkProbes::default()).expect("sinks");
    sinks.accept(vec![
        interface_group("sw1", "e0", 10.0, 1),
        interface_group("sw1", "e1", 11.0, 1),
        interface_group("sw9", "e0", 90.0, 1),
    ]);
    let pushed = |needle: &str| {
        gateway
            .metrics_text()
            .expect("gateway metrics")
            .lines()
            .any(|line| line.starts_with("interface_bits_in{") && line.contains(needle))
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        assert!(
            vigil_tests::servers::wait_until(WAIT, Duration::from_millis(100), done),
            "{what}"
        );
    };
    wait("all pushed", &|| {
        pushed("interface_name=\"e1\"") && pushed("instance=\"sw9\"")
    });
    // Keep refreshing sw1 e0 only: e1 and all of sw9 go stale.
    let refresh = std::time::Instant::now();
    while refresh.elapsed() < Duration::from_millis(3500) {
        sinks.accept(vec![interface_group("sw1", "e0", 12.0, 2)]);
        std::thread::sleep(Duration::from_millis(500));
    }
    wait("stale series gone", &|| {
        !pushed("interface_name=\"e1\"") && !pushed("instance=\"sw9\"")
    });
    assert!(pushed("instance=\"sw1\""), "the fresh series stays");
    rt.block_on(sinks.close()).expect("close");
}

fn pushgateway_settings(
    gateway: &Pushgateway,
    job: &str,
    stale_after: Duration,
) -> PushgatewaySettings {
    PushgatewaySettings {
        name: "pushgateway".into(),
        url: gateway.url(),
        job: job.into(),
        username: None,
        password: None,
        stale_after,
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
    }
}
