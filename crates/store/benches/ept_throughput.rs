//! Events taken into history per second with the embedded store (issue
//! #14's target: at least 200,000 EPT-shaped events/s on this machine).
//!
//! The workload of `vigil-endpoints`' `history` bench: 100,000 MACs in one
//! BD, each learned locally on one of 40 leaves and then moved to another
//! leaf, as 200,000 APIC websocket notifications. Into a fresh SQLite file
//! (`SqliteHistory`) through the [`Dispatcher`] with 2 workers (this
//! machine has 2 cores), each a [`HistoryWorker`] with its [`WriteBehind`]
//! cache; events go in batches of 512 per dispatch, and the clock stops
//! after [`Dispatcher::flush`] returns, so every counted event is durable.
//!
//! 1. history: already-parsed events → durable history;
//! 2. end to end: notification JSON → parse → dispatch → durable history;
//! 3. for contrast, the per-event path: `process_event` straight on
//!    `SqliteHistory` (two reads and up to two writes per event, each its
//!    own round trip), one task, on the first 20,000 events.
//!
//! `VIGIL_EPT_ENDPOINTS` sets the number of MACs (default 100000; events =
//! 2 ×), `VIGIL_EPT_RUNS` the repetitions (default 3); `VIGIL_EPT_PER_EVENT=0`
//! skips the per-event contrast.
//!
//! Run: `cargo bench -p vigil-store --bench ept_throughput` (prints figures;
//! no timed assertions).

use std::sync::Arc;
use std::time::Instant;

use vigil_endpoints::apic::{ApicObject, EpmParser};
use vigil_endpoints::dispatch::{DispatchConfig, Dispatcher};
use vigil_endpoints::fabric::Fabric;
use vigil_endpoints::model::{EpmEvent, Settings};
use vigil_endpoints::store::{HistoryStore, process_event};
use vigil_endpoints::write_behind::{HistoryWorker, WriteBehind, WriteBehindConfig};
use vigil_store::endpoints::SqliteHistory;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LEAVES: usize = 40;
const BATCH: usize = 512;

fn notification(i: usize, leaf: usize, ts: f64) -> String {
    let mac = format!(
        "00:50:56:{:02X}:{:02X}:{:02X}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    format!(
        r#"{{"ts":{ts},"subscriptionId":["72057611234066433"],"imdata":[{{"epmMacEp":{{"attributes":{{"dn":"topology/pod-1/node-{node}/sys/ctx-[vxlan-2719744]/bd-[vxlan-15826915]/vlan-[vlan-{vlan}]/db-ep/mac-{mac}","status":"created","flags":"local","ifId":"eth1/{port}","pcTag":"32771","addr":"{mac}"}}}}}}]}}"#,
        node = 101 + leaf,
        vlan = 100 + i % 50,
        port = 1 + i % 48,
    )
}

fn parse(parser: &EpmParser, text: &str, into: &mut Vec<EpmEvent>) {
    let Ok(payload) = parser.parse_payload(text, 0.0) else {
        return;
    };
    for object in payload.objects.into_iter().flatten() {
        if let ApicObject::Endpoint(event) = object {
            into.push(event);
        }
    }
}

type FabricOf = Box<dyn FnMut(&str) -> Arc<Fabric> + Send>;
type Worker = HistoryWorker<dyn HistoryStore, FabricOf>;

fn start(store: Arc<dyn HistoryStore>, fabric: Arc<Fabric>) -> Dispatcher<EpmEvent, Worker> {
    Dispatcher::start(
        DispatchConfig {
            workers: 2,
            queue_capacity: 64,
        },
        |_| {
            let fabric = fabric.clone();
            let cache =
                WriteBehind::new(store.clone(), WriteBehindConfig::default()).expect("config");
            let fabric_of: FabricOf = Box::new(move |_| fabric.clone());
            HistoryWorker::new(cache, Settings::default(), fabric_of)
        },
    )
    .expect("dispatcher")
}

async fn finish(dispatcher: Dispatcher<EpmEvent, Worker>) -> (u64, u64) {
    dispatcher.flush().await.expect("flush");
    let workers = dispatcher.shutdown().await.expect("shutdown");
    (
        workers.iter().map(|w| w.handled()).sum(),
        workers.iter().map(|w| w.cache().stats().batches).sum(),
    )
}

fn main() {
    let endpoints: usize = std::env::var("VIGIL_EPT_ENDPOINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runs: usize = std::env::var("VIGIL_EPT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let texts: Vec<String> = (0..endpoints)
        .map(|i| notification(i, i % LEAVES, 1_765_000_000.0 + i as f64 * 1e-3))
        .chain(
            (0..endpoints)
                .map(|i| notification(i, (i + 7) % LEAVES, 1_765_000_500.0 + i as f64 * 1e-3)),
        )
        .collect();
    let parser = EpmParser::new("fab1", 0);
    let mut events = Vec::with_capacity(texts.len());
    for text in &texts {
        parse(&parser, text, &mut events);
    }
    assert_eq!(events.len(), texts.len(), "every notification parses");
    let fabric = Arc::new(Fabric::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    for run in 1..=runs {
        // 1. Parsed events into durable history.
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn HistoryStore> =
            Arc::new(SqliteHistory::open(&dir.path().join("vigil.db")).expect("open"));
        let batch_events = events.clone();
        let started = Instant::now();
        let (handled, batches) = runtime.block_on(async {
            let dispatcher = start(store, fabric.clone());
            let mut it = batch_events.into_iter().peekable();
            while it.peek().is_some() {
                let batch: Vec<EpmEvent> = it.by_ref().take(BATCH).collect();
                dispatcher.dispatch_batch(batch).await.expect("dispatch");
            }
            finish(dispatcher).await
        });
        let history = started.elapsed();
        println!(
            "run {run}: history (2 workers, write-behind SQLite, durable): {handled} events in {:.2} s = {:.0} events/s ({batches} batches written)",
            history.as_secs_f64(),
            handled as f64 / history.as_secs_f64()
        );

        // 2. End to end, parsing included.
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn HistoryStore> =
            Arc::new(SqliteHistory::open(&dir.path().join("vigil.db")).expect("open"));
        let started = Instant::now();
        let (handled, _) = runtime.block_on(async {
            let dispatcher = start(store, fabric.clone());
            let mut batch = Vec::with_capacity(BATCH);
            for text in &texts {
                parse(&parser, text, &mut batch);
                if batch.len() >= BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    dispatcher.dispatch_batch(full).await.expect("dispatch");
                }
            }
            dispatcher.dispatch_batch(batch).await.expect("dispatch");
            finish(dispatcher).await
        });
        let end_to_end = started.elapsed();
        println!(
            "run {run}: end to end (parse + 2 workers + write-behind SQLite, durable): {handled} events in {:.2} s = {:.0} events/s",
            end_to_end.as_secs_f64(),
            handled as f64 / end_to_end.as_secs_f64()
        );
    }

    // 3. The per-event path, for contrast (`VIGIL_EPT_PER_EVENT=0` skips it,
    // e.g. to profile the runs above alone).
    if std::env::var("VIGIL_EPT_PER_EVENT").is_ok_and(|v| v == "0") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteHistory::open(&dir.path().join("vigil.db")).expect("open");
    let sample = &events[..events.len().min(20_000)];
    let settings = Settings::default();
    let started = Instant::now();
    runtime.block_on(async {
        for ev in sample {
            process_event(&settings, &fabric, &store, ev)
                .await
                .expect("process");
        }
    });
    let per_event = started.elapsed();
    println!(
        "per-event path (process_event on SqliteHistory, one task): {} events in {:.2} s = {:.0} events/s",
        sample.len(),
        per_event.as_secs_f64(),
        sample.len() as f64 / per_event.as_secs_f64()
    );
}
