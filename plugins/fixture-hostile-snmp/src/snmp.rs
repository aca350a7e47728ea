//! SNMP attacks, for the hostile SNMP suite (`tests/tests/suite/hostile_snmp.rs`).
//!
//! Each reports what the host answered in a `probe` group (dimension per
//! call: `ok ...` or the error as `SnmpError::describe` words it), so the
//! test can assert the exact error kind.

use vigil_sdk::prelude::*;
use vigil_sdk::snmp as host;

/// sysUpTime.0
const SYS_UPTIME: &str = "1.3.6.1.2.1.1.3.0";

/// Runs the SNMP behaviour `name`.
pub fn run(name: &str, resource: &Resource) -> Result<Vec<MetricsGroup>, PluginError> {
    match name {
        "snmp-oid-bomb" => Ok(vec![oid_bomb(resource)]),
        "snmp-get" => Ok(vec![get(resource)]),
        "snmp-flood" => Ok(vec![flood(resource)]),
        other => Err(PluginError::configuration(format!(
            "unknown SNMP behaviour {other:?}"
        ))),
    }
}

/// At most 300 characters of an outcome, so the probe stays small.
fn outcome<T>(result: &Result<Vec<T>, host::SnmpError>) -> String {
    let text = match result {
        Ok(varbinds) => format!("ok {} varbinds", varbinds.len()),
        Err(error) => error.describe(),
    };
    text.chars().take(300).collect()
}

/// The reported crash: a GET of 128 OIDs of 128 arcs, each arc the largest
/// a u32 holds (5 bytes of BER), about 82 KB encoded. Then the same as
/// GETNEXT, 65 short OIDs (over the default count), and a walk of one
/// 128-arc OID (legal, and small enough).
fn oid_bomb(resource: &Resource) -> MetricsGroup {
    let mut arcs = vec!["1".to_owned(), "3".to_owned()];
    arcs.resize(128, u32::MAX.to_string());
    let long = arcs.join(".");
    let bomb: Vec<&str> = vec![long.as_str(); 128];
    let get = host::get(&bomb);
    let get_next = host::get_next(&bomb);
    let many: Vec<&str> = vec![SYS_UPTIME; 65];
    let count = host::get(&many);
    let walk = host::walk(&long);
    let after = host::get(&[SYS_UPTIME]);
    MetricsGroupBuilder::new("probe", 60, resource, clock::now())
        .dimension("get", outcome(&get))
        .dimension("get_next", outcome(&get_next))
        .dimension("count", outcome(&count))
        .dimension("walk", outcome(&walk))
        .dimension("after", outcome(&after))
        .gauge("done", 1u64)
        .build()
}

/// One GET of sysUpTime: what the host did with this resource's endpoint.
fn get(resource: &Resource) -> MetricsGroup {
    let result = host::get(&[SYS_UPTIME]);
    MetricsGroupBuilder::new("probe", 60, resource, clock::now())
        .dimension("result", outcome(&result))
        .gauge("done", 1u64)
        .build()
}

/// GETs of sysUpTime until one fails (the run's deadline, the varbind
/// budget) or 100,000 succeed: as much device time as the host gives.
fn flood(resource: &Resource) -> MetricsGroup {
    let mut answered = 0u64;
    let mut last = String::new();
    for _ in 0..100_000 {
        match host::get(&[SYS_UPTIME]) {
            Ok(_) => answered += 1,
            Err(error) => {
                last = error.describe().chars().take(300).collect();
                break;
            }
        }
    }
    MetricsGroupBuilder::new("probe", 60, resource, clock::now())
        .dimension("stopped_by", last)
        .gauge("answered", answered)
        .build()
}
