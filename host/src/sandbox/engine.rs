//! The wasmtime engine vigil runs every plugin on: its configuration, the
//! instance allocator (pooled where the machine allows it) and the epoch
//! ticker that drives wall-clock deadlines.
//!
//! Two settings serve loading (see [`crate::plugin::registry`]):
//! - compilation is single-threaded: the registry compiles one plugin at a
//!   time on its own thread, so a compile occupies one core and never all
//!   of them while plugins run on the others;
//! - linear memories are initialised by copying data segments rather than
//!   from a copy-on-write image: on Linux each image is a memfd held open
//!   for as long as its module lives, one file descriptor per loaded
//!   plugin once it has run. Copying a Rust plugin's data segments (tens
//!   of KB) instead cost nothing measurable: a fresh run of the bench
//!   plugin took 41.5 us median with copying and 48 us with the image
//!   (`cargo bench -p vigil-tests --bench sandbox`, same tree, same load).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the engine's epoch advances. Deadlines are checked at this
/// granularity, and a CPU-bound plugin yields to the async runtime this
/// often, so one poll of a spinning plugin lasts one tick.
///
/// The tick also bounds how late everything else on the runtime can be:
/// a tokio worker that always has work checks its timers and the
/// cross-thread queue only every 61 polls (`event_interval` and
/// `global_queue_interval`), so with CPU-bound plugins on every worker the
/// scheduler's timer, a finished `spawn_blocking` call (SQLite) or a wakeup
/// from another thread waits up to 61 ticks. At 10 ms that was 0.6 s per
/// step: with 3,000 deadline-burning jobs a neighbour's 2 ms runs started
/// up to 5.6 s late and ran into their 2 s deadline. At 1 ms the neighbour
/// is at most 60 ms late (`tests/tests/hostile_scheduling.rs`); the cost
/// is 1,000 ticker wakeups a second and a fiber switch per millisecond of
/// guest CPU (a few microseconds: well under 1 %).
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Native stack for wasm frames; past it a run traps with stack overflow.
const MAX_WASM_STACK: usize = 512 << 10;
/// Fiber stack for async calls: the wasm stack plus room for host frames.
const ASYNC_STACK: usize = 2 << 20;

/// Which instance allocator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllocatorChoice {
    /// Pooling if the machine allows it, on-demand otherwise.
    #[default]
    Auto,
    Pooling,
    OnDemand,
}

/// The allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorKind {
    Pooling,
    OnDemand,
}

/// What the engine needs to know up front.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Concurrent runs: sizes the instance pool.
    pub max_concurrent_runs: u32,
    /// The largest linear memory any plugin may have (the site's cap).
    pub max_memory: u64,
    /// The largest table any plugin may have (the site's cap).
    pub max_table_elements: u64,
    pub allocator: AllocatorChoice,
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // vigil's contract is synchronous WIT; WASIp3 concurrency would only
        // double the cost of every call.
        .concurrency_support(false)
        .epoch_interruption(true)
        .consume_fuel(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK)
        .parallel_compilation(false)
        .memory_init_cow(false);
    config
}

fn pooling_config(settings: &EngineSettings) -> PoolingAllocationConfig {
    let runs = settings.max_concurrent_runs.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // A Rust guest is one core module plus a few small shim modules; leave
    // headroom for components built by other toolchains.
    pool.total_component_instances(runs)
        .total_core_instances(runs.saturating_mul(8))
        .total_memories(runs.saturating_mul(2))
        .total_tables(runs.saturating_mul(4))
        .total_stacks(runs)
        .max_memory_size(usize::try_from(settings.max_memory).unwrap_or(usize::MAX))
        .table_elements(usize::try_from(settings.max_table_elements).unwrap_or(usize::MAX));
    pool
}

/// Builds the engine, probing the pooling allocator first when allowed.
pub fn build_engine(settings: &EngineSettings) -> anyhow::Result<(Engine, AllocatorKind)> {
    if settings.allocator != AllocatorChoice::OnDemand {
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
            settings,
        )));
        match Engine::new(&config) {
            Ok(engine) => {
                tracing::info!(
                    slots = settings.max_concurrent_runs,
                    "instance allocator: pooling"
                );
                return Ok((engine, AllocatorKind::Pooling));
            }
            Err(error) if settings.allocator == AllocatorChoice::Auto => {
                tracing::warn!(
                    error = %format!("{error:#}"),
                    "pooling allocator unavailable on this machine (address-space limit?); falling back to on-demand allocation"
                );
            }
            Err(error) => return Err(anyhow::anyhow!("pooling allocator: {error:#}")),
        }
    }
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime engine: {e:#}"))?;
    tracing::info!("instance allocator: on-demand");
    Ok((engine, AllocatorKind::OnDemand))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vigil-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
