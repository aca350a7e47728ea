//! `vigil:plugin/log`: structured logging from plugins into the host's log,
//! rate-limited per run.
//!
//! Lines past `[sandbox] max_log_lines` are dropped and counted (the run
//! report says how many); messages and fields are truncated to fixed sizes
//! so one call can never carry more than a few KiB into the host.

use vigil_wit::HostCalls;
use vigil_wit::vigil::plugin::log::{Host, Level};
use wasmtime::component::{HasData, Linker};

/// Longest message kept, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Most fields kept per line.
pub const MAX_FIELDS: usize = 16;
/// Longest field name / value kept, in bytes.
pub const MAX_FIELD_NAME_BYTES: usize = 64;
pub const MAX_FIELD_VALUE_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// One line a plugin logged, as kept by the host.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// A run's log: the lines kept and the count of lines dropped.
#[derive(Debug, Default)]
pub struct RunLog {
    pub lines: Vec<LogLine>,
    pub dropped: u64,
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// What the `log` import sees of a run: the run's log, its line limit
/// (`[sandbox] max_log_lines`) and who is logging, for the host's log.
pub struct Log<'a> {
    pub calls: &'a mut HostCalls,
    pub log: &'a mut RunLog,
    pub max_lines: u64,
    pub plugin: &'a str,
    /// The resource the run is for, or empty.
    pub resource: &'a str,
}

/// `HasData` for the `log` import.
pub struct LogCapability;

impl HasData for LogCapability {
    type Data<'a> = Log<'a>;
}

/// Adds the `log` import; `view` picks the run's parts out of `T`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Log<'_>,
) -> wasmtime::Result<()> {
    vigil_wit::vigil::plugin::log::add_to_linker::<T, LogCapability>(linker, view)
}

impl Host for Log<'_> {
    fn emit(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.calls.charge()?;
        if self.log.lines.len() as u64 >= self.max_lines {
            self.log.dropped += 1;
            return Ok(());
        }
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let message = truncate(message, MAX_MESSAGE_BYTES);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .take(MAX_FIELDS)
            .map(|(k, v)| {
                (
                    truncate(k, MAX_FIELD_NAME_BYTES),
                    truncate(v, MAX_FIELD_VALUE_BYTES),
                )
            })
            .collect();
        let (plugin, resource) = (self.plugin, self.resource);
        let rendered: String = fields.iter().map(|(k, v)| format!(" {k}={v:?}")).collect();
        // Plugin text goes through `?`-style Debug formatting of the fields
        // and as a value, never as a format string.
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "vigil::plugin", plugin, resource, "{message}{rendered}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "vigil::plugin", plugin, resource, "{message}{rendered}")
            }
            LogLevel::Info => {
                tracing::info!(target: "vigil::plugin", plugin, resource, "{message}{rendered}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "vigil::plugin", plugin, resource, "{message}{rendered}")
            }
            LogLevel::Error => {
                tracing::error!(target: "vigil::plugin", plugin, resource, "{message}{rendered}")
            }
        }
        self.log.lines.push(LogLine {
            level,
            message,
            fields,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("ééé".into(), 3), "é…");
        assert_eq!(truncate("abcdef".into(), 3), "abc…");
    }
}
