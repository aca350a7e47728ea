//! The `vigil` binary as an operator uses it, in one test binary (each
//! binary links the whole host; see `tests/tests/suite/main.rs`):
//! `commands` for `plugins check|list|run` and the allocator fallback,
//! `run` for `vigil run` end to end, `config` for the config conventions
//! (examples that load as printed, `vigil check`, the default site, data
//! and cache directories, the systemd unit and container, SIGHUP).
//! `scale.rs` stays a binary of its own: it judges how fast agents stop
//! while a broker is away, which a neighbouring test would skew.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod commands;
mod config;
mod endpoints;
mod read;
mod run;
mod toolkit;

/// Waits (polling every 200 ms) until `done`, failing the test after
/// `timeout` with what it waited for.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends signal `name` (`TERM`, `HUP`...) to `child`.
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Stops `vigil run` with SIGTERM and checks it exits cleanly within 20 s.
fn stop(mut child: Child) {
    signal(&child, "TERM");
    let start = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            assert!(exit.success(), "vigil exited with {exit}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "vigil did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
