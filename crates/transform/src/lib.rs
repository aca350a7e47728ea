//! The pipeline's transform stage: turns the counters a plugin's
//! `[transforms]` names into per-second rates (Panoptes'
//! `rate:<group type>:<metric,...>`), keeping the last sample of every
//! series. See [`rate`] for wrap, reset and gap handling.
//!
//! As in Panoptes, a transformed metric becomes a gauge, and a sample that
//! yields no rate (the first, after a reset or a gap) is left out of the
//! group; a group left with no metrics is dropped.

pub mod rate;

use std::sync::Mutex;

use futures_util::future::BoxFuture;

pub use rate::CounterSample;
use rate::{CounterWidth, RateOutcome, RateTracker};
use vigil_core::model::{Metric, MetricType, MetricValue, MetricsGroup};

/// A `[transforms]` entry of a plugin's ini: `name = rate:<group
/// type>:<metric>,<metric>...` turns those counters of those groups into
/// per-second rates (the plugin loader parses and checks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateTransform {
    pub name: String,
    pub group_type: String,
    pub metrics: Vec<String>,
}

/// Series whose last sample is kept, at most (about 100 bytes each).
pub const DEFAULT_SERIES_CAPACITY: usize = 2_000_000;

/// Counts of what the transform stage did, for status and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransformStats {
    pub rates: u64,
    pub wraps: u64,
    pub resets: u64,
    pub gaps: u64,
    /// First samples, stale samples and non-integer counters: no rate.
    pub withheld: u64,
}

pub use vigil_core::BackendError;

/// Where counter samples live when agents share a site, so any agent can
/// continue any series. Declared here, by the transform that uses it; the
/// Redis backend implements it (`vigil_redis::shared::RedisRates`).
pub trait RateState: Send + Sync + 'static {
    /// The last sample of each series (`None` for an unknown one), in order.
    fn load<'a>(
        &'a self,
        series: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<CounterSample>>, BackendError>>;
    /// Records samples, each kept for `keep` (older ones would be gaps).
    fn store<'a>(
        &'a self,
        samples: &'a [(String, CounterSample)],
        keep: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
}

pub struct RateTransformer {
    tracker: Mutex<RateTracker>,
    /// Where counter state lives when agents share a site; the local
    /// tracker is then the fallback while it is unreachable.
    shared: Option<Box<dyn RateState>>,
}

impl Default for RateTransformer {
    fn default() -> Self {
        RateTransformer::new(DEFAULT_SERIES_CAPACITY)
    }
}

/// Separates key parts; cannot appear in names and is unlikely in values.
const SEP: char = '\u{1f}';

impl RateTransformer {
    pub fn new(capacity: usize) -> RateTransformer {
        RateTransformer {
            tracker: Mutex::new(RateTracker::new(capacity)),
            shared: None,
        }
    }

    /// A transformer whose counter state lives in Redis, so any agent can
    /// continue any series and a restart loses nothing.
    pub fn shared(capacity: usize, state: impl RateState) -> RateTransformer {
        RateTransformer {
            shared: Some(Box::new(state)),
            ..RateTransformer::new(capacity)
        }
    }

    /// [`RateTransformer::apply`], with the counter state in Redis when
    /// the transformer is shared (falling back to local state when Redis
    /// cannot be reached).
    pub async fn apply_async(
        &self,
        plugin: &str,
        transforms: &[RateTransform],
        groups: &mut Vec<MetricsGroup>,
    ) -> TransformStats {
        let Some(shared) = &self.shared else {
            return self.apply(plugin, transforms, groups);
        };
        if transforms.is_empty() {
            return TransformStats::default();
        }
        // Every counter to transform: (group, metric) positions and keys.
        let mut targets = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let Some(transform) = transforms.iter().find(|t| t.group_type == group.group_type)
            else {
                continue;
            };
            let series = series_prefix(plugin, group);
            for (m, metric) in group.metrics.iter().enumerate() {
                if transform.metrics.contains(&metric.name) {
                    let key = format!("{series}{SEP}{}", metric.name);
                    targets.push((g, m, sha256_hex(&key)));
                }
            }
        }
        let keys: Vec<String> = targets.iter().map(|(_, _, k)| k.clone()).collect();
        let previous = match shared.load(&keys).await {
            Ok(previous) => previous,
            Err(e) => {
                tracing::warn!(error = %e, "rate state unreachable in redis; using local state");
                return self.apply(plugin, transforms, groups);
            }
        };
        let mut stats = TransformStats::default();
        let mut updates = Vec::new();
        let mut longest_interval = 1.0f64;
        let mut drop: Vec<(usize, usize)> = Vec::new();
        for ((g, m, key), previous) in targets.into_iter().zip(previous) {
            let group = &mut groups[g];
            let interval = f64::from(group.interval_seconds.max(1));
            longest_interval = longest_interval.max(interval);
            let metric = &mut group.metrics[m];
            let Some(current) = counter_sample(metric) else {
                stats.withheld += 1;
                drop.push((g, m));
                continue;
            };
            let outcome = rate::rate(
                previous,
                current,
                interval,
                CounterWidth::Unknown,
                RateTracker::DEFAULT_MAX_GAP_INTERVALS,
            );
            if outcome != RateOutcome::Stale {
                updates.push((key, current));
            }
            count(&mut stats, outcome);
            match outcome.rate() {
                Some(rate) => {
                    metric.value = MetricValue::Float(rate);
                    metric.type_ = MetricType::Gauge;
                }
                None => drop.push((g, m)),
            }
        }
        let keep = std::time::Duration::from_secs_f64(
            longest_interval * (RateTracker::DEFAULT_MAX_GAP_INTERVALS + 1.0),
        );
        if let Err(e) = shared.store(&updates, keep).await {
            tracing::warn!(error = %e, "could not save rate state in redis");
        }
        // Remove withheld metrics back to front so positions stay valid.
        drop.sort_unstable();
        for (g, m) in drop.into_iter().rev() {
            groups[g].metrics.remove(m);
        }
        groups.retain(|g| !g.metrics.is_empty());
        stats
    }

    /// Applies `transforms` to `groups` in place.
    /// `plugin` is part of every series key: two plugins that happen to
    /// emit the same group for the same resource never share counter state.
    pub fn apply(
        &self,
        plugin: &str,
        transforms: &[RateTransform],
        groups: &mut Vec<MetricsGroup>,
    ) -> TransformStats {
        let mut stats = TransformStats::default();
        if transforms.is_empty() {
            return stats;
        }
        let mut tracker = self
            .tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for group in groups.iter_mut() {
            let Some(transform) = transforms.iter().find(|t| t.group_type == group.group_type)
            else {
                continue;
            };
            let series = series_prefix(plugin, group);
            let interval = f64::from(group.interval_seconds.max(1));
            group.metrics.retain_mut(|metric| {
                if !transform.metrics.contains(&metric.name) {
                    return true;
                }
                let Some(sample) = counter_sample(metric) else {
                    stats.withheld += 1;
                    return false;
                };
                let key = format!("{series}{SEP}{}", metric.name);
                let outcome = tracker.observe(&key, sample, interval, CounterWidth::Unknown);
                count(&mut stats, outcome);
                match outcome.rate() {
                    Some(rate) => {
                        metric.value = MetricValue::Float(rate);
                        metric.type_ = MetricType::Gauge;
                        true
                    }
                    None => false,
                }
            });
        }
        groups.retain(|g| !g.metrics.is_empty());
        stats
    }

    /// Forgets every series of `resource_id` (it expired).
    pub fn forget_resource(&self, resource_id: &str) -> usize {
        let mut tracker = self
            .tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tracker.forget_prefix(&format!("{resource_id}{SEP}"))
    }

    pub fn series(&self) -> usize {
        self.tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

/// A counter metric as a sample; `None` for values no counter can have
/// (negative, or not an integer).
fn counter_sample(metric: &Metric) -> Option<CounterSample> {
    let value = match metric.value {
        MetricValue::Unsigned(v) => v,
        MetricValue::Signed(v) => u64::try_from(v).ok()?,
        MetricValue::Float(_) => return None,
    };
    Some(CounterSample {
        value,
        at: metric.creation_timestamp.as_seconds(),
    })
}

fn count(stats: &mut TransformStats, outcome: RateOutcome) {
    match outcome {
        RateOutcome::Rate(_) => stats.rates += 1,
        RateOutcome::Wrapped(_) => stats.wraps += 1,
        RateOutcome::Reset => stats.resets += 1,
        RateOutcome::Gap => stats.gaps += 1,
        RateOutcome::First | RateOutcome::Stale => stats.withheld += 1,
    }
}

/// Series keys carry dimension values of any length: Redis gets a digest.
fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// `resource \x1f plugin \x1f group type \x1f sorted dimensions`.
fn series_prefix(plugin: &str, group: &MetricsGroup) -> String {
    let mut dimensions: Vec<(&str, &str)> = group
        .dimensions
        .iter()
        .map(|d| (d.name.as_str(), d.value.as_str()))
        .collect();
    dimensions.sort_unstable();
    let mut key = format!(
        "{}{SEP}{plugin}{SEP}{}",
        group.resource.id, group.group_type
    );
    for (name, value) in dimensions {
        key.push(SEP);
        key.push_str(name);
        key.push('=');
        key.push_str(value);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::model::{Datetime, Dimension, Metric, Resource};

    fn group(bits_in: u64, errors: u64, at: u64) -> MetricsGroup {
        let metric = |name: &str, value: u64| Metric {
            name: name.into(),
            value: MetricValue::Unsigned(value),
            type_: MetricType::Counter,
            creation_timestamp: Datetime {
                seconds: at,
                nanoseconds: 0,
            },
        };
        MetricsGroup {
            group_type: "interface".into(),
            interval_seconds: 10,
            creation_timestamp: Datetime {
                seconds: at,
                nanoseconds: 0,
            },
            schema_version: "0.2".into(),
            resource: Resource::named("sw1", "127.0.0.1").into(),
            dimensions: vec![Dimension {
                name: "interface_name".into(),
                value: "xe-0/0/0".into(),
            }],
            metrics: vec![
                metric("bits_in", bits_in),
                metric("error_packets_in", errors),
            ],
        }
    }

    #[test]
    fn rates_replace_counters_and_first_samples_are_withheld() {
        let transformer = RateTransformer::new(100);
        let transforms = vec![RateTransform {
            name: "r".into(),
            group_type: "interface".into(),
            metrics: vec!["bits_in".into()],
        }];

        let mut first = vec![group(1_000, 7, 100)];
        let stats = transformer.apply("p", &transforms, &mut first);
        assert_eq!(stats.withheld, 1);
        // The untransformed counter passes through; the group survives.
        assert_eq!(
            first[0]
                .metrics
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            vec!["error_packets_in"]
        );

        let mut second = vec![group(6_000, 9, 110)];
        transformer.apply("p", &transforms, &mut second);
        let bits = second[0]
            .metrics
            .iter()
            .find(|m| m.name == "bits_in")
            .expect("rate");
        assert_eq!(
            (bits.value, bits.type_),
            (MetricValue::Float(500.0), MetricType::Gauge)
        );

        // A restarted agent: no spike, the group carries only what is valid.
        let mut reset = vec![group(10, 9, 120)];
        assert_eq!(transformer.apply("p", &transforms, &mut reset).resets, 1);
        // Another plugin's identical series is independent: a first sample.
        let mut other = vec![group(50_000, 9, 120)];
        assert_eq!(transformer.apply("q", &transforms, &mut other).withheld, 1);
        assert!(reset[0].metrics.iter().all(|m| m.name != "bits_in"));

        assert_eq!(transformer.forget_resource("sw1"), 2);
        assert_eq!(transformer.series(), 0);
    }

    #[test]
    fn a_group_left_empty_is_dropped() {
        let transformer = RateTransformer::new(100);
        let transforms = vec![RateTransform {
            name: "r".into(),
            group_type: "interface".into(),
            metrics: vec!["bits_in".into(), "error_packets_in".into()],
        }];
        let mut groups = vec![group(1, 1, 100)];
        transformer.apply("p", &transforms, &mut groups);
        assert!(groups.is_empty());
    }
}
