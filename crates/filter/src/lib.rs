//! The resource filter DSL: the `resource_filter = ...` expressions operators
//! write in plugin files to pick the resources a plugin runs for.
//!
//! The language is Panoptes' (which evaluated it as a `WHERE` clause in
//! SQLite), so its semantics are SQLite's: exact `=`/`!=`/`IN`, `LIKE` with
//! `%` and `_` that ignores case for ASCII letters only, and a missing
//! metadata key acting as SQL `NULL` under three-valued logic. A filter is
//! parsed once into a compiled form and evaluated natively, with no SQL
//! engine. Beyond Panoptes, conditions can be grouped with parentheses and
//! errors point at the offending line and column.
//!
//! Case, as in Panoptes: keywords (`AND`, `or`, `Not`, `eq`, `NE`...),
//! field names (`RESOURCE_SITE`) and the `resource_metadata.` prefix ignore
//! ASCII case, and a metadata key is lower-cased (`RESOURCE_METADATA.MAKE`
//! reads the resource's `make` key; a resource's keys are matched exactly,
//! so a key a plugin wrote as `Make` is not reachable from a filter, as in
//! Panoptes). Values are always case-sensitive; `LIKE` ignores ASCII case.
//!
//! ```text
//! resource_class = "network" AND resource_type IN ("juniper", "cisco")
//!     AND NOT (resource_metadata.os_version LIKE "12.%" OR resource_site eq "lab")
//! ```

mod eval;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

use eval::Expr;

/// Longest filter text accepted, in bytes; filters are a few lines at most.
pub const MAX_FILTER_LEN: usize = 64 * 1024;

/// Deepest nesting of parentheses and prefix `NOT`s accepted, so hostile
/// input cannot exhaust the stack of the parser or the evaluator.
pub const MAX_NESTING: usize = 64;

/// What a filter reads from a resource.
pub trait FilterSubject {
    /// The value of a plain field; never missing.
    fn field(&self, field: Field) -> &str;
    /// A metadata value, or None when the resource has no such key.
    fn metadata(&self, key: &str) -> Option<&str>;
}

/// The plain fields of a resource a filter can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Site,
    Class,
    Subclass,
    Type,
    Id,
    Endpoint,
}

impl Field {
    /// Every field, in the order error messages list them.
    pub const ALL: [Field; 6] = [
        Field::Site,
        Field::Class,
        Field::Subclass,
        Field::Type,
        Field::Id,
        Field::Endpoint,
    ];

    /// The name a filter uses for this field, e.g. `resource_site`.
    pub fn name(self) -> &'static str {
        match self {
            Field::Site => "resource_site",
            Field::Class => "resource_class",
            Field::Subclass => "resource_subclass",
            Field::Type => "resource_type",
            Field::Id => "resource_id",
            Field::Endpoint => "resource_endpoint",
        }
    }

    /// The field a filter names `name`, if any. Field names ignore ASCII
    /// case, as in Panoptes (`RESOURCE_SITE` is `resource_site`).
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed resource filter, ready to evaluate.
///
/// Two filters are equal when their compiled forms are, whatever the spacing
/// or keyword case of their source text.
#[derive(Debug, Clone)]
pub struct ResourceFilter {
    source: String,
    expr: Expr,
}

impl ResourceFilter {
    /// Parses filter text, reporting the first error with its position.
    pub fn parse(text: &str) -> Result<ResourceFilter, FilterError> {
        let expr = parse::parse(text)?;
        Ok(ResourceFilter {
            source: text.to_owned(),
            expr,
        })
    }

    /// Whether `subject` is selected: the expression must be TRUE, so a
    /// condition left UNKNOWN by a missing metadata key does not select.
    pub fn matches(&self, subject: &impl FilterSubject) -> bool {
        self.expr.eval(subject) == eval::Truth::True
    }

    /// The text the filter was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl PartialEq for ResourceFilter {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for ResourceFilter {}

/// Renders the canonical form: upper-case keywords, `=`/`!=` for `eq`/`ne`,
/// escaped strings and only the parentheses the structure needs. Parsing it
/// gives an equal filter.
impl fmt::Display for ResourceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.expr, f)
    }
}

/// Why a filter could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct FilterError {
    /// 1-based, in characters, on line `line`.
    pub column: usize,
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl FilterError {
    /// The offending line of `source`, a caret under the column, then the
    /// message, for showing to the operator who wrote the filter.
    pub fn render(&self, source: &str) -> String {
        let text = source
            .split('\n')
            .nth(self.line.saturating_sub(1))
            .unwrap_or("");
        let text = text.strip_suffix('\r').unwrap_or(text);
        // Tabs are copied so the caret lines up however the terminal expands them.
        let pad: String = text
            .chars()
            .chain(std::iter::repeat(' '))
            .take(self.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        format!("{text}\n{pad}^\n{}", self.message)
    }
}
