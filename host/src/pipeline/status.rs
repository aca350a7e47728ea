//! Polling status, as Panoptes reports it: every polling run, whatever its
//! outcome, also yields a `status` metrics group whose `polling_status`
//! gauge says why a device has data or not, so a dashboard can tell a dead
//! device from a wrong password from a broken plugin.
//!
//! The host derives the status from the run's outcome and what the SNMP
//! capability saw, so even a plugin that crashed or hung gets one.

use std::sync::Arc;

use crate::capabilities::snmp::{SnmpError, SnmpSummary};
use crate::capabilities::status::Missing;
use crate::model::{
    Datetime, Dimension, ErrorKind, Metric, MetricType, MetricValue, MetricsGroup, Resource,
    SCHEMA_VERSION,
};
use crate::plugin::StatusForm;
use crate::sandbox::{RunOutcome, RunOutput, TrapReason};

pub use vigil_core::status::{PollingStatus, STATUS_GROUP_TYPE, STATUS_METRIC};

/// Why the run ended the way it did, from the device's point of view.
///
/// `missing` is what the plugin reported it expected and did not get
/// (the `status` import): with groups that is `PARTIAL_METRIC_FAILURE`,
/// without any `MISSING_METRICS`, as in Panoptes.
pub fn classify(
    outcome: &RunOutcome,
    snmp: Option<&SnmpSummary>,
    missing: &Missing,
) -> PollingStatus {
    let snmp_failure = snmp
        .and_then(|s| s.last_error.as_ref())
        .map(from_snmp_error);
    match outcome {
        RunOutcome::Ok(RunOutput::Metrics(groups)) if groups.is_empty() => {
            snmp_failure.unwrap_or(PollingStatus::MissingMetrics)
        }
        // An error the plugin got past, a walk the agent cut short, or
        // metrics the plugin reported missing: some data is not there.
        RunOutcome::Ok(_)
            if snmp_failure.is_some()
                || missing.any()
                || snmp.is_some_and(|s| s.walks_cut_short > 0) =>
        {
            PollingStatus::PartialMetricFailure
        }
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

/// The status groups of one run of `plugin` on `resource`, in the forms
/// its `[status]` section asks for (see [`StatusForm`]): vigil's generic
/// `polling_status{plugin=...}` and/or Panoptes' dimensionless
/// `<measurement>_polling_status`.
pub fn status_groups(
    status: PollingStatus,
    plugin: &str,
    form: &StatusForm,
    resource: &Arc<Resource>,
    interval_seconds: u32,
    at: Datetime,
) -> Vec<MetricsGroup> {
    let group = |metric: &str, dimensions: Vec<Dimension>| MetricsGroup {
        group_type: STATUS_GROUP_TYPE.to_owned(),
        interval_seconds,
        creation_timestamp: at,
        schema_version: SCHEMA_VERSION.to_owned(),
        resource: Arc::clone(resource),
        dimensions,
        metrics: vec![Metric {
            name: metric.to_owned(),
            value: MetricValue::Signed(status.code()),
            type_: MetricType::Gauge,
            creation_timestamp: at,
        }],
    };
    let mut groups = Vec::with_capacity(2);
    if form.generic {
        // Several plugins poll one device; each has its own status series.
        groups.push(group(
            STATUS_METRIC,
            vec![Dimension {
                name: "plugin".to_owned(),
                value: plugin.to_owned(),
            }],
        ));
    }
    if let Some(metric) = &form.metric {
        groups.push(group(metric, Vec::new()));
    }
    groups
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

    fn groups(form: &StatusForm, status: PollingStatus) -> Vec<MetricsGroup> {
        status_groups(
            status,
            "snmp_interface_polling",
            form,
            &Arc::new(Resource::named("sw1", "127.0.0.1")),
            60,
            Datetime {
                seconds: 1,
                nanoseconds: 0,
            },
        )
    }

    fn group() -> MetricsGroup {
        groups(&StatusForm::default(), PollingStatus::Success).remove(0)
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
        let none = Missing::default();
        let deadline = RunOutcome::Trap(TrapReason::Deadline {
            limit: Duration::from_secs(1),
        });

        assert_eq!(classify(&ok, None, &none), PollingStatus::Success);
        assert_eq!(
            classify(&ok, Some(&summary(None)), &none),
            PollingStatus::Success
        );
        assert_eq!(
            classify(&ok, Some(&timeout), &none),
            PollingStatus::PartialMetricFailure
        );
        assert_eq!(classify(&empty, None, &none), PollingStatus::MissingMetrics);
        assert_eq!(
            classify(&empty, Some(&auth), &none),
            PollingStatus::AuthenticationFailure
        );
        assert_eq!(
            classify(&unreachable, Some(&timeout), &none),
            PollingStatus::Timeout
        );
        assert_eq!(
            classify(&unreachable, Some(&auth), &none),
            PollingStatus::AuthenticationFailure
        );
        assert_eq!(
            classify(&unreachable, None, &none),
            PollingStatus::NetworkFailure
        );
        assert_eq!(classify(&bug, None, &none), PollingStatus::InternalFailure);
        assert_eq!(
            classify(&deadline, None, &none),
            PollingStatus::InternalFailure
        );
        let waiting = SnmpSummary {
            in_flight: true,
            ..summary(None)
        };
        assert_eq!(
            classify(&deadline, Some(&waiting), &none),
            PollingStatus::Timeout
        );
    }

    #[test]
    fn reported_gaps_make_a_run_partial_or_missing() {
        let gaps = Missing {
            kept: vec!["bits_in of ifIndex 3".to_owned()],
            total: 1,
        };
        let ok = RunOutcome::Ok(RunOutput::Metrics(vec![group()]));
        let empty = RunOutcome::Ok(RunOutput::Metrics(Vec::new()));
        assert_eq!(
            classify(&ok, Some(&summary(None)), &gaps),
            PollingStatus::PartialMetricFailure
        );
        assert_eq!(classify(&empty, None, &gaps), PollingStatus::MissingMetrics);
    }

    #[test]
    fn status_groups_come_in_the_forms_asked_for() {
        let generic = groups(&StatusForm::default(), PollingStatus::Timeout);
        assert_eq!(generic.len(), 1);
        assert_eq!(generic[0].metrics[0].name, STATUS_METRIC);
        assert_eq!(generic[0].metrics[0].value, MetricValue::Signed(3));
        assert_eq!(generic[0].dimensions[0].value, "snmp_interface_polling");
        assert!(crate::sandbox::validate::valid_name(&generic[0].group_type));

        let panoptes = StatusForm {
            generic: false,
            metric: Some("interface_polling_status".to_owned()),
        };
        let only = groups(&panoptes, PollingStatus::PartialMetricFailure);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].group_type, "status");
        assert_eq!(only[0].metrics[0].name, "interface_polling_status");
        assert_eq!(only[0].metrics[0].value, MetricValue::Signed(4));
        assert_eq!(only[0].metrics[0].type_, MetricType::Gauge);
        assert!(only[0].dimensions.is_empty());

        let both = groups(
            &StatusForm {
                generic: true,
                ..panoptes
            },
            PollingStatus::Success,
        );
        let names: Vec<&str> = both.iter().map(|g| g.metrics[0].name.as_str()).collect();
        assert_eq!(names, [STATUS_METRIC, "interface_polling_status"]);
    }
}
