//! `vigil`: the command-line entry point.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use vigil_host::agent::{self, AgentSettings, Identity, Role};
use vigil_host::dashboards::DashboardsCommand;
use vigil_host::model::Resource;
use vigil_host::plugin::PluginKind;
use vigil_host::sandbox::{Sandbox, SandboxSettings};
use vigil_host::site::SiteConfig;

mod cli;

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
    /// Site configuration (TOML); default /etc/vigil/site.toml if present.
    /// Without one vigil uses built-in limits and grants no capability, and
    /// the commands that read a site's data refuse to run.
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
    /// What every agent of this site is doing (and which are stale); exits
    /// 3 when none is running.
    Status(cli::read::StatusArgs),
    /// The discovered resources (optionally filtered with the filter DSL).
    Resources(cli::read::ResourcesArgs),
    /// The latest value of every series.
    Metrics(cli::read::MetricsArgs),
    /// Recent plugin runs, newest first.
    Runs(cli::read::RunsArgs),
    /// The enrichment cache: what enrichment plugins cached per resource
    /// and namespace, for polling plugins.
    Enrichment(cli::enrichment::EnrichmentArgs),
    /// The endpoint tracker: every MAC and IP address of a fabric, where it
    /// is and where it has been (`search` and `show` the site's history,
    /// `replay` a recorded ACI fabric).
    Endpoints {
        #[command(subcommand)]
        command: cli::endpoints::EndpointsCommand,
    },
    /// Work with plugin files.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Validate the site config and everything it references (plugin
    /// directories and files, secrets, credentials, outputs); exits 78 on
    /// errors.
    Check,
    /// Generate Grafana dashboards (from a flow description, or vigil's own
    /// health) and draw dashboard layouts. Needs no site config.
    Dashboards {
        #[command(subcommand)]
        command: DashboardsCommand,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Write a new plugin crate (SDK dependency, code, plugin file, tests)
    /// that builds and loads as it is.
    New(vigil_host::plugin::template::NewArgs),
    /// Run an enrichment or polling plugin in the sandbox against a device
    /// recording (snmpsim `.snmprec`), served by an SNMP responder inside
    /// vigil: no agent, no network. Prints the groups, or compares them
    /// with `--expect FILE`.
    Test(vigil_host::plugin::offline::TestArgs),
    /// Validate plugin files (ini + component) offline and show what each
    /// is, what it asks for and its limits.
    Check {
        /// `*.vigil-plugin` files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// One JSON object per file, per line.
        #[arg(long)]
        json: bool,
    },
    /// List the plugins in the site's plugin directories (or those given).
    List {
        /// Plugin directories (default: the site's `plugins.directories`).
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// One JSON object per plugin file, per line.
        #[arg(long)]
        json: bool,
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
        /// The outcome and output as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status for a configuration error (sysexits' `EX_CONFIG`): the
/// shipped unit says `RestartPreventExitStatus=78`, so systemd does not
/// restart a broken config in a loop.
const EX_CONFIG: u8 = 78;

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
    let site_path = vigil_host::site::site_path(cli.site.as_deref());
    if let Command::Check = cli.command {
        return check_site(site_path.as_deref());
    }
    if site_path.is_none() && reads_site_data(&cli.command) {
        return Err(ConfigError(format!(
            "no site config: give --site FILE, set VIGIL_SITE, or install {} (without one there is no site data to read)",
            vigil_host::site::DEFAULT_SITE_PATH
        ))
        .into());
    }
    let site = Arc::new(load_site(site_path.as_deref())?);
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
                site_path.is_some(),
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
            serve(&runtime, site_path.is_some(), site, identity)
        }
        Command::Status(args) => runtime.block_on(cli::read::status(&site, args)),
        Command::Resources(args) => runtime.block_on(cli::read::resources(&site, args)),
        Command::Metrics(args) => runtime.block_on(cli::read::metrics(&site, args)),
        Command::Runs(args) => runtime.block_on(cli::read::runs(&site, args)),
        Command::Enrichment(args) => runtime.block_on(cli::enrichment::show(&site, args)),
        Command::Endpoints { command } => runtime.block_on(cli::endpoints::run(&site, command)),
        Command::Dashboards { command } => {
            vigil_host::dashboards::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => check_site(site_path.as_deref()),
        Command::Plugins { command } => {
            let command = match command {
                PluginsCommand::New(args) => return vigil_host::plugin::template::run(&args),
                PluginsCommand::Test(args) => {
                    return runtime.block_on(vigil_host::plugin::offline::run(&site, args));
                }
                other => other,
            };
            let sandbox = Arc::new(Sandbox::new(&SandboxSettings::from_site(&site))?);
            match command {
                PluginsCommand::New(_) | PluginsCommand::Test(_) => unreachable!("handled above"),
                PluginsCommand::Check { paths, json } => {
                    Ok(cli::plugins::check(&sandbox, &site, &paths, json))
                }
                PluginsCommand::List { dirs, json } => {
                    cli::plugins::list(sandbox, site, dirs, json)
                }
                PluginsCommand::Run {
                    path,
                    resource_id,
                    endpoint,
                    class,
                    json,
                } => {
                    let prepared = match cli::plugins::prepare(&sandbox, &site, &path) {
                        Ok(prepared) => prepared,
                        Err(error) => {
                            eprintln!("{error}");
                            return Ok(ExitCode::FAILURE);
                        }
                    };
                    let resource =
                        match prepared.manifest.kind {
                            PluginKind::Discovery | PluginKind::Analysis => Resource::named("", ""),
                            PluginKind::Enrichment
                            | PluginKind::Polling
                            | PluginKind::Endpoints => runtime.block_on(
                                cli::plugins::resource_to_run(&site, resource_id, endpoint, class),
                            )?,
                        };
                    runtime.block_on(cli::plugins::run_once(&sandbox, &prepared, resource, json))
                }
            }
        }
    }
}

/// Commands that read what `vigil run` wrote: without a site config they
/// would open an empty database in the working directory and mislead.
fn reads_site_data(command: &Command) -> bool {
    matches!(
        command,
        Command::Status { .. }
            | Command::Resources { .. }
            | Command::Metrics { .. }
            | Command::Runs { .. }
            | Command::Enrichment { .. }
    ) || matches!(command, Command::Endpoints { command } if command.reads_site())
}

/// `vigil check`: every problem, located, then a summary line; exits
/// [`EX_CONFIG`] when there are errors.
fn check_site(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(path) = path else {
        return Err(ConfigError(format!(
            "no site config to check: give --site FILE, set VIGIL_SITE, or install {}",
            vigil_host::site::DEFAULT_SITE_PATH
        ))
        .into());
    };
    let report = vigil_host::check::check_site(path);
    for problem in &report.problems {
        println!("{problem}");
    }
    println!(
        "{}: {} errors, {} warnings; {} plugins load",
        path.display(),
        report.errors(),
        report.warnings(),
        report.plugins.len()
    );
    Ok(if report.errors() > 0 {
        ExitCode::from(EX_CONFIG)
    } else {
        ExitCode::SUCCESS
    })
}

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
