//! Enrichment groups cached per (resource, namespace) until their TTL, for
//! polling plugins to read through the `enrichment-cache` import.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::EnrichmentGroup;

#[derive(Default)]
pub struct EnrichmentCache {
    entries: Mutex<HashMap<(String, String), (EnrichmentGroup, f64)>>,
}

impl EnrichmentCache {
    /// Caches `groups` for `resource_id`, each until `now + min(ttl, max_ttl)`.
    pub fn put(
        &self,
        resource_id: &str,
        groups: Vec<EnrichmentGroup>,
        now: f64,
        max_ttl: Option<f64>,
    ) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for group in groups {
            let ttl = max_ttl.map_or(group.ttl_seconds as f64, |max| {
                (group.ttl_seconds as f64).min(max)
            });
            entries.insert(
                (resource_id.to_owned(), group.namespace.clone()),
                (group, now + ttl),
            );
        }
    }

    /// The fresh groups of `namespaces` for `resource_id`.
    pub fn get(&self, resource_id: &str, namespaces: &[String], now: f64) -> Vec<EnrichmentGroup> {
        if namespaces.is_empty() {
            return Vec::new();
        }
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        namespaces
            .iter()
            .filter_map(|ns| entries.get(&(resource_id.to_owned(), ns.clone())))
            .filter(|(_, expires)| *expires > now)
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// Drops expired groups; returns how many.
    pub fn sweep(&self, now: f64) -> usize {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = entries.len();
        entries.retain(|_, (_, expires)| *expires > now);
        before - entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EnrichmentSet;

    fn group(namespace: &str, ttl: u64) -> EnrichmentGroup {
        EnrichmentGroup {
            namespace: namespace.into(),
            ttl_seconds: ttl,
            sets: vec![EnrichmentSet {
                key: "1".into(),
                values: vec![("name".into(), "ge-0/0/0".into())],
            }],
        }
    }

    #[test]
    fn scoped_to_resource_and_namespace_and_expires() {
        let cache = EnrichmentCache::default();
        cache.put(
            "sw1",
            vec![group("interface", 100), group("device", 10)],
            0.0,
            Some(50.0),
        );
        let ns = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(cache.get("sw1", &ns(&["interface"]), 1.0).len(), 1);
        assert!(
            cache.get("sw2", &ns(&["interface"]), 1.0).is_empty(),
            "other resources are invisible"
        );
        assert!(
            cache.get("sw1", &ns(&[]), 1.0).is_empty(),
            "nothing unless preloaded"
        );
        assert_eq!(
            cache.get("sw1", &ns(&["interface", "device"]), 20.0).len(),
            1,
            "device expired at 10 s"
        );
        assert!(
            cache.get("sw1", &ns(&["interface"]), 60.0).is_empty(),
            "capped by the plugin's max TTL"
        );
        assert_eq!(cache.sweep(60.0), 2);
    }
}
