//! vigil's live APIC source for the endpoint tracker (issue #14): one
//! [`Subscriber`] per ACI fabric, carrying forward the subscriber of Cisco's
//! Enhanced Endpoint Tracker (EPT). It reads the APIC and writes to the
//! tracker's one seam, [`vigil_endpoints::ingest::EventSink`]; parsing (EPT's
//! DN grammar), the fabric model and the history rules are
//! `vigil-endpoints`', used here unchanged.
//!
//! # A session
//!
//! 1. **Login.** `POST /api/aaaLogin.json` with
//!    `{"aaaUser":{"attributes":{"name","pwd"}}}` to each configured APIC in
//!    turn; the first to accept gives the token (sent as the `APIC-cookie`
//!    cookie) and its `refreshTimeoutSeconds` (APIC's default 600 s). The
//!    token is refreshed with `GET /api/aaaRefresh.json` at half of that.
//!    A refused login (HTTP 401 with APIC's error text) is reported as
//!    [`SessionError::LoginRejected`] in [`SubscriberStatus::last_error`]
//!    and retried with backoff.
//! 2. **Websocket.** `wss://<apic>/socket<token>`, messages bounded by
//!    `max_message_bytes` (default 16 MiB).
//! 3. **Build** (state [`SubscriberState::Building`]). Class queries
//!    `GET /api/class/<class>.json?order-by=<class>.dn&page=N&page-size=P`
//!    for the fabric classes EPT subscribes to
//!    ([`FABRIC_SUBSCRIPTION_CLASSES`]), then `epmMacEp`, `epmIpEp`,
//!    `epmRsMacEpToIpEpAtt` ([`ENDPOINT_CLASSES`]). Each class's first page
//!    carries `subscription=yes` and gives its `subscriptionId`; pages
//!    follow until `totalCount` is read (page size default 10,000, at most
//!    EPT's 75,000; at most `max_objects_per_build` objects over all classes,
//!    default 16 million; a build abandoned after `build_timeout`, default
//!    EPT's 5400 s). Fabric objects update an
//!    [`vigil_endpoints::apic_fabric::ApicFabric`]; fabric objects the model
//!    held that the rebuild no longer finds (deleted while disconnected) are
//!    deleted before the first endpoint class. Notifications that arrive
//!    meanwhile wait, in order, bounded by `max_buffered_bytes` (default
//!    256 MiB), and are applied after the build, as EPT does.
//! 4. **In sync** ([`SubscriberState::InSync`]). Every notification
//!    (`{"subscriptionId":[...],"imdata":[...]}`) is applied in arrival
//!    order. Every `subscription_refresh` (default 30 s; the APIC drops a
//!    subscription after about 90 s without one) each subscription is
//!    refreshed with `GET /api/subscriptionRefresh.json?id=ID`. Every
//!    `heartbeat_interval` (30 s) a websocket ping is sent; its pong must
//!    come within `heartbeat_timeout` (10 s).
//! 5. **Reconnect** ([`SubscriberState::Reconnecting`]). A closed or failed
//!    websocket, a missed pong, a failed token or subscription refresh (an
//!    APIC that no longer knows a subscription answers the refresh with an
//!    error), an oversized message, a backlog past its bound or a failed
//!    build end the session: wait (`reconnect_initial`, default 1 s,
//!    doubled after each failure up to `reconnect_max`, default 60 s; back
//!    to the start once in sync), log in again and rebuild.
//!
//! Ordering and cancellation: one task per fabric applies everything in
//! order; a reader task reads the websocket (stamping each message with its
//! receipt time and noting pongs) and a keeper task does the refreshes and
//! the heartbeat. Shutdown and session failures interrupt only waits (a
//! REST request, the next message), never a payload being applied: a
//! payload is recorded and handed to the sink whole, so the recording and
//! the live history always agree. Shutdown therefore waits for the payload
//! under way, i.e. for the sink to take its events (a sink that is shutting
//! down should answer [`SinkClosed`](vigil_endpoints::ingest::SinkClosed)).
//!
//! # What goes to the sink
//!
//! - [`EventSink::fabric`]: an `Arc<Fabric>` snapshot after each build, and
//!   whenever a payload changed fabric objects, before that payload's
//!   endpoint events.
//! - [`EventSink::event`] with [`vigil_endpoints::ingest::Source::Apic`]:
//!   each endpoint object as parsed by
//!   [`vigil_endpoints::apic::EpmParser`], with `ts` the moment its payload
//!   was received (EPT's `_ts`), in payload order. The call waits while the
//!   tracker is busy; the websocket is still read meanwhile (bounded, see
//!   above), so heartbeats stay accurate.
//! - [`EventSink::rejected`] (source `apic`) with a sample of at most 256
//!   bytes: `not_json`, `bad_payload` (not an APIC payload), `bad_object`
//!   (an endpoint object EPT's grammar refuses), `bad_fabric_object`,
//!   `not_utf8`, `message_too_large` (the session is then rebuilt: a
//!   websocket cannot be read past a message it refused). The rest of a
//!   payload is always kept.
//! - [`EventSink::subscriber_state`]: `building`, `in_sync`,
//!   `reconnecting`, `stopped`.
//!
//! # Recording and replay
//!
//! With `record_to`, every payload applied (class-query pages,
//! notifications, and the synthetic delete payload of a rebuild) is
//! appended as one JSON line, exactly as received plus a top-level `"ts"`
//! (the receipt time used for its events), in the order applied. That is
//! the format of [`vigil_endpoints::replay`], which applies payloads the
//! same way (children flattened by the same function, fabric objects before
//! events, the overlay vnid learnt from `uni/tn-infra/ctx-overlay-1`), so
//! `vigil endpoints replay FILE --fabric NAME` of a recording gives the
//! history the live path gave. A write error stops the recording (logged)
//! but not the subscriber. The file is opened for appending: use one file
//! per run (a replay of two runs in one file carries the first run's fabric
//! objects into the second).
//!
//! # Wiring it into the host
//!
//! ```ignore
//! // site.toml: [[endpoints.fabrics]] entries → Vec<RawApicConfig>
//! let configs = vigil_apic::validate_all(&raw_fabrics, site_dir)?;   // ConfigError names fabric and key
//! for config in configs {
//!     let subscriber = vigil_apic::Subscriber::new(config, sink.clone()); // sink: Arc<dyn EventSink>
//!     let status = subscriber.status();            // watch::Receiver<SubscriberStatus> for `vigil status`
//!     tokio::spawn(subscriber.run(shutdown_rx.clone())); // watch::Receiver<bool>; Ok(()) on shutdown
//! }
//! ```
//!
//! [`SubscriberStatus`] carries the state, the last error (a refused login
//! says so with APIC's text, never the password) and counters (logins,
//! builds, failures, pages, notifications, messages received, events,
//! rejections, token and subscription refreshes, subscriptions) for
//! `vigil status` and `/metrics`. Site keys, defaults and bounds are listed
//! on [`ApicConfig`]; [`RawApicConfig`] is the `[[endpoints.fabrics]]` entry
//! as written (`name`, `apic`, `username`, `password`, `tls_verify`,
//! `ca_file`, `request_timeout`, `connect_timeout`, `page_size`,
//! `max_response_bytes`, `max_message_bytes`, `max_objects_per_build`,
//! `max_buffered_bytes`, `build_timeout`, `subscription_refresh`,
//! `heartbeat_interval`, `heartbeat_timeout`, `reconnect_initial`,
//! `reconnect_max`, `record_to`).
//!
//! `run` returns an error only when it cannot go on at all
//! ([`SubscriberError`]: the sink closed, the TLS setup or the recording
//! file failed); every APIC failure is retried.
//!
//! # Security
//!
//! The password is a [`vigil_core::secret::Secret`] (never printed; read
//! inline, from `{ env = ... }` or `{ file = ... }`). TLS is verified
//! against the system roots plus an optional `ca_file`; `tls_verify =
//! false` is an explicit, logged escape hatch. Plain `http://` is accepted
//! only to loopback addresses (tests; also refused at run time for a
//! config built in code). `tests/tls.rs` checks that an unknown CA is
//! refused before anything is sent, that `ca_file` trusts a private CA and
//! that `tls_verify = false` accepts any certificate (REST; the websocket
//! uses the same client configuration). Every response, message, page,
//! build and backlog is bounded; nothing the network sends is unwrapped.
//!
//! # Not done yet
//!
//! - Endpoints that disappeared while disconnected are not deleted by a
//!   rebuild (fabric objects are): a rebuild re-reads every endpoint object
//!   the APIC has, but nothing says which ones it no longer has. EPT's
//!   answer is the node-inactive handling of §11 and its watchers, which
//!   come with the next issue.
//! - Notifications are not filtered by `subscriptionId` (an APIC only sends
//!   a session what it subscribed to).
//! - One APIC is used per session; another is tried at the next login.
//!
//! # Features
//!
//! `websocket` (default): the subscriber (reqwest, tokio-tungstenite,
//! rustls). Without it the crate is only [`config`], so a host can still
//! read and check its site file.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
#[cfg(feature = "websocket")]
pub mod subscriber;
#[cfg(feature = "websocket")]
pub mod tls;

pub use config::{ApicConfig, ApicUrl, ConfigError, RawApicConfig, validate_all};
#[cfg(feature = "websocket")]
pub use subscriber::{
    ENDPOINT_CLASSES, FABRIC_SUBSCRIPTION_CLASSES, SessionError, Subscriber, SubscriberError,
    SubscriberStatus, run,
};
pub use vigil_core::secret::{Secret, SecretSource};
#[cfg(doc)]
use vigil_endpoints::ingest::{EventSink, SubscriberState};
