//! The Pushgateway sink: one grouping key per resource,
//! `/metrics/job/<job>/instance/<resource id>` (the grouping sense-rtmon
//! uses), so each device's series replace its previous push and nothing
//! else.
//!
//! A push is an HTTP `PUT`, which replaces the whole group. Several plugins
//! feed one resource at different times, so the sink keeps every
//! resource's latest series ([`Families`]) and puts all of them each time
//! any changed; a resource's series not updated for `stale_after` leave its
//! group, and a resource that expires (or has nothing left) has its group
//! `DELETE`d. Resource ids with `/` (or empty) use the Pushgateway's
//! `@base64` path encoding. A dimension called `job` or `instance` is
//! renamed `exported_job` / `exported_instance`, because the grouping key
//! owns those labels.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use toml::Spanned;

use super::buffer::SharedGroup;
use super::delivery::{BatchWriter, SendError};
use super::exposition::{Exposition, Format, Kind, group_labels};
use super::prometheus::Families;
use super::{At, DeliverySection, DeliverySettings, LocatedError, duration_in_range, in_range};
use crate::secret::{Secret, SecretSource};

/// `[[outputs.pushgateway]]`.
#[derive(Debug, Clone)]
pub struct PushgatewaySettings {
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:9091`.
    pub url: String,
    pub job: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub stale_after: Duration,
    pub max_series: usize,
    pub delivery: DeliverySettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushgatewaySection {
    name: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    job: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<SecretSource>>,
    stale_after: Option<Spanned<String>>,
    max_series: Option<Spanned<u64>>,
    buffer: Option<Spanned<u32>>,
    batch_size: Option<Spanned<u32>>,
    flush_interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

impl PushgatewaySection {
    pub fn resolve(
        self,
        span: std::ops::Range<usize>,
        base: &Path,
        at: At<'_>,
    ) -> Result<PushgatewaySettings, LocatedError> {
        let what = "outputs.pushgateway";
        let url = match &self.url {
            Some(url) => {
                let text = url.get_ref().trim().trim_end_matches('/');
                let parsed = reqwest::Url::parse(text)
                    .map_err(|e| at(url.span(), format!("{what}.url {text:?}: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(at(
                        url.span(),
                        format!("{what}.url must be http:// or https://"),
                    ));
                }
                text.to_owned()
            }
            None => return Err(at(span, format!("{what}.url is required"))),
        };
        let job = match &self.job {
            Some(job) if job.get_ref().is_empty() => {
                return Err(at(job.span(), format!("{what}.job is empty")));
            }
            Some(job) => job.get_ref().clone(),
            None => "vigil".to_owned(),
        };
        let password = match &self.password {
            Some(source) => Some(
                source
                    .get_ref()
                    .read(base)
                    .map_err(|e| at(source.span(), format!("{what}.password: {e}")))?,
            ),
            None => None,
        };
        if password.is_some() != self.username.is_some() {
            return Err(at(
                span,
                format!("{what}: username and password go together"),
            ));
        }
        let stale_after = match &self.stale_after {
            Some(stale) => duration_in_range(
                &format!("{what}.stale_after"),
                stale,
                super::STALE_AFTER_RANGE,
                at,
            )?,
            None => Duration::from_secs(900),
        };
        let max_series = match &self.max_series {
            Some(max) => {
                in_range(&format!("{what}.max_series"), max, 1..=50_000_000, "", at)? as usize
            }
            None => 1_000_000,
        };
        let delivery = DeliverySection {
            buffer: self.buffer,
            batch_size: self.batch_size,
            flush_interval: self.flush_interval,
            timeout: self.timeout,
        }
        .resolve(what, 100_000, at)?;
        Ok(PushgatewaySettings {
            name: self
                .name
                .map_or_else(|| "pushgateway".to_owned(), |n| n.into_inner()),
            url,
            job,
            username: self.username.map(Spanned::into_inner),
            password,
            stale_after,
            max_series,
            delivery,
        })
    }
}

/// Resource ids whose groups must be deleted, handed from the sink loop to
/// the writer's task.
#[derive(Debug, Default)]
pub struct Expiries(Mutex<Vec<String>>);

impl Expiries {
    pub fn add(&self, ids: &[String]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(ids);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Characters a path segment must not carry unescaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// `/metrics/job/<job>/instance/<id>` with each value path-safe: `@base64`
/// (URL-safe) when it holds a `/` or is empty, else percent-encoded.
pub fn group_path(job: &str, instance: &str) -> String {
    fn segment(label: &str, value: &str) -> String {
        if value.is_empty() || value.contains('/') {
            let encoded = base64::engine::general_purpose::URL_SAFE.encode(value.as_bytes());
            // The Pushgateway reads an empty value as `=` padding only.
            let encoded = if encoded.is_empty() {
                "=".to_owned()
            } else {
                encoded
            };
            format!("{label}@base64/{encoded}")
        } else {
            format!("{label}/{}", utf8_percent_encode(value, SEGMENT))
        }
    }
    format!(
        "/metrics/{}/{}",
        segment("job", job),
        segment("instance", instance)
    )
}

pub struct PushgatewayWriter {
    settings: PushgatewaySettings,
    client: reqwest::Client,
    resources: HashMap<String, Families>,
    /// One type per metric name across all groups (the Pushgateway
    /// refuses a push that disagrees with another group).
    kinds: HashMap<String, Kind>,
    dirty: BTreeSet<String>,
    deletes: BTreeSet<String>,
    expiries: Arc<Expiries>,
    last_sweep: Instant,
}

impl PushgatewayWriter {
    pub fn new(
        settings: &PushgatewaySettings,
        expiries: Arc<Expiries>,
    ) -> anyhow::Result<PushgatewayWriter> {
        let client = reqwest::Client::builder()
            .timeout(settings.delivery.timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("pushgateway sink {}: {e}", settings.name))?;
        Ok(PushgatewayWriter {
            settings: settings.clone(),
            client,
            resources: HashMap::new(),
            kinds: HashMap::new(),
            dirty: BTreeSet::new(),
            deletes: BTreeSet::new(),
            expiries,
            last_sweep: Instant::now(),
        })
    }

    fn fold(&mut self, batch: &[SharedGroup]) -> usize {
        let now = Instant::now();
        let total: usize = self.resources.values().map(Families::len).sum();
        let mut room = self.settings.max_series.saturating_sub(total);
        let mut refused = 0;
        for group in batch {
            let id = &group.resource.id;
            self.deletes.remove(id);
            let families = self.resources.entry(id.clone()).or_default();
            let before = families.len();
            let labels = group_labels(group, &["job", "instance"]);
            let limit = before + room;
            if families
                .accept(group, &labels, now, limit, Some(&mut self.kinds))
                .is_some()
            {
                refused += 1;
            }
            room = room.saturating_sub(families.len() - before);
            if families.is_empty() {
                // Nothing of it was kept: nothing to push.
                self.resources.remove(id);
            } else {
                self.dirty.insert(id.clone());
            }
        }
        for id in self.expiries.take() {
            self.resources.remove(&id);
            self.dirty.remove(&id);
            self.deletes.insert(id);
        }
        // Series no longer reported leave their groups; a group left empty
        // is deleted. A pass touches every series, so it runs at most eight
        // times per `stale_after`, not on every batch.
        let sweep_every = (self.settings.stale_after / 8).max(Duration::from_millis(250));
        if now.duration_since(self.last_sweep) >= sweep_every
            && let Some(cutoff) = now.checked_sub(self.settings.stale_after)
        {
            self.last_sweep = now;
            let (dirty, deletes) = (&mut self.dirty, &mut self.deletes);
            self.resources.retain(|id, families| {
                let before = families.len();
                families.sweep(cutoff);
                if families.is_empty() {
                    dirty.remove(id);
                    deletes.insert(id.clone());
                    false
                } else {
                    if families.len() != before {
                        dirty.insert(id.clone());
                    }
                    true
                }
            });
        }
        refused
    }

    fn request(&self, method: reqwest::Method, id: &str) -> reqwest::RequestBuilder {
        let url = format!(
            "{}{}",
            self.settings.url,
            group_path(&self.settings.job, id)
        );
        let request = self.client.request(method, url);
        match (&self.settings.username, &self.settings.password) {
            (Some(user), Some(password)) => request.basic_auth(user, Some(password.expose_text())),
            _ => request,
        }
    }

    /// The text a push of `id` sends.
    pub fn body(&self, id: &str) -> Option<String> {
        let families = self.resources.get(id)?;
        let mut doc = Exposition::new(Format::Text);
        families.render(&mut doc);
        Some(doc.finish())
    }

    async fn push(&self, id: &str) -> Result<(), (bool, String)> {
        let Some(body) = self.body(id) else {
            return Ok(());
        };
        let response = self
            .request(reqwest::Method::PUT, id)
            .header(reqwest::header::CONTENT_TYPE, Format::TEXT_CONTENT_TYPE)
            .body(body)
            .send()
            .await;
        self.outcome(id, "push", response).await
    }

    async fn delete(&self, id: &str) -> Result<(), (bool, String)> {
        let response = self.request(reqwest::Method::DELETE, id).send().await;
        self.outcome(id, "delete", response).await
    }

    /// `Err((retry, message))`.
    async fn outcome(
        &self,
        id: &str,
        what: &str,
        response: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<(), (bool, String)> {
        let name = &self.settings.name;
        let response = response.map_err(|e| {
            (
                true,
                format!(
                    "pushgateway sink {name}: {what} of {id:?}: {}",
                    e.without_url()
                ),
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(300).collect();
        let retry = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::UNAUTHORIZED
            || status == reqwest::StatusCode::FORBIDDEN
            || status == reqwest::StatusCode::NOT_FOUND;
        Err((
            retry,
            format!("pushgateway sink {name}: {what} of {id:?}: HTTP {status}: {excerpt}"),
        ))
    }
}

impl BatchWriter for PushgatewayWriter {
    async fn send(&mut self, batch: &[SharedGroup]) -> Result<(), SendError> {
        let refused_series = self.fold(batch);
        for id in self.deletes.clone() {
            match self.delete(&id).await {
                Ok(()) => {
                    self.deletes.remove(&id);
                }
                Err((true, message)) => return Err(SendError::Retry(message)),
                Err((false, message)) => {
                    tracing::warn!("{message}");
                    self.deletes.remove(&id);
                }
            }
        }
        let mut refused_groups = 0;
        let mut last_refusal = String::new();
        for id in self.dirty.clone() {
            match self.push(&id).await {
                Ok(()) => {
                    self.dirty.remove(&id);
                }
                Err((true, message)) => return Err(SendError::Retry(message)),
                Err((false, message)) => {
                    // The Pushgateway refused this resource's series (e.g. a
                    // name another job pushes with another type); the
                    // others still go.
                    self.dirty.remove(&id);
                    refused_groups += batch.iter().filter(|g| g.resource.id == id).count();
                    last_refusal = message;
                }
            }
        }
        if refused_groups > 0 || refused_series > 0 {
            return Err(SendError::PartlyRejected {
                rejected: refused_groups.max(refused_series),
                message: if last_refusal.is_empty() {
                    "series over the sink's max_series or with a conflicting type".to_owned()
                } else {
                    last_refusal
                },
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_paths_are_safe_for_any_resource_id() {
        assert_eq!(
            group_path("vigil", "sw1"),
            "/metrics/job/vigil/instance/sw1"
        );
        assert_eq!(
            group_path("vigil", "core sw:1"),
            "/metrics/job/vigil/instance/core%20sw%3A1"
        );
        // `/` cannot be percent-encoded in a path the Pushgateway splits.
        assert_eq!(
            group_path("vigil", "ge-0/0/1"),
            "/metrics/job/vigil/instance@base64/Z2UtMC8wLzE="
        );
        assert_eq!(
            group_path("vigil", ""),
            "/metrics/job/vigil/instance@base64/="
        );
    }

    #[test]
    fn settings_need_a_url_and_keep_the_password_secret() {
        let parse = |text: &str| {
            let section: PushgatewaySection = toml::from_str(text).expect("toml");
            section.resolve(0..0, Path::new("."), &|_, message| {
                LocatedError::new(Path::new("site.toml"), 1, message)
            })
        };
        let err = parse("job = \"x\"").expect_err("no url");
        assert!(
            err.message.contains("outputs.pushgateway.url is required"),
            "{err}"
        );
        let err = parse("url = \"ftp://x\"").expect_err("scheme");
        assert!(err.message.contains("http"), "{err}");
        let settings = parse(
            "url = \"http://127.0.0.1:9091/\"\nusername = \"u\"\npassword = \"pushgateway-secret\"\nbuffer = 10\n",
        )
        .expect("valid");
        assert_eq!(settings.url, "http://127.0.0.1:9091");
        assert_eq!(settings.job, "vigil");
        assert_eq!(settings.delivery.buffer, 10);
        assert!(!format!("{settings:?}").contains("pushgateway-secret"));
    }
}
