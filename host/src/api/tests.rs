//! `/api/v1` over real HTTP: the router served on 127.0.0.1:0, asked with
//! reqwest, on a `MemoryStore` and a `CollectingSink`.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use vigil_core::secret::{Secret, SecretSource};
use vigil_endpoints::ingest::CollectingSink;
use vigil_endpoints::model::{
    EndpointEvent, EndpointRecord, EndpointType, EpmClass, HistoryEvent, HistoryRecord,
    HistoryType, LearnType, Status,
};
use vigil_endpoints::{HistoryStore, MemoryStore, Source};

use super::{ApiSettings, router};

const READ: &str = "read-token-0123456789abcdef0123456789";
const OPERATOR: &str = "operator-token-0123456789abcdef01234";
const BD: u32 = 15990734;
const VRF: u32 = 2949120;
const MAC: &str = "00:50:56:AD:BB:16";

fn secret(text: &str) -> Secret {
    SecretSource::Inline(text.into())
        .read(Path::new("."))
        .expect("secret")
}

fn record(fabric: &str, vnid: u32, addr: &str, endpoint_type: EndpointType) -> EndpointRecord {
    let event = EndpointEvent {
        node: 101,
        status: Status::Created,
        ts: 1_765_000_000.5,
        pctag: 32771,
        encap: "vlan-10".into(),
        intf_id: "eth1/5".into(),
        intf_name: "eth1/5".into(),
        epg_name: "uni/tn-t/ap-a/epg-web".into(),
        ..EndpointEvent::default()
    };
    EndpointRecord {
        fabric: fabric.into(),
        vnid,
        addr: addr.into(),
        endpoint_type,
        count: 3,
        events: vec![event.clone()],
        first_learn: event,
        learn_type: LearnType::Epg,
        is_stale: false,
        is_offsubnet: false,
    }
}

fn history(node: u32, events: usize) -> HistoryRecord {
    HistoryRecord {
        fabric: "fab1".into(),
        node,
        vnid: BD,
        addr: MAC.into(),
        history_type: HistoryType::Mac,
        count: events as u64 + 10,
        events: (0..events)
            .map(|i| {
                let mut e = HistoryEvent::empty(
                    EpmClass::MacEp,
                    1_765_000_100.0 - i as f64,
                    Status::Created,
                );
                e.intf_id = format!("eth1/{i}").into();
                e.flags = vigil_endpoints::Flags::parse("local");
                e
            })
            .collect(),
        is_stale: false,
        is_offsubnet: false,
    }
}

struct Server {
    base: String,
    sink: Arc<CollectingSink>,
    client: reqwest::Client,
}

impl Server {
    async fn start(settings: ApiSettings) -> Server {
        let store = Arc::new(MemoryStore::new());
        store
            .put_endpoint(record("fab1", BD, MAC, EndpointType::Mac))
            .await
            .expect("put");
        store
            .put_endpoint(record("fab1", BD + 1, MAC, EndpointType::Mac))
            .await
            .expect("put");
        for i in 0..25 {
            store
                .put_endpoint(record(
                    "fab1",
                    VRF,
                    &format!("10.1.1.{i}"),
                    EndpointType::Ipv4,
                ))
                .await
                .expect("put");
        }
        store
            .put_endpoint(record("fab2", VRF, "2001:db8::65", EndpointType::Ipv6))
            .await
            .expect("put");
        store.put_history(history(101, 3)).await.expect("put");
        store.put_history(history(102, 1)).await.expect("put");
        let sink = Arc::new(CollectingSink::new());
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(|| async { "metrics\n" }))
            .merge(router(settings, sink.clone(), store));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            base: format!("http://{addr}"),
            sink,
            client: reqwest::Client::new(),
        }
    }

    async fn default() -> Server {
        Server::start(ApiSettings::new(vec![secret(READ)], vec![secret(OPERATOR)])).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn post(&self, body: impl Into<reqwest::Body>, token: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/api/v1/endpoints/events", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn every_request_needs_a_token_and_writes_need_an_operator() {
    let server = Server::default().await;
    let url = format!("{}/api/v1/endpoints", server.base);
    // No token, another scheme, a wrong token: 401 with a Bearer challenge.
    for auth in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer nope"),
        Some("Bearer "),
    ] {
        let mut request = server.client.get(&url);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status().as_u16(), 401, "{auth:?}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let body: Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("a JSON error");
        assert!(
            matches!(code(&body), "unauthorized" | "invalid_token"),
            "{body}"
        );
    }
    // A token differing in its last byte, or a prefix of one, is not it.
    let near = format!("{}X", &READ[..READ.len() - 1]);
    for token in [near.as_str(), &READ[..10], &format!("{READ}{READ}")] {
        assert_eq!(server.get("/api/v1/endpoints", Some(token)).await.0, 401);
    }
    // Read and operator tokens read.
    assert_eq!(server.get("/api/v1/endpoints", Some(READ)).await.0, 200);
    assert_eq!(server.get("/api/v1/endpoints", Some(OPERATOR)).await.0, 200);
    // A read token may not push events; an operator may.
    let (status, body) = server.post("[]", READ).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = server.post("[]", OPERATOR).await;
    assert_eq!(status, 200, "{body}");
    // Unknown routes: 401 without a token, a JSON 404 with one.
    assert_eq!(server.get("/api/v1/nothing", None).await.0, 401);
    let (status, body) = server.get("/api/v1/nothing", Some(READ)).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    // A method the route does not take: a JSON 405.
    let response = server
        .client
        .delete(&url)
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 405);
    // Outside /api/v1 the API has no say: a plain 404 without a token.
    let response = server
        .client
        .get(format!("{}/elsewhere", server.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 404);
    // /metrics beside it stays open.
    let response = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn pages_and_searches() {
    let server = Server::default().await;
    // 28 endpoints in all, 10 a page.
    let mut seen = Vec::new();
    let mut path = "/api/v1/endpoints?limit=10".to_owned();
    for _ in 0..10 {
        let (status, body) = server.get(&path, Some(READ)).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().expect("items");
        assert!(items.len() <= 10);
        seen.extend(items.iter().map(|i| {
            format!(
                "{}/{}/{}",
                i["fabric"].as_str().unwrap_or(""),
                i["vnid"],
                i["addr"].as_str().unwrap_or("")
            )
        }));
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/endpoints?limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 28, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 28, "each once");
    // One item's shape: EPT's names, RFC 3339 times.
    let (_, body) = server
        .get(
            "/api/v1/endpoints?search=0050.56ad.bb16&scope=15990734",
            Some(READ),
        )
        .await;
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{body}");
    let item = &items[0];
    assert_eq!(item["addr"], MAC);
    assert_eq!(item["type"], "mac");
    assert_eq!(item["count"], 3);
    assert_eq!(item["current"]["node"], 101);
    assert_eq!(item["current"]["intf_id"], "eth1/5");
    assert_eq!(item["current"]["pctag"], 32771);
    assert_eq!(item["current"]["ts"], "2025-12-06T05:46:40.500Z");
    assert_eq!(body["next_cursor"], Value::Null);
    // Searches: a MAC in both its scopes; an encoded IPv4 CIDR; a fabric.
    let count = |body: &Value| body["items"].as_array().map_or(0, Vec::len);
    let (_, body) = server
        .get("/api/v1/endpoints?search=00-50-56-ad-bb-16", Some(READ))
        .await;
    assert_eq!(count(&body), 2, "{body}");
    let (_, body) = server
        .get(
            "/api/v1/endpoints?search=10.1.1.0%2F24&limit=1000",
            Some(READ),
        )
        .await;
    assert_eq!(count(&body), 25, "{body}");
    let (_, body) = server
        .get("/api/v1/endpoints?search=10.1.1.1", Some(READ))
        .await;
    assert_eq!(count(&body), 1, "exact: {body}");
    let (_, body) = server
        .get("/api/v1/endpoints?search=10.1.1.1.&fabric=fab1", Some(READ))
        .await;
    assert_eq!(count(&body), 0, "{body}");
    let (_, body) = server
        .get("/api/v1/endpoints?fabric=fab2", Some(READ))
        .await;
    assert_eq!(count(&body), 1, "{body}");
    assert_eq!(body["items"][0]["addr"], "2001:db8::65");
    // Bad parameters are 400s naming the problem.
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "scope=-1",
        "cursor=zz",
        "search=hello",
        "serach=10.1",
        "limit=1&limit=2",
        "search=%FF",
    ] {
        let (status, body) = server
            .get(&format!("/api/v1/endpoints?{bad}"), Some(READ))
            .await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[tokio::test]
async fn show_gives_the_record_and_every_nodes_history() {
    let server = Server::default().await;
    let (status, body) = server
        .get("/api/v1/endpoints/fab1/15990734/0050.56ad.bb16", Some(READ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["addr"], MAC);
    assert_eq!(body["vnid"], BD);
    assert_eq!(body["current"]["node"], 101);
    assert_eq!(body["first_learn"]["encap"], "vlan-10");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(1));
    let history = body["history"].as_array().expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["node"], 101);
    assert_eq!(history[0]["count"], 13);
    assert_eq!(history[0]["type"], "mac");
    let events = history[0]["events"].as_array().expect("events");
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["intf_id"], "eth1/0", "newest first");
    assert_eq!(events[0]["ts"], "2025-12-06T05:48:20.000Z");
    for field in [
        "classname",
        "status",
        "remote",
        "pctag",
        "flags",
        "encap",
        "intf_name",
        "rw_mac",
        "rw_bd",
        "epg_name",
        "vnid_name",
    ] {
        assert!(events[0].get(field).is_some(), "{field}");
    }
    // IPv6 in the path, in another notation.
    let (status, body) = server
        .get(
            "/api/v1/endpoints/fab2/2949120/2001:DB8:0::0065",
            Some(READ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["history"], json!([]));
    // Unknown, not an address, bad scope.
    let (status, body) = server
        .get(
            "/api/v1/endpoints/fab1/15990734/00:50:56:AD:BB:99",
            Some(READ),
        )
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("00:50:56:AD:BB:99")
    );
    let (status, body) = server
        .get("/api/v1/endpoints/fab1/15990734/nope", Some(READ))
        .await;
    assert_eq!((status, code(&body)), (400, "bad_request"), "{body}");
    let (status, body) = server
        .get("/api/v1/endpoints/fab1/x/10.1.1.1", Some(READ))
        .await;
    assert_eq!((status, code(&body)), (400, "bad_request"), "{body}");
}

fn good(addr: &str) -> Value {
    json!({"fabric": "fab1", "node": 101, "vnid": BD, "type": "mac", "addr": addr,
           "status": "created", "ts": 1765000000.25, "intf_id": "eth1/5"})
}

#[tokio::test]
async fn a_batch_takes_the_good_events_and_reports_the_bad_by_index() {
    let server = Server::default().await;
    let batch = json!({"events": [
        good("aabb.ccdd.ee01"),
        {"fabric": "fab1"},
        good("not-a-mac"),
        good("AA-BB-CC-DD-EE-02"),
        [1, 2],
        {"fabric": "fab1", "node": "leaf-101", "vnid": 1, "type": "mac", "addr": "aabbccddee03",
         "status": "created", "ts": 1.0},
    ]});
    let (status, body) = server.post(batch.to_string(), OPERATOR).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"], 4);
    let errors = body["errors"].as_array().expect("errors");
    let summary: Vec<(u64, &str, Value)> = errors
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap_or(99),
                e["code"].as_str().unwrap_or(""),
                e["field"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "missing_field", json!("type")),
            (2, "bad_value", json!("addr")),
            (4, "not_an_object", Value::Null),
            (5, "wrong_type", json!("node")),
        ]
    );
    let collected = server.sink.collected();
    let addrs: Vec<(Source, &str)> = collected
        .events
        .iter()
        .map(|(s, e)| (*s, e.addr.as_str()))
        .collect();
    assert_eq!(
        addrs,
        [
            (Source::Http, "AA:BB:CC:DD:EE:01"),
            (Source::Http, "AA:BB:CC:DD:EE:02")
        ]
    );
    let rejected: u64 = collected
        .rejected
        .iter()
        .filter(|((s, _), _)| *s == Source::Http)
        .map(|(_, (n, sample))| {
            assert!(sample.len() <= 256, "{sample}");
            n
        })
        .sum();
    assert_eq!(rejected, 4);
}

#[tokio::test]
async fn malformed_oversized_and_hostile_batches_are_refused_whole() {
    let mut settings = ApiSettings::new(vec![secret(READ)], vec![secret(OPERATOR)]);
    settings.limits.max_body_bytes = 64 * 1024;
    settings.limits.max_events = 5;
    let server = Server::start(settings).await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"".to_vec(), 400, "bad_request"),
        (b"{".to_vec(), 400, "bad_request"),
        (b"[NaN]".to_vec(), 400, "bad_request"),
        (b"\"events\"".to_vec(), 400, "bad_request"),
        (b"{\"events\": 5}".to_vec(), 400, "bad_request"),
        (vec![0xff, 0xfe, 0x00], 400, "bad_request"),
        // Nesting deeper than serde_json's limit.
        (
            format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes(),
            400,
            "bad_request",
        ),
        // Over the event bound.
        (
            Value::Array(vec![good("aabbccddee01"); 6])
                .to_string()
                .into_bytes(),
            400,
            "bad_request",
        ),
        // Over the body bound (declared, and sent chunked).
        (vec![b' '; 64 * 1024 + 1], 413, "payload_too_large"),
    ];
    for (body, status, expected) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let (got, answer) = server.post(body, OPERATOR).await;
        assert_eq!(
            (got, code(&answer)),
            (status, expected),
            "{shown}: {answer}"
        );
    }
    // Sent chunked, without a declared length: cut off at the bound.
    let status = chunked_post(&server, OPERATOR, &[vec![b' '; 40_000], vec![b' '; 40_000]]).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // A huge string inside the bound: that event refused, the others taken.
    let batch = json!([good("aabbccddee01"), {
        "fabric": "fab1", "node": 101, "vnid": 1, "type": "mac", "addr": "aabbccddee02",
        "status": "created", "ts": 1.0, "encap": "v".repeat(30_000)}]);
    let (status, body) = server.post(batch.to_string(), OPERATOR).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(body["errors"][0]["code"], "too_long");
    assert!(server.sink.collected().events.len() == 1);
}

/// POSTs `chunks` with `Transfer-Encoding: chunked` over a raw connection;
/// the status line of the answer.
async fn chunked_post(server: &Server, token: &str, chunks: &[Vec<u8>]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST /api/v1/endpoints/events HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    for chunk in chunks {
        let _ = stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = stream.write_all(chunk).await;
        let _ = stream.write_all(b"\r\n").await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// vigil's health, empty (the `/metrics` server needs one).
struct NoHealth;

impl vigil_sinks::SelfMetrics for NoHealth {
    fn render(&self, _doc: &mut vigil_sinks::exposition::Exposition) {}
}

#[tokio::test]
async fn served_beside_metrics_by_the_prometheus_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let api = router(
        ApiSettings::new(vec![secret(READ)], vec![secret(OPERATOR)]),
        Arc::new(CollectingSink::new()),
        Arc::new(MemoryStore::new()),
    );
    let server =
        vigil_sinks::prometheus::serve_with(listen, Arc::new(NoHealth), None, Some(api), stop)
            .await
            .expect("serve");
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("http://{listen}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        get("/metrics", None).await.expect("get").status().as_u16(),
        200
    );
    assert_eq!(
        get("/health/metrics", None)
            .await
            .expect("get")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        get("/api/v1/endpoints", None)
            .await
            .expect("get")
            .status()
            .as_u16(),
        401
    );
    let response = get("/api/v1/endpoints", Some(READ)).await.expect("get");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
    assert_eq!(body, json!({"items": [], "next_cursor": null}));
    let _ = stop_tx.send(true);
    let _ = server.await;
}

/// Each token has its own request rate (429 with Retry-After past a burst
/// of twice the rate, other tokens unaffected); requests without a valid
/// token share one small budget; and a request still in progress holds
/// one of `max_concurrent_requests` slots (503 while none is free).
#[tokio::test]
async fn requests_are_limited_per_token_and_while_busy() {
    use tokio::io::AsyncWriteExt;
    let mut settings = ApiSettings::new(vec![secret(READ)], vec![secret(OPERATOR)]);
    settings.requests_per_second = 2;
    settings.max_concurrent_requests = 1;
    let server = Server::start(settings).await;
    let path = "/api/v1/endpoints?limit=1";
    // The burst (twice the rate) is always there; then, however slow the
    // machine, requests faster than 2 a second run out.
    for i in 0..4 {
        assert_eq!(server.get(path, Some(READ)).await.0, 200, "request {i}");
    }
    let mut limited = None;
    for _ in 0..200 {
        let response = server
            .client
            .get(format!("{}{path}", server.base))
            .bearer_auth(READ)
            .send()
            .await
            .expect("send");
        if response.status().as_u16() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status().as_u16(), 200);
    }
    let response = limited.expect("no 429 in 200 requests at 2 a second");
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| s >= 1), "{retry:?}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(code(&body), "rate_limited");
    // The operator token has its own budget.
    assert_eq!(server.get(path, Some(OPERATOR)).await.0, 200);

    // A POST whose body is still arriving holds the only slot.
    let host = server.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/endpoints/events HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {OPERATOR}\r\ntransfer-encoding: chunked\r\n\r\n1\r\n[\r\n"
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    let mut busy = None;
    for _ in 0..50 {
        let (status, body) = server.get(path, Some(OPERATOR)).await;
        if status == 503 {
            busy = Some(body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let busy = busy.expect("no 503 while the only slot was held");
    assert_eq!(code(&busy), "busy");
    drop(slow);
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if server.get(path, Some(OPERATOR)).await.0 == 200 {
            freed = true;
            break;
        }
    }
    assert!(freed, "the slot was not given back");

    // Guessing: wrong tokens are answered 401 until their shared budget
    // (bursts of 20) is spent, then 429.
    let wrong = "w".repeat(40);
    let mut statuses = Vec::new();
    for _ in 0..400 {
        let status = server.get(path, Some(&wrong)).await.0;
        statuses.push(status);
        if status == 429 {
            break;
        }
    }
    assert!(
        statuses.contains(&401) && statuses.contains(&429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}
