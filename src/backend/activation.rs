//! Activation primitives.

use super::primitive::{run, HostFloat, OnGpu, Op, Primitive};
use super::storage::Index;
use super::{common_device, host_output, RawTensor};
use crate::core::dtype::{DType, Element};
use crate::core::error::{invalid, Result};
use crate::core::layout::{MaxoutLayout, RowLayout};
use crate::core::shape::numel;
use crate::cpu;
use crate::cuda;
use crate::cuda::GpuBuffer;

/// ReLU: (y, mask u8).
pub fn relu_fwd(x: &RawTensor) -> Result<(RawTensor, RawTensor)> {
    let (y, Index(mask)) = run(&Relu(x.shape()), [x])?;
    Ok((y, mask))
}

/// The input shape.
struct Relu<'a>(&'a [usize]);

impl Primitive<1> for Relu<'_> {
    type Output = (RawTensor, Index);
    fn op(&self) -> Op {
        Op::new("relu", &["relu_fwd"])
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<Self::Output> {
        let mut mask = vec![0u8; x.len()];
        let y = host_output::<T>(self.0.to_vec(), |y| {
            cpu::activation::relu_fwd(x, y, &mut mask)
        });
        let mask = RawTensor::host(u8::wrap(mask), self.0.to_vec(), DType::U8);
        Ok((y, Index(mask)))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<Self::Output> {
        let n = numel(self.0);
        let mut mask = on.gpu.alloc(n)?;
        let y = on.output(self.0.to_vec(), |y| {
            cuda::activation::relu_fwd(on.gpu, on.format, x, y, &mut mask, n)
        })?;
        let mask = RawTensor::from_gpu(mask, self.0.to_vec(), DType::U8);
        Ok((y, Index(mask)))
    }
}

/// dx = dy · mask.
pub fn relu_bwd(dy: &RawTensor, mask: &RawTensor) -> Result<RawTensor> {
    run(&ReluGrad(mask), [dy])
}

/// The forward mask.
struct ReluGrad<'a>(&'a RawTensor);

impl Primitive<1> for ReluGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("relu backward", &["relu_bwd"])
    }
    fn check(&self, [dy]: [&RawTensor; 1]) -> Result<()> {
        let op = self.op().name;
        common_device(op, &[dy, self.0])?;
        self.0.expect_dtype(op, DType::U8)?;
        self.0.expect_shape(op, dy.shape())
    }
    fn cpu<T: HostFloat>(&self, [dy]: [&[T]; 1]) -> Result<RawTensor> {
        let mask = self.0.host_slice::<u8>(self.op().name)?;
        Ok(host_output::<T>(self.0.shape().to_vec(), |dx| {
            cpu::activation::relu_bwd(dy, mask, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [dy]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let mask = self.0.gpu_buffer(self.op().name)?;
        on.output(self.0.shape().to_vec(), |dx| {
            cuda::activation::relu_bwd(on.gpu, on.format, dy, mask, dx, self.0.numel())
        })
    }
}

/// The pointwise activations and their parameters.
#[derive(Clone, Copy, Debug)]
enum PointwiseActivation {
    LeakyRelu(f64),
    Elu(f64),
    Relu6,
    Sigmoid,
    Tanh,
}

impl PointwiseActivation {
    /// The forward and the backward primitive's name and kernel.
    fn ops(self) -> (Op, Op) {
        let (fwd, bwd) = match self {
            PointwiseActivation::LeakyRelu(_) => (
                Op::new("leaky_relu", &["leaky_relu_fwd"]),
                Op::new("leaky_relu backward", &["leaky_relu_bwd"]),
            ),
            PointwiseActivation::Elu(_) => (
                Op::new("elu", &["elu_fwd"]),
                Op::new("elu backward", &["elu_bwd"]),
            ),
            PointwiseActivation::Relu6 => (
                Op::new("relu6", &["relu6_fwd"]),
                Op::new("relu6 backward", &["relu6_bwd"]),
            ),
            PointwiseActivation::Sigmoid => (
                Op::new("sigmoid", &["sigmoid_fwd"]),
                Op::new("sigmoid backward", &["sigmoid_bwd"]),
            ),
            PointwiseActivation::Tanh => (
                Op::new("tanh", &["tanh_fwd"]),
                Op::new("tanh backward", &["tanh_bwd"]),
            ),
        };
        (fwd, bwd)
    }

    /// The parameter must be finite: any sign is allowed, as in PyTorch.
    fn check(self) -> Result<()> {
        match self {
            PointwiseActivation::LeakyRelu(v) if !v.is_finite() => Err(invalid(
                "negative_slope",
                format!("leaky_relu: must be finite, got {v}"),
            )),
            PointwiseActivation::Elu(v) if !v.is_finite() => {
                Err(invalid("alpha", format!("elu: must be finite, got {v}")))
            }
            _ => Ok(()),
        }
    }

    fn kernel(self) -> cuda::activation::ActivationKernel {
        use cuda::activation::ActivationKernel as K;
        match self {
            PointwiseActivation::LeakyRelu(slope) => K::LeakyRelu {
                slope: slope as f32,
            },
            PointwiseActivation::Elu(alpha) => K::Elu {
                alpha: alpha as f32,
            },
            PointwiseActivation::Relu6 => K::Relu6,
            PointwiseActivation::Sigmoid => K::Sigmoid,
            PointwiseActivation::Tanh => K::Tanh,
        }
    }
}

/// A pointwise activation and its input's shape.
struct Pointwise<'a> {
    act: PointwiseActivation,
    shape: &'a [usize],
}

impl Primitive<1> for Pointwise<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        self.act.ops().0
    }
    fn check(&self, _: [&RawTensor; 1]) -> Result<()> {
        self.act.check()
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        use cpu::activation as a;
        Ok(host_output::<T>(self.shape.to_vec(), |y| match self.act {
            PointwiseActivation::LeakyRelu(s) => a::leaky_relu_fwd(x, T::of(s), y),
            PointwiseActivation::Elu(alpha) => a::elu_fwd(x, T::of(alpha), y),
            PointwiseActivation::Relu6 => a::relu6_fwd(x, y),
            PointwiseActivation::Sigmoid => a::sigmoid_fwd(x, y),
            PointwiseActivation::Tanh => a::tanh_fwd(x, y),
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        on.output(self.shape.to_vec(), |y| {
            cuda::activation::pointwise_fwd(on.gpu, self.act.kernel(), x, y, numel(self.shape))
        })
    }
}

/// The float inputs are `[saved, dy]`: `saved` is the forward input (leaky ReLU, ELU, ReLU6) or output
/// (sigmoid, tanh), whose shape `shape` is.
struct PointwiseGrad<'a>(Pointwise<'a>);

impl Primitive<2> for PointwiseGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        self.0.act.ops().1
    }
    fn check(&self, [_, dy]: [&RawTensor; 2]) -> Result<()> {
        self.0.act.check()?;
        dy.expect_shape(self.op().name, self.0.shape)
    }
    fn cpu<T: HostFloat>(&self, [saved, dy]: [&[T]; 2]) -> Result<RawTensor> {
        use cpu::activation as a;
        Ok(host_output::<T>(self.0.shape.to_vec(), |dx| {
            match self.0.act {
                PointwiseActivation::LeakyRelu(s) => a::leaky_relu_bwd(saved, dy, T::of(s), dx),
                PointwiseActivation::Elu(alpha) => a::elu_bwd(saved, dy, T::of(alpha), dx),
                PointwiseActivation::Relu6 => a::relu6_bwd(saved, dy, dx),
                PointwiseActivation::Sigmoid => a::sigmoid_bwd(saved, dy, dx),
                PointwiseActivation::Tanh => a::tanh_bwd(saved, dy, dx),
            }
        }))
    }
    fn gpu(&self, on: &OnGpu, [saved, dy]: [&GpuBuffer; 2]) -> Result<RawTensor> {
        let Pointwise { act, shape } = self.0;
        on.output(shape.to_vec(), |dx| {
            cuda::activation::pointwise_bwd(on.gpu, act.kernel(), saved, dy, dx, numel(shape))
        })
    }
}

fn pointwise_fwd(act: PointwiseActivation, x: &RawTensor) -> Result<RawTensor> {
    let shape = x.shape();
    run(&Pointwise { act, shape }, [x])
}

fn pointwise_bwd(act: PointwiseActivation, saved: &RawTensor, dy: &RawTensor) -> Result<RawTensor> {
    let shape = saved.shape();
    run(&PointwiseGrad(Pointwise { act, shape }), [saved, dy])
}

/// Leaky ReLU: `y = x > 0 ? x : negative_slope·x`. Any finite slope (PyTorch allows negative ones).
pub fn leaky_relu_fwd(x: &RawTensor, negative_slope: f64) -> Result<RawTensor> {
    pointwise_fwd(PointwiseActivation::LeakyRelu(negative_slope), x)
}

/// `dx = dy · (x > 0 ? 1 : negative_slope)` from the forward input `x` (the slope at 0 is
/// `negative_slope`, as PyTorch's).
pub fn leaky_relu_bwd(x: &RawTensor, dy: &RawTensor, negative_slope: f64) -> Result<RawTensor> {
    pointwise_bwd(PointwiseActivation::LeakyRelu(negative_slope), x, dy)
}

/// ELU: `y = x > 0 ? x : alpha·(exp(x) − 1)`. Any finite alpha (PyTorch checks none).
pub fn elu_fwd(x: &RawTensor, alpha: f64) -> Result<RawTensor> {
    pointwise_fwd(PointwiseActivation::Elu(alpha), x)
}

/// `dx = dy · (x > 0 ? 1 : alpha·exp(x))` from the forward input `x` (the slope at 0 is `alpha`,
/// as PyTorch's).
pub fn elu_bwd(x: &RawTensor, dy: &RawTensor, alpha: f64) -> Result<RawTensor> {
    pointwise_bwd(PointwiseActivation::Elu(alpha), x, dy)
}

/// ReLU6: `y = min(max(x, 0), 6)` (PyTorch's `relu6`, i.e. `hardtanh(x, 0, 6)`).
pub fn relu6_fwd(x: &RawTensor) -> Result<RawTensor> {
    pointwise_fwd(PointwiseActivation::Relu6, x)
}

/// `dx = 0` where `x ≤ 0` or `x ≥ 6`, else `dy`, from the forward input `x` (0 at exactly 0 and 6,
/// as PyTorch's `hardtanh_backward`).
pub fn relu6_bwd(x: &RawTensor, dy: &RawTensor) -> Result<RawTensor> {
    pointwise_bwd(PointwiseActivation::Relu6, x, dy)
}

/// `y = 1 / (1 + exp(−x))`, without overflow for large |x|.
pub fn sigmoid_fwd(x: &RawTensor) -> Result<RawTensor> {
    pointwise_fwd(PointwiseActivation::Sigmoid, x)
}

/// `dx = dy · y(1 − y)` from the forward output `y`.
pub fn sigmoid_bwd(y: &RawTensor, dy: &RawTensor) -> Result<RawTensor> {
    pointwise_bwd(PointwiseActivation::Sigmoid, y, dy)
}

/// `y = tanh(x)`.
pub fn tanh_fwd(x: &RawTensor) -> Result<RawTensor> {
    pointwise_fwd(PointwiseActivation::Tanh, x)
}

/// `dx = dy · (1 − y²)` from the forward output `y`.
pub fn tanh_bwd(y: &RawTensor, dy: &RawTensor) -> Result<RawTensor> {
    pointwise_bwd(PointwiseActivation::Tanh, y, dy)
}

/// Softmax along `axis` (any axis of any rank ≥ 1), stable for logits of any magnitude.
pub fn softmax_fwd(x: &RawTensor, axis: usize) -> Result<RawTensor> {
    run(&Softmax::new(x, axis, false), [x])
}

/// `dx = y ⊙ (dy − Σ_axis dy⊙y)` from the forward output `y`.
pub fn softmax_bwd(y: &RawTensor, dy: &RawTensor, axis: usize) -> Result<RawTensor> {
    run(&SoftmaxGrad(Softmax::new(y, axis, false)), [y, dy])
}

/// Log-softmax along `axis`: `x − max − log Σ exp(x − max)`.
pub fn log_softmax_fwd(x: &RawTensor, axis: usize) -> Result<RawTensor> {
    run(&Softmax::new(x, axis, true), [x])
}

/// `dx = dy − exp(y) ⊙ Σ_axis dy` from the forward output `y` (log-probabilities).
pub fn log_softmax_bwd(y: &RawTensor, dy: &RawTensor, axis: usize) -> Result<RawTensor> {
    run(&SoftmaxGrad(Softmax::new(y, axis, true)), [y, dy])
}

/// The shape of the forward input (or output), the axis, and whether the log is taken.
struct Softmax<'a> {
    shape: &'a [usize],
    axis: usize,
    log: bool,
}

impl<'a> Softmax<'a> {
    fn new(t: &'a RawTensor, axis: usize, log: bool) -> Self {
        let shape = t.shape();
        Softmax { shape, axis, log }
    }

    /// The `[outer][len][inner]` view of the axis, or an error when the axis does not exist.
    fn layout(&self, op: &'static str) -> Result<RowLayout> {
        let (axis, rank) = (self.axis, self.shape.len());
        if axis >= rank {
            return Err(invalid(
                "axis",
                format!(
                    "{op}: axis {axis} is out of range for a {rank}-d tensor of shape {:?}",
                    self.shape
                ),
            ));
        }
        Ok(RowLayout::along(self.shape, axis))
    }
}

impl Primitive<1> for Softmax<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        let name = if self.log { "log_softmax" } else { "softmax" };
        Op::new(name, &["softmax_rows_fwd", "softmax_cols_fwd"])
    }
    fn check(&self, _: [&RawTensor; 1]) -> Result<()> {
        self.layout(self.op().name).map(drop)
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        let layout = self.layout(self.op().name)?;
        Ok(host_output::<T>(self.shape.to_vec(), |y| {
            cpu::activation::softmax_fwd(x, layout, self.log, y)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let layout = self.layout(self.op().name)?;
        on.output(self.shape.to_vec(), |y| {
            cuda::activation::softmax_fwd(on.gpu, x, y, layout, self.log)
        })
    }
}

/// The float inputs are `[y, dy]`.
struct SoftmaxGrad<'a>(Softmax<'a>);

impl Primitive<2> for SoftmaxGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        let name = match self.0.log {
            true => "log_softmax backward",
            false => "softmax backward",
        };
        Op::new(name, &["softmax_rows_bwd", "softmax_cols_bwd"])
    }
    fn check(&self, [_, dy]: [&RawTensor; 2]) -> Result<()> {
        let op = self.op().name;
        dy.expect_shape(op, self.0.shape)?;
        self.0.layout(op).map(drop)
    }
    fn cpu<T: HostFloat>(&self, [y, dy]: [&[T]; 2]) -> Result<RawTensor> {
        let layout = self.0.layout(self.op().name)?;
        Ok(host_output::<T>(self.0.shape.to_vec(), |dx| {
            cpu::activation::softmax_bwd(y, dy, layout, self.0.log, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [y, dy]: [&GpuBuffer; 2]) -> Result<RawTensor> {
        let layout = self.0.layout(self.op().name)?;
        on.output(self.0.shape.to_vec(), |dx| {
            cuda::activation::softmax_bwd(on.gpu, y, dy, dx, layout, self.0.log)
        })
    }
}

/// Maxout's layout for `x` [N, C, ...] (rank ≥ 2) and `pieces`, which must divide C.
fn maxout_layout(op: &'static str, input_shape: &[usize], pieces: usize) -> Result<MaxoutLayout> {
    let &[batch, channels, ref rest @ ..] = input_shape else {
        return Err(invalid(
            "maxout input",
            format!("{op}: expected [N, C, ...], got shape {input_shape:?}"),
        ));
    };
    if pieces == 0 {
        return Err(invalid("pieces", format!("{op}: must be at least 1")));
    }
    if channels % pieces != 0 {
        return Err(invalid(
            "pieces",
            format!(
                "{op}: {pieces} pieces do not divide the {channels} channels of {input_shape:?}"
            ),
        ));
    }
    Ok(MaxoutLayout {
        batch,
        units: channels / pieces,
        pieces,
        spatial: rest.iter().product(),
    })
}

/// Maxout over groups of `pieces` consecutive channels: x [N, units·pieces, ...] →
/// (y [N, units, ...], the winning piece as i32 of y's shape).
pub fn maxout_fwd(x: &RawTensor, pieces: usize) -> Result<(RawTensor, RawTensor)> {
    let shape = x.shape();
    let (y, Index(argmax)) = run(&Maxout { shape, pieces }, [x])?;
    Ok((y, argmax))
}

/// The input shape and the pieces per unit.
struct Maxout<'a> {
    shape: &'a [usize],
    pieces: usize,
}

impl Maxout<'_> {
    /// The layout and y's shape.
    fn output(&self) -> Result<(MaxoutLayout, Vec<usize>)> {
        let layout = maxout_layout("maxout", self.shape, self.pieces)?;
        let mut shape = self.shape.to_vec();
        shape[1] = layout.units;
        Ok((layout, shape))
    }
}

impl Primitive<1> for Maxout<'_> {
    type Output = (RawTensor, Index);
    fn op(&self) -> Op {
        Op::new("maxout", &["maxout_fwd"])
    }
    fn check(&self, _: [&RawTensor; 1]) -> Result<()> {
        self.output().map(drop)
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<Self::Output> {
        let (layout, shape) = self.output()?;
        let mut argmax = vec![0i32; layout.outputs()];
        let y = host_output::<T>(shape.clone(), |y| {
            cpu::activation::maxout_fwd(x, layout, y, &mut argmax)
        });
        let argmax = RawTensor::host(i32::wrap(argmax), shape, DType::I32);
        Ok((y, Index(argmax)))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<Self::Output> {
        let (layout, shape) = self.output()?;
        let mut argmax = on.gpu.alloc(layout.outputs() * 4)?;
        let y = on.output(shape.clone(), |y| {
            cuda::activation::maxout_fwd(on.gpu, x, y, &mut argmax, layout)
        })?;
        Ok((y, Index(RawTensor::from_gpu(argmax, shape, DType::I32))))
    }
}

/// Routes dy [N, units, ...] to the winning piece of each group; dx is [N, units·pieces, ...].
pub fn maxout_bwd(dy: &RawTensor, argmax: &RawTensor, pieces: usize) -> Result<RawTensor> {
    run(&MaxoutGrad { argmax, pieces }, [dy])
}

/// The forward argmax (of dy's shape) and the pieces per unit.
struct MaxoutGrad<'a> {
    argmax: &'a RawTensor,
    pieces: usize,
}

impl MaxoutGrad<'_> {
    /// The layout and dx's shape.
    fn input(&self) -> Result<(MaxoutLayout, Vec<usize>)> {
        let (op, pieces) = (self.op().name, self.pieces);
        let mut shape = self.argmax.shape().to_vec();
        if shape.len() < 2 {
            return Err(invalid(
                "maxout gradient",
                format!("{op}: expected [N, units, ...], got shape {shape:?}"),
            ));
        }
        shape[1] = shape[1].checked_mul(pieces).ok_or_else(|| {
            invalid(
                "pieces",
                format!("{op}: {pieces} pieces overflow the channel count"),
            )
        })?;
        Ok((maxout_layout(op, &shape, pieces)?, shape))
    }
}

impl Primitive<1> for MaxoutGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("maxout backward", &["maxout_bwd"])
    }
    fn check(&self, [dy]: [&RawTensor; 1]) -> Result<()> {
        let op = self.op().name;
        common_device(op, &[dy, self.argmax])?;
        self.argmax.expect_dtype(op, DType::I32)?;
        self.argmax.expect_shape(op, dy.shape())?;
        self.input().map(drop)
    }
    fn cpu<T: HostFloat>(&self, [dy]: [&[T]; 1]) -> Result<RawTensor> {
        let (layout, shape) = self.input()?;
        let argmax = self.argmax.host_slice::<i32>(self.op().name)?;
        Ok(host_output::<T>(shape, |dx| {
            cpu::activation::maxout_bwd(dy, argmax, layout, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [dy]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let (layout, shape) = self.input()?;
        let argmax = self.argmax.gpu_buffer(self.op().name)?;
        on.output(shape, |dx| {
            cuda::activation::maxout_bwd(on.gpu, dy, argmax, dx, layout)
        })
    }
}
