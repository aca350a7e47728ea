//! The `vigil` binary as an operator uses it, in one test binary (each
//! binary links the whole host; see `tests/tests/suite/main.rs`):
//! `commands` for `plugins check|list|run` and the allocator fallback,
//! `run` for `vigil run` end to end. `scale.rs` stays a binary of its own:
//! it judges how fast agents stop while a broker is away, which a
//! neighbouring test would skew.

mod commands;
mod run;
