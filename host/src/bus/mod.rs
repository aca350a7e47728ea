//! The message bus: how metrics groups (and later resources, endpoint
//! events and findings) travel from the collectors to the sinks.
//!
//! vigil has two buses with the same contract — batches of
//! [`MetricsGroup`](crate::model::MetricsGroup)s, each with the plugin that
//! produced it ([`Batch`]), in order per series, nothing accepted is lost
//! short of a documented bound:
//!
//! * **The embedded bus** is the in-process bounded
//!   `tokio::sync::mpsc` channel the executor already publishes to
//!   ([`crate::pipeline::Executor::bus`]) and the sinks drain
//!   ([`crate::sinks::run_sinks`]). Its bound is back-pressure: a
//!   full channel makes the publishing run wait. One process collects and
//!   writes.
//! * **The networked bus** is Kafka ([`kafka`]): topics per site as in
//!   Panoptes (`<site>-resources`, `<site>-metrics`, `<site>-processed`,
//!   `<site>-events`, `<site>-findings`), Panoptes JSON payloads, an
//!   idempotent producer that never blocks polling
//!   ([`kafka::KafkaPublisher`], fed from the embedded bus by
//!   [`kafka::run_publisher`]), and consumer groups that commit offsets only
//!   after their sink accepted a batch ([`kafka::consume`]), so collectors
//!   and each kind of sink scale out as separate processes. The producing
//!   plugin rides in a `vigil-plugin` message header, next to the
//!   unchanged Panoptes JSON value, so consumers that ignore headers
//!   (Panoptes') read the same messages as before.

pub mod kafka;

use std::sync::Arc;

use crate::model::MetricsGroup;

/// The name of the plugin that produced a metrics group, shared by every
/// group of its run.
pub type PluginName = Arc<str>;

/// The producer of groups that came without one (a Kafka message from an
/// agent older than the `vigil-plugin` header, or a caller that did not
/// say).
pub const UNKNOWN_PLUGIN: &str = "";

/// Longest plugin name taken from a Kafka header; a longer (or non-UTF-8)
/// one is read as [`UNKNOWN_PLUGIN`]. Plugin names are manifest names,
/// far shorter.
pub const MAX_PLUGIN_NAME: usize = 256;

/// What travels on the bus: metrics groups, each with the plugin that
/// produced it (`plugins[i]` produced `groups[i]`), so the sinks can keep
/// a budget per plugin. A run's output is one batch of one plugin; a batch
/// a Kafka consumer read mixes plugins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    groups: Vec<MetricsGroup>,
    plugins: Vec<PluginName>,
}

impl Batch {
    /// `groups`, all produced by `plugin`.
    pub fn from_plugin(plugin: &str, groups: Vec<MetricsGroup>) -> Batch {
        let name = PluginName::from(plugin);
        Batch {
            plugins: vec![name; groups.len()],
            groups,
        }
    }

    pub fn push(&mut self, plugin: PluginName, group: MetricsGroup) {
        self.groups.push(group);
        self.plugins.push(plugin);
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn groups(&self) -> &[MetricsGroup] {
        &self.groups
    }

    pub fn plugins(&self) -> &[PluginName] {
        &self.plugins
    }

    /// Each group with its producer.
    pub fn iter(&self) -> impl Iterator<Item = (&PluginName, &MetricsGroup)> {
        self.plugins.iter().zip(&self.groups)
    }

    pub fn into_parts(self) -> (Vec<MetricsGroup>, Vec<PluginName>) {
        (self.groups, self.plugins)
    }
}

/// Groups of an unknown producer.
impl From<Vec<MetricsGroup>> for Batch {
    fn from(groups: Vec<MetricsGroup>) -> Batch {
        Batch::from_plugin(UNKNOWN_PLUGIN, groups)
    }
}
