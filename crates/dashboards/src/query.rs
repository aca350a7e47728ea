//! Query text for the two data sources: PromQL selectors and InfluxQL
//! `SELECT` statements, built from parts so that every name that comes from
//! a flow file (resource ids, interface names, ping targets) is escaped as a
//! literal: a quote, a backslash or a regex character in a name can neither
//! break the query nor widen what it selects.
//!
//! Series naming follows the sinks: Prometheus series are
//! `<group_type>_<metric>` without doubled words (plus `_total` for
//! counters; see [`prometheus_series`]) with the group's
//! dimensions and `resource_*` fields as labels; InfluxDB measurements are
//! the group type, with the same names as tags and the metrics as fields.

use std::fmt::Write as _;

/// The Prometheus series name of a metric, as the Prometheus sinks write it
/// (one function for both, [`vigil_core::metric_names::derive`]: no doubled
/// words, no gauge ending in `_total`), with `_total` for counters. The
/// dashboards assume no `namespace`, and the name a pair gets when it
/// loses a collision (see that module) is not what they query.
pub fn prometheus_series(group_type: &str, metric: &str, counter: bool) -> String {
    let mut name = vigil_core::metric_names::derive(group_type, metric, counter, None).name;
    if counter {
        name.push_str("_total");
    }
    name
}

/// A PromQL double-quoted string literal holding exactly `value`.
///
/// PromQL strings use Go's escapes; a raw newline ends the query with an
/// error, so control characters are escaped too.
pub fn promql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as a regular expression (RE2 / Go `regexp` syntax, which both
/// Prometheus and InfluxDB use) that matches exactly that text: Go's
/// `regexp.QuoteMeta`.
pub fn regex_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A regular expression matching exactly one of `values` (anchored, so it
/// means the same to Prometheus, which anchors, and InfluxDB, which does
/// not).
pub fn any_of(values: &[&str]) -> String {
    let alternatives: Vec<String> = values.iter().map(|v| regex_literal(v)).collect();
    format!("^(?:{})$", alternatives.join("|"))
}

/// One label matcher of a PromQL selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// `label="value"`
    Equals(String, String),
    /// `label!="value"`
    NotEquals(String, String),
    /// `label=~"regex"`; the regex is used as given (see [`regex_literal`]).
    Regex(String, String),
}

impl Matcher {
    pub fn eq(label: &str, value: &str) -> Self {
        Matcher::Equals(label.to_owned(), value.to_owned())
    }

    pub fn ne(label: &str, value: &str) -> Self {
        Matcher::NotEquals(label.to_owned(), value.to_owned())
    }

    pub fn regex(label: &str, regex: &str) -> Self {
        Matcher::Regex(label.to_owned(), regex.to_owned())
    }
}

/// `metric{matchers}` with every value a PromQL string literal.
///
/// Label names are fixed by vigil (the group's dimensions and the
/// `resource_*` fields), never taken from a flow file, so they are not
/// escaped.
pub fn promql_selector(metric: &str, matchers: &[Matcher]) -> String {
    let inner: Vec<String> = matchers
        .iter()
        .map(|m| match m {
            Matcher::Equals(label, value) => format!("{label}={}", promql_string(value)),
            Matcher::NotEquals(label, value) => format!("{label}!={}", promql_string(value)),
            Matcher::Regex(label, regex) => format!("{label}=~{}", promql_string(regex)),
        })
        .collect();
    if inner.is_empty() {
        metric.to_owned()
    } else {
        format!("{metric}{{{}}}", inner.join(","))
    }
}

/// Escapes the text between InfluxQL quotes: InfluxQL reads `\\`, `\n` and
/// the escaped quote itself, and a raw newline ends the token with an error.
fn influx_quoted(value: &str, quote: char) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push(quote);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// An InfluxQL double-quoted identifier (measurement, tag or field name).
pub fn influx_identifier(name: &str) -> String {
    influx_quoted(name, '"')
}

/// An InfluxQL single-quoted string literal holding exactly `value`.
pub fn influx_string(value: &str) -> String {
    influx_quoted(value, '\'')
}

/// An InfluxQL regex literal `/regex/`.
///
/// Inside `/.../` InfluxQL only unescapes `\/`; every other backslash goes
/// to the regex engine untouched. So only `/` needs escaping. The one
/// ambiguity of that scheme, a regex ending in a backslash right before the
/// closing `/`, cannot occur for [`any_of`] regexes, which end in `)$`.
pub fn influx_regex(regex: &str) -> String {
    format!("/{}/", regex.replace('/', "\\/"))
}

/// One `WHERE` condition on a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCondition {
    /// `"tag" = 'value'`
    Equals(String, String),
    /// `"tag" =~ /regex/`
    Regex(String, String),
}

impl TagCondition {
    pub fn eq(tag: &str, value: &str) -> Self {
        TagCondition::Equals(tag.to_owned(), value.to_owned())
    }

    pub fn regex(tag: &str, regex: &str) -> Self {
        TagCondition::Regex(tag.to_owned(), regex.to_owned())
    }

    fn render(&self) -> String {
        match self {
            TagCondition::Equals(tag, value) => {
                format!("{} = {}", influx_identifier(tag), influx_string(value))
            }
            TagCondition::Regex(tag, regex) => {
                format!("{} =~ {}", influx_identifier(tag), influx_regex(regex))
            }
        }
    }
}

/// How a field is aggregated per `$__interval` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `mean(field)`: gauges, including the bit rates the host computes.
    Mean,
    /// `last(field)`: states and status codes, which must not be averaged.
    Last,
    /// `non_negative_derivative(mean(field), 1s)`: a counter as a per-second
    /// rate that ignores counter resets.
    RatePerSecond,
}

/// An InfluxQL `SELECT` over one measurement, grouped by `$__interval`
/// (Grafana substitutes it and `$timeFilter`). No database or retention
/// policy is named: the data source's default database is used.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxSelect {
    pub measurement: String,
    /// (aggregate, field, column alias)
    pub fields: Vec<(Aggregate, String, String)>,
    pub conditions: Vec<TagCondition>,
    /// Tags that split the result into one series each.
    pub group_by: Vec<String>,
    /// `fill(previous)` instead of `fill(null)`: for states, so a bucket
    /// between two polls shows the last state as Prometheus' lookback
    /// does, rather than a gap.
    pub fill_previous: bool,
}

impl InfluxSelect {
    pub fn new(measurement: &str) -> Self {
        InfluxSelect {
            measurement: measurement.to_owned(),
            fields: Vec::new(),
            conditions: Vec::new(),
            group_by: Vec::new(),
            fill_previous: false,
        }
    }

    pub fn field(mut self, aggregate: Aggregate, field: &str, alias: &str) -> Self {
        self.fields
            .push((aggregate, field.to_owned(), alias.to_owned()));
        self
    }

    pub fn filter(mut self, condition: TagCondition) -> Self {
        self.conditions.push(condition);
        self
    }

    pub fn group_by(mut self, tag: &str) -> Self {
        self.group_by.push(tag.to_owned());
        self
    }

    pub fn fill_previous(mut self) -> Self {
        self.fill_previous = true;
        self
    }

    /// The statement text.
    pub fn render(&self) -> String {
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|(aggregate, field, alias)| {
                let field = influx_identifier(field);
                let expr = match aggregate {
                    Aggregate::Mean => format!("mean({field})"),
                    Aggregate::Last => format!("last({field})"),
                    Aggregate::RatePerSecond => {
                        format!("non_negative_derivative(mean({field}), 1s)")
                    }
                };
                format!("{expr} AS {}", influx_identifier(alias))
            })
            .collect();
        let mut conditions: Vec<String> = self.conditions.iter().map(|c| c.render()).collect();
        conditions.push("$timeFilter".to_owned());
        let mut group_by = vec!["time($__interval)".to_owned()];
        group_by.extend(self.group_by.iter().map(|t| influx_identifier(t)));
        format!(
            "SELECT {} FROM {} WHERE {} GROUP BY {} fill({})",
            fields.join(", "),
            influx_identifier(&self.measurement),
            conditions.join(" AND "),
            group_by.join(", "),
            if self.fill_previous {
                "previous"
            } else {
                "null"
            }
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Also home of small readers for the query text, used by the content
    //! tests to check what a generated query selects.

    use super::*;

    /// Reads a PromQL string literal at the start of `text`; returns the
    /// value and the rest. Go escapes, as Prometheus' lexer reads them.
    pub(crate) fn read_promql_string(text: &str) -> (String, &str) {
        let mut chars = text.char_indices();
        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{text}");
        let mut value = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return (value, &text[i + 1..]),
                '\n' => panic!("raw newline in a PromQL string: {text}"),
                '\\' => {
                    let (_, e) = chars.next().expect("escape");
                    match e {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        'r' => value.push('\r'),
                        't' => value.push('\t'),
                        'x' => {
                            let hex: String =
                                (0..2).map(|_| chars.next().expect("hex digit").1).collect();
                            let code = u32::from_str_radix(&hex, 16).expect("hex");
                            value.push(char::from_u32(code).expect("char"));
                        }
                        other => panic!("unexpected escape \\{other} in {text}"),
                    }
                }
                c => value.push(c),
            }
        }
        panic!("unterminated PromQL string: {text}")
    }

    /// The matchers of the first selector of `metric` in `expr`:
    /// (label, operator, value).
    pub(crate) fn promql_matchers(expr: &str, metric: &str) -> Vec<(String, String, String)> {
        let start = expr
            .find(&format!("{metric}{{"))
            .unwrap_or_else(|| panic!("no selector of {metric} in {expr}"));
        let mut rest = &expr[start + metric.len() + 1..];
        let mut matchers = Vec::new();
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                let _ = after;
                return matchers;
            }
            let op_at = rest.find(['=', '!']).expect("operator");
            let label = rest[..op_at].to_owned();
            rest = &rest[op_at..];
            let op = ["=~", "!~", "!=", "="]
                .into_iter()
                .find(|op| rest.starts_with(op))
                .expect("known operator");
            rest = &rest[op.len()..];
            let (value, after) = read_promql_string(rest);
            matchers.push((label, op.to_owned(), value));
            rest = after;
        }
    }

    /// Reads an InfluxQL quoted token (string or identifier) at the start of
    /// `text`, as InfluxQL's scanner does.
    pub(crate) fn read_influx_quoted(text: &str) -> (String, &str) {
        let quote = text.chars().next().expect("quote");
        let mut chars = text.char_indices().skip(1);
        let mut value = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == quote => return (value, &text[i + 1..]),
                '\n' => panic!("raw newline in an InfluxQL string: {text}"),
                '\\' => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    '\'' => value.push('\''),
                    other => panic!("bad InfluxQL escape \\{other} in {text}"),
                },
                c => value.push(c),
            }
        }
        panic!("unterminated InfluxQL string: {text}")
    }

    /// Reads an InfluxQL regex literal `/.../` at the start of `text`, as
    /// InfluxQL's scanner does (only `\/` is unescaped).
    pub(crate) fn read_influx_regex(text: &str) -> (String, &str) {
        let mut chars = text.char_indices().peekable();
        assert_eq!(chars.next().map(|(_, c)| c), Some('/'), "{text}");
        let mut regex = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '/' => return (regex, &text[i + 1..]),
                // InfluxQL's scanner turns `\/` into `/`; any other
                // backslash is kept and the character after it is read
                // again on its own (so `\\` is not one escape).
                '\\' if chars.peek().map(|&(_, next)| next) == Some('/') => {
                    chars.next();
                    regex.push('/');
                }
                c => regex.push(c),
            }
        }
        panic!("unterminated InfluxQL regex: {text}")
    }

    /// The tag conditions of an InfluxQL `WHERE` clause, before
    /// `$timeFilter`: (tag, operator, value or regex).
    pub(crate) fn influx_conditions(query: &str) -> Vec<(String, String, String)> {
        let start = query.find(" WHERE ").expect("WHERE") + " WHERE ".len();
        let mut rest = &query[start..];
        let mut conditions = Vec::new();
        while !rest.starts_with("$timeFilter") {
            let (tag, after) = read_influx_quoted(rest);
            rest = after.trim_start();
            let (op, value, after) = if let Some(after) = rest.strip_prefix("=~ ") {
                let (regex, after) = read_influx_regex(after);
                ("=~", regex, after)
            } else if let Some(after) = rest.strip_prefix("= ") {
                let (value, after) = read_influx_quoted(after);
                ("=", value, after)
            } else {
                panic!("unexpected condition at {rest}");
            };
            conditions.push((tag, op.to_owned(), value));
            rest = after
                .strip_prefix(" AND ")
                .unwrap_or_else(|| panic!("expected AND at {after}"));
        }
        conditions
    }

    /// The literal alternatives of an [`any_of`] regex, checking that no
    /// regex operator is left unescaped in them.
    pub(crate) fn alternatives(regex: &str) -> Vec<String> {
        let inner = regex
            .strip_prefix("^(?:")
            .and_then(|r| r.strip_suffix(")$"))
            .unwrap_or_else(|| panic!("not an any_of regex: {regex}"));
        let mut out = vec![String::new()];
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let escaped = chars.next().expect("escaped char");
                    assert!(
                        "\\.+*?()|[]{}^$".contains(escaped),
                        "needless escape \\{escaped} in {regex}"
                    );
                    out.last_mut().expect("alternative").push(escaped);
                }
                '|' => out.push(String::new()),
                c => {
                    assert!(
                        !".+*?()[]{}^$".contains(c),
                        "unescaped regex operator {c:?} in {regex}"
                    );
                    out.last_mut().expect("alternative").push(c);
                }
            }
        }
        out
    }

    const NASTY: &[&str] = &[
        "plain",
        "ge-0/0/1.100",
        "quote\"d",
        "single'quoted",
        "back\\slash",
        "new\nline",
        "tab\there",
        "regex.*+?()[]{}|^$",
        "slash/\\/end\\",
        "ünïcødé",
        "",
    ];

    #[test]
    fn promql_strings_round_trip() {
        for value in NASTY {
            let literal = promql_string(value);
            assert!(!literal.contains('\n'), "{literal}");
            let (read, rest) = read_promql_string(&literal);
            assert_eq!(&read, value);
            assert_eq!(rest, "");
        }
        assert_eq!(promql_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(promql_string("\u{1}"), r#""\x01""#);
    }

    #[test]
    fn influx_strings_and_identifiers_round_trip() {
        for value in NASTY {
            for literal in [influx_string(value), influx_identifier(value)] {
                assert!(!literal.contains('\n'), "{literal}");
                let (read, rest) = read_influx_quoted(&literal);
                assert_eq!(&read, value);
                assert_eq!(rest, "");
            }
        }
        assert_eq!(influx_string("it's"), r"'it\'s'");
        assert_eq!(influx_identifier("a\"b"), r#""a\"b""#);
    }

    #[test]
    fn regexes_match_only_the_literal_names() {
        let values: Vec<&str> = NASTY.to_vec();
        let regex = any_of(&values);
        assert_eq!(alternatives(&regex), values);
        // Through both query languages' literal syntax and back.
        let (prom, _) = read_promql_string(&promql_string(&regex));
        assert_eq!(prom, regex);
        let influx = influx_regex(&regex);
        let (read, rest) = read_influx_regex(&influx);
        assert_eq!(read, regex);
        assert_eq!(rest, "");
        assert_eq!(regex_literal("a.b|c"), r"a\.b\|c");
    }

    #[test]
    fn alternatives_rejects_unescaped_operators() {
        let result = std::panic::catch_unwind(|| alternatives("^(?:a.b)$"));
        assert!(result.is_err(), "the test reader must catch a bare `.`");
    }

    #[test]
    fn series_names_follow_the_sinks() {
        assert_eq!(
            prometheus_series("interface", "error_packets_in", true),
            "interface_error_packets_in_total"
        );
        assert_eq!(
            prometheus_series("interface", "bits_in", false),
            "interface_bits_in"
        );
        assert_eq!(prometheus_series("9x", "a-b.c", false), "_9x_a_b_c");
        // The pipeline's polling status and the device-health groups.
        assert_eq!(
            prometheus_series("status", "polling_status", false),
            "polling_status"
        );
        assert_eq!(
            prometheus_series("cpu", "cpu_utilization", false),
            "cpu_utilization"
        );
        assert_eq!(
            prometheus_series("memory", "memory_total", false),
            "total_memory"
        );
    }

    #[test]
    fn selectors_and_statements() {
        assert_eq!(
            promql_selector(
                "interface_bits_in",
                &[
                    Matcher::eq("resource_id", "sw\"1"),
                    Matcher::ne("x", "y"),
                    Matcher::regex("interface_name", &any_of(&["a.b"]))
                ]
            ),
            r#"interface_bits_in{resource_id="sw\"1",x!="y",interface_name=~"^(?:a\\.b)$"}"#
        );
        assert_eq!(promql_selector("up", &[]), "up");
        let query = InfluxSelect::new("interface")
            .field(Aggregate::Mean, "bits_in", "in")
            .field(Aggregate::RatePerSecond, "error_packets_in", "errors in")
            .field(Aggregate::Last, "oper_state", "oper")
            .filter(TagCondition::eq("resource_id", "o'brien"))
            .filter(TagCondition::regex("interface_name", &any_of(&["a/b"])))
            .group_by("interface_name")
            .render();
        assert_eq!(
            query,
            r#"SELECT mean("bits_in") AS "in", non_negative_derivative(mean("error_packets_in"), 1s) AS "errors in", last("oper_state") AS "oper" FROM "interface" WHERE "resource_id" = 'o\'brien' AND "interface_name" =~ /^(?:a\/b)$/ AND $timeFilter GROUP BY time($__interval), "interface_name" fill(null)"#
        );
        assert_eq!(
            influx_conditions(&query),
            vec![
                (
                    "resource_id".to_owned(),
                    "=".to_owned(),
                    "o'brien".to_owned()
                ),
                (
                    "interface_name".to_owned(),
                    "=~".to_owned(),
                    "^(?:a/b)$".to_owned()
                ),
            ]
        );
    }
}
