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

use super::ini::{IniDocument, IniEntry, IniSection, LocatedError};
use crate::capabilities::config::{ConfigValue, PluginSections, SectionEntry};
use crate::sandbox::limits::{LIMITS, LimitSpec, Limits};
use crate::site::{CAPABILITIES, SiteConfig, capability_names};
use crate::units::parse_duration;

/// The file name ending of plugin ini files.
pub const PLUGIN_FILE_EXTENSION: &str = "vigil-plugin";

/// What a plugin does, which decides the WIT world its component must export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    Discovery,
    Enrichment,
    Polling,
    Analysis,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] = [
        PluginKind::Discovery,
        PluginKind::Enrichment,
        PluginKind::Polling,
        PluginKind::Analysis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Discovery => "discovery",
            PluginKind::Enrichment => "enrichment",
            PluginKind::Polling => "polling",
            PluginKind::Analysis => "analysis",
        }
    }

    /// The WIT interface a component of this kind exports.
    pub fn export_interface(self) -> &'static str {
        match self {
            PluginKind::Discovery => "vigil:plugin/discoverer@0.1.0",
            PluginKind::Enrichment => "vigil:plugin/enricher@0.1.0",
            PluginKind::Polling => "vigil:plugin/poller@0.1.0",
            PluginKind::Analysis => "vigil:plugin/analyzer@0.1.0",
        }
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

/// What a plugin was granted beyond the bare sandbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// A host directory mounted read-only at `/data` in the guest.
    pub files: Option<PathBuf>,
}

impl Grants {
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.files.is_some() {
            names.push("files");
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
    pub execute_frequency: Duration,
    pub resource_filter: Option<String>,
    pub limits: Limits,
    pub grants: Grants,
    /// The sections the plugin can read through the `config` import.
    pub sections: Arc<PluginSections>,
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
const HOST_SECTIONS: [&str; 4] = ["core", "documentation", "sandbox", "capabilities"];
const MAX_NAME_LEN: usize = 128;
/// Shortest schedule accepted: faster polling belongs to streaming telemetry.
const MIN_EXECUTE_FREQUENCY: Duration = Duration::from_secs(1);

impl PluginManifest {
    /// Reads and validates `path` against `site`.
    pub fn load(path: &Path, site: &SiteConfig) -> Result<PluginManifest, ManifestErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ManifestErrors(vec![LocatedError::new(
                path,
                0,
                format!("cannot read plugin file: {e}"),
            )])
        })?;
        PluginManifest::parse(path, &text, site)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        site: &SiteConfig,
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
                        "[Core] kind {:?} is not one of discovery, enrichment, polling, analysis",
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
        let execute_frequency = check.required(main, "main", "execute_frequency").and_then(
            |entry| match parse_duration(&entry.value) {
                Ok(d) if d >= MIN_EXECUTE_FREQUENCY => Some(d),
                Ok(_) => {
                    check.at(
                        entry,
                        "[main] execute_frequency must be at least 1 second".to_owned(),
                    );
                    None
                }
                Err(e) => {
                    check.at(entry, format!("[main] execute_frequency: {e}"));
                    None
                }
            },
        );
        let resource_filter = main
            .and_then(|s| s.get("resource_filter"))
            .and_then(|entry| {
                if entry.value.trim().is_empty() {
                    check.at(
                        entry,
                        "[main] resource_filter is empty; remove the key to match every resource"
                            .to_owned(),
                    );
                    None
                } else {
                    Some(entry.value.clone())
                }
            });
        for key in ["enrichment_ttl", "results_cache_age"] {
            if let Some(entry) = main.and_then(|s| s.get(key))
                && let Err(e) = parse_duration(&entry.value)
            {
                check.at(entry, format!("[main] {key}: {e}"));
            }
        }

        let limits = check.limits(site);
        let grants = check.grants(site);
        let sections = Arc::new(plugin_sections(&doc));

        match (name, kind, module, execute_frequency) {
            (Some(name), Some(kind), Some(module), Some(execute_frequency))
                if errors.is_empty() =>
            {
                Ok(PluginManifest {
                    path: path.to_owned(),
                    name,
                    kind,
                    module,
                    documentation,
                    execute_frequency,
                    resource_filter,
                    limits,
                    grants,
                    sections,
                })
            }
            _ => Err(ManifestErrors(errors)),
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

    fn limits(&mut self, site: &SiteConfig) -> Limits {
        let mut limits = site.default_limits;
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
                    let cap = spec.get(&site.limit_caps).unwrap_or(spec.cap);
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

    fn grants(&mut self, site: &SiteConfig) -> Grants {
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
            if !site.allows(name) {
                self.at(entry, format!("[capabilities] {name} is not allowed by the site config (capabilities.allowed)"));
                continue;
            }
            // Only `files` is provided today.
            match self.file_grant(&entry.value, site) {
                Ok(dir) => grants.files = Some(dir),
                Err(message) => self.at(entry, format!("[capabilities] files: {message}")),
            }
        }
        grants
    }

    fn file_grant(&self, written: &str, site: &SiteConfig) -> Result<PathBuf, String> {
        let base = self.doc.path.parent().unwrap_or(Path::new("."));
        let dir = base.join(written.trim());
        // Canonical paths defeat `..` and symlinks pointing out of a root.
        let canonical = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if !canonical.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        if !site
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
