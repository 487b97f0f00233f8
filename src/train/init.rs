//! `kiln train --init FILE`: the weights a fine-tuning run starts from, matched by name onto the
//! model it builds.
//!
//! The file is a kiln checkpoint (its `model.*` tensors; the optimizer's are left out) or a plain
//! safetensors `state_dict` without kiln metadata, as PyTorch writes with
//! `safetensors.torch.save_file(model.state_dict(), path)`. Tensors are matched by name and shape
//! only, so this works for any network whose parameter names follow the file's. Floating-point
//! tensors (f32, f64, f16, bf16) are converted to the model's dtype; integer and boolean tensors
//! (batch norm's int64 `num_batches_tracked`) are not weights and are ignored.
//!
//! The classifier head is found generically ([`find_head`]): with `--reset-head` it keeps the
//! fresh initialization of the model just built (for the data's class count) instead of the
//! file's; without it, a head of another class count is an error that suggests the flag.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::SafeTensors;

use super::error::TrainError;
use super::meta::is_checkpoint_metadata;
use super::state::{check_values, MODEL_PREFIX};
use crate::nn::{saved_float_tensor, Module};
use crate::tensor::Tensor;

/// The floating-point tensors of an init file by model name (f32, on the CPU), and the file.
#[derive(Clone, Debug)]
pub struct InitWeights {
    pub path: PathBuf,
    /// Whether the file is a kiln checkpoint (else a plain `state_dict`).
    pub from_kiln: bool,
    pub tensors: BTreeMap<String, Tensor>,
    /// Names of the non-float tensors that were ignored (e.g. `bn1.num_batches_tracked`).
    pub ignored: Vec<String>,
}

/// The classifier head of a model: the last parameter in parameter order that is a 2-D
/// `[classes, features]` `weight`, and the bias beside it (if the layer has one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub weight: String,
    pub bias: Option<String>,
    pub classes: usize,
}

impl Head {
    fn contains(&self, name: &str) -> bool {
        name == self.weight || self.bias.as_deref() == Some(name)
    }
}

/// The head of `model` (see [`Head`]), or `None` for a model without a 2-D weight.
pub fn find_head(model: &dyn Module) -> Option<Head> {
    let params = model.parameters();
    let (weight, w) = params
        .iter()
        .rev()
        .find(|(name, t)| t.shape().len() == 2 && name.rsplit('.').next() == Some("weight"))?;
    let bias_name = match weight.rsplit_once('.') {
        Some((layer, _)) => format!("{layer}.bias"),
        None => "bias".to_string(),
    };
    let bias = params
        .iter()
        .any(|(n, t)| *n == bias_name && t.shape() == [w.shape()[0]])
        .then_some(bias_name);
    Some(Head {
        weight: weight.clone(),
        bias,
        classes: w.shape()[0],
    })
}

/// Reads the init file at `path`; every error names it.
pub fn read_init_weights(path: &Path) -> Result<InitWeights, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io("reading --init file", path, e))?;
    let not_safetensors = |e: safetensors::SafeTensorError| {
        TrainError::format(
            path,
            format!(
                "--init takes a safetensors file (a kiln checkpoint or a state_dict saved with \
                 safetensors.torch.save_file): {e}"
            ),
        )
    };
    let file = SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let from_kiln = header
        .metadata()
        .as_ref()
        .is_some_and(is_checkpoint_metadata);
    let mut init = InitWeights {
        path: path.to_path_buf(),
        from_kiln,
        tensors: BTreeMap::new(),
        ignored: Vec::new(),
    };
    for (stored, view) in file.tensors() {
        let name = match from_kiln {
            true => match stored.strip_prefix(MODEL_PREFIX) {
                Some(n) => n.to_string(),
                None => continue, // the optimizer's state
            },
            false => stored,
        };
        match saved_float_tensor(&view)? {
            Some(tensor) => {
                init.tensors.insert(name, tensor);
            }
            None => init.ignored.push(name),
        }
    }
    Ok(init)
}

/// What [`apply_init`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    /// Parameters and buffers loaded from the file.
    pub loaded: usize,
    /// The head's tensors left freshly initialized (`--reset-head`).
    pub reset: Vec<String>,
}

fn init_error(init: &InitWeights, why: String) -> TrainError {
    TrainError::format(&init.path, format!("--init: {why}"))
}

/// Writes `init`'s tensors into `model` by name. Every parameter and buffer must be in the file
/// with its shape, and every float tensor of the file must be one of the model's; with
/// `reset_head` the head's tensors ([`find_head`]) keep their fresh values instead. Nothing is
/// written unless every tensor passes.
pub fn apply_init(
    model: &mut dyn Module,
    init: &InitWeights,
    reset_head: bool,
) -> Result<InitReport, TrainError> {
    let head = find_head(model);
    let is_head = |name: &str| head.as_ref().is_some_and(|h| h.contains(name));
    // In model order, so that a head of another class count is reported by its weight.
    let expected = named_tensors(model);
    let names: BTreeSet<&String> = expected.iter().map(|(n, _)| n).collect();
    if let Some(name) = init.tensors.keys().find(|n| !names.contains(n)) {
        return Err(init_error(
            init,
            format!(
                "the file has a tensor {name} (shape {:?}) that the model does not have; the \
                 model's tensors are {}",
                init.tensors[name].shape(),
                listed(expected.iter().map(|(n, _)| n))
            ),
        ));
    }
    let mut loaded = BTreeMap::new();
    let mut reset = Vec::new();
    for (name, current) in &expected {
        let shape = current.shape();
        if reset_head && is_head(name) {
            reset.push(name.clone());
            continue;
        }
        let Some(saved) = init.tensors.get(name) else {
            return Err(init_error(
                init,
                format!(
                    "the model's tensor {name} (shape {shape:?}) is not in the file, which holds {}",
                    listed(init.tensors.keys())
                ),
            ));
        };
        if saved.shape() != shape {
            return Err(init_error(
                init,
                shape_mismatch(name, saved, shape, is_head(name)),
            ));
        }
        check_values(name, saved, saved)?;
        let converted = saved.to_dtype(current.dtype())?;
        loaded.insert(name.clone(), converted.to_device(current.device())?);
    }
    drop(expected);
    let count = loaded.len();
    for (name, p) in model.parameters_mut() {
        if let Some(t) = loaded.remove(&name) {
            *p = t.with_grad();
        }
    }
    for (name, b) in model.buffers_mut() {
        if let Some(t) = loaded.remove(&name) {
            *b = t;
        }
    }
    Ok(InitReport {
        loaded: count,
        reset,
    })
}

fn shape_mismatch(name: &str, saved: &Tensor, shape: &[usize], head: bool) -> String {
    let base = format!(
        "tensor {name} has shape {:?} in the file, and the model's is {shape:?}",
        saved.shape()
    );
    match head {
        true => format!(
            "{base}: the file's classifier head has {} classes and the data has {}; pass \
             --reset-head to start the head afresh for the data's classes",
            saved.shape()[0],
            shape[0]
        ),
        false => format!("{base}: the file holds another network, or the same one for other input channels or widths"),
    }
}

/// Parameters then buffers, by model name.
fn named_tensors(model: &dyn Module) -> Vec<(String, &Tensor)> {
    let mut all = model.parameters();
    all.extend(model.buffers());
    all
}

/// At most 6 names, then how many more.
pub(crate) fn listed<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&String> = names.collect();
    let shown: Vec<&str> = names.iter().take(6).map(|s| s.as_str()).collect();
    match names.len() {
        0 => "none".to_string(),
        n if n > shown.len() => format!("{}, ... ({n} in all)", shown.join(", ")),
        _ => shown.join(", "),
    }
}
