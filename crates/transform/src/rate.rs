//! Counter-to-rate transform: turns successive samples of monotonically
//! increasing device counters (SNMP `Counter32`/`Counter64`: octets, packets,
//! errors) into per-second rates, keeping the last sample of every series.
//!
//! A naive `(current - previous) / dt` emits huge spikes or negative rates when
//! a counter wraps, a device restarts or polls are missed. Here, whenever the
//! delta is ambiguous, the sample re-baselines the series instead of guessing,
//! so no rate is ever negative, NaN or infinite:
//!
//! - **Wrap or reset.** When `current < previous` the counter either wrapped
//!   or was reset (device or agent restart). With an unknown width:
//!   - `previous <= u32::MAX` (may be 32-bit): the wrapped delta is
//!     `(2^32 - previous) + current`. It is a wrap if that delta is below half
//!     the range (`2^31`), else a reset. A counter polled often enough moves
//!     far less than half its range per poll, while a restarted one comes back
//!     near zero, which gives a large wrapped delta whenever `previous` was in
//!     the lower half.
//!   - `previous > u32::MAX`: it must be 64-bit, and a 64-bit wrap between
//!     polls is practically impossible (2^64 bytes at 400 Gb/s take over ten
//!     years), so any decrease is a reset.
//!   - A known width ([`CounterWidth`]) overrides the guess: a 64-bit counter
//!     gets the same half-range rule over 2^64; a "32-bit" counter that held a
//!     value above `u32::MAX` was not really 32-bit, so a decrease is a reset.
//!
//!   Blind spots, inherent to looking at values alone: a 32-bit counter reset
//!   from above 2^31 reads as a wrap (one rate of at most `2^31 / dt`), and a
//!   32-bit counter that really advances by half its range per poll (octets
//!   above ~`2^34 / interval` bit/s) reads as reset and yields nothing. Poll
//!   64-bit `ifHC*` counters on such links, as RFC 2863 asks above 20 Mb/s;
//!   only `sysUpTime`/`ifCounterDiscontinuityTime` could tell these apart.
//! - **Gap.** More than `max_gap_intervals` intervals since the previous
//!   sample re-baselines: over a long gap the counter may have wrapped several
//!   times or reset and climbed back, and an average would hide what happened.
//! - **Stale.** A timestamp not after the previous one (duplicate or
//!   out-of-order), not finite, or so close that the rate would overflow is
//!   ignored: the stored state never moves backwards.
//!
//! [`RateTracker`] keeps the last sample per series key in a bounded LRU
//! (O(1) per observation) and can export/import its state for persistence.

use std::collections::HashMap;
use std::sync::Arc;

/// A counter's previous sample, per series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterSample {
    pub value: u64,
    /// Seconds since the Unix epoch.
    pub at: f64,
}

/// What a new counter sample yields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateOutcome {
    /// Per-second rate since the previous sample (wrap already accounted for).
    Rate(f64),
    /// Rate after a counter wrap (same meaning as Rate; separate so callers can count wraps).
    Wrapped(f64),
    /// No previous sample: this one is the baseline.
    First,
    /// The counter went backwards implausibly: the device restarted; re-baselined.
    Reset,
    /// More than `max_gap_intervals` intervals since the previous sample; re-baselined.
    Gap,
    /// Timestamp not after the previous sample's; ignored.
    Stale,
}

impl RateOutcome {
    /// The per-second rate, for [`RateOutcome::Rate`] and [`RateOutcome::Wrapped`].
    pub fn rate(self) -> Option<f64> {
        match self {
            Self::Rate(rate) | Self::Wrapped(rate) => Some(rate),
            Self::First | Self::Reset | Self::Gap | Self::Stale => None,
        }
    }
}

/// The counter's width, when the caller knows it (e.g. from the MIB type).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CounterWidth {
    /// Guess from the values (see the module docs).
    Unknown,
    Bits32,
    Bits64,
}

const RANGE_32: u64 = 1 << 32;
const HALF_RANGE_32: u64 = 1 << 31;
const HALF_RANGE_64: u64 = 1 << 63;

/// Pure function at the heart of it: the outcome of `current` given `previous`.
///
/// A gap is more than `max_gap_intervals * interval_seconds` seconds; a NaN or
/// non-positive limit makes every sample after the first a gap, since no
/// elapsed time can then be trusted.
pub fn rate(
    previous: Option<CounterSample>,
    current: CounterSample,
    interval_seconds: f64,
    width: CounterWidth,
    max_gap_intervals: f64,
) -> RateOutcome {
    // Checked before `First` so that a bad timestamp never becomes a baseline.
    if !current.at.is_finite() {
        return RateOutcome::Stale;
    }
    let Some(previous) = previous else {
        return RateOutcome::First;
    };
    let elapsed = current.at - previous.at;
    if elapsed.is_nan() || elapsed <= 0.0 {
        return RateOutcome::Stale;
    }
    // Before the wrap/reset decision: over a long gap that decision is a guess.
    let max_elapsed = max_gap_intervals * interval_seconds;
    if max_elapsed.is_nan() || elapsed > max_elapsed {
        return RateOutcome::Gap;
    }
    let (delta, wrapped) = if current.value >= previous.value {
        (current.value - previous.value, false)
    } else {
        match wrapped_delta(previous.value, current.value, width) {
            Some(delta) => (delta, true),
            None => return RateOutcome::Reset,
        }
    };
    let per_second = delta as f64 / elapsed;
    // Only a subnormal `elapsed` can overflow; such a sample is as good as a duplicate.
    if !per_second.is_finite() {
        return RateOutcome::Stale;
    }
    if wrapped {
        RateOutcome::Wrapped(per_second)
    } else {
        RateOutcome::Rate(per_second)
    }
}

/// The increase from `previous` to a smaller `current` if the counter wrapped,
/// or `None` if it must have been reset.
fn wrapped_delta(previous: u64, current: u64, width: CounterWidth) -> Option<u64> {
    match width {
        // Unknown guesses 32-bit when the value fits, and a decrease of a
        // value that does not fit is a reset either way: same rule as Bits32.
        CounterWidth::Unknown | CounterWidth::Bits32 => {
            if previous > u64::from(u32::MAX) {
                return None;
            }
            let delta = (RANGE_32 - previous) + current;
            (delta < HALF_RANGE_32).then_some(delta)
        }
        CounterWidth::Bits64 => {
            let delta = current.wrapping_sub(previous);
            (delta < HALF_RANGE_64).then_some(delta)
        }
    }
}

/// Marks the end of the recency list.
const NIL: usize = usize::MAX;

/// One tracked series: a slot in the dense `nodes` vector, linked into the
/// recency list by index.
#[derive(Debug)]
struct Node {
    /// Shared with the index map so each key is allocated once.
    key: Arc<str>,
    sample: CounterSample,
    /// Towards the most recently observed.
    newer: usize,
    /// Towards the least recently observed.
    older: usize,
}

/// Keeps the last sample per series key and applies [`rate`].
///
/// Keys are opaque strings built by the caller (resource, group, dimensions,
/// metric). At most `capacity` series are kept; inserting one more evicts the
/// series observed least recently (any observation counts, even a stale one,
/// since it shows the series is still polled). Every operation is O(1) except
/// [`forget_prefix`](Self::forget_prefix) and export, which scan all series.
#[derive(Debug)]
pub struct RateTracker {
    capacity: usize,
    max_gap_intervals: f64,
    index: HashMap<Arc<str>, usize>,
    /// Dense: removal swaps the last node into the hole.
    nodes: Vec<Node>,
    newest: usize,
    oldest: usize,
}

impl RateTracker {
    pub const DEFAULT_MAX_GAP_INTERVALS: f64 = 3.0;

    /// A tracker of at most `capacity` series (0 keeps none: every sample is `First`).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            max_gap_intervals: Self::DEFAULT_MAX_GAP_INTERVALS,
            index: HashMap::new(),
            nodes: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    /// Replaces [`DEFAULT_MAX_GAP_INTERVALS`](Self::DEFAULT_MAX_GAP_INTERVALS).
    pub fn with_max_gap_intervals(mut self, max_gap_intervals: f64) -> Self {
        self.max_gap_intervals = max_gap_intervals;
        self
    }

    /// Applies [`rate`] to `current` and the series' last sample, then keeps
    /// `current` as the last sample unless the outcome is `Stale`.
    pub fn observe(
        &mut self,
        key: &str,
        current: CounterSample,
        interval_seconds: f64,
        width: CounterWidth,
    ) -> RateOutcome {
        let slot = self.index.get(key).copied();
        let previous = slot.map(|slot| self.nodes[slot].sample);
        let outcome = rate(
            previous,
            current,
            interval_seconds,
            width,
            self.max_gap_intervals,
        );
        match slot {
            Some(slot) => {
                if outcome != RateOutcome::Stale {
                    self.nodes[slot].sample = current;
                }
                self.touch(slot);
            }
            None if outcome != RateOutcome::Stale => self.insert(key, current),
            None => {}
        }
        outcome
    }

    /// Drops every series whose key starts with `prefix` (e.g. an expired
    /// resource) and returns how many.
    pub fn forget_prefix(&mut self, prefix: &str) -> usize {
        let mut removed = 0;
        let mut slot = 0;
        while slot < self.nodes.len() {
            if self.nodes[slot].key.starts_with(prefix) {
                // Moves another node into `slot`, so look at it again.
                self.remove(slot);
                removed += 1;
            } else {
                slot += 1;
            }
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every series' last sample, least recently observed first, so that
    /// [`import`](Self::import) restores the eviction order too.
    pub fn export(&self) -> Vec<(String, CounterSample)> {
        let mut entries = Vec::with_capacity(self.nodes.len());
        let mut slot = self.oldest;
        while slot != NIL {
            let node = &self.nodes[slot];
            entries.push((node.key.to_string(), node.sample));
            slot = node.newer;
        }
        entries
    }

    /// Restores exported entries, each becoming the most recently observed
    /// (beyond capacity, the earliest entries are evicted). An entry never
    /// replaces a newer sample already held, and one with a non-finite
    /// timestamp is skipped, so a stale snapshot cannot move a series back.
    pub fn import(&mut self, entries: impl IntoIterator<Item = (String, CounterSample)>) {
        for (key, sample) in entries {
            if !sample.at.is_finite() {
                continue;
            }
            match self.index.get(key.as_str()).copied() {
                Some(slot) => {
                    if sample.at > self.nodes[slot].sample.at {
                        self.nodes[slot].sample = sample;
                    }
                    self.touch(slot);
                }
                None => self.insert(&key, sample),
            }
        }
    }

    /// Adds a series not yet tracked, evicting the oldest when full.
    fn insert(&mut self, key: &str, sample: CounterSample) {
        if self.capacity == 0 {
            return;
        }
        let key: Arc<str> = Arc::from(key);
        if self.nodes.len() >= self.capacity {
            // Reuse the oldest node's slot rather than remove and push.
            let slot = self.oldest;
            self.unlink(slot);
            let node = &mut self.nodes[slot];
            self.index.remove(&node.key);
            node.key = Arc::clone(&key);
            node.sample = sample;
            self.index.insert(key, slot);
            self.link_newest(slot);
        } else {
            let slot = self.nodes.len();
            self.nodes.push(Node {
                key: Arc::clone(&key),
                sample,
                newer: NIL,
                older: NIL,
            });
            self.index.insert(key, slot);
            self.link_newest(slot);
        }
    }

    /// Removes the node in `slot`, filling the hole with the last node.
    fn remove(&mut self, slot: usize) {
        self.unlink(slot);
        let node = self.nodes.swap_remove(slot);
        self.index.remove(&node.key);
        if slot < self.nodes.len() {
            let (newer, older) = (self.nodes[slot].newer, self.nodes[slot].older);
            match newer {
                NIL => self.newest = slot,
                newer => self.nodes[newer].older = slot,
            }
            match older {
                NIL => self.oldest = slot,
                older => self.nodes[older].newer = slot,
            }
            if let Some(index_slot) = self.index.get_mut(&self.nodes[slot].key) {
                *index_slot = slot;
            }
        }
    }

    /// Marks `slot` as the most recently observed.
    fn touch(&mut self, slot: usize) {
        if self.newest != slot {
            self.unlink(slot);
            self.link_newest(slot);
        }
    }

    fn unlink(&mut self, slot: usize) {
        let (newer, older) = (self.nodes[slot].newer, self.nodes[slot].older);
        match newer {
            NIL => self.newest = older,
            newer => self.nodes[newer].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            older => self.nodes[older].newer = newer,
        }
    }

    fn link_newest(&mut self, slot: usize) {
        self.nodes[slot].newer = NIL;
        self.nodes[slot].older = self.newest;
        match self.newest {
            NIL => self.oldest = slot,
            newest => self.nodes[newest].newer = slot,
        }
        self.newest = slot;
    }

    /// Panics if the index, the nodes and the recency list disagree.
    #[cfg(test)]
    fn check_invariants(&self) {
        assert!(self.nodes.len() <= self.capacity);
        assert_eq!(self.index.len(), self.nodes.len());
        for (key, &slot) in &self.index {
            assert_eq!(&self.nodes[slot].key, key);
        }
        let mut seen = 0;
        let mut older = NIL;
        let mut slot = self.oldest;
        while slot != NIL {
            assert_eq!(self.nodes[slot].older, older);
            seen += 1;
            assert!(seen <= self.nodes.len(), "cycle in the recency list");
            older = slot;
            slot = self.nodes[slot].newer;
        }
        assert_eq!(self.newest, older);
        assert_eq!(seen, self.nodes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GAP: f64 = RateTracker::DEFAULT_MAX_GAP_INTERVALS;

    fn sample(value: u64, at: f64) -> CounterSample {
        CounterSample { value, at }
    }

    /// `rate` from `(v0, t0)` to `(v1, t1)` with a 10 s interval.
    fn step(v0: u64, t0: f64, v1: u64, t1: f64, width: CounterWidth) -> RateOutcome {
        rate(Some(sample(v0, t0)), sample(v1, t1), 10.0, width, GAP)
    }

    #[test]
    fn first_sample_is_the_baseline() {
        let outcome = rate(None, sample(42, 100.0), 10.0, CounterWidth::Unknown, GAP);
        assert_eq!(outcome, RateOutcome::First);
        assert_eq!(outcome.rate(), None);
        let mut tracker = RateTracker::new(4);
        let outcome = tracker.observe("a", sample(42, 100.0), 10.0, CounterWidth::Unknown);
        assert_eq!(outcome, RateOutcome::First);
        assert_eq!(tracker.len(), 1);
    }

    #[test]
    fn steady_rate() {
        let mut tracker = RateTracker::new(4);
        let width = CounterWidth::Unknown;
        tracker.observe("a", sample(1_000, 100.0), 10.0, width);
        let outcome = tracker.observe("a", sample(1_500, 110.0), 10.0, width);
        assert_eq!(outcome, RateOutcome::Rate(50.0));
        assert_eq!(outcome.rate(), Some(50.0));
        let outcome = tracker.observe("a", sample(1_500, 120.0), 10.0, width);
        assert_eq!(outcome, RateOutcome::Rate(0.0));
    }

    #[test]
    fn wrap_of_a_32_bit_counter() {
        let outcome = step(4_294_967_000, 0.0, 200, 10.0, CounterWidth::Unknown);
        assert_eq!(outcome, RateOutcome::Wrapped((296.0 + 200.0) / 10.0));
        assert_eq!(outcome.rate(), Some(49.6));
        // From exactly u32::MAX, still a possible 32-bit counter.
        let outcome = step(u64::from(u32::MAX), 0.0, 9, 10.0, CounterWidth::Unknown);
        assert_eq!(outcome, RateOutcome::Wrapped(1.0));
    }

    #[test]
    fn decrease_of_a_64_bit_counter_is_a_reset() {
        let previous = u64::from(u32::MAX) + 1;
        assert_eq!(
            step(previous, 0.0, 5, 10.0, CounterWidth::Unknown),
            RateOutcome::Reset
        );
        // Even just below u64::MAX: a 64-bit wrap between polls is implausible.
        assert_eq!(
            step(u64::MAX - 10, 0.0, 5, 10.0, CounterWidth::Unknown),
            RateOutcome::Reset
        );
    }

    #[test]
    fn half_range_rule_for_32_bit_counters() {
        let width = CounterWidth::Unknown;
        // 3_000_000_000 -> 5 wraps by 1_294_967_301 < 2^31: plausibly a wrap.
        assert_eq!(
            step(3_000_000_000, 0.0, 5, 10.0, width),
            RateOutcome::Wrapped(129_496_730.1)
        );
        // 1_000_000_000 -> 5 would have wrapped by 3_294_967_301 >= 2^31: a reset.
        assert_eq!(step(1_000_000_000, 0.0, 5, 10.0, width), RateOutcome::Reset);
        // Either side of the boundary: 2^31 - 1 is a wrap, 2^31 a reset.
        assert_eq!(
            step((1 << 31) + 1, 0.0, 0, 1.0, width),
            RateOutcome::Wrapped(((1u64 << 31) - 1) as f64)
        );
        assert_eq!(step(1 << 31, 0.0, 0, 1.0, width), RateOutcome::Reset);
        assert_eq!(
            step((1 << 31) + 10, 0.0, 9, 1.0, width),
            RateOutcome::Wrapped(((1u64 << 31) - 1) as f64)
        );
        assert_eq!(
            step((1 << 31) + 10, 0.0, 10, 1.0, width),
            RateOutcome::Reset
        );
    }

    #[test]
    fn explicit_widths() {
        let (w32, w64) = (CounterWidth::Bits32, CounterWidth::Bits64);
        assert_eq!(
            step(4_294_967_000, 0.0, 200, 10.0, w32),
            RateOutcome::Wrapped(49.6)
        );
        assert_eq!(step(1_000, 0.0, 5, 10.0, w32), RateOutcome::Reset);
        // A value above u32::MAX means it was not really 32-bit.
        assert_eq!(step(1 << 40, 0.0, 5, 10.0, w32), RateOutcome::Reset);
        // A 64-bit counter can wrap, under the same half-range rule.
        assert_eq!(
            step(u64::MAX - 99, 0.0, 400, 10.0, w64),
            RateOutcome::Wrapped(50.0)
        );
        assert_eq!(
            step(u64::MAX, 0.0, (1 << 63) - 2, 1.0, w64),
            RateOutcome::Wrapped(((1u64 << 63) - 1) as f64)
        );
        assert_eq!(
            step(u64::MAX, 0.0, (1 << 63) - 1, 1.0, w64),
            RateOutcome::Reset
        );
        // What would be a 32-bit wrap is a reset of a 64-bit counter.
        assert_eq!(step(4_294_967_000, 0.0, 200, 10.0, w64), RateOutcome::Reset);
        // Increases do not depend on the width.
        for width in [CounterWidth::Unknown, w32, w64] {
            assert_eq!(step(100, 0.0, 300, 10.0, width), RateOutcome::Rate(20.0));
        }
    }

    #[test]
    fn gap_rebaselines() {
        let mut tracker = RateTracker::new(4);
        let width = CounterWidth::Unknown;
        tracker.observe("a", sample(1_000, 100.0), 10.0, width);
        // Exactly 3 intervals is not a gap; 3.5 is.
        assert_eq!(
            tracker.observe("a", sample(1_300, 130.0), 10.0, width),
            RateOutcome::Rate(10.0)
        );
        assert_eq!(
            tracker.observe("a", sample(9_000, 165.0), 10.0, width),
            RateOutcome::Gap
        );
        assert_eq!(
            tracker.observe("a", sample(9_200, 175.0), 10.0, width),
            RateOutcome::Rate(20.0)
        );
        // A gap wins over a reset: over a long gap the decrease is a guess.
        assert_eq!(
            tracker.observe("a", sample(5, 215.0), 10.0, width),
            RateOutcome::Gap
        );
    }

    #[test]
    fn custom_max_gap_and_bad_limits() {
        let mut tracker = RateTracker::new(4).with_max_gap_intervals(10.0);
        let width = CounterWidth::Unknown;
        tracker.observe("a", sample(0, 0.0), 10.0, width);
        assert_eq!(
            tracker.observe("a", sample(100, 100.0), 10.0, width),
            RateOutcome::Rate(1.0)
        );
        // A NaN or zero limit cannot be trusted: always a gap.
        assert_eq!(step(0, 0.0, 10, 1.0, width), RateOutcome::Rate(10.0));
        let bad = [(f64::NAN, GAP), (0.0, GAP), (10.0, f64::NAN), (-1.0, GAP)];
        for (interval, max_gap) in bad {
            let outcome = rate(
                Some(sample(0, 0.0)),
                sample(10, 1.0),
                interval,
                width,
                max_gap,
            );
            assert_eq!(outcome, RateOutcome::Gap);
        }
    }

    #[test]
    fn stale_and_duplicate_timestamps_are_ignored() {
        let mut tracker = RateTracker::new(4);
        let width = CounterWidth::Unknown;
        tracker.observe("a", sample(1_000, 100.0), 10.0, width);
        tracker.observe("a", sample(2_000, 110.0), 10.0, width);
        // Duplicate, out-of-order, then non-finite: state stays at (2_000, 110).
        for at in [110.0, 105.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                tracker.observe("a", sample(1_500, at), 10.0, width),
                RateOutcome::Stale
            );
        }
        assert_eq!(
            tracker.export(),
            vec![("a".to_string(), sample(2_000, 110.0))]
        );
        assert_eq!(
            tracker.observe("a", sample(2_500, 120.0), 10.0, width),
            RateOutcome::Rate(50.0)
        );
        // A non-finite timestamp never becomes a baseline.
        assert_eq!(
            tracker.observe("b", sample(1, f64::NAN), 10.0, width),
            RateOutcome::Stale
        );
        assert_eq!(tracker.len(), 1);
        // A rate that would overflow: as good as a duplicate.
        let outcome = step(0, 0.0, u64::MAX, f64::from_bits(1), CounterWidth::Bits64);
        assert_eq!(outcome, RateOutcome::Stale);
    }

    #[test]
    fn eviction_keeps_the_most_recently_updated() {
        let mut tracker = RateTracker::new(3);
        let width = CounterWidth::Unknown;
        for key in ["a", "b", "c"] {
            tracker.observe(key, sample(0, 0.0), 10.0, width);
        }
        // "a" is refreshed, so "b" is now the least recently observed.
        tracker.observe("a", sample(10, 10.0), 10.0, width);
        tracker.observe("d", sample(0, 10.0), 10.0, width);
        tracker.check_invariants();
        assert_eq!(tracker.len(), 3);
        let keys: Vec<String> = tracker.export().into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["c", "a", "d"]);
        // "b" starts over; "a" still rates.
        assert_eq!(
            tracker.observe("b", sample(100, 20.0), 10.0, width),
            RateOutcome::First
        );
        assert_eq!(
            tracker.observe("a", sample(20, 20.0), 10.0, width),
            RateOutcome::Rate(1.0)
        );
        tracker.check_invariants();

        let mut none = RateTracker::new(0);
        assert_eq!(
            none.observe("a", sample(0, 0.0), 10.0, width),
            RateOutcome::First
        );
        assert_eq!(
            none.observe("a", sample(5, 10.0), 10.0, width),
            RateOutcome::First
        );
        assert!(none.is_empty());
    }

    #[test]
    fn forget_prefix_drops_matching_series() {
        let mut tracker = RateTracker::new(10);
        let width = CounterWidth::Unknown;
        for key in ["r1/if1", "r2/if1", "r1/if2", "r10/if1", "r3/if1"] {
            tracker.observe(key, sample(0, 0.0), 10.0, width);
        }
        assert_eq!(tracker.forget_prefix("r1/"), 2);
        tracker.check_invariants();
        let keys: Vec<String> = tracker.export().into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["r2/if1", "r10/if1", "r3/if1"]);
        assert_eq!(tracker.forget_prefix("nothing"), 0);
        assert_eq!(
            tracker.observe("r1/if1", sample(5, 10.0), 10.0, width),
            RateOutcome::First
        );
        assert_eq!(tracker.forget_prefix(""), 4);
        tracker.check_invariants();
        assert!(tracker.is_empty());
    }

    #[test]
    fn export_import_round_trip() {
        let mut tracker = RateTracker::new(3);
        let width = CounterWidth::Unknown;
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            tracker.observe(key, sample(i as u64 * 100, 10.0), 10.0, width);
        }
        tracker.observe("a", sample(50, 20.0), 10.0, width);
        let snapshot = tracker.export();

        let mut restored = RateTracker::new(3);
        restored.import(snapshot.clone());
        restored.check_invariants();
        assert_eq!(restored.export(), snapshot);
        // Same eviction order: "b" goes first.
        restored.observe("d", sample(0, 20.0), 10.0, width);
        assert_eq!(restored.forget_prefix("b"), 0);
        assert_eq!(
            restored.observe("c", sample(400, 20.0), 10.0, width),
            RateOutcome::Rate(20.0)
        );

        // Into a smaller tracker the most recent entries survive.
        let mut small = RateTracker::new(2);
        small.import(snapshot.clone());
        small.check_invariants();
        assert_eq!(small.export(), snapshot[1..]);

        // An older sample never replaces a newer one; non-finite timestamps are skipped.
        let mut live = RateTracker::new(3);
        live.observe("a", sample(70, 30.0), 10.0, width);
        live.import(snapshot);
        live.import([("e".to_string(), sample(1, f64::NAN))]);
        live.check_invariants();
        assert_eq!(
            live.export(),
            vec![
                ("b".to_string(), sample(100, 10.0)),
                ("c".to_string(), sample(200, 10.0)),
                ("a".to_string(), sample(70, 30.0)),
            ]
        );
    }

    /// A simulated counter advances by each increment and is polled every
    /// `dt_ticks / TICKS` seconds: multiples of 1/1024 s are exact in f64, so
    /// the expected rate is exactly what the tracker should compute.
    const TICKS: f64 = 1024.0;

    fn simulated_counter() -> impl Strategy<Value = (bool, u64, u64, Vec<(u64, u64)>)> {
        (any::<bool>(), 1u64..=300).prop_flat_map(|(is_32, interval)| {
            let start = if is_32 {
                any::<u32>().prop_map(u64::from).boxed()
            } else {
                prop_oneof![any::<u64>(), (0u64..1 << 34).prop_map(|d| u64::MAX - d)].boxed()
            };
            let tick_interval = interval * TICKS as u64;
            let steps =
                prop::collection::vec((0u64..1 << 31, tick_interval..=3 * tick_interval), 1..64);
            (Just(is_32), Just(interval), start, steps)
        })
    }

    fn assert_sane(outcome: RateOutcome) -> Result<(), TestCaseError> {
        if let Some(rate) = outcome.rate() {
            prop_assert!(rate.is_finite() && rate >= 0.0, "{outcome:?}");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn naturally_wrapping_counters_give_exact_rates(
            (is_32, interval, start, steps) in simulated_counter(),
            declare_width in any::<bool>(),
        ) {
            let width = match (is_32, declare_width) {
                (_, false) => CounterWidth::Unknown,
                (true, true) => CounterWidth::Bits32,
                (false, true) => CounterWidth::Bits64,
            };
            let interval = interval as f64;
            let mut tracker = RateTracker::new(1);
            let mut value = start;
            let mut ticks: u64 = 1_700_000_000 * TICKS as u64;
            let at = |ticks: u64| ticks as f64 / TICKS;
            prop_assert_eq!(
                tracker.observe("k", sample(value, at(ticks)), interval, width),
                RateOutcome::First
            );
            for (increment, dt_ticks) in steps {
                let previous = value;
                value = if is_32 {
                    u64::from((value as u32).wrapping_add(increment as u32))
                } else {
                    value.wrapping_add(increment)
                };
                ticks += dt_ticks;
                let outcome = tracker.observe("k", sample(value, at(ticks)), interval, width);
                assert_sane(outcome)?;
                let expected = increment as f64 / (dt_ticks as f64 / TICKS);
                let wrapped = value < previous;
                match outcome {
                    RateOutcome::Rate(rate) | RateOutcome::Wrapped(rate) => {
                        prop_assert!(
                            (rate - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                            "{rate} != {expected}"
                        );
                        prop_assert_eq!(matches!(outcome, RateOutcome::Wrapped(_)), wrapped);
                    }
                    // Only an undeclared 64-bit counter's wrap reads as a reset.
                    RateOutcome::Reset => {
                        prop_assert!(!is_32 && !declare_width && wrapped, "{outcome:?}");
                    }
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
        }

        #[test]
        fn arbitrary_samples_never_give_bad_rates(
            samples in prop::collection::vec(
                (
                    0usize..4,
                    prop_oneof![
                        any::<u64>(),
                        (0u64..1 << 33),
                        (0u64..1 << 20).prop_map(|d| u64::MAX - d),
                    ],
                    prop_oneof![
                        prop::num::f64::ANY,
                        -10.0..1e4f64,
                        Just(f64::from_bits(1)),
                    ],
                    prop_oneof![prop::num::f64::ANY, 0.001..100.0f64],
                    prop_oneof![
                        Just(CounterWidth::Unknown),
                        Just(CounterWidth::Bits32),
                        Just(CounterWidth::Bits64),
                    ],
                ),
                0..64,
            ),
            max_gap in prop_oneof![prop::num::f64::ANY, Just(GAP)],
        ) {
            let mut tracker = RateTracker::new(3).with_max_gap_intervals(max_gap);
            let mut previous: Option<CounterSample> = None;
            for (key, value, at, interval, width) in samples {
                let current = sample(value, at);
                assert_sane(rate(previous, current, interval, width, max_gap))?;
                previous = Some(current);
                let key = ["a", "b", "c", "d"][key];
                assert_sane(tracker.observe(key, current, interval, width))?;
                tracker.check_invariants();
                for (_, kept) in tracker.export() {
                    prop_assert!(kept.at.is_finite());
                }
            }
        }

        /// The tracker against a naive model: a Vec ordered oldest first.
        #[test]
        fn tracker_matches_a_naive_lru(
            capacity in 0usize..5,
            ops in prop::collection::vec(
                (0usize..6, 0u64..1_000, 0u64..40, any::<bool>()),
                0..100,
            ),
        ) {
            let keys = ["r1/a", "r1/b", "r2/a", "r2/b", "r3/a", "r3/b"];
            let mut tracker = RateTracker::new(capacity);
            let mut model: Vec<(String, CounterSample)> = Vec::new();
            for (key, value, at, forget) in ops {
                let key = keys[key];
                if forget {
                    let prefix = &key[..3];
                    let before = model.len();
                    model.retain(|(k, _)| !k.starts_with(prefix));
                    prop_assert_eq!(tracker.forget_prefix(prefix), before - model.len());
                } else {
                    let current = sample(value, at as f64);
                    let width = CounterWidth::Unknown;
                    let position = model.iter().position(|(k, _)| k == key);
                    let entry = position.map(|position| model.remove(position));
                    let expected = rate(entry.as_ref().map(|e| e.1), current, 10.0, width, GAP);
                    prop_assert_eq!(tracker.observe(key, current, 10.0, width), expected);
                    match entry {
                        Some((k, kept)) if expected == RateOutcome::Stale => model.push((k, kept)),
                        _ if capacity > 0 => {
                            model.push((key.to_string(), current));
                            if model.len() > capacity {
                                model.remove(0);
                            }
                        }
                        _ => {}
                    }
                }
                tracker.check_invariants();
                prop_assert_eq!(tracker.export(), model.clone());
                prop_assert_eq!(tracker.len(), model.len());
            }
        }
    }
}
