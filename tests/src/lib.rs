//! Shared helpers for vigil's integration tests and benchmarks: the paths of
//! the guest plugins built by `build.rs`, a writer for plugin ini files, and
//! a memory probe. (Tests of the `vigil` binary live in `host/tests/`, where
//! cargo builds the binary for them.)

use std::path::{Path, PathBuf};

/// Paths of the built guest plugins (`HEARTBEAT`, `BENCH_POLLER`,
/// `FIXTURE_HOSTILE`).
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

pub mod apic_sim;
pub mod kafka_servers;
pub mod metrics_servers;
pub mod mongo_servers;
pub mod netns_switch;
pub mod redis_servers;
pub mod servers;
pub mod snmp_servers;

/// Runs `future` to completion from synchronous test code, on a thread
/// and runtime of its own (so it may be called from inside another
/// runtime, e.g. to read a running agent's store while it runs).
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(future))
        });
        match handle.join() {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => panic!("block_on: starting a runtime: {e}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Builds a `*.vigil-plugin` file.
#[derive(Debug, Clone)]
pub struct PluginFile {
    name: String,
    kind: String,
    module: PathBuf,
    frequency: String,
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl PluginFile {
    pub fn new(name: &str, kind: &str, module: impl AsRef<Path>) -> PluginFile {
        PluginFile {
            name: name.to_owned(),
            kind: kind.to_owned(),
            module: module.as_ref().to_owned(),
            frequency: "60".to_owned(),
            sections: Vec::new(),
        }
    }

    pub fn frequency(mut self, frequency: &str) -> PluginFile {
        self.frequency = frequency.to_owned();
        self
    }

    /// Adds `key = value` to `[section]` (created on first use).
    pub fn set(mut self, section: &str, key: &str, value: &str) -> PluginFile {
        match self.sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, entries)) => entries.push((key.to_owned(), value.to_owned())),
            None => self
                .sections
                .push((section.to_owned(), vec![(key.to_owned(), value.to_owned())])),
        }
        self
    }

    pub fn render(&self) -> String {
        let mut text = format!(
            "[Core]\nName = {}\nKind = {}\nModule = {}\n\n[main]\nexecute_frequency = {}\n",
            self.name,
            self.kind,
            self.module.display(),
            self.frequency
        );
        // `[main]` extras belong right after execute_frequency, whatever
        // order they were set in; then every other section in order.
        let main = self.sections.iter().filter(|(s, _)| s == "main");
        let others = self.sections.iter().filter(|(s, _)| s != "main");
        for (section, entries) in main.chain(others) {
            if section != "main" {
                text.push_str(&format!("\n[{section}]\n"));
            }
            for (key, value) in entries {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        text
    }

    /// Writes `<dir>/<file_stem>.vigil-plugin` and returns its path.
    pub fn write(&self, dir: &Path, file_stem: &str) -> PathBuf {
        let path = dir.join(format!("{file_stem}.vigil-plugin"));
        std::fs::write(&path, self.render()).expect("writing plugin file");
        path
    }
}

/// Peak resident memory of this process, in bytes (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
