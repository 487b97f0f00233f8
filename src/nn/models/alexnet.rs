//! torchvision's AlexNet (Krizhevsky et al. 2012, in the one-GPU form of Krizhevsky 2014 that
//! torchvision implements), with torchvision's `state_dict` names (`features.0`, `classifier.6`).
//!
//! The standard network starts with an 11x11 stride-4 convolution and needs 63x63 inputs or more;
//! for smaller inputs (down to 15x15) `features.0` is 3x3 stride 1 and the average pool gives 1x1
//! instead of 6x6, so `classifier.1` takes 256 values.

use super::blocks::Builder;
use crate::core::error::{invalid, Result};
use crate::nn::layers::{Activation, Conv2dSpec, Dropout, Flatten, Pool2d};
use crate::nn::sequential::Sequential;

/// The smallest side the standard 11x11 stride-4 stem takes: smaller inputs get the small variant.
pub const STANDARD_SMALLEST: usize = 63;
/// The smallest side the small variant takes.
const SMALLEST: usize = 15;

/// AlexNet for `in_channels`-channel `image_size`² inputs.
pub fn alexnet(
    (in_channels, image_size, classes): (usize, usize, usize),
    b: &mut Builder,
) -> Result<Sequential> {
    if image_size < SMALLEST {
        return Err(invalid(
            "model input",
            format!(
                "AlexNet needs images of at least {SMALLEST}x{SMALLEST} (three 3x3 stride-2 max \
                 pools), got {image_size}x{image_size}"
            ),
        ));
    }
    let small = image_size < STANDARD_SMALLEST;
    let stem = match small {
        true => Conv2dSpec::new(in_channels, 64, 3).padding(1),
        false => Conv2dSpec::new(in_channels, 64, 11).stride(4).padding(2),
    };
    let mut features = Sequential::new();
    let convs = [
        (stem, true),
        (Conv2dSpec::new(64, 192, 5).padding(2), true),
        (Conv2dSpec::new(192, 384, 3).padding(1), false),
        (Conv2dSpec::new(384, 256, 3).padding(1), false),
        (Conv2dSpec::new(256, 256, 3).padding(1), true),
    ];
    for (spec, pooled) in convs {
        features = features
            .push(b.conv_with_bias(spec)?)
            .push(Activation::Relu);
        if pooled {
            features = features.push(Pool2d::max(3, 2));
        }
    }
    let side = if small { 1 } else { 6 };
    let classifier = Sequential::new()
        .push(Dropout::new(0.5, b.next_seed())?)
        .push(b.linear(256 * side * side, 4096)?)
        .push(Activation::Relu)
        .push(Dropout::new(0.5, b.next_seed())?)
        .push(b.linear(4096, 4096)?)
        .push(Activation::Relu)
        .push(b.linear(4096, classes)?);
    Ok(Sequential::new()
        .push_named("features", features)
        .push_named("avgpool", Pool2d::adaptive_avg(side, side))
        .push_named("flatten", Flatten)
        .push_named("classifier", classifier))
}
