//! torchvision's MobileNetV2 (Sandler et al. 2018): inverted residual blocks of a 1x1 expansion,
//! a 3x3 depthwise convolution and a linear 1x1 projection, with ReLU6, and torchvision's
//! `state_dict` names (`features.1.conv.0.0`, `classifier.1`).
//!
//! The standard network divides the side by 32; for inputs of [`SMALL_INPUT`] or less the first
//! convolution (`features.0`) and the first block of the 24-channel stage (`features.2`) keep
//! stride 1 (as CIFAR versions do), dividing it by 8: a 32x32 image ends at 4x4.

use super::blocks::Builder;
use super::SMALL_INPUT;
use crate::core::error::{invalid, Result};
use crate::nn::layers::{Activation, Conv2dSpec, Dropout, Flatten, Pool2d};
use crate::nn::module::{Mode, Module};
use crate::nn::sequential::Sequential;
use crate::ops;
use crate::tensor::Tensor;

/// (expansion t, channels c, blocks n, stride s) per stage, as in the paper's Table 2.
const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// torchvision's `_make_divisible(v, 8)`: the nearest multiple of 8, at least 8, and not more
/// than 10% below `v`.
fn make_divisible(v: f64) -> usize {
    let divisor = 8;
    let rounded = ((v + divisor as f64 / 2.0) as usize / divisor * divisor).max(divisor);
    if (rounded as f64) < 0.9 * v {
        rounded + divisor
    } else {
        rounded
    }
}

/// MobileNetV2 with every width scaled by `width_mult` (torchvision's argument; 1.0 is the
/// standard network) for `in_channels`-channel `image_size`² inputs.
pub fn mobilenet_v2(
    width_mult: f64,
    (in_channels, image_size, classes): (usize, usize, usize),
    b: &mut Builder,
) -> Result<Sequential> {
    if !(width_mult > 0.0 && width_mult.is_finite()) {
        return Err(invalid(
            "MobileNetV2 width multiplier",
            format!("{width_mult} is not a positive number"),
        ));
    }
    let small = image_size <= SMALL_INPUT;
    let mut channels = make_divisible(32.0 * width_mult);
    let last_channels = make_divisible(1280.0 * width_mult.max(1.0));
    let stem_stride = if small { 1 } else { 2 };
    let stem = Conv2dSpec::new(in_channels, channels, 3).stride(stem_stride);
    let mut features = Sequential::new().push(b.conv_bn_act(stem, Activation::Relu6)?);
    for (stage, (t, c, n, s)) in STAGES.into_iter().enumerate() {
        let out = make_divisible(c as f64 * width_mult);
        for i in 0..n {
            let stride = match (i, stage) {
                (0, 1) if small => 1,
                (0, _) => s,
                _ => 1,
            };
            features = features.push(InvertedResidual::new(channels, out, stride, t, b)?);
            channels = out;
        }
    }
    let head = Conv2dSpec::new(channels, last_channels, 1);
    let features = features.push(b.conv_bn_act(head, Activation::Relu6)?);
    let classifier = Sequential::new()
        .push(Dropout::new(0.2, b.next_seed())?)
        .push(b.linear(last_channels, classes)?);
    Ok(Sequential::new()
        .push_named("features", features)
        .push_named("avgpool", Pool2d::global_avg())
        .push_named("flatten", Flatten)
        .push_named("classifier", classifier))
}

/// torchvision's `InvertedResidual`: `conv` = [1x1 expansion (when t > 1), 3x3 depthwise, each
/// conv-BN-ReLU6] then a 1x1 projection and batch norm without activation; the input is added
/// when the block keeps the size and the channels.
pub struct InvertedResidual {
    conv: Sequential,
    residual: bool,
    describe: String,
}

impl InvertedResidual {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        expansion: usize,
        b: &mut Builder,
    ) -> Result<InvertedResidual> {
        let hidden = in_channels * expansion;
        let mut conv = Sequential::new();
        if expansion != 1 {
            let expand = Conv2dSpec::new(in_channels, hidden, 1);
            conv = conv.push(b.conv_bn_act(expand, Activation::Relu6)?);
        }
        let depthwise = Conv2dSpec::new(hidden, hidden, 3)
            .stride(stride)
            .groups(hidden);
        let project = Conv2dSpec::new(hidden, out_channels, 1);
        let conv = conv
            .push(b.conv_bn_act(depthwise, Activation::Relu6)?)
            .push(b.conv(project)?)
            .push(b.bn(out_channels)?);
        let residual = stride == 1 && in_channels == out_channels;
        let describe = format!(
            "InvertedResidual({in_channels}→{out_channels}, expansion {expansion}, stride {stride}{})",
            if residual { ", residual" } else { "" }
        );
        Ok(InvertedResidual {
            conv,
            residual,
            describe,
        })
    }
}

impl Module for InvertedResidual {
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let h = self.conv.forward(x, mode)?;
        match self.residual {
            true => ops::add(x, &h),
            false => Ok(h),
        }
    }

    fn children(&self) -> Vec<(&str, &dyn Module)> {
        vec![("conv", &self.conv)]
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Module)> {
        vec![("conv", &mut self.conv)]
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::make_divisible;

    /// Values from torchvision.models._utils._make_divisible(v, 8).
    #[test]
    fn widths_round_as_torchvision_rounds_them() {
        for (v, expected) in [
            (32.0, 32),
            (3.2, 8),
            (9.6, 16),
            (16.0 * 0.35, 8),
            (1280.0, 1280),
        ] {
            assert_eq!(make_divisible(v), expected, "{v}");
        }
        assert_eq!(make_divisible(96.0 * 0.75), 72);
        assert_eq!(make_divisible(20.0), 24);
    }
}
