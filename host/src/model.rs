//! vigil's domain model, owned by `vigil-core` (plain Rust types, no
//! wasmtime); the sandbox converts WIT values into it at its boundary
//! ([`crate::sandbox::convert`]).

pub use vigil_core::model::*;
