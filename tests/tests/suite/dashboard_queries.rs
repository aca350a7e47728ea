//! The generated dashboards' queries run against real servers: every
//! PromQL query of the example flow's dashboard and of the vigil health
//! dashboard against a Prometheus that scraped vigil's `/metrics`, and
//! every InfluxQL query of the InfluxDB flow dashboard against an InfluxDB
//! that the line-protocol encoder wrote to. Each must parse and return
//! data, which proves the queries select what vigil actually writes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use vigil_host::dashboards::flow::Flow;
use vigil_host::dashboards::grafana::{Datasource, Substitutions};
use vigil_host::dashboards::{generate, health::health_dashboard};
use vigil_host::health::{Health, Inventory};
use vigil_host::model::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource,
};
use vigil_host::pipeline::stats::{RunObservation, RunStats};
use vigil_host::sinks::buffer::SharedGroup;
use vigil_host::sinks::delivery::Delivery;
use vigil_host::sinks::influxdb::{Precision, write_group};
use vigil_host::sinks::prometheus::{PrometheusSettings, SeriesRegistry};
use vigil_host::sinks::pushgateway::PushgatewaySettings;
use vigil_host::sinks::{DeliverySettings, OutputSettings, SinkProbes, SinkSet};
use vigil_host::store::Storage;
use vigil_host::store::sqlite::SqliteStorage;
use vigil_tests::metrics_servers::{Influxd, Prometheus};
use vigil_tests::servers::{free_tcp_port, repo_root};

const WAIT: Duration = Duration::from_secs(30);

fn example_flow() -> Flow {
    Flow::load(&repo_root().join("plugin-configs/dashboards/flow.yml")).expect("example flow")
}

fn group(
    group_type: &str,
    resource_id: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, MetricType, MetricValue)],
) -> MetricsGroup {
    let at = Datetime::from_system(SystemTime::now());
    let mut resource = Resource::named(resource_id, "127.0.0.1");
    resource.site = "lab".into();
    MetricsGroup {
        group_type: group_type.into(),
        interval_seconds: 10,
        creation_timestamp: at,
        schema_version: "0.2".into(),
        resource: resource.into(),
        dimensions: dimensions
            .iter()
            .map(|(name, value)| Dimension {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
        metrics: metrics
            .iter()
            .map(|(name, type_, value)| Metric {
                name: (*name).into(),
                value: *value,
                type_: *type_,
                creation_timestamp: at,
            })
            .collect(),
    }
}

/// What vigil's plugins would write for every node of the flow at poll
/// `round` (counters grow with it).
fn flow_groups(flow: &Flow, round: u64) -> Vec<MetricsGroup> {
    use MetricType::{Counter, Gauge};
    let mut groups = Vec::new();
    for node in &flow.nodes {
        let id = node.resource_id.as_deref().unwrap_or(&node.name);
        for interface in &node.interfaces {
            groups.push(group(
                "interface",
                id,
                &[("interface_name", &interface.name), ("alias", "flow")],
                &[
                    ("bits_in", Gauge, MetricValue::Float(1e9)),
                    ("bits_out", Gauge, MetricValue::Float(2e9)),
                    ("errors_in", Counter, MetricValue::Unsigned(round * 3)),
                    ("errors_out", Counter, MetricValue::Unsigned(round)),
                    ("discards_in", Counter, MetricValue::Unsigned(round * 7)),
                    ("discards_out", Counter, MetricValue::Unsigned(round * 2)),
                    ("oper_state", Gauge, MetricValue::Signed(1)),
                    ("admin_state", Gauge, MetricValue::Signed(1)),
                ],
            ));
        }
        groups.push(group(
            "status",
            id,
            &[("plugin", "snmp_interface_polling")],
            &[("polling_status", Gauge, MetricValue::Signed(0))],
        ));
        for target in &node.ping {
            groups.push(group(
                "ping",
                id,
                &[("target", target)],
                &[
                    ("reachable", Gauge, MetricValue::Signed(1)),
                    ("round_trip_time_ms", Gauge, MetricValue::Float(0.25)),
                    ("packet_loss_percent", Gauge, MetricValue::Float(0.0)),
                ],
            ));
        }
    }
    groups
}

fn shared(groups: Vec<MetricsGroup>) -> Vec<SharedGroup> {
    groups.into_iter().map(Arc::new).collect()
}

#[test]
fn prometheus_dashboards_select_what_vigil_exposes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let flow = example_flow();
    let port = free_tcp_port().expect("port");
    let settings = PrometheusSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        ..PrometheusSettings::default()
    };
    let registry = Arc::new(SeriesRegistry::new(settings.clone()));
    let stats = Arc::new(RunStats::default());
    for outcome in ["ok", "ok", "trap.deadline", "trap.out_of_fuel"] {
        stats.record(&RunObservation {
            plugin: "snmp_interface_polling",
            outcome,
            started_at: 1.0,
            lateness_ms: 3.0,
            duration: Duration::from_millis(40),
            fuel_consumed: 5000,
            peak_memory: 2 << 20,
        });
    }
    let probes = SinkProbes::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Storage> =
        Arc::new(SqliteStorage::open(&dir.path().join("vigil.db")).expect("store"));
    let _guard = runtime.enter();
    let mut sinks = SinkSet::open(
        &OutputSettings {
            json_lines: Some(dir.path().join("out.jsonl")),
            // A sink whose server is down, holding one group: it retries
            // and drops, so the health dashboard's drop panels have data.
            pushgateway: vec![PushgatewaySettings {
                name: "down".into(),
                url: format!("http://127.0.0.1:{}", free_tcp_port().expect("port")),
                job: "vigil".into(),
                username: None,
                password: None,
                stale_after: Duration::from_secs(600),
                max_series: 1000,
                max_series_per_plugin: 1000,
                namespace: None,
                delivery: DeliverySettings {
                    buffer: 1,
                    delivery: Delivery {
                        flush_interval: Duration::from_millis(50),
                        backoff_max: Duration::from_millis(200),
                        ..Delivery::default()
                    },
                    timeout: Duration::from_secs(1),
                },
            }],
            ..OutputSettings::default()
        },
        Arc::new(vigil_host::store::StorageLatest(store)),
        None,
        &probes,
    )
    .expect("sinks");
    let health = Arc::new(Health::new(1.0, stats.clone(), probes));
    health.add_queue("bus", || 3);
    health.set_inventory(Inventory {
        resources_by_discovery: [("inventory".to_owned(), 4)].into(),
        plugins_loaded: 2,
        plugins_broken: 1,
    });
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let _server = runtime
        .block_on(vigil_host::sinks::prometheus::serve(
            settings.listen,
            health,
            Some(registry.clone()),
            stop_rx,
        ))
        .expect("serve");
    let prometheus =
        Prometheus::start(&[("vigil", format!("127.0.0.1:{port}"))]).expect("prometheus");
    // Several scrapes of growing counters, so rate() has data.
    for round in 1..=6 {
        registry.accept(&shared(flow_groups(&flow, round)));
        sinks.accept(flow_groups(&flow, round));
        runtime.block_on(sinks.flush()).expect("flush");
        stats.record(&RunObservation {
            plugin: "snmp_interface_polling",
            outcome: "ok",
            started_at: 1.0,
            lateness_ms: 3.0,
            duration: Duration::from_millis(40),
            fuel_consumed: 5000,
            peak_memory: 2 << 20,
        });
        std::thread::sleep(Duration::from_millis(1100));
    }
    prometheus
        .wait_for(
            "up{job=\"vigil\"}",
            |r| r.len() == 1 && r[0]["value"][1] == "1",
            WAIT,
        )
        .expect("vigil scraped");

    let flow_dashboard = generate(&flow, Datasource::Prometheus);
    let health_dashboard = health_dashboard(Datasource::Prometheus).expect("health dashboard");
    let mut checked = 0;
    for (which, dashboard) in [("flow", &flow_dashboard), ("health", &health_dashboard)] {
        for query in dashboard.queries() {
            let result = prometheus
                .wait_for(&query.query, |r| !r.is_empty(), WAIT)
                .unwrap_or_else(|e| {
                    panic!(
                        "{which} dashboard, panel {:?} ({}): {e:#}",
                        query.panel_title, query.ref_id
                    )
                });
            checked += 1;
            // A per-interface panel selects exactly its interface.
            if let Some((_, rest)) = query.query.split_once("interface_name=\"")
                && let Some((wanted, _)) = rest.split_once('"')
            {
                assert!(
                    result
                        .iter()
                        .all(|s| s["metric"]["interface_name"] == wanted),
                    "{}: {result:?}",
                    query.query
                );
            }
        }
    }
    assert!(checked > 30, "only {checked} queries");
}

#[test]
fn influxdb_dashboard_selects_what_vigil_writes() {
    let flow = example_flow();
    let influxd = Influxd::start().expect("influxd");
    influxd.create_database("vigil").expect("database");
    let client = reqwest::blocking::Client::new();
    // Two polls 1 s apart, so derivatives have two points.
    for round in 1..=2 {
        let mut body = Vec::new();
        for group in flow_groups(&flow, round) {
            write_group(&group, Precision::Seconds, &mut body).expect("line");
        }
        let response = client
            .post(format!("{}/write?db=vigil&precision=s", influxd.url()))
            .body(body)
            .send()
            .expect("write");
        assert_eq!(response.status().as_u16(), 204, "{:?}", response.text());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let dashboard = generate(&flow, Datasource::InfluxDb);
    // The two polls are 1 s apart: 1 s buckets give derivatives two points.
    let mut substitutions = Substitutions::for_dashboard(&dashboard);
    substitutions.interval = "1s".into();
    let queries = dashboard.queries_with(&substitutions);
    assert!(queries.len() > 10, "{} queries", queries.len());
    for query in queries {
        let answer: Value = influxd.query("vigil", &query.query).expect("query");
        let result = &answer["results"][0];
        assert!(
            result.get("error").is_none(),
            "panel {:?}: {} -> {answer}",
            query.panel_title,
            query.query
        );
        let series = result["series"].as_array().cloned().unwrap_or_default();
        let has_value = series.iter().any(|s| {
            s["values"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|row| row[1].is_number()))
        });
        assert!(
            has_value,
            "panel {:?}: {} returned no value: {answer}",
            query.panel_title, query.query
        );
    }
}
