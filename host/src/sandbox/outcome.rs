//! How a run ended. Every run ends in exactly one [`RunOutcome`]; the host
//! records it and carries on, whatever the plugin did.

use std::fmt;
use std::time::Duration;

use crate::capabilities::log::LogLine;
use crate::model::{Analysis, EnrichmentGroup, MetricsGroup, PluginError, Resource};
use crate::plugin::PluginKind;
use crate::sandbox::wit;

/// What a plugin sent, as lifted out of the sandbox (the generated WIT
/// types): checked by [`super::validate`], then converted by move into a
/// [`RunOutput`].
#[derive(Debug, Clone)]
pub enum SentOutput {
    Resources(Vec<wit::Resource>),
    Enrichments(Vec<wit::EnrichmentGroup>),
    Metrics(Vec<wit::MetricsGroup>),
    Analysis(wit::Analysis),
    Endpoints(Vec<vigil_wit::wit_endpoints::TableSnapshot>),
}

/// What a successful run returned, by plugin kind, in vigil's domain model.
#[derive(Debug, Clone)]
pub enum RunOutput {
    Resources(Vec<Resource>),
    Enrichments(Vec<EnrichmentGroup>),
    Metrics(Vec<MetricsGroup>),
    Analysis(Analysis),
    /// Address-table snapshots (endpoints plugins), normalised by the
    /// snapshot differ when the pipeline compares them.
    Endpoints(Vec<vigil_endpoints::snapshot::TableSnapshot>),
}

#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// The plugin returned data that passed every check.
    Ok(RunOutput),
    /// The plugin returned an error of its own.
    PluginError(PluginError),
    /// The sandbox stopped the plugin.
    Trap(TrapReason),
    /// The plugin returned, but its output was refused.
    OutputRejected(RejectReason),
    /// The host could not run the plugin (not the plugin's fault), e.g. the
    /// instance pool is exhausted.
    HostFailure(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrapReason {
    /// The wall-clock deadline passed.
    Deadline { limit: Duration },
    /// The fuel budget ran out.
    OutOfFuel { limit: u64 },
    /// The plugin tried to grow its linear memory past the limit.
    MemoryLimit { requested: u64, limit: u64 },
    /// The plugin tried to grow a table past the limit.
    TableLimit { requested: u64, limit: u64 },
    /// The wasm call stack overflowed (unbounded recursion).
    StackOverflow,
    /// The plugin panicked or hit `unreachable`; the panic message when the
    /// plugin printed one.
    Panic { message: Option<String> },
    /// The plugin made more host-import calls than its quota.
    HostCallQuota { limit: u64 },
    /// A host import panicked while serving the plugin (a host bug, or a
    /// library that panics on input the host failed to validate). The run
    /// ends here; the host and every other run carry on.
    HostPanic(String),
    /// Any other trap (out-of-bounds access, bad conversion...).
    Fault(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RejectReason {
    /// The output's encoded size is over `[sandbox] max_output`.
    TooLarge { bytes: u64, limit: u64 },
    /// Copying the output out of the sandbox was stopped at `[sandbox]
    /// max_output` bytes (strings and lists are counted as they are lifted,
    /// so aliased buffers cannot multiply what the host allocates).
    LiftLimit { limit: u64 },
    /// The output breaks the schema (bad names, wrong resource, invalid
    /// UTF-8, non-finite numbers...).
    Invalid(String),
}

impl RunOutcome {
    /// A stable label for counting outcomes (`ok`, `plugin_error`,
    /// `trap.deadline`, `rejected.too_large`...).
    pub fn label(&self) -> &'static str {
        match self {
            RunOutcome::Ok(_) => "ok",
            RunOutcome::PluginError(_) => "plugin_error",
            RunOutcome::Trap(reason) => reason.label(),
            RunOutcome::OutputRejected(
                RejectReason::TooLarge { .. } | RejectReason::LiftLimit { .. },
            ) => "rejected.too_large",
            RunOutcome::OutputRejected(RejectReason::Invalid(_)) => "rejected.invalid",
            RunOutcome::HostFailure(_) => "host_failure",
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, RunOutcome::Ok(_))
    }
}

impl TrapReason {
    pub fn label(&self) -> &'static str {
        match self {
            TrapReason::Deadline { .. } => "trap.deadline",
            TrapReason::OutOfFuel { .. } => "trap.out_of_fuel",
            TrapReason::MemoryLimit { .. } => "trap.memory_limit",
            TrapReason::TableLimit { .. } => "trap.table_limit",
            TrapReason::StackOverflow => "trap.stack_overflow",
            TrapReason::Panic { .. } => "trap.panic",
            TrapReason::HostCallQuota { .. } => "trap.host_call_quota",
            TrapReason::HostPanic(_) => "trap.host_panic",
            TrapReason::Fault(_) => "trap.fault",
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunOutcome::Ok(output) => write!(f, "ok ({})", output.summary()),
            RunOutcome::PluginError(e) => write!(f, "plugin error ({:?}): {}", e.kind, e.message),
            RunOutcome::Trap(reason) => write!(f, "trap: {reason}"),
            RunOutcome::OutputRejected(reason) => write!(f, "output rejected: {reason}"),
            RunOutcome::HostFailure(message) => write!(f, "host failure: {message}"),
        }
    }
}

impl fmt::Display for TrapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrapReason::Deadline { limit } => write!(f, "deadline of {limit:?} exceeded"),
            TrapReason::OutOfFuel { limit } => write!(f, "out of fuel (budget {limit})"),
            TrapReason::MemoryLimit { requested, limit } => {
                write!(
                    f,
                    "memory limit: asked for {requested} bytes, limit {limit}"
                )
            }
            TrapReason::TableLimit { requested, limit } => {
                write!(
                    f,
                    "table limit: asked for {requested} elements, limit {limit}"
                )
            }
            TrapReason::StackOverflow => f.write_str("stack overflow"),
            TrapReason::Panic { message: Some(m) } => write!(f, "panic: {m}"),
            TrapReason::Panic { message: None } => f.write_str("panic (unreachable executed)"),
            TrapReason::HostCallQuota { limit } => {
                write!(f, "host-call quota of {limit} calls exceeded")
            }
            TrapReason::HostPanic(m) => write!(f, "a host call panicked: {m}"),
            TrapReason::Fault(m) => write!(f, "fault: {m}"),
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::TooLarge { bytes, limit } => {
                write!(f, "too large: {bytes} bytes, limit {limit}")
            }
            RejectReason::LiftLimit { limit } => write!(
                f,
                "too large: copying it out of the sandbox passed the limit of {limit} bytes"
            ),
            RejectReason::Invalid(m) => write!(f, "invalid: {m}"),
        }
    }
}

impl RunOutput {
    pub fn summary(&self) -> String {
        match self {
            RunOutput::Resources(r) => format!("{} resources", r.len()),
            RunOutput::Enrichments(e) => format!("{} enrichment groups", e.len()),
            RunOutput::Metrics(m) => format!("{} metrics groups", m.len()),
            RunOutput::Analysis(a) => format!("{} findings", a.findings.len()),
            RunOutput::Endpoints(t) => format!(
                "{} address tables, {} entries",
                t.len(),
                t.iter().map(|t| t.entries.len()).sum::<usize>()
            ),
        }
    }
}

/// Everything the host learned from one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub plugin: String,
    pub kind: PluginKind,
    pub resource_id: Option<String>,
    pub outcome: RunOutcome,
    pub duration: Duration,
    pub fuel_consumed: u64,
    /// Largest linear memory the instance reached, in bytes.
    pub peak_memory: u64,
    pub host_calls: u64,
    /// Lines the plugin logged and the host kept.
    pub log: Vec<LogLine>,
    /// Lines dropped by the log quota.
    pub log_dropped: u64,
    /// What the plugin wrote to stderr (capped), e.g. a panic message.
    pub stderr: String,
    /// What SNMP did, when the plugin was granted it.
    pub snmp: Option<crate::capabilities::snmp::SnmpSummary>,
    /// What the plugin reported it could not collect (`status` import).
    pub missing: crate::capabilities::status::Missing,
}
