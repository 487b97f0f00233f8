//! Seeded weight initialization.

use crate::device::Device;
use crate::error::Result;
use crate::tensor::Tensor;

/// How a layer's weights are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// He/Kaiming normal, std = sqrt(2 / fan_in): for layers followed by ReLU.
    KaimingNormal,
    /// Xavier/Glorot uniform, U(±sqrt(6 / (fan_in + fan_out))): for tanh and sigmoid nets.
    XavierUniform,
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
