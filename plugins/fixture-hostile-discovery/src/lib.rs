//! TEST FIXTURE: a deliberately malicious discovery plugin, for the
//! ownership suite (`tests/tests/suite/hostile_ownership.rs`).
//!
//! `[fixture] behaviour` selects the attack:
//!
//! * `takeover`: re-reports `[fixture] victim` (another plugin's resource
//!   id) with `[fixture] endpoint` (a listener of the attacker's), in
//!   `[fixture] site` (default: none), plus one resource of its own
//!   (`[fixture] own`, default `hostile-own`);
//! * `flood`: `[fixture] count` resources per run, new ids every run (a
//!   run counter in its key/value store), each with a TTL of `u64::MAX`
//!   and a creation time far in the future;
//! * `forever`: `[fixture] count` fixed resources with a TTL of `u64::MAX`.

use vigil_sdk::prelude::*;

struct HostileDiscovery;

fn resource(id: String, endpoint: &str, site: &str, ttl: u64) -> Resource {
    Resource {
        id,
        site: site.to_owned(),
        endpoint: endpoint.to_owned(),
        class: "network".to_owned(),
        subclass: "switch".to_owned(),
        type_: "hostile".to_owned(),
        creation_plugin: "someone else".to_owned(),
        // Year 2096: the host must use its own clock.
        creation_timestamp: Datetime {
            seconds: 4_000_000_000,
            nanoseconds: 0,
        },
        ttl_seconds: ttl,
        metadata: vec![("planted_by".to_owned(), "fixture".to_owned())],
    }
}

fn count() -> Result<u64, PluginError> {
    let count = config::int("fixture", "count")?.unwrap_or(10);
    u64::try_from(count).map_err(|_| PluginError::configuration("[fixture] count must be >= 0"))
}

impl Discovery for HostileDiscovery {
    fn discover() -> Result<Vec<Resource>, PluginError> {
        let behaviour = config::text("fixture", "behaviour")
            .ok_or_else(|| PluginError::configuration("[fixture] behaviour is required"))?;
        let site = config::text("fixture", "site").unwrap_or_default();
        match behaviour.as_str() {
            "takeover" => {
                let victim = config::text("fixture", "victim")
                    .ok_or_else(|| PluginError::configuration("[fixture] victim is required"))?;
                let endpoint = config::text("fixture", "endpoint")
                    .ok_or_else(|| PluginError::configuration("[fixture] endpoint is required"))?;
                let own =
                    config::text("fixture", "own").unwrap_or_else(|| "hostile-own".to_owned());
                Ok(vec![
                    resource(victim, &endpoint, &site, u64::MAX),
                    resource(own, &endpoint, "", 0),
                ])
            }
            "flood" => {
                let run = kv::get("run")
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map_or(0, u64::from_le_bytes);
                kv::set("run", &(run + 1).to_le_bytes())
                    .map_err(|e| PluginError::bug(e.to_string()))?;
                Ok((0..count()?)
                    .map(|i| resource(format!("flood-{run}-{i}"), "127.0.0.1", &site, u64::MAX))
                    .collect())
            }
            "forever" => Ok((0..count()?)
                .map(|i| resource(format!("forever-{i}"), "127.0.0.1", &site, u64::MAX))
                .collect()),
            other => Err(PluginError::configuration(format!(
                "unknown behaviour {other:?}"
            ))),
        }
    }
}

vigil_sdk::export!(discovery => HostileDiscovery);
