//! The set of loaded plugins, kept in step with the plugin directories.
//!
//! A scan ([`PluginRegistry::start_rescan`]) reads every `*.vigil-plugin`
//! file and its module and loads what is new, reloads what changed (ini
//! text or `.wasm` bytes), unloads what disappeared and reports what is
//! broken, which is then skipped: one bad file never stops the others. The
//! file on disk is the truth: a plugin whose new version is broken is
//! unloaded, not left running in its old version.
//!
//! **Nothing waits on a compile.** A scan itself only reads, hashes and
//! checks files and loads components the precompiled cache already has
//! (a few milliseconds each). A component that needs compiling is queued
//! for the registry's one compile thread and loads (a `Loaded` or
//! `Reloaded` event) when it is ready; until then a changed plugin keeps
//! running in its previous version. Startup therefore takes as long as
//! reading the files and loading cached code, whatever one plugin's
//! compile costs, and a plugin that takes long to compile delays only the
//! plugins queued behind it. The compile cost of any one plugin is bounded
//! before compiling by `[plugins]` limits ([`crate::sandbox::cache`]): the
//! worst component within the defaults took 57 s on one core, a bundled
//! plugin 0.4 to 1.8 s. One thread, compiling single-threaded, leaves the
//! other core to the running plugins; the price is a slower cold start
//! (50 uncached plugins of the bundled size load over about a minute, one
//! by one, while cached ones run from the first second).
//!
//! **Bounded work per scan.** The queue holds one job per plugin file (a
//! newer version replaces a queued one, and a job whose file changed again
//! is dropped), and a job holds no bytes: the compile thread reads the
//! module again, within `plugins.max_module_size`, and drops the job if
//! its hash no longer matches. A compile failure is remembered with the
//! file's fingerprint and not retried until the file changes, so a bomb is
//! refused once, not on every scan. Modules whose opened file has the same
//! identity and change time (`ctime`) as at the last scan are not read or
//! hashed again, so a scan of 1,000 unchanged plugins reads their ini files
//! and stats their modules.
//!
//! **No descriptor per plugin.** Files are read and closed; compiled code
//! is held in memory, not mapped from the cache file (see
//! [`crate::sandbox::cache`]): loading 1,100 plugins leaves the process
//! with the descriptors it had before (12 in the test), as does loading
//! 24 distinct ones from the cache and running each once. After each scan that changed the loaded set
//! (and at least every 10 minutes) the precompiled cache is pruned of what
//! no loaded or queued plugin uses.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::PluginPolicy;
use super::manifest::{PLUGIN_FILE_EXTENSION, PluginManifest};
use crate::sandbox::cache::{FileStamp, MAX_MANIFEST_BYTES, OpenedFile};
use crate::sandbox::{PreparedPlugin, Sandbox, sha256_hex};

/// The cache is pruned after a scan that changed the loaded set, and at
/// least this often.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// A plugin that passed every check and is ready to run.
pub struct LoadedPlugin {
    pub prepared: PreparedPlugin,
    fingerprint: String,
}

impl LoadedPlugin {
    pub fn manifest(&self) -> &PluginManifest {
        &self.prepared.manifest
    }
    pub fn name(&self) -> &str {
        &self.prepared.manifest.name
    }
}

/// A change in the loaded set.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEvent {
    Loaded {
        name: String,
        path: PathBuf,
    },
    Reloaded {
        name: String,
        path: PathBuf,
    },
    Unloaded {
        name: String,
        path: PathBuf,
    },
    /// The file is broken; `error` has one located line per problem.
    Failed {
        path: PathBuf,
        error: String,
    },
}

/// A broken file, with the fingerprint it was broken at, so the same
/// error is reported once rather than on every rescan.
#[derive(Clone)]
struct Failure {
    fingerprint: String,
    error: String,
    /// The component itself was refused (too costly, does not compile,
    /// wrong world): not retried until the file changes. Other failures
    /// (unreadable files, name clashes) depend on other files and are
    /// re-examined on every scan.
    sticky: bool,
}

type Report = Arc<Mutex<Vec<RegistryEvent>>>;

/// A plugin waiting for (or in) compilation.
struct Pending {
    fingerprint: String,
    name: String,
    wasm_sha256: String,
    /// Taken by the compile thread when it starts.
    job: Option<Job>,
    /// The scan that queued it.
    generation: u64,
}

struct Job {
    manifest: Arc<PluginManifest>,
    report: Option<Report>,
}

#[derive(Default)]
struct State {
    loaded: BTreeMap<PathBuf, Arc<LoadedPlugin>>,
    failed: BTreeMap<PathBuf, Failure>,
    pending: BTreeMap<PathBuf, Pending>,
    /// Paths whose pending job has not been taken yet, in order.
    queue: VecDeque<PathBuf>,
    generation: u64,
    worker: bool,
    closed: bool,
    last_prune: Option<Instant>,
}

struct Shared {
    sandbox: Arc<Sandbox>,
    /// The site's rules and directories; replaced by
    /// [`PluginRegistry::reconfigure`] when the site config is reloaded.
    config: Mutex<Config>,
    state: Mutex<State>,
    /// Signalled when a job is queued or finished, or the registry closes.
    changed: Condvar,
    events: broadcast::Sender<RegistryEvent>,
}

/// The site's part in loading: what the policy allows and where to look.
#[derive(Clone)]
struct Config {
    policy: Arc<PluginPolicy>,
    directories: Vec<PathBuf>,
    /// Bumped when the policy changes: part of every file's fingerprint,
    /// so each plugin is checked again under the new rules.
    epoch: u64,
}

/// What a scan remembers between scans (held under the scan lock).
#[derive(Default)]
struct ScanMemo {
    /// Module path -> stamp and SHA-256 at the last scan.
    hashes: HashMap<PathBuf, (FileStamp, String)>,
}

pub struct PluginRegistry {
    shared: Arc<Shared>,
    scan: Mutex<ScanMemo>,
}

impl Drop for PluginRegistry {
    fn drop(&mut self) {
        // The compile thread finishes what it is compiling, then exits.
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
    }
}

/// What a scan decided for one file.
enum Decision {
    Unchanged,
    /// The file went back to the loaded version while a newer one waited.
    CancelPending,
    Ready(Box<LoadedPlugin>),
    Queue {
        manifest: Arc<PluginManifest>,
        fingerprint: String,
        wasm_sha256: String,
    },
    Failed(Failure),
}

/// The registry as it was when a scan started.
struct Snapshot {
    loaded: BTreeMap<PathBuf, String>,
    pending: BTreeMap<PathBuf, String>,
    failed: BTreeMap<PathBuf, Failure>,
}

impl PluginRegistry {
    pub fn new(
        sandbox: Arc<Sandbox>,
        policy: PluginPolicy,
        directories: Vec<PathBuf>,
    ) -> PluginRegistry {
        let (events, _) = broadcast::channel(256);
        PluginRegistry {
            shared: Arc::new(Shared {
                sandbox,
                config: Mutex::new(Config {
                    policy: Arc::new(policy),
                    directories,
                    epoch: 0,
                }),
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                events,
            }),
            scan: Mutex::new(ScanMemo::default()),
        }
    }

    pub fn directories(&self) -> Vec<PathBuf> {
        self.shared.config().directories
    }

    /// Takes the site's new rules and plugin directories (a reloaded site
    /// config). The next scan loads what the new directories hold, unloads
    /// what only the old ones held and, when the policy changed, checks
    /// every plugin again under it (a plugin it now refuses is unloaded
    /// and reported). Returns whether anything changed.
    pub fn reconfigure(&self, policy: PluginPolicy, directories: Vec<PathBuf>) -> bool {
        let mut config = self.shared.config.lock().unwrap_or_else(|p| p.into_inner());
        let policy_changed = *config.policy != policy;
        let changed = policy_changed || config.directories != directories;
        if policy_changed {
            config.policy = Arc::new(policy);
            config.epoch += 1;
        }
        config.directories = directories;
        changed
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.shared.sandbox
    }

    /// Changes to the loaded set, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.shared.events.subscribe()
    }

    pub fn plugins(&self) -> Vec<Arc<LoadedPlugin>> {
        self.shared.lock().loaded.values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.shared
            .lock()
            .loaded
            .values()
            .find(|p| p.name() == name)
            .cloned()
    }

    /// Broken plugin files and why.
    pub fn failures(&self) -> Vec<(PathBuf, String)> {
        self.shared
            .lock()
            .failed
            .iter()
            .map(|(path, failure)| (path.clone(), failure.error.clone()))
            .collect()
    }

    /// Plugin files waiting for their component to compile, with the
    /// plugin's name.
    pub fn compiling(&self) -> Vec<(PathBuf, String)> {
        self.shared
            .lock()
            .pending
            .iter()
            .map(|(path, p)| (path.clone(), p.name.clone()))
            .collect()
    }

    /// Brings the loaded set in line with the directories without waiting
    /// for any compile: returns the changes made now; components that need
    /// compiling load in the background and are announced to subscribers.
    /// Reads files, so call it off the async runtime (`spawn_blocking`).
    pub fn start_rescan(&self) -> Vec<RegistryEvent> {
        self.scan(None).0
    }

    /// Like [`PluginRegistry::start_rescan`], then waits for the compiles
    /// it queued and returns their outcome too (for the CLI and tests).
    pub fn rescan(&self) -> Vec<RegistryEvent> {
        let report: Report = Arc::new(Mutex::new(Vec::new()));
        let (mut events, generation) = self.scan(Some(report.clone()));
        {
            let mut state = self.shared.lock();
            while !state.closed && state.pending.values().any(|p| p.generation <= generation) {
                state = self
                    .shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        events.append(&mut report.lock().unwrap_or_else(|p| p.into_inner()));
        events
    }

    /// One scan: decide for every file (no lock held while reading), apply
    /// the decisions, queue compiles, announce the changes, prune the cache.
    fn scan(&self, report: Option<Report>) -> (Vec<RegistryEvent>, u64) {
        let mut memo = self.scan.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.shared.config();
        let files = plugin_files(&config.directories);
        let present: HashSet<&PathBuf> = files.iter().collect();
        // The registry as it is now, and the names each file holds (a
        // changed plugin still compiling holds its old name and its new
        // one), to refuse duplicates.
        let (snapshot, mut claims) = {
            let state = self.shared.lock();
            let snapshot = Snapshot {
                loaded: state
                    .loaded
                    .iter()
                    .map(|(p, l)| (p.clone(), l.fingerprint.clone()))
                    .collect(),
                pending: state
                    .pending
                    .iter()
                    .map(|(p, q)| (p.clone(), q.fingerprint.clone()))
                    .collect(),
                failed: state.failed.clone(),
            };
            let mut claims: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
            let names = state
                .loaded
                .iter()
                .map(|(path, plugin)| (path, plugin.name()))
                .chain(
                    state
                        .pending
                        .iter()
                        .map(|(path, p)| (path, p.name.as_str())),
                );
            for (path, name) in names {
                if present.contains(path) {
                    claims
                        .entry(path.clone())
                        .or_default()
                        .push(name.to_owned());
                }
            }
            (snapshot, claims)
        };

        let mut seen_modules = HashSet::new();
        let mut decisions = Vec::with_capacity(files.len());
        for path in &files {
            let decision = self.examine(
                path,
                &config,
                &snapshot,
                &mut claims,
                &mut memo,
                &mut seen_modules,
            );
            decisions.push((path.clone(), decision));
        }
        memo.hashes
            .retain(|module, _| seen_modules.contains(module));
        drop(memo);

        let mut events = Vec::new();
        let (generation, in_use, prune) = {
            let mut state = self.shared.lock();
            state.generation += 1;
            let generation = state.generation;
            let gone: Vec<PathBuf> = state
                .loaded
                .keys()
                .chain(state.pending.keys())
                .chain(state.failed.keys())
                .filter(|p| !present.contains(p))
                .cloned()
                .collect();
            for path in gone {
                state.pending.remove(&path);
                state.failed.remove(&path);
                if let Some(plugin) = state.loaded.remove(&path) {
                    events.push(RegistryEvent::Unloaded {
                        name: plugin.name().to_owned(),
                        path,
                    });
                }
            }
            let mut queued = false;
            for (path, decision) in decisions {
                match decision {
                    Decision::Unchanged => {}
                    Decision::CancelPending => {
                        state.pending.remove(&path);
                    }
                    Decision::Ready(plugin) => {
                        state.pending.remove(&path);
                        state.failed.remove(&path);
                        events.push(loaded_event(&state, &path, plugin.name()));
                        state.loaded.insert(path, Arc::new(*plugin));
                    }
                    Decision::Queue {
                        manifest,
                        fingerprint,
                        wasm_sha256,
                    } => {
                        state.failed.remove(&path);
                        tracing::info!(plugin = %manifest.name, file = %path.display(), "plugin queued for compilation");
                        let waiting = state.pending.get(&path).is_some_and(|p| p.job.is_some());
                        state.pending.insert(
                            path.clone(),
                            Pending {
                                fingerprint,
                                name: manifest.name.clone(),
                                wasm_sha256,
                                job: Some(Job {
                                    manifest,
                                    report: report.clone(),
                                }),
                                generation,
                            },
                        );
                        if !waiting {
                            state.queue.push_back(path);
                        }
                        queued = true;
                    }
                    Decision::Failed(failure) => {
                        state.pending.remove(&path);
                        events.extend(record_failure(&mut state, &path, failure));
                    }
                }
            }
            if queued && !state.worker {
                state.worker = self.start_worker();
            }
            let prune = !events.is_empty()
                || state
                    .last_prune
                    .is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if prune {
                state.last_prune = Some(Instant::now());
            }
            (generation, in_use(&state), prune)
        };
        self.shared.changed.notify_all();
        self.shared.announce(&events);
        if !self.shared.lock().worker {
            // No compile thread (the system refused one): compile here.
            while self.shared.compile_next(false) {}
        }
        if prune {
            self.shared
                .sandbox
                .artifact_cache()
                .prune(&in_use, config.policy.cache_max_size);
        }
        (events, generation)
    }

    fn start_worker(&self) -> bool {
        let shared = self.shared.clone();
        match std::thread::Builder::new()
            .name("vigil-compile".into())
            .spawn(move || while shared.compile_next(true) {})
        {
            Ok(_) => true,
            Err(error) => {
                tracing::error!(%error, "cannot start the plugin compile thread; compiling during scans");
                false
            }
        }
    }

    /// Decides what to do with one plugin file.
    fn examine(
        &self,
        path: &Path,
        config: &Config,
        snapshot: &Snapshot,
        claims: &mut BTreeMap<PathBuf, Vec<String>>,
        memo: &mut ScanMemo,
        seen_modules: &mut HashSet<PathBuf>,
    ) -> Decision {
        let failed = |fingerprint: &str, error: String, sticky: bool| {
            Decision::Failed(Failure {
                fingerprint: fingerprint.to_owned(),
                error,
                sticky,
            })
        };
        let ini = match OpenedFile::open(path, MAX_MANIFEST_BYTES, "the plugin file size limit")
            .and_then(OpenedFile::read)
        {
            Ok(ini) => ini,
            Err(e) => {
                claims.remove(path);
                return failed("", e.to_string(), false);
            }
        };
        let ini_hash = sha256_hex(&ini);
        let text = match String::from_utf8(ini) {
            Ok(text) => text,
            Err(_) => {
                claims.remove(path);
                return failed(
                    &ini_hash,
                    format!("{}: not UTF-8 text", path.display()),
                    false,
                );
            }
        };
        let manifest = match PluginManifest::parse(path, &text, &config.policy) {
            Ok(manifest) => manifest,
            Err(e) => {
                claims.remove(path);
                return failed(&ini_hash, e.to_string(), false);
            }
        };
        let module = match OpenedFile::open(
            &manifest.module,
            manifest.loading.max_module_size,
            "plugins.max_module_size",
        ) {
            Ok(module) => module,
            Err(e) => {
                claims.remove(path);
                return failed(&ini_hash, format!("{}: {e}", path.display()), false);
            }
        };
        seen_modules.insert(manifest.module.clone());
        let stamp = module.stamp();
        // The bytes, when this scan read them.
        let mut wasm: Option<Vec<u8>> = None;
        let wasm_sha256 = match memo.hashes.get(&manifest.module) {
            Some((seen, hash)) if *seen == stamp => hash.clone(),
            _ => match module.read() {
                Ok(bytes) => {
                    let hash = sha256_hex(&bytes);
                    memo.hashes
                        .insert(manifest.module.clone(), (stamp, hash.clone()));
                    wasm = Some(bytes);
                    hash
                }
                Err(e) => {
                    claims.remove(path);
                    return failed(&ini_hash, format!("{}: {e}", path.display()), false);
                }
            },
        };
        let fingerprint = format!("{ini_hash}:{wasm_sha256}:{}", config.epoch);

        if snapshot.pending.get(path) == Some(&fingerprint) {
            return Decision::Unchanged;
        }
        if snapshot.loaded.get(path) == Some(&fingerprint) {
            return if snapshot.pending.contains_key(path) {
                claims.insert(path.to_owned(), vec![manifest.name.clone()]);
                Decision::CancelPending
            } else {
                Decision::Unchanged
            };
        }
        if let Some(failure) = snapshot.failed.get(path)
            && failure.sticky
            && failure.fingerprint == fingerprint
        {
            return Decision::Unchanged;
        }
        if let Some((other, _)) = claims
            .iter()
            .find(|(p, names)| p.as_path() != path && names.contains(&manifest.name))
        {
            let error = format!(
                "{}: [Core] name {:?} is already used by {}",
                path.display(),
                manifest.name,
                other.display()
            );
            claims.remove(path);
            return failed(&fingerprint, error, false);
        }
        // Once per version of the file: an unchanged file never gets here.
        for warning in &manifest.warnings {
            tracing::warn!(file = %warning.path.display(), line = warning.line, "plugin file: {}", warning.message);
        }

        let manifest = Arc::new(manifest);
        let sandbox = &self.shared.sandbox;
        if sandbox
            .artifact_cache()
            .cached(sandbox.engine(), &wasm_sha256)
            .is_none()
        {
            let names = claims.entry(path.to_owned()).or_default();
            if !names.contains(&manifest.name) {
                names.push(manifest.name.clone());
            }
            return Decision::Queue {
                manifest,
                fingerprint,
                wasm_sha256,
            };
        }
        // Cached: ready in milliseconds, so load it now.
        let wasm = match wasm {
            Some(wasm) => wasm,
            None => match read_module(&manifest, &wasm_sha256) {
                Ok(wasm) => wasm,
                Err(error) => {
                    claims.remove(path);
                    return failed(&ini_hash, format!("{}: {error}", path.display()), false);
                }
            },
        };
        match prepare(sandbox, manifest.clone(), &wasm, wasm_sha256) {
            Ok(prepared) => {
                claims.insert(path.to_owned(), vec![manifest.name.clone()]);
                Decision::Ready(Box::new(LoadedPlugin {
                    prepared,
                    fingerprint,
                }))
            }
            Err(error) => {
                claims.remove(path);
                failed(&fingerprint, format!("{}: {error}", path.display()), true)
            }
        }
    }
}

/// Every plugin file in `directories`, sorted for a stable load order.
fn plugin_files(directories: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in directories {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(directory = %dir.display(), error = %e, "cannot read plugin directory");
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|ext| ext == PLUGIN_FILE_EXTENSION)
                && path.is_file()
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the next queued job and compiles it. With `wait`, blocks until
    /// there is one; returns false when the registry is closed (or, without
    /// `wait`, when the queue is empty).
    fn compile_next(&self, wait: bool) -> bool {
        let (path, job, fingerprint, wasm_sha256) = {
            let mut state = self.lock();
            loop {
                if state.closed {
                    return false;
                }
                if let Some(path) = state.queue.pop_front() {
                    let Some(pending) = state.pending.get_mut(&path) else {
                        continue;
                    };
                    let Some(job) = pending.job.take() else {
                        continue;
                    };
                    let taken = (
                        path,
                        job,
                        pending.fingerprint.clone(),
                        pending.wasm_sha256.clone(),
                    );
                    break taken;
                }
                if !wait {
                    return false;
                }
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        // The job holds no bytes: read the module again, and give up if it
        // changed since the scan (the next scan sees the new version).
        let result = match read_module(&job.manifest, &wasm_sha256) {
            Ok(wasm) => {
                let started = Instant::now();
                let result = prepare(&self.sandbox, job.manifest.clone(), &wasm, wasm_sha256);
                tracing::info!(
                    plugin = %job.manifest.name,
                    seconds = started.elapsed().as_secs_f64(),
                    ok = result.is_ok(),
                    "plugin compiled"
                );
                Some(result)
            }
            Err(error) => {
                tracing::info!(plugin = %job.manifest.name, %error, "plugin changed while queued; the next scan picks it up");
                None
            }
        };
        let events = {
            let mut state = self.lock();
            let current = state
                .pending
                .get(&path)
                .is_some_and(|p| p.fingerprint == fingerprint && p.job.is_none());
            let mut events = Vec::new();
            if current {
                state.pending.remove(&path);
                match result {
                    None => {}
                    Some(Ok(prepared)) => {
                        state.failed.remove(&path);
                        events.push(loaded_event(&state, &path, &job.manifest.name));
                        state.loaded.insert(
                            path.clone(),
                            Arc::new(LoadedPlugin {
                                prepared,
                                fingerprint,
                            }),
                        );
                    }
                    Some(Err(error)) => {
                        let failure = Failure {
                            fingerprint,
                            error: format!("{}: {error}", path.display()),
                            sticky: true,
                        };
                        events = record_failure(&mut state, &path, failure);
                    }
                }
            }
            // Logged and reported while the state lock is held: a `rescan`
            // waiting for this compile returns once the pending entry is
            // gone, and its caller (`vigil plugins list`) may exit at once;
            // the outcome must already be in the report and in the log.
            for event in &events {
                log_event(event);
            }
            if let Some(report) = job.report.as_ref() {
                report
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&events);
            }
            events
        };
        self.changed.notify_all();
        for event in events {
            // No subscribers is fine.
            let _ = self.events.send(event);
        }
        true
    }

    fn announce(&self, events: &[RegistryEvent]) {
        for event in events {
            log_event(event);
            // No subscribers is fine.
            let _ = self.events.send(event.clone());
        }
    }
}

/// Reads the manifest's module again and checks it is still the version
/// that was scanned.
fn read_module(manifest: &PluginManifest, wasm_sha256: &str) -> Result<Vec<u8>, String> {
    let wasm = OpenedFile::open(
        &manifest.module,
        manifest.loading.max_module_size,
        "plugins.max_module_size",
    )
    .and_then(OpenedFile::read)
    .map_err(|e| e.to_string())?;
    if sha256_hex(&wasm) != wasm_sha256 {
        return Err(format!(
            "{}: changed while being loaded",
            manifest.module.display()
        ));
    }
    Ok(wasm)
}

/// Prepares a component; a panic inside wasmtime (on input it did not
/// expect) becomes this plugin's load error, not the host's crash.
fn prepare(
    sandbox: &Sandbox,
    manifest: Arc<PluginManifest>,
    wasm: &[u8],
    wasm_sha256: String,
) -> Result<PreparedPlugin, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        sandbox.prepare_component(manifest, wasm, wasm_sha256)
    })) {
        Ok(Ok(prepared)) => Ok(prepared),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(_) => Err("the compiler panicked on this component".to_owned()),
    }
}

fn loaded_event(state: &State, path: &Path, name: &str) -> RegistryEvent {
    let (name, path) = (name.to_owned(), path.to_owned());
    if state.loaded.contains_key(&path) {
        RegistryEvent::Reloaded { name, path }
    } else {
        RegistryEvent::Loaded { name, path }
    }
}

/// Unloads the file's plugin and records its failure; reports it unless it
/// is the same failure as last time.
fn record_failure(state: &mut State, path: &Path, failure: Failure) -> Vec<RegistryEvent> {
    let mut events = Vec::new();
    if let Some(plugin) = state.loaded.remove(path) {
        events.push(RegistryEvent::Unloaded {
            name: plugin.name().to_owned(),
            path: path.to_owned(),
        });
    }
    let repeated = state
        .failed
        .get(path)
        .is_some_and(|f| f.fingerprint == failure.fingerprint && f.error == failure.error);
    if !repeated {
        events.push(RegistryEvent::Failed {
            path: path.to_owned(),
            error: failure.error.clone(),
        });
    }
    state.failed.insert(path.to_owned(), failure);
    events
}

/// The SHA-256s of every component loaded or queued.
fn in_use(state: &State) -> HashSet<String> {
    state
        .loaded
        .values()
        .map(|p| p.prepared.wasm_sha256.clone())
        .chain(state.pending.values().map(|p| p.wasm_sha256.clone()))
        .collect()
}

fn log_event(event: &RegistryEvent) {
    match event {
        RegistryEvent::Loaded { name, path } => {
            tracing::info!(plugin = %name, file = %path.display(), "plugin loaded")
        }
        RegistryEvent::Reloaded { name, path } => {
            tracing::info!(plugin = %name, file = %path.display(), "plugin reloaded")
        }
        RegistryEvent::Unloaded { name, path } => {
            tracing::info!(plugin = %name, file = %path.display(), "plugin unloaded")
        }
        RegistryEvent::Failed { path, error } => {
            tracing::error!(file = %path.display(), "plugin skipped: {error}")
        }
    }
}
