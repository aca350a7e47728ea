//! Panoptes JSON resource files: reading and validation.
//!
//! Nothing here calls the host, so it is tested natively. The file is a JSON
//! array of objects; each object is checked on its own, and a bad one is
//! reported by its (0-based) index and skipped while the good ones are kept.
//! Only a file that is not JSON, not an array, or longer than
//! [`MAX_ENTRIES`] fails as a whole.
//!
//! Entries are validated while the array is read (the raw JSON of an entry
//! is dropped as soon as it is checked), so memory holds the file and the
//! kept resources, nothing more.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Where the host mounts the granted directory in the guest.
pub const DATA_DIR: &str = "/data";
/// Most entries read from one file; more is an error for the whole file.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest id, site, endpoint, class, subclass and type the host accepts.
pub const MAX_FIELD_BYTES: usize = 256;
/// Longest metadata key the host accepts.
pub const MAX_METADATA_KEY_BYTES: usize = 128;
/// Longest metadata value the host accepts.
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;

/// One valid entry of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedResource {
    pub id: String,
    pub site: String,
    pub endpoint: String,
    pub class: String,
    pub subclass: String,
    pub type_: String,
    /// 0 when the file gives none (the host then uses its default).
    pub ttl_seconds: u64,
    /// Seconds and nanoseconds since the epoch; `None` means "now".
    pub creation_timestamp: Option<(u64, u32)>,
    /// In file order.
    pub metadata: Vec<(String, String)>,
}

/// A skipped entry: its index in the array and why.
pub type BadEntry = (usize, String);

/// Turns the configured file name into a path under [`DATA_DIR`]; absolute
/// paths and `..` components are refused.
pub fn resolve_path(written: &str) -> Result<PathBuf, String> {
    let written = written.trim();
    if written.is_empty() {
        return Err("[json_file] path is empty".into());
    }
    let relative = Path::new(written);
    let mut names = 0;
    for component in relative.components() {
        match component {
            Component::Normal(_) => names += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "[json_file] path {written:?} must not contain \"..\""
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "[json_file] path {written:?} must be relative to {DATA_DIR}"
                ));
            }
        }
    }
    if names == 0 {
        return Err(format!("[json_file] path {written:?} names no file"));
    }
    Ok(Path::new(DATA_DIR).join(relative))
}

/// Reads a Panoptes resource file: the valid resources (first of each
/// `resource_id`) and the skipped entries. The error (with serde_json's line
/// and column) is for a file that is not a JSON array of at most
/// [`MAX_ENTRIES`] entries.
pub fn parse(bytes: &[u8]) -> Result<(Vec<ParsedResource>, Vec<BadEntry>), serde_json::Error> {
    // Editors on some systems start UTF-8 files with a byte-order mark,
    // which JSON does not allow; it carries no data.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de.deserialize_seq(InventoryVisitor)?;
    de.end()?;
    Ok(parsed)
}

struct InventoryVisitor;

impl<'de> Visitor<'de> for InventoryVisitor {
    type Value = (Vec<ParsedResource>, Vec<BadEntry>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of resource objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept: Vec<ParsedResource> = Vec::new();
        let mut bad: Vec<BadEntry> = Vec::new();
        // resource_id -> index of the entry kept for it.
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut index = 0;
        loop {
            if index == MAX_ENTRIES {
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(format_args!(
                        "more than {MAX_ENTRIES} entries (the most one file may hold)"
                    )));
                }
                break;
            }
            let Some(element) = seq.next_element::<Element>()? else {
                break;
            };
            let checked = match element {
                Element::Object(raw) => raw.into_resource(),
                Element::Other(kind) => Err(format!("entry is {kind}, not an object")),
            };
            match checked {
                Ok(resource) => match seen.get(&resource.id) {
                    Some(first) => {
                        bad.push((index, format!("duplicate resource_id of entry {first}")))
                    }
                    None => {
                        seen.insert(resource.id.clone(), index);
                        kept.push(resource);
                    }
                },
                Err(reason) => bad.push((index, reason)),
            }
            index += 1;
        }
        Ok((kept, bad))
    }
}

/// The keys read from an entry; anything else is ignored.
#[derive(Deserialize, Clone, Copy)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    ResourceId,
    ResourceSite,
    ResourceEndpoint,
    ResourceClass,
    ResourceSubclass,
    ResourceType,
    ResourceMetadata,
    ResourceTtl,
    ResourceCreationTimestamp,
    #[serde(other)]
    Other,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::ResourceId => "resource_id",
            Field::ResourceSite => "resource_site",
            Field::ResourceEndpoint => "resource_endpoint",
            Field::ResourceClass => "resource_class",
            Field::ResourceSubclass => "resource_subclass",
            Field::ResourceType => "resource_type",
            Field::ResourceMetadata => "resource_metadata",
            Field::ResourceTtl => "resource_ttl",
            Field::ResourceCreationTimestamp => "resource_creation_timestamp",
            Field::Other => "other",
        }
    }
}

/// One array element, read whatever its JSON type, so a wrong one is a bad
/// entry rather than the end of the file.
enum Element {
    Object(Box<RawEntry>),
    /// What the element was instead ("a number", ...).
    Other(&'static str),
}

/// An entry's known keys, as written; checked by [`RawEntry::into_resource`].
#[derive(Default)]
struct RawEntry {
    id: Option<Value>,
    site: Option<Value>,
    endpoint: Option<Value>,
    class: Option<Value>,
    subclass: Option<Value>,
    type_: Option<Value>,
    metadata: Option<Result<Vec<(String, String)>, String>>,
    ttl: Option<Value>,
    creation_timestamp: Option<Value>,
    /// The first known key written twice.
    duplicate: Option<&'static str>,
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

/// The `visit_*` methods of a visitor that accepts any JSON value and maps
/// everything but an object (and, for some, null) to `$other(kind)`.
macro_rules! non_object_visits {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other("a string"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($other("an array"))
        }
    };
}

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    non_object_visits!(Element::Other);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Element::Other("null"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawEntry::default();
        while let Some(field) = map.next_key::<Field>()? {
            let slot = match field {
                Field::ResourceId => &mut raw.id,
                Field::ResourceSite => &mut raw.site,
                Field::ResourceEndpoint => &mut raw.endpoint,
                Field::ResourceClass => &mut raw.class,
                Field::ResourceSubclass => &mut raw.subclass,
                Field::ResourceType => &mut raw.type_,
                Field::ResourceTtl => &mut raw.ttl,
                Field::ResourceCreationTimestamp => &mut raw.creation_timestamp,
                Field::ResourceMetadata => {
                    let metadata = map.next_value::<Metadata>()?.0;
                    if raw.metadata.is_some() {
                        raw.duplicate.get_or_insert(field.name());
                    } else {
                        raw.metadata = Some(metadata);
                    }
                    continue;
                }
                // resource_plugin (the host sets it) and Panoptes' extras.
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value::<Value>()?;
            if slot.is_some() {
                raw.duplicate.get_or_insert(field.name());
            } else {
                *slot = Some(value);
            }
        }
        Ok(Element::Object(Box::new(raw)))
    }
}

/// `resource_metadata`, in file order, or why it is bad.
struct Metadata(Result<Vec<(String, String)>, String>);

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MetadataVisitor)
    }
}

struct MetadataVisitor;

fn metadata_not_object(kind: &str) -> Metadata {
    Metadata(Err(format!("resource_metadata is {kind}, not an object")))
}

impl<'de> Visitor<'de> for MetadataVisitor {
    type Value = Metadata;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    non_object_visits!(metadata_not_object);

    /// `null`: no metadata.
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Metadata(Ok(Vec::new())))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut problem: Option<String> = None;
        // Every value must be read, even after a problem, to get past the
        // object.
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            if problem.is_none() {
                match metadata_entry(&key, value, &entries) {
                    Ok(text) => entries.push((key, text)),
                    Err(reason) => problem = Some(reason),
                }
            }
        }
        Ok(Metadata(match problem {
            Some(reason) => Err(reason),
            None => Ok(entries),
        }))
    }
}

/// One metadata entry as text, checked as the host would.
fn metadata_entry(key: &str, value: Value, earlier: &[(String, String)]) -> Result<String, String> {
    if !valid_metadata_key(key) {
        return Err(format!(
            "resource_metadata key {:?} is not [A-Za-z_][A-Za-z0-9_]* of at most {MAX_METADATA_KEY_BYTES} bytes",
            shorten(key)
        ));
    }
    if earlier.iter().any(|(k, _)| k == key) {
        return Err(format!("resource_metadata key {key} appears twice"));
    }
    let text = match value {
        Value::String(s) => s,
        // Their JSON text: 161, 1.5, true.
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => {
            return Err(format!(
                "resource_metadata.{key} is {}, not a string, number or boolean",
                kind(&other)
            ));
        }
    };
    if text.len() > MAX_METADATA_VALUE_BYTES {
        return Err(format!(
            "resource_metadata.{key} is longer than {MAX_METADATA_VALUE_BYTES} bytes"
        ));
    }
    Ok(text)
}

/// The host's rule for metadata keys.
fn valid_metadata_key(key: &str) -> bool {
    key.len() <= MAX_METADATA_KEY_BYTES
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl RawEntry {
    fn into_resource(self) -> Result<ParsedResource, String> {
        if let Some(key) = self.duplicate {
            return Err(format!("key {key} appears twice"));
        }
        let id = text(Field::ResourceId, self.id, true)?;
        let site = text(Field::ResourceSite, self.site, true)?;
        let endpoint = text(Field::ResourceEndpoint, self.endpoint, true)?;
        let class = text(Field::ResourceClass, self.class, true)?;
        let subclass = text(Field::ResourceSubclass, self.subclass, false)?;
        let type_ = text(Field::ResourceType, self.type_, false)?;
        let metadata = self.metadata.unwrap_or(Ok(Vec::new()))?;
        let ttl_seconds = ttl(self.ttl)?;
        let creation_timestamp = timestamp(self.creation_timestamp)?;
        Ok(ParsedResource {
            id,
            site,
            endpoint,
            class,
            subclass,
            type_,
            ttl_seconds,
            creation_timestamp,
            metadata,
        })
    }
}

/// A string field: at most [`MAX_FIELD_BYTES`], no control characters, and
/// non-empty when `required` (absent or null is "" otherwise).
fn text(field: Field, value: Option<Value>, required: bool) -> Result<String, String> {
    let name = field.name();
    let text = match value {
        None | Some(Value::Null) if required => return Err(format!("{name} is missing")),
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("{name} is {}, not a string", kind(&other))),
    };
    if required && text.is_empty() {
        return Err(format!("{name} is empty"));
    }
    if text.len() > MAX_FIELD_BYTES {
        return Err(format!("{name} is longer than {MAX_FIELD_BYTES} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{name} contains a control character"));
    }
    Ok(text)
}

/// `resource_ttl`: whole seconds, as a number or a numeric string.
fn ttl(value: Option<Value>) -> Result<u64, String> {
    const BAD: &str = "resource_ttl is not a whole, non-negative number of seconds";
    let seconds = match value {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(seconds) => return Ok(seconds),
            None => n.as_f64(),
        },
        Some(Value::String(s)) => {
            let s = s.trim();
            match s.parse::<u64>() {
                Ok(seconds) => return Ok(seconds),
                Err(_) => s.parse::<f64>().ok(),
            }
        }
        Some(other) => {
            return Err(format!(
                "resource_ttl is {}, not a number of seconds",
                kind(&other)
            ));
        }
    };
    // 3600.0 is accepted; 1.5, -1, NaN and out-of-range values are not.
    match seconds {
        Some(x) if (0.0..U64_LIMIT).contains(&x) && x.fract() == 0.0 => Ok(x as u64),
        _ => Err(BAD.into()),
    }
}

/// 2^64 as a float: the first value too large for a u64.
const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;

/// `resource_creation_timestamp`: float seconds since the epoch (a number or
/// a numeric string); absent or null means "now".
fn timestamp(value: Option<Value>) -> Result<Option<(u64, u32)>, String> {
    const BAD: &str = "resource_creation_timestamp is not a non-negative number of seconds";
    let seconds = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(other) => {
            return Err(format!(
                "resource_creation_timestamp is {}, not a number",
                kind(&other)
            ));
        }
    };
    match seconds {
        Some(x) if (0.0..U64_LIMIT).contains(&x) => {
            let whole = x.trunc();
            // Float seconds carry microseconds at best; clamp rounding up.
            let nanos = (((x - whole) * 1e9).round() as u32).min(999_999_999);
            Ok(Some((whole as u64, nanos)))
        }
        _ => Err(BAD.into()),
    }
}

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

/// At most 64 bytes of `text`, for messages about hostile input.
fn shorten(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> String {
        format!(
            r#"{{"resource_id": "{id}", "resource_site": "lab1", "resource_endpoint": "127.0.0.1",
                "resource_class": "network", "resource_subclass": "switch", "resource_type": "juniper",
                "resource_metadata": {{"model": "qfx5100"}}}}"#
        )
    }

    fn parse_str(text: &str) -> (Vec<ParsedResource>, Vec<BadEntry>) {
        match parse(text.as_bytes()) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{e}"),
        }
    }

    /// The reason entry `index` was skipped, checking it is the only one.
    fn only_bad(text: &str) -> (usize, String) {
        let (kept, mut bad) = parse_str(text);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(kept.len(), 1, "{kept:?}");
        bad.remove(0)
    }

    /// One good entry, then `bad` (an entry with one key changed), so the
    /// bad one is index 1.
    fn with_bad(bad: &str) -> (usize, String) {
        only_bad(&format!("[{}, {bad}]", entry("good")))
    }

    /// `entry("x")` with `key` set to the JSON `value` (or removed if None).
    fn variant(key: &str, value: Option<&str>) -> String {
        let mut object: serde_json::Map<String, Value> = match serde_json::from_str(&entry("x")) {
            Ok(Value::Object(map)) => map,
            other => panic!("{other:?}"),
        };
        object.remove(key);
        let mut text = Value::Object(object).to_string();
        if let Some(value) = value {
            // Append the key as written (keeps numbers exactly as typed).
            text.pop();
            text.push_str(&format!(r#","{key}":{value}}}"#));
        }
        text
    }

    #[test]
    fn valid_file() {
        let text = r#"[
            {"resource_id": "sw1", "resource_site": "lab1", "resource_endpoint": "127.0.0.1",
             "resource_class": "network", "resource_subclass": "switch", "resource_type": "juniper",
             "resource_metadata": {"model": "qfx5100", "os_version": "21.4R3"},
             "resource_ttl": 3600, "resource_creation_timestamp": 1700000000.25,
             "resource_plugin": "panoptes_discovery", "resource_extra": [1, {"x": 2}]},
            {"resource_id": "host1", "resource_site": "lab2", "resource_endpoint": "127.0.0.2",
             "resource_class": "system", "resource_metadata": {}}
        ]"#;
        let (kept, bad) = parse_str(text);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            kept[0],
            ParsedResource {
                id: "sw1".into(),
                site: "lab1".into(),
                endpoint: "127.0.0.1".into(),
                class: "network".into(),
                subclass: "switch".into(),
                type_: "juniper".into(),
                ttl_seconds: 3600,
                creation_timestamp: Some((1_700_000_000, 250_000_000)),
                metadata: vec![
                    ("model".into(), "qfx5100".into()),
                    ("os_version".into(), "21.4R3".into()),
                ],
            }
        );
        // Absent subclass/type/ttl/timestamp.
        assert_eq!(kept[1].subclass, "");
        assert_eq!(kept[1].type_, "");
        assert_eq!(kept[1].ttl_seconds, 0);
        assert_eq!(kept[1].creation_timestamp, None);
        assert!(kept[1].metadata.is_empty());
    }

    #[test]
    fn empty_array_and_bom() {
        assert_eq!(parse_str("[]"), (vec![], vec![]));
        let with_bom = format!("\u{feff}[{}]", entry("a"));
        assert_eq!(parse_str(&with_bom).0.len(), 1);
    }

    #[test]
    fn not_an_array() {
        for text in [r#"{"resource_id": "a"}"#, "42", "\"x\"", "null"] {
            let error = parse(text.as_bytes()).err().map(|e| e.to_string());
            let error = error.unwrap_or_default();
            assert!(
                error.contains("a JSON array of resource objects") && error.contains("line 1"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn invalid_json_reports_line_and_column() {
        // entry() spans three lines, so the broken object is on line 5.
        let text = format!("[\n{},\n{{\"resource_id\": }}\n]", entry("a"));
        let error = parse(text.as_bytes()).err();
        assert_eq!(
            error.as_ref().map(|e| (e.line(), e.column())),
            Some((5, 17))
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.ends_with("at line 5 column 17"), "{message}");
        assert!(parse(b"[] []").is_err());
        assert!(parse(b"[").is_err());
        assert!(parse(b"[\xff]").is_err());
    }

    #[test]
    fn non_object_entries() {
        let text = format!(r#"[1, {}, "x", null, [1, [2]], true]"#, entry("a"));
        let (kept, bad) = parse_str(&text);
        assert_eq!(kept.len(), 1);
        let indexes: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [0, 2, 3, 4, 5]);
        assert_eq!(bad[0].1, "entry is a number, not an object");
        assert_eq!(bad[3].1, "entry is an array, not an object");
    }

    #[test]
    fn missing_and_empty_required_fields() {
        for key in [
            "resource_id",
            "resource_site",
            "resource_endpoint",
            "resource_class",
        ] {
            assert_eq!(
                with_bad(&variant(key, None)),
                (1, format!("{key} is missing"))
            );
            assert_eq!(
                with_bad(&variant(key, Some("null"))),
                (1, format!("{key} is missing"))
            );
            assert_eq!(
                with_bad(&variant(key, Some("\"\""))),
                (1, format!("{key} is empty"))
            );
            assert_eq!(
                with_bad(&variant(key, Some("5"))),
                (1, format!("{key} is a number, not a string"))
            );
        }
    }

    #[test]
    fn optional_fields_may_be_empty_or_absent() {
        for key in ["resource_subclass", "resource_type"] {
            for value in [None, Some("\"\""), Some("null")] {
                let (kept, bad) = parse_str(&format!("[{}]", variant(key, value)));
                assert!(bad.is_empty(), "{key} {value:?}: {bad:?}");
                assert_eq!(kept.len(), 1);
            }
            assert_eq!(
                with_bad(&variant(key, Some("[]"))),
                (1, format!("{key} is an array, not a string"))
            );
        }
    }

    #[test]
    fn long_and_control_characters() {
        let long = format!("\"{}\"", "a".repeat(257));
        assert_eq!(
            with_bad(&variant("resource_site", Some(&long))),
            (1, "resource_site is longer than 256 bytes".into())
        );
        let ok = format!("\"{}\"", "a".repeat(256));
        assert!(
            parse_str(&format!("[{}]", variant("resource_site", Some(&ok))))
                .1
                .is_empty()
        );
        assert_eq!(
            with_bad(&variant("resource_type", Some("\"jun\\tiper\""))),
            (1, "resource_type contains a control character".into())
        );
        assert_eq!(
            with_bad(&variant("resource_id", Some("\"a\\u0000b\""))),
            (1, "resource_id contains a control character".into())
        );
    }

    #[test]
    fn metadata_conversion() {
        let text = variant(
            "resource_metadata",
            Some(
                r#"{"snmp_port": 161, "ratio": 1.5, "managed": true, "Big_1": 12345678901234567890, "name": "x"}"#,
            ),
        );
        let (kept, bad) = parse_str(&format!("[{text}]"));
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            kept[0].metadata,
            vec![
                ("snmp_port".to_string(), "161".to_string()),
                ("ratio".to_string(), "1.5".to_string()),
                ("managed".to_string(), "true".to_string()),
                ("Big_1".to_string(), "12345678901234567890".to_string()),
                ("name".to_string(), "x".to_string()),
            ]
        );
        // Null metadata is no metadata.
        let (kept, _) = parse_str(&format!("[{}]", variant("resource_metadata", Some("null"))));
        assert!(kept[0].metadata.is_empty());
    }

    #[test]
    fn bad_metadata() {
        let cases = [
            (
                r#"{"a": {"b": 1}}"#,
                "resource_metadata.a is an object, not a string, number or boolean",
            ),
            (
                r#"{"a": [1]}"#,
                "resource_metadata.a is an array, not a string, number or boolean",
            ),
            (
                r#"{"a": null}"#,
                "resource_metadata.a is null, not a string, number or boolean",
            ),
            (
                r#"{"a": "x", "a": "y"}"#,
                "resource_metadata key a appears twice",
            ),
            (
                r#"{"os-version": "1"}"#,
                "resource_metadata key \"os-version\" is not [A-Za-z_][A-Za-z0-9_]* of at most 128 bytes",
            ),
            (
                r#"{"9a": "1"}"#,
                "resource_metadata key \"9a\" is not [A-Za-z_][A-Za-z0-9_]* of at most 128 bytes",
            ),
            (
                r#"{"": "1"}"#,
                "resource_metadata key \"\" is not [A-Za-z_][A-Za-z0-9_]* of at most 128 bytes",
            ),
            (r#"["a"]"#, "resource_metadata is an array, not an object"),
            (r#""a=b""#, "resource_metadata is a string, not an object"),
        ];
        for (metadata, reason) in cases {
            // A problem early in the object must not stop the rest being read.
            let (index, got) = with_bad(&variant("resource_metadata", Some(metadata)));
            assert_eq!((index, got.as_str()), (1, reason), "{metadata}");
        }
        let long_key = format!(r#"{{"{}": "1"}}"#, "k".repeat(129));
        assert!(
            with_bad(&variant("resource_metadata", Some(&long_key)))
                .1
                .contains("is not [A-Za-z_]")
        );
        let ok_key = format!(r#"{{"{}": "1"}}"#, "k".repeat(128));
        assert!(
            parse_str(&format!(
                "[{}]",
                variant("resource_metadata", Some(&ok_key))
            ))
            .1
            .is_empty()
        );
        let long_value = format!(r#"{{"k": "{}"}}"#, "v".repeat(1025));
        assert_eq!(
            with_bad(&variant("resource_metadata", Some(&long_value))),
            (1, "resource_metadata.k is longer than 1024 bytes".into())
        );
        let ok_value = format!(r#"{{"k": "{}"}}"#, "v".repeat(1024));
        assert!(
            parse_str(&format!(
                "[{}]",
                variant("resource_metadata", Some(&ok_value))
            ))
            .1
            .is_empty()
        );
    }

    #[test]
    fn ttl_as_number_or_string() {
        let ttl_of = |value: &str| -> Result<u64, String> {
            let (kept, bad) = parse_str(&format!("[{}]", variant("resource_ttl", Some(value))));
            match (kept.first(), bad.first()) {
                (Some(r), None) => Ok(r.ttl_seconds),
                (None, Some((_, reason))) => Err(reason.clone()),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(ttl_of("3600"), Ok(3600));
        assert_eq!(ttl_of("\"3600\""), Ok(3600));
        assert_eq!(ttl_of("\" 600 \""), Ok(600));
        assert_eq!(ttl_of("3600.0"), Ok(3600));
        assert_eq!(ttl_of("0"), Ok(0));
        assert_eq!(ttl_of("null"), Ok(0));
        for bad in [
            "-1", "1.5", "\"soon\"", "\"\"", "\"-5\"", "1e300", "\"NaN\"",
        ] {
            assert_eq!(
                ttl_of(bad),
                Err("resource_ttl is not a whole, non-negative number of seconds".into()),
                "{bad}"
            );
        }
        assert_eq!(
            ttl_of("true"),
            Err("resource_ttl is a boolean, not a number of seconds".into())
        );
    }

    #[test]
    fn creation_timestamp() {
        let ts_of = |value: &str| {
            let (kept, bad) = parse_str(&format!(
                "[{}]",
                variant("resource_creation_timestamp", Some(value))
            ));
            match (kept.first(), bad.first()) {
                (Some(r), None) => Ok(r.creation_timestamp),
                (None, Some((_, reason))) => Err(reason.clone()),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(ts_of("1700000000"), Ok(Some((1_700_000_000, 0))));
        assert_eq!(
            ts_of("1700000000.5"),
            Ok(Some((1_700_000_000, 500_000_000)))
        );
        assert_eq!(
            ts_of("\"1700000000.5\""),
            Ok(Some((1_700_000_000, 500_000_000)))
        );
        assert_eq!(ts_of("null"), Ok(None));
        assert!(ts_of("-1").is_err());
        assert!(ts_of("\"yesterday\"").is_err());
        assert!(ts_of("{}").is_err());
    }

    #[test]
    fn duplicates() {
        let text = format!(
            "[{}, {}, {}, {}]",
            entry("a"),
            entry("b"),
            entry("a"),
            entry("a")
        );
        let (kept, bad) = parse_str(&text);
        let ids: Vec<&str> = kept.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            bad,
            vec![
                (2, "duplicate resource_id of entry 0".to_string()),
                (3, "duplicate resource_id of entry 0".to_string()),
            ]
        );
        // A bad entry does not claim its id: the later good one is kept.
        let text = format!("[{}, {}]", variant("resource_site", None), entry("x"));
        let (kept, bad) = parse_str(&text);
        assert_eq!(kept.len(), 1);
        assert_eq!(bad, vec![(0, "resource_site is missing".to_string())]);
        // The same key twice in one entry.
        let text = format!(
            "[{}, {}]",
            entry("a"),
            variant("resource_site", Some("\"lab2\"")).replacen(
                '{',
                r#"{"resource_site": "lab1", "#,
                1
            )
        );
        assert_eq!(
            only_bad(&text),
            (1, "key resource_site appears twice".to_string())
        );
    }

    #[test]
    fn indexes_across_many_bad_entries() {
        let text = format!(
            "[{}, 7, {}, {}, {}]",
            entry("a"),
            variant("resource_class", None),
            entry("b"),
            variant("resource_ttl", Some("\"x\""))
        );
        let (kept, bad) = parse_str(&text);
        assert_eq!(kept.len(), 2);
        let indexes: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [1, 2, 4]);
    }

    #[test]
    fn entry_cap() {
        let at_cap = format!("[{}]", vec!["1"; MAX_ENTRIES].join(","));
        let (kept, bad) = parse_str(&at_cap);
        assert_eq!((kept.len(), bad.len()), (0, MAX_ENTRIES));
        let over = format!("[{}]", vec!["1"; MAX_ENTRIES + 1].join(","));
        let error = parse(over.as_bytes()).err().map(|e| e.to_string());
        let error = error.unwrap_or_default();
        assert!(
            error.contains("more than 100000 entries") && error.contains("line 1"),
            "{error}"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            resolve_path("resources.json"),
            Ok(PathBuf::from("/data/resources.json"))
        );
        assert_eq!(
            resolve_path(" inventory/./lab1.json "),
            Ok(PathBuf::from("/data/inventory/./lab1.json"))
        );
        for bad in [
            "/etc/passwd",
            "../x.json",
            "a/../../x",
            "a/..",
            "",
            ".",
            "./",
        ] {
            assert!(resolve_path(bad).is_err(), "{bad}");
        }
        assert!(
            resolve_path("a/../b")
                .err()
                .unwrap_or_default()
                .contains("\"..\"")
        );
    }
}
