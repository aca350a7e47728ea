//! Panoptes' metrics-group JSON (schema v0.2): the one encoder every JSON
//! output uses, so files, buses and consumers see the same shape.

use std::io::Write;

use serde::Serialize;

use crate::model::{Datetime, MetricType, MetricValue, MetricsGroup};

fn seconds(at: &Datetime) -> f64 {
    at.seconds as f64 + f64::from(at.nanoseconds) / 1e9
}

#[derive(Serialize)]
struct Group<'a> {
    metrics_group_type: &'a str,
    metrics_group_interval: u32,
    metrics_group_creation_timestamp: f64,
    metrics_group_schema_version: &'a str,
    resource: ResourceJson<'a>,
    dimensions: Vec<DimensionJson<'a>>,
    metrics: Vec<MetricJson<'a>>,
}

#[derive(Serialize)]
struct ResourceJson<'a> {
    resource_site: &'a str,
    resource_class: &'a str,
    resource_subclass: &'a str,
    resource_type: &'a str,
    resource_id: &'a str,
    resource_endpoint: &'a str,
    resource_metadata: std::collections::BTreeMap<&'a str, &'a str>,
    resource_creation_timestamp: f64,
    resource_plugin: &'a str,
    resource_ttl: String,
}

#[derive(Serialize)]
struct DimensionJson<'a> {
    dimension_name: &'a str,
    dimension_value: &'a str,
}

#[derive(Serialize)]
struct MetricJson<'a> {
    metric_name: &'a str,
    metric_value: Number,
    metric_type: &'static str,
    metric_creation_timestamp: f64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Number {
    Signed(i64),
    Unsigned(u64),
    Float(f64),
}

/// Writes `group` as one line of JSON (with the trailing newline).
pub fn write_json_line(group: &MetricsGroup, out: &mut impl Write) -> std::io::Result<()> {
    let r = &group.resource;
    let json = Group {
        metrics_group_type: &group.group_type,
        metrics_group_interval: group.interval_seconds,
        metrics_group_creation_timestamp: seconds(&group.creation_timestamp),
        metrics_group_schema_version: &group.schema_version,
        resource: ResourceJson {
            resource_site: &r.site,
            resource_class: &r.class,
            resource_subclass: &r.subclass,
            resource_type: &r.type_,
            resource_id: &r.id,
            resource_endpoint: &r.endpoint,
            resource_metadata: r
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            resource_creation_timestamp: seconds(&r.creation_timestamp),
            resource_plugin: &r.creation_plugin,
            resource_ttl: r.ttl_seconds.to_string(),
        },
        dimensions: group
            .dimensions
            .iter()
            .map(|d| DimensionJson {
                dimension_name: &d.name,
                dimension_value: &d.value,
            })
            .collect(),
        metrics: group
            .metrics
            .iter()
            .map(|m| MetricJson {
                metric_name: &m.name,
                metric_value: match m.value {
                    MetricValue::Signed(v) => Number::Signed(v),
                    MetricValue::Unsigned(v) => Number::Unsigned(v),
                    MetricValue::Float(v) => Number::Float(v),
                },
                metric_type: match m.type_ {
                    MetricType::Counter => "counter",
                    MetricType::Gauge => "gauge",
                },
                metric_creation_timestamp: seconds(&m.creation_timestamp),
            })
            .collect(),
    };
    serde_json::to_writer(&mut *out, &json)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dimension, Metric, Resource};

    #[test]
    fn panoptes_field_names_and_exact_counters() {
        let mut resource = Resource::named("sw1", "127.0.0.1");
        resource.metadata = vec![("model".into(), "mx960".into())];
        let at = Datetime {
            seconds: 1_700_000_000,
            nanoseconds: 500_000_000,
        };
        let group = MetricsGroup {
            group_type: "interface".into(),
            interval_seconds: 60,
            creation_timestamp: at,
            schema_version: "0.2".into(),
            resource,
            dimensions: vec![Dimension {
                name: "interface_name".into(),
                value: "ge-0/0/0 \"up\"\n".into(),
            }],
            metrics: vec![Metric {
                name: "bits_in".into(),
                value: MetricValue::Unsigned(u64::MAX),
                type_: MetricType::Counter,
                creation_timestamp: at,
            }],
        };
        let mut out = Vec::new();
        write_json_line(&group, &mut out).expect("encode");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "one line: {text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["metrics_group_type"], "interface");
        assert_eq!(value["metrics_group_schema_version"], "0.2");
        assert_eq!(value["metrics_group_creation_timestamp"], 1_700_000_000.5);
        assert_eq!(value["resource"]["resource_id"], "sw1");
        assert_eq!(value["resource"]["resource_metadata"]["model"], "mx960");
        assert_eq!(
            value["dimensions"][0]["dimension_value"],
            "ge-0/0/0 \"up\"\n"
        );
        assert_eq!(value["metrics"][0]["metric_value"].as_u64(), Some(u64::MAX));
        assert_eq!(value["metrics"][0]["metric_type"], "counter");
    }
}
