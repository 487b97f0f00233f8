//! Dropout primitives.

use super::primitive::{run, HostFloat, OnGpu, Op, Primitive};
use super::storage::Index;
use super::{common_device, host_output, RawTensor};
use crate::core::dtype::{DType, Element};
use crate::core::error::{invalid, Result};
use crate::core::shape::numel;
use crate::cpu;
use crate::cpu::dropout::{dropout_scale, dropout_threshold};
use crate::cuda;
use crate::cuda::dropout::DropoutDraw;
use crate::cuda::GpuBuffer;

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
    let shape = x.shape();
    let draw = Dropout {
        p,
        seed,
        step,
        offset,
        shape,
    };
    let (y, Index(mask)) = run(&draw, [x])?;
    Ok((y, mask))
}

struct Dropout<'a> {
    p: f64,
    seed: u64,
    step: u64,
    offset: u64,
    shape: &'a [usize],
}

impl Primitive<1> for Dropout<'_> {
    type Output = (RawTensor, Index);
    fn op(&self) -> Op {
        Op::new("dropout", &["dropout_fwd"])
    }
    fn check(&self, _: [&RawTensor; 1]) -> Result<()> {
        check_dropout_probability(self.p)
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<Self::Output> {
        let (threshold, scale) = (dropout_threshold(self.p), dropout_scale(self.p));
        let seed = cpu::dropout::step_seed(self.seed, self.step.wrapping_add(self.offset));
        let mut mask = vec![0u8; x.len()];
        let y = host_output::<T>(self.shape.to_vec(), |y| {
            cpu::dropout::dropout_fwd(x, seed, threshold, T::of(scale), y, &mut mask)
        });
        let mask = RawTensor::host(u8::wrap(mask), self.shape.to_vec(), DType::U8);
        Ok((y, Index(mask)))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<Self::Output> {
        let n = numel(self.shape);
        let draw = DropoutDraw {
            seed: self.seed,
            step: self.step,
            offset: self.offset,
            threshold: dropout_threshold(self.p),
            scale: dropout_scale(self.p) as f32,
        };
        let mut mask = on.gpu.alloc(n)?;
        let y = on.output(self.shape.to_vec(), |y| {
            cuda::dropout::dropout_fwd(on.gpu, on.format, x, draw, y, &mut mask, n)
        })?;
        let mask = RawTensor::from_gpu(mask, self.shape.to_vec(), DType::U8);
        Ok((y, Index(mask)))
    }
}

/// dx = dy·mask/(1 − p) with the forward pass's mask (0 everywhere when p = 1).
pub fn dropout_bwd(dy: &RawTensor, mask: &RawTensor, p: f64) -> Result<RawTensor> {
    run(&DropoutGrad { mask, p }, [dy])
}

struct DropoutGrad<'a> {
    mask: &'a RawTensor,
    p: f64,
}

impl Primitive<1> for DropoutGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("dropout backward", &["dropout_bwd"])
    }
    fn check(&self, [dy]: [&RawTensor; 1]) -> Result<()> {
        let op = self.op().name;
        check_dropout_probability(self.p)?;
        common_device(op, &[dy, self.mask])?;
        self.mask.expect_dtype(op, DType::U8)?;
        self.mask.expect_shape(op, dy.shape())
    }
    fn cpu<T: HostFloat>(&self, [dy]: [&[T]; 1]) -> Result<RawTensor> {
        let mask = self.mask.host_slice::<u8>(self.op().name)?;
        Ok(host_output::<T>(self.mask.shape().to_vec(), |dx| {
            cpu::dropout::dropout_bwd(dy, mask, T::of(dropout_scale(self.p)), dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [dy]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let (mask, scale, n) = (
            self.mask.gpu_buffer(self.op().name)?,
            dropout_scale(self.p) as f32,
            self.mask.numel(),
        );
        on.output(self.mask.shape().to_vec(), |dx| {
            cuda::dropout::dropout_bwd(on.gpu, on.format, dy, mask, scale, dx, n)
        })
    }
}
