//! `vigil plugins check`, `vigil plugins list` and `vigil plugins run`:
//! plugin files as an operator inspects and tries them, offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;

use vigil_host::model::{MetricValue, Resource};
use vigil_host::plugin::{PluginKind, PluginManifest, PluginRegistry};
use vigil_host::sandbox::{
    CacheOutcome, PreparedPlugin, RunContext, RunInput, RunOutcome, RunOutput, Sandbox,
};
use vigil_host::site::SiteConfig;
use vigil_host::units::format_size;
use vigil_host::views::{
    EnrichmentGroupView, GroupView, PluginDetails, PluginRunView, PluginView, RunResourceView,
};

use super::table::Table;
use super::{json_line, open_store};

/// Loads and compiles (or takes from the cache) the plugin file at `path`.
pub fn prepare(
    sandbox: &Sandbox,
    site: &SiteConfig,
    path: &Path,
) -> Result<PreparedPlugin, String> {
    let manifest = PluginManifest::load(path, &site.plugin_policy()).map_err(|e| e.to_string())?;
    for warning in &manifest.warnings {
        eprintln!("warning: {warning}");
    }
    sandbox
        .prepare(Arc::new(manifest))
        .map_err(|e| format!("{}: {e:#}", path.display()))
}

/// `vigil plugins check`: describes every file; exits [`crate::EX_CONFIG`]
/// when one does not load.
pub fn check(sandbox: &Sandbox, site: &SiteConfig, paths: &[PathBuf], json: bool) -> ExitCode {
    let mut failed = false;
    for path in paths {
        match prepare(sandbox, site, path) {
            Ok(prepared) if json => print_json(&checked(path, &prepared)),
            Ok(prepared) => describe(path, &prepared),
            Err(error) => {
                failed = true;
                if json {
                    print_json(&broken(path, &error));
                    continue;
                }
                println!("{}: FAILED", path.display());
                for line in error.lines() {
                    println!("  {line}");
                }
            }
        }
    }
    if failed {
        // A plugin file that does not load is a configuration error.
        ExitCode::from(crate::EX_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints a line of JSON; a view always serialises, so a failure (which
/// would be a bug) is reported rather than unwrapped.
fn print_json(view: &impl serde::Serialize) {
    if let Err(e) = json_line(view) {
        eprintln!("vigil: {e}");
    }
}

fn broken(path: &Path, error: &str) -> PluginView {
    PluginView {
        path: path.display().to_string(),
        ok: false,
        error: Some(error.to_owned()),
        ..PluginView::default()
    }
}

/// What `list` shows of a loaded plugin.
fn listed(manifest: &PluginManifest) -> PluginView {
    PluginView {
        path: manifest.path.display().to_string(),
        ok: true,
        error: None,
        name: Some(manifest.name.clone()),
        kind: Some(manifest.kind.name().to_owned()),
        schedule: Some(manifest.schedule.to_string()),
        interval_seconds: Some(manifest.schedule.interval().as_secs_f64()),
        details: None,
    }
}

fn grants(m: &PluginManifest) -> Vec<String> {
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
    grants
}

/// What `check` shows of a plugin that loads.
fn checked(path: &Path, prepared: &PreparedPlugin) -> PluginView {
    let m = &prepared.manifest;
    PluginView {
        path: path.display().to_string(),
        details: Some(PluginDetails {
            exports: m.kind.export_interface().to_owned(),
            module: m.module.display().to_string(),
            module_bytes: prepared.wasm_bytes,
            module_sha256: prepared.wasm_sha256.clone(),
            cached: matches!(prepared.cache, CacheOutcome::Hit),
            author: m.documentation.author.clone(),
            version: m.documentation.version.clone(),
            website: m.documentation.website.clone(),
            description: m.documentation.description.clone(),
            resource_filter: m.resource_filter.as_ref().map(|f| f.source().to_owned()),
            limits: m.limits.to_string(),
            capabilities: grants(m),
            imports: prepared.imports.to_vec(),
            config_sections: m.sections.names().map(str::to_owned).collect(),
        }),
        ..listed(m)
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
            prepared
                .wasm_sha256
                .get(..16)
                .unwrap_or(&prepared.wasm_sha256)
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
    let mut grants = grants(m);
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

/// `vigil plugins list`: the plugins of the site's directories (or
/// `dirs`); exits [`crate::EX_CONFIG`] when one does not load.
pub fn list(
    sandbox: Arc<Sandbox>,
    site: Arc<SiteConfig>,
    dirs: Vec<PathBuf>,
    json: bool,
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
    let failures = registry.failures();
    if json {
        for plugin in registry.plugins() {
            json_line(&listed(plugin.manifest()))?;
        }
        for (path, error) in &failures {
            json_line(&broken(path, error))?;
        }
    } else {
        let mut table = Table::new(&["NAME", "KIND", "EVERY", "FILE"]);
        for plugin in registry.plugins() {
            let m = plugin.manifest();
            table.row(vec![
                m.name.clone(),
                m.kind.name().to_owned(),
                format!("{:?}", m.schedule.interval()),
                m.path.display().to_string(),
            ]);
        }
        for (path, _) in &failures {
            table.row(vec![
                "(broken)".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                path.display().to_string(),
            ]);
        }
        table.print();
        for (path, error) in &failures {
            println!("{}:", path.display());
            for line in error.lines() {
                println!("    {line}");
            }
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        // A plugin file that does not load is a configuration error.
        ExitCode::from(crate::EX_CONFIG)
    })
}

/// The resource `plugins run` runs an enrichment or polling plugin for:
/// made up with `--endpoint`, else the site's discovered resource
/// `--resource-id` (never a silent default).
pub async fn resource_to_run(
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
    let now = super::now();
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

/// A metric's value as a JSON number.
fn number(value: &MetricValue) -> serde_json::Number {
    match *value {
        MetricValue::Signed(v) => v.into(),
        MetricValue::Unsigned(v) => v.into(),
        // Outputs with non-finite numbers are rejected before this.
        MetricValue::Float(v) => serde_json::Number::from_f64(v).unwrap_or_else(|| 0.into()),
    }
}

/// `vigil plugins run`: one run in the sandbox; exits 1 unless it is `ok`.
pub async fn run_once(
    sandbox: &Sandbox,
    prepared: &PreparedPlugin,
    resource: Resource,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let kind = prepared.manifest.kind;
    let input = match kind {
        PluginKind::Discovery => RunInput::Discover,
        PluginKind::Enrichment => RunInput::Enrich(resource.clone().into()),
        PluginKind::Polling => RunInput::Poll(resource.clone().into()),
        PluginKind::Endpoints => RunInput::Collect(resource.clone().into()),
        PluginKind::Analysis => anyhow::bail!(
            "`plugins run` does not drive analysis plugins (they need endpoint events)"
        ),
    };
    let resource_id = (kind != PluginKind::Discovery).then(|| resource.id.clone());
    let context = RunContext::new(SystemTime::now(), resource_id.clone());
    let report = sandbox.run(prepared, input, context).await;
    let code = if report.outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if json {
        let mut view = PluginRunView {
            plugin: prepared.manifest.name.clone(),
            kind: kind.name().to_owned(),
            resource_id,
            outcome: report.outcome.label().to_owned(),
            outcome_detail: report.outcome.to_string(),
            duration_ms: report.duration.as_secs_f64() * 1000.0,
            fuel_consumed: report.fuel_consumed,
            peak_memory_bytes: report.peak_memory,
            host_calls: report.host_calls,
            log_lines_kept: report.log.len(),
            log_lines_dropped: report.log_dropped,
            metrics_groups: Vec::new(),
            resources: Vec::new(),
            enrichments: Vec::new(),
            endpoint_tables: Vec::new(),
        };
        if let RunOutcome::Ok(output) = &report.outcome {
            fill(&mut view, output);
        }
        json_line(&view)?;
        return Ok(code);
    }
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
    Ok(code)
}

fn fill(view: &mut PluginRunView, output: &RunOutput) {
    match output {
        RunOutput::Metrics(groups) => {
            view.metrics_groups = groups
                .iter()
                .map(|g| GroupView {
                    group_type: g.group_type.clone(),
                    dimensions: g
                        .dimensions
                        .iter()
                        .map(|d| (d.name.clone(), d.value.clone()))
                        .collect(),
                    metrics: g
                        .metrics
                        .iter()
                        .map(|m| (m.name.clone(), number(&m.value)))
                        .collect(),
                })
                .collect();
        }
        RunOutput::Resources(resources) => {
            view.resources = resources
                .iter()
                .map(|r| RunResourceView {
                    resource_id: r.id.clone(),
                    resource_endpoint: r.endpoint.clone(),
                    resource_class: r.class.clone(),
                    resource_subclass: r.subclass.clone(),
                    resource_type: r.type_.clone(),
                })
                .collect();
        }
        RunOutput::Enrichments(groups) => {
            view.enrichments = groups
                .iter()
                .map(|g| EnrichmentGroupView {
                    namespace: g.namespace.clone(),
                    ttl_seconds: g.ttl_seconds,
                    sets: g
                        .sets
                        .iter()
                        .map(|s| (s.key.clone(), s.values.iter().cloned().collect()))
                        .collect(),
                })
                .collect();
        }
        RunOutput::Analysis(_) => {}
        RunOutput::Endpoints(tables) => view.endpoint_tables = tables.clone(),
    }
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
        RunOutput::Endpoints(tables) => {
            for t in tables {
                let kind = t.kind.map_or("?", |k| k.as_str());
                println!(
                    "  {kind} {} context {:?}: {} entries{}",
                    t.source,
                    t.context,
                    t.entries.len(),
                    if t.complete { "" } else { " (incomplete)" }
                );
                for e in &t.entries {
                    println!(
                        "    {} {} ifIndex {} {:?} vlan {} {:?}",
                        e.address, e.mac, e.if_index, e.interface, e.vlan, e.state
                    );
                }
            }
        }
    }
}
