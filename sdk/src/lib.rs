//! Write vigil plugins in ordinary Rust.
//!
//! A plugin is a struct implementing one of [`Discovery`], [`Enrichment`],
//! [`Polling`], [`Analysis`] or [`Endpoints`], exported with [`export!`]. Build it with
//! `cargo build --release --target wasm32-wasip2` and the `.wasm` it produces
//! is a component the vigil host can load. See `sdk/README.md` for the whole
//! path from an empty crate to a loaded plugin.
//!
//! ```no_run
//! use vigil_sdk::prelude::*;
//!
//! struct Uptime;
//!
//! impl Polling for Uptime {
//!     fn poll(resource: Resource) -> Result<Vec<MetricsGroup>, PluginError> {
//!         let now = clock::scheduled();
//!         let group = MetricsGroupBuilder::new("device", 60, &resource, now)
//!             .gauge("up", 1u64)
//!             .build();
//!         Ok(vec![group])
//!     }
//! }
//!
//! vigil_sdk::export!(polling => Uptime);
//! ```
//!
//! Everything a plugin can reach goes through the modules here: [`log`],
//! [`config`], [`kv`], [`clock`], [`enrichment`], [`snmp`] and [`status`]. The host decides what each call may do
//! and how often.

// Lets the generated bindings name this crate by an absolute path, which is
// also what the export macros expand to inside a plugin crate.
extern crate self as vigil_sdk;

mod builders;
pub mod clock;
pub mod config;
pub mod enrichment;
pub mod kv;
pub mod log;
pub mod snmp;
pub mod status;

pub use builders::MetricsGroupBuilder;

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    // The imports every plugin may use, generated once. The per-kind worlds
    // below map these interfaces onto this module with `with`, so each
    // world's bindings only contain its export, and only the exported
    // world's type information is linked into a plugin.
    wit_bindgen::generate!({
        path: "../wit",
        world: "base",
        runtime_path: "::vigil_sdk::__private::wit_bindgen::rt",
    });

    macro_rules! world_bindings {
        ($module:ident, $world:literal, $export_macro:literal) => {
            pub mod $module {
                wit_bindgen::generate!({
                    path: "../wit",
                    world: $world,
                    runtime_path: "::vigil_sdk::__private::wit_bindgen::rt",
                    with: {
                        "vigil:plugin/types@0.1.0": ::vigil_sdk::__private::vigil::plugin::types,
                        "vigil:plugin/log@0.1.0": ::vigil_sdk::__private::vigil::plugin::log,
                        "vigil:plugin/config@0.1.0": ::vigil_sdk::__private::vigil::plugin::config,
                        "vigil:plugin/kv@0.1.0": ::vigil_sdk::__private::vigil::plugin::kv,
                        "vigil:plugin/clock@0.1.0": ::vigil_sdk::__private::vigil::plugin::clock,
                        "vigil:plugin/enrichment-cache@0.1.0": ::vigil_sdk::__private::vigil::plugin::enrichment_cache,
                        "vigil:plugin/snmp@0.1.0": ::vigil_sdk::__private::vigil::plugin::snmp,
                        "vigil:plugin/status@0.1.0": ::vigil_sdk::__private::vigil::plugin::status,
                        "vigil:plugin/endpoint-observation@0.1.0": ::vigil_sdk::__private::vigil::plugin::endpoint_observation,
                    },
                    pub_export_macro: true,
                    export_macro_name: $export_macro,
                });
            }
        };
    }

    world_bindings!(discovery, "discovery", "__export_discovery");
    world_bindings!(enrichment, "enrichment", "__export_enrichment");
    world_bindings!(polling, "polling", "__export_polling");
    world_bindings!(analysis, "analysis", "__export_analysis");
    world_bindings!(endpoints, "endpoint-collection", "__export_endpoints");
}

pub use __private::vigil::plugin::types::{
    AddressFamily, Analysis as AnalysisResult, Datetime, Dimension, EndpointEvent,
    EndpointEventKind, EnrichmentGroup, EnrichmentSet, ErrorKind, Finding, FindingKind, Metric,
    MetricType, MetricValue, MetricsGroup, PluginError, Resource, Severity,
};

/// Address-table observations, what an [`Endpoints`] plugin returns.
pub use __private::vigil::plugin::endpoint_observation::{
    EntryState, TableEntry, TableKind, TableSnapshot,
};

/// The metrics-group schema version vigil speaks (Panoptes v0.2).
pub const SCHEMA_VERSION: &str = "0.2";

/// A discovery plugin: finds the resources other plugins work on.
pub trait Discovery {
    fn discover() -> Result<Vec<Resource>, PluginError>;
}

/// An enrichment plugin: attaches slow-changing data to one resource.
pub trait Enrichment {
    fn enrich(resource: Resource) -> Result<Vec<EnrichmentGroup>, PluginError>;
}

/// A polling plugin: collects metrics from one resource.
pub trait Polling {
    fn poll(resource: Resource) -> Result<Vec<MetricsGroup>, PluginError>;
}

/// An endpoint-analysis plugin: judges one endpoint event, given the state
/// it returned for the same endpoint last time.
pub trait Analysis {
    fn analyze(
        event: EndpointEvent,
        prior_state: Option<Vec<u8>>,
    ) -> Result<AnalysisResult, PluginError>;
}

/// An endpoints plugin: reads one device's address tables (ARP/neighbour,
/// bridge forwarding) as whole snapshots; the host turns successive
/// snapshots into endpoint events. Mark a snapshot `complete: false` when
/// any part of its table could not be read: the host then never treats a
/// missing row as deleted.
pub trait Endpoints {
    fn collect(resource: Resource) -> Result<Vec<TableSnapshot>, PluginError>;
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: message.into(),
        }
    }
    /// The resource did not answer.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceUnreachable, message)
    }
    /// The resource answered with data the plugin cannot use.
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadDeviceData, message)
    }
    /// Something is wrong in the plugin itself.
    pub fn bug(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PluginBug, message)
    }
    /// The plugin's configuration is missing or wrong.
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Configuration, message)
    }
}

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::{
        Analysis, AnalysisResult, Datetime, Dimension, Discovery, EndpointEvent, Endpoints,
        Enrichment, EnrichmentGroup, EnrichmentSet, EntryState, ErrorKind, Finding, FindingKind,
        Metric, MetricType, MetricValue, MetricsGroup, MetricsGroupBuilder, PluginError, Polling,
        Resource, SCHEMA_VERSION, Severity, TableEntry, TableKind, TableSnapshot, clock, config,
        enrichment, kv, log, snmp, status,
    };
}

/// Export a plugin type as the component's entry point.
///
/// ```ignore
/// vigil_sdk::export!(polling => MyPoller);     // MyPoller: Polling
/// vigil_sdk::export!(discovery => MyFinder);   // MyFinder: Discovery
/// vigil_sdk::export!(enrichment => MyEnricher);
/// vigil_sdk::export!(analysis => MyAnalyzer);
/// vigil_sdk::export!(endpoints => MyTables);   // MyTables: Endpoints
/// ```
///
/// Use it once per plugin crate, at the crate root.
#[macro_export]
macro_rules! export {
    (discovery => $plugin:ty) => {
        #[doc(hidden)]
        pub struct __VigilExport;
        impl $crate::__private::discovery::exports::vigil::plugin::discoverer::Guest for __VigilExport {
            fn discover() -> ::core::result::Result<::std::vec::Vec<$crate::Resource>, $crate::PluginError> {
                <$plugin as $crate::Discovery>::discover()
            }
        }
        $crate::__private::discovery::__export_discovery!(__VigilExport with_types_in $crate::__private::discovery);
    };
    (enrichment => $plugin:ty) => {
        #[doc(hidden)]
        pub struct __VigilExport;
        impl $crate::__private::enrichment::exports::vigil::plugin::enricher::Guest for __VigilExport {
            fn enrich(resource: $crate::Resource) -> ::core::result::Result<::std::vec::Vec<$crate::EnrichmentGroup>, $crate::PluginError> {
                <$plugin as $crate::Enrichment>::enrich(resource)
            }
        }
        $crate::__private::enrichment::__export_enrichment!(__VigilExport with_types_in $crate::__private::enrichment);
    };
    (polling => $plugin:ty) => {
        #[doc(hidden)]
        pub struct __VigilExport;
        impl $crate::__private::polling::exports::vigil::plugin::poller::Guest for __VigilExport {
            fn poll(resource: $crate::Resource) -> ::core::result::Result<::std::vec::Vec<$crate::MetricsGroup>, $crate::PluginError> {
                <$plugin as $crate::Polling>::poll(resource)
            }
        }
        $crate::__private::polling::__export_polling!(__VigilExport with_types_in $crate::__private::polling);
    };
    (analysis => $plugin:ty) => {
        #[doc(hidden)]
        pub struct __VigilExport;
        impl $crate::__private::analysis::exports::vigil::plugin::analyzer::Guest for __VigilExport {
            fn analyze(
                event: $crate::EndpointEvent,
                prior_state: ::core::option::Option<::std::vec::Vec<u8>>,
            ) -> ::core::result::Result<$crate::AnalysisResult, $crate::PluginError> {
                <$plugin as $crate::Analysis>::analyze(event, prior_state)
            }
        }
        $crate::__private::analysis::__export_analysis!(__VigilExport with_types_in $crate::__private::analysis);
    };
    (endpoints => $plugin:ty) => {
        #[doc(hidden)]
        pub struct __VigilExport;
        impl $crate::__private::endpoints::exports::vigil::plugin::endpoint_collector::Guest for __VigilExport {
            fn collect(resource: $crate::Resource) -> ::core::result::Result<::std::vec::Vec<$crate::TableSnapshot>, $crate::PluginError> {
                <$plugin as $crate::Endpoints>::collect(resource)
            }
        }
        $crate::__private::endpoints::__export_endpoints!(__VigilExport with_types_in $crate::__private::endpoints);
    };
}

/// Compiles the examples in `sdk/README.md`, so the guide cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
