//! Unit tests, and property tests against SQLite, which is how Panoptes
//! evaluated these filters and so is the reference for their semantics.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::eval::{Expr, LikePattern, Operand};
use super::*;

/// A resource as tests build it.
#[derive(Debug, Clone, Default)]
struct Resource {
    fields: [String; 6],
    metadata: BTreeMap<String, String>,
}

fn slot(field: Field) -> usize {
    match field {
        Field::Site => 0,
        Field::Class => 1,
        Field::Subclass => 2,
        Field::Type => 3,
        Field::Id => 4,
        Field::Endpoint => 5,
    }
}

impl FilterSubject for Resource {
    fn field(&self, field: Field) -> &str {
        &self.fields[slot(field)]
    }
    fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }
}

fn resource(fields: &[(Field, &str)], metadata: &[(&str, &str)]) -> Resource {
    let mut r = Resource::default();
    for (field, value) in fields {
        r.fields[slot(*field)] = (*value).to_owned();
    }
    for (key, value) in metadata {
        r.metadata.insert((*key).to_owned(), (*value).to_owned());
    }
    r
}

fn juniper() -> Resource {
    resource(
        &[
            (Field::Site, "dc1"),
            (Field::Class, "network"),
            (Field::Subclass, "switch"),
            (Field::Type, "juniper"),
            (Field::Id, "sw1.dc1"),
            (Field::Endpoint, "10.0.0.1"),
        ],
        &[("os_version", "15.1R7"), ("model", "QFX5100")],
    )
}

fn filter(text: &str) -> ResourceFilter {
    ResourceFilter::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn matches(text: &str, r: &Resource) -> bool {
    filter(text).matches(r)
}

fn error(text: &str) -> FilterError {
    match ResourceFilter::parse(text) {
        Ok(f) => panic!("{text:?} should not parse, got {f}"),
        Err(e) => e,
    }
}

/// Asserts the error's position and that its message contains `message`.
fn assert_error(text: &str, line: usize, column: usize, message: &str) {
    let e = error(text);
    assert_eq!((e.line, e.column), (line, column), "{text:?}: {e}");
    assert!(e.message.contains(message), "{text:?}: {e}");
}

fn like(text: &str, pattern: &str) -> bool {
    LikePattern::new(pattern.to_owned()).matches(text)
}

#[test]
fn equality_is_exact() {
    let r = juniper();
    assert!(matches(r#"resource_type = "juniper""#, &r));
    assert!(!matches(r#"resource_type = "Juniper""#, &r));
    assert!(!matches(r#"resource_type = "junip""#, &r));
    assert!(matches(r#"resource_type != "cisco""#, &r));
    assert!(!matches(r#"resource_type != "juniper""#, &r));
    assert!(matches(r#"resource_type eq "juniper""#, &r));
    assert!(matches(r#"resource_type ne "Juniper""#, &r));
    assert!(matches(r#"resource_site="dc1""#, &r));
    assert!(matches(r#"resource_metadata.model = "QFX5100""#, &r));
    assert!(matches(r#"resource_subclass = "switch""#, &r));
    assert!(matches(r#"resource_id = "sw1.dc1""#, &r));
    assert!(matches(r#"resource_endpoint = "10.0.0.1""#, &r));
    // Plain fields may be empty, which is not the same as missing.
    let empty = Resource::default();
    assert!(matches(r#"resource_site = """#, &empty));
    assert!(matches(r#"resource_site NOT IN ("a")"#, &empty));
}

#[test]
fn in_lists() {
    let r = juniper();
    assert!(matches(r#"resource_type IN ("juniper", "cisco")"#, &r));
    assert!(matches(r#"resource_type IN ("juniper")"#, &r));
    assert!(!matches(r#"resource_type IN ("cisco", "arista")"#, &r));
    assert!(!matches(r#"resource_type IN ("JUNIPER")"#, &r));
    assert!(matches(r#"resource_type NOT IN ("cisco", "arista")"#, &r));
    assert!(!matches(r#"resource_type NOT IN ("cisco", "juniper")"#, &r));
    assert!(matches(r#"resource_type in("cisco","juniper")"#, &r));
}

#[test]
fn like_wildcards() {
    assert!(like("", ""));
    assert!(like("", "%"));
    assert!(like("", "%%"));
    assert!(!like("", "_"));
    assert!(like("abc", "%"));
    assert!(like("abc", "a%"));
    assert!(like("abc", "%c"));
    assert!(like("abc", "%b%"));
    assert!(like("abc", "a%b%c"));
    assert!(like("abc", "abc%"));
    assert!(like("abc", "___"));
    assert!(!like("abc", "__"));
    assert!(!like("abc", "____"));
    assert!(like("abc", "_%_"));
    assert!(like("abcbc", "%bc"));
    assert!(!like("abcbd", "%bc"));
    assert!(like("aXbXc", "a%b%c"));
    assert!(!like("abc", "ab"));
    assert!(!like("ab", "abc"));
    // `_` is one character, not one byte.
    assert!(like("é", "_"));
    assert!(like("日本", "__"));
    assert!(!like("日本", "_"));
    // Everything else is literal: no regex, no escapes, no character classes.
    assert!(like("a.c", "a.c"));
    assert!(!like("abc", "a.c"));
    assert!(like("[a]", "[a]"));
    assert!(!like("a", "[a]"));
    assert!(like("a\\b", "a\\b"));
    assert!(like("x*y", "x*y"));
    assert!(!like("xzy", "x*y"));
}

#[test]
fn like_ignores_case_for_ascii_letters_only() {
    assert!(like("A", "a"));
    assert!(like("a", "A"));
    assert!(like("JunOS 12.3", "junos 12.%"));
    assert!(!like("É", "é"));
    assert!(!like("é", "É"));
    assert!(like("é", "é"));
    // Only letters fold: `[` and `{` are not case pairs.
    assert!(!like("[", "{"));
    assert!(!like("@", "`"));
    // The Kelvin sign lower-cases to `k` under Unicode rules, but not here.
    assert!(!like("\u{212A}", "k"));
}

#[test]
fn like_in_filters() {
    let r = juniper();
    assert!(matches(r#"resource_metadata.os_version LIKE "15.%""#, &r));
    assert!(matches(r#"resource_metadata.model like "qfx%""#, &r));
    assert!(!matches(r#"resource_metadata.model NOT LIKE "qfx%""#, &r));
    assert!(matches(r#"resource_id LIKE "sw_.dc_""#, &r));
    assert!(matches(r#"resource_id not like "%.dc2""#, &r));
}

#[test]
fn like_has_no_exponential_blowup() {
    let text = "a".repeat(20_000);
    assert!(!like(&text, "%a%a%a%a%a%a%a%a%a%a%b"));
    assert!(like(&text, "%a%a%a%a%a%a%a%a%a%a%"));
    assert!(!like(&text, "%aa%aa%aa%aa%_b%"));
    let pattern = "%a".repeat(1000) + "%b";
    assert!(!like(&text, &pattern));
}

#[test]
fn and_binds_tighter_than_or() {
    // site matches; class and type do not.
    let r = juniper();
    let text = r#"resource_site = "dc1" OR resource_class = "x" AND resource_type = "x""#;
    assert!(matches(text, &r));
    let grouped = r#"(resource_site = "dc1" OR resource_class = "x") AND resource_type = "x""#;
    assert!(!matches(grouped, &r));
    assert_eq!(
        filter(text),
        filter(r#"resource_site = "dc1" OR (resource_class = "x" AND resource_type = "x")"#)
    );
    assert_ne!(filter(text), filter(grouped));
}

#[test]
fn not_binds_tighter_than_and() {
    let r = juniper();
    // (NOT site = dc2) AND type = juniper
    assert!(matches(
        r#"NOT resource_site = "dc2" AND resource_type = "juniper""#,
        &r
    ));
    // NOT applied to the whole AND would be false here.
    assert!(!matches(
        r#"NOT (resource_site = "dc1" AND resource_type = "juniper")"#,
        &r
    ));
    assert!(matches(r#"NOT NOT resource_site = "dc1""#, &r));
    assert!(!matches(r#"not resource_site = "dc1""#, &r));
    assert!(matches(
        r#"NOT resource_site = "x" OR resource_site = "y""#,
        &r
    ));
}

#[test]
fn parentheses_group() {
    let r = juniper();
    assert!(matches(r#"((resource_site = "dc1"))"#, &r));
    assert!(matches(
        r#"resource_class = "network" AND (resource_type = "cisco" OR resource_type = "juniper")"#,
        &r
    ));
    assert!(!matches(
        r#"(resource_class = "network" AND resource_type = "cisco") OR resource_type = "arista""#,
        &r
    ));
}

#[test]
fn keywords_are_caseless() {
    let r = juniper();
    for (and, or, not, like, in_) in [
        ("and", "or", "not", "like", "in"),
        ("AND", "OR", "NOT", "LIKE", "IN"),
        ("And", "Or", "Not", "Like", "In"),
        ("aNd", "oR", "nOt", "lIkE", "iN"),
    ] {
        let text = format!(
            r#"{not} resource_site = "x" {and} resource_type {in_} ("juniper") {and} resource_id {not} {like} "x%" {or} resource_site {not} {in_} ("dc1")"#
        );
        assert!(matches(&text, &r), "{text}");
    }
    assert!(matches(
        r#"resource_site EQ "dc1" AND resource_site Ne "x""#,
        &r
    ));
}

#[test]
fn field_names_and_the_metadata_prefix_are_caseless_values_are_not() {
    let r = resource(
        &[(Field::Site, "lab"), (Field::Type, "juniper")],
        &[("make", "Arista")],
    );
    // Panoptes accepts these as written; so does vigil.
    assert!(matches(r#"RESOURCE_SITE = "lab""#, &r));
    assert!(matches(r#"Resource_Type nOt In ("linux")"#, &r));
    assert!(matches(r#"RESOURCE_METADATA.MAKE = "Arista""#, &r));
    assert!(matches(r#"Resource_Metadata.Make eq "Arista""#, &r));
    // They parse to the same filter as the lower-case spelling.
    assert_eq!(
        filter(r#"RESOURCE_SITE = "lab" AND RESOURCE_METADATA.MAKE ne "x""#),
        filter(r#"resource_site = "lab" AND resource_metadata.make != "x""#)
    );
    // Values keep their case: `=` and `IN` are exact, `LIKE` folds ASCII.
    assert!(!matches(r#"RESOURCE_SITE = "LAB""#, &r));
    assert!(!matches(r#"resource_metadata.make IN ("arista")"#, &r));
    assert!(matches(r#"resource_metadata.make LIKE "arista""#, &r));
}

#[test]
fn string_escapes() {
    let r = resource(&[(Field::Id, "say \"hi\"\\\n\tq")], &[]);
    assert!(matches(r#"resource_id = "say \"hi\"\\\n\tq""#, &r));
    // Any other escaped character stands for itself.
    assert!(matches(r#"resource_id = "s\ay \"hi\"\\\n\t\q""#, &r));
    let f = filter(r#"resource_id = "a\"b\\c\nd\te""#);
    assert_eq!(f.to_string(), r#"resource_id = "a\"b\\c\nd\te""#);
    // `%` and `_` in an `=` value are plain characters.
    let r = resource(&[(Field::Id, "a%_")], &[]);
    assert!(matches(r#"resource_id = "a%_""#, &r));
    assert!(!matches(r#"resource_id = "a%""#, &r));
}

#[test]
fn missing_metadata_is_null() {
    let r = juniper(); // has no `role` metadata
    let unknown = r#"resource_metadata.role = "core""#;
    for text in [
        unknown.to_owned(),
        r#"resource_metadata.role != "core""#.to_owned(),
        r#"resource_metadata.role LIKE "%""#.to_owned(),
        r#"resource_metadata.role NOT LIKE "x""#.to_owned(),
        r#"resource_metadata.role IN ("core", "edge")"#.to_owned(),
        r#"resource_metadata.role NOT IN ("core")"#.to_owned(),
        // NOT UNKNOWN is UNKNOWN.
        format!("NOT {unknown}"),
        format!("NOT NOT {unknown}"),
        // TRUE AND UNKNOWN, FALSE OR UNKNOWN, UNKNOWN OR UNKNOWN are UNKNOWN.
        format!(r#"resource_site = "dc1" AND {unknown}"#),
        format!(r#"resource_site = "x" OR {unknown}"#),
        format!(r#"{unknown} OR NOT {unknown}"#),
        format!(r#"NOT (resource_site = "dc1" AND {unknown})"#),
        format!(r#"NOT (resource_site = "x" OR {unknown})"#),
    ] {
        assert!(!matches(&text, &r), "{text}");
    }
    for text in [
        // TRUE OR UNKNOWN is TRUE; FALSE AND UNKNOWN is FALSE, so NOT makes it TRUE.
        format!(r#"resource_site = "dc1" OR {unknown}"#),
        format!(r#"{unknown} OR resource_site = "dc1""#),
        format!(r#"NOT (resource_site = "x" AND {unknown})"#),
        format!(r#"NOT ({unknown} AND resource_site = "x")"#),
    ] {
        assert!(matches(&text, &r), "{text}");
    }
    // A present key with an empty value is not missing.
    let r = resource(&[], &[("role", "")]);
    assert!(matches(r#"resource_metadata.role = """#, &r));
    assert!(matches(r#"resource_metadata.role != "core""#, &r));
    // Keys in a filter are lower-cased, as in Panoptes: `Role` reads `role`.
    assert!(matches(r#"resource_metadata.Role = """#, &r));
    assert!(matches(r#"RESOURCE_METADATA.ROLE = """#, &r));
    // A resource's own keys are matched exactly: a key written `Role` by a
    // plugin is not what a filter's `role` (or `Role`) reads.
    let mixed = resource(&[], &[("Role", "core")]);
    assert!(!matches(r#"resource_metadata.Role = "core""#, &mixed));
    assert!(!matches(r#"resource_metadata.role = "core""#, &mixed));
}

#[test]
fn panoptes_filters() {
    let r = juniper();
    assert!(matches(
        r#"resource_class = "network" AND resource_type IN ("juniper", "cisco") AND resource_metadata.os_version NOT LIKE "12.%""#,
        &r
    ));
    let old = resource(
        &[(Field::Class, "network"), (Field::Type, "cisco")],
        &[("os_version", "12.4(24)T")],
    );
    assert!(!matches(
        r#"resource_class = "network" AND resource_type IN ("juniper", "cisco") AND resource_metadata.os_version NOT LIKE "12.%""#,
        &old
    ));
    assert!(matches(
        r#"resource_class = "network" AND resource_subclass = "switch" AND resource_type = "juniper""#,
        &r
    ));
    assert!(matches(
        r#"resource_class = "network" AND resource_type = "juniper" AND resource_metadata.model LIKE "QFX%""#,
        &r
    ));
    assert!(matches(
        r#"resource_site = "dc1" AND resource_class = "network" AND resource_metadata.model NOT IN ("MX960", "MX480")"#,
        &r
    ));
    // As it arrives from an ini continuation line.
    let text = "resource_class = \"network\" AND\nresource_type = \"juniper\"";
    assert!(matches(text, &r));
    assert_eq!(filter(text).source(), text);
}

#[test]
fn display_is_canonical() {
    let cases = [
        (
            r#"resource_site eq "a" and resource_type ne "b""#,
            r#"resource_site = "a" AND resource_type != "b""#,
        ),
        (
            r#"resource_site="a" or resource_site like "b%" and not resource_id not in ("c","d")"#,
            r#"resource_site = "a" OR resource_site LIKE "b%" AND NOT resource_id NOT IN ("c", "d")"#,
        ),
        (
            r#"(resource_site = "a" OR resource_site = "b") AND resource_id = "c""#,
            r#"(resource_site = "a" OR resource_site = "b") AND resource_id = "c""#,
        ),
        (
            r#"resource_site = "a" AND (resource_site = "b" AND resource_id = "c")"#,
            r#"resource_site = "a" AND (resource_site = "b" AND resource_id = "c")"#,
        ),
        (
            r#"((resource_site = "a")) OR NOT (resource_metadata.x not like "y")"#,
            r#"resource_site = "a" OR NOT resource_metadata.x NOT LIKE "y""#,
        ),
        (
            r#"NOT (resource_site = "a" OR resource_site = "b")"#,
            r#"NOT (resource_site = "a" OR resource_site = "b")"#,
        ),
    ];
    for (text, canonical) in cases {
        let f = filter(text);
        assert_eq!(f.to_string(), canonical, "{text}");
        assert_eq!(filter(canonical), f);
        assert_eq!(f.source(), text);
    }
}

#[test]
fn errors_say_what_and_where() {
    let unknown = "unknown field `resource_colour` (known: resource_site, resource_class, resource_subclass, resource_type, resource_id, resource_endpoint, resource_metadata.<key>)";
    assert_error(r#"resource_colour = "red""#, 1, 1, unknown);
    assert_error(
        r#"RESOURCE_METADATA = "x""#,
        1,
        1,
        "`resource_metadata` needs a key",
    );
    assert_error(
        r#"Resource_Metadata. = "x""#,
        1,
        19,
        "expected a metadata key after `resource_metadata.`",
    );
    assert_error(
        r#"resource_site = x"#,
        1,
        17,
        "expected a string after `=`, found `x` (values are written in double quotes)",
    );
    assert_error(
        r#"resource_site = "#,
        1,
        16,
        "expected a string after `=`, found the end of the filter",
    );
    assert_error(
        r#"resource_site ne AND"#,
        1,
        18,
        "expected a string after `ne`, found `AND`",
    );
    assert_error(r#"resource_site = "abc"#, 1, 17, "unterminated string");
    assert_error(r#"resource_site = "abc\"#, 1, 17, "unterminated string");
    assert_error(
        "resource_site = \"abc\nAND resource_id = \"x\"",
        1,
        17,
        "a string cannot span lines",
    );
    assert_error(
        r#"(resource_site = "a""#,
        1,
        21,
        "expected `)` to close the `(` at line 1, column 1, found the end of the filter",
    );
    assert_error(
        r#"(resource_site = "a" resource_id = "b")"#,
        1,
        22,
        "expected `)` to close the `(` at line 1, column 1, found `resource_id`",
    );
    assert_error(r#"resource_site = "a")"#, 1, 20, "no matching `(`");
    assert_error(r#"resource_site IN ()"#, 1, 18, "empty IN list");
    assert_error(r#"resource_site IN ("a",)"#, 1, 23, "trailing `,`");
    assert_error(
        r#"resource_site IN "a""#,
        1,
        18,
        "expected `(` after `IN`, found the string \"a\"",
    );
    assert_error(
        r#"resource_site IN ("a" "b")"#,
        1,
        23,
        "expected `,` or `)` in the IN list, found the string \"b\"",
    );
    assert_error(
        r#"resource_site = "a" AND AND resource_id = "b""#,
        1,
        25,
        "unexpected `AND`",
    );
    assert_error(r#"and resource_site = "a""#, 1, 1, "unexpected `and`");
    assert_error(
        r#"resource_site = "a" AND"#,
        1,
        24,
        "expected a condition (a field, `NOT` or `(`), found the end of the filter",
    );
    assert_error(
        r#"resource_site = "a" resource_id = "b""#,
        1,
        21,
        "unexpected `resource_id` after a complete condition: expected `AND`, `OR` or the end of the filter",
    );
    assert_error(
        r#"resource_site LIKES "a""#,
        1,
        15,
        "expected an operator after `resource_site`",
    );
    assert_error(
        r#"resource_site NOT EQ "a""#,
        1,
        19,
        "expected `LIKE` or `IN` after `NOT`, found `EQ`",
    );
    assert_error(r#"resource_site = 'a'"#, 1, 17, "double quotes");
    assert_error(r#"resource_site == "a""#, 1, 16, "found `=`");
    assert_error(r#"resource_site ! "a""#, 1, 15, "did you mean `!=`?");
    assert_error(r#"resource_site < "a""#, 1, 15, "unexpected character `<`");
    assert_error(
        r#"resource_metadata.1x = "a""#,
        1,
        19,
        "invalid metadata key `1x`",
    );
    assert_error(
        r#"resource_metadata.a.b = "a""#,
        1,
        19,
        "invalid metadata key `a.b`",
    );
    assert_error(
        r#"resource_metadata. = "a""#,
        1,
        19,
        "expected a metadata key",
    );
    assert_error(r#"resource_metadata = "a""#, 1, 1, "needs a key");
    assert_error(r#""a" = resource_site"#, 1, 1, "found the string \"a\"");
    assert_error(r#"()"#, 1, 1, "empty parentheses");
    assert_error("", 1, 1, "empty filter");
    assert_error("  \n  ", 1, 1, "empty filter");
    // Columns count characters, not bytes.
    assert_error(r#"résumé = "a""#, 1, 1, "unknown field `résumé`");
    assert_error(r#"resource_id = "é" é"#, 1, 19, "unexpected `é`");
}

#[test]
fn error_display_and_render() {
    let text = "resource_class = \"network\" AND\n    resource_type IN (\"juniper\" \"cisco\")";
    let e = error(text);
    assert_eq!((e.line, e.column), (2, 33));
    assert_eq!(
        e.to_string(),
        "line 2, column 33: expected `,` or `)` in the IN list, found the string \"cisco\""
    );
    assert_eq!(
        e.render(text),
        "    resource_type IN (\"juniper\" \"cisco\")\n                                ^\nexpected `,` or `)` in the IN list, found the string \"cisco\""
    );

    let text = "resource_class = \"network\" AND\r\nresource_typo = \"x\"";
    let e = error(text);
    assert_eq!((e.line, e.column), (2, 1));
    assert!(
        e.render(text)
            .starts_with("resource_typo = \"x\"\n^\nunknown field")
    );

    // The caret follows a tab as the terminal will show it.
    let text = "\tresource_site = nope";
    let e = error(text);
    assert_eq!((e.line, e.column), (1, 18));
    assert_eq!(
        e.render(text).lines().nth(1),
        Some(format!("\t{}^", " ".repeat(16)).as_str())
    );

    // An error at the end points just past the last token, not at a blank line.
    let text = "resource_site =\n\n";
    let e = error(text);
    assert_eq!((e.line, e.column), (1, 16));
    assert_eq!(
        e.render(text),
        "resource_site =\n               ^\nexpected a string after `=`, found the end of the filter"
    );

    // Rendering against the wrong text must not panic.
    let e = FilterError {
        column: 99,
        line: 7,
        message: "m".to_owned(),
    };
    assert_eq!(e.render("x"), format!("\n{}^\nm", " ".repeat(98)));
}

#[test]
fn hostile_input_is_refused() {
    let deep = "(".repeat(100_000);
    assert_error(&deep, 1, 1, "filter is too long");
    let deep = format!("{}resource_site = \"a\"{}", "(".repeat(65), ")".repeat(65));
    assert_error(&deep, 1, 65, "nested too deeply");
    let nots = format!("{}resource_site = \"a\"", "NOT ".repeat(10_000));
    assert_error(&nots, 1, 257, "nested too deeply");
    let ok = format!("{}resource_site = \"a\"{}", "(".repeat(64), ")".repeat(64));
    assert!(matches(&ok, &resource(&[(Field::Site, "a")], &[])));
    let ok = format!("{}resource_site = \"a\"", "NOT ".repeat(64));
    assert!(matches(&ok, &resource(&[(Field::Site, "a")], &[])));

    // Long flat chains are fine: they do not nest.
    let chain = vec![r#"resource_site = "x""#; 2000].join(" OR ");
    assert!(chain.len() < MAX_FILTER_LEN);
    let f = filter(&chain);
    assert!(!f.matches(&juniper()));
    assert_eq!(filter(&f.to_string()), f);

    let long = format!("resource_site = \"{}\"", "a".repeat(MAX_FILTER_LEN));
    assert_error(&long, 1, 1, "at most 65536");
    let huge_token = "x".repeat(60_000);
    let e = error(&huge_token);
    assert!(e.message.len() < 300, "{}", e.message.len());
}

// ---------------------------------------------------------------------------
// Property tests. SQLite is the oracle for evaluation: Panoptes ran these
// filters as `WHERE` clauses over a table of resources.

const VALUES: &[&str] = &[
    "", "a", "A", "ab", "aB", "b%", "x_y", "é", "É", "q\"t", "b\\s", "it's", "12.1R3",
];
const PATTERN_PIECES: &[&str] = &[
    "%", "_", "a", "A", "b", "B", "é", "É", "x", "_y", "12.", "'", "\\", "\"",
];
const KEYS: &[&str] = &["os", "role", "rack_1"];

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(VALUES).prop_map(str::to_owned)
}

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PATTERN_PIECES), 0..5).prop_map(|p| p.concat())
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        prop::sample::select(Field::ALL.to_vec()).prop_map(Operand::Field),
        prop::sample::select(KEYS).prop_map(|k| Operand::Metadata(k.to_owned())),
    ]
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        (operand(), any::<bool>(), value()).prop_map(|(operand, negated, value)| {
            Expr::Equals {
                operand,
                negated,
                value,
            }
        }),
        (operand(), any::<bool>(), pattern()).prop_map(|(operand, negated, p)| Expr::Like {
            operand,
            negated,
            pattern: LikePattern::new(p),
        }),
        (
            operand(),
            any::<bool>(),
            prop::collection::vec(value(), 1..4)
        )
            .prop_map(|(operand, negated, items)| Expr::In {
                operand,
                negated,
                items
            }),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

fn any_resource() -> impl Strategy<Value = Resource> {
    (
        prop::array::uniform6(value()),
        prop::collection::vec(prop::option::weighted(0.6, value()), KEYS.len()),
    )
        .prop_map(|(fields, metadata)| Resource {
            fields,
            metadata: KEYS
                .iter()
                .zip(metadata)
                .filter_map(|(k, v)| Some(((*k).to_owned(), v?)))
                .collect(),
        })
}

/// Writes `expr` as filter text in a style chosen by `seed`: the case of
/// keywords, field names, the `resource_metadata.` prefix and metadata keys
/// (Panoptes ignores it; keys are lower-cased), `eq`/`ne` for `=`/`!=`,
/// spacing (including newlines) and redundant parentheses all vary, and
/// none of them changes what is parsed.
struct Writer {
    seed: u64,
    out: String,
}

impl Writer {
    fn pick(&mut self, n: u64) -> u64 {
        // xorshift64: deterministic per case, so failures replay.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % n
    }

    fn space(&mut self, optional: bool) {
        let choice = self.pick(8);
        self.out.push_str(match choice {
            0 if optional => "",
            1 => "\n",
            2 => "\n    ",
            3 => "\t",
            4 => "  ",
            _ => " ",
        });
    }

    fn keyword(&mut self, word: &str) {
        let choice = self.pick(4);
        let written = match choice {
            0 => word.to_ascii_lowercase(),
            1 => word.to_ascii_uppercase(),
            2 => {
                let mut w = word.to_ascii_lowercase();
                if let Some(first) = w.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                w
            }
            _ => word
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
        };
        self.out.push_str(&written);
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                // Needless escapes stand for the character itself.
                'a' if self.pick(4) == 0 => self.out.push_str("\\a"),
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn expr(&mut self, expr: &Expr, parent: u8) {
        let own = match expr {
            Expr::Or(_) => 0,
            Expr::And(_) => 1,
            _ => 2,
        };
        let wrap = own <= parent || self.pick(8) == 0;
        if wrap {
            self.out.push('(');
            self.space(true);
        }
        match expr {
            Expr::Equals {
                operand,
                negated,
                value,
            } => {
                self.keyword(&operand.to_string());
                self.space(true);
                match (negated, self.pick(2)) {
                    (false, 0) => self.out.push('='),
                    (true, 0) => self.out.push_str("!="),
                    (false, _) => self.keyword(" eq "),
                    (true, _) => self.keyword(" ne "),
                }
                self.space(true);
                self.string(value);
            }
            Expr::Like {
                operand,
                negated,
                pattern,
            } => {
                self.keyword(&operand.to_string());
                self.space(false);
                if *negated {
                    self.keyword("not");
                    self.space(false);
                }
                self.keyword("like");
                self.space(false);
                self.string(pattern.source());
            }
            Expr::In {
                operand,
                negated,
                items,
            } => {
                self.keyword(&operand.to_string());
                self.space(false);
                if *negated {
                    self.keyword("not");
                    self.space(false);
                }
                self.keyword("in");
                self.space(true);
                self.out.push('(');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                        self.space(true);
                    }
                    self.string(item);
                }
                self.out.push(')');
            }
            Expr::Not(inner) => {
                self.keyword("not");
                self.space(false);
                self.expr(inner, 1);
            }
            Expr::And(items) | Expr::Or(items) => {
                let word = if own == 0 { "or" } else { "and" };
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.space(false);
                        self.keyword(word);
                        self.space(false);
                    }
                    self.expr(item, own);
                }
            }
        }
        if wrap {
            self.space(true);
            self.out.push(')');
        }
    }
}

fn write_filter(expr: &Expr, seed: u64) -> String {
    let mut writer = Writer {
        seed: seed | 1,
        out: String::new(),
    };
    writer.expr(expr, 0);
    writer.out
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_column(operand: &Operand) -> String {
    match operand {
        Operand::Field(Field::Site) => "site".to_owned(),
        Operand::Field(Field::Class) => "class".to_owned(),
        Operand::Field(Field::Subclass) => "subclass".to_owned(),
        Operand::Field(Field::Type) => "\"type\"".to_owned(),
        Operand::Field(Field::Id) => "id".to_owned(),
        Operand::Field(Field::Endpoint) => "endpoint".to_owned(),
        Operand::Metadata(key) => format!("m_{key}"),
    }
}

/// `expr` as an SQL condition, fully parenthesised.
fn sql(expr: &Expr) -> String {
    let not = |negated: &bool| if *negated { "NOT " } else { "" };
    match expr {
        Expr::Equals {
            operand,
            negated,
            value,
        } => {
            let op = if *negated { "!=" } else { "=" };
            format!("({} {op} {})", sql_column(operand), sql_literal(value))
        }
        Expr::Like {
            operand,
            negated,
            pattern,
        } => format!(
            "({} {}LIKE {})",
            sql_column(operand),
            not(negated),
            sql_literal(pattern.source())
        ),
        Expr::In {
            operand,
            negated,
            items,
        } => {
            let items: Vec<String> = items.iter().map(|i| sql_literal(i)).collect();
            format!(
                "({} {}IN ({}))",
                sql_column(operand),
                not(negated),
                items.join(", ")
            )
        }
        Expr::Not(inner) => format!("(NOT {})", sql(inner)),
        Expr::And(items) => {
            let items: Vec<String> = items.iter().map(sql).collect();
            format!("({})", items.join(" AND "))
        }
        Expr::Or(items) => {
            let items: Vec<String> = items.iter().map(sql).collect();
            format!("({})", items.join(" OR "))
        }
    }
}

thread_local! {
    static DB: rusqlite::Connection = {
        let db = rusqlite::Connection::open_in_memory().expect("in-memory SQLite");
        db.execute_batch(
            "CREATE TABLE r(site, class, subclass, \"type\", id, endpoint, m_os, m_role, m_rack_1);",
        )
        .expect("create table");
        db
    };
}

/// Whether SQLite selects `resource` with `expr` as the `WHERE` clause.
fn sqlite_matches(resource: &Resource, expr: &Expr) -> bool {
    DB.with(|db| {
        db.execute("DELETE FROM r", []).expect("delete");
        let metadata = KEYS.iter().map(|k| resource.metadata(k));
        let row: Vec<Option<&str>> = resource
            .fields
            .iter()
            .map(|f| Some(f.as_str()))
            .chain(metadata)
            .collect();
        db.execute(
            "INSERT INTO r VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params_from_iter(row),
        )
        .expect("insert");
        let query = format!("SELECT count(*) FROM r WHERE {}", sql(expr));
        let count: i64 = db
            .query_row(&query, [], |row| row.get(0))
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        count == 1
    })
}

fn sqlite_like(text: &str, pattern: &str) -> bool {
    DB.with(|db| {
        db.query_row("SELECT ?1 LIKE ?2", [text, pattern], |row| row.get(0))
            .expect("LIKE query")
    })
}

/// Token soup: mostly-valid vocabulary in random order, to reach deep into
/// the parser's error paths.
fn soup() -> impl Strategy<Value = String> {
    const WORDS: &[&str] = &[
        "resource_site",
        "resource_metadata.os",
        "resource_metadata.",
        "resource_colour",
        "AND",
        "or",
        "Not",
        "LIKE",
        "in",
        "eq",
        "NE",
        "=",
        "!=",
        "!",
        "(",
        ")",
        ",",
        "\"a\"",
        "\"%\"",
        "\"",
        "\\",
        "'",
        "\n",
        " ",
        "é",
        "1",
        ".",
        "<",
    ];
    prop::collection::vec(prop::sample::select(WORDS), 0..24).prop_map(|w| w.join(" "))
}

/// Parsing failed or succeeded without panicking; check the result is sane.
fn check_parse_result(text: &str) {
    match ResourceFilter::parse(text) {
        Ok(f) => {
            let canonical = f.to_string();
            let again = ResourceFilter::parse(&canonical).expect("canonical form parses");
            assert_eq!(again, f);
            assert_eq!(again.to_string(), canonical);
        }
        Err(e) => {
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(e.line >= 1 && e.line <= lines.len(), "{e}");
            let width = lines.get(e.line - 1).map_or(0, |l| l.chars().count());
            assert!(e.column >= 1 && e.column <= width + 1, "{e}");
            let rendered = e.render(text);
            assert!(rendered.ends_with(&e.message));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// The heart of it: written in any style, a filter parses to what was
    /// meant and selects exactly what SQLite's `WHERE` selects.
    #[test]
    fn agrees_with_sqlite(expr in expr(), resource in any_resource(), seed in any::<u64>()) {
        let text = write_filter(&expr, seed);
        let f = ResourceFilter::parse(&text).map_err(|e| TestCaseError::fail(e.render(&text)))?;
        prop_assert_eq!(&f.expr, &expr, "parsing {}", text);
        prop_assert_eq!(f.matches(&resource), sqlite_matches(&resource, &expr), "{}\nSQL: {}", text, sql(&expr));
    }

    #[test]
    fn like_agrees_with_sqlite(
        text in prop::collection::vec(prop::sample::select(&["a", "A", "b", "é", "É", "ß", "%", "_", "\u{212A}", "k", "日", "["][..]), 0..8),
        pattern in prop::collection::vec(prop::sample::select(&["a", "A", "b", "é", "É", "ß", "%", "_", "\u{212A}", "K", "日", "{", "%%"][..]), 0..7),
    ) {
        let (text, pattern) = (text.concat(), pattern.concat());
        prop_assert_eq!(like(&text, &pattern), sqlite_like(&text, &pattern), "{:?} LIKE {:?}", text, pattern);
    }

    #[test]
    fn canonical_form_round_trips(expr in expr()) {
        let text = expr.to_string();
        let f = ResourceFilter::parse(&text).map_err(|e| TestCaseError::fail(e.render(&text)))?;
        prop_assert_eq!(&f.expr, &expr);
        let again = ResourceFilter::parse(&f.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &f);
        prop_assert_eq!(again.to_string(), text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_parse_result(&text);
    }

    #[test]
    fn token_soup_never_panics(text in soup()) {
        check_parse_result(&text);
    }
}
