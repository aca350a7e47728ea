//! Panoptes' metrics-group JSON (schema v0.2): the one encoder every JSON
//! output uses, so files, buses and consumers see the same shape; the
//! resource JSON of Panoptes' resources topic; and the decoders that read
//! both back (for the consumers of the Kafka bus).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource};

/// A decoded time, checked to be one since the epoch.
fn datetime(seconds: f64, what: &str) -> Result<Datetime, DecodeError> {
    if !(0.0..1.8e19).contains(&seconds) {
        return Err(DecodeError(format!(
            "{what} {seconds} is not a time since the epoch"
        )));
    }
    Ok(Datetime::from_seconds(seconds))
}

/// Why bytes are not Panoptes JSON of the expected record; says which field
/// and value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

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

fn resource_json(r: &Resource) -> ResourceJson<'_> {
    ResourceJson {
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
        resource_creation_timestamp: r.creation_timestamp.as_seconds(),
        resource_plugin: &r.creation_plugin,
        resource_ttl: r.ttl_seconds.to_string(),
    }
}

fn group_json(group: &MetricsGroup) -> Group<'_> {
    Group {
        metrics_group_type: &group.group_type,
        metrics_group_interval: group.interval_seconds,
        metrics_group_creation_timestamp: group.creation_timestamp.as_seconds(),
        metrics_group_schema_version: &group.schema_version,
        resource: resource_json(&group.resource),
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
                metric_creation_timestamp: m.creation_timestamp.as_seconds(),
            })
            .collect(),
    }
}

/// Writes `group` as one line of JSON (with the trailing newline).
pub fn write_json_line(group: &MetricsGroup, out: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &group_json(group))?;
    out.write_all(b"\n")
}

/// `group` as Panoptes JSON, without a newline: the payload of a metrics
/// message on the bus (the same bytes [`write_json_line`] writes before its
/// newline).
pub fn encode_metrics_group(group: &MetricsGroup) -> Vec<u8> {
    // Serialising borrowed strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&group_json(group)).unwrap_or_default()
}

/// `resource` as the JSON object of Panoptes' resource schema
/// (`resource_id`, `resource_site`, ..., `resource_ttl` as a string): the
/// payload of a message on the resources topic, and the `resource` member
/// of every metrics group.
pub fn encode_resource(resource: &Resource) -> Vec<u8> {
    serde_json::to_vec(&resource_json(resource)).unwrap_or_default()
}

#[derive(Deserialize)]
struct GroupIn {
    metrics_group_type: String,
    metrics_group_interval: u32,
    metrics_group_creation_timestamp: f64,
    metrics_group_schema_version: String,
    resource: ResourceIn,
    #[serde(default)]
    dimensions: Vec<DimensionIn>,
    metrics: Vec<MetricIn>,
}

#[derive(Deserialize)]
struct ResourceIn {
    resource_site: String,
    resource_class: String,
    resource_subclass: String,
    resource_type: String,
    resource_id: String,
    resource_endpoint: String,
    #[serde(default)]
    resource_metadata: BTreeMap<String, serde_json::Value>,
    resource_creation_timestamp: f64,
    #[serde(default)]
    resource_plugin: String,
    /// A string of seconds in Panoptes (and in vigil's encoder); a number
    /// is accepted too.
    #[serde(default)]
    resource_ttl: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct DimensionIn {
    dimension_name: String,
    dimension_value: String,
}

#[derive(Deserialize)]
struct MetricIn {
    metric_name: String,
    /// `null` is what JSON makes of a NaN or infinite float.
    metric_value: Option<serde_json::Number>,
    metric_type: String,
    metric_creation_timestamp: f64,
}

impl ResourceIn {
    fn into_resource(self) -> Result<Resource, DecodeError> {
        let ttl_seconds = match &self.resource_ttl {
            None | Some(serde_json::Value::Null) => 0,
            Some(serde_json::Value::String(text)) if text.is_empty() => 0,
            Some(serde_json::Value::String(text)) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| DecodeError(format!("resource_ttl {text:?} is not whole seconds")))?,
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| DecodeError(format!("resource_ttl {n} is not whole seconds")))?,
            Some(other) => {
                return Err(DecodeError(format!(
                    "resource_ttl {other} is not whole seconds"
                )));
            }
        };
        let metadata = self
            .resource_metadata
            .into_iter()
            .map(|(key, value)| {
                let value = match value {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                };
                (key, value)
            })
            .collect();
        Ok(Resource {
            id: self.resource_id,
            site: self.resource_site,
            endpoint: self.resource_endpoint,
            class: self.resource_class,
            subclass: self.resource_subclass,
            type_: self.resource_type,
            creation_plugin: self.resource_plugin,
            creation_timestamp: datetime(
                self.resource_creation_timestamp,
                "resource_creation_timestamp",
            )?,
            ttl_seconds,
            metadata,
        })
    }
}

impl MetricIn {
    fn into_metric(self) -> Result<Metric, DecodeError> {
        let type_ = match self.metric_type.as_str() {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            other => {
                return Err(DecodeError(format!(
                    "metric {:?} has metric_type {other:?} (not counter or gauge)",
                    self.metric_name
                )));
            }
        };
        // JSON does not say which integer variant a value was. Counters
        // come back unsigned (exact up to u64::MAX), gauges signed when they
        // fit, so a series keeps one variant whatever its values; a value
        // with a fraction or exponent is a float.
        let value = match self.metric_value {
            None => MetricValue::Float(f64::NAN),
            Some(n) => match (type_, n.as_u64(), n.as_i64()) {
                (MetricType::Counter, Some(u), _) => MetricValue::Unsigned(u),
                (_, _, Some(i)) => MetricValue::Signed(i),
                (_, Some(u), None) => MetricValue::Unsigned(u),
                (_, None, None) => MetricValue::Float(n.as_f64().ok_or_else(|| {
                    DecodeError(format!("metric {:?} has value {n}", self.metric_name))
                })?),
            },
        };
        Ok(Metric {
            creation_timestamp: datetime(
                self.metric_creation_timestamp,
                "metric_creation_timestamp",
            )?,
            name: self.metric_name,
            value,
            type_,
        })
    }
}

/// Reads a metrics group written by [`encode_metrics_group`] (or
/// [`write_json_line`], or Panoptes). Counters stay exact `u64`s; JSON does
/// not keep which integer variant a value was, so non-negative counters
/// decode as unsigned and gauges as signed (unsigned above `i64::MAX`).
/// Re-encoding a decoded group gives the same JSON.
pub fn decode_metrics_group(bytes: &[u8]) -> Result<MetricsGroup, DecodeError> {
    let group: GroupIn = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError(format!("not a metrics group in Panoptes JSON: {e}")))?;
    Ok(MetricsGroup {
        creation_timestamp: datetime(
            group.metrics_group_creation_timestamp,
            "metrics_group_creation_timestamp",
        )?,
        group_type: group.metrics_group_type,
        interval_seconds: group.metrics_group_interval,
        schema_version: group.metrics_group_schema_version,
        resource: Arc::new(group.resource.into_resource()?),
        dimensions: group
            .dimensions
            .into_iter()
            .map(|d| Dimension {
                name: d.dimension_name,
                value: d.dimension_value,
            })
            .collect(),
        metrics: group
            .metrics
            .into_iter()
            .map(MetricIn::into_metric)
            .collect::<Result<_, DecodeError>>()?,
    })
}

/// Reads a resource written by [`encode_resource`] (or Panoptes).
/// Metadata comes back sorted by key (the JSON object is).
pub fn decode_resource(bytes: &[u8]) -> Result<Resource, DecodeError> {
    let resource: ResourceIn = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError(format!("not a resource in Panoptes JSON: {e}")))?;
    resource.into_resource()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            resource: Arc::new(resource),
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

    fn at(seconds: u64, nanoseconds: u32) -> Datetime {
        Datetime {
            seconds,
            nanoseconds,
        }
    }

    fn metric(name: &str, value: MetricValue, type_: MetricType) -> Metric {
        Metric {
            name: name.into(),
            value,
            type_,
            creation_timestamp: at(1_700_000_000, 750_000_000),
        }
    }

    fn sample_group() -> MetricsGroup {
        let mut resource = Resource::named("sw1.example", "192.0.2.1");
        resource.site = "dc1".into();
        resource.class = "network".into();
        resource.subclass = "switch".into();
        resource.type_ = "juniper".into();
        resource.creation_plugin = "inventory".into();
        resource.creation_timestamp = at(1_699_999_000, 250_000_000);
        resource.ttl_seconds = 900;
        // Sorted by key: the JSON object is, so the decoded list is too.
        resource.metadata = vec![
            ("model".into(), "mx960".into()),
            ("os_version".into(), "21.2R3".into()),
        ];
        MetricsGroup {
            group_type: "interface".into(),
            interval_seconds: 60,
            // Panoptes' timestamps are float seconds: about 0.24 µs apart
            // at this epoch. These fractions are exact; others come back
            // within that step (and re-encode the same, see below).
            creation_timestamp: at(1_700_000_000, 500_000_000),
            schema_version: "0.2".into(),
            resource: Arc::new(resource),
            dimensions: vec![
                Dimension {
                    name: "interface_name".into(),
                    value: "ge-0/0/0 \"up\"\n".into(),
                },
                Dimension {
                    name: "alias".into(),
                    value: "uplink ✓".into(),
                },
            ],
            metrics: vec![
                metric(
                    "bits_in",
                    MetricValue::Unsigned((1 << 53) + 1),
                    MetricType::Counter,
                ),
                metric(
                    "bits_out",
                    MetricValue::Unsigned(u64::MAX),
                    MetricType::Counter,
                ),
                metric("errors", MetricValue::Unsigned(0), MetricType::Counter),
                metric("temperature", MetricValue::Signed(-5), MetricType::Gauge),
                metric("oper_status", MetricValue::Signed(1), MetricType::Gauge),
                metric("utilisation", MetricValue::Float(0.25), MetricType::Gauge),
                metric("speed_ratio", MetricValue::Float(1.0), MetricType::Gauge),
                metric(
                    "huge_gauge",
                    MetricValue::Unsigned(u64::MAX - 1),
                    MetricType::Gauge,
                ),
            ],
        }
    }

    #[test]
    fn metrics_groups_round_trip_exactly() {
        let group = sample_group();
        let bytes = encode_metrics_group(&group);
        let decoded = decode_metrics_group(&bytes).expect("decodes");
        assert_eq!(decoded, group);
        assert_eq!(encode_metrics_group(&decoded), bytes);
        // 2^53 + 1 has no f64: it must not have gone through one.
        assert_eq!(
            decoded.metrics[0].value,
            MetricValue::Unsigned((1 << 53) + 1)
        );

        // The JSON line is the same bytes plus a newline, and decodes too.
        let mut line = Vec::new();
        write_json_line(&group, &mut line).expect("encode");
        assert_eq!(line[..line.len() - 1], bytes[..]);
        assert_eq!(decode_metrics_group(&line).expect("decodes"), group);

        // Any nanoseconds: the decoded time is within the float's step and
        // encodes to the same JSON.
        let mut fine = group.clone();
        fine.creation_timestamp = at(1_700_000_000, 987_654_321);
        fine.metrics[0].creation_timestamp = at(1_700_000_000, 123_456_789);
        let bytes = encode_metrics_group(&fine);
        let decoded = decode_metrics_group(&bytes).expect("decodes");
        assert_eq!(encode_metrics_group(&decoded), bytes);
        let drift = i64::from(decoded.creation_timestamp.nanoseconds) - 987_654_321;
        assert!(drift.abs() < 250, "{drift} ns");
    }

    #[test]
    fn timestamps_survive_re_encoding() {
        for (seconds, nanoseconds) in [
            (0, 0),
            (1, 1),
            (1_700_000_000, 0),
            (1_700_000_000, 999_999_999),
            (1_700_000_000, 500_000_000),
            (4_102_444_800, 123_456_789),
        ] {
            let original = seconds_of(at(seconds, nanoseconds));
            let decoded = datetime(original, "t").expect("a time");
            assert_eq!(seconds_of(decoded), original, "{seconds}.{nanoseconds:09}");
            assert!(decoded.nanoseconds < 1_000_000_000);
        }
        assert!(datetime(-1.0, "t").is_err());
        assert!(datetime(f64::NAN, "t").is_err());
    }

    fn seconds_of(at: Datetime) -> f64 {
        at.as_seconds()
    }

    #[test]
    fn integer_variants_follow_the_metric_type() {
        let mut group = sample_group();
        group.metrics = vec![
            metric("c", MetricValue::Signed(7), MetricType::Counter),
            metric("g", MetricValue::Unsigned(7), MetricType::Gauge),
            metric("n", MetricValue::Signed(-7), MetricType::Counter),
            metric("nan", MetricValue::Float(f64::NAN), MetricType::Gauge),
        ];
        let bytes = encode_metrics_group(&group);
        let decoded = decode_metrics_group(&bytes).expect("decodes");
        assert_eq!(decoded.metrics[0].value, MetricValue::Unsigned(7));
        assert_eq!(decoded.metrics[1].value, MetricValue::Signed(7));
        assert_eq!(decoded.metrics[2].value, MetricValue::Signed(-7));
        assert!(matches!(decoded.metrics[3].value, MetricValue::Float(v) if v.is_nan()));
        assert_eq!(encode_metrics_group(&decoded), bytes);
    }

    #[test]
    fn resources_round_trip() {
        let resource = sample_group().resource;
        let bytes = encode_resource(&resource);
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        for field in [
            "resource_id",
            "resource_site",
            "resource_endpoint",
            "resource_class",
            "resource_subclass",
            "resource_type",
            "resource_metadata",
            "resource_creation_timestamp",
            "resource_plugin",
            "resource_ttl",
        ] {
            assert!(value.get(field).is_some(), "{field} missing from {value}");
        }
        assert_eq!(value["resource_ttl"], "900");
        assert_eq!(
            Arc::new(decode_resource(&bytes).expect("decodes")),
            resource
        );
        // Panoptes-style variations: a numeric ttl, non-string metadata.
        let loose = br#"{"resource_site":"s","resource_class":"c","resource_subclass":"sc",
            "resource_type":"t","resource_id":"r","resource_endpoint":"e",
            "resource_metadata":{"n":5,"b":true},"resource_creation_timestamp":1.5,
            "resource_ttl":60}"#;
        let decoded = decode_resource(loose).expect("decodes");
        assert_eq!(decoded.ttl_seconds, 60);
        assert_eq!(
            decoded.metadata,
            vec![("b".into(), "true".into()), ("n".into(), "5".into())]
        );
        assert_eq!(decoded.creation_timestamp, at(1, 500_000_000));
    }

    #[test]
    fn rejects_what_is_not_a_metrics_group() {
        let good = String::from_utf8(encode_metrics_group(&sample_group())).expect("utf-8");
        for bad in [
            String::new(),
            "not json".to_owned(),
            "{}".to_owned(),
            "[1,2]".to_owned(),
            good.replace("\"counter\"", "\"histogram\""),
            good.replace(
                "\"metrics_group_interval\":60",
                "\"metrics_group_interval\":-1",
            ),
            good.replace("\"resource_id\"", "\"resource_idx\""),
            {
                let mut value: serde_json::Value = serde_json::from_str(&good).expect("JSON");
                value["metrics_group_creation_timestamp"] = (-3).into();
                value.to_string()
            },
            good[..good.len() / 2].to_owned(),
        ] {
            assert!(
                decode_metrics_group(bad.as_bytes()).is_err(),
                "accepted {bad:?}"
            );
        }
    }
}
