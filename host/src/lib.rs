//! The vigil host: runs untrusted telemetry collectors as WebAssembly
//! components and lends them narrow, audited slices of what it owns.
//!
//! The crate is organised by job:
//!
//! * [`plugin`] reads plugin files (`*.vigil-plugin` ini + `.wasm`), checks
//!   them against the site's rules and keeps the loaded set current while
//!   the host runs (directory watching).
//! * [`sandbox`] compiles, caches and runs components under limits, and
//!   turns every run into a typed [`sandbox::RunOutcome`].
//! * [`capabilities`] composes the host imports plugins may use; each is a
//!   unit in its own crate (`vigil-capabilities`, `vigil-cap-snmp`).
//! * [`site`] is the operator's configuration: defaults and caps for every
//!   limit, and which capabilities plugins may be granted.
//! * [`sinks`] is the pipeline's last stage: JSON lines, the latest-value
//!   store, Prometheus `/metrics`, InfluxDB and the Pushgateway.
//! * [`health`] is vigil's own health metrics (`/metrics`, `vigil status`).
//! * [`model`] re-exports the data types plugins exchange with the host.
//! * [`views`] is the JSON shapes of the read commands (`--json`) and of
//!   the HTTP API to come.
//! * [`reload`] is SIGHUP in `vigil run`: the site config read again.
//! * [`check`] is `vigil check`: a site config and everything it references,
//!   validated offline.

pub mod agent;
pub mod api;
pub mod backends;
pub mod bus;
pub mod capabilities;
pub mod check;
pub mod coordination;
pub mod endpoints;
pub mod health;
pub mod model;
pub mod pipeline;
pub mod plugin;
pub mod reload;
pub mod sandbox;
pub mod scheduler;
pub mod site;
pub mod views;

mod bindings;

// Crates split out of the host, re-exported under their old paths.
pub use vigil_core::{secret, units};
pub use vigil_dashboards as dashboards;
pub use vigil_filter as filter;
pub use vigil_sinks as sinks;
pub use vigil_store as store;
pub use vigil_transform as transform;
