//! One conformance suite for every [`Storage`] backend: each check is a
//! function of a `&dyn Storage`, run against the embedded SQLite store (in a
//! temporary directory) and against MongoDB (a fresh database per test on one
//! nx-27017 server shared by the whole test binary; see
//! `vigil_tests::mongo_servers`). Both must give the same answers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use futures_util::future::BoxFuture;
use vigil_host::coordination::redis::connect;
use vigil_host::coordination::shared::RedisResources;
use vigil_host::model::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource,
};
use vigil_host::store::ResourceSettings;
use vigil_host::store::sqlite::SqliteStorage;
use vigil_host::store::{
    HostStatus, PluginStatus, Refusal, ResourcePolicy, RunQuery, RunRecord, STATUS_RETENTION,
    SeriesQuery, SeriesValue, Storage, StoredResource, UpsertSummary,
};
use vigil_mongo::MongoStorage;
use vigil_tests::mongo_servers::{free_tcp_port, shared_nx_mongo, unique_database};
use vigil_tests::redis_servers::RedisServer;

// --- backends ----------------------------------------------------------------

/// Opens the same database again each time it is called.
type Opener = Box<dyn Fn() -> BoxFuture<'static, Result<Box<dyn Storage>>> + Send + Sync>;

fn sqlite_backend() -> Result<(tempfile::TempDir, Opener)> {
    let dir = tempfile::tempdir().context("tempdir")?;
    let path = dir.path().join("vigil.db");
    let open: Opener = Box::new(move || {
        let path = path.clone();
        Box::pin(async move {
            let store = SqliteStorage::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            Ok(Box::new(store) as Box<dyn Storage>)
        })
    });
    Ok((dir, open))
}

/// A database of its own for test `name` on the shared server.
fn mongo_backend(name: &str) -> Result<Opener> {
    let url = shared_nx_mongo()?.url();
    let database = unique_database("vigil", name);
    Ok(Box::new(move || {
        let (url, database) = (url.clone(), database.clone());
        Box::pin(async move {
            let store = MongoStorage::open(&url, &database)
                .await
                .with_context(|| format!("opening database {database} at {url}"))?;
            Ok(Box::new(store) as Box<dyn Storage>)
        })
    }))
}

/// The resource registry agents share through Redis (everything else in
/// a SQLite store of the test's own), on a `redis-server` of the test's
/// own that stops with the opener.
fn redis_backend() -> Result<(tempfile::TempDir, Opener)> {
    let dir = tempfile::tempdir().context("tempdir")?;
    let redis = std::sync::Arc::new(RedisServer::start()?);
    let path = dir.path().join("vigil.db");
    let open: Opener = Box::new(move || {
        let (path, redis) = (path.clone(), redis.clone());
        Box::pin(async move {
            let inner = SqliteStorage::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let connection = connect(&redis.url()).await.context("redis registry")?;
            let store = RedisResources::new(std::sync::Arc::new(inner), connection, "lab");
            Ok(Box::new(store) as Box<dyn Storage>)
        })
    });
    Ok((dir, open))
}

/// The resource checks again on the Redis registry (its run history,
/// latest values and status are the inner SQLite store's, checked above).
macro_rules! registry_conformance {
    (checks: [$($check:ident),* $(,)?], restarts: [$($restart:ident),* $(,)?] $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() -> anyhow::Result<()> {
                    let (_dir, open) = super::redis_backend()?;
                    super::$check(open().await?.as_ref()).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $restart() -> anyhow::Result<()> {
                    let (_dir, open) = super::redis_backend()?;
                    super::$restart(&open).await
                }
            )*
        }
    };
}

/// Runs each check (a `fn(&dyn Storage) -> Result<()>`) against a fresh
/// store of each backend, and each restart check (a `fn(&Opener) ->
/// Result<()>`) with a way to reopen the same database.
macro_rules! conformance {
    (checks: [$($check:ident),* $(,)?], restarts: [$($restart:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() -> anyhow::Result<()> {
                    let (_dir, open) = super::sqlite_backend()?;
                    super::$check(open().await?.as_ref()).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $restart() -> anyhow::Result<()> {
                    let (_dir, open) = super::sqlite_backend()?;
                    super::$restart(&open).await
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() -> anyhow::Result<()> {
                    let open = super::mongo_backend(stringify!($check))?;
                    super::$check(open().await?.as_ref()).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $restart() -> anyhow::Result<()> {
                    let open = super::mongo_backend(stringify!($restart))?;
                    super::$restart(&open).await
                }
            )*
        }
    };
}

conformance! {
    checks: [
        upsert_counts_added_and_refreshed_idempotently,
        resources_expire_by_ttl_with_their_series,
        live_resources_round_trip_sorted_by_id,
        run_history_newest_first_with_limit_and_filter,
        runs_filtered_by_resource_outcome_and_time,
        latest_values_exact_one_per_series,
        latest_filtered_by_resource_metric_time_and_limit,
        status_round_trips,
        each_agent_has_its_own_status,
        the_enrichment_mirror_keeps_what_the_cache_holds,
        callable_from_async_code,
        large_batches_count_exactly,
        a_live_resource_cannot_be_taken_over,
        resources_stay_in_the_hosts_site,
        each_plugin_owns_at_most_its_budget,
        ttls_are_capped_and_times_are_the_hosts,
        a_removed_plugins_resources_expire_at_once,
    ],
    restarts: [reopened_store_keeps_everything, racing_claims_have_one_winner_each],
}

registry_conformance! {
    checks: [
        // Delegated to the inner store: that the wrapper passes every
        // filter and every agent's status through.
        runs_filtered_by_resource_outcome_and_time,
        latest_filtered_by_resource_metric_time_and_limit,
        each_agent_has_its_own_status,
        the_enrichment_mirror_keeps_what_the_cache_holds,
        upsert_counts_added_and_refreshed_idempotently,
        live_resources_round_trip_sorted_by_id,
        large_batches_count_exactly,
        a_live_resource_cannot_be_taken_over,
        resources_stay_in_the_hosts_site,
        each_plugin_owns_at_most_its_budget,
        ttls_are_capped_and_times_are_the_hosts,
        a_removed_plugins_resources_expire_at_once,
    ],
    restarts: [racing_claims_have_one_winner_each],
}

// --- fixtures ------------------------------------------------------------------

fn at(seconds: u64, nanoseconds: u32) -> Datetime {
    Datetime {
        seconds,
        nanoseconds,
    }
}

fn resource(id: &str, ttl: u64) -> Resource {
    let mut r = Resource::named(id, "127.0.0.1");
    r.site = "lab".into();
    r.class = "network".into();
    r.subclass = "router".into();
    r.type_ = "juniper".into();
    r.ttl_seconds = ttl;
    r.creation_timestamp = at(900, 500_000_000);
    r.metadata = vec![("model".into(), "mx960".into())];
    r
}

fn group(
    resource_id: &str,
    group_type: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, MetricValue, MetricType)],
    when: Datetime,
) -> MetricsGroup {
    MetricsGroup {
        group_type: group_type.into(),
        interval_seconds: 60,
        creation_timestamp: when,
        schema_version: "0.2".into(),
        resource: resource(resource_id, 0).into(),
        dimensions: dimensions
            .iter()
            .map(|(name, value)| Dimension {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
        metrics: metrics
            .iter()
            .map(|(name, value, type_)| Metric {
                name: (*name).into(),
                value: *value,
                type_: *type_,
                creation_timestamp: when,
            })
            .collect(),
    }
}

fn run(plugin: &str, resource_id: Option<&str>, started_at: f64) -> RunRecord {
    RunRecord {
        plugin: plugin.into(),
        resource_id: resource_id.map(Into::into),
        scheduled_at: started_at - 0.25,
        started_at,
        finished_at: started_at + 1.0,
        outcome: "ok".into(),
        detail: String::new(),
    }
}

fn summary(added: usize, refreshed: usize) -> UpsertSummary {
    UpsertSummary {
        added,
        refreshed,
        ..UpsertSummary::default()
    }
}

/// The host's rules for site "lab": `default_ttl` for resources without
/// one, a 7-day ceiling, 10,000 resources per plugin.
fn policy(default_ttl: f64) -> ResourcePolicy {
    ResourcePolicy {
        site: "lab".into(),
        sites: Vec::new(),
        default_ttl,
        max_ttl: 7.0 * 86_400.0,
        max_resources: 10_000,
    }
}

fn ids(resources: &[StoredResource]) -> Vec<&str> {
    resources.iter().map(|r| r.resource.id.as_str()).collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn owned(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// --- the checks ----------------------------------------------------------------

async fn upsert_counts_added_and_refreshed_idempotently(store: &dyn Storage) -> Result<()> {
    assert_eq!(
        store
            .upsert_resources("disco", &[], &policy(100.0), 1000.0)
            .await?,
        summary(0, 0)
    );
    let batch = [resource("a", 0), resource("b", 30)];
    assert_eq!(
        store
            .upsert_resources("disco", &batch, &policy(100.0), 1000.0)
            .await?,
        summary(2, 0)
    );
    let before = store.live_resources(1000.0).await?;
    assert_eq!(ids(&before), ["a", "b"]);

    // The same batch again (a retried write): nothing added, same state.
    assert_eq!(
        store
            .upsert_resources("disco", &batch, &policy(100.0), 1000.0)
            .await?,
        summary(0, 2)
    );
    assert_eq!(store.live_resources(1000.0).await?, before);

    // One id twice in a batch: the first adds it, the repeat is refused.
    let twice = [resource("c", 0), resource("c", 0)];
    let repeated = store
        .upsert_resources("disco", &twice, &policy(100.0), 1005.0)
        .await?;
    assert_eq!((repeated.added, repeated.duplicates), (1, 1));

    // Rediscovered by its owner with new data: what a refresh changes and
    // what it keeps from the first sighting (and what the plugin cannot
    // set: the owner, the creation time).
    let mut a = resource("a", 0);
    a.endpoint = "10.0.0.2".into();
    a.type_ = "cisco".into();
    a.creation_plugin = "not stored".into();
    a.creation_timestamp = at(950, 0);
    a.metadata = pairs(&[("os", "junos 21"), ("model", "mx480")]);
    assert_eq!(
        store
            .upsert_resources("disco", &[a], &policy(50.0), 1010.0)
            .await?,
        summary(0, 1)
    );
    let live = store.live_resources(1010.0).await?;
    assert_eq!(ids(&live), ["a", "b", "c"]);
    let a = &live[0];
    assert_eq!(a.resource.endpoint, "10.0.0.2");
    assert_eq!(a.resource.type_, "cisco");
    assert_eq!(
        a.resource.metadata,
        pairs(&[("os", "junos 21"), ("model", "mx480")])
    );
    assert_eq!(a.resource.ttl_seconds, 50);
    assert_eq!(a.discovered_by, "disco");
    // The owner and the host's time of first sight stay.
    assert_eq!(a.resource.creation_plugin, "disco");
    assert_eq!(
        a.resource.creation_timestamp,
        Datetime::from_seconds(1000.0)
    );
    assert_eq!(
        (a.first_seen, a.last_seen, a.expires_at),
        (1000.0, 1010.0, 1060.0)
    );
    Ok(())
}

async fn resources_expire_by_ttl_with_their_series(store: &dyn Storage) -> Result<()> {
    let batch = [resource("a", 0), resource("b", 30), resource("c", 30)];
    assert_eq!(
        store
            .upsert_resources("disco", &batch, &policy(100.0), 1000.0)
            .await?,
        summary(3, 0)
    );
    let counter = |id: &str| {
        group(
            id,
            "interface",
            &[("interface_name", "ge-0/0/0")],
            &[("bits_in", MetricValue::Unsigned(7), MetricType::Counter)],
            at(1001, 0),
        )
    };
    store
        .store_latest(&[
            counter("a").into(),
            counter("b").into(),
            counter("c").into(),
        ])
        .await?;
    // b is rediscovered before it expires: its own TTL counts from then.
    assert_eq!(
        store
            .upsert_resources("disco", &[resource("b", 30)], &policy(100.0), 1020.0)
            .await?,
        summary(0, 1)
    );

    // A resource lives while expires_at > now.
    assert_eq!(ids(&store.live_resources(1029.5).await?), ["a", "b", "c"]);
    assert_eq!(ids(&store.live_resources(1030.0).await?), ["a", "b"]);
    assert!(store.expire_resources(1029.5).await?.is_empty());
    assert_eq!(sorted(store.expire_resources(1030.0).await?), owned(&["c"]));
    assert!(store.expire_resources(1030.0).await?.is_empty());
    // Expired resources are gone (for any `now`), and so are their series.
    assert_eq!(ids(&store.live_resources(0.0).await?), ["a", "b"]);
    let series: Vec<String> = store
        .latest(None)
        .await?
        .into_iter()
        .map(|s| s.resource_id)
        .collect();
    assert_eq!(series, owned(&["a", "b"]));

    assert_eq!(
        sorted(store.expire_resources(5000.0).await?),
        owned(&["a", "b"])
    );
    assert!(store.live_resources(0.0).await?.is_empty());
    assert!(store.latest(None).await?.is_empty());
    Ok(())
}

async fn live_resources_round_trip_sorted_by_id(store: &dyn Storage) -> Result<()> {
    let mut full = resource("b", 0);
    full.subclass = "dc-1 ünïcödé".into();
    full.endpoint = "2001:db8::1".into();
    full.class = String::new();
    full.creation_timestamp = at(1_700_000_000, 250_000_000);
    // Order and repeated keys are kept as given; values may hold anything.
    full.metadata = pairs(&[
        ("z", "last\"first"),
        ("a.b", "{\"json\": [1, 2]}"),
        ("$dollar", ""),
        ("z", "again"),
        ("emoji", "🛰 \\ \n tab\t"),
    ]);
    let mut bare = resource("C", 0);
    bare.metadata.clear();
    let third = resource("a", 0);
    store
        .upsert_resources(
            "disco",
            &[full.clone(), bare.clone(), third],
            &policy(100.0),
            1000.25,
        )
        .await?;

    let live = store.live_resources(1000.25).await?;
    // Byte order, as SQLite's ORDER BY id: upper case first.
    assert_eq!(ids(&live), ["C", "a", "b"]);
    let mut expected = full;
    expected.creation_plugin = "disco".into();
    expected.creation_timestamp = Datetime::from_seconds(1000.25);
    expected.ttl_seconds = 100;
    assert_eq!(
        live[2],
        StoredResource {
            resource: expected,
            discovered_by: "disco".into(),
            first_seen: 1000.25,
            last_seen: 1000.25,
            expires_at: 1100.25,
        }
    );
    assert!(live[0].resource.metadata.is_empty());
    Ok(())
}

async fn run_history_newest_first_with_limit_and_filter(store: &dyn Storage) -> Result<()> {
    assert!(store.recent_runs(None, 10).await?.is_empty());
    store.record_runs(&[]).await?;
    store
        .record_runs(&[
            run("a", Some("r1"), 1.0),
            run("b", Some("r1"), 2.0),
            run("a", Some("r2"), 3.0),
        ])
        .await?;
    // Recorded later, though it started earlier: "newest" is recording order.
    let mut late = run("disco", None, 0.5);
    late.outcome = "trap.deadline".into();
    late.detail = "deadline of 5s exceeded — ünïcödé \"quoted\"".into();
    store.record_runs(std::slice::from_ref(&late)).await?;

    let started = |runs: Vec<RunRecord>| runs.iter().map(|r| r.started_at).collect::<Vec<_>>();
    assert_eq!(
        started(store.recent_runs(None, 10).await?),
        [0.5, 3.0, 2.0, 1.0]
    );
    assert_eq!(started(store.recent_runs(None, 2).await?), [0.5, 3.0]);
    assert_eq!(started(store.recent_runs(Some("a"), 10).await?), [3.0, 1.0]);
    assert_eq!(started(store.recent_runs(Some("a"), 1).await?), [3.0]);
    assert!(store.recent_runs(Some("nope"), 10).await?.is_empty());
    assert!(store.recent_runs(None, 0).await?.is_empty());
    assert_eq!(store.recent_runs(None, usize::MAX).await?.len(), 4);
    assert_eq!(store.recent_runs(Some("disco"), 5).await?, vec![late]);
    assert_eq!(
        store.recent_runs(Some("b"), 5).await?,
        vec![run("b", Some("r1"), 2.0)]
    );
    Ok(())
}

async fn runs_filtered_by_resource_outcome_and_time(store: &dyn Storage) -> Result<()> {
    let failed = |plugin: &str, resource: &str, at: f64| RunRecord {
        outcome: "trap.deadline".into(),
        ..run(plugin, Some(resource), at)
    };
    store
        .record_runs(&[
            run("a", Some("r1"), 10.0),
            failed("a", "r2", 20.0),
            run("b", Some("r2"), 30.0),
            failed("b", "r1", 40.0),
            run("disco", None, 50.0),
        ])
        .await?;
    let query = |q: RunQuery| async move {
        let runs = store.query_runs(&RunQuery { limit: 100, ..q }).await?;
        anyhow::Ok(runs.iter().map(|r| r.started_at).collect::<Vec<_>>())
    };
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(
        query(RunQuery::default()).await?,
        [50.0, 40.0, 30.0, 20.0, 10.0]
    );
    assert_eq!(
        query(RunQuery {
            resource_id: text("r2"),
            ..RunQuery::default()
        })
        .await?,
        [30.0, 20.0]
    );
    assert_eq!(
        query(RunQuery {
            outcome: text("trap.deadline"),
            ..RunQuery::default()
        })
        .await?,
        [40.0, 20.0]
    );
    assert_eq!(
        query(RunQuery {
            since: Some(30.0),
            ..RunQuery::default()
        })
        .await?,
        [50.0, 40.0, 30.0]
    );
    // Every field at once.
    assert_eq!(
        query(RunQuery {
            plugin: text("b"),
            resource_id: text("r1"),
            outcome: text("trap.deadline"),
            since: Some(40.0),
            ..RunQuery::default()
        })
        .await?,
        [40.0]
    );
    assert!(
        query(RunQuery {
            plugin: text("a"),
            outcome: text("ok"),
            resource_id: text("r2"),
            ..RunQuery::default()
        })
        .await?
        .is_empty()
    );
    // The limit counts matching runs, newest first.
    let limited = store
        .query_runs(&RunQuery {
            outcome: text("ok"),
            limit: 2,
            ..RunQuery::default()
        })
        .await?;
    assert_eq!(
        limited.iter().map(|r| r.started_at).collect::<Vec<_>>(),
        [50.0, 30.0]
    );
    Ok(())
}

async fn latest_filtered_by_resource_metric_time_and_limit(store: &dyn Storage) -> Result<()> {
    let interface = |resource: &str, name: &str, when: Datetime| {
        group(
            resource,
            "interface",
            &[("interface_name", name)],
            &[
                ("bits_in", MetricValue::Unsigned(1), MetricType::Counter),
                ("bits_out", MetricValue::Unsigned(2), MetricType::Counter),
            ],
            when,
        )
    };
    store
        .store_latest(&[
            interface("sw1", "ge-0/0/0", at(10, 0)).into(),
            interface("sw1", "ge-0/0/1", at(20, 0)).into(),
            interface("sw2", "ge-0/0/0", at(30, 0)).into(),
            group(
                "sw2",
                "cpu",
                &[],
                &[("busy", MetricValue::Float(1.5), MetricType::Gauge)],
                at(40, 0),
            )
            .into(),
        ])
        .await?;
    let query = |q: SeriesQuery| async move {
        let values = store.query_latest(&q).await?;
        anyhow::Ok(
            values
                .iter()
                .map(|v| format!("{} {} {}", v.resource_id, v.metric, v.at))
                .collect::<Vec<_>>(),
        )
    };
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(
        query(SeriesQuery {
            resource_id: text("sw2"),
            ..SeriesQuery::default()
        })
        .await?,
        ["sw2 busy 40", "sw2 bits_in 30", "sw2 bits_out 30"]
    );
    assert_eq!(
        query(SeriesQuery {
            metric: text("bits_out"),
            ..SeriesQuery::default()
        })
        .await?,
        ["sw1 bits_out 10", "sw1 bits_out 20", "sw2 bits_out 30"]
    );
    assert_eq!(
        query(SeriesQuery {
            since: Some(20.0),
            group_type: text("interface"),
            ..SeriesQuery::default()
        })
        .await?,
        [
            "sw1 bits_in 20",
            "sw1 bits_out 20",
            "sw2 bits_in 30",
            "sw2 bits_out 30"
        ]
    );
    // The limit keeps the first values in the usual order.
    assert_eq!(
        query(SeriesQuery {
            limit: Some(3),
            ..SeriesQuery::default()
        })
        .await?,
        ["sw1 bits_in 10", "sw1 bits_out 10", "sw1 bits_in 20"]
    );
    assert!(
        query(SeriesQuery {
            resource_id: text("sw1"),
            metric: text("busy"),
            ..SeriesQuery::default()
        })
        .await?
        .is_empty()
    );
    assert!(
        query(SeriesQuery {
            limit: Some(0),
            ..SeriesQuery::default()
        })
        .await?
        .is_empty()
    );
    Ok(())
}

async fn latest_values_exact_one_per_series(store: &dyn Storage) -> Result<()> {
    let interface = |bits_in: u64, when: Datetime| {
        group(
            "sw1",
            "interface",
            // Given unsorted: stored sorted by name.
            &[("interface_name", "ge-0/0/0"), ("description", "uplink ü")],
            &[
                (
                    "bits_in",
                    MetricValue::Unsigned(bits_in),
                    MetricType::Counter,
                ),
                (
                    "utilization",
                    MetricValue::Float(0.1 + 0.2),
                    MetricType::Gauge,
                ),
                ("offset", MetricValue::Signed(i64::MIN), MetricType::Gauge),
            ],
            when,
        )
    };
    let cpu = group(
        "r2",
        "cpu",
        &[],
        &[("busy", MetricValue::Float(12.5), MetricType::Gauge)],
        at(30, 0),
    );
    store
        .store_latest(&[interface(1, at(10, 0)).into(), cpu.into()])
        .await?;
    // A later sample of the same series replaces it (idempotently).
    store
        .store_latest(&[interface(u64::MAX, at(20, 250_000_000)).into()])
        .await?;
    store
        .store_latest(&[interface(u64::MAX, at(20, 250_000_000)).into()])
        .await?;

    let dims = pairs(&[("description", "uplink ü"), ("interface_name", "ge-0/0/0")]);
    let series = |metric: &str, value: &str, metric_type: &str| SeriesValue {
        resource_id: "sw1".into(),
        group_type: "interface".into(),
        dimensions: dims.clone(),
        metric: metric.into(),
        value: value.into(),
        metric_type: metric_type.into(),
        at: 20.25,
    };
    let expected_interface = vec![
        series("bits_in", "18446744073709551615", "counter"),
        series("offset", "-9223372036854775808", "gauge"),
        series("utilization", "0.30000000000000004", "gauge"),
    ];
    assert_eq!(store.latest(Some("interface")).await?, expected_interface);
    let cpu = SeriesValue {
        resource_id: "r2".into(),
        group_type: "cpu".into(),
        dimensions: Vec::new(),
        metric: "busy".into(),
        value: "12.5".into(),
        metric_type: "gauge".into(),
        at: 30.0,
    };
    assert_eq!(store.latest(Some("cpu")).await?, vec![cpu.clone()]);
    // Ordered by resource, group, dimensions, metric.
    let mut all = vec![cpu];
    all.extend(expected_interface);
    assert_eq!(store.latest(None).await?, all);
    assert!(store.latest(Some("memory")).await?.is_empty());
    // The counter is exact: parsing it back gives u64::MAX, not 2^64.
    ensure!(
        store.latest(Some("interface")).await?[0]
            .value
            .parse::<u64>()?
            == u64::MAX
    );
    Ok(())
}

fn host_status(site: &str, runs: u64) -> HostStatus {
    HostStatus {
        agent_id: "agent-1".into(),
        role: "all".into(),
        site: site.into(),
        pid: 4242,
        started_at: 1000.5,
        updated_at: 1002.75,
        resources: 6,
        plugins: vec![PluginStatus {
            name: "heartbeat".into(),
            kind: "polling".into(),
            schedule: "every 10s".into(),
            runs,
            outcomes: [("ok".to_owned(), runs), ("trap.deadline".to_owned(), 2)]
                .into_iter()
                .collect(),
            skipped: 3,
            last_run_at: Some(1002.125),
            lateness_p50_ms: 1.5,
            lateness_p99_ms: 12.0,
        }],
        broken: vec![("bad.vigil-plugin".into(), "line 3: unknown key".into())],
        health: serde_json::to_value(vigil_host::health::HealthSnapshot {
            started_at: 1000.5,
            sinks: vec![vigil_host::sinks::buffer::SinkSnapshot {
                name: "influxdb".into(),
                kind: "influxdb".into(),
                buffered: 12,
                capacity: 100_000,
                accepted: runs,
                delivered: runs.saturating_sub(12),
                retries: 4,
                dropped: [("buffer_full".to_owned(), 3)].into_iter().collect(),
            }],
            queues: [("bus".to_owned(), 5)].into_iter().collect(),
            ..Default::default()
        })
        .expect("a health snapshot is JSON"),
    }
}

async fn status_round_trips(store: &dyn Storage) -> Result<()> {
    assert_eq!(store.status().await?, None);
    let first = host_status("lab", u64::MAX);
    store.put_status(&first).await?;
    assert_eq!(store.status().await?, Some(first));
    let second = HostStatus {
        plugins: Vec::new(),
        broken: Vec::new(),
        ..host_status("lab 2", 1)
    };
    store.put_status(&second).await?;
    assert_eq!(store.status().await?, Some(second));
    Ok(())
}

/// The embedded enrichment cache's mirror: upserts replace, removals and
/// expiry delete, filters and order hold, and sets come back exactly
/// (order, odd characters, empty values).
async fn the_enrichment_mirror_keeps_what_the_cache_holds(store: &dyn Storage) -> Result<()> {
    use vigil_host::model::{CachedEnrichment, EnrichmentGroup, EnrichmentSet};
    let entry = |resource: &str, namespace: &str, expires_at: f64, value: &str| CachedEnrichment {
        resource_id: resource.into(),
        namespace: namespace.into(),
        plugin: "snmp_interface_enrichment".into(),
        expires_at,
        group: EnrichmentGroup {
            namespace: namespace.into(),
            ttl_seconds: 900,
            sets: vec![
                EnrichmentSet {
                    key: "12".into(),
                    values: vec![
                        ("interface_name".into(), value.into()),
                        ("alias".into(), String::new()),
                    ],
                },
                EnrichmentSet {
                    key: "3".into(),
                    values: vec![("description".into(), "uplink \"core\" ✓\0".into())],
                },
            ],
        },
    };
    assert!(
        store
            .mirrored_enrichments(None, None, 0.0)
            .await?
            .is_empty()
    );
    store
        .mirror_enrichments(
            &[
                entry("sw2", "interface", 2000.0, "ge-0/0/0"),
                entry("sw1", "interface", 2000.0, "Ethernet1/1"),
                entry("sw1", "device", 1500.0, "x"),
            ],
            &[],
            1000.0,
        )
        .await?;
    let all = store.mirrored_enrichments(None, None, 1000.0).await?;
    let keys: Vec<(&str, &str)> = all
        .iter()
        .map(|e| (e.resource_id.as_str(), e.namespace.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("sw1", "device"),
            ("sw1", "interface"),
            ("sw2", "interface")
        ]
    );
    assert_eq!(all[1], entry("sw1", "interface", 2000.0, "Ethernet1/1"));

    // A later write replaces, removes and drops what expired.
    store
        .mirror_enrichments(
            &[entry("sw1", "interface", 2600.0, "Ethernet1/2")],
            &[("sw2".into(), "interface".into())],
            1600.0,
        )
        .await?;
    let all = store.mirrored_enrichments(None, None, 1600.0).await?;
    assert_eq!(all, [entry("sw1", "interface", 2600.0, "Ethernet1/2")]);
    store
        .mirror_enrichments(&[entry("sw3", "device", 2600.0, "y")], &[], 1600.0)
        .await?;
    let only = |resource: Option<&'static str>, namespace: Option<&'static str>| async move {
        store
            .mirrored_enrichments(resource, namespace, 1600.0)
            .await
            .map(|v| v.into_iter().map(|e| e.resource_id).collect::<Vec<_>>())
    };
    assert_eq!(only(Some("sw3"), None).await?, ["sw3"]);
    assert_eq!(only(None, Some("interface")).await?, ["sw1"]);
    assert_eq!(
        only(Some("sw3"), Some("interface")).await?,
        Vec::<String>::new()
    );
    // Reading at a later time hides what expired before any write.
    assert!(
        store
            .mirrored_enrichments(None, None, 2600.0)
            .await?
            .is_empty()
    );
    Ok(())
}

/// Agents write a status each, keyed by agent id; `status` is the newest;
/// an agent silent for `STATUS_RETENTION` is forgotten at the next write.
async fn each_agent_has_its_own_status(store: &dyn Storage) -> Result<()> {
    assert!(store.statuses().await?.is_empty());
    let agent = |id: &str, updated_at: f64| HostStatus {
        agent_id: id.into(),
        role: "agent".into(),
        updated_at,
        ..host_status("lab", 1)
    };
    store.put_status(&agent("b", 1000.0)).await?;
    store.put_status(&agent("a", 1001.0)).await?;
    store.put_status(&agent("b", 1002.0)).await?;
    assert_eq!(
        store.statuses().await?,
        vec![agent("a", 1001.0), agent("b", 1002.0)]
    );
    assert_eq!(store.status().await?, Some(agent("b", 1002.0)));
    // `a` has been silent for longer than the retention when `c` writes.
    store
        .put_status(&agent("c", 1001.5 + STATUS_RETENTION))
        .await?;
    let left: Vec<String> = store
        .statuses()
        .await?
        .into_iter()
        .map(|s| s.agent_id)
        .collect();
    assert_eq!(left, ["b", "c"]);
    Ok(())
}

/// The host calls storage from many tasks at once: calls made at the same
/// time from tasks on both workers all complete, none panics.
async fn callable_from_async_code(store: &dyn Storage) -> Result<()> {
    let calls = (0..8).map(|i| async move {
        store.put_status(&host_status("async", i)).await?;
        ensure!(store.status().await?.is_some_and(|s| s.site == "async"));
        store
            .upsert_resources(
                "disco",
                &[resource(&format!("a{i}"), 0)],
                &policy(100.0),
                1000.0,
            )
            .await?;
        Ok(())
    });
    for result in futures_util::future::join_all(calls).await {
        result?;
    }
    ensure!(store.live_resources(1000.0).await?.len() == 8);
    Ok(())
}

/// Batches larger than one MongoDB write command (1,000 writes) or `$in`
/// list (1,000 ids) are split without losing count or order.
async fn large_batches_count_exactly(store: &dyn Storage) -> Result<()> {
    let resources: Vec<Resource> = (0..2500)
        .map(|i| resource(&format!("r{i:04}"), 0))
        .collect();
    assert_eq!(
        store
            .upsert_resources("disco", &resources, &policy(100.0), 1000.0)
            .await?,
        summary(2500, 0)
    );
    let mut again = resources.clone();
    again.push(resource("new", 0));
    assert_eq!(
        store
            .upsert_resources("disco", &again, &policy(100.0), 1001.0)
            .await?,
        summary(1, 2500)
    );
    let runs: Vec<RunRecord> = (0..1500)
        .map(|i| run("p", Some("r"), f64::from(i)))
        .collect();
    store.record_runs(&runs).await?;
    let recent = store.recent_runs(Some("p"), 2000).await?;
    assert_eq!(recent.len(), 1500);
    ensure!(recent.first().is_some_and(|r| r.started_at == 1499.0));
    ensure!(recent.last().is_some_and(|r| r.started_at == 0.0));
    assert_eq!(store.expire_resources(5000.0).await?.len(), 2501);
    assert!(store.live_resources(0.0).await?.is_empty());
    Ok(())
}

async fn reopened_store_keeps_everything(open: &Opener) -> Result<()> {
    let (live, runs, latest, status) = {
        let store = open().await?;
        store
            .upsert_resources(
                "disco",
                &[resource("a", 0), resource("b", 30)],
                &policy(100.0),
                1000.0,
            )
            .await?;
        store
            .record_runs(&[run("a", Some("r1"), 1.0), run("b", None, 2.0)])
            .await?;
        store
            .store_latest(&[group(
                "a",
                "interface",
                &[("interface_name", "xe-1/0/0")],
                &[(
                    "bits_out",
                    MetricValue::Unsigned(u64::MAX - 1),
                    MetricType::Counter,
                )],
                at(1000, 0),
            )
            .into()])
            .await?;
        store.put_status(&host_status("lab", 9)).await?;
        (
            store.live_resources(1000.0).await?,
            store.recent_runs(None, 10).await?,
            store.latest(None).await?,
            store.status().await?,
        )
    };
    let store = open().await?;
    assert_eq!(store.live_resources(1000.0).await?, live);
    assert_eq!(store.recent_runs(None, 10).await?, runs);
    assert_eq!(store.latest(None).await?, latest);
    assert_eq!(store.status().await?, status);
    // Known resources are refreshed, not added again, and run history goes
    // on in order after the restart.
    assert_eq!(
        store
            .upsert_resources(
                "disco",
                &[resource("a", 0), resource("b", 30)],
                &policy(100.0),
                1010.0,
            )
            .await?,
        summary(0, 2)
    );
    store.record_runs(&[run("c", None, 0.0)]).await?;
    let started: Vec<f64> = store
        .recent_runs(None, 10)
        .await?
        .iter()
        .map(|r| r.started_at)
        .collect();
    assert_eq!(started, [0.0, 2.0, 1.0]);
    Ok(())
}

// --- ownership, sites, budgets, TTLs (issue 11) ----------------------------------

async fn live(store: &dyn Storage, id: &str, now: f64) -> Result<Option<StoredResource>> {
    Ok(store
        .live_resources(now)
        .await?
        .into_iter()
        .find(|r| r.resource.id == id))
}

/// A discovery plugin re-reports another plugin's live resource with an
/// endpoint it controls (where the SNMP credentials would then go): the
/// claim is refused, counted and named, nothing of it is stored, and the
/// owner keeps refreshing. Once the resource expires the id is free.
async fn a_live_resource_cannot_be_taken_over(store: &dyn Storage) -> Result<()> {
    store
        .upsert_resources(
            "inventory",
            &[resource("sw1", 60), resource("sw2", 600)],
            &policy(100.0),
            1000.0,
        )
        .await?;
    let owners = store.live_resources(1000.0).await?;
    let mut stolen = resource("sw1", u64::MAX);
    stolen.endpoint = "127.0.0.66:1161".into();
    stolen.class = "stolen".into();
    stolen.metadata = pairs(&[("community_hint", "send it here")]);
    let claim = store
        .upsert_resources(
            "attacker",
            &[stolen.clone(), resource("own1", 0)],
            &policy(100.0),
            1010.0,
        )
        .await?;
    assert_eq!(
        (claim.added, claim.refreshed, claim.conflicts),
        (1, 0, 1),
        "{claim:?}"
    );
    assert_eq!(
        claim.refusals,
        vec![Refusal::Owned {
            id: "sw1".into(),
            owner: "inventory".into()
        }]
    );
    let detail = claim.describe(2);
    assert!(
        detail.contains("1 owned by another plugin")
            && detail.contains("\"sw1\" is owned by \"inventory\""),
        "{detail}"
    );
    let after: Vec<StoredResource> = store
        .live_resources(1010.0)
        .await?
        .into_iter()
        .filter(|r| r.resource.id != "own1")
        .collect();
    assert_eq!(after, owners, "the owner's records are untouched");

    // The owner refreshes as usual; the attacker keeps being refused.
    assert_eq!(
        store
            .upsert_resources("inventory", &[resource("sw1", 60)], &policy(100.0), 1020.0)
            .await?,
        summary(0, 1)
    );
    let again = store
        .upsert_resources("attacker", &[stolen.clone()], &policy(100.0), 1030.0)
        .await?;
    assert_eq!((again.added, again.conflicts), (0, 1));
    let sw1 = live(store, "sw1", 1030.0).await?.context("sw1")?;
    assert_eq!(
        (
            sw1.discovered_by.as_str(),
            sw1.resource.endpoint.as_str(),
            sw1.expires_at
        ),
        ("inventory", "127.0.0.1", 1080.0)
    );

    // Expired (even before the sweep), it is free: the attacker gets a
    // fresh record of its own, and the old owner is refused in turn.
    let taken = store
        .upsert_resources("attacker", &[stolen], &policy(100.0), 1081.0)
        .await?;
    assert_eq!((taken.added, taken.conflicts), (1, 0), "{taken:?}");
    let sw1 = live(store, "sw1", 1081.0).await?.context("sw1")?;
    assert_eq!(
        (
            sw1.discovered_by.as_str(),
            sw1.resource.creation_plugin.as_str(),
            sw1.first_seen,
            sw1.resource.creation_timestamp
        ),
        (
            "attacker",
            "attacker",
            1081.0,
            Datetime::from_seconds(1081.0)
        )
    );
    let back = store
        .upsert_resources("inventory", &[resource("sw1", 60)], &policy(100.0), 1082.0)
        .await?;
    assert_eq!(back.conflicts, 1);
    Ok(())
}

/// A plugin reports in its configured sites only (the host's by default):
/// an empty site becomes the first, another is refused.
async fn resources_stay_in_the_hosts_site(store: &dyn Storage) -> Result<()> {
    let mut elsewhere = resource("x", 0);
    elsewhere.site = "dc9".into();
    let mut unsited = resource("y", 0);
    unsited.site = String::new();
    let got = store
        .upsert_resources(
            "disco",
            &[elsewhere, unsited, resource("z", 0)],
            &policy(100.0),
            1000.0,
        )
        .await?;
    assert_eq!((got.added, got.wrong_site), (2, 1), "{got:?}");
    assert_eq!(
        got.refusals,
        vec![Refusal::Site {
            id: "x".into(),
            site: "dc9".into()
        }]
    );
    let live = store.live_resources(1000.0).await?;
    assert_eq!(ids(&live), ["y", "z"]);
    assert!(live.iter().all(|r| r.resource.site == "lab"));

    // A plugin configured for sites (`[main] sites = lab1, lab2`) may
    // report in those, an empty site becomes the first, others are refused.
    let configured = ResourcePolicy {
        site: "lab1".into(),
        sites: vec!["lab1".into(), "lab2".into()],
        ..policy(100.0)
    };
    let sited = |id: &str, site: &str| {
        let mut r = resource(id, 0);
        r.site = site.into();
        r
    };
    let got = store
        .upsert_resources(
            "multi",
            &[sited("m1", "lab2"), sited("m2", ""), sited("m3", "lab")],
            &configured,
            1000.0,
        )
        .await?;
    assert_eq!((got.added, got.wrong_site), (2, 1), "{got:?}");
    let live = store.live_resources(1000.0).await?;
    let site_of = |id: &str| {
        live.iter()
            .find(|r| r.resource.id == id)
            .map(|r| r.resource.site.clone())
    };
    assert_eq!(site_of("m1").as_deref(), Some("lab2"));
    assert_eq!(site_of("m2").as_deref(), Some("lab1"));
    assert_eq!(site_of("m3"), None);
    Ok(())
}

/// A flood of new resources stops at the plugin's budget; refreshes of
/// what it owns go on, budgets are per plugin, and expired resources give
/// their place back.
async fn each_plugin_owns_at_most_its_budget(store: &dyn Storage) -> Result<()> {
    let budget = ResourcePolicy {
        max_resources: 3,
        ..policy(100.0)
    };
    let flood: Vec<Resource> = (0..6).map(|i| resource(&format!("f{i}"), 0)).collect();
    let got = store
        .upsert_resources("flood", &flood[..5], &budget, 1000.0)
        .await?;
    assert_eq!((got.added, got.over_budget), (3, 2), "{got:?}");
    assert_eq!(
        got.refusals,
        vec![
            Refusal::Budget {
                id: "f3".into(),
                limit: 3
            },
            Refusal::Budget {
                id: "f4".into(),
                limit: 3
            }
        ]
    );
    // The neighbour's budget is its own.
    let neighbour: Vec<Resource> = (0..3).map(|i| resource(&format!("n{i}"), 0)).collect();
    assert_eq!(
        store
            .upsert_resources("inventory", &neighbour, &budget, 1001.0)
            .await?,
        summary(3, 0)
    );
    // At its budget the flood still refreshes what it owns.
    let mut refresh = flood[..3].to_vec();
    refresh.push(flood[5].clone());
    let got = store
        .upsert_resources("flood", &refresh, &budget, 1010.0)
        .await?;
    assert_eq!((got.added, got.refreshed, got.over_budget), (0, 3, 1));
    assert_eq!(store.live_resources(1010.0).await?.len(), 6);
    // Expired (at 1110), they count no more.
    let later: Vec<Resource> = (6..10).map(|i| resource(&format!("f{i}"), 0)).collect();
    let got = store
        .upsert_resources("flood", &later, &budget, 1200.0)
        .await?;
    assert_eq!((got.added, got.over_budget), (3, 1));
    Ok(())
}

/// A plugin's TTL (even `u64::MAX`) and its ini's are clamped by the site;
/// creation times are the host's clock at first sight.
async fn ttls_are_capped_and_times_are_the_hosts(store: &dyn Storage) -> Result<()> {
    let settings = ResourceSettings {
        site: "lab".into(),
        max_ttl: Duration::from_secs(3600),
    };
    // The ini says a year.
    let policy = settings.policy(Duration::from_secs(365 * 86_400), 10, &[]);
    let mut forever = resource("forever", u64::MAX);
    forever.creation_timestamp = at(4_000_000_000, 0);
    let got = store
        .upsert_resources(
            "disco",
            &[forever.clone(), resource("default", 0)],
            &policy,
            1000.0,
        )
        .await?;
    assert_eq!(got.added, 2);
    for r in store.live_resources(1000.0).await? {
        assert_eq!(
            (
                r.resource.ttl_seconds,
                r.expires_at,
                r.resource.creation_timestamp
            ),
            (3600, 4600.0, Datetime::from_seconds(1000.0)),
            "{}",
            r.resource.id
        );
    }
    // A refresh keeps the first sighting's time.
    store
        .upsert_resources("disco", &[forever], &policy, 2000.0)
        .await?;
    let r = live(store, "forever", 2000.0).await?.context("forever")?;
    assert_eq!(
        (r.resource.creation_timestamp, r.first_seen, r.expires_at),
        (Datetime::from_seconds(1000.0), 1000.0, 5600.0)
    );
    assert_eq!(
        sorted(store.expire_resources(5600.0).await?),
        owned(&["default", "forever"])
    );
    Ok(())
}

/// The discovery plugin's file is deleted: what it owned expires at once
/// (the ids go to the sinks), the others' stay, and the ids are free.
async fn a_removed_plugins_resources_expire_at_once(store: &dyn Storage) -> Result<()> {
    store
        .upsert_resources(
            "gone",
            &[resource("a", 0), resource("b", u64::MAX)],
            &policy(100.0),
            1000.0,
        )
        .await?;
    store
        .upsert_resources("kept", &[resource("c", 0)], &policy(100.0), 1000.0)
        .await?;
    assert_eq!(
        sorted(store.expire_plugin_resources("gone", 1010.0).await?),
        owned(&["a", "b"])
    );
    assert_eq!(ids(&store.live_resources(1010.0).await?), ["c"]);
    assert!(
        store
            .expire_plugin_resources("gone", 1011.0)
            .await?
            .is_empty()
    );
    assert_eq!(
        store
            .upsert_resources("kept", &[resource("a", 0)], &policy(100.0), 1012.0)
            .await?,
        summary(1, 0)
    );
    Ok(())
}

/// Two discovery plugins on two connections (two agents) claim the same
/// 300 new ids at the same moment: each id ends with exactly one owner,
/// holding that owner's data, and every loss is counted as a conflict.
async fn racing_claims_have_one_winner_each(open: &Opener) -> Result<()> {
    let stores = [open().await?, open().await?];
    let barrier = tokio::sync::Barrier::new(2);
    async fn claim(
        plugin: &str,
        store: &dyn Storage,
        barrier: &tokio::sync::Barrier,
    ) -> Result<UpsertSummary> {
        {
            let batch: Vec<Resource> = (0..300)
                .map(|i| {
                    let mut r = resource(&format!("race{i:03}"), 0);
                    r.endpoint = plugin.into();
                    r
                })
                .collect();
            barrier.wait().await;
            let mut total = UpsertSummary::default();
            // In slices, so the two interleave.
            for chunk in batch.chunks(25) {
                let got = store
                    .upsert_resources(plugin, chunk, &policy(100.0), 1000.0)
                    .await?;
                total.added += got.added;
                total.conflicts += got.conflicts;
                total.refreshed += got.refreshed;
            }
            Ok(total)
        }
    }
    let results = tokio::join!(
        claim("red", stores[0].as_ref(), &barrier),
        claim("blue", stores[1].as_ref(), &barrier)
    );
    let results = [results.0, results.1];
    let [red, blue] = [&results[0], &results[1]].map(|r| r.as_ref().map_err(|e| anyhow!("{e:#}")));
    let (red, blue) = (red?, blue?);
    assert_eq!(red.added + blue.added, 300, "{red:?} {blue:?}");
    assert_eq!(red.conflicts + blue.conflicts, 300, "{red:?} {blue:?}");
    assert_eq!(red.refreshed + blue.refreshed, 0);
    let live = stores[0].live_resources(1000.0).await?;
    assert_eq!(live.len(), 300);
    for r in &live {
        assert_eq!(r.resource.endpoint, r.discovered_by, "{}", r.resource.id);
    }
    let red_owns = live.iter().filter(|r| r.discovered_by == "red").count();
    assert_eq!(red_owns, red.added);
    Ok(())
}

// --- MongoDB only ----------------------------------------------------------------

#[tokio::test]
async fn mongo_open_on_a_closed_port_fails_fast_naming_the_url() -> Result<()> {
    let port = free_tcp_port()?;
    let url = format!("mongodb://vigil:s3cret@127.0.0.1:{port}");
    let started = Instant::now();
    let error = match MongoStorage::open(&url, "vigil").await {
        Ok(_) => anyhow::bail!("opening {url} succeeded with nothing listening"),
        Err(e) => e.to_string(),
    };
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "took {took:?}: {error}");
    assert!(
        error.contains(&format!("mongodb://vigil:***@127.0.0.1:{port}")),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    Ok(())
}

#[tokio::test]
async fn mongo_retried_run_batch_is_not_recorded_twice() -> Result<()> {
    let store = mongo_backend("retried_runs")?().await?;
    let batch = [
        run("a", Some("r1"), 1.0),
        run("a", None, 1.0),
        run("b", Some("r1"), 1.0),
    ];
    store.record_runs(&batch).await?;
    store.record_runs(&batch).await?;
    let runs = store.recent_runs(None, 10).await?;
    assert_eq!(runs.len(), 3, "{runs:?}");
    // The retry keeps the first write's order.
    let newest_first: Vec<RunRecord> = batch.iter().rev().cloned().collect();
    assert_eq!(runs, newest_first);
    Ok(())
}

#[tokio::test]
async fn mongo_stores_share_a_server_but_not_data() -> Result<()> {
    let one = mongo_backend("isolation_one")?().await?;
    let two = mongo_backend("isolation_two")?().await?;
    one.upsert_resources("disco", &[resource("a", 0)], &policy(100.0), 1000.0)
        .await?;
    assert!(two.live_resources(0.0).await?.is_empty());
    assert_eq!(
        two.upsert_resources("disco", &[resource("a", 0)], &policy(100.0), 1000.0)
            .await?,
        summary(1, 0)
    );
    Ok(())
}
