//! The backend choices of a site config (`[storage]`, `[cache]`, `[bus]`):
//! their section types and checks. `[coordination]` is the coordination
//! module's; the site config assembles them all.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;
use vigil_core::located::{backend_name, required};
use vigil_core::{At, LocatedError};

use crate::coordination::CoordinationSection;

#[derive(Debug, Clone, PartialEq)]
pub enum StorageBackend {
    /// SQLite at the site's `database`.
    Embedded,
    MongoDb {
        url: String,
        database: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum CacheBackend {
    /// In this process's memory (plus the embedded database for resources).
    Embedded,
    Redis {
        url: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum BusBackend {
    /// An in-process channel to this process's sinks.
    Embedded,
    Kafka {
        brokers: String,
        partitions: i32,
        /// Messages the producer buffers while the broker is away; past
        /// this the oldest are dropped and counted.
        buffer_messages: usize,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub(crate) backend: Option<Spanned<String>>,
    pub(crate) path: Option<PathBuf>,
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) database: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub(crate) backend: Option<Spanned<String>>,
    pub(crate) url: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSection {
    pub(crate) backend: Option<Spanned<String>>,
    pub(crate) capacity: Option<Spanned<u32>>,
    pub(crate) brokers: Option<Spanned<String>>,
    pub(crate) partitions: Option<Spanned<i32>>,
    pub(crate) buffer_messages: Option<Spanned<u32>>,
}

pub fn storage_backend(
    section: &StorageSection,
    at: At<'_>,
) -> Result<StorageBackend, LocatedError> {
    match backend_name("storage", &section.backend, &["embedded", "mongodb"], at)? {
        "mongodb" => Ok(StorageBackend::MongoDb {
            url: required("storage", "url", &section.url, &section.backend, at)?,
            database: section
                .database
                .as_ref()
                .map_or_else(|| "vigil".to_owned(), |d| d.get_ref().clone()),
        }),
        _ => Ok(StorageBackend::Embedded),
    }
}

pub fn cache_backend(
    section: &CacheSection,
    coordination: &CoordinationSection,
    at: At<'_>,
) -> Result<CacheBackend, LocatedError> {
    match backend_name("cache", &section.backend, &["embedded", "redis"], at)? {
        // One Redis usually serves both; the cache may name its own.
        "redis" => Ok(CacheBackend::Redis {
            url: match (&section.url, coordination.url()) {
                (Some(url), _) | (None, Some(url)) => url.get_ref().clone(),
                (None, None) => required("cache", "url", &None, &section.backend, at)?,
            },
        }),
        _ => Ok(CacheBackend::Embedded),
    }
}

pub fn bus_backend(section: &BusSection, at: At<'_>) -> Result<BusBackend, LocatedError> {
    match backend_name("bus", &section.backend, &["embedded", "kafka"], at)? {
        "kafka" => {
            let partitions = match &section.partitions {
                Some(p) if !(1..=1024).contains(p.get_ref()) => {
                    return Err(at(
                        p.span(),
                        format!("bus.partitions must be 1 to 1024, found {}", p.get_ref()),
                    ));
                }
                Some(p) => *p.get_ref(),
                None => 3,
            };
            let buffer_messages = match &section.buffer_messages {
                Some(b) if !(1_000..=10_000_000).contains(b.get_ref()) => {
                    return Err(at(
                        b.span(),
                        format!(
                            "bus.buffer_messages must be 1000 to 10000000, found {}",
                            b.get_ref()
                        ),
                    ));
                }
                Some(b) => *b.get_ref() as usize,
                None => 100_000,
            };
            Ok(BusBackend::Kafka {
                brokers: required("bus", "brokers", &section.brokers, &section.backend, at)?,
                partitions,
                buffer_messages,
            })
        }
        _ => Ok(BusBackend::Embedded),
    }
}

impl BusSection {
    /// `[bus] capacity`: metrics groups the embedded bus holds.
    pub fn capacity(&self, at: At<'_>) -> Result<Option<usize>, LocatedError> {
        if let Some(capacity) = &self.capacity {
            let value = *capacity.get_ref();
            if !(1..=1_000_000).contains(&value) {
                return Err(at(
                    capacity.span(),
                    format!("bus.capacity must be 1 to 1000000, found {value}"),
                ));
            }
            return Ok(Some(value as usize));
        }
        Ok(None)
    }
}
