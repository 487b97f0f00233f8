//! Elementwise and reduction primitives, and the device copy.

use super::primitive::{run, run_in_place, HostFloat, InPlace, OnGpu, Op, Primitive, Updating};
use super::{gpu_output, host_output, Factor, RawTensor};
use crate::core::device::Device;
use crate::core::error::{Error, Result};
use crate::core::shape::numel;
use crate::cpu;
use crate::cuda::{self, GpuBuffer};

/// scale·Σx as a one-element tensor.
pub fn sum(x: &RawTensor, scale: f64) -> Result<RawTensor> {
    run(
        &Sum {
            n: x.numel(),
            scale,
        },
        [x],
    )
}

struct Sum {
    n: usize,
    scale: f64,
}

impl Primitive<1> for Sum {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("sum", &["sum"])
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        let s = x.iter().fold(T::zero(), |acc, &v| acc + v) * T::of(self.scale);
        Ok(RawTensor::host(T::wrap(vec![s]), vec![1], T::DTYPE))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        on.output(vec![1], |out| {
            cuda::reduce::sum(on.gpu, x, self.n, self.scale as f32, out)
        })
    }
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

/// alpha·a + beta·b for tensors of one shape.
pub fn axpby(alpha: f64, a: &RawTensor, beta: f64, b: &RawTensor) -> Result<RawTensor> {
    let shape = a.shape();
    run(&Axpby { shape, alpha, beta }, [a, b])
}

struct Axpby<'a> {
    shape: &'a [usize],
    alpha: f64,
    beta: f64,
}

impl Primitive<2> for Axpby<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("axpby", &["axpby"])
    }
    fn check(&self, [a, b]: [&RawTensor; 2]) -> Result<()> {
        b.expect_shape(self.op().name, a.shape())
    }
    fn cpu<T: HostFloat>(&self, [a, b]: [&[T]; 2]) -> Result<RawTensor> {
        let (alpha, beta) = (T::of(self.alpha), T::of(self.beta));
        Ok(host_output::<T>(self.shape.to_vec(), |o| {
            cpu::elementwise::axpby(alpha, a, beta, b, o)
        }))
    }
    fn gpu(&self, on: &OnGpu, [a, b]: [&GpuBuffer; 2]) -> Result<RawTensor> {
        let (alpha, beta, n) = (self.alpha as f32, self.beta as f32, numel(self.shape));
        on.output(self.shape.to_vec(), |o| {
            cuda::elementwise::axpby(on.gpu, on.format, (alpha, a), (beta, b), o, n)
        })
    }
}

/// a + b.
pub fn add(a: &RawTensor, b: &RawTensor) -> Result<RawTensor> {
    axpby(1.0, a, 1.0, b)
}

/// a·b elementwise.
pub fn mul(a: &RawTensor, b: &RawTensor) -> Result<RawTensor> {
    run(&Mul(a.shape()), [a, b])
}

struct Mul<'a>(&'a [usize]);

impl Primitive<2> for Mul<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("mul", &["mul"])
    }
    fn check(&self, [a, b]: [&RawTensor; 2]) -> Result<()> {
        b.expect_shape(self.op().name, a.shape())
    }
    fn cpu<T: HostFloat>(&self, [a, b]: [&[T]; 2]) -> Result<RawTensor> {
        Ok(host_output::<T>(self.0.to_vec(), |o| {
            cpu::elementwise::mul(a, b, o)
        }))
    }
    fn gpu(&self, on: &OnGpu, [a, b]: [&GpuBuffer; 2]) -> Result<RawTensor> {
        on.output(self.0.to_vec(), |o| {
            cuda::elementwise::mul(on.gpu, a, b, o, numel(self.0))
        })
    }
}

/// scale·x + shift.
pub fn affine(x: &RawTensor, scale: f64, shift: f64) -> Result<RawTensor> {
    let shape = x.shape();
    run(
        &Affine {
            shape,
            scale,
            shift,
        },
        [x],
    )
}

struct Affine<'a> {
    shape: &'a [usize],
    scale: f64,
    shift: f64,
}

impl Primitive<1> for Affine<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("affine", &["affine"])
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        let (scale, shift) = (T::of(self.scale), T::of(self.shift));
        Ok(host_output::<T>(self.shape.to_vec(), |o| {
            cpu::elementwise::affine(x, scale, shift, o)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let (scale, shift, n) = (self.scale as f32, self.shift as f32, numel(self.shape));
        on.output(self.shape.to_vec(), |o| {
            cuda::elementwise::affine(on.gpu, x, scale, shift, o, n)
        })
    }
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
    run_in_place(&AxpbyInPlace { alpha, beta }, [a], [b])
}

struct AxpbyInPlace {
    alpha: f64,
    beta: f64,
}

impl InPlace<1, 1> for AxpbyInPlace {
    fn op(&self) -> Op {
        Op::new("axpby", &["axpby"])
    }
    fn check(&self, [a]: [&RawTensor; 1], [b]: [&RawTensor; 1]) -> Result<()> {
        b.expect_shape(self.op().name, a.shape())
    }
    fn cpu<T: HostFloat>(&self, [a]: [&mut [T]; 1], [b]: [&[T]; 1]) -> Result<()> {
        let old = a.to_vec();
        cpu::elementwise::axpby(T::of(self.alpha), &old, T::of(self.beta), b, a);
        Ok(())
    }
    fn gpu(&self, on: Updating, [a]: [&mut GpuBuffer; 1], [b]: [&GpuBuffer; 1]) -> Result<()> {
        let (alpha, beta) = (self.alpha as f32, self.beta as f32);
        cuda::elementwise::axpby_in_place(on.gpu, alpha, a, beta, b, on.len)
    }
}

/// Runs `primitive` on `x` and, after it, `upstream` if there is one: a [`Factor`]'s upstream
/// tensor is a float input of the primitive, widened with `x`.
fn run_with_upstream<P, O>(primitive: &P, x: &RawTensor, upstream: Option<&RawTensor>) -> Result<O>
where
    P: Primitive<1, Output = O> + Primitive<2, Output = O>,
{
    match upstream {
        Some(u) => run(primitive, [x, u]),
        None => run(primitive, [x]),
    }
}

/// A scale times the upstream gradient that follows the tensor among the inputs, if any
/// ([`run_with_upstream`]).
struct Scaled<'a> {
    shape: &'a [usize],
    scale: f64,
}

impl Scaled<'_> {
    fn check<const N: usize>(&self, op: &'static str, inputs: [&RawTensor; N]) -> Result<()> {
        Factor::new(self.scale, inputs.get(1).copied()).check(op, inputs[0])
    }

    /// scale·upstream on the host, as [`Factor::on_host`] computes it.
    fn on_host<T: HostFloat, const N: usize>(&self, inputs: [&[T]; N]) -> T {
        match inputs.get(1) {
            Some(u) => T::of(self.scale) * u[0],
            None => T::of(self.scale),
        }
    }
}

/// The upstream gradient's device address, 0 (a factor of 1) without one.
fn upstream_address<const N: usize>(inputs: [&GpuBuffer; N]) -> u64 {
    inputs.get(1).map_or(0, |u| u.address())
}

/// A tensor of `shape` filled with `value`, with `like`'s dtype and device. An f32 device tensor
/// is filled by a kernel (no copy from the host, so it may be part of a captured CUDA graph).
pub fn full_like(like: &RawTensor, shape: &[usize], value: f64) -> Result<RawTensor> {
    full_like_times(like, shape, Factor::new(value, None))
}

/// A tensor of `shape` filled with `value·upstream` (a [`Factor`]), with `like`'s dtype and
/// device: the backward of a sum or mean, whose upstream gradient a GPU kernel reads itself.
pub fn full_like_times(like: &RawTensor, shape: &[usize], value: Factor) -> Result<RawTensor> {
    let scale = value.scale;
    run_with_upstream(&Fill(Scaled { shape, scale }), like, value.upstream)
}

struct Fill<'a>(Scaled<'a>);

impl<const N: usize> Primitive<N> for Fill<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("full", &["fill"])
    }
    fn check(&self, inputs: [&RawTensor; N]) -> Result<()> {
        self.0.check("full", inputs)
    }
    fn cpu<T: HostFloat>(&self, inputs: [&[T]; N]) -> Result<RawTensor> {
        let (v, shape) = (self.0.on_host(inputs), self.0.shape);
        Ok(RawTensor::host(
            T::wrap(vec![v; numel(shape)]),
            shape.to_vec(),
            T::DTYPE,
        ))
    }
    fn gpu(&self, on: &OnGpu, inputs: [&GpuBuffer; N]) -> Result<RawTensor> {
        let Scaled { shape, scale } = self.0;
        on.output(shape.to_vec(), |o| {
            let upstream = upstream_address(inputs);
            cuda::elementwise::fill(on.gpu, scale as f32, upstream, o, numel(shape))
        })
    }
}

/// factor·x (a [`Factor`]: a scale times a one-element upstream gradient read on the device).
pub fn scale_times(x: &RawTensor, factor: Factor) -> Result<RawTensor> {
    let (shape, scale) = (x.shape(), factor.scale);
    run_with_upstream(&Scale(Scaled { shape, scale }), x, factor.upstream)
}

struct Scale<'a>(Scaled<'a>);

impl<const N: usize> Primitive<N> for Scale<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("scale", &["affine"])
    }
    fn check(&self, inputs: [&RawTensor; N]) -> Result<()> {
        self.0.check("scale", inputs)
    }
    fn cpu<T: HostFloat>(&self, inputs: [&[T]; N]) -> Result<RawTensor> {
        let s = self.0.on_host(inputs);
        Ok(host_output::<T>(self.0.shape.to_vec(), |o| {
            cpu::elementwise::affine(inputs[0], s, T::zero(), o)
        }))
    }
    fn gpu(&self, on: &OnGpu, inputs: [&GpuBuffer; N]) -> Result<RawTensor> {
        let Scaled { shape, scale } = self.0;
        let (upstream, n) = (upstream_address(inputs), numel(shape));
        on.output(shape.to_vec(), |o| {
            cuda::elementwise::affine_times(on.gpu, inputs[0], scale as f32, upstream, 0.0, o, n)
        })
    }
}
