//! The fabric-wide endpoint and its current location ("complete local"):
//! EPT's `update_local` (note §5, W:797-1015).
//!
//! After the node's history is updated, the endpoint's location is the
//! newest complete local learn across nodes (an IP needs its rewrite info),
//! vpc peers folded into one pseudo-node. [`update_local`] compares it with
//! the endpoint record's current event and pushes, overwrites (a transitory
//! delete) or leaves the list, and reports whether move analysis is due.

use crate::fabric::{Fabric, vpc_node_id};
use crate::model::{
    EndpointEvent, EndpointRecord, EndpointType, EpmEvent, HistoryRecord, HistoryType, LearnType,
    Settings, Status, push_capped,
};
use crate::text::{Flags, Text};
use std::collections::BTreeMap;

/// A local delete followed by a different local learn within this many
/// seconds (event time) overwrites the delete (C:83, W:993).
pub const TRANSITORY_DELETE: f64 = 60.0;

/// What happened to the endpoint's event list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalChange {
    /// The list is as it was.
    Unchanged,
    /// The first complete local: `first_learn`, events = [it], count = 1
    /// (W:944-953).
    FirstLearn,
    /// A new location was pushed (W:1000-1006).
    Pushed,
    /// A new location replaced a delete less than 60 s older (W:993-999).
    OverwroteDelete,
    /// No complete local anywhere while the endpoint had a location: a
    /// delete (node 0) was pushed (W:897-917).
    PushedDelete,
    /// The best local is older than the current event: a delete was pushed
    /// (W:957-975).
    PushedDeleteOlderLocal,
    /// The best local is vpc-attached but its node has no vpc peer: the
    /// endpoint is left as it was (W:935-940).
    NoVpcPeer,
}

/// The result of [`update_local`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalResult {
    /// The endpoint record was created by this event.
    pub record_created: bool,
    pub change: LocalChange,
    /// Move analysis is due: a new location was recorded (first learn, push
    /// or overwrite) — EPT's `analyze_move`.
    pub analyze_move: bool,
}

/// The best complete local among the nodes' newest events (W:883-894): flag
/// "local", and for IP also rw_bd > 0 and rw_mac set; the latest ts wins.
/// Ties go to the lowest node id (EPT's winner then depends on MongoDB's
/// return order).
pub fn best_local(
    history_type: HistoryType,
    histories: &BTreeMap<u32, HistoryRecord>,
) -> Option<(u32, &crate::model::HistoryEvent)> {
    let mut best: Option<(u32, &crate::model::HistoryEvent)> = None;
    for (&node, record) in histories {
        let Some(event) = record.events.first() else {
            continue;
        };
        if !event.has_flag("local") {
            continue;
        }
        if history_type == HistoryType::Ip && (event.rw_bd == 0 || event.rw_mac.is_empty()) {
            continue;
        }
        if best.is_none_or(|(_, b)| b.ts < event.ts) {
            best = Some((node, event));
        }
    }
    best
}

fn delete_event(ts: f64, last: &EndpointEvent) -> EndpointEvent {
    EndpointEvent {
        ts,
        status: Status::Deleted,
        vnid_name: last.vnid_name.clone(),
        epg_name: last.epg_name.clone(),
        ..EndpointEvent::default()
    }
}

/// EPT's `update_local` (W:797-1015) for `ev`, after the node's history was
/// updated.
///
/// `histories` holds every node's record for the endpoint (fabric, vnid,
/// key address), `endpoint` its record, created or updated in place. Returns
/// `None` for a deleted or modified event of an unknown endpoint (no
/// analysis at all, W:873-875).
pub fn update_local(
    settings: &Settings,
    fabric: &Fabric,
    ev: &EpmEvent,
    histories: &BTreeMap<u32, HistoryRecord>,
    endpoint: &mut Option<EndpointRecord>,
) -> Option<LocalResult> {
    let no_flags = Flags::default();
    let flags_of = |node: u32| {
        histories
            .get(&node)
            .and_then(|r| r.events.first())
            .map(|e| &e.flags)
            .unwrap_or(&no_flags)
    };
    // W:850-855: learn type from the event node's newest flags.
    let mut learn_type = fabric.learn_type(ev.vnid, flags_of(ev.node));

    let mut record_created = false;
    let (last_event, last_learn_type): (Option<EndpointEvent>, Option<LearnType>) = match endpoint {
        Some(rec) => (rec.events.first().cloned(), Some(rec.learn_type)),
        None => {
            // W:867-880
            if matches!(ev.status, Status::Deleted | Status::Modified) {
                return None;
            }
            // The address is shared with the event node's record (made by
            // the history step), else copied once.
            let addr = histories
                .get(&ev.node)
                .map(|r| r.addr.clone())
                .unwrap_or_else(|| Text::unique(ev.key_addr()));
            let vnid_name = fabric
                .vnid(ev.vnid)
                .map(|v| Text::from(v.name.as_str()))
                .unwrap_or_default();
            *endpoint = Some(EndpointRecord {
                fabric: Text::from(ev.fabric.as_str()),
                vnid: ev.vnid,
                endpoint_type: EndpointType::of(&addr, ev.history_type),
                addr,
                count: 0,
                events: Vec::new(),
                first_learn: EndpointEvent {
                    vnid_name,
                    ..EndpointEvent::default()
                },
                learn_type,
                is_stale: false,
                is_offsubnet: false,
            });
            record_created = true;
            (None, None)
        }
    };
    let rec = endpoint.as_mut()?;
    let cap = settings.max_endpoint_events();
    let result = |change: LocalChange, analyze_move: bool| {
        Some(LocalResult {
            record_created,
            change,
            analyze_move,
        })
    };

    let Some((local_node, best)) = best_local(ev.history_type, histories) else {
        // W:897-917: XR or deleted on every node.
        if last_learn_type == Some(LearnType::Epg) && learn_type != LearnType::Epg {
            rec.learn_type = learn_type;
        }
        return match last_event {
            Some(last) if last.node > 0 => {
                push_capped(
                    &mut rec.events,
                    &mut rec.count,
                    delete_event(ev.ts, &last),
                    cap,
                );
                result(LocalChange::PushedDelete, false)
            }
            _ => result(LocalChange::Unchanged, false),
        };
    };

    // W:921-925: learn type from the best local node's newest flags.
    learn_type = fabric.learn_type(ev.vnid, &best.flags);
    let mut local = EndpointEvent {
        node: local_node,
        // W:932: the pod of the real node, before the vpc remap.
        pod: fabric.pod_of(local_node),
        status: Status::Created,
        ts: best.ts,
        pctag: best.pctag,
        encap: best.encap.clone(),
        intf_id: best.intf_id.clone(),
        intf_name: best.intf_name.clone(),
        rw_mac: best.rw_mac.clone(),
        rw_bd: best.rw_bd,
        epg_name: best.epg_name.clone(),
        vnid_name: best.vnid_name.clone(),
    };
    // W:935-940: vpc-attached → the pseudo-node; no peer → unchanged.
    if best.has_flag("vpc-attached") {
        let peer = fabric.peer_of(local_node);
        match vpc_node_id(local_node, peer) {
            Some(id) if peer > 0 => local.node = id,
            _ => return result(LocalChange::NoVpcPeer, false),
        }
    }

    let Some(last) = last_event else {
        // W:944-953: the first complete local (learn_type is left as set
        // when the record was created, as in EPT).
        rec.first_learn = local.clone();
        rec.events = vec![local];
        rec.count = 1;
        return result(LocalChange::FirstLearn, true);
    };

    let ts_delta = local.ts - last.ts;
    if ts_delta < 0.0 {
        // W:957-975: the previous local is no longer valid; record a delete.
        push_capped(
            &mut rec.events,
            &mut rec.count,
            delete_event(ev.ts, &last),
            cap,
        );
        return result(LocalChange::PushedDeleteOlderLocal, false);
    }
    let updated = last.node != local.node
        || last.pctag != local.pctag
        || last.encap != local.encap
        || last.intf_id != local.intf_id
        || last.rw_mac != local.rw_mac
        || last.rw_bd != local.rw_bd;
    // W:985-989
    if last_learn_type.is_some_and(|l| l != learn_type) {
        rec.learn_type = learn_type;
    }
    if !updated {
        return result(LocalChange::Unchanged, false);
    }
    // W:991-999: a transitory delete is overwritten.
    if last.node == 0 && local.node > 0 && ts_delta <= TRANSITORY_DELETE {
        match rec.events.first_mut() {
            Some(first) => *first = local,
            None => rec.events.push(local),
        }
        return result(LocalChange::OverwroteDelete, true);
    }
    push_capped(&mut rec.events, &mut rec.count, local, cap);
    result(LocalChange::Pushed, true)
}
