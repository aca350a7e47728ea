//! Per-node history: EPT's `update_endpoint_history` (note §4, W:563-795).
//!
//! One [`HistoryRecord`] per (fabric, node, vnid, addr) holds what that node
//! reported, newest first. [`update_endpoint_history`] resolves the event's
//! interface and remote node against the [`Fabric`], decides whether the
//! event is recorded (acceptance rules, rs merging of `rw_mac`/`rw_bd`,
//! created / deleted / modified semantics), pushes it, and says whether the
//! endpoint needs analysis.

use crate::fabric::Fabric;
use crate::model::{
    EpmClass, EpmEvent, HistoryEvent, HistoryRecord, Settings, Status, push_capped,
};
use crate::text::{Flags, Text};

/// Why an event left the history unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// A deleted or modified event for a node with no record (W:652-654).
    UnknownOnNode,
    /// Same class as the node's newest event, with an older ts (W:690-693).
    OlderThanNewest,
    /// A delete or modify after a delete of the same class (W:695-697).
    AfterDelete,
    /// An rs object that changes neither rw_mac nor rw_bd (W:700-732).
    RewriteUnchanged,
    /// A created or modified event that changes none of remote, pctag,
    /// flags, encap, intf_id (W:745-777).
    Unchanged,
    /// The same event again (vigil, not EPT): the node's history already
    /// holds an event of this class with this `ts` and the same content (for
    /// rs objects, this rewrite; for the others, this status, interface,
    /// encap, pcTag, remote node and flags). An
    /// at-least-once bus redelivers what a killed worker had handled but
    /// not committed; EPT's ts rule only catches a redelivery of the
    /// newest event of the same class.
    Redelivered,
}

/// What [`update_endpoint_history`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryOutcome {
    /// Nothing recorded.
    Ignored(IgnoreReason),
    /// An event was pushed (`new_record`: it created the node's record).
    Pushed { new_record: bool, analysis: bool },
}

impl HistoryOutcome {
    /// Whether EPT would run move/offsubnet/stale analysis for the event.
    pub fn analysis_required(&self) -> bool {
        matches!(self, HistoryOutcome::Pushed { analysis: true, .. })
    }

    /// Whether the node's record changed.
    pub fn pushed(&self) -> bool {
        matches!(self, HistoryOutcome::Pushed { .. })
    }
}

/// Whether `event` (as built from `ev`, before merging) is already in the
/// node's history ([`IgnoreReason::Redelivered`]).
fn is_redelivery(record: Option<&HistoryRecord>, event: &HistoryEvent, ev: &EpmEvent) -> bool {
    let Some(record) = record else {
        return false;
    };
    record.events.iter().any(|kept| {
        kept.classname == event.classname
            && kept.ts.to_bits() == event.ts.to_bits()
            && if ev.classname == EpmClass::RsMacEpToIpEpAtt {
                if ev.status == Status::Deleted {
                    kept.rw_mac.is_empty() && kept.rw_bd == 0
                } else {
                    kept.rw_mac == ev.addr && kept.rw_bd == ev.bd
                }
            } else {
                // A modified event's empty fields were inherited when kept.
                let inherits = ev.status == Status::Modified;
                let text =
                    |mine: &str, theirs: &str| mine == theirs || (inherits && mine.is_empty());
                kept.status == ev.status
                    && text(&event.intf_id, &kept.intf_id)
                    && text(&event.encap, &kept.encap)
                    && (event.pctag == kept.pctag || (inherits && event.pctag == 0))
                    && (event.remote == kept.remote || (inherits && event.remote == 0))
                    && (event.flags == kept.flags || (inherits && event.flags.is_empty()))
            }
    })
}

/// The event's fields after interface, remote and name resolution
/// (W:584-636).
struct Resolved {
    if_id: Text,
    intf_name: Text,
    tunnel_flags: Text,
    remote: u32,
    epg_name: Text,
    vnid_name: Text,
    encap: Text,
}

fn resolve(fabric: &Fabric, ev: &EpmEvent) -> Resolved {
    let is_local = ev.has_flag("local");
    let is_rs = ev.classname == EpmClass::RsMacEpToIpEpAtt;
    let is_deleted = ev.status == Status::Deleted;
    let mut if_id = Text::from(ev.if_id.as_str());
    let mut intf_name = if_id.clone();
    let mut tunnel = None;
    let mut tunnel_flags = Text::default();
    if ev.if_id.contains("po") {
        // W:585-597: the pc policy name; a local learn on a vpc's pc becomes vpc-<id>.
        let name = fabric.pc_name(ev.node, &ev.if_id);
        if !name.is_empty() {
            intf_name = Text::from(name);
        }
        if is_local {
            let vpc = fabric.pc_vpc_id(ev.node, &ev.if_id);
            if vpc > 0 {
                if_id = Text::from(format!("vpc-{vpc}"));
            }
        }
    } else if ev.if_id.contains("tunnel") {
        // W:599-610: tunnel flags; a local learn on a vxlan tunnel is a virtual leaf.
        tunnel = fabric.tunnel(ev.node, &ev.if_id);
        if let Some(t) = tunnel {
            tunnel_flags = Text::from(t.flags.as_str());
            if is_local && t.encap == "vxlan" {
                if_id = Text::from(format!("vl-{}", t.dst));
                intf_name = if_id.clone();
            }
        }
    }
    // W:613-621: the remote node of a non-deleted XR event.
    let mut remote = 0;
    if !is_local && !is_rs && !is_deleted {
        if ev.has_flag("cached") || ev.has_flag("vtep") || if_id == "unspecified" {
            // not mapped
        } else if ev.has_flag("peer-attached") || ev.has_flag("peer-attached-rl") {
            remote = fabric.peer_of(ev.node);
        } else if let Some(t) = tunnel {
            remote = t.remote;
        }
    }
    // W:624: epg name only for pcTag > 1.
    let epg_name = if ev.pctag > 1 {
        Text::from(fabric.epg_name(ev.vrf, ev.pctag))
    } else {
        Text::default()
    };
    // W:630-636: vnid name; an external BD's encap replaces the event's.
    let mut encap = None;
    let vnid_name = match fabric.vnid(ev.vnid) {
        Some(v) => {
            if v.external {
                encap = Some(Text::from(v.encap.as_str()));
            }
            Text::from(v.name.as_str())
        }
        None => Text::default(),
    };
    let encap = encap.unwrap_or_else(|| Text::from(ev.encap.as_str()));
    Resolved {
        if_id,
        intf_name,
        tunnel_flags,
        remote,
        epg_name,
        vnid_name,
        encap,
    }
}

/// `eptHistoryEvent.from_msg` (ept_history.py:168-186): a delete carries only
/// classname, ts and status.
fn history_event(ev: &EpmEvent, r: Resolved) -> HistoryEvent {
    let mut h = HistoryEvent::empty(ev.classname, ev.ts, ev.status);
    if ev.status != Status::Deleted {
        h.remote = r.remote;
        h.pctag = ev.pctag;
        h.flags = Flags::new(&ev.flags);
        h.tunnel_flags = r.tunnel_flags;
        h.encap = r.encap;
        h.intf_id = r.if_id;
        h.intf_name = r.intf_name;
        h.epg_name = r.epg_name;
        h.vnid_name = r.vnid_name;
    }
    h
}

fn five_differ(a: &HistoryEvent, b: &HistoryEvent) -> bool {
    a.remote != b.remote
        || a.pctag != b.pctag
        || a.flags != b.flags
        || a.encap != b.encap
        || a.intf_id != b.intf_id
}

/// EPT's `update_endpoint_history` (W:563-795) for `ev` on its node.
///
/// `record` is the node's record for (fabric, node, vnid, key address), or
/// `None`; it is created or updated in place. A record with no events counts
/// as absent, as in EPT (whose lookup skips it).
pub fn update_endpoint_history(
    settings: &Settings,
    fabric: &Fabric,
    ev: &EpmEvent,
    record: &mut Option<HistoryRecord>,
) -> HistoryOutcome {
    let mut is_local = ev.has_flag("local");
    let is_deleted = ev.status == Status::Deleted;
    let is_rs = ev.classname == EpmClass::RsMacEpToIpEpAtt;
    let is_ip = ev.classname == EpmClass::IpEp;
    let resolved = resolve(fabric, ev);
    let mut event = history_event(ev, resolved);

    let last = match record.as_ref().and_then(|r| r.events.first()) {
        Some(last) => last.clone(),
        None => {
            // W:652-675: no record on this node yet.
            if ev.status != Status::Created {
                return HistoryOutcome::Ignored(IgnoreReason::UnknownOnNode);
            }
            if is_rs {
                event.rw_mac = Text::unique(&ev.addr);
                event.rw_bd = ev.bd;
            }
            *record = Some(HistoryRecord {
                fabric: Text::from(ev.fabric.as_str()),
                node: ev.node,
                vnid: ev.vnid,
                addr: Text::unique(ev.key_addr()),
                history_type: ev.history_type,
                count: 1,
                events: vec![event],
                is_stale: false,
                is_offsubnet: false,
            });
            // W:670-675: no analysis for a new rs record, or a new local epmIpEp.
            let analysis = !(is_rs || (is_local && is_ip));
            return HistoryOutcome::Pushed {
                new_record: true,
                analysis,
            };
        }
    };

    if is_redelivery(record.as_ref(), &event, ev) {
        return HistoryOutcome::Ignored(IgnoreReason::Redelivered);
    }

    if last.classname == event.classname {
        // W:690-693
        if last.ts > event.ts {
            return HistoryOutcome::Ignored(IgnoreReason::OlderThanNewest);
        }
        // W:695-697
        if last.status == Status::Deleted && matches!(ev.status, Status::Deleted | Status::Modified)
        {
            return HistoryOutcome::Ignored(IgnoreReason::AfterDelete);
        }
    }

    let cap = settings.max_per_node_endpoint_events();
    let push = |record: &mut Option<HistoryRecord>, event: HistoryEvent| {
        if let Some(r) = record.as_mut() {
            push_capped(&mut r.events, &mut r.count, event, cap);
        }
    };

    if is_rs {
        // W:700-732: the rs object brings rw_mac/rw_bd; all else is the previous event's.
        if is_deleted {
            event.rw_mac = Text::default();
            event.rw_bd = 0;
        } else {
            event.rw_mac = Text::unique(&ev.addr);
            event.rw_bd = ev.bd;
        }
        event.status = last.status;
        event.remote = last.remote;
        event.pctag = last.pctag;
        event.flags = last.flags.clone();
        event.tunnel_flags = last.tunnel_flags.clone();
        event.encap = last.encap.clone();
        event.intf_id = last.intf_id.clone();
        event.intf_name = last.intf_name.clone();
        event.epg_name = last.epg_name.clone();
        event.vnid_name = last.vnid_name.clone();
        is_local = event.has_flag("local");
        if last.rw_mac != event.rw_mac || last.rw_bd != event.rw_bd {
            push(record, event);
            return HistoryOutcome::Pushed {
                new_record: false,
                analysis: !is_deleted && is_local,
            };
        }
        return HistoryOutcome::Ignored(IgnoreReason::RewriteUnchanged);
    }

    // W:736-738: epmIpEp keeps the rewrite info of the previous event.
    if is_ip {
        event.rw_mac = last.rw_mac.clone();
        event.rw_bd = last.rw_bd;
    }

    let update = match ev.status {
        // W:745-751
        Status::Created => five_differ(&event, &last),
        // W:752-756: always pushed, keeping vnid_name (and rw info, above).
        Status::Deleted => {
            event.vnid_name = last.vnid_name.clone();
            true
        }
        // W:757-777: zero/empty fields inherit, then the same comparison.
        Status::Modified => {
            if event.remote == 0 {
                event.remote = last.remote;
            }
            if event.pctag == 0 {
                event.pctag = last.pctag;
            }
            if event.flags.is_empty() {
                event.flags = last.flags.clone();
            }
            for (mine, theirs) in [
                (&mut event.tunnel_flags, &last.tunnel_flags),
                (&mut event.encap, &last.encap),
                (&mut event.intf_id, &last.intf_id),
                (&mut event.intf_name, &last.intf_name),
                (&mut event.epg_name, &last.epg_name),
                (&mut event.vnid_name, &last.vnid_name),
            ] {
                if mine.is_empty() {
                    mine.clone_from(theirs);
                }
            }
            is_local = event.has_flag("local");
            five_differ(&event, &last)
        }
    };
    if !update {
        return HistoryOutcome::Ignored(IgnoreReason::Unchanged);
    }
    // W:787-792
    let analysis = !(is_ip && is_local && event.rw_bd == 0);
    push(record, event);
    HistoryOutcome::Pushed {
        new_record: false,
        analysis,
    }
}
