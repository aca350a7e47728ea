//! A line-tracking reader for the ini dialect Panoptes' plugin files use
//! (Python's `configparser` defaults), so every later error can name the
//! file, the line and the key.
//!
//! Rules, as in `configparser`: `[section]` headers; `key = value` or
//! `key: value`; keys are lower-cased; whole-line comments start with `#` or
//! `;` (no inline comments, so a `;` inside a filter is kept); indented lines
//! continue the previous value; duplicate sections or keys are errors.
//! Section names are compared without regard to case.
//!
//! Because there are no inline comments, `Name = x ; comment` makes
//! `x ; comment` the name. A value with ` ;` or ` #` outside double quotes
//! is kept as written but earns a located warning
//! ([`IniDocument::warnings`]), which `vigil plugins check`, `vigil check`
//! and the loader (at load) report.

use std::path::{Path, PathBuf};

/// A parsed ini file.
#[derive(Debug, Clone)]
pub struct IniDocument {
    pub path: PathBuf,
    pub sections: Vec<IniSection>,
    /// Lines that parse but probably do not mean what they say (a value
    /// that looks like it carries an inline comment).
    pub warnings: Vec<LocatedError>,
}

#[derive(Debug, Clone)]
pub struct IniSection {
    pub name: String,
    pub line: usize,
    pub entries: Vec<IniEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IniEntry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

pub use vigil_core::LocatedError;

impl IniDocument {
    /// Parses `text`, attributing errors to `path`.
    pub fn parse(path: &Path, text: &str) -> Result<IniDocument, LocatedError> {
        let mut sections: Vec<IniSection> = Vec::new();
        let mut warnings = Vec::new();
        // Indentation of the key line whose value may still continue.
        let mut open_value: Option<usize> = None;

        for (index, raw_line) in text.lines().enumerate() {
            let line_no = index + 1;
            let error = |message: String| LocatedError::new(path, line_no, message);
            let trimmed = raw_line.trim();
            let indent = raw_line.len() - raw_line.trim_start().len();

            if trimmed.is_empty() {
                // configparser keeps blank lines inside multi-line values only
                // when followed by more indented text; dropping them is simpler
                // and loses nothing meaningful for our keys.
                continue;
            }
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if let (Some(key_indent), Some(section)) = (open_value, sections.last_mut())
                && indent > key_indent
                && let Some(entry) = section.entries.last_mut()
            {
                if !entry.value.is_empty() {
                    entry.value.push('\n');
                }
                entry.value.push_str(trimmed);
                if let Some(marker) = inline_comment(trimmed) {
                    warnings.push(inline_comment_warning(
                        path,
                        line_no,
                        &section.name,
                        &entry.key,
                        marker,
                    ));
                }
                continue;
            }
            open_value = None;

            if let Some(header) = trimmed.strip_prefix('[') {
                let name = header
                    .strip_suffix(']')
                    .ok_or_else(|| {
                        let hint = if header.contains(']') {
                            " (comments go on a line of their own, starting with # or ;)"
                        } else {
                            ""
                        };
                        error(format!(
                            "section header {trimmed:?} is missing its closing ']'{hint}"
                        ))
                    })?
                    .trim();
                if name.is_empty() {
                    return Err(error("empty section name".into()));
                }
                if let Some(previous) = sections.iter().find(|s| s.name.eq_ignore_ascii_case(name))
                {
                    return Err(error(format!(
                        "section [{name}] already defined at line {}",
                        previous.line
                    )));
                }
                sections.push(IniSection {
                    name: name.to_owned(),
                    line: line_no,
                    entries: Vec::new(),
                });
                continue;
            }

            let separator = trimmed
                .find(['=', ':'])
                .ok_or_else(|| error(format!("expected `key = value`, found {trimmed:?}")))?;
            let key = trimmed[..separator].trim().to_lowercase();
            let value = trimmed[separator + 1..].trim().to_owned();
            if key.is_empty() {
                return Err(error("missing key before '=' or ':'".into()));
            }
            let section = sections
                .last_mut()
                .ok_or_else(|| error(format!("key {key:?} appears before any [section] header")))?;
            if let Some(previous) = section.entries.iter().find(|e| e.key == key) {
                return Err(error(format!(
                    "key {key:?} already set in [{}] at line {}",
                    section.name, previous.line
                )));
            }
            if let Some(marker) = inline_comment(&value) {
                warnings.push(inline_comment_warning(
                    path,
                    line_no,
                    &section.name,
                    &key,
                    marker,
                ));
            }
            section.entries.push(IniEntry {
                key,
                value,
                line: line_no,
            });
            open_value = Some(indent);
        }
        Ok(IniDocument {
            path: path.to_owned(),
            sections,
            warnings,
        })
    }

    pub fn section(&self, name: &str) -> Option<&IniSection> {
        self.sections
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// An error located at `line` of this file.
    pub fn error(&self, line: usize, message: impl Into<String>) -> LocatedError {
        LocatedError::new(&self.path, line, message)
    }
}

/// The marker (` ;` or ` #`) that starts what looks like an inline comment
/// in `value`: whitespace then `;` or `#`, outside double quotes (a
/// filter's `"a ;b"` is data).
fn inline_comment(value: &str) -> Option<&'static str> {
    let mut quoted = false;
    let mut escaped = false;
    let mut after_space = false;
    for c in value.chars() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            after_space = false;
            continue;
        }
        match c {
            ';' if after_space => return Some(" ;"),
            '#' if after_space => return Some(" #"),
            '"' => quoted = true,
            _ => {}
        }
        after_space = c.is_whitespace();
    }
    None
}

fn inline_comment_warning(
    path: &Path,
    line: usize,
    section: &str,
    key: &str,
    marker: &str,
) -> LocatedError {
    LocatedError::new(
        path,
        line,
        format!(
            "[{section}] {key}: the value contains {marker:?}; plugin files have no inline comments, so the text after it is part of the value (put a comment on a line of its own)"
        ),
    )
}

impl IniSection {
    pub fn get(&self, key: &str) -> Option<&IniEntry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<IniDocument, LocatedError> {
        IniDocument::parse(Path::new("p.vigil-plugin"), text)
    }

    #[test]
    fn reads_panoptes_style_files() {
        let doc = parse(
            "[Core]\nName = Interface Polling\nModule: plugin.wasm\n\n# comment\n; other comment\n[main]\nexecute_frequency = 60\nresource_filter = resource_class = \"network\" AND\n    resource_type = \"juniper\"\n",
        )
        .expect("valid file");
        let core = doc.section("core").expect("Core section");
        assert_eq!(
            core.get("name").map(|e| e.value.as_str()),
            Some("Interface Polling")
        );
        assert_eq!(core.get("module").map(|e| e.line), Some(3));
        let filter = doc
            .section("main")
            .and_then(|s| s.get("resource_filter"))
            .expect("filter");
        assert_eq!(
            filter.value,
            "resource_class = \"network\" AND\nresource_type = \"juniper\""
        );
        assert_eq!(filter.line, 9);
    }

    #[test]
    fn keys_are_lowercased_and_semicolons_in_values_kept() {
        let doc = parse("[x]\nExecute_Frequency = 5 ; not a comment\n").expect("valid");
        let entry = doc
            .section("X")
            .and_then(|s| s.get("execute_frequency"))
            .expect("key");
        assert_eq!(entry.value, "5 ; not a comment");
    }

    #[test]
    fn a_value_that_looks_commented_is_kept_and_warned_about() {
        let doc = parse(
            "[Core]\nName = interface_polling        ; unique per site\nKind = polling\n\
             [main]\nresource_filter = resource_class = \"net ;work\" AND\n    resource_type = \"x\" # juniper\n\
             label = a;b#c\n",
        )
        .expect("valid");
        let name = doc
            .section("core")
            .and_then(|s| s.get("name"))
            .expect("name");
        assert_eq!(name.value, "interface_polling        ; unique per site");
        let warnings: Vec<String> = doc.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(
            warnings[0].starts_with("p.vigil-plugin:2: [Core] name: the value contains \" ;\""),
            "{warnings:#?}"
        );
        // The continuation line, not the key's line; `;` inside quotes and
        // without a space before it are data.
        assert!(
            warnings[1]
                .starts_with("p.vigil-plugin:6: [main] resource_filter: the value contains \" #\""),
            "{warnings:#?}"
        );
        assert!(
            parse("[a]\nk = \"x ;y\"\nj = a;b\n")
                .expect("valid")
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn a_commented_section_header_says_where_comments_go() {
        let err = parse("[sandbox]      ; optional\n").expect_err("header");
        assert_eq!(err.line, 1);
        assert!(
            err.message.contains("comments go on a line of their own"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("[a]\nk = 1\nk = 2\n").expect_err("duplicate key");
        assert_eq!(err.line, 3);
        assert_eq!(
            err.to_string(),
            "p.vigil-plugin:3: key \"k\" already set in [a] at line 2"
        );
        assert_eq!(parse("key = 1\n").expect_err("no section").line, 1);
        assert_eq!(parse("[a]\n[A]\n").expect_err("dup section").line, 2);
        assert_eq!(parse("[a\n").expect_err("header").line, 1);
        assert_eq!(
            parse("[a]\njust words\n").expect_err("no separator").line,
            2
        );
    }
}
