//! torchvision's ResNets (He et al. 2016): ResNet-18 and -34 of basic blocks, ResNet-50 of
//! bottleneck blocks, with torchvision's `state_dict` names (`conv1`, `bn1`, `layer1.0.conv1`,
//! `layer2.0.downsample.0`, `fc`).
//!
//! The standard stem (7x7 stride-2 conv, 3x3 stride-2 max pool) divides the side by 4 before the
//! first stage; for inputs of [`SMALL_INPUT`] or less the stem is CIFAR's instead: a 3x3 stride-1
//! `conv1` and no max pool, so a 32x32 image reaches the last stage at 4x4.

use super::blocks::Builder;
use super::SMALL_INPUT;
use crate::core::error::Result;
use crate::nn::layers::{Activation, BatchNorm2d, Conv2d, Conv2dSpec, Flatten, Pool2d};
use crate::nn::module::{Mode, Module};
use crate::nn::sequential::Sequential;
use crate::ops;
use crate::tensor::Tensor;

/// Which residual block a ResNet stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Two 3x3 convolutions (ResNet-18, -34); output channels = width.
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50 and deeper); output channels = 4·width.
    Bottleneck,
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// A torchvision ResNet with `blocks` per stage (ResNet-18: [2, 2, 2, 2], -34: [3, 4, 6, 3],
/// -50: [3, 4, 6, 3] bottlenecks) for `in_channels`-channel `image_size`² inputs.
pub fn resnet(
    block: Block,
    blocks: [usize; 4],
    (in_channels, image_size, classes): (usize, usize, usize),
    b: &mut Builder,
) -> Result<Sequential> {
    let mut net = if image_size <= SMALL_INPUT {
        let stem = Conv2dSpec::new(in_channels, 64, 3).padding(1);
        Sequential::new()
            .push_named("conv1", b.conv(stem)?)
            .push_named("bn1", b.bn(64)?)
            .push_named("relu", Activation::Relu)
    } else {
        let stem = Conv2dSpec::new(in_channels, 64, 7).stride(2).padding(3);
        Sequential::new()
            .push_named("conv1", b.conv(stem)?)
            .push_named("bn1", b.bn(64)?)
            .push_named("relu", Activation::Relu)
            .push_named("maxpool", Pool2d::max(3, 2).padding(1))
    };
    let mut channels = 64;
    for (stage, (&count, width)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
        let mut layer = Sequential::new();
        for i in 0..count {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let residual = Residual::new(block, channels, width, stride, b)?;
            channels = width * block.expansion();
            layer = layer.push(residual);
        }
        net = net.push_named(format!("layer{}", stage + 1), layer);
    }
    Ok(net
        .push_named("avgpool", Pool2d::global_avg())
        .push_named("flatten", Flatten)
        .push_named("fc", b.linear(channels, classes)?))
}

/// torchvision's `BasicBlock` or `Bottleneck`: the convolutions `conv1`, `conv2` (and `conv3`),
/// each with batch norm, plus the input, projected by `downsample` (1x1 conv + batch norm) when the
/// stride or the channels change; ReLU after the sum.
pub struct Residual {
    block: Block,
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<Sequential>,
}

impl Residual {
    /// A block taking `in_channels` to `width · expansion` channels; the 3x3 conv has the stride.
    pub fn new(
        block: Block,
        in_channels: usize,
        width: usize,
        stride: usize,
        b: &mut Builder,
    ) -> Result<Residual> {
        let out = width * block.expansion();
        let specs = match block {
            Block::Basic => vec![
                Conv2dSpec::new(in_channels, width, 3)
                    .stride(stride)
                    .padding(1),
                Conv2dSpec::new(width, width, 3).padding(1),
            ],
            Block::Bottleneck => vec![
                Conv2dSpec::new(in_channels, width, 1),
                Conv2dSpec::new(width, width, 3).stride(stride).padding(1),
                Conv2dSpec::new(width, out, 1),
            ],
        };
        let convs = specs
            .into_iter()
            .map(|spec| Ok((b.conv(spec)?, b.bn(spec.out_channels)?)))
            .collect::<Result<_>>()?;
        let downsample = if stride != 1 || in_channels != out {
            let projection = Conv2dSpec::new(in_channels, out, 1).stride(stride);
            Some(Sequential::new().push(b.conv(projection)?).push(b.bn(out)?))
        } else {
            None
        };
        Ok(Residual {
            block,
            convs,
            downsample,
        })
    }
}

const CONV_NAMES: [(&str, &str); 3] = [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")];

impl Module for Residual {
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut h = x.clone();
        for (i, (conv, bn)) in self.convs.iter_mut().enumerate() {
            h = bn.forward(&conv.forward(&h, mode)?, mode)?;
            if i < last {
                h = ops::relu(&h)?;
            }
        }
        let skip = match &mut self.downsample {
            Some(projection) => projection.forward(x, mode)?,
            None => x.clone(),
        };
        ops::relu(&ops::add(&h, &skip)?)
    }

    fn children(&self) -> Vec<(&str, &dyn Module)> {
        let mut parts: Vec<(&str, &dyn Module)> = Vec::new();
        for ((conv, bn), (conv_name, bn_name)) in self.convs.iter().zip(CONV_NAMES) {
            parts.push((conv_name, conv));
            parts.push((bn_name, bn));
        }
        if let Some(d) = &self.downsample {
            parts.push(("downsample", d));
        }
        parts
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Module)> {
        let mut parts: Vec<(&str, &mut dyn Module)> = Vec::new();
        for ((conv, bn), (conv_name, bn_name)) in self.convs.iter_mut().zip(CONV_NAMES) {
            parts.push((conv_name, conv));
            parts.push((bn_name, bn));
        }
        if let Some(d) = &mut self.downsample {
            parts.push(("downsample", d));
        }
        parts
    }

    fn describe(&self) -> String {
        let first = self.convs[0].0.weight.shape()[1];
        let out = self.convs[self.convs.len() - 1].0.weight.shape()[0];
        let stride = self.convs.iter().map(|(c, _)| c.window.stride.0).max();
        let projection = if self.downsample.is_some() {
            ", downsample"
        } else {
            ""
        };
        let kind = match self.block {
            Block::Basic => "BasicBlock",
            Block::Bottleneck => "Bottleneck",
        };
        let stride = stride.unwrap_or(1);
        format!("{kind}({first}→{out}, stride {stride}{projection})")
    }
}
