//! The arithmetic of training steps: f32, or mixed precision: bf16 or f16 activations and matrix
//! products of convolution and linear layers with f32 accumulation, f32 master weights
//! ([`crate::autocast_activations`]), or only the products in 16 bits ([`crate::autocast`]); f16
//! with dynamic loss scaling.

use std::collections::BTreeMap;

use crate::autocast::Mode;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::optim::LossScaler;

/// The precisions `kiln train --precision` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bf16 activations and products, f32 master weights (PyTorch's autocast with bf16).
    Bf16,
    /// f16 activations and products, f32 master weights, dynamic loss scaling.
    F16,
    /// bf16 products only; activations stay f32.
    Bf16Products,
    /// f16 products only (with loss scaling); activations stay f32.
    F16Products,
}

impl Precision {
    pub const NAMES: [&'static str; 5] = ["f32", "bf16", "f16", "bf16-products", "f16-products"];

    pub fn parse(name: &str) -> Result<Precision> {
        Ok(match name {
            "f32" => Precision::F32,
            "bf16" => Precision::Bf16,
            "f16" => Precision::F16,
            "bf16-products" => Precision::Bf16Products,
            "f16-products" => Precision::F16Products,
            other => {
                return Err(invalid(
                    "precision",
                    format!("{other:?}: expected one of {}", Self::NAMES.join(", ")),
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The 16-bit format of the matrix products, if any.
    pub fn format(self) -> Option<DType> {
        self.mode().map(|m| m.format)
    }

    /// The mixed-precision mode of the steps, if any.
    pub fn mode(self) -> Option<Mode> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(Mode::activations(DType::BF16)),
            Precision::F16 => Some(Mode::activations(DType::F16)),
            Precision::Bf16Products => Some(Mode::products(DType::BF16)),
            Precision::F16Products => Some(Mode::products(DType::F16)),
        }
    }

    /// Whether steps need f16's dynamic loss scaling.
    pub fn loss_scaled(self) -> bool {
        self.format() == Some(DType::F16)
    }
}

/// What a run's steps carry from one to the next: the precision, its mixed-precision mode and,
/// for f16, the loss scaler (saved in checkpoints, so a resumed f16 run continues exactly).
#[derive(Clone, Debug, PartialEq)]
pub struct StepPrecision {
    pub precision: Precision,
    pub mode: Option<Mode>,
    pub scaler: Option<LossScaler>,
}

const PRECISION_KEY: &str = "precision";
const SCALE_KEY: &str = "loss_scale";
const GOOD_STEPS_KEY: &str = "loss_scale_good_steps";

impl StepPrecision {
    pub fn new(precision: Precision) -> StepPrecision {
        StepPrecision {
            precision,
            mode: precision.mode(),
            scaler: precision.loss_scaled().then(LossScaler::default),
        }
    }

    /// Plain f32 steps.
    pub fn f32() -> StepPrecision {
        StepPrecision::new(Precision::F32)
    }

    /// Checkpoint metadata entries: the precision and the scaler's state.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let mut entries = vec![(PRECISION_KEY.to_string(), self.precision.name().to_string())];
        if let Some(s) = &self.scaler {
            entries.push((SCALE_KEY.to_string(), format!("{:e}", s.scale())));
            entries.push((GOOD_STEPS_KEY.to_string(), s.good_steps().to_string()));
        }
        entries
    }

    /// Restores the scaler's state from checkpoint metadata written by [`Self::metadata`]. A
    /// checkpoint that names another precision is refused (resuming must continue the same run);
    /// one written before checkpoints named it is accepted, and an f16 run's must then have the
    /// scaler's state.
    pub fn restore(&mut self, meta: &BTreeMap<String, String>) -> Result<()> {
        let wanted = self.precision.name();
        if let Some(saved) = meta.get(PRECISION_KEY).filter(|saved| *saved != wanted) {
            return Err(invalid(
                "precision",
                format!(
                    "the checkpoint was trained with --precision {saved}; resume it with --precision {saved}, not {wanted}"
                ),
            ));
        }
        let Some(scaler) = &mut self.scaler else {
            return Ok(());
        };
        let number = |key: &str| {
            meta.get(key).ok_or_else(|| {
                invalid(
                    "checkpoint",
                    format!(
                        "an {wanted} run's checkpoint needs {key} (was it saved by a run without loss scaling: f32, bf16 or bf16-products?)"
                    ),
                )
            })
        };
        let scale = number(SCALE_KEY)?
            .parse::<f64>()
            .map_err(|e| invalid("checkpoint", format!("{SCALE_KEY}: {e}")))?;
        let good = number(GOOD_STEPS_KEY)?
            .parse::<u64>()
            .map_err(|e| invalid("checkpoint", format!("{GOOD_STEPS_KEY}: {e}")))?;
        scaler.restore(scale, good)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Precision; 5] = [
        Precision::F32,
        Precision::Bf16,
        Precision::F16,
        Precision::Bf16Products,
        Precision::F16Products,
    ];

    #[test]
    fn every_precision_parses_from_its_name_and_only_f16_scales_the_loss() {
        for p in ALL {
            assert_eq!(Precision::parse(p.name()).unwrap(), p);
            assert_eq!(p.loss_scaled(), p.format() == Some(DType::F16), "{p:?}");
        }
        assert_eq!(ALL.map(|p| p.name()), Precision::NAMES);
        let err = Precision::parse("fp16").unwrap_err().to_string();
        assert!(err.contains("f16-products"), "{err}");
    }

    #[test]
    fn a_checkpoint_resumes_only_in_its_own_precision() {
        for saved in ALL {
            let meta: BTreeMap<String, String> =
                StepPrecision::new(saved).metadata().into_iter().collect();
            for wanted in ALL {
                let result = StepPrecision::new(wanted).restore(&meta);
                if wanted == saved {
                    result.unwrap();
                } else {
                    let err = result.unwrap_err().to_string();
                    assert!(
                        err.contains(&format!("--precision {}", saved.name())),
                        "{err}"
                    );
                }
            }
        }
        // A checkpoint from before the precision was recorded: accepted, but an f16 run still
        // needs the scaler's state.
        let old = BTreeMap::new();
        StepPrecision::new(Precision::Bf16).restore(&old).unwrap();
        let err = StepPrecision::new(Precision::F16Products)
            .restore(&old)
            .unwrap_err();
        assert!(err.to_string().contains("loss_scale"), "{err}");
    }
}
