//! BatchNorm2d as a layer: γ and β are its parameters ("weight", "bias" as in PyTorch), the running
//! statistics its buffers. A layer whose statistics are frozen ([`BatchNorm2d::freeze_statistics`])
//! normalizes with its running statistics in training too and leaves them unchanged, as
//! torchvision's `FrozenBatchNorm2d` (or `module.eval()` on a frozen layer) does.

use crate::core::device::Device;
use crate::core::error::Result;
use crate::nn::module::{Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

pub struct BatchNorm2d {
    pub inner: ops::BatchNorm2d,
    statistics_frozen: bool,
}

impl BatchNorm2d {
    pub fn new(channels: usize, device: Device) -> Result<BatchNorm2d> {
        Ok(BatchNorm2d {
            inner: ops::BatchNorm2d::new(channels, device)?,
            statistics_frozen: false,
        })
    }

    /// The same layer adding `eps` to the variance (PyTorch's default is 1e-5; GoogLeNet uses 1e-3).
    pub fn with_eps(mut self, eps: f64) -> BatchNorm2d {
        self.inner.eps = eps;
        self
    }

    /// Whether training forwards use (and keep) the running statistics instead of the batch's.
    pub fn statistics_frozen(&self) -> bool {
        self.statistics_frozen
    }

    /// Sets [`BatchNorm2d::statistics_frozen`].
    pub fn freeze_statistics(&mut self, frozen: bool) {
        self.statistics_frozen = frozen;
    }
}

impl Module for BatchNorm2d {
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let batch_statistics = mode == Mode::Train && !self.statistics_frozen;
        self.inner.forward(x, batch_statistics)
    }

    fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        vec![self]
    }

    fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm2d> {
        vec![self]
    }

    fn parameters(&self) -> Vec<(String, &Tensor)> {
        vec![
            ("weight".into(), &self.inner.gamma),
            ("bias".into(), &self.inner.beta),
        ]
    }

    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![
            ("weight".into(), &mut self.inner.gamma),
            ("bias".into(), &mut self.inner.beta),
        ]
    }

    fn buffers(&self) -> Vec<(String, &Tensor)> {
        vec![
            ("running_mean".into(), self.inner.running_mean()),
            ("running_var".into(), self.inner.running_var()),
        ]
    }

    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let (mean, var) = self.inner.running_stats_mut();
        vec![("running_mean".into(), mean), ("running_var".into(), var)]
    }

    fn describe(&self) -> String {
        format!("BatchNorm2d({})", self.inner.gamma.numel())
    }
}
