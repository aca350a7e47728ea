//! Enrichment groups cached per (resource, namespace) until their TTL, for
//! polling plugins to read through the `enrichment-cache` import.
//!
//! In this process's memory by default; in Redis when agents share a site
//! (`[cache] backend = "redis"`), with the local copy as the fallback while
//! Redis is unreachable.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::coordination::shared::RedisEnrichments;
use crate::model::EnrichmentGroup;

fn effective_ttl(group: &EnrichmentGroup, max_ttl: Option<f64>) -> f64 {
    max_ttl.map_or(group.ttl_seconds as f64, |max| {
        (group.ttl_seconds as f64).min(max)
    })
}

#[derive(Default)]
pub struct EnrichmentCache {
    entries: Mutex<HashMap<(String, String), (EnrichmentGroup, f64)>>,
    shared: Option<RedisEnrichments>,
}

impl EnrichmentCache {
    pub fn shared(redis: RedisEnrichments) -> EnrichmentCache {
        EnrichmentCache {
            entries: Mutex::default(),
            shared: Some(redis),
        }
    }

    /// Caches `groups` for `resource_id`, each until `now + min(ttl, max_ttl)`.
    pub async fn put(
        &self,
        resource_id: &str,
        groups: Vec<EnrichmentGroup>,
        now: f64,
        max_ttl: Option<f64>,
    ) {
        if let Some(shared) = &self.shared {
            let with_ttl: Vec<(EnrichmentGroup, f64)> = groups
                .iter()
                .map(|g| (g.clone(), effective_ttl(g, max_ttl)))
                .collect();
            if let Err(e) = shared.put(resource_id, &with_ttl).await {
                tracing::warn!(error = %e, resource = resource_id, "enrichment not saved in redis; kept locally");
            }
        }
        self.put_local(resource_id, groups, now, max_ttl);
    }

    fn put_local(
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
            let ttl = effective_ttl(&group, max_ttl);
            entries.insert(
                (resource_id.to_owned(), group.namespace.clone()),
                (group, now + ttl),
            );
        }
    }

    /// The fresh groups of `namespaces` for `resource_id`.
    pub async fn get(
        &self,
        resource_id: &str,
        namespaces: &[String],
        now: f64,
    ) -> Vec<EnrichmentGroup> {
        if namespaces.is_empty() {
            return Vec::new();
        }
        if let Some(shared) = &self.shared {
            match shared.get(resource_id, namespaces).await {
                Ok(groups) => return groups,
                Err(e) => {
                    tracing::warn!(error = %e, "enrichment cache unreachable in redis; using the local copy");
                }
            }
        }
        self.get_local(resource_id, namespaces, now)
    }

    fn get_local(
        &self,
        resource_id: &str,
        namespaces: &[String],
        now: f64,
    ) -> Vec<EnrichmentGroup> {
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

    #[tokio::test]
    async fn scoped_to_resource_and_namespace_and_expires() {
        let cache = EnrichmentCache::default();
        cache
            .put(
                "sw1",
                vec![group("interface", 100), group("device", 10)],
                0.0,
                Some(50.0),
            )
            .await;
        let ns = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(cache.get("sw1", &ns(&["interface"]), 1.0).await.len(), 1);
        assert!(
            cache.get("sw2", &ns(&["interface"]), 1.0).await.is_empty(),
            "other resources are invisible"
        );
        assert!(
            cache.get("sw1", &ns(&[]), 1.0).await.is_empty(),
            "nothing unless preloaded"
        );
        assert_eq!(
            cache
                .get("sw1", &ns(&["interface", "device"]), 20.0)
                .await
                .len(),
            1,
            "device expired at 10 s"
        );
        assert!(
            cache.get("sw1", &ns(&["interface"]), 60.0).await.is_empty(),
            "capped by the plugin's max TTL"
        );
        assert_eq!(cache.sweep(60.0), 2);
    }
}
