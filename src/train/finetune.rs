//! Fine-tuning: a freshly built model takes the `--init` weights ([`super::init`]) and has its
//! `--freeze` parameters frozen ([`super::freeze`]), and with `--frozen-bn eval` the statistics
//! of the batch norms left without trainable parameters, before the optimizer is built over the
//! rest.

use super::config::TrainConfig;
use super::error::TrainError;
use super::freeze::freeze_with_norms;
use super::init::{apply_init, read_init_weights};
use crate::nn::Module;

/// Applies `config.init` (when `with_init`; a resumed run takes its weights from its checkpoint
/// instead) and then `config.freeze` and `config.frozen_bn` to `model`.
pub fn prepare_finetuning(
    model: &mut dyn Module,
    config: &TrainConfig,
    with_init: bool,
) -> Result<(), TrainError> {
    if let (Some(path), true) = (&config.init, with_init) {
        let init = read_init_weights(path)?;
        apply_init(model, &init, config.reset_head)?;
    }
    if !config.freeze.is_empty() {
        freeze_with_norms(model, &config.freeze, config.frozen_bn)?;
    }
    Ok(())
}
