//! Parameter pieces shared by several kernels, mirrored in kernels/common.cuh.

use crate::core::dtype::DType;
use crate::core::error::{invalid, Error, Result};
use crate::core::shape::ConvGeometry;

/// Mirrors `struct ConvGeom` in kernels/common.cuh.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeom {
    pub batch: i32,
    pub channels: i32,
    pub in_h: i32,
    pub in_w: i32,
    pub kernel_h: i32,
    pub kernel_w: i32,
    pub stride_h: i32,
    pub stride_w: i32,
    pub pad_h: i32,
    pub pad_w: i32,
    pub dilation_h: i32,
    pub dilation_w: i32,
    pub out_h: i32,
    pub out_w: i32,
}

/// Converts a size to the kernels' `int`, with an error instead of a silent wrap.
pub(crate) fn to_i32(what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| invalid(what, format!("{v} exceeds the kernels' 32-bit range")))
}

/// Converts an element count to the kernels' `long long`.
pub(crate) fn to_i64(what: &'static str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| invalid(what, format!("{v} exceeds the kernels' 64-bit range")))
}

impl ConvGeom {
    pub(crate) fn new(g: &ConvGeometry) -> Result<ConvGeom> {
        let c = |v| to_i32("convolution geometry", v);
        // Per-image plane and column sizes are indexed with int inside the kernels.
        c(g.col_rows() * g.col_cols())?;
        c(g.in_channels * g.in_h * g.in_w)?;
        Ok(ConvGeom {
            batch: c(g.batch)?,
            channels: c(g.in_channels)?,
            in_h: c(g.in_h)?,
            in_w: c(g.in_w)?,
            kernel_h: c(g.kernel_h)?,
            kernel_w: c(g.kernel_w)?,
            stride_h: c(g.stride_h)?,
            stride_w: c(g.stride_w)?,
            pad_h: c(g.pad_h)?,
            pad_w: c(g.pad_w)?,
            dilation_h: c(g.dilation_h)?,
            dilation_w: c(g.dilation_w)?,
            out_h: c(g.out_h)?,
            out_w: c(g.out_w)?,
        })
    }
}

/// The element type a storage-templated kernel reads and writes (kernels/half.cuh
/// `KILN_STORAGE_KERNELS`: one kernel `<op>_f32`, `<op>_bf16`, `<op>_f16` per type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageFormat {
    F32,
    Bf16,
    F16,
}

impl StorageFormat {
    /// The storage of a tensor of `dtype`, or an error naming `op` for other dtypes.
    pub(crate) fn of(op: &'static str, dtype: DType) -> Result<StorageFormat> {
        match dtype {
            DType::F32 => Ok(StorageFormat::F32),
            DType::BF16 => Ok(StorageFormat::Bf16),
            DType::F16 => Ok(StorageFormat::F16),
            got => Err(Error::DTypeMismatch {
                op,
                expected: DType::F32,
                got,
            }),
        }
    }

    pub(crate) fn dtype(self) -> DType {
        match self {
            StorageFormat::F32 => DType::F32,
            StorageFormat::Bf16 => DType::BF16,
            StorageFormat::F16 => DType::F16,
        }
    }

    /// Bytes per element.
    pub(crate) fn bytes(self) -> usize {
        self.dtype().size_in_bytes()
    }
}
