//! The linear layer's forward product with its bias: y = x·Wᵀ + b.

use super::cast::product_operand;
use super::conv::{col_bias_address, gemm_16bit, gemm_in, ProductFormats};
use super::storage::{stored, widened};
use super::RawTensor;
use super::{bias_add, common_device, gpu_f32, gpu_output};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::core::shape::GemmSpec;
use crate::cuda;

/// (N, in, out) of a linear layer's x [N, in] and W [out, in], or an error naming the mismatch.
pub fn linear_dims(x: &RawTensor, w: &RawTensor) -> Result<(usize, usize, usize)> {
    let (&[n, fan_in], &[out, w_in]) = (x.shape(), w.shape()) else {
        return Err(invalid(
            "linear shapes",
            format!(
                "expected x [N, in] and W [out, in], got {:?} and {:?}",
                x.shape(),
                w.shape()
            ),
        ));
    };
    if fan_in != w_in {
        return Err(invalid(
            "linear shapes",
            format!("x has {fan_in} features but W expects {w_in}"),
        ));
    }
    Ok((n, fan_in, out))
}

/// y [n, out] = x [n, in]·Wᵀ (W [out, in], PyTorch's layout) + b [out], the product in `formats`
/// (see [`ProductFormats`]). On a device the GEMM's epilogue adds the bias and,
/// when the output format is the product format, rounds each output once: no pass over y after the GEMM. On
/// the CPU the same values come from the product, a bias pass and a rounding.
pub fn linear_forward(
    x: &RawTensor,
    w: &RawTensor,
    b: Option<&RawTensor>,
    formats: ProductFormats,
) -> Result<RawTensor> {
    const OP: &str = "linear";
    let ProductFormats {
        operands: mixed,
        output: store,
    } = formats;
    let (n, fan_in, out) = linear_dims(x, w)?;
    common_device(OP, &[x, w])?;
    if let Some(b) = b {
        common_device(OP, &[x, b])?;
        b.expect_shape("linear bias", &[out])?;
    }
    let spec = GemmSpec::new(n, out, fan_in).transpose_b();
    let shape = vec![n, out];
    match (x.device(), mixed) {
        (Device::Cpu, _) => {
            let mut y = gemm_in(&spec, 1.0, x, w, shape, mixed)?;
            if let Some(b) = b {
                bias_add(&mut y, b, n, out, 1)?;
            }
            stored(y, store)
        }
        (_, Some(format)) => {
            let (x, w) = (product_operand(x, mixed)?, product_operand(w, mixed)?);
            let c_16bit = store == Some(format);
            let y = gemm_16bit(&spec, 1.0, (&x, &w), shape, (b, c_16bit))?;
            if c_16bit {
                Ok(y)
            } else {
                stored(y, store)
            }
        }
        (_, None) => {
            let (x, w) = (widened(x)?, widened(w)?);
            let (gpu, xb) = gpu_f32(OP, &x)?;
            let (_, wb) = gpu_f32(OP, &w)?;
            let col_bias = col_bias_address(OP, b, &spec)?;
            let y = gpu_output(&gpu, shape, DType::F32, |y| {
                let operands = cuda::gemm::GemmAddresses {
                    a: xb.address(),
                    b: wb.address(),
                    c: y.address(),
                    row_bias: 0,
                    col_bias,
                    c_16bit: false,
                };
                cuda::gemm::gemm_at(&gpu, &spec, 1.0, operands, 0.0)
            })?;
            stored(y, store)
        }
    }
}
