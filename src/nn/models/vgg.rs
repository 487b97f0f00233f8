//! torchvision's VGG (Simonyan & Zisserman 2014): VGG-11 (configuration A), VGG-16
//! (configuration D) and VGG-16 with batch norm, with torchvision's `state_dict` names
//! (`features.0`, `classifier.6`).
//!
//! The standard network pools the features to 7x7 and feeds 512·7·7 values to the classifier;
//! for inputs of [`SMALL_INPUT`] or less the max pools round up (`ceil_mode`, so 28x28 reaches
//! 1x1 rather than 0x0) and the average pool gives 1x1, so `classifier.0` takes 512 values. The
//! convolutions keep their names and shapes, so torchvision's features load into either.

use super::blocks::Builder;
use super::SMALL_INPUT;
use crate::core::error::Result;
use crate::nn::layers::{Activation, Conv2dSpec, Dropout, Flatten, Pool2d};
use crate::nn::sequential::Sequential;

/// A convolution of this many output channels, or a 2x2 max pool (0).
const M: usize = 0;
/// Configuration A.
pub const VGG11: &[usize] = &[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M];
/// Configuration D.
pub const VGG16: &[usize] = &[
    64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M,
];

/// The VGG of `config` (batch norm after each convolution when `batch_norm`).
pub fn torchvision_vgg(
    config: &[usize],
    batch_norm: bool,
    (in_channels, image_size, classes): (usize, usize, usize),
    b: &mut Builder,
) -> Result<Sequential> {
    let small = image_size <= SMALL_INPUT;
    let mut features = Sequential::new();
    let mut channels = in_channels;
    for &width in config {
        if width == M {
            let pool = Pool2d::max(2, 2);
            features = features.push(if small { pool.ceil_mode() } else { pool });
            continue;
        }
        let spec = Conv2dSpec::new(channels, width, 3).padding(1);
        features = features.push(b.conv_with_bias(spec)?);
        if batch_norm {
            features = features.push(b.bn(width)?);
        }
        features = features.push(Activation::Relu);
        channels = width;
    }
    let side = if small { 1 } else { 7 };
    let classifier = Sequential::new()
        .push(b.linear(channels * side * side, 4096)?)
        .push(Activation::Relu)
        .push(Dropout::new(0.5, b.next_seed())?)
        .push(b.linear(4096, 4096)?)
        .push(Activation::Relu)
        .push(Dropout::new(0.5, b.next_seed())?)
        .push(b.linear(4096, classes)?);
    Ok(Sequential::new()
        .push_named("features", features)
        .push_named("avgpool", Pool2d::adaptive_avg(side, side))
        .push_named("flatten", Flatten)
        .push_named("classifier", classifier))
}
