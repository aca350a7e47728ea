//! Opens the backends a site config chooses: one place that turns
//! `[storage]`, `[cache]`, `[coordination]` and `[bus]` into the objects the
//! agent and the CLI use. The embedded ones need nothing installed.

pub mod config;

use std::sync::Arc;

use anyhow::Context;

use crate::coordination::Coordination;
#[cfg(feature = "redis")]
use crate::coordination::redis::{RedisCoordinator, connect};
#[cfg(feature = "redis")]
use crate::coordination::shared::{RedisEnrichments, RedisRates, RedisResources};
use crate::coordination::{Coordinator, SingleNode};
use crate::pipeline::enrichment_cache::EnrichmentCache;
use crate::site::SiteConfig;
use crate::store::Storage;
use crate::store::sqlite::SqliteStorage;
#[cfg(feature = "redis")]
use crate::transform::DEFAULT_SERIES_CAPACITY;
use crate::transform::RateTransformer;
pub use config::{BusBackend, CacheBackend, StorageBackend};

/// The error for a site that asks for a backend this build left out
/// (`cargo build --no-default-features`): says which feature to build with.
pub fn not_built(feature: &str, setting: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{setting} needs the `{feature}` feature, which this build of vigil was compiled without (build with `--features {feature}`, or the default features)"
    )
}

/// The store for resources, run history, latest values and status. With a
/// Redis cache, resources (and their TTLs) live in Redis, shared by every
/// agent; the rest in the chosen store.
pub async fn open_storage(site: &SiteConfig, read_only: bool) -> anyhow::Result<Arc<dyn Storage>> {
    let store: Arc<dyn Storage> = match &site.storage_backend {
        StorageBackend::Embedded => {
            let path = &site.database;
            let store = if read_only {
                if !path.is_file() {
                    anyhow::bail!(
                        "no vigil database at {} (has `vigil run` run with this site config?)",
                        path.display()
                    );
                }
                SqliteStorage::open_read_only(path)
            } else {
                SqliteStorage::open(path)
            };
            Arc::new(store.with_context(|| format!("opening {}", path.display()))?)
        }
        #[cfg(feature = "mongodb")]
        StorageBackend::MongoDb { url, database } => {
            Arc::new(vigil_mongo::MongoStorage::open(url, database).await?)
        }
        #[cfg(not(feature = "mongodb"))]
        StorageBackend::MongoDb { .. } => {
            return Err(not_built("mongodb", "storage.backend = \"mongodb\""));
        }
    };
    Ok(match &site.cache_backend {
        CacheBackend::Embedded => store,
        #[cfg(feature = "redis")]
        CacheBackend::Redis { url } => {
            Arc::new(RedisResources::new(store, connect(url).await?, &site.name))
        }
        #[cfg(not(feature = "redis"))]
        CacheBackend::Redis { .. } => {
            return Err(not_built("redis", "cache.backend = \"redis\""));
        }
    })
}

/// Plugin key/value state: in the host's SQLite database next to its other
/// state, or in Redis when the site's cache is Redis, so a job that moves
/// to another agent keeps its plugin's state.
pub fn open_kv(site: &SiteConfig) -> anyhow::Result<Arc<dyn crate::capabilities::kv::KvBackend>> {
    Ok(match &site.cache_backend {
        CacheBackend::Embedded => Arc::new(
            crate::store::kv::SqliteKv::open(&site.database)
                .with_context(|| format!("opening {}", site.database.display()))?,
        ),
        #[cfg(feature = "redis")]
        CacheBackend::Redis { url } => Arc::new(
            crate::coordination::shared::RedisKv::open(url, &site.name)
                // The URL may hold a password: not in the message.
                .context("opening the plugin key/value store in Redis ([cache] url)")?,
        ),
        #[cfg(not(feature = "redis"))]
        CacheBackend::Redis { .. } => {
            return Err(not_built("redis", "cache.backend = \"redis\""));
        }
    })
}

/// The embedded enrichment cache's mirror: the site's store (see
/// [`vigil_enrichment::EnrichmentMirror`]).
struct StoreMirror(Arc<dyn Storage>);

impl vigil_enrichment::EnrichmentMirror for StoreMirror {
    fn write<'a>(
        &'a self,
        held: &'a [vigil_enrichment::CachedEnrichment],
        removed: &'a [(String, String)],
        now: f64,
    ) -> futures_util::future::BoxFuture<'a, Result<(), vigil_core::BackendError>> {
        Box::pin(async move {
            self.0
                .mirror_enrichments(held, removed, now)
                .await
                .map_err(|e| Box::new(e) as vigil_core::BackendError)
        })
    }
}

/// The enrichment cache and the rate transformer, in Redis when the site's
/// cache is Redis. The embedded cache is mirrored into `store`, so `vigil
/// enrichment` can read it, and starts with what the mirror held when the
/// last `vigil run` stopped (a warm start).
pub async fn shared_state(
    site: &SiteConfig,
    store: &Arc<dyn Storage>,
) -> anyhow::Result<(Arc<EnrichmentCache>, Arc<RateTransformer>)> {
    Ok(match &site.cache_backend {
        CacheBackend::Embedded => {
            let cache =
                EnrichmentCache::new(site.enrichment.clone()).mirrored(StoreMirror(store.clone()));
            let now = crate::pipeline::epoch_seconds(std::time::SystemTime::now());
            match store.mirrored_enrichments(None, None, now).await {
                Ok(entries) if !entries.is_empty() => {
                    let restored = cache.restore(entries, now);
                    tracing::info!(
                        groups = restored,
                        "enrichment cache restored from the store"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "enrichment cache not restored from the store; starting empty")
                }
            }
            (Arc::new(cache), Arc::new(RateTransformer::default()))
        }
        #[cfg(not(feature = "redis"))]
        CacheBackend::Redis { .. } => {
            return Err(not_built("redis", "cache.backend = \"redis\""));
        }
        #[cfg(feature = "redis")]
        CacheBackend::Redis { url } => {
            let connection = connect(url).await?;
            (
                Arc::new(EnrichmentCache::shared_with(
                    RedisEnrichments::new(connection.clone(), &site.name),
                    site.enrichment.clone(),
                )),
                Arc::new(RateTransformer::shared(
                    DEFAULT_SERIES_CAPACITY,
                    RedisRates::new(connection, &site.name),
                )),
            )
        }
    })
}

/// The live groups of the site's enrichment cache (of one resource and
/// one namespace when given), for `vigil enrichment`: from Redis, or for
/// the embedded cache (which lives in the memory of `vigil run`) from its
/// mirror in the site's store.
pub async fn cached_enrichments(
    site: &SiteConfig,
    resource_id: Option<&str>,
    namespace: Option<&str>,
    now: f64,
) -> anyhow::Result<Vec<vigil_enrichment::CachedEnrichment>> {
    match &site.cache_backend {
        CacheBackend::Embedded => {
            let store = open_storage(site, true).await?;
            store
                .mirrored_enrichments(resource_id, namespace, now)
                .await
                .context("reading the embedded enrichment cache's mirror in the store")
        }
        #[cfg(feature = "redis")]
        CacheBackend::Redis { url } => {
            let enrichments = RedisEnrichments::new(connect(url).await?, &site.name);
            enrichments
                .list(resource_id, namespace, now)
                .await
                // The URL may hold a password: not in the message.
                .context("reading the enrichment cache in Redis ([cache] url)")
        }
        #[cfg(not(feature = "redis"))]
        CacheBackend::Redis { .. } => {
            let _ = (resource_id, namespace, now);
            Err(not_built("redis", "cache.backend = \"redis\""))
        }
    }
}

/// How this agent shares work: alone, or with the others through Redis.
pub async fn coordinator(
    site: &SiteConfig,
    agent_id: &str,
) -> anyhow::Result<Arc<dyn Coordinator>> {
    Ok(match &site.coordination {
        Coordination::Local => Arc::new(SingleNode),
        #[cfg(feature = "redis")]
        Coordination::Redis(settings) => {
            RedisCoordinator::start(settings.clone(), agent_id.to_owned()).await?
        }
        #[cfg(not(feature = "redis"))]
        Coordination::Redis(_) => {
            let _ = agent_id;
            return Err(not_built("redis", "coordination.backend = \"redis\""));
        }
    })
}

/// This agent's id: `--agent-id`, else `HOSTNAME-PID`.
pub fn default_agent_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vigil".to_owned());
    format!("{host}-{}", std::process::id())
}
