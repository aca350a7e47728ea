//! Polling status, as Panoptes reports it: every polling run, whatever its
//! outcome, also yields a `status` metrics group whose `polling_status`
//! gauge says why a device has data or not, so a dashboard can tell a dead
//! device from a wrong password from a broken plugin.
//!
//! The host derives the status from the run's outcome and what the SNMP
//! capability saw, so even a plugin that crashed or hung gets one.

use std::sync::Arc;

use crate::capabilities::snmp::{SnmpError, SnmpSummary};
use crate::model::{
    Datetime, Dimension, ErrorKind, Metric, MetricType, MetricValue, MetricsGroup, Resource,
    SCHEMA_VERSION,
};
use crate::sandbox::{RunOutcome, RunOutput, TrapReason};

pub use vigil_core::status::{PollingStatus, STATUS_GROUP_TYPE, STATUS_METRIC};

/// Why the run ended the way it did, from the device's point of view.
pub fn classify(outcome: &RunOutcome, snmp: Option<&SnmpSummary>) -> PollingStatus {
    let snmp_failure = snmp
        .and_then(|s| s.last_error.as_ref())
        .map(from_snmp_error);
    match outcome {
        RunOutcome::Ok(RunOutput::Metrics(groups)) if groups.is_empty() => {
            snmp_failure.unwrap_or(PollingStatus::MissingMetrics)
        }
        RunOutcome::Ok(_) if snmp_failure.is_some() => PollingStatus::PartialMetricFailure,
        RunOutcome::Ok(_) => PollingStatus::Success,
        RunOutcome::PluginError(error) => snmp_failure.unwrap_or(match error.kind {
            ErrorKind::ResourceUnreachable => PollingStatus::NetworkFailure,
            ErrorKind::BadDeviceData => PollingStatus::MissingMetrics,
            ErrorKind::PluginBug | ErrorKind::Configuration => PollingStatus::InternalFailure,
        }),
        // A run that hit its deadline while waiting on the device timed
        // out on the device, not in the plugin.
        RunOutcome::Trap(TrapReason::Deadline { .. })
            if snmp.is_some_and(|s| s.in_flight || s.timeouts > 0) =>
        {
            PollingStatus::Timeout
        }
        RunOutcome::Trap(_) | RunOutcome::OutputRejected(_) | RunOutcome::HostFailure(_) => {
            PollingStatus::InternalFailure
        }
    }
}

fn from_snmp_error(error: &SnmpError) -> PollingStatus {
    match error {
        SnmpError::Timeout(_) => PollingStatus::Timeout,
        SnmpError::AuthenticationFailed(_) => PollingStatus::AuthenticationFailure,
        SnmpError::AgentError(_) | SnmpError::MalformedResponse(_) => PollingStatus::MissingMetrics,
        SnmpError::NotGranted(_) | SnmpError::QuotaExceeded(_) | SnmpError::InvalidRequest(_) => {
            PollingStatus::InternalFailure
        }
    }
}

/// The status group of one run of `plugin` on `resource`.
pub fn status_group(
    status: PollingStatus,
    plugin: &str,
    resource: &Arc<Resource>,
    interval_seconds: u32,
    at: Datetime,
) -> MetricsGroup {
    MetricsGroup {
        group_type: STATUS_GROUP_TYPE.to_owned(),
        interval_seconds,
        creation_timestamp: at,
        schema_version: SCHEMA_VERSION.to_owned(),
        resource: Arc::clone(resource),
        // Several plugins poll one device; each has its own status series.
        dimensions: vec![Dimension {
            name: "plugin".to_owned(),
            value: plugin.to_owned(),
        }],
        metrics: vec![Metric {
            name: STATUS_METRIC.to_owned(),
            value: MetricValue::Signed(status.code()),
            type_: MetricType::Gauge,
            creation_timestamp: at,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PluginError;
    use std::time::Duration;

    fn summary(error: Option<SnmpError>) -> SnmpSummary {
        SnmpSummary {
            device: "sw1 (127.0.0.1:161)".to_owned(),
            last_error: error,
            ..SnmpSummary::default()
        }
    }

    fn group() -> MetricsGroup {
        status_group(
            PollingStatus::Success,
            "p",
            &Arc::new(Resource::named("sw1", "127.0.0.1")),
            60,
            Datetime {
                seconds: 1,
                nanoseconds: 0,
            },
        )
    }

    #[test]
    fn outcomes_map_to_panoptes_states() {
        let ok = RunOutcome::Ok(RunOutput::Metrics(vec![group()]));
        let empty = RunOutcome::Ok(RunOutput::Metrics(Vec::new()));
        let timeout = summary(Some(SnmpError::Timeout("x".into())));
        let auth = summary(Some(SnmpError::AuthenticationFailed("x".into())));
        let unreachable = RunOutcome::PluginError(PluginError {
            kind: ErrorKind::ResourceUnreachable,
            message: "x".into(),
        });
        let bug = RunOutcome::PluginError(PluginError {
            kind: ErrorKind::PluginBug,
            message: "x".into(),
        });
        let deadline = RunOutcome::Trap(TrapReason::Deadline {
            limit: Duration::from_secs(1),
        });

        assert_eq!(classify(&ok, None), PollingStatus::Success);
        assert_eq!(classify(&ok, Some(&summary(None))), PollingStatus::Success);
        assert_eq!(
            classify(&ok, Some(&timeout)),
            PollingStatus::PartialMetricFailure
        );
        assert_eq!(classify(&empty, None), PollingStatus::MissingMetrics);
        assert_eq!(
            classify(&empty, Some(&auth)),
            PollingStatus::AuthenticationFailure
        );
        assert_eq!(
            classify(&unreachable, Some(&timeout)),
            PollingStatus::Timeout
        );
        assert_eq!(
            classify(&unreachable, Some(&auth)),
            PollingStatus::AuthenticationFailure
        );
        assert_eq!(classify(&unreachable, None), PollingStatus::NetworkFailure);
        assert_eq!(classify(&bug, None), PollingStatus::InternalFailure);
        assert_eq!(classify(&deadline, None), PollingStatus::InternalFailure);
        let waiting = SnmpSummary {
            in_flight: true,
            ..summary(None)
        };
        assert_eq!(classify(&deadline, Some(&waiting)), PollingStatus::Timeout);
    }

    #[test]
    fn status_groups_are_valid_gauges() {
        let group = status_group(
            PollingStatus::Timeout,
            "snmp_interface_polling",
            &Arc::new(Resource::named("sw1", "127.0.0.1")),
            60,
            Datetime {
                seconds: 1,
                nanoseconds: 0,
            },
        );
        assert_eq!(group.metrics[0].value, MetricValue::Signed(3));
        assert_eq!(group.dimensions[0].value, "snmp_interface_polling");
        assert!(crate::sandbox::validate::valid_name(&group.group_type));
    }
}
