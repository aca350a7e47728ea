//! The recording-backed agent, judged by `snmp2`'s decoder and client (the
//! library vigil's SNMP capability uses), not by the agent's own encoder.

use std::sync::Arc;

use snmp2::{AsyncSession, MessageType, Oid, Pdu, Value};
use vigil_snmprec::ber::{self, PDU_GET, PDU_GET_BULK, PDU_GET_NEXT, PDU_SET};
use vigil_snmprec::{Agent, Recording, Responder};

const V1: i64 = 0;
const V2C: i64 = 1;

const ALL_TYPES: &str = "\
1.3.6.1.2.1.1.1.0|4|Linux box|with a pipe
1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.8072.3.2.10
1.3.6.1.2.1.1.3.0|67|4294967295
1.3.6.1.2.1.1.4.0|4x|00ff41
1.3.6.1.2.1.1.5.0|5|
1.3.6.1.2.1.1.6.0|2|-2147483648
1.3.6.1.2.1.1.7.0|64|10.0.0.1
1.3.6.1.2.1.1.8.0|64x|7f000001
1.3.6.1.2.1.1.9.0|65|4294967295
1.3.6.1.2.1.1.10.0|66|7
1.3.6.1.2.1.1.11.0|68x|0102
1.3.6.1.2.1.1.13.0|70|18446744073709551615
1.3.6.1.2.1.1.14.0|128|
1.3.6.1.2.1.1.15.0|129|
1.3.6.1.2.1.1.16.0|130|
1.3.6.1.2.1.2.2.1.2.1|4|eth0
1.3.6.1.2.1.2.2.1.2.2|4|eth1
1.3.6.1.2.1.2.2.1.3.1|2|6
1.3.6.1.2.1.2.2.1.3.2|2|24
1.3.6.1.2.1.2.2.1.10.1|65|100
1.3.6.1.2.1.2.2.1.10.2|65|200
";

fn responder(text: &str) -> Responder {
    let recording = Recording::parse("test.snmprec", text.as_bytes()).expect("recording");
    Responder::new(Arc::new(recording), "public")
}

fn arcs(text: &str) -> Vec<u64> {
    text.split('.').map(|p| p.parse().expect("arc")).collect()
}

fn show(value: &Value) -> String {
    match value {
        Value::Integer(n) => format!("INTEGER {n}"),
        Value::OctetString(b) => format!("STRING {b:02x?}"),
        Value::Null => "NULL".to_owned(),
        Value::ObjectIdentifier(o) => format!("OID {o}"),
        Value::IpAddress(a) => format!("IP {a:?}"),
        Value::Counter32(n) => format!("Counter32 {n}"),
        Value::Unsigned32(n) => format!("Gauge32 {n}"),
        Value::Timeticks(n) => format!("TimeTicks {n}"),
        Value::Opaque(b) => format!("Opaque {b:02x?}"),
        Value::Counter64(n) => format!("Counter64 {n}"),
        Value::NoSuchObject => "noSuchObject".to_owned(),
        Value::NoSuchInstance => "noSuchInstance".to_owned(),
        Value::EndOfMibView => "endOfMibView".to_owned(),
        other => format!("unexpected {other:?}"),
    }
}

/// (error status, error index, [(oid, value)]) of a reply.
type Decoded = (u32, u32, Vec<(String, String)>);

fn ask(responder: &Responder, version: i64, tag: u8, a: i64, b: i64, oids: &[&str]) -> Decoded {
    let oids: Vec<Vec<u64>> = oids.iter().map(|o| arcs(o)).collect();
    let refs: Vec<&[u64]> = oids.iter().map(Vec::as_slice).collect();
    let request = ber::request(version, b"public", tag, 4242, a, b, &refs);
    let reply = responder.answer(&request).expect("a reply");
    let pdu = Pdu::from_bytes(&reply).expect("snmp2 decodes the reply");
    assert_eq!(pdu.message_type, MessageType::Response);
    assert_eq!(pdu.req_id, 4242);
    assert_eq!(pdu.community, b"public");
    let varbinds = pdu
        .varbinds
        .clone()
        .map(|(oid, value)| (oid.to_id_string(), show(&value)))
        .collect();
    (pdu.error_status, pdu.error_index, varbinds)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(o, v)| ((*o).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn get_returns_every_value_type_as_recorded() {
    let agent = responder(ALL_TYPES);
    let oids: Vec<String> = (1..=16)
        .filter(|n| *n != 12)
        .map(|n| format!("1.3.6.1.2.1.1.{n}.0"))
        .collect();
    let refs: Vec<&str> = oids.iter().map(String::as_str).collect();
    let (status, _, varbinds) = ask(&agent, V2C, PDU_GET, 0, 0, &refs);
    assert_eq!(status, 0);
    let values: Vec<&str> = varbinds.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(
        values,
        [
            format!("STRING {:02x?}", b"Linux box|with a pipe").as_str(),
            "OID 1.3.6.1.4.1.8072.3.2.10",
            "TimeTicks 4294967295",
            "STRING [00, ff, 41]",
            "NULL",
            "INTEGER -2147483648",
            "IP [10, 0, 0, 1]",
            "IP [127, 0, 0, 1]",
            "Counter32 4294967295",
            "Gauge32 7",
            "Opaque [01, 02]",
            "Counter64 18446744073709551615",
            "noSuchObject",
            "noSuchInstance",
            "endOfMibView",
        ]
    );
    let names: Vec<&str> = varbinds.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(names, refs, "each varbind names the OID asked");
}

#[test]
fn get_of_a_missing_object_tells_instance_from_object() {
    let agent = responder(ALL_TYPES);
    let (status, _, varbinds) = ask(
        &agent,
        V2C,
        PDU_GET,
        0,
        0,
        &[
            "1.3.6.1.2.1.2.2.1.2.9",
            "1.3.6.1.2.1.1.12.0",
            "1.3.6.1.2.1.99.1.0",
        ],
    );
    assert_eq!(status, 0);
    assert_eq!(
        varbinds,
        pairs(&[
            // ifDescr has rows, just not 9.
            ("1.3.6.1.2.1.2.2.1.2.9", "noSuchInstance"),
            ("1.3.6.1.2.1.1.12.0", "noSuchObject"),
            ("1.3.6.1.2.1.99.1.0", "noSuchObject"),
        ])
    );
    // SNMPv1 has no exceptions: noSuchName at the first missing OID.
    let (status, index, varbinds) = ask(
        &agent,
        V1,
        PDU_GET,
        0,
        0,
        &["1.3.6.1.2.1.1.6.0", "1.3.6.1.2.1.1.13.0"],
    );
    assert_eq!((status, index), (2, 2), "a Counter64 does not exist in v1");
    assert_eq!(varbinds.len(), 2, "the request's varbinds come back");
}

#[test]
fn get_next_walks_in_oid_order_and_ends_with_end_of_mib_view() {
    let agent = responder(ALL_TYPES);
    let (status, _, varbinds) = ask(
        &agent,
        V2C,
        PDU_GET_NEXT,
        0,
        0,
        &[
            "1.3.6.1.2.1.1.9.0",
            // 13.0 is followed by recorded exceptions: not walked.
            "1.3.6.1.2.1.1.13.0",
            "1.3.6.1.2.1.2.2.1.10.2",
            "1.3.6.1.2.1.2.2.1.10.2.5",
            "1.3",
        ],
    );
    assert_eq!(status, 0);
    assert_eq!(
        varbinds,
        pairs(&[
            ("1.3.6.1.2.1.1.10.0", "Gauge32 7"),
            ("1.3.6.1.2.1.2.2.1.2.1", &format!("STRING {:02x?}", b"eth0")),
            ("1.3.6.1.2.1.2.2.1.10.2", "endOfMibView"),
            ("1.3.6.1.2.1.2.2.1.10.2.5", "endOfMibView"),
            (
                "1.3.6.1.2.1.1.1.0",
                &format!("STRING {:02x?}", b"Linux box|with a pipe")
            ),
        ])
    );
    // v1: past the end is noSuchName, and Counter64 objects are skipped.
    let (status, index, _) = ask(&agent, V1, PDU_GET_NEXT, 0, 0, &["1.3.6.1.2.1.2.2.1.10.2"]);
    assert_eq!((status, index), (2, 1));
    let (_, _, varbinds) = ask(&agent, V1, PDU_GET_NEXT, 0, 0, &["1.3.6.1.2.1.1.11.0"]);
    assert_eq!(varbinds[0].0, "1.3.6.1.2.1.2.2.1.2.1");
}

#[test]
fn get_bulk_honours_non_repeaters_and_max_repetitions() {
    let agent = responder(ALL_TYPES);
    // One non-repeater (sysUpTime's predecessor), two columns, 3 rows.
    let (status, _, varbinds) = ask(
        &agent,
        V2C,
        PDU_GET_BULK,
        1,
        3,
        &[
            "1.3.6.1.2.1.1.2.0",
            "1.3.6.1.2.1.2.2.1.2",
            "1.3.6.1.2.1.2.2.1.10",
        ],
    );
    assert_eq!(status, 0);
    assert_eq!(
        varbinds,
        pairs(&[
            ("1.3.6.1.2.1.1.3.0", "TimeTicks 4294967295"),
            ("1.3.6.1.2.1.2.2.1.2.1", &format!("STRING {:02x?}", b"eth0")),
            ("1.3.6.1.2.1.2.2.1.10.1", "Counter32 100"),
            ("1.3.6.1.2.1.2.2.1.2.2", &format!("STRING {:02x?}", b"eth1")),
            ("1.3.6.1.2.1.2.2.1.10.2", "Counter32 200"),
            // The first column runs on into the next one, as on an agent;
            // the second has reached the end of the view.
            ("1.3.6.1.2.1.2.2.1.3.1", "INTEGER 6"),
            ("1.3.6.1.2.1.2.2.1.10.2", "endOfMibView"),
        ])
    );
    // Every column at the end: the reply stops after that row instead of
    // repeating endOfMibView max-repetitions times.
    let (_, _, varbinds) = ask(
        &agent,
        V2C,
        PDU_GET_BULK,
        0,
        50,
        &["1.3.6.1.2.1.2.2.1.10.1"],
    );
    assert_eq!(
        varbinds,
        pairs(&[
            ("1.3.6.1.2.1.2.2.1.10.2", "Counter32 200"),
            ("1.3.6.1.2.1.2.2.1.10.2", "endOfMibView"),
        ])
    );
    // More non-repeaters than OIDs: all are non-repeaters.
    let (_, _, varbinds) = ask(&agent, V2C, PDU_GET_BULK, 5, 10, &["1.3.6.1.2.1.1.9.0"]);
    assert_eq!(varbinds, pairs(&[("1.3.6.1.2.1.1.10.0", "Gauge32 7")]));
    // max-repetitions 0: only the non-repeaters.
    let (_, _, varbinds) = ask(
        &agent,
        V2C,
        PDU_GET_BULK,
        1,
        0,
        &["1.3.6.1.2.1.1.9.0", "1.3.6.1.2.1.2.2.1.2"],
    );
    assert_eq!(varbinds.len(), 1);
}

#[test]
fn replies_never_exceed_one_datagram() {
    // 400 objects of 1000 bytes: a bulk of 1000 rows is cut to what fits.
    let mut text = String::new();
    for i in 1..=400 {
        text.push_str(&format!("1.3.6.1.4.1.99.1.{i}|4|{}\n", "a".repeat(1000)));
    }
    let agent = responder(&text);
    let request = ber::request(
        V2C,
        b"public",
        PDU_GET_BULK,
        1,
        0,
        1000,
        &[&arcs("1.3.6.1.4.1.99")],
    );
    let reply = agent.answer(&request).expect("reply");
    assert!(reply.len() <= 65_507, "{}", reply.len());
    let pdu = Pdu::from_bytes(&reply).expect("decodes");
    let rows = pdu.varbinds.clone().count();
    assert!(
        (60..=65).contains(&rows),
        "{rows} rows of ~1 KB fit in 64 KB"
    );
    // A GET that cannot fit is tooBig, with no varbinds.
    let oids: Vec<Vec<u64>> = (1..=80)
        .map(|i| arcs(&format!("1.3.6.1.4.1.99.1.{i}")))
        .collect();
    let refs: Vec<&[u64]> = oids.iter().map(Vec::as_slice).collect();
    let reply = agent
        .answer(&ber::request(V2C, b"public", PDU_GET, 2, 0, 0, &refs))
        .expect("reply");
    let pdu = Pdu::from_bytes(&reply).expect("decodes");
    assert_eq!(pdu.error_status, 1, "tooBig");
    assert_eq!(pdu.varbinds.clone().count(), 0);
}

#[test]
fn other_communities_v3_sets_and_garbage() {
    let agent = responder(ALL_TYPES);
    let oid = arcs("1.3.6.1.2.1.1.3.0");
    let wrong = ber::request(V2C, b"private", PDU_GET, 1, 0, 0, &[&oid]);
    assert!(agent.answer(&wrong).is_none(), "silent, as an agent is");
    let v3 = ber::request(3, b"public", PDU_GET, 1, 0, 0, &[&oid]);
    assert!(agent.answer(&v3).is_none());
    for garbage in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", &[0x30; 300]] {
        assert!(agent.answer(garbage).is_none(), "{garbage:?}");
    }
    let set = ber::request(V2C, b"public", PDU_SET, 1, 0, 0, &[&oid]);
    let pdu_bytes = agent.answer(&set).expect("reply");
    let pdu = Pdu::from_bytes(&pdu_bytes).expect("decodes");
    assert_eq!((pdu.error_status, pdu.error_index), (17, 1), "notWritable");
}

/// A whole walk of a real device recording over UDP with `snmp2`'s own
/// client: every object, in OID order, once, then endOfMibView.
#[tokio::test]
async fn a_real_client_walks_a_real_recording_over_udp() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/snmp/juniper-mx.snmprec");
    let recording = Recording::load(&path).expect("fixture");
    // The fixture repeats one ifAdminStatus row: served once.
    assert_eq!(recording.duplicates(), 1);
    let expected: Vec<String> = recording
        .objects()
        .iter()
        .map(|(o, _)| o.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
        .collect();
    let agent = Agent::start(Responder::new(Arc::new(recording), "public"))
        .await
        .expect("agent");
    let mut session = AsyncSession::new_v2c(agent.endpoint(), b"public", 1)
        .await
        .expect("session");
    let mut walked = Vec::new();
    let mut from = Oid::from(&[1, 3]).expect("oid");
    'walk: loop {
        let pdu = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            session.getbulk(&[&from], 0, 25),
        )
        .await
        .expect("answered in time")
        .expect("reply");
        assert_eq!(pdu.error_status, 0);
        let mut last = None;
        for (oid, value) in pdu.varbinds.clone() {
            if matches!(value, Value::EndOfMibView) {
                break 'walk;
            }
            walked.push(oid.to_id_string());
            last = Some(oid.to_owned());
        }
        from = last.expect("a non-empty reply");
    }
    assert_eq!(walked, expected);
    assert!(agent.requests() as usize >= expected.len() / 25);
    // The community is checked over the wire too: another one times out.
    let mut stranger = AsyncSession::new_v2c(agent.endpoint(), b"nope", 1)
        .await
        .expect("session");
    let oid = Oid::from(&[1, 3, 6, 1, 2, 1, 1, 3, 0]).expect("oid");
    let silent =
        tokio::time::timeout(std::time::Duration::from_millis(300), stranger.get(&oid)).await;
    assert!(silent.is_err(), "no reply to another community");
}
