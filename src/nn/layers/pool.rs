//! Pooling layers.

use crate::core::error::Result;
use crate::core::shape::Window2d;
use crate::nn::module::{Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

/// Which reduction a pooling layer applies over each window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Max,
    /// Average; padding counts toward the divisor when `count_include_pad`.
    Avg {
        count_include_pad: bool,
    },
    /// sqrt of the sum of squares.
    L2,
    /// Average over the whole plane: [N, C, H, W] → [N, C, 1, 1].
    GlobalAvg,
    /// Average over PyTorch's adaptive windows: [N, C, H, W] → [N, C, OH, OW], `output` = (OH, OW).
    AdaptiveAvg {
        output: (usize, usize),
    },
}

/// A pooling layer.
#[derive(Clone, Copy, Debug)]
pub struct Pool2d {
    pub kind: Pool,
    pub window: Window2d,
}

impl Pool2d {
    pub fn max(k: usize, stride: usize) -> Pool2d {
        Pool2d::new(Pool::Max, Window2d::square(k, stride, 0))
    }

    pub fn avg(k: usize, stride: usize) -> Pool2d {
        let kind = Pool::Avg {
            count_include_pad: true,
        };
        Pool2d::new(kind, Window2d::square(k, stride, 0))
    }

    /// PyTorch's `AdaptiveAvgPool2d((out_h, out_w))`.
    pub fn adaptive_avg(out_h: usize, out_w: usize) -> Pool2d {
        let kind = Pool::AdaptiveAvg {
            output: (out_h, out_w),
        };
        Pool2d::new(kind, Window2d::square(1, 1, 0))
    }

    pub fn global_avg() -> Pool2d {
        Pool2d::new(Pool::GlobalAvg, Window2d::square(1, 1, 0))
    }

    pub fn new(kind: Pool, window: Window2d) -> Pool2d {
        Pool2d { kind, window }
    }
}

impl Module for Pool2d {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        match self.kind {
            Pool::Max => ops::max_pool2d(x, self.window),
            Pool::Avg { count_include_pad } => ops::avg_pool2d(x, self.window, count_include_pad),
            Pool::L2 => ops::l2_pool2d(x, self.window),
            Pool::GlobalAvg => ops::global_avg_pool2d(x),
            Pool::AdaptiveAvg { output } => ops::adaptive_avg_pool2d(x, output),
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
        match self.kind {
            Pool::GlobalAvg => "GlobalAvgPool2d".into(),
            Pool::AdaptiveAvg { output: (h, w) } => format!("AdaptiveAvgPool2d({h}x{w})"),
            kind => format!(
                "{kind:?}Pool2d({}x{}, stride {})",
                w.kernel.0, w.kernel.1, w.stride.0
            ),
        }
    }
}
