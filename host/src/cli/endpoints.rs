//! `vigil endpoints`: the endpoint tracker from the command line (issue
//! #14). `replay FILE --fabric NAME` replays a recorded ACI fabric (JSON
//! lines of APIC payloads, see [`vigil_endpoints::replay`]) into an
//! in-memory history and prints every endpoint, sorted by fabric, vnid and
//! address: a table of its current location and per-node history counts,
//! or with `--json` one JSON object per endpoint with EPT's field names.
//!
//! `search TEXT` and `show ADDRESS` read the site's endpoint history
//! (read-only), with the JSON shapes of `/api/v1` ([`vigil_host::views`]).
//!
//! The replay needs no site config and writes nothing. Skipped lines and
//! objects and the summary go to stderr; the exit status is 0 when the file
//! was read (bad lines included), 1 when it could not be.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Map, Value, json};
use vigil_endpoints::HistoryStore;
use vigil_endpoints::fabric::node_display;
use vigil_endpoints::model::EndpointEvent;
use vigil_endpoints::model::{EndpointKey, EndpointRecord, EndpointType, HistoryRecord};
use vigil_endpoints::query::{self, EndpointDetail, MAX_PAGE, QueryError, Search};
use vigil_endpoints::replay::{ReplayOptions, replay};
use vigil_host::site::SiteConfig;
use vigil_host::views::{EndpointDetailView, EndpointView, rfc3339};

use super::table::{Table, clean};

#[derive(clap::Subcommand)]
pub enum EndpointsCommand {
    /// Replay a recorded fabric: JSON lines, each one APIC payload as the
    /// APIC sends it (a class-query response or a websocket notification),
    /// optionally with a top-level "ts" (seconds since the epoch). Prints
    /// every endpoint's current location and per-node history counts.
    Replay(ReplayArgs),
    /// Search the site's endpoint history: a complete address in any
    /// notation (a MAC as aa:bb:.., AA-BB-.., aabb.ccdd.eeff or bare hex),
    /// an address prefix (10.1., 00:50:56, 2001:db8:), or an IPv4 /8, /16,
    /// /24 network. Prints each endpoint where it is now.
    Search(SearchArgs),
    /// One endpoint of the site's history: where it is now, its events, and
    /// every node's history (newest first, with how many events in all).
    Show(ShowArgs),
}

impl EndpointsCommand {
    /// Whether the command reads the site's data (needs a site config).
    pub fn reads_site(&self) -> bool {
        !matches!(self, EndpointsCommand::Replay(_))
    }
}

#[derive(clap::Args)]
pub struct SearchArgs {
    /// An address, an address prefix or a MAC in any notation; "" for
    /// every endpoint.
    pub text: String,
    /// Only this fabric.
    #[arg(long)]
    pub fabric: Option<String>,
    /// Only this scope (BD vnid for a MAC, VRF vnid for an IP).
    #[arg(long)]
    pub scope: Option<u32>,
    /// At most this many endpoints (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON object per endpoint, per line (`GET /api/v1/endpoints`'
    /// items).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The endpoint's MAC or IP address, in any notation.
    pub address: String,
    /// The fabric, when the address is in more than one.
    #[arg(long)]
    pub fabric: Option<String>,
    /// The scope (BD vnid for a MAC, VRF vnid for an IP), when the address
    /// is in more than one.
    #[arg(long)]
    pub scope: Option<u32>,
    /// One JSON object: the record, its events and every node's history
    /// (`GET /api/v1/endpoints/{fabric}/{scope}/{addr}`).
    #[arg(long)]
    pub json: bool,
}

/// Exit status of `show` for an address not in the history.
pub const NOT_FOUND: u8 = 1;
/// Exit status of `show` for an address in more than one fabric or scope
/// (the candidates are listed).
pub const AMBIGUOUS: u8 = 2;

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

/// Runs an `endpoints` subcommand (`site` for those that read its data).
pub async fn run(site: &SiteConfig, command: EndpointsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EndpointsCommand::Replay(args) => replay_file(args).await,
        EndpointsCommand::Search(args) => search(site, args).await,
        EndpointsCommand::Show(args) => show(site, args).await,
    }
}

/// The site's endpoint history, read-only.
async fn open_history(site: &SiteConfig) -> anyhow::Result<Arc<dyn HistoryStore>> {
    vigil_host::endpoints::open_history(site, true).await
}

/// A query error, with the common case of a database the tracker never
/// wrote said plainly.
fn query_error(site: &SiteConfig, error: QueryError) -> anyhow::Error {
    if let QueryError::Store(e) = &error
        && e.to_string().contains("no such table")
    {
        return anyhow::anyhow!(
            "no endpoint history in {} (the endpoint tracker has not stored any: `[endpoints] enabled` and `vigil run`)",
            site.database.display()
        );
    }
    anyhow::anyhow!("{error}")
}

async fn search(site: &SiteConfig, args: SearchArgs) -> anyhow::Result<ExitCode> {
    if !(1..=MAX_PAGE).contains(&args.limit) {
        anyhow::bail!("--limit must be 1 to {MAX_PAGE}");
    }
    let store = open_history(site).await?;
    let page = query::search(
        store.as_ref(),
        &Search {
            text: Some(args.text.clone()),
            fabric: args.fabric.clone(),
            vnid: args.scope,
            cursor: None,
            limit: args.limit,
        },
    )
    .await
    .map_err(|e| query_error(site, e))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        for record in &page.items {
            writeln!(
                out,
                "{}",
                serde_json::to_string(&EndpointView::from(record))?
            )?;
        }
    } else if !page.items.is_empty() {
        let mut table = Table::new(&[
            "ADDRESS", "FABRIC", "VNID", "TYPE", "STATUS", "NODE", "INTF", "ENCAP", "PCTAG", "TS",
            "EVENTS",
        ])
        .right_align(&[2, 8, 10]);
        for r in &page.items {
            let mut cells = vec![
                clean(&r.addr),
                clean(&r.fabric),
                r.vnid.to_string(),
                EndpointView::from(r).endpoint_type.to_owned(),
            ];
            cells.extend(current_cells(r.events.first()));
            cells.push(r.count.to_string());
            table.row(cells);
        }
        write!(out, "{}", table.render())?;
    }
    out.flush()?;
    drop(out);
    if page.items.is_empty() {
        eprintln!("no endpoint matches {:?}", args.text);
    } else if page.next_cursor.is_some() {
        eprintln!(
            "more endpoints match: showing the first {} (raise --limit, at most {MAX_PAGE}, or narrow the search)",
            page.items.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// STATUS, NODE, INTF, ENCAP, PCTAG, TS of an endpoint's newest event.
fn current_cells(now: Option<&EndpointEvent>) -> Vec<String> {
    match now {
        Some(now) => vec![
            now.status.as_str().to_owned(),
            if now.node == 0 {
                "-".to_owned()
            } else {
                node_display(now.node)
            },
            clean(&now.intf_id),
            clean(&now.encap),
            now.pctag.to_string(),
            rfc3339(now.ts),
        ],
        None => ["no local learn", "-", "", "", "", ""]
            .map(str::to_owned)
            .to_vec(),
    }
}

async fn show(site: &SiteConfig, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = open_history(site).await?;
    let keys = query::locate(
        store.as_ref(),
        &args.address,
        args.fabric.as_deref(),
        args.scope,
    )
    .await
    .map_err(|e| query_error(site, e))?;
    let where_ = match (&args.fabric, args.scope) {
        (None, None) => String::new(),
        (Some(f), None) => format!(" in fabric {}", clean(f)),
        (None, Some(s)) => format!(" in scope {s}"),
        (Some(f), Some(s)) => format!(" in fabric {} scope {s}", clean(f)),
    };
    let key = match keys.as_slice() {
        [] => {
            eprintln!(
                "vigil: no endpoint {}{where_} in the history",
                clean(&args.address)
            );
            return Ok(ExitCode::from(NOT_FOUND));
        }
        [key] => key.clone(),
        several => {
            eprintln!(
                "vigil: {} is in {} scopes{where_}; give --fabric and --scope:",
                clean(&args.address),
                several.len()
            );
            for k in several {
                eprintln!("  --fabric {} --scope {}", clean(&k.fabric), k.vnid);
            }
            return Ok(ExitCode::from(AMBIGUOUS));
        }
    };
    let Some(detail) = query::detail(store.as_ref(), &key)
        .await
        .map_err(|e| query_error(site, e.into()))?
    else {
        eprintln!("vigil: no endpoint {key} in the history (removed meanwhile)");
        return Ok(ExitCode::from(NOT_FOUND));
    };
    let view = EndpointDetailView::from(&detail);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&view)?)?;
    } else {
        write!(out, "{}", show_text(&detail, &view))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `vigil endpoints show` as text: a summary, the record's events, then
/// each node's history.
fn show_text(detail: &EndpointDetail, view: &EndpointDetailView) -> String {
    let r = &detail.record;
    let e = &view.endpoint;
    let mut text = format!(
        "{}  fabric {}  vnid {}  {}  learn {}  {} events{}{}\n",
        clean(&r.addr),
        clean(&r.fabric),
        r.vnid,
        e.endpoint_type,
        e.learn_type,
        r.count,
        if r.is_stale { "  stale" } else { "" },
        if r.is_offsubnet { "  offsubnet" } else { "" },
    );
    let now = current_cells(r.events.first());
    text.push_str(&format!(
        "now: {} on node {} {} {} pctag {} at {}\n",
        now[0], now[1], now[2], now[3], now[4], now[5]
    ));
    text.push_str(&format!(
        "\nendpoint events ({} in all, newest first):\n",
        r.count
    ));
    let mut events = Table::new(&[
        "TS", "STATUS", "NODE", "INTF", "ENCAP", "PCTAG", "EPG", "RW_MAC", "RW_BD",
    ])
    .right_align(&[5, 8]);
    for ev in &r.events {
        events.row(vec![
            rfc3339(ev.ts),
            ev.status.as_str().to_owned(),
            if ev.node == 0 {
                "-".to_owned()
            } else {
                node_display(ev.node)
            },
            clean(&ev.intf_name),
            clean(&ev.encap),
            ev.pctag.to_string(),
            clean(&ev.epg_name),
            clean(&ev.rw_mac),
            ev.rw_bd.to_string(),
        ]);
    }
    text.push_str(&events.render());
    for h in detail.histories.values() {
        text.push_str(&format!(
            "\nnode {} ({} events in all, newest first):\n",
            node_display(h.node),
            h.count
        ));
        let mut table = Table::new(&[
            "TS", "STATUS", "CLASS", "INTF", "ENCAP", "PCTAG", "FLAGS", "REMOTE", "RW_MAC", "RW_BD",
        ])
        .right_align(&[5, 9]);
        for ev in &h.events {
            table.row(vec![
                rfc3339(ev.ts),
                ev.status.as_str().to_owned(),
                ev.classname.as_str().to_owned(),
                clean(&ev.intf_name),
                clean(&ev.encap),
                ev.pctag.to_string(),
                clean(ev.flags.joined()),
                if ev.remote == 0 {
                    String::new()
                } else {
                    node_display(ev.remote)
                },
                clean(&ev.rw_mac),
                ev.rw_bd.to_string(),
            ]);
        }
        text.push_str(&table.render());
    }
    text
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
