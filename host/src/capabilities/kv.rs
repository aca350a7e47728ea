//! `vigil:plugin/kv`: a small key/value store private to each plugin, kept
//! between runs and bounded by the plugin's `kv_quota`.
//!
//! The store sits behind [`KvBackend`] so the embedded default (in memory
//! here) can be swapped for a persistent or shared one without touching the
//! sandbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::bindings::vigil::plugin::kv::Host;
pub use crate::bindings::vigil::plugin::kv::KvError;
use crate::sandbox::HostState;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Where plugin key/value state lives. Implementations account usage as
/// the bytes of keys plus values, and check the quota atomically with the
/// write.
pub trait KvBackend: Send + Sync + 'static {
    fn get(&self, plugin: &str, key: &str) -> Option<Vec<u8>>;
    fn set(&self, plugin: &str, key: &str, value: &[u8], quota: u64) -> Result<(), KvError>;
    fn delete(&self, plugin: &str, key: &str);
    fn keys(&self, plugin: &str) -> Vec<String>;
    /// Bytes used by `plugin`.
    fn usage(&self, plugin: &str) -> u64;
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
    fn get(&self, plugin: &str, key: &str) -> Option<Vec<u8>> {
        self.with_space(plugin, |space| space.entries.get(key).cloned())
    }

    fn set(&self, plugin: &str, key: &str, value: &[u8], quota: u64) -> Result<(), KvError> {
        self.with_space(plugin, |space| {
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
        })
    }

    fn delete(&self, plugin: &str, key: &str) {
        self.with_space(plugin, |space| {
            if let Some(v) = space.entries.remove(key) {
                space.used -= (key.len() + v.len()) as u64;
            }
        })
    }

    fn keys(&self, plugin: &str) -> Vec<String> {
        self.with_space(plugin, |space| space.entries.keys().cloned().collect())
    }

    fn usage(&self, plugin: &str) -> u64 {
        self.with_space(plugin, |space| space.used)
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

impl Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.charge()?;
        Ok(self.kv.get(&self.plugin.name, &key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), KvError>> {
        self.charge()?;
        if !valid_key(&key) {
            return Ok(Err(KvError::InvalidKey));
        }
        Ok(self
            .kv
            .set(&self.plugin.name, &key, &value, self.plugin.limits.kv_quota))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.charge()?;
        self.kv.delete(&self.plugin.name, &key);
        Ok(())
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        self.charge()?;
        Ok(self.kv.keys(&self.plugin.name))
    }

    fn usage(&mut self) -> wasmtime::Result<(u64, u64)> {
        self.charge()?;
        Ok((
            self.kv.usage(&self.plugin.name),
            self.plugin.limits.kv_quota,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_keys_and_values_and_overwrites() {
        let kv = MemoryKv::default();
        kv.set("p", "abc", &[0; 7], 20).expect("fits");
        assert_eq!(kv.usage("p"), 10);
        // Overwriting replaces the old size rather than adding to it.
        kv.set("p", "abc", &[0; 17], 20)
            .expect("fits after replacing");
        assert_eq!(kv.usage("p"), 20);
        assert!(matches!(
            kv.set("p", "d", &[0], 20),
            Err(KvError::QuotaExceeded(20))
        ));
        kv.delete("p", "abc");
        assert_eq!(kv.usage("p"), 0);
        // Plugins do not see each other's keys.
        kv.set("q", "abc", b"x", 20).expect("fits");
        assert_eq!(kv.keys("p"), Vec::<String>::new());
        assert_eq!(kv.get("q", "abc"), Some(b"x".to_vec()));
    }
}
