//! Where endpoint events enter the tracker: the one seam every source
//! (the APIC subscriber, the SNMP snapshot differ, pushed events over Kafka
//! or HTTP, a replay) writes to, and the tracker's worker side reads from.
//!
//! A source holds an `Arc<dyn EventSink>` and does three things with it:
//! publish the fabric model its events are read against
//! ([`EventSink::fabric`]; replaced whole, fabric objects are rare), hand
//! over events in the order it received them ([`EventSink::event`], which
//! waits while the worker queues are full, so a fast source slows down
//! instead of growing memory), and report what it refused
//! ([`EventSink::rejected`], counted by source and reason, with a sample).
//! The sink decides where events go: the in-process dispatcher, or the
//! Kafka topic `<site>-endpoint-events` partitioned by endpoint key when
//! workers run as separate processes.
//!
//! [`CollectingSink`] keeps everything in memory, for tests and for tools
//! that only want the events.

use crate::fabric::Fabric;
use crate::model::EpmEvent;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Where an event came from (a label on every counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An APIC subscriber (class queries and websocket notifications).
    Apic,
    /// Successive SNMP snapshots of a device's ARP/neighbour and bridge
    /// forwarding tables.
    Snmp,
    /// The Kafka topic `<site>-endpoint-events`.
    Kafka,
    /// `POST /api/v1/endpoints/events`.
    Http,
    /// A recorded fabric replayed from a file.
    Replay,
}

impl Source {
    /// Every source, in label order.
    pub const ALL: [Source; 5] = [
        Source::Apic,
        Source::Snmp,
        Source::Kafka,
        Source::Http,
        Source::Replay,
    ];

    /// The label value (`source="apic"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Apic => "apic",
            Source::Snmp => "snmp",
            Source::Kafka => "kafka",
            Source::Http => "http",
            Source::Replay => "replay",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscriber's state, per fabric (`vigil status`, `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubscriberState {
    /// Logging in, subscribing and running the class queries.
    Building,
    /// Built and applying notifications as they arrive.
    InSync,
    /// The session or websocket was lost; waiting to log in and rebuild.
    Reconnecting,
    /// Stopped (shutdown, or a configuration the subscriber cannot use).
    Stopped,
}

impl SubscriberState {
    /// The label value (`state="in_sync"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriberState::Building => "building",
            SubscriberState::InSync => "in_sync",
            SubscriberState::Reconnecting => "reconnecting",
            SubscriberState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for SubscriberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sink's side is gone (the tracker is shutting down); the source
/// should stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the endpoint tracker is not accepting events (shutting down)")]
pub struct SinkClosed;

/// Where a source writes (see the module docs).
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    /// Publish (or replace) the model of `fabric.name` that later events of
    /// that fabric are read against.
    async fn fabric(&self, fabric: Arc<Fabric>) -> Result<(), SinkClosed>;

    /// One event, in the order the source received it; waits while the
    /// worker that owns the event's endpoint has a full queue.
    async fn event(&self, source: Source, event: EpmEvent) -> Result<(), SinkClosed>;

    /// An input the source refused: counted by (source, reason); `sample`
    /// (already bounded by the source) is kept as the latest example and
    /// logged at a limited rate.
    fn rejected(&self, source: Source, reason: &'static str, sample: &str);

    /// A subscriber's state changed.
    fn subscriber_state(&self, fabric: &str, state: SubscriberState);
}

#[async_trait::async_trait]
impl<T: EventSink + ?Sized> EventSink for Arc<T> {
    async fn fabric(&self, fabric: Arc<Fabric>) -> Result<(), SinkClosed> {
        (**self).fabric(fabric).await
    }

    async fn event(&self, source: Source, event: EpmEvent) -> Result<(), SinkClosed> {
        (**self).event(source, event).await
    }

    fn rejected(&self, source: Source, reason: &'static str, sample: &str) {
        (**self).rejected(source, reason, sample)
    }

    fn subscriber_state(&self, fabric: &str, state: SubscriberState) {
        (**self).subscriber_state(fabric, state)
    }
}

/// Everything a [`CollectingSink`] was given.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    /// Fabric models as published, in order.
    pub fabrics: Vec<Arc<Fabric>>,
    /// Events in arrival order.
    pub events: Vec<(Source, EpmEvent)>,
    /// Rejections by (source, reason): count and the latest sample.
    pub rejected: BTreeMap<(Source, &'static str), (u64, String)>,
    /// Subscriber states in order, per fabric.
    pub states: Vec<(String, SubscriberState)>,
}

/// An [`EventSink`] that keeps everything (tests, tools).
#[derive(Debug, Default)]
pub struct CollectingSink {
    inner: Mutex<Collected>,
}

impl CollectingSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of everything so far.
    pub fn collected(&self) -> Collected {
        self.lock().clone()
    }

    /// Take the events so far, leaving the rest.
    pub fn take_events(&self) -> Vec<(Source, EpmEvent)> {
        std::mem::take(&mut self.lock().events)
    }
}

#[async_trait::async_trait]
impl EventSink for CollectingSink {
    async fn fabric(&self, fabric: Arc<Fabric>) -> Result<(), SinkClosed> {
        self.lock().fabrics.push(fabric);
        Ok(())
    }

    async fn event(&self, source: Source, event: EpmEvent) -> Result<(), SinkClosed> {
        self.lock().events.push((source, event));
        Ok(())
    }

    fn rejected(&self, source: Source, reason: &'static str, sample: &str) {
        let mut inner = self.lock();
        let entry = inner
            .rejected
            .entry((source, reason))
            .or_insert((0, String::new()));
        entry.0 += 1;
        sample.clone_into(&mut entry.1);
    }

    fn subscriber_state(&self, fabric: &str, state: SubscriberState) {
        self.lock().states.push((fabric.to_owned(), state));
    }
}
