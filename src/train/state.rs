//! A model's (and optimizer's) state as named tensors, to and from checkpoints.

use std::collections::BTreeMap;

use super::checkpoint::Checkpoint;
use super::error::TrainError;
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

/// The optimizer's state tensors by checkpoint name, plus its metadata entries.
pub fn optimizer_tensors(
    optimizer: &dyn Optimizer,
) -> (Vec<(String, Tensor)>, BTreeMap<String, String>) {
    let state = optimizer.state();
    let tensors = state
        .tensors
        .iter()
        .map(|(n, t)| (format!("{OPTIMIZER_PREFIX}{n}"), t.clone()))
        .collect();
    let meta = BTreeMap::from([
        ("optimizer".to_string(), state.optimizer.clone()),
        ("optimizer_step".to_string(), state.step.to_string()),
        ("optimizer_lr".to_string(), format!("{:e}", state.lr)),
    ]);
    (tensors, meta)
}

/// Restores an optimizer from a checkpoint written with [`optimizer_tensors`].
pub fn restore_optimizer(
    optimizer: &mut dyn Optimizer,
    checkpoint: &Checkpoint,
) -> Result<(), TrainError> {
    let meta = |key: &str| -> Result<&String, TrainError> {
        checkpoint
            .metadata
            .get(key)
            .ok_or_else(|| TrainError::InvalidArgument {
                what: "checkpoint",
                why: format!("has no {key} entry"),
            })
    };
    let parse_err = |key: &str| TrainError::InvalidArgument {
        what: "checkpoint",
        why: format!("{key} is not a number"),
    };
    let state = OptimizerState {
        optimizer: meta("optimizer")?.clone(),
        step: meta("optimizer_step")?
            .parse()
            .map_err(|_| parse_err("optimizer_step"))?,
        lr: meta("optimizer_lr")?
            .parse()
            .map_err(|_| parse_err("optimizer_lr"))?,
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
