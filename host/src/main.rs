//! `vigil`: the command-line entry point.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use vigil_host::agent::{self, AgentSettings, Identity, Role};
use vigil_host::dashboards::DashboardsCommand;
use vigil_host::filter::ResourceFilter;
use vigil_host::model::{MetricValue, Resource};
use vigil_host::plugin::{PluginKind, PluginManifest, PluginRegistry};
use vigil_host::sandbox::{
    CacheOutcome, PreparedPlugin, RunContext, RunInput, RunOutcome, RunOutput, Sandbox,
    SandboxSettings,
};
use vigil_host::site::SiteConfig;
use vigil_host::store::Storage;
use vigil_host::units::format_size;

/// Lifting plugin output allocates many small strings; mimalloc handles
/// that pattern markedly faster than the system allocator (see the sandbox
/// benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Network telemetry with sandboxed WebAssembly collectors"
)]
struct Cli {
    /// Site configuration (TOML). Without it vigil uses built-in limits and
    /// grants no capability.
    #[arg(long, global = true, env = "VIGIL_SITE")]
    site: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run vigil: load the site's plugins, discover resources, poll them on
    /// schedule and write telemetry, until SIGINT or SIGTERM.
    Run {
        /// agent: run plugins; consumer: read the Kafka bus into this
        /// process's sinks; all: both.
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
        /// Unique among the site's agents (default HOSTNAME-PID).
        #[arg(long, env = "VIGIL_AGENT_ID")]
        agent_id: Option<String>,
    },
    /// Consume the site's Kafka bus into this process's sinks (the
    /// consumer role of `vigil run`), in a consumer group with the other
    /// consumers of the site.
    Consume {
        /// The sinks to feed. `site`: those the site config's `[outputs]`
        /// sets up (JSON lines, latest values, Prometheus, InfluxDB,
        /// Pushgateway).
        #[arg(long, default_value = "site")]
        sink: String,
    },
    /// What the running (or last) vigil of this site is doing.
    Status {
        /// Print the raw status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The discovered resources (optionally filtered with the filter DSL).
    Resources {
        #[arg(long)]
        filter: Option<String>,
    },
    /// The latest value of every series.
    Metrics {
        /// Only resources matching this filter.
        #[arg(long)]
        filter: Option<String>,
        /// Only this metrics group type (e.g. `interface`).
        #[arg(long)]
        group: Option<String>,
    },
    /// Recent plugin runs, newest first.
    Runs {
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Work with plugin files.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Generate Grafana dashboards (from a flow description, or vigil's own
    /// health) and draw dashboard layouts. Needs no site config.
    Dashboards {
        #[command(subcommand)]
        command: DashboardsCommand,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Validate plugin files (ini + component) offline and show what each
    /// is, what it asks for and its limits.
    Check {
        /// `*.vigil-plugin` files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List the plugins in the site's plugin directories (or those given).
    List {
        /// Plugin directories (default: the site's `plugins.directories`).
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
    },
    /// Run a plugin once, in the sandbox, and print the outcome.
    ///
    /// An enrichment or polling plugin runs for a resource: `--resource-id`
    /// names one of the site's discovered resources (`vigil resources`),
    /// or, with `--endpoint`, one made up by hand.
    Run {
        path: PathBuf,
        /// The resource to poll or enrich.
        #[arg(long)]
        resource_id: Option<String>,
        /// Poll a resource that is not in the store, at this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// The class of a resource given with `--endpoint`.
        #[arg(long, default_value = "network", requires = "endpoint")]
        class: String,
    },
}

/// Exit status for a configuration error (sysexits' `EX_CONFIG`): the
/// shipped unit says `RestartPreventExitStatus=78`, so systemd does not
/// restart a broken config in a loop.
const EX_CONFIG: u8 = 78;
/// Exit status of `vigil status` when vigil is not running (LSB's "program
/// is not running"), so the command serves as a health check.
const NOT_RUNNING: u8 = 3;

/// A configuration problem that is not located in a file (those are
/// [`vigil_host::plugin::ini::LocatedError`]s): exits [`EX_CONFIG`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if !matches!(cli.command, Command::Run { .. } | Command::Consume { .. }) {
        die_quietly_on_a_closed_pipe();
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("vigil: {error:#}");
            let config = error.chain().any(|e| {
                e.downcast_ref::<vigil_host::plugin::ini::LocatedError>()
                    .is_some()
                    || e.downcast_ref::<ConfigError>().is_some()
            });
            if config {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Read commands end like other Unix tools when their reader goes away
/// (`vigil metrics | head`): killed by SIGPIPE, silently, instead of Rust's
/// default (SIGPIPE ignored, so `println!` panics on the closed pipe). Not
/// for `vigil run`, which must survive a peer closing a socket.
fn die_quietly_on_a_closed_pipe() {
    // SAFETY: called first thing in `main`, before any other thread exists;
    // setting a signal's disposition to the default is async-signal-safe
    // and touches no Rust state.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,vigil=info,vigil_host=info"));
    // Colours only for a person at a terminal: a journal, a file or a pipe
    // gets plain text (escape codes there are noise an operator must strip).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `vigil run` / `vigil consume`: runs until SIGINT or SIGTERM.
fn serve(
    runtime: &tokio::runtime::Runtime,
    has_site: bool,
    site: Arc<SiteConfig>,
    identity: Identity,
) -> anyhow::Result<ExitCode> {
    if !has_site {
        return Err(ConfigError(
            "vigil needs a site config to run: --site FILE (or VIGIL_SITE)".to_owned(),
        )
        .into());
    }
    // The first signal starts an orderly stop (runs in flight finish
    // within their deadlines, buffers flush); a second one ends vigil at
    // once, for an operator who will not wait.
    let shutdown = async {
        shutdown_signal().await;
        tokio::spawn(async {
            let signal = shutdown_signal().await;
            eprintln!(
                "vigil: second signal: exiting at once; runs in flight and buffered output are abandoned"
            );
            std::process::exit(128 + signal);
        });
    };
    runtime.block_on(agent::run_as(
        site,
        AgentSettings::default(),
        identity,
        shutdown,
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn load_site(path: Option<&Path>) -> anyhow::Result<SiteConfig> {
    match path {
        Some(path) => Ok(SiteConfig::load(path)?),
        None => Ok(SiteConfig::embedded()),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Offline: needs neither a site config nor the async runtime.
    if let Command::Dashboards { command } = cli.command {
        vigil_host::dashboards::run(command)?;
        return Ok(ExitCode::SUCCESS);
    }
    let site = Arc::new(load_site(cli.site.as_deref())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let _guard = runtime.enter();
    match cli.command {
        Command::Run { role, agent_id } => {
            let agent_id = agent_id.unwrap_or_else(vigil_host::backends::default_agent_id);
            serve(
                &runtime,
                cli.site.is_some(),
                site,
                Identity { role, agent_id },
            )
        }
        Command::Consume { sink } => {
            if sink != "site" {
                anyhow::bail!(
                    "--sink {sink:?}: the consumer feeds the sinks the site config's [outputs] sets up (`--sink site`)"
                );
            }
            let identity = Identity {
                role: Role::Consumer,
                agent_id: vigil_host::backends::default_agent_id(),
            };
            serve(&runtime, cli.site.is_some(), site, identity)
        }
        Command::Status { json } => runtime.block_on(status(&site, json)),
        Command::Resources { filter } => runtime.block_on(resources(&site, filter.as_deref())),
        Command::Metrics { filter, group } => {
            runtime.block_on(metrics(&site, filter.as_deref(), group.as_deref()))
        }
        Command::Runs {
            plugin,
            limit,
            json,
        } => runtime.block_on(runs(&site, plugin.as_deref(), limit, json)),
        Command::Dashboards { command } => {
            vigil_host::dashboards::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins { command } => {
            let sandbox = Arc::new(Sandbox::new(&SandboxSettings::from_site(&site))?);
            match command {
                PluginsCommand::Check { paths } => Ok(check(&sandbox, &site, &paths)),
                PluginsCommand::List { dirs } => list(sandbox, site, dirs),
                PluginsCommand::Run {
                    path,
                    resource_id,
                    endpoint,
                    class,
                } => {
                    let prepared = match prepare(&sandbox, &site, &path) {
                        Ok(prepared) => prepared,
                        Err(error) => {
                            eprintln!("{error}");
                            return Ok(ExitCode::FAILURE);
                        }
                    };
                    let resource = match prepared.manifest.kind {
                        PluginKind::Discovery | PluginKind::Analysis => Resource::named("", ""),
                        PluginKind::Enrichment | PluginKind::Polling => runtime
                            .block_on(resource_to_run(&site, resource_id, endpoint, class))?,
                    };
                    runtime.block_on(run_once(&sandbox, &prepared, resource))
                }
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
/// Waits for SIGINT (Ctrl-C) or SIGTERM; returns the signal's number.
async fn shutdown_signal() -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => libc::SIGINT,
                _ = terminate.recv() => libc::SIGTERM,
            }
        }
        Err(_) => {
            let _ = interrupt.await;
            libc::SIGINT
        }
    }
}

async fn open_store(site: &SiteConfig) -> anyhow::Result<Arc<dyn Storage>> {
    vigil_host::backends::open_storage(site, true).await
}

fn parse_filter(text: Option<&str>) -> anyhow::Result<Option<ResourceFilter>> {
    match text {
        None => Ok(None),
        Some(text) => ResourceFilter::parse(text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--filter: {e}\n{}", e.render(text))),
    }
}

fn ago(at: f64) -> String {
    let now = vigil_host::pipeline::epoch_seconds(SystemTime::now());
    format!("{:.0}s ago", (now - at).max(0.0))
}

/// `vigil status`: exits [`NOT_RUNNING`] when vigil has never run here or
/// its status is stale, so it doubles as a health check.
async fn status(site: &SiteConfig, json: bool) -> anyhow::Result<ExitCode> {
    if site.storage_backend == vigil_host::site::StorageBackend::Embedded
        && !site.database.is_file()
    {
        eprintln!(
            "vigil: not running: no vigil database at {} (has `vigil run` run with this site config?)",
            site.database.display()
        );
        return Ok(ExitCode::from(NOT_RUNNING));
    }
    let store = open_store(site).await?;
    let Some(status) = store.status().await? else {
        eprintln!("vigil: not running: vigil has not written a status yet");
        return Ok(ExitCode::from(NOT_RUNNING));
    };
    // The running host refreshes its status every 2 s.
    let age = vigil_host::pipeline::epoch_seconds(SystemTime::now()) - status.updated_at;
    let running = age < 10.0;
    let code = if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_RUNNING)
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(code);
    }
    let state = if running {
        "running"
    } else {
        "NOT RUNNING (or hung): status is stale"
    };
    println!(
        "site {} (pid {}): {state}; started {}, status updated {}",
        status.site,
        status.pid,
        ago(status.started_at),
        ago(status.updated_at)
    );
    println!("{} live resources", status.resources);
    println!(
        "{:<26} {:<11} {:<16} {:>7} {:>7} {:>9} {:>9}  OUTCOMES",
        "PLUGIN", "KIND", "SCHEDULE", "RUNS", "SKIPPED", "LATE p50", "LATE p99"
    );
    for p in &status.plugins {
        let outcomes: Vec<String> = p.outcomes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<26} {:<11} {:<16} {:>7} {:>7} {:>7.0}ms {:>7.0}ms  {}",
            p.name,
            p.kind,
            p.schedule,
            p.runs,
            p.skipped,
            p.lateness_p50_ms,
            p.lateness_p99_ms,
            outcomes.join(" ")
        );
    }
    // Written by this version's agent; one from another version that no
    // longer parses shows as empty rather than hiding the rest.
    let health: vigil_host::health::HealthSnapshot =
        serde_json::from_value(status.health.clone()).unwrap_or_default();
    let health = &health;
    if !health.inventory.resources_by_discovery.is_empty() {
        let by: Vec<String> = health
            .inventory
            .resources_by_discovery
            .iter()
            .map(|(plugin, n)| format!("{plugin}={n}"))
            .collect();
        println!("resources by discovery plugin: {}", by.join(" "));
    }
    if !health.queues.is_empty() {
        let queues: Vec<String> = health
            .queues
            .iter()
            .map(|(queue, n)| format!("{queue}={n}"))
            .collect();
        println!("queues: {}", queues.join(" "));
    }
    if !health.sinks.is_empty() {
        println!(
            "{:<16} {:<12} {:>17} {:>10} {:>10} {:>8}  DROPPED",
            "SINK", "KIND", "BUFFERED/CAPACITY", "ACCEPTED", "DELIVERED", "RETRIES"
        );
        for sink in &health.sinks {
            let dropped: Vec<String> = sink
                .dropped
                .iter()
                .map(|(why, n)| format!("{why}={n}"))
                .collect();
            let fill = if sink.capacity == 0 {
                "-".to_owned()
            } else {
                format!("{}/{}", sink.buffered, sink.capacity)
            };
            println!(
                "{:<16} {:<12} {:>17} {:>10} {:>10} {:>8}  {}",
                sink.name,
                sink.kind,
                fill,
                sink.accepted,
                sink.delivered,
                sink.retries,
                if dropped.is_empty() {
                    "0".to_owned()
                } else {
                    dropped.join(" ")
                }
            );
        }
    }
    // Series budgets per plugin: who holds what, and what was refused.
    for p in &health.sink_plugins {
        let dropped: Vec<String> = p
            .dropped
            .iter()
            .map(|(why, n)| format!("{why}={n}"))
            .collect();
        println!(
            "  {} series of plugin {:?}: {}{}{}",
            p.sink,
            p.plugin,
            p.series,
            if dropped.is_empty() { "" } else { ", refused " },
            dropped.join(" ")
        );
    }
    for (path, error) in &status.broken {
        println!("broken: {path}");
        for line in error.lines() {
            println!("    {line}");
        }
    }
    Ok(code)
}

async fn resources(site: &SiteConfig, filter: Option<&str>) -> anyhow::Result<ExitCode> {
    let filter = parse_filter(filter)?;
    let store = open_store(site).await?;
    let now = vigil_host::pipeline::epoch_seconds(SystemTime::now());
    println!(
        "{:<24} {:<8} {:<16} {:<24} {:<12} DISCOVERED BY",
        "ID", "SITE", "ENDPOINT", "CLASS/SUBCLASS/TYPE", "EXPIRES"
    );
    for stored in store.live_resources(now).await? {
        let r = &stored.resource;
        if filter.as_ref().is_some_and(|f| !f.matches(r)) {
            continue;
        }
        println!(
            "{:<24} {:<8} {:<16} {:<24} {:<12} {}",
            r.id,
            r.site,
            r.endpoint,
            format!("{}/{}/{}", r.class, r.subclass, r.type_),
            format!("in {:.0}s", stored.expires_at - now),
            stored.discovered_by
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn metrics(
    site: &SiteConfig,
    filter: Option<&str>,
    group: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let filter = parse_filter(filter)?;
    let store = open_store(site).await?;
    // Only a filter needs the resources: the ids of those it matches.
    let matching: Option<std::collections::HashSet<String>> = match &filter {
        None => None,
        Some(filter) => {
            let now = vigil_host::pipeline::epoch_seconds(SystemTime::now());
            Some(
                store
                    .live_resources(now)
                    .await?
                    .into_iter()
                    .filter(|s| filter.matches(&s.resource))
                    .map(|s| s.resource.id)
                    .collect(),
            )
        }
    };
    for series in store.latest(group).await? {
        if matching
            .as_ref()
            .is_some_and(|ids| !ids.contains(&series.resource_id))
        {
            continue;
        }
        let dimensions: Vec<String> = series
            .dimensions
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        println!(
            "{} {} [{}] {} = {} ({}, {})",
            series.resource_id,
            series.group_type,
            dimensions.join(" "),
            series.metric,
            series.value,
            series.metric_type,
            ago(series.at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn runs(
    site: &SiteConfig,
    plugin: Option<&str>,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_store(site).await?;
    for run in store.recent_runs(plugin, limit).await? {
        if json {
            println!("{}", serde_json::to_string(&run)?);
            continue;
        }
        println!(
            "{:.3} {:<24} {:<20} {:<22} late {:>6.0}ms took {:>7.1}ms {}",
            run.started_at,
            run.plugin,
            run.resource_id.as_deref().unwrap_or("-"),
            run.outcome,
            (run.started_at - run.scheduled_at) * 1000.0,
            (run.finished_at - run.started_at) * 1000.0,
            run.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn prepare(sandbox: &Sandbox, site: &SiteConfig, path: &Path) -> Result<PreparedPlugin, String> {
    let manifest = PluginManifest::load(path, &site.plugin_policy()).map_err(|e| e.to_string())?;
    sandbox
        .prepare(Arc::new(manifest))
        .map_err(|e| format!("{}: {e:#}", path.display()))
}

fn check(sandbox: &Sandbox, site: &SiteConfig, paths: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in paths {
        match prepare(sandbox, site, path) {
            Ok(prepared) => describe(path, &prepared),
            Err(error) => {
                failed = true;
                println!("{}: FAILED", path.display());
                for line in error.lines() {
                    println!("  {line}");
                }
            }
        }
    }
    if failed {
        // A plugin file that does not load is a configuration error.
        ExitCode::from(EX_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

fn describe(path: &Path, prepared: &PreparedPlugin) {
    let m = &prepared.manifest;
    println!("{}: ok", path.display());
    let row = |label: &str, value: &str| println!("  {label:<16}{value}");
    row("name", &m.name);
    row(
        "kind",
        &format!("{} (exports {})", m.kind, m.kind.export_interface()),
    );
    row(
        "module",
        &format!(
            "{} ({}, sha256 {})",
            m.module.display(),
            format_size(prepared.wasm_bytes),
            &prepared.wasm_sha256[..16]
        ),
    );
    row(
        "compiled",
        match prepared.cache {
            CacheOutcome::Hit => "from the precompiled cache",
            CacheOutcome::Compiled => "now (and cached)",
        },
    );
    for (label, value) in [
        ("author", &m.documentation.author),
        ("version", &m.documentation.version),
        ("website", &m.documentation.website),
        ("description", &m.documentation.description),
    ] {
        if let Some(value) = value {
            row(label, value);
        }
    }
    row("schedule", &m.schedule.to_string());
    row(
        "resource filter",
        &m.resource_filter
            .as_ref()
            .map_or("(every resource)".to_owned(), |f| f.source().to_owned()),
    );
    row("limits", &m.limits.to_string());
    let mut grants = Vec::new();
    if let Some(dir) = &m.grants.files {
        grants.push(format!("files: {} (read-only, at /data)", dir.display()));
    }
    if let Some(snmp) = &m.snmp {
        grants.push(format!(
            "snmp: the polled resource's endpoint (timeout {:?}, {} retries, max-repetitions {})",
            snmp.timeout, snmp.retries, snmp.max_repetitions
        ));
    }
    if grants.is_empty() {
        grants.push("none".to_owned());
    }
    row("capabilities", &grants.join("; "));
    let vigil_imports: Vec<&str> = prepared
        .imports
        .iter()
        .filter(|i| i.starts_with("vigil:"))
        .map(String::as_str)
        .collect();
    row(
        "imports",
        &format!(
            "{} (+{} WASI interfaces, denied unless granted)",
            if vigil_imports.is_empty() {
                "none".to_owned()
            } else {
                vigil_imports.join(", ")
            },
            prepared.imports.len() - vigil_imports.len()
        ),
    );
    let sections: Vec<&str> = m.sections.names().collect();
    row(
        "config sections",
        &if sections.is_empty() {
            "none".to_owned()
        } else {
            sections.join(", ")
        },
    );
}

fn list(
    sandbox: Arc<Sandbox>,
    site: Arc<SiteConfig>,
    dirs: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let dirs = if dirs.is_empty() {
        site.plugin_directories.clone()
    } else {
        dirs
    };
    if dirs.is_empty() {
        anyhow::bail!(
            "no plugin directories: pass --dir DIR or set plugins.directories in the site config"
        );
    }
    let registry = PluginRegistry::new(sandbox, site.plugin_policy(), dirs);
    registry.rescan();
    println!("{:<28} {:<11} {:<10} FILE", "NAME", "KIND", "EVERY");
    for plugin in registry.plugins() {
        let m = plugin.manifest();
        println!(
            "{:<28} {:<11} {:<10} {}",
            m.name,
            m.kind.name(),
            format!("{:?}", m.schedule.interval()),
            m.path.display()
        );
    }
    let failures = registry.failures();
    for (path, error) in &failures {
        println!(
            "{:<28} {:<11} {:<10} {}",
            "(broken)",
            "-",
            "-",
            path.display()
        );
        for line in error.lines() {
            println!("    {line}");
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        // A plugin file that does not load is a configuration error.
        ExitCode::from(EX_CONFIG)
    })
}

/// The resource `plugins run` runs an enrichment or polling plugin for:
/// made up with `--endpoint`, else the site's discovered resource
/// `--resource-id` (never a silent default).
async fn resource_to_run(
    site: &SiteConfig,
    id: Option<String>,
    endpoint: Option<String>,
    class: String,
) -> anyhow::Result<Resource> {
    let Some(id) = id else {
        anyhow::bail!(
            "this plugin runs for a resource: give --resource-id ID (one of `vigil resources`), or --resource-id ID --endpoint ADDRESS for one not discovered"
        );
    };
    if let Some(endpoint) = endpoint {
        let mut resource = Resource::named(&id, &endpoint);
        resource.class = class;
        resource.site = site.name.clone();
        return Ok(resource);
    }
    let now = vigil_host::pipeline::epoch_seconds(SystemTime::now());
    let store = open_store(site).await.with_context(|| {
        format!("looking up resource {id:?} (give --endpoint to run for one by hand)")
    })?;
    store
        .live_resources(now)
        .await?
        .into_iter()
        .find(|stored| stored.resource.id == id)
        .map(|stored| stored.resource)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "resource {id:?} is not among this site's live resources (`vigil resources` lists them); give --endpoint ADDRESS to run for it by hand"
            )
        })
}

async fn run_once(
    sandbox: &Sandbox,
    prepared: &PreparedPlugin,
    resource: Resource,
) -> anyhow::Result<ExitCode> {
    let kind = prepared.manifest.kind;
    let input = match kind {
        PluginKind::Discovery => RunInput::Discover,
        PluginKind::Enrichment => RunInput::Enrich(resource.clone().into()),
        PluginKind::Polling => RunInput::Poll(resource.clone().into()),
        PluginKind::Analysis => anyhow::bail!(
            "`plugins run` does not drive analysis plugins (they need endpoint events)"
        ),
    };
    let context = RunContext::new(
        SystemTime::now(),
        (kind != PluginKind::Discovery).then(|| resource.id.clone()),
    );
    let report = sandbox.run(prepared, input, context).await;
    println!("outcome: {}", report.outcome);
    println!(
        "took {:?}, fuel {}, peak memory {}, host calls {}, log lines {} kept / {} dropped",
        report.duration,
        report.fuel_consumed,
        format_size(report.peak_memory),
        report.host_calls,
        report.log.len(),
        report.log_dropped
    );
    if let RunOutcome::Ok(output) = &report.outcome {
        print_output(output);
    }
    Ok(if report.outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_output(output: &RunOutput) {
    match output {
        RunOutput::Metrics(groups) => {
            for group in groups {
                let dims: Vec<String> = group
                    .dimensions
                    .iter()
                    .map(|d| format!("{}={:?}", d.name, d.value))
                    .collect();
                let metrics: Vec<String> = group
                    .metrics
                    .iter()
                    .map(|m| {
                        let value = match m.value {
                            MetricValue::Signed(v) => v.to_string(),
                            MetricValue::Unsigned(v) => v.to_string(),
                            MetricValue::Float(v) => v.to_string(),
                        };
                        format!("{}={value}", m.name)
                    })
                    .collect();
                println!(
                    "  {} [{}] {}",
                    group.group_type,
                    dims.join(" "),
                    metrics.join(" ")
                );
            }
        }
        RunOutput::Resources(resources) => {
            for r in resources {
                println!(
                    "  {} {} {}/{}/{}",
                    r.id, r.endpoint, r.class, r.subclass, r.type_
                );
            }
        }
        RunOutput::Enrichments(groups) => {
            for g in groups {
                println!(
                    "  {} ({} keys, ttl {}s)",
                    g.namespace,
                    g.sets.len(),
                    g.ttl_seconds
                );
            }
        }
        RunOutput::Analysis(a) => println!(
            "  {} findings, {} bytes of state",
            a.findings.len(),
            a.state.len()
        ),
    }
}
