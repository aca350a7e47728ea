//! The BER encoding of the SNMP messages the agent sends (RFC 3416 /
//! RFC 1157 over X.690's basic encoding rules), for the subset it needs.
//!
//! `snmp2` decodes requests (see [`crate::agent`]) but keeps its encoder
//! private, so replies are encoded here. Everything is definite-length and
//! minimal (the shortest length and integer forms), which is what every
//! decoder accepts. [`request`] builds requests for tests of the agent.

use crate::recording::RecordedValue;

pub const TAG_INTEGER: u8 = 0x02;
pub const TAG_OCTET_STRING: u8 = 0x04;
pub const TAG_NULL: u8 = 0x05;
pub const TAG_OID: u8 = 0x06;
pub const TAG_SEQUENCE: u8 = 0x30;
pub const TAG_IP_ADDRESS: u8 = 0x40;
pub const TAG_COUNTER32: u8 = 0x41;
pub const TAG_GAUGE32: u8 = 0x42;
pub const TAG_TIMETICKS: u8 = 0x43;
pub const TAG_OPAQUE: u8 = 0x44;
pub const TAG_COUNTER64: u8 = 0x46;
pub const TAG_NO_SUCH_OBJECT: u8 = 0x80;
pub const TAG_NO_SUCH_INSTANCE: u8 = 0x81;
pub const TAG_END_OF_MIB_VIEW: u8 = 0x82;
pub const PDU_GET: u8 = 0xa0;
pub const PDU_GET_NEXT: u8 = 0xa1;
pub const PDU_RESPONSE: u8 = 0xa2;
pub const PDU_SET: u8 = 0xa3;
pub const PDU_GET_BULK: u8 = 0xa5;

/// Appends a definite length.
fn push_length(out: &mut Vec<u8>, length: usize) {
    if length < 0x80 {
        out.push(length as u8);
        return;
    }
    let bytes = length.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// `tag`, length, `content`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_length(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// A constructed value from already encoded parts.
fn constructed(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let length = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(length + 6);
    out.push(tag);
    push_length(&mut out, length);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// Minimal two's complement.
fn signed(n: i64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (byte, next) = (bytes[start], bytes[start + 1]);
        let redundant = (byte == 0 && next & 0x80 == 0) || (byte == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}

/// An unsigned number as a non-negative INTEGER body (a leading zero when
/// the top bit is set).
fn unsigned(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut out = Vec::with_capacity(9);
    if bytes[skip] & 0x80 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&bytes[skip..]);
    out
}

fn push_base128(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 10];
    let mut count = 0;
    loop {
        digits[count] = (n & 0x7f) as u8;
        count += 1;
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    for i in (0..count).rev() {
        out.push(digits[i] | if i == 0 { 0 } else { 0x80 });
    }
}

/// An OBJECT IDENTIFIER body: the first two arcs as one sub-identifier.
fn oid_body(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(arcs.len() + 4);
    match arcs {
        [] => {}
        [first] => push_base128(&mut out, first.saturating_mul(40)),
        [first, second, rest @ ..] => {
            push_base128(&mut out, first.saturating_mul(40).saturating_add(*second));
            for arc in rest {
                push_base128(&mut out, *arc);
            }
        }
    }
    out
}

pub fn integer(n: i64) -> Vec<u8> {
    tlv(TAG_INTEGER, &signed(n))
}

pub fn oid(arcs: &[u64]) -> Vec<u8> {
    tlv(TAG_OID, &oid_body(arcs))
}

/// A value as sent in a varbind.
pub fn value(value: &RecordedValue) -> Vec<u8> {
    match value {
        RecordedValue::Integer(n) => integer(i64::from(*n)),
        RecordedValue::OctetString(bytes) => tlv(TAG_OCTET_STRING, bytes),
        RecordedValue::Null => tlv(TAG_NULL, &[]),
        RecordedValue::ObjectId(arcs) => oid(arcs),
        RecordedValue::IpAddress(octets) => tlv(TAG_IP_ADDRESS, octets),
        RecordedValue::Counter32(n) => tlv(TAG_COUNTER32, &unsigned(u64::from(*n))),
        RecordedValue::Gauge32(n) => tlv(TAG_GAUGE32, &unsigned(u64::from(*n))),
        RecordedValue::TimeTicks(n) => tlv(TAG_TIMETICKS, &unsigned(u64::from(*n))),
        RecordedValue::Opaque(bytes) => tlv(TAG_OPAQUE, bytes),
        RecordedValue::Counter64(n) => tlv(TAG_COUNTER64, &unsigned(*n)),
        RecordedValue::NoSuchObject => tlv(TAG_NO_SUCH_OBJECT, &[]),
        RecordedValue::NoSuchInstance => tlv(TAG_NO_SUCH_INSTANCE, &[]),
        RecordedValue::EndOfMibView => tlv(TAG_END_OF_MIB_VIEW, &[]),
    }
}

/// One `SEQUENCE { name, value }`.
pub fn varbind(arcs: &[u64], encoded_value: &[u8]) -> Vec<u8> {
    constructed(TAG_SEQUENCE, &[&oid(arcs), encoded_value])
}

/// A whole message: `SEQUENCE { version, community, PDU }` where the PDU
/// is `pdu_tag { request-id, a, b, SEQUENCE OF varbind }` (`a`, `b` are
/// error-status and error-index, or for GETBULK non-repeaters and
/// max-repetitions).
pub fn message(
    version: i64,
    community: &[u8],
    pdu_tag: u8,
    request_id: i32,
    a: i64,
    b: i64,
    varbinds: &[Vec<u8>],
) -> Vec<u8> {
    let parts: Vec<&[u8]> = varbinds.iter().map(Vec::as_slice).collect();
    let list = constructed(TAG_SEQUENCE, &parts);
    let pdu = constructed(
        pdu_tag,
        &[
            &integer(i64::from(request_id)),
            &integer(a),
            &integer(b),
            &list,
        ],
    );
    constructed(
        TAG_SEQUENCE,
        &[&integer(version), &tlv(TAG_OCTET_STRING, community), &pdu],
    )
}

/// Bytes the message envelope adds around a varbind list of `list_length`
/// bytes (upper bound: every length in its longest form used here).
pub fn envelope_bytes(community: &[u8]) -> usize {
    // SEQUENCE + version + community + PDU header + 3 INTEGERs (request id
    // up to 6 bytes, error status and index up to 6 each) + list header.
    6 + 3 + (community.len() + 6) + 6 + 3 * 6 + 6
}

/// A request, for tests: the OIDs with NULL values.
pub fn request(
    version: i64,
    community: &[u8],
    pdu_tag: u8,
    request_id: i32,
    a: i64,
    b: i64,
    oids: &[&[u64]],
) -> Vec<u8> {
    let null = tlv(TAG_NULL, &[]);
    let varbinds: Vec<Vec<u8>> = oids.iter().map(|o| varbind(o, &null)).collect();
    message(version, community, pdu_tag, request_id, a, b, &varbinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_twos_complement() {
        for (n, body) in [
            (0i64, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0, 0x80]),
            (-1, vec![0xff]),
            (-128, vec![0x80]),
            (-129, vec![0xff, 0x7f]),
            (i64::from(i32::MIN), vec![0x80, 0, 0, 0]),
        ] {
            assert_eq!(signed(n), body, "{n}");
        }
        assert_eq!(unsigned(0), vec![0]);
        assert_eq!(unsigned(0xff), vec![0, 0xff]);
        assert_eq!(unsigned(u64::MAX), [vec![0], vec![0xff; 8]].concat());
    }

    #[test]
    fn lengths_use_the_long_form_past_127() {
        assert_eq!(tlv(4, &[1; 127])[..2], [4, 127]);
        assert_eq!(tlv(4, &[1; 128])[..3], [4, 0x81, 128]);
        assert_eq!(tlv(4, &[1; 300])[..4], [4, 0x82, 1, 44]);
    }

    #[test]
    fn oids_combine_the_first_arcs_and_use_base_128() {
        assert_eq!(
            oid(&[1, 3, 6, 1, 4, 1, 2636, 4294967295]),
            vec![
                6, 12, 0x2b, 6, 1, 4, 1, 0x94, 0x4c, 0x8f, 0xff, 0xff, 0xff, 0x7f
            ]
        );
    }
}
