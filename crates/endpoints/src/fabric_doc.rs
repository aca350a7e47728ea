//! A fabric model as one JSON document, so that processes that do not run
//! the fabric's subscriber read events against the same model as the one
//! that does.
//!
//! With the Kafka bus, endpoint workers may run in other processes than the
//! APIC subscriber that builds the model from the APIC. The subscriber's
//! process stores each new model in the history store
//! ([`crate::store::HistoryStore::put_fabric_model`], with a version) and
//! sends a marker naming that version into every partition of
//! `<site>-endpoint-events`; a worker that reads the marker loads the model,
//! so the events after the marker in that partition are read against it,
//! as they are in the subscriber's own process. A worker that starts loads
//! every stored model first.
//!
//! [`FabricDoc`] is [`Fabric`] with its maps as sorted lists (JSON objects
//! cannot have tuple keys), so a document is deterministic: the same model
//! always gives the same bytes. At EPT's scale (400 leaves, ~160,000
//! tunnels, ~10,000 EPGs) a document is about 20 MB of JSON, written once
//! per fabric change, not per event.

use crate::fabric::{Epg, Fabric, Node, Tunnel, Vnid};
use serde::{Deserialize, Serialize};

/// [`Fabric`] as a serialisable document (module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FabricDoc {
    pub name: String,
    pub overlay_vnid: u32,
    pub nodes: Vec<Node>,
    pub tunnels: Vec<Tunnel>,
    /// (node, port-channel ifId, policy name).
    pub pc_names: Vec<(u32, String, String)>,
    /// (node, port-channel ifId, vpc id).
    pub pc_vpc_ids: Vec<(u32, String, u32)>,
    /// (vrf vnid, pcTag, EPG).
    pub epgs: Vec<(u32, i64, Epg)>,
    /// (vnid, what it is).
    pub vnids: Vec<(u32, Vnid)>,
}

impl From<&Fabric> for FabricDoc {
    fn from(f: &Fabric) -> FabricDoc {
        let mut nodes: Vec<Node> = f.nodes.values().cloned().collect();
        nodes.sort_by_key(|n| n.id);
        let mut tunnels: Vec<Tunnel> = f
            .tunnels
            .values()
            .flat_map(|by_intf| by_intf.values().cloned())
            .collect();
        tunnels.sort_by(|a, b| (a.node, &a.intf).cmp(&(b.node, &b.intf)));
        let mut pc_names: Vec<(u32, String, String)> = f
            .pc_names
            .iter()
            .flat_map(|(node, m)| m.iter().map(|(i, n)| (*node, i.clone(), n.clone())))
            .collect();
        pc_names.sort();
        let mut pc_vpc_ids: Vec<(u32, String, u32)> = f
            .pc_vpc_ids
            .iter()
            .flat_map(|(node, m)| m.iter().map(|(i, v)| (*node, i.clone(), *v)))
            .collect();
        pc_vpc_ids.sort();
        let mut epgs: Vec<(u32, i64, Epg)> = f
            .epgs
            .iter()
            .map(|((vrf, pctag), epg)| (*vrf, *pctag, epg.clone()))
            .collect();
        epgs.sort_by_key(|(vrf, pctag, _)| (*vrf, *pctag));
        let mut vnids: Vec<(u32, Vnid)> = f.vnids.iter().map(|(v, d)| (*v, d.clone())).collect();
        vnids.sort_by_key(|(v, _)| *v);
        FabricDoc {
            name: f.name.clone(),
            overlay_vnid: f.overlay_vnid,
            nodes,
            tunnels,
            pc_names,
            pc_vpc_ids,
            epgs,
            vnids,
        }
    }
}

impl From<FabricDoc> for Fabric {
    fn from(doc: FabricDoc) -> Fabric {
        let mut f = Fabric::new(doc.name, doc.overlay_vnid);
        for node in doc.nodes {
            f.nodes.insert(node.id, node);
        }
        for tunnel in doc.tunnels {
            f.tunnels
                .entry(tunnel.node)
                .or_default()
                .insert(tunnel.intf.clone(), tunnel);
        }
        for (node, intf, name) in doc.pc_names {
            f.pc_names.entry(node).or_default().insert(intf, name);
        }
        for (node, intf, vpc) in doc.pc_vpc_ids {
            f.pc_vpc_ids.entry(node).or_default().insert(intf, vpc);
        }
        for (vrf, pctag, epg) in doc.epgs {
            f.epgs.insert((vrf, pctag), epg);
        }
        for (vnid, what) in doc.vnids {
            f.vnids.insert(vnid, what);
        }
        f
    }
}

/// `fabric` as its JSON document.
pub fn to_json(fabric: &Fabric) -> String {
    // A document of strings and integers always serialises.
    serde_json::to_string(&FabricDoc::from(fabric)).unwrap_or_default()
}

/// The fabric of a JSON document.
pub fn from_json(text: &str) -> Result<Fabric, serde_json::Error> {
    serde_json::from_str::<FabricDoc>(text).map(Fabric::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fabric_survives_its_document_and_the_document_is_deterministic() {
        let mut f = Fabric::new("fab1", 16777199);
        f.add_node(101, 1, "leaf");
        f.add_node(102, 1, "leaf");
        f.add_node(201, 2, "leaf");
        f.add_vpc_pair(101, 102);
        f.add_tunnel(Tunnel {
            node: 101,
            intf: "tunnel7".into(),
            dst: "10.0.0.201".into(),
            remote: 201,
            encap: "ivxlan".into(),
            flags: "physical".into(),
        });
        f.add_port_channel(101, "po3", "vpc-pol-1", 7);
        f.add_epg(2949120, 32771, "uni/tn-t/ap-a/epg-web", 15990734);
        f.add_vnid(15990734, "uni/tn-t/BD-bd1", false, "");
        let text = to_json(&f);
        assert_eq!(from_json(&text).unwrap(), f);
        // The same model in another insertion order gives the same bytes.
        let mut g = Fabric::new("fab1", 16777199);
        g.add_vnid(15990734, "uni/tn-t/BD-bd1", false, "");
        g.add_epg(2949120, 32771, "uni/tn-t/ap-a/epg-web", 15990734);
        g.add_node(201, 2, "leaf");
        g.add_node(102, 1, "leaf");
        g.add_node(101, 1, "leaf");
        g.add_vpc_pair(101, 102);
        g.add_port_channel(101, "po3", "vpc-pol-1", 7);
        g.add_tunnel(f.tunnel(101, "tunnel7").unwrap().clone());
        assert_eq!(g, f);
        assert_eq!(to_json(&g), text);
        assert!(from_json("{\"name\": 3}").is_err());
    }
}
