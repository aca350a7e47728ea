//! vigil's Redis backend, for agents that share a site: everything a
//! single agent keeps in memory or SQLite, kept where every agent sees it.
//!
//! * [`coordinator`]: membership, rendezvous ownership and per-job leases
//!   with fencing ([`RedisCoordinator`], the `Coordinator` of
//!   `vigil-coordination`).
//! * [`shared`]: the resource registry (`Storage` of `vigil-store`), the
//!   enrichment cache (`EnrichmentStore` of `vigil-enrichment`), rate
//!   state (`RateState` of `vigil-transform`) and plugin key/value
//!   (`KvBackend` of `vigil-core`).
//!
//! Each trait is declared by the crate that uses it; this crate only
//! implements them, and the host picks it (feature `redis`) when the site
//! config says `backend = "redis"`. Nothing else in vigil holds a Redis
//! type.

pub mod coordinator;
pub mod shared;

pub use coordinator::{RedisCoordinator, connect};
