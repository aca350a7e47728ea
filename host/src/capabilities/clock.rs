//! `vigil:plugin/clock`: the host's wall clock and the run's scheduled time.

use std::time::SystemTime;

use crate::bindings::vigil::plugin::clock::Host;
use crate::model::Datetime;
use crate::sandbox::HostState;

impl Host for HostState {
    fn now(&mut self) -> wasmtime::Result<Datetime> {
        self.charge()?;
        Ok(Datetime::from_system(SystemTime::now()))
    }

    fn scheduled(&mut self) -> wasmtime::Result<Datetime> {
        self.charge()?;
        Ok(Datetime::from_system(self.context.scheduled))
    }
}
