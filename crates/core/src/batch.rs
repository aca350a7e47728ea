//! What travels on the bus between collectors and sinks: metrics groups,
//! each with the plugin that produced it, so every sink can keep a budget
//! per plugin. Both buses (the embedded channel and Kafka) carry
//! [`Batch`]es.

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
