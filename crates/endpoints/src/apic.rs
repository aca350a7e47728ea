//! Parsing APIC epm objects into [`EpmEvent`]s (note §3, M:498-631), and
//! APIC payloads (class-query responses and websocket notifications) into
//! their objects.
//!
//! The DN grammar is EPT's, verbatim ([`EPM_DN_PATTERN`],
//! [`EPM_RS_DN_PATTERN`]), used unanchored like Python's `re.search`. The
//! attributes EPT reads are `dn`, `status`, `flags`, `ifId` and `pcTag`
//! (M:589-609); node, vrf/overlay, bd, encap and the addresses all come from
//! the DN, and the event time is the time the payload was received (EPT's
//! `_ts`, ept_subscriber.py:863-866), not `modTs`.
//!
//! Payloads are untrusted: sizes are bounded ([`Limits`]), nothing panics,
//! and every rejected object comes back as an [`ObjectError`] naming its
//! position, class, DN and what is wrong, while the payload's other objects
//! are still returned.

use crate::model::{EpmClass, EpmEvent, Status};
use regex::Regex;
use serde_json::{Map, Value};
use std::sync::LazyLock;

/// EPT's `epm_reg` (M:499-504).
pub const EPM_DN_PATTERN: &str = concat!(
    r"node-(?P<node>[0-9]+)/sys/",
    r"((ctx-\[vxlan-(?P<vrf>[0-9]+)\]/)|(?P<ovl>inst-overlay-1/))",
    r"(bd-\[vxlan-(?P<bd>[0-9]+)\]/)?",
    r"(vx?lan-\[(?P<encap>vx?lan-[0-9]+)\]/)?",
    r"db-ep/",
    r"((mac|ip)-\[?(?P<addr>[0-9\.a-fA-F:]+)\]?)?",
);

/// EPT's `epm_rsMacToIp_reg` (M:505-506).
pub const EPM_RS_DN_PATTERN: &str = concat!(
    r"node-(?P<node>[0-9]+)/sys/",
    r"((ctx-\[vxlan-(?P<vrf>[0-9]+)\]/)|(?P<ovl>inst-overlay-1/))",
    r"(bd-\[vxlan-(?P<bd>[0-9]+)\]/)?",
    r"(vx?lan-\[(?P<encap>vx?lan-[0-9]+)\]/)?",
    r"db-ep/",
    r"((mac|ip)-\[?(?P<addr>[0-9\.a-fA-F:]+)\]?)?",
    r"/rsmacEpToIpEpAtt-.+?",
    r"ip-\[(?P<ip>[0-9\.a-fA-F\:]+)\]",
);

// Constant patterns, checked by `patterns_compile` below.
#[allow(clippy::expect_used)]
static EPM_DN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(EPM_DN_PATTERN).expect("EPT's epm DN pattern compiles"));
#[allow(clippy::expect_used)]
static EPM_RS_DN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(EPM_RS_DN_PATTERN).expect("EPT's rs DN pattern compiles"));

/// Size bounds on untrusted payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload (one JSON document) in bytes.
    pub max_payload_bytes: usize,
    /// Most objects in one payload's `imdata`.
    pub max_objects: usize,
    /// Longest `dn` in bytes.
    pub max_dn_bytes: usize,
    /// Longest other attribute value in bytes.
    pub max_attribute_bytes: usize,
    /// Most entries in `flags`.
    pub max_flags: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 64 << 20,
            max_objects: 1_000_000,
            max_dn_bytes: 2048,
            max_attribute_bytes: 2048,
            max_flags: 64,
        }
    }
}

/// Why one object was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectErrorKind {
    #[error("not an object of the form {{\"<class>\":{{\"attributes\":{{...}}}}}}")]
    Shape,
    #[error("no `dn` attribute")]
    MissingDn,
    #[error("attribute `{attribute}` is not a string")]
    NotAString { attribute: &'static str },
    #[error("attribute `{attribute}` is {len} bytes, more than {max}")]
    TooLong {
        attribute: &'static str,
        len: usize,
        max: usize,
    },
    #[error("attribute `dn` does not match the {class} DN grammar")]
    DnMismatch { class: EpmClass },
    #[error("attribute `dn`: {what} `{value}` is out of range")]
    OutOfRange { what: &'static str, value: String },
    #[error("attribute `dn` names no mac or ip address")]
    MissingAddress,
    #[error("attribute `status`: unknown status {0:?}")]
    UnknownStatus(String),
    #[error("attribute `flags` has {count} entries, more than {max}")]
    TooManyFlags { count: usize, max: usize },
}

/// A rejected object: where it was, what it was, why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("imdata[{index}] {class}{}: {kind}", dn.as_deref().map(|d| format!(" dn={d:?}")).unwrap_or_default())]
pub struct ObjectError {
    /// Position in the payload's `imdata`.
    pub index: usize,
    /// The class name as given (truncated to 64 bytes).
    pub class: String,
    /// The DN when there was one (truncated to the DN bound).
    pub dn: Option<String>,
    pub kind: ObjectErrorKind,
}

/// A payload that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is {len} bytes, more than {max}")]
    TooLarge { len: usize, max: usize },
    #[error("payload is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("payload is neither an object with an `imdata` list, a list, nor one APIC object")]
    Shape,
    #[error("top-level `ts` is not a finite, non-negative number")]
    BadTs,
    #[error("payload has {count} objects, more than {max}")]
    TooManyObjects { count: usize, max: usize },
}

/// One object of a payload.
#[derive(Debug, Clone, PartialEq)]
pub enum ApicObject {
    /// An epm endpoint object, parsed.
    Endpoint(EpmEvent),
    /// Any other class (fabric objects: nodes, tunnels, vpcs, EPGs, ...),
    /// left for the fabric model.
    Other {
        class: String,
        attributes: Map<String, Value>,
    },
}

/// A parsed payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The time the payload stands for: its top-level `ts`, else the time
    /// the caller received it.
    pub ts: f64,
    /// Every object in order, parsed or rejected.
    pub objects: Vec<Result<ApicObject, ObjectError>>,
}

/// EPT's `eptEpmEventParser` for one fabric.
#[derive(Debug, Clone)]
pub struct EpmParser {
    fabric: String,
    overlay_vnid: u32,
    limits: Limits,
}

impl EpmParser {
    /// A parser for `fabric` whose `inst-overlay-1` vnid is `overlay_vnid`.
    pub fn new(fabric: impl Into<String>, overlay_vnid: u32) -> Self {
        EpmParser {
            fabric: fabric.into(),
            overlay_vnid,
            limits: Limits::default(),
        }
    }

    /// The same parser with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The fabric name events are tagged with.
    pub fn fabric(&self) -> &str {
        &self.fabric
    }

    /// The overlay vnid used for `inst-overlay-1` DNs.
    pub fn overlay_vnid(&self) -> u32 {
        self.overlay_vnid
    }

    /// Set the overlay vnid (discovered at run time, S:262-266).
    pub fn set_overlay_vnid(&mut self, vnid: u32) {
        self.overlay_vnid = vnid;
    }

    /// Parse one payload: `{"imdata":[...], "ts"?: ...}`, a bare list of
    /// objects, or one object. `received` is used when there is no `ts`.
    pub fn parse_payload(&self, text: &str, received: f64) -> Result<Payload, PayloadError> {
        if text.len() > self.limits.max_payload_bytes {
            return Err(PayloadError::TooLarge {
                len: text.len(),
                max: self.limits.max_payload_bytes,
            });
        }
        let value: Value = serde_json::from_str(text)?;
        self.parse_payload_value(&value, received)
    }

    /// [`EpmParser::parse_payload`] on already-decoded JSON.
    pub fn parse_payload_value(
        &self,
        value: &Value,
        received: f64,
    ) -> Result<Payload, PayloadError> {
        let (ts, list): (f64, Vec<&Value>) = match value {
            Value::Object(map) => {
                let ts = match map.get("ts") {
                    None => received,
                    Some(v) => match v.as_f64() {
                        Some(t) if t.is_finite() && t >= 0.0 => t,
                        _ => return Err(PayloadError::BadTs),
                    },
                };
                match map.get("imdata") {
                    Some(Value::Array(items)) => (ts, items.iter().collect()),
                    Some(_) => return Err(PayloadError::Shape),
                    None => {
                        // One bare APIC object (a `ts` key alongside is allowed).
                        let objects = map.iter().filter(|(k, _)| k.as_str() != "ts").count();
                        if objects != 1 {
                            return Err(PayloadError::Shape);
                        }
                        (ts, vec![value])
                    }
                }
            }
            Value::Array(items) => (received, items.iter().collect()),
            _ => return Err(PayloadError::Shape),
        };
        if list.len() > self.limits.max_objects {
            return Err(PayloadError::TooManyObjects {
                count: list.len(),
                max: self.limits.max_objects,
            });
        }
        let objects = list
            .into_iter()
            .enumerate()
            .map(|(index, item)| self.parse_item(index, item, ts))
            .collect();
        Ok(Payload { ts, objects })
    }

    fn parse_item(&self, index: usize, item: &Value, ts: f64) -> Result<ApicObject, ObjectError> {
        let shape = |class: &str| ObjectError {
            index,
            class: truncate(class, 64),
            dn: None,
            kind: ObjectErrorKind::Shape,
        };
        let Value::Object(outer) = item else {
            return Err(shape(""));
        };
        let mut entries = outer.iter().filter(|(k, _)| k.as_str() != "ts");
        let (class, body) = match (entries.next(), entries.next()) {
            (Some(entry), None) => entry,
            _ => return Err(shape("")),
        };
        let Some(Value::Object(attributes)) = body.get("attributes") else {
            return Err(shape(class));
        };
        match EpmClass::from_name(class) {
            Some(c) => self
                .parse_object(c, attributes, ts)
                .map(ApicObject::Endpoint)
                .map_err(|(dn, kind)| ObjectError {
                    index,
                    class: class.clone(),
                    dn,
                    kind,
                }),
            None => Ok(ApicObject::Other {
                class: class.clone(),
                attributes: attributes.clone(),
            }),
        }
    }

    /// Parse the attributes of one epm object received at `ts` (M:546-631).
    /// On error, returns the DN when there was one, and why.
    pub fn parse_object(
        &self,
        class: EpmClass,
        attributes: &Map<String, Value>,
        ts: f64,
    ) -> Result<EpmEvent, (Option<String>, ObjectErrorKind)> {
        let limits = &self.limits;
        let dn = match attributes.get("dn") {
            None => return Err((None, ObjectErrorKind::MissingDn)),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err((None, ObjectErrorKind::NotAString { attribute: "dn" }));
            }
        };
        if dn.len() > limits.max_dn_bytes {
            return Err((
                Some(truncate(dn, limits.max_dn_bytes)),
                ObjectErrorKind::TooLong {
                    attribute: "dn",
                    len: dn.len(),
                    max: limits.max_dn_bytes,
                },
            ));
        }
        let fail = |kind| Err((Some(dn.to_owned()), kind));
        let regex = match class {
            EpmClass::RsMacEpToIpEpAtt => &*EPM_RS_DN,
            _ => &*EPM_DN,
        };
        let Some(caps) = regex.captures(dn) else {
            return fail(ObjectErrorKind::DnMismatch { class });
        };
        let node = match parse_u32(caps.name("node").map(|m| m.as_str())) {
            Ok(Some(n)) => n,
            Ok(None) => return fail(ObjectErrorKind::DnMismatch { class }),
            Err(v) => {
                return fail(ObjectErrorKind::OutOfRange {
                    what: "node",
                    value: v,
                });
            }
        };
        // M:614-620: vrf from ctx-[vxlan-N], or the overlay vnid.
        let vrf = match parse_u32(caps.name("vrf").map(|m| m.as_str())) {
            Ok(Some(v)) => v,
            Ok(None) if caps.name("ovl").is_some() => self.overlay_vnid,
            Ok(None) => return fail(ObjectErrorKind::DnMismatch { class }),
            Err(v) => {
                return fail(ObjectErrorKind::OutOfRange {
                    what: "vrf vnid",
                    value: v,
                });
            }
        };
        // M:623-624: bd and encap are 0 / "" when absent.
        let bd = match parse_u32(caps.name("bd").map(|m| m.as_str())) {
            Ok(v) => v.unwrap_or(0),
            Err(v) => {
                return fail(ObjectErrorKind::OutOfRange {
                    what: "bd vnid",
                    value: v,
                });
            }
        };
        let encap = caps.name("encap").map(|m| m.as_str()).unwrap_or("");
        let Some(addr) = caps.name("addr").map(|m| m.as_str()) else {
            return fail(ObjectErrorKind::MissingAddress);
        };
        let ip = caps.name("ip").map(|m| m.as_str()).unwrap_or("");

        let string_attr = |name: &'static str| -> Result<&str, ObjectErrorKind> {
            match attributes.get(name) {
                None | Some(Value::Null) => Ok(""),
                Some(Value::String(s)) if s.len() > limits.max_attribute_bytes => {
                    Err(ObjectErrorKind::TooLong {
                        attribute: name,
                        len: s.len(),
                        max: limits.max_attribute_bytes,
                    })
                }
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(_) => Err(ObjectErrorKind::NotAString { attribute: name }),
            }
        };
        // M:596-599: missing or empty status is "created".
        let status = match string_attr("status") {
            Ok("" | "created") => Status::Created,
            Ok("modified") => Status::Modified,
            Ok("deleted") => Status::Deleted,
            Ok(other) => return fail(ObjectErrorKind::UnknownStatus(truncate(other, 64))),
            Err(kind) => return fail(kind),
        };
        // M:600-604: flags split on ",", [] when empty.
        let flags: Vec<String> = match string_attr("flags") {
            Ok("") => Vec::new(),
            Ok(s) => {
                let count = s.split(',').count();
                if count > limits.max_flags {
                    return fail(ObjectErrorKind::TooManyFlags {
                        count,
                        max: limits.max_flags,
                    });
                }
                s.split(',').map(str::to_owned).collect()
            }
            Err(kind) => return fail(kind),
        };
        let if_id = match string_attr("ifId") {
            Ok(s) => s.to_owned(),
            Err(kind) => return fail(kind),
        };
        // M:606-609: pcTag is an int, 0 when missing or not numeric ("any").
        let pctag = match attributes.get("pcTag") {
            Some(Value::String(s)) => s.trim().parse::<i64>().unwrap_or(0),
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
            _ => 0,
        };
        // M:627: the scope is the bd for epmMacEp, the vrf otherwise.
        let vnid = if class == EpmClass::MacEp { bd } else { vrf };
        Ok(EpmEvent {
            fabric: self.fabric.clone(),
            ts,
            classname: class,
            history_type: class.history_type(),
            status,
            flags,
            if_id,
            pctag,
            encap: encap.to_owned(),
            addr: addr.to_owned(),
            ip: ip.to_owned(),
            node,
            vnid,
            vrf,
            bd,
        })
    }
}

/// `Ok(None)` when absent, `Err(text)` when the digits overflow a u32.
fn parse_u32(s: Option<&str>) -> Result<Option<u32>, String> {
    match s {
        None => Ok(None),
        Some(s) => s.parse::<u32>().map(Some).map_err(|_| truncate(s, 32)),
    }
}

/// `s` cut to at most `max` bytes on a character boundary (for error
/// messages that quote untrusted text).
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const OVERLAY: u32 = 16777199;

    fn parser() -> EpmParser {
        EpmParser::new("fab1", OVERLAY)
    }

    fn attrs(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn patterns_compile() {
        assert!(Regex::new(EPM_DN_PATTERN).is_ok());
        assert!(Regex::new(EPM_RS_DN_PATTERN).is_ok());
    }

    #[test]
    fn mac_ep_scope_is_bd() {
        // M:627: vnid = bd for epmMacEp; M:614-624 vrf, bd, encap from the DN.
        let a = attrs(json!({
            "dn": "topology/pod-1/node-101/sys/ctx-[vxlan-2949120]/bd-[vxlan-15990734]/vlan-[vlan-101]/db-ep/mac-00:50:56:AD:BB:16",
            "status": "", "flags": "local,vpc-attached", "ifId": "po3", "pcTag": "32771",
            "modTs": "2026-01-01T00:00:00.000+00:00"
        }));
        let e = parser().parse_object(EpmClass::MacEp, &a, 10.5).unwrap();
        assert_eq!(e.node, 101);
        assert_eq!(e.vrf, 2949120);
        assert_eq!(e.bd, 15990734);
        assert_eq!(e.vnid, 15990734);
        assert_eq!(e.encap, "vlan-101");
        assert_eq!(e.addr, "00:50:56:AD:BB:16");
        assert_eq!(e.status, Status::Created); // M:596-599: empty → created
        assert_eq!(e.flags, vec!["local", "vpc-attached"]);
        assert_eq!(e.pctag, 32771);
        assert_eq!(e.if_id, "po3");
        assert_eq!(e.ts, 10.5); // the receipt time, not modTs
        assert_eq!(e.key_addr(), "00:50:56:AD:BB:16");
    }

    #[test]
    fn ip_ep_scope_is_vrf_and_overlay() {
        // M:614-620: inst-overlay-1 gives the overlay vnid; M:627 vnid = vrf.
        let a = attrs(json!({
            "dn": "topology/pod-1/node-102/sys/inst-overlay-1/db-ep/ip-[10.0.0.32]",
            "flags": "", "pcTag": "any"
        }));
        let e = parser().parse_object(EpmClass::IpEp, &a, 1.0).unwrap();
        assert_eq!(e.vrf, OVERLAY);
        assert_eq!(e.vnid, OVERLAY);
        assert_eq!(e.bd, 0);
        assert_eq!(e.encap, "");
        assert_eq!(e.addr, "10.0.0.32");
        assert!(e.flags.is_empty()); // M:600-604
        assert_eq!(e.pctag, 0); // M:606-609: "any" → 0
        assert_eq!(e.status, Status::Created); // missing status → created
    }

    #[test]
    fn ipv6_ep() {
        let a = attrs(json!({
            "dn": "topology/pod-1/node-103/sys/ctx-[vxlan-2523136]/db-ep/ip-[2001:db8::a:1]",
            "status": "deleted", "flags": "local"
        }));
        let e = parser().parse_object(EpmClass::IpEp, &a, 1.0).unwrap();
        assert_eq!(e.addr, "2001:db8::a:1");
        assert_eq!(e.vnid, 2523136);
        assert_eq!(e.status, Status::Deleted);
    }

    #[test]
    fn rs_object_keys_on_ip() {
        // M:575-587: rs objects, addr = MAC, ip = IP; W:497 key address = IP.
        let a = attrs(json!({
            "dn": "topology/pod-1/node-101/sys/ctx-[vxlan-2949120]/bd-[vxlan-15990734]/vlan-[vlan-101]/db-ep/mac-00:50:56:AD:BB:16/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-2949120]/bd-[vxlan-15990734]/vlan-[vlan-101]/db-ep/ip-[10.1.1.101]]",
            "status": "created"
        }));
        let e = parser()
            .parse_object(EpmClass::RsMacEpToIpEpAtt, &a, 1.0)
            .unwrap();
        assert_eq!(e.addr, "00:50:56:AD:BB:16");
        assert_eq!(e.ip, "10.1.1.101");
        assert_eq!(e.key_addr(), "10.1.1.101");
        assert_eq!(e.vnid, 2949120); // vrf, not bd
        assert_eq!(e.bd, 15990734);
        let k = e.key();
        assert_eq!(
            (k.fabric.as_str(), k.vnid, k.addr.as_str()),
            ("fab1", 2949120, "10.1.1.101")
        );
    }

    #[test]
    fn vxlan_encap() {
        let a = attrs(json!({
            "dn": "topology/pod-1/node-101/sys/ctx-[vxlan-1]/bd-[vxlan-2]/vxlan-[vxlan-8000]/db-ep/mac-AA:BB:CC:DD:EE:FF"
        }));
        let e = parser().parse_object(EpmClass::MacEp, &a, 1.0).unwrap();
        assert_eq!(e.encap, "vxlan-8000");
    }

    #[test]
    fn located_errors() {
        let p = parser();
        let (_, k) = p
            .parse_object(EpmClass::MacEp, &attrs(json!({})), 1.0)
            .unwrap_err();
        assert_eq!(k, ObjectErrorKind::MissingDn);
        let (dn, k) = p
            .parse_object(EpmClass::MacEp, &attrs(json!({"dn": "uni/tn-x"})), 1.0)
            .unwrap_err();
        assert_eq!(dn.as_deref(), Some("uni/tn-x"));
        assert_eq!(
            k,
            ObjectErrorKind::DnMismatch {
                class: EpmClass::MacEp
            }
        );
        let (_, k) = p
            .parse_object(
                EpmClass::MacEp,
                &attrs(json!({"dn": "node-99999999999/sys/ctx-[vxlan-1]/db-ep/mac-AA"})),
                1.0,
            )
            .unwrap_err();
        assert!(matches!(
            k,
            ObjectErrorKind::OutOfRange { what: "node", .. }
        ));
        let (_, k) = p
            .parse_object(
                EpmClass::MacEp,
                &attrs(json!({"dn": "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA", "status": "bogus"})),
                1.0,
            )
            .unwrap_err();
        assert_eq!(k, ObjectErrorKind::UnknownStatus("bogus".into()));
        let (_, k) = p
            .parse_object(
                EpmClass::MacEp,
                &attrs(json!({"dn": "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA", "flags": 3})),
                1.0,
            )
            .unwrap_err();
        assert_eq!(k, ObjectErrorKind::NotAString { attribute: "flags" });
        let (_, k) = p
            .parse_object(
                EpmClass::MacEp,
                &attrs(json!({"dn": "node-1/sys/ctx-[vxlan-1]/db-ep/"})),
                1.0,
            )
            .unwrap_err();
        assert_eq!(k, ObjectErrorKind::MissingAddress);
        let long = format!("node-1/sys/ctx-[vxlan-1]/db-ep/mac-{}", "A".repeat(5000));
        let (dn, k) = p
            .parse_object(EpmClass::MacEp, &attrs(json!({ "dn": long })), 1.0)
            .unwrap_err();
        assert!(matches!(
            k,
            ObjectErrorKind::TooLong {
                attribute: "dn",
                ..
            }
        ));
        assert!(dn.map(|d| d.len() <= 2048).unwrap_or(false));
        let flags = vec!["x"; 100].join(",");
        let (_, k) = p
            .parse_object(
                EpmClass::MacEp,
                &attrs(json!({"dn": "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA", "flags": flags})),
                1.0,
            )
            .unwrap_err();
        assert_eq!(
            k,
            ObjectErrorKind::TooManyFlags {
                count: 100,
                max: 64
            }
        );
    }

    #[test]
    fn payload_imdata_with_ts_and_bad_objects() {
        let text = json!({
            "ts": 1700000000.25,
            "imdata": [
                {"epmMacEp": {"attributes": {"dn": "topology/pod-1/node-101/sys/ctx-[vxlan-1]/bd-[vxlan-5]/vlan-[vlan-9]/db-ep/mac-00:00:00:00:00:01", "status": "created", "flags": "local"}}},
                {"epmIpEp": {"attributes": {"dn": "garbage"}}},
                {"fabricNode": {"attributes": {"dn": "topology/pod-1/node-101", "id": "101"}}},
                "not an object",
                {"epmIpEp": {"children": []}}
            ]
        })
        .to_string();
        let p = parser().parse_payload(&text, 5.0).unwrap();
        assert_eq!(p.ts, 1700000000.25);
        assert_eq!(p.objects.len(), 5);
        match &p.objects[0] {
            Ok(ApicObject::Endpoint(e)) => {
                assert_eq!(e.ts, 1700000000.25);
                assert_eq!(e.vnid, 5);
            }
            other => panic!("{other:?}"),
        }
        let e = p.objects[1].clone().unwrap_err();
        assert_eq!(e.index, 1);
        assert_eq!(e.class, "epmIpEp");
        let msg = e.to_string();
        assert!(msg.contains("imdata[1] epmIpEp dn=\"garbage\""), "{msg}");
        assert!(
            matches!(&p.objects[2], Ok(ApicObject::Other { class, .. }) if class == "fabricNode")
        );
        assert_eq!(
            p.objects[3].clone().unwrap_err().kind,
            ObjectErrorKind::Shape
        );
        assert_eq!(p.objects[4].clone().unwrap_err().class, "epmIpEp");
    }

    #[test]
    fn websocket_notification_and_class_query_shapes() {
        // A websocket notification carries subscription ids beside imdata;
        // a class-query response carries totalCount.
        let ws = json!({"subscriptionId": ["72057611234574337"], "imdata": [
            {"epmIpEp": {"attributes": {"dn": "topology/pod-1/node-101/sys/ctx-[vxlan-7]/db-ep/ip-[10.9.0.1]",
                                         "status": "deleted", "childAction": "", "modTs": "never", "rn": "", "ts": "x"}}}
        ]});
        let p = parser().parse_payload(&ws.to_string(), 42.0).unwrap();
        assert_eq!(p.ts, 42.0);
        match &p.objects[0] {
            Ok(ApicObject::Endpoint(e)) => {
                assert_eq!((e.status, e.vnid, e.ts), (Status::Deleted, 7, 42.0));
            }
            other => panic!("{other:?}"),
        }
        let q = json!({"totalCount": "1", "imdata": [
            {"epmRsMacEpToIpEpAtt": {"attributes": {"dn": "topology/pod-1/node-101/sys/ctx-[vxlan-7]/bd-[vxlan-8]/vlan-[vlan-3]/db-ep/mac-00:00:00:00:00:01/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-7]/bd-[vxlan-8]/vlan-[vlan-3]/db-ep/ip-[10.9.0.1]]"}}}
        ]});
        let p = parser().parse_payload(&q.to_string(), 1.0).unwrap();
        assert!(
            matches!(&p.objects[0], Ok(ApicObject::Endpoint(e)) if e.ip == "10.9.0.1" && e.bd == 8)
        );
    }

    #[test]
    fn payload_defaults_and_errors() {
        let p = parser().parse_payload(r#"{"imdata":[]}"#, 7.0).unwrap();
        assert_eq!(p.ts, 7.0);
        assert!(p.objects.is_empty());
        let one = r#"{"epmMacEp":{"attributes":{"dn":"node-1/sys/ctx-[vxlan-1]/bd-[vxlan-2]/db-ep/mac-AA"}}}"#;
        let p = parser().parse_payload(one, 7.0).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert!(matches!(
            parser().parse_payload("nope", 1.0),
            Err(PayloadError::Json(_))
        ));
        assert!(matches!(
            parser().parse_payload("3", 1.0),
            Err(PayloadError::Shape)
        ));
        assert!(matches!(
            parser().parse_payload(r#"{"imdata":[],"ts":"x"}"#, 1.0),
            Err(PayloadError::BadTs)
        ));
        assert!(matches!(
            parser().parse_payload(r#"{"imdata":[],"ts":-1}"#, 1.0),
            Err(PayloadError::BadTs)
        ));
        let small = parser().with_limits(Limits {
            max_payload_bytes: 10,
            ..Limits::default()
        });
        assert!(matches!(
            small.parse_payload(r#"{"imdata":[]} "#, 1.0),
            Err(PayloadError::TooLarge { .. })
        ));
        let few = parser().with_limits(Limits {
            max_objects: 1,
            ..Limits::default()
        });
        assert!(matches!(
            few.parse_payload(r#"[{},{}]"#, 1.0),
            Err(PayloadError::TooManyObjects { count: 2, max: 1 })
        ));
    }

    fn class_strategy() -> impl Strategy<Value = EpmClass> {
        prop_oneof![
            Just(EpmClass::MacEp),
            Just(EpmClass::IpEp),
            Just(EpmClass::RsMacEpToIpEpAtt)
        ]
    }

    proptest! {
        #[test]
        fn no_input_panics(class in class_strategy(), dn in ".{0,300}", status in ".{0,20}",
                           flags in ".{0,60}", pctag in ".{0,12}", ifid in ".{0,20}") {
            let a = attrs(json!({"dn": dn, "status": status, "flags": flags, "pcTag": pctag, "ifId": ifid}));
            let _ = parser().parse_object(class, &a, 1.0);
        }

        #[test]
        fn no_payload_panics(text in ".{0,400}") {
            let _ = parser().parse_payload(&text, 1.0);
        }

        #[test]
        fn no_dn_like_panics(parts in proptest::collection::vec(prop_oneof![
            Just("node-".to_string()), Just("/sys/".to_string()), Just("ctx-[vxlan-".to_string()),
            Just("inst-overlay-1/".to_string()), Just("bd-[vxlan-".to_string()), Just("]/".to_string()),
            Just("db-ep/".to_string()), Just("mac-".to_string()), Just("ip-[".to_string()),
            Just("/rsmacEpToIpEpAtt-[".to_string()), "[0-9]{1,12}", "[0-9a-f:.]{1,8}",
        ], 0..24), class in class_strategy()) {
            let a = attrs(json!({"dn": parts.concat()}));
            let _ = parser().parse_object(class, &a, 1.0);
        }

        #[test]
        fn generated_dns_round_trip(
            class in class_strategy(),
            node in 1u32..=u32::MAX,
            vrf in proptest::option::of(0u32..=u32::MAX),
            bd in proptest::option::of(0u32..=u32::MAX),
            encap in proptest::option::of((any::<bool>(), 0u32..=16_777_215)),
            mac in "[0-9A-F]{2}(:[0-9A-F]{2}){5}",
            ip in prop_oneof!["[0-9]{1,3}(\\.[0-9]{1,3}){3}", "[0-9a-f]{1,4}(:[0-9a-f]{0,4}){2,7}"],
        ) {
            let ctx = match vrf { Some(v) => format!("ctx-[vxlan-{v}]/"), None => "inst-overlay-1/".into() };
            let bd_part = bd.map(|b| format!("bd-[vxlan-{b}]/")).unwrap_or_default();
            let encap_s = encap.map(|(vx, n)| if vx { format!("vxlan-{n}") } else { format!("vlan-{n}") });
            let encap_part = encap_s.as_ref().map(|e| {
                let outer = if e.starts_with("vx") { "vxlan" } else { "vlan" };
                format!("{outer}-[{e}]/")
            }).unwrap_or_default();
            let base = format!("topology/pod-1/node-{node}/sys/{ctx}{bd_part}{encap_part}db-ep/");
            let dn = match class {
                EpmClass::MacEp => format!("{base}mac-{mac}"),
                EpmClass::IpEp => format!("{base}ip-[{ip}]"),
                EpmClass::RsMacEpToIpEpAtt => format!(
                    "{base}mac-{mac}/rsmacEpToIpEpAtt-[sys/{ctx}{bd_part}{encap_part}db-ep/ip-[{ip}]]"),
            };
            let e = parser().parse_object(class, &attrs(json!({"dn": dn})), 3.0);
            let e = match e { Ok(e) => e, Err(err) => return Err(TestCaseError::fail(format!("{dn}: {err:?}"))) };
            prop_assert_eq!(e.node, node);
            prop_assert_eq!(e.vrf, vrf.unwrap_or(OVERLAY));
            prop_assert_eq!(e.bd, bd.unwrap_or(0));
            prop_assert_eq!(&e.encap, &encap_s.unwrap_or_default());
            match class {
                EpmClass::MacEp => { prop_assert_eq!(&e.addr, &mac); prop_assert_eq!(e.vnid, bd.unwrap_or(0)); }
                EpmClass::IpEp => { prop_assert_eq!(&e.addr, &ip); prop_assert_eq!(e.vnid, e.vrf); }
                EpmClass::RsMacEpToIpEpAtt => {
                    prop_assert_eq!(&e.addr, &mac);
                    prop_assert_eq!(&e.ip, &ip);
                    prop_assert_eq!(e.key_addr(), ip.as_str());
                    prop_assert_eq!(e.vnid, e.vrf);
                }
            }
        }
    }
}
