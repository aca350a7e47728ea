//! Keeps a [`PluginRegistry`] in step with its directories while the host
//! runs: file-system events trigger a rescan after a short quiet period
//! (so a file still being copied is read once it is complete), and a
//! periodic rescan catches anything the events missed (network file
//! systems, modules outside the watched directories).
//!
//! The quiet period cannot be stretched forever: a rescan happens at most
//! [`WatchSettings::max_delay`] (default 2 s) after the first event of a
//! burst, however many events follow. Before, a module replaced every
//! 150 ms restarted the 300 ms quiet period each time and no rescan ever
//! ran; now such a stream costs one rescan every 2 s, and a rescan does
//! not compile (the registry queues that), so it takes milliseconds per
//! changed plugin.
//!
//! Events are coalesced into one pending signal (no queue that a flood of
//! events could grow), and events that change nothing are ignored: a
//! rescan opens every plugin file, and inotify reports each open, so
//! counting opens would make every rescan trigger the next.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::registry::PluginRegistry;

#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// Quiet time after the last event before rescanning.
    pub debounce: Duration,
    /// Longest wait between the first event of a burst and the rescan,
    /// however many events keep coming.
    pub max_delay: Duration,
    /// Rescan at least this often.
    pub rescan_every: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            debounce: Duration::from_millis(300),
            max_delay: Duration::from_secs(2),
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

/// Whether an event can mean a plugin changed (not a mere open or read).
fn relevant(event: &notify::Event) -> bool {
    !matches!(event.kind, EventKind::Access(_))
}

/// Starts watching the registry's directories (as they are now: after
/// [`PluginRegistry::reconfigure`] changes them, start a new watcher).
/// Call from a tokio runtime.
pub fn watch(
    registry: Arc<PluginRegistry>,
    settings: WatchSettings,
) -> anyhow::Result<PluginWatcher> {
    let signal = Arc::new(Notify::new());
    let sender = signal.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (e.g. the event queue overflowed) may hide a change.
        if event.as_ref().map_or(true, relevant) {
            // Stores at most one permit: a flood of events is one signal.
            sender.notify_one();
        }
    })
    .context("creating the plugin directory watcher")?;
    for dir in registry.directories() {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching plugin directory {}", dir.display()))?;
    }

    let task = tokio::spawn(async move {
        let mut periodic = tokio::time::interval(settings.rescan_every);
        periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        periodic.tick().await;
        loop {
            tokio::select! {
                () = signal.notified() => {
                    // Wait for a quiet period, but never past the cap.
                    let latest = Instant::now() + settings.max_delay;
                    loop {
                        let quiet = (Instant::now() + settings.debounce).min(latest);
                        match tokio::time::timeout_at(quiet, signal.notified()).await {
                            Ok(()) if Instant::now() < latest => continue,
                            _ => break,
                        }
                    }
                }
                _ = periodic.tick() => {}
            }
            let registry = registry.clone();
            match tokio::task::spawn_blocking(move || registry.start_rescan()).await {
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "plugin rescan failed"),
            }
            periodic.reset();
        }
    });
    Ok(PluginWatcher {
        _watcher: watcher,
        task,
    })
}
