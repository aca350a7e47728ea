//! The "interface enrichment": slow-changing facts about each interface,
//! cached by `snmp-interface-enrichment` in the namespace [`NAMESPACE`]
//! and used by `snmp-interface-polling` as metric dimensions.
//!
//! One [`EnrichmentSet`] per ifIndex (key: the ifIndex in decimal) with
//! these values, all text:
//!
//! | key | source |
//! |-----|--------|
//! | `interface_name` | ifName; if empty or missing, ifDescr |
//! | `alias` | ifAlias |
//! | `description` | ifDescr |
//! | `media_type` | ifType as its IANAifType name (unknown numbers in decimal) |
//! | `port_speed`, `configured_speed` | bits/s, see [`configured_speed`] |
//! | `physical_address` | ifPhysAddress as `AA:BB:CC:DD:EE:FF` (Panoptes' `transform_octet_to_mac`) |
//! | `admin_status`, `oper_status` | `up`, `down`, `testing`, `unknown`, `dormant`, `notPresent`, `lowerLayerDown` (other values as the number) |
//! | `parent_interface_name`, `parent_interface_media_type`, `parent_interface_port_speed`, `parent_interface_configured_speed` | the same values of the parent interface (see [`parents`] and [`parent_by_name`]) |
//!
//! Missing text is `<not set>` and a missing number `-1` (Panoptes'
//! conventions); empty strings and values of the wrong type count as
//! missing. Every value is at most 1024 bytes.

use std::collections::{BTreeMap, BTreeSet};

use vigil_sdk::EnrichmentSet;
use vigil_sdk::snmp::{Table, Value};

use crate::{
    MISSING_NUMBER, MISSING_STRING, counter, if_entry, if_status_name, if_x_entry, iftype, integer,
    simple_index, simple_indexes, text, truncate_value,
};

/// The enrichment namespace.
pub const NAMESPACE: &str = "interface";

pub const INTERFACE_NAME: &str = "interface_name";
pub const ALIAS: &str = "alias";
pub const DESCRIPTION: &str = "description";
pub const MEDIA_TYPE: &str = "media_type";
pub const PORT_SPEED: &str = "port_speed";
pub const CONFIGURED_SPEED: &str = "configured_speed";
pub const PHYSICAL_ADDRESS: &str = "physical_address";
pub const ADMIN_STATUS: &str = "admin_status";
pub const OPER_STATUS: &str = "oper_status";
pub const PARENT_INTERFACE_NAME: &str = "parent_interface_name";
pub const PARENT_INTERFACE_MEDIA_TYPE: &str = "parent_interface_media_type";
pub const PARENT_INTERFACE_PORT_SPEED: &str = "parent_interface_port_speed";
pub const PARENT_INTERFACE_CONFIGURED_SPEED: &str = "parent_interface_configured_speed";

/// The enrichment values the interface polling plugin uses as dimensions,
/// in the order it emits them.
pub const DIMENSIONS: [&str; 10] = [
    INTERFACE_NAME,
    ALIAS,
    DESCRIPTION,
    MEDIA_TYPE,
    PORT_SPEED,
    CONFIGURED_SPEED,
    PARENT_INTERFACE_NAME,
    PARENT_INTERFACE_MEDIA_TYPE,
    PARENT_INTERFACE_PORT_SPEED,
    PARENT_INTERFACE_CONFIGURED_SPEED,
];

/// Every ifIndex seen in ifTable or ifXTable, ascending.
pub fn interface_indexes(if_table: &Table, if_x_table: &Table) -> Vec<u32> {
    let mut indexes: BTreeSet<u32> = simple_indexes(if_table).into_iter().collect();
    indexes.extend(simple_indexes(if_x_table));
    indexes.into_iter().collect()
}

/// An interface's speed in bits/s by Panoptes' rule
/// (`plugin_enrichment_interface.get_configured_speed`):
///
/// * ifHighSpeed (Mb/s) × 1,000,000 when it is present and above 1;
/// * otherwise ifSpeed, when present and not 0;
/// * otherwise, when ifSpeed is 0: ifHighSpeed × 1,000,000 if present (so
///   0 or 1,000,000), else -1;
/// * -1 when ifSpeed is missing (and ifHighSpeed is missing, 0 or 1).
pub fn configured_speed(if_speed: Option<u64>, if_high_speed: Option<u64>) -> i64 {
    let mbps = |mbps: u64| i64::try_from(mbps).map_or(i64::MAX, |m| m.saturating_mul(1_000_000));
    match if_high_speed {
        Some(high) if high > 1 => mbps(high),
        _ => match if_speed {
            None => MISSING_NUMBER,
            Some(0) => if_high_speed.map_or(MISSING_NUMBER, mbps),
            Some(speed) => i64::try_from(speed).unwrap_or(i64::MAX),
        },
    }
}

/// Octets as upper-case colon-separated hex (`00:1B:2C:AB:CD:EF`), as
/// Panoptes writes physical addresses; `None` when empty.
pub fn mac_address(octets: &[u8]) -> Option<String> {
    if octets.is_empty() {
        return None;
    }
    let hex: Vec<String> = octets.iter().map(|b| format!("{b:02X}")).collect();
    Some(hex.join(":"))
}

/// The parent an interface's name implies, for devices without an
/// ifStackTable, after Panoptes' vendor enrichment plugins: the part before
/// the first `.` (a sub-interface: Cisco `Gi0/1.100`, Juniper
/// `ge-0/0/0.0`), else before the first `:` (a Juniper channel
/// `xe-0/0/0:1`), else before the first `/` (an Arista lane
/// `Ethernet1/2`).
///
/// Unlike Panoptes, the candidate only counts when the device has an
/// interface of that name (`index_of`), so the parent always has a media
/// type and speeds to copy, and a Cisco `GigabitEthernet0/1` does not get a
/// made-up parent `GigabitEthernet0`. Never the interface itself.
pub fn parent_by_name(name: &str, index_of: impl Fn(&str) -> Option<u32>) -> Option<u32> {
    ['.', ':', '/'].iter().find_map(|separator| {
        let (parent, _) = name.split_once(*separator)?;
        if parent.is_empty() || parent == name {
            return None;
        }
        index_of(parent)
    })
}

/// Each interface's parent from ifStackTable: the lower layer of every
/// `<higher>.<lower>` row, ignoring rows where either is 0 (the top and
/// bottom of the stack) or both are the same; with several lower layers the
/// lowest ifIndex wins.
pub fn parents(if_stack_table: &Table) -> BTreeMap<u32, u32> {
    let mut parents = BTreeMap::new();
    for index in if_stack_table.indexes() {
        let Some((higher, lower)) = index.split_once('.') else {
            continue;
        };
        let (Some(higher), Some(lower)) = (simple_index(higher), simple_index(lower)) else {
            continue;
        };
        if higher == lower {
            continue;
        }
        parents
            .entry(higher)
            .and_modify(|parent: &mut u32| *parent = (*parent).min(lower))
            .or_insert(lower);
    }
    parents
}

/// The values of one interface that its children copy as `parent_*`.
struct Interface {
    name: String,
    alias: String,
    description: String,
    media_type: String,
    speed: i64,
    physical_address: String,
    admin_status: String,
    oper_status: String,
}

fn or_missing(value: Option<String>) -> String {
    truncate_value(value.unwrap_or_else(|| MISSING_STRING.to_owned()))
}

fn read_interface(if_table: &Table, if_x_table: &Table, index: u32) -> Interface {
    let key = index.to_string();
    let description = text(if_table, if_entry::DESCR, &key);
    let name = text(if_x_table, if_x_entry::NAME, &key).or_else(|| description.clone());
    let speed = configured_speed(
        counter(if_table, if_entry::SPEED, &key),
        counter(if_x_table, if_x_entry::HIGH_SPEED, &key),
    );
    let physical_address =
        if_table
            .get(if_entry::PHYS_ADDRESS, &key)
            .and_then(|value| match value {
                Value::OctetString(octets) => mac_address(octets),
                _ => None,
            });
    Interface {
        name: or_missing(name),
        alias: or_missing(text(if_x_table, if_x_entry::ALIAS, &key)),
        description: or_missing(description),
        media_type: or_missing(integer(if_table, if_entry::TYPE, &key).map(iftype::media_type)),
        speed,
        physical_address: or_missing(physical_address),
        admin_status: or_missing(
            integer(if_table, if_entry::ADMIN_STATUS, &key).map(if_status_name),
        ),
        oper_status: or_missing(integer(if_table, if_entry::OPER_STATUS, &key).map(if_status_name)),
    }
}

/// Builds the interface enrichment from walked tables: one set per ifIndex
/// seen in ifTable or ifXTable, ascending. Pass an empty [`Table`] for a
/// table the device does not have (or that could not be walked).
pub fn enrichment_sets(
    if_table: &Table,
    if_x_table: &Table,
    if_stack_table: &Table,
) -> Vec<EnrichmentSet> {
    let interfaces: BTreeMap<u32, Interface> = interface_indexes(if_table, if_x_table)
        .into_iter()
        .map(|index| (index, read_interface(if_table, if_x_table, index)))
        .collect();
    // ifStackTable first; a device without one gets parents from names.
    let mut parents = parents(if_stack_table);
    if parents.is_empty() {
        let by_name: BTreeMap<&str, u32> = interfaces
            .iter()
            .filter(|(_, i)| i.name != MISSING_STRING)
            .map(|(index, i)| (i.name.as_str(), *index))
            .collect();
        for (index, interface) in &interfaces {
            if interface.name == MISSING_STRING {
                continue;
            }
            if let Some(parent) =
                parent_by_name(&interface.name, |n| by_name.get(n).copied()).filter(|p| p != index)
            {
                parents.insert(*index, parent);
            }
        }
    }
    interfaces
        .iter()
        .map(|(index, interface)| {
            let parent = parents.get(index).and_then(|p| interfaces.get(p));
            let parent_text = |field: fn(&Interface) -> &String| {
                parent.map_or_else(|| MISSING_STRING.to_owned(), |p| field(p).clone())
            };
            let parent_speed = parent.map_or(MISSING_NUMBER, |p| p.speed).to_string();
            let values = vec![
                (INTERFACE_NAME, interface.name.clone()),
                (ALIAS, interface.alias.clone()),
                (DESCRIPTION, interface.description.clone()),
                (MEDIA_TYPE, interface.media_type.clone()),
                (PORT_SPEED, interface.speed.to_string()),
                (CONFIGURED_SPEED, interface.speed.to_string()),
                (PHYSICAL_ADDRESS, interface.physical_address.clone()),
                (ADMIN_STATUS, interface.admin_status.clone()),
                (OPER_STATUS, interface.oper_status.clone()),
                (PARENT_INTERFACE_NAME, parent_text(|p| &p.name)),
                (PARENT_INTERFACE_MEDIA_TYPE, parent_text(|p| &p.media_type)),
                (PARENT_INTERFACE_PORT_SPEED, parent_speed.clone()),
                (PARENT_INTERFACE_CONFIGURED_SPEED, parent_speed),
            ];
            EnrichmentSet {
                key: index.to_string(),
                values: values
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value))
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_sdk::snmp::Varbind;

    fn vb(oid: &str, value: Value) -> Varbind {
        Varbind {
            oid: oid.to_owned(),
            value,
        }
    }
    fn s(text: &str) -> Value {
        Value::OctetString(text.as_bytes().to_vec())
    }

    fn tables() -> (Table, Table, Table) {
        let if_table = Table::from_varbinds(
            "1.3.6.1.2.1.2.2.1",
            vec![
                vb("1.3.6.1.2.1.2.2.1.2.1", s("GigabitEthernet0/1")),
                vb("1.3.6.1.2.1.2.2.1.2.2", s("Vlan100")),
                vb("1.3.6.1.2.1.2.2.1.2.3", s("")),
                vb("1.3.6.1.2.1.2.2.1.3.1", Value::Integer(6)),
                vb("1.3.6.1.2.1.2.2.1.3.2", Value::Integer(135)),
                vb("1.3.6.1.2.1.2.2.1.3.3", Value::Integer(4242)),
                vb("1.3.6.1.2.1.2.2.1.5.1", Value::Gauge32(4_294_967_295)),
                vb("1.3.6.1.2.1.2.2.1.5.2", Value::Gauge32(0)),
                vb("1.3.6.1.2.1.2.2.1.5.3", s("fast")),
                vb(
                    "1.3.6.1.2.1.2.2.1.6.1",
                    Value::OctetString(vec![0, 0x1b, 0x2c, 0xAB, 0xcd, 0xEF]),
                ),
                vb("1.3.6.1.2.1.2.2.1.6.2", Value::OctetString(vec![])),
                vb("1.3.6.1.2.1.2.2.1.7.1", Value::Integer(1)),
                vb("1.3.6.1.2.1.2.2.1.7.2", Value::Integer(2)),
                vb("1.3.6.1.2.1.2.2.1.7.3", Value::Integer(99)),
                vb("1.3.6.1.2.1.2.2.1.8.1", Value::Integer(7)),
                vb("1.3.6.1.2.1.2.2.1.8.2", Value::NoSuchInstance),
            ],
        );
        let if_x_table = Table::from_varbinds(
            "1.3.6.1.2.1.31.1.1.1",
            vec![
                vb("1.3.6.1.2.1.31.1.1.1.1.1", s("Gi0/1")),
                vb("1.3.6.1.2.1.31.1.1.1.1.2", s("")),
                vb("1.3.6.1.2.1.31.1.1.1.1.9", s("Tu9")),
                vb("1.3.6.1.2.1.31.1.1.1.15.1", Value::Gauge32(10_000)),
                vb("1.3.6.1.2.1.31.1.1.1.15.2", Value::Gauge32(1)),
                vb("1.3.6.1.2.1.31.1.1.1.18.1", s("uplink\0\0")),
                vb("1.3.6.1.2.1.31.1.1.1.18.2", Value::Integer(5)),
            ],
        );
        let if_stack_table = Table::from_varbinds(
            "1.3.6.1.2.1.31.1.2.1",
            vec![
                vb("1.3.6.1.2.1.31.1.2.1.3.0.2", Value::Integer(1)),
                vb("1.3.6.1.2.1.31.1.2.1.3.2.3", Value::Integer(1)),
                vb("1.3.6.1.2.1.31.1.2.1.3.2.1", Value::Integer(1)),
                vb("1.3.6.1.2.1.31.1.2.1.3.1.0", Value::Integer(1)),
                vb("1.3.6.1.2.1.31.1.2.1.3.9.9", Value::Integer(1)),
            ],
        );
        (if_table, if_x_table, if_stack_table)
    }

    fn value<'a>(sets: &'a [EnrichmentSet], key: &str, name: &str) -> &'a str {
        sets.iter()
            .find(|s| s.key == key)
            .and_then(|s| s.values.iter().find(|(k, _)| k == name))
            .map(|(_, v)| v.as_str())
            .unwrap_or("ABSENT")
    }

    #[test]
    fn builds_sets() {
        let (t, x, st) = tables();
        let sets = enrichment_sets(&t, &x, &st);
        let keys: Vec<&str> = sets.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["1", "2", "3", "9"]);
        assert!(sets.iter().all(|s| s.values.len() == 13));

        assert_eq!(value(&sets, "1", INTERFACE_NAME), "Gi0/1");
        assert_eq!(value(&sets, "1", ALIAS), "uplink");
        assert_eq!(value(&sets, "1", DESCRIPTION), "GigabitEthernet0/1");
        assert_eq!(value(&sets, "1", MEDIA_TYPE), "ethernetCsmacd");
        assert_eq!(value(&sets, "1", PORT_SPEED), "10000000000");
        assert_eq!(value(&sets, "1", CONFIGURED_SPEED), "10000000000");
        assert_eq!(value(&sets, "1", PHYSICAL_ADDRESS), "00:1B:2C:AB:CD:EF");
        assert_eq!(value(&sets, "1", ADMIN_STATUS), "up");
        assert_eq!(value(&sets, "1", OPER_STATUS), "lowerLayerDown");
        assert_eq!(value(&sets, "1", PARENT_INTERFACE_NAME), MISSING_STRING);
        assert_eq!(value(&sets, "1", PARENT_INTERFACE_PORT_SPEED), "-1");

        // Empty ifName falls back to ifDescr; wrong-typed alias is missing.
        assert_eq!(value(&sets, "2", INTERFACE_NAME), "Vlan100");
        assert_eq!(value(&sets, "2", ALIAS), MISSING_STRING);
        assert_eq!(value(&sets, "2", MEDIA_TYPE), "l2vlan");
        // ifHighSpeed 1 and ifSpeed 0: Panoptes gives ifHighSpeed × 10^6.
        assert_eq!(value(&sets, "2", PORT_SPEED), "1000000");
        assert_eq!(value(&sets, "2", PHYSICAL_ADDRESS), MISSING_STRING);
        assert_eq!(value(&sets, "2", OPER_STATUS), MISSING_STRING);
        assert_eq!(value(&sets, "2", ADMIN_STATUS), "down");
        // Two lower layers (3 and 1): the lowest index is the parent.
        assert_eq!(value(&sets, "2", PARENT_INTERFACE_NAME), "Gi0/1");
        assert_eq!(
            value(&sets, "2", PARENT_INTERFACE_MEDIA_TYPE),
            "ethernetCsmacd"
        );
        assert_eq!(
            value(&sets, "2", PARENT_INTERFACE_PORT_SPEED),
            "10000000000"
        );
        assert_eq!(
            value(&sets, "2", PARENT_INTERFACE_CONFIGURED_SPEED),
            "10000000000"
        );

        // Empty ifDescr and no ifName: missing; unknown ifType as the number;
        // a speed of the wrong type is missing.
        assert_eq!(value(&sets, "3", INTERFACE_NAME), MISSING_STRING);
        assert_eq!(value(&sets, "3", DESCRIPTION), MISSING_STRING);
        assert_eq!(value(&sets, "3", MEDIA_TYPE), "4242");
        assert_eq!(value(&sets, "3", PORT_SPEED), "-1");
        assert_eq!(value(&sets, "3", ADMIN_STATUS), "99");

        // Only in ifXTable; a self-stacked row is ignored.
        assert_eq!(value(&sets, "9", INTERFACE_NAME), "Tu9");
        assert_eq!(value(&sets, "9", MEDIA_TYPE), MISSING_STRING);
        assert_eq!(value(&sets, "9", PARENT_INTERFACE_NAME), MISSING_STRING);
    }

    #[test]
    fn speeds() {
        assert_eq!(configured_speed(Some(100_000_000), None), 100_000_000);
        assert_eq!(configured_speed(Some(100_000_000), Some(0)), 100_000_000);
        assert_eq!(configured_speed(Some(100_000_000), Some(1)), 100_000_000);
        assert_eq!(configured_speed(Some(1), Some(100_000)), 100_000_000_000);
        assert_eq!(configured_speed(None, Some(100)), 100_000_000);
        assert_eq!(configured_speed(None, None), -1);
        assert_eq!(configured_speed(None, Some(1)), -1);
        assert_eq!(configured_speed(Some(0), Some(0)), 0);
        assert_eq!(configured_speed(Some(0), None), -1);
        assert_eq!(
            configured_speed(Some(0), Some(u64::from(u32::MAX))),
            4_294_967_295_000_000
        );
    }

    #[test]
    fn truncates_long_values() {
        let long = "x".repeat(5000);
        let t = Table::from_varbinds(
            "1.3.6.1.2.1.2.2.1",
            vec![vb("1.3.6.1.2.1.2.2.1.2.1", s(&long))],
        );
        let sets = enrichment_sets(&t, &Table::default(), &Table::default());
        assert!(sets[0].values.iter().all(|(_, v)| v.len() <= 1024));
        assert_eq!(value(&sets, "1", INTERFACE_NAME).len(), 1024);
    }

    #[test]
    fn parents_ignore_junk() {
        let st = Table::from_varbinds(
            "1.3.6.1.2.1.31.1.2.1",
            vec![
                vb("1.3.6.1.2.1.31.1.2.1.3.5", Value::Integer(1)),
                vb("1.3.6.1.2.1.31.1.2.1.3.5.6.7", Value::Integer(1)),
                vb("1.3.6.1.2.1.31.1.2.1.3.5.x", Value::Integer(1)),
                vb("1.3.6.1.2.1.31.1.2.1.3.7.4", Value::Integer(1)),
            ],
        );
        let p = parents(&st);
        assert_eq!(p.len(), 1);
        assert_eq!(p.get(&7), Some(&4));
    }
}
