//! Endpoint events over Kafka: the topic `<site>-endpoint-events`, and the
//! two ends of it.
//!
//! - [`KafkaEventSink`]: where a process's endpoint sources write when the
//!   site's bus is Kafka (`vigil run --role agent|subscriber|all`). Each
//!   event becomes one message in the pushed-event JSON
//!   ([`vigil_endpoints::pushed`], the same form collectors vigil does not
//!   run push), keyed `fabric/vnid/addr` and placed in partition
//!   `key_hash % partitions` ([`vigil_endpoints::dispatch::key_hash`]), so
//!   all events of one endpoint sit in one partition, in order, whichever
//!   process produced them. A full producer buffer makes the source wait
//!   (it never drops an endpoint event).
//! - [`consume_into`]: the endpoint workers (`--role endpoint-worker`,
//!   and `all`): a consumer group `<site>-endpoint-workers` reads the topic
//!   into this process's [`Tracker`]. A batch's offsets are committed only
//!   after [`Tracker::barrier`] confirmed every event of it is in the
//!   history store; a worker killed before that leaves the batch to the
//!   group's next owner of the partition, which gets it again
//!   (at-least-once), and the history rules recognise what was already
//!   recorded ([`vigil_endpoints::history::IgnoreReason::Redelivered`]).
//!   Per-endpoint order holds because one partition has one owner at a
//!   time and a worker queue per endpoint (the tracker's dispatch).
//!   Messages that are not a valid event are counted
//!   (`vigil_endpoint_events_rejected_total{source="kafka",reason}`), logged
//!   with a sample at a limited rate, and committed past.
//!
//! - **Fabric models** ([`FabricModels`]): a model a source publishes
//!   (an APIC subscriber's nodes, vpc pairs, tunnels, EPGs) is stored in
//!   the site's key/value backend (the embedded database, or Redis when
//!   agents share a site) as one document
//!   ([`vigil_endpoints::fabric_doc`]), and a marker naming its version is
//!   sent into every partition. A worker that reads a marker loads that
//!   model, so the events after it in each partition are read against it
//!   as in the subscriber's own process; a worker that starts loads every
//!   stored model before its first event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_core::kv::KvBackend;

use serde_json::{Map, Value, json};
use tokio::sync::watch;
use vigil_endpoints::dispatch::key_hash;
use vigil_endpoints::fabric::Fabric;
use vigil_endpoints::ingest::{EventSink, SinkClosed, Source, SubscriberState};
use vigil_endpoints::model::{EpmClass, EpmEvent, HistoryType};
use vigil_endpoints::tracker::{MAX_SAMPLE_BYTES, Tracker, bounded_sample};
use vigil_kafka::{ConsumeReport, KafkaPublisher, KafkaSettings, RawMessages, Topic};

/// The Kafka settings of the site's bus.
pub fn settings(site: &crate::site::SiteConfig) -> anyhow::Result<KafkaSettings> {
    let crate::site::BusBackend::Kafka {
        brokers,
        partitions,
        buffer_messages,
    } = &site.bus_backend
    else {
        anyhow::bail!("endpoint events over Kafka need bus.backend = \"kafka\"");
    };
    let mut kafka = KafkaSettings::new(brokers.clone(), site.name.clone());
    kafka.partitions = *partitions;
    kafka.buffer_messages = *buffer_messages;
    Ok(kafka)
}

/// The workers' consumer group: `<site>-endpoint-workers`.
pub fn worker_group(site: &str) -> String {
    format!("{site}-endpoint-workers")
}

/// Messages taken per batch (one barrier and one commit each).
pub const BATCH_MAX: usize = 2000;

/// How long a source waits before offering an event again to a full
/// producer buffer.
const FULL_BUFFER_WAIT: Duration = Duration::from_millis(20);

/// The message key of an event: `fabric/vnid/addr`.
pub fn message_key(ev: &EpmEvent) -> String {
    format!("{}/{}/{}", ev.fabric, ev.vnid, ev.key_addr())
}

/// The partition of an event among `partitions`.
pub fn partition_of(ev: &EpmEvent, partitions: i32) -> i32 {
    let partitions = u64::try_from(partitions.max(1)).unwrap_or(1);
    // Below `partitions`, which is an i32.
    i32::try_from(key_hash(&ev.key()) % partitions).unwrap_or(0)
}

/// `ev` in the pushed-event JSON ([`vigil_endpoints::pushed`]):
/// `parse_event` of it gives `ev` back.
pub fn to_pushed(ev: &EpmEvent) -> Value {
    let mut out = Map::new();
    out.insert("fabric".into(), json!(ev.fabric));
    out.insert("node".into(), json!(ev.node));
    out.insert("vnid".into(), json!(ev.vnid));
    out.insert("status".into(), json!(ev.status.as_str()));
    out.insert("ts".into(), json!(ev.ts));
    match ev.classname {
        EpmClass::RsMacEpToIpEpAtt => {
            out.insert("type".into(), json!("rewrite"));
            out.insert("addr".into(), json!(ev.ip));
            out.insert("rw_mac".into(), json!(ev.addr));
            out.insert("rw_bd".into(), json!(ev.bd));
            out.insert("encap".into(), json!(ev.encap));
        }
        class => {
            let mac = ev.history_type == HistoryType::Mac;
            out.insert(
                "type".into(),
                json!(if class == EpmClass::MacEp {
                    "mac"
                } else {
                    "ip"
                }),
            );
            out.insert("addr".into(), json!(ev.addr));
            out.insert("intf_id".into(), json!(ev.if_id));
            out.insert("encap".into(), json!(ev.encap));
            out.insert("pctag".into(), json!(ev.pctag));
            out.insert("flags".into(), json!(ev.flags));
            if mac {
                out.insert("vrf".into(), json!(ev.vrf));
            } else {
                out.insert("bd".into(), json!(ev.bd));
            }
        }
    }
    Value::Object(out)
}

/// The key/value namespace of the stored fabric models (no plugin can
/// name it: plugin names cannot hold control characters).
pub const MODELS_NAMESPACE: &str = "\u{7f}vigil.endpoint-fabrics";

/// A stored model may be this large (a 400-leaf fabric is about 20 MB).
pub const MAX_MODEL_BYTES: u64 = 256 << 20;

/// The marker field of a fabric-model message.
pub const MARKER_FIELD: &str = "vigil_fabric_model";

/// Fabric models in the site's key/value backend (module docs).
#[derive(Clone)]
pub struct FabricModels {
    kv: Arc<dyn KvBackend>,
}

impl FabricModels {
    pub fn new(kv: Arc<dyn KvBackend>) -> Self {
        FabricModels { kv }
    }

    /// Stores `fabric` as version `version`.
    pub async fn store(&self, fabric: &Fabric, version: u64) -> anyhow::Result<()> {
        let body = json!({
            "version": version,
            "model": serde_json::from_str::<Value>(&vigil_endpoints::fabric_doc::to_json(fabric))?,
        })
        .to_string();
        let (kv, name) = (self.kv.clone(), fabric.name.clone());
        let stored = tokio::task::spawn_blocking(move || {
            kv.set(MODELS_NAMESPACE, &name, body.as_bytes(), MAX_MODEL_BYTES)
        })
        .await?;
        match stored {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => anyhow::bail!("storing the model of fabric {}: {e:?}", fabric.name),
            Err(e) => anyhow::bail!("storing the model of fabric {}: {e}", fabric.name),
        }
    }

    /// The stored model of `name` and its version.
    pub async fn load(&self, name: &str) -> anyhow::Result<Option<(u64, Fabric)>> {
        let (kv, key) = (self.kv.clone(), name.to_owned());
        let got = tokio::task::spawn_blocking(move || kv.get(MODELS_NAMESPACE, &key))
            .await?
            .map_err(|e| anyhow::anyhow!("reading the model of fabric {name}: {e}"))?;
        let Some(bytes) = got else {
            return Ok(None);
        };
        let value: Value = serde_json::from_slice(&bytes)?;
        let version = value["version"].as_u64().unwrap_or(0);
        let doc: vigil_endpoints::fabric_doc::FabricDoc =
            serde_json::from_value(value["model"].clone())
                .map_err(|e| anyhow::anyhow!("the stored model of fabric {name}: {e}"))?;
        Ok(Some((version, Fabric::from(doc))))
    }

    /// Every stored model.
    pub async fn load_all(&self) -> anyhow::Result<Vec<(u64, Fabric)>> {
        let kv = self.kv.clone();
        let names = tokio::task::spawn_blocking(move || kv.keys(MODELS_NAMESPACE))
            .await?
            .map_err(|e| anyhow::anyhow!("listing the stored fabric models: {e}"))?;
        let mut out = Vec::new();
        for name in names {
            if let Some(model) = self.load(&name).await? {
                out.push(model);
            }
        }
        Ok(out)
    }
}

/// The marker of version `version` of fabric `name`'s model.
fn marker(name: &str, version: u64) -> Vec<u8> {
    json!({ MARKER_FIELD: name, "version": version })
        .to_string()
        .into_bytes()
}

/// Writes endpoint events to `<site>-endpoint-events` (module docs).
pub struct KafkaEventSink {
    publisher: Arc<KafkaPublisher>,
    partitions: i32,
    models: FabricModels,
    /// The document last stored per fabric (a model published again
    /// unchanged is not stored or announced again).
    published: Mutex<std::collections::HashMap<String, String>>,
    /// This process's tracker, if it runs one: it gets the fabric models
    /// and the subscriber states (its workers read events against them).
    local: Option<Arc<Tracker>>,
}

impl KafkaEventSink {
    pub fn new(
        settings: &KafkaSettings,
        models: FabricModels,
        local: Option<Arc<Tracker>>,
    ) -> anyhow::Result<Self> {
        Ok(KafkaEventSink {
            publisher: Arc::new(KafkaPublisher::new(settings)?),
            partitions: settings.partitions,
            models,
            published: Mutex::new(std::collections::HashMap::new()),
            local,
        })
    }

    /// Offer `payload` until the producer's buffer takes it.
    async fn offer(&self, partition: i32, key: &[u8], payload: &[u8]) {
        loop {
            let report =
                self.publisher
                    .publish_keyed(Topic::EndpointEvents, partition, key, payload);
            if report.dropped_buffer_full == 0 {
                return;
            }
            tokio::time::sleep(FULL_BUFFER_WAIT).await;
        }
    }

    /// Wait until what was produced is acknowledged (or `timeout`).
    pub async fn flush(&self, timeout: Duration) -> bool {
        self.publisher.flush(timeout).await
    }
}

#[async_trait::async_trait]
impl EventSink for KafkaEventSink {
    async fn fabric(&self, fabric: Arc<Fabric>) -> Result<(), SinkClosed> {
        if let Some(local) = &self.local {
            local.fabric(fabric.clone()).await?;
        }
        let doc = vigil_endpoints::fabric_doc::to_json(&fabric);
        let unchanged = self
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fabric.name)
            .is_some_and(|last| *last == doc);
        if unchanged {
            return Ok(());
        }
        // Versions rise with time (nanoseconds), so a model stored by a
        // restarted subscriber supersedes its predecessor's.
        let version = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        if let Err(e) = self.models.store(&fabric, version).await {
            // Workers keep the previous model; the next change tries again.
            tracing::warn!(fabric = %fabric.name, "{e:#}");
            return Ok(());
        }
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fabric.name.clone(), doc);
        let payload = marker(&fabric.name, version);
        let key = format!("fabric/{}", fabric.name);
        for partition in 0..self.partitions.max(1) {
            self.offer(partition, key.as_bytes(), &payload).await;
        }
        tracing::info!(fabric = %fabric.name, version, "fabric model stored and announced to the endpoint workers");
        Ok(())
    }

    async fn event(&self, _source: Source, event: EpmEvent) -> Result<(), SinkClosed> {
        let key = message_key(&event);
        let partition = partition_of(&event, self.partitions);
        let payload = to_pushed(&event).to_string();
        self.offer(partition, key.as_bytes(), payload.as_bytes())
            .await;
        Ok(())
    }

    fn rejected(&self, source: Source, reason: &'static str, sample: &str) {
        if let Some(local) = &self.local {
            local.rejected(source, reason, sample);
        } else {
            tracing::warn!(%source, reason, sample = %bounded_sample(sample, MAX_SAMPLE_BYTES), "endpoint input rejected");
        }
    }

    fn subscriber_state(&self, fabric: &str, state: SubscriberState) {
        if let Some(local) = &self.local {
            local.subscriber_state(fabric, state);
        }
    }
}

/// Consumes `<site>-endpoint-events` into `tracker` until `stop` (module
/// docs).
pub async fn consume_into(
    settings: &KafkaSettings,
    tracker: Arc<Tracker>,
    models: FabricModels,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ConsumeReport> {
    // The models stored before this worker started, before any event;
    // then the version loaded per fabric, so a marker of a model already
    // loaded (one per partition, or a repeated or forged one) reads
    // nothing.
    let loaded: Arc<Mutex<std::collections::HashMap<String, u64>>> = Arc::default();
    for (version, fabric) in models.load_all().await? {
        tracing::info!(fabric = %fabric.name, version, "fabric model loaded");
        lock_versions(&loaded).insert(fabric.name.clone(), version);
        tracker.fabric(Arc::new(fabric)).await?;
    }
    let group = worker_group(&settings.site);
    vigil_kafka::consume_decoded(
        settings,
        &group,
        Topic::EndpointEvents,
        BATCH_MAX,
        RawMessages,
        |batch: Vec<vigil_kafka::Received>| {
            let tracker = tracker.clone();
            let models = models.clone();
            let loaded = loaded.clone();
            async move {
                let mut events = Vec::with_capacity(batch.len());
                for message in batch {
                    let Some(payload) = message.payload.as_deref() else {
                        tracker.rejected(Source::Kafka, "empty", "");
                        continue;
                    };
                    if let Some((name, version)) = fabric_marker(payload) {
                        let known = lock_versions(&loaded).get(&name).copied();
                        if known.is_some_and(|known| known >= version) {
                            continue;
                        }
                        // The events before the marker are read against
                        // the model before it.
                        tracker
                            .events(Source::Kafka, std::mem::take(&mut events))
                            .await?;
                        // Nothing is committed until the model is loaded:
                        // a failure offers the batch again.
                        match models.load(&name).await? {
                            Some((stored, fabric)) => {
                                tracing::info!(fabric = %name, version = stored, "fabric model loaded");
                                // A marker naming a version never stored
                                // is not read again.
                                lock_versions(&loaded).insert(name, stored.max(version));
                                tracker.fabric(Arc::new(fabric)).await?;
                            }
                            None => tracker.rejected(
                                Source::Kafka,
                                "unknown_fabric_model",
                                &bounded_sample(&name, MAX_SAMPLE_BYTES),
                            ),
                        }
                        continue;
                    }
                    let parsed = serde_json::from_slice::<Value>(payload)
                        .map_err(|e| ("not_json", e.to_string()))
                        .and_then(|value| {
                            vigil_endpoints::pushed::parse_event(&value)
                                .map_err(|e| (e.code, e.to_string()))
                        });
                    match parsed {
                        Ok(ev) => events.push(ev),
                        Err((reason, error)) => {
                            let text = String::from_utf8_lossy(payload);
                            tracker.rejected(
                                Source::Kafka,
                                reason,
                                &format!(
                                    "partition {} offset {}: {error}: {}",
                                    message.partition,
                                    message.offset,
                                    bounded_sample(&text, MAX_SAMPLE_BYTES)
                                ),
                            );
                        }
                    }
                }
                tracker.events(Source::Kafka, events).await?;
                // Commit only what is in the history store.
                tracker.barrier().await.map_err(anyhow::Error::from)
            }
        },
        stop,
    )
    .await
}

/// The fabric and version named by a model marker, if `payload` is one.
fn fabric_marker(payload: &[u8]) -> Option<(String, u64)> {
    // Markers are small; an event is never one (it has no such field).
    if payload.len() > 512 {
        return None;
    }
    let value: Value = serde_json::from_slice(payload).ok()?;
    let name = value.get(MARKER_FIELD)?.as_str()?.to_owned();
    Some((
        name,
        value.get("version").and_then(Value::as_u64).unwrap_or(0),
    ))
}

fn lock_versions(
    m: &Mutex<std::collections::HashMap<String, u64>>,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_endpoints::apic::{ApicObject, EpmParser};

    /// APIC objects of each class, through the pushed JSON and back.
    #[test]
    fn apic_events_survive_the_pushed_form() {
        let parser = EpmParser::new("fab1", 16777199);
        let base = "topology/pod-1/node-101/sys/ctx-[vxlan-2949120]/bd-[vxlan-15990734]/vlan-[vlan-101]/db-ep";
        let objects = [
            json!({"epmMacEp": {"attributes": {"dn": format!("{base}/mac-00:50:56:AD:BB:16"), "status": "created", "flags": "local,vpc-attached", "ifId": "po3", "pcTag": "32771"}}}),
            json!({"epmIpEp": {"attributes": {"dn": format!("{base}/ip-[10.1.1.101]"), "status": "modified", "flags": "local", "ifId": "eth1/5", "pcTag": "32771"}}}),
            json!({"epmIpEp": {"attributes": {"dn": format!("{base}/ip-[2001:db8:1::65]"), "status": "created", "flags": "local", "ifId": "eth1/5", "pcTag": "32771"}}}),
            json!({"epmRsMacEpToIpEpAtt": {"attributes": {"dn": format!("{base}/mac-00:50:56:AD:BB:16/rsmacEpToIpEpAtt-[sys/ctx-[vxlan-2949120]/bd-[vxlan-15990734]/vlan-[vlan-101]/db-ep/ip-[10.1.1.101]]"), "status": "created"}}}),
        ];
        for object in objects {
            let payload = json!({"ts": 1765000000.125, "imdata": [object]}).to_string();
            let parsed = parser.parse_payload(&payload, 0.0).expect("payload");
            let Some(Ok(ApicObject::Endpoint(ev))) = parsed.objects.into_iter().next() else {
                panic!("not an endpoint: {payload}");
            };
            let pushed = to_pushed(&ev);
            let back = vigil_endpoints::pushed::parse_event(&pushed)
                .unwrap_or_else(|e| panic!("{pushed}: {e}"));
            assert_eq!(back, ev, "{pushed}");
            assert_eq!(partition_of(&back, 6), partition_of(&ev, 6));
        }
    }

    /// A memory key/value backend that counts reads.
    #[derive(Default)]
    struct CountingKv {
        inner: vigil_core::kv::MemoryKv,
        gets: std::sync::atomic::AtomicUsize,
    }

    impl CountingKv {
        fn gets(&self) -> usize {
            self.gets.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl KvBackend for CountingKv {
        fn get(
            &self,
            plugin: &str,
            key: &str,
        ) -> Result<Option<Vec<u8>>, vigil_core::kv::KvFailure> {
            self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.get(plugin, key)
        }
        fn set(
            &self,
            plugin: &str,
            key: &str,
            value: &[u8],
            quota: u64,
        ) -> Result<Result<(), vigil_core::kv::KvError>, vigil_core::kv::KvFailure> {
            self.inner.set(plugin, key, value, quota)
        }
        fn delete(&self, plugin: &str, key: &str) -> Result<(), vigil_core::kv::KvFailure> {
            self.inner.delete(plugin, key)
        }
        fn keys(&self, plugin: &str) -> Result<Vec<String>, vigil_core::kv::KvFailure> {
            self.inner.keys(plugin)
        }
        fn usage(&self, plugin: &str) -> Result<u64, vigil_core::kv::KvFailure> {
            self.inner.usage(plugin)
        }
    }

    /// The subscriber's process and a worker process, as two sinks over a
    /// real broker: the worker reads a vpc-attached learn against the
    /// subscriber's model (the endpoint sits on the vpc pseudo-node), which
    /// it only has through the stored model and the marker.
    /// A tracker of 2 workers over an in-memory history store.
    fn memory_tracker() -> (Arc<vigil_endpoints::store::MemoryStore>, Arc<Tracker>) {
        use vigil_endpoints::Settings;
        use vigil_endpoints::dispatch::DispatchConfig;
        use vigil_endpoints::store::MemoryStore;
        use vigil_endpoints::tracker::TrackerConfig;

        let store = Arc::new(MemoryStore::new());
        let tracker = Tracker::start(
            TrackerConfig::new(
                DispatchConfig {
                    workers: 2,
                    queue_capacity: 64,
                },
                Settings::default(),
            ),
            store.clone(),
        )
        .expect("tracker");
        (store, tracker)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_read_events_against_the_subscribers_fabric_model() {
        use vigil_endpoints::HistoryStore;

        let broker = vigil_tests::kafka_servers::Tansu::start().expect("tansu");
        let mut settings = KafkaSettings::new(broker.brokers(), "models");
        settings.partitions = 3;
        vigil_kafka::ensure_topics(&settings).await.expect("topics");
        let kv = Arc::new(CountingKv::default());
        let models = FabricModels::new(kv.clone());

        let (store, worker) = memory_tracker();
        let (stop, stop_rx) = watch::channel(false);
        let consumer = {
            let (settings, worker, models) = (settings.clone(), worker.clone(), models.clone());
            tokio::spawn(async move { consume_into(&settings, worker, models, stop_rx).await })
        };

        // The subscriber's side: no tracker of its own.
        let subscriber = KafkaEventSink::new(&settings, models.clone(), None).expect("sink");
        let mut fabric = Fabric::new("fab1", 16777199);
        fabric.add_node(101, 1, "leaf");
        fabric.add_node(102, 1, "leaf");
        fabric.add_vpc_pair(101, 102);
        fabric.add_port_channel(101, "po3", "vpc-pol", 7);
        subscriber
            .fabric(Arc::new(fabric.clone()))
            .await
            .expect("model");
        // Published again unchanged: not stored or announced again.
        subscriber
            .fabric(Arc::new(fabric.clone()))
            .await
            .expect("model");
        let parser = EpmParser::new("fab1", 16777199);
        let dn = "topology/pod-1/node-101/sys/ctx-[vxlan-2949120]/bd-[vxlan-15990734]/vlan-[vlan-101]/db-ep/mac-00:50:56:AD:BB:16";
        let payload = json!({"ts": 1765000000.5, "imdata": [{"epmMacEp": {"attributes": {
            "dn": dn, "status": "created", "flags": "local,vpc-attached", "ifId": "po3", "pcTag": "32771"}}}]})
        .to_string();
        let Some(Ok(ApicObject::Endpoint(ev))) = parser
            .parse_payload(&payload, 0.0)
            .expect("payload")
            .objects
            .into_iter()
            .next()
        else {
            panic!("not an endpoint");
        };
        let key = ev.key();
        subscriber.event(Source::Apic, ev).await.expect("event");
        assert!(subscriber.flush(Duration::from_secs(10)).await);

        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let record = loop {
            if let Some(record) = store.endpoint(&key).await.expect("endpoint") {
                break record;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the event never reached the worker"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let vpc = vigil_endpoints::fabric::vpc_node_id(101, 102).expect("vpc id");
        assert_eq!(record.events[0].node, vpc, "{record:?}");
        assert_eq!(worker.fabric_model("fab1").as_deref(), Some(&fabric));
        // What a worker that starts later loads first.
        let stored = models.load_all().await.expect("models");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].1, fabric);

        let _ = stop.send(true);
        let report = consumer.await.expect("join").expect("consumer");
        // Three markers (one per partition) and the event; the second,
        // unchanged publication sent nothing.
        assert_eq!(report.messages, 4, "{report:?}");
        // Three markers of one version: the model was read once (plus the
        // test's own `load_all`), not once per partition.
        assert_eq!(kv.gets(), 2);
        worker.shutdown().await.expect("shutdown");
    }

    /// Hostile messages on the topic (not JSON, deeply nested, oversized
    /// strings, wrong types, unknown fields, no payload, a NaN-ish ts) are
    /// each refused with its reason and committed past; the good events
    /// between them all reach the history.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_messages_are_refused_one_by_one_and_lose_nothing_else() {
        use vigil_endpoints::HistoryStore;

        let broker = vigil_tests::kafka_servers::Tansu::start().expect("tansu");
        let mut settings = KafkaSettings::new(broker.brokers(), "hostile");
        settings.partitions = 2;
        vigil_kafka::ensure_topics(&settings).await.expect("topics");
        let publisher = KafkaPublisher::new(&settings).expect("publisher");
        let good = |i: u32| {
            json!({"fabric": "fab1", "node": 101, "vnid": 15990734, "type": "mac",
                   "addr": format!("00:50:56:00:00:{i:02x}"), "status": "created",
                   "ts": 1765000000.0 + f64::from(i), "intf_id": "eth1/1"})
            .to_string()
        };
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let hostile: Vec<(Vec<u8>, &str)> = vec![
            (b"not json at all".to_vec(), "not_json"),
            (deep.into_bytes(), "not_json"),
            (
                json!({"fabric": "fab1", "node": 101, "vnid": 1, "type": "mac", "addr": "x".repeat(100_000), "status": "created", "ts": 1.0}).to_string().into_bytes(),
                "too_long",
            ),
            (json!({"fabric": 7}).to_string().into_bytes(), "wrong_type"),
            (
                json!({"fabric": "fab1", "node": 101, "vnid": 1, "type": "mac", "addr": "00:50:56:00:00:01", "status": "created", "ts": 1.0, "evil": true}).to_string().into_bytes(),
                "unknown_field",
            ),
            (
                json!({"fabric": "fab1", "node": 101, "vnid": 1, "type": "mac", "addr": "00:50:56:00:00:01", "status": "created", "ts": 1e300}).to_string().into_bytes(),
                "out_of_range",
            ),
        ];
        let mut expected_rejections: std::collections::BTreeMap<&str, u64> = Default::default();
        let mut sent_good = 0u32;
        for (i, (payload, reason)) in hostile.iter().enumerate() {
            let i = u32::try_from(i).expect("small");
            for partition in 0..2 {
                let g = good(i * 2 + u32::try_from(partition).expect("small"));
                publisher.publish_keyed(Topic::EndpointEvents, partition, b"k", g.as_bytes());
                sent_good += 1;
                publisher.publish_keyed(Topic::EndpointEvents, partition, b"k", payload);
                *expected_rejections.entry(reason).or_default() += 1;
            }
        }
        assert!(publisher.flush(Duration::from_secs(10)).await);

        let (store, worker) = memory_tracker();
        let models = FabricModels::new(Arc::new(vigil_core::kv::MemoryKv::default()));
        let (stop, stop_rx) = watch::channel(false);
        let consumer = {
            let (settings, worker) = (settings.clone(), worker.clone());
            tokio::spawn(async move { consume_into(&settings, worker, models, stop_rx).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let rejected: u64 = worker.stats().rejected.iter().map(|r| r.count).sum();
            let handled: u64 = worker.stats().workers.iter().map(|w| w.handled).sum();
            if rejected >= expected_rejections.values().sum::<u64>()
                && handled >= u64::from(sent_good)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{rejected} refused, {handled} handled: {:?}",
                worker.stats()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop.send(true);
        consumer.await.expect("join").expect("consumer");
        let stats = worker.stats();
        let by_reason: std::collections::BTreeMap<&str, u64> = stats
            .rejected
            .iter()
            .map(|r| {
                assert_eq!(r.source, Source::Kafka);
                assert!(
                    r.sample.len() <= MAX_SAMPLE_BYTES + 64,
                    "{}",
                    r.sample.len()
                );
                (r.reason, r.count)
            })
            .collect();
        assert_eq!(by_reason, expected_rejections);
        for i in 0..sent_good {
            let key = vigil_endpoints::model::EndpointKey {
                fabric: "fab1".into(),
                vnid: 15990734,
                addr: format!("00:50:56:00:00:{i:02X}"),
            };
            assert!(
                store.endpoint(&key).await.expect("read").is_some(),
                "{key} lost"
            );
        }
        worker.shutdown().await.expect("shutdown");
    }
}
