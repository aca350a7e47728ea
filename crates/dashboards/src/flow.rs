//! The flow description: the devices a network flow crosses and how they
//! are wired, read from a YAML file (in the spirit of sense-rtmon's flow
//! configs). It names resources and interfaces as vigil's plugins report
//! them, so the generated dashboard can select exactly their series.
//!
//! ```yaml
//! title: lab1 to lab2
//! nodes:
//!   - name: lab1-edge-01         # display name
//!     type: switch               # switch | host
//!     resource_id: lab1-edge-01  # the polled resource (default: name)
//!     interfaces:
//!       - name: et-12/0/1        # interface_name as polled
//!         vlan: 3911
//!         ips: [172.16.1.1/30]
//!         peers: [{node: lab2-core-01, interface: Ethernet 1}]
//!     ping: [172.16.1.2]         # targets of a ping plugin on this node
//! ```
//!
//! Every error names the file, the line and the place in the document,
//! e.g. `flow.yml:12: nodes[1].interfaces[0].name: is empty`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A flow: a titled list of nodes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub title: String,
    /// Shown under the dashboard title.
    #[serde(default)]
    pub description: String,
    /// Extra dashboard tags (`vigil` and `flow` are always there).
    #[serde(default)]
    pub tags: Vec<String>,
    pub nodes: Vec<Node>,
}

/// A device of the flow.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Display name; unique in the flow.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// The resource vigil polls for this node, when it differs from `name`
    /// (see [`Node::resource_id`]).
    #[serde(default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Ping targets (the `target` dimension of the `ping` group); the
    /// dashboard shows ping panels only for nodes that list some.
    #[serde(default)]
    pub ping: Vec<String>,
}

impl Node {
    /// The `resource_id` of this node's metrics.
    pub fn resource_id(&self) -> &str {
        self.resource_id.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Host,
    Switch,
}

impl NodeKind {
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Host => "host",
            NodeKind::Switch => "switch",
        }
    }
}

/// An interface of a node on the flow's path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The `interface_name` dimension as the interface plugin reports it
    /// (ifName, else ifDescr).
    pub name: String,
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Addresses, `ADDRESS` or `ADDRESS/PREFIX`.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The interfaces at the other end of the link.
    #[serde(default)]
    pub peers: Vec<Peer>,
}

/// The other end of a link: a node of the flow and one of its interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub node: String,
    pub interface: String,
}

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based, when known.
    pub line: Option<usize>,
    /// Where in the document, e.g. `nodes[1].interfaces[0].name`; empty
    /// when the message already says (YAML syntax and type errors).
    pub path: String,
    pub message: String,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a flow file, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FlowErrors(pub Vec<FlowError>);

impl fmt::Display for FlowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A step of a path into the YAML document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Key(&'static str),
    Index(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DocPath(Vec<Step>);

impl DocPath {
    fn key(&self, key: &'static str) -> DocPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key));
        DocPath(steps)
    }

    fn index(&self, index: usize) -> DocPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        DocPath(steps)
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => write!(f, "{key}")?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

impl Flow {
    /// Reads and checks a flow file.
    pub fn load(path: &Path) -> Result<Flow, FlowErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            FlowErrors(vec![FlowError {
                file: file.clone(),
                line: None,
                path: String::new(),
                message: format!("cannot read it: {e}"),
            }])
        })?;
        Flow::parse(&text, &file)
    }

    /// Parses and checks flow YAML; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Flow, FlowErrors> {
        let error = |line, path: String, message: String| FlowError {
            file: file.to_owned(),
            line,
            path,
            message,
        };
        if text.trim().is_empty() {
            return Err(FlowErrors(vec![error(
                None,
                String::new(),
                "the file is empty; a flow needs a title and nodes".to_owned(),
            )]));
        }
        let flow: Flow = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            let mut message = e.to_string();
            // The line goes in front, as in every vigil error; drop
            // serde_yaml's own " at line L column C" for that place.
            if let Some(location) = e.location() {
                let at = format!(" at line {} column {}", location.line(), location.column());
                message = message.replacen(&at, "", 1);
            }
            FlowErrors(vec![error(line, String::new(), message)])
        })?;
        let problems = flow.problems();
        if problems.is_empty() {
            return Ok(flow);
        }
        Err(FlowErrors(
            problems
                .into_iter()
                .map(|(path, message)| error(locate(text, &path), path.to_string(), message))
                .collect(),
        ))
    }

    /// Finds the node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// What parsing cannot check: names present and unique, peers that
    /// exist, VLANs and addresses that make sense.
    fn problems(&self) -> Vec<(DocPath, String)> {
        let mut problems = Vec::new();
        let root = DocPath::default();
        let mut add = |path: DocPath, message: String| problems.push((path, message));

        if self.title.trim().is_empty() {
            add(root.key("title"), "is empty".to_owned());
        }
        if self.nodes.is_empty() {
            add(
                root.key("nodes"),
                "a flow needs at least one node".to_owned(),
            );
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut resources: BTreeMap<&str, usize> = BTreeMap::new();
        for (n, node) in self.nodes.iter().enumerate() {
            let at = root.key("nodes").index(n);
            if node.name.trim().is_empty() {
                add(at.key("name"), "is empty".to_owned());
            } else if let Some(first) = names.insert(&node.name, n) {
                names.insert(&node.name, first);
                add(
                    at.key("name"),
                    format!("duplicate node {:?} (also nodes[{first}])", node.name),
                );
            }
            check_name(&at.key("name"), &node.name, &mut add);
            if let Some(id) = &node.resource_id {
                if id.trim().is_empty() {
                    add(at.key("resource_id"), "is empty".to_owned());
                }
                check_name(&at.key("resource_id"), id, &mut add);
            }
            let id = node.resource_id();
            let name_is_duplicate = names.get(node.name.as_str()) != Some(&n);
            // Without a resource_id a duplicate name is already reported.
            if !id.trim().is_empty()
                && (node.resource_id.is_some() || !name_is_duplicate)
                && let Some(first) = resources.insert(id, n)
            {
                resources.insert(id, first);
                add(
                    at.key(if node.resource_id.is_some() {
                        "resource_id"
                    } else {
                        "name"
                    }),
                    format!("resource {id:?} is also nodes[{first}]; a device is one node"),
                );
            }
            let mut interfaces: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, interface) in node.interfaces.iter().enumerate() {
                let at = at.key("interfaces").index(i);
                if interface.name.trim().is_empty() {
                    add(at.key("name"), "is empty".to_owned());
                } else if let Some(first) = interfaces.insert(&interface.name, i) {
                    interfaces.insert(&interface.name, first);
                    add(
                        at.key("name"),
                        format!(
                            "duplicate interface {:?} (also interfaces[{first}])",
                            interface.name
                        ),
                    );
                }
                check_name(&at.key("name"), &interface.name, &mut add);
                if let Some(vlan) = interface.vlan
                    && !(1..=4094).contains(&vlan)
                {
                    add(at.key("vlan"), format!("{vlan} is not a VLAN id (1-4094)"));
                }
                for (a, ip) in interface.ips.iter().enumerate() {
                    if let Err(message) = check_ip(ip) {
                        add(at.key("ips").index(a), message);
                    }
                }
            }
            let mut targets: BTreeMap<&str, usize> = BTreeMap::new();
            for (t, target) in node.ping.iter().enumerate() {
                let at = at.key("ping").index(t);
                if target.trim().is_empty() {
                    add(at, "empty ping target".to_owned());
                } else if let Some(first) = targets.insert(target, t) {
                    targets.insert(target, first);
                    add(
                        at,
                        format!("duplicate ping target {target:?} (also ping[{first}])"),
                    );
                } else {
                    check_name(&at, target, &mut add);
                }
            }
        }
        // Peers, once every node is known.
        for (n, node) in self.nodes.iter().enumerate() {
            for (i, interface) in node.interfaces.iter().enumerate() {
                for (p, peer) in interface.peers.iter().enumerate() {
                    let at = root
                        .key("nodes")
                        .index(n)
                        .key("interfaces")
                        .index(i)
                        .key("peers")
                        .index(p);
                    let Some(other) = self.node(&peer.node) else {
                        let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                        add(
                            at.key("node"),
                            format!(
                                "no node {:?} in this flow (nodes: {})",
                                peer.node,
                                known.join(", ")
                            ),
                        );
                        continue;
                    };
                    if !other.interfaces.iter().any(|x| x.name == peer.interface) {
                        let known: Vec<&str> =
                            other.interfaces.iter().map(|x| x.name.as_str()).collect();
                        add(
                            at.key("interface"),
                            format!(
                                "node {:?} has no interface {:?} (it has: {})",
                                peer.node,
                                peer.interface,
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    } else if other.name == node.name && peer.interface == interface.name {
                        add(at, "an interface cannot be its own peer".to_owned());
                    }
                }
            }
        }
        problems
    }
}

/// Grafana replaces `$name`, `${name}` and `[[name]]` in panel titles and
/// queries, with no way to escape them; a name containing one would make a
/// query select something else, so such names are refused.
fn check_name(path: &DocPath, value: &str, add: &mut impl FnMut(DocPath, String)) {
    let bytes = value.as_bytes();
    let variable = bytes
        .windows(2)
        .any(|w| w[0] == b'$' && (w[1].is_ascii_alphanumeric() || w[1] == b'_' || w[1] == b'{'))
        || value.contains("[[");
    if variable {
        add(
            path.clone(),
            format!(
                "{value:?} contains a Grafana variable reference ($name, ${{name}} or [[name]]), which Grafana would substitute in queries"
            ),
        );
    }
}

fn check_ip(text: &str) -> Result<(), String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address (ADDRESS or ADDRESS/PREFIX)"))?;
    if let Some(prefix) = prefix {
        let max = if address.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => {}
            _ => return Err(format!("{text:?}: prefix length must be 0-{max}")),
        }
    }
    Ok(())
}

/// The line of the value at `path` in the YAML `text`.
///
/// serde_yaml_ng attaches the position of the value being read to errors a
/// visitor raises, so this walks the document with a visitor that raises
/// one on arriving at `path` and reads the line off it. Works for every
/// YAML style (block, flow, anchors), unlike searching the text. Falls back
/// to the nearest enclosing value that exists.
fn locate(text: &str, path: &DocPath) -> Option<usize> {
    (0..=path.0.len()).rev().find_map(|len| {
        let seed = Locate(&path.0[..len]);
        match seed.deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
            Err(e) if e.to_string().contains(HERE) => e.location().map(|l| l.line()),
            _ => None,
        }
    })
}

const HERE: &str = "vigil-flow-locate-here";

struct Locate<'a>(&'a [Step]);

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Locate<'_> {
    fn arrived<E: de::Error>(&self) -> Result<(), E> {
        if self.0.is_empty() {
            Err(E::custom(HERE))
        } else {
            // A scalar where the path goes deeper: the path does not exist.
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.arrived()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.arrived()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.arrived()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.arrived()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.arrived()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.arrived()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.arrived()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        let mut index = 0;
        loop {
            if *first == Step::Index(index) {
                if seq.next_element_seed(Locate(rest))?.is_none() {
                    return Ok(());
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
            let matches =
                matches!((first, &key), (Step::Key(k), serde_yaml_ng::Value::String(s)) if k == s);
            if matches {
                map.next_value_seed(Locate(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
title: t
nodes:
  - name: a
    type: switch
    interfaces:
      - name: x
        vlan: 10
        ips: [10.0.0.1/30, 'fe80::1']
        peers:
          - node: b
            interface: y
  - name: b
    type: host
    resource_id: b-resource
    interfaces:
      - name: y
        peers: [{node: a, interface: x}]
    ping: [10.0.0.1]
";

    fn errors(text: &str) -> Vec<String> {
        match Flow::parse(text, "flow.yml") {
            Ok(flow) => panic!("expected errors, parsed {flow:?}"),
            Err(FlowErrors(errors)) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn one_error(text: &str) -> String {
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().expect("one error")
    }

    #[test]
    fn parses_a_good_flow() {
        let flow = Flow::parse(GOOD, "flow.yml").expect("valid");
        assert_eq!(flow.title, "t");
        assert_eq!(flow.nodes.len(), 2);
        assert_eq!(flow.nodes[0].resource_id(), "a");
        assert_eq!(flow.nodes[1].resource_id(), "b-resource");
        assert_eq!(flow.nodes[0].interfaces[0].vlan, Some(10));
        assert_eq!(flow.nodes[1].interfaces[0].peers[0].node, "a");
        assert_eq!(flow.nodes[1].ping, ["10.0.0.1"]);
    }

    #[test]
    fn unknown_keys_are_located() {
        let text = GOOD.replace("        vlan: 10\n", "        vlna: 10\n");
        let error = one_error(&text);
        assert!(
            error.starts_with("flow.yml:7: nodes[0].interfaces[0]: unknown field `vlna`"),
            "{error}"
        );
    }

    #[test]
    fn missing_and_empty_names_are_located() {
        let text = GOOD.replace("  - name: b\n", "  - nme: b\n");
        let error = one_error(&text);
        assert!(
            error.starts_with("flow.yml:12: nodes[1]: unknown field `nme`"),
            "{error}"
        );

        let text = GOOD.replace("      - name: y\n", "      - vlan: 5\n");
        let error = one_error(&text);
        assert!(
            error.starts_with("flow.yml:16: nodes[1].interfaces[0]: missing field `name`"),
            "{error}"
        );

        let text = GOOD.replace("      - name: x\n", "      - name: ''\n");
        let errors = errors(&text);
        assert!(
            errors.contains(&"flow.yml:6: nodes[0].interfaces[0].name: is empty".to_owned()),
            "{errors:#?}"
        );
        // b's peer now names an interface a does not have.
        assert!(
            errors.iter().any(|e| e.starts_with(
                "flow.yml:17: nodes[1].interfaces[0].peers[0].interface: node \"a\" has no interface \"x\""
            )),
            "{errors:#?}"
        );
    }

    #[test]
    fn duplicate_nodes_are_located() {
        let text = GOOD
            .replace("  - name: b\n", "  - name: a\n")
            .replace("node: b", "node: a");
        let errors = errors(&text);
        assert!(
            errors.contains(
                &"flow.yml:12: nodes[1].name: duplicate node \"a\" (also nodes[0])".to_owned()
            ),
            "{errors:#?}"
        );
    }

    #[test]
    fn unknown_peers_are_located() {
        let text = GOOD.replace("          - node: b\n", "          - node: c\n");
        let error = one_error(&text);
        assert_eq!(
            error,
            "flow.yml:10: nodes[0].interfaces[0].peers[0].node: no node \"c\" in this flow (nodes: a, b)"
        );
        let text = GOOD.replace("interface: x}", "interface: z}");
        let error = one_error(&text);
        assert_eq!(
            error,
            "flow.yml:17: nodes[1].interfaces[0].peers[0].interface: node \"a\" has no interface \"z\" (it has: x)"
        );
    }

    #[test]
    fn values_are_checked() {
        let text = GOOD
            .replace("vlan: 10", "vlan: 5000")
            .replace("10.0.0.1/30", "10.0.0.300/30")
            .replace("'fe80::1'", "'fe80::1/129'")
            .replace("ping: [10.0.0.1]", "ping: [10.0.0.1, 10.0.0.1]");
        let errors = errors(&text);
        assert_eq!(
            errors,
            vec![
                "flow.yml:7: nodes[0].interfaces[0].vlan: 5000 is not a VLAN id (1-4094)",
                "flow.yml:8: nodes[0].interfaces[0].ips[0]: \"10.0.0.300/30\" is not an IP address (ADDRESS or ADDRESS/PREFIX)",
                "flow.yml:8: nodes[0].interfaces[0].ips[1]: \"fe80::1/129\": prefix length must be 0-128",
                "flow.yml:18: nodes[1].ping[1]: duplicate ping target \"10.0.0.1\" (also ping[0])",
            ]
        );
        let error = one_error(&GOOD.replace("type: host", "type: router"));
        assert!(
            error.starts_with("flow.yml:13: nodes[1].type: unknown variant `router`"),
            "{error}"
        );
    }

    #[test]
    fn grafana_variables_in_names_are_refused() {
        let error = one_error(&GOOD.replace("ping: [10.0.0.1]", "ping: ['$__interval']"));
        assert!(
            error.starts_with(
                "flow.yml:18: nodes[1].ping[0]: \"$__interval\" contains a Grafana variable"
            ),
            "{error}"
        );
        // A lone `$` is harmless.
        let flow = Flow::parse(
            &GOOD
                .replace("name: x", "name: x$")
                .replace("interface: x", "interface: x$"),
            "f",
        )
        .expect("a lone $ is fine");
        assert_eq!(flow.nodes[0].interfaces[0].name, "x$");
    }

    #[test]
    fn syntax_errors_and_empty_files() {
        let error = one_error("title: t\nnodes: 'unclosed\n");
        assert_eq!(
            error,
            "flow.yml:3: found unexpected end of stream, while scanning a quoted scalar at line 2 column 8"
        );
        assert_eq!(
            one_error("  \n"),
            "flow.yml: the file is empty; a flow needs a title and nodes"
        );
        let error = one_error("title: t\nnodes: []\n");
        assert_eq!(error, "flow.yml:2: nodes: a flow needs at least one node");
    }

    #[test]
    fn locate_works_in_flow_style() {
        let text = "{title: t, nodes: [{name: a, type: host}, {name: a, type: host}]}";
        let error = one_error(text);
        assert!(
            error.starts_with("flow.yml:1: nodes[1].name: duplicate"),
            "{error}"
        );
        let text = "title: t\nnodes:\n- {name: a, type: host}\n\n- name: a\n  type: host\n";
        let error = one_error(text);
        assert!(
            error.starts_with("flow.yml:5: nodes[1].name: duplicate"),
            "{error}"
        );
    }

    #[test]
    fn load_names_the_file() {
        let Err(FlowErrors(errors)) = Flow::load(Path::new("/nonexistent/flow.yml")) else {
            panic!("loading a missing file must fail");
        };
        assert!(
            errors[0]
                .to_string()
                .starts_with("/nonexistent/flow.yml: cannot read it")
        );
    }
}
