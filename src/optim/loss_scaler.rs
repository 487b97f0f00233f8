//! Dynamic loss scaling for f16 mixed precision (the rule of PyTorch's `GradScaler`): the loss is
//! multiplied by a large scale before the backward pass, so small gradients survive the f16
//! products instead of flushing to zero; the gradients are divided by it again before the update.
//! A step whose gradients overflowed (inf or NaN) is skipped and the scale halved; after
//! `growth_interval` good steps in a row the scale doubles. bf16 needs none of this.

use crate::backend::{self, RawTensor};
use crate::core::error::{invalid, Result};
use crate::tensor::Tensor;

/// The scale and the count of overflow-free steps since it last changed.
#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    scale: f64,
    good_steps: u64,
    growth_interval: u64,
}

impl Default for LossScaler {
    /// PyTorch's defaults: scale 2^16, doubled after 2000 good steps.
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            good_steps: 0,
            growth_interval: 2000,
        }
    }
}

impl LossScaler {
    /// A scaler starting at `scale` (a finite power of two keeps the scaling exact) that doubles
    /// it after `growth_interval` good steps.
    pub fn new(scale: f64, growth_interval: u64) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) || growth_interval == 0 {
            return Err(invalid(
                "loss scaler",
                format!("scale {scale} must be finite and positive, growth interval {growth_interval} at least 1"),
            ));
        }
        Ok(LossScaler {
            scale,
            good_steps: 0,
            growth_interval,
        })
    }

    /// The current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Good steps since the scale last changed (saved with checkpoints for an exact resume).
    pub fn good_steps(&self) -> u64 {
        self.good_steps
    }

    /// Restores a saved state.
    pub fn restore(&mut self, scale: f64, good_steps: u64) -> Result<()> {
        let fresh = LossScaler::new(scale, self.growth_interval)?;
        *self = LossScaler {
            good_steps,
            ..fresh
        };
        Ok(())
    }

    /// The loss to run backward from: `loss · scale`.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        crate::ops::scale(loss, self.scale)
    }

    /// The gradients of a scaled loss divided by the scale, or `None` when any of them is not
    /// finite: then the step must be skipped, and the scale has been halved. Either way the scale
    /// schedule advances by one step.
    pub fn unscale(&mut self, grads: &[&Tensor]) -> Result<Option<Vec<Tensor>>> {
        // g·0 is 0 for finite g and NaN for inf or NaN, so the sum is 0 exactly when all are
        // finite. The per-gradient sums are gathered on the device and read back once.
        let sums = grads
            .iter()
            .map(|g| backend::sum(&backend::affine(g, 0.0, 0.0)?, 1.0))
            .collect::<Result<Vec<_>>>()?;
        let finite = match sums.as_slice() {
            [] => true,
            _ => {
                let refs: Vec<&RawTensor> = sums.iter().collect();
                backend::sum(&backend::concat(&refs, 0)?, 1.0)?.scalar()? == 0.0
            }
        };
        if !finite {
            self.scale /= 2.0;
            self.good_steps = 0;
            return Ok(None);
        }
        let unscaled = grads
            .iter()
            .map(|g| backend::affine(g, 1.0 / self.scale, 0.0).map(Tensor::from))
            .collect::<Result<Vec<_>>>()?;
        self.good_steps += 1;
        if self.good_steps == self.growth_interval {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        Ok(Some(unscaled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    fn t(v: Vec<f32>) -> Tensor {
        let n = v.len();
        Tensor::from_vec(v, &[n], Device::Cpu).unwrap()
    }

    #[test]
    fn finite_gradients_are_divided_by_the_scale() {
        let mut s = LossScaler::new(1024.0, 3).unwrap();
        let (a, b) = (t(vec![1024.0, -2048.0, 3.0]), t(vec![0.5]));
        let out = s.unscale(&[&a, &b]).unwrap().unwrap();
        assert_eq!(
            out[0].to_vec::<f32>().unwrap(),
            vec![1.0, -2.0, 3.0 / 1024.0]
        );
        assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![0.5 / 1024.0]);
        assert_eq!((s.scale(), s.good_steps()), (1024.0, 1));
        let loss = t(vec![0.25]);
        assert_eq!(
            s.scale_loss(&loss).unwrap().to_vec::<f32>().unwrap(),
            vec![256.0]
        );
    }

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale() {
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut s = LossScaler::new(1024.0, 3).unwrap();
            s.unscale(&[&t(vec![1.0])]).unwrap().unwrap();
            let out = s.unscale(&[&t(vec![1.0]), &t(vec![2.0, bad])]).unwrap();
            assert!(out.is_none(), "{bad}");
            assert_eq!((s.scale(), s.good_steps()), (512.0, 0), "{bad}");
        }
    }

    #[test]
    fn the_scale_doubles_after_the_growth_interval() {
        let mut s = LossScaler::new(8.0, 3).unwrap();
        for _ in 0..2 {
            s.unscale(&[&t(vec![1.0])]).unwrap().unwrap();
        }
        assert_eq!(s.scale(), 8.0);
        s.unscale(&[&t(vec![1.0])]).unwrap().unwrap();
        assert_eq!((s.scale(), s.good_steps()), (16.0, 0));
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(LossScaler::new(0.0, 10).is_err());
        assert!(LossScaler::new(f64::INFINITY, 10).is_err());
        assert!(LossScaler::new(2.0, 0).is_err());
        assert!(LossScaler::default().clone().restore(-1.0, 0).is_err());
    }
}
