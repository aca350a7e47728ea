//! The plugin author's toolkit, through the real binary: `vigil plugins
//! test` against device recordings (judged against a real poll of the same
//! recordings served by snmpsim), and `vigil plugins new` crates that build
//! and load as they are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value as Json;
use vigil_host::model::{EnrichmentGroup, Resource};
use vigil_host::plugin::PluginManifest;
use vigil_host::plugin::offline::{compare, output_json, read_enrichment};
use vigil_host::sandbox::{
    PreparedPlugin, RunContext, RunInput, RunOutcome, Sandbox, SandboxSettings,
};
use vigil_host::site::SiteConfig;
use vigil_tests::servers::repo_root;
use vigil_tests::snmp_servers::{Snmpsim, fixtures_dir, snmpsim_recorded_dir};

fn vigil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

/// `vigil ARGS` with an empty environment (no PATH: nothing it could start
/// is found) but for its cache directory.
fn vigil(cache: &Path, args: &[&str]) -> Output {
    Command::new(vigil_bin())
        .args(args)
        .env_clear()
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("running vigil")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every recording the tests have: Panoptes' (tests/fixtures/snmp) and
/// snmpsim's own real-system walks, as `(community, file)`.
fn recordings() -> Vec<(String, PathBuf)> {
    let mut all = Vec::new();
    for dir in [
        fixtures_dir(),
        snmpsim_recorded_dir().expect("snmpsim recordings"),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("recordings dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "snmprec"))
            .collect();
        files.sort();
        for file in files {
            let stem = file
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            all.push((stem, file));
        }
    }
    all
}

/// The bundled SNMP plugins, by their shipped plugin files.
const PLUGINS: [&str; 3] = [
    "snmp-interface-enrichment",
    "snmp-interface-polling",
    "snmp-device-health",
];

fn plugin_config(name: &str) -> PathBuf {
    repo_root()
        .join("plugin-configs")
        .join(format!("{name}.vigil-plugin"))
}

/// What a real poll of snmpsim produced: the output's JSON, or the outcome
/// label of a run that did not succeed.
async fn real_run(
    sandbox: &Sandbox,
    plugin: &PreparedPlugin,
    resource: &Resource,
    enrichments: Vec<EnrichmentGroup>,
) -> Result<Json, String> {
    let mut context = RunContext::new(SystemTime::now(), Some(resource.id.clone()));
    context.enrichments = enrichments
        .into_iter()
        .filter(|g| plugin.manifest.preload.contains(&g.namespace))
        .collect();
    let input = if plugin.manifest.kind == vigil_host::plugin::PluginKind::Enrichment {
        RunInput::Enrich(resource.clone().into())
    } else {
        RunInput::Poll(resource.clone().into())
    };
    let report = sandbox.run(plugin, input, context).await;
    match &report.outcome {
        RunOutcome::Ok(output) => Ok(output_json(output)),
        other => Err(other.to_string()),
    }
}

/// `vigil plugins test ... --json`: the output's JSON, or the outcome line.
fn offline_run(
    cache: &Path,
    config: &Path,
    recording: &Path,
    community: &str,
    enrichment: Option<&Path>,
) -> Result<Json, String> {
    let resource = format!(r#"{{"resource_id": "{community}", "resource_site": "lab"}}"#);
    let mut args = vec![
        "plugins",
        "test",
        path(config),
        "--snmprec",
        path(recording),
        "--resource",
        &resource,
        "--json",
    ];
    if let Some(file) = enrichment {
        args.extend(["--enrichment", path(file)]);
    }
    let output = vigil(cache, &args);
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{community}: --json is not JSON: {e}")))
    } else {
        let stdout = text(&output.stdout);
        let outcome = stdout
            .lines()
            .find_map(|l| l.strip_prefix("outcome: "))
            .unwrap_or_else(|| {
                panic!(
                    "{community}: no outcome: {stdout}\n{}",
                    text(&output.stderr)
                )
            });
        Err(outcome.to_owned())
    }
}

/// The proof of issue #13: for every bundled SNMP plugin and every
/// recording, `vigil plugins test` (no agent: the binary runs with an
/// empty environment, and its responder is inside it) gives the same groups
/// as the same plugin polling snmpsim serving the same recording: same
/// names, dimensions, values and types (timestamps and the endpoint aside).
/// The polling plugin is compared twice: on its own, and with the
/// enrichment plugin's `--json` output fed back through `--enrichment`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_test_gives_the_groups_snmpsim_gives_on_every_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let devices = recordings();
    assert!(devices.len() >= 5, "{devices:?}");
    let sim = Snmpsim::start(&devices).expect("snmpsim");
    let mut site_text = format!(
        "[site]\nname = \"lab\"\n[plugins]\ncache_dir = \"{}\"\n[capabilities]\nallowed = [\"snmp\"]\n",
        cache.join("vigil").display()
    );
    for (community, _) in &devices {
        site_text.push_str(&format!(
            "[[snmp.credentials]]\nnetworks = [\"127.0.0.1/32\"]\nfilter = 'resource_id = \"{community}\"'\nversion = \"2c\"\ncommunity = \"{community}\"\n"
        ));
    }
    let site = SiteConfig::parse(&dir.path().join("site.toml"), &site_text).expect("site");
    let sandbox = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");
    let prepared: Vec<(&str, PreparedPlugin)> = PLUGINS
        .iter()
        .map(|name| {
            let manifest = PluginManifest::load(&plugin_config(name), &site.plugin_policy())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (*name, sandbox.prepare(Arc::new(manifest)).expect("prepare"))
        })
        .collect();

    let mut compared = 0;
    let mut groups = 0;
    for (community, recording) in &devices {
        let mut resource = Resource::named(community, &sim.endpoint());
        resource.class = "network".into();
        resource.site = "lab".into();
        let mut real_enrichment = Vec::new();
        let enrichment_file = dir.path().join(format!("{community}.enrichment.json"));
        for (name, plugin) in &prepared {
            let config = plugin_config(name);
            let real = real_run(&sandbox, plugin, &resource, Vec::new()).await;
            let offline = offline_run(&cache, &config, recording, community, None);
            match (&real, &offline) {
                (Ok(real), Ok(offline)) => {
                    let differences = compare(real, offline);
                    assert!(
                        differences.is_empty(),
                        "{name} on {community}: plugins test differs from snmpsim:\n{}",
                        differences.join("\n")
                    );
                    groups += real.as_array().map_or(0, Vec::len);
                }
                (Err(real), Err(offline)) => assert_eq!(
                    real.split(':').next(),
                    offline.split(':').next(),
                    "{name} on {community}"
                ),
                _ => panic!("{name} on {community}: snmpsim {real:?}, plugins test {offline:?}"),
            }
            compared += 1;
            if *name == "snmp-interface-enrichment"
                && let Ok(json) = &offline
            {
                std::fs::write(&enrichment_file, serde_json::to_vec(json).expect("json"))
                    .expect("write");
                real_enrichment = read_enrichment(&enrichment_file).expect("reads back");
            }
        }
        if real_enrichment.is_empty() {
            continue;
        }
        let (_, poller) = &prepared[1];
        let real = real_run(&sandbox, poller, &resource, real_enrichment)
            .await
            .expect("poll with enrichment");
        let offline = offline_run(
            &cache,
            &plugin_config("snmp-interface-polling"),
            recording,
            community,
            Some(&enrichment_file),
        )
        .expect("plugins test with --enrichment");
        let differences = compare(&real, &offline);
        assert!(
            differences.is_empty(),
            "interface polling with enrichment on {community}:\n{}",
            differences.join("\n")
        );
        compared += 1;
    }
    assert!(compared >= 3 * devices.len());
    assert!(
        groups > 50,
        "only {groups} groups compared: a vacuous proof"
    );
}

/// A site that allows SNMP, for `plugins check` of an SNMP plugin.
fn snmp_site(dir: &Path) -> PathBuf {
    let site = dir.join("site.toml");
    std::fs::write(
        &site,
        "[site]\nname = \"lab\"\n[capabilities]\nallowed = [\"snmp\"]\n",
    )
    .expect("site");
    site
}

#[test]
fn plugins_test_compares_with_expect_and_reports_each_difference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let config = plugin_config("snmp-interface-polling");
    let recording = fixtures_dir().join("cisco.snmprec");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "plugins",
            "test",
            path(&config),
            "--snmprec",
            path(&recording),
        ];
        args.extend_from_slice(extra);
        args.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<String>>()
    };
    let run = |extra: &[&str]| {
        let args = args(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        vigil(&cache, &refs)
    };
    let first = run(&["--json"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let expected = dir.path().join("expected.json");
    std::fs::write(&expected, &first.stdout).expect("write");
    // Another run: new timestamps, a new port; the same groups.
    let same = run(&["--expect", path(&expected)]);
    assert!(same.status.success(), "{}", text(&same.stdout));
    assert!(text(&same.stderr).contains("output matches"));

    let mut edited: Json = serde_json::from_slice(&first.stdout).expect("json");
    let group = &mut edited[1];
    let metric = group["metrics"]
        .as_array_mut()
        .and_then(|m| m.iter_mut().find(|m| m["metric_type"] == "counter"))
        .expect("a counter");
    let name = metric["metric_name"].as_str().expect("name").to_owned();
    metric["metric_value"] = Json::from(123_456_789u64);
    std::fs::write(&expected, serde_json::to_vec(&edited).expect("json")).expect("write");
    let differs = run(&["--expect", path(&expected)]);
    assert_eq!(differs.status.code(), Some(1));
    let out = text(&differs.stdout);
    assert!(out.contains("1 differences"), "{out}");
    assert!(
        out.contains(&format!(
            "metrics.{name}: expected 123456789 (counter), got"
        )),
        "{out}"
    );

    // Human output: the table; a broken recording: its file and line.
    let table = run(&[]);
    assert!(table.status.success());
    assert!(text(&table.stdout).contains("outcome: ok"));
    let broken = dir.path().join("broken.snmprec");
    std::fs::write(
        &broken,
        "1.3.6.1.2.1.1.1.0|4|ok\n1.3.6.1.2.1.1.3.0|67|soon\n",
    )
    .expect("write");
    let output = vigil(
        &cache,
        &["plugins", "test", path(&config), "--snmprec", path(&broken)],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains(&format!("{}:2: ", broken.display())),
        "{}",
        text(&output.stderr)
    );
}

fn cargo(dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .current_dir(dir)
        .args(args)
        .env(
            "CARGO_TARGET_DIR",
            repo_root().join("target/plugin-template"),
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("running cargo")
}

/// `plugins new` for every kind: the crate's own tests pass, it builds for
/// wasm32-wasip2 offline, and `vigil plugins check` loads it (exit 0). The
/// polling crate then runs against a recording with `plugins test`.
#[test]
fn plugins_new_writes_crates_that_build_and_load_as_they_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let site = snmp_site(dir.path());
    let target = repo_root().join("target/plugin-template/wasm32-wasip2/release");
    for kind in [
        "discovery",
        "enrichment",
        "polling",
        "analysis",
        "endpoints",
    ] {
        let name = format!("my-{kind}");
        let output = vigil(
            &cache,
            &[
                "plugins",
                "new",
                &name,
                "--kind",
                kind,
                "--dir",
                path(dir.path()),
            ],
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
        let root = dir.path().join(&name);
        let tested = cargo(&root, &["test", "--offline", "--quiet"]);
        assert!(
            tested.status.success(),
            "{kind}: cargo test\n{}",
            text(&tested.stderr)
        );
        let built = cargo(
            &root,
            &[
                "build",
                "--release",
                "--offline",
                "--target",
                "wasm32-wasip2",
            ],
        );
        assert!(
            built.status.success(),
            "{kind}: build\n{}",
            text(&built.stderr)
        );
        // Where the plugin file expects it (the test builds in a shared
        // target directory to reuse the dependencies).
        let library = name.replace('-', "_");
        let wasm = root.join("target/wasm32-wasip2/release");
        std::fs::create_dir_all(&wasm).expect("mkdir");
        std::fs::copy(
            target.join(format!("{library}.wasm")),
            wasm.join(format!("{library}.wasm")),
        )
        .expect("copy the component");
        let ini = root.join(format!("{library}.vigil-plugin"));
        let checked = vigil(
            &cache,
            &["--site", path(&site), "plugins", "check", path(&ini)],
        );
        assert!(
            checked.status.success(),
            "{kind}: check\n{}{}",
            text(&checked.stdout),
            text(&checked.stderr)
        );
        assert!(
            text(&checked.stdout).contains(&format!("kind            {kind}")),
            "{}",
            text(&checked.stdout)
        );
        if kind == "endpoints" {
            // The generated plugin runs as it is: its ini's one neighbour.
            let output = vigil(
                &cache,
                &[
                    "plugins",
                    "run",
                    path(&ini),
                    "--resource-id",
                    "lab-switch",
                    "--endpoint",
                    "127.0.0.1",
                    "--json",
                ],
            );
            let shown = text(&output.stdout);
            assert!(output.status.success(), "{shown}{}", text(&output.stderr));
            assert!(
                shown.contains("00:11:22:33:44:55") && shown.contains("10.0.0.5"),
                "{shown}"
            );
        }
        if kind == "polling" {
            let recording = fixtures_dir().join("juniper-mx.snmprec");
            let output = vigil(
                &cache,
                &[
                    "plugins",
                    "test",
                    path(&ini),
                    "--snmprec",
                    path(&recording),
                    "--json",
                ],
            );
            assert!(output.status.success(), "{}", text(&output.stderr));
            let groups: Json = serde_json::from_slice(&output.stdout).expect("json");
            let statuses = std::fs::read_to_string(&recording)
                .expect("recording")
                .lines()
                .filter(|l| l.starts_with("1.3.6.1.2.1.2.2.1.8."))
                .count();
            let interfaces = groups[0]["metrics"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["metric_name"] == "interfaces"))
                .map(|m| m["metric_value"].clone());
            assert_eq!(interfaces, Some(Json::from(statuses)), "{groups}");
        }
    }
    // Refusals: an existing directory, a bad name.
    let again = vigil(
        &cache,
        &[
            "plugins",
            "new",
            "my-polling",
            "--kind",
            "polling",
            "--dir",
            path(dir.path()),
        ],
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    let bad = vigil(
        &cache,
        &[
            "plugins",
            "new",
            "My Plugin",
            "--kind",
            "polling",
            "--dir",
            path(dir.path()),
        ],
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("lower-case letters"),
        "{}",
        text(&bad.stderr)
    );
}
