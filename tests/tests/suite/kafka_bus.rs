//! The Kafka bus against a real Kafka-API broker (tansu with in-memory
//! storage, see `vigil_tests::kafka_servers`): everything published arrives
//! as sent and in order per series; a consumer group shares partitions;
//! a broker outage (ending in an empty broker) loses nothing buffered;
//! offsets are committed only after the sink accepted a batch.
//!
//! Each test runs its own broker on a free port, so they run in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::sync::watch;
use vigil_host::bus::kafka::{
    ConsumeReport, KafkaPublisher, KafkaSettings, Topic, consume, ensure_topics, run_publisher,
    series_partition,
};
use vigil_host::model::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource,
};
use vigil_host::pipeline::encode::encode_metrics_group;
use vigil_tests::kafka_servers::Tansu;

/// A series: (resource index, interface index).
type Series = (usize, usize);

/// A group of series `series` carrying sequence number `seq` in its `seq`
/// metric (a counter), with a counter above 2^53 and a few other values.
fn group(site: &str, (resource, interface): Series, seq: u64) -> MetricsGroup {
    let at = Datetime {
        seconds: 1_700_000_000 + seq * 60,
        nanoseconds: 500_000_000,
    };
    let mut r = Resource::named(&format!("device-{resource:03}"), "192.0.2.1");
    r.site = site.to_owned();
    r.class = "network".into();
    r.subclass = "switch".into();
    r.type_ = if resource % 2 == 0 {
        "juniper"
    } else {
        "cisco"
    }
    .into();
    r.creation_plugin = "inventory".into();
    r.creation_timestamp = at;
    r.ttl_seconds = 900;
    r.metadata = vec![("model".into(), "mx960".into())];
    let metric = |name: &str, value: MetricValue, type_: MetricType| Metric {
        name: name.into(),
        value,
        type_,
        creation_timestamp: at,
    };
    MetricsGroup {
        group_type: "interface".into(),
        interval_seconds: 60,
        creation_timestamp: at,
        schema_version: "0.2".into(),
        resource: r.into(),
        dimensions: vec![
            Dimension {
                name: "interface_name".into(),
                value: format!("ge-0/0/{interface}"),
            },
            Dimension {
                name: "alias".into(),
                value: format!("link \"{interface}\" ✓"),
            },
        ],
        metrics: vec![
            metric("seq", MetricValue::Unsigned(seq), MetricType::Counter),
            metric(
                "bits_in",
                MetricValue::Unsigned((1 << 53) + 1 + seq),
                MetricType::Counter,
            ),
            metric("temperature", MetricValue::Signed(-3), MetricType::Gauge),
            metric("utilisation", MetricValue::Float(0.125), MetricType::Gauge),
        ],
    }
}

/// The series and sequence number of a group made by [`group`].
fn identify(group: &MetricsGroup) -> (Series, u64) {
    let resource = group.resource.id["device-".len()..]
        .parse()
        .expect("resource number");
    let interface = group.dimensions[0]
        .value
        .rsplit('/')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("interface number");
    let seq = match group.metrics[0].value {
        MetricValue::Unsigned(seq) => seq,
        ref other => panic!("seq is {other:?}"),
    };
    ((resource, interface), seq)
}

/// Settings for a test's own site on its own broker.
async fn site(tansu: &Tansu, name: &str) -> Result<KafkaSettings> {
    let settings = KafkaSettings::new(tansu.brokers(), name);
    ensure_topics(&settings).await?;
    Ok(settings)
}

/// What a consumer received, in order, and a way to stop it once enough
/// arrived.
#[derive(Clone)]
struct Collector {
    received: Arc<Mutex<Vec<MetricsGroup>>>,
    stop_at: usize,
    stop: Arc<watch::Sender<bool>>,
}

impl Collector {
    fn new(stop_at: usize) -> (Collector, watch::Receiver<bool>) {
        let (stop, stopped) = watch::channel(false);
        let collector = Collector {
            received: Arc::new(Mutex::new(Vec::new())),
            stop_at,
            stop: Arc::new(stop),
        };
        (collector, stopped)
    }

    /// A handler for [`consume`] that accepts every batch.
    fn handler(
        &self,
    ) -> impl FnMut(Vec<MetricsGroup>) -> std::future::Ready<Result<()>> + Send + 'static {
        let this = self.clone();
        move |batch| {
            let mut received = this.received.lock().expect("lock");
            received.extend(batch);
            if received.len() >= this.stop_at {
                let _ = this.stop.send(true);
            }
            std::future::ready(Ok(()))
        }
    }

    fn take(&self) -> Vec<MetricsGroup> {
        std::mem::take(&mut *self.received.lock().expect("lock"))
    }

    fn len(&self) -> usize {
        self.received.lock().expect("lock").len()
    }
}

/// Runs `future` (a consumer) for at most `limit`.
async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> Result<T> {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => Ok(value),
        Err(_) => bail!("{what} did not finish within {limit:?}"),
    }
}

/// Checks that every series arrived in strictly increasing sequence.
fn assert_in_order_per_series(groups: &[MetricsGroup]) {
    let mut last: BTreeMap<Series, u64> = BTreeMap::new();
    for group in groups {
        let (series, seq) = identify(group);
        if let Some(previous) = last.insert(series, seq) {
            assert!(
                seq > previous,
                "series {series:?}: {seq} arrived after {previous}"
            );
        }
    }
}

/// (a) 10,000 groups for 50 resources arrive exactly as sent, once, and in
/// order per series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_arrives_as_sent_in_order_per_series() -> Result<()> {
    let tansu = Tansu::start()?;
    let settings = site(&tansu, "order").await?;
    let publisher = Arc::new(KafkaPublisher::new(&settings)?);

    // 50 resources × 4 interfaces × 50 polls, poll by poll over the
    // in-process bus into the publisher stage `vigil run` uses.
    let (bus, rx) = tokio::sync::mpsc::channel(16);
    let stage = tokio::spawn(run_publisher(rx, publisher.clone(), Topic::Processed));
    let mut sent: BTreeMap<(Series, u64), Vec<u8>> = BTreeMap::new();
    let started = Instant::now();
    for seq in 0..50u64 {
        let poll: Vec<MetricsGroup> = (0..50)
            .flat_map(|resource| (0..4).map(move |interface| (resource, interface)))
            .map(|series| group("order", series, seq))
            .collect();
        for g in &poll {
            sent.insert(identify(g), encode_metrics_group(g));
        }
        bus.send(poll).await?;
    }
    // Closing the bus ends the stage once everything is delivered.
    drop(bus);
    let stats = within(Duration::from_secs(40), "the publisher stage", stage).await??;
    let produce_time = started.elapsed();
    assert_eq!(stats.delivered, 10_000, "{stats:?}");
    assert_eq!(
        (stats.failed, stats.dropped_buffer_full, stats.pending),
        (0, 0, 0),
        "{stats:?}"
    );

    let (collector, stop) = Collector::new(sent.len());
    let started = Instant::now();
    let report = within(
        Duration::from_secs(30),
        "consuming 10,000 groups",
        consume(
            &settings,
            "order-sink",
            Topic::Processed,
            500,
            collector.handler(),
            stop,
        ),
    )
    .await??;
    let consume_time = started.elapsed();
    let received = collector.take();
    eprintln!(
        "produced 10,000 groups in {produce_time:?} ({:.0}/s, encoding and delivery), consumed in {consume_time:?} ({:.0}/s): {report:?}",
        10_000.0 / produce_time.as_secs_f64(),
        10_000.0 / consume_time.as_secs_f64()
    );

    assert_eq!(received.len(), sent.len(), "{report:?}");
    let mut seen = BTreeSet::new();
    for g in &received {
        let id = identify(g);
        assert!(seen.insert(id), "{id:?} arrived twice");
        assert_eq!(
            String::from_utf8_lossy(&encode_metrics_group(g)),
            String::from_utf8_lossy(&sent[&id]),
            "{id:?} changed on the way"
        );
    }
    assert_in_order_per_series(&received);
    assert_eq!(report.undecodable, 0);
    assert_eq!(report.groups, 10_000);
    assert!(report.commits >= 1);
    Ok(())
}

/// (b) Two consumers in one group share the partitions and together see
/// every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_a_group_share_the_partitions() -> Result<()> {
    let tansu = Tansu::start()?;
    let settings = site(&tansu, "share").await?;
    let publisher = KafkaPublisher::new(&settings)?;

    // One probe series per partition.
    let mut probes: Vec<Series> = Vec::new();
    for resource in 1000.. {
        let series = (resource, 0);
        let p = series_partition(&group("share", series, 0), settings.partitions);
        if !probes
            .iter()
            .any(|s| series_partition(&group("share", *s, 0), settings.partitions) == p)
        {
            probes.push(series);
        }
        if probes.len() == settings.partitions as usize {
            break;
        }
    }

    let (first, stop_first) = Collector::new(usize::MAX);
    let (second, stop_second) = Collector::new(usize::MAX);
    let mut consumers = Vec::new();
    for (collector, stop) in [(&first, stop_first), (&second, stop_second)] {
        let settings = settings.clone();
        let handler = collector.handler();
        consumers.push(tokio::spawn(async move {
            consume(
                &settings,
                "share-sink",
                Topic::Processed,
                200,
                handler,
                stop,
            )
            .await
        }));
    }

    // Wait until the group is settled: a round of probes (one per
    // partition) reaches both members.
    let settled = Instant::now();
    let mut round = 0;
    loop {
        round += 1;
        let batch: Vec<MetricsGroup> = probes.iter().map(|s| group("share", *s, round)).collect();
        publisher.publish_metrics(Topic::Processed, &batch);
        let got = |c: &Collector| {
            c.received
                .lock()
                .expect("lock")
                .iter()
                .any(|g| identify(g).1 == round)
        };
        let round_started = Instant::now();
        while !(got(&first) && got(&second)) && round_started.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if got(&first) && got(&second) {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(30),
            "the group did not settle with both members consuming"
        );
    }
    let settle_time = settled.elapsed();
    first.take();
    second.take();

    // 3,000 groups of 100 other series.
    let mut expected = BTreeSet::new();
    for seq in 0..30u64 {
        let poll: Vec<MetricsGroup> = (0..25)
            .flat_map(|resource| (0..4).map(move |interface| (resource, interface)))
            .map(|series| group("share", series, seq))
            .collect();
        expected.extend(poll.iter().map(identify));
        publisher.publish_metrics(Topic::Processed, &poll);
    }
    assert!(publisher.flush(Duration::from_secs(30)).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    let main = |c: &Collector| -> BTreeSet<(Series, u64)> {
        c.received
            .lock()
            .expect("lock")
            .iter()
            .map(identify)
            .filter(|(s, _)| s.0 < 1000)
            .collect()
    };
    while main(&first).len() + main(&second).len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "only {} + {} of {} arrived",
            first.len(),
            second.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = first.stop.send(true);
    let _ = second.stop.send(true);
    let mut reports: Vec<ConsumeReport> = Vec::new();
    for consumer in consumers {
        reports.push(within(Duration::from_secs(15), "stopping a consumer", consumer).await???);
    }

    let (a, b) = (main(&first), main(&second));
    eprintln!(
        "group settled after {settle_time:?} ({round} probe rounds); members got {} and {} groups; {reports:?}",
        a.len(),
        b.len()
    );
    assert!(!a.is_empty() && !b.is_empty(), "one member got nothing");
    assert!(
        a.is_disjoint(&b),
        "a settled group delivered a message twice"
    );
    let union: BTreeSet<_> = a.union(&b).cloned().collect();
    assert_eq!(union, expected);
    // Each partition went to one member only.
    let partitions = |set: &BTreeSet<(Series, u64)>| -> BTreeSet<i32> {
        set.iter()
            .map(|(s, seq)| series_partition(&group("share", *s, *seq), settings.partitions))
            .collect()
    };
    assert!(partitions(&a).is_disjoint(&partitions(&b)));
    assert_in_order_per_series(&first.take());
    assert_in_order_per_series(&second.take());
    Ok(())
}

/// (c) Publishing while the broker is down returns at once; when it comes
/// back (empty: memory storage), the publisher creates the topics again,
/// replaces its producer (the broker forgot its producer id too) and every
/// buffered group reaches a consumer, once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing_buffered() -> Result<()> {
    let name = "outage";
    let mut tansu = Tansu::start()?;
    let settings = site(&tansu, name).await?;
    let publisher = KafkaPublisher::new(&settings)?;

    // Connected and warmed up: metadata and producer id known.
    let warmup: Vec<MetricsGroup> = (0..100).map(|r| group(name, (r, 9), 0)).collect();
    publisher.publish_metrics(Topic::Processed, &warmup);
    assert!(publisher.flush(Duration::from_secs(15)).await);

    tansu.stop();
    let mut expected = BTreeSet::new();
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for seq in 1..=20u64 {
        let poll: Vec<MetricsGroup> = (0..25)
            .flat_map(|resource| (0..4).map(move |interface| (resource, interface)))
            .map(|series| group(name, series, seq))
            .collect();
        expected.extend(poll.iter().map(identify));
        let call = Instant::now();
        let report = publisher.publish_metrics(Topic::Processed, &poll);
        slowest = slowest.max(call.elapsed());
        assert_eq!(report.enqueued, poll.len(), "{report:?}");
        // Polls keep coming while the broker is away.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let publishing = started.elapsed();
    assert_eq!(expected.len(), 2_000);
    // Each call (100 groups) only encodes and buffers: a few ms here, in a
    // debug build. The margin is for a loaded machine; a call that waited
    // for the broker would take seconds (its timeout is 15 minutes).
    assert!(
        slowest < Duration::from_millis(250),
        "a publish call took {slowest:?} with the broker down"
    );
    let stats = publisher.stats();
    assert_eq!((stats.pending, stats.failed), (2_000, 0), "{stats:?}");
    // Still nothing delivered after a while without a broker.
    assert!(!publisher.flush(Duration::from_secs(1)).await);

    tansu.restart()?;
    let restarted = Instant::now();
    assert!(
        publisher.flush(Duration::from_secs(40)).await,
        "not delivered after the restart: {:?}; broker log:\n{}",
        publisher.stats(),
        tansu.log()
    );
    let recovery = restarted.elapsed();
    let stats = publisher.stats();
    assert_eq!(stats.delivered, 2_100, "{stats:?}");
    assert_eq!(
        (stats.failed, stats.dropped_buffer_full),
        (0, 0),
        "{stats:?}"
    );

    let (collector, stop) = Collector::new(expected.len());
    let report = within(
        Duration::from_secs(30),
        "consuming after the outage",
        consume(
            &settings,
            "sink",
            Topic::Processed,
            500,
            collector.handler(),
            stop,
        ),
    )
    .await??;
    let received = collector.take();
    eprintln!(
        "{name}: published 2,000 groups in {publishing:?} with the broker down (slowest call {slowest:?}); delivered {recovery:?} after the restart; {stats:?}; {report:?}"
    );
    let ids: Vec<(Series, u64)> = received.iter().map(identify).collect();
    let distinct: BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(distinct, expected, "lost or foreign groups");
    assert_eq!(ids.len(), expected.len(), "duplicates");
    assert_in_order_per_series(&received);
    Ok(())
}

/// (d) A batch the sink rejects is offered again; offsets are never
/// committed past it, so a later member of the group starts right there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_after_the_sink_accepts() -> Result<()> {
    let tansu = Tansu::start()?;
    let settings = site(&tansu, "commit").await?;
    let publisher = KafkaPublisher::new(&settings)?;
    // One group per produce request, so that every message is a record
    // batch of its own: tansu 0.6.0 skips the rest of a record batch when a
    // fetch starts inside it (from a committed offset), which real Kafka
    // does not (and tansu fixed after 0.6.0).
    let mut all = BTreeSet::new();
    for seq in 0..3u64 {
        for resource in 0..20 {
            let g = group("commit", (resource, 0), seq);
            all.insert(identify(&g));
            publisher.publish_metrics(Topic::Processed, &[g]);
            assert!(publisher.flush(Duration::from_secs(15)).await);
        }
    }

    // The first member accepts batch 1, rejects batch 2 once (and checks
    // that the same batch comes back), then rejects batch 3 for good and
    // stops while it is refused.
    #[derive(Default)]
    struct Script {
        calls: usize,
        accepted: Vec<(Series, u64)>,
        rejected_once: Vec<(Series, u64)>,
        offered_again: Vec<(Series, u64)>,
        stuck: Vec<(Series, u64)>,
    }
    let script = Arc::new(Mutex::new(Script::default()));
    let (stop, stopped) = watch::channel(false);
    let stop = Arc::new(stop);
    let handler = {
        let script = script.clone();
        let stop = stop.clone();
        move |batch: Vec<MetricsGroup>| {
            let ids: Vec<(Series, u64)> = batch.iter().map(identify).collect();
            let mut s = script.lock().expect("lock");
            s.calls += 1;
            let outcome = match s.calls {
                1 => {
                    s.accepted.extend(ids);
                    Ok(())
                }
                2 => {
                    s.rejected_once = ids;
                    Err(anyhow::anyhow!("sink down"))
                }
                3 => {
                    s.offered_again = ids.clone();
                    s.accepted.extend(ids);
                    Ok(())
                }
                _ => {
                    if s.stuck.is_empty() {
                        s.stuck = ids;
                    } else {
                        assert_eq!(s.stuck, ids, "a refused batch changed");
                    }
                    let _ = stop.send(true);
                    Err(anyhow::anyhow!("sink down for good"))
                }
            };
            std::future::ready(outcome)
        }
    };
    let first = within(
        Duration::from_secs(30),
        "the first member",
        consume(
            &settings,
            "commit-sink",
            Topic::Processed,
            10,
            handler,
            stopped,
        ),
    )
    .await??;
    let s = std::mem::take(&mut *script.lock().expect("lock"));
    assert!(s.calls >= 4, "{first:?}");
    assert!(!s.rejected_once.is_empty());
    assert_eq!(
        s.rejected_once, s.offered_again,
        "the refused batch was not offered again"
    );
    assert!(!s.stuck.is_empty());
    assert_eq!(first.commits, 2, "{first:?}");
    assert!(first.handler_failures >= 2, "{first:?}");

    // The next member starts after what the first one committed, and gets
    // everything else, the refused batch included.
    let accepted: BTreeSet<_> = s.accepted.iter().cloned().collect();
    let rest: BTreeSet<_> = all.difference(&accepted).cloned().collect();
    let (collector, stopped) = Collector::new(rest.len());
    let second = within(
        Duration::from_secs(30),
        "the second member",
        consume(
            &settings,
            "commit-sink",
            Topic::Processed,
            10,
            collector.handler(),
            stopped,
        ),
    )
    .await??;
    let received: Vec<(Series, u64)> = collector.take().iter().map(identify).collect();
    let distinct: BTreeSet<_> = received.iter().cloned().collect();
    eprintln!(
        "first member: {first:?} (accepted {}, stuck on {}); second member: {second:?}",
        accepted.len(),
        s.stuck.len()
    );
    assert!(
        distinct.is_disjoint(&accepted),
        "the second member saw groups the first had committed"
    );
    assert_eq!(
        distinct, rest,
        "the second member missed uncommitted groups"
    );
    assert!(s.stuck.iter().all(|id| distinct.contains(id)));
    assert_eq!(received.len(), rest.len(), "duplicates");
    Ok(())
}

/// Resources go to `<site>-resources`; a metrics consumer reading a topic
/// that holds something else counts and skips those messages and carries
/// on with the metrics groups behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_published_and_foreign_messages_are_skipped() -> Result<()> {
    let tansu = Tansu::start()?;
    let settings = site(&tansu, "mixed").await?;
    let publisher = KafkaPublisher::new(&settings)?;
    let resources: Vec<Resource> = (0..50)
        .map(|i| Resource::clone(&group("mixed", (i, 0), 0).resource))
        .collect();
    let report = publisher.publish_resources(&resources);
    assert_eq!(report.enqueued, 50, "{report:?}");
    assert!(publisher.flush(Duration::from_secs(15)).await);

    // Then metrics groups on every partition of the same topic.
    let mut behind = Vec::new();
    let mut partitions = BTreeSet::new();
    for resource in 100.. {
        let g = group("mixed", (resource, 0), 1);
        if partitions.insert(series_partition(&g, settings.partitions)) || behind.len() < 10 {
            behind.push(g);
        }
        if partitions.len() == settings.partitions as usize && behind.len() >= 10 {
            break;
        }
    }
    publisher.publish_metrics(Topic::Resources, &behind);
    assert!(publisher.flush(Duration::from_secs(15)).await);
    assert_eq!(publisher.stats().delivered, 50 + behind.len() as u64);

    let (collector, stop) = Collector::new(behind.len());
    let report = within(
        Duration::from_secs(30),
        "consuming the resources topic",
        consume(
            &settings,
            "mixed-sink",
            Topic::Resources,
            100,
            collector.handler(),
            stop,
        ),
    )
    .await??;
    assert_eq!(report.undecodable, 50, "{report:?}");
    assert_eq!(report.groups, behind.len() as u64, "{report:?}");
    let received: BTreeSet<_> = collector.take().iter().map(identify).collect();
    let expected: BTreeSet<_> = behind.iter().map(identify).collect();
    assert_eq!(received, expected);
    Ok(())
}
