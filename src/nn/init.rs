//! Seeded weight initialization.

use crate::device::Device;
use crate::error::Result;
use crate::tensor::Tensor;

/// He/Kaiming normal initialization for layers followed by ReLU: std = sqrt(2 / fan_in).
pub fn kaiming_normal(shape: &[usize], fan_in: usize, seed: u64, device: Device) -> Result<Tensor> {
    let std = (2.0 / fan_in.max(1) as f32).sqrt();
    Tensor::randn(shape, std, seed, device)
}
