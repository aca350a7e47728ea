//! Ownership, identity and host-owned time, attacked by real plugins in a
//! real host (issue 11): discovery plugins that take over another plugin's
//! resource, place one in another site, flood the registry or ask for
//! eternal TTLs; enrichment plugins that poison another plugin's namespace
//! or open a new one every run; and a key/value store under concurrent
//! load. The store-level rules are checked on every backend in
//! `storage_backends.rs` (SQLite, MongoDB, Redis) and `redis_coordination.rs`
//! (the Redis enrichment cache); here they are checked end to end, next
//! to a well-behaved neighbour.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use vigil_host::agent::{self, AgentSettings};
use vigil_host::capabilities::kv::{KvBackend, KvError, KvFailure};
use vigil_host::model::Resource;
use vigil_host::plugin::PluginManifest;
use vigil_host::plugin::watcher::WatchSettings;
use vigil_host::sandbox::{
    PreparedPlugin, RunContext, RunInput, RunOutcome, RunReport, Sandbox, SandboxSettings,
};
use vigil_host::site::SiteConfig;
use vigil_host::store::kv::SqliteKv;
use vigil_host::store::sqlite::SqliteStorage;
use vigil_host::store::{ResourcePolicy, RunRecord, Storage, StoredResource};
use vigil_tests::{PluginFile, artifacts};

fn now() -> f64 {
    vigil_host::pipeline::epoch_seconds(SystemTime::now())
}

/// Polls `condition` every 100 ms until it holds; panics with `what` after
/// `limit`.
fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// --- a host with hostile plugins ------------------------------------------------

struct Host {
    dir: tempfile::TempDir,
    site: Arc<SiteConfig>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    fn start() -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["plugins", "data"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::write(
            dir.path().join("site.toml"),
            "[site]\nname = \"lab\"\n[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n\
             [storage]\npath = \"state/vigil.db\"\n[outputs]\njson_lines = \"out/metrics.jsonl\"\n\
             [sandbox]\nmax_concurrent_runs = 8\n\
             [capabilities]\nallowed = [\"files\"]\nfile_roots = [\"data\"]\n\
             [resources]\nmax_ttl = \"1h\"\n\
             [enrichment]\nmax_namespaces_per_resource = 8\n",
        )
        .expect("site.toml");
        let site = Arc::new(SiteConfig::load(&dir.path().join("site.toml")).expect("site"));
        Host {
            dir,
            site,
            stop: None,
            thread: None,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn plugins(&self) -> PathBuf {
        self.path("plugins")
    }

    fn run(&mut self) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let site = self.site.clone();
        let settings = AgentSettings {
            watch: WatchSettings {
                debounce: Duration::from_millis(100),
                max_delay: Duration::from_millis(500),
                rescan_every: Duration::from_secs(1),
            },
            housekeeping: Duration::from_millis(500),
        };
        self.thread = Some(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime
                .block_on(agent::run(site, settings, async {
                    let _ = stopped.await;
                }))
                .expect("vigil run");
        }));
        self.stop = Some(stop);
    }

    fn store(&self) -> Option<SqliteStorage> {
        SqliteStorage::open_read_only(&self.site.database).ok()
    }

    fn live(&self) -> Vec<StoredResource> {
        self.store()
            .and_then(|s| vigil_tests::block_on(s.live_resources(now())).ok())
            .unwrap_or_default()
    }

    fn runs(&self, plugin: &str) -> Vec<RunRecord> {
        self.store()
            .and_then(|s| vigil_tests::block_on(s.recent_runs(Some(plugin), 100_000)).ok())
            .unwrap_or_default()
    }

    fn details(&self, plugin: &str) -> String {
        self.runs(plugin)
            .iter()
            .map(|r| format!("{}: {}\n", r.outcome, r.detail))
            .collect()
    }

    /// Every JSON line written so far.
    fn groups(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("out/metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn inventory(dir: &Path) {
    let entries: Vec<Value> = [("sw1", "127.0.0.1", "r0"), ("sw2", "127.0.0.2", "r1")]
        .iter()
        .map(|(id, endpoint, rack)| {
            serde_json::json!({
                "resource_id": id, "resource_site": "lab", "resource_class": "device",
                "resource_subclass": "switch", "resource_type": "test",
                "resource_endpoint": endpoint, "resource_metadata": {"rack": rack},
                "resource_ttl": 600,
            })
        })
        .collect();
    std::fs::write(
        dir.join("resources.json"),
        serde_json::to_vec(&entries).expect("json"),
    )
    .expect("inventory");
}

fn hostile_discovery(name: &str, behaviour: &str) -> PluginFile {
    PluginFile::new(name, "discovery", artifacts::FIXTURE_HOSTILE_DISCOVERY)
        .frequency("1")
        .set("fixture", "behaviour", behaviour)
}

fn hostile_enrichment(name: &str, behaviour: &str) -> PluginFile {
    PluginFile::new(name, "enrichment", artifacts::FIXTURE_HOSTILE_ENRICHMENT)
        .frequency("1")
        .set("main", "resource_filter", r#"resource_class = "device""#)
        .set("fixture", "behaviour", behaviour)
}

fn racks_of(groups: &[Value], resource: &str) -> Vec<String> {
    groups
        .iter()
        .filter(|g| {
            g["metrics_group_type"] == "heartbeat" && g["resource"]["resource_id"] == resource
        })
        .filter_map(|g| {
            g["dimensions"]
                .as_array()?
                .iter()
                .find(|d| d["dimension_name"] == "rack")
                .and_then(|d| d["dimension_value"].as_str().map(str::to_owned))
        })
        .collect()
}

#[test]
fn hostile_discovery_and_enrichment_cannot_take_over_poison_flood_or_outlive_their_plugin() {
    let mut host = Host::start();
    inventory(&host.path("data"));
    // The well-behaved side: an inventory, its enrichment, and a poller
    // labelling its series with the enrichment.
    PluginFile::new("inventory", "discovery", artifacts::DISCOVERY_JSON_FILE)
        .frequency("1")
        .set("capabilities", "files", "../data")
        .set("json_file", "path", "resources.json")
        .write(&host.plugins(), "inventory");
    PluginFile::new(
        "inventory_enrichment",
        "enrichment",
        artifacts::METADATA_ENRICHMENT,
    )
    .frequency("1")
    .set("main", "resource_filter", r#"resource_class = "device""#)
    .write(&host.plugins(), "inventory_enrichment");
    PluginFile::new("beat", "polling", artifacts::HEARTBEAT)
        .frequency("1")
        .set("main", "resource_filter", r#"resource_class = "device""#)
        .set("enrichment", "preload", "self:inventory")
        .set("heartbeat", "inventory_dimensions", "rack")
        .write(&host.plugins(), "beat");
    host.run();
    wait_until(
        "the poller to label sw1 with its enrichment",
        Duration::from_secs(60),
        || racks_of(&host.groups(), "sw1").iter().any(|r| r == "r0"),
    );
    let beat_runs_before = host.runs("beat").len();

    // The attackers arrive.
    hostile_discovery("takeover", "takeover")
        .set("fixture", "victim", "sw1")
        .set("fixture", "endpoint", "127.0.0.66:1161")
        .write(&host.plugins(), "takeover");
    hostile_discovery("elsewhere", "takeover")
        .set("fixture", "victim", "remote-1")
        .set("fixture", "endpoint", "127.0.0.67")
        .set("fixture", "site", "dc9")
        .set("fixture", "own", "elsewhere-own")
        .write(&host.plugins(), "elsewhere");
    hostile_discovery("flood", "flood")
        .set("fixture", "count", "1000")
        .set("sandbox", "max_resources", "2500")
        .write(&host.plugins(), "flood");
    hostile_enrichment("poison", "poison")
        .set("fixture", "namespace", "inventory")
        .write(&host.plugins(), "poison");
    hostile_enrichment("namespaces", "namespace-per-run")
        .set("fixture", "count", "4")
        .write(&host.plugins(), "namespaces");
    wait_until(
        "every attack to run several times",
        Duration::from_secs(90),
        || {
            ["takeover", "elsewhere", "flood"]
                .iter()
                .all(|p| host.runs(p).len() >= 4)
                && host.runs("poison").len() >= 4
                && host
                    .details("namespaces")
                    .contains("past the namespace bound")
        },
    );
    let at = now();
    let live = host.live();
    let find = |id: &str| live.iter().find(|r| r.resource.id == id);

    // 1. Takeover: refused, named; the owner's record is untouched, so the
    // poller (and any credential) still goes to the owner's endpoint.
    let sw1 = find("sw1").expect("sw1 live");
    assert_eq!(
        (
            sw1.discovered_by.as_str(),
            sw1.resource.endpoint.as_str(),
            sw1.resource.class.as_str()
        ),
        ("inventory", "127.0.0.1", "device")
    );
    let takeover = host.details("takeover");
    assert!(
        takeover.contains("\"sw1\" is owned by \"inventory\""),
        "{takeover}"
    );
    let polled_endpoints: Vec<String> = host
        .groups()
        .iter()
        .filter(|g| g["resource"]["resource_id"] == "sw1")
        .filter_map(|g| {
            g["resource"]["resource_endpoint"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(!polled_endpoints.is_empty());
    assert!(
        polled_endpoints.iter().all(|e| e == "127.0.0.1"),
        "{polled_endpoints:?}"
    );
    // Its own resource is stored, with the host's clock and TTL ceiling.
    let own = find("hostile-own").expect("the attacker's own resource");
    assert_eq!(own.resource.creation_plugin, "takeover");
    assert!(
        own.resource.creation_timestamp.as_seconds() <= at,
        "creation time from the host, not the plugin's 2096"
    );

    // 2. Another site: refused.
    assert!(find("remote-1").is_none());
    let elsewhere = host.details("elsewhere");
    assert!(elsewhere.contains("in site \"dc9\""), "{elsewhere}");

    // 3. Flood: exactly its budget, the rest refused and counted.
    let flooded = live.iter().filter(|r| r.discovered_by == "flood").count();
    assert_eq!(flooded, 2500);
    let flood = host.details("flood");
    assert!(flood.contains("over max_resources"), "{flood}");

    // 4. Time is the host's: no resource outlives the site's 1 h ceiling,
    // even those asking for u64::MAX.
    for r in &live {
        assert!(
            r.expires_at <= at + 3600.0 && r.resource.ttl_seconds <= 3600,
            "{} expires at {} (now {at})",
            r.resource.id,
            r.expires_at
        );
    }

    // 5. Enrichment: the namespace stays its owner's; the labels the
    // poller reads are the real ones; a namespace per run stops at the
    // bound.
    let poison = host.details("poison");
    assert!(
        poison.contains("namespace \"inventory\" is owned by \"inventory_enrichment\""),
        "{poison}"
    );
    let groups = host.groups();
    for (resource, rack) in [("sw1", "r0"), ("sw2", "r1")] {
        let racks = racks_of(&groups, resource);
        assert!(racks.iter().all(|r| r == rack), "{resource}: {racks:?}");
    }

    // The neighbour kept polling all along.
    assert!(host.runs("beat").len() > beat_runs_before + 4);

    // Deleting the discovery plugins expires what they owned at once (not
    // after their TTL of up to an hour); the inventory's stay.
    let removed = Instant::now();
    for stem in ["takeover", "flood"] {
        std::fs::remove_file(host.plugins().join(format!("{stem}.vigil-plugin"))).expect("rm");
    }
    wait_until(
        "the removed plugins' resources to expire",
        Duration::from_secs(30),
        || {
            let live = host.live();
            !live.is_empty()
                && live
                    .iter()
                    .all(|r| r.discovered_by != "flood" && r.discovered_by != "takeover")
        },
    );
    let live = host.live();
    assert!(live.iter().any(|r| r.resource.id == "sw1"));
    eprintln!(
        "removed plugins' 2,501 resources expired {:.1?} after their files went",
        removed.elapsed()
    );
}

// --- key/value under load ---------------------------------------------------------

fn kv_site(dir: &Path) -> SiteConfig {
    SiteConfig {
        cache_dir: dir.join("cache"),
        max_concurrent_runs: 64,
        ..SiteConfig::embedded()
    }
}

fn heartbeat(sandbox: &Sandbox, site: &SiteConfig, dir: &Path) -> PreparedPlugin {
    // A deadline well above the default: on a loaded 2-core test machine
    // 64 runs at once must not end by the clock (this test is about the
    // store's answers, not about speed).
    let path = PluginFile::new("heartbeat", "polling", artifacts::HEARTBEAT)
        .set("sandbox", "deadline", "120s")
        .write(dir, "heartbeat");
    let manifest =
        PluginManifest::load(&path, &site.plugin_policy()).unwrap_or_else(|e| panic!("{e}"));
    sandbox
        .prepare(Arc::new(manifest))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn poll(sandbox: &Sandbox, plugin: &PreparedPlugin, id: &str) -> RunReport {
    let resource = Resource::named(id, "127.0.0.1");
    let context = RunContext::new(SystemTime::now(), Some(resource.id.clone()));
    sandbox
        .run(plugin, RunInput::Poll(resource.into()), context)
        .await
}

/// The pre-fix store, kept here to show that the load below is real: a
/// deferred transaction that reads, then upgrades to a write, and reports
/// any SQLite error as a full store.
struct DeferredKv {
    connection: std::sync::Mutex<rusqlite::Connection>,
    false_quota: AtomicU64,
}

impl DeferredKv {
    fn open(path: &Path) -> DeferredKv {
        let connection = rusqlite::Connection::open(path).expect("open");
        connection
            .busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS plugin_kv (plugin TEXT NOT NULL, key TEXT NOT NULL,
                 value BLOB NOT NULL, PRIMARY KEY (plugin, key));",
            )
            .expect("schema");
        DeferredKv {
            connection: std::sync::Mutex::new(connection),
            false_quota: AtomicU64::new(0),
        }
    }
}

impl KvBackend for DeferredKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        let connection = self.connection.lock().expect("lock");
        Ok(connection
            .query_row(
                "SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
                rusqlite::params![plugin, key],
                |row| row.get(0),
            )
            .ok())
    }

    fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<Result<(), KvError>, KvFailure> {
        let mut connection = self.connection.lock().expect("lock");
        let result = (|| -> rusqlite::Result<()> {
            let tx = connection.transaction()?;
            let _used: i64 = tx.query_row(
                "SELECT coalesce(sum(length(value)), 0) FROM plugin_kv WHERE plugin = ?1",
                rusqlite::params![plugin],
                |row| row.get(0),
            )?;
            tx.execute(
                "INSERT INTO plugin_kv (plugin, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(plugin, key) DO UPDATE SET value = ?3",
                rusqlite::params![plugin, key, value],
            )?;
            tx.commit()
        })();
        Ok(result.map_err(|_| {
            self.false_quota.fetch_add(1, Ordering::Relaxed);
            KvError::QuotaExceeded(quota)
        }))
    }

    fn delete(&self, _plugin: &str, _key: &str) -> Result<(), KvFailure> {
        Ok(())
    }

    fn keys(&self, _plugin: &str) -> Result<Vec<String>, KvFailure> {
        Ok(Vec::new())
    }

    fn usage(&self, _plugin: &str) -> Result<u64, KvFailure> {
        Ok(0)
    }

    fn blocking(&self) -> bool {
        // As before: called on the async workers.
        false
    }
}

/// Runs `runs` heartbeat polls, `concurrency` at a time, against `kv`,
/// while a writer commits 1,000-row transactions to the same database
/// through the host's main store connection. Returns the reports and how
/// many writer transactions committed meanwhile.
fn poll_under_write_load(
    kv: Arc<dyn KvBackend>,
    database: &Path,
    dir: &Path,
    runs: usize,
    concurrency: usize,
) -> (Vec<RunReport>, u64) {
    let site = kv_site(dir);
    let sandbox =
        Arc::new(Sandbox::with_kv(&SandboxSettings::from_site(&site), kv).expect("sandbox"));
    let plugin = heartbeat(&sandbox, &site, dir);
    let store = SqliteStorage::open(database).expect("store");
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits) = (stop.clone(), commits.clone());
        std::thread::spawn(move || {
            let policy = ResourcePolicy {
                site: "local".into(),
                sites: Vec::new(),
                default_ttl: 600.0,
                max_ttl: 3600.0,
                max_resources: 1_000_000,
            };
            let batch: Vec<Resource> = (0..1000)
                .map(|i| Resource::named(&format!("load{i}"), "127.0.0.1"))
                .collect();
            let runs: Vec<RunRecord> = (0..1000)
                .map(|i| RunRecord {
                    plugin: "load".into(),
                    resource_id: None,
                    scheduled_at: f64::from(i),
                    started_at: f64::from(i),
                    finished_at: f64::from(i),
                    outcome: "ok".into(),
                    detail: String::new(),
                })
                .collect();
            vigil_tests::block_on(async {
                while !stop.load(Ordering::Relaxed) {
                    store
                        .upsert_resources("load", &batch, &policy, now())
                        .await
                        .expect("writer: resources");
                    store.record_runs(&runs).await.expect("writer: runs");
                    commits.fetch_add(2, Ordering::Relaxed);
                }
            });
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let reports = runtime.block_on(async {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let tasks: Vec<_> = (0..runs)
            .map(|i| {
                let (sandbox, plugin, semaphore) =
                    (sandbox.clone(), plugin.clone(), semaphore.clone());
                tokio::spawn(async move {
                    let _slot = semaphore.acquire_owned().await.expect("semaphore");
                    // 40 devices, each polled many times: read-modify-write
                    // of the same keys, as a real poller does.
                    poll(&sandbox, &plugin, &format!("device{}", i % 40)).await
                })
            })
            .collect();
        let mut reports = Vec::with_capacity(runs);
        for task in tasks {
            reports.push(task.await.expect("poll task"));
        }
        reports
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    (reports, commits.load(Ordering::Relaxed))
}

#[test]
fn kv_under_concurrent_load_never_reports_a_false_quota_error() {
    // The old design under the same load, for the figures (not asserted:
    // how often the race hits depends on the machine).
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("vigil.db");
        drop(SqliteStorage::open(&database).expect("store"));
        let old = Arc::new(DeferredKv::open(&database));
        let (reports, commits) = poll_under_write_load(old.clone(), &database, dir.path(), 800, 64);
        let quota = reports
            .iter()
            .filter(|r| r.outcome.to_string().contains("QuotaExceeded"))
            .count();
        eprintln!(
            "deferred transactions (before): {quota} of {} polls failed with a false quota error ({} busy writes) against {commits} writer commits",
            reports.len(),
            old.false_quota.load(Ordering::Relaxed)
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("vigil.db");
    // Created first, so the writer and the kv share one file as in `vigil
    // run`.
    drop(SqliteStorage::open(&database).expect("store"));
    let kv = Arc::new(SqliteKv::open(&database).expect("kv"));
    let started = Instant::now();
    let (reports, commits) = poll_under_write_load(kv.clone(), &database, dir.path(), 800, 64);
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.outcome.is_ok())
        .map(|r| r.outcome.to_string())
        .collect();
    eprintln!(
        "{} polls (64 at once) in {:.1?} against {commits} writer commits: {} failed",
        reports.len(),
        started.elapsed(),
        failed.len()
    );
    let quota: Vec<&String> = failed.iter().filter(|f| f.contains("Quota")).collect();
    assert!(quota.is_empty(), "false quota errors: {quota:?}");
    assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(5)]);
    // The counters are exact: 800 polls over 40 devices, 20 each.
    for device in 0..40 {
        let value = kv
            .get("heartbeat", &format!("runs/device{device}"))
            .expect("kv get")
            .expect("counter");
        let runs = u64::from_le_bytes(value.as_slice().try_into().expect("8 bytes"));
        assert!(runs <= 20, "device{device}: {runs}");
    }
    assert!(kv.usage("heartbeat").expect("usage") < 1 << 20);
}

#[test]
fn a_failing_kv_backend_ends_the_run_as_a_host_failure_naming_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("vigil.db");
    let kv = Arc::new(
        SqliteKv::open_with_busy_timeout(&database, Duration::from_millis(100)).expect("kv"),
    );
    let site = kv_site(dir.path());
    let sandbox = Sandbox::with_kv(&SandboxSettings::from_site(&site), kv).expect("sandbox");
    let plugin = heartbeat(&sandbox, &site, dir.path());
    // Another connection holds the write lock longer than the busy timeout.
    let holder = rusqlite::Connection::open(&database).expect("other connection");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("hold the write lock");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(poll(&sandbox, &plugin, "sw1"));
    drop(holder);
    match &report.outcome {
        RunOutcome::HostFailure(message) => {
            assert!(
                message.contains("key/value store: set for plugin \"heartbeat\"")
                    && message.contains("database is locked"),
                "{message}"
            );
        }
        other => panic!("expected a host failure naming the lock, got {other}"),
    }
    assert_eq!(report.outcome.label(), "host_failure");
    // Once the lock is gone, the same plugin runs fine.
    let report = runtime.block_on(poll(&sandbox, &plugin, "sw1"));
    assert!(report.outcome.is_ok(), "{}", report.outcome);
}

// --- the enrichment cache under a namespace flood ------------------------------

/// A new namespace on every run with a TTL of `u64::MAX`, over 10,000
/// resources: the cache stays at its entry bound, its bytes within
/// `max_bytes`, and the evictions are counted (before, every write stayed
/// forever).
#[test]
fn a_namespace_flood_keeps_the_enrichment_cache_bounded() {
    use vigil_host::model::{EnrichmentGroup, EnrichmentSet};
    use vigil_host::pipeline::enrichment_cache::{EnrichmentCache, EnrichmentLimits};
    let limits = EnrichmentLimits::default();
    let cache = EnrichmentCache::new(limits.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let rss_before = vigil_tests::peak_rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let (mut stored, mut evicted, mut refused, mut written_bytes) = (0, 0, 0, 0u64);
    for run in 0..300_000u64 {
        let group = EnrichmentGroup {
            namespace: format!("ns_{run}"),
            ttl_seconds: u64::MAX,
            sets: vec![EnrichmentSet {
                key: "resource".into(),
                values: vec![("rack".into(), "x".repeat(512))],
            }],
        };
        written_bytes += vigil_host::pipeline::enrichment_cache::group_bytes(&group);
        let summary = runtime.block_on(cache.put(
            "namespaces",
            &format!("device{}", run % 10_000),
            vec![group],
            1000.0 + run as f64 / 1000.0,
            None,
        ));
        stored += summary.stored;
        evicted += summary.evicted;
        refused += summary.refused();
    }
    let usage = cache.usage();
    let rss_after = vigil_tests::peak_rss_bytes().unwrap_or(0);
    eprintln!(
        "300,000 writes ({} MB offered) in {:.1?}: {stored} stored, {refused} refused, {evicted} evicted; \
         cache holds {} entries, {} MB, {} namespaces; peak RSS +{} MB",
        written_bytes >> 20,
        started.elapsed(),
        usage.entries,
        usage.bytes >> 20,
        usage.namespaces,
        rss_after.saturating_sub(rss_before) >> 20
    );
    assert_eq!(usage.entries, limits.max_entries);
    assert!(usage.bytes <= limits.max_bytes);
    assert_eq!(
        stored, 300_000,
        "30 namespaces per device fit the bound of 32"
    );
    assert_eq!(evicted, 300_000 - limits.max_entries);
    assert_eq!(
        usage.namespaces, limits.max_entries,
        "evicted namespaces are freed"
    );
    assert_eq!(usage.evicted, evicted as u64);
}
