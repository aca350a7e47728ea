//! Compiling, caching and running plugin components under limits.
//!
//! A [`Sandbox`] owns one wasmtime engine, the linker with every host import
//! and the precompiled-artifact cache. [`Sandbox::prepare`] turns a checked
//! manifest into a [`PreparedPlugin`] (component + `InstancePre`, world
//! checked against the plugin kind); [`Sandbox::run`] executes one run in a
//! fresh instance and returns a [`RunReport`] whatever happens inside.
//!
//! Isolation per run: a new `Store` and instance; WASI with no directories
//! (unless granted), no sockets, no environment, no arguments, stdin empty,
//! stdout/stderr captured to small buffers; a memory/table limiter; fuel;
//! and an epoch deadline backed by an async timeout for time spent in host
//! calls.

pub mod cache;
pub mod engine;
pub mod limits;
pub mod outcome;
pub mod validate;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures_util::FutureExt;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{analysis, discovery, endpoints, enrichment, polling};
use crate::capabilities::kv::{KvBackend, MemoryKv};
use crate::capabilities::log::RunLog;
use crate::capabilities::snmp::{SnmpRun, SnmpService, SnmpSettings};
use crate::capabilities::{clock, config, enrichment as enrichment_cache, kv, log, snmp, status};
use crate::model::{EndpointEvent, Resource};
use crate::plugin::{PluginKind, PluginManifest};
pub use cache::{ArtifactCache, CacheOutcome, sha256_hex};
pub use engine::{AllocatorChoice, AllocatorKind, EngineSettings};
pub use outcome::{RejectReason, RunOutcome, RunOutput, RunReport, SentOutput, TrapReason};
use vigil_wit::HostCalls;
/// WIT values ↔ vigil's model, at the sandbox boundary.
pub use vigil_wit::convert;
/// The WIT records as `bindgen!` generates them: what plugins send and
/// receive, before [`convert`] turns them into [`crate::model`] values.
pub use vigil_wit::wit;

/// Bytes of guest stdout/stderr kept per run (enough for a panic message).
const CAPTURE_BYTES: usize = 16 << 10;
/// Extra time the async timeout allows past the deadline, so a CPU-bound
/// plugin is stopped by the epoch check (with a precise reason) first.
const DEADLINE_GRACE: Duration = Duration::from_millis(200);
/// Where a granted directory appears inside the guest.
pub const GUEST_DATA_DIR: &str = "/data";

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub enum RunInput {
    Discover,
    /// The host's record of the resource, shared (the run's metrics groups
    /// hold the same `Arc`).
    Enrich(Arc<Resource>),
    Poll(Arc<Resource>),
    Analyze {
        event: Box<EndpointEvent>,
        prior_state: Option<Vec<u8>>,
    },
    /// Read the resource's address tables (endpoints plugins).
    Collect(Arc<Resource>),
}

impl RunInput {
    fn kind(&self) -> PluginKind {
        match self {
            RunInput::Discover => PluginKind::Discovery,
            RunInput::Enrich(_) => PluginKind::Enrichment,
            RunInput::Poll(_) => PluginKind::Polling,
            RunInput::Analyze { .. } => PluginKind::Analysis,
            RunInput::Collect(_) => PluginKind::Endpoints,
        }
    }

    fn resource(&self) -> Option<&Arc<Resource>> {
        match self {
            RunInput::Enrich(r) | RunInput::Poll(r) | RunInput::Collect(r) => Some(r),
            _ => None,
        }
    }
}

/// Per-run facts the host imports need.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub scheduled: SystemTime,
    pub resource_id: Option<String>,
    /// Cached enrichment groups the plugin may read for this resource.
    pub enrichments: Vec<crate::model::EnrichmentGroup>,
}

impl RunContext {
    /// A context with nothing preloaded.
    pub fn new(scheduled: SystemTime, resource_id: Option<String>) -> RunContext {
        RunContext {
            scheduled,
            resource_id,
            enrichments: Vec::new(),
        }
    }
}

/// The store data of one run: WASI, the plugin's grants and the run's
/// accounting. Each capability sees only its own view of it (see
/// [`Sandbox::with_kv`], where they are composed).
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) plugin: Arc<PluginManifest>,
    pub(crate) context: RunContext,
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) log: RunLog,
    /// The plugin's log budget across runs (shared by all its runs).
    pub(crate) log_budget: Arc<log::PluginLogBudget>,
    /// The run's host-call quota, charged by every capability.
    pub(crate) calls: HostCalls,
    types: vigil_wit::Types,
    /// SNMP for this run, when granted and the run has a resource.
    pub(crate) snmp: Option<SnmpRun>,
    /// What the plugin reported it could not collect.
    pub(crate) missing: status::Missing,
    limiter: Limiter,
    deadline_hit: bool,
    /// When the current call must end; checked on every epoch tick.
    pub(crate) deadline: Instant,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The one place capabilities are composed: each import's `add_to_linker`
/// with the function that picks its view out of a run's [`HostState`].
/// A capability sees the run's host-call budget and its own parts, never
/// the rest of the run.
fn add_capabilities(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    vigil_wit::vigil::plugin::types::add_to_linker::<HostState, HasSelf<vigil_wit::Types>>(
        linker,
        |s| &mut s.types,
    )?;
    vigil_wit::vigil::plugin::endpoint_observation::add_to_linker::<
        HostState,
        HasSelf<vigil_wit::Types>,
    >(linker, |s| &mut s.types)?;
    log::add_to_linker(linker, |s| log::Log {
        calls: &mut s.calls,
        log: &mut s.log,
        max_lines: s.plugin.limits.max_log_lines,
        budget: Some(&s.log_budget),
        plugin: &s.plugin.name,
        resource: s.context.resource_id.as_deref().unwrap_or(""),
    })?;
    config::add_to_linker(linker, |s| config::Config {
        calls: &mut s.calls,
        sections: &s.plugin.sections,
    })?;
    kv::add_to_linker(linker, |s| kv::Kv {
        calls: &mut s.calls,
        backend: &s.kv,
        plugin: &s.plugin.name,
        quota: s.plugin.limits.kv_quota,
    })?;
    clock::add_to_linker(linker, |s| clock::Clock {
        calls: &mut s.calls,
        interval: s.plugin.schedule.interval(),
        scheduled: s.context.scheduled,
    })?;
    status::add_to_linker(linker, |s| status::Status {
        calls: &mut s.calls,
        missing: &mut s.missing,
    })?;
    enrichment_cache::add_to_linker(linker, |s| enrichment_cache::EnrichmentCache {
        calls: &mut s.calls,
        preloaded: &s.context.enrichments,
    })?;
    snmp::add_to_linker(linker, |s| snmp::Snmp {
        calls: &mut s.calls,
        run: s.snmp.as_mut(),
        plugin: &s.plugin.name,
        deadline: s.deadline,
    })?;
    Ok(())
}

/// Enforces the memory and table limits and remembers what was refused.
struct Limiter {
    memory_limit: u64,
    table_limit: u64,
    peak_memory: u64,
    memory_refused: Option<u64>,
    table_refused: Option<u64>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.memory_limit {
            self.memory_refused = Some(desired);
            // An error (not `false`) ends the run at once: a guest allocator
            // seeing `false` would just abort with a less precise trap.
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.table_limit {
            self.table_refused = Some(desired);
            return Err(wasmtime::Error::msg("table limit exceeded"));
        }
        Ok(true)
    }
}

/// Which world's pre-instantiated bindings a plugin has.
#[derive(Clone)]
enum KindPre {
    Discovery(discovery::DiscoveryPre<HostState>),
    Enrichment(enrichment::EnrichmentPre<HostState>),
    Polling(polling::PollingPre<HostState>),
    Analysis(analysis::AnalysisPre<HostState>),
    Endpoints(endpoints::EndpointCollectionPre<HostState>),
}

/// A plugin ready to run: manifest, compiled component, linked imports.
#[derive(Clone)]
pub struct PreparedPlugin {
    pub manifest: Arc<PluginManifest>,
    /// SHA-256 of the `.wasm` file.
    pub wasm_sha256: String,
    pub wasm_bytes: u64,
    pub cache: CacheOutcome,
    /// The component's imports, for `vigil plugins check`.
    pub imports: Vec<String>,
    pre: KindPre,
}

/// Settings for building a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub cache_dir: PathBuf,
    pub engine: EngineSettings,
    /// Credentials and defaults for plugins granted `snmp`.
    pub snmp: SnmpSettings,
    /// Each plugin's log budget across runs.
    pub log_budget: log::LogBudgetSettings,
}

pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    cache: ArtifactCache,
    allocator: AllocatorKind,
    kv: Arc<dyn KvBackend>,
    snmp: Arc<SnmpService>,
    /// Every plugin's log budget, kept across runs.
    log_budgets: Arc<log::LogBudgets>,
    _ticker: engine::EpochTicker,
}

impl Sandbox {
    pub fn new(settings: &SandboxSettings) -> anyhow::Result<Sandbox> {
        Sandbox::with_kv(settings, Arc::new(MemoryKv::default()))
    }

    pub fn with_kv(settings: &SandboxSettings, kv: Arc<dyn KvBackend>) -> anyhow::Result<Sandbox> {
        let (engine, allocator) = engine::build_engine(&settings.engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        add_capabilities(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let cache = ArtifactCache::open(&settings.cache_dir, &engine)?;
        let ticker = engine::EpochTicker::start(&engine).context("starting the epoch ticker")?;
        Ok(Sandbox {
            engine,
            linker,
            cache,
            allocator,
            kv,
            snmp: Arc::new(SnmpService::new(settings.snmp.clone())),
            log_budgets: Arc::new(log::LogBudgets::new(settings.log_budget)),
            _ticker: ticker,
        })
    }

    pub fn snmp(&self) -> &Arc<SnmpService> {
        &self.snmp
    }

    /// Every plugin's log budget and what it dropped (health metrics).
    pub fn log_budgets(&self) -> &Arc<log::LogBudgets> {
        &self.log_budgets
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn allocator(&self) -> AllocatorKind {
        self.allocator
    }

    pub fn kv(&self) -> &Arc<dyn KvBackend> {
        &self.kv
    }

    /// Loads the manifest's component (from the cache when possible) and
    /// checks that it exports the world of its declared kind and imports
    /// nothing the host does not provide.
    ///
    /// The module is read through one opened handle that must be a regular
    /// file within `plugins.max_module_size`.
    pub fn prepare(&self, manifest: Arc<PluginManifest>) -> anyhow::Result<PreparedPlugin> {
        let bytes = cache::read_regular_file(
            &manifest.module,
            manifest.loading.max_module_size,
            "plugins.max_module_size",
        )?;
        let wasm_sha256 = sha256_hex(&bytes);
        self.prepare_component(manifest, &bytes, wasm_sha256)
    }

    /// The precompiled-component cache (the plugin registry prunes it).
    pub fn artifact_cache(&self) -> &ArtifactCache {
        &self.cache
    }

    /// [`Sandbox::prepare`] for a caller that has already read the
    /// manifest's module and hashed it (the registry, which fingerprints
    /// files to spot changes).
    ///
    /// The component's code is measured against the manifest's
    /// [`cache::LoadLimits`] before anything is compiled; compiling (when
    /// the component is not cached) can take seconds, so call this off the
    /// async runtime.
    pub fn prepare_component(
        &self,
        manifest: Arc<PluginManifest>,
        bytes: &[u8],
        wasm_sha256: String,
    ) -> anyhow::Result<PreparedPlugin> {
        let module = &manifest.module;
        cache::check_compile_cost(bytes, &manifest.loading).map_err(|e| {
            anyhow::anyhow!("{}: {e} (plugin {:?})", module.display(), manifest.name)
        })?;
        let (component, cache) = self
            .cache
            .load(&self.engine, bytes, &wasm_sha256)
            .with_context(|| format!("{}: not a valid WebAssembly component", module.display()))?;
        check_world(&self.engine, &component, manifest.kind)
            .with_context(|| format!("{}", module.display()))?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        check_capability_imports(&imports, &manifest)
            .with_context(|| format!("{}", module.display()))?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!(
                "{}: imports something vigil does not provide: {e:#}",
                module.display()
            )
        })?;
        let bind_error = |e: wasmtime::Error| anyhow::anyhow!("{}: {e:#}", module.display());
        let pre = match manifest.kind {
            PluginKind::Discovery => {
                KindPre::Discovery(discovery::DiscoveryPre::new(instance_pre).map_err(bind_error)?)
            }
            PluginKind::Enrichment => KindPre::Enrichment(
                enrichment::EnrichmentPre::new(instance_pre).map_err(bind_error)?,
            ),
            PluginKind::Polling => {
                KindPre::Polling(polling::PollingPre::new(instance_pre).map_err(bind_error)?)
            }
            PluginKind::Analysis => {
                KindPre::Analysis(analysis::AnalysisPre::new(instance_pre).map_err(bind_error)?)
            }
            PluginKind::Endpoints => KindPre::Endpoints(
                endpoints::EndpointCollectionPre::new(instance_pre).map_err(bind_error)?,
            ),
        };
        Ok(PreparedPlugin {
            manifest,
            wasm_sha256,
            wasm_bytes: bytes.len() as u64,
            cache,
            imports,
            pre,
        })
    }

    /// Runs `plugin` once in a fresh instance. Never panics and never
    /// returns early: every way a run can end is a [`RunOutcome`].
    pub async fn run(
        &self,
        plugin: &PreparedPlugin,
        input: RunInput,
        context: RunContext,
    ) -> RunReport {
        let started = Instant::now();
        let manifest = plugin.manifest.clone();
        let limits = manifest.limits;
        let resource_id = context.resource_id.clone();
        let stderr = MemoryOutputPipe::new(CAPTURE_BYTES);

        let mut report = RunReport {
            plugin: manifest.name.clone(),
            kind: manifest.kind,
            resource_id,
            outcome: RunOutcome::HostFailure(String::new()),
            duration: Duration::ZERO,
            fuel_consumed: 0,
            peak_memory: 0,
            host_calls: 0,
            log: Vec::new(),
            log_dropped: 0,
            stderr: String::new(),
            snmp: None,
            missing: status::Missing::default(),
        };
        if input.kind() != manifest.kind {
            report.outcome = RunOutcome::HostFailure(format!(
                "a {} plugin cannot be asked to {:?}",
                manifest.kind,
                input.kind()
            ));
            return report;
        }

        let mut store = match self.new_store(&manifest, context, &stderr, started + limits.deadline)
        {
            Ok(store) => store,
            Err(e) => {
                report.outcome = RunOutcome::HostFailure(format!("{e:#}"));
                return report;
            }
        };
        let fuel = limits.fuel.unwrap_or(u64::MAX);

        let polled = input.resource().cloned();
        if let (Some(options), Some(resource)) = (manifest.snmp, &polled) {
            store.data_mut().snmp =
                Some(SnmpRun::new(self.snmp.clone(), resource.clone(), options));
        }
        let call = call_plugin(&mut store, &plugin.pre, input);
        // A panic in a host import (or in a library it calls) must end this
        // run only: it unwinds to here, becomes a trap, and the store and
        // instance are dropped with the report.
        let guarded = AssertUnwindSafe(call).catch_unwind();
        let result = match tokio::time::timeout(limits.deadline + DEADLINE_GRACE, guarded).await {
            Ok(Err(panic)) => Ok(Err(CallError::HostPanic(panic_text(panic.as_ref())))),
            Ok(Ok(result)) => Ok(result),
            Err(elapsed) => Err(elapsed),
        };

        let fuel_left = store.get_fuel().unwrap_or(0);
        report.fuel_consumed = fuel - fuel_left;
        let state = store.data_mut();
        report.peak_memory = state.limiter.peak_memory;
        report.host_calls = state.calls.used();
        report.log = std::mem::take(&mut state.log.lines);
        report.log_dropped = state.log.dropped;
        report.stderr = String::from_utf8_lossy(&stderr.contents()).into_owned();
        report.snmp = state.snmp.take().map(|run| run.summary);
        report.missing = std::mem::take(&mut state.missing);
        report.outcome = match result {
            Err(_elapsed) => RunOutcome::Trap(TrapReason::Deadline {
                limit: limits.deadline,
            }),
            Ok(Err(CallError::Instantiate(e))) => {
                classify_error(e, state, &limits, &report.stderr, true)
            }
            Ok(Err(CallError::Call(e))) => classify_error(e, state, &limits, &report.stderr, false),
            Ok(Err(CallError::HostPanic(message))) => {
                tracing::error!(plugin = %report.plugin, "a host call panicked: {message}");
                RunOutcome::Trap(TrapReason::HostPanic(message))
            }
            Ok(Ok(Err(plugin_error))) => {
                RunOutcome::PluginError(convert::plugin_error(plugin_error))
            }
            Ok(Ok(Ok(output))) => accept_output(output, &limits, polled.as_ref()),
        };
        report.duration = started.elapsed();
        report
    }

    /// A store for one run (or one live instance): WASI as granted, the
    /// limiter, fuel and the epoch deadline, all set before any guest code
    /// (instantiation included) runs.
    fn new_store(
        &self,
        manifest: &Arc<PluginManifest>,
        context: RunContext,
        stderr: &MemoryOutputPipe,
        deadline: Instant,
    ) -> anyhow::Result<Store<HostState>> {
        let limits = manifest.limits;
        let state = HostState {
            wasi: self.wasi_context(manifest, stderr)?,
            table: ResourceTable::new(),
            plugin: manifest.clone(),
            context,
            kv: self.kv.clone(),
            log: RunLog::default(),
            log_budget: self.log_budgets.for_plugin(&manifest.name),
            calls: HostCalls::new(limits.max_host_calls),
            types: vigil_wit::Types,
            snmp: None,
            missing: status::Missing::default(),
            limiter: Limiter {
                memory_limit: limits.memory,
                table_limit: limits.table_elements,
                peak_memory: 0,
                memory_refused: None,
                table_refused: None,
            },
            deadline_hit: false,
            deadline,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Bytes the host copies out of the guest per call (results of the
        // export included) stop at max_output while they are being lifted:
        // a hundred strings aliasing one 1 MiB buffer cost 100 MiB of
        // budget, not 1 MiB, so aliasing cannot multiply host memory.
        store.set_hostcall_fuel(usize::try_from(limits.max_output).unwrap_or(usize::MAX));
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .map_err(|e| anyhow::anyhow!("setting fuel: {e:#}"))?;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut cx| {
            if Instant::now() >= cx.data().deadline {
                cx.data_mut().deadline_hit = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Yield every tick so a CPU-bound plugin never starves the
                // other tasks on this worker thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }

    /// Instantiates a polling plugin once for many calls.
    ///
    /// The scheduler never does this: a fresh instance per run is what
    /// guarantees one run cannot leave anything behind for the next. A live
    /// instance is for callers that deliberately trade that for speed
    /// (benchmarks, batch tools). Each call still gets the plugin's
    /// deadline and fuel; after any failure the instance is unusable.
    pub async fn instantiate_polling(
        &self,
        plugin: &PreparedPlugin,
    ) -> anyhow::Result<LiveInstance> {
        let KindPre::Polling(pre) = &plugin.pre else {
            anyhow::bail!(
                "{} is a {} plugin, not a polling plugin",
                plugin.manifest.name,
                plugin.manifest.kind
            );
        };
        let context = RunContext::new(SystemTime::now(), None);
        let stderr = MemoryOutputPipe::new(CAPTURE_BYTES);
        let deadline = Instant::now() + plugin.manifest.limits.deadline;
        let mut store = self.new_store(&plugin.manifest, context, &stderr, deadline)?;
        let bindings = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(LiveInstance {
            store,
            bindings,
            limits: plugin.manifest.limits,
        })
    }

    fn wasi_context(
        &self,
        manifest: &PluginManifest,
        stderr: &MemoryOutputPipe,
    ) -> anyhow::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(MemoryOutputPipe::new(CAPTURE_BYTES))
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        if let Some(dir) = &manifest.grants.files {
            builder
                .preopened_dir(dir, GUEST_DATA_DIR, FsPerms::ReadOnly)
                .map_err(|e| anyhow::anyhow!("granting {}: {e:#}", dir.display()))?;
        }
        Ok(builder.build())
    }
}

/// A polling plugin instantiated once for many calls; see
/// [`Sandbox::instantiate_polling`].
pub struct LiveInstance {
    store: Store<HostState>,
    bindings: polling::Polling,
    limits: limits::Limits,
}

impl LiveInstance {
    /// Polls `resource` on this instance, with a fresh deadline and fuel
    /// budget, and checks the output like a normal run.
    pub async fn poll(&mut self, resource: &Resource) -> RunOutcome {
        let limits = self.limits;
        self.store.data_mut().deadline = Instant::now() + limits.deadline;
        self.store.data_mut().calls = HostCalls::new(limits.max_host_calls);
        if let Err(e) = self.store.set_fuel(limits.fuel.unwrap_or(u64::MAX)) {
            return RunOutcome::HostFailure(format!("setting fuel: {e:#}"));
        }
        let polled = Arc::new(resource.clone());
        let sent = convert::resource_to_wit(resource);
        let call = self
            .bindings
            .vigil_plugin_poller()
            .call_poll(&mut self.store, &sent);
        match tokio::time::timeout(limits.deadline + DEADLINE_GRACE, call).await {
            Err(_elapsed) => RunOutcome::Trap(TrapReason::Deadline {
                limit: limits.deadline,
            }),
            Ok(Err(e)) => classify_error(e, self.store.data(), &limits, "", false),
            Ok(Ok(Err(plugin_error))) => {
                RunOutcome::PluginError(convert::plugin_error(plugin_error))
            }
            Ok(Ok(Ok(groups))) => {
                accept_output(SentOutput::Metrics(groups), &limits, Some(&polled))
            }
        }
    }
}

/// Checks what a plugin sent (counts and size, then schema) and, if it
/// passes, converts it by move into vigil's model, every metrics group
/// sharing the host's own record of the polled resource. Public for the
/// accept-path property test.
pub fn accept_output(
    sent: SentOutput,
    limits: &limits::Limits,
    polled: Option<&Arc<Resource>>,
) -> RunOutcome {
    if let Err(reason) = validate::check(&sent, limits, polled.map(Arc::as_ref)) {
        return RunOutcome::OutputRejected(reason);
    }
    let output = match sent {
        SentOutput::Resources(r) => {
            RunOutput::Resources(r.into_iter().map(convert::resource).collect())
        }
        SentOutput::Enrichments(e) => {
            RunOutput::Enrichments(e.into_iter().map(convert::enrichment_group).collect())
        }
        SentOutput::Metrics(groups) => match polled {
            Some(polled) => RunOutput::Metrics(
                groups
                    .into_iter()
                    .map(|g| convert::metrics_group(g, polled))
                    .collect(),
            ),
            // Only polling runs return groups, and they always have a
            // resource; refuse rather than invent one.
            None => {
                return RunOutcome::OutputRejected(RejectReason::Invalid(
                    "metrics groups from a run that polled no resource".into(),
                ));
            }
        },
        SentOutput::Analysis(a) => RunOutput::Analysis(convert::analysis(a)),
        SentOutput::Endpoints(tables) => {
            RunOutput::Endpoints(tables.into_iter().map(endpoint_table).collect())
        }
    };
    RunOutcome::Ok(output)
}

/// An address-table snapshot as the snapshot differ reads it.
fn endpoint_table(
    t: vigil_wit::wit_endpoints::TableSnapshot,
) -> vigil_endpoints::snapshot::TableSnapshot {
    use vigil_endpoints::snapshot::{EntryState, TableEntry, TableKind, TableSnapshot};
    use vigil_wit::wit_endpoints as w;
    TableSnapshot {
        kind: Some(match t.kind {
            w::TableKind::Neighbour => TableKind::Neighbour,
            w::TableKind::Forwarding => TableKind::Forwarding,
        }),
        source: t.source,
        context: t.context,
        complete: t.complete,
        entries: t
            .entries
            .into_iter()
            .map(|e| TableEntry {
                address: e.address,
                mac: e.mac,
                if_index: e.if_index,
                interface: e.interface,
                vlan: e.vlan,
                state: match e.state {
                    w::EntryState::Dynamic => EntryState::Dynamic,
                    w::EntryState::Configured => EntryState::Static,
                    w::EntryState::Local => EntryState::Local,
                    w::EntryState::Other => EntryState::Other,
                },
            })
            .collect(),
    }
}

enum CallError {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
    HostPanic(String),
}

/// The message of a caught panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

type CallResult = Result<Result<SentOutput, wit::PluginError>, CallError>;

async fn call_plugin(store: &mut Store<HostState>, pre: &KindPre, input: RunInput) -> CallResult {
    use CallError::{Call, Instantiate};
    match (pre, input) {
        (KindPre::Discovery(pre), RunInput::Discover) => {
            let bindings = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(Instantiate)?;
            let result = bindings
                .vigil_plugin_discoverer()
                .call_discover(&mut *store)
                .await
                .map_err(Call)?;
            Ok(result.map(SentOutput::Resources))
        }
        (KindPre::Enrichment(pre), RunInput::Enrich(resource)) => {
            let bindings = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(Instantiate)?;
            let result = bindings
                .vigil_plugin_enricher()
                .call_enrich(&mut *store, &convert::resource_to_wit(&resource))
                .await
                .map_err(Call)?;
            Ok(result.map(SentOutput::Enrichments))
        }
        (KindPre::Polling(pre), RunInput::Poll(resource)) => {
            let bindings = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(Instantiate)?;
            let result = bindings
                .vigil_plugin_poller()
                .call_poll(&mut *store, &convert::resource_to_wit(&resource))
                .await
                .map_err(Call)?;
            Ok(result.map(SentOutput::Metrics))
        }
        (KindPre::Analysis(pre), RunInput::Analyze { event, prior_state }) => {
            let bindings = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(Instantiate)?;
            let result = bindings
                .vigil_plugin_analyzer()
                .call_analyze(
                    &mut *store,
                    &convert::endpoint_event_to_wit(&event),
                    prior_state.as_deref(),
                )
                .await
                .map_err(Call)?;
            Ok(result.map(SentOutput::Analysis))
        }
        (KindPre::Endpoints(pre), RunInput::Collect(resource)) => {
            let bindings = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(Instantiate)?;
            let result = bindings
                .vigil_plugin_endpoint_collector()
                .call_collect(&mut *store, &convert::resource_to_wit(&resource))
                .await
                .map_err(Call)?;
            Ok(result.map(SentOutput::Endpoints))
        }
        _ => Err(Call(wasmtime::Error::msg(
            "run input does not match the plugin kind",
        ))),
    }
}

/// Names the reason a run failed, preferring what the host itself recorded
/// (deadline, limits, quotas) over the shape of the error.
fn classify_error(
    error: wasmtime::Error,
    state: &HostState,
    limits: &limits::Limits,
    stderr: &str,
    instantiating: bool,
) -> RunOutcome {
    if state.deadline_hit {
        return RunOutcome::Trap(TrapReason::Deadline {
            limit: limits.deadline,
        });
    }
    if let Some(requested) = state.limiter.memory_refused {
        return RunOutcome::Trap(TrapReason::MemoryLimit {
            requested,
            limit: limits.memory,
        });
    }
    if let Some(requested) = state.limiter.table_refused {
        return RunOutcome::Trap(TrapReason::TableLimit {
            requested,
            limit: limits.table_elements,
        });
    }
    if state.calls.exhausted() {
        return RunOutcome::Trap(TrapReason::HostCallQuota {
            limit: limits.max_host_calls,
        });
    }
    // A backend behind a host import failed: the host's fault, named.
    if let Some(failure) = error.downcast_ref::<crate::capabilities::kv::KvFailure>() {
        return RunOutcome::HostFailure(failure.to_string());
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return RunOutcome::Trap(match trap {
            Trap::OutOfFuel => TrapReason::OutOfFuel {
                limit: limits.fuel.unwrap_or(u64::MAX),
            },
            Trap::StackOverflow => TrapReason::StackOverflow,
            Trap::Interrupt => TrapReason::Deadline {
                limit: limits.deadline,
            },
            Trap::UnreachableCodeReached => TrapReason::Panic {
                message: panic_message(stderr),
            },
            other => TrapReason::Fault(other.to_string()),
        });
    }
    let message = format!("{error:#}");
    // wasmtime's `HostcallFuelExhausted` is private; its text is stable.
    if message.contains("fuel allocated for hostcalls has been exhausted") {
        return RunOutcome::OutputRejected(RejectReason::LiftLimit {
            limit: limits.max_output,
        });
    }
    if message.contains("utf-8") || message.contains("UTF-8") || message.contains("utf8") {
        return RunOutcome::OutputRejected(RejectReason::Invalid(format!(
            "invalid UTF-8 in output: {message}"
        )));
    }
    if instantiating
        && error
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
    {
        // The instance pool is full: a capacity problem of the host, not
        // the plugin's fault.
        return RunOutcome::HostFailure(message);
    }
    RunOutcome::Trap(TrapReason::Fault(message))
}

/// The panic message a Rust guest printed (`panicked at FILE:LINE:COL:\nMSG`).
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at")?;
    let text = &stderr[start..];
    let mut lines = text.lines();
    let location = lines.next()?.trim_end_matches(':');
    match lines.next() {
        Some(message) if !message.trim().is_empty() => {
            Some(format!("{} ({location})", message.trim()))
        }
        _ => Some(location.to_owned()),
    }
}

/// Refuses a component that imports a capability its ini does not ask for:
/// it would only fail at run time, on the first call.
///
/// Interfaces are matched by package and name, whatever their version: the
/// linker serves a semver-compatible import (`snmp@0.1.1`) with the host's
/// `snmp@0.1.0`, so comparing whole strings would let it through.
fn check_capability_imports(imports: &[String], manifest: &PluginManifest) -> anyhow::Result<()> {
    /// (package, interface, capability, granted?) for every host interface
    /// that needs a grant.
    type Granted = fn(&PluginManifest) -> bool;
    const NEEDS_GRANT: &[(&str, &str, &str, Granted)] =
        &[("vigil:plugin", "snmp", "snmp", |m| m.grants.snmp)];
    for import in imports {
        // `namespace:package/interface@version`; the version is optional.
        let unversioned = import
            .split_once('@')
            .map_or(import.as_str(), |(name, _)| name);
        let Some((package, interface)) = unversioned.split_once('/') else {
            continue;
        };
        for (grant_package, grant_interface, capability, granted) in NEEDS_GRANT {
            if package.eq_ignore_ascii_case(grant_package)
                && interface.eq_ignore_ascii_case(grant_interface)
                && !granted(manifest)
            {
                anyhow::bail!(
                    "the component imports {import}, but {} does not ask for it: add `{capability} = yes` under [capabilities] (and allow it in the site config)",
                    manifest.path.display()
                );
            }
        }
    }
    Ok(())
}

/// Checks the component exports the interface of `kind`, and names what it
/// does export when it does not.
fn check_world(engine: &Engine, component: &Component, kind: PluginKind) -> anyhow::Result<()> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    if exports.iter().any(|e| e == kind.export_interface()) {
        return Ok(());
    }
    let actual = PluginKind::ALL
        .into_iter()
        .find(|k| exports.iter().any(|e| e == k.export_interface()));
    match actual {
        Some(actual) => anyhow::bail!(
            "[Core] kind is {kind}, but the component is a {actual} plugin (it exports {})",
            actual.export_interface()
        ),
        None => anyhow::bail!(
            "the component exports none of vigil's plugin interfaces (expected {} for a {kind} plugin; it exports: {}). Was it built with vigil-sdk for vigil:plugin@0.1.0?",
            kind.export_interface(),
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn extracts_rust_panic_messages() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:33:24:\nhostile fixture panicked on purpose\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("hostile fixture panicked on purpose (panicked at src/lib.rs:33:24)")
        );
        assert_eq!(panic_message("nothing here"), None);
    }
}
