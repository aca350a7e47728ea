//! Benchmark fixture for `tests/benches/sandbox.rs`, which runs the same
//! `workload` natively to measure the sandbox's overhead as a ratio.
//!
//! What a poll does depends on the resource:
//! * class `minimal`: one host import (the clock) and one small group;
//! * metadata `table` present: decodes that interface table (device data
//!   handed in, as an SNMP response would be) into one metrics group per
//!   interface;
//! * otherwise: renders a synthetic 48-row table itself, then decodes it
//!   (dominated by integer formatting).

mod workload;

use vigil_sdk::prelude::*;

/// Rows per poll when the plugin renders its own table.
pub const INTERFACES: usize = 48;

struct BenchPoller;

impl Polling for BenchPoller {
    fn poll(resource: Resource) -> Result<Vec<MetricsGroup>, PluginError> {
        if resource.class == "minimal" {
            // The smallest useful run: one host import, one small group.
            let group = MetricsGroupBuilder::new("minimal", 60, &resource, clock::scheduled())
                .gauge("up", 1u64)
                .build();
            return Ok(vec![group]);
        }
        let given = resource
            .metadata
            .iter()
            .find(|(k, _)| k == "table")
            .map(|(_, v)| v.as_str());
        let rendered;
        let table = match given {
            Some(table) => table,
            None => {
                rendered = workload::synthetic_table(workload::seed(&resource.id), INTERFACES);
                &rendered
            }
        };
        let rows = workload::decode(table).ok_or_else(|| PluginError::bad_data("malformed row"))?;
        let at = clock::scheduled();
        Ok(rows
            .into_iter()
            .map(|row| {
                MetricsGroupBuilder::new("interface", 60, &resource, at)
                    .dimension("interface_name", row.name)
                    .counter("bytes_in", row.octets_in)
                    .counter("bytes_out", row.octets_out)
                    .counter("packets_in", row.packets_in)
                    .counter("packets_out", row.packets_out)
                    .counter("error_packets_in", row.errors)
                    .gauge("utilisation_permille", row.utilisation_permille)
                    .build()
            })
            .collect())
    }
}

vigil_sdk::export!(polling => BenchPoller);
