//! APIC fabric objects → [`Fabric`] (issue #14): the classes the history
//! rules read, from APIC's own JSON (`{"<class>":{"attributes":{...}}}` as
//! [`ApicObject::Other`] gives them).
//!
//! | class | what it gives | attributes (EPT's mapping, `mo_dependency_map.py`, `ept_subscriber.py`) |
//! |---|---|---|
//! | `fabricNode` | node id, pod, role, TEP address | dn `topology/pod-P/node-N`, `id`, `role`, `address` |
//! | `tunnelIf` | tunnel → remote node | dn `.../node-N/...`, `id`, `dest` (a `/len` suffix is dropped), `tType` (encap), `type` (flags) |
//! | `vpcRsVpcConf` | port-channel → vpc id | dn `.../node-N/...`, `tSKey` (the pc ifId), `parentSKey` (the vpc id) |
//! | `pcAggrIf` | port-channel name | dn `.../node-N/...`, `id`, `name` |
//! | `fvCtx` | VRF vnid | `scope`, name = dn |
//! | `fvBD`, `fvSvcBD` | BD vnid | `seg`, name = dn |
//! | `fvAEPg` | EPG by (vrf, pcTag) | `scope`, `pcTag`, name = dn |
//! | `fvRsBd` | EPG → BD | dn `<epg>/rsbd`, `tDn` (the BD's dn) |
//! | `l3extExtEncapAllocator` | external BD vnid and encap | `extEncap` (`vxlan-N`), `encap` |
//! | `fabricExplicitGEp`, `fabricAutoGEp` | vpc group, its virtual TEP | `virtualIp`, `name` |
//! | `fabricNodePEp` | vpc group member | dn `<group>/nodepep-N`, `id` |
//! | `fabricProtPol` | vpc pairing policy | `pairT` (kept, not used by the rules) |
//!
//! Objects are kept by class and DN with their attributes merged as APIC
//! sends them: `created` or an empty status (a class-query result) replaces,
//! `modified` merges the attributes it carries into what is known (an
//! unknown DN is taken as created), `deleted` removes. The [`Fabric`] is
//! derived from what is kept, so the order in which related objects arrive
//! does not matter (a `tunnelIf` before the `fabricNode` its `dest` names,
//! an `fvRsBd` before its `fvBD`): [`ApicFabric::fabric`] rebuilds it when
//! something changed since the last call.
//!
//! Derivations:
//! - A vpc group with exactly two members gives the members as vpc peers and
//!   a pseudo-node ([`vpc_node_id`], role "vpc", the first member's pod)
//!   whose TEP is the group's `virtualIp`. A tunnel whose `dest` is that
//!   address has the pseudo-node as its remote (as EPT resolves tunnels by
//!   node address, `ept_tunnel.py`).
//! - A tunnel's remote is the node whose TEP is its `dest`, 0 when none is
//!   (expected for vxlan, proxy and dci tunnels).
//! - An EPG's BD vnid: its `fvRsBd` `tDn` → that BD's `seg`, 0 when unknown.
//! - The overlay vnid: the `scope` of `uni/tn-infra/ctx-overlay-1` when it
//!   is known (EPT discovers it at run time, S:262-266), else the value
//!   given to [`ApicFabric::new`].
//!
//! Unknown classes are ignored and counted ([`Applied::Ignored`]). A bad
//! object (a DN without a node, a non-numeric vnid, an unknown status, an
//! oversized attribute) is an [`FabricObjectError`] naming the class, DN and
//! attribute, and leaves what was known unchanged.

use crate::apic::{ApicObject, truncate};
use crate::fabric::{Fabric, Tunnel, vpc_node_id};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// The DN of the VRF whose `scope` is the overlay vnid.
pub const OVERLAY_CTX_DN: &str = "uni/tn-infra/ctx-overlay-1";

/// The longest attribute value (and DN) accepted, in bytes.
pub const MAX_ATTRIBUTE_BYTES: usize = 2048;

/// The classes applied to the [`Fabric`]; every other class is ignored.
pub const FABRIC_CLASSES: &[&str] = &[
    "fabricNode",
    "tunnelIf",
    "vpcRsVpcConf",
    "pcAggrIf",
    "fvCtx",
    "fvBD",
    "fvSvcBD",
    "fvAEPg",
    "fvRsBd",
    "l3extExtEncapAllocator",
    "fabricExplicitGEp",
    "fabricAutoGEp",
    "fabricNodePEp",
    "fabricProtPol",
];

/// What is wrong with a fabric object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FabricErrorKind {
    #[error("no `dn` attribute")]
    MissingDn,
    #[error("attribute `{0}` is not a string")]
    NotAString(String),
    #[error("attribute `{attribute}` is {len} bytes, more than {max}")]
    TooLong {
        attribute: String,
        len: usize,
        max: usize,
    },
    #[error("attribute `status`: unknown status {0:?}")]
    UnknownStatus(String),
    #[error("attribute `dn` names no node (`node-N`)")]
    NoNode,
    #[error("attribute `{attribute}` is missing")]
    Missing { attribute: &'static str },
    #[error("attribute `{attribute}`: {value:?} is not {expected}")]
    Invalid {
        attribute: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// A fabric object that could not be applied, located by class and DN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}{}: {kind}", dn.as_deref().map(|d| format!(" dn={d:?}")).unwrap_or_default())]
pub struct FabricObjectError {
    pub class: String,
    pub dn: Option<String>,
    pub kind: FabricErrorKind,
}

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A fabric object was created, modified or deleted.
    Applied,
    /// Not a class the history rules need (or an endpoint object).
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Replace,
    Merge,
    Delete,
}

/// Typed records, one per DN.
#[derive(Debug, Clone, PartialEq, Default)]
struct NodeRec {
    id: u32,
    pod: u32,
    role: String,
    address: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct VpcGroup {
    virtual_ip: String,
}

/// APIC's fabric objects by class and DN, and the [`Fabric`] derived from
/// them.
#[derive(Debug, Clone)]
pub struct ApicFabric {
    fabric: Fabric,
    default_overlay: u32,
    dirty: bool,
    /// Merged attributes by (class, dn).
    raw: HashMap<(String, String), Map<String, Value>>,
    nodes: BTreeMap<String, NodeRec>,
    tunnels: BTreeMap<String, Tunnel>,
    /// dn → (node, pc ifId, vpc id)
    vpc_confs: BTreeMap<String, (u32, String, u32)>,
    /// dn → (node, pc ifId, name)
    pcs: BTreeMap<String, (u32, String, String)>,
    /// dn → vnid (fvCtx, fvBD, fvSvcBD)
    ctxs: BTreeMap<String, u32>,
    bds: BTreeMap<String, u32>,
    /// dn → (vnid, encap)
    ext_bds: BTreeMap<String, (u32, String)>,
    /// dn → (vrf, pcTag)
    epgs: BTreeMap<String, (u32, i64)>,
    /// epg dn → bd dn
    rsbds: BTreeMap<String, String>,
    vpc_groups: BTreeMap<String, VpcGroup>,
    /// nodepep dn → (group dn, node)
    vpc_members: BTreeMap<String, (String, u32)>,
    pair_type: String,
}

impl ApicFabric {
    /// An empty fabric; `overlay_vnid` until `uni/tn-infra/ctx-overlay-1`
    /// is known.
    pub fn new(name: impl Into<String>, overlay_vnid: u32) -> Self {
        ApicFabric {
            fabric: Fabric::new(name, overlay_vnid),
            default_overlay: overlay_vnid,
            dirty: false,
            raw: HashMap::new(),
            nodes: BTreeMap::new(),
            tunnels: BTreeMap::new(),
            vpc_confs: BTreeMap::new(),
            pcs: BTreeMap::new(),
            ctxs: BTreeMap::new(),
            bds: BTreeMap::new(),
            ext_bds: BTreeMap::new(),
            epgs: BTreeMap::new(),
            rsbds: BTreeMap::new(),
            vpc_groups: BTreeMap::new(),
            vpc_members: BTreeMap::new(),
            pair_type: String::new(),
        }
    }

    /// The derived [`Fabric`], rebuilt if an object changed since the last
    /// call.
    pub fn fabric(&mut self) -> &Fabric {
        if self.dirty {
            self.rebuild();
            self.dirty = false;
        }
        &self.fabric
    }

    /// The overlay vnid now known (see the module doc).
    pub fn overlay_vnid(&self) -> u32 {
        self.ctxs
            .get(OVERLAY_CTX_DN)
            .copied()
            .unwrap_or(self.default_overlay)
    }

    /// The vpc pairing type of `fabricProtPol` (`pairT`), "" when unknown.
    pub fn pair_type(&self) -> &str {
        &self.pair_type
    }

    /// Number of fabric objects known.
    pub fn object_count(&self) -> usize {
        self.raw.len()
    }

    /// Apply one parsed APIC object; endpoint objects are [`Applied::Ignored`].
    pub fn apply_object(&mut self, object: &ApicObject) -> Result<Applied, FabricObjectError> {
        match object {
            ApicObject::Endpoint(_) => Ok(Applied::Ignored),
            ApicObject::Other { class, attributes } => self.apply(class, attributes),
        }
    }

    /// Apply one object of `class` with its `attributes`.
    pub fn apply(
        &mut self,
        class: &str,
        attributes: &Map<String, Value>,
    ) -> Result<Applied, FabricObjectError> {
        if !FABRIC_CLASSES.contains(&class) {
            return Ok(Applied::Ignored);
        }
        let err = |dn: Option<&str>, kind| FabricObjectError {
            class: class.to_owned(),
            dn: dn.map(|d| truncate(d, MAX_ATTRIBUTE_BYTES)),
            kind,
        };
        // Every attribute must be a bounded string (APIC writes them so).
        for (name, value) in attributes {
            match value {
                Value::String(s) if s.len() > MAX_ATTRIBUTE_BYTES => {
                    let dn = attributes.get("dn").and_then(Value::as_str);
                    return Err(err(
                        dn,
                        FabricErrorKind::TooLong {
                            attribute: truncate(name, 64),
                            len: s.len(),
                            max: MAX_ATTRIBUTE_BYTES,
                        },
                    ));
                }
                Value::String(_) | Value::Null => {}
                _ if name == "dn" || name == "status" => {
                    return Err(err(None, FabricErrorKind::NotAString(name.clone())));
                }
                // Other non-string attributes are dropped below.
                _ => {}
            }
        }
        let Some(dn) = attributes.get("dn").and_then(Value::as_str) else {
            return Err(err(None, FabricErrorKind::MissingDn));
        };
        let op = match attributes.get("status").and_then(Value::as_str) {
            None | Some("" | "created") => Op::Replace,
            Some("modified") => Op::Merge,
            Some("deleted") => Op::Delete,
            Some(other) => {
                return Err(err(
                    Some(dn),
                    FabricErrorKind::UnknownStatus(truncate(other, 64)),
                ));
            }
        };
        let key = (class.to_owned(), dn.to_owned());
        if op == Op::Delete {
            if self.raw.remove(&key).is_some() {
                self.remove_typed(class, dn);
                self.dirty = true;
            }
            return Ok(Applied::Applied);
        }
        let strings = attributes
            .iter()
            .filter(|(k, v)| v.is_string() && k.as_str() != "status")
            .map(|(k, v)| (k.clone(), v.clone()));
        let merged: Map<String, Value> = match (op, self.raw.get(&key)) {
            (Op::Merge, Some(known)) => {
                let mut m = known.clone();
                m.extend(strings);
                m
            }
            _ => strings.collect(),
        };
        self.insert_typed(class, dn, &merged)
            .map_err(|kind| err(Some(dn), kind))?;
        self.raw.insert(key, merged);
        self.dirty = true;
        Ok(Applied::Applied)
    }

    fn remove_typed(&mut self, class: &str, dn: &str) {
        match class {
            "fabricNode" => drop(self.nodes.remove(dn)),
            "tunnelIf" => drop(self.tunnels.remove(dn)),
            "vpcRsVpcConf" => drop(self.vpc_confs.remove(dn)),
            "pcAggrIf" => drop(self.pcs.remove(dn)),
            "fvCtx" => drop(self.ctxs.remove(dn)),
            "fvBD" | "fvSvcBD" => drop(self.bds.remove(dn)),
            "fvAEPg" => drop(self.epgs.remove(dn)),
            "fvRsBd" => drop(self.rsbds.remove(epg_of_rsbd(dn))),
            "l3extExtEncapAllocator" => drop(self.ext_bds.remove(dn)),
            "fabricExplicitGEp" | "fabricAutoGEp" => drop(self.vpc_groups.remove(dn)),
            "fabricNodePEp" => drop(self.vpc_members.remove(dn)),
            "fabricProtPol" => self.pair_type.clear(),
            _ => {}
        }
    }

    fn insert_typed(
        &mut self,
        class: &str,
        dn: &str,
        a: &Map<String, Value>,
    ) -> Result<(), FabricErrorKind> {
        let s = |name: &str| a.get(name).and_then(Value::as_str).unwrap_or("");
        match class {
            "fabricNode" => {
                let id = match s("id") {
                    "" => dn_number(dn, "node-").ok_or(FabricErrorKind::NoNode)?,
                    v => parse_u32("id", v)?,
                };
                self.nodes.insert(
                    dn.to_owned(),
                    NodeRec {
                        id,
                        pod: dn_number(dn, "pod-").unwrap_or(0),
                        role: s("role").to_owned(),
                        address: strip_prefix_len(s("address")).to_owned(),
                    },
                );
            }
            "tunnelIf" => {
                let node = dn_number(dn, "node-").ok_or(FabricErrorKind::NoNode)?;
                let intf = match s("id") {
                    "" => dn_bracket(dn, "tunnel-[")
                        .ok_or(FabricErrorKind::Missing { attribute: "id" })?,
                    v => v,
                };
                self.tunnels.insert(
                    dn.to_owned(),
                    Tunnel {
                        node,
                        intf: intf.to_owned(),
                        dst: strip_prefix_len(s("dest")).to_owned(),
                        remote: 0,
                        encap: s("tType").to_owned(),
                        flags: s("type").to_owned(),
                    },
                );
            }
            "vpcRsVpcConf" => {
                let node = dn_number(dn, "node-").ok_or(FabricErrorKind::NoNode)?;
                let intf = match s("tSKey") {
                    "" => dn_bracket(s("tDn"), "aggr-[")
                        .ok_or(FabricErrorKind::Missing { attribute: "tSKey" })?,
                    v => v,
                };
                let vpc = match s("parentSKey") {
                    "" => dn_number(dn, "/if-").ok_or(FabricErrorKind::Missing {
                        attribute: "parentSKey",
                    })?,
                    v => parse_u32("parentSKey", v)?,
                };
                self.vpc_confs
                    .insert(dn.to_owned(), (node, intf.to_owned(), vpc));
            }
            "pcAggrIf" => {
                let node = dn_number(dn, "node-").ok_or(FabricErrorKind::NoNode)?;
                let intf = match s("id") {
                    "" => dn_bracket(dn, "aggr-[")
                        .ok_or(FabricErrorKind::Missing { attribute: "id" })?,
                    v => v,
                };
                self.pcs
                    .insert(dn.to_owned(), (node, intf.to_owned(), s("name").to_owned()));
            }
            "fvCtx" => {
                let vnid = required_u32("scope", s("scope"))?;
                self.ctxs.insert(dn.to_owned(), vnid);
            }
            "fvBD" | "fvSvcBD" => {
                let vnid = required_u32("seg", s("seg"))?;
                self.bds.insert(dn.to_owned(), vnid);
            }
            "fvAEPg" => {
                let vrf = required_u32("scope", s("scope"))?;
                // pcTag "any" (or missing) is 0, as for epm objects (M:606-609).
                let pctag = s("pcTag").trim().parse::<i64>().unwrap_or(0);
                self.epgs.insert(dn.to_owned(), (vrf, pctag));
            }
            "fvRsBd" => {
                let bd = s("tDn");
                if bd.is_empty() {
                    return Err(FabricErrorKind::Missing { attribute: "tDn" });
                }
                self.rsbds.insert(epg_of_rsbd(dn).to_owned(), bd.to_owned());
            }
            "l3extExtEncapAllocator" => {
                let ext = s("extEncap");
                let vnid = match ext.strip_prefix("vxlan-") {
                    Some(n) => parse_u32("extEncap", n)?,
                    None if ext.is_empty() => {
                        return Err(FabricErrorKind::Missing {
                            attribute: "extEncap",
                        });
                    }
                    None => {
                        return Err(FabricErrorKind::Invalid {
                            attribute: "extEncap",
                            value: truncate(ext, 64),
                            expected: "vxlan-<vnid>",
                        });
                    }
                };
                self.ext_bds
                    .insert(dn.to_owned(), (vnid, s("encap").to_owned()));
            }
            "fabricExplicitGEp" | "fabricAutoGEp" => {
                self.vpc_groups.insert(
                    dn.to_owned(),
                    VpcGroup {
                        virtual_ip: strip_prefix_len(s("virtualIp")).to_owned(),
                    },
                );
            }
            "fabricNodePEp" => {
                let node = match s("id") {
                    "" => dn_number(dn, "nodepep-")
                        .ok_or(FabricErrorKind::Missing { attribute: "id" })?,
                    v => parse_u32("id", v)?,
                };
                let group = dn.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                self.vpc_members
                    .insert(dn.to_owned(), (group.to_owned(), node));
            }
            "fabricProtPol" => self.pair_type = s("pairT").to_owned(),
            _ => {}
        }
        Ok(())
    }

    /// Derive the [`Fabric`] from the objects known.
    fn rebuild(&mut self) {
        let mut f = Fabric::new(self.fabric.name.clone(), self.overlay_vnid());
        let mut teps: HashMap<&str, u32> = HashMap::new();
        for n in self.nodes.values() {
            f.add_node(n.id, n.pod, n.role.clone());
            if !n.address.is_empty() {
                teps.insert(&n.address, n.id);
            }
        }
        let mut members: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (group, node) in self.vpc_members.values() {
            members.entry(group.as_str()).or_default().push(*node);
        }
        for (group, nodes) in &members {
            let [a, b] = nodes.as_slice() else { continue };
            f.add_vpc_pair(*a, *b);
            let Some(pseudo) = vpc_node_id(*a, *b) else {
                continue;
            };
            let pod = f.pod_of(*a.min(b));
            f.add_node(pseudo, pod, "vpc");
            if let Some(g) = self.vpc_groups.get(*group)
                && !g.virtual_ip.is_empty()
            {
                teps.insert(&g.virtual_ip, pseudo);
            }
        }
        for t in self.tunnels.values() {
            let mut t = t.clone();
            t.remote = teps.get(t.dst.as_str()).copied().unwrap_or(0);
            f.add_tunnel(t);
        }
        for (node, intf, name) in self.pcs.values() {
            f.pc_names
                .entry(*node)
                .or_default()
                .insert(intf.clone(), name.clone());
        }
        for (node, intf, vpc) in self.vpc_confs.values() {
            if *vpc > 0 {
                f.pc_vpc_ids
                    .entry(*node)
                    .or_default()
                    .insert(intf.clone(), *vpc);
            }
        }
        for (dn, vnid) in self.ctxs.iter().chain(self.bds.iter()) {
            f.add_vnid(*vnid, dn, false, "");
        }
        for (dn, (vnid, encap)) in &self.ext_bds {
            f.add_vnid(*vnid, dn, true, encap);
        }
        for (dn, (vrf, pctag)) in &self.epgs {
            let bd = self
                .rsbds
                .get(dn)
                .and_then(|bd| self.bds.get(bd))
                .copied()
                .unwrap_or(0);
            f.add_epg(*vrf, *pctag, dn, bd);
        }
        self.fabric = f;
    }
}

/// The EPG's DN of an `fvRsBd` DN (`<epg>/rsbd`).
fn epg_of_rsbd(dn: &str) -> &str {
    dn.strip_suffix("/rsbd").unwrap_or(dn)
}

/// The number after the first `prefix` in `dn` (`node-101` → 101).
fn dn_number(dn: &str, prefix: &str) -> Option<u32> {
    let start = dn.find(prefix)? + prefix.len();
    let rest = &dn[start..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The text between `prefix` (ending in `[`) and the next `]`.
fn dn_bracket<'a>(dn: &'a str, prefix: &str) -> Option<&'a str> {
    let start = dn.find(prefix)? + prefix.len();
    let rest = &dn[start..];
    let end = rest.find(']')?;
    Some(&rest[..end]).filter(|s| !s.is_empty())
}

/// An address without its `/len` suffix (`10.0.72.64/32` → `10.0.72.64`).
fn strip_prefix_len(addr: &str) -> &str {
    addr.split_once('/').map(|(a, _)| a).unwrap_or(addr)
}

fn parse_u32(attribute: &'static str, v: &str) -> Result<u32, FabricErrorKind> {
    v.trim().parse().map_err(|_| FabricErrorKind::Invalid {
        attribute,
        value: truncate(v, 64),
        expected: "a number (0..=4294967295)",
    })
}

fn required_u32(attribute: &'static str, v: &str) -> Result<u32, FabricErrorKind> {
    if v.is_empty() {
        return Err(FabricErrorKind::Missing { attribute });
    }
    parse_u32(attribute, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(f: &mut ApicFabric, v: Value) -> Result<Applied, FabricObjectError> {
        let Value::Object(outer) = v else {
            panic!("not an object")
        };
        let (class, body) = outer.iter().next().expect("one class");
        let attrs = body["attributes"].as_object().expect("attributes").clone();
        f.apply(class, &attrs)
    }

    fn node(id: u32, addr: &str) -> Value {
        json!({"fabricNode": {"attributes": {
            "dn": format!("topology/pod-1/node-{id}"), "id": id.to_string(),
            "role": "leaf", "address": addr, "name": format!("leaf{id}"), "status": ""}}})
    }

    /// Three leaves, 101/102 a vpc pair with virtual TEP 10.0.0.100.
    fn fabric() -> ApicFabric {
        let mut f = ApicFabric::new("fab1", 0);
        // Tunnels first: resolution must not depend on arrival order.
        for (n, t, dest) in [
            (103, "tunnel1", "10.0.0.101/32"),
            (103, "tunnel2", "10.0.0.100/32"),
            (101, "tunnel3", "10.0.0.103"),
        ] {
            apply(
                &mut f,
                json!({"tunnelIf": {"attributes": {
                    "dn": format!("topology/pod-1/node-{n}/sys/tunnel-[{t}]"),
                    "id": t, "dest": dest, "tType": "ivxlan", "type": "physical"}}}),
            )
            .unwrap();
        }
        for (id, addr) in [
            (101, "10.0.0.101"),
            (102, "10.0.0.102"),
            (103, "10.0.0.103"),
        ] {
            apply(&mut f, node(id, addr)).unwrap();
        }
        apply(
            &mut f,
            json!({"fabricExplicitGEp": {"attributes": {
                "dn": "uni/fabric/protpol/expgep-vpc-101-102", "id": "10",
                "name": "vpc-101-102", "virtualIp": "10.0.0.100/32"}}}),
        )
        .unwrap();
        for n in [101, 102] {
            apply(
                &mut f,
                json!({"fabricNodePEp": {"attributes": {
                    "dn": format!("uni/fabric/protpol/expgep-vpc-101-102/nodepep-{n}"),
                    "id": n.to_string(), "peerIp": "x"}}}),
            )
            .unwrap();
        }
        f
    }

    #[test]
    fn nodes_vpc_pair_and_tunnels() {
        let mut f = fabric();
        let pseudo = vpc_node_id(101, 102).unwrap();
        let fab = f.fabric();
        assert_eq!(fab.pod_of(101), 1);
        assert_eq!(fab.nodes[&101].role, "leaf");
        assert_eq!(fab.peer_of(101), 102);
        assert_eq!(fab.peer_of(102), 101);
        assert_eq!(fab.peer_of(103), 0);
        assert_eq!(fab.nodes[&pseudo].role, "vpc");
        assert_eq!(fab.pod_of(pseudo), 1);
        // A tunnel to a node's TEP, with the /32 dropped.
        let t1 = fab.tunnel(103, "tunnel1").unwrap();
        assert_eq!((t1.remote, t1.dst.as_str()), (101, "10.0.0.101"));
        assert_eq!(t1.encap, "ivxlan");
        assert_eq!(t1.flags, "physical");
        // A tunnel to the vpc's virtual TEP: the pseudo-node.
        assert_eq!(fab.tunnel(103, "tunnel2").unwrap().remote, pseudo);
        assert_eq!(fab.tunnel(101, "tunnel3").unwrap().remote, 103);
    }

    #[test]
    fn deletes_remove_and_modifies_merge() {
        let mut f = fabric();
        // Removing a vpc member undoes the pair and the pseudo-node's TEP.
        apply(
            &mut f,
            json!({"fabricNodePEp": {"attributes": {
                "dn": "uni/fabric/protpol/expgep-vpc-101-102/nodepep-102", "status": "deleted"}}}),
        )
        .unwrap();
        let fab = f.fabric();
        assert_eq!(fab.peer_of(101), 0);
        assert_eq!(fab.tunnel(103, "tunnel2").unwrap().remote, 0);
        // A modified tunnel keeps what it does not carry.
        apply(
            &mut f,
            json!({"tunnelIf": {"attributes": {
                "dn": "topology/pod-1/node-103/sys/tunnel-[tunnel1]", "status": "modified",
                "dest": "10.0.0.102"}}}),
        )
        .unwrap();
        let t = f.fabric().tunnel(103, "tunnel1").unwrap().clone();
        assert_eq!((t.remote, t.encap.as_str()), (102, "ivxlan"));
        apply(
            &mut f,
            json!({"tunnelIf": {"attributes": {
                "dn": "topology/pod-1/node-103/sys/tunnel-[tunnel1]", "status": "deleted"}}}),
        )
        .unwrap();
        assert!(f.fabric().tunnel(103, "tunnel1").is_none());
        // Deleting something unknown is harmless.
        apply(
            &mut f,
            json!({"fvBD": {"attributes": {"dn": "uni/tn-x/BD-nope", "status": "deleted"}}}),
        )
        .unwrap();
    }

    #[test]
    fn port_channels_vnids_and_epgs() {
        let mut f = ApicFabric::new("fab1", 5);
        let objects = [
            // The rs before the BD and the EPG.
            json!({"fvRsBd": {"attributes": {
                "dn": "uni/tn-t/ap-a/epg-web/rsbd", "tDn": "uni/tn-t/BD-bd1", "tnFvBDName": "bd1"}}}),
            json!({"fvAEPg": {"attributes": {
                "dn": "uni/tn-t/ap-a/epg-web", "pcTag": "32771", "scope": "2949120"}}}),
            json!({"fvBD": {"attributes": {"dn": "uni/tn-t/BD-bd1", "seg": "15990734"}}}),
            json!({"fvCtx": {"attributes": {"dn": "uni/tn-t/ctx-v1", "scope": "2949120"}}}),
            json!({"fvCtx": {"attributes": {"dn": OVERLAY_CTX_DN, "scope": "16777199"}}}),
            json!({"l3extExtEncapAllocator": {"attributes": {
                "dn": "uni/tn-t/out-o1/encap-[vlan-7]", "encap": "vlan-7", "extEncap": "vxlan-14000"}}}),
            json!({"pcAggrIf": {"attributes": {
                "dn": "topology/pod-1/node-101/sys/aggr-[po1]", "id": "po1", "name": "pc-host1"}}}),
            json!({"vpcRsVpcConf": {"attributes": {
                "dn": "topology/pod-1/node-101/sys/vpc/inst/dom-10/if-7/rsvpcConf",
                "tSKey": "po1", "parentSKey": "7", "tDn": "sys/intf/aggr-[po1]"}}}),
            json!({"fabricProtPol": {"attributes": {"dn": "uni/fabric/protpol", "pairT": "explicit"}}}),
        ];
        for o in objects {
            assert_eq!(apply(&mut f, o).unwrap(), Applied::Applied);
        }
        assert_eq!(f.overlay_vnid(), 16777199);
        assert_eq!(f.pair_type(), "explicit");
        let fab = f.fabric().clone();
        assert_eq!(fab.overlay_vnid, 16777199);
        assert_eq!(fab.epg_name(2949120, 32771), "uni/tn-t/ap-a/epg-web");
        assert_eq!(fab.epgs[&(2949120, 32771)].bd, 15990734);
        assert_eq!(fab.vnid(15990734).unwrap().name, "uni/tn-t/BD-bd1");
        assert_eq!(fab.vnid(2949120).unwrap().name, "uni/tn-t/ctx-v1");
        let ext = fab.vnid(14000).unwrap();
        assert!(ext.external);
        assert_eq!(ext.encap, "vlan-7");
        assert_eq!(fab.pc_name(101, "po1"), "pc-host1");
        assert_eq!(fab.pc_vpc_id(101, "po1"), 7);
        // Deleting the rs unmaps the EPG's BD.
        apply(
            &mut f,
            json!({"fvRsBd": {"attributes": {"dn": "uni/tn-t/ap-a/epg-web/rsbd", "status": "deleted"}}}),
        )
        .unwrap();
        assert_eq!(f.fabric().epgs[&(2949120, 32771)].bd, 0);
    }

    #[test]
    fn bad_objects_are_located_and_change_nothing() {
        let mut f = fabric();
        let e = apply(
            &mut f,
            json!({"fvBD": {"attributes": {"dn": "uni/tn-t/BD-x", "seg": "not-a-number"}}}),
        )
        .unwrap_err();
        assert_eq!(e.class, "fvBD");
        assert_eq!(e.dn.as_deref(), Some("uni/tn-t/BD-x"));
        assert!(e.to_string().contains("`seg`"), "{e}");
        let e = apply(
            &mut f,
            json!({"tunnelIf": {"attributes": {"dn": "sys/tunnel-[t1]", "id": "t1"}}}),
        )
        .unwrap_err();
        assert_eq!(e.kind, FabricErrorKind::NoNode);
        let e = apply(&mut f, json!({"fvCtx": {"attributes": {"scope": "1"}}})).unwrap_err();
        assert_eq!(e.kind, FabricErrorKind::MissingDn);
        let e = apply(
            &mut f,
            json!({"fvCtx": {"attributes": {"dn": "uni/tn-t/ctx-a", "scope": "1", "status": "gone"}}}),
        )
        .unwrap_err();
        assert!(matches!(e.kind, FabricErrorKind::UnknownStatus(_)));
        let e = apply(
            &mut f,
            json!({"fvCtx": {"attributes": {"dn": "uni/tn-t/ctx-a", "scope": "x".repeat(5000)}}}),
        )
        .unwrap_err();
        assert!(matches!(e.kind, FabricErrorKind::TooLong { .. }));
        // A bad modify of a known object keeps the object as it was.
        let e = apply(
            &mut f,
            json!({"fabricNode": {"attributes": {
                "dn": "topology/pod-1/node-101", "status": "modified", "id": "x"}}}),
        )
        .unwrap_err();
        assert_eq!(e.class, "fabricNode");
        assert_eq!(f.fabric().pod_of(101), 1);
        // Unknown classes are ignored.
        assert_eq!(
            apply(&mut f, json!({"fooBar": {"attributes": {"dn": "x"}}})).unwrap(),
            Applied::Ignored
        );
    }
}
