//! `metadata-enrichment`: caches each resource's inventory metadata in the
//! enrichment namespace `inventory` (key `resource`), so polling plugins can
//! label their metrics with it (`[enrichment] preload = self:inventory`).
//!
//! `[inventory] ttl` (seconds, default 600) sets how long the host keeps it;
//! `[inventory] keys` (comma-separated) limits which metadata keys are
//! copied (default: all).

use vigil_sdk::prelude::*;

struct MetadataEnrichment;

impl Enrichment for MetadataEnrichment {
    fn enrich(resource: Resource) -> Result<Vec<EnrichmentGroup>, PluginError> {
        let ttl = config::int("inventory", "ttl")?.unwrap_or(600);
        let ttl = u64::try_from(ttl).ok().filter(|t| *t > 0).ok_or_else(|| {
            PluginError::configuration("[inventory] ttl must be a positive number of seconds")
        })?;
        let wanted: Option<Vec<String>> = config::text("inventory", "keys")
            .map(|keys| keys.split(',').map(|k| k.trim().to_owned()).collect());
        let values: Vec<(String, String)> = resource
            .metadata
            .into_iter()
            .filter(|(key, _)| wanted.as_ref().is_none_or(|w| w.contains(key)))
            .collect();
        Ok(vec![EnrichmentGroup {
            namespace: "inventory".to_owned(),
            ttl_seconds: ttl,
            sets: vec![EnrichmentSet {
                key: "resource".to_owned(),
                values,
            }],
        }])
    }
}

vigil_sdk::export!(enrichment => MetadataEnrichment);
