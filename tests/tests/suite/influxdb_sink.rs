//! The InfluxDB sink against a real InfluxDB (Debian's `influxdb` 1.6 on
//! loopback, [`Influxd`]), through its public parts: [`InfluxWriter`] on
//! the shared delivery loop ([`deliver`]) and its bounded [`SinkBuffer`].
//!
//! * hostile measurement, tag and field values are read back with InfluxQL
//!   exactly (or with the documented replacements), integers as integers;
//! * every precision keeps the group timestamps;
//! * an outage within the buffer bound loses nothing; one past it drops
//!   exactly the oldest, counted as `buffer_full`;
//! * a point InfluxDB refuses (a field type conflict, 400) is dropped and
//!   counted as `rejected`, and the next ones are delivered; a missing
//!   database is retried, not dropped;
//! * `[[outputs.influxdb]]` in the site file runs a sink in the `SinkSet`;
//! * InfluxDB 1.6 has no `/api/v2/write` (it answers 404: the endpoint came
//!   with 1.8), so the v2 request (path, query, `Authorization: Token`,
//!   body), v1 basic auth, the 413 split and the retry messages are checked
//!   against a tiny HTTP listener in this file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use vigil_host::model::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource,
};
use vigil_host::plugin::ini::LocatedError;
use vigil_host::sinks::buffer::{SharedGroup, SinkBuffer, SinkSnapshot, reason};
use vigil_host::sinks::delivery::{BatchWriter, Delivery, SendError, deliver};
use vigil_host::sinks::influxdb::{
    FieldNames, InfluxApi, InfluxSection, InfluxSettings, InfluxWriter, Precision, write_group,
};
use vigil_host::sinks::{DeliverySettings, OutputsSection, SinkProbes, SinkSet};
use vigil_host::store::sqlite::SqliteStorage;
use vigil_tests::metrics_servers::Influxd;
use vigil_tests::servers::wait_until;

/// How long a test waits for something that takes well under a second on
/// an idle machine.
const WAIT: Duration = Duration::from_secs(60);
const DB: &str = "vigil";

fn metric(name: &str, value: MetricValue) -> Metric {
    Metric {
        name: name.into(),
        value,
        type_: MetricType::Gauge,
        creation_timestamp: Datetime {
            seconds: 0,
            nanoseconds: 0,
        },
    }
}

fn group(
    kind: &str,
    dimensions: &[(&str, &str)],
    metrics: Vec<Metric>,
    time: Datetime,
) -> SharedGroup {
    let mut resource = Resource::named("sw1", "127.0.0.1");
    resource.site = "lab".into();
    resource.class = "network".into();
    Arc::new(MetricsGroup {
        group_type: kind.into(),
        interval_seconds: 60,
        creation_timestamp: time,
        schema_version: "0.2".into(),
        resource: resource.into(),
        dimensions: dimensions
            .iter()
            .map(|(name, value)| Dimension {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
        metrics,
    })
}

fn at(seconds: u64) -> Datetime {
    Datetime {
        seconds,
        nanoseconds: 0,
    }
}

/// Quick batches and retries, so outages resolve in well under a second.
fn delivery(batch_size: usize) -> Delivery {
    Delivery {
        batch_size,
        flush_interval: Duration::from_millis(20),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(5),
    }
}

fn v1_settings(
    url: &str,
    precision: Precision,
    buffer: usize,
    batch_size: usize,
) -> InfluxSettings {
    InfluxSettings {
        name: "influx-test".into(),
        url: url.into(),
        api: InfluxApi::V1 {
            database: DB.into(),
            retention_policy: None,
            username: None,
            password: None,
        },
        precision,
        field_names: FieldNames::Metric,
        delivery: DeliverySettings {
            buffer,
            delivery: delivery(batch_size),
            timeout: Duration::from_secs(5),
        },
    }
}

/// Settings as an operator writes them in the site file.
fn settings_from_toml(text: &str) -> InfluxSettings {
    let section: InfluxSection = toml::from_str(text).expect("valid TOML");
    section
        .resolve(0, 0..0, Path::new("."), &|_, message| {
            LocatedError::new(Path::new("site.toml"), 1, message)
        })
        .expect("valid settings")
}

/// A sink as `SinkSet` runs it: a bounded buffer and the delivery loop on
/// its own task (here on a runtime of its own, so the test thread can use
/// the blocking InfluxDB client).
struct Sink {
    runtime: tokio::runtime::Runtime,
    buffer: Arc<SinkBuffer>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sink {
    fn start(settings: &InfluxSettings) -> Sink {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let buffer = SinkBuffer::new(settings.delivery.buffer);
        let writer = InfluxWriter::new(settings).expect("influx writer");
        let task = runtime.spawn(deliver(
            settings.name.clone(),
            buffer.clone(),
            writer,
            settings.delivery.delivery,
        ));
        Sink {
            runtime,
            buffer,
            task: Some(task),
        }
    }

    fn push(&self, groups: &[SharedGroup]) {
        self.buffer.push(groups);
    }

    fn snapshot(&self) -> SinkSnapshot {
        self.buffer.counters.snapshot(
            "influx-test",
            "influxdb",
            self.buffer.len() as u64,
            self.buffer.capacity() as u64,
        )
    }

    /// Waits until `done` holds on the counters; panics with them if it
    /// does not within [`WAIT`].
    fn wait(&self, what: &str, done: impl Fn(&SinkSnapshot) -> bool) -> SinkSnapshot {
        if !wait_until(WAIT, Duration::from_millis(20), || done(&self.snapshot())) {
            panic!(
                "sink: {what} did not happen within {WAIT:?}: {:?}",
                self.snapshot()
            );
        }
        self.snapshot()
    }

    /// Closes the buffer and waits for the delivery loop to end.
    fn close(mut self) -> SinkSnapshot {
        self.buffer.close();
        if let Some(task) = self.task.take() {
            self.runtime.block_on(task).expect("delivery task");
        }
        self.snapshot()
    }
}

fn rejected(snapshot: &SinkSnapshot) -> u64 {
    snapshot.dropped.get(reason::REJECTED).copied().unwrap_or(0)
}

fn dropped_total(snapshot: &SinkSnapshot) -> u64 {
    snapshot.dropped.values().sum()
}

fn buffer_full(snapshot: &SinkSnapshot) -> u64 {
    snapshot
        .dropped
        .get(reason::BUFFER_FULL)
        .copied()
        .unwrap_or(0)
}

/// The rows of the first series of an InfluxQL answer, as column → value
/// (times in nanoseconds); none when there is no series.
fn rows(influxd: &Influxd, influxql: &str) -> Vec<BTreeMap<String, Value>> {
    let answer = influxd.query(DB, influxql).expect("query");
    let series = &answer["results"][0]["series"][0];
    let columns: Vec<String> = series["columns"]
        .as_array()
        .map(|columns| {
            columns
                .iter()
                .map(|c| c.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    series["values"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            columns
                .iter()
                .cloned()
                .zip(row.as_array().into_iter().flatten().cloned())
                .collect()
        })
        .collect()
}

fn start_influxd() -> Influxd {
    let influxd = Influxd::start().expect("influxd");
    influxd.create_database(DB).expect("create database");
    influxd
}

#[test]
fn hostile_names_and_values_round_trip() {
    let influxd = start_influxd();
    let sink = Sink::start(&v1_settings(&influxd.url(), Precision::Seconds, 1000, 100));
    // (dimension name, value written, value InfluxDB must return)
    let tags: &[(&str, &str, &str)] = &[
        ("space", "ge-0/0/1 uplink", "ge-0/0/1 uplink"),
        ("comma", "a,b", "a,b"),
        ("equals", "k=v", "k=v"),
        ("quotes", "say \"hi\"", "say \"hi\""),
        ("backslash", "C:\\Users\\vigil", "C:\\Users\\vigil"),
        ("backslash_comma", "a\\,b", "a\\,b"),
        ("backslash_space", "a\\ b", "a\\ b"),
        ("backslash_equals", "a\\=b", "a\\=b"),
        ("backslash_quote", "a\\\"b", "a\\\"b"),
        ("double_backslash", "x\\\\y", "x\\\\y"),
        ("everything", " ,=\"\\ x", " ,=\"\\ x"),
        ("tab", "a\tb", "a\tb"),
        ("unicode", "ünïcode ☃ 日本", "ünïcode ☃ 日本"),
        // What line protocol cannot carry, replaced visibly.
        ("trailing_backslash", "ends in\\", "ends in＼"),
        ("newline", "two\nlines\r", "two\\nlines\\r"),
    ];
    let dimensions: Vec<(&str, &str)> = tags.iter().map(|(k, v, _)| (*k, *v)).collect();
    let metrics = vec![
        metric("signed", MetricValue::Signed(-42)),
        metric("min", MetricValue::Signed(i64::MIN)),
        metric("max_unsigned", MetricValue::Unsigned(i64::MAX as u64)),
        metric("above", MetricValue::Unsigned(u64::MAX)),
        metric("zero", MetricValue::Unsigned(0)),
        metric("tenth", MetricValue::Float(0.1)),
        metric("big", MetricValue::Float(1e20)),
        metric("tiny", MetricValue::Float(-1.5e-7)),
        metric("whole", MetricValue::Float(3.0)),
        metric("nan", MetricValue::Float(f64::NAN)),
    ];
    let mut hostile = (*group("interface", &dimensions, metrics, at(1_700_000_000))).clone();
    std::sync::Arc::make_mut(&mut hostile.resource).id = "sw 1,=\"x\"".into();
    let odd_measurement = group(
        "if stats,x=1",
        &[("k", "v")],
        vec![
            metric("n", MetricValue::Signed(7)),
            metric("odd key, =\"x\"", MetricValue::Signed(8)),
        ],
        at(1_700_000_001),
    );
    // A line starting with `#` would be a comment (dropped with a 204);
    // a trailing backslash has no encoding.
    let comment_like = group(
        "#hash\\",
        &[],
        vec![metric("n", MetricValue::Signed(9))],
        at(1_700_000_002),
    );
    sink.push(&[Arc::new(hostile), odd_measurement, comment_like]);
    let snapshot = sink.wait("delivery", |s| s.delivered == 3);
    assert_eq!(dropped_total(&snapshot), 0, "{snapshot:?}");

    let found = rows(&influxd, "SELECT * FROM \"interface\"");
    assert_eq!(found.len(), 1, "{found:?}");
    let row = &found[0];
    assert_eq!(row["time"], Value::from(1_700_000_000_000_000_000_u64));
    for (name, _, expected) in tags {
        assert_eq!(row[*name], Value::from(*expected), "tag {name}: {row:?}");
    }
    assert_eq!(row["resource_id"], "sw 1,=\"x\"");
    assert_eq!(row["resource_site"], "lab");
    assert_eq!(row["resource_class"], "network");
    assert_eq!(row["resource_endpoint"], "127.0.0.1");
    // Empty resource fields are not tags at all.
    assert!(
        row.get("resource_subclass").is_none_or(Value::is_null),
        "{row:?}"
    );
    assert!(!row.contains_key("nan"), "a NaN field is left out: {row:?}");
    assert_eq!(row["signed"], Value::from(-42));
    assert_eq!(row["min"], Value::from(i64::MIN));
    assert_eq!(row["max_unsigned"], Value::from(i64::MAX));
    assert_eq!(row["zero"], Value::from(0));
    for (name, expected) in [
        ("above", u64::MAX as f64),
        ("tenth", 0.1),
        ("big", 1e20),
        ("tiny", -1.5e-7),
        ("whole", 3.0),
    ] {
        assert_eq!(row[name].as_f64(), Some(expected), "field {name}: {row:?}");
    }
    // Integers stay integers, floats stay floats.
    let types: BTreeMap<String, String> = rows(&influxd, "SHOW FIELD KEYS FROM \"interface\"")
        .into_iter()
        .map(|r| {
            (
                r["fieldKey"].as_str().unwrap_or_default().to_owned(),
                r["fieldType"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for name in ["signed", "min", "max_unsigned", "zero"] {
        assert_eq!(types[name], "integer", "{name}: {types:?}");
    }
    for name in ["above", "tenth", "big", "tiny", "whole"] {
        assert_eq!(types[name], "float", "{name}: {types:?}");
    }

    let query = "SELECT * FROM \"if stats,x=1\"";
    let answer = influxd.query(DB, query).expect("query");
    assert_eq!(
        answer["results"][0]["series"][0]["name"], "if stats,x=1",
        "{answer}"
    );
    let found = rows(&influxd, query);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["n"], Value::from(7), "{found:?}");
    assert_eq!(found[0]["k"], "v", "{found:?}");
    assert_eq!(found[0]["odd key, =\"x\""], Value::from(8), "{found:?}");
    let measurements: Vec<Value> = rows(&influxd, "SHOW MEASUREMENTS")
        .into_iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(
        measurements,
        vec![
            Value::from("\\#hash＼"),
            Value::from("if stats,x=1"),
            Value::from("interface")
        ]
    );
    sink.close();
}

#[test]
fn every_precision_keeps_the_group_timestamps() {
    let influxd = start_influxd();
    let precisions = [
        (Precision::Seconds, "p_s", 1_000_000_000),
        (Precision::Milliseconds, "p_ms", 1_000_000),
        (Precision::Microseconds, "p_us", 1_000),
        (Precision::Nanoseconds, "p_ns", 1),
    ];
    for (precision, measurement, unit) in precisions {
        let sink = Sink::start(&v1_settings(&influxd.url(), precision, 100, 10));
        let times: Vec<Datetime> = (0..3)
            .map(|i| Datetime {
                seconds: 1_700_000_000 + i,
                nanoseconds: 123_456_789,
            })
            .collect();
        let groups: Vec<SharedGroup> = times
            .iter()
            .map(|t| {
                group(
                    measurement,
                    &[],
                    vec![metric("v", MetricValue::Signed(1))],
                    *t,
                )
            })
            .collect();
        sink.push(&groups);
        sink.wait("delivery", |s| s.delivered == 3);
        let stored: Vec<u64> = rows(&influxd, &format!("SELECT v FROM {measurement}"))
            .iter()
            .map(|r| r["time"].as_u64().expect("time in ns"))
            .collect();
        // The creation time, truncated to the precision.
        let expected: Vec<u64> = times
            .iter()
            .map(|t| (t.seconds * 1_000_000_000 + u64::from(t.nanoseconds)) / unit * unit)
            .collect();
        assert_eq!(stored, expected, "{measurement}");
        sink.close();
    }
}

/// Groups of one outage phase: `seq` from `from` to `to`, one second apart
/// (each its own point).
fn outage_groups(phase: &str, seqs: std::ops::Range<i64>) -> Vec<SharedGroup> {
    seqs.map(|seq| {
        group(
            "outage",
            &[("phase", phase)],
            vec![metric("seq", MetricValue::Signed(seq))],
            at(1_700_000_000 + seq as u64 + if phase == "2" { 100_000 } else { 0 }),
        )
    })
    .collect()
}

fn stored_seqs(influxd: &Influxd, phase: &str) -> Vec<i64> {
    rows(
        influxd,
        &format!("SELECT seq FROM outage WHERE phase = '{phase}'"),
    )
    .iter()
    .map(|r| r["seq"].as_i64().expect("integer seq"))
    .collect()
}

/// Waits until the delivery loop has failed twice more than `retries`:
/// then any batch it held when the caller pushed has been put back, and
/// the buffer holds what it will deliver.
fn wait_for_two_more_retries(sink: &Sink, retries: u64) {
    sink.wait("two failed deliveries", |s| s.retries >= retries + 2);
}

#[test]
fn outages_within_the_bound_lose_nothing_and_past_it_drop_exactly_the_oldest() {
    const BUFFER: usize = 500;
    const BATCH: usize = 50;
    let mut influxd = start_influxd();
    let sink = Sink::start(&v1_settings(
        &influxd.url(),
        Precision::Seconds,
        BUFFER,
        BATCH,
    ));

    // Before: delivered as they come.
    sink.push(&outage_groups("0", 0..20));
    sink.wait("delivery before the outage", |s| s.delivered == 20);

    // An outage with fewer groups than the buffer holds: all arrive, once.
    influxd.kill();
    let retries = sink.snapshot().retries;
    for chunk in outage_groups("1", 0..300).chunks(37) {
        sink.push(chunk);
    }
    wait_for_two_more_retries(&sink, retries);
    assert_eq!(sink.snapshot().delivered, 20);
    influxd.start_again().expect("influxd back");
    let snapshot = sink.wait("delivery after the outage", |s| s.delivered == 320);
    assert_eq!(dropped_total(&snapshot), 0, "{snapshot:?}");
    assert_eq!(stored_seqs(&influxd, "0"), (0..20).collect::<Vec<_>>());
    assert_eq!(stored_seqs(&influxd, "1"), (0..300).collect::<Vec<_>>());

    // An outage with more: the buffer keeps exactly the newest BUFFER. The
    // buffer is empty when the outage starts and everything is pushed at
    // once, so no older batch is in flight: the excess is exact.
    influxd.kill();
    let retries = sink.snapshot().retries;
    sink.push(&outage_groups("2", 0..800));
    wait_for_two_more_retries(&sink, retries);
    let snapshot = sink.snapshot();
    assert_eq!(buffer_full(&snapshot), 300, "{snapshot:?}");
    assert_eq!(snapshot.buffered, BUFFER as u64, "{snapshot:?}");
    influxd.start_again().expect("influxd back");
    let snapshot = sink.wait("delivery after the long outage", |s| {
        s.delivered == 320 + BUFFER as u64
    });
    assert_eq!(buffer_full(&snapshot), 300, "{snapshot:?}");
    assert_eq!(snapshot.accepted, 20 + 300 + 800);
    assert_eq!(stored_seqs(&influxd, "2"), (300..800).collect::<Vec<_>>());
    let snapshot = sink.close();
    assert_eq!(
        snapshot.delivered, 820,
        "nothing more arrived: {snapshot:?}"
    );
    assert_eq!(dropped_total(&snapshot), 300, "{snapshot:?}");
}

#[test]
fn refused_points_are_counted_and_the_next_are_delivered() {
    let influxd = start_influxd();
    let sink = Sink::start(&v1_settings(&influxd.url(), Precision::Seconds, 100, 10));
    let point = |value: MetricValue, second: u64| {
        group(
            "conflict",
            &[],
            vec![metric("f", value)],
            at(1_700_000_000 + second),
        )
    };
    // `f` is an integer field from now on (in this shard).
    sink.push(&[point(MetricValue::Signed(1), 0)]);
    sink.wait("first delivery", |s| s.delivered == 1);
    // A float `f` is a field type conflict: InfluxDB answers 400.
    sink.push(&[point(MetricValue::Float(1.5), 1)]);
    let snapshot = sink.wait("the refusal", |s| rejected(s) == 1);
    assert_eq!(snapshot.delivered, 1, "{snapshot:?}");
    sink.push(&[point(MetricValue::Signed(2), 2)]);
    sink.wait("the next delivery", |s| s.delivered == 2);
    // In one batch with good points, only the refused one is counted
    // (InfluxDB 1.x writes the rest and says how many it dropped).
    sink.push(&[
        point(MetricValue::Float(2.5), 3),
        point(MetricValue::Signed(4), 4),
    ]);
    let snapshot = sink.wait("the mixed batch", |s| s.delivered == 3 && rejected(s) == 2);
    assert_eq!(snapshot.retries, 0, "{snapshot:?}");
    let stored: Vec<(u64, i64)> = rows(&influxd, "SELECT f FROM conflict")
        .iter()
        .map(|r| {
            (
                r["time"].as_u64().expect("time") / 1_000_000_000 - 1_700_000_000,
                r["f"].as_i64().expect("integer"),
            )
        })
        .collect();
    assert_eq!(stored, vec![(0, 1), (2, 2), (4, 4)]);
    sink.close();
}

/// `field_names = "panoptes"` appends to a database Panoptes' consumer
/// filled: same field names, floats, so no field type conflict.
#[test]
fn panoptes_field_names_append_to_a_panoptes_database() {
    let influxd = start_influxd();
    // What Panoptes' consumer wrote: `<metric>__<type>`, numbers without `i`.
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/write?db={DB}&precision=s", influxd.url()))
        .body("interface,interface_name=e0,resource_endpoint=10.0.0.1 in_octets__counter=5 1700000000\n")
        .send()
        .expect("write");
    assert_eq!(response.status().as_u16(), 204);
    let mut settings = v1_settings(&influxd.url(), Precision::Seconds, 100, 10);
    settings.field_names = FieldNames::Panoptes;
    let sink = Sink::start(&settings);
    let mut counter = metric("in_octets", MetricValue::Unsigned(123));
    counter.type_ = MetricType::Counter;
    sink.push(&[group(
        "interface",
        &[("interface_name", "e0")],
        vec![counter],
        at(1_700_000_060),
    )]);
    let snapshot = sink.wait("delivery", |s| s.delivered == 1 || rejected(s) > 0);
    assert_eq!(rejected(&snapshot), 0, "{snapshot:?}");
    let values: Vec<f64> = rows(&influxd, "SELECT in_octets__counter FROM interface")
        .iter()
        .map(|r| r["in_octets__counter"].as_f64().expect("a number"))
        .collect();
    assert_eq!(values, vec![5.0, 123.0]);
    sink.close();
}

#[test]
fn a_missing_database_is_retried_not_dropped() {
    let influxd = Influxd::start().expect("influxd");
    let mut writer = InfluxWriter::new(&v1_settings(&influxd.url(), Precision::Seconds, 10, 10))
        .expect("writer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let batch = [group(
        "m",
        &[],
        vec![metric("v", MetricValue::Signed(1))],
        at(1),
    )];
    match runtime.block_on(writer.send(&batch)) {
        Err(SendError::Retry(message)) => {
            assert!(message.contains("influx-test"), "{message}");
            assert!(message.contains("404"), "{message}");
            assert!(message.contains("database not found"), "{message}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[test]
fn site_outputs_run_an_influxdb_sink_in_the_sink_set() {
    let influxd = start_influxd();
    let parse = |text: &str| {
        let section: OutputsSection = toml::from_str(text).expect("valid TOML");
        section.resolve(Path::new("."), &|_, message| {
            LocatedError::new(Path::new("site.toml"), 1, message)
        })
    };
    // Two unnamed sinks get distinct default names; equal names are refused.
    let two = parse(
        "[[influxdb]]\nurl = \"http://127.0.0.1:1\"\ndatabase = \"a\"\n\
         [[influxdb]]\nurl = \"http://127.0.0.1:2\"\ndatabase = \"b\"\n",
    )
    .expect("valid outputs");
    let names: Vec<&str> = two.influxdb.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["influxdb", "influxdb-2"]);
    let error = parse(
        "[[influxdb]]\nname = \"x\"\nurl = \"http://127.0.0.1:1\"\ndatabase = \"a\"\n\
         [[influxdb]]\nname = \"x\"\nurl = \"http://127.0.0.1:2\"\ndatabase = \"b\"\n",
    )
    .expect_err("duplicate names");
    assert!(error.message.contains("\"x\""), "{error}");

    let outputs = parse(&format!(
        "[[influxdb]]\nurl = \"{}\"\ndatabase = \"{DB}\"\nflush_interval = \"50ms\"\n",
        influxd.url()
    ))
    .expect("valid outputs");
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(SqliteStorage::open(&dir.path().join("vigil.db")).expect("store"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let probes = SinkProbes::default();
    let mut sinks = {
        // The sink set spawns its delivery tasks on the current runtime.
        let _guard = runtime.enter();
        SinkSet::open(
            &outputs,
            Arc::new(vigil_host::store::StorageLatest(store)),
            None,
            &probes,
        )
        .expect("sinks")
    };
    let batch: Vec<MetricsGroup> = (0..3)
        .map(|i| {
            (*group(
                "via_sink_set",
                &[("n", &i.to_string())],
                vec![metric("v", MetricValue::Signed(i))],
                at(1_700_000_000),
            ))
            .clone()
        })
        .collect();
    sinks.accept(batch);
    let delivered = || {
        probes
            .snapshots()
            .into_iter()
            .find(|s| s.kind == "influxdb")
            .map_or(0, |s| s.delivered)
    };
    assert!(
        wait_until(WAIT, Duration::from_millis(20), || delivered() == 3),
        "{:?}",
        probes.snapshots()
    );
    runtime.block_on(sinks.close()).expect("close");
    let stored: Vec<i64> = rows(&influxd, "SELECT v FROM via_sink_set")
        .iter()
        .map(|r| r["v"].as_i64().expect("integer"))
        .collect();
    assert_eq!(stored.len(), 3, "{stored:?}");
    let snapshot = probes
        .snapshots()
        .into_iter()
        .find(|s| s.kind == "influxdb")
        .expect("the influxdb sink reports its numbers");
    assert_eq!(snapshot.name, "influxdb");
    assert_eq!(
        (snapshot.accepted, snapshot.delivered),
        (3, 3),
        "{snapshot:?}"
    );
}

// --- a tiny HTTP listener, for what InfluxDB 1.6 cannot answer ---------------

#[derive(Debug, Clone)]
struct Request {
    /// `POST /path?query`.
    line: String,
    /// Lower-cased names.
    headers: BTreeMap<String, String>,
    body: String,
}

/// Answers every request with what `respond` says, one request per
/// connection, recording them; stops when dropped.
struct TinyServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TinyServer {
    fn start(respond: impl Fn(&Request) -> (u16, &'static str) + Send + 'static) -> TinyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let requests = requests.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((stream, _)) = listener.accept() else {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    stream.set_nonblocking(false).expect("blocking stream");
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .expect("read timeout");
                    let mut reader = BufReader::new(stream);
                    let Some(request) = read_request(&mut reader) else {
                        continue;
                    };
                    let (status, body) = respond(&request);
                    requests.lock().expect("requests").push(request);
                    let mut stream = reader.into_inner();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            })
        };
        TinyServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for TinyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        line: line.trim_end().to_owned(),
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn lines(groups: &[SharedGroup], precision: Precision) -> String {
    let mut out = Vec::new();
    for group in groups {
        write_group(group, precision, &mut out).expect("a line");
    }
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn v2_requests_carry_the_token_org_bucket_and_precision() {
    let server = TinyServer::start(|_| (204, ""));
    let settings = settings_from_toml(&format!(
        "url = \"{}/influx/\"\napi = \"v2\"\norg = \"my org\"\nbucket = \"metrics\"\n\
         token = \"s3cr3t-token\"\nprecision = \"ns\"\n",
        server.url()
    ));
    let mut writer = InfluxWriter::new(&settings).expect("writer");
    let batch = [
        group(
            "cpu",
            &[("core", "0")],
            vec![metric("busy", MetricValue::Float(0.5))],
            Datetime {
                seconds: 1_700_000_000,
                nanoseconds: 5,
            },
        ),
        group(
            "cpu",
            &[("core", "1")],
            vec![metric("busy", MetricValue::Signed(1))],
            at(1_700_000_001),
        ),
    ];
    assert!(block_on(writer.send(&batch)).is_ok());
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(
        request.line,
        "POST /influx/api/v2/write?org=my+org&bucket=metrics&precision=ns HTTP/1.1"
    );
    assert_eq!(request.headers["authorization"], "Token s3cr3t-token");
    assert_eq!(request.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(request.body, lines(&batch, Precision::Nanoseconds));
    assert!(
        request.body.ends_with(" busy=1i 1700000001000000000\n"),
        "{}",
        request.body
    );
}

#[test]
fn v1_requests_carry_basic_auth_and_the_retention_policy() {
    let server = TinyServer::start(|_| (204, ""));
    let settings = settings_from_toml(&format!(
        "url = \"{}\"\ndatabase = \"vigil db\"\nretention_policy = \"week\"\n\
         username = \"writer\"\npassword = \"influx-pw\"\nprecision = \"us\"\n",
        server.url()
    ));
    let mut writer = InfluxWriter::new(&settings).expect("writer");
    let batch = [group(
        "m",
        &[],
        vec![metric("v", MetricValue::Signed(1))],
        at(1),
    )];
    assert!(block_on(writer.send(&batch)).is_ok());
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].line,
        "POST /write?db=vigil+db&rp=week&precision=u HTTP/1.1"
    );
    // base64("writer:influx-pw")
    assert_eq!(
        requests[0].headers["authorization"],
        "Basic d3JpdGVyOmluZmx1eC1wdw=="
    );
    assert_eq!(
        requests[0].body,
        "m,resource_class=network,resource_endpoint=127.0.0.1,resource_id=sw1,resource_site=lab v=1i 1000000\n"
    );
}

#[test]
fn a_batch_too_large_is_sent_in_halves() {
    // 413 for anything over one line.
    let server = TinyServer::start(|request| {
        if request.body.matches('\n').count() > 1 {
            (413, r#"{"error":"Request Entity Too Large"}"#)
        } else {
            (204, "")
        }
    });
    let settings = v1_settings(&server.url(), Precision::Seconds, 10, 10);
    let mut writer = InfluxWriter::new(&settings).expect("writer");
    let batch: Vec<SharedGroup> = (0..5)
        .map(|i| {
            group(
                "m",
                &[],
                vec![metric("v", MetricValue::Signed(i))],
                at(1 + i as u64),
            )
        })
        .collect();
    assert!(block_on(writer.send(&batch)).is_ok());
    let delivered: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.body.matches('\n').count() == 1)
        .map(|r| r.body)
        .collect();
    // Every group once, in order: 5 → 2 + 3 → 1 + 1 + 1 + (1 + 1).
    let expected: Vec<String> = batch
        .iter()
        .map(|g| lines(std::slice::from_ref(g), Precision::Seconds))
        .collect();
    assert_eq!(delivered, expected);
    assert_eq!(server.requests().len(), 9);
}

#[test]
fn server_errors_and_bad_credentials_are_retried_with_a_useful_message() {
    for (status, body) in [
        (503, r#"{"error":"overloaded"}"#),
        (401, r#"{"error":"authorization failed"}"#),
        (429, r#"{"error":"slow down"}"#),
    ] {
        let server = TinyServer::start(move |_| (status, body));
        let settings = settings_from_toml(&format!(
            "name = \"edge\"\nurl = \"{}\"\ndatabase = \"d\"\nusername = \"u\"\npassword = \"pw-never-shown\"\n",
            server.url()
        ));
        let mut writer = InfluxWriter::new(&settings).expect("writer");
        let batch = [group(
            "m",
            &[],
            vec![metric("v", MetricValue::Signed(1))],
            at(1),
        )];
        match block_on(writer.send(&batch)) {
            Err(SendError::Retry(message)) => {
                assert!(message.contains("influxdb sink edge"), "{message}");
                assert!(
                    message.contains(&format!("{}/write?db=d", server.url())),
                    "{message}"
                );
                assert!(message.contains(&status.to_string()), "{message}");
                assert!(message.contains(&body[10..body.len() - 2]), "{message}");
                assert!(!message.contains("pw-never-shown"), "{message}");
            }
            other => panic!("HTTP {status}: expected a retry, got {other:?}"),
        }
    }
    // Nothing listening: a retry too, naming the cause.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let settings = v1_settings(
        &format!("http://127.0.0.1:{port}"),
        Precision::Seconds,
        10,
        10,
    );
    let mut writer = InfluxWriter::new(&settings).expect("writer");
    let batch = [group(
        "m",
        &[],
        vec![metric("v", MetricValue::Signed(1))],
        at(1),
    )];
    match block_on(writer.send(&batch)) {
        Err(SendError::Retry(message)) => {
            assert!(message.contains("influx-test"), "{message}");
            assert!(message.to_lowercase().contains("connect"), "{message}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}
