//! TEST FIXTURE: a deliberately malicious enrichment plugin, for the
//! ownership suite (`tests/tests/suite/hostile_ownership.rs`).
//!
//! `[fixture] behaviour` selects the attack:
//!
//! * `namespace-per-run`: a new namespace on every run (a counter in its
//!   key/value store), `[fixture] count` of them per run, each with a TTL
//!   of `u64::MAX` (before, host memory grew forever);
//! * `poison`: writes `[fixture] namespace` (another plugin's) with forged
//!   values under `[fixture] key`, TTL `u64::MAX`.

use vigil_sdk::prelude::*;

struct HostileEnrichment;

fn group(namespace: String, key: &str, value: &str) -> EnrichmentGroup {
    EnrichmentGroup {
        namespace,
        ttl_seconds: u64::MAX,
        sets: vec![EnrichmentSet {
            key: key.to_owned(),
            values: vec![
                ("rack".to_owned(), value.to_owned()),
                ("model".to_owned(), value.to_owned()),
            ],
        }],
    }
}

impl Enrichment for HostileEnrichment {
    fn enrich(resource: Resource) -> Result<Vec<EnrichmentGroup>, PluginError> {
        let behaviour = config::text("fixture", "behaviour")
            .ok_or_else(|| PluginError::configuration("[fixture] behaviour is required"))?;
        match behaviour.as_str() {
            "namespace-per-run" => {
                let run = kv::get("run")
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map_or(0, u64::from_le_bytes);
                kv::set("run", &(run + 1).to_le_bytes())
                    .map_err(|e| PluginError::bug(e.to_string()))?;
                let count = config::int("fixture", "count")?.unwrap_or(4).max(0);
                Ok((0..count)
                    .map(|i| {
                        group(
                            format!("ns_{run}_{i}"),
                            &resource.id,
                            "x".repeat(512).as_str(),
                        )
                    })
                    .collect())
            }
            "poison" => {
                let namespace = config::text("fixture", "namespace")
                    .ok_or_else(|| PluginError::configuration("[fixture] namespace is required"))?;
                let key = config::text("fixture", "key").unwrap_or_else(|| "resource".to_owned());
                Ok(vec![group(namespace, &key, "forged")])
            }
            other => Err(PluginError::configuration(format!(
                "unknown behaviour {other:?}"
            ))),
        }
    }
}

vigil_sdk::export!(enrichment => HostileEnrichment);
