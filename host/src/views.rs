//! The JSON shapes of vigil's read commands (`vigil ... --json`), in one
//! place: the same structs the HTTP API (`/api/v1`) is to serve, so the two
//! can never drift apart.
//!
//! Conventions, for every shape:
//!
//! * times are RFC 3339 strings in UTC with milliseconds
//!   (`2026-12-07T02:10:06.123Z`), never epoch numbers; durations are
//!   numbers with their unit in the field name (`duration_ms`,
//!   `heartbeat_age_seconds`);
//! * resource fields carry Panoptes' names (`resource_id`,
//!   `resource_class`...), as in the filter DSL and the JSON lines sink;
//! * an absent value is `null`, never a missing field;
//! * the CLI prints JSON lines: a list command one object per item, in the
//!   order the human table shows them, a single-object command one line.
//!
//! The field lists are documented in the README's "Command-line interface"
//! section; a field is only ever added, never renamed or retyped, within
//! `/api/v1`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{HostStatus, PluginStatus, RunRecord, SeriesValue, StoredResource};

/// `epoch_seconds` (the store's unit) as RFC 3339, UTC, milliseconds.
/// A time that is not representable (NaN, out of chrono's range) is the
/// epoch, so a damaged record still prints.
pub fn rfc3339(epoch_seconds: f64) -> String {
    let millis = if epoch_seconds.is_finite() {
        (epoch_seconds * 1000.0).round() as i64
    } else {
        0
    };
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One live resource (`vigil resources --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceView {
    pub resource_id: String,
    pub resource_site: String,
    pub resource_endpoint: String,
    pub resource_class: String,
    pub resource_subclass: String,
    pub resource_type: String,
    pub resource_metadata: BTreeMap<String, String>,
    /// The discovery plugin that owns it.
    pub discovered_by: String,
    pub first_seen: String,
    pub last_seen: String,
    pub expires_at: String,
}

impl From<&StoredResource> for ResourceView {
    fn from(stored: &StoredResource) -> Self {
        let r = &stored.resource;
        ResourceView {
            resource_id: r.id.clone(),
            resource_site: r.site.clone(),
            resource_endpoint: r.endpoint.clone(),
            resource_class: r.class.clone(),
            resource_subclass: r.subclass.clone(),
            resource_type: r.type_.clone(),
            resource_metadata: r.metadata.iter().cloned().collect(),
            discovered_by: stored.discovered_by.clone(),
            first_seen: rfc3339(stored.first_seen),
            last_seen: rfc3339(stored.last_seen),
            expires_at: rfc3339(stored.expires_at),
        }
    }
}

/// The latest value of one series (`vigil metrics --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesView {
    pub resource_id: String,
    pub group_type: String,
    /// Dimension name to value.
    pub dimensions: BTreeMap<String, String>,
    pub metric: String,
    /// A JSON number, exact for integers (a 64-bit counter keeps every
    /// digit).
    pub value: serde_json::Number,
    /// `counter` or `gauge`.
    pub metric_type: String,
    /// When the value was measured.
    pub at: String,
}

/// The stored text of a value as a JSON number: integers exactly, the rest
/// as doubles; text that is no finite number (never written by vigil)
/// becomes `0`.
fn number(text: &str) -> serde_json::Number {
    if let Ok(v) = text.parse::<i64>() {
        return v.into();
    }
    if let Ok(v) = text.parse::<u64>() {
        return v.into();
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .unwrap_or_else(|| 0.into())
}

impl From<&SeriesValue> for SeriesView {
    fn from(s: &SeriesValue) -> Self {
        SeriesView {
            resource_id: s.resource_id.clone(),
            group_type: s.group_type.clone(),
            dimensions: s.dimensions.iter().cloned().collect(),
            metric: s.metric.clone(),
            value: number(&s.value),
            metric_type: s.metric_type.clone(),
            at: rfc3339(s.at),
        }
    }
}

/// One plugin run (`vigil runs --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    pub plugin: String,
    /// `null` for discovery runs.
    pub resource_id: Option<String>,
    /// `ok`, `plugin_error`, `trap.deadline`... (README, "Run outcomes").
    pub outcome: String,
    pub detail: String,
    pub scheduled_at: String,
    pub started_at: String,
    pub finished_at: String,
    /// Start minus due time.
    pub late_ms: f64,
    /// Finish minus start.
    pub duration_ms: f64,
}

/// Milliseconds between two epoch-second times, rounded to microseconds.
fn millis_between(from: f64, to: f64) -> f64 {
    ((to - from) * 1_000_000.0).round() / 1000.0
}

impl From<&RunRecord> for RunView {
    fn from(r: &RunRecord) -> Self {
        RunView {
            plugin: r.plugin.clone(),
            resource_id: r.resource_id.clone(),
            outcome: r.outcome.clone(),
            detail: r.detail.clone(),
            scheduled_at: rfc3339(r.scheduled_at),
            started_at: rfc3339(r.started_at),
            finished_at: rfc3339(r.finished_at),
            late_ms: millis_between(r.scheduled_at, r.started_at),
            duration_ms: millis_between(r.started_at, r.finished_at),
        }
    }
}

/// `vigil status --json`: every agent of the site that wrote a status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    pub site: String,
    /// When this view was taken.
    pub checked_at: String,
    /// An agent whose heartbeat is older than this is `stale`.
    pub stale_after_seconds: f64,
    /// Agents with a fresh heartbeat; `vigil status` exits 3 when 0.
    pub live_agents: usize,
    /// Live agents first, then by agent id.
    pub agents: Vec<AgentView>,
}

/// One agent's status: what it runs and how it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentView {
    pub agent_id: String,
    /// `agent`, `consumer` or `all`.
    pub role: String,
    /// `live` or `stale`.
    pub state: &'static str,
    pub pid: u32,
    pub started_at: String,
    /// The agent's last status write (every 2 s while it runs).
    pub heartbeat_at: String,
    pub heartbeat_age_seconds: f64,
    /// Live resources as this agent sees them.
    pub resources: usize,
    pub plugins: Vec<PluginStatusView>,
    /// Plugin files that failed to load.
    pub broken: Vec<BrokenPluginView>,
    /// vigil's own health as `/metrics` shows it (sinks, queues,
    /// inventory), in the agent's health snapshot shape.
    pub health: serde_json::Value,
}

impl AgentView {
    /// The view of `status` at `now`, stale past `stale_after` seconds.
    pub fn new(status: &HostStatus, now: f64, stale_after: f64) -> AgentView {
        let age = (now - status.updated_at).max(0.0);
        AgentView {
            agent_id: status.agent_id.clone(),
            role: status.role.clone(),
            state: if now - status.updated_at < stale_after {
                "live"
            } else {
                "stale"
            },
            pid: status.pid,
            started_at: rfc3339(status.started_at),
            heartbeat_at: rfc3339(status.updated_at),
            heartbeat_age_seconds: (age * 1000.0).round() / 1000.0,
            resources: status.resources,
            plugins: status.plugins.iter().map(PluginStatusView::from).collect(),
            broken: status
                .broken
                .iter()
                .map(|(path, error)| BrokenPluginView {
                    path: path.clone(),
                    error: error.clone(),
                })
                .collect(),
            health: status.health.clone(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.state == "live"
    }
}

impl StatusView {
    /// The site's agents at `now`; live ones first.
    pub fn new(site: &str, statuses: &[HostStatus], now: f64, stale_after: f64) -> StatusView {
        let mut agents: Vec<AgentView> = statuses
            .iter()
            .map(|s| AgentView::new(s, now, stale_after))
            .collect();
        agents.sort_by(|a, b| (!a.is_live(), &a.agent_id).cmp(&(!b.is_live(), &b.agent_id)));
        StatusView {
            site: site.to_owned(),
            checked_at: rfc3339(now),
            stale_after_seconds: stale_after,
            live_agents: agents.iter().filter(|a| a.is_live()).count(),
            agents,
        }
    }
}

/// One plugin's counters on one agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginStatusView {
    pub name: String,
    pub kind: String,
    pub schedule: String,
    pub runs: u64,
    pub skipped: u64,
    /// Runs by outcome label.
    pub outcomes: BTreeMap<String, u64>,
    pub last_run_at: Option<String>,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
}

impl From<&PluginStatus> for PluginStatusView {
    fn from(p: &PluginStatus) -> Self {
        PluginStatusView {
            name: p.name.clone(),
            kind: p.kind.clone(),
            schedule: p.schedule.clone(),
            runs: p.runs,
            skipped: p.skipped,
            outcomes: p.outcomes.clone(),
            last_run_at: p.last_run_at.map(rfc3339),
            lateness_p50_ms: p.lateness_p50_ms,
            lateness_p99_ms: p.lateness_p99_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrokenPluginView {
    pub path: String,
    pub error: String,
}

/// One cached enrichment group (`vigil enrichment --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrichmentView {
    pub resource_id: String,
    pub namespace: String,
    /// The enrichment plugin that wrote it (the namespace's owner).
    pub plugin: String,
    pub expires_at: String,
    /// Set key (an ifIndex...) to its values.
    pub sets: BTreeMap<String, BTreeMap<String, String>>,
}

impl From<&vigil_enrichment::CachedEnrichment> for EnrichmentView {
    fn from(entry: &vigil_enrichment::CachedEnrichment) -> Self {
        EnrichmentView {
            resource_id: entry.resource_id.clone(),
            namespace: entry.namespace.clone(),
            plugin: entry.plugin.clone(),
            expires_at: rfc3339(entry.expires_at),
            sets: entry
                .group
                .sets
                .iter()
                .map(|s| (s.key.clone(), s.values.iter().cloned().collect()))
                .collect(),
        }
    }
}

/// One plugin file (`vigil plugins list --json`, `vigil plugins check
/// --json`): what `list` knows for every file, and with `check` the
/// details of one that loads. A file that does not load has `ok: false`,
/// its `error`, and `null` elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PluginView {
    pub path: String,
    pub ok: bool,
    pub error: Option<String>,
    pub name: Option<String>,
    /// `discovery`, `enrichment`, `polling` or `analysis`.
    pub kind: Option<String>,
    /// As written: seconds, a duration or a cron expression.
    pub schedule: Option<String>,
    /// The interval between runs (the shortest, for a cron schedule).
    pub interval_seconds: Option<f64>,
    /// Only with `check`.
    pub details: Option<PluginDetails>,
}

/// What `vigil plugins check` adds for a plugin that loads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginDetails {
    /// The WIT interface the component exports.
    pub exports: String,
    pub module: String,
    pub module_bytes: u64,
    pub module_sha256: String,
    /// `true` when the precompiled cache had it.
    pub cached: bool,
    pub author: Option<String>,
    pub version: Option<String>,
    pub website: Option<String>,
    pub description: Option<String>,
    /// The filter DSL text; `null` for every resource.
    pub resource_filter: Option<String>,
    pub limits: String,
    /// Capability grants, one line each.
    pub capabilities: Vec<String>,
    /// Every interface the component imports (`vigil:` and WASI).
    pub imports: Vec<String>,
    pub config_sections: Vec<String>,
}

/// `vigil plugins run --json`: one run and what it produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginRunView {
    pub plugin: String,
    pub kind: String,
    pub resource_id: Option<String>,
    /// The outcome label (`ok`, `trap.deadline`...).
    pub outcome: String,
    /// The outcome as a sentence.
    pub outcome_detail: String,
    pub duration_ms: f64,
    pub fuel_consumed: u64,
    pub peak_memory_bytes: u64,
    pub host_calls: u64,
    pub log_lines_kept: usize,
    pub log_lines_dropped: u64,
    /// What a polling run returned (empty otherwise).
    pub metrics_groups: Vec<GroupView>,
    /// What a discovery run returned.
    pub resources: Vec<RunResourceView>,
    /// What an enrichment run returned.
    pub enrichments: Vec<EnrichmentGroupView>,
    /// What an endpoints run returned (address-table snapshots).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoint_tables: Vec<vigil_endpoints::snapshot::TableSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupView {
    pub group_type: String,
    pub dimensions: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, serde_json::Number>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResourceView {
    pub resource_id: String,
    pub resource_endpoint: String,
    pub resource_class: String,
    pub resource_subclass: String,
    pub resource_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrichmentGroupView {
    pub namespace: String,
    pub ttl_seconds: u64,
    pub sets: BTreeMap<String, BTreeMap<String, String>>,
}

// --- endpoints (issue #14) ---------------------------------------------------

/// One event of an endpoint's fabric-wide record (EPT's `eptEndpointEvent`
/// field names; `ts` as RFC 3339). `node` 0 is a delete; a vpc pseudo-node
/// is `(n1 << 16) + n2`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointEventView {
    pub node: u32,
    pub pod: u32,
    pub status: &'static str,
    pub ts: String,
    pub pctag: i64,
    pub encap: String,
    pub intf_id: String,
    pub intf_name: String,
    pub rw_mac: String,
    pub rw_bd: u32,
    pub epg_name: String,
    pub vnid_name: String,
}

impl From<&vigil_endpoints::EndpointEvent> for EndpointEventView {
    fn from(e: &vigil_endpoints::EndpointEvent) -> Self {
        EndpointEventView {
            node: e.node,
            pod: e.pod,
            status: e.status.as_str(),
            ts: rfc3339(e.ts),
            pctag: e.pctag,
            encap: e.encap.to_string(),
            intf_id: e.intf_id.to_string(),
            intf_name: e.intf_name.to_string(),
            rw_mac: e.rw_mac.to_string(),
            rw_bd: e.rw_bd,
            epg_name: e.epg_name.to_string(),
            vnid_name: e.vnid_name.to_string(),
        }
    }
}

fn endpoint_type(t: vigil_endpoints::EndpointType) -> &'static str {
    match t {
        vigil_endpoints::EndpointType::Mac => "mac",
        vigil_endpoints::EndpointType::Ipv4 => "ipv4",
        vigil_endpoints::EndpointType::Ipv6 => "ipv6",
    }
}

fn learn_type(t: vigil_endpoints::LearnType) -> &'static str {
    match t {
        vigil_endpoints::LearnType::Epg => "epg",
        vigil_endpoints::LearnType::External => "external",
        vigil_endpoints::LearnType::Overlay => "overlay",
        vigil_endpoints::LearnType::Loopback => "loopback",
        vigil_endpoints::LearnType::Psvi => "psvi",
    }
}

/// One endpoint where it is now (`vigil endpoints search --json`, an item
/// of `GET /api/v1/endpoints`): the key, `type`, `count` (events ever
/// recorded), and `current`, the newest event of its record (`null` when it
/// has none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointView {
    pub fabric: String,
    pub vnid: u32,
    pub addr: String,
    #[serde(rename = "type")]
    pub endpoint_type: &'static str,
    pub learn_type: &'static str,
    pub count: u64,
    pub is_stale: bool,
    pub is_offsubnet: bool,
    pub current: Option<EndpointEventView>,
}

impl From<&vigil_endpoints::EndpointRecord> for EndpointView {
    fn from(r: &vigil_endpoints::EndpointRecord) -> Self {
        EndpointView {
            fabric: r.fabric.to_string(),
            vnid: r.vnid,
            addr: r.addr.to_string(),
            endpoint_type: endpoint_type(r.endpoint_type),
            learn_type: learn_type(r.learn_type),
            count: r.count,
            is_stale: r.is_stale,
            is_offsubnet: r.is_offsubnet,
            current: r.events.first().map(EndpointEventView::from),
        }
    }
}

/// A page of endpoints (`GET /api/v1/endpoints`): `next_cursor` continues
/// it, `null` on the last page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointPageView {
    pub items: Vec<EndpointView>,
    pub next_cursor: Option<String>,
}

/// One event of a node's history (EPT's `eptHistoryEvent` field names;
/// `ts` as RFC 3339).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEventView {
    pub classname: &'static str,
    pub ts: String,
    pub status: &'static str,
    pub remote: u32,
    pub pctag: i64,
    pub flags: Vec<String>,
    pub tunnel_flags: String,
    pub encap: String,
    pub intf_id: String,
    pub intf_name: String,
    pub epg_name: String,
    pub vnid_name: String,
    pub rw_mac: String,
    pub rw_bd: u32,
}

impl From<&vigil_endpoints::HistoryEvent> for HistoryEventView {
    fn from(e: &vigil_endpoints::HistoryEvent) -> Self {
        HistoryEventView {
            classname: e.classname.as_str(),
            ts: rfc3339(e.ts),
            status: e.status.as_str(),
            remote: e.remote,
            pctag: e.pctag,
            flags: e.flags.to_vec(),
            tunnel_flags: e.tunnel_flags.to_string(),
            encap: e.encap.to_string(),
            intf_id: e.intf_id.to_string(),
            intf_name: e.intf_name.to_string(),
            epg_name: e.epg_name.to_string(),
            vnid_name: e.vnid_name.to_string(),
            rw_mac: e.rw_mac.to_string(),
            rw_bd: e.rw_bd,
        }
    }
}

/// What one node reported about the endpoint: `count` events ever, the
/// newest (at most the cap) in `events`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeHistoryView {
    pub node: u32,
    #[serde(rename = "type")]
    pub history_type: &'static str,
    pub count: u64,
    pub is_stale: bool,
    pub is_offsubnet: bool,
    pub events: Vec<HistoryEventView>,
}

impl From<&vigil_endpoints::HistoryRecord> for NodeHistoryView {
    fn from(h: &vigil_endpoints::HistoryRecord) -> Self {
        NodeHistoryView {
            node: h.node,
            history_type: match h.history_type {
                vigil_endpoints::HistoryType::Mac => "mac",
                vigil_endpoints::HistoryType::Ip => "ip",
            },
            count: h.count,
            is_stale: h.is_stale,
            is_offsubnet: h.is_offsubnet,
            events: h.events.iter().map(HistoryEventView::from).collect(),
        }
    }
}

/// One endpoint whole (`vigil endpoints show --json`, `GET
/// /api/v1/endpoints/{fabric}/{scope}/{addr}`): the [`EndpointView`] fields,
/// then `first_learn`, `events` (the record's events, newest first, `count`
/// in all) and `history`, every node's history by node id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointDetailView {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    pub first_learn: EndpointEventView,
    pub events: Vec<EndpointEventView>,
    pub history: Vec<NodeHistoryView>,
}

impl From<&vigil_endpoints::query::EndpointDetail> for EndpointDetailView {
    fn from(d: &vigil_endpoints::query::EndpointDetail) -> Self {
        EndpointDetailView {
            endpoint: EndpointView::from(&d.record),
            first_learn: EndpointEventView::from(&d.record.first_learn),
            events: d
                .record
                .events
                .iter()
                .map(EndpointEventView::from)
                .collect(),
            history: d.histories.values().map(NodeHistoryView::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_609_406.123_4), "2026-12-07T02:10:06.123Z");
        assert_eq!(rfc3339(f64::NAN), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1e30), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn values_are_exact_numbers() {
        let series = SeriesValue {
            resource_id: "sw1".into(),
            group_type: "interface".into(),
            dimensions: vec![("interface_name".into(), "ge-0/0/1".into())],
            metric: "bits_in".into(),
            value: u64::MAX.to_string(),
            metric_type: "counter".into(),
            at: 1.5,
        };
        let json = serde_json::to_string(&SeriesView::from(&series)).expect("json");
        assert_eq!(
            json,
            r#"{"resource_id":"sw1","group_type":"interface","dimensions":{"interface_name":"ge-0/0/1"},"metric":"bits_in","value":18446744073709551615,"metric_type":"counter","at":"1970-01-01T00:00:01.500Z"}"#
        );
        assert_eq!(number("-3"), serde_json::Number::from(-3));
        assert_eq!(number("0.25").as_f64(), Some(0.25));
    }

    #[test]
    fn runs_carry_times_and_their_differences() {
        let run = RunRecord {
            plugin: "beat".into(),
            resource_id: None,
            scheduled_at: 10.0,
            started_at: 10.0125,
            finished_at: 10.5,
            outcome: "ok".into(),
            detail: String::new(),
        };
        let view = RunView::from(&run);
        assert_eq!(view.started_at, "1970-01-01T00:00:10.013Z");
        assert_eq!((view.late_ms, view.duration_ms), (12.5, 487.5));
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["resource_id"], serde_json::Value::Null);
    }

    #[test]
    fn agents_are_live_or_stale_by_their_heartbeat() {
        let status = |id: &str, updated_at: f64| HostStatus {
            agent_id: id.into(),
            updated_at,
            ..HostStatus::default()
        };
        let view = StatusView::new(
            "lab",
            &[status("b", 95.0), status("old", 80.0), status("a", 99.0)],
            100.0,
            10.0,
        );
        let ids: Vec<(&str, &str)> = view
            .agents
            .iter()
            .map(|a| (a.agent_id.as_str(), a.state))
            .collect();
        assert_eq!(ids, [("a", "live"), ("b", "live"), ("old", "stale")]);
        assert_eq!(view.live_agents, 2);
        assert_eq!(view.agents[2].heartbeat_age_seconds, 20.0);
    }
}
