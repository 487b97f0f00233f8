//! Sequential: children applied in order, named "0", "1", ... like PyTorch's nn.Sequential.

use super::module::{prefixed, Mode, Module};
use crate::core::error::Result;
use crate::tensor::Tensor;

/// Modules applied one after another.
#[derive(Default)]
pub struct Sequential {
    children: Vec<Box<dyn Module>>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a module (builder style).
    pub fn push(mut self, m: impl Module + 'static) -> Sequential {
        self.children.push(Box::new(m));
        self
    }

    pub fn children(&self) -> &[Box<dyn Module>] {
        &self.children
    }

    pub fn children_mut(&mut self) -> &mut [Box<dyn Module>] {
        &mut self.children
    }
}

impl Module for Sequential {
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut h = x.clone();
        for child in &mut self.children {
            h = child.forward(&h, mode)?;
        }
        Ok(h)
    }

    fn parameters(&self) -> Vec<(String, &Tensor)> {
        let per_child = self.children.iter().enumerate();
        per_child
            .flat_map(|(i, c)| prefixed(&i.to_string(), c.parameters()))
            .collect()
    }

    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let per_child = self.children.iter_mut().enumerate();
        per_child
            .flat_map(|(i, c)| prefixed(&i.to_string(), c.parameters_mut()))
            .collect()
    }

    fn buffers(&self) -> Vec<(String, &Tensor)> {
        let per_child = self.children.iter().enumerate();
        per_child
            .flat_map(|(i, c)| prefixed(&i.to_string(), c.buffers()))
            .collect()
    }

    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let per_child = self.children.iter_mut().enumerate();
        per_child
            .flat_map(|(i, c)| prefixed(&i.to_string(), c.buffers_mut()))
            .collect()
    }

    fn set_step(&mut self, step: u64) {
        self.children.iter_mut().for_each(|c| c.set_step(step));
    }

    fn describe(&self) -> String {
        format!("Sequential({} modules)", self.children.len())
    }
}
