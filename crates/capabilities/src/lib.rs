//! The small host imports every plugin may use, one module per
//! capability: `clock`, `config`, `enrichment-cache`, `kv`, `log` and
//! `status`.
//! (SNMP, which reaches the network, is its own crate: `vigil-cap-snmp`.)
//!
//! Each capability is one unit, after Spin's factors and wasmtime's
//! `HasData` pattern: its WIT implementation on a *view* of the run (a
//! struct of borrowed parts: the run's host-call budget plus what this
//! capability may see, nothing else), its limits, and an `add_to_linker`
//! that takes a function picking that view out of the runner's store data.
//! A capability cannot reach the runner's state, the plugin's manifest or
//! another capability's state, because its view does not hold them; the
//! runner composes the capabilities, one line each, and nothing here
//! imports the runner.
//!
//! Every call is charged against the run's host-call quota first
//! ([`vigil_wit::HostCalls`]).

pub mod clock;
pub mod config;
pub mod enrichment;
pub mod kv;
pub mod log;
pub mod status;
