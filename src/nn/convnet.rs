//! A small convnet: conv3x3-ReLU-maxpool2, conv3x3-ReLU-maxpool2, flatten, linear, softmax
//! cross-entropy, trained through the tape with an update the caller brings (an optimizer's step).

use super::init::kaiming_normal;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::core::shape::Window2d;
use crate::ops;
use crate::tensor::Tensor;

/// Sizes of a [`ConvNet`].
#[derive(Clone, Copy, Debug)]
pub struct ConvNetConfig {
    pub in_channels: usize,
    /// Square input images; must be divisible by 4 (two 2x2 poolings).
    pub image_size: usize,
    pub channels: (usize, usize),
    pub classes: usize,
}

impl Default for ConvNetConfig {
    fn default() -> Self {
        ConvNetConfig {
            in_channels: 1,
            image_size: 28,
            channels: (8, 16),
            classes: 10,
        }
    }
}

/// Parameters: two conv layers and one linear layer, each with a bias.
pub struct ConvNet {
    pub config: ConvNetConfig,
    params: Vec<Tensor>,
}

const CONV: Window2d = Window2d {
    kernel: (3, 3),
    stride: (1, 1),
    padding: (1, 1),
    padding_end: (1, 1),
    dilation: (1, 1),
    floor_output: false,
};
const POOL: Window2d = Window2d {
    kernel: (2, 2),
    stride: (2, 2),
    padding: (0, 0),
    padding_end: (0, 0),
    dilation: (1, 1),
    floor_output: false,
};

impl ConvNet {
    /// He-initialized weights and zero biases, reproducible from `seed`.
    pub fn new(config: ConvNetConfig, seed: u64, device: Device) -> Result<ConvNet> {
        if config.image_size == 0 || config.image_size % 4 != 0 {
            return Err(invalid(
                "image size",
                format!("{} is not a positive multiple of 4", config.image_size),
            ));
        }
        let (c1, c2) = config.channels;
        let cin = config.in_channels;
        let features = c2 * (config.image_size / 4).pow(2);
        let params = [
            kaiming_normal(&[c1, cin, 3, 3], cin * 9, seed, device)?,
            Tensor::zeros(&[c1], DType::F32, device)?,
            kaiming_normal(&[c2, c1, 3, 3], c1 * 9, seed + 1, device)?,
            Tensor::zeros(&[c2], DType::F32, device)?,
            kaiming_normal(&[config.classes, features], features, seed + 2, device)?,
            Tensor::zeros(&[config.classes], DType::F32, device)?,
        ]
        .into_iter()
        .map(Tensor::with_grad)
        .collect();
        Ok(ConvNet { config, params })
    }

    pub fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.params.iter().map(|p| p.numel()).sum()
    }

    /// Logits [N, classes] for images [N, C, H, W].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let h = ops::conv2d(x, &p[0], Some(&p[1]), CONV)?;
        let h = ops::max_pool2d(&ops::relu(&h)?, POOL)?;
        let h = ops::conv2d(&h, &p[2], Some(&p[3]), CONV)?;
        let h = ops::max_pool2d(&ops::relu(&h)?, POOL)?;
        ops::linear(&ops::flatten(&h)?, &p[4], Some(&p[5]))
    }

    /// One training step on a mini-batch: forward, softmax cross-entropy, backward, then
    /// `update(params, grads)` with the parameters (mutable, in [`ConvNet::parameters`]' order)
    /// and their gradients, e.g. `|p, g| sgd.step(p, g)` (the optimizers sit beside `nn`, so the
    /// caller brings the update). Returns the mean loss as a device tensor (reading it is a sync).
    pub fn train_step(
        &mut self,
        x: &Tensor,
        labels: &Tensor,
        update: impl FnOnce(&mut [&mut Tensor], &[&Tensor]) -> Result<()>,
    ) -> Result<Tensor> {
        let loss = ops::softmax_cross_entropy(&self.forward(x)?, labels)?;
        let grads = loss.backward()?;
        let grads: Vec<&Tensor> = self
            .params
            .iter()
            .map(|p| {
                grads
                    .get(p)
                    .ok_or_else(|| invalid("backward", "a parameter received no gradient"))
            })
            .collect::<Result<_>>()?;
        let mut params: Vec<&mut Tensor> = self.params.iter_mut().collect();
        update(&mut params, &grads)?;
        Ok(loss.detach())
    }
}
