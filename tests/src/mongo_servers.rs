//! A real MongoDB wire-protocol server for storage tests, on loopback only.
//!
//! No `mongod` is installable here, so [`NxMongo`] runs nx-27017 0.8.1 (PyPI):
//! a MongoDB-compatible server in Python on SQLite, started as
//! `nx-27017 --db memory --host 127.0.0.1 -p PORT --log-file F --pid-file P`.
//! It speaks the same OP_MSG protocol as mongod and answers the official
//! drivers, with known defects vigil's documents are designed around (see
//! `host/src/store/mongo.rs`). Logical databases are isolated from each
//! other, so tests share one server and take a fresh database each.
//!
//! nx-27017 is installed on first use by `scripts/test-servers/install-mongo.sh`
//! (see [`ensure_installed`]). A server binds `127.0.0.1:<free port>` and is
//! killed when its [`NxMongo`] is dropped, and also when the test process
//! ends in any way (even SIGKILL): a watchdog beside it holds a pipe from the
//! test process and kills the server when the pipe closes. That makes a
//! server kept in a `static` (never dropped) safe.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::snmp_servers::{repo_root, test_servers_dir};

/// How long [`NxMongo::start`] waits for the server to answer (it starts in
/// ~0.5 s on an idle machine; Python imports are slow under a parallel build).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one readiness probe waits to connect and for the reply.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a server is started on a fresh port when the first one turns
/// out to be taken (another process may grab a port that [`free_tcp_port`]
/// released).
const START_ATTEMPTS: usize = 3;

/// Runs `scripts/test-servers/install-mongo.sh` once per process (later calls
/// return the first call's outcome): the nx-27017 venv in
/// [`test_servers_dir`]. The script is quick when the venv is there and
/// serialises concurrent callers with a lock.
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
        .join("install-mongo.sh");
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

/// The `nx-27017` program in the venv the install script made.
pub fn nx27017_program() -> PathBuf {
    test_servers_dir()
        .join("nx27017-venv")
        .join("bin")
        .join("nx-27017")
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

/// Runs the server given as arguments with stdin from /dev/null, and beside
/// it a watchdog reading this shell's stdin (a pipe from the test process):
/// when that pipe closes, the watchdog kills the server. The shell exits
/// with the server's status, so it lives exactly as long as the server.
const WATCHDOG_SCRIPT: &str = r#"exec 3<&0 </dev/null
"$@" 3<&- &
server=$!
{ read -r _ <&3; kill "$server" 2>/dev/null; } &
wait "$server"
"#;

/// nx-27017 serving an in-memory database on `127.0.0.1:<port>`, with its log
/// (`nx-27017.log`, plus its stdout and stderr in `nx-27017.out`) and pid file
/// in a temporary directory. Killed (with its process group) on drop.
#[derive(Debug)]
pub struct NxMongo {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// The watchdog shell leading the server's process group; its stdin is
    /// the pipe whose closing kills the server.
    child: Option<Child>,
}

impl NxMongo {
    /// Starts nx-27017 on a free port and waits (up to 30 s) until it has
    /// bound the port and answers a `hello` command over the wire protocol.
    pub fn start() -> Result<NxMongo> {
        ensure_installed()?;
        let dir = tempfile::Builder::new()
            .prefix("vigil-nx27017-")
            .tempdir()
            .context("creating a temporary directory for nx-27017")?;
        let mut server = NxMongo {
            port: 0,
            dir,
            child: None,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            server.port = free_tcp_port()?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.stop();
                    // Only a server that exited (say, the port was taken
                    // meanwhile) is worth another port; a hang is not.
                    if !e.is::<ExitedEarly>() {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nx-27017 did not start")))
    }

    /// `mongodb://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// The server's log file (what it logs at INFO level).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nx-27017.log")
    }

    /// Stops the server (SIGTERM to its process group, SIGKILL after 3 s).
    /// Does nothing when it is not running. Its data (in memory) is gone.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_process_group(child);
        }
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let out_path = self.dir.path().join("nx-27017.out");
        let pid_path = self.dir.path().join("nx-27017.pid");
        // A previous attempt's lines must not count as this one's.
        for path in [&log_path, &out_path] {
            if path.exists() {
                fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        let program = nx27017_program();
        if !program.is_file() {
            bail!(
                "{} is missing (scripts/test-servers/install-mongo.sh should have made it)",
                program.display()
            );
        }
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .with_context(|| format!("opening {}", out_path.display()))?;
        let out_err = out
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", out_path.display()))?;
        let port = self.port.to_string();
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("vigil-nx27017-watchdog")
            .arg(&program)
            .args(["--db", "memory", "--host", "127.0.0.1", "-p", &port])
            .arg("--log-file")
            .arg(&log_path)
            .arg("--pid-file")
            .arg(&pid_path)
            .current_dir(self.dir.path())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(out_err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.child = Some(child);
        self.wait_until_answering(&log_path, &out_path)
    }

    /// Until the server's log says it listens on our port (so the port is
    /// ours, not another process's) and a `hello` over the wire protocol
    /// gets `ok: 1`; or the server exits; or [`READY_TIMEOUT`] passes.
    fn wait_until_answering(&mut self, log: &Path, out: &Path) -> Result<()> {
        let started = Instant::now();
        let listening = format!("Listening on 127.0.0.1:{}", self.port);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(process) = self.child.as_mut() {
                let status = process
                    .try_wait()
                    .context("checking whether nx-27017 still runs")?;
                if let Some(status) = status {
                    return Err(ExitedEarly(format!(
                        "nx-27017 on 127.0.0.1:{} exited ({status}) before answering; its output {}:\n{}",
                        self.port,
                        out.display(),
                        log_tail(out)
                    ))
                    .into());
                }
            }
            let bound = fs::read_to_string(log).is_ok_and(|text| text.contains(&listening));
            let answer = if bound {
                hello(address)
            } else {
                Err(anyhow::anyhow!("its log does not say {listening:?} yet"))
            };
            match answer {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() > READY_TIMEOUT => bail!(
                    "nx-27017 on 127.0.0.1:{} did not answer within {READY_TIMEOUT:?} (last probe: {e:#}); its output {}:\n{}",
                    self.port,
                    out.display(),
                    log_tail(out)
                ),
                Err(_) => thread::sleep(Duration::from_millis(25)),
            }
        }
    }
}

impl Drop for NxMongo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `{hello: 1, $db: "admin"}` as an OP_MSG and checks that the reply is
/// an OP_MSG whose document says `ok: 1`.
fn hello(address: SocketAddr) -> Result<()> {
    const OP_MSG: i32 = 2013;
    let mut body = Vec::new();
    body.push(0x10); // int32
    body.extend_from_slice(b"hello\0");
    body.extend_from_slice(&1i32.to_le_bytes());
    body.push(0x02); // string
    body.extend_from_slice(b"$db\0");
    body.extend_from_slice(&6i32.to_le_bytes());
    body.extend_from_slice(b"admin\0");
    body.push(0); // end of document
    let document_len = i32::try_from(body.len() + 4).context("hello document size")?;
    let mut message = Vec::new();
    let message_len = i32::try_from(16 + 4 + 1 + 4 + body.len()).context("hello size")?;
    message.extend_from_slice(&message_len.to_le_bytes());
    message.extend_from_slice(&1i32.to_le_bytes()); // requestID
    message.extend_from_slice(&0i32.to_le_bytes()); // responseTo
    message.extend_from_slice(&OP_MSG.to_le_bytes());
    message.extend_from_slice(&0u32.to_le_bytes()); // flagBits
    message.push(0); // section kind 0: the body
    message.extend_from_slice(&document_len.to_le_bytes());
    message.extend_from_slice(&body);

    let mut stream = TcpStream::connect_timeout(&address, PROBE_TIMEOUT)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    stream.write_all(&message).context("sending hello")?;
    let mut header = [0u8; 16];
    stream
        .read_exact(&mut header)
        .context("reading the reply header")?;
    let field =
        |i: usize| i32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (length, op_code) = (field(0), field(12));
    if op_code != OP_MSG || !(21..=48_000_000).contains(&length) {
        bail!("not an OP_MSG reply (opCode {op_code}, length {length})");
    }
    let mut reply = vec![0u8; usize::try_from(length)? - 16];
    stream
        .read_exact(&mut reply)
        .context("reading the reply body")?;
    // ok: 1 as a double, an int32 or an int64.
    let ok_values: [&[u8]; 3] = [
        &[&[0x01u8][..], b"ok\0", &1f64.to_le_bytes()].concat(),
        &[&[0x10u8][..], b"ok\0", &1i32.to_le_bytes()].concat(),
        &[&[0x12u8][..], b"ok\0", &1i64.to_le_bytes()].concat(),
    ];
    if ok_values
        .iter()
        .any(|ok| reply.windows(ok.len()).any(|w| w == *ok))
    {
        Ok(())
    } else {
        bail!("the hello reply does not say ok: 1")
    }
}

/// A server process exited before it answered (its port may have been
/// taken meanwhile): worth another try on another port.
#[derive(Debug)]
struct ExitedEarly(String);

impl std::fmt::Display for ExitedEarly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExitedEarly {}

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
/// SIGKILL to the group if members remain after 3 s; reaps the child. The
/// group is signalled even when the leader has exited, since the watchdog
/// may still run in it.
fn kill_process_group(mut child: Child) {
    let group = format!("-{}", child.id());
    let signal = |name: &str| {
        Command::new("kill")
            .args([name, "--", &group])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    // An unreaped leader keeps the group id from being reused.
    if signal("-TERM") {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && signal("-0") {
            let _ = child.try_wait();
            thread::sleep(Duration::from_millis(20));
        }
        if signal("-0") {
            signal("-KILL");
        }
    }
    // Closing the watchdog's pipe ends it, should it still run.
    drop(child.stdin.take());
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
    fn hello_to_a_closed_port_fails() -> Result<()> {
        let port = free_tcp_port()?;
        assert!(hello(SocketAddr::from(([127, 0, 0, 1], port))).is_err());
        Ok(())
    }
}
