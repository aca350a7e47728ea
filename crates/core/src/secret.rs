//! Passwords, communities and tokens from the site config.
//!
//! A secret is written inline, or kept out of the file as
//! `{ env = "VAR" }` or `{ file = "path" }` (relative to the site file), and
//! is held in [`Secret`], whose `Debug` never shows it. Error messages name
//! the variable or file, never the value.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A password, community or token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text, for HTTP headers (it was read as UTF-8).
    pub fn expose_text(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A secret as written in the site file. `Debug` shows where an
/// `env` or `file` secret comes from, never an inline value.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    Inline(String),
    Env(EnvSecret),
    File(FileSecret),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSecret {
    env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSecret {
    file: PathBuf,
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            SecretSource::Env(env) => env.fmt(f),
            SecretSource::File(file) => file.fmt(f),
        }
    }
}

impl SecretSource {
    /// Reads the secret; `base` is the site file's directory.
    pub fn read(&self, base: &Path) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Inline(text) => text.clone(),
            SecretSource::Env(EnvSecret { env }) => match std::env::var(env) {
                Ok(value) => value,
                Err(std::env::VarError::NotPresent) => {
                    return Err(format!("environment variable {env} is not set"));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("environment variable {env} is not valid UTF-8"));
                }
            },
            SecretSource::File(FileSecret { file }) => {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                // Editors add a final newline; a secret never ends in one.
                text.trim_end_matches(['\r', '\n']).to_owned()
            }
        };
        if value.is_empty() {
            return Err("is empty".to_owned());
        }
        Ok(Secret(value.into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = SecretSource::Inline("hunter2-password".into())
            .read(Path::new("."))
            .expect("inline");
        assert_eq!(secret.expose_text(), "hunter2-password");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn an_inline_source_is_redacted_too() {
        let source: SecretSource =
            serde_json::from_str("\"hunter2-password\"").expect("inline source");
        assert!(!format!("{source:?}").contains("hunter2"), "{source:?}");
    }

    #[test]
    fn missing_sources_name_the_source_not_a_value() {
        let err = SecretSource::Env(EnvSecret {
            env: "VIGIL_TEST_SURELY_UNSET_VARIABLE".into(),
        })
        .read(Path::new("."))
        .expect_err("unset");
        assert!(err.contains("VIGIL_TEST_SURELY_UNSET_VARIABLE"), "{err}");
        let err = SecretSource::File(FileSecret {
            file: "no-such-secret-file".into(),
        })
        .read(Path::new("/nonexistent"))
        .expect_err("missing file");
        assert!(err.contains("/nonexistent/no-such-secret-file"), "{err}");
    }
}
