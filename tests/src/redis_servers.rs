//! A private `redis-server` on a loopback port, for tests that stop and
//! restart Redis without disturbing the machine's own (127.0.0.1:6379).
//! Nothing is persisted: a restart comes back empty, as a crashed cache
//! would.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::servers::{free_tcp_port, tcp_port_accepts, wait_until};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Result<RedisServer> {
        let port = free_tcp_port()?;
        let mut server = RedisServer { port, child: None };
        server.restart()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again) on the same port, empty.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (Debian package redis-server)")?;
        self.child = Some(child);
        let port = self.port;
        if wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            tcp_port_accepts(port)
        }) {
            return Ok(());
        }
        bail!(
            "redis-server did not listen on 127.0.0.1:{} within 10 s",
            self.port
        )
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
