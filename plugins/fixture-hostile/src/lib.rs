//! TEST FIXTURE: a deliberately malicious polling plugin.
//!
//! `[fixture] behaviour` in its ini selects what it does; the hostile-plugin
//! suite (`tests/tests/hostile.rs`) loads it once per behaviour next to a
//! well-behaved plugin and checks that each attack ends in its specific
//! outcome while the host and the other plugin carry on.
//!
//! Attacks that probe the sandbox (files, sockets, environment) report what
//! they observed in a `probe` metrics group instead of failing, so the test
//! can assert on exactly what the plugin could see.

mod amplify;

use std::hint::black_box;
use vigil_sdk::prelude::*;

struct Hostile;

impl Polling for Hostile {
    fn poll(resource: Resource) -> Result<Vec<MetricsGroup>, PluginError> {
        let behaviour = config::text("fixture", "behaviour")
            .ok_or_else(|| PluginError::configuration("[fixture] behaviour is required"))?;
        match behaviour.as_str() {
            "infinite-loop" => infinite_loop(),
            "allocate-1gib" => allocate_1gib(&resource),
            "recursion" => Ok(vec![probe(
                &resource,
                "depth",
                &recurse(black_box(0)).to_string(),
            )]),
            "output-100mb" => Ok(output_100mb(&resource)),
            "log-flood" => log_flood(),
            "panic" => panic!("hostile fixture panicked on purpose"),
            "read-passwd" => Ok(vec![probe(&resource, "result", &read_passwd())]),
            "read-granted" => Ok(vec![read_granted(&resource)]),
            "tcp-connect" => Ok(vec![probe(&resource, "result", &tcp_connect())]),
            "environment" => Ok(vec![environment(&resource)]),
            "kv-exhaust" => kv_exhaust(&resource),
            "invalid-utf8" => Ok(vec![invalid_utf8(&resource)]),
            "bad-metric-name" => Ok(vec![bad_metric_name(&resource)]),
            "many-groups" => Ok(amplify::many_groups(&resource)),
            "aliased-strings" => Ok(amplify::aliased_strings(&resource)),
            "duplicate-dimensions" => Ok(amplify::duplicate_dimensions(&resource)),
            "label-bomb" => Ok(amplify::label_bomb(&resource)),
            "reserved-group" => Ok(amplify::reserved_group(&resource)),
            "sleep-forever" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Vec::new())
            }
            other => Err(PluginError::configuration(format!(
                "unknown behaviour {other:?}"
            ))),
        }
    }
}

fn probe(resource: &Resource, name: &str, observed: &str) -> MetricsGroup {
    MetricsGroupBuilder::new("probe", 60, resource, clock::now())
        .dimension(name, observed)
        .gauge("done", 1u64)
        .build()
}

fn infinite_loop() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

fn allocate_1gib(resource: &Resource) -> Result<Vec<MetricsGroup>, PluginError> {
    let mut block = vec![0u8; 1 << 30];
    // Touch every page so a lazy allocator cannot cheat.
    for page in block.chunks_mut(65536) {
        page[0] = 1;
    }
    let sum: u64 = block.iter().step_by(65536).map(|b| u64::from(*b)).sum();
    Ok(vec![probe(resource, "allocated_pages", &sum.to_string())])
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    // Locals stay in wasm locals (no address taken), so this exhausts the
    // engine's native wasm stack rather than the guest's shadow stack;
    // `black_box` keeps LLVM from turning the recursion into a loop.
    black_box(recurse(black_box(depth + 1))).wrapping_add(depth)
}

fn output_100mb(resource: &Resource) -> Vec<MetricsGroup> {
    // 100 groups, each with a 1 MiB dimension value: ~100 MB once lifted.
    let at = clock::now();
    let value = "x".repeat(1 << 20);
    (0..100)
        .map(|_| {
            MetricsGroupBuilder::new("flood", 60, resource, at)
                .dimension("payload", value.clone())
                .gauge("size", value.len() as u64)
                .build()
        })
        .collect()
}

fn log_flood() -> Result<Vec<MetricsGroup>, PluginError> {
    let line = "flood ".repeat(200);
    loop {
        log::emit(log::Level::Error, &line, &[("attack", "log-flood")]);
    }
}

fn read_passwd() -> String {
    match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => format!("read {} bytes", text.len()),
        Err(e) => format!("denied: {e}"),
    }
}

/// With a `files` grant: reads `/data/probe.txt` and tries to write next to it.
fn read_granted(resource: &Resource) -> MetricsGroup {
    let read =
        std::fs::read_to_string("/data/probe.txt").unwrap_or_else(|e| format!("denied: {e}"));
    let write = match std::fs::write("/data/planted.txt", b"owned") {
        Ok(()) => "written".to_owned(),
        Err(e) => format!("denied: {e}"),
    };
    let escape = std::fs::read_to_string("/data/../etc/passwd")
        .map(|t| format!("read {} bytes", t.len()))
        .unwrap_or_else(|e| format!("denied: {e}"));
    MetricsGroupBuilder::new("probe", 60, resource, clock::now())
        .dimension("read", read.trim().to_owned())
        .dimension("write", write)
        .dimension("escape", escape)
        .gauge("done", 1u64)
        .build()
}

fn tcp_connect() -> String {
    // Redis listens here on the test machines: a reachable target if the
    // sandbox leaked sockets.
    match std::net::TcpStream::connect("127.0.0.1:6379") {
        Ok(_) => "connected".to_owned(),
        Err(e) => format!("denied: {e}"),
    }
}

fn environment(resource: &Resource) -> MetricsGroup {
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let args: Vec<String> = std::env::args().collect();
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("denied: {e}"));
    MetricsGroupBuilder::new("probe", 60, resource, clock::now())
        .dimension("vars", vars.join(","))
        .dimension("args", args.join(","))
        .dimension("cwd", cwd)
        .gauge("var_count", vars.len() as u64)
        .gauge("arg_count", args.len() as u64)
        .build()
}

fn kv_exhaust(resource: &Resource) -> Result<Vec<MetricsGroup>, PluginError> {
    let value = vec![0xAB; 1024];
    for index in 0u64.. {
        if let Err(e) = kv::set(&format!("fill/{index}"), &value) {
            let (used, quota) = kv::usage();
            return Ok(vec![
                MetricsGroupBuilder::new("probe", 60, resource, clock::now())
                    .dimension("stopped_by", e.to_string())
                    .gauge("writes", index)
                    .gauge("used", used)
                    .gauge("quota", quota)
                    .build(),
            ]);
        }
    }
    Err(PluginError::bug("unreachable: the store never filled"))
}

#[allow(unsafe_code)]
fn invalid_utf8(resource: &Resource) -> MetricsGroup {
    // SAFETY: not safe at all, on purpose: the host must reject the bytes
    // when it lifts the string, whatever the guest claims.
    let broken = unsafe { String::from_utf8_unchecked(vec![b'o', b'k', 0xFF, 0xFE, 0x80]) };
    probe(resource, "label", &broken)
}

fn bad_metric_name(resource: &Resource) -> MetricsGroup {
    MetricsGroupBuilder::new("probe", 60, resource, clock::now())
        .gauge("bits in\"; DROP TABLE metrics; --", 1u64)
        .build()
}

vigil_sdk::export!(polling => Hostile);
