//! ResNet-20, the CIFAR ResNet of He et al. (`--model resnet20`; its blocks keep kiln's
//! `shortcut` names).

use crate::core::device::Device;
use crate::core::error::Result;
use crate::nn::init::Init;
use crate::nn::layers::{
    Activation, BatchNorm2d, Conv2d, Conv2dSpec, Flatten, Linear, Pool2d, ResidualBlock,
};
use crate::nn::sequential::Sequential;

/// ResNet-20 (He et al. 2016, CIFAR variant): conv3x3 (16)-BN-ReLU, three stages of three basic
/// blocks with 16, 32, 64 channels (stride 2 at the start of stages 2 and 3), global average
/// pooling, fc classes.
pub fn resnet20(
    in_channels: usize,
    classes: usize,
    seed: u64,
    device: Device,
) -> Result<Sequential> {
    let mut net = Sequential::new()
        .push(
            Conv2d::new(
                Conv2dSpec::new(in_channels, 16, 3).padding(1),
                Init::KaimingNormal,
                seed,
                device,
            )?
            .without_bias(),
        )
        .push(BatchNorm2d::new(16, device)?)
        .push(Activation::Relu);
    let mut channels = 16;
    let mut seed = seed + 1;
    for (stage, width) in [16, 32, 64].into_iter().enumerate() {
        for block in 0..3 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            net = net.push(ResidualBlock::new(channels, width, stride, seed, device)?);
            channels = width;
            seed += 3;
        }
    }
    Ok(net
        .push(Pool2d::global_avg())
        .push(Flatten)
        .push(Linear::new(
            channels,
            classes,
            Init::KaimingNormal,
            seed,
            device,
        )?))
}
