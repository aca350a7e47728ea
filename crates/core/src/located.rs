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
