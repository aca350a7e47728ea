//! Grafana's dashboard JSON model (the part vigil writes), as typed structs
//! that serialise to what Grafana 10/11 exports, and a [`DashboardBuilder`]
//! that assigns panel ids, `refId`s and grid positions, so a generated
//! dashboard cannot have overlapping panels or duplicate ids by
//! construction.
//!
//! Every panel and query points at the `${datasource}` template variable:
//! the operator picks their own Prometheus or InfluxDB data source when
//! importing, and no data source uid is baked in.

use std::collections::BTreeMap;

use serde::Serialize;

/// Width of Grafana's dashboard grid, in columns.
pub const GRID_COLUMNS: u32 = 24;
/// The `schemaVersion` written (Grafana 10.4 / 11 export this).
pub const SCHEMA_VERSION: u32 = 39;
/// Longest uid Grafana accepts.
pub const MAX_UID_LEN: usize = 40;
/// Name of the data source template variable every panel refers to.
pub const DATASOURCE_VARIABLE: &str = "datasource";

/// The data source a dashboard queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Datasource {
    /// Prometheus (PromQL), fed by vigil's Prometheus or Pushgateway sink.
    Prometheus,
    /// InfluxDB 1.x (InfluxQL), fed by vigil's InfluxDB sink.
    #[value(name = "influxdb")]
    InfluxDb,
}

impl Datasource {
    /// Grafana's plugin id of the data source type.
    pub fn plugin_id(self) -> &'static str {
        match self {
            Datasource::Prometheus => "prometheus",
            Datasource::InfluxDb => "influxdb",
        }
    }

    /// Short form used in uids.
    fn uid_suffix(self) -> &'static str {
        match self {
            Datasource::Prometheus => "prom",
            Datasource::InfluxDb => "influx",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Datasource::Prometheus => "Prometheus",
            Datasource::InfluxDb => "InfluxDB",
        }
    }
}

/// A stable dashboard uid from a title: a lowercase slug of it plus
/// `suffix`, at most [`MAX_UID_LEN`] characters of `[a-z0-9-]`. A title too
/// long (or with no ASCII letters or digits) keeps a prefix of its slug and
/// gets a hash of the whole title, so distinct titles stay distinct.
pub fn uid_from_title(title: &str, suffix: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let suffix = if suffix.is_empty() {
        String::new()
    } else {
        format!("-{suffix}")
    };
    if !slug.is_empty() && slug.len() + suffix.len() <= MAX_UID_LEN {
        return format!("{slug}{suffix}");
    }
    // FNV-1a: tiny, stable across releases and platforms (unlike std's
    // hasher), which a uid must be.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in title.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let hash = format!("{:08x}", hash >> 32);
    let room = MAX_UID_LEN - suffix.len() - hash.len() - 1;
    let prefix = slug[..slug.len().min(room)].trim_end_matches('-');
    let prefix = if prefix.is_empty() {
        "dashboard"
    } else {
        prefix
    };
    format!("{prefix}-{hash}{suffix}")
}

/// A Grafana dashboard, as written to JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    /// Always `null`: Grafana assigns its own id on import.
    pub id: Option<u64>,
    pub uid: String,
    pub title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub tags: Vec<String>,
    pub timezone: String,
    pub editable: bool,
    /// 1: shared crosshair across panels.
    pub graph_tooltip: u8,
    pub schema_version: u32,
    pub version: u32,
    pub time: TimeRange,
    pub refresh: String,
    pub templating: Templating,
    pub annotations: Annotations,
    pub links: Vec<DashboardLink>,
    pub panels: Vec<Panel>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeRange {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Templating {
    pub list: Vec<Variable>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Annotations {
    pub list: Vec<Annotation>,
}

/// Grafana's built-in "Annotations & Alerts" annotation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    pub built_in: u8,
    pub datasource: DatasourceRef,
    pub enable: bool,
    pub hide: bool,
    pub icon_color: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl Annotation {
    fn built_in() -> Self {
        Annotation {
            built_in: 1,
            datasource: DatasourceRef {
                kind: "grafana".to_owned(),
                uid: "-- Grafana --".to_owned(),
            },
            enable: true,
            hide: true,
            icon_color: "rgba(0, 211, 255, 1)".to_owned(),
            name: "Annotations & Alerts".to_owned(),
            kind: "dashboard".to_owned(),
        }
    }
}

/// A link in the dashboard's header (to other dashboards by tag).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardLink {
    pub title: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub tags: Vec<String>,
    pub as_dropdown: bool,
    pub include_vars: bool,
    pub keep_time: bool,
}

/// Where a panel or query gets its data: `{type, uid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasourceRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub uid: String,
}

impl DatasourceRef {
    /// The data source the operator picked in the `$datasource` variable.
    pub fn variable(datasource: Datasource) -> Self {
        DatasourceRef {
            kind: datasource.plugin_id().to_owned(),
            uid: format!("${{{DATASOURCE_VARIABLE}}}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableKind {
    /// Picks a data source of one plugin type.
    Datasource,
    /// Values from a data source query (e.g. Prometheus `label_values`).
    Query,
}

/// A template variable (`templating.list[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    #[serde(rename = "type")]
    pub kind: VariableKind,
    pub name: String,
    pub label: String,
    /// Datasource variables: the plugin type; query variables: the query.
    pub query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datasource: Option<DatasourceRef>,
    /// 1: on dashboard load; 2: on time range change.
    pub refresh: u8,
    pub regex: String,
    pub multi: bool,
    pub include_all: bool,
    /// What `All` stands for in queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_value: Option<String>,
    /// Empty: Grafana picks the default (or `All`).
    pub current: BTreeMap<String, String>,
    pub options: Vec<String>,
    pub hide: u8,
    /// 1: alphabetical.
    pub sort: u8,
}

impl Variable {
    /// The `$datasource` variable: any data source of this type.
    pub fn datasource(datasource: Datasource) -> Self {
        Variable {
            kind: VariableKind::Datasource,
            name: DATASOURCE_VARIABLE.to_owned(),
            label: format!("{} data source", datasource.label()),
            query: datasource.plugin_id().to_owned(),
            definition: None,
            datasource: None,
            refresh: 1,
            regex: String::new(),
            multi: false,
            include_all: false,
            all_value: None,
            current: BTreeMap::new(),
            options: Vec::new(),
            hide: 0,
            sort: 0,
        }
    }

    /// A multi-select Prometheus `label_values(...)` variable whose `All`
    /// means `.*`, for use in `=~"$name"` matchers.
    pub fn prometheus_label_values(name: &str, label: &str, query: &str) -> Self {
        Variable {
            kind: VariableKind::Query,
            name: name.to_owned(),
            label: label.to_owned(),
            query: query.to_owned(),
            definition: Some(query.to_owned()),
            datasource: Some(DatasourceRef::variable(Datasource::Prometheus)),
            refresh: 2,
            regex: String::new(),
            multi: true,
            include_all: true,
            all_value: Some(".*".to_owned()),
            current: BTreeMap::new(),
            options: Vec::new(),
            hide: 0,
            sort: 1,
        }
    }
}

/// Panel types vigil writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PanelKind {
    Row,
    Timeseries,
    Stat,
    StateTimeline,
    Text,
}

/// A panel's position on the 24-column grid (`h` in grid rows of 30 px).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GridPos {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// A dashboard panel (or a row, which groups the panels below it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Panel {
    pub id: u32,
    #[serde(rename = "type")]
    pub kind: PanelKind,
    pub title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub grid_pos: GridPos,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datasource: Option<DatasourceRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_config: Option<FieldConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<PanelOptions>,
    /// Rows only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapsed: Option<bool>,
    /// Rows only: the panels of a collapsed row (empty when expanded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panels: Option<Vec<Panel>>,
}

/// A query of a panel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Target {
    Prometheus(PrometheusTarget),
    InfluxDb(InfluxTarget),
}

impl Target {
    pub fn ref_id(&self) -> &str {
        match self {
            Target::Prometheus(t) => &t.ref_id,
            Target::InfluxDb(t) => &t.ref_id,
        }
    }

    /// The query text (PromQL or InfluxQL), before variable substitution.
    pub fn text(&self) -> &str {
        match self {
            Target::Prometheus(t) => &t.expr,
            Target::InfluxDb(t) => &t.query,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusTarget {
    pub ref_id: String,
    pub datasource: DatasourceRef,
    pub expr: String,
    pub legend_format: String,
    pub range: bool,
    pub instant: bool,
    /// `code`: Grafana shows the PromQL as written, not the builder.
    pub editor_mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InfluxTarget {
    pub ref_id: String,
    pub datasource: DatasourceRef,
    /// Always true: the query is InfluxQL text, not the query builder's.
    pub raw_query: bool,
    pub query: String,
    pub result_format: String,
    /// Series name; `$col` is the column alias of the `SELECT`.
    pub alias: String,
}

/// A query before it is placed in a panel (no `refId` or data source yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Prometheus { expr: String, legend: String },
    InfluxQl { query: String, alias: String },
}

impl Query {
    pub fn prometheus(expr: impl Into<String>, legend: impl Into<String>) -> Self {
        Query::Prometheus {
            expr: expr.into(),
            legend: legend.into(),
        }
    }

    pub fn influxql(query: impl Into<String>, alias: impl Into<String>) -> Self {
        Query::InfluxQl {
            query: query.into(),
            alias: alias.into(),
        }
    }

    fn into_target(self, ref_id: String, datasource: DatasourceRef) -> Target {
        match self {
            Query::Prometheus { expr, legend } => Target::Prometheus(PrometheusTarget {
                ref_id,
                datasource,
                expr,
                legend_format: legend,
                range: true,
                instant: false,
                editor_mode: "code".to_owned(),
            }),
            Query::InfluxQl { query, alias } => Target::InfluxDb(InfluxTarget {
                ref_id,
                datasource,
                raw_query: true,
                query,
                result_format: "time_series".to_owned(),
                alias,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldConfig {
    pub defaults: FieldDefaults,
    pub overrides: Vec<FieldOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDefaults {
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u32>,
    pub color: ColorMode,
    pub mappings: Vec<ValueMapping>,
    pub thresholds: Thresholds,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomFieldConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColorMode {
    pub mode: String,
}

/// `{"type": "value", "options": {"1": {"text": "up", ...}}}`: shows a
/// number as a named, coloured state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueMapping {
    #[serde(rename = "type")]
    pub kind: String,
    pub options: BTreeMap<String, MappingResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappingResult {
    pub text: String,
    pub color: String,
    pub index: u32,
}

impl ValueMapping {
    /// Maps each value to (text, color), in order.
    pub fn values(states: &[(i64, &str, &str)]) -> Self {
        ValueMapping {
            kind: "value".to_owned(),
            options: states
                .iter()
                .zip(0..)
                .map(|(&(value, text, color), index)| {
                    (
                        value.to_string(),
                        MappingResult {
                            text: text.to_owned(),
                            color: color.to_owned(),
                            index,
                        },
                    )
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    pub mode: String,
    pub steps: Vec<ThresholdStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdStep {
    pub color: String,
    /// `null` for the base step.
    pub value: Option<f64>,
}

impl Thresholds {
    /// The base colour, then (from value, colour) steps.
    pub fn steps(base: &str, steps: &[(f64, &str)]) -> Self {
        let mut all = vec![ThresholdStep {
            color: base.to_owned(),
            value: None,
        }];
        all.extend(steps.iter().map(|&(value, color)| ThresholdStep {
            color: color.to_owned(),
            value: Some(value),
        }));
        Thresholds {
            mode: "absolute".to_owned(),
            steps: all,
        }
    }
}

/// `fieldConfig.defaults.custom`: options of the panel type's renderer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CustomFieldConfig {
    Timeseries(TimeseriesCustom),
    StateTimeline(StateTimelineCustom),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeseriesCustom {
    pub draw_style: String,
    pub line_width: u32,
    pub fill_opacity: u32,
    pub show_points: String,
    pub span_nulls: bool,
    pub axis_soft_min: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateTimelineCustom {
    pub fill_opacity: u32,
    pub line_width: u32,
}

/// `fieldConfig.overrides[]`: properties for the series whose name matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldOverride {
    pub matcher: OverrideMatcher,
    pub properties: Vec<OverrideProperty>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverrideMatcher {
    pub id: String,
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverrideProperty {
    pub id: String,
    pub value: String,
}

/// `options`: how the panel type presents its data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PanelOptions {
    Timeseries(TimeseriesOptions),
    Stat(StatOptions),
    StateTimeline(StateTimelineOptions),
    Text(TextOptions),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Legend {
    pub display_mode: String,
    pub placement: String,
    pub show_legend: bool,
    pub calcs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tooltip {
    pub mode: String,
    pub sort: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeseriesOptions {
    pub legend: Legend,
    pub tooltip: Tooltip,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatOptions {
    pub reduce_options: ReduceOptions,
    pub color_mode: String,
    pub graph_mode: String,
    pub justify_mode: String,
    pub orientation: String,
    pub text_mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReduceOptions {
    pub calcs: Vec<String>,
    pub fields: String,
    pub values: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateTimelineOptions {
    pub show_value: String,
    pub merge_values: bool,
    pub align_value: String,
    pub row_height: f64,
    pub legend: Legend,
    pub tooltip: Tooltip,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextOptions {
    pub mode: String,
    pub content: String,
}

/// A panel before placement: what it shows, not where.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelDraft {
    kind: PanelKind,
    title: String,
    description: String,
    queries: Vec<Query>,
    field_config: Option<FieldConfig>,
    options: PanelOptions,
}

fn legend(show: bool) -> Legend {
    Legend {
        display_mode: "list".to_owned(),
        placement: "bottom".to_owned(),
        show_legend: show,
        calcs: Vec::new(),
    }
}

fn tooltip() -> Tooltip {
    Tooltip {
        mode: "multi".to_owned(),
        sort: "none".to_owned(),
    }
}

fn defaults(unit: &str, color: &str, custom: Option<CustomFieldConfig>) -> FieldDefaults {
    FieldDefaults {
        unit: unit.to_owned(),
        min: None,
        max: None,
        decimals: None,
        color: ColorMode {
            mode: color.to_owned(),
        },
        mappings: Vec::new(),
        thresholds: Thresholds::steps("green", &[]),
        custom,
    }
}

impl PanelDraft {
    /// A line graph of one or more series, in `unit` (a Grafana unit id such
    /// as `bps`, `pps`, `s`, `bytes`, `percentunit`, `short`).
    pub fn timeseries(title: impl Into<String>, unit: &str) -> Self {
        PanelDraft {
            kind: PanelKind::Timeseries,
            title: title.into(),
            description: String::new(),
            queries: Vec::new(),
            field_config: Some(FieldConfig {
                defaults: defaults(
                    unit,
                    "palette-classic",
                    Some(CustomFieldConfig::Timeseries(TimeseriesCustom {
                        draw_style: "line".to_owned(),
                        line_width: 1,
                        fill_opacity: 10,
                        show_points: "never".to_owned(),
                        span_nulls: false,
                        axis_soft_min: Some(0.0),
                    })),
                ),
                overrides: Vec::new(),
            }),
            options: PanelOptions::Timeseries(TimeseriesOptions {
                legend: legend(true),
                tooltip: tooltip(),
            }),
        }
    }

    /// The latest value of each series as a big number (or, with mappings,
    /// a coloured state name).
    pub fn stat(title: impl Into<String>, unit: &str) -> Self {
        PanelDraft {
            kind: PanelKind::Stat,
            title: title.into(),
            description: String::new(),
            queries: Vec::new(),
            field_config: Some(FieldConfig {
                defaults: defaults(unit, "thresholds", None),
                overrides: Vec::new(),
            }),
            options: PanelOptions::Stat(StatOptions {
                reduce_options: ReduceOptions {
                    calcs: vec!["lastNotNull".to_owned()],
                    fields: String::new(),
                    values: false,
                },
                color_mode: "background".to_owned(),
                graph_mode: "none".to_owned(),
                justify_mode: "auto".to_owned(),
                orientation: "auto".to_owned(),
                text_mode: "auto".to_owned(),
            }),
        }
    }

    /// Coloured bands showing a state over time, one lane per series.
    pub fn state_timeline(title: impl Into<String>) -> Self {
        PanelDraft {
            kind: PanelKind::StateTimeline,
            title: title.into(),
            description: String::new(),
            queries: Vec::new(),
            field_config: Some(FieldConfig {
                defaults: defaults(
                    "none",
                    "thresholds",
                    Some(CustomFieldConfig::StateTimeline(StateTimelineCustom {
                        fill_opacity: 80,
                        line_width: 0,
                    })),
                ),
                overrides: Vec::new(),
            }),
            options: PanelOptions::StateTimeline(StateTimelineOptions {
                show_value: "auto".to_owned(),
                merge_values: true,
                align_value: "left".to_owned(),
                row_height: 0.9,
                legend: legend(false),
                tooltip: tooltip(),
            }),
        }
    }

    /// Markdown text.
    pub fn text(title: impl Into<String>, markdown: impl Into<String>) -> Self {
        PanelDraft {
            kind: PanelKind::Text,
            title: title.into(),
            description: String::new(),
            queries: Vec::new(),
            field_config: None,
            options: PanelOptions::Text(TextOptions {
                mode: "markdown".to_owned(),
                content: markdown.into(),
            }),
        }
    }

    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    pub fn query(mut self, query: Query) -> Self {
        self.queries.push(query);
        self
    }

    pub fn queries(mut self, queries: impl IntoIterator<Item = Query>) -> Self {
        self.queries.extend(queries);
        self
    }

    fn defaults_mut(&mut self) -> Option<&mut FieldDefaults> {
        self.field_config.as_mut().map(|c| &mut c.defaults)
    }

    pub fn mapping(mut self, mapping: ValueMapping) -> Self {
        if let Some(d) = self.defaults_mut() {
            d.mappings.push(mapping);
        }
        self
    }

    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        if let Some(d) = self.defaults_mut() {
            d.thresholds = thresholds;
        }
        self
    }

    pub fn range(mut self, min: Option<f64>, max: Option<f64>) -> Self {
        if let Some(d) = self.defaults_mut() {
            d.min = min;
            d.max = max;
        }
        self
    }

    pub fn decimals(mut self, decimals: u32) -> Self {
        if let Some(d) = self.defaults_mut() {
            d.decimals = Some(decimals);
        }
        self
    }

    /// Draws the series whose display name matches `regex` below the axis
    /// (the usual in-up, out-down picture of a network interface).
    pub fn negative_y(mut self, regex: &str) -> Self {
        if let Some(config) = self.field_config.as_mut() {
            config.overrides.push(FieldOverride {
                matcher: OverrideMatcher {
                    id: "byRegexp".to_owned(),
                    options: regex.to_owned(),
                },
                properties: vec![OverrideProperty {
                    id: "custom.transform".to_owned(),
                    value: "negative-Y".to_owned(),
                }],
            });
            if let Some(CustomFieldConfig::Timeseries(custom)) = config.defaults.custom.as_mut() {
                // The axis must reach below zero for the negated series.
                custom.axis_soft_min = None;
            }
        }
        self
    }

    /// Stat panels: show each series' name with its value.
    pub fn show_names(mut self) -> Self {
        if let PanelOptions::Stat(options) = &mut self.options {
            options.text_mode = "value_and_name".to_owned();
        }
        self
    }
}

/// Builds a dashboard, placing panels left to right on the grid and
/// wrapping to a new line when a panel does not fit.
#[derive(Debug)]
pub struct DashboardBuilder {
    dashboard: Dashboard,
    datasource: Datasource,
    next_id: u32,
    x: u32,
    y: u32,
    line_height: u32,
}

impl DashboardBuilder {
    /// An empty dashboard whose `$datasource` variable picks a data source
    /// of type `datasource`.
    pub fn new(title: &str, uid: String, datasource: Datasource) -> Self {
        DashboardBuilder {
            dashboard: Dashboard {
                id: None,
                uid,
                title: title.to_owned(),
                description: String::new(),
                tags: Vec::new(),
                timezone: "browser".to_owned(),
                editable: true,
                graph_tooltip: 1,
                schema_version: SCHEMA_VERSION,
                version: 1,
                time: TimeRange {
                    from: "now-6h".to_owned(),
                    to: "now".to_owned(),
                },
                refresh: "1m".to_owned(),
                templating: Templating {
                    list: vec![Variable::datasource(datasource)],
                },
                annotations: Annotations {
                    list: vec![Annotation::built_in()],
                },
                links: Vec::new(),
                panels: Vec::new(),
            },
            datasource,
            next_id: 1,
            x: 0,
            y: 0,
            line_height: 0,
        }
    }

    /// A uid for a dashboard of this title and data source (see
    /// [`uid_from_title`]).
    pub fn uid_for(title: &str, datasource: Datasource) -> String {
        uid_from_title(title, datasource.uid_suffix())
    }

    pub fn description(&mut self, description: &str) -> &mut Self {
        self.dashboard.description = description.to_owned();
        self
    }

    pub fn tags(&mut self, tags: impl IntoIterator<Item = String>) -> &mut Self {
        for tag in tags {
            if !self.dashboard.tags.contains(&tag) {
                self.dashboard.tags.push(tag);
            }
        }
        self
    }

    pub fn refresh(&mut self, refresh: &str) -> &mut Self {
        self.dashboard.refresh = refresh.to_owned();
        self
    }

    pub fn variable(&mut self, variable: Variable) -> &mut Self {
        self.dashboard.templating.list.push(variable);
        self
    }

    /// A header link to the dashboards carrying `tag`.
    pub fn link_to_tag(&mut self, title: &str, tag: &str) -> &mut Self {
        self.dashboard.links.push(DashboardLink {
            title: title.to_owned(),
            kind: "dashboards".to_owned(),
            tags: vec![tag.to_owned()],
            as_dropdown: true,
            include_vars: false,
            keep_time: true,
        });
        self
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Ends the current line of panels; the next one starts below it.
    pub fn new_line(&mut self) -> &mut Self {
        self.y += self.line_height;
        self.x = 0;
        self.line_height = 0;
        self
    }

    /// A full-width, expanded row header on a line of its own.
    pub fn row(&mut self, title: impl Into<String>) -> &mut Self {
        self.new_line();
        let id = self.take_id();
        self.dashboard.panels.push(Panel {
            id,
            kind: PanelKind::Row,
            title: title.into(),
            description: String::new(),
            grid_pos: GridPos {
                x: 0,
                y: self.y,
                w: GRID_COLUMNS,
                h: 1,
            },
            datasource: None,
            targets: Vec::new(),
            field_config: None,
            options: None,
            collapsed: Some(false),
            panels: Some(Vec::new()),
        });
        self.y += 1;
        self
    }

    /// Places `draft` `width` columns wide (clamped to 1..=24) and `height`
    /// grid rows high (at least 1) after the previous panel, or at the start
    /// of the next line if it does not fit.
    pub fn panel(&mut self, draft: PanelDraft, width: u32, height: u32) -> &mut Self {
        let w = width.clamp(1, GRID_COLUMNS);
        let h = height.max(1);
        if self.x + w > GRID_COLUMNS {
            self.new_line();
        }
        let id = self.take_id();
        let datasource_ref = DatasourceRef::variable(self.datasource);
        let has_queries = !draft.queries.is_empty();
        let targets = draft
            .queries
            .into_iter()
            .zip(ref_ids())
            .map(|(query, ref_id)| query.into_target(ref_id, datasource_ref.clone()))
            .collect();
        self.dashboard.panels.push(Panel {
            id,
            kind: draft.kind,
            title: draft.title,
            description: draft.description,
            grid_pos: GridPos {
                x: self.x,
                y: self.y,
                w,
                h,
            },
            datasource: has_queries.then_some(datasource_ref),
            targets,
            field_config: draft.field_config,
            options: Some(draft.options),
            collapsed: None,
            panels: None,
        });
        self.x += w;
        self.line_height = self.line_height.max(h);
        self
    }

    pub fn build(self) -> Dashboard {
        self.dashboard
    }
}

/// `A`, `B`, ..., `Z`, `AA`, `AB`, ...: Grafana's refId sequence.
fn ref_ids() -> impl Iterator<Item = String> {
    (0u32..).map(|mut n| {
        let mut id = Vec::new();
        loop {
            id.push(b'A' + (n % 26) as u8);
            if n < 26 {
                break;
            }
            n = n / 26 - 1;
        }
        id.reverse();
        String::from_utf8_lossy(&id).into_owned()
    })
}

/// One query of a dashboard, with its template variables substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardQuery {
    pub panel_id: u32,
    pub panel_title: String,
    pub ref_id: String,
    pub datasource: Datasource,
    pub query: String,
}

/// Values for the variables Grafana substitutes in query text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substitutions {
    /// `$__interval` (InfluxQL `GROUP BY time(...)`).
    pub interval: String,
    /// `$__rate_interval` (PromQL range vectors).
    pub rate_interval: String,
    /// `$timeFilter` (an InfluxQL condition on `time`).
    pub time_filter: String,
    /// Dashboard variables by name (without `$`).
    pub variables: BTreeMap<String, String>,
}

impl Default for Substitutions {
    fn default() -> Self {
        Substitutions {
            interval: "1m".to_owned(),
            rate_interval: "5m".to_owned(),
            time_filter: "time >= now() - 1h".to_owned(),
            variables: BTreeMap::new(),
        }
    }
}

impl Substitutions {
    /// Defaults, with each of the dashboard's multi-value variables set to
    /// its `All` value (`.*`).
    pub fn for_dashboard(dashboard: &Dashboard) -> Self {
        let mut subs = Substitutions::default();
        for variable in &dashboard.templating.list {
            if let Some(all) = &variable.all_value {
                subs.variables.insert(variable.name.clone(), all.clone());
            }
        }
        subs
    }

    fn lookup(&self, name: &str) -> Option<&str> {
        match name {
            "__interval" => Some(&self.interval),
            "__rate_interval" => Some(&self.rate_interval),
            "timeFilter" => Some(&self.time_filter),
            other => self.variables.get(other).map(String::as_str),
        }
    }

    /// `text` with `$name` and `${name}` replaced, as Grafana does; unknown
    /// names are left as they are (Grafana leaves them too).
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
                match braced.find('}') {
                    Some(end) => (&braced[..end], end + 2),
                    None => ("", 0),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            };
            match self.lookup(name).filter(|_| !name.is_empty()) {
                Some(value) => {
                    out.push_str(value);
                    rest = &after[consumed..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

impl Dashboard {
    /// Every panel, rows' collapsed children included, in order.
    pub fn all_panels(&self) -> Vec<&Panel> {
        let mut all = Vec::new();
        for panel in &self.panels {
            all.push(panel);
            if let Some(children) = &panel.panels {
                all.extend(children.iter());
            }
        }
        all
    }

    /// The data source type the dashboard's `$datasource` variable picks.
    pub fn datasource(&self) -> Option<Datasource> {
        let variable = self
            .templating
            .list
            .iter()
            .find(|v| v.kind == VariableKind::Datasource && v.name == DATASOURCE_VARIABLE)?;
        [Datasource::Prometheus, Datasource::InfluxDb]
            .into_iter()
            .find(|d| d.plugin_id() == variable.query)
    }

    /// Every query of the dashboard, with `$__interval`,
    /// `$__rate_interval`, `$timeFilter` and the dashboard's variables
    /// substituted by [`Substitutions::for_dashboard`]: ready to send to
    /// Prometheus' `/api/v1/query_range` or InfluxDB's `/query`.
    pub fn queries(&self) -> Vec<DashboardQuery> {
        self.queries_with(&Substitutions::for_dashboard(self))
    }

    /// [`Dashboard::queries`] with chosen substitutions.
    pub fn queries_with(&self, substitutions: &Substitutions) -> Vec<DashboardQuery> {
        let mut out = Vec::new();
        for panel in self.all_panels() {
            for target in &panel.targets {
                out.push(DashboardQuery {
                    panel_id: panel.id,
                    panel_title: panel.title.clone(),
                    ref_id: target.ref_id().to_owned(),
                    datasource: match target {
                        Target::Prometheus(_) => Datasource::Prometheus,
                        Target::InfluxDb(_) => Datasource::InfluxDb,
                    },
                    query: substitutions.apply(target.text()),
                });
            }
        }
        out
    }

    /// The dashboard as pretty-printed JSON with a final newline, the form
    /// vigil writes to files.
    pub fn to_json(&self) -> serde_json::Result<String> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        Ok(text)
    }
}

#[cfg(test)]
pub(crate) mod schema {
    //! A checker for the fields Grafana's dashboard schema requires of the
    //! JSON vigil writes, run against every generated dashboard. It works on
    //! the JSON text, not the Rust types, so it checks what Grafana would
    //! read.

    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    /// Panel types Grafana ships that vigil may write.
    pub const PANEL_TYPES: &[&str] = &[
        "row",
        "timeseries",
        "stat",
        "state-timeline",
        "text",
        "table",
        "gauge",
        "bargauge",
    ];
    const VARIABLE_TYPES: &[&str] = &[
        "datasource",
        "query",
        "custom",
        "constant",
        "interval",
        "textbox",
        "adhoc",
    ];
    const MAPPING_TYPES: &[&str] = &["value", "range", "regex", "special"];

    fn is_int(v: Option<&Value>) -> bool {
        v.is_some_and(|v| v.is_u64())
    }

    fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
        v.get(key).and_then(Value::as_str)
    }

    /// Problems found in `dashboard` (empty: valid).
    pub fn validate(dashboard: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let mut err = |e: String| errors.push(e);
        let Some(top) = dashboard.as_object() else {
            return vec!["dashboard is not a JSON object".to_owned()];
        };

        match str_of(dashboard, "title") {
            Some(t) if !t.trim().is_empty() => {}
            _ => err("title: missing, not a string or empty".to_owned()),
        }
        match str_of(dashboard, "uid") {
            Some(uid)
                if !uid.is_empty()
                    && uid.len() <= super::MAX_UID_LEN
                    && uid
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {}
            other => err(format!(
                "uid: {other:?} is not 1-40 characters of [a-zA-Z0-9-_]"
            )),
        }
        match top.get("schemaVersion").and_then(Value::as_u64) {
            Some(v) if v >= 36 => {}
            other => err(format!("schemaVersion: {other:?} is not an integer >= 36")),
        }
        if !is_int(top.get("version")) {
            err("version: not a non-negative integer".to_owned());
        }
        if !top.get("editable").is_some_and(Value::is_boolean) {
            err("editable: not a boolean".to_owned());
        }
        match top.get("time") {
            Some(time) if str_of(time, "from").is_some() && str_of(time, "to").is_some() => {}
            _ => err("time: needs string `from` and `to`".to_owned()),
        }
        match top.get("refresh") {
            Some(Value::String(_)) | Some(Value::Bool(false)) => {}
            _ => err("refresh: not a string (or false)".to_owned()),
        }
        if !top
            .get("tags")
            .and_then(Value::as_array)
            .is_some_and(|tags| tags.iter().all(Value::is_string))
        {
            err("tags: not an array of strings".to_owned());
        }
        if str_of(dashboard, "timezone").is_none() {
            err("timezone: not a string".to_owned());
        }
        if top
            .get("id")
            .is_some_and(|id| !(id.is_null() || id.is_u64()))
        {
            err("id: neither null nor an integer".to_owned());
        }

        // Template variables; datasource variables by name -> plugin type.
        let mut datasource_vars = BTreeMap::new();
        let mut var_names = BTreeSet::new();
        match top
            .get("templating")
            .and_then(|t| t.get("list"))
            .and_then(Value::as_array)
        {
            None => err("templating.list: not an array".to_owned()),
            Some(list) => {
                for (i, var) in list.iter().enumerate() {
                    let name = str_of(var, "name").unwrap_or("");
                    if name.is_empty() {
                        err(format!("templating.list[{i}].name: missing or empty"));
                    } else if !var_names.insert(name.to_owned()) {
                        err(format!("templating.list[{i}].name: duplicate {name:?}"));
                    }
                    let kind = str_of(var, "type").unwrap_or("");
                    if !VARIABLE_TYPES.contains(&kind) {
                        err(format!("templating.list[{i}].type: unknown {kind:?}"));
                    }
                    if kind == "datasource" {
                        match str_of(var, "query") {
                            Some(plugin) if !plugin.is_empty() => {
                                datasource_vars.insert(name.to_owned(), plugin.to_owned());
                            }
                            _ => err(format!(
                                "templating.list[{i}].query: a datasource variable needs its plugin type"
                            )),
                        }
                    }
                }
                // Query variables refer to datasource variables too.
                for (i, var) in list.iter().enumerate() {
                    if let Some(ds) = var.get("datasource") {
                        check_datasource(
                            ds,
                            &datasource_vars,
                            &format!("templating.list[{i}].datasource"),
                            &mut err,
                        );
                    }
                }
            }
        }

        match top
            .get("annotations")
            .and_then(|a| a.get("list"))
            .and_then(Value::as_array)
        {
            None => err("annotations.list: not an array".to_owned()),
            Some(list) => {
                for (i, annotation) in list.iter().enumerate() {
                    let builtin = annotation
                        .get("datasource")
                        .is_some_and(|ds| str_of(ds, "type") == Some("grafana"));
                    if !builtin && let Some(ds) = annotation.get("datasource") {
                        check_datasource(
                            ds,
                            &datasource_vars,
                            &format!("annotations.list[{i}].datasource"),
                            &mut err,
                        );
                    }
                }
            }
        }

        let Some(panels) = top.get("panels").and_then(Value::as_array) else {
            err("panels: not an array".to_owned());
            return errors;
        };
        let mut ids = BTreeSet::new();
        let mut placed: Vec<(String, [u64; 4])> = Vec::new();
        let mut all: Vec<(String, &Value)> = Vec::new();
        for (i, panel) in panels.iter().enumerate() {
            all.push((format!("panels[{i}]"), panel));
            if let Some(children) = panel.get("panels").and_then(Value::as_array) {
                for (j, child) in children.iter().enumerate() {
                    all.push((format!("panels[{i}].panels[{j}]"), child));
                }
            }
        }
        for (path, panel) in &all {
            check_panel(path, panel, &datasource_vars, &mut ids, &mut err);
        }
        // Only the top level is laid out; a collapsed row's children are
        // placed when it is expanded.
        for (i, panel) in panels.iter().enumerate() {
            if let Some(rect) = grid_rect(panel) {
                for (other, r) in &placed {
                    let overlap = rect[0] < r[0] + r[2]
                        && r[0] < rect[0] + rect[2]
                        && rect[1] < r[1] + r[3]
                        && r[1] < rect[1] + rect[3];
                    if overlap {
                        err(format!("panels[{i}].gridPos overlaps {other}"));
                    }
                }
                placed.push((format!("panels[{i}]"), rect));
            }
        }
        errors
    }

    fn grid_rect(panel: &Value) -> Option<[u64; 4]> {
        let pos = panel.get("gridPos")?;
        let get = |k: &str| pos.get(k).and_then(Value::as_u64);
        Some([get("x")?, get("y")?, get("w")?, get("h")?])
    }

    fn check_datasource(
        ds: &Value,
        datasource_vars: &BTreeMap<String, String>,
        path: &str,
        err: &mut impl FnMut(String),
    ) {
        let (Some(kind), Some(uid)) = (str_of(ds, "type"), str_of(ds, "uid")) else {
            err(format!("{path}: needs string `type` and `uid`"));
            return;
        };
        let name = uid
            .strip_prefix("${")
            .and_then(|u| u.strip_suffix('}'))
            .or_else(|| uid.strip_prefix('$'));
        match name.and_then(|n| datasource_vars.get(n)) {
            None => err(format!(
                "{path}.uid: {uid:?} is not a datasource template variable"
            )),
            Some(plugin) if plugin != kind => err(format!(
                "{path}.type: {kind:?} but the variable picks {plugin:?}"
            )),
            Some(_) => {}
        }
    }

    fn check_panel(
        path: &str,
        panel: &Value,
        datasource_vars: &BTreeMap<String, String>,
        ids: &mut BTreeSet<u64>,
        err: &mut impl FnMut(String),
    ) {
        match panel.get("id").and_then(Value::as_u64) {
            None => err(format!("{path}.id: not a non-negative integer")),
            Some(id) if !ids.insert(id) => err(format!("{path}.id: duplicate id {id}")),
            Some(_) => {}
        }
        let kind = str_of(panel, "type").unwrap_or("");
        if !PANEL_TYPES.contains(&kind) {
            err(format!("{path}.type: unknown panel type {kind:?}"));
        }
        if str_of(panel, "title").is_none() {
            err(format!("{path}.title: not a string"));
        }
        let pos = panel.get("gridPos");
        let field = |k: &str| pos.and_then(|p| p.get(k)).and_then(Value::as_u64);
        match (field("x"), field("y"), field("w"), field("h")) {
            (Some(x), Some(_), Some(w), Some(h)) => {
                if w == 0 || h == 0 {
                    err(format!("{path}.gridPos: zero width or height"));
                }
                if x + w > u64::from(super::GRID_COLUMNS) {
                    err(format!(
                        "{path}.gridPos: x {x} + w {w} exceeds the 24-column grid"
                    ));
                }
            }
            _ => err(format!(
                "{path}.gridPos: needs non-negative integers x, y, w, h"
            )),
        }
        if kind == "row" {
            if !panel.get("panels").is_some_and(Value::is_array) {
                err(format!("{path}.panels: a row needs a panels array"));
            }
            return;
        }
        if kind == "text" {
            if panel
                .get("options")
                .and_then(|o| str_of(o, "content"))
                .is_none()
            {
                err(format!(
                    "{path}.options.content: a text panel needs content"
                ));
            }
            return;
        }
        let panel_ds = panel.get("datasource");
        match panel_ds {
            None => err(format!("{path}.datasource: missing")),
            Some(ds) => check_datasource(ds, datasource_vars, &format!("{path}.datasource"), err),
        }
        let panel_kind = panel_ds.and_then(|ds| str_of(ds, "type")).unwrap_or("");
        match panel.get("targets").and_then(Value::as_array) {
            None => err(format!("{path}.targets: not an array")),
            Some(targets) if targets.is_empty() => err(format!("{path}.targets: empty")),
            Some(targets) => {
                let mut ref_ids = BTreeSet::new();
                for (i, target) in targets.iter().enumerate() {
                    let tpath = format!("{path}.targets[{i}]");
                    match str_of(target, "refId") {
                        Some(r) if !r.is_empty() => {
                            if !ref_ids.insert(r.to_owned()) {
                                err(format!("{tpath}.refId: duplicate {r:?}"));
                            }
                        }
                        _ => err(format!("{tpath}.refId: missing or empty")),
                    }
                    let kind = match target.get("datasource") {
                        Some(ds) => {
                            check_datasource(
                                ds,
                                datasource_vars,
                                &format!("{tpath}.datasource"),
                                err,
                            );
                            str_of(ds, "type").unwrap_or("")
                        }
                        None => panel_kind,
                    };
                    match kind {
                        "prometheus" => {
                            if str_of(target, "expr").is_none_or(|e| e.trim().is_empty()) {
                                err(format!("{tpath}.expr: missing or empty"));
                            }
                        }
                        "influxdb" => {
                            if target.get("rawQuery") != Some(&Value::Bool(true)) {
                                err(format!("{tpath}.rawQuery: not true"));
                            }
                            if str_of(target, "query").is_none_or(|q| q.trim().is_empty()) {
                                err(format!("{tpath}.query: missing or empty"));
                            }
                        }
                        other => err(format!("{tpath}: unknown data source type {other:?}")),
                    }
                }
            }
        }
        match panel.get("fieldConfig") {
            None => err(format!("{path}.fieldConfig: missing")),
            Some(config) => {
                let Some(defaults) = config.get("defaults").and_then(Value::as_object) else {
                    err(format!("{path}.fieldConfig.defaults: not an object"));
                    return;
                };
                if defaults.get("unit").is_some_and(|u| !u.is_string()) {
                    err(format!("{path}.fieldConfig.defaults.unit: not a string"));
                }
                if !config.get("overrides").is_some_and(Value::is_array) {
                    err(format!("{path}.fieldConfig.overrides: not an array"));
                }
                if let Some(mappings) = defaults.get("mappings") {
                    let Some(mappings) = mappings.as_array() else {
                        err(format!(
                            "{path}.fieldConfig.defaults.mappings: not an array"
                        ));
                        return;
                    };
                    for (i, mapping) in mappings.iter().enumerate() {
                        let kind = str_of(mapping, "type").unwrap_or("");
                        if !MAPPING_TYPES.contains(&kind)
                            || !mapping.get("options").is_some_and(Value::is_object)
                        {
                            err(format!(
                                "{path}.fieldConfig.defaults.mappings[{i}]: needs a known type and an options object"
                            ));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::schema::validate;
    use super::*;
    use serde_json::{Value, json};

    fn sample() -> Dashboard {
        let mut b = DashboardBuilder::new(
            "Sample",
            DashboardBuilder::uid_for("Sample", Datasource::Prometheus),
            Datasource::Prometheus,
        );
        b.row("first");
        for i in 0..5 {
            b.panel(
                PanelDraft::timeseries(format!("p{i}"), "bps")
                    .query(Query::prometheus("up", "a"))
                    .query(Query::prometheus("up", "b")),
                10,
                8,
            );
        }
        b.panel(PanelDraft::text("t", "hello"), 24, 3);
        b.build()
    }

    fn json_of(d: &Dashboard) -> Value {
        serde_json::from_str(&d.to_json().expect("serialises")).expect("valid JSON")
    }

    fn panel_mut(v: &mut Value, i: usize) -> &mut Value {
        &mut v["panels"][i]
    }

    #[test]
    fn builder_output_is_valid() {
        let errors = validate(&json_of(&sample()));
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn builder_wraps_lines_and_numbers_everything() {
        let d = sample();
        let pos: Vec<(u32, u32, u32, u32)> = d
            .panels
            .iter()
            .map(|p| (p.grid_pos.x, p.grid_pos.y, p.grid_pos.w, p.grid_pos.h))
            .collect();
        assert_eq!(
            pos,
            vec![
                (0, 0, 24, 1),
                (0, 1, 10, 8),
                (10, 1, 10, 8),
                (0, 9, 10, 8),
                (10, 9, 10, 8),
                (0, 17, 10, 8),
                (0, 25, 24, 3),
            ]
        );
        let ids: Vec<u32> = d.panels.iter().map(|p| p.id).collect();
        assert_eq!(ids, (1..=7).collect::<Vec<_>>());
        let refs: Vec<&str> = d.panels[1].targets.iter().map(Target::ref_id).collect();
        assert_eq!(refs, ["A", "B"]);
    }

    #[test]
    fn ref_ids_follow_grafana() {
        let ids: Vec<String> = ref_ids().take(29).collect();
        assert_eq!(ids[0], "A");
        assert_eq!(ids[25], "Z");
        assert_eq!(ids[26], "AA");
        assert_eq!(ids[28], "AC");
    }

    #[test]
    fn uids_are_stable_short_and_distinct() {
        assert_eq!(
            uid_from_title("Lab flow: A → B", "prom"),
            "lab-flow-a-b-prom"
        );
        let long = "a very long dashboard title that goes on and on and on";
        let other = "a very long dashboard title that goes on and on and on!";
        for title in [long, other, "日本語", "", "---"] {
            let uid = uid_from_title(title, "influx");
            assert!(uid.len() <= MAX_UID_LEN, "{uid}");
            assert!(
                uid.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{uid}"
            );
            assert!(uid.ends_with("-influx"));
            assert_eq!(uid, uid_from_title(title, "influx"), "stable");
        }
        assert_ne!(uid_from_title(long, ""), uid_from_title(other, ""));
    }

    #[test]
    fn substitutions_replace_known_variables_only() {
        let mut subs = Substitutions::default();
        subs.variables.insert("plugin".to_owned(), ".*".to_owned());
        assert_eq!(
            subs.apply("rate(x{p=~\"$plugin\",q=\"$other\"}[$__rate_interval]) ${plugin} $"),
            "rate(x{p=~\".*\",q=\"$other\"}[5m]) .* $"
        );
        assert_eq!(
            subs.apply("WHERE $timeFilter GROUP BY time($__interval)"),
            "WHERE time >= now() - 1h GROUP BY time(1m)"
        );
        assert_eq!(subs.apply("${unclosed"), "${unclosed");
    }

    #[test]
    fn queries_lists_every_target() {
        let d = sample();
        let queries = d.queries();
        assert_eq!(queries.len(), 10);
        assert_eq!(queries[0].panel_title, "p0");
        assert_eq!(queries[1].ref_id, "B");
        assert_eq!(queries[0].datasource, Datasource::Prometheus);
        assert_eq!(d.datasource(), Some(Datasource::Prometheus));
    }

    // The validator must catch each kind of defect; each case breaks one
    // thing in a valid dashboard and expects an error mentioning it.
    fn expect_error(mutate: impl FnOnce(&mut Value), needle: &str) {
        let mut v = json_of(&sample());
        mutate(&mut v);
        let errors = validate(&v);
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "expected an error containing {needle:?}, got {errors:#?}"
        );
    }

    #[test]
    fn validator_catches_overlap() {
        expect_error(
            |v| panel_mut(v, 2)["gridPos"]["x"] = json!(5),
            "panels[2].gridPos overlaps panels[1]",
        );
    }

    #[test]
    fn validator_catches_duplicate_ids() {
        expect_error(|v| panel_mut(v, 3)["id"] = json!(1), "duplicate id 1");
    }

    #[test]
    fn validator_catches_bad_uids() {
        expect_error(|v| v["uid"] = json!("has space"), "uid");
        expect_error(|v| v["uid"] = json!("x".repeat(41)), "uid");
        expect_error(|v| v["uid"] = json!(""), "uid");
        expect_error(|v| v["uid"] = json!(7), "uid");
    }

    #[test]
    fn validator_catches_grid_overflow_and_bad_positions() {
        expect_error(
            |v| panel_mut(v, 6)["gridPos"]["x"] = json!(1),
            "exceeds the 24-column grid",
        );
        expect_error(
            |v| panel_mut(v, 1)["gridPos"]["w"] = json!(2.5),
            "panels[1].gridPos: needs",
        );
        expect_error(
            |v| panel_mut(v, 1)["gridPos"]["h"] = json!(0),
            "zero width or height",
        );
    }

    #[test]
    fn validator_catches_target_defects() {
        expect_error(
            |v| panel_mut(v, 1)["targets"][1]["refId"] = json!("A"),
            "duplicate \"A\"",
        );
        expect_error(
            |v| panel_mut(v, 1)["targets"][0]["expr"] = json!("  "),
            "panels[1].targets[0].expr",
        );
        expect_error(|v| panel_mut(v, 1)["targets"] = json!([]), "targets: empty");
    }

    #[test]
    fn validator_catches_unresolved_datasources() {
        expect_error(
            |v| panel_mut(v, 1)["datasource"]["uid"] = json!("${nope}"),
            "not a datasource template variable",
        );
        expect_error(
            |v| panel_mut(v, 2)["targets"][0]["datasource"]["type"] = json!("influxdb"),
            "but the variable picks",
        );
        expect_error(
            |v| v["templating"]["list"] = json!([]),
            "not a datasource template variable",
        );
    }

    #[test]
    fn validator_catches_top_level_defects() {
        expect_error(|v| v["title"] = json!(""), "title");
        expect_error(|v| v["schemaVersion"] = json!("39"), "schemaVersion");
        expect_error(
            |v| {
                if let Some(o) = v.as_object_mut() {
                    o.remove("time");
                }
            },
            "time",
        );
        expect_error(|v| v["tags"] = json!([1]), "tags");
        expect_error(|v| v["editable"] = json!("yes"), "editable");
        expect_error(
            |v| panel_mut(v, 1)["type"] = json!("graph2"),
            "unknown panel type",
        );
        expect_error(
            |v| panel_mut(v, 1)["fieldConfig"]["defaults"]["mappings"] = json!([{"type": "x"}]),
            "mappings[0]",
        );
    }

    #[test]
    fn validator_checks_influx_targets() {
        let mut b = DashboardBuilder::new("I", "i".to_owned(), Datasource::InfluxDb);
        b.panel(
            PanelDraft::timeseries("x", "short").query(Query::influxql(
                "SELECT mean(\"a\") FROM \"b\" WHERE $timeFilter GROUP BY time($__interval)",
                "$col",
            )),
            12,
            8,
        );
        let mut v = json_of(&b.build());
        assert!(validate(&v).is_empty(), "{:#?}", validate(&v));
        v["panels"][0]["targets"][0]["rawQuery"] = json!(false);
        assert!(validate(&v).iter().any(|e| e.contains("rawQuery")));
    }
}
