//! `snmp-endpoints`: a device's ARP/neighbour and bridge forwarding tables
//! over SNMP, as whole snapshots for vigil's endpoint tracker (issue #14,
//! source 2). The host compares each snapshot with the previous one of the
//! same device and table and turns the differences into endpoint events
//! (created, modified, deleted), with the device as the node.
//!
//! # What it reads
//!
//! - **Neighbours** (IP → MAC): IP-MIB `ipNetToPhysicalTable`
//!   (1.3.6.1.2.1.4.35, IPv4 and IPv6) and RFC 1213 `ipNetToMediaTable`
//!   (1.3.6.1.2.1.4.22, IPv4), the second filling in for a device without
//!   the first and, for IPv4, winning over it: Net-SNMP keeps a stale MAC
//!   in ipNetToPhysicalTable after a neighbour's MAC changes (see
//!   [`merge_neighbours`]). Rows of type `invalid` and rows without a
//!   6-byte MAC (incomplete resolutions) are left out.
//! - **Forwarding** (MAC → port): Q-BRIDGE-MIB `dot1qTpFdbTable`
//!   (1.3.6.1.2.1.17.7.1.2.2, per VLAN: the FDB id is mapped to its VLAN
//!   through `dot1qVlanFdbId`, and is taken as the VLAN when no mapping
//!   exists), falling back to BRIDGE-MIB `dot1dTpFdbTable`
//!   (1.3.6.1.2.1.17.4.3, no VLAN). Bridge ports become ifIndexes through
//!   `dot1dBasePortIfIndex` (1.3.6.1.2.1.17.1.4.1.2). Rows of status
//!   `invalid` are left out. A device whose BRIDGE-MIB answers nothing at
//!   all (no base ports, no FDB rows) gets no forwarding snapshot: an
//!   absent MIB is not an empty table, and must not delete every MAC.
//! - **Interface names**: the cached `interface` enrichment
//!   (`snmp-interface-enrichment`, `[enrichment] preload = self:interface`),
//!   else ifName, else ifDescr, walked here.
//!
//! # Completeness
//!
//! A table whose walk failed (other than a timeout or a refused
//! credential, which fail the run) is reported to the host as missing and
//! not sent; a table read whole is sent with `complete = true`. The host
//! also marks every table of a run incomplete when it saw a walk cut short.
//! Incomplete tables never produce deletes.
//!
//! # Configuration (`[endpoints]`, all optional)
//!
//! `neighbours = yes|no`, `forwarding = yes|no` (both default `yes`).

use std::collections::BTreeMap;

use snmp_mib::interface::INTERFACE_NAME;
use snmp_mib::{IF_TABLE, IF_X_TABLE, is_fatal, simple_index};
use vigil_sdk::prelude::*;
use vigil_sdk::snmp::{SnmpError, Table, Value};

/// IP-MIB ipNetToPhysicalTable.
pub const IP_NET_TO_PHYSICAL_TABLE: &str = "1.3.6.1.2.1.4.35";
/// RFC 1213 ipNetToMediaTable.
pub const IP_NET_TO_MEDIA_TABLE: &str = "1.3.6.1.2.1.4.22";
/// Q-BRIDGE-MIB dot1qTpFdbTable.
pub const DOT1Q_TP_FDB_TABLE: &str = "1.3.6.1.2.1.17.7.1.2.2";
/// Q-BRIDGE-MIB dot1qVlanCurrentTable (column 3: dot1qVlanFdbId).
pub const DOT1Q_VLAN_CURRENT_TABLE: &str = "1.3.6.1.2.1.17.7.1.4.2";
/// BRIDGE-MIB dot1dTpFdbTable.
pub const DOT1D_TP_FDB_TABLE: &str = "1.3.6.1.2.1.17.4.3";
/// BRIDGE-MIB dot1dBasePortTable (column 2: dot1dBasePortIfIndex).
pub const DOT1D_BASE_PORT_TABLE: &str = "1.3.6.1.2.1.17.1.4";

struct SnmpEndpoints;

/// The MAC of a PhysAddress value: exactly 6 octets, colon form.
pub fn mac_of(value: Option<&Value>) -> Option<String> {
    let bytes = value?.as_bytes()?;
    if bytes.len() != 6 {
        return None;
    }
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    Some(parts.join(":"))
}

/// Index components as numbers; `None` if any is not a number.
fn components(index: &str) -> Option<Vec<u32>> {
    index.split('.').map(|c| c.parse::<u32>().ok()).collect()
}

/// An IP address from InetAddress octets (4 or 16).
fn inet_address(octets: &[u32]) -> Option<String> {
    let bytes: Vec<u8> = octets
        .iter()
        .map(|o| u8::try_from(*o).ok())
        .collect::<Option<_>>()?;
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()),
        16 => {
            let array: [u8; 16] = bytes.try_into().ok()?;
            Some(std::net::Ipv6Addr::from(array).to_string())
        }
        _ => None,
    }
}

/// `ifIndex.addrType.len.addr...` of ipNetToPhysicalTable (the length is
/// optional: some agents index an IPv4 row by the 4 octets alone).
pub fn parse_physical_index(index: &str) -> Option<(u32, String)> {
    let parts = components(index)?;
    let (&if_index, rest) = parts.split_first()?;
    let (&addr_type, rest) = rest.split_first()?;
    let expected = match addr_type {
        1 => 4,
        2 => 16,
        _ => return None, // ipv4z, ipv6z, dns: not endpoints here
    };
    let octets = match rest.split_first() {
        Some((&len, tail)) if len as usize == expected && tail.len() == expected => tail,
        _ if rest.len() == expected => rest,
        _ => return None,
    };
    Some((if_index, inet_address(octets)?))
}

/// `ifIndex.a.b.c.d` of ipNetToMediaTable.
pub fn parse_media_index(index: &str) -> Option<(u32, String)> {
    let parts = components(index)?;
    let (&if_index, rest) = parts.split_first()?;
    if rest.len() != 4 {
        return None;
    }
    Some((if_index, inet_address(rest)?))
}

/// The state of an ipNetToPhysicalType / ipNetToMediaType value
/// (1 other, 2 invalid, 3 dynamic, 4 static, 5 local); `None` = invalid.
pub fn neighbour_state(kind: Option<i64>) -> Option<EntryState> {
    match kind {
        Some(2) => None,
        Some(3) | None => Some(EntryState::Dynamic),
        Some(4) => Some(EntryState::Configured),
        Some(5) => Some(EntryState::Local),
        Some(_) => Some(EntryState::Other),
    }
}

/// The state of a dot1dTpFdbStatus / dot1qTpFdbStatus value (1 other,
/// 2 invalid, 3 learned, 4 self, 5 mgmt); `None` = invalid.
pub fn fdb_state(status: Option<i64>) -> Option<EntryState> {
    match status {
        Some(2) => None,
        Some(3) | None => Some(EntryState::Dynamic),
        Some(4) => Some(EntryState::Local),
        Some(5) => Some(EntryState::Configured),
        Some(_) => Some(EntryState::Other),
    }
}

/// Neighbour rows of an ipNetToPhysicalTable walk.
pub fn physical_entries(table: &Table, name: &dyn Fn(u32) -> String) -> Vec<TableEntry> {
    neighbour_entries(table, name, parse_physical_index, 4, 6)
}

/// Neighbour rows of an ipNetToMediaTable walk.
pub fn media_entries(table: &Table, name: &dyn Fn(u32) -> String) -> Vec<TableEntry> {
    neighbour_entries(table, name, parse_media_index, 2, 4)
}

/// The rows of a neighbour table whose index `parse` reads as (ifIndex,
/// address), with the MAC in column `mac_column` and the type in
/// `type_column`; rows without a usable MAC or type are skipped.
fn neighbour_entries(
    table: &Table,
    name: &dyn Fn(u32) -> String,
    parse: fn(&str) -> Option<(u32, String)>,
    mac_column: u32,
    type_column: u32,
) -> Vec<TableEntry> {
    let mut entries = Vec::new();
    for index in table.indexes() {
        let Some((if_index, address)) = parse(&index) else {
            continue;
        };
        let Some(mac) = mac_of(table.get(mac_column, &index)) else {
            continue;
        };
        let Some(state) = neighbour_state(table.get(type_column, &index).and_then(Value::as_i64))
        else {
            continue;
        };
        entries.push(TableEntry {
            address,
            mac,
            if_index,
            interface: name(if_index),
            vlan: 0,
            state,
        });
    }
    entries
}

/// The neighbour table: ipNetToPhysicalTable's rows, with
/// ipNetToMediaTable's row of the same IPv4 address in place of its own
/// (and its IPv4 rows the first lacks). Net-SNMP 5.9 keeps a row's
/// ipNetToPhysicalPhysAddress as first seen when the neighbour's MAC
/// changes (seen on Debian 12's snmpd: still stale after 75 s), while it
/// reloads ipNetToMediaTable; so for IPv4 the older table is the fresher
/// one, and IPv6 rows only exist in the newer.
pub fn merge_neighbours(physical: Vec<TableEntry>, media: Vec<TableEntry>) -> Vec<TableEntry> {
    let mut rows: BTreeMap<String, TableEntry> = physical
        .into_iter()
        .map(|e| (e.address.clone(), e))
        .collect();
    for e in media {
        rows.insert(e.address.clone(), e);
    }
    rows.into_values().collect()
}

/// The 6 octets at the end of an FDB index, as a MAC.
fn mac_from_index(parts: &[u32]) -> Option<String> {
    if parts.len() != 6 || parts.iter().any(|p| *p > 255) {
        return None;
    }
    let text: Vec<String> = parts.iter().map(|p| format!("{p:02X}")).collect();
    Some(text.join(":"))
}

/// Forwarding rows of a dot1dTpFdbTable walk (index = the MAC).
pub fn dot1d_entries(
    table: &Table,
    port_if_index: &BTreeMap<u32, u32>,
    name: &dyn Fn(u32) -> String,
) -> Vec<TableEntry> {
    let mut entries = Vec::new();
    for index in table.indexes() {
        let Some(mac) = components(&index).and_then(|p| mac_from_index(&p)) else {
            continue;
        };
        let Some(state) = fdb_state(table.get(3, &index).and_then(Value::as_i64)) else {
            continue;
        };
        entries.push(fdb_entry(
            mac,
            table.get(2, &index).and_then(Value::as_u64),
            0,
            state,
            port_if_index,
            name,
        ));
    }
    entries
}

/// Forwarding rows of a dot1qTpFdbTable walk (index = fdbId.MAC);
/// `vlan_of_fdb` maps FDB ids to VLANs (an unmapped id is taken as the VLAN).
pub fn dot1q_entries(
    table: &Table,
    vlan_of_fdb: &BTreeMap<u32, u16>,
    port_if_index: &BTreeMap<u32, u32>,
    name: &dyn Fn(u32) -> String,
) -> Vec<TableEntry> {
    let mut entries = Vec::new();
    for index in table.indexes() {
        let Some(parts) = components(&index) else {
            continue;
        };
        let Some((&fdb, mac)) = parts.split_first() else {
            continue;
        };
        let Some(mac) = mac_from_index(mac) else {
            continue;
        };
        let Some(state) = fdb_state(table.get(3, &index).and_then(Value::as_i64)) else {
            continue;
        };
        let vlan = vlan_of_fdb
            .get(&fdb)
            .copied()
            .or_else(|| u16::try_from(fdb).ok().filter(|v| *v <= 4095))
            .unwrap_or(0);
        entries.push(fdb_entry(
            mac,
            table.get(2, &index).and_then(Value::as_u64),
            vlan,
            state,
            port_if_index,
            name,
        ));
    }
    entries
}

fn fdb_entry(
    mac: String,
    port: Option<u64>,
    vlan: u16,
    state: EntryState,
    port_if_index: &BTreeMap<u32, u32>,
    name: &dyn Fn(u32) -> String,
) -> TableEntry {
    // Port 0: the agent does not know the port (often the bridge's own MAC).
    let if_index = port
        .and_then(|p| u32::try_from(p).ok())
        .and_then(|p| port_if_index.get(&p).copied())
        .unwrap_or(0);
    TableEntry {
        address: String::new(),
        mac,
        if_index,
        interface: if if_index == 0 {
            String::new()
        } else {
            name(if_index)
        },
        vlan,
        state,
    }
}

/// dot1dBasePort → ifIndex.
pub fn base_ports(table: &Table) -> BTreeMap<u32, u32> {
    table
        .indexes()
        .iter()
        .filter_map(|index| {
            let port = simple_index(index)?;
            let if_index = table
                .get(2, index)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())?;
            Some((port, if_index))
        })
        .collect()
}

/// dot1qVlanFdbId: FDB id → VLAN (index timeMark.vlan).
pub fn vlan_fdb_ids(table: &Table) -> BTreeMap<u32, u16> {
    let mut map = BTreeMap::new();
    for index in table.indexes() {
        let Some(parts) = components(&index) else {
            continue;
        };
        let (Some(vlan), Some(fdb)) = (
            parts.last().and_then(|v| u16::try_from(*v).ok()),
            table
                .get(3, &index)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok()),
        ) else {
            continue;
        };
        map.insert(fdb, vlan);
    }
    map
}

/// A walk under the plugin's policy: `Ok(None)` when it failed in a way
/// that only loses this table (reported as missing), `Err` when the device
/// cannot be reached at all.
fn walk(table: &str, what: &str) -> Result<Option<Table>, PluginError> {
    match snmp::walk_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(error) if is_fatal(&error) => Err(PluginError::from(error)),
        Err(SnmpError::QuotaExceeded(m)) => {
            log::emit(
                log::Level::Warn,
                "varbind budget spent; table left out",
                &[("table", what), ("error", &m)],
            );
            status::missing_metrics(&[what]);
            Ok(None)
        }
        Err(error) => {
            log::emit(
                log::Level::Warn,
                "table could not be walked; left out",
                &[("table", what), ("error", &error.describe())],
            );
            status::missing_metrics(&[what]);
            Ok(None)
        }
    }
}

/// ifIndex → name: the cached enrichment, else ifName, else ifDescr.
fn interface_names() -> Result<BTreeMap<u32, String>, PluginError> {
    let mut names = BTreeMap::new();
    if let Some(group) = enrichment::get("interface") {
        for set in &group.sets {
            let Some(index) = simple_index(&set.key) else {
                continue;
            };
            if let Some((_, name)) = set
                .values
                .iter()
                .find(|(k, v)| k == INTERFACE_NAME && v != snmp_mib::MISSING_STRING)
            {
                names.insert(index, name.clone());
            }
        }
    }
    if !names.is_empty() {
        return Ok(names);
    }
    for (table, column) in [(IF_X_TABLE, 1), (IF_TABLE, 2)] {
        let entry = format!("{table}.1");
        let subtree = format!("{entry}.{column}");
        let walked = match snmp::walk(&subtree) {
            Ok(v) => Table::from_varbinds(&entry, v),
            Err(error) if is_fatal(&error) => return Err(PluginError::from(error)),
            Err(_) => continue,
        };
        for index in walked.indexes() {
            if let (Some(i), Some(name)) = (
                simple_index(&index),
                walked.get(column, &index).and_then(Value::as_text),
            ) && !name.is_empty()
            {
                names.entry(i).or_insert(name);
            }
        }
        if !names.is_empty() {
            break;
        }
    }
    Ok(names)
}

fn enabled(key: &str) -> Result<bool, PluginError> {
    Ok(config::bool("endpoints", key)?.unwrap_or(true))
}

fn snapshot(kind: TableKind, source: &str, entries: Vec<TableEntry>) -> TableSnapshot {
    TableSnapshot {
        kind,
        source: source.to_owned(),
        context: String::new(),
        complete: true,
        entries,
    }
}

impl Endpoints for SnmpEndpoints {
    fn collect(_resource: Resource) -> Result<Vec<TableSnapshot>, PluginError> {
        let names = interface_names()?;
        let name = |i: u32| names.get(&i).cloned().unwrap_or_default();
        let mut tables = Vec::new();

        if enabled("neighbours")? {
            let physical = walk(IP_NET_TO_PHYSICAL_TABLE, "ipNetToPhysicalTable")?;
            let media = walk(IP_NET_TO_MEDIA_TABLE, "ipNetToMediaTable")?;
            if physical.is_some() || media.is_some() {
                let from_physical = physical
                    .as_ref()
                    .map(|t| physical_entries(t, &name))
                    .unwrap_or_default();
                let from_media = media
                    .as_ref()
                    .map(|t| media_entries(t, &name))
                    .unwrap_or_default();
                let source = match (from_physical.is_empty(), from_media.is_empty()) {
                    (false, true) => "ipNetToPhysicalTable",
                    (true, _) => "ipNetToMediaTable",
                    (false, false) => "ipNetToPhysicalTable+ipNetToMediaTable",
                };
                let mut table = snapshot(
                    TableKind::Neighbour,
                    source,
                    merge_neighbours(from_physical, from_media),
                );
                // Complete only when every table it is made of was read.
                table.complete = physical.is_some() && media.is_some();
                tables.push(table);
            }
        }

        if enabled("forwarding")? {
            let ports = walk(DOT1D_BASE_PORT_TABLE, "dot1dBasePortTable")?;
            let port_map = ports.as_ref().map(base_ports).unwrap_or_default();
            let q = walk(DOT1Q_TP_FDB_TABLE, "dot1qTpFdbTable")?;
            let q_rows = match &q {
                Some(t) if !t.is_empty() => {
                    let vlans = walk(DOT1Q_VLAN_CURRENT_TABLE, "dot1qVlanCurrentTable")?
                        .map(|t| vlan_fdb_ids(&t))
                        .unwrap_or_default();
                    Some(dot1q_entries(t, &vlans, &port_map, &name))
                }
                _ => None,
            };
            match q_rows {
                Some(rows) => {
                    let mut table = snapshot(TableKind::Forwarding, "dot1qTpFdbTable", rows);
                    table.complete = ports.is_some();
                    tables.push(table);
                }
                None => {
                    if let Some(d) = walk(DOT1D_TP_FDB_TABLE, "dot1dTpFdbTable")? {
                        // No bridge at all: no snapshot (not an empty one).
                        if !d.is_empty() || !port_map.is_empty() {
                            let rows = dot1d_entries(&d, &port_map, &name);
                            let mut table =
                                snapshot(TableKind::Forwarding, "dot1dTpFdbTable", rows);
                            table.complete = ports.is_some() && q.is_some();
                            tables.push(table);
                        }
                    }
                }
            }
        }
        Ok(tables)
    }
}

vigil_sdk::export!(endpoints => SnmpEndpoints);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::snmp::Varbind;

    fn table(entry: &str, rows: &[(&str, Value)]) -> Table {
        Table::from_varbinds(
            entry,
            rows.iter()
                .map(|(oid, value)| Varbind {
                    oid: format!("{entry}.{oid}"),
                    value: value.clone(),
                })
                .collect(),
        )
    }

    fn names(i: u32) -> String {
        format!("if{i}")
    }

    #[test]
    fn physical_rows_become_neighbours() {
        let t = table(
            "1.3.6.1.2.1.4.35.1",
            &[
                (
                    "4.2.1.4.10.77.0.1",
                    Value::OctetString(vec![2, 0, 0, 0, 0, 1]),
                ),
                ("6.2.1.4.10.77.0.1", Value::Integer(3)),
                // Incomplete resolution: no MAC.
                ("4.2.1.4.10.77.0.9", Value::OctetString(vec![])),
                // Invalid row.
                (
                    "4.2.1.4.10.77.0.8",
                    Value::OctetString(vec![2, 0, 0, 0, 0, 8]),
                ),
                ("6.2.1.4.10.77.0.8", Value::Integer(2)),
                (
                    "4.3.2.16.254.128.0.0.0.0.0.0.0.0.0.0.0.0.0.1",
                    Value::OctetString(vec![2, 0, 0, 0, 0, 2]),
                ),
                (
                    "6.3.2.16.254.128.0.0.0.0.0.0.0.0.0.0.0.0.0.1",
                    Value::Integer(5),
                ),
            ],
        );
        let rows = physical_entries(&t, &names);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].address, "10.77.0.1");
        assert_eq!(rows[0].mac, "02:00:00:00:00:01");
        assert_eq!(rows[0].interface, "if2");
        assert_eq!(rows[1].address, "fe80::1");
        assert!(matches!(rows[1].state, EntryState::Local));
    }

    #[test]
    fn media_rows_become_neighbours() {
        let t = table(
            "1.3.6.1.2.1.4.22.1",
            &[
                ("2.5.10.77.0.2", Value::OctetString(vec![2, 0, 0, 0, 0, 2])),
                ("4.5.10.77.0.2", Value::Integer(4)),
            ],
        );
        let rows = media_entries(&t, &names);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].address, "10.77.0.2");
        assert_eq!(rows[0].if_index, 5);
        assert!(matches!(rows[0].state, EntryState::Configured));
    }

    #[test]
    fn fdb_rows_reach_interfaces_through_base_ports() {
        let ports = table(
            "1.3.6.1.2.1.17.1.4.1",
            &[("2.1", Value::Integer(7)), ("2.2", Value::Integer(9))],
        );
        let ports = base_ports(&ports);
        let d = table(
            "1.3.6.1.2.1.17.4.3.1",
            &[
                ("1.2.0.0.0.0.1", Value::OctetString(vec![2, 0, 0, 0, 0, 1])),
                ("2.2.0.0.0.0.1", Value::Integer(2)),
                ("3.2.0.0.0.0.1", Value::Integer(3)),
                ("3.2.0.0.0.0.170", Value::Integer(4)),
            ],
        );
        let rows = dot1d_entries(&d, &ports, &names);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].mac.as_str(), rows[0].if_index),
            ("02:00:00:00:00:01", 9)
        );
        assert_eq!(rows[0].interface, "if9");
        assert_eq!(rows[1].mac, "02:00:00:00:00:AA");
        assert_eq!(rows[1].if_index, 0);
        assert!(matches!(rows[1].state, EntryState::Local));

        let q = table(
            "1.3.6.1.2.1.17.7.1.2.2.1",
            &[
                ("2.5.2.0.0.0.0.1", Value::Integer(1)),
                ("3.5.2.0.0.0.0.1", Value::Integer(3)),
            ],
        );
        let vlans = BTreeMap::from([(5, 101)]);
        let rows = dot1q_entries(&q, &vlans, &ports, &names);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].vlan, rows[0].if_index), (101, 7));
    }

    #[test]
    fn vlan_fdb_ids_map_fdb_to_vlan() {
        let t = table(
            "1.3.6.1.2.1.17.7.1.4.2.1",
            &[
                ("3.0.101", Value::Gauge32(5)),
                ("3.0.102", Value::Gauge32(6)),
            ],
        );
        assert_eq!(vlan_fdb_ids(&t), BTreeMap::from([(5, 101), (6, 102)]));
    }

    #[test]
    fn media_rows_win_for_ipv4() {
        let row = |address: &str, mac: &str| TableEntry {
            address: address.into(),
            mac: mac.into(),
            if_index: 2,
            interface: String::new(),
            vlan: 0,
            state: EntryState::Dynamic,
        };
        let merged = merge_neighbours(
            vec![
                row("10.77.0.2", "02:00:00:00:00:02"),
                row("fe80::1", "02:00:00:00:00:03"),
            ],
            vec![
                row("10.77.0.2", "02:00:00:00:00:22"),
                row("10.77.0.3", "02:00:00:00:00:33"),
            ],
        );
        let macs: Vec<(&str, &str)> = merged
            .iter()
            .map(|e| (e.address.as_str(), e.mac.as_str()))
            .collect();
        assert_eq!(
            macs,
            vec![
                ("10.77.0.2", "02:00:00:00:00:22"),
                ("10.77.0.3", "02:00:00:00:00:33"),
                ("fe80::1", "02:00:00:00:00:03")
            ]
        );
    }

    #[test]
    fn indexes_are_checked() {
        assert_eq!(
            parse_physical_index("2.1.4.10.77.0.1"),
            Some((2, "10.77.0.1".into()))
        );
        assert_eq!(
            parse_physical_index("2.1.10.77.0.1"),
            Some((2, "10.77.0.1".into()))
        );
        assert_eq!(parse_physical_index("2.1.4.10.77"), None);
        assert_eq!(parse_physical_index("2.3.4.10.77.0.1"), None);
        assert_eq!(parse_physical_index("2.1.4.10.77.0.300"), None);
        assert_eq!(parse_media_index("x.1.2.3.4"), None);
        assert_eq!(mac_from_index(&[1, 2, 3, 4, 5, 256]), None);
    }
}
