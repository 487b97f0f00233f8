//! What every optimizer shares: the description of the parameters it was made for (checked at
//! each step), its state tensors allocated up front, and the saved form of its state.

use crate::backend;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Error, Result};
use crate::tensor::Tensor;

/// An optimizer's state as a checkpoint holds it. Restore with [`super::Optimizer::load_state`].
#[derive(Clone, Debug)]
pub struct OptimizerState {
    /// The optimizer's [`super::Optimizer::name`].
    pub optimizer: String,
    /// Steps taken.
    pub step: u64,
    /// The learning rate of the next step.
    pub lr: f64,
    /// Named state tensors, `"{i}.{name}"` for parameter `i` (e.g. `"0.exp_avg"`), in parameter
    /// order.
    pub tensors: Vec<(String, Tensor)>,
}

impl OptimizerState {
    /// The state tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Shape, dtype and device of one parameter.
#[derive(Clone, Debug, PartialEq)]
struct Slot {
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
}

/// The parameters an optimizer was made for, and `names.len()` state tensors per parameter (zeros
/// like it), allocated here once: what [`super::Optimizer`] keeps for every update rule.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    op: &'static str,
    slots: Vec<Slot>,
    names: &'static [&'static str],
    /// `state[i][k]`: state tensor `names[k]` of parameter `i`.
    pub(crate) state: Vec<Vec<Tensor>>,
}

impl Params {
    pub(crate) fn new(
        op: &'static str,
        params: &[Tensor],
        names: &'static [&'static str],
    ) -> Result<Params> {
        let mut slots = Vec::with_capacity(params.len());
        for p in params {
            if !matches!(p.dtype(), DType::F32 | DType::F64) {
                return Err(Error::DTypeMismatch {
                    op,
                    expected: DType::F32,
                    got: p.dtype(),
                });
            }
            slots.push(Slot {
                shape: p.shape().to_vec(),
                dtype: p.dtype(),
                device: p.device(),
            });
        }
        let state = params
            .iter()
            .map(|p| {
                names
                    .iter()
                    .map(|_| Tensor::zeros(p.shape(), p.dtype(), p.device()))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        Ok(Params {
            op,
            slots,
            names,
            state,
        })
    }

    /// Checks that `params` and `grads` match the parameters this optimizer was made for.
    pub(crate) fn check(&self, params: &[&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        let op = self.op;
        if params.len() != grads.len() {
            return Err(invalid(
                "optimizer step",
                format!(
                    "{op}: {} parameters but {} gradients",
                    params.len(),
                    grads.len()
                ),
            ));
        }
        if params.len() != self.slots.len() {
            return Err(invalid(
                "optimizer step",
                format!(
                    "{op}: made for {} parameters, called with {}",
                    self.slots.len(),
                    params.len()
                ),
            ));
        }
        for (i, ((p, g), slot)) in params.iter().zip(grads).zip(&self.slots).enumerate() {
            for (what, t) in [("parameter", &**p), ("gradient", *g)] {
                t.expect_shape(op, &slot.shape)?;
                t.expect_dtype(op, slot.dtype)?;
                if t.device() != slot.device {
                    return Err(invalid(
                        "optimizer step",
                        format!(
                            "{op}: {what} {i} is on {}, the optimizer's state on {}",
                            t.device(),
                            slot.device
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The state tensors with their checkpoint names, parameter by parameter.
    pub(crate) fn named_state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.slots.len() * self.names.len());
        for (i, tensors) in self.state.iter().enumerate() {
            for (name, t) in self.names.iter().zip(tensors) {
                out.push((format!("{i}.{name}"), t.clone()));
            }
        }
        out
    }

    /// The state tensors of `saved`, checked against this optimizer's and moved to its devices,
    /// in the layout of `self.state` (nothing is replaced yet).
    pub(crate) fn loaded_state(
        &self,
        name: &'static str,
        saved: &OptimizerState,
    ) -> Result<Vec<Vec<Tensor>>> {
        let op = self.op;
        if saved.optimizer != name {
            return Err(invalid(
                "optimizer state",
                format!("{op}: the state is {:?}'s", saved.optimizer),
            ));
        }
        backend::check_lr(op, saved.lr)?;
        let expected = self.slots.len() * self.names.len();
        if saved.tensors.len() != expected {
            return Err(invalid(
                "optimizer state",
                format!(
                    "{op}: expected {expected} state tensors, got {}",
                    saved.tensors.len()
                ),
            ));
        }
        // Checked name by name (the order of the errors), stored parameter by parameter.
        let mut state: Vec<Vec<Tensor>> = (0..self.slots.len())
            .map(|_| Vec::with_capacity(self.names.len()))
            .collect();
        for name in self.names {
            for (i, slot) in self.slots.iter().enumerate() {
                let key = format!("{i}.{name}");
                let t = saved.get(&key).ok_or_else(|| {
                    invalid(
                        "optimizer state",
                        format!("{op}: no state tensor named {key:?}"),
                    )
                })?;
                t.expect_shape(op, &slot.shape)?;
                t.expect_dtype(op, slot.dtype)?;
                state[i].push(t.detach().to_device(slot.device)?);
            }
        }
        Ok(state)
    }
}
