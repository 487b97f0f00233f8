//! Dropout as a layer: a fresh mask each training step, reproducible from the layer's seed.

use crate::core::error::{invalid, Result};
use crate::nn::module::{Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

pub struct Dropout {
    p: f64,
    seed: u64,
    /// The step of the last `set_step`, and the training calls since then.
    step: u64,
    calls: u64,
}

impl Dropout {
    /// Drops each element with probability `p` in training (inverted scaling); identity in evaluation.
    pub fn new(p: f64, seed: u64) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&p) {
            return Err(invalid(
                "dropout probability",
                format!("{p} is outside [0, 1]"),
            ));
        }
        Ok(Dropout {
            p,
            seed,
            step: 0,
            calls: 0,
        })
    }
}

impl Module for Dropout {
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if mode == Mode::Eval {
            return ops::dropout(x, self.p, false, 0);
        }
        // A distinct, reproducible mask per training step (a second call in one step counts as the
        // next step, as before `set_step` existed).
        let offset = self.calls;
        self.calls += 1;
        ops::dropout_at_step(x, self.p, self.seed, self.step, offset)
    }

    fn parameters(&self) -> Vec<(String, &Tensor)> {
        Vec::new()
    }

    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }

    fn set_step(&mut self, step: u64) {
        self.step = step;
        self.calls = 0;
    }

    fn describe(&self) -> String {
        format!("Dropout(p = {})", self.p)
    }
}
