//! A model's (and optimizer's) state as named tensors, to and from checkpoints.

use std::collections::BTreeMap;

use super::checkpoint::Checkpoint;
use super::error::TrainError;
use super::meta::TrainingState;
use super::precision::StepPrecision;
use crate::core::device::Device;
use crate::nn::Module;
use crate::optim::{Optimizer, OptimizerState};
use crate::tensor::Tensor;

/// Prefix of model tensors in checkpoints: `model.<PyTorch state_dict name>`.
pub const MODEL_PREFIX: &str = "model.";
/// Prefix of optimizer state tensors in checkpoints.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Parameters and buffers by checkpoint name.
pub fn model_tensors(model: &dyn Module) -> Vec<(String, Tensor)> {
    let params = model.parameters().into_iter();
    let buffers = model.buffers().into_iter();
    params
        .chain(buffers)
        .map(|(n, t)| (format!("{MODEL_PREFIX}{n}"), t.detach()))
        .collect()
}

/// Host copies of a model's parameters and buffers (a snapshot of the best weights).
pub fn snapshot(model: &dyn Module) -> Result<Vec<(String, Tensor)>, TrainError> {
    model_tensors(model)
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(Device::Cpu)?)))
        .collect()
}

/// Writes `tensors` (as from [`model_tensors`] or a checkpoint) into the model, by name. Every
/// parameter and buffer must be present with its shape; parameters stay gradient leaves.
pub fn restore_model(
    model: &mut dyn Module,
    tensors: &[(String, Tensor)],
) -> Result<(), TrainError> {
    let by_name: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let find = |name: &str, current: &Tensor| -> Result<Tensor, TrainError> {
        let key = format!("{MODEL_PREFIX}{name}");
        let t = by_name
            .get(key.as_str())
            .ok_or_else(|| TrainError::InvalidArgument {
                what: "checkpoint",
                why: format!("has no tensor {key}: it was saved from another model"),
            })?;
        if t.shape() != current.shape() {
            return Err(TrainError::InvalidArgument {
                what: "checkpoint",
                why: format!(
                    "{key} has shape {:?}, the model expects {:?}",
                    t.shape(),
                    current.shape()
                ),
            });
        }
        Ok(t.to_dtype(current.dtype())?.to_device(current.device())?)
    };
    for (name, p) in model.parameters_mut() {
        *p = find(&name, p)?.with_grad();
    }
    for (name, b) in model.buffers_mut() {
        *b = find(&name, b)?;
    }
    Ok(())
}

/// The optimizer's state tensors by checkpoint name, and the scalars resuming needs (the
/// optimizer's and the loss scaler's).
pub fn optimizer_tensors(
    optimizer: &Optimizer,
    precision: &StepPrecision,
) -> (Vec<(String, Tensor)>, TrainingState) {
    let state = optimizer.state();
    let tensors = state
        .tensors
        .iter()
        .map(|(n, t)| (format!("{OPTIMIZER_PREFIX}{n}"), t.clone()))
        .collect();
    let training = TrainingState {
        optimizer: state.optimizer.clone(),
        step: state.step,
        lr: state.lr,
        loss_scaler: precision.scaler_state(),
    };
    (tensors, training)
}

/// Restores an optimizer from a checkpoint written with [`optimizer_tensors`]: its tensors from
/// `checkpoint`, its scalars from `training`.
pub fn restore_optimizer(
    optimizer: &mut Optimizer,
    checkpoint: &Checkpoint,
    training: &TrainingState,
) -> Result<(), TrainError> {
    let state = OptimizerState {
        optimizer: training.optimizer.clone(),
        step: training.step,
        lr: training.lr,
        tensors: checkpoint
            .tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix(OPTIMIZER_PREFIX)
                    .map(|s| (s.to_string(), t.clone()))
            })
            .collect(),
    };
    optimizer.load_state(&state)?;
    Ok(())
}
