//! `snmp-interface-polling`: interface counters and states of a network
//! device over SNMP, one metrics group per interface, in the shape of
//! Panoptes' `plugin_polling_device_interface_metrics`.
//!
//! # What it reads
//!
//! IF-MIB ifTable and ifXTable (one walk each) and EtherLike-MIB
//! dot3StatsTable (optional). The interfaces are the union of the ifIndex
//! values seen in ifTable and ifXTable. Dimensions come from the cached
//! `interface` enrichment (`snmp-interface-enrichment`; the ini needs
//! `[enrichment] preload = self:interface`); when no cached group exists, or
//! it lacks an interface, the plugin also walks ifStackTable and builds the
//! same enrichment itself with `snmp_mib::interface`, so the dimension values
//! are identical either way.
//!
//! An SNMP error on the ifTable walk fails the run. A failed ifXTable,
//! dot3StatsTable or ifStackTable walk is logged and its data counts as
//! missing, except a timeout or authentication failure, which fails the run.
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
//! character boundary).
//!
//! Counters (`MetricValue::Unsigned`):
//!
//! | metric | source (64-bit first, else 32-bit) |
//! |--------|--------|
//! | `bits_in`, `bits_out` | (ifHCInOctets / ifHCOutOctets, else ifInOctets / ifOutOctets) × 8 |
//! | `unicast_packets_in`, `unicast_packets_out` | ifHCInUcastPkts / ifHCOutUcastPkts, else ifInUcastPkts / ifOutUcastPkts |
//! | `multicast_packets_in`, `multicast_packets_out` | ifHCInMulticastPkts / ifHCOutMulticastPkts, else ifInMulticastPkts / ifOutMulticastPkts |
//! | `broadcast_packets_in`, `broadcast_packets_out` | ifHCInBroadcastPkts / ifHCOutBroadcastPkts, else ifInBroadcastPkts / ifOutBroadcastPkts |
//! | `total_packets_in`, `total_packets_out` | unicast + multicast + broadcast, only when all three are present |
//! | `error_packets_in`, `error_packets_out` | ifInErrors / ifOutErrors |
//! | `discarded_packets_in`, `discarded_packets_out` | ifInDiscards / ifOutDiscards |
//! | `errors_crc` | dot3StatsFCSErrors |
//! | `errors_frame` | dot3StatsAlignmentErrors |
//! | `errors_giants` | dot3StatsFrameTooLongs |
//!
//! Gauges (`MetricValue::Signed`): `admin_state` and `oper_state` (raw
//! ifAdminStatus / ifOperStatus: 1 up, 2 down, ...), `oper_admin_state_mismatch`
//! (1 when both are present and differ, else 0), `mtu` (ifMtu).
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
//! Every group therefore has at least the four gauges. The 32-bit fallbacks
//! are per interface and per counter: an interface whose ifHC* column is
//! missing gets the 32-bit object of the same name.

use std::collections::BTreeMap;

use snmp_mib::interface::{self, DIMENSIONS, NAMESPACE};
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

        let indexes = interface::interface_indexes(&if_table, &if_x_table);
        let enrichments = dimensions_source(&indexes, &if_table, &if_x_table)?;

        let tables = Tables {
            if_table: &if_table,
            if_x_table: &if_x_table,
            dot3_table: &dot3_table,
        };
        let groups: Vec<MetricsGroup> = indexes
            .iter()
            .map(|index| {
                let key = index.to_string();
                let values = enrichments.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                let mut group = MetricsGroupBuilder::new(GROUP_TYPE, interval, &resource, at);
                for name in DIMENSIONS {
                    let value = values
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str());
                    group = group.dimension(name, dimension_value(value));
                }
                tables.metrics(&key, group).build()
            })
            .collect();

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

struct Tables<'a> {
    if_table: &'a Table,
    if_x_table: &'a Table,
    dot3_table: &'a Table,
}

impl Tables<'_> {
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
            ("error_packets_in", counter(if_t, ift::IN_ERRORS, key)),
            ("error_packets_out", counter(if_t, ift::OUT_ERRORS, key)),
            ("discarded_packets_in", counter(if_t, ift::IN_DISCARDS, key)),
            (
                "discarded_packets_out",
                counter(if_t, ift::OUT_DISCARDS, key),
            ),
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
