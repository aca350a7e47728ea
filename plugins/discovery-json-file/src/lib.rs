//! `discovery_json_file`: a discovery plugin that reads resources in
//! Panoptes' JSON resource format from a file the operator grants.
//!
//! The operator grants one directory (`[capabilities] files = <dir>`), which
//! the host mounts read-only at `/data`; the file inside it is named by
//! `[json_file] path` (relative; absolute paths and `..` are refused).
//!
//! The file is a JSON array of objects with Panoptes' keys:
//!
//! | key | |
//! |---|---|
//! | `resource_id`, `resource_site`, `resource_endpoint`, `resource_class` | required, non-empty strings |
//! | `resource_subclass`, `resource_type` | strings, may be empty or absent |
//! | `resource_metadata` | object; string, number and boolean values (numbers and booleans become their JSON text) |
//! | `resource_ttl` | seconds, a whole number or a numeric string (absent: the host's default) |
//! | `resource_creation_timestamp` | float seconds since the epoch (absent: now) |
//! | `resource_plugin` and any other key | ignored |
//!
//! A bad entry (wrong type, missing or oversized field, a metadata key the
//! host would refuse, a repeated `resource_id`...) is logged with its
//! 0-based index and skipped; the good ones are returned. A file that cannot
//! be read is a configuration error; one that is not a JSON array of at most
//! 100,000 entries is bad data.

mod inventory;

use inventory::ParsedResource;
use vigil_sdk::log::Level;
use vigil_sdk::prelude::*;

/// Bad entries logged one by one; the rest are only counted, so a broken
/// file cannot spend the run's log lines or host calls (each log line is a
/// host call, and `[sandbox] max_host_calls` ends the run when spent).
const MAX_WARNINGS: usize = 50;

struct JsonFile;

impl Discovery for JsonFile {
    fn discover() -> Result<Vec<Resource>, PluginError> {
        let written = config::text("json_file", "path").ok_or_else(|| {
            PluginError::configuration(
                "[json_file] path is required: the resource file's name in the granted directory",
            )
        })?;
        let path = inventory::resolve_path(&written).map_err(PluginError::configuration)?;
        let bytes = std::fs::read(&path).map_err(|e| {
            PluginError::configuration(format!(
                "cannot read {}: {e} (is its directory granted with [capabilities] files?)",
                path.display()
            ))
        })?;
        let (parsed, bad) = inventory::parse(&bytes)
            .map_err(|e| PluginError::bad_data(format!("{}: {e}", path.display())))?;
        drop(bytes);

        for (index, reason) in bad.iter().take(MAX_WARNINGS) {
            log::emit(
                Level::Warn,
                "skipping resource entry",
                &[("index", &index.to_string()), ("reason", reason)],
            );
        }
        let path_text = path.display().to_string();
        let found = (parsed.len() + bad.len()).to_string();
        let kept = parsed.len().to_string();
        let skipped = bad.len().to_string();
        let mut fields: Vec<(&str, &str)> = vec![
            ("path", &path_text),
            ("found", &found),
            ("kept", &kept),
            ("skipped", &skipped),
        ];
        let unlogged = bad.len().saturating_sub(MAX_WARNINGS).to_string();
        if bad.len() > MAX_WARNINGS {
            fields.push(("skipped_not_logged", &unlogged));
        }
        log::emit(Level::Info, "resource file read", &fields);

        let now = clock::now();
        Ok(parsed.into_iter().map(|r| to_resource(r, &now)).collect())
    }
}

fn to_resource(r: ParsedResource, now: &Datetime) -> Resource {
    let creation_timestamp = match r.creation_timestamp {
        Some((seconds, nanoseconds)) => Datetime {
            seconds,
            nanoseconds,
        },
        None => *now,
    };
    Resource {
        id: r.id,
        site: r.site,
        endpoint: r.endpoint,
        class: r.class,
        subclass: r.subclass,
        type_: r.type_,
        // The host fills in the discovery plugin's name.
        creation_plugin: String::new(),
        creation_timestamp,
        ttl_seconds: r.ttl_seconds,
        metadata: r.metadata,
    }
}

vigil_sdk::export!(discovery => JsonFile);
