//! The host imports plugins may use. Each module holds one capability whole:
//! its WIT implementation on [`HostState`](crate::sandbox::HostState), its
//! per-run state and its limits. Adding a capability means adding a module
//! here, its `.wit` file and its line in the site's capability list.
//!
//! Every call into these imports is charged against the run's host-call
//! quota first ([`HostState::charge`](crate::sandbox::HostState::charge)).

pub mod clock;
pub mod config;
pub mod enrichment;
pub mod kv;
pub mod log;
pub mod snmp;

impl crate::bindings::vigil::plugin::types::Host for crate::sandbox::HostState {}
