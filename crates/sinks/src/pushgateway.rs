//! The Pushgateway sink: one grouping key per resource,
//! `/metrics/job/<job>/instance/<resource id>` (the grouping sense-rtmon
//! uses), so each device's series replace its previous push and nothing
//! else.
//!
//! A push is an HTTP `PUT`, which replaces the whole group. Several plugins
//! feed one resource at different times, so the sink keeps every
//! resource's latest series (one [`Families`] for all resources, rendered
//! per resource) and puts all of them each time any changed; a resource's
//! series not updated for `stale_after` leave its group, and a resource
//! that expires (or has nothing left) has its group `DELETE`d. A dimension
//! called `job` or `instance` is renamed `exported_job` /
//! `exported_instance`, because the grouping key owns those labels.
//!
//! # Paths that name one resource's group and nothing else
//!
//! A resource id goes into the path as is only when it is *plain*: one or
//! more of `A-Z a-z 0-9 _ - .`, and not `.` or `..`. Everything else
//! (empty, `.`, `..`, `/`, `%`, spaces, any non-ASCII) uses the
//! Pushgateway's `@base64` form (URL-safe alphabet, which has no `/`, `.` or
//! `%`), so no id can become a dot segment that an HTTP client or proxy
//! resolves away (`/instance/..` is `/metrics/job/<job>`, the job-level
//! group: a plugin reporting a resource `..` used to make vigil PUT and
//! DELETE that), nor a second path segment, nor a different id after
//! percent-decoding.
//!
//! # Budgets and CPU
//!
//! Series are budgeted per producing plugin (`max_series_per_plugin`,
//! default 250,000, at most `max_series`) as in the Prometheus registry,
//! and names the Pushgateway adds itself (`push_time_seconds`,
//! `push_failure_time_seconds`) or vigil uses (`vigil_*`) are refused.
//! Folding a batch into the series and rendering push bodies run on
//! tokio's blocking pool (bodies 64 resources per step), never on a
//! runtime worker.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use toml::Spanned;

use super::buffer::SharedGroup;
use super::delivery::{BatchWriter, SendError};
use super::exposition::{Exposition, Format, group_labels};
use super::prometheus::{Families, SeriesLimits, UsageView, series_budgets};
use super::{At, DeliverySection, DeliverySettings, LocatedError, duration_in_range};
use vigil_core::batch::{PluginName, UNKNOWN_PLUGIN};
use vigil_core::secret::{Secret, SecretSource};

/// Family names the Pushgateway adds to every group itself: a pushed
/// family of that name would make it refuse the push.
pub const PUSHGATEWAY_NAMES: &[&str] = &["push_time_seconds", "push_failure_time_seconds"];
/// Dirty resources whose push bodies one blocking step renders.
const RENDER_CHUNK: usize = 64;

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
    /// Series one plugin may hold (at most `max_series`).
    pub max_series_per_plugin: usize,
    /// Prefix of every pushed family (as `outputs.prometheus.namespace`).
    pub namespace: Option<String>,
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
    max_series_per_plugin: Option<Spanned<u64>>,
    namespace: Option<Spanned<String>>,
    buffer: Option<Spanned<u32>>,
    batch_size: Option<Spanned<u32>>,
    flush_interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
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
        let (max_series, max_series_per_plugin) = series_budgets(
            what,
            self.max_series.as_ref(),
            self.max_series_per_plugin.as_ref(),
            at,
        )?;
        let namespace = super::prometheus::namespace(what, self.namespace.as_ref(), at)?;
        let delivery = DeliverySection {
            buffer: self.buffer,
            batch_size: self.batch_size,
            flush_interval: self.flush_interval,
            timeout: self.timeout,
            shutdown_grace: self.shutdown_grace,
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
            max_series_per_plugin,
            namespace,
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

/// Whether `value` may stand in a path segment as it is: one or more of
/// `A-Z a-z 0-9 _ - .`, and not a dot segment (`.`, `..`).
fn plain(value: &str) -> bool {
    !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `/metrics/job/<job>/instance/<id>`, each value as it is when plain, else
/// `@base64` (see the module doc).
pub fn group_path(job: &str, instance: &str) -> String {
    fn segment(label: &str, value: &str) -> String {
        if plain(value) {
            format!("{label}/{value}")
        } else {
            let encoded = base64::engine::general_purpose::URL_SAFE.encode(value.as_bytes());
            // The Pushgateway reads an empty value as `=` padding only.
            let encoded = if encoded.is_empty() {
                "=".to_owned()
            } else {
                encoded
            };
            format!("{label}@base64/{encoded}")
        }
    }
    format!(
        "/metrics/{}/{}",
        segment("job", job),
        segment("instance", instance)
    )
}

/// What the writer keeps between batches; behind a lock so the blocking
/// pool can work on it.
struct PushState {
    families: Families,
    dirty: BTreeSet<Arc<str>>,
    deletes: BTreeSet<String>,
    last_sweep: Instant,
}

pub struct PushgatewayWriter {
    settings: PushgatewaySettings,
    client: reqwest::Client,
    state: Arc<Mutex<PushState>>,
    expiries: Arc<Expiries>,
    usage: Arc<UsageView>,
}

fn lock(state: &Mutex<PushState>) -> MutexGuard<'_, PushState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl PushState {
    /// Folds a batch into the series; returns how many groups had series
    /// refused.
    fn fold(
        &mut self,
        settings: &PushgatewaySettings,
        batch: &[SharedGroup],
        plugins: &[PluginName],
        expired: Vec<String>,
    ) -> usize {
        let now = Instant::now();
        let limits = SeriesLimits {
            max_series: settings.max_series,
            max_series_per_plugin: settings.max_series_per_plugin,
        };
        let mut refused = 0;
        for (i, group) in batch.iter().enumerate() {
            let plugin = plugins.get(i).map_or(UNKNOWN_PLUGIN, |p| &**p);
            let id = group.resource.id.as_str();
            self.deletes.remove(id);
            let labels = group_labels(group, &["job", "instance"]);
            if self
                .families
                .accept(group, plugin, &labels, now, limits)
                .is_some()
            {
                refused += 1;
            }
            if self.families.has_resource(id) && !self.dirty.contains(id) {
                self.dirty.insert(Arc::from(id));
            }
        }
        for id in expired {
            self.families.forget_resource(&id);
            self.dirty.remove(id.as_str());
            self.deletes.insert(id);
        }
        // Series no longer reported leave their groups; a group left empty
        // is deleted. A pass touches every series, so it runs at most eight
        // times per `stale_after`, not on every batch.
        let sweep_every = (settings.stale_after / 8).max(Duration::from_millis(250));
        if now.duration_since(self.last_sweep) >= sweep_every
            && let Some(cutoff) = now.checked_sub(settings.stale_after)
        {
            self.last_sweep = now;
            for id in self.families.sweep(cutoff) {
                if self.families.has_resource(&id) {
                    self.dirty.insert(id);
                } else {
                    self.dirty.remove(&id);
                    self.deletes.insert(id.to_string());
                }
            }
        }
        refused
    }

    /// The text a push of `id` sends; `None` when it has no series.
    fn body(&mut self, id: &str) -> Option<String> {
        let mut doc = Exposition::new(Format::Text);
        self.families
            .render_resource(id, &mut doc)
            .then(|| doc.finish())
    }
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
            state: Arc::new(Mutex::new(PushState {
                families: Families::with_reserved(PUSHGATEWAY_NAMES)
                    .namespaced(settings.namespace.clone()),
                dirty: BTreeSet::new(),
                deletes: BTreeSet::new(),
                last_sweep: Instant::now(),
            })),
            expiries,
            usage: Arc::default(),
        })
    }

    /// Each plugin's series and refusals, as last published.
    pub fn usage(&self) -> Arc<UsageView> {
        self.usage.clone()
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
        lock(&self.state).body(id)
    }

    async fn push(&self, id: &str, body: String) -> Result<(), (bool, String)> {
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

    /// Runs `work` on the state in the blocking pool.
    async fn on_state<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut PushState, &PushgatewaySettings) -> T + Send + 'static,
    ) -> Result<T, SendError> {
        let state = self.state.clone();
        let settings = self.settings.clone();
        tokio::task::spawn_blocking(move || work(&mut lock(&state), &settings))
            .await
            .map_err(|e| {
                SendError::Retry(format!(
                    "pushgateway sink {}: folding a batch failed: {e}",
                    self.settings.name
                ))
            })
    }
}

impl BatchWriter for PushgatewayWriter {
    async fn send(&mut self, batch: &[SharedGroup]) -> Result<(), SendError> {
        self.send_from(batch, &[]).await
    }

    async fn send_from(
        &mut self,
        batch: &[SharedGroup],
        plugins: &[PluginName],
    ) -> Result<(), SendError> {
        let expired = self.expiries.take();
        let (batch_owned, plugins_owned) = (batch.to_vec(), plugins.to_vec());
        let (refused_series, deletes, dirty, usage) = self
            .on_state(move |state, settings| {
                let refused = state.fold(settings, &batch_owned, &plugins_owned, expired);
                (
                    refused,
                    state.deletes.iter().cloned().collect::<Vec<_>>(),
                    state.dirty.iter().cloned().collect::<Vec<_>>(),
                    state.families.plugin_usage(),
                )
            })
            .await?;
        self.usage.set(usage);
        for id in deletes {
            match self.delete(&id).await {
                Ok(()) => {
                    lock(&self.state).deletes.remove(&id);
                }
                Err((true, message)) => return Err(SendError::Retry(message)),
                Err((false, message)) => {
                    tracing::warn!("{message}");
                    lock(&self.state).deletes.remove(&id);
                }
            }
        }
        let mut refused_groups = 0;
        let mut last_refusal = String::new();
        // Groups per resource, for counting what a refusal cost (once,
        // not a scan of the batch per refused resource).
        let mut groups_of: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::new();
        for group in batch {
            *groups_of.entry(group.resource.id.as_str()).or_default() += 1;
        }
        for chunk in dirty.chunks(RENDER_CHUNK) {
            let ids = chunk.to_vec();
            let bodies = self
                .on_state(move |state, _| {
                    ids.into_iter()
                        .map(|id| {
                            let body = state.body(&id);
                            (id, body)
                        })
                        .collect::<Vec<_>>()
                })
                .await?;
            for (id, body) in bodies {
                let outcome = match body {
                    Some(body) => self.push(&id, body).await,
                    None => Ok(()),
                };
                match outcome {
                    Ok(()) => {
                        lock(&self.state).dirty.remove(&id);
                    }
                    Err((true, message)) => return Err(SendError::Retry(message)),
                    Err((false, message)) => {
                        // The Pushgateway refused this resource's series
                        // (e.g. a name another job pushes with another
                        // type); the others still go.
                        lock(&self.state).dirty.remove(&id);
                        refused_groups += groups_of.get(&*id).copied().unwrap_or(0);
                        last_refusal = message;
                    }
                }
            }
        }
        if refused_groups > 0 || refused_series > 0 {
            return Err(SendError::PartlyRejected {
                rejected: refused_groups.max(refused_series),
                message: if last_refusal.is_empty() {
                    "series refused: over a series budget, a conflicting type or a reserved name"
                        .to_owned()
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
    use std::collections::BTreeMap;

    #[test]
    fn group_paths_are_safe_for_any_resource_id() {
        assert_eq!(
            group_path("vigil", "sw1"),
            "/metrics/job/vigil/instance/sw1"
        );
        // Anything not plain is base64, never percent-encoded: a
        // percent-decoding proxy could turn `%2e%2e` into `..`.
        assert_eq!(
            group_path("vigil", "core sw:1"),
            "/metrics/job/vigil/instance@base64/Y29yZSBzdzox"
        );
        assert_eq!(
            group_path("vigil", "a.b-c_9"),
            "/metrics/job/vigil/instance/a.b-c_9"
        );
        for (id, encoded) in [
            ("..", "Li4="),
            (".", "Lg=="),
            ("...", "..."),
            ("%2e%2e", "JTJlJTJl"),
            ("a/../b", "YS8uLi9i"),
            (" ", "IA=="),
            ("é", "w6k="),
        ] {
            let path = group_path("vigil", id);
            if plain(id) {
                assert_eq!(path, format!("/metrics/job/vigil/instance/{encoded}"));
            } else {
                assert_eq!(
                    path,
                    format!("/metrics/job/vigil/instance@base64/{encoded}")
                );
            }
            // Exactly one segment after the label, none of them a dot
            // segment, and nothing a URL parser rewrites.
            let url = reqwest::Url::parse(&format!("http://h{path}")).expect("url");
            assert_eq!(url.path(), path, "{id:?}");
            let segments: Vec<&str> = path.split('/').collect();
            assert_eq!(segments.len(), 6, "{path}");
            assert!(!segments.iter().any(|s| *s == "." || *s == ".."), "{path}");
        }
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

    fn settings(max_series: usize, per_plugin: usize) -> PushgatewaySettings {
        PushgatewaySettings {
            name: "pg".into(),
            url: "http://127.0.0.1:1".into(),
            job: "vigil".into(),
            username: None,
            password: None,
            stale_after: Duration::from_secs(600),
            max_series,
            max_series_per_plugin: per_plugin,
            namespace: None,
            delivery: DeliverySettings {
                buffer: 10,
                delivery: super::super::delivery::Delivery::default(),
                timeout: Duration::from_secs(1),
            },
        }
    }

    fn group(resource: &str, group_type: &str, metric: &str) -> SharedGroup {
        use vigil_core::model::{
            Datetime, Metric, MetricType, MetricValue, MetricsGroup, Resource,
        };
        let at = Datetime {
            seconds: 1,
            nanoseconds: 0,
        };
        Arc::new(MetricsGroup {
            group_type: group_type.into(),
            interval_seconds: 60,
            creation_timestamp: at,
            schema_version: "0.2".into(),
            resource: Resource::named(resource, "127.0.0.1").into(),
            dimensions: Vec::new(),
            metrics: vec![Metric {
                name: metric.into(),
                value: MetricValue::Float(1.0),
                type_: MetricType::Gauge,
                creation_timestamp: at,
            }],
        })
    }

    #[test]
    fn series_are_budgeted_per_plugin_and_the_gateways_names_refused() {
        let settings = settings(100, 10);
        let writer = PushgatewayWriter::new(&settings, Arc::default()).expect("writer");
        let mut state = lock(&writer.state);
        let flood: Vec<SharedGroup> = (0..50).map(|i| group(&format!("r{i}"), "g", "m")).collect();
        let hog = vec![PluginName::from("hog"); flood.len()];
        assert_eq!(state.fold(&settings, &flood, &hog, Vec::new()), 40);
        let good = vec![
            group("n1", "g", "m"),
            // Named like what the Pushgateway adds itself, and like vigil's.
            group("n1", "push", "time_seconds"),
            group("n1", "vigil", "plugin_runs"),
        ];
        let plugins = vec![PluginName::from("good"); good.len()];
        assert_eq!(state.fold(&settings, &good, &plugins, Vec::new()), 2);
        let usage: BTreeMap<String, (u64, BTreeMap<String, u64>)> = state
            .families
            .plugin_usage()
            .into_iter()
            .map(|(plugin, series, dropped)| (plugin, (series, dropped)))
            .collect();
        assert_eq!(usage["hog"].0, 10);
        assert_eq!(usage["hog"].1.get("plugin_series_limit"), Some(&40));
        assert_eq!(usage["good"].0, 1);
        assert_eq!(usage["good"].1.get("reserved_name"), Some(&2));
        // Only resources with series are pushed.
        assert_eq!(state.dirty.len(), 11);
        let body = state.body("n1").expect("n1's body");
        assert!(body.contains("g_m{resource_id=\"n1\""), "{body}");
        assert!(!body.contains("push_time_seconds"), "{body}");
        assert!(state.body("r49").is_none());
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
