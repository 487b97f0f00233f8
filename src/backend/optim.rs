//! Optimizer update primitives.

use super::{common_device, gpu_f32, with_float};
use crate::cpu;
use crate::cuda;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// One SGD-with-momentum step on `w` and its `velocity`, in place.
pub fn sgd_momentum(
    w: &mut Tensor,
    g: &Tensor,
    velocity: &mut Tensor,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
) -> Result<()> {
    common_device("sgd", &[w, g, velocity])?;
    g.expect_shape("sgd", w.shape())?;
    velocity.expect_shape("sgd", w.shape())?;
    match w.device() {
        Device::Cpu => with_float!("sgd", w, |T| {
            let gs = g.host_slice::<T>("sgd")?;
            let vs = velocity.host_vec_mut::<T>("sgd")?;
            let ws = w.host_vec_mut::<T>("sgd")?;
            cpu::optim::sgd_momentum_update(ws, gs, vs, lr as T, momentum as T, weight_decay as T);
            Ok(())
        }),
        _ => {
            let (gpu, gb) = gpu_f32("sgd", g)?;
            let n = w.numel();
            w.expect_dtype("sgd", DType::F32)?;
            let wb = w.gpu_buffer_mut("sgd")?;
            let vb = velocity.gpu_buffer_mut("sgd")?;
            cuda::optim::sgd_momentum(
                &gpu,
                wb,
                gb,
                vb,
                n,
                lr as f32,
                momentum as f32,
                weight_decay as f32,
            )
        }
    }
}
