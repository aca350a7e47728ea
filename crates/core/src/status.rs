//! Panoptes' polling status vocabulary: the codes of the `polling_status`
//! gauge every polling run yields, shared by the pipeline that emits them
//! and the dashboards that map them back to words.

/// Panoptes' `DEVICE_METRICS_STATES`, with its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollingStatus {
    Success = 0,
    AuthenticationFailure = 1,
    NetworkFailure = 2,
    Timeout = 3,
    PartialMetricFailure = 4,
    InternalFailure = 5,
    MissingMetrics = 6,
    PingFailure = 7,
}

impl PollingStatus {
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn name(self) -> &'static str {
        match self {
            PollingStatus::Success => "success",
            PollingStatus::AuthenticationFailure => "authentication_failure",
            PollingStatus::NetworkFailure => "network_failure",
            PollingStatus::Timeout => "timeout",
            PollingStatus::PartialMetricFailure => "partial_metric_failure",
            PollingStatus::InternalFailure => "internal_failure",
            PollingStatus::MissingMetrics => "missing_metrics",
            PollingStatus::PingFailure => "ping_failure",
        }
    }
}

/// The metrics-group type of status groups.
pub const STATUS_GROUP_TYPE: &str = "status";
/// The gauge in a status group.
pub const STATUS_METRIC: &str = "polling_status";
