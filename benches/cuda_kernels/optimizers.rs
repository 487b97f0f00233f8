//! The fused optimizer updates (kernels/optim.cu) on one parameter tensor of 2^24 elements, beside
//! bench/torch_gpu.py's fused PyTorch optimizers (`fused=True`) of the same names. Memory-bound: the
//! bytes are every state tensor read and written once.

use kiln::optim::{Adam, Sgd};
use kiln::Result;

use super::{Bench, Rows, Work, F32};

impl Bench {
    /// SGD with momentum 0.9 (reads w, g, v; writes w, v) and Adam (reads w, g, m, v; writes w, m,
    /// v) on 2^24 parameters.
    pub(super) fn optimizers(&self, rows: &mut Rows) -> Result<()> {
        let n = (1 << 24) / self.shrink;
        let short = format!("2^{}", n.trailing_zeros());
        let g = self.randn(&[n], 12)?;
        let mut w = self.randn(&[n], 13)?;
        let mut sgd = Sgd::new(&[w.clone()], 1e-3, 0.9, 0.0)?;
        self.row(
            rows,
            "sgd_momentum",
            (
                format!("{short} parameters"),
                format!("sgd_momentum {short}"),
            ),
            Work::bytes(n as f64 * 5.0 * F32),
            || sgd.step(&mut [&mut w], &[&g]),
        )?;
        let mut w = self.randn(&[n], 14)?;
        let mut adam = Adam::new(&[w.clone()], 1e-3)?;
        self.row(
            rows,
            "adam",
            (format!("{short} parameters"), format!("adam {short}")),
            Work::bytes(n as f64 * 7.0 * F32),
            || adam.step(&mut [&mut w], &[&g]),
        )
    }
}
