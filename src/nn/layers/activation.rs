//! Parameter-free activation layers.

use crate::core::error::Result;
use crate::nn::module::{Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

/// An elementwise activation (or maxout, which reduces groups of channels).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu(f64),
    Elu(f64),
    /// min(max(x, 0), 6), MobileNetV2's.
    Relu6,
    Sigmoid,
    Tanh,
    /// The max over groups of this many consecutive channels.
    Maxout(usize),
}

impl Module for Activation {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        match *self {
            Activation::Relu => ops::relu(x),
            Activation::LeakyRelu(slope) => ops::leaky_relu(x, slope),
            Activation::Elu(alpha) => ops::elu(x, alpha),
            Activation::Relu6 => ops::relu6(x),
            Activation::Sigmoid => ops::sigmoid(x),
            Activation::Tanh => ops::tanh(x),
            Activation::Maxout(pieces) => ops::maxout(x, pieces),
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
