//! Cached enrichment data (interface names, speeds...) for the resource
//! being polled. Only namespaces the plugin's ini preloads are visible:
//! `[enrichment] preload = self:interface`.

use crate::__private::vigil::plugin::enrichment_cache as host;
use crate::EnrichmentGroup;

/// The cached group `namespace` for the polled resource, if any.
pub fn get(namespace: &str) -> Option<EnrichmentGroup> {
    host::get(namespace)
}

/// The values cached under `key` (e.g. an interface index) in `namespace`.
pub fn values(namespace: &str, key: &str) -> Option<Vec<(String, String)>> {
    get(namespace)?
        .sets
        .into_iter()
        .find(|set| set.key == key)
        .map(|set| set.values)
}
