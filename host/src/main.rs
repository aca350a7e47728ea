//! `vigil`: the command-line entry point.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use vigil_host::model::{MetricValue, Resource};
use vigil_host::plugin::{PluginKind, PluginManifest, PluginRegistry};
use vigil_host::sandbox::{
    CacheOutcome, PreparedPlugin, RunContext, RunInput, RunOutcome, RunOutput, Sandbox,
    SandboxSettings,
};
use vigil_host::site::SiteConfig;
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
    /// Work with plugin files.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
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
    Run {
        path: PathBuf,
        /// Resource id to poll or enrich.
        #[arg(long, default_value = "example-device")]
        resource_id: String,
        /// Resource endpoint.
        #[arg(long, default_value = "127.0.0.1")]
        endpoint: String,
        /// Resource class.
        #[arg(long, default_value = "network")]
        class: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("vigil: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,vigil=info,vigil_host=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_site(path: Option<&Path>) -> anyhow::Result<SiteConfig> {
    match path {
        Some(path) => Ok(SiteConfig::load(path)?),
        None => Ok(SiteConfig::embedded()),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let site = Arc::new(load_site(cli.site.as_deref())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let _guard = runtime.enter();
    let sandbox = Arc::new(Sandbox::new(&SandboxSettings::from_site(&site))?);
    match cli.command {
        Command::Plugins { command } => match command {
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
                let mut resource = Resource::named(&resource_id, &endpoint);
                resource.class = class;
                resource.site = site.name.clone();
                runtime.block_on(run_once(&sandbox, &prepared, resource))
            }
        },
    }
}

fn prepare(sandbox: &Sandbox, site: &SiteConfig, path: &Path) -> Result<PreparedPlugin, String> {
    let manifest = PluginManifest::load(path, site).map_err(|e| e.to_string())?;
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
        ExitCode::FAILURE
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
    row("schedule", &format!("every {:?}", m.execute_frequency));
    row(
        "resource filter",
        m.resource_filter.as_deref().unwrap_or("(every resource)"),
    );
    row("limits", &m.limits.to_string());
    let grants = match &m.grants.files {
        Some(dir) => format!("files: {} (read-only, at /data)", dir.display()),
        None => "none".to_owned(),
    };
    row("capabilities", &grants);
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
    let registry = PluginRegistry::new(sandbox, site, dirs);
    registry.rescan();
    println!("{:<28} {:<11} {:<10} FILE", "NAME", "KIND", "EVERY");
    for plugin in registry.plugins() {
        let m = plugin.manifest();
        println!(
            "{:<28} {:<11} {:<10} {}",
            m.name,
            m.kind.name(),
            format!("{:?}", m.execute_frequency),
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
        ExitCode::FAILURE
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
        PluginKind::Enrichment => RunInput::Enrich(resource.clone()),
        PluginKind::Polling => RunInput::Poll(resource.clone()),
        PluginKind::Analysis => anyhow::bail!(
            "`plugins run` does not drive analysis plugins (they need endpoint events)"
        ),
    };
    let context = RunContext {
        scheduled: SystemTime::now(),
        resource_id: (kind != PluginKind::Discovery).then(|| resource.id.clone()),
    };
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
