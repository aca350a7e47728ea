//! `vigil endpoints`: the endpoint tracker from the command line (issue
//! #14). `replay FILE --fabric NAME` replays a recorded ACI fabric (JSON
//! lines of APIC payloads, see [`vigil_endpoints::replay`]) into an
//! in-memory history and prints every endpoint, sorted by fabric, vnid and
//! address: a table of its current location and per-node history counts,
//! or with `--json` one JSON object per endpoint with EPT's field names.
//!
//! The replay needs no site config and writes nothing. Skipped lines and
//! objects and the summary go to stderr; the exit status is 0 when the file
//! was read (bad lines included), 1 when it could not be.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Map, Value, json};
use vigil_endpoints::HistoryStore;
use vigil_endpoints::fabric::node_display;
use vigil_endpoints::model::{EndpointKey, EndpointRecord, EndpointType, HistoryRecord};
use vigil_endpoints::replay::{ReplayOptions, replay};
use vigil_host::views::rfc3339;

use super::table::{Table, clean};

#[derive(clap::Subcommand)]
pub enum EndpointsCommand {
    /// Replay a recorded fabric: JSON lines, each one APIC payload as the
    /// APIC sends it (a class-query response or a websocket notification),
    /// optionally with a top-level "ts" (seconds since the epoch). Prints
    /// every endpoint's current location and per-node history counts.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The recording (JSON lines).
    pub file: PathBuf,
    /// The fabric the endpoints belong to.
    #[arg(long)]
    pub fabric: String,
    /// The overlay vnid until the recording's `uni/tn-infra/ctx-overlay-1`
    /// names it.
    #[arg(long, default_value_t = 0)]
    pub overlay_vnid: u32,
    /// One JSON object per endpoint, per line: the endpoint record with its
    /// `events` and its per-node `history` (EPT's field names).
    #[arg(long)]
    pub json: bool,
}

/// Runs an `endpoints` subcommand.
pub async fn run(command: EndpointsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EndpointsCommand::Replay(args) => replay_file(args).await,
    }
}

async fn replay_file(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let file = std::fs::File::open(&args.file).with_context(|| format!("reading {name}"))?;
    let mut options = ReplayOptions::new(args.fabric.clone());
    options.overlay_vnid = args.overlay_vnid;
    let result = replay(BufReader::new(file), &name, &options).await?;
    for error in &result.errors {
        eprintln!("{error}");
    }
    let mut rows = Vec::with_capacity(result.keys.len());
    for key in &result.keys {
        let endpoint = result.store.endpoint(key).await?;
        let histories = result.store.histories(key).await?;
        rows.push((key, endpoint, histories.into_values().collect::<Vec<_>>()));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        for (key, endpoint, history) in &rows {
            let line = endpoint_json(key, endpoint.as_ref(), history)?;
            writeln!(out, "{line}")?;
        }
    } else {
        write!(out, "{}", table(&rows).render())?;
    }
    out.flush()?;
    drop(out);
    eprintln!("replayed {name}: {}", result.summary);
    Ok(ExitCode::SUCCESS)
}

/// One endpoint as JSON: the endpoint record (EPT's `eptEndpoint` fields)
/// and `history`, its per-node records (`eptHistory`) by node.
fn endpoint_json(
    key: &EndpointKey,
    endpoint: Option<&EndpointRecord>,
    history: &[HistoryRecord],
) -> anyhow::Result<Value> {
    let mut object = match endpoint {
        Some(e) => match serde_json::to_value(e)? {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        // Events that made per-node history but no endpoint record (EPT:
        // e.g. a delete for an unknown endpoint).
        None => {
            let kind = history
                .first()
                .map(|h| EndpointType::of(&key.addr, h.history_type));
            match json!({
                "fabric": key.fabric, "vnid": key.vnid, "addr": key.addr, "type": kind,
                "count": 0, "events": [],
            }) {
                Value::Object(m) => m,
                _ => Map::new(),
            }
        }
    };
    object.insert("history".to_owned(), serde_json::to_value(history)?);
    Ok(Value::Object(object))
}

type Row<'a> = (&'a EndpointKey, Option<EndpointRecord>, Vec<HistoryRecord>);

fn table(rows: &[Row<'_>]) -> Table {
    let mut table = Table::new(&[
        "FABRIC", "VNID", "ADDRESS", "STATUS", "NODE", "INTF", "ENCAP", "PCTAG", "RW_MAC", "RW_BD",
        "TS", "HISTORY",
    ])
    .right_align(&[1, 7, 9]);
    for (key, endpoint, history) in rows {
        let counts = history
            .iter()
            .map(|h| format!("{}:{}", node_display(h.node), h.count))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cells = vec![clean(&key.fabric), key.vnid.to_string(), clean(&key.addr)];
        match endpoint.as_ref().and_then(|e| e.events.first()) {
            Some(now) => cells.extend([
                now.status.as_str().to_owned(),
                if now.node == 0 {
                    "-".to_owned()
                } else {
                    node_display(now.node)
                },
                clean(&now.intf_id),
                clean(&now.encap),
                now.pctag.to_string(),
                clean(&now.rw_mac),
                now.rw_bd.to_string(),
                rfc3339(now.ts),
            ]),
            None => {
                cells.extend(["no local learn", "-", "", "", "", "", "", ""].map(str::to_owned))
            }
        }
        cells.push(counts);
        table.row(cells);
    }
    table
}
