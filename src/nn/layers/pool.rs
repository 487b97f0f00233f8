//! Pooling layers.

use crate::core::error::Result;
use crate::core::shape::{PoolWindow, Window2d};
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

/// A pooling layer. `Pool2d::max(3, 2).padding(1)` is torchvision's `MaxPool2d(3, 2, padding=1)`
/// and `.ceil_mode()` its `ceil_mode=True`; the window, padding and `ceil_mode` of a global or
/// adaptive pool are unused.
#[derive(Clone, Copy, Debug)]
pub struct Pool2d {
    pub kind: Pool,
    pub window: Window2d,
    /// Round output sizes up (PyTorch's `ceil_mode`) rather than down.
    pub ceil_mode: bool,
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
        Pool2d {
            kind,
            window,
            ceil_mode: false,
        }
    }

    /// The same layer with zero padding `p` on every side (for max pooling, padding never wins).
    pub fn padding(mut self, p: usize) -> Pool2d {
        self.window = self.window.with_padding(p, p, p, p);
        self
    }

    /// The same layer with output sizes rounded up, as PyTorch's `ceil_mode=True`.
    pub fn ceil_mode(mut self) -> Pool2d {
        self.ceil_mode = true;
        self
    }

    /// The window and its rounding, as the pooling ops take them.
    fn pool_window(&self) -> PoolWindow {
        PoolWindow {
            window: self.window,
            ceil_mode: self.ceil_mode,
        }
    }
}

impl Module for Pool2d {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        match self.kind {
            Pool::Max => ops::max_pool2d(x, self.pool_window()),
            Pool::Avg { count_include_pad } => {
                ops::avg_pool2d(x, self.pool_window(), count_include_pad)
            }
            Pool::L2 => ops::l2_pool2d(x, self.pool_window()),
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
            kind => {
                let mut text = format!(
                    "{kind:?}Pool2d({}x{}, stride {}",
                    w.kernel.0, w.kernel.1, w.stride.0
                );
                if w.padding != (0, 0) || w.padding_end != (0, 0) {
                    text += &format!(", padding {}", w.padding.0);
                }
                if self.ceil_mode {
                    text += ", ceil_mode";
                }
                text + ")"
            }
        }
    }
}
