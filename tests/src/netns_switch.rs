//! A real switch in network namespaces, for the SNMP endpoint source
//! (issue #14): a Linux bridge `br0` (10.77.0.254/24) in a switch namespace
//! with ports `swp1`..`swp3`, each a veth whose other end is in a host
//! namespace (`h1:eth0` on swp1, `h2:eth0` on swp2, `h1:eth1` on swp3, the
//! last down until a host moves there), and in the switch namespace
//! Debian's snmpd answering the ARP tables (ipNetToPhysicalTable,
//! ipNetToMediaTable) and, through AgentX, the patched `snmp-bridge-mib`
//! subagent answering BRIDGE-MIB (dot1dTpFdbTable, dot1dBasePortTable) with
//! no cache.
//!
//! Recipe: `shared/notes/wave2-test-servers.md` §2. snmpd listens on the
//! switch namespace's own 127.0.0.1:1161; tests reach it through a socat
//! UDP relay on the root namespace's 127.0.0.1 (a free port), so nothing but
//! loopback and these namespaces is ever addressed. IPv6 is off in every
//! namespace, so only the test's own traffic fills the tables.
//!
//! Needs root ([`NetnsSwitch::available`] says why not); everything is
//! installed on first use by `scripts/test-servers/install-netns.sh`.
//! Dropping the fixture kills its processes and deletes its namespaces.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::servers::{
    InstallScript, free_udp_port, kill_process_group, test_servers_dir, wait_until,
};

/// The switch's address on br0.
pub const SWITCH_IP: &str = "10.77.0.254";
/// Host 1: 10.77.0.1, MAC 02:00:00:00:00:01, on swp1.
pub const H1_IP: &str = "10.77.0.1";
pub const H1_MAC: &str = "02:00:00:00:00:01";
/// Host 2: 10.77.0.2, MAC 02:00:00:00:00:02, on swp2.
pub const H2_IP: &str = "10.77.0.2";
pub const H2_MAC: &str = "02:00:00:00:00:02";
/// The community snmpd answers.
pub const COMMUNITY: &str = "public";

/// Runs `scripts/test-servers/install-netns.sh` once per process.
pub fn ensure_installed() -> Result<()> {
    static INSTALL: InstallScript = InstallScript::new("install-netns.sh");
    INSTALL.ensure()
}

/// The running fixture (see the module docs).
pub struct NetnsSwitch {
    /// Namespace names: switch, host 1, host 2.
    pub switch: String,
    pub h1: String,
    pub h2: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
    relay_port: u16,
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn spawn(command: &mut Command, log: &Path) -> Result<Child> {
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone().context("log handle")?;
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .context("spawning a fixture process")
}

impl NetnsSwitch {
    /// `Err(reason)` when this machine cannot run the fixture (not root).
    pub fn available() -> std::result::Result<(), String> {
        // SAFETY-free check: /proc/self/status names the effective uid.
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("");
        if euid != "0" {
            return Err(format!(
                "network namespaces need root (effective uid {euid:?})"
            ));
        }
        Ok(())
    }

    /// Builds the topology, starts snmpd, the bridge subagent and the relay,
    /// and waits until BRIDGE-MIB answers both host ports.
    pub fn start() -> Result<NetnsSwitch> {
        ensure_installed()?;
        let tag = format!("vgl{}", std::process::id() % 100_000);
        let dir = tempfile::Builder::new()
            .prefix("vigil-netns-")
            .tempdir()
            .context("tempdir")?;
        let mut fixture = NetnsSwitch {
            switch: format!("{tag}sw"),
            h1: format!("{tag}h1"),
            h2: format!("{tag}h2"),
            dir,
            children: Vec::new(),
            relay_port: 0,
        };
        // Leftovers of an earlier process with the same pid.
        for ns in [&fixture.switch, &fixture.h1, &fixture.h2] {
            let _ = ip(&["netns", "del", ns]);
        }
        fixture.build()?;
        fixture.start_agents()?;
        Ok(fixture)
    }

    fn build(&self) -> Result<()> {
        let (sw, h1, h2) = (self.switch.as_str(), self.h1.as_str(), self.h2.as_str());
        for ns in [sw, h1, h2] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            for key in ["all", "default"] {
                run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        ns,
                        "sysctl",
                        "-q",
                        "-w",
                        &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
                    ],
                )?;
            }
        }
        ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", sw, "link", "set", "br0", "up"])?;
        ip(&[
            "-n",
            sw,
            "addr",
            "add",
            &format!("{SWITCH_IP}/24"),
            "dev",
            "br0",
        ])?;
        for (port, host, host_if, mac, address) in [
            ("swp1", h1, "eth0", Some(H1_MAC), Some(H1_IP)),
            ("swp2", h2, "eth0", Some(H2_MAC), Some(H2_IP)),
            ("swp3", h1, "eth1", None, None),
        ] {
            ip(&[
                "-n", sw, "link", "add", port, "type", "veth", "peer", "name", host_if, "netns",
                host,
            ])?;
            ip(&["-n", sw, "link", "set", port, "master", "br0"])?;
            ip(&["-n", sw, "link", "set", port, "up"])?;
            if let (Some(mac), Some(address)) = (mac, address) {
                ip(&["-n", host, "link", "set", host_if, "address", mac])?;
                ip(&[
                    "-n",
                    host,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    host_if,
                ])?;
                ip(&["-n", host, "link", "set", host_if, "up"])?;
            }
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_agents(&mut self) -> Result<()> {
        let sock = self.path("agentx.sock");
        let conf = self.path("snmpd.conf");
        fs::write(
            &conf,
            format!(
                "master agentx\nagentXSocket {}\nagentAddress udp:127.0.0.1:1161\nrocommunity {COMMUNITY} default\n",
                sock.display()
            ),
        )?;
        let persist = self.path("persist");
        fs::create_dir_all(&persist)?;
        let snmpd = spawn(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.switch,
                    "snmpd",
                    "-f",
                    "-Lo",
                    "-C",
                    "-c",
                ])
                .arg(&conf)
                .args(["-I", "-smux", "-p"])
                .arg(self.path("snmpd.pid"))
                .env("MIBS", "")
                .env("SNMP_PERSISTENT_DIR", &persist)
                .env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                ),
            &self.path("snmpd.log"),
        )?;
        self.children.push(snmpd);
        if !wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            sock.exists()
        }) {
            bail!(
                "snmpd in {} made no AgentX socket: {}",
                self.switch,
                fs::read_to_string(self.path("snmpd.log")).unwrap_or_default()
            );
        }
        let subconf = self.path("subconf");
        fs::create_dir_all(&subconf)?;
        fs::write(
            subconf.join("dot1qbridge.conf"),
            format!("agentXSocket {}\n", sock.display()),
        )?;
        let script = test_servers_dir().join("snmp-bridge-mib-patched");
        let bridge = spawn(
            Command::new("ip")
                .args(["netns", "exec", &self.switch, "perl"])
                .arg(&script)
                .arg("br0")
                .env("MIBS", "")
                .env("BRIDGE_MIB_CACHE_S", "0")
                .env("SNMPCONFPATH", &subconf)
                .env("SNMP_PERSISTENT_DIR", &persist),
            &self.path("bridge-mib.log"),
        )?;
        self.children.push(bridge);

        // The relay: root namespace 127.0.0.1:<port> → the switch's own
        // 127.0.0.1:1161 (a wrapper script: socat's EXEC splits on colons).
        let wrapper = self.path("relay.sh");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec ip netns exec {} socat -T 30 STDIO UDP4:127.0.0.1:1161\n",
                self.switch
            ),
        )?;
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
        let port = free_udp_port()?;
        let relay = spawn(
            Command::new("socat").args([
                "-T",
                "30",
                &format!("UDP4-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
                &format!("EXEC:{}", wrapper.display()),
            ]),
            &self.path("relay.log"),
        )?;
        self.children.push(relay);
        self.relay_port = port;

        // Both hosts talk once so the bridge learns them, then wait for
        // BRIDGE-MIB to show two ports.
        self.ping(&self.h1.clone())?;
        self.ping(&self.h2.clone())?;
        let ready = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            self.walk_in_switch("1.3.6.1.2.1.17.4.3.1.2")
                .is_ok_and(|out| out.lines().count() >= 2)
        });
        if !ready {
            bail!(
                "BRIDGE-MIB did not answer within 15 s; snmpd: {} bridge-mib: {}",
                fs::read_to_string(self.path("snmpd.log")).unwrap_or_default(),
                fs::read_to_string(self.path("bridge-mib.log")).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// `127.0.0.1:<relay port>`: the switch's SNMP agent as vigil reaches it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.relay_port)
    }

    /// snmpwalk inside the switch namespace (an oracle, and readiness).
    pub fn walk_in_switch(&self, oid: &str) -> Result<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.switch,
                "snmpwalk",
                "-v2c",
                "-c",
                COMMUNITY,
            ])
            .args(["-On", "-m", "", "-t", "1", "-r", "1", "127.0.0.1:1161", oid])
            .env("MIBS", "")
            .stdin(Stdio::null())
            .output()
            .context("running snmpwalk")?;
        if !out.status.success() {
            bail!("snmpwalk {oid}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One ping from namespace `host` to the switch (fills ARP and FDB).
    pub fn ping(&self, host: &str) -> Result<()> {
        run(
            "ip",
            &[
                "netns", "exec", host, "ping", "-c", "1", "-W", "1", SWITCH_IP,
            ],
        )
    }

    /// Moves host 1 from swp1 to swp3 (its eth0 goes down, eth1 takes its
    /// MAC and IP and comes up), then pings.
    pub fn move_h1_to_swp3(&self) -> Result<()> {
        let h1 = self.h1.as_str();
        ip(&["-n", h1, "link", "set", "eth0", "down"])?;
        ip(&[
            "-n",
            h1,
            "addr",
            "del",
            &format!("{H1_IP}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            h1,
            "link",
            "set",
            "eth0",
            "address",
            "02:00:00:00:00:f1",
        ])?;
        ip(&["-n", h1, "link", "set", "eth1", "address", H1_MAC])?;
        ip(&[
            "-n",
            h1,
            "addr",
            "add",
            &format!("{H1_IP}/24"),
            "dev",
            "eth1",
        ])?;
        ip(&["-n", h1, "link", "set", "eth1", "up"])?;
        self.ping(h1)
    }

    /// Gives host 2 a new MAC and pings, so the switch's ARP entry for
    /// 10.77.0.2 changes MAC.
    pub fn change_h2_mac(&self, mac: &str) -> Result<()> {
        ip(&["-n", &self.h2, "link", "set", "eth0", "address", mac])?;
        self.ping(&self.h2)
    }

    /// Removes the switch's ARP entry of `address`.
    pub fn forget_neighbour(&self, address: &str) -> Result<()> {
        ip(&["-n", &self.switch, "neigh", "del", address, "dev", "br0"])
    }

    /// Takes host 2's link down: the bridge flushes what it learned on swp2.
    pub fn unplug_h2(&self) -> Result<()> {
        ip(&["-n", &self.h2, "link", "set", "eth0", "down"])
    }

    /// The fixture's logs, for a failing test's message.
    pub fn logs(&self) -> String {
        ["snmpd.log", "bridge-mib.log", "relay.log"]
            .iter()
            .map(|name| {
                format!(
                    "--- {name}\n{}",
                    fs::read_to_string(self.path(name)).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for NetnsSwitch {
    fn drop(&mut self) {
        for child in self.children.drain(..).rev() {
            kill_process_group(child);
        }
        for ns in [&self.switch, &self.h1, &self.h2] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
