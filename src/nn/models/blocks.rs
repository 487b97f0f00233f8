//! The pieces torchvision's networks share: a seed counter, and convolution + batch norm
//! (+ activation) stacks named as torchvision names them.

use crate::core::device::Device;
use crate::core::error::Result;
use crate::nn::init::Init;
use crate::nn::layers::{Activation, BatchNorm2d, Conv2d, Conv2dSpec, Linear};
use crate::nn::sequential::Sequential;

/// What every builder needs: where the parameters live and a fresh seed for each layer.
pub struct Builder {
    pub device: Device,
    seed: u64,
}

impl Builder {
    pub fn new(seed: u64, device: Device) -> Builder {
        Builder { device, seed }
    }

    /// A seed no earlier layer of this network used.
    pub fn next_seed(&mut self) -> u64 {
        self.seed += 1;
        self.seed
    }

    /// A bias-free convolution (as before batch norm); strided ones round their output down, as
    /// PyTorch does.
    pub fn conv(&mut self, spec: Conv2dSpec) -> Result<Conv2d> {
        let conv = Conv2d::new(spec, Init::KaimingNormal, self.next_seed(), self.device)?;
        Ok(conv.without_bias().floored())
    }

    /// A convolution with a bias (VGG and AlexNet, which have no batch norm after it).
    pub fn conv_with_bias(&mut self, spec: Conv2dSpec) -> Result<Conv2d> {
        let conv = Conv2d::new(spec, Init::TorchDefault, self.next_seed(), self.device)?;
        Ok(conv.floored())
    }

    pub fn bn(&self, channels: usize) -> Result<BatchNorm2d> {
        BatchNorm2d::new(channels, self.device)
    }

    /// A fully connected layer with PyTorch's default initialization.
    pub fn linear(&mut self, inputs: usize, outputs: usize) -> Result<Linear> {
        Linear::new(
            inputs,
            outputs,
            Init::TorchDefault,
            self.next_seed(),
            self.device,
        )
    }

    /// torchvision's `Conv2dNormActivation`: conv (no bias), batch norm, `act` as "0", "1", "2";
    /// padding keeps the size at stride 1.
    pub fn conv_bn_act(&mut self, spec: Conv2dSpec, act: Activation) -> Result<Sequential> {
        let spec = spec.padding((spec.kernel - 1) / 2);
        Ok(Sequential::new()
            .push(self.conv(spec)?)
            .push(self.bn(spec.out_channels)?)
            .push(act))
    }
}
