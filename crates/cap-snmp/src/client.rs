//! The network side of the SNMP capability: where a request may go, how big
//! it may be, when it may go, and the checks that keep a broken agent (or a
//! plugin's request) from hanging or crashing anything.
//!
//! `snmp2` sends and parses; it has no timeout, retry or walk of its own.
//! Every attempt here runs under `min(timeout, time left in the run)`; a
//! timed-out session is dropped so a late reply lands on a dead socket
//! instead of confusing the next request; a walk must keep bringing new
//! objects (out-of-order rows are tolerated, see `SnmpRun::walk`) and stops
//! at the run's varbind budget.
//!
//! **Nothing a plugin sends can panic the library.** `snmp2` encodes every
//! message into a fixed 65,507-byte buffer (the largest UDP payload over
//! IPv4), from the back. A longer message indexes past the buffer's start
//! (`Buf::push_byte` / `push_chunk` panic), and one of exactly 65,507 bytes
//! already fails: each INTEGER is written through an 8-byte window, and the
//! last one (the version, followed by the 4-byte outer header) then finds
//! only 7 bytes free (`push_i64` subtracts with overflow: a panic in debug
//! builds, an out-of-bounds pointer in release ones). So the most a message
//! may be is [`MAX_MESSAGE_BYTES`] = 65,506, and `library_buffer_limit`
//! checks both edges against the library itself. A GET of 128 OIDs of 128
//! arcs (each arc up to 5 bytes in BER) is about 82 KB: that was the
//! reported crash inside a host call. Before anything is sent,
//! [`Device::exchange`] computes the encoding's length ([`request_size`];
//! exact for v1/v2c with the widest request id, an upper bound for v3
//! assuming the RFC 3411 maximum 32-byte engine id) and refuses a request
//! that would not fit with `invalid-request`. OIDs are checked against
//! RFC 2578 first (2 to 128 arcs, each a u32, first arc 0 to 2, second
//! below 40), and a call names at most `[snmp] max_oids_per_request` OIDs
//! (64 by default: 64 of the longest legal OIDs are about 41 KB, so only
//! sites that raise it toward the ceiling of 128 ever meet the size check).
//! The remaining inputs the library sees come from the agent (a v3 engine
//! id longer than 32 bytes, a reply that trips a decoder bug): every
//! attempt is polled inside `catch_unwind`, so a panic there ends that one
//! call with `malformed-response`, drops its session, is logged and
//! counted ([`DeviceGates::caught_panics`]), and the host, the run's slot
//! and the next request carry on.
//!
//! **Fair access to a device.** Requests to one device with one credential
//! rule go one at a time, host-wide, and the turn is held per attempt, not
//! for a whole call: a call of `timeout` × (1 + `retries`) against a
//! silent device gives the device back between attempts. Within that gate
//! turns go to the waiting *tenant* (the calling plugin and the resource's
//! owner, both recorded by the host, never written by a plugin) that has
//! held it for the least time so far (start-time fair queuing on holding
//! time; a tenant back from an idle spell starts level, never with banked
//! credit), so a plugin with many runs queued gets one plugin's share, and
//! a tenant whose turns are long (slow answers) delays another by at most
//! one of its turns per request instead of one per run it has queued.
//!
//! Why the gate is per credential and not per device: a v1/v2c agent says
//! nothing to a community it does not know, so each attempt with it holds
//! its turn for a whole `timeout`, and per-attempt turns alone still cost a
//! victim one such timeout for *each* of its requests (a 400-request walk
//! behind 5 s timeouts is 33 minutes). That is the aliasing attack:
//! resources a hostile discovery plugin aliases onto a healthy device's
//! address, given a credential the device ignores. With one gate per
//! credential rule, those attempts queue only behind each other and the
//! legitimate credential's requests never wait for them. A device then has
//! at most one request in flight per credential rule that reaches it, a
//! number the operator wrote; its total load is bounded by the token
//! bucket below, which every credential shares.
//!
//! **Rate.** Each device address has a token bucket, shared by every plugin,
//! resource and credential reaching it: `[snmp]
//! max_requests_per_second_per_device` datagrams per second (default 100,
//! at most 10,000, never unlimited), with a burst of one second's worth.
//! An SNMPv3 attempt that has to discover the engine first costs 3. A
//! turn holder waits for its tokens; holders of different credentials'
//! gates queue for tokens in the order they come, one per gate. 100 a
//! second is 5x what polling a 500-port switch's interface tables every
//! minute needs (ifTable, ifXTable and dot3StatsTable: about 1,200
//! GETBULKs of 25 rows a minute, 20 a second), so it only bites a flood;
//! and it is a small share of an agent: Debian's snmpd answered 2,700 to
//! 6,700 sequential requests a second on one 2.x GHz EPYC core, spending
//! 60 us (a GET) to 195 us (a 25-row ifTable GETBULK) of CPU on each, so
//! 100 a second cost it 0.6% to 2% of a core (a switch's management CPU,
//! often 10x slower, 6% to 20%).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use snmp2::{AsyncSession, Oid, Pdu, Version};
use tokio::sync::oneshot;

use super::settings::{Credential, CredentialRule, RequestOptions};
use vigil_wit::vigil::plugin::snmp::{SnmpError, Value};

/// Time kept back from the run's deadline so the plugin can still turn an
/// SNMP timeout into its own result.
const DEADLINE_RESERVE: Duration = Duration::from_millis(100);
/// Most sub-identifiers in an OID (RFC 2578).
const MAX_OID_ARCS: usize = 128;
/// The longest message `snmp2` encodes without failing: its private
/// `BUFFER_SIZE` (65,507) less one, because its last INTEGER needs an
/// 8-byte window 7 bytes from the end (see the module docs).
/// `library_buffer_limit` checks the number against the library itself.
pub const MAX_MESSAGE_BYTES: usize = 65_506;
/// RFC 3411: an snmpEngineID is 5 to 32 octets.
const MAX_ENGINE_ID: usize = 32;
/// Longest truncated HMAC a v3 message carries (HMAC-SHA-512, RFC 7860).
const MAX_AUTH_PARAMS: usize = 48;
/// Room for a privacy salt and for cipher padding.
const MAX_PRIV_PARAMS: usize = 16;
/// A plugin's text is quoted in messages up to this many characters.
const QUOTE_CHARS: usize = 64;

/// An OID as its sub-identifiers.
pub type Arcs = Vec<u64>;

/// Gates of the devices in use, shared by every run in the host: one per
/// device and credential, and one token bucket per device. See the module
/// docs for the schedule.
#[derive(Debug)]
pub struct DeviceGates {
    /// Tokens added per second, and the bucket's size.
    per_second: f64,
    burst: f64,
    map: Mutex<GateMap>,
    panics: AtomicU64,
}

#[derive(Debug, Default)]
struct GateMap {
    /// By device address and credential rule (its place in the site file).
    gates: HashMap<(SocketAddr, usize), Arc<Mutex<Gate>>>,
    buckets: HashMap<SocketAddr, Arc<Mutex<Bucket>>>,
    /// Idle entries are swept when the maps reach this size (doubling), so
    /// they stay within twice the devices recently in use.
    sweep_at: usize,
}

#[derive(Debug, Default)]
struct Gate {
    held: bool,
    /// Holding time of the tenant most recently given a turn: where a
    /// newly waiting tenant starts.
    clock: Duration,
    /// Tenants waiting, or ahead of `clock`. Few: one per plugin and owner.
    tenants: Vec<Tenant>,
}

#[derive(Debug)]
struct Tenant {
    key: Arc<str>,
    /// Time this tenant has held the gate (its virtual time).
    used: Duration,
    waiters: VecDeque<oneshot::Sender<()>>,
}

#[derive(Debug)]
struct Bucket {
    /// Negative while takers wait for tokens already promised to them.
    tokens: f64,
    refilled: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for DeviceGates {
    fn default() -> Self {
        DeviceGates::new(super::settings::DEFAULT_REQUESTS_PER_SECOND)
    }
}

impl DeviceGates {
    pub fn new(requests_per_second: u32) -> DeviceGates {
        let per_second = f64::from(requests_per_second.max(1));
        DeviceGates {
            per_second,
            // One second's worth, and at least an SNMPv3 attempt's 3.
            burst: per_second.max(3.0),
            map: Mutex::new(GateMap {
                sweep_at: 64,
                ..GateMap::default()
            }),
            panics: AtomicU64::new(0),
        }
    }

    fn entries(
        &self,
        address: SocketAddr,
        credential: usize,
    ) -> (Arc<Mutex<Gate>>, Arc<Mutex<Bucket>>) {
        let mut map = lock(&self.map);
        if map.gates.len() + map.buckets.len() >= map.sweep_at {
            let now = Instant::now();
            let (per_second, burst) = (self.per_second, self.burst);
            map.gates.retain(|_, gate| {
                let state = lock(gate);
                Arc::strong_count(gate) > 1
                    || state.held
                    || state.tenants.iter().any(|t| !t.waiters.is_empty())
            });
            map.buckets.retain(|_, bucket| {
                let state = lock(bucket);
                Arc::strong_count(bucket) > 1
                    || state.tokens + now.duration_since(state.refilled).as_secs_f64() * per_second
                        < burst
            });
            map.sweep_at = (2 * (map.gates.len() + map.buckets.len())).max(64);
        }
        let gate = map.gates.entry((address, credential)).or_default().clone();
        let burst = self.burst;
        let bucket = map
            .buckets
            .entry(address)
            .or_insert_with(|| {
                Arc::new(Mutex::new(Bucket {
                    tokens: burst,
                    refilled: Instant::now(),
                }))
            })
            .clone();
        (gate, bucket)
    }

    /// Waits for `tenant`'s turn at `address` with the credential rule
    /// numbered `credential`; `None` when `cutoff` came first. The turn
    /// ends when the [`Turn`] is dropped.
    pub async fn turn(
        self: &Arc<Self>,
        address: SocketAddr,
        credential: usize,
        tenant: &Arc<str>,
        cutoff: Instant,
    ) -> Option<Turn> {
        let (gate, bucket) = self.entries(address, credential);
        let waiting = lock(&gate).enter(tenant);
        if let Some(receiver) = waiting {
            let mut waiting = Waiting {
                receiver,
                gate: gate.clone(),
                tenant: tenant.clone(),
                granted: false,
            };
            match tokio::time::timeout_at(cutoff.into(), &mut waiting.receiver).await {
                Ok(Ok(())) => waiting.granted = true,
                // Cut off; `Waiting` passes on a turn granted meanwhile.
                _ => return None,
            }
        }
        Some(Turn {
            gate,
            bucket,
            tenant: tenant.clone(),
            since: Instant::now(),
            per_second: self.per_second,
            burst: self.burst,
        })
    }

    /// Devices being talked to or waited for.
    pub fn busy(&self) -> usize {
        let gates: Vec<_> = lock(&self.map)
            .gates
            .iter()
            .map(|((address, _), gate)| (*address, gate.clone()))
            .collect();
        let mut busy: Vec<SocketAddr> = gates
            .iter()
            .filter(|(_, gate)| {
                let state = lock(gate);
                state.held || state.tenants.iter().any(|t| !t.waiters.is_empty())
            })
            .map(|(address, _)| *address)
            .collect();
        busy.sort();
        busy.dedup();
        busy.len()
    }

    /// Library panics caught so far (each ended one call).
    pub fn caught_panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
}

impl Gate {
    /// `tenant` asks for a turn: granted now (`None`) when the gate is free
    /// and nobody waits, else a receiver the turn will be sent to.
    fn enter(&mut self, tenant: &Arc<str>) -> Option<oneshot::Receiver<()>> {
        let clock = self.clock;
        let anyone_waiting = self.tenants.iter().any(|t| !t.waiters.is_empty());
        let index = match self.tenants.iter().position(|t| t.key == *tenant) {
            Some(index) => index,
            None => {
                self.tenants.push(Tenant {
                    key: tenant.clone(),
                    used: clock,
                    waiters: VecDeque::new(),
                });
                self.tenants.len() - 1
            }
        };
        let entry = &mut self.tenants[index];
        if entry.waiters.is_empty() && entry.used < clock {
            // Back after an idle spell: level with the others.
            entry.used = clock;
        }
        if !self.held && !anyone_waiting {
            self.held = true;
            self.clock = clock.max(entry.used);
            return None;
        }
        entry.waiters.retain(|w| !w.is_closed());
        let (sender, receiver) = oneshot::channel();
        entry.waiters.push_back(sender);
        Some(receiver)
    }

    /// Charges `tenant` for `held` and hands the gate to the waiting
    /// tenant that has held it least.
    fn release(&mut self, tenant: &Arc<str>, held: Duration) {
        let clock = self.clock;
        match self.tenants.iter_mut().find(|t| t.key == *tenant) {
            Some(entry) => entry.used += held,
            None => self.tenants.push(Tenant {
                key: tenant.clone(),
                used: clock + held,
                waiters: VecDeque::new(),
            }),
        }
        loop {
            let next = self
                .tenants
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.waiters.is_empty())
                .min_by_key(|(_, t)| t.used)
                .map(|(index, _)| index);
            let Some(index) = next else {
                self.held = false;
                break;
            };
            let entry = &mut self.tenants[index];
            let used = entry.used;
            if let Some(waiter) = entry.waiters.pop_front()
                && waiter.send(()).is_ok()
            {
                self.clock = self.clock.max(used);
                break;
            }
        }
        let clock = self.clock;
        self.tenants
            .retain(|t| !t.waiters.is_empty() || t.used > clock);
    }
}

/// A waiter that gave up: a turn granted just as it did is passed on.
struct Waiting {
    receiver: oneshot::Receiver<()>,
    gate: Arc<Mutex<Gate>>,
    tenant: Arc<str>,
    granted: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        self.receiver.close();
        if self.receiver.try_recv().is_ok() {
            lock(&self.gate).release(&self.tenant, Duration::ZERO);
        }
    }
}

/// One tenant's turn at a device; dropping it hands the gate on.
pub struct Turn {
    gate: Arc<Mutex<Gate>>,
    bucket: Arc<Mutex<Bucket>>,
    tenant: Arc<str>,
    since: Instant,
    per_second: f64,
    burst: f64,
}

impl Turn {
    /// Takes `count` tokens from the device's bucket, waiting (holding the
    /// turn) until they are there; `false`, with nothing taken, when that
    /// would pass `cutoff`. Takers that find the bucket empty queue up in
    /// the order they came (each waits for the tokens owed before it).
    pub async fn tokens(&mut self, count: u32, cutoff: Instant) -> bool {
        let wait = {
            let mut state = lock(&self.bucket);
            let now = Instant::now();
            let refill = now.duration_since(state.refilled).as_secs_f64() * self.per_second;
            state.tokens = (state.tokens + refill).min(self.burst);
            state.refilled = now;
            state.tokens -= f64::from(count);
            let wait = if state.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-state.tokens / self.per_second)
            };
            if now + wait > cutoff {
                state.tokens += f64::from(count);
                return false;
            }
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        true
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        lock(&self.gate).release(&self.tenant, held);
    }
}

/// Polls a future inside `catch_unwind`: a panic ends it with the panic's
/// message instead of unwinding through the host call.
struct CatchPanic<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned()))),
        }
    }
}

/// A plugin's text for a message: at most [`QUOTE_CHARS`] characters.
fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTE_CHARS {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(QUOTE_CHARS).collect();
    format!("{head:?}... ({} bytes)", text.len())
}

/// What a run asks of the agent, already validated.
#[derive(Debug, Clone)]
pub enum Request {
    Get(Vec<Arcs>),
    GetNext(Vec<Arcs>),
    Bulk { start: Arcs, max_repetitions: u32 },
}

/// A reply, copied out of the session's receive buffer.
#[derive(Debug)]
pub struct Response {
    pub error_status: u32,
    /// 1-based position of the varbind the error is about.
    pub error_index: u32,
    pub varbinds: Vec<(Arcs, Value)>,
}

/// RFC 3416 error-status names.
pub fn error_status_name(status: u32) -> String {
    const NAMES: [&str; 19] = [
        "noError",
        "tooBig",
        "noSuchName",
        "badValue",
        "readOnly",
        "genErr",
        "noAccess",
        "wrongType",
        "wrongLength",
        "wrongEncoding",
        "wrongValue",
        "noCreation",
        "inconsistentValue",
        "resourceUnavailable",
        "commitFailed",
        "undoFailed",
        "authorizationError",
        "notWritable",
        "inconsistentName",
    ];
    NAMES
        .get(status as usize)
        .map_or_else(|| format!("error status {status}"), |n| (*n).to_owned())
}

/// Parses a dotted OID from a plugin (`1.3.6.1.2.1.1.3.0`, leading dot
/// allowed) and checks it against RFC 2578: 2 to 128 arcs, each fitting 32
/// bits, the first 0 to 2 and the second below 40 (the library encodes the
/// first two arcs in one byte, so `2.40` and above are refused too).
pub fn parse_oid(text: &str) -> Result<Arcs, SnmpError> {
    let invalid = |why: &str| SnmpError::InvalidRequest(format!("OID {}: {why}", quote(text)));
    let body = text.trim().strip_prefix('.').unwrap_or(text.trim());
    if body.is_empty() {
        return Err(invalid("empty"));
    }
    // Counted before parsing: a megabyte of dots fails fast.
    if body.bytes().filter(|b| *b == b'.').count() >= MAX_OID_ARCS {
        return Err(invalid("must have 2 to 128 parts (RFC 2578)"));
    }
    let arcs = body
        .split('.')
        .map(|part| {
            if part.is_empty() || part.len() > 10 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("each part must be a number from 0 to 4294967295"));
            }
            part.parse::<u32>()
                .map(u64::from)
                .map_err(|_| invalid("each part must be a number from 0 to 4294967295"))
        })
        .collect::<Result<Arcs, _>>()?;
    if arcs.len() < 2 {
        return Err(invalid("must have 2 to 128 parts (RFC 2578)"));
    }
    if arcs[0] > 2 || arcs[1] >= 40 {
        return Err(invalid(
            "not a valid object identifier (the first part must be 0, 1 or 2 and the second below 40)",
        ));
    }
    Ok(arcs)
}

/// A resource's endpoint, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An IP literal: `10.0.0.1`, `10.0.0.1:161`, `fd00::1`, `[fd00::1]:161`.
    Address { ip: IpAddr, port: Option<u16> },
    /// A DNS name, `sw1.example.net` or `sw1.example.net:1161`; looked up
    /// only when the site sets `resolve_names`.
    Name { host: String, port: Option<u16> },
}

/// Parses an endpoint; `Err` says why it is neither an address nor a name.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty".to_owned());
    }
    if let Ok(address) = text.parse::<SocketAddr>() {
        if address.port() == 0 {
            return Err("port 0 is not a port".to_owned());
        }
        return Ok(Endpoint::Address {
            ip: address.ip(),
            port: Some(address.port()),
        });
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Endpoint::Address { ip, port: None });
    }
    let (host, port) = match text.split_once(':') {
        None => (text, None),
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    "not an IP address, or a host name with a port 1 to 65535".to_owned()
                })?;
            (host, Some(port))
        }
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return Err("not an IP address or a host name".to_owned());
    }
    Ok(Endpoint::Name {
        host: host.to_owned(),
        port,
    })
}

/// Every address `host` resolves to, by the run's deadline.
pub async fn lookup(host: &str, deadline: Instant) -> Result<Vec<IpAddr>, String> {
    let found = tokio::time::timeout_at(deadline.into(), tokio::net::lookup_host((host, 0)))
        .await
        .map_err(|_| format!("resolving {host} took until the run deadline"))?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let addresses: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    if addresses.is_empty() {
        return Err(format!("{host} has no address"));
    }
    Ok(addresses)
}

/// Bytes of a BER length field for `content` bytes.
fn length_octets(content: usize) -> usize {
    if content < 0x80 {
        1
    } else {
        1 + (usize::BITS - content.leading_zeros()).div_ceil(8) as usize
    }
}

/// Bytes of a tag-length-value with `content` bytes of value.
fn tlv(content: usize) -> usize {
    1 + length_octets(content) + content
}

/// Bytes of an INTEGER holding `value` (two's complement, minimal).
fn integer(value: i64) -> usize {
    let significant = if value < 0 {
        64 - (!value).leading_zeros()
    } else {
        64 - value.leading_zeros()
    };
    // One sign bit on top of the significant ones.
    tlv((significant as usize + 1).div_ceil(8))
}

/// Bytes of a GET / GETNEXT / GETBULK PDU (tag and length included) for
/// `oids`, with a NULL value each.
fn pdu_size(oids: &[Arcs], request_id: i64, first: i64, second: i64) -> usize {
    let varbinds: usize = oids
        .iter()
        .map(|arcs| {
            let content = 1 + arcs
                .iter()
                .skip(2)
                .map(|&arc| ((64 - arc.leading_zeros()) as usize).div_ceil(7).max(1))
                .sum::<usize>();
            tlv(tlv(content) + 2)
        })
        .sum();
    tlv(integer(request_id) + integer(first) + integer(second) + tlv(varbinds))
}

/// The OIDs a request names, and its two middle integers as sent.
fn request_parts(request: &Request) -> (&[Arcs], i64, i64) {
    match request {
        Request::Get(oids) => (oids, 0, 0),
        Request::GetNext(oids) if oids.len() == 1 => (oids, 0, 0),
        Request::GetNext(oids) => (oids, oids.len() as i64, 0),
        Request::Bulk {
            start,
            max_repetitions,
        } => (std::slice::from_ref(start), 0, i64::from(*max_repetitions)),
    }
}

/// Length in bytes of `request` as `snmp2` encodes it for `credential`,
/// with the given request id. Exact for v1/v2c; for v3 an upper bound
/// (engine id of 32 bytes, the longest HMAC, room for padding).
pub fn message_size(request: &Request, credential: &Credential, request_id: i32) -> usize {
    let (oids, first, second) = request_parts(request);
    let pdu = pdu_size(oids, i64::from(request_id), first, second);
    match credential {
        Credential::V1 { community } | Credential::V2c { community } => {
            tlv(integer(1) + tlv(community.expose().len()) + pdu)
        }
        Credential::V3(user) => {
            let scoped = tlv(tlv(MAX_ENGINE_ID) + tlv(user.context.len()) + pdu);
            let payload = if user.privacy.is_some() {
                tlv(scoped + MAX_PRIV_PARAMS)
            } else {
                scoped
            };
            let security = tlv(tlv(tlv(MAX_ENGINE_ID)
                + integer(i64::MAX)
                + integer(i64::MAX)
                + tlv(user.name.len())
                + tlv(MAX_AUTH_PARAMS)
                + tlv(MAX_PRIV_PARAMS)));
            let global = tlv(integer(i64::from(i32::MIN))
                + integer(MAX_MESSAGE_BYTES as i64)
                + tlv(1)
                + integer(3));
            tlv(integer(3) + global + security + payload)
        }
    }
}

/// The largest `request` can be whatever request id it is sent with.
pub fn request_size(request: &Request, credential: &Credential) -> usize {
    message_size(request, credential, i32::MIN)
}

pub fn format_oid(arcs: &[u64]) -> String {
    let mut text = String::with_capacity(arcs.len() * 4);
    for (i, arc) in arcs.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(&arc.to_string());
    }
    text
}

fn to_wire(arcs: &[u64]) -> Result<Oid<'static>, SnmpError> {
    Oid::from(arcs)
        .map_err(|e| SnmpError::InvalidRequest(format!("OID {}: {e:?}", format_oid(arcs))))
}

fn to_wire_all(oids: &[Arcs]) -> Result<Vec<Oid<'static>>, AttemptError> {
    oids.iter()
        .map(|arcs| to_wire(arcs))
        .collect::<Result<_, _>>()
        .map_err(AttemptError::Fatal)
}

/// What the attempts of one exchange did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Attempts {
    /// Attempts that went out (retries included).
    pub sent: u64,
    /// Attempts that got no reply.
    pub timeouts: u64,
}

/// The device a run talks to: an address the site allows, and the
/// credential chosen for it.
pub struct Device {
    pub address: SocketAddr,
    /// `resource-id (address)`, for messages.
    pub label: String,
    rule: CredentialRule,
    session: Option<Box<AsyncSession>>,
    next_request_id: i32,
}

impl Device {
    pub fn new(resource_id: &str, address: SocketAddr, rule: &CredentialRule) -> Device {
        Device {
            address,
            label: format!("{resource_id} ({address})"),
            rule: rule.clone(),
            session: None,
            // Different runs start far apart, so a late reply to an old
            // socket can never be mistaken for a fresh one.
            next_request_id: (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
                & 0x3fff_ffff) as i32,
        }
    }

    pub fn version(&self) -> Version {
        match self.rule.credential {
            Credential::V1 { .. } => Version::V1,
            Credential::V2c { .. } => Version::V2C,
            Credential::V3(_) => Version::V3,
        }
    }

    /// Refuses a request whose encoding would not fit the library's buffer.
    pub fn check_size(&self, request: &Request) -> Result<(), SnmpError> {
        let size = request_size(request, &self.rule.credential);
        if size > MAX_MESSAGE_BYTES {
            let (oids, _, _) = request_parts(request);
            return Err(SnmpError::InvalidRequest(format!(
                "{}: {} OIDs ({} arcs in all) encode to {size} bytes, more than the {MAX_MESSAGE_BYTES} the SNMP library can put in one message; ask for fewer or shorter OIDs per call",
                self.label,
                oids.len(),
                oids.iter().map(Vec::len).sum::<usize>()
            )));
        }
        Ok(())
    }

    /// Sends `request` with retries, taking the device's turn (and its
    /// tokens) for each attempt separately, counting them in `attempts`;
    /// `tenant` is who waits (see [`DeviceGates`]).
    pub async fn exchange(
        &mut self,
        gates: &Arc<DeviceGates>,
        tenant: &Arc<str>,
        request: &Request,
        options: RequestOptions,
        deadline: Instant,
        attempts: &mut Attempts,
    ) -> Result<Response, SnmpError> {
        self.check_size(request)?;
        let cutoff = deadline.checked_sub(DEADLINE_RESERVE).unwrap_or(deadline);
        let tries = options.retries + 1;
        for attempt in 1..=tries {
            let late = |label: &str, what: &str| {
                SnmpError::Timeout(format!(
                    "{label}: {what} before the run deadline ({} of {tries} attempts made)",
                    attempt - 1
                ))
            };
            if Instant::now() >= cutoff {
                return Err(late(&self.label, "no reply"));
            }
            let Some(mut turn) = gates
                .turn(self.address, self.rule.index, tenant, cutoff)
                .await
            else {
                return Err(late(
                    &self.label,
                    "other requests to this device held it (one request at a time per device and credential)",
                ));
            };
            let datagrams = if self.session.is_none() && self.version() == Version::V3 {
                3
            } else {
                1
            };
            if !turn.tokens(datagrams, cutoff).await {
                return Err(late(
                    &self.label,
                    "the device's request rate limit ([snmp] max_requests_per_second_per_device) left no room",
                ));
            }
            let started = Instant::now();
            if started >= cutoff {
                return Err(late(&self.label, "no reply"));
            }
            let budget = options.timeout.min(cutoff - started);
            attempts.sent += 1;
            let outcome =
                tokio::time::timeout(budget, CatchPanic(Box::pin(self.attempt(request)))).await;
            drop(turn);
            match outcome {
                Ok(Ok(Ok(response))) => return Ok(response),
                Ok(Ok(Err(AttemptError::Fatal(error)))) => {
                    self.session = None;
                    return Err(error);
                }
                Ok(Ok(Err(AttemptError::Refused))) => {
                    // The device's host answered ICMP port unreachable:
                    // nothing listens on its SNMP port. Retrying within the
                    // run cannot change that, and waiting out every attempt
                    // (as net-snmp does) only hides a down agent behind a
                    // timeout: report it at once, as unreachable (the next
                    // scheduled run tries again).
                    self.session = None;
                    return Err(SnmpError::Timeout(format!(
                        "{}: unreachable: the host answered ICMP port unreachable (no SNMP agent listening); not retried",
                        self.label
                    )));
                }
                Ok(Ok(Err(AttemptError::Retry))) => {
                    self.session = None;
                }
                Ok(Err(panic)) => {
                    self.session = None;
                    let total = gates.panics.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::error!(
                        device = %self.label,
                        caught_total = total,
                        "snmp: the SNMP library panicked during an exchange ({panic}); the call failed and its session was dropped"
                    );
                    return Err(SnmpError::MalformedResponse(format!(
                        "{}: the SNMP library failed on this exchange ({panic}); the call was stopped and its session dropped",
                        self.label
                    )));
                }
                Err(_elapsed) => {
                    self.session = None;
                    attempts.timeouts += 1;
                }
            }
        }
        Err(SnmpError::Timeout(format!(
            "{}: no reply after {tries} attempts of {:?}",
            self.label, options.timeout
        )))
    }

    async fn attempt(&mut self, request: &Request) -> Result<Response, AttemptError> {
        if self.session.is_none() {
            self.session = Some(self.open().await?);
        }
        let request_id = self.next_request_id;
        let Some(session) = self.session.as_mut() else {
            return Err(AttemptError::Retry);
        };
        let label = self.label.as_str();
        let result = match request {
            Request::Get(oids) => {
                let wire = to_wire_all(oids)?;
                let refs: Vec<&Oid> = wire.iter().collect();
                copy_response(session.get_many(&refs).await, label)
            }
            Request::GetNext(oids) if oids.len() == 1 => {
                let wire = to_wire(&oids[0]).map_err(AttemptError::Fatal)?;
                copy_response(session.getnext(&wire).await, label)
            }
            Request::GetNext(oids) => {
                // snmp2 has no multi-OID GETNEXT; a GETBULK with no
                // repetitions is the same request in SNMPv2c/v3.
                let wire = to_wire_all(oids)?;
                let refs: Vec<&Oid> = wire.iter().collect();
                copy_response(session.getbulk(&refs, refs.len() as u32, 0).await, label)
            }
            Request::Bulk {
                start,
                max_repetitions,
            } => {
                let wire = to_wire(start).map_err(AttemptError::Fatal)?;
                copy_response(session.getbulk(&[&wire], 0, *max_repetitions).await, label)
            }
        };
        self.next_request_id = request_id.wrapping_add(1);
        result
    }

    async fn open(&mut self) -> Result<Box<AsyncSession>, AttemptError> {
        let address = self.address;
        let request_id = self.next_request_id;
        self.next_request_id = request_id.wrapping_add(16);
        let opened = match &self.rule.credential {
            Credential::V1 { community } => {
                AsyncSession::new_v1(address, community.expose(), request_id).await
            }
            Credential::V2c { community } => {
                AsyncSession::new_v2c(address, community.expose(), request_id).await
            }
            Credential::V3(user) => {
                let password = user
                    .auth
                    .as_ref()
                    .map(|(_, secret)| secret.expose())
                    .unwrap_or_default();
                let mut security = snmp2::v3::Security::new(user.name.as_bytes(), password)
                    .with_context_name(&user.context);
                security = match (&user.auth, &user.privacy) {
                    (None, _) => security.with_auth(snmp2::v3::Auth::NoAuthNoPriv),
                    (Some((protocol, _)), None) => security
                        .with_auth_protocol(*protocol)
                        .with_auth(snmp2::v3::Auth::AuthNoPriv),
                    (Some((protocol, _)), Some((cipher, secret))) => security
                        .with_auth_protocol(*protocol)
                        .with_auth(snmp2::v3::Auth::AuthPriv {
                            cipher: *cipher,
                            privacy_password: secret.expose().to_vec(),
                        }),
                };
                if let Some(method) = user.key_extension {
                    security = security.with_key_extension_method(method);
                }
                AsyncSession::new_v3(address, request_id, security).await
            }
        };
        let mut session = Box::new(opened.map_err(|e| {
            AttemptError::Fatal(SnmpError::Timeout(format!(
                "{}: cannot open a UDP socket: {e}",
                self.label
            )))
        })?);
        if matches!(self.rule.credential, Credential::V3(_)) {
            // Engine discovery; an `AuthUpdated` on the first try only means
            // the engine's clock was learned.
            match session.init().await {
                Ok(()) => {}
                Err(snmp2::Error::AuthUpdated) => {
                    session.init().await.map_err(|e| classify(e, &self.label))?
                }
                Err(e) => return Err(classify(e, &self.label)),
            }
        }
        Ok(session)
    }
}

enum AttemptError {
    /// Give up now (authentication, malformed reply).
    Fatal(SnmpError),
    /// The agent's host refused the datagram (ICMP port unreachable).
    Refused,
    /// Try again with a new session (stale reply, clock resync).
    Retry,
}

fn classify(error: snmp2::Error, label: &str) -> AttemptError {
    use snmp2::Error as E;
    match error {
        E::Send | E::Receive => AttemptError::Refused,
        E::RequestIdMismatch | E::AuthUpdated => AttemptError::Retry,
        E::AuthFailure(kind) => AttemptError::Fatal(SnmpError::AuthenticationFailed(format!(
            "{label}: {kind:?}"
        ))),
        E::CommunityMismatch => AttemptError::Fatal(SnmpError::MalformedResponse(format!(
            "{label}: reply carries another community"
        ))),
        other => AttemptError::Fatal(SnmpError::MalformedResponse(format!(
            "{label}: undecodable reply ({other:?})"
        ))),
    }
}

/// Copies a reply out of the session's buffer, or classifies the failure.
fn copy_response(
    result: Result<Pdu<'_>, snmp2::Error>,
    label: &str,
) -> Result<Response, AttemptError> {
    let pdu = result.map_err(|e| classify(e, label))?;
    if pdu.message_type == snmp2::MessageType::Report {
        // A v3 agent reports usmStats* counters instead of answering when it
        // rejects the security parameters.
        let reason = pdu
            .varbinds
            .clone()
            .next()
            .and_then(|(oid, _)| {
                oid.iter()
                    .map(|arcs| usm_report_name(&arcs.collect::<Vec<_>>()))
            })
            .unwrap_or("report");
        return Err(AttemptError::Fatal(SnmpError::AuthenticationFailed(
            format!("{label}: agent rejected the request ({reason})"),
        )));
    }
    let mut varbinds = Vec::new();
    for (oid, value) in pdu.varbinds.clone() {
        let arcs = decode_oid(oid.as_bytes()).ok_or_else(|| {
            AttemptError::Fatal(SnmpError::MalformedResponse(format!(
                "{label}: reply holds an undecodable OID"
            )))
        })?;
        let value = convert_value(value).ok_or_else(|| {
            AttemptError::Fatal(SnmpError::MalformedResponse(format!(
                "{label}: {} has a value type SNMP does not define",
                format_oid(&arcs)
            )))
        })?;
        varbinds.push((arcs, value));
    }
    Ok(Response {
        error_status: pdu.error_status,
        error_index: pdu.error_index,
        varbinds,
    })
}

fn usm_report_name(arcs: &[u64]) -> &'static str {
    const USM_STATS: [u64; 9] = [1, 3, 6, 1, 6, 3, 15, 1, 1];
    if arcs.len() < 10 || arcs[..9] != USM_STATS {
        return "report";
    }
    match arcs[9] {
        1 => "unsupported security level",
        2 => "not in time window",
        3 => "unknown user name",
        4 => "unknown engine id",
        5 => "wrong digest: bad authentication password",
        6 => "decryption error: bad privacy password",
        _ => "usm report",
    }
}

/// Decodes the BER content of an OBJECT IDENTIFIER. (asn1-rs renders the
/// one-byte `zeroDotZero`, common as `ifSpecific`, as "0".)
fn decode_oid(bytes: &[u8]) -> Option<Arcs> {
    let mut arcs = Vec::with_capacity(bytes.len() + 1);
    let mut value: u64 = 0;
    let mut pending = false;
    for &byte in bytes {
        if value > (u64::MAX >> 7) {
            return None;
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        pending = byte & 0x80 != 0;
        if !pending {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - 40 * first);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    (!pending && arcs.len() >= 2).then_some(arcs)
}

fn convert_value(value: snmp2::Value<'_>) -> Option<Value> {
    use snmp2::Value as W;
    Some(match value {
        W::Integer(v) => Value::Integer(v),
        W::Counter32(v) => Value::Counter32(v),
        W::Counter64(v) => Value::Counter64(v),
        W::Unsigned32(v) => Value::Gauge32(v),
        W::Timeticks(v) => Value::Timeticks(v),
        W::OctetString(bytes) => Value::OctetString(bytes.to_vec()),
        W::ObjectIdentifier(oid) => Value::ObjectId(format_oid(&decode_oid(oid.as_bytes())?)),
        W::IpAddress([a, b, c, d]) => Value::IpAddress((a, b, c, d)),
        W::Opaque(bytes) => Value::Opaque(bytes.to_vec()),
        W::Null => Value::Null,
        W::NoSuchObject => Value::NoSuchObject,
        W::NoSuchInstance => Value::NoSuchInstance,
        W::EndOfMibView => Value::EndOfMibView,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_parse_strictly() {
        assert_eq!(parse_oid(".1.3.6.1.2.1.1.3.0").expect("valid").len(), 9);
        assert_eq!(format_oid(&parse_oid("1.3.6.1").expect("valid")), "1.3.6.1");
        for bad in [
            "",
            "1",
            "1..3",
            "1.3.x",
            "3.1",
            "1.40",
            "1.3.4294967296",
            "-1.3",
        ] {
            assert!(
                matches!(parse_oid(bad), Err(SnmpError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
        let long = vec!["1"; 129].join(".");
        assert!(parse_oid(&long).is_err());
    }

    #[test]
    fn oid_content_decodes() {
        assert_eq!(decode_oid(&[0x00]), Some(vec![0, 0]));
        assert_eq!(decode_oid(&[0x2b, 6, 1]), Some(vec![1, 3, 6, 1]));
        assert_eq!(decode_oid(&[0x2b, 0x81, 0x00]), Some(vec![1, 3, 128]));
        assert_eq!(decode_oid(&[0x88, 0x37]), Some(vec![2, 999]));
        assert_eq!(decode_oid(&[0x2b, 0x81]), None, "dangling continuation");
        assert_eq!(decode_oid(&[]), None);
        assert_eq!(
            decode_oid(&[
                0x2b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ]),
            None
        );
    }

    #[test]
    fn error_status_names() {
        assert_eq!(error_status_name(1), "tooBig");
        assert_eq!(error_status_name(5), "genErr");
        assert_eq!(error_status_name(99), "error status 99");
    }

    #[test]
    fn oid_limits_follow_rfc_2578() {
        let arcs = |n: usize| {
            let mut parts = vec!["1", "3"];
            parts.resize(n, "4294967295");
            parts.join(".")
        };
        assert_eq!(parse_oid(&arcs(128)).expect("128 arcs").len(), 128);
        assert!(parse_oid(&arcs(129)).is_err());
        for bad in ["+1.3", "1.3.+6", "2.40", "1. 3", "1.3.04294967295"] {
            assert!(
                matches!(parse_oid(bad), Err(SnmpError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
        assert!(parse_oid("2.39.1").is_ok());
        // A huge OID is quoted in the message, not echoed whole.
        let huge = "1.".repeat(100_000);
        let Err(SnmpError::InvalidRequest(message)) = parse_oid(&huge) else {
            panic!("huge OID accepted");
        };
        assert!(message.len() < 300, "{}", message.len());
    }

    #[test]
    fn endpoints_are_ip_literals_or_names() {
        let address = |ip: &str, port: Option<u16>| Endpoint::Address {
            ip: ip.parse().expect("ip"),
            port,
        };
        assert_eq!(parse_endpoint("10.0.0.1"), Ok(address("10.0.0.1", None)));
        assert_eq!(
            parse_endpoint(" 10.0.0.1:1161 "),
            Ok(address("10.0.0.1", Some(1161)))
        );
        assert_eq!(parse_endpoint("fd00::1"), Ok(address("fd00::1", None)));
        assert_eq!(parse_endpoint("[fd00::1]"), Ok(address("fd00::1", None)));
        assert_eq!(
            parse_endpoint("[fd00::1]:161"),
            Ok(address("fd00::1", Some(161)))
        );
        assert_eq!(
            parse_endpoint("sw1.example.net:1161"),
            Ok(Endpoint::Name {
                host: "sw1.example.net".to_owned(),
                port: Some(1161)
            })
        );
        for bad in [
            "",
            "10.0.0.1:0",
            "sw1:http",
            "a b",
            "fe80::1%eth0",
            "exfil.$(id).example",
            "x:1:2",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}.example", "a".repeat(300));
        assert!(parse_endpoint(&long).is_err());
    }

    fn community(text: &str) -> Credential {
        Credential::V2c {
            community: vigil_core::secret::SecretSource::Inline(text.to_owned())
                .read(std::path::Path::new("."))
                .expect("inline secret"),
        }
    }

    /// A GET of `big` OIDs of 128 arcs of 5 bytes each, then fillers of
    /// one-byte arcs so the message is exactly `target` bytes.
    fn get_of_size(target: usize, credential: &Credential, request_id: i32) -> Request {
        let size =
            |oids: &[Arcs]| message_size(&Request::Get(oids.to_vec()), credential, request_id);
        let mut big = vec![1, 3];
        big.resize(128, u64::from(u32::MAX));
        let mut medium = vec![1, 3];
        medium.resize(128, 1);
        let mut oids = Vec::new();
        while size(&oids) + 700 < target {
            oids.push(big.clone());
        }
        while size(&oids) + 180 < target {
            oids.push(medium.clone());
        }
        for extra in 0..10 {
            for wide in 0..4 {
                for arcs in 2..=128 {
                    let mut filler = vec![1, 3];
                    filler.resize(arcs, 1);
                    filler.extend(std::iter::repeat_n(200, wide));
                    let mut candidate = oids.clone();
                    candidate.extend(std::iter::repeat_n(vec![1, 3, 1], extra));
                    candidate.push(filler);
                    if size(&candidate) == target {
                        return Request::Get(candidate);
                    }
                }
            }
        }
        panic!("no GET of exactly {target} bytes found");
    }

    async fn send_get(request: Request, request_id: i32) -> Result<usize, String> {
        let agent = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = agent.local_addr().expect("address");
        let Request::Get(oids) = request else {
            unreachable!()
        };
        let sent = tokio::spawn(async move {
            let mut session = AsyncSession::new_v2c(address, b"public", request_id)
                .await
                .expect("session");
            let wire: Vec<Oid> = oids.iter().map(|a| to_wire(a).expect("oid")).collect();
            let refs: Vec<&Oid> = wire.iter().collect();
            // No agent answers; only the datagram matters.
            let _ = tokio::time::timeout(Duration::from_millis(200), session.get_many(&refs)).await;
        });
        let mut buffer = vec![0u8; 70_000];
        let received = tokio::time::timeout(Duration::from_secs(5), agent.recv(&mut buffer));
        tokio::select! {
            joined = sent => match joined {
                Err(e) if e.is_panic() => Err("panicked".to_owned()),
                other => Err(format!("nothing received: {other:?}")),
            },
            got = received => Ok(got.expect("datagram in time").expect("recv")),
        }
    }

    /// The size computed before sending is what the library puts on the
    /// wire, and MAX_MESSAGE_BYTES is exactly where the library stops
    /// coping: one byte more and it fails (in debug builds it panics on
    /// the subtraction, in release ones it computes a wild pointer); two
    /// more and it panics in any build (the reported OID-bomb crash).
    #[tokio::test]
    async fn library_buffer_limit() {
        let request_id = 0x1234_5678;
        let credential = community("public");
        for oids in [1usize, 7, 60] {
            let mut arcs = vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 10];
            arcs.resize(arcs.len() + oids % 13, 300);
            let request = Request::Get(vec![arcs; oids]);
            let size = message_size(&request, &credential, request_id);
            assert_eq!(send_get(request, request_id).await, Ok(size));
        }
        let fits = get_of_size(MAX_MESSAGE_BYTES, &credential, request_id);
        assert_eq!(
            send_get(fits, request_id).await,
            Ok(MAX_MESSAGE_BYTES),
            "a message of the largest size goes out whole"
        );
        #[cfg(debug_assertions)]
        {
            let over = get_of_size(MAX_MESSAGE_BYTES + 1, &credential, request_id);
            assert_eq!(send_get(over, request_id).await, Err("panicked".to_owned()));
        }
        let over = get_of_size(MAX_MESSAGE_BYTES + 2, &credential, request_id);
        assert_eq!(
            send_get(over, request_id).await,
            Err("panicked".to_owned()),
            "the library panics past its buffer"
        );
        // The reported bomb: 128 OIDs of 128 five-byte arcs.
        let mut bomb = vec![1, 3];
        bomb.resize(128, u64::from(u32::MAX));
        let bomb = Request::Get(vec![bomb; 128]);
        assert_eq!(request_size(&bomb, &credential), 82_086);
        // 64 of them (the default ceiling) always fit.
        let Request::Get(oids) = &bomb else {
            unreachable!()
        };
        let half = Request::Get(oids[..64].to_vec());
        assert!(request_size(&half, &credential) <= MAX_MESSAGE_BYTES);
        // And the bound holds for every request id.
        let fits = get_of_size(MAX_MESSAGE_BYTES, &credential, i32::MIN);
        assert!(request_size(&fits, &credential) <= MAX_MESSAGE_BYTES);
    }

    #[tokio::test]
    async fn a_library_panic_becomes_an_error() {
        let caught = CatchPanic(Box::pin(async {
            tokio::task::yield_now().await;
            panic!("decoder bug");
        }))
        .await;
        assert_eq!(caught, Err::<(), _>("decoder bug".to_owned()));
        let fine = CatchPanic(Box::pin(async { 7 })).await;
        assert_eq!(fine, Ok(7));
    }

    fn address() -> SocketAddr {
        "127.0.0.1:161".parse().expect("address")
    }

    #[tokio::test]
    async fn one_turn_at_a_time_and_gates_are_forgotten() {
        let gates = Arc::new(DeviceGates::new(1000));
        let tenant: Arc<str> = Arc::from("poller\u{1f}inventory");
        let far = Instant::now() + Duration::from_secs(10);
        let first = gates.turn(address(), 0, &tenant, far).await.expect("turn");
        let second = {
            let (gates, tenant) = (gates.clone(), tenant.clone());
            tokio::spawn(async move {
                let _turn = gates.turn(address(), 0, &tenant, far).await.expect("turn");
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(gates.busy(), 1);
        assert!(!second.is_finished(), "two turns at once");
        drop(first);
        second.await.expect("join");
        assert_eq!(gates.busy(), 0);
        // A waiter cut off by its deadline gets nothing and leaves nothing.
        let held = gates.turn(address(), 0, &tenant, far).await.expect("turn");
        let cut = gates
            .turn(
                address(),
                0,
                &tenant,
                Instant::now() + Duration::from_millis(30),
            )
            .await;
        assert!(cut.is_none());
        drop(held);
        assert_eq!(gates.busy(), 0);
        assert!(gates.turn(address(), 0, &tenant, far).await.is_some());
    }

    /// Whatever the attempts with another credential do (here: hold their
    /// turn until told), this credential's turns come at once.
    #[tokio::test]
    async fn a_credential_the_device_ignores_holds_up_nobody_else() {
        let gates = Arc::new(DeviceGates::new(10_000));
        let far = Instant::now() + Duration::from_secs(30);
        let rogue: Arc<str> = Arc::from("poller\u{1f}rogue");
        let (release, released) = oneshot::channel::<()>();
        let stuck = gates.turn(address(), 1, &rogue, far).await.expect("turn");
        let queued: Vec<_> = (0..8)
            .map(|_| {
                let (gates, rogue) = (gates.clone(), rogue.clone());
                tokio::spawn(async move { gates.turn(address(), 1, &rogue, far).await.is_some() })
            })
            .collect();
        let holder = tokio::spawn(async move {
            let _stuck = stuck;
            let _ = released.await;
        });
        let victim: Arc<str> = Arc::from("poller\u{1f}inventory");
        for _ in 0..20 {
            let _turn = gates.turn(address(), 0, &victim, far).await.expect("turn");
        }
        assert!(
            !holder.is_finished(),
            "the rogue turn was still held throughout"
        );
        let _ = release.send(());
        holder.await.expect("holder");
        for waiter in queued {
            assert!(waiter.await.expect("join"));
        }
        assert_eq!(gates.busy(), 0);
    }

    /// Within one gate, a tenant whose turns are long (slow answers)
    /// delays a tenant with short turns by one of its turns per request,
    /// not by one per run it has queued (FIFO would give 8 here).
    #[tokio::test]
    async fn the_tenant_that_held_the_gate_least_goes_first() {
        let gates = Arc::new(DeviceGates::new(10_000));
        let far = Instant::now() + Duration::from_secs(30);
        let order = Arc::new(Mutex::new(Vec::new()));
        let hold = |tenant: &str, name: &'static str, held: Duration, turns: usize| {
            let (gates, order) = (gates.clone(), order.clone());
            let tenant: Arc<str> = Arc::from(tenant);
            tokio::spawn(async move {
                for _ in 0..turns {
                    let _turn = gates.turn(address(), 0, &tenant, far).await.expect("turn");
                    lock(&order).push(name);
                    tokio::time::sleep(held).await;
                }
            })
        };
        // Eight runs of a slow tenant, three long attempts each.
        let slow: Vec<_> = (0..8)
            .map(|_| hold("poller\u{1f}rogue", "slow", Duration::from_millis(50), 3))
            .collect();
        while lock(&order).is_empty() {
            tokio::task::yield_now().await;
        }
        let victim = hold(
            "poller\u{1f}inventory",
            "victim",
            Duration::from_millis(1),
            10,
        );
        victim.await.expect("victim");
        let seen = lock(&order).clone();
        let first = seen
            .iter()
            .position(|n| *n == "victim")
            .expect("victim ran");
        let last = seen
            .iter()
            .rposition(|n| *n == "victim")
            .expect("victim ran");
        let most_between = seen[first..=last]
            .split(|n| *n == "victim")
            .map(<[_]>::len)
            .max()
            .unwrap_or(0);
        assert!(first <= 2 && most_between <= 1, "{seen:?}");
        for run in slow {
            run.await.expect("slow tenant");
        }
        assert_eq!(lock(&order).len(), 8 * 3 + 10);
        assert_eq!(gates.busy(), 0);
    }

    #[tokio::test]
    async fn the_rate_limit_is_shared_and_never_unlimited() {
        let gates = Arc::new(DeviceGates::new(50));
        let cutoff = Instant::now() + Duration::from_millis(1000);
        let mut taken = 0;
        for round in 0.. {
            let tenant: Arc<str> = Arc::from(format!("plugin-{}", round % 3));
            let mut turn = gates
                .turn(address(), round % 2, &tenant, cutoff)
                .await
                .expect("turn");
            if !turn.tokens(1, cutoff).await {
                break;
            }
            taken += 1;
        }
        // A burst of 50, then 50 a second: about 100 in the second, and
        // never a request past the bucket, whatever the credential.
        assert!(
            (50..=101).contains(&taken),
            "{taken} requests in one second"
        );
        // Another address has its own bucket.
        let other: SocketAddr = "127.0.0.2:161".parse().expect("address");
        let tenant: Arc<str> = Arc::from("plugin-0");
        let mut turn = gates.turn(other, 0, &tenant, cutoff).await.expect("turn");
        assert!(
            turn.tokens(50, Instant::now() + Duration::from_millis(10))
                .await
        );
    }
}
