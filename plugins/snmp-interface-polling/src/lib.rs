//! `snmp-interface-polling`: interface counters and states of a network
//! device over SNMP, one metrics group per interface, in the shape of
//! Panoptes' `plugin_polling_device_interface_metrics`.
//!
//! # What it reads
//!
//! IF-MIB ifTable and ifXTable (one walk each) and EtherLike-MIB
//! dot3StatsTable (optional). Dimensions come from the cached `interface`
//! enrichment (`snmp-interface-enrichment`; the ini needs `[enrichment]
//! preload = self:interface`); when no cached group exists, or it lacks an
//! interface, the plugin also walks ifStackTable and builds the same
//! enrichment itself with `snmp_mib::interface`, so the dimension values are
//! identical either way.
//!
//! An SNMP error on the ifTable walk fails the run. A failed ifXTable,
//! dot3StatsTable or ifStackTable walk is logged, reported missing and its
//! data counts as missing, except a timeout or authentication failure,
//! which fails the run.
//!
//! # Which interfaces become groups
//!
//! IF-MIB's ifXTable augments ifTable, so both should list the same
//! ifIndexes; real agents disagree. Panoptes polled the ifXTable indexes
//! only, which dropped an interface that only ifTable lists (with its
//! 32-bit counters) and failed the whole run on an index that only ifXTable
//! lists. vigil polls every ifIndex of either table **that has data**: at
//! least one counter below (from any of the three tables) or an admin or
//! oper state. An index with nothing else (a speed, a name, a value of the
//! wrong type) yields no group, instead of a group of `-1` gauges.
//!
//! # Output
//!
//! Group type `interface`, interval = the plugin's schedule interval,
//! timestamp = the run's scheduled time.
//!
//! Dimensions, always all ten, in this order: `interface_name`, `alias`,
//! `description`, `media_type`, `port_speed`, `configured_speed`,
//! `parent_interface_name`, `parent_interface_media_type`,
//! `parent_interface_port_speed`, `parent_interface_configured_speed`
//! (`<not set>` when missing or empty; at most 1024 bytes, cut on a
//! character boundary), and `interface_index` (the ifIndex) when the ini
//! says `[dimension] include_interface_index = 1` as in Panoptes (off by
//! default: ifIndexes change when a device or its agent restarts).
//!
//! Counters (`MetricValue::Unsigned`), Panoptes' names:
//!
//! | metric | source (64-bit first, else 32-bit) |
//! |--------|--------|
//! | `bits_in`, `bits_out` | (ifHCInOctets / ifHCOutOctets, else ifInOctets / ifOutOctets) × 8 |
//! | `unicast_packets_in`, `unicast_packets_out` | ifHCInUcastPkts / ifHCOutUcastPkts, else ifInUcastPkts / ifOutUcastPkts |
//! | `multicast_packets_in`, `multicast_packets_out` | ifHCInMulticastPkts / ifHCOutMulticastPkts, else ifInMulticastPkts / ifOutMulticastPkts |
//! | `broadcast_packets_in`, `broadcast_packets_out` | ifHCInBroadcastPkts / ifHCOutBroadcastPkts, else ifInBroadcastPkts / ifOutBroadcastPkts |
//! | `total_packets_in`, `total_packets_out` | unicast + multicast + broadcast, only when all three are present |
//! | `errors_in`, `errors_out` | ifInErrors / ifOutErrors |
//! | `discards_in`, `discards_out` | ifInDiscards / ifOutDiscards |
//! | `errors_crc` | dot3StatsFCSErrors |
//! | `errors_frame` | dot3StatsAlignmentErrors |
//! | `errors_giants` | dot3StatsFrameTooLongs |
//!
//! Gauges (`MetricValue::Signed`): `admin_state` and `oper_state` (raw
//! ifAdminStatus / ifOperStatus: 1 up, 2 down, ...), `oper_admin_state_mismatch`
//! (1 when both are present and differ, else 0), `mtu` (ifMtu) and
//! `configured_speed` (bits/s, the enrichment's `configured_speed`, as in
//! Panoptes).
//!
//! The status group is Panoptes' `interface_polling_status` (set in the
//! ini's `[status]`), next to vigil's generic `polling_status`.
//!
//! # Missing values
//!
//! A metric whose source object the device does not have (absent, an
//! SNMP exception such as noSuchInstance, or a value of the wrong type, e.g.
//! a counter sent as an OctetString) is:
//!
//! * for a **gauge**: emitted as `-1` (signed), like Panoptes'
//!   `_MISSING_METRIC_VALUE`;
//! * for a **counter**: left out of the group. Panoptes emitted `-1` here
//!   too, but a `-1` counter poisons rate transforms (it reads as a reset,
//!   then as a huge jump), so vigil omits it.
//!
//! The 32-bit fallbacks are per interface and per counter: an interface
//! whose ifHC* column is missing gets the 32-bit object of the same name.
//!
//! **Nothing goes missing silently.** What counts as expected: within
//! ifTable and within ifXTable, the counter and state columns the device
//! returned for any interface. An interface whose row has some of them but
//! not all (a cell an agent served past the end of its table, a walk cut
//! short) is reported to the host through the `status` import, one entry
//! per object and ifIndex, as is a table that could not be walked; the
//! host then reports `PARTIAL_METRIC_FAILURE` and names them in the run
//! record. An interface that lacks a whole table (no ifXTable row at all,
//! as low-speed interfaces may) is not a gap.

use std::collections::BTreeMap;

use snmp_mib::interface::{self, CONFIGURED_SPEED, DIMENSIONS, NAMESPACE};
use snmp_mib::{
    DOT3_STATS_TABLE, IF_STACK_TABLE, IF_TABLE, IF_X_TABLE, MISSING_NUMBER, counter,
    dimension_value, dot3_stats_entry as dot3, if_entry as ift, if_x_entry as ifx, integer,
    optional, walk_optional, walk_table_counted,
};
use vigil_sdk::prelude::*;
use vigil_sdk::snmp::Table;

const GROUP_TYPE: &str = "interface";

/// Enrichment values per ifIndex (decimal key).
type Enrichments = BTreeMap<String, Vec<(String, String)>>;

struct InterfacePolling;

impl Polling for InterfacePolling {
    fn poll(resource: Resource) -> Result<Vec<MetricsGroup>, PluginError> {
        let interval = clock::interval_seconds().max(1);
        let at = clock::scheduled();

        let (if_table, if_varbinds) = walk_table_counted(IF_TABLE).map_err(PluginError::from)?;
        let (if_x_table, if_x_varbinds) = optional("ifXTable", walk_table_counted(IF_X_TABLE))?;
        let (dot3_table, dot3_varbinds) =
            optional("dot3StatsTable", walk_table_counted(DOT3_STATS_TABLE))?;

        let include_index = config::bool("dimension", "include_interface_index")?.unwrap_or(false);
        let tables = Tables {
            if_table: &if_table,
            if_x_table: &if_x_table,
            dot3_table: &dot3_table,
        };
        let indexes: Vec<u32> = interface::interface_indexes(&if_table, &if_x_table)
            .into_iter()
            .filter(|index| tables.has_data(&index.to_string()))
            .collect();
        let enrichments = dimensions_source(&indexes, &if_table, &if_x_table)?;

        let groups: Vec<MetricsGroup> = indexes
            .iter()
            .map(|index| {
                let key = index.to_string();
                let values = enrichments.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                let value_of = |name: &str| {
                    values
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                let mut group = MetricsGroupBuilder::new(GROUP_TYPE, interval, &resource, at);
                for name in DIMENSIONS {
                    group = group.dimension(name, dimension_value(value_of(name)));
                }
                if include_index {
                    group = group.dimension("interface_index", key.clone());
                }
                let speed = value_of(CONFIGURED_SPEED)
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(MISSING_NUMBER);
                tables
                    .metrics(&key, group)
                    .gauge("configured_speed", MetricValue::Signed(speed))
                    .build()
            })
            .collect();
        let gaps = missing_cells(&if_table, &if_x_table, &indexes);
        status::missing_metrics(&gaps);

        log::emit(
            log::Level::Debug,
            "interface poll",
            &[
                ("resource", &resource.id),
                ("interfaces", &groups.len().to_string()),
                (
                    "varbinds",
                    &(if_varbinds + if_x_varbinds + dot3_varbinds).to_string(),
                ),
                ("if_table_varbinds", &if_varbinds.to_string()),
                ("if_x_table_varbinds", &if_x_varbinds.to_string()),
                ("dot3_stats_varbinds", &dot3_varbinds.to_string()),
                ("missing", &gaps.len().to_string()),
            ],
        );
        Ok(groups)
    }
}

/// The interface enrichment for `indexes`: the cached group, completed for
/// any interface it lacks by building the enrichment here (one extra
/// ifStackTable walk, only when needed).
fn dimensions_source(
    indexes: &[u32],
    if_table: &Table,
    if_x_table: &Table,
) -> Result<Enrichments, PluginError> {
    let cached = enrichment::get(NAMESPACE);
    let had_cache = cached.is_some();
    let mut enrichments: Enrichments = cached
        .map(|group| {
            group
                .sets
                .into_iter()
                .map(|set| (set.key, set.values))
                .collect()
        })
        .unwrap_or_default();
    let missing = indexes
        .iter()
        .filter(|index| !enrichments.contains_key(&index.to_string()))
        .count();
    if missing == 0 {
        return Ok(enrichments);
    }
    log::emit(
        log::Level::Debug,
        "building interface enrichment locally",
        &[
            ("cached_group", if had_cache { "yes" } else { "no" }),
            ("interfaces_not_cached", &missing.to_string()),
        ],
    );
    let if_stack_table = walk_optional(IF_STACK_TABLE, "ifStackTable")?;
    for set in interface::enrichment_sets(if_table, if_x_table, &if_stack_table) {
        enrichments.entry(set.key).or_insert(set.values);
    }
    Ok(enrichments)
}

/// ifTable columns the plugin reads as metrics, with their MIB names.
const IF_TABLE_COLUMNS: [(u32, &str); 10] = [
    (ift::ADMIN_STATUS, "ifAdminStatus"),
    (ift::OPER_STATUS, "ifOperStatus"),
    (ift::IN_OCTETS, "ifInOctets"),
    (ift::IN_UCAST_PKTS, "ifInUcastPkts"),
    (ift::IN_DISCARDS, "ifInDiscards"),
    (ift::IN_ERRORS, "ifInErrors"),
    (ift::OUT_OCTETS, "ifOutOctets"),
    (ift::OUT_UCAST_PKTS, "ifOutUcastPkts"),
    (ift::OUT_DISCARDS, "ifOutDiscards"),
    (ift::OUT_ERRORS, "ifOutErrors"),
];

/// ifXTable columns the plugin reads as metrics, with their MIB names.
const IF_X_TABLE_COLUMNS: [(u32, &str); 12] = [
    (ifx::IN_MULTICAST_PKTS, "ifInMulticastPkts"),
    (ifx::IN_BROADCAST_PKTS, "ifInBroadcastPkts"),
    (ifx::OUT_MULTICAST_PKTS, "ifOutMulticastPkts"),
    (ifx::OUT_BROADCAST_PKTS, "ifOutBroadcastPkts"),
    (ifx::HC_IN_OCTETS, "ifHCInOctets"),
    (ifx::HC_IN_UCAST_PKTS, "ifHCInUcastPkts"),
    (ifx::HC_IN_MULTICAST_PKTS, "ifHCInMulticastPkts"),
    (ifx::HC_IN_BROADCAST_PKTS, "ifHCInBroadcastPkts"),
    (ifx::HC_OUT_OCTETS, "ifHCOutOctets"),
    (ifx::HC_OUT_UCAST_PKTS, "ifHCOutUcastPkts"),
    (ifx::HC_OUT_MULTICAST_PKTS, "ifHCOutMulticastPkts"),
    (ifx::HC_OUT_BROADCAST_PKTS, "ifHCOutBroadcastPkts"),
];

/// The cells the polled interfaces lack, as `<object> of ifIndex <n>`: per
/// table, the columns the device returned (usable) for any interface, for
/// every polled interface whose row in that table has at least one of them
/// but not this one. See the module doc.
fn missing_cells(if_table: &Table, if_x_table: &Table, indexes: &[u32]) -> Vec<String> {
    let mut gaps = Vec::new();
    for (table, columns) in [
        (if_table, &IF_TABLE_COLUMNS[..]),
        (if_x_table, &IF_X_TABLE_COLUMNS[..]),
    ] {
        let usable = |column: u32, key: &str| {
            if column == ift::ADMIN_STATUS || column == ift::OPER_STATUS {
                integer(table, column, key).is_some()
            } else {
                counter(table, column, key).is_some()
            }
        };
        let keys: Vec<String> = indexes.iter().map(u32::to_string).collect();
        let present: Vec<(u32, &str)> = columns
            .iter()
            .copied()
            .filter(|(column, _)| keys.iter().any(|key| usable(*column, key)))
            .collect();
        for key in &keys {
            if !present.iter().any(|(column, _)| usable(*column, key)) {
                continue;
            }
            for (column, name) in &present {
                if !usable(*column, key) {
                    gaps.push(format!("{name} of ifIndex {key}"));
                }
            }
        }
    }
    gaps
}

struct Tables<'a> {
    if_table: &'a Table,
    if_x_table: &'a Table,
    dot3_table: &'a Table,
}

impl Tables<'_> {
    /// Whether the interface has anything to poll: a counter from any of
    /// the three tables, or an admin or oper state.
    fn has_data(&self, key: &str) -> bool {
        let if_columns = IF_TABLE_COLUMNS.iter().map(|(c, _)| (self.if_table, *c));
        let if_x_columns = IF_X_TABLE_COLUMNS
            .iter()
            .map(|(c, _)| (self.if_x_table, *c));
        let dot3_columns = [
            dot3::FCS_ERRORS,
            dot3::ALIGNMENT_ERRORS,
            dot3::FRAME_TOO_LONGS,
        ]
        .into_iter()
        .map(|c| (self.dot3_table, c));
        integer(self.if_table, ift::ADMIN_STATUS, key).is_some()
            || integer(self.if_table, ift::OPER_STATUS, key).is_some()
            || if_columns
                .chain(if_x_columns)
                .chain(dot3_columns)
                .any(|(table, column)| counter(table, column, key).is_some())
    }

    /// The 64-bit ifXTable column if the interface has it, else the 32-bit
    /// one from `fallback_table`.
    fn hc_or(&self, key: &str, hc: u32, fallback_table: &Table, fallback: u32) -> Option<u64> {
        counter(self.if_x_table, hc, key).or_else(|| counter(fallback_table, fallback, key))
    }

    fn metrics(&self, key: &str, group: MetricsGroupBuilder) -> MetricsGroupBuilder {
        let (if_t, if_x, d3) = (self.if_table, self.if_x_table, self.dot3_table);
        let octets_in = self.hc_or(key, ifx::HC_IN_OCTETS, if_t, ift::IN_OCTETS);
        let octets_out = self.hc_or(key, ifx::HC_OUT_OCTETS, if_t, ift::OUT_OCTETS);
        let ucast_in = self.hc_or(key, ifx::HC_IN_UCAST_PKTS, if_t, ift::IN_UCAST_PKTS);
        let ucast_out = self.hc_or(key, ifx::HC_OUT_UCAST_PKTS, if_t, ift::OUT_UCAST_PKTS);
        let mcast_in = self.hc_or(key, ifx::HC_IN_MULTICAST_PKTS, if_x, ifx::IN_MULTICAST_PKTS);
        let mcast_out = self.hc_or(
            key,
            ifx::HC_OUT_MULTICAST_PKTS,
            if_x,
            ifx::OUT_MULTICAST_PKTS,
        );
        let bcast_in = self.hc_or(key, ifx::HC_IN_BROADCAST_PKTS, if_x, ifx::IN_BROADCAST_PKTS);
        let bcast_out = self.hc_or(
            key,
            ifx::HC_OUT_BROADCAST_PKTS,
            if_x,
            ifx::OUT_BROADCAST_PKTS,
        );
        let total = |a: Option<u64>, b: Option<u64>, c: Option<u64>| {
            Some(a?.wrapping_add(b?).wrapping_add(c?))
        };

        let counters: [(&str, Option<u64>); 17] = [
            ("bits_in", octets_in.map(|o| o.wrapping_mul(8))),
            ("bits_out", octets_out.map(|o| o.wrapping_mul(8))),
            ("unicast_packets_in", ucast_in),
            ("unicast_packets_out", ucast_out),
            ("multicast_packets_in", mcast_in),
            ("multicast_packets_out", mcast_out),
            ("broadcast_packets_in", bcast_in),
            ("broadcast_packets_out", bcast_out),
            ("total_packets_in", total(ucast_in, mcast_in, bcast_in)),
            ("total_packets_out", total(ucast_out, mcast_out, bcast_out)),
            ("errors_in", counter(if_t, ift::IN_ERRORS, key)),
            ("errors_out", counter(if_t, ift::OUT_ERRORS, key)),
            ("discards_in", counter(if_t, ift::IN_DISCARDS, key)),
            ("discards_out", counter(if_t, ift::OUT_DISCARDS, key)),
            ("errors_crc", counter(d3, dot3::FCS_ERRORS, key)),
            ("errors_frame", counter(d3, dot3::ALIGNMENT_ERRORS, key)),
            ("errors_giants", counter(d3, dot3::FRAME_TOO_LONGS, key)),
        ];

        let admin = integer(if_t, ift::ADMIN_STATUS, key);
        let oper = integer(if_t, ift::OPER_STATUS, key);
        let mismatch = match (admin, oper) {
            (Some(admin), Some(oper)) if admin != oper => 1,
            _ => 0,
        };
        let gauges: [(&str, i64); 4] = [
            ("admin_state", admin.unwrap_or(MISSING_NUMBER)),
            ("oper_state", oper.unwrap_or(MISSING_NUMBER)),
            ("oper_admin_state_mismatch", mismatch),
            (
                "mtu",
                integer(if_t, ift::MTU, key).unwrap_or(MISSING_NUMBER),
            ),
        ];

        let group = counters
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v)))
            .fold(group, |group, (name, value)| {
                group.counter(name, MetricValue::Unsigned(value))
            });
        gauges.into_iter().fold(group, |group, (name, value)| {
            group.gauge(name, MetricValue::Signed(value))
        })
    }
}

vigil_sdk::export!(polling => InterfacePolling);
