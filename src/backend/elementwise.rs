//! Elementwise and reduction primitives, and the device copy.

use super::storage::{in_storage, in_storage_list};
use super::RawTensor;
use super::{common_device, gpu_f32, gpu_float, gpu_output, host_output, with_float, Factor};
use crate::core::device::Device;
use crate::core::dtype::{DType, Element};
use crate::core::error::{Error, Result};
use crate::cpu;
use crate::cuda;

/// scale·Σx as a one-element tensor.
pub fn sum(x: &RawTensor, scale: f64) -> Result<RawTensor> {
    in_storage(&["sum"], [x], |[x]| match x.device() {
        Device::Cpu => with_float!("sum", x, |T| {
            let xs = x.host_slice::<T>("sum")?;
            let s = xs.iter().fold(0.0 as T, |acc, &v| acc + v) * scale as T;
            Ok(RawTensor::host(T::wrap(vec![s]), vec![1], T::DTYPE))
        }),
        _ => {
            let (gpu, xb) = gpu_f32("sum", x)?;
            let n = x.numel();
            gpu_output(&gpu, vec![1], DType::F32, |out| {
                cuda::reduce::sum(&gpu, xb, n, scale as f32, out)
            })
        }
    })
}

/// A copy of `x` in new memory on the same device (a device-to-device copy on a GPU): the
/// bandwidth ceiling the memory-bound kernels are measured against.
pub fn copy(x: &RawTensor) -> Result<RawTensor> {
    match x.device() {
        Device::Cpu => Ok(RawTensor::host(
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

fn same_shapes(op: &'static str, a: &RawTensor, b: &RawTensor) -> Result<()> {
    common_device(op, &[a, b])?;
    b.expect_dtype(op, a.dtype())?;
    b.expect_shape(op, a.shape())
}

/// alpha·a + beta·b for tensors of one shape.
pub fn axpby(alpha: f64, a: &RawTensor, beta: f64, b: &RawTensor) -> Result<RawTensor> {
    same_shapes("axpby", a, b)?;
    in_storage(&["axpby"], [a, b], |[a, b]| {
        let shape = a.shape().to_vec();
        match a.device() {
            Device::Cpu => with_float!("axpby", a, |T| {
                let (xa, xb) = (a.host_slice::<T>("axpby")?, b.host_slice::<T>("axpby")?);
                Ok(host_output::<T>(shape, |o| {
                    cpu::elementwise::axpby(alpha as T, xa, beta as T, xb, o)
                }))
            }),
            _ => {
                let (gpu, ab, s) = gpu_float("axpby", a)?;
                let bb = b.gpu_buffer("axpby")?; // a's dtype, checked above
                let n = a.numel();
                gpu_output(&gpu, shape, s.dtype(), |o| {
                    cuda::elementwise::axpby(&gpu, s, (alpha as f32, ab), (beta as f32, bb), o, n)
                })
            }
        }
    })
}

/// a + b.
pub fn add(a: &RawTensor, b: &RawTensor) -> Result<RawTensor> {
    axpby(1.0, a, 1.0, b)
}

/// a·b elementwise.
pub fn mul(a: &RawTensor, b: &RawTensor) -> Result<RawTensor> {
    same_shapes("mul", a, b)?;
    in_storage(&["mul"], [a, b], |[a, b]| {
        let shape = a.shape().to_vec();
        match a.device() {
            Device::Cpu => with_float!("mul", a, |T| {
                let (xa, xb) = (a.host_slice::<T>("mul")?, b.host_slice::<T>("mul")?);
                Ok(host_output::<T>(shape, |o| {
                    cpu::elementwise::mul(xa, xb, o)
                }))
            }),
            _ => {
                let (gpu, ab) = gpu_f32("mul", a)?;
                let (_, bb) = gpu_f32("mul", b)?;
                let n = a.numel();
                gpu_output(&gpu, shape, DType::F32, |o| {
                    cuda::elementwise::mul(&gpu, ab, bb, o, n)
                })
            }
        }
    })
}

/// scale·x + shift.
pub fn affine(x: &RawTensor, scale: f64, shift: f64) -> Result<RawTensor> {
    in_storage(&["affine"], [x], |[x]| {
        let shape = x.shape().to_vec();
        match x.device() {
            Device::Cpu => with_float!("affine", x, |T| {
                let xs = x.host_slice::<T>("affine")?;
                Ok(host_output::<T>(shape, |o| {
                    cpu::elementwise::affine(xs, scale as T, shift as T, o)
                }))
            }),
            _ => {
                let (gpu, xb) = gpu_f32("affine", x)?;
                let n = x.numel();
                gpu_output(&gpu, shape, DType::F32, |o| {
                    cuda::elementwise::affine(&gpu, xb, scale as f32, shift as f32, o, n)
                })
            }
        }
    })
}

/// Copies `src` into `dst` in place (same shape and dtype; `src` on the host or on `dst`'s device):
/// `dst`'s buffer keeps its address, so a captured CUDA graph that reads it sees the new values.
pub fn copy_into(dst: &mut RawTensor, src: &RawTensor) -> Result<()> {
    src.expect_shape("copy_into", dst.shape())?;
    src.expect_dtype("copy_into", dst.dtype())?;
    let bytes = src.numel() * src.dtype().size_in_bytes();
    match (src.device(), dst.device()) {
        (Device::Cpu, Device::Cpu) => {
            let data = src.host_data("copy_into")?.clone();
            *dst = RawTensor::host(data, src.shape().to_vec(), src.dtype());
            Ok(())
        }
        (Device::Cpu, _) => {
            let host = src.host_data("copy_into")?.clone();
            let buffer = dst.gpu_buffer_mut("copy_into")?;
            let gpu = buffer.gpu().clone();
            gpu.upload_host_data(&host, buffer)
        }
        (a, b) if a == b => {
            let from = src.gpu_buffer("copy_into")?;
            let buffer = dst.gpu_buffer_mut("copy_into")?;
            let gpu = buffer.gpu().clone();
            gpu.copy(from, buffer, bytes)
        }
        (a, b) => Err(Error::DeviceMismatch {
            op: "copy_into",
            a: b,
            b: a,
        }),
    }
}

/// a ← alpha·a + beta·b in place (a's buffer keeps its address: a captured CUDA graph's running
/// statistics stay where the graph writes them).
pub fn axpby_in_place(alpha: f64, a: &mut RawTensor, beta: f64, b: &RawTensor) -> Result<()> {
    same_shapes("axpby", a, b)?;
    common_device("axpby", &[a, b])?;
    match a.device() {
        Device::Cpu => with_float!("axpby", a, |T| {
            let xb = b.host_slice::<T>("axpby")?.to_vec();
            let xa = a.host_vec_mut::<T>("axpby")?;
            let old = xa.clone();
            cpu::elementwise::axpby(alpha as T, &old, beta as T, &xb, xa);
            Ok(())
        }),
        _ => {
            let (_, bb) = gpu_f32("axpby", b)?;
            a.expect_dtype("axpby", DType::F32)?;
            let n = a.numel();
            let ab = a.gpu_buffer_mut("axpby")?;
            let gpu = ab.gpu().clone();
            cuda::elementwise::axpby_in_place(&gpu, alpha as f32, ab, beta as f32, bb, n)
        }
    }
}

/// `t` and `factor`'s upstream tensor, if it has one: the inputs a primitive scaled by a
/// [`Factor`] widens together.
fn with_upstream<'a>(t: &'a RawTensor, factor: &Factor<'a>) -> Vec<&'a RawTensor> {
    std::iter::once(t).chain(factor.upstream).collect()
}

/// The tensor and the factor (of `scale`) in a list made by [`with_upstream`].
fn split_upstream<'a>(inputs: &[&'a RawTensor], scale: f64) -> (&'a RawTensor, Factor<'a>) {
    (inputs[0], Factor::new(scale, inputs.get(1).copied()))
}

/// A tensor of `shape` filled with `value`, with `like`'s dtype and device. An f32 device tensor
/// is filled by a kernel (no copy from the host, so it may be part of a captured CUDA graph).
pub fn full_like(like: &RawTensor, shape: &[usize], value: f64) -> Result<RawTensor> {
    full_like_times(like, shape, Factor::new(value, None))
}

/// A tensor of `shape` filled with `value·upstream` (a [`Factor`]), with `like`'s dtype and
/// device: the backward of a sum or mean, whose upstream gradient a GPU kernel reads itself.
pub fn full_like_times(like: &RawTensor, shape: &[usize], value: Factor) -> Result<RawTensor> {
    const OP: &str = "full";
    value.check(OP, like)?;
    in_storage_list(&["fill"], &with_upstream(like, &value), |inputs| {
        let (like, value) = split_upstream(inputs, value.scale);
        let n: usize = shape.iter().product();
        match like.device() {
            Device::Cpu => with_float!(OP, like, |T| {
                let v = value.on_host::<T>(OP)?;
                Ok(RawTensor::host(
                    T::wrap(vec![v; n]),
                    shape.to_vec(),
                    T::DTYPE,
                ))
            }),
            _ if like.dtype() != DType::F32 && value.upstream.is_none() => {
                // No fill kernel for other dtypes: the constant comes from the host.
                let host = RawTensor::from_vec(vec![value.scale as f32; n], shape, Device::Cpu)?;
                host.to_dtype(like.dtype())?.to_device(like.device())
            }
            _ => {
                let (gpu, _) = gpu_f32(OP, like)?;
                let upstream = value.device_address(OP)?;
                gpu_output(&gpu, shape.to_vec(), DType::F32, |o| {
                    cuda::elementwise::fill(&gpu, value.scale as f32, upstream, o, n)
                })
            }
        }
    })
}

/// factor·x (a [`Factor`]: a scale times a one-element upstream gradient read on the device).
pub fn scale_times(x: &RawTensor, factor: Factor) -> Result<RawTensor> {
    const OP: &str = "scale";
    factor.check(OP, x)?;
    in_storage_list(&["affine"], &with_upstream(x, &factor), |inputs| {
        let (x, factor) = split_upstream(inputs, factor.scale);
        let shape = x.shape().to_vec();
        match x.device() {
            Device::Cpu => with_float!(OP, x, |T| {
                let s = factor.on_host::<T>(OP)?;
                let xs = x.host_slice::<T>(OP)?;
                Ok(host_output::<T>(shape, |o| {
                    cpu::elementwise::affine(xs, s, 0.0 as T, o)
                }))
            }),
            _ => {
                let (gpu, xb) = gpu_f32(OP, x)?;
                let upstream = factor.device_address(OP)?;
                let (scale, n) = (factor.scale as f32, x.numel());
                gpu_output(&gpu, shape, DType::F32, |o| {
                    cuda::elementwise::affine_times(&gpu, xb, scale, upstream, 0.0, o, n)
                })
            }
        }
    })
}
