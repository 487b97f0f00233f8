//! The primitives, public for benchmarks and kernel tests: one function per primitive, each dispatching to the CPU reference (`cpu::`, f32 or f64) or to
//! the CUDA launchers (`cuda::`, f32, on a real GPU or the emulation). Ops in `ops::` are written
//! once on top of these, so every op runs on every device.

use crate::cpu;
use crate::cuda::{self, Gpu, GpuBuffer};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::shape::{numel, ConvGeometry, GemmSpec};
use crate::tensor::{DType, Element, Tensor};
use std::sync::Arc;

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

/// A fresh host tensor computed by `fill` into a zeroed vector.
fn host_output<T: Element>(shape: Vec<usize>, fill: impl FnOnce(&mut [T])) -> Tensor {
    let mut data = vec![T::default(); numel(&shape)];
    fill(&mut data);
    Tensor::host(T::wrap(data), shape, T::DTYPE)
}

/// A fresh device tensor written by `fill` (which launches the kernel).
fn gpu_output(
    gpu: &Arc<Gpu>,
    shape: Vec<usize>,
    dtype: DType,
    fill: impl FnOnce(&mut GpuBuffer) -> Result<()>,
) -> Result<Tensor> {
    let mut buffer = gpu.alloc(numel(&shape) * dtype.size_in_bytes())?;
    fill(&mut buffer)?;
    Ok(Tensor::from_gpu(buffer, shape, dtype))
}

fn gpu_f32<'t>(op: &'static str, t: &'t Tensor) -> Result<(Arc<Gpu>, &'t GpuBuffer)> {
    t.expect_dtype(op, DType::F32)?;
    let buffer = t.gpu_buffer(op)?;
    Ok((buffer.gpu().clone(), buffer))
}

/// Unfolds `x` [N,C,H,W] into columns [N, C·KH·KW, OH·OW].
pub fn im2col(x: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
    let shape = vec![g.batch, g.col_rows(), g.col_cols()];
    match x.device() {
        Device::Cpu => with_float!("im2col", x, |T| {
            let xs = x.host_slice::<T>("im2col")?;
            Ok(host_output::<T>(shape, |col| {
                cpu::im2col::im2col(xs, g, col)
            }))
        }),
        _ => {
            let (gpu, xb) = gpu_f32("im2col", x)?;
            gpu_output(&gpu, shape, DType::F32, |col| {
                cuda::im2col::im2col(&gpu, xb, g, col)
            })
        }
    }
}

/// Folds columns back into an image batch [N,C,H,W], summing overlaps.
pub fn col2im(col: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
    let shape = vec![g.batch, g.in_channels, g.in_h, g.in_w];
    match col.device() {
        Device::Cpu => with_float!("col2im", col, |T| {
            let cs = col.host_slice::<T>("col2im")?;
            Ok(host_output::<T>(shape, |dx| cpu::im2col::col2im(cs, g, dx)))
        }),
        _ => {
            let (gpu, cb) = gpu_f32("col2im", col)?;
            gpu_output(&gpu, shape, DType::F32, |im| {
                cuda::im2col::col2im(&gpu, cb, g, im)
            })
        }
    }
}

fn check_gemm_lens(spec: &GemmSpec, a: &Tensor, b: &Tensor, c_len: usize) -> Result<()> {
    let (la, lb, lc) = spec.required_lens();
    if a.numel() < la || b.numel() < lb || c_len < lc {
        return Err(crate::error::invalid(
            "gemm operands",
            format!(
                "{spec:?} needs A ≥ {la}, B ≥ {lb}, C ≥ {lc} elements; got {}, {}, {c_len}",
                a.numel(),
                b.numel()
            ),
        ));
    }
    Ok(())
}

/// A new tensor of `out_shape` holding alpha·op(A)·op(B) (beta = 0).
pub fn gemm(
    spec: &GemmSpec,
    alpha: f64,
    a: &Tensor,
    b: &Tensor,
    out_shape: Vec<usize>,
) -> Result<Tensor> {
    common_device("gemm", &[a, b])?;
    check_gemm_lens(spec, a, b, numel(&out_shape))?;
    match a.device() {
        Device::Cpu => with_float!("gemm", a, |T| {
            let (xa, xb) = (a.host_slice::<T>("gemm")?, b.host_slice::<T>("gemm")?);
            Ok(host_output::<T>(out_shape, |c| {
                cpu::gemm::gemm(spec, alpha as T, xa, xb, 0.0 as T, c)
            }))
        }),
        _ => {
            let (gpu, ab) = gpu_f32("gemm", a)?;
            let (_, bb) = gpu_f32("gemm", b)?;
            gpu_output(&gpu, out_shape, DType::F32, |c| {
                cuda::gemm::gemm(&gpu, spec, alpha as f32, ab, bb, 0.0, c)
            })
        }
    }
}

/// y[o][c][i] += bias[c], in place.
pub fn bias_add(
    y: &mut Tensor,
    bias: &Tensor,
    outer: usize,
    channels: usize,
    inner: usize,
) -> Result<()> {
    common_device("bias_add", &[y, bias])?;
    match y.device() {
        Device::Cpu => with_float!("bias_add", bias, |T| {
            let bs = bias.host_slice::<T>("bias_add")?;
            let ys = y.host_vec_mut::<T>("bias_add")?;
            cpu::gemm::bias_add(ys, bs, outer, channels, inner);
            Ok(())
        }),
        _ => {
            let (gpu, bb) = gpu_f32("bias_add", bias)?;
            y.expect_dtype("bias_add", DType::F32)?;
            cuda::gemm::bias_add(
                &gpu,
                y.gpu_buffer_mut("bias_add")?,
                bb,
                outer,
                channels,
                inner,
            )
        }
    }
}

/// db[c] = Σ dy[o][c][i].
pub fn bias_grad(dy: &Tensor, outer: usize, channels: usize, inner: usize) -> Result<Tensor> {
    match dy.device() {
        Device::Cpu => with_float!("bias_grad", dy, |T| {
            let ds = dy.host_slice::<T>("bias_grad")?;
            Ok(host_output::<T>(vec![channels], |db| {
                cpu::gemm::bias_grad(ds, outer, channels, inner, db)
            }))
        }),
        _ => {
            let (gpu, db) = gpu_f32("bias_grad", dy)?;
            gpu_output(&gpu, vec![channels], DType::F32, |out| {
                cuda::gemm::bias_grad(&gpu, db, outer, channels, inner, out)
            })
        }
    }
}

/// Max pooling: (y [N,C,OH,OW], argmax i32 of the same shape).
pub fn maxpool_fwd(x: &Tensor, g: &ConvGeometry) -> Result<(Tensor, Tensor)> {
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
    let shape = vec![g.batch, g.in_channels, g.in_h, g.in_w];
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

/// Softmax cross-entropy per row: (probs [R,K], losses [R]). Labels are validated by the caller.
pub fn softmax_xent_fwd(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    common_device("softmax_cross_entropy", &[logits, labels])?;
    let (rows, classes) = (logits.shape()[0], logits.shape()[1]);
    match logits.device() {
        Device::Cpu => with_float!("softmax_cross_entropy", logits, |T| {
            let zs = logits.host_slice::<T>("softmax_cross_entropy")?;
            let ls = labels.host_slice::<i32>("softmax_cross_entropy")?;
            let mut losses = vec![0.0 as T; rows];
            let probs = host_output::<T>(vec![rows, classes], |p| {
                cpu::loss::softmax_xent_fwd(zs, ls, rows, classes, p, &mut losses)
            });
            Ok((probs, Tensor::host(T::wrap(losses), vec![rows], T::DTYPE)))
        }),
        _ => {
            let (gpu, zb) = gpu_f32("softmax_cross_entropy", logits)?;
            let lb = labels.gpu_buffer("softmax_cross_entropy")?;
            let mut losses = gpu.alloc(rows * 4)?;
            let probs = gpu_output(&gpu, vec![rows, classes], DType::F32, |p| {
                cuda::loss::softmax_xent_fwd(&gpu, zb, lb, rows, classes, p, &mut losses)
            })?;
            Ok((probs, Tensor::from_gpu(losses, vec![rows], DType::F32)))
        }
    }
}

/// dlogits = scale·(probs − onehot(labels)).
pub fn softmax_xent_bwd(probs: &Tensor, labels: &Tensor, scale: f64) -> Result<Tensor> {
    common_device("softmax_cross_entropy backward", &[probs, labels])?;
    let (rows, classes) = (probs.shape()[0], probs.shape()[1]);
    match probs.device() {
        Device::Cpu => with_float!("softmax_cross_entropy backward", probs, |T| {
            let ps = probs.host_slice::<T>("softmax_cross_entropy backward")?;
            let ls = labels.host_slice::<i32>("softmax_cross_entropy backward")?;
            Ok(host_output::<T>(vec![rows, classes], |d| {
                cpu::loss::softmax_xent_bwd(ps, ls, rows, classes, scale as T, d)
            }))
        }),
        _ => {
            let (gpu, pb) = gpu_f32("softmax_cross_entropy backward", probs)?;
            let lb = labels.gpu_buffer("softmax_cross_entropy backward")?;
            gpu_output(&gpu, vec![rows, classes], DType::F32, |d| {
                cuda::loss::softmax_xent_bwd(&gpu, pb, lb, rows, classes, scale as f32, d)
            })
        }
    }
}

/// scale·Σx as a one-element tensor.
pub fn sum(x: &Tensor, scale: f64) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => with_float!("sum", x, |T| {
            let xs = x.host_slice::<T>("sum")?;
            let s = xs.iter().fold(0.0 as T, |acc, &v| acc + v) * scale as T;
            Ok(Tensor::host(T::wrap(vec![s]), vec![1], T::DTYPE))
        }),
        _ => {
            let (gpu, xb) = gpu_f32("sum", x)?;
            let n = x.numel();
            gpu_output(&gpu, vec![1], DType::F32, |out| {
                cuda::reduce::sum(&gpu, xb, n, scale as f32, out)
            })
        }
    }
}

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

/// A copy of `x` in new memory on the same device (a device-to-device copy on a GPU): the
/// bandwidth ceiling the memory-bound kernels are measured against.
pub fn copy(x: &Tensor) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => Ok(Tensor::host(
            x.host_data("copy")?.clone(),
            x.shape().to_vec(),
            x.dtype(),
        )),
        _ => {
            let src = x.gpu_buffer("copy")?;
            let gpu = src.gpu().clone();
            let bytes = x.numel() * x.dtype().size_in_bytes();
            gpu_output(&gpu, x.shape().to_vec(), x.dtype(), |dst| {
                gpu.copy(src, dst, bytes)
            })
        }
    }
}
