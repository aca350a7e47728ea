//! Shared strings for the records a tracker holds in memory: [`Text`] (one
//! string, cloned by reference count) and [`Flags`] (EPT's sorted flag
//! list as one [`Text`]).
//!
//! # Why
//!
//! Issue #14 asks the tracker to hold an EPT-scale fabric (4.18 million
//! per-node records) in under 2 GiB. With `String` fields an EPT-shaped
//! history record with one event took about 680 bytes (measured by
//! `vigil-store`'s `ept_scale` bench): eight strings of 24 bytes inline, each
//! with its own heap block (interface, encap, EPG and BD names, flags), and
//! the record's copies of fabric and address. Almost all of those strings
//! repeat: a fabric has a few hundred interface names, a few thousand
//! EPG/BD names, a handful of flag sets. A [`Text`] is 16 bytes and the
//! repeated ones share one heap block: a history event is 160 bytes and a
//! record with one event about 260 held. The EPT-scale build held in
//! memory peaked at 1.74 GiB instead of 2.75 (`ept_scale`, `memory` mode),
//! and took 21 s instead of 35-67 (fewer allocations, fewer fresh pages to
//! zero).
//!
//! # Interning, bounded
//!
//! [`Text::from`] looks the string up in a process-wide table and returns
//! the shared copy. The table never shrinks, so it is bounded: at most
//! [`INTERN_MAX_ENTRIES`] strings of at most [`INTERN_MAX_LEN`] bytes (about
//! 20 MiB at worst). Past the bound, or for a longer string, [`Text::from`]
//! allocates a private copy: interning saves memory, it never changes what
//! a value means, so hostile input (pushed events inventing a new interface
//! name each) costs what a `String` would and cannot grow the table without
//! bound. Addresses, unique per endpoint, are never interned
//! ([`Text::unique`]); a record shares its endpoint's copy instead.
//!
//! Lookups hash with std's `RandomState` (no hash flooding) over 16 shards,
//! each behind its own mutex, so workers on different cores rarely meet.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex};

/// Most strings the intern table holds (all shards together).
pub const INTERN_MAX_ENTRIES: usize = 1 << 17;
/// Longest string interned, in bytes; longer ones get a private copy.
pub const INTERN_MAX_LEN: usize = 128;

const SHARDS: usize = 16;

struct Table {
    hasher: RandomState,
    shards: Vec<Mutex<HashSet<Arc<str>>>>,
    /// Most strings one shard holds.
    per_shard: usize,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| Table::new(INTERN_MAX_ENTRIES));

static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

impl Table {
    fn new(max_entries: usize) -> Table {
        Table {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            per_shard: max_entries / SHARDS,
        }
    }

    fn intern(&self, s: &str) -> Arc<str> {
        if s.is_empty() {
            return EMPTY.clone();
        }
        if s.len() > INTERN_MAX_LEN {
            return Arc::from(s);
        }
        // The low bits pick the shard; the set re-hashes with its own state.
        let shard = (self.hasher.hash_one(s) as usize) % SHARDS;
        let Some(lock) = self.shards.get(shard) else {
            return Arc::from(s);
        };
        // A panic while holding the lock cannot leave the set inconsistent
        // (an insert either happened or not), so a poisoned lock is usable.
        let mut set = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = set.get(s) {
            return found.clone();
        }
        let text: Arc<str> = Arc::from(s);
        if set.len() < self.per_shard {
            set.insert(text.clone());
        }
        text
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }
}

fn intern(s: &str) -> Arc<str> {
    TABLE.intern(s)
}

/// An immutable string shared by reference count (module docs). Derefs to
/// `str`, compares, hashes and serializes as the string it holds.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Arc<str>);

impl Text {
    /// A private copy of `s`, never interned: for strings unique to one
    /// endpoint (its address), which would only fill the table.
    pub fn unique(s: &str) -> Text {
        if s.is_empty() {
            return Text::default();
        }
        Text(Arc::from(s))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` and `other` share one heap block (interning worked).
    pub fn shares_with(&self, other: &Text) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for Text {
    fn default() -> Self {
        Text(EMPTY.clone())
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(intern(s))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Text(intern(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(intern(&s))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        **self == *other.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Text;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text::from(v))
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

/// `#[serde(deserialize_with)]` for a field unique to one endpoint (an
/// address): read it without interning ([`Text::unique`]).
pub fn deserialize_unique<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
    struct Unique;
    impl Visitor<'_> for Unique {
        type Value = Text;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
            Ok(Text::unique(v))
        }
    }
    deserializer.deserialize_str(Unique)
}

/// EPT's flag list of an event, sorted as EPT stores it, held as one
/// interned [`Text`] (the flags joined by `,`: APIC sends them that way, so
/// no flag contains a comma; [`Flags::new`] drops empty ones). Serializes
/// as a JSON list of strings, EPT's form.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Flags(Text);

impl Flags {
    /// The flags of `flags`, sorted; empty strings are dropped and a flag
    /// containing a comma is split at it (what APIC's comma-separated
    /// `flags` attribute would have given).
    pub fn new<I, S>(flags: I) -> Flags
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let items: Vec<S> = flags.into_iter().collect();
        let mut parts: Vec<&str> = items
            .iter()
            .flat_map(|f| f.as_ref().split(','))
            .filter(|part| !part.is_empty())
            .collect();
        if parts.is_empty() {
            return Flags::default();
        }
        parts.sort_unstable();
        Flags(Text::from(parts.join(",")))
    }

    /// The flags of APIC's comma-separated `flags` attribute, sorted.
    pub fn parse(joined: &str) -> Flags {
        Flags::new([joined])
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `flag` is one of the flags.
    pub fn contains(&self, flag: &str) -> bool {
        !flag.is_empty() && self.iter().any(|f| f == flag)
    }

    /// The flags, in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split(',').filter(|f| !f.is_empty())
    }

    /// Number of flags.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The flags joined by `,` (APIC's form).
    pub fn joined(&self) -> &str {
        &self.0
    }

    /// The flags as owned strings.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Flags {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for f in self.iter() {
            seq.serialize_element(f)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Flags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FlagsVisitor;
        impl<'de> Visitor<'de> for FlagsVisitor {
            type Value = Flags;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of flags")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Flags, A::Error> {
                let mut list: Vec<String> = Vec::new();
                while let Some(flag) = seq.next_element::<String>()? {
                    list.push(flag);
                }
                Ok(Flags::new(list))
            }
        }
        deserializer.deserialize_seq(FlagsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_block_and_compare_as_strings() {
        let a = Text::from("eth1/1");
        let b = Text::from(String::from("eth1/1"));
        assert!(a.shares_with(&b));
        assert_eq!(a, "eth1/1");
        assert_eq!(&*a, "eth1/1");
        assert!(*"eth1/2" > *a);
        assert!(Text::default().is_empty());
        assert!(Text::from("").shares_with(&Text::default()));
    }

    #[test]
    fn unique_and_long_strings_are_not_interned() {
        let a = Text::unique("00:11:22:33:44:55");
        let b = Text::unique("00:11:22:33:44:55");
        assert_eq!(a, b);
        assert!(!a.shares_with(&b));
        let long = "x".repeat(INTERN_MAX_LEN + 1);
        assert!(!Text::from(long.as_str()).shares_with(&Text::from(long.as_str())));
    }

    #[test]
    fn the_table_is_bounded_and_past_it_values_are_still_right() {
        // A table of its own (filling the process-wide one would stop
        // interning for the other tests of this binary): more distinct
        // strings than it holds; every value still reads back as itself,
        // the table stops growing at its bound, and a string seen before
        // the bound is still shared after it.
        let table = Table::new(SHARDS * 4);
        let early = table.intern("early");
        for i in 0..1000 {
            let s = format!("bound-test-{i}");
            assert_eq!(&*table.intern(&s), s.as_str());
        }
        assert!(table.len() <= SHARDS * 4, "{} strings held", table.len());
        assert!(Arc::ptr_eq(&early, &table.intern("early")));
        let late = table.intern("late, past the bound");
        assert!(!Arc::ptr_eq(&late, &table.intern("late, past the bound")));
    }

    #[test]
    fn text_serializes_as_a_string() {
        let t = Text::from("vlan-100");
        assert_eq!(
            serde_json::to_string(&t).ok().as_deref(),
            Some("\"vlan-100\"")
        );
        let back: Text = serde_json::from_str("\"vlan-100\"").unwrap_or_default();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Text>("7").is_err());
    }

    #[test]
    fn flags_sort_split_and_serialize_as_epts_list() {
        let f = Flags::parse("vpc-attached,local,,mac");
        assert_eq!(f.to_vec(), ["local", "mac", "vpc-attached"]);
        assert!(f.contains("local"));
        assert!(!f.contains("loc"));
        assert!(!f.contains(""));
        assert_eq!(f.len(), 3);
        assert_eq!(f, Flags::new(["mac", "local", "vpc-attached"]));
        let json = serde_json::to_string(&f).unwrap_or_default();
        assert_eq!(json, r#"["local","mac","vpc-attached"]"#);
        let back: Flags =
            serde_json::from_str(r#"["vpc-attached","mac","local"]"#).unwrap_or_default();
        assert_eq!(back, f);
        assert!(Flags::default().is_empty());
        assert_eq!(
            serde_json::to_string(&Flags::default()).unwrap_or_default(),
            "[]"
        );
    }
}
