//! Learning-rate schedules: the learning rate as a function of the step (or epoch) count, the
//! closed forms of PyTorch's StepLR, CosineAnnealingLR and LinearLR-then-SequentialLR.

use super::Optimizer;
use crate::backend;
use crate::core::error::{invalid, Result};

/// A learning rate for every step or epoch `t = 0, 1, 2, …` (the caller picks the unit and calls
/// [`Schedule::lr_at`] or [`Schedule::apply`] once per unit). Built by the constructors, which
/// validate their arguments; a warm-up can be put in front of any schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule(Kind);

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Constant {
        lr: f64,
    },
    StepDecay {
        base_lr: f64,
        every: u64,
        gamma: f64,
    },
    Cosine {
        base_lr: f64,
        min_lr: f64,
        period: u64,
    },
    Warmup {
        start_factor: f64,
        steps: u64,
        then: Box<Schedule>,
    },
}

const OP: &str = "schedule";

impl Schedule {
    /// `lr` at every `t`.
    pub fn constant(lr: f64) -> Result<Schedule> {
        backend::check_lr(OP, lr)?;
        Ok(Schedule(Kind::Constant { lr }))
    }

    /// Step decay (PyTorch's StepLR): `base_lr · gamma^⌊t / every⌋`, i.e. multiplied by `gamma`
    /// every `every` steps or epochs. `every ≥ 1`, `gamma` finite and > 0.
    pub fn step_decay(base_lr: f64, every: u64, gamma: f64) -> Result<Schedule> {
        backend::check_lr(OP, base_lr)?;
        if every == 0 {
            return Err(invalid("schedule", "step decay: `every` must be ≥ 1"));
        }
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(invalid(
                "schedule",
                format!("step decay: gamma must be finite and > 0, got {gamma}"),
            ));
        }
        Ok(Schedule(Kind::StepDecay {
            base_lr,
            every,
            gamma,
        }))
    }

    /// Cosine annealing from `base_lr` at `t = 0` to `min_lr` at `t = period` (PyTorch's
    /// CosineAnnealingLR closed form): `min + (base − min)·(1 + cos(π·t/period))/2`, then `min_lr`
    /// from `period` on (no restart). `period ≥ 1`, `0 ≤ min_lr ≤ base_lr`.
    pub fn cosine(base_lr: f64, min_lr: f64, period: u64) -> Result<Schedule> {
        backend::check_lr(OP, base_lr)?;
        backend::check_lr(OP, min_lr)?;
        if min_lr > base_lr {
            return Err(invalid(
                "schedule",
                format!("cosine: min_lr {min_lr} is above base_lr {base_lr}"),
            ));
        }
        if period == 0 {
            return Err(invalid("schedule", "cosine: the period must be ≥ 1"));
        }
        Ok(Schedule(Kind::Cosine {
            base_lr,
            min_lr,
            period,
        }))
    }

    /// This schedule after a linear warm-up of `steps` steps (PyTorch's LinearLR followed by the
    /// schedule in a SequentialLR): for `t < steps` the rate is `r0 · (start_factor +
    /// (1 − start_factor)·t/steps)` with `r0` this schedule's first rate (so warm-up from 0 with
    /// `start_factor` 0), and from `t = steps` on it is this schedule at `t − steps`.
    /// `start_factor` in [0, 1], `steps ≥ 1`.
    pub fn with_warmup(self, start_factor: f64, steps: u64) -> Result<Schedule> {
        if !(0.0..=1.0).contains(&start_factor) {
            return Err(invalid(
                "schedule",
                format!("warm-up: start_factor must be in [0, 1], got {start_factor}"),
            ));
        }
        if steps == 0 {
            return Err(invalid("schedule", "warm-up: steps must be ≥ 1"));
        }
        Ok(Schedule(Kind::Warmup {
            start_factor,
            steps,
            then: Box::new(self),
        }))
    }

    /// The learning rate at step or epoch `t`.
    pub fn lr_at(&self, t: u64) -> f64 {
        match &self.0 {
            Kind::Constant { lr } => *lr,
            Kind::StepDecay {
                base_lr,
                every,
                gamma,
            } => {
                let k = t / every;
                base_lr * gamma.powf(k as f64)
            }
            Kind::Cosine {
                base_lr,
                min_lr,
                period,
            } => {
                if t >= *period {
                    return *min_lr;
                }
                let phase = std::f64::consts::PI * t as f64 / *period as f64;
                min_lr + (base_lr - min_lr) * (1.0 + phase.cos()) / 2.0
            }
            Kind::Warmup {
                start_factor,
                steps,
                then,
            } => {
                if t >= *steps {
                    return then.lr_at(t - steps);
                }
                let factor = start_factor + (1.0 - start_factor) * t as f64 / *steps as f64;
                then.lr_at(0) * factor
            }
        }
    }

    /// Sets `optimizer`'s learning rate to the rate at `t`.
    pub fn apply(&self, optimizer: &mut Optimizer, t: u64) -> Result<()> {
        optimizer.set_lr(self.lr_at(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::device::Device;
    use crate::core::error::Error;
    use crate::optim::{Sgd, SgdConfig};
    use crate::tensor::Tensor;
    use crate::testing::assert_close;

    #[track_caller]
    fn invalid(r: Result<Schedule>, what: &str) {
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{what}: expected InvalidArgument, got {r:?}"
        );
    }

    /// base 0.1 × 0.5 every 3 epochs: 0.1 for t = 0..2, 0.05 for 3..5, 0.025 at 6, 0.0125 at 9.
    #[test]
    fn step_decay_schedule_matches_hand_computed_rates() {
        let s = Schedule::step_decay(0.1, 3, 0.5).unwrap();
        let got: Vec<f64> = [0, 1, 2, 3, 5, 6, 9].iter().map(|&t| s.lr_at(t)).collect();
        assert_close(
            &got,
            &[0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.0125],
            1e-17,
            1e-15,
        );
    }

    /// Cosine from 0.1 to 0.01 over 4: min + 0.09·(1 + cos(π·t/4))/2:
    /// t = 0: 0.1; 1: 0.01 + 0.09·0.8535533906 = 0.0868198052; 2: 0.055;
    /// 3: 0.01 + 0.09·0.1464466094 = 0.0231801948; 4 and later: 0.01.
    #[test]
    fn cosine_schedule_matches_hand_computed_rates() {
        let s = Schedule::cosine(0.1, 0.01, 4).unwrap();
        let got: Vec<f64> = (0..7).map(|t| s.lr_at(t)).collect();
        let expected = [0.1, 0.0868198052, 0.055, 0.0231801948, 0.01, 0.01, 0.01];
        assert_close(&got, &expected, 1e-10, 0.0);
    }

    /// Warm-up from 0.25 × over 4 steps into the cosine above:
    /// t = 0..3: 0.1·(0.25 + 0.75·t/4) = 0.025, 0.04375, 0.0625, 0.08125; then the cosine from its
    /// start: t = 4: 0.1, 5: 0.0868198052, 6: 0.055, 8: 0.01. From 0 into a constant 0.2 over 5 steps:
    /// 0, 0.04, 0.08, 0.12, 0.16, then 0.2.
    #[test]
    fn warmup_schedule_matches_hand_computed_rates() {
        let s = Schedule::cosine(0.1, 0.01, 4)
            .unwrap()
            .with_warmup(0.25, 4)
            .unwrap();
        let got: Vec<f64> = [0, 1, 2, 3, 4, 5, 6, 8, 100]
            .iter()
            .map(|&t| s.lr_at(t))
            .collect();
        let expected = [
            0.025,
            0.04375,
            0.0625,
            0.08125,
            0.1,
            0.0868198052,
            0.055,
            0.01,
            0.01,
        ];
        assert_close(&got, &expected, 1e-10, 0.0);
        let s = Schedule::constant(0.2)
            .unwrap()
            .with_warmup(0.0, 5)
            .unwrap();
        let got: Vec<f64> = (0..8).map(|t| s.lr_at(t)).collect();
        assert_close(
            &got,
            &[0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.2, 0.2],
            1e-17,
            1e-15,
        );
        // Warm-up into step decay: the decay counts from the end of the warm-up.
        let s = Schedule::step_decay(0.1, 2, 0.1)
            .unwrap()
            .with_warmup(0.5, 2)
            .unwrap();
        let got: Vec<f64> = (0..7).map(|t| s.lr_at(t)).collect();
        assert_close(
            &got,
            &[0.05, 0.075, 0.1, 0.1, 0.01, 0.01, 0.001],
            1e-17,
            1e-14,
        );
    }

    #[test]
    fn schedule_drives_an_optimizer() {
        let mut w = Tensor::from_vec(vec![1.0_f64], &[1], Device::Cpu).unwrap();
        let mut sgd = Sgd::with_config(&[w.clone()], SgdConfig::default()).unwrap();
        let s = Schedule::step_decay(0.5, 1, 0.5).unwrap();
        // w −= lr·g with g = 1 and lr 0.5, 0.25, 0.125: w = 1 − 0.875 = 0.125.
        for t in 0..3 {
            s.apply(&mut sgd, t).unwrap();
            let g = Tensor::from_vec(vec![1.0_f64], &[1], Device::Cpu).unwrap();
            sgd.step(&mut [&mut w], &[&g]).unwrap();
        }
        assert_eq!(w.to_vec::<f64>().unwrap(), vec![0.125]);
        assert_eq!(sgd.lr(), 0.125);
    }

    #[test]
    fn bad_schedules_are_errors() {
        invalid(Schedule::constant(-1.0), "constant");
        invalid(Schedule::step_decay(0.1, 0, 0.5), "every 0");
        invalid(Schedule::step_decay(0.1, 2, 0.0), "gamma 0");
        invalid(Schedule::step_decay(0.1, 2, f64::NAN), "gamma NaN");
        invalid(Schedule::step_decay(-0.1, 2, 0.5), "negative base");
        invalid(Schedule::cosine(0.1, 0.2, 10), "min above base");
        invalid(Schedule::cosine(0.1, -0.01, 10), "negative min");
        invalid(Schedule::cosine(0.1, 0.0, 0), "period 0");
        let c = Schedule::constant(0.1).unwrap();
        invalid(c.clone().with_warmup(1.5, 3), "start factor");
        invalid(c.clone().with_warmup(-0.1, 3), "start factor");
        invalid(c.with_warmup(0.5, 0), "warm-up steps");
    }
}
