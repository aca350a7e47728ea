//! vigil's HTTP API, `/api/v1`, served beside `/metrics` (one listener,
//! `[outputs.prometheus] listen`) when the site's `[api]` enables it
//! ([`config`]).
//!
//! # Conventions (every route, every later version of v1)
//!
//! - **Versioned paths**: everything is under `/api/v1`; within v1 fields
//!   are only ever added, never renamed or retyped. The JSON shapes are the
//!   CLI's `--json` shapes ([`crate::views`]): times RFC 3339 UTC with
//!   milliseconds, EPT's field names for endpoint data.
//! - **Every request needs a bearer token** (`Authorization: Bearer
//!   TOKEN`): no or an unknown token is `401` with `WWW-Authenticate:
//!   Bearer`; GET routes take a read or an operator token, every other
//!   method an operator token (a read token gets `403`). Tokens are
//!   compared in constant time (SHA-256 digests, every token compared) and
//!   never logged.
//! - **Errors** are `{"error": {"code": "...", "message": "..."}}` with a
//!   stable `code` (`unauthorized`, `invalid_token`, `forbidden`, `not_found`,
//!   `method_not_allowed`, `bad_request`, `payload_too_large`,
//!   `request_timeout`, `unavailable`, `internal`).
//! - **Lists are pages**: `?limit=N` (1..=1000, default 100) and
//!   `?cursor=C` (opaque, from the previous page); the answer is
//!   `{"items": [...], "next_cursor": "..."|null}`. Unknown query
//!   parameters are `400`, so a misspelt filter never silently widens a
//!   result.
//!
//! # Routes
//!
//! | route | token | what |
//! |---|---|---|
//! | `GET /api/v1/endpoints?search=&fabric=&scope=&limit=&cursor=` | read | a page of endpoints, address order ([`vigil_endpoints::query`]) |
//! | `GET /api/v1/endpoints/{fabric}/{scope}/{addr}` | read | one endpoint with every node's history |
//! | `POST /api/v1/endpoints/events` | operator | a batch of pushed endpoint events ([`vigil_endpoints::pushed`]) |
//!
//! [`router`] builds the routes on the tracker's seams (an
//! [`EventSink`] to write events to and a [`HistoryStore`] to read), so it
//! runs on its own in tests; the host merges it into the `/metrics` server
//! ([`vigil_sinks::prometheus::serve_with`]).

pub mod config;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use vigil_endpoints::pushed::{PushedLimits, parse_batch_with};
use vigil_endpoints::query::{self, DEFAULT_PAGE, MAX_PAGE, QueryError, Search};
use vigil_endpoints::{EndpointKey, EventSink, HistoryStore, Source};

pub use config::{ApiSection, ApiSettings};

use crate::views::{EndpointDetailView, EndpointPageView, EndpointView};

/// The API's path prefix.
pub const PREFIX: &str = "/api/v1";
/// Longest sample of a refused input passed to [`EventSink::rejected`].
const SAMPLE_BYTES: usize = 256;
/// Longest query string accepted.
const MAX_QUERY_BYTES: usize = 4096;
/// Longest wait for a request body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Who a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Read,
    Operator,
}

/// The tokens, as SHA-256 digests with their role.
struct Tokens(Vec<([u8; 32], Role)>);

impl Tokens {
    /// The role of `presented`, comparing it with every token in constant
    /// time (digests have one length, and every digest is compared).
    fn role(&self, presented: &[u8]) -> Option<(usize, Role)> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for (index, (token, token_role)) in self.0.iter().enumerate() {
            let difference = token
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if std::hint::black_box(difference) == 0 {
                // No token is in both lists (the config refuses it).
                found = Some((index, *token_role));
            }
        }
        found
    }
}

struct Api {
    tokens: Tokens,
    sink: Arc<dyn EventSink>,
    store: Arc<dyn HistoryStore>,
    limits: PushedLimits,
    /// One bucket per token (by index in `tokens`).
    buckets: Vec<std::sync::Mutex<Bucket>>,
    /// Requests with a missing or wrong token, all clients together.
    failed_auth: std::sync::Mutex<Bucket>,
    /// Requests served at once.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// A token bucket: `rate` tokens a second, at most `burst` saved.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    level: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            rate,
            burst: rate * 2.0,
            level: rate * 2.0,
            at: std::time::Instant::now(),
        }
    }

    /// Take one; `Err(seconds)` until one is there.
    fn take(&mut self) -> Result<(), u64> {
        let now = std::time::Instant::now();
        self.level =
            (self.level + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.level >= 1.0 {
            self.level -= 1.0;
            Ok(())
        } else {
            // At least 1 s: Retry-After counts whole seconds.
            Err(((1.0 - self.level) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

fn take(bucket: &std::sync::Mutex<Bucket>) -> Result<(), u64> {
    bucket.lock().unwrap_or_else(|p| p.into_inner()).take()
}

fn too_many(retry_after: u64, message: &str) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        message.to_owned(),
    )
    .into_response();
    if let Ok(value) = header::HeaderValue::from_str(&retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The `/api/v1` routes on the tracker's `sink` (pushed events go there)
/// and `store` (searches and records are read from it), guarded by the
/// tokens of `settings`. Merge it into the server of `/metrics`, or serve
/// it alone.
pub fn router(
    settings: ApiSettings,
    sink: Arc<dyn EventSink>,
    store: Arc<dyn HistoryStore>,
) -> axum::Router {
    let digest = |s: &vigil_core::secret::Secret| -> [u8; 32] { Sha256::digest(s.expose()).into() };
    let mut tokens: Vec<([u8; 32], Role)> = Vec::new();
    tokens.extend(settings.read_tokens.iter().map(|t| (digest(t), Role::Read)));
    tokens.extend(
        settings
            .operator_tokens
            .iter()
            .map(|t| (digest(t), Role::Operator)),
    );
    let buckets = tokens
        .iter()
        .map(|_| std::sync::Mutex::new(Bucket::new(settings.requests_per_second)))
        .collect();
    let api = Arc::new(Api {
        tokens: Tokens(tokens),
        sink,
        store,
        limits: settings.limits,
        buckets,
        failed_auth: std::sync::Mutex::new(Bucket::new(config::FAILED_AUTH_PER_SECOND)),
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            settings.max_concurrent_requests.max(1),
        )),
    });
    let v1 = axum::Router::new()
        .route("/endpoints", axum::routing::get(list_endpoints))
        .route(
            "/endpoints/{fabric}/{scope}/{addr}",
            axum::routing::get(show_endpoint),
        )
        .route("/endpoints/events", axum::routing::post(push_events))
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        // Every route and the fallback under /api/v1 (not the rest of the
        // server it is merged into).
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .with_state(api);
    axum::Router::new().nest(PREFIX, v1)
}

// --- errors ---------------------------------------------------------------------

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::warn!("api: {what}: {error}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} failed (see vigil's log)"),
        )
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Store(e) => ApiError::internal("reading the endpoint history", &e),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.code == "invalid_token" {
                "Bearer realm=\"vigil\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"vigil\""
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// `value` as a JSON answer.
fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(body),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!("api: encoding an answer: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":{"code":"internal","message":"encoding the answer failed"}}"#,
            )
                .into_response()
        }
    }
}

// --- authentication ---------------------------------------------------------------

async fn authenticate(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    // Held until the response is made: at most `max_concurrent_requests`
    // requests are read, searched or stored at once.
    let Ok(_permit) = api.in_flight.clone().try_acquire_owned() else {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many requests in progress (api.max_concurrent_requests); try again",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    let refused = |e: ApiError| match take(&api.failed_auth) {
        Ok(()) => e.into_response(),
        Err(retry) => too_many(retry, "too many requests without a valid token"),
    };
    let presented = match bearer(request.headers()) {
        Ok(token) => token,
        Err(e) => return refused(e),
    };
    let Some((index, role)) = api.tokens.role(presented) else {
        return refused(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the bearer token is not one of this site's API tokens",
        ));
    };
    if let Some(bucket) = api.buckets.get(index)
        && let Err(retry) = take(bucket)
    {
        return too_many(
            retry,
            "this token's requests per second are spent (api.requests_per_second)",
        );
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && role < Role::Operator {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route needs an operator token (api.operator_tokens)",
        )
        .into_response();
    }
    next.run(request).await
}

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Result<&[u8], ApiError> {
    let unauthorized =
        |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned());
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(unauthorized(
            "every request needs one `Authorization: Bearer TOKEN` header",
        ));
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() <= scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(unauthorized("the Authorization scheme must be Bearer"));
    }
    let token = value[scheme.len()..].trim_ascii();
    if token.is_empty() || token.len() > config::MAX_TOKEN_BYTES {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the bearer token is not one of this site's API tokens",
        ));
    }
    Ok(token)
}

// --- endpoints ------------------------------------------------------------------

/// `?a=b&c=d` percent-decoded, each name at most once, every name one of
/// `known`.
fn query_params(
    query: Option<&str>,
    known: &[&'static str],
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(Vec::new());
    };
    if query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::bad_request(format!(
            "the query string is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    let decode = |text: &str| -> Result<String, ApiError> {
        let text = text.replace('+', " ");
        percent_encoding::percent_decode_str(&text)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| ApiError::bad_request("the query string is not UTF-8"))
    };
    let mut params: Vec<(&'static str, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        let Some(known_name) = known.iter().find(|k| **k == name) else {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {:?} (known: {})",
                name.chars().take(64).collect::<String>(),
                known.join(", ")
            )));
        };
        if params.iter().any(|(n, _)| n == known_name) {
            return Err(ApiError::bad_request(format!(
                "query parameter {known_name} given twice"
            )));
        }
        params.push((known_name, decode(value)?));
    }
    Ok(params)
}

fn parse_scope(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>().map_err(|_| {
        ApiError::bad_request(format!(
            "scope {:?} is not a vnid (0..=4294967295)",
            text.chars().take(32).collect::<String>()
        ))
    })
}

/// `GET /api/v1/endpoints`: a page of endpoints.
async fn list_endpoints(
    State(api): State<Arc<Api>>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let params = query_params(
        uri.query(),
        &["search", "fabric", "scope", "limit", "cursor"],
    )?;
    let mut search = Search {
        limit: DEFAULT_PAGE,
        ..Search::default()
    };
    for (name, value) in params {
        match name {
            "search" => search.text = Some(value),
            "fabric" => search.fabric = Some(value).filter(|f| !f.is_empty()),
            "scope" => search.vnid = Some(parse_scope(&value)?),
            "limit" => {
                search.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}"))
                    })?;
            }
            _ => search.cursor = Some(value).filter(|c| !c.is_empty()),
        }
    }
    let page = query::search(api.store.as_ref(), &search).await?;
    Ok(json(
        StatusCode::OK,
        &EndpointPageView {
            items: page.items.iter().map(EndpointView::from).collect(),
            next_cursor: page.next_cursor,
        },
    ))
}

/// `GET /api/v1/endpoints/{fabric}/{scope}/{addr}`: one endpoint whole.
async fn show_endpoint(
    State(api): State<Arc<Api>>,
    Path((fabric, scope, addr)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let vnid = parse_scope(&scope)?;
    let normalized = query::normalize_address(&addr).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{:?} is not a MAC or IP address",
            addr.chars().take(64).collect::<String>()
        ))
    })?;
    let key = EndpointKey {
        fabric,
        vnid,
        addr: normalized,
    };
    match query::detail(api.store.as_ref(), &key).await {
        Ok(Some(detail)) => Ok(json(StatusCode::OK, &EndpointDetailView::from(&detail))),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no endpoint {} in fabric {:?} scope {}",
                key.addr,
                key.fabric.chars().take(64).collect::<String>(),
                key.vnid
            ),
        )),
        Err(e) => Err(ApiError::internal("reading the endpoint history", &e)),
    }
}

/// One refused event of a batch, in the answer.
#[derive(Serialize)]
struct EventErrorView {
    index: usize,
    code: &'static str,
    field: Option<&'static str>,
    message: String,
}

/// The answer to a batch.
#[derive(Serialize)]
struct BatchView {
    accepted: usize,
    rejected: usize,
    errors: Vec<EventErrorView>,
}

/// `POST /api/v1/endpoints/events`: a batch of pushed events; each good
/// event goes to the tracker, each bad one is reported by index.
async fn push_events(State(api): State<Arc<Api>>, request: Request) -> Result<Response, ApiError> {
    let max = api.limits.max_body_bytes;
    let too_large = || {
        api.sink
            .rejected(Source::Http, "too_large", "a batch larger than the limit");
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a batch is at most {max} bytes (api.max_body_size)"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let body: Body = request.into_body();
    // A client that trickles its body would hold the handler: bounded.
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return Err(too_large()),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the batch did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    let results = parse_batch_with(&bytes, &api.limits).map_err(|e| {
        let message = e.to_string();
        api.sink
            .rejected(Source::Http, e.code(), &truncate(&message, SAMPLE_BYTES));
        match e {
            vigil_endpoints::pushed::BatchError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            _ => ApiError::bad_request(message),
        }
    })?;
    let mut answer = BatchView {
        accepted: 0,
        rejected: 0,
        errors: Vec::new(),
    };
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(event) => {
                if api.sink.event(Source::Http, event).await.is_err() {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!(
                            "the endpoint tracker is shutting down; events from index {index} on were not taken ({} were)",
                            answer.accepted
                        ),
                    ));
                }
                answer.accepted += 1;
            }
            Err(e) => {
                let message = e.to_string();
                api.sink.rejected(
                    Source::Http,
                    e.code,
                    &truncate(&format!("event {index}: {message}"), SAMPLE_BYTES),
                );
                answer.rejected += 1;
                answer.errors.push(EventErrorView {
                    index,
                    code: e.code,
                    field: e.field,
                    message: e.message,
                });
            }
        }
    }
    tracing::debug!(
        accepted = answer.accepted,
        rejected = answer.rejected,
        "api: a batch of pushed endpoint events"
    );
    Ok(json(StatusCode::OK, &answer))
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests;
