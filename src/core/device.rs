//! Devices: the CPU, a CUDA GPU, and the CPU emulation of the CUDA kernels, as plain values.
//! What the runtime knows about them (the best one, whether one is usable, its memory) is in
//! `cuda::devices`, which can ask the driver.

use std::fmt;

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
    /// Whether tensors on this device live in (real or emulated) device memory.
    pub fn is_gpu(&self) -> bool {
        !matches!(self, Device::Cpu)
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
