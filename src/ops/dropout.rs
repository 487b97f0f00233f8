//! Dropout (inverted): in training each element is zeroed with probability p and the survivors are
//! scaled by 1/(1 − p), so the expected output equals the input; in evaluation it is the identity.
//! The mask comes from a hash of (seed, element index), identical on every device, and the
//! backward rule reuses it.

use crate::backend::{self, RawTensor};
use crate::core::error::Result;
use crate::tensor::record;
use crate::tensor::Tensor;

/// Dropout of `x` with drop probability `p` ∈ [0, 1] (else `Err`). Training with p > 0 draws the
/// mask from `seed` and saves it for backward (dx = dy·mask/(1 − p)); p = 1 gives zeros. Evaluation,
/// and training with p = 0, return `x` itself: no mask, nothing saved.
pub fn dropout(x: &Tensor, p: f64, training: bool, seed: u64) -> Result<Tensor> {
    if !training {
        backend::check_dropout_probability(p)?;
        return Ok(x.clone());
    }
    dropout_at_step(x, p, seed, 0, 0)
}

/// Training-mode dropout whose mask is drawn from `seed` at training step `step + offset`
/// (`cpu::dropout::step_seed`): a fresh mask per step. Inside a captured CUDA graph the step is
/// read from device memory at each replay, so every replayed step draws its own mask too.
pub fn dropout_at_step(x: &Tensor, p: f64, seed: u64, step: u64, offset: u64) -> Result<Tensor> {
    backend::check_dropout_probability(p)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let (y, mask) = backend::dropout_fwd_at_step(x, p, seed, step, offset)?;
    Ok(record("dropout", &[x], y, move || {
        move |dy: &RawTensor| Ok(vec![Some(backend::dropout_bwd(dy, &mask, p)?)])
    }))
}
