//! `vigil plugins test`: one run of a plugin in the real sandbox against a
//! device recording, with nothing installed and no network.
//!
//! The recording (`--snmprec FILE`, snmpsim's format) is served by
//! [`vigil_snmprec::Agent`] on an ephemeral `127.0.0.1` UDP port for the
//! duration of the run, so the plugin's SNMP calls take the whole real path:
//! the capability's OID checks, the per-device gates and budgets, `snmp2`'s
//! encoding, timeouts and the walk's order checks. The site the run uses
//! is the operator's (limits, caps, cache directory) with one change: SNMP
//! is allowed, to that one endpoint only, with a v2c community only the
//! responder knows.
//!
//! The resource defaults to a `network` resource named after the recording
//! (`juniper-mx.snmprec` → `juniper-mx`); `--resource JSON` sets its fields
//! with Panoptes' names (`resource_id`, `resource_class`,
//! `resource_metadata`...). Its endpoint is always the responder's.
//! `--enrichment FILE` seeds what the plugin reads through the
//! `enrichment-cache` import (only namespaces its `[enrichment] preload`
//! names, as in `vigil run`), in the shape `--json` prints for an
//! enrichment plugin, so one plugin's output feeds the next.
//!
//! Output: metrics groups as Panoptes JSON (schema v0.2, what the JSON
//! lines sink writes), enrichment groups as `{namespace, ttl_seconds,
//! sets: {key: {name: value}}}`. `--expect FILE` compares with a file of
//! the same shape, ignoring every `*_timestamp` field and the resource's
//! endpoint (the responder's port changes every run); groups are matched
//! by group type and dimensions (enrichment groups by namespace), so order
//! does not matter, and each difference is one line.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::model::{EnrichmentGroup, EnrichmentSet, MetricValue, Resource};
use crate::plugin::{PluginKind, PluginManifest};
use crate::sandbox::{
    RunContext, RunInput, RunOutcome, RunOutput, RunReport, Sandbox, SandboxSettings,
};
use crate::site::SiteConfig;
use vigil_snmprec::{Agent, Recording, RecordingError, Responder};

/// The community the responder answers (and the test site's credential).
pub const COMMUNITY: &str = "vigil-plugins-test";
/// Largest `--enrichment` / `--expect` file read.
const MAX_JSON_FILE: u64 = 64 << 20;
/// sysexits' `EX_CONFIG`, as for `vigil plugins check`.
const EX_CONFIG: u8 = 78;

/// `vigil plugins test` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// The plugin file (`*.vigil-plugin`): an enrichment or polling plugin.
    pub plugin: PathBuf,
    /// The device recording to answer SNMP from (snmpsim `.snmprec`).
    #[arg(long)]
    pub snmprec: PathBuf,
    /// The resource, as JSON with Panoptes' field names, e.g.
    /// '{"resource_id": "sw1", "resource_type": "cisco"}' (default: a
    /// network resource named after the recording). Its endpoint is always
    /// the responder's.
    #[arg(long)]
    pub resource: Option<String>,
    /// Enrichment groups the plugin may read (JSON, the shape `--json`
    /// prints for an enrichment plugin).
    #[arg(long)]
    pub enrichment: Option<PathBuf>,
    /// Compare the output with this file (the shape `--json` prints),
    /// ignoring timestamps; print the differences and exit 1 on mismatch.
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// Print the output as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a test could not run (a plugin that fails is an outcome, not this).
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("{0}")]
    Manifest(#[from] crate::plugin::ManifestErrors),
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error("--resource: {0}")]
    Resource(String),
    #[error(
        "{plugin}: `plugins test` runs enrichment and polling plugins (they run for a resource; SNMP needs one); this one is a {kind} plugin: use `vigil plugins run`"
    )]
    Kind { plugin: String, kind: PluginKind },
    #[error("the test site: {0}")]
    Site(String),
    #[error("starting the recording's responder on 127.0.0.1: {0}")]
    Responder(std::io::Error),
    #[error("{0}")]
    Sandbox(String),
}

/// A run against a recording, and what served it.
#[derive(Debug)]
pub struct OfflineRun {
    pub report: RunReport,
    pub resource: Resource,
    /// Where the responder listened.
    pub endpoint: SocketAddr,
    /// Datagrams it received.
    pub requests: u64,
}

/// The operator's site, allowed SNMP to `127.0.0.1` only, with one v2c
/// credential: [`COMMUNITY`].
pub fn test_site(site: &SiteConfig) -> Result<SiteConfig, OfflineError> {
    let text = format!(
        "[site]\nname = \"plugins-test\"\n[capabilities]\nallowed = [\"snmp\"]\n[snmp]\nallowed_networks = [\"127.0.0.1/32\"]\n\
         [[snmp.credentials]]\nnetworks = [\"127.0.0.1/32\"]\nversion = \"2c\"\ncommunity = \"{COMMUNITY}\"\n"
    );
    let snmp_only = SiteConfig::parse(Path::new("(plugins test)"), &text)
        .map_err(|e| OfflineError::Site(e.to_string()))?;
    let mut site = site.clone();
    if !site.allows("snmp") {
        site.allowed_capabilities.push("snmp".to_owned());
    }
    site.snmp.reach = snmp_only.snmp.reach;
    site.snmp.credentials = snmp_only.snmp.credentials;
    Ok(site)
}

/// Panoptes' resource fields `--resource` accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceJson {
    resource_id: Option<String>,
    resource_site: Option<String>,
    resource_class: Option<String>,
    resource_subclass: Option<String>,
    resource_type: Option<String>,
    /// Replaced by the responder's.
    resource_endpoint: Option<String>,
    #[serde(default)]
    resource_metadata: BTreeMap<String, String>,
    resource_plugin: Option<String>,
    /// Accepted (so a resource JSON pasted from Panoptes works), unused.
    resource_creation_timestamp: Option<Json>,
    resource_ttl: Option<Json>,
}

/// The resource to run for: `json` over the defaults, at `endpoint`.
pub fn resource(
    json: Option<&str>,
    recording: &Path,
    site: &SiteConfig,
    endpoint: SocketAddr,
) -> Result<Resource, OfflineError> {
    let given: ResourceJson = match json {
        None => ResourceJson::default(),
        Some(text) => {
            serde_json::from_str(text).map_err(|e| OfflineError::Resource(e.to_string()))?
        }
    };
    let stem = recording
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "device".to_owned());
    let mut resource = Resource::named(&given.resource_id.unwrap_or(stem), &endpoint.to_string());
    resource.site = given.resource_site.unwrap_or_else(|| site.name.clone());
    resource.class = given.resource_class.unwrap_or_else(|| "network".to_owned());
    resource.subclass = given.resource_subclass.unwrap_or_default();
    resource.type_ = given.resource_type.unwrap_or_default();
    resource.creation_plugin = given.resource_plugin.unwrap_or_default();
    resource.metadata = given.resource_metadata.into_iter().collect();
    let _ = (
        given.resource_endpoint,
        given.resource_creation_timestamp,
        given.resource_ttl,
    );
    Ok(resource)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, OfflineError> {
    let input = |message: String| OfflineError::Input {
        path: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| input(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| input(e.to_string()))?;
    if bytes.len() as u64 > MAX_JSON_FILE {
        return Err(input(format!("larger than {MAX_JSON_FILE} bytes")));
    }
    Ok(bytes)
}

/// An enrichment group as `--json` prints it and `--enrichment` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichmentJson {
    pub namespace: String,
    pub ttl_seconds: u64,
    pub sets: BTreeMap<String, BTreeMap<String, String>>,
}

impl From<&EnrichmentGroup> for EnrichmentJson {
    fn from(group: &EnrichmentGroup) -> Self {
        EnrichmentJson {
            namespace: group.namespace.clone(),
            ttl_seconds: group.ttl_seconds,
            sets: group
                .sets
                .iter()
                .map(|s| (s.key.clone(), s.values.iter().cloned().collect()))
                .collect(),
        }
    }
}

/// Reads `--enrichment FILE`.
pub fn read_enrichment(path: &Path) -> Result<Vec<EnrichmentGroup>, OfflineError> {
    let bytes = read_bounded(path)?;
    let groups: Vec<EnrichmentJson> =
        serde_json::from_slice(&bytes).map_err(|e| OfflineError::Input {
            path: path.display().to_string(),
            message: format!(
                "{e} (expected a JSON array of {{\"namespace\", \"ttl_seconds\", \"sets\": {{key: {{name: value}}}}}})"
            ),
        })?;
    Ok(groups
        .into_iter()
        .map(|g| EnrichmentGroup {
            namespace: g.namespace,
            ttl_seconds: g.ttl_seconds,
            sets: g
                .sets
                .into_iter()
                .map(|(key, values)| EnrichmentSet {
                    key,
                    values: values.into_iter().collect(),
                })
                .collect(),
        })
        .collect())
}

/// Runs the plugin at `plugin` once against `recording`, for the resource
/// `resource_json` describes, with `enrichments` in its cache.
pub async fn run_against(
    site: &SiteConfig,
    plugin: &Path,
    recording_path: &Path,
    recording: Recording,
    resource_json: Option<&str>,
    enrichments: Vec<EnrichmentGroup>,
) -> Result<OfflineRun, OfflineError> {
    let site = test_site(site)?;
    let manifest = PluginManifest::load(plugin, &site.plugin_policy())?;
    for warning in &manifest.warnings {
        eprintln!("warning: {warning}");
    }
    if !matches!(
        manifest.kind,
        PluginKind::Enrichment | PluginKind::Polling | PluginKind::Endpoints
    ) {
        return Err(OfflineError::Kind {
            plugin: plugin.display().to_string(),
            kind: manifest.kind,
        });
    }
    let sandbox = Sandbox::new(&SandboxSettings::from_site(&site))
        .map_err(|e| OfflineError::Sandbox(format!("{e:#}")))?;
    let prepared = sandbox
        .prepare(Arc::new(manifest))
        .map_err(|e| OfflineError::Sandbox(format!("{}: {e:#}", plugin.display())))?;
    let agent = Agent::start(Responder::new(Arc::new(recording), COMMUNITY))
        .await
        .map_err(OfflineError::Responder)?;
    let resource = resource(resource_json, recording_path, &site, agent.endpoint())?;
    let mut context = RunContext::new(SystemTime::now(), Some(resource.id.clone()));
    let preload = &prepared.manifest.preload;
    context.enrichments = enrichments
        .into_iter()
        .filter(|g| {
            let wanted = preload.contains(&g.namespace);
            if !wanted {
                eprintln!(
                    "note: enrichment namespace {:?} left out: the plugin's [enrichment] preload does not name it",
                    g.namespace
                );
            }
            wanted
        })
        .collect();
    let input = match prepared.manifest.kind {
        PluginKind::Enrichment => RunInput::Enrich(resource.clone().into()),
        PluginKind::Endpoints => RunInput::Collect(resource.clone().into()),
        _ => RunInput::Poll(resource.clone().into()),
    };
    let report = sandbox.run(&prepared, input, context).await;
    Ok(OfflineRun {
        report,
        resource,
        endpoint: agent.endpoint(),
        requests: agent.requests(),
    })
}

/// A run's output as the JSON `--json` prints and `--expect` reads.
pub fn output_json(output: &RunOutput) -> Json {
    match output {
        RunOutput::Metrics(groups) => Json::Array(
            groups
                .iter()
                .map(|g| {
                    serde_json::from_slice(&vigil_core::panoptes::encode_metrics_group(g))
                        .unwrap_or(Json::Null)
                })
                .collect(),
        ),
        RunOutput::Enrichments(groups) => Json::Array(
            groups
                .iter()
                .map(|g| serde_json::to_value(EnrichmentJson::from(g)).unwrap_or(Json::Null))
                .collect(),
        ),
        RunOutput::Resources(resources) => Json::Array(
            resources
                .iter()
                .map(|r| {
                    serde_json::from_slice(&vigil_core::panoptes::encode_resource(r))
                        .unwrap_or(Json::Null)
                })
                .collect(),
        ),
        RunOutput::Analysis(_) => Json::Array(Vec::new()),
        RunOutput::Endpoints(tables) => Json::Array(
            tables
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or(Json::Null))
                .collect(),
        ),
    }
}

/// Text of a JSON leaf for a diff line.
fn leaf(value: &Json) -> String {
    match value {
        Json::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Flattens `value` into `path -> leaf`, leaving out timestamps and the
/// resource's endpoint; a group's `metrics` and `dimensions` are keyed by
/// name, not position.
fn flatten(path: &str, value: &Json, out: &mut BTreeMap<String, String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Json::Object(map) => {
            for (key, value) in map {
                if key.ends_with("_timestamp") || key == "resource_endpoint" {
                    continue;
                }
                match (key.as_str(), value) {
                    ("metrics", Json::Array(metrics)) => {
                        for m in metrics {
                            let name = m.get("metric_name").map_or_else(String::new, leaf);
                            let name = name.trim_matches('"');
                            let value = m.get("metric_value").map_or_else(String::new, leaf);
                            let kind = m.get("metric_type").map_or_else(String::new, leaf);
                            out.insert(
                                format!("{}.{name}", join("metrics")),
                                format!("{value} ({})", kind.trim_matches('"')),
                            );
                        }
                    }
                    ("dimensions", Json::Array(dimensions)) => {
                        for d in dimensions {
                            let name = d.get("dimension_name").map_or_else(String::new, leaf);
                            let value = d.get("dimension_value").map_or_else(String::new, leaf);
                            out.insert(
                                format!("{}.{}", join("dimensions"), name.trim_matches('"')),
                                value,
                            );
                        }
                    }
                    _ => flatten(&join(key), value, out),
                }
            }
        }
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&join(&i.to_string()), item, out);
            }
        }
        other => {
            out.insert(path.to_owned(), leaf(other));
        }
    }
}

/// How a group is named in a diff: type and dimensions (metrics groups),
/// namespace (enrichment groups), id (resources).
fn label(item: &Json) -> String {
    if let Some(kind) = item.get("metrics_group_type").and_then(Json::as_str) {
        let dimensions: Vec<String> = item
            .get("dimensions")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{}={}",
                    d.get("dimension_name").and_then(Json::as_str).unwrap_or(""),
                    d.get("dimension_value").map_or_else(String::new, leaf)
                )
            })
            .collect();
        return format!("{kind} [{}]", dimensions.join(" "));
    }
    if let Some(namespace) = item.get("namespace").and_then(Json::as_str) {
        return format!("enrichment {namespace:?}");
    }
    if let Some(id) = item.get("resource_id").and_then(Json::as_str) {
        return format!("resource {id:?}");
    }
    leaf(item)
}

fn keyed(items: &Json) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items.as_array().into_iter().flatten() {
        let base = label(item);
        let mut name = base.clone();
        let mut n = 1;
        while out.contains_key(&name) {
            n += 1;
            name = format!("{base} #{n}");
        }
        let mut fields = BTreeMap::new();
        flatten("", item, &mut fields);
        out.insert(name, fields);
    }
    out
}

/// The differences between an expected and an actual output, one line
/// each; empty when they agree (timestamps and the endpoint aside).
pub fn compare(expected: &Json, actual: &Json) -> Vec<String> {
    let mut lines = Vec::new();
    if !expected.is_array() {
        lines.push("the expected file is not a JSON array of groups".to_owned());
        return lines;
    }
    let expected = keyed(expected);
    let actual = keyed(actual);
    for (name, want) in &expected {
        let Some(got) = actual.get(name) else {
            lines.push(format!("- missing: {name}"));
            continue;
        };
        for (path, value) in want {
            match got.get(path) {
                None => lines.push(format!("- {name}: {path}: missing (expected {value})")),
                Some(other) if other != value => {
                    lines.push(format!("~ {name}: {path}: expected {value}, got {other}"))
                }
                Some(_) => {}
            }
        }
        for (path, value) in got {
            if !want.contains_key(path) {
                lines.push(format!("+ {name}: {path}: unexpected {value}"));
            }
        }
    }
    for name in actual.keys() {
        if !expected.contains_key(name) {
            lines.push(format!("+ unexpected: {name}"));
        }
    }
    lines
}

fn print_table(output: &RunOutput) {
    match output {
        RunOutput::Metrics(groups) => {
            for group in groups {
                let dimensions: Vec<String> = group
                    .dimensions
                    .iter()
                    .map(|d| format!("{}={:?}", d.name, d.value))
                    .collect();
                println!("{} {}", group.group_type, dimensions.join(" "));
                for m in &group.metrics {
                    let value = match m.value {
                        MetricValue::Signed(v) => v.to_string(),
                        MetricValue::Unsigned(v) => v.to_string(),
                        MetricValue::Float(v) => v.to_string(),
                    };
                    let kind = match m.type_ {
                        crate::model::MetricType::Counter => "counter",
                        crate::model::MetricType::Gauge => "gauge",
                    };
                    println!("    {:<32} {:<8} {value}", m.name, kind);
                }
            }
        }
        RunOutput::Enrichments(groups) => {
            for group in groups {
                println!(
                    "enrichment {} (ttl {}s, {} sets)",
                    group.namespace,
                    group.ttl_seconds,
                    group.sets.len()
                );
                for set in &group.sets {
                    let values: Vec<String> = set
                        .values
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect();
                    println!("    {:<12} {}", set.key, values.join(" "));
                }
            }
        }
        RunOutput::Endpoints(tables) => {
            for t in tables {
                let kind = t.kind.map_or("?", |k| k.as_str());
                let complete = if t.complete { "" } else { ", incomplete" };
                println!(
                    "{kind} {} (context {:?}, {} entries{complete})",
                    t.source,
                    t.context,
                    t.entries.len()
                );
                for e in &t.entries {
                    println!(
                        "    {:<40} {:<17} ifIndex {:<6} {:<16} vlan {:<4} {:?}",
                        e.address, e.mac, e.if_index, e.interface, e.vlan, e.state
                    );
                }
            }
        }
        RunOutput::Resources(_) | RunOutput::Analysis(_) => {}
    }
}

/// `vigil plugins test`: exit 0 when the run is ok (and matches
/// `--expect`), 1 when it fails or differs, 78 for a plugin file that does
/// not load.
pub async fn run(site: &SiteConfig, args: TestArgs) -> anyhow::Result<ExitCode> {
    let recording = Recording::load(&args.snmprec)?;
    if recording.duplicates() > 0 || recording.out_of_order() > 0 {
        eprintln!(
            "note: {}: {} lines out of OID order and {} repeated OIDs; served as an agent would, in OID order, the later line of a repeated OID winning",
            args.snmprec.display(),
            recording.out_of_order(),
            recording.duplicates()
        );
    }
    let objects = recording.len();
    let enrichments = match &args.enrichment {
        Some(path) => read_enrichment(path)?,
        None => Vec::new(),
    };
    let expected = match &args.expect {
        Some(path) => {
            let bytes = read_bounded(path)?;
            Some(
                serde_json::from_slice::<Json>(&bytes).map_err(|e| OfflineError::Input {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    let run = match run_against(
        site,
        &args.plugin,
        &args.snmprec,
        recording,
        args.resource.as_deref(),
        enrichments,
    )
    .await
    {
        Ok(run) => run,
        Err(OfflineError::Manifest(errors)) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(EX_CONFIG));
        }
        Err(error) => return Err(error.into()),
    };
    let report = &run.report;
    for line in &report.log {
        let fields: Vec<String> = line
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        eprintln!(
            "plugin log {:?}: {} {}",
            line.level,
            line.message,
            fields.join(" ")
        );
    }
    if !report.stderr.is_empty() {
        eprintln!("plugin stderr: {}", report.stderr.trim_end());
    }
    let snmp = report
        .snmp
        .as_ref()
        .map_or_else(|| "no SNMP".to_owned(), |s| s.describe(""));
    eprintln!(
        "{} ({}) for resource {:?}: {} ({} objects of {} served at {}, {} datagrams); took {:?}",
        report.plugin,
        report.kind,
        run.resource.id,
        snmp,
        objects,
        args.snmprec.display(),
        run.endpoint,
        run.requests,
        report.duration
    );
    let RunOutcome::Ok(output) = &report.outcome else {
        println!("outcome: {}", report.outcome);
        return Ok(ExitCode::FAILURE);
    };
    let json = output_json(output);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else if expected.is_none() {
        println!("outcome: ok");
        print_table(output);
    }
    if let (Some(expected), Some(path)) = (expected, &args.expect) {
        let differences = compare(&expected, &json);
        if !differences.is_empty() {
            println!(
                "output differs from {} ({} differences; timestamps and the resource endpoint are not compared):",
                path.display(),
                differences.len()
            );
            for line in differences {
                println!("  {line}");
            }
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("output matches {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(kind: &str, iface: &str, bits: u64, stamp: f64) -> Json {
        json!({
            "metrics_group_type": kind,
            "metrics_group_creation_timestamp": stamp,
            "resource": {"resource_id": "sw1", "resource_endpoint": format!("127.0.0.1:{}", stamp as u64)},
            "dimensions": [{"dimension_name": "interface_name", "dimension_value": iface}],
            "metrics": [
                {"metric_name": "bits_in", "metric_value": bits, "metric_type": "counter", "metric_creation_timestamp": stamp},
                {"metric_name": "mtu", "metric_value": 1500, "metric_type": "gauge", "metric_creation_timestamp": stamp},
            ],
        })
    }

    #[test]
    fn timestamps_endpoints_and_order_are_not_differences() {
        let expected = json!([
            group("interface", "ge-0/0/0", 8, 1.0),
            group("interface", "ge-0/0/1", 16, 1.0)
        ]);
        let actual = json!([
            group("interface", "ge-0/0/1", 16, 2.0),
            group("interface", "ge-0/0/0", 8, 2.0)
        ]);
        assert_eq!(compare(&expected, &actual), Vec::<String>::new());
    }

    #[test]
    fn every_difference_is_one_readable_line() {
        let expected = json!([
            group("interface", "ge-0/0/0", 8, 1.0),
            group("interface", "ge-0/0/9", 1, 1.0)
        ]);
        let mut changed = group("interface", "ge-0/0/0", 9, 1.0);
        changed["metrics"][1]["metric_type"] = json!("counter");
        changed["metrics"]
            .as_array_mut()
            .expect("metrics")
            .push(json!({"metric_name": "extra", "metric_value": 1, "metric_type": "gauge"}));
        let actual = json!([changed, group("cpu", "x", 1, 1.0)]);
        let lines = compare(&expected, &actual);
        assert_eq!(
            lines,
            [
                "~ interface [interface_name=\"ge-0/0/0\"]: metrics.bits_in: expected 8 (counter), got 9 (counter)",
                "~ interface [interface_name=\"ge-0/0/0\"]: metrics.mtu: expected 1500 (gauge), got 1500 (counter)",
                "+ interface [interface_name=\"ge-0/0/0\"]: metrics.extra: unexpected 1 (gauge)",
                "- missing: interface [interface_name=\"ge-0/0/9\"]",
                "+ unexpected: cpu [interface_name=\"x\"]",
            ]
        );
    }

    #[test]
    fn enrichment_output_reads_back_as_enrichment_input() {
        let group = EnrichmentGroup {
            namespace: "interface".into(),
            ttl_seconds: 900,
            sets: vec![EnrichmentSet {
                key: "7".into(),
                values: vec![("interface_name".into(), "eth7".into())],
            }],
        };
        let json = output_json(&RunOutput::Enrichments(vec![group.clone()]));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("enrichment.json");
        std::fs::write(&path, serde_json::to_vec(&json).expect("json")).expect("write");
        assert_eq!(read_enrichment(&path).expect("reads"), vec![group]);
        std::fs::write(&path, b"{\"namespace\": 1}").expect("write");
        let error = read_enrichment(&path)
            .expect_err("not an array")
            .to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
    }

    #[test]
    fn the_resource_takes_panoptes_fields_and_the_responders_endpoint() {
        let site = SiteConfig::embedded();
        let endpoint: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let default =
            resource(None, Path::new("/x/juniper-mx.snmprec"), &site, endpoint).expect("default");
        assert_eq!(
            (
                default.id.as_str(),
                default.class.as_str(),
                default.endpoint.as_str()
            ),
            ("juniper-mx", "network", "127.0.0.1:40000")
        );
        let given = resource(
            Some(r#"{"resource_id": "sw1", "resource_type": "cisco", "resource_endpoint": "10.0.0.1", "resource_metadata": {"os": "ios"}}"#),
            Path::new("d.snmprec"),
            &site,
            endpoint,
        )
        .expect("given");
        assert_eq!(given.id, "sw1");
        assert_eq!(given.type_, "cisco");
        assert_eq!(given.endpoint, "127.0.0.1:40000");
        assert_eq!(given.metadata, vec![("os".to_owned(), "ios".to_owned())]);
        let error = resource(
            Some(r#"{"resource_idd": "x"}"#),
            Path::new("d"),
            &site,
            endpoint,
        )
        .expect_err("typo");
        assert!(error.to_string().contains("resource_idd"), "{error}");
    }

    #[test]
    fn the_test_site_grants_snmp_to_loopback_only() {
        let site = test_site(&SiteConfig::embedded()).expect("site");
        assert!(site.allows("snmp"));
        let rule = &site.snmp.credentials[0];
        assert!(
            rule.networks
                .iter()
                .all(|n| n.contains("127.0.0.1".parse().expect("ip")))
        );
        assert!(
            !rule
                .networks
                .iter()
                .any(|n| n.contains("10.0.0.1".parse().expect("ip")))
        );
    }
}
