//! Events into history per second, EPT-shaped (issue #14's target: at
//! least 200,000 events/s on this machine for the embedded path).
//!
//! The workload: `ENDPOINTS` MACs in one BD, each learned locally on one of
//! 40 leaves and then moved to another leaf (two events each), as APIC
//! websocket notifications (`epmMacEp`, `status` created, flags `local`).
//! Figures:
//!
//! 1. parsing: notification JSON → [`EpmEvent`] (EPT's DN grammar); then
//!    class-query pages as the initial build reads them (`ept_scale`'s
//!    shape: pages of 10,000 `epmMacEp`, `epmIpEp` and
//!    `epmRsMacEpToIpEpAtt` objects with APIC's full attribute sets), per
//!    object, from the text ([`EpmParser::parse_payload`]) and through a
//!    `serde_json::Value` first ([`EpmParser::parse_payload_value`], what
//!    the APIC subscriber and replays do: they record and flatten the
//!    decoded payload);
//! 2. history: [`process_event`] on the in-memory store, one task
//!    (per-node history §4 and the endpoint record §5 per event; each event
//!    reads the endpoint's records from the store and writes back);
//! 3. write-behind, one task: the same events through a [`WriteBehind`]
//!    cache over the in-memory store (records held by the worker, written
//!    in batches), flushed at the end;
//! 4. dispatched: [`process_event`] through the [`Dispatcher`] with 2
//!    workers (the machine has 2 cores), one event per queue message;
//! 5. dispatched write-behind: 2 [`HistoryWorker`]s, events in batches of
//!    512 ([`Dispatcher::dispatch_batch`]), ending with
//!    [`Dispatcher::flush`].
//!
//! The embedded (SQLite) store's figures are `vigil-store`'s benches
//! `ept_throughput` and `ept_scale`.
//!
//! Run: `cargo bench -p vigil-endpoints --bench history` (prints figures;
//! no timed assertions).

use std::sync::Arc;
use std::time::Instant;

use vigil_endpoints::apic::{ApicObject, EpmParser};
use vigil_endpoints::dispatch::{DispatchConfig, Dispatcher, Handler};
use vigil_endpoints::fabric::Fabric;
use vigil_endpoints::model::{EpmEvent, Settings};
use vigil_endpoints::store::{MemoryStore, process_event};
use vigil_endpoints::write_behind::{HistoryWorker, WriteBehind, WriteBehindConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENDPOINTS: usize = 100_000;
const LEAVES: usize = 40;

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

/// One class-query page of `n` objects from host `start` on, the three
/// classes in turn, attributes as `ept_scale` (and APIC) sends them.
fn page(n: usize, start: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(r#"{"ts":1765000000.5,"totalCount":"10000","imdata":["#);
    for k in 0..n {
        let h = start + k;
        if k > 0 {
            out.push(',');
        }
        let node = 101 + h % 400;
        let (vrf, bd, vlan) = (2_000_000 + h % 10, 15_000_000 + h % 100, 100 + h % 100);
        let m = format!(
            "00:50:56:{:02X}:{:02X}:{:02X}",
            (h >> 16) & 0xff,
            (h >> 8) & 0xff,
            h & 0xff
        );
        let i = format!("10.{}.{}.{}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
        let _ = match k % 3 {
            0 => write!(
                out,
                r#"{{"epmMacEp":{{"attributes":{{"addr":"{m}","childAction":"","createTs":"2026-12-01T10:00:00.000+00:00","dn":"topology/pod-1/node-{node}/sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/vlan-[vlan-{vlan}]/db-ep/mac-{m}","flags":"local,vpc-attached","ifId":"po3","lcC":"learned","lcOwn":"local","modTs":"never","monPolDn":"","name":"","nameAlias":"","pcTag":"32771","status":""}}}}}}"#
            ),
            1 => write!(
                out,
                r#"{{"epmIpEp":{{"attributes":{{"addr":"{i}","childAction":"","createTs":"2026-12-01T10:00:00.000+00:00","dn":"topology/pod-1/node-{node}/sys/ctx-[vxlan-{vrf}]/db-ep/ip-[{i}]","flags":"","ifId":"tunnel7","lcC":"learned","lcOwn":"local","modTs":"never","monPolDn":"","name":"","nameAlias":"","pcTag":"32771","status":""}}}}}}"#
            ),
            _ => write!(
                out,
                r#"{{"epmRsMacEpToIpEpAtt":{{"attributes":{{"childAction":"","dn":"topology/pod-1/node-{node}/sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/vlan-[vlan-{vlan}]/db-ep/mac-{m}/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/vlan-[vlan-{vlan}]/db-ep/ip-[{i}]]","forceResolve":"yes","lcOwn":"local","modTs":"never","rType":"mo","state":"formed","stateQual":"none","status":"","tCl":"epmIpEp","tDn":"sys/ctx-[vxlan-{vrf}]/bd-[vxlan-{bd}]/vlan-[vlan-{vlan}]/db-ep/ip-[{i}]","tType":"mo"}}}}}}"#
            ),
        };
    }
    out.push_str("]}");
    out
}

/// Parse `pages` with `parse`, checking every object is an event; µs an
/// object.
fn per_object(pages: &[String], mut parse: impl FnMut(&str) -> usize) -> f64 {
    let started = Instant::now();
    let events: usize = pages.iter().map(|p| parse(p)).sum();
    let took = started.elapsed();
    assert_eq!(events, pages.len() * PAGE, "every object parses");
    took.as_secs_f64() * 1e6 / events as f64
}

const PAGE: usize = 10_000;

struct Worker {
    settings: Arc<Settings>,
    fabric: Arc<Fabric>,
    store: Arc<MemoryStore>,
    handled: u64,
}

impl Handler<EpmEvent> for Worker {
    async fn handle(&mut self, event: EpmEvent) {
        if process_event(&self.settings, &self.fabric, self.store.as_ref(), &event)
            .await
            .is_ok()
        {
            self.handled += 1;
        }
    }
}

fn main() {
    let texts: Vec<String> = (0..ENDPOINTS)
        .map(|i| notification(i, i % LEAVES, 1_765_000_000.0 + i as f64 * 1e-3))
        .chain(
            (0..ENDPOINTS)
                .map(|i| notification(i, (i + 7) % LEAVES, 1_765_000_500.0 + i as f64 * 1e-3)),
        )
        .collect();
    let parser = EpmParser::new("fab1", 0);

    let started = Instant::now();
    let mut events = Vec::with_capacity(texts.len());
    for text in &texts {
        let Ok(payload) = parser.parse_payload(text, 0.0) else {
            continue;
        };
        for object in payload.objects.into_iter().flatten() {
            if let ApicObject::Endpoint(event) = object {
                events.push(event);
            }
        }
    }
    let parse = started.elapsed();
    assert_eq!(events.len(), texts.len(), "every notification parses");
    println!(
        "parsing: {} notifications in {:.2} s = {:.0} events/s",
        texts.len(),
        parse.as_secs_f64(),
        texts.len() as f64 / parse.as_secs_f64()
    );

    let pages: Vec<String> = (0..20).map(|p| page(PAGE, p * PAGE)).collect();
    let endpoints = |payload: vigil_endpoints::apic::Payload| {
        payload
            .objects
            .into_iter()
            .filter(|o| matches!(o, Ok(ApicObject::Endpoint(_))))
            .count()
    };
    let from_text = per_object(&pages, |text| {
        parser.parse_payload(text, 0.0).map(endpoints).unwrap_or(0)
    });
    let via_value = per_object(&pages, |text| {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return 0;
        };
        parser
            .parse_payload_value(&value, 0.0)
            .map(endpoints)
            .unwrap_or(0)
    });
    println!(
        "parsing class-query pages: {} objects, {from_text:.2} µs an object from the text, {via_value:.2} µs through a Value",
        pages.len() * PAGE
    );
    drop(pages);

    let settings = Arc::new(Settings::default());
    let fabric = Arc::new(Fabric::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let store = MemoryStore::new();
    let started = Instant::now();
    runtime.block_on(async {
        for event in &events {
            let _ = process_event(&settings, &fabric, &store, event).await;
        }
    });
    let history = started.elapsed();
    println!(
        "history (one task, in-memory store): {} events in {:.2} s = {:.0} events/s",
        events.len(),
        history.as_secs_f64(),
        events.len() as f64 / history.as_secs_f64()
    );

    let store = Arc::new(MemoryStore::new());
    let started = Instant::now();
    runtime.block_on(async {
        let mut cache =
            WriteBehind::new(store.clone(), WriteBehindConfig::default()).expect("config");
        for event in &events {
            let _ = cache.process(&settings, &fabric, event).await;
        }
        cache.flush().await.expect("flush");
    });
    let write_behind = started.elapsed();
    println!(
        "write-behind (one task, in-memory store, flushed): {} events in {:.2} s = {:.0} events/s",
        events.len(),
        write_behind.as_secs_f64(),
        events.len() as f64 / write_behind.as_secs_f64()
    );

    let batched_events = events.clone();
    let store = Arc::new(MemoryStore::new());
    let started = Instant::now();
    let handled_batched: u64 = runtime.block_on(async {
        let dispatcher = Dispatcher::start(
            DispatchConfig {
                workers: 2,
                queue_capacity: 64,
            },
            |_| {
                let fabric = fabric.clone();
                let cache =
                    WriteBehind::new(store.clone(), WriteBehindConfig::default()).expect("config");
                HistoryWorker::new(cache, *settings, move |_: &str| fabric.clone())
            },
        )
        .expect("dispatcher");
        let mut events = batched_events.into_iter().peekable();
        while events.peek().is_some() {
            let batch: Vec<EpmEvent> = events.by_ref().take(512).collect();
            if dispatcher.dispatch_batch(batch).await.is_err() {
                break;
            }
        }
        dispatcher.flush().await.expect("flush");
        dispatcher
            .shutdown()
            .await
            .map(|workers| workers.iter().map(|w| w.handled()).sum())
            .unwrap_or(0)
    });
    let batched = started.elapsed();

    let store = Arc::new(MemoryStore::new());
    let started = Instant::now();
    let handled: u64 = runtime.block_on(async {
        let dispatcher = Dispatcher::start(
            DispatchConfig {
                workers: 2,
                queue_capacity: 4096,
            },
            |_| Worker {
                settings: settings.clone(),
                fabric: fabric.clone(),
                store: store.clone(),
                handled: 0,
            },
        )
        .expect("dispatcher");
        for event in events {
            let key = event.key();
            if dispatcher.dispatch(&key, event).await.is_err() {
                break;
            }
        }
        dispatcher
            .shutdown()
            .await
            .map(|workers| workers.iter().map(|w| w.handled).sum())
            .unwrap_or(0)
    });
    let dispatched = started.elapsed();
    println!(
        "dispatched (2 workers, in-memory store): {handled} events in {:.2} s = {:.0} events/s",
        dispatched.as_secs_f64(),
        handled as f64 / dispatched.as_secs_f64()
    );
    println!(
        "dispatched write-behind (2 workers, batches of 512, in-memory store, flushed): {handled_batched} events in {:.2} s = {:.0} events/s",
        batched.as_secs_f64(),
        handled_batched as f64 / batched.as_secs_f64()
    );
}
