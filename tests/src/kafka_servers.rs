//! A real Kafka-API broker for integration tests, on loopback only:
//! [`Tansu`], tansu 0.6.0 (a Kafka-compatible broker written in Rust) with
//! its in-memory storage engine.
//!
//! It is installed on first use by `scripts/test-servers/install-kafka.sh`
//! (see [`ensure_installed`]), which copies the prebuilt binary shared beside
//! the repository or else builds it with `cargo install` (about 30 minutes
//! cold). A broker binds `127.0.0.1:<free port>` and is killed when dropped;
//! a test process killed outright (SIGKILL, abort) leaves it running.
//!
//! Known limits of tansu 0.6.0 with memory storage: topics are not created
//! automatically (create them with the admin API, or `tansu topic create`);
//! there are no transactions; everything (topics, messages, committed
//! offsets, producer ids) is gone when it stops, so [`Tansu::restart`]
//! brings back an empty broker on the same port. Idempotent producers,
//! consumer groups and offset commits work, with these defects: a fetch
//! that starts inside a record batch (a consumer resuming from a committed
//! offset) skips the rest of that batch (fixed upstream after 0.6.0); a
//! fetch takes at least half its `max_wait` even when data is there (tansu
//! sleeps between looks at its storage); and a group settles only after a
//! few seconds of rejoins when members join together (its coordinator
//! answers joins at once instead of waiting for the members).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Result;

pub use crate::servers::free_tcp_port;
use crate::servers::{
    self, InstallScript, Probe, Readiness, TryAnotherPort, kill_process_group, start_on_free_port,
    tcp_listener_of_other, tcp_port_accepts, test_servers_dir,
};

/// How long [`Tansu::start`] and [`Tansu::restart`] wait for the port to
/// accept connections (it is usually ready in well under a second).
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The tansu binary the install script puts in place:
/// `<test servers dir>/bin/tansu`.
pub fn tansu_binary() -> PathBuf {
    test_servers_dir().join("bin").join("tansu")
}

/// Runs `scripts/test-servers/install-kafka.sh` once per process (later
/// calls return the first call's outcome). The script is quick when the
/// binary is there and serialises concurrent callers with a lock; without
/// the shared prebuilt binary it builds tansu, which takes about 30 minutes.
pub fn ensure_installed() -> Result<()> {
    static INSTALL: InstallScript = InstallScript::new("install-kafka.sh");
    INSTALL.ensure()
}

/// tansu 0.6.0 serving the Kafka protocol on `127.0.0.1:<port>` with
/// in-memory storage, run as
/// `tansu broker --listener-url tcp://127.0.0.1:PORT
/// --advertised-listener-url tcp://127.0.0.1:PORT --storage-engine
/// memory://tansu/` with its log (`tansu.log`, level `warn` unless
/// `VIGIL_TANSU_LOG` says otherwise) in a temporary directory. Killed (with
/// its process group) on drop.
#[derive(Debug)]
pub struct Tansu {
    /// The TCP port on 127.0.0.1; kept across [`Tansu::restart`].
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Tansu {
    /// Starts tansu on a free port and waits (up to 15 s) until the port
    /// accepts TCP connections. No topic exists yet.
    pub fn start() -> Result<Tansu> {
        ensure_installed()?;
        let dir = servers::temp_dir("vigil-tansu-", "tansu")?;
        let mut tansu = Tansu {
            port: 0,
            dir,
            child: None,
        };
        start_on_free_port("tansu", free_tcp_port, |port| {
            tansu.port = port;
            tansu.spawn_and_wait().inspect_err(|_| tansu.stop())
        })?;
        Ok(tansu)
    }

    /// The bootstrap servers for a Kafka client: `127.0.0.1:PORT`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id of the running broker; `None` when it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker's log so far (its stdout and stderr, across restarts).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the broker (SIGTERM to its process group, SIGKILL after 3 s).
    /// Its topics, messages and committed offsets are gone. Does nothing
    /// when it is not running.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_process_group(child);
        }
    }

    /// Starts the broker again on the same port, stopping it first if it
    /// runs, and waits until the port accepts connections. Memory storage
    /// means it comes back empty: no topics, no offsets.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_and_wait().inspect_err(|_| self.stop())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    /// Starts the broker and waits until the port accepts connections
    /// (then checks that the listening socket is the broker's own, not
    /// another process's that took the port), the process exits or
    /// [`READY_TIMEOUT`] passes.
    fn spawn_and_wait(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let binary = tansu_binary();
        let port = self.port;
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(&binary);
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .args(["--storage-engine", "memory://tansu/"])
            // Settings tansu would otherwise take from the environment.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("SCHEMA_REGISTRY")
            // A test's own RUST_LOG=info would make tansu log every request.
            .env(
                "RUST_LOG",
                std::env::var("VIGIL_TANSU_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        let child = self
            .child
            .insert(servers::spawn_logged(&mut command, &log_path, &binary)?);
        let readiness = Readiness {
            what: "tansu",
            port,
            before: "accepting connections",
            did_not: "accept connections",
            log: &log_path,
            log_name: "log",
            timeout: READY_TIMEOUT,
            interval: Duration::from_millis(20),
        };
        servers::wait_until_ready(child, &readiness, |pid| {
            if !tcp_port_accepts(port) {
                return Ok(Probe::NotYet(String::new()));
            }
            if tcp_listener_of_other(pid, port) == Some(true) {
                return Err(TryAnotherPort(format!(
                    "127.0.0.1:{port} was taken by another process before tansu could bind it"
                ))
                .into());
            }
            Ok(Probe::Ready)
        })
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};

    use super::*;

    /// Starts, restarts on the same port, stops: the port accepts while it
    /// runs and refuses once it is stopped.
    #[test]
    fn starts_restarts_and_stops() -> Result<()> {
        let mut tansu = Tansu::start()?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, tansu.port));
        assert!(TcpStream::connect(address).is_ok());
        let port = tansu.port;
        tansu.restart()?;
        assert_eq!(tansu.port, port);
        assert!(TcpStream::connect(address).is_ok());
        tansu.stop();
        assert!(tansu.pid().is_none());
        assert!(TcpStream::connect(address).is_err());
        Ok(())
    }
}
