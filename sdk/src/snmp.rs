//! SNMP to the device being polled or enriched.
//!
//! The host chooses the address, port, version and credentials from the
//! site config; a plugin names OIDs only. The plugin's ini must ask for the
//! capability (`[capabilities] snmp = yes`) and may tune requests in its
//! `[snmp]` section (`max_repetitions`, `timeout`, `retries`).
//!
//! ```no_run
//! use vigil_sdk::snmp;
//!
//! // ifHCInOctets for every interface, keyed by ifIndex.
//! let table = snmp::walk_table("1.3.6.1.2.1.31.1.1")?;
//! for index in table.indexes() {
//!     let octets = table.get(6, &index).and_then(snmp::Value::as_u64);
//! }
//! # Ok::<(), snmp::SnmpError>(())
//! ```

use std::collections::BTreeMap;

use crate::__private::vigil::plugin::snmp as host;
pub use crate::__private::vigil::plugin::snmp::{SnmpError, Value, Varbind};
use crate::{ErrorKind, PluginError};

/// GET: one varbind per OID, in order.
pub fn get(oids: &[&str]) -> Result<Vec<Varbind>, SnmpError> {
    host::get(&to_owned(oids))
}

/// GETNEXT: the object after each OID.
pub fn get_next(oids: &[&str]) -> Result<Vec<Varbind>, SnmpError> {
    host::get_next(&to_owned(oids))
}

/// Every object under `subtree`, in OID order.
pub fn walk(subtree: &str) -> Result<Vec<Varbind>, SnmpError> {
    host::walk(subtree)
}

/// Walks a conceptual table by its OID (e.g. ifTable `1.3.6.1.2.1.2.2`) and
/// splits each object's OID into column and row index.
pub fn walk_table(table: &str) -> Result<Table, SnmpError> {
    let table = table.trim_start_matches('.');
    let entry = format!("{table}.1");
    Ok(Table::from_varbinds(&entry, host::walk(&entry)?))
}

fn to_owned(oids: &[&str]) -> Vec<String> {
    oids.iter().map(|oid| (*oid).to_owned()).collect()
}

/// Rows of a walked table: `column → index → value`, where the index is the
/// OID suffix after `<entry>.<column>.` (`"12"` for ifIndex 12, several
/// components for tables indexed by more than one value).
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: BTreeMap<u32, BTreeMap<String, Value>>,
}

impl Table {
    /// Builds a table from varbinds under `entry` (the table OID plus `.1`);
    /// varbinds outside it and exception values are skipped.
    pub fn from_varbinds(entry: &str, varbinds: Vec<Varbind>) -> Table {
        let entry = entry.trim_start_matches('.');
        let mut table = Table::default();
        for varbind in varbinds {
            if is_exception(&varbind.value) {
                continue;
            }
            let oid = varbind.oid.trim_start_matches('.');
            let Some(rest) = oid
                .strip_prefix(entry)
                .and_then(|rest| rest.strip_prefix('.'))
            else {
                continue;
            };
            let Some((column, index)) = rest.split_once('.') else {
                continue;
            };
            let Ok(column) = column.parse::<u32>() else {
                continue;
            };
            table
                .columns
                .entry(column)
                .or_default()
                .insert(index.to_owned(), varbind.value);
        }
        table
    }

    /// The value of `column` in row `index`.
    pub fn get(&self, column: u32, index: &str) -> Option<&Value> {
        self.columns.get(&column)?.get(index)
    }

    /// Every row index seen in any column, in numeric OID order.
    pub fn indexes(&self) -> Vec<String> {
        let mut indexes: Vec<String> = self
            .columns
            .values()
            .flat_map(|rows| rows.keys().cloned())
            .collect();
        indexes.sort_by(|a, b| compare_oids(a, b));
        indexes.dedup();
        indexes
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}

/// Orders dotted OIDs (or OID suffixes) component by component, as numbers.
pub fn compare_oids(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<u64> {
        s.split('.')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

fn is_exception(value: &Value) -> bool {
    matches!(
        value,
        Value::NoSuchObject | Value::NoSuchInstance | Value::EndOfMibView
    )
}

impl Value {
    /// Counters, gauges, timeticks and non-negative integers as `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Counter32(v) | Value::Gauge32(v) | Value::Timeticks(v) => Some(u64::from(v)),
            Value::Counter64(v) => Some(v),
            Value::Integer(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Integers and the unsigned types as `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Integer(v) => Some(v),
            Value::Counter32(v) | Value::Gauge32(v) | Value::Timeticks(v) => Some(i64::from(v)),
            Value::Counter64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// An octet string as text: UTF-8 where it is, with invalid bytes
    /// replaced, and trailing NULs (some agents pad names) removed.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::OctetString(bytes) => Some(
                String::from_utf8_lossy(bytes)
                    .trim_end_matches('\0')
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// The raw bytes of an octet string or opaque value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::OctetString(bytes) | Value::Opaque(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// True for noSuchObject, noSuchInstance and endOfMibView.
    pub fn is_exception(&self) -> bool {
        is_exception(self)
    }
}

impl SnmpError {
    /// A one-line description: what went wrong, then the host's detail
    /// (which names the device). wit-bindgen's own `Display` is `Debug`.
    pub fn describe(&self) -> String {
        let (what, detail) = match self {
            SnmpError::NotGranted(m) => ("snmp not granted", m),
            SnmpError::Timeout(m) => ("timeout", m),
            SnmpError::AuthenticationFailed(m) => ("authentication failed", m),
            SnmpError::AgentError(m) => ("agent error", m),
            SnmpError::MalformedResponse(m) => ("malformed response", m),
            SnmpError::QuotaExceeded(m) => ("varbind quota exceeded", m),
            SnmpError::InvalidRequest(m) => ("invalid request", m),
        };
        format!("{what}: {detail}")
    }
}

/// How an SNMP failure ends a run: an unreachable or unauthenticated device
/// is the device's problem; bad replies are bad device data; the rest are
/// configuration or plugin bugs.
impl From<SnmpError> for PluginError {
    fn from(error: SnmpError) -> PluginError {
        let kind = match error {
            SnmpError::Timeout(_) | SnmpError::AuthenticationFailed(_) => {
                ErrorKind::ResourceUnreachable
            }
            SnmpError::AgentError(_) | SnmpError::MalformedResponse(_) => ErrorKind::BadDeviceData,
            SnmpError::NotGranted(_) | SnmpError::QuotaExceeded(_) => ErrorKind::Configuration,
            SnmpError::InvalidRequest(_) => ErrorKind::PluginBug,
        };
        PluginError::new(kind, error.describe())
    }
}
