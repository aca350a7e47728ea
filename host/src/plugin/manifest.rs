//! A plugin's ini file (`*.vigil-plugin`), read and checked against the
//! site's rules.
//!
//! Panoptes-compatible keys: `[Core] Name, Module`; `[Documentation]
//! Author, Version, Website, Description`; `[main] execute_frequency`
//! (required), `resource_filter`, `enrichment_ttl`, `results_cache_age`,
//! `namespace`. vigil adds `[Core] Kind`, `[sandbox]` (limits, see
//! [`crate::sandbox::limits`]) and `[capabilities]`. Every other section
//! (and `[main]`) is the plugin's own configuration, readable through the
//! `config` import.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::PluginPolicy;
use super::ini::{IniDocument, IniEntry, IniSection, LocatedError};
use crate::capabilities::config::{ConfigValue, PluginSections, SectionEntry};
use crate::capabilities::snmp::RequestOptions;
use crate::capabilities::snmp::settings::apply_plugin_option;
use crate::capabilities::{CAPABILITIES, capability_names};
use crate::filter::ResourceFilter;
use crate::sandbox::limits::{LIMITS, LimitSpec, Limits};
use crate::units::parse_duration;
use vigil_core::status::STATUS_METRIC;

/// The file name ending of plugin ini files.
pub const PLUGIN_FILE_EXTENSION: &str = "vigil-plugin";

/// What a plugin does, which decides the WIT world its component must export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    Discovery,
    Enrichment,
    Polling,
    Analysis,
    /// Reads a device's address tables (ARP/neighbour, bridge forwarding)
    /// for the endpoint tracker (`Kind = endpoints`, world
    /// `endpoint-collection`); scheduled per resource like polling.
    Endpoints,
}

impl PluginKind {
    pub const ALL: [PluginKind; 5] = [
        PluginKind::Discovery,
        PluginKind::Enrichment,
        PluginKind::Polling,
        PluginKind::Analysis,
        PluginKind::Endpoints,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Discovery => "discovery",
            PluginKind::Enrichment => "enrichment",
            PluginKind::Polling => "polling",
            PluginKind::Analysis => "analysis",
            PluginKind::Endpoints => "endpoints",
        }
    }

    /// The WIT interface a component of this kind exports.
    pub fn export_interface(self) -> &'static str {
        match self {
            PluginKind::Discovery => "vigil:plugin/discoverer@0.1.0",
            PluginKind::Enrichment => "vigil:plugin/enricher@0.1.0",
            PluginKind::Polling => "vigil:plugin/poller@0.1.0",
            PluginKind::Analysis => "vigil:plugin/analyzer@0.1.0",
            PluginKind::Endpoints => "vigil:plugin/endpoint-collector@0.1.0",
        }
    }

    /// Whether runs of this kind are for one resource (enrichment, polling,
    /// endpoints): scheduled once per matching resource, with SNMP to it.
    pub fn per_resource(self) -> bool {
        matches!(
            self,
            PluginKind::Enrichment | PluginKind::Polling | PluginKind::Endpoints
        )
    }

    fn parse(text: &str) -> Option<PluginKind> {
        PluginKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(text.trim()))
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Documentation {
    pub author: Option<String>,
    pub version: Option<String>,
    pub website: Option<String>,
    pub description: Option<String>,
}

/// When a plugin runs: every `execute_frequency`, or on a cron schedule.
///
/// Cron expressions have crontab's meaning (as in Vixie cron and every
/// Linux crontab): five fields `minute hour day-of-month month
/// day-of-week`, optionally a leading seconds field (and a trailing year);
/// day-of-week 0 and 7 are Sunday, `1-5` is Monday to Friday; when both
/// day fields are restricted, either matching fires. They are evaluated in
/// the site's time zone (`[scheduler] timezone`, default UTC), so `0 9 * *
/// 1-5` fires at 09:00 local time on weekdays across DST changes.
#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron {
        expression: String,
        schedule: Box<croner::Cron>,
        timezone: chrono_tz::Tz,
        interval: Duration,
    },
}

impl Schedule {
    /// The nominal time between runs (for cron: between its next two fires),
    /// used for the over-polling guard and as the metrics interval.
    pub fn interval(&self) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron { interval, .. } => *interval,
        }
    }

    /// Parses `execute_frequency` with cron expressions in UTC.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        Schedule::parse_in(text, chrono_tz::Tz::UTC)
    }

    /// Parses `execute_frequency`: a duration (`60`, `90s`, `5m`) or a cron
    /// expression evaluated in `timezone`.
    pub fn parse_in(text: &str, timezone: chrono_tz::Tz) -> Result<Schedule, String> {
        let text = text.trim();
        if !text.contains(' ') {
            return match parse_duration(text) {
                Ok(d) if d >= MIN_EXECUTE_FREQUENCY => Ok(Schedule::Every(d)),
                Ok(_) => Err("must be at least 1 second".to_owned()),
                Err(e) => Err(e),
            };
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Optional)
            .build();
        let schedule = parser
            .parse(text)
            .map_err(|e| format!("{text:?} is neither a duration nor a cron expression ({e})"))?;
        let now = chrono::Utc::now().with_timezone(&timezone);
        let next = |after: &chrono::DateTime<chrono_tz::Tz>| {
            schedule.find_next_occurrence(after, false).ok()
        };
        let interval = match next(&now).and_then(|a| Some((a, next(&a)?))) {
            Some((a, b)) => (b - a).to_std().unwrap_or(Duration::ZERO),
            None => return Err(format!("cron expression {text:?} never fires again")),
        };
        if interval < MIN_EXECUTE_FREQUENCY {
            return Err(format!(
                "cron expression {text:?} fires more than once a second"
            ));
        }
        Ok(Schedule::Cron {
            expression: text.to_owned(),
            schedule: Box::new(schedule),
            timezone,
            interval,
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {d:?}"),
            Schedule::Cron {
                expression,
                timezone,
                ..
            } => write!(f, "cron {expression:?} ({timezone})"),
        }
    }
}

pub use vigil_transform::RateTransform;

/// Reads a `[transforms]` entry: `name = rate:<group type>:<metric>,...`.
fn parse_rate_transform(name: &str, text: &str) -> Result<RateTransform, String> {
    {
        let mut parts = text.trim().splitn(3, ':');
        let (Some(kind), Some(group_type), Some(metrics)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{text:?} is not `rate:<group type>:<metric,...>`"));
        };
        if kind.trim() != "rate" {
            return Err(format!(
                "unknown transform {:?} (vigil supports `rate`)",
                kind.trim()
            ));
        }
        let group_type = group_type.trim().to_owned();
        let metrics: Vec<String> = metrics
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        if !crate::sandbox::validate::valid_name(&group_type)
            || metrics.is_empty()
            || !metrics
                .iter()
                .all(|m| crate::sandbox::validate::valid_name(m))
        {
            return Err(format!(
                "{text:?}: group type and metric names must be [a-z_][a-z0-9_]*, with at least one metric"
            ));
        }
        Ok(RateTransform {
            name: name.to_owned(),
            group_type,
            metrics,
        })
    }
}

/// What a plugin was granted beyond the bare sandbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// A host directory mounted read-only at `/data` in the guest.
    pub files: Option<PathBuf>,
    /// SNMP to the endpoint of the resource being run for.
    pub snmp: bool,
}

impl Grants {
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.files.is_some() {
            names.push("files");
        }
        if self.snmp {
            names.push("snmp");
        }
        names
    }
}

/// A plugin ini file, parsed and validated.
#[derive(Debug, Clone)]
pub struct PluginManifest {
    pub path: PathBuf,
    pub name: String,
    pub kind: PluginKind,
    /// The component file, resolved relative to the ini file.
    pub module: PathBuf,
    pub documentation: Documentation,
    pub schedule: Schedule,
    pub resource_filter: Option<ResourceFilter>,
    /// Discovery plugins: how long a resource lives when the plugin does not
    /// give it a TTL (`[main] resource_ttl`, default 3 schedule intervals).
    pub resource_ttl: Duration,
    /// Sites this discovery plugin may report resources in (`[main]
    /// sites`); empty means the host's own site only.
    pub sites: Vec<String>,
    /// Enrichment plugins: how long their groups stay cached at most.
    pub enrichment_ttl: Option<Duration>,
    /// Polling and endpoints plugins: cached enrichment namespaces they may read
    /// (`[enrichment] preload = self:interface,self:device`).
    pub preload: Vec<String>,
    pub transforms: Vec<RateTransform>,
    pub limits: Limits,
    pub grants: Grants,
    /// SNMP request settings (site defaults, then the plugin's `[snmp]`);
    /// `Some` exactly when `snmp` is granted.
    pub snmp: Option<RequestOptions>,
    /// The sections the plugin can read through the `config` import.
    pub sections: Arc<PluginSections>,
    /// Polling plugins: the form of the status group every run yields
    /// (`[status]`).
    pub status: StatusForm,
    /// The site's bounds on reading and compiling the component.
    pub loading: crate::sandbox::cache::LoadLimits,
    /// Lines that load but probably do not mean what they say (see
    /// [`IniDocument::warnings`]); reported by `vigil plugins check`,
    /// `vigil check` and at load.
    pub warnings: Vec<LocatedError>,
}

/// Everything wrong with one plugin file, one located line per problem.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ManifestErrors(pub Vec<LocatedError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Sections vigil interprets itself; plugins never see them.
const HOST_SECTIONS: [&str; 6] = [
    "core",
    "documentation",
    "sandbox",
    "capabilities",
    "snmp",
    "status",
];
const MAX_NAME_LEN: usize = 128;
/// Shortest schedule accepted: faster polling belongs to streaming telemetry.
// (also the floor for cron schedules)
const MIN_EXECUTE_FREQUENCY: Duration = Duration::from_secs(1);

impl PluginManifest {
    /// Reads and validates `path` against the site's `policy`. The file is read through
    /// one opened handle, bounded by [`MAX_MANIFEST_BYTES`].
    ///
    /// [`MAX_MANIFEST_BYTES`]: crate::sandbox::cache::MAX_MANIFEST_BYTES
    pub fn load(path: &Path, policy: &PluginPolicy) -> Result<PluginManifest, ManifestErrors> {
        let whole_file =
            |message: String| ManifestErrors(vec![LocatedError::new(path, 0, message)]);
        let bytes = crate::sandbox::cache::read_regular_file(
            path,
            crate::sandbox::cache::MAX_MANIFEST_BYTES,
            "the plugin file size limit",
        )
        .map_err(|e| whole_file(e.problem.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            whole_file(format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        PluginManifest::parse(path, &text, policy)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        policy: &PluginPolicy,
    ) -> Result<PluginManifest, ManifestErrors> {
        let doc = IniDocument::parse(path, text).map_err(|e| ManifestErrors(vec![e]))?;
        let mut errors = Vec::new();
        let mut check = Checker {
            doc: &doc,
            errors: &mut errors,
        };

        let core = check.section("Core");
        check.only_keys(core, "Core", &["name", "module", "kind"]);
        let name = check.required(core, "Core", "name").and_then(|entry| {
            let name = entry.value.trim();
            if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
                check.at(
                    entry,
                    format!("[Core] name must be 1 to {MAX_NAME_LEN} printable characters"),
                );
                None
            } else {
                Some(name.to_owned())
            }
        });
        let kind = check.required(core, "Core", "kind").and_then(|entry| {
            let kind = PluginKind::parse(&entry.value);
            if kind.is_none() {
                check.at(
                    entry,
                    format!(
                        "[Core] kind {:?} is not one of discovery, enrichment, polling, analysis, endpoints",
                        entry.value
                    ),
                );
            }
            kind
        });
        let module = check
            .required(core, "Core", "module")
            .and_then(|entry| check.module_path(entry));

        let documentation = match doc.section("Documentation") {
            Some(section) => {
                check.only_keys(
                    Some(section),
                    "Documentation",
                    &["author", "version", "website", "description"],
                );
                let text = |key: &str| section.get(key).map(|e| e.value.clone());
                Documentation {
                    author: text("author"),
                    version: text("version"),
                    website: text("website"),
                    description: text("description"),
                }
            }
            None => Documentation::default(),
        };

        let main = check.section("main");
        let schedule = check
            .required(main, "main", "execute_frequency")
            .and_then(
                |entry| match Schedule::parse_in(&entry.value, policy.timezone) {
                    Ok(schedule) => Some(schedule),
                    Err(e) => {
                        check.at(entry, format!("[main] execute_frequency: {e}"));
                        None
                    }
                },
            );
        let resource_filter = main
            .and_then(|s| s.get("resource_filter"))
            .and_then(|entry| {
                match ResourceFilter::parse(&entry.value) {
                    Ok(filter) => Some(filter),
                    Err(e) => {
                        // Point at the line of the filter the error is on (ini
                        // continuation lines follow the key's line).
                        check.errors.push(check.doc.error(
                            entry.line + e.line.saturating_sub(1),
                            format!("[main] resource_filter: {e}\n{}", e.render(&entry.value)),
                        ));
                        None
                    }
                }
            });
        let mut durations = [
            ("resource_ttl", None),
            ("enrichment_ttl", None),
            ("results_cache_age", None),
        ];
        for (key, value) in durations.iter_mut() {
            if let Some(entry) = main.and_then(|s| s.get(key)) {
                match parse_duration(&entry.value) {
                    Ok(d) if !d.is_zero() => *value = Some(d),
                    Ok(_) => check.at(entry, format!("[main] {key} must be more than 0")),
                    Err(e) => check.at(entry, format!("[main] {key}: {e}")),
                }
            }
        }
        let [(_, resource_ttl), (_, enrichment_ttl), _] = durations;
        // `[main] sites`: the sites a discovery plugin may report resources
        // in (default: the host's own). The operator's choice, so a plugin
        // cannot put a resource into another site's credentials.
        let mut sites = Vec::new();
        if let Some(entry) = main.and_then(|s| s.get("sites")) {
            for item in entry.value.split(',').map(str::trim) {
                if item.is_empty() || item.len() > 256 || item.chars().any(char::is_control) {
                    check.at(
                        entry,
                        format!("[main] sites: {item:?} is not a site name (1 to 256 characters, no control characters)"),
                    );
                } else if !sites.iter().any(|s| s == item) {
                    sites.push(item.to_owned());
                }
            }
            if kind.is_some_and(|k| k != PluginKind::Discovery) {
                check.at(
                    entry,
                    "[main] sites applies to discovery plugins only".to_owned(),
                );
            }
        }

        let preload = match doc.section("enrichment").and_then(|s| s.get("preload")) {
            None => Vec::new(),
            Some(entry) => {
                let mut namespaces = Vec::new();
                for item in entry
                    .value
                    .split(',')
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                {
                    // Panoptes writes `self:<namespace>`: the polled resource's own data.
                    match item.strip_prefix("self:") {
                        Some(ns) if crate::sandbox::validate::valid_name(ns) => {
                            namespaces.push(ns.to_owned())
                        }
                        _ => check.at(
                            entry,
                            format!("[enrichment] preload: {item:?} is not `self:<namespace>`"),
                        ),
                    }
                }
                namespaces
            }
        };
        let mut transforms = Vec::new();
        for entry in doc
            .section("transforms")
            .into_iter()
            .flat_map(|s| &s.entries)
        {
            match parse_rate_transform(&entry.key, &entry.value) {
                Ok(t) => transforms.push(t),
                Err(e) => check.at(entry, format!("[transforms] {}: {e}", entry.key)),
            }
        }

        let limits = check.limits(policy);
        let grants = check.grants(policy);
        let snmp = check.snmp_options(policy, &grants, kind);
        let sections = Arc::new(plugin_sections(&doc));
        let status = check.status_form(kind);

        match (name, kind, module, schedule) {
            (Some(name), Some(kind), Some(module), Some(schedule)) if errors.is_empty() => {
                let resource_ttl = resource_ttl.unwrap_or(schedule.interval() * 3);
                Ok(PluginManifest {
                    path: path.to_owned(),
                    name,
                    kind,
                    module,
                    documentation,
                    schedule,
                    resource_filter,
                    resource_ttl,
                    sites,
                    enrichment_ttl,
                    preload,
                    transforms,
                    limits,
                    grants,
                    snmp,
                    sections,
                    status,
                    loading: policy.loading,
                    warnings: doc.warnings.clone(),
                })
            }
            _ => Err(ManifestErrors(errors)),
        }
    }
}

/// The status group(s) a polling plugin's runs yield (`[status]`):
///
/// * vigil's generic group, `status` with the gauge `polling_status` and a
///   `plugin` dimension, one series per plugin and device (`generic`,
///   default yes; vigil's own dashboards read it);
/// * Panoptes' form, `status` with the gauge named by `metric` (e.g.
///   `interface_polling_status`) and no dimension: what Panoptes'
///   dashboards and alerts query. Off unless `metric` is set; the bundled
///   Panoptes-equivalent plugins set it.
///
/// Both carry the same Panoptes status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusForm {
    pub generic: bool,
    pub metric: Option<String>,
}

impl Default for StatusForm {
    fn default() -> Self {
        StatusForm {
            generic: true,
            metric: None,
        }
    }
}

/// Collects located errors while walking a document.
struct Checker<'a> {
    doc: &'a IniDocument,
    errors: &'a mut Vec<LocatedError>,
}

impl<'a> Checker<'a> {
    fn at(&mut self, entry: &IniEntry, message: String) {
        self.errors.push(self.doc.error(entry.line, message));
    }

    fn section(&mut self, name: &str) -> Option<&'a IniSection> {
        let section = self.doc.section(name);
        if section.is_none() {
            self.errors
                .push(self.doc.error(0, format!("missing section [{name}]")));
        }
        section
    }

    fn required(
        &mut self,
        section: Option<&'a IniSection>,
        name: &str,
        key: &str,
    ) -> Option<&'a IniEntry> {
        let section = section?;
        let entry = section.get(key);
        if entry.is_none() {
            self.errors.push(self.doc.error(
                section.line,
                format!("[{name}] is missing required key {key:?}"),
            ));
        }
        entry
    }

    fn only_keys(&mut self, section: Option<&'a IniSection>, name: &str, known: &[&str]) {
        for entry in section.into_iter().flat_map(|s| &s.entries) {
            if !known.contains(&entry.key.as_str()) {
                self.at(
                    entry,
                    format!(
                        "[{name}] unknown key {:?} (known: {})",
                        entry.key,
                        known.join(", ")
                    ),
                );
            }
        }
    }

    /// `[status] metric = NAME` and `generic = yes|no`.
    fn status_form(&mut self, kind: Option<PluginKind>) -> StatusForm {
        let mut form = StatusForm::default();
        let Some(section) = self.doc.section("status") else {
            return form;
        };
        if kind.is_some_and(|k| k != PluginKind::Polling) {
            self.errors.push(self.doc.error(
                section.line,
                "[status] applies to polling plugins only".to_owned(),
            ));
            return form;
        }
        self.only_keys(Some(section), "status", &["metric", "generic"]);
        if let Some(entry) = section.get("metric") {
            let name = entry.value.trim();
            if crate::sandbox::validate::valid_name(name) && name != STATUS_METRIC {
                form.metric = Some(name.to_owned());
            } else {
                self.at(
                    entry,
                    format!("[status] metric: {name:?} is not a metric name other than `{STATUS_METRIC}` (lower-case letters, digits and `_`, e.g. `interface_polling_status`)"),
                );
            }
        }
        if let Some(entry) = section.get("generic") {
            match parse_bool(&entry.value) {
                Some(generic) => form.generic = generic,
                None => self.at(
                    entry,
                    format!("[status] generic: {:?} is not yes or no", entry.value),
                ),
            }
        }
        if !form.generic && form.metric.is_none() {
            self.errors.push(
                self.doc.error(
                    section.line,
                    "[status] generic = no needs a `metric`: every polling run yields a status"
                        .to_owned(),
                ),
            );
        }
        form
    }

    fn module_path(&mut self, entry: &IniEntry) -> Option<PathBuf> {
        let written = entry.value.trim();
        if written.is_empty() {
            self.at(entry, "[Core] module is empty".to_owned());
            return None;
        }
        let base = self.doc.path.parent().unwrap_or(Path::new("."));
        let direct = base.join(written);
        // Panoptes names a module without its extension.
        let with_extension = base.join(format!("{written}.wasm"));
        if direct.is_file() {
            Some(direct)
        } else if with_extension.is_file() {
            Some(with_extension)
        } else {
            self.at(
                entry,
                format!("[Core] module: no component at {}", direct.display()),
            );
            None
        }
    }

    fn limits(&mut self, policy: &PluginPolicy) -> Limits {
        let mut limits = policy.default_limits;
        let Some(section) = self.doc.section("sandbox") else {
            return limits;
        };
        for entry in &section.entries {
            let Some(spec) = LimitSpec::find(&entry.key) else {
                let known: Vec<&str> = LIMITS.iter().map(|s| s.key).collect();
                self.at(
                    entry,
                    format!(
                        "[sandbox] unknown limit {:?} (known: {})",
                        entry.key,
                        known.join(", ")
                    ),
                );
                continue;
            };
            match spec.parse(&entry.value) {
                Ok(value) => {
                    let cap = spec.get(&policy.limit_caps).unwrap_or(spec.cap);
                    if value > cap {
                        self.at(
                            entry,
                            format!(
                                "[sandbox] {} = {} is above the site's cap of {}",
                                spec.key,
                                spec.format(value),
                                spec.format(cap)
                            ),
                        );
                    } else {
                        spec.set(&mut limits, value);
                    }
                }
                Err(e) => self.at(entry, format!("[sandbox] {}: {e}", spec.key)),
            }
        }
        limits
    }

    fn grants(&mut self, policy: &PluginPolicy) -> Grants {
        let mut grants = Grants::default();
        let Some(section) = self.doc.section("capabilities") else {
            return grants;
        };
        for entry in &section.entries {
            let Some((name, provided, _)) =
                CAPABILITIES.iter().find(|(name, _, _)| *name == entry.key)
            else {
                self.at(
                    entry,
                    format!(
                        "[capabilities] unknown capability {:?} (known: {})",
                        entry.key,
                        capability_names()
                    ),
                );
                continue;
            };
            if !provided {
                self.at(
                    entry,
                    format!("[capabilities] {name} is not provided by this version of vigil"),
                );
                continue;
            }
            if !policy.allows(name) {
                self.at(entry, format!("[capabilities] {name} is not allowed by the site config (capabilities.allowed)"));
                continue;
            }
            if *name == "snmp" {
                match ConfigValue::infer(&entry.value).1 {
                    ConfigValue::Boolean(granted) => grants.snmp = granted,
                    _ => self.at(
                        entry,
                        format!("[capabilities] snmp = {:?}: write yes or no", entry.value),
                    ),
                }
                continue;
            }
            match self.file_grant(&entry.value, policy) {
                Ok(dir) => grants.files = Some(dir),
                Err(message) => self.at(entry, format!("[capabilities] files: {message}")),
            }
        }
        grants
    }

    /// The plugin's `[snmp]` section over the site's defaults. SNMP goes to
    /// the endpoint of the resource a run is for, so only enrichment and
    /// polling plugins can have it.
    fn snmp_options(
        &mut self,
        policy: &PluginPolicy,
        grants: &Grants,
        kind: Option<PluginKind>,
    ) -> Option<RequestOptions> {
        let section = self.doc.section("snmp");
        if !grants.snmp {
            if let Some(entry) = section.and_then(|s| s.entries.first()) {
                self.at(
                    entry,
                    "[snmp] settings, but the plugin does not ask for the snmp capability ([capabilities] snmp = yes)".to_owned(),
                );
            }
            return None;
        }
        if let Some(kind @ (PluginKind::Discovery | PluginKind::Analysis)) = kind
            && let Some(entry) = self.doc.section("capabilities").and_then(|s| s.get("snmp"))
        {
            self.at(
                entry,
                format!("[capabilities] snmp: a {kind} plugin has no resource to poll; only enrichment, polling and endpoints plugins can use SNMP"),
            );
            return None;
        }
        let mut options = policy.snmp_defaults;
        for entry in section.into_iter().flat_map(|s| &s.entries) {
            if let Err(message) = apply_plugin_option(&mut options, &entry.key, &entry.value) {
                self.at(entry, format!("[snmp] {message}"));
            }
        }
        Some(options)
    }

    fn file_grant(&self, written: &str, policy: &PluginPolicy) -> Result<PathBuf, String> {
        let base = self.doc.path.parent().unwrap_or(Path::new("."));
        let dir = base.join(written.trim());
        // Canonical paths defeat `..` and symlinks pointing out of a root.
        let canonical = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if !canonical.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        if !policy
            .file_roots
            .iter()
            .any(|root| canonical.starts_with(root))
        {
            return Err(format!(
                "{} is outside the site's capabilities.file_roots",
                canonical.display()
            ));
        }
        Ok(canonical)
    }
}

/// `yes`/`no`, `true`/`false`, `on`/`off` (any case) or `1`/`0`.
fn parse_bool(written: &str) -> Option<bool> {
    match ConfigValue::infer(written).1 {
        ConfigValue::Boolean(b) => Some(b),
        ConfigValue::Integer(1) => Some(true),
        ConfigValue::Integer(0) => Some(false),
        _ => None,
    }
}

fn plugin_sections(doc: &IniDocument) -> PluginSections {
    let sections = doc
        .sections
        .iter()
        .filter(|s| !HOST_SECTIONS.iter().any(|h| s.name.eq_ignore_ascii_case(h)))
        .map(|s| {
            let entries = s
                .entries
                .iter()
                .map(|e| {
                    let (raw, value) = ConfigValue::infer(&e.value);
                    SectionEntry {
                        key: e.key.clone(),
                        raw,
                        value,
                    }
                })
                .collect();
            (s.name.clone(), entries)
        })
        .collect();
    PluginSections::new(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PluginManifest, ManifestErrors> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("inventory.wasm"), b"\0asm").expect("module");
        PluginManifest::parse(
            &dir.path().join("p.vigil-plugin"),
            text,
            &crate::site::SiteConfig::embedded().plugin_policy(),
        )
    }

    const DISCOVERY: &str = "[Core]\nName = inventory\nKind = discovery\nModule = inventory.wasm\n[main]\nexecute_frequency = 60\n";

    #[test]
    fn an_inline_comment_is_part_of_the_value_and_warned_about() {
        let manifest =
            parse(&DISCOVERY.replace("Name = inventory", "Name = inventory    ; unique per site"))
                .expect("loads: the text after ';' is part of the name");
        assert_eq!(manifest.name, "inventory    ; unique per site");
        let warnings: Vec<String> = manifest.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].ends_with(
                "p.vigil-plugin:2: [Core] name: the value contains \" ;\"; plugin files have no inline comments, so the text after it is part of the value (put a comment on a line of its own)"
            ),
            "{warnings:?}"
        );
        assert!(parse(DISCOVERY).expect("valid").warnings.is_empty());
    }

    #[test]
    fn sites_are_the_operators_list() {
        let manifest = parse(&format!("{DISCOVERY}sites = lab1, lab2, lab1\n")).expect("valid");
        assert_eq!(manifest.sites, ["lab1", "lab2"]);
        assert!(parse(DISCOVERY).expect("valid").sites.is_empty());

        let error = parse(&format!("{DISCOVERY}sites = lab1, ,lab2\n"))
            .expect_err("an empty name")
            .to_string();
        assert!(
            error.contains("p.vigil-plugin:7: [main] sites: \"\" is not a site name"),
            "{error}"
        );
        let polling = DISCOVERY.replace("discovery", "polling") + "sites = lab1\n";
        let error = parse(&polling).expect_err("not discovery").to_string();
        assert!(
            error.contains("sites applies to discovery plugins only"),
            "{error}"
        );
    }

    #[test]
    fn the_status_section_picks_the_status_forms() {
        let polling = DISCOVERY.replace("Kind = discovery", "Kind = polling");
        let form = |extra: &str| parse(&format!("{polling}{extra}")).map(|m| m.status);

        assert_eq!(form("").expect("loads"), StatusForm::default());
        assert_eq!(
            form("[status]\nmetric = interface_polling_status\n").expect("loads"),
            StatusForm {
                generic: true,
                metric: Some("interface_polling_status".to_owned()),
            }
        );
        assert_eq!(
            form("[status]\nmetric = status\ngeneric = no\n").expect("loads"),
            StatusForm {
                generic: false,
                metric: Some("status".to_owned()),
            }
        );
        let refused = |extra: &str, why: &str| {
            let error = form(extra).expect_err(extra).to_string();
            assert!(error.contains(why), "{extra}: {error}");
        };
        refused(
            "[status]\nmetric = Interface Status\n",
            "is not a metric name",
        );
        refused(
            "[status]\nmetric = polling_status\n",
            "is not a metric name",
        );
        refused("[status]\ngeneric = no\n", "needs a `metric`");
        refused("[status]\ngeneric = maybe\n", "is not yes or no");
        refused("[status]\nmetrics = x\n", "metrics");
        let error = parse(&format!("{DISCOVERY}[status]\nmetric = x\n"))
            .expect_err("not for discovery")
            .to_string();
        assert!(
            error.contains("[status] applies to polling plugins only"),
            "{error}"
        );
        // The section is the host's, not the plugin's own configuration.
        let manifest = parse(&format!("{polling}[status]\nmetric = x_status\n")).expect("loads");
        assert!(manifest.sections.section("status").is_empty());
    }
}
