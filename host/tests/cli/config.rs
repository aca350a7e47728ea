//! An operator's first contact with vigil's configuration, with the real
//! binary: every config example in the README and in `plugin-configs/`
//! loads as printed; `vigil check` locates every problem and exits 78 on
//! errors; a value that looks like it carries an inline comment is warned
//! about; the default site path, and read commands that refuse to run
//! without a site; default data and cache directories for systemd and
//! containers (the shipped unit verified with `systemd-analyze verify`,
//! the Containerfile's layout run with its own environment); SIGHUP
//! reloads the site config.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{signal, stop, wait_until};
use vigil_tests::{PluginFile, artifacts};

fn vigil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// `vigil` with a hermetic environment: no `VIGIL_SITE`, no default site
/// (`VIGIL_DEFAULT_SITE` points at nothing), no systemd directories, the
/// cache under `dir`, run in `dir`.
fn command(dir: &Path) -> Command {
    let mut command = Command::new(vigil_bin());
    command
        .current_dir(dir)
        .env_remove("VIGIL_SITE")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CACHE_DIRECTORY")
        .env("VIGIL_DEFAULT_SITE", dir.join("no-such-site.toml"))
        .env("XDG_CACHE_HOME", dir.join("xdg-cache"));
    command
}

fn vigil(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().expect("running vigil")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every file below `dir`, relative to it.
fn files_below(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.insert(path.strip_prefix(dir).expect("below").to_owned());
            }
        }
    }
    found
}

// --- Every config example loads as printed ---------------------------------

/// A fenced block of the README: its info string, first line and text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    line: index + 1,
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The value of `key = value` lines (ini) in `text`.
fn ini_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
        .collect()
}

/// The secrets a site config block reads: `{ env = "X" }` and
/// `{ file = "P" }`.
fn secret_sources(text: &str) -> (Vec<String>, Vec<String>) {
    let mut env = Vec::new();
    let mut files = Vec::new();
    for (marker, found) in [("{ env = \"", &mut env), ("{ file = \"", &mut files)] {
        let mut rest = text;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            if let Some(end) = rest.find('"') {
                found.push(rest[..end].to_owned());
            }
        }
    }
    (env, files)
}

/// Real components for the modules the README's plugin examples name.
const README_MODULES: &[(&str, &str)] = &[
    ("interface_polling.wasm", artifacts::SNMP_INTERFACE_POLLING),
    ("heartbeat.wasm", artifacts::HEARTBEAT),
];

/// What an ini fragment (a block without `[Core]`) is completed with: a
/// polling plugin, plus `[main]` unless the fragment has its own.
const FRAGMENT_CORE: &str =
    "[Core]\nName = readme_fragment\nKind = polling\nModule = heartbeat.wasm\n";

/// The README's config examples, each loaded by `vigil check` exactly as
/// printed:
///
/// * an `ini` block is a plugin file: it goes into a plugin directory with
///   a real component under the `Module` name it gives (see
///   [`README_MODULES`]) and the directory a `files` grant names, under a
///   site that allows `files` and `snmp`; it must load with no error and
///   no warning. A block without `[Core]` is a fragment showing some
///   sections: it is completed with [`FRAGMENT_CORE`] (and `[main]
///   execute_frequency = 60` unless it has `[main]`) in front of it;
/// * a `toml` block is a site config; most are fragments showing one
///   section, so a block without a `[site]` table gets `[site] name =
///   "readme"` put in front of it (nothing else is added). The secrets it
///   reads are provided: each `{ env = "X" }` variable is set and each
///   `{ file = "P" }` file created (so P must be relative, as a README
///   example should be). It must load with no error.
///
/// Blocks with any other info string (`text`, `sh`) are not configs. A
/// TOML or ini block that is not a vigil config must say so with another
/// info string.
#[test]
fn every_readme_config_example_loads_as_printed() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let blocks = fenced_blocks(&readme);
    let (mut ini, mut toml) = (0, 0);
    for block in &blocks {
        let dir = tempfile::tempdir().expect("tempdir");
        let site_path = dir.path().join("site.toml");
        let mut env: Vec<(String, String)> = Vec::new();
        let expected_plugins = match block.info.as_str() {
            "ini" => {
                ini += 1;
                let plugins = dir.path().join("plugins");
                std::fs::create_dir(&plugins).expect("plugins dir");
                let mut file = String::new();
                if !block
                    .text
                    .lines()
                    .any(|l| l.trim().eq_ignore_ascii_case("[core]"))
                {
                    file.push_str(FRAGMENT_CORE);
                    if !block
                        .text
                        .lines()
                        .any(|l| l.trim().eq_ignore_ascii_case("[main]"))
                    {
                        file.push_str("[main]\nexecute_frequency = 60\n");
                    }
                }
                file.push_str(&block.text);
                std::fs::write(plugins.join("example.vigil-plugin"), &file).expect("write");
                for module in ini_values(&file, "module") {
                    let (_, artifact) = README_MODULES
                        .iter()
                        .find(|(name, _)| *name == module)
                        .unwrap_or_else(|| {
                            panic!("README.md:{}: add a component for Module = {module} to README_MODULES", block.line)
                        });
                    std::fs::copy(artifact, plugins.join(module)).expect("component");
                }
                for files in ini_values(&block.text, "files") {
                    std::fs::create_dir_all(plugins.join(files)).expect("files dir");
                }
                std::fs::write(
                    &site_path,
                    "[site]\nname = \"readme\"\n[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n\
                     [capabilities]\nallowed = [\"files\", \"snmp\"]\nfile_roots = [\"plugins\"]\n",
                )
                .expect("site.toml");
                1
            }
            "toml" => {
                toml += 1;
                let mut site = String::new();
                if !block.text.lines().any(|l| l.trim() == "[site]") {
                    site.push_str("[site]\nname = \"readme\"\n");
                }
                site.push_str(&block.text);
                std::fs::write(&site_path, site).expect("site.toml");
                let (vars, files) = secret_sources(&block.text);
                // Each secret its own value (a token may not be in two
                // roles), all longer than any minimum.
                for var in vars {
                    let value = format!("readme-example-secret-{var}");
                    env.push((var, value));
                }
                for file in files {
                    assert!(
                        Path::new(&file).is_relative(),
                        "README.md:{}: the example reads the secret file {file}: make it relative to the site file so the example is self-contained",
                        block.line
                    );
                    let path = dir.path().join(&file);
                    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
                    std::fs::write(path, format!("readme-example-secret-{file}\n"))
                        .expect("secret");
                }
                0
            }
            _ => continue,
        };
        let output = command(dir.path())
            .envs(env)
            .args(["--site", site_path.to_str().expect("utf-8"), "check"])
            .output()
            .expect("vigil check");
        let report = text(&output);
        assert_eq!(
            output.status.code(),
            Some(0),
            "README.md:{}: the ```{} example does not load:\n{report}",
            block.line,
            block.info
        );
        assert!(
            report.contains(&format!(", 0 warnings; {expected_plugins} plugins load"))
                || (expected_plugins == 0 && report.contains("0 plugins load")),
            "README.md:{}: ```{} example:\n{report}",
            block.line,
            block.info
        );
    }
    assert!(ini >= 1, "the README's plugin file example was not found");
    assert!(
        toml >= 3,
        "the README's site config examples were not found"
    );
}

/// Every site config in `plugin-configs/` loads with `vigil check`, and
/// with it every plugin file there (both sites list the directory itself),
/// without an error or a warning.
#[test]
fn every_file_in_plugin_configs_loads_as_printed() {
    let configs = repo().join("plugin-configs");
    let plugin_files = std::fs::read_dir(&configs)
        .expect("plugin-configs")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "vigil-plugin"))
        .count();
    assert!(plugin_files >= 5);
    let mut sites: Vec<PathBuf> = std::fs::read_dir(&configs)
        .expect("plugin-configs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    sites.sort();
    assert_eq!(sites.len(), 2, "{sites:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    for site in sites {
        let output = command(dir.path())
            // The multi-agent site leaves the cache to systemd's directory.
            .env("CACHE_DIRECTORY", dir.path().join("cache"))
            .args(["--site", site.to_str().expect("utf-8"), "check"])
            .output()
            .expect("vigil check");
        let report = text(&output);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {report}",
            site.display()
        );
        assert!(
            report.contains(&format!(
                "0 errors, 0 warnings; {plugin_files} plugins load"
            )),
            "{}: {report}",
            site.display()
        );
    }
}

// --- vigil check -------------------------------------------------------------

/// A site in a temporary directory with a plugin directory.
fn site_dir(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        format!(
            "[site]\nname = \"lab\"\n[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n\
             [storage]\npath = \"state/vigil.db\"\n{extra}"
        ),
    )
    .expect("site.toml");
    (dir, site)
}

#[test]
fn check_locates_every_problem_of_the_site_and_its_plugins() {
    let (dir, site) = site_dir("");
    // A site whose plugin directories are one good, one missing, and whose
    // plugins are one good (with a warning), one broken and one clashing.
    std::fs::write(
        &site,
        "[site]\nname = \"lab\"\n[plugins]\ndirectories = [\"plugins\", \"missing\"]\ncache_dir = \"cache\"\n\
         [[snmp.credentials]]\ndiscovery_plugins = [\"inventory\"]\nversion = \"2c\"\ncommunity = \"public\"\n",
    )
    .expect("site.toml");
    let plugins = dir.path().join("plugins");
    PluginFile::new("beat", "polling", artifacts::HEARTBEAT)
        .set("heartbeat", "label", "lab    ; the label")
        .write(&plugins, "a-beat");
    PluginFile::new("beat", "polling", artifacts::HEARTBEAT).write(&plugins, "b-beat-again");
    std::fs::write(
        plugins.join("c-broken.vigil-plugin"),
        "[Core]\nName = broken\nKind = poling\nModule = x.wasm\n[main]\nexecute_frequency = 60\n",
    )
    .expect("broken");
    let output = vigil(
        dir.path(),
        &["--site", site.to_str().expect("utf-8"), "check"],
    );
    let report = text(&output);
    assert_eq!(output.status.code(), Some(78), "{report}");
    let p = |name: &str| plugins.join(name).display().to_string();
    for expected in [
        format!(
            "error: {}: plugins.directories: {}: No such file or directory",
            site.display(),
            dir.path().join("missing").display()
        ),
        format!(
            "warning: {}:10: [heartbeat] label: the value contains \" ;\"",
            p("a-beat.vigil-plugin")
        ),
        format!(
            "error: {}: [Core] name \"beat\" is already used by {}",
            p("b-beat-again.vigil-plugin"),
            p("a-beat.vigil-plugin")
        ),
        format!(
            "error: {}:3: [Core] kind \"poling\" is not one of",
            p("c-broken.vigil-plugin")
        ),
        format!(
            "error: {}:4: [Core] module: no component at",
            p("c-broken.vigil-plugin")
        ),
        format!(
            "warning: {}:6: snmp.credentials: discovery_plugins names \"inventory\", which is no discovery plugin",
            site.display()
        ),
        format!("{}: 4 errors, 2 warnings; 1 plugins load", site.display()),
    ] {
        assert!(
            report.contains(&expected),
            "missing {expected:?} in\n{report}"
        );
    }

    // A secret the site names is read: a missing file is an error at its line.
    std::fs::write(
        &site,
        "[site]\nname = \"lab\"\n[plugins]\ndirectories = [\"plugins\"]\ncache_dir = \"cache\"\n\
         [[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"2c\"\ncommunity = { file = \"secrets/community\" }\n",
    )
    .expect("site.toml");
    let output = vigil(
        dir.path(),
        &["--site", site.to_str().expect("utf-8"), "check"],
    );
    let report = text(&output);
    assert_eq!(output.status.code(), Some(78), "{report}");
    assert!(
        report.contains(&format!("error: {}:9: ", site.display()))
            && report.contains("secrets/community"),
        "{report}"
    );

    // Clean apart from a warning: exit 0, the warning printed.
    std::fs::create_dir(dir.path().join("secrets")).expect("secrets");
    std::fs::write(dir.path().join("secrets/community"), "public\n").expect("secret");
    std::fs::remove_file(plugins.join("b-beat-again.vigil-plugin")).expect("rm");
    std::fs::remove_file(plugins.join("c-broken.vigil-plugin")).expect("rm");
    let output = vigil(
        dir.path(),
        &["--site", site.to_str().expect("utf-8"), "check"],
    );
    let report = text(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(
        report.contains("0 errors, 1 warnings; 1 plugins load")
            && report.contains("[heartbeat] label: the value contains"),
        "{report}"
    );
}

/// The inline-comment warning reaches `vigil plugins check` and the log of
/// `vigil run` (at load), located at file, line and key; the plugin still
/// loads with the text as part of the value.
#[test]
fn a_value_with_an_inline_comment_is_warned_about_where_it_is_loaded() {
    let (dir, site) = site_dir("");
    let file = PluginFile::new("beat", "polling", artifacts::HEARTBEAT)
        .set("heartbeat", "label", "lab # our lab")
        .write(&dir.path().join("plugins"), "beat");
    let expected = format!(
        "{}:10: [heartbeat] label: the value contains \" #\"",
        file.display()
    );
    let output = vigil(
        dir.path(),
        &["plugins", "check", file.to_str().expect("utf-8")],
    );
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("warning: {expected}")),
        "{}",
        text(&output)
    );

    let log = dir.path().join("vigil.log");
    let child = command(dir.path())
        .args(["--site", site.to_str().expect("utf-8"), "run"])
        .env("VIGIL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("vigil run");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the plugin to load", Duration::from_secs(60), || {
        read().contains("plugin loaded")
    });
    stop(child);
    let log = read();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the value contains \" #\""))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("WARN")
            && warnings[0].contains(&format!("file={}", file.display()))
            && warnings[0].contains("line=10")
            && warnings[0].contains("[heartbeat] label"),
        "{log}"
    );
}

// --- The default site path -------------------------------------------------

/// Read commands without a site config say so and exit 78 instead of
/// opening an empty database in the working directory; the site is
/// `--site`, else `VIGIL_SITE`, else the default file when it exists
/// (`/etc/vigil/site.toml`, moved for the test by `VIGIL_DEFAULT_SITE`).
#[test]
fn without_a_site_read_commands_exit_78_and_the_default_site_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["status"][..],
        &["status", "--json"][..],
        &["resources"][..],
        &["metrics"][..],
        &["runs"][..],
        &["check"][..],
    ] {
        let output = vigil(dir.path(), args);
        let report = text(&output);
        assert_eq!(output.status.code(), Some(78), "{args:?}: {report}");
        assert!(
            report.contains("no site config") && report.contains("/etc/vigil/site.toml"),
            "{args:?}: {report}"
        );
    }
    assert_eq!(
        files_below(dir.path()),
        BTreeSet::new(),
        "nothing is created in the working directory"
    );

    // Three sites, each telling `vigil check` which one it read.
    let write = |name: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("[site]\nname = \"{name}\"\n")).expect("site");
        path
    };
    let (default, env, flag) = (write("default"), write("env"), write("flag"));
    let checked = |command: &mut Command| {
        let output = command.output().expect("vigil check");
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let summary = |path: &Path| format!("{}: 0 errors", path.display());
    let mut base = command(dir.path());
    base.env("VIGIL_DEFAULT_SITE", &default).arg("check");
    assert!(checked(&mut base).contains(&summary(&default)));
    let mut with_env = command(dir.path());
    with_env
        .env("VIGIL_DEFAULT_SITE", &default)
        .env("VIGIL_SITE", &env)
        .arg("check");
    assert!(checked(&mut with_env).contains(&summary(&env)));
    let mut with_flag = command(dir.path());
    with_flag
        .env("VIGIL_DEFAULT_SITE", &default)
        .env("VIGIL_SITE", &env)
        .args(["--site", flag.to_str().expect("utf-8"), "check"]);
    assert!(checked(&mut with_flag).contains(&summary(&flag)));

    // A read command reads the default site's database (here: none yet,
    // so `status` says vigil is not running, exit 3, instead of 78).
    let output = command(dir.path())
        .env("VIGIL_DEFAULT_SITE", &default)
        .arg("status")
        .output()
        .expect("status");
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
}

// --- systemd and container layouts -----------------------------------------

/// `KEY=value` settings of a unit file (the last of each key).
fn unit_settings(unit: &str) -> std::collections::BTreeMap<String, String> {
    unit.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Runs `vigil run` the way a deployment does: the site file in a config
/// directory `<root>/etc/vigil` that vigil must not write to, found without
/// `--site` (the default path), with `STATE_DIRECTORY` and
/// `CACHE_DIRECTORY` set, in `workdir`; every path re-rooted under `root`.
/// Checks vigil writes its database and cache there and nothing into the
/// config directory, and that `vigil status` finds the running agent with
/// the same environment and no flag.
fn run_with_layout(state: &str, cache: &str, workdir: &str) {
    let root = tempfile::tempdir().expect("tempdir");
    let under = |path: &str| root.path().join(path.trim_start_matches('/'));
    let etc = under("/etc/vigil");
    std::fs::create_dir_all(etc.join("plugins")).expect("etc");
    for dir in [state, cache, workdir] {
        std::fs::create_dir_all(under(dir)).expect("dir");
    }
    std::fs::write(
        etc.join("site.toml"),
        "[site]\nname = \"lab\"\n[plugins]\ndirectories = [\"plugins\"]\n",
    )
    .expect("site.toml");
    PluginFile::new("beat", "polling", artifacts::HEARTBEAT).write(&etc.join("plugins"), "beat");
    let config_before = files_below(&etc);
    let env = [
        ("STATE_DIRECTORY", under(state)),
        ("CACHE_DIRECTORY", under(cache)),
        ("VIGIL_DEFAULT_SITE", etc.join("site.toml")),
    ];
    let log = root.path().join("vigil.log");
    let child = command(&under(workdir))
        .envs(env.clone())
        .env("VIGIL_LOG", "info")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("vigil run");
    let status = || {
        command(&under(workdir))
            .envs(env.clone())
            .arg("status")
            .output()
            .expect("status")
    };
    wait_until(
        "vigil status to see it running",
        Duration::from_secs(60),
        || status().status.success(),
    );
    wait_until("the plugin to load", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("plugin loaded"))
    });
    stop(child);
    assert!(
        under(state).join("vigil.db").is_file(),
        "{:?}",
        files_below(root.path())
    );
    assert!(
        !files_below(&under(cache)).is_empty(),
        "the precompiled cache is in CACHE_DIRECTORY: {:?}",
        files_below(root.path())
    );
    assert_eq!(
        files_below(&etc),
        config_before,
        "vigil wrote into its config directory"
    );
}

/// The shipped unit passes `systemd-analyze verify` without a single
/// complaint (it exits 0 even for unknown keys, so its output must be
/// empty), and the directories it gives vigil are the ones vigil writes to.
#[test]
fn the_systemd_unit_verifies_and_vigil_writes_where_it_may() {
    let unit_path = repo().join("host/deploy/vigil.service");
    let unit = std::fs::read_to_string(&unit_path).expect("vigil.service");
    let settings = unit_settings(&unit);
    let setting = |key: &str| settings.get(key).map(String::as_str);
    assert_eq!(setting("StateDirectory"), Some("vigil"));
    assert_eq!(setting("CacheDirectory"), Some("vigil"));
    assert_eq!(setting("ProtectSystem"), Some("strict"));
    assert_eq!(setting("ReadOnlyPaths"), Some("/etc/vigil"));
    assert_eq!(setting("RestartPreventExitStatus"), Some("78"));

    match Command::new("systemd-analyze").arg("--version").output() {
        Err(e) => println!(
            "SKIPPED systemd-analyze verify: systemd-analyze is not installed ({e}); .ci/run installs it (Debian package systemd)"
        ),
        Ok(_) => {
            // verify insists the ExecStart binary exists: point it at the
            // one cargo built; everything else is the file as shipped.
            let dir = tempfile::tempdir().expect("tempdir");
            let copy = dir.path().join("vigil.service");
            std::fs::write(
                &copy,
                unit.replace("/usr/local/bin/vigil", &vigil_bin().display().to_string()),
            )
            .expect("unit copy");
            let output = Command::new("systemd-analyze")
                .args(["verify", copy.to_str().expect("utf-8")])
                .output()
                .expect("systemd-analyze verify");
            assert!(
                output.status.success() && output.stderr.is_empty() && output.stdout.is_empty(),
                "systemd-analyze verify: {}",
                text(&output)
            );
        }
    }
    // systemd sets STATE_DIRECTORY=/var/lib/<StateDirectory>, and so on.
    run_with_layout(
        "/var/lib/vigil",
        "/var/cache/vigil",
        setting("WorkingDirectory").expect("WorkingDirectory"),
    );
}

/// The Containerfile's runtime stage: its `ENV` names the state and cache
/// directories, which it creates for the `vigil` user, works in the state
/// directory; run with that environment (re-rooted in a temporary
/// directory: there is no container engine here) and a config directory it
/// must not write to, vigil writes exactly there.
#[test]
fn the_container_layout_is_the_one_vigil_uses() {
    let file =
        std::fs::read_to_string(repo().join("host/deploy/Containerfile")).expect("Containerfile");
    // The runtime stage, with continuation lines joined.
    let stage = file
        .rsplit("\nFROM ")
        .next()
        .expect("a stage")
        .replace("\\\n", " ");
    let mut env = std::collections::BTreeMap::new();
    let mut workdir = None;
    let mut user = None;
    let mut run = String::new();
    for line in stage.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("ENV") => env.extend(
                words.filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))),
            ),
            Some("WORKDIR") => workdir = words.next().map(str::to_owned),
            Some("USER") => user = words.next().map(str::to_owned),
            Some("RUN") => run.push_str(line),
            _ => {}
        }
    }
    let state = env
        .get("STATE_DIRECTORY")
        .expect("ENV STATE_DIRECTORY")
        .clone();
    let cache = env
        .get("CACHE_DIRECTORY")
        .expect("ENV CACHE_DIRECTORY")
        .clone();
    assert_eq!(user.as_deref(), Some("vigil"));
    assert_eq!(workdir.as_deref(), Some(state.as_str()));
    for dir in [&state, &cache] {
        assert!(
            run.contains("chown vigil:vigil") && run.contains(dir.as_str()),
            "the image must create {dir} for the vigil user: {run}"
        );
    }
    run_with_layout(&state, &cache, &state);
}

// --- SIGHUP ----------------------------------------------------------------

/// SIGHUP in `vigil run`: new plugin directories and plugin rules apply at
/// once, a setting that needs a restart is named in the log and not
/// applied, and a broken config is refused at its line while the running
/// one stays.
#[test]
fn sighup_reloads_the_site_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["first", "second"] {
        std::fs::create_dir(dir.path().join(sub)).expect("plugin dir");
    }
    PluginFile::new("one", "polling", artifacts::HEARTBEAT).write(&dir.path().join("first"), "one");
    PluginFile::new("two", "polling", artifacts::HEARTBEAT)
        .set("sandbox", "deadline", "20s")
        .write(&dir.path().join("second"), "two");
    let site = dir.path().join("site.toml");
    let write_site = |directory: &str, extra: &str| {
        std::fs::write(
            &site,
            format!(
                "[site]\nname = \"lab\"\n[plugins]\ndirectories = [\"{directory}\"]\ncache_dir = \"cache\"\n\
                 [storage]\npath = \"state/vigil.db\"\n{extra}"
            ),
        )
        .expect("site.toml");
    };
    write_site("first", "");
    let log = dir.path().join("vigil.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let child = command(dir.path())
        .args(["--site", site.to_str().expect("utf-8"), "run"])
        .env("VIGIL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("vigil run");
    // `plugin loaded plugin=NAME` lines and the like.
    let count = |event: &str, plugin: &str| {
        read()
            .lines()
            .filter(|l| l.contains(event) && l.contains(&format!("plugin={plugin} ")))
            .count()
    };
    wait_until("plugin one to load", Duration::from_secs(60), || {
        count("plugin loaded", "one") == 1
    });

    // New directory, and a database path (needs a restart).
    write_site("second", "");
    std::fs::write(
        &site,
        std::fs::read_to_string(&site)
            .expect("site")
            .replace("state/vigil.db", "elsewhere/vigil.db"),
    )
    .expect("site.toml");
    signal(&child, "HUP");
    wait_until("plugin two instead of one", Duration::from_secs(60), || {
        count("plugin loaded", "two") == 1 && count("plugin unloaded", "one") == 1
    });
    let text = read();
    assert!(text.contains("SIGHUP: reloading the site config"), "{text}");
    assert!(
        text.contains("site config: storage.path changed; not applied until vigil restarts"),
        "{text}"
    );
    assert!(
        !dir.path().join("elsewhere").exists(),
        "storage.path is not applied live"
    );

    // Plugin rules apply live: a cap below plugin two's deadline refuses it.
    write_site("second", "[sandbox.caps]\ndeadline = \"15s\"\n");
    signal(&child, "HUP");
    wait_until(
        "plugin two refused by the new cap",
        Duration::from_secs(60),
        || read().contains("deadline = 20s is above the site's cap of 15s"),
    );
    wait_until("plugin two unloaded", Duration::from_secs(30), || {
        count("plugin unloaded", "two") == 1
    });

    // A broken config is refused at its line; the running one stays.
    write_site("first", "[sandbox]\nmax_concurrent_runs = 0\n");
    signal(&child, "HUP");
    wait_until("the refusal", Duration::from_secs(30), || {
        read().contains(&format!(
            "site config not reloaded, the running one stays: {}:9: sandbox.max_concurrent_runs",
            site.display()
        ))
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count("plugin loaded", "one"),
        1,
        "the broken config's directory was not applied: {}",
        read()
    );
    stop(child);
}
