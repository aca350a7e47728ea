//! The bundled SNMP plugins' MIB logic (`plugins/snmp-mib`), property-tested
//! natively: how interface enrichment derives parents from names when a
//! device has no ifStackTable, and how it writes physical addresses.

use std::collections::BTreeMap;

use proptest::prelude::*;
use snmp_mib::interface::{self, mac_address, parent_by_name};
use vigil_sdk::snmp::{Table, Value, Varbind};

const IF_TABLE_ENTRY: &str = "1.3.6.1.2.1.2.2.1";
const IF_X_TABLE_ENTRY: &str = "1.3.6.1.2.1.31.1.1.1";

/// ifTable (type, speed) and ifXTable (name) for `names`, ifIndex 1.. in
/// order.
fn tables(names: &[String]) -> (Table, Table) {
    let mut if_rows = Vec::new();
    let mut if_x_rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let index = i + 1;
        if_rows.push(Varbind {
            oid: format!("{IF_TABLE_ENTRY}.3.{index}"),
            value: Value::Integer(if name.contains('.') { 135 } else { 6 }),
        });
        if_rows.push(Varbind {
            oid: format!("{IF_TABLE_ENTRY}.5.{index}"),
            value: Value::Gauge32(u32::try_from(index).unwrap_or(0) * 1_000_000),
        });
        if_x_rows.push(Varbind {
            oid: format!("{IF_X_TABLE_ENTRY}.1.{index}"),
            value: Value::OctetString(name.as_bytes().to_vec()),
        });
    }
    (
        Table::from_varbinds(IF_TABLE_ENTRY, if_rows),
        Table::from_varbinds(IF_X_TABLE_ENTRY, if_x_rows),
    )
}

fn values(set: &vigil_sdk::EnrichmentSet) -> BTreeMap<&str, &str> {
    set.values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Interface-like names: a base, optionally with `/n`, `:n` and `.n`
/// parts, as vendors write them.
fn interface_name() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "Ethernet",
            "ge-0",
            "xe-1",
            "Gi0",
            "Port-Channel",
            "et",
        ]),
        prop::option::of(1u8..4),
        prop::option::of(0u8..4),
        prop::option::of(0u16..300),
    )
        .prop_map(|(base, slash, colon, dot)| {
            let mut name = base.to_owned();
            if let Some(s) = slash {
                name.push_str(&format!("/{s}"));
            }
            if let Some(c) = colon {
                name.push_str(&format!(":{c}"));
            }
            if let Some(d) = dot {
                name.push_str(&format!(".{d}"));
            }
            name
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A name-derived parent is another interface of the device, named by
    /// the part before the first `.`, else `:`, else `/`, and carries
    /// that interface's media type and speed.
    #[test]
    fn parents_from_names_are_real_interfaces_of_the_device(
        names in prop::collection::vec(interface_name(), 1..12)
    ) {
        let (if_table, if_x_table) = tables(&names);
        let sets = interface::enrichment_sets(&if_table, &if_x_table, &Table::default());
        let by_index: BTreeMap<&str, BTreeMap<&str, &str>> =
            sets.iter().map(|s| (s.key.as_str(), values(s))).collect();
        for set in &sets {
            let own = values(set);
            let name = own["interface_name"];
            let parent = own["parent_interface_name"];
            // The same rule, written independently: the first separator
            // whose prefix names an interface of the device.
            let expected = ['.', ':', '/'].iter().find_map(|sep| {
                let (prefix, _) = name.split_once(*sep)?;
                let index = names.iter().rposition(|n| n == prefix)?;
                (prefix != name && (index + 1).to_string() != set.key).then_some(index + 1)
            });
            match expected {
                None => {
                    prop_assert_eq!(parent, "<not set>", "{} in {:?}", name, names);
                    prop_assert_eq!(own["parent_interface_port_speed"], "-1");
                }
                Some(index) => {
                    let parent_set = &by_index[index.to_string().as_str()];
                    prop_assert_eq!(parent, parent_set["interface_name"]);
                    prop_assert_ne!(parent, name);
                    prop_assert_eq!(own["parent_interface_media_type"], parent_set["media_type"]);
                    prop_assert_eq!(own["parent_interface_port_speed"], parent_set["port_speed"]);
                    prop_assert_eq!(
                        own["parent_interface_configured_speed"],
                        parent_set["configured_speed"]
                    );
                }
            }
        }
    }

    /// A physical address is its octets in upper-case hex pairs joined by
    /// `:`, as Panoptes writes them, and reads back to the same octets.
    #[test]
    fn physical_addresses_are_upper_case_colon_separated(
        octets in prop::collection::vec(any::<u8>(), 1..20)
    ) {
        let text = mac_address(&octets).expect("non-empty");
        prop_assert!(!text.chars().any(|c| c.is_ascii_lowercase()));
        let back: Vec<u8> = text
            .split(':')
            .map(|pair| u8::from_str_radix(pair, 16).expect("hex pair"))
            .collect();
        prop_assert_eq!(back, octets);
    }
}

#[test]
fn the_stack_table_wins_over_names_and_names_need_a_real_interface() {
    let names: Vec<String> = ["Ethernet1", "Ethernet1/1", "GigabitEthernet0/1", "Vlan10.5"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let (if_table, if_x_table) = tables(&names);

    let by_name = interface::enrichment_sets(&if_table, &if_x_table, &Table::default());
    let parent = |sets: &[vigil_sdk::EnrichmentSet], key: &str| {
        sets.iter()
            .find(|s| s.key == key)
            .map(|s| values(s)["parent_interface_name"].to_owned())
    };
    // Arista lane: the part before `/`, which the device has.
    assert_eq!(parent(&by_name, "2").as_deref(), Some("Ethernet1"));
    // No interface "GigabitEthernet0" or "Vlan10": no made-up parent.
    assert_eq!(parent(&by_name, "3").as_deref(), Some("<not set>"));
    assert_eq!(parent(&by_name, "4").as_deref(), Some("<not set>"));

    // An ifStackTable saying 2 sits on 3 is believed instead.
    let stack = Table::from_varbinds(
        "1.3.6.1.2.1.31.1.2.1",
        vec![Varbind {
            oid: "1.3.6.1.2.1.31.1.2.1.3.2.3".to_owned(),
            value: Value::Integer(1),
        }],
    );
    let stacked = interface::enrichment_sets(&if_table, &if_x_table, &stack);
    assert_eq!(parent(&stacked, "2").as_deref(), Some("GigabitEthernet0/1"));
    assert_eq!(parent(&stacked, "1").as_deref(), Some("<not set>"));

    assert_eq!(parent_by_name("Ethernet1/1", |_| None), None);
    assert_eq!(
        parent_by_name("ge-0/0/0.0", |n| (n == "ge-0/0/0").then_some(7)),
        Some(7)
    );
    assert_eq!(
        parent_by_name("xe-0/0/0:1", |n| (n == "xe-0/0/0").then_some(8)),
        Some(8)
    );
}
