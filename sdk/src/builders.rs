//! Builders that fill in the boilerplate of Panoptes' schema.

use crate::{Datetime, Dimension, Metric, MetricType, MetricValue, MetricsGroup, Resource};

/// Builds one metrics group for the resource being polled.
///
/// ```ignore
/// let group = MetricsGroupBuilder::new("interface", 60, &resource, clock::scheduled())
///     .dimension("interface_name", "ge-0/0/0")
///     .counter("bits_in", 123_456u64)
///     .gauge("oper_state", 1u64)
///     .build();
/// ```
pub struct MetricsGroupBuilder {
    group: MetricsGroup,
}

impl MetricsGroupBuilder {
    pub fn new(group_type: &str, interval_seconds: u32, resource: &Resource, at: Datetime) -> Self {
        MetricsGroupBuilder {
            group: MetricsGroup {
                group_type: group_type.to_owned(),
                interval_seconds,
                creation_timestamp: at,
                schema_version: crate::SCHEMA_VERSION.to_owned(),
                // The host fills in the rest of the resource from its own
                // record; sending the id alone keeps the output small.
                resource: Resource {
                    id: resource.id.clone(),
                    site: String::new(),
                    endpoint: String::new(),
                    class: String::new(),
                    subclass: String::new(),
                    type_: String::new(),
                    creation_plugin: String::new(),
                    creation_timestamp: Datetime {
                        seconds: 0,
                        nanoseconds: 0,
                    },
                    ttl_seconds: 0,
                    metadata: Vec::new(),
                },
                dimensions: Vec::new(),
                metrics: Vec::new(),
            },
        }
    }

    pub fn dimension(mut self, name: &str, value: impl Into<String>) -> Self {
        self.group.dimensions.push(Dimension {
            name: name.to_owned(),
            value: value.into(),
        });
        self
    }

    pub fn counter(self, name: &str, value: impl Into<MetricValue>) -> Self {
        self.metric(name, value.into(), MetricType::Counter)
    }

    pub fn gauge(self, name: &str, value: impl Into<MetricValue>) -> Self {
        self.metric(name, value.into(), MetricType::Gauge)
    }

    pub fn metric(mut self, name: &str, value: MetricValue, kind: MetricType) -> Self {
        let at = self.group.creation_timestamp;
        self.group.metrics.push(Metric {
            name: name.to_owned(),
            value,
            type_: kind,
            creation_timestamp: at,
        });
        self
    }

    pub fn build(self) -> MetricsGroup {
        self.group
    }
}

impl From<u64> for MetricValue {
    fn from(v: u64) -> Self {
        MetricValue::Unsigned(v)
    }
}
impl From<u32> for MetricValue {
    fn from(v: u32) -> Self {
        MetricValue::Unsigned(u64::from(v))
    }
}
impl From<i64> for MetricValue {
    fn from(v: i64) -> Self {
        MetricValue::Signed(v)
    }
}
impl From<f64> for MetricValue {
    fn from(v: f64) -> Self {
        MetricValue::Float(v)
    }
}
