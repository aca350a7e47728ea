//! `snmp-interface-enrichment`: caches what each interface of a network
//! device is (name, alias, description, media type, speeds, MAC address,
//! admin/oper status and parent interface) in the enrichment namespace
//! `interface`, keyed by ifIndex, for `snmp-interface-polling` to use as
//! dimensions (Panoptes' `plugin_enrichment_interface`).
//!
//! It walks IF-MIB's ifTable, ifXTable and ifStackTable; the values and
//! their missing-data conventions (`<not set>`, `-1`) are documented in
//! `snmp_mib::interface`.
//!
//! * An SNMP error on the ifTable walk fails the run.
//! * ifXTable and ifStackTable are optional: if walking one fails, the
//!   error is logged and its data counts as missing, except a timeout or
//!   authentication failure, which fails the run.
//!
//! The group's TTL is `[main] enrichment_ttl` when set, else three times
//! the plugin's schedule interval, else `[interface] ttl` (default 900 s).

use snmp_mib::interface::{self, NAMESPACE};
use snmp_mib::{IF_STACK_TABLE, IF_TABLE, IF_X_TABLE, walk_optional};
use vigil_sdk::config::Value;
use vigil_sdk::prelude::*;

/// `[interface] ttl` when nothing else gives a TTL.
const DEFAULT_TTL_SECONDS: u64 = 900;

struct InterfaceEnrichment;

impl Enrichment for InterfaceEnrichment {
    fn enrich(resource: Resource) -> Result<Vec<EnrichmentGroup>, PluginError> {
        let ttl_seconds = ttl_seconds()?;

        let if_table = snmp::walk_table(IF_TABLE).map_err(PluginError::from)?;
        let if_x_table = walk_optional(IF_X_TABLE, "ifXTable")?;
        let if_stack_table = walk_optional(IF_STACK_TABLE, "ifStackTable")?;

        let sets = interface::enrichment_sets(&if_table, &if_x_table, &if_stack_table);
        log::emit(
            log::Level::Debug,
            "interface enrichment",
            &[
                ("resource", &resource.id),
                ("interfaces", &sets.len().to_string()),
                ("ttl_seconds", &ttl_seconds.to_string()),
            ],
        );
        Ok(vec![EnrichmentGroup {
            namespace: NAMESPACE.to_owned(),
            ttl_seconds,
            sets,
        }])
    }
}

/// The TTL of the enrichment group, in seconds (at least 1).
fn ttl_seconds() -> Result<u64, PluginError> {
    if let Some(entry) = config::section("main")
        .into_iter()
        .find(|entry| entry.key == "enrichment_ttl")
    {
        let seconds = match entry.value {
            Value::Integer(seconds) => u64::try_from(seconds).ok(),
            _ => parse_duration_seconds(&entry.raw),
        };
        return seconds.filter(|s| *s > 0).ok_or_else(|| {
            PluginError::configuration(format!(
                "[main] enrichment_ttl: {:?} is not a positive duration (e.g. 900, 15m)",
                entry.raw
            ))
        });
    }
    let interval = u64::from(clock::interval_seconds());
    if interval > 0 {
        return Ok(interval.saturating_mul(3));
    }
    let ttl = config::int("interface", "ttl")?.map_or(Ok(DEFAULT_TTL_SECONDS), |ttl| {
        u64::try_from(ttl).ok().filter(|t| *t > 0).ok_or_else(|| {
            PluginError::configuration("[interface] ttl must be a positive number of seconds")
        })
    })?;
    Ok(ttl)
}

/// Whole seconds in a duration written as vigil's ini files write them
/// (`900`, `90s`, `15m`, `1h30m`, `1500ms`); sub-second parts round up.
fn parse_duration_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(seconds);
    }
    let mut millis: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let value: u64 = rest.get(..digits)?.parse().ok()?;
        rest = rest.get(digits..)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match rest.get(..unit_len)? {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        millis = millis.checked_add(value.checked_mul(scale)?)?;
        rest = rest.get(unit_len..)?;
    }
    Some(millis.div_ceil(1_000))
}

vigil_sdk::export!(enrichment => InterfaceEnrichment);

#[cfg(test)]
mod tests {
    use super::parse_duration_seconds;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_seconds("900"), Some(900));
        assert_eq!(parse_duration_seconds(" 15m "), Some(900));
        assert_eq!(parse_duration_seconds("1h30m"), Some(5400));
        assert_eq!(parse_duration_seconds("90s"), Some(90));
        assert_eq!(parse_duration_seconds("1500ms"), Some(2));
        assert_eq!(parse_duration_seconds(""), None);
        assert_eq!(parse_duration_seconds("m"), None);
        assert_eq!(parse_duration_seconds("5 m"), None);
        assert_eq!(parse_duration_seconds("5d"), None);
        assert_eq!(parse_duration_seconds("-5"), None);
        assert_eq!(parse_duration_seconds("é5s"), None);
        assert_eq!(parse_duration_seconds("99999999999999999999h"), None);
    }
}
