//! The ready-made dashboard of vigil's own health: plugin runs and their
//! outcomes, run time and scheduler lateness, sandbox limit hits, fuel and
//! memory, queues, sink buffers and deliveries, discovered resources.
//!
//! It reads the `vigil_*` series of vigil's Prometheus `/metrics` endpoint,
//! so it needs a Prometheus data source. Variables filter by scraped
//! `instance` (one per vigil process), `plugin` and `sink`.

use super::grafana::{
    Dashboard, DashboardBuilder, Datasource, PanelDraft, Query, Thresholds, Variable,
};

/// The health dashboard's title (and, slugged, its uid).
pub const TITLE: &str = "vigil health";

/// vigil's own metrics exist only in Prometheus form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the vigil health dashboard needs a Prometheus data source (--datasource prometheus): \
     vigil publishes its own metrics only on its Prometheus /metrics endpoint, not to InfluxDB"
)]
pub struct NeedsPrometheus;

/// The health dashboard for `datasource`, which must be Prometheus.
pub fn health_dashboard(datasource: Datasource) -> Result<Dashboard, NeedsPrometheus> {
    match datasource {
        Datasource::Prometheus => Ok(dashboard()),
        Datasource::InfluxDb => Err(NeedsPrometheus),
    }
}

/// `{instance=~"$instance",...}` plus extra matchers.
fn sel(metric: &str, extra: &[&str]) -> String {
    let mut matchers = vec![r#"instance=~"$instance""#];
    matchers.extend_from_slice(extra);
    format!("{metric}{{{}}}", matchers.join(","))
}

const PLUGIN: &str = r#"plugin=~"$plugin""#;
const SINK: &str = r#"sink=~"$sink""#;

fn rate(metric: &str, extra: &[&str]) -> String {
    format!("rate({}[$__rate_interval])", sel(metric, extra))
}

fn quantile(q: f64, histogram: &str, by: &str) -> String {
    format!(
        "histogram_quantile({q}, sum by (le, {by}) ({}))",
        rate(&format!("{histogram}_bucket"), &[PLUGIN])
    )
}

/// The vigil health dashboard (Prometheus).
pub fn dashboard() -> Dashboard {
    let ds = Datasource::Prometheus;
    let mut b = DashboardBuilder::new(TITLE, DashboardBuilder::uid_for(TITLE, ds), ds);
    b.description("vigil's own metrics: plugin runs, the sandbox, queues and sinks.")
        .tags(["vigil".to_owned(), "health".to_owned()])
        .refresh("30s")
        .link_to_tag("vigil dashboards", "vigil")
        .variable(Variable::prometheus_label_values(
            "instance",
            "vigil instance",
            "label_values(vigil_start_time_seconds, instance)",
        ))
        .variable(Variable::prometheus_label_values(
            "plugin",
            "Plugin",
            r#"label_values(vigil_plugin_runs_total{instance=~"$instance"}, plugin)"#,
        ))
        .variable(Variable::prometheus_label_values(
            "sink",
            "Sink",
            r#"label_values(vigil_sink_accepted_groups_total{instance=~"$instance"}, sink)"#,
        ));

    b.row("Overview");
    let stats = [
        PanelDraft::stat("Uptime", "s")
            .describe("Since the most recent start among the selected instances.")
            .query(Query::prometheus(
                format!("time() - max({})", sel("vigil_start_time_seconds", &[])),
                "uptime",
            )),
        PanelDraft::stat("Plugins loaded", "none").query(Query::prometheus(
            format!("sum({})", sel("vigil_plugins_loaded", &[])),
            "loaded",
        )),
        PanelDraft::stat("Plugins broken", "none")
            .describe("Plugin files that failed to load; `vigil plugins list` says why.")
            .thresholds(Thresholds::steps("green", &[(1.0, "red")]))
            .query(Query::prometheus(
                format!("sum({})", sel("vigil_plugins_broken", &[])),
                "broken",
            )),
        PanelDraft::stat("Resources", "none").query(Query::prometheus(
            format!("sum({})", sel("vigil_resources", &[])),
            "resources",
        )),
        PanelDraft::stat("Plugin runs", "suffix: runs/s").query(Query::prometheus(
            format!("sum({})", rate("vigil_plugin_runs_total", &[PLUGIN])),
            "runs/s",
        )),
        PanelDraft::stat("Runs not ok", "percentunit")
            .describe("Share of plugin runs whose outcome is not `ok`.")
            .thresholds(Thresholds::steps(
                "green",
                &[(0.01, "orange"), (0.1, "red")],
            ))
            .query(Query::prometheus(
                format!(
                    "sum({}) / sum({})",
                    rate("vigil_plugin_runs_total", &[PLUGIN, r#"outcome!="ok""#]),
                    rate("vigil_plugin_runs_total", &[PLUGIN])
                ),
                "not ok",
            )),
    ];
    for stat in stats {
        b.panel(stat, 4, 4);
    }

    b.row("Plugin runs");
    b.panel(
        PanelDraft::timeseries("Runs by outcome", "suffix: runs/s").query(Query::prometheus(
            format!(
                "sum by (outcome) ({})",
                rate("vigil_plugin_runs_total", &[PLUGIN])
            ),
            "{{outcome}}",
        )),
        12,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Runs not ok, by plugin", "suffix: runs/s")
            .describe(
                "Plugin errors, traps (deadline, fuel, memory), rejected output, fenced runs.",
            )
            .query(Query::prometheus(
                format!(
                    "sum by (plugin, outcome) ({})",
                    rate("vigil_plugin_runs_total", &[PLUGIN, r#"outcome!="ok""#])
                ),
                "{{plugin}} {{outcome}}",
            )),
        12,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Run duration", "s")
            .query(Query::prometheus(
                quantile(0.5, "vigil_plugin_run_duration_seconds", "plugin"),
                "{{plugin}} p50",
            ))
            .query(Query::prometheus(
                quantile(0.99, "vigil_plugin_run_duration_seconds", "plugin"),
                "{{plugin}} p99",
            )),
        12,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Scheduler lateness", "s")
            .describe("How long after its scheduled time a run started.")
            .query(Query::prometheus(
                quantile(0.5, "vigil_scheduler_lateness_seconds", "plugin"),
                "{{plugin}} p50",
            ))
            .query(Query::prometheus(
                quantile(0.99, "vigil_scheduler_lateness_seconds", "plugin"),
                "{{plugin}} p99",
            )),
        12,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Skipped runs", "suffix: runs/s")
            .describe("Runs not started because the previous run of the same job was still going.")
            .query(Query::prometheus(
                format!(
                    "sum by (plugin) ({})",
                    rate("vigil_plugin_runs_skipped_total", &[PLUGIN])
                ),
                "{{plugin}}",
            )),
        12,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Resources by discovery plugin", "none").query(Query::prometheus(
            format!(
                "sum by (discovery_plugin) ({})",
                sel("vigil_resources", &[])
            ),
            "{{discovery_plugin}}",
        )),
        12,
        8,
    );

    b.row("Sandbox");
    b.panel(
        PanelDraft::timeseries("Limit hits", "suffix: hits/s")
            .describe("Runs stopped or refused by a sandbox limit: deadline, fuel, memory, table, stack, host-call quota, output size.")
            .query(Query::prometheus(
                format!(
                    "sum by (plugin, limit) ({})",
                    rate("vigil_sandbox_limit_hits_total", &[PLUGIN])
                ),
                "{{plugin}} {{limit}}",
            )),
        8,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Fuel consumed", "suffix: fuel/s").query(Query::prometheus(
            format!(
                "sum by (plugin) ({})",
                rate("vigil_plugin_fuel_consumed_total", &[PLUGIN])
            ),
            "{{plugin}}",
        )),
        8,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Peak memory per run", "bytes").query(Query::prometheus(
            format!(
                "max by (plugin) ({})",
                sel("vigil_plugin_memory_peak_bytes", &[PLUGIN])
            ),
            "{{plugin}}",
        )),
        8,
        8,
    );

    b.row("Queues and sinks");
    b.panel(
        PanelDraft::timeseries("Queue depth", "none").query(Query::prometheus(
            format!("sum by (queue) ({})", sel("vigil_queue_depth", &[])),
            "{{queue}}",
        )),
        12,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Sink buffer fill", "percentunit")
            .describe("Buffered metrics groups as a share of each sink's buffer; at 100% the sink drops groups.")
            .range(Some(0.0), Some(1.0))
            .thresholds(Thresholds::steps("green", &[(0.8, "orange"), (0.95, "red")]))
            .query(Query::prometheus(
                format!(
                    "sum by (sink) ({}) / sum by (sink) ({})",
                    sel("vigil_sink_buffer_groups", &[SINK]),
                    sel("vigil_sink_buffer_capacity_groups", &[SINK])
                ),
                "{{sink}}",
            )),
        12,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Sink throughput", "suffix: groups/s")
            .query(Query::prometheus(
                format!(
                    "sum by (sink) ({})",
                    rate("vigil_sink_accepted_groups_total", &[SINK])
                ),
                "{{sink}} accepted",
            ))
            .query(Query::prometheus(
                format!(
                    "sum by (sink) ({})",
                    rate("vigil_sink_delivered_groups_total", &[SINK])
                ),
                "{{sink}} delivered",
            )),
        8,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Dropped groups", "suffix: groups/s").query(Query::prometheus(
            format!(
                "sum by (sink, reason) ({})",
                rate("vigil_sink_dropped_groups_total", &[SINK])
            ),
            "{{sink}} {{reason}}",
        )),
        8,
        8,
    );
    b.panel(
        PanelDraft::timeseries("Sink retries", "suffix: retries/s").query(Query::prometheus(
            format!(
                "sum by (sink) ({})",
                rate("vigil_sink_retries_total", &[SINK])
            ),
            "{{sink}}",
        )),
        8,
        8,
    );
    b.build()
}

#[cfg(test)]
mod tests {
    use super::super::grafana::schema::validate;
    use super::*;

    #[test]
    fn health_dashboard_passes_the_schema_checks() {
        let d = dashboard();
        let json: serde_json::Value =
            serde_json::from_str(&d.to_json().expect("serialises")).expect("JSON");
        let errors = validate(&json);
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(d.uid, "vigil-health-prom");
    }

    #[test]
    fn influxdb_is_refused_clearly() {
        let error = health_dashboard(Datasource::InfluxDb).expect_err("prometheus only");
        assert!(error.to_string().contains("needs a Prometheus data source"));
    }

    /// Every `vigil_*` series the host exports is queried somewhere.
    #[test]
    fn every_vigil_metric_is_shown() {
        let queries: Vec<String> = dashboard().queries().into_iter().map(|q| q.query).collect();
        let all = queries.join("\n");
        for metric in [
            "vigil_plugin_runs_total",
            "vigil_plugin_runs_skipped_total",
            "vigil_plugin_run_duration_seconds_bucket",
            "vigil_scheduler_lateness_seconds_bucket",
            "vigil_sandbox_limit_hits_total",
            "vigil_plugin_fuel_consumed_total",
            "vigil_plugin_memory_peak_bytes",
            "vigil_queue_depth",
            "vigil_sink_buffer_groups",
            "vigil_sink_buffer_capacity_groups",
            "vigil_sink_accepted_groups_total",
            "vigil_sink_delivered_groups_total",
            "vigil_sink_dropped_groups_total",
            "vigil_sink_retries_total",
            "vigil_resources",
            "vigil_plugins_loaded",
            "vigil_plugins_broken",
            "vigil_start_time_seconds",
        ] {
            assert!(all.contains(&format!("{metric}{{")), "{metric} not queried");
        }
        // Substituted for a real Prometheus: `All` is `.*`.
        assert!(!all.contains('$'), "{all}");
        assert!(all.contains(r#"instance=~".*""#));
    }

    #[test]
    fn counters_and_buckets_are_only_used_through_rate() {
        for q in dashboard().queries() {
            let text = &q.query;
            for suffix in ["_total{", "_bucket{"] {
                for (at, _) in text.match_indices(suffix) {
                    let start = text[..at]
                        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .map_or(0, |i| i + 1);
                    assert!(text[..start].ends_with("rate("), "{q:?}");
                    let close = at + text[at..].find('}').expect("closing brace");
                    assert!(text[close + 1..].starts_with("[5m])"), "{q:?}");
                }
            }
        }
    }
}
