//! Optimizers and learning-rate schedules.
//!
//! Every optimizer updates its parameters in place with one fused kernel per parameter tensor (one
//! pass reads w, g and the state, writes w and the state; see kernels/optim.cu and its CPU twin
//! src/cpu/optim.rs), follows PyTorch's update rule and defaults, and implements [`Optimizer`]:
//!
//! | type | rule | state per parameter |
//! | --- | --- | --- |
//! | [`Sgd`] | SGD; classic or Nesterov momentum | `momentum_buffer` (only with momentum) |
//! | [`RmsProp`] | RMSprop (not centered) | `square_avg` |
//! | [`Adam`] | Adam with bias correction | `exp_avg`, `exp_avg_sq` |
//! | [`AdamW`] | Adam with decoupled weight decay | `exp_avg`, `exp_avg_sq` |
//!
//! `weight_decay` is the coupled L2 term (added to the gradient) for SGD, RMSprop and Adam, and the
//! decoupled decay `w ← (1 − lr·wd)·w` for AdamW.
//!
//! The state is allocated when the optimizer is made, so training steps after the first make no
//! new device allocation, and [`Optimizer::state`] / [`Optimizer::load_state`] save and restore it
//! exactly (tensors, step count, learning rate) for checkpoints.
//!
//! ```
//! use kiln::optim::{Adam, Optimizer, Schedule};
//! use kiln::{Device, Tensor};
//! let mut w = Tensor::from_vec(vec![1.0_f32, -2.0], &[2], Device::Cpu)?;
//! let mut adam = Adam::new(&[w.clone()], 0.1)?;
//! let schedule = Schedule::cosine(0.1, 0.0, 100)?.with_warmup(0.1, 10)?;
//! for step in 0..3 {
//!     adam.set_lr(schedule.lr_at(step))?;
//!     let g = Tensor::from_vec(vec![0.5_f32, -0.25], &[2], Device::Cpu)?;
//!     adam.step(&mut [&mut w], &[&g])?;
//! }
//! assert_eq!(adam.steps(), 3);
//! # Ok::<(), kiln::Error>(())
//! ```

mod adam;
mod loss_scaler;
mod rmsprop;
mod schedule;
mod sgd;
mod state;

pub use adam::{Adam, AdamConfig, AdamW};
pub use loss_scaler::LossScaler;
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig};
pub use state::OptimizerState;

use crate::core::error::Result;
use crate::cuda::StepScalars;
use crate::tensor::Tensor;

/// What a training loop needs from an optimizer.
pub trait Optimizer {
    /// A short name, also recorded in [`OptimizerState::optimizer`]: "sgd", "rmsprop", "adam",
    /// "adamw".
    fn name(&self) -> &'static str;

    /// Updates `params[i]` in place with `grads[i]`. The parameters must be those the optimizer
    /// was made for, in the same order (same count, shapes, dtypes and devices); otherwise this is
    /// an error and nothing is changed.
    fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()>;

    /// The learning rate of the next step.
    fn lr(&self) -> f64;

    /// Sets the learning rate of the next steps (a [`Schedule`] calls this each step or epoch);
    /// it must be finite and ≥ 0.
    fn set_lr(&mut self, lr: f64) -> Result<()>;

    /// Number of steps taken (Adam's `t` after its last step).
    fn steps(&self) -> u64;

    /// Everything a checkpoint needs to resume exactly: the step count, the learning rate and the
    /// named state tensors (`"{i}.{name}"` for parameter `i`, with PyTorch's state names).
    /// The tensors share storage with the optimizer's until its next step (which then copies
    /// them once, keeping value semantics): save them, then drop them.
    fn state(&self) -> OptimizerState;

    /// Restores a state saved by [`Optimizer::state`] from an optimizer of the same kind made for
    /// parameters of the same shapes. State tensors on another device are copied to the
    /// optimizer's. Validates everything first: on error nothing is changed.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;

    /// The values of the next update that change from step to step (learning rate; Adam's bias
    /// corrections for step `steps() + 1`), exactly as `step` would pass them to its kernels. A
    /// training step replayed from a CUDA graph reads them from device memory
    /// (`train::CapturedStep`, which sits above this tier); `step` is left 0 (the graph step sets it).
    fn graph_scalars(&self) -> StepScalars;

    /// Sets the step count: a replayed CUDA graph's updates are counted this way (and capturing
    /// one, which records an update without making it, counts none).
    fn set_steps(&mut self, steps: u64);

    /// The state tensors, in [`Optimizer::state`]'s order, borrowed (a captured graph checks that
    /// they are still the buffers it updates).
    fn state_tensors(&self) -> Vec<&Tensor>;

    /// The state tensors, mutable (a capture gives each one storage of its own first).
    fn state_tensors_mut(&mut self) -> Vec<&mut Tensor>;
}
