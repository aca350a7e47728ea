//! EPT's data model (note §2, §3, §4, §5): the endpoint event as parsed from an
//! APIC epm object, the per-node history record, the fabric-wide endpoint
//! record, and the settings that cap their event lists.
//!
//! Field names are EPT's (`node`, `intf_id`, `intf_name`, `pctag`, `encap`,
//! `rw_mac`, `rw_bd`, `flags`, `remote`, `status`, `ts`, `epg_name`,
//! `vnid_name`, `classname`, `addr`, `vnid`, `type`, `count`, `events`,
//! `first_learn`, `learn_type`), so the JSON of these types is what EPT's
//! scripts expect (`ept_history.py`, `ept_endpoint.py`).
//!
//! Event lists are newest first; a push inserts at position 0, truncates to
//! the cap and increments `count`, so `count` is the total ever pushed
//! (C:317-327). [`push_capped`] is that operation.

use crate::text::{Flags, Text};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The three APIC endpoint classes EPT subscribes to (M:575-587).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EpmClass {
    /// `epmMacEp`: a MAC learned in a BD (scope = BD vnid).
    #[serde(rename = "epmMacEp")]
    MacEp,
    /// `epmIpEp`: an IP learned in a VRF (scope = VRF vnid).
    #[serde(rename = "epmIpEp")]
    IpEp,
    /// `epmRsMacEpToIpEpAtt`: the MAC rewrite information of an IP.
    #[serde(rename = "epmRsMacEpToIpEpAtt")]
    RsMacEpToIpEpAtt,
}

impl EpmClass {
    /// The APIC class name.
    pub fn as_str(self) -> &'static str {
        match self {
            EpmClass::MacEp => "epmMacEp",
            EpmClass::IpEp => "epmIpEp",
            EpmClass::RsMacEpToIpEpAtt => "epmRsMacEpToIpEpAtt",
        }
    }

    /// The class for an APIC class name, `None` for any other class.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "epmMacEp" => Some(EpmClass::MacEp),
            "epmIpEp" => Some(EpmClass::IpEp),
            "epmRsMacEpToIpEpAtt" => Some(EpmClass::RsMacEpToIpEpAtt),
            _ => None,
        }
    }

    /// The history `type` of this class: mac for `epmMacEp`, ip otherwise.
    pub fn history_type(self) -> HistoryType {
        match self {
            EpmClass::MacEp => HistoryType::Mac,
            _ => HistoryType::Ip,
        }
    }
}

impl fmt::Display for EpmClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An epm object's `status` (M:596-599: missing or empty means created).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Modified,
    Deleted,
}

impl Status {
    /// EPT's string for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Modified => "modified",
            Status::Deleted => "deleted",
        }
    }
}

/// The per-node history `type` (C:341-346): "mac" or "ip".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryType {
    Mac,
    Ip,
}

/// The endpoint `type` (C:341-346, `get_addr_type`): "mac", "ipv4" or "ipv6".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointType {
    Mac,
    Ipv4,
    Ipv6,
}

impl EndpointType {
    /// `get_addr_type`: an ip address containing ':' is ipv6, else ipv4.
    pub fn of(addr: &str, history_type: HistoryType) -> Self {
        match history_type {
            HistoryType::Mac => EndpointType::Mac,
            HistoryType::Ip if addr.contains(':') => EndpointType::Ipv6,
            HistoryType::Ip => EndpointType::Ipv4,
        }
    }
}

/// The endpoint `learn_type` (F:115-134).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LearnType {
    #[default]
    Epg,
    External,
    Overlay,
    Loopback,
    Psvi,
}

/// The key of a fabric-wide endpoint: (fabric, vnid, addr). For IP endpoints
/// the vnid is the VRF's, for MACs the BD's; for rs objects addr is the IP
/// (note §3, W:497, W:543-545).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointKey {
    pub fabric: String,
    pub vnid: u32,
    pub addr: String,
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} vnid {} {}", self.fabric, self.vnid, self.addr)
    }
}

/// An endpoint event as parsed from an APIC epm object (note §3, M:546-631).
///
/// `addr` is what the DN names (the MAC for `epmRsMacEpToIpEpAtt`), `ip` is
/// the rs object's IP ("" for the other classes); [`EpmEvent::key_addr`] is
/// the address the endpoint is keyed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpmEvent {
    pub fabric: String,
    /// Seconds since the epoch at which the event was received (EPT's `_ts`).
    pub ts: f64,
    pub classname: EpmClass,
    #[serde(rename = "type")]
    pub history_type: HistoryType,
    pub status: Status,
    pub flags: Vec<String>,
    #[serde(rename = "ifId")]
    pub if_id: String,
    #[serde(rename = "pcTag")]
    pub pctag: i64,
    pub encap: String,
    pub addr: String,
    pub ip: String,
    pub node: u32,
    pub vnid: u32,
    pub vrf: u32,
    pub bd: u32,
}

impl EpmEvent {
    /// The address the endpoint is keyed on: the IP for rs objects, else addr.
    pub fn key_addr(&self) -> &str {
        if self.classname == EpmClass::RsMacEpToIpEpAtt {
            &self.ip
        } else {
            &self.addr
        }
    }

    /// The fabric-wide endpoint key (fabric, vnid, key address).
    pub fn key(&self) -> EndpointKey {
        EndpointKey {
            fabric: self.fabric.clone(),
            vnid: self.vnid,
            addr: self.key_addr().to_owned(),
        }
    }

    /// Whether the event's flags contain `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// One event of a per-node history (`eptHistoryEvent`, ept_history.py:113-186).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub classname: EpmClass,
    pub ts: f64,
    pub status: Status,
    pub remote: u32,
    pub pctag: i64,
    /// Sorted, as EPT stores them.
    pub flags: Flags,
    pub tunnel_flags: Text,
    pub encap: Text,
    pub intf_id: Text,
    pub intf_name: Text,
    pub epg_name: Text,
    pub vnid_name: Text,
    pub rw_mac: Text,
    pub rw_bd: u32,
}

impl HistoryEvent {
    /// An event with EPT's defaults (0 and "") for everything but these.
    pub fn empty(classname: EpmClass, ts: f64, status: Status) -> Self {
        HistoryEvent {
            classname,
            ts,
            status,
            remote: 0,
            pctag: 0,
            flags: Flags::default(),
            tunnel_flags: Text::default(),
            encap: Text::default(),
            intf_id: Text::default(),
            intf_name: Text::default(),
            epg_name: Text::default(),
            vnid_name: Text::default(),
            rw_mac: Text::default(),
            rw_bd: 0,
        }
    }

    /// Whether the flags contain `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(flag)
    }
}

/// What one node reported about one endpoint (`eptHistory`), keyed by
/// (fabric, node, vnid, addr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub fabric: Text,
    pub node: u32,
    pub vnid: u32,
    #[serde(deserialize_with = "crate::text::deserialize_unique")]
    pub addr: Text,
    #[serde(rename = "type")]
    pub history_type: HistoryType,
    /// Total number of events ever pushed.
    pub count: u64,
    /// Newest first, at most `max_per_node_endpoint_events`.
    pub events: Vec<HistoryEvent>,
    /// Set by stale analysis (next issue); false until then.
    #[serde(default)]
    pub is_stale: bool,
    /// Set by offsubnet analysis (next issue); false until then.
    #[serde(default)]
    pub is_offsubnet: bool,
}

/// One event of the fabric-wide endpoint record (`eptEndpointEvent`,
/// ept_endpoint.py:414-478). A delete has node 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EndpointEvent {
    pub node: u32,
    pub pod: u32,
    pub status: Status,
    pub ts: f64,
    pub pctag: i64,
    pub encap: Text,
    pub intf_id: Text,
    pub intf_name: Text,
    pub rw_mac: Text,
    pub rw_bd: u32,
    pub epg_name: Text,
    pub vnid_name: Text,
}

/// The fabric-wide endpoint (`eptEndpoint`), keyed by (fabric, vnid, addr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub fabric: Text,
    pub vnid: u32,
    #[serde(deserialize_with = "crate::text::deserialize_unique")]
    pub addr: Text,
    #[serde(rename = "type")]
    pub endpoint_type: EndpointType,
    /// Total number of events ever pushed (an overwrite does not count).
    pub count: u64,
    /// Current location first, at most `max_endpoint_events`.
    pub events: Vec<EndpointEvent>,
    /// The first complete local learn (until then, an empty event carrying
    /// only `vnid_name`, as EPT writes it).
    pub first_learn: EndpointEvent,
    pub learn_type: LearnType,
    #[serde(default)]
    pub is_stale: bool,
    #[serde(default)]
    pub is_offsubnet: bool,
}

impl EndpointRecord {
    /// The record's key.
    pub fn key(&self) -> EndpointKey {
        EndpointKey {
            fabric: self.fabric.to_string(),
            vnid: self.vnid,
            addr: self.addr.to_string(),
        }
    }
}

/// Push `event` at position 0, truncate to `cap`, and increment `count`
/// (C:317-327).
pub fn push_capped<T>(events: &mut Vec<T>, count: &mut u64, event: T, cap: usize) {
    events.insert(0, event);
    events.truncate(cap);
    *count = count.saturating_add(1);
}

/// A setting outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting `{setting}` = {value} is out of range (allowed {min}..={max})")]
pub struct SettingsError {
    pub setting: &'static str,
    pub value: usize,
    pub min: usize,
    pub max: usize,
}

/// The caps of the event lists (S:189-205).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct Settings {
    max_per_node_endpoint_events: usize,
    max_endpoint_events: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default = "default_cap")]
    max_per_node_endpoint_events: usize,
    #[serde(default = "default_cap")]
    max_endpoint_events: usize,
}

fn default_cap() -> usize {
    64
}

impl TryFrom<RawSettings> for Settings {
    type Error = SettingsError;
    fn try_from(raw: RawSettings) -> Result<Self, SettingsError> {
        Settings::new(raw.max_per_node_endpoint_events, raw.max_endpoint_events)
    }
}

impl Settings {
    /// Allowed range of `max_per_node_endpoint_events` (S:189-198).
    pub const PER_NODE_RANGE: (usize, usize) = (8, 1024);
    /// Allowed range of `max_endpoint_events` (S:200-205).
    pub const ENDPOINT_RANGE: (usize, usize) = (8, 8192);

    /// Validated settings.
    pub fn new(
        max_per_node_endpoint_events: usize,
        max_endpoint_events: usize,
    ) -> Result<Self, SettingsError> {
        check(
            "max_per_node_endpoint_events",
            max_per_node_endpoint_events,
            Self::PER_NODE_RANGE,
        )?;
        check(
            "max_endpoint_events",
            max_endpoint_events,
            Self::ENDPOINT_RANGE,
        )?;
        Ok(Settings {
            max_per_node_endpoint_events,
            max_endpoint_events,
        })
    }

    /// Cap of each per-node history event list.
    pub fn max_per_node_endpoint_events(&self) -> usize {
        self.max_per_node_endpoint_events
    }

    /// Cap of the fabric-wide endpoint event list.
    pub fn max_endpoint_events(&self) -> usize {
        self.max_endpoint_events
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_per_node_endpoint_events: 64,
            max_endpoint_events: 64,
        }
    }
}

fn check(
    setting: &'static str,
    value: usize,
    (min, max): (usize, usize),
) -> Result<(), SettingsError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(SettingsError {
            setting,
            value,
            min,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_and_ranges() {
        // S:189-205: defaults 64/64, allowed 8..1024 and 8..8192.
        let d = Settings::default();
        assert_eq!(d.max_per_node_endpoint_events(), 64);
        assert_eq!(d.max_endpoint_events(), 64);
        assert!(Settings::new(8, 8).is_ok());
        assert!(Settings::new(1024, 8192).is_ok());
        let e = Settings::new(7, 64).unwrap_err();
        assert_eq!(e.setting, "max_per_node_endpoint_events");
        assert_eq!((e.min, e.max), (8, 1024));
        let e = Settings::new(64, 8193).unwrap_err();
        assert_eq!(e.setting, "max_endpoint_events");
        assert!(e.to_string().contains("8..=8192"), "{e}");
        assert!(Settings::new(1025, 64).is_err());
    }

    #[test]
    fn settings_deserialize_validates() {
        let s: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, Settings::default());
        let s: Settings = serde_json::from_str(r#"{"max_endpoint_events": 100}"#).unwrap();
        assert_eq!(s.max_endpoint_events(), 100);
        let e = serde_json::from_str::<Settings>(r#"{"max_endpoint_events": 4}"#).unwrap_err();
        assert!(e.to_string().contains("max_endpoint_events"), "{e}");
        assert!(serde_json::from_str::<Settings>(r#"{"max_events": 64}"#).is_err());
    }

    #[test]
    fn push_capped_keeps_newest_and_counts_all() {
        // C:317-327: insert at 0, truncate to the cap, count every push.
        let mut events = Vec::new();
        let mut count = 0;
        for i in 0..100 {
            push_capped(&mut events, &mut count, i, 64);
        }
        assert_eq!(events.len(), 64);
        assert_eq!(count, 100);
        assert_eq!(events[0], 99);
        assert_eq!(events[63], 36);
    }

    #[test]
    fn endpoint_type_of_address() {
        assert_eq!(
            EndpointType::of("10.0.0.1", HistoryType::Ip),
            EndpointType::Ipv4
        );
        assert_eq!(
            EndpointType::of("2001:db8::1", HistoryType::Ip),
            EndpointType::Ipv6
        );
        assert_eq!(
            EndpointType::of("00:11:22:33:44:55", HistoryType::Mac),
            EndpointType::Mac
        );
    }

    #[test]
    fn serde_names_are_epts() {
        let mut e = HistoryEvent::empty(EpmClass::RsMacEpToIpEpAtt, 1.5, Status::Deleted);
        e.rw_bd = 7;
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["classname"], "epmRsMacEpToIpEpAtt");
        assert_eq!(v["status"], "deleted");
        for k in [
            "ts",
            "remote",
            "pctag",
            "flags",
            "tunnel_flags",
            "encap",
            "intf_id",
            "intf_name",
            "epg_name",
            "vnid_name",
            "rw_mac",
            "rw_bd",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        let r = EndpointRecord {
            fabric: "f".into(),
            vnid: 1,
            addr: "10.0.0.1".into(),
            endpoint_type: EndpointType::Ipv4,
            count: 0,
            events: vec![],
            first_learn: EndpointEvent::default(),
            learn_type: LearnType::Epg,
            is_stale: false,
            is_offsubnet: false,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["type"], "ipv4");
        assert_eq!(v["learn_type"], "epg");
        assert!(v.get("first_learn").is_some());
    }
}
