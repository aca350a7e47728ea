//! Reading the history back (issue #14, "Using it"): what `vigil endpoints
//! search|show` and `GET /api/v1/endpoints` ask of a [`HistoryStore`].
//!
//! - **Addresses are normalised** the way the APIC writes them, so any
//!   common notation finds the endpoint: a MAC as upper-case colon form
//!   (`aa-bb-cc-dd-ee-ff`, `aabb.ccdd.eeff` and `aabbccddeeff` are all
//!   `AA:BB:CC:DD:EE:FF`), an IPv4 address in dotted quad, an IPv6 address
//!   in RFC 5952 form (lower case, zeros compressed) ([`normalize_address`]).
//! - **A search text** ([`search_matches`]) is a complete address (exact
//!   match), a textual address prefix (`10.1.`, `00:50:56`, `0050.56`,
//!   `2001:db8:`), an octet-aligned IPv4 CIDR (`10.1.0.0/16` is the prefix
//!   `10.1.`), or empty (every endpoint). A partial text that could be a MAC
//!   or an IPv6 prefix (`aa:bb`) matches both.
//! - **Pages** are in one order everywhere, (address, fabric, vnid)
//!   ([`page_order`]), and continue from an opaque cursor naming the last
//!   key of the previous page (keyset paging: stable while records are
//!   written, and each page is an index range scan in the stores). Pages
//!   hold at most [`MAX_PAGE`] records.
//!
//! The stores implement one primitive, [`HistoryStore::find_endpoints`]
//! (filter by address match, fabric and vnid, in page order, after a key);
//! the functions here build searches and lookups on it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::model::{EndpointKey, EndpointRecord, HistoryRecord};
use crate::store::{HistoryStore, StoreError};

/// Most records in one page.
pub const MAX_PAGE: usize = 1000;
/// Records in a page when the caller does not say.
pub const DEFAULT_PAGE: usize = 100;
/// Longest search text accepted.
pub const MAX_SEARCH_LEN: usize = 128;
/// Longest cursor accepted.
pub const MAX_CURSOR_LEN: usize = 4096;
/// Most endpoints [`locate`] reports for one address (across fabrics and
/// scopes).
pub const MAX_LOCATE: usize = 100;

/// How a query matches the stored address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrMatch {
    /// Every address.
    Any,
    /// This address exactly (already normalised).
    Exact(String),
    /// Addresses starting with this text (compared byte for byte).
    Prefix(String),
}

impl AddrMatch {
    /// Whether `addr` matches.
    pub fn matches(&self, addr: &str) -> bool {
        match self {
            AddrMatch::Any => true,
            AddrMatch::Exact(a) => addr == a,
            AddrMatch::Prefix(p) => addr.starts_with(p.as_str()),
        }
    }
}

/// Which endpoint records [`HistoryStore::find_endpoints`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFilter {
    /// Only this fabric.
    pub fabric: Option<String>,
    /// Only this scope (BD vnid for a MAC, VRF vnid for an IP).
    pub vnid: Option<u32>,
    pub addr: AddrMatch,
}

impl EndpointFilter {
    /// Every endpoint.
    pub fn all() -> Self {
        EndpointFilter {
            fabric: None,
            vnid: None,
            addr: AddrMatch::Any,
        }
    }

    /// Whether the endpoint `key` passes.
    pub fn matches(&self, key: &EndpointKey) -> bool {
        self.fabric.as_ref().is_none_or(|f| *f == key.fabric)
            && self.vnid.is_none_or(|v| v == key.vnid)
            && self.addr.matches(&key.addr)
    }
}

/// The order of every page: address, then fabric, then vnid (strings
/// compared byte for byte, as SQLite and MongoDB compare them).
pub fn page_order(a: &EndpointKey, b: &EndpointKey) -> Ordering {
    (a.addr.as_bytes(), a.fabric.as_bytes(), a.vnid).cmp(&(
        b.addr.as_bytes(),
        b.fabric.as_bytes(),
        b.vnid,
    ))
}

/// The least string greater than every string starting with `prefix` (the
/// exclusive end of a prefix range scan), `None` when there is none (the
/// range is open-ended).
pub fn prefix_upper(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

// --- addresses ------------------------------------------------------------------

/// A complete MAC in any common notation (`aa:bb:cc:dd:ee:ff`,
/// `AA-BB-CC-DD-EE-FF`, `aabb.ccdd.eeff`, `aabbccddeeff`; colon and dash
/// groups may drop a leading zero) in the APIC's form, upper-case colon
/// separated; `None` if `text` is not one.
pub fn normalize_mac(text: &str) -> Option<String> {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let digits: String = if text.len() == 12 && hex(text) {
        text.to_owned()
    } else if text.contains('.') {
        let groups: Vec<&str> = text.split('.').collect();
        if groups.len() != 3 || !groups.iter().all(|g| g.len() == 4 && hex(g)) {
            return None;
        }
        groups.concat()
    } else {
        let sep = if text.contains(':') { ':' } else { '-' };
        let groups: Vec<&str> = text.split(sep).collect();
        if groups.len() != 6 || !groups.iter().all(|g| g.len() <= 2 && hex(g)) {
            return None;
        }
        groups.iter().map(|g| format!("{g:0>2}")).collect()
    };
    Some(colon_groups(&digits.to_ascii_uppercase()))
}

/// Hex digits as colon-separated pairs (the last may be a single digit).
fn colon_groups(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() * 3 / 2);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 2 == 0 {
            out.push(':');
        }
        out.push(c);
    }
    out
}

/// A complete IPv4 or IPv6 address in the form the APIC writes (dotted
/// quad; RFC 5952 for IPv6); `None` if `text` is not one.
pub fn normalize_ip(text: &str) -> Option<String> {
    if let Ok(v4) = text.parse::<Ipv4Addr>() {
        return Some(v4.to_string());
    }
    text.parse::<Ipv6Addr>().ok().map(|v6| v6.to_string())
}

/// A complete MAC or IP address normalised ([`normalize_mac`],
/// [`normalize_ip`]).
pub fn normalize_address(text: &str) -> Option<String> {
    let text = text.trim();
    normalize_mac(text).or_else(|| normalize_ip(text))
}

// --- search text ----------------------------------------------------------------

/// A search text, cursor or address that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The search text (quoted, truncated) and why.
    #[error("search {0}")]
    Search(String),
    /// The cursor is not one this server issued.
    #[error("cursor is not valid: {0}")]
    Cursor(String),
    /// The limit is out of range.
    #[error("limit {0} is out of range (1..={MAX_PAGE})")]
    Limit(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a search text matches (one to three alternatives, each normalised;
/// see the module docs).
pub fn search_matches(text: &str) -> Result<Vec<AddrMatch>, QueryError> {
    let text = text.trim();
    let bad = |why: &str| {
        QueryError::Search(format!(
            "{:?}: {why}",
            crate::apic::truncate(text, MAX_SEARCH_LEN)
        ))
    };
    if text.is_empty() {
        return Ok(vec![AddrMatch::Any]);
    }
    if text.len() > MAX_SEARCH_LEN {
        return Err(bad(&format!("longer than {MAX_SEARCH_LEN} bytes")));
    }
    if let Some(address) = normalize_address(text) {
        return Ok(vec![AddrMatch::Exact(address)]);
    }
    if let Some((network, bits)) = text.split_once('/') {
        let network: Ipv4Addr = network
            .parse()
            .map_err(|_| bad("a prefix length needs an IPv4 network (10.1.0.0/16)"))?;
        let octets = network.octets();
        let keep = match bits {
            "8" => 1,
            "16" => 2,
            "24" => 3,
            "32" => return Ok(vec![AddrMatch::Exact(network.to_string())]),
            _ => return Err(bad("prefix lengths are /8, /16, /24 or /32")),
        };
        if octets[keep..].iter().any(|o| *o != 0) {
            return Err(bad("host bits are set"));
        }
        let prefix: String = octets[..keep].iter().map(|o| format!("{o}.")).collect();
        return Ok(vec![AddrMatch::Prefix(prefix)]);
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b"-.:".contains(&b))
    {
        return Err(bad("not an address, an address prefix or a MAC"));
    }
    let mut prefixes: Vec<String> = [ipv4_prefix(text), mac_prefix(text), ipv6_prefix(text)]
        .into_iter()
        .flatten()
        .collect();
    prefixes.sort();
    prefixes.dedup();
    if prefixes.is_empty() {
        return Err(bad("not an address, an address prefix or a MAC"));
    }
    Ok(prefixes.into_iter().map(AddrMatch::Prefix).collect())
}

/// Digits and dots, at most four groups of at most three digits.
fn ipv4_prefix(text: &str) -> Option<String> {
    let groups: Vec<&str> = text.split('.').collect();
    let last = groups.len() - 1;
    let ok = groups.len() <= 4
        && groups.iter().enumerate().all(|(i, g)| {
            g.len() <= 3 && g.bytes().all(|b| b.is_ascii_digit()) && (i == last || !g.is_empty())
        });
    ok.then(|| text.to_owned())
}

/// A partial MAC: colon or dash pairs (the last may be one digit), Cisco
/// dotted groups of four (the last may be shorter), or bare hex; as the
/// upper-case colon form's prefix.
fn mac_prefix(text: &str) -> Option<String> {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let digits: String = if hex(text) {
        text.to_owned()
    } else if !text.contains(['-', ':']) {
        let groups: Vec<&str> = text.split('.').collect();
        let last = groups.len() - 1;
        if groups.len() > 3
            || !groups.iter().enumerate().all(|(i, g)| {
                hex(g)
                    && if i == last {
                        g.len() <= 4
                    } else {
                        g.len() == 4
                    }
            })
        {
            return None;
        }
        groups.concat()
    } else {
        if (text.contains(':') && text.contains('-')) || text.contains('.') {
            return None;
        }
        let sep = if text.contains(':') { ':' } else { '-' };
        let groups: Vec<&str> = text.split(sep).collect();
        let last = groups.len() - 1;
        if groups.len() > 6
            || !groups.iter().enumerate().all(|(i, g)| {
                hex(g)
                    && if i == last {
                        g.len() <= 2
                    } else {
                        g.len() == 2
                    }
            })
        {
            return None;
        }
        groups.concat()
    };
    (digits.len() <= 12 && !digits.is_empty())
        .then(|| colon_groups(&digits.to_ascii_uppercase()))
        .map(|p| {
            // "AA:BB:" typed with its separator keeps it.
            if text.ends_with([':', '-', '.']) && !p.ends_with(':') && p.len() < 17 {
                format!("{p}:")
            } else {
                p
            }
        })
}

/// A partial IPv6 address: hex groups of at most four digits separated by
/// ':' (one "::" at most), lower case, leading zeros dropped from complete
/// groups (as RFC 5952 writes them).
fn ipv6_prefix(text: &str) -> Option<String> {
    if text.contains(['.', '-']) || text.contains(":::") || text.matches("::").count() > 1 {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let groups: Vec<&str> = lower.split(':').collect();
    if groups.len() > 8 || groups.iter().any(|g| g.len() > 4) {
        return None;
    }
    let last = groups.len() - 1;
    let groups: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if i == last || g.is_empty() {
                (*g).to_owned()
            } else {
                let trimmed = g.trim_start_matches('0');
                if trimmed.is_empty() { "0" } else { trimmed }.to_owned()
            }
        })
        .collect();
    Some(groups.join(":"))
}

// --- cursors --------------------------------------------------------------------

/// The cursor that continues after `key`: opaque to clients (hex of the key
/// as JSON).
pub fn encode_cursor(key: &EndpointKey) -> String {
    let json = serde_json::to_string(&(&key.fabric, key.vnid, &key.addr)).unwrap_or_default();
    json.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The key a cursor continues after.
pub fn decode_cursor(cursor: &str) -> Result<EndpointKey, QueryError> {
    let bad = |why: &str| QueryError::Cursor(why.to_owned());
    if cursor.len() > MAX_CURSOR_LEN || !cursor.len().is_multiple_of(2) {
        return Err(bad("wrong length"));
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| {
            cursor
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| bad("not hex"))?;
    let (fabric, vnid, addr): (String, u32, String) =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a key"))?;
    Ok(EndpointKey { fabric, vnid, addr })
}

// --- queries --------------------------------------------------------------------

/// One search (`vigil endpoints search`, `GET /api/v1/endpoints`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// The search text ([`search_matches`]); `None` or empty for every
    /// endpoint.
    pub text: Option<String>,
    pub fabric: Option<String>,
    pub vnid: Option<u32>,
    /// Continue after the page that gave this cursor.
    pub cursor: Option<String>,
    /// Records in the page, 1..=[`MAX_PAGE`].
    pub limit: usize,
}

/// One page of endpoint records, in [`page_order`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<EndpointRecord>,
    /// The cursor of the next page; `None` when this is the last.
    pub next_cursor: Option<String>,
}

/// Runs a search: one page of the matching endpoint records.
pub async fn search<S: HistoryStore + ?Sized>(
    store: &S,
    query: &Search,
) -> Result<Page, QueryError> {
    if query.limit == 0 || query.limit > MAX_PAGE {
        return Err(QueryError::Limit(query.limit));
    }
    let matches = search_matches(query.text.as_deref().unwrap_or(""))?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut items: Vec<EndpointRecord> = Vec::new();
    for addr in matches {
        let filter = EndpointFilter {
            fabric: query.fabric.clone(),
            vnid: query.vnid,
            addr,
        };
        items.extend(
            store
                .find_endpoints(&filter, after.as_ref(), query.limit + 1)
                .await?,
        );
    }
    items.sort_by(|a, b| page_order(&a.key(), &b.key()));
    items.dedup_by(|a, b| a.key() == b.key());
    let next_cursor = if items.len() > query.limit {
        items.truncate(query.limit);
        items.last().map(|r| encode_cursor(&r.key()))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The endpoints stored under `address` (any notation; normalised), in
/// `fabric` and scope `vnid` when given: at most [`MAX_LOCATE`] keys, in
/// page order. More than one means the address is ambiguous.
pub async fn locate<S: HistoryStore + ?Sized>(
    store: &S,
    address: &str,
    fabric: Option<&str>,
    vnid: Option<u32>,
) -> Result<Vec<EndpointKey>, QueryError> {
    let addr = normalize_address(address).ok_or_else(|| {
        QueryError::Search(format!(
            "{:?}: not a MAC or IP address",
            crate::apic::truncate(address, MAX_SEARCH_LEN)
        ))
    })?;
    let filter = EndpointFilter {
        fabric: fabric.map(str::to_owned),
        vnid,
        addr: AddrMatch::Exact(addr),
    };
    Ok(store
        .find_endpoints(&filter, None, MAX_LOCATE)
        .await?
        .iter()
        .map(EndpointRecord::key)
        .collect())
}

/// One endpoint with everything stored about it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointDetail {
    pub record: EndpointRecord,
    /// Every node's history, by node id.
    pub histories: BTreeMap<u32, HistoryRecord>,
}

/// The endpoint `key` (its address as stored) with every node's history;
/// `None` when there is no endpoint record.
pub async fn detail<S: HistoryStore + ?Sized>(
    store: &S,
    key: &EndpointKey,
) -> Result<Option<EndpointDetail>, StoreError> {
    let Some(record) = store.endpoint(key).await? else {
        return Ok(None);
    };
    let histories = store.histories(key).await?;
    Ok(Some(EndpointDetail { record, histories }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_in_every_notation_normalise_to_the_apics_form() {
        for text in [
            "aa:bb:cc:dd:ee:0f",
            "AA-BB-CC-DD-EE-0F",
            "aabb.ccdd.ee0f",
            "AABBCCDDEE0F",
            "aa:bb:cc:dd:ee:f",
            " aa-bb-cc-dd-ee-0f ",
        ] {
            assert_eq!(
                normalize_address(text).as_deref(),
                Some("AA:BB:CC:DD:EE:0F"),
                "{text}"
            );
        }
        for text in [
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aabb.ccdd.eeff.0000",
            "gg:bb:cc:dd:ee:ff",
            "aa:bb-cc:dd:ee:ff",
            "aabbccddeef",
            "",
        ] {
            assert_eq!(normalize_mac(text), None, "{text}");
        }
    }

    #[test]
    fn ips_normalise_to_rfc_5952() {
        assert_eq!(
            normalize_address("2001:DB8:0:0::0065").as_deref(),
            Some("2001:db8::65")
        );
        assert_eq!(
            normalize_address("10.1.1.101").as_deref(),
            Some("10.1.1.101")
        );
        assert_eq!(normalize_address("10.1.1.0101"), None);
        assert_eq!(normalize_address("10.1.1"), None);
    }

    fn prefixes(text: &str) -> Vec<String> {
        search_matches(text)
            .unwrap()
            .into_iter()
            .map(|m| match m {
                AddrMatch::Prefix(p) => format!("prefix {p}"),
                AddrMatch::Exact(a) => format!("exact {a}"),
                AddrMatch::Any => "any".into(),
            })
            .collect()
    }

    #[test]
    fn search_texts() {
        assert_eq!(prefixes(""), ["any"]);
        assert_eq!(prefixes("10.1.1.101"), ["exact 10.1.1.101"]);
        assert_eq!(prefixes("aabb.ccdd.eeff"), ["exact AA:BB:CC:DD:EE:FF"]);
        assert_eq!(prefixes("10.1."), ["prefix 10.1."]);
        assert_eq!(prefixes("10.1.0.0/16"), ["prefix 10.1."]);
        assert_eq!(prefixes("10.1.1.7/32"), ["exact 10.1.1.7"]);
        assert_eq!(prefixes("00-50-56"), ["prefix 00:50:56"]);
        assert_eq!(prefixes("0050.56"), ["prefix 00:50:56"]);
        assert_eq!(prefixes("005056a"), ["prefix 00:50:56:A"]);
        assert_eq!(prefixes("aa:bb"), ["prefix AA:BB", "prefix aa:bb"]);
        assert_eq!(prefixes("2001:0DB8:"), ["prefix 2001:db8:"]);
        assert_eq!(prefixes("10"), ["prefix 10"]);
        for bad in [
            "hello",
            "10.1.0.0/12",
            "10.1.0.1/16",
            "a:::b",
            "x".repeat(200).as_str(),
        ] {
            assert!(search_matches(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let key = EndpointKey {
            fabric: "f \"x\"".into(),
            vnid: 7,
            addr: "2001:db8::1".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&key)).unwrap(), key);
        for bad in ["", "zz", "abc", "7b7d", &"00".repeat(5000)] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_upper_bounds_the_range() {
        assert_eq!(prefix_upper("10.1.").as_deref(), Some("10.1/"));
        assert_eq!(prefix_upper("AA:").as_deref(), Some("AA;"));
        assert_eq!(prefix_upper(""), None);
        assert_eq!(prefix_upper("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }
}
