//! The data plugins exchange with the host, as generated from
//! `wit/types.wit`.

pub use crate::bindings::vigil::plugin::types::{
    AddressFamily, Analysis, Datetime, Dimension, EndpointEvent, EndpointEventKind,
    EnrichmentGroup, EnrichmentSet, ErrorKind, Finding, FindingKind, Metric, MetricType,
    MetricValue, MetricsGroup, PluginError, Resource, Severity,
};

/// The metrics-group schema version vigil accepts (Panoptes v0.2).
pub const SCHEMA_VERSION: &str = "0.2";

impl Datetime {
    pub fn from_system(time: std::time::SystemTime) -> Datetime {
        let since_epoch = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Datetime {
            seconds: since_epoch.as_secs(),
            nanoseconds: since_epoch.subsec_nanos(),
        }
    }
}

impl Datetime {
    /// Seconds since the epoch as one float, as Panoptes writes times.
    pub fn as_seconds(&self) -> f64 {
        self.seconds as f64 + f64::from(self.nanoseconds) / 1e9
    }

    /// The inverse of [`Datetime::as_seconds`]: exact for every value it
    /// produced (re-encoding gives the same `f64`), rounded to the
    /// nanosecond otherwise. Negative or NaN times are the epoch.
    pub fn from_seconds(seconds: f64) -> Datetime {
        let seconds = if seconds.is_nan() {
            0.0
        } else {
            seconds.max(0.0)
        };
        let whole = seconds.floor();
        // Exact: `seconds` and `whole` are within 1 of each other.
        let nanoseconds = ((seconds - whole) * 1e9).round() as u32;
        if nanoseconds >= 1_000_000_000 {
            Datetime {
                seconds: whole as u64 + 1,
                nanoseconds: 0,
            }
        } else {
            Datetime {
                seconds: whole as u64,
                nanoseconds,
            }
        }
    }
}

impl MetricValue {
    /// The exact value as text (u64 counters do not fit an `f64`).
    pub fn to_text(&self) -> String {
        match self {
            MetricValue::Signed(v) => v.to_string(),
            MetricValue::Unsigned(v) => v.to_string(),
            MetricValue::Float(v) => v.to_string(),
        }
    }
}

impl Resource {
    /// A resource with only an id and endpoint set, for tools and tests.
    pub fn named(id: &str, endpoint: &str) -> Resource {
        Resource {
            id: id.to_owned(),
            site: String::new(),
            endpoint: endpoint.to_owned(),
            class: String::new(),
            subclass: String::new(),
            type_: String::new(),
            creation_plugin: String::new(),
            creation_timestamp: Datetime::from_system(std::time::SystemTime::now()),
            ttl_seconds: 0,
            metadata: Vec::new(),
        }
    }
}

impl crate::filter::FilterSubject for Resource {
    fn field(&self, field: crate::filter::Field) -> &str {
        use crate::filter::Field;
        match field {
            Field::Site => &self.site,
            Field::Class => &self.class,
            Field::Subclass => &self.subclass,
            Field::Type => &self.type_,
            Field::Id => &self.id,
            Field::Endpoint => &self.endpoint,
        }
    }

    fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
