//! The host imports plugins may use, as the runner composes them. Each
//! capability is one unit in its own crate: its WIT implementation on a
//! view of the run, its limits, its ini and site sections and its grant
//! check (`vigil-capabilities` for clock, config, enrichment-cache, kv and
//! log; `vigil-cap-snmp` for SNMP). The runner
//! ([`crate::sandbox::Sandbox::with_kv`]) adds each to the linker with one
//! line that picks its view out of the run's store data; adding a
//! capability is one new crate, its `.wit` file, that line and its name in
//! the site's capability list.
//!
//! Every call into these imports is charged against the run's host-call
//! quota first ([`vigil_wit::HostCalls`]).

pub use vigil_cap_snmp as snmp;
pub use vigil_capabilities::{clock, config, enrichment, kv, log, status};

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

pub fn capability_names() -> String {
    CAPABILITIES
        .iter()
        .map(|(name, _, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

// --- `[capabilities]` in the site config -----------------------------------

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesSection {
    #[serde(default)]
    pub(crate) allowed: Vec<toml::Spanned<String>>,
    #[serde(default)]
    pub(crate) file_roots: Vec<toml::Spanned<std::path::PathBuf>>,
}

impl CapabilitiesSection {
    /// `allowed`: each a capability this build provides.
    pub fn allowed(&self, at: vigil_core::At<'_>) -> Result<Vec<String>, vigil_core::LocatedError> {
        let mut allowed = Vec::new();
        for capability in &self.allowed {
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
                Some(_) => allowed.push(name.clone()),
            }
        }
        Ok(allowed)
    }

    /// `file_roots`, relative to `base` (the site file's directory), each
    /// an existing directory, as canonical paths.
    pub fn file_roots(
        &self,
        base: &std::path::Path,
        at: vigil_core::At<'_>,
    ) -> Result<Vec<std::path::PathBuf>, vigil_core::LocatedError> {
        let mut roots = Vec::new();
        for root in &self.file_roots {
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
            roots.push(canonical);
        }
        Ok(roots)
    }
}
