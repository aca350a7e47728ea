//! `snmp-mib`: what the bundled SNMP plugins know about IF-MIB (RFC 2863),
//! EtherLike-MIB (RFC 3635), HOST-RESOURCES-MIB (RFC 2790) and IANAifType,
//! in one place so every plugin reads the same objects the same way.
//!
//! * OIDs of the tables and objects the plugins walk ([`IF_TABLE`], ...)
//!   and the column numbers inside them ([`if_entry`], [`if_x_entry`], ...).
//! * [`iftype`]: IANAifType numbers → names (`6` → `ethernetCsmacd`).
//! * [`interface`]: the per-interface "interface enrichment" built from the
//!   walked ifTable, ifXTable and ifStackTable. The enrichment plugin caches
//!   it and the interface polling plugin falls back to building it itself,
//!   so both produce identical dimension values.
//! * Small, panic-free readers for values as agents really send them
//!   ([`counter`], [`integer`], [`text`]): a value of the wrong type counts
//!   as missing, never as an error.
//! * The plugins' shared SNMP error policy ([`walk_optional`]).
//!
//! Missing data follows Panoptes: [`MISSING_STRING`] (`<not set>`) for
//! text, [`MISSING_NUMBER`] (`-1`) for numbers.

pub mod iftype;
pub mod interface;

use vigil_sdk::snmp::{self, SnmpError, Table, Value};
use vigil_sdk::{PluginError, log};

/// Panoptes' `_MISSING_VALUE_STRING`: a text value the device does not have.
pub const MISSING_STRING: &str = "<not set>";
/// Panoptes' `_MISSING_METRIC_VALUE`: a number the device does not have.
pub const MISSING_NUMBER: i64 = -1;
/// The longest dimension or enrichment value the host accepts, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

/// IF-MIB `ifTable`.
pub const IF_TABLE: &str = "1.3.6.1.2.1.2.2";
/// IF-MIB `ifXTable`.
pub const IF_X_TABLE: &str = "1.3.6.1.2.1.31.1.1";
/// IF-MIB `ifStackTable` (index `<ifStackHigherLayer>.<ifStackLowerLayer>`).
pub const IF_STACK_TABLE: &str = "1.3.6.1.2.1.31.1.2";
/// EtherLike-MIB `dot3StatsTable` (index `dot3StatsIndex`, the ifIndex).
pub const DOT3_STATS_TABLE: &str = "1.3.6.1.2.1.10.7.2";
/// SNMPv2-MIB `sysUpTime.0` (TimeTicks, hundredths of a second).
pub const SYS_UP_TIME: &str = "1.3.6.1.2.1.1.3.0";
/// HOST-RESOURCES-MIB `hrProcessorEntry`.
pub const HR_PROCESSOR_ENTRY: &str = "1.3.6.1.2.1.25.3.3.1";
/// HOST-RESOURCES-MIB `hrProcessorLoad` (column 2 of `hrProcessorEntry`;
/// index `hrDeviceIndex`; percent over the last minute).
pub const HR_PROCESSOR_LOAD: &str = "1.3.6.1.2.1.25.3.3.1.2";
/// HOST-RESOURCES-MIB `hrDeviceEntry`.
pub const HR_DEVICE_ENTRY: &str = "1.3.6.1.2.1.25.3.2.1";
/// HOST-RESOURCES-MIB `hrDeviceDescr` (column 3 of `hrDeviceEntry`).
pub const HR_DEVICE_DESCR: &str = "1.3.6.1.2.1.25.3.2.1.3";
/// HOST-RESOURCES-MIB `hrStorageTable`.
pub const HR_STORAGE_TABLE: &str = "1.3.6.1.2.1.25.2.3";
/// HOST-RESOURCES-MIB `hrStorageTypes`: `hrStorageType` values are
/// `<this>.N` (see [`hr_storage_type`]).
pub const HR_STORAGE_TYPES: &str = "1.3.6.1.2.1.25.2.1";

/// Columns of `ifEntry` (`1.3.6.1.2.1.2.2.1.<column>.<ifIndex>`).
pub mod if_entry {
    pub const DESCR: u32 = 2;
    pub const TYPE: u32 = 3;
    pub const MTU: u32 = 4;
    pub const SPEED: u32 = 5;
    pub const PHYS_ADDRESS: u32 = 6;
    pub const ADMIN_STATUS: u32 = 7;
    pub const OPER_STATUS: u32 = 8;
    pub const IN_OCTETS: u32 = 10;
    pub const IN_UCAST_PKTS: u32 = 11;
    pub const IN_DISCARDS: u32 = 13;
    pub const IN_ERRORS: u32 = 14;
    pub const OUT_OCTETS: u32 = 16;
    pub const OUT_UCAST_PKTS: u32 = 17;
    pub const OUT_DISCARDS: u32 = 19;
    pub const OUT_ERRORS: u32 = 20;
}

/// Columns of `ifXEntry` (`1.3.6.1.2.1.31.1.1.1.<column>.<ifIndex>`).
pub mod if_x_entry {
    pub const NAME: u32 = 1;
    pub const IN_MULTICAST_PKTS: u32 = 2;
    pub const IN_BROADCAST_PKTS: u32 = 3;
    pub const OUT_MULTICAST_PKTS: u32 = 4;
    pub const OUT_BROADCAST_PKTS: u32 = 5;
    pub const HC_IN_OCTETS: u32 = 6;
    pub const HC_IN_UCAST_PKTS: u32 = 7;
    pub const HC_IN_MULTICAST_PKTS: u32 = 8;
    pub const HC_IN_BROADCAST_PKTS: u32 = 9;
    pub const HC_OUT_OCTETS: u32 = 10;
    pub const HC_OUT_UCAST_PKTS: u32 = 11;
    pub const HC_OUT_MULTICAST_PKTS: u32 = 12;
    pub const HC_OUT_BROADCAST_PKTS: u32 = 13;
    pub const HIGH_SPEED: u32 = 15;
    pub const ALIAS: u32 = 18;
}

/// Columns of `ifStackEntry` (`1.3.6.1.2.1.31.1.2.1.<column>.<higher>.<lower>`).
/// Only `ifStackStatus` is readable; the two layers are the index.
pub mod if_stack_entry {
    pub const STATUS: u32 = 3;
}

/// Columns of `dot3StatsEntry` (`1.3.6.1.2.1.10.7.2.1.<column>.<ifIndex>`).
pub mod dot3_stats_entry {
    pub const ALIGNMENT_ERRORS: u32 = 2;
    pub const FCS_ERRORS: u32 = 3;
    pub const FRAME_TOO_LONGS: u32 = 13;
}

/// Columns of `hrProcessorEntry`.
pub mod hr_processor_entry {
    pub const LOAD: u32 = 2;
}

/// Columns of `hrDeviceEntry`.
pub mod hr_device_entry {
    pub const DESCR: u32 = 3;
}

/// Columns of `hrStorageEntry` (`1.3.6.1.2.1.25.2.3.1.<column>.<hrStorageIndex>`).
pub mod hr_storage_entry {
    pub const TYPE: u32 = 2;
    pub const DESCR: u32 = 3;
    pub const ALLOCATION_UNITS: u32 = 4;
    pub const SIZE: u32 = 5;
    pub const USED: u32 = 6;
}

/// `ifAdminStatus` / `ifOperStatus` names (RFC 2863); values outside 1..=7
/// are reported as the number.
pub fn if_status_name(status: i64) -> String {
    match status {
        1 => "up",
        2 => "down",
        3 => "testing",
        4 => "unknown",
        5 => "dormant",
        6 => "notPresent",
        7 => "lowerLayerDown",
        other => return other.to_string(),
    }
    .to_owned()
}

/// What an `hrStorageType` value says: `memory` or `storage`, and the type
/// name vigil reports for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// `hrStorageOther`, `hrStorageRam`, `hrStorageVirtualMemory`.
    Memory(&'static str),
    /// The disk types, `hrStorageFixedDisk` to `hrStorageNetworkDisk`.
    Storage(&'static str),
}

/// Classifies an `hrStorageType` OID (`1.3.6.1.2.1.25.2.1.N`); `None` for
/// anything else (vendor types, malformed OIDs).
pub fn hr_storage_type(oid: &str) -> Option<StorageKind> {
    let n: u32 = oid
        .trim_start_matches('.')
        .strip_prefix(HR_STORAGE_TYPES)?
        .strip_prefix('.')?
        .parse()
        .ok()?;
    Some(match n {
        1 => StorageKind::Memory("other"),
        2 => StorageKind::Memory("ram"),
        3 => StorageKind::Memory("virtual_memory"),
        4 => StorageKind::Storage("fixed_disk"),
        5 => StorageKind::Storage("removable_disk"),
        6 => StorageKind::Storage("floppy_disk"),
        7 => StorageKind::Storage("compact_disc"),
        8 => StorageKind::Storage("ram_disk"),
        9 => StorageKind::Storage("flash_memory"),
        10 => StorageKind::Storage("network_disk"),
        _ => return None,
    })
}

/// A counter-like value (Counter32/64, Gauge32, TimeTicks, a non-negative
/// Integer); anything else, including an OctetString, is missing.
pub fn counter(table: &Table, column: u32, index: &str) -> Option<u64> {
    table.get(column, index).and_then(Value::as_u64)
}

/// An integer-like value (Integer and the unsigned types that fit `i64`).
pub fn integer(table: &Table, column: u32, index: &str) -> Option<i64> {
    table.get(column, index).and_then(Value::as_i64)
}

/// An OctetString as text (see [`Value::as_text`]); empty counts as missing.
pub fn text(table: &Table, column: u32, index: &str) -> Option<String> {
    table
        .get(column, index)
        .and_then(Value::as_text)
        .filter(|text| !text.is_empty())
}

/// Cuts `value` to at most [`MAX_VALUE_BYTES`] bytes on a char boundary.
pub fn truncate_value(mut value: String) -> String {
    if value.len() > MAX_VALUE_BYTES {
        let mut end = MAX_VALUE_BYTES;
        while !value.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        value.truncate(end);
    }
    value
}

/// A value fit for a dimension: [`MISSING_STRING`] when absent or empty,
/// and at most [`MAX_VALUE_BYTES`] bytes.
pub fn dimension_value(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => truncate_value(v.to_owned()),
        _ => MISSING_STRING.to_owned(),
    }
}

/// Row indexes of `table` that are a single decimal component in canonical
/// form (`"12"`, not `"012"` or `"1.2"`) and positive: ifIndex, hrDeviceIndex
/// and the like. Anything else a broken agent sends is ignored.
pub fn simple_indexes(table: &Table) -> Vec<u32> {
    table
        .indexes()
        .iter()
        .filter_map(|index| simple_index(index))
        .collect()
}

/// `index` as a positive `u32` if it is one canonical decimal component.
pub fn simple_index(index: &str) -> Option<u32> {
    index
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0 && n.to_string() == index)
}

/// Failures that end a run even on an optional walk: the device cannot be
/// reached or refuses our credentials, so every other request would fail too.
pub fn is_fatal(error: &SnmpError) -> bool {
    matches!(
        error,
        SnmpError::Timeout(_) | SnmpError::AuthenticationFailed(_)
    )
}

/// Walks a table and also returns how many varbinds the agent sent.
pub fn walk_table_counted(table: &str) -> Result<(Table, usize), SnmpError> {
    let entry = format!("{}.1", table.trim_start_matches('.'));
    let varbinds = snmp::walk(&entry)?;
    let count = varbinds.len();
    Ok((Table::from_varbinds(&entry, varbinds), count))
}

/// Walks a column or subtree under `entry` (e.g. [`HR_PROCESSOR_LOAD`] under
/// [`HR_PROCESSOR_ENTRY`]) into a [`Table`].
pub fn walk_columns(entry: &str, subtree: &str) -> Result<Table, SnmpError> {
    Ok(Table::from_varbinds(entry, snmp::walk(subtree)?))
}

/// The shared policy for optional data: `result` is returned as is when it
/// succeeded; a timeout or authentication failure fails the run; any other
/// SNMP error is logged (warn, naming `what`), reported to the host as
/// missing (the run's status becomes `PARTIAL_METRIC_FAILURE`) and the data
/// counts as missing (`T::default()`, e.g. an empty [`Table`]).
pub fn optional<T: Default>(what: &str, result: Result<T, SnmpError>) -> Result<T, PluginError> {
    match result {
        Ok(value) => Ok(value),
        Err(error) if is_fatal(&error) => Err(PluginError::from(error)),
        Err(error) => {
            log::emit(
                log::Level::Warn,
                "optional SNMP data unavailable; treating it as missing",
                &[("object", what), ("error", &error.describe())],
            );
            vigil_sdk::status::missing_metrics(&[what]);
            Ok(T::default())
        }
    }
}

/// Walks an optional table under [`optional`]'s policy.
pub fn walk_optional(table: &str, what: &str) -> Result<Table, PluginError> {
    optional(what, snmp::walk_table(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_types() {
        assert_eq!(
            hr_storage_type("1.3.6.1.2.1.25.2.1.2"),
            Some(StorageKind::Memory("ram"))
        );
        assert_eq!(
            hr_storage_type(".1.3.6.1.2.1.25.2.1.4"),
            Some(StorageKind::Storage("fixed_disk"))
        );
        assert_eq!(hr_storage_type("1.3.6.1.2.1.25.2.1.11"), None);
        assert_eq!(hr_storage_type("1.3.6.1.2.1.25.2.1"), None);
        assert_eq!(hr_storage_type("1.3.6.1.2.1.25.2.10.4"), None);
        assert_eq!(hr_storage_type("garbage"), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(if_status_name(1), "up");
        assert_eq!(if_status_name(7), "lowerLayerDown");
        assert_eq!(if_status_name(0), "0");
        assert_eq!(if_status_name(-3), "-3");
    }

    #[test]
    fn truncation_keeps_utf8() {
        let long = "é".repeat(600); // 1200 bytes
        let cut = truncate_value(long);
        assert!(cut.len() <= MAX_VALUE_BYTES);
        assert_eq!(cut.len(), 1024);
        let odd = format!("a{}", "é".repeat(600));
        assert_eq!(truncate_value(odd).len(), 1023);
        assert_eq!(dimension_value(Some("")), MISSING_STRING);
        assert_eq!(dimension_value(None), MISSING_STRING);
        assert_eq!(dimension_value(Some("ge-0/0/0")), "ge-0/0/0");
    }

    #[test]
    fn indexes() {
        assert_eq!(simple_index("12"), Some(12));
        assert_eq!(simple_index("012"), None);
        assert_eq!(simple_index("0"), None);
        assert_eq!(simple_index("1.2"), None);
        assert_eq!(simple_index("99999999999"), None);
        assert_eq!(simple_index(""), None);
    }
}
