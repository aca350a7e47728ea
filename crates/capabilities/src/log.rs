//! `vigil:plugin/log`: structured logging from plugins into the host's log,
//! limited per run and per plugin across runs.
//!
//! Lines past `[sandbox] max_log_lines` are dropped and counted (the run
//! report says how many); messages and fields are truncated to fixed sizes
//! so one call can never carry more than a few KiB into the host.
//!
//! # A budget per plugin, across runs
//!
//! The per-run limit alone does not bound the host's log: a plugin polling
//! 1,000 devices every minute may write 100 lines per run, 100,000 lines a
//! minute. So every plugin also draws from a token bucket of its own,
//! held by the host ([`LogBudgets`], one bucket per plugin name, shared by
//! all its runs, concurrent or not): `plugin_log_burst` lines at once
//! (default 500), refilled at `plugin_log_lines_per_minute` (default 300,
//! 5 a second). A line the bucket refuses is dropped like a line past the
//! run's limit, and counted per plugin and reason
//! (`vigil_plugin_log_lines_dropped_total{plugin, reason="rate_limit"}`;
//! `run_limit` for the per-run limit). The host logs one line when a
//! plugin starts being dropped and one when its lines flow again (with how
//! many were dropped over how long), never one per dropped line.
//!
//! Why those numbers: journald, where a service's stderr usually goes,
//! drops *every* line of a service past 10,000 per 30 s (its default
//! `RateLimitBurst`/`RateLimitIntervalSec`), about 333 a second, vigil's
//! own lines included. At 5 lines a second per plugin, 66 plugins logging
//! flat out stay under that, and one plugin writes at most 432,000 lines a
//! day instead of 144 million. A burst of 500 is five runs at the default
//! per-run limit: a plugin that fails loudly on a few devices at once, or
//! logs its start-up, is heard in full. Both are configurable in the
//! site's `[sandbox]` (burst 1 to 100,000; rate 1 to 60,000 a minute,
//! 1,000 a second), never unlimited.
//!
//! Only lines the host's log filter would write take a token: with
//! `VIGIL_LOG=info`, a plugin's debug lines neither reach the log nor use
//! its budget (they are still kept in the run report, within the run's
//! limit).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Default of `[sandbox] plugin_log_burst` (see the module doc).
pub const DEFAULT_LOG_BURST: u32 = 500;
/// Default of `[sandbox] plugin_log_lines_per_minute`.
pub const DEFAULT_LOG_LINES_PER_MINUTE: u32 = 300;
/// Ceiling of `plugin_log_burst`.
pub const MAX_LOG_BURST: u32 = 100_000;
/// Ceiling of `plugin_log_lines_per_minute` (1,000 a second).
pub const MAX_LOG_LINES_PER_MINUTE: u32 = 60_000;
/// Plugins with a bucket of their own; names past these (only a site that
/// loaded and removed thousands of plugins gets there) share one,
/// [`OTHER_PLUGINS`].
pub const MAX_PLUGINS: usize = 4096;
/// The bucket of plugins past [`MAX_PLUGINS`].
pub const OTHER_PLUGINS: &str = "(other)";
/// Why a line was dropped: past the run's `max_log_lines`.
pub const RUN_LIMIT: &str = "run_limit";
/// Why a line was dropped: past the plugin's budget across runs.
pub const RATE_LIMIT: &str = "rate_limit";

/// The per-plugin budget across runs: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBudgetSettings {
    /// Lines a plugin may log at once (the bucket's size).
    pub burst: u32,
    /// Lines a minute the bucket refills with.
    pub lines_per_minute: u32,
}

impl Default for LogBudgetSettings {
    fn default() -> Self {
        LogBudgetSettings {
            burst: DEFAULT_LOG_BURST,
            lines_per_minute: DEFAULT_LOG_LINES_PER_MINUTE,
        }
    }
}

/// Why a budget setting is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLogBudget(pub String);

impl std::fmt::Display for BadLogBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadLogBudget {}

impl LogBudgetSettings {
    /// Checks both against their ranges (1 to the ceiling; none unlimited).
    pub fn checked(burst: u32, lines_per_minute: u32) -> Result<Self, BadLogBudget> {
        if !(1..=MAX_LOG_BURST).contains(&burst) {
            return Err(BadLogBudget(format!(
                "sandbox.plugin_log_burst must be 1 to {MAX_LOG_BURST}, found {burst}"
            )));
        }
        if !(1..=MAX_LOG_LINES_PER_MINUTE).contains(&lines_per_minute) {
            return Err(BadLogBudget(format!(
                "sandbox.plugin_log_lines_per_minute must be 1 to {MAX_LOG_LINES_PER_MINUTE}, found {lines_per_minute}"
            )));
        }
        Ok(LogBudgetSettings {
            burst,
            lines_per_minute,
        })
    }
}

/// One plugin's bucket and drop counts.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Since when lines are being refused, and how many so far.
    dropping: Option<(Instant, u64)>,
    run_limit_dropped: u64,
    rate_limit_dropped: u64,
}

/// One plugin's budget, shared by all its runs.
#[derive(Debug)]
pub struct PluginLogBudget {
    plugin: Arc<str>,
    settings: LogBudgetSettings,
    bucket: Mutex<Bucket>,
}

/// What the host's log says about a plugin's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Lines started being dropped.
    Started,
    /// Lines flow again after `dropped` were dropped over `over`.
    Stopped { dropped: u64, over: Duration },
}

impl PluginLogBudget {
    fn new(plugin: Arc<str>, settings: LogBudgetSettings, now: Instant) -> PluginLogBudget {
        PluginLogBudget {
            plugin,
            settings,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(settings.burst),
                refilled: now,
                dropping: None,
                run_limit_dropped: 0,
                rate_limit_dropped: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a token for one line at `now`: whether the line may be
    /// written, and whether dropping started or stopped with it.
    pub fn admit_at(&self, now: Instant) -> (bool, Option<Transition>) {
        let mut bucket = self.lock();
        let elapsed = now.saturating_duration_since(bucket.refilled);
        let rate = f64::from(self.settings.lines_per_minute) / 60.0;
        bucket.tokens =
            (bucket.tokens + elapsed.as_secs_f64() * rate).min(f64::from(self.settings.burst));
        bucket.refilled = bucket.refilled.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            let stopped = bucket
                .dropping
                .take()
                .map(|(since, dropped)| Transition::Stopped {
                    dropped,
                    over: now.saturating_duration_since(since),
                });
            (true, stopped)
        } else {
            bucket.rate_limit_dropped += 1;
            match &mut bucket.dropping {
                Some((_, dropped)) => {
                    *dropped += 1;
                    (false, None)
                }
                None => {
                    bucket.dropping = Some((now, 1));
                    (false, Some(Transition::Started))
                }
            }
        }
    }

    /// [`Self::admit_at`] now, logging a transition in one host line.
    pub fn admit(&self) -> bool {
        let (admitted, transition) = self.admit_at(Instant::now());
        let plugin = &*self.plugin;
        let LogBudgetSettings {
            burst,
            lines_per_minute,
        } = self.settings;
        match transition {
            Some(Transition::Started) => tracing::warn!(
                plugin,
                burst,
                lines_per_minute,
                "plugin logs faster than its budget ({lines_per_minute} lines a minute, bursts of {burst}); its lines are dropped until it slows down (counted in vigil_plugin_log_lines_dropped_total)"
            ),
            Some(Transition::Stopped { dropped, over }) => tracing::warn!(
                plugin,
                dropped,
                "plugin log lines flow again; {dropped} were dropped over {:.1} s",
                over.as_secs_f64()
            ),
            None => {}
        }
        admitted
    }

    /// Counts a line dropped by the run's own limit.
    pub fn run_limit_hit(&self) {
        self.lock().run_limit_dropped += 1;
    }

    /// Lines dropped so far: (run limit, rate limit).
    pub fn dropped(&self) -> (u64, u64) {
        let bucket = self.lock();
        (bucket.run_limit_dropped, bucket.rate_limit_dropped)
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }
}

/// Every plugin's [`PluginLogBudget`], held by the host for its lifetime.
#[derive(Debug, Default)]
pub struct LogBudgets {
    settings: LogBudgetSettings,
    plugins: Mutex<HashMap<Arc<str>, Arc<PluginLogBudget>>>,
}

impl LogBudgets {
    pub fn new(settings: LogBudgetSettings) -> LogBudgets {
        LogBudgets {
            settings,
            plugins: Mutex::default(),
        }
    }

    pub fn settings(&self) -> LogBudgetSettings {
        self.settings
    }

    /// `plugin`'s budget (created full on first use); one lookup per run,
    /// after which a line locks only its own plugin's bucket.
    pub fn for_plugin(&self, plugin: &str) -> Arc<PluginLogBudget> {
        let mut plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(budget) = plugins.get(plugin) {
            return budget.clone();
        }
        let name: Arc<str> = if plugins.len() >= MAX_PLUGINS {
            if let Some(budget) = plugins.get(OTHER_PLUGINS) {
                return budget.clone();
            }
            Arc::from(OTHER_PLUGINS)
        } else {
            Arc::from(plugin)
        };
        let budget = Arc::new(PluginLogBudget::new(
            name.clone(),
            self.settings,
            Instant::now(),
        ));
        plugins.insert(name, budget.clone());
        budget
    }

    /// Lines dropped per plugin and reason ([`RUN_LIMIT`], [`RATE_LIMIT`]),
    /// sorted by plugin; reasons with none left out.
    pub fn dropped(&self) -> Vec<(String, &'static str, u64)> {
        let budgets: Vec<Arc<PluginLogBudget>> = self
            .plugins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out = Vec::new();
        for budget in budgets {
            let (run, rate) = budget.dropped();
            for (reason, n) in [(RUN_LIMIT, run), (RATE_LIMIT, rate)] {
                if n > 0 {
                    out.push((budget.plugin().to_owned(), reason, n));
                }
            }
        }
        out.sort();
        out
    }
}

/// What the `log` import sees of a run: the run's log, its line limit
/// (`[sandbox] max_log_lines`), its plugin's budget across runs, and who
/// is logging, for the host's log.
pub struct Log<'a> {
    pub calls: &'a mut HostCalls,
    pub log: &'a mut RunLog,
    pub max_lines: u64,
    /// The plugin's budget across runs; `None` = the run's limit only
    /// (tools that run a plugin once).
    pub budget: Option<&'a PluginLogBudget>,
    pub plugin: &'a str,
    /// The resource the run is for, or empty.
    pub resource: &'a str,
}

/// Whether the host's log would write a plugin line of `level`.
fn enabled(level: LogLevel) -> bool {
    match level {
        LogLevel::Trace => tracing::enabled!(target: "vigil::plugin", tracing::Level::TRACE),
        LogLevel::Debug => tracing::enabled!(target: "vigil::plugin", tracing::Level::DEBUG),
        LogLevel::Info => tracing::enabled!(target: "vigil::plugin", tracing::Level::INFO),
        LogLevel::Warn => tracing::enabled!(target: "vigil::plugin", tracing::Level::WARN),
        LogLevel::Error => tracing::enabled!(target: "vigil::plugin", tracing::Level::ERROR),
    }
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
            if let Some(budget) = self.budget {
                budget.run_limit_hit();
            }
            return Ok(());
        }
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        if let Some(budget) = self.budget
            && enabled(level)
            && !budget.admit()
        {
            self.log.dropped += 1;
            return Ok(());
        }
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
    use super::*;

    fn budget(burst: u32, lines_per_minute: u32) -> LogBudgets {
        LogBudgets::new(LogBudgetSettings::checked(burst, lines_per_minute).expect("settings"))
    }

    /// The bucket: `burst` lines at once, then the rate, never more than
    /// `burst` saved up; dropping starts and stops once each.
    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let budgets = budget(5, 60);
        let p = budgets.for_plugin("chatty");
        let t0 = Instant::now();
        let admitted = (0..20).filter(|_| p.admit_at(t0).0).count();
        assert_eq!(admitted, 5);
        assert_eq!(p.dropped(), (0, 15));
        // One line a second refills; 2.5 s give two lines.
        let t = t0 + Duration::from_millis(2_500);
        let (first, stopped) = p.admit_at(t);
        assert!(first);
        assert_eq!(
            stopped,
            Some(Transition::Stopped {
                dropped: 15,
                over: Duration::from_millis(2_500)
            })
        );
        assert_eq!(p.admit_at(t), (true, None));
        assert_eq!(p.admit_at(t), (false, Some(Transition::Started)));
        assert_eq!(p.admit_at(t), (false, None));
        // An hour of silence refills to the burst, not beyond.
        let later = t + Duration::from_secs(3_600);
        let admitted = (0..20).filter(|_| p.admit_at(later).0).count();
        assert_eq!(admitted, 5);
        // Time that goes backwards (another run's earlier `now`) adds nothing.
        assert!(!p.admit_at(t0).0);
    }

    /// Budgets are per plugin and shared by all runs of one plugin.
    #[test]
    fn plugins_have_budgets_of_their_own() {
        let budgets = budget(3, 1);
        let t = Instant::now();
        let run1 = budgets.for_plugin("flood");
        let run2 = budgets.for_plugin("flood");
        assert_eq!((0..3).filter(|_| run1.admit_at(t).0).count(), 3);
        assert!(
            !run2.admit_at(t).0,
            "a second run shares the first's bucket"
        );
        let neighbour = budgets.for_plugin("quiet");
        assert_eq!((0..3).filter(|_| neighbour.admit_at(t).0).count(), 3);
        run1.run_limit_hit();
        assert_eq!(
            budgets.dropped(),
            vec![
                ("flood".to_owned(), RATE_LIMIT, 1),
                ("flood".to_owned(), RUN_LIMIT, 1)
            ]
        );
    }

    #[test]
    fn settings_have_ceilings_and_no_zero() {
        assert_eq!(
            LogBudgetSettings::default(),
            LogBudgetSettings::checked(DEFAULT_LOG_BURST, DEFAULT_LOG_LINES_PER_MINUTE)
                .expect("defaults")
        );
        assert!(LogBudgetSettings::checked(0, 10).is_err());
        assert!(LogBudgetSettings::checked(10, 0).is_err());
        assert!(LogBudgetSettings::checked(MAX_LOG_BURST + 1, 10).is_err());
        assert!(LogBudgetSettings::checked(10, MAX_LOG_LINES_PER_MINUTE + 1).is_err());
    }

    #[test]
    fn plugins_past_the_table_share_one_bucket() {
        let budgets = budget(1, 1);
        for i in 0..MAX_PLUGINS {
            budgets.for_plugin(&format!("p{i}"));
        }
        let a = budgets.for_plugin("late-a");
        let b = budgets.for_plugin("late-b");
        assert_eq!(a.plugin(), OTHER_PLUGINS);
        assert!(Arc::ptr_eq(&a, &b));
    }

    /// What the host's log holds, line by line.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn emit(budgets: &LogBudgets, plugin: &str, run: &mut RunLog, level: Level, n: usize) {
        let budget = budgets.for_plugin(plugin);
        let mut calls = HostCalls::new(1_000_000);
        let mut view = Log {
            calls: &mut calls,
            log: run,
            max_lines: 100,
            budget: Some(&budget),
            plugin,
            resource: "sw1",
        };
        for i in 0..n {
            view.emit(level, format!("line {i}"), Vec::new())
                .expect("emit");
        }
    }

    /// Through the import, with a real log: a flooding plugin gets its
    /// burst into the host's log across runs, then one summary line; a
    /// neighbour's lines all get through; lines the log filter discards
    /// take no budget.
    #[test]
    fn a_flood_across_runs_is_cut_and_said_once() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let budgets = budget(30, 1);
        let mut runs = Vec::new();
        tracing::subscriber::with_default(subscriber, || {
            // Debug lines are below the filter: kept in the run, no tokens.
            let mut quiet = RunLog::default();
            emit(&budgets, "flood", &mut quiet, Level::Debug, 50);
            assert_eq!((quiet.lines.len(), quiet.dropped), (50, 0));
            for _ in 0..10 {
                let mut run = RunLog::default();
                emit(&budgets, "flood", &mut run, Level::Error, 20);
                runs.push(run);
            }
            let mut neighbour = RunLog::default();
            emit(&budgets, "neighbour", &mut neighbour, Level::Warn, 20);
            runs.push(neighbour);
        });
        let log = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|p| p.into_inner()))
            .into_owned();
        let plugin_lines = |plugin: &str| {
            log.lines()
                .filter(|l| l.contains(&format!("plugin=\"{plugin}\"")) && l.contains("line "))
                .count()
        };
        // 30 of the flood's 200 lines reach the log (one more would need a
        // minute), and all 20 of the neighbour's.
        assert_eq!(plugin_lines("flood"), 30, "{log}");
        assert_eq!(plugin_lines("neighbour"), 20, "{log}");
        assert_eq!(
            log.matches("logs faster than its budget").count(),
            1,
            "{log}"
        );
        assert_eq!(log.matches("flow again").count(), 0, "{log}");
        // The first run and a half got through; later runs kept nothing.
        assert_eq!(runs[0].lines.len(), 20);
        assert_eq!((runs[1].lines.len(), runs[1].dropped), (10, 10));
        assert_eq!((runs[9].lines.len(), runs[9].dropped), (0, 20));
        assert_eq!((runs[10].lines.len(), runs[10].dropped), (20, 0));
        assert_eq!(
            budgets.dropped(),
            vec![("flood".to_owned(), RATE_LIMIT, 170)]
        );
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("ééé".into(), 3), "é…");
        assert_eq!(truncate("abcdef".into(), 3), "abc…");
    }
}
