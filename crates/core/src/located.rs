//! An error at a place in a file (`path:line: message`), the one diagnostic
//! type every config reader in vigil returns, so an operator is always told
//! which file and line to fix.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error at a place in a file: `path:line: message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct LocatedError {
    pub path: PathBuf,
    /// 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

impl LocatedError {
    pub fn new(path: &Path, line: usize, message: impl Into<String>) -> Self {
        LocatedError {
            path: path.to_owned(),
            line,
            message: message.into(),
        }
    }
}

/// How config readers locate an error: a byte range of the file being
/// read and a message, to a [`LocatedError`] naming its line.
pub type At<'a> = &'a dyn Fn(std::ops::Range<usize>, String) -> LocatedError;

/// Checks `backend` is one of `known` (the first is the default).
pub fn backend_name(
    section: &str,
    backend: &Option<toml::Spanned<String>>,
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
pub fn required(
    section: &str,
    key: &str,
    value: &Option<toml::Spanned<String>>,
    backend: &Option<toml::Spanned<String>>,
    at: At<'_>,
) -> Result<String, LocatedError> {
    match value {
        Some(v) if !v.get_ref().trim().is_empty() => Ok(v.get_ref().trim().to_owned()),
        Some(v) => Err(at(v.span(), format!("{section}.{key} is empty"))),
        None => Err(at(
            backend.as_ref().map_or(0..0, toml::Spanned::span),
            format!("{section}.{key} is required for this backend"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_and_the_line_when_there_is_one() {
        let p = Path::new("/etc/vigil/x.vigil-plugin");
        assert_eq!(
            LocatedError::new(p, 3, "bad").to_string(),
            "/etc/vigil/x.vigil-plugin:3: bad"
        );
        assert_eq!(
            LocatedError::new(p, 0, "bad").to_string(),
            "/etc/vigil/x.vigil-plugin: bad"
        );
    }
}
