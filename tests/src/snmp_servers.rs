//! Real SNMP servers for integration tests and benchmarks, on loopback only:
//!
//! - [`Snmpd`]: Debian's net-snmp agent with communities and v3 users of the
//!   test's choosing;
//! - [`Snmpsim`]: snmpsim's command responder serving `.snmprec` recordings
//!   of real devices, one community per file, whose data a test can replace
//!   while it runs ([`Snmpsim::rewrite`]);
//! - [`snmpbulkwalk`]: net-snmp's own walker as an independent oracle for
//!   what a server really answers.
//!
//! Everything is installed on first use by `scripts/test-servers/install-snmp.sh`
//! (see [`ensure_installed`]); servers bind `127.0.0.1:<free port>` and are
//! killed when dropped. A test process killed outright (SIGKILL, abort) leaves
//! its servers running.
//!
//! The net-snmp tools run with `MIBS=` empty and `SNMPCONFPATH` pointing at an
//! empty directory, so no MIB, display hint or user `snmp.conf` changes what
//! they print: OIDs are numeric.

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

use crate::servers::{
    self, InstallScript, Probe, Readiness, TryAnotherPort, find_program, kill_process_group,
    start_on_free_port, udp_port_taken_by_other,
};
pub use crate::servers::{free_udp_port, repo_root, test_servers_dir};

/// How long [`Snmpd::start`] waits for the agent to answer.
const SNMPD_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one readiness probe of snmpd waits for a reply (snmpget `-t`).
const SNMPD_PROBE_TIMEOUT: &str = "0.1";
/// How long [`Snmpsim::start`] waits: it indexes every data file first
/// (1,000 files take 5-12 s).
const SNMPSIM_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one readiness probe of snmpsim waits for a reply.
const SNMPSIM_PROBE_TIMEOUT: &str = "0.5";

/// The device recordings shipped with the tests (`tests/fixtures/snmp`):
/// `juniper-mx.snmprec`, `cisco.snmprec`, `generic-switch.snmprec`.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests").join("fixtures").join("snmp")
}

/// Runs `scripts/test-servers/install-snmp.sh` once per process (later calls
/// return the first call's outcome): Debian's snmpd, snmp tools and
/// prometheus-snmp-exporter, and the snmpsim venv in [`test_servers_dir`].
/// The script is quick when everything is there and serialises concurrent
/// callers with a lock; it needs root when something is missing.
pub fn ensure_installed() -> Result<()> {
    static INSTALL: InstallScript = InstallScript::new("install-snmp.sh");
    INSTALL.ensure()
}

fn snmpsim_venv() -> PathBuf {
    test_servers_dir().join("snmpsim-venv")
}

/// The directory of snmpsim's own recordings of real systems
/// (`<venv>/lib/python3.*/site-packages/snmpsim/data/recorded`), holding
/// `linux-full-walk.snmprec` and `winxp-full-walk.snmprec` among others.
/// Installs snmpsim first if needed.
pub fn snmpsim_recorded_dir() -> Result<PathBuf> {
    ensure_installed()?;
    let lib = snmpsim_venv().join("lib");
    let entries = fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", lib.display()))?;
        let dir = entry
            .path()
            .join("site-packages")
            .join("snmpsim")
            .join("data")
            .join("recorded");
        if dir.join("linux-full-walk.snmprec").is_file() {
            return Ok(dir);
        }
    }
    bail!(
        "no snmpsim/data/recorded/linux-full-walk.snmprec under {}",
        lib.display()
    )
}

/// An `SNMPv3` user with SHA authentication and AES privacy (`authPriv`).
/// net-snmp wants both passwords at least 8 characters long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3User {
    /// The security name (`-u`).
    pub name: String,
    /// The SHA authentication password (`-A`).
    pub auth_password: String,
    /// The AES privacy password (`-X`).
    pub privacy_password: String,
}

/// What a [`Snmpd`] serves. It needs at least one community or v3 user; the
/// first community (else the first user) is the one its readiness check uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnmpdConfig {
    /// v2c (and v1) read-only communities, each restricted to source
    /// 127.0.0.1 and given a view of the whole tree.
    pub communities: Vec<String>,
    /// v3 read-only users (authPriv, SHA + AES) with a view of the whole tree.
    pub v3_users: Vec<V3User>,
    /// Further `snmpd.conf` lines, appended as they are.
    pub extra_lines: Vec<String>,
}

impl SnmpdConfig {
    fn validate(&self) -> Result<()> {
        ensure!(
            !self.communities.is_empty() || !self.v3_users.is_empty(),
            "SnmpdConfig needs at least one community or v3 user"
        );
        for community in &self.communities {
            ensure!(
                is_plain_word(community),
                "community {community:?} must be non-empty without whitespace, quotes or '#'"
            );
        }
        for user in &self.v3_users {
            ensure!(
                is_plain_word(&user.name),
                "v3 user name {:?} must be non-empty without whitespace, quotes or '#'",
                user.name
            );
            for (what, password) in [
                ("auth", &user.auth_password),
                ("privacy", &user.privacy_password),
            ] {
                ensure!(
                    password.len() >= 8 && !password.contains(['"', '\n', '\r', '\\']),
                    "{what} password of v3 user {:?} must have at least 8 characters and no quotes, backslashes or newlines",
                    user.name
                );
            }
        }
        Ok(())
    }

    fn render(&self, port: u16) -> String {
        let mut conf = format!(
            "# Written by vigil-tests (tests/src/snmp_servers.rs).\n\
             agentAddress udp:127.0.0.1:{port}\n\
             dontLogTCPWrappersConnects yes\n\
             view vigilAll included .1\n"
        );
        for community in &self.communities {
            let _ = writeln!(conf, "rocommunity {community} 127.0.0.1 -V vigilAll");
        }
        for user in &self.v3_users {
            let _ = writeln!(
                conf,
                "createUser {} SHA \"{}\" AES \"{}\"\nrouser {} priv -V vigilAll",
                user.name, user.auth_password, user.privacy_password, user.name
            );
        }
        for line in &self.extra_lines {
            conf.push_str(line);
            conf.push('\n');
        }
        conf
    }

    /// net-snmp client arguments for the first credential.
    fn first_credential_args(&self) -> Vec<String> {
        match (self.communities.first(), self.v3_users.first()) {
            (Some(community), _) => vec!["-v2c".into(), "-c".into(), community.clone()],
            (None, Some(user)) => vec![
                "-v3".into(),
                "-l".into(),
                "authPriv".into(),
                "-u".into(),
                user.name.clone(),
                "-a".into(),
                "SHA".into(),
                "-A".into(),
                user.auth_password.clone(),
                "-x".into(),
                "AES".into(),
                "-X".into(),
                user.privacy_password.clone(),
            ],
            (None, None) => Vec::new(),
        }
    }
}

fn is_plain_word(word: &str) -> bool {
    !word.is_empty()
        && !word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '#' | '\\'))
}

/// Debian's snmpd serving its own host's MIB-II (ifTable, system, ...) on
/// `127.0.0.1:<port>`, run as
/// `snmpd -f -Lo -I -smux -C -c CONF -p PID --persistentDir=DIR` with its
/// configuration, pid file, persistent state and log (`snmpd.log`) in a
/// temporary directory. Killed (with its process group) on drop.
#[derive(Debug)]
pub struct Snmpd {
    /// The UDP port on 127.0.0.1; kept across [`Snmpd::restart`].
    pub port: u16,
    config: SnmpdConfig,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Snmpd {
    /// Starts snmpd on a free port and waits (up to 10 s) until it answers an
    /// SNMP GET of sysUpTime.0 with the first credential of `config`.
    pub fn start(config: SnmpdConfig) -> Result<Snmpd> {
        ensure_installed()?;
        config.validate()?;
        let dir = servers::temp_dir("vigil-snmpd-", "snmpd")?;
        let persistent = dir.path().join("persistent");
        fs::create_dir(&persistent)
            .with_context(|| format!("creating {}", persistent.display()))?;
        let mut snmpd = Snmpd {
            port: 0,
            config,
            dir,
            child: None,
        };
        start_on_free_port("snmpd", free_udp_port, |port| {
            snmpd.port = port;
            snmpd.spawn_and_wait().inspect_err(|_| snmpd.stop())
        })?;
        Ok(snmpd)
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id of the running snmpd (say, to read its CPU time from
    /// `/proc/<pid>/stat`); `None` when it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops snmpd (SIGTERM to its process group, SIGKILL after 3 s). Does
    /// nothing when it is not running.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_process_group(child);
        }
    }

    /// Starts snmpd again on the same port with the same configuration (and
    /// persistent state), stopping it first if it runs, and waits until it
    /// answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_and_wait().inspect_err(|_| self.stop())
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let conf = self.dir.path().join("snmpd.conf");
        let pid = self.dir.path().join("snmpd.pid");
        let persistent = self.dir.path().join("persistent");
        let log_path = self.dir.path().join("snmpd.log");
        fs::write(&conf, self.config.render(self.port))
            .with_context(|| format!("writing {}", conf.display()))?;
        let snmpd = find_program("snmpd")?;
        let mut command = Command::new(&snmpd);
        command
            .args(["-f", "-Lo", "-I", "-smux", "-C", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(&pid)
            .arg(format!("--persistentDir={}", persistent.display()))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        isolate_net_snmp(&mut command)?;
        let child = self
            .child
            .insert(servers::spawn_logged(&mut command, &log_path, &snmpd)?);
        let probe = self.config.first_credential_args();
        wait_until_answering(
            "snmpd",
            self.port,
            &probe,
            child,
            &log_path,
            SNMPD_READY_TIMEOUT,
            SNMPD_PROBE_TIMEOUT,
        )
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// snmpsim's command responder serving `.snmprec` recordings on
/// `127.0.0.1:<port>`, one community per file (`<community>.snmprec` in its
/// own data directory), run as nobody:nogroup with its index cache and log
/// (`snmpsim.log`) in a temporary directory. Single-threaded Python: about 25
/// ifTable walks a second, fine for correctness, not for throughput. An
/// unknown community gets no answer (a timeout). Killed on drop.
#[derive(Debug)]
pub struct Snmpsim {
    /// The UDP port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    communities: Vec<String>,
    child: Option<Child>,
}

impl Snmpsim {
    /// Copies each `(community, source .snmprec)` into a fresh data directory
    /// as `<community>.snmprec`, starts snmpsim on a free port and waits (up
    /// to 60 s, as it indexes every file first) until it answers on the first
    /// community.
    pub fn start(files: &[(String, PathBuf)]) -> Result<Snmpsim> {
        ensure_installed()?;
        ensure!(
            !files.is_empty(),
            "Snmpsim::start needs at least one data file"
        );
        let dir = servers::temp_dir("vigil-snmpsim-", "snmpsim")?;
        // snmpsim drops to nobody before it reads the data and writes its
        // index: the data must be readable and the cache writable by nobody.
        set_mode(dir.path(), 0o755)?;
        let data = dir.path().join("data");
        let cache = dir.path().join("cache");
        for (path, mode) in [(&data, 0o755), (&cache, 0o777)] {
            fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
            set_mode(path, mode)?;
        }
        let mut communities = Vec::new();
        for (community, source) in files {
            ensure!(
                !community.is_empty()
                    && community
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    && !community.starts_with('.'),
                "community {community:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
            );
            ensure!(
                !communities.contains(community),
                "community {community:?} given twice"
            );
            let target = data.join(format!("{community}.snmprec"));
            fs::copy(source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
            set_mode(&target, 0o644)?;
            communities.push(community.clone());
        }
        let mut snmpsim = Snmpsim {
            port: 0,
            dir,
            communities,
            child: None,
        };
        start_on_free_port("snmpsim", free_udp_port, |port| {
            snmpsim.port = port;
            snmpsim.spawn_and_wait().inspect_err(|_| snmpsim.stop())
        })?;
        Ok(snmpsim)
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the data served for `community` (one given to
    /// [`Snmpsim::start`]) with `contents` (`.snmprec` text) so that the next
    /// request sees it.
    ///
    /// snmpsim 1.2.2 reopens a data file, and rebuilds its index, when the
    /// file's mtime in whole seconds differs from the one it last indexed,
    /// so two changes within one second would go unnoticed. The new file is
    /// therefore written beside the old one, given an mtime at least one
    /// second later than the old file's (and not earlier than now, so the
    /// index counts as out of date), and renamed over it atomically. Rapid
    /// rewrites push the mtime a few seconds into the future, which is
    /// harmless.
    pub fn rewrite(&self, community: &str, contents: &str) -> Result<()> {
        ensure!(
            self.communities.iter().any(|c| c == community),
            "snmpsim on port {} serves no community {community:?} (it serves {:?})",
            self.port,
            self.communities
        );
        let data = self.dir.path().join("data");
        let target = data.join(format!("{community}.snmprec"));
        let old_mtime = fs::metadata(&target)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading the mtime of {}", target.display()))?;
        let old_secs = whole_seconds(old_mtime);
        let now_secs = whole_seconds(SystemTime::now());
        let new_mtime = UNIX_EPOCH + Duration::from_secs(now_secs.max(old_secs + 1));

        // Not `.snmprec`: snmpsim must never take it for a data file.
        let temporary = data.join(format!(".{community}.rewrite"));
        let mut file = fs::File::create(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        file.write_all(contents.as_bytes())
            .with_context(|| format!("writing {}", temporary.display()))?;
        file.set_modified(new_mtime)
            .with_context(|| format!("setting the mtime of {}", temporary.display()))?;
        drop(file);
        set_mode(&temporary, 0o644)?;
        fs::rename(&temporary, &target)
            .with_context(|| format!("renaming {} to {}", temporary.display(), target.display()))?;
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_process_group(child);
        }
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let data = self.dir.path().join("data");
        let cache = self.dir.path().join("cache");
        let log_path = self.dir.path().join("snmpsim.log");
        let responder = snmpsim_venv().join("bin").join("snmpsim-command-responder");
        let mut command = Command::new(&responder);
        command
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--cache-dir={}", cache.display()))
            .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{}", self.port))
            .args([
                "--process-user=nobody",
                "--process-group=nogroup",
                "--logging-method=stderr",
                // "info" logs every request, which slows it down.
                "--log-level=error",
            ])
            .current_dir(self.dir.path())
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null());
        let child = self
            .child
            .insert(servers::spawn_logged(&mut command, &log_path, &responder)?);
        let probe = vec!["-v2c".into(), "-c".into(), self.communities[0].clone()];
        wait_until_answering(
            "snmpsim",
            self.port,
            &probe,
            child,
            &log_path,
            SNMPSIM_READY_TIMEOUT,
            SNMPSIM_PROBE_TIMEOUT,
        )
    }
}

impl Drop for Snmpsim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One variable of an [`snmpbulkwalk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedValue {
    /// Numeric OID without the leading dot, e.g. `1.3.6.1.2.1.2.2.1.2.1`.
    pub oid: String,
    /// net-snmp's type word: `INTEGER`, `Counter32`, `Counter64`, `Gauge32`,
    /// `Timeticks`, `STRING`, `Hex-STRING`, `OID`, `IpAddress`, `OPAQUE`,
    /// `NULL`, ... An OCTET STRING is `STRING` when net-snmp finds every byte
    /// printable ASCII or whitespace, else `Hex-STRING`.
    pub kind: String,
    /// The value as text: numbers as printed (`-42`, `18446744073709551615`);
    /// `Timeticks` as the integer in hundredths of a second; `STRING`
    /// unquoted and unescaped (it may hold tabs, CR and newlines);
    /// `Hex-STRING` and hex `OPAQUE` as lowercase hex without spaces; `OID`
    /// without the leading dot; `IpAddress` dotted; `NULL` empty.
    pub value: String,
}

impl WalkedValue {
    /// The bytes of an OCTET STRING (`STRING` or `Hex-STRING`), else `None`.
    pub fn octets(&self) -> Option<Vec<u8>> {
        match self.kind.as_str() {
            "STRING" => Some(self.value.as_bytes().to_vec()),
            "Hex-STRING" => decode_hex(&self.value),
            _ => None,
        }
    }
}

/// The independent oracle: Debian's `snmpbulkwalk -v2c -c COMMUNITY -On -Oe`
/// of the subtree `oid` at `127.0.0.1:port` (2 s timeout, 1 retry), parsed.
/// Like any snmpwalk, a subtree with nothing under it yields the OID itself
/// when that exists. noSuchObject, noSuchInstance and endOfMibView are left
/// out. An agent that does not answer is an error.
pub fn snmpbulkwalk(port: u16, community: &str, oid: &str) -> Result<Vec<WalkedValue>> {
    ensure_installed()?;
    let program = find_program("snmpbulkwalk")?;
    let mut command = Command::new(&program);
    command
        .args(["-v2c", "-c", community, "-On", "-Oe", "-t", "2", "-r", "1"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(oid);
    isolate_net_snmp(&mut command)?;
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let what = format!("snmpbulkwalk -v2c -c {community} 127.0.0.1:{port} {oid}");
    ensure!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let text = String::from_utf8(output.stdout)
        .with_context(|| format!("{what} printed something that is not UTF-8"))?;
    parse_walk(&text).with_context(|| format!("parsing the output of {what}"))
}

/// Parses net-snmp's `-On` output. STRING values may span lines (they are
/// quoted, with `"` and `\` escaped); Hex-STRING and OPAQUE wrap every 16
/// bytes onto lines of bare hex.
fn parse_walk(text: &str) -> Result<Vec<WalkedValue>> {
    let mut values = Vec::new();
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let (oid, rest) = line
            .split_once(" = ")
            .with_context(|| format!("no ' = ' in line {line:?}"))?;
        let oid = oid.strip_prefix('.').unwrap_or(oid).to_owned();
        if rest.starts_with("No more variables left in this MIB View")
            || rest.starts_with("No Such Object available")
            || rest.starts_with("No Such Instance currently exists")
        {
            continue;
        }
        let (kind, value) = if rest == "\"\"" {
            // An empty OCTET STRING has no type word.
            ("STRING".to_owned(), String::new())
        } else if rest == "NULL" {
            ("NULL".to_owned(), String::new())
        } else {
            let (kind, raw) = rest
                .split_once(": ")
                .with_context(|| format!("no type in line {line:?}"))?;
            let value = match kind {
                "STRING" => parse_quoted(raw, &mut lines)
                    .with_context(|| format!("reading the STRING of {oid}"))?,
                "Hex-STRING" | "OPAQUE" => {
                    let mut hex = raw.to_owned();
                    while let Some(next) = lines.peek() {
                        if !next.is_empty()
                            && next.chars().all(|c| c.is_ascii_hexdigit() || c == ' ')
                        {
                            hex.push_str(next);
                            lines.next();
                        } else {
                            break;
                        }
                    }
                    let compact: String = hex.split_whitespace().collect();
                    if compact.chars().all(|c| c.is_ascii_hexdigit()) {
                        compact.to_ascii_lowercase()
                    } else {
                        hex.trim().to_owned()
                    }
                }
                "Timeticks" => {
                    // "(123456) 0:20:34.56"
                    raw.strip_prefix('(')
                        .and_then(|r| r.split_once(')'))
                        .map(|(ticks, _)| ticks.to_owned())
                        .with_context(|| format!("unexpected Timeticks {raw:?} of {oid}"))?
                }
                "OID" => raw.strip_prefix('.').unwrap_or(raw).to_owned(),
                _ => raw.trim_end().to_owned(),
            };
            (kind.to_owned(), value)
        };
        values.push(WalkedValue { oid, kind, value });
    }
    Ok(values)
}

/// Reads a net-snmp quoted string starting at `first` (which begins with
/// `"`), taking further lines from `lines` until the closing quote.
fn parse_quoted<'a>(first: &'a str, lines: &mut impl Iterator<Item = &'a str>) -> Result<String> {
    let mut rest = first
        .strip_prefix('"')
        .with_context(|| format!("STRING {first:?} does not start with a quote"))?;
    let mut value = String::new();
    loop {
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return Ok(value),
                c => value.push(c),
            }
        }
        // The string goes on after a newline that is part of it.
        value.push('\n');
        rest = lines
            .next()
            .context("the output ended inside a quoted STRING")?;
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

fn whole_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Finds a net-snmp program on PATH or in the sbin directories (snmpd lives
/// in /usr/sbin, which a non-login PATH may lack).
/// No MIBs and no `snmp.conf` but the (empty) one of vigil's: the output of
/// the net-snmp tools stays numeric and the same on every machine.
fn isolate_net_snmp(command: &mut Command) -> Result<()> {
    let conf_dir = test_servers_dir().join("net-snmp-empty-conf");
    fs::create_dir_all(&conf_dir).with_context(|| format!("creating {}", conf_dir.display()))?;
    command
        .env("MIBS", "")
        .env("SNMPCONFPATH", &conf_dir)
        .env("LC_ALL", "C");
    Ok(())
}

/// snmpget of sysUpTime.0 (waiting `probe_timeout` seconds for each reply)
/// until the server answers (any answer, including noSuchInstance), the
/// process exits or `timeout` passes.
fn wait_until_answering(
    what: &str,
    port: u16,
    credential: &[String],
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    probe_timeout: &str,
) -> Result<()> {
    let snmpget = find_program("snmpget")?;
    let readiness = Readiness {
        what,
        port,
        before: "answering",
        did_not: "answer",
        log,
        log_name: "log",
        timeout,
        interval: Duration::from_millis(50),
    };
    servers::wait_until_ready(child, &readiness, |pid| {
        let mut command = Command::new(&snmpget);
        command
            .args(credential)
            .args(["-On", "-t", probe_timeout, "-r", "0"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("1.3.6.1.2.1.1.3.0")
            .stdin(Stdio::null());
        isolate_net_snmp(&mut command)?;
        let output = command
            .output()
            .with_context(|| format!("running {}", snmpget.display()))?;
        if output.status.success() {
            return Ok(Probe::Ready);
        }
        // snmpsim does not notice when its port is taken: it logs
        // "Listening at" and never answers.
        if udp_port_taken_by_other(pid, port) == Some(true) {
            return Err(TryAnotherPort(format!(
                "127.0.0.1:{port} was taken by another process before {what} could bind it"
            ))
            .into());
        }
        let last = String::from_utf8_lossy(&output.stderr);
        Ok(Probe::NotYet(format!("last snmpget: {}", last.trim())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(oid: &str, kind: &str, value: &str) -> WalkedValue {
        WalkedValue {
            oid: oid.into(),
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// Output of Debian's snmpbulkwalk 5.9.3 (`-On -Oe`) against snmpsim.
    #[test]
    fn parses_net_snmp_output() -> Result<()> {
        let text = concat!(
            ".1.3.6.1.2.1.1.1.0 = STRING: \"plain text\"\n",
            ".1.3.6.1.2.1.1.2.0 = OID: .1.3.6.1.4.1.2636.1.1.1.2.21\n",
            ".1.3.6.1.2.1.1.3.0 = Timeticks: (123456) 0:20:34.56\n",
            ".1.3.6.1.2.1.1.4.0 = STRING: \"with \\\"quotes\\\" and \\\\backslash\"\n",
            ".1.3.6.1.2.1.1.5.0 = STRING: \"line1\n",
            "line2\"\n",
            ".1.3.6.1.2.1.1.6.0 = \"\"\n",
            ".1.3.6.1.2.1.1.7.0 = INTEGER: -42\n",
            ".1.3.6.1.2.1.1.8.0 = Hex-STRING: 00 11 22 33 AA BB \n",
            ".1.3.6.1.2.1.1.11.0 = IpAddress: 10.0.0.1\n",
            ".1.3.6.1.2.1.1.14.0 = Counter64: 18446744073709551615\n",
            ".1.3.6.1.2.1.1.15.0 = OPAQUE: 01 02 \n",
            ".1.3.6.1.2.1.1.16.0 = NULL\n",
            ".1.3.6.1.2.1.1.19.0 = STRING: \"line1\r\n",
            "\"\n",
            ".1.3.6.1.2.1.1.22.0 = Hex-STRING: 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F \n",
            "10 11 \n",
            ".1.3.6.1.2.1.1.23.0 = STRING: \"a \\\"\n",
            ".1.3.6.1.2.1.1.2.0 = OID: .1\"\n",
            ".1.3.6.1.2.1.1.23.0 = No more variables left in this MIB View (It is past the end of the MIB tree)\n",
            ".1.3.6.1.2.1.1.23.0 = No more variables left in this MIB View (It is past the end of the MIB tree)\n",
        );
        let values = parse_walk(text)?;
        assert_eq!(
            values,
            vec![
                walked("1.3.6.1.2.1.1.1.0", "STRING", "plain text"),
                walked("1.3.6.1.2.1.1.2.0", "OID", "1.3.6.1.4.1.2636.1.1.1.2.21"),
                walked("1.3.6.1.2.1.1.3.0", "Timeticks", "123456"),
                walked(
                    "1.3.6.1.2.1.1.4.0",
                    "STRING",
                    "with \"quotes\" and \\backslash"
                ),
                walked("1.3.6.1.2.1.1.5.0", "STRING", "line1\nline2"),
                walked("1.3.6.1.2.1.1.6.0", "STRING", ""),
                walked("1.3.6.1.2.1.1.7.0", "INTEGER", "-42"),
                walked("1.3.6.1.2.1.1.8.0", "Hex-STRING", "00112233aabb"),
                walked("1.3.6.1.2.1.1.11.0", "IpAddress", "10.0.0.1"),
                walked("1.3.6.1.2.1.1.14.0", "Counter64", "18446744073709551615"),
                walked("1.3.6.1.2.1.1.15.0", "OPAQUE", "0102"),
                walked("1.3.6.1.2.1.1.16.0", "NULL", ""),
                walked("1.3.6.1.2.1.1.19.0", "STRING", "line1\r\n"),
                walked(
                    "1.3.6.1.2.1.1.22.0",
                    "Hex-STRING",
                    "000102030405060708090a0b0c0d0e0f1011"
                ),
                walked(
                    "1.3.6.1.2.1.1.23.0",
                    "STRING",
                    "a \"\n.1.3.6.1.2.1.1.2.0 = OID: .1"
                ),
            ]
        );
        assert_eq!(
            values[7].octets(),
            Some(vec![0, 0x11, 0x22, 0x33, 0xaa, 0xbb])
        );
        assert_eq!(values[0].octets(), Some(b"plain text".to_vec()));
        assert_eq!(values[6].octets(), None);
        Ok(())
    }

    #[test]
    fn rejects_an_unterminated_string() {
        assert!(parse_walk(".1.3 = STRING: \"open\nstill open\n").is_err());
    }

    #[test]
    fn renders_snmpd_config() {
        let config = SnmpdConfig {
            communities: vec!["public".into()],
            v3_users: vec![V3User {
                name: "vigil".into(),
                auth_password: "auth-pass".into(),
                privacy_password: "priv-pass".into(),
            }],
            extra_lines: vec!["sysName test".into()],
        };
        assert!(config.validate().is_ok());
        let conf = config.render(16161);
        assert!(conf.contains("agentAddress udp:127.0.0.1:16161\n"));
        assert!(conf.contains("rocommunity public 127.0.0.1 -V vigilAll\n"));
        assert!(conf.contains("createUser vigil SHA \"auth-pass\" AES \"priv-pass\"\n"));
        assert!(conf.contains("rouser vigil priv -V vigilAll\n"));
        assert!(conf.ends_with("sysName test\n"));
        assert!(SnmpdConfig::default().validate().is_err());
        let short = SnmpdConfig {
            v3_users: vec![V3User {
                name: "u".into(),
                auth_password: "short".into(),
                privacy_password: "long-enough".into(),
            }],
            ..SnmpdConfig::default()
        };
        assert!(short.validate().is_err());
    }
}
