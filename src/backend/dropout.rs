//! Dropout primitives.

use super::storage::{in_storage, Index};
use super::RawTensor;
use super::{common_device, gpu_float, gpu_output, host_output, with_float};
use crate::core::device::Device;
use crate::core::dtype::{DType, Element};
use crate::core::error::{invalid, Error, Result};
use crate::cpu;
use crate::cpu::dropout::{dropout_scale, dropout_threshold};
use crate::cuda;
use crate::cuda::dropout::DropoutDraw;

/// Checks that the drop probability `p` lies in [0, 1] (NaN does not).
pub fn check_dropout_probability(p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(invalid(
            "dropout probability",
            format!("p must lie in [0, 1], got {p}"),
        ));
    }
    Ok(())
}

/// Inverted dropout in training: (y, mask u8). Element i is kept (mask 1, y = x/(1 − p)) or
/// dropped (mask 0, y = 0) by a hash of (seed, i), the same on every device; p = 1 drops all.
pub fn dropout_fwd(x: &RawTensor, p: f64, seed: u64) -> Result<(RawTensor, RawTensor)> {
    dropout_fwd_at_step(x, p, seed, 0, 0)
}

/// [`dropout_fwd`] with the mask's seed mixed from `seed` and the step `step + offset`
/// (`cpu::dropout::step_seed`); on a device being captured into a CUDA graph the kernel reads
/// the step from the graph's step scalars instead of `step`.
pub fn dropout_fwd_at_step(
    x: &RawTensor,
    p: f64,
    seed: u64,
    step: u64,
    offset: u64,
) -> Result<(RawTensor, RawTensor)> {
    let (y, Index(mask)) = in_storage(&["dropout_fwd"], [x], |[x]| {
        check_dropout_probability(p)?;
        let (threshold, scale) = (dropout_threshold(p), dropout_scale(p));
        let shape = x.shape().to_vec();
        match x.device() {
            Device::Cpu => with_float!("dropout", x, |T| {
                let xs = x.host_slice::<T>("dropout")?;
                let mut mask = vec![0u8; xs.len()];
                let y = host_output::<T>(shape.clone(), |y| {
                    let seed = cpu::dropout::step_seed(seed, step.wrapping_add(offset));
                    cpu::dropout::dropout_fwd(xs, seed, threshold, scale as T, y, &mut mask)
                });
                Ok((y, Index(RawTensor::host(u8::wrap(mask), shape, DType::U8))))
            }),
            _ => {
                let (gpu, xb, s) = gpu_float("dropout", x)?;
                let n = x.numel();
                let draw = DropoutDraw {
                    seed,
                    step,
                    offset,
                    threshold,
                    scale: scale as f32,
                };
                let mut mask = gpu.alloc(n)?;
                let y = gpu_output(&gpu, shape.clone(), s.dtype(), |y| {
                    cuda::dropout::dropout_fwd(&gpu, s, xb, draw, y, &mut mask, n)
                })?;
                Ok((y, Index(RawTensor::from_gpu(mask, shape, DType::U8))))
            }
        }
    })?;
    Ok((y, mask))
}

/// dx = dy·mask/(1 − p) with the forward pass's mask (0 everywhere when p = 1).
pub fn dropout_bwd(dy: &RawTensor, mask: &RawTensor, p: f64) -> Result<RawTensor> {
    in_storage(&["dropout_bwd"], [dy], |[dy]| {
        check_dropout_probability(p)?;
        common_device("dropout backward", &[dy, mask])?;
        mask.expect_dtype("dropout backward", DType::U8)?;
        mask.expect_shape("dropout backward", dy.shape())?;
        let scale = dropout_scale(p);
        let shape = dy.shape().to_vec();
        match dy.device() {
            Device::Cpu => with_float!("dropout backward", dy, |T| {
                let ds = dy.host_slice::<T>("dropout backward")?;
                let ms = mask.host_slice::<u8>("dropout backward")?;
                Ok(host_output::<T>(shape, |dx| {
                    cpu::dropout::dropout_bwd(ds, ms, scale as T, dx)
                }))
            }),
            _ => {
                let (gpu, db, s) = gpu_float("dropout backward", dy)?;
                let mb = mask.gpu_buffer("dropout backward")?;
                let n = dy.numel();
                gpu_output(&gpu, shape, s.dtype(), |dx| {
                    cuda::dropout::dropout_bwd(&gpu, s, db, mb, scale as f32, dx, n)
                })
            }
        }
    })
}
