//! Loading that cannot be stalled or tricked (issue 11, principle 7): each
//! attack on plugin loading next to a well-behaved plugin that must keep
//! loading.
//!
//! - a capability imported at a semver-compatible version (`snmp@0.1.1`);
//! - a module path that is (or turns into) a symlink to `/dev/zero`, a FIFO,
//!   a directory, or a file over the size limit; the same for the ini file;
//! - compile-time bombs (one huge function, too much code, too many
//!   functions), refused before compiling;
//! - a plugin that takes long to compile, which must not hold up cached
//!   plugins;
//! - a module replaced every 100 ms, which must not stop rescans;
//! - 1,100 plugin files, which must not hold a file descriptor each;
//! - the precompiled cache, pruned of what no plugin uses.
//!
//! The tests take one lock so that they run one at a time: descriptor
//! counts are for the whole process.
//!
//! `measure_compile_cost` (ignored) prints compile times per shape and size
//! of code, the figures behind the `[plugins]` defaults:
//! `cargo test -p vigil-tests --test suite hostile_loading::measure_compile_cost -- --ignored --nocapture`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use vigil_host::model::Resource;
use vigil_host::plugin::watcher::{self, WatchSettings};
use vigil_host::plugin::{PluginManifest, PluginRegistry, RegistryEvent};
use vigil_host::sandbox::cache::{LoadLimits, check_compile_cost};
use vigil_host::sandbox::{RunContext, RunInput, RunOutcome, Sandbox, SandboxSettings};
use vigil_host::site::SiteConfig;
use vigil_tests::{PluginFile, artifacts};

/// One test at a time (a failed test releases it without poisoning).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.blocking_lock()
}

fn site_in(dir: &Path) -> SiteConfig {
    SiteConfig {
        cache_dir: dir.join("cache"),
        ..SiteConfig::embedded()
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn registry(site: SiteConfig, dir: &Path) -> PluginRegistry {
    let site = Arc::new(site);
    let sandbox = Arc::new(Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox"));
    PluginRegistry::new(sandbox, site.plugin_policy(), vec![dir.to_owned()])
}

fn failure_of(registry: &PluginRegistry, file: &Path) -> Option<String> {
    registry
        .failures()
        .into_iter()
        .find(|(path, _)| path == file)
        .map(|(_, error)| error)
}

/// Hand-written WebAssembly encoding, enough to build compile-time bombs
/// and to splice them into real plugin components.
mod wasm {
    pub fn leb(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    pub fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    /// A core module of functions `(i32) -> i32` with these bodies (each
    /// a complete body: locals, instructions, `end`).
    pub fn module(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        section(1, &[1, 0x60, 1, 0x7f, 1, 0x7f], &mut module);
        let mut funcs = Vec::new();
        leb(bodies.len() as u64, &mut funcs);
        funcs.extend(std::iter::repeat_n(0u8, bodies.len()));
        section(3, &funcs, &mut module);
        let mut code = Vec::new();
        leb(bodies.len() as u64, &mut code);
        for body in bodies {
            leb(body.len() as u64, &mut code);
            code.extend_from_slice(body);
        }
        section(10, &code, &mut module);
        module
    }

    /// A component holding just `module`.
    pub fn component(module: &[u8]) -> Vec<u8> {
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        section(1, module, &mut component);
        component
    }

    /// `component` with `module` added as one more (unused) core module.
    pub fn with_module(component: &[u8], module: &[u8]) -> Vec<u8> {
        let mut out = component.to_vec();
        section(1, module, &mut out);
        out
    }

    /// `component` with a custom section: other bytes, same behaviour.
    pub fn with_custom(component: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        leb(name.len() as u64, &mut body);
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(data);
        let mut out = component.to_vec();
        section(0, &body, &mut out);
        out
    }

    fn finish(mut body: Vec<u8>) -> Vec<u8> {
        body.extend_from_slice(&[0x20, 0x00, 0x0b]); // local.get 0; end
        body
    }

    /// Straight-line arithmetic on the parameter.
    pub fn straight(size: usize) -> Vec<u8> {
        let mut body = vec![0x00];
        while body.len() + 10 < size {
            // local.get 0; i32.const 7; i32.add; local.set 0
            body.extend_from_slice(&[0x20, 0x00, 0x41, 0x07, 0x6a, 0x21, 0x00]);
        }
        finish(body)
    }

    /// Many locals, mixed pseudo-randomly.
    pub fn locals(size: usize) -> Vec<u8> {
        const LOCALS: u64 = 2000;
        let mut body = vec![0x01];
        leb(LOCALS, &mut body);
        body.push(0x7f);
        let mut seed = 0x2545_f491u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % (LOCALS + 1)
        };
        while body.len() + 20 < size {
            body.push(0x20);
            leb(next(), &mut body);
            body.push(0x20);
            leb(next(), &mut body);
            body.push(0x6a);
            body.push(0x21);
            leb(next(), &mut body);
        }
        finish(body)
    }

    /// Nested blocks, each left through a `br_table` to random outer
    /// blocks: a dense control-flow graph.
    pub fn branches(size: usize) -> Vec<u8> {
        const DEPTH: u64 = 500;
        const TARGETS: u64 = 64;
        let mut body = vec![0x00];
        let mut seed = 0x9e37_79b9u64;
        let mut next = |bound: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % bound
        };
        while body.len() + (DEPTH as usize) * (2 * TARGETS as usize + 12) + 10 < size {
            body.extend(std::iter::repeat_n([0x02u8, 0x40], DEPTH as usize).flatten());
            for depth in (1..=DEPTH).rev() {
                body.extend_from_slice(&[0x20, 0x00, 0x0e]);
                leb(TARGETS, &mut body);
                for _ in 0..=TARGETS {
                    leb(next(depth), &mut body);
                }
                body.push(0x0b);
            }
        }
        finish(body)
    }

    /// Thousands of values live on the operand stack at once.
    pub fn stack(size: usize) -> Vec<u8> {
        const WIDTH: usize = 4000;
        let mut body = vec![0x00];
        while body.len() + 3 * WIDTH + 10 < size {
            body.extend(std::iter::repeat_n([0x20u8, 0x00], WIDTH).flatten());
            body.extend(std::iter::repeat_n(0x6au8, WIDTH - 1));
            body.extend_from_slice(&[0x21, 0x00]);
        }
        finish(body)
    }

    pub fn tiny() -> Vec<u8> {
        finish(vec![0x00])
    }
}

type Shape = (&'static str, fn(usize) -> Vec<u8>);
const SHAPES: [Shape; 4] = [
    ("straight", wasm::straight),
    ("locals", wasm::locals),
    ("branches", wasm::branches),
    ("stack", wasm::stack),
];

fn compile_seconds(sandbox: &Sandbox, component: &[u8]) -> f64 {
    let started = Instant::now();
    sandbox
        .engine()
        .precompile_component(component)
        .expect("compiles");
    started.elapsed().as_secs_f64()
}

/// Compile time by shape and size: what the `[plugins]` defaults rest on.
#[test]
#[ignore = "a measurement, minutes long; run with --ignored --nocapture"]
fn measure_compile_cost() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::new(&SandboxSettings::from_site(&site_in(dir.path()))).expect("sandbox");
    let limits = LoadLimits {
        max_module_size: u64::MAX,
        max_code_size: u64::MAX,
        max_function_size: u64::MAX,
        max_functions: u64::MAX,
    };

    println!("bundled plugins:");
    for path in [
        artifacts::HEARTBEAT,
        artifacts::FIXTURE_HOSTILE,
        artifacts::DISCOVERY_JSON_FILE,
        artifacts::SNMP_DEVICE_HEALTH,
        artifacts::SNMP_INTERFACE_ENRICHMENT,
        artifacts::SNMP_INTERFACE_POLLING,
    ] {
        // This workspace's build, whichever checkout last ran build.rs
        // for this profile.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm-plugins/wasm32-wasip2/release")
            .join(Path::new(path).file_name().expect("file name"));
        let bytes = std::fs::read(&path).expect("artifact");
        let stats = check_compile_cost(&bytes, &limits).expect("a component");
        let started = Instant::now();
        let scan = check_compile_cost(&bytes, &limits);
        let scan_time = started.elapsed();
        assert!(scan.is_ok());
        println!(
            "  {:<32} {:>7} B, {:>5} functions, {:>7} B code, largest {:>6} B: compile {:.2} s (scan {:?})",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes.len(),
            stats.functions,
            stats.code_bytes,
            stats.largest_function,
            compile_seconds(&sandbox, &bytes),
            scan_time
        );
    }

    println!("one function of each shape:");
    for (name, shape) in SHAPES {
        for kib in [64usize, 256, 512, 1024] {
            let component = wasm::component(&wasm::module(&[shape(kib << 10)]));
            println!(
                "  {name:<9} {kib:>5} KiB: {:>6.2} s",
                compile_seconds(&sandbox, &component)
            );
        }
    }

    println!("many tiny functions:");
    for count in [10_000usize, 20_000] {
        let component = wasm::component(&wasm::module(&vec![wasm::tiny(); count]));
        println!(
            "  {count:>7}: {:>6.2} s",
            compile_seconds(&sandbox, &component)
        );
    }

    let big = wasm::component(&wasm::module(&vec![wasm::straight(512 << 10); 63]));
    let started = Instant::now();
    let stats = check_compile_cost(&big, &limits).expect("scans");
    println!(
        "the cost check on a {:.1} MiB component ({} functions): {:?}",
        big.len() as f64 / f64::from(1 << 20),
        stats.functions,
        started.elapsed()
    );

    let defaults = LoadLimits::default();
    let per_function = defaults.max_function_size as usize - 16;
    let count = (defaults.max_code_size as usize - 64) / (per_function + 4);
    println!(
        "the largest that passes the defaults ({count} functions of {} KiB):",
        per_function >> 10
    );
    for (name, shape) in SHAPES {
        let body = shape(per_function);
        let component = wasm::component(&wasm::module(&vec![body; count]));
        check_compile_cost(&component, &defaults).expect("within the defaults");
        println!(
            "  {name:<9} {:>5.1} MiB: {:>6.2} s",
            component.len() as f64 / f64::from(1 << 20),
            compile_seconds(&sandbox, &component)
        );
    }
}

/// Attack 1: `snmp@0.1.1` is served by the host's `snmp@0.1.0` (semver),
/// so comparing whole import strings let it through to run time.
#[test]
fn a_capability_imported_at_another_version_is_refused_at_load() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let site_file = dir.path().join("site.toml");
    std::fs::write(
        &site_file,
        "[site]\nname = \"lab\"\n[plugins]\ncache_dir = \"cache\"\n[capabilities]\nallowed = [\"snmp\"]\n",
    )
    .expect("site");
    let site = SiteConfig::load(&site_file).expect("site config");
    let sandbox = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");

    let original = std::fs::read(artifacts::SNMP_DEVICE_HEALTH).expect("artifact");
    let (from, to) = (b"vigil:plugin/snmp@0.1.0", b"vigil:plugin/snmp@0.1.1");
    let mut patched = original.clone();
    let mut replaced = 0;
    let mut at = 0;
    while let Some(found) = patched[at..].windows(from.len()).position(|w| w == from) {
        patched[at + found..at + found + to.len()].copy_from_slice(to);
        replaced += 1;
        at += found + to.len();
    }
    assert!(replaced > 0, "the plugin imports snmp@0.1.0");
    let module = dir.path().join("sneaky.wasm");
    std::fs::write(&module, &patched).expect("write");

    // With the grant, the host's linker serves 0.1.1 with 0.1.0: the attack
    // is real, and the patched component is otherwise fine.
    let granted = PluginFile::new("granted", "polling", &module)
        .set("capabilities", "snmp", "yes")
        .write(dir.path(), "granted");
    let prepared = sandbox
        .prepare(Arc::new(
            PluginManifest::load(&granted, &site.plugin_policy()).expect("manifest"),
        ))
        .expect("a granted plugin loads");
    assert!(
        prepared
            .imports
            .iter()
            .any(|i| i == "vigil:plugin/snmp@0.1.1"),
        "{:?}",
        prepared.imports
    );

    // Without it: refused at load, naming the import and the fix.
    for (stem, wasm) in [
        ("sneaky", &module),
        ("plain", &PathBuf::from(artifacts::SNMP_DEVICE_HEALTH)),
    ] {
        let path = PluginFile::new(stem, "polling", wasm).write(dir.path(), stem);
        let manifest = PluginManifest::load(&path, &site.plugin_policy()).expect("manifest");
        let error = format!(
            "{:#}",
            sandbox
                .prepare(Arc::new(manifest))
                .err()
                .expect("refused at load")
        );
        let version = if stem == "sneaky" { "0.1.1" } else { "0.1.0" };
        assert!(
            error.contains(&format!(
                "the component imports vigil:plugin/snmp@{version}, but {} does not ask for it: add `snmp = yes` under [capabilities]",
                path.display()
            )),
            "{error}"
        );
    }
}

/// Attack 2: whatever the path points to when it is opened, only a regular
/// file within its limit is read.
#[test]
fn only_regular_files_within_their_limits_are_read() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    let site = SiteConfig {
        loading: LoadLimits {
            max_module_size: 100 << 10,
            ..LoadLimits::default()
        },
        ..site_in(dir.path())
    };
    PluginFile::new("neighbour", "polling", artifacts::HEARTBEAT).write(&plugins, "neighbour");

    let zero = plugins.join("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let zero_ini = PluginFile::new("zero", "polling", &zero).write(&plugins, "zero");

    let fifo = plugins.join("fifo.wasm");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let fifo_ini = PluginFile::new("fifo", "polling", &fifo).write(&plugins, "fifo");

    let big = plugins.join("big.wasm");
    std::fs::write(&big, vec![0u8; 200 << 10]).expect("write");
    let big_ini = PluginFile::new("big", "polling", &big).write(&plugins, "big");

    let ini_zero = plugins.join("ini-zero.vigil-plugin");
    std::os::unix::fs::symlink("/dev/zero", &ini_zero).expect("symlink");
    let ini_big = plugins.join("ini-big.vigil-plugin");
    let mut text = PluginFile::new("ini-big", "polling", artifacts::HEARTBEAT).render();
    text.push_str(&format!("\n[padding]\nx = {}\n", "x".repeat(2 << 20)));
    std::fs::write(&ini_big, text).expect("write");

    // A FIFO would block an ordinary open until a writer came: run the
    // scan on its own thread so that a hang fails the test.
    let registry = Arc::new(registry(site, &plugins));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let scanner = registry.clone();
    std::thread::spawn(move || {
        scanner.rescan();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the scan finished (no open blocked on the FIFO)");

    let names: Vec<String> = registry
        .plugins()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    assert_eq!(names, vec!["neighbour"]);
    let expect = |file: &Path, wanted: &str| {
        let error =
            failure_of(&registry, file).unwrap_or_else(|| panic!("{} failed", file.display()));
        assert!(error.contains(wanted), "{}: {error}", file.display());
    };
    // The ini's own check of the module path refuses these first (the
    // race test below gets past it).
    expect(&zero_ini, &format!("no component at {}", zero.display()));
    expect(&fifo_ini, &format!("no component at {}", fifo.display()));
    expect(
        &big_ini,
        &format!(
            "{}: 204800 bytes is over plugins.max_module_size = 100 KiB",
            big.display()
        ),
    );
    // Not a regular file: not a plugin file at all for the scan.
    assert!(failure_of(&registry, &ini_zero).is_none());
    expect(&ini_big, &format!("{}: 2097", ini_big.display()));
    expect(&ini_big, "bytes is over the plugin file size limit = 1 MiB");
    // The CLI path (`vigil plugins check FILE`) reads the same way.
    let error = PluginManifest::load(&ini_zero, &site_in(dir.path()).plugin_policy())
        .expect_err("refused")
        .to_string();
    assert_eq!(
        error,
        format!(
            "{}: is a character device, not a regular file",
            ini_zero.display()
        )
    );
}

/// Attack 2, the race: the module path flips between the real module, a
/// symlink to `/dev/zero` and a FIFO while scans run. Every scan either
/// loads the real module or refuses the impostor; none reads it, none
/// blocks on the FIFO.
#[test]
fn a_module_swapped_for_a_device_between_scans_is_never_read() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    let real = dir.path().join("real.wasm");
    std::fs::copy(artifacts::HEARTBEAT, &real).expect("copy");
    let module = plugins.join("swapped.wasm");
    std::os::unix::fs::symlink(&real, &module).expect("symlink");
    let ini = PluginFile::new("swapped", "polling", &module).write(&plugins, "swapped");
    PluginFile::new("neighbour", "polling", artifacts::HEARTBEAT).write(&plugins, "neighbour");
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let registry = Arc::new(registry(site_in(dir.path()), &plugins));
    registry.rescan();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let (module, real, dir) = (module.clone(), real.clone(), dir.path().to_owned());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let target: &Path = match flips % 4 {
                    0 => Path::new("/dev/zero"),
                    2 => &fifo,
                    _ => &real,
                };
                let next = dir.join("next-link");
                let _ = std::fs::remove_file(&next);
                std::os::unix::fs::symlink(target, &next).expect("symlink");
                std::fs::rename(&next, &module).expect("swap");
                flips += 1;
            }
            flips
        })
    };
    // On its own thread, so that a scan blocked on the FIFO fails the test.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let scanner = registry.clone();
    let scans = std::thread::spawn(move || {
        // (loaded, refused by the ini's path check, refused on the handle)
        let mut counts = (0u32, 0u32, 0u32);
        for _ in 0..300 {
            scanner.rescan();
            match failure_of(&scanner, &ini) {
                None => {
                    assert!(scanner.get("swapped").is_some());
                    counts.0 += 1;
                }
                Some(error) if error.contains("no component at") => counts.1 += 1,
                Some(error) => {
                    assert!(
                        error.contains("is a character device, not a regular file")
                            || error.contains("is a FIFO, not a regular file")
                            || error.contains("changed while being loaded"),
                        "{error}"
                    );
                    counts.2 += 1;
                }
            }
            assert!(scanner.get("neighbour").is_some());
        }
        let _ = done_tx.send(());
        counts
    });
    let finished = done_rx.recv_timeout(Duration::from_secs(300));
    stop.store(true, Ordering::Relaxed);
    assert!(finished.is_ok(), "300 scans finished (none blocked)");
    let (loaded, by_path, by_handle) = scans.join().expect("scans");
    let flips = swapper.join().expect("swapper");
    println!(
        "{flips} swaps over 300 scans: {loaded} loaded the module, {by_path} refused by the path check, {by_handle} by the opened handle"
    );
    assert!(loaded > 0 && by_path + by_handle > 0);
}

/// Attack 3: compile-time bombs are refused before any compiling, with an
/// error naming the file, the plugin and the limit; the neighbour loads.
#[test]
fn compile_time_bombs_are_refused_before_compiling() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    let heartbeat = std::fs::read(artifacts::HEARTBEAT).expect("artifact");
    let defaults = LoadLimits::default();

    let bombs: [(&str, Vec<u8>, String); 3] = [
        (
            "one-huge-function",
            wasm::module(&[wasm::straight(3 << 20)]),
            "body, over plugins.max_function_size = 256 KiB".to_owned(),
        ),
        (
            "too-much-code",
            wasm::module(&vec![wasm::locals(240 << 10); 20]),
            "of function bodies, over plugins.max_code_size = 4 MiB".to_owned(),
        ),
        (
            "too-many-functions",
            wasm::module(&vec![wasm::tiny(); 30_000]),
            "functions, over plugins.max_functions = 20000".to_owned(),
        ),
    ];
    let mut files = Vec::new();
    for (name, module, _) in &bombs {
        let path = plugins.join(format!("{name}.wasm"));
        std::fs::write(&path, wasm::with_module(&heartbeat, module)).expect("write");
        files.push((
            PluginFile::new(name, "polling", &path).write(&plugins, name),
            path,
        ));
    }
    PluginFile::new("neighbour", "polling", artifacts::HEARTBEAT).write(&plugins, "neighbour");

    let registry = registry(site_in(dir.path()), &plugins);
    let events = registry.rescan();
    assert!(registry.get("neighbour").is_some());
    assert_eq!(registry.plugins().len(), 1);
    for ((name, _, wanted), (ini, module)) in bombs.iter().zip(&files) {
        let error = failure_of(&registry, ini).expect("refused");
        assert!(
            error.starts_with(&format!(
                "{}: {}: too costly to compile: ",
                ini.display(),
                module.display()
            )),
            "{error}"
        );
        assert!(error.contains(wanted), "{error}");
        assert!(error.ends_with(&format!("(plugin \"{name}\")")), "{error}");
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, RegistryEvent::Failed { .. }))
            .count(),
        3
    );
    // Nothing was compiled for them: the only cache entry is the neighbour's.
    let entries = std::fs::read_dir(dir.path().join("cache"))
        .expect("cache")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .count();
    assert_eq!(entries, 1);
    // And a bomb is refused once, not re-examined on every scan.
    assert!(registry.rescan().is_empty());
    assert_eq!(registry.failures().len(), 3);
    // The same bombs pass `vigil plugins check`'s path no more easily.
    let manifest =
        PluginManifest::load(&files[0].0, &site_in(dir.path()).plugin_policy()).expect("manifest");
    let error = format!(
        "{:#}",
        registry
            .sandbox()
            .prepare(Arc::new(manifest))
            .err()
            .expect("refused")
    );
    assert!(error.contains("over plugins.max_function_size"), "{error}");
    assert!(defaults.max_function_size < 3 << 20);
}

/// Attack 3: a plugin that takes seconds to compile (within the limits)
/// does not hold up startup: the scan loads cached plugins and returns;
/// the slow one loads in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_compile_does_not_hold_up_cached_plugins() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    // Warm the cache with the neighbour, as a previous run would have.
    PluginFile::new("neighbour", "polling", artifacts::HEARTBEAT).write(&plugins, "neighbour");
    {
        let warm = registry(site_in(dir.path()), &plugins);
        warm.rescan();
        assert_eq!(warm.plugins().len(), 1);
    }

    let heartbeat = std::fs::read(artifacts::HEARTBEAT).expect("artifact");
    let slow = plugins.join("slow.wasm");
    let body = wasm::straight(250 << 10);
    std::fs::write(
        &slow,
        wasm::with_module(&heartbeat, &wasm::module(&vec![body; 2])),
    )
    .expect("write");
    PluginFile::new("slow", "polling", &slow).write(&plugins, "slow");

    let registry = Arc::new(registry(site_in(dir.path()), &plugins));
    let mut events = registry.subscribe();
    let scanner = registry.clone();
    let scan = tokio::task::spawn_blocking(move || scanner.start_rescan())
        .await
        .expect("scan");
    // The scan loaded the cached neighbour and only queued the slow one.
    assert_eq!(
        scan,
        vec![RegistryEvent::Loaded {
            name: "neighbour".into(),
            path: plugins.join("neighbour.vigil-plugin")
        }]
    );
    assert!(registry.get("neighbour").is_some());
    let started = Instant::now();
    let loaded = tokio::time::timeout(Duration::from_secs(300), async {
        loop {
            match events.recv().await {
                Ok(RegistryEvent::Loaded { name, .. }) if name == "slow" => return,
                Ok(_) => continue,
                Err(e) => panic!("registry events: {e}"),
            }
        }
    })
    .await;
    assert!(loaded.is_ok(), "the slow plugin loaded in the background");
    println!(
        "the slow plugin (2 x 250 KiB functions) loaded {:.1} s after the scan returned",
        started.elapsed().as_secs_f64()
    );
    assert!(registry.compiling().is_empty());
    assert_eq!(registry.plugins().len(), 2);
}

/// Attack 4: a module replaced every 100 ms (faster than the quiet period)
/// used to postpone rescans forever; now a new plugin still loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_changes_does_not_stop_rescans() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    let heartbeat = std::fs::read(artifacts::HEARTBEAT).expect("artifact");
    let churn = plugins.join("churn.wasm");
    std::fs::write(&churn, &heartbeat).expect("write");
    PluginFile::new("churn", "polling", &churn).write(&plugins, "churn");
    let registry = Arc::new(registry(site_in(dir.path()), &plugins));
    registry.rescan();
    let mut events = registry.subscribe();
    let settings = WatchSettings {
        debounce: Duration::from_millis(300),
        max_delay: Duration::from_secs(1),
        rescan_every: Duration::from_secs(3600),
    };
    let _watcher = watcher::watch(registry.clone(), settings).expect("watch");

    let stop = Arc::new(AtomicBool::new(false));
    let replacer = {
        let stop = stop.clone();
        let (churn, plugins) = (churn.clone(), plugins.clone());
        std::thread::spawn(move || {
            let variants = [
                heartbeat.clone(),
                wasm::with_custom(&heartbeat, "churn", b"b"),
            ];
            let mut replaced = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let next = plugins.join("churn.next");
                std::fs::write(&next, &variants[replaced % 2]).expect("write");
                std::fs::rename(&next, &churn).expect("replace");
                replaced += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            replaced
        })
    };

    PluginFile::new("added", "polling", artifacts::HEARTBEAT).write(&plugins, "added");
    let added = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match events.recv().await {
                Ok(RegistryEvent::Loaded { name, .. }) if name == "added" => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("registry events: {e}"),
            }
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let replaced = replacer.join().expect("replacer");
    assert!(replaced >= 5, "the module kept being replaced ({replaced})");
    assert!(added.is_ok(), "a plugin added during the stream was loaded");
    assert!(registry.get("added").is_some());
}

/// Attack 5: 1,100 plugin files (copies of one small component and its
/// ini) used to hold one file descriptor each, from the cache's mapped
/// file; distinct components did the same, and running a plugin added a
/// memfd for its memory image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_many_plugins_holds_no_descriptor_per_plugin() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    for i in 0..1100 {
        let module = plugins.join(format!("copy-{i}.wasm"));
        std::fs::copy(artifacts::HEARTBEAT, &module).expect("copy");
        PluginFile::new(&format!("copy-{i}"), "polling", &module)
            .write(&plugins, &format!("copy-{i}"));
    }
    let before = open_fds();
    {
        let compiled = registry(site_in(dir.path()), &plugins);
        let scan = {
            let registry = &compiled;
            tokio::task::block_in_place(|| registry.rescan())
        };
        assert_eq!(compiled.plugins().len(), 1100, "{:?}", compiled.failures());
        assert_eq!(scan.len(), 1100);
        let after = open_fds();
        println!("1,100 plugins compiled: {before} descriptors before, {after} after");
        assert!(after <= before + 8, "{before} -> {after}");
    }
    // A fresh host: every plugin comes from the cache directory.
    let fresh = registry(site_in(dir.path()), &plugins);
    tokio::task::block_in_place(|| fresh.rescan());
    assert_eq!(fresh.plugins().len(), 1100);
    let after = open_fds();
    println!("1,100 plugins from the cache: {before} descriptors before, {after} after");
    assert!(after <= before + 8, "{before} -> {after}");
    drop(fresh);

    // Distinct components (each its own cache entry), loaded from the cache
    // by a fresh host, then each run once.
    let distinct = dir.path().join("distinct");
    std::fs::create_dir(&distinct).expect("mkdir");
    let heartbeat = std::fs::read(artifacts::HEARTBEAT).expect("artifact");
    for i in 0..24u32 {
        let module = distinct.join(format!("d-{i}.wasm"));
        std::fs::write(
            &module,
            wasm::with_custom(&heartbeat, "copy", &i.to_le_bytes()),
        )
        .expect("write");
        PluginFile::new(&format!("d-{i}"), "polling", &module).write(&distinct, &format!("d-{i}"));
    }
    let before = open_fds();
    tokio::task::block_in_place(|| registry(site_in(dir.path()), &distinct).rescan());
    let fresh = registry(site_in(dir.path()), &distinct);
    tokio::task::block_in_place(|| fresh.rescan());
    assert_eq!(fresh.plugins().len(), 24);
    for plugin in fresh.plugins() {
        let report = fresh
            .sandbox()
            .run(
                &plugin.prepared,
                RunInput::Poll(Resource::named("r", "127.0.0.1").into()),
                RunContext::new(SystemTime::now(), Some("r".into())),
            )
            .await;
        assert!(
            matches!(report.outcome, RunOutcome::Ok(_)),
            "{}",
            report.outcome
        );
    }
    let after = open_fds();
    println!(
        "24 distinct plugins from the cache, each run once: {before} descriptors before, {after} after"
    );
    assert!(after <= before + 8, "{before} -> {after}");
}

/// Attack 6: the precompiled cache keeps only what plugins use (plus what
/// fits under the size cap for a grace period); an entry in use is never
/// deleted, however old.
#[test]
fn the_cache_is_pruned_of_entries_no_plugin_uses() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    let heartbeat = std::fs::read(artifacts::HEARTBEAT).expect("artifact");
    let mut modules = Vec::new();
    for name in ["kept", "removed", "recent"] {
        let module = plugins.join(format!("{name}.wasm"));
        std::fs::write(
            &module,
            wasm::with_custom(&heartbeat, "name", name.as_bytes()),
        )
        .expect("write");
        PluginFile::new(name, "polling", &module).write(&plugins, name);
        modules.push(module);
    }
    let cache = dir.path().join("cache");
    let entries = || -> Vec<(String, SystemTime)> {
        let mut entries: Vec<(String, SystemTime)> = std::fs::read_dir(&cache)
            .expect("cache")
            .flatten()
            .map(|e| {
                let modified = e.metadata().and_then(|m| m.modified()).expect("mtime");
                (e.file_name().to_string_lossy().into_owned(), modified)
            })
            .collect();
        entries.sort();
        entries
    };
    let sha_of =
        |module: &Path| vigil_host::sandbox::sha256_hex(&std::fs::read(module).expect("read"));
    let entry_of = |module: &Path| {
        let sha = sha_of(module);
        entries()
            .into_iter()
            .find(|(name, _)| name.ends_with(&format!("-{sha}.cwasm")))
    };

    let registry = registry(site_in(dir.path()), &plugins);
    registry.rescan();
    assert_eq!(registry.plugins().len(), 3);
    assert_eq!(entries().len(), 3);
    // Someone else's file in the cache directory is not ours to delete.
    std::fs::write(cache.join("README"), "not an entry").expect("write");

    // Age every entry by a day; "recent" stays recent.
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    for module in &modules[..2] {
        let (name, _) = entry_of(module).expect("entry");
        std::fs::File::options()
            .write(true)
            .open(cache.join(name))
            .and_then(|f| f.set_modified(day_ago))
            .expect("age");
    }
    std::fs::remove_file(plugins.join("removed.vigil-plugin")).expect("remove");
    std::fs::remove_file(plugins.join("recent.vigil-plugin")).expect("remove");
    registry.rescan();
    assert_eq!(registry.plugins().len(), 1);
    let (_, kept_time) = entry_of(&modules[0]).expect("in use: kept however old");
    assert!(kept_time > day_ago, "the in-use entry's time was refreshed");
    assert!(entry_of(&modules[1]).is_none(), "unused and stale: deleted");
    assert!(
        entry_of(&modules[2]).is_some(),
        "unused but recent: kept under the size cap"
    );
    assert!(cache.join("README").exists());
    drop(registry);

    // With no room to spare, unused entries go at once; in-use ones stay.
    let site = SiteConfig {
        cache_max_size: 0,
        ..site_in(dir.path())
    };
    let registry = self::registry(site, &plugins);
    registry.rescan();
    assert_eq!(registry.plugins().len(), 1);
    assert!(entry_of(&modules[0]).is_some());
    assert!(entry_of(&modules[2]).is_none());
    assert_eq!(entries().len(), 2, "{:?}", entries());
}

/// The `[plugins]` limits: defaults, ceilings, and located errors.
#[test]
fn loading_limits_are_site_settings_with_ceilings() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("site.toml");
    let parse = |plugins: &str| {
        SiteConfig::parse(
            &path,
            &format!("[site]\nname = \"lab\"\n[plugins]\n{plugins}\n"),
        )
    };
    let site = parse("max_module_size = \"64MiB\"\nmax_function_size = \"1MiB\"\nmax_functions = 5000\ncache_max_size = \"2GiB\"").expect("valid");
    assert_eq!(site.loading.max_module_size, 64 << 20);
    assert_eq!(site.loading.max_function_size, 1 << 20);
    assert_eq!(site.loading.max_functions, 5000);
    assert_eq!(
        site.loading.max_code_size,
        LoadLimits::default().max_code_size
    );
    assert_eq!(site.cache_max_size, 2 << 30);
    let error = parse("max_module_size = \"1GiB\"")
        .expect_err("over the ceiling")
        .to_string();
    assert!(
        error.contains(
            ":4: plugins.max_module_size = 1 GiB must be 1 KiB to 256 MiB (vigil's ceiling)"
        ),
        "{error}"
    );
    let error = parse("\nmax_code_size = \"lots\"")
        .expect_err("not a size")
        .to_string();
    assert!(error.contains(":5: plugins.max_code_size: "), "{error}");
    let error = parse("cache_max_size = \"1TiB\"")
        .expect_err("not a unit")
        .to_string();
    assert!(error.contains("plugins.cache_max_size"), "{error}");
    let error = parse("max_functions = 0").expect_err("too low").to_string();
    assert!(
        error.contains("plugins.max_functions = 0 must be 100 to 200000"),
        "{error}"
    );
}
