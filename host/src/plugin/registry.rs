//! The set of loaded plugins, kept in step with the plugin directories.
//!
//! [`PluginRegistry::rescan`] reads every `*.vigil-plugin` file, and loads
//! what is new, reloads what changed (ini text or `.wasm` bytes), unloads
//! what disappeared and reports what is broken, which is then skipped: one
//! bad file never stops the others. The file on disk is the truth: a plugin
//! whose new version is broken is unloaded, not left running in its old
//! version, so what runs is always what the directory says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use super::manifest::{PLUGIN_FILE_EXTENSION, PluginManifest};
use crate::sandbox::{PreparedPlugin, Sandbox, sha256_hex};
use crate::site::SiteConfig;

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

#[derive(Default)]
struct State {
    loaded: BTreeMap<PathBuf, Arc<LoadedPlugin>>,
    /// Broken files, with the fingerprint they were broken at, so the same
    /// error is reported once rather than on every rescan.
    failed: BTreeMap<PathBuf, (String, String)>,
}

pub struct PluginRegistry {
    sandbox: Arc<Sandbox>,
    site: Arc<SiteConfig>,
    directories: Vec<PathBuf>,
    state: RwLock<State>,
    events: broadcast::Sender<RegistryEvent>,
}

impl PluginRegistry {
    pub fn new(
        sandbox: Arc<Sandbox>,
        site: Arc<SiteConfig>,
        directories: Vec<PathBuf>,
    ) -> PluginRegistry {
        let (events, _) = broadcast::channel(256);
        PluginRegistry {
            sandbox,
            site,
            directories,
            state: RwLock::new(State::default()),
            events,
        }
    }

    pub fn directories(&self) -> &[PathBuf] {
        &self.directories
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// Changes to the loaded set, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    pub fn plugins(&self) -> Vec<Arc<LoadedPlugin>> {
        self.read().loaded.values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.read()
            .loaded
            .values()
            .find(|p| p.name() == name)
            .cloned()
    }

    /// Broken plugin files and why.
    pub fn failures(&self) -> Vec<(PathBuf, String)> {
        self.read()
            .failed
            .iter()
            .map(|(path, (_, error))| (path.clone(), error.clone()))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Brings the loaded set in line with the directories. Compiles what
    /// changed, so call it off the async runtime (`spawn_blocking`).
    pub fn rescan(&self) -> Vec<RegistryEvent> {
        let files = self.plugin_files();
        let mut events = Vec::new();
        // Work on a copy and swap it in, so readers never see a half-done scan.
        let (mut loaded, mut failed) = {
            let state = self.read();
            (state.loaded.clone(), state.failed.clone())
        };

        for gone in loaded
            .keys()
            .filter(|p| !files.contains(p))
            .cloned()
            .collect::<Vec<_>>()
        {
            if let Some(plugin) = loaded.remove(&gone) {
                events.push(RegistryEvent::Unloaded {
                    name: plugin.name().to_owned(),
                    path: gone,
                });
            }
        }
        failed.retain(|path, _| files.contains(path));

        for path in &files {
            let previous = loaded.get(path).cloned();
            match self.load(path, &loaded, previous.as_deref()) {
                Ok(None) => {}
                Ok(Some(plugin)) => {
                    failed.remove(path);
                    let name = plugin.name().to_owned();
                    events.push(match previous {
                        Some(_) => RegistryEvent::Reloaded {
                            name,
                            path: path.clone(),
                        },
                        None => RegistryEvent::Loaded {
                            name,
                            path: path.clone(),
                        },
                    });
                    loaded.insert(path.clone(), Arc::new(plugin));
                }
                Err((fingerprint, error)) => {
                    if let Some(plugin) = loaded.remove(path) {
                        events.push(RegistryEvent::Unloaded {
                            name: plugin.name().to_owned(),
                            path: path.clone(),
                        });
                    }
                    let repeated = failed
                        .get(path)
                        .is_some_and(|(f, e)| *f == fingerprint && *e == error);
                    if !repeated {
                        events.push(RegistryEvent::Failed {
                            path: path.clone(),
                            error: error.clone(),
                        });
                    }
                    failed.insert(path.clone(), (fingerprint, error));
                }
            }
        }

        {
            let mut state = self
                .state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.loaded = loaded;
            state.failed = failed;
        }
        for event in &events {
            log_event(event);
            // No subscribers is fine.
            let _ = self.events.send(event.clone());
        }
        events
    }

    /// `Ok(None)`: unchanged. `Err((fingerprint, error))`: broken.
    fn load(
        &self,
        path: &Path,
        loaded: &BTreeMap<PathBuf, Arc<LoadedPlugin>>,
        previous: Option<&LoadedPlugin>,
    ) -> Result<Option<LoadedPlugin>, (String, String)> {
        let ini = std::fs::read(path).map_err(|e| {
            (
                String::new(),
                format!("{}: cannot read: {e}", path.display()),
            )
        })?;
        let ini_hash = sha256_hex(&ini);
        let text = String::from_utf8(ini).map_err(|_| {
            (
                ini_hash.clone(),
                format!("{}: not UTF-8 text", path.display()),
            )
        })?;
        let manifest = PluginManifest::parse(path, &text, &self.site)
            .map_err(|e| (ini_hash.clone(), e.to_string()))?;
        let wasm = std::fs::read(&manifest.module).map_err(|e| {
            (
                ini_hash.clone(),
                format!("{}: {}: {e}", path.display(), manifest.module.display()),
            )
        })?;
        let wasm_hash = sha256_hex(&wasm);
        let fingerprint = format!("{ini_hash}:{wasm_hash}");
        if previous.is_some_and(|p| p.fingerprint == fingerprint) {
            return Ok(None);
        }
        if let Some((other, _)) = loaded
            .iter()
            .find(|(p, l)| p.as_path() != path && l.name() == manifest.name)
        {
            return Err((
                fingerprint,
                format!(
                    "{}: [Core] name {:?} is already used by {}",
                    path.display(),
                    manifest.name,
                    other.display()
                ),
            ));
        }
        let prepared = self
            .sandbox
            .prepare_component(Arc::new(manifest), &wasm, wasm_hash)
            .map_err(|e| (fingerprint.clone(), format!("{}: {e:#}", path.display())))?;
        Ok(Some(LoadedPlugin {
            prepared,
            fingerprint,
        }))
    }

    /// Every plugin file in the directories, sorted for a stable load order.
    fn plugin_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in &self.directories {
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
