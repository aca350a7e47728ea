//! The Prometheus exposition formats, written once for every user: the
//! `/metrics` endpoint (collected series and vigil's health) and the
//! Pushgateway sink.
//!
//! * Text format 0.0.4 (`text/plain; version=0.0.4`) and OpenMetrics 1.0
//!   (`application/openmetrics-text; version=1.0.0`). They differ in the
//!   counter family name (OpenMetrics drops `_total` from `# TYPE` and
//!   `# HELP`, the sample keeps it) and OpenMetrics' closing `# EOF`.
//! * Names follow Prometheus' rules and conventions: metric names
//!   `[a-zA-Z_:][a-zA-Z0-9_:]*`, derived from group type and metric without
//!   doubled words and without gauges ending in `_total`
//!   ([`vigil_core::metric_names`]),
//!   label names `[a-zA-Z_][a-zA-Z0-9_]*` and never `__`-prefixed (reserved).
//!   Anything else becomes `_`. Label values escape `\`, `"` and newline;
//!   HELP text escapes `\` and newline.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use vigil_core::model::{MetricType, MetricValue, MetricsGroup};

/// Which format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
    pub const OPENMETRICS_CONTENT_TYPE: &str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Content negotiation on the `Accept` header: OpenMetrics when the
    /// scraper lists it, else the text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => Format::TEXT_CONTENT_TYPE,
            Format::OpenMetrics => Format::OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

impl From<MetricType> for Kind {
    fn from(kind: MetricType) -> Kind {
        match kind {
            MetricType::Counter => Kind::Counter,
            MetricType::Gauge => Kind::Gauge,
        }
    }
}

/// A collected family's name from its group type and metric: see
/// [`vigil_core::metric_names`] for the rule (no doubled words, no gauge
/// ending in `_total`, an optional namespace) and how collisions are
/// settled ([`crate::prometheus::Families`] applies it).
pub use vigil_core::metric_names::{Derived, derive as derive_family_name, sanitize_metric_name};

/// Replaces what Prometheus does not allow in a label name with `_`;
/// `__`-prefixed names (reserved for Prometheus) get a `label` prefix.
pub fn sanitize_label_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for (i, c) in name.chars().enumerate() {
        if i == 0 && c.is_ascii_digit() {
            out.push('_');
        }
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    if out.is_empty() || out.starts_with("__") {
        out.insert_str(0, "label");
    }
    out
}

/// Appends `value` escaped for a label value.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The resource fields every collected series is labelled with.
pub const RESOURCE_LABELS: [&str; 6] = [
    "resource_id",
    "resource_endpoint",
    "resource_site",
    "resource_class",
    "resource_subclass",
    "resource_type",
];

/// Names handed out once each, for renaming colliding labels and tags in
/// time linear in the number of names, whatever they are.
///
/// The renaming this replaces kept the names in a `Vec` and searched it for
/// every candidate, and tried `_2`, `_3`, ... from 2 for every collision:
/// about n³/6 string comparisons. Measured (release, one core), 2,000
/// dimensions of one name took 14.9 s per encoder, and every doubling 8
/// times longer, so 20,000 (a 200 KB group) would take about 4 hours, on
/// the async runtime, which froze every sink. Now 20,000 take about 25 ms
/// (`tests/benches/sinks.rs`). Here a candidate costs
/// one hash lookup, and each base name remembers the next suffix to try, so
/// the counter of a base only moves forward: over a whole group the suffix
/// probes are at most the names handed out plus the names that were
/// already taken (a taken `base_k` is skipped once, for the one base it
/// can be a suffix of). [`UniqueNames::probes`] counts the lookups, so tests
/// bound the work, not the time.
#[derive(Debug, Default)]
pub struct UniqueNames {
    taken: HashSet<String>,
    /// The next suffix to try per base name.
    next: HashMap<String, u64>,
    probes: usize,
}

impl UniqueNames {
    /// With `reserved` taken from the start.
    pub fn with_reserved<'a>(reserved: impl IntoIterator<Item = &'a str>) -> UniqueNames {
        let mut names = UniqueNames::default();
        for name in reserved {
            names.taken.insert(name.to_owned());
        }
        names
    }

    pub fn is_taken(&mut self, name: &str) -> bool {
        self.probes += 1;
        self.taken.contains(name)
    }

    /// Takes `name` if it is free; false if it was taken.
    pub fn claim(&mut self, name: &str) -> bool {
        self.probes += 1;
        if self.taken.contains(name) {
            return false;
        }
        self.taken.insert(name.to_owned());
        true
    }

    /// Takes and returns the first free `<base>_<n>`, n = 2, 3, ...
    pub fn claim_suffixed(&mut self, base: &str) -> String {
        let mut n = self.next.get(base).copied().unwrap_or(2);
        let mut candidate = String::with_capacity(base.len() + 4);
        loop {
            candidate.clear();
            candidate.push_str(base);
            candidate.push('_');
            let _ = write!(candidate, "{n}");
            n += 1;
            if self.claim(&candidate) {
                break;
            }
        }
        self.next.insert(base.to_owned(), n);
        candidate
    }

    /// Hash lookups made so far.
    pub fn probes(&self) -> usize {
        self.probes
    }
}

/// The label set of a group's series, rendered once (`{a="b",...}`):
/// dimensions in the order of their names, then the resource fields. A dimension whose
/// sanitised name collides with a resource label or one of `reserved`
/// (the Pushgateway's `job` and `instance`) is renamed `exported_<name>`,
/// as Prometheus does on collisions, and so is the second of two
/// dimensions that sanitise alike; when that name is taken too, a numeric
/// suffix follows (`exported_<name>_2`, `_3`, ...). Linear in the group's
/// size (plus the sort): see [`UniqueNames`].
pub fn group_labels(group: &MetricsGroup, reserved: &[&str]) -> String {
    group_labels_counted(group, reserved).0
}

/// [`group_labels`] and the name lookups it made.
pub fn group_labels_counted(group: &MetricsGroup, reserved: &[&str]) -> (String, usize) {
    let mut dimensions: Vec<(String, &str)> = group
        .dimensions
        .iter()
        .map(|d| (sanitize_label_name(&d.name), d.value.as_str()))
        .collect();
    // Stable: of two equal names, the first keeps it.
    dimensions.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names = UniqueNames::with_reserved(RESOURCE_LABELS.iter().chain(reserved).copied());
    let value_bytes: usize = dimensions.iter().map(|(n, v)| n.len() + v.len()).sum();
    let mut out = String::with_capacity(64 + value_bytes + 4 * dimensions.len());
    out.push('{');
    let mut exported = String::new();
    for (name, value) in dimensions {
        if names.claim(&name) {
            out.push_str(&name);
        } else {
            exported.clear();
            exported.push_str("exported_");
            exported.push_str(&name);
            if names.claim(&exported) {
                out.push_str(&exported);
            } else {
                out.push_str(&names.claim_suffixed(&exported));
            }
        }
        out.push_str("=\"");
        escape_label_value(value, &mut out);
        out.push_str("\",");
    }
    let r = &group.resource;
    for (name, value) in
        RESOURCE_LABELS
            .iter()
            .zip([&r.id, &r.endpoint, &r.site, &r.class, &r.subclass, &r.type_])
    {
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(value, &mut out);
        out.push_str("\",");
    }
    out.pop();
    out.push('}');
    let probes = names.probes();
    (out, probes)
}

/// Renders `labels` (already sanitised names) as `{a="b",...}`; empty for
/// none.
pub fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(value, &mut out);
        out.push('"');
    }
    out.push('}');
    out
}

/// Writes one exposition document.
pub struct Exposition {
    format: Format,
    out: String,
}

impl Exposition {
    pub fn new(format: Format) -> Exposition {
        Exposition {
            format,
            out: String::with_capacity(4096),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. `name` is the
    /// family name (without a counter's `_total`).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let suffix = if kind == Kind::Counter && self.format == Format::Text {
            "_total"
        } else {
            ""
        };
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push_str(suffix);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push_str(suffix);
        self.out.push(' ');
        self.out.push_str(kind.name());
        self.out.push('\n');
    }

    /// One sample line. `name` is the full sample name (a counter's ends in
    /// `_total`, a histogram's in `_bucket`, `_sum` or `_count`); `labels`
    /// is pre-rendered (`{...}` or empty).
    pub fn sample(&mut self, name: &str, labels: &str, value: SampleValue) {
        self.out.push_str(name);
        self.out.push_str(labels);
        self.out.push(' ');
        value.write(&mut self.out);
        self.out.push('\n');
    }

    /// A histogram's samples from cumulative bucket counts (`le`, count);
    /// `labels` are the series' own labels (without `le`).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let bucket = format!("{name}_bucket");
        for (le, cumulative) in buckets {
            let le_text = format_float(*le);
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le_text));
            let rendered = render_labels(&with_le);
            self.sample(&bucket, &rendered, SampleValue::Unsigned(*cumulative));
        }
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", "+Inf"));
        let rendered = render_labels(&with_le);
        self.sample(&bucket, &rendered, SampleValue::Unsigned(count));
        let plain = render_labels(labels);
        self.sample(&format!("{name}_sum"), &plain, SampleValue::Float(sum));
        self.sample(
            &format!("{name}_count"),
            &plain,
            SampleValue::Unsigned(count),
        );
    }

    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// A sample's value, written exactly (a u64 counter is not rounded through
/// an f64 on the way out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleValue {
    Signed(i64),
    Unsigned(u64),
    Float(f64),
}

impl From<MetricValue> for SampleValue {
    fn from(value: MetricValue) -> SampleValue {
        match value {
            MetricValue::Signed(v) => SampleValue::Signed(v),
            MetricValue::Unsigned(v) => SampleValue::Unsigned(v),
            MetricValue::Float(v) => SampleValue::Float(v),
        }
    }
}

impl SampleValue {
    fn write(self, out: &mut String) {
        match self {
            SampleValue::Signed(v) => {
                let _ = write!(out, "{v}");
            }
            SampleValue::Unsigned(v) => {
                let _ = write!(out, "{v}");
            }
            SampleValue::Float(v) => out.push_str(&format_float(v)),
        }
    }
}

/// Prometheus' float spelling: `NaN`, `+Inf`, `-Inf`, else Rust's shortest
/// round-trip form.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use vigil_core::model::{Datetime, Dimension, Resource};

    #[test]
    fn names_follow_the_prometheus_rules() {
        let name = |g, m| derive_family_name(g, m, false, None).name;
        assert_eq!(name("interface", "bits_in"), "interface_bits_in");
        assert_eq!(name("cpu-load", "5min.avg"), "cpu_load_5min_avg");
        assert_eq!(name("cpu", "cpu_utilization"), "cpu_utilization");
        assert_eq!(sanitize_metric_name("9lives"), "_9lives");
        assert_eq!(sanitize_metric_name("a:b"), "a:b");
        assert_eq!(sanitize_label_name("interface name"), "interface_name");
        assert_eq!(sanitize_label_name("1x"), "_1x");
        assert_eq!(sanitize_label_name("__name__"), "label__name__");
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name(""), "label");
    }

    fn group(dimensions: &[(&str, &str)]) -> MetricsGroup {
        MetricsGroup {
            group_type: "interface".into(),
            interval_seconds: 60,
            creation_timestamp: Datetime {
                seconds: 1,
                nanoseconds: 0,
            },
            schema_version: "0.2".into(),
            resource: Resource::named("sw\"1", "127.0.0.1").into(),
            dimensions: dimensions
                .iter()
                .map(|(n, v)| Dimension {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            metrics: Vec::new(),
        }
    }

    #[test]
    fn labels_are_sorted_escaped_and_never_collide() {
        let labels = group_labels(
            &group(&[
                ("z", "1"),
                ("interface_name", "ge-0/0/0 \"uplink\"\nback\\slash"),
                ("resource_id", "spoof"),
                ("instance", "i"),
            ]),
            &["job", "instance"],
        );
        assert_eq!(
            labels,
            "{exported_instance=\"i\",interface_name=\"ge-0/0/0 \\\"uplink\\\"\\nback\\\\slash\",exported_resource_id=\"spoof\",z=\"1\",\
resource_id=\"sw\\\"1\",resource_endpoint=\"127.0.0.1\",resource_site=\"\",resource_class=\"\",resource_subclass=\"\",resource_type=\"\"}"
        );
        // Two dimensions that sanitise alike both survive.
        let labels = group_labels(&group(&[("a b", "1"), ("a-b", "2")]), &[]);
        assert!(
            labels.starts_with("{a_b=\"1\",exported_a_b=\"2\","),
            "{labels}"
        );
    }

    /// The label names of a rendered label set, in order.
    fn label_names(labels: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = labels.trim_start_matches('{');
        while let Some((name, after)) = rest.split_once("=\"") {
            names.push(name.to_owned());
            // Values here have no escapes.
            let (_, after) = after.split_once('"').unwrap_or_default();
            rest = after.trim_start_matches(',');
        }
        names
    }

    /// 20,000 dimensions of one name (~200 KB): every one is kept, under a
    /// distinct name, in a label set of bounded size, with a bounded number
    /// of name lookups (the old renaming made ~n³/6 string comparisons).
    #[test]
    fn twenty_thousand_dimensions_of_one_name_take_linear_work() {
        const N: usize = 20_000;
        let dimensions: Vec<(String, String)> =
            (0..N).map(|i| ("d".to_owned(), format!("{i}"))).collect();
        let refs: Vec<(&str, &str)> = dimensions
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let g = group(&refs);
        for reserved in [&[][..], &["job", "instance"][..]] {
            let (labels, probes) = group_labels_counted(&g, reserved);
            let names = label_names(&labels);
            assert_eq!(names.len(), N + RESOURCE_LABELS.len());
            let distinct: HashSet<&String> = names.iter().collect();
            assert_eq!(distinct.len(), names.len(), "label names are unique");
            assert_eq!(names[0], "d");
            assert_eq!(names[1], "exported_d");
            assert_eq!(names[2], "exported_d_2");
            assert_eq!(names[N - 1], format!("exported_d_{}", N - 1));
            // Values keep their order (the sort is stable).
            assert!(labels.contains("exported_d_2=\"2\","), "{}", &labels[..200]);
            // Work: one lookup for the name, one for `exported_`, and the
            // suffix search never moves backwards.
            assert!(probes <= 3 * N + 16, "{probes} lookups for {N} dimensions");
            // Output: at most the input plus a bounded prefix and suffix per
            // dimension (`exported_` and `_<n>`).
            let input: usize = dimensions.iter().map(|(n, v)| n.len() + v.len()).sum();
            assert!(labels.len() <= input + 24 * N + 256, "{}", labels.len());
        }
    }

    /// Names that are already `exported_...` chains, and suffixes taken
    /// beforehand, still end unique in linear work.
    #[test]
    fn chains_of_exported_names_and_taken_suffixes_stay_unique() {
        let mut dims: Vec<(String, String)> = Vec::new();
        for i in 0..2_000 {
            dims.push(("a".into(), format!("{i}")));
            dims.push(("exported_a".into(), format!("e{i}")));
            dims.push(("exported_exported_a".into(), format!("ee{i}")));
            dims.push((format!("exported_a_{}", i + 2), format!("s{i}")));
            dims.push(("resource_id".into(), format!("r{i}")));
        }
        let refs: Vec<(&str, &str)> = dims.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let (labels, probes) = group_labels_counted(&group(&refs), &["job", "instance"]);
        let names = label_names(&labels);
        assert_eq!(names.len(), dims.len() + RESOURCE_LABELS.len());
        let distinct: HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert!(probes <= 4 * dims.len() + 16, "{probes}");
        // The resource's own id label is the resource's.
        assert!(labels.ends_with(
            "resource_id=\"sw\\\"1\",resource_endpoint=\"127.0.0.1\",resource_site=\"\",resource_class=\"\",resource_subclass=\"\",resource_type=\"\"}"
        ));
    }

    #[test]
    fn counters_are_named_per_format() {
        for (format, type_line, end) in [
            (Format::Text, "# TYPE x_bits_total counter\n", ""),
            (Format::OpenMetrics, "# TYPE x_bits counter\n", "# EOF\n"),
        ] {
            let mut doc = Exposition::new(format);
            doc.family("x_bits", Kind::Counter, "bits\nand \\ more");
            doc.sample("x_bits_total", "{a=\"b\"}", SampleValue::Unsigned(u64::MAX));
            let text = doc.finish();
            assert!(text.contains(type_line), "{text}");
            assert!(text.contains("bits\\nand \\\\ more"), "{text}");
            assert!(
                text.contains("x_bits_total{a=\"b\"} 18446744073709551615\n"),
                "{text}"
            );
            assert!(text.ends_with(end), "{text}");
        }
    }

    #[test]
    fn histograms_have_cumulative_buckets_sum_and_count() {
        let mut doc = Exposition::new(Format::Text);
        doc.family("d", Kind::Histogram, "h");
        doc.histogram("d", &[("plugin", "p")], &[(0.5, 1), (1.0, 3)], 2.5, 4);
        let text = doc.finish();
        assert!(
            text.contains("d_bucket{plugin=\"p\",le=\"0.5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("d_bucket{plugin=\"p\",le=\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("d_bucket{plugin=\"p\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("d_sum{plugin=\"p\"} 2.5\n"), "{text}");
        assert!(text.contains("d_count{plugin=\"p\"} 4\n"), "{text}");
    }

    #[test]
    fn negotiation_prefers_openmetrics_only_when_asked() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
