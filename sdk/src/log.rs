//! Structured logging into the host's log (rate-limited by the host).

use crate::__private::vigil::plugin::log as host;
pub use host::Level;

/// Log a message with key/value fields.
pub fn emit(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    host::emit(level, message, &fields);
}

pub fn trace(message: &str) {
    emit(Level::Trace, message, &[]);
}
pub fn debug(message: &str) {
    emit(Level::Debug, message, &[]);
}
pub fn info(message: &str) {
    emit(Level::Info, message, &[]);
}
pub fn warn(message: &str) {
    emit(Level::Warn, message, &[]);
}
pub fn error(message: &str) {
    emit(Level::Error, message, &[]);
}
