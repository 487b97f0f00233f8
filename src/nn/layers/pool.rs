//! Pooling layers.

use crate::error::Result;
use crate::nn::module::{Mode, Module};
use crate::ops;
use crate::shape::Window2d;
use crate::tensor::Tensor;

/// Which reduction a pooling layer applies over each window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Max,
}

/// A pooling layer over square windows.
#[derive(Clone, Copy, Debug)]
pub struct Pool2d {
    pub kind: Pool,
    pub window: Window2d,
}

impl Pool2d {
    pub fn max(k: usize, stride: usize) -> Pool2d {
        Pool2d {
            kind: Pool::Max,
            window: Window2d::square(k, stride, 0),
        }
    }
}

impl Module for Pool2d {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        match self.kind {
            Pool::Max => ops::max_pool2d(x, self.window),
        }
    }

    fn parameters(&self) -> Vec<(String, &Tensor)> {
        Vec::new()
    }

    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }

    fn describe(&self) -> String {
        let w = &self.window;
        format!(
            "{:?}Pool2d({}x{}, stride {})",
            self.kind, w.kernel.0, w.kernel.1, w.stride.0
        )
    }
}
