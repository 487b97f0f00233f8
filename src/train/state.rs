//! A model's (and optimizer's) state as named tensors, to and from checkpoints.

use std::collections::BTreeMap;

use super::checkpoint::Checkpoint;
use super::error::TrainError;
use super::meta::TrainingState;
use super::precision::StepPrecision;
use crate::core::device::Device;
use crate::core::dtype::DType;
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
/// parameter and buffer must be present with its shape, a float dtype and finite values;
/// parameters stay gradient leaves, and frozen (detached, `--freeze`) ones stay frozen. Nothing
/// is written unless every tensor passes.
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
        check_values(&key, t, current)?;
        Ok(t.to_dtype(current.dtype())?.to_device(current.device())?)
    };
    // Every tensor is checked before any is written: a refused checkpoint leaves the model as it was.
    let params: Vec<Tensor> = (model.parameters().into_iter())
        .map(|(name, p)| find(&name, p))
        .collect::<Result<_, _>>()?;
    let buffers: Vec<Tensor> = (model.buffers().into_iter())
        .map(|(name, b)| find(&name, b))
        .collect::<Result<_, _>>()?;
    for ((_, p), saved) in model.parameters_mut().into_iter().zip(params) {
        *p = match p.needs_grad() {
            true => saved.with_grad(),
            false => saved,
        };
    }
    for ((_, b), saved) in model.buffers_mut().into_iter().zip(buffers) {
        *b = saved;
    }
    Ok(())
}

/// A saved parameter or buffer must be floating point (a model's tensors are) and finite: a
/// checkpoint holding NaN or infinite weights comes from a run that diverged, and training or
/// evaluating from it would only report the divergence again.
pub(crate) fn check_values(key: &str, saved: &Tensor, current: &Tensor) -> Result<(), TrainError> {
    let invalid = |why: String| TrainError::InvalidArgument {
        what: "checkpoint",
        why: format!("{key} {why}"),
    };
    let values = match saved.dtype() {
        DType::F32 | DType::BF16 | DType::F16 => {
            let f32s = saved.to_dtype(DType::F32)?.to_vec::<f32>()?;
            f32s.into_iter().map(f64::from).collect()
        }
        DType::F64 => saved.to_vec::<f64>()?,
        other => {
            return Err(invalid(format!(
            "has dtype {other:?}, but the model's tensor is {:?}: it is not one of this model's \
                 parameters or buffers",
            current.dtype()
        )))
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "holds {} at element {i}: the run that saved it diverged (resume from an earlier \
             checkpoint such as best.safetensors, or start a fresh run)",
            values[i]
        )));
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
