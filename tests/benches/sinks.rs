//! Sink throughput on one core: `cargo bench -p vigil-tests --bench sinks`.
//!
//! A workload shaped like `snmp-interface-polling`'s output: one group per
//! interface with 10 dimensions and 22 metrics (2 of them rate-transformed
//! counters). Prints, single-threaded and without a network:
//! * the rate transform alone;
//! * for each sink's encoder (Panoptes JSON, InfluxDB line protocol,
//!   Prometheus registry update and `/metrics` render, Pushgateway body):
//!   groups and metrics per second, transform included;
//!
//! then groups per second delivered into a real InfluxDB 1.6 on loopback
//! through the sink's buffer, batching and HTTP writer.
//!
//! `VIGIL_BENCH_GROUPS` sets the groups per pass (default 100,000) and
//! `VIGIL_BENCH_INFLUX_GROUPS` those sent to InfluxDB (default 50,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_host::model::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource,
};
use vigil_host::pipeline::encode::write_json_line;
use vigil_host::plugin::manifest::RateTransform;
use vigil_host::sinks::DeliverySettings;
use vigil_host::sinks::buffer::{SharedGroup, SinkBuffer};
use vigil_host::sinks::delivery::{Delivery, deliver};
use vigil_host::sinks::exposition::{Exposition, Format, group_labels};
use vigil_host::sinks::influxdb::{
    InfluxApi, InfluxSettings, InfluxWriter, Precision, write_group,
};
use vigil_host::sinks::prometheus::{Families, PrometheusSettings, SeriesLimits, SeriesRegistry};
use vigil_host::transform::RateTransformer;
use vigil_tests::metrics_servers::Influxd;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEVICES: usize = 200;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `groups` interface groups over 200 devices, at poll `round`.
fn workload(groups: usize, round: u64) -> Vec<MetricsGroup> {
    let at = Datetime {
        seconds: 1_700_000_000 + round * 60,
        nanoseconds: 0,
    };
    (0..groups)
        .map(|i| {
            let device = i % DEVICES;
            let interface = i / DEVICES;
            let mut resource = Resource::named(&format!("device-{device}"), "127.0.0.1");
            resource.site = "lab".into();
            resource.class = "network".into();
            resource.subclass = "switch".into();
            resource.type_ = "juniper".into();
            let dimension = |name: &str, value: String| Dimension {
                name: name.into(),
                value,
            };
            let counter = |name: &str, value: u64| Metric {
                name: name.into(),
                value: MetricValue::Unsigned(value),
                type_: MetricType::Counter,
                creation_timestamp: at,
            };
            let gauge = |name: &str, value: i64| Metric {
                name: name.into(),
                value: MetricValue::Signed(value),
                type_: MetricType::Gauge,
                creation_timestamp: at,
            };
            let base = (i as u64 + 1) * 1_000_000 + round * 75_000_000;
            MetricsGroup {
                group_type: "interface".into(),
                interval_seconds: 60,
                creation_timestamp: at,
                schema_version: "0.2".into(),
                resource: resource.into(),
                dimensions: vec![
                    dimension("alias", format!("uplink {interface}")),
                    dimension("configured_speed", "10000000000".into()),
                    dimension("description", format!("to core-{device}, port {interface}")),
                    dimension("interface_name", format!("xe-0/0/{interface}")),
                    dimension("media_type", "ethernetCsmacd".into()),
                    dimension("parent_interface_configured_speed", "0".into()),
                    dimension("parent_interface_media_type", String::new()),
                    dimension("parent_interface_name", String::new()),
                    dimension("parent_interface_port_speed", "0".into()),
                    dimension("port_speed", "10000000000".into()),
                ],
                metrics: vec![
                    counter("bits_in", base * 8),
                    counter("bits_out", base * 6),
                    counter("unicast_packets_in", base / 900),
                    counter("unicast_packets_out", base / 800),
                    counter("multicast_packets_in", base / 90_000),
                    counter("multicast_packets_out", base / 80_000),
                    counter("broadcast_packets_in", base / 70_000),
                    counter("broadcast_packets_out", base / 60_000),
                    counter("total_packets_in", base / 850),
                    counter("total_packets_out", base / 750),
                    counter("errors_in", 3),
                    counter("errors_out", 0),
                    counter("discards_in", 17),
                    counter("discards_out", 2),
                    counter("errors_crc", 0),
                    counter("errors_frame", 0),
                    counter("errors_giants", 0),
                    gauge("admin_state", 1),
                    gauge("oper_state", 1),
                    gauge("oper_admin_state_mismatch", 0),
                    gauge("mtu", 9192),
                    gauge("port_speed", 10_000_000_000),
                ],
            }
        })
        .collect()
}

fn transforms() -> Vec<RateTransform> {
    vec![RateTransform {
        name: "interface_bit_rates".into(),
        group_type: "interface".into(),
        metrics: vec!["bits_in".into(), "bits_out".into()],
    }]
}

struct Figure {
    name: &'static str,
    groups: usize,
    metrics: usize,
    elapsed: Duration,
}

fn report(figure: &Figure) {
    let secs = figure.elapsed.as_secs_f64();
    println!(
        "{:<44} {:>10.0} groups/s {:>12.0} metrics/s  ({} groups in {:?})",
        figure.name,
        figure.groups as f64 / secs,
        figure.metrics as f64 / secs,
        figure.groups,
        figure.elapsed
    );
}

/// Runs `encode` over a freshly transformed pass, timing transform + encode.
fn measure(
    name: &'static str,
    groups: usize,
    round: &mut u64,
    transformer: &RateTransformer,
    mut encode: impl FnMut(&[MetricsGroup]),
) -> Figure {
    *round += 1;
    let mut batch = workload(groups, *round);
    let started = Instant::now();
    transformer.apply("bench", &transforms(), &mut batch);
    encode(&batch);
    let elapsed = started.elapsed();
    Figure {
        name,
        groups: batch.len(),
        metrics: batch.iter().map(|g| g.metrics.len()).sum(),
        elapsed,
    }
}

fn main() {
    hostile();
    if std::env::var_os("VIGIL_BENCH_HOSTILE_ONLY").is_some() {
        return;
    }
    let groups = env_count("VIGIL_BENCH_GROUPS", 100_000);
    println!(
        "{groups} interface groups per pass (22 metrics, 10 dimensions), one thread, transform included:"
    );
    let transformer = RateTransformer::new(groups * 4);
    let mut round = 0;
    // The first poll only baselines the counters.
    transformer.apply("bench", &transforms(), &mut workload(groups, round));

    let transform_only = measure(
        "rate transform alone",
        groups,
        &mut round,
        &transformer,
        |_| {},
    );
    report(&transform_only);

    let mut json = Vec::with_capacity(groups * 2048);
    let figure = measure(
        "transform + Panoptes JSON lines",
        groups,
        &mut round,
        &transformer,
        |batch| {
            json.clear();
            for group in batch {
                write_json_line(group, &mut json).expect("json");
            }
        },
    );
    report(&figure);
    println!("    ({} bytes per group)", json.len() / groups.max(1));

    let mut lines = Vec::with_capacity(groups * 1024);
    let figure = measure(
        "transform + InfluxDB line protocol",
        groups,
        &mut round,
        &transformer,
        |batch| {
            lines.clear();
            for group in batch {
                let _ = write_group(group, Precision::Seconds, &mut lines);
            }
        },
    );
    report(&figure);
    println!("    ({} bytes per group)", lines.len() / groups.max(1));

    let registry = SeriesRegistry::new(PrometheusSettings {
        max_series: groups * 32,
        max_series_per_plugin: groups * 32,
        ..PrometheusSettings::default()
    });
    let mut shared: Vec<SharedGroup> = Vec::new();
    for name in [
        "transform + Prometheus registry (new series)",
        "transform + Prometheus registry (updates)",
    ] {
        let figure = measure(name, groups, &mut round, &transformer, |batch| {
            shared = batch.iter().cloned().map(Arc::new).collect();
            registry.accept(&shared);
        });
        report(&figure);
    }
    let started = Instant::now();
    let mut doc = Exposition::new(Format::Text);
    registry.render(&mut doc);
    let text = doc.finish();
    report(&Figure {
        name: "Prometheus /metrics render (text)",
        groups,
        metrics: registry.series(),
        elapsed: started.elapsed(),
    });
    println!("    ({} series, {} bytes)", registry.series(), text.len());

    let figure = measure(
        "transform + Pushgateway bodies",
        groups,
        &mut round,
        &transformer,
        |batch| {
            // One group per device, rendered as the PUT body.
            let mut families = Families::default();
            let now = Instant::now();
            let limits = SeriesLimits {
                max_series: groups * 32,
                max_series_per_plugin: groups * 32,
            };
            for group in batch {
                let labels = group_labels(group, &["job", "instance"]);
                families.accept(group, "bench", &labels, now, limits);
            }
            for device in 0..DEVICES {
                let mut doc = Exposition::new(Format::Text);
                families.render_resource(&format!("device-{device}"), &mut doc);
                std::hint::black_box(doc.finish());
            }
        },
    );
    report(&figure);

    influxdb(env_count("VIGIL_BENCH_INFLUX_GROUPS", 50_000));
}

/// Groups delivered into a real InfluxDB through the sink.
fn influxdb(groups: usize) {
    let influxd = Influxd::start().expect("influxd");
    influxd.create_database("bench").expect("create database");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let settings = InfluxSettings {
        name: "influxdb".into(),
        url: influxd.url(),
        api: InfluxApi::V1 {
            database: "bench".into(),
            retention_policy: None,
            username: None,
            password: None,
        },
        precision: Precision::Seconds,
        field_names: Default::default(),
        delivery: DeliverySettings {
            buffer: groups,
            delivery: Delivery {
                batch_size: 5_000,
                flush_interval: Duration::from_millis(100),
                ..Delivery::default()
            },
            timeout: Duration::from_secs(30),
        },
    };
    let batch: Vec<SharedGroup> = workload(groups, 1).into_iter().map(Arc::new).collect();
    let metrics: usize = batch.iter().map(|g| g.metrics.len()).sum();
    let buffer = SinkBuffer::new(groups);
    let started = Instant::now();
    runtime.block_on(async {
        let writer = InfluxWriter::new(&settings).expect("writer");
        let task = tokio::spawn(deliver(
            "influxdb".into(),
            buffer.clone(),
            writer,
            settings.delivery.delivery,
        ));
        buffer.push(&batch);
        // Closing starts the shutdown grace (5 s): wait for the delivery
        // first, by its count.
        while (buffer
            .counters
            .snapshot("influxdb", "influxdb", 0, 0)
            .delivered as usize)
            < groups
        {
            assert!(!task.is_finished(), "the delivery loop stopped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        buffer.close();
        task.await.expect("delivery");
    });
    let elapsed = started.elapsed();
    let snapshot = buffer.counters.snapshot("influxdb", "influxdb", 0, 0);
    assert_eq!(snapshot.delivered as usize, groups, "{snapshot:?}");
    let answer = influxd
        .query("bench", "SELECT count(mtu) FROM interface")
        .expect("count");
    let stored = answer["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or_default();
    assert_eq!(
        stored as usize, groups,
        "InfluxDB holds every group: {answer}"
    );
    report(&Figure {
        name: "into InfluxDB 1.6 over HTTP (1 worker)",
        groups,
        metrics,
        elapsed,
    });
}

/// One group of `n` dimensions all named `d` (values distinct), one metric.
fn duplicate_dimensions(n: usize) -> MetricsGroup {
    let at = Datetime {
        seconds: 1_700_000_000,
        nanoseconds: 0,
    };
    MetricsGroup {
        group_type: "g".into(),
        interval_seconds: 60,
        creation_timestamp: at,
        schema_version: "0.2".into(),
        resource: Resource::named("r", "127.0.0.1").into(),
        dimensions: (0..n)
            .map(|i| Dimension {
                name: "d".into(),
                value: format!("{i}"),
            })
            .collect(),
        metrics: vec![Metric {
            name: "m".into(),
            value: MetricValue::Signed(1),
            type_: MetricType::Gauge,
            creation_timestamp: at,
        }],
    }
}

/// The worst amplification shape: `metrics` one-letter-ish metrics over
/// `dimensions` dimensions of 24-byte names and 200-byte values.
fn wide_group(dimensions: usize, metrics: usize) -> MetricsGroup {
    let at = Datetime {
        seconds: 1_700_000_000,
        nanoseconds: 0,
    };
    MetricsGroup {
        group_type: "g".into(),
        interval_seconds: 60,
        creation_timestamp: at,
        schema_version: "0.2".into(),
        resource: Resource::named("r", "127.0.0.1").into(),
        dimensions: (0..dimensions)
            .map(|i| Dimension {
                name: format!("dimension_{i:014}"),
                value: format!("{i:0200}"),
            })
            .collect(),
        metrics: (0..metrics)
            .map(|i| Metric {
                name: format!("m{i}"),
                value: MetricValue::Signed(i as i64),
                type_: MetricType::Gauge,
                creation_timestamp: at,
            })
            .collect(),
    }
}

/// Hostile shapes, printed before the throughput figures:
/// * one group of `VIGIL_BENCH_DUPLICATES` (default 20,000; a
///   comma-separated list for several) dimensions of the same name through
///   each encoder's label renaming;
/// * host bytes per plugin byte (Panoptes JSON of the group) of a wide
///   group (64 dimensions of 224 bytes, 2,000 metrics) in the latest-value
///   store (SQLite file growth), the Prometheus registry (live heap) and
///   its `/metrics` page.
fn hostile() {
    let sizes: Vec<usize> = std::env::var("VIGIL_BENCH_DUPLICATES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![20_000]);
    for n in sizes {
        let group = duplicate_dimensions(n);
        let started = Instant::now();
        let prometheus = group_labels(&group, &[]);
        let prometheus_time = started.elapsed();
        let started = Instant::now();
        let pushgateway = group_labels(&group, &["job", "instance"]);
        let pushgateway_time = started.elapsed();
        let started = Instant::now();
        let mut line = Vec::new();
        let _ = write_group(&group, Precision::Seconds, &mut line);
        let influx_time = started.elapsed();
        println!(
            "{n} dimensions named alike: Prometheus labels {prometheus_time:?} ({} bytes), \
Pushgateway labels {pushgateway_time:?} ({} bytes), InfluxDB line {influx_time:?} ({} bytes)",
            prometheus.len(),
            pushgateway.len(),
            line.len()
        );
    }

    let group = wide_group(64, 2_000);
    let input = vigil_host::pipeline::encode::encode_metrics_group(&group).len();
    let shared: Vec<SharedGroup> = vec![Arc::new(group)];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vigil.db");
    let file_bytes = |path: &std::path::Path| {
        let wal = path.with_extension("db-wal");
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    };
    let empty = {
        let store = vigil_host::store::sqlite::SqliteStorage::open(&path).expect("store");
        drop(store);
        file_bytes(&path)
    };
    {
        use vigil_host::store::Storage as _;
        let store = vigil_host::store::sqlite::SqliteStorage::open(&path).expect("store");
        vigil_tests::block_on(store.store_latest(&shared)).expect("store_latest");
    }
    let stored = file_bytes(&path) - empty;
    println!(
        "wide group (64 dimensions x 224 bytes, 2,000 metrics), {input} bytes of Panoptes JSON:"
    );
    println!(
        "    latest-value store (SQLite): {stored} bytes, {:.2} per input byte",
        stored as f64 / input as f64
    );
    let registry = SeriesRegistry::new(PrometheusSettings::default());
    registry.accept(&shared);
    // Label text once per label set plus one 40-byte sample per series
    // (what `Families` holds; map overhead aside).
    let held = registry.label_bytes() + 40 * registry.series();
    let mut doc = Exposition::new(Format::Text);
    registry.render(&mut doc);
    let page = doc.finish().len();
    println!(
        "    Prometheus registry: {held} bytes held, {:.2} per input byte; /metrics page {page} bytes, {:.1} per input byte",
        held as f64 / input as f64,
        page as f64 / input as f64
    );
}
