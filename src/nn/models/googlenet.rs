//! torchvision's GoogLeNet (Inception v1, Szegedy et al. 2014) without the auxiliary classifiers
//! and with `transform_input=False`, with torchvision's `state_dict` names (`conv1.conv`,
//! `inception3a.branch2.0.conv`, `fc`). As torchvision, the "5x5" branch convolves 3x3, and every
//! convolution is followed by batch norm (eps 1e-3) and ReLU.
//!
//! The standard stem (7x7 stride-2 conv and two stride-2 max pools) divides the side by 8 before
//! the first Inception module; for inputs of [`SMALL_INPUT`] or less `conv1` is 3x3 stride 1 and
//! `maxpool1` and `maxpool2` are left out, so a 32x32 image enters `inception3a` at 32x32.

use super::blocks::Builder;
use super::SMALL_INPUT;
use crate::core::error::Result;
use crate::nn::layers::{Activation, BatchNorm2d, Conv2d, Conv2dSpec, Dropout, Flatten, Pool2d};
use crate::nn::module::{Mode, Module};
use crate::nn::sequential::Sequential;
use crate::ops;
use crate::tensor::Tensor;

/// Output channels of each Inception module's branches: 1x1; 3x3 reduce, 3x3; "5x5" reduce,
/// "5x5"; pool projection (the paper's Table 1).
type Widths = [usize; 6];

const INCEPTIONS: [(&str, Widths); 9] = [
    ("inception3a", [64, 96, 128, 16, 32, 32]),
    ("inception3b", [128, 128, 192, 32, 96, 64]),
    ("inception4a", [192, 96, 208, 16, 48, 64]),
    ("inception4b", [160, 112, 224, 24, 64, 64]),
    ("inception4c", [128, 128, 256, 24, 64, 64]),
    ("inception4d", [112, 144, 288, 32, 64, 64]),
    ("inception4e", [256, 160, 320, 32, 128, 128]),
    ("inception5a", [256, 160, 320, 32, 128, 128]),
    ("inception5b", [384, 192, 384, 48, 128, 128]),
];

/// GoogLeNet for `in_channels`-channel `image_size`² inputs.
pub fn googlenet(
    (in_channels, image_size, classes): (usize, usize, usize),
    b: &mut Builder,
) -> Result<Sequential> {
    let pool = |k| Pool2d::max(k, 2).ceil_mode();
    let mut net = if image_size <= SMALL_INPUT {
        let stem = Conv2dSpec::new(in_channels, 64, 3).padding(1);
        Sequential::new().push_named("conv1", BasicConv2d::new(stem, b)?)
    } else {
        let stem = Conv2dSpec::new(in_channels, 64, 7).stride(2).padding(3);
        Sequential::new()
            .push_named("conv1", BasicConv2d::new(stem, b)?)
            .push_named("maxpool1", pool(3))
    };
    net = net
        .push_named("conv2", BasicConv2d::new(Conv2dSpec::new(64, 64, 1), b)?)
        .push_named(
            "conv3",
            BasicConv2d::new(Conv2dSpec::new(64, 192, 3).padding(1), b)?,
        );
    if image_size > SMALL_INPUT {
        net = net.push_named("maxpool2", pool(3));
    }
    let mut channels = 192;
    for (name, widths) in INCEPTIONS {
        let module = Inception::new(channels, widths, b)?;
        channels = module.out_channels;
        net = net.push_named(name, module);
        match name {
            "inception3b" => net = net.push_named("maxpool3", pool(3)),
            "inception4e" => net = net.push_named("maxpool4", pool(2)),
            _ => {}
        }
    }
    Ok(net
        .push_named("avgpool", Pool2d::global_avg())
        .push_named("flatten", Flatten)
        .push_named("dropout", Dropout::new(0.2, b.next_seed())?)
        .push_named("fc", b.linear(channels, classes)?))
}

/// torchvision's `BasicConv2d`: `conv` (no bias), `bn` (eps 1e-3), ReLU.
pub struct BasicConv2d {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl BasicConv2d {
    pub fn new(spec: Conv2dSpec, b: &mut Builder) -> Result<BasicConv2d> {
        Ok(BasicConv2d {
            conv: b.conv(spec)?,
            bn: b.bn(spec.out_channels)?.with_eps(1e-3),
        })
    }
}

impl Module for BasicConv2d {
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let h = self.bn.forward(&self.conv.forward(x, mode)?, mode)?;
        Activation::Relu.forward(&h, mode)
    }

    fn children(&self) -> Vec<(&str, &dyn Module)> {
        vec![("conv", &self.conv), ("bn", &self.bn)]
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Module)> {
        vec![("conv", &mut self.conv), ("bn", &mut self.bn)]
    }

    fn describe(&self) -> String {
        let conv = self.conv.describe().replacen("Conv2d", "BasicConv2d", 1);
        format!("{conv} + BN + ReLU")
    }
}

/// An Inception module: four branches on the same input, concatenated along the channels.
pub struct Inception {
    /// torchvision's `branch1` is a `BasicConv2d` itself (`branch1.conv.weight`), the others are
    /// `Sequential`s (`branch2.0.conv.weight`).
    branch1: BasicConv2d,
    branches: [Sequential; 3],
    out_channels: usize,
}

const BRANCH_NAMES: [&str; 3] = ["branch2", "branch3", "branch4"];

impl Inception {
    pub fn new(in_channels: usize, widths: Widths, b: &mut Builder) -> Result<Inception> {
        let [w1, r3, w3, r5, w5, wp] = widths;
        let mut basic = |cin, cout, k| {
            let padding = if k == 3 { 1 } else { 0 };
            BasicConv2d::new(Conv2dSpec::new(cin, cout, k).padding(padding), b)
        };
        let branch1 = basic(in_channels, w1, 1)?;
        let branch2 = Sequential::new()
            .push(basic(in_channels, r3, 1)?)
            .push(basic(r3, w3, 3)?);
        let branch3 = Sequential::new()
            .push(basic(in_channels, r5, 1)?)
            .push(basic(r5, w5, 3)?);
        let branch4 = Sequential::new()
            .push(Pool2d::max(3, 1).padding(1).ceil_mode())
            .push(basic(in_channels, wp, 1)?);
        Ok(Inception {
            branch1,
            branches: [branch2, branch3, branch4],
            out_channels: w1 + w3 + w5 + wp,
        })
    }
}

impl Module for Inception {
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut outputs = vec![self.branch1.forward(x, mode)?];
        for branch in &mut self.branches {
            outputs.push(branch.forward(x, mode)?);
        }
        let outputs: Vec<&Tensor> = outputs.iter().collect();
        ops::concat(&outputs, 1)
    }

    fn children(&self) -> Vec<(&str, &dyn Module)> {
        let mut parts: Vec<(&str, &dyn Module)> = vec![("branch1", &self.branch1)];
        for (name, branch) in BRANCH_NAMES.into_iter().zip(&self.branches) {
            parts.push((name, branch));
        }
        parts
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Module)> {
        let mut parts: Vec<(&str, &mut dyn Module)> = vec![("branch1", &mut self.branch1)];
        for (name, branch) in BRANCH_NAMES.into_iter().zip(&mut self.branches) {
            parts.push((name, branch));
        }
        parts
    }

    fn describe(&self) -> String {
        let cin = self.branch1.conv.weight.shape()[1];
        format!("Inception({cin}→{}, 4 branches)", self.out_channels)
    }
}
