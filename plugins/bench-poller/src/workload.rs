//! The work the benchmark plugin does, shared verbatim with the native
//! baseline in `tests/benches/sandbox.rs` so the two differ only in where
//! they run.
//!
//! It decodes a synthetic interface table (the shape an SNMP walk of
//! IF-MIB produces: a text table of index, name and counters), computes
//! per-interface derived values and returns one record per interface.

/// One decoded interface row.
pub struct InterfaceSample {
    pub name: String,
    pub octets_in: u64,
    pub octets_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub errors: u64,
    pub utilisation_permille: u64,
}

/// A seed derived from a resource id (FNV-1a).
pub fn seed(resource_id: &str) -> u64 {
    resource_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Renders a deterministic interface table with `interfaces` rows.
pub fn synthetic_table(seed: u64, interfaces: usize) -> String {
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64*: cheap, deterministic, good enough for test data.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut table = String::with_capacity(interfaces * 96);
    for index in 0..interfaces {
        let speed = [1_000u64, 10_000, 100_000][index % 3] * 1_000_000;
        table.push_str(&format!(
            "{} ge-0/0/{} {} {} {} {} {} {}\n",
            index + 1,
            index,
            speed,
            next() >> 20,
            next() >> 20,
            next() >> 30,
            next() >> 30,
            next() >> 50,
        ));
    }
    table
}

/// Decodes the table; `None` on a malformed row.
pub fn decode(table: &str) -> Option<Vec<InterfaceSample>> {
    table
        .lines()
        .map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let _index: u32 = fields.next()?.parse().ok()?;
            let name = fields.next()?.to_owned();
            let speed: u64 = fields.next()?.parse().ok()?;
            let octets_in: u64 = fields.next()?.parse().ok()?;
            let octets_out: u64 = fields.next()?.parse().ok()?;
            let packets_in: u64 = fields.next()?.parse().ok()?;
            let packets_out: u64 = fields.next()?.parse().ok()?;
            let errors: u64 = fields.next()?.parse().ok()?;
            let busiest = octets_in.max(octets_out).saturating_mul(8);
            let utilisation_permille = busiest.checked_div(speed / 1000).unwrap_or(0).min(1000);
            Some(InterfaceSample {
                name,
                octets_in,
                octets_out,
                packets_in,
                packets_out,
                errors,
                utilisation_permille,
            })
        })
        .collect()
}
