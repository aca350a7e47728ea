//! vigil's shared vocabulary: the domain model every stage of the pipeline
//! speaks, and the small pieces every crate needs and none should own.
//!
//! This crate sits at the bottom of vigil's crate graph and depends on no
//! runtime, no backend and no generated code:
//!
//! * [`model`] is the data plugins produce and the host stores and ships
//!   (resources, metrics groups, enrichment groups, endpoint events,
//!   findings), as plain Rust types; the sandbox converts WIT values into
//!   them at its boundary.
//! * [`batch`] is what the bus carries: groups with their producing plugin.
//! * [`panoptes`] is Panoptes' JSON for metrics groups and resources (the
//!   Kafka bus, JSON-lines files and the consumers speak it).
//! * [`kv`] is the seam between the plugin key/value capability and the
//!   stores that keep plugin state.
//! * [`units`] parses sizes and durations as operators write them.
//! * [`status`] is Panoptes' polling status codes.
//! * [`secret`] holds credentials so they are never printed.
//! * [`metric_names`] names metrics in Prometheus (sinks and dashboards).
//! * [`located`] is the `path:line: message` error of every config reader.

pub mod batch;
pub mod kv;
pub mod located;
pub mod metric_names;
pub mod model;
pub mod panoptes;
pub mod secret;
pub mod status;
pub mod units;

pub use located::{At, LocatedError};

/// An error from a backend behind one of the traits vigil's crates declare
/// for what they need (rate state, enrichments, latest values), with its
/// source kept.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;
