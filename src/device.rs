//! Devices: the CPU, a CUDA GPU, and the CPU emulation of the CUDA kernels.

use std::fmt;

use crate::cuda::{self, MemoryStats};
use crate::error::Result;

/// Where a tensor lives and where its operations run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU reference backend (ndarray + rayon).
    Cpu,
    /// An NVIDIA GPU by ordinal, running kiln's CUDA kernels.
    Cuda(usize),
    /// kiln's CUDA kernels compiled for the host and run on the CPU, with the same launch code,
    /// memory pool and parameter structs as a real GPU. For debugging kernels without a GPU.
    CudaEmulated,
}

impl Device {
    /// CUDA device 0 when a driver and a GPU are present and usable, else the CPU. Never panics.
    pub fn best() -> Device {
        if cuda::usable_gpu_count() > 0 {
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
                    crate::error::invalid(
                        "device",
                        format!("{other:?}: expected cpu, cuda, cuda:N, emulated or auto"),
                    )
                }),
        }
    }

    /// Whether tensors on this device live in (real or emulated) device memory.
    pub fn is_gpu(&self) -> bool {
        !matches!(self, Device::Cpu)
    }

    /// Fails with a clear error when the device cannot be used here (no driver, no GPU, old
    /// driver, built without kernels).
    pub fn check_available(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            _ => cuda::gpu(*self).map(|_| ()),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::CudaEmulated => write!(f, "cuda-emulated"),
        }
    }
}

/// Live, peak and cached bytes and allocation counts of a device's memory pool.
/// The CPU has no pool and reports zeros.
pub fn memory_stats(device: &Device) -> Result<MemoryStats> {
    match device {
        Device::Cpu => Ok(MemoryStats::default()),
        _ => Ok(cuda::gpu(*device)?.memory_stats()),
    }
}

/// Frees the blocks a device's pool keeps cached for reuse.
pub fn empty_cache(device: &Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        _ => {
            cuda::gpu(*device)?.empty_cache();
            Ok(())
        }
    }
}

/// Starts a new peak-memory measurement: the peak becomes the current live bytes.
pub fn reset_peak_memory(device: &Device) -> Result<()> {
    if device.is_gpu() {
        cuda::gpu(*device)?.reset_peak();
    }
    Ok(())
}

/// Synchronizes a device: waits for all queued kernels (a no-op on the CPU and the emulation).
pub fn synchronize(device: &Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        _ => cuda::gpu(*device)?.synchronize(),
    }
}
