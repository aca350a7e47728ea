//! One fabric's subscriber settings: [`RawApicConfig`] is the site file's
//! `[[endpoints.fabrics]]` entry as written (`deny_unknown_fields`), and
//! [`RawApicConfig::validate`] turns it into an [`ApicConfig`], reading the
//! password from its secret source. Every error names the fabric and the
//! key ([`ConfigError`]); the host adds the file and line.
//!
//! ```toml
//! [[endpoints.fabrics]]
//! name = "fab1"                          # the fabric's name in every record
//! apic = ["https://apic1.example.net", "https://apic2.example.net"]
//! username = "vigil-ro"
//! password = { env = "VIGIL_APIC_PASSWORD" }   # or { file = "..." } or inline
//! # tls_verify = true                   # false: accept any certificate (logged)
//! # ca_file = "apic-ca.pem"             # PEM roots, in addition to the system's
//! # page_size = 10000
//! # subscription_refresh = "30s"
//! # record_to = "fab1.jsonl"            # every payload as a replayable JSON line
//! ```
//!
//! Every limit has a default and a ceiling; none is unlimited (see
//! [`ApicConfig`] for each default and its bounds). Durations are written
//! `"30s"`, `"250ms"`, `"1m30s"` or as whole seconds; sizes as `"16MiB"` or
//! bytes.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vigil_core::secret::{Secret, SecretSource};
use vigil_core::units::{parse_duration, parse_size};

/// EPT's class-query page size, the ceiling of `page_size`.
pub const MAX_PAGE_SIZE: u32 = 75_000;
/// Default objects per class-query page: about 8 MB of `epmMacEp` JSON
/// (an object is 600-800 bytes), well inside `max_response_bytes`.
pub const DEFAULT_PAGE_SIZE: u32 = 10_000;

/// One APIC address: `https://host[:port]` (or `http://` to a loopback
/// address, for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApicUrl {
    /// `false` only for a loopback address.
    pub https: bool,
    /// The host as written (an IPv6 literal keeps its brackets).
    pub host: String,
    pub port: Option<u16>,
}

impl ApicUrl {
    /// Parses `https://host[:port][/]`; `http://` only to loopback.
    pub fn parse(text: &str) -> Result<ApicUrl, String> {
        let text = text.trim();
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "{text:?} is not an APIC address such as \"https://apic1.example.net\""
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "{text:?}: give the APIC's scheme, host and port only (no path, query or user)"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (inside, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed `[` in an IPv6 address"))?;
            inside
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{text:?}: {inside:?} is not an IPv6 address"))?;
            let port =
                match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| {
                        format!("{text:?}: expected `:port` after the IPv6 address")
                    })?),
                };
            (format!("[{inside}]"), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{text:?}: {p:?} is not a port (1 to 65535)"))?,
            ),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.is_empty()
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err(format!("{text:?}: {host:?} is not a host name or address"));
        }
        if !https {
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare.parse::<IpAddr>().is_ok_and(|a| a.is_loopback());
            if !loopback {
                return Err(format!(
                    "{text:?}: plain http is allowed only to a loopback address (tests); use https://"
                ));
            }
        }
        Ok(ApicUrl { https, host, port })
    }

    fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// `https://host[:port]`, the base of every REST call.
    pub fn http_base(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }

    /// `wss://host[:port]`, the base of the websocket.
    pub fn ws_base(&self) -> String {
        let scheme = if self.https { "wss" } else { "ws" };
        format!("{scheme}://{}", self.authority())
    }
}

impl fmt::Display for ApicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.http_base())
    }
}

/// One fabric's subscriber settings, checked.
#[derive(Debug, Clone)]
pub struct ApicConfig {
    /// The fabric's name (1-64 of `A-Z a-z 0-9 . _ -`), the `fabric` of
    /// every record.
    pub fabric: String,
    /// APIC addresses, tried in order at each login.
    pub apics: Vec<ApicUrl>,
    pub username: String,
    pub password: Secret,
    /// Verify the APIC's certificate (default true). `tls_verify = false`
    /// accepts any certificate and is logged as a warning at every start.
    pub tls_verify: bool,
    /// PEM roots trusted in addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// Whole REST request, headers to last byte (default 30 s; 1 s-10 min).
    pub request_timeout: Duration,
    /// TCP and TLS connect, REST and websocket (default 10 s; 1 s-2 min).
    pub connect_timeout: Duration,
    /// Objects per class-query page (default 10,000; 1-75,000).
    pub page_size: u32,
    /// Largest REST response body (default 64 MiB; 64 KiB-1 GiB).
    pub max_response_bytes: usize,
    /// Largest websocket message (default 16 MiB; 64 KiB-1 GiB). A larger
    /// one is rejected and the session rebuilt (the socket cannot be read
    /// past it).
    pub max_message_bytes: usize,
    /// Objects one build may read over all classes (default 16,000,000,
    /// four times EPT's scale of 4.18 million; 1-100,000,000).
    pub max_objects_per_build: u64,
    /// Notifications waiting to be applied, in bytes: during the build they
    /// wait for it to finish; later, for a slow tracker. Past it the
    /// session is rebuilt (default 256 MiB; 1 MiB-4 GiB).
    pub max_buffered_bytes: usize,
    /// A build taking longer is abandoned and retried (default 90 min,
    /// EPT's MAX_EPM_BUILD_TIME of 5400 s; 1 min-6 h).
    pub build_timeout: Duration,
    /// How often every subscription is refreshed (default 30 s; 5-60 s).
    /// The APIC drops a subscription that is not refreshed within its
    /// timeout (about 90 s by default), so 30 s leaves two more tries.
    pub subscription_refresh: Duration,
    /// How often a websocket ping is sent (default 30 s; 5 s-5 min).
    pub heartbeat_interval: Duration,
    /// How long its pong may take (default 10 s; 1-60 s).
    pub heartbeat_timeout: Duration,
    /// First wait after a failure (default 1 s; 100 ms-60 s); doubled after
    /// each failure up to `reconnect_max`, reset once in sync.
    pub reconnect_initial: Duration,
    /// The longest wait between attempts (default 60 s; up to 1 h).
    pub reconnect_max: Duration,
    /// Write every payload received as a JSON line with its `ts`, the
    /// format `vigil endpoints replay` reads.
    pub record_to: Option<PathBuf>,
}

impl ApicConfig {
    /// Defaults for everything but the fabric, the APICs and the login.
    pub fn new(
        fabric: impl Into<String>,
        apics: Vec<ApicUrl>,
        username: impl Into<String>,
        password: Secret,
    ) -> ApicConfig {
        ApicConfig {
            fabric: fabric.into(),
            apics,
            username: username.into(),
            password,
            tls_verify: true,
            ca_file: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            page_size: DEFAULT_PAGE_SIZE,
            max_response_bytes: 64 << 20,
            max_message_bytes: 16 << 20,
            max_objects_per_build: 16_000_000,
            max_buffered_bytes: 256 << 20,
            build_timeout: Duration::from_secs(5400),
            subscription_refresh: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(10),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            record_to: None,
        }
    }
}

/// A number or a string (`"30s"`, `"16MiB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(i64),
    Text(String),
}

impl NumberOrText {
    fn text(&self) -> String {
        match self {
            NumberOrText::Number(n) => n.to_string(),
            NumberOrText::Text(t) => t.clone(),
        }
    }
}

/// One address or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A `[[endpoints.fabrics]]` entry as written in the site file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApicConfig {
    pub name: Option<String>,
    pub apic: Option<OneOrMany>,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub tls_verify: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub request_timeout: Option<NumberOrText>,
    pub connect_timeout: Option<NumberOrText>,
    pub page_size: Option<i64>,
    pub max_response_bytes: Option<NumberOrText>,
    pub max_message_bytes: Option<NumberOrText>,
    pub max_objects_per_build: Option<i64>,
    pub max_buffered_bytes: Option<NumberOrText>,
    pub build_timeout: Option<NumberOrText>,
    pub subscription_refresh: Option<NumberOrText>,
    pub heartbeat_interval: Option<NumberOrText>,
    pub heartbeat_timeout: Option<NumberOrText>,
    pub reconnect_initial: Option<NumberOrText>,
    pub reconnect_max: Option<NumberOrText>,
    pub record_to: Option<PathBuf>,
}

/// A fabric entry that cannot be used: which fabric, which key, why. The
/// message never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoints.fabrics {}: `{key}`: {message}", fabric.as_deref().map(|f| format!("{f:?}")).unwrap_or_else(|| "(unnamed)".to_owned()))]
pub struct ConfigError {
    /// The fabric's name when it has a usable one.
    pub fabric: Option<String>,
    /// The key at fault (for the host to locate).
    pub key: &'static str,
    pub message: String,
}

fn duration_in(
    value: &Option<NumberOrText>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let Some(value) = value else {
        return Ok(default);
    };
    let text = value.text();
    let d = parse_duration(&text)?;
    if d < min || d > max {
        return Err(format!(
            "must be {} to {}, found {text:?}",
            show_duration(min),
            show_duration(max)
        ));
    }
    Ok(d)
}

fn show_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

fn size_in(
    value: &Option<NumberOrText>,
    default: usize,
    min: u64,
    max: u64,
) -> Result<usize, String> {
    let Some(value) = value else {
        return Ok(default);
    };
    let text = value.text();
    let n = parse_size(&text)?;
    if n < min || n > max {
        return Err(format!("must be {} to {} bytes, found {text:?}", min, max));
    }
    usize::try_from(n).map_err(|_| format!("{text:?} is too large for this machine"))
}

fn count_in(value: Option<i64>, default: u64, min: u64, max: u64) -> Result<u64, String> {
    let Some(v) = value else {
        return Ok(default);
    };
    u64::try_from(v)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| format!("must be {min} to {max}, found {v}"))
}

/// Whether `name` is a usable fabric name.
pub fn check_fabric_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{name:?} must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "{name:?} may contain only letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

impl RawApicConfig {
    /// Checks every key and reads the password; `base` is the site file's
    /// directory (relative `ca_file`, `record_to` and `{ file = ... }`
    /// secrets are taken from there).
    pub fn validate(&self, base: &Path) -> Result<ApicConfig, ConfigError> {
        let unnamed = |key, message: String| ConfigError {
            fabric: None,
            key,
            message,
        };
        let name = self
            .name
            .as_deref()
            .ok_or_else(|| unnamed("name", "is required".to_owned()))?;
        check_fabric_name(name).map_err(|m| unnamed("name", m))?;
        let err = |key, message: String| ConfigError {
            fabric: Some(name.to_owned()),
            key,
            message,
        };
        let apics: Vec<String> = match &self.apic {
            None => {
                return Err(err(
                    "apic",
                    "is required (the APIC's https:// address)".into(),
                ));
            }
            Some(OneOrMany::One(a)) => vec![a.clone()],
            Some(OneOrMany::Many(list)) => list.clone(),
        };
        if apics.is_empty() {
            return Err(err("apic", "names no APIC".into()));
        }
        if apics.len() > 16 {
            return Err(err(
                "apic",
                format!("names {} APICs, at most 16", apics.len()),
            ));
        }
        let apics = apics
            .iter()
            .map(|a| ApicUrl::parse(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| err("apic", m))?;
        let username = match self.username.as_deref().map(str::trim) {
            None => return Err(err("username", "is required".into())),
            Some("") => return Err(err("username", "is empty".into())),
            Some(u) if u.len() > 256 || u.chars().any(char::is_control) => {
                return Err(err(
                    "username",
                    "must be at most 256 characters, none of them control characters".into(),
                ));
            }
            Some(u) => u.to_owned(),
        };
        let password = self
            .password
            .as_ref()
            .ok_or_else(|| err("password", "is required".into()))?
            .read(base)
            .map_err(|m| err("password", m))?;
        let mut c = ApicConfig::new(name, apics, username, password);
        c.tls_verify = self.tls_verify.unwrap_or(true);
        if let Some(ca) = &self.ca_file {
            let path = base.join(ca);
            if !path.is_file() {
                return Err(err(
                    "ca_file",
                    format!("{} is not a readable file", path.display()),
                ));
            }
            c.ca_file = Some(path);
        }
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        c.request_timeout = duration_in(&self.request_timeout, c.request_timeout, s(1), s(600))
            .map_err(|m| err("request_timeout", m))?;
        c.connect_timeout = duration_in(&self.connect_timeout, c.connect_timeout, s(1), s(120))
            .map_err(|m| err("connect_timeout", m))?;
        c.page_size = count_in(
            self.page_size,
            u64::from(DEFAULT_PAGE_SIZE),
            1,
            u64::from(MAX_PAGE_SIZE),
        )
        .map_err(|m| err("page_size", m))? as u32;
        c.max_response_bytes = size_in(
            &self.max_response_bytes,
            c.max_response_bytes,
            64 << 10,
            1 << 30,
        )
        .map_err(|m| err("max_response_bytes", m))?;
        c.max_message_bytes = size_in(
            &self.max_message_bytes,
            c.max_message_bytes,
            64 << 10,
            1 << 30,
        )
        .map_err(|m| err("max_message_bytes", m))?;
        c.max_objects_per_build = count_in(
            self.max_objects_per_build,
            c.max_objects_per_build,
            1,
            100_000_000,
        )
        .map_err(|m| err("max_objects_per_build", m))?;
        c.max_buffered_bytes = size_in(
            &self.max_buffered_bytes,
            c.max_buffered_bytes,
            1 << 20,
            4 << 30,
        )
        .map_err(|m| err("max_buffered_bytes", m))?;
        c.build_timeout = duration_in(&self.build_timeout, c.build_timeout, s(60), s(6 * 3600))
            .map_err(|m| err("build_timeout", m))?;
        c.subscription_refresh = duration_in(
            &self.subscription_refresh,
            c.subscription_refresh,
            s(5),
            s(60),
        )
        .map_err(|m| err("subscription_refresh", m))?;
        c.heartbeat_interval =
            duration_in(&self.heartbeat_interval, c.heartbeat_interval, s(5), s(300))
                .map_err(|m| err("heartbeat_interval", m))?;
        c.heartbeat_timeout =
            duration_in(&self.heartbeat_timeout, c.heartbeat_timeout, s(1), s(60))
                .map_err(|m| err("heartbeat_timeout", m))?;
        c.reconnect_initial =
            duration_in(&self.reconnect_initial, c.reconnect_initial, ms(100), s(60))
                .map_err(|m| err("reconnect_initial", m))?;
        c.reconnect_max = duration_in(&self.reconnect_max, c.reconnect_max, ms(100), s(3600))
            .map_err(|m| err("reconnect_max", m))?;
        if c.reconnect_max < c.reconnect_initial {
            return Err(err(
                "reconnect_max",
                format!(
                    "{} is shorter than reconnect_initial ({})",
                    show_duration(c.reconnect_max),
                    show_duration(c.reconnect_initial)
                ),
            ));
        }
        c.record_to = self.record_to.as_ref().map(|p| base.join(p));
        Ok(c)
    }
}

/// Validates every entry and checks that fabric names are unique.
pub fn validate_all(
    entries: &[RawApicConfig],
    base: &Path,
) -> Result<Vec<ApicConfig>, ConfigError> {
    let mut out: Vec<ApicConfig> = Vec::with_capacity(entries.len());
    for entry in entries {
        let config = entry.validate(base)?;
        if out.iter().any(|c| c.fabric == config.fabric) {
            return Err(ConfigError {
                fabric: Some(config.fabric),
                key: "name",
                message: "is the name of an earlier fabric too".into(),
            });
        }
        out.push(config);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn raw(text: &str) -> Result<RawApicConfig, toml::de::Error> {
        toml::from_str(text)
    }

    const BASE: &str = "name = \"fab1\"\napic = \"https://apic1.example.net\"\nusername = \"u\"\npassword = \"hunter2-pw\"\n";

    #[test]
    fn defaults_and_redaction() {
        let c = raw(BASE).unwrap().validate(Path::new(".")).unwrap();
        assert_eq!(c.fabric, "fab1");
        assert_eq!(c.apics[0].http_base(), "https://apic1.example.net");
        assert_eq!(c.apics[0].ws_base(), "wss://apic1.example.net");
        assert!(c.tls_verify);
        assert_eq!(c.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(c.subscription_refresh, Duration::from_secs(30));
        assert_eq!(c.password.expose_text(), "hunter2-pw");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", raw(BASE).unwrap()).contains("hunter2"));
    }

    #[test]
    fn every_key() {
        let text = format!(
            "{BASE}tls_verify = false\nrequest_timeout = \"45s\"\nconnect_timeout = 5\npage_size = 500\n\
             max_response_bytes = \"8MiB\"\nmax_message_bytes = \"1MiB\"\nmax_objects_per_build = 1000\n\
             max_buffered_bytes = \"32MiB\"\nbuild_timeout = \"10m\"\nsubscription_refresh = \"20s\"\n\
             heartbeat_interval = \"15s\"\nheartbeat_timeout = \"5s\"\nreconnect_initial = \"500ms\"\n\
             reconnect_max = \"2m\"\nrecord_to = \"rec.jsonl\"\n"
        );
        let c = raw(&text).unwrap().validate(Path::new("/site")).unwrap();
        assert!(!c.tls_verify);
        assert_eq!(c.request_timeout, Duration::from_secs(45));
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.page_size, 500);
        assert_eq!(c.max_response_bytes, 8 << 20);
        assert_eq!(c.max_message_bytes, 1 << 20);
        assert_eq!(c.max_objects_per_build, 1000);
        assert_eq!(c.max_buffered_bytes, 32 << 20);
        assert_eq!(c.build_timeout, Duration::from_secs(600));
        assert_eq!(c.reconnect_initial, Duration::from_millis(500));
        assert_eq!(c.reconnect_max, Duration::from_secs(120));
        assert_eq!(c.record_to.as_deref(), Some(Path::new("/site/rec.jsonl")));
    }

    #[test]
    fn errors_name_the_fabric_and_key() {
        let check = |extra: &str, key: &str, part: &str| {
            let e = raw(&format!("{BASE}{extra}"))
                .unwrap()
                .validate(Path::new("."))
                .unwrap_err();
            assert_eq!(e.key, key, "{e}");
            let text = e.to_string();
            assert!(text.starts_with("endpoints.fabrics \"fab1\": `"), "{text}");
            assert!(text.contains(part), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        };
        check("page_size = 0\n", "page_size", "1 to 75000");
        check("page_size = 100000\n", "page_size", "found 100000");
        check(
            "subscription_refresh = \"90s\"\n",
            "subscription_refresh",
            "5s to 60s",
        );
        check(
            "heartbeat_timeout = \"forever\"\n",
            "heartbeat_timeout",
            "not a duration",
        );
        check(
            "max_message_bytes = \"2GiB\"\n",
            "max_message_bytes",
            "bytes",
        );
        check(
            "reconnect_initial = \"10s\"\nreconnect_max = \"5s\"\n",
            "reconnect_max",
            "shorter",
        );
        check(
            "ca_file = \"/nonexistent/ca.pem\"\n",
            "ca_file",
            "/nonexistent/ca.pem",
        );
        let e = raw("name = \"f\"\napic = \"http://apic1.example.net\"\nusername = \"u\"\npassword = \"p\"\n")
            .unwrap()
            .validate(Path::new("."))
            .unwrap_err();
        assert_eq!(e.key, "apic");
        assert!(e.message.contains("loopback"), "{e}");
        let e = raw("name = \"f\"\napic = \"https://a\"\nusername = \"u\"\npassword = { env = \"VIGIL_APIC_TEST_UNSET_VAR\" }\n")
            .unwrap()
            .validate(Path::new("."))
            .unwrap_err();
        assert_eq!(e.key, "password");
        assert!(e.message.contains("VIGIL_APIC_TEST_UNSET_VAR"), "{e}");
        let e = raw("apic = \"https://a\"\n")
            .unwrap()
            .validate(Path::new("."))
            .unwrap_err();
        assert_eq!((e.fabric, e.key), (None, "name"));
        assert!(raw(&format!("{BASE}colour = \"blue\"\n")).is_err());
    }

    #[test]
    fn urls() {
        let u = ApicUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(u.http_base(), "http://127.0.0.1:8080");
        assert_eq!(u.ws_base(), "ws://127.0.0.1:8080");
        let u = ApicUrl::parse("https://[2001:db8::1]:8443").unwrap();
        assert_eq!(u.http_base(), "https://[2001:db8::1]:8443");
        assert!(ApicUrl::parse("http://[::1]:1").is_ok());
        assert!(ApicUrl::parse("http://localhost").is_ok());
        for bad in [
            "apic1",
            "ftp://a",
            "https://a/api",
            "https://u@a",
            "https://a:0",
            "https://a:99999",
            "https://",
            "http://10.0.0.1",
            "https://[zz]",
        ] {
            assert!(ApicUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_names() {
        let a = raw(BASE).unwrap();
        let b = raw(BASE).unwrap();
        let e = validate_all(&[a, b], Path::new(".")).unwrap_err();
        assert_eq!(e.key, "name");
    }
}
