//! Built-in networks: kiln's small ones for 28x28 and 32x32 inputs (LeNet-5, a small VGG,
//! ResNet-20) and the lectures' classic ones in torchvision's layout (AlexNet, VGG, ResNet,
//! GoogLeNet, MobileNetV2), each built to the data's shape and class count.

mod alexnet;
mod blocks;
mod googlenet;
mod lenet;
mod mobilenet;
mod resnet;
mod resnet20;
mod summary;
mod vgg;
mod vgg_small;

pub use alexnet::alexnet;
pub use blocks::Builder;
pub use googlenet::{googlenet, BasicConv2d, Inception};
pub use lenet::lenet5;
pub use mobilenet::{mobilenet_v2, InvertedResidual};
pub use resnet::{resnet, Block, Residual};
pub use resnet20::resnet20;
pub use summary::{summarize, LayerSummary};
pub use vgg::{torchvision_vgg, VGG11, VGG16};
pub use vgg_small::vgg;

use crate::core::device::Device;
use crate::core::error::{invalid, Result};
use crate::nn::sequential::Sequential;

/// Inputs of this side or less get a network's small-input variant (CIFAR-style stems), where the
/// standard one would shrink a 28x28 or 32x32 image to almost nothing; see each builder.
pub const SMALL_INPUT: usize = 32;

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
    /// torchvision's AlexNet.
    #[serde(rename = "alexnet")]
    AlexNet,
    /// torchvision's VGG-11 (configuration A).
    #[serde(rename = "vgg11")]
    Vgg11,
    /// torchvision's VGG-16 (configuration D).
    #[serde(rename = "vgg16")]
    Vgg16,
    /// torchvision's VGG-16 with batch norm.
    #[serde(rename = "vgg16-bn")]
    Vgg16Bn,
    /// torchvision's ResNet-18 (basic blocks [2, 2, 2, 2]).
    #[serde(rename = "resnet18")]
    ResNet18,
    /// torchvision's ResNet-34 (basic blocks [3, 4, 6, 3]).
    #[serde(rename = "resnet34")]
    ResNet34,
    /// torchvision's ResNet-50 (bottleneck blocks [3, 4, 6, 3]).
    #[serde(rename = "resnet50")]
    ResNet50,
    /// torchvision's GoogLeNet (Inception v1) without auxiliary classifiers.
    #[serde(rename = "googlenet")]
    GoogLeNet,
    /// torchvision's MobileNetV2.
    #[serde(rename = "mobilenet-v2")]
    MobileNetV2,
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
    pub const ALL: [Architecture; 13] = [
        Architecture::LeNet5,
        Architecture::LeNet5Classic,
        Architecture::Vgg,
        Architecture::ResNet20,
        Architecture::AlexNet,
        Architecture::Vgg11,
        Architecture::Vgg16,
        Architecture::Vgg16Bn,
        Architecture::ResNet18,
        Architecture::ResNet34,
        Architecture::ResNet50,
        Architecture::GoogLeNet,
        Architecture::MobileNetV2,
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
            Architecture::AlexNet => "alexnet",
            Architecture::Vgg11 => "vgg11",
            Architecture::Vgg16 => "vgg16",
            Architecture::Vgg16Bn => "vgg16-bn",
            Architecture::ResNet18 => "resnet18",
            Architecture::ResNet34 => "resnet34",
            Architecture::ResNet50 => "resnet50",
            Architecture::GoogLeNet => "googlenet",
            Architecture::MobileNetV2 => "mobilenet-v2",
        }
    }

    /// Which form of the network `image_size`² inputs get: the standard (torchvision) one, or the
    /// small-input variant and what it changes; `None` for kiln's own small networks.
    pub fn variant(self, image_size: usize) -> Option<&'static str> {
        let small = image_size <= SMALL_INPUT;
        let (standard, changed) = match self {
            Architecture::LeNet5
            | Architecture::LeNet5Classic
            | Architecture::Vgg
            | Architecture::ResNet20 => return None,
            Architecture::AlexNet => {
                let small = image_size < alexnet::STANDARD_SMALLEST;
                return Some(if small {
                    "small-input variant (below 63x63): 3x3 stride-1 features.0, 1x1 average pool, classifier.1 takes 256"
                } else {
                    "standard torchvision network"
                });
            }
            Architecture::Vgg11 | Architecture::Vgg16 | Architecture::Vgg16Bn => (
                !small,
                "small-input variant (32x32 or less): max pools round up (ceil_mode), 1x1 average pool, classifier.0 takes 512",
            ),
            Architecture::ResNet18 | Architecture::ResNet34 | Architecture::ResNet50 => (
                !small,
                "small-input variant (32x32 or less): 3x3 stride-1 conv1, no max pool",
            ),
            Architecture::GoogLeNet => (
                !small,
                "small-input variant (32x32 or less): 3x3 stride-1 conv1, no maxpool1 or maxpool2",
            ),
            Architecture::MobileNetV2 => (
                !small,
                "small-input variant (32x32 or less): stride 1 in features.0 and features.2",
            ),
        };
        Some(if standard {
            "standard torchvision network"
        } else {
            changed
        })
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
        let (b, input) = (
            &mut Builder::new(seed, device),
            (in_channels, image_size, classes),
        );
        match self {
            Architecture::LeNet5 => lenet5(in_channels, image_size, classes, false, seed, device),
            Architecture::LeNet5Classic => {
                lenet5(in_channels, image_size, classes, true, seed, device)
            }
            Architecture::Vgg => vgg(in_channels, image_size, classes, seed, device),
            Architecture::ResNet20 => resnet20(in_channels, classes, seed, device),
            Architecture::AlexNet => alexnet(input, b),
            Architecture::Vgg11 => torchvision_vgg(VGG11, false, input, b),
            Architecture::Vgg16 => torchvision_vgg(VGG16, false, input, b),
            Architecture::Vgg16Bn => torchvision_vgg(VGG16, true, input, b),
            Architecture::ResNet18 => resnet(Block::Basic, [2, 2, 2, 2], input, b),
            Architecture::ResNet34 => resnet(Block::Basic, [3, 4, 6, 3], input, b),
            Architecture::ResNet50 => resnet(Block::Bottleneck, [3, 4, 6, 3], input, b),
            Architecture::GoogLeNet => googlenet(input, b),
            Architecture::MobileNetV2 => mobilenet_v2(1.0, input, b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::module::Module;

    #[test]
    fn every_architecture_has_one_spelling_everywhere() {
        for arch in Architecture::ALL {
            assert_eq!(Architecture::parse(arch.name()).unwrap(), arch);
            let json = serde_json::to_string(&arch).unwrap();
            assert_eq!(json, format!("\"{}\"", arch.name()));
        }
        let err = Architecture::parse("resnet19").unwrap_err().to_string();
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
