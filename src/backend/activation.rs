//! Activation primitives.

use super::storage::{in_storage, Index};
use super::RawTensor;
use super::{common_device, gpu_f32, gpu_float, gpu_output, host_output, with_float};
use crate::core::device::Device;
use crate::core::dtype::{DType, Element};
use crate::core::error::{invalid, Error, Result};
use crate::core::layout::{MaxoutLayout, RowLayout};
use crate::cpu;
use crate::cuda;

/// ReLU: (y, mask u8).
pub fn relu_fwd(x: &RawTensor) -> Result<(RawTensor, RawTensor)> {
    let (y, Index(mask)) = in_storage(&["relu_fwd"], [x], |[x]| {
        let shape = x.shape().to_vec();
        match x.device() {
            Device::Cpu => with_float!("relu", x, |T| {
                let xs = x.host_slice::<T>("relu")?;
                let mut mask = vec![0u8; xs.len()];
                let y = host_output::<T>(shape.clone(), |y| {
                    cpu::activation::relu_fwd(xs, y, &mut mask)
                });
                Ok((y, Index(RawTensor::host(u8::wrap(mask), shape, DType::U8))))
            }),
            _ => {
                let (gpu, xb, s) = gpu_float("relu", x)?;
                let n = x.numel();
                let mut mask = gpu.alloc(n)?;
                let y = gpu_output(&gpu, shape.clone(), s.dtype(), |y| {
                    cuda::activation::relu_fwd(&gpu, s, xb, y, &mut mask, n)
                })?;
                Ok((y, Index(RawTensor::from_gpu(mask, shape, DType::U8))))
            }
        }
    })?;
    Ok((y, mask))
}

/// dx = dy · mask.
pub fn relu_bwd(dy: &RawTensor, mask: &RawTensor) -> Result<RawTensor> {
    in_storage(&["relu_bwd"], [dy], |[dy]| {
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
                let (gpu, db, s) = gpu_float("relu backward", dy)?;
                let mb = mask.gpu_buffer("relu backward")?;
                let n = dy.numel();
                gpu_output(&gpu, shape, s.dtype(), |dx| {
                    cuda::activation::relu_bwd(&gpu, s, db, mb, dx, n)
                })
            }
        }
    })
}

/// The pointwise activations and their parameters.
#[derive(Clone, Copy, Debug)]
enum PointwiseActivation {
    LeakyRelu(f64),
    Elu(f64),
    Sigmoid,
    Tanh,
}

impl PointwiseActivation {
    /// The forward and backward kernels (without their `_f32` suffix).
    fn kernels(self) -> (&'static str, &'static str) {
        match self {
            PointwiseActivation::LeakyRelu(_) => ("leaky_relu_fwd", "leaky_relu_bwd"),
            PointwiseActivation::Elu(_) => ("elu_fwd", "elu_bwd"),
            PointwiseActivation::Sigmoid => ("sigmoid_fwd", "sigmoid_bwd"),
            PointwiseActivation::Tanh => ("tanh_fwd", "tanh_bwd"),
        }
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            PointwiseActivation::LeakyRelu(_) => ("leaky_relu", "leaky_relu backward"),
            PointwiseActivation::Elu(_) => ("elu", "elu backward"),
            PointwiseActivation::Sigmoid => ("sigmoid", "sigmoid backward"),
            PointwiseActivation::Tanh => ("tanh", "tanh backward"),
        }
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

    fn gpu(self) -> cuda::activation::ActivationKernel {
        use cuda::activation::ActivationKernel as K;
        match self {
            PointwiseActivation::LeakyRelu(slope) => K::LeakyRelu {
                slope: slope as f32,
            },
            PointwiseActivation::Elu(alpha) => K::Elu {
                alpha: alpha as f32,
            },
            PointwiseActivation::Sigmoid => K::Sigmoid,
            PointwiseActivation::Tanh => K::Tanh,
        }
    }
}

fn pointwise_fwd(op: PointwiseActivation, x: &RawTensor) -> Result<RawTensor> {
    let (name, _) = op.names();
    op.check()?;
    in_storage(&[op.kernels().0], [x], |[x]| {
        let shape = x.shape().to_vec();
        match x.device() {
            Device::Cpu => with_float!(name, x, |T| {
                let xs = x.host_slice::<T>(name)?;
                Ok(host_output::<T>(shape, |y| match op {
                    PointwiseActivation::LeakyRelu(s) => {
                        cpu::activation::leaky_relu_fwd(xs, s as T, y)
                    }
                    PointwiseActivation::Elu(a) => cpu::activation::elu_fwd(xs, a as T, y),
                    PointwiseActivation::Sigmoid => cpu::activation::sigmoid_fwd(xs, y),
                    PointwiseActivation::Tanh => cpu::activation::tanh_fwd(xs, y),
                }))
            }),
            _ => {
                let (gpu, xb) = gpu_f32(name, x)?;
                let n = x.numel();
                gpu_output(&gpu, shape, DType::F32, |y| {
                    cuda::activation::pointwise_fwd(&gpu, op.gpu(), xb, y, n)
                })
            }
        }
    })
}

/// `saved` is the forward input (leaky ReLU, ELU) or output (sigmoid, tanh).
fn pointwise_bwd(op: PointwiseActivation, saved: &RawTensor, dy: &RawTensor) -> Result<RawTensor> {
    let (_, name) = op.names();
    op.check()?;
    same_layout(name, saved, dy)?;
    in_storage(&[op.kernels().1], [dy, saved], |[dy, saved]| {
        let shape = dy.shape().to_vec();
        match dy.device() {
            Device::Cpu => with_float!(name, dy, |T| {
                let ss = saved.host_slice::<T>(name)?;
                let ds = dy.host_slice::<T>(name)?;
                Ok(host_output::<T>(shape, |dx| match op {
                    PointwiseActivation::LeakyRelu(s) => {
                        cpu::activation::leaky_relu_bwd(ss, ds, s as T, dx)
                    }
                    PointwiseActivation::Elu(a) => cpu::activation::elu_bwd(ss, ds, a as T, dx),
                    PointwiseActivation::Sigmoid => cpu::activation::sigmoid_bwd(ss, ds, dx),
                    PointwiseActivation::Tanh => cpu::activation::tanh_bwd(ss, ds, dx),
                }))
            }),
            _ => {
                let (gpu, sb) = gpu_f32(name, saved)?;
                let (_, db) = gpu_f32(name, dy)?;
                let n = dy.numel();
                gpu_output(&gpu, shape, DType::F32, |dx| {
                    cuda::activation::pointwise_bwd(&gpu, op.gpu(), sb, db, dx, n)
                })
            }
        }
    })
}

/// Checks that `b` has `a`'s device, dtype and shape.
fn same_layout(op: &'static str, a: &RawTensor, b: &RawTensor) -> Result<()> {
    common_device(op, &[a, b])?;
    b.expect_dtype(op, a.dtype())?;
    b.expect_shape(op, a.shape())
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

/// The `[outer][len][inner]` view of `axis` of `t`, or an error when the axis does not exist.
fn softmax_layout(op: &'static str, t: &RawTensor, axis: usize) -> Result<RowLayout> {
    let rank = t.shape().len();
    if axis >= rank {
        return Err(invalid(
            "axis",
            format!(
                "{op}: axis {axis} is out of range for a {rank}-d tensor of shape {:?}",
                t.shape()
            ),
        ));
    }
    Ok(RowLayout::along(t.shape(), axis))
}

fn softmax_fwd_impl(op: &'static str, x: &RawTensor, axis: usize, log: bool) -> Result<RawTensor> {
    in_storage(&["softmax_rows_fwd", "softmax_cols_fwd"], [x], |[x]| {
        let layout = softmax_layout(op, x, axis)?;
        let shape = x.shape().to_vec();
        match x.device() {
            Device::Cpu => with_float!(op, x, |T| {
                let xs = x.host_slice::<T>(op)?;
                Ok(host_output::<T>(shape, |y| {
                    cpu::activation::softmax_fwd(xs, layout, log, y)
                }))
            }),
            _ => {
                let (gpu, xb) = gpu_f32(op, x)?;
                gpu_output(&gpu, shape, DType::F32, |y| {
                    cuda::activation::softmax_fwd(&gpu, xb, y, layout, log)
                })
            }
        }
    })
}

fn softmax_bwd_impl(
    op: &'static str,
    y: &RawTensor,
    dy: &RawTensor,
    axis: usize,
    log: bool,
) -> Result<RawTensor> {
    same_layout(op, y, dy)?;
    let layout = softmax_layout(op, y, axis)?;
    let kernels = ["softmax_rows_bwd", "softmax_cols_bwd"];
    in_storage(&kernels, [dy, y], |[dy, y]| {
        let shape = y.shape().to_vec();
        match y.device() {
            Device::Cpu => with_float!(op, y, |T| {
                let ys = y.host_slice::<T>(op)?;
                let ds = dy.host_slice::<T>(op)?;
                Ok(host_output::<T>(shape, |dx| {
                    cpu::activation::softmax_bwd(ys, ds, layout, log, dx)
                }))
            }),
            _ => {
                let (gpu, yb) = gpu_f32(op, y)?;
                let (_, db) = gpu_f32(op, dy)?;
                gpu_output(&gpu, shape, DType::F32, |dx| {
                    cuda::activation::softmax_bwd(&gpu, yb, db, dx, layout, log)
                })
            }
        }
    })
}

/// Softmax along `axis` (any axis of any rank ≥ 1), stable for logits of any magnitude.
pub fn softmax_fwd(x: &RawTensor, axis: usize) -> Result<RawTensor> {
    softmax_fwd_impl("softmax", x, axis, false)
}

/// `dx = y ⊙ (dy − Σ_axis dy⊙y)` from the forward output `y`.
pub fn softmax_bwd(y: &RawTensor, dy: &RawTensor, axis: usize) -> Result<RawTensor> {
    softmax_bwd_impl("softmax backward", y, dy, axis, false)
}

/// Log-softmax along `axis`: `x − max − log Σ exp(x − max)`.
pub fn log_softmax_fwd(x: &RawTensor, axis: usize) -> Result<RawTensor> {
    softmax_fwd_impl("log_softmax", x, axis, true)
}

/// `dx = dy − exp(y) ⊙ Σ_axis dy` from the forward output `y` (log-probabilities).
pub fn log_softmax_bwd(y: &RawTensor, dy: &RawTensor, axis: usize) -> Result<RawTensor> {
    softmax_bwd_impl("log_softmax backward", y, dy, axis, true)
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
    let (y, Index(argmax)) = in_storage(&["maxout_fwd"], [x], |[x]| {
        let layout = maxout_layout("maxout", x.shape(), pieces)?;
        let mut shape = x.shape().to_vec();
        shape[1] = layout.units;
        match x.device() {
            Device::Cpu => with_float!("maxout", x, |T| {
                let xs = x.host_slice::<T>("maxout")?;
                let mut argmax = vec![0i32; layout.outputs()];
                let y = host_output::<T>(shape.clone(), |y| {
                    cpu::activation::maxout_fwd(xs, layout, y, &mut argmax)
                });
                let argmax = RawTensor::host(i32::wrap(argmax), shape, DType::I32);
                Ok((y, Index(argmax)))
            }),
            _ => {
                let (gpu, xb) = gpu_f32("maxout", x)?;
                let mut argmax = gpu.alloc(layout.outputs() * 4)?;
                let y = gpu_output(&gpu, shape.clone(), DType::F32, |y| {
                    cuda::activation::maxout_fwd(&gpu, xb, y, &mut argmax, layout)
                })?;
                Ok((y, Index(RawTensor::from_gpu(argmax, shape, DType::I32))))
            }
        }
    })?;
    Ok((y, argmax))
}

/// Routes dy [N, units, ...] to the winning piece of each group; dx is [N, units·pieces, ...].
pub fn maxout_bwd(dy: &RawTensor, argmax: &RawTensor, pieces: usize) -> Result<RawTensor> {
    const OP: &str = "maxout backward";
    in_storage(&["maxout_bwd"], [dy], |[dy]| {
        common_device(OP, &[dy, argmax])?;
        argmax.expect_dtype(OP, DType::I32)?;
        argmax.expect_shape(OP, dy.shape())?;
        let mut shape = dy.shape().to_vec();
        if shape.len() < 2 {
            return Err(invalid(
                "maxout gradient",
                format!("{OP}: expected [N, units, ...], got shape {shape:?}"),
            ));
        }
        shape[1] = shape[1].checked_mul(pieces).ok_or_else(|| {
            invalid(
                "pieces",
                format!("{OP}: {pieces} pieces overflow the channel count"),
            )
        })?;
        let layout = maxout_layout(OP, &shape, pieces)?;
        match dy.device() {
            Device::Cpu => with_float!(OP, dy, |T| {
                let ds = dy.host_slice::<T>(OP)?;
                let am = argmax.host_slice::<i32>(OP)?;
                Ok(host_output::<T>(shape, |dx| {
                    cpu::activation::maxout_bwd(ds, am, layout, dx)
                }))
            }),
            _ => {
                let (gpu, db) = gpu_f32(OP, dy)?;
                let ab = argmax.gpu_buffer(OP)?;
                gpu_output(&gpu, shape, DType::F32, |dx| {
                    cuda::activation::maxout_bwd(&gpu, db, ab, dx, layout)
                })
            }
        }
    })
}
