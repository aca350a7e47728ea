//! The `vigil` binary as an operator uses it: `plugins check`, `plugins
//! list`, `plugins run`, and the allocator fallback on a machine that
//! cannot reserve the instance pool.

use std::process::{Command, Output};

use vigil_tests::{PluginFile, artifacts};

/// The `vigil` binary cargo built for these tests.
fn vigil_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

fn vigil(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(vigil_bin())
        .args(args)
        // Keep the cache inside the test's directory.
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("VIGIL_SITE")
        .output()
        .expect("running vigil")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn check_describes_a_good_plugin_and_locates_errors_in_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = PluginFile::new("heartbeat", "polling", artifacts::HEARTBEAT)
        .set("main", "resource_filter", "resource_class = \"network\"")
        .set("sandbox", "deadline", "3s")
        .write(dir.path(), "good");
    let output = vigil(
        dir.path(),
        &["plugins", "check", good.to_str().expect("utf-8 path")],
    );
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("kind            polling (exports vigil:plugin/poller@0.1.0)"),
        "{text}"
    );
    assert!(text.contains("deadline 3s, memory 64 MiB"), "{text}");
    assert!(
        text.contains("resource filter resource_class = \"network\""),
        "{text}"
    );
    assert!(text.contains("capabilities    none"), "{text}");

    let bad = PluginFile::new("heartbeat", "polling", artifacts::HEARTBEAT)
        .set("sandbox", "memory", "a lot")
        .write(dir.path(), "bad");
    let output = vigil(
        dir.path(),
        &[
            "plugins",
            "check",
            good.to_str().expect("path"),
            bad.to_str().expect("path"),
        ],
    );
    let text = stdout(&output);
    // A plugin file that does not load is a configuration error: EX_CONFIG.
    assert_eq!(output.status.code(), Some(78), "{text}");
    assert!(
        text.contains(&format!("{}: FAILED", bad.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}:10: [sandbox] memory: \"a lot\" is not a size",
            bad.display()
        )),
        "{text}"
    );
}

#[test]
fn list_shows_loaded_and_broken_plugins() {
    let dir = tempfile::tempdir().expect("tempdir");
    PluginFile::new("heartbeat", "polling", artifacts::HEARTBEAT)
        .frequency("30s")
        .write(dir.path(), "a");
    PluginFile::new("broken", "polling", artifacts::HEARTBEAT)
        .frequency("0")
        .write(dir.path(), "b");
    let output = vigil(
        dir.path(),
        &[
            "plugins",
            "list",
            "--dir",
            dir.path().to_str().expect("path"),
        ],
    );
    let text = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(78),
        "broken plugins make list fail as a configuration error: {text}"
    );
    // The log goes to a pipe here: plain text, no colour escapes.
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("plugin loaded"), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("heartbeat") && l.contains("polling") && l.contains("30s")),
        "{text}"
    );
    assert!(
        text.contains("b.vigil-plugin:7: [main] execute_frequency"),
        "{text}"
    );
}

#[test]
fn run_executes_a_plugin_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = PluginFile::new("heartbeat", "polling", artifacts::HEARTBEAT)
        .set("heartbeat", "label", "lab")
        .write(dir.path(), "hb");
    let output = vigil(
        dir.path(),
        &[
            "plugins",
            "run",
            path.to_str().expect("path"),
            "--resource-id",
            "sw1",
            "--endpoint",
            "127.0.0.1",
        ],
    );
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("outcome: ok (1 metrics groups)"), "{text}");
    assert!(
        text.contains(
            "heartbeat [resource_class=\"network\" label=\"lab\"] up=1 runs=1 interval_seconds=60"
        ),
        "{text}"
    );
}

#[test]
fn falls_back_to_on_demand_allocation_when_the_pool_cannot_be_reserved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path =
        PluginFile::new("heartbeat", "polling", artifacts::HEARTBEAT).write(dir.path(), "hb");
    // 16 GiB of address space: enough for one on-demand instance, far too
    // little for a pool of 32 instances with 4 GiB reservations each.
    let script = format!(
        "ulimit -v 16777216 && exec {} plugins run {} --resource-id sw1 --endpoint 127.0.0.1",
        vigil_bin().display(),
        path.display()
    );
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .expect("sh");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{log}", stdout(&output));
    assert!(log.contains("pooling allocator unavailable"), "{log}");
    assert!(log.contains("instance allocator: on-demand"), "{log}");
    assert!(
        stdout(&output).contains("outcome: ok"),
        "{}",
        stdout(&output)
    );
}

/// The bundled example site and every bundled plugin file load as shipped,
/// so the README's first command cannot rot.
#[test]
fn the_example_site_and_its_plugins_load() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let configs = repo.join("plugin-configs");
    let mut files: Vec<String> = std::fs::read_dir(&configs)
        .expect("plugin-configs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "vigil-plugin"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let site = configs.join("site.toml");
    let mut args = vec![
        "--site",
        site.to_str().expect("utf-8 path"),
        "plugins",
        "check",
    ];
    args.extend(files.iter().map(String::as_str));
    let dir = tempfile::tempdir().expect("tempdir");
    let output = vigil(dir.path(), &args);
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains(
            "snmp: the polled resource's endpoint (timeout 5s, 2 retries, max-repetitions 25)"
        ),
        "{text}"
    );
}

/// `vigil consume` explains what it needs instead of waiting forever.
#[test]
fn consume_needs_the_kafka_bus_and_a_known_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        "[site]\nname = \"lab\"\n[storage]\npath = \"state/vigil.db\"\n",
    )
    .expect("site");
    let site = site.to_str().expect("utf-8 path");
    let output = vigil(dir.path(), &["--site", site, "consume"]);
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("bus.backend = \"kafka\""), "{error}");

    let output = vigil(
        dir.path(),
        &["--site", site, "consume", "--sink", "influxdb"],
    );
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("--sink \"influxdb\""), "{error}");
}

#[test]
fn dashboards_generate_matches_the_committed_examples_and_locates_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("plugin-configs/dashboards");
    let flow = root.join("flow.yml");
    let flow = flow.to_str().expect("utf-8 path");
    for (datasource, committed) in [
        ("prometheus", "flow.prometheus.json"),
        ("influxdb", "flow.influxdb.json"),
    ] {
        let output = vigil(
            dir.path(),
            &["dashboards", "generate", flow, "--datasource", datasource],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let generated: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("JSON on stdout");
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(committed)).expect("committed dashboard"),
        )
        .expect("committed JSON");
        assert_eq!(generated, expected, "{datasource}");
    }

    // The layout picture of what was just generated.
    let json = dir.path().join("flow.json");
    let svg = dir.path().join("flow.svg");
    let output = vigil(
        dir.path(),
        &[
            "dashboards",
            "generate",
            flow,
            "--output",
            json.to_str().expect("utf-8"),
        ],
    );
    assert!(output.status.success());
    let output = vigil(
        dir.path(),
        &[
            "dashboards",
            "layout",
            json.to_str().expect("utf-8"),
            "--output",
            svg.to_str().expect("utf-8"),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let picture = std::fs::read_to_string(&svg).expect("svg");
    assert!(picture.contains("<svg "), "{picture}");
    assert_eq!(
        picture,
        std::fs::read_to_string(root.join("flow-layout.svg")).expect("committed picture"),
        "the committed picture is the example dashboard's layout"
    );

    // A broken flow: every problem, each with its file and line.
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "title: t\nnodes:\n  - name: a\n    type: switch\n    interfaces:\n      - name: \"\"\n        peers: [{node: zz, interface: x}]\n",
    )
    .expect("write");
    let output = vigil(
        dir.path(),
        &["dashboards", "generate", bad.to_str().expect("utf-8")],
    );
    assert!(!output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr);
    let path = bad.display().to_string();
    assert!(errors.contains(&format!("{path}:6: ")), "{errors}");
    assert!(errors.contains(&format!("{path}:7: ")), "{errors}");
    assert!(errors.contains("no node \"zz\""), "{errors}");

    // The health dashboard needs Prometheus.
    let output = vigil(
        dir.path(),
        &["dashboards", "health", "--datasource", "influxdb"],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Prometheus"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A site config `dir/site.toml` whose database lives in `dir`.
fn site_in(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("site.toml");
    std::fs::write(
        &path,
        format!("[site]\nname = \"lab\"\n[storage]\npath = \"vigil.db\"\n{extra}"),
    )
    .expect("site.toml");
    path
}

#[test]
fn a_broken_site_config_exits_78_naming_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site_in(dir.path(), "[sandbox]\nmax_concurrent_runs = 0\n");
    let site = site.to_str().expect("utf-8 path");
    for args in [
        &["--site", site, "status"][..],
        &["--site", site, "run"][..],
        &["--site", site, "plugins", "list"][..],
    ] {
        let output = vigil(dir.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{site}:6: sandbox.max_concurrent_runs")),
            "{args:?}: {stderr}"
        );
    }
    // `run` without any site config is one too.
    let output = vigil(dir.path(), &["run"]);
    assert_eq!(output.status.code(), Some(78));
}

#[test]
fn status_exits_3_unless_vigil_is_running() {
    use vigil_host::store::{HostStatus, Storage};
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site_in(dir.path(), "");
    let site = site.to_str().expect("utf-8 path");
    // Never ran here: no database.
    let output = vigil(dir.path(), &["--site", site, "status"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not running"), "{stderr}");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let store = vigil_host::store::sqlite::SqliteStorage::open(&dir.path().join("vigil.db"))
        .expect("database");
    let write = |updated_at: f64| {
        let status = HostStatus {
            site: "lab".into(),
            pid: 1,
            started_at: now - 600.0,
            updated_at,
            ..HostStatus::default()
        };
        vigil_tests::block_on(store.put_status(&status)).expect("status");
    };
    // A database but no status yet.
    let output = vigil(dir.path(), &["--site", site, "status"]);
    assert_eq!(output.status.code(), Some(3), "{}", stdout(&output));
    // Written a minute ago: stale, so not running (also with --json).
    write(now - 60.0);
    for args in [
        &["--site", site, "status"][..],
        &["--site", site, "status", "--json"][..],
    ] {
        let output = vigil(dir.path(), args);
        assert_eq!(
            output.status.code(),
            Some(3),
            "{args:?}: {}",
            stdout(&output)
        );
    }
    assert!(stdout(&vigil(dir.path(), &["--site", site, "status"])).contains("NOT RUNNING"));
    // Fresh: running.
    write(now);
    let output = vigil(dir.path(), &["--site", site, "status"]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(
        stdout(&output).contains(": running;"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn a_read_command_whose_reader_went_away_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    // A pipe whose reading end is already closed: the first line vigil
    // prints meets EPIPE, as in `vigil plugins list | head -0`.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = Command::new(vigil_bin())
        .args([
            "plugins",
            "list",
            "--dir",
            plugins.to_str().expect("utf-8 path"),
        ])
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .env_remove("VIGIL_SITE")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("running vigil");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}",
        output.status
    );
}

/// `plugins run` runs a poller for a real resource of the site, or for one
/// given by hand with `--endpoint`; never for a silent 127.0.0.1.
#[test]
fn run_needs_the_resource_it_runs_for() {
    use vigil_host::store::{ResourceSettings, Storage};
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site_in(dir.path(), "");
    let site = site.to_str().expect("utf-8 path");
    let plugin =
        PluginFile::new("heartbeat", "polling", artifacts::HEARTBEAT).write(dir.path(), "hb");
    let plugin = plugin.to_str().expect("utf-8 path");
    let run = |extra: &[&str]| {
        let mut args = vec!["--site", site, "plugins", "run", plugin];
        args.extend_from_slice(extra);
        vigil(dir.path(), &args)
    };
    // No resource at all: refused, saying how to name one.
    let output = run(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("give --resource-id"), "{stderr}");
    // A resource the site has not discovered, without --endpoint.
    let store = vigil_host::store::sqlite::SqliteStorage::open(&dir.path().join("vigil.db"))
        .expect("database");
    let output = run(&["--resource-id", "srv9"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("\"srv9\" is not among this site's live resources"),
        "{stderr}"
    );
    // A discovered one: its own record (class, endpoint) is what runs.
    let mut srv9 = vigil_host::model::Resource::named("srv9", "127.0.0.9");
    srv9.class = "system".into();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let policy = ResourceSettings::new("lab").policy(std::time::Duration::from_secs(600), 10, &[]);
    vigil_tests::block_on(store.upsert_resources("inventory", &[srv9], &policy, now))
        .expect("stored");
    let output = run(&["--resource-id", "srv9"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("resource_class=\"system\""), "{text}");
    // By hand: --endpoint makes one up.
    let output = run(&[
        "--resource-id",
        "lab-1",
        "--endpoint",
        "127.0.0.7",
        "--class",
        "lb",
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("resource_class=\"lb\""), "{text}");
}
