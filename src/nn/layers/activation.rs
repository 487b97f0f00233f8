//! Parameter-free activation layers.

use crate::error::Result;
use crate::nn::module::{Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

/// An elementwise activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
}

impl Module for Activation {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        match self {
            Activation::Relu => ops::relu(x),
        }
    }

    fn parameters(&self) -> Vec<(String, &Tensor)> {
        Vec::new()
    }

    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }

    fn describe(&self) -> String {
        format!("{self:?}")
    }
}
