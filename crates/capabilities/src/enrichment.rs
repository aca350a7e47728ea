//! `vigil:plugin/enrichment-cache`: cached enrichment groups for the polled
//! resource. The host looks up the plugin's preloaded namespaces for that
//! resource before the run starts; the import only reads that snapshot, so a
//! plugin can never see another resource's data or another namespace.
//! Each namespace has one writer, the enrichment plugin that owns it (see
//! the host's `pipeline::enrichment_cache`), so what a poller reads under a
//! name was written by that name's owner, never by a neighbour.

use vigil_core::model::EnrichmentGroup;
use vigil_wit::HostCalls;
use vigil_wit::convert::enrichment_group_to_wit;
use vigil_wit::vigil::plugin::enrichment_cache::Host;
use vigil_wit::wit;
use wasmtime::component::{HasData, Linker};

/// What the `enrichment-cache` import sees of a run: the snapshot the host
/// preloaded for the polled resource.
pub struct EnrichmentCache<'a> {
    pub calls: &'a mut HostCalls,
    pub preloaded: &'a [EnrichmentGroup],
}

/// `HasData` for the `enrichment-cache` import.
pub struct EnrichmentCacheCapability;

impl HasData for EnrichmentCacheCapability {
    type Data<'a> = EnrichmentCache<'a>;
}

/// Adds the `enrichment-cache` import; `view` picks the run's parts out of
/// `T`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> EnrichmentCache<'_>,
) -> wasmtime::Result<()> {
    vigil_wit::vigil::plugin::enrichment_cache::add_to_linker::<T, EnrichmentCacheCapability>(
        linker, view,
    )
}

impl Host for EnrichmentCache<'_> {
    fn get(&mut self, namespace: String) -> wasmtime::Result<Option<wit::EnrichmentGroup>> {
        self.calls.charge()?;
        Ok(self
            .preloaded
            .iter()
            .find(|g| g.namespace == namespace)
            .map(enrichment_group_to_wit))
    }
}
