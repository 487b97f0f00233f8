//! One error type for the whole library.

use crate::core::device::Device;
use crate::core::dtype::DType;

/// Everything that can go wrong in kiln. Bad input is reported here, never by a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what}: {why}")]
    InvalidArgument { what: &'static str, why: String },

    #[error("shape mismatch in {op}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        op: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    #[error("{op}: tensors are on different devices ({a} and {b})")]
    DeviceMismatch {
        op: &'static str,
        a: Device,
        b: Device,
    },

    #[error("{op}: dtype {got:?} is not supported here (expected {expected:?})")]
    DTypeMismatch {
        op: &'static str,
        expected: DType,
        got: DType,
    },

    #[error("{op} is not supported on {device}: {why}")]
    Unsupported {
        op: &'static str,
        device: Device,
        why: String,
    },

    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),

    #[error("the CUDA driver is too old: it supports CUDA {found}, kiln's kernels need {required} (driver 580 or newer)")]
    DriverTooOld { found: String, required: String },

    #[error("kiln was built without CUDA kernels: run `make setup-cuda` (or scripts/setup-cuda.sh) and rebuild")]
    NoKernels,

    #[error("CUDA driver error: {0}")]
    Driver(String),

    /// A broken invariant inside kiln (a poisoned lock, a rule returning the wrong number of
    /// gradients): a bug to report, not a problem with the input or the driver.
    #[error("internal error in kiln (please report it): {0}")]
    Internal(String),

    #[error("no kernel named {0} in the embedded kernels")]
    MissingKernel(String),

    #[error("{op} has no backward rule: gradients cannot flow through it")]
    NoBackward { op: &'static str },

    #[error("backward already ran through {op}: its saved tensors are freed; run the forward pass again")]
    GraphConsumed { op: &'static str },

    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    #[error("CUDA graph capture: {0}")]
    GraphCapture(String),

    #[error("out of device memory on {device}: asked for {bytes} bytes")]
    OutOfMemory { device: Device, bytes: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for an [`Error::InvalidArgument`].
pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Error {
    Error::InvalidArgument {
        what,
        why: why.into(),
    }
}

#[cfg(feature = "cuda")]
impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Driver(e.to_string())
    }
}
