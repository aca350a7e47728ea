//! `vigil check`: validates a site config and everything it references,
//! offline, the way `promtool check config` or `vector validate` do, so an
//! operator finds every mistake before `vigil run` (or systemd) does.
//!
//! It reuses the loaders `vigil run` uses, so what passes here loads there:
//!
//! * the site file itself ([`SiteConfig::load`]), which also reads every
//!   secret it names (`[[snmp.credentials]]`, InfluxDB and Pushgateway
//!   passwords and tokens, inline, `{ env }` or `{ file }`), parses the
//!   credentials' filters and networks, and checks `[outputs]`, the
//!   backends, `[capabilities] file_roots` and every limit;
//! * every plugin directory (it must be a readable directory) and every
//!   `*.vigil-plugin` file in it: the ini file and its checks against the
//!   site ([`PluginManifest::load`], with its warnings), then the component
//!   ([`Sandbox::prepare`]: size and compile limits, the world its kind
//!   needs, the capabilities it imports), as `vigil plugins check` does;
//!   and no two files may give the same `[Core] Name`;
//! * cross-references: a credential's `discovery_plugins` naming no
//!   discovery plugin in the plugin directories is a warning (the entry can
//!   never match).
//!
//! Every problem is a [`LocatedError`] (file, and line where known).
//! Errors mean `vigil run` would refuse the file or skip a plugin;
//! warnings mean it would run, perhaps not as intended.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::plugin::{PLUGIN_FILE_EXTENSION, PluginKind, PluginManifest};
use crate::sandbox::{Sandbox, SandboxSettings};
use crate::site::SiteConfig;
use vigil_core::LocatedError;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `vigil run` would refuse the site or skip a plugin.
    Error,
    /// `vigil run` would run, perhaps not as intended.
    Warning,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub severity: Severity,
    pub error: LocatedError,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // Multi-line messages (a filter's caret picture) stay indented.
        let text = self.error.to_string().replace('\n', "\n    ");
        write!(f, "{label}: {text}")
    }
}

/// A plugin file that loads.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedPlugin {
    pub path: PathBuf,
    pub name: String,
    pub kind: PluginKind,
}

/// What `vigil check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// The site config, when it loads.
    pub site: Option<SiteConfig>,
    pub plugins: Vec<CheckedPlugin>,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == severity)
            .count()
    }

    fn error(&mut self, error: LocatedError) {
        self.problems.push(Problem {
            severity: Severity::Error,
            error,
        });
    }

    fn warning(&mut self, error: LocatedError) {
        self.problems.push(Problem {
            severity: Severity::Warning,
            error,
        });
    }
}

/// Checks the site file `path` and everything it references.
pub fn check_site(path: &Path) -> CheckReport {
    let mut report = CheckReport::default();
    let site = match SiteConfig::load(path) {
        Ok(site) => site,
        Err(error) => {
            report.error(error);
            return report;
        }
    };
    check_plugins(&site, path, &mut report);
    check_credentials(&site, &mut report);
    report.site = Some(site);
    report
}

/// The plugin directories and every plugin file in them.
fn check_plugins(site: &SiteConfig, site_path: &Path, report: &mut CheckReport) {
    if site.plugin_directories.is_empty() {
        report.warning(LocatedError::new(
            site_path,
            0,
            "plugins.directories lists no directory: `vigil run` has no plugin to run (fine for a consumer-only site)",
        ));
        return;
    }
    let mut files = Vec::new();
    for dir in &site.plugin_directories {
        match std::fs::read_dir(dir) {
            Ok(entries) => files.extend(
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|p| p.extension().is_some_and(|e| e == PLUGIN_FILE_EXTENSION)),
            ),
            Err(e) => report.error(LocatedError::new(
                site_path,
                0,
                format!("plugins.directories: {}: {e}", dir.display()),
            )),
        }
    }
    files.sort();
    if files.is_empty() {
        return;
    }
    let sandbox = match Sandbox::new(&SandboxSettings::from_site(site)) {
        Ok(sandbox) => Arc::new(sandbox),
        Err(e) => {
            report.error(LocatedError::new(
                site_path,
                0,
                format!(
                    "cannot set up the sandbox (plugins.cache_dir {}): {e:#}",
                    site.cache_dir.display()
                ),
            ));
            return;
        }
    };
    let policy = site.plugin_policy();
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in files {
        let manifest = match PluginManifest::load(&file, &policy) {
            Ok(manifest) => manifest,
            Err(errors) => {
                for error in errors.0 {
                    report.error(error);
                }
                continue;
            }
        };
        for warning in &manifest.warnings {
            report.warning(warning.clone());
        }
        if let Some(first) = names.get(&manifest.name) {
            report.error(LocatedError::new(
                &file,
                0,
                format!(
                    "[Core] name {:?} is already used by {} (the second file is skipped)",
                    manifest.name,
                    first.display()
                ),
            ));
            continue;
        }
        let (name, kind) = (manifest.name.clone(), manifest.kind);
        match sandbox.prepare(Arc::new(manifest)) {
            Ok(_) => {
                names.insert(name.clone(), file.clone());
                report.plugins.push(CheckedPlugin {
                    path: file,
                    name,
                    kind,
                });
            }
            Err(e) => report.error(LocatedError::new(&file, 0, format!("{e:#}"))),
        }
    }
}

/// Credentials bound to discovery plugins that are not there.
fn check_credentials(site: &SiteConfig, report: &mut CheckReport) {
    let discovery: Vec<String> = report
        .plugins
        .iter()
        .filter(|p| p.kind == PluginKind::Discovery)
        .map(|p| p.name.clone())
        .collect();
    for rule in &site.snmp.credentials {
        for plugin in &rule.discovery_plugins {
            if discovery.contains(plugin) {
                continue;
            }
            // `origin` is `path:line`.
            let (path, line) = match rule.origin.rsplit_once(':') {
                Some((path, line)) => (PathBuf::from(path), line.parse().unwrap_or(0)),
                None => (PathBuf::from(&rule.origin), 0),
            };
            report.warning(LocatedError::new(
                &path,
                line,
                format!(
                    "snmp.credentials: discovery_plugins names {plugin:?}, which is no discovery plugin in the plugin directories (known: {})",
                    if discovery.is_empty() {
                        "none".to_owned()
                    } else {
                        discovery.join(", ")
                    }
                ),
            ));
        }
    }
}
