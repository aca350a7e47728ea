//! vigil's integration suite, one test binary for all of it: on 2 cores a
//! test build is mostly linking, and each binary links the whole host
//! (wasmtime, librdkafka, the MongoDB driver...), so 15 suites in one binary
//! link once instead of 15 times. Each module is one suite, run with
//! `cargo test -p vigil-tests --test suite <module>::`.
//!
//! Two suites stay binaries of their own because they judge the process
//! and the machine, not only their own results: `hostile` bounds the whole
//! process's peak RSS and the good plugin's worst gap, and
//! `hostile_scheduling` counts a neighbour's runs while a flood saturates
//! both cores. In here they would share both with whatever test runs next
//! to them; cargo runs test binaries one after another, so on their own
//! they have the machine to themselves.

mod accept_path;
mod apic_subscriber;
mod capacity;
mod dashboard_queries;
mod endpoint_history;
mod hostile_loading;
mod hostile_ownership;
mod hostile_sinks;
mod hostile_snmp;
mod influxdb_sink;
mod kafka_bus;
mod loading;
mod prometheus_sinks;
mod redis_coordination;
mod snmp_capability;
mod snmp_endpoints;
mod snmp_mib;
mod snmp_plugins;
mod storage_backends;
