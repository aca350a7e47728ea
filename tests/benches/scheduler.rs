//! Scheduler throughput and lateness on this machine:
//! `cargo bench -p vigil-tests --bench scheduler`.
//!
//! Runs the real agent (sandbox, store, scheduler, pipeline) in-process with
//! a trivial polling plugin and resources discovered from a JSON inventory:
//!
//! 1. 10,000 resources x 1 plugin every 60 s, for 75 s: start lateness
//!    (p50, p99) against the schedule, and the process's CPU use.
//! 2. Saturation: 16,000 resources every 1 s, for 20 s: runs per second
//!    actually completed.
//!
//! Figures come from the run history the agent records.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_host::agent::{self, AgentSettings};
use vigil_host::site::SiteConfig;
use vigil_host::store::Storage;
use vigil_host::store::sqlite::SqliteStorage;
use vigil_tests::{PluginFile, artifacts};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces).
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the full line (11, 12 here).
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * q).round() as usize]
}

struct Phase {
    resources: usize,
    interval: &'static str,
    duration: Duration,
}

fn write_site(dir: &Path, phase: &Phase) -> SiteConfig {
    for sub in ["plugins", "data"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let inventory: Vec<serde_json::Value> = (0..phase.resources)
        .map(|i| {
            serde_json::json!({
                "resource_id": format!("device-{i:05}"), "resource_site": "bench",
                "resource_class": "minimal", "resource_endpoint": format!("127.0.{}.{}", i / 250, i % 250 + 1),
            })
        })
        .collect();
    std::fs::write(
        dir.join("data/resources.json"),
        serde_json::to_vec(&inventory).expect("json"),
    )
    .expect("write");
    PluginFile::new("inventory", "discovery", artifacts::DISCOVERY_JSON_FILE)
        .frequency("1h")
        .set("capabilities", "files", "../data")
        .set("json_file", "path", "resources.json")
        .write(&dir.join("plugins"), "inventory");
    PluginFile::new("bench", "polling", artifacts::BENCH_POLLER)
        .frequency(phase.interval)
        .write(&dir.join("plugins"), "bench");
    std::fs::write(
        dir.join("site.toml"),
        "[site]\nname = \"bench\"\n[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n\
         [storage]\npath = \"state/vigil.db\"\n[sandbox]\nmax_concurrent_runs = 64\n\
         [scheduler]\nmax_runs_per_plugin = 64\n\
         [capabilities]\nallowed = [\"files\"]\nfile_roots = [\"data\"]\n",
    )
    .expect("site.toml");
    SiteConfig::load(&dir.join("site.toml")).expect("site")
}

fn run_phase(name: &str, phase: Phase) {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Arc::new(write_site(dir.path(), &phase));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let duration = phase.duration;
    runtime
        .block_on(async {
            agent::run(
                site.clone(),
                AgentSettings::default(),
                tokio::time::sleep(duration),
            )
            .await
        })
        .expect("agent");
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;

    let store = SqliteStorage::open(&site.database).expect("store");
    let runs = vigil_tests::block_on(store.recent_runs(Some("bench"), 10_000_000)).expect("runs");
    let ok = runs.iter().filter(|r| r.outcome == "ok").count();
    let mut lateness: Vec<f64> = runs
        .iter()
        .map(|r| (r.started_at - r.scheduled_at) * 1000.0)
        .collect();
    lateness.sort_by(f64::total_cmp);
    let first = runs
        .iter()
        .map(|r| r.started_at)
        .fold(f64::INFINITY, f64::min);
    let last = runs
        .iter()
        .map(|r| r.started_at)
        .fold(f64::NEG_INFINITY, f64::max);
    println!(
        "{name}: {} resources every {}, {:.0} s",
        phase.resources, phase.interval, wall
    );
    // The run history keeps the newest 200,000 runs; the status counters
    // count every run.
    let counted = vigil_tests::block_on(store.status())
        .expect("status")
        .and_then(|s| s.plugins.into_iter().find(|p| p.name == "bench"))
        .map_or(0, |p| p.runs);
    println!(
        "  runs counted {counted} ({:.0} runs/s over the whole run, start-up included)",
        counted as f64 / wall
    );
    println!(
        "  in the history window: {} runs ({} ok), {:.0} runs/s",
        runs.len(),
        ok,
        runs.len() as f64 / (last - first).max(1e-9)
    );
    println!(
        "  start lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  process CPU {:.1} s over {:.0} s = {:.1}% of one core (all of vigil: scheduler, sandbox runs, store, sinks)",
        cpu,
        wall,
        cpu / wall * 100.0
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only = std::env::var("VIGIL_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "lateness" {
        run_phase(
            "lateness",
            Phase {
                resources: 10_000,
                interval: "60s",
                duration: Duration::from_secs(75),
            },
        );
    }
    if only.is_empty() || only == "throughput" {
        run_phase(
            "throughput",
            Phase {
                resources: 16_000,
                interval: "1s",
                duration: Duration::from_secs(20),
            },
        );
    }
}
