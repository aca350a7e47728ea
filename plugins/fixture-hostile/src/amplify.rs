//! Attacks on the host's amplification: outputs that are small or legal
//! as sent, but would make the host allocate, copy or render far more than
//! the plugin paid for (see `host/src/sandbox/validate.rs`).

use std::mem::ManuallyDrop;

use vigil_sdk::prelude::*;

/// `[fixture] groups` tiny groups: cheap to send, but each one used to get
/// a full copy of the polled resource (metadata included).
pub fn many_groups(resource: &Resource) -> Vec<MetricsGroup> {
    let count = config::text("fixture", "groups")
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1000);
    let at = clock::now();
    (0..count)
        .map(|i| {
            MetricsGroupBuilder::new("tiny", 60, resource, at)
                .gauge("i", u64::from(i))
                .build()
        })
        .collect()
}

/// 200 dimension values that all point at one 1 MiB buffer in guest
/// memory: 1 MiB for the guest, 200 MiB for a host that copies each.
#[allow(unsafe_code)]
pub fn aliased_strings(resource: &Resource) -> Vec<MetricsGroup> {
    let buffer = ManuallyDrop::new("x".repeat(1 << 20));
    let at = clock::now();
    (0..200)
        .map(|i| {
            // SAFETY: deliberately not safe: every String aliases `buffer`.
            // The guest never touches them again (panic = abort, and the
            // host refuses the output before the post-return frees them).
            let alias = unsafe {
                String::from_raw_parts(buffer.as_ptr().cast_mut(), buffer.len(), buffer.len())
            };
            MetricsGroupBuilder::new("alias", 60, resource, at)
                .dimension(&format!("d{}", i % 8), alias)
                .gauge("n", 1u64)
                .build()
        })
        .collect()
}

/// One group with 20,000 dimensions of the same name (about 200 KB): made
/// the sinks' label renaming cubic.
pub fn duplicate_dimensions(resource: &Resource) -> Vec<MetricsGroup> {
    let mut builder = MetricsGroupBuilder::new("dup", 60, resource, clock::now());
    for i in 0..20_000u32 {
        builder = builder.dimension("interface", i.to_string());
    }
    vec![builder.gauge("n", 1u64).build()]
}

/// Three groups with 7 KB of labels and 1,000 metrics each: 130 KB sent,
/// 21 MB rendered on `/metrics`, where every sample repeats the labels.
pub fn label_bomb(resource: &Resource) -> Vec<MetricsGroup> {
    let mut builder = MetricsGroupBuilder::new("labels", 60, resource, clock::now());
    for d in 0..7 {
        builder = builder.dimension(&format!("d{d}"), "v".repeat(1000));
    }
    for m in 0..1000u64 {
        builder = builder.gauge(&format!("m{m}"), m);
    }
    vec![builder.build(); 3]
}

/// A group under vigil's own name: `vigil_plugin_runs_total`.
pub fn reserved_group(resource: &Resource) -> Vec<MetricsGroup> {
    vec![
        MetricsGroupBuilder::new("vigil_plugin", 60, resource, clock::now())
            .counter("runs", 1_000_000u64)
            .build(),
    ]
}
