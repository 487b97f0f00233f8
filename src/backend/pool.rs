//! Pooling primitives.

use super::input_shape;
use super::{common_device, gpu_f32, gpu_output, host_output, with_float};
use crate::cpu;
use crate::cuda;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::shape::{numel, ConvGeometry};
use crate::tensor::{DType, Element, Tensor};

/// Max pooling: (y [N,C,OH,OW], argmax i32 of the same shape).
pub fn maxpool_fwd(x: &Tensor, g: &ConvGeometry) -> Result<(Tensor, Tensor)> {
    x.expect_shape("max_pool2d", &input_shape(g))?;
    let shape = vec![g.batch, g.in_channels, g.out_h, g.out_w];
    match x.device() {
        Device::Cpu => with_float!("max_pool2d", x, |T| {
            let xs = x.host_slice::<T>("max_pool2d")?;
            let mut argmax = vec![0i32; numel(&shape)];
            let y = host_output::<T>(shape.clone(), |y| {
                cpu::pool::maxpool_fwd(xs, g, y, &mut argmax)
            });
            Ok((y, Tensor::host(i32::wrap(argmax), shape, DType::I32)))
        }),
        _ => {
            let (gpu, xb) = gpu_f32("max_pool2d", x)?;
            let mut argmax = gpu.alloc(numel(&shape) * 4)?;
            let y = gpu_output(&gpu, shape.clone(), DType::F32, |y| {
                cuda::pool::maxpool_fwd(&gpu, xb, g, y, &mut argmax)
            })?;
            Ok((y, Tensor::from_gpu(argmax, shape, DType::I32)))
        }
    }
}

/// Routes dy to the recorded argmax; dx has the input's shape.
pub fn maxpool_bwd(dy: &Tensor, argmax: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
    common_device("max_pool2d backward", &[dy, argmax])?;
    argmax.expect_dtype("max_pool2d backward", DType::I32)?;
    let out_shape = [g.batch, g.in_channels, g.out_h, g.out_w];
    dy.expect_shape("max_pool2d backward", &out_shape)?;
    argmax.expect_shape("max_pool2d backward", &out_shape)?;
    let shape = input_shape(g);
    match dy.device() {
        Device::Cpu => with_float!("max_pool2d backward", dy, |T| {
            let ds = dy.host_slice::<T>("max_pool2d backward")?;
            let am = argmax.host_slice::<i32>("max_pool2d backward")?;
            Ok(host_output::<T>(shape, |dx| {
                cpu::pool::maxpool_bwd(ds, am, g, dx)
            }))
        }),
        _ => {
            let (gpu, db) = gpu_f32("max_pool2d backward", dy)?;
            let ab = argmax.gpu_buffer("max_pool2d backward")?;
            gpu_output(&gpu, shape, DType::F32, |dx| {
                cuda::pool::maxpool_bwd(&gpu, db, ab, g, dx)
            })
        }
    }
}
