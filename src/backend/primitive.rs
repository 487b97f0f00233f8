//! The primitive runner: validation, device dispatch and the 16-bit storage rule, done once.
//!
//! A primitive is a value (its parameters) implementing [`Primitive`]: its name and kernels, the
//! checks only it knows (shapes, parameters, tensors that are not among its float inputs), its CPU
//! reference on host slices (generic over f32 and f64) and its kernel launch on device buffers.
//! [`run`] does the rest, in one order for every primitive:
//!
//! 1. the float inputs share one device and one dtype (an error names the op otherwise);
//! 2. the primitive's own [`Primitive::check`], on the inputs as given;
//! 3. the storage rule ([`super::storage`]): 16-bit inputs are widened to f32 unless the device has
//!    16-bit twins of every kernel the primitive names, and value outputs are rounded back once;
//! 4. dispatch: the CPU arm with `T` = the inputs' float type, or the GPU arm with the inputs'
//!    storage format (f32 unless the primitive runs 16-bit storage as stored).
//!
//! This follows candle's `Map1`/`Map2` traits: a closure cannot be generic over the float type,
//! a trait method can.

use super::storage::{in_storage, StoredOutputs};
use super::{common_device, RawTensor};
use crate::core::device::Device;
use crate::core::dtype::{DType, Element};
use crate::core::error::{Error, Result};
use crate::cuda::params::StorageFormat;
use crate::cuda::{Gpu, GpuBuffer};
use std::sync::Arc;

/// The float types the CPU reference computes in.
pub(crate) trait HostFloat: crate::cpu::Float + Element {
    /// `v` in this type (rounded to nearest for f32), as `v as T` would give.
    fn of(v: f64) -> Self;
}

impl HostFloat for f32 {
    fn of(v: f64) -> f32 {
        v as f32
    }
}

impl HostFloat for f64 {
    fn of(v: f64) -> f64 {
        v
    }
}

/// A primitive's name in errors and the kernels it launches: the storage rule runs 16-bit storage
/// as stored only where every one of them has 16-bit twins ([`crate::cuda::has_16bit_kernels`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    pub name: &'static str,
    pub kernels: &'static [&'static str],
}

impl Op {
    pub(crate) const fn new(name: &'static str, kernels: &'static [&'static str]) -> Op {
        Op { name, kernels }
    }
}

/// Where the GPU arm runs: the device, and the storage format of its float inputs (and of its
/// value outputs).
pub(crate) struct OnGpu<'a> {
    pub gpu: &'a Arc<Gpu>,
    pub format: StorageFormat,
}

impl OnGpu<'_> {
    /// A fresh device tensor of `shape` in the inputs' format, written by `fill`.
    pub(crate) fn output(
        &self,
        shape: Vec<usize>,
        fill: impl FnOnce(&mut GpuBuffer) -> Result<()>,
    ) -> Result<RawTensor> {
        super::gpu_output(self.gpu, shape, self.format.dtype(), fill)
    }
}

/// One primitive of `N` float inputs (of one dtype, on one device), run by [`run`].
pub(crate) trait Primitive<const N: usize> {
    /// The outputs, rounded back by role when the inputs were widened ([`StoredOutputs`]).
    type Output: StoredOutputs;

    fn op(&self) -> Op;

    /// What the runner does not check: shapes, parameters, and any tensor outside the float
    /// inputs (a mask, labels, an argmax), the device included. Runs on the inputs as given.
    fn check(&self, inputs: [&RawTensor; N]) -> Result<()> {
        let _ = inputs;
        Ok(())
    }

    /// The CPU reference on the inputs' host values.
    fn cpu<T: HostFloat>(&self, inputs: [&[T]; N]) -> Result<Self::Output>;

    /// The kernel launch on the inputs' device buffers.
    fn gpu(&self, on: &OnGpu, inputs: [&GpuBuffer; N]) -> Result<Self::Output>;
}

/// Runs `primitive` on `inputs`: device and dtype agreement, its check, the storage rule, and the
/// CPU or GPU arm (see the module documentation).
pub(crate) fn run<const N: usize, P: Primitive<N>>(
    primitive: &P,
    inputs: [&RawTensor; N],
) -> Result<P::Output> {
    let op = primitive.op();
    common_device(op.name, &inputs)?;
    if let Some(first) = inputs.first() {
        for t in &inputs[1..] {
            t.expect_dtype(op.name, first.dtype())?;
        }
    }
    primitive.check(inputs)?;
    in_storage(op.kernels, inputs, |inputs| {
        dispatch(primitive, op.name, inputs)
    })
}

fn dispatch<const N: usize, P: Primitive<N>>(
    primitive: &P,
    name: &'static str,
    inputs: [&RawTensor; N],
) -> Result<P::Output> {
    let Some(first) = inputs.first() else {
        return Err(Error::Internal(format!(
            "{name}: a primitive without inputs"
        )));
    };
    match (first.device(), first.dtype()) {
        (Device::Cpu, DType::F32) => primitive.cpu(host_slices::<f32, N>(name, inputs)?),
        (Device::Cpu, DType::F64) => primitive.cpu(host_slices::<f64, N>(name, inputs)?),
        (Device::Cpu, got) => Err(Error::DTypeMismatch {
            op: name,
            expected: DType::F32,
            got,
        }),
        _ => {
            let format = StorageFormat::of(name, first.dtype())?;
            let buffers = try_array(inputs.map(|t| t.gpu_buffer(name)))?;
            let gpu = buffers[0].gpu().clone();
            primitive.gpu(&OnGpu { gpu: &gpu, format }, buffers)
        }
    }
}

/// A primitive that updates `M` tensors in place (an optimizer's weights and state, running
/// statistics) from `N` read-only inputs, run by [`run_in_place`]. Its tensors are f32 (on any
/// device) or f64 (on the CPU), all of one dtype on one device: they are parameters and their
/// state, never 16-bit activations, so there is no storage rule to apply. A buffer keeps its
/// address, so a captured CUDA graph that reads it sees the update.
pub(crate) trait InPlace<const M: usize, const N: usize> {
    fn op(&self) -> Op;

    /// What the runner does not check (shapes, hyper-parameters). A rejected call leaves every
    /// tensor as it was: the runner checks everything before it touches anything.
    fn check(&self, targets: [&RawTensor; M], inputs: [&RawTensor; N]) -> Result<()>;

    fn cpu<T: HostFloat>(&self, targets: [&mut [T]; M], inputs: [&[T]; N]) -> Result<()>;

    /// The launch (see [`Updating`]).
    fn gpu(
        &self,
        on: Updating,
        targets: [&mut GpuBuffer; M],
        inputs: [&GpuBuffer; N],
    ) -> Result<()>;
}

/// Where an in-place GPU arm runs: the device, and the element count of the first target.
pub(crate) struct Updating<'a> {
    pub gpu: &'a Arc<Gpu>,
    pub len: usize,
}

/// Runs an in-place `primitive`: device and dtype agreement (f32, or f64 on the CPU), its check,
/// then the CPU or GPU arm.
pub(crate) fn run_in_place<const M: usize, const N: usize, P: InPlace<M, N>>(
    primitive: &P,
    targets: [&mut RawTensor; M],
    inputs: [&RawTensor; N],
) -> Result<()> {
    let name = primitive.op().name;
    let (device, dtype) = {
        let all: Vec<&RawTensor> = targets.iter().map(|t| &**t).chain(inputs).collect();
        let Some(first) = all.first() else {
            return Err(Error::Internal(format!("{name}: an update of nothing")));
        };
        let device = common_device(name, &all)?;
        for t in &all[1..] {
            t.expect_dtype(name, first.dtype())?;
        }
        (device, first.dtype())
    };
    primitive.check(targets.each_ref().map(|t| &**t), inputs)?;
    match (device, dtype) {
        (Device::Cpu, DType::F32) => update_on_host::<f32, M, N, P>(primitive, targets, inputs),
        (Device::Cpu, DType::F64) => update_on_host::<f64, M, N, P>(primitive, targets, inputs),
        (_, DType::F32) => {
            let gpu = match inputs.first() {
                Some(t) => t.gpu_buffer(name)?.gpu().clone(),
                None => targets[0].gpu_buffer(name)?.gpu().clone(),
            };
            let len = targets[0].numel();
            let targets = try_array(targets.map(|t| t.gpu_buffer_mut(name)))?;
            let inputs = try_array(inputs.map(|t| t.gpu_buffer(name)))?;
            primitive.gpu(Updating { gpu: &gpu, len }, targets, inputs)
        }
        (_, got) => Err(Error::DTypeMismatch {
            op: name,
            expected: DType::F32,
            got,
        }),
    }
}

fn update_on_host<T: HostFloat, const M: usize, const N: usize, P: InPlace<M, N>>(
    primitive: &P,
    targets: [&mut RawTensor; M],
    inputs: [&RawTensor; N],
) -> Result<()> {
    let name = primitive.op().name;
    let targets = try_array(targets.map(|t| t.host_vec_mut::<T>(name).map(|v| v.as_mut_slice())))?;
    primitive.cpu(targets, host_slices::<T, N>(name, inputs)?)
}

fn host_slices<'t, T: HostFloat, const N: usize>(
    name: &'static str,
    inputs: [&'t RawTensor; N],
) -> Result<[&'t [T]; N]> {
    try_array(inputs.map(|t| t.host_slice::<T>(name)))
}

/// The values of an array of results, or its first error (no allocation: this runs on every
/// primitive call).
fn try_array<X, const N: usize>(results: [Result<X>; N]) -> Result<[X; N]> {
    if results.iter().any(Result::is_err) {
        let first = results.into_iter().find_map(Result::err);
        return Err(first.unwrap_or_else(|| unreachable!("an error was found")));
    }
    Ok(results.map(|r| r.unwrap_or_else(|_| unreachable!("no result is an error"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y = x + 2·z, recording which arm ran.
    struct AddTwice;

    impl Primitive<2> for AddTwice {
        type Output = RawTensor;
        fn op(&self) -> Op {
            Op::new("add_twice", &["axpby"])
        }
        fn check(&self, [x, z]: [&RawTensor; 2]) -> Result<()> {
            z.expect_shape("add_twice", x.shape())
        }
        fn cpu<T: HostFloat>(&self, [x, z]: [&[T]; 2]) -> Result<RawTensor> {
            let two = T::one() + T::one();
            let y = x.iter().zip(z).map(|(&a, &b)| a + two * b).collect();
            Ok(RawTensor::host(T::wrap(y), vec![x.len()], T::DTYPE))
        }
        fn gpu(&self, _: &OnGpu, _: [&GpuBuffer; 2]) -> Result<RawTensor> {
            Err(Error::Internal("not launched in this test".into()))
        }
    }

    fn tensor(values: &[f64], dtype: DType) -> RawTensor {
        let shape = vec![values.len()];
        if dtype == DType::F64 {
            return RawTensor::host(f64::wrap(values.to_vec()), shape, dtype);
        }
        let values = values.iter().map(|&v| v as f32).collect();
        super::super::cast(
            &RawTensor::host(f32::wrap(values), shape, DType::F32),
            dtype,
        )
        .unwrap()
    }

    #[test]
    fn runs_the_cpu_arm_in_the_inputs_float_type() {
        for dtype in [DType::F32, DType::F64] {
            let (x, z) = (
                tensor(&[1.0, -2.5, 3.0], dtype),
                tensor(&[0.5, 1.0, -1.0], dtype),
            );
            let y = run(&AddTwice, [&x, &z]).unwrap();
            assert_eq!(y.dtype(), dtype);
            let y = super::super::cast(&y, DType::F64).unwrap();
            assert_eq!(y.host_slice::<f64>("test").unwrap(), [2.0, -0.5, 1.0]);
        }
    }

    #[test]
    fn widens_16bit_inputs_and_rounds_the_output_back() {
        let (x, z) = (
            tensor(&[1.0, 2.0], DType::BF16),
            tensor(&[3.0, 0.25], DType::BF16),
        );
        let y = run(&AddTwice, [&x, &z]).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
    }

    #[test]
    fn refuses_mixed_dtypes_before_the_primitive_sees_them() {
        let (x, z) = (tensor(&[1.0], DType::F32), tensor(&[1.0], DType::F64));
        let err = run(&AddTwice, [&x, &z]).unwrap_err().to_string();
        assert!(err.contains("add_twice"), "{err}");
    }

    #[test]
    fn runs_the_primitives_check() {
        let (x, z) = (tensor(&[1.0, 2.0], DType::F32), tensor(&[1.0], DType::F32));
        let err = run(&AddTwice, [&x, &z]).unwrap_err().to_string();
        assert!(err.contains("add_twice"), "{err}");
    }

    #[test]
    fn refuses_integer_inputs_on_the_cpu() {
        let x = RawTensor::host(i32::wrap(vec![1, 2]), vec![2], DType::I32);
        let err = run(&AddTwice, [&x, &x]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DTypeMismatch {
                    op: "add_twice",
                    ..
                }
            ),
            "{err}"
        );
    }
}
