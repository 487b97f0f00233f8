//! A small convnet: conv3x3-ReLU-maxpool2, conv3x3-ReLU-maxpool2, flatten, linear, softmax
//! cross-entropy. Forward and backward are chained by hand from the layer ops.

use super::init::kaiming_normal;
use crate::device::Device;
use crate::error::{invalid, Result};
use crate::ops;
use crate::optim::Sgd;
use crate::shape::Window2d;
use crate::tensor::{DType, Tensor};

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

/// What the forward pass keeps for the backward pass.
struct Activations {
    c1: ops::Conv2d,
    r1: ops::Relu,
    p1: ops::MaxPool2d,
    c2: ops::Conv2d,
    r2: ops::Relu,
    p2: ops::MaxPool2d,
    flat: Tensor,
    logits: Tensor,
}

const CONV: Window2d = Window2d {
    kernel: (3, 3),
    stride: (1, 1),
    padding: (1, 1),
    dilation: (1, 1),
};
const POOL: Window2d = Window2d {
    kernel: (2, 2),
    stride: (2, 2),
    padding: (0, 0),
    dilation: (1, 1),
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
        let params = vec![
            kaiming_normal(&[c1, cin, 3, 3], cin * 9, seed, device)?,
            Tensor::zeros(&[c1], DType::F32, device)?,
            kaiming_normal(&[c2, c1, 3, 3], c1 * 9, seed + 1, device)?,
            Tensor::zeros(&[c2], DType::F32, device)?,
            kaiming_normal(&[config.classes, features], features, seed + 2, device)?,
            Tensor::zeros(&[config.classes], DType::F32, device)?,
        ];
        Ok(ConvNet { config, params })
    }

    pub fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.params.iter().map(Tensor::numel).sum()
    }

    /// Logits [N, classes] for images [N, C, H, W].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_saving(x)?.logits)
    }

    /// The forward pass, keeping what the backward pass needs.
    fn forward_saving(&self, x: &Tensor) -> Result<Activations> {
        let p = &self.params;
        let c1 = ops::conv2d(x, &p[0], Some(&p[1]), CONV)?;
        let r1 = ops::relu(&c1.y)?;
        let p1 = ops::max_pool2d(&r1.y, POOL)?;
        let c2 = ops::conv2d(&p1.y, &p[2], Some(&p[3]), CONV)?;
        let r2 = ops::relu(&c2.y)?;
        let p2 = ops::max_pool2d(&r2.y, POOL)?;
        let flat = ops::flatten(&p2.y)?;
        let logits = ops::linear(&flat, &p[4], Some(&p[5]))?;
        Ok(Activations {
            c1,
            r1,
            p1,
            c2,
            r2,
            p2,
            flat,
            logits,
        })
    }

    /// One SGD step on a mini-batch; returns the mean loss as a device tensor (reading it is a sync).
    pub fn train_step(&mut self, x: &Tensor, labels: &Tensor, sgd: &mut Sgd) -> Result<Tensor> {
        let Activations {
            c1,
            r1,
            p1,
            c2,
            r2,
            p2,
            flat,
            logits,
        } = self.forward_saving(x)?;
        let p = &self.params;
        let xent = ops::softmax_cross_entropy(&logits, labels)?;

        let dlogits = ops::softmax_cross_entropy_backward(&xent, 1.0)?;
        let fc = ops::linear_backward(&dlogits, &flat, &p[4], true)?;
        let dp2 = fc.dx.reshape(p2.y.shape())?;
        let dr2 = ops::max_pool2d_backward(&dp2, &p2)?;
        let dc2 = ops::relu_backward(&dr2, &r2)?;
        let g2 = ops::conv2d_backward(&dc2, &p[2], &c2, true)?;
        let dp1 = ops::max_pool2d_backward(&g2.dx, &p1)?;
        let dc1 = ops::relu_backward(&dp1, &r1)?;
        let g1 = ops::conv2d_backward(&dc1, &p[0], &c1, true)?;

        let missing = || invalid("backward", "a bias gradient is missing");
        let grads = [
            &g1.dw,
            g1.db.as_ref().ok_or_else(missing)?,
            &g2.dw,
            g2.db.as_ref().ok_or_else(missing)?,
            &fc.dw,
            fc.db.as_ref().ok_or_else(missing)?,
        ];
        let mut params: Vec<&mut Tensor> = self.params.iter_mut().collect();
        sgd.step(&mut params, &grads)?;
        Ok(xent.loss)
    }
}
