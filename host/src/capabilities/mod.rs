//! The host imports plugins may use, as the runner composes them. Each
//! capability is one unit in its own crate: its WIT implementation on a
//! view of the run, its limits, its ini and site sections and its grant
//! check (`vigil-capabilities` for clock, config, enrichment-cache, kv and
//! log; `vigil-cap-snmp` for SNMP). The runner
//! ([`crate::sandbox::Sandbox::with_kv`]) adds each to the linker with one
//! line that picks its view out of the run's store data; adding a
//! capability is one new crate, its `.wit` file, that line and its name in
//! the site's capability list.
//!
//! Every call into these imports is charged against the run's host-call
//! quota first ([`vigil_wit::HostCalls`]).

pub use vigil_cap_snmp as snmp;
pub use vigil_capabilities::{clock, config, enrichment, kv, log};
