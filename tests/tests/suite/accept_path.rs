//! A property test of the whole accept path: arbitrary plugin outputs
//! (hostile names, duplicates, oversized counts and strings, control
//! characters) go through the sandbox's output check, the conversion into
//! vigil's model (sharing the polled resource), the rate transform and every sink encoder.
//!
//! What must hold for every input:
//! * nothing panics, and every step finishes (each is linear in its input;
//!   proptest's per-case timeout is the hang guard);
//! * for an output the check accepts, what every encoder writes is bounded
//!   by [`RATIO`] times the size the check charged for it, plus a constant
//!   per group ([`PER_GROUP`]): the stated amplification bound;
//! * for an output the check refuses, the encoders (which also serve
//!   groups from other agents over Kafka, never checked here) still stay
//!   bounded by the same ratio of the input's charged size.
//!
//! `worst_constructed_amplification_is_bounded` prints the ratios of the
//! worst cases (`--nocapture`) for the closing figures.

use std::sync::Arc;

use proptest::prelude::*;
use vigil_host::bus::PluginName;
use vigil_host::model::{MetricsGroup, Resource};
use vigil_host::pipeline::encode::encode_metrics_group;
use vigil_host::plugin::manifest::RateTransform;
use vigil_host::sandbox::convert;
use vigil_host::sandbox::limits::Limits;
use vigil_host::sandbox::validate::{self, charged_size};
use vigil_host::sandbox::wit::{
    Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup as SentGroup,
};
use vigil_host::sandbox::{RunOutcome, RunOutput, SentOutput};
use vigil_host::sinks::exposition::{Exposition, Format};
use vigil_host::sinks::influxdb::{Precision, write_group};
use vigil_host::sinks::prometheus::{PrometheusSettings, SeriesRegistry};
use vigil_host::transform::RateTransformer;

/// Encoder bytes per charged byte. Escaping is the only multiplier left:
/// JSON writes a control character as `\u00XX` (6 bytes for 1).
const RATIO: u64 = 6;
/// Fixed framing per group (JSON keys, timestamps, line-protocol syntax).
const PER_GROUP: u64 = 1024;
/// Fixed framing per page (OpenMetrics' `# EOF`).
const PER_PAGE: u64 = 64;

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(
            prop_oneof![
                Just('a'), Just('Z'), Just('0'), Just('_'), Just(' '), Just('"'),
                Just('\\'), Just('\n'), Just('='), Just(','), Just('\u{1}'),
                Just('é'), Just('𝄞'),
            ],
            0..max.min(64),
        )
        .prop_map(|c| c.into_iter().collect()),
        1 => (0..=max).prop_map(|n| "\u{1}".repeat(n)),
        1 => (0..=max).prop_map(|n| "x".repeat(n)),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("bits_in".to_owned()),
        Just("x".to_owned()),
        Just("x_total".to_owned()),
        Just("vigil".to_owned()),
        Just("interface".to_owned()),
        Just("Bad Name".to_owned()),
        Just(String::new()),
        "[a-z_][a-z0-9_]{0,10}",
        (0..200usize).prop_map(|n| "n".repeat(n)),
    ]
}

fn value() -> impl Strategy<Value = MetricValue> {
    prop_oneof![
        any::<u64>().prop_map(MetricValue::Unsigned),
        any::<i64>().prop_map(MetricValue::Signed),
        any::<f64>().prop_map(MetricValue::Float),
    ]
}

fn at() -> Datetime {
    Datetime {
        seconds: 1_700_000_000,
        nanoseconds: 0,
    }
}

fn group(resource_id: String) -> impl Strategy<Value = SentGroup> {
    let dimensions = prop_oneof![
        4 => proptest::collection::vec((name(), text(1200)), 0..12),
        // Many dimensions of one name: the sinks' renaming must stay linear.
        1 => (0..3000usize, text(16)).prop_map(|(n, v)| vec![("d".to_owned(), v); n]),
        1 => (60..70usize).prop_map(|n| (0..n).map(|i| (format!("d{i}"), "v".into())).collect()),
    ];
    let metrics = prop_oneof![
        4 => proptest::collection::vec((name(), value(), any::<bool>()), 0..24),
        1 => (1000..1100usize).prop_map(|n| {
            (0..n)
                .map(|i| (format!("m{i}"), MetricValue::Unsigned(i as u64), false))
                .collect()
        }),
    ];
    (name(), 0..120u32, dimensions, metrics).prop_map(
        move |(group_type, interval, dims, metrics)| SentGroup {
            group_type,
            interval_seconds: interval,
            creation_timestamp: at(),
            schema_version: "0.2".into(),
            resource: convert::resource_to_wit(&Resource::named(&resource_id, "")),
            dimensions: dims
                .into_iter()
                .map(|(name, value)| Dimension { name, value })
                .collect(),
            metrics: metrics
                .into_iter()
                .map(|(name, value, counter)| Metric {
                    name,
                    value,
                    type_: if counter {
                        MetricType::Counter
                    } else {
                        MetricType::Gauge
                    },
                    creation_timestamp: at(),
                })
                .collect(),
        },
    )
}

fn polled() -> impl Strategy<Value = Arc<Resource>> {
    proptest::collection::vec(("[a-z]{1,8}", text(1000)), 0..20).prop_map(|metadata| {
        let mut r = Resource::named("sw1", "127.0.0.1");
        r.metadata = metadata;
        Arc::new(r)
    })
}

/// Groups as the host would hold them had it not checked them (as from
/// another agent over Kafka): each with the resource the plugin sent.
fn unchecked(groups: &[SentGroup]) -> Vec<MetricsGroup> {
    groups
        .iter()
        .map(|g| {
            let resource = Arc::new(convert::resource(g.resource.clone()));
            convert::metrics_group(g.clone(), &resource)
        })
        .collect()
}

/// Bytes every encoder writes for `groups`, summed per encoder: the
/// largest of them is what the bound is about. Prometheus is rendered in
/// both formats from a registry that took the groups (series per label
/// set, renaming of colliding labels, type conflicts and all).
fn encoded(groups: &[MetricsGroup]) -> u64 {
    let json: u64 = groups
        .iter()
        .map(|g| encode_metrics_group(g).len() as u64)
        .sum();
    let mut line = Vec::new();
    for g in groups {
        let _ = write_group(g, Precision::Nanoseconds, &mut line);
    }
    let registry = SeriesRegistry::new(PrometheusSettings::default());
    let shared: Vec<Arc<MetricsGroup>> = groups.iter().cloned().map(Arc::new).collect();
    let plugins: Vec<PluginName> = vec![Arc::from("fuzz"); shared.len()];
    registry.accept_from(&shared, &plugins);
    let mut pages = [0u64; 2];
    for (page, format) in pages.iter_mut().zip([Format::Text, Format::OpenMetrics]) {
        let mut doc = Exposition::new(format);
        registry.render(&mut doc);
        *page = doc.finish().len() as u64;
    }
    json.max(line.len() as u64).max(pages[0]).max(pages[1])
}

fn check_bound(label: &str, written: u64, charged: u64, groups: usize) {
    let allowed = RATIO * charged + PER_GROUP * groups as u64 + PER_PAGE;
    assert!(
        written <= allowed,
        "{label}: encoders wrote {written} bytes for {charged} charged ({groups} groups)"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        timeout: 20_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_output_is_checked_transformed_and_encoded_within_the_bound(
        polled in polled(),
        groups in proptest::collection::vec(group("sw1".into()), 0..12),
        max_output in prop_oneof![Just(4u64 << 20), Just(64u64 << 10)],
    ) {
        let limits = Limits { max_output, ..Limits::builtin_defaults() };
        let output = SentOutput::Metrics(groups.clone());
        let charged = charged_size(&output, Some(&polled));

        // Unchecked (as from another agent): still bounded by its charge.
        check_bound("unchecked", encoded(&unchecked(&groups)), charged_size(&output, None), groups.len());

        match vigil_host::sandbox::accept_output(output, &limits, Some(&polled)) {
            RunOutcome::Ok(RunOutput::Metrics(mut accepted)) => {
                prop_assert!(charged <= max_output);
                for g in &accepted {
                    // The host's record, shared, never a copy per group.
                    prop_assert!(Arc::ptr_eq(&g.resource, &polled));
                }
                let transforms = vec![RateTransform {
                    name: "rates".into(),
                    group_type: "interface".into(),
                    metrics: vec!["bits_in".into(), "x".into()],
                }];
                let transformer = RateTransformer::new(1000);
                transformer.apply("fuzz", &transforms, &mut accepted);
                transformer.apply("fuzz", &transforms, &mut accepted);
                check_bound("accepted", encoded(&accepted), charged, accepted.len());
            }
            RunOutcome::OutputRejected(_) => {}
            other => prop_assert!(false, "unexpected outcome {other}"),
        }
    }
}

/// The worst cases the module doc names, built outright rather than hoped
/// for from random search, and the ratio printed for the closing note.
#[test]
fn worst_constructed_amplification_is_bounded() {
    let limits = Limits::builtin_defaults();
    let mut fat = Resource::named("sw1", "127.0.0.1");
    fat.metadata = (0..16)
        .map(|i| (format!("k{i}"), "m".repeat(1000)))
        .collect();
    let fat = Arc::new(fat);
    let tiny = |metrics: usize, dims: usize, width: usize| SentGroup {
        group_type: "g".into(),
        interval_seconds: 60,
        creation_timestamp: at(),
        schema_version: "0.2".into(),
        resource: convert::resource_to_wit(&Resource::named("sw1", "")),
        dimensions: (0..dims)
            .map(|i| Dimension {
                name: format!("d{i}"),
                value: "\u{1}".repeat(width),
            })
            .collect(),
        metrics: (0..metrics)
            .map(|i| Metric {
                name: format!("m{i}"),
                value: MetricValue::Unsigned(1),
                type_: MetricType::Gauge,
                creation_timestamp: at(),
            })
            .collect(),
    };
    let cases: Vec<(&str, Vec<SentGroup>)> = vec![
        ("groups x fat resource", vec![tiny(1, 0, 0); 200]),
        ("labels x metrics", vec![tiny(400, 8, 1000)]),
        ("escaped labels", vec![tiny(1, 8, 1000); 40]),
    ];
    for (label, groups) in cases {
        let output = SentOutput::Metrics(groups);
        let sent = validate::encoded_size(&output);
        let charged = charged_size(&output, Some(&fat));
        match vigil_host::sandbox::accept_output(output, &limits, Some(&fat)) {
            RunOutcome::Ok(RunOutput::Metrics(accepted)) => {
                let written = encoded(&accepted);
                eprintln!(
                    "{label}: plugin sent {sent} B, charged {charged} B, encoders wrote {written} B: {:.1}x the input",
                    written as f64 / sent as f64
                );
                check_bound(label, written, charged, accepted.len());
            }
            other => eprintln!("{label}: {sent} B sent, {charged} B charged: {other}"),
        }
    }
}
