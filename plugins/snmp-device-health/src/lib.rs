//! `snmp-device-health`: uptime, CPU load, memory and storage of any SNMP
//! device that implements SNMPv2-MIB and (optionally) HOST-RESOURCES-MIB.
//!
//! # Output
//!
//! | group type | dimensions | metrics (all gauges) | source |
//! |------------|------------|----------------------|--------|
//! | `system` | — | `uptime_seconds` (float) | sysUpTime.0 / 100 |
//! | `cpu` | `cpu_name`, `cpu_no`, `cpu_type` (= `ctrl`, as Panoptes) | `cpu_utilization` (percent) | hrProcessorLoad, one group per processor; `cpu_no` is the hrDeviceIndex, `cpu_name` its hrDeviceDescr |
//! | `memory` | `memory_type` (`ram`, `virtual_memory`, `other`), `memory_name` | `memory_total`, `memory_used` (bytes) | hrStorageTable rows of type hrStorageRam, hrStorageVirtualMemory, hrStorageOther |
//! | `storage` | `storage_type` (`fixed_disk`, `removable_disk`, `floppy_disk`, `compact_disc`, `ram_disk`, `flash_memory`, `network_disk`), `storage_entity` (Panoptes' name) | `storage_total`, `storage_used` (bytes) | hrStorageTable rows of the disk types |
//!
//! Bytes are hrStorageSize / hrStorageUsed × hrStorageAllocationUnits.
//! hrStorageTable rows of any other type are skipped.
//!
//! # Missing values
//!
//! Text dimensions the device does not have are `<not set>`; a gauge whose
//! source is missing, negative where it cannot be, or of the wrong type is
//! `-1` (signed), as in Panoptes. All values here are gauges, so nothing is
//! left out.
//!
//! # Errors
//!
//! A timeout or authentication failure on any request fails the run. Other
//! SNMP errors are logged and that part is skipped (a device without
//! HOST-RESOURCES-MIB simply yields the `system` group); if nothing at all
//! could be collected, the sysUpTime error fails the run.

use snmp_mib::{
    HR_DEVICE_DESCR, HR_DEVICE_ENTRY, HR_PROCESSOR_ENTRY, HR_PROCESSOR_LOAD, HR_STORAGE_TABLE,
    MISSING_NUMBER, SYS_UP_TIME, StorageKind, counter, dimension_value, hr_device_entry,
    hr_processor_entry, hr_storage_entry as hrs, hr_storage_type, integer, is_fatal, optional,
    simple_indexes, text, walk_columns,
};
use vigil_sdk::prelude::*;
use vigil_sdk::snmp::{Table, Value};

struct DeviceHealth;

impl Polling for DeviceHealth {
    fn poll(resource: Resource) -> Result<Vec<MetricsGroup>, PluginError> {
        let interval = clock::interval_seconds().max(1);
        let at = clock::scheduled();
        let new_group =
            |group_type: &str| MetricsGroupBuilder::new(group_type, interval, &resource, at);

        let mut groups = Vec::new();
        let mut uptime_error = None;
        match snmp::get(&[SYS_UP_TIME]) {
            Ok(varbinds) => {
                let uptime = varbinds
                    .iter()
                    .find(|vb| vb.oid.trim_start_matches('.') == SYS_UP_TIME)
                    .or_else(|| varbinds.first())
                    .and_then(|vb| vb.value.as_u64());
                let value = match uptime {
                    Some(ticks) => MetricValue::Float(ticks as f64 / 100.0),
                    None => MetricValue::Signed(MISSING_NUMBER),
                };
                groups.push(new_group("system").gauge("uptime_seconds", value).build());
            }
            Err(error) if is_fatal(&error) => return Err(PluginError::from(error)),
            Err(error) => {
                log::emit(
                    log::Level::Warn,
                    "sysUpTime unavailable",
                    &[("error", &error.describe())],
                );
                uptime_error = Some(error);
            }
        }

        let processors = optional(
            "hrProcessorLoad",
            walk_columns(HR_PROCESSOR_ENTRY, HR_PROCESSOR_LOAD),
        )?;
        let cpu_indexes = simple_indexes(&processors);
        if !cpu_indexes.is_empty() {
            let devices = optional(
                "hrDeviceDescr",
                walk_columns(HR_DEVICE_ENTRY, HR_DEVICE_DESCR),
            )?;
            for index in cpu_indexes.iter().map(u32::to_string) {
                let load = integer(&processors, hr_processor_entry::LOAD, &index)
                    .filter(|load| *load >= 0)
                    .unwrap_or(MISSING_NUMBER);
                let name = text(&devices, hr_device_entry::DESCR, &index);
                groups.push(
                    new_group("cpu")
                        .dimension("cpu_name", dimension_value(name.as_deref()))
                        .dimension("cpu_no", index)
                        .dimension("cpu_type", "ctrl")
                        .gauge("cpu_utilization", MetricValue::Signed(load))
                        .build(),
                );
            }
        }

        let storage = optional("hrStorageTable", snmp::walk_table(HR_STORAGE_TABLE))?;
        let mut memory_rows = 0usize;
        let mut storage_rows = 0usize;
        for index in storage.indexes() {
            let Some(kind) = storage_kind(&storage, &index) else {
                continue;
            };
            let name = text(&storage, hrs::DESCR, &index);
            let name = dimension_value(name.as_deref());
            let units = counter(&storage, hrs::ALLOCATION_UNITS, &index);
            let bytes = |column: u32| {
                let blocks = integer(&storage, column, &index).filter(|b| *b >= 0)?;
                let units = i64::try_from(units?).ok()?;
                blocks.checked_mul(units)
            };
            let total = MetricValue::Signed(bytes(hrs::SIZE).unwrap_or(MISSING_NUMBER));
            let used = MetricValue::Signed(bytes(hrs::USED).unwrap_or(MISSING_NUMBER));
            let group = match kind {
                StorageKind::Memory(memory_type) => {
                    memory_rows += 1;
                    new_group("memory")
                        .dimension("memory_type", memory_type)
                        .dimension("memory_name", name)
                        .gauge("memory_total", total)
                        .gauge("memory_used", used)
                }
                StorageKind::Storage(storage_type) => {
                    storage_rows += 1;
                    new_group("storage")
                        .dimension("storage_type", storage_type)
                        .dimension("storage_entity", name)
                        .gauge("storage_total", total)
                        .gauge("storage_used", used)
                }
            };
            groups.push(group.build());
        }

        log::emit(
            log::Level::Debug,
            "device health poll",
            &[
                ("resource", &resource.id),
                ("processors", &cpu_indexes.len().to_string()),
                ("memory", &memory_rows.to_string()),
                ("storage", &storage_rows.to_string()),
            ],
        );

        match uptime_error {
            Some(error) if groups.is_empty() => Err(PluginError::from(error)),
            _ => Ok(groups),
        }
    }
}

/// The row's hrStorageType, if it is one of the memory or disk types.
fn storage_kind(storage: &Table, index: &str) -> Option<StorageKind> {
    match storage.get(hrs::TYPE, index)? {
        Value::ObjectId(oid) => hr_storage_type(oid),
        _ => None,
    }
}

vigil_sdk::export!(polling => DeviceHealth);
