//! Real metrics servers for the sink tests, on loopback only:
//!
//! - [`Influxd`]: Debian's InfluxDB 1.6 with a private data directory, which
//!   a test can crash ([`Influxd::kill`]) and bring back with its data
//!   ([`Influxd::start_again`]);
//! - [`Pushgateway`]: Debian's Prometheus Pushgateway, without persistence;
//! - [`Prometheus`]: Debian's Prometheus scraping targets of the test's
//!   choosing every second, with `honor_labels: true`.
//!
//! Everything is installed on first use by
//! `scripts/test-servers/install-prom-influx.sh` (see [`ensure_installed`]).
//! Every server binds `127.0.0.1:<free port>` (never a default port: tests
//! run in parallel, and the machine may run its own), keeps its files in a
//! temporary directory and is killed with its process group when dropped. A
//! test process killed outright (SIGKILL, abort) leaves its servers running.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use crate::servers::free_tcp_port;
use crate::servers::{
    self, InstallScript, Probe, Readiness, TryAnotherPort, find_program, kill_process_group,
    sigkill_process_group, start_on_free_port, tcp_listener_of_other,
};

/// How long a start waits for a server to answer (each is usually ready in
/// well under 2 s; a parallel build on two cores slows everything down).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one readiness probe or helper request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `scripts/test-servers/install-prom-influx.sh` once per process
/// (later calls return the first call's outcome): Debian's `prometheus`,
/// `prometheus-pushgateway` and `influxdb`, their system services stopped.
/// The script is quick when everything is there and serialises concurrent
/// callers with a lock; it needs root when something is missing.
pub fn ensure_installed() -> Result<()> {
    static INSTALL: InstallScript = InstallScript::new("install-prom-influx.sh");
    INSTALL.ensure()
}

fn http_client() -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .timeout(HTTP_TIMEOUT)
        // Only loopback is ever targeted; a proxy from the environment
        // must not intercept it.
        .no_proxy()
        .build()
        .context("building an HTTP client")
}

/// Whether `GET url` answers with `status` (a readiness probe).
fn answers(client: &reqwest::blocking::Client, url: &str, status: u16) -> Probe {
    match client.get(url).timeout(Duration::from_millis(500)).send() {
        Ok(response) if response.status().as_u16() == status => Probe::Ready,
        Ok(response) => Probe::NotYet(format!("GET {url}: HTTP {}", response.status())),
        Err(e) => Probe::NotYet(format!("GET {url}: {e}")),
    }
}

/// Starts `command` (in its own process group, output to `log`) into
/// `slot`, then waits until `GET http://127.0.0.1:<port><path>` answers
/// `status`, making sure the listener on `port` is the child's own.
fn spawn_and_wait(
    slot: &mut Option<Child>,
    command: &mut Command,
    program: &Path,
    what: &str,
    port: u16,
    (path, status): (&str, u16),
    log: &Path,
) -> Result<()> {
    let child = slot.insert(servers::spawn_logged(command, log, program)?);
    let client = http_client()?;
    let url = format!("http://127.0.0.1:{port}{path}");
    let readiness = Readiness {
        what,
        port,
        before: "answering",
        did_not: "answer",
        log,
        log_name: "log",
        timeout: READY_TIMEOUT,
        interval: Duration::from_millis(50),
    };
    servers::wait_until_ready(child, &readiness, |pid| {
        // Another process that took the port would answer too.
        if tcp_listener_of_other(pid, port) == Some(true) {
            return Err(TryAnotherPort(format!(
                "127.0.0.1:{port} was taken by another process before {what} could bind it"
            ))
            .into());
        }
        Ok(answers(&client, &url, status))
    })
}

/// InfluxDB 1.6 (`influxd run -config FILE`) with HTTP on
/// `127.0.0.1:<port>`, its RPC (backup/restore) service on another free
/// loopback port instead of the default 8088, authentication off, usage
/// reporting and its own `_internal` monitoring off, logging at `warn`,
/// and its meta, data and WAL directories (and log, `influxd.log`) in a
/// temporary directory. The WAL is fsynced on every write, so a write
/// answered 204 survives [`Influxd::kill`]. Killed (with its process group)
/// on drop.
#[derive(Debug)]
pub struct Influxd {
    /// The HTTP port on 127.0.0.1; kept across [`Influxd::start_again`].
    pub port: u16,
    rpc_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    client: reqwest::blocking::Client,
}

impl Influxd {
    /// Starts influxd on free ports and waits (up to 30 s) until `/ping`
    /// answers 204. No database exists yet ([`Influxd::create_database`]).
    pub fn start() -> Result<Influxd> {
        ensure_installed()?;
        let dir = servers::temp_dir("vigil-influxd-", "influxd")?;
        let mut influxd = Influxd {
            port: 0,
            rpc_port: 0,
            dir,
            child: None,
            client: http_client()?,
        };
        start_on_free_port("influxd", free_tcp_port, |port| {
            influxd.port = port;
            influxd.rpc_port = free_tcp_port()?;
            influxd.spawn_and_wait().inspect_err(|_| influxd.stop())
        })?;
        Ok(influxd)
    }

    /// `http://127.0.0.1:PORT`, the base of `/write`, `/query` and `/ping`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id of the running server; `None` when it is not running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far (across restarts).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `CREATE DATABASE "name"` (a no-op when it exists).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.post_query(&format!("CREATE DATABASE {}", quote_identifier(name)))
            .map(drop)
    }

    /// Runs InfluxQL `influxql` in database `db` (`GET /query`, so only
    /// reads) and returns the whole answer, `{"results": [...]}`, with
    /// times as integer nanoseconds since the epoch (`epoch=ns`) so a test
    /// can compare them exactly. An error in the answer (a statement error
    /// or an HTTP error) is an `Err`.
    pub fn query(&self, db: &str, influxql: &str) -> Result<Value> {
        let response = self
            .client
            .get(format!("{}/query", self.url()))
            .query(&[("db", db), ("q", influxql), ("epoch", "ns")])
            .send()
            .with_context(|| format!("querying influxd on {}: {influxql}", self.url()))?;
        query_answer(response, influxql)
    }

    /// `POST /query` for statements that change something.
    fn post_query(&self, influxql: &str) -> Result<Value> {
        let response = self
            .client
            .post(format!("{}/query", self.url()))
            .form(&[("q", influxql)])
            .send()
            .with_context(|| format!("querying influxd on {}: {influxql}", self.url()))?;
        query_answer(response, influxql)
    }

    /// Crashes the server: SIGKILL to its process group, no shutdown. Its
    /// data directory stays for [`Influxd::start_again`]. Does nothing when
    /// it is not running.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            sigkill_process_group(child);
        }
    }

    /// Starts the server again on the same ports with the same data
    /// directory (what it acknowledged before [`Influxd::kill`] is still
    /// there), killing it first if it runs, and waits until `/ping`
    /// answers 204.
    pub fn start_again(&mut self) -> Result<()> {
        self.kill();
        self.spawn_and_wait().inspect_err(|_| self.stop())
    }

    /// Stops the server (SIGTERM to its process group, SIGKILL after 3 s).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_process_group(child);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    fn config(&self) -> String {
        let dir = self.dir.path();
        let mut config = String::from("# Written by vigil-tests (tests/src/metrics_servers.rs).\n");
        let _ = write!(
            config,
            "reporting-disabled = true\n\
             bind-address = \"127.0.0.1:{rpc}\"\n\
             \n\
             [meta]\n  dir = {meta}\n  logging-enabled = false\n\
             \n\
             [data]\n  dir = {data}\n  wal-dir = {wal}\n  wal-fsync-delay = \"0s\"\n  query-log-enabled = false\n\
             \n\
             [monitor]\n  store-enabled = false\n\
             \n\
             [http]\n  enabled = true\n  bind-address = \"127.0.0.1:{http}\"\n  auth-enabled = false\n  log-enabled = false\n  pprof-enabled = false\n\
             \n\
             [logging]\n  level = \"warn\"\n  suppress-logo = true\n\
             \n\
             [continuous_queries]\n  enabled = false\n  log-enabled = false\n\
             \n\
             [subscriber]\n  enabled = false\n",
            rpc = self.rpc_port,
            http = self.port,
            meta = toml_string(&dir.join("meta")),
            data = toml_string(&dir.join("data")),
            wal = toml_string(&dir.join("wal")),
        );
        config
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let conf = self.dir.path().join("influxdb.conf");
        fs::write(&conf, self.config()).with_context(|| format!("writing {}", conf.display()))?;
        let program = find_program("influxd")?;
        let mut command = Command::new(&program);
        command
            .arg("run")
            .arg("-config")
            .arg(&conf)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        // influxd lets INFLUXDB_* variables override its config file.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("INFLUXDB_") {
                command.env_remove(name);
            }
        }
        let log = self.log_path();
        spawn_and_wait(
            &mut self.child,
            &mut command,
            &program,
            "influxd",
            self.port,
            ("/ping", 204),
            &log,
        )
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `"name"` with InfluxQL's escapes.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A path as a TOML basic string.
fn toml_string(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The JSON of a `/query` answer, or why it failed.
fn query_answer(response: reqwest::blocking::Response, influxql: &str) -> Result<Value> {
    let status = response.status();
    let text = response
        .text()
        .with_context(|| format!("reading the answer to {influxql}"))?;
    if !status.is_success() {
        bail!("influxd answered {status} to {influxql}: {text}");
    }
    let answer: Value = serde_json::from_str(&text)
        .with_context(|| format!("influxd's answer to {influxql} is not JSON: {text}"))?;
    if let Some(error) = answer.get("error") {
        bail!("influxd: {influxql}: {error}");
    }
    let errors: Vec<&Value> = answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|result| result.get("error"))
        .collect();
    if !errors.is_empty() {
        bail!("influxd: {influxql}: {errors:?}");
    }
    Ok(answer)
}

/// The Prometheus Pushgateway on `127.0.0.1:<port>`, with its persistence
/// file in a temporary directory (Debian's default is the system one) and
/// log (`pushgateway.log`) beside it. Killed (with its process group) on
/// drop.
#[derive(Debug)]
pub struct Pushgateway {
    /// The port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    client: reqwest::blocking::Client,
}

impl Pushgateway {
    /// Starts a Pushgateway on a free port and waits (up to 30 s) until
    /// `/-/ready` answers 200.
    pub fn start() -> Result<Pushgateway> {
        ensure_installed()?;
        let dir = servers::temp_dir("vigil-pushgateway-", "pushgateway")?;
        let mut gateway = Pushgateway {
            port: 0,
            dir,
            child: None,
            client: http_client()?,
        };
        start_on_free_port("prometheus-pushgateway", free_tcp_port, |port| {
            gateway.port = port;
            gateway.spawn_and_wait().inspect_err(|_| gateway.stop())
        })?;
        Ok(gateway)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything it serves to a scraper (`GET /metrics`, text format):
    /// the pushed series and its own.
    pub fn metrics_text(&self) -> Result<String> {
        let url = format!("{}/metrics", self.url());
        let response = self
            .client
            .get(&url)
            .send()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let text = response.text().with_context(|| format!("reading {url}"))?;
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {text}");
        }
        Ok(text)
    }

    /// Stops it (SIGTERM to its process group, SIGKILL after 3 s).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_process_group(child);
        }
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let program = find_program("prometheus-pushgateway")?;
        let log = self.dir.path().join("pushgateway.log");
        let mut command = Command::new(&program);
        command
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg(format!(
                "--persistence.file={}",
                self.dir.path().join("pushgateway.data").display()
            ))
            .arg("--log.level=warn")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        spawn_and_wait(
            &mut self.child,
            &mut command,
            &program,
            "prometheus-pushgateway",
            self.port,
            ("/-/ready", 200),
            &log,
        )
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prometheus on `127.0.0.1:<port>` scraping the test's targets every
/// second with `honor_labels: true` (a pushed `job` or `instance` label
/// stays as pushed), its TSDB, configuration and log (`prometheus.log`) in
/// a temporary directory. Killed (with its process group) on drop.
#[derive(Debug)]
pub struct Prometheus {
    /// The port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    scrape_config: String,
    child: Option<Child>,
    client: reqwest::blocking::Client,
}

impl Prometheus {
    /// Starts Prometheus on a free port with one scrape job per
    /// `(job, "host:port")` of `scrape_targets` (scrape interval and
    /// timeout 1 s) and waits (up to 30 s) until `/-/ready` answers 200.
    pub fn start(scrape_targets: &[(&str, String)]) -> Result<Prometheus> {
        ensure_installed()?;
        let dir = servers::temp_dir("vigil-prometheus-", "prometheus")?;
        let mut scrape_config = String::from(
            "# Written by vigil-tests (tests/src/metrics_servers.rs).\n\
             global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n",
        );
        for (job, target) in scrape_targets {
            // JSON strings are valid YAML scalars, escapes included.
            let _ = write!(
                scrape_config,
                "  - job_name: {}\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
                Value::from(*job),
                Value::from(target.as_str())
            );
        }
        let mut prometheus = Prometheus {
            port: 0,
            dir,
            scrape_config,
            child: None,
            client: http_client()?,
        };
        start_on_free_port("prometheus", free_tcp_port, |port| {
            prometheus.port = port;
            prometheus
                .spawn_and_wait()
                .inspect_err(|_| prometheus.stop())
        })?;
        Ok(prometheus)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Evaluates `promql` now (`GET /api/v1/query`) and returns
    /// `data.result` (for an instant vector: one `{"metric": {...},
    /// "value": [time, "text"]}` per series).
    pub fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let url = format!("{}/api/v1/query", self.url());
        let response = self
            .client
            .get(&url)
            .query(&[("query", promql)])
            .send()
            .with_context(|| format!("querying prometheus: {promql}"))?;
        let status = response.status();
        let text = response
            .text()
            .with_context(|| format!("reading the answer to {promql}"))?;
        let answer: Value = serde_json::from_str(&text)
            .with_context(|| format!("prometheus answered {status} to {promql}: {text}"))?;
        if answer["status"] != "success" {
            bail!("prometheus answered {status} to {promql}: {text}");
        }
        match answer["data"]["result"].as_array() {
            Some(result) => Ok(result.clone()),
            None => bail!("prometheus answered {promql} without data.result: {text}"),
        }
    }

    /// Polls [`Prometheus::query`] every 200 ms until `predicate` holds on
    /// its result and returns that result; after `timeout`, an error
    /// holding the last result (or the last query error).
    pub fn wait_for(
        &self,
        promql: &str,
        predicate: impl Fn(&[Value]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let started = Instant::now();
        loop {
            let last = self.query(promql);
            if let Ok(result) = &last
                && predicate(result)
            {
                return last;
            }
            if started.elapsed() > timeout {
                let last = match last {
                    Ok(result) => format!("last result: {}", Value::from(result)),
                    Err(e) => format!("last query failed: {e:#}"),
                };
                bail!(
                    "prometheus: {promql} did not satisfy the predicate within {timeout:?}; {last}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops it (SIGTERM to its process group, SIGKILL after 3 s).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_process_group(child);
        }
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let program = find_program("prometheus")?;
        let config = self.dir.path().join("prometheus.yml");
        fs::write(&config, &self.scrape_config)
            .with_context(|| format!("writing {}", config.display()))?;
        let log = self.dir.path().join("prometheus.log");
        let mut command = Command::new(&program);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        spawn_and_wait(
            &mut self.child,
            &mut command,
            &program,
            "prometheus",
            self.port,
            ("/-/ready", 200),
            &log,
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a point, crashes the server, brings it back on the same port
    /// and reads the point back.
    #[test]
    fn influxd_keeps_acknowledged_writes_across_a_crash() -> Result<()> {
        let mut influxd = Influxd::start()?;
        influxd.create_database("t")?;
        let response = http_client()?
            .post(format!("{}/write?db=t&precision=s", influxd.url()))
            .body("m,k=v f=1i 1700000000\n")
            .send()?;
        assert_eq!(response.status().as_u16(), 204, "{}", response.text()?);
        let port = influxd.port;
        influxd.kill();
        assert!(influxd.pid().is_none());
        influxd.start_again()?;
        assert_eq!(influxd.port, port);
        let answer = influxd.query("t", "SELECT f, k FROM m")?;
        assert_eq!(
            answer["results"][0]["series"][0]["values"],
            serde_json::json!([[1_700_000_000_000_000_000_u64, 1, "v"]]),
            "{answer}"
        );
        Ok(())
    }

    /// Prometheus scrapes a Pushgateway that holds a pushed series.
    #[test]
    fn prometheus_scrapes_what_was_pushed() -> Result<()> {
        let gateway = Pushgateway::start()?;
        let response = http_client()?
            .put(format!("{}/metrics/job/j/instance/i", gateway.url()))
            .body("vigil_harness_probe 42\n")
            .send()?;
        assert!(response.status().is_success(), "{}", response.text()?);
        assert!(gateway.metrics_text()?.contains("vigil_harness_probe"));
        let prometheus = Prometheus::start(&[("gateway", format!("127.0.0.1:{}", gateway.port))])?;
        let result = prometheus.wait_for(
            "vigil_harness_probe",
            |r| !r.is_empty(),
            Duration::from_secs(30),
        )?;
        assert_eq!(result[0]["metric"]["job"], "j", "{result:?}");
        assert_eq!(result[0]["metric"]["instance"], "i", "{result:?}");
        assert_eq!(result[0]["value"][1], "42", "{result:?}");
        Ok(())
    }
}
