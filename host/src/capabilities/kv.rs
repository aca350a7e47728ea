//! `vigil:plugin/kv`: a small key/value store private to each plugin, kept
//! between runs and bounded by the plugin's `kv_quota`.
//!
//! The store sits behind [`KvBackend`] so the embedded default (in memory
//! here, SQLite in `vigil run`: [`crate::store::kv::SqliteKv`]) can be
//! swapped for a persistent or shared one without touching the sandbox.
//!
//! # Errors are what they are
//!
//! A plugin sees `quota-exceeded` only when its keys and values would
//! really pass `kv_quota`, and `invalid-key` only for a bad key. A failure
//! of the backend itself (a locked or broken database, a disk error) is
//! not the plugin's doing and not something it can handle: the call traps
//! with a [`KvFailure`], and the run ends as a *host failure* that names
//! the operation, the plugin and the cause. (Before, SQLite's `database is
//! locked` under load reached a well-behaved plugin holding 51 bytes as
//! "key/value quota exceeded".)
//!
//! # Off the async workers
//!
//! The host imports are async: a backend that blocks (SQLite) runs each
//! call on tokio's blocking pool, so a call waiting out SQLite's busy
//! timeout (5 s) holds a blocking thread, never one of the runtime's
//! workers (2 on a 2-core host, shared by every run, the scheduler and the
//! sinks). An in-memory call (about a microsecond) runs inline.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::bindings::vigil::plugin::kv::Host;
pub use crate::bindings::vigil::plugin::kv::KvError;
use crate::sandbox::HostState;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The backend failed (not the plugin): ends the run as a host failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin key/value store: {operation} for plugin {plugin:?} failed: {cause}")]
pub struct KvFailure {
    pub operation: &'static str,
    pub plugin: String,
    pub cause: String,
}

impl KvFailure {
    pub fn new(operation: &'static str, plugin: &str, cause: impl ToString) -> KvFailure {
        KvFailure {
            operation,
            plugin: plugin.to_owned(),
            cause: cause.to_string(),
        }
    }
}

/// Where plugin key/value state lives. Implementations account usage as
/// the bytes of keys plus values, check the quota atomically with the
/// write, and return [`KvFailure`] for anything that is not the plugin's
/// doing (never a quota error).
pub trait KvBackend: Send + Sync + 'static {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure>;
    /// `Ok(Err(_))`: refused for the plugin's own reason (the quota).
    fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<Result<(), KvError>, KvFailure>;
    fn delete(&self, plugin: &str, key: &str) -> Result<(), KvFailure>;
    fn keys(&self, plugin: &str) -> Result<Vec<String>, KvFailure>;
    /// Bytes used by `plugin`.
    fn usage(&self, plugin: &str) -> Result<u64, KvFailure>;
    /// Whether calls may block (disk, locks, network): they then run on
    /// the blocking pool.
    fn blocking(&self) -> bool {
        true
    }
}

/// The embedded default: per-plugin maps in the host's memory.
#[derive(Debug, Default)]
pub struct MemoryKv {
    plugins: Mutex<HashMap<String, Space>>,
}

#[derive(Debug, Default)]
struct Space {
    entries: BTreeMap<String, Vec<u8>>,
    used: u64,
}

impl MemoryKv {
    fn with_space<R>(&self, plugin: &str, f: impl FnOnce(&mut Space) -> R) -> R {
        // A poisoned lock only means another run panicked mid-update of a
        // map whose invariants hold after every statement; keep serving.
        let mut plugins = self
            .plugins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(plugins.entry(plugin.to_owned()).or_default())
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        Ok(self.with_space(plugin, |space| space.entries.get(key).cloned()))
    }

    fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<Result<(), KvError>, KvFailure> {
        Ok(self.with_space(plugin, |space| {
            let old = space
                .entries
                .get(key)
                .map_or(0, |v| (key.len() + v.len()) as u64);
            let new = (key.len() + value.len()) as u64;
            let used = space.used - old + new;
            if used > quota {
                return Err(KvError::QuotaExceeded(quota));
            }
            space.entries.insert(key.to_owned(), value.to_vec());
            space.used = used;
            Ok(())
        }))
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), KvFailure> {
        self.with_space(plugin, |space| {
            if let Some(v) = space.entries.remove(key) {
                space.used -= (key.len() + v.len()) as u64;
            }
        });
        Ok(())
    }

    fn keys(&self, plugin: &str) -> Result<Vec<String>, KvFailure> {
        Ok(self.with_space(plugin, |space| space.entries.keys().cloned().collect()))
    }

    fn usage(&self, plugin: &str) -> Result<u64, KvFailure> {
        Ok(self.with_space(plugin, |space| space.used))
    }

    fn blocking(&self) -> bool {
        false
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

/// Runs one backend call for `plugin`: inline when the backend never
/// blocks, else on the blocking pool. A failure traps the run.
async fn call<T: Send + 'static>(
    kv: Arc<dyn KvBackend>,
    plugin: String,
    operation: &'static str,
    f: impl FnOnce(&dyn KvBackend, &str) -> Result<T, KvFailure> + Send + 'static,
) -> wasmtime::Result<T> {
    let result = if kv.blocking() {
        let name = plugin.clone();
        match tokio::task::spawn_blocking(move || f(kv.as_ref(), &name)).await {
            Ok(result) => result,
            Err(e) => Err(KvFailure::new(
                operation,
                &plugin,
                format!("the call did not finish: {e}"),
            )),
        }
    } else {
        f(kv.as_ref(), &plugin)
    };
    result.map_err(|failure| {
        tracing::error!(plugin = %failure.plugin, operation, cause = %failure.cause, "plugin key/value store failed; the run ends as a host failure");
        wasmtime::Error::new(failure)
    })
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.charge()?;
        call(
            self.kv.clone(),
            self.plugin.name.clone(),
            "get",
            move |kv, plugin| kv.get(plugin, &key),
        )
        .await
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), KvError>> {
        self.charge()?;
        if !valid_key(&key) {
            return Ok(Err(KvError::InvalidKey));
        }
        let quota = self.plugin.limits.kv_quota;
        call(
            self.kv.clone(),
            self.plugin.name.clone(),
            "set",
            move |kv, plugin| kv.set(plugin, &key, &value, quota),
        )
        .await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.charge()?;
        call(
            self.kv.clone(),
            self.plugin.name.clone(),
            "delete",
            move |kv, plugin| kv.delete(plugin, &key),
        )
        .await
    }

    async fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        self.charge()?;
        call(
            self.kv.clone(),
            self.plugin.name.clone(),
            "keys",
            |kv, plugin| kv.keys(plugin),
        )
        .await
    }

    async fn usage(&mut self) -> wasmtime::Result<(u64, u64)> {
        self.charge()?;
        let used = call(
            self.kv.clone(),
            self.plugin.name.clone(),
            "usage",
            |kv, plugin| kv.usage(plugin),
        )
        .await?;
        Ok((used, self.plugin.limits.kv_quota))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_keys_and_values_and_overwrites() -> Result<(), KvFailure> {
        let kv = MemoryKv::default();
        kv.set("p", "abc", &[0; 7], 20)?.expect("fits");
        assert_eq!(kv.usage("p")?, 10);
        // Overwriting replaces the old size rather than adding to it.
        kv.set("p", "abc", &[0; 17], 20)?
            .expect("fits after replacing");
        assert_eq!(kv.usage("p")?, 20);
        assert!(matches!(
            kv.set("p", "d", &[0], 20)?,
            Err(KvError::QuotaExceeded(20))
        ));
        kv.delete("p", "abc")?;
        assert_eq!(kv.usage("p")?, 0);
        // Plugins do not see each other's keys.
        kv.set("q", "abc", b"x", 20)?.expect("fits");
        assert_eq!(kv.keys("p")?, Vec::<String>::new());
        assert_eq!(kv.get("q", "abc")?, Some(b"x".to_vec()));
        Ok(())
    }
}
