//! An SNMP agent that answers from a [`Recording`]: [`Responder`] turns one
//! request datagram into one reply, [`Agent`] serves it on a UDP port of
//! 127.0.0.1 for as long as it lives.
//!
//! Semantics are an agent's (RFC 3416, and RFC 1157 for v1), over the
//! recording's objects in OID order:
//!
//! * **GET**: the object's value; a recorded exception (tags 128-130) as
//!   recorded. A missing object is `noSuchInstance` when the recording
//!   holds a sibling (something under the OID's parent, as a table column
//!   with other rows), else `noSuchObject`. SNMPv1: error `noSuchName`
//!   with the index of the first missing OID (and of a Counter64, which
//!   v1 cannot carry).
//! * **GETNEXT**: the first object after the OID, skipping recorded
//!   exceptions (they are not objects of the view); past the last one,
//!   `endOfMibView` with the OID asked (v1: `noSuchName`; Counter64s are
//!   skipped, RFC 2576 4.2.1).
//! * **GETBULK** (v2c): the first `non-repeaters` OIDs as GETNEXT, then up
//!   to `max-repetitions` rows of GETNEXT for the others, each column
//!   continuing from its previous answer; a column past the end repeats
//!   `endOfMibView`, and the reply ends after the first row in which every
//!   column is at the end. Rows that would make the reply larger than
//!   [`MAX_REPLY_BYTES`] are left out (RFC 3416 4.2.3 allows fewer).
//! * **SET**: refused (`notWritable`; v1 `readOnly`): a recording is
//!   read-only.
//! * GET or GETNEXT replies that do not fit are `tooBig` with no varbinds.
//!
//! Only the agent's community is answered; any other community, SNMPv3 and
//! undecodable datagrams get no reply at all, as from a real agent (the
//! client then times out). Requests are decoded by `snmp2` inside
//! `catch_unwind`, so a datagram that trips the library cannot take the
//! agent down.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use snmp2::{MessageType, Pdu, Version};

use crate::ber;
use crate::recording::{Oid, RecordedValue, Recording};

/// Largest reply: the largest UDP payload over IPv4.
pub const MAX_REPLY_BYTES: usize = 65_507;
/// Most varbinds one request may name (clients send at most 128).
pub const MAX_REQUEST_VARBINDS: usize = 1_024;

const ERROR_TOO_BIG: i64 = 1;
const ERROR_NO_SUCH_NAME: i64 = 2;
const ERROR_READ_ONLY: i64 = 4;
const ERROR_GEN_ERR: i64 = 5;
const ERROR_NOT_WRITABLE: i64 = 17;

/// Answers requests from one recording, for one community.
#[derive(Debug, Clone)]
pub struct Responder {
    recording: Arc<Recording>,
    community: Vec<u8>,
}

/// What a request asked, decoded.
struct Request {
    version: i64,
    kind: MessageType,
    request_id: i32,
    /// error-status, or non-repeaters for GETBULK.
    a: u32,
    /// error-index, or max-repetitions for GETBULK.
    b: u32,
    /// `None`: an OID with a sub-identifier beyond 64 bits.
    oids: Vec<Option<Oid>>,
}

impl Responder {
    pub fn new(recording: Arc<Recording>, community: &str) -> Responder {
        Responder {
            recording,
            community: community.as_bytes().to_vec(),
        }
    }

    /// The reply to one datagram, or `None` for no reply (another
    /// community, SNMPv3, not an SNMP request).
    pub fn answer(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        let request = self.decode(datagram)?;
        let v1 = request.version == Version::V1 as i64;
        let reply = |status: i64, index: i64, varbinds: &[Vec<u8>]| {
            ber::message(
                request.version,
                &self.community,
                ber::PDU_RESPONSE,
                request.request_id,
                status,
                index,
                varbinds,
            )
        };
        // A request's own OIDs, echoed with an error (v1 does that).
        let echo = || -> Vec<Vec<u8>> {
            let null = ber::value(&RecordedValue::Null);
            request
                .oids
                .iter()
                .map(|o| ber::varbind(o.as_deref().unwrap_or(&[]), &null))
                .collect()
        };
        if let Some(position) = request.oids.iter().position(Option::is_none) {
            return Some(reply(ERROR_GEN_ERR, position as i64 + 1, &echo()));
        }
        let oids: Vec<&[u64]> = request.oids.iter().flatten().map(Vec::as_slice).collect();
        let varbinds = match request.kind {
            MessageType::GetRequest => self.get(&oids, v1),
            MessageType::GetNextRequest => self.get_next(&oids, v1),
            MessageType::GetBulkRequest if !v1 => {
                Ok(self.get_bulk(&oids, request.a as usize, request.b as usize))
            }
            MessageType::SetRequest => {
                let status = if v1 {
                    ERROR_READ_ONLY
                } else {
                    ERROR_NOT_WRITABLE
                };
                return Some(reply(status, 1, &echo()));
            }
            _ => return None,
        };
        let varbinds = match varbinds {
            Ok(varbinds) => varbinds,
            Err(index) => return Some(reply(ERROR_NO_SUCH_NAME, index as i64 + 1, &echo())),
        };
        let size: usize = varbinds.iter().map(Vec::len).sum();
        if size + ber::envelope_bytes(&self.community) > MAX_REPLY_BYTES {
            return Some(reply(ERROR_TOO_BIG, 0, &[]));
        }
        Some(reply(0, 0, &varbinds))
    }

    fn decode(&self, datagram: &[u8]) -> Option<Request> {
        if datagram.len() > MAX_REPLY_BYTES {
            return None;
        }
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let pdu = Pdu::from_bytes(datagram).ok()?;
            let version = match pdu.version().ok()? {
                Version::V1 => Version::V1 as i64,
                Version::V2C => Version::V2C as i64,
                _ => return None,
            };
            if pdu.community != self.community.as_slice() {
                return None;
            }
            let mut oids = Vec::new();
            for (name, _) in pdu.varbinds.clone() {
                if oids.len() == MAX_REQUEST_VARBINDS {
                    return None;
                }
                oids.push(name.iter().map(|arcs| arcs.collect::<Oid>()));
            }
            Some(Request {
                version,
                kind: pdu.message_type,
                request_id: pdu.req_id,
                a: pdu.error_status,
                b: pdu.error_index,
                oids,
            })
        }));
        match decoded {
            Ok(request) => request,
            Err(_) => {
                tracing::warn!("an SNMP request tripped the decoder; not answered");
                None
            }
        }
    }

    /// GET; `Err(i)`: v1's noSuchName at OID `i`.
    fn get(&self, oids: &[&[u64]], v1: bool) -> Result<Vec<Vec<u8>>, usize> {
        oids.iter()
            .enumerate()
            .map(|(i, oid)| {
                let value = match self.recording.get(oid) {
                    Some(value) => value.clone(),
                    None if oid.len() > 1 && self.recording.has_under(&oid[..oid.len() - 1]) => {
                        RecordedValue::NoSuchInstance
                    }
                    None => RecordedValue::NoSuchObject,
                };
                if v1 && (value.is_exception() || matches!(value, RecordedValue::Counter64(_))) {
                    return Err(i);
                }
                Ok(ber::varbind(oid, &ber::value(&value)))
            })
            .collect()
    }

    /// The object after `oid` in the view (for v1, one it can carry).
    fn next(&self, oid: &[u64], v1: bool) -> Option<&(Oid, RecordedValue)> {
        let mut from = oid;
        loop {
            let found = self.recording.next_after(from)?;
            if v1 && matches!(found.1, RecordedValue::Counter64(_)) {
                from = &found.0;
                continue;
            }
            return Some(found);
        }
    }

    fn get_next(&self, oids: &[&[u64]], v1: bool) -> Result<Vec<Vec<u8>>, usize> {
        oids.iter()
            .enumerate()
            .map(|(i, oid)| match self.next(oid, v1) {
                Some((next, value)) => Ok(ber::varbind(next, &ber::value(value))),
                None if v1 => Err(i),
                None => Ok(ber::varbind(oid, &ber::value(&RecordedValue::EndOfMibView))),
            })
            .collect()
    }

    fn get_bulk(
        &self,
        oids: &[&[u64]],
        non_repeaters: usize,
        max_repetitions: usize,
    ) -> Vec<Vec<u8>> {
        let end = ber::value(&RecordedValue::EndOfMibView);
        let budget = MAX_REPLY_BYTES.saturating_sub(ber::envelope_bytes(&self.community));
        let split = non_repeaters.min(oids.len());
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut used = 0;
        for oid in &oids[..split] {
            let varbind = match self.next(oid, false) {
                Some((next, value)) => ber::varbind(next, &ber::value(value)),
                None => ber::varbind(oid, &end),
            };
            used += varbind.len();
            out.push(varbind);
        }
        let mut columns: Vec<Oid> = oids[split..].iter().map(|o| o.to_vec()).collect();
        if columns.is_empty() {
            return out;
        }
        for _ in 0..max_repetitions {
            let mut row = Vec::with_capacity(columns.len());
            let mut all_ended = true;
            for column in &mut columns {
                let varbind = match self.next(column, false) {
                    Some((next, value)) => {
                        all_ended = false;
                        *column = next.clone();
                        ber::varbind(next, &ber::value(value))
                    }
                    None => ber::varbind(column, &end),
                };
                row.push(varbind);
            }
            let size: usize = row.iter().map(Vec::len).sum();
            if used + size > budget {
                break;
            }
            used += size;
            out.extend(row);
            if all_ended {
                break;
            }
        }
        out
    }
}

/// A [`Responder`] serving on `127.0.0.1`, on a port the system picks,
/// until dropped.
#[derive(Debug)]
pub struct Agent {
    endpoint: SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start(responder: Responder) -> std::io::Result<Agent> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let endpoint = socket.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_536];
            loop {
                let (length, peer) = match socket.recv_from(&mut buffer).await {
                    Ok(received) => received,
                    // ICMP errors of an earlier send surface here on Linux.
                    Err(error) => {
                        tracing::debug!(%error, "snmprec agent: receive");
                        continue;
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let Some(reply) = buffer.get(..length).and_then(|d| responder.answer(d)) else {
                    continue;
                };
                if let Err(error) = socket.send_to(&reply, peer).await {
                    tracing::debug!(%error, %peer, "snmprec agent: send");
                }
            }
        });
        Ok(Agent {
            endpoint,
            requests,
            task,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// Datagrams received so far (answered or not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
