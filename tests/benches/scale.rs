//! Scale-out costs on this machine: `cargo bench -p vigil-tests --bench scale`.
//!
//! Prints:
//! * the coordination overhead per run: taking a job's lease in Redis,
//!   confirming it (the fencing check) and releasing it, sequentially and
//!   with 64 runs at once (a private `redis-server` on loopback);
//! * the bus: metrics groups per second published into a real Kafka-API
//!   broker (tansu) and consumed back by a consumer group, end to end.
//!
//! `VIGIL_BENCH_GROUPS` sets how many groups go through the bus (default
//! 200,000).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vigil_host::bus::kafka::{KafkaPublisher, KafkaSettings, Topic, consume, ensure_topics};
use vigil_host::coordination::redis::{RedisCoordinator, RedisSettings};
use vigil_host::coordination::{Coordinator, LeaseOutcome};
use vigil_host::model::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource,
};
use vigil_host::scheduler::JobKey;
use vigil_tests::kafka_servers::Tansu;
use vigil_tests::redis_servers::RedisServer;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

async fn lease_overhead() {
    let redis = RedisServer::start().expect("redis-server");
    let mut settings = RedisSettings::new(&redis.url(), "bench");
    settings.join_grace = Duration::ZERO;
    let coordinator = RedisCoordinator::start(settings, "bench-agent".into())
        .await
        .expect("coordinator");
    let runs = 5_000;
    // One lease per job and window, as the scheduler takes them.
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let job = JobKey::new("interface_polling", Some(&format!("device-{i}")));
        let started = Instant::now();
        let LeaseOutcome::Granted(lease) = coordinator.lease(&job, 1000.0, 60.0).await else {
            panic!("lease refused");
        };
        assert!(lease.confirm().await);
        lease.release().await;
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "lease + confirm + release, sequential: p50 {:?}, p99 {:?} per run ({runs} runs)",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );

    let coordinator: Arc<RedisCoordinator> = coordinator;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..64 {
        let coordinator = coordinator.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..(runs / 64) {
                let job = JobKey::new("device_health", Some(&format!("device-{worker}-{i}")));
                if let LeaseOutcome::Granted(lease) = coordinator.lease(&job, 2000.0, 60.0).await {
                    lease.confirm().await;
                    lease.release().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    let elapsed = started.elapsed();
    let done = (runs / 64) * 64;
    println!(
        "lease + confirm + release, 64 at once: {:.0} runs/s ({:?} per run amortised)",
        done as f64 / elapsed.as_secs_f64(),
        elapsed / done as u32
    );
}

fn group(i: u64) -> MetricsGroup {
    let at = Datetime {
        seconds: 1_700_000_000 + i / 1000,
        nanoseconds: 0,
    };
    let mut resource = Resource::named(&format!("device-{:04}", i % 1000), "192.0.2.1");
    resource.class = "network".into();
    resource.subclass = "switch".into();
    resource.type_ = "juniper".into();
    let metric = |name: &str, value: u64| Metric {
        name: name.into(),
        value: MetricValue::Unsigned(value),
        type_: MetricType::Counter,
        creation_timestamp: at,
    };
    MetricsGroup {
        group_type: "interface".into(),
        interval_seconds: 60,
        creation_timestamp: at,
        schema_version: "0.2".into(),
        resource: resource.into(),
        dimensions: vec![Dimension {
            name: "interface_name".into(),
            value: format!("ge-0/0/{}", i % 48),
        }],
        metrics: vec![
            metric("bits_in", i * 1000),
            metric("bits_out", i * 900),
            metric("errors_in", i % 7),
        ],
    }
}

async fn bus_throughput() {
    let total: u64 = std::env::var("VIGIL_BENCH_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let broker = Tansu::start().expect("tansu");
    let mut settings = KafkaSettings::new(broker.brokers(), "bench");
    settings.buffer_messages = 1_000_000;
    ensure_topics(&settings).await.expect("topics");
    let publisher = KafkaPublisher::new(&settings).expect("publisher");
    let batches: Vec<Vec<MetricsGroup>> = (0..total)
        .collect::<Vec<_>>()
        .chunks(48)
        .map(|chunk| chunk.iter().map(|i| group(*i)).collect())
        .collect();

    let consumed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let consumer = {
        let (settings, consumed) = (settings.clone(), consumed.clone());
        tokio::spawn(async move {
            consume(
                &settings,
                "bench-sinks",
                Topic::Processed,
                5000,
                move |batch| {
                    let consumed = consumed.clone();
                    async move {
                        consumed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        Ok(())
                    }
                },
                stop_rx,
            )
            .await
        })
    };

    let started = Instant::now();
    for batch in &batches {
        let report = publisher.publish_metrics(Topic::Processed, batch);
        assert_eq!(report.dropped_buffer_full, 0, "the local buffer overflowed");
    }
    let enqueued = started.elapsed();
    assert!(publisher.flush(Duration::from_secs(120)).await, "flush");
    let delivered = started.elapsed();
    while consumed.load(Ordering::Relaxed) < total && started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end_to_end = started.elapsed();
    let _ = stop_tx.send(true);
    let _ = consumer.await;
    let got = consumed.load(Ordering::Relaxed);
    println!(
        "bus: {total} metrics groups: encoded+enqueued {:.0}/s, delivered to the broker {:.0}/s, \
         consumed end to end {:.0}/s ({got} consumed)",
        total as f64 / enqueued.as_secs_f64(),
        total as f64 / delivered.as_secs_f64(),
        got as f64 / end_to_end.as_secs_f64(),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        lease_overhead().await;
        bus_throughput().await;
    });
}
