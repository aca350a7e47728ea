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
//!
//! # How a payload is read
//!
//! Issue #14's initial build parses 4.26 million epm objects in under 60 s
//! on two cores, next to the history workers, so parsing has to cost about
//! a microsecond an object. Decoding into a [`serde_json::Value`] first (a
//! map per object, a `String` per attribute, all dropped again) and
//! matching DNs with EPT's regexes cost 5-6 µs an object of a class-query
//! page, single-threaded. So:
//!
//! - [`EpmParser::parse_payload`] reads the text with serde visitors (the
//!   private `Json` seed and its `Shape`s) that walk `imdata` as a
//!   sequence and keep, of an epm object, only the five attributes EPT
//!   reads, as `Cow`s borrowed from the text (owned only when a string has
//!   JSON escapes); every other value is read through without being built.
//!   Objects of other classes (the fabric model's, few) still get their
//!   attributes as a `Value` map ([`ApicObject::Other`]), so pages mixing
//!   classes are read as before.
//! - DNs are matched by a hand-written matcher of EPT's grammar
//!   (`match_epm_dn`); the regexes stay the specification, and the tests
//!   compare the two on every DN shape the tests use and on generated and
//!   malformed DNs.
//!
//! The visitors accept exactly what decoding into a `Value` first accepted,
//! with the same outcome: every value, a skipped one too, is read with
//! `deserialize_any` (so serde_json's nesting limit and string checks apply
//! as they did), a repeated key counts once with its last value as in a
//! `Value` map, and the payload's `ts`, shape and object count are judged
//! after the whole text was read (a JSON error anywhere still wins). The
//! tests keep the `Value`-based parser as the reference and compare on
//! generated payloads, valid and not. [`EpmParser::parse_payload_value`]
//! runs the same visitors over an already-decoded `Value` (replays, and the
//! APIC subscriber when it records or must flatten `children`; otherwise
//! the subscriber parses its pages and notifications from the text): that
//! saves the regexes and the attribute copies, not the `Value`.
//!
//! Measured on this 2-core machine (shared with other builds; the old and
//! new parser on the same tree, two runs each), `history` bench
//! (`vigil-endpoints`): class-query pages 5.2-6.2 µs an object before, 1.0-1.1
//! µs now from the text (2.7-3.1 µs through a `Value`); websocket
//! notifications of one object 3.0-4.4 µs before, 1.0-1.2 µs now.
//! `ept_scale` (`vigil-store`, 20,000 endpoints, sqlite: 851,000 objects):
//! parsing 12.7-12.8 s of CPU before, 2.4-2.8 s now (timed while the
//! history workers share the cores), the initial build 13.6-13.8 s wall
//! before, 8.9-9.8 s now.

use crate::model::{EpmClass, EpmEvent, Status};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

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
        // What `serde_json::from_str` does, with our visitors for `Value`'s.
        let mut de = serde_json::Deserializer::from_str(text);
        let top = Json(TopLevel { parser: self }).deserialize(&mut de)?;
        de.end()?;
        self.finish(top, received)
    }

    /// [`EpmParser::parse_payload`] on already-decoded JSON.
    pub fn parse_payload_value(
        &self,
        value: &Value,
        received: f64,
    ) -> Result<Payload, PayloadError> {
        // The visitors never fail, and a `Value` is well-formed: no error.
        let top = Json(TopLevel { parser: self }).deserialize(value)?;
        self.finish(top, received)
    }

    /// The payload from what its top level held, judged as a whole: `ts`,
    /// then the shape, then the object count.
    fn finish(&self, top: Top<'_>, received: f64) -> Result<Payload, PayloadError> {
        let (ts, items) = match top {
            Top::Scalar => return Err(PayloadError::Shape),
            Top::List(items) => (received, items),
            Top::Object { ts, imdata, bare } => {
                let ts = match ts {
                    None => received,
                    Some(Some(t)) if t.is_finite() && t >= 0.0 => t,
                    Some(_) => return Err(PayloadError::BadTs),
                };
                match (imdata, bare) {
                    (Some(Some(items)), _) => (ts, items),
                    (Some(None), _) => return Err(PayloadError::Shape),
                    // One bare APIC object (a `ts` key alongside is allowed).
                    (None, Entries::One(class, body)) => (
                        ts,
                        Items {
                            objects: vec![self.object(0, class, body)],
                            count: 1,
                        },
                    ),
                    (None, _) => return Err(PayloadError::Shape),
                }
            }
        };
        if items.count > self.limits.max_objects {
            return Err(PayloadError::TooManyObjects {
                count: items.count,
                max: self.limits.max_objects,
            });
        }
        let mut objects = items.objects;
        // Events were parsed before `ts` was known (it may follow `imdata`).
        for object in &mut objects {
            if let Ok(ApicObject::Endpoint(event)) = object {
                event.ts = ts;
            }
        }
        Ok(Payload { ts, objects })
    }

    /// One `{"<class>": <body>}` entry as an object (its events' `ts` is 0
    /// until [`EpmParser::finish`] sets it).
    fn object(
        &self,
        index: usize,
        class: Cow<'_, str>,
        body: Body<'_>,
    ) -> Result<ApicObject, ObjectError> {
        match body {
            Body::NoAttributes => Err(shape_error(index, &class)),
            Body::Endpoint(epm, attributes) => self
                .event(epm, &attributes, 0.0)
                .map(ApicObject::Endpoint)
                .map_err(|(dn, kind)| ObjectError {
                    index,
                    class: class.into_owned(),
                    dn,
                    kind,
                }),
            Body::Other(attributes) => Ok(ApicObject::Other {
                class: class.into_owned(),
                attributes,
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
        let get = |name| Attr::of(attributes.get(name));
        let attributes = Attributes {
            dn: get("dn"),
            status: get("status"),
            flags: get("flags"),
            if_id: get("ifId"),
            pc_tag: get("pcTag"),
        };
        self.event(class, &attributes, ts)
    }

    /// EPT's parse of one epm object's attributes (M:546-631).
    fn event(
        &self,
        class: EpmClass,
        attributes: &Attributes<'_>,
        ts: f64,
    ) -> Result<EpmEvent, (Option<String>, ObjectErrorKind)> {
        let limits = &self.limits;
        let dn: &str = match &attributes.dn {
            Attr::Absent => return Err((None, ObjectErrorKind::MissingDn)),
            Attr::Str(s) => s.as_ref(),
            Attr::Null | Attr::Int(_) | Attr::Other => {
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
        let Some(parts) = match_epm_dn(dn, class == EpmClass::RsMacEpToIpEpAtt) else {
            return fail(ObjectErrorKind::DnMismatch { class });
        };
        let node = match parse_u32(parts.node) {
            Ok(n) => n,
            Err(v) => {
                return fail(ObjectErrorKind::OutOfRange {
                    what: "node",
                    value: v,
                });
            }
        };
        // M:614-620: vrf from ctx-[vxlan-N], or the overlay vnid.
        let vrf = match parts.vrf.map(parse_u32) {
            None => self.overlay_vnid,
            Some(Ok(v)) => v,
            Some(Err(v)) => {
                return fail(ObjectErrorKind::OutOfRange {
                    what: "vrf vnid",
                    value: v,
                });
            }
        };
        // M:623-624: bd and encap are 0 / "" when absent.
        let bd = match parts.bd.map(parse_u32) {
            None => 0,
            Some(Ok(v)) => v,
            Some(Err(v)) => {
                return fail(ObjectErrorKind::OutOfRange {
                    what: "bd vnid",
                    value: v,
                });
            }
        };
        let encap = parts.encap.unwrap_or("");
        let Some(addr) = parts.addr else {
            return fail(ObjectErrorKind::MissingAddress);
        };
        let ip = parts.ip.unwrap_or("");

        let max = limits.max_attribute_bytes;
        // M:596-599: missing or empty status is "created".
        let status = match string_attr(&attributes.status, "status", max) {
            Ok("" | "created") => Status::Created,
            Ok("modified") => Status::Modified,
            Ok("deleted") => Status::Deleted,
            Ok(other) => return fail(ObjectErrorKind::UnknownStatus(truncate(other, 64))),
            Err(kind) => return fail(kind),
        };
        // M:600-604: flags split on ",", [] when empty.
        let flags: Vec<String> = match string_attr(&attributes.flags, "flags", max) {
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
        let if_id = match string_attr(&attributes.if_id, "ifId", max) {
            Ok(s) => s.to_owned(),
            Err(kind) => return fail(kind),
        };
        // M:606-609: pcTag is an int, 0 when missing or not numeric ("any").
        let pctag = match &attributes.pc_tag {
            Attr::Str(s) => s.trim().parse::<i64>().unwrap_or(0),
            Attr::Int(n) => *n,
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

/// `status`, `flags` or `ifId` as a string: "" when missing or null,
/// bounded by [`Limits::max_attribute_bytes`].
fn string_attr<'v>(
    value: &'v Attr<'_>,
    name: &'static str,
    max: usize,
) -> Result<&'v str, ObjectErrorKind> {
    match value {
        Attr::Absent | Attr::Null => Ok(""),
        Attr::Str(s) if s.len() > max => Err(ObjectErrorKind::TooLong {
            attribute: name,
            len: s.len(),
            max,
        }),
        Attr::Str(s) => Ok(s.as_ref()),
        Attr::Int(_) | Attr::Other => Err(ObjectErrorKind::NotAString { attribute: name }),
    }
}

fn shape_error(index: usize, class: &str) -> ObjectError {
    ObjectError {
        index,
        class: truncate(class, 64),
        dn: None,
        kind: ObjectErrorKind::Shape,
    }
}

/// The digits of a DN part as a u32; `Err(text)` when they overflow.
fn parse_u32(s: &str) -> Result<u32, String> {
    s.parse::<u32>().map_err(|_| truncate(s, 32))
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

// ---------------------------------------------------------------------------
// EPT's DN grammar, by hand.

/// What EPT's patterns capture of a DN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EpmDn<'a> {
    /// `node-<node>/sys/`.
    node: &'a str,
    /// `ctx-[vxlan-<vrf>]/`; `None` for `inst-overlay-1/` (the only other
    /// choice).
    vrf: Option<&'a str>,
    /// `bd-[vxlan-<bd>]/`.
    bd: Option<&'a str>,
    /// `vlan-[<encap>]/` or `vxlan-[<encap>]/`.
    encap: Option<&'a str>,
    /// `mac-<addr>`, `ip-[<addr>]` (brackets optional).
    addr: Option<&'a str>,
    /// The rs object's `ip-[<ip>]` (rs DNs only).
    ip: Option<&'a str>,
}

const RS_INFIX: &[u8] = b"/rsmacEpToIpEpAtt-";

/// [`EPM_DN_PATTERN`] (or, with `rs`, [`EPM_RS_DN_PATTERN`]) searched in
/// `dn` as `Regex::captures` would: the match starting leftmost, each
/// part taken as the regex prefers it.
///
/// Every optional part and alternative of the grammar is told apart by
/// its first bytes (`ctx-` or `inst-`, `bd-`, `v`, `db-ep/`, `mac-` or
/// `ip-`, `[`), and every repetition ends at a byte outside its class that
/// the next part must start with, so once `node-` is found there is one
/// way to match, tried left to right without backtracking; a failed
/// attempt moves on to the next `node-`. In the rs pattern the address
/// group is followed by `/rsmacEpToIpEpAtt-`: when that does not follow,
/// the group left out is tried (the infix right after `db-ep/`). Its lazy
/// `.+?` is the first `ip-[..]` after at least one character, none of them
/// a newline (`.` stops there). Searches for the rs tail are remembered
/// across attempts ([`FirstFrom`]), so a hostile DN costs linear time.
fn match_epm_dn(dn: &str, rs: bool) -> Option<EpmDn<'_>> {
    let b = dn.as_bytes();
    let mut ip_hits = FirstFrom::default();
    let mut newlines = FirstFrom::default();
    let mut from = 0;
    loop {
        let start = find(b, from, b"node-")?;
        if let Some(parts) = match_at(dn, start + 5, rs, &mut ip_hits, &mut newlines) {
            return Some(parts);
        }
        from = start + 1;
    }
}

/// The grammar from just after `node-` at `at`.
fn match_at<'a>(
    dn: &'a str,
    at: usize,
    rs: bool,
    ip_hits: &mut FirstFrom<(usize, usize)>,
    newlines: &mut FirstFrom<()>,
) -> Option<EpmDn<'a>> {
    let b = dn.as_bytes();
    // All bytes matched are ASCII, so every index below is a char
    // boundary; `get` keeps that from ever mattering.
    let part = |from: usize, to: usize| dn.get(from..to);
    let node_end = run(b, at, is_digit)?;
    let node = part(at, node_end)?;
    let mut i = lit(b, node_end, b"/sys/")?;
    let vrf = if let Some(j) = lit(b, i, b"ctx-[vxlan-") {
        let end = run(b, j, is_digit)?;
        i = lit(b, end, b"]/")?;
        Some(part(j, end)?)
    } else {
        i = lit(b, i, b"inst-overlay-1/")?;
        None
    };
    let mut bd = None;
    if let Some(j) = lit(b, i, b"bd-[vxlan-")
        && let Some(end) = run(b, j, is_digit)
        && let Some(next) = lit(b, end, b"]/")
    {
        bd = part(j, end);
        i = next;
    }
    let mut encap = None;
    if let Some(j) = vx_lan(b, i).and_then(|j| lit(b, j, b"["))
        && let Some(end) = vx_lan(b, j).and_then(|k| run(b, k, is_digit))
        && let Some(next) = lit(b, end, b"]/")
    {
        encap = part(j, end);
        i = next;
    }
    i = lit(b, i, b"db-ep/")?;
    // `((mac|ip)-\[?(?P<addr>..+)\]?)?`: `[` taken when there, the address
    // as long as it goes, `]` taken when there.
    let group = addr_group(b, i);
    let mut parts = EpmDn {
        node,
        vrf,
        bd,
        encap,
        addr: None,
        ip: None,
    };
    if !rs {
        if let Some((start, end, _)) = group {
            parts.addr = part(start, end);
        }
        return Some(parts);
    }
    // The address group then `/rsmacEpToIpEpAtt-`, or, the group left
    // out, `/rsmacEpToIpEpAtt-` right after `db-ep/`.
    let tail =
        match group.and_then(|(start, end, next)| Some((start, end, lit(b, next, RS_INFIX)?))) {
            Some((start, end, tail)) => {
                parts.addr = part(start, end);
                tail
            }
            None => lit(b, i, RS_INFIX)?,
        };
    // `.+?ip-\[(?P<ip>..+)\]`: the first `ip-[..]` past `tail`, before any
    // newline.
    let (at, (start, end)) = ip_hits.first(tail + 1, |from| {
        let mut p = from;
        loop {
            p = find(b, p, b"ip-[")?;
            if let Some(end) = run(b, p + 4, is_addr)
                && lit(b, end, b"]").is_some()
            {
                return Some((p, (p + 4, end)));
            }
            p += 1;
        }
    })?;
    if let Some((newline, ())) = newlines.first(tail, |from| Some((find(b, from, b"\n")?, ())))
        && newline < at
    {
        return None;
    }
    parts.ip = Some(part(start, end)?);
    Some(parts)
}

/// `((mac|ip)-\[?(?P<addr>[0-9\.a-fA-F:]+)\]?)` at `at`: the address's
/// start and end, and the end of the group.
fn addr_group(b: &[u8], at: usize) -> Option<(usize, usize, usize)> {
    let j = lit(b, at, b"mac-").or_else(|| lit(b, at, b"ip-"))?;
    // `[` taken when there; were it left out, the address would have to
    // start with `[`, which it cannot.
    let start = lit(b, j, b"[").unwrap_or(j);
    let end = run(b, start, is_addr)?;
    Some((start, end, lit(b, end, b"]").unwrap_or(end)))
}

/// The first position at or after a point where something is found, kept
/// from one query to the next: a DN with many `node-` tries asks from
/// increasing points, and an answer stays good until the point passes it,
/// so the rs tail is searched in linear time overall.
struct FirstFrom<T> {
    /// `(from, first hit at or after from)` of the last search.
    last: Option<(usize, Option<(usize, T)>)>,
}

impl<T> Default for FirstFrom<T> {
    fn default() -> Self {
        FirstFrom { last: None }
    }
}

impl<T: Copy> FirstFrom<T> {
    fn first(
        &mut self,
        from: usize,
        search: impl FnOnce(usize) -> Option<(usize, T)>,
    ) -> Option<(usize, T)> {
        if let Some((searched, hit)) = self.last
            && searched <= from
            && hit.is_none_or(|(at, _)| at >= from)
        {
            return hit;
        }
        let hit = search(from);
        self.last = Some((from, hit));
        hit
    }
}

fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

/// `[0-9\.a-fA-F:]`.
fn is_addr(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b'.' || c == b':'
}

/// The index after `literal` when `b` has it at `at`.
fn lit(b: &[u8], at: usize, literal: &[u8]) -> Option<usize> {
    b.get(at..)?
        .starts_with(literal)
        .then_some(at + literal.len())
}

/// The end of a run of at least one byte in `class` from `at`.
fn run(b: &[u8], at: usize, class: fn(u8) -> bool) -> Option<usize> {
    let n = b.get(at..)?.iter().take_while(|&&c| class(c)).count();
    (n > 0).then_some(at + n)
}

/// `vx?lan-`.
fn vx_lan(b: &[u8], at: usize) -> Option<usize> {
    let at = lit(b, at, b"v")?;
    lit(b, lit(b, at, b"x").unwrap_or(at), b"lan-")
}

/// The first index at or after `from` where `needle` (not empty) starts.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut p = from;
    loop {
        p += b.get(p..)?.iter().position(|&c| c == first)?;
        if lit(b, p, needle).is_some() {
            return Some(p);
        }
        p += 1;
    }
}

// ---------------------------------------------------------------------------
// Reading payloads with serde visitors instead of through `Value`.

/// An attribute's value as the parse needs it.
#[derive(Debug, Default)]
enum Attr<'a> {
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    /// A number `Value::as_i64` would give.
    Int(i64),
    /// Any other number, a bool, a list or an object.
    Other,
}

impl<'a> Attr<'a> {
    fn of(value: Option<&'a Value>) -> Attr<'a> {
        match value {
            None => Attr::Absent,
            Some(Value::Null) => Attr::Null,
            Some(Value::String(s)) => Attr::Str(Cow::Borrowed(s)),
            Some(Value::Number(n)) => n.as_i64().map_or(Attr::Other, Attr::Int),
            Some(_) => Attr::Other,
        }
    }
}

/// The attributes of an epm object EPT reads (M:589-609).
#[derive(Debug, Default)]
struct Attributes<'a> {
    dn: Attr<'a>,
    status: Attr<'a>,
    flags: Attr<'a>,
    if_id: Attr<'a>,
    pc_tag: Attr<'a>,
}

/// The body of a `{"<class>": <body>}` entry.
enum Body<'a> {
    /// No `attributes` object.
    NoAttributes,
    Endpoint(EpmClass, Attributes<'a>),
    Other(Map<String, Value>),
}

/// The entries of an object other than `ts` (and, at the top level,
/// `imdata`): a repeated key counts once, with its last value, as in a
/// `Value` map.
enum Entries<'a> {
    None,
    One(Cow<'a, str>, Body<'a>),
    Several,
}

impl<'a> Entries<'a> {
    /// Read the value of `key`: parsed as a body while it may be the one
    /// entry, read through otherwise.
    fn read<A: MapAccess<'a>>(&mut self, key: Cow<'a, str>, map: &mut A) -> Result<(), A::Error> {
        match self {
            Entries::None => {
                let body = map.next_value_seed(Json(BodyOf(EpmClass::from_name(&key))))?;
                *self = Entries::One(key, body);
            }
            Entries::One(class, body) if *class == key => {
                *body = map.next_value_seed(Json(BodyOf(EpmClass::from_name(&key))))?;
            }
            Entries::One(..) | Entries::Several => {
                map.next_value_seed(Json(Skip))?;
                *self = Entries::Several;
            }
        }
        Ok(())
    }
}

/// The objects of an `imdata` list (or a bare list), and how many there
/// were (past the bound they are only counted).
struct Items {
    objects: Vec<Result<ApicObject, ObjectError>>,
    count: usize,
}

/// What a payload's top level held.
enum Top<'a> {
    /// Not an object nor a list.
    Scalar,
    List(Items),
    Object {
        /// `Some(None)`: a `ts` that is not a number.
        ts: Option<Option<f64>>,
        /// `Some(None)`: an `imdata` that is not a list.
        imdata: Option<Option<Items>>,
        bare: Entries<'a>,
    },
}

/// What a visitor makes of each kind of JSON value; what it does not
/// expect becomes [`Shape::other`], read through (lists and objects with
/// [`Skip`]) so the whole document is still checked as JSON.
trait Shape<'de>: Sized {
    type Out;
    fn other(self) -> Self::Out;
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        while map.next_entry_seed(Json(Skip), Json(Skip))?.is_some() {}
        Ok(self.other())
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Out, A::Error> {
        while seq.next_element_seed(Json(Skip))?.is_some() {}
        Ok(self.other())
    }
    /// A string borrowed from the input (no escapes in it).
    fn borrowed(self, s: &'de str) -> Self::Out {
        self.string(s)
    }
    /// A string unescaped into a scratch buffer.
    fn string(self, _: &str) -> Self::Out {
        self.other()
    }
    fn u64(self, _: u64) -> Self::Out {
        self.other()
    }
    fn i64(self, _: i64) -> Self::Out {
        self.other()
    }
    fn f64(self, _: f64) -> Self::Out {
        self.other()
    }
    fn null(self) -> Self::Out {
        self.other()
    }
}

/// A [`Shape`] as a serde seed and visitor. Every value is read with
/// `deserialize_any`, as `Value` reads it, so serde_json applies the same
/// checks (nesting depth, escapes, numbers) to what is skipped.
struct Json<S>(S);

impl<'de, S: Shape<'de>> DeserializeSeed<'de> for Json<S> {
    type Value = S::Out;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Out, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, S: Shape<'de>> Visitor<'de> for Json<S> {
    type Value = S::Out;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<S::Out, A::Error> {
        self.0.map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<S::Out, A::Error> {
        self.0.seq(seq)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<S::Out, E> {
        Ok(self.0.borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<S::Out, E> {
        Ok(self.0.string(v))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<S::Out, E> {
        Ok(self.0.string(&v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<S::Out, E> {
        Ok(self.0.u64(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<S::Out, E> {
        Ok(self.0.i64(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<S::Out, E> {
        Ok(self.0.f64(v))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<S::Out, E> {
        Ok(self.0.other())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<S::Out, E> {
        Ok(self.0.null())
    }
}

/// Any value, read through and dropped.
struct Skip;

impl Shape<'_> for Skip {
    type Out = ();
    fn other(self) {}
}

/// A map key. JSON keys are strings; were one not (another deserializer),
/// it would read as "", which names no attribute and no class.
struct Key;

impl<'de> Shape<'de> for Key {
    type Out = Cow<'de, str>;
    fn other(self) -> Self::Out {
        Cow::Borrowed("")
    }
    fn borrowed(self, s: &'de str) -> Self::Out {
        Cow::Borrowed(s)
    }
    fn string(self, s: &str) -> Self::Out {
        Cow::Owned(s.to_owned())
    }
}

/// The top-level `ts`: a number as `Value::as_f64` gives it.
struct TsNumber;

impl Shape<'_> for TsNumber {
    type Out = Option<f64>;
    fn other(self) -> Option<f64> {
        None
    }
    fn u64(self, v: u64) -> Option<f64> {
        Some(v as f64)
    }
    fn i64(self, v: i64) -> Option<f64> {
        Some(v as f64)
    }
    fn f64(self, v: f64) -> Option<f64> {
        Some(v)
    }
}

/// An attribute value.
struct AttrValue;

impl<'de> Shape<'de> for AttrValue {
    type Out = Attr<'de>;
    fn other(self) -> Attr<'de> {
        Attr::Other
    }
    fn null(self) -> Attr<'de> {
        Attr::Null
    }
    fn borrowed(self, s: &'de str) -> Attr<'de> {
        Attr::Str(Cow::Borrowed(s))
    }
    fn string(self, s: &str) -> Attr<'de> {
        Attr::Str(Cow::Owned(s.to_owned()))
    }
    fn u64(self, v: u64) -> Attr<'de> {
        i64::try_from(v).map_or(Attr::Other, Attr::Int)
    }
    fn i64(self, v: i64) -> Attr<'de> {
        Attr::Int(v)
    }
}

/// An epm object's `attributes`: the five EPT reads, the rest skipped.
/// `None` when not an object.
struct EpmAttributes;

impl<'de> Shape<'de> for EpmAttributes {
    type Out = Option<Attributes<'de>>;
    fn other(self) -> Self::Out {
        None
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut attributes = Attributes::default();
        while let Some(key) = map.next_key_seed(Json(Key))? {
            let slot = match &*key {
                "dn" => &mut attributes.dn,
                "status" => &mut attributes.status,
                "flags" => &mut attributes.flags,
                "ifId" => &mut attributes.if_id,
                "pcTag" => &mut attributes.pc_tag,
                _ => {
                    map.next_value_seed(Json(Skip))?;
                    continue;
                }
            };
            *slot = map.next_value_seed(Json(AttrValue))?;
        }
        Ok(Some(attributes))
    }
}

/// The body of an entry of class `.0` (`None`: not an epm class): its
/// `attributes`, everything else (`children`, ...) skipped.
struct BodyOf(Option<EpmClass>);

impl<'de> Shape<'de> for BodyOf {
    type Out = Body<'de>;
    fn other(self) -> Body<'de> {
        Body::NoAttributes
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body<'de>, A::Error> {
        let mut body = Body::NoAttributes;
        while let Some(key) = map.next_key_seed(Json(Key))? {
            if key != "attributes" {
                map.next_value_seed(Json(Skip))?;
                continue;
            }
            body = match self.0 {
                Some(class) => match map.next_value_seed(Json(EpmAttributes))? {
                    Some(attributes) => Body::Endpoint(class, attributes),
                    None => Body::NoAttributes,
                },
                None => match map.next_value::<Value>()? {
                    Value::Object(attributes) => Body::Other(attributes),
                    _ => Body::NoAttributes,
                },
            };
        }
        Ok(body)
    }
}

/// One object of a list: `{"<class>": {"attributes": {..}}}`, a `ts` key
/// alongside allowed.
struct Item<'p> {
    parser: &'p EpmParser,
    index: usize,
}

impl<'de> Shape<'de> for Item<'_> {
    type Out = Result<ApicObject, ObjectError>;
    fn other(self) -> Self::Out {
        Err(shape_error(self.index, ""))
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut entries = Entries::None;
        while let Some(key) = map.next_key_seed(Json(Key))? {
            if key == "ts" {
                map.next_value_seed(Json(Skip))?;
            } else {
                entries.read(key, &mut map)?;
            }
        }
        Ok(match entries {
            Entries::One(class, body) => self.parser.object(self.index, class, body),
            Entries::None | Entries::Several => Err(shape_error(self.index, "")),
        })
    }
}

/// A list of objects, parsed up to the bound and counted past it; `None`
/// when not a list.
struct List<'p> {
    parser: &'p EpmParser,
}

impl List<'_> {
    fn read<'de, A: SeqAccess<'de>>(&self, mut seq: A) -> Result<Items, A::Error> {
        let max = self.parser.limits.max_objects;
        let mut objects = Vec::new();
        let mut count = 0;
        loop {
            if count < max {
                let item = Item {
                    parser: self.parser,
                    index: count,
                };
                match seq.next_element_seed(Json(item))? {
                    Some(object) => objects.push(object),
                    None => break,
                }
            } else if seq.next_element_seed(Json(Skip))?.is_none() {
                break;
            }
            count += 1;
        }
        Ok(Items { objects, count })
    }
}

impl<'de> Shape<'de> for List<'_> {
    type Out = Option<Items>;
    fn other(self) -> Option<Items> {
        None
    }
    fn seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Items>, A::Error> {
        self.read(seq).map(Some)
    }
}

/// A payload's top level: an object (with `imdata`, or one APIC object),
/// a list, or anything else.
struct TopLevel<'p> {
    parser: &'p EpmParser,
}

impl<'de> Shape<'de> for TopLevel<'_> {
    type Out = Top<'de>;
    fn other(self) -> Top<'de> {
        Top::Scalar
    }
    fn seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top<'de>, A::Error> {
        List {
            parser: self.parser,
        }
        .read(seq)
        .map(Top::List)
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let (mut ts, mut imdata, mut bare) = (None, None, Entries::None);
        while let Some(key) = map.next_key_seed(Json(Key))? {
            match &*key {
                "ts" => ts = Some(map.next_value_seed(Json(TsNumber))?),
                "imdata" => {
                    let list = List {
                        parser: self.parser,
                    };
                    imdata = Some(map.next_value_seed(Json(list))?);
                }
                _ => bare.read(key, &mut map)?,
            }
        }
        Ok(Top::Object { ts, imdata, bare })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;
    use serde_json::json;
    use std::sync::LazyLock;

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

    // -----------------------------------------------------------------------
    // The hand-written DN matcher against EPT's regexes.

    static EPM_DN: LazyLock<Regex> = LazyLock::new(|| Regex::new(EPM_DN_PATTERN).unwrap());
    static EPM_RS_DN: LazyLock<Regex> = LazyLock::new(|| Regex::new(EPM_RS_DN_PATTERN).unwrap());

    /// What the regex captures, in [`EpmDn`]'s terms.
    fn regex_dn(dn: &str, rs: bool) -> Option<EpmDn<'_>> {
        let regex = if rs { &*EPM_RS_DN } else { &*EPM_DN };
        let caps = regex.captures(dn)?;
        let get = |name| caps.name(name).map(|m| m.as_str());
        // The overlay is the one alternative to a vrf.
        assert_eq!(get("vrf").is_none(), get("ovl").is_some(), "{dn:?}");
        Some(EpmDn {
            node: get("node")?,
            vrf: get("vrf"),
            bd: get("bd"),
            encap: get("encap"),
            addr: get("addr"),
            ip: get("ip"),
        })
    }

    fn assert_same_dn(dn: &str) {
        for rs in [false, true] {
            assert_eq!(match_epm_dn(dn, rs), regex_dn(dn, rs), "rs={rs} {dn:?}");
        }
    }

    const MAC: &str = "topology/pod-1/node-101/sys/ctx-[vxlan-2949120]/bd-[vxlan-15990734]/vlan-[vlan-101]/db-ep/mac-00:50:56:AD:BB:16";
    const RS: &str = "topology/pod-1/node-101/sys/ctx-[vxlan-2949120]/bd-[vxlan-15990734]/vlan-[vlan-101]/db-ep/mac-00:50:56:AD:BB:16/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-2949120]/bd-[vxlan-15990734]/vlan-[vlan-101]/db-ep/ip-[10.1.1.101]]";

    /// Every DN shape the tests use, and malformed ones.
    fn dn_cases() -> Vec<String> {
        let mut dns: Vec<String> = [
            MAC,
            RS,
            "topology/pod-1/node-102/sys/inst-overlay-1/db-ep/ip-[10.0.0.32]",
            "topology/pod-1/node-103/sys/ctx-[vxlan-2523136]/db-ep/ip-[2001:db8::a:1]",
            "topology/pod-1/node-101/sys/ctx-[vxlan-1]/bd-[vxlan-2]/vxlan-[vxlan-8000]/db-ep/mac-AA:BB:CC:DD:EE:FF",
            "topology/pod-1/node-101/sys/ctx-[vxlan-1]/bd-[vxlan-2]/vlan-[vxlan-8000]/db-ep/mac-AA",
            "topology/pod-1/node-101/sys/ctx-[vxlan-1]/bd-[vxlan-2]/vxlan-[vlan-8000]/db-ep/mac-AA",
            "topology/pod-1/node-101/sys/ctx-[vxlan-7]/db-ep/ip-[10.9.0.1]",
            "topology/pod-1/node-101/sys/ctx-[vxlan-7]/bd-[vxlan-8]/vlan-[vlan-3]/db-ep/mac-00:00:00:00:00:01/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-7]/bd-[vxlan-8]/vlan-[vlan-3]/db-ep/ip-[10.9.0.1]]",
            "node-1/sys/ctx-[vxlan-1]/bd-[vxlan-2]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/db-ep/",
            "node-99999999999/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-99999999999]/bd-[vxlan-99999999999]/db-ep/mac-AA",
            "uni/tn-x",
            "garbage",
            "topology/pod-1/node-101",
            // Missing parts.
            "node-/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/bd-[vxlan-]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/bd-[vxlan-2]/vlan-[vlan-]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/bd-[vxlan-2]/vlan-[]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-[]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/ip-[",
            "node-1/sys/ctx-[vxlan-1]/db-ep/ip-]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/ip-[1.2.3.4",
            "node-1/sys/ctx-[vxlan-1]/db-ep/ip-1.2.3.4]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-ip-[1.1.1.1]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-xip-[1.1.1.1]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-[ip-[]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-[ip-[1.1]ip-[2.2]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-[ip-[zz]ip-[2.2]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-[\nip-[1.1]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-[ip-[1.1]\n]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-[\rip-[1.1]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep//rsmacEpToIpEpAtt-[ip-[1.1]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-[AA]/rsmacEpToIpEpAtt-[ip-[1.1]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-[AA/rsmacEpToIpEpAtt-[ip-[1.1]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA]/rsmacEpToIpEpAtt-[ip-[1.1]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AAZ/rsmacEpToIpEpAtt-[ip-[1.1]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA//rsmacEpToIpEpAtt-[ip-[1.1]]",
            // Extra slashes, wrong prefixes.
            "node-1//sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys//ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]//db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/db-ep//mac-AA",
            "node-1/sys/ctx-[vxlan-1]/bd-[vxlan-2]//db-ep/mac-AA",
            "Node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/SYS/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys/ctx-[vlan-1]/db-ep/mac-AA",
            "node-1/sys/ctx-(vxlan-1)/db-ep/mac-AA",
            "node-1/sys/inst-overlay-2/db-ep/mac-AA",
            "node-1/sys/inst-overlay-1/bd-[vxlan-3]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/bd-[vlan-2]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/vxxlan-[vlan-2]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/xlan-[vlan-2]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/db-ep/eth-AA",
            "node-1/sys/ctx-[vxlan-1]/db-ep/MAC-AA",
            "node-1/sys/ctx-[vxlan-1]/db-ep/ip-[10.0.0.1]/rsmacEpToIpEpAtt-[ip-[10.0.0.2]]",
            // Non-numeric node/vnid.
            "node-x/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1a/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1a]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan--1]/db-ep/mac-AA",
            "node-١/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-+1/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            // Several `node-`: the first that matches wins.
            "node-node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys/x/node-2/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/node-2/sys/ctx-[vxlan-2]/db-ep/mac-BB",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-[\n]node-2/sys/ctx-[vxlan-2]/db-ep/mac-BB/rsmacEpToIpEpAtt-[ip-[1.1]]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-node-2/sys/ctx-[vxlan-2]/db-ep/mac-BB/rsmacEpToIpEpAtt-[ip-[1.1]]",
            // Unicode.
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-ÄÖ",
            "ünï/node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-é€😀ip-[1.1]",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-😀",
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-ip-[１.1]",
            "",
            "node-",
            "/",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Overlong values.
        dns.push(format!(
            "node-{}/sys/ctx-[vxlan-1]/db-ep/mac-AA",
            "9".repeat(400)
        ));
        dns.push(format!(
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-{}",
            "A".repeat(3000)
        ));
        dns.push(format!(
            "node-1/sys/ctx-[vxlan-1]/db-ep/mac-AA/rsmacEpToIpEpAtt-{}ip-[1.1]",
            "x".repeat(3000)
        ));
        dns.push("node-1/sys/inst-overlay-1/db-ep//rsmacEpToIpEpAtt-".repeat(60));
        dns.push(format!(
            "{}ip-[1.1]",
            "node-1/sys/inst-overlay-1/db-ep//rsmacEpToIpEpAtt-\n".repeat(60)
        ));
        dns.push("node-".repeat(500));
        // Every prefix of the full shapes.
        for full in [MAC, RS] {
            for (i, _) in full.char_indices() {
                dns.push(full[..i].to_owned());
                dns.push(full[i..].to_owned());
            }
        }
        dns
    }

    #[test]
    fn dn_matcher_agrees_with_the_regexes() {
        for dn in dn_cases() {
            assert_same_dn(&dn);
        }
    }

    /// One DN of the grammar, in any of its shapes, each part mostly
    /// well-formed.
    fn dn_strategy() -> impl Strategy<Value = String> {
        let digits = prop_oneof![
            24 => "[0-9]{1,9}",
            1 => "[0-9]{10,12}",
            1 => Just(String::new()),
            1 => "[0-9a-z]{1,3}",
        ];
        let addr = prop_oneof![
            4 => "[0-9A-F]{2}(:[0-9A-F]{2}){5}",
            4 => "[0-9]{1,3}(\\.[0-9]{1,3}){3}",
            2 => "[0-9a-f]{1,4}(:[0-9a-f]{0,4}){2,7}",
            1 => "[0-9a-fA-FxyzZ:.\\[\\]]{0,10}",
        ];
        let rs_tail = (
            prop_oneof![
                8 => Just("/rsmacEpToIpEpAtt-"),
                1 => Just("/rsmacEpToIpEpAtt-["),
                1 => Just("rsmacEpToIpEpAtt-"),
            ],
            prop_oneof![
                8 => "\\[sys/ctx-\\[vxlan-[0-9]{1,4}\\]/(bd-\\[vxlan-[0-9]{1,4}\\]/)?db-ep/",
                2 => "[a-z\\[\\]/\\-\n😀]{0,12}",
            ],
            prop_oneof![8 => Just("ip-["), 1 => Just("ip-"), 1 => Just("")],
            addr.clone(),
            prop_oneof![8 => Just("]]"), 1 => Just("]"), 1 => Just("")],
        );
        (
            prop_oneof![Just("topology/pod-1/"), Just(""), Just("x/")],
            digits.clone(),
            prop_oneof![
                8 => digits.clone().prop_map(|v| format!("ctx-[vxlan-{v}]/")),
                4 => Just("inst-overlay-1/".to_string()),
                1 => Just("inst-overlay-2/".to_string()),
                1 => Just(String::new()),
            ],
            proptest::option::of(digits.clone()),
            proptest::option::of((
                prop_oneof![4 => Just("vlan"), 4 => Just("vxlan"), 1 => Just("vxxlan"), 1 => Just("lan")],
                prop_oneof![4 => Just("vlan"), 4 => Just("vxlan"), 1 => Just("x")],
                digits,
            )),
            prop_oneof![12 => Just("db-ep/"), 1 => Just("db-ep//"), 1 => Just("db-ep"), 1 => Just("")],
            prop_oneof![4 => Just("mac-"), 4 => Just("ip-["), 1 => Just("ip-"), 1 => Just("mac-["), 1 => Just("")],
            addr,
            prop_oneof![Just("]"), Just("")],
            proptest::option::of(rs_tail),
        )
            .prop_map(
                |(pre, node, ctx, bd, encap, dbep, kind, addr, close, rs)| {
                    let mut dn = format!("{pre}node-{node}/sys/{ctx}");
                    if let Some(bd) = bd {
                        dn += &format!("bd-[vxlan-{bd}]/");
                    }
                    if let Some((outer, inner, n)) = encap {
                        dn += &format!("{outer}-[{inner}-{n}]/");
                    }
                    dn += &format!("{dbep}{kind}{addr}{close}");
                    if let Some((infix, junk, ip, ip_addr, end)) = rs {
                        dn += &format!("{infix}{junk}{ip}{ip_addr}{end}");
                    }
                    dn
                },
            )
            .boxed()
    }

    /// `dn` with a few characters inserted, removed or replaced.
    fn mutated(dn: String, edits: Vec<(prop::sample::Index, u8, char)>) -> String {
        let mut chars: Vec<char> = dn.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(chars.len() + 1);
            match op % 3 {
                0 => chars.insert(i, c),
                1 if i < chars.len() => {
                    chars.remove(i);
                }
                _ if i < chars.len() => chars[i] = c,
                _ => {}
            }
        }
        chars.into_iter().collect()
    }

    fn edit_char() -> impl Strategy<Value = char> {
        prop_oneof![
            prop::sample::select(vec![
                '/', '[', ']', '-', ':', '.', '\n', '0', '9', 'a', 'F', 'x', 'é', '😀', '\u{0}'
            ]),
            any::<char>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn dn_matcher_agrees_on_generated_dns(
            dn in dn_strategy(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), edit_char()), 0..3),
        ) {
            let dn = mutated(dn, edits);
            for rs in [false, true] {
                prop_assert_eq!(match_epm_dn(&dn, rs), regex_dn(&dn, rs), "rs={} {:?}", rs, dn);
            }
        }

        #[test]
        fn dn_matcher_agrees_on_token_soup(parts in proptest::collection::vec(prop_oneof![
            Just("node-".to_string()), Just("/sys/".to_string()), Just("ctx-[vxlan-".to_string()),
            Just("inst-overlay-1/".to_string()), Just("bd-[vxlan-".to_string()), Just("]/".to_string()),
            Just("vlan-[vlan-".to_string()), Just("vxlan-[".to_string()), Just("]".to_string()),
            Just("db-ep/".to_string()), Just("mac-".to_string()), Just("ip-[".to_string()),
            Just("/rsmacEpToIpEpAtt-[".to_string()), Just("/".to_string()), Just("\n".to_string()),
            "[0-9]{1,12}", "[0-9a-fA-F:.]{1,8}", ".{0,3}",
        ], 0..30)) {
            let dn = parts.concat();
            for rs in [false, true] {
                prop_assert_eq!(match_epm_dn(&dn, rs), regex_dn(&dn, rs), "rs={} {:?}", rs, dn);
            }
        }

        #[test]
        fn dn_matcher_agrees_on_any_text(dn in ".{0,200}") {
            for rs in [false, true] {
                prop_assert_eq!(match_epm_dn(&dn, rs), regex_dn(&dn, rs), "rs={} {:?}", rs, dn);
            }
        }
    }

    // -----------------------------------------------------------------------
    // The typed reader against the `Value`-based parser it replaced.

    /// The parser as it was before the typed reader: JSON into a `Value`,
    /// then the payload, its objects and their attributes read from it, DNs
    /// matched with EPT's regexes.
    mod reference {
        use super::super::*;
        use super::{EPM_DN, EPM_RS_DN};

        pub fn parse_payload(
            p: &EpmParser,
            text: &str,
            received: f64,
        ) -> Result<Payload, PayloadError> {
            if text.len() > p.limits.max_payload_bytes {
                return Err(PayloadError::TooLarge {
                    len: text.len(),
                    max: p.limits.max_payload_bytes,
                });
            }
            let value: Value = serde_json::from_str(text)?;
            parse_payload_value(p, &value, received)
        }

        pub fn parse_payload_value(
            p: &EpmParser,
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
            if list.len() > p.limits.max_objects {
                return Err(PayloadError::TooManyObjects {
                    count: list.len(),
                    max: p.limits.max_objects,
                });
            }
            let objects = list
                .into_iter()
                .enumerate()
                .map(|(index, item)| parse_item(p, index, item, ts))
                .collect();
            Ok(Payload { ts, objects })
        }

        fn parse_item(
            p: &EpmParser,
            index: usize,
            item: &Value,
            ts: f64,
        ) -> Result<ApicObject, ObjectError> {
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
                Some(c) => parse_object(p, c, attributes, ts)
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

        fn parse_u32(s: Option<&str>) -> Result<Option<u32>, String> {
            match s {
                None => Ok(None),
                Some(s) => s.parse::<u32>().map(Some).map_err(|_| truncate(s, 32)),
            }
        }

        pub fn parse_object(
            p: &EpmParser,
            class: EpmClass,
            attributes: &Map<String, Value>,
            ts: f64,
        ) -> Result<EpmEvent, (Option<String>, ObjectErrorKind)> {
            let limits = &p.limits;
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
            let vrf = match parse_u32(caps.name("vrf").map(|m| m.as_str())) {
                Ok(Some(v)) => v,
                Ok(None) if caps.name("ovl").is_some() => p.overlay_vnid,
                Ok(None) => return fail(ObjectErrorKind::DnMismatch { class }),
                Err(v) => {
                    return fail(ObjectErrorKind::OutOfRange {
                        what: "vrf vnid",
                        value: v,
                    });
                }
            };
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
            let status = match string_attr("status") {
                Ok("" | "created") => Status::Created,
                Ok("modified") => Status::Modified,
                Ok("deleted") => Status::Deleted,
                Ok(other) => return fail(ObjectErrorKind::UnknownStatus(truncate(other, 64))),
                Err(kind) => return fail(kind),
            };
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
            let pctag = match attributes.get("pcTag") {
                Some(Value::String(s)) => s.trim().parse::<i64>().unwrap_or(0),
                Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
                _ => 0,
            };
            let vnid = if class == EpmClass::MacEp { bd } else { vrf };
            Ok(EpmEvent {
                fabric: p.fabric.clone(),
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

    /// Whether two outcomes are the same (errors by their message, which
    /// for JSON errors includes line and column).
    fn same(a: &Result<Payload, PayloadError>, b: &Result<Payload, PayloadError>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }

    /// The typed reader and the `Value` path give what the reference gives,
    /// for `text` and (when it is JSON) its `Value`.
    fn assert_same_payload(p: &EpmParser, text: &str) -> Result<(), TestCaseError> {
        let want = reference::parse_payload(p, text, 7.5);
        let got = p.parse_payload(text, 7.5);
        prop_assert!(same(&got, &want), "{text}\n got {got:?}\nwant {want:?}");
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            let want = reference::parse_payload_value(p, &value, 7.5);
            let got = p.parse_payload_value(&value, 7.5);
            prop_assert!(same(&got, &want), "{text}\n got {got:?}\nwant {want:?}");
        }
        Ok(())
    }

    /// JSON as text, keys repeatable (a `Value` cannot hold a repeated key).
    #[derive(Debug, Clone)]
    enum J {
        Raw(String),
        Str(String, bool),
        Arr(Vec<J>),
        Obj(Vec<((String, bool), J)>),
    }

    fn write_str(s: &str, escape_all: bool, out: &mut String) {
        if !escape_all {
            out.push_str(&serde_json::to_string(s).unwrap());
            return;
        }
        out.push('"');
        for unit in s.encode_utf16() {
            out.push_str(&format!("\\u{unit:04x}"));
        }
        out.push('"');
    }

    impl J {
        fn write(&self, out: &mut String) {
            match self {
                J::Raw(r) => out.push_str(r),
                J::Str(s, e) => write_str(s, *e, out),
                J::Arr(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        item.write(out);
                    }
                    out.push(']');
                }
                J::Obj(entries) => {
                    out.push('{');
                    for (i, ((k, e), v)) in entries.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        write_str(k, *e, out);
                        out.push(':');
                        v.write(out);
                    }
                    out.push('}');
                }
            }
        }
        fn text(&self) -> String {
            let mut out = String::new();
            self.write(&mut out);
            out
        }
    }

    fn key(names: &'static [&'static str]) -> impl Strategy<Value = (String, bool)> {
        (
            prop_oneof![
                9 => prop::sample::select(names).prop_map(str::to_owned),
                1 => "[a-zA-Z]{0,6}",
            ],
            prop::bool::weighted(0.05),
        )
    }

    fn named(name: &'static str) -> impl Strategy<Value = (String, bool)> {
        (Just(name.to_owned()), prop::bool::weighted(0.05))
    }

    fn number() -> impl Strategy<Value = J> {
        prop::sample::select(vec![
            "0",
            "-0",
            "3",
            "-7",
            "1.5",
            "-1.5",
            "1e3",
            "32771",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "1700000000.25",
            "1e400",
            "-1e-400",
            "0.0",
        ])
        .prop_map(|n| J::Raw(n.to_owned()))
    }

    fn scalar() -> impl Strategy<Value = J> {
        prop_oneof![
            number(),
            prop::sample::select(vec!["null", "true", "false"]).prop_map(|r| J::Raw(r.to_owned())),
            (".{0,8}", prop::bool::weighted(0.1)).prop_map(|(s, e)| J::Str(s, e)),
        ]
    }

    /// Any JSON, nested a little.
    fn any_json() -> impl Strategy<Value = J> {
        scalar().prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
                proptest::collection::vec((key(&["a", "dn", "attributes"]), inner), 0..4)
                    .prop_map(J::Obj),
            ]
        })
    }

    fn string_value(s: impl Strategy<Value = String>) -> impl Strategy<Value = J> {
        (s, prop::bool::weighted(0.1)).prop_map(|(s, e)| J::Str(s, e))
    }

    fn attribute_value() -> impl Strategy<Value = J> {
        let string = prop_oneof![
            dn_strategy(),
            prop::sample::select(vec![
                "",
                "created",
                "modified",
                "deleted",
                "bogus",
                "local",
                "local,vpc-attached",
                "a,b,c,d",
                ",",
                "po3",
                "eth1/1",
                "32771",
                " 12 ",
                "any",
                "-5",
                "+5",
                "99999999999999999999",
                "1.5",
                "é😀",
                MAC,
                RS,
            ])
            .prop_map(str::to_owned),
            ".{0,12}",
        ];
        prop_oneof![
            6 => string_value(string),
            1 => number(),
            1 => any_json(),
        ]
    }

    /// An epm object's attributes: mostly the five EPT reads with plausible
    /// values, in any order, with others (and repeats) among them.
    fn attributes() -> impl Strategy<Value = J> {
        let status = prop::sample::select(vec!["", "created", "modified", "deleted", "bogus"])
            .prop_map(str::to_owned);
        let flags = prop::sample::select(vec!["", "local", "local,vpc-attached", "a,b,c,d", ","])
            .prop_map(str::to_owned);
        let if_id = prop::sample::select(vec!["", "po3", "eth1/1", "tunnel7", "😀"])
            .prop_map(str::to_owned);
        let pc_tag = prop_oneof![
            string_value(
                prop::sample::select(vec!["32771", " 12 ", "any", "-5", "99999999999999999999"])
                    .prop_map(str::to_owned)
            ),
            number(),
        ];
        (
            prop_oneof![8 => string_value(dn_strategy()).prop_map(Some), 1 => attribute_value().prop_map(Some), 1 => Just(None)],
            proptest::option::weighted(0.7, string_value(status)),
            proptest::option::weighted(0.7, string_value(flags)),
            proptest::option::weighted(0.7, string_value(if_id)),
            proptest::option::weighted(0.7, pc_tag),
            proptest::collection::vec(
                (
                    key(&["dn", "status", "flags", "ifId", "pcTag", "modTs", "ts", "addr"]),
                    attribute_value(),
                ),
                0..3,
            ),
        )
            .prop_flat_map(|(dn, status, flags, if_id, pc_tag, mut extra)| {
                for (name, value) in [("dn", dn), ("status", status), ("flags", flags), ("ifId", if_id), ("pcTag", pc_tag)] {
                    if let Some(value) = value {
                        extra.push(((name.to_owned(), false), value));
                    }
                }
                Just(extra).prop_shuffle()
            })
            .prop_map(J::Obj)
            .boxed()
    }

    fn body() -> impl Strategy<Value = J> {
        prop_oneof![
            12 => (named("attributes"), attributes(), proptest::option::weighted(0.2, (key(&["children", "attributes", "x"]), any_json())))
                .prop_map(|(k, a, extra)| J::Obj([(k, a)].into_iter().chain(extra).collect())),
            2 => proptest::collection::vec(
                (
                    key(&["attributes", "children", "x"]),
                    prop_oneof![4 => attributes(), 1 => any_json()],
                ),
                0..3,
            )
            .prop_map(J::Obj),
            1 => any_json(),
        ]
        .boxed()
    }

    const CLASSES: &[&str] = &[
        "epmMacEp",
        "epmMacEp",
        "epmIpEp",
        "epmIpEp",
        "epmRsMacEpToIpEpAtt",
        "epmRsMacEpToIpEpAtt",
        "fabricNode",
        "ts",
        "imdata",
    ];

    fn item() -> impl Strategy<Value = J> {
        prop_oneof![
            12 => (key(CLASSES), body(), proptest::option::weighted(0.1, (named("ts"), any_json())))
                .prop_map(|(k, b, ts)| J::Obj([(k, b)].into_iter().chain(ts).collect())),
            1 => proptest::collection::vec((key(CLASSES), body()), 0..3).prop_map(J::Obj),
            1 => any_json(),
        ]
        .boxed()
    }

    fn payload() -> impl Strategy<Value = J> {
        let items = prop_oneof![
            8 => proptest::collection::vec(item(), 0..6).prop_map(J::Arr),
            1 => any_json(),
        ];
        let ts = prop_oneof![4 => number(), 1 => scalar()];
        let extra = (
            key(&[
                "ts",
                "imdata",
                "totalCount",
                "subscriptionId",
                "epmMacEp",
                "fabricNode",
            ]),
            prop_oneof![any_json(), body()],
        );
        prop_oneof![
            6 => (
                proptest::option::weighted(0.6, (named("ts"), ts)),
                proptest::option::weighted(0.9, (named("imdata"), items)),
                proptest::option::weighted(0.5, (named("totalCount"), any_json())),
                proptest::collection::vec(extra, 0..2),
            )
                .prop_flat_map(|(ts, imdata, count, mut extra)| {
                    extra.extend(ts);
                    extra.extend(imdata);
                    extra.extend(count);
                    Just(extra).prop_shuffle()
                })
                .prop_map(J::Obj),
            2 => proptest::collection::vec(item(), 0..6).prop_map(J::Arr),
            1 => item(),
            1 => any_json(),
        ]
    }

    fn limits() -> impl Strategy<Value = Limits> {
        prop_oneof![
            3 => Just(Limits::default()),
            1 => (0usize..4, 20usize..200, 0usize..12, 0usize..4, 40usize..600).prop_map(
                |(max_objects, max_dn_bytes, max_attribute_bytes, max_flags, max_payload_bytes)| {
                    Limits {
                        max_payload_bytes,
                        max_objects,
                        max_dn_bytes,
                        max_attribute_bytes,
                        max_flags,
                    }
                },
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn typed_reader_agrees_with_value_reader(
            payload in payload(),
            limits in limits(),
            edit in proptest::option::weighted(0.2, (any::<prop::sample::Index>(), any::<bool>(), edit_char())),
        ) {
            let mut text = payload.text();
            if let Some((at, cut, c)) = edit {
                let boundaries: Vec<usize> =
                    text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
                let i = boundaries[at.index(boundaries.len())];
                if cut {
                    text.truncate(i);
                } else {
                    text.insert(i, c);
                }
            }
            let p = parser().with_limits(limits);
            assert_same_payload(&p, &text)?;
        }
    }

    #[test]
    fn typed_reader_agrees_on_hand_picked_payloads() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mac = format!(r#"{{"epmMacEp":{{"attributes":{{"dn":"{MAC}"}}}}}}"#);
        let mut cases: Vec<String> = vec![
            format!(r#"{{"imdata":[{mac}],"ts":12}}"#),
            format!(r#"{{"ts":12,"imdata":[{mac}],"ts":13}}"#),
            format!(r#"{{"imdata":[{mac}],"imdata":[]}}"#),
            format!(r#"{{"imdata":[],"imdata":[{mac}]}}"#),
            format!(r#"{{"imdata":[{mac}],"imdata":3}}"#),
            format!(r#"{{"imdata":3,"ts":"x"}}"#),
            format!(r#"{{"imdata":[{mac},{mac},{mac}],"ts":-1}}"#),
            format!(r#"{{"epmMacEp":{{"attributes":{{"dn":"{MAC}"}}}},"ts":5}}"#),
            format!(
                r#"{{"epmMacEp":{{"attributes":{{"dn":"x"}}}},"epmMacEp":{{"attributes":{{"dn":"{MAC}"}}}}}}"#
            ),
            format!(
                r#"{{"epmMacEp":{{"attributes":{{"dn":"x"}}}},"epmIpEp":{{}},"epmMacEp":{{}}}}"#
            ),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","dn":5}}}}}}]"#),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":5,"dn":"{MAC}"}}}}}}]"#),
            format!(
                r#"[{{"epmMacEp":{{"attributes":{{"d\u006e":"{MAC}","st\u0061tus":"d\u0065leted","flags":"\u006cocal"}}}}}}]"#
            ),
            format!(r#"[{{"epm\u004dacEp":{{"attribut\u0065s":{{"dn":"{MAC}"}}}}}}]"#),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}"}},"attributes":3}}}}]"#),
            format!(
                r#"[{{"epmMacEp":{{"children":[{{"x":{{}}}}],"attributes":{{"dn":"{MAC}","pcTag":32771}}}}}}]"#
            ),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","pcTag":-3}}}}}}]"#),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","pcTag":3.0}}}}}}]"#),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","pcTag":"\u0020 7"}}}}}}]"#),
            format!(
                r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","status":null,"flags":null,"ifId":null}}}}}}]"#
            ),
            format!(
                r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","x":{}}}}}}}]"#,
                deep(120)
            ),
            format!(
                r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","x":{}}}}}}}]"#,
                deep(130)
            ),
            format!(r#"{{"subscriptionId":{},"imdata":[]}}"#, deep(126)),
            format!(r#"{{"subscriptionId":{},"imdata":[]}}"#, deep(127)),
            format!(r#"{{"subscriptionId":{},"imdata":[]}}"#, deep(128)),
            format!(r#"{{"imdata":[{mac},{}]}}"#, deep(130)),
            format!(
                r#"[{{"fabricNode":{{"attributes":{{"dn":"topology/pod-1/node-101","id":"101","x":[1,{{"y":null}}]}}}}}}]"#
            ),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","modTs":"\ud800"}}}}}}]"#),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","modTs":"\ud83d\ude00"}}}}}}]"#),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","modTs":"a\u0000b"}}}}}}]"#),
            format!(
                "[{{\"epmMacEp\":{{\"attributes\":{{\"dn\":\"{MAC}\",\"modTs\":\"a\tb\"}}}}}}]"
            ),
            format!(r#"[{{"epmMacEp":{{"attributes":{{"dn":"{MAC}","modTs":1e400}}}}}}]"#),
            format!(r#"[{mac}] x"#),
            format!(r#"[{mac}]  "#),
            format!(r#"[{mac},]"#),
            r#"{"ts":18446744073709551615,"imdata":[]}"#.to_owned(),
            r#"{"ts":-0,"imdata":[]}"#.to_owned(),
            r#"{"ts":-0.0,"imdata":[]}"#.to_owned(),
            r#"{"ts":null,"imdata":[]}"#.to_owned(),
            r#"{"ts":1}"#.to_owned(),
            r#"{}"#.to_owned(),
            r#"[]"#.to_owned(),
            r#""x""#.to_owned(),
            r#"null"#.to_owned(),
            deep(129),
        ];
        // Past the object bound, objects are counted (and still checked).
        let many = [mac.as_str(); 5].join(",");
        cases.push(format!(r#"{{"imdata":[{many}]}}"#));
        cases.push(format!(r#"{{"imdata":[{many},{}]}}"#, deep(130)));
        cases.push(format!(r#"[{many}]"#));
        for limits in [
            Limits::default(),
            Limits {
                max_objects: 2,
                max_dn_bytes: 40,
                max_attribute_bytes: 3,
                max_flags: 1,
                ..Limits::default()
            },
            Limits {
                max_objects: 0,
                ..Limits::default()
            },
        ] {
            let p = parser().with_limits(limits);
            for text in &cases {
                if let Err(e) = assert_same_payload(&p, text) {
                    panic!("{e}");
                }
            }
        }
    }
}
