//! `vigil enrichment`: the site's enrichment cache as polling plugins see
//! it, one row per cached (resource, namespace) group.

use std::process::ExitCode;

use clap::Args;

use vigil_host::site::SiteConfig;
use vigil_host::views::EnrichmentView;

use super::table::Table;
use super::{ago, json_line, now};

#[derive(Args)]
pub struct EnrichmentArgs {
    /// Only this resource (its exact id).
    #[arg(long)]
    pub resource: Option<String>,
    /// Only this namespace (e.g. `interface`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// One JSON object per cached group, per line.
    #[arg(long)]
    pub json: bool,
}

/// Values of a set shown in the table before `...`.
const VALUES_SHOWN: usize = 4;

pub async fn show(site: &SiteConfig, args: EnrichmentArgs) -> anyhow::Result<ExitCode> {
    let now = now();
    let cached = vigil_host::backends::cached_enrichments(
        site,
        args.resource.as_deref(),
        args.namespace.as_deref(),
        now,
    )
    .await?;
    if args.json {
        for entry in &cached {
            json_line(&EnrichmentView::from(entry))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "RESOURCE",
        "NAMESPACE",
        "PLUGIN",
        "EXPIRES",
        "KEY",
        "VALUES",
    ]);
    for entry in &cached {
        let expires = ago(entry.expires_at, now);
        if entry.group.sets.is_empty() {
            table.row(vec![
                entry.resource_id.clone(),
                entry.namespace.clone(),
                entry.plugin.clone(),
                expires.clone(),
                "-".to_owned(),
                String::new(),
            ]);
        }
        for set in &entry.group.sets {
            let mut values: Vec<String> = set
                .values
                .iter()
                .take(VALUES_SHOWN)
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            if set.values.len() > VALUES_SHOWN {
                values.push(format!("... ({} values)", set.values.len()));
            }
            table.row(vec![
                entry.resource_id.clone(),
                entry.namespace.clone(),
                entry.plugin.clone(),
                expires.clone(),
                set.key.clone(),
                values.join(" "),
            ]);
        }
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
