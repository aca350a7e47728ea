//! What the operator configures for SNMP: request defaults and budgets in the
//! site's `[snmp]` table, credentials in `[[snmp.credentials]]` (matched to
//! resources by filter, first match wins), and a plugin's `[snmp]` overrides.
//!
//! Secrets may be written inline, or kept out of the file as
//! `{ env = "VAR" }` or `{ file = "path" }`. They are read once at start-up
//! and held in [`Secret`], whose `Debug` never shows them.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::filter::ResourceFilter;
use crate::model::Resource;
use crate::plugin::ini::LocatedError;
pub use crate::secret::Secret;
use crate::secret::SecretSource;
use crate::units::parse_duration;

/// Request settings: the site's defaults, or a plugin's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// Attempts after the first one.
    pub retries: u32,
    /// GETBULK max-repetitions for walks.
    pub max_repetitions: u32,
}

impl Default for RequestOptions {
    /// 5 s and 2 retries, as snmp_exporter and Telegraf; 25 repetitions, as
    /// Panoptes.
    fn default() -> Self {
        RequestOptions {
            timeout: Duration::from_secs(5),
            retries: 2,
            max_repetitions: 25,
        }
    }
}

const TIMEOUT_RANGE: Range<Duration> = Duration::from_millis(10)..Duration::from_secs(61);
const MAX_RETRIES: u32 = 10;
const MAX_REPETITIONS: u32 = 200;
const DEFAULT_VARBINDS_PER_RUN: u64 = 100_000;
const MAX_VARBINDS_PER_RUN: u64 = 1_000_000;
const DEFAULT_BYTES_PER_RUN: u64 = 32 << 20;
const MAX_BYTES_PER_RUN: u64 = 512 << 20;

/// The site's SNMP settings.
#[derive(Debug, Clone)]
pub struct SnmpSettings {
    pub defaults: RequestOptions,
    /// Varbinds one run may receive in total; a walk that never ends stops
    /// here.
    pub max_varbinds_per_run: u64,
    /// Bytes of OIDs and values one run may receive, so an agent sending
    /// huge strings cannot fill the host's memory within the varbind budget.
    pub max_bytes_per_run: u64,
    pub credentials: Vec<CredentialRule>,
}

impl Default for SnmpSettings {
    fn default() -> Self {
        SnmpSettings {
            defaults: RequestOptions::default(),
            max_varbinds_per_run: DEFAULT_VARBINDS_PER_RUN,
            max_bytes_per_run: DEFAULT_BYTES_PER_RUN,
            credentials: Vec::new(),
        }
    }
}

impl SnmpSettings {
    /// The first credential whose filter selects `resource`.
    pub fn credential_for(&self, resource: &Resource) -> Option<&CredentialRule> {
        self.credentials.iter().find(|rule| {
            rule.filter
                .as_ref()
                .is_none_or(|filter| filter.matches(resource))
        })
    }
}

/// One `[[snmp.credentials]]` entry.
#[derive(Debug, Clone)]
pub struct CredentialRule {
    /// `None` matches every resource.
    pub filter: Option<ResourceFilter>,
    /// Used when the resource's endpoint names no port.
    pub port: u16,
    pub credential: Credential,
    /// Where the entry is, for messages (`site.toml:42`).
    pub origin: String,
}

#[derive(Debug, Clone)]
pub enum Credential {
    V1 { community: Secret },
    V2c { community: Secret },
    V3(UsmUser),
}

impl Credential {
    pub fn version_name(&self) -> &'static str {
        match self {
            Credential::V1 { .. } => "v1",
            Credential::V2c { .. } => "v2c",
            Credential::V3(_) => "v3",
        }
    }
}

/// An SNMPv3 user-based security model identity.
#[derive(Debug, Clone)]
pub struct UsmUser {
    pub name: String,
    /// `None` = noAuthNoPriv.
    pub auth: Option<(snmp2::v3::AuthProtocol, Secret)>,
    /// `None` = no privacy (authNoPriv when `auth` is set).
    pub privacy: Option<(snmp2::v3::Cipher, Secret)>,
    pub context: String,
    /// How AES-192/256 keys are stretched from a short hash (agents differ).
    pub key_extension: Option<snmp2::v3::KeyExtension>,
}

/// The site file's `[snmp]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnmpSection {
    timeout: Option<Spanned<toml::Value>>,
    retries: Option<Spanned<u32>>,
    max_repetitions: Option<Spanned<u32>>,
    max_varbinds_per_run: Option<Spanned<u64>>,
    max_bytes_per_run: Option<Spanned<toml::Value>>,
    #[serde(default)]
    credentials: Vec<Spanned<CredentialEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialEntry {
    filter: Option<Spanned<String>>,
    version: Spanned<String>,
    port: Option<Spanned<u16>>,
    community: Option<Spanned<SecretSource>>,
    user: Option<Spanned<String>>,
    auth_protocol: Option<Spanned<String>>,
    auth_password: Option<Spanned<SecretSource>>,
    privacy_protocol: Option<Spanned<String>>,
    privacy_password: Option<Spanned<SecretSource>>,
    context: Option<Spanned<String>>,
    key_extension: Option<Spanned<String>>,
}

/// Checks the `[snmp]` table and reads every secret it points to.
pub(crate) fn resolve(
    section: SnmpSection,
    site_file: &Path,
    at: &dyn Fn(Range<usize>, String) -> LocatedError,
) -> Result<SnmpSettings, LocatedError> {
    let mut settings = SnmpSettings::default();
    if let Some(timeout) = &section.timeout {
        let text = match timeout.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(at(
                    timeout.span(),
                    format!(
                        "snmp.timeout: expected a duration such as \"5s\", found {}",
                        other.type_str()
                    ),
                ));
            }
        };
        settings.defaults.timeout =
            check_timeout(&text).map_err(|e| at(timeout.span(), format!("snmp.timeout: {e}")))?;
    }
    if let Some(retries) = &section.retries {
        settings.defaults.retries = check_retries(*retries.get_ref())
            .map_err(|e| at(retries.span(), format!("snmp.retries: {e}")))?;
    }
    if let Some(reps) = &section.max_repetitions {
        settings.defaults.max_repetitions = check_repetitions(*reps.get_ref())
            .map_err(|e| at(reps.span(), format!("snmp.max_repetitions: {e}")))?;
    }
    if let Some(budget) = &section.max_varbinds_per_run {
        let value = *budget.get_ref();
        if !(1..=MAX_VARBINDS_PER_RUN).contains(&value) {
            return Err(at(
                budget.span(),
                format!(
                    "snmp.max_varbinds_per_run must be 1 to {MAX_VARBINDS_PER_RUN}, found {value}"
                ),
            ));
        }
        settings.max_varbinds_per_run = value;
    }
    if let Some(bytes) = &section.max_bytes_per_run {
        let text = match bytes.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            other => other.to_string(),
        };
        let value = crate::units::parse_size(&text)
            .map_err(|e| at(bytes.span(), format!("snmp.max_bytes_per_run: {e}")))?;
        if !(1..=MAX_BYTES_PER_RUN).contains(&value) {
            return Err(at(
                bytes.span(),
                format!("snmp.max_bytes_per_run must be 1 byte to 512MiB, found {text}"),
            ));
        }
        settings.max_bytes_per_run = value;
    }
    let base = site_file.parent().unwrap_or(Path::new("."));
    for (number, entry) in section.credentials.iter().enumerate() {
        let origin = at(entry.span(), String::new());
        let origin = format!("{}:{}", origin.path.display(), origin.line);
        let name = format!("snmp.credentials[{}]", number + 1);
        settings
            .credentials
            .push(credential_rule(entry.get_ref(), &name, origin, base, at)?);
    }
    Ok(settings)
}

fn credential_rule(
    entry: &CredentialEntry,
    name: &str,
    origin: String,
    base: &Path,
    at: &dyn Fn(Range<usize>, String) -> LocatedError,
) -> Result<CredentialRule, LocatedError> {
    let filter = match &entry.filter {
        Some(text) => Some(ResourceFilter::parse(text.get_ref()).map_err(|e| {
            at(
                text.span(),
                format!(
                    "{name}.filter: {}",
                    e.render(text.get_ref()).replace('\n', " ")
                ),
            )
        })?),
        None => None,
    };
    let port = match &entry.port {
        Some(port) if *port.get_ref() == 0 => {
            return Err(at(port.span(), format!("{name}.port must not be 0")));
        }
        Some(port) => *port.get_ref(),
        None => 161,
    };
    let secret = |source: &Spanned<SecretSource>, field: &str| {
        source
            .get_ref()
            .read(base)
            .map_err(|e| at(source.span(), format!("{name}.{field}: {e}")))
    };
    let version = entry.version.get_ref().trim().to_ascii_lowercase();
    let v3_only = [
        ("user", entry.user.as_ref().map(Spanned::span)),
        (
            "auth_protocol",
            entry.auth_protocol.as_ref().map(Spanned::span),
        ),
        (
            "auth_password",
            entry.auth_password.as_ref().map(Spanned::span),
        ),
        (
            "privacy_protocol",
            entry.privacy_protocol.as_ref().map(Spanned::span),
        ),
        (
            "privacy_password",
            entry.privacy_password.as_ref().map(Spanned::span),
        ),
        ("context", entry.context.as_ref().map(Spanned::span)),
        (
            "key_extension",
            entry.key_extension.as_ref().map(Spanned::span),
        ),
    ];
    let credential = match version.trim_start_matches('v') {
        "1" | "2c" => {
            if let Some((field, Some(span))) = v3_only.iter().find(|(_, span)| span.is_some()) {
                return Err(at(
                    span.clone(),
                    format!("{name}.{field} only applies to version \"3\""),
                ));
            }
            let community = entry.community.as_ref().ok_or_else(|| {
                at(
                    entry.version.span(),
                    format!("{name}: version {version:?} needs a community"),
                )
            })?;
            let community = secret(community, "community")?;
            if version.ends_with('1') {
                Credential::V1 { community }
            } else {
                Credential::V2c { community }
            }
        }
        "3" => {
            if let Some(community) = &entry.community {
                return Err(at(
                    community.span(),
                    format!("{name}.community does not apply to version \"3\" (use user)"),
                ));
            }
            let user = entry.user.as_ref().ok_or_else(|| {
                at(
                    entry.version.span(),
                    format!("{name}: version \"3\" needs a user"),
                )
            })?;
            let auth = match (&entry.auth_protocol, &entry.auth_password) {
                (None, None) => None,
                (Some(protocol), Some(password)) => {
                    let parsed = auth_protocol(protocol.get_ref())
                        .map_err(|e| at(protocol.span(), format!("{name}.auth_protocol: {e}")))?;
                    let password_value = secret(password, "auth_password")?;
                    check_password_length(&password_value)
                        .map_err(|e| at(password.span(), format!("{name}.auth_password: {e}")))?;
                    Some((parsed, password_value))
                }
                (Some(span_of), None) => {
                    return Err(at(
                        span_of.span(),
                        format!("{name}: auth_protocol needs auth_password"),
                    ));
                }
                (None, Some(span_of)) => {
                    return Err(at(
                        span_of.span(),
                        format!("{name}: auth_password needs auth_protocol"),
                    ));
                }
            };
            let privacy = match (&entry.privacy_protocol, &entry.privacy_password) {
                (None, None) => None,
                (Some(protocol), Some(password)) => {
                    if auth.is_none() {
                        return Err(at(
                            protocol.span(),
                            format!("{name}: privacy needs authentication (auth_protocol)"),
                        ));
                    }
                    let parsed = privacy_protocol(protocol.get_ref()).map_err(|e| {
                        at(protocol.span(), format!("{name}.privacy_protocol: {e}"))
                    })?;
                    let password_value = secret(password, "privacy_password")?;
                    check_password_length(&password_value).map_err(|e| {
                        at(password.span(), format!("{name}.privacy_password: {e}"))
                    })?;
                    Some((parsed, password_value))
                }
                (Some(span_of), None) => {
                    return Err(at(
                        span_of.span(),
                        format!("{name}: privacy_protocol needs privacy_password"),
                    ));
                }
                (None, Some(span_of)) => {
                    return Err(at(
                        span_of.span(),
                        format!("{name}: privacy_password needs privacy_protocol"),
                    ));
                }
            };
            let key_extension = match &entry.key_extension {
                None => None,
                Some(text) => Some(match text.get_ref().trim().to_ascii_lowercase().as_str() {
                    "blumenthal" => snmp2::v3::KeyExtension::Blumenthal,
                    "reeder" => snmp2::v3::KeyExtension::Reeder,
                    other => {
                        return Err(at(
                            text.span(),
                            format!(
                                "{name}.key_extension: {other:?} is not \"blumenthal\" or \"reeder\""
                            ),
                        ));
                    }
                }),
            };
            Credential::V3(UsmUser {
                name: user.get_ref().clone(),
                auth,
                privacy,
                context: entry
                    .context
                    .as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_default(),
                key_extension,
            })
        }
        _ => {
            return Err(at(
                entry.version.span(),
                format!(
                    "{name}.version {:?} is not \"1\", \"2c\" or \"3\"",
                    entry.version.get_ref()
                ),
            ));
        }
    };
    Ok(CredentialRule {
        filter,
        port,
        credential,
        origin,
    })
}

/// RFC 3414 asks for at least 8 characters, and net-snmp agents refuse
/// shorter passwords; catching it here beats an opaque auth failure later.
fn check_password_length(secret: &Secret) -> Result<(), String> {
    if secret.expose().len() < 8 {
        return Err("must be at least 8 characters (RFC 3414)".to_owned());
    }
    Ok(())
}

fn auth_protocol(text: &str) -> Result<snmp2::v3::AuthProtocol, String> {
    use snmp2::v3::AuthProtocol::*;
    Ok(
        match text.trim().to_ascii_lowercase().replace('-', "").as_str() {
            "md5" => Md5,
            "sha" | "sha1" => Sha1,
            "sha224" => Sha224,
            "sha256" => Sha256,
            "sha384" => Sha384,
            "sha512" => Sha512,
            _ => {
                return Err(format!(
                    "{text:?} is not one of md5, sha1, sha224, sha256, sha384, sha512"
                ));
            }
        },
    )
}

fn privacy_protocol(text: &str) -> Result<snmp2::v3::Cipher, String> {
    use snmp2::v3::Cipher::*;
    Ok(
        match text.trim().to_ascii_lowercase().replace('-', "").as_str() {
            "des" => Des,
            "aes" | "aes128" => Aes128,
            "aes192" => Aes192,
            "aes256" => Aes256,
            _ => {
                return Err(format!(
                    "{text:?} is not one of des, aes128, aes192, aes256"
                ));
            }
        },
    )
}

fn check_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if !TIMEOUT_RANGE.contains(&timeout) {
        return Err(format!("must be 10ms to 60s, found {text}"));
    }
    Ok(timeout)
}

fn check_retries(value: u32) -> Result<u32, String> {
    if value > MAX_RETRIES {
        return Err(format!("must be 0 to {MAX_RETRIES}, found {value}"));
    }
    Ok(value)
}

fn check_repetitions(value: u32) -> Result<u32, String> {
    if !(1..=MAX_REPETITIONS).contains(&value) {
        return Err(format!("must be 1 to {MAX_REPETITIONS}, found {value}"));
    }
    Ok(value)
}

/// Applies one key of a plugin's `[snmp]` section (Panoptes' keys) to
/// `options`.
pub fn apply_plugin_option(
    options: &mut RequestOptions,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let value = value.trim();
    let number = || {
        value
            .parse::<u32>()
            .map_err(|_| format!("{key}: {value:?} is not a whole number"))
    };
    match key.to_ascii_lowercase().as_str() {
        "timeout" => options.timeout = check_timeout(value).map_err(|e| format!("{key}: {e}"))?,
        "retries" => {
            options.retries = check_retries(number()?).map_err(|e| format!("{key}: {e}"))?
        }
        "max_repetitions" => {
            options.max_repetitions =
                check_repetitions(number()?).map_err(|e| format!("{key}: {e}"))?;
        }
        _ => {
            return Err(format!(
                "unknown key {key:?} (known: timeout, retries, max_repetitions)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SnmpSettings, LocatedError> {
        let path = Path::new("/etc/vigil/site.toml");
        let section: SnmpSection = toml::from_str(text).expect("toml");
        let at = |span: Range<usize>, message: String| {
            let line = text[..span.start].matches('\n').count() + 1;
            LocatedError::new(path, line, message)
        };
        resolve(section, path, &at)
    }

    #[test]
    fn credentials_match_in_order() {
        let settings = parse(
            "timeout = \"2s\"\nretries = 1\n\
             [[credentials]]\nfilter = 'resource_id = \"core-1\"'\nversion = \"3\"\nuser = \"ops\"\nauth_protocol = \"sha\"\nauth_password = \"authpass1\"\nprivacy_protocol = \"aes\"\nprivacy_password = \"privpass1\"\n\
             [[credentials]]\nversion = \"2c\"\ncommunity = \"public\"\nport = 1161\n",
        )
        .expect("valid");
        assert_eq!(settings.defaults.timeout, Duration::from_secs(2));
        assert_eq!(settings.defaults.retries, 1);
        let core = settings
            .credential_for(&Resource::named("core-1", "10.0.0.1"))
            .expect("match");
        assert_eq!(core.credential.version_name(), "v3");
        assert_eq!(core.origin, "/etc/vigil/site.toml:3");
        let edge = settings
            .credential_for(&Resource::named("edge-9", "10.0.0.9"))
            .expect("match");
        assert_eq!(edge.credential.version_name(), "v2c");
        assert_eq!(edge.port, 1161);
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("community"), "s3cret-community\n").expect("write");
        let site = dir.path().join("site.toml");
        let text = "[[credentials]]\nversion = \"2c\"\ncommunity = { file = \"community\" }\n";
        let section: SnmpSection = toml::from_str(text).expect("toml");
        let at = |_: Range<usize>, message: String| LocatedError::new(&site, 0, message);
        let settings = resolve(section, &site, &at).expect("valid");
        let Credential::V2c { community } = &settings.credentials[0].credential else {
            panic!("expected v2c");
        };
        assert_eq!(community.expose(), b"s3cret-community");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn mistakes_name_the_line_and_never_the_secret() {
        let err = parse("[[credentials]]\nversion = \"2c\"\ncommunity = { env = \"VIGIL_TEST_UNSET_VARIABLE\" }\n")
            .expect_err("unset variable");
        assert_eq!(err.line, 3);
        assert!(
            err.message.contains("VIGIL_TEST_UNSET_VARIABLE is not set"),
            "{err}"
        );

        let err = parse("[[credentials]]\nversion = \"3\"\nuser = \"ops\"\nauth_protocol = \"sha\"\nauth_password = \"short\"\n")
            .expect_err("short password");
        assert_eq!(err.line, 5);
        assert!(!err.message.contains("short\""), "{err}");

        let err =
            parse("[[credentials]]\nversion = \"2c\"\ncommunity = \"public\"\nuser = \"ops\"\n")
                .expect_err("v3 field on v2c");
        assert_eq!(err.line, 4);

        let err = parse("[[credentials]]\nversion = \"4\"\ncommunity = \"public\"\n")
            .expect_err("version");
        assert_eq!(err.line, 2);

        let err = parse(
            "[[credentials]]\nfilter = 'resource_id = '\nversion = \"2c\"\ncommunity = \"x\"\n",
        )
        .expect_err("filter");
        assert_eq!(err.line, 2);

        let err = parse("[[credentials]]\nversion = \"3\"\nuser = \"ops\"\nprivacy_protocol = \"aes\"\nprivacy_password = \"privpass1\"\n")
            .expect_err("privacy without auth");
        assert!(err.message.contains("needs authentication"), "{err}");

        let err = parse("max_repetitions = 0\n").expect_err("zero repetitions");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn plugin_options_override_defaults() {
        let mut options = RequestOptions::default();
        apply_plugin_option(&mut options, "timeout", "2").expect("seconds");
        apply_plugin_option(&mut options, "max_repetitions", "50").expect("reps");
        apply_plugin_option(&mut options, "retries", "0").expect("retries");
        assert_eq!(
            options,
            RequestOptions {
                timeout: Duration::from_secs(2),
                retries: 0,
                max_repetitions: 50
            }
        );
        assert!(apply_plugin_option(&mut options, "retries", "99").is_err());
        assert!(apply_plugin_option(&mut options, "community", "public").is_err());
    }
}
