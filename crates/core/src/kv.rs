//! Plugin key/value state as the host stores it: the [`KvBackend`] seam
//! between the `vigil:plugin/kv` capability (which declares what it needs)
//! and the stores that keep the state (SQLite, and the in-memory
//! [`MemoryKv`] here). It lives in this crate, not next to the capability,
//! so a backend crate depends on neither wasmtime nor the sandbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Why a write was refused for the plugin's own reason (the capability
/// maps it to the WIT `kv-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvError {
    /// The write would take the plugin past its quota (in bytes).
    QuotaExceeded(u64),
    /// Keys are 1 to [`MAX_KEY_BYTES`] bytes.
    InvalidKey,
}

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
