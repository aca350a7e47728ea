//! Pushed endpoint events (issue #14): endpoint events a program sends
//! vigil as JSON, over `POST /api/v1/endpoints/events` or the Kafka topic
//! `<site>-endpoint-events`, for networks (or tools) without an APIC to
//! subscribe to. This module is the transport-independent parser: one event
//! ([`parse_event`]) or a batch ([`parse_batch`]) → [`EpmEvent`]s, every field
//! checked, every refusal with a stable reason code and a message.
//!
//! # The event
//!
//! ```json
//! {"fabric": "fab1", "node": 101, "vnid": 15990734, "type": "mac",
//!  "addr": "00:50:56:ad:bb:16", "status": "created", "ts": 1765000000.25,
//!  "intf_id": "eth1/5", "encap": "vlan-10", "pctag": 32771,
//!  "flags": ["local"]}
//! ```
//!
//! | field | | |
//! |---|---|---|
//! | `fabric` | required | 1-64 letters, digits, `-`, `_`, `.` |
//! | `node` | required | the leaf that reports, 1..=65535 (vpc pseudo-nodes are the tracker's to derive) |
//! | `vnid` (or `scope`) | required | 32-bit: the BD vnid for `mac`, the VRF vnid for `ip` and `rewrite` |
//! | `type` | required | `mac` (an `epmMacEp`), `ip` (an `epmIpEp`), `rewrite` (an `epmRsMacEpToIpEpAtt`: the MAC behind an IP) |
//! | `addr` | required | `mac`: a MAC in any common notation; `ip`, `rewrite`: an IPv4 or IPv6 address; normalised as the APIC writes them |
//! | `status` | required | `created`, `modified` or `deleted` |
//! | `ts` | required | seconds since the epoch (a JSON number, 0 up to year 9999) |
//! | `intf_id` | optional | `mac`, `ip`: the interface (`eth1/5`, `po3`, `tunnel7`), at most 128 bytes |
//! | `encap` | optional | `vlan-10`, `vxlan-16777209`, at most 64 bytes (a `rewrite` carries it as the APIC's rs DN does; the history takes only `rw_mac` and `rw_bd` from a rewrite) |
//! | `pctag` | optional | `mac`, `ip`: the EPG's pcTag, 0..=4294967295 |
//! | `flags` | optional | `mac`, `ip`: a list of strings (`["local","vpc-attached"]`) or the APIC's comma-separated string; at most 32, each at most 64 bytes |
//! | `vrf` | optional | `mac` only: the VRF vnid of the BD (names the EPG from `pctag`) |
//! | `bd` | optional | `ip` only: the BD vnid |
//! | `rw_mac`, `rw_bd` | required for `rewrite`, refused otherwise | the MAC behind the IP and its BD vnid |
//!
//! `intf_name`, `epg_name`, `vnid_name` and `remote` are not accepted: the
//! tracker derives them from `intf_id`, `pctag` and the fabric model, as it
//! does for APIC events. Any other field is refused by name (a misspelt
//! optional field would otherwise be silently lost).
//!
//! # A batch
//!
//! A JSON array of events, or `{"events": [...]}`, or one event object.
//! Bounded: [`PushedLimits`] (body bytes, events per batch, string bytes).
//! A batch that is not JSON, too large or of another shape is refused whole
//! ([`BatchError`]); otherwise each event is judged on its own and the good
//! ones go on while the bad ones are reported by index.

use serde_json::{Map, Value};

use crate::model::{EpmClass, EpmEvent, HistoryType, Status};
use crate::query::{normalize_ip, normalize_mac};

/// Bounds on pushed input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedLimits {
    /// Most bytes in one batch (HTTP body or Kafka message).
    pub max_body_bytes: usize,
    /// Most events in one batch.
    pub max_events: usize,
}

impl Default for PushedLimits {
    fn default() -> Self {
        PushedLimits {
            max_body_bytes: 1 << 20,
            max_events: 1000,
        }
    }
}

/// Longest `fabric`.
pub const MAX_FABRIC_BYTES: usize = 64;
/// Longest `intf_id`.
pub const MAX_INTF_BYTES: usize = 128;
/// Longest `encap` and each flag.
pub const MAX_SHORT_BYTES: usize = 64;
/// Longest `addr` or `rw_mac` as given (before normalisation).
pub const MAX_ADDR_BYTES: usize = 64;
/// Most flags.
pub const MAX_FLAGS: usize = 32;
/// Most fields in one event object.
pub const MAX_FIELDS: usize = 32;
/// Latest `ts` accepted: 9999-12-31T23:59:59Z.
pub const MAX_TS: f64 = 253_402_300_799.0;

/// Why one event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct PushedError {
    /// A stable reason label (counted per source and reason):
    /// `not_an_object`, `too_many_fields`, `unknown_field`,
    /// `missing_field`, `wrong_type`, `out_of_range`, `bad_value`,
    /// `too_long`, `not_for_type`.
    pub code: &'static str,
    /// The field at fault, when there is one.
    pub field: Option<&'static str>,
    /// What is wrong, quoting at most a bounded part of the input.
    pub message: String,
}

impl PushedError {
    fn new(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        PushedError {
            code,
            field: Some(field),
            message: message.into(),
        }
    }
}

/// Why a whole batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the batch is {bytes} bytes, more than {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("the batch is not JSON: {0}")]
    Json(String),
    #[error(
        "the batch must be a JSON array of events, {{\"events\": [...]}} or one event object: {0}"
    )]
    Shape(String),
    #[error("the batch has {count} events, more than {max}")]
    TooMany { count: usize, max: usize },
}

impl BatchError {
    /// A stable reason label: `too_large`, `not_json`, `bad_shape`,
    /// `too_many_events`.
    pub fn code(&self) -> &'static str {
        match self {
            BatchError::TooLarge { .. } => "too_large",
            BatchError::Json(_) => "not_json",
            BatchError::Shape(_) => "bad_shape",
            BatchError::TooMany { .. } => "too_many_events",
        }
    }
}

/// A batch with [`PushedLimits::default`]: each event parsed on its own, in
/// order.
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<Result<EpmEvent, PushedError>>, BatchError> {
    parse_batch_with(bytes, &PushedLimits::default())
}

/// A batch within `limits`: each event parsed on its own, in order.
pub fn parse_batch_with(
    bytes: &[u8],
    limits: &PushedLimits,
) -> Result<Vec<Result<EpmEvent, PushedError>>, BatchError> {
    if bytes.len() > limits.max_body_bytes {
        return Err(BatchError::TooLarge {
            bytes: bytes.len(),
            max: limits.max_body_bytes,
        });
    }
    // serde_json refuses nesting deeper than 128 levels, NaN and infinities.
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| BatchError::Json(e.to_string()))?;
    let events = match value {
        Value::Array(events) => events,
        Value::Object(mut object) if object.contains_key("events") => {
            if object.len() > 1 {
                let other = object.keys().find(|k| *k != "events").cloned();
                return Err(BatchError::Shape(format!(
                    "unknown field {:?} beside \"events\"",
                    crate::apic::truncate(other.as_deref().unwrap_or_default(), 64)
                )));
            }
            match object.remove("events") {
                Some(Value::Array(events)) => events,
                Some(other) => {
                    return Err(BatchError::Shape(format!(
                        "\"events\" is {}, not an array",
                        kind(&other)
                    )));
                }
                None => Vec::new(),
            }
        }
        Value::Object(object) => vec![Value::Object(object)],
        other => return Err(BatchError::Shape(format!("got {}", kind(&other)))),
    };
    if events.len() > limits.max_events {
        return Err(BatchError::TooMany {
            count: events.len(),
            max: limits.max_events,
        });
    }
    Ok(events.iter().map(parse_event).collect())
}

/// One event (see the module docs).
pub fn parse_event(value: &Value) -> Result<EpmEvent, PushedError> {
    let Value::Object(object) = value else {
        return Err(PushedError {
            code: "not_an_object",
            field: None,
            message: format!("an event is a JSON object, not {}", kind(value)),
        });
    };
    if object.len() > MAX_FIELDS {
        return Err(PushedError {
            code: "too_many_fields",
            field: None,
            message: format!("{} fields, more than {MAX_FIELDS}", object.len()),
        });
    }
    const KNOWN: &[&str] = &[
        "fabric", "node", "vnid", "scope", "type", "addr", "status", "ts", "intf_id", "encap",
        "pctag", "flags", "vrf", "bd", "rw_mac", "rw_bd",
    ];
    const DERIVED: &[&str] = &["intf_name", "epg_name", "vnid_name", "remote"];
    for key in object.keys() {
        if DERIVED.contains(&key.as_str()) {
            return Err(PushedError {
                code: "unknown_field",
                field: None,
                message: format!(
                    "{key}: not accepted; the tracker derives it from intf_id, pctag and the fabric model"
                ),
            });
        }
        if !KNOWN.contains(&key.as_str()) {
            return Err(PushedError {
                code: "unknown_field",
                field: None,
                message: format!(
                    "unknown field {:?} (known: {})",
                    crate::apic::truncate(key, 64),
                    KNOWN.join(", ")
                ),
            });
        }
    }
    let event = Fields(object);

    let fabric = event
        .string("fabric", MAX_FABRIC_BYTES)?
        .ok_or_else(|| missing("fabric"))?;
    if fabric.is_empty()
        || !fabric
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(PushedError::new(
            "bad_value",
            "fabric",
            "1-64 letters, digits, '-', '_' or '.'",
        ));
    }
    let kind_text = event.string("type", 16)?.ok_or_else(|| missing("type"))?;
    let (classname, history_type) = match kind_text.as_str() {
        "mac" => (EpmClass::MacEp, HistoryType::Mac),
        "ip" => (EpmClass::IpEp, HistoryType::Ip),
        "rewrite" => (EpmClass::RsMacEpToIpEpAtt, HistoryType::Ip),
        other => {
            return Err(PushedError::new(
                "bad_value",
                "type",
                format!("{other:?} is not mac, ip or rewrite"),
            ));
        }
    };
    let node = event
        .integer("node", 1, 0xffff)?
        .ok_or_else(|| missing("node"))?;
    let vnid = match (event.u32("vnid")?, event.u32("scope")?) {
        (Some(_), Some(_)) => {
            return Err(PushedError::new(
                "bad_value",
                "scope",
                "give vnid or scope (the same thing), not both",
            ));
        }
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => return Err(missing("vnid")),
    };
    let status_text = event
        .string("status", 16)?
        .ok_or_else(|| missing("status"))?;
    let status = match status_text.as_str() {
        "created" => Status::Created,
        "modified" => Status::Modified,
        "deleted" => Status::Deleted,
        other => {
            return Err(PushedError::new(
                "bad_value",
                "status",
                format!("{other:?} is not created, modified or deleted"),
            ));
        }
    };
    let ts = match object.get("ts") {
        None | Some(Value::Null) => return Err(missing("ts")),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|t| t.is_finite() && (0.0..=MAX_TS).contains(t))
            .ok_or_else(|| {
                PushedError::new(
                    "out_of_range",
                    "ts",
                    "seconds since the epoch, 0 up to year 9999",
                )
            })?,
        Some(other) => {
            return Err(PushedError::new(
                "wrong_type",
                "ts",
                format!("a number of seconds since the epoch, not {}", kind(other)),
            ));
        }
    };
    let addr_text = event
        .string("addr", MAX_ADDR_BYTES)?
        .ok_or_else(|| missing("addr"))?;
    let addr = match history_type {
        HistoryType::Mac => normalize_mac(addr_text.trim()).ok_or_else(|| {
            PushedError::new(
                "bad_value",
                "addr",
                format!("{addr_text:?} is not a MAC address"),
            )
        })?,
        HistoryType::Ip => normalize_ip(addr_text.trim()).ok_or_else(|| {
            PushedError::new(
                "bad_value",
                "addr",
                format!("{addr_text:?} is not an IPv4 or IPv6 address"),
            )
        })?,
    };

    // Fields that belong to some types only.
    let only = |field: &'static str, types: &str| -> Result<(), PushedError> {
        if object.get(field).is_some_and(|v| !v.is_null()) {
            Err(PushedError::new(
                "not_for_type",
                field,
                format!("only for type {types}, not {kind_text}"),
            ))
        } else {
            Ok(())
        }
    };
    let is_rewrite = classname == EpmClass::RsMacEpToIpEpAtt;
    if is_rewrite {
        for field in ["intf_id", "pctag", "flags"] {
            only(field, "mac or ip")?;
        }
    } else {
        only("rw_mac", "rewrite")?;
        only("rw_bd", "rewrite")?;
    }
    if classname != EpmClass::MacEp {
        only("vrf", "mac (for ip and rewrite, vnid is the VRF)")?;
    }
    if classname != EpmClass::IpEp {
        only("bd", "ip (for mac, vnid is the BD; for rewrite, rw_bd)")?;
    }

    let if_id = event.string("intf_id", MAX_INTF_BYTES)?.unwrap_or_default();
    let encap = event.string("encap", MAX_SHORT_BYTES)?.unwrap_or_default();
    let pctag = event
        .integer::<u32>("pctag", 0, u64::from(u32::MAX))?
        .map(i64::from)
        .unwrap_or(0);
    let flags = event.flags()?;

    let mut ev = EpmEvent {
        fabric,
        ts,
        classname,
        history_type,
        status,
        flags,
        if_id,
        pctag,
        encap,
        addr,
        ip: String::new(),
        node,
        vnid,
        vrf: 0,
        bd: 0,
    };
    match classname {
        EpmClass::MacEp => {
            ev.bd = vnid;
            ev.vrf = event.u32("vrf")?.unwrap_or(0);
        }
        EpmClass::IpEp => {
            ev.vrf = vnid;
            ev.bd = event.u32("bd")?.unwrap_or(0);
        }
        EpmClass::RsMacEpToIpEpAtt => {
            let rw_text = event
                .string("rw_mac", MAX_ADDR_BYTES)?
                .ok_or_else(|| missing("rw_mac"))?;
            let rw_mac = normalize_mac(rw_text.trim()).ok_or_else(|| {
                PushedError::new(
                    "bad_value",
                    "rw_mac",
                    format!("{rw_text:?} is not a MAC address"),
                )
            })?;
            ev.vrf = vnid;
            ev.bd = event.u32("rw_bd")?.ok_or_else(|| missing("rw_bd"))?;
            // As the APIC's rs object: addr is the MAC, ip the keyed IP.
            ev.ip = std::mem::replace(&mut ev.addr, rw_mac);
        }
    }
    Ok(ev)
}

fn missing(field: &'static str) -> PushedError {
    PushedError::new("missing_field", field, "required")
}

/// The JSON type of `value`, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed, bounded access to an event's fields (null counts as absent).
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn string(&self, field: &'static str, max: usize) -> Result<Option<String>, PushedError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                if s.len() > max {
                    return Err(PushedError::new(
                        "too_long",
                        field,
                        format!("{} bytes, more than {max}", s.len()),
                    ));
                }
                if s.chars().any(char::is_control) {
                    return Err(PushedError::new(
                        "bad_value",
                        field,
                        "holds control characters",
                    ));
                }
                Ok(Some(s.clone()))
            }
            Some(other) => Err(PushedError::new(
                "wrong_type",
                field,
                format!("a string, not {}", kind(other)),
            )),
        }
    }

    /// An integer in `min..=max` (a JSON number without a fraction).
    fn integer<T: TryFrom<u64>>(
        &self,
        field: &'static str,
        min: u64,
        max: u64,
    ) -> Result<Option<T>, PushedError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|v| (min..=max).contains(v))
                .and_then(|v| T::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    PushedError::new(
                        "out_of_range",
                        field,
                        format!("an integer in {min}..={max}, not {n}"),
                    )
                }),
            Some(other) => Err(PushedError::new(
                "wrong_type",
                field,
                format!("an integer, not {}", kind(other)),
            )),
        }
    }

    fn u32(&self, field: &'static str) -> Result<Option<u32>, PushedError> {
        self.integer(field, 0, u64::from(u32::MAX))
    }

    fn flags(&self) -> Result<Vec<String>, PushedError> {
        let field = "flags";
        let flags: Vec<String> = match self.0.get(field) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::String(s)) => {
                if s.len() > MAX_FLAGS * (MAX_SHORT_BYTES + 1) {
                    return Err(PushedError::new("too_long", field, "too long"));
                }
                s.split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            Some(Value::Array(items)) => {
                if items.len() > MAX_FLAGS {
                    return Err(PushedError::new(
                        "too_long",
                        field,
                        format!("{} flags, more than {MAX_FLAGS}", items.len()),
                    ));
                }
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) if !s.is_empty() && !s.contains(',') => Ok(s.clone()),
                        Value::String(_) => Err(PushedError::new(
                            "bad_value",
                            field,
                            "each flag is a non-empty string without ','",
                        )),
                        other => Err(PushedError::new(
                            "wrong_type",
                            field,
                            format!("a list of strings, holding {}", kind(other)),
                        )),
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(other) => {
                return Err(PushedError::new(
                    "wrong_type",
                    field,
                    format!(
                        "a list of strings or a comma-separated string, not {}",
                        kind(other)
                    ),
                ));
            }
        };
        if flags.len() > MAX_FLAGS {
            return Err(PushedError::new(
                "too_long",
                field,
                format!("{} flags, more than {MAX_FLAGS}", flags.len()),
            ));
        }
        for flag in &flags {
            if flag.len() > MAX_SHORT_BYTES || flag.chars().any(char::is_control) {
                return Err(PushedError::new(
                    "bad_value",
                    field,
                    format!("each flag at most {MAX_SHORT_BYTES} bytes, no control characters"),
                ));
            }
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mac_event() -> Value {
        json!({"fabric": "fab1", "node": 101, "vnid": 15990734, "type": "mac",
               "addr": "0050.56ad.bb16", "status": "created", "ts": 1765000000.25,
               "intf_id": "eth1/5", "encap": "vlan-10", "pctag": 32771,
               "flags": ["local", "vpc-attached"], "vrf": 2949120})
    }

    fn with(mut base: Value, field: &str, value: Value) -> Value {
        if let Value::Object(m) = &mut base {
            if value.is_null() {
                m.remove(field);
            } else {
                m.insert(field.into(), value);
            }
        }
        base
    }

    #[test]
    fn a_mac_event_becomes_an_epm_mac_ep() {
        let ev = parse_event(&mac_event()).unwrap();
        assert_eq!(ev.classname, EpmClass::MacEp);
        assert_eq!(ev.history_type, HistoryType::Mac);
        assert_eq!(ev.addr, "00:50:56:AD:BB:16");
        assert_eq!(
            (ev.node, ev.vnid, ev.bd, ev.vrf),
            (101, 15990734, 15990734, 2949120)
        );
        assert_eq!(ev.if_id, "eth1/5");
        assert_eq!(ev.encap, "vlan-10");
        assert_eq!(ev.pctag, 32771);
        assert_eq!(ev.flags, ["local", "vpc-attached"]);
        assert_eq!(ev.status, Status::Created);
        assert_eq!(ev.ts, 1765000000.25);
        assert_eq!(ev.key().addr, "00:50:56:AD:BB:16");
        // The APIC's comma-separated flags and "scope" for "vnid".
        let ev = parse_event(&with(
            with(
                with(mac_event(), "flags", json!("local,,vpc-attached")),
                "vnid",
                Value::Null,
            ),
            "scope",
            json!(7),
        ))
        .unwrap();
        assert_eq!(ev.flags, ["local", "vpc-attached"]);
        assert_eq!(ev.vnid, 7);
    }

    #[test]
    fn ip_and_rewrite_events() {
        let ip = json!({"fabric": "fab1", "node": 102, "scope": 2949120, "type": "ip",
                        "addr": "2001:DB8::0065", "status": "deleted", "ts": 5, "bd": 9});
        let ev = parse_event(&ip).unwrap();
        assert_eq!(ev.classname, EpmClass::IpEp);
        assert_eq!(ev.addr, "2001:db8::65");
        assert_eq!((ev.vnid, ev.vrf, ev.bd), (2949120, 2949120, 9));
        let rw = json!({"fabric": "fab1", "node": 102, "vnid": 2949120, "type": "rewrite",
                        "addr": "10.1.1.5", "status": "created", "ts": 5.5,
                        "rw_mac": "00-50-56-aa-bb-01", "rw_bd": 15990734});
        let ev = parse_event(&rw).unwrap();
        assert_eq!(ev.classname, EpmClass::RsMacEpToIpEpAtt);
        assert_eq!(ev.addr, "00:50:56:AA:BB:01");
        assert_eq!(ev.ip, "10.1.1.5");
        assert_eq!(ev.key().addr, "10.1.1.5");
        assert_eq!((ev.vnid, ev.vrf, ev.bd), (2949120, 2949120, 15990734));
    }

    #[test]
    fn every_bad_field_is_refused_with_its_reason() {
        let cases: Vec<(Value, &str, Option<&str>)> = vec![
            (json!([1]), "not_an_object", None),
            (json!("x"), "not_an_object", None),
            (
                with(mac_event(), "fabric", Value::Null),
                "missing_field",
                Some("fabric"),
            ),
            (
                with(mac_event(), "fabric", json!("a b")),
                "bad_value",
                Some("fabric"),
            ),
            (
                with(mac_event(), "fabric", json!("x".repeat(65))),
                "too_long",
                Some("fabric"),
            ),
            (
                with(mac_event(), "fabric", json!(["fab1"])),
                "wrong_type",
                Some("fabric"),
            ),
            (
                with(mac_event(), "node", json!(0)),
                "out_of_range",
                Some("node"),
            ),
            (
                with(mac_event(), "node", json!(65536)),
                "out_of_range",
                Some("node"),
            ),
            (
                with(mac_event(), "node", json!(-1)),
                "out_of_range",
                Some("node"),
            ),
            (
                with(mac_event(), "node", json!(101.5)),
                "out_of_range",
                Some("node"),
            ),
            (
                with(mac_event(), "node", json!("101")),
                "wrong_type",
                Some("node"),
            ),
            (
                with(mac_event(), "node", json!("leaf101")),
                "wrong_type",
                Some("node"),
            ),
            (
                with(mac_event(), "vnid", json!(4294967296u64)),
                "out_of_range",
                Some("vnid"),
            ),
            (
                with(mac_event(), "scope", json!(1)),
                "bad_value",
                Some("scope"),
            ),
            (
                with(mac_event(), "vnid", Value::Null),
                "missing_field",
                Some("vnid"),
            ),
            (
                with(mac_event(), "type", json!("MAC")),
                "bad_value",
                Some("type"),
            ),
            (
                with(mac_event(), "status", json!("gone")),
                "bad_value",
                Some("status"),
            ),
            (
                with(mac_event(), "status", Value::Null),
                "missing_field",
                Some("status"),
            ),
            (
                with(mac_event(), "ts", json!("1765000000")),
                "wrong_type",
                Some("ts"),
            ),
            (
                with(mac_event(), "ts", json!(-1)),
                "out_of_range",
                Some("ts"),
            ),
            (
                with(mac_event(), "ts", json!(1e300)),
                "out_of_range",
                Some("ts"),
            ),
            (
                with(mac_event(), "ts", Value::Null),
                "missing_field",
                Some("ts"),
            ),
            (
                with(mac_event(), "addr", json!("10.1.1.1")),
                "bad_value",
                Some("addr"),
            ),
            (
                with(mac_event(), "addr", json!("zz".repeat(40))),
                "too_long",
                Some("addr"),
            ),
            (
                with(mac_event(), "addr", json!("00:50:56:ad:bb:1\n")),
                "bad_value",
                Some("addr"),
            ),
            (
                with(mac_event(), "intf_id", json!(5)),
                "wrong_type",
                Some("intf_id"),
            ),
            (
                with(mac_event(), "intf_id", json!("e".repeat(129))),
                "too_long",
                Some("intf_id"),
            ),
            (
                with(mac_event(), "pctag", json!(-5)),
                "out_of_range",
                Some("pctag"),
            ),
            (
                with(mac_event(), "flags", json!([1])),
                "wrong_type",
                Some("flags"),
            ),
            (
                with(mac_event(), "flags", json!(["a,b"])),
                "bad_value",
                Some("flags"),
            ),
            (
                with(mac_event(), "flags", json!(vec!["f"; 33])),
                "too_long",
                Some("flags"),
            ),
            (
                with(mac_event(), "flags", json!({"local": true})),
                "wrong_type",
                Some("flags"),
            ),
            (
                with(mac_event(), "rw_mac", json!("00:50:56:aa:bb:01")),
                "not_for_type",
                Some("rw_mac"),
            ),
            (
                with(mac_event(), "bd", json!(1)),
                "not_for_type",
                Some("bd"),
            ),
            (
                with(mac_event(), "intf_name", json!("x")),
                "unknown_field",
                None,
            ),
            (with(mac_event(), "nodes", json!(1)), "unknown_field", None),
        ];
        for (value, code, field) in cases {
            let e = parse_event(&value).expect_err(&value.to_string());
            assert_eq!((e.code, e.field), (code, field), "{value}: {e}");
            assert!(e.to_string().len() < 400, "{e}");
        }
        let rw = json!({"fabric": "fab1", "node": 102, "vnid": 1, "type": "rewrite",
                        "addr": "10.1.1.5", "status": "created", "ts": 5.5});
        assert_eq!(parse_event(&rw).unwrap_err().field, Some("rw_mac"));
        let rw = with(rw, "rw_mac", json!("00:50:56:aa:bb:01"));
        assert_eq!(parse_event(&rw).unwrap_err().field, Some("rw_bd"));
        let rw = with(with(rw, "rw_bd", json!(1)), "pctag", json!(1));
        assert_eq!(parse_event(&rw).unwrap_err().code, "not_for_type");
        // The encap of the rs DN rides along.
        let rw = with(with(rw, "pctag", Value::Null), "encap", json!("vlan-101"));
        assert_eq!(parse_event(&rw).unwrap().encap, "vlan-101");
    }

    #[test]
    fn batches_in_three_shapes_and_hostile_ones() {
        let one = mac_event().to_string();
        let array = format!("[{one},{one},5]");
        let results = parse_batch(array.as_bytes()).unwrap();
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok() && results[1].is_ok());
        assert_eq!(results[2].as_ref().unwrap_err().code, "not_an_object");
        let wrapped = format!("{{\"events\":[{one}]}}");
        assert_eq!(parse_batch(wrapped.as_bytes()).unwrap().len(), 1);
        assert_eq!(parse_batch(one.as_bytes()).unwrap().len(), 1);
        assert_eq!(parse_batch(b"[]").unwrap().len(), 0);

        let refused = |bytes: &[u8], limits: &PushedLimits| {
            parse_batch_with(bytes, limits).unwrap_err().code()
        };
        let d = PushedLimits::default();
        assert_eq!(refused(b"", &d), "not_json");
        assert_eq!(refused(b"{\"events\": [", &d), "not_json");
        assert_eq!(refused(b"[NaN]", &d), "not_json");
        assert_eq!(refused(b"\xff\xfe", &d), "not_json");
        assert_eq!(refused(b"5", &d), "bad_shape");
        assert_eq!(refused(b"{\"events\": {}}", &d), "bad_shape");
        assert_eq!(refused(b"{\"events\": [], \"x\": 1}", &d), "bad_shape");
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let limits = PushedLimits {
            max_body_bytes: 1 << 20,
            max_events: 3,
        };
        assert_eq!(refused(deep.as_bytes(), &limits), "not_json");
        assert_eq!(refused(&vec![b' '; (1 << 20) + 1], &limits), "too_large");
        assert_eq!(refused(b"[{},{},{},{}]", &limits), "too_many_events");
        // A huge string inside the bound is refused by its field's bound.
        let huge = with(mac_event(), "encap", json!("v".repeat(500_000)));
        let results = parse_batch(json!([huge]).to_string().as_bytes()).unwrap();
        assert_eq!(results[0].as_ref().unwrap_err().code, "too_long");
    }
}
