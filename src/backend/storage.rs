//! 16-bit storage, done once for every primitive.
//!
//! The primitives activations pass through accept bf16 or f16 tensors (the activations of
//! [`crate::autocast_activations`]): where no 16-bit kernel exists, they widen them to f32 exactly,
//! compute in f32 and round each value output once, back to the input's format. A 16-bit kernel
//! computes the same way (load, f32 arithmetic, one rounding), so the two agree. The loss
//! primitives take f32 (`ops` widens 16-bit logits on the tape), as do the optimizers and
//! regularization, whose tensors are the f32 parameters.
//!
//! The primitive runner ([`super::primitive::run`]) applies the rule to every primitive through
//! [`in_storage`]; the primitive's output type says how each output comes back ([`StoredOutputs`]:
//! a value rounded, an [`Index`] or an [`Unrounded`] output as computed).

use super::cast::cast;
use super::RawTensor;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::cuda;

/// The 16-bit storage format of `t` (bf16 or f16), if it has one.
pub(crate) fn storage_format(t: &RawTensor) -> Option<DType> {
    matches!(t.dtype(), DType::BF16 | DType::F16).then_some(t.dtype())
}

/// The 16-bit format a primitive widens `t` from (computing in f32 and rounding its value outputs
/// back once), or `None` when it runs on `t` as stored. The rule, for every primitive: f32 runs as
/// stored; 16-bit storage runs as stored on a device where each of the primitive's `kernels` has
/// 16-bit twins in the generated kernel table ([`crate::cuda::has_16bit_kernels`]), and is
/// widened everywhere else, the CPU included (its reference computes in f32 or f64).
pub(crate) fn widened_format(kernels: &[&str], t: &RawTensor) -> Option<DType> {
    // The kernel table is consulted only for a 16-bit tensor on a device: an f32 call never asks.
    let native = || t.device() != Device::Cpu && kernels.iter().all(|k| cuda::has_16bit_kernels(k));
    storage_format(t).filter(|_| !native())
}

/// `t` in f32 when it is stored in 16 bits (exact), else `t` itself.
pub(crate) fn widened(t: &RawTensor) -> Result<RawTensor> {
    match storage_format(t) {
        Some(_) => cast(t, DType::F32),
        None => Ok(t.clone()),
    }
}

/// `y` stored in `format` (rounded to nearest even) when one is given, else `y` itself.
pub(crate) fn stored(y: RawTensor, format: Option<DType>) -> Result<RawTensor> {
    match format {
        Some(f) => cast(&y, f),
        None => Ok(y),
    }
}

/// What a primitive run through [`in_storage`] returns, rounded back by role: each value output is
/// stored in the inputs' 16-bit format, each [`Index`] is handed back as computed.
pub(crate) trait StoredOutputs: Sized {
    /// The value outputs rounded to `format` (nearest even), the others as they are.
    fn stored(self, format: DType) -> Result<Self>;
}

/// One value output.
impl StoredOutputs for RawTensor {
    fn stored(self, format: DType) -> Result<Self> {
        cast(&self, format)
    }
}

/// An output that indexes or masks a value output rather than being one (relu's and dropout's
/// keep mask, maxpool's and maxout's argmax): never rounded.
pub(crate) struct Index(pub RawTensor);

/// Outputs handed back as computed, in f32 when the inputs were widened (batch statistics, a bias
/// gradient): for primitives whose outputs are f32 whatever their inputs.
pub(crate) struct Unrounded<O>(pub O);

impl<O> StoredOutputs for Unrounded<O> {
    fn stored(self, _: DType) -> Result<Self> {
        Ok(self)
    }
}

/// A value output and its index: only the value is rounded.
impl StoredOutputs for (RawTensor, Index) {
    fn stored(self, format: DType) -> Result<Self> {
        Ok((self.0.stored(format)?, self.1))
    }
}

/// Runs `compute` on `inputs` in the rule's format ([`widened_format`], decided by the first
/// input): when it says widen, every 16-bit input is widened to f32 (exactly), `compute` runs once
/// on those, and its value outputs are rounded back once ([`StoredOutputs`]); otherwise `compute`
/// runs on `inputs` as they are.
pub(crate) fn in_storage<const N: usize, O: StoredOutputs>(
    kernels: &[&str],
    inputs: [&RawTensor; N],
    compute: impl FnOnce([&RawTensor; N]) -> Result<O>,
) -> Result<O> {
    in_storage_list(kernels, &inputs, |ts| {
        compute(std::array::from_fn(|i| ts[i]))
    })
}

/// [`in_storage`] for a list of inputs (a concatenation's parts).
pub(crate) fn in_storage_list<O: StoredOutputs>(
    kernels: &[&str],
    inputs: &[&RawTensor],
    compute: impl FnOnce(&[&RawTensor]) -> Result<O>,
) -> Result<O> {
    match run(kernels, inputs, compute)? {
        (outputs, Some(format)) => outputs.stored(format),
        (outputs, None) => Ok(outputs),
    }
}

/// `compute` on `inputs`, widened when the rule says so, and the format it widened from.
fn run<O>(
    kernels: &[&str],
    inputs: &[&RawTensor],
    compute: impl FnOnce(&[&RawTensor]) -> Result<O>,
) -> Result<(O, Option<DType>)> {
    let Some(format) = inputs.first().and_then(|t| widened_format(kernels, t)) else {
        return Ok((compute(inputs)?, None));
    };
    let wide = inputs
        .iter()
        .map(|t| widened(t))
        .collect::<Result<Vec<_>>>()?;
    let wide: Vec<&RawTensor> = wide.iter().collect();
    Ok((compute(&wide)?, Some(format)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dtype::Element;

    fn bf16(values: &[f32], device: Device) -> RawTensor {
        let x = RawTensor::from_vec(values.to_vec(), &[values.len()], Device::Cpu).unwrap();
        cast(&x, DType::BF16).unwrap().to_device(device).unwrap()
    }

    fn f32_values(t: &RawTensor) -> Vec<f32> {
        widened(t)
            .unwrap()
            .to_device(Device::Cpu)
            .unwrap()
            .host_slice::<f32>("test")
            .unwrap()
            .to_vec()
    }

    // 1 + 2^-8 is not a bf16 value: bf16 has 8 significant bits, so it rounds to 1 (nearest even).
    const BETWEEN: f32 = 1.0 + 1.0 / 256.0;

    #[test]
    fn widens_every_16bit_input_and_rounds_once_on_the_cpu() {
        let (a, b) = (
            bf16(&[1.0, 2.0], Device::Cpu),
            bf16(&[3.0, 4.0], Device::Cpu),
        );
        let mut calls = 0;
        let y = in_storage(&["mul"], [&a, &b], |[a, b]| {
            calls += 1;
            assert_eq!((a.dtype(), b.dtype()), (DType::F32, DType::F32));
            RawTensor::from_vec(vec![BETWEEN, 2.0], &[2], Device::Cpu)
        })
        .unwrap();
        assert_eq!(calls, 1);
        assert_eq!(y.dtype(), DType::BF16);
        assert_eq!(f32_values(&y), [1.0, 2.0]);
    }

    #[test]
    fn an_index_output_is_passed_through_unrounded() {
        let x = bf16(&[1.0, -1.0], Device::Cpu);
        let (y, Index(argmax)) = in_storage(&["maxpool_fwd"], [&x], |[x]| {
            let argmax = RawTensor::host(i32::wrap(vec![7, 300]), vec![2], DType::I32);
            Ok((x.clone(), Index(argmax)))
        })
        .unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        assert_eq!(argmax.dtype(), DType::I32);
        assert_eq!(argmax.host_slice::<i32>("test").unwrap(), [7, 300]);
    }

    #[test]
    fn unrounded_outputs_stay_in_f32() {
        let x = bf16(&[BETWEEN, 2.0], Device::Cpu);
        let Unrounded(y) = in_storage(&["bias_grad"], [&x], |[x]| {
            assert_eq!(x.dtype(), DType::F32);
            RawTensor::from_vec(vec![BETWEEN], &[1], Device::Cpu).map(Unrounded)
        })
        .unwrap();
        assert_eq!(y.dtype(), DType::F32);
        assert_eq!(f32_values(&y), [BETWEEN]);
    }

    #[test]
    fn f32_inputs_run_as_they_are() {
        let x = RawTensor::from_vec(vec![BETWEEN], &[1], Device::Cpu).unwrap();
        let y = in_storage(&["affine"], [&x], |[t]| {
            assert_eq!(t.id(), x.id());
            Ok(t.clone())
        })
        .unwrap();
        assert_eq!(f32_values(&y), [BETWEEN]);
    }

    #[test]
    fn a_list_is_widened_together() {
        let parts = [bf16(&[1.0], Device::Cpu), bf16(&[2.0], Device::Cpu)];
        let parts: Vec<&RawTensor> = parts.iter().collect();
        let y = in_storage_list(&["concat_fwd"], &parts, |ts| {
            assert!(ts.iter().all(|t| t.dtype() == DType::F32));
            Ok(ts[1].clone())
        })
        .unwrap();
        assert_eq!(y.dtype(), DType::BF16);
    }

    #[test]
    fn a_device_with_16bit_kernels_runs_as_stored() {
        // maxpool_fwd has bf16/f16 twins in the generated table (tests/storage_table.rs); the
        // emulated device runs them on the stored tensor, and the CPU widens it.
        assert!(cuda::has_16bit_kernels("maxpool_fwd"));
        let x = bf16(&[1.0, 2.0], Device::CudaEmulated);
        let y = in_storage(&["maxpool_fwd"], [&x], |[t]| {
            assert_eq!(t.dtype(), DType::BF16);
            Ok(t.clone())
        })
        .unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        // A kernel without 16-bit twins widens on the same device.
        assert!(!cuda::has_16bit_kernels("l2pool_fwd"));
        let z = in_storage(&["l2pool_fwd"], [&x], |[t]| {
            assert_eq!(t.dtype(), DType::F32);
            Ok(t.clone())
        })
        .unwrap();
        assert_eq!(z.dtype(), DType::BF16);
    }

    #[test]
    fn primitives_round_values_and_keep_masks_and_f32_gradients() {
        let x = bf16(&[-1.0, BETWEEN, 3.0], Device::Cpu);
        let (y, mask) = super::super::relu_fwd(&x).unwrap();
        assert_eq!((y.dtype(), mask.dtype()), (DType::BF16, DType::U8));
        assert_eq!(f32_values(&y), [0.0, 1.0, 3.0]);
        assert_eq!(mask.host_slice::<u8>("test").unwrap(), [0, 1, 1]);
        let db = super::super::bias_grad(&x, 1, 1, 3).unwrap();
        assert_eq!(db.dtype(), DType::F32);
        assert_eq!(f32_values(&db), [3.0]);
    }
}
