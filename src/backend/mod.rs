//! The primitives, public for benchmarks and kernel tests: one function per primitive, each dispatching to the CPU reference (`cpu::`, f32 or f64) or to
//! the CUDA launchers (`cuda::`, f32, on a real GPU or the emulation). Ops in `ops::` are written
//! once on top of these, so every op runs on every device.

use crate::cuda::{Gpu, GpuBuffer};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::shape::{numel, ConvGeometry};
use crate::tensor::{DType, Element, Tensor};
use std::sync::Arc;

mod activation;
mod cast;
mod conv;
mod conv_gpu;
mod dropout;
mod elementwise;
mod loss;
mod norm;
mod optim;
mod pool;
mod shape;

pub use activation::*;
pub use cast::*;
pub use conv::*;
pub use conv_gpu::{conv_chunk_bytes, set_conv_chunk_bytes};
#[allow(unused_imports)]
pub use dropout::*;
pub use elementwise::*;
pub use loss::*;
#[allow(unused_imports)]
pub use norm::*;
pub use optim::*;
pub use pool::*;
#[allow(unused_imports)]
pub use shape::*;

/// The device all `tensors` share, or an error naming the op.
pub fn common_device(op: &'static str, tensors: &[&Tensor]) -> Result<Device> {
    let first = tensors[0].device();
    for t in &tensors[1..] {
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
pub(crate) fn host_output<T: Element>(shape: Vec<usize>, fill: impl FnOnce(&mut [T])) -> Tensor {
    let mut data = vec![T::default(); numel(&shape)];
    fill(&mut data);
    Tensor::host(T::wrap(data), shape, T::DTYPE)
}

/// A fresh device tensor written by `fill` (which launches the kernel).
pub(crate) fn gpu_output(
    gpu: &Arc<Gpu>,
    shape: Vec<usize>,
    dtype: DType,
    fill: impl FnOnce(&mut GpuBuffer) -> Result<()>,
) -> Result<Tensor> {
    let mut buffer = gpu.alloc(numel(&shape) * dtype.size_in_bytes())?;
    fill(&mut buffer)?;
    Ok(Tensor::from_gpu(buffer, shape, dtype))
}

pub(crate) fn gpu_f32<'t>(op: &'static str, t: &'t Tensor) -> Result<(Arc<Gpu>, &'t GpuBuffer)> {
    t.expect_dtype(op, DType::F32)?;
    let buffer = t.gpu_buffer(op)?;
    Ok((buffer.gpu().clone(), buffer))
}

/// [N, C, H, W] of a geometry's input.
pub(crate) fn input_shape(g: &ConvGeometry) -> Vec<usize> {
    vec![g.batch, g.in_channels, g.in_h, g.in_w]
}

/// Checks that `t` holds exactly `len` elements.
pub(crate) fn check_len(op: &'static str, t: &Tensor, len: usize) -> Result<()> {
    if t.numel() != len {
        return Err(crate::error::invalid(
            "tensor size",
            format!("{op}: expected {len} elements, got shape {:?}", t.shape()),
        ));
    }
    Ok(())
}
