//! `vigil status`, `vigil resources`, `vigil metrics` and `vigil runs`:
//! what the site's agents wrote to the store, read from another process.

use std::collections::HashSet;
use std::process::ExitCode;

use clap::Args;

use vigil_host::health::HealthSnapshot;
use vigil_host::site::{SiteConfig, StorageBackend};
use vigil_host::store::{RunQuery, SeriesQuery};
use vigil_host::views::{AgentView, ResourceView, RunView, SeriesView, StatusView, rfc3339};

use super::table::Table;
use super::{ago, json_line, now, open_store, parse_filter, parse_since};

/// Exit status of `vigil status` when vigil is not running (LSB's "program
/// is not running"), so the command serves as a health check.
pub const NOT_RUNNING: u8 = 3;

/// An agent whose heartbeat (its status, written every 2 s) is older than
/// this is stale: stopped, hung or cut off from the store.
pub const STALE_AFTER_SECONDS: f64 = 10.0;

#[derive(Args)]
pub struct StatusArgs {
    /// Print the status as JSON (one line; see the README for its shape).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ResourcesArgs {
    /// Only resources matching this filter (the filter DSL).
    #[arg(long)]
    pub filter: Option<String>,
    /// One JSON object per resource, per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct MetricsArgs {
    /// Only resources matching this filter (the filter DSL).
    #[arg(long)]
    pub filter: Option<String>,
    /// Only this metrics group type (e.g. `interface`).
    #[arg(long)]
    pub group: Option<String>,
    /// Only this resource (its exact id).
    #[arg(long)]
    pub resource: Option<String>,
    /// Only this metric (its exact name, e.g. `bits_in`).
    #[arg(long)]
    pub metric: Option<String>,
    /// Only values measured within this long (`90s`, `5m`, `2h`, `1d`).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many values.
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON object per value, per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RunsArgs {
    /// Only runs of this plugin.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Only runs for this resource (its exact id).
    #[arg(long)]
    pub resource: Option<String>,
    /// Only runs that ended so (`ok`, `plugin_error`, `trap.deadline`...).
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only runs started within this long (`90s`, `5m`, `2h`, `1d`).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// One JSON object per run, per line.
    #[arg(long)]
    pub json: bool,
}

/// Every outcome label a run record can carry (README, "Run outcomes").
pub const OUTCOMES: &[&str] = &[
    "ok",
    "plugin_error",
    "trap.deadline",
    "trap.out_of_fuel",
    "trap.memory_limit",
    "trap.table_limit",
    "trap.stack_overflow",
    "trap.panic",
    "trap.host_call_quota",
    "trap.host_panic",
    "trap.fault",
    "rejected.too_large",
    "rejected.invalid",
    "host_failure",
    "fenced",
];

/// `vigil status`: every agent of the site, live or stale; exits
/// [`NOT_RUNNING`] when no agent is live (never ran here, or every status
/// is stale), so it doubles as a health check.
pub async fn status(site: &SiteConfig, args: StatusArgs) -> anyhow::Result<ExitCode> {
    if site.storage_backend == StorageBackend::Embedded && !site.database.is_file() {
        eprintln!(
            "vigil: not running: no vigil database at {} (has `vigil run` run with this site config?)",
            site.database.display()
        );
        return Ok(ExitCode::from(NOT_RUNNING));
    }
    let store = open_store(site).await?;
    let statuses = store.statuses().await?;
    if statuses.is_empty() {
        eprintln!("vigil: not running: no agent has written a status yet");
        return Ok(ExitCode::from(NOT_RUNNING));
    }
    let now = now();
    let view = StatusView::new(&site.name, &statuses, now, STALE_AFTER_SECONDS);
    let code = if view.live_agents > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_RUNNING)
    };
    if args.json {
        json_line(&view)?;
        return Ok(code);
    }
    if view.live_agents == 0 {
        println!(
            "site {}: NOT RUNNING (or hung): no agent's status is newer than {}s",
            view.site, STALE_AFTER_SECONDS
        );
    } else {
        println!(
            "site {}: {} of {} agents live (stale after {}s without a status)",
            view.site,
            view.live_agents,
            view.agents.len(),
            STALE_AFTER_SECONDS
        );
    }
    let mut agents =
        Table::new(&["AGENT", "ROLE", "STATE", "PID", "STARTED", "HEARTBEAT"]).right_align(&[3]);
    for (agent, status) in view.agents.iter().zip(ordered(&statuses, &view)) {
        agents.row(vec![
            shown(&agent.agent_id),
            shown(&agent.role),
            agent.state.to_owned(),
            agent.pid.to_string(),
            ago(status.started_at, now),
            ago(status.updated_at, now),
        ]);
    }
    agents.print();
    for (agent, status) in view.agents.iter().zip(ordered(&statuses, &view)) {
        println!();
        print_agent(agent, status, now);
    }
    Ok(code)
}

/// `statuses` in the order of `view.agents`.
fn ordered<'a>(
    statuses: &'a [vigil_host::store::HostStatus],
    view: &StatusView,
) -> Vec<&'a vigil_host::store::HostStatus> {
    view.agents
        .iter()
        .filter_map(|a| statuses.iter().find(|s| s.agent_id == a.agent_id))
        .collect()
}

/// An empty id or role (a status of an earlier version) as `-`.
fn shown(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

fn print_agent(agent: &AgentView, status: &vigil_host::store::HostStatus, now: f64) {
    let state = if agent.is_live() {
        "running".to_owned()
    } else {
        format!(
            "STALE: no status for {:.0}s (stopped, hung, or cut off from the store)",
            agent.heartbeat_age_seconds
        )
    };
    println!(
        "agent {} (pid {}, role {}): {state}; started {}, status updated {}",
        shown(&agent.agent_id),
        agent.pid,
        shown(&agent.role),
        ago(status.started_at, now),
        ago(status.updated_at, now)
    );
    println!("{} live resources", status.resources);
    let mut plugins = Table::new(&[
        "PLUGIN", "KIND", "SCHEDULE", "RUNS", "SKIPPED", "LATE p50", "LATE p99", "OUTCOMES",
    ])
    .right_align(&[3, 4, 5, 6]);
    for p in &status.plugins {
        let outcomes: Vec<String> = p.outcomes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        plugins.row(vec![
            p.name.clone(),
            p.kind.clone(),
            p.schedule.clone(),
            p.runs.to_string(),
            p.skipped.to_string(),
            format!("{:.0}ms", p.lateness_p50_ms),
            format!("{:.0}ms", p.lateness_p99_ms),
            outcomes.join(" "),
        ]);
    }
    plugins.print();
    // Written by this version's agent; one from another version that no
    // longer parses shows as empty rather than hiding the rest.
    let health: HealthSnapshot = serde_json::from_value(status.health.clone()).unwrap_or_default();
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
    if let Some(endpoints) = &health.endpoints {
        print_endpoint_health(endpoints);
    }
    if !health.sinks.is_empty() {
        let mut sinks = Table::new(&[
            "SINK",
            "KIND",
            "BUFFERED/CAPACITY",
            "ACCEPTED",
            "DELIVERED",
            "RETRIES",
            "DROPPED",
        ])
        .right_align(&[2, 3, 4, 5]);
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
            sinks.row(vec![
                sink.name.clone(),
                sink.kind.to_string(),
                fill,
                sink.accepted.to_string(),
                sink.delivered.to_string(),
                sink.retries.to_string(),
                if dropped.is_empty() {
                    "0".to_owned()
                } else {
                    dropped.join(" ")
                },
            ]);
        }
        sinks.print();
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
    for broken in &agent.broken {
        println!("broken: {}", broken.path);
        for line in broken.error.lines() {
            println!("    {line}");
        }
    }
}

/// `vigil resources`: the live resources, optionally filtered.
pub async fn resources(site: &SiteConfig, args: ResourcesArgs) -> anyhow::Result<ExitCode> {
    let filter = parse_filter(args.filter.as_deref())?;
    let store = open_store(site).await?;
    let now = now();
    let mut table = Table::new(&[
        "ID",
        "SITE",
        "ENDPOINT",
        "CLASS/SUBCLASS/TYPE",
        "EXPIRES",
        "DISCOVERED BY",
    ]);
    for stored in store.live_resources(now).await? {
        let r = &stored.resource;
        if filter.as_ref().is_some_and(|f| !f.matches(r)) {
            continue;
        }
        if args.json {
            json_line(&ResourceView::from(&stored))?;
            continue;
        }
        table.row(vec![
            r.id.clone(),
            r.site.clone(),
            r.endpoint.clone(),
            format!("{}/{}/{}", r.class, r.subclass, r.type_),
            ago(stored.expires_at, now),
            stored.discovered_by.clone(),
        ]);
    }
    if !args.json {
        table.print();
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil metrics`: the latest value of every series the filters select.
pub async fn metrics(site: &SiteConfig, args: MetricsArgs) -> anyhow::Result<ExitCode> {
    let filter = parse_filter(args.filter.as_deref())?;
    let now = now();
    let since = parse_since(args.since.as_deref(), now)?;
    let store = open_store(site).await?;
    // Only a filter needs the resources: the ids of those it matches.
    let matching: Option<HashSet<String>> = match &filter {
        None => None,
        Some(filter) => Some(
            store
                .live_resources(now)
                .await?
                .into_iter()
                .filter(|s| filter.matches(&s.resource))
                .map(|s| s.resource.id)
                .collect(),
        ),
    };
    let query = SeriesQuery {
        group_type: args.group,
        resource_id: args.resource,
        metric: args.metric,
        since,
        // With a filter, the limit applies to what it lets through.
        limit: if matching.is_none() { args.limit } else { None },
    };
    let values = store.query_latest(&query).await?;
    let selected = values
        .iter()
        .filter(|s| {
            matching
                .as_ref()
                .is_none_or(|ids| ids.contains(&s.resource_id))
        })
        .take(args.limit.unwrap_or(usize::MAX));
    if args.json {
        for series in selected {
            json_line(&SeriesView::from(series))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "RESOURCE",
        "GROUP",
        "DIMENSIONS",
        "METRIC",
        "VALUE",
        "TYPE",
        "MEASURED",
    ])
    .right_align(&[4]);
    for series in selected {
        let dimensions: Vec<String> = series
            .dimensions
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        table.row(vec![
            series.resource_id.clone(),
            series.group_type.clone(),
            dimensions.join(" "),
            series.metric.clone(),
            series.value.clone(),
            series.metric_type.clone(),
            ago(series.at, now),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

/// `vigil runs`: recent runs, newest first.
pub async fn runs(site: &SiteConfig, args: RunsArgs) -> anyhow::Result<ExitCode> {
    if let Some(outcome) = &args.outcome
        && !OUTCOMES.contains(&outcome.as_str())
    {
        anyhow::bail!(
            "--outcome {outcome:?} is not a run outcome (one of: {})",
            OUTCOMES.join(", ")
        );
    }
    let since = parse_since(args.since.as_deref(), now())?;
    let store = open_store(site).await?;
    let query = RunQuery {
        plugin: args.plugin,
        resource_id: args.resource,
        outcome: args.outcome,
        since,
        limit: args.limit,
    };
    let runs = store.query_runs(&query).await?;
    if args.json {
        for run in &runs {
            json_line(&RunView::from(run))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "STARTED", "PLUGIN", "RESOURCE", "OUTCOME", "LATE", "TOOK", "DETAIL",
    ])
    .right_align(&[4, 5]);
    for run in &runs {
        let view = RunView::from(run);
        table.row(vec![
            rfc3339(run.started_at),
            view.plugin,
            view.resource_id.unwrap_or_else(|| "-".to_owned()),
            view.outcome,
            format!("{:.0}ms", view.late_ms),
            format!("{:.1}ms", view.duration_ms),
            view.detail,
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

/// The endpoint tracker's lines of `vigil status`.
fn print_endpoint_health(e: &vigil_host::health::EndpointHealth) {
    let pairs = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(" ")
        }
    };
    println!(
        "endpoint events received: {}",
        pairs(e.received.iter().map(|(s, n)| format!("{s}={n}")).collect())
    );
    println!(
        "endpoint inputs rejected: {}",
        pairs(
            e.rejected
                .iter()
                .map(|r| format!("{}/{}={}", r.source, r.reason, r.count))
                .collect()
        )
    );
    for r in &e.rejected {
        println!("  latest {}/{}: {}", r.source, r.reason, r.sample);
    }
    if !e.subscribers.is_empty() {
        println!(
            "APIC subscribers: {}",
            pairs(
                e.subscribers
                    .iter()
                    .map(|(fabric, state)| format!("{fabric}={state}"))
                    .collect()
            )
        );
    }
    let mut workers = Table::new(&[
        "WORKER",
        "QUEUED",
        "HANDLED",
        "STORE ERRORS",
        "LAG",
        "MAX LAG",
    ])
    .right_align(&[1, 2, 3, 4, 5]);
    for (i, w) in e.workers.iter().enumerate() {
        workers.row(vec![
            i.to_string(),
            w.queue_depth.to_string(),
            w.handled.to_string(),
            w.store_errors.to_string(),
            format!("{:.3}s", w.lag_seconds),
            format!("{:.3}s", w.max_lag_seconds),
        ]);
    }
    workers.print();
}
