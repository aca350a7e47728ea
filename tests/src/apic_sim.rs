//! An APIC simulator for the APIC subscriber's tests (issue #14): APIC's
//! REST and websocket wire shapes over plain HTTP on `127.0.0.1`, port 0.
//!
//! - `POST /api/aaaLogin.json` with `{"aaaUser":{"attributes":{"name","pwd"}}}`:
//!   `{"totalCount":"1","imdata":[{"aaaLogin":{"attributes":{"token",
//!   "refreshTimeoutSeconds",...}}}]}` and the `APIC-cookie` cookie; a wrong
//!   password gets HTTP 401 with APIC's error object.
//! - `GET /api/aaaRefresh.json` (cookie): the same shape, the token's life
//!   extended. An expired or unknown token gets HTTP 403 ("Token was
//!   invalid") on every call.
//! - `GET /api/class/<class>.json?page=N&page-size=P[&subscription=yes]`:
//!   `{"totalCount":"<all>","imdata":[<page N>]}` ordered by dn, with
//!   `"subscriptionId"` when subscribing.
//! - `GET /api/subscriptionRefresh.json?id=ID`: `{"totalCount":"0",
//!   "imdata":[]}`, or HTTP 400 with an error object for an unknown or
//!   expired subscription.
//! - `GET /socket<token>`: the websocket; notifications are pushed by the
//!   test ([`ApicSim::notify`]) as `{"subscriptionId":[...],"imdata":[...]}`
//!   to every socket whose session subscribed to the class.
//!
//! Test controls: the fabric's objects per class, notifications on demand,
//! raw messages, dropping every websocket, expiring subscriptions or
//! tokens, a failing heartbeat (pings are no longer answered), holding a
//! class-query page until released, and counters of everything.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// What the simulator has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Login attempts, good or bad.
    pub login_attempts: u64,
    /// Successful logins.
    pub logins: u64,
    pub token_refreshes: u64,
    /// Class queries (every page).
    pub class_queries: u64,
    /// Class queries with `subscription=yes`.
    pub subscriptions_created: u64,
    /// Successful subscription refreshes.
    pub subscription_refreshes: u64,
    /// Failed subscription refreshes (unknown or expired id).
    pub failed_subscription_refreshes: u64,
    /// Websockets opened.
    pub websockets_opened: u64,
    /// Requests refused for an expired or unknown token.
    pub rejected_tokens: u64,
}

enum Cmd {
    Send(String),
    Close,
    Wake,
}

struct Socket {
    id: u64,
    token: String,
    tx: mpsc::UnboundedSender<Cmd>,
}

struct Token {
    expires: Instant,
    expired: bool,
}

struct Subscription {
    class: String,
    token: String,
    expired: bool,
}

#[derive(Default)]
struct Inner {
    username: String,
    password: String,
    refresh_timeout: u64,
    tokens: HashMap<String, Token>,
    /// class → dn → the object's attributes (no `status`).
    objects: BTreeMap<String, BTreeMap<String, serde_json::Map<String, Value>>>,
    subscriptions: BTreeMap<String, Subscription>,
    next_id: u64,
    sockets: Vec<Socket>,
    counters: SimCounters,
    login_times: Vec<Instant>,
    /// (class, page) → released?
    holds: HashMap<(String, u64), watch::Sender<bool>>,
    /// (class, page) of every query, in order.
    queries: Vec<(String, u64)>,
}

struct Shared {
    inner: Mutex<Inner>,
    heartbeat_fail: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulator; stops when dropped.
pub struct ApicSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ApicSim {
    fn drop(&mut self) {
        self.server.abort();
        for s in &self.shared.lock().sockets {
            let _ = s.tx.send(Cmd::Close);
        }
    }
}

fn error_body(code: u16, text: &str) -> String {
    json!({"totalCount": "1", "imdata": [{"error": {"attributes": {"code": code.to_string(), "text": text}}}]})
        .to_string()
}

fn reply(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("APIC-cookie=").map(str::to_owned))
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The token if it is live; counts a refusal otherwise.
fn check_token(inner: &mut Inner, token: Option<&str>) -> Option<String> {
    let now = Instant::now();
    match token.and_then(|t| inner.tokens.get(t).map(|info| (t, info))) {
        Some((t, info)) if !info.expired && info.expires > now => Some(t.to_owned()),
        _ => {
            inner.counters.rejected_tokens += 1;
            None
        }
    }
}

/// APIC's answer to an expired or unknown token.
fn forbidden() -> Response {
    reply(
        StatusCode::FORBIDDEN,
        error_body(403, "Token was invalid (Error: Token timeout)"),
    )
}

fn login_body(token: &str, refresh: u64) -> String {
    json!({"totalCount": "1", "imdata": [{"aaaLogin": {"attributes": {
        "token": token,
        "refreshTimeoutSeconds": refresh.to_string(),
        "maximumLifetimeSeconds": "86400",
        "userName": "admin",
    }}}]})
    .to_string()
}

async fn login(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut inner = sim.lock();
    inner.counters.login_attempts += 1;
    inner.login_times.push(Instant::now());
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let attrs = &value["aaaUser"]["attributes"];
    let (name, pwd) = (attrs["name"].as_str(), attrs["pwd"].as_str());
    if name != Some(inner.username.as_str()) || pwd != Some(inner.password.as_str()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            error_body(
                401,
                "Username or password is incorrect - FAILED local authentication",
            ),
        );
    }
    inner.counters.logins += 1;
    inner.next_id += 1;
    let token = format!("simtoken{}x{}", inner.next_id, std::process::id());
    let refresh = inner.refresh_timeout;
    inner.tokens.insert(
        token.clone(),
        Token {
            expires: Instant::now() + Duration::from_secs(refresh),
            expired: false,
        },
    );
    let mut response = reply(StatusCode::OK, login_body(&token, refresh));
    if let Ok(v) = format!("APIC-cookie={token}; path=/; HttpOnly").parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn refresh(State(sim): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let mut inner = sim.lock();
    let Some(token) = check_token(&mut inner, cookie_token(&headers).as_deref()) else {
        return forbidden();
    };
    inner.counters.token_refreshes += 1;
    let refresh = inner.refresh_timeout;
    if let Some(info) = inner.tokens.get_mut(&token) {
        info.expires = Instant::now() + Duration::from_secs(refresh);
    }
    reply(StatusCode::OK, login_body(&token, refresh))
}

async fn subscription_refresh(
    State(sim): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut inner = sim.lock();
    if check_token(&mut inner, cookie_token(&headers).as_deref()).is_none() {
        return forbidden();
    }
    let query = query.unwrap_or_default();
    let id = query_param(&query, "id").unwrap_or("");
    match inner.subscriptions.get(id) {
        Some(s) if !s.expired => {
            inner.counters.subscription_refreshes += 1;
            reply(
                StatusCode::OK,
                json!({"totalCount": "0", "imdata": []}).to_string(),
            )
        }
        _ => {
            inner.counters.failed_subscription_refreshes += 1;
            reply(
                StatusCode::BAD_REQUEST,
                error_body(400, &format!("Subscription {id} does not exist")),
            )
        }
    }
}

async fn class_query(
    State(sim): State<Arc<Shared>>,
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let class = file.strip_suffix(".json").unwrap_or(&file).to_owned();
    let page: u64 = query_param(&query, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let size: u64 = query_param(&query, "page-size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100_000);
    let subscribe = query_param(&query, "subscription") == Some("yes");
    let hold = {
        let mut inner = sim.lock();
        let Some(token) = check_token(&mut inner, cookie_token(&headers).as_deref()) else {
            return forbidden();
        };
        inner.counters.class_queries += 1;
        inner.queries.push((class.clone(), page));
        if subscribe {
            if !inner.sockets.iter().any(|s| s.token == token) {
                return reply(
                    StatusCode::BAD_REQUEST,
                    error_body(400, "subscription requires an open websocket"),
                );
            }
            inner.counters.subscriptions_created += 1;
        }
        inner
            .holds
            .get(&(class.clone(), page))
            .map(watch::Sender::subscribe)
    };
    if let Some(mut released) = hold {
        let _ = released.wait_for(|r| *r).await;
    }
    let mut inner = sim.lock();
    let token = cookie_token(&headers).unwrap_or_default();
    let all = inner.objects.get(&class);
    let total = all.map_or(0, BTreeMap::len);
    let imdata: Vec<Value> = all
        .into_iter()
        .flat_map(|m| m.values())
        .skip(usize::try_from(page.saturating_mul(size)).unwrap_or(usize::MAX))
        .take(usize::try_from(size).unwrap_or(usize::MAX))
        .map(|attrs| json!({ class.as_str(): {"attributes": attrs} }))
        .collect();
    let mut body = json!({"totalCount": total.to_string(), "imdata": imdata});
    if subscribe {
        inner.next_id += 1;
        let id = (72_057_598_349_672_448u64 + inner.next_id).to_string();
        inner.subscriptions.insert(
            id.clone(),
            Subscription {
                class,
                token,
                expired: false,
            },
        );
        body["subscriptionId"] = json!(id);
    }
    reply(StatusCode::OK, body.to_string())
}

async fn fallback(
    State(sim): State<Arc<Shared>>,
    uri: Uri,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Some(token) = uri.path().strip_prefix("/socket") else {
        return reply(StatusCode::NOT_FOUND, error_body(400, "Unknown path"));
    };
    let token = token.to_owned();
    {
        let mut inner = sim.lock();
        if check_token(&mut inner, Some(&token)).is_none() {
            return forbidden();
        }
    }
    let Ok(ws) = ws else {
        return reply(StatusCode::BAD_REQUEST, error_body(400, "not a websocket"));
    };
    // Registered before the upgrade is answered, as the APIC knows the
    // socket by then: a subscription right after the handshake finds it,
    // and notifications wait in the channel until the socket task runs.
    let (tx, rx) = mpsc::unbounded_channel();
    let id = {
        let mut inner = sim.lock();
        inner.counters.websockets_opened += 1;
        inner.next_id += 1;
        let id = inner.next_id;
        inner.sockets.push(Socket { id, token, tx });
        id
    };
    let on_failed = sim.clone();
    ws.on_failed_upgrade(move |_| on_failed.lock().sockets.retain(|s| s.id != id))
        .on_upgrade(move |socket| serve_socket(sim, id, rx, socket))
}

async fn serve_socket(
    sim: Arc<Shared>,
    id: u64,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    mut socket: WebSocket,
) {
    loop {
        let deaf = sim.heartbeat_fail.load(Ordering::SeqCst);
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Send(text)) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Cmd::Wake) => {}
                Some(Cmd::Close) | None => break,
            },
            // Reading answers pings; a "failing heartbeat" stops reading.
            msg = socket.recv(), if !deaf => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    sim.lock().sockets.retain(|s| s.id != id);
}

impl ApicSim {
    /// Starts a simulator accepting `username` / `password`.
    pub async fn start(username: &str, password: &str) -> anyhow::Result<ApicSim> {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                username: username.to_owned(),
                password: password.to_owned(),
                refresh_timeout: 600,
                ..Inner::default()
            }),
            heartbeat_fail: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/api/aaaLogin.json", post(login))
            .route("/api/aaaRefresh.json", get(refresh))
            .route("/api/subscriptionRefresh.json", get(subscription_refresh))
            .route("/api/class/{file}", get(class_query))
            .fallback(fallback)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ApicSim {
            addr,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces every object of `class` (attribute maps, each with `dn`).
    pub fn set_class(&self, class: &str, objects: Vec<Value>) {
        let mut map = BTreeMap::new();
        for o in objects {
            if let Value::Object(mut attrs) = o {
                attrs.remove("status");
                if let Some(dn) = attrs.get("dn").and_then(Value::as_str) {
                    map.insert(dn.to_owned(), attrs);
                }
            }
        }
        self.shared.lock().objects.insert(class.to_owned(), map);
    }

    /// Applies `attrs` (with `dn` and `status`) to the stored objects
    /// without notifying anyone: a change made while nobody listens.
    pub fn change(&self, class: &str, attrs: Value) {
        apply_change(&mut self.shared.lock(), class, &attrs);
    }

    /// Applies the objects (attribute maps with `dn` and `status`) of
    /// `class` to the stored objects and pushes them as one notification
    /// to every websocket whose session subscribed to `class` (and whose
    /// subscription has not expired). Returns the sockets reached.
    pub fn notify(&self, class: &str, objects: Vec<Value>) -> usize {
        let mut inner = self.shared.lock();
        for o in &objects {
            apply_change(&mut inner, class, o);
        }
        push(&inner, class, &objects)
    }

    /// Like [`ApicSim::notify`] without changing the stored objects.
    pub fn notify_only(&self, class: &str, objects: Vec<Value>) -> usize {
        push(&self.shared.lock(), class, &objects)
    }

    /// Sends `text` as it is to every websocket.
    pub fn push_raw(&self, text: &str) -> usize {
        let inner = self.shared.lock();
        inner
            .sockets
            .iter()
            .filter(|s| s.tx.send(Cmd::Send(text.to_owned())).is_ok())
            .count()
    }

    /// Closes every websocket (the TCP connection, no close frame).
    pub fn drop_websockets(&self) {
        for s in &self.shared.lock().sockets {
            let _ = s.tx.send(Cmd::Close);
        }
    }

    /// Every subscription stops delivering and its refresh fails.
    pub fn expire_subscriptions(&self) {
        for s in self.shared.lock().subscriptions.values_mut() {
            s.expired = true;
        }
    }

    /// Every token issued so far is refused from now on.
    pub fn expire_tokens(&self) {
        for t in self.shared.lock().tokens.values_mut() {
            t.expired = true;
        }
    }

    /// Websockets stop reading, so pings go unanswered (and the reverse).
    pub fn set_heartbeat_fail(&self, fail: bool) {
        self.shared.heartbeat_fail.store(fail, Ordering::SeqCst);
        for s in &self.shared.lock().sockets {
            let _ = s.tx.send(Cmd::Wake);
        }
    }

    /// The `refreshTimeoutSeconds` of later logins and refreshes; tokens
    /// expire that long after their last login or refresh.
    pub fn set_refresh_timeout(&self, seconds: u64) {
        self.shared.lock().refresh_timeout = seconds;
    }

    /// Queries of `class` page `page` wait until [`ApicSim::release`].
    pub fn hold(&self, class: &str, page: u64) {
        self.shared
            .lock()
            .holds
            .insert((class.to_owned(), page), watch::Sender::new(false));
    }

    pub fn release(&self, class: &str, page: u64) {
        if let Some(h) = self.shared.lock().holds.remove(&(class.to_owned(), page)) {
            h.send_replace(true);
        }
    }

    pub fn counters(&self) -> SimCounters {
        self.shared.lock().counters.clone()
    }

    /// When each login attempt arrived.
    pub fn login_times(&self) -> Vec<Instant> {
        self.shared.lock().login_times.clone()
    }

    /// (class, page) of every class query, in order.
    pub fn queries(&self) -> Vec<(String, u64)> {
        self.shared.lock().queries.clone()
    }

    /// Websockets open now.
    pub fn open_websockets(&self) -> usize {
        self.shared.lock().sockets.len()
    }

    /// Subscriptions that deliver now (for a token with an open socket).
    pub fn live_subscriptions(&self, class: &str) -> usize {
        let inner = self.shared.lock();
        inner
            .subscriptions
            .values()
            .filter(|s| {
                s.class == class && !s.expired && inner.sockets.iter().any(|k| k.token == s.token)
            })
            .count()
    }
}

fn apply_change(inner: &mut Inner, class: &str, attrs: &Value) {
    let Value::Object(attrs) = attrs else { return };
    let Some(dn) = attrs.get("dn").and_then(Value::as_str).map(str::to_owned) else {
        return;
    };
    let status = attrs.get("status").and_then(Value::as_str).unwrap_or("");
    let objects = inner.objects.entry(class.to_owned()).or_default();
    let mut clean = attrs.clone();
    clean.remove("status");
    match status {
        "deleted" => {
            objects.remove(&dn);
        }
        "modified" => objects.entry(dn).or_default().extend(clean),
        _ => {
            objects.insert(dn, clean);
        }
    }
}

fn push(inner: &Inner, class: &str, objects: &[Value]) -> usize {
    let imdata: Vec<Value> = objects
        .iter()
        .map(|attrs| json!({ class: {"attributes": attrs} }))
        .collect();
    let mut reached = 0;
    for socket in &inner.sockets {
        let ids: Vec<&String> = inner
            .subscriptions
            .iter()
            .filter(|(_, s)| s.class == class && !s.expired && s.token == socket.token)
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let text = json!({"subscriptionId": ids, "imdata": imdata}).to_string();
        if socket.tx.send(Cmd::Send(text)).is_ok() {
            reached += 1;
        }
    }
    reached
}
