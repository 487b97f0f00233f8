//! kiln's own small VGG-style net for 28x28 and 32x32 inputs (`--model vgg`).

use crate::core::device::Device;
use crate::core::error::Result;
use crate::nn::init::Init;
use crate::nn::layers::{
    Activation, BatchNorm2d, Conv2d, Conv2dSpec, Dropout, Flatten, Linear, Pool2d,
};
use crate::nn::sequential::Sequential;

/// A small VGG-style net: blocks of [conv3x3-BN-ReLU]x2 then 2x2 max pooling with 32, 64 and 128
/// channels, then fc 256 - dropout 0.5 - fc classes.
pub fn vgg(
    in_channels: usize,
    image_size: usize,
    classes: usize,
    seed: u64,
    device: Device,
) -> Result<Sequential> {
    let mut net = Sequential::new();
    let mut channels = in_channels;
    let mut side = image_size;
    let mut seed = seed;
    for width in [32, 64, 128] {
        for _ in 0..2 {
            net = net
                .push(
                    Conv2d::new(
                        Conv2dSpec::new(channels, width, 3).padding(1),
                        Init::KaimingNormal,
                        seed,
                        device,
                    )?
                    .without_bias(),
                )
                .push(BatchNorm2d::new(width, device)?)
                .push(Activation::Relu);
            channels = width;
            seed += 1;
        }
        net = net.push(Pool2d::max(2, 2));
        side /= 2;
    }
    Ok(net
        .push(Flatten)
        .push(Linear::new(
            channels * side * side,
            256,
            Init::KaimingNormal,
            seed,
            device,
        )?)
        .push(Activation::Relu)
        .push(Dropout::new(0.5, seed + 1)?)
        .push(Linear::new(
            256,
            classes,
            Init::KaimingNormal,
            seed + 2,
            device,
        )?))
}
