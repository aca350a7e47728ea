//! snmpsim's `.snmprec` format: one object per line, `OID|TYPE|VALUE`.
//!
//! `TYPE` is the BER tag number of the value's type (snmpsim's "snmprec"
//! grammar), optionally followed by `x` when `VALUE` is hex-encoded:
//!
//! | tag | type | value |
//! |---|---|---|
//! | 2 | INTEGER (Integer32) | decimal, -2147483648 to 2147483647 |
//! | 4 | OCTET STRING | the text as it stands (any bytes), or hex with `4x` |
//! | 5 | NULL | empty |
//! | 6 | OBJECT IDENTIFIER | dotted decimal |
//! | 64 | IpAddress | dotted quad, the 4 octets themselves, or 8 hex digits with `64x` |
//! | 65 | Counter32 | 0 to 4294967295 |
//! | 66 | Gauge32 (Unsigned32) | 0 to 4294967295 |
//! | 67 | TimeTicks | 0 to 4294967295 |
//! | 68 | Opaque | the text, or hex with `68x` |
//! | 70 | Counter64 | 0 to 18446744073709551615 |
//! | 128, 129, 130 | noSuchObject, noSuchInstance, endOfMibView | empty |
//!
//! Blank lines and lines starting with `#` are skipped; `\r\n` line ends
//! are accepted; `VALUE` may itself contain `|` (only the first two split).
//! snmpsim's variation modules (`TYPE:MODULE`) are refused: they compute
//! values, and a recording here is data.
//!
//! A recording is untrusted input: every problem is a [`RecordingError`]
//! naming the file and the line, and sizes are bounded ([`MAX_FILE_BYTES`],
//! [`MAX_VALUE_BYTES`], 128 sub-identifiers per OID as RFC 2578 says).
//!
//! **Order.** The objects are kept sorted by OID, whatever the order of
//! the lines: a recording is served as an agent's MIB view, in which
//! GETNEXT always moves forward. When an OID appears twice, the later line
//! wins. Both are counted ([`Recording::out_of_order`],
//! [`Recording::duplicates`]) so a tool can say that the file was not a
//! clean walk. (snmpsim 1.2 differs on such files: it answers GETNEXT with
//! the next *line* of the file, so its walks of an unsorted recording jump
//! backwards; of a sorted one, the two serve the same objects.)

use std::path::Path;

/// Largest recording read (a full walk of a big router is a few MB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Largest value of one object: more than one UDP datagram could carry is
/// no value an agent can send.
pub const MAX_VALUE_BYTES: usize = 65_000;
/// Most sub-identifiers in an OID (RFC 2578).
pub const MAX_OID_ARCS: usize = 128;

/// An OID as its sub-identifiers.
pub type Oid = Vec<u64>;

/// A recorded value, typed as the agent would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedValue {
    Integer(i32),
    OctetString(Vec<u8>),
    Null,
    ObjectId(Oid),
    IpAddress([u8; 4]),
    Counter32(u32),
    Gauge32(u32),
    TimeTicks(u32),
    Opaque(Vec<u8>),
    Counter64(u64),
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

impl RecordedValue {
    /// An SNMPv2 exception recorded in place of a value (tags 128-130):
    /// returned to a GET of its OID, never part of a walk.
    pub fn is_exception(&self) -> bool {
        matches!(
            self,
            RecordedValue::NoSuchObject
                | RecordedValue::NoSuchInstance
                | RecordedValue::EndOfMibView
        )
    }
}

/// Why a recording cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {size} bytes; a recording may have at most {MAX_FILE_BYTES} bytes")]
    TooLarge { file: String, size: u64 },
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: no objects (only blank lines and comments)")]
    Empty { file: String },
}

/// A device recording: its objects in OID order.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Sorted by OID, each OID once.
    objects: Vec<(Oid, RecordedValue)>,
    duplicates: usize,
    out_of_order: usize,
}

impl Recording {
    /// Reads and parses `path` (at most [`MAX_FILE_BYTES`], read through one
    /// handle so the size checked is the size read).
    pub fn load(path: &Path) -> Result<Recording, RecordingError> {
        use std::io::Read;
        let file = path.display().to_string();
        let read_error = |source| RecordingError::Read {
            file: file.clone(),
            source,
        };
        let handle = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        handle
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(RecordingError::TooLarge {
                file,
                size: bytes.len() as u64,
            });
        }
        Recording::parse(&file, &bytes)
    }

    /// Parses recording text; `file` names it in errors.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Recording, RecordingError> {
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(RecordingError::TooLarge {
                file: file.to_owned(),
                size: bytes.len() as u64,
            });
        }
        let mut objects: Vec<(Oid, RecordedValue)> = Vec::new();
        let mut out_of_order = 0;
        for (number, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) || line.first() == Some(&b'#') {
                continue;
            }
            let (oid, value) = parse_line(line).map_err(|message| RecordingError::Line {
                file: file.to_owned(),
                line: number + 1,
                message,
            })?;
            if objects.last().is_some_and(|(last, _)| *last > oid) {
                out_of_order += 1;
            }
            objects.push((oid, value));
        }
        if objects.is_empty() {
            return Err(RecordingError::Empty {
                file: file.to_owned(),
            });
        }
        // Stable: among equal OIDs the later line stays last, and wins.
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        let before = objects.len();
        let mut deduplicated: Vec<(Oid, RecordedValue)> = Vec::with_capacity(before);
        for (oid, value) in objects {
            match deduplicated.last_mut() {
                Some(last) if last.0 == oid => last.1 = value,
                _ => deduplicated.push((oid, value)),
            }
        }
        let duplicates = before - deduplicated.len();
        Ok(Recording {
            objects: deduplicated,
            duplicates,
            out_of_order,
        })
    }

    /// Objects in OID order.
    pub fn objects(&self) -> &[(Oid, RecordedValue)] {
        &self.objects
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Lines whose OID repeated an earlier line's (the later one is kept).
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// Lines whose OID came before the previous line's in the file.
    pub fn out_of_order(&self) -> usize {
        self.out_of_order
    }

    /// The object at exactly `oid`.
    pub fn get(&self, oid: &[u64]) -> Option<&RecordedValue> {
        self.objects
            .binary_search_by(|(o, _)| o.as_slice().cmp(oid))
            .ok()
            .map(|i| &self.objects[i].1)
    }

    /// The first object after `oid` in OID order that is part of the MIB
    /// view (recorded exceptions are not objects an agent walks).
    pub fn next_after(&self, oid: &[u64]) -> Option<&(Oid, RecordedValue)> {
        let start = self.objects.partition_point(|(o, _)| o.as_slice() <= oid);
        self.objects[start..]
            .iter()
            .find(|(_, v)| !v.is_exception())
    }

    /// Whether some recorded object lies strictly under `prefix`.
    pub fn has_under(&self, prefix: &[u64]) -> bool {
        let start = self
            .objects
            .partition_point(|(o, _)| o.as_slice() <= prefix);
        self.objects
            .get(start)
            .is_some_and(|(o, _)| o.starts_with(prefix))
    }
}

/// Parses dotted decimal (leading dot allowed), RFC 2578 bounds.
pub fn parse_oid(text: &str) -> Result<Oid, String> {
    let body = text.strip_prefix('.').unwrap_or(text);
    if body.is_empty() {
        return Err("empty OID".to_owned());
    }
    if body.split('.').count() > MAX_OID_ARCS {
        return Err(format!("OID has more than {MAX_OID_ARCS} sub-identifiers"));
    }
    let arcs = body
        .split('.')
        .map(|part| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("OID {text:?}: {part:?} is not a number"));
            }
            part.parse::<u32>()
                .map(u64::from)
                .map_err(|_| format!("OID {text:?}: {part} is more than 4294967295"))
        })
        .collect::<Result<Oid, String>>()?;
    if arcs.len() < 2 {
        return Err(format!("OID {text:?}: needs at least 2 sub-identifiers"));
    }
    if arcs[0] > 2 || (arcs[0] < 2 && arcs[1] >= 40) {
        return Err(format!(
            "OID {text:?}: not a valid object identifier (first part 0, 1 or 2; second below 40 unless the first is 2)"
        ));
    }
    Ok(arcs)
}

fn parse_line(line: &[u8]) -> Result<(Oid, RecordedValue), String> {
    let mut parts = line.splitn(3, |b| *b == b'|');
    let (Some(oid), Some(tag), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected OID|TYPE|VALUE".to_owned());
    };
    let oid = std::str::from_utf8(oid).map_err(|_| "the OID is not text".to_owned())?;
    let oid = parse_oid(oid.trim())?;
    let tag = std::str::from_utf8(tag).map_err(|_| "the type is not text".to_owned())?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value of {} bytes; at most {MAX_VALUE_BYTES} fit in an SNMP reply",
            value.len()
        ));
    }
    Ok((oid, parse_value(tag.trim(), value)?))
}

fn number<T: std::str::FromStr>(value: &[u8], what: &str) -> Result<T, String> {
    let text = std::str::from_utf8(value).unwrap_or("").trim();
    text.parse()
        .map_err(|_| format!("{:?} is not {what}", String::from_utf8_lossy(value)))
}

fn unhex(value: &[u8]) -> Result<Vec<u8>, String> {
    let text: Vec<u8> = value
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if !text.len().is_multiple_of(2) {
        return Err("hex value with an odd number of digits".to_owned());
    }
    text.chunks(2)
        .map(|pair| {
            let digit = |b: u8| (b as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err(format!("{:?} is not hex", String::from_utf8_lossy(pair))),
            }
        })
        .collect()
}

fn parse_value(tag: &str, value: &[u8]) -> Result<RecordedValue, String> {
    if tag.contains(':') {
        return Err(format!(
            "type {tag:?}: snmpsim variation modules (TYPE:MODULE) are not supported; record plain values"
        ));
    }
    let (number_tag, hex) = match tag.strip_suffix('x') {
        Some(rest) => (rest, true),
        None => (tag, false),
    };
    let empty = |v: RecordedValue| {
        if value.iter().all(u8::is_ascii_whitespace) {
            Ok(v)
        } else {
            Err(format!("type {tag} takes no value"))
        }
    };
    let value_text = || -> Result<Vec<u8>, String> {
        if hex {
            unhex(value)
        } else {
            Ok(value.to_vec())
        }
    };
    let no_hex = || {
        if hex {
            Err(format!(
                "type {tag}: hex values (`x`) are for types 4, 64 and 68 only"
            ))
        } else {
            Ok(())
        }
    };
    match number_tag {
        "2" => {
            no_hex()?;
            Ok(RecordedValue::Integer(number(
                value,
                "an INTEGER (-2147483648 to 2147483647)",
            )?))
        }
        "4" => Ok(RecordedValue::OctetString(value_text()?)),
        "5" => {
            no_hex()?;
            empty(RecordedValue::Null)
        }
        "6" => {
            no_hex()?;
            let text = std::str::from_utf8(value).map_err(|_| "the OID is not text".to_owned())?;
            Ok(RecordedValue::ObjectId(parse_oid(text.trim())?))
        }
        "64" => {
            let text = std::str::from_utf8(value).unwrap_or("").trim();
            let octets = if hex {
                unhex(value)?
            } else if let Ok(address) = text.parse::<std::net::Ipv4Addr>() {
                address.octets().to_vec()
            } else if value.len() == 4 {
                // snmpsim (pysnmp) also takes the 4 octets themselves.
                value.to_vec()
            } else {
                return Err(format!(
                    "{:?} is not an IPv4 address",
                    String::from_utf8_lossy(value)
                ));
            };
            let octets: [u8; 4] = octets
                .try_into()
                .map_err(|_| "an IpAddress is 4 bytes".to_owned())?;
            Ok(RecordedValue::IpAddress(octets))
        }
        "65" => {
            no_hex()?;
            Ok(RecordedValue::Counter32(number(value, "a Counter32")?))
        }
        "66" => {
            no_hex()?;
            Ok(RecordedValue::Gauge32(number(value, "a Gauge32")?))
        }
        "67" => {
            no_hex()?;
            Ok(RecordedValue::TimeTicks(number(value, "a TimeTicks")?))
        }
        "68" => Ok(RecordedValue::Opaque(value_text()?)),
        "70" => {
            no_hex()?;
            Ok(RecordedValue::Counter64(number(value, "a Counter64")?))
        }
        "128" => {
            no_hex()?;
            empty(RecordedValue::NoSuchObject)
        }
        "129" => {
            no_hex()?;
            empty(RecordedValue::NoSuchInstance)
        }
        "130" => {
            no_hex()?;
            empty(RecordedValue::EndOfMibView)
        }
        _ => Err(format!(
            "unknown type {tag:?} (known: 2, 4, 5, 6, 64, 65, 66, 67, 68, 70, 128, 129, 130; `x` after 4, 64, 68 for hex)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Recording, RecordingError> {
        Recording::parse("dev.snmprec", text.as_bytes())
    }

    #[test]
    fn every_value_type() {
        let recording = parse(
            "1.3.6.1.2.1.1.1.0|4|Linux box|with a pipe\r\n\
             # a comment\n\
             \n\
             1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.8072.3.2.10\n\
             1.3.6.1.2.1.1.3.0|67|4294967295\n\
             1.3.6.1.2.1.1.4.0|4x|00ff41\n\
             1.3.6.1.2.1.1.5.0|5|\n\
             1.3.6.1.2.1.1.6.0|2|-2147483648\n\
             1.3.6.1.2.1.1.7.0|64|10.0.0.1\n\
             1.3.6.1.2.1.1.8.0|64x|7f000001\n\
             1.3.6.1.2.1.1.8.1|64|J}M}\n\
             1.3.6.1.2.1.1.9.0|65|4294967295\n\
             1.3.6.1.2.1.1.10.0|66|7\n\
             1.3.6.1.2.1.1.11.0|68x|0102\n\
             1.3.6.1.2.1.1.12.0|68|op\n\
             1.3.6.1.2.1.1.13.0|70|18446744073709551615\n\
             1.3.6.1.2.1.1.14.0|128|\n\
             1.3.6.1.2.1.1.15.0|129|\n\
             1.3.6.1.2.1.1.16.0|130|\n",
        )
        .expect("parses");
        let values: Vec<&RecordedValue> = recording.objects().iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            vec![
                &RecordedValue::OctetString(b"Linux box|with a pipe".to_vec()),
                &RecordedValue::ObjectId(vec![1, 3, 6, 1, 4, 1, 8072, 3, 2, 10]),
                &RecordedValue::TimeTicks(u32::MAX),
                &RecordedValue::OctetString(vec![0, 0xff, 0x41]),
                &RecordedValue::Null,
                &RecordedValue::Integer(i32::MIN),
                &RecordedValue::IpAddress([10, 0, 0, 1]),
                &RecordedValue::IpAddress([127, 0, 0, 1]),
                &RecordedValue::IpAddress(*b"J}M}"),
                &RecordedValue::Counter32(u32::MAX),
                &RecordedValue::Gauge32(7),
                &RecordedValue::Opaque(vec![1, 2]),
                &RecordedValue::Opaque(b"op".to_vec()),
                &RecordedValue::Counter64(u64::MAX),
                &RecordedValue::NoSuchObject,
                &RecordedValue::NoSuchInstance,
                &RecordedValue::EndOfMibView,
            ]
        );
        assert_eq!(recording.duplicates(), 0);
        assert_eq!(recording.out_of_order(), 0);
    }

    #[test]
    fn malformed_lines_are_located() {
        for (text, line, needle) in [
            (
                "1.3.6.1.2.1.1.1.0|4|ok\n1.3.6.1.2.1.1.2.0|2|x\n",
                2,
                "not an INTEGER",
            ),
            ("1.3.6.1.2.1.1.1.0|2|2147483648\n", 1, "not an INTEGER"),
            ("1.3.6.1.2.1.1.1.0|65|-1\n", 1, "not a Counter32"),
            (
                "1.3.6.1.2.1.1.1.0|70|18446744073709551616\n",
                1,
                "not a Counter64",
            ),
            ("\n\n1.3.6.1.2.1.1.1.0|4x|abc\n", 3, "odd number"),
            ("1.3.6.1.2.1.1.1.0|4x|zz\n", 1, "not hex"),
            ("1.3.6.1.2.1.1.1.0|2x|01\n", 1, "hex values"),
            ("1.3.6.1.2.1.1.1.0|99|1\n", 1, "unknown type"),
            (
                "1.3.6.1.2.1.1.1.0|2:numeric|min=1\n",
                1,
                "variation modules",
            ),
            ("1.3.6.1.2.1.1.1.0 only\n", 1, "expected OID|TYPE|VALUE"),
            ("1.3.x.1|4|a\n", 1, "not a number"),
            (
                "1.3.6.1.2.1.1.1.4294967296|4|a\n",
                1,
                "more than 4294967295",
            ),
            ("1.40.1|4|a\n", 1, "not a valid object identifier"),
            ("1.3.6.1.2.1.1.1.0|64|10.0.0\n", 1, "not an IPv4 address"),
            ("1.3.6.1.2.1.1.1.0|64x|0a0000\n", 1, "4 bytes"),
            ("1.3.6.1.2.1.1.1.0|5|something\n", 1, "takes no value"),
            ("1.3.6.1.2.1.1.1.0|6|1.3.x\n", 1, "not a number"),
        ] {
            let error = parse(text).expect_err(text).to_string();
            let prefix = format!("dev.snmprec:{line}: ");
            assert!(error.starts_with(&prefix), "{text:?}: {error}");
            assert!(error.contains(needle), "{text:?}: {error}");
        }
        let long_oid = format!("{}|4|a\n", vec!["1"; 129].join("."));
        assert!(
            parse(&long_oid)
                .expect_err("long")
                .to_string()
                .contains("more than 128")
        );
        let big = format!("1.3.6.1.2.1.1.1.0|4|{}\n", "a".repeat(MAX_VALUE_BYTES + 1));
        assert!(
            parse(&big)
                .expect_err("big")
                .to_string()
                .contains("at most")
        );
        assert!(matches!(
            parse("# nothing\n\n"),
            Err(RecordingError::Empty { .. })
        ));
    }

    #[test]
    fn served_sorted_by_oid_and_the_later_duplicate_wins() {
        let recording = parse(
            "1.3.6.1.2.1.1.5.0|4|five\n\
             1.3.6.1.2.1.1.10.0|4|ten\n\
             1.3.6.1.2.1.1.3.0|67|3\n\
             1.3.6.1.2.1.1.5.0|4|five again\n\
             1.3.6.1.2.1.1.5|4|parent\n",
        )
        .expect("parses");
        let oids: Vec<String> = recording
            .objects()
            .iter()
            .map(|(o, _)| o.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
            .collect();
        // Numeric, not textual, order: 5 < 5.0 < 10.
        assert_eq!(
            oids,
            [
                "1.3.6.1.2.1.1.3.0",
                "1.3.6.1.2.1.1.5",
                "1.3.6.1.2.1.1.5.0",
                "1.3.6.1.2.1.1.10.0"
            ]
        );
        assert_eq!(
            recording.get(&[1, 3, 6, 1, 2, 1, 1, 5, 0]),
            Some(&RecordedValue::OctetString(b"five again".to_vec()))
        );
        assert_eq!(recording.duplicates(), 1);
        assert_eq!(recording.out_of_order(), 2);
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("huge.snmprec");
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(MAX_FILE_BYTES + 1).expect("sparse file");
        assert!(matches!(
            Recording::load(&path),
            Err(RecordingError::TooLarge { .. })
        ));
        let missing = Recording::load(&dir.path().join("absent.snmprec"))
            .expect_err("missing")
            .to_string();
        assert!(missing.contains("absent.snmprec"), "{missing}");
    }
}
