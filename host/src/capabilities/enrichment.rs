//! `vigil:plugin/enrichment-cache`: cached enrichment groups for the polled
//! resource. The host looks up the plugin's preloaded namespaces for that
//! resource before the run starts; the import only reads that snapshot, so a
//! plugin can never see another resource's data or another namespace.
//! Each namespace has one writer, the enrichment plugin that owns it (see
//! [`crate::pipeline::enrichment_cache`]), so what a poller reads under a
//! name was written by that name's owner, never by a neighbour.

use crate::bindings::vigil::plugin::enrichment_cache::Host;
use crate::sandbox::convert::enrichment_group_to_wit;
use crate::sandbox::{HostState, wit};

impl Host for HostState {
    fn get(&mut self, namespace: String) -> wasmtime::Result<Option<wit::EnrichmentGroup>> {
        self.charge()?;
        Ok(self
            .context
            .enrichments
            .iter()
            .find(|g| g.namespace == namespace)
            .map(enrichment_group_to_wit))
    }
}
