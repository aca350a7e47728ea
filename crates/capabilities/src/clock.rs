//! `vigil:plugin/clock`: the host's wall clock, the run's scheduled time and
//! the plugin's schedule interval.

use std::time::{Duration, SystemTime};

use vigil_core::model::Datetime;
use vigil_wit::HostCalls;
use vigil_wit::convert::datetime_to_wit;
use vigil_wit::vigil::plugin::clock::Host;
use vigil_wit::wit;
use wasmtime::component::{HasData, Linker};

/// What the `clock` import sees of a run.
pub struct Clock<'a> {
    pub calls: &'a mut HostCalls,
    /// The plugin's schedule interval.
    pub interval: Duration,
    /// When this run was due.
    pub scheduled: SystemTime,
}

/// `HasData` for the `clock` import.
pub struct ClockCapability;

impl HasData for ClockCapability {
    type Data<'a> = Clock<'a>;
}

/// Adds the `clock` import; `view` picks the run's parts out of `T`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Clock<'_>,
) -> wasmtime::Result<()> {
    vigil_wit::vigil::plugin::clock::add_to_linker::<T, ClockCapability>(linker, view)
}

impl Host for Clock<'_> {
    fn now(&mut self) -> wasmtime::Result<wit::Datetime> {
        self.calls.charge()?;
        Ok(datetime_to_wit(Datetime::from_system(SystemTime::now())))
    }

    fn interval_seconds(&mut self) -> wasmtime::Result<u32> {
        self.calls.charge()?;
        let seconds = self.interval.as_secs();
        Ok(u32::try_from(seconds).unwrap_or(u32::MAX).max(1))
    }

    fn scheduled(&mut self) -> wasmtime::Result<wit::Datetime> {
        self.calls.charge()?;
        Ok(datetime_to_wit(Datetime::from_system(self.scheduled)))
    }
}
