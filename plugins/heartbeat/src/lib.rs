//! `heartbeat`: the reference vigil polling plugin.
//!
//! It needs no network, so it proves the host's data path anywhere, and it
//! uses every SDK feature a plugin author needs: configuration, the
//! key/value store, logging, the clock, typed errors and the metrics-group
//! builder. For each resource it emits one `heartbeat` group:
//!
//! * `up` (gauge, always 1),
//! * `runs` (counter, how many times this resource was polled; kept in the
//!   plugin's key/value store, so it survives between runs),
//! * `interval_seconds` (gauge, the schedule interval the host reports),
//!
//! with dimensions `resource_class`, `label` when `[heartbeat] label` is
//! set, and any keys listed in `[heartbeat] inventory_dimensions` found in
//! the cached `inventory` enrichment (see `plugins/metadata-enrichment`).

use vigil_sdk::prelude::*;

struct Heartbeat;

impl Polling for Heartbeat {
    fn poll(resource: Resource) -> Result<Vec<MetricsGroup>, PluginError> {
        let interval = clock::interval_seconds();

        let runs = next_run_count(&resource.id)?;
        let mut group =
            MetricsGroupBuilder::new("heartbeat", interval, &resource, clock::scheduled())
                .dimension("resource_class", resource.class.clone());
        if let Some(label) = config::text("heartbeat", "label") {
            group = group.dimension("label", label);
        }
        // Labels from cached enrichment: `[heartbeat] inventory_dimensions =
        // rack,model` with `[enrichment] preload = self:inventory`.
        if let Some(keys) = config::text("heartbeat", "inventory_dimensions") {
            let inventory = enrichment::values("inventory", "resource").unwrap_or_default();
            for key in keys.split(',').map(str::trim) {
                if let Some((_, value)) = inventory.iter().find(|(k, _)| k == key) {
                    group = group.dimension(key, value.clone());
                }
            }
        }
        let group = group
            .gauge("up", 1u64)
            .counter("runs", runs)
            .gauge("interval_seconds", u64::from(interval))
            .build();

        log::emit(
            log::Level::Debug,
            "heartbeat",
            &[("resource", &resource.id), ("runs", &runs.to_string())],
        );
        Ok(vec![group])
    }
}

/// Increments and returns this resource's run counter.
fn next_run_count(resource_id: &str) -> Result<u64, PluginError> {
    let key = format!("runs/{resource_id}");
    let previous = kv::get(&key)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let runs = previous + 1;
    kv::set(&key, &runs.to_le_bytes()).map_err(|e| PluginError::bug(e.to_string()))?;
    Ok(runs)
}

vigil_sdk::export!(polling => Heartbeat);
