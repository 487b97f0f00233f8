//! Built-in networks for 28x28 (Fashion-MNIST) and 32x32 inputs.

use super::init::Init;
use super::layers::{
    Activation, BatchNorm2d, Conv2d, Conv2dSpec, Dropout, Flatten, Linear, Pool2d, ResidualBlock,
};
use super::module::Module;
use super::sequential::Sequential;
use crate::core::device::Device;
use crate::core::error::{invalid, Result};

/// The variant of a [`clap::ValueEnum`] spelled `name`; the error names `what` and lists every
/// spelling (the same list clap prints for a bad flag).
pub fn parse_value<T: clap::ValueEnum>(name: &str, what: &'static str) -> Result<T> {
    T::from_str(name, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        invalid(
            what,
            format!("{name:?}: expected one of {}", names.join(", ")),
        )
    })
}

/// The built-in architectures, by [`Architecture::name`]: the command line (`clap::ValueEnum`)
/// and checkpoints (serde, renamed to match) spell them so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Architecture {
    /// LeNet-5 with ReLU and max pooling.
    #[serde(rename = "lenet5")]
    LeNet5,
    /// LeNet-5 as in 1998: tanh and average pooling.
    #[serde(rename = "lenet5-classic")]
    LeNet5Classic,
    /// A small VGG-style net with batch norm.
    #[serde(rename = "vgg")]
    Vgg,
    /// ResNet-20 (three stages of three basic blocks, 16/32/64 channels).
    #[serde(rename = "resnet20")]
    ResNet20,
}

impl clap::ValueEnum for Architecture {
    fn value_variants<'a>() -> &'a [Self] {
        &Architecture::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

impl Architecture {
    pub const ALL: [Architecture; 4] = [
        Architecture::LeNet5,
        Architecture::LeNet5Classic,
        Architecture::Vgg,
        Architecture::ResNet20,
    ];

    /// The architecture spelled `name` (see [`Architecture::name`]).
    pub fn parse(name: &str) -> Result<Architecture> {
        parse_value(name, "model")
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::LeNet5 => "lenet5",
            Architecture::LeNet5Classic => "lenet5-classic",
            Architecture::Vgg => "vgg",
            Architecture::ResNet20 => "resnet20",
        }
    }

    /// The network for samples of `input = [channels, height, width]` (square images) and
    /// `classes` outputs: what a dataset description asks for.
    pub fn build_for(
        self,
        input: [usize; 3],
        classes: usize,
        seed: u64,
        device: Device,
    ) -> Result<Sequential> {
        let [c, h, w] = input;
        if h != w {
            return Err(invalid(
                "model input",
                format!(
                    "{} takes square images; the samples are {c}x{h}x{w}",
                    self.name()
                ),
            ));
        }
        self.build(c, h, classes, seed, device)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_has_one_spelling_everywhere() {
        for arch in Architecture::ALL {
            assert_eq!(Architecture::parse(arch.name()).unwrap(), arch);
            let json = serde_json::to_string(&arch).unwrap();
            assert_eq!(json, format!("\"{}\"", arch.name()));
        }
        let err = Architecture::parse("alexnet").unwrap_err().to_string();
        assert!(err.contains("model") && err.contains("resnet20"), "{err}");
    }

    #[test]
    fn build_for_takes_the_sample_shape_and_refuses_non_square_images() {
        let net = Architecture::LeNet5
            .build_for([3, 16, 16], 4, 0, Device::Cpu)
            .unwrap();
        assert_eq!(net.parameters()[0].1.shape(), &[6, 3, 5, 5]);
        let Err(err) = Architecture::Vgg.build_for([1, 28, 32], 10, 0, Device::Cpu) else {
            panic!("a non-square input was accepted");
        };
        assert!(err.to_string().contains("1x28x32"), "{err}");
    }
}
