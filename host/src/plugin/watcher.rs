//! Keeps a [`PluginRegistry`] in step with its directories while the host
//! runs: file-system events trigger a rescan after a short quiet period
//! (so a file still being copied is read once it is complete), and a
//! periodic rescan catches anything the events missed (network file
//! systems, modules outside the watched directories).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::registry::PluginRegistry;

#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// Quiet time after the last event before rescanning.
    pub debounce: Duration,
    /// Rescan at least this often.
    pub rescan_every: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            debounce: Duration::from_millis(300),
            rescan_every: Duration::from_secs(30),
        }
    }
}

/// Stops watching when dropped.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the registry's directories. Call from a tokio runtime.
pub fn watch(
    registry: Arc<PluginRegistry>,
    settings: WatchSettings,
) -> anyhow::Result<PluginWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // The receiver only goes away when the watcher is dropped.
            let _ = tx.send(());
        }
    })
    .context("creating the plugin directory watcher")?;
    for dir in registry.directories() {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching plugin directory {}", dir.display()))?;
    }

    let task = tokio::spawn(async move {
        let mut periodic = tokio::time::interval(settings.rescan_every);
        periodic.tick().await;
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        return;
                    }
                    // Wait for a quiet period, swallowing the burst.
                    loop {
                        match tokio::time::timeout(settings.debounce, rx.recv()).await {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_quiet) => break,
                        }
                    }
                }
                _ = periodic.tick() => {}
            }
            let registry = registry.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || registry.rescan()).await {
                tracing::error!(error = %e, "plugin rescan failed");
            }
        }
    });
    Ok(PluginWatcher {
        _watcher: watcher,
        task,
    })
}
