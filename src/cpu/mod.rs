//! The CPU reference backend: plain functions on slices, one file per `kernels/*.cu` file.
//!
//! Every CUDA kernel is tested against the function of the same name here, so these favour
//! clarity and determinism (gathers, fixed summation order) over speed; rayon spreads the work
//! over images, channels or rows. Callers validate lengths; the functions only `debug_assert!` them.

pub mod activation;
pub mod cast;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod gemm;
pub mod im2col;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod scratch;
pub mod shape;

/// The element types the CPU backend computes in: `f32` and `f64`.
pub trait Float:
    num_traits::Float + ndarray::LinalgScalar + Send + Sync + std::fmt::Debug + 'static
{
}

impl Float for f32 {}
impl Float for f64 {}

/// Rayon splits element-wise loops no finer than this, so tiny tensors stay on one thread.
pub(crate) const MIN_PAR_LEN: usize = 1 << 12;

#[cfg(test)]
pub(crate) mod testutil {
    pub(crate) use crate::testing::{assert_close, from_f64, random_vec, rng, to_f64};
}
