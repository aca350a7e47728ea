//! TEST FIXTURE: a deliberately malicious polling plugin granted SNMP, for
//! the hostile SNMP suite (`tests/tests/suite/hostile_snmp.rs`). Kept apart from
//! `fixture-hostile` so that fixture imports no capability and loads with
//! no grant.
//!
//! `[fixture] behaviour` selects the attack: `snmp-oid-bomb`, `snmp-get`,
//! `snmp-flood` (see `snmp.rs`).

mod snmp;

use vigil_sdk::prelude::*;

struct HostileSnmp;

impl Polling for HostileSnmp {
    fn poll(resource: Resource) -> Result<Vec<MetricsGroup>, PluginError> {
        let behaviour = config::text("fixture", "behaviour")
            .ok_or_else(|| PluginError::configuration("[fixture] behaviour is required"))?;
        snmp::run(&behaviour, &resource)
    }
}

vigil_sdk::export!(polling => HostileSnmp);
