//! Every limit a plugin run is held to, with its default and the ceiling no
//! configuration may exceed.
//!
//! One table ([`LIMITS`]) describes each limit once: its ini/TOML key, how
//! its value is written, its built-in default and the built-in cap. Plugin
//! ini `[sandbox]` sections override the site's defaults; the site's
//! `[sandbox.caps]` lower (never raise) the built-in caps. No limit can be
//! switched off: fuel is the one limit that is absent by default, and the
//! wall-clock deadline always applies.

use std::fmt;
use std::time::Duration;

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;
use vigil_core::{At, LocatedError};

use crate::units::{format_size, parse_duration, parse_size};

/// The limits one plugin runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time for one run, instantiation included.
    pub deadline: Duration,
    /// Linear memory, in bytes.
    pub memory: u64,
    /// Elements across the instance's tables.
    pub table_elements: u64,
    /// Fuel units for one run (roughly wasm instructions); `None` = only the
    /// deadline bounds CPU.
    pub fuel: Option<u64>,
    /// Encoded size of what one run returns, in bytes.
    pub max_output: u64,
    /// Log lines kept per run; more are dropped and counted.
    pub max_log_lines: u64,
    /// Bytes of keys and values in the plugin's key/value store.
    pub kv_quota: u64,
    /// Calls into vigil's host imports per run.
    pub max_host_calls: u64,
    /// Records one run may return: metrics groups, resources or enrichment
    /// groups.
    pub max_groups: u64,
    /// Live resources a discovery plugin may own at once; new resources
    /// past it are refused and counted.
    pub max_resources: u64,
    /// Address-table rows (ARP/neighbour and forwarding entries, all
    /// snapshots together) one endpoints run may return.
    pub max_endpoint_entries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitUnit {
    Duration,
    Bytes,
    Count,
}

/// One limit: how it is named, written, defaulted and capped.
pub struct LimitSpec {
    pub key: &'static str,
    pub unit: LimitUnit,
    /// Built-in default (durations in milliseconds); `None` for fuel.
    pub default: Option<u64>,
    /// Built-in ceiling.
    pub cap: u64,
    pub doc: &'static str,
    get: fn(&Limits) -> Option<u64>,
    set: fn(&mut Limits, u64),
}

const MIB: u64 = 1 << 20;

/// The limits, in the order they are documented and displayed.
pub static LIMITS: &[LimitSpec] = &[
    LimitSpec {
        key: "deadline",
        unit: LimitUnit::Duration,
        default: Some(10_000),
        cap: 300_000,
        doc: "wall-clock time for one run",
        get: |l| Some(l.deadline.as_millis() as u64),
        set: |l, v| l.deadline = Duration::from_millis(v),
    },
    LimitSpec {
        key: "memory",
        unit: LimitUnit::Bytes,
        default: Some(64 * MIB),
        cap: 512 * MIB,
        doc: "linear memory",
        get: |l| Some(l.memory),
        set: |l, v| l.memory = v,
    },
    LimitSpec {
        key: "table_elements",
        unit: LimitUnit::Count,
        default: Some(20_000),
        cap: 1_000_000,
        doc: "table elements (function references)",
        get: |l| Some(l.table_elements),
        set: |l, v| l.table_elements = v,
    },
    LimitSpec {
        key: "fuel",
        unit: LimitUnit::Count,
        default: None,
        cap: 1_000_000_000_000,
        doc: "fuel units (about one per wasm instruction); unset = deadline only",
        get: |l| l.fuel,
        set: |l, v| l.fuel = Some(v),
    },
    LimitSpec {
        key: "max_output",
        unit: LimitUnit::Bytes,
        default: Some(4 * MIB),
        cap: 256 * MIB,
        doc: "encoded size of one run's result",
        get: |l| Some(l.max_output),
        set: |l, v| l.max_output = v,
    },
    LimitSpec {
        key: "max_log_lines",
        unit: LimitUnit::Count,
        default: Some(100),
        // Kept lines stay in the run report: bound them (each is at most a
        // few KiB after truncation).
        cap: 10_000,
        doc: "log lines kept per run (more are dropped and counted)",
        get: |l| Some(l.max_log_lines),
        set: |l, v| l.max_log_lines = v,
    },
    LimitSpec {
        key: "kv_quota",
        unit: LimitUnit::Bytes,
        default: Some(MIB),
        cap: 256 * MIB,
        doc: "bytes in the plugin's key/value store",
        get: |l| Some(l.kv_quota),
        set: |l, v| l.kv_quota = v,
    },
    LimitSpec {
        key: "max_host_calls",
        unit: LimitUnit::Count,
        default: Some(100_000),
        cap: 100_000_000,
        doc: "calls into vigil's host imports per run",
        get: |l| Some(l.max_host_calls),
        set: |l, v| l.max_host_calls = v,
    },
    LimitSpec {
        key: "max_groups",
        unit: LimitUnit::Count,
        // 10,000 covers a chassis with every interface polled in one run.
        default: Some(10_000),
        cap: 1_000_000,
        doc: "metrics groups, resources or enrichment groups one run may return",
        get: |l| Some(l.max_groups),
        set: |l, v| l.max_groups = v,
    },
    LimitSpec {
        key: "max_resources",
        unit: LimitUnit::Count,
        default: Some(10_000),
        cap: 1_000_000,
        doc: "live resources one discovery plugin may own",
        get: |l| Some(l.max_resources),
        set: |l, v| l.max_resources = v,
    },
    LimitSpec {
        key: "max_endpoint_entries",
        unit: LimitUnit::Count,
        // A large campus switch has a few tens of thousands of MACs and ARP
        // entries; the snapshot differ bounds each table at 200,000.
        default: Some(100_000),
        cap: 1_000_000,
        doc: "address-table rows (all snapshots) one endpoints run may return",
        get: |l| Some(l.max_endpoint_entries),
        set: |l, v| l.max_endpoint_entries = v,
    },
];

impl LimitSpec {
    pub fn find(key: &str) -> Option<&'static LimitSpec> {
        LIMITS.iter().find(|spec| spec.key == key)
    }

    /// Parses a written value (`10s`, `64MiB`, `1000`).
    pub fn parse(&self, text: &str) -> Result<u64, String> {
        let value = match self.unit {
            LimitUnit::Duration => parse_duration(text)?.as_millis() as u64,
            LimitUnit::Bytes => parse_size(text)?,
            LimitUnit::Count => text
                .trim()
                .replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{text:?} is not a whole number"))?,
        };
        if value == 0 {
            return Err(format!(
                "{} cannot be 0: no limit can be switched off",
                self.key
            ));
        }
        Ok(value)
    }

    pub fn format(&self, value: u64) -> String {
        match self.unit {
            LimitUnit::Duration => {
                let d = Duration::from_millis(value);
                if value.is_multiple_of(1000) {
                    format!("{}s", d.as_secs())
                } else {
                    format!("{value}ms")
                }
            }
            LimitUnit::Bytes => format_size(value),
            LimitUnit::Count => value.to_string(),
        }
    }

    pub fn get(&self, limits: &Limits) -> Option<u64> {
        (self.get)(limits)
    }

    pub fn set(&self, limits: &mut Limits, value: u64) {
        (self.set)(limits, value)
    }
}

impl Limits {
    /// The built-in defaults.
    pub fn builtin_defaults() -> Limits {
        let mut limits = Limits {
            deadline: Duration::ZERO,
            memory: 0,
            table_elements: 0,
            fuel: None,
            max_output: 0,
            max_log_lines: 0,
            kv_quota: 0,
            max_host_calls: 0,
            max_groups: 0,
            max_resources: 0,
            max_endpoint_entries: 0,
        };
        for spec in LIMITS {
            if let Some(default) = spec.default {
                spec.set(&mut limits, default);
            }
        }
        limits
    }

    /// The built-in ceilings (fuel's ceiling is a ceiling on what may be
    /// asked for, not a budget every plugin gets).
    pub fn builtin_caps() -> Limits {
        let mut limits = Limits::builtin_defaults();
        for spec in LIMITS {
            spec.set(&mut limits, spec.cap);
        }
        limits
    }

    /// The first limit in `self` that is above `caps`, as `(spec, value, cap)`.
    pub fn first_excess(&self, caps: &Limits) -> Option<(&'static LimitSpec, u64, u64)> {
        LIMITS.iter().find_map(|spec| {
            let value = spec.get(self)?;
            let cap = spec.get(caps)?;
            (value > cap).then_some((spec, value, cap))
        })
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for spec in LIMITS {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match spec.get(self) {
                Some(value) => write!(f, "{} {}", spec.key, spec.format(value))?,
                None => write!(f, "{} unset", spec.key)?,
            }
        }
        Ok(())
    }
}

// --- `[sandbox]` in the site config ---------------------------------------

/// Upper bound on `max_concurrent_runs`: each slot reserves address space
/// for a pooled instance.
pub const MAX_CONCURRENT_RUNS: u32 = 4096;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    pub(crate) max_concurrent_runs: Option<Spanned<u32>>,
    #[serde(default)]
    pub(crate) defaults: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub(crate) caps: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// Each plugin's log budget across runs (see
    /// `vigil_capabilities::log`): lines at once, and lines a minute.
    pub(crate) plugin_log_burst: Option<Spanned<u32>>,
    pub(crate) plugin_log_lines_per_minute: Option<Spanned<u32>>,
}

impl SandboxSection {
    /// `plugin_log_burst` and `plugin_log_lines_per_minute`, defaulted and
    /// checked against their ceilings.
    pub fn log_budget(
        &self,
        at: At<'_>,
    ) -> Result<crate::capabilities::log::LogBudgetSettings, LocatedError> {
        use crate::capabilities::log::LogBudgetSettings;
        let defaults = LogBudgetSettings::default();
        let burst = self.plugin_log_burst.as_ref();
        let rate = self.plugin_log_lines_per_minute.as_ref();
        LogBudgetSettings::checked(
            burst.map_or(defaults.burst, |b| *b.get_ref()),
            rate.map_or(defaults.lines_per_minute, |r| *r.get_ref()),
        )
        .map_err(|e| {
            let span = match (burst, rate) {
                (Some(b), _) if e.0.contains("burst") => b.span(),
                (_, Some(r)) => r.span(),
                (Some(b), None) => b.span(),
                (None, None) => 0..0,
            };
            at(span, e.0)
        })
    }

    /// Applies the section over `max_concurrent_runs`, `defaults` and
    /// `caps` (vigil's built-in values): caps may only lower vigil's
    /// ceilings, and no default may sit above its cap.
    pub fn resolve(
        &self,
        mut max_concurrent_runs: u32,
        mut defaults: Limits,
        mut caps: Limits,
        at: At<'_>,
    ) -> Result<(u32, Limits, Limits), LocatedError> {
        if let Some(runs) = &self.max_concurrent_runs {
            let value = *runs.get_ref();
            if value == 0 || value > MAX_CONCURRENT_RUNS {
                return Err(at(
                    runs.span(),
                    format!(
                        "sandbox.max_concurrent_runs must be 1 to {MAX_CONCURRENT_RUNS}, found {value}"
                    ),
                ));
            }
            max_concurrent_runs = value;
        }

        // Caps first: they only ever lower the built-in ceilings.
        for (key, value) in &self.caps {
            let (spec, parsed) = parse_limit("sandbox.caps", key, value, at)?;
            if parsed > spec.cap {
                return Err(at(
                    value.span(),
                    format!(
                        "sandbox.caps.{} = {} is above vigil's ceiling of {}",
                        spec.key,
                        spec.format(parsed),
                        spec.format(spec.cap)
                    ),
                ));
            }
            spec.set(&mut caps, parsed);
        }
        for (key, value) in &self.defaults {
            let (spec, parsed) = parse_limit("sandbox.defaults", key, value, at)?;
            spec.set(&mut defaults, parsed);
        }
        // A default above a lowered cap would make every plugin fail to load.
        for spec in LIMITS {
            let Some(cap) = spec.get(&caps) else {
                continue;
            };
            let default = spec.get(&defaults).unwrap_or(0);
            if default > cap {
                let written = self.defaults.iter().find(|(k, _)| k.get_ref() == spec.key);
                let span = written
                    .map(|(_, v)| v.span())
                    .or_else(|| {
                        self.caps
                            .iter()
                            .find(|(k, _)| k.get_ref() == spec.key)
                            .map(|(_, v)| v.span())
                    })
                    .unwrap_or(0..0);
                return Err(at(
                    span,
                    format!(
                        "sandbox.defaults.{key} = {} is above sandbox.caps.{key} = {}",
                        spec.format(default),
                        spec.format(cap),
                        key = spec.key
                    ),
                ));
            }
        }

        Ok((max_concurrent_runs, defaults, caps))
    }
}

fn parse_limit(
    table: &str,
    key: &Spanned<String>,
    value: &Spanned<toml::Value>,
    at: At<'_>,
) -> Result<(&'static LimitSpec, u64), LocatedError> {
    let spec = LimitSpec::find(key.get_ref()).ok_or_else(|| {
        let known: Vec<&str> = LIMITS.iter().map(|s| s.key).collect();
        at(
            key.span(),
            format!(
                "{table}: unknown limit {:?} (known: {})",
                key.get_ref(),
                known.join(", ")
            ),
        )
    })?;
    let text = match value.get_ref() {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        other => {
            return Err(at(
                value.span(),
                format!(
                    "{table}.{}: expected a string or integer, found {}",
                    spec.key,
                    other.type_str()
                ),
            ));
        }
    };
    let parsed = spec
        .parse(&text)
        .map_err(|e| at(value.span(), format!("{table}.{}: {e}", spec.key)))?;
    Ok((spec, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_log_budget_has_defaults_and_ceilings() {
        use crate::capabilities::log::LogBudgetSettings;
        let parse = |text: &str| {
            let section: SandboxSection = toml::from_str(text).expect("toml");
            section.log_budget(&|_, message| {
                LocatedError::new(std::path::Path::new("site.toml"), 1, message)
            })
        };
        assert_eq!(parse("").expect("defaults"), LogBudgetSettings::default());
        assert_eq!(
            parse("plugin_log_burst = 50\nplugin_log_lines_per_minute = 600").expect("set"),
            LogBudgetSettings {
                burst: 50,
                lines_per_minute: 600
            }
        );
        let err = parse("plugin_log_burst = 0").expect_err("zero");
        assert!(
            err.message.contains("plugin_log_burst must be 1 to 100000"),
            "{err}"
        );
        let err = parse("plugin_log_lines_per_minute = 1000000").expect_err("over");
        assert!(
            err.message
                .contains("plugin_log_lines_per_minute must be 1 to 60000"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_within_caps_and_none_is_unlimited() {
        let defaults = Limits::builtin_defaults();
        assert_eq!(
            defaults
                .first_excess(&Limits::builtin_caps())
                .map(|e| e.0.key),
            None
        );
        assert_eq!(defaults.deadline, Duration::from_secs(10));
        assert_eq!(defaults.memory, 64 << 20);
        assert_eq!(defaults.fuel, None);
        for spec in LIMITS {
            assert!(spec.parse("0").is_err(), "{} accepted 0", spec.key);
        }
    }

    #[test]
    fn parses_each_unit() {
        let deadline = LimitSpec::find("deadline").expect("deadline");
        assert_eq!(deadline.parse("1m30s"), Ok(90_000));
        assert_eq!(deadline.format(90_000), "90s");
        let memory = LimitSpec::find("memory").expect("memory");
        assert_eq!(memory.parse("128MiB"), Ok(128 << 20));
        assert!(memory.parse("lots").is_err());
        let lines = LimitSpec::find("max_log_lines").expect("lines");
        assert_eq!(lines.parse("1_000"), Ok(1000));
        assert!(lines.parse("1.5").is_err());
    }

    #[test]
    fn excess_names_the_limit() {
        let mut limits = Limits::builtin_defaults();
        limits.memory = 1 << 30;
        let (spec, value, cap) = limits
            .first_excess(&Limits::builtin_caps())
            .expect("excess");
        assert_eq!((spec.key, value, cap), ("memory", 1 << 30, 512 << 20));
    }
}
