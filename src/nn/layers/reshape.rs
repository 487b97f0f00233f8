//! Flatten: [N, ...] → [N, rest].

use crate::core::error::Result;
use crate::nn::module::{Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

pub struct Flatten;

impl Module for Flatten {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        ops::flatten(x)
    }

    fn parameters(&self) -> Vec<(String, &Tensor)> {
        Vec::new()
    }

    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }

    fn describe(&self) -> String {
        "Flatten".into()
    }
}
