//! What the operator configures for SNMP: request defaults and budgets in the
//! site's `[snmp]` table, where requests may go (`allowed_networks`,
//! `resolve_names`), credentials in `[[snmp.credentials]]`, and a plugin's
//! `[snmp]` overrides.
//!
//! **Credentials are bound to facts the operator controls.** Every field of a
//! resource (`resource_id`, `resource_site`, the endpoint...) is written by
//! a discovery plugin, so a rule that matched on those alone would hand its
//! secret to any plugin that reports a look-alike resource with an endpoint
//! of its own. Each rule must therefore name `discovery_plugins` (the
//! resource's owner as the host recorded it: the pipeline stamps
//! `creation_plugin` with the manifest name of the plugin that reported
//! it, and the store keeps the first owner), or `networks` (CIDRs the
//! endpoint's address must be in), or both; its `filter` can then only
//! narrow. A rule with only a filter is refused at start-up, located.
//! Rules are tried in order and the first whose conditions all hold wins.
//!
//! **Reach.** `allowed_networks` (default: every unicast address) bounds
//! where any SNMP datagram may go. Link-local (169.254.0.0/16 with the
//! 169.254.169.254 metadata service, fe80::/10), other cloud-metadata
//! addresses, multicast, broadcast, reserved and unspecified addresses are
//! refused even inside `allowed_networks`, unless an entry of
//! `allowed_networks` lies inside that block (naming `169.254.0.0/16` or a
//! part of it is explicit; `0.0.0.0/0` is not). Endpoints must be IP
//! literals unless `resolve_names = true`: resolving a plugin-chosen name
//! is itself a message to whoever runs that name's DNS zone.
//!
//! Secrets may be written inline, or kept out of the file as
//! `{ env = "VAR" }` or `{ file = "path" }`. They are read once at start-up
//! and held in [`Secret`], whose `Debug` never shows them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use vigil_core::LocatedError;
use vigil_core::model::Resource;
pub use vigil_core::secret::Secret;
use vigil_core::secret::SecretSource;
use vigil_core::units::parse_duration;
use vigil_filter::ResourceFilter;

/// Request settings: the site's defaults, or a plugin's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// Attempts after the first one.
    pub retries: u32,
    /// GETBULK max-repetitions for walks.
    pub max_repetitions: u32,
}

impl Default for RequestOptions {
    /// 5 s and 2 retries, as snmp_exporter and Telegraf; 25 repetitions, as
    /// Panoptes.
    fn default() -> Self {
        RequestOptions {
            timeout: Duration::from_secs(5),
            retries: 2,
            max_repetitions: 25,
        }
    }
}

const TIMEOUT_RANGE: Range<Duration> = Duration::from_millis(10)..Duration::from_secs(61);
const MAX_RETRIES: u32 = 10;
const MAX_REPETITIONS: u32 = 200;
const DEFAULT_VARBINDS_PER_RUN: u64 = 100_000;
const MAX_VARBINDS_PER_RUN: u64 = 1_000_000;
const DEFAULT_BYTES_PER_RUN: u64 = 32 << 20;
const MAX_BYTES_PER_RUN: u64 = 512 << 20;
/// OIDs one GET or GETNEXT may name unless `[snmp] max_oids_per_request`
/// says otherwise: 64 OIDs of the longest legal shape (128 arcs of 5 bytes)
/// encode to about 41 KB, inside the 65,507-byte datagram whatever the
/// plugin asks; typical calls name 1 to 20.
pub const DEFAULT_OIDS_PER_REQUEST: usize = 64;
/// The ceiling for `max_oids_per_request`. Past 64, a request of long OIDs
/// can outgrow a datagram; the encoded-size check refuses those.
pub const MAX_OIDS_PER_REQUEST: usize = 128;
/// Requests (datagrams) per second one device may receive from the whole
/// host, unless `[snmp] max_requests_per_second_per_device` says otherwise.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 100;
/// The ceiling for `max_requests_per_second_per_device`: never unlimited.
pub const MAX_REQUESTS_PER_SECOND: u32 = 10_000;

/// The site's SNMP settings.
#[derive(Debug, Clone)]
pub struct SnmpSettings {
    pub defaults: RequestOptions,
    /// Varbinds one run may receive in total; a walk that never ends stops
    /// here.
    pub max_varbinds_per_run: u64,
    /// Bytes of OIDs and values one run may receive, so an agent sending
    /// huge strings cannot fill the host's memory within the varbind budget.
    pub max_bytes_per_run: u64,
    /// OIDs one GET or GETNEXT call may name.
    pub max_oids_per_request: usize,
    /// Datagrams per second one device (socket address) may receive.
    pub max_requests_per_second_per_device: u32,
    /// Where requests may go at all.
    pub reach: Reach,
    pub credentials: Vec<CredentialRule>,
}

impl Default for SnmpSettings {
    fn default() -> Self {
        SnmpSettings {
            defaults: RequestOptions::default(),
            max_varbinds_per_run: DEFAULT_VARBINDS_PER_RUN,
            max_bytes_per_run: DEFAULT_BYTES_PER_RUN,
            max_oids_per_request: DEFAULT_OIDS_PER_REQUEST,
            max_requests_per_second_per_device: DEFAULT_REQUESTS_PER_SECOND,
            reach: Reach::default(),
            credentials: Vec::new(),
        }
    }
}

impl SnmpSettings {
    /// The first credential rule that holds for `resource` reached at
    /// `address`: its owner, its address and its filter.
    pub fn credential_for(&self, resource: &Resource, address: IpAddr) -> Option<&CredentialRule> {
        self.credentials
            .iter()
            .find(|rule| rule.matches(resource, address))
    }
}

/// One `[[snmp.credentials]]` entry.
#[derive(Debug, Clone)]
pub struct CredentialRule {
    /// Discovery plugins whose resources may use it (the owner the host
    /// recorded, never a field the plugin wrote). Empty = any owner, which
    /// [`resolve`] allows only when `networks` is set.
    pub discovery_plugins: Vec<String>,
    /// Ranges the endpoint's address must be in. Empty = any address, which
    /// [`resolve`] allows only when `discovery_plugins` is set.
    pub networks: Vec<Cidr>,
    /// Narrows further; `None` matches every resource.
    pub filter: Option<ResourceFilter>,
    /// Used when the resource's endpoint names no port.
    pub port: u16,
    pub credential: Credential,
    /// Where the entry is, for messages (`site.toml:42`).
    pub origin: String,
    /// Its place among the site's rules (0-based): requests with one rule
    /// to one device go one at a time.
    pub index: usize,
}

#[derive(Debug, Clone)]
pub enum Credential {
    V1 { community: Secret },
    V2c { community: Secret },
    V3(UsmUser),
}

impl CredentialRule {
    /// Whether every condition of the rule holds.
    pub fn matches(&self, resource: &Resource, address: IpAddr) -> bool {
        (self.discovery_plugins.is_empty()
            || self.discovery_plugins.contains(&resource.creation_plugin))
            && (self.networks.is_empty() || self.networks.iter().any(|n| n.contains(address)))
            && self
                .filter
                .as_ref()
                .is_none_or(|filter| filter.matches(resource))
    }
}

impl Credential {
    pub fn version_name(&self) -> &'static str {
        match self {
            Credential::V1 { .. } => "v1",
            Credential::V2c { .. } => "v2c",
            Credential::V3(_) => "v3",
        }
    }
}

/// An SNMPv3 user-based security model identity.
#[derive(Debug, Clone)]
pub struct UsmUser {
    pub name: String,
    /// `None` = noAuthNoPriv.
    pub auth: Option<(snmp2::v3::AuthProtocol, Secret)>,
    /// `None` = no privacy (authNoPriv when `auth` is set).
    pub privacy: Option<(snmp2::v3::Cipher, Secret)>,
    pub context: String,
    /// How AES-192/256 keys are stretched from a short hash (agents differ).
    pub key_extension: Option<snmp2::v3::KeyExtension>,
}

/// An address range, `10.1.0.0/16` or `fd00::/8`; a bare address is a
/// single host (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            format!("{text:?} is not an address range such as \"10.1.0.0/16\" or \"fd00::/8\"")
        })?;
        let network = canonical(network);
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
        };
        let cidr = Cidr { network, prefix };
        let masked = cidr.masked(network);
        if masked != network {
            return Err(format!(
                "{text:?} has bits set past its /{prefix} prefix; did you mean \"{masked}/{prefix}\"?"
            ));
        }
        Ok(cidr)
    }

    /// `address` with the bits past this range's prefix cleared.
    fn masked(&self, address: IpAddr) -> IpAddr {
        match address {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    /// Whether `address` (an IPv4-mapped IPv6 address counts as IPv4) is
    /// in this range.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        address.is_ipv4() == self.network.is_ipv4() && self.masked(address) == self.network
    }

    /// Whether this whole range lies inside `other`.
    pub fn within(&self, other: &Cidr) -> bool {
        self.prefix >= other.prefix && other.contains(self.network)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:169.254.169.254`) is the IPv4
/// address it carries: a dual-stack socket sends to exactly that.
pub fn canonical(address: IpAddr) -> IpAddr {
    address.to_canonical()
}

/// Blocks refused even inside `allowed_networks` unless an entry of it lies
/// inside the block, with why. The first block containing an address names
/// it.
const REFUSED: [(Cidr, &str); 10] = [
    (
        Cidr::v4(0, 0, 0, 0, 8),
        "unspecified (\"this network\", which Linux sends to the host itself)",
    ),
    (Cidr::v6([0; 8], 128), "unspecified"),
    (
        Cidr::v4(169, 254, 0, 0, 16),
        "IPv4 link-local, where cloud metadata services answer (169.254.169.254)",
    ),
    (
        Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "IPv6 link-local",
    ),
    (
        Cidr::v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        "a cloud metadata service (AWS, IPv6)",
    ),
    (
        Cidr::v4(100, 100, 100, 200, 32),
        "a cloud metadata service (Alibaba Cloud)",
    ),
    (Cidr::v4(224, 0, 0, 0, 4), "multicast"),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
    (Cidr::v4(255, 255, 255, 255, 32), "broadcast"),
    (Cidr::v4(240, 0, 0, 0, 4), "reserved (not unicast)"),
];

/// Where SNMP may go: the site's `allowed_networks` and `resolve_names`.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// `None`: every unicast address.
    pub allowed: Option<Vec<Cidr>>,
    /// Whether an endpoint may be a DNS name.
    pub resolve_names: bool,
}

impl Reach {
    /// Why `address` may not be sent to, if it may not.
    pub fn check(&self, address: IpAddr) -> Result<(), String> {
        let address = canonical(address);
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|range| range.contains(address))
        {
            let listed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            return Err(format!(
                "{address} is outside [snmp] allowed_networks ({})",
                listed.join(", ")
            ));
        }
        if let Some((block, why)) = REFUSED.iter().find(|(block, _)| block.contains(address)) {
            let explicit = self.allowed.as_ref().is_some_and(|allowed| {
                allowed
                    .iter()
                    .any(|range| range.contains(address) && range.within(block))
            });
            if !explicit {
                return Err(format!(
                    "{address} is {why}, refused unless [snmp] allowed_networks names it or a range inside {block}"
                ));
            }
        }
        Ok(())
    }
}

/// The site file's `[snmp]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpSection {
    timeout: Option<Spanned<toml::Value>>,
    retries: Option<Spanned<u32>>,
    max_repetitions: Option<Spanned<u32>>,
    max_varbinds_per_run: Option<Spanned<u64>>,
    max_bytes_per_run: Option<Spanned<toml::Value>>,
    max_oids_per_request: Option<Spanned<i64>>,
    max_requests_per_second_per_device: Option<Spanned<i64>>,
    allowed_networks: Option<Spanned<Vec<Spanned<String>>>>,
    resolve_names: Option<bool>,
    #[serde(default)]
    credentials: Vec<Spanned<CredentialEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialEntry {
    discovery_plugins: Option<Spanned<Vec<Spanned<String>>>>,
    networks: Option<Spanned<Vec<Spanned<String>>>>,
    filter: Option<Spanned<String>>,
    version: Spanned<String>,
    port: Option<Spanned<u16>>,
    community: Option<Spanned<SecretSource>>,
    user: Option<Spanned<String>>,
    auth_protocol: Option<Spanned<String>>,
    auth_password: Option<Spanned<SecretSource>>,
    privacy_protocol: Option<Spanned<String>>,
    privacy_password: Option<Spanned<SecretSource>>,
    context: Option<Spanned<String>>,
    key_extension: Option<Spanned<String>>,
}

/// Checks the `[snmp]` table and reads every secret it points to.
pub fn resolve(
    section: SnmpSection,
    site_file: &Path,
    at: vigil_core::At<'_>,
) -> Result<SnmpSettings, LocatedError> {
    let mut settings = SnmpSettings::default();
    if let Some(timeout) = &section.timeout {
        let text = match timeout.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(at(
                    timeout.span(),
                    format!(
                        "snmp.timeout: expected a duration such as \"5s\", found {}",
                        other.type_str()
                    ),
                ));
            }
        };
        settings.defaults.timeout =
            check_timeout(&text).map_err(|e| at(timeout.span(), format!("snmp.timeout: {e}")))?;
    }
    if let Some(retries) = &section.retries {
        settings.defaults.retries = check_retries(*retries.get_ref())
            .map_err(|e| at(retries.span(), format!("snmp.retries: {e}")))?;
    }
    if let Some(reps) = &section.max_repetitions {
        settings.defaults.max_repetitions = check_repetitions(*reps.get_ref())
            .map_err(|e| at(reps.span(), format!("snmp.max_repetitions: {e}")))?;
    }
    if let Some(budget) = &section.max_varbinds_per_run {
        let value = *budget.get_ref();
        if !(1..=MAX_VARBINDS_PER_RUN).contains(&value) {
            return Err(at(
                budget.span(),
                format!(
                    "snmp.max_varbinds_per_run must be 1 to {MAX_VARBINDS_PER_RUN}, found {value}"
                ),
            ));
        }
        settings.max_varbinds_per_run = value;
    }
    if let Some(bytes) = &section.max_bytes_per_run {
        let text = match bytes.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            other => other.to_string(),
        };
        let value = vigil_core::units::parse_size(&text)
            .map_err(|e| at(bytes.span(), format!("snmp.max_bytes_per_run: {e}")))?;
        if !(1..=MAX_BYTES_PER_RUN).contains(&value) {
            return Err(at(
                bytes.span(),
                format!("snmp.max_bytes_per_run must be 1 byte to 512MiB, found {text}"),
            ));
        }
        settings.max_bytes_per_run = value;
    }
    if let Some(count) = &section.max_oids_per_request {
        let value = *count.get_ref();
        settings.max_oids_per_request = usize::try_from(value)
            .ok()
            .filter(|v| (1..=MAX_OIDS_PER_REQUEST).contains(v))
            .ok_or_else(|| {
                at(
                    count.span(),
                    format!(
                        "snmp.max_oids_per_request must be 1 to {MAX_OIDS_PER_REQUEST}, found {value}"
                    ),
                )
            })?;
    }
    if let Some(rate) = &section.max_requests_per_second_per_device {
        let value = *rate.get_ref();
        settings.max_requests_per_second_per_device = u32::try_from(value)
            .ok()
            .filter(|v| (1..=MAX_REQUESTS_PER_SECOND).contains(v))
            .ok_or_else(|| {
                at(
                    rate.span(),
                    format!(
                        "snmp.max_requests_per_second_per_device must be 1 to {MAX_REQUESTS_PER_SECOND} (a device is never polled without a limit), found {value}"
                    ),
                )
            })?;
    }
    if let Some(list) = &section.allowed_networks {
        if list.get_ref().is_empty() {
            return Err(at(
                list.span(),
                "snmp.allowed_networks is empty, which would refuse every device; leave it out to allow every unicast address".to_owned(),
            ));
        }
        settings.reach.allowed = Some(networks(list.get_ref(), "snmp.allowed_networks", at)?);
    }
    settings.reach.resolve_names = section.resolve_names.unwrap_or(false);
    let base = site_file.parent().unwrap_or(Path::new("."));
    for (number, entry) in section.credentials.iter().enumerate() {
        let origin = at(entry.span(), String::new());
        let origin = format!("{}:{}", origin.path.display(), origin.line);
        let name = format!("snmp.credentials[{}]", number + 1);
        let mut rule = credential_rule(entry.get_ref(), &name, origin, base, at)?;
        rule.index = number;
        settings.credentials.push(rule);
    }
    Ok(settings)
}

/// Parses a list of CIDRs, each error at its own entry.
fn networks(
    list: &[Spanned<String>],
    key: &str,
    at: vigil_core::At<'_>,
) -> Result<Vec<Cidr>, LocatedError> {
    list.iter()
        .map(|text| Cidr::parse(text.get_ref()).map_err(|e| at(text.span(), format!("{key}: {e}"))))
        .collect()
}

fn credential_rule(
    entry: &CredentialEntry,
    name: &str,
    origin: String,
    base: &Path,
    at: vigil_core::At<'_>,
) -> Result<CredentialRule, LocatedError> {
    let discovery_plugins = match &entry.discovery_plugins {
        None => Vec::new(),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(at(
                    list.span(),
                    format!(
                        "{name}.discovery_plugins is empty: name the discovery plugins (their [Core] Name) whose resources may use this credential"
                    ),
                ));
            }
            let mut names = Vec::new();
            for plugin in list.get_ref() {
                let text = plugin.get_ref().trim();
                if text.is_empty() {
                    return Err(at(
                        plugin.span(),
                        format!("{name}.discovery_plugins: a plugin name must not be empty"),
                    ));
                }
                names.push(text.to_owned());
            }
            names
        }
    };
    let networks = match &entry.networks {
        None => Vec::new(),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(at(
                    list.span(),
                    format!(
                        "{name}.networks is empty: name the address ranges (CIDRs such as \"10.1.0.0/16\") this credential may be sent to"
                    ),
                ));
            }
            networks(list.get_ref(), &format!("{name}.networks"), at)?
        }
    };
    if discovery_plugins.is_empty() && networks.is_empty() {
        let span = entry
            .filter
            .as_ref()
            .map_or_else(|| entry.version.span(), Spanned::span);
        return Err(at(
            span,
            format!(
                "{name} needs discovery_plugins (the discovery plugins whose resources may use it) or networks (the address ranges it may be sent to), or both: {} a discovery plugin writes itself, so any plugin reporting a look-alike resource with an endpoint of its own would be sent this secret",
                if entry.filter.is_some() {
                    "a filter only matches fields (resource_id, resource_site, the endpoint...) that"
                } else {
                    "without them the credential matches every resource, whose fields"
                }
            ),
        ));
    }
    let filter = match &entry.filter {
        Some(text) => Some(ResourceFilter::parse(text.get_ref()).map_err(|e| {
            at(
                text.span(),
                format!(
                    "{name}.filter: {}",
                    e.render(text.get_ref()).replace('\n', " ")
                ),
            )
        })?),
        None => None,
    };
    let port = match &entry.port {
        Some(port) if *port.get_ref() == 0 => {
            return Err(at(port.span(), format!("{name}.port must not be 0")));
        }
        Some(port) => *port.get_ref(),
        None => 161,
    };
    let secret = |source: &Spanned<SecretSource>, field: &str| {
        source
            .get_ref()
            .read(base)
            .map_err(|e| at(source.span(), format!("{name}.{field}: {e}")))
    };
    let version = entry.version.get_ref().trim().to_ascii_lowercase();
    let v3_only = [
        ("user", entry.user.as_ref().map(Spanned::span)),
        (
            "auth_protocol",
            entry.auth_protocol.as_ref().map(Spanned::span),
        ),
        (
            "auth_password",
            entry.auth_password.as_ref().map(Spanned::span),
        ),
        (
            "privacy_protocol",
            entry.privacy_protocol.as_ref().map(Spanned::span),
        ),
        (
            "privacy_password",
            entry.privacy_password.as_ref().map(Spanned::span),
        ),
        ("context", entry.context.as_ref().map(Spanned::span)),
        (
            "key_extension",
            entry.key_extension.as_ref().map(Spanned::span),
        ),
    ];
    let credential = match version.trim_start_matches('v') {
        "1" | "2c" => {
            if let Some((field, Some(span))) = v3_only.iter().find(|(_, span)| span.is_some()) {
                return Err(at(
                    span.clone(),
                    format!("{name}.{field} only applies to version \"3\""),
                ));
            }
            let community = entry.community.as_ref().ok_or_else(|| {
                at(
                    entry.version.span(),
                    format!("{name}: version {version:?} needs a community"),
                )
            })?;
            let community = secret(community, "community")?;
            if version.ends_with('1') {
                Credential::V1 { community }
            } else {
                Credential::V2c { community }
            }
        }
        "3" => {
            if let Some(community) = &entry.community {
                return Err(at(
                    community.span(),
                    format!("{name}.community does not apply to version \"3\" (use user)"),
                ));
            }
            let user = entry.user.as_ref().ok_or_else(|| {
                at(
                    entry.version.span(),
                    format!("{name}: version \"3\" needs a user"),
                )
            })?;
            let auth = match (&entry.auth_protocol, &entry.auth_password) {
                (None, None) => None,
                (Some(protocol), Some(password)) => {
                    let parsed = auth_protocol(protocol.get_ref())
                        .map_err(|e| at(protocol.span(), format!("{name}.auth_protocol: {e}")))?;
                    let password_value = secret(password, "auth_password")?;
                    check_password_length(&password_value)
                        .map_err(|e| at(password.span(), format!("{name}.auth_password: {e}")))?;
                    Some((parsed, password_value))
                }
                (Some(span_of), None) => {
                    return Err(at(
                        span_of.span(),
                        format!("{name}: auth_protocol needs auth_password"),
                    ));
                }
                (None, Some(span_of)) => {
                    return Err(at(
                        span_of.span(),
                        format!("{name}: auth_password needs auth_protocol"),
                    ));
                }
            };
            let privacy = match (&entry.privacy_protocol, &entry.privacy_password) {
                (None, None) => None,
                (Some(protocol), Some(password)) => {
                    if auth.is_none() {
                        return Err(at(
                            protocol.span(),
                            format!("{name}: privacy needs authentication (auth_protocol)"),
                        ));
                    }
                    let parsed = privacy_protocol(protocol.get_ref()).map_err(|e| {
                        at(protocol.span(), format!("{name}.privacy_protocol: {e}"))
                    })?;
                    let password_value = secret(password, "privacy_password")?;
                    check_password_length(&password_value).map_err(|e| {
                        at(password.span(), format!("{name}.privacy_password: {e}"))
                    })?;
                    Some((parsed, password_value))
                }
                (Some(span_of), None) => {
                    return Err(at(
                        span_of.span(),
                        format!("{name}: privacy_protocol needs privacy_password"),
                    ));
                }
                (None, Some(span_of)) => {
                    return Err(at(
                        span_of.span(),
                        format!("{name}: privacy_password needs privacy_protocol"),
                    ));
                }
            };
            let key_extension = match &entry.key_extension {
                None => None,
                Some(text) => Some(match text.get_ref().trim().to_ascii_lowercase().as_str() {
                    "blumenthal" => snmp2::v3::KeyExtension::Blumenthal,
                    "reeder" => snmp2::v3::KeyExtension::Reeder,
                    other => {
                        return Err(at(
                            text.span(),
                            format!(
                                "{name}.key_extension: {other:?} is not \"blumenthal\" or \"reeder\""
                            ),
                        ));
                    }
                }),
            };
            Credential::V3(UsmUser {
                name: user.get_ref().clone(),
                auth,
                privacy,
                context: entry
                    .context
                    .as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_default(),
                key_extension,
            })
        }
        _ => {
            return Err(at(
                entry.version.span(),
                format!(
                    "{name}.version {:?} is not \"1\", \"2c\" or \"3\"",
                    entry.version.get_ref()
                ),
            ));
        }
    };
    Ok(CredentialRule {
        discovery_plugins,
        networks,
        filter,
        port,
        credential,
        origin,
        index: 0,
    })
}

/// RFC 3414 asks for at least 8 characters, and net-snmp agents refuse
/// shorter passwords; catching it here beats an opaque auth failure later.
fn check_password_length(secret: &Secret) -> Result<(), String> {
    if secret.expose().len() < 8 {
        return Err("must be at least 8 characters (RFC 3414)".to_owned());
    }
    Ok(())
}

fn auth_protocol(text: &str) -> Result<snmp2::v3::AuthProtocol, String> {
    use snmp2::v3::AuthProtocol::*;
    Ok(
        match text.trim().to_ascii_lowercase().replace('-', "").as_str() {
            "md5" => Md5,
            "sha" | "sha1" => Sha1,
            "sha224" => Sha224,
            "sha256" => Sha256,
            "sha384" => Sha384,
            "sha512" => Sha512,
            _ => {
                return Err(format!(
                    "{text:?} is not one of md5, sha1, sha224, sha256, sha384, sha512"
                ));
            }
        },
    )
}

fn privacy_protocol(text: &str) -> Result<snmp2::v3::Cipher, String> {
    use snmp2::v3::Cipher::*;
    Ok(
        match text.trim().to_ascii_lowercase().replace('-', "").as_str() {
            "des" => Des,
            "aes" | "aes128" => Aes128,
            "aes192" => Aes192,
            "aes256" => Aes256,
            _ => {
                return Err(format!(
                    "{text:?} is not one of des, aes128, aes192, aes256"
                ));
            }
        },
    )
}

fn check_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if !TIMEOUT_RANGE.contains(&timeout) {
        return Err(format!("must be 10ms to 60s, found {text}"));
    }
    Ok(timeout)
}

fn check_retries(value: u32) -> Result<u32, String> {
    if value > MAX_RETRIES {
        return Err(format!("must be 0 to {MAX_RETRIES}, found {value}"));
    }
    Ok(value)
}

fn check_repetitions(value: u32) -> Result<u32, String> {
    if !(1..=MAX_REPETITIONS).contains(&value) {
        return Err(format!("must be 1 to {MAX_REPETITIONS}, found {value}"));
    }
    Ok(value)
}

/// Applies one key of a plugin's `[snmp]` section (Panoptes' keys) to
/// `options`.
pub fn apply_plugin_option(
    options: &mut RequestOptions,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let value = value.trim();
    let number = || {
        value
            .parse::<u32>()
            .map_err(|_| format!("{key}: {value:?} is not a whole number"))
    };
    match key.to_ascii_lowercase().as_str() {
        "timeout" => options.timeout = check_timeout(value).map_err(|e| format!("{key}: {e}"))?,
        "retries" => {
            options.retries = check_retries(number()?).map_err(|e| format!("{key}: {e}"))?
        }
        "max_repetitions" => {
            options.max_repetitions =
                check_repetitions(number()?).map_err(|e| format!("{key}: {e}"))?;
        }
        _ => {
            return Err(format!(
                "unknown key {key:?} (known: timeout, retries, max_repetitions)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SnmpSettings, LocatedError> {
        let path = Path::new("/etc/vigil/site.toml");
        let section: SnmpSection = toml::from_str(text).expect("toml");
        let at = |span: Range<usize>, message: String| {
            let line = text[..span.start].matches('\n').count() + 1;
            LocatedError::new(path, line, message)
        };
        resolve(section, path, &at)
    }

    const NET: &str = "networks = [\"10.0.0.0/8\"]\n";

    fn owned(id: &str, endpoint: &str, owner: &str) -> Resource {
        let mut resource = Resource::named(id, endpoint);
        resource.creation_plugin = owner.to_owned();
        resource
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn credentials_match_in_order() {
        let settings = parse(
            "timeout = \"2s\"\nretries = 1\n\
             [[credentials]]\ndiscovery_plugins = [\"inventory\"]\nfilter = 'resource_id = \"core-1\"'\nversion = \"3\"\nuser = \"ops\"\nauth_protocol = \"sha\"\nauth_password = \"authpass1\"\nprivacy_protocol = \"aes\"\nprivacy_password = \"privpass1\"\n\
             [[credentials]]\nnetworks = [\"10.0.0.0/8\"]\nversion = \"2c\"\ncommunity = \"public\"\nport = 1161\n",
        )
        .expect("valid");
        assert_eq!(settings.defaults.timeout, Duration::from_secs(2));
        assert_eq!(settings.defaults.retries, 1);
        let core = settings
            .credential_for(&owned("core-1", "10.0.0.1", "inventory"), ip("10.0.0.1"))
            .expect("match");
        assert_eq!(core.credential.version_name(), "v3");
        assert_eq!(core.origin, "/etc/vigil/site.toml:3");
        let edge = settings
            .credential_for(&owned("edge-9", "10.0.0.9", "inventory"), ip("10.0.0.9"))
            .expect("match");
        assert_eq!(edge.credential.version_name(), "v2c");
        assert_eq!(edge.port, 1161);
    }

    /// What a discovery plugin writes (id, site, endpoint) cannot earn a
    /// credential; the owner the host recorded and the address can.
    #[test]
    fn credentials_follow_the_owner_and_the_network_not_the_fields() {
        let settings = parse(
            "[[credentials]]\ndiscovery_plugins = [\"inventory\"]\nfilter = 'resource_site = \"dc1\"'\nversion = \"2c\"\ncommunity = \"dc1-secret\"\n\
             [[credentials]]\nnetworks = [\"10.1.0.0/16\", \"fd00:1::/32\"]\nversion = \"2c\"\ncommunity = \"lab-secret\"\n\
             [[credentials]]\ndiscovery_plugins = [\"cmdb\"]\nnetworks = [\"192.168.0.0/16\"]\nversion = \"1\"\ncommunity = \"both\"\n",
        )
        .expect("valid");
        let community = |rule: Option<&CredentialRule>| {
            rule.map(|r| match &r.credential {
                Credential::V1 { community } | Credential::V2c { community } => {
                    String::from_utf8_lossy(community.expose()).into_owned()
                }
                Credential::V3(_) => "v3".to_owned(),
            })
        };
        let mut genuine = owned("core-1", "10.9.0.1", "inventory");
        genuine.site = "dc1".to_owned();
        assert_eq!(
            community(settings.credential_for(&genuine, ip("10.9.0.1"))).as_deref(),
            Some("dc1-secret")
        );
        // The same id and site, reported by another plugin: nothing.
        let mut forged = genuine.clone();
        forged.creation_plugin = "rogue".to_owned();
        assert_eq!(
            community(settings.credential_for(&forged, ip("10.9.0.1"))),
            None
        );
        // The owner's resource of another site: the filter narrows.
        let mut elsewhere = genuine.clone();
        elsewhere.site = "dc2".to_owned();
        assert_eq!(
            community(settings.credential_for(&elsewhere, ip("10.9.0.1"))),
            None
        );
        // Any owner inside the network; IPv4-mapped IPv6 counts as IPv4.
        assert_eq!(
            community(settings.credential_for(&forged, ip("10.1.2.3"))).as_deref(),
            Some("lab-secret")
        );
        assert_eq!(
            community(settings.credential_for(&forged, ip("::ffff:10.1.2.3"))).as_deref(),
            Some("lab-secret")
        );
        assert_eq!(
            community(settings.credential_for(&forged, ip("fd00:1::9"))).as_deref(),
            Some("lab-secret")
        );
        assert_eq!(
            community(settings.credential_for(&forged, ip("10.2.0.1"))),
            None
        );
        // Both set: both must hold.
        let cmdb = owned("x", "192.168.1.1", "cmdb");
        assert_eq!(
            community(settings.credential_for(&cmdb, ip("192.168.1.1"))).as_deref(),
            Some("both")
        );
        assert_eq!(
            community(settings.credential_for(&cmdb, ip("172.16.0.1"))),
            None
        );
        assert_eq!(
            community(settings.credential_for(&owned("x", "", "inventory"), ip("192.168.1.1"))),
            None
        );
    }

    #[test]
    fn a_credential_needs_an_owner_or_a_network() {
        let err = parse(
            "[[credentials]]\nversion = \"2c\"\nfilter = 'resource_id = \"core-1\"'\ncommunity = \"public\"\n",
        )
        .expect_err("filter only");
        assert_eq!(err.line, 3, "{err}");
        assert!(
            err.message
                .contains("snmp.credentials[1] needs discovery_plugins")
                && err.message.contains("networks")
                && err.message.contains("a filter only matches fields"),
            "{err}"
        );
        assert!(!err.message.contains("public"), "{err}");
        let err = parse("[[credentials]]\nversion = \"2c\"\ncommunity = \"public\"\n")
            .expect_err("nothing");
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("matches every resource"), "{err}");
        let err =
            parse("[[credentials]]\nversion = \"2c\"\ncommunity = \"x\"\ndiscovery_plugins = []\n")
                .expect_err("empty list");
        assert_eq!(err.line, 4, "{err}");
        let err = parse(
            "[[credentials]]\nversion = \"2c\"\ncommunity = \"x\"\nnetworks = [\"10.0.0.0/8\",\n  \"10.1.2.3/16\"]\n",
        )
        .expect_err("host bits");
        assert_eq!(err.line, 5, "{err}");
        assert!(
            err.message.contains("snmp.credentials[1].networks")
                && err.message.contains("10.1.0.0/16"),
            "{err}"
        );
        let err = parse(
            "[[credentials]]\nversion = \"2c\"\ncommunity = \"x\"\nnetworks = [\"sw1.example.net\"]\n",
        )
        .expect_err("a name");
        assert_eq!(err.line, 4, "{err}");
    }

    #[test]
    fn cidrs_parse_and_match() {
        let cidr = |text: &str| Cidr::parse(text).expect(text);
        assert!(cidr("10.1.0.0/16").contains(ip("10.1.255.255")));
        assert!(!cidr("10.1.0.0/16").contains(ip("10.2.0.0")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")), "families differ");
        assert!(cidr("::/0").contains(ip("fe80::1")));
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(cidr("fd00::/8").contains(ip("fdff::1")));
        assert!(!cidr("fd00::/8").contains(ip("fe00::1")));
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
        assert!(cidr("::ffff:10.0.0.1").contains(ip("10.0.0.1")));
        assert!(cidr("169.254.169.254/32").within(&cidr("169.254.0.0/16")));
        assert!(!cidr("0.0.0.0/0").within(&cidr("169.254.0.0/16")));
        assert!(!cidr("169.254.0.0/15").within(&cidr("169.254.0.0/16")));
        assert_eq!(cidr("fd00:ec2::254").to_string(), "fd00:ec2::254/128");
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.1/8",
            "10.0.0.0/-1",
            "x",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reach_refuses_special_addresses_unless_named() {
        let everything = Reach::default();
        for refused in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "224.0.0.1",
            "239.255.255.250",
            "ff02::1",
            "255.255.255.255",
            "240.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "::ffff:169.254.169.254",
        ] {
            assert!(everything.check(ip(refused)).is_err(), "{refused}");
        }
        for allowed in ["10.0.0.1", "127.0.0.1", "::1", "192.0.2.1", "2001:db8::1"] {
            assert!(everything.check(ip(allowed)).is_ok(), "{allowed}");
        }
        let why = everything
            .check(ip("169.254.169.254"))
            .expect_err("metadata");
        assert!(
            why.contains("link-local") && why.contains("allowed_networks"),
            "{why}"
        );

        let parsed =
            parse("allowed_networks = [\"0.0.0.0/0\", \"169.254.169.254/32\", \"::/0\"]\n")
                .expect("valid");
        let reach = &parsed.reach;
        assert!(
            reach.check(ip("169.254.169.254")).is_ok(),
            "named explicitly"
        );
        assert!(
            reach.check(ip("169.254.1.1")).is_err(),
            "0.0.0.0/0 is not explicit"
        );
        assert!(reach.check(ip("fe80::1")).is_err());
        assert!(reach.check(ip("224.0.0.1")).is_err());

        let parsed = parse("allowed_networks = [\"10.1.0.0/16\"]\n").expect("valid");
        let why = parsed.reach.check(ip("10.2.0.1")).expect_err("outside");
        assert!(
            why.contains("outside [snmp] allowed_networks (10.1.0.0/16)"),
            "{why}"
        );
        assert!(parsed.reach.check(ip("10.1.0.9")).is_ok());
        assert!(!parsed.reach.resolve_names);
        assert!(
            parse("resolve_names = true\n")
                .expect("valid")
                .reach
                .resolve_names
        );
    }

    #[test]
    fn limits_have_defaults_and_ceilings() {
        let defaults = parse("").expect("empty");
        assert_eq!(defaults.max_oids_per_request, 64);
        assert_eq!(defaults.max_requests_per_second_per_device, 100);
        assert!(defaults.reach.allowed.is_none());
        let set = parse("max_oids_per_request = 128\nmax_requests_per_second_per_device = 10000\n")
            .expect("at the ceilings");
        assert_eq!(set.max_oids_per_request, 128);
        assert_eq!(set.max_requests_per_second_per_device, 10_000);
        for (text, line) in [
            ("max_oids_per_request = 0\n", 1),
            ("timeout = \"1s\"\nmax_oids_per_request = 129\n", 2),
            ("max_requests_per_second_per_device = 0\n", 1),
            ("max_requests_per_second_per_device = 10001\n", 1),
            ("max_requests_per_second_per_device = -1\n", 1),
            ("allowed_networks = []\n", 1),
            ("allowed_networks = [\"10.0.0.0/8\", \"nonsense\"]\n", 1),
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
        }
        let err = parse("max_requests_per_second_per_device = 0\n").expect_err("zero");
        assert!(
            err.message.contains("never polled without a limit"),
            "{err}"
        );
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("community"), "s3cret-community\n").expect("write");
        let site = dir.path().join("site.toml");
        let text = format!(
            "[[credentials]]\nversion = \"2c\"\ncommunity = {{ file = \"community\" }}\n{NET}"
        );
        let section: SnmpSection = toml::from_str(&text).expect("toml");
        let at = |_: Range<usize>, message: String| LocatedError::new(&site, 0, message);
        let settings = resolve(section, &site, &at).expect("valid");
        let Credential::V2c { community } = &settings.credentials[0].credential else {
            panic!("expected v2c");
        };
        assert_eq!(community.expose(), b"s3cret-community");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn mistakes_name_the_line_and_never_the_secret() {
        let err = parse(&format!("[[credentials]]\nversion = \"2c\"\ncommunity = {{ env = \"VIGIL_TEST_UNSET_VARIABLE\" }}\n{NET}"))
            .expect_err("unset variable");
        assert_eq!(err.line, 3);
        assert!(
            err.message.contains("VIGIL_TEST_UNSET_VARIABLE is not set"),
            "{err}"
        );

        let err = parse(&format!("[[credentials]]\nversion = \"3\"\nuser = \"ops\"\nauth_protocol = \"sha\"\nauth_password = \"short\"\n{NET}"))
            .expect_err("short password");
        assert_eq!(err.line, 5);
        assert!(!err.message.contains("short\""), "{err}");

        let err = parse(&format!(
            "[[credentials]]\nversion = \"2c\"\ncommunity = \"public\"\nuser = \"ops\"\n{NET}"
        ))
        .expect_err("v3 field on v2c");
        assert_eq!(err.line, 4);

        let err = parse(&format!(
            "[[credentials]]\nversion = \"4\"\ncommunity = \"public\"\n{NET}"
        ))
        .expect_err("version");
        assert_eq!(err.line, 2);

        let err = parse(&format!(
            "[[credentials]]\nfilter = 'resource_id = '\nversion = \"2c\"\ncommunity = \"x\"\n{NET}"
        ))
        .expect_err("filter");
        assert_eq!(err.line, 2);

        let err = parse(&format!("[[credentials]]\nversion = \"3\"\nuser = \"ops\"\nprivacy_protocol = \"aes\"\nprivacy_password = \"privpass1\"\n{NET}"))
            .expect_err("privacy without auth");
        assert!(err.message.contains("needs authentication"), "{err}");

        let err = parse("max_repetitions = 0\n").expect_err("zero repetitions");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn plugin_options_override_defaults() {
        let mut options = RequestOptions::default();
        apply_plugin_option(&mut options, "timeout", "2").expect("seconds");
        apply_plugin_option(&mut options, "max_repetitions", "50").expect("reps");
        apply_plugin_option(&mut options, "retries", "0").expect("retries");
        assert_eq!(
            options,
            RequestOptions {
                timeout: Duration::from_secs(2),
                retries: 0,
                max_repetitions: 50
            }
        );
        assert!(apply_plugin_option(&mut options, "retries", "99").is_err());
        assert!(apply_plugin_option(&mut options, "community", "public").is_err());
    }
}
