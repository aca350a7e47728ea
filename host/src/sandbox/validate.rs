//! Checks on what a plugin returns, before anything downstream sees it:
//! a size budget first (cheap, and it bounds everything after), then the
//! schema rules that keep sinks safe (names that are valid identifiers in
//! every backend, bounded values, finite numbers, and metrics only for the
//! resource that was polled).

use super::outcome::{RejectReason, RunOutput};
use crate::model::{
    Analysis, EnrichmentGroup, MetricValue, MetricsGroup, Resource, SCHEMA_VERSION,
};

pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_VALUE_BYTES: usize = 1024;
pub const MAX_ID_BYTES: usize = 256;

/// Approximate encoded size of an output, in bytes: string bytes plus a
/// fixed cost per number and per record.
pub fn encoded_size(output: &RunOutput) -> u64 {
    fn resource(r: &Resource) -> u64 {
        let strings = [
            &r.id,
            &r.site,
            &r.endpoint,
            &r.class,
            &r.subclass,
            &r.type_,
            &r.creation_plugin,
        ];
        strings.iter().map(|s| s.len() as u64).sum::<u64>()
            + r.metadata
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64 + 8)
                .sum::<u64>()
            + 32
    }
    fn metrics(g: &MetricsGroup) -> u64 {
        (g.group_type.len() + g.schema_version.len()) as u64
            + resource(&g.resource)
            + g.dimensions
                .iter()
                .map(|d| (d.name.len() + d.value.len()) as u64 + 8)
                .sum::<u64>()
            + g.metrics
                .iter()
                .map(|m| m.name.len() as u64 + 32)
                .sum::<u64>()
            + 32
    }
    fn enrichment(g: &EnrichmentGroup) -> u64 {
        g.namespace.len() as u64
            + g.sets
                .iter()
                .map(|s| {
                    s.key.len() as u64
                        + s.values
                            .iter()
                            .map(|(k, v)| (k.len() + v.len()) as u64 + 8)
                            .sum::<u64>()
                })
                .sum::<u64>()
            + 16
    }
    fn analysis(a: &Analysis) -> u64 {
        a.state.len() as u64
            + a.findings
                .iter()
                .map(|f| {
                    (f.fabric.len() + f.scope.len() + f.address.len() + f.summary.len()) as u64
                        + f.details
                            .iter()
                            .map(|(k, v)| (k.len() + v.len()) as u64 + 8)
                            .sum::<u64>()
                        + 32
                })
                .sum::<u64>()
    }
    match output {
        RunOutput::Resources(r) => r.iter().map(resource).sum(),
        RunOutput::Enrichments(e) => e.iter().map(enrichment).sum(),
        RunOutput::Metrics(m) => m.iter().map(metrics).sum(),
        RunOutput::Analysis(a) => analysis(a),
    }
}

/// `[a-z_][a-z0-9_]*`, at most [`MAX_NAME_BYTES`]: valid as an InfluxDB
/// key, a Prometheus name fragment and a JSON key without escaping.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_metadata_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_NAME_BYTES
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_ID_BYTES && !text.chars().any(char::is_control)
}

/// Checks `output` against the size limit and the schema. `polled` is the
/// resource the run was for (enrichment and polling).
pub fn check(
    output: &RunOutput,
    max_output: u64,
    polled: Option<&Resource>,
) -> Result<(), RejectReason> {
    let bytes = encoded_size(output);
    if bytes > max_output {
        return Err(RejectReason::TooLarge {
            bytes,
            limit: max_output,
        });
    }
    let invalid = |m: String| Err(RejectReason::Invalid(m));
    match output {
        RunOutput::Resources(resources) => {
            for (i, r) in resources.iter().enumerate() {
                if !valid_id(&r.id) {
                    return invalid(format!(
                        "resource {i}: id must be 1 to {MAX_ID_BYTES} bytes without control characters"
                    ));
                }
                for (field, value) in [
                    ("site", &r.site),
                    ("class", &r.class),
                    ("subclass", &r.subclass),
                    ("type", &r.type_),
                    ("endpoint", &r.endpoint),
                ] {
                    if value.len() > MAX_ID_BYTES || value.chars().any(char::is_control) {
                        return invalid(format!(
                            "resource {i} ({}): {field} must be at most {MAX_ID_BYTES} bytes without control characters",
                            r.id
                        ));
                    }
                }
                for (key, value) in &r.metadata {
                    if !valid_metadata_key(key) || value.len() > MAX_VALUE_BYTES {
                        return invalid(format!(
                            "resource {i} ({}): bad metadata entry {key:?}",
                            r.id
                        ));
                    }
                }
            }
        }
        RunOutput::Enrichments(groups) => {
            for (i, g) in groups.iter().enumerate() {
                if !valid_name(&g.namespace) {
                    return invalid(format!(
                        "enrichment group {i}: namespace {:?} is not [a-z_][a-z0-9_]*",
                        g.namespace
                    ));
                }
                if g.ttl_seconds == 0 {
                    return invalid(format!(
                        "enrichment group {i} ({}): ttl_seconds must be at least 1",
                        g.namespace
                    ));
                }
                for set in &g.sets {
                    if !valid_id(&set.key)
                        || set
                            .values
                            .iter()
                            .any(|(k, v)| !valid_metadata_key(k) || v.len() > MAX_VALUE_BYTES)
                    {
                        return invalid(format!(
                            "enrichment group {i} ({}): bad entry under key {:?}",
                            g.namespace, set.key
                        ));
                    }
                }
            }
        }
        RunOutput::Metrics(groups) => {
            for (i, g) in groups.iter().enumerate() {
                check_metrics_group(i, g, polled)?;
            }
        }
        RunOutput::Analysis(_) => {}
    }
    Ok(())
}

/// Replaces the resource in every metrics group with the host's own record
/// of the polled resource (plugins only supply its id, checked above).
pub fn adopt_resource(output: &mut RunOutput, polled: Option<&Resource>) {
    if let (RunOutput::Metrics(groups), Some(polled)) = (output, polled) {
        for group in groups {
            group.resource = polled.clone();
        }
    }
}

fn check_metrics_group(
    i: usize,
    g: &MetricsGroup,
    polled: Option<&Resource>,
) -> Result<(), RejectReason> {
    let invalid = |m: String| Err(RejectReason::Invalid(format!("metrics group {i}: {m}")));
    if !valid_name(&g.group_type) {
        return invalid(format!(
            "group type {:?} is not [a-z_][a-z0-9_]*",
            g.group_type
        ));
    }
    if g.schema_version != SCHEMA_VERSION {
        return invalid(format!(
            "schema version {:?}, expected {SCHEMA_VERSION:?}",
            g.schema_version
        ));
    }
    if g.interval_seconds == 0 {
        return invalid("interval_seconds must be at least 1".into());
    }
    if let Some(polled) = polled
        && g.resource.id != polled.id
    {
        return invalid(format!(
            "resource {:?} is not the resource being polled ({:?})",
            g.resource.id, polled.id
        ));
    }
    for d in &g.dimensions {
        if !valid_name(&d.name) {
            return invalid(format!(
                "dimension name {:?} is not [a-z_][a-z0-9_]*",
                d.name
            ));
        }
        if d.value.len() > MAX_VALUE_BYTES {
            return invalid(format!(
                "dimension {} value is {} bytes, limit {MAX_VALUE_BYTES}",
                d.name,
                d.value.len()
            ));
        }
    }
    if g.metrics.is_empty() {
        return invalid("no metrics".into());
    }
    for m in &g.metrics {
        if !valid_name(&m.name) {
            return invalid(format!("metric name {:?} is not [a-z_][a-z0-9_]*", m.name));
        }
        if let MetricValue::Float(x) = m.value
            && !x.is_finite()
        {
            return invalid(format!("metric {} is not a finite number", m.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Datetime, Dimension, Metric, MetricType};

    fn group(resource: &Resource, metric: &str, value: MetricValue) -> MetricsGroup {
        MetricsGroup {
            group_type: "interface".into(),
            interval_seconds: 60,
            creation_timestamp: Datetime {
                seconds: 1,
                nanoseconds: 0,
            },
            schema_version: "0.2".into(),
            resource: resource.clone(),
            dimensions: vec![Dimension {
                name: "interface_name".into(),
                value: "ge-0/0/0 \"uplink\"\n".into(),
            }],
            metrics: vec![Metric {
                name: metric.into(),
                value,
                type_: MetricType::Counter,
                creation_timestamp: Datetime {
                    seconds: 1,
                    nanoseconds: 0,
                },
            }],
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("bits_in"));
        assert!(valid_name("_x9"));
        assert!(!valid_name("9x"));
        assert!(!valid_name("Bits"));
        assert!(!valid_name("bits in"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(129)));
    }

    #[test]
    fn metrics_rules() {
        let r = Resource::named("r1", "127.0.0.1");
        let ok = RunOutput::Metrics(vec![group(&r, "bits_in", MetricValue::Unsigned(5))]);
        assert_eq!(check(&ok, 1 << 20, Some(&r)), Ok(()));
        // Hostile dimension values are data, not names: allowed.
        let bad = RunOutput::Metrics(vec![group(&r, "bits in", MetricValue::Unsigned(5))]);
        assert!(
            matches!(check(&bad, 1 << 20, Some(&r)), Err(RejectReason::Invalid(m)) if m.contains("bits in"))
        );
        let nan = RunOutput::Metrics(vec![group(&r, "x", MetricValue::Float(f64::NAN))]);
        assert!(matches!(
            check(&nan, 1 << 20, Some(&r)),
            Err(RejectReason::Invalid(_))
        ));
        let other = Resource::named("r2", "127.0.0.2");
        assert!(
            matches!(check(&ok, 1 << 20, Some(&other)), Err(RejectReason::Invalid(m)) if m.contains("not the resource"))
        );
        assert!(matches!(
            check(&ok, 10, Some(&r)),
            Err(RejectReason::TooLarge { limit: 10, .. })
        ));
    }
}
