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
/// lists each layer (by its `state_dict` name) with its output shape and parameter count. A
/// top-level `Sequential` (children "0", "1", ...: `features`, `layer1`, `classifier`) is listed
/// child by child.
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
            if !is_sequence(layer) {
                x = layer.forward(&x, Mode::Eval)?;
                rows.push(row(name.to_string(), layer, &x));
                continue;
            }
            for (index, child) in layer.children_mut() {
                x = child.forward(&x, Mode::Eval)?;
                rows.push(row(format!("{name}.{index}"), child, &x));
            }
        }
        Ok(())
    })?;
    Ok(rows)
}

/// Children named "0", "1", ... are a `Sequential`'s, applied one after another.
fn is_sequence(layer: &dyn Module) -> bool {
    let children = layer.children();
    !children.is_empty() && (children.iter().enumerate()).all(|(i, (n, _))| *n == i.to_string())
}

fn row(name: String, layer: &dyn Module, output: &crate::tensor::Tensor) -> LayerSummary {
    LayerSummary {
        name,
        description: layer.describe(),
        output_shape: output.shape()[1..].to_vec(),
        parameters: layer.parameter_count(),
    }
}

fn device_of(net: &Sequential) -> Device {
    net.parameters()
        .first()
        .map(|(_, t)| t.device())
        .unwrap_or(Device::Cpu)
}
