//! The per-fabric APIC subscriber (see the crate docs for the design).
//!
//! # How payloads are read
//!
//! Class-query pages and websocket notifications are parsed straight from
//! their text by [`EpmParser::parse_payload`] when that gives exactly what
//! the `Value` path gives: no recording is being written, and a light pass
//! over the text (`Header`: nothing built but `totalCount` and
//! `subscriptionId`, `imdata` only counted and its objects' keys looked
//! at) finds a JSON object with no top-level `ts` (the parser would take it
//! over the receipt time, which the live path always uses), no `children`
//! to flatten, no `error` first object, and `imdata` (when there is one) a
//! list of `{"<class>": {...}}` objects; the parser must then accept the
//! payload as a whole. The page checks (`totalCount`, the page size,
//! `subscriptionId`) read that header.
//!
//! Anything else takes the `Value` path, as before: the payload is decoded
//! into a `serde_json::Value`, recorded with its `ts` set to the receipt
//! time, its `children` flattened as a replay does
//! ([`vigil_endpoints::replay::flatten_children`]), and parsed with
//! [`EpmParser::parse_payload_value`]. Rejections (`not_json`,
//! `bad_payload`) and their samples come from that path only, so they are
//! what they always were; `bad_object` rejections are the parser's either
//! way. The tests feed both paths the same payloads and compare events,
//! rejections, fabric models and counters.
//!
//! Measured (the ignored `parse_cost` test, `release-dev`, a page of
//! 10,000 epm objects of 310 bytes, read and applied to a collecting
//! sink, two runs on this shared 2-core machine): 1.3-1.6 µs an object on
//! the text path, of which 0.2 µs is the light pass, against 3.1-3.7 µs on
//! the `Value` path.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use vigil_endpoints::apic::{ApicObject, EpmParser, Limits, Payload, truncate};
use vigil_endpoints::apic_fabric::{ApicFabric, Applied, FABRIC_CLASSES};
use vigil_endpoints::ingest::{EventSink, Source, SubscriberState};
use vigil_endpoints::replay::flatten_children;

use crate::config::{ApicConfig, ApicUrl};
use crate::tls::{TlsError, client_config};

/// The classes EPT subscribes to for the fabric model (issue #14), plus
/// `fabricNodePEp` (the members of a vpc group, which the model needs and
/// a class subscription to the group does not deliver), queried and
/// subscribed in this order before the endpoint classes. Classes the model
/// does not use are still subscribed (as EPT does) and recorded; the model
/// ignores them.
pub const FABRIC_SUBSCRIPTION_CLASSES: &[&str] = &[
    "fabricNode",
    "fabricProtPol",
    "fabricAutoGEp",
    "fabricExplicitGEp",
    "fabricNodePEp",
    "tunnelIf",
    "vpcRsVpcConf",
    "pcAggrIf",
    "pcRsMbrIfs",
    "fvCtx",
    "fvBD",
    "fvSvcBD",
    "fvAEPg",
    "fvRsBd",
    "fvSubnet",
    "fvIpAttr",
    "l3extOut",
    "l3extInstP",
    "l3extRsEctx",
    "l3extExtEncapAllocator",
    "mgmtInB",
    "mgmtRsMgmtBD",
    "vnsEPpInfo",
    "vnsLIfCtx",
    "vnsRsEPpInfoToBD",
    "vnsRsLIfCtxToBD",
    "datetimeFormat",
];

/// EPT's endpoint classes, queried and subscribed after the fabric's.
pub const ENDPOINT_CLASSES: &[&str] = &["epmMacEp", "epmIpEp", "epmRsMacEpToIpEpAtt"];

/// The longest sample kept with a rejection.
const SAMPLE_BYTES: usize = 256;
/// The longest APIC error text kept in an error.
const ERROR_TEXT_BYTES: usize = 512;
/// The longest session token accepted (APIC's are about 200 characters).
const MAX_TOKEN_BYTES: usize = 4096;
/// Token refresh timeouts outside this range are clamped (APIC's default
/// is 600 s).
const REFRESH_TIMEOUT_RANGE: (u64, u64) = (2, 86_400);

/// What a subscriber reports about itself ([`Subscriber::status`]), for
/// `vigil status` and `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberStatus {
    pub state: SubscriberState,
    /// Why the last session ended (or the last login failed), if one did.
    pub last_error: Option<String>,
    /// Successful logins.
    pub logins: u64,
    /// Login attempts, successful or not.
    pub login_attempts: u64,
    /// Builds finished (the subscriber was in sync after each).
    pub builds: u64,
    /// Sessions that ended in an error.
    pub failures: u64,
    /// Class-query pages applied.
    pub pages: u64,
    /// Websocket notifications applied.
    pub notifications: u64,
    /// Websocket messages received (applied or not yet).
    pub messages_received: u64,
    /// Endpoint events handed to the sink.
    pub events: u64,
    /// Inputs refused (also reported to the sink by reason).
    pub rejected: u64,
    pub token_refreshes: u64,
    pub subscription_refreshes: u64,
    /// Subscriptions of the current session.
    pub subscriptions: usize,
}

impl Default for SubscriberStatus {
    fn default() -> Self {
        SubscriberStatus {
            // Not running until `run`.
            state: SubscriberState::Stopped,
            last_error: None,
            logins: 0,
            login_attempts: 0,
            builds: 0,
            failures: 0,
            pages: 0,
            notifications: 0,
            messages_received: 0,
            events: 0,
            rejected: 0,
            token_refreshes: 0,
            subscription_refreshes: 0,
            subscriptions: 0,
        }
    }
}

/// Why a subscriber stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    /// The endpoint tracker is shutting down.
    #[error("fabric {fabric}: the endpoint tracker stopped accepting events")]
    SinkClosed { fabric: String },
    #[error("fabric {fabric}: {error}")]
    Tls { fabric: String, error: TlsError },
    #[error("fabric {fabric}: {error}")]
    Config { fabric: String, error: String },
    #[error("fabric {fabric}: HTTP client: {error}")]
    Client { fabric: String, error: String },
    #[error("fabric {fabric}: record_to {path}: {error}")]
    Record {
        fabric: String,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Why one session (login, build, sync) ended; the subscriber reconnects.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("login to {apic} refused: HTTP {status}: {text}")]
    LoginRejected {
        apic: String,
        status: u16,
        text: String,
    },
    #[error("{what}: {error}")]
    Http { what: String, error: String },
    #[error("{what}: HTTP {status}: {text}")]
    Status {
        what: String,
        status: u16,
        text: String,
    },
    #[error("{what}: response is larger than max_response_bytes ({max} bytes)")]
    TooLarge { what: String, max: usize },
    #[error("{what}: {detail}")]
    Response { what: String, detail: String },
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("websocket: a message is larger than max_message_bytes ({max} bytes)")]
    MessageTooLarge { max: usize },
    #[error("heartbeat: no pong within {0:?}")]
    Heartbeat(Duration),
    #[error("subscription {id} ({class}): refresh failed: {error}")]
    SubscriptionRefresh {
        class: String,
        id: String,
        error: Box<SessionError>,
    },
    #[error("token refresh failed: {0}")]
    TokenRefresh(Box<SessionError>),
    #[error("build: {0}")]
    Build(String),
    #[error(
        "notifications waiting to be applied exceed max_buffered_bytes ({max} bytes); rebuilding"
    )]
    Backlog { max: usize },
    #[error("shutting down")]
    Shutdown,
    #[error("the endpoint tracker stopped accepting events")]
    SinkClosed,
}

/// One fabric's APIC subscriber.
pub struct Subscriber {
    config: Arc<ApicConfig>,
    sink: Arc<dyn EventSink>,
    status: Arc<watch::Sender<SubscriberStatus>>,
}

impl Subscriber {
    /// A subscriber for `config` writing to `sink`; nothing happens until
    /// [`Subscriber::run`].
    ///
    /// [`crate::RawApicConfig::validate`] enforces the documented bounds;
    /// a config built in code is only kept from values that cannot work
    /// (zero durations and sizes are raised to a small minimum).
    pub fn new(mut config: ApicConfig, sink: Arc<dyn EventSink>) -> Subscriber {
        let min = Duration::from_millis(10);
        for d in [
            &mut config.request_timeout,
            &mut config.connect_timeout,
            &mut config.build_timeout,
            &mut config.subscription_refresh,
            &mut config.heartbeat_interval,
            &mut config.heartbeat_timeout,
            &mut config.reconnect_initial,
        ] {
            *d = (*d).max(min);
        }
        config.reconnect_max = config.reconnect_max.max(config.reconnect_initial);
        config.page_size = config.page_size.clamp(1, crate::config::MAX_PAGE_SIZE);
        config.max_response_bytes = config.max_response_bytes.max(1024);
        config.max_message_bytes = config.max_message_bytes.max(1024);
        config.max_buffered_bytes = config.max_buffered_bytes.max(1024);
        config.max_objects_per_build = config.max_objects_per_build.max(1);
        Subscriber {
            config: Arc::new(config),
            sink,
            status: Arc::new(watch::Sender::new(SubscriberStatus::default())),
        }
    }

    /// The fabric's name.
    pub fn fabric(&self) -> &str {
        &self.config.fabric
    }

    /// A live view of the subscriber's state and counters.
    pub fn status(&self) -> watch::Receiver<SubscriberStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped): logs
    /// in, builds, stays in sync, and reconnects with backoff on every
    /// failure. Returns `Ok` on shutdown; an error only when it cannot go
    /// on at all (the sink closed, TLS or recording could not be set up).
    /// The state is [`SubscriberState::Stopped`] when it returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), SubscriberError> {
        let result = self.run_inner(&mut shutdown).await;
        if let Err(e) = &result {
            self.status
                .send_modify(|s| s.last_error = Some(e.to_string()));
        }
        self.set_state(SubscriberState::Stopped);
        result
    }

    async fn run_inner(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), SubscriberError> {
        let config = &self.config;
        let fabric = config.fabric.clone();
        if !config.tls_verify {
            warn!(
                fabric = %fabric,
                "tls_verify = false: the APIC's certificate is not checked; anyone on the path can read the APIC password"
            );
        }
        // Plain http only to loopback, however the config was built.
        if let Some(bad) = config
            .apics
            .iter()
            .find(|a| ApicUrl::parse(&a.http_base()).as_ref() != Ok(*a))
        {
            return Err(SubscriberError::Config {
                fabric: fabric.clone(),
                error: format!(
                    "{bad} is not an APIC address vigil may use (plain http is for loopback only)"
                ),
            });
        }
        if config.apics.is_empty() {
            return Err(SubscriberError::Config {
                fabric: fabric.clone(),
                error: "no APIC address".into(),
            });
        }
        let https = config.apics.iter().any(|a| a.https);
        let tls = client_config(config.tls_verify, config.ca_file.as_deref(), https).map_err(
            |error| SubscriberError::Tls {
                fabric: fabric.clone(),
                error,
            },
        )?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls.as_ref().clone())
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SubscriberError::Client {
                fabric: fabric.clone(),
                error: error_chain(&e),
            })?;
        let recorder = match &config.record_to {
            None => None,
            Some(path) => Some(
                Recorder::open(path).map_err(|error| SubscriberError::Record {
                    fabric: fabric.clone(),
                    path: path.clone(),
                    error,
                })?,
            ),
        };
        let mut shared = Shared::new(
            config.clone(),
            self.sink.clone(),
            self.status.clone(),
            recorder,
        );
        let mut backoff = config.reconnect_initial;
        loop {
            if shutdown_requested(shutdown) {
                return Ok(());
            }
            self.set_state(SubscriberState::Building);
            let mut synced = false;
            let error = self
                .session(&mut shared, &client, &tls, shutdown, &mut synced)
                .await;
            match error {
                SessionError::Shutdown => return Ok(()),
                SessionError::SinkClosed => return Err(SubscriberError::SinkClosed { fabric }),
                error => {
                    if synced {
                        backoff = config.reconnect_initial;
                    }
                    warn!(fabric = %fabric, error = %error, retry_in = ?backoff, "APIC session ended; logging in again and rebuilding");
                    self.status.send_modify(|s| {
                        s.last_error = Some(error.to_string());
                        s.failures += 1;
                        s.subscriptions = 0;
                    });
                    self.set_state(SubscriberState::Reconnecting);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = wait_shutdown(shutdown) => return Ok(()),
                    }
                    backoff = backoff.saturating_mul(2).min(config.reconnect_max);
                }
            }
        }
    }

    fn set_state(&self, state: SubscriberState) {
        // Only `run` changes the state; the sink hears of it before anyone
        // watching the status does.
        if self.status.borrow().state != state {
            debug!(fabric = %self.config.fabric, state = %state, "APIC subscriber state");
            self.sink.subscriber_state(&self.config.fabric, state);
            self.status.send_modify(|s| s.state = state);
        }
    }

    /// One session; returns why it ended. Shutdown and session failures
    /// interrupt only waits (a request, the next message), never a payload
    /// being applied: a payload is recorded and handed to the sink whole,
    /// so the recording and the live history always agree.
    async fn session(
        &self,
        shared: &mut Shared,
        client: &reqwest::Client,
        tls: &Arc<rustls::ClientConfig>,
        shutdown: &mut watch::Receiver<bool>,
        synced: &mut bool,
    ) -> SessionError {
        let (fail_tx, fails) = mpsc::channel::<SessionError>(4);
        let mut guard = Guard {
            shutdown,
            fails,
            deadline: None,
        };
        match self
            .session_work(shared, client, tls, &mut guard, fail_tx, synced)
            .await
        {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn session_work(
        &self,
        shared: &mut Shared,
        client: &reqwest::Client,
        tls: &Arc<rustls::ClientConfig>,
        guard: &mut Guard<'_>,
        fail_tx: mpsc::Sender<SessionError>,
        synced: &mut bool,
    ) -> Result<std::convert::Infallible, SessionError> {
        let config = &self.config;
        let (rest, apic, refresh_timeout) = guard.wait(self.login_any(client)).await??;
        let ws = guard
            .wait(connect_websocket(config, &apic, &rest, tls))
            .await??;
        let (write, read) = ws.split();
        let (item_tx, mut items) = mpsc::unbounded_channel::<Incoming>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let pong = Arc::new(AtomicU64::new(0));
        let subscriptions: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let _tasks = Tasks(vec![
            tokio::spawn(reader(ReaderCtx {
                read,
                items: item_tx,
                fails: fail_tx.clone(),
                backlog: backlog.clone(),
                max_backlog: config.max_buffered_bytes,
                max_message: config.max_message_bytes,
                pong: pong.clone(),
                sink: self.sink.clone(),
                status: self.status.clone(),
            })),
            tokio::spawn(keeper(KeeperCtx {
                rest: rest.clone(),
                write,
                subscriptions: subscriptions.clone(),
                pong,
                fails: fail_tx,
                config: config.clone(),
                status: self.status.clone(),
                token_refresh: refresh_timeout,
            })),
        ]);

        // The build: notifications wait in `items` meanwhile.
        guard.deadline = Some((Instant::now() + config.build_timeout, config.build_timeout));
        shared.build(&rest, &subscriptions, guard).await?;
        guard.deadline = None;
        *synced = true;
        self.status.send_modify(|s| s.builds += 1);
        info!(fabric = %config.fabric, apic = %apic, "APIC fabric built; applying notifications");
        self.set_state(SubscriberState::InSync);

        // In sync: every notification in order, the buffered ones first.
        loop {
            match guard.wait(items.recv()).await? {
                None => return Err(SessionError::WebSocket("the reader stopped".into())),
                Some(Incoming::Ended(e)) => return Err(e),
                Some(Incoming::Message(item)) => {
                    backlog.fetch_sub(item.text.len(), Ordering::Relaxed);
                    shared.notification(item).await?;
                }
            }
        }
    }

    /// Logs in to the first APIC that accepts; returns the session, the
    /// APIC and when to refresh the token.
    async fn login_any(
        &self,
        client: &reqwest::Client,
    ) -> Result<(Rest, ApicUrl, Duration), SessionError> {
        let mut last = SessionError::Build("no APIC configured".into());
        for apic in &self.config.apics {
            self.status.send_modify(|s| s.login_attempts += 1);
            match login(&self.config, client, apic).await {
                Ok((rest, timeout)) => {
                    self.status.send_modify(|s| s.logins += 1);
                    info!(fabric = %self.config.fabric, apic = %apic, "logged in to the APIC");
                    return Ok((rest, apic.clone(), refresh_interval(timeout)));
                }
                Err(e) => {
                    warn!(fabric = %self.config.fabric, apic = %apic, error = %e, "APIC login failed");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// `Subscriber::new(config, sink).run(shutdown)` for a caller that does
/// not want the status handle.
pub async fn run(
    config: ApicConfig,
    sink: Arc<dyn EventSink>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), SubscriberError> {
    Subscriber::new(config, sink).run(shutdown).await
}

/// When to refresh a token that times out after `timeout`: at half of it.
fn refresh_interval(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_secs(1))
}

fn shutdown_requested(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Resolves when shutdown is requested or its sender is gone.
async fn wait_shutdown(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

fn now_ts() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An error with its sources (reqwest hides the cause otherwise).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What may interrupt a wait of a session: shutdown, a failure reported
/// by the session's reader or keeper, the build's deadline.
struct Guard<'a> {
    shutdown: &'a mut watch::Receiver<bool>,
    fails: mpsc::Receiver<SessionError>,
    /// The build's deadline and the `build_timeout` it came from.
    deadline: Option<(Instant, Duration)>,
}

impl Guard<'_> {
    async fn wait<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, SessionError> {
        let deadline = self.deadline;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            biased;
            _ = wait_shutdown(self.shutdown) => Err(SessionError::Shutdown),
            Some(e) = self.fails.recv() => Err(e),
            _ = tokio::time::sleep_until(deadline.map_or(far, |d| d.0)), if deadline.is_some() => {
                Err(SessionError::Build(format!(
                    "did not finish within build_timeout ({:?})",
                    deadline.map(|d| d.1).unwrap_or_default()
                )))
            }
            value = work => Ok(value),
        }
    }
}

/// Aborts the session's tasks when the session ends.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

// --- REST ----------------------------------------------------------------------

/// A logged-in REST session: the token goes in the `APIC-cookie` cookie.
#[derive(Clone)]
struct Rest {
    client: reqwest::Client,
    base: String,
    token: Arc<Mutex<String>>,
    max_bytes: usize,
}

impl Rest {
    fn token(&self) -> String {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn get(&self, path: &str, what: &str) -> Result<Value, SessionError> {
        let (status, body) = self.get_raw(path, what).await?;
        decode(status, &body, what)
    }

    /// [`Rest::get`]'s status and body, not yet decoded.
    async fn get_raw(
        &self,
        path: &str,
        what: &str,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), SessionError> {
        let request = self.client.get(format!("{}{path}", self.base)).header(
            reqwest::header::COOKIE,
            format!("APIC-cookie={}", self.token()),
        );
        send_raw(request, what, self.max_bytes).await
    }

    async fn refresh_token(&self) -> Result<Duration, SessionError> {
        let value = self.get("/api/aaaRefresh.json", "aaaRefresh").await?;
        let (token, timeout) = login_attributes(&value, "aaaRefresh")?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
        Ok(timeout)
    }
}

/// Sends `request` and reads a JSON body of at most `max` bytes; APIC
/// errors (`{"imdata":[{"error":{"attributes":{"code","text"}}}]}`, with a
/// failing or even a 200 status) become [`SessionError::Status`].
async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
    max: usize,
) -> Result<Value, SessionError> {
    let (status, body) = send_raw(request, what, max).await?;
    decode(status, &body, what)
}

/// Sends `request`; its status and a body of at most `max` bytes.
async fn send_raw(
    request: reqwest::RequestBuilder,
    what: &str,
    max: usize,
) -> Result<(reqwest::StatusCode, Vec<u8>), SessionError> {
    let mut response = request.send().await.map_err(|e| SessionError::Http {
        what: what.to_owned(),
        error: error_chain(&e),
    })?;
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(SessionError::TooLarge {
            what: what.to_owned(),
            max,
        });
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(SessionError::TooLarge {
                        what: what.to_owned(),
                        max,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(SessionError::Http {
                    what: what.to_owned(),
                    error: error_chain(&e),
                });
            }
        }
    }
    Ok((status, body))
}

/// A response's body as JSON; APIC errors (with a failing or a 200 status)
/// and failing statuses become [`SessionError::Status`].
fn decode(status: reqwest::StatusCode, body: &[u8], what: &str) -> Result<Value, SessionError> {
    let value: Result<Value, _> = serde_json::from_slice(body);
    let apic_error = value.as_ref().ok().and_then(apic_error);
    if !status.is_success() || apic_error.is_some() {
        let text = apic_error
            .unwrap_or_else(|| truncate(String::from_utf8_lossy(body).trim(), ERROR_TEXT_BYTES));
        return Err(SessionError::Status {
            what: what.to_owned(),
            status: status.as_u16(),
            text,
        });
    }
    value.map_err(|e| SessionError::Response {
        what: what.to_owned(),
        detail: format!("the response is not JSON: {e}"),
    })
}

/// The text of an APIC error object, if `value` is one.
fn apic_error(value: &Value) -> Option<String> {
    let attrs = value
        .get("imdata")?
        .as_array()?
        .first()?
        .get("error")?
        .get("attributes")?;
    let code = attrs.get("code").and_then(Value::as_str).unwrap_or("");
    let text = attrs.get("text").and_then(Value::as_str).unwrap_or("");
    Some(truncate(
        &format!("APIC error {code}: {text}"),
        ERROR_TEXT_BYTES,
    ))
}

/// `imdata[0].aaaLogin.attributes`: the token and its refresh timeout.
fn login_attributes(value: &Value, what: &str) -> Result<(String, Duration), SessionError> {
    let bad = |detail: &str| SessionError::Response {
        what: what.to_owned(),
        detail: detail.to_owned(),
    };
    let attrs = value
        .get("imdata")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|o| o.get("aaaLogin"))
        .and_then(|o| o.get("attributes"))
        .ok_or_else(|| bad("no imdata[0].aaaLogin.attributes in the response"))?;
    let token = attrs
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no token in the response"))?;
    if token.is_empty()
        || token.len() > MAX_TOKEN_BYTES
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_.".contains(&b))
    {
        return Err(bad(
            "the token is empty, too long, or has characters a token cannot have",
        ));
    }
    let timeout = match attrs.get("refreshTimeoutSeconds") {
        Some(Value::String(s)) => s.trim().parse::<u64>().unwrap_or(600),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(600),
        _ => 600,
    }
    .clamp(REFRESH_TIMEOUT_RANGE.0, REFRESH_TIMEOUT_RANGE.1);
    Ok((token.to_owned(), Duration::from_secs(timeout)))
}

async fn login(
    config: &ApicConfig,
    client: &reqwest::Client,
    apic: &ApicUrl,
) -> Result<(Rest, Duration), SessionError> {
    let base = apic.http_base();
    let body = json!({"aaaUser": {"attributes": {
        "name": config.username,
        "pwd": config.password.expose_text(),
    }}});
    let body = serde_json::to_vec(&body).map_err(|e| SessionError::Response {
        what: "aaaLogin".into(),
        detail: e.to_string(),
    })?;
    let request = client
        .post(format!("{base}/api/aaaLogin.json"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let value = match send(request, "aaaLogin", config.max_response_bytes).await {
        Ok(v) => v,
        Err(SessionError::Status { status, text, .. }) => {
            return Err(SessionError::LoginRejected {
                apic: base,
                status,
                text,
            });
        }
        Err(e) => return Err(e),
    };
    let (token, timeout) = login_attributes(&value, "aaaLogin")?;
    Ok((
        Rest {
            client: client.clone(),
            base,
            token: Arc::new(Mutex::new(token)),
            max_bytes: config.max_response_bytes,
        },
        timeout,
    ))
}

// --- websocket -------------------------------------------------------------------

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect_websocket(
    config: &ApicConfig,
    apic: &ApicUrl,
    rest: &Rest,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Ws, SessionError> {
    let token = rest.token();
    let url = format!("{}/socket{token}", apic.ws_base());
    let fail =
        |e: String| SessionError::WebSocket(format!("connecting to {}: {e}", apic.ws_base()));
    let mut request = url.into_client_request().map_err(|e| fail(e.to_string()))?;
    let cookie =
        HeaderValue::from_str(&format!("APIC-cookie={token}")).map_err(|e| fail(e.to_string()))?;
    request
        .headers_mut()
        .insert(tungstenite::http::header::COOKIE, cookie);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let connector = if apic.https {
        Connector::Rustls(tls.clone())
    } else {
        Connector::Plain
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(config.connect_timeout, connect).await {
        Err(_) => Err(fail(format!(
            "no answer within connect_timeout ({:?})",
            config.connect_timeout
        ))),
        Ok(Err(e)) => Err(fail(error_chain(&e))),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// A websocket message and when it arrived.
struct WsMessage {
    text: String,
    received: f64,
}

/// What the reader hands the session, in order: messages, then why it
/// stopped (so a session never mistakes the end of the queue for the
/// reason).
enum Incoming {
    Message(WsMessage),
    Ended(SessionError),
}

struct ReaderCtx {
    read: SplitStream<Ws>,
    items: mpsc::UnboundedSender<Incoming>,
    fails: mpsc::Sender<SessionError>,
    backlog: Arc<AtomicUsize>,
    max_backlog: usize,
    max_message: usize,
    pong: Arc<AtomicU64>,
    sink: Arc<dyn EventSink>,
    status: Arc<watch::Sender<SubscriberStatus>>,
}

/// Reads the websocket: messages go to the session in arrival order (with
/// their receipt time), pongs to the heartbeat. Never waits on the tracker,
/// so a pong is seen even while the session is busy.
async fn reader(mut ctx: ReaderCtx) {
    let reject = |ctx: &ReaderCtx, reason: &'static str, sample: &str| {
        ctx.status.send_modify(|s| s.rejected += 1);
        ctx.sink.rejected(Source::Apic, reason, sample);
    };
    let error = loop {
        let text = match ctx.read.next().await {
            None => break SessionError::WebSocket("closed".into()),
            Some(Err(tungstenite::Error::Capacity(e))) => {
                reject(&ctx, "message_too_large", &e.to_string());
                break SessionError::MessageTooLarge {
                    max: ctx.max_message,
                };
            }
            Some(Err(e)) => break SessionError::WebSocket(error_chain(&e)),
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
                Ok(t) => t,
                Err(_) => {
                    reject(&ctx, "not_utf8", "a binary message that is not UTF-8");
                    continue;
                }
            },
            Some(Ok(Message::Pong(p))) => {
                if let Ok(seq) = <[u8; 8]>::try_from(p.as_ref()) {
                    ctx.pong
                        .fetch_max(u64::from_be_bytes(seq), Ordering::Relaxed);
                }
                continue;
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame
                    .map(|f| format!(" ({} {})", f.code, truncate(f.reason.as_str(), 128)))
                    .unwrap_or_default();
                break SessionError::WebSocket(format!("closed by the APIC{why}"));
            }
            Some(Ok(_)) => continue,
        };
        let len = text.len();
        if ctx.backlog.fetch_add(len, Ordering::Relaxed) + len > ctx.max_backlog {
            break SessionError::Backlog {
                max: ctx.max_backlog,
            };
        }
        let item = Incoming::Message(WsMessage {
            text,
            received: now_ts(),
        });
        if ctx.items.send(item).is_err() {
            return;
        }
        ctx.status.send_modify(|s| s.messages_received += 1);
    };
    // The failure channel interrupts a build; the queue keeps the order
    // once in sync.
    let _ = ctx.fails.try_send(error.clone());
    let _ = ctx.items.send(Incoming::Ended(error));
}

struct KeeperCtx {
    rest: Rest,
    write: SplitSink<Ws, Message>,
    subscriptions: Arc<Mutex<Vec<(String, String)>>>,
    pong: Arc<AtomicU64>,
    fails: mpsc::Sender<SessionError>,
    config: Arc<ApicConfig>,
    status: Arc<watch::Sender<SubscriberStatus>>,
    token_refresh: Duration,
}

/// Keeps the session alive: refreshes the token before it times out,
/// every subscription every `subscription_refresh`, and pings the
/// websocket every `heartbeat_interval` expecting the pong within
/// `heartbeat_timeout`. The first failure ends the session.
async fn keeper(mut ctx: KeeperCtx) {
    let start = Instant::now();
    let every = |d: Duration| {
        let mut i = tokio::time::interval_at(start + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    };
    let mut subs_tick = every(ctx.config.subscription_refresh);
    let mut heartbeat_tick = every(ctx.config.heartbeat_interval);
    let token_sleep = tokio::time::sleep(ctx.token_refresh);
    tokio::pin!(token_sleep);
    let mut seq = 0u64;
    let mut pending: Option<Instant> = None;
    let error = loop {
        let deadline = pending.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = subs_tick.tick() => {
                let list = ctx.subscriptions.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let mut failed = None;
                for (class, id) in list {
                    let path = format!("/api/subscriptionRefresh.json?id={id}");
                    match ctx.rest.get(&path, "subscriptionRefresh").await {
                        Ok(_) => ctx.status.send_modify(|s| s.subscription_refreshes += 1),
                        Err(e) => {
                            failed = Some(SessionError::SubscriptionRefresh { class, id, error: Box::new(e) });
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    break e;
                }
            }
            _ = heartbeat_tick.tick(), if pending.is_none() => {
                seq += 1;
                let ping = Message::Ping(seq.to_be_bytes().to_vec().into());
                if let Err(e) = ctx.write.send(ping).await {
                    break SessionError::WebSocket(format!("sending a ping: {}", error_chain(&e)));
                }
                pending = Some(Instant::now() + ctx.config.heartbeat_timeout);
            }
            _ = tokio::time::sleep_until(deadline), if pending.is_some() => {
                if ctx.pong.load(Ordering::Relaxed) >= seq {
                    pending = None;
                } else {
                    break SessionError::Heartbeat(ctx.config.heartbeat_timeout);
                }
            }
            _ = &mut token_sleep => {
                match ctx.rest.refresh_token().await {
                    Ok(timeout) => {
                        ctx.status.send_modify(|s| s.token_refreshes += 1);
                        token_sleep.as_mut().reset(Instant::now() + refresh_interval(timeout));
                    }
                    Err(e) => break SessionError::TokenRefresh(Box::new(e)),
                }
            }
        }
        if pending.is_some() && ctx.pong.load(Ordering::Relaxed) >= seq {
            pending = None;
        }
    };
    let _ = ctx.fails.try_send(error);
    let _ = ctx.write.close().await;
}

// --- applying payloads ---------------------------------------------------------------

/// Appends every payload, with its `ts`, as one JSON line.
struct Recorder {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Recorder {
    fn open(path: &std::path::Path) -> std::io::Result<Recorder> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Recorder {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    fn write(&mut self, value: &Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Page,
    Notification,
}

/// What outlives a session: the fabric model, the parser, the recording.
struct Shared {
    config: Arc<ApicConfig>,
    sink: Arc<dyn EventSink>,
    status: Arc<watch::Sender<SubscriberStatus>>,
    parser: EpmParser,
    fabric: ApicFabric,
    /// Fabric objects (class, dn) the model holds.
    known: HashSet<(String, String)>,
    /// Fabric objects seen by the build under way.
    seen: Option<HashSet<(String, String)>>,
    /// Fabric objects changed since the model was last published.
    fabric_dirty: bool,
    recorder: Option<Recorder>,
}

impl Shared {
    fn new(
        config: Arc<ApicConfig>,
        sink: Arc<dyn EventSink>,
        status: Arc<watch::Sender<SubscriberStatus>>,
        recorder: Option<Recorder>,
    ) -> Shared {
        // The subscriber bounds what it reads itself; the text path takes
        // any payload the `Value` path would.
        let limits = Limits {
            max_payload_bytes: config.max_response_bytes.max(config.max_message_bytes),
            ..Limits::default()
        };
        Shared {
            parser: EpmParser::new(config.fabric.clone(), 0).with_limits(limits),
            fabric: ApicFabric::new(config.fabric.clone(), 0),
            config,
            sink,
            status,
            known: HashSet::new(),
            seen: None,
            fabric_dirty: false,
            recorder,
        }
    }

    fn reject(&self, reason: &'static str, sample: &str) {
        self.status.send_modify(|s| s.rejected += 1);
        self.sink
            .rejected(Source::Apic, reason, &truncate(sample, SAMPLE_BYTES));
    }

    async fn publish_fabric(&mut self) -> Result<(), SessionError> {
        let fabric = Arc::new(self.fabric.fabric().clone());
        self.fabric_dirty = false;
        self.sink
            .fabric(fabric)
            .await
            .map_err(|_| SessionError::SinkClosed)
    }

    /// Every class, paged, subscribing on each class's first page; then
    /// the fabric objects that disappeared while disconnected are deleted.
    async fn build(
        &mut self,
        rest: &Rest,
        subscriptions: &Mutex<Vec<(String, String)>>,
        guard: &mut Guard<'_>,
    ) -> Result<(), SessionError> {
        self.seen = Some(HashSet::new());
        let page_size = u64::from(self.config.page_size.max(1));
        let mut objects = 0u64;
        let classes = FABRIC_SUBSCRIPTION_CLASSES
            .iter()
            .map(|c| (c, false))
            .chain(ENDPOINT_CLASSES.iter().map(|c| (c, true)));
        let mut swept = false;
        for (class, endpoint) in classes {
            if endpoint && !swept {
                self.sweep().await?;
                swept = true;
            }
            let mut page = 0u64;
            let mut class_total = 0u64;
            loop {
                let subscribe = if page == 0 { "&subscription=yes" } else { "" };
                let path = format!(
                    "/api/class/{class}.json?order-by={class}.dn&page={page}&page-size={page_size}{subscribe}"
                );
                let what = format!("class query {class} page {page}");
                let response = guard.wait(rest.get_raw(&path, &what)).await?;
                let received = now_ts();
                let body = match response
                    .and_then(|(status, body)| self.page_body(status, body, &what, received))
                {
                    Ok(b) => b,
                    // An APIC without a class the model does not use (an
                    // older release): nothing to build or subscribe to. A
                    // class the model needs is never skipped.
                    Err(SessionError::Status {
                        status: 400, text, ..
                    }) if page == 0 && !endpoint && !FABRIC_CLASSES.contains(class) => {
                        warn!(fabric = %self.config.fabric, class = %class, error = %text, "the APIC refused a class query; skipping the class");
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let bad = |detail: String| SessionError::Response {
                    what: what.clone(),
                    detail,
                };
                let total = match body.total_count() {
                    Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
                    Some(Value::Number(n)) => n.as_u64(),
                    _ => None,
                }
                .ok_or_else(|| bad("no numeric totalCount".into()))?;
                let count = body
                    .imdata_len()
                    .ok_or_else(|| bad("no imdata list".into()))?;
                let count = count as u64;
                if count > page_size {
                    return Err(bad(format!("{count} objects in a page of {page_size}")));
                }
                if page == 0 {
                    class_total = total;
                    if objects.saturating_add(total) > self.config.max_objects_per_build {
                        return Err(SessionError::Build(format!(
                            "{class} has {total} objects, past max_objects_per_build ({}) with the {objects} read before it",
                            self.config.max_objects_per_build
                        )));
                    }
                    let id = match body.subscription_id() {
                        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        _ => return Err(bad("no subscriptionId for subscription=yes".into())),
                    };
                    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                        return Err(bad("the subscriptionId is not an id".into()));
                    }
                    let n = {
                        let mut subs = subscriptions.lock().unwrap_or_else(|p| p.into_inner());
                        subs.push(((*class).to_owned(), id));
                        subs.len()
                    };
                    self.status.send_modify(|s| s.subscriptions = n);
                }
                objects += count;
                self.apply_page(body, received).await?;
                page += 1;
                if count == 0 || page.saturating_mul(page_size) >= class_total {
                    break;
                }
            }
        }
        self.seen = None;
        self.publish_fabric().await
    }

    /// Delete the fabric objects the model holds that the build did not
    /// see (removed while disconnected), as one synthetic payload of
    /// `deleted` objects, recorded like any other so a replay agrees.
    async fn sweep(&mut self) -> Result<(), SessionError> {
        let Some(seen) = self.seen.take() else {
            return Ok(());
        };
        let mut gone: Vec<&(String, String)> = self.known.difference(&seen).collect();
        gone.sort();
        let imdata: Vec<Value> = gone
            .into_iter()
            .map(|(class, dn)| json!({ class.as_str(): {"attributes": {"dn": dn, "status": "deleted"}} }))
            .collect();
        self.seen = Some(seen);
        if imdata.is_empty() {
            return Ok(());
        }
        info!(fabric = %self.config.fabric, objects = imdata.len(), "fabric objects gone since the last build; deleting them");
        let value = json!({ "imdata": imdata });
        self.apply(value, now_ts(), Kind::Page).await
    }

    /// A class-query response as the page checks and [`Shared::apply`]
    /// read it: parsed from the text when [`Shared::parse_text`] may, else
    /// decoded as every other response is.
    fn page_body(
        &self,
        status: reqwest::StatusCode,
        body: Vec<u8>,
        what: &str,
        received: f64,
    ) -> Result<PageBody, SessionError> {
        if status.is_success()
            && let Ok(text) = std::str::from_utf8(&body)
            && let Some((header, payload)) = self.parse_text(text, received)
        {
            return Ok(PageBody::Text { header, payload });
        }
        decode(status, &body, what).map(PageBody::Value)
    }

    async fn apply_page(&mut self, body: PageBody, received: f64) -> Result<(), SessionError> {
        match body {
            PageBody::Text { payload, .. } => self.apply_payload(payload, Kind::Page).await,
            PageBody::Value(value) => self.apply(value, received, Kind::Page).await,
        }
    }

    /// The text fast path (see the module docs): `text` parsed without a
    /// `Value` when that gives exactly what decoding it and
    /// [`Shared::apply`] would. `None` sends the payload down the `Value`
    /// path: a recording is being written (it holds the decoded payload
    /// with its `ts`); the text is not a JSON object of the usual shape
    /// (rejections quote the decoded `Value`); it has a top-level `ts` (the
    /// parser would let it win over the receipt time, which `apply`
    /// imposes); an object in `imdata` has `children` (flattened from a
    /// `Value`); the first object of an `imdata` has an `error` key (maybe
    /// an APIC error, which [`decode`] reports); or the parser refuses the
    /// payload as a whole (rejected with the decoded `Value` as sample).
    fn parse_text(&self, text: &str, received: f64) -> Option<(Header, Payload)> {
        if self.recorder.is_some() {
            return None;
        }
        let header = Header::read(text).ok()?;
        if header.ts || header.children || header.error {
            return None;
        }
        let payload = self.parser.parse_payload(text, received).ok()?;
        Some((header, payload))
    }

    async fn notification(&mut self, item: WsMessage) -> Result<(), SessionError> {
        if let Some((_, payload)) = self.parse_text(&item.text, item.received) {
            return self.apply_payload(payload, Kind::Notification).await;
        }
        let value: Value = match serde_json::from_str(&item.text) {
            Ok(v) => v,
            Err(e) => {
                self.reject(
                    "not_json",
                    &format!("{e}: {}", truncate(&item.text, SAMPLE_BYTES)),
                );
                return Ok(());
            }
        };
        self.apply(value, item.received, Kind::Notification).await
    }

    /// One decoded payload (the `Value` path): recorded with its `ts`,
    /// `children` flattened, parsed, then [`Shared::apply_payload`]. What
    /// cannot be parsed is rejected object by object; the rest of the
    /// payload is kept.
    async fn apply(
        &mut self,
        mut value: Value,
        received: f64,
        kind: Kind,
    ) -> Result<(), SessionError> {
        // APIC payloads are objects; anything else could not carry its
        // `ts` into the recording.
        let Value::Object(map) = &mut value else {
            let sample = truncate(&value.to_string(), SAMPLE_BYTES);
            self.reject("bad_payload", &format!("not a JSON object: {sample}"));
            return Ok(());
        };
        map.insert("ts".into(), json!(received));
        if let Some(recorder) = &mut self.recorder
            && let Err(e) = recorder.write(&value)
        {
            warn!(fabric = %self.config.fabric, path = %recorder.path.display(), error = %e, "recording failed; recording stops");
            self.recorder = None;
        }
        flatten_children(&mut value);
        let payload = match self.parser.parse_payload_value(&value, received) {
            Ok(p) => p,
            Err(e) => {
                let sample = format!("{e}: {}", truncate(&value.to_string(), SAMPLE_BYTES));
                self.reject("bad_payload", &sample);
                return Ok(());
            }
        };
        self.apply_payload(payload, kind).await
    }

    /// A parsed payload (from [`Shared::apply`] or the text fast path):
    /// fabric objects applied to the model (published when changed,
    /// before the events), then the endpoint events in order.
    async fn apply_payload(&mut self, payload: Payload, kind: Kind) -> Result<(), SessionError> {
        self.status.send_modify(|s| match kind {
            Kind::Page => s.pages += 1,
            Kind::Notification => s.notifications += 1,
        });
        let mut events = Vec::new();
        for object in payload.objects {
            match object {
                Err(e) => self.reject("bad_object", &e.to_string()),
                Ok(ApicObject::Endpoint(ev)) => events.push(ev),
                Ok(other) => {
                    let key = fabric_key(&other);
                    match self.fabric.apply_object(&other) {
                        Ok(Applied::Applied) => {
                            self.fabric_dirty = true;
                            if let Some((key, deleted)) = key {
                                if let Some(seen) = &mut self.seen
                                    && !deleted
                                {
                                    seen.insert(key.clone());
                                }
                                if deleted {
                                    self.known.remove(&key);
                                } else {
                                    self.known.insert(key);
                                }
                            }
                        }
                        Ok(Applied::Ignored) => {}
                        Err(e) => self.reject("bad_fabric_object", &e.to_string()),
                    }
                }
            }
        }
        let overlay = self.fabric.overlay_vnid();
        if overlay != self.parser.overlay_vnid() {
            // As a replay does: later payloads use the discovered overlay.
            self.parser.set_overlay_vnid(overlay);
        }
        if self.fabric_dirty && (kind == Kind::Notification || !events.is_empty()) {
            self.publish_fabric().await?;
        }
        let n = events.len() as u64;
        for ev in events {
            self.sink
                .event(Source::Apic, ev)
                .await
                .map_err(|_| SessionError::SinkClosed)?;
        }
        self.status.send_modify(|s| s.events += n);
        Ok(())
    }
}

// --- the text fast path --------------------------------------------------------------

/// A class-query page, read by the text fast path or decoded.
enum PageBody {
    Text { header: Header, payload: Payload },
    Value(Value),
}

impl PageBody {
    /// The page's `totalCount`.
    fn total_count(&self) -> Option<&Value> {
        match self {
            PageBody::Text { header, .. } => header.total_count.as_ref(),
            PageBody::Value(v) => v.get("totalCount"),
        }
    }

    /// How many objects its `imdata` has; `None` when it is not a list.
    fn imdata_len(&self) -> Option<usize> {
        match self {
            PageBody::Text { header, .. } => header.imdata,
            PageBody::Value(v) => v.get("imdata").and_then(Value::as_array).map(Vec::len),
        }
    }

    /// The page's `subscriptionId`.
    fn subscription_id(&self) -> Option<&Value> {
        match self {
            PageBody::Text { header, .. } => header.subscription_id.as_ref(),
            PageBody::Value(v) => v.get("subscriptionId"),
        }
    }
}

/// What the text fast path reads of a payload before the parser does, in
/// one pass that builds nothing but `totalCount` and `subscriptionId`
/// (small scalars, kept as `Value`s so the page checks read them as from a
/// decoded payload). Keys are compared unescaped, and a repeated key
/// counts with its last value as in a `Value` map (`ts`, `children` and
/// `error` are noted wherever they occur).
#[derive(Debug, Default, PartialEq)]
struct Header {
    total_count: Option<Value>,
    subscription_id: Option<Value>,
    /// The length of `imdata`.
    imdata: Option<usize>,
    /// A top-level `ts` key.
    ts: bool,
    /// An object in `imdata` whose body has a `children` key.
    children: bool,
    /// The first object of `imdata` has an `error` key.
    error: bool,
}

impl Header {
    /// The header of `text`: an error when it is not JSON, or not a JSON
    /// object whose `imdata` (when there is one) is a list of objects
    /// whose values (the bodies) are objects. Such payloads take the
    /// `Value` path, so whatever it rejects is rejected as before.
    fn read(text: &str) -> Result<Header, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let header = de.deserialize_map(HeaderVisitor)?;
        de.end()?;
        Ok(header)
    }
}

/// The keys the header looks for.
enum Key {
    Ts,
    TotalCount,
    SubscriptionId,
    Imdata,
    Children,
    Error,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }
    // Escaped or not (serde_json unescapes before `visit_str`).
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match v {
            "ts" => Key::Ts,
            "totalCount" => Key::TotalCount,
            "subscriptionId" => Key::SubscriptionId,
            "imdata" => Key::Imdata,
            "children" => Key::Children,
            "error" => Key::Error,
            _ => Key::Other,
        })
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
        let mut header = Header::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Ts => {
                    header.ts = true;
                    map.next_value::<IgnoredAny>()?;
                }
                Key::TotalCount => header.total_count = Some(map.next_value()?),
                Key::SubscriptionId => header.subscription_id = Some(map.next_value()?),
                Key::Imdata => {
                    let imdata: Imdata = map.next_value()?;
                    header.imdata = Some(imdata.len);
                    header.children |= imdata.children;
                    header.error |= imdata.error;
                }
                Key::Children | Key::Error | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(header)
    }
}

/// An `imdata` list: its length, whether an object's body has `children`,
/// whether the first object has an `error` key.
struct Imdata {
    len: usize,
    children: bool,
    error: bool,
}

impl<'de> de::Deserialize<'de> for Imdata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Imdata, D::Error> {
        deserializer.deserialize_seq(ImdataVisitor)
    }
}

struct ImdataVisitor;

impl<'de> Visitor<'de> for ImdataVisitor {
    type Value = Imdata;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Imdata, A::Error> {
        let mut imdata = Imdata {
            len: 0,
            children: false,
            error: false,
        };
        while let Some(item) = seq.next_element::<Item>()? {
            if imdata.len == 0 {
                imdata.error = item.error;
            }
            imdata.children |= item.children;
            imdata.len += 1;
        }
        Ok(imdata)
    }
}

/// One `{"<class>": <body>}` of `imdata`.
struct Item {
    children: bool,
    error: bool,
}

impl<'de> de::Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Item, D::Error> {
        deserializer.deserialize_map(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut item = Item {
            children: false,
            error: false,
        };
        while let Some(key) = map.next_key::<Key>()? {
            item.error |= matches!(key, Key::Error);
            item.children |= map.next_value::<ItemBody>()?.0;
        }
        Ok(item)
    }
}

/// An object's body: whether it has a `children` key.
struct ItemBody(bool);

impl<'de> de::Deserialize<'de> for ItemBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ItemBody, D::Error> {
        deserializer.deserialize_map(ItemBodyVisitor)
    }
}

struct ItemBodyVisitor;

impl<'de> Visitor<'de> for ItemBodyVisitor {
    type Value = ItemBody;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemBody, A::Error> {
        let mut children = false;
        while let Some(key) = map.next_key::<Key>()? {
            children |= matches!(key, Key::Children);
            map.next_value::<IgnoredAny>()?;
        }
        Ok(ItemBody(children))
    }
}

/// (class, dn) of a fabric object and whether it is a delete.
fn fabric_key(object: &ApicObject) -> Option<((String, String), bool)> {
    let ApicObject::Other { class, attributes } = object else {
        return None;
    };
    if !FABRIC_CLASSES.contains(&class.as_str()) {
        return None;
    }
    let dn = attributes.get("dn").and_then(Value::as_str)?;
    let deleted = attributes.get("status").and_then(Value::as_str) == Some("deleted");
    Some(((class.clone(), dn.to_owned()), deleted))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn login_attributes_are_checked() {
        let ok = json!({"imdata": [{"aaaLogin": {"attributes": {"token": "abc+/=", "refreshTimeoutSeconds": "600"}}}]});
        let (t, d) = login_attributes(&ok, "x").unwrap();
        assert_eq!((t.as_str(), d), ("abc+/=", Duration::from_secs(600)));
        let short = json!({"imdata": [{"aaaLogin": {"attributes": {"token": "a", "refreshTimeoutSeconds": "0"}}}]});
        assert_eq!(
            login_attributes(&short, "x").unwrap().1,
            Duration::from_secs(2)
        );
        for bad in [
            json!({}),
            json!({"imdata": []}),
            json!({"imdata": [{"aaaLogin": {"attributes": {"token": ""}}}]}),
            json!({"imdata": [{"aaaLogin": {"attributes": {"token": "a b\r\nSet-Cookie: x"}}}]}),
        ] {
            assert!(login_attributes(&bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn apic_errors_are_read() {
        let e = json!({"totalCount": "1", "imdata": [{"error": {"attributes": {"code": "401", "text": "Username or password is incorrect"}}}]});
        assert_eq!(
            apic_error(&e).unwrap(),
            "APIC error 401: Username or password is incorrect"
        );
        assert!(apic_error(&json!({"imdata": []})).is_none());
    }

    #[tokio::test]
    async fn plain_http_off_loopback_is_refused_before_any_connection() {
        let password = vigil_core::secret::SecretSource::Inline("pw".into())
            .read(std::path::Path::new("."))
            .unwrap();
        let apic = ApicUrl {
            https: false,
            host: "10.0.0.1".into(),
            port: None,
        };
        let config = ApicConfig::new("fab1", vec![apic], "u", password);
        let sink = Arc::new(vigil_endpoints::ingest::CollectingSink::new());
        let subscriber = Subscriber::new(config, sink.clone());
        let status = subscriber.status();
        let (_stop, stop_rx) = watch::channel(false);
        let e = subscriber.run(stop_rx).await.unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        assert_eq!(status.borrow().state, SubscriberState::Stopped);
        assert_eq!(status.borrow().login_attempts, 0);
        assert!(status.borrow().last_error.is_some());
    }

    #[test]
    fn refresh_at_half_the_timeout() {
        assert_eq!(
            refresh_interval(Duration::from_secs(600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    // --- the text fast path against the `Value` path ---------------------------------

    use vigil_endpoints::ingest::CollectingSink;

    const RECEIVED: f64 = 1_765_000_000.25;
    const VRF: u32 = 2949120;
    const BD: u32 = 15990734;

    fn db_ep(node: u32, tail: &str) -> String {
        format!(
            "topology/pod-1/node-{node}/sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/{tail}"
        )
    }

    fn attrs(dn: String) -> Value {
        json!({"dn": dn, "status": "created", "flags": "local", "ifId": "eth1/1",
               "pcTag": "32771", "encap": "vlan-101", "modTs": "2026-12-07T05:00:00.000+00:00"})
    }

    fn mac(n: u32) -> String {
        format!("00:50:56:01:{:02X}:{:02X}", (n >> 8) & 0xff, n & 0xff)
    }

    fn ip(n: u32) -> String {
        format!("10.0.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }

    fn mac_ep(node: u32, n: u32) -> Value {
        let dn = db_ep(node, &format!("mac-{}", mac(n)));
        json!({"epmMacEp": {"attributes": attrs(dn)}})
    }

    fn ip_ep(node: u32, n: u32) -> Value {
        let dn = db_ep(node, &format!("ip-[{}]", ip(n)));
        json!({"epmIpEp": {"attributes": attrs(dn)}})
    }

    fn rs_rn(n: u32) -> String {
        format!(
            "rsmacEpToIpEpAtt-[sys/ctx-[vxlan-{VRF}]/bd-[vxlan-{BD}]/vlan-[vlan-101]/db-ep/ip-[{}]]",
            ip(n)
        )
    }

    fn rs_ep(node: u32, n: u32) -> Value {
        let dn = db_ep(node, &format!("mac-{}/{}", mac(n), rs_rn(n)));
        json!({"epmRsMacEpToIpEpAtt": {"attributes": attrs(dn)}})
    }

    fn overlay() -> Value {
        json!({"fvCtx": {"attributes": {"dn": "uni/tn-infra/ctx-overlay-1", "scope": "16777199",
                                        "seg": "16777199", "pcTag": "1", "name": "overlay-1"}}})
    }

    fn page(imdata: Vec<Value>) -> String {
        json!({"totalCount": imdata.len().to_string(), "subscriptionId": "72057594037927937",
               "imdata": imdata})
        .to_string()
    }

    fn notification(imdata: Vec<Value>) -> String {
        json!({"subscriptionId": ["72057594037927937"], "imdata": imdata}).to_string()
    }

    fn test_shared(record: Option<&std::path::Path>) -> (Shared, Arc<CollectingSink>) {
        let password = vigil_core::secret::SecretSource::Inline("pw".into())
            .read(std::path::Path::new("."))
            .unwrap();
        let apic = ApicUrl {
            https: false,
            host: "127.0.0.1".into(),
            port: None,
        };
        let config = ApicConfig::new("fab1", vec![apic], "u", password);
        let sink = Arc::new(CollectingSink::new());
        let status = Arc::new(watch::Sender::new(SubscriberStatus::default()));
        let recorder = record.map(|p| Recorder::open(p).unwrap());
        let shared = Shared::new(Arc::new(config), sink.clone(), status, recorder);
        (shared, sink)
    }

    /// One subscriber's state on the `Value` path (a recording is being
    /// written) and one on the text path, fed the same payloads.
    struct Twins {
        value: Shared,
        value_sink: Arc<CollectingSink>,
        text: Shared,
        text_sink: Arc<CollectingSink>,
        record: PathBuf,
    }

    impl Drop for Twins {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.record);
        }
    }

    impl Twins {
        fn new() -> Twins {
            static N: AtomicUsize = AtomicUsize::new(0);
            let record = std::env::temp_dir().join(format!(
                "vigil-apic-twins-{}-{}.jsonl",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let (value, value_sink) = test_shared(Some(&record));
            let (text, text_sink) = test_shared(None);
            Twins {
                value,
                value_sink,
                text,
                text_sink,
                record,
            }
        }

        /// Both gave the same events, rejections (with their samples),
        /// fabric models and counters so far.
        fn same(&self, what: &str) {
            let (a, b) = (self.value_sink.collected(), self.text_sink.collected());
            assert_eq!(a.events, b.events, "{what}");
            assert_eq!(a.rejected, b.rejected, "{what}");
            assert_eq!(a.fabrics, b.fabrics, "{what}");
            assert_eq!(
                *self.value.status.borrow(),
                *self.text.status.borrow(),
                "{what}"
            );
            assert_eq!(self.value.known, self.text.known, "{what}");
            assert_eq!(
                self.value.parser.overlay_vnid(),
                self.text.parser.overlay_vnid(),
                "{what}"
            );
        }

        /// A notification to both; `fast`: the text path reads it.
        async fn notify(&mut self, text: &str, fast: bool) {
            assert!(self.value.parse_text(text, RECEIVED).is_none());
            assert_eq!(
                self.text.parse_text(text, RECEIVED).is_some(),
                fast,
                "{text}"
            );
            for shared in [&mut self.value, &mut self.text] {
                let item = WsMessage {
                    text: text.to_owned(),
                    received: RECEIVED,
                };
                shared.notification(item).await.unwrap();
            }
            self.same(text);
        }

        /// A class-query response (HTTP 200) to both: the same page facts,
        /// or the same error; then applied.
        async fn page(&mut self, text: &str, fast: bool) {
            let read = |s: &Shared| {
                s.page_body(
                    reqwest::StatusCode::OK,
                    text.as_bytes().to_vec(),
                    "a page",
                    RECEIVED,
                )
            };
            match (read(&self.value), read(&self.text)) {
                (Ok(a), Ok(b)) => {
                    assert!(matches!(a, PageBody::Value(_)));
                    assert_eq!(matches!(b, PageBody::Text { .. }), fast, "{text}");
                    assert_eq!(a.total_count(), b.total_count(), "{text}");
                    assert_eq!(a.imdata_len(), b.imdata_len(), "{text}");
                    assert_eq!(a.subscription_id(), b.subscription_id(), "{text}");
                    self.value.apply_page(a, RECEIVED).await.unwrap();
                    self.text.apply_page(b, RECEIVED).await.unwrap();
                }
                (Err(a), Err(b)) => {
                    assert!(!fast, "{text}");
                    assert_eq!(a.to_string(), b.to_string(), "{text}");
                }
                (a, b) => panic!("{text}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
            }
            self.same(text);
        }

        fn events(&self) -> usize {
            self.text_sink.collected().events.len()
        }

        fn rejected(&self, reason: &str) -> u64 {
            self.text_sink
                .collected()
                .rejected
                .iter()
                .filter(|((_, r), _)| *r == reason)
                .map(|(_, (n, _))| *n)
                .sum()
        }
    }

    #[tokio::test]
    async fn the_text_path_gives_what_the_value_path_gives() {
        let mut t = Twins::new();

        // A normal page, fabric objects and endpoints mixed; the overlay
        // it teaches is used by the next payloads.
        let good = page(vec![
            overlay(),
            mac_ep(101, 1),
            ip_ep(101, 1),
            rs_ep(101, 1),
        ]);
        t.page(&good, true).await;
        assert_eq!(t.events(), 3);
        assert_eq!(t.text.parser.overlay_vnid(), 16777199);
        let ovl = json!({"epmMacEp": {"attributes": attrs(
            "topology/pod-1/node-102/sys/inst-overlay-1/db-ep/mac-00:50:56:01:00:02".into())}});
        t.notify(&notification(vec![ovl.clone(), mac_ep(102, 3)]), true)
            .await;
        t.page(&page(vec![ovl]), true).await;
        // Numbers for totalCount and subscriptionId, keys and values with
        // escapes, repeated keys (the last counts), a bare object.
        let mut escaped = notification(vec![mac_ep(101, 4)]);
        escaped = escaped.replacen("\"dn\"", "\"d\\u006e\"", 1);
        escaped = escaped.replacen("eth1/1", "eth1\\/9", 1);
        t.notify(&escaped, true).await;
        t.page(&escaped, true).await;
        let numbers = format!(
            r#"{{"totalCount": 2, "subscriptionId": 72057594037927937, "imdata": [{}, {}]}}"#,
            mac_ep(101, 5),
            ip_ep(101, 5)
        );
        t.page(&numbers, true).await;
        let repeated = format!(
            r#"{{"totalCount": "9", "imdata": [{}], "subscriptionId": "1", "imdata": [{}, {}], "totalCount": "2", "subscriptionId": 3.5}}"#,
            mac_ep(101, 6),
            mac_ep(101, 7),
            mac_ep(101, 8)
        );
        t.page(&repeated, true).await;
        t.notify(&repeated, true).await;
        t.notify(&mac_ep(103, 9).to_string(), true).await;
        t.notify(&notification(vec![]), true).await;

        // `children`: flattened on the `Value` path.
        let mut parent = mac_ep(104, 10);
        parent["epmMacEp"]["children"] = json!([
            {"epmRsMacEpToIpEpAtt": {"attributes": {"rn": rs_rn(10), "status": "created"}}}
        ]);
        let before = t.events();
        t.page(&page(vec![parent.clone(), ip_ep(104, 10)]), false)
            .await;
        t.notify(&notification(vec![parent]), false).await;
        assert_eq!(t.events(), before + 5, "the children were not flattened");
        let mut empty = mac_ep(104, 11);
        empty["epmMacEp"]["children"] = json!(null);
        t.notify(&notification(vec![empty]), false).await;

        // A payload's own `ts`, however spelt or valued, gives way to the
        // receipt time.
        let before = t.events();
        for ts in [
            r#""ts": 5"#,
            r#""t\u0073": 5"#,
            r#""ts": "x""#,
            r#""ts": -1"#,
        ] {
            let text = format!(r#"{{{ts}, "imdata": [{}]}}"#, mac_ep(105, 12));
            t.notify(&text, false).await;
            let text = format!(
                r#"{{"totalCount": "1", "subscriptionId": "1", "imdata": [{}], {ts}}}"#,
                mac_ep(105, 13)
            );
            t.page(&text, false).await;
        }
        let events = t.text_sink.collected().events;
        assert_eq!(events.len(), before + 8);
        assert!(events.iter().all(|(_, e)| e.ts == RECEIVED));

        // Bad JSON, trailing garbage, nesting past serde_json's limit in a
        // value the light pass skips.
        let deep = format!(
            r#"{{"imdata": [{{"epmMacEp": {{"attributes": {{"dn": "x", "deep": {}{}}}}}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for text in [
            "{\"imdata\": [",
            "{\"imdata\": []} x",
            "",
            "\u{feff}{}",
            &deep,
        ] {
            t.notify(text, false).await;
            t.page(text, false).await;
        }
        assert_eq!(t.rejected("not_json"), 5);

        // Not objects, and objects that are no APIC payload.
        for text in [
            "[1, 2]",
            "\"imdata\"",
            "5",
            "null",
            "{}",
            r#"{"imdata": 5}"#,
            r#"{"a": {"attributes": {}}, "b": {"attributes": {}}}"#,
        ] {
            t.notify(text, false).await;
            t.page(text, false).await;
        }
        // (Applied as pages too, though the page checks refuse them.)
        assert_eq!(t.rejected("bad_payload"), 14);

        // Bad objects among good ones: rejected one by one, the rest kept.
        let before = t.events();
        let mixed = vec![
            mac_ep(106, 14),
            json!({"epmMacEp": {"attributes": {"dn": "topology/pod-1/node-106/sys/nonsense", "status": "created"}}}),
            json!({"epmIpEp": {"attributes": {"dn": db_ep(106, "ip-[10.9.9.9]"), "status": "exploded"}}}),
            json!({"epmIpEp": {"attributes": {"status": "created"}}}),
            json!({"epmMacEp": {"nope": {}}}),
            json!({"fvBD": {"attributes": {"dn": "uni/tn-t/BD-x", "seg": "not-a-vnid"}}}),
            ip_ep(106, 14),
        ];
        t.page(&page(mixed.clone()), true).await;
        t.notify(&notification(mixed.clone()), true).await;
        assert_eq!(t.events(), before + 4);
        assert_eq!(t.rejected("bad_object"), 8);
        assert_eq!(t.rejected("bad_fabric_object"), 2);
        // Objects that are not `{"<class>": {...}}` objects: the `Value`
        // path reads those pages.
        let odd = vec![
            mac_ep(106, 15),
            json!(5),
            json!({"epmMacEp": "x"}),
            ip_ep(106, 15),
        ];
        t.page(&page(odd.clone()), false).await;
        t.notify(&notification(odd), false).await;
        assert_eq!(t.rejected("bad_object"), 12);

        // An APIC error as a page (a 200 answer): the error, as before.
        let error = r#"{"totalCount": "1", "imdata": [{"error": {"attributes": {"code": "400", "text": "no such class"}}}]}"#;
        t.page(error, false).await;
        t.notify(error, false).await;
    }

    #[tokio::test]
    async fn a_recording_keeps_the_value_path() {
        let mut t = Twins::new();
        let text = format!(
            r#"{{"ts": 5, "subscriptionId": ["1"], "imdata": [{}]}}"#,
            mac_ep(101, 1)
        );
        t.notify(&text, false).await;
        t.page(&page(vec![mac_ep(101, 2)]), true).await;
        let recorded = std::fs::read_to_string(&t.record).unwrap();
        let lines: Vec<Value> = recorded
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l["ts"] == json!(RECEIVED)));
        assert_eq!(lines[1]["imdata"][0], mac_ep(101, 2));
    }

    /// The subscriber's parse cost an object, both paths, printed (run with
    /// `cargo test --profile release-dev -p vigil-apic --lib -- --ignored
    /// --nocapture parse_cost`).
    #[tokio::test]
    #[ignore = "a timing, not a test"]
    async fn parse_cost() {
        const OBJECTS: u32 = 10_000;
        let imdata: Vec<Value> = (0..OBJECTS)
            .map(|n| match n % 3 {
                0 => mac_ep(101 + n % 4, n),
                1 => ip_ep(101 + n % 4, n),
                _ => rs_ep(101 + n % 4, n),
            })
            .collect();
        let text = page(imdata);
        let (mut shared, sink) = test_shared(None);
        let per_object =
            |d: Duration, reps: u32| d.as_secs_f64() * 1e6 / f64::from(OBJECTS) / f64::from(reps);
        for round in 0..3 {
            let reps = 5;
            let start = std::time::Instant::now();
            for _ in 0..reps {
                let value: Value = serde_json::from_slice(text.as_bytes()).unwrap();
                shared.apply(value, RECEIVED, Kind::Page).await.unwrap();
                sink.take_events();
            }
            let value_path = per_object(start.elapsed(), reps);
            let start = std::time::Instant::now();
            for _ in 0..reps {
                let body = shared
                    .page_body(
                        reqwest::StatusCode::OK,
                        text.as_bytes().to_vec(),
                        "p",
                        RECEIVED,
                    )
                    .unwrap();
                assert!(matches!(body, PageBody::Text { .. }));
                shared.apply_page(body, RECEIVED).await.unwrap();
                sink.take_events();
            }
            let text_path = per_object(start.elapsed(), reps);
            let start = std::time::Instant::now();
            for _ in 0..reps {
                let header = Header::read(&text).unwrap();
                assert_eq!(header.imdata, Some(OBJECTS as usize));
            }
            let header = per_object(start.elapsed(), reps);
            println!(
                "round {round}: {} bytes an object; Value path {value_path:.2} µs an object, text path {text_path:.2} µs (of which the header pass {header:.2} µs)",
                text.len() / OBJECTS as usize
            );
        }
    }
}
