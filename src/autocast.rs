//! Mixed precision for the matrix products: inside [`autocast`], convolution (plain, grouped and
//! transposed) and linear layers multiply operands rounded to bf16 or f16 with f32 accumulation
//! (the tensor-core GEMM on a GPU), forward and backward, while weights, activations, gradients
//! and optimizer state stay f32 (f32 master weights). Everything else runs as before.
//!
//! The mode is per thread and is captured by each operation when it runs forward, so its backward
//! uses the same precision wherever `backward` is called. On the CPU the same operands are rounded
//! the same way and multiplied in f32, so CPU and GPU agree to f32 accumulation order.
//!
//! bf16 has f32's range and needs no loss scaling; f16 gradients can underflow, so train with
//! f16 only with [`crate::optim::LossScaler`].

use std::cell::Cell;

use crate::error::{invalid, Result};
use crate::tensor::DType;

thread_local! {
    static FORMAT: Cell<Option<DType>> = const { Cell::new(None) };
}

/// Runs `f` with the matrix products of convolution and linear layers in `format` (`DType::BF16`
/// or `DType::F16`) on this thread; the previous mode is restored afterwards, also on panic.
pub fn autocast<R>(format: DType, f: impl FnOnce() -> R) -> Result<R> {
    if !matches!(format, DType::BF16 | DType::F16) {
        return Err(invalid(
            "autocast format",
            format!("{format:?}: the tensor-core formats are BF16 and F16"),
        ));
    }
    struct Restore(Option<DType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORMAT.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(FORMAT.with(|m| m.replace(Some(format))));
    Ok(f())
}

/// The 16-bit format matrix products use on this thread now, if any.
pub fn current() -> Option<DType> {
    FORMAT.with(Cell::get)
}
