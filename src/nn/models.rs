//! Built-in networks for 28x28 (Fashion-MNIST) and 32x32 inputs.

use super::init::Init;
use super::layers::{
    Activation, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, Pool2d, ResidualBlock,
};
use super::module::Module;
use super::sequential::Sequential;
use crate::core::device::Device;
use crate::core::error::{invalid, Result};

/// The built-in architectures, by the names the command line uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// LeNet-5 with ReLU and max pooling.
    LeNet5,
    /// LeNet-5 as in 1998: tanh and average pooling.
    LeNet5Classic,
    /// A small VGG-style net with batch norm.
    Vgg,
    /// ResNet-20 (three stages of three basic blocks, 16/32/64 channels).
    ResNet20,
}

impl Architecture {
    pub const NAMES: [&'static str; 4] = ["lenet5", "lenet5-classic", "vgg", "resnet20"];

    pub fn parse(name: &str) -> Result<Architecture> {
        match name {
            "lenet5" => Ok(Architecture::LeNet5),
            "lenet5-classic" => Ok(Architecture::LeNet5Classic),
            "vgg" => Ok(Architecture::Vgg),
            "resnet20" => Ok(Architecture::ResNet20),
            other => Err(invalid(
                "model",
                format!(
                    "{other:?}: expected one of {}",
                    Architecture::NAMES.join(", ")
                ),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::LeNet5 => "lenet5",
            Architecture::LeNet5Classic => "lenet5-classic",
            Architecture::Vgg => "vgg",
            Architecture::ResNet20 => "resnet20",
        }
    }

    /// The network for `in_channels`-channel `image_size`² inputs and `classes` outputs.
    pub fn build(
        self,
        in_channels: usize,
        image_size: usize,
        classes: usize,
        seed: u64,
        device: Device,
    ) -> Result<Sequential> {
        if image_size < 8 || classes == 0 || in_channels == 0 {
            return Err(invalid(
                "model input",
                format!("{in_channels} channels of {image_size}², {classes} classes"),
            ));
        }
        match self {
            Architecture::LeNet5 => lenet5(in_channels, image_size, classes, false, seed, device),
            Architecture::LeNet5Classic => {
                lenet5(in_channels, image_size, classes, true, seed, device)
            }
            Architecture::Vgg => vgg(in_channels, image_size, classes, seed, device),
            Architecture::ResNet20 => resnet20(in_channels, classes, seed, device),
        }
    }
}

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
    let after_conv1 = image_size + 2 * pad - 4;
    let side = (after_conv1 / 2 - 4) / 2;
    Ok(Sequential::new()
        .push(Conv2d::new(in_channels, 6, 5, 1, pad, init, seed, device)?)
        .push(act)
        .push(pool)
        .push(Conv2d::new(6, 16, 5, 1, 0, init, seed + 1, device)?)
        .push(act)
        .push(pool)
        .push(Flatten)
        .push(Linear::new(16 * side * side, 120, init, seed + 2, device)?)
        .push(act)
        .push(Linear::new(120, 84, init, seed + 3, device)?)
        .push(act)
        .push(Linear::new(84, classes, init, seed + 4, device)?))
}

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
                    Conv2d::new(channels, width, 3, 1, 1, Init::KaimingNormal, seed, device)?
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
            Conv2d::new(in_channels, 16, 3, 1, 1, Init::KaimingNormal, seed, device)?
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

/// One row of a model summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSummary {
    pub name: String,
    pub description: String,
    pub output_shape: Vec<usize>,
    pub parameters: usize,
}

/// Runs one image of `input_shape` [C, H, W] through `net` on the CPU, without recording, and
/// lists each top-level layer with its output shape and parameter count.
pub fn summarize(net: &mut Sequential, input_shape: [usize; 3]) -> Result<Vec<LayerSummary>> {
    let [c, h, w] = input_shape;
    let mut x = crate::tensor::Tensor::zeros(
        &[1, c, h, w],
        crate::core::dtype::DType::F32,
        device_of(net),
    )?;
    let mut rows = Vec::new();
    crate::autograd::no_grad(|| -> Result<()> {
        for (i, layer) in net.children_mut().iter_mut().enumerate() {
            x = layer.forward(&x, super::module::Mode::Eval)?;
            rows.push(LayerSummary {
                name: i.to_string(),
                description: layer.describe(),
                output_shape: x.shape()[1..].to_vec(),
                parameters: layer.parameter_count(),
            });
        }
        Ok(())
    })?;
    Ok(rows)
}

fn device_of(net: &Sequential) -> Device {
    net.parameters()
        .first()
        .map(|(_, t)| t.device())
        .unwrap_or(Device::Cpu)
}
