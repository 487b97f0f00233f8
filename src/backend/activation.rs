//! Activation primitives.

use super::{common_device, gpu_f32, gpu_output, host_output, with_float};
use crate::cpu;
use crate::cuda;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{DType, Element, Tensor};

/// ReLU: (y, mask u8).
pub fn relu_fwd(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let shape = x.shape().to_vec();
    match x.device() {
        Device::Cpu => with_float!("relu", x, |T| {
            let xs = x.host_slice::<T>("relu")?;
            let mut mask = vec![0u8; xs.len()];
            let y = host_output::<T>(shape.clone(), |y| {
                cpu::activation::relu_fwd(xs, y, &mut mask)
            });
            Ok((y, Tensor::host(u8::wrap(mask), shape, DType::U8)))
        }),
        _ => {
            let (gpu, xb) = gpu_f32("relu", x)?;
            let n = x.numel();
            let mut mask = gpu.alloc(n)?;
            let y = gpu_output(&gpu, shape.clone(), DType::F32, |y| {
                cuda::activation::relu_fwd(&gpu, xb, y, &mut mask, n)
            })?;
            Ok((y, Tensor::from_gpu(mask, shape, DType::U8)))
        }
    }
}

/// dx = dy · mask.
pub fn relu_bwd(dy: &Tensor, mask: &Tensor) -> Result<Tensor> {
    common_device("relu backward", &[dy, mask])?;
    mask.expect_dtype("relu backward", DType::U8)?;
    mask.expect_shape("relu backward", dy.shape())?;
    let shape = dy.shape().to_vec();
    match dy.device() {
        Device::Cpu => with_float!("relu backward", dy, |T| {
            let ds = dy.host_slice::<T>("relu backward")?;
            let ms = mask.host_slice::<u8>("relu backward")?;
            Ok(host_output::<T>(shape, |dx| {
                cpu::activation::relu_bwd(ds, ms, dx)
            }))
        }),
        _ => {
            let (gpu, db) = gpu_f32("relu backward", dy)?;
            let mb = mask.gpu_buffer("relu backward")?;
            let n = dy.numel();
            gpu_output(&gpu, shape, DType::F32, |dx| {
                cuda::activation::relu_bwd(&gpu, db, mb, dx, n)
            })
        }
    }
}
