//! The arithmetic of training steps: f32, or mixed precision: bf16 or f16 activations and matrix
//! products of convolution and linear layers with f32 accumulation, f32 master weights
//! ([`crate::autocast_activations`]), or only the products in 16 bits ([`crate::autocast`]); f16
//! with dynamic loss scaling.

use clap::builder::PossibleValue;
use serde::{Deserialize, Serialize};

use crate::autocast::AutocastMode;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::nn::models::parse_value;
use crate::ops::CrossEntropy;
use crate::optim::LossScaler;

/// The precisions `kiln train --precision` accepts, spelled as [`Precision::name`] (on the
/// command line and, renamed to match, in checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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

impl clap::ValueEnum for Precision {
    fn value_variants<'a>() -> &'a [Self] {
        &Precision::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl Precision {
    pub const ALL: [Precision; 5] = [
        Precision::F32,
        Precision::Bf16,
        Precision::F16,
        Precision::Bf16Products,
        Precision::F16Products,
    ];

    pub fn parse(name: &str) -> Result<Precision> {
        parse_value(name, "precision")
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::Bf16Products => "bf16-products",
            Precision::F16Products => "f16-products",
        }
    }

    /// The 16-bit format of the matrix products, if any.
    pub fn format(self) -> Option<DType> {
        self.mode().map(|m| m.format)
    }

    /// The mixed-precision mode of the steps, if any.
    pub fn mode(self) -> Option<AutocastMode> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(AutocastMode::activations(DType::BF16)),
            Precision::F16 => Some(AutocastMode::activations(DType::F16)),
            Precision::Bf16Products => Some(AutocastMode::products(DType::BF16)),
            Precision::F16Products => Some(AutocastMode::products(DType::F16)),
        }
    }

    /// Whether steps need f16's dynamic loss scaling.
    pub fn loss_scaled(self) -> bool {
        self.format() == Some(DType::F16)
    }
}

/// What a run's steps carry from one to the next: the precision, its mixed-precision mode and,
/// for f16, the loss scaler (saved in checkpoints, so a resumed f16 run continues exactly); and
/// the loss the steps minimize.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPrecision {
    pub precision: Precision,
    pub mode: Option<AutocastMode>,
    pub scaler: Option<LossScaler>,
    /// Softmax cross-entropy, with label smoothing and class weights when they are set.
    pub criterion: CrossEntropy,
}

/// The loss scaler's state as a checkpoint keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub scale: f64,
    pub good_steps: u64,
}

impl StepPrecision {
    pub fn new(precision: Precision) -> StepPrecision {
        StepPrecision {
            precision,
            mode: precision.mode(),
            scaler: precision.loss_scaled().then(LossScaler::default),
            criterion: CrossEntropy::default(),
        }
    }

    /// The same steps minimizing `criterion`.
    pub fn with_criterion(self, criterion: CrossEntropy) -> StepPrecision {
        StepPrecision { criterion, ..self }
    }

    /// Plain f32 steps.
    pub fn f32() -> StepPrecision {
        StepPrecision::new(Precision::F32)
    }

    /// The loss scaler's state, for a checkpoint (f16 runs only).
    pub fn scaler_state(&self) -> Option<ScalerState> {
        self.scaler.as_ref().map(|s| ScalerState {
            scale: s.scale(),
            good_steps: s.good_steps(),
        })
    }

    /// Restores the scaler's state saved by a run in `saved` precision. A checkpoint of another
    /// precision is refused (resuming must continue the same run); one written before
    /// checkpoints named it (`None`) is accepted, and an f16 run's must then have the scaler's
    /// state.
    pub fn restore(&mut self, saved: Option<Precision>, state: Option<ScalerState>) -> Result<()> {
        let wanted = self.precision.name();
        if let Some(saved) = saved.filter(|saved| *saved != self.precision) {
            let saved = saved.name();
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
        let state = state.ok_or_else(|| {
            invalid(
                "checkpoint",
                format!(
                    "an {wanted} run's checkpoint needs loss_scale and its good steps (was it saved by a run without loss scaling: f32, bf16 or bf16-products?)"
                ),
            )
        })?;
        scaler.restore(state.scale, state.good_steps)
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
        assert_eq!(ALL, Precision::ALL);
        assert_eq!(
            ALL.map(|p| p.name()),
            ["f32", "bf16", "f16", "bf16-products", "f16-products"]
        );
        for p in ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()), "checkpoints spell it so");
        }
        let err = Precision::parse("fp16").unwrap_err().to_string();
        assert!(err.contains("f16-products"), "{err}");
    }

    #[test]
    fn a_checkpoint_resumes_only_in_its_own_precision() {
        for saved in ALL {
            let state = StepPrecision::new(saved).scaler_state();
            for wanted in ALL {
                let result = StepPrecision::new(wanted).restore(Some(saved), state);
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
        StepPrecision::new(Precision::Bf16)
            .restore(None, None)
            .unwrap();
        let err = StepPrecision::new(Precision::F16Products)
            .restore(None, None)
            .unwrap_err();
        assert!(err.to_string().contains("loss_scale"), "{err}");
    }
}
