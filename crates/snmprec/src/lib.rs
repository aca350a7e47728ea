//! Device recordings and an SNMP agent that plays them, so a plugin can be
//! tested offline through vigil's real SNMP client (`vigil plugins test
//! --snmprec FILE`), with no agent or simulator installed.
//!
//! * [`recording`] reads snmpsim's `.snmprec` format (`OID|TYPE|VALUE`),
//!   with errors naming the file and line, and keeps the objects in OID
//!   order.
//! * [`agent`] answers SNMP v1/v2c GET, GETNEXT and GETBULK from a
//!   recording ([`Responder`]) and serves it on an ephemeral
//!   `127.0.0.1` UDP port ([`Agent`]).
//! * [`ber`] encodes the replies.

pub mod agent;
pub mod ber;
pub mod recording;

pub use agent::{Agent, Responder};
pub use recording::{RecordedValue, Recording, RecordingError};
