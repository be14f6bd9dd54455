use std::sync::{Arc, RwLock};

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GpuSource {
    /// Read from the NVIDIA driver through NVML.
    Nvml,
    /// `[gpu] simulate = N`: not real hardware.
    Simulated,
    /// No GPUs could be read; `reason` says why.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GpuDevice {
    pub index: u32,
    #[serde(rename = "uuid")]
    pub uuid: String,
    pub name: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    /// Percent of time a kernel ran over the last sample period.
    pub utilization_percent: u32,
    pub temperature_celsius: u32,
    pub power_watts: f64,
    /// `enabled`, `disabled`, or `unsupported` on GPUs without MIG.
    pub mig_mode: String,
    pub simulated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GpuInventory {
    pub source: GpuSource,
    pub simulated: bool,
    /// Why there are no GPUs, or a driver note; absent when all is well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    pub devices: Vec<GpuDevice>,
}

impl GpuInventory {
    pub fn count(&self) -> usize {
        self.devices.len()
    }
}

/// Keeps the latest inventory; `refresh` re-reads it (a background task calls it).
#[derive(Clone)]
pub struct GpuProbe {
    simulate: Option<u32>,
    nvml: Arc<Option<nvml_wrapper::Nvml>>,
    nvml_error: Option<String>,
    latest: Arc<RwLock<GpuInventory>>,
}

fn simulated_devices(n: u32) -> Vec<GpuDevice> {
    (0..n)
        .map(|i| GpuDevice {
            index: i,
            uuid: format!("GPU-5ade0000-0000-4000-8000-{i:012}"),
            name: "Simulated GPU".into(),
            memory_total_bytes: 16 * 1024 * 1024 * 1024,
            memory_used_bytes: 0,
            utilization_percent: 0,
            temperature_celsius: 30,
            power_watts: 0.0,
            mig_mode: "unsupported".into(),
            simulated: true,
        })
        .collect()
}

impl GpuProbe {
    pub fn new(simulate: Option<u32>) -> GpuProbe {
        let (nvml, nvml_error) = match simulate {
            Some(_) => (None, None),
            None => match nvml_wrapper::Nvml::init() {
                Ok(nvml) => (Some(nvml), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "NVML not available ({e}): no NVIDIA driver found, running without GPUs"
                    )),
                ),
            },
        };
        let probe = GpuProbe {
            simulate,
            nvml: Arc::new(nvml),
            nvml_error,
            latest: Arc::new(RwLock::new(GpuInventory {
                source: GpuSource::None,
                simulated: false,
                reason: None,
                driver_version: None,
                devices: Vec::new(),
            })),
        };
        probe.refresh();
        probe
    }

    pub fn snapshot(&self) -> GpuInventory {
        match self.latest.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn refresh(&self) {
        let inventory = self.read();
        *self
            .latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = inventory;
    }

    fn read(&self) -> GpuInventory {
        if let Some(n) = self.simulate {
            return GpuInventory {
                source: GpuSource::Simulated,
                simulated: true,
                reason: Some(format!(
                    "{n} simulated GPUs ([gpu] simulate = {n}); not real hardware"
                )),
                driver_version: None,
                devices: simulated_devices(n),
            };
        }
        let Some(nvml) = self.nvml.as_ref() else {
            return GpuInventory {
                source: GpuSource::None,
                simulated: false,
                reason: self.nvml_error.clone(),
                driver_version: None,
                devices: Vec::new(),
            };
        };
        match read_nvml(nvml) {
            Ok((driver, devices)) => GpuInventory {
                source: GpuSource::Nvml,
                simulated: false,
                reason: devices
                    .is_empty()
                    .then(|| "the NVIDIA driver reports no GPUs".to_string()),
                driver_version: Some(driver),
                devices,
            },
            Err(e) => GpuInventory {
                source: GpuSource::None,
                simulated: false,
                reason: Some(format!("NVML query failed: {e}")),
                driver_version: None,
                devices: Vec::new(),
            },
        }
    }
}

fn read_nvml(nvml: &nvml_wrapper::Nvml) -> Result<(String, Vec<GpuDevice>), nvml_wrapper::error::NvmlError> {
    let driver = nvml.sys_driver_version()?;
    let count = nvml.device_count()?;
    let mut devices = Vec::with_capacity(count as usize);
    for index in 0..count {
        let device = nvml.device_by_index(index)?;
        let memory = device.memory_info()?;
        // Optional readings: consumer boards and MIG slices do not all report them.
        let utilization = device.utilization_rates().map(|u| u.gpu).unwrap_or(0);
        let temperature = device
            .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
            .unwrap_or(0);
        let power_mw = device.power_usage().unwrap_or(0);
        let mig_mode = match device.mig_mode() {
            Ok(m) if m.current == 1 => "enabled",
            Ok(_) => "disabled",
            Err(_) => "unsupported",
        };
        devices.push(GpuDevice {
            index,
            uuid: device.uuid()?,
            name: device.name()?,
            memory_total_bytes: memory.total,
            memory_used_bytes: memory.used,
            utilization_percent: utilization,
            temperature_celsius: temperature,
            power_watts: f64::from(power_mw) / 1000.0,
            mig_mode: mig_mode.into(),
            simulated: false,
        });
    }
    Ok((driver, devices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_devices_are_marked() {
        let inv = GpuProbe::new(Some(2)).snapshot();
        assert_eq!(inv.count(), 2);
        assert!(inv.simulated && inv.devices.iter().all(|d| d.simulated));
        assert_ne!(inv.devices[0].uuid, inv.devices[1].uuid);
    }
}
