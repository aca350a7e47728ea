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

#[cfg(feature = "kafka")]
pub use vigil_kafka as kafka;

pub use vigil_core::batch::{Batch, MAX_PLUGIN_NAME, PluginName, UNKNOWN_PLUGIN};
