//! The module trait: a layer or a network with named parameters.

use crate::core::error::Result;
use crate::nn::layers::BatchNorm2d;
use crate::tensor::Tensor;

/// Whether a forward pass trains (dropout active, batch norm on batch statistics) or evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A layer or a network. Parameter and buffer names follow PyTorch's `state_dict` convention
/// (`"0.weight"`, `"features.3.bias"`), so checkpoints map one to one onto a PyTorch model.
///
/// A composite module (a block, a network) lists its named [`Module::children`], as an
/// `nn.Module`'s attributes: the default `parameters`, `buffers` and `set_step` walk them and
/// prefix each child's names with its own (`layer1.0.conv1.weight`). A leaf layer (holding
/// tensors) overrides `parameters` and `buffers` instead.
pub trait Module: Send {
    /// The output for input `x`; recorded on the tape when parameters need gradients.
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor>;

    /// The named sub-modules, in `state_dict` order (none for a leaf layer).
    fn children(&self) -> Vec<(&str, &dyn Module)> {
        Vec::new()
    }

    /// [`Module::children`], mutable, in the same order.
    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Module)> {
        Vec::new()
    }

    /// Trainable tensors by name, in a fixed order.
    fn parameters(&self) -> Vec<(String, &Tensor)> {
        let children = self.children().into_iter();
        children
            .flat_map(|(n, c)| prefixed(n, c.parameters()))
            .collect()
    }

    /// The same tensors, mutable (for optimizers and checkpoint loading), in the same order.
    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let children = self.children_mut().into_iter();
        children
            .flat_map(|(n, c)| prefixed(n, c.parameters_mut()))
            .collect()
    }

    /// Non-trainable state that checkpoints keep (batch-norm running statistics).
    fn buffers(&self) -> Vec<(String, &Tensor)> {
        let children = self.children().into_iter();
        children
            .flat_map(|(n, c)| prefixed(n, c.buffers()))
            .collect()
    }

    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let children = self.children_mut().into_iter();
        children
            .flat_map(|(n, c)| prefixed(n, c.buffers_mut()))
            .collect()
    }

    /// Tells stateful layers (dropout) the global training step, so their randomness is a function
    /// of (seed, step) and a resumed run repeats an uninterrupted one exactly.
    fn set_step(&mut self, step: u64) {
        for (_, child) in self.children_mut() {
            child.set_step(step);
        }
    }

    /// Every batch norm in the module, in `state_dict` order.
    fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        let children = self.children().into_iter();
        children.flat_map(|(_, c)| c.batch_norms()).collect()
    }

    /// [`Module::batch_norms`], mutable: how they normalize in training is set over all of them
    /// (frozen statistics, synchronization across ranks).
    fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm2d> {
        let children = self.children_mut().into_iter();
        children.flat_map(|(_, c)| c.batch_norms_mut()).collect()
    }

    /// A one-line description, e.g. `Conv2d(1→6, 5x5, stride 1, padding 2)`.
    fn describe(&self) -> String;

    /// Number of trainable values.
    fn parameter_count(&self) -> usize {
        self.parameters().iter().map(|(_, t)| t.numel()).sum()
    }
}

/// Prefixes every name with `prefix.`.
pub(crate) fn prefixed<T>(prefix: &str, named: Vec<(String, T)>) -> Vec<(String, T)> {
    named
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}

/// The named parameters of a layer with a weight and an optional bias.
pub(crate) fn weight_and_bias<'a>(
    weight: &'a Tensor,
    bias: Option<&'a Tensor>,
) -> Vec<(String, &'a Tensor)> {
    let mut p = vec![("weight".to_string(), weight)];
    p.extend(bias.map(|b| ("bias".to_string(), b)));
    p
}

/// [`weight_and_bias`], mutable.
pub(crate) fn weight_and_bias_mut<'a>(
    weight: &'a mut Tensor,
    bias: Option<&'a mut Tensor>,
) -> Vec<(String, &'a mut Tensor)> {
    let mut p = vec![("weight".to_string(), weight)];
    p.extend(bias.map(|b| ("bias".to_string(), b)));
    p
}
