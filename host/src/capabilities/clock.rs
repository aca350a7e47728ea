//! `vigil:plugin/clock`: the host's wall clock, the run's scheduled time and
//! the plugin's schedule interval.

use std::time::SystemTime;

use crate::bindings::vigil::plugin::clock::Host;
use crate::model::Datetime;
use crate::sandbox::convert::datetime_to_wit;
use crate::sandbox::{HostState, wit};

impl Host for HostState {
    fn now(&mut self) -> wasmtime::Result<wit::Datetime> {
        self.charge()?;
        Ok(datetime_to_wit(Datetime::from_system(SystemTime::now())))
    }

    fn interval_seconds(&mut self) -> wasmtime::Result<u32> {
        self.charge()?;
        let seconds = self.plugin.schedule.interval().as_secs();
        Ok(u32::try_from(seconds).unwrap_or(u32::MAX).max(1))
    }

    fn scheduled(&mut self) -> wasmtime::Result<wit::Datetime> {
        self.charge()?;
        Ok(datetime_to_wit(Datetime::from_system(
            self.context.scheduled,
        )))
    }
}
