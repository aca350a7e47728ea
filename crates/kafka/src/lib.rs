//! Kafka, the networked bus (the `rdkafka` crate over a bundled librdkafka).
//!
//! # Topics, keys and partitions
//!
//! Topics are per site, as in Panoptes ([`KafkaSettings::topic`]):
//! `<site>-resources`, `<site>-metrics` (raw groups), `<site>-processed`
//! (after transforms), `<site>-events` and `<site>-findings`. Payloads are
//! Panoptes JSON, made by [`vigil_core::panoptes`] (the encoder every
//! JSON output uses): a metrics group per message on the metrics topics, a
//! resource per message on the resources topic.
//!
//! A metrics message's key is Panoptes' `class:subclass:type` of its
//! resource ([`metrics_key`]). Its partition is chosen explicitly from the
//! series, as Panoptes' partitioning key did: an FNV-1a hash of the resource
//! id, the group type and the dimension (name, value) pairs (sorted), modulo
//! [`KafkaSettings::partitions`] ([`series_partition`]). So every group of
//! one series lands on one partition and stays in order, whatever its key.
//! Resources are keyed by resource id and partitioned by librdkafka's
//! partitioner on that key.
//!
//! # The producing plugin, in a header
//!
//! A metrics message published from a run ([`KafkaPublisher::publish_batch`],
//! what [`run_publisher`] uses) carries one header, `vigil-plugin`: the
//! name of the plugin that produced the group (UTF-8, at most
//! [`MAX_PLUGIN_NAME`] bytes). The value stays Panoptes JSON, byte for
//! byte, so consumers that ignore headers read the same messages as
//! before; a consumer reading a message without the header (an older
//! agent, another producer) attributes it to [`UNKNOWN_PLUGIN`]
//! ([`consume_batches`]). The sinks use it to budget series per plugin.
//!
//! # Delivery: at least once, never blocking, with a bound
//!
//! [`KafkaPublisher`] wraps an idempotent librdkafka producer
//! (`enable.idempotence=true`, `acks=all`, lz4): librdkafka retries by
//! itself without duplicating or reordering within a partition.
//! [`KafkaPublisher::publish_metrics`] only appends to librdkafka's local
//! queue and returns; it never waits for the broker. Outcomes arrive later
//! as delivery reports and are counted ([`PublisherStats`]).
//!
//! **The bound.** While the broker is unreachable, messages wait in memory,
//! and none is lost as long as both hold:
//!
//! * the outage is shorter than [`KafkaSettings::message_timeout`]
//!   (`message.timeout.ms`, 15 minutes by default): a message still
//!   undelivered that long after it was published fails and is counted in
//!   [`PublisherStats::failed`];
//! * at most [`KafkaSettings::buffer_messages`] messages are waiting
//!   (`queue.buffering.max.messages`, 100,000 by default, and at most
//!   1 GiB of payload, `queue.buffering.max.kbytes`): beyond that, new
//!   groups are dropped at once, never blocking the caller, and counted in
//!   [`PublisherStats::dropped_buffer_full`] (with reason `buffer_full` in
//!   the log). What was already buffered is kept.
//!
//! So a site publishing `r` groups a second rides out an outage of
//! `min(message_timeout, buffer_messages / r)`: 100,000 groups last 100 s at
//! 1,000 groups/s; at 100 groups/s they would last 1,000 s, so the
//! 15 minutes apply.
//! Memory is about `buffer_messages` × the mean encoded group (often
//! 0.5–2 KB: 50–200 MB at the default). Nothing survives a crash or kill of
//! the publishing process: the buffer is memory only.
//!
//! A broker that comes back *empty* (its storage lost, as tansu's memory
//! storage on restart) knows neither the topics nor the producer's id. The
//! publisher's upkeep thread notices (the topics are missing from the
//! metadata, librdkafka reports "unknown topic", or the idempotent
//! producer's epoch keeps being bumped without a delivery, which is how
//! librdkafka meets "unknown producer id"), creates the topics again
//! (admin API) and replaces the producer: the old one's messages are taken
//! back in order (purged; their delivery reports park them), new groups
//! queue behind them, and a new producer (new producer id) sends them all.
//! Order per series holds. Messages that were in flight at that moment may
//! have been written already and arrive twice (at least once). Parked
//! messages count against the same bound and the same timeout.
//!
//! # Consuming
//!
//! [`consume`] reads a topic in a consumer group (`vigil consume --sink X`
//! runs one per process; partitions are shared among the group's members),
//! hands batches to a sink, and commits the offsets of a batch only after
//! the sink accepted it: a sink that fails gets the same batch again (with
//! backoff), and a consumer that stops or dies leaves the uncommitted
//! messages to the next member. Delivery is at least once: a batch accepted
//! but not yet committed when a consumer dies is seen again. A sink that
//! refuses for longer than `max.poll.interval.ms` (5 minutes) costs the
//! member its partitions; the commit after it recovers then fails (counted)
//! and the batch goes to the partitions' new owner.
//!
//! Against tansu 0.6.0 (the tests' broker) two things differ from Kafka:
//! a fetch that starts inside a record batch (a member resuming from a
//! committed offset) skips the rest of that batch, a tansu bug fixed after
//! 0.6.0; and a fetch waits at least half of `fetch.wait.max.ms` even when
//! data is there, so consumers set it to 100 ms.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::StreamConsumer;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use vigil_core::batch::{Batch, MAX_PLUGIN_NAME, PluginName, UNKNOWN_PLUGIN};
use vigil_core::model::{MetricsGroup, Resource};
pub use vigil_core::panoptes::decode_metrics_group;
use vigil_core::panoptes::{encode_metrics_group, encode_resource};

/// The header naming a metrics message's producing plugin.
pub const PLUGIN_HEADER: &str = "vigil-plugin";

/// The producing plugin a message's headers name: the first
/// [`PLUGIN_HEADER`], if it is UTF-8 of at most [`MAX_PLUGIN_NAME`] bytes.
pub fn plugin_header<H: Headers>(headers: Option<&H>) -> Option<PluginName> {
    headers?
        .iter()
        .find(|header| header.key == PLUGIN_HEADER)
        .and_then(|header| header.value)
        .filter(|value| value.len() <= MAX_PLUGIN_NAME)
        .and_then(|value| std::str::from_utf8(value).ok())
        .map(PluginName::from)
}

/// One header, `vigil-plugin: <plugin>`.
fn plugin_headers(plugin: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header {
        key: PLUGIN_HEADER,
        value: Some(plugin.as_bytes()),
    })
}

/// Partitions of each topic [`ensure_topics`] creates, by default.
pub const DEFAULT_PARTITIONS: i32 = 3;
/// Messages the producer buffers while the broker is away, by default.
pub const DEFAULT_BUFFER_MESSAGES: usize = 100_000;
/// How long an undelivered message is kept and retried, by default.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Payload bytes the producer buffers at most (`queue.buffering.max.kbytes`).
pub const BUFFER_KBYTES: usize = 1024 * 1024;
/// Replication factor of created topics: the broker's default
/// (`default.replication.factor`).
const REPLICATION: i32 = -1;
/// How long an admin request (creating topics) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a metadata request of the publisher's upkeep may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// With messages outstanding and no delivery for this long, the upkeep
/// checks that the topics still exist.
const STALL: Duration = Duration::from_secs(2);
/// How often the upkeep looks at the producer.
const UPKEEP_TICK: Duration = Duration::from_millis(50);
/// Epoch bumps without a delivery after which the idempotent producer is
/// taken to be unknown to the broker (see `DeliveryContext::stats_raw`).
const EPOCH_CHURN: i64 = 3;
/// Parked messages resent while holding the lock, at most.
const RESEND_CHUNK: usize = 1_000;
/// How long [`run_publisher`] waits for outstanding messages at the end.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`consume`] waits for more messages once a batch has begun.
const BATCH_LINGER: Duration = Duration::from_millis(100);
/// First and longest wait before a rejected batch is offered again.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));
/// At most one warning about the same recurring condition this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The kinds of topics of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `<site>-resources`: discovered resources.
    Resources,
    /// `<site>-metrics`: raw metrics groups, as plugins returned them.
    Metrics,
    /// `<site>-processed`: metrics groups after transforms (rates).
    Processed,
    /// `<site>-events`: device events (CloudVision, syslog).
    Events,
    /// `<site>-findings`: findings of analysis plugins.
    Findings,
    /// `<site>-endpoint-events`: endpoint events (JSON, one per message,
    /// keyed by endpoint so one endpoint's events stay in one partition,
    /// in order).
    EndpointEvents,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::Resources,
        Topic::Metrics,
        Topic::Processed,
        Topic::Events,
        Topic::Findings,
        Topic::EndpointEvents,
    ];

    /// The part of the topic name after `<site>-`.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Resources => "resources",
            Topic::Metrics => "metrics",
            Topic::Processed => "processed",
            Topic::Events => "events",
            Topic::Findings => "findings",
            Topic::EndpointEvents => "endpoint-events",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where the bus is and how the producer buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The site: topic names are `<site>-<kind>`.
    pub site: String,
    /// Partitions per topic: what [`ensure_topics`] creates and what series
    /// are spread over ([`series_partition`]). Topics must have at least
    /// this many.
    pub partitions: i32,
    /// Messages buffered at most while the broker is slow or away
    /// (`queue.buffering.max.messages`); see the module's bound.
    pub buffer_messages: usize,
    /// `client.id` (consumers add their group).
    pub client_id: String,
    /// How long an undelivered message is kept and retried
    /// (`message.timeout.ms`); see the module's bound.
    pub message_timeout: Duration,
}

impl KafkaSettings {
    /// Settings for `site` on `brokers` with the defaults: 3 partitions,
    /// 100,000 buffered messages, 15 minutes' message timeout, client id
    /// `vigil`.
    pub fn new(brokers: impl Into<String>, site: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.into(),
            site: site.into(),
            partitions: DEFAULT_PARTITIONS,
            buffer_messages: DEFAULT_BUFFER_MESSAGES,
            client_id: "vigil".to_owned(),
            message_timeout: DEFAULT_MESSAGE_TIMEOUT,
        }
    }

    /// The topic of kind `kind`: `<site>-resources`, `<site>-metrics`,
    /// `<site>-processed`, `<site>-events` or `<site>-findings`.
    pub fn topic(&self, kind: Topic) -> String {
        format!("{}-{}", self.site, kind.suffix())
    }

    /// Checks what librdkafka or Kafka would reject later, less clearly.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.brokers.trim().is_empty(), "kafka: no brokers given");
        ensure!(
            !self.site.is_empty()
                && self
                    .site
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "kafka: site {:?} cannot name a topic (ASCII letters, digits, '.', '_' and '-' only)",
            self.site
        );
        let longest = self
            .topic(Topic::Processed)
            .len()
            .max(self.topic(Topic::Resources).len());
        ensure!(
            longest <= 249,
            "kafka: site {:?} makes topic names longer than Kafka's 249 characters",
            self.site
        );
        ensure!(
            self.partitions >= 1,
            "kafka: partitions must be at least 1 (got {})",
            self.partitions
        );
        ensure!(
            (1..=i32::MAX as usize).contains(&self.buffer_messages),
            "kafka: buffer_messages must be between 1 and {} (got {})",
            i32::MAX,
            self.buffer_messages
        );
        ensure!(
            (Duration::from_millis(1)..=Duration::from_millis(i32::MAX as u64))
                .contains(&self.message_timeout),
            "kafka: message_timeout must be between 1 ms and {} ms (got {:?})",
            i32::MAX,
            self.message_timeout
        );
        Ok(())
    }

    fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            // Back quickly after an outage (the default backs off to 10 s).
            .set("reconnect.backoff.max.ms", "1000")
            .set_log_level(RDKafkaLogLevel::Info);
        config
    }

    fn topic_names(&self) -> [String; Topic::ALL.len()] {
        Topic::ALL.map(|t| self.topic(t))
    }
}

/// Panoptes' key of a metrics message: `class:subclass:type` of the group's
/// resource.
pub fn metrics_key(group: &MetricsGroup) -> String {
    let r = &group.resource;
    format!("{}:{}:{}", r.class, r.subclass, r.type_)
}

/// The partition of `group`'s series among `partitions`: FNV-1a (64-bit) of
/// the resource id, the group type and the dimension (name, value) pairs
/// sorted, modulo `partitions`. Stable across processes, machines and versions.
pub fn series_partition(group: &MetricsGroup, partitions: i32) -> i32 {
    let mut dimensions: Vec<(&str, &str)> = group
        .dimensions
        .iter()
        .map(|d| (d.name.as_str(), d.value.as_str()))
        .collect();
    dimensions.sort_unstable();
    // 0xfe and 0xff never occur in UTF-8, so fields cannot run into each
    // other: 0xff separates fields and pairs, 0xfe a name from its value.
    let mut hash = Fnv1a::new();
    hash.write(group.resource.id.as_bytes());
    hash.write(&[0xff]);
    hash.write(group.group_type.as_bytes());
    for (name, value) in dimensions {
        hash.write(&[0xff]);
        hash.write(name.as_bytes());
        hash.write(&[0xfe]);
        hash.write(value.as_bytes());
    }
    (hash.finish() % u64::from(partitions.max(1).unsigned_abs())) as i32
}

/// FNV-1a, 64-bit.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Creates the site's five topics with [`KafkaSettings::partitions`]
/// partitions each (the broker's default replication); topics that already
/// exist are left as they are.
pub async fn ensure_topics(settings: &KafkaSettings) -> anyhow::Result<()> {
    settings.validate()?;
    let admin: AdminClient<LogContext> = settings
        .client_config(&format!("{}-admin", settings.client_id))
        .create_with_context(LogContext)
        .context("kafka: creating an admin client")?;
    create_topics(&admin, settings, &settings.topic_names()).await
}

async fn create_topics(
    admin: &AdminClient<LogContext>,
    settings: &KafkaSettings,
    names: &[String],
) -> anyhow::Result<()> {
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(REPLICATION),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let results = tokio::time::timeout(
        ADMIN_TIMEOUT + Duration::from_secs(5),
        admin.create_topics(&topics, &options),
    )
    .await
    .with_context(|| format!("kafka: creating topics on {} timed out", settings.brokers))?
    .with_context(|| format!("kafka: creating topics on {}", settings.brokers))?;
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => errors.push(format!("{name}: {code}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "kafka: creating topics on {} failed: {}",
            settings.brokers,
            errors.join("; ")
        );
    }
    Ok(())
}

/// What one publish call did with its groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Accepted: buffered for delivery (their fate arrives as delivery
    /// reports, see [`PublisherStats`]).
    pub enqueued: usize,
    /// Refused because the buffer was full (reason `buffer_full`).
    pub dropped_buffer_full: usize,
    /// Refused for another reason (logged): say, a partition the topic
    /// does not have.
    pub failed: usize,
}

/// The publisher's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Messages accepted for delivery.
    pub enqueued: u64,
    /// Messages the broker acknowledged (`acks=all`).
    pub delivered: u64,
    /// Accepted messages given up on (timed out, refused by the broker) or
    /// refused at once for a reason other than a full buffer.
    pub failed: u64,
    /// Messages refused because the buffer was full.
    pub dropped_buffer_full: u64,
    /// Messages sent again: their topic had to be created anew, or the
    /// producer was replaced.
    pub resent: u64,
    /// Times the producer was replaced because the broker had lost its
    /// state (topics, producer ids).
    pub producer_resets: u64,
    /// Accepted messages neither delivered nor failed yet.
    pub pending: u64,
}

/// Counters and the parking lot, shared by the publisher, librdkafka's
/// delivery callback and the upkeep thread.
struct Shared {
    epoch: Instant,
    message_timeout: Duration,
    enqueued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Of `failed`, those refused at once (never accepted).
    refused: AtomicU64,
    dropped_buffer_full: AtomicU64,
    resent: AtomicU64,
    producer_resets: AtomicU64,
    lot: Mutex<Lot>,
    /// Whether new messages must go to the lot (it holds messages, or the
    /// producer is being replaced): the lock-free fast path's test.
    detour: AtomicBool,
    /// Messages in the lot.
    lot_len: AtomicUsize,
    /// A report or a send said a topic is missing.
    topics_missing: AtomicBool,
    /// The producer cannot deliver although the broker is there (its
    /// producer id is unknown to the broker, or it hit a fatal error).
    producer_stuck: AtomicBool,
    /// When the last delivery succeeded (ms since `epoch`).
    last_delivery_ms: AtomicU64,
    stop: AtomicBool,
    failure_warning: Throttle,
    full_warning: Throttle,
}

/// Messages waiting to be sent (again), in order.
#[derive(Default)]
struct Lot {
    /// Waiting for their topic, or taken back from a replaced producer.
    parked: VecDeque<Parked>,
    /// Published while the producer was being replaced; they go after
    /// everything parked.
    held: VecDeque<Parked>,
    /// The producer is being replaced.
    hold: bool,
}

impl Shared {
    fn new(settings: &KafkaSettings) -> Shared {
        Shared {
            epoch: Instant::now(),
            message_timeout: settings.message_timeout,
            enqueued: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dropped_buffer_full: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            producer_resets: AtomicU64::new(0),
            lot: Mutex::new(Lot::default()),
            detour: AtomicBool::new(false),
            lot_len: AtomicUsize::new(0),
            topics_missing: AtomicBool::new(false),
            producer_stuck: AtomicBool::new(false),
            last_delivery_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            failure_warning: Throttle::new(),
            full_warning: Throttle::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Accepted messages neither delivered nor failed yet.
    fn pending(&self) -> u64 {
        // `failed` also counts messages refused at once (`refused`), which
        // were never accepted; `refused` is raised before `failed`.
        let failed = self.failed.load(Ordering::SeqCst);
        let refused = self.refused.load(Ordering::SeqCst);
        let settled = self.delivered.load(Ordering::SeqCst) + failed.saturating_sub(refused);
        self.enqueued.load(Ordering::SeqCst).saturating_sub(settled)
    }

    fn lock_lot(&self) -> std::sync::MutexGuard<'_, Lot> {
        self.lot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Call with the lot locked, after changing it.
    fn lot_changed(&self, lot: &Lot) {
        self.lot_len
            .store(lot.parked.len() + lot.held.len(), Ordering::SeqCst);
        self.detour
            .store(lot.hold || !lot.parked.is_empty(), Ordering::SeqCst);
    }

    fn park(&self, parked: Parked) {
        let mut lot = self.lock_lot();
        lot.parked.push_back(parked);
        self.lot_changed(&lot);
    }

    fn fail(&self, count: u64, what: &str, error: &dyn std::fmt::Display) {
        let total = self.failed.fetch_add(count, Ordering::SeqCst) + count;
        if self.failure_warning.ready(self.now_ms()) {
            tracing::warn!(failed_total = total, "kafka: {what}: {error}");
        }
    }
}

/// A message to publish.
struct Outgoing<'a> {
    partition: Option<i32>,
    key: &'a [u8],
    payload: &'a [u8],
    /// Its producing plugin, for the [`PLUGIN_HEADER`] header.
    plugin: Option<&'a str>,
}

/// A message waiting to be sent (again).
struct Parked {
    topic: String,
    partition: Option<i32>,
    key: Vec<u8>,
    payload: Vec<u8>,
    /// The `vigil-plugin` header's value, if it had one.
    plugin: Option<PluginName>,
    /// When it was first published (ms since the publisher's epoch).
    first_ms: usize,
}

/// Lets something through at most once per [`WARN_EVERY`].
struct Throttle(AtomicU64);

impl Throttle {
    fn new() -> Throttle {
        Throttle(AtomicU64::new(u64::MAX))
    }

    fn ready(&self, now_ms: u64) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        let due = last == u64::MAX || now_ms.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        due && self
            .0
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

fn is_missing_topic(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

/// Routes librdkafka's log and errors to `tracing`; logs rebalances.
#[derive(Clone, Copy)]
struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "kafka: {error}: {reason}");
    }
}

impl ConsumerContext for LogContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let list: Vec<String> = partitions
                    .elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect();
                tracing::info!(partitions = %list.join(","), "kafka: partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(count = partitions.count(), "kafka: partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!("kafka: rebalance failed: {error}"),
        }
    }
}

fn log_librdkafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", "{fac}: {message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{fac}: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
    }
}

/// The producer's context: counts delivery reports, parks messages whose
/// topic went missing (or that a purge took back), and watches the
/// idempotent producer's epoch for a broker that lost its producer ids.
struct DeliveryContext {
    shared: Arc<Shared>,
    /// The producer epoch when deliveries last progressed (`i64::MIN`:
    /// not seen yet).
    epoch_baseline: AtomicI64,
    /// `shared.delivered` at the last statistics.
    delivered_seen: AtomicU64,
}

/// The part of librdkafka's statistics the context reads.
#[derive(serde::Deserialize)]
struct ProducerStatistics {
    eos: Option<EosStatistics>,
}

#[derive(serde::Deserialize)]
struct EosStatistics {
    producer_epoch: i64,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(target: "librdkafka", "kafka producer: fatal error, replacing the producer: {reason}");
            self.shared.producer_stuck.store(true, Ordering::SeqCst);
        } else {
            tracing::warn!(target: "librdkafka", "kafka producer: {error}: {reason}");
        }
    }

    /// A broker that lost its state (say, restarted empty) answers "unknown
    /// producer id"; librdkafka then bumps its epoch and retries, forever.
    /// Several bumps without a delivery mean the producer must be replaced
    /// (the upkeep does it).
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(statistics) = serde_json::from_slice::<ProducerStatistics>(statistics) else {
            return;
        };
        let Some(epoch) = statistics.eos.map(|e| e.producer_epoch).filter(|e| *e >= 0) else {
            return;
        };
        let delivered = self.shared.delivered.load(Ordering::SeqCst);
        let progressed = self.delivered_seen.swap(delivered, Ordering::SeqCst) != delivered;
        let baseline = self.epoch_baseline.load(Ordering::SeqCst);
        if baseline == i64::MIN || progressed || self.shared.pending() == 0 {
            self.epoch_baseline.store(epoch, Ordering::SeqCst);
        } else if epoch - baseline >= EPOCH_CHURN {
            self.shared.producer_stuck.store(true, Ordering::SeqCst);
        }
    }
}

impl ProducerContext for DeliveryContext {
    /// When the message was first published, in ms since the publisher's
    /// epoch (kept when it is resent, so the timeout covers its whole life).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, first_ms: usize) {
        let shared = &self.shared;
        match result {
            Ok(_) => {
                shared.delivered.fetch_add(1, Ordering::SeqCst);
                shared
                    .last_delivery_ms
                    .store(shared.now_ms(), Ordering::Relaxed);
            }
            Err((error, message)) => {
                let age = Duration::from_millis(shared.now_ms().saturating_sub(first_ms as u64));
                let code = error.rdkafka_error_code();
                let missing = is_missing_topic(code);
                let purged = matches!(
                    code,
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                );
                if (missing || purged) && age < shared.message_timeout {
                    if missing {
                        shared.topics_missing.store(true, Ordering::SeqCst);
                    }
                    shared.park(Parked {
                        topic: message.topic().to_owned(),
                        partition: Some(message.partition()).filter(|p| *p >= 0),
                        key: message.key().unwrap_or_default().to_vec(),
                        payload: message.payload().unwrap_or_default().to_vec(),
                        plugin: plugin_header(message.headers()),
                        first_ms,
                    });
                } else {
                    shared.fail(1, &format!("delivery to {} failed", message.topic()), error);
                }
            }
        }
    }
}

type KafkaProducer = ThreadedProducer<DeliveryContext>;

/// The producer (idempotent, `acks=all`, lz4, the settings' buffer and
/// timeout), reporting to `shared`.
fn create_producer(
    settings: &KafkaSettings,
    shared: &Arc<Shared>,
) -> anyhow::Result<KafkaProducer> {
    let mut config = settings.client_config(&settings.client_id);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "queue.buffering.max.messages",
            settings.buffer_messages.to_string(),
        )
        .set("queue.buffering.max.kbytes", BUFFER_KBYTES.to_string())
        .set(
            "message.timeout.ms",
            settings.message_timeout.as_millis().to_string(),
        )
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // For the epoch watch (see `DeliveryContext::stats_raw`).
        .set("statistics.interval.ms", "1000");
    config
        .create_with_context(DeliveryContext {
            shared: shared.clone(),
            epoch_baseline: AtomicI64::new(i64::MIN),
            delivered_seen: AtomicU64::new(0),
        })
        .context("kafka: creating the producer")
}

/// The current producer; replaced by the upkeep when the broker lost its
/// state.
type ProducerSlot = Arc<RwLock<KafkaProducer>>;

fn read_producer(slot: &ProducerSlot) -> std::sync::RwLockReadGuard<'_, KafkaProducer> {
    slot.read().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes metrics groups and resources to a site's topics without ever
/// waiting for the broker (see the module documentation for the delivery
/// guarantee and its bound). Share it in an `Arc`; dropping it discards
/// what is still buffered, so [`flush`](KafkaPublisher::flush) first.
pub struct KafkaPublisher {
    producer: ProducerSlot,
    shared: Arc<Shared>,
    settings: KafkaSettings,
    topics: [String; Topic::ALL.len()],
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// Creates the producer (idempotent, `acks=all`, lz4, the settings'
    /// buffer and timeout) and its upkeep thread. Connects lazily: a broker
    /// that is down now is not an error.
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<KafkaPublisher> {
        settings.validate()?;
        let shared = Arc::new(Shared::new(settings));
        let producer: ProducerSlot = Arc::new(RwLock::new(create_producer(settings, &shared)?));
        {
            // Detached: it ends when `stop` is set (see `Drop`).
            let producer = producer.clone();
            let shared = shared.clone();
            let settings = settings.clone();
            std::thread::Builder::new()
                .name("vigil-kafka-upkeep".to_owned())
                .spawn(move || upkeep(&producer, &shared, &settings))
                .context("kafka: starting the producer's upkeep thread")?;
        }
        Ok(KafkaPublisher {
            producer,
            shared,
            settings: settings.clone(),
            topics: settings.topic_names(),
        })
    }

    /// The settings the publisher was made with.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// Buffers each group for `topic` (normally [`Topic::Metrics`] or
    /// [`Topic::Processed`]) as Panoptes JSON, keyed `class:subclass:type`,
    /// on its series' partition. Never blocks: when the buffer is full the
    /// group is dropped and counted (`buffer_full`).
    pub fn publish_metrics(&self, topic: Topic, groups: &[MetricsGroup]) -> PublishReport {
        self.publish_groups(topic, groups.iter().map(|group| (None, group)))
    }

    /// [`publish_metrics`](KafkaPublisher::publish_metrics), each message
    /// with its producing plugin in a [`PLUGIN_HEADER`] header (left out
    /// for [`UNKNOWN_PLUGIN`]).
    pub fn publish_batch(&self, topic: Topic, batch: &Batch) -> PublishReport {
        self.publish_groups(
            topic,
            batch.iter().map(|(plugin, group)| {
                let plugin = Some(&**plugin).filter(|p| *p != UNKNOWN_PLUGIN);
                (plugin, group)
            }),
        )
    }

    fn publish_groups<'a>(
        &self,
        topic: Topic,
        groups: impl Iterator<Item = (Option<&'a str>, &'a MetricsGroup)>,
    ) -> PublishReport {
        let mut report = PublishReport::default();
        let name = &self.topics[topic.index()];
        let now = self.shared.now_ms() as usize;
        for (plugin, group) in groups {
            let payload = encode_metrics_group(group);
            let key = metrics_key(group);
            let partition = series_partition(group, self.settings.partitions);
            let message = Outgoing {
                partition: Some(partition),
                key: key.as_bytes(),
                payload: &payload,
                plugin,
            };
            self.enqueue(name, message, now, &mut report);
        }
        self.warn_if_full(&report);
        report
    }

    /// Buffers one message for `topic` in `partition` (the caller's
    /// choice, so every producer of a site puts one key in the same
    /// partition), keyed by `key`. Never blocks, like
    /// [`publish_metrics`](KafkaPublisher::publish_metrics); a full buffer
    /// drops the message and says so in the report.
    pub fn publish_keyed(
        &self,
        topic: Topic,
        partition: i32,
        key: &[u8],
        payload: &[u8],
    ) -> PublishReport {
        let mut report = PublishReport::default();
        let name = &self.topics[topic.index()];
        let now = self.shared.now_ms() as usize;
        let message = Outgoing {
            partition: Some(partition.rem_euclid(self.settings.partitions.max(1))),
            key,
            payload,
            plugin: None,
        };
        self.enqueue(name, message, now, &mut report);
        self.warn_if_full(&report);
        report
    }

    /// Buffers each resource for `<site>-resources` as Panoptes resource
    /// JSON, keyed by resource id. Never blocks, like
    /// [`publish_metrics`](KafkaPublisher::publish_metrics).
    pub fn publish_resources(&self, resources: &[Resource]) -> PublishReport {
        let mut report = PublishReport::default();
        let name = &self.topics[Topic::Resources.index()];
        let now = self.shared.now_ms() as usize;
        for resource in resources {
            let payload = encode_resource(resource);
            let message = Outgoing {
                partition: None,
                key: resource.id.as_bytes(),
                payload: &payload,
                plugin: None,
            };
            self.enqueue(name, message, now, &mut report);
        }
        self.warn_if_full(&report);
        report
    }

    fn warn_if_full(&self, report: &PublishReport) {
        if report.dropped_buffer_full > 0 && self.shared.full_warning.ready(self.shared.now_ms()) {
            tracing::warn!(
                dropped = report.dropped_buffer_full,
                dropped_total = self.shared.dropped_buffer_full.load(Ordering::Relaxed),
                pending = self.shared.pending(),
                reason = "buffer_full",
                "kafka: the publish buffer is full (is the broker down?); dropping new groups"
            );
        }
    }

    fn enqueue(
        &self,
        topic: &str,
        message: Outgoing<'_>,
        first_ms: usize,
        report: &mut PublishReport,
    ) {
        let Outgoing {
            partition,
            key,
            payload,
            plugin,
        } = message;
        let shared = &self.shared;
        loop {
            // While messages wait in the lot, or the producer is being
            // replaced, new ones queue behind them, so a series stays in
            // order.
            if shared.detour.load(Ordering::SeqCst) {
                let in_librdkafka = read_producer(&self.producer).in_flight_count().max(0) as usize;
                let mut lot = shared.lock_lot();
                if lot.hold || !lot.parked.is_empty() {
                    let buffered = lot.parked.len() + lot.held.len() + in_librdkafka;
                    if buffered >= self.settings.buffer_messages {
                        shared.dropped_buffer_full.fetch_add(1, Ordering::SeqCst);
                        report.dropped_buffer_full += 1;
                        return;
                    }
                    let parked = Parked {
                        topic: topic.to_owned(),
                        partition,
                        key: key.to_vec(),
                        payload: payload.to_vec(),
                        plugin: plugin.map(PluginName::from),
                        first_ms,
                    };
                    if lot.hold {
                        lot.held.push_back(parked);
                    } else {
                        lot.parked.push_back(parked);
                    }
                    shared.lot_changed(&lot);
                    shared.enqueued.fetch_add(1, Ordering::SeqCst);
                    report.enqueued += 1;
                    return;
                }
            }
            let producer = read_producer(&self.producer);
            // The upkeep may have begun replacing the producer meanwhile.
            if shared.detour.load(Ordering::SeqCst) {
                continue;
            }
            // Counted before the send: its delivery report may come first.
            shared.enqueued.fetch_add(1, Ordering::SeqCst);
            let mut record = BaseRecord::with_opaque_to(topic, first_ms)
                .key(key)
                .payload(payload);
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            if let Some(plugin) = plugin {
                record = record.headers(plugin_headers(plugin));
            }
            let Err((error, _)) = producer.send(record) else {
                report.enqueued += 1;
                return;
            };
            let code = error.rdkafka_error_code();
            if is_missing_topic(code) && code != Some(RDKafkaErrorCode::UnknownPartition) {
                // librdkafka knows the topic is gone: park it until it is
                // back.
                shared.topics_missing.store(true, Ordering::SeqCst);
                shared.park(Parked {
                    topic: topic.to_owned(),
                    partition,
                    key: key.to_vec(),
                    payload: payload.to_vec(),
                    plugin: plugin.map(PluginName::from),
                    first_ms,
                });
                report.enqueued += 1;
                return;
            }
            shared.enqueued.fetch_sub(1, Ordering::SeqCst);
            if code == Some(RDKafkaErrorCode::QueueFull) {
                shared.dropped_buffer_full.fetch_add(1, Ordering::SeqCst);
                report.dropped_buffer_full += 1;
            } else {
                report.failed += 1;
                shared.refused.fetch_add(1, Ordering::SeqCst);
                shared.fail(1, &format!("publishing to {topic} failed"), &error);
            }
            return;
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> PublisherStats {
        let s = &self.shared;
        PublisherStats {
            enqueued: s.enqueued.load(Ordering::SeqCst),
            delivered: s.delivered.load(Ordering::SeqCst),
            failed: s.failed.load(Ordering::SeqCst),
            dropped_buffer_full: s.dropped_buffer_full.load(Ordering::SeqCst),
            resent: s.resent.load(Ordering::SeqCst),
            producer_resets: s.producer_resets.load(Ordering::SeqCst),
            pending: s.pending(),
        }
    }

    /// Waits (without blocking the runtime) until every accepted message is
    /// delivered or failed, or `timeout` passes; true when nothing is
    /// pending.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.shared.pending() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for KafkaPublisher {
    /// Stops the upkeep thread without waiting for it (it may be inside a
    /// broker request of a few seconds): dropping never blocks the caller.
    /// The producer goes when the thread has noticed, within that time.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// The publisher's upkeep thread. When topics go missing (a report or a
/// send said so, or deliveries stalled) it creates them again; when the
/// broker has lost its state (topics gone, or the producer's id unknown to
/// it) it replaces the producer, taking its messages back; it resends
/// parked messages in order, and fails those past their timeout.
fn upkeep(slot: &ProducerSlot, shared: &Arc<Shared>, settings: &KafkaSettings) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("kafka: no runtime for the producer's upkeep: {e}");
            return;
        }
    };
    let names = settings.topic_names();
    let mut admin: Option<AdminClient<LogContext>> = None;
    let mut last_check: Option<Instant> = None;
    let unreachable_warning = Throttle::new();
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(UPKEEP_TICK);
        expire_parked(shared);
        if shared.producer_stuck.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                pending = shared.pending(),
                "kafka: the broker does not know the producer (it lost its state?); replacing the producer"
            );
            replace_producer(slot, shared, settings);
        }
        let parked = shared.lot_len.load(Ordering::SeqCst) > 0;
        let suspect = shared.topics_missing.load(Ordering::SeqCst);
        let stalled = shared.pending() > 0
            && shared
                .now_ms()
                .saturating_sub(shared.last_delivery_ms.load(Ordering::Relaxed))
                > STALL.as_millis() as u64;
        let interval = if parked || suspect {
            Duration::from_millis(250)
        } else {
            STALL
        };
        if !(parked || suspect || stalled) || last_check.is_some_and(|t| t.elapsed() < interval) {
            continue;
        }
        last_check = Some(Instant::now());
        let missing = match missing_topics(slot, &names) {
            Ok(missing) => missing,
            Err(e) => {
                if unreachable_warning.ready(shared.now_ms()) {
                    tracing::warn!(
                        pending = shared.pending(),
                        "kafka: broker unreachable ({e}); messages stay buffered"
                    );
                }
                continue;
            }
        };
        if !missing.is_empty() {
            if admin.is_none() {
                match settings
                    .client_config(&format!("{}-admin", settings.client_id))
                    .create_with_context(LogContext)
                {
                    Ok(client) => admin = Some(client),
                    Err(e) => {
                        tracing::error!("kafka: creating an admin client: {e}");
                        continue;
                    }
                }
            }
            let Some(client) = admin.as_ref() else {
                continue;
            };
            if let Err(e) = runtime.block_on(create_topics(client, settings, &missing)) {
                tracing::warn!("{e:#}");
                continue;
            }
            tracing::warn!(
                topics = %missing.join(","),
                pending = shared.pending(),
                "kafka: the broker had lost topics (restarted empty?); they exist again"
            );
            // A broker that lost its topics lost its producer ids too.
            replace_producer(slot, shared, settings);
        }
        shared.topics_missing.store(false, Ordering::SeqCst);
        resend_parked(slot, shared);
    }
}

/// Replaces the producer: new publishes are held back, the old producer's
/// messages are taken back (purged; their reports park them in order), a
/// new producer (with a new producer id) takes its place, and the held
/// messages go after the parked ones. Messages that were in flight may
/// have reached the broker: they may arrive twice (at least once).
fn replace_producer(slot: &ProducerSlot, shared: &Arc<Shared>, settings: &KafkaSettings) {
    let fresh = match create_producer(settings, shared) {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::error!("{e:#}");
            return;
        }
    };
    let old = {
        // No publisher is sending while the write lock is held.
        let guard = slot.write().unwrap_or_else(PoisonError::into_inner);
        let mut lot = shared.lock_lot();
        lot.hold = true;
        shared.lot_changed(&lot);
        drop(lot);
        guard.clone()
    };
    old.purge(PurgeConfig::default().queue().inflight());
    let deadline = Instant::now() + Duration::from_secs(5);
    while old.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let previous = {
        let mut guard = slot.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *guard, fresh)
    };
    drop(previous);
    drop(old);
    let mut lot = shared.lock_lot();
    let held = std::mem::take(&mut lot.held);
    lot.parked.extend(held);
    lot.hold = false;
    shared.lot_changed(&lot);
    drop(lot);
    // A late report about the old producer must not replace the new one.
    shared.producer_stuck.store(false, Ordering::SeqCst);
    shared.producer_resets.fetch_add(1, Ordering::SeqCst);
}

/// The topics among `names` the cluster does not have (with partitions).
fn missing_topics(slot: &ProducerSlot, names: &[String]) -> Result<Vec<String>, KafkaError> {
    let metadata = read_producer(slot)
        .client()
        .fetch_metadata(None, METADATA_TIMEOUT)?;
    Ok(names
        .iter()
        .filter(|name| {
            !metadata.topics().iter().any(|t| {
                t.name() == name.as_str() && t.error().is_none() && !t.partitions().is_empty()
            })
        })
        .cloned()
        .collect())
}

/// Sends parked messages again, in order, a chunk per lock.
fn resend_parked(slot: &ProducerSlot, shared: &Shared) {
    loop {
        let producer = read_producer(slot);
        let mut lot = shared.lock_lot();
        if lot.hold {
            return;
        }
        for _ in 0..RESEND_CHUNK {
            let Some(parked) = lot.parked.front() else {
                break;
            };
            let mut record = BaseRecord::with_opaque_to(&parked.topic, parked.first_ms)
                .key(&parked.key[..])
                .payload(&parked.payload[..]);
            if let Some(partition) = parked.partition {
                record = record.partition(partition);
            }
            if let Some(plugin) = &parked.plugin {
                record = record.headers(plugin_headers(plugin));
            }
            match producer.send(record) {
                Ok(()) => {
                    shared.resent.fetch_add(1, Ordering::SeqCst);
                    lot.parked.pop_front();
                }
                Err((error, _)) => {
                    let code = error.rdkafka_error_code();
                    if code == Some(RDKafkaErrorCode::QueueFull) {
                        // The buffer drains; try again on the next tick.
                        shared.lot_changed(&lot);
                        return;
                    }
                    if is_missing_topic(code) {
                        shared.topics_missing.store(true, Ordering::SeqCst);
                        shared.lot_changed(&lot);
                        return;
                    }
                    let topic = parked.topic.clone();
                    lot.parked.pop_front();
                    shared.fail(1, &format!("resending to {topic} failed"), &error);
                }
            }
        }
        shared.lot_changed(&lot);
        if lot.parked.is_empty() {
            return;
        }
        drop(lot);
        drop(producer);
        std::thread::yield_now();
    }
}

/// Fails parked messages older than the message timeout (the bound holds
/// for them too).
fn expire_parked(shared: &Shared) {
    if shared.lot_len.load(Ordering::SeqCst) == 0 {
        return;
    }
    let now = shared.now_ms();
    let timeout = shared.message_timeout.as_millis() as u64;
    let mut lot = shared.lock_lot();
    let before = lot.parked.len() + lot.held.len();
    lot.parked
        .retain(|p| now.saturating_sub(p.first_ms as u64) < timeout);
    lot.held
        .retain(|p| now.saturating_sub(p.first_ms as u64) < timeout);
    let expired = before - lot.parked.len() - lot.held.len();
    shared.lot_changed(&lot);
    drop(lot);
    if expired > 0 {
        shared.fail(
            expired as u64,
            "messages waiting to be resent timed out",
            &format!("{expired} dropped after {:?}", shared.message_timeout),
        );
    }
}

/// Drains the in-process bus into Kafka (`topic`, normally
/// [`Topic::Processed`]) until every sender is gone, then waits up to
/// [`CLOSE_FLUSH_TIMEOUT`] for what is still buffered. This is the sink
/// stage of `vigil run` in Kafka mode. Returns the final counters.
/// Each batch's groups carry their producing plugin in a header
/// ([`PLUGIN_HEADER`]); a `Vec<MetricsGroup>` is a batch of an unknown
/// producer.
pub async fn run_publisher<B: Into<Batch>>(
    mut rx: mpsc::Receiver<B>,
    publisher: Arc<KafkaPublisher>,
    topic: Topic,
) -> PublisherStats {
    while let Some(batch) = rx.recv().await {
        // Encoding is CPU work linear in the batch: off the runtime.
        let batch: Batch = batch.into();
        let publishing = publisher.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || publishing.publish_batch(topic, &batch)).await
        {
            tracing::error!("kafka: publishing a batch failed: {e}");
        }
    }
    let started = Instant::now();
    let flushed = publisher.flush(CLOSE_FLUSH_TIMEOUT).await;
    let stats = publisher.stats();
    if flushed {
        tracing::info!(
            delivered = stats.delivered,
            failed = stats.failed,
            dropped_buffer_full = stats.dropped_buffer_full,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "kafka: publisher flushed"
        );
    } else {
        tracing::error!(
            pending = stats.pending,
            "kafka: messages still undelivered after {CLOSE_FLUSH_TIMEOUT:?} at shutdown are lost"
        );
    }
    stats
}

/// What a [`consume`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumeReport {
    /// Messages received.
    pub messages: u64,
    /// Metrics groups the handler accepted.
    pub groups: u64,
    /// Batches the handler accepted.
    pub batches: u64,
    /// Messages that were not a metrics group (skipped, logged).
    pub undecodable: u64,
    /// Times the handler rejected a batch (each followed by a retry).
    pub handler_failures: u64,
    /// Offset commits that succeeded.
    pub commits: u64,
    /// Offset commits that failed (the batch will be seen again).
    pub commit_failures: u64,
    /// Errors receiving from the broker (logged; consumption goes on).
    pub receive_errors: u64,
}

/// One received message, kept until its batch is committed.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    /// The message key, if any.
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Its [`PLUGIN_HEADER`], if any.
    pub plugin: Option<PluginName>,
}

/// What a consumer turns a batch of messages into before its handler sees
/// them (run on tokio's blocking pool: decoding is CPU work linear in the
/// batch).
pub trait Decode: Send + Sync + 'static {
    /// What the handler gets.
    type Batch: Send + 'static;
    /// What a message that does not decode is called in the log ("a
    /// metrics group").
    const WHAT: &'static str;
    /// The batch, how many items it holds, and (partition, offset, error)
    /// of each message that is not one.
    fn decode(&self, messages: &[Received]) -> (Self::Batch, usize, Vec<(i32, i64, String)>);
}

/// Metrics groups with their producing plugins.
struct MetricsGroups;

impl Decode for MetricsGroups {
    type Batch = Batch;
    const WHAT: &'static str = "a metrics group";

    fn decode(&self, messages: &[Received]) -> (Batch, usize, Vec<(i32, i64, String)>) {
        let unknown = PluginName::from(UNKNOWN_PLUGIN);
        let mut groups = Batch::default();
        let mut failures = Vec::new();
        for received in messages {
            let decoded = match &received.payload {
                Some(payload) => decode_metrics_group(payload).map_err(|e| e.to_string()),
                None => Err("the message has no payload".to_owned()),
            };
            match decoded {
                Ok(group) => {
                    let plugin = received.plugin.clone().unwrap_or_else(|| unknown.clone());
                    groups.push(plugin, group);
                }
                Err(e) => failures.push((received.partition, received.offset, e)),
            }
        }
        let count = groups.len();
        (groups, count, failures)
    }
}

/// The messages as received: the handler decodes them (and is the one to
/// count what it refuses).
pub struct RawMessages;

impl Decode for RawMessages {
    type Batch = Vec<Received>;
    const WHAT: &'static str = "a message";

    fn decode(&self, messages: &[Received]) -> (Vec<Received>, usize, Vec<(i32, i64, String)>) {
        (messages.to_vec(), messages.len(), Vec::new())
    }
}

/// Decodes `batch` on tokio's blocking pool. Should the decoding task fail,
/// every message counts as undecodable.
async fn decode_off_runtime<D: Decode>(
    decoder: &Arc<D>,
    batch: &Arc<Vec<Received>>,
) -> Option<(D::Batch, usize, Vec<(i32, i64, String)>)> {
    let (shared, decoder) = (batch.clone(), decoder.clone());
    match tokio::task::spawn_blocking(move || decoder.decode(&shared)).await {
        Ok(decoded) => Some(decoded),
        Err(e) => {
            tracing::warn!("kafka: decoding a batch failed: {e}");
            None
        }
    }
}

/// Consumes `topic` as a member of consumer group `group_id` until
/// `shutdown` turns true (or its sender is dropped).
///
/// Messages are gathered into batches of up to `batch_max` (or what came
/// within 100 ms of the first), decoded and passed to `handler`. The
/// offsets of a batch are committed only after `handler` returned `Ok`; on
/// `Err` the same batch is offered again after a backoff (100 ms doubling to
/// 10 s), and nothing after it is read meanwhile. Shutting down while a
/// batch is refused returns without committing it, leaving it to the next
/// member of the group. Messages that are not a metrics group are counted,
/// logged with their partition and offset, and skipped (committed past).
///
/// Starts from the earliest offset when the group has none committed
/// (`auto.offset.reset=earliest`). Creates the site's topics first if the
/// broker lacks them.
pub async fn consume<F, Fut>(
    settings: &KafkaSettings,
    group_id: &str,
    topic: Topic,
    batch_max: usize,
    mut handler: F,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<ConsumeReport>
where
    F: FnMut(Vec<MetricsGroup>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    consume_batches(
        settings,
        group_id,
        topic,
        batch_max,
        move |batch: Batch| handler(batch.into_parts().0),
        shutdown,
    )
    .await
}

/// [`consume`], handing the handler each group with its producing plugin
/// (from the [`PLUGIN_HEADER`] header; [`UNKNOWN_PLUGIN`] without one).
pub async fn consume_batches<F, Fut>(
    settings: &KafkaSettings,
    group_id: &str,
    topic: Topic,
    batch_max: usize,
    handler: F,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<ConsumeReport>
where
    F: FnMut(Batch) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    consume_decoded(
        settings,
        group_id,
        topic,
        batch_max,
        MetricsGroups,
        handler,
        shutdown,
    )
    .await
}

/// [`consume_batches`] with any [`Decode`]: the handler gets what `decoder`
/// made of each batch; offsets are committed only after it returned `Ok`.
pub async fn consume_decoded<D, F, Fut>(
    settings: &KafkaSettings,
    group_id: &str,
    topic: Topic,
    batch_max: usize,
    decoder: D,
    mut handler: F,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<ConsumeReport>
where
    D: Decode,
    F: FnMut(D::Batch) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let decoder = Arc::new(decoder);
    settings.validate()?;
    ensure!(batch_max >= 1, "kafka: batch_max must be at least 1");
    ensure!(
        !group_id.is_empty(),
        "kafka: the consumer group id is empty"
    );
    let name = settings.topic(topic);
    if let Err(e) = ensure_topics(settings).await {
        tracing::warn!("{e:#} (consuming anyway; the topic may appear later)");
    }
    let mut config = settings.client_config(&format!("{}-{group_id}", settings.client_id));
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Notice a topic that was created (again) within seconds.
        .set("topic.metadata.refresh.interval.ms", "5000")
        // A broker holds an empty fetch this long. Kafka answers as soon as
        // data arrives; brokers that poll their storage (tansu sleeps half
        // the remaining wait between looks, even with data) answer no
        // sooner than half of it, which bounds the bus's latency.
        .set("fetch.wait.max.ms", "100")
        // Bigger fetches: with a broker that answers no sooner than ~50 ms,
        // what one fetch may carry bounds throughput (1 MiB per partition
        // is ~1,000 groups, ~60,000 groups/s over three partitions).
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "67108864")
        .set("session.timeout.ms", "10000");
    let consumer: Arc<StreamConsumer<LogContext>> = Arc::new(
        config
            .create_with_context(LogContext)
            .context("kafka: creating the consumer")?,
    );
    consumer
        .subscribe(&[&name])
        .with_context(|| format!("kafka: subscribing to {name}"))?;
    tracing::info!(topic = %name, group = group_id, "kafka: consuming");

    let mut report = ConsumeReport::default();
    let receive_warning = Throttle::new();
    let undecodable_warning = Throttle::new();
    let epoch = Instant::now();
    'batches: loop {
        if *shutdown.borrow() {
            break;
        }
        // The first message of a batch: wait as long as it takes.
        let first = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break 'batches,
            message = consumer.recv() => message,
        };
        let mut batch: Vec<Received> = Vec::new();
        let take = |message: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
                    batch: &mut Vec<Received>,
                    report: &mut ConsumeReport| match message {
            Ok(message) => {
                report.messages += 1;
                batch.push(Received {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    plugin: plugin_header(message.headers()),
                });
            }
            Err(e) => {
                report.receive_errors += 1;
                if receive_warning.ready(epoch.elapsed().as_millis() as u64) {
                    tracing::warn!(topic = %name, "kafka: receiving: {e}");
                }
            }
        };
        take(first, &mut batch, &mut report);
        if batch.is_empty() {
            // An error, not a message: do not spin on it.
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break 'batches,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let linger = tokio::time::Instant::now() + BATCH_LINGER;
        while batch.len() < batch_max {
            match tokio::time::timeout_at(linger, consumer.recv()).await {
                Ok(message) => take(message, &mut batch, &mut report),
                Err(_) => break,
            }
        }

        // Decoding is CPU work linear in the batch: off the runtime.
        let batch = Arc::new(batch);
        let (groups, count, failures) = match decode_off_runtime(&decoder, &batch).await {
            Some(decoded) => decoded,
            None => {
                // Not decoded (the task died): offer the batch again.
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break 'batches,
                    _ = tokio::time::sleep(RETRY_BACKOFF.0) => {}
                }
                continue;
            }
        };
        for (partition, offset, e) in failures {
            report.undecodable += 1;
            // A topic full of something else would flood the log: one
            // warning per period, the rest at debug level.
            if undecodable_warning.ready(epoch.elapsed().as_millis() as u64) {
                tracing::warn!(
                    topic = %name,
                    partition,
                    offset,
                    undecodable_total = report.undecodable,
                    "kafka: skipping a message that is not {}: {e}", D::WHAT
                );
            } else {
                tracing::debug!(
                    topic = %name,
                    partition,
                    offset,
                    "kafka: skipping a message that is not {}: {e}", D::WHAT
                );
            }
        }

        if count > 0 {
            let count = count as u64;
            let mut offer = Some(groups);
            let mut backoff = RETRY_BACKOFF.0;
            loop {
                // A retry decodes the batch again rather than keeping a copy.
                let groups = match offer.take() {
                    Some(groups) => groups,
                    None => match decode_off_runtime(&decoder, &batch).await {
                        Some(decoded) => decoded.0,
                        None => continue,
                    },
                };
                match handler(groups).await {
                    Ok(()) => break,
                    Err(e) => {
                        report.handler_failures += 1;
                        tracing::warn!(
                            topic = %name,
                            groups = count,
                            retry_in_ms = backoff.as_millis() as u64,
                            "kafka: the sink rejected a batch; offering it again: {e:#}"
                        );
                        tokio::select! {
                            _ = shutdown.wait_for(|stop| *stop) => break 'batches,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RETRY_BACKOFF.1);
                    }
                }
            }
            report.batches += 1;
            report.groups += count;
        }

        // Accepted (or undecodable): commit past it.
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for received in batch.iter() {
            let entry = next
                .entry(received.partition)
                .or_insert(received.offset + 1);
            *entry = (*entry).max(received.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets
                .add_partition_offset(&name, partition, Offset::Offset(offset))
                .context("kafka: building the offsets to commit")?;
        }
        let committer = consumer.clone();
        let committing = Instant::now();
        match tokio::task::spawn_blocking(move || committer.commit(&offsets, CommitMode::Sync))
            .await
        {
            Ok(Ok(())) => {
                report.commits += 1;
                tracing::debug!(
                    topic = %name,
                    messages = batch.len(),
                    commit_ms = committing.elapsed().as_millis() as u64,
                    "kafka: batch accepted and committed"
                );
            }
            Ok(Err(e)) => {
                report.commit_failures += 1;
                tracing::warn!(topic = %name, "kafka: committing offsets failed (the batch will be seen again): {e}");
            }
            Err(e) => {
                report.commit_failures += 1;
                tracing::warn!(topic = %name, "kafka: committing offsets failed: {e}");
            }
        }
    }
    // Leaving the group (librdkafka's close) blocks briefly.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    tracing::info!(topic = %name, group = group_id, ?report, "kafka: consumer stopped");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::model::{Datetime, Dimension, Metric, MetricType, MetricValue};

    fn group(id: &str, group_type: &str, dimensions: &[(&str, &str)]) -> MetricsGroup {
        let mut resource = Resource::named(id, "192.0.2.1");
        resource.class = "network".into();
        resource.subclass = "switch".into();
        resource.type_ = "juniper".into();
        MetricsGroup {
            group_type: group_type.into(),
            interval_seconds: 60,
            creation_timestamp: Datetime {
                seconds: 1,
                nanoseconds: 0,
            },
            schema_version: "0.2".into(),
            resource: resource.into(),
            dimensions: dimensions
                .iter()
                .map(|(n, v)| Dimension {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            metrics: vec![Metric {
                name: "m".into(),
                value: MetricValue::Unsigned(1),
                type_: MetricType::Counter,
                creation_timestamp: Datetime {
                    seconds: 1,
                    nanoseconds: 0,
                },
            }],
        }
    }

    #[test]
    fn topic_names_follow_panoptes() {
        let settings = KafkaSettings::new("127.0.0.1:9092", "dc1");
        let names: Vec<String> = Topic::ALL.iter().map(|t| settings.topic(*t)).collect();
        assert_eq!(
            names,
            [
                "dc1-resources",
                "dc1-metrics",
                "dc1-processed",
                "dc1-events",
                "dc1-findings",
                "dc1-endpoint-events"
            ]
        );
        assert_eq!(settings.partitions, 3);
        assert_eq!(settings.buffer_messages, 100_000);
        assert!(settings.validate().is_ok());
        assert!(KafkaSettings::new("b:1", "bad site").validate().is_err());
        assert!(KafkaSettings::new("", "dc1").validate().is_err());
        let mut zero = KafkaSettings::new("b:1", "dc1");
        zero.partitions = 0;
        assert!(zero.validate().is_err());
    }

    #[test]
    fn keys_and_partitions_follow_the_series() {
        let a = group(
            "sw1",
            "interface",
            &[("ifname", "ge-0/0/0"), ("alias", "up")],
        );
        assert_eq!(metrics_key(&a), "network:switch:juniper");
        // Dimension order does not matter; everything in the series does.
        let reordered = group(
            "sw1",
            "interface",
            &[("alias", "up"), ("ifname", "ge-0/0/0")],
        );
        assert_eq!(series_partition(&a, 12), series_partition(&reordered, 12));
        // Stable across builds and machines: FNV-1a, not a seeded hasher.
        assert_eq!(
            series_partition(&a, 1_000_003),
            series_partition(&a, 1_000_003)
        );
        let mut hash = Fnv1a::new();
        hash.write(b"a");
        assert_eq!(hash.finish(), 0xaf63_dc4c_8601_ec8c);
        // Series spread over every partition.
        let mut seen = [0usize; 3];
        for i in 0..300 {
            let g = group(&format!("sw{i}"), "interface", &[("ifname", "ge-0/0/0")]);
            let p = series_partition(&g, 3);
            assert!((0..3).contains(&p));
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "uneven spread {seen:?}");
        // Values must not run into names.
        let x = group("sw1", "g", &[("a", "b=c")]);
        let y = group("sw1", "g", &[("a=b", "c")]);
        assert_ne!(series_partition(&x, 1 << 30), series_partition(&y, 1 << 30));
    }

    #[test]
    fn epoch_churn_without_deliveries_means_the_producer_is_unknown() {
        let settings = KafkaSettings::new("127.0.0.1:9", "unit");
        let shared = Arc::new(Shared::new(&settings));
        let context = DeliveryContext {
            shared: shared.clone(),
            epoch_baseline: AtomicI64::new(i64::MIN),
            delivered_seen: AtomicU64::new(0),
        };
        let feed = |epoch: i64| {
            let stats = format!(
                r#"{{"name":"p","type":"producer","eos":{{"idemp_state":"Assigned","producer_id":1,"producer_epoch":{epoch},"epoch_cnt":1}}}}"#
            );
            context.stats_raw(stats.as_bytes());
            shared.producer_stuck.load(Ordering::SeqCst)
        };
        // Nothing pending: epochs may move.
        assert!(!feed(0));
        assert!(!feed(5));
        // Pending, and deliveries progress: bumps are librdkafka recovering.
        shared.enqueued.store(10, Ordering::SeqCst);
        assert!(!feed(6));
        shared.delivered.store(1, Ordering::SeqCst);
        assert!(!feed(8));
        assert!(!feed(10));
        // Three bumps without a delivery: the broker does not know it.
        assert!(feed(11));
        // Statistics without idempotence state, or garbage, change nothing.
        shared.producer_stuck.store(false, Ordering::SeqCst);
        context.stats_raw(br#"{"name":"p"}"#);
        context.stats_raw(b"not json");
        assert!(!shared.producer_stuck.load(Ordering::SeqCst));
    }

    #[test]
    fn throttle_lets_one_through_per_period() {
        let throttle = Throttle::new();
        assert!(throttle.ready(0));
        assert!(!throttle.ready(1));
        assert!(!throttle.ready(WARN_EVERY.as_millis() as u64 - 1));
        assert!(throttle.ready(WARN_EVERY.as_millis() as u64));
    }

    #[tokio::test]
    async fn publishing_without_a_broker_buffers_and_drops_beyond_the_bound() {
        // Nothing listens on port 9 of loopback (discard, never served).
        let mut settings = KafkaSettings::new("127.0.0.1:9", "unit");
        settings.buffer_messages = 10;
        let publisher = KafkaPublisher::new(&settings).expect("publisher");
        let groups: Vec<MetricsGroup> = (0..25)
            .map(|i| group(&format!("sw{i}"), "interface", &[]))
            .collect();
        let started = Instant::now();
        let report = publisher.publish_metrics(Topic::Metrics, &groups);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(report.enqueued, 10);
        assert_eq!(report.dropped_buffer_full, 15);
        let stats = publisher.stats();
        assert_eq!(stats.enqueued, 10);
        assert_eq!(stats.pending, 10);
        assert_eq!(stats.dropped_buffer_full, 15);
        assert!(!publisher.flush(Duration::from_millis(50)).await);
    }
}
