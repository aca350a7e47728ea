//! What the real-server harnesses ([`crate::snmp_servers`],
//! [`crate::kafka_servers`], [`crate::mongo_servers`],
//! [`crate::redis_servers`], [`crate::metrics_servers`]) share: where the install scripts and their
//! products live, running an install script once per process, handing out
//! free loopback ports, starting a server in its own process group with its
//! output in a log file, waiting until it is ready, telling whether its port
//! is really its own, and killing its process group.

use std::collections::BTreeSet;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How often a server is started on a fresh port when the first one turns
/// out to be taken (another process may grab a port that [`free_tcp_port`]
/// or [`free_udp_port`] released).
pub const START_ATTEMPTS: usize = 3;

/// The workspace root (the parent of the `vigil-tests` crate).
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Where the install scripts keep what they install and their locks:
/// `$VIGIL_TEST_SERVERS_DIR`, by default `<repo>/target/test-servers`.
pub fn test_servers_dir() -> PathBuf {
    match std::env::var_os("VIGIL_TEST_SERVERS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join("target").join("test-servers"),
    }
}

/// One of the scripts in `scripts/test-servers/`, run at most once per
/// process: keep it in a `static` and call [`InstallScript::ensure`].
pub struct InstallScript {
    /// The script's file name, e.g. `install-snmp.sh`.
    name: &'static str,
    outcome: OnceLock<std::result::Result<(), String>>,
}

impl InstallScript {
    pub const fn new(name: &'static str) -> InstallScript {
        InstallScript {
            name,
            outcome: OnceLock::new(),
        }
    }

    /// Runs the script (with `VIGIL_TEST_SERVERS_DIR` set to
    /// [`test_servers_dir`]) on the first call; later calls return the
    /// first call's outcome. On success its one-line summary goes to stderr;
    /// a failure names the script, its exit status and its output.
    pub fn ensure(&self) -> Result<()> {
        self.outcome
            .get_or_init(|| run_install_script(self.name))
            .clone()
            .map_err(anyhow::Error::msg)
    }
}

fn run_install_script(name: &str) -> std::result::Result<(), String> {
    let script = repo_root().join("scripts").join("test-servers").join(name);
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
    free_port(
        "TCP",
        &HANDED_OUT,
        || TcpListener::bind("127.0.0.1:0"),
        TcpListener::local_addr,
    )
}

/// A UDP port on 127.0.0.1 that was free a moment ago (bound to port 0 and
/// released) and that this process has not handed out before, so tests
/// running in parallel never get the same one. Another process may still
/// take it before the caller binds it.
pub fn free_udp_port() -> Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    free_port(
        "UDP",
        &HANDED_OUT,
        || UdpSocket::bind("127.0.0.1:0"),
        UdpSocket::local_addr,
    )
}

/// Binds a `protocol` socket on port 0 (with `bind`) until the port it gets
/// (its `local_addr`) is not in `handed_out`, and adds it.
fn free_port<S>(
    protocol: &str,
    handed_out: &Mutex<BTreeSet<u16>>,
    bind: impl Fn() -> std::io::Result<S>,
    local_addr: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> Result<u16> {
    for _ in 0..100 {
        let socket =
            bind().with_context(|| format!("binding a {protocol} socket on 127.0.0.1:0"))?;
        let port = local_addr(&socket)
            .with_context(|| format!("reading the local address of a {protocol} socket"))?
            .port();
        let mut handed_out = handed_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    bail!("found no {protocol} port on 127.0.0.1 that this process had not used yet")
}

/// Sets a fresh port from `free_port` and calls `attempt` with it, up to
/// [`START_ATTEMPTS`] times while it fails with [`TryAnotherPort`]; any
/// other error ends it at once. `attempt` must leave nothing running when
/// it fails. `what` names the server in the error when no attempt was made.
pub fn start_on_free_port(
    what: &str,
    free_port: fn() -> Result<u16>,
    mut attempt: impl FnMut(u16) -> Result<()>,
) -> Result<()> {
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        match attempt(free_port()?) {
            Ok(()) => return Ok(()),
            // Only a server that exited or lost its port (say, the port was
            // taken meanwhile) is worth another port; a hang is not.
            Err(e) if e.is::<TryAnotherPort>() => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{what} did not start")))
}

/// A server process exited, or its port was taken, before it answered:
/// worth another try on another port (see [`start_on_free_port`]).
#[derive(Debug)]
pub struct TryAnotherPort(pub String);

impl std::fmt::Display for TryAnotherPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TryAnotherPort {}

/// A fresh temporary directory named `<prefix>…` for the files of server
/// `what` (removed when dropped).
pub fn temp_dir(prefix: &str, what: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .with_context(|| format!("creating a temporary directory for {what}"))
}

/// Opens `path` for appending, creating it if needed.
pub fn open_log(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Spawns `command` as the leader of a new process group, its stdout and
/// stderr appended to `log` (stdin is left as the caller set it). `program`
/// names it in the error.
pub fn spawn_logged(command: &mut Command, log: &Path, program: &Path) -> Result<Child> {
    let out = open_log(log)?;
    let err = out
        .try_clone()
        .with_context(|| format!("duplicating the handle of {}", log.display()))?;
    command
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// What [`wait_until_ready`] waits for, and the words of its errors:
/// "`what` on 127.0.0.1:`port` exited (status) before `before`; its
/// `log_name` `log`: ..." and "`what` on 127.0.0.1:`port` did not `did_not`
/// within `timeout` (last probe detail); its `log_name` `log`: ...".
pub struct Readiness<'a> {
    pub what: &'a str,
    pub port: u16,
    pub before: &'a str,
    pub did_not: &'a str,
    /// The file whose last lines go into the errors.
    pub log: &'a Path,
    pub log_name: &'a str,
    pub timeout: Duration,
    /// The pause between probes.
    pub interval: Duration,
}

/// The outcome of one readiness probe.
pub enum Probe {
    Ready,
    /// Not yet; the detail (empty for none) goes into the error should the
    /// time run out.
    NotYet(String),
}

/// Probes (`probe` gets the child's pid) until it says [`Probe::Ready`],
/// fails (its error is returned as it is), the child exits (a
/// [`TryAnotherPort`] error) or `readiness.timeout` passes.
pub fn wait_until_ready(
    child: &mut Child,
    readiness: &Readiness<'_>,
    mut probe: impl FnMut(u32) -> Result<Probe>,
) -> Result<()> {
    let Readiness {
        what,
        port,
        before,
        did_not,
        log,
        log_name,
        timeout,
        interval,
    } = *readiness;
    let started = Instant::now();
    loop {
        let status = child
            .try_wait()
            .with_context(|| format!("checking whether {what} still runs"))?;
        if let Some(status) = status {
            return Err(TryAnotherPort(format!(
                "{what} on 127.0.0.1:{port} exited ({status}) before {before}; its {log_name} {}:\n{}",
                log.display(),
                log_tail(log)
            ))
            .into());
        }
        let detail = match probe(child.id())? {
            Probe::Ready => return Ok(()),
            Probe::NotYet(detail) => detail,
        };
        if started.elapsed() > timeout {
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            };
            bail!(
                "{what} on 127.0.0.1:{port} did not {did_not} within {timeout:?}{detail}; its {log_name} {}:\n{}",
                log.display(),
                log_tail(log)
            );
        }
        thread::sleep(interval);
    }
}

/// Whether 127.0.0.1:`port` accepts a TCP connection within 200 ms.
pub fn tcp_port_accepts(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

/// Calls `ready` every `interval` until it says yes (`true`) or `timeout`
/// has passed (`false`).
pub fn wait_until(timeout: Duration, interval: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ready() {
            return true;
        }
        thread::sleep(interval);
    }
    false
}

/// The last 20 lines of `log`, or why it cannot be read.
pub fn log_tail(log: &Path) -> String {
    match fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}

/// Whether UDP port `port` on 127.0.0.1 (or 0.0.0.0) is bound by sockets
/// none of which belong to process `pid`; `None` when /proc cannot tell
/// (say, without the right to read the process's descriptors).
pub fn udp_port_taken_by_other(pid: u32, port: u16) -> Option<bool> {
    let sockets = sockets_on_port("/proc/net/udp", port, None)?;
    if sockets.is_empty() {
        return Some(false);
    }
    held_by_other(pid, &sockets)
}

/// Whether TCP port `port` on 127.0.0.1 (or 0.0.0.0) is listened on by
/// sockets none of which belong to process `pid`; `None` when /proc cannot
/// tell.
pub fn tcp_listener_of_other(pid: u32, port: u16) -> Option<bool> {
    const LISTEN: &str = "0A";
    let sockets = sockets_on_port("/proc/net/tcp", port, Some(LISTEN))?;
    if sockets.is_empty() {
        return None;
    }
    held_by_other(pid, &sockets)
}

/// The sockets (as `socket:[inode]`, the way /proc/PID/fd links name them)
/// in `table` (/proc/net/tcp or udp) bound to `port` on 127.0.0.1 or
/// 0.0.0.0, in `state` when given.
fn sockets_on_port(table: &str, port: u16, state: Option<&str>) -> Option<Vec<String>> {
    let table = fs::read_to_string(table).ok()?;
    let addresses = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    let sockets = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let socket_state = fields.get(3)?;
            let inode = fields.get(9)?;
            (state.is_none_or(|s| s == *socket_state) && addresses.iter().any(|a| a == local))
                .then(|| format!("socket:[{inode}]"))
        })
        .collect();
    Some(sockets)
}

/// Whether none of `sockets` is among the descriptors of process `pid`;
/// `None` when they cannot be read.
fn held_by_other(pid: u32, sockets: &[String]) -> Option<bool> {
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

/// The program `name` on `PATH`, else in `/usr/sbin`, `/sbin`, `/usr/bin`
/// or `/bin` (a non-login `PATH` may lack the sbin directories, where
/// Debian puts daemons).
pub fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{name} not found on PATH or in /usr/sbin (is the Debian package installed?)")
}

/// `kill SIGNAL -- -GROUP`, quietly; whether it succeeded.
fn signal_group(group: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", &format!("-{group}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// SIGTERM to the child's process group (it was started as its leader),
/// SIGKILL to the group if the child has not exited after 3 s; reaps it.
pub fn kill_process_group(mut child: Child) {
    let group = child.id();
    if let Ok(None) = child.try_wait() {
        signal_group(group, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
        // Still running, so the group id is still its own.
        signal_group(group, "-KILL");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILL to the child's process group at once (a crash, not a stop: the
/// server gets no chance to flush or clean up), then reaps it.
pub fn sigkill_process_group(mut child: Child) {
    if let Ok(None) = child.try_wait() {
        // Not yet reaped, so the group id is still its own.
        signal_group(child.id(), "-KILL");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Like [`kill_process_group`], but waits for (and if need be kills) every
/// member of the group, not just the leader, and signals the group even when
/// the leader has exited (a watchdog may still run in it); then closes the
/// child's stdin and reaps it.
pub fn kill_whole_process_group(mut child: Child) {
    let group = child.id();
    // An unreaped leader keeps the group id from being reused.
    if signal_group(group, "-TERM") {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && signal_group(group, "-0") {
            let _ = child.try_wait();
            thread::sleep(Duration::from_millis(20));
        }
        if signal_group(group, "-0") {
            signal_group(group, "-KILL");
        }
    }
    // Closing a watchdog's pipe ends it, should it still run.
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_ports() -> Result<()> {
        for free_port in [free_tcp_port, free_udp_port] {
            let ports: BTreeSet<u16> = (0..50).map(|_| free_port()).collect::<Result<_>>()?;
            assert_eq!(ports.len(), 50);
        }
        Ok(())
    }

    #[test]
    fn tells_whose_udp_port_it_is() -> Result<()> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let port = socket.local_addr()?.port();
        assert_eq!(
            udp_port_taken_by_other(std::process::id(), port),
            Some(false)
        );
        // Any other process (here our own child) does not own it.
        let mut child = Command::new("sleep").arg("5").spawn()?;
        let taken = udp_port_taken_by_other(child.id(), port);
        child.kill()?;
        child.wait()?;
        assert_eq!(taken, Some(true));
        drop(socket);
        // A process forked meanwhile by a parallel test holds a copy of the
        // socket until it execs: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        while udp_port_taken_by_other(std::process::id(), port) != Some(false)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            udp_port_taken_by_other(std::process::id(), port),
            Some(false)
        );
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
}
