//! What the runtime knows about devices: the best one present, whether one is usable, its memory
//! pool's statistics and synchronization. `Device` itself is a plain value in `core::device`.

use super::MemoryStats;
use crate::core::device::Device;
use crate::core::error::{invalid, Result};

impl Device {
    /// CUDA device 0 when a driver and a GPU are present and usable, else the CPU. Never panics.
    pub fn best() -> Device {
        if super::usable_gpu_count() > 0 {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }

    /// Parses `cpu`, `cuda`, `cuda:N`, `emulated` or `auto`.
    pub fn parse(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::best()),
            "emulated" | "cuda-emulated" => Ok(Device::CudaEmulated),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    invalid(
                        "device",
                        format!("{other:?}: expected cpu, cuda, cuda:N, emulated or auto"),
                    )
                }),
        }
    }

    /// Fails with a clear error when the device cannot be used here (no driver, no GPU, old
    /// driver, built without kernels).
    pub fn check_available(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            _ => super::gpu(*self).map(|_| ()),
        }
    }
}

/// Live, peak and cached bytes and allocation counts of a device's memory pool.
/// The CPU has no pool and reports zeros.
pub fn memory_stats(device: &Device) -> Result<MemoryStats> {
    match device {
        Device::Cpu => Ok(MemoryStats::default()),
        _ => Ok(super::gpu(*device)?.memory_stats()),
    }
}

/// Frees the blocks a device's pool keeps cached for reuse.
pub fn empty_cache(device: &Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        _ => {
            super::gpu(*device)?.empty_cache();
            Ok(())
        }
    }
}

/// Starts a new peak-memory measurement: the peak becomes the current live bytes.
pub fn reset_peak_memory(device: &Device) -> Result<()> {
    if device.is_gpu() {
        super::gpu(*device)?.reset_peak();
    }
    Ok(())
}

/// Synchronizes a device: waits for all queued kernels (a no-op on the CPU and the emulation).
pub fn synchronize(device: &Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        _ => super::gpu(*device)?.synchronize(),
    }
}
