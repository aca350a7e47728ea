//! Checks on what a plugin returns, before anything downstream sees it:
//! counts and a size budget first (cheap, and they bound everything
//! after), then the schema rules that keep sinks safe (names that are valid
//! identifiers in every backend, bounded values, finite numbers, and
//! metrics only for the resource that was polled).
//!
//! # Amplification
//!
//! The size budget (`[sandbox] max_output`) is charged with what the
//! *host* will hold and write for an output, not only with what the plugin
//! sent, so no input can make the host do much more work than it paid for:
//!
//! * every metrics group is charged the host's record of the polled
//!   resource. In memory the groups share that record (an `Arc`, see
//!   [`vigil_core::model`]), but Panoptes' JSON, which the Kafka bus and
//!   JSON-lines files carry, repeats the whole resource in every group: a
//!   resource with 16 KiB of metadata times 1,000 groups of 100 bytes
//!   encodes to 16 MB, and is refused at the default 4 MiB instead;
//! * every metric is charged the group's label set once more (its
//!   dimensions and the resource's six label fields), because the
//!   Prometheus exposition repeats the labels on every sample (one group
//!   with 1 MB of dimensions and 2,000 metrics would render 2 GB). An
//!   interface group of 22 metrics with ~400 bytes of labels is charged
//!   about 10 KB, so the default 4 MiB fits about 400 interfaces; the
//!   bundled interface plugin's ini asks for 32 MiB (3,000 interfaces);
//! * the counts that drive per-record work have ceilings of their own
//!   ([`MAX_DIMENSIONS`], [`MAX_METRICS`], [`MAX_LABEL_BYTES`],
//!   [`MAX_METADATA_ENTRIES`], [`MAX_METADATA_BYTES`], [`MAX_SETS`],
//!   [`MAX_SET_VALUES`] and the `max_groups` limit).
//!
//! Lifting is bounded separately, while it happens: the sandbox sets
//! wasmtime's per-call copy budget to `max_output`, so strings aliasing one
//! guest buffer cannot be multiplied into host memory before this check.
//! With both, host bytes per output stay within about 2x `max_output`
//! (the lifted copy plus the charged renderings); `tests/tests/hostile.rs`
//! and the accept-path property test measure it.

use std::collections::HashSet;

use super::outcome::{RejectReason, SentOutput};
use super::wit::{Analysis, EnrichmentGroup, MetricValue, MetricsGroup};
use crate::model::{Resource, SCHEMA_VERSION};

pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_VALUE_BYTES: usize = 1024;
pub const MAX_ID_BYTES: usize = 256;
/// Address-table snapshots one endpoints run may return (a device has a
/// few tables per routing or bridge context).
pub const MAX_ENDPOINT_TABLES: usize = 256;
/// An address-table entry's IP or MAC text.
pub const MAX_ENDPOINT_ADDRESS_BYTES: usize = 64;
/// Dimensions in one metrics group (Panoptes' interface group has 10).
pub const MAX_DIMENSIONS: usize = 64;
/// Metrics in one metrics group (Panoptes' interface group has 22).
pub const MAX_METRICS: usize = 1024;
/// Bytes of dimension names and values in one metrics group: the label set
/// every series of the group carries.
pub const MAX_LABEL_BYTES: usize = 8 << 10;
/// Metadata entries on one resource.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Bytes of metadata keys and values on one resource.
pub const MAX_METADATA_BYTES: usize = 16 << 10;
/// Bounds on enrichment groups, shared with the enrichment cache.
pub use vigil_enrichment::{MAX_SET_VALUES, MAX_SETS};
/// Group types, enrichment namespaces and metric-name prefixes vigil keeps
/// for its own series (`vigil_plugin_runs_total`...).
pub const RESERVED_PREFIX: &str = "vigil";

/// The fields of a resource, whether as a plugin sent it (WIT) or as the
/// host keeps it: what its size is charged on.
trait ResourceFields {
    /// id, site, endpoint, class, subclass, type, creation plugin.
    fn strings(&self) -> [&str; 7];
    fn metadata(&self) -> &[(String, String)];
}

macro_rules! resource_fields {
    ($type:ty) => {
        impl ResourceFields for $type {
            fn strings(&self) -> [&str; 7] {
                [
                    &self.id,
                    &self.site,
                    &self.endpoint,
                    &self.class,
                    &self.subclass,
                    &self.type_,
                    &self.creation_plugin,
                ]
            }
            fn metadata(&self) -> &[(String, String)] {
                &self.metadata
            }
        }
    };
}
resource_fields!(Resource);
resource_fields!(super::wit::Resource);

/// Bytes of a resource record: its seven strings and its metadata, plus a
/// fixed cost for the numbers.
fn resource_size(r: &impl ResourceFields) -> u64 {
    r.strings().iter().map(|s| s.len() as u64).sum::<u64>()
        + r.metadata()
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64 + 8)
            .sum::<u64>()
        + 32
}

fn label_bytes(g: &MetricsGroup) -> u64 {
    g.dimensions
        .iter()
        .map(|d| (d.name.len() + d.value.len()) as u64 + 8)
        .sum()
}

/// Approximate encoded size of an output as the plugin sent it, in bytes:
/// string bytes plus a fixed cost per number and per record (nothing
/// charged for what the host builds from it).
pub fn encoded_size(output: &SentOutput) -> u64 {
    match output {
        SentOutput::Metrics(groups) => groups
            .iter()
            .map(sent_group_size)
            .fold(0, u64::saturating_add),
        other => charged_size(other, None),
    }
}

/// One metrics group as the plugin sent it (see [`encoded_size`]).
fn sent_group_size(g: &MetricsGroup) -> u64 {
    ((g.group_type.len() + g.schema_version.len()) as u64)
        .saturating_add(resource_size(&g.resource))
        .saturating_add(label_bytes(g))
        .saturating_add(
            g.metrics
                .iter()
                .map(|m| m.name.len() as u64 + 32)
                .fold(0u64, u64::saturating_add),
        )
        .saturating_add(32)
}

/// The resource fields every Prometheus sample carries as labels (all but
/// the creation plugin).
fn resource_label_bytes(r: &impl ResourceFields) -> u64 {
    r.strings()[..6].iter().map(|s| s.len() as u64 + 24).sum()
}

/// What the host will hold and write for `output`: [`encoded_size`] plus,
/// for metrics, the adopted resource per group and the label set (the
/// group's dimensions and the resource's fields) per metric (see the
/// module doc). Saturating: a hostile count cannot wrap.
pub fn charged_size(output: &SentOutput, polled: Option<&Resource>) -> u64 {
    let adopted = polled.map_or(0, resource_size);
    let resource_labels = polled.map(resource_label_bytes);
    let metrics = |g: &MetricsGroup| -> u64 {
        let labels =
            label_bytes(g) + resource_labels.unwrap_or_else(|| resource_label_bytes(&g.resource));
        sent_group_size(g)
            .saturating_add(adopted)
            .saturating_add((g.metrics.len() as u64).saturating_mul(labels))
    };
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
        SentOutput::Resources(r) => r.iter().map(resource_size).fold(0, u64::saturating_add),
        SentOutput::Enrichments(e) => e.iter().map(enrichment).fold(0, u64::saturating_add),
        SentOutput::Metrics(m) => m.iter().map(metrics).fold(0, u64::saturating_add),
        SentOutput::Analysis(a) => analysis(a),
        SentOutput::Endpoints(t) => t.iter().map(endpoint_table).fold(0, u64::saturating_add),
    }
}

/// One address-table snapshot as sent: its strings plus a fixed cost per
/// entry (the differ keeps about this much per row between runs).
fn endpoint_table(t: &vigil_wit::wit_endpoints::TableSnapshot) -> u64 {
    ((t.source.len() + t.context.len()) as u64 + 32).saturating_add(
        t.entries
            .iter()
            .map(|e| (e.address.len() + e.mac.len() + e.interface.len()) as u64 + 32)
            .fold(0, u64::saturating_add),
    )
}

/// Whether `name` is one vigil keeps for itself (`vigil`, `vigil_*`).
pub fn reserved_name(name: &str) -> bool {
    name == RESERVED_PREFIX
        || name
            .strip_prefix(RESERVED_PREFIX)
            .is_some_and(|rest| rest.starts_with('_'))
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
    output: &SentOutput,
    limits: &super::limits::Limits,
    polled: Option<&Resource>,
) -> Result<(), RejectReason> {
    let records = match output {
        SentOutput::Resources(r) => r.len(),
        SentOutput::Enrichments(e) => e.len(),
        SentOutput::Metrics(m) => m.len(),
        SentOutput::Analysis(a) => a.findings.len(),
        SentOutput::Endpoints(t) => t.len(),
    } as u64;
    if let SentOutput::Endpoints(tables) = output {
        let entries = tables
            .iter()
            .map(|t| t.entries.len() as u64)
            .fold(0, u64::saturating_add);
        if entries > limits.max_endpoint_entries {
            return Err(RejectReason::Invalid(format!(
                "{entries} address-table entries returned, limit {} ([sandbox] max_endpoint_entries)",
                limits.max_endpoint_entries
            )));
        }
        if tables.len() > MAX_ENDPOINT_TABLES {
            return Err(RejectReason::Invalid(format!(
                "{} address-table snapshots returned, at most {MAX_ENDPOINT_TABLES}",
                tables.len()
            )));
        }
    }
    if records > limits.max_groups {
        return Err(RejectReason::Invalid(format!(
            "{records} records returned, limit {} ([sandbox] max_groups)",
            limits.max_groups
        )));
    }
    let bytes = charged_size(output, polled);
    if bytes > limits.max_output {
        return Err(RejectReason::TooLarge {
            bytes,
            limit: limits.max_output,
        });
    }
    let invalid = |m: String| Err(RejectReason::Invalid(m));
    match output {
        SentOutput::Resources(resources) => {
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
                if r.metadata.len() > MAX_METADATA_ENTRIES {
                    return invalid(format!(
                        "resource {i} ({}): {} metadata entries, limit {MAX_METADATA_ENTRIES}",
                        r.id,
                        r.metadata.len()
                    ));
                }
                let mut metadata_bytes = 0usize;
                let mut keys = HashSet::with_capacity(r.metadata.len());
                for (key, value) in &r.metadata {
                    if !valid_metadata_key(key) || value.len() > MAX_VALUE_BYTES {
                        return invalid(format!(
                            "resource {i} ({}): bad metadata entry {key:?}",
                            r.id
                        ));
                    }
                    if !keys.insert(key.as_str()) {
                        return invalid(format!(
                            "resource {i} ({}): metadata key {key:?} appears twice",
                            r.id
                        ));
                    }
                    metadata_bytes += key.len() + value.len();
                }
                if metadata_bytes > MAX_METADATA_BYTES {
                    return invalid(format!(
                        "resource {i} ({}): {metadata_bytes} bytes of metadata, limit {MAX_METADATA_BYTES}",
                        r.id
                    ));
                }
            }
        }
        SentOutput::Enrichments(groups) => {
            for (i, g) in groups.iter().enumerate() {
                if !valid_name(&g.namespace) {
                    return invalid(format!(
                        "enrichment group {i}: namespace {:?} is not [a-z_][a-z0-9_]*",
                        g.namespace
                    ));
                }
                if reserved_name(&g.namespace) {
                    return invalid(format!(
                        "enrichment group {i}: namespace {:?} is reserved for vigil",
                        g.namespace
                    ));
                }
                if g.sets.len() > MAX_SETS {
                    return invalid(format!(
                        "enrichment group {i} ({}): {} sets, limit {MAX_SETS}",
                        g.namespace,
                        g.sets.len()
                    ));
                }
                if g.ttl_seconds == 0 {
                    return invalid(format!(
                        "enrichment group {i} ({}): ttl_seconds must be at least 1",
                        g.namespace
                    ));
                }
                for set in &g.sets {
                    if set.values.len() > MAX_SET_VALUES {
                        return invalid(format!(
                            "enrichment group {i} ({}): {} values under key {:?}, limit {MAX_SET_VALUES}",
                            g.namespace,
                            set.values.len(),
                            set.key
                        ));
                    }
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
        SentOutput::Metrics(groups) => {
            for (i, g) in groups.iter().enumerate() {
                check_metrics_group(i, g, polled)?;
            }
        }
        SentOutput::Analysis(_) => {}
        SentOutput::Endpoints(tables) => {
            for (i, t) in tables.iter().enumerate() {
                if t.source.len() > MAX_NAME_BYTES || t.context.len() > MAX_NAME_BYTES {
                    return invalid(format!(
                        "address table {i}: source and context are at most {MAX_NAME_BYTES} bytes"
                    ));
                }
                for (j, e) in t.entries.iter().enumerate() {
                    if e.address.len() > MAX_ENDPOINT_ADDRESS_BYTES
                        || e.mac.len() > MAX_ENDPOINT_ADDRESS_BYTES
                        || e.interface.len() > MAX_NAME_BYTES
                    {
                        return invalid(format!(
                            "address table {i} entry {j}: addresses are at most {MAX_ENDPOINT_ADDRESS_BYTES} bytes, interface names {MAX_NAME_BYTES}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
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
    if reserved_name(&g.group_type) {
        return invalid(format!(
            "group type {:?} is reserved for vigil's own series",
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
    if g.dimensions.len() > MAX_DIMENSIONS {
        return invalid(format!(
            "{} dimensions, limit {MAX_DIMENSIONS}",
            g.dimensions.len()
        ));
    }
    if g.metrics.len() > MAX_METRICS {
        return invalid(format!("{} metrics, limit {MAX_METRICS}", g.metrics.len()));
    }
    let labels = label_bytes(g);
    if labels > MAX_LABEL_BYTES as u64 {
        return invalid(format!(
            "{labels} bytes of dimensions, limit {MAX_LABEL_BYTES}"
        ));
    }
    let mut names = HashSet::with_capacity(g.dimensions.len());
    for d in &g.dimensions {
        if !names.insert(d.name.as_str()) {
            return invalid(format!("dimension {:?} appears twice", d.name));
        }
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
    let mut metric_names = HashSet::with_capacity(g.metrics.len());
    for m in &g.metrics {
        if !valid_name(&m.name) {
            return invalid(format!("metric name {:?} is not [a-z_][a-z0-9_]*", m.name));
        }
        if !metric_names.insert(m.name.as_str()) {
            return invalid(format!("metric {:?} appears twice", m.name));
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
    use crate::sandbox::convert::resource_to_wit;
    use crate::sandbox::limits::Limits;
    use crate::sandbox::wit::{Datetime, Dimension, EnrichmentSet, Metric, MetricType};

    fn mib() -> Limits {
        Limits {
            max_output: 1 << 20,
            ..Limits::builtin_defaults()
        }
    }

    #[test]
    fn address_tables_are_bounded() {
        use vigil_wit::wit_endpoints::{EntryState, TableEntry, TableKind, TableSnapshot};
        let entry = |mac: &str| TableEntry {
            address: String::new(),
            mac: mac.into(),
            if_index: 1,
            interface: "swp1".into(),
            vlan: 10,
            state: EntryState::Dynamic,
        };
        let table = |entries: Vec<TableEntry>| TableSnapshot {
            kind: TableKind::Forwarding,
            source: "dot1qTpFdbTable".into(),
            context: String::new(),
            complete: true,
            entries,
        };
        let limits = Limits {
            max_endpoint_entries: 3,
            ..mib()
        };
        let ok = SentOutput::Endpoints(vec![table(vec![entry("02:00:00:00:00:01"); 3])]);
        assert!(check(&ok, &limits, None).is_ok());
        let many = SentOutput::Endpoints(vec![
            table(vec![entry("02:00:00:00:00:01"); 2]),
            table(vec![entry("02:00:00:00:00:02"); 2]),
        ]);
        assert!(rejected(&many, &limits, None).contains("max_endpoint_entries"));
        let long = SentOutput::Endpoints(vec![table(vec![entry(&"a".repeat(65))])]);
        assert!(rejected(&long, &limits, None).contains("at most 64 bytes"));
        let tables = SentOutput::Endpoints(vec![table(Vec::new()); MAX_ENDPOINT_TABLES + 1]);
        assert!(rejected(&tables, &limits, None).contains("snapshots"));
        // Every byte sent is charged.
        let big = SentOutput::Endpoints(vec![table(vec![entry("02:00:00:00:00:01"); 3])]);
        assert!(encoded_size(&big) > 3 * 17);
    }

    fn rejected(output: &SentOutput, limits: &Limits, polled: Option<&Resource>) -> String {
        match check(output, limits, polled) {
            Err(RejectReason::Invalid(m)) => m,
            other => panic!("expected an invalid output, got {other:?}"),
        }
    }

    fn group(resource: &Resource, metric: &str, value: MetricValue) -> MetricsGroup {
        MetricsGroup {
            group_type: "interface".into(),
            interval_seconds: 60,
            creation_timestamp: Datetime {
                seconds: 1,
                nanoseconds: 0,
            },
            schema_version: "0.2".into(),
            resource: resource_to_wit(resource),
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
        let ok = SentOutput::Metrics(vec![group(&r, "bits_in", MetricValue::Unsigned(5))]);
        assert_eq!(check(&ok, &mib(), Some(&r)), Ok(()));
        // Hostile dimension values are data, not names: allowed.
        let bad = SentOutput::Metrics(vec![group(&r, "bits in", MetricValue::Unsigned(5))]);
        assert!(
            matches!(check(&bad, &mib(), Some(&r)), Err(RejectReason::Invalid(m)) if m.contains("bits in"))
        );
        let nan = SentOutput::Metrics(vec![group(&r, "x", MetricValue::Float(f64::NAN))]);
        assert!(matches!(
            check(&nan, &mib(), Some(&r)),
            Err(RejectReason::Invalid(_))
        ));
        let other = Resource::named("r2", "127.0.0.2");
        assert!(
            matches!(check(&ok, &mib(), Some(&other)), Err(RejectReason::Invalid(m)) if m.contains("not the resource"))
        );
        assert!(matches!(
            check(
                &ok,
                &Limits {
                    max_output: 10,
                    ..mib()
                },
                Some(&r)
            ),
            Err(RejectReason::TooLarge { limit: 10, .. })
        ));
    }

    #[test]
    fn counts_have_ceilings() {
        let r = Resource::named("r1", "127.0.0.1");
        let one = group(&r, "bits_in", MetricValue::Unsigned(5));
        let limits = Limits {
            max_groups: 3,
            ..mib()
        };
        let four = SentOutput::Metrics(vec![one.clone(); 4]);
        assert!(rejected(&four, &limits, Some(&r)).contains("4 records returned, limit 3"));
        let three = SentOutput::Metrics(vec![one.clone(); 3]);
        assert_eq!(check(&three, &limits, Some(&r)), Ok(()));

        let mut wide = one.clone();
        wide.dimensions = (0..=MAX_DIMENSIONS)
            .map(|i| Dimension {
                name: format!("d{i}"),
                value: "v".into(),
            })
            .collect();
        let m = rejected(&SentOutput::Metrics(vec![wide]), &mib(), Some(&r));
        assert!(m.contains("65 dimensions, limit 64"), "{m}");

        let mut twice = one.clone();
        twice.dimensions.push(twice.dimensions[0].clone());
        let m = rejected(&SentOutput::Metrics(vec![twice]), &mib(), Some(&r));
        assert!(m.contains("appears twice"), "{m}");

        let mut tall = one.clone();
        tall.metrics = (0..=MAX_METRICS)
            .map(|i| Metric {
                name: format!("m{i}"),
                ..one.metrics[0].clone()
            })
            .collect();
        let m = rejected(&SentOutput::Metrics(vec![tall]), &mib(), Some(&r));
        assert!(m.contains("1025 metrics, limit 1024"), "{m}");

        let mut same = one.clone();
        same.metrics.push(same.metrics[0].clone());
        let m = rejected(&SentOutput::Metrics(vec![same]), &mib(), Some(&r));
        assert!(m.contains("metric \"bits_in\" appears twice"), "{m}");

        let mut heavy = one.clone();
        heavy.dimensions = (0..9)
            .map(|i| Dimension {
                name: format!("d{i}"),
                value: "v".repeat(1000),
            })
            .collect();
        let m = rejected(&SentOutput::Metrics(vec![heavy]), &mib(), Some(&r));
        assert!(m.contains("bytes of dimensions, limit 8192"), "{m}");
    }

    #[test]
    fn vigil_names_are_reserved() {
        let r = Resource::named("r1", "127.0.0.1");
        for name in ["vigil", "vigil_plugin"] {
            let mut g = group(&r, "runs_total", MetricValue::Unsigned(1));
            g.group_type = name.into();
            let m = rejected(&SentOutput::Metrics(vec![g]), &mib(), Some(&r));
            assert!(m.contains("reserved"), "{m}");
        }
        // Only the prefix word is reserved.
        let mut g = group(&r, "x", MetricValue::Unsigned(1));
        g.group_type = "vigilance".into();
        assert_eq!(
            check(&SentOutput::Metrics(vec![g]), &mib(), Some(&r)),
            Ok(())
        );
        let enrichment = SentOutput::Enrichments(vec![EnrichmentGroup {
            namespace: "vigil_cache".into(),
            ttl_seconds: 60,
            sets: Vec::new(),
        }]);
        assert!(rejected(&enrichment, &mib(), Some(&r)).contains("reserved"));
    }

    #[test]
    fn resource_metadata_is_bounded() {
        let mut r = Resource::named("r1", "127.0.0.1");
        r.metadata = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let m = rejected(
            &SentOutput::Resources(vec![resource_to_wit(&r)]),
            &mib(),
            None,
        );
        assert!(m.contains("65 metadata entries, limit 64"), "{m}");
        r.metadata = (0..20)
            .map(|i| (format!("k{i}"), "v".repeat(1000)))
            .collect();
        let m = rejected(
            &SentOutput::Resources(vec![resource_to_wit(&r)]),
            &mib(),
            None,
        );
        assert!(m.contains("bytes of metadata, limit 16384"), "{m}");
        r.metadata = vec![("k".into(), "a".into()), ("k".into(), "b".into())];
        let m = rejected(
            &SentOutput::Resources(vec![resource_to_wit(&r)]),
            &mib(),
            None,
        );
        assert!(m.contains("appears twice"), "{m}");
    }

    #[test]
    fn enrichment_sets_are_bounded() {
        let r = Resource::named("r1", "127.0.0.1");
        let set = EnrichmentSet {
            key: "1".into(),
            values: (0..=MAX_SET_VALUES)
                .map(|i| (format!("k{i}"), "v".into()))
                .collect(),
        };
        let output = SentOutput::Enrichments(vec![EnrichmentGroup {
            namespace: "interface".into(),
            ttl_seconds: 60,
            sets: vec![set],
        }]);
        let m = rejected(&output, &mib(), Some(&r));
        assert!(m.contains("257 values under key \"1\", limit 256"), "{m}");
    }

    /// Every group's Panoptes encoding carries the host's record of the
    /// polled resource, and every sample repeats the group's labels: both
    /// are charged before anything is built.
    #[test]
    fn the_budget_is_charged_with_what_the_host_builds() {
        let mut polled = Resource::named("r1", "127.0.0.1");
        polled.metadata = (0..16)
            .map(|i| (format!("k{i}"), "v".repeat(1000)))
            .collect();
        let tiny = Resource::named("r1", "");
        let one = group(&tiny, "x", MetricValue::Unsigned(1));
        let output = SentOutput::Metrics(vec![one.clone(); 1000]);
        let sent = encoded_size(&output);
        let charged = charged_size(&output, Some(&polled));
        assert!(sent < 200_000, "sent {sent}");
        assert!(charged > 16_000_000, "charged {charged}");
        let limits = Limits {
            max_output: 4 << 20,
            ..mib()
        };
        assert!(matches!(
            check(&output, &limits, Some(&polled)),
            Err(RejectReason::TooLarge { bytes, limit }) if bytes == charged && limit == 4 << 20
        ));

        let mut labelled = one.clone();
        labelled.dimensions = (0..7)
            .map(|i| Dimension {
                name: format!("d{i}"),
                value: "v".repeat(1000),
            })
            .collect();
        labelled.metrics = (0..1000)
            .map(|i| Metric {
                name: format!("m{i}"),
                ..one.metrics[0].clone()
            })
            .collect();
        let output = SentOutput::Metrics(vec![labelled]);
        let labels = 7 * (2 + 1000 + 8);
        assert!(charged_size(&output, None) >= 1000 * labels);
    }
}
