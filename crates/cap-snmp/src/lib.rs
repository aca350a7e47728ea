//! `vigil:plugin/snmp`: SNMP to the endpoint of the resource a run is for.
//!
//! The capability whole: site and plugin settings ([`settings`]), the
//! network client ([`client`]) and the WIT implementation here. A plugin
//! gets it only when its ini asks for `snmp` and the site allows it; it
//! names OIDs, never an address, a port or a credential. Credentials never
//! enter a plugin's memory or a log line.
//!
//! A plugin inside its limits must not be able to use the host against
//! anyone, so on the first call of a run, before any datagram, the host
//! ([`SnmpRun`]):
//! 1. parses the resource's endpoint: an IP literal, optionally with a
//!    port. A name is refused unless the site sets `[snmp] resolve_names`,
//!    because looking it up already sends the plugin's chosen text to a DNS
//!    server (a channel out of a plugin that has no network grant); with
//!    it, every address the name resolves to must pass step 2;
//! 2. checks the address against the site's reach ([`settings::Reach`]):
//!    `allowed_networks`, and never link-local, metadata, multicast,
//!    broadcast, reserved or unspecified addresses unless named there;
//! 3. picks the first `[[snmp.credentials]]` rule whose owner
//!    (`discovery_plugins`, matched against the `creation_plugin` the host
//!    recorded), `networks` and `filter` all hold. Every rule is bound to an
//!    owner or a network, so fields a plugin writes (id, site) can only
//!    narrow a rule, never earn a credential.
//!
//! A refusal is `not-granted`, names the resource, the endpoint and the
//! reason, ends up in the run record, and nothing is sent (the hostile SNMP
//! suite listens on loopback to prove it).
//!
//! Limits: each reply waits at most the plugin's `timeout` (and never past
//! the run's deadline), with `retries`; one request in flight per device
//! and credential entry across the host, held per attempt and shared fairly
//! between plugins and resource owners, and at most
//! `max_requests_per_second_per_device` datagrams per second per device
//! ([`client::DeviceGates`] argues the numbers); at most
//! `max_varbinds_per_run` varbinds and `max_bytes_per_run` bytes per run; at
//! most `max_oids_per_request` OIDs per call, each checked against RFC 2578,
//! and never a request longer than the library can encode ([`client`] says
//! why that matters: the library panicked on it). Every call is also
//! charged to the run's host-call quota.

pub mod client;
pub mod settings;

use std::sync::Arc;
use std::time::Instant;

use client::{Arcs, Attempts, Device, DeviceGates, Endpoint, Request, Response};
pub use settings::{RequestOptions, SnmpSettings};
use vigil_core::model::Resource;
use vigil_wit::HostCalls;
use vigil_wit::vigil::plugin::snmp::Host;
pub use vigil_wit::vigil::plugin::snmp::{SnmpError, Value, Varbind};
use wasmtime::component::{HasData, Linker};

/// The host-wide half: the site's settings and the per-device gates.
#[derive(Debug, Default)]
pub struct SnmpService {
    pub settings: SnmpSettings,
    gates: Arc<DeviceGates>,
}

impl SnmpService {
    pub fn new(settings: SnmpSettings) -> SnmpService {
        let gates = Arc::new(DeviceGates::new(
            settings.max_requests_per_second_per_device,
        ));
        SnmpService { settings, gates }
    }

    /// Devices currently being talked to (or waited for).
    pub fn busy_devices(&self) -> usize {
        self.gates.busy()
    }

    /// Panics inside the SNMP library caught so far; each failed one call
    /// with `malformed-response` and nothing else.
    pub fn caught_panics(&self) -> u64 {
        self.gates.caught_panics()
    }
}

/// What SNMP did during one run, for the run record and polling status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnmpSummary {
    /// `resource-id (address)` once resolved, else the resource id.
    pub device: String,
    /// Calls that reached the network part (after the OID checks).
    pub requests: u64,
    /// Attempts actually sent to the device (retries included); 0 when the
    /// endpoint was refused or no credential held.
    pub attempts: u64,
    pub varbinds: u64,
    /// Attempts that got no reply (each retry counts).
    pub timeouts: u64,
    /// Calls that returned an error to the plugin.
    pub failed_calls: u64,
    /// The last error a call returned.
    pub last_error: Option<SnmpError>,
    /// A call was still waiting on the device when the run ended.
    pub in_flight: bool,
    /// Walks the agent answered out of order, one line each (at most
    /// [`MAX_WALK_NOTES`]), e.g. `1.3.6.1.2.1.2.2: 1 OID out of order
    /// (1.3.6.1.2.1.2.2.1.7.600 came after 1.3.6.1.2.1.2.2.1.7.600), 1
    /// repeated`.
    pub walk_notes: Vec<String>,
    /// Walks ended by an agent that kept repeating itself: they may lack
    /// objects, so the run counts as a partial failure.
    pub walks_cut_short: u64,
}

/// Walk notes kept per run.
pub const MAX_WALK_NOTES: usize = 8;

/// How an agent strayed from OID order during one walk.
#[derive(Debug, Default)]
struct WalkNotes {
    out_of_order: u64,
    repeated: u64,
    first: Option<String>,
    cut_short: bool,
}

impl SnmpSummary {
    /// One line for the run record, e.g. `snmp core-1 (10.0.0.1:161): 4
    /// requests, 612 varbinds; last error: timeout: ...`.
    ///
    /// The last error is left out when `context` (what the run record
    /// already says) contains it, as when the plugin passed it on.
    pub fn describe(&self, context: &str) -> String {
        let mut text = format!(
            "snmp {}: {} requests, {} varbinds",
            self.device, self.requests, self.varbinds
        );
        if self.in_flight {
            text.push_str("; still waiting on the device when the run ended");
        }
        if let Some(error) = &self.last_error {
            let described = describe_error(error);
            if !context.contains(&described) {
                text.push_str(&format!("; last error: {described}"));
            }
        }
        for note in &self.walk_notes {
            text.push_str(&format!("; walk of {note}"));
        }
        text
    }

    fn note_walk(&mut self, subtree: &str, notes: &WalkNotes) {
        if notes.cut_short {
            self.walks_cut_short += 1;
        }
        if self.walk_notes.len() >= MAX_WALK_NOTES {
            return;
        }
        let mut parts = Vec::new();
        if notes.out_of_order > 0 {
            parts.push(format!(
                "{} OID{} out of order ({}; skipped or sorted)",
                notes.out_of_order,
                if notes.out_of_order == 1 { "" } else { "s" },
                notes.first.as_deref().unwrap_or("")
            ));
        }
        if notes.repeated > 0 {
            parts.push(format!("{} repeated", notes.repeated));
        }
        if notes.cut_short {
            parts.push("ended early: the agent kept repeating itself".to_owned());
        }
        self.walk_notes
            .push(format!("{subtree}: {}", parts.join(", ")));
    }
}

pub fn describe_error(error: &SnmpError) -> String {
    match error {
        SnmpError::NotGranted(m) => format!("not granted: {m}"),
        SnmpError::Timeout(m) => format!("timeout: {m}"),
        SnmpError::AuthenticationFailed(m) => format!("authentication failed: {m}"),
        SnmpError::AgentError(m) => format!("agent error: {m}"),
        SnmpError::MalformedResponse(m) => format!("malformed response: {m}"),
        SnmpError::QuotaExceeded(m) => format!("varbind quota exceeded: {m}"),
        SnmpError::InvalidRequest(m) => format!("invalid request: {m}"),
    }
}

/// The per-run half, living in the run's [`HostState`].
pub struct SnmpRun {
    service: Arc<SnmpService>,
    /// The host's record, shared with the run (not copied per run).
    resource: Arc<Resource>,
    options: RequestOptions,
    /// Varbinds the run may still receive.
    budget: u64,
    /// Bytes of OIDs and values the run may still receive.
    byte_budget: u64,
    /// Resolved on the first call.
    device: Option<Result<Device, SnmpError>>,
    /// The polling (or enrichment) plugin making the calls, when known.
    plugin: Option<String>,
    /// Who waits for the device: plugin and resource owner.
    tenant: Option<Arc<str>>,
    pub summary: SnmpSummary,
}

impl SnmpRun {
    pub fn new(
        service: Arc<SnmpService>,
        resource: impl Into<Arc<Resource>>,
        options: RequestOptions,
    ) -> SnmpRun {
        let resource = resource.into();
        let budget = service.settings.max_varbinds_per_run;
        let byte_budget = service.settings.max_bytes_per_run;
        SnmpRun {
            summary: SnmpSummary {
                device: resource.id.clone(),
                ..SnmpSummary::default()
            },
            service,
            resource,
            options,
            budget,
            byte_budget,
            device: None,
            plugin: None,
            tenant: None,
        }
    }

    /// Names the plugin making the calls; devices are shared fairly
    /// between plugins (and resource owners).
    pub fn set_plugin(&mut self, name: &str) {
        if self.plugin.as_deref() != Some(name) {
            self.plugin = Some(name.to_owned());
            self.tenant = None;
        }
    }

    fn tenant(&mut self) -> Arc<str> {
        let plugin = self.plugin.as_deref().unwrap_or("");
        let owner = &self.resource.creation_plugin;
        self.tenant
            .get_or_insert_with(|| Arc::from(format!("{plugin}\u{1f}{owner}")))
            .clone()
    }

    /// Where the resource's endpoint may be reached, checked against the
    /// site's reach, with the credential that holds for it.
    async fn locate(&self, deadline: Instant) -> Result<Device, SnmpError> {
        let settings = &self.service.settings;
        let id = &self.resource.id;
        let endpoint = self.resource.endpoint.trim();
        if endpoint.is_empty() {
            return Err(SnmpError::NotGranted(format!(
                "resource {id} has no endpoint to poll"
            )));
        }
        let refused = |why: &str| {
            let shown: String = endpoint.chars().take(128).collect();
            SnmpError::NotGranted(format!(
                "resource {id}: endpoint {shown:?} refused: {why}; nothing was sent"
            ))
        };
        let (ip, port) = match client::parse_endpoint(endpoint).map_err(|e| refused(&e))? {
            Endpoint::Address { ip, port } => {
                settings.reach.check(ip).map_err(|e| refused(&e))?;
                (ip, port)
            }
            Endpoint::Name { host, port } => {
                if !settings.reach.resolve_names {
                    return Err(refused(
                        "it is a name, not an IP address, and names are not looked up unless the site sets [snmp] resolve_names = true",
                    ));
                }
                let addresses = client::lookup(&host, deadline)
                    .await
                    .map_err(|e| SnmpError::Timeout(format!("resource {id}: {e}")))?;
                for address in &addresses {
                    settings
                        .reach
                        .check(*address)
                        .map_err(|e| refused(&format!("{host} resolves to {e}")))?;
                }
                (addresses[0], port)
            }
        };
        let ip = settings::canonical(ip);
        let rule = settings.credential_for(&self.resource, ip).ok_or_else(|| {
            SnmpError::NotGranted(format!(
                "no [[snmp.credentials]] entry in the site config holds for resource {id} (discovered by {:?}, address {ip})",
                self.resource.creation_plugin
            ))
        })?;
        let address = std::net::SocketAddr::new(ip, port.unwrap_or(rule.port));
        Ok(Device::new(id, address, rule))
    }

    async fn device(&mut self, deadline: Instant) -> Result<&mut Device, SnmpError> {
        if self.device.is_none() {
            let resolved = self.locate(deadline).await;
            if let Ok(device) = &resolved {
                self.summary.device = device.label.clone();
            }
            self.device = Some(resolved);
        }
        match self.device.as_mut() {
            Some(Ok(device)) => Ok(device),
            Some(Err(error)) => Err(error.clone()),
            None => Err(SnmpError::NotGranted("device not resolved".to_owned())),
        }
    }

    /// One request with retries, accounted in the summary and the budget.
    async fn exchange(
        &mut self,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, SnmpError> {
        let gates = self.service.gates.clone();
        let tenant = self.tenant();
        let options = self.options;
        let mut attempts = Attempts::default();
        self.summary.in_flight = true;
        let result = match self.device(deadline).await {
            Ok(device) => {
                device
                    .exchange(&gates, &tenant, &request, options, deadline, &mut attempts)
                    .await
            }
            Err(error) => Err(error),
        };
        self.summary.in_flight = false;
        self.summary.timeouts += attempts.timeouts;
        self.summary.attempts += attempts.sent;
        self.summary.requests += 1;
        let response = result?;
        let count = response.varbinds.len() as u64;
        self.summary.varbinds += count;
        self.budget = self.budget.saturating_sub(count);
        let bytes: u64 = response
            .varbinds
            .iter()
            .map(|(oid, value)| 8 * oid.len() as u64 + value_bytes(value))
            .sum();
        if bytes > self.byte_budget {
            self.byte_budget = 0;
            return Err(SnmpError::QuotaExceeded(format!(
                "{}: replies exceed the run's {} bytes ([snmp] max_bytes_per_run in the site config)",
                self.summary.device, self.service.settings.max_bytes_per_run
            )));
        }
        self.byte_budget -= bytes;
        Ok(response)
    }

    fn version(&self) -> Option<snmp2::Version> {
        match &self.device {
            Some(Ok(device)) => Some(device.version()),
            _ => None,
        }
    }

    fn check_budget(&self, wanted: u64) -> Result<(), SnmpError> {
        if wanted > self.budget {
            return Err(SnmpError::QuotaExceeded(format!(
                "the run may receive {} varbinds in all ([snmp] max_varbinds_per_run in the site config); {} left, {wanted} asked",
                self.service.settings.max_varbinds_per_run, self.budget
            )));
        }
        Ok(())
    }

    fn record<T>(&mut self, result: Result<T, SnmpError>) -> Result<T, SnmpError> {
        if let Err(error) = &result {
            self.summary.failed_calls += 1;
            self.summary.last_error = Some(error.clone());
        }
        result
    }

    /// GET, one varbind per OID in the order asked. An SNMPv1 noSuchName
    /// marks that OID missing and asks again for the rest.
    pub async fn get(
        &mut self,
        oids: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<Varbind>, SnmpError> {
        let result = self.get_inner(oids, deadline).await;
        self.record(result)
    }

    async fn get_inner(
        &mut self,
        oids: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<Varbind>, SnmpError> {
        let arcs = parse_request(&oids, self.service.settings.max_oids_per_request)?;
        self.check_budget(arcs.len() as u64)?;
        let mut values: Vec<Option<Value>> = vec![None; arcs.len()];
        loop {
            let pending: Vec<usize> = (0..arcs.len()).filter(|&i| values[i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let request = Request::Get(pending.iter().map(|&i| arcs[i].clone()).collect());
            let response = self.exchange(request, deadline).await?;
            if response.error_status == 2 {
                // noSuchName (SNMPv1): that object is missing; the rest may
                // not be.
                let position = response.error_index as usize;
                let Some(&missing) = position.checked_sub(1).and_then(|p| pending.get(p)) else {
                    return Err(self.malformed("noSuchName with an error index out of range"));
                };
                values[missing] = Some(Value::NoSuchInstance);
                continue;
            }
            self.check_status(&response)?;
            if response.varbinds.len() != pending.len() {
                return Err(self.malformed(&format!(
                    "{} varbinds in the reply to a GET of {} (undecodable varbind?)",
                    response.varbinds.len(),
                    pending.len()
                )));
            }
            for (&i, (oid, value)) in pending.iter().zip(response.varbinds) {
                if oid != arcs[i] {
                    return Err(self.malformed(&format!(
                        "asked for {}, got {}",
                        client::format_oid(&arcs[i]),
                        client::format_oid(&oid)
                    )));
                }
                values[i] = Some(value);
            }
        }
        Ok(oids
            .into_iter()
            .zip(values)
            .map(|(oid, value)| Varbind {
                oid: oid.trim_start_matches('.').to_owned(),
                value: value.unwrap_or(Value::NoSuchInstance),
            })
            .collect())
    }

    /// GETNEXT for each OID.
    pub async fn get_next(
        &mut self,
        oids: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<Varbind>, SnmpError> {
        let result = self.get_next_inner(oids, deadline).await;
        self.record(result)
    }

    async fn get_next_inner(
        &mut self,
        oids: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<Varbind>, SnmpError> {
        let arcs = parse_request(&oids, self.service.settings.max_oids_per_request)?;
        self.check_budget(arcs.len() as u64)?;
        // Resolve first: SNMPv1 has no GETBULK to carry several OIDs.
        self.device(deadline).await?;
        let batches: Vec<Vec<Arcs>> = if self.version() == Some(snmp2::Version::V1) {
            arcs.iter().map(|a| vec![a.clone()]).collect()
        } else {
            vec![arcs.clone()]
        };
        let mut varbinds = Vec::with_capacity(arcs.len());
        for batch in batches {
            let asked = batch.len();
            let response = self
                .exchange(Request::GetNext(batch.clone()), deadline)
                .await?;
            if response.error_status == 2 && asked == 1 {
                // SNMPv1's way of saying "nothing after this".
                varbinds.push(Varbind {
                    oid: client::format_oid(&batch[0]),
                    value: Value::EndOfMibView,
                });
                continue;
            }
            self.check_status(&response)?;
            if response.varbinds.len() != asked {
                return Err(self.malformed(&format!(
                    "{} varbinds in the reply to a GETNEXT of {asked}",
                    response.varbinds.len()
                )));
            }
            varbinds.extend(response.varbinds.into_iter().map(|(oid, value)| Varbind {
                oid: client::format_oid(&oid),
                value,
            }));
        }
        Ok(varbinds)
    }

    /// Every object under `subtree`, each once, in increasing OID order,
    /// from an agent that may not keep to that order (see [`WalkNotes`]).
    pub async fn walk(
        &mut self,
        subtree: String,
        deadline: Instant,
    ) -> Result<Vec<Varbind>, SnmpError> {
        let result = self.walk_inner(&subtree, deadline).await;
        self.record(result)
    }

    /// The walk, tolerant of the disorder real agents show.
    ///
    /// Real device walks hold rows out of place: a recording of a Juniper
    /// MX here repeats one ifTable row, others have a row of one table
    /// among another's, and an agent serving such a walk answers GETNEXT
    /// in that order. Stopping at the first OID that does not increase
    /// (as this walk did, and as `snmpwalk` does without `-Cc`) loses the
    /// rest of the table silently: every 64-bit counter of a device, for
    /// one misplaced row. So, like net-snmp's `-Cc`:
    ///
    /// * every varbind inside the subtree is kept once (the first value
    ///   wins) and the result is sorted, whatever order it came in;
    /// * an OID *before* the subtree is a misplaced row, skipped; an OID
    ///   after it (or endOfMibView) is the end, as for any walk;
    /// * the next request continues from the last OID the agent returned,
    ///   so an agent serving its rows in stored order is followed through
    ///   them;
    /// * a reply that brings nothing new is a stall: the walk jumps once
    ///   to the highest OID seen, and a second stall in a row ends it. That
    ///   bounds a looping agent: each request either adds an object (at
    ///   most `max_varbinds_per_run` of them per run, the budget every
    ///   returned varbind is charged to, repeats included) or is one of at
    ///   most two stalls.
    ///
    /// What was out of order is noted in the run's summary; a walk ended
    /// by a stall may have missed objects, so it also counts as cut short
    /// (the polling status then says `PARTIAL_METRIC_FAILURE`).
    async fn walk_inner(
        &mut self,
        subtree: &str,
        deadline: Instant,
    ) -> Result<Vec<Varbind>, SnmpError> {
        let root = client::parse_oid(subtree)?;
        self.device(deadline).await?;
        let v1 = self.version() == Some(snmp2::Version::V1);
        let mut repetitions = self.options.max_repetitions;
        let mut cursor = root.clone();
        let mut highest = root.clone();
        let mut found: std::collections::BTreeMap<Arcs, Value> = std::collections::BTreeMap::new();
        let mut notes = WalkNotes::default();
        let mut stalls = 0u32;
        loop {
            if self.budget == 0 {
                self.check_budget(1)?;
            }
            let request = if v1 {
                Request::GetNext(vec![cursor.clone()])
            } else {
                Request::Bulk {
                    start: cursor.clone(),
                    max_repetitions: repetitions.min(self.budget.min(u64::from(u32::MAX)) as u32),
                }
            };
            let response = self.exchange(request, deadline).await?;
            match response.error_status {
                0 => {}
                // The end of the v1 agent's view.
                2 if v1 => break,
                // Too big for one datagram: ask for fewer rows.
                1 if !v1 && repetitions > 1 => {
                    repetitions = (repetitions / 2).max(1);
                    continue;
                }
                _ => self.check_status(&response)?,
            }
            if response.varbinds.is_empty() {
                return Err(self.malformed(&format!(
                    "empty reply while walking {} (at {})",
                    client::format_oid(&root),
                    client::format_oid(&cursor)
                )));
            }
            let mut finished = false;
            let mut progressed = false;
            let mut previous = cursor.clone();
            for (oid, value) in response.varbinds {
                if matches!(value, Value::EndOfMibView) || (oid > root && !oid.starts_with(&root)) {
                    finished = true;
                    break;
                }
                if oid <= previous {
                    notes.out_of_order += 1;
                    notes.first.get_or_insert_with(|| {
                        format!(
                            "{} came after {}",
                            client::format_oid(&oid),
                            client::format_oid(&previous)
                        )
                    });
                }
                previous = oid.clone();
                if !oid.starts_with(&root) {
                    // Before the subtree: a misplaced row of another table.
                    continue;
                }
                if oid > highest {
                    highest = oid.clone();
                }
                if let std::collections::btree_map::Entry::Vacant(slot) = found.entry(oid) {
                    slot.insert(value);
                    progressed = true;
                } else {
                    notes.repeated += 1;
                }
            }
            if finished {
                break;
            }
            if progressed {
                stalls = 0;
                cursor = previous;
            } else {
                stalls += 1;
                if stalls > 1 || highest <= cursor {
                    notes.cut_short = true;
                    break;
                }
                cursor = highest.clone();
            }
        }
        if notes.out_of_order > 0 || notes.repeated > 0 || notes.cut_short {
            self.summary.note_walk(&client::format_oid(&root), &notes);
        }
        Ok(found
            .into_iter()
            .map(|(oid, value)| Varbind {
                oid: client::format_oid(&oid),
                value,
            })
            .collect())
    }

    fn check_status(&self, response: &Response) -> Result<(), SnmpError> {
        if response.error_status == 0 {
            return Ok(());
        }
        Err(SnmpError::AgentError(format!(
            "{}: {} (error index {})",
            self.summary.device,
            client::error_status_name(response.error_status),
            response.error_index
        )))
    }

    fn malformed(&self, what: &str) -> SnmpError {
        SnmpError::MalformedResponse(format!("{}: {what}", self.summary.device))
    }
}

fn value_bytes(value: &Value) -> u64 {
    match value {
        Value::OctetString(bytes) | Value::Opaque(bytes) => bytes.len() as u64,
        Value::ObjectId(text) => text.len() as u64,
        _ => 8,
    }
}

fn parse_request(oids: &[String], most: usize) -> Result<Vec<Arcs>, SnmpError> {
    if oids.is_empty() {
        return Err(SnmpError::InvalidRequest("no OIDs given".to_owned()));
    }
    if oids.len() > most {
        return Err(SnmpError::InvalidRequest(format!(
            "{} OIDs in one call; at most {most} ([snmp] max_oids_per_request in the site config)",
            oids.len()
        )));
    }
    oids.iter().map(|oid| client::parse_oid(oid)).collect()
}

fn not_granted() -> SnmpError {
    SnmpError::NotGranted(
        "SNMP needs `snmp = yes` under [capabilities] in the plugin's ini, the site's capabilities.allowed, and a resource to poll".to_owned(),
    )
}

/// What the `snmp` import sees of a run: the run's host-call budget, its
/// SNMP half (absent when not granted or when the run has no resource), the
/// calling plugin and the run's deadline. The runner builds one per call
/// from its own store data (see [`add_to_linker`]).
pub struct Snmp<'a> {
    pub calls: &'a mut HostCalls,
    pub run: Option<&'a mut SnmpRun>,
    pub plugin: &'a str,
    pub deadline: Instant,
}

impl Snmp<'_> {
    /// Charges the call, then hands out the run's SNMP half told which
    /// plugin is calling.
    fn begin(&mut self) -> wasmtime::Result<Option<&mut SnmpRun>> {
        self.calls.charge()?;
        let run = self.run.as_deref_mut();
        if let Some(run) = run {
            run.set_plugin(self.plugin);
            return Ok(Some(run));
        }
        Ok(None)
    }
}

/// `HasData` for the `snmp` import: its store data is an [`Snmp`] view.
pub struct SnmpCapability;

impl HasData for SnmpCapability {
    type Data<'a> = Snmp<'a>;
}

/// Adds the `snmp` import to `linker`; `view` picks the run's parts out of
/// the runner's store data `T`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Snmp<'_>,
) -> wasmtime::Result<()> {
    vigil_wit::vigil::plugin::snmp::add_to_linker::<T, SnmpCapability>(linker, view)
}

impl Host for Snmp<'_> {
    async fn get(
        &mut self,
        oids: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Varbind>, SnmpError>> {
        let deadline = self.deadline;
        Ok(match self.begin()? {
            Some(run) => run.get(oids, deadline).await,
            None => Err(not_granted()),
        })
    }

    async fn get_next(
        &mut self,
        oids: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Varbind>, SnmpError>> {
        let deadline = self.deadline;
        Ok(match self.begin()? {
            Some(run) => run.get_next(oids, deadline).await,
            None => Err(not_granted()),
        })
    }

    async fn walk(&mut self, subtree: String) -> wasmtime::Result<Result<Vec<Varbind>, SnmpError>> {
        let deadline = self.deadline;
        Ok(match self.begin()? {
            Some(run) => run.walk(subtree, deadline).await,
            None => Err(not_granted()),
        })
    }
}
