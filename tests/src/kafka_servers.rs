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

use std::collections::BTreeSet;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::snmp_servers::{repo_root, test_servers_dir};

/// How long [`Tansu::start`] and [`Tansu::restart`] wait for the port to
/// accept connections (it is usually ready in well under a second).
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a broker is started on a fresh port when the first one turns
/// out to be taken (another process may grab a port that [`free_tcp_port`]
/// released).
const START_ATTEMPTS: usize = 3;

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
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(run_install_script)
        .clone()
        .map_err(anyhow::Error::msg)
}

fn run_install_script() -> std::result::Result<(), String> {
    let script = repo_root()
        .join("scripts")
        .join("test-servers")
        .join("install-kafka.sh");
    let output = Command::new("bash")
        .arg(&script)
        .env("VIGIL_TEST_SERVERS_DIR", test_servers_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}{}",
            script.display(),
            output.status,
            stdout.trim(),
            stderr.trim()
        ));
    }
    eprintln!("{}", stdout.trim());
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and
/// released) and that this process has not handed out before, so tests
/// running in parallel never get the same one. Another process may still
/// take it before the caller binds it.
pub fn free_tcp_port() -> Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding a TCP socket on 127.0.0.1:0")?;
        let port = listener
            .local_addr()
            .context("reading the local address of a TCP socket")?
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    bail!("found no TCP port on 127.0.0.1 that this process had not used yet")
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
        let dir = tempfile::Builder::new()
            .prefix("vigil-tansu-")
            .tempdir()
            .context("creating a temporary directory for tansu")?;
        let mut tansu = Tansu {
            port: 0,
            dir,
            child: None,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            tansu.port = free_tcp_port()?;
            match tansu.spawn_and_wait() {
                Ok(()) => return Ok(tansu),
                Err(e) => {
                    tansu.stop();
                    // Only a broker that exited or lost its port is worth
                    // another port; a hang is not.
                    if !e.is::<PortLost>() {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("tansu did not start")))
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
        let result = self.spawn_and_wait();
        if result.is_err() {
            self.stop();
        }
        result
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", log_path.display()))?;
        let binary = tansu_binary();
        let url = format!("tcp://127.0.0.1:{}", self.port);
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
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        self.wait_until_accepting(&log_path)
    }

    /// Connects to the port until it accepts, the process exits or
    /// [`READY_TIMEOUT`] passes; then checks that the listening socket is
    /// the broker's own (not another process that took the port).
    fn wait_until_accepting(&mut self, log: &Path) -> Result<()> {
        let started = Instant::now();
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let Some(process) = self.child.as_mut() else {
                bail!("tansu is not running");
            };
            let status = process
                .try_wait()
                .context("checking whether tansu still runs")?;
            if let Some(status) = status {
                return Err(PortLost(format!(
                    "tansu on 127.0.0.1:{} exited ({status}) before accepting connections; its log {}:\n{}",
                    self.port,
                    log.display(),
                    log_tail(log)
                ))
                .into());
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                if tcp_listener_of_other(process.id(), self.port) == Some(true) {
                    return Err(PortLost(format!(
                        "127.0.0.1:{} was taken by another process before tansu could bind it",
                        self.port
                    ))
                    .into());
                }
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "tansu on 127.0.0.1:{} did not accept connections within {READY_TIMEOUT:?}; its log {}:\n{}",
                    self.port,
                    log.display(),
                    log_tail(log)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The broker exited, or its port was taken, before it accepted
/// connections: worth another try on another port.
#[derive(Debug)]
struct PortLost(String);

impl std::fmt::Display for PortLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PortLost {}

/// Whether TCP port `port` on 127.0.0.1 (or 0.0.0.0) is listened on by
/// sockets none of which belong to process `pid`; `None` when /proc cannot
/// tell.
fn tcp_listener_of_other(pid: u32, port: u16) -> Option<bool> {
    const LISTEN: &str = "0A";
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let addresses = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            (*state == LISTEN && addresses.iter().any(|a| a == local))
                .then(|| format!("socket:[{inode}]"))
        })
        .collect();
    if sockets.is_empty() {
        return None;
    }
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for fd in fds.flatten() {
        if let Ok(target) = fs::read_link(fd.path())
            && sockets.iter().any(|s| target.as_os_str() == s.as_str())
        {
            return Some(false);
        }
    }
    Some(true)
}

fn log_tail(log: &Path) -> String {
    match fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}

/// SIGTERM to the child's process group (it was started as its leader),
/// SIGKILL to the group if the child has not exited after 3 s; reaps it.
fn kill_process_group(mut child: Child) {
    let group = format!("-{}", child.id());
    let signal = |name: &str| {
        let _ = Command::new("kill")
            .args([name, "--", &group])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    if let Ok(None) = child.try_wait() {
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
        // Still running, so the group id is still its own.
        signal("-KILL");
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_ports() -> Result<()> {
        let ports: BTreeSet<u16> = (0..50).map(|_| free_tcp_port()).collect::<Result<_>>()?;
        assert_eq!(ports.len(), 50);
        Ok(())
    }

    #[test]
    fn tells_whose_tcp_listener_it_is() -> Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        assert_eq!(tcp_listener_of_other(std::process::id(), port), Some(false));
        let mut child = Command::new("sleep").arg("5").spawn()?;
        let other = tcp_listener_of_other(child.id(), port);
        child.kill()?;
        child.wait()?;
        assert_eq!(other, Some(true));
        drop(listener);
        // A process forked meanwhile by a parallel test holds a copy of the
        // socket until it execs: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        while tcp_listener_of_other(std::process::id(), port).is_some() && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(tcp_listener_of_other(std::process::id(), port), None);
        Ok(())
    }

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
