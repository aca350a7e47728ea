//! The bundled SNMP plugins, run in the sandbox against real agents:
//! snmpsim serving real device recordings (Juniper MX, Cisco, a large
//! switch from Panoptes' tests; Linux and Windows XP walks shipped with
//! snmpsim) and Debian's snmpd. Debian's `snmpbulkwalk` of the same agent
//! is the independent oracle for every counter, name and speed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vigil_host::model::{EnrichmentGroup, MetricType, MetricValue, MetricsGroup, Resource};
use vigil_host::plugin::PluginManifest;
use vigil_host::sandbox::{
    PreparedPlugin, RunContext, RunInput, RunOutcome, RunOutput, RunReport, Sandbox,
    SandboxSettings,
};
use vigil_host::site::SiteConfig;
use vigil_host::transform::RateTransformer;
use vigil_tests::snmp_servers::{
    Snmpd, SnmpdConfig, Snmpsim, WalkedValue, fixtures_dir, snmpbulkwalk, snmpsim_recorded_dir,
};
use vigil_tests::{PluginFile, artifacts};

const IF_TABLE: &str = "1.3.6.1.2.1.2.2";
const IF_X_TABLE: &str = "1.3.6.1.2.1.31.1.1";
const NOT_SET: &str = "<not set>";

/// A site that allows SNMP, with one v2c credential per device id.
struct Lab {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    site: SiteConfig,
    sandbox: Sandbox,
}

impl Lab {
    fn new(communities: &[&str]) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = "[site]\nname = \"lab\"\n[plugins]\ncache_dir = \"cache\"\n[capabilities]\nallowed = [\"snmp\"]\n[snmp]\ntimeout = \"2s\"\nretries = 1\n"
            .to_owned();
        for community in communities {
            text.push_str(&format!(
                "[[snmp.credentials]]\nnetworks = [\"127.0.0.0/8\"]\nfilter = 'resource_id = \"{community}\"'\nversion = \"2c\"\ncommunity = \"{community}\"\n"
            ));
        }
        let path = dir.path().join("site.toml");
        std::fs::write(&path, &text).expect("site");
        let site = SiteConfig::load(&path).expect("site config");
        let sandbox = Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox");
        Lab {
            dir: dir.path().to_owned(),
            _dir: dir,
            site,
            sandbox,
        }
    }

    fn plugin(
        &self,
        name: &str,
        kind: &str,
        module: &str,
        extra: &[(&str, &str, &str)],
    ) -> PreparedPlugin {
        let mut file = PluginFile::new(name, kind, module)
            .set("capabilities", "snmp", "yes")
            .set("snmp", "max_repetitions", "25")
            .set("sandbox", "deadline", "30s");
        for (section, key, value) in extra {
            file = file.set(section, key, value);
        }
        let path = file.write(&self.dir, name);
        let manifest = PluginManifest::load(&path, &self.site.plugin_policy())
            .unwrap_or_else(|e| panic!("{e}"));
        self.sandbox
            .prepare(Arc::new(manifest))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    async fn enrich(&self, plugin: &PreparedPlugin, resource: &Resource) -> Vec<EnrichmentGroup> {
        let report = self
            .sandbox
            .run(
                plugin,
                RunInput::Enrich(resource.clone().into()),
                RunContext::new(SystemTime::now(), Some(resource.id.clone())),
            )
            .await;
        match report.outcome {
            RunOutcome::Ok(RunOutput::Enrichments(groups)) => groups,
            other => panic!("enrichment of {}: {other} {:?}", resource.id, report.log),
        }
    }

    async fn poll(
        &self,
        plugin: &PreparedPlugin,
        resource: &Resource,
        enrichments: Vec<EnrichmentGroup>,
    ) -> RunReport {
        let mut context = RunContext::new(SystemTime::now(), Some(resource.id.clone()));
        context.enrichments = enrichments;
        self.sandbox
            .run(plugin, RunInput::Poll(resource.clone().into()), context)
            .await
    }
}

fn metrics(report: RunReport) -> Vec<MetricsGroup> {
    match report.outcome {
        RunOutcome::Ok(RunOutput::Metrics(groups)) => groups,
        other => panic!("poll: {other} {:?}", report.log),
    }
}

/// `column -> index -> value` of an oracle walk of a table.
fn by_column(walked: &[WalkedValue], table: &str) -> BTreeMap<u32, BTreeMap<String, WalkedValue>> {
    let entry = format!("{table}.1.");
    let mut columns: BTreeMap<u32, BTreeMap<String, WalkedValue>> = BTreeMap::new();
    for value in walked {
        let Some(rest) = value.oid.strip_prefix(&entry) else {
            continue;
        };
        let Some((column, index)) = rest.split_once('.') else {
            continue;
        };
        let Ok(column) = column.parse() else { continue };
        columns
            .entry(column)
            .or_default()
            .insert(index.to_owned(), value.clone());
    }
    columns
}

struct Oracle {
    if_table: BTreeMap<u32, BTreeMap<String, WalkedValue>>,
    if_x_table: BTreeMap<u32, BTreeMap<String, WalkedValue>>,
}

impl Oracle {
    fn read(port: u16, community: &str) -> Oracle {
        Oracle {
            if_table: by_column(
                &snmpbulkwalk(port, community, IF_TABLE).expect("oracle"),
                IF_TABLE,
            ),
            if_x_table: by_column(
                &snmpbulkwalk(port, community, IF_X_TABLE).expect("oracle"),
                IF_X_TABLE,
            ),
        }
    }

    fn indexes(&self) -> BTreeSet<u64> {
        self.if_table
            .values()
            .chain(self.if_x_table.values())
            .flat_map(|rows| rows.keys())
            .filter_map(|index| index.parse().ok())
            .collect()
    }

    fn number(
        table: &BTreeMap<u32, BTreeMap<String, WalkedValue>>,
        column: u32,
        index: u64,
    ) -> Option<u64> {
        let value = table.get(&column)?.get(&index.to_string())?;
        matches!(
            value.kind.as_str(),
            "Counter32" | "Counter64" | "Gauge32" | "INTEGER"
        )
        .then(|| value.value.parse().ok())
        .flatten()
    }

    fn text(
        table: &BTreeMap<u32, BTreeMap<String, WalkedValue>>,
        column: u32,
        index: u64,
    ) -> Option<String> {
        let bytes = table.get(&column)?.get(&index.to_string())?.octets()?;
        let text = String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .to_owned();
        (!text.is_empty()).then_some(text)
    }

    /// The 64-bit ifXTable column, else the 32-bit one (`ifTable` or
    /// `ifXTable`), as the plugin documents.
    fn counter(&self, hc_column: u32, fallback: (bool, u32), index: u64) -> Option<u64> {
        Oracle::number(&self.if_x_table, hc_column, index).or_else(|| {
            let (in_if_table, column) = fallback;
            let table = if in_if_table {
                &self.if_table
            } else {
                &self.if_x_table
            };
            Oracle::number(table, column, index)
        })
    }

    /// Every counter the plugin must report for `index`, from the oracle.
    fn expected_counters(&self, index: u64) -> BTreeMap<&'static str, u64> {
        let mut expected = BTreeMap::new();
        let mut put = |name, value: Option<u64>| {
            if let Some(value) = value {
                expected.insert(name, value);
            }
        };
        put(
            "bits_in",
            self.counter(6, (true, 10), index)
                .map(|o| o.wrapping_mul(8)),
        );
        put(
            "bits_out",
            self.counter(10, (true, 16), index)
                .map(|o| o.wrapping_mul(8)),
        );
        let unicast_in = self.counter(7, (true, 11), index);
        let unicast_out = self.counter(11, (true, 17), index);
        let multicast_in = self.counter(8, (false, 2), index);
        let multicast_out = self.counter(12, (false, 4), index);
        let broadcast_in = self.counter(9, (false, 3), index);
        let broadcast_out = self.counter(13, (false, 5), index);
        put("unicast_packets_in", unicast_in);
        put("unicast_packets_out", unicast_out);
        put("multicast_packets_in", multicast_in);
        put("multicast_packets_out", multicast_out);
        put("broadcast_packets_in", broadcast_in);
        put("broadcast_packets_out", broadcast_out);
        if let (Some(u), Some(m), Some(b)) = (unicast_in, multicast_in, broadcast_in) {
            put("total_packets_in", Some(u.wrapping_add(m).wrapping_add(b)));
        }
        if let (Some(u), Some(m), Some(b)) = (unicast_out, multicast_out, broadcast_out) {
            put("total_packets_out", Some(u.wrapping_add(m).wrapping_add(b)));
        }
        put("errors_in", Oracle::number(&self.if_table, 14, index));
        put("errors_out", Oracle::number(&self.if_table, 20, index));
        put("discards_in", Oracle::number(&self.if_table, 13, index));
        put("discards_out", Oracle::number(&self.if_table, 19, index));
        expected
    }

    /// Panoptes' speed rule: ifHighSpeed × 10^6 unless it is missing, 0 or
    /// 1, then ifSpeed; -1 when neither exists.
    fn speed(&self, index: u64) -> String {
        match Oracle::number(&self.if_x_table, 15, index) {
            Some(high) if high > 1 => (high * 1_000_000).to_string(),
            high => match Oracle::number(&self.if_table, 5, index) {
                Some(speed) if speed != 0 || high.is_none() => speed.to_string(),
                Some(_) => (high.unwrap_or(0) * 1_000_000).to_string(),
                None => high.map_or("-1".to_owned(), |h| (h * 1_000_000).to_string()),
            },
        }
    }

    /// The ifIndexes the plugin polls: those with a counter or a state
    /// (see the plugin's doc), in order.
    fn polled_indexes(&self) -> Vec<u64> {
        let if_columns = [7, 8, 10, 11, 13, 14, 16, 17, 19, 20];
        self.indexes()
            .into_iter()
            .filter(|&index| {
                if_columns
                    .iter()
                    .any(|&c| Oracle::number(&self.if_table, c, index).is_some())
                    || (2..=13).any(|c| Oracle::number(&self.if_x_table, c, index).is_some())
            })
            .collect()
    }

    /// ifPhysAddress as Panoptes writes it: upper-case, colon-separated.
    fn physical_address(&self, index: u64) -> String {
        self.if_table
            .get(&6)
            .and_then(|rows| rows.get(&index.to_string()))
            .and_then(WalkedValue::octets)
            .filter(|octets| !octets.is_empty())
            .map_or_else(
                || NOT_SET.to_owned(),
                |octets| {
                    octets
                        .iter()
                        .map(|b| format!("{b:02X}"))
                        .collect::<Vec<_>>()
                        .join(":")
                },
            )
    }

    fn name(&self, index: u64) -> String {
        Oracle::text(&self.if_x_table, 1, index)
            .or_else(|| Oracle::text(&self.if_table, 2, index))
            .unwrap_or_else(|| NOT_SET.to_owned())
    }
}

fn dimension<'a>(group: &'a MetricsGroup, name: &str) -> &'a str {
    group
        .dimensions
        .iter()
        .find(|d| d.name == name)
        .map_or("", |d| d.value.as_str())
}

fn counters(group: &MetricsGroup) -> BTreeMap<String, u64> {
    group
        .metrics
        .iter()
        .filter(|m| m.type_ == MetricType::Counter)
        // The EtherLike-MIB counters; the oracle walks IF-MIB only.
        .filter(|m| !["errors_crc", "errors_frame", "errors_giants"].contains(&m.name.as_str()))
        .filter_map(|m| match m.value {
            MetricValue::Unsigned(v) => Some((m.name.clone(), v)),
            _ => None,
        })
        .collect()
}

fn gauge(group: &MetricsGroup, name: &str) -> Option<i64> {
    group
        .metrics
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| match m.value {
            MetricValue::Signed(v) => Some(v),
            MetricValue::Unsigned(v) => i64::try_from(v).ok(),
            MetricValue::Float(_) => None,
        })
}

/// Cuts like the plugin: at most 1024 bytes on a character boundary.
fn as_dimension(text: String) -> String {
    let mut text = text;
    if text.len() > 1024 {
        let mut cut = 1024;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_plugins_match_snmpbulkwalk_on_real_device_recordings() {
    let recorded = snmpsim_recorded_dir().expect("snmpsim recordings");
    let devices: Vec<(String, PathBuf)> = vec![
        (
            "juniper-mx".into(),
            fixtures_dir().join("juniper-mx.snmprec"),
        ),
        ("cisco".into(), fixtures_dir().join("cisco.snmprec")),
        (
            "generic-switch".into(),
            fixtures_dir().join("generic-switch.snmprec"),
        ),
        ("linux".into(), recorded.join("linux-full-walk.snmprec")),
        ("winxp".into(), recorded.join("winxp-full-walk.snmprec")),
    ];
    let sim = Snmpsim::start(&devices).expect("snmpsim");
    let communities: Vec<&str> = devices.iter().map(|(c, _)| c.as_str()).collect();
    let lab = Lab::new(&communities);
    let enricher = lab.plugin(
        "snmp_interface_enrichment",
        "enrichment",
        artifacts::SNMP_INTERFACE_ENRICHMENT,
        &[],
    );
    let poller = lab.plugin(
        "snmp_interface_polling",
        "polling",
        artifacts::SNMP_INTERFACE_POLLING,
        &[("enrichment", "preload", "self:interface")],
    );

    for (community, _) in &devices {
        let resource = Resource::named(community, &sim.endpoint());
        let oracle = Oracle::read(sim.port, community);
        let indexes = oracle.indexes();
        assert!(
            !indexes.is_empty(),
            "{community}: the recording has no interfaces"
        );

        let enrichment = lab.enrich(&enricher, &resource).await;
        let group = enrichment
            .iter()
            .find(|g| g.namespace == "interface")
            .unwrap_or_else(|| panic!("{community}: no interface namespace"));
        assert_eq!(
            group.sets.len(),
            indexes.len(),
            "{community}: one set per ifIndex"
        );
        for set in &group.sets {
            let index: u64 = set.key.parse().expect("ifIndex key");
            let value = |key: &str| {
                set.values
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or_else(String::new, |(_, v)| v.clone())
            };
            assert_eq!(
                value("interface_name"),
                as_dimension(oracle.name(index)),
                "{community} {index} name"
            );
            let alias =
                Oracle::text(&oracle.if_x_table, 18, index).unwrap_or_else(|| NOT_SET.into());
            assert_eq!(
                value("alias"),
                as_dimension(alias),
                "{community} {index} alias"
            );
            let description =
                Oracle::text(&oracle.if_table, 2, index).unwrap_or_else(|| NOT_SET.into());
            assert_eq!(
                value("description"),
                as_dimension(description),
                "{community} {index} description"
            );
            assert_eq!(
                value("port_speed"),
                oracle.speed(index),
                "{community} {index} speed"
            );
            assert_eq!(
                value("physical_address"),
                oracle.physical_address(index),
                "{community} {index} MAC"
            );
        }
        let polled = oracle.polled_indexes();

        // With the enrichment preloaded, and without (the plugin then
        // builds it itself): same dimensions, counters equal to the oracle.
        let with = metrics(lab.poll(&poller, &resource, enrichment.clone()).await);
        let without = metrics(lab.poll(&poller, &resource, Vec::new()).await);
        assert_eq!(
            with.len(),
            polled.len(),
            "{community}: one group per interface with data"
        );
        let names = |groups: &[MetricsGroup]| -> Vec<String> {
            groups
                .iter()
                .map(|g| format!("{:?}", g.dimensions))
                .collect()
        };
        assert_eq!(
            names(&with),
            names(&without),
            "{community}: dimensions differ without enrichment"
        );

        // Groups come in ifIndex order.
        for (group, &index) in with.iter().zip(&polled) {
            assert_eq!(group.group_type, "interface");
            let name = dimension(group, "interface_name");
            assert_eq!(
                name,
                as_dimension(oracle.name(index)),
                "{community}: group order"
            );
            assert_eq!(
                counters(group),
                oracle
                    .expected_counters(index)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                "{community} {name} ({index})"
            );
            let admin = Oracle::number(&oracle.if_table, 7, index).map_or(-1, |v| v as i64);
            let oper = Oracle::number(&oracle.if_table, 8, index).map_or(-1, |v| v as i64);
            assert_eq!(
                gauge(group, "admin_state"),
                Some(admin),
                "{community} {name}"
            );
            assert_eq!(gauge(group, "oper_state"), Some(oper), "{community} {name}");
            let mtu = Oracle::number(&oracle.if_table, 4, index).map_or(-1, |v| v as i64);
            assert_eq!(gauge(group, "mtu"), Some(mtu), "{community} {name}");
            assert_eq!(dimension(group, "port_speed"), oracle.speed(index));
            assert_eq!(
                gauge(group, "configured_speed").map(|s| s.to_string()),
                Some(oracle.speed(index)),
                "{community} {name}: configured_speed gauge"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_health_reads_host_resources_from_a_real_agent() {
    let agent = Snmpd::start(SnmpdConfig {
        communities: vec!["public".to_owned()],
        ..SnmpdConfig::default()
    })
    .expect("snmpd");
    let lab = Lab::new(&["public"]);
    let health = lab.plugin(
        "snmp_device_health",
        "polling",
        artifacts::SNMP_DEVICE_HEALTH,
        &[],
    );
    let resource = Resource::named("public", &agent.endpoint());
    let groups = metrics(lab.poll(&health, &resource, Vec::new()).await);

    let system = groups
        .iter()
        .find(|g| g.group_type == "system")
        .expect("system group");
    assert!(system.metrics.iter().any(|m| m.name == "uptime_seconds"));
    let processors = snmpbulkwalk(agent.port, "public", "1.3.6.1.2.1.25.3.3.1.2").expect("oracle");
    let cpus: Vec<&MetricsGroup> = groups.iter().filter(|g| g.group_type == "cpu").collect();
    assert_eq!(
        cpus.len(),
        processors.len(),
        "one cpu group per hrProcessorLoad row"
    );
    let storage = snmpbulkwalk(agent.port, "public", "1.3.6.1.2.1.25.2.3.1.2").expect("oracle");
    let stored = groups
        .iter()
        .filter(|g| g.group_type == "memory" || g.group_type == "storage")
        .count();
    assert_eq!(stored, storage.len(), "one group per hrStorage entry");
    let ram = groups
        .iter()
        .find(|g| g.group_type == "memory" && dimension(g, "memory_type") == "ram")
        .expect("physical memory");
    let total = gauge(ram, "memory_total").expect("memory_total");
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    assert_eq!(total, kib * 1024, "RAM size as the kernel reports it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_from_a_live_agent_are_non_negative_and_wraps_never_spike() {
    // Two polls of a live snmpd through the host's rate transform.
    let agent = Snmpd::start(SnmpdConfig {
        communities: vec!["public".to_owned()],
        ..SnmpdConfig::default()
    })
    .expect("snmpd");
    let lab = Lab::new(&["public", "wrapdev"]);
    let poller = lab.plugin(
        "snmp_interface_polling",
        "polling",
        artifacts::SNMP_INTERFACE_POLLING,
        &[(
            "transforms",
            "bit_rates",
            "rate:interface:bits_in,bits_out,unicast_packets_in",
        )],
    );
    let transforms = poller.manifest.transforms.clone();
    let transformer = RateTransformer::default();
    let live = Resource::named("public", &agent.endpoint());
    let mut first = metrics(lab.poll(&poller, &live, Vec::new()).await);
    assert!(!first.is_empty());
    transformer.apply("p", &transforms, &mut first);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut second = metrics(lab.poll(&poller, &live, Vec::new()).await);
    let stats = transformer.apply("p", &transforms, &mut second);
    assert!(stats.rates > 0, "{stats:?}");
    let rates: Vec<f64> = second
        .iter()
        .flat_map(|g| &g.metrics)
        .filter(|m| m.name == "bits_in" || m.name == "bits_out")
        .filter_map(|m| match m.value {
            MetricValue::Float(rate) => Some(rate),
            _ => None,
        })
        .collect();
    assert!(!rates.is_empty());
    assert!(
        rates.iter().all(|r| r.is_finite() && *r >= 0.0),
        "{rates:?}"
    );

    // A device whose counters wrap, then reset, served by snmpsim with data
    // the test rewrites between polls.
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = |octets: u64, hc_octets: u64, unicast: u32| {
        format!(
            "1.3.6.1.2.1.2.2.1.1.1|2|1\n1.3.6.1.2.1.2.2.1.2.1|4|eth0\n1.3.6.1.2.1.2.2.1.3.1|2|6\n\
             1.3.6.1.2.1.2.2.1.10.1|65|{octets}\n1.3.6.1.2.1.2.2.1.11.1|65|{unicast}\n\
             1.3.6.1.2.1.31.1.1.1.1.1|4|eth0\n1.3.6.1.2.1.31.1.1.1.10.1|70|{hc_octets}\n"
        )
    };
    let path = dir.path().join("wrapdev.snmprec");
    std::fs::write(&path, recording(1000, 1000, 4_294_967_000)).expect("write");
    let sim = Snmpsim::start(&[("wrapdev".to_owned(), path)]).expect("snmpsim");
    let device = Resource::named("wrapdev", &sim.endpoint());
    let mut observed = Vec::new();
    // Poll 2: the 32-bit unicast counter wraps (+496) while the 64-bit
    // octets grow; poll 3: the device restarted, everything is small again.
    for (octets, hc, unicast) in [
        (1000, 1000, 4_294_967_000u32),
        (2000, 2000, 200),
        (30, 10, 50),
    ] {
        sim.rewrite("wrapdev", &recording(octets, hc, unicast))
            .expect("rewrite");
        let mut groups = metrics(lab.poll(&poller, &device, Vec::new()).await);
        let stats = transformer.apply("p", &transforms, &mut groups);
        observed.push((stats, groups));
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let rate = |groups: &[MetricsGroup], name: &str| {
        groups
            .iter()
            .flat_map(|g| &g.metrics)
            .find(|m| m.name == name)
            .and_then(|m| match m.value {
                MetricValue::Float(r) => Some(r),
                _ => None,
            })
    };
    // Poll 2: the 32-bit wrap gives the true small rate, and bits_in comes
    // from the 64-bit octets (1000 more octets = 8000 bits).
    let (stats, groups) = &observed[1];
    assert_eq!(stats.wraps, 1, "{stats:?}");
    let unicast = rate(groups, "unicast_packets_in").expect("wrapped rate");
    assert!(unicast > 0.0 && unicast <= 496.0, "{unicast}");
    let bits = rate(groups, "bits_in").expect("bit rate");
    assert!(bits > 0.0 && bits <= 8000.0, "{bits}");
    // Poll 3: counters went back to small values: a reset, no rate at all.
    let (stats, groups) = &observed[2];
    assert!(stats.resets >= 2, "{stats:?}");
    assert_eq!(rate(groups, "unicast_packets_in"), None);
    assert_eq!(rate(groups, "bits_in"), None);
    for (_, groups) in &observed {
        for metric in groups.iter().flat_map(|g| &g.metrics) {
            if let MetricValue::Float(r) = metric.value {
                assert!(
                    r.is_finite() && (0.0..=8000.0).contains(&r),
                    "{}: {r}",
                    metric.name
                );
            }
        }
    }
}

#[tokio::test]
async fn a_plugin_importing_snmp_without_asking_is_refused() {
    let lab = Lab::new(&["public"]);
    let path = PluginFile::new("sneaky", "polling", artifacts::SNMP_DEVICE_HEALTH)
        .write(&lab.dir, "sneaky");
    let manifest =
        PluginManifest::load(&path, &lab.site.plugin_policy()).expect("the ini itself is fine");
    let error = lab
        .sandbox
        .prepare(Arc::new(manifest))
        .err()
        .expect("refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("vigil:plugin/snmp") && message.contains("snmp = yes"),
        "{message}"
    );

    // Asking without the site's permission is a located error in the ini.
    let strict = SiteConfig {
        allowed_capabilities: Vec::new(),
        ..lab.site.clone()
    };
    let path = PluginFile::new("asks", "polling", artifacts::SNMP_DEVICE_HEALTH)
        .set("capabilities", "snmp", "yes")
        .write(&lab.dir, "asks");
    let errors = PluginManifest::load(&path, &strict.plugin_policy()).expect_err("not allowed");
    assert!(
        errors.to_string().contains("not allowed by the site"),
        "{errors}"
    );
}

/// A broken agent that sends wrong types: the plugin treats each such value
/// as missing (a counter left out, a gauge -1) and still reports the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_from_a_device_are_missing_values_not_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("oddball.snmprec");
    // ifInOctets as an OCTET STRING, ifMtu as an OID, ifOutOctets fine,
    // ifOperStatus noSuchInstance-like (absent), no ifXTable at all.
    std::fs::write(
        &path,
        "1.3.6.1.2.1.2.2.1.1.7|2|7\n1.3.6.1.2.1.2.2.1.2.7|4|eth7\n1.3.6.1.2.1.2.2.1.3.7|2|6\n\
         1.3.6.1.2.1.2.2.1.4.7|6|1.3.6.1.4.1\n1.3.6.1.2.1.2.2.1.7.7|2|1\n\
         1.3.6.1.2.1.2.2.1.10.7|4|not a number\n1.3.6.1.2.1.2.2.1.16.7|65|4242\n",
    )
    .expect("write");
    let sim = Snmpsim::start(&[("oddball".to_owned(), path)]).expect("snmpsim");
    let lab = Lab::new(&["oddball"]);
    let poller = lab.plugin(
        "snmp_interface_polling",
        "polling",
        artifacts::SNMP_INTERFACE_POLLING,
        &[],
    );
    let groups = metrics(
        lab.poll(
            &poller,
            &Resource::named("oddball", &sim.endpoint()),
            Vec::new(),
        )
        .await,
    );
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    assert_eq!(dimension(group, "interface_name"), "eth7");
    let counters = counters(group);
    assert!(!counters.contains_key("bits_in"), "a string is no counter");
    assert_eq!(counters.get("bits_out"), Some(&(4242 * 8)));
    assert_eq!(gauge(group, "mtu"), Some(-1), "an OID is no MTU");
    assert_eq!(gauge(group, "admin_state"), Some(1));
    assert_eq!(gauge(group, "oper_state"), Some(-1), "absent");
    assert_eq!(gauge(group, "oper_admin_state_mismatch"), Some(0));
}

/// The agents real walks come from serve rows out of place, and snmpsim
/// serves a recording in its stored order, so each alteration below is a
/// real agent misbehaving. Nothing may vanish silently: either the walk
/// still finds the data, or the run's status and record say what is
/// missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_survive_rows_out_of_place_and_say_what_is_missing() {
    use vigil_host::pipeline::status::{PollingStatus, classify};

    // ifHCInOctets of ifIndex 3, given a value the recording does not
    // have anywhere else, so finding it proves the walk reached it.
    const MOVED: &str = "1.3.6.1.2.1.31.1.1.1.6.3";
    const MARK: u64 = 987_654_321;
    let original =
        std::fs::read_to_string(fixtures_dir().join("generic-switch.snmprec")).expect("recording");
    let lines: Vec<String> = original
        .lines()
        .filter(|l| !l.starts_with(&format!("{MOVED}|")))
        .map(str::to_owned)
        .collect();
    let moved = format!("{MOVED}|70|{MARK}");
    let first_if_x = lines
        .iter()
        .position(|l| l.starts_with("1.3.6.1.2.1.31.1.1.1."))
        .expect("ifXTable rows");
    let last_if_x = lines
        .iter()
        .rposition(|l| l.starts_with("1.3.6.1.2.1.31.1.1.1."))
        .expect("ifXTable rows");
    let with = |at: usize, extra: &[&str]| -> String {
        let mut altered = lines.clone();
        for (i, line) in extra.iter().enumerate() {
            altered.insert(at + i, (*line).to_owned());
        }
        altered.join("\n") + "\n"
    };
    // A row of ifXTable stored before ifXTable starts (the misplaced row
    // that used to end the ifXTable walk at once).
    let before = with(first_if_x, &[&moved]);
    // The same row in place, twice (as in the Juniper MX recording).
    let position = lines
        .iter()
        .position(|l| l.starts_with("1.3.6.1.2.1.31.1.1.1.6.4|"))
        .expect("ifHCInOctets.4");
    let twice = with(position, &[&moved, &moved]);
    // The row stored after a row of the next table: past the table's end,
    // where no walk of ifXTable can see it.
    let past_end = with(last_if_x + 1, &["1.3.6.1.2.1.31.1.2.1.3.0.3|2|1", &moved]);

    let dir = tempfile::tempdir().expect("tempdir");
    let devices: Vec<(String, PathBuf)> = [
        ("intact", original.clone()),
        ("before", before),
        ("twice", twice),
        ("pastend", past_end),
    ]
    .into_iter()
    .map(|(name, text)| {
        let path = dir.path().join(format!("{name}.snmprec"));
        std::fs::write(&path, text).expect("write recording");
        (name.to_owned(), path)
    })
    .collect();
    let sim = Snmpsim::start(&devices).expect("snmpsim");
    let lab = Lab::new(&["intact", "before", "twice", "pastend"]);
    let poller = lab.plugin(
        "snmp_interface_polling",
        "polling",
        artifacts::SNMP_INTERFACE_POLLING,
        &[("status", "metric", "interface_polling_status")],
    );
    let poll = |device: &'static str| {
        let resource = Resource::named(device, &sim.endpoint());
        let lab = &lab;
        let poller = &poller;
        async move { lab.poll(poller, &resource, Vec::new()).await }
    };
    let bits_in = |groups: &[MetricsGroup], name: &str| -> Option<u64> {
        groups
            .iter()
            .find(|g| dimension(g, "interface_name") == name)
            .and_then(|g| counters(g).get("bits_in").copied())
    };

    let intact = poll("intact").await;
    assert_eq!(
        classify(&intact.outcome, intact.snmp.as_ref(), &intact.missing),
        PollingStatus::Success
    );
    let intact_groups = metrics(intact);
    assert_eq!(intact_groups.len(), 12);

    for device in ["before", "twice"] {
        let report = poll(device).await;
        let status = classify(&report.outcome, report.snmp.as_ref(), &report.missing);
        let notes = report
            .snmp
            .as_ref()
            .map(|s| s.describe(""))
            .unwrap_or_default();
        assert_eq!(status, PollingStatus::Success, "{device}: {notes}");
        assert!(!report.missing.any(), "{device}: {:?}", report.missing);
        // snmpsim serves a repeated row once (its index keeps one offset
        // per OID), so only the misplaced row shows as disorder; repeats
        // are covered by the scripted agents of `snmp_capability`.
        if device == "before" {
            assert!(
                notes.contains("walk of 1.3.6.1.2.1.31.1.1.1: 1 OID out of order"),
                "{device}: the disorder is noted: {notes}"
            );
        }
        let groups = metrics(report);
        assert_eq!(groups.len(), intact_groups.len(), "{device}");
        assert_eq!(
            bits_in(&groups, "Ethernet 3"),
            Some(MARK * 8),
            "{device}: the misplaced row was found"
        );
        // Every other interface is as in the intact recording.
        for group in &intact_groups {
            let name = dimension(group, "interface_name");
            if name != "Ethernet 3" {
                let same = groups
                    .iter()
                    .find(|g| dimension(g, "interface_name") == name)
                    .map(counters);
                assert_eq!(same, Some(counters(group)), "{device} {name}");
            }
        }
    }

    let report = poll("pastend").await;
    let status = classify(&report.outcome, report.snmp.as_ref(), &report.missing);
    assert_eq!(status, PollingStatus::PartialMetricFailure);
    assert_eq!(
        report.missing.kept,
        ["ifHCInOctets of ifIndex 3"],
        "the run names what is missing"
    );
    let groups = metrics(report);
    // The interface falls back to its 32-bit counter, as documented.
    let if_in_octets: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("1.3.6.1.2.1.2.2.1.10.3|"))
        .and_then(|rest| rest.split('|').nth(1))
        .and_then(|v| v.parse().ok())
        .expect("ifInOctets.3 in the recording");
    assert_eq!(bits_in(&groups, "Ethernet 3"), Some(if_in_octets * 8));
}
