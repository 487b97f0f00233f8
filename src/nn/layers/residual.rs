//! The ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU. When the block
//! changes the size or the channels, the shortcut is a strided 1x1 conv with batch norm (option B of
//! He et al.), so gradients add where the input branches into the two paths.

use super::{BatchNorm2d, Conv2d, Conv2dSpec};
use crate::core::device::Device;
use crate::core::error::Result;
use crate::nn::init::Init;
use crate::nn::module::{Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

pub struct ResidualBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    shortcut: Option<(Conv2d, BatchNorm2d)>,
}

impl ResidualBlock {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        seed: u64,
        device: Device,
    ) -> Result<ResidualBlock> {
        let conv = |cin, cout, k, s, p, seed| {
            // Strided layers round their output size down, as PyTorch's ResNets do on even inputs.
            Conv2d::new(
                Conv2dSpec::new(cin, cout, k).stride(s).padding(p),
                Init::KaimingNormal,
                seed,
                device,
            )
            .map(|c| c.without_bias().floored())
        };
        let shortcut = if stride != 1 || in_channels != out_channels {
            Some((
                conv(in_channels, out_channels, 1, stride, 0, seed + 2)?,
                BatchNorm2d::new(out_channels, device)?,
            ))
        } else {
            None
        };
        Ok(ResidualBlock {
            conv1: conv(in_channels, out_channels, 3, stride, 1, seed)?,
            bn1: BatchNorm2d::new(out_channels, device)?,
            conv2: conv(out_channels, out_channels, 3, 1, 1, seed + 1)?,
            bn2: BatchNorm2d::new(out_channels, device)?,
            shortcut,
        })
    }
}

impl Module for ResidualBlock {
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let h = ops::relu(&self.bn1.forward(&self.conv1.forward(x, mode)?, mode)?)?;
        let h = self.bn2.forward(&self.conv2.forward(&h, mode)?, mode)?;
        let skip = match &mut self.shortcut {
            Some((conv, bn)) => bn.forward(&conv.forward(x, mode)?, mode)?,
            None => x.clone(),
        };
        ops::relu(&ops::add(&h, &skip)?)
    }

    fn children(&self) -> Vec<(&str, &dyn Module)> {
        let mut parts: Vec<(&str, &dyn Module)> = vec![
            ("conv1", &self.conv1),
            ("bn1", &self.bn1),
            ("conv2", &self.conv2),
            ("bn2", &self.bn2),
        ];
        if let Some((conv, bn)) = &self.shortcut {
            parts.push(("shortcut.0", conv));
            parts.push(("shortcut.1", bn));
        }
        parts
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Module)> {
        let mut parts: Vec<(&str, &mut dyn Module)> = vec![
            ("conv1", &mut self.conv1),
            ("bn1", &mut self.bn1),
            ("conv2", &mut self.conv2),
            ("bn2", &mut self.bn2),
        ];
        if let Some((conv, bn)) = &mut self.shortcut {
            parts.push(("shortcut.0", conv));
            parts.push(("shortcut.1", bn));
        }
        parts
    }

    fn describe(&self) -> String {
        let s = self.conv1.weight.shape();
        let stride = self.conv1.window.stride.0;
        format!(
            "ResidualBlock({}→{}, stride {stride}{})",
            s[1],
            s[0],
            if self.shortcut.is_some() {
                ", projection"
            } else {
                ""
            }
        )
    }
}
