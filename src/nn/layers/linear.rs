//! Linear: y = x·Wᵀ + b with W [out, in] (PyTorch's layout).

use crate::core::device::Device;
use crate::core::error::{invalid, Result};
use crate::nn::init::Init;
use crate::nn::module::{weight_and_bias, weight_and_bias_mut, Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A fully connected layer with a bias, weights drawn by `init` from `seed`; the bias starts at 0.
    pub fn new(
        in_features: usize,
        out_features: usize,
        init: Init,
        seed: u64,
        device: Device,
    ) -> Result<Linear> {
        if in_features == 0 || out_features == 0 {
            return Err(invalid("linear layer", "feature counts must be positive"));
        }
        let weight = init.weight(
            &[out_features, in_features],
            in_features,
            out_features,
            seed,
            device,
        )?;
        Ok(Linear {
            weight: weight.with_grad(),
            bias: Some(
                init.bias(out_features, in_features, seed, device)?
                    .with_grad(),
            ),
        })
    }
}

impl Module for Linear {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }

    fn parameters(&self) -> Vec<(String, &Tensor)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }

    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        weight_and_bias_mut(&mut self.weight, self.bias.as_mut())
    }

    fn describe(&self) -> String {
        let s = self.weight.shape();
        format!("Linear({}→{})", s[1], s[0])
    }
}
