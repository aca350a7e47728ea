//! vigil's domain model: the records plugins produce and the host stores,
//! encodes and analyses, as plain Rust types that vigil owns.
//!
//! These are deliberately *not* the types `wasmtime::component::bindgen!`
//! generates from `wit/types.wit`. The sandbox converts at its boundary (a
//! move of every string, no copy), so the stores, the Panoptes JSON on the
//! bus and the dashboards never depend on wasmtime, and a WIT change is not
//! a storage-format change. The field sets follow the WIT records (and so
//! Panoptes' resource and metrics-group schema v0.2) one to one.
//!
//! One difference is deliberate: a [`MetricsGroup`] holds its resource as
//! an `Arc<Resource>`. A polling run returns up to `max_groups` (10,000 by
//! default) groups for one resource; holding the host's record of that
//! resource once and sharing it costs one pointer per group, where a copy
//! per group cost up to the resource's whole size (16 KiB of metadata plus
//! six 1 KiB fields) per group: 170 MB for one run at the default group
//! ceiling, from a plugin that sent 10,000 ids.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use vigil_filter::{Field, FilterSubject};

/// The metrics-group schema version vigil accepts (Panoptes v0.2).
pub const SCHEMA_VERSION: &str = "0.2";

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Datetime {
    pub seconds: u64,
    pub nanoseconds: u32,
}

impl Datetime {
    /// The time `time`, or the epoch for a time before it.
    pub fn from_system(time: SystemTime) -> Datetime {
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Datetime {
            seconds: since_epoch.as_secs(),
            nanoseconds: since_epoch.subsec_nanos(),
        }
    }

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

/// Something vigil watches: a device, a service, an endpoint. `id` is
/// unique within a site; `endpoint` is the address the host's network
/// capabilities use for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub id: String,
    pub site: String,
    pub endpoint: String,
    pub class: String,
    pub subclass: String,
    pub type_: String,
    /// The discovery plugin that owns the resource (set by the host).
    pub creation_plugin: String,
    pub creation_timestamp: Datetime,
    /// Seconds after `creation_timestamp` when the resource expires; 0 means
    /// the discovery plugin's default.
    pub ttl_seconds: u64,
    /// Free-form metadata (`resource_metadata.<key>` in filters).
    pub metadata: Vec<(String, String)>,
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
            creation_timestamp: Datetime::from_system(SystemTime::now()),
            ttl_seconds: 0,
            metadata: Vec::new(),
        }
    }
}

impl FilterSubject for Resource {
    fn field(&self, field: Field) -> &str {
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

/// Counters only grow (until they wrap or the device restarts); gauges go
/// up and down. The host only turns counters into rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
}

/// A metric's value; counters are usually `Unsigned` (SNMP Counter64 does
/// not fit in a double without loss).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue {
    Signed(i64),
    Unsigned(u64),
    Float(f64),
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

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: MetricValue,
    pub type_: MetricType,
    pub creation_timestamp: Datetime,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dimension {
    pub name: String,
    pub value: String,
}

/// Panoptes metrics-group schema v0.2, with the polled resource shared (see
/// the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsGroup {
    pub group_type: String,
    /// The polling interval the metrics were collected at, in seconds.
    pub interval_seconds: u32,
    pub creation_timestamp: Datetime,
    pub schema_version: String,
    pub resource: Arc<Resource>,
    pub dimensions: Vec<Dimension>,
    pub metrics: Vec<Metric>,
}

/// Data attached to one key (for example an interface index) of an
/// enrichment namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichmentSet {
    pub key: String,
    pub values: Vec<(String, String)>,
}

/// Slow-changing data about a resource that polling plugins read back from
/// the host's cache.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichmentGroup {
    pub namespace: String,
    /// How long the host keeps the group, in seconds.
    pub ttl_seconds: u64,
    pub sets: Vec<EnrichmentSet>,
}

/// One group as an enrichment cache holds it: for `vigil enrichment`, and
/// for the embedded cache's mirror in the store (which is how a process
/// other than `vigil run` sees that cache).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedEnrichment {
    pub resource_id: String,
    pub namespace: String,
    /// The enrichment plugin that owns the namespace.
    pub plugin: String,
    /// Seconds since the epoch.
    pub expires_at: f64,
    pub group: EnrichmentGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    Mac,
    Ipv4,
    Ipv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointEventKind {
    Created,
    Modified,
    Deleted,
}

/// One observation of an endpoint (a MAC or IP address) on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointEvent {
    pub kind: EndpointEventKind,
    pub timestamp: Datetime,
    pub fabric: String,
    pub node: String,
    pub scope: String,
    pub address: String,
    pub family: AddressFamily,
    pub mac: Option<String>,
    pub interface: String,
    pub encapsulation: String,
    pub group: String,
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    Move,
    OffSubnet,
    Stale,
    Rapid,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    pub fabric: String,
    pub scope: String,
    pub address: String,
    pub summary: String,
    pub details: Vec<(String, String)>,
    pub recheck_after_seconds: Option<u32>,
}

/// What an analysis run returns: findings plus the plugin's new opaque
/// state for this endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub findings: Vec<Finding>,
    pub state: Vec<u8>,
}

/// Why a run failed, as the plugin sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The resource did not answer (timeout, refused, no route).
    ResourceUnreachable,
    /// The resource answered with data the plugin cannot use.
    BadDeviceData,
    /// A bug in the plugin itself.
    PluginBug,
    /// The plugin's configuration is missing or wrong.
    Configuration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_trip_exactly() {
        for t in [
            Datetime {
                seconds: 1_700_000_000,
                nanoseconds: 123_456_789,
            },
            Datetime::default(),
        ] {
            assert_eq!(
                Datetime::from_seconds(t.as_seconds()).as_seconds(),
                t.as_seconds()
            );
        }
        assert_eq!(Datetime::from_seconds(f64::NAN), Datetime::default());
        assert_eq!(Datetime::from_seconds(-5.0), Datetime::default());
    }

    #[test]
    fn a_resource_answers_filters() {
        let mut r = Resource::named("sw1", "127.0.0.1");
        r.metadata.push(("os".into(), "eos".into()));
        assert_eq!(r.field(Field::Id), "sw1");
        assert_eq!(FilterSubject::metadata(&r, "os"), Some("eos"));
        assert_eq!(FilterSubject::metadata(&r, "model"), None);
    }
}
