//! Replay a recorded fabric (issue #14, `vigil endpoints replay`): JSON
//! lines, each one APIC payload exactly as the APIC sends it: a
//! class-query response (`{"imdata":[...],"totalCount":"N"}`) or a
//! websocket notification (`{"subscriptionId":[...],"imdata":[...]}`),
//! optionally with a top-level `"ts"`.
//!
//! - **Time.** A line's `ts` (seconds since the epoch, fractional) is the
//!   moment it was received and the ts of every endpoint event in it. A
//!   line without `ts` is stamped 1 ms after the previous line's ts (0 before
//!   the first), so a file without any `ts` replays in file order at 0.001,
//!   0.002, ... and a line without `ts` in a timed recording sorts right
//!   after its predecessor. An explicit `ts` is used as it is, even when it
//!   is older than the previous line's (that is how out-of-order events are
//!   recorded).
//! - **Order.** Lines in file order. Within a line, fabric objects are
//!   applied first ([`ApicFabric`]), then the endpoint events are handled in
//!   their order with [`store::process_event`], one after another. A
//!   [`crate::Dispatcher`] would give the same result (it keeps each
//!   endpoint's order, and endpoints do not interact), but not across a
//!   fabric change between two events without a barrier, so the replay stays
//!   single-threaded.
//! - **Children.** Objects nested in `children` (class queries with
//!   `rsp-subtree`) are taken as objects of their own after their parent,
//!   with `dn` = parent dn + `/` + `rn` when they carry no `dn`.
//! - **Errors.** A line that is not JSON, not a payload, or has a bad `ts`,
//!   and every object of a payload that cannot be parsed or applied, is
//!   reported as a [`ReplayError`] with its file and line and skipped;
//!   nothing else is lost. Only an I/O error reading the file ends the
//!   replay ([`ReadError`]).
//! - **Overlay vnid.** The one given in [`ReplayOptions`] (default 0) until
//!   `uni/tn-infra/ctx-overlay-1` appears, then its `scope`.

use crate::apic::{ApicObject, EpmParser, Limits, PayloadError};
use crate::apic_fabric::{ApicFabric, Applied};
use crate::model::{EndpointKey, Settings};
use crate::store::{self, MemoryStore};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::io::BufRead;

/// How deep `children` are followed.
const MAX_CHILD_DEPTH: usize = 16;

/// What to replay into.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The fabric name the events are keyed on.
    pub fabric: String,
    /// The overlay vnid until the recording names it.
    pub overlay_vnid: u32,
    pub settings: Settings,
    pub limits: Limits,
}

impl ReplayOptions {
    /// Defaults for `fabric`.
    pub fn new(fabric: impl Into<String>) -> Self {
        ReplayOptions {
            fabric: fabric.into(),
            overlay_vnid: 0,
            settings: Settings::default(),
            limits: Limits::default(),
        }
    }
}

/// The file could not be read (the replay stops).
#[derive(Debug, thiserror::Error)]
#[error("{source_name}:{line}: reading: {error}")]
pub struct ReadError {
    pub source_name: String,
    pub line: usize,
    #[source]
    pub error: std::io::Error,
}

/// What went wrong with one line or one object of it.
#[derive(Debug, thiserror::Error)]
pub enum ReplayErrorKind {
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("line is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("{0}")]
    Payload(#[from] PayloadError),
    #[error("{0}")]
    Object(#[from] crate::apic::ObjectError),
    #[error("imdata[{index}] {error}")]
    Fabric {
        index: usize,
        error: crate::apic_fabric::FabricObjectError,
    },
    #[error("imdata[{index}] {key}: history store: {error}")]
    Store {
        index: usize,
        key: EndpointKey,
        error: crate::store::StoreError,
    },
}

/// A skipped line or object, located as `file:line`.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}:{line}: {kind}")]
pub struct ReplayError {
    pub source_name: String,
    pub line: usize,
    pub kind: ReplayErrorKind,
}

/// Counts of one replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Lines read (blank lines included).
    pub lines: usize,
    /// Lines taken as payloads.
    pub payloads: usize,
    /// Endpoint events handled by the history.
    pub endpoint_events: usize,
    /// Fabric objects applied.
    pub fabric_objects: usize,
    /// Objects of classes the tracker does not use.
    pub ignored: usize,
    /// Lines and objects skipped (see `errors`).
    pub errors: usize,
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lines, {} payloads, {} endpoint events, {} fabric objects, {} ignored, {} errors",
            self.lines,
            self.payloads,
            self.endpoint_events,
            self.fabric_objects,
            self.ignored,
            self.errors
        )
    }
}

/// The outcome of a replay: the history, the fabric, what was skipped.
#[derive(Debug)]
pub struct Replay {
    pub summary: ReplaySummary,
    pub errors: Vec<ReplayError>,
    pub store: MemoryStore,
    /// Every endpoint an event was handled for, sorted (fabric, vnid, addr).
    pub keys: BTreeSet<EndpointKey>,
    pub fabric: ApicFabric,
}

/// Replay the JSON lines of `reader` (named `source_name` in errors).
pub async fn replay<R: BufRead>(
    mut reader: R,
    source_name: &str,
    options: &ReplayOptions,
) -> Result<Replay, ReadError> {
    let mut parser =
        EpmParser::new(options.fabric.clone(), options.overlay_vnid).with_limits(options.limits);
    let mut out = Replay {
        summary: ReplaySummary::default(),
        errors: Vec::new(),
        store: MemoryStore::new(),
        keys: BTreeSet::new(),
        fabric: ApicFabric::new(options.fabric.clone(), options.overlay_vnid),
    };
    let max = options.limits.max_payload_bytes;
    let mut last_ts = 0.0_f64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let line_no = out.summary.lines + 1;
        let read_error = |error| ReadError {
            source_name: source_name.to_owned(),
            line: line_no,
            error,
        };
        let (n, too_long) = read_line(&mut reader, &mut buf, max).map_err(read_error)?;
        if n == 0 {
            break;
        }
        out.summary.lines = line_no;
        let fail = |out: &mut Replay, kind| {
            out.summary.errors += 1;
            out.errors.push(ReplayError {
                source_name: source_name.to_owned(),
                line: line_no,
                kind,
            });
        };
        if too_long {
            fail(&mut out, ReplayErrorKind::TooLong { max });
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            fail(&mut out, ReplayErrorKind::NotUtf8);
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let mut value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                fail(&mut out, PayloadError::Json(e).into());
                continue;
            }
        };
        flatten_children(&mut value);
        let received = last_ts + 0.001;
        let payload = match parser.parse_payload_value(&value, received) {
            Ok(p) => p,
            Err(e) => {
                fail(&mut out, e.into());
                continue;
            }
        };
        out.summary.payloads += 1;
        last_ts = payload.ts;
        // Fabric objects first.
        let mut events = Vec::new();
        for (index, object) in payload.objects.into_iter().enumerate() {
            match object {
                Err(e) => fail(&mut out, e.into()),
                Ok(ApicObject::Endpoint(ev)) => events.push((index, ev)),
                Ok(other) => match out.fabric.apply_object(&other) {
                    Ok(Applied::Applied) => out.summary.fabric_objects += 1,
                    Ok(Applied::Ignored) => out.summary.ignored += 1,
                    Err(error) => fail(&mut out, ReplayErrorKind::Fabric { index, error }),
                },
            }
        }
        let overlay = out.fabric.overlay_vnid();
        if overlay != parser.overlay_vnid() {
            // Events of this payload were parsed with the previous value;
            // re-parsing them would need the objects again. EPT learns the
            // overlay at build time, before any event, as a recording does.
            parser.set_overlay_vnid(overlay);
        }
        for (index, ev) in events {
            let key = ev.key();
            let fabric = out.fabric.fabric();
            match store::process_event(&options.settings, fabric, &out.store, &ev).await {
                Ok(_) => {
                    out.summary.endpoint_events += 1;
                    out.keys.insert(key);
                }
                Err(error) => fail(&mut out, ReplayErrorKind::Store { index, key, error }),
            }
        }
    }
    Ok(out)
}

/// Read one line (without its `\n`) into `buf`, at most `max` bytes; the
/// rest of a longer line is read and dropped. Returns the bytes consumed
/// (0 at the end) and whether the line was too long.
fn read_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        consumed += used;
        if done.is_some() {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok((consumed, too_long))
}

/// Lift objects nested in `children` into `imdata`, after their parent
/// (public so the live APIC subscriber reads payloads exactly as a replay
/// does).
pub fn flatten_children(value: &mut Value) {
    let Some(Value::Array(items)) = value.get_mut("imdata") else {
        return;
    };
    if !items.iter().any(has_children) {
        return;
    }
    let mut flat = Vec::with_capacity(items.len());
    for item in std::mem::take(items) {
        push_flat(item, None, 0, &mut flat);
    }
    *items = flat;
}

fn has_children(item: &Value) -> bool {
    item.as_object()
        .and_then(|o| o.values().next())
        .is_some_and(|body| body.get("children").is_some())
}

fn push_flat(mut item: Value, parent_dn: Option<&str>, depth: usize, out: &mut Vec<Value>) {
    let mut children = Vec::new();
    let mut dn = None;
    if let Some(outer) = item.as_object_mut()
        && outer.len() == 1
        && let Some(Value::Object(body)) = outer.values_mut().next()
    {
        if let Some(Value::Array(c)) = body.remove("children") {
            children = c;
        }
        if let Some(Value::Object(attrs)) = body.get_mut("attributes") {
            if !attrs.contains_key("dn")
                && let (Some(parent), Some(Value::String(rn))) = (parent_dn, attrs.get("rn"))
            {
                let child_dn = format!("{parent}/{rn}");
                attrs.insert("dn".to_owned(), Value::String(child_dn));
            }
            dn = attrs.get("dn").and_then(Value::as_str).map(str::to_owned);
        }
    }
    out.push(item);
    if depth >= MAX_CHILD_DEPTH {
        return;
    }
    for child in children {
        push_flat(child, dn.as_deref(), depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::vpc_node_id;
    use crate::model::Status;
    use crate::store::HistoryStore;

    const BD: u32 = 15990734;
    const VRF: u32 = 2949120;

    fn mac_dn(node: u32, mac: &str, encap: &str) -> String {
        format!(
            "topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[{encap}]/db-ep/mac-{mac}"
        )
    }

    fn recording() -> String {
        let fabric = serde_json::json!({"totalCount": "7", "imdata": [
            {"fabricNode": {"attributes": {"dn": "topology/pod-1/node-101", "id": "101", "role": "leaf", "address": "10.0.0.101"}}},
            {"fabricNode": {"attributes": {"dn": "topology/pod-1/node-102", "id": "102", "role": "leaf", "address": "10.0.0.102"}}},
            {"fabricNode": {"attributes": {"dn": "topology/pod-1/node-103", "id": "103", "role": "leaf", "address": "10.0.0.103"}}},
            {"fabricExplicitGEp": {"attributes": {"dn": "uni/fabric/protpol/expgep-vpc1", "name": "vpc1", "virtualIp": "10.0.0.100/32"},
              "children": [
                {"fabricNodePEp": {"attributes": {"rn": "nodepep-101", "id": "101"}}},
                {"fabricNodePEp": {"attributes": {"rn": "nodepep-102", "id": "102"}}}]}},
            {"vpcRsVpcConf": {"attributes": {"dn": "topology/pod-1/node-101/sys/vpc/inst/dom-1/if-5/rsvpcConf", "tSKey": "po1", "parentSKey": "5"}}},
            {"vpcRsVpcConf": {"attributes": {"dn": "topology/pod-1/node-102/sys/vpc/inst/dom-1/if-5/rsvpcConf", "tSKey": "po2", "parentSKey": "5"}}},
            {"fvBD": {"attributes": {"dn": "uni/tn-t/BD-bd1", "seg": BD.to_string()}}},
            {"fvnsVlanInstP": {"attributes": {"dn": "uni/infra/vlanns-x"}}}
        ]});
        let mac = "00:50:56:AA:BB:01";
        let note = |ts: f64, dn: String, status: &str, if_id: &str| {
            serde_json::json!({"ts": ts, "subscriptionId": ["7201"], "imdata": [
                {"epmMacEp": {"attributes": {"dn": dn, "status": status, "flags": "local,vpc-attached",
                  "ifId": if_id, "pcTag": "32771"}}}]})
            .to_string()
        };
        let mut lines = vec![fabric.to_string()];
        lines.push(note(100.0, mac_dn(101, mac, "vlan-10"), "created", "po1"));
        lines.push(note(101.0, mac_dn(102, mac, "vlan-10"), "created", "po2"));
        lines.push(String::new());
        lines.push("{not json".to_owned());
        lines.join("\n")
    }

    #[tokio::test]
    async fn replays_a_vpc_learn_to_one_location() {
        let text = recording();
        let r = replay(text.as_bytes(), "rec.jsonl", &ReplayOptions::new("fab1"))
            .await
            .unwrap();
        assert_eq!(r.summary.lines, 5);
        assert_eq!(r.summary.payloads, 3);
        assert_eq!(r.summary.endpoint_events, 2);
        assert_eq!(r.summary.fabric_objects, 9, "children count as objects");
        assert_eq!(r.summary.ignored, 1);
        assert_eq!(r.summary.errors, 1);
        assert_eq!(r.errors[0].line, 5);
        assert!(r.errors[0].to_string().starts_with("rec.jsonl:5: "));
        assert_eq!(r.keys.len(), 1);
        let key = r.keys.first().unwrap();
        assert_eq!(key.vnid, BD);
        let ep = r.store.endpoint(key).await.unwrap().unwrap();
        // Both peers on vpc 5: one location, the pseudo-node, no move.
        assert_eq!(ep.events.len(), 1);
        assert_eq!(ep.events[0].node, vpc_node_id(101, 102).unwrap());
        assert_eq!(ep.events[0].intf_id, "vpc-5");
        assert_eq!(ep.events[0].status, Status::Created);
        assert_eq!(r.store.history_count(), 2);
    }

    #[tokio::test]
    async fn lines_without_ts_follow_file_order() {
        let mac = "00:50:56:AA:BB:02";
        let line = |node: u32| {
            serde_json::json!({"imdata": [{"epmMacEp": {"attributes": {
                "dn": mac_dn(node, mac, "vlan-10"), "flags": "local", "ifId": "eth1/1"}}}]})
            .to_string()
        };
        let text = format!("{}\n{}\n", line(101), line(103));
        let r = replay(text.as_bytes(), "t", &ReplayOptions::new("f"))
            .await
            .unwrap();
        let ep = r
            .store
            .endpoint(r.keys.first().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ep.events[0].node, 103, "the later line is the newer learn");
        assert_eq!(ep.events[1].node, 101);
        assert!((ep.events[0].ts - 0.002).abs() < 1e-9);
    }

    #[tokio::test]
    async fn oversized_and_non_utf8_lines_are_skipped() {
        let mut options = ReplayOptions::new("f");
        options.limits.max_payload_bytes = 64;
        let mut text = Vec::new();
        text.extend_from_slice(format!("{{\"imdata\":[]}}\n{}\n", "x".repeat(200)).as_bytes());
        text.extend_from_slice(b"\xff\xfe\n{\"imdata\":[]}\r\n");
        let r = replay(text.as_slice(), "t", &options).await.unwrap();
        assert_eq!(r.summary.lines, 4);
        assert_eq!(r.summary.payloads, 2);
        let lines: Vec<usize> = r.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3]);
    }
}
