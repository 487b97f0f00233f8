//! Loading a PyTorch `state_dict` saved with `safetensors.torch.save_file(model.state_dict(), path)`
//! into a network by name: every parameter and buffer must be there with its shape, and nothing
//! else may be (except batch norm's int64 `num_batches_tracked`, which kiln does not keep).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::module::Module;
use crate::core::error::{invalid, Result};
use crate::tensor::Tensor;

/// torchvision's batch-norm counter: saved beside each running mean, ignored on load.
const BATCHES_TRACKED: &str = "num_batches_tracked";

/// Replaces every parameter and buffer of `net` with the tensor of the same name in the
/// safetensors file at `path` (converted to the tensor's dtype, on its device). The error names
/// the file and each missing, unexpected, mis-shaped or non-float tensor; then `net` is unchanged.
pub fn load_state_dict(net: &mut dyn Module, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path)
        .map_err(|e| invalid("state_dict file", format!("{}: {e}", path.display())))?;
    load_state_dict_bytes(net, &bytes, path)
}

/// [`load_state_dict`] of a file already read: `bytes` are its contents, `path` names it in errors.
pub fn load_state_dict_bytes(net: &mut dyn Module, bytes: &[u8], path: &Path) -> Result<()> {
    let shown = path.display();
    let file = SafeTensors::deserialize(bytes).map_err(|e| {
        invalid(
            "state_dict file",
            format!("{shown} is not a safetensors file: {e}"),
        )
    })?;
    let saved: BTreeMap<String, TensorView<'_>> = file.tensors().into_iter().collect();
    let expected: BTreeMap<String, Vec<usize>> = (net.parameters().into_iter())
        .chain(net.buffers())
        .map(|(name, t)| (name, t.shape().to_vec()))
        .collect();
    check_names_and_shapes(&expected, &saved).map_err(|why| {
        invalid(
            "state_dict file",
            format!("{shown} does not fit the network: {why}"),
        )
    })?;
    let mut loaded: BTreeMap<String, Tensor> = BTreeMap::new();
    for name in expected.keys() {
        let tensor = saved_float_tensor(&saved[name])?
            .ok_or_else(|| invalid("state_dict tensor", format!("{name} is not a float")))?;
        loaded.insert(name.clone(), tensor);
    }
    for (name, p) in net.parameters_mut() {
        *p = converted(&loaded[&name], p)?.with_grad();
    }
    for (name, b) in net.buffers_mut() {
        *b = converted(&loaded[&name], b)?;
    }
    Ok(())
}

/// Every problem at once: missing, unexpected, mis-shaped and non-float tensors.
fn check_names_and_shapes(
    expected: &BTreeMap<String, Vec<usize>>,
    saved: &BTreeMap<String, TensorView<'_>>,
) -> std::result::Result<(), String> {
    let missing: Vec<&str> = expected
        .keys()
        .filter(|n| !saved.contains_key(*n))
        .map(String::as_str)
        .collect();
    let running_means: BTreeSet<&str> = expected
        .keys()
        .filter_map(|n| n.strip_suffix("running_mean"))
        .collect();
    let unexpected: Vec<&str> = saved
        .keys()
        .filter(|n| !expected.contains_key(*n))
        .filter(|n| {
            let counter = n.strip_suffix(BATCHES_TRACKED);
            !counter.is_some_and(|prefix| running_means.contains(prefix))
        })
        .map(String::as_str)
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing {}", listed(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("unexpected {}", listed(&unexpected)));
    }
    for (name, shape) in expected {
        let Some(view) = saved.get(name) else {
            continue;
        };
        if view.shape() != shape.as_slice() {
            problems.push(format!(
                "{name} is {:?} in the file but {shape:?} in the network",
                view.shape()
            ));
        } else if float_dtype(view.dtype()).is_none() {
            problems.push(format!(
                "{name} is {:?}, not a floating-point tensor",
                view.dtype()
            ));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("; ")),
    }
}

/// At most eight names, then how many more.
fn listed(names: &[&str]) -> String {
    let shown: Vec<&str> = names.iter().take(8).copied().collect();
    let more = names.len().saturating_sub(shown.len());
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{} tensor(s): {}{tail}", names.len(), shown.join(", "))
}

fn float_dtype(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 => Some(4),
        Dtype::F64 => Some(8),
        Dtype::F16 | Dtype::BF16 => Some(2),
        _ => None,
    }
}

/// A saved floating-point tensor (f32, f64, f16 or bf16) as an f32 CPU tensor; `None` for integer
/// and boolean tensors (batch norm's `num_batches_tracked`), which are not weights.
pub fn saved_float_tensor(view: &TensorView<'_>) -> Result<Option<Tensor>> {
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        (data.chunks_exact(N))
            .map(|c| f(c.try_into().expect("chunks of N bytes")))
            .collect()
    }
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => each(data, f32::from_le_bytes),
        Dtype::F64 => each(data, |b| f64::from_le_bytes(b) as f32),
        Dtype::F16 => each(data, |b| half::f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => each(data, |b| half::bf16::from_le_bytes(b).to_f32()),
        _ => return Ok(None),
    };
    Tensor::from_vec(values, view.shape(), crate::core::device::Device::Cpu).map(Some)
}

/// `saved` in `like`'s dtype, on its device.
fn converted(saved: &Tensor, like: &Tensor) -> Result<Tensor> {
    saved.to_dtype(like.dtype())?.to_device(like.device())
}
