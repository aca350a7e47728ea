//! Plugins as files: the ini reader, the manifest checks, the loaded set and
//! the directory watcher that keeps it current.

pub mod ini;
pub mod manifest;
/// `vigil plugins test`: a run against a device recording, offline.
pub mod offline;
pub mod registry;
/// `vigil plugins new`: a plugin crate that builds and loads as it is.
pub mod template;
pub mod watcher;

pub use manifest::{ManifestErrors, PLUGIN_FILE_EXTENSION, PluginKind, PluginManifest, StatusForm};

pub use registry::{LoadedPlugin, PluginRegistry, RegistryEvent};

use std::path::PathBuf;

use crate::capabilities::snmp::RequestOptions;
use crate::sandbox::cache::LoadLimits;
use crate::sandbox::limits::Limits;
use vigil_core::{At, LocatedError};

/// What the site decides about plugins, as the manifest checks and the
/// registry need it: the plugin subsystem's slice of the site config,
/// assembled at the top (`SiteConfig::plugin_policy`), so nothing here
/// depends on the whole site config.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginPolicy {
    /// What one plugin may make vigil read and compile.
    pub loading: LoadLimits,
    /// Unused precompiled entries are pruned past this.
    pub cache_max_size: u64,
    /// Limits a plugin gets unless its `[sandbox]` section says otherwise.
    pub default_limits: Limits,
    /// Limits no plugin may exceed.
    pub limit_caps: Limits,
    /// Capabilities plugins may be granted.
    pub allowed_capabilities: Vec<String>,
    /// Directories a `files` grant may point into (canonical paths).
    pub file_roots: Vec<PathBuf>,
    /// SNMP request options a plugin's `[snmp]` section starts from.
    pub snmp_defaults: RequestOptions,
    /// The zone cron schedules are evaluated in (`[scheduler] timezone`).
    pub timezone: chrono_tz::Tz,
}

impl PluginPolicy {
    pub fn allows(&self, capability: &str) -> bool {
        self.allowed_capabilities.iter().any(|c| c == capability)
    }
}

// --- `[plugins]` in the site config ----------------------------------------

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    #[serde(default)]
    pub(crate) directories: Vec<PathBuf>,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) max_module_size: Option<toml::Spanned<toml::Value>>,
    pub(crate) max_code_size: Option<toml::Spanned<toml::Value>>,
    pub(crate) max_function_size: Option<toml::Spanned<toml::Value>>,
    pub(crate) max_functions: Option<toml::Spanned<toml::Value>>,
    pub(crate) cache_max_size: Option<toml::Spanned<toml::Value>>,
}

/// The `[plugins]` limits on loading: each between its minimum and vigil's
/// ceiling (see [`crate::sandbox::cache`]).
impl PluginsSection {
    /// Applies the loading limits over `loading` and `cache_max_size`.
    pub fn limits(
        &self,
        loading: &mut LoadLimits,
        cache_max_size: &mut u64,
        at: At<'_>,
    ) -> Result<(), LocatedError> {
        plugins_limits(self, loading, cache_max_size, at)
    }
}

fn plugins_limits(
    section: &PluginsSection,
    loading: &mut LoadLimits,
    cache_max_size: &mut u64,
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
            spec.set(loading, parsed);
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
        *cache_max_size = parsed;
    }
    Ok(())
}

fn plugins_number(
    key: &str,
    value: &toml::Spanned<toml::Value>,
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
