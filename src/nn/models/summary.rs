//! `kiln summary`'s table: each top-level layer of a network with its output shape and parameters.

use crate::core::device::Device;
use crate::core::error::Result;
use crate::nn::module::{Mode, Module};
use crate::nn::sequential::Sequential;

/// One row of a model summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSummary {
    pub name: String,
    pub description: String,
    pub output_shape: Vec<usize>,
    pub parameters: usize,
}

/// Runs one image of `input_shape` [C, H, W] through `net` on the CPU, without recording, and
/// lists each top-level layer (by its `state_dict` name) with its output shape and parameter count.
pub fn summarize(net: &mut Sequential, input_shape: [usize; 3]) -> Result<Vec<LayerSummary>> {
    let [c, h, w] = input_shape;
    let mut x = crate::tensor::Tensor::zeros(
        &[1, c, h, w],
        crate::core::dtype::DType::F32,
        device_of(net),
    )?;
    let mut rows = Vec::new();
    crate::autograd::no_grad(|| -> Result<()> {
        for (name, layer) in net.children_mut() {
            x = layer.forward(&x, Mode::Eval)?;
            rows.push(LayerSummary {
                name: name.to_string(),
                description: layer.describe(),
                output_shape: x.shape()[1..].to_vec(),
                parameters: layer.parameter_count(),
            });
        }
        Ok(())
    })?;
    Ok(rows)
}

fn device_of(net: &Sequential) -> Device {
    net.parameters()
        .first()
        .map(|(_, t)| t.device())
        .unwrap_or(Device::Cpu)
}
