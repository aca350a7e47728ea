//! The host's SNMP capability against real agents (Debian's `snmpd`,
//! `snmpsim`) and against broken ones written here, since no real server
//! misbehaves on purpose. Results are checked against Debian's
//! `snmpbulkwalk` as an independent oracle.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vigil_host::capabilities::snmp::{
    RequestOptions, SnmpError, SnmpRun, SnmpService, Value, Varbind,
};
use vigil_host::model::Resource;
use vigil_host::site::SiteConfig;
use vigil_tests::snmp_servers::{
    Snmpd, SnmpdConfig, Snmpsim, V3User, WalkedValue, fixtures_dir, snmpbulkwalk,
};

const IF_TABLE: &str = "1.3.6.1.2.1.2.2";
const IF_X_TABLE: &str = "1.3.6.1.2.1.31.1.1";
const SYS_UPTIME: &str = "1.3.6.1.2.1.1.3.0";

fn quick() -> RequestOptions {
    RequestOptions {
        timeout: Duration::from_millis(300),
        retries: 1,
        max_repetitions: 25,
    }
}

/// A service configured the way an operator would: a site file.
fn service(snmp_section: &str) -> Arc<SnmpService> {
    let text = format!("[site]\nname = \"lab\"\n{snmp_section}");
    let site = SiteConfig::parse(Path::new("/etc/vigil/site.toml"), &text).expect("site config");
    Arc::new(SnmpService::new(site.snmp))
}

fn v2c(community: &str) -> String {
    format!(
        "[[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"2c\"\ncommunity = \"{community}\"\n"
    )
}

fn run(service: &Arc<SnmpService>, id: &str, endpoint: &str, options: RequestOptions) -> SnmpRun {
    SnmpRun::new(service.clone(), Resource::named(id, endpoint), options)
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// Whether our typed value is what net-snmp printed.
fn same_value(ours: &Value, oracle: &WalkedValue) -> bool {
    let number = |n: String| n == oracle.value;
    match ours {
        Value::Integer(v) => oracle.kind == "INTEGER" && number(v.to_string()),
        Value::Counter32(v) => oracle.kind == "Counter32" && number(v.to_string()),
        Value::Counter64(v) => oracle.kind == "Counter64" && number(v.to_string()),
        Value::Gauge32(v) => {
            (oracle.kind == "Gauge32" || oracle.kind == "UInteger32") && number(v.to_string())
        }
        Value::Timeticks(v) => oracle.kind == "Timeticks" && number(v.to_string()),
        Value::OctetString(bytes) => oracle.octets().as_deref() == Some(bytes.as_slice()),
        Value::ObjectId(oid) => oracle.kind == "OID" && oracle.value == *oid,
        Value::IpAddress((a, b, c, d)) => {
            oracle.kind == "IpAddress" && oracle.value == format!("{a}.{b}.{c}.{d}")
        }
        Value::Opaque(_) => oracle.kind == "OPAQUE",
        Value::Null => oracle.kind == "NULL",
        Value::NoSuchObject | Value::NoSuchInstance | Value::EndOfMibView => false,
    }
}

fn assert_matches_oracle(ours: &[Varbind], oracle: &[WalkedValue], what: &str) {
    assert_eq!(
        ours.len(),
        oracle.len(),
        "{what}: {} varbinds, snmpbulkwalk saw {}",
        ours.len(),
        oracle.len()
    );
    for (mine, theirs) in ours.iter().zip(oracle) {
        assert_eq!(mine.oid, theirs.oid, "{what}: OID order differs");
        assert!(
            same_value(&mine.value, theirs),
            "{what}: {} is {:?}, snmpbulkwalk says {} {:?}",
            mine.oid,
            mine.value,
            theirs.kind,
            theirs.value
        );
    }
}

#[tokio::test]
async fn walks_real_device_recordings_exactly_like_snmpbulkwalk() {
    let files: Vec<(String, std::path::PathBuf)> = ["juniper-mx", "cisco", "generic-switch"]
        .iter()
        .map(|name| {
            (
                name.to_string(),
                fixtures_dir().join(format!("{name}.snmprec")),
            )
        })
        .collect();
    let sim = Snmpsim::start(&files).expect("snmpsim");
    for (community, _) in &files {
        let service = service(&v2c(community));
        for subtree in [IF_TABLE, IF_X_TABLE] {
            let mut snmp = run(&service, community, &sim.endpoint(), quick());
            let ours = snmp.walk(subtree.to_owned(), soon()).await.expect("walk");
            let oracle = snmpbulkwalk(sim.port, community, subtree).expect("oracle");
            assert!(!ours.is_empty(), "{community} {subtree}: empty walk");
            assert_matches_oracle(&ours, &oracle, &format!("{community} {subtree}"));
            // Every varbind received, in the subtree or past its end, is
            // accounted against the run's budget.
            assert!(
                snmp.summary.varbinds as usize >= ours.len(),
                "{:?}",
                snmp.summary
            );
            assert_eq!(snmp.summary.failed_calls, 0);
        }
    }
}

#[tokio::test]
async fn snmpd_v2c_v1_and_v3_auth_priv() {
    // The v3 authentication password comes from an environment variable.
    // Setting one is `unsafe` in edition 2024 (and the workspace forbids
    // `unsafe`), so the test uses one cargo sets for every test process.
    let user = V3User {
        name: "vigil".to_owned(),
        auth_password: std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME"),
        privacy_password: "priv-secret-1".to_owned(),
    };
    let agent = Snmpd::start(SnmpdConfig {
        communities: vec!["lab-ro".to_owned()],
        v3_users: vec![user.clone()],
        extra_lines: Vec::new(),
    })
    .expect("snmpd");

    // v2c: the system group, compared with the oracle (sysUpTime moves, so
    // compare OIDs and types there and everything else exactly).
    let v2 = service(&v2c("lab-ro"));
    let mut snmp = run(&v2, "lab", &agent.endpoint(), quick());
    let ours = snmp
        .walk("1.3.6.1.2.1.1".to_owned(), soon())
        .await
        .expect("walk");
    let oracle = snmpbulkwalk(agent.port, "lab-ro", "1.3.6.1.2.1.1").expect("oracle");
    assert_eq!(
        ours.iter().map(|v| v.oid.as_str()).collect::<Vec<_>>(),
        oracle.iter().map(|v| v.oid.as_str()).collect::<Vec<_>>()
    );
    for (mine, theirs) in ours.iter().zip(&oracle) {
        if mine.oid != SYS_UPTIME {
            assert!(same_value(&mine.value, theirs), "{mine:?} vs {theirs:?}");
        }
    }

    // v1 has no GETBULK: the walk falls back to GETNEXT, same objects.
    let v1 = service(
        "[[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"1\"\ncommunity = \"lab-ro\"\n",
    );
    let mut snmp = run(&v1, "lab", &agent.endpoint(), quick());
    let walked_v1 = snmp
        .walk("1.3.6.1.2.1.1".to_owned(), soon())
        .await
        .expect("v1 walk");
    assert_eq!(walked_v1.len(), ours.len());
    assert_eq!(
        snmp.summary.requests as usize,
        ours.len() + 1,
        "one GETNEXT per object"
    );
    // A v1 GET of a missing object: noSuchName, reported per OID.
    let got = snmp
        .get(
            vec![SYS_UPTIME.to_owned(), "1.3.6.1.2.1.1.99.0".to_owned()],
            soon(),
        )
        .await
        .expect("v1 get");
    assert!(
        matches!(got[0].value, Value::Timeticks(t) if t > 0),
        "{got:?}"
    );
    assert_eq!(got[1].value, Value::NoSuchInstance);

    // v3 authPriv, SHA + AES, secrets from the environment and a file.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("priv"),
        format!("{}\n", user.privacy_password),
    )
    .expect("write");
    let variable = "CARGO_PKG_NAME";
    let site_file = dir.path().join("site.toml");
    let text = format!(
        "[site]\nname = \"lab\"\n[[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nfilter = 'resource_id = \"secure\"'\nversion = \"3\"\nuser = \"vigil\"\nauth_protocol = \"sha\"\nauth_password = {{ env = \"{variable}\" }}\nprivacy_protocol = \"aes\"\nprivacy_password = {{ file = \"priv\" }}\n"
    );
    let site = SiteConfig::parse(&site_file, &text).expect("site");
    let shown = format!("{site:?}");
    assert!(
        !shown.contains("priv-secret-1") && !shown.contains(&user.auth_password),
        "a secret leaked into Debug"
    );
    let v3 = Arc::new(SnmpService::new(site.snmp));
    let mut snmp = run(&v3, "secure", &agent.endpoint(), quick());
    let got = snmp
        .get(
            vec![SYS_UPTIME.to_owned(), "1.3.6.1.2.1.1.5.0".to_owned()],
            soon(),
        )
        .await
        .expect("v3 get");
    assert!(matches!(got[0].value, Value::Timeticks(_)), "{got:?}");
    assert!(matches!(&got[1].value, Value::OctetString(name) if !name.is_empty()));
    let walked = snmp
        .walk("1.3.6.1.2.1.1".to_owned(), soon())
        .await
        .expect("v3 walk");
    assert_eq!(walked.len(), ours.len());

    // No credential matches another resource: not granted, and it says why.
    let mut other = run(&v3, "elsewhere", &agent.endpoint(), quick());
    let error = other
        .get(vec![SYS_UPTIME.to_owned()], soon())
        .await
        .expect_err("no credential");
    assert!(
        matches!(&error, SnmpError::NotGranted(m) if m.contains("elsewhere")),
        "{error:?}"
    );
}

#[tokio::test]
async fn wrong_credentials_give_the_right_failure() {
    let user = V3User {
        name: "vigil".to_owned(),
        auth_password: "auth-secret-1".to_owned(),
        privacy_password: "priv-secret-1".to_owned(),
    };
    let agent = Snmpd::start(SnmpdConfig {
        communities: vec!["right".to_owned()],
        v3_users: vec![user],
        extra_lines: Vec::new(),
    })
    .expect("snmpd");

    // A v2c agent ignores a wrong community: all the host can see is silence.
    let wrong = service(&v2c("wrong"));
    let mut snmp = run(&wrong, "sw1", &agent.endpoint(), quick());
    let error = snmp
        .get(vec![SYS_UPTIME.to_owned()], soon())
        .await
        .expect_err("silence");
    let SnmpError::Timeout(message) = &error else {
        panic!("expected a timeout, got {error:?}");
    };
    assert!(
        message.contains(&format!("sw1 (127.0.0.1:{})", agent.port)),
        "{message}"
    );
    assert!(message.contains("2 attempts"), "{message}");
    // Both attempts waited out their timeout (counted, not clocked).
    assert_eq!(snmp.summary.timeouts, 2);

    // A wrong v3 authentication password: the agent reports wrongDigests.
    let bad = service(
        "[[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"3\"\nuser = \"vigil\"\nauth_protocol = \"sha\"\nauth_password = \"not-the-password\"\nprivacy_protocol = \"aes\"\nprivacy_password = \"priv-secret-1\"\n",
    );
    let mut snmp = run(&bad, "sw1", &agent.endpoint(), quick());
    let error = snmp
        .get(vec![SYS_UPTIME.to_owned()], soon())
        .await
        .expect_err("bad password");
    assert!(
        matches!(&error, SnmpError::AuthenticationFailed(m) if m.contains("sw1")),
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains("not-the-password"));

    // An unknown v3 user.
    let stranger = service(
        "[[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"3\"\nuser = \"stranger\"\nauth_protocol = \"sha\"\nauth_password = \"auth-secret-1\"\n",
    );
    let mut snmp = run(&stranger, "sw1", &agent.endpoint(), quick());
    let error = snmp
        .get(vec![SYS_UPTIME.to_owned()], soon())
        .await
        .expect_err("unknown user");
    assert!(
        matches!(&error, SnmpError::AuthenticationFailed(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_dead_device_stalls_only_its_own_run() {
    // A device that never answers: its port is open (no ICMP refusal) and
    // nothing replies, as with a wedged agent or a filtered path.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let alive = Snmpd::start(SnmpdConfig {
        communities: vec!["public".to_owned()],
        ..SnmpdConfig::default()
    })
    .expect("snmpd");
    let dead_endpoint = silent.local_addr().expect("address").to_string();

    let service = service(&v2c("public"));
    let slow = RequestOptions {
        timeout: Duration::from_secs(2),
        retries: 1,
        max_repetitions: 25,
    };
    let mut dead_run = run(&service, "dead", &dead_endpoint, slow);
    let dead_poll = tokio::spawn(async move {
        let result = dead_run.walk(IF_TABLE.to_owned(), soon()).await;
        (result, dead_run.summary)
    });
    let mut alive_run = run(&service, "alive", &alive.endpoint(), slow);
    let walked = alive_run
        .walk(IF_TABLE.to_owned(), soon())
        .await
        .expect("alive walk");
    assert!(!walked.is_empty());
    assert!(
        !dead_poll.is_finished(),
        "the dead device's run ended before the live one's walk did"
    );
    let (result, summary) = dead_poll.await.expect("join");
    let error = result.expect_err("dead device");
    assert!(
        matches!(&error, SnmpError::Timeout(m) if m.contains(&dead_endpoint)),
        "{error:?}"
    );
    assert_eq!(summary.timeouts, 2);
    assert_eq!(summary.last_error, Some(error));
    drop(silent);
}

#[tokio::test]
async fn a_host_refusing_the_port_is_unreachable_at_once() {
    // An agent that is down: its port is closed, so the host answers each
    // datagram with ICMP port unreachable.
    let mut down = Snmpd::start(SnmpdConfig {
        communities: vec!["public".to_owned()],
        ..SnmpdConfig::default()
    })
    .expect("snmpd");
    let endpoint = down.endpoint();
    down.stop();
    let service = service(&v2c("public"));
    let patient = RequestOptions {
        timeout: Duration::from_secs(5),
        retries: 3,
        max_repetitions: 25,
    };
    let mut run = run(&service, "down", &endpoint, patient);
    let error = run
        .get(vec![SYS_UPTIME.to_owned()], soon())
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(&error, SnmpError::Timeout(m) if m.contains("unreachable") && m.contains("ICMP port unreachable") && m.contains(&endpoint)),
        "{error:?}"
    );
    // Not 4 attempts of 5 s: one refusal settles it, and it is not waited
    // out like a lost reply (that would count a timeout).
    assert_eq!(run.summary.attempts, 1, "{:?}", run.summary);
    assert_eq!(run.summary.timeouts, 0, "{:?}", run.summary);
}

#[tokio::test]
async fn the_run_deadline_bounds_every_wait() {
    let service = service(&v2c("public"));
    // Nothing listens on the discard port's UDP twin here.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let endpoint = silent.local_addr().expect("addr").to_string();
    let mut snmp = run(
        &service,
        "quiet",
        &endpoint,
        RequestOptions {
            timeout: Duration::from_secs(5),
            retries: 5,
            max_repetitions: 25,
        },
    );
    let error = snmp
        .get(
            vec![SYS_UPTIME.to_owned()],
            Instant::now() + Duration::from_millis(700),
        )
        .await
        .expect_err("deadline");
    // The first attempt was cut to the deadline and no retry started: the
    // deadline, not 6 attempts of 5 s, ended the call.
    assert!(
        matches!(&error, SnmpError::Timeout(m) if m.contains("run deadline") && m.contains("1 of 6 attempts")),
        "{error:?}"
    );
    assert_eq!(snmp.summary.timeouts, 1);
}

// ---------------------------------------------------------------------------
// Broken agents. A tiny BER encoder builds their replies, independently of
// the SNMP library the host uses.

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(body);
    out
}

fn integer(value: i64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    tlv(0x02, &bytes[start..])
}

fn oid(arcs: &[u32]) -> Vec<u8> {
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &arc in &arcs[2..] {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    tlv(0x06, &body)
}

fn response(request_id: i32, varbinds: &[(Vec<u32>, Vec<u8>)]) -> Vec<u8> {
    let list: Vec<u8> = varbinds
        .iter()
        .flat_map(|(arcs, value)| tlv(0x30, &[oid(arcs), value.clone()].concat()))
        .collect();
    let pdu = tlv(
        0xa2,
        &[
            integer(request_id.into()),
            integer(0),
            integer(0),
            tlv(0x30, &list),
        ]
        .concat(),
    );
    tlv(0x30, &[integer(1), tlv(0x04, b"public"), pdu].concat())
}

/// What a broken agent does with one request: its request id and the OIDs
/// asked for, to reply or not.
type Behaviour = dyn Fn(i32, &[Vec<u32>]) -> Option<Vec<u8>> + Send + Sync;

/// A UDP agent on loopback that answers with `behaviour`, counts the
/// requests and notices when a second request arrives while it is still
/// "working" on the first (which the host must never do).
struct BrokenAgent {
    endpoint: String,
    requests: Arc<AtomicUsize>,
    overlapped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl BrokenAgent {
    fn start(work: Duration, behaviour: Box<Behaviour>) -> BrokenAgent {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let endpoint = socket.local_addr().expect("addr").to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let overlapped = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, overlap, halt) = (requests.clone(), overlapped.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65_535];
            while !halt.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let Ok(pdu) = snmp2::Pdu::from_bytes(&buffer[..len]) else {
                    continue;
                };
                let request_id = pdu.req_id;
                let oids: Vec<Vec<u32>> = pdu
                    .varbinds
                    .clone()
                    .filter_map(|(name, _)| Some(name.iter()?.map(|a| a as u32).collect()))
                    .collect();
                if !work.is_zero() {
                    std::thread::sleep(work);
                    let mut peek = [0u8; 1];
                    if socket.peek_from(&mut peek).is_ok() {
                        overlap.store(true, Ordering::Relaxed);
                    }
                }
                if let Some(reply) = behaviour(request_id, &oids) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        BrokenAgent {
            endpoint,
            requests,
            overlapped,
            stop,
        }
    }
}

impl Drop for BrokenAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn counter(value: u32) -> Vec<u8> {
    let mut body = integer(value.into());
    body[0] = 0x41;
    body
}

#[tokio::test]
async fn broken_agents_get_clear_errors() {
    let service = service(&v2c("public"));
    let walk = |agent: &BrokenAgent| {
        let mut snmp = run(&service, "broken", &agent.endpoint, quick());
        async move {
            let result = snmp.walk(IF_TABLE.to_owned(), soon()).await;
            (result, snmp.summary)
        }
    };

    // A walk that loops: the agent keeps answering with the same object.
    let looping = BrokenAgent::start(
        Duration::ZERO,
        Box::new(|id, _| {
            Some(response(
                id,
                &[(vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 1], counter(1))],
            ))
        }),
    );
    // It ends (the second reply with nothing new), keeps the one object,
    // and the run is told the walk was cut short.
    let (result, summary) = walk(&looping).await;
    let oids = |result: &Result<Vec<Varbind>, SnmpError>| -> Vec<String> {
        result
            .as_ref()
            .map(|v| v.iter().map(|vb| vb.oid.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(oids(&result), ["1.3.6.1.2.1.2.2.1.1.1"], "{result:?}");
    assert_eq!(summary.walks_cut_short, 1);
    assert!(
        summary.walk_notes[0].contains("ended early"),
        "{:?}",
        summary.walk_notes
    );
    assert!(summary.attempts <= 3, "{summary:?}");

    // Out of order inside one reply.
    let shuffled = BrokenAgent::start(
        Duration::ZERO,
        Box::new(|id, _| {
            Some(response(
                id,
                &[
                    (vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 5], counter(5)),
                    (vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 2], counter(2)),
                ],
            ))
        }),
    );
    // Both objects, once each, sorted; the disorder is noted.
    let (result, summary) = walk(&shuffled).await;
    assert_eq!(
        oids(&result),
        ["1.3.6.1.2.1.2.2.1.1.2", "1.3.6.1.2.1.2.2.1.1.5"],
        "{result:?}"
    );
    assert!(
        summary.walk_notes[0]
            .contains("out of order (1.3.6.1.2.1.2.2.1.1.2 came after 1.3.6.1.2.1.2.2.1.1.5"),
        "{:?}",
        summary.walk_notes
    );

    // A walk that never ends: ever-increasing OIDs, stopped by the budget.
    let endless = BrokenAgent::start(
        Duration::ZERO,
        Box::new(|id, oids| {
            let start = oids.first()?.clone();
            let next = start.last().copied().unwrap_or(0);
            let rows: Vec<(Vec<u32>, Vec<u8>)> = (1..=25u32)
                .map(|i| {
                    let mut arcs = vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 1];
                    arcs.push(if start.len() > 10 { next + i } else { i });
                    (arcs, counter(i))
                })
                .collect();
            Some(response(id, &rows))
        }),
    );
    let tight = {
        let text = format!("[snmp]\nmax_varbinds_per_run = 1000\n{}", v2c("public"));
        let site = SiteConfig::parse(
            Path::new("/etc/vigil/site.toml"),
            &format!("[site]\nname = \"lab\"\n{text}"),
        )
        .expect("site");
        Arc::new(SnmpService::new(site.snmp))
    };
    let mut snmp = run(&tight, "endless", &endless.endpoint, quick());
    let result = snmp.walk(IF_TABLE.to_owned(), soon()).await;
    assert!(
        matches!(&result, Err(SnmpError::QuotaExceeded(_))),
        "{result:?}"
    );
    assert!(snmp.summary.varbinds <= 1000, "{:?}", snmp.summary);

    // Garbage instead of SNMP.
    let garbage = BrokenAgent::start(
        Duration::ZERO,
        Box::new(|_, _| Some(vec![0x30, 0x03, 0xff, 0xff, 0xff])),
    );
    let (result, _) = walk(&garbage).await;
    assert!(
        matches!(&result, Err(SnmpError::MalformedResponse(_))),
        "{result:?}"
    );

    // Huge strings: the byte budget stops them long before memory does.
    let huge = BrokenAgent::start(
        Duration::ZERO,
        Box::new(|id, oids| {
            let start = oids.first()?.clone();
            let next = if start.len() > 10 { start[10] + 1 } else { 1 };
            let value = tlv(0x04, &vec![b'x'; 60_000]);
            Some(response(
                id,
                &[(vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 2, next], value)],
            ))
        }),
    );
    let small = {
        let site = SiteConfig::parse(
            Path::new("/etc/vigil/site.toml"),
            &format!(
                "[site]\nname = \"lab\"\n[snmp]\nmax_bytes_per_run = \"1MiB\"\n{}",
                v2c("public")
            ),
        )
        .expect("site");
        Arc::new(SnmpService::new(site.snmp))
    };
    let mut snmp = run(&small, "huge", &huge.endpoint, quick());
    let result = snmp.walk(IF_TABLE.to_owned(), soon()).await;
    assert!(
        matches!(&result, Err(SnmpError::QuotaExceeded(m)) if m.contains("max_bytes_per_run")),
        "{result:?}"
    );
    assert!(snmp.summary.requests <= 20, "{:?}", snmp.summary);

    // An invalid OID from the plugin never reaches the wire.
    let mut snmp = run(&service, "broken", &garbage.endpoint, quick());
    let before = garbage.requests.load(Ordering::Relaxed);
    let result = snmp.walk("1.3.six".to_owned(), soon()).await;
    assert!(
        matches!(&result, Err(SnmpError::InvalidRequest(_))),
        "{result:?}"
    );
    assert_eq!(garbage.requests.load(Ordering::Relaxed), before);
}

#[tokio::test]
async fn one_request_at_a_time_per_device() {
    let service = service(&v2c("public"));
    // Each request takes the agent 30 ms; it notices if another arrives
    // meanwhile. Four runs walk the same device at once.
    let agent = BrokenAgent::start(
        Duration::from_millis(30),
        Box::new(|id, oids| {
            let start = oids.first()?.clone();
            let next = if start.len() > 10 { start[10] + 1 } else { 1 };
            if next > 3 {
                return Some(response(id, &[(vec![1, 3, 6, 1, 2, 1, 2, 3], counter(0))]));
            }
            Some(response(
                id,
                &[(vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 1, next], counter(next))],
            ))
        }),
    );
    let mut walks = Vec::new();
    for i in 0..4 {
        let mut snmp = run(&service, &format!("r{i}"), &agent.endpoint, quick());
        walks.push(tokio::spawn(async move {
            snmp.walk(IF_TABLE.to_owned(), soon()).await
        }));
    }
    for walk in walks {
        let walked = walk.await.expect("join").expect("walk");
        assert_eq!(walked.len(), 3);
    }
    assert_eq!(agent.requests.load(Ordering::Relaxed), 16);
    assert!(
        !agent.overlapped.load(Ordering::Relaxed),
        "two requests were in flight to one device"
    );
    assert_eq!(service.busy_devices(), 0);
}

/// Every v3 authentication and privacy protocol the site config accepts,
/// against snmpd. A combination Debian's own `snmpget` cannot use with this
/// agent (a protocol the agent was built without) is reported and skipped;
/// every one it can use, vigil must use too.
#[tokio::test]
async fn v3_protocol_matrix_against_snmpd() {
    let combos: [(&str, &str, &str, &str); 7] = [
        // (name, net-snmp auth, net-snmp privacy, site config protocols)
        ("md5des", "MD5", "DES", "md5/des"),
        ("md5aes", "MD5", "AES", "md5/aes128"),
        ("sha1", "SHA", "AES", "sha1/aes128"),
        ("sha224", "SHA-224", "AES", "sha224/aes128"),
        ("sha256", "SHA-256", "AES-192", "sha256/aes192"),
        ("sha384", "SHA-384", "AES-256", "sha384/aes256"),
        ("sha512", "SHA-512", "AES-256", "sha512/aes256"),
    ];
    let mut extra = Vec::new();
    for (name, auth, privacy, _) in &combos {
        extra.push(format!(
            "createUser {name} {auth} \"auth-{name}-pw\" {privacy} \"priv-{name}-pw\""
        ));
        extra.push(format!("rouser {name} priv"));
    }
    let agent = Snmpd::start(SnmpdConfig {
        communities: vec!["public".to_owned()],
        v3_users: Vec::new(),
        extra_lines: extra,
    })
    .expect("snmpd");
    let mut worked = 0;
    for (name, auth, privacy, protocols) in combos {
        let (auth_protocol, privacy_protocol) = protocols.split_once('/').expect("pair");
        let oracle = std::process::Command::new("snmpget")
            .env("MIBS", "")
            .args(["-v3", "-l", "authPriv", "-u", name, "-a", auth])
            .args(["-A", &format!("auth-{name}-pw"), "-x", privacy])
            .args([
                "-X",
                &format!("priv-{name}-pw"),
                "-On",
                "-t",
                "1",
                "-r",
                "1",
            ])
            .arg(agent.endpoint())
            .arg(SYS_UPTIME)
            .output()
            .expect("snmpget");
        if !oracle.status.success() {
            eprintln!(
                "skipping {name} ({auth}/{privacy}): net-snmp cannot use it with this agent: {}",
                String::from_utf8_lossy(&oracle.stderr).trim()
            );
            continue;
        }
        let mut extension = String::new();
        if privacy_protocol != "aes128" && privacy_protocol != "des" {
            // net-snmp stretches short AES-192/256 keys the Blumenthal way.
            extension = "key_extension = \"blumenthal\"\n".to_owned();
        }
        let service = service(&format!(
            "[[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nversion = \"3\"\nuser = \"{name}\"\nauth_protocol = \"{auth_protocol}\"\nauth_password = \"auth-{name}-pw\"\nprivacy_protocol = \"{privacy_protocol}\"\nprivacy_password = \"priv-{name}-pw\"\n{extension}"
        ));
        let mut snmp = run(&service, name, &agent.endpoint(), quick());
        let got = snmp.get(vec![SYS_UPTIME.to_owned()], soon()).await;
        assert!(
            matches!(&got, Ok(v) if matches!(v[0].value, Value::Timeticks(_))),
            "{name} ({auth}/{privacy}): {got:?}"
        );
        worked += 1;
    }
    assert!(
        worked >= 4,
        "only {worked} protocol combinations could be tested"
    );
}
