//! Mixed precision for the matrix products: inside [`autocast`], convolution (plain, grouped and
//! transposed) and linear layers multiply operands rounded to bf16 or f16 with f32 accumulation
//! (the tensor-core GEMM on a GPU), forward and backward, while weights, activations, gradients
//! and optimizer state stay f32 (f32 master weights). Everything else runs as before.
//!
//! The mode is per thread and is captured by each operation when it runs forward, so its backward
//! uses the same precision wherever `backward` is called. On the CPU the same operands are rounded
//! the same way and multiplied in f32, so CPU and GPU agree to f32 accumulation order.
//!
//! Inside [`autocast_activations`] the activations are 16-bit too, as in PyTorch's automatic mixed
//! precision: convolution and linear layers store their outputs in the format, and every other
//! op (activations, pooling, batch norm, dropout, additions) keeps the format of its input,
//! loading 16-bit values and computing in f32 with one rounding per output; gradients of 16-bit
//! activations are 16-bit. Parameters, their gradients and optimizer state stay f32, and the
//! losses widen their inputs to f32. The tensors kept for the backward pass take half the memory.
//!
//! bf16 has f32's range and needs no loss scaling; f16 gradients can underflow, so train with
//! f16 only with `optim::LossScaler`.

use std::cell::Cell;

use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};

/// A mixed-precision mode: the 16-bit `format` of the matrix products, and whether activations
/// are stored in it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutocastMode {
    pub format: DType,
    pub activations: bool,
}

impl AutocastMode {
    /// Products in `format` (bf16 or f16), activations f32: [`autocast`].
    pub fn products(format: DType) -> AutocastMode {
        AutocastMode {
            format,
            activations: false,
        }
    }

    /// Products and activations in `format`: [`autocast_activations`].
    pub fn activations(format: DType) -> AutocastMode {
        AutocastMode {
            format,
            activations: true,
        }
    }
}

thread_local! {
    static MODE: Cell<Option<AutocastMode>> = const { Cell::new(None) };
}

/// Runs `f` with the matrix products of convolution and linear layers in `format` (`DType::BF16`
/// or `DType::F16`) on this thread; the previous mode is restored afterwards, also on panic.
pub fn autocast<R>(format: DType, f: impl FnOnce() -> R) -> Result<R> {
    with_mode(AutocastMode::products(format), f)
}

/// Runs `f` in full mixed precision: the products as in [`autocast`], and the activations stored
/// in `format` too (see the module documentation).
pub fn autocast_activations<R>(format: DType, f: impl FnOnce() -> R) -> Result<R> {
    with_mode(AutocastMode::activations(format), f)
}

/// Runs `f` in `mode` on this thread, restoring the previous mode afterwards, also on panic.
pub fn with_mode<R>(mode: AutocastMode, f: impl FnOnce() -> R) -> Result<R> {
    if !matches!(mode.format, DType::BF16 | DType::F16) {
        return Err(invalid(
            "autocast format",
            format!(
                "{:?}: the tensor-core formats are BF16 and F16",
                mode.format
            ),
        ));
    }
    struct Restore(Option<AutocastMode>);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MODE.with(|m| m.replace(Some(mode))));
    Ok(f())
}

/// The 16-bit format matrix products use on this thread now, if any.
pub fn current() -> Option<DType> {
    MODE.with(Cell::get).map(|m| m.format)
}

/// The 16-bit format activations are stored in on this thread now, if any.
pub fn activation_format() -> Option<DType> {
    MODE.with(Cell::get)
        .filter(|m| m.activations)
        .map(|m| m.format)
}
