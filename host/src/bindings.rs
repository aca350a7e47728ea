//! Host-side bindings for the `vigil:plugin` WIT package.
//!
//! The `base` world carries the imports every plugin may use; each kind's
//! world reuses them through `with`, so one implementation on
//! [`crate::sandbox::HostState`] serves all four kinds.

wasmtime::component::bindgen!({
    path: "../wit",
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

macro_rules! kind_world {
    ($module:ident, $world:literal) => {
        pub mod $module {
            wasmtime::component::bindgen!({
                path: "../wit",
                world: $world,
                exports: { default: async },
                with: {
                    "vigil:plugin/types": crate::bindings::vigil::plugin::types,
                    "vigil:plugin/log": crate::bindings::vigil::plugin::log,
                    "vigil:plugin/config": crate::bindings::vigil::plugin::config,
                    "vigil:plugin/kv": crate::bindings::vigil::plugin::kv,
                    "vigil:plugin/clock": crate::bindings::vigil::plugin::clock,
                    "vigil:plugin/enrichment-cache": crate::bindings::vigil::plugin::enrichment_cache,
                    "vigil:plugin/snmp": crate::bindings::vigil::plugin::snmp,
                },
            });
        }
    };
}

kind_world!(discovery, "discovery");
kind_world!(enrichment, "enrichment");
kind_world!(polling, "polling");
kind_world!(analysis, "analysis");
