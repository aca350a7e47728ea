//! Coordination and shared state against a real `redis-server`: leases
//! (exclusive, fenced, released only by their holder, with the over-polling
//! guard), membership with join grace, and the enrichment cache, rate state,
//! resource registry and plugin key/value state that agents share.

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
use vigil_host::store::sqlite::SqliteStorage;
use vigil_host::store::{ResourcePolicy, Storage};
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

fn policy(default_ttl: f64) -> ResourcePolicy {
    ResourcePolicy {
        site: "lab".into(),
        sites: Vec::new(),
        default_ttl,
        max_ttl: 86_400.0,
        max_resources: 10_000,
    }
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
        resource: Resource::named(resource, "127.0.0.1").into(),
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
    let stored = writer
        .put(
            "inventory_enrichment",
            "sw1",
            vec![group.clone()],
            0.0,
            None,
        )
        .await;
    assert_eq!(stored.stored, 1, "{stored:?}");
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
    let agent_a = RedisResources::new(
        local("a.db"),
        connect(&redis.url()).await.expect("a"),
        "lab",
    );
    let agent_b = RedisResources::new(
        local("b.db"),
        connect(&redis.url()).await.expect("b"),
        "lab",
    );
    let resources = [
        Resource::named("sw1", "10.0.0.1"),
        Resource::named("sw2", "10.0.0.2"),
    ];
    let summary = agent_a
        .upsert_resources("inventory", &resources, &policy(30.0), 1000.0)
        .await
        .expect("upsert");
    assert_eq!((summary.added, summary.refreshed), (2, 0));
    let summary = agent_b
        .upsert_resources("inventory", &resources[..1], &policy(100.0), 1010.0)
        .await
        .expect("upsert");
    assert_eq!((summary.added, summary.refreshed), (0, 1));
    let live: Vec<String> = agent_b
        .live_resources(1020.0)
        .await
        .expect("live")
        .into_iter()
        .map(|r| r.resource.id)
        .collect();
    assert_eq!(live, vec!["sw1", "sw2"]);
    // sw2 expires at 1030, sw1 (refreshed by b) at 1110.
    assert_eq!(
        agent_a.expire_resources(1050.0).await.expect("expire"),
        vec!["sw2"]
    );
    assert!(
        agent_b
            .expire_resources(1050.0)
            .await
            .expect("expire")
            .is_empty(),
        "expired once"
    );
    let live = agent_a.live_resources(1050.0).await.expect("live");
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0].first_seen, 1000.0,
        "first seen is kept across agents"
    );
}

fn enrichment(namespace: &str, ttl: u64, value: &str) -> EnrichmentGroup {
    EnrichmentGroup {
        namespace: namespace.into(),
        ttl_seconds: ttl,
        sets: vec![EnrichmentSet {
            key: "resource".into(),
            values: vec![("rack".into(), value.into())],
        }],
    }
}

/// The enrichment cache's rules hold in Redis, across agents: a namespace
/// belongs to its first writer until its last entry goes (another plugin,
/// on another agent, is refused and named); TTLs are capped; namespaces
/// per resource, entries and bytes are bounded, the soonest to expire
/// evicted first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_enrichment_cache_keeps_owners_and_bounds() {
    use vigil_host::pipeline::enrichment_cache::EnrichmentLimits;
    let redis = RedisServer::start().expect("redis-server");
    let connection = connect(&redis.url()).await.expect("connect");
    let limits = EnrichmentLimits {
        max_ttl: Duration::from_secs(3600),
        max_namespaces_per_resource: 4,
        max_entries: 50,
        max_bytes: 64 << 10,
        ..EnrichmentLimits::default()
    };
    let agent = |site: &str| {
        EnrichmentCache::shared_with(
            RedisEnrichments::new(connection.clone(), site),
            limits.clone(),
        )
    };
    let (one, two) = (agent("lab"), agent("lab"));
    let raw = RedisEnrichments::new(connection.clone(), "lab");
    let now = vigil_host::pipeline::epoch_seconds(std::time::SystemTime::now());
    let ns = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();

    // Ownership across agents.
    let stored = one
        .put(
            "inventory_enrichment",
            "sw1",
            vec![enrichment("inventory", 600, "r0")],
            now,
            None,
        )
        .await;
    assert_eq!(stored.stored, 1);
    for resource in ["sw1", "sw2"] {
        let poisoned = two
            .put(
                "poison",
                resource,
                vec![enrichment("inventory", u64::MAX, "forged")],
                now,
                None,
            )
            .await;
        assert_eq!(
            (poisoned.stored, poisoned.conflicts),
            (0, 1),
            "{poisoned:?}"
        );
        assert!(
            poisoned
                .describe(1)
                .contains("namespace \"inventory\" is owned by \"inventory_enrichment\""),
            "{}",
            poisoned.describe(1)
        );
    }
    let read = two.get("sw1", &ns(&["inventory"]), now).await;
    assert_eq!(read, vec![enrichment("inventory", 600, "r0")]);
    assert!(two.get("sw2", &ns(&["inventory"]), now).await.is_empty());
    assert_eq!(
        raw.owner("inventory").await.expect("owner").as_deref(),
        Some("inventory_enrichment")
    );

    // TTL u64::MAX becomes the site's ceiling.
    two.put(
        "other",
        "sw1",
        vec![enrichment("forever", u64::MAX, "x")],
        now,
        None,
    )
    .await;
    assert_eq!(
        one.get("sw1", &ns(&["forever"]), now).await[0].ttl_seconds,
        3600
    );

    // A new namespace per run: the fifth on sw1 is refused.
    let summary = two
        .put(
            "other",
            "sw1",
            vec![
                enrichment("n1", 60, "x"),
                enrichment("n2", 60, "x"),
                enrichment("n3", 60, "x"),
            ],
            now,
            None,
        )
        .await;
    assert_eq!(
        (summary.stored, summary.over_namespaces),
        (2, 1),
        "{summary:?}"
    );

    // A flood over many resources: at most 50 entries, the soonest to
    // expire evicted first, counted.
    let mut evicted = 0;
    for i in 0..200u64 {
        let summary = two
            .put(
                "flood",
                &format!("flood{i}"),
                vec![enrichment("flood", 100 + i, "x")],
                now,
                None,
            )
            .await;
        evicted += summary.evicted;
    }
    let (entries, bytes) = raw.usage().await.expect("usage");
    assert_eq!(entries, 50);
    assert!(bytes <= 64 << 10, "{bytes}");
    assert!(evicted >= 150, "{evicted}");
    assert_eq!(one.get("flood199", &ns(&["flood"]), now).await.len(), 1);
    assert!(one.get("flood0", &ns(&["flood"]), now).await.is_empty());
    // The owner's long-lived entry outlives the flood.
    assert_eq!(one.get("sw1", &ns(&["inventory"]), now).await.len(), 1);

    // (The cache is full: a new entry closer to expiry than all the
    // others is itself the first to go.)
    let short = one
        .put("brief", "sw3", vec![enrichment("brief", 1, "x")], now, None)
        .await;
    assert_eq!((short.stored, short.evicted), (1, 1));
    assert_eq!(raw.owner("brief").await.expect("owner"), None);

    // A namespace whose entries all expired is free again (another site's
    // cache, not full).
    let (three, four) = (agent("lab2"), agent("lab2"));
    let raw = RedisEnrichments::new(connection.clone(), "lab2");
    let short = three
        .put("brief", "sw3", vec![enrichment("brief", 1, "x")], now, None)
        .await;
    assert_eq!((short.stored, short.evicted), (1, 0));
    let refused = four
        .put(
            "successor",
            "sw3",
            vec![enrichment("brief", 60, "y")],
            now,
            None,
        )
        .await;
    assert_eq!(refused.conflicts, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let taken = four
        .put(
            "successor",
            "sw3",
            vec![enrichment("brief", 60, "y")],
            now + 2.0,
            None,
        )
        .await;
    assert_eq!((taken.stored, taken.conflicts), (1, 0), "{taken:?}");
    assert_eq!(
        raw.owner("brief").await.expect("owner").as_deref(),
        Some("successor")
    );
    assert_eq!(raw.usage().await.expect("usage").0, 1);
}

/// Plugin key/value state in Redis: what one agent's run wrote, another
/// agent's run of the same plugin reads; the quota is one budget across
/// agents, checked atomically with the write; plugins and sites stay apart;
/// a Redis outage is a failure of the store, never a quota refusal.
#[test]
fn plugin_state_follows_the_job_to_another_agent() {
    use vigil_host::capabilities::kv::{KvBackend, KvError};
    use vigil_host::coordination::shared::RedisKv;

    let mut redis = RedisServer::start().expect("redis-server");
    let first = RedisKv::open(&redis.url(), "lab").expect("kv");
    let second = RedisKv::open(&redis.url(), "lab").expect("kv");
    let other_site = RedisKv::open(&redis.url(), "dc2").expect("kv");

    first
        .set("poller", "sw1:last", b"12345", 40)
        .expect("store")
        .expect("within the quota");
    assert_eq!(
        second.get("poller", "sw1:last").expect("get"),
        Some(b"12345".to_vec())
    );
    assert_eq!(second.usage("poller").expect("usage"), 8 + 5);
    // Overwriting replaces the old size rather than adding to it.
    second
        .set("poller", "sw1:last", &[7; 20], 40)
        .expect("store")
        .expect("fits after replacing");
    assert_eq!(first.usage("poller").expect("usage"), 8 + 20);
    // One budget for the plugin, whichever agent writes.
    assert_eq!(
        first
            .set("poller", "sw2:last", &[0; 20], 40)
            .expect("store"),
        Err(KvError::QuotaExceeded(40))
    );
    second
        .set("poller", "a", b"x", 40)
        .expect("store")
        .expect("fits");
    assert_eq!(
        first.keys("poller").expect("keys"),
        vec!["a".to_owned(), "sw1:last".to_owned()]
    );
    // Other plugins and other sites see none of it.
    assert_eq!(first.get("other", "sw1:last").expect("get"), None);
    assert_eq!(other_site.get("poller", "sw1:last").expect("get"), None);
    assert_eq!(other_site.usage("poller").expect("usage"), 0);
    // Deleting gives the bytes back; deleting a missing key is harmless.
    first.delete("poller", "sw1:last").expect("delete");
    first.delete("poller", "never-set").expect("delete");
    assert_eq!(second.usage("poller").expect("usage"), 2);
    assert_eq!(second.keys("poller").expect("keys"), vec!["a".to_owned()]);

    // Many writers racing for the last bytes of the quota: exactly as many
    // as fit are stored (the check and the write are one script).
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let kv = RedisKv::open(&redis.url(), "lab").expect("kv");
            std::thread::spawn(move || kv.set("racer", &format!("k{i}"), &[0; 8], 30))
        })
        .collect();
    let stored = writers
        .into_iter()
        .map(|w| w.join().expect("writer").expect("store"))
        .filter(Result::is_ok)
        .count();
    assert_eq!(stored, 3, "three writes of 10 bytes fit a 30-byte quota");
    assert_eq!(first.usage("racer").expect("usage"), 30);

    // Redis gone: the store failed (the run ends as a host failure), the
    // plugin is not told it is over its quota.
    redis.stop();
    let failure = first
        .set("poller", "b", b"y", 40)
        .expect_err("redis is down");
    assert_eq!(failure.operation, "set");
    assert!(failure.cause.contains("Redis"), "{failure}");
    // Back (empty): the same handle reconnects.
    redis.restart().expect("redis back");
    first
        .set("poller", "b", b"y", 40)
        .expect("reconnected")
        .expect("fits");
    assert_eq!(second.get("poller", "b").expect("get"), Some(b"y".to_vec()));
}
