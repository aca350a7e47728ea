//! The operator's site configuration (`site.toml`): where plugins live, the
//! defaults and ceilings for every sandbox limit, and which capabilities
//! plugins may be granted.
//!
//! Unknown keys are errors, and every error names the file, the line and the
//! key. Without a site file vigil uses [`SiteConfig::embedded`]: built-in
//! limits and no capability granted to anyone.
//!
//! **Which file.** `--site FILE`, else `VIGIL_SITE`, else
//! `/etc/vigil/site.toml` when it exists ([`site_path`]).
//!
//! **Where data goes by default.** Paths written in the file are relative
//! to the file, but the file usually sits in a read-only `/etc/vigil`, so
//! what the file does not set goes where a service may write
//! ([`DefaultDirs`]): the database under systemd's `StateDirectory=`
//! (`$STATE_DIRECTORY`), else `vigil-data/` in the working directory; the
//! precompiled cache under `CacheDirectory=` (`$CACHE_DIRECTORY`), else
//! `$XDG_CACHE_HOME/vigil` or `~/.cache/vigil`, else `.vigil-cache` in the
//! working directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use crate::backends::config::{BusBackend, CacheBackend, StorageBackend};
use crate::backends::config::{
    BusSection, CacheSection, StorageSection, bus_backend, cache_backend, storage_backend,
};
use crate::capabilities::CapabilitiesSection;
use crate::capabilities::snmp::SnmpSettings;
use crate::capabilities::snmp::settings::SnmpSection;
pub use crate::capabilities::{CAPABILITIES, capability_names};
pub use crate::coordination::Coordination;
use crate::coordination::CoordinationSection;
use crate::plugin::PluginsSection;
use crate::plugin::ini::LocatedError;
use crate::sandbox::limits::Limits;
use crate::sandbox::limits::SandboxSection;
use crate::scheduler::SchedulerSection;

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
    /// Each plugin's log budget across runs (`[sandbox] plugin_log_burst`,
    /// `plugin_log_lines_per_minute`).
    pub plugin_log: crate::capabilities::log::LogBudgetSettings,
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
    /// The zone cron schedules are evaluated in (`[scheduler] timezone`).
    pub timezone: chrono_tz::Tz,
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
    /// The endpoint tracker (`[endpoints]`), off unless enabled.
    pub endpoints: crate::endpoints::EndpointSettings,
    /// The HTTP API (`[api]`, `/api/v1` beside `/metrics`); `None` unless
    /// enabled.
    pub api: Option<crate::api::ApiSettings>,
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
    cache: CacheSection,
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
    #[serde(default)]
    endpoints: crate::endpoints::EndpointsSection,
    #[serde(default)]
    api: crate::api::ApiSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteSection {
    name: Spanned<String>,
}

/// The site file read when neither `--site` nor `VIGIL_SITE` names one
/// (if it exists).
pub const DEFAULT_SITE_PATH: &str = "/etc/vigil/site.toml";

/// Replaces [`DEFAULT_SITE_PATH`], for packaging that installs elsewhere
/// and for tests (which must not depend on `/etc`).
pub const DEFAULT_SITE_ENV: &str = "VIGIL_DEFAULT_SITE";

/// The site file to read: `given` (`--site`, or `VIGIL_SITE` through the
/// CLI), else the default path ([`DEFAULT_SITE_PATH`], or
/// `$VIGIL_DEFAULT_SITE`) when a file is there; `None` means no site config.
pub fn site_path(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(given) = given {
        return Some(given.to_owned());
    }
    let default = std::env::var_os(DEFAULT_SITE_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SITE_PATH), PathBuf::from);
    default.is_file().then_some(default)
}

/// Where the database and the precompiled cache go when the site file does
/// not say (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultDirs {
    /// The embedded database lives here (`vigil.db`).
    pub data: PathBuf,
    /// The precompiled-component cache.
    pub cache: PathBuf,
}

impl DefaultDirs {
    /// From this process's environment and working directory.
    pub fn from_env() -> DefaultDirs {
        DefaultDirs::from_vars(|name| std::env::var_os(name), std::env::current_dir().ok())
    }

    /// From `var` (an environment lookup) and the working directory `cwd`
    /// (relative paths stay relative without one).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>, cwd: Option<PathBuf>) -> DefaultDirs {
        let here = |relative: &str| match &cwd {
            Some(cwd) => cwd.join(relative),
            None => PathBuf::from(relative),
        };
        // systemd sets these to absolute paths, colon-separated when the
        // unit lists several directories; vigil uses the first.
        let systemd = |name: &str| {
            var(name).and_then(|value| {
                let value = value.to_string_lossy().into_owned();
                value
                    .split(':')
                    .next()
                    .filter(|first| !first.is_empty())
                    .map(PathBuf::from)
            })
        };
        let nonempty = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        DefaultDirs {
            data: systemd("STATE_DIRECTORY").unwrap_or_else(|| here("vigil-data")),
            cache: systemd("CACHE_DIRECTORY")
                .or_else(|| nonempty("XDG_CACHE_HOME").map(|dir| dir.join("vigil")))
                .or_else(|| nonempty("HOME").map(|home| home.join(".cache").join("vigil")))
                .unwrap_or_else(|| here(".vigil-cache")),
        }
    }
}

impl SiteConfig {
    /// The configuration used when no site file is given: built-in limits,
    /// nothing granted, data and cache in the default places
    /// ([`DefaultDirs::from_env`]).
    pub fn embedded() -> SiteConfig {
        SiteConfig::embedded_in(&DefaultDirs::from_env())
    }

    /// [`SiteConfig::embedded`] with data and cache in `dirs`.
    pub fn embedded_in(dirs: &DefaultDirs) -> SiteConfig {
        SiteConfig {
            path: None,
            name: "local".to_owned(),
            plugin_directories: Vec::new(),
            cache_dir: dirs.cache.clone(),
            loading: crate::sandbox::cache::LoadLimits::default(),
            cache_max_size: crate::sandbox::cache::CACHE_MAX_SIZE_DEFAULT,
            max_concurrent_runs: 32,
            default_limits: Limits::builtin_defaults(),
            limit_caps: Limits::builtin_caps(),
            plugin_log: crate::capabilities::log::LogBudgetSettings::default(),
            allowed_capabilities: Vec::new(),
            file_roots: Vec::new(),
            database: dirs.data.join("vigil.db"),
            outputs: crate::sinks::OutputSettings::default(),
            bus_capacity: 10_000,
            max_runs_per_plugin: 16,
            timezone: chrono_tz::Tz::UTC,
            snmp: SnmpSettings::default(),
            storage_backend: StorageBackend::Embedded,
            cache_backend: CacheBackend::Embedded,
            bus_backend: BusBackend::Embedded,
            coordination: Coordination::Local,
            resources: crate::store::ResourceSettings::new("local"),
            enrichment: crate::pipeline::enrichment_cache::EnrichmentLimits::default(),
            endpoints: crate::endpoints::EndpointSettings::default(),
            api: None,
        }
    }

    pub fn load(path: &Path) -> Result<SiteConfig, LocatedError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LocatedError::new(path, 0, format!("cannot read site config: {e}")))?;
        SiteConfig::parse(path, &text)
    }

    /// Parses `text` (the file `path`), with data and cache defaults from
    /// the environment.
    pub fn parse(path: &Path, text: &str) -> Result<SiteConfig, LocatedError> {
        SiteConfig::parse_in(path, text, &DefaultDirs::from_env())
    }

    /// Parses `text` (the file `path`); what it does not place goes into
    /// `dirs`.
    pub fn parse_in(
        path: &Path,
        text: &str,
        dirs: &DefaultDirs,
    ) -> Result<SiteConfig, LocatedError> {
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
        let mut site = SiteConfig::embedded_in(dirs);
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
        file.plugins
            .limits(&mut site.loading, &mut site.cache_max_size, &at)?;

        (
            site.max_concurrent_runs,
            site.default_limits,
            site.limit_caps,
        ) = file.sandbox.resolve(
            site.max_concurrent_runs,
            site.default_limits,
            site.limit_caps,
            &at,
        )?;

        site.plugin_log = file.sandbox.log_budget(&at)?;
        site.storage_backend = storage_backend(&file.storage, &at)?;
        site.cache_backend = cache_backend(&file.cache, &file.coordination, &at)?;
        site.bus_backend = bus_backend(&file.bus, &at)?;
        site.coordination = file.coordination.resolve(&site.name, &at)?;
        site.resources = file.resources.resolve(&site.name, &at)?;
        site.enrichment = file.enrichment.resolve(&at)?;
        site.endpoints = file.endpoints.resolve(base, &at)?;
        if let Some(path) = &file.storage.path {
            site.database = join(path);
        }
        site.outputs = file.outputs.resolve(&join(Path::new(".")), &at)?;
        site.api = file
            .api
            .resolve(path, site.outputs.prometheus.is_some(), &at)?;
        if let Some(capacity) = file.bus.capacity(&at)? {
            site.bus_capacity = capacity;
        }
        site.max_runs_per_plugin = file.scheduler.resolve(site.max_concurrent_runs, &at)?;
        site.timezone = file.scheduler.timezone(&at)?;

        site.snmp = crate::capabilities::snmp::settings::resolve(file.snmp, path, &at)?;

        site.allowed_capabilities = file.capabilities.allowed(&at)?;
        site.file_roots = file.capabilities.file_roots(base, &at)?;
        Ok(site)
    }

    /// The plugin subsystem's slice of this config.
    pub fn plugin_policy(&self) -> crate::plugin::PluginPolicy {
        crate::plugin::PluginPolicy {
            loading: self.loading,
            cache_max_size: self.cache_max_size,
            default_limits: self.default_limits,
            limit_caps: self.limit_caps,
            allowed_capabilities: self.allowed_capabilities.clone(),
            file_roots: self.file_roots.clone(),
            snmp_defaults: self.snmp.defaults,
            timezone: self.timezone,
        }
    }

    pub fn allows(&self, capability: &str) -> bool {
        self.allowed_capabilities.iter().any(|c| c == capability)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|prefix| prefix.matches('\n').count() + 1)
        .unwrap_or(0)
}

impl crate::sandbox::SandboxSettings {
    /// The sandbox's slice of the site config (assembled here, at the top,
    /// so the sandbox does not depend on the whole site config).
    pub fn from_site(site: &SiteConfig) -> crate::sandbox::SandboxSettings {
        crate::sandbox::SandboxSettings {
            cache_dir: site.cache_dir.clone(),
            engine: crate::sandbox::EngineSettings {
                max_concurrent_runs: site.max_concurrent_runs,
                max_memory: site.limit_caps.memory,
                max_table_elements: site.limit_caps.table_elements,
                allocator: crate::sandbox::AllocatorChoice::Auto,
            },
            snmp: site.snmp.clone(),
            log_budget: site.plugin_log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn dirs() -> DefaultDirs {
        DefaultDirs {
            data: PathBuf::from("/var/lib/vigil"),
            cache: PathBuf::from("/var/cache/vigil"),
        }
    }

    fn parse(text: &str) -> Result<SiteConfig, LocatedError> {
        SiteConfig::parse_in(Path::new("/etc/vigil/site.toml"), text, &dirs())
    }

    fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            set.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn data_and_cache_default_to_systemds_directories_not_the_sites() {
        let cwd = Some(PathBuf::from("/home/op/work"));
        let systemd = DefaultDirs::from_vars(
            vars(&[
                ("STATE_DIRECTORY", "/var/lib/vigil:/var/lib/other"),
                ("CACHE_DIRECTORY", "/var/cache/vigil"),
                ("XDG_CACHE_HOME", "/home/op/.xdg"),
                ("HOME", "/home/op"),
            ]),
            cwd.clone(),
        );
        assert_eq!(
            systemd.data,
            PathBuf::from("/var/lib/vigil"),
            "the first of several"
        );
        assert_eq!(systemd.cache, PathBuf::from("/var/cache/vigil"));

        let shell = DefaultDirs::from_vars(
            vars(&[
                ("XDG_CACHE_HOME", "/home/op/.xdg"),
                ("HOME", "/home/op"),
                ("STATE_DIRECTORY", ""),
            ]),
            cwd.clone(),
        );
        assert_eq!(shell.data, PathBuf::from("/home/op/work/vigil-data"));
        assert_eq!(shell.cache, PathBuf::from("/home/op/.xdg/vigil"));
        let bare = DefaultDirs::from_vars(vars(&[]), cwd);
        assert_eq!(bare.cache, PathBuf::from("/home/op/work/.vigil-cache"));

        // A site file in /etc/vigil that sets neither puts nothing there.
        let site = parse("[site]\nname = \"lab\"\n").expect("valid");
        assert_eq!(site.database, PathBuf::from("/var/lib/vigil/vigil.db"));
        assert_eq!(site.cache_dir, PathBuf::from("/var/cache/vigil"));
        // What the file sets stays relative to the file.
        let site = parse(
            "[site]\nname = \"lab\"\n[storage]\npath = \"db/v.db\"\n[plugins]\ncache_dir = \"c\"\n",
        )
        .expect("valid");
        assert_eq!(site.database, PathBuf::from("/etc/vigil/db/v.db"));
        assert_eq!(site.cache_dir, PathBuf::from("/etc/vigil/c"));
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
    fn cron_schedules_follow_the_sites_time_zone() {
        let site = parse("[site]\nname = \"lab\"\n").expect("valid");
        assert_eq!(site.plugin_policy().timezone, chrono_tz::Tz::UTC);
        let site = parse("[site]\nname = \"lab\"\n[scheduler]\ntimezone = \"Europe/Berlin\"\n")
            .expect("valid");
        assert_eq!(site.plugin_policy().timezone, chrono_tz::Tz::Europe__Berlin);
        let err = parse("[site]\nname = \"lab\"\n[scheduler]\ntimezone = \"Mars/Olympus\"\n")
            .expect_err("unknown zone");
        assert_eq!(err.line, 4);
        assert!(
            err.message.contains("unknown time zone \"Mars/Olympus\""),
            "{err}"
        );
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
        // Where it is: its file_roots must exist.
        let site = SiteConfig::parse_in(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-configs/multi-agent-site.toml"),
            include_str!("../../plugin-configs/multi-agent-site.toml"),
            &dirs(),
        )
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
