//! LeNet-5, for 28x28 (Fashion-MNIST) and 32x32 inputs.

use crate::core::device::Device;
use crate::core::error::{invalid, Result};
use crate::nn::init::Init;
use crate::nn::layers::{Activation, Conv2d, Conv2dSpec, Flatten, Linear, Pool2d};
use crate::nn::sequential::Sequential;

/// LeNet-5 (LeCun et al. 1998): conv 5x5 (6) - pool - conv 5x5 (16) - pool - fc 120 - fc 84 - fc
/// classes. 28x28 inputs get padding 2 on the first conv, so the second conv sees 14x14 → 10x10 →
/// 5x5, as the 32x32 original. `classic` uses tanh and average pooling with Xavier initialization,
/// otherwise ReLU and max pooling with PyTorch's default initialization, so that a run reproduces
/// the PyTorch reference (bench/torch_lenet.py).
pub fn lenet5(
    in_channels: usize,
    image_size: usize,
    classes: usize,
    classic: bool,
    seed: u64,
    device: Device,
) -> Result<Sequential> {
    let (act, init, pool) = if classic {
        (Activation::Tanh, Init::XavierUniform, Pool2d::avg(2, 2))
    } else {
        (Activation::Relu, Init::TorchDefault, Pool2d::max(2, 2))
    };
    let pad = if image_size == 28 { 2 } else { 0 };
    // Two 5x5 convolutions, each followed by 2x2 pooling, must leave at least one pixel.
    let side = (image_size + 2 * pad)
        .checked_sub(4)
        .and_then(|s| (s / 2).checked_sub(4))
        .map(|s| s / 2)
        .filter(|&s| s > 0)
        .ok_or_else(|| {
            invalid(
                "model input",
                format!(
                    "LeNet-5 needs images of at least 16x16 (two 5x5 convolutions and two 2x2 \
                     poolings), got {image_size}x{image_size}"
                ),
            )
        })?;
    Ok(Sequential::new()
        .push(Conv2d::new(
            Conv2dSpec::new(in_channels, 6, 5).padding(pad),
            init,
            seed,
            device,
        )?)
        .push(act)
        .push(pool)
        .push(Conv2d::new(
            Conv2dSpec::new(6, 16, 5),
            init,
            seed + 1,
            device,
        )?)
        .push(act)
        .push(pool)
        .push(Flatten)
        .push(Linear::new(16 * side * side, 120, init, seed + 2, device)?)
        .push(act)
        .push(Linear::new(120, 84, init, seed + 3, device)?)
        .push(act)
        .push(Linear::new(84, classes, init, seed + 4, device)?))
}
