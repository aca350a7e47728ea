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
//! Fabric models do not travel over the topic: a worker process reads
//! events against the models published in it (for pushed and SNMP events,
//! the empty model; an APIC subscriber's model reaches workers of its own
//! process only, see the README).

use std::sync::Arc;
use std::time::Duration;

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

/// Writes endpoint events to `<site>-endpoint-events` (module docs).
pub struct KafkaEventSink {
    publisher: Arc<KafkaPublisher>,
    partitions: i32,
    /// This process's tracker, if it runs one: it gets the fabric models
    /// and the subscriber states (its workers read events against them).
    local: Option<Arc<Tracker>>,
}

impl KafkaEventSink {
    pub fn new(settings: &KafkaSettings, local: Option<Arc<Tracker>>) -> anyhow::Result<Self> {
        Ok(KafkaEventSink {
            publisher: Arc::new(KafkaPublisher::new(settings)?),
            partitions: settings.partitions,
            local,
        })
    }

    /// Wait until what was produced is acknowledged (or `timeout`).
    pub async fn flush(&self, timeout: Duration) -> bool {
        self.publisher.flush(timeout).await
    }
}

#[async_trait::async_trait]
impl EventSink for KafkaEventSink {
    async fn fabric(&self, fabric: Arc<Fabric>) -> Result<(), SinkClosed> {
        match &self.local {
            Some(local) => local.fabric(fabric).await,
            None => Ok(()),
        }
    }

    async fn event(&self, _source: Source, event: EpmEvent) -> Result<(), SinkClosed> {
        let key = message_key(&event);
        let partition = partition_of(&event, self.partitions);
        let payload = to_pushed(&event).to_string();
        loop {
            let report = self.publisher.publish_keyed(
                Topic::EndpointEvents,
                partition,
                key.as_bytes(),
                payload.as_bytes(),
            );
            if report.dropped_buffer_full == 0 {
                return Ok(());
            }
            tokio::time::sleep(FULL_BUFFER_WAIT).await;
        }
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
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ConsumeReport> {
    let group = worker_group(&settings.site);
    vigil_kafka::consume_decoded(
        settings,
        &group,
        Topic::EndpointEvents,
        BATCH_MAX,
        RawMessages,
        |batch: Vec<vigil_kafka::Received>| {
            let tracker = tracker.clone();
            async move {
                for message in batch {
                    let Some(payload) = message.payload.as_deref() else {
                        tracker.rejected(Source::Kafka, "empty", "");
                        continue;
                    };
                    let parsed = serde_json::from_slice::<Value>(payload)
                        .map_err(|e| ("not_json", e.to_string()))
                        .and_then(|value| {
                            vigil_endpoints::pushed::parse_event(&value)
                                .map_err(|e| (e.code, e.to_string()))
                        });
                    match parsed {
                        Ok(ev) => tracker
                            .event(Source::Kafka, ev)
                            .await
                            .map_err(anyhow::Error::from)?,
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
                // Commit only what is in the history store.
                tracker.barrier().await.map_err(anyhow::Error::from)
            }
        },
        stop,
    )
    .await
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
}
