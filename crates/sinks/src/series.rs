//! Compact series ids: what the latest-value stores and the Prometheus
//! registry key series by, instead of the series' text.
//!
//! Keying by text made every metric carry its whole label or dimension
//! set: the latest-value table's primary key was `(resource id, group type,
//! dimension JSON, metric)`, so the dimension JSON was written twice (row
//! and index) per metric. One group of 2,000 metrics over 64 dimensions of
//! 224 bytes (229 KB of Panoptes JSON) grew the SQLite file by 66.7 MB:
//! 291 bytes per plugin byte (`tests/benches/sinks.rs`). Now a series is
//! `id → (resource id, group type, dimensions)`, stored once, and each
//! metric row refers to it by a small integer: the same poll grows the
//! file by 82 KB, 0.36 bytes per plugin byte (Panoptes JSON spells every
//! key out per metric; the table does not), and polling it again does not
//! grow it (`tests/tests/suite/hostile_sinks.rs` bounds both).
//!
//! The id is SHA-256, truncated to 128 bits, of a length-prefixed encoding
//! of the parts, so it is stable across versions and processes (the stores
//! persist it) and no plugin can make two series collide on purpose (the
//! best known attack on 128 bits of SHA-256 needs ~2⁶⁴ hashes; by chance, a
//! collision among a billion series has odds of ~10⁻²¹). That is why a
//! store may trust the id alone and never compare the text behind it.

use sha2::{Digest, Sha256};

/// A series' compact id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub [u8; 16]);

impl SeriesId {
    /// Lower-case hex, for stores that key by text.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Hashes parts with their lengths, so `("ab", "c")` and `("a", "bc")`
/// differ.
#[derive(Default)]
pub struct IdBuilder(Sha256);

impl IdBuilder {
    pub fn part(&mut self, text: &str) -> &mut IdBuilder {
        self.0.update((text.len() as u64).to_le_bytes());
        self.0.update(text.as_bytes());
        self
    }

    pub fn finish(self) -> SeriesId {
        let digest = self.0.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        SeriesId(id)
    }
}

/// The id of the series of `group_type` on `resource_id` with
/// `dimensions` (sorted by the caller, so their order in the group does
/// not matter).
pub fn series_id<'a>(
    resource_id: &str,
    group_type: &str,
    dimensions: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> SeriesId {
    let mut id = IdBuilder::default();
    id.part(resource_id).part(group_type);
    for (name, value) in dimensions {
        id.part(name).part(value);
    }
    id.finish()
}

/// The id of a rendered Prometheus label set.
pub fn label_set_id(labels: &str) -> SeriesId {
    let mut id = IdBuilder::default();
    id.part(labels);
    id.finish()
}

/// A `Hasher` for keys that are [`SeriesId`]s: their bytes are already a
/// cryptographic hash, so the map uses them as they are.
#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `SeriesId` hashes as a length and its 16 bytes; fold them in,
        // which keeps the bytes' spread.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// A map keyed by [`SeriesId`].
pub type IdMap<V> = std::collections::HashMap<SeriesId, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A set of [`SeriesId`]s.
pub type IdSet = std::collections::HashSet<SeriesId, std::hash::BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separate_their_parts() {
        let a = series_id("sw1", "interface", [("if", "e0")]);
        assert_eq!(a, series_id("sw1", "interface", [("if", "e0")]));
        assert_eq!(a.hex().len(), 32);
        assert_ne!(a, series_id("sw1", "interface", [("i", "fe0")]));
        assert_ne!(a, series_id("sw1i", "nterface", [("if", "e0")]));
        assert_ne!(a, series_id("sw1", "interface", []));
        assert_ne!(label_set_id("{a=\"b\"}"), label_set_id("{a=\"c\"}"));
    }

    #[test]
    fn the_encoding_is_pinned() {
        // sha256 of 3u64le "sw1" 9u64le "interface" 2u64le "if" 2u64le "e0",
        // first 16 bytes (computed independently, with Python's hashlib).
        // The stores persist ids: this must never change.
        assert_eq!(
            series_id("sw1", "interface", [("if", "e0")]).hex(),
            "77ab22836ca676dfe3c26aac7bcf31df"
        );
    }
}
