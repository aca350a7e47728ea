//! SIGHUP: `vigil run` reads its site config again, as Prometheus, Vector
//! and Telegraf do (`systemctl reload vigil` sends it).
//!
//! **What changes live:** the plugin directories (rescanned at once, and
//! watched from then on) and the rules plugins are loaded under: default
//! limits and caps (read by each run from its plugin's manifest),
//! `[capabilities]`, `[scheduler] timezone`, the `[plugins]` loading
//! limits and a plugin's SNMP request defaults. Every plugin is checked
//! again under the new rules: one they now refuse is unloaded and reported.
//!
//! **What needs a restart** is everything the running process was built
//! around (backends, the bus, outputs and listen addresses, the database,
//! the instance pool, SNMP credentials and budgets...): a change to it is
//! logged naming the setting and is not applied. Secrets are read at
//! start, so a secret file's new content is also not picked up.
//!
//! **A broken config is refused** with its located error; the running one
//! stays.

use std::path::PathBuf;
use std::sync::Arc;

use crate::plugin::PluginRegistry;
use crate::plugin::watcher::{self, PluginWatcher, WatchSettings};
use crate::site::SiteConfig;

/// Settings of `new` that differ from the running `old` but only take
/// effect at a restart, by the name an operator writes in the site file.
pub fn restart_only_changes(old: &SiteConfig, new: &SiteConfig) -> Vec<&'static str> {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    // The plugin's SNMP request defaults are part of the plugin rules
    // (live); the rest of `[snmp]` lives in the sandbox.
    let mut old_snmp = old.snmp.clone();
    old_snmp.defaults = new.snmp.defaults;
    let checks = [
        ("site.name", differs(&old.name, &new.name)),
        ("plugins.cache_dir", differs(&old.cache_dir, &new.cache_dir)),
        (
            "sandbox.max_concurrent_runs",
            old.max_concurrent_runs != new.max_concurrent_runs,
        ),
        (
            "sandbox.caps.memory, sandbox.caps.table_elements (the instance pool is sized at start)",
            old.limit_caps.memory != new.limit_caps.memory
                || old.limit_caps.table_elements != new.limit_caps.table_elements,
        ),
        ("storage.path", differs(&old.database, &new.database)),
        (
            "storage",
            differs(&old.storage_backend, &new.storage_backend),
        ),
        ("cache", differs(&old.cache_backend, &new.cache_backend)),
        ("bus", differs(&old.bus_backend, &new.bus_backend)),
        ("bus.capacity", old.bus_capacity != new.bus_capacity),
        (
            "coordination",
            differs(&old.coordination, &new.coordination),
        ),
        ("outputs", differs(&old.outputs, &new.outputs)),
        (
            "scheduler.max_runs_per_plugin",
            old.max_runs_per_plugin != new.max_runs_per_plugin,
        ),
        (
            "snmp (credentials, networks, budgets)",
            differs(&old_snmp, &new.snmp),
        ),
        ("resources", differs(&old.resources, &new.resources)),
        ("enrichment", differs(&old.enrichment, &new.enrichment)),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

/// Installs vigil's SIGHUP handler (from then on SIGHUP no longer ends
/// the process). `None`, logged, when the handler cannot be installed.
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(error) => {
            tracing::warn!(%error, "cannot handle SIGHUP: the site config cannot be reloaded");
            None
        }
    }
}

/// For processes with nothing to reload live (the consumer role): says so
/// on every SIGHUP.
pub fn spawn_unsupported(
    hangups: Option<tokio::signal::unix::Signal>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut hangups = hangups?;
    Some(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::warn!(
                "SIGHUP: a consumer applies its site config only at start; restart it to apply changes"
            );
        }
    }))
}

/// Reloads `started`'s file on every SIGHUP into `registry`, keeping the
/// directory watcher in step; ends when the signal stream does (abort it
/// at shutdown).
pub fn spawn(
    started: Arc<SiteConfig>,
    registry: Arc<PluginRegistry>,
    watch: WatchSettings,
    watcher: PluginWatcher,
    hangups: Option<tokio::signal::unix::Signal>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Held here: replaced when the directories change, dropped (no more
        // watching) when the task is aborted.
        let mut watcher = watcher;
        let Some(mut hangups) = hangups else {
            std::future::pending::<()>().await;
            return;
        };
        while hangups.recv().await.is_some() {
            if let Some(replacement) = reload(&started, &registry, watch).await {
                watcher = replacement;
            }
        }
        drop(watcher);
    })
}

/// One reload; returns a new watcher when the directories changed.
async fn reload(
    started: &SiteConfig,
    registry: &Arc<PluginRegistry>,
    watch: WatchSettings,
) -> Option<PluginWatcher> {
    let Some(path) = started.path.clone() else {
        tracing::warn!("SIGHUP: vigil runs without a site file; nothing to reload");
        return None;
    };
    tracing::info!(file = %path.display(), "SIGHUP: reloading the site config");
    let loaded = {
        let path: PathBuf = path.clone();
        tokio::task::spawn_blocking(move || SiteConfig::load(&path)).await
    };
    let new = match loaded {
        Ok(Ok(new)) => new,
        Ok(Err(error)) => {
            tracing::error!("site config not reloaded, the running one stays: {error}");
            return None;
        }
        Err(error) => {
            tracing::error!(%error, "site config not reloaded, the running one stays");
            return None;
        }
    };
    if new.plugin_directories.is_empty() {
        tracing::error!(
            file = %path.display(),
            "site config not reloaded, the running one stays: plugins.directories lists no directory"
        );
        return None;
    }
    for setting in restart_only_changes(started, &new) {
        tracing::warn!(
            file = %path.display(),
            setting,
            "site config: {setting} changed; not applied until vigil restarts"
        );
    }
    let directories_changed = registry.directories() != new.plugin_directories;
    registry.reconfigure(new.plugin_policy(), new.plugin_directories.clone());
    let replacement = if directories_changed {
        match watcher::watch(registry.clone(), watch) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                // The periodic rescan still covers the new directories.
                tracing::error!("{error:#}; plugin directories are rescanned periodically only");
                None
            }
        }
    } else {
        None
    };
    let scan = registry.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || scan.start_rescan()).await {
        tracing::error!(%error, "plugin rescan after reload failed");
    }
    tracing::info!(
        file = %path.display(),
        directories = ?new.plugin_directories,
        "site config reloaded: plugin directories and plugin rules applied"
    );
    replacement
}
