//! The read commands of the `vigil` binary (`status`, `resources`,
//! `metrics`, `runs`, `enrichment`, `plugins check|list|run`): their
//! arguments, their human output (tables, [`table`]) and their `--json`
//! output, which is always JSON lines of the shapes in
//! [`vigil_host::views`].
//!
//! Kept out of `main.rs` so the entry point stays small: `main.rs` parses
//! the command line and dispatches here.

pub mod endpoints;
pub mod enrichment;
pub mod plugins;
pub mod read;
pub mod table;

use std::sync::Arc;
use std::time::SystemTime;

use vigil_host::filter::ResourceFilter;
use vigil_host::site::SiteConfig;
use vigil_host::store::Storage;

/// The site's store, read-only.
pub async fn open_store(site: &SiteConfig) -> anyhow::Result<Arc<dyn Storage>> {
    vigil_host::backends::open_storage(site, true).await
}

/// `--filter TEXT` parsed, with the error pointing at its column.
pub fn parse_filter(text: Option<&str>) -> anyhow::Result<Option<ResourceFilter>> {
    match text {
        None => Ok(None),
        Some(text) => ResourceFilter::parse(text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--filter: {e}\n{}", e.render(text))),
    }
}

/// `--since DURATION` as the epoch time that long before `now`.
pub fn parse_since(text: Option<&str>, now: f64) -> anyhow::Result<Option<f64>> {
    match text {
        None => Ok(None),
        Some(text) => {
            let ago = vigil_host::units::parse_duration(text)
                .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
            Ok(Some(now - ago.as_secs_f64()))
        }
    }
}

/// Seconds since the epoch, now.
pub fn now() -> f64 {
    vigil_host::pipeline::epoch_seconds(SystemTime::now())
}

/// `at` relative to `now`, as `12s ago` (or `in 40s` for a future time).
pub fn ago(at: f64, now: f64) -> String {
    let seconds = now - at;
    if seconds >= 0.0 {
        format!("{}s ago", seconds.round())
    } else {
        format!("in {}s", (-seconds).round())
    }
}

/// Prints `value` as one line of JSON.
pub fn json_line(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_every_duration_unit_and_names_a_bad_one() {
        assert_eq!(parse_since(Some("90s"), 1000.0).expect("90s"), Some(910.0));
        assert_eq!(
            parse_since(Some("1w"), 1e6).expect("1w"),
            Some(1e6 - 604_800.0)
        );
        assert_eq!(parse_since(None, 1.0).expect("none"), None);
        let error = parse_since(Some("soon"), 1.0).expect_err("soon");
        assert!(
            error
                .to_string()
                .starts_with("--since: \"soon\" is not a duration"),
            "{error}"
        );
        assert_eq!(ago(90.0, 100.0), "10s ago");
        assert_eq!(ago(140.0, 100.0), "in 40s");
    }
}
