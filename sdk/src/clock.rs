//! Time as the host sees it.

use crate::__private::vigil::plugin::clock as host;
use crate::Datetime;

/// The host's wall clock (UTC).
pub fn now() -> Datetime {
    host::now()
}

/// When this run was scheduled to start: stamp metrics with this so series
/// stay aligned to the polling interval.
pub fn scheduled() -> Datetime {
    host::scheduled()
}

/// The plugin's schedule interval in seconds: what a metrics group's
/// `interval_seconds` should say.
pub fn interval_seconds() -> u32 {
    host::interval_seconds()
}
