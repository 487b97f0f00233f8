//! Conversions between element types: f32 ⇄ bf16/f16 (the mixed-precision storage formats) on
//! every device, and f32 ⇄ f64 on the CPU (the gradient checks).

use super::storage::widened;
use super::RawTensor;
use super::{gpu_output, host_output};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::cpu;
use crate::cuda;

/// `x` converted to `dtype`: to bf16/f16 rounded to nearest even, back to f32 exactly.
pub fn cast(x: &RawTensor, dtype: DType) -> Result<RawTensor> {
    if x.dtype() == dtype {
        return Ok(x.clone());
    }
    let shape = x.shape().to_vec();
    let unsupported = || Error::DTypeMismatch {
        op: "cast (f32 ⇄ bf16/f16 on every device, f32 ⇄ f64 on the CPU)",
        expected: DType::F32,
        got: if x.dtype() == DType::F32 {
            dtype
        } else {
            x.dtype()
        },
    };
    match x.device() {
        Device::Cpu => match (x.dtype(), dtype) {
            (DType::F32, DType::BF16) => {
                let xs = x.host_slice::<f32>("cast")?;
                Ok(host_output(shape, |y| cpu::cast::f32_to_bf16(xs, y)))
            }
            (DType::F32, DType::F16) => {
                let xs = x.host_slice::<f32>("cast")?;
                Ok(host_output(shape, |y| cpu::cast::f32_to_f16(xs, y)))
            }
            (DType::BF16, DType::F32) => {
                let xs = x.host_slice::<half::bf16>("cast")?;
                Ok(host_output(shape, |y| cpu::cast::bf16_to_f32(xs, y)))
            }
            (DType::F16, DType::F32) => {
                let xs = x.host_slice::<half::f16>("cast")?;
                Ok(host_output(shape, |y| cpu::cast::f16_to_f32(xs, y)))
            }
            (DType::F32, DType::F64) | (DType::F64, DType::F32) => x.host_f32_f64(dtype),
            _ => Err(unsupported()),
        },
        _ => {
            let n = x.numel();
            let src = x.gpu_buffer("cast")?;
            let gpu = src.gpu().clone();
            match (x.dtype(), dtype) {
                (DType::F32, DType::BF16 | DType::F16) => gpu_output(&gpu, shape, dtype, |y| {
                    cuda::cast::f32_to_16bit(&gpu, src, y, n, dtype == DType::BF16)
                }),
                (DType::BF16 | DType::F16, DType::F32) => {
                    let bf16 = x.dtype() == DType::BF16;
                    gpu_output(&gpu, shape, dtype, |y| {
                        cuda::cast::f16bit_to_f32(&gpu, src, y, n, bf16)
                    })
                }
                _ => Err(unsupported()),
            }
        }
    }
}

/// `x` as the operand of a matrix product in `format`: cast to bf16/f16 when `format` is set
/// (see [`crate::autocast`]), else `x` itself.
pub fn product_operand(x: &RawTensor, format: Option<DType>) -> Result<RawTensor> {
    match format {
        Some(f) if x.dtype() == f => Ok(x.clone()),
        // A 16-bit tensor of the other format goes through f32 (exact) to `f`.
        Some(f) => cast(&widened(x)?, f),
        None => Ok(x.clone()),
    }
}

/// `x` (f32) with each value rounded to `format` and widened back to f32: the values a product in
/// `format` multiplies, for the CPU paths that compute in f32. `x` itself when `format` is unset.
pub(crate) fn rounded_through(x: &RawTensor, format: Option<DType>) -> Result<RawTensor> {
    match format {
        Some(f) => cast(&cast(x, f)?, x.dtype()),
        None => Ok(x.clone()),
    }
}
