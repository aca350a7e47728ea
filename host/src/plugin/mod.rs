//! Plugins as files: the ini reader, the manifest checks, the loaded set and
//! the directory watcher that keeps it current.

pub mod ini;
pub mod manifest;
pub mod registry;
pub mod watcher;

pub use manifest::{ManifestErrors, PLUGIN_FILE_EXTENSION, PluginKind, PluginManifest};

pub use registry::{LoadedPlugin, PluginRegistry, RegistryEvent};
