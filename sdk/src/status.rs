//! Telling the host what a run could not collect.
//!
//! A polling plugin that emits what it could and reports the rest here
//! gets Panoptes' `PARTIAL_METRIC_FAILURE` status (or `MISSING_METRICS`
//! when it emits nothing), and the run record names what was missing.

use crate::__private::vigil::plugin::status as host;

/// Reports expected metrics that this run did not get, one short
/// description each (`ifXTable`, `bits_in of ifIndex 12`). The host keeps
/// the first 32 of a run and counts the rest; an empty list does nothing.
pub fn missing_metrics<S: AsRef<str>>(what: &[S]) {
    if what.is_empty() {
        return;
    }
    let owned: Vec<String> = what.iter().map(|s| s.as_ref().to_owned()).collect();
    host::missing_metrics(&owned);
}
