//! The arithmetic of training steps: f32, or mixed precision: bf16 or f16 activations and matrix
//! products of convolution and linear layers with f32 accumulation, f32 master weights
//! ([`crate::autocast_activations`]), or only the products in 16 bits ([`crate::autocast`]); f16
//! with dynamic loss scaling.

use std::collections::BTreeMap;

use crate::autocast::Mode;
use crate::error::{invalid, Result};
use crate::optim::LossScaler;
use crate::tensor::DType;

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

/// What a run's steps carry from one to the next: the mixed-precision mode and, for f16, the loss
/// scaler (saved in checkpoints, so a resumed f16 run continues exactly).
#[derive(Clone, Debug, PartialEq)]
pub struct StepPrecision {
    pub mode: Option<Mode>,
    pub scaler: Option<LossScaler>,
}

const SCALE_KEY: &str = "loss_scale";
const GOOD_STEPS_KEY: &str = "loss_scale_good_steps";

impl StepPrecision {
    pub fn new(precision: Precision) -> StepPrecision {
        StepPrecision {
            mode: precision.mode(),
            scaler: precision.loss_scaled().then(LossScaler::default),
        }
    }

    /// Plain f32 steps.
    pub fn f32() -> StepPrecision {
        StepPrecision::new(Precision::F32)
    }

    /// Checkpoint metadata entries of the scaler's state.
    pub fn metadata(&self) -> Vec<(String, String)> {
        match &self.scaler {
            Some(s) => vec![
                (SCALE_KEY.to_string(), format!("{:e}", s.scale())),
                (GOOD_STEPS_KEY.to_string(), s.good_steps().to_string()),
            ],
            None => Vec::new(),
        }
    }

    /// Restores the scaler's state from checkpoint metadata written by [`Self::metadata`]; a
    /// checkpoint of an f16 run must have it.
    pub fn restore(&mut self, meta: &BTreeMap<String, String>) -> Result<()> {
        let Some(scaler) = &mut self.scaler else {
            return Ok(());
        };
        let number = |key: &str| {
            meta.get(key).ok_or_else(|| {
                invalid(
                    "checkpoint",
                    format!(
                        "an f16 run's checkpoint needs {key} (was it saved by an f32 or bf16 run?)"
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
