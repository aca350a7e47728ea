//! Reading plugin files, bounding what a component may cost to compile, and
//! the on-disk cache of precompiled components.
//!
//! **Reading.** Every plugin file (ini, module, cache entry) is opened once
//! and everything after that goes through the opened handle: the handle is
//! checked (`fstat`: a regular file, no larger than the limit) and read with
//! a `take(limit + 1)` bound, so a path swapped for a symlink to `/dev/zero`
//! or a FIFO between a check and the read is refused (`O_NONBLOCK` keeps the
//! open itself from waiting for a FIFO writer), and a file that grows while
//! it is read is cut off one byte past the limit and refused. Modules are
//! bounded by `plugins.max_module_size` (default 32 MiB, ceiling 256 MiB:
//! the bundled plugins are 0.1 to 0.3 MB), ini files by
//! [`MAX_MANIFEST_BYTES`] (1 MiB; real ones are under 4 KB).
//!
//! **Compile cost.** Cranelift's time grows with the code it is given, and
//! faster than linearly within one function (a 2.5 MB module held startup
//! for 28 s). [`check_compile_cost`] walks the component's section headers
//! (no validation, no decoding of function bodies: 35 us for a 31.5 MiB
//! component) and refuses, before any compiling, a component whose function
//! bodies total more than `plugins.max_code_size` (default 4 MiB, ceiling
//! 32 MiB), whose largest body is over `plugins.max_function_size` (default
//! 256 KiB, ceiling 1 MiB), that has more than `plugins.max_functions`
//! functions and canonical functions (default 20,000, ceiling 200,000) or
//! that nests modules and components deeper than [`MAX_NESTING`].
//!
//! Measured with the release build on this project's 2-core machine, one
//! compile thread, other builds running (`cargo test --release -p
//! vigil-tests --test suite hostile_loading::measure_compile_cost -- --ignored
//! --nocapture`):
//!
//! | component | compile |
//! |---|---|
//! | bundled plugins: 46-212 KB of code, 200-562 functions, largest body 29 KB | 0.4-1.8 s |
//! | one function, straight-line arithmetic: 256 KiB / 1 MiB | 1.7 s / 8.1 s |
//! | one function, 2,000 locals mixed: 512 KiB / 1 MiB | 0.8 s / 18.8 s |
//! | one function, 500 nested blocks left by `br_table`s: 256 KiB | 3.8 s |
//! | one function, 4,000 values on the operand stack: 1 MiB | 1.7 s |
//! | 10,000 / 20,000 empty functions | 2.3 s / 4.4 s |
//! | the worst within the defaults: 16 x 255 KiB of `br_table` blocks (3 MiB) | 57 s |
//! | the same size of straight-line code (4 MiB) | 26 s |
//!
//! So the defaults leave the largest bundled plugin 20 times its code,
//! 9 times its largest function and 35 times its functions, stay below the
//! knee where one function's time turns steep (0.8 s at 512 KiB, 19 s at
//! 1 MiB), and bound any one compile to about a minute of one core, spent
//! in the background (see [`crate::plugin::registry`]).
//!
//! **Precompiled cache.** Compiling a component takes a few hundred
//! milliseconds; loading its precompiled form takes a few. Entries are keyed
//! by the engine's compatibility hash (wasmtime version and every codegen
//! setting) and the wasm file's SHA-256, so a changed file or a changed
//! engine never loads a stale artifact. An entry is read into memory and
//! the file closed: wasmtime's `deserialize_file` would keep each entry open
//! (and mapped) for as long as the component lives, one file descriptor per
//! plugin, and 1,100 plugins ran the host out of descriptors. Components
//! with the same bytes are loaded once and shared, so 1,100 copies of one
//! plugin cost one compiled image.
//!
//! Loading precompiled code is trusting it: anyone who can write the cache
//! directory can run native code in the host. The cache therefore refuses a
//! directory or an entry that another user owns or that is group- or
//! world-writable, and opens entries without following symbolic links.
//!
//! **Pruning.** [`ArtifactCache::prune`] (run by the plugin registry after a
//! rescan that changed the loaded set, and at least every 10 minutes)
//! deletes entries no loaded plugin uses once they have been unused for
//! [`UNUSED_GRACE`], and, oldest first, however recent, while the directory
//! holds more than `plugins.cache_max_size` (default 1 GiB, ceiling
//! 64 GiB). An entry in use is never deleted; its modification time is
//! refreshed every [`REFRESH_AFTER`] so that another vigil process sharing
//! the directory sees it as recently used and keeps it through the grace
//! period. After a prune the directory holds at most `cache_max_size` plus
//! the entries in use.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::wasmparser::{Parser, Payload};

use crate::units::format_size;

/// The largest plugin ini file read (real ones are under 4 KB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The largest precompiled entry read back. Entries are this process's own
/// output for modules of at most 256 MiB; a larger file is not ours.
const MAX_ENTRY_BYTES: u64 = 2 << 30;
/// Modules and components nested deeper than this are refused (rustc's
/// components nest 2 deep; deep nesting only costs the host stack).
pub const MAX_NESTING: u32 = 16;
/// How long an entry no loaded plugin uses is kept (when under the size cap).
pub const UNUSED_GRACE: Duration = Duration::from_secs(15 * 60);
/// How old an in-use entry's modification time may get before it is
/// refreshed (so other processes sharing the directory keep it).
pub const REFRESH_AFTER: Duration = Duration::from_secs(5 * 60);

/// What vigil reads and compiles for one plugin, at most
/// (`[plugins]` in the site config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Bytes of the `.wasm` file.
    pub max_module_size: u64,
    /// Bytes of function bodies, summed over every core module.
    pub max_code_size: u64,
    /// Bytes of the largest single function body.
    pub max_function_size: u64,
    /// Functions (bodies and canonical lifts/lowers), summed.
    pub max_functions: u64,
}

/// One `[plugins]` limit: its key, default, and the range allowed.
#[derive(Debug, Clone, Copy)]
pub struct LoadLimitSpec {
    pub key: &'static str,
    pub default: u64,
    pub min: u64,
    pub ceiling: u64,
    /// Sizes print as `32 MiB`, counts as numbers.
    pub is_size: bool,
    get: fn(&LoadLimits) -> u64,
    set: fn(&mut LoadLimits, u64),
}

impl LoadLimitSpec {
    pub fn get(&self, limits: &LoadLimits) -> u64 {
        (self.get)(limits)
    }
    pub fn set(&self, limits: &mut LoadLimits, value: u64) {
        (self.set)(limits, value)
    }
    pub fn format(&self, value: u64) -> String {
        if self.is_size {
            format_size(value)
        } else {
            value.to_string()
        }
    }
}

/// Every `[plugins]` limit, with its default and ceiling (none unlimited).
pub const LOAD_LIMITS: [LoadLimitSpec; 4] = [
    LoadLimitSpec {
        key: "max_module_size",
        default: 32 << 20,
        min: 1 << 10,
        ceiling: 256 << 20,
        is_size: true,
        get: |l| l.max_module_size,
        set: |l, v| l.max_module_size = v,
    },
    LoadLimitSpec {
        key: "max_code_size",
        default: 4 << 20,
        min: 1 << 10,
        ceiling: 32 << 20,
        is_size: true,
        get: |l| l.max_code_size,
        set: |l, v| l.max_code_size = v,
    },
    LoadLimitSpec {
        key: "max_function_size",
        default: 256 << 10,
        min: 1 << 10,
        ceiling: 1 << 20,
        is_size: true,
        get: |l| l.max_function_size,
        set: |l, v| l.max_function_size = v,
    },
    LoadLimitSpec {
        key: "max_functions",
        default: 20_000,
        min: 100,
        ceiling: 200_000,
        is_size: false,
        get: |l| l.max_functions,
        set: |l, v| l.max_functions = v,
    },
];

/// `plugins.cache_max_size`: default and ceiling.
pub const CACHE_MAX_SIZE_DEFAULT: u64 = 1 << 30;
pub const CACHE_MAX_SIZE_CEILING: u64 = 64 << 30;

impl Default for LoadLimits {
    fn default() -> Self {
        let mut limits = LoadLimits {
            max_module_size: 0,
            max_code_size: 0,
            max_function_size: 0,
            max_functions: 0,
        };
        for spec in &LOAD_LIMITS {
            spec.set(&mut limits, spec.default);
        }
        limits
    }
}

/// Why a plugin file was not read: the file, and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    pub problem: ReadProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadProblem {
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("{} is over {limit_name} = {}", size_text(*size, *at_least), format_size(*limit))]
    TooLarge {
        /// What fstat said, or what was read when the file grew.
        size: u64,
        at_least: bool,
        limit: u64,
        limit_name: &'static str,
    },
    #[error("cannot read: {0}")]
    Read(std::io::Error),
}

fn size_text(size: u64, at_least: bool) -> String {
    if at_least {
        format!("more than {size} bytes (it grew while being read)")
    } else {
        format!("{size} bytes")
    }
}

/// Reads `path` through one opened handle: the handle must be a regular
/// file of at most `limit` bytes (`limit_name` names the setting in errors),
/// and at most `limit + 1` bytes are ever read.
pub fn read_regular_file(
    path: &Path,
    limit: u64,
    limit_name: &'static str,
) -> Result<Vec<u8>, ReadError> {
    OpenedFile::open(path, limit, limit_name)?.read()
}

/// A plugin file opened and checked (a regular file within its limit),
/// not yet read: its [`FileStamp`] tells whether it changed since a
/// previous look without reading it.
#[derive(Debug)]
pub struct OpenedFile {
    path: PathBuf,
    file: File,
    meta: Metadata,
    limit: u64,
    limit_name: &'static str,
}

/// Identity and change marks of an opened file. The status-change time
/// (`ctime`) moves on every write and cannot be set back by its owner, so
/// an equal stamp means the same content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl OpenedFile {
    pub fn open(
        path: &Path,
        limit: u64,
        limit_name: &'static str,
    ) -> Result<OpenedFile, ReadError> {
        let (file, meta) = open_regular(path, true)?;
        if meta.len() > limit {
            return Err(ReadError {
                path: path.to_owned(),
                problem: ReadProblem::TooLarge {
                    size: meta.len(),
                    at_least: false,
                    limit,
                    limit_name,
                },
            });
        }
        Ok(OpenedFile {
            path: path.to_owned(),
            file,
            meta,
            limit,
            limit_name,
        })
    }

    #[cfg(unix)]
    pub fn stamp(&self) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        let m = &self.meta;
        FileStamp {
            device: m.dev(),
            inode: m.ino(),
            len: m.len(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    pub fn stamp(&self) -> FileStamp {
        let modified = self
            .meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or((0, 0), |d| {
                (d.as_secs() as i64, i64::from(d.subsec_nanos()))
            });
        FileStamp {
            device: 0,
            inode: 0,
            len: self.meta.len(),
            modified,
            changed: modified,
        }
    }

    /// Reads the opened file, at most `limit + 1` bytes.
    pub fn read(self) -> Result<Vec<u8>, ReadError> {
        read_opened(
            &self.path,
            self.file,
            &self.meta,
            self.limit,
            self.limit_name,
        )
    }
}

/// Opens `path` read-only without blocking (a FIFO would otherwise wait for
/// a writer) and checks that what was opened is a regular file.
fn open_regular(path: &Path, follow_symlinks: bool) -> Result<(File, Metadata), ReadError> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
        if !follow_symlinks {
            flags |= libc::O_NOFOLLOW;
        }
        options.custom_flags(flags);
    }
    #[cfg(not(unix))]
    let _ = follow_symlinks;
    let fail = |problem| ReadError {
        path: path.to_owned(),
        problem,
    };
    let file = options.open(path).map_err(|e| fail(ReadProblem::Open(e)))?;
    let meta = file.metadata().map_err(|e| fail(ReadProblem::Read(e)))?;
    if !meta.file_type().is_file() {
        return Err(fail(ReadProblem::NotRegular(file_kind(&meta))));
    }
    Ok((file, meta))
}

fn read_opened(
    path: &Path,
    file: File,
    meta: &Metadata,
    limit: u64,
    limit_name: &'static str,
) -> Result<Vec<u8>, ReadError> {
    let too_large = |size: u64, at_least: bool| ReadError {
        path: path.to_owned(),
        problem: ReadProblem::TooLarge {
            size,
            at_least,
            limit,
            limit_name,
        },
    };
    if meta.len() > limit {
        return Err(too_large(meta.len(), false));
    }
    // `meta.len() <= limit`, and every limit fits in memory.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError {
            path: path.to_owned(),
            problem: ReadProblem::Read(e),
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit, true));
    }
    Ok(bytes)
}

fn file_kind(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// What a component asks the compiler to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeStats {
    pub modules: u64,
    pub functions: u64,
    pub code_bytes: u64,
    pub largest_function: u64,
}

/// Why a component was refused before compiling.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CompileCostError {
    #[error("not a valid WebAssembly component: {0}")]
    Malformed(String),
    #[error("is a core WebAssembly module, not a component (build it for wasm32-wasip2)")]
    NotComponent,
    #[error(
        "too costly to compile: function {index} of core module {module} has a {} body, over plugins.max_function_size = {}",
        format_size(*size), format_size(*limit)
    )]
    FunctionTooLarge {
        module: u64,
        index: u64,
        size: u64,
        limit: u64,
    },
    #[error(
        "too costly to compile: at least {} of function bodies, over plugins.max_code_size = {}",
        format_size(*size), format_size(*limit)
    )]
    CodeTooLarge { size: u64, limit: u64 },
    #[error(
        "too costly to compile: at least {count} functions, over plugins.max_functions = {limit}"
    )]
    TooManyFunctions { count: u64, limit: u64 },
    #[error("modules and components nest more than {MAX_NESTING} deep")]
    TooDeep,
}

/// Walks `wasm`'s section headers (nested modules and components included)
/// and refuses it, before any compiling, if its code exceeds `limits`.
pub fn check_compile_cost(wasm: &[u8], limits: &LoadLimits) -> Result<CodeStats, CompileCostError> {
    let mut stats = CodeStats::default();
    let mut depth = 0u32;
    let mut function_in_module = 0u64;
    let mut first = true;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| CompileCostError::Malformed(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if first && encoding != wasmtime::wasmparser::Encoding::Component {
                    return Err(CompileCostError::NotComponent);
                }
                first = false;
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(CompileCostError::TooDeep);
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CodeSectionStart { count, size, .. } => {
                stats.modules += 1;
                function_in_module = 0;
                stats.functions += u64::from(count);
                stats.code_bytes += u64::from(size);
                if stats.functions > limits.max_functions {
                    return Err(CompileCostError::TooManyFunctions {
                        count: stats.functions,
                        limit: limits.max_functions,
                    });
                }
                if stats.code_bytes > limits.max_code_size {
                    return Err(CompileCostError::CodeTooLarge {
                        size: stats.code_bytes,
                        limit: limits.max_code_size,
                    });
                }
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len() as u64;
                stats.largest_function = stats.largest_function.max(size);
                if size > limits.max_function_size {
                    return Err(CompileCostError::FunctionTooLarge {
                        module: stats.modules.saturating_sub(1),
                        index: function_in_module,
                        size,
                        limit: limits.max_function_size,
                    });
                }
                function_in_module += 1;
            }
            Payload::ComponentCanonicalSection(reader) => {
                stats.functions += u64::from(reader.count());
                if stats.functions > limits.max_functions {
                    return Err(CompileCostError::TooManyFunctions {
                        count: stats.functions,
                        limit: limits.max_functions,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(stats)
}

pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
    /// Components this process has loaded, by wasm SHA-256: plugins with
    /// the same bytes share one (a `Component` is a reference-counted
    /// handle). Trimmed to what is in use by [`ArtifactCache::prune`].
    loaded: Mutex<HashMap<String, Component>>,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Already in memory, or read back from the cache directory.
    Hit,
    Compiled,
}

/// What a prune did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub kept: u64,
    pub kept_bytes: u64,
    pub removed: u64,
    pub removed_bytes: u64,
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

const ENTRY_SUFFIX: &str = ".cwasm";

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
            loaded: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, wasm_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{}-{}{ENTRY_SUFFIX}", self.engine_key, wasm_sha256))
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The component for `wasm_sha256` if it is loaded or can be read back
    /// from the cache directory, without compiling anything (milliseconds).
    pub fn cached(&self, engine: &Engine, wasm_sha256: &str) -> Option<Component> {
        if let Some(component) = self.shared().get(wasm_sha256) {
            return Some(component.clone());
        }
        let entry = self.entry_path(wasm_sha256);
        match std::fs::symlink_metadata(&entry) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            _ => {}
        }
        match read_trusted_entry(&entry).and_then(|bytes| deserialize_bytes(engine, &bytes)) {
            Ok(component) => {
                self.shared()
                    .insert(wasm_sha256.to_owned(), component.clone());
                Some(component)
            }
            Err(error) => {
                tracing::warn!(entry = %entry.display(), error = %format!("{error:#}"), "ignoring cache entry; recompiling");
                None
            }
        }
    }

    /// Returns the component for `wasm`, from memory, from the cache
    /// directory, or freshly compiled (and then cached). Check its cost
    /// with [`check_compile_cost`] first.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        if let Some(component) = self.cached(engine, wasm_sha256) {
            return Ok((component, CacheOutcome::Hit));
        }
        let entry = self.entry_path(wasm_sha256);
        let compiled = engine
            .precompile_component(wasm)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("compiling component")?;
        if let Err(error) = self.store(&entry, &compiled) {
            tracing::warn!(entry = %entry.display(), error = %format!("{error:#}"), "could not write cache entry");
        }
        let component = deserialize_bytes(engine, &compiled)?;
        self.shared()
            .insert(wasm_sha256.to_owned(), component.clone());
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

    /// Forgets loaded components and deletes cache entries that no plugin
    /// in `in_use` (wasm SHA-256s) needs; see the module docs for the rules.
    /// Never deletes an entry in use; errors on single entries are logged
    /// and skipped.
    pub fn prune(&self, in_use: &HashSet<String>, max_size: u64) -> PruneReport {
        self.shared().retain(|sha, _| in_use.contains(sha));
        let now = SystemTime::now();
        let mut report = PruneReport::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(directory = %self.dir.display(), %error, "cannot list the cache directory to prune it");
                return report;
            }
        };
        // (modified, size, path) of every entry no plugin here uses.
        let mut unused: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = name.ends_with(ENTRY_SUFFIX) || name.starts_with(".tmp");
            let Ok(meta) = entry.metadata() else { continue };
            if !ours || !meta.file_type().is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(now);
            let path = entry.path();
            let in_use_here = name
                .strip_suffix(ENTRY_SUFFIX)
                .and_then(|stem| stem.split_once('-'))
                .is_some_and(|(key, sha)| key == self.engine_key && in_use.contains(sha));
            if in_use_here {
                report.kept += 1;
                report.kept_bytes += meta.len();
                if now.duration_since(modified).unwrap_or_default() > REFRESH_AFTER
                    && let Err(error) = File::open(&path).and_then(|f| f.set_modified(now))
                {
                    tracing::debug!(entry = %path.display(), %error, "cannot refresh a cache entry's time");
                }
            } else {
                unused.push((modified, meta.len(), path));
            }
        }
        unused.sort();
        let mut total: u64 =
            report.kept_bytes + unused.iter().map(|(_, size, _)| size).sum::<u64>();
        for (modified, size, path) in unused {
            let stale = now.duration_since(modified).unwrap_or_default() > UNUSED_GRACE;
            if !stale && total <= max_size {
                report.kept += 1;
                report.kept_bytes += size;
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total = total.saturating_sub(size);
                    report.removed += 1;
                    report.removed_bytes += size;
                }
                Err(error) => {
                    tracing::warn!(entry = %path.display(), %error, "cannot delete an unused cache entry");
                    report.kept += 1;
                    report.kept_bytes += size;
                }
            }
        }
        if report.removed > 0 {
            tracing::info!(
                removed = report.removed,
                freed = %format_size(report.removed_bytes),
                kept = report.kept,
                size = %format_size(report.kept_bytes),
                "pruned the precompiled cache"
            );
        }
        report
    }
}

/// Reads an entry without following symbolic links, after checking the
/// opened handle is ours and private.
fn read_trusted_entry(entry: &Path) -> anyhow::Result<Vec<u8>> {
    let (file, meta) = open_regular(entry, false)?;
    check_trusted_meta(entry, &meta)?;
    Ok(read_opened(
        entry,
        file,
        &meta,
        MAX_ENTRY_BYTES,
        "the cache's entry size limit",
    )?)
}

#[allow(unsafe_code)]
fn deserialize_bytes(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: `bytes` is either the output of `precompile_component` on this
    // very engine, or an entry this cache wrote for this engine's
    // compatibility hash, read (without following links) from a directory
    // `check_trusted` confirmed only our user can write, from a file our
    // user owns and only it can write. wasmtime additionally checks the
    // header and version.
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

fn check_trusted(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symbolic link; refusing to trust precompiled code through it",
            path.display()
        );
    }
    check_trusted_meta(path, &meta)
}

#[cfg(unix)]
fn check_trusted_meta(path: &Path, meta: &Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
fn check_trusted_meta(_path: &Path, _meta: &Metadata) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    /// A component holding one core module with `bodies` functions of
    /// `body_len` bytes each (`nop`s).
    fn component(bodies: u64, body_len: u64) -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        section(1, &[1, 0x60, 0, 0], &mut module);
        let mut funcs = Vec::new();
        leb(bodies, &mut funcs);
        funcs.extend(std::iter::repeat_n(0u8, bodies as usize));
        section(3, &funcs, &mut module);
        let mut code = Vec::new();
        leb(bodies, &mut code);
        for _ in 0..bodies {
            // size, no locals, nops, end
            leb(body_len, &mut code);
            code.push(0);
            code.extend(std::iter::repeat_n(0x01u8, (body_len - 2) as usize));
            code.push(0x0b);
        }
        section(10, &code, &mut module);
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        section(1, &module, &mut component);
        component
    }

    #[test]
    fn compile_cost_is_bounded_before_compiling() {
        let limits = LoadLimits {
            max_module_size: 1 << 20,
            max_code_size: 64 << 10,
            max_function_size: 4 << 10,
            max_functions: 1000,
        };
        let stats = check_compile_cost(&component(10, 1000), &limits).expect("small");
        assert_eq!(stats.functions, 10);
        assert_eq!(stats.largest_function, 1000);
        assert_eq!(
            check_compile_cost(&component(1, 5000), &limits),
            Err(CompileCostError::FunctionTooLarge {
                module: 0,
                index: 0,
                size: 5000,
                limit: 4 << 10
            })
        );
        assert_eq!(
            check_compile_cost(&component(100, 1000), &limits),
            Err(CompileCostError::CodeTooLarge {
                size: 100 * 1002,
                limit: 64 << 10
            })
        );
        assert_eq!(
            check_compile_cost(&component(2000, 3), &limits),
            Err(CompileCostError::TooManyFunctions {
                count: 2000,
                limit: 1000
            })
        );
        assert_eq!(
            check_compile_cost(b"\0asm\x01\0\0\0", &limits),
            Err(CompileCostError::NotComponent)
        );
        assert!(matches!(
            check_compile_cost(b"\0asm\x0d\0\x01\0\x01\xff", &limits),
            Err(CompileCostError::Malformed(_))
        ));
        let error = CompileCostError::FunctionTooLarge {
            module: 0,
            index: 3,
            size: 5 << 20,
            limit: 512 << 10,
        }
        .to_string();
        assert!(
            error.contains("function 3 of core module 0 has a 5 MiB body, over plugins.max_function_size = 512 KiB"),
            "{error}"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        // Components nested inside components, deeper than allowed.
        let mut inner = b"\0asm\x0d\0\x01\0".to_vec();
        for _ in 0..=MAX_NESTING {
            let mut outer = b"\0asm\x0d\0\x01\0".to_vec();
            section(4, &inner, &mut outer);
            inner = outer;
        }
        assert_eq!(
            check_compile_cost(&inner, &LoadLimits::default()),
            Err(CompileCostError::TooDeep)
        );
    }

    #[test]
    fn reads_only_regular_files_within_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, vec![7u8; 100]).expect("write");
        assert_eq!(
            read_regular_file(&file, 100, "test.limit")
                .expect("read")
                .len(),
            100
        );
        let error = read_regular_file(&file, 99, "test.limit")
            .expect_err("too large")
            .to_string();
        assert!(
            error.ends_with("/f: 100 bytes is over test.limit = 99 B"),
            "{error}"
        );
        let error = read_regular_file(dir.path(), 99, "test.limit")
            .expect_err("a directory")
            .to_string();
        assert!(
            error.contains("is a directory, not a regular file"),
            "{error}"
        );
        #[cfg(unix)]
        {
            let link = dir.path().join("zero");
            std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
            let error = read_regular_file(&link, 1 << 20, "test.limit")
                .expect_err("a device")
                .to_string();
            assert!(
                error.contains("zero: is a character device, not a regular file"),
                "{error}"
            );
        }
    }
}
