//! The `[api]` section of `site.toml`: whether `/api/v1` is served, who may
//! call it, and its bounds.
//!
//! ```toml
//! [api]
//! enabled = true
//! # GET routes (searches, endpoint records).
//! read_tokens = [{ env = "VIGIL_API_READ_TOKEN" }]
//! # Every route, including those that change state (pushed events).
//! operator_tokens = [{ file = "secrets/api-operator.token" }]
//! # Optional bounds on POST /api/v1/endpoints/events.
//! max_body_size = "1MiB"
//! max_batch_events = 1000
//! # Each token's requests per second (bursts of twice that; then 429),
//! # and requests served at once (then 503).
//! requests_per_second = 50
//! max_concurrent_requests = 32
//! ```
//!
//! Tokens are secrets ([`SecretSource`]: inline, `{ env = "VAR" }` or
//! `{ file = "path" }`), read when the config loads; each is at least
//! [`MIN_TOKEN_BYTES`] bytes of visible ASCII (what an HTTP `Authorization:
//! Bearer` header can carry), and no token may be in both lists.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use vigil_core::secret::{Secret, SecretSource};
use vigil_core::{At, LocatedError};
use vigil_endpoints::pushed::PushedLimits;

/// Shortest token accepted (128 bits of hex).
pub const MIN_TOKEN_BYTES: usize = 32;
/// Longest token accepted.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Most tokens in each list.
pub const MAX_TOKENS: usize = 64;
/// Bounds of `max_body_size`.
pub const BODY_SIZE_RANGE: (u64, u64) = (1024, 64 << 20);
/// Bounds of `max_batch_events`.
pub const BATCH_EVENTS_RANGE: (i64, i64) = (1, 100_000);
/// Default and bounds of `requests_per_second` (per token; bursts of twice
/// that).
pub const REQUESTS_PER_SECOND: (i64, i64, i64) = (50, 1, 100_000);
/// Default and bounds of `max_concurrent_requests` (all tokens).
pub const CONCURRENT_REQUESTS: (i64, i64, i64) = (32, 1, 4096);
/// Requests with a missing or wrong token answered per second, all
/// clients together; past it they get 429 (a guessing client is slowed
/// down, and never costs the host more than this).
pub const FAILED_AUTH_PER_SECOND: u32 = 10;

/// `[api]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    enabled: Option<Spanned<bool>>,
    #[serde(default)]
    read_tokens: Vec<Spanned<SecretSource>>,
    #[serde(default)]
    operator_tokens: Vec<Spanned<SecretSource>>,
    max_body_size: Option<Spanned<toml::Value>>,
    max_batch_events: Option<Spanned<i64>>,
    requests_per_second: Option<Spanned<i64>>,
    max_concurrent_requests: Option<Spanned<i64>>,
}

/// `/api/v1`'s settings, when the site enables it.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Tokens for GET routes.
    pub read_tokens: Vec<Secret>,
    /// Tokens for every route.
    pub operator_tokens: Vec<Secret>,
    /// Bounds on pushed event batches.
    pub limits: PushedLimits,
    /// Requests each token may make per second (bursts of twice that).
    pub requests_per_second: u32,
    /// Requests served at once, all tokens together; more get 503.
    pub max_concurrent_requests: usize,
}

impl ApiSettings {
    /// Settings with these tokens and the default bounds (tests, tools).
    pub fn new(read_tokens: Vec<Secret>, operator_tokens: Vec<Secret>) -> ApiSettings {
        ApiSettings {
            read_tokens,
            operator_tokens,
            limits: PushedLimits::default(),
            requests_per_second: REQUESTS_PER_SECOND.0 as u32,
            max_concurrent_requests: CONCURRENT_REQUESTS.0 as usize,
        }
    }
}

impl ApiSection {
    /// The settings, `None` unless `enabled = true`; `site_file` is the
    /// site file (secret files are relative to its directory), `served`
    /// whether the site serves `/metrics` (the API's listener).
    pub fn resolve(
        self,
        site_file: &Path,
        served: bool,
        at: At<'_>,
    ) -> Result<Option<ApiSettings>, LocatedError> {
        let base = site_file.parent().unwrap_or(Path::new("."));
        let enabled = self.enabled.as_ref().is_some_and(|e| *e.get_ref());
        let mut limits = PushedLimits::default();
        if let Some(size) = &self.max_body_size {
            let text = match size.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                other => other.to_string(),
            };
            let value = vigil_core::units::parse_size(&text)
                .map_err(|e| at(size.span(), format!("api.max_body_size: {e}")))?;
            if !(BODY_SIZE_RANGE.0..=BODY_SIZE_RANGE.1).contains(&value) {
                return Err(at(
                    size.span(),
                    format!("api.max_body_size must be 1KiB to 64MiB, found {text}"),
                ));
            }
            limits.max_body_bytes = usize::try_from(value).unwrap_or(usize::MAX);
        }
        if let Some(count) = &self.max_batch_events {
            let value = *count.get_ref();
            if !(BATCH_EVENTS_RANGE.0..=BATCH_EVENTS_RANGE.1).contains(&value) {
                return Err(at(
                    count.span(),
                    format!(
                        "api.max_batch_events must be {} to {}, found {value}",
                        BATCH_EVENTS_RANGE.0, BATCH_EVENTS_RANGE.1
                    ),
                ));
            }
            limits.max_events = usize::try_from(value).unwrap_or(usize::MAX);
        }
        let bounded =
            |key: &str, value: &Option<Spanned<i64>>, (default, min, max): (i64, i64, i64)| {
                match value {
                    None => Ok(default),
                    Some(v) if (min..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
                    Some(v) => Err(at(
                        v.span(),
                        format!("api.{key} must be {min} to {max}, found {}", v.get_ref()),
                    )),
                }
            };
        let requests_per_second = bounded(
            "requests_per_second",
            &self.requests_per_second,
            REQUESTS_PER_SECOND,
        )?;
        let max_concurrent_requests = bounded(
            "max_concurrent_requests",
            &self.max_concurrent_requests,
            CONCURRENT_REQUESTS,
        )?;
        let read_tokens = tokens(&self.read_tokens, "read_tokens", base, at)?;
        let operator_tokens = tokens(&self.operator_tokens, "operator_tokens", base, at)?;
        for (i, token) in operator_tokens.iter().enumerate() {
            if read_tokens.contains(token) {
                return Err(at(
                    self.operator_tokens[i].span(),
                    format!("api.operator_tokens[{i}] is also a read token: a token has one role"),
                ));
            }
        }
        if !enabled {
            return Ok(None);
        }
        if read_tokens.is_empty() && operator_tokens.is_empty() {
            let span = self.enabled.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err(at(
                span,
                "api.enabled = true needs at least one token in api.read_tokens or api.operator_tokens (every request needs one)".to_owned(),
            ));
        }
        if !served {
            let span = self.enabled.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err(at(
                span,
                "api.enabled = true needs [outputs.prometheus]: the API is served on its listen address, beside /metrics".to_owned(),
            ));
        }
        Ok(Some(ApiSettings {
            read_tokens,
            operator_tokens,
            limits,
            // Within u32 and usize by the bounds above.
            requests_per_second: u32::try_from(requests_per_second).unwrap_or(u32::MAX),
            max_concurrent_requests: usize::try_from(max_concurrent_requests).unwrap_or(1),
        }))
    }
}

fn tokens(
    list: &[Spanned<SecretSource>],
    key: &str,
    base: &Path,
    at: At<'_>,
) -> Result<Vec<Secret>, LocatedError> {
    if list.len() > MAX_TOKENS {
        return Err(at(
            list.get(MAX_TOKENS).map(Spanned::span).unwrap_or(0..0),
            format!("api.{key}: more than {MAX_TOKENS} tokens"),
        ));
    }
    let mut secrets: Vec<Secret> = Vec::with_capacity(list.len());
    for (i, source) in list.iter().enumerate() {
        let fail = |why: String| at(source.span(), format!("api.{key}[{i}]: {why}"));
        let secret = source.get_ref().read(base).map_err(fail)?;
        let bytes = secret.expose();
        // Never the value in a message: its length and what is wrong.
        if bytes.len() < MIN_TOKEN_BYTES || bytes.len() > MAX_TOKEN_BYTES {
            return Err(fail(format!(
                "a token is {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} bytes, this one is {}",
                bytes.len()
            )));
        }
        if !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(fail(
                "a token is visible ASCII only (no spaces or control characters)".to_owned(),
            ));
        }
        if secrets.contains(&secret) {
            return Err(fail("the same token is listed twice".to_owned()));
        }
        secrets.push(secret);
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use crate::site::{DefaultDirs, SiteConfig};
    use std::path::{Path, PathBuf};

    const READ: &str = "read-token-0123456789abcdef0123456789";
    const OPERATOR: &str = "operator-token-0123456789abcdef01234";

    fn parse(dir: &Path, api: &str) -> Result<SiteConfig, String> {
        let text = format!(
            "[site]\nname = \"lab\"\n[outputs.prometheus]\nlisten = \"127.0.0.1:0\"\n[api]\n{api}\n"
        );
        let dirs = DefaultDirs {
            data: PathBuf::from("/var/lib/vigil"),
            cache: PathBuf::from("/var/cache/vigil"),
        };
        SiteConfig::parse_in(&dir.join("site.toml"), &text, &dirs).map_err(|e| e.to_string())
    }

    #[test]
    fn tokens_inline_and_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("op.token"), format!("{OPERATOR}\n")).expect("write");
        let site = parse(
            dir.path(),
            &format!(
                "enabled = true\nread_tokens = [\"{READ}x\", \"{READ}\"]\noperator_tokens = [{{ file = \"op.token\" }}]\nmax_body_size = \"64KiB\"\nmax_batch_events = 10"
            ),
        )
        .expect("parses");
        let api = site.api.expect("enabled");
        assert_eq!(api.read_tokens.len(), 2);
        assert_eq!(api.read_tokens[1].expose_text(), READ);
        assert_eq!(api.operator_tokens[0].expose_text(), OPERATOR);
        assert_eq!(api.limits.max_body_bytes, 64 * 1024);
        assert_eq!(api.limits.max_events, 10);
        // Off unless enabled.
        let site = parse(dir.path(), &format!("read_tokens = [\"{READ}\"]")).expect("parses");
        assert!(site.api.is_none());
        assert!(parse(dir.path(), "").expect("parses").api.is_none());
    }

    #[test]
    fn bad_sections_are_located_errors_that_never_show_a_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("enabled = true", "at least one token"),
            (
                "enabled = true\nread_tokens = [\"short\"]",
                "32 to 1024 bytes",
            ),
            (
                &format!("enabled = true\nread_tokens = [\"{READ} x\"]") as &str,
                "visible ASCII",
            ),
            (
                &format!("enabled = true\nread_tokens = [\"{READ}\", \"{READ}\"]"),
                "listed twice",
            ),
            (
                &format!(
                    "enabled = true\nread_tokens = [\"{READ}\"]\noperator_tokens = [\"{READ}\"]"
                ),
                "also a read token",
            ),
            (
                "enabled = true\noperator_tokens = [{ env = \"VIGIL_TEST_SURELY_UNSET_7d1c\" }]",
                "VIGIL_TEST_SURELY_UNSET_7d1c is not set",
            ),
            (
                &format!(
                    "enabled = true\noperator_tokens = [\"{OPERATOR}\"]\nmax_batch_events = 0"
                ),
                "max_batch_events must be",
            ),
            (
                &format!(
                    "enabled = true\noperator_tokens = [\"{OPERATOR}\"]\nmax_body_size = \"1GiB\""
                ),
                "max_body_size must be",
            ),
            (
                &format!(
                    "enabled = true\noperator_tokens = [\"{OPERATOR}\"]\nrequests_per_second = 0"
                ),
                "api.requests_per_second must be 1 to 100000, found 0",
            ),
            (
                &format!(
                    "enabled = true\noperator_tokens = [\"{OPERATOR}\"]\nmax_concurrent_requests = 100000"
                ),
                "api.max_concurrent_requests must be 1 to 4096",
            ),
            ("enabled = true\ntokens = []", "unknown field"),
        ];
        for (api, expected) in cases {
            let error = parse(dir.path(), api).expect_err(api);
            assert!(error.contains(expected), "{api}: {error}");
            assert!(error.contains("site.toml:"), "located: {error}");
            assert!(
                !error.contains(READ) && !error.contains(OPERATOR),
                "{error}"
            );
        }
        // Without /metrics there is no listener to serve the API on.
        let text =
            format!("[site]\nname = \"lab\"\n[api]\nenabled = true\nread_tokens = [\"{READ}\"]\n");
        let dirs = DefaultDirs {
            data: PathBuf::from("/d"),
            cache: PathBuf::from("/c"),
        };
        let error = SiteConfig::parse_in(&dir.path().join("site.toml"), &text, &dirs)
            .expect_err("no prometheus")
            .to_string();
        assert!(error.contains("[outputs.prometheus]"), "{error}");
    }
}
