//! The on-disk cache of precompiled components.
//!
//! Compiling a component takes a few hundred milliseconds; loading its
//! precompiled form takes well under one. Entries are keyed by the engine's
//! compatibility hash (wasmtime version and every codegen setting) and the
//! wasm file's SHA-256, so a changed file or a changed engine never loads a
//! stale artifact.
//!
//! Loading precompiled code is trusting it: anyone who can write the cache
//! directory can run native code in the host. The cache therefore refuses a
//! directory or an entry that another user owns or that is group- or
//! world-writable.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

/// Feeds `Hash` output into SHA-256 so the key is stable across runs
/// (std's `DefaultHasher` is not).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ArtifactCache {
    pub fn open(dir: &Path, engine: &Engine) -> anyhow::Result<ArtifactCache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating cache directory {}", dir.display()))?;
        restrict_permissions(dir)?;
        check_trusted(dir)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(ArtifactCache {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, wasm_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", self.engine_key, wasm_sha256))
    }

    /// Returns the component for `wasm`, from the cache or freshly compiled
    /// (and then cached).
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let entry = self.entry_path(wasm_sha256);
        if entry.is_file() {
            match check_trusted(&entry).and_then(|()| deserialize(engine, &entry)) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => {
                    tracing::warn!(entry = %entry.display(), error = %format!("{error:#}"), "ignoring cache entry; recompiling");
                }
            }
        }
        let compiled = engine
            .precompile_component(wasm)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("compiling component")?;
        if let Err(error) = self.store(&entry, &compiled) {
            tracing::warn!(entry = %entry.display(), error = %format!("{error:#}"), "could not write cache entry");
        }
        let component = deserialize_bytes(engine, &compiled)?;
        Ok((component, CacheOutcome::Compiled))
    }

    fn store(&self, entry: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        // Write then rename, so a concurrent reader never sees half a file.
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        file.persist(entry)?;
        Ok(())
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, entry: &Path) -> anyhow::Result<Component> {
    // SAFETY: the entry was written by this cache, for this engine's
    // compatibility hash, in a directory `check_trusted` confirmed only our
    // user can write; wasmtime additionally checks the header and version.
    unsafe { Component::deserialize_file(engine, entry) }.map_err(|e| anyhow::anyhow!("{e:#}"))
}

#[allow(unsafe_code)]
fn deserialize_bytes(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: `bytes` was produced by `precompile_component` on this very
    // engine a moment ago and never left the process.
    unsafe { Component::deserialize(engine, bytes) }.map_err(|e| anyhow::anyhow!("{e:#}"))
}

#[cfg(unix)]
fn restrict_permissions(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir)?;
    // Tighten a directory we own (e.g. one just created under a lax umask).
    if meta.uid() == current_uid() && meta.permissions().mode() & 0o022 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn check_trusted(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symbolic link; refusing to trust precompiled code through it",
            path.display()
        );
    }
    if meta.uid() != current_uid() {
        bail!(
            "{} is owned by uid {}, not by this process's user",
            path.display(),
            meta.uid()
        );
    }
    if meta.permissions().mode() & 0o022 != 0 {
        bail!("{} is writable by group or others", path.display());
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_trusted(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
