//! The worker step behind the dispatcher: events of many endpoints, handled
//! by 4 workers in parallel, give exactly the history of handling them one
//! by one in order (per-endpoint order is all the rules depend on).

#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::sync::Arc;
use vigil_endpoints::apic::{ApicObject, EpmParser};
use vigil_endpoints::dispatch::{DispatchConfig, Dispatcher, Handler};
use vigil_endpoints::fabric::Fabric;
use vigil_endpoints::model::{EpmEvent, Settings};
use vigil_endpoints::store::{HistoryStore, MemoryStore, process_event};

struct Worker {
    settings: Settings,
    fabric: Arc<Fabric>,
    store: Arc<MemoryStore>,
    handled: usize,
}

impl Handler<EpmEvent> for Worker {
    async fn handle(&mut self, ev: EpmEvent) {
        process_event(&self.settings, &self.fabric, &*self.store, &ev)
            .await
            .unwrap();
        self.handled += 1;
    }
}

fn events() -> Vec<EpmEvent> {
    let parser = EpmParser::new("fab1", 16777199);
    let mut out = Vec::new();
    let nodes = [101u32, 102, 103, 104];
    // 40 MACs, each learned and moved across leaves, with deletes between.
    for step in 0..30u32 {
        for m in 0..40u32 {
            let node = nodes[((step + m) % 4) as usize];
            let status = if step % 7 == 3 { "deleted" } else { "created" };
            let dn = format!(
                "topology/pod-1/node-{node}/sys/ctx-[vxlan-1]/bd-[vxlan-2]/vlan-[vlan-5]/db-ep/mac-00:00:00:00:00:{m:02X}"
            );
            let attrs = json!({"dn": dn, "status": status, "flags": "local",
                               "ifId": format!("eth1/{}", step % 5), "pcTag": "49153"});
            let payload = json!({"ts": f64::from(step * 40 + m), "imdata": [{"epmMacEp": {"attributes": attrs}}]});
            let p = parser.parse_payload(&payload.to_string(), 0.0).unwrap();
            for o in p.objects {
                if let Ok(ApicObject::Endpoint(e)) = o {
                    out.push(e);
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_workers_match_sequential_history() {
    let settings = Settings::new(16, 16).unwrap();
    let fabric = Arc::new(Fabric::new("fab1", 16777199));
    let evs = events();

    let sequential = MemoryStore::new();
    for ev in &evs {
        process_event(&settings, &fabric, &sequential, ev)
            .await
            .unwrap();
    }

    let parallel = Arc::new(MemoryStore::new());
    let d = Dispatcher::start(
        DispatchConfig {
            workers: 4,
            queue_capacity: 8,
        },
        |_| Worker {
            settings,
            fabric: fabric.clone(),
            store: parallel.clone(),
            handled: 0,
        },
    )
    .unwrap();
    for ev in &evs {
        d.dispatch(&ev.key(), ev.clone()).await.unwrap();
    }
    let workers = d.shutdown().await.unwrap();
    assert_eq!(workers.iter().map(|w| w.handled).sum::<usize>(), evs.len());
    assert!(
        workers.iter().filter(|w| w.handled > 0).count() > 1,
        "all endpoints landed on one worker"
    );

    assert_eq!(parallel.endpoint_count(), 40);
    assert_eq!(parallel.history_count(), sequential.history_count());
    for ev in &evs {
        let k = ev.key();
        assert_eq!(
            parallel.endpoint(&k).await.unwrap(),
            sequential.endpoint(&k).await.unwrap()
        );
        assert_eq!(
            parallel.histories(&k).await.unwrap(),
            sequential.histories(&k).await.unwrap()
        );
    }
    // The moves were recorded: every MAC has more than one location event.
    let k = evs[0].key();
    assert!(sequential.endpoint(&k).await.unwrap().unwrap().count > 1);
}
