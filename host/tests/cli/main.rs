//! The `vigil` binary as an operator uses it, in one test binary (each
//! binary links the whole host; see `tests/tests/suite/main.rs`):
//! `commands` for `plugins check|list|run` and the allocator fallback,
//! `run` for `vigil run` end to end, `config` for the config conventions
//! (examples that load as printed, `vigil check`, the default site, data
//! and cache directories, the systemd unit and container, SIGHUP).
//! `scale.rs` stays a binary of its own: it judges how fast agents stop
//! while a broker is away, which a neighbouring test would skew.

mod commands;
mod config;
mod read;
mod run;
mod toolkit;
