//! Sandbox cost on this machine: `cargo bench -p vigil-tests --bench sandbox`.
//!
//! Prints, for each case, the median and p99 time per operation:
//! * loading a plugin whose component is in the precompiled cache;
//! * a fresh run (new store + instance, call, one host import, a small
//!   metrics group returned, lifted and validated);
//! * a call on a live instance with one host import;
//! * a plugin doing real work (decoding a 48-row interface table into 48
//!   metrics groups), sandboxed (fresh and warm) and compiled natively from
//!   the same source, with the sandboxed/native ratio.

#[path = "../../plugins/bench-poller/src/workload.rs"]
#[allow(dead_code)]
mod workload;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use vigil_host::model::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource,
};
use vigil_host::plugin::PluginManifest;
use vigil_host::sandbox::{RunContext, RunInput, Sandbox, SandboxSettings};
use vigil_host::site::SiteConfig;
use vigil_tests::{PluginFile, artifacts};

const INTERFACES: usize = 48;

// The same allocator as the `vigil` binary, so figures match production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Figures {
    median: Duration,
    p99: Duration,
    iterations: usize,
}

/// `VIGIL_BENCH_ONLY=<text>` times only the cases whose name contains it
/// (handy under a profiler); the others report zero.
fn selected(name: &str) -> bool {
    std::env::var("VIGIL_BENCH_ONLY").map_or(true, |only| name.contains(&only))
}

/// Times `$body` for about `$budget` after a warm-up and returns the median
/// and p99. Every iteration runs inside one `block_on`, as the host's calls
/// do (it never enters the runtime per call); `$body` may `.await`.
macro_rules! measure {
    ($runtime:expr, $name:expr, $budget:expr, $body:expr) => {{
        if !selected($name) {
            Figures {
                median: Duration::from_nanos(1),
                p99: Duration::from_nanos(1),
                iterations: 0,
            }
        } else {
            $runtime.block_on(async {
                let warm_until = Instant::now() + $budget / 10;
                while Instant::now() < warm_until {
                    $body;
                }
                let mut samples = Vec::new();
                let until = Instant::now() + $budget;
                while Instant::now() < until || samples.len() < 100 {
                    let start = Instant::now();
                    $body;
                    samples.push(start.elapsed());
                }
                samples.sort();
                Figures {
                    median: samples[samples.len() / 2],
                    p99: samples[samples.len() * 99 / 100],
                    iterations: samples.len(),
                }
            })
        }
    }};
}

fn report(name: &str, f: &Figures, target: Option<(&str, bool)>) {
    let verdict = match target {
        Some((text, met)) => format!("target {text}: {}", if met { "met" } else { "NOT met" }),
        None => String::new(),
    };
    println!(
        "{name:<44} median {:>10.2?}  p99 {:>10.2?}  ({} iterations)  {verdict}",
        f.median, f.p99, f.iterations
    );
}

/// The native twin of the bench plugin's poll: same workload, same output.
fn native_poll(resource: &Resource, table: Option<&str>) -> Vec<MetricsGroup> {
    let rendered;
    let table = match table {
        Some(table) => table,
        None => {
            rendered = workload::synthetic_table(workload::seed(&resource.id), INTERFACES);
            &rendered
        }
    };
    let rows = workload::decode(table).expect("well-formed table");
    let at = Datetime::from_system(SystemTime::now());
    rows.into_iter()
        .map(|row| {
            let metric = |name: &str, value: u64, kind: MetricType| Metric {
                name: name.to_owned(),
                value: MetricValue::Unsigned(value),
                type_: kind,
                creation_timestamp: at,
            };
            MetricsGroup {
                group_type: "interface".to_owned(),
                interval_seconds: 60,
                creation_timestamp: at,
                schema_version: "0.2".to_owned(),
                // As the SDK's builder: the id only.
                resource: Resource::named(&resource.id, "").into(),
                dimensions: vec![Dimension {
                    name: "interface_name".to_owned(),
                    value: row.name,
                }],
                metrics: vec![
                    metric("bytes_in", row.octets_in, MetricType::Counter),
                    metric("bytes_out", row.octets_out, MetricType::Counter),
                    metric("packets_in", row.packets_in, MetricType::Counter),
                    metric("packets_out", row.packets_out, MetricType::Counter),
                    metric("error_packets_in", row.errors, MetricType::Counter),
                    metric(
                        "utilisation_permille",
                        row.utilisation_permille,
                        MetricType::Gauge,
                    ),
                ],
            }
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; a plain `cargo test` run passes nothing
    // and should not spend time here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let budget = Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let site = SiteConfig {
        cache_dir: dir.path().join("cache"),
        ..SiteConfig::embedded()
    };
    let sandbox = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let path =
        PluginFile::new("bench", "polling", artifacts::BENCH_POLLER).write(dir.path(), "bench");
    let manifest = Arc::new(PluginManifest::load(&path, &site.plugin_policy()).expect("manifest"));
    let plugin = sandbox
        .prepare(manifest.clone())
        .expect("prepare (compiles and caches)");
    println!("allocator: {:?}", sandbox.allocator());

    let load = measure!(runtime, "load from precompiled cache", budget, {
        black_box(sandbox.prepare(manifest.clone()).expect("prepare"));
    });
    report(
        "load from precompiled cache",
        &load,
        Some(("< 2 ms", load.median < Duration::from_millis(2))),
    );

    let mut minimal = Resource::named("bench-minimal", "127.0.0.1");
    minimal.class = "minimal".to_owned();
    let context = || RunContext::new(SystemTime::now(), None);
    let fresh = measure!(
        runtime,
        "fresh instance + call + 1 import + small group",
        budget,
        {
            let report = sandbox
                .run(&plugin, RunInput::Poll(minimal.clone().into()), context())
                .await;
            assert!(report.outcome.is_ok(), "{}", report.outcome);
        }
    );
    report(
        "fresh instance + call + 1 import + small group",
        &fresh,
        Some(("< 40 us", fresh.median < Duration::from_micros(40))),
    );

    let mut live = runtime
        .block_on(sandbox.instantiate_polling(&plugin))
        .expect("live instance");
    let warm = measure!(runtime, "warm call + 1 import + small group", budget, {
        let outcome = live.poll(&minimal).await;
        assert!(outcome.is_ok(), "{outcome}");
    });
    report(
        "warm call + 1 import + small group",
        &warm,
        Some(("< 1.5 us", warm.median < Duration::from_nanos(1500))),
    );

    // Real work: decode a device's 48-row interface table (handed in, as an
    // SNMP response would be) into 48 metrics groups.
    let mut device = Resource::named("bench-device", "127.0.0.1");
    let table = workload::synthetic_table(workload::seed(&device.id), INTERFACES);
    device.metadata.push(("table".to_owned(), table.clone()));
    let native = measure!(runtime, "decode 48 interfaces: native", budget, {
        black_box(native_poll(black_box(&device), Some(&table)));
    });
    report("decode 48 interfaces: native", &native, None);
    let fresh_work = measure!(runtime, "decode 48 interfaces: sandboxed, fresh", budget, {
        let report = sandbox
            .run(&plugin, RunInput::Poll(device.clone().into()), context())
            .await;
        assert!(report.outcome.is_ok(), "{}", report.outcome);
    });
    report("decode 48 interfaces: sandboxed, fresh", &fresh_work, None);
    let warm_work = measure!(runtime, "decode 48 interfaces: sandboxed, warm", budget, {
        let outcome = live.poll(&device).await;
        assert!(outcome.is_ok(), "{outcome}");
    });
    report("decode 48 interfaces: sandboxed, warm", &warm_work, None);

    // Integer formatting is wasm's weak spot: without a 64x64->128 multiply
    // every division by 10 is a real `div`.
    let generating = Resource::named("bench-device", "127.0.0.1");
    let native_format = measure!(runtime, "render + decode 48 interfaces: native", budget, {
        black_box(native_poll(black_box(&generating), None));
    });
    report(
        "render + decode 48 interfaces: native",
        &native_format,
        None,
    );
    let warm_format = measure!(
        runtime,
        "render + decode 48 interfaces: sandboxed, warm",
        budget,
        {
            let outcome = live.poll(&generating).await;
            assert!(outcome.is_ok(), "{outcome}");
        }
    );
    report(
        "render + decode 48 interfaces: sandboxed, warm",
        &warm_format,
        None,
    );

    let ratio = |f: &Figures, base: &Figures| f.median.as_secs_f64() / base.median.as_secs_f64();
    println!(
        "sandboxed/native, decode: fresh {:.2}x, warm {:.2}x (target < 1.5x: {}); render + decode, warm: {:.2}x",
        ratio(&fresh_work, &native),
        ratio(&warm_work, &native),
        if ratio(&fresh_work, &native) < 1.5 {
            "met"
        } else {
            "NOT met"
        },
        ratio(&warm_format, &native_format),
    );
}
