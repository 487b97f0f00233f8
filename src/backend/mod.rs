//! The primitives, public for benchmarks and kernel tests: one function per primitive, each dispatching to the CPU reference (`cpu::`, f32 or f64) or to
//! the CUDA launchers (`cuda::`, f32, on a real GPU or the emulation). Ops in `ops::` are written
//! once on top of these, so every op runs on every device.

use crate::core::device::Device;
use crate::core::dtype::{DType, Element};
use crate::core::error::{Error, Result};
use crate::core::shape::{numel, ConvGeometry};
use crate::cuda::params::StorageFormat;
use crate::cuda::{Gpu, GpuBuffer};
use std::sync::Arc;

mod activation;
mod cast;
mod conv;
mod conv_gpu;
mod dropout;
mod elementwise;
mod host_memory;
mod linear;
mod loss;
mod norm;
mod optim;
mod pool;
mod primitive;
mod raw_tensor;
mod shape;
mod storage;

pub use activation::*;
pub use cast::*;
pub use conv::*;
#[allow(unused_imports)]
pub use dropout::*;
pub use elementwise::*;
pub use host_memory::retain_freed_host_memory;
pub use linear::*;
pub use loss::*;
#[allow(unused_imports)]
pub use norm::*;
pub use optim::*;
pub use pool::*;
pub use raw_tensor::{RawTensor, TensorId};
#[allow(unused_imports)]
pub use shape::*;

/// The factor `scale · upstream` a backward kernel multiplies by, where `upstream` is a loss's
/// one-element gradient (`None`: 1). The CPU reads it on the host; a GPU kernel is given its
/// address and reads it itself, so a backward pass never waits for the device (and can be
/// captured into a CUDA graph).
#[derive(Clone, Copy)]
pub struct Factor<'a> {
    pub scale: f64,
    pub upstream: Option<&'a RawTensor>,
}

impl<'a> Factor<'a> {
    pub fn new(scale: f64, upstream: Option<&'a RawTensor>) -> Factor<'a> {
        Factor { scale, upstream }
    }

    /// Checks that `upstream` is one element of `like`'s dtype on `like`'s device.
    pub(crate) fn check(&self, op: &'static str, like: &RawTensor) -> Result<()> {
        let Some(u) = self.upstream else {
            return Ok(());
        };
        common_device(op, &[like, u])?;
        u.expect_dtype(op, like.dtype())?;
        if u.numel() != 1 {
            return Err(crate::core::error::invalid(
                "upstream gradient",
                format!("{op}: {:?} is not one element", u.shape()),
            ));
        }
        Ok(())
    }

    /// scale·upstream, read on the host (CPU tensors).
    pub(crate) fn on_host<T: crate::cpu::Float + Element>(&self, op: &'static str) -> Result<T> {
        let scale = <T as num_traits::NumCast>::from(self.scale).unwrap_or_else(T::nan);
        Ok(match self.upstream {
            Some(u) => scale * u.host_slice::<T>(op)?[0],
            None => scale,
        })
    }

    /// The upstream gradient's device address, 0 (null: a factor of 1) without one.
    pub(crate) fn device_address(&self, op: &'static str) -> Result<u64> {
        self.upstream
            .map(|u| u.gpu_buffer(op).map(|b| b.address()))
            .transpose()
            .map(|a| a.unwrap_or(0))
    }
}

/// The device all `tensors` share, or an error naming the op.
pub fn common_device<T: AsRef<RawTensor>>(op: &'static str, tensors: &[&T]) -> Result<Device> {
    let first = tensors[0].as_ref().device();
    for t in tensors[1..].iter().map(|t| t.as_ref()) {
        if t.device() != first {
            return Err(Error::DeviceMismatch {
                op,
                a: first,
                b: t.device(),
            });
        }
    }
    Ok(first)
}

/// Runs `$body` with `$T` bound to the float type of `$t` (CPU tensors), else a dtype error.
macro_rules! with_float {
    ($op:expr, $t:expr, |$T:ident| $body:expr) => {
        match $t.dtype() {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            got => Err(Error::DTypeMismatch {
                op: $op,
                expected: DType::F32,
                got,
            }),
        }
    };
}
pub(crate) use with_float;

/// A fresh host tensor computed by `fill` into a zeroed vector.
pub(crate) fn host_output<T: Element>(shape: Vec<usize>, fill: impl FnOnce(&mut [T])) -> RawTensor {
    let mut data = vec![T::default(); numel(&shape)];
    fill(&mut data);
    RawTensor::host(T::wrap(data), shape, T::DTYPE)
}

/// A fresh device tensor written by `fill` (which launches the kernel).
pub(crate) fn gpu_output(
    gpu: &Arc<Gpu>,
    shape: Vec<usize>,
    dtype: DType,
    fill: impl FnOnce(&mut GpuBuffer) -> Result<()>,
) -> Result<RawTensor> {
    let mut buffer = gpu.alloc(numel(&shape) * dtype.size_in_bytes())?;
    fill(&mut buffer)?;
    Ok(RawTensor::from_gpu(buffer, shape, dtype))
}

/// A device tensor read by a storage-templated kernel (f32, bf16 or f16), with its storage.
pub(crate) fn gpu_float<'t>(
    op: &'static str,
    t: &'t RawTensor,
) -> Result<(Arc<Gpu>, &'t GpuBuffer, StorageFormat)> {
    let storage = StorageFormat::of(op, t.dtype())?;
    let buffer = t.gpu_buffer(op)?;
    Ok((buffer.gpu().clone(), buffer, storage))
}

pub(crate) fn gpu_f32<'t>(op: &'static str, t: &'t RawTensor) -> Result<(Arc<Gpu>, &'t GpuBuffer)> {
    t.expect_dtype(op, DType::F32)?;
    let buffer = t.gpu_buffer(op)?;
    Ok((buffer.gpu().clone(), buffer))
}

/// [N, C, H, W] of a geometry's input.
pub(crate) fn input_shape(g: &ConvGeometry) -> Vec<usize> {
    vec![g.batch, g.in_channels, g.in_h, g.in_w]
}

/// Checks that `t` holds exactly `len` elements.
pub(crate) fn check_len(op: &'static str, t: &RawTensor, len: usize) -> Result<()> {
    if t.numel() != len {
        return Err(crate::core::error::invalid(
            "tensor size",
            format!("{op}: expected {len} elements, got shape {:?}", t.shape()),
        ));
    }
    Ok(())
}
