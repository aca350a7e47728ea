//! Successive snapshots of a device's address tables → endpoint events
//! (issue #14, source 2: ordinary networks over SNMP).
//!
//! An endpoint-collection plugin (`plugins/snmp-endpoints`) reads a
//! device's ARP/neighbour table (IP → MAC on an interface) and its bridge
//! forwarding table (MAC → port in a VLAN) and reports each as a whole
//! [`TableSnapshot`]. This module compares a snapshot with the previous one
//! of the same (device, kind, context) and says what changed as
//! [`EpmEvent`]s, the events the APIC would have sent for the same change:
//!
//! | table | endpoint | vnid (scope) | event |
//! |---|---|---|---|
//! | forwarding | the MAC (`epmMacEp`) | the VLAN (0 when the table has none) | created / modified (port or state changed) / deleted |
//! | neighbour | the IP (`epmIpEp`) | the routing context: 0 for the default, else [`context_vnid`] | created / modified (interface or state changed) / deleted |
//! | neighbour | the IP's MAC (`epmRsMacEpToIpEpAtt`) | as the IP | created with the IP; modified when the IP's MAC changes |
//!
//! The device is the node ([`NodeIds`]), learned entries carry the `local`
//! flag (the device is where the endpoint attaches, as a leaf's local learn
//! is), `if_id` is the interface name (`ifIndex <n>` when the plugin could
//! not name it) and `encap` is `vlan-<n>`.
//!
//! # Rules
//!
//! - **Incomplete snapshots never delete.** A snapshot whose walk was cut
//!   short (`complete == false`), or that lost entries to the bounds here,
//!   only creates and modifies; entries it does not mention are kept in the
//!   stored table as they were.
//! - **Normalised addresses.** MACs become upper-case colon form
//!   (`00:1A:2B:3C:4D:5E`, as the APIC writes them), IPs their canonical
//!   text (RFC 5952 for IPv6). An entry whose address does not parse is
//!   rejected (reported, not stored), and makes the snapshot incomplete.
//! - **Bounded.** At most [`MAX_ENTRIES`] entries per table; text fields
//!   are cut to [`MAX_TEXT_BYTES`].
//! - **No history across a restart is lost or invented by this module:**
//!   the caller stores [`StoredTable`] (serde) between runs. With the
//!   previous table restored, a restart produces exactly the changes made
//!   while it was down; with none (first run ever, or the store lost), the
//!   first snapshot only creates, never deletes, and the history step
//!   ignores a `created` identical to what it already has.
//!
//! # Node ids
//!
//! EPT's node is a `u32`, and ids above 0xffff are vpc pseudo-nodes
//! (`fabric::split_vpc_node_id`). A device (a resource id string) gets an
//! id in 1..=0xfffe from [`NodeIds`]: its first choice is a stable hash of
//! the resource id, the next free id after that on a collision. The table is
//! serde so the caller persists it: an id, once given, never changes, and
//! the node's name shown to operators is the resource id
//! ([`NodeIds::name`]).
//!
//! Pure: no I/O, no clock (the caller passes the time).

use crate::model::{EpmClass, EpmEvent, Status};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

/// Entries of one table at most; the rest are rejected (and the snapshot
/// counts as incomplete).
pub const MAX_ENTRIES: usize = 200_000;
/// Interface names, sources and contexts are cut to this many bytes.
pub const MAX_TEXT_BYTES: usize = 128;
/// Node ids the [`NodeIds`] table gives (1..=0xfffe).
pub const MAX_NODE_ID: u32 = 0xfffe;

/// Which kind of table a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// IP → MAC (ARP, IPv6 neighbours).
    Neighbour,
    /// MAC → port (bridge forwarding database).
    Forwarding,
}

impl TableKind {
    /// `neighbour` / `forwarding`.
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Neighbour => "neighbour",
            TableKind::Forwarding => "forwarding",
        }
    }
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the device learned an entry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    #[default]
    Dynamic,
    Static,
    /// The device's own address.
    Local,
    Other,
}

impl EntryState {
    /// The event flags of an entry in this state.
    fn flags(self) -> Vec<String> {
        let flags: &[&str] = match self {
            EntryState::Dynamic | EntryState::Other => &["local"],
            EntryState::Static => &["local", "static"],
            EntryState::Local => &["local", "svi"],
        };
        flags.iter().map(|f| (*f).to_owned()).collect()
    }
}

/// One row as the plugin reported it (not yet normalised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TableEntry {
    /// The IP of a neighbour entry; empty for a forwarding entry.
    pub address: String,
    pub mac: String,
    pub if_index: u32,
    /// The interface's name, empty when unknown.
    pub interface: String,
    /// The VLAN of a forwarding entry, 0 when none.
    pub vlan: u16,
    pub state: EntryState,
}

/// One whole table of one device, as the plugin reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TableSnapshot {
    pub kind: Option<TableKind>,
    /// The MIB table it came from (`ipNetToPhysicalTable`).
    pub source: String,
    /// Routing (neighbour) or bridge (forwarding) context; "" = default.
    pub context: String,
    /// Whether the whole table was read.
    pub complete: bool,
    pub entries: Vec<TableEntry>,
}

/// A stored row: what the next snapshot is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// Normalised MAC.
    pub mac: String,
    /// `if_id` as events carry it (the interface name, or `ifIndex <n>`).
    pub if_id: String,
    pub vlan: u16,
    pub state: EntryState,
}

/// A table as last seen, keyed by the normalised endpoint address (the IP
/// of a neighbour row; `<vlan>/<MAC>` of a forwarding row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoredTable {
    pub entries: BTreeMap<String, StoredEntry>,
}

/// Where the events of one diff belong.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffContext {
    pub fabric: String,
    /// The device's node id ([`NodeIds`]).
    pub node: u32,
    /// Seconds since the epoch (the run's time).
    pub ts: f64,
}

/// What one comparison produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diff {
    /// The events, in a stable order (by key; an IP's event before its MAC's).
    pub events: Vec<EpmEvent>,
    /// The table to store for the next comparison.
    pub next: StoredTable,
    /// Rows refused: (reason, bounded sample).
    pub rejected: Vec<(&'static str, String)>,
    /// Whether deletes were allowed (the snapshot was complete and nothing
    /// was refused).
    pub complete: bool,
}

/// The key a stored table is filed under:
/// `<fabric>/<node>/<kind>/<context>`.
pub fn table_key(fabric: &str, node: u32, kind: TableKind, context: &str) -> String {
    format!("{fabric}/{node}/{kind}/{context}")
}

/// The vnid of a routing context: 0 for the default (""), else a stable
/// 32-bit hash with the top bit set, so it never equals a VLAN (0..=4095).
pub fn context_vnid(context: &str) -> u32 {
    if context.is_empty() {
        0
    } else {
        fnv1a(context.as_bytes()) | 0x8000_0000
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// A MAC in upper-case colon form, from `aa:bb:..`, `aa-bb-..`,
/// `aabb.ccdd.eeff`, `aabbccddeeff` or `a:b:c:d:e:f` (single-digit octets
/// as some agents print them). `None` for anything else.
pub fn normalise_mac(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let octets: Vec<u8> = if text.contains(':') || text.contains('-') {
        let parts: Vec<&str> = text.split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut octets = Vec::with_capacity(6);
        for p in parts {
            if p.is_empty() || p.len() > 2 {
                return None;
            }
            octets.push(u8::from_str_radix(p, 16).ok()?);
        }
        octets
    } else {
        let hex: String = text.chars().filter(|c| *c != '.').collect();
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let mut octets = Vec::with_capacity(6);
        for i in 0..6 {
            octets.push(u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?);
        }
        octets
    };
    let parts: Vec<String> = octets.iter().map(|o| format!("{o:02X}")).collect();
    Some(parts.join(":"))
}

/// An IP address in canonical text, `None` if it does not parse.
pub fn normalise_ip(text: &str) -> Option<String> {
    let text = text.trim();
    if text.len() > 64 {
        return None;
    }
    text.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// Cut `text` to at most [`MAX_TEXT_BYTES`] on a char boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn sample(entry: &TableEntry) -> String {
    let mut s = format!(
        "address {:?} mac {:?} ifIndex {}",
        entry.address, entry.mac, entry.if_index
    );
    s.truncate(200);
    s
}

fn if_id(entry: &TableEntry) -> String {
    let name = entry.interface.trim();
    if name.is_empty() {
        format!("ifIndex {}", entry.if_index)
    } else {
        bounded(name)
    }
}

/// Compare `current` with `previous` (the stored table of the same device,
/// kind and context; `None` when there is none) and say what changed.
pub fn diff(previous: Option<&StoredTable>, current: &TableSnapshot, ctx: &DiffContext) -> Diff {
    let mut rejected = Vec::new();
    let mut complete = current.complete;
    let Some(kind) = current.kind else {
        return Diff {
            next: previous.cloned().unwrap_or_default(),
            rejected: vec![("unknown_table_kind", bounded(&current.source))],
            ..Diff::default()
        };
    };
    let context_vnid = context_vnid(&bounded(&current.context));
    // Normalise into the stored form; a later row with the same key wins.
    let mut seen: BTreeMap<String, StoredEntry> = BTreeMap::new();
    for (i, entry) in current.entries.iter().enumerate() {
        if i >= MAX_ENTRIES {
            rejected.push((
                "too_many_entries",
                format!("{} rows", current.entries.len()),
            ));
            complete = false;
            break;
        }
        let Some(mac) = normalise_mac(&entry.mac) else {
            rejected.push(("invalid_mac", sample(entry)));
            complete = false;
            continue;
        };
        let key = match kind {
            TableKind::Neighbour => match normalise_ip(&entry.address) {
                Some(ip) => ip,
                None => {
                    rejected.push(("invalid_ip", sample(entry)));
                    complete = false;
                    continue;
                }
            },
            TableKind::Forwarding => format!("{}/{mac}", entry.vlan),
        };
        seen.insert(
            key,
            StoredEntry {
                mac,
                if_id: if_id(entry),
                vlan: entry.vlan,
                state: entry.state,
            },
        );
    }

    let empty = StoredTable::default();
    let previous = previous.unwrap_or(&empty);
    let mut events = Vec::new();
    let event = |status: Status, key: &str, e: &StoredEntry, class: EpmClass| -> EpmEvent {
        let (addr, ip, vnid, vrf, bd, encap) = match (kind, class) {
            (TableKind::Forwarding, _) => (
                e.mac.clone(),
                String::new(),
                u32::from(e.vlan),
                0,
                u32::from(e.vlan),
                vlan_encap(e.vlan),
            ),
            (TableKind::Neighbour, EpmClass::RsMacEpToIpEpAtt) => (
                e.mac.clone(),
                key.to_owned(),
                context_vnid,
                context_vnid,
                0,
                String::new(),
            ),
            (TableKind::Neighbour, _) => (
                key.to_owned(),
                String::new(),
                context_vnid,
                context_vnid,
                0,
                String::new(),
            ),
        };
        EpmEvent {
            fabric: ctx.fabric.clone(),
            ts: ctx.ts,
            classname: class,
            history_type: class.history_type(),
            status,
            flags: e.state.flags(),
            if_id: e.if_id.clone(),
            pctag: 0,
            encap,
            addr,
            ip,
            node: ctx.node,
            vnid,
            vrf,
            bd,
        }
    };
    let main_class = match kind {
        TableKind::Forwarding => EpmClass::MacEp,
        TableKind::Neighbour => EpmClass::IpEp,
    };
    for (key, now) in &seen {
        match previous.entries.get(key) {
            None => {
                events.push(event(Status::Created, key, now, main_class));
                if kind == TableKind::Neighbour {
                    events.push(event(Status::Created, key, now, EpmClass::RsMacEpToIpEpAtt));
                }
            }
            Some(before) => {
                if before.if_id != now.if_id || before.state != now.state {
                    events.push(event(Status::Modified, key, now, main_class));
                }
                if kind == TableKind::Neighbour && before.mac != now.mac {
                    events.push(event(
                        Status::Modified,
                        key,
                        now,
                        EpmClass::RsMacEpToIpEpAtt,
                    ));
                }
            }
        }
    }
    let mut next = StoredTable { entries: seen };
    for (key, before) in &previous.entries {
        if next.entries.contains_key(key) {
            continue;
        }
        if complete {
            events.push(event(Status::Deleted, key, before, main_class));
        } else {
            // Not seen in an incomplete snapshot: keep it as it was.
            next.entries.insert(key.clone(), before.clone());
        }
    }
    // Deletes were pushed after creates/modifies; keep the whole list in
    // key order so the output does not depend on which arrived first.
    events.sort_by(|a, b| {
        (a.key_addr(), a.vnid, class_order(a.classname)).cmp(&(
            b.key_addr(),
            b.vnid,
            class_order(b.classname),
        ))
    });
    Diff {
        events,
        next,
        rejected,
        complete,
    }
}

fn class_order(class: EpmClass) -> u8 {
    match class {
        EpmClass::MacEp | EpmClass::IpEp => 0,
        EpmClass::RsMacEpToIpEpAtt => 1,
    }
}

fn vlan_encap(vlan: u16) -> String {
    if vlan == 0 {
        String::new()
    } else {
        format!("vlan-{vlan}")
    }
}

/// Node ids of devices (see the module docs): resource id ↔ `u32` in
/// 1..=[`MAX_NODE_ID`], stable once given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeIds {
    by_resource: HashMap<String, u32>,
    by_id: HashMap<u32, String>,
}

impl NodeIds {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id `resource` would be given first (before any collision).
    pub fn preferred(resource: &str) -> u32 {
        fnv1a(resource.as_bytes()) % MAX_NODE_ID + 1
    }

    /// The id of `resource`, giving it one if it has none: `(id, new)`.
    /// `None` when every id is taken.
    pub fn assign(&mut self, resource: &str) -> Option<(u32, bool)> {
        if let Some(id) = self.by_resource.get(resource) {
            return Some((*id, false));
        }
        if self.by_id.len() >= MAX_NODE_ID as usize {
            return None;
        }
        let mut id = Self::preferred(resource);
        while self.by_id.contains_key(&id) {
            id = if id >= MAX_NODE_ID { 1 } else { id + 1 };
        }
        self.insert(resource, id);
        Some((id, true))
    }

    /// Record an assignment made earlier (restoring a persisted table).
    /// Refused (false) when the id is out of range or taken by another
    /// resource, or the resource has another id.
    pub fn insert(&mut self, resource: &str, id: u32) -> bool {
        if id == 0 || id > MAX_NODE_ID {
            return false;
        }
        match (self.by_resource.get(resource), self.by_id.get(&id)) {
            (None, None) => {
                self.by_resource.insert(resource.to_owned(), id);
                self.by_id.insert(id, resource.to_owned());
                true
            }
            (Some(have), _) => *have == id,
            (None, Some(_)) => false,
        }
    }

    /// The id of `resource`, if it has one.
    pub fn id(&self, resource: &str) -> Option<u32> {
        self.by_resource.get(resource).copied()
    }

    /// The node's name for operators: the device's resource id.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    /// How many devices have ids.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no device has an id yet.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx() -> DiffContext {
        DiffContext {
            fabric: "lab".into(),
            node: 7,
            ts: 100.0,
        }
    }

    fn fdb(mac: &str, vlan: u16, port: &str) -> TableEntry {
        TableEntry {
            mac: mac.into(),
            vlan,
            interface: port.into(),
            if_index: 3,
            ..TableEntry::default()
        }
    }

    fn arp(ip: &str, mac: &str) -> TableEntry {
        TableEntry {
            address: ip.into(),
            mac: mac.into(),
            interface: "br0".into(),
            if_index: 2,
            ..TableEntry::default()
        }
    }

    fn snap(kind: TableKind, complete: bool, entries: Vec<TableEntry>) -> TableSnapshot {
        TableSnapshot {
            kind: Some(kind),
            source: "test".into(),
            context: String::new(),
            complete,
            entries,
        }
    }

    fn summary(d: &Diff) -> Vec<(Status, EpmClass, String, String, u32)> {
        d.events
            .iter()
            .map(|e| {
                (
                    e.status,
                    e.classname,
                    e.addr.clone(),
                    e.if_id.clone(),
                    e.vnid,
                )
            })
            .collect()
    }

    #[test]
    fn macs_are_normalised() {
        for text in [
            "02:00:00:00:00:0a",
            "02-00-00-00-00-0A",
            "0200.0000.000a",
            "02000000000A",
            "2:0:0:0:0:a",
        ] {
            assert_eq!(
                normalise_mac(text).as_deref(),
                Some("02:00:00:00:00:0A"),
                "{text}"
            );
        }
        for bad in [
            "",
            "02:00:00:00:00",
            "zz:00:00:00:00:00",
            "0200.0000.00",
            "1:2:3:4:5:666",
        ] {
            assert_eq!(normalise_mac(bad), None, "{bad}");
        }
        assert_eq!(normalise_ip("fe80:0:0::1").as_deref(), Some("fe80::1"));
        assert_eq!(normalise_ip("10.77.0.300"), None);
    }

    #[test]
    fn a_move_is_a_modified_mac_and_a_vanished_mac_is_deleted() {
        let first = diff(
            None,
            &snap(
                TableKind::Forwarding,
                true,
                vec![
                    fdb("02:00:00:00:00:01", 0, "swp1"),
                    fdb("02:00:00:00:00:02", 0, "swp2"),
                ],
            ),
            &ctx(),
        );
        assert_eq!(
            summary(&first),
            vec![
                (
                    Status::Created,
                    EpmClass::MacEp,
                    "02:00:00:00:00:01".into(),
                    "swp1".into(),
                    0
                ),
                (
                    Status::Created,
                    EpmClass::MacEp,
                    "02:00:00:00:00:02".into(),
                    "swp2".into(),
                    0
                ),
            ]
        );
        let moved = diff(
            Some(&first.next),
            &snap(
                TableKind::Forwarding,
                true,
                vec![fdb("02:00:00:00:00:01", 0, "swp3")],
            ),
            &ctx(),
        );
        assert_eq!(
            summary(&moved),
            vec![
                (
                    Status::Modified,
                    EpmClass::MacEp,
                    "02:00:00:00:00:01".into(),
                    "swp3".into(),
                    0
                ),
                (
                    Status::Deleted,
                    EpmClass::MacEp,
                    "02:00:00:00:00:02".into(),
                    "swp2".into(),
                    0
                ),
            ]
        );
        let again = diff(
            Some(&moved.next),
            &snap(
                TableKind::Forwarding,
                true,
                vec![fdb("02:00:00:00:00:01", 0, "swp3")],
            ),
            &ctx(),
        );
        assert!(again.events.is_empty());
    }

    #[test]
    fn vlan_is_the_scope_of_a_mac() {
        let d = diff(
            None,
            &snap(
                TableKind::Forwarding,
                true,
                vec![
                    fdb("02:00:00:00:00:01", 10, "swp1"),
                    fdb("02:00:00:00:00:01", 20, "swp1"),
                ],
            ),
            &ctx(),
        );
        let vnids: Vec<u32> = d.events.iter().map(|e| e.vnid).collect();
        assert_eq!(vnids, vec![10, 20]);
        assert_eq!(d.events[0].encap, "vlan-10");
        assert_eq!(d.events[0].key().vnid, 10);
    }

    #[test]
    fn an_ip_changing_mac_is_a_modified_rewrite() {
        let first = diff(
            None,
            &snap(
                TableKind::Neighbour,
                true,
                vec![arp("10.77.0.2", "02:00:00:00:00:02")],
            ),
            &ctx(),
        );
        assert_eq!(first.events.len(), 2);
        assert_eq!(first.events[0].classname, EpmClass::IpEp);
        assert_eq!(first.events[1].classname, EpmClass::RsMacEpToIpEpAtt);
        assert_eq!(first.events[1].key_addr(), "10.77.0.2");
        let changed = diff(
            Some(&first.next),
            &snap(
                TableKind::Neighbour,
                true,
                vec![arp("10.77.0.2", "02:00:00:00:00:22")],
            ),
            &ctx(),
        );
        assert_eq!(changed.events.len(), 1);
        let e = &changed.events[0];
        assert_eq!(
            (e.status, e.classname, e.addr.as_str(), e.ip.as_str()),
            (
                Status::Modified,
                EpmClass::RsMacEpToIpEpAtt,
                "02:00:00:00:00:22",
                "10.77.0.2"
            )
        );
    }

    #[test]
    fn incomplete_snapshots_never_delete() {
        let first = diff(
            None,
            &snap(
                TableKind::Neighbour,
                true,
                vec![
                    arp("10.77.0.1", "02:00:00:00:00:01"),
                    arp("10.77.0.2", "02:00:00:00:00:02"),
                ],
            ),
            &ctx(),
        );
        let cut = diff(
            Some(&first.next),
            &snap(
                TableKind::Neighbour,
                false,
                vec![arp("10.77.0.1", "02:00:00:00:00:01")],
            ),
            &ctx(),
        );
        assert!(cut.events.is_empty(), "{:?}", cut.events);
        assert_eq!(cut.next, first.next);
        // A refused row makes a complete snapshot incomplete as well.
        let refused = diff(
            Some(&first.next),
            &snap(
                TableKind::Neighbour,
                true,
                vec![
                    arp("10.77.0.1", "02:00:00:00:00:01"),
                    arp("not-an-ip", "02:00:00:00:00:03"),
                ],
            ),
            &ctx(),
        );
        assert!(refused.events.is_empty());
        assert!(!refused.complete);
        assert_eq!(refused.rejected[0].0, "invalid_ip");
    }

    #[test]
    fn contexts_scope_ips_apart_from_vlans() {
        assert_eq!(context_vnid(""), 0);
        let v = context_vnid("vrf-blue");
        assert!(v > 4095);
        assert_eq!(v, context_vnid("vrf-blue"));
    }

    #[test]
    fn node_ids_are_stable_and_unique() {
        let mut ids = NodeIds::new();
        let (a, new) = ids.assign("switch-a").expect("id");
        assert!(new);
        assert_eq!(ids.assign("switch-a"), Some((a, false)));
        assert_eq!(a, NodeIds::preferred("switch-a"));
        assert_eq!(ids.name(a), Some("switch-a"));
        // Restored in any order, assignments are kept.
        let mut restored = NodeIds::new();
        assert!(restored.insert("switch-a", a));
        assert!(!restored.insert("other", a));
        assert_eq!(restored.id("switch-a"), Some(a));
    }

    proptest! {
        #[test]
        fn ids_never_collide_and_stay_below_vpc_range(names in proptest::collection::vec("[a-z0-9]{1,6}", 1..300)) {
            let mut ids = NodeIds::new();
            let mut seen = std::collections::HashMap::new();
            for name in &names {
                let (id, _) = ids.assign(name).expect("room");
                prop_assert!((1..=MAX_NODE_ID).contains(&id));
                if let Some(prev) = seen.insert(id, name.clone()) {
                    prop_assert_eq!(&prev, name);
                }
            }
        }

        /// Applying the diff's events to the previous table gives the next
        /// table (for complete snapshots), and incomplete snapshots never
        /// delete and never lose a stored entry.
        #[test]
        fn diff_is_consistent(
            before in proptest::collection::btree_map(0u8..20, (0u8..4, 0u8..3), 0..15),
            after in proptest::collection::btree_map(0u8..20, (0u8..4, 0u8..3), 0..15),
            complete in any::<bool>(),
        ) {
            let rows = |m: &BTreeMap<u8, (u8, u8)>| -> Vec<TableEntry> {
                m.iter()
                    .map(|(ip, (mac, port))| {
                        let mut e = arp(&format!("10.77.1.{ip}"), &format!("02:00:00:00:01:{mac:02x}"));
                        e.interface = format!("swp{port}");
                        e
                    })
                    .collect()
            };
            let first = diff(None, &snap(TableKind::Neighbour, true, rows(&before)), &ctx());
            prop_assert!(first.events.iter().all(|e| e.status == Status::Created));
            let second = diff(Some(&first.next), &snap(TableKind::Neighbour, complete, rows(&after)), &ctx());
            let deletes: Vec<&str> = second.events.iter().filter(|e| e.status == Status::Deleted).map(|e| e.addr.as_str()).collect();
            if complete {
                let expected: Vec<String> = before.keys().filter(|k| !after.contains_key(k)).map(|k| format!("10.77.1.{k}")).collect();
                let mut got: Vec<String> = deletes.iter().map(|s| (*s).to_owned()).collect();
                got.sort();
                let mut expected = expected;
                expected.sort();
                prop_assert_eq!(got, expected);
                prop_assert_eq!(second.next.entries.len(), after.len());
            } else {
                prop_assert!(deletes.is_empty());
                for key in first.next.entries.keys() {
                    prop_assert!(second.next.entries.contains_key(key));
                }
            }
            // Re-diffing the same snapshot produces nothing.
            let third = diff(Some(&second.next), &snap(TableKind::Neighbour, complete, rows(&after)), &ctx());
            prop_assert!(third.events.is_empty(), "{:?}", third.events);
        }
    }
}
