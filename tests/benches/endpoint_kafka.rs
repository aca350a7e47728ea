//! Endpoint events through Kafka into history (issue #14's "through
//! Kafka" figure): `cargo bench -p vigil-tests --bench endpoint_kafka`.
//!
//! A real Kafka-API broker (tansu 0.6.0, in-memory storage, on loopback).
//! The producing side is what a subscriber's process runs
//! ([`KafkaEventSink`]: each event as pushed-event JSON, keyed by endpoint,
//! in its endpoint's partition); the consuming side is what an
//! `endpoint-worker` process runs ([`consume_into`]: a consumer group
//! member feeding a tracker of 2 workers over the embedded store, the
//! site's SQLite history, committing each batch only after it is stored).
//!
//! The events are EPT-shaped: `VIGIL_BENCH_ENDPOINTS` MACs (default
//! 100,000) learned on one of 40 leaves, then each moved to another port
//! (2 events per endpoint, 200,000 by default). Printed: the producer's
//! rate (until the broker acknowledged every message), the consumer's rate
//! (from its first event to the last one in history), and the whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_endpoints::dispatch::DispatchConfig;
use vigil_endpoints::model::{EpmClass, EpmEvent, HistoryType, Status};
use vigil_endpoints::tracker::{Tracker, TrackerConfig};
use vigil_endpoints::{EventSink, Settings, Source};
use vigil_host::bus::kafka::{KafkaSettings, ensure_topics};
use vigil_host::endpoints::kafka::{FabricModels, KafkaEventSink, consume_into};
use vigil_tests::kafka_servers::Tansu;

fn event(i: u32, moved: bool) -> EpmEvent {
    let node = 101 + i % 40;
    EpmEvent {
        fabric: "fab1".into(),
        ts: 1_765_000_000.0 + f64::from(i) / 1000.0 + if moved { 1000.0 } else { 0.0 },
        classname: EpmClass::MacEp,
        history_type: HistoryType::Mac,
        status: if moved {
            Status::Modified
        } else {
            Status::Created
        },
        flags: vec!["local".into()],
        if_id: format!("eth1/{}", 1 + (i / 40) % 48 + if moved { 1 } else { 0 }),
        pctag: 32771,
        encap: "vlan-101".into(),
        addr: format!(
            "00:50:{:02X}:{:02X}:{:02X}:{:02X}",
            (i >> 24) & 0xff,
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        ),
        ip: String::new(),
        node,
        vnid: 15_990_734,
        vrf: 2_949_120,
        bd: 15_990_734,
    }
}

fn main() -> anyhow::Result<()> {
    let endpoints: u32 = std::env::var("VIGIL_BENCH_ENDPOINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let total = u64::from(endpoints) * 2;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let broker = Tansu::start()?;
    let dir = tempfile::tempdir()?;
    runtime.block_on(async {
        let mut settings = KafkaSettings::new(broker.brokers(), "bench");
        settings.partitions = 4;
        ensure_topics(&settings).await?;
        let kv = Arc::new(vigil_host::store::kv::SqliteKv::open(&dir.path().join("kv.db"))?);
        let models = FabricModels::new(kv);

        let produced = Instant::now();
        let sink = KafkaEventSink::new(&settings, models.clone(), None)?;
        for moved in [false, true] {
            for i in 0..endpoints {
                sink.event(Source::Apic, event(i, moved)).await?;
            }
        }
        anyhow::ensure!(
            sink.flush(Duration::from_secs(300)).await,
            "the broker did not acknowledge every message"
        );
        let produce = produced.elapsed();

        let store = Arc::new(vigil_host::store::endpoints::SqliteHistory::open(
            &dir.path().join("vigil.db"),
        )?);
        let mut config = TrackerConfig::new(
            DispatchConfig {
                workers: 2,
                queue_capacity: 4096,
            },
            Settings::default(),
        );
        // As an endpoint-worker process runs it: one of a consumer group.
        config.shared_store = true;
        let tracker = Tracker::start(config, store)?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let consumer = {
            let (settings, tracker) = (settings.clone(), tracker.clone());
            tokio::spawn(async move { consume_into(&settings, tracker, models, stop_rx).await })
        };
        let handled = |t: &Tracker| t.stats().workers.iter().map(|w| w.handled).sum::<u64>();
        let mut first = None;
        let consumed = loop {
            let n = handled(&tracker);
            if n > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if n >= total {
                // Durable, not only handled.
                tracker.barrier().await?;
                break first.map_or(Duration::ZERO, |f| f.elapsed());
            }
            anyhow::ensure!(
                produced.elapsed() < Duration::from_secs(1800),
                "only {n} of {total} events in history after 30 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let whole = produced.elapsed();
        let _ = stop.send(true);
        let report = consumer.await??;
        tracker.shutdown().await?;
        let rate = |d: Duration| total as f64 / d.as_secs_f64().max(1e-9);
        println!("endpoint events through Kafka (tansu 0.6.0, 4 partitions) into the embedded store, {total} events of {endpoints} endpoints");
        println!("  produce (until acknowledged): {:>8.2} s  {:>9.0} events/s", produce.as_secs_f64(), rate(produce));
        println!("  consume into history:         {:>8.2} s  {:>9.0} events/s", consumed.as_secs_f64(), rate(consumed));
        println!("  whole:                        {:>8.2} s  {:>9.0} events/s", whole.as_secs_f64(), rate(whole));
        println!("  consumer: {} batches, {} commits", report.batches, report.commits);
        anyhow::Ok(())
    })?;
    drop(broker);
    Ok(())
}
