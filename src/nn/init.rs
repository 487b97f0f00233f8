//! Seeded weight initialization.

use crate::core::device::Device;
use crate::core::error::Result;
use crate::tensor::Tensor;

/// How a layer's weights are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// He/Kaiming normal, std = sqrt(2 / fan_in): for layers followed by ReLU.
    KaimingNormal,
    /// Xavier/Glorot uniform, U(±sqrt(6 / (fan_in + fan_out))): for tanh and sigmoid nets.
    XavierUniform,
    /// PyTorch's default for Conv2d and Linear: Kaiming uniform with a = √5, i.e. weights and biases
    /// U(±1/sqrt(fan_in)). Used where a run must reproduce a PyTorch reference.
    TorchDefault,
}

impl Init {
    /// A weight tensor of `shape` with the given fans, reproducible from `seed`.
    pub fn weight(
        self,
        shape: &[usize],
        fan_in: usize,
        fan_out: usize,
        seed: u64,
        device: Device,
    ) -> Result<Tensor> {
        match self {
            Init::KaimingNormal => kaiming_normal(shape, fan_in, seed, device),
            Init::XavierUniform => xavier_uniform(shape, fan_in, fan_out, seed, device),
            Init::TorchDefault => torch_default(shape, fan_in, seed, device),
        }
    }

    /// A bias of `len` values: zero, except U(±1/sqrt(fan_in)) for [`Init::TorchDefault`].
    pub fn bias(self, len: usize, fan_in: usize, seed: u64, device: Device) -> Result<Tensor> {
        match self {
            Init::TorchDefault => torch_default(&[len], fan_in, seed ^ 0xB1A5, device),
            _ => Tensor::zeros(&[len], crate::core::dtype::DType::F32, device),
        }
    }
}

/// He/Kaiming normal initialization for layers followed by ReLU: std = sqrt(2 / fan_in).
pub fn kaiming_normal(shape: &[usize], fan_in: usize, seed: u64, device: Device) -> Result<Tensor> {
    let std = (2.0 / fan_in.max(1) as f32).sqrt();
    Tensor::randn(shape, std, seed, device)
}

/// Xavier/Glorot uniform initialization: U(−a, a) with a = sqrt(6 / (fan_in + fan_out)).
pub fn xavier_uniform(
    shape: &[usize],
    fan_in: usize,
    fan_out: usize,
    seed: u64,
    device: Device,
) -> Result<Tensor> {
    let a = (6.0 / (fan_in + fan_out).max(1) as f32).sqrt();
    Tensor::uniform(shape, -a, a, seed, device)
}

/// PyTorch's default layer initialization: U(±1/sqrt(fan_in)).
pub fn torch_default(shape: &[usize], fan_in: usize, seed: u64, device: Device) -> Result<Tensor> {
    let a = 1.0 / (fan_in.max(1) as f32).sqrt();
    Tensor::uniform(shape, -a, a, seed, device)
}
