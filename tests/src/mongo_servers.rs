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

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use crate::servers::free_tcp_port;
use crate::servers::{
    self, InstallScript, Probe, Readiness, kill_whole_process_group, start_on_free_port,
    test_servers_dir,
};

/// How long [`NxMongo::start`] waits for the server to answer (it starts in
/// ~0.5 s on an idle machine; Python imports are slow under a parallel build).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one readiness probe waits to connect and for the reply.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs `scripts/test-servers/install-mongo.sh` once per process (later calls
/// return the first call's outcome): the nx-27017 venv in
/// [`test_servers_dir`]. The script is quick when the venv is there and
/// serialises concurrent callers with a lock.
pub fn ensure_installed() -> Result<()> {
    static INSTALL: InstallScript = InstallScript::new("install-mongo.sh");
    INSTALL.ensure()
}

/// The `nx-27017` program in the venv the install script made.
pub fn nx27017_program() -> PathBuf {
    test_servers_dir()
        .join("nx27017-venv")
        .join("bin")
        .join("nx-27017")
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
        let dir = servers::temp_dir("vigil-nx27017-", "nx-27017")?;
        let mut server = NxMongo {
            port: 0,
            dir,
            child: None,
        };
        start_on_free_port("nx-27017", free_tcp_port, |port| {
            server.port = port;
            server.spawn_and_wait().inspect_err(|_| server.stop())
        })?;
        Ok(server)
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
            kill_whole_process_group(child);
        }
    }

    /// Starts the server and waits until its log says it listens on our port
    /// (so the port is ours, not another process's) and a `hello` over the
    /// wire protocol gets `ok: 1`; or the server exits; or [`READY_TIMEOUT`]
    /// passes.
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
        let port = self.port;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("vigil-nx27017-watchdog")
            .arg(&program)
            .args([
                "--db",
                "memory",
                "--host",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .arg("--log-file")
            .arg(&log_path)
            .arg("--pid-file")
            .arg(&pid_path)
            .current_dir(self.dir.path())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped());
        let child = self
            .child
            .insert(servers::spawn_logged(&mut command, &out_path, &program)?);
        let listening = format!("Listening on 127.0.0.1:{port}");
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let readiness = Readiness {
            what: "nx-27017",
            port,
            before: "answering",
            did_not: "answer",
            log: &out_path,
            log_name: "output",
            timeout: READY_TIMEOUT,
            interval: Duration::from_millis(25),
        };
        servers::wait_until_ready(child, &readiness, |_| {
            let bound = fs::read_to_string(&log_path).is_ok_and(|text| text.contains(&listening));
            let answer = if bound {
                hello(address)
            } else {
                Err(anyhow::anyhow!("its log does not say {listening:?} yet"))
            };
            Ok(match answer {
                Ok(()) => Probe::Ready,
                Err(e) => Probe::NotYet(format!("last probe: {e:#}")),
            })
        })
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

/// The nx-27017 server every MongoDB test of one test binary shares
/// (started on first use). A static is never dropped: the server's
/// watchdog stops it when the process ends.
pub fn shared_nx_mongo() -> Result<&'static NxMongo> {
    static SERVER: std::sync::OnceLock<std::result::Result<NxMongo, String>> =
        std::sync::OnceLock::new();
    SERVER
        .get_or_init(|| NxMongo::start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("starting nx-27017: {e}"))
}

/// A database name of its own for test `name` on the shared server:
/// `PREFIX_NAME_PID_N`, the name cut to 32 characters.
pub fn unique_database(prefix: &str, name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let short: String = name.chars().take(32).collect();
    format!(
        "{prefix}_{short}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_to_a_closed_port_fails() -> Result<()> {
        let port = free_tcp_port()?;
        assert!(hello(SocketAddr::from(([127, 0, 0, 1], port))).is_err());
        Ok(())
    }
}
