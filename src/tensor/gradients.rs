//! The gradients a backward pass produced, keyed by the tensors that required them.

use std::collections::HashMap;

use super::Tensor;
use crate::backend::{self, RawTensor, TensorId};
use crate::core::error::Result;

/// Gradients by tensor. `Tensor::backward` returns fresh ones; `Tensor::backward_into` adds to an
/// existing set, which is how gradients accumulate over several backward passes.
#[derive(Default, Clone, Debug)]
pub struct Gradients {
    map: HashMap<TensorId, Tensor>,
}

impl Gradients {
    pub fn new() -> Gradients {
        Gradients::default()
    }

    /// The gradient of `t`, if any flowed into it.
    pub fn get(&self, t: &RawTensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }

    /// Takes the gradient of `t` out of the set.
    pub fn remove(&mut self, t: &RawTensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets every gradient (start fresh before the next accumulation).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub(crate) fn by_id(&self, id: TensorId) -> Option<&Tensor> {
        self.map.get(&id)
    }

    pub(crate) fn accumulate(&mut self, id: TensorId, g: RawTensor) -> Result<()> {
        let total = match self.map.remove(&id) {
            Some(sum) => backend::add(&sum, &g)?,
            None => g,
        };
        self.map.insert(id, Tensor::from(total));
        Ok(())
    }
}
