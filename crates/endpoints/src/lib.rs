//! vigil's endpoint tracker core (issue #14): every MAC and IP address of a
//! network, where it is now and where it has been, by the rules of Cisco's
//! Enhanced Endpoint Tracker (EPT).
//!
//! A pure library: no network, no storage backend, no wasmtime. The APIC
//! subscriber, the SNMP plugin, Kafka/HTTP ingest, the MongoDB and embedded
//! stores, the CLI and the API build on it. The specification is
//! `shared/notes/ept-rules.md` (EPT at commit d372cde0b528); section and
//! file:line references in this crate (`W:690-693`, `M:627`, `C:83`, ...)
//! are that note's.
//!
//! | module | what | note |
//! |---|---|---|
//! | [`model`] | events, per-node history, endpoint records, settings (caps) | §2, §3, §4, §5 |
//! | [`apic`] | APIC epm objects and payloads → [`model::EpmEvent`] | §3 |
//! | [`apic_fabric`] | APIC fabric objects (nodes, tunnels, vpcs, vnids, EPGs) → [`Fabric`] | §4, §5, §10 |
//! | [`replay`] | replay a recorded fabric (APIC payloads as JSON lines) into history | issue #14 |
//! | [`fabric_doc`] | a fabric model as one JSON document (for worker processes) | issue #14 |
//! | [`fabric`] | nodes, tunnels, vpc pairs, EPGs, vnids; vpc pseudo-nodes | §4, §5, §10 |
//! | [`history`] | `update_endpoint_history` | §4 |
//! | [`local`] | `update_local` (current location, transitory delete, learn type) | §5 |
//! | [`pushed`] | pushed endpoint events (HTTP, Kafka) as JSON → [`model::EpmEvent`] | issue #14 |
//! | [`query`] | searches, lookups and pages over a `HistoryStore`; address normalisation | issue #14 |
//! | [`store`] | `HistoryStore` seam, in-memory store, `process_event` | §4 + §5 |
//! | [`ingest`] | the seam every source writes to ([`ingest::EventSink`]) | issue #14 |
//! | [`snapshot`] | successive SNMP table snapshots → created/modified/deleted events | issue #14 |
//! | [`tracker`] | the sink + workers + numbers a process runs | issue #14 |
//! | [`dispatch`] | per-endpoint ordered dispatch to N workers, stable hash | issue #14 |
//! | [`write_behind`] | a worker's in-memory records, written to the store in batches | issue #14 |
//!
//! A worker's step for one event is [`store::process_event`]: load every
//! node's history of the endpoint, [`history::update_endpoint_history`] on
//! the event's node, then [`local::update_local`], writing back what
//! changed. Analysis (move, offsubnet, stale, rapid: §6-§9) is the next
//! issue; the outcomes here say when EPT would run it.
//!
//! # Where vigil decides differently from EPT
//!
//! - **Unknown `status`.** EPT parses any status and later ignores it in
//!   the history step, while `update_local` still creates an endpoint
//!   record for it. vigil rejects such an object at parse time with a
//!   located error: an unknown status is malformed input, and an endpoint
//!   record created from it would be noise.
//! - **DN without an address.** EPT's pattern makes the address optional and
//!   would carry `None` as the key; vigil rejects the object
//!   ([`apic::ObjectErrorKind::MissingAddress`]).
//! - **Bounds.** Node ids and vnids are `u32` (an overflowing DN is
//!   rejected); DNs, attributes, flags and payloads are bounded
//!   ([`apic::Limits`]). A vpc pseudo-node needs both nodes in 1..=0xffff
//!   (otherwise EPT's id could not be split back); outside that, the best
//!   local is treated like a vpc-attached learn with no peer (unchanged).
//! - **Ties in the best local.** Two nodes whose newest local events have
//!   the same ts: EPT keeps the first in MongoDB's return order, which is
//!   unspecified; vigil keeps the lowest node id, so replays are
//!   deterministic.
//! - **Rapid.** The rapid-endpoint check that can drop events before
//!   history (§9) belongs with analysis and is not part of this crate yet;
//!   every event reaches the history.
//! - **Watch fields.** EPT copies `watch_*` suppression state through the
//!   newest history event; they belong to stale/offsubnet analysis and are
//!   not modelled yet (`is_stale`/`is_offsubnet` are, defaulting to false).
//! - **Redelivery.** An event whose class, ts and content equal an event
//!   already in the node's history is ignored
//!   ([`history::IgnoreReason::Redelivered`]); the endpoint step still
//!   runs, so a worker killed between the two writes is completed by the
//!   redelivery. EPT's ts rule only catches the newest event of the same
//!   class; an at-least-once bus (Kafka, with offsets committed after the
//!   history write) redelivers whole batches.
//! - **Addresses are not normalised.** As in EPT, addresses are compared as
//!   the APIC writes them (MACs upper case in DNs). Sources other than the
//!   APIC must normalise before building events.

// Tests may unwrap; the library itself may not (clippy runs on both).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod apic;
pub mod apic_fabric;
pub mod dispatch;
pub mod fabric;
pub mod fabric_doc;
pub mod history;
pub mod ingest;
pub mod local;
pub mod model;
pub mod pushed;
pub mod query;
pub mod replay;
pub mod snapshot;
pub mod store;
pub mod text;
pub mod tracker;
pub mod write_behind;

pub use apic::{ApicObject, EpmParser, ObjectError, Payload, PayloadError};
pub use dispatch::{DispatchConfig, DispatchError, Dispatcher, Handler, worker_for};
pub use fabric::Fabric;
pub use history::{HistoryOutcome, IgnoreReason, update_endpoint_history};
pub use ingest::{EventSink, SinkClosed, Source, SubscriberState};
pub use local::{LocalChange, LocalResult, TRANSITORY_DELETE, update_local};
pub use model::{
    EndpointEvent, EndpointKey, EndpointRecord, EndpointType, EpmClass, EpmEvent, HistoryEvent,
    HistoryRecord, HistoryType, LearnType, Settings, SettingsError, Status,
};
pub use pushed::{BatchError, PushedError, PushedLimits};
pub use query::{AddrMatch, EndpointFilter, QueryError};
pub use store::{
    EndpointState, EventOutcome, HistoryStore, MemoryStore, StoreError, process_event,
    process_event_in_place,
};
pub use text::{Flags, Text};
pub use write_behind::{HistoryWorker, WriteBehind, WriteBehindConfig};
