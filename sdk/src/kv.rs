//! The plugin's private key/value store, kept between runs, bounded by a
//! quota the operator sets.

use crate::__private::vigil::plugin::kv as host;
pub use host::KvError;

pub fn get(key: &str) -> Option<Vec<u8>> {
    host::get(key)
}

pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
    host::set(key, value)
}

pub fn delete(key: &str) {
    host::delete(key)
}

pub fn keys() -> Vec<String> {
    host::keys()
}

/// `(bytes used, quota in bytes)`.
pub fn usage() -> (u64, u64) {
    host::usage()
}
