//! Host-side bindings for the `vigil:plugin` WIT package, shared by the
//! runner and every capability crate.
//!
//! The `base` world carries the imports every plugin may use. Each
//! interface is generated once, here; the runner's four kind worlds reuse
//! these types through bindgen's `with`, and each capability crate
//! implements its interface's `Host` trait on a view of its own state
//! (wasmtime's `HasData` pattern), so a capability never sees the runner's
//! store type and the runner is the only place that composes them.
//!
//! [`convert`] turns WIT values into vigil's model and back: the model (in
//! `vigil-core`) is what the stores, sinks and wire formats use, so a WIT
//! change stops at this crate and the runner.

pub mod convert;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "base",
    imports: {
        // SNMP waits on the network; kv may wait on a disk or a lock (it
        // runs on the blocking pool).
        "vigil:plugin/snmp": async | trappable,
        "vigil:plugin/kv": async | trappable,
        default: trappable,
    },
    additional_derives: [PartialEq],
});

/// The WIT value types (`resource`, `metrics-group`, ...).
pub use vigil::plugin::types as wit;

/// The run's host-call quota, shared by every capability: each import
/// call is charged before it does anything, and past `max` calls the call
/// traps. One counter per run (not per capability), so a plugin cannot
/// multiply its budget by spreading calls over capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCalls {
    used: u64,
    max: u64,
    hit: bool,
}

impl HostCalls {
    /// A budget of `max` calls.
    pub fn new(max: u64) -> HostCalls {
        HostCalls {
            used: 0,
            max,
            hit: false,
        }
    }

    /// Charges one call; past the quota the call traps.
    pub fn charge(&mut self) -> wasmtime::Result<()> {
        self.used += 1;
        if self.used > self.max {
            self.hit = true;
            return Err(wasmtime::Error::msg("host-call quota exceeded"));
        }
        Ok(())
    }

    /// Calls charged so far (including the one refused, if any).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Whether a call was refused for the quota.
    pub fn exhausted(&self) -> bool {
        self.hit
    }
}

/// The `types` interface has no functions: one empty `Host` for it.
pub struct Types;

impl vigil::plugin::types::Host for Types {}

/// `endpoint-observation` has no functions either.
impl vigil::plugin::endpoint_observation::Host for Types {}

/// The endpoint-observation records (`table-snapshot`, ...).
pub use vigil::plugin::endpoint_observation as wit_endpoints;

#[cfg(test)]
mod tests {
    use super::HostCalls;

    #[test]
    fn the_call_past_the_quota_traps_and_is_remembered() {
        let mut calls = HostCalls::new(2);
        assert!(calls.charge().is_ok());
        assert!(calls.charge().is_ok());
        assert!(!calls.exhausted());
        let error = calls.charge().expect_err("third call");
        assert!(error.to_string().contains("host-call quota"), "{error}");
        assert!(calls.exhausted());
        assert_eq!(calls.used(), 3);
    }
}
