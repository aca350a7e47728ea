//! The InfluxDB sink: metrics groups as line protocol, `POST`ed to
//! InfluxDB 1.x (`/write`, `api = "v1"`) or 2.x (`/api/v2/write`,
//! `api = "v2"`) from the shared delivery loop ([`super::delivery`]), so an
//! InfluxDB that is down only fills this sink's own bounded buffer.
//!
//! # One line per group
//!
//! `<group type>,<tags> <metric>=<value>,... <creation timestamp>`, like
//! Panoptes' InfluxDB consumer (`yahoo_panoptes/consumers/influxdb/
//! consumer.py`): measurement = the group type, tags = the dimensions and
//! the resource fields, all sorted by key (InfluxDB's advice), timestamp =
//! the group's creation time. Where vigil differs, and why:
//!
//! - **Tags** add `resource_id` to Panoptes' `resource_class`,
//!   `resource_endpoint`, `resource_site`, `resource_subclass` and
//!   `resource_type`: without it two resources sharing an endpoint write
//!   one series. A dimension named like one of these tags (or `time`,
//!   which InfluxDB refuses as a key) is written `exported_<name>` (Panoptes
//!   let the resource field overwrite it), as the Prometheus sinks do; a
//!   repeated dimension name gets `_2`, `_3`, ... (InfluxDB refuses the whole
//!   line on duplicate tags); the renaming is linear in the dimensions
//!   whatever their names (20,000 dimensions of one name take ~25 ms; the
//!   renaming this replaced was cubic, about 4 hours for them, see
//!   [`super::exposition::UniqueNames`]). Tags with an empty key or value are left out:
//!   InfluxDB refuses them (Panoptes wrote them, and lost the point).
//! - **Fields** are named after the metric (Panoptes wrote
//!   `<metric>__<type>`, e.g. `in_octets__counter`) and integers stay
//!   integers (`<n>i`; Panoptes wrote every number without `i`, so InfluxDB
//!   stored them as floats). Reusing Panoptes' field names with integer
//!   values would make InfluxDB refuse every point of a field Panoptes had
//!   written as float in the same shard (a field type conflict), so a
//!   migration gets new field names instead of rejected writes; dashboards
//!   need `__<type>` removed. `field_names = "panoptes"` writes exactly
//!   Panoptes' fields instead (`<metric>__<type>`, floats), to keep
//!   appending to a database Panoptes filled. A metric named `time` is written
//!   `exported_time` (InfluxDB drops a `time` field).
//! - **u64 above `i64::MAX`** (InfluxDB 1.x has no unsigned type unless
//!   built with it) is written as a float, rounded to 53 bits. InfluxDB
//!   then refuses the point if the field holds integers in that shard (a
//!   400 partial write: the group is counted `rejected`).
//! - **NaN and ±infinity** cannot be written: such a field is left out, and
//!   a group left without fields is not written at all and counted as
//!   `rejected` (so are groups whose type is empty or whose time is past
//!   2262-04-11, InfluxDB's last nanosecond).
//! - **The measurement** is escaped, not sanitised: Panoptes replaced every
//!   run of characters outside `[0-9a-zA-Z_]` with `_`. Plugin group types
//!   already follow `[a-z_][a-z0-9_]*`, so both write the same names.
//!
//! # Escaping
//!
//! As the line-protocol spec says: the measurement escapes `,` and space;
//! tag keys, tag values and field keys escape `,`, `=` and space. Checked
//! against InfluxDB 1.6's parser (see `tests/tests/suite/influxdb_sink.rs`), which
//! keeps any other backslash as it is, so backslashes and quotes in tag
//! values round-trip exactly (`C:\Users`, `a\,b`, `say "hi"`). What the
//! protocol cannot carry is replaced visibly:
//!
//! - a **newline** or **carriage return** becomes the two characters `\n`
//!   or `\r` (a line break ends the line; InfluxDB has no escape for it);
//! - a **trailing backslash** becomes `＼` (U+FF3C FULLWIDTH REVERSE
//!   SOLIDUS): InfluxDB reads a backslash before the `,` or space that ends
//!   a key or value as an escape, whatever precedes it, so no encoding of a
//!   value ending in `\` exists;
//! - in a **field key**, a backslash before `,`, `=` or space becomes `＼`
//!   too (InfluxDB's field parser reads `\\` as an escaped backslash, so
//!   such a key has no encoding either), and a `"` after a backslash is
//!   escaped (the field parser would eat that backslash);
//! - a **measurement** starting with `#` is written `\#` (a line starting
//!   with `#` is a comment: InfluxDB would skip it and answer 204). A
//!   measurement with a backslash before `,`, space, `=` or `"` does not
//!   round-trip in InfluxDB 1.6 (it reads the name without that backslash);
//!   plugin group types cannot contain one.
//!
//! vigil writes no string fields (metrics are numbers), so the string
//! escapes (`"` and `\`) are not needed.
//!
//! # Delivery
//!
//! 204 is success. 400 (malformed, or a partial write such as a field type
//! conflict) and 422 drop what the server refused (counted `rejected`;
//! InfluxDB 1.x writes the rest of the batch, and says how many points it
//! dropped); 413 splits the batch in halves, recursively, down to single
//! groups. 401, 403, 404 (bad credentials, missing database: an operator
//! can fix those), 429, 5xx, connection errors and timeouts are retried
//! with backoff. A retry re-sends the whole batch, including parts an
//! earlier split had delivered; InfluxDB stores a point again with the same
//! series and time as one point, so nothing is counted twice.

use std::fmt;
use std::io::Write as _;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::buffer::SharedGroup;
use super::delivery::{BatchWriter, SendError};
use super::exposition::UniqueNames;
use super::{At, DeliverySection, DeliverySettings, LocatedError};
use vigil_core::model::{Datetime, MetricType, MetricValue, MetricsGroup, Resource};
use vigil_core::secret::{Secret, SecretSource};

/// The timestamp unit of the lines (and of the write's `precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Seconds,
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

impl Precision {
    fn parse(text: &str) -> Option<Precision> {
        Some(match text {
            "s" => Precision::Seconds,
            "ms" => Precision::Milliseconds,
            "us" => Precision::Microseconds,
            "ns" => Precision::Nanoseconds,
            _ => return None,
        })
    }

    /// The `precision` parameter of the v1 `/write` (1.x's own names).
    fn v1_param(self) -> &'static str {
        match self {
            Precision::Seconds => "s",
            Precision::Milliseconds => "ms",
            Precision::Microseconds => "u",
            Precision::Nanoseconds => "n",
        }
    }

    /// The `precision` parameter of `/api/v2/write`.
    fn v2_param(self) -> &'static str {
        match self {
            Precision::Seconds => "s",
            Precision::Milliseconds => "ms",
            Precision::Microseconds => "us",
            Precision::Nanoseconds => "ns",
        }
    }

    /// `time` in this unit (truncated, as Panoptes' `int()` did); `None`
    /// past InfluxDB's range (its last valid nanosecond is
    /// 9223372036854775806, in April 2262).
    pub fn timestamp(self, time: &Datetime) -> Option<u64> {
        const MAX_NANOS: u128 = i64::MAX as u128 - 1;
        let nanos = u128::from(time.seconds) * 1_000_000_000 + u128::from(time.nanoseconds);
        if nanos > MAX_NANOS {
            return None;
        }
        let divisor = match self {
            Precision::Seconds => 1_000_000_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Microseconds => 1_000,
            Precision::Nanoseconds => 1,
        };
        // At most i64::MAX, so it fits.
        u64::try_from(nanos / divisor).ok()
    }
}

/// Where and how the lines go.
#[derive(Debug, Clone, PartialEq)]
pub enum InfluxApi {
    /// InfluxDB 1.x: `POST /write?db=..&rp=..`, optional basic auth.
    V1 {
        database: String,
        retention_policy: Option<String>,
        username: Option<String>,
        password: Option<Secret>,
    },
    /// InfluxDB 2.x (and 1.8+'s compatibility endpoint):
    /// `POST /api/v2/write?org=..&bucket=..` with `Authorization: Token`.
    V2 {
        org: String,
        bucket: String,
        token: Secret,
    },
}

/// One `[[outputs.influxdb]]`. `Debug` never shows the password or token
/// ([`Secret`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxSettings {
    pub name: String,
    /// Base URL without a trailing `/`, e.g. `http://127.0.0.1:8086` (a
    /// path prefix, as behind a reverse proxy, is kept).
    pub url: String,
    pub api: InfluxApi,
    pub precision: Precision,
    pub field_names: FieldNames,
    pub delivery: DeliverySettings,
}

/// How fields are named and typed (`field_names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldNames {
    /// `<metric>`, integers as integers (vigil's default).
    #[default]
    Metric,
    /// Panoptes' consumer output, to keep appending to a database it
    /// filled: `<metric>__<type>`, every number a float (as Panoptes wrote
    /// them; a float field refuses integers).
    Panoptes,
}

/// `[[outputs.influxdb]]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxSection {
    name: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    api: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    retention_policy: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<SecretSource>>,
    org: Option<Spanned<String>>,
    bucket: Option<Spanned<String>>,
    token: Option<Spanned<SecretSource>>,
    precision: Option<Spanned<String>>,
    field_names: Option<Spanned<String>>,
    // The shared delivery keys (serde cannot flatten a section that denies
    // unknown fields); they become a `DeliverySection`.
    buffer: Option<Spanned<u32>>,
    batch_size: Option<Spanned<u32>>,
    flush_interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
}

/// By hand, because an inline password or token would show in a derived
/// `Debug` (`SecretSource::Inline` holds the text).
impl fmt::Debug for InfluxSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted =
            |secret: &Option<Spanned<SecretSource>>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("InfluxSection")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("api", &self.api)
            .field("database", &self.database)
            .field("retention_policy", &self.retention_policy)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("token", &redacted(&self.token))
            .field("precision", &self.precision)
            .field("field_names", &self.field_names)
            .field("buffer", &self.buffer)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("timeout", &self.timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

impl InfluxSection {
    /// Checks the `index`th `[[outputs.influxdb]]` (0-based; errors say
    /// `outputs.influxdb[<index>]`), found at `span`; `base` is the site
    /// file's directory (for `{ file = ... }` secrets). The default name is
    /// `influxdb` for the first, `influxdb-<index + 1>` for the others.
    pub fn resolve(
        self,
        index: usize,
        span: Range<usize>,
        base: &Path,
        at: At<'_>,
    ) -> Result<InfluxSettings, LocatedError> {
        let what = format!("outputs.influxdb[{index}]");
        let name = match self.name {
            Some(name) if name.get_ref().trim().is_empty() => {
                return Err(at(name.span(), format!("{what}.name is empty")));
            }
            Some(name) => name.into_inner(),
            None if index == 0 => "influxdb".to_owned(),
            None => format!("influxdb-{}", index + 1),
        };
        let url = match &self.url {
            Some(url) => check_url(url, &what, at)?,
            None => return Err(at(span, format!("{what}.url is required"))),
        };
        let v2 = match &self.api {
            None => false,
            Some(api) => match api.get_ref().as_str() {
                "v1" => false,
                "v2" => true,
                other => {
                    return Err(at(
                        api.span(),
                        format!("{what}.api must be \"v1\" or \"v2\", found {other:?}"),
                    ));
                }
            },
        };
        let precision = match &self.precision {
            None => Precision::default(),
            Some(p) => Precision::parse(p.get_ref()).ok_or_else(|| {
                at(
                    p.span(),
                    format!(
                        "{what}.precision must be \"s\", \"ms\", \"us\" or \"ns\", found {:?}",
                        p.get_ref()
                    ),
                )
            })?,
        };
        let field_names = match &self.field_names {
            None => FieldNames::default(),
            Some(names) => match names.get_ref().as_str() {
                "metric" => FieldNames::Metric,
                "panoptes" => FieldNames::Panoptes,
                other => {
                    return Err(at(
                        names.span(),
                        format!(
                            "{what}.field_names must be \"metric\" or \"panoptes\", found {other:?}"
                        ),
                    ));
                }
            },
        };
        let read_secret = |source: &Spanned<SecretSource>, key: &str| {
            source
                .get_ref()
                .read(base)
                .map_err(|e| at(source.span(), format!("{what}.{key}: {e}")))
        };
        let non_empty = |value: &Option<Spanned<String>>, key: &str| match value {
            Some(v) if v.get_ref().is_empty() => {
                Err(at(v.span(), format!("{what}.{key} is empty")))
            }
            Some(v) => Ok(Some(v.get_ref().clone())),
            None => Ok(None),
        };
        let api = if v2 {
            // Keys of the other API are mistakes, not something to ignore.
            for (key, span) in [
                ("database", self.database.as_ref().map(Spanned::span)),
                (
                    "retention_policy",
                    self.retention_policy.as_ref().map(Spanned::span),
                ),
                ("username", self.username.as_ref().map(Spanned::span)),
                ("password", self.password.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    return Err(at(span, format!("{what}.{key} is only for api = \"v1\"")));
                }
            }
            let required = |value: Option<String>, key: &str| {
                value.ok_or_else(|| {
                    at(
                        span.clone(),
                        format!("{what}.{key} is required for api = \"v2\""),
                    )
                })
            };
            let org = required(non_empty(&self.org, "org")?, "org")?;
            let bucket = required(non_empty(&self.bucket, "bucket")?, "bucket")?;
            let token = match &self.token {
                Some(token) => read_secret(token, "token")?,
                None => {
                    return Err(at(
                        span,
                        format!("{what}.token is required for api = \"v2\""),
                    ));
                }
            };
            InfluxApi::V2 { org, bucket, token }
        } else {
            for (key, span) in [
                ("org", self.org.as_ref().map(Spanned::span)),
                ("bucket", self.bucket.as_ref().map(Spanned::span)),
                ("token", self.token.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    return Err(at(span, format!("{what}.{key} is only for api = \"v2\"")));
                }
            }
            let database = non_empty(&self.database, "database")?.ok_or_else(|| {
                at(
                    span.clone(),
                    format!("{what}.database is required for api = \"v1\""),
                )
            })?;
            let retention_policy = non_empty(&self.retention_policy, "retention_policy")?;
            let username = non_empty(&self.username, "username")?;
            let password = match &self.password {
                Some(password) => Some(read_secret(password, "password")?),
                None => None,
            };
            if username.is_some() != password.is_some() {
                return Err(at(
                    span,
                    format!("{what}: username and password go together"),
                ));
            }
            InfluxApi::V1 {
                database,
                retention_policy,
                username,
                password,
            }
        };
        let delivery = DeliverySection {
            buffer: self.buffer,
            batch_size: self.batch_size,
            flush_interval: self.flush_interval,
            timeout: self.timeout,
            shutdown_grace: self.shutdown_grace,
        }
        .resolve(&what, 100_000, at)?;
        Ok(InfluxSettings {
            name,
            url,
            api,
            precision,
            field_names,
            delivery,
        })
    }
}

/// The base URL, checked: http(s), no credentials (they would end up in
/// messages; `username`/`password`/`token` are for that), no query or
/// fragment (the sink adds its own); without a trailing `/`.
fn check_url(url: &Spanned<String>, what: &str, at: At<'_>) -> Result<String, LocatedError> {
    let text = url.get_ref().trim().trim_end_matches('/');
    let parsed =
        reqwest::Url::parse(text).map_err(|e| at(url.span(), format!("{what}.url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(at(
            url.span(),
            format!("{what}.url must be http:// or https://"),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(at(
            url.span(),
            format!(
                "{what}.url must not hold credentials; use username and password (v1) or token (v2)"
            ),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(at(
            url.span(),
            format!("{what}.url must not have a query or fragment"),
        ));
    }
    Ok(text.to_owned())
}

// --- line protocol ----------------------------------------------------------

/// Why a group has no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Every metric was NaN or infinite (or there were none).
    NoFiniteField,
    /// The group type is empty.
    NoMeasurement,
    /// The creation time is past InfluxDB's range (April 2262).
    TimeOutOfRange,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skipped::NoFiniteField => "no finite metric value (NaN and infinity cannot be written)",
            Skipped::NoMeasurement => "an empty group type",
            Skipped::TimeOutOfRange => "a creation time past InfluxDB's range (2262)",
        })
    }
}

/// Reads one field of a resource.
type ResourceField = fn(&Resource) -> &str;

/// The resource tags, in key order, and the fields they come from.
const RESOURCE_TAGS: [(&str, ResourceField); 6] = [
    ("resource_class", |r| &r.class),
    ("resource_endpoint", |r| &r.endpoint),
    ("resource_id", |r| &r.id),
    ("resource_site", |r| &r.site),
    ("resource_subclass", |r| &r.subclass),
    ("resource_type", |r| &r.type_),
];

/// What a key becomes `exported_<key>` for: a resource tag, or `time`,
/// which InfluxDB refuses as a tag key or field key.
fn reserved_key(key: &str) -> bool {
    key == "time" || RESOURCE_TAGS.iter().any(|(tag, _)| *tag == key)
}

/// Which part of a line a name or value is, for escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Measurement,
    /// Tag keys and tag values.
    Tag,
    FieldKey,
}

/// U+FF3C FULLWIDTH REVERSE SOLIDUS, for backslashes line protocol cannot
/// carry.
const FULLWIDTH_BACKSLASH: &[u8] = "＼".as_bytes();

/// Appends `text` escaped as `part` (see the module doc).
fn write_escaped(out: &mut Vec<u8>, text: &str, part: Part) {
    let bytes = text.as_bytes();
    // Most names and values need nothing: copy them whole.
    let special = bytes.iter().any(|&b| {
        matches!(b, b',' | b' ' | b'\n' | b'\r' | b'\\')
            || (b == b'=' && part != Part::Measurement)
            || (b == b'"' && part == Part::FieldKey)
    }) || (part == Part::Measurement && bytes.first() == Some(&b'#'));
    if !special {
        out.extend_from_slice(bytes);
        return;
    }
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b',' | b' ' => out.extend_from_slice(&[b'\\', b]),
            b'=' if part != Part::Measurement => out.extend_from_slice(b"\\="),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\\' => {
                let next = bytes.get(i + 1).copied();
                let unwritable = match next {
                    None => true,
                    Some(b',' | b' ' | b'=') => part == Part::FieldKey,
                    Some(_) => false,
                };
                if unwritable {
                    out.extend_from_slice(FULLWIDTH_BACKSLASH);
                } else {
                    out.push(b'\\');
                }
            }
            b'"' if part == Part::FieldKey && i > 0 && bytes[i - 1] == b'\\' => {
                out.extend_from_slice(b"\\\"");
            }
            b'#' if part == Part::Measurement && i == 0 => out.extend_from_slice(b"\\#"),
            _ => out.push(b),
        }
    }
}

/// Appends `n` in decimal (the hot path: no `fmt` machinery).
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// A finite float in its shortest round-trip form (`Debug`: `0.1`, `1.0`,
/// `1e20`, `1.5e-7`, which InfluxDB reads back exactly).
fn write_f64(out: &mut Vec<u8>, v: f64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{v:?}");
}

fn write_tag(out: &mut Vec<u8>, key: &str, value: &str) {
    if key.is_empty() || value.is_empty() {
        return;
    }
    out.push(b',');
    write_escaped(out, key, Part::Tag);
    out.push(b'=');
    write_escaped(out, value, Part::Tag);
}

/// Appends the line of `group` (ending in `\n`) at `precision`, or nothing
/// and why (see the module doc).
pub fn write_group(
    group: &MetricsGroup,
    precision: Precision,
    out: &mut Vec<u8>,
) -> Result<(), Skipped> {
    write_group_as(group, precision, FieldNames::Metric, out)
}

/// [`write_group`] with the fields named and typed as `names` says.
pub fn write_group_as(
    group: &MetricsGroup,
    precision: Precision,
    names: FieldNames,
    out: &mut Vec<u8>,
) -> Result<(), Skipped> {
    if group.group_type.is_empty() {
        return Err(Skipped::NoMeasurement);
    }
    let timestamp = precision
        .timestamp(&group.creation_timestamp)
        .ok_or(Skipped::TimeOutOfRange)?;
    let start = out.len();
    write_escaped(out, &group.group_type, Part::Measurement);
    write_tags(group, out);
    let mut separator = b' ';
    for metric in &group.metrics {
        // InfluxDB refuses an empty field key: leave the field out.
        if metric.name.is_empty() {
            continue;
        }
        let before = out.len();
        out.push(separator);
        if metric.name == "time" {
            out.extend_from_slice(b"exported_time");
        } else {
            write_escaped(out, &metric.name, Part::FieldKey);
        }
        if names == FieldNames::Panoptes {
            out.extend_from_slice(match metric.type_ {
                MetricType::Counter => b"__counter",
                MetricType::Gauge => b"__gauge",
            });
        }
        out.push(b'=');
        match metric.value {
            // No `i`: InfluxDB reads the number as a float, as Panoptes'
            // fields are.
            MetricValue::Signed(v) if names == FieldNames::Panoptes => write_i64(out, v),
            MetricValue::Unsigned(v) if names == FieldNames::Panoptes => write_u64(out, v),
            MetricValue::Signed(v) => {
                write_i64(out, v);
                out.push(b'i');
            }
            MetricValue::Unsigned(v) => match i64::try_from(v) {
                Ok(_) => {
                    write_u64(out, v);
                    out.push(b'i');
                }
                Err(_) => write_f64(out, v as f64),
            },
            MetricValue::Float(v) if v.is_finite() => write_f64(out, v),
            MetricValue::Float(_) => {
                out.truncate(before);
                continue;
            }
        }
        separator = b',';
    }
    if separator == b' ' {
        out.truncate(start);
        return Err(Skipped::NoFiniteField);
    }
    out.push(b' ');
    write_u64(out, timestamp);
    out.push(b'\n');
    Ok(())
}

/// The dimensions and resource fields as `,key=value` tags in key order.
fn write_tags(group: &MetricsGroup, out: &mut Vec<u8>) {
    let dimensions = &group.dimensions;
    // The usual case, sorted unique ordinary names, merges without
    // allocating.
    let simple = dimensions.windows(2).all(|w| w[0].name < w[1].name)
        && dimensions.iter().all(|d| !reserved_key(&d.name));
    if !simple {
        write_tags_renamed(group, out);
        return;
    }
    let mut resources = RESOURCE_TAGS.iter().peekable();
    for dimension in dimensions {
        while let Some((key, field)) = resources.next_if(|(key, _)| *key < dimension.name.as_str())
        {
            write_tag(out, key, field(&group.resource));
        }
        write_tag(out, &dimension.name, &dimension.value);
    }
    for (key, field) in resources {
        write_tag(out, key, field(&group.resource));
    }
}

/// [`write_tags`] when names need `exported_` or a numeric suffix; linear
/// in the dimensions (plus the sorts) whatever they are
/// ([`UniqueNames`]).
fn write_tags_renamed(group: &MetricsGroup, out: &mut Vec<u8>) {
    write_tags_renamed_counted(group, out);
}

/// [`write_tags_renamed`], returning the name lookups it made.
fn write_tags_renamed_counted(group: &MetricsGroup, out: &mut Vec<u8>) -> usize {
    let mut dimensions: Vec<(&str, &str)> = group
        .dimensions
        .iter()
        .filter(|d| !d.name.is_empty() && !d.value.is_empty())
        .map(|d| (d.name.as_str(), d.value.as_str()))
        .collect();
    // Stable: of two equal names, the first keeps it.
    dimensions.sort_by(|a, b| a.0.cmp(b.0));
    // The resource tags and `time` are never handed to a dimension.
    let mut names = UniqueNames::with_reserved(
        RESOURCE_TAGS
            .iter()
            .map(|(tag, _)| *tag)
            .chain(std::iter::once("time")),
    );
    let mut tags: Vec<(String, &str)> = Vec::with_capacity(dimensions.len() + 6);
    for (name, value) in dimensions {
        let key = if reserved_key(name) {
            format!("exported_{name}")
        } else {
            name.to_owned()
        };
        let key = if names.claim(&key) {
            key
        } else {
            names.claim_suffixed(&key)
        };
        tags.push((key, value));
    }
    for (key, field) in RESOURCE_TAGS {
        tags.push((key.to_owned(), field(&group.resource)));
    }
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in &tags {
        write_tag(out, key, value);
    }
    names.probes()
}

// --- the writer -------------------------------------------------------------

/// Sends batches to one InfluxDB.
pub struct InfluxWriter {
    name: String,
    client: reqwest::Client,
    /// The write endpoint with its query (`db`, `rp`, `org`, `bucket`,
    /// `precision`): never holds a credential.
    write_url: reqwest::Url,
    auth: Auth,
    precision: Precision,
    field_names: FieldNames,
    /// The encoded batch, reused across batches.
    body: Vec<u8>,
    /// Where each group's line ends in `body` (an empty line for a skipped
    /// group), for sending parts of a batch.
    ends: Vec<usize>,
}

enum Auth {
    None,
    Basic {
        username: String,
        password: Secret,
    },
    /// `Token <token>`, marked sensitive.
    Header(reqwest::header::HeaderValue),
}

impl InfluxWriter {
    pub fn new(settings: &InfluxSettings) -> anyhow::Result<InfluxWriter> {
        let name = &settings.name;
        let client = reqwest::Client::builder()
            .timeout(settings.delivery.timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("influxdb sink {name}: {e}"))?;
        let (path, auth) = match &settings.api {
            InfluxApi::V1 {
                username, password, ..
            } => (
                "/write",
                match (username, password) {
                    (Some(username), Some(password)) => Auth::Basic {
                        username: username.clone(),
                        password: password.clone(),
                    },
                    _ => Auth::None,
                },
            ),
            InfluxApi::V2 { token, .. } => {
                let mut value = reqwest::header::HeaderValue::from_str(&format!(
                    "Token {}",
                    token.expose_text()
                ))
                // The error never holds the value.
                .map_err(|_| {
                    anyhow::anyhow!(
                        "influxdb sink {name}: the token is not valid in an HTTP header"
                    )
                })?;
                value.set_sensitive(true);
                ("/api/v2/write", Auth::Header(value))
            }
        };
        let mut write_url = reqwest::Url::parse(&format!("{}{path}", settings.url))
            .map_err(|e| anyhow::anyhow!("influxdb sink {name}: url: {e}"))?;
        {
            let mut query = write_url.query_pairs_mut();
            match &settings.api {
                InfluxApi::V1 {
                    database,
                    retention_policy,
                    ..
                } => {
                    query.append_pair("db", database);
                    if let Some(rp) = retention_policy {
                        query.append_pair("rp", rp);
                    }
                    query.append_pair("precision", settings.precision.v1_param());
                }
                InfluxApi::V2 { org, bucket, .. } => {
                    query.append_pair("org", org);
                    query.append_pair("bucket", bucket);
                    query.append_pair("precision", settings.precision.v2_param());
                }
            }
        }
        Ok(InfluxWriter {
            name: name.clone(),
            client,
            write_url,
            auth,
            precision: settings.precision,
            field_names: settings.field_names,
            body: Vec::new(),
            ends: Vec::new(),
        })
    }

    /// The URL writes go to (without credentials: there are none in it).
    pub fn write_url(&self) -> &str {
        self.write_url.as_str()
    }

    /// Encodes `batch` into `body`/`ends` on tokio's blocking pool (CPU
    /// work linear in the batch's size stays off the runtime's workers);
    /// returns how many groups got no line, and the first reason.
    async fn encode(&mut self, batch: &[SharedGroup]) -> (usize, Option<Skipped>) {
        let mut body = std::mem::take(&mut self.body);
        let mut ends = std::mem::take(&mut self.ends);
        let (precision, field_names) = (self.precision, self.field_names);
        let groups = batch.to_vec();
        let encoded = tokio::task::spawn_blocking(move || {
            let counts = encode_into(&groups, precision, field_names, &mut body, &mut ends);
            (body, ends, counts)
        })
        .await;
        match encoded {
            Ok((body, ends, counts)) => {
                self.body = body;
                self.ends = ends;
                counts
            }
            // Only a bug gets here (encoding does not panic on any input):
            // encode on this thread rather than lose the batch.
            Err(_) => encode_into(
                batch,
                self.precision,
                self.field_names,
                &mut self.body,
                &mut self.ends,
            ),
        }
    }

    /// The bytes of groups `range`, and how many lines they hold.
    fn slice(&self, range: &Range<usize>) -> (&[u8], usize) {
        let start = if range.start == 0 {
            0
        } else {
            self.ends[range.start - 1]
        };
        let end = self.ends[range.end - 1];
        let mut previous = start;
        let mut lines = 0;
        for &line_end in &self.ends[range.clone()] {
            if line_end > previous {
                lines += 1;
            }
            previous = line_end;
        }
        (&self.body[start..end], lines)
    }

    async fn post(&self, body: Vec<u8>) -> Result<reqwest::Response, reqwest::Error> {
        let request = self
            .client
            .post(self.write_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body);
        let request = match &self.auth {
            Auth::None => request,
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose_text()))
            }
            Auth::Header(value) => request.header(reqwest::header::AUTHORIZATION, value.clone()),
        };
        request.send().await
    }

    fn message(&self, what: &str) -> String {
        format!(
            "influxdb sink {}: POST {}: {what}",
            self.name, self.write_url
        )
    }
}

/// Encodes `batch` into `body` with each group's end in `ends`; returns
/// how many groups got no line, and the first reason.
fn encode_into(
    batch: &[SharedGroup],
    precision: Precision,
    field_names: FieldNames,
    body: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> (usize, Option<Skipped>) {
    body.clear();
    ends.clear();
    let mut skipped = 0;
    let mut first = None;
    for group in batch {
        if let Err(why) = write_group_as(group, precision, field_names, body) {
            skipped += 1;
            first.get_or_insert(why);
        }
        ends.push(body.len());
    }
    (skipped, first)
}

/// What one request came to.
enum Outcome {
    Delivered,
    /// 413: worth sending in smaller parts.
    TooLarge(String),
    /// The server refused `Some(n)` of the lines for good (`None`: it did
    /// not say how many, so all).
    Refused(Option<usize>, String),
    Retry(String),
}

impl InfluxWriter {
    async fn send_once(&self, body: Vec<u8>) -> Outcome {
        let response = match self.post(body).await {
            Ok(response) => response,
            Err(e) => return Outcome::Retry(self.message(&error_chain(&e.without_url()))),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.trim().chars().take(300).collect();
        let message = self.message(&format!("HTTP {status}: {excerpt}"));
        match status.as_u16() {
            413 => Outcome::TooLarge(message),
            400 | 422 => Outcome::Refused(refused_points(&text), message),
            // 401/403/404 (credentials, a missing database or a wrong URL:
            // fixable by an operator), 429, 5xx and anything unexpected
            // keep the data and retry.
            _ => Outcome::Retry(message),
        }
    }
}

/// How many points InfluxDB 1.x says a 400 refused: `dropped=N` of a
/// partial write plus one per `unable to parse` (not counted in `dropped`);
/// `None` when the answer says neither.
fn refused_points(body: &str) -> Option<usize> {
    let dropped = body
        .rfind("dropped=")
        .map(|at| {
            body[at + "dropped=".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse::<usize>().ok())
        .unwrap_or(0);
    let unparsable = body.matches("unable to parse").count();
    match dropped + unparsable {
        0 => None,
        n => Some(n),
    }
}

/// `error: cause: cause ...` (reqwest's own message alone says little,
/// e.g. "error sending request").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl BatchWriter for InfluxWriter {
    async fn send(&mut self, batch: &[SharedGroup]) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (skipped, why) = self.encode(batch).await;
        let mut rejected = skipped;
        let mut message = why.map(|why| {
            format!(
                "influxdb sink {}: {skipped} group(s) not written: {why}",
                self.name
            )
        });
        // Parts still to send, the next on top; a 413 splits a part in two.
        let mut parts: Vec<Range<usize>> = Vec::with_capacity(8);
        parts.push(0..batch.len());
        while let Some(part) = parts.pop() {
            let (bytes, lines) = self.slice(&part);
            if lines == 0 {
                continue;
            }
            match self.send_once(bytes.to_vec()).await {
                Outcome::Delivered => {}
                Outcome::TooLarge(why) if part.len() > 1 => {
                    let middle = part.start + part.len() / 2;
                    parts.push(middle..part.end);
                    parts.push(part.start..middle);
                    tracing::debug!(sink = %self.name, groups = part.len(), "{why}; sending it in halves");
                }
                Outcome::TooLarge(why) => {
                    rejected += lines;
                    message.get_or_insert(why);
                }
                Outcome::Refused(points, why) => {
                    rejected += points.map_or(lines, |n| n.min(lines));
                    message.get_or_insert(why);
                }
                Outcome::Retry(why) => return Err(SendError::Retry(why)),
            }
        }
        match message {
            None => Ok(()),
            Some(message) if rejected >= batch.len() => Err(SendError::Rejected(message)),
            Some(message) => Err(SendError::PartlyRejected { rejected, message }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::model::{Dimension, Metric, MetricType};

    fn at_nanos(seconds: u64, nanoseconds: u32) -> Datetime {
        Datetime {
            seconds,
            nanoseconds,
        }
    }

    fn metric(name: &str, value: MetricValue) -> Metric {
        Metric {
            name: name.into(),
            value,
            type_: MetricType::Gauge,
            creation_timestamp: at_nanos(0, 0),
        }
    }

    fn group(kind: &str, dimensions: &[(&str, &str)], metrics: Vec<Metric>) -> MetricsGroup {
        MetricsGroup {
            group_type: kind.into(),
            interval_seconds: 60,
            creation_timestamp: at_nanos(1_700_000_000, 123_456_789),
            schema_version: "0.2".into(),
            resource: Resource {
                id: "sw1".into(),
                site: "dc1".into(),
                endpoint: "10.0.0.1".into(),
                class: "network".into(),
                subclass: "switch".into(),
                type_: "cisco".into(),
                creation_plugin: "inventory".into(),
                creation_timestamp: at_nanos(1, 0),
                ttl_seconds: 0,
                metadata: Vec::new(),
            }
            .into(),
            dimensions: dimensions
                .iter()
                .map(|(name, value)| Dimension {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            metrics,
        }
    }

    fn line(group: &MetricsGroup, precision: Precision) -> String {
        let mut out = Vec::new();
        write_group(group, precision, &mut out).expect("a line");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_typical_interface_group() {
        let group = group(
            "interface",
            &[("interface_name", "ge-0/0/1"), ("alias", "uplink to core")],
            vec![
                metric("bits_in", MetricValue::Unsigned(123_456)),
                metric("errors_in", MetricValue::Signed(-3)),
                metric("utilization", MetricValue::Float(0.25)),
            ],
        );
        assert_eq!(
            line(&group, Precision::Seconds),
            "interface,alias=uplink\\ to\\ core,interface_name=ge-0/0/1,\
             resource_class=network,resource_endpoint=10.0.0.1,resource_id=sw1,\
             resource_site=dc1,resource_subclass=switch,resource_type=cisco \
             bits_in=123456i,errors_in=-3i,utilization=0.25 1700000000\n"
        );
    }

    #[test]
    fn tags_sort_among_the_resource_tags() {
        let g = group(
            "g",
            &[
                ("zone", "z"),
                ("rack", "r"),
                ("resource_x", "x"),
                ("a", "1"),
            ],
            vec![metric("m", MetricValue::Signed(1))],
        );
        assert_eq!(
            line(&g, Precision::Seconds),
            "g,a=1,rack=r,resource_class=network,resource_endpoint=10.0.0.1,resource_id=sw1,\
             resource_site=dc1,resource_subclass=switch,resource_type=cisco,resource_x=x,zone=z m=1i 1700000000\n"
        );
        // Sorted input takes the merge without allocating; same result.
        let sorted = group(
            "g",
            &[
                ("a", "1"),
                ("rack", "r"),
                ("resource_x", "x"),
                ("zone", "z"),
            ],
            vec![metric("m", MetricValue::Signed(1))],
        );
        assert_eq!(
            line(&sorted, Precision::Seconds),
            line(&g, Precision::Seconds)
        );
    }

    #[test]
    fn reserved_and_repeated_dimension_names_are_renamed() {
        let g = group(
            "g",
            &[
                ("resource_id", "spoof"),
                ("time", "t"),
                ("if", "a"),
                ("if", "b"),
            ],
            vec![metric("time", MetricValue::Signed(1))],
        );
        let text = line(&g, Precision::Seconds);
        assert!(
            text.starts_with(
                "g,exported_resource_id=spoof,exported_time=t,if=a,if_2=b,resource_class="
            ),
            "{text}"
        );
        assert!(text.contains(",resource_id=sw1,"), "{text}");
        assert!(text.contains(" exported_time=1i "), "{text}");
    }

    /// 20,000 dimensions of one name: one line, every tag key unique,
    /// bounded lookups and size (the old renaming was cubic).
    #[test]
    fn twenty_thousand_dimensions_of_one_name_take_linear_work() {
        const N: usize = 20_000;
        let values: Vec<String> = (0..N).map(|i| format!("v{i}")).collect();
        let dims: Vec<(&str, &str)> = values.iter().map(|v| ("d", v.as_str())).collect();
        let g = group("g", &dims, vec![metric("m", MetricValue::Signed(1))]);
        let mut out = Vec::new();
        let probes = write_tags_renamed_counted(&g, &mut out);
        assert!(probes <= 3 * N + 16, "{probes} lookups for {N} dimensions");
        let text = String::from_utf8(out).expect("utf-8");
        let keys: Vec<&str> = text
            .trim_start_matches(',')
            .split(',')
            .map(|tag| tag.split_once('=').map_or(tag, |(k, _)| k))
            .collect();
        assert_eq!(keys.len(), N + RESOURCE_TAGS.len());
        let distinct: std::collections::HashSet<&&str> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "tag keys are unique");
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "tags sorted by key");
        assert!(
            text.contains(",d=v0,") && text.contains(",d_2=v1,"),
            "first keeps it"
        );
        assert!(text.contains(&format!(",d_{N}=v{}", N - 1)));
        let input: usize = values.iter().map(|v| v.len() + 1).sum();
        assert!(text.len() <= input + 8 * N + 256, "{}", text.len());
        // The whole line too.
        let line = line(&g, Precision::Seconds);
        assert!(line.starts_with("g,d=v0,d_10=v9,"), "{}", &line[..40]);
    }

    #[test]
    fn empty_tag_keys_and_values_are_left_out() {
        let mut g = group(
            "g",
            &[("empty", ""), ("", "no key"), ("k", "v")],
            vec![metric("m", MetricValue::Signed(1))],
        );
        let resource = std::sync::Arc::make_mut(&mut g.resource);
        resource.site = String::new();
        resource.subclass = String::new();
        assert_eq!(
            line(&g, Precision::Seconds),
            "g,k=v,resource_class=network,resource_endpoint=10.0.0.1,resource_id=sw1,\
             resource_type=cisco m=1i 1700000000\n"
        );
    }

    #[test]
    fn escaping_follows_the_spec_for_each_part() {
        let g = group(
            "if stats,x=y",
            &[("k ey,=", "v a,l=ue"), ("q", "say \"hi\" C:\\Users a\\,b")],
            vec![metric("f ie,l=d", MetricValue::Signed(1))],
        );
        let text = line(&g, Precision::Seconds);
        // Measurement: comma and space; `=` stays.
        assert!(text.starts_with("if\\ stats\\,x=y,"), "{text}");
        // Tag keys and values: comma, equals sign, space; quotes and other
        // backslashes as they are.
        assert!(text.contains(",k\\ ey\\,\\==v\\ a\\,l\\=ue,"), "{text}");
        assert!(
            text.contains(",q=say\\ \"hi\"\\ C:\\Users\\ a\\\\,b,"),
            "{text}"
        );
        // Field keys: comma, equals sign, space.
        assert!(text.contains(" f\\ ie\\,l\\=d=1i "), "{text}");
    }

    #[test]
    fn what_line_protocol_cannot_carry_is_replaced_visibly() {
        let g = group(
            "#comment\\",
            &[("k", "two\nlines\r"), ("t", "ends in\\"), ("u", "\\")],
            vec![
                metric("a\\,b", MetricValue::Signed(1)),
                metric("c\\\"d", MetricValue::Signed(2)),
                metric("e\\", MetricValue::Signed(3)),
            ],
        );
        let text = line(&g, Precision::Seconds);
        assert!(text.starts_with("\\#comment＼,"), "{text}");
        assert!(text.contains(",k=two\\nlines\\r,"), "{text}");
        assert!(text.contains(",t=ends\\ in＼,"), "{text}");
        assert!(text.contains(",u=＼ "), "{text}");
        assert!(text.contains(" a＼\\,b=1i,c\\\\\"d=2i,e＼=3i "), "{text}");
        // One line, whatever the values held.
        assert_eq!(text.matches('\n').count(), 1, "{text}");
    }

    #[test]
    fn panoptes_field_names_are_typed_and_floats() {
        let mut out = Vec::new();
        let at = at_nanos(0, 0);
        let metrics = [
            ("in_octets", MetricType::Counter, MetricValue::Unsigned(123)),
            ("oper_state", MetricType::Gauge, MetricValue::Signed(-1)),
            ("utilization", MetricType::Gauge, MetricValue::Float(0.5)),
        ]
        .into_iter()
        .map(|(name, type_, value)| Metric {
            name: name.into(),
            value,
            type_,
            creation_timestamp: at,
        })
        .collect();
        let group = group("interface", &[("interface_name", "e0")], metrics);
        write_group_as(&group, Precision::Seconds, FieldNames::Panoptes, &mut out).expect("line");
        let line = String::from_utf8(out).expect("utf-8");
        assert!(
            line.contains(" in_octets__counter=123,oper_state__gauge=-1,utilization__gauge=0.5 "),
            "{line}"
        );
    }

    #[test]
    fn precisions_convert_the_creation_time() {
        let g = group("g", &[], vec![metric("m", MetricValue::Signed(1))]);
        let ts = |p| {
            let text = line(&g, p);
            text.trim_end()
                .rsplit(' ')
                .next()
                .expect("timestamp")
                .to_owned()
        };
        assert_eq!(ts(Precision::Seconds), "1700000000");
        assert_eq!(ts(Precision::Milliseconds), "1700000000123");
        assert_eq!(ts(Precision::Microseconds), "1700000000123456");
        assert_eq!(ts(Precision::Nanoseconds), "1700000000123456789");
        // InfluxDB's last nanosecond is i64::MAX - 1.
        let last = at_nanos(9_223_372_036, 854_775_806);
        assert_eq!(
            Precision::Nanoseconds.timestamp(&last),
            Some(9_223_372_036_854_775_806)
        );
        assert_eq!(Precision::Seconds.timestamp(&last), Some(9_223_372_036));
        let past = at_nanos(9_223_372_036, 854_775_807);
        assert_eq!(Precision::Seconds.timestamp(&past), None);
        let mut late = g.clone();
        late.creation_timestamp = past;
        assert_eq!(
            write_group(&late, Precision::Seconds, &mut Vec::new()),
            Err(Skipped::TimeOutOfRange)
        );
    }

    #[test]
    fn integers_stay_integers_and_huge_unsigned_become_floats() {
        let g = group(
            "g",
            &[],
            vec![
                metric("max", MetricValue::Unsigned(i64::MAX as u64)),
                metric("above", MetricValue::Unsigned(u64::MAX)),
                metric("min", MetricValue::Signed(i64::MIN)),
                metric("zero", MetricValue::Unsigned(0)),
                metric("whole", MetricValue::Float(3.0)),
                metric("big", MetricValue::Float(1e20)),
                metric("tiny", MetricValue::Float(-1.5e-7)),
                metric("third", MetricValue::Float(1.0 / 3.0)),
            ],
        );
        let text = line(&g, Precision::Seconds);
        assert!(
            text.contains(
                " max=9223372036854775807i,above=1.8446744073709552e19,\
                 min=-9223372036854775808i,zero=0i,whole=3.0,big=1e20,tiny=-1.5e-7,\
                 third=0.3333333333333333 "
            ),
            "{text}"
        );
    }

    #[test]
    fn non_finite_floats_are_left_out_and_a_group_without_fields_is_skipped() {
        let g = group(
            "g",
            &[],
            vec![
                metric("nan", MetricValue::Float(f64::NAN)),
                metric("ok", MetricValue::Float(1.5)),
                metric("inf", MetricValue::Float(f64::INFINITY)),
            ],
        );
        assert!(line(&g, Precision::Seconds).contains(" ok=1.5 "));
        let none = group(
            "g",
            &[],
            vec![
                metric("nan", MetricValue::Float(f64::NAN)),
                metric("neg", MetricValue::Float(f64::NEG_INFINITY)),
            ],
        );
        let mut out = b"kept\n".to_vec();
        assert_eq!(
            write_group(&none, Precision::Seconds, &mut out),
            Err(Skipped::NoFiniteField)
        );
        assert_eq!(out, b"kept\n", "nothing of the skipped line is left");
        let empty = group("", &[], vec![metric("m", MetricValue::Signed(1))]);
        assert_eq!(
            write_group(&empty, Precision::Seconds, &mut out),
            Err(Skipped::NoMeasurement)
        );
    }

    #[test]
    fn partial_writes_say_how_many_points_were_refused() {
        assert_eq!(
            refused_points(
                r#"{"error":"partial write: field type conflict: input field \"f\" on measurement \"m\" is type float, already exists as type integer dropped=2"}"#
            ),
            Some(2)
        );
        assert_eq!(
            refused_points(
                r#"{"error":"unable to parse 'a': missing fields\nunable to parse 'b': bad timestamp"}"#
            ),
            Some(2)
        );
        assert_eq!(refused_points(r#"{"code":"invalid","message":"no"}"#), None);
    }

    fn parse(text: &str) -> Result<InfluxSettings, LocatedError> {
        parse_at(text, 0)
    }

    fn parse_at(text: &str, index: usize) -> Result<InfluxSettings, LocatedError> {
        let section: InfluxSection = toml::from_str(text)
            .map_err(|e| LocatedError::new(Path::new("site.toml"), 0, e.to_string()))?;
        section.resolve(index, 0..0, Path::new("."), &|_, message| {
            LocatedError::new(Path::new("site.toml"), 1, message)
        })
    }

    #[test]
    fn v1_settings_and_their_defaults() {
        let settings = parse(
            "url = \"http://127.0.0.1:8086/\"\ndatabase = \"vigil\"\nretention_policy = \"week\"\n\
             username = \"writer\"\npassword = \"influx-v1-secret\"\nbuffer = 500\nbatch_size = 50\n",
        )
        .expect("valid");
        assert_eq!(settings.name, "influxdb");
        assert_eq!(settings.url, "http://127.0.0.1:8086");
        assert_eq!(settings.precision, Precision::Seconds);
        assert_eq!(settings.delivery.buffer, 500);
        assert_eq!(settings.delivery.delivery.batch_size, 50);
        assert!(matches!(
            &settings.api,
            InfluxApi::V1 { database, retention_policy: Some(rp), username: Some(user), password: Some(_) }
                if database == "vigil" && rp == "week" && user == "writer"
        ));
        assert!(!format!("{settings:?}").contains("influx-v1-secret"));
        let writer = InfluxWriter::new(&settings).expect("writer");
        assert_eq!(
            writer.write_url(),
            "http://127.0.0.1:8086/write?db=vigil&rp=week&precision=s"
        );
        let second = parse_at(
            "url = \"https://influx.example:8086\"\ndatabase = \"d\"\n",
            2,
        )
        .expect("valid");
        assert_eq!(second.name, "influxdb-3");
        assert_eq!(second.delivery.buffer, 100_000);
    }

    #[test]
    fn v2_settings() {
        let settings = parse(
            "url = \"http://127.0.0.1:8086/prefix\"\napi = \"v2\"\norg = \"my org\"\nbucket = \"b\"\n\
             token = \"influx-v2-token\"\nprecision = \"ns\"\n",
        )
        .expect("valid");
        assert!(
            matches!(&settings.api, InfluxApi::V2 { org, bucket, .. } if org == "my org" && bucket == "b")
        );
        assert!(!format!("{settings:?}").contains("influx-v2-token"));
        let writer = InfluxWriter::new(&settings).expect("writer");
        assert_eq!(
            writer.write_url(),
            "http://127.0.0.1:8086/prefix/api/v2/write?org=my+org&bucket=b&precision=ns"
        );
    }

    #[test]
    fn settings_errors_name_the_key() {
        let error = |text: &str| parse(text).expect_err(text).message;
        assert_eq!(
            error("database = \"d\""),
            "outputs.influxdb[0].url is required"
        );
        assert_eq!(
            error("url = \"http://x\""),
            "outputs.influxdb[0].database is required for api = \"v1\""
        );
        assert!(
            error("url = \"ftp://x\"\ndatabase = \"d\"")
                .contains("outputs.influxdb[0].url must be http")
        );
        assert!(
            error("url = \"http://u:p@x\"\ndatabase = \"d\"").contains("must not hold credentials")
        );
        assert!(error("url = \"http://x?db=d\"\ndatabase = \"d\"").contains("query"));
        assert_eq!(
            error("url = \"http://x\"\napi = \"v3\"\ndatabase = \"d\""),
            "outputs.influxdb[0].api must be \"v1\" or \"v2\", found \"v3\""
        );
        assert_eq!(
            error("url = \"http://x\"\napi = \"v2\"\norg = \"o\"\ntoken = \"t\""),
            "outputs.influxdb[0].bucket is required for api = \"v2\""
        );
        assert_eq!(
            error("url = \"http://x\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\""),
            "outputs.influxdb[0].token is required for api = \"v2\""
        );
        assert_eq!(
            error(
                "url = \"http://x\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\ndatabase = \"d\""
            ),
            "outputs.influxdb[0].database is only for api = \"v1\""
        );
        assert_eq!(
            error("url = \"http://x\"\ndatabase = \"d\"\ntoken = \"t\""),
            "outputs.influxdb[0].token is only for api = \"v2\""
        );
        assert_eq!(
            error("url = \"http://x\"\ndatabase = \"d\"\nusername = \"u\""),
            "outputs.influxdb[0]: username and password go together"
        );
        assert_eq!(
            error("url = \"http://x\"\ndatabase = \"d\"\nprecision = \"h\""),
            "outputs.influxdb[0].precision must be \"s\", \"ms\", \"us\" or \"ns\", found \"h\""
        );
        assert_eq!(
            error("url = \"http://x\"\ndatabase = \"d\"\nbatch_size = 0"),
            "outputs.influxdb[0].batch_size must be 1 to 100000 groups, found 0"
        );
        assert_eq!(
            error("url = \"http://x\"\ndatabase = \"\""),
            "outputs.influxdb[0].database is empty"
        );
        assert!(error("url = \"http://x\"\ndatabase = \"d\"\ncolor = 1").contains("unknown field"));
        assert!(
            error("url = \"http://x\"\ndatabase = \"d\"\nusername = \"u\"\npassword = { env = \"VIGIL_SURELY_UNSET_INFLUX_PW\" }")
                .contains("outputs.influxdb[0].password: environment variable VIGIL_SURELY_UNSET_INFLUX_PW is not set")
        );
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let section: InfluxSection = toml::from_str(
            "url = \"http://x\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"section-token-value\"\n",
        )
        .expect("toml");
        let text = format!("{section:?}");
        assert!(!text.contains("section-token-value"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        let section: InfluxSection = toml::from_str(
            "url = \"http://x\"\ndatabase = \"d\"\nusername = \"u\"\npassword = \"section-password\"\n",
        )
        .expect("toml");
        assert!(!format!("{section:?}").contains("section-password"));
    }

    #[tokio::test]
    async fn an_empty_batch_sends_nothing() {
        // Nothing listens on port 9 (discard) of a test machine; an empty
        // batch must not even try.
        let settings = parse("url = \"http://127.0.0.1:9\"\ndatabase = \"d\"\ntimeout = \"100ms\"")
            .expect("valid");
        let mut writer = InfluxWriter::new(&settings).expect("writer");
        assert!(writer.send(&[]).await.is_ok());
    }
}
