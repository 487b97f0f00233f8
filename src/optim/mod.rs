//! Optimizers and learning-rate schedules.
//!
//! An optimizer is an [`Optimizer`]: one struct, generic over its [`UpdateRule`], that holds what
//! every optimizer shares: the learning rate ([`Optimizer::lr`], [`Optimizer::set_lr`]), the step
//! count, the state tensors of each parameter (checked against the parameters at each step) and
//! their checkpoint form ([`Optimizer::state`], [`Optimizer::load_state`]). An [`UpdateRule`] is only
//! the rule: its name, the names of its state tensors, and the update of one parameter given its
//! gradient, its state and the [`Step`] (learning rate, step number). A new optimizer implements
//! [`UpdateRule`] and is made with [`Optimizer::with_rule`]; a training loop takes `&mut Optimizer`
//! (`Optimizer<dyn UpdateRule>`), to which every optimizer coerces. What a CUDA-graph step needs
//! (the per-step scalars of the built-in rules' kernels, the state buffers) is crate-internal.
//!
//! The built-in optimizers are [`Optimizer`]s of built-in rules. Each updates its parameters in
//! place with one fused kernel per parameter tensor (one pass reads w, g and the state, writes w
//! and the state; see kernels/optim.cu and its CPU twin src/cpu/optim.rs) and follows PyTorch's
//! update rule and defaults:
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
//! use kiln::optim::{Adam, Schedule};
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
mod optimizer;
mod rmsprop;
mod schedule;
mod sgd;
mod state;

pub use adam::{Adam, AdamConfig, AdamRule, AdamW, AdamWRule};
pub use loss_scaler::LossScaler;
pub use optimizer::{Optimizer, Step, UpdateRule};
pub use rmsprop::{RmsProp, RmsPropConfig, RmsPropRule};
pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig, SgdRule};
pub use state::OptimizerState;
