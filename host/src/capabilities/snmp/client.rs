//! The network side of the SNMP capability: one device per run, one request
//! in flight per device across the whole host, timeouts and retries, and
//! the checks that keep a broken agent from hanging or crashing anything.
//!
//! `snmp2` sends and parses; it has no timeout, retry or walk of its own.
//! Every attempt here runs under `min(timeout, time left in the run)`; a
//! timed-out session is dropped so a late reply lands on a dead socket
//! instead of confusing the next request; a walk must move strictly forward
//! in OID order and stops at the run's varbind budget.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snmp2::{AsyncSession, Oid, Pdu, Version};
use tokio::sync::OwnedMutexGuard;

use super::settings::{Credential, CredentialRule, RequestOptions};
use crate::bindings::vigil::plugin::snmp::{SnmpError, Value};

/// Time kept back from the run's deadline so the plugin can still turn an
/// SNMP timeout into its own result.
const DEADLINE_RESERVE: Duration = Duration::from_millis(100);
/// Most OIDs in one GET or GETNEXT call.
pub const MAX_OIDS_PER_REQUEST: usize = 128;
/// Most sub-identifiers in an OID (RFC 2578).
const MAX_OID_ARCS: usize = 128;

/// An OID as its sub-identifiers.
pub type Arcs = Vec<u64>;

/// One-request-at-a-time locks, one per device address, shared by every
/// run in the host. Entries go away when nobody holds or waits for them.
#[derive(Debug, Default)]
pub struct DeviceLocks {
    locks: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
}

impl DeviceLocks {
    async fn acquire(self: &Arc<Self>, address: SocketAddr) -> DeviceGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(address).or_default().clone()
        };
        DeviceGuard {
            guard: Some(lock.lock_owned().await),
            locks: self.clone(),
            address,
        }
    }

    /// Devices with a lock entry (held or awaited), for tests.
    pub fn tracked(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

struct DeviceGuard {
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<DeviceLocks>,
    address: SocketAddr,
}

impl Drop for DeviceGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map's own reference left: nobody holds or awaits it.
        if locks
            .get(&self.address)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.address);
        }
    }
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

/// Parses a dotted OID from a plugin (`1.3.6.1.2.1.1.3.0`, leading dot allowed).
pub fn parse_oid(text: &str) -> Result<Arcs, SnmpError> {
    let invalid = |why: &str| SnmpError::InvalidRequest(format!("OID {text:?}: {why}"));
    let body = text.trim().strip_prefix('.').unwrap_or(text.trim());
    if body.is_empty() {
        return Err(invalid("empty"));
    }
    let arcs = body
        .split('.')
        .map(|part| {
            part.parse::<u32>()
                .map(u64::from)
                .map_err(|_| invalid("each part must be a number from 0 to 4294967295"))
        })
        .collect::<Result<Arcs, _>>()?;
    if arcs.len() < 2 || arcs.len() > MAX_OID_ARCS {
        return Err(invalid("must have 2 to 128 parts"));
    }
    if arcs[0] > 2 || (arcs[0] < 2 && arcs[1] >= 40) {
        return Err(invalid("not a valid object identifier (first arcs)"));
    }
    Ok(arcs)
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

/// The device a run talks to, resolved from the resource's endpoint.
pub struct Device {
    pub address: SocketAddr,
    /// `resource-id (address)`, for messages.
    pub label: String,
    rule: CredentialRule,
    session: Option<Box<AsyncSession>>,
    next_request_id: i32,
}

impl Device {
    /// Resolves `endpoint` (`host`, `host:port`, `ip`, `[ipv6]:port`); a port
    /// in the endpoint wins over the credential's.
    pub async fn resolve(
        resource_id: &str,
        endpoint: &str,
        rule: &CredentialRule,
        deadline: Instant,
    ) -> Result<Device, SnmpError> {
        let endpoint = endpoint.trim();
        let address = if let Ok(address) = endpoint.parse::<SocketAddr>() {
            address
        } else if let Ok(ip) = endpoint.trim_matches(['[', ']']).parse::<IpAddr>() {
            SocketAddr::new(ip, rule.port)
        } else {
            if endpoint.is_empty() {
                return Err(SnmpError::NotGranted(format!(
                    "resource {resource_id} has no endpoint to poll"
                )));
            }
            let query = if endpoint.contains(':') {
                endpoint.to_owned()
            } else {
                format!("{endpoint}:{}", rule.port)
            };
            let lookup =
                tokio::time::timeout_at(deadline.into(), tokio::net::lookup_host(query.clone()))
                    .await
                    .map_err(|_| {
                        SnmpError::Timeout(format!("resolving {query} for {resource_id}"))
                    })?;
            lookup
                .map_err(|e| {
                    SnmpError::Timeout(format!("cannot resolve {query} for {resource_id}: {e}"))
                })?
                .next()
                .ok_or_else(|| {
                    SnmpError::Timeout(format!("{query} for {resource_id} has no address"))
                })?
        };
        Ok(Device {
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
        })
    }

    pub fn version(&self) -> Version {
        match self.rule.credential {
            Credential::V1 { .. } => Version::V1,
            Credential::V2c { .. } => Version::V2C,
            Credential::V3(_) => Version::V3,
        }
    }

    /// Sends `request` with retries, holding the device's lock for the
    /// whole exchange. `timeouts` counts attempts that got no reply.
    pub async fn exchange(
        &mut self,
        locks: &Arc<DeviceLocks>,
        request: &Request,
        options: RequestOptions,
        deadline: Instant,
        timeouts: &mut u64,
    ) -> Result<Response, SnmpError> {
        let cutoff = deadline.checked_sub(DEADLINE_RESERVE).unwrap_or(deadline);
        let _turn = tokio::time::timeout_at(cutoff.into(), locks.acquire(self.address))
            .await
            .map_err(|_| {
                SnmpError::Timeout(format!(
                    "{}: another request to this device held it until the run deadline",
                    self.label
                ))
            })?;
        let attempts = options.retries + 1;
        let mut refused = false;
        for attempt in 1..=attempts {
            let now = Instant::now();
            if now >= cutoff {
                return Err(SnmpError::Timeout(format!(
                    "{}: no reply before the run deadline ({} of {attempts} attempts made)",
                    self.label,
                    attempt - 1
                )));
            }
            let budget = options.timeout.min(cutoff - now);
            let started = Instant::now();
            match tokio::time::timeout(budget, self.attempt(request)).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(AttemptError::Fatal(error))) => {
                    self.session = None;
                    return Err(error);
                }
                Ok(Err(AttemptError::Refused)) => {
                    // UDP has no connection: an ICMP "port unreachable" is
                    // advisory, and net-snmp and snmp_exporter ignore it.
                    // Wait out the attempt like any other lost reply.
                    refused = true;
                    self.session = None;
                    *timeouts += 1;
                    tokio::time::sleep(budget.saturating_sub(started.elapsed())).await;
                }
                Ok(Err(AttemptError::Retry)) => {
                    self.session = None;
                }
                Err(_elapsed) => {
                    self.session = None;
                    *timeouts += 1;
                }
            }
        }
        Err(SnmpError::Timeout(format!(
            "{}: no reply after {attempts} attempts of {:?}{}",
            self.label,
            options.timeout,
            if refused {
                " (ICMP port unreachable)"
            } else {
                ""
            }
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

    #[tokio::test]
    async fn device_locks_serialise_and_clean_up() {
        let locks = Arc::new(DeviceLocks::default());
        let address: SocketAddr = "127.0.0.1:161".parse().expect("address");
        let first = locks.acquire(address).await;
        let second = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _guard = locks.acquire(address).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !second.is_finished(),
            "second request ran while the first held the device"
        );
        drop(first);
        second.await.expect("join");
        assert_eq!(locks.tracked(), 0);
    }
}
