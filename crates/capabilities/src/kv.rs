//! `vigil:plugin/kv`: a small key/value store private to each plugin, kept
//! between runs and bounded by the plugin's `kv_quota`.
//!
//! The store sits behind [`KvBackend`] so the embedded default (in memory
//! here, SQLite in `vigil run`: `vigil_store::kv::SqliteKv`, Redis when the
//! site shares state; the seam itself lives in [`vigil_core::kv`]) can be
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

use std::sync::Arc;

pub use vigil_core::kv::{KvBackend, KvError, KvFailure, MAX_KEY_BYTES, MemoryKv};
use vigil_wit::HostCalls;
use vigil_wit::vigil::plugin::kv::{Host, KvError as WitKvError};
use wasmtime::component::{HasData, Linker};

/// What the `kv` import sees of a run: the site's backend, the calling
/// plugin (its namespace there) and its `kv_quota`.
pub struct Kv<'a> {
    pub calls: &'a mut HostCalls,
    pub backend: &'a Arc<dyn KvBackend>,
    pub plugin: &'a str,
    pub quota: u64,
}

/// `HasData` for the `kv` import.
pub struct KvCapability;

impl HasData for KvCapability {
    type Data<'a> = Kv<'a>;
}

/// Adds the `kv` import; `view` picks the run's parts out of `T`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Kv<'_>,
) -> wasmtime::Result<()> {
    vigil_wit::vigil::plugin::kv::add_to_linker::<T, KvCapability>(linker, view)
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

impl Host for Kv<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.calls.charge()?;
        call(
            self.backend.clone(),
            self.plugin.to_owned(),
            "get",
            move |kv, plugin| kv.get(plugin, &key),
        )
        .await
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitKvError>> {
        self.calls.charge()?;
        if !valid_key(&key) {
            return Ok(Err(WitKvError::InvalidKey));
        }
        let quota = self.quota;
        // An entry larger than the whole quota can never fit: refused here,
        // without shipping its bytes to the store (for Redis, a network
        // round trip of up to `max_output`).
        if (key.len() as u64).saturating_add(value.len() as u64) > quota {
            return Ok(Err(WitKvError::QuotaExceeded(quota)));
        }
        let refused = call(
            self.backend.clone(),
            self.plugin.to_owned(),
            "set",
            move |kv, plugin| kv.set(plugin, &key, &value, quota),
        )
        .await?;
        Ok(refused.map_err(|e| match e {
            KvError::QuotaExceeded(quota) => WitKvError::QuotaExceeded(quota),
            KvError::InvalidKey => WitKvError::InvalidKey,
        }))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.calls.charge()?;
        call(
            self.backend.clone(),
            self.plugin.to_owned(),
            "delete",
            move |kv, plugin| kv.delete(plugin, &key),
        )
        .await
    }

    async fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        self.calls.charge()?;
        call(
            self.backend.clone(),
            self.plugin.to_owned(),
            "keys",
            |kv, plugin| kv.keys(plugin),
        )
        .await
    }

    async fn usage(&mut self) -> wasmtime::Result<(u64, u64)> {
        self.calls.charge()?;
        let used = call(
            self.backend.clone(),
            self.plugin.to_owned(),
            "usage",
            |kv, plugin| kv.usage(plugin),
        )
        .await?;
        Ok((used, self.quota))
    }
}
