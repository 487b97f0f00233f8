//! The optimizer a training loop holds: an [`UpdateRule`] (what a new optimizer writes) inside the
//! [`Optimizer`] that every rule shares (the learning rate, the step count, the state tensors of
//! each parameter, checkpoints of them, and what a CUDA-graph step needs).

use std::fmt;
use std::sync::Arc;

use super::state::{OptimizerState, Params};
use crate::backend;
use crate::core::error::Result;
use crate::cuda::StepScalars;
use crate::tensor::Tensor;

/// An optimizer's update rule: how one parameter changes given its gradient, its state tensors and
/// the step. Everything else (learning rate, step count, allocating, checking, saving and restoring
/// the state) is [`Optimizer`]'s, so a new optimizer is a rule and [`Optimizer::with_rule`]:
///
/// ```
/// use kiln::backend::axpby_in_place;
/// use kiln::optim::{Optimizer, Step, UpdateRule};
/// use kiln::{Device, Result, Tensor};
///
/// /// Signum: sign-SGD on a running mean of the gradients, `m = β·m + (1 − β)·g; w −= lr·sign(m)`.
/// struct Signum {
///     beta: f64,
/// }
///
/// impl UpdateRule for Signum {
///     fn name(&self) -> &'static str {
///         "signum"
///     }
///     fn state_names(&self) -> &'static [&'static str] {
///         &["momentum"]
///     }
///     fn update(&self, w: &mut Tensor, g: &Tensor, state: &mut [Tensor], step: Step) -> Result<()> {
///         let m = &mut state[0];
///         axpby_in_place(self.beta, m, 1.0 - self.beta, g)?;
///         let sign: Vec<f32> = m.to_vec::<f32>()?.iter().map(|x| x.signum()).collect();
///         let sign = Tensor::from_vec(sign, m.shape(), m.device())?;
///         axpby_in_place(1.0, w, -step.lr, &sign) // in place: `w` stays the model's tensor
///     }
/// }
///
/// let mut w = Tensor::from_vec(vec![1.0_f32, -2.0], &[2], Device::Cpu)?;
/// let mut opt = Optimizer::with_rule(&[w.clone()], 0.5, Signum { beta: 0.9 })?;
/// let g = Tensor::from_vec(vec![3.0_f32, -0.1], &[2], Device::Cpu)?;
/// opt.step(&mut [&mut w], &[&g])?;
/// assert_eq!(w.to_vec::<f32>()?, vec![0.5, -1.5]);
/// assert_eq!(opt.steps(), 1);
/// assert!(opt.state().get("0.momentum").is_some());
/// # Ok::<(), kiln::Error>(())
/// ```
pub trait UpdateRule {
    /// A short name, recorded in [`OptimizerState::optimizer`] (a state is restored only into an
    /// optimizer of the same name): "sgd", "rmsprop", "adam", "adamw" for the built-in rules.
    fn name(&self) -> &'static str;

    /// The names of the state tensors each parameter keeps (PyTorch's, for the built-in rules):
    /// `update` gets them in this order, each one zeros shaped like its parameter at the start,
    /// and a checkpoint names them `"{i}.{name}"` for parameter `i`.
    fn state_names(&self) -> &'static [&'static str];

    /// Updates `param` in place with its gradient `grad` and its state tensors
    /// (`state[k]` is [`UpdateRule::state_names`]`()[k]`; they are updated in place too) for
    /// `step`. `param`, `grad` and the state share shape, dtype (f32 or f64) and device: the
    /// [`Optimizer`] checks it before the first parameter is touched.
    fn update(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        state: &mut [Tensor],
        step: Step,
    ) -> Result<()>;
}

/// What an [`UpdateRule`] gets to know about the step it makes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// The learning rate of this step.
    pub lr: f64,
    /// This step's 1-based number: the steps taken before it, plus one (Adam's `t`).
    pub number: u64,
}

/// How the kernels of a built-in rule read the per-step values of a step replayed from a CUDA
/// graph (`train::CapturedStep`, which sits above this tier): the values [`Optimizer::step`] would
/// pass them for `step`. A rule without one (one written outside kiln: its kernels take host
/// values, which a graph would replay unchanged) is not captured.
pub(crate) trait GraphScalars: fmt::Debug + Send + Sync {
    /// `step` is left 0 (the graph step sets it).
    fn graph_scalars(&self, step: Step) -> StepScalars;
}

/// The graph scalars of a rule whose kernels read only the learning rate (SGD, RMSprop).
#[derive(Debug)]
pub(crate) struct LrOnly;

impl GraphScalars for LrOnly {
    fn graph_scalars(&self, step: Step) -> StepScalars {
        StepScalars {
            lr: step.lr as f32,
            ..StepScalars::default()
        }
    }
}

/// An optimizer: an [`UpdateRule`] with the state every rule shares. `Optimizer` alone is
/// `Optimizer<dyn UpdateRule>`, which any optimizer coerces to (`&mut Sgd` to `&mut Optimizer`,
/// `Box<Adam>` to `Box<Optimizer>`): what a training loop takes.
///
/// The state tensors are allocated when the optimizer is made, so training steps after the first
/// make no new device allocation, and [`Optimizer::state`] / [`Optimizer::load_state`] save and
/// restore it exactly (tensors, step count, learning rate) for checkpoints.
pub struct Optimizer<R: ?Sized = dyn UpdateRule> {
    lr: f64,
    steps: u64,
    params: Params,
    graph: Option<Arc<dyn GraphScalars>>,
    rule: R,
}

impl<R: UpdateRule> Optimizer<R> {
    /// The optimizer for `params` (in the order `step` will get them) following `rule`, with
    /// learning rate `lr` (finite, ≥ 0). Its state (`rule.state_names()` tensors of zeros per
    /// parameter) is allocated here. Parameters must be f32 or f64.
    pub fn with_rule(params: &[Tensor], lr: f64, rule: R) -> Result<Optimizer<R>> {
        Optimizer::build(params, lr, rule, None)
    }

    /// [`Optimizer::with_rule`] for a built-in rule, with what a CUDA-graph step needs from it.
    pub(crate) fn build(
        params: &[Tensor],
        lr: f64,
        rule: R,
        graph: Option<Arc<dyn GraphScalars>>,
    ) -> Result<Optimizer<R>> {
        let name = rule.name();
        backend::check_lr(name, lr)?;
        Ok(Optimizer {
            lr,
            steps: 0,
            params: Params::new(name, params, rule.state_names())?,
            graph,
            rule,
        })
    }
}

impl<R: UpdateRule + ?Sized> Optimizer<R> {
    /// The rule's [`UpdateRule::name`].
    pub fn name(&self) -> &'static str {
        self.rule.name()
    }

    /// The update rule.
    pub fn rule(&self) -> &R {
        &self.rule
    }

    /// Updates `params[i]` in place with `grads[i]`. The parameters must be those the optimizer
    /// was made for, in the same order (same count, shapes, dtypes and devices); otherwise this is
    /// an error and nothing is changed.
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        self.params.check(params, grads)?;
        let step = self.next_step();
        for ((p, g), state) in params.iter_mut().zip(grads).zip(&mut self.params.state) {
            self.rule.update(p, g, state, step)?;
        }
        self.steps = step.number;
        Ok(())
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate of the next steps (a [`super::Schedule`] calls this each step or
    /// epoch); it must be finite and ≥ 0.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        backend::check_lr(self.rule.name(), lr)?;
        self.lr = lr;
        Ok(())
    }

    /// Number of steps taken (Adam's `t` after its last step).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Everything a checkpoint needs to resume exactly: the step count, the learning rate and the
    /// named state tensors (`"{i}.{name}"` for parameter `i`, with the rule's state names).
    /// The tensors share storage with the optimizer's until its next step (which then copies
    /// them once, keeping value semantics): save them, then drop them.
    pub fn state(&self) -> OptimizerState {
        OptimizerState {
            optimizer: self.rule.name().into(),
            step: self.steps,
            lr: self.lr,
            tensors: self.params.named_state(),
        }
    }

    /// Restores a state saved by [`Optimizer::state`] from an optimizer of the same kind made for
    /// parameters of the same shapes. State tensors on another device are copied to the
    /// optimizer's. Validates everything first: on error nothing is changed.
    pub fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.params.state = self.params.loaded_state(self.rule.name(), state)?;
        self.steps = state.step;
        self.lr = state.lr;
        Ok(())
    }

    fn next_step(&self) -> Step {
        Step {
            lr: self.lr,
            number: self.steps + 1,
        }
    }

    // What a CUDA-graph step needs (train/graph_step.rs); not part of the public API.

    /// The values of the next update that change from step to step (learning rate; Adam's bias
    /// corrections for step `steps() + 1`), exactly as `step` would pass them to its kernels, or
    /// `None` for a rule whose kernels cannot read them from a replayed graph.
    pub(crate) fn graph_scalars(&self) -> Option<StepScalars> {
        let graph = self.graph.as_ref()?;
        Some(graph.graph_scalars(self.next_step()))
    }

    /// Sets the step count: a replayed CUDA graph's updates are counted this way (and capturing
    /// one, which records an update without making it, counts none).
    pub(crate) fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// The state tensors, in [`Optimizer::state`]'s order, borrowed (a captured graph checks that
    /// they are still the buffers it updates).
    pub(crate) fn state_tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.params.state.iter().flatten()
    }

    /// The state tensors, mutable, in the same order (a capture gives each one storage of its own
    /// first).
    pub(crate) fn state_tensors_mut(&mut self) -> impl Iterator<Item = &mut Tensor> {
        self.params.state.iter_mut().flatten()
    }
}

impl<R: Clone> Clone for Optimizer<R> {
    fn clone(&self) -> Self {
        Optimizer {
            lr: self.lr,
            steps: self.steps,
            params: self.params.clone(),
            graph: self.graph.clone(),
            rule: self.rule.clone(),
        }
    }
}

impl<R: fmt::Debug + ?Sized> fmt::Debug for Optimizer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Optimizer")
            .field("lr", &self.lr)
            .field("steps", &self.steps)
            .field("params", &self.params)
            .field("graph", &self.graph)
            .field("rule", &&self.rule)
            .finish()
    }
}
