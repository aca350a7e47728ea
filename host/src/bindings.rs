//! The five plugin worlds (discovery, enrichment, polling, analysis,
//! endpoint-collection) as the runner instantiates them.
//!
//! Every import interface is generated once, in `vigil-wit`; each kind's
//! world reuses those types through `with`, so one implementation per
//! capability (in `vigil-capabilities` and `vigil-cap-snmp`) serves all
//! four kinds.

macro_rules! kind_world {
    ($module:ident, $world:literal) => {
        pub mod $module {
            wasmtime::component::bindgen!({
                path: "../wit",
                world: $world,
                exports: { default: async },
                with: {
                    "vigil:plugin/types": vigil_wit::vigil::plugin::types,
                    "vigil:plugin/log": vigil_wit::vigil::plugin::log,
                    "vigil:plugin/config": vigil_wit::vigil::plugin::config,
                    "vigil:plugin/kv": vigil_wit::vigil::plugin::kv,
                    "vigil:plugin/clock": vigil_wit::vigil::plugin::clock,
                    "vigil:plugin/enrichment-cache": vigil_wit::vigil::plugin::enrichment_cache,
                    "vigil:plugin/snmp": vigil_wit::vigil::plugin::snmp,
                    "vigil:plugin/status": vigil_wit::vigil::plugin::status,
                    "vigil:plugin/endpoint-observation": vigil_wit::vigil::plugin::endpoint_observation,
                },
            });
        }
    };
}

kind_world!(discovery, "discovery");
kind_world!(enrichment, "enrichment");
kind_world!(polling, "polling");
kind_world!(analysis, "analysis");
kind_world!(endpoints, "endpoint-collection");
