//! Loading plugins from files: located errors for every kind of bad input,
//! the world/kind check, capability grants, the precompiled cache, and the
//! directory watcher loading, reloading and unloading plugins while the
//! host runs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vigil_host::model::{MetricsGroup, Resource};
use vigil_host::plugin::watcher::{self, WatchSettings};
use vigil_host::plugin::{PluginManifest, PluginRegistry, RegistryEvent};
use vigil_host::sandbox::{
    CacheOutcome, RunContext, RunInput, RunOutcome, RunOutput, Sandbox, SandboxSettings,
};
use vigil_host::site::SiteConfig;
use vigil_tests::{PluginFile, artifacts};

fn site_in(dir: &Path) -> SiteConfig {
    SiteConfig {
        cache_dir: dir.join("cache"),
        ..SiteConfig::embedded()
    }
}

fn load_error(site: &SiteConfig, path: &Path) -> String {
    match PluginManifest::load(path, &site.plugin_policy()) {
        Ok(_) => panic!("{} loaded but should not have", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn each_bad_value_is_one_located_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site_in(dir.path());
    let good = PluginFile::new("p", "polling", artifacts::HEARTBEAT);

    let path = good
        .clone()
        .frequency("every minute")
        .write(dir.path(), "freq");
    let error = load_error(&site, &path);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.starts_with(&format!("{}:7: [main] execute_frequency", path.display())),
        "{error}"
    );

    let path = good
        .clone()
        .set("sandbox", "memory", "2GiB")
        .write(dir.path(), "cap");
    let error = load_error(&site, &path);
    assert!(
        error.starts_with(&format!(
            "{}:10: [sandbox] memory = 2 GiB is above the site's cap of 512 MiB",
            path.display()
        )),
        "{error}"
    );

    let path = good
        .clone()
        .set("sandbox", "deadline", "0")
        .write(dir.path(), "zero");
    assert!(load_error(&site, &path).contains("deadline cannot be 0"));

    let path = good
        .clone()
        .set("sandbox", "cpu", "1")
        .write(dir.path(), "unknown");
    assert!(load_error(&site, &path).contains(":10: [sandbox] unknown limit \"cpu\""));

    let path = good
        .clone()
        .set("capabilities", "files", "/etc")
        .write(dir.path(), "grant");
    assert!(
        load_error(&site, &path)
            .contains(":10: [capabilities] files is not allowed by the site config")
    );

    let path = good
        .clone()
        .set("capabilities", "snmp", "yes")
        .write(dir.path(), "snmp");
    assert!(
        load_error(&site, &path)
            .contains(":10: [capabilities] snmp is not allowed by the site config")
    );
    let path = good
        .clone()
        .set("capabilities", "http", "yes")
        .write(dir.path(), "http");
    assert!(load_error(&site, &path).contains("http is not provided by this version"));
    let path = good
        .clone()
        .set("snmp", "retries", "3")
        .write(dir.path(), "stray-snmp");
    assert!(load_error(&site, &path).contains(":10: [snmp] settings, but the plugin does not ask"));

    let path = PluginFile::new("p", "sideways", artifacts::HEARTBEAT).write(dir.path(), "kind");
    assert!(load_error(&site, &path).contains(":3: [Core] kind \"sideways\""));

    let path = PluginFile::new("p", "polling", dir.path().join("missing.wasm"))
        .write(dir.path(), "module");
    assert!(load_error(&site, &path).contains(":4: [Core] module: no component at"));

    // Several problems: all reported, one line each.
    let path = PluginFile::new("p", "sideways", dir.path().join("missing.wasm"))
        .frequency("soon")
        .write(dir.path(), "many");
    assert_eq!(load_error(&site, &path).lines().count(), 3);
}

#[test]
fn the_component_must_match_the_declared_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site_in(dir.path());
    let sandbox = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");

    let path = PluginFile::new("p", "discovery", artifacts::HEARTBEAT).write(dir.path(), "kind");
    let manifest = PluginManifest::load(&path, &site.plugin_policy()).expect("manifest is fine");
    let error = format!(
        "{:#}",
        sandbox
            .prepare(Arc::new(manifest))
            .err()
            .expect("kind mismatch")
    );
    assert!(
        error.contains("[Core] kind is discovery, but the component is a polling plugin"),
        "{error}"
    );

    let not_wasm = dir.path().join("garbage.wasm");
    std::fs::write(&not_wasm, b"\0asm but not really").expect("write");
    let path = PluginFile::new("p", "polling", &not_wasm).write(dir.path(), "garbage");
    let manifest = PluginManifest::load(&path, &site.plugin_policy()).expect("manifest is fine");
    let error = format!(
        "{:#}",
        sandbox
            .prepare(Arc::new(manifest))
            .err()
            .expect("not a component")
    );
    assert!(
        error.contains("garbage.wasm: not a valid WebAssembly component"),
        "{error}"
    );
}

#[test]
fn precompiled_artifacts_are_cached_and_only_trusted_when_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site_in(dir.path());
    let path = PluginFile::new("p", "polling", artifacts::HEARTBEAT).write(dir.path(), "p");
    let manifest = Arc::new(PluginManifest::load(&path, &site.plugin_policy()).expect("manifest"));

    let first = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");
    assert_eq!(
        first.prepare(manifest.clone()).expect("prepare").cache,
        CacheOutcome::Compiled
    );
    drop(first);
    let second = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");
    assert_eq!(
        second.prepare(manifest.clone()).expect("prepare").cache,
        CacheOutcome::Hit
    );

    // An entry others could have written is not loaded: it is recompiled
    // (by a fresh sandbox: one that has loaded the component shares it).
    #[cfg(unix)]
    {
        drop(second);
        let third = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir.path().join("cache"))
            .expect("cache dir")
            .flatten()
        {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o666))
                .expect("chmod");
        }
        assert_eq!(
            third.prepare(manifest).expect("prepare").cache,
            CacheOutcome::Compiled
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_grant_is_read_only_and_confined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("probe.txt"), "granted content\n").expect("write");
    let site_file = dir.path().join("site.toml");
    std::fs::write(
        &site_file,
        format!(
            "[site]\nname = \"lab\"\n[plugins]\ncache_dir = \"cache\"\n[capabilities]\nallowed = [\"files\", \"snmp\"]\nfile_roots = [{:?}]\n",
            data.display().to_string()
        ),
    )
    .expect("write site");
    let site = SiteConfig::load(&site_file).expect("site");
    let sandbox = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");

    // Outside the file roots: refused at load.
    let path = PluginFile::new("p", "polling", artifacts::FIXTURE_HOSTILE)
        .set("capabilities", "files", &dir.path().display().to_string())
        .write(dir.path(), "outside");
    assert!(load_error(&site, &path).contains("outside the site's capabilities.file_roots"));
    // A `..` that climbs out of the root is caught too.
    let path = PluginFile::new("p", "polling", artifacts::FIXTURE_HOSTILE)
        .set("capabilities", "files", &format!("{}/..", data.display()))
        .write(dir.path(), "climb");
    assert!(load_error(&site, &path).contains("outside the site's capabilities.file_roots"));

    let path = PluginFile::new("p", "polling", artifacts::FIXTURE_HOSTILE)
        .set("fixture", "behaviour", "read-granted")
        .set("capabilities", "files", &data.display().to_string())
        .write(dir.path(), "granted");
    let plugin = sandbox
        .prepare(Arc::new(
            PluginManifest::load(&path, &site.plugin_policy()).expect("manifest"),
        ))
        .expect("prepare");
    let resource = Resource::named("r", "127.0.0.1");
    let context = RunContext::new(SystemTime::now(), Some("r".into()));
    let report = sandbox
        .run(&plugin, RunInput::Poll(resource.into()), context)
        .await;
    let group: &MetricsGroup = match &report.outcome {
        RunOutcome::Ok(RunOutput::Metrics(groups)) => &groups[0],
        other => panic!("{other}"),
    };
    let dim = |name: &str| {
        group
            .dimensions
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.clone())
            .unwrap_or_default()
    };
    assert_eq!(dim("read"), "granted content");
    assert!(
        dim("write").starts_with("denied:"),
        "wrote into a read-only grant: {}",
        dim("write")
    );
    assert!(
        dim("escape").starts_with("denied:"),
        "escaped the grant: {}",
        dim("escape")
    );
    assert!(!data.join("planted.txt").exists());
}

/// Waits for the next registry event matching `wanted`.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<RegistryEvent>,
    wanted: impl Fn(&RegistryEvent) -> bool,
) -> RegistryEvent {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => continue,
                Err(e) => panic!("registry events: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .expect("no registry event within 15 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_loads_reloads_and_unloads_while_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    let site = Arc::new(site_in(dir.path()));
    let sandbox = Arc::new(Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox"));
    let registry = Arc::new(PluginRegistry::new(
        sandbox,
        site.plugin_policy(),
        vec![plugins.clone()],
    ));

    // One plugin present from the start keeps running through everything.
    PluginFile::new("steady", "polling", artifacts::HEARTBEAT).write(&plugins, "steady");
    registry.rescan();
    assert_eq!(registry.plugins().len(), 1);

    let mut events = registry.subscribe();
    let settings = WatchSettings {
        debounce: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        rescan_every: Duration::from_secs(3600),
    };
    let _watcher = watcher::watch(registry.clone(), settings).expect("watch");

    // Added.
    let added = PluginFile::new("added", "polling", artifacts::HEARTBEAT);
    added.write(&plugins, "added");
    next_event(
        &mut events,
        |e| matches!(e, RegistryEvent::Loaded { name, .. } if name == "added"),
    )
    .await;
    assert!(registry.get("added").is_some());

    // Changed: the new config is what runs.
    added
        .clone()
        .set("heartbeat", "label", "v2")
        .write(&plugins, "added");
    next_event(
        &mut events,
        |e| matches!(e, RegistryEvent::Reloaded { name, .. } if name == "added"),
    )
    .await;
    let reloaded = registry.get("added").expect("still loaded");
    assert_eq!(
        reloaded
            .manifest()
            .sections
            .get("heartbeat", "label")
            .map(|e| e.raw.as_str()),
        Some("v2")
    );

    // Broken: reported, unloaded, and the others keep running.
    std::fs::write(
        plugins.join("added.vigil-plugin"),
        "[Core]\nName = added\nthis is not ini\n",
    )
    .expect("write");
    let failed = next_event(&mut events, |e| matches!(e, RegistryEvent::Failed { .. })).await;
    let RegistryEvent::Failed { error, .. } = failed else {
        unreachable!()
    };
    assert!(
        error.contains("added.vigil-plugin:3: expected `key = value`"),
        "{error}"
    );
    assert!(registry.get("added").is_none());
    assert!(registry.get("steady").is_some());

    // Fixed again, then removed.
    added.write(&plugins, "added");
    next_event(
        &mut events,
        |e| matches!(e, RegistryEvent::Loaded { name, .. } if name == "added"),
    )
    .await;
    std::fs::remove_file(plugins.join("added.vigil-plugin")).expect("remove");
    next_event(
        &mut events,
        |e| matches!(e, RegistryEvent::Unloaded { name, .. } if name == "added"),
    )
    .await;
    assert_eq!(
        registry
            .plugins()
            .iter()
            .map(|p| p.name().to_owned())
            .collect::<Vec<_>>(),
        vec!["steady"]
    );
    assert!(registry.failures().is_empty());
}

#[test]
fn duplicate_names_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Arc::new(site_in(dir.path()));
    let sandbox = Arc::new(Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox"));
    PluginFile::new("twin", "polling", artifacts::HEARTBEAT).write(dir.path(), "a");
    PluginFile::new("twin", "polling", artifacts::HEARTBEAT).write(dir.path(), "b");
    let registry = PluginRegistry::new(sandbox, site.plugin_policy(), vec![dir.path().to_owned()]);
    registry.rescan();
    assert_eq!(registry.plugins().len(), 1);
    let failures = registry.failures();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0]
            .1
            .contains("[Core] name \"twin\" is already used by"),
        "{}",
        failures[0].1
    );
}
