//! `vigil:plugin/status`: what a run could not collect, as the plugin
//! judges it.
//!
//! The host classifies a polling run from its outcome and its SNMP errors;
//! a run that walked everything without an error but found a device's
//! 64-bit counters absent for some interfaces would otherwise count as a
//! success. The plugin reports such gaps here and the pipeline turns them
//! into `PARTIAL_METRIC_FAILURE` / `MISSING_METRICS` and a run-record
//! detail naming them.
//!
//! Bounds: the first [`MAX_KEPT`] descriptions of a run are kept, each cut
//! to [`MAX_DESCRIPTION_BYTES`] (so at most 6.4 KB per run, whatever the
//! plugin sends); every further one is only counted. Each call costs one
//! host call from the run's budget like every other import.

use vigil_wit::HostCalls;
use vigil_wit::vigil::plugin::status::Host;
use wasmtime::component::{HasData, Linker};

/// Descriptions kept per run.
pub const MAX_KEPT: usize = 32;
/// Longest description kept, in bytes (cut on a character boundary).
pub const MAX_DESCRIPTION_BYTES: usize = 200;

/// What a run reported missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    /// The first [`MAX_KEPT`] descriptions, in the order reported.
    pub kept: Vec<String>,
    /// Every description reported, kept or not.
    pub total: u64,
}

impl Missing {
    /// Whether the plugin reported anything missing.
    pub fn any(&self) -> bool {
        self.total > 0
    }

    /// A one-line summary for a run record: the kept descriptions, and how
    /// many more there were.
    pub fn summary(&self) -> String {
        let mut text = self.kept.join(", ");
        let more = self.total.saturating_sub(self.kept.len() as u64);
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    }

    fn add(&mut self, description: &str) {
        self.total = self.total.saturating_add(1);
        if self.kept.len() < MAX_KEPT {
            let cleaned: String = description
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            self.kept.push(cut(cleaned.trim(), MAX_DESCRIPTION_BYTES));
        }
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What the `status` import sees of a run.
pub struct Status<'a> {
    pub calls: &'a mut HostCalls,
    pub missing: &'a mut Missing,
}

/// `HasData` for the `status` import.
pub struct StatusCapability;

impl HasData for StatusCapability {
    type Data<'a> = Status<'a>;
}

/// Adds the `status` import; `view` picks the run's parts out of `T`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Status<'_>,
) -> wasmtime::Result<()> {
    vigil_wit::vigil::plugin::status::add_to_linker::<T, StatusCapability>(linker, view)
}

impl Host for Status<'_> {
    fn missing_metrics(&mut self, what: Vec<String>) -> wasmtime::Result<()> {
        self.calls.charge()?;
        for description in &what {
            self.missing.add(description);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_cleaned_prefix_and_counts_the_rest() {
        let mut calls = HostCalls::new(10);
        let mut missing = Missing::default();
        let mut status = Status {
            calls: &mut calls,
            missing: &mut missing,
        };
        let many: Vec<String> = (0..40).map(|i| format!("bits_in of ifIndex {i}")).collect();
        status.missing_metrics(many).expect("within budget");
        status
            .missing_metrics(vec!["é".repeat(150), "a\nb".to_owned()])
            .expect("within budget");
        assert_eq!(missing.total, 42);
        assert_eq!(missing.kept.len(), MAX_KEPT);
        assert_eq!(missing.kept[0], "bits_in of ifIndex 0");
        assert!(missing.summary().ends_with("and 10 more"));

        let mut one = Missing::default();
        one.add(&"é".repeat(150));
        one.add("a\nb");
        assert!(one.kept[0].len() <= MAX_DESCRIPTION_BYTES);
        assert_eq!(one.kept[0].chars().count(), MAX_DESCRIPTION_BYTES / 2);
        assert_eq!(one.kept[1], "a b");
        assert_eq!(one.summary(), format!("{}, a b", one.kept[0]));
    }

    #[test]
    fn every_call_is_charged() {
        let mut calls = HostCalls::new(1);
        let mut missing = Missing::default();
        let mut status = Status {
            calls: &mut calls,
            missing: &mut missing,
        };
        status
            .missing_metrics(vec!["x".into()])
            .expect("first call");
        assert!(status.missing_metrics(vec!["y".into()]).is_err());
        assert_eq!(missing.total, 1);
    }
}
