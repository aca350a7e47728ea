//! Dashboards as code: Grafana dashboards generated from a flow description
//! (`vigil dashboards generate FLOW.yml`), a ready-made dashboard of vigil's
//! own health (`vigil dashboards health`), and an SVG picture of any
//! dashboard's layout (`vigil dashboards layout`). No Grafana is needed.
//!
//! * [`flow`] reads and checks the flow YAML (nodes, interfaces, VLANs, IPs,
//!   peers, ping targets), with located errors.
//! * [`generate`] turns a flow into a dashboard for Prometheus or InfluxDB:
//!   an overview row (the path as a table, all its bit rates), then one row
//!   per node with its polling status, ping panels where the node lists
//!   targets, and per interface its bit rates, errors and discards, and
//!   oper/admin state.
//! * [`grafana`] is the typed JSON model and the layout builder;
//!   [`query`] writes PromQL and InfluxQL with every name escaped.
//! * [`health`] is the vigil health dashboard; [`layout`] draws the SVG.
//!
//! For tests against a real Prometheus or InfluxDB, [`Dashboard::queries`]
//! lists every query of a dashboard with Grafana's variables substituted.
//! `plugin-configs/dashboards/` holds an example flow and what these
//! generate from it; a unit test keeps those files current.

pub mod flow;
pub mod grafana;
pub mod health;
pub mod layout;
pub mod query;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use vigil_core::status::{PollingStatus, STATUS_GROUP_TYPE, STATUS_METRIC};

pub use flow::{Flow, FlowError, FlowErrors};
pub use grafana::{Dashboard, DashboardQuery, Datasource, Substitutions};
pub use health::health_dashboard;

use grafana::{DashboardBuilder, PanelDraft, Query, Thresholds, ValueMapping};
use query::{
    Aggregate, InfluxSelect, Matcher, TagCondition, any_of, prometheus_series, promql_selector,
};

/// The group, dimension and metric names the dashboards query: fixed by the
/// interface plugin, the host's status groups and the sinks.
mod names {
    pub const INTERFACE: &str = "interface";
    pub const INTERFACE_NAME: &str = "interface_name";
    pub const BITS_IN: &str = "bits_in";
    pub const BITS_OUT: &str = "bits_out";
    pub const ERRORS_IN: &str = "errors_in";
    pub const ERRORS_OUT: &str = "errors_out";
    pub const DISCARDS_IN: &str = "discards_in";
    pub const DISCARDS_OUT: &str = "discards_out";
    pub const OPER_STATE: &str = "oper_state";
    pub const ADMIN_STATE: &str = "admin_state";
    pub const PLUGIN: &str = "plugin";
    pub const PING: &str = "ping";
    pub const TARGET: &str = "target";
    pub const REACHABLE: &str = "reachable";
    pub const RTT: &str = "round_trip_time_ms";
    pub const LOSS: &str = "packet_loss_percent";
    pub const RESOURCE_ID: &str = "resource_id";
}

use names::*;

/// The dashboard of a flow, querying `datasource`. The flow is expected to
/// come from [`Flow::load`] or [`Flow::parse`], which check it.
///
/// Layout: a "Flow" row with the path as a table and every interface's bit
/// rate on one graph; then per node a row with its polling status (one lane
/// per polling plugin), ping reachability, round-trip time and loss when the
/// node lists ping targets, and per interface a bit-rate graph (out drawn
/// below the axis), an errors-and-discards graph and an oper/admin state.
pub fn generate(flow: &Flow, datasource: Datasource) -> Dashboard {
    let uid = DashboardBuilder::uid_for(&flow.title, datasource);
    let mut b = DashboardBuilder::new(&flow.title, uid, datasource);
    b.description(&flow.description)
        .tags(["vigil".to_owned(), "flow".to_owned()])
        .tags(flow.tags.iter().cloned())
        .link_to_tag("vigil dashboards", "vigil");

    b.row("Flow");
    let table = flow_table(flow);
    let table_rows = u32::try_from(table.lines().count()).unwrap_or(u32::MAX);
    let height = table_rows.saturating_add(2).clamp(6, 20);
    let any_interface = flow.nodes.iter().any(|n| !n.interfaces.is_empty());
    b.panel(
        PanelDraft::text("Path", table)
            .describe("The flow's nodes and interfaces, as the flow file describes them."),
        if any_interface { 12 } else { 24 },
        height,
    );
    if any_interface {
        b.panel(flow_bit_rates(flow, datasource), 12, height);
    }

    for node in &flow.nodes {
        let resource = node.resource_id();
        let mut row = format!("{} {}", node.kind.name(), node.name);
        if resource != node.name {
            row.push_str(&format!(" (resource {resource})"));
        }
        b.row(row);
        let polling = polling_status(&node.name, resource, datasource);
        if node.ping.is_empty() {
            b.panel(polling, 24, 5);
        } else {
            let targets: Vec<&str> = node.ping.iter().map(String::as_str).collect();
            b.panel(polling, 6, 6);
            for panel in ping_panels(&node.name, resource, &targets, datasource) {
                b.panel(panel, 6, 6);
            }
        }
        b.new_line();
        for interface in &node.interfaces {
            let facts = interface_facts(interface);
            let label = format!("{} {}", node.name, interface.name);
            b.panel(
                bit_rate(&label, resource, &interface.name, datasource).describe(format!(
                    "{facts}Bits per second in, and out (drawn below the axis): the interface plugin's bits_in and bits_out after vigil's rate transform."
                )),
                10,
                8,
            );
            b.panel(
                errors_and_discards(&label, resource, &interface.name, datasource).describe(
                    format!("{facts}Error and discarded packets per second, in and out (out below the axis)."),
                ),
                10,
                8,
            );
            b.panel(
                interface_state(resource, &interface.name, datasource).describe(format!(
                    "{facts}IF-MIB ifOperStatus and ifAdminStatus as last polled; \"missing\" when the device does not report them."
                )),
                4,
                8,
            );
        }
    }
    b.build()
}

/// A short "VLAN 10. Addresses: ... Peers: ..." for panel descriptions.
fn interface_facts(interface: &flow::Interface) -> String {
    let mut facts = String::new();
    if let Some(vlan) = interface.vlan {
        facts.push_str(&format!("VLAN {vlan}. "));
    }
    if !interface.ips.is_empty() {
        facts.push_str(&format!("Addresses: {}. ", interface.ips.join(", ")));
    }
    if !interface.peers.is_empty() {
        let peers: Vec<String> = interface
            .peers
            .iter()
            .map(|p| format!("{} {}", p.node, p.interface))
            .collect();
        facts.push_str(&format!("Peer: {}. ", peers.join(", ")));
    }
    facts
}

/// Escapes text for a Markdown table cell: every character CommonMark or
/// the table syntax gives a meaning to is backslash-escaped, so names show
/// as written.
fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '&' | '~' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The flow as a Markdown table: node, interface, VLAN, addresses, peers.
fn flow_table(flow: &Flow) -> String {
    let mut text =
        String::from("| Node | Interface | VLAN | Addresses | Peers |\n|---|---|---|---|---|\n");
    for node in &flow.nodes {
        let mut node_cell = format!("**{}** ({})", markdown(&node.name), node.kind.name());
        if node.resource_id() != node.name {
            node_cell.push_str(&format!(" resource {}", markdown(node.resource_id())));
        }
        if node.interfaces.is_empty() {
            text.push_str(&format!("| {node_cell} | | | | |\n"));
        }
        for (i, interface) in node.interfaces.iter().enumerate() {
            let vlan = interface.vlan.map(|v| v.to_string()).unwrap_or_default();
            let ips: Vec<String> = interface.ips.iter().map(|ip| markdown(ip)).collect();
            let peers: Vec<String> = interface
                .peers
                .iter()
                .map(|p| format!("{} {}", markdown(&p.node), markdown(&p.interface)))
                .collect();
            text.push_str(&format!(
                "| {} | {} | {vlan} | {} | {} |\n",
                if i == 0 { node_cell.as_str() } else { "" },
                markdown(&interface.name),
                ips.join(", "),
                peers.join(", ")
            ));
        }
    }
    let pingers: Vec<String> = flow
        .nodes
        .iter()
        .filter(|n| !n.ping.is_empty())
        .map(|n| {
            let targets: Vec<String> = n.ping.iter().map(|t| markdown(t)).collect();
            format!("{} pings {}", markdown(&n.name), targets.join(", "))
        })
        .collect();
    if !pingers.is_empty() {
        text.push('\n');
        text.push_str(&pingers.join("; "));
        text.push('\n');
    }
    text
}

/// Prometheus matchers selecting one resource (and interface).
fn matchers(resource: &str, interface: Option<&str>) -> Vec<Matcher> {
    let mut m = vec![Matcher::eq(RESOURCE_ID, resource)];
    if let Some(interface) = interface {
        m.push(Matcher::eq(INTERFACE_NAME, interface));
    }
    m
}

/// InfluxQL conditions selecting one resource (and interface).
fn conditions(select: InfluxSelect, resource: &str, interface: Option<&str>) -> InfluxSelect {
    let select = select.filter(TagCondition::eq(RESOURCE_ID, resource));
    match interface {
        Some(interface) => select.filter(TagCondition::eq(INTERFACE_NAME, interface)),
        None => select,
    }
}

fn gauge(group: &str, metric: &str, matchers: &[Matcher]) -> String {
    promql_selector(&prometheus_series(group, metric, false), matchers)
}

fn counter_rate(group: &str, metric: &str, matchers: &[Matcher]) -> String {
    format!(
        "rate({}[$__rate_interval])",
        promql_selector(&prometheus_series(group, metric, true), matchers)
    )
}

fn bit_rate(label: &str, resource: &str, interface: &str, ds: Datasource) -> PanelDraft {
    let panel = PanelDraft::timeseries(format!("{label}: bit rate"), "bps").negative_y("out$");
    match ds {
        Datasource::Prometheus => {
            let m = matchers(resource, Some(interface));
            panel
                .query(Query::prometheus(gauge(INTERFACE, BITS_IN, &m), "in"))
                .query(Query::prometheus(gauge(INTERFACE, BITS_OUT, &m), "out"))
        }
        Datasource::InfluxDb => {
            let select = InfluxSelect::new(INTERFACE)
                .field(Aggregate::Mean, BITS_IN, "in")
                .field(Aggregate::Mean, BITS_OUT, "out");
            panel.query(Query::influxql(
                conditions(select, resource, Some(interface)).render(),
                "$col",
            ))
        }
    }
}

const ERROR_SERIES: [(&str, &str); 4] = [
    (ERRORS_IN, "errors in"),
    (ERRORS_OUT, "errors out"),
    (DISCARDS_IN, "discards in"),
    (DISCARDS_OUT, "discards out"),
];

fn errors_and_discards(label: &str, resource: &str, interface: &str, ds: Datasource) -> PanelDraft {
    let panel =
        PanelDraft::timeseries(format!("{label}: errors and discards"), "pps").negative_y("out$");
    match ds {
        Datasource::Prometheus => {
            let m = matchers(resource, Some(interface));
            panel.queries(ERROR_SERIES.iter().map(|(metric, legend)| {
                Query::prometheus(counter_rate(INTERFACE, metric, &m), *legend)
            }))
        }
        Datasource::InfluxDb => {
            let select = ERROR_SERIES
                .iter()
                .fold(InfluxSelect::new(INTERFACE), |s, (metric, alias)| {
                    s.field(Aggregate::RatePerSecond, metric, alias)
                });
            panel.query(Query::influxql(
                conditions(select, resource, Some(interface)).render(),
                "$col",
            ))
        }
    }
}

/// IF-MIB ifOperStatus / ifAdminStatus values (admin uses 1-3), and the
/// plugin's -1 for a missing value.
fn if_status_mapping() -> ValueMapping {
    ValueMapping::values(&[
        (1, "up", "green"),
        (2, "down", "red"),
        (3, "testing", "blue"),
        (4, "unknown", "orange"),
        (5, "dormant", "yellow"),
        (6, "not present", "purple"),
        (7, "lower layer down", "orange"),
        (-1, "missing", "text"),
    ])
}

fn interface_state(resource: &str, interface: &str, ds: Datasource) -> PanelDraft {
    let panel = PanelDraft::stat(format!("{interface}: state"), "none")
        .mapping(if_status_mapping())
        .show_names();
    match ds {
        Datasource::Prometheus => {
            let m = matchers(resource, Some(interface));
            panel
                .query(Query::prometheus(gauge(INTERFACE, OPER_STATE, &m), "oper"))
                .query(Query::prometheus(
                    gauge(INTERFACE, ADMIN_STATE, &m),
                    "admin",
                ))
        }
        Datasource::InfluxDb => {
            let select = InfluxSelect::new(INTERFACE)
                .field(Aggregate::Last, OPER_STATE, "oper")
                .field(Aggregate::Last, ADMIN_STATE, "admin")
                .fill_previous();
            panel.query(Query::influxql(
                conditions(select, resource, Some(interface)).render(),
                "$col",
            ))
        }
    }
}

/// Display colour of each polling status. The match is exhaustive so that
/// a new status cannot be added without a colour (and a mapping entry).
fn polling_status_color(status: PollingStatus) -> &'static str {
    match status {
        PollingStatus::Success => "green",
        PollingStatus::AuthenticationFailure => "red",
        PollingStatus::NetworkFailure => "red",
        PollingStatus::Timeout => "orange",
        PollingStatus::PartialMetricFailure => "yellow",
        PollingStatus::InternalFailure => "purple",
        PollingStatus::MissingMetrics => "yellow",
        PollingStatus::PingFailure => "red",
    }
}

/// Every polling status, in code order.
const POLLING_STATUSES: [PollingStatus; 8] = [
    PollingStatus::Success,
    PollingStatus::AuthenticationFailure,
    PollingStatus::NetworkFailure,
    PollingStatus::Timeout,
    PollingStatus::PartialMetricFailure,
    PollingStatus::InternalFailure,
    PollingStatus::MissingMetrics,
    PollingStatus::PingFailure,
];

/// The Panoptes polling-status codes as named, coloured states.
pub fn polling_status_mapping() -> ValueMapping {
    let names: Vec<(i64, String, &str)> = POLLING_STATUSES
        .iter()
        .map(|&s| {
            (
                s.code(),
                s.name().replace('_', " "),
                polling_status_color(s),
            )
        })
        .collect();
    let states: Vec<(i64, &str, &str)> = names
        .iter()
        .map(|(code, name, color)| (*code, name.as_str(), *color))
        .collect();
    ValueMapping::values(&states)
}

fn polling_status(node: &str, resource: &str, ds: Datasource) -> PanelDraft {
    let panel = PanelDraft::state_timeline(format!("{node}: polling status"))
        .describe("Why the device has data or not, per polling plugin: the status group vigil writes for every polling run (Panoptes' codes).")
        .mapping(polling_status_mapping());
    match ds {
        Datasource::Prometheus => panel.query(Query::prometheus(
            gauge(STATUS_GROUP_TYPE, STATUS_METRIC, &matchers(resource, None)),
            format!("{{{{{PLUGIN}}}}}"),
        )),
        Datasource::InfluxDb => {
            let select = InfluxSelect::new(STATUS_GROUP_TYPE)
                .field(Aggregate::Last, STATUS_METRIC, "status")
                .group_by(PLUGIN)
                .fill_previous();
            panel.query(Query::influxql(
                conditions(select, resource, None).render(),
                format!("$tag_{PLUGIN}"),
            ))
        }
    }
}

fn ping_panels(node: &str, resource: &str, targets: &[&str], ds: Datasource) -> Vec<PanelDraft> {
    let regex = any_of(targets);
    let query = |metric: &str, aggregate: Aggregate| match ds {
        Datasource::Prometheus => Query::prometheus(
            gauge(
                PING,
                metric,
                &[
                    Matcher::eq(RESOURCE_ID, resource),
                    Matcher::regex(TARGET, &regex),
                ],
            ),
            format!("{{{{{TARGET}}}}}"),
        ),
        Datasource::InfluxDb => {
            let mut select = InfluxSelect::new(PING)
                .field(aggregate, metric, metric)
                .filter(TagCondition::eq(RESOURCE_ID, resource))
                .filter(TagCondition::regex(TARGET, &regex))
                .group_by(TARGET);
            if aggregate == Aggregate::Last {
                select = select.fill_previous();
            }
            Query::influxql(select.render(), format!("$tag_{TARGET}"))
        }
    };
    vec![
        PanelDraft::state_timeline(format!("{node}: ping reachability"))
            .describe("1 when the target answered pings in the polling run.")
            .mapping(ValueMapping::values(&[
                (1, "reachable", "green"),
                (0, "unreachable", "red"),
            ]))
            .query(query(REACHABLE, Aggregate::Last)),
        PanelDraft::timeseries(format!("{node}: ping round-trip time"), "ms")
            .query(query(RTT, Aggregate::Mean)),
        PanelDraft::timeseries(format!("{node}: ping packet loss"), "percent")
            .range(Some(0.0), Some(100.0))
            .thresholds(Thresholds::steps(
                "green",
                &[(1.0, "orange"), (10.0, "red")],
            ))
            .query(query(LOSS, Aggregate::Mean)),
    ]
}

/// Every interface of the flow on one graph, one query per node.
fn flow_bit_rates(flow: &Flow, ds: Datasource) -> PanelDraft {
    let mut panel = PanelDraft::timeseries("All interfaces: bit rate", "bps")
        .negative_y("out$")
        .describe("Bits per second of every interface of the flow; out is drawn below the axis.");
    for node in flow.nodes.iter().filter(|n| !n.interfaces.is_empty()) {
        let names: Vec<&str> = node.interfaces.iter().map(|i| i.name.as_str()).collect();
        let regex = any_of(&names);
        let resource = node.resource_id();
        panel = match ds {
            Datasource::Prometheus => {
                let m = [
                    Matcher::eq(RESOURCE_ID, resource),
                    Matcher::regex(INTERFACE_NAME, &regex),
                ];
                let legend = format!("{{{{{RESOURCE_ID}}}}} {{{{{INTERFACE_NAME}}}}}");
                panel
                    .query(Query::prometheus(
                        gauge(INTERFACE, BITS_IN, &m),
                        format!("{legend} in"),
                    ))
                    .query(Query::prometheus(
                        gauge(INTERFACE, BITS_OUT, &m),
                        format!("{legend} out"),
                    ))
            }
            Datasource::InfluxDb => panel.query(Query::influxql(
                InfluxSelect::new(INTERFACE)
                    .field(Aggregate::Mean, BITS_IN, "in")
                    .field(Aggregate::Mean, BITS_OUT, "out")
                    .filter(TagCondition::eq(RESOURCE_ID, resource))
                    .filter(TagCondition::regex(INTERFACE_NAME, &regex))
                    .group_by(RESOURCE_ID)
                    .group_by(INTERFACE_NAME)
                    .render(),
                format!("$tag_{RESOURCE_ID} $tag_{INTERFACE_NAME} $col"),
            )),
        };
    }
    panel
}

/// `vigil dashboards ...`: works offline, without a site config.
#[derive(Debug, clap::Subcommand)]
pub enum DashboardsCommand {
    /// Write a Grafana dashboard for a flow description (YAML).
    Generate {
        /// The flow file (see plugin-configs/dashboards/flow.yml).
        flow: PathBuf,
        /// The data source type the dashboard queries.
        #[arg(long, value_enum, default_value_t = Datasource::Prometheus)]
        datasource: Datasource,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Write the dashboard of vigil's own health (its /metrics, so
    /// Prometheus only).
    Health {
        #[arg(long, value_enum, default_value_t = Datasource::Prometheus)]
        datasource: Datasource,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Draw a dashboard's panel layout as an SVG picture.
    Layout {
        /// Grafana dashboard JSON (as generated, or exported from Grafana).
        dashboard: PathBuf,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// Runs a `vigil dashboards` command. Errors name the input file (and line
/// where there is one).
pub fn run(command: DashboardsCommand) -> anyhow::Result<()> {
    match command {
        DashboardsCommand::Generate {
            flow,
            datasource,
            output,
        } => {
            let flow = Flow::load(&flow)?;
            let dashboard = generate(&flow, datasource);
            write_output(output.as_deref(), &dashboard.to_json()?)
        }
        DashboardsCommand::Health { datasource, output } => {
            let dashboard = health_dashboard(datasource)?;
            write_output(output.as_deref(), &dashboard.to_json()?)
        }
        DashboardsCommand::Layout { dashboard, output } => {
            let text = std::fs::read_to_string(&dashboard)
                .with_context(|| format!("{}: cannot read it", dashboard.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                let at = format!(" at line {} column {}", e.line(), e.column());
                let message = e.to_string().replacen(&at, "", 1);
                anyhow::anyhow!("{}:{}: not JSON: {message}", dashboard.display(), e.line())
            })?;
            let svg = layout::render(&json)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dashboard.display()))?;
            write_output(output.as_deref(), &svg)
        }
    }
}

fn write_output(output: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("{}: cannot write it", path.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .context("writing to stdout")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::grafana::schema::validate;
    use super::grafana::{PanelKind, Target};
    use super::query::tests::{alternatives, influx_conditions, promql_matchers};
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugin-configs/dashboards")
    }

    fn example_flow() -> Flow {
        Flow::load(&examples().join("flow.yml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn json(d: &Dashboard) -> serde_json::Value {
        serde_json::from_str(&d.to_json().expect("serialises")).expect("valid JSON")
    }

    #[test]
    fn generated_dashboards_pass_the_schema_checks() {
        let flow = example_flow();
        for ds in [Datasource::Prometheus, Datasource::InfluxDb] {
            let d = generate(&flow, ds);
            let errors = validate(&json(&d));
            assert!(errors.is_empty(), "{ds:?}: {errors:#?}");
            assert_eq!(d.datasource(), Some(ds));
            assert!(d.queries().iter().all(|q| q.datasource == ds));
        }
    }

    #[test]
    fn uids_differ_per_datasource() {
        let flow = example_flow();
        let prom = generate(&flow, Datasource::Prometheus).uid;
        let influx = generate(&flow, Datasource::InfluxDb).uid;
        assert_ne!(prom, influx);
        assert!(prom.len() <= 40 && influx.len() <= 40);
    }

    /// (resource, interface) of every bit-rate panel, read back from its
    /// query text.
    fn bit_rate_selections(d: &Dashboard) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for panel in d.all_panels() {
            if !panel.title.ends_with(": bit rate") || panel.title.starts_with("All interfaces") {
                continue;
            }
            let mut selections = BTreeSet::new();
            for target in &panel.targets {
                let conditions: BTreeMap<String, (String, String)> = match target {
                    Target::Prometheus(t) => {
                        let metric = if t.legend_format == "in" {
                            "interface_bits_in"
                        } else {
                            assert_eq!(t.legend_format, "out");
                            "interface_bits_out"
                        };
                        promql_matchers(&t.expr, metric)
                            .into_iter()
                            .map(|(l, op, v)| (l, (op, v)))
                            .collect()
                    }
                    Target::InfluxDb(t) => {
                        assert!(
                            t.query.starts_with(
                                r#"SELECT mean("bits_in") AS "in", mean("bits_out") AS "out" FROM "interface" WHERE "#
                            ),
                            "{}",
                            t.query
                        );
                        influx_conditions(&t.query)
                            .into_iter()
                            .map(|(l, op, v)| (l, (op, v)))
                            .collect()
                    }
                };
                // Exactly the resource and the interface, both exact.
                let keys: Vec<&str> = conditions.keys().map(String::as_str).collect();
                assert_eq!(keys, ["interface_name", "resource_id"], "{target:?}");
                assert!(conditions.values().all(|(op, _)| op == "="), "{target:?}");
                selections.insert((
                    conditions["resource_id"].1.clone(),
                    conditions["interface_name"].1.clone(),
                ));
            }
            assert_eq!(selections.len(), 1, "one selection per panel: {panel:?}");
            out.extend(selections);
        }
        out
    }

    fn flow_interfaces(flow: &Flow) -> Vec<(String, String)> {
        flow.nodes
            .iter()
            .flat_map(|n| {
                n.interfaces
                    .iter()
                    .map(move |i| (n.resource_id().to_owned(), i.name.clone()))
            })
            .collect()
    }

    #[test]
    fn one_bit_rate_panel_per_interface_selecting_exactly_it() {
        let flow = example_flow();
        for ds in [Datasource::Prometheus, Datasource::InfluxDb] {
            let d = generate(&flow, ds);
            assert_eq!(bit_rate_selections(&d), flow_interfaces(&flow), "{ds:?}");
        }
    }

    /// A flow whose names need escaping in every query language.
    const NASTY: &str = r#"
title: 'Escaping "test"'
nodes:
  - name: 'sw"1'
    resource_id: 'res\ource.*'
    type: switch
    interfaces:
      - name: 'ge-0/0/1.100'
        peers: [{node: "o'host", interface: 'eth|0 (a)'}]
      - name: 'it''s \ a [port]+?'
  - name: "o'host"
    type: host
    interfaces:
      - name: 'eth|0 (a)'
    ping: ['10.0.0.1', 'host.example/x', 'a\b''"']
"#;

    #[test]
    fn names_are_escaped_in_every_query() {
        let flow = Flow::parse(NASTY, "nasty.yml").unwrap_or_else(|e| panic!("{e}"));
        for ds in [Datasource::Prometheus, Datasource::InfluxDb] {
            let d = generate(&flow, ds);
            let errors = validate(&json(&d));
            assert!(errors.is_empty(), "{errors:#?}");
            assert_eq!(bit_rate_selections(&d), flow_interfaces(&flow), "{ds:?}");

            // The overview's regexes match exactly each node's interfaces.
            let overview = d
                .all_panels()
                .into_iter()
                .find(|p| p.title == "All interfaces: bit rate")
                .expect("overview panel");
            let mut regexes = Vec::new();
            for target in &overview.targets {
                let conditions = match target {
                    Target::Prometheus(t) => {
                        let metric = if t.legend_format.ends_with(" in") {
                            "interface_bits_in"
                        } else {
                            "interface_bits_out"
                        };
                        promql_matchers(&t.expr, metric)
                    }
                    Target::InfluxDb(t) => influx_conditions(&t.query),
                };
                let resource = conditions
                    .iter()
                    .find(|(l, op, _)| l == "resource_id" && op == "=")
                    .map(|(_, _, v)| v.clone())
                    .expect("resource matcher");
                let regex = conditions
                    .iter()
                    .find(|(l, op, _)| l == "interface_name" && op == "=~")
                    .map(|(_, _, v)| v.clone())
                    .expect("interface regex");
                regexes.push((resource, alternatives(&regex)));
            }
            regexes.dedup();
            assert_eq!(
                regexes,
                vec![
                    (
                        r"res\ource.*".to_owned(),
                        vec!["ge-0/0/1.100".to_owned(), r"it's \ a [port]+?".to_owned()]
                    ),
                    ("o'host".to_owned(), vec!["eth|0 (a)".to_owned()]),
                ],
                "{ds:?}"
            );

            // Ping targets likewise.
            let reach = d
                .all_panels()
                .into_iter()
                .find(|p| p.title == "o'host: ping reachability")
                .expect("ping panel");
            let conditions = match &reach.targets[0] {
                Target::Prometheus(t) => promql_matchers(&t.expr, "ping_reachable"),
                Target::InfluxDb(t) => influx_conditions(&t.query),
            };
            let (_, _, regex) = conditions
                .iter()
                .find(|(l, _, _)| l == "target")
                .expect("target matcher");
            assert_eq!(
                alternatives(regex),
                ["10.0.0.1", "host.example/x", "a\\b'\""],
                "{ds:?}"
            );
        }
    }

    #[test]
    fn polling_status_per_device_and_ping_only_where_configured() {
        let flow = example_flow();
        for ds in [Datasource::Prometheus, Datasource::InfluxDb] {
            let d = generate(&flow, ds);
            let panels = d.all_panels();
            for node in &flow.nodes {
                let polling: Vec<_> = panels
                    .iter()
                    .filter(|p| p.title == format!("{}: polling status", node.name))
                    .collect();
                assert_eq!(polling.len(), 1, "{}", node.name);
                let panel = polling[0];
                assert_eq!(panel.kind, PanelKind::StateTimeline);
                let text = panel.targets[0].text();
                match ds {
                    Datasource::Prometheus => {
                        assert_eq!(
                            promql_matchers(text, "polling_status"),
                            vec![(
                                "resource_id".to_owned(),
                                "=".to_owned(),
                                node.resource_id().to_owned()
                            )]
                        );
                    }
                    Datasource::InfluxDb => {
                        assert!(text.contains(r#"FROM "status""#), "{text}");
                        assert!(text.contains(r#"GROUP BY time($__interval), "plugin""#));
                        assert_eq!(
                            influx_conditions(text),
                            vec![(
                                "resource_id".to_owned(),
                                "=".to_owned(),
                                node.resource_id().to_owned()
                            )]
                        );
                    }
                }
                let mapping = &panel
                    .field_config
                    .as_ref()
                    .expect("field config")
                    .defaults
                    .mappings[0];
                for status in POLLING_STATUSES {
                    assert_eq!(
                        mapping.options[&status.code().to_string()].text,
                        status.name().replace('_', " ")
                    );
                }
                let ping_panels = panels
                    .iter()
                    .filter(|p| p.title.starts_with(&format!("{}: ping ", node.name)))
                    .count();
                assert_eq!(
                    ping_panels,
                    if node.ping.is_empty() { 0 } else { 3 },
                    "{}",
                    node.name
                );
            }
            let with_ping = flow.nodes.iter().filter(|n| !n.ping.is_empty()).count();
            assert_eq!(with_ping, 1, "the example has one node with ping targets");
            let all_ping = panels
                .iter()
                .filter(|p| p.title.contains(": ping "))
                .count();
            assert_eq!(all_ping, 3);
        }
    }

    #[test]
    fn polling_codes_match_the_host() {
        for (code, status) in POLLING_STATUSES.iter().enumerate() {
            assert_eq!(status.code(), code as i64);
        }
    }

    /// A `$name` or `${name}` left in query text (a regex's `$` anchor is
    /// not one).
    fn has_variable(text: &str) -> bool {
        text.as_bytes()
            .windows(2)
            .any(|w| w[0] == b'$' && (w[1].is_ascii_alphabetic() || w[1] == b'_' || w[1] == b'{'))
    }

    #[test]
    fn counters_are_rates_and_gauges_are_not() {
        let d = generate(&example_flow(), Datasource::Prometheus);
        for q in d.queries() {
            if q.query.contains("_total") {
                assert!(q.query.starts_with("rate("), "{q:?}");
                assert!(q.query.ends_with("[5m])"), "{q:?}");
            } else {
                assert!(!q.query.contains("rate("), "{q:?}");
            }
            assert!(!has_variable(&q.query), "unsubstituted: {q:?}");
        }
        let d = generate(&example_flow(), Datasource::InfluxDb);
        for q in d.queries() {
            assert!(!has_variable(&q.query), "unsubstituted: {q:?}");
            assert!(q.query.contains("time >= now() - 1h"), "{q:?}");
            assert!(q.query.contains("GROUP BY time(1m)"), "{q:?}");
            if q.query.contains("_packets_") {
                assert!(q.query.contains("non_negative_derivative(mean("), "{q:?}");
            }
        }
    }

    #[test]
    fn flow_table_escapes_markdown() {
        let flow = Flow::parse(NASTY, "nasty.yml").unwrap_or_else(|e| panic!("{e}"));
        let table = flow_table(&flow);
        assert!(table.contains(r"eth\|0 (a)"), "{table}");
        assert!(table.contains(r"it's \\ a \[port\]+?"), "{table}");
        // Every table line has the same number of unescaped cell separators.
        for line in table.lines().filter(|l| l.starts_with('|')) {
            let separators = line
                .char_indices()
                .filter(|&(i, c)| c == '|' && (i == 0 || !line[..i].ends_with('\\')))
                .count();
            assert_eq!(separators, 6, "{line}");
        }
    }

    /// The committed example outputs, and what the generator makes now.
    fn expected_examples() -> Vec<(&'static str, String)> {
        let flow = example_flow();
        let prom = generate(&flow, Datasource::Prometheus);
        let health = health_dashboard(Datasource::Prometheus).expect("prometheus health");
        vec![
            ("flow.prometheus.json", prom.to_json().expect("json")),
            (
                "flow.influxdb.json",
                generate(&flow, Datasource::InfluxDb)
                    .to_json()
                    .expect("json"),
            ),
            ("vigil-health.json", health.to_json().expect("json")),
            (
                "flow-layout.svg",
                layout::render(&json(&prom)).expect("layout"),
            ),
        ]
    }

    #[test]
    fn committed_examples_are_current() {
        let update = std::env::var_os("VIGIL_UPDATE_DASHBOARDS").is_some();
        let mut stale = Vec::new();
        for (name, expected) in expected_examples() {
            let path = examples().join(name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != expected {
                if update {
                    std::fs::write(&path, &expected).expect("write example");
                } else {
                    stale.push(name);
                }
            }
        }
        assert!(
            stale.is_empty(),
            "plugin-configs/dashboards/{{{}}} differ from what the generator writes now; \
             regenerate them with `VIGIL_UPDATE_DASHBOARDS=1 cargo test -p vigil-host --lib dashboards` \
             (or `vigil dashboards generate plugin-configs/dashboards/flow.yml [--datasource influxdb] --output ...`, \
             `vigil dashboards health --output ...`, `vigil dashboards layout ... --output ...`) and review the diff",
            stale.join(",")
        );
    }
}
