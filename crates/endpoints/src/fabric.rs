//! The fabric context the history rules consult (note §4, §5, §10): nodes
//! with their pod and vpc peer, tunnels, port-channels and their vpc ids,
//! EPGs by (vrf vnid, pcTag), vnids with their names (external BDs with their
//! encap), and the overlay vnid. It is a plain struct: the APIC subscriber
//! fills it from class queries and notifications; the rules only read it.
//!
//! The lookups are EPT's cache lookups (ept_cache.py:178-226), each returning
//! EPT's "not found" value (0, "" or `None`).

use crate::model::LearnType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The vpc pseudo-node id of two nodes: `(min << 16) + max` (C:294-301).
/// `None` when a node is 0 or does not fit in 16 bits (the id could not be
/// split back, C:310-315).
pub fn vpc_node_id(n1: u32, n2: u32) -> Option<u32> {
    let (lo, hi) = if n1 <= n2 { (n1, n2) } else { (n2, n1) };
    if lo == 0 || hi > 0xffff {
        return None;
    }
    Some((lo << 16) + hi)
}

/// Split a node id into its vpc members: `[(id & 0xffff0000) >> 16, id &
/// 0xffff]` (C:310-315); a plain node gives `(0, node)`.
pub fn split_vpc_node_id(id: u32) -> (u32, u32) {
    ((id & 0xffff_0000) >> 16, id & 0xffff)
}

/// A node id as EPT shows it: "(n1,n2)" for a vpc pseudo-node (C:303-308).
pub fn node_display(id: u32) -> String {
    match split_vpc_node_id(id) {
        (n1, n2) if n1 > 0 && n2 > 0 => format!("({n1},{n2})"),
        _ => id.to_string(),
    }
}

/// A fabric node (`eptNode`): its pod, role and configured vpc peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Node {
    pub id: u32,
    pub pod: u32,
    /// "leaf", "spine", "controller", "vpc" ...
    pub role: String,
    /// The vpc peer, 0 when none is configured.
    pub peer: u32,
}

/// A tunnel interface on a node (`eptTunnel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tunnel {
    pub node: u32,
    /// The interface id, e.g. "tunnel7".
    pub intf: String,
    /// The destination address (used for `vl-<dst>`).
    pub dst: String,
    /// The remote node, possibly a vpc pseudo-node, 0 when unresolved.
    pub remote: u32,
    /// The tunnel's encapsulation, e.g. "ivxlan" or "vxlan" (virtual leaf).
    pub encap: String,
    /// The tunnel's flags as APIC gives them, e.g. "physical,proxy".
    pub flags: String,
}

/// An EPG (`eptEpg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Epg {
    pub name: String,
    /// The BD vnid.
    pub bd: u32,
}

/// A VRF or BD vnid (`eptVnid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Vnid {
    pub name: String,
    /// An external (L3Out) BD.
    pub external: bool,
    /// The external BD's encap, which replaces an event's (W:630-636).
    pub encap: String,
}

/// What the history rules know of one fabric.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fabric {
    pub name: String,
    /// The vnid of `inst-overlay-1` (S:262-266).
    pub overlay_vnid: u32,
    pub nodes: HashMap<u32, Node>,
    /// By node, then tunnel ifId (nested so lookups by `&str` allocate nothing).
    pub tunnels: HashMap<u32, HashMap<String, Tunnel>>,
    /// Port-channel policy names by node, then ifId.
    pub pc_names: HashMap<u32, HashMap<String, String>>,
    /// vpc ids by node, then port-channel ifId.
    pub pc_vpc_ids: HashMap<u32, HashMap<String, u32>>,
    /// By (vrf vnid, pcTag).
    pub epgs: HashMap<(u32, i64), Epg>,
    pub vnids: HashMap<u32, Vnid>,
}

impl Fabric {
    /// An empty fabric context.
    pub fn new(name: impl Into<String>, overlay_vnid: u32) -> Self {
        Fabric {
            name: name.into(),
            overlay_vnid,
            ..Fabric::default()
        }
    }

    /// Add or replace a node (keeping a peer already configured).
    pub fn add_node(&mut self, id: u32, pod: u32, role: impl Into<String>) {
        let peer = self.nodes.get(&id).map(|n| n.peer).unwrap_or(0);
        self.nodes.insert(
            id,
            Node {
                id,
                pod,
                role: role.into(),
                peer,
            },
        );
    }

    /// Configure `a` and `b` as vpc peers (both directions).
    pub fn add_vpc_pair(&mut self, a: u32, b: u32) {
        for (n, p) in [(a, b), (b, a)] {
            self.nodes
                .entry(n)
                .or_insert_with(|| Node {
                    id: n,
                    ..Node::default()
                })
                .peer = p;
        }
    }

    /// Add or replace a tunnel.
    pub fn add_tunnel(&mut self, tunnel: Tunnel) {
        self.tunnels
            .entry(tunnel.node)
            .or_default()
            .insert(tunnel.intf.clone(), tunnel);
    }

    /// Name a port-channel and map it to vpc id `vpc` (0: not a vpc).
    pub fn add_port_channel(&mut self, node: u32, intf: &str, name: &str, vpc: u32) {
        self.pc_names
            .entry(node)
            .or_default()
            .insert(intf.to_owned(), name.to_owned());
        let vpcs = self.pc_vpc_ids.entry(node).or_default();
        if vpc > 0 {
            vpcs.insert(intf.to_owned(), vpc);
        } else {
            vpcs.remove(intf);
        }
    }

    /// Add or replace an EPG.
    pub fn add_epg(&mut self, vrf: u32, pctag: i64, name: &str, bd: u32) {
        self.epgs.insert(
            (vrf, pctag),
            Epg {
                name: name.to_owned(),
                bd,
            },
        );
    }

    /// Add or replace a vnid.
    pub fn add_vnid(&mut self, vnid: u32, name: &str, external: bool, encap: &str) {
        self.vnids.insert(
            vnid,
            Vnid {
                name: name.to_owned(),
                external,
                encap: encap.to_owned(),
            },
        );
    }

    /// The node's pod, 0 when unknown (ept_cache.py:178-182).
    pub fn pod_of(&self, node: u32) -> u32 {
        self.nodes.get(&node).map(|n| n.pod).unwrap_or(0)
    }

    /// The node's vpc peer, 0 when none (ept_cache.py:184-188).
    pub fn peer_of(&self, node: u32) -> u32 {
        self.nodes.get(&node).map(|n| n.peer).unwrap_or(0)
    }

    /// The tunnel `intf` on `node`.
    pub fn tunnel(&self, node: u32, intf: &str) -> Option<&Tunnel> {
        self.tunnels.get(&node)?.get(intf)
    }

    /// The port-channel policy name, "" when unknown.
    pub fn pc_name(&self, node: u32, intf: &str) -> &str {
        self.pc_names
            .get(&node)
            .and_then(|m| m.get(intf))
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The vpc id of a port-channel, 0 when it is none.
    pub fn pc_vpc_id(&self, node: u32, intf: &str) -> u32 {
        self.pc_vpc_ids
            .get(&node)
            .and_then(|m| m.get(intf))
            .copied()
            .unwrap_or(0)
    }

    /// The EPG name for (vrf, pcTag), "" when unknown.
    pub fn epg_name(&self, vrf: u32, pctag: i64) -> &str {
        self.epgs
            .get(&(vrf, pctag))
            .map(|e| e.name.as_str())
            .unwrap_or("")
    }

    /// The vnid's record.
    pub fn vnid(&self, vnid: u32) -> Option<&Vnid> {
        self.vnids.get(&vnid)
    }

    /// EPT's `get_learn_type` (F:115-134).
    pub fn learn_type(&self, vnid: u32, flags: &crate::text::Flags) -> LearnType {
        let has = |f: &str| flags.contains(f);
        if has("loopback") {
            LearnType::Loopback
        } else if has("psvi") {
            LearnType::Psvi
        } else if has("svi") {
            LearnType::External
        } else if vnid == self.overlay_vnid {
            LearnType::Overlay
        } else if self.vnid(vnid).is_some_and(|v| v.external) {
            LearnType::External
        } else {
            LearnType::Epg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpc_pseudo_node() {
        // §10 / C:294-315: 101/102 → 0x650066 = 6619238, in either order.
        assert_eq!(vpc_node_id(101, 102), Some(6619238));
        assert_eq!(vpc_node_id(102, 101), Some(0x650066));
        assert_eq!(split_vpc_node_id(6619238), (101, 102));
        assert_eq!(split_vpc_node_id(101), (0, 101));
        assert_eq!(node_display(6619238), "(101,102)");
        assert_eq!(node_display(101), "101");
        assert_eq!(node_display(0), "0");
        assert_eq!(vpc_node_id(0, 102), None);
        assert_eq!(vpc_node_id(1, 0x1_0000), None);
    }

    #[test]
    fn learn_type_order() {
        // F:115-134: loopback > psvi > svi(external) > overlay > external vnid > epg.
        let mut f = Fabric::new("f", 100);
        f.add_vnid(7, "uni/tn-a/out-x", true, "vlan-7");
        let fl = |v: &[&str]| crate::text::Flags::new(v);
        assert_eq!(
            f.learn_type(100, &fl(&["loopback", "psvi"])),
            LearnType::Loopback
        );
        assert_eq!(f.learn_type(100, &fl(&["psvi", "svi"])), LearnType::Psvi);
        assert_eq!(f.learn_type(100, &fl(&["svi"])), LearnType::External);
        assert_eq!(f.learn_type(100, &fl(&["local"])), LearnType::Overlay);
        assert_eq!(f.learn_type(7, &fl(&[])), LearnType::External);
        assert_eq!(f.learn_type(8, &fl(&["local"])), LearnType::Epg);
    }

    #[test]
    fn lookups_default_to_epts_not_found() {
        let mut f = Fabric::new("f", 1);
        f.add_node(101, 1, "leaf");
        f.add_vpc_pair(101, 102);
        f.add_node(101, 2, "leaf"); // keeps the peer
        assert_eq!(f.peer_of(101), 102);
        assert_eq!(f.peer_of(102), 101);
        assert_eq!(f.pod_of(101), 2);
        assert_eq!(f.pod_of(999), 0);
        assert_eq!(f.peer_of(999), 0);
        f.add_port_channel(101, "po1", "pc-policy", 0);
        assert_eq!(f.pc_name(101, "po1"), "pc-policy");
        assert_eq!(f.pc_vpc_id(101, "po1"), 0);
        assert_eq!(f.pc_name(101, "po2"), "");
        f.add_port_channel(101, "po3", "vpc-pol", 9);
        assert_eq!(f.pc_vpc_id(101, "po3"), 9);
        f.add_port_channel(101, "po3", "vpc-pol", 0);
        assert_eq!(
            f.pc_vpc_id(101, "po3"),
            0,
            "a pc leaving its vpc is unmapped"
        );
        f.add_tunnel(Tunnel {
            node: 101,
            intf: "tunnel1".into(),
            remote: 103,
            ..Tunnel::default()
        });
        assert_eq!(f.tunnel(101, "tunnel1").map(|t| t.remote), Some(103));
        assert!(f.tunnel(102, "tunnel1").is_none());
        assert_eq!(f.epg_name(1, 5), "");
    }
}
