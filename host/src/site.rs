//! The operator's site configuration (`site.toml`): where plugins live, the
//! defaults and ceilings for every sandbox limit, and which capabilities
//! plugins may be granted.
//!
//! Unknown keys are errors, and every error names the file, the line and the
//! key. Without a site file vigil uses [`SiteConfig::embedded`]: built-in
//! limits and no capability granted to anyone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::capabilities::snmp::SnmpSettings;
use crate::capabilities::snmp::settings::SnmpSection;
use crate::plugin::ini::LocatedError;
use crate::sandbox::limits::{LimitSpec, Limits};

/// Capabilities a plugin can ask for, and whether this host provides them.
pub const CAPABILITIES: &[(&str, bool, &str)] = &[
    (
        "files",
        true,
        "read-only access to one directory under a site file root, mounted at /data",
    ),
    (
        "snmp",
        true,
        "SNMP to the endpoint of the resource being polled",
    ),
    (
        "http",
        false,
        "HTTP to the endpoint of the resource being polled",
    ),
];

#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The site file, if there was one.
    pub path: Option<PathBuf>,
    pub name: String,
    pub plugin_directories: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// What one plugin may make vigil read and compile (`[plugins]`
    /// `max_module_size`, `max_code_size`, `max_function_size`,
    /// `max_functions`).
    pub loading: crate::sandbox::cache::LoadLimits,
    /// Unused precompiled entries are pruned past this (`[plugins]
    /// cache_max_size`).
    pub cache_max_size: u64,
    /// How many plugin runs may execute at once (also sizes the instance pool).
    pub max_concurrent_runs: u32,
    /// Limits a plugin gets unless its `[sandbox]` section says otherwise.
    pub default_limits: Limits,
    /// Limits no plugin may exceed.
    pub limit_caps: Limits,
    /// Capabilities plugins may be granted.
    pub allowed_capabilities: Vec<String>,
    /// Directories a `files` grant may point into (canonical paths).
    pub file_roots: Vec<PathBuf>,
    /// The embedded database (resources, run history, latest values, status).
    pub database: PathBuf,
    /// The sinks (`[outputs]`): JSON lines, Prometheus, InfluxDB, Pushgateway.
    pub outputs: crate::sinks::OutputSettings,
    /// Metrics groups the embedded bus holds before producers wait.
    pub bus_capacity: usize,
    /// Runs one plugin may have going at once, so one slow plugin never
    /// holds the whole pool.
    pub max_runs_per_plugin: u32,
    /// SNMP defaults, budgets and credentials (`[snmp]`).
    pub snmp: SnmpSettings,
    /// Where resources, run history and latest values live.
    pub storage_backend: StorageBackend,
    /// Where the enrichment cache, rate state and the resource registry
    /// live when agents share a site.
    pub cache_backend: CacheBackend,
    /// The metrics bus between agents and sinks.
    pub bus_backend: BusBackend,
    /// How agents share the work.
    pub coordination: Coordination,
    /// Rules for discovered resources (`[resources]`): the site they must
    /// be in and the ceiling on their TTL.
    pub resources: crate::store::ResourceSettings,
    /// Bounds on the enrichment cache (`[enrichment]`).
    pub enrichment: crate::pipeline::enrichment_cache::EnrichmentLimits,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StorageBackend {
    /// SQLite at [`SiteConfig::database`].
    Embedded,
    MongoDb {
        url: String,
        database: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum CacheBackend {
    /// In this process's memory (plus the embedded database for resources).
    Embedded,
    Redis {
        url: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum BusBackend {
    /// An in-process channel to this process's sinks.
    Embedded,
    Kafka {
        brokers: String,
        partitions: i32,
        /// Messages the producer buffers while the broker is away; past
        /// this the oldest are dropped and counted.
        buffer_messages: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Coordination {
    /// This process is the only agent.
    Local,
    Redis(crate::coordination::RedisSettings),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    site: SiteSection,
    #[serde(default)]
    plugins: PluginsSection,
    #[serde(default)]
    sandbox: SandboxSection,
    #[serde(default)]
    capabilities: CapabilitiesSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    cache: BackendSection,
    #[serde(default)]
    bus: BusSection,
    #[serde(default)]
    outputs: crate::sinks::OutputsSection,
    #[serde(default)]
    scheduler: SchedulerSection,
    #[serde(default)]
    snmp: SnmpSection,
    #[serde(default)]
    coordination: CoordinationSection,
    #[serde(default)]
    resources: crate::store::ResourcesSection,
    #[serde(default)]
    enrichment: crate::pipeline::enrichment_cache::EnrichmentSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    backend: Option<Spanned<String>>,
    path: Option<PathBuf>,
    url: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendSection {
    backend: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusSection {
    backend: Option<Spanned<String>>,
    capacity: Option<Spanned<u32>>,
    brokers: Option<Spanned<String>>,
    partitions: Option<Spanned<i32>>,
    buffer_messages: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoordinationSection {
    backend: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    lease_ttl: Option<Spanned<String>>,
    renew_every: Option<Spanned<String>>,
    heartbeat: Option<Spanned<String>>,
    member_timeout: Option<Spanned<String>>,
    join_grace: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerSection {
    max_runs_per_plugin: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteSection {
    name: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginsSection {
    #[serde(default)]
    directories: Vec<PathBuf>,
    cache_dir: Option<PathBuf>,
    max_module_size: Option<Spanned<toml::Value>>,
    max_code_size: Option<Spanned<toml::Value>>,
    max_function_size: Option<Spanned<toml::Value>>,
    max_functions: Option<Spanned<toml::Value>>,
    cache_max_size: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxSection {
    max_concurrent_runs: Option<Spanned<u32>>,
    #[serde(default)]
    defaults: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    caps: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilitiesSection {
    #[serde(default)]
    allowed: Vec<Spanned<String>>,
    #[serde(default)]
    file_roots: Vec<Spanned<PathBuf>>,
}

/// Upper bound on `max_concurrent_runs`: each slot reserves address space
/// for a pooled instance.
const MAX_CONCURRENT_RUNS: u32 = 4096;

impl SiteConfig {
    /// The configuration used when no site file is given: built-in limits,
    /// nothing granted, the cache under the user's cache directory.
    pub fn embedded() -> SiteConfig {
        SiteConfig {
            path: None,
            name: "local".to_owned(),
            plugin_directories: Vec::new(),
            cache_dir: default_cache_dir(),
            loading: crate::sandbox::cache::LoadLimits::default(),
            cache_max_size: crate::sandbox::cache::CACHE_MAX_SIZE_DEFAULT,
            max_concurrent_runs: 32,
            default_limits: Limits::builtin_defaults(),
            limit_caps: Limits::builtin_caps(),
            allowed_capabilities: Vec::new(),
            file_roots: Vec::new(),
            database: PathBuf::from("vigil-data").join("vigil.db"),
            outputs: crate::sinks::OutputSettings::default(),
            bus_capacity: 10_000,
            max_runs_per_plugin: 16,
            snmp: SnmpSettings::default(),
            storage_backend: StorageBackend::Embedded,
            cache_backend: CacheBackend::Embedded,
            bus_backend: BusBackend::Embedded,
            coordination: Coordination::Local,
            resources: crate::store::ResourceSettings::new("local"),
            enrichment: crate::pipeline::enrichment_cache::EnrichmentLimits::default(),
        }
    }

    pub fn load(path: &Path) -> Result<SiteConfig, LocatedError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LocatedError::new(path, 0, format!("cannot read site config: {e}")))?;
        SiteConfig::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<SiteConfig, LocatedError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            LocatedError::new(path, line_of(text, span.start), message)
        };
        let file: SiteFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            LocatedError::new(path, line, e.message().to_owned())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        // `base.join(".")` would print as `dir/./file`; drop `.` components.
        let join = |relative: &Path| -> PathBuf {
            base.join(relative)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect()
        };
        let mut site = SiteConfig::embedded();
        site.path = Some(path.to_owned());

        let name = file.site.name.get_ref().trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(at(
                file.site.name.span(),
                format!("site.name {name:?} must be non-empty letters, digits, '-', '_' or '.'"),
            ));
        }
        site.name = name.to_owned();
        site.plugin_directories = file.plugins.directories.iter().map(|d| join(d)).collect();
        if let Some(cache) = &file.plugins.cache_dir {
            site.cache_dir = join(cache);
        }
        plugins_limits(&file.plugins, &mut site, &at)?;

        if let Some(runs) = file.sandbox.max_concurrent_runs {
            let value = *runs.get_ref();
            if value == 0 || value > MAX_CONCURRENT_RUNS {
                return Err(at(
                    runs.span(),
                    format!(
                        "sandbox.max_concurrent_runs must be 1 to {MAX_CONCURRENT_RUNS}, found {value}"
                    ),
                ));
            }
            site.max_concurrent_runs = value;
        }

        // Caps first: they only ever lower the built-in ceilings.
        for (key, value) in &file.sandbox.caps {
            let (spec, parsed) = parse_limit("sandbox.caps", key, value, &at)?;
            if parsed > spec.cap {
                return Err(at(
                    value.span(),
                    format!(
                        "sandbox.caps.{} = {} is above vigil's ceiling of {}",
                        spec.key,
                        spec.format(parsed),
                        spec.format(spec.cap)
                    ),
                ));
            }
            spec.set(&mut site.limit_caps, parsed);
        }
        for (key, value) in &file.sandbox.defaults {
            let (spec, parsed) = parse_limit("sandbox.defaults", key, value, &at)?;
            spec.set(&mut site.default_limits, parsed);
        }
        // A default above a lowered cap would make every plugin fail to load.
        for spec in crate::sandbox::limits::LIMITS {
            let Some(cap) = spec.get(&site.limit_caps) else {
                continue;
            };
            let default = spec.get(&site.default_limits).unwrap_or(0);
            if default > cap {
                let written = file
                    .sandbox
                    .defaults
                    .iter()
                    .find(|(k, _)| k.get_ref() == spec.key);
                let span = written
                    .map(|(_, v)| v.span())
                    .or_else(|| {
                        file.sandbox
                            .caps
                            .iter()
                            .find(|(k, _)| k.get_ref() == spec.key)
                            .map(|(_, v)| v.span())
                    })
                    .unwrap_or(0..0);
                return Err(at(
                    span,
                    format!(
                        "sandbox.defaults.{key} = {} is above sandbox.caps.{key} = {}",
                        spec.format(default),
                        spec.format(cap),
                        key = spec.key
                    ),
                ));
            }
        }

        for capability in &file.capabilities.allowed {
            let name = capability.get_ref();
            match CAPABILITIES.iter().find(|(known, _, _)| known == name) {
                None => {
                    return Err(at(
                        capability.span(),
                        format!(
                            "capabilities.allowed: unknown capability {name:?} (known: {})",
                            capability_names()
                        ),
                    ));
                }
                Some((_, false, _)) => {
                    return Err(at(
                        capability.span(),
                        format!(
                            "capabilities.allowed: {name:?} is not provided by this version of vigil"
                        ),
                    ));
                }
                Some(_) => site.allowed_capabilities.push(name.clone()),
            }
        }
        site.storage_backend = storage_backend(&file.storage, &at)?;
        site.cache_backend = cache_backend(&file.cache, &file.coordination, &at)?;
        site.bus_backend = bus_backend(&file.bus, &at)?;
        site.coordination = coordination(&file.coordination, &site.name, &at)?;
        site.resources = file.resources.resolve(&site.name, &at)?;
        site.enrichment = file.enrichment.resolve(&at)?;
        site.database = match file.storage.path {
            Some(path) => join(&path),
            None => join(Path::new("vigil-data/vigil.db")),
        };
        site.outputs = file.outputs.resolve(&join(Path::new(".")), &at)?;
        if let Some(capacity) = file.bus.capacity {
            let value = *capacity.get_ref();
            if !(1..=1_000_000).contains(&value) {
                return Err(at(
                    capacity.span(),
                    format!("bus.capacity must be 1 to 1000000, found {value}"),
                ));
            }
            site.bus_capacity = value as usize;
        }
        site.max_runs_per_plugin = (site.max_concurrent_runs / 2).max(1);
        if let Some(limit) = file.scheduler.max_runs_per_plugin {
            let value = *limit.get_ref();
            if value == 0 || value > site.max_concurrent_runs {
                return Err(at(
                    limit.span(),
                    format!(
                        "scheduler.max_runs_per_plugin must be 1 to sandbox.max_concurrent_runs ({}), found {value}",
                        site.max_concurrent_runs
                    ),
                ));
            }
            site.max_runs_per_plugin = value;
        }

        site.snmp = crate::capabilities::snmp::settings::resolve(file.snmp, path, &at)?;

        for root in &file.capabilities.file_roots {
            let joined = base.join(root.get_ref());
            let canonical = joined.canonicalize().map_err(|e| {
                at(
                    root.span(),
                    format!("capabilities.file_roots: {}: {e}", joined.display()),
                )
            })?;
            if !canonical.is_dir() {
                return Err(at(
                    root.span(),
                    format!(
                        "capabilities.file_roots: {} is not a directory",
                        joined.display()
                    ),
                ));
            }
            site.file_roots.push(canonical);
        }
        Ok(site)
    }

    pub fn allows(&self, capability: &str) -> bool {
        self.allowed_capabilities.iter().any(|c| c == capability)
    }
}

type At<'a> = &'a dyn Fn(std::ops::Range<usize>, String) -> LocatedError;

/// Checks `backend` is one of `known` (the first is the default).
fn backend_name(
    section: &str,
    backend: &Option<Spanned<String>>,
    known: &[&'static str],
    at: At<'_>,
) -> Result<&'static str, LocatedError> {
    let Some(backend) = backend else {
        return Ok(known[0]);
    };
    known
        .iter()
        .find(|k| **k == backend.get_ref().as_str())
        .copied()
        .ok_or_else(|| {
            at(
                backend.span(),
                format!(
                    "{section}.backend {:?} is not one of {}",
                    backend.get_ref(),
                    known.join(", ")
                ),
            )
        })
}

/// A required text key of a networked backend.
fn required(
    section: &str,
    key: &str,
    value: &Option<Spanned<String>>,
    backend: &Option<Spanned<String>>,
    at: At<'_>,
) -> Result<String, LocatedError> {
    match value {
        Some(v) if !v.get_ref().trim().is_empty() => Ok(v.get_ref().trim().to_owned()),
        Some(v) => Err(at(v.span(), format!("{section}.{key} is empty"))),
        None => Err(at(
            backend.as_ref().map_or(0..0, Spanned::span),
            format!("{section}.{key} is required for this backend"),
        )),
    }
}

fn storage_backend(section: &StorageSection, at: At<'_>) -> Result<StorageBackend, LocatedError> {
    match backend_name("storage", &section.backend, &["embedded", "mongodb"], at)? {
        "mongodb" => Ok(StorageBackend::MongoDb {
            url: required("storage", "url", &section.url, &section.backend, at)?,
            database: section
                .database
                .as_ref()
                .map_or_else(|| "vigil".to_owned(), |d| d.get_ref().clone()),
        }),
        _ => Ok(StorageBackend::Embedded),
    }
}

fn cache_backend(
    section: &BackendSection,
    coordination: &CoordinationSection,
    at: At<'_>,
) -> Result<CacheBackend, LocatedError> {
    match backend_name("cache", &section.backend, &["embedded", "redis"], at)? {
        // One Redis usually serves both; the cache may name its own.
        "redis" => Ok(CacheBackend::Redis {
            url: match (&section.url, &coordination.url) {
                (Some(url), _) | (None, Some(url)) => url.get_ref().clone(),
                (None, None) => required("cache", "url", &None, &section.backend, at)?,
            },
        }),
        _ => Ok(CacheBackend::Embedded),
    }
}

fn bus_backend(section: &BusSection, at: At<'_>) -> Result<BusBackend, LocatedError> {
    match backend_name("bus", &section.backend, &["embedded", "kafka"], at)? {
        "kafka" => {
            let partitions = match &section.partitions {
                Some(p) if !(1..=1024).contains(p.get_ref()) => {
                    return Err(at(
                        p.span(),
                        format!("bus.partitions must be 1 to 1024, found {}", p.get_ref()),
                    ));
                }
                Some(p) => *p.get_ref(),
                None => 3,
            };
            let buffer_messages = match &section.buffer_messages {
                Some(b) if !(1_000..=10_000_000).contains(b.get_ref()) => {
                    return Err(at(
                        b.span(),
                        format!(
                            "bus.buffer_messages must be 1000 to 10000000, found {}",
                            b.get_ref()
                        ),
                    ));
                }
                Some(b) => *b.get_ref() as usize,
                None => 100_000,
            };
            Ok(BusBackend::Kafka {
                brokers: required("bus", "brokers", &section.brokers, &section.backend, at)?,
                partitions,
                buffer_messages,
            })
        }
        _ => Ok(BusBackend::Embedded),
    }
}

fn coordination(
    section: &CoordinationSection,
    site: &str,
    at: At<'_>,
) -> Result<Coordination, LocatedError> {
    if backend_name("coordination", &section.backend, &["local", "redis"], at)? != "redis" {
        return Ok(Coordination::Local);
    }
    let url = required("coordination", "url", &section.url, &section.backend, at)?;
    let mut settings = crate::coordination::RedisSettings::new(&url, site);
    for (key, value, slot) in [
        ("lease_ttl", &section.lease_ttl, &mut settings.lease_ttl),
        (
            "renew_every",
            &section.renew_every,
            &mut settings.renew_every,
        ),
        ("heartbeat", &section.heartbeat, &mut settings.heartbeat),
        (
            "member_timeout",
            &section.member_timeout,
            &mut settings.member_timeout,
        ),
        ("join_grace", &section.join_grace, &mut settings.join_grace),
    ] {
        if let Some(value) = value {
            *slot = crate::units::parse_duration(value.get_ref())
                .map_err(|e| at(value.span(), format!("coordination.{key}: {e}")))?;
        }
    }
    let span = section.backend.as_ref().map_or(0..0, Spanned::span);
    if settings.renew_every >= settings.lease_ttl {
        return Err(at(
            span,
            "coordination.renew_every must be shorter than coordination.lease_ttl".to_owned(),
        ));
    }
    if settings.member_timeout <= settings.heartbeat {
        return Err(at(
            span,
            "coordination.member_timeout must be longer than coordination.heartbeat".to_owned(),
        ));
    }
    Ok(Coordination::Redis(settings))
}

fn parse_limit(
    table: &str,
    key: &Spanned<String>,
    value: &Spanned<toml::Value>,
    at: &impl Fn(std::ops::Range<usize>, String) -> LocatedError,
) -> Result<(&'static LimitSpec, u64), LocatedError> {
    let spec = LimitSpec::find(key.get_ref()).ok_or_else(|| {
        let known: Vec<&str> = crate::sandbox::limits::LIMITS
            .iter()
            .map(|s| s.key)
            .collect();
        at(
            key.span(),
            format!(
                "{table}: unknown limit {:?} (known: {})",
                key.get_ref(),
                known.join(", ")
            ),
        )
    })?;
    let text = match value.get_ref() {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        other => {
            return Err(at(
                value.span(),
                format!(
                    "{table}.{}: expected a string or integer, found {}",
                    spec.key,
                    other.type_str()
                ),
            ));
        }
    };
    let parsed = spec
        .parse(&text)
        .map_err(|e| at(value.span(), format!("{table}.{}: {e}", spec.key)))?;
    Ok((spec, parsed))
}

/// The `[plugins]` limits on loading: each between its minimum and vigil's
/// ceiling (see [`crate::sandbox::cache`]).
fn plugins_limits(
    section: &PluginsSection,
    site: &mut SiteConfig,
    at: At<'_>,
) -> Result<(), LocatedError> {
    use crate::sandbox::cache::{CACHE_MAX_SIZE_CEILING, LOAD_LIMITS};
    let written = [
        &section.max_module_size,
        &section.max_code_size,
        &section.max_function_size,
        &section.max_functions,
    ];
    for (spec, value) in LOAD_LIMITS.iter().zip(written) {
        if let Some(value) = value {
            let parsed = plugins_number(spec.key, value, spec.is_size, at)?;
            if parsed < spec.min || parsed > spec.ceiling {
                return Err(at(
                    value.span(),
                    format!(
                        "plugins.{} = {} must be {} to {} (vigil's ceiling)",
                        spec.key,
                        spec.format(parsed),
                        spec.format(spec.min),
                        spec.format(spec.ceiling)
                    ),
                ));
            }
            spec.set(&mut site.loading, parsed);
        }
    }
    if let Some(value) = &section.cache_max_size {
        let parsed = plugins_number("cache_max_size", value, true, at)?;
        if parsed > CACHE_MAX_SIZE_CEILING {
            return Err(at(
                value.span(),
                format!(
                    "plugins.cache_max_size = {} is above vigil's ceiling of {}",
                    crate::units::format_size(parsed),
                    crate::units::format_size(CACHE_MAX_SIZE_CEILING)
                ),
            ));
        }
        site.cache_max_size = parsed;
    }
    Ok(())
}

fn plugins_number(
    key: &str,
    value: &Spanned<toml::Value>,
    is_size: bool,
    at: At<'_>,
) -> Result<u64, LocatedError> {
    let parsed = match value.get_ref() {
        toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| format!("{i} is negative")),
        toml::Value::String(s) if is_size => crate::units::parse_size(s),
        toml::Value::String(s) => s
            .trim()
            .replace('_', "")
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not a whole number")),
        other => Err(format!(
            "expected a string or integer, found {}",
            other.type_str()
        )),
    };
    parsed.map_err(|e| at(value.span(), format!("plugins.{key}: {e}")))
}

pub fn capability_names() -> String {
    CAPABILITIES
        .iter()
        .map(|(name, _, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|prefix| prefix.matches('\n').count() + 1)
        .unwrap_or(0)
}

fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("vigil");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("vigil");
    }
    PathBuf::from(".vigil-cache")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str) -> Result<SiteConfig, LocatedError> {
        SiteConfig::parse(Path::new("/etc/vigil/site.toml"), text)
    }

    #[test]
    fn minimal_site_uses_builtin_limits() {
        let site = parse("[site]\nname = \"lab\"\n").expect("valid");
        assert_eq!(site.name, "lab");
        assert_eq!(site.default_limits, Limits::builtin_defaults());
        assert!(site.allowed_capabilities.is_empty());
    }

    #[test]
    fn defaults_and_caps() {
        let site = parse(
            "[site]\nname = \"lab\"\n[sandbox]\nmax_concurrent_runs = 8\n[sandbox.defaults]\ndeadline = \"5s\"\n[sandbox.caps]\nmemory = \"128MiB\"\n",
        )
        .expect("valid");
        assert_eq!(site.default_limits.deadline, Duration::from_secs(5));
        assert_eq!(site.limit_caps.memory, 128 << 20);
        assert_eq!(site.max_concurrent_runs, 8);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let err = parse("[site]\nname = \"lab\"\ncolour = \"red\"\n").expect_err("unknown key");
        assert_eq!(err.line, 3);
        assert!(err.message.contains("colour"), "{err}");

        let err = parse("[site]\nname = \"lab\"\n[sandbox.defaults]\nmemory = \"lots\"\n")
            .expect_err("bad size");
        assert_eq!(err.line, 4);
        assert!(
            err.to_string()
                .starts_with("/etc/vigil/site.toml:4: sandbox.defaults.memory"),
            "{err}"
        );

        let err = parse("[site]\nname = \"lab\"\n[sandbox.defaults]\nmemory = \"256MiB\"\n[sandbox.caps]\nmemory = \"128MiB\"\n")
            .expect_err("default above cap");
        assert_eq!(err.line, 4);

        let err = parse("[site]\nname = \"lab\"\n[sandbox.caps]\ndeadline = \"1h\"\n")
            .expect_err("above ceiling");
        assert!(err.message.contains("ceiling"), "{err}");

        let err = parse("[site]\nname = \"lab\"\n[capabilities]\nallowed = [\"telnet\"]\n")
            .expect_err("capability");
        assert_eq!(err.line, 4);
        let err = parse("[site]\nname = \"lab\"\n[sandbox.defaults]\nspeed = 3\n")
            .expect_err("unknown limit");
        assert_eq!(err.line, 4);
    }

    #[test]
    fn the_multi_agent_example_chooses_the_networked_backends() {
        let site = parse(include_str!("../../plugin-configs/multi-agent-site.toml"))
            .expect("the example parses");
        assert_eq!(
            site.storage_backend,
            StorageBackend::MongoDb {
                url: "mongodb://127.0.0.1:27017".into(),
                database: "vigil".into()
            }
        );
        assert_eq!(
            site.cache_backend,
            CacheBackend::Redis {
                url: "redis://127.0.0.1:6379/0".into()
            }
        );
        assert!(matches!(
            site.bus_backend,
            BusBackend::Kafka { partitions: 6, .. }
        ));
        let Coordination::Redis(redis) = &site.coordination else {
            panic!("redis coordination");
        };
        assert_eq!(redis.lease_ttl, Duration::from_secs(10));
        assert_eq!(redis.join_grace, Duration::from_secs(3));
    }

    #[test]
    fn output_mistakes_are_located() {
        let err = parse("[site]\nname = \"lab\"\n[outputs.prometheus]\nlisten = \"localhost\"\n")
            .expect_err("no port");
        assert_eq!(err.line, 4, "{err}");
        assert!(err.message.contains("outputs.prometheus.listen"), "{err}");
        let err = parse(
            "[site]\nname = \"lab\"\n[[outputs.influxdb]]\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"v\"\nprecision = \"h\"\n",
        )
        .expect_err("bad precision");
        assert_eq!(err.line, 6, "{err}");
        let err = parse(
            "[site]\nname = \"lab\"\n[[outputs.pushgateway]]\nurl = \"http://127.0.0.1:9091\"\n\
             [[outputs.influxdb]]\nname = \"pushgateway\"\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"v\"\n",
        )
        .expect_err("duplicate name");
        assert!(
            err.message.contains("already named \"pushgateway\""),
            "{err}"
        );
        assert!(err.line >= 5, "{err}");
        let err = parse(
            "[site]\nname = \"lab\"\n[[outputs.influxdb]]\nname = \"prometheus\"\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"v\"\n",
        )
        .expect_err("a built-in sink's name");
        assert!(
            err.message.contains("already named \"prometheus\""),
            "{err}"
        );
        let site = parse(
            "[site]\nname = \"lab\"\n[outputs]\njson_lines = \"out.jsonl\"\n[outputs.prometheus]\n\
             [[outputs.influxdb]]\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"v\"\n[[outputs.influxdb]]\nurl = \"http://127.0.0.1:8087\"\ndatabase = \"w\"\n",
        )
        .expect("valid");
        assert_eq!(
            site.outputs.json_lines,
            Some(PathBuf::from("/etc/vigil/out.jsonl"))
        );
        assert_eq!(
            site.outputs.prometheus.map(|p| p.listen.to_string()),
            Some("127.0.0.1:9464".to_owned())
        );
        let names: Vec<&str> = site
            .outputs
            .influxdb
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(names, ["influxdb", "influxdb-2"]);
    }

    #[test]
    fn backend_mistakes_are_located() {
        let err =
            parse("[site]\nname = \"lab\"\n[bus]\nbackend = \"kafka\"\n").expect_err("no brokers");
        assert_eq!(err.line, 4);
        assert!(err.message.contains("bus.brokers is required"), "{err}");
        let err = parse("[site]\nname = \"lab\"\n[storage]\nbackend = \"postgres\"\n")
            .expect_err("unknown backend");
        assert!(
            err.message.contains("not one of embedded, mongodb"),
            "{err}"
        );
        let err = parse(
            "[site]\nname = \"lab\"\n[coordination]\nbackend = \"redis\"\nurl = \"redis://x\"\nlease_ttl = \"2s\"\nrenew_every = \"5s\"\n",
        )
        .expect_err("renewal slower than the lease");
        assert!(err.message.contains("renew_every must be shorter"), "{err}");
    }
}
