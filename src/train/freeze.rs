//! `kiln train --freeze PATTERN`: parameters whose names match a glob pattern (`layer1.*`,
//! `features.*`, `0.weight`) are frozen: they are detached from the tape, so backward records
//! nothing for them and computes no gradient, and the optimizer holds no state for them.
//!
//! `--frozen-bn` says what a batch norm whose weight and bias are both frozen does in training:
//! by default ([`FrozenBn::Eval`]) it normalizes with its running statistics and keeps them, as
//! torchvision's `FrozenBatchNorm2d` or `module.eval()` on the frozen layers; [`FrozenBn::Train`]
//! is PyTorch's plain `requires_grad=False` (batch statistics, running statistics updated).

use glob::Pattern;

use super::error::TrainError;
use super::init::listed;
use crate::nn::models::parse_value;
use crate::nn::Module;

/// `--frozen-bn`: how a batch norm with all its affine parameters frozen behaves in training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FrozenBn {
    /// Running statistics, left unchanged (evaluation-mode normalization).
    #[default]
    Eval,
    /// Batch statistics, with the running statistics updated (PyTorch's plain behaviour).
    Train,
}

impl FrozenBn {
    pub fn parse(name: &str) -> crate::core::error::Result<FrozenBn> {
        parse_value(name, "frozen-bn")
    }

    pub fn name(self) -> &'static str {
        match self {
            FrozenBn::Eval => "eval",
            FrozenBn::Train => "train",
        }
    }
}

/// [`freeze`], then with [`FrozenBn::Eval`] the statistics of each batch norm left without a
/// trainable parameter are frozen ([`freeze_statistics_of_frozen_norms`]). Returns the frozen
/// parameter names and how many batch norms keep their statistics.
pub fn freeze_with_norms(
    model: &mut dyn Module,
    patterns: &[String],
    frozen_bn: FrozenBn,
) -> Result<(Vec<String>, usize), TrainError> {
    let frozen = freeze(model, patterns)?;
    let norms = match frozen_bn {
        FrozenBn::Eval => freeze_statistics_of_frozen_norms(model),
        FrozenBn::Train => 0,
    };
    Ok((frozen, norms))
}

/// Freezes the statistics of every batch norm whose affine parameters are all frozen (detached,
/// as [`freeze`] leaves them): it normalizes with its running statistics in training too and
/// leaves them unchanged (torchvision's `FrozenBatchNorm2d`); the others keep or return to batch
/// statistics. Returns how many are frozen.
pub fn freeze_statistics_of_frozen_norms(model: &mut dyn Module) -> usize {
    let mut frozen = 0;
    for norm in model.batch_norms_mut() {
        let fixed = !norm.inner.gamma.needs_grad() && !norm.inner.beta.needs_grad();
        norm.freeze_statistics(fixed);
        frozen += usize::from(fixed);
    }
    frozen
}

/// The parameters of `model` that match none of `patterns` stay trainable; the others are
/// detached. Returns the frozen names. A bad pattern, or one that matches no parameter, is an
/// error naming it (and, for the latter, a few of the model's names).
pub fn freeze(model: &mut dyn Module, patterns: &[String]) -> Result<Vec<String>, TrainError> {
    let compiled = compile(patterns)?;
    let names: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    for (text, pattern) in patterns.iter().zip(&compiled) {
        if !names.iter().any(|n| pattern.matches(n)) {
            return Err(TrainError::invalid(
                "--freeze",
                format!(
                    "pattern {text:?} matches none of the model's parameters, which are {}",
                    listed(names.iter())
                ),
            ));
        }
    }
    let mut frozen = Vec::new();
    for (name, p) in model.parameters_mut() {
        if compiled.iter().any(|pattern| pattern.matches(&name)) {
            *p = p.detach();
            frozen.push(name);
        }
    }
    if frozen.len() == names.len() {
        return Err(TrainError::invalid(
            "--freeze",
            format!(
                "the patterns {patterns:?} freeze all {} parameters, leaving nothing to train",
                names.len()
            ),
        ));
    }
    Ok(frozen)
}

fn compile(patterns: &[String]) -> Result<Vec<Pattern>, TrainError> {
    patterns
        .iter()
        .map(|p| {
            Pattern::new(p).map_err(|e| {
                TrainError::invalid("--freeze", format!("{p:?} is not a glob pattern: {e}"))
            })
        })
        .collect()
}

/// Whether a parameter trains: frozen ones are detached ([`freeze`]), trainable ones are leaves.
pub(crate) fn trains(param: &crate::tensor::Tensor) -> bool {
    param.needs_grad()
}
