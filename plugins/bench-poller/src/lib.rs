//! Benchmark fixture: decodes a 48-row interface table per poll and returns
//! one metrics group per interface (or, for resources of class `minimal`,
//! makes one host import and returns one small group). `tests/benches/sandbox.rs` runs the same
//! `workload` natively to measure the sandbox's overhead as a ratio.

mod workload;

use vigil_sdk::prelude::*;

/// Rows per poll, like a typical access switch.
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
        let seed = resource.id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let table = workload::synthetic_table(seed, INTERFACES);
        let rows =
            workload::decode(&table).ok_or_else(|| PluginError::bad_data("malformed row"))?;
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
