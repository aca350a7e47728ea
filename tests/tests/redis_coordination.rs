//! Coordination and shared state against a real `redis-server`: leases
//! (exclusive, fenced, released only by their holder, with the over-polling
//! guard), membership with join grace, and the enrichment cache, rate state
//! and resource registry that agents share.

use std::sync::Arc;
use std::time::Duration;

use vigil_host::coordination::redis::{RedisCoordinator, RedisSettings, connect};
use vigil_host::coordination::shared::{RedisEnrichments, RedisRates, RedisResources};
use vigil_host::coordination::{Coordinator, LeaseOutcome};
use vigil_host::model::{
    Datetime, EnrichmentGroup, EnrichmentSet, Metric, MetricType, MetricValue, MetricsGroup,
    Resource,
};
use vigil_host::pipeline::enrichment_cache::EnrichmentCache;
use vigil_host::plugin::manifest::RateTransform;
use vigil_host::scheduler::JobKey;
use vigil_host::store::Storage;
use vigil_host::store::sqlite::SqliteStorage;
use vigil_host::transform::RateTransformer;
use vigil_tests::redis_servers::RedisServer;

fn settings(redis: &RedisServer) -> RedisSettings {
    let mut settings = RedisSettings::new(&redis.url(), "lab");
    settings.heartbeat = Duration::from_millis(100);
    settings.member_timeout = Duration::from_millis(500);
    settings.join_grace = Duration::from_millis(300);
    settings.lease_ttl = Duration::from_millis(800);
    settings.renew_every = Duration::from_millis(200);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_exclusive_fenced_and_guard_against_over_polling() {
    let redis = RedisServer::start().expect("redis-server");
    let a = RedisCoordinator::start(settings(&redis), "a".into())
        .await
        .expect("a");
    let b = RedisCoordinator::start(settings(&redis), "b".into())
        .await
        .expect("b");
    let job = JobKey::new("interface_polling", Some("sw1"));

    let LeaseOutcome::Granted(lease) = a.lease(&job, 1000.0, 60.0).await else {
        panic!("first lease refused");
    };
    // Held: b cannot run the job while a does, even for a later window.
    assert!(matches!(
        b.lease(&job, 1060.0, 60.0).await,
        LeaseOutcome::Held
    ));
    // Renewal keeps it past its TTL while the run lasts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(lease.confirm().await, "renewed lease still held");
    lease.release().await;

    // The over-polling guard: the same window (or one too close) again is
    // refused to anyone; the next window is granted, with a higher token.
    assert!(matches!(
        b.lease(&job, 1000.0, 60.0).await,
        LeaseOutcome::TooSoon
    ));
    assert!(matches!(
        b.lease(&job, 1030.0, 60.0).await,
        LeaseOutcome::TooSoon
    ));
    let LeaseOutcome::Granted(next) = b.lease(&job, 1060.0, 60.0).await else {
        panic!("next window refused");
    };
    assert!(next.token() > lease.token());
    // An old holder's release never frees someone else's lease.
    lease.release().await;
    assert!(next.confirm().await);

    // Fencing: a lease taken away (expired and retaken, simulated by
    // deleting it) fails confirmation, so its output is not accepted.
    let mut raw = connect(&redis.url()).await.expect("connect");
    let _: () = redis::cmd("DEL")
        .arg("vigil:{lab|interface_polling|sw1}:lease")
        .query_async(&mut raw)
        .await
        .expect("del");
    assert!(!next.confirm().await, "a lost lease must not confirm");
    assert!(b.stats.lost.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_waits_for_the_join_grace_and_drops_the_silent() {
    let redis = RedisServer::start().expect("redis-server");
    let a = RedisCoordinator::start(settings(&redis), "a".into())
        .await
        .expect("a");
    // Within its grace, a new agent owns nothing (not even alone).
    assert!(a.members().is_empty());
    let job = JobKey::new("p", Some("r"));
    assert!(!a.owns(&job));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(*a.members(), vec!["a".to_owned()]);
    assert!(a.owns(&job));

    let b = RedisCoordinator::start(settings(&redis), "b".into())
        .await
        .expect("b");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(*a.members(), vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(a.members(), b.members());
    // Exactly one of them owns each job.
    for i in 0..200 {
        let job = JobKey::new("p", Some(&format!("r{i}")));
        assert!(a.owns(&job) ^ b.owns(&job), "job {i}");
    }
    // b leaves cleanly: a owns everything again at once.
    b.leave().await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*a.members(), vec!["a".to_owned()]);
}

fn counter_group(resource: &str, value: u64, at: u64) -> MetricsGroup {
    let stamp = Datetime {
        seconds: at,
        nanoseconds: 0,
    };
    MetricsGroup {
        group_type: "interface".into(),
        interval_seconds: 10,
        creation_timestamp: stamp,
        schema_version: "0.2".into(),
        resource: Resource::named(resource, "127.0.0.1"),
        dimensions: Vec::new(),
        metrics: vec![Metric {
            name: "bits_in".into(),
            value: MetricValue::Unsigned(value),
            type_: MetricType::Counter,
            creation_timestamp: stamp,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_share_rate_state_enrichments_and_resources() {
    let redis = RedisServer::start().expect("redis-server");
    let connection = connect(&redis.url()).await.expect("connect");

    // Rate state: agent one sees the first sample, agent two (or one after
    // a restart) continues the series.
    let one = RateTransformer::shared(1000, RedisRates::new(connection.clone(), "lab"));
    let two = RateTransformer::shared(1000, RedisRates::new(connection.clone(), "lab"));
    let transforms = vec![RateTransform {
        name: "bits".into(),
        group_type: "interface".into(),
        metrics: vec!["bits_in".into()],
    }];
    let mut first = vec![counter_group("sw1", 1_000, 100)];
    one.apply_async("p", &transforms, &mut first).await;
    assert!(first.is_empty(), "a first sample yields no rate");
    let mut second = vec![counter_group("sw1", 6_000, 110)];
    let stats = two.apply_async("p", &transforms, &mut second).await;
    assert_eq!(stats.rates, 1);
    assert_eq!(second[0].metrics[0].value, MetricValue::Float(500.0));

    // Enrichment cache: written by one agent, read by another, expiring
    // with its TTL.
    let writer = EnrichmentCache::shared(RedisEnrichments::new(connection.clone(), "lab"));
    let reader = EnrichmentCache::shared(RedisEnrichments::new(connection.clone(), "lab"));
    let group = EnrichmentGroup {
        namespace: "interface".into(),
        ttl_seconds: 1,
        sets: vec![EnrichmentSet {
            key: "1".into(),
            values: vec![("interface_name".into(), "ge-0/0/0".into())],
        }],
    };
    writer.put("sw1", vec![group.clone()], 0.0, None).await;
    let namespaces = vec!["interface".to_owned()];
    assert_eq!(reader.get("sw1", &namespaces, 0.0).await, vec![group]);
    assert!(reader.get("sw2", &namespaces, 0.0).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        reader.get("sw1", &namespaces, 0.0).await.is_empty(),
        "expired"
    );

    // The resource registry: discovery on one agent, visible to all, TTLs
    // shared; everything else stays in each agent's own store.
    let dir = tempfile::tempdir().expect("tempdir");
    let local = |name: &str| -> Arc<dyn Storage> {
        Arc::new(SqliteStorage::open(&dir.path().join(name)).expect("sqlite"))
    };
    let agent_a = RedisResources::new(local("a.db"), &redis.url(), "lab").expect("a");
    let agent_b = RedisResources::new(local("b.db"), &redis.url(), "lab").expect("b");
    let resources = [
        Resource::named("sw1", "10.0.0.1"),
        Resource::named("sw2", "10.0.0.2"),
    ];
    let summary = agent_a
        .upsert_resources("inventory", &resources, 30.0, 1000.0)
        .expect("upsert");
    assert_eq!((summary.added, summary.refreshed), (2, 0));
    let summary = agent_b
        .upsert_resources("inventory", &resources[..1], 100.0, 1010.0)
        .expect("upsert");
    assert_eq!((summary.added, summary.refreshed), (0, 1));
    let live: Vec<String> = agent_b
        .live_resources(1020.0)
        .expect("live")
        .into_iter()
        .map(|r| r.resource.id)
        .collect();
    assert_eq!(live, vec!["sw1", "sw2"]);
    // sw2 expires at 1030, sw1 (refreshed by b) at 1110.
    assert_eq!(
        agent_a.expire_resources(1050.0).expect("expire"),
        vec!["sw2"]
    );
    assert!(
        agent_b.expire_resources(1050.0).expect("expire").is_empty(),
        "expired once"
    );
    let live = agent_a.live_resources(1050.0).expect("live");
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0].first_seen, 1000.0,
        "first seen is kept across agents"
    );
}
