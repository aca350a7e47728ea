//! The plugin's own ini sections, read-only, with typed getters.
//!
//! ```ignore
//! let community_index = vigil_sdk::config::int("main", "max_interfaces")?.unwrap_or(512);
//! ```

use crate::__private::vigil::plugin::config as host;
use crate::PluginError;
pub use host::{Entry, Value};

/// Names of the sections the plugin may read.
pub fn sections() -> Vec<String> {
    host::sections()
}

/// All entries of a section in file order (empty if absent).
pub fn section(name: &str) -> Vec<Entry> {
    host::section(name)
}

/// The raw text of a key, if present.
pub fn text(section: &str, key: &str) -> Option<String> {
    host::get(section, key).map(|entry| entry.raw)
}

/// An integer key; a configuration error if present but not an integer.
pub fn int(section: &str, key: &str) -> Result<Option<i64>, PluginError> {
    match host::get(section, key) {
        None => Ok(None),
        Some(Entry {
            value: Value::Integer(i),
            ..
        }) => Ok(Some(i)),
        Some(entry) => Err(type_error(section, key, "an integer", &entry.raw)),
    }
}

/// A number key (integer or float).
pub fn float(section: &str, key: &str) -> Result<Option<f64>, PluginError> {
    match host::get(section, key) {
        None => Ok(None),
        Some(Entry {
            value: Value::Float(x),
            ..
        }) => Ok(Some(x)),
        Some(Entry {
            value: Value::Integer(i),
            ..
        }) => Ok(Some(i as f64)),
        Some(entry) => Err(type_error(section, key, "a number", &entry.raw)),
    }
}

/// A boolean key (`true/false/yes/no/on/off`, or `1`/`0`).
pub fn bool(section: &str, key: &str) -> Result<Option<bool>, PluginError> {
    match host::get(section, key) {
        None => Ok(None),
        Some(Entry {
            value: Value::Boolean(b),
            ..
        }) => Ok(Some(b)),
        Some(Entry {
            value: Value::Integer(0),
            ..
        }) => Ok(Some(false)),
        Some(Entry {
            value: Value::Integer(1),
            ..
        }) => Ok(Some(true)),
        Some(entry) => Err(type_error(section, key, "a boolean", &entry.raw)),
    }
}

fn type_error(section: &str, key: &str, expected: &str, raw: &str) -> PluginError {
    PluginError::configuration(format!(
        "[{section}] {key}: expected {expected}, found {raw:?}"
    ))
}
