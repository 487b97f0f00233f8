//! Checkpoints in the safetensors format, which PyTorch reads with
//! `safetensors.torch.load_file(path)`: tensors under the names given, standard dtypes (F32, F64,
//! I32, U8), little-endian, plus a string-to-string metadata map. Saving is atomic.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};

use super::atomic::write_atomically;
use super::TrainError;
use crate::{DType, Device, Tensor};

/// A loaded checkpoint: tensors on the CPU with their saved dtypes, sorted by name, and metadata.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The tensor saved under `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// One tensor's bytes on the host, little-endian, ready to be written.
struct HostBytes {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &HostBytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn le_bytes<T, const N: usize>(values: Vec<T>, to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    values.into_iter().flat_map(to_le).collect()
}

fn host_bytes(tensor: &Tensor) -> Result<HostBytes, TrainError> {
    let (dtype, bytes) = match tensor.dtype() {
        DType::F32 => (
            Dtype::F32,
            le_bytes(tensor.to_vec::<f32>()?, f32::to_le_bytes),
        ),
        DType::F64 => (
            Dtype::F64,
            le_bytes(tensor.to_vec::<f64>()?, f64::to_le_bytes),
        ),
        DType::I32 => (
            Dtype::I32,
            le_bytes(tensor.to_vec::<i32>()?, i32::to_le_bytes),
        ),
        DType::U8 => (Dtype::U8, tensor.to_vec::<u8>()?),
        DType::BF16 => (
            Dtype::BF16,
            le_bytes(tensor.to_vec::<half::bf16>()?, half::bf16::to_le_bytes),
        ),
        DType::F16 => (
            Dtype::F16,
            le_bytes(tensor.to_vec::<half::f16>()?, half::f16::to_le_bytes),
        ),
    };
    Ok(HostBytes {
        dtype,
        shape: tensor.shape().to_vec(),
        bytes,
    })
}

/// Writes `tensors` (on any device) and `metadata` to `path` in the safetensors format, atomically:
/// the data goes to a temporary file in the same directory, is fsynced, and is renamed over `path`.
/// On any error an existing file at `path` is left as it was.
///
/// Names must be unique, non-empty and not `__metadata__`.
pub fn save_checkpoint(
    path: impl AsRef<Path>,
    tensors: &[(String, &Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), TrainError> {
    let path = path.as_ref();
    let mut seen = HashSet::new();
    for (name, _) in tensors {
        if name.is_empty() || name == "__metadata__" {
            return Err(TrainError::invalid(
                "checkpoint tensor name",
                format!("{name:?} cannot name a tensor in {}", path.display()),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(TrainError::invalid(
                "checkpoint tensor names",
                format!("{name:?} appears twice (saving {})", path.display()),
            ));
        }
    }
    // Everything is copied to the host before the file is touched: a device error cannot leave a
    // partial file behind.
    let host: Vec<(&str, HostBytes)> = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), host_bytes(t)?)))
        .collect::<Result<_, TrainError>>()?;
    let info = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>()
    });
    let bytes = safetensors::serialize(host.iter().map(|(n, h)| (*n, h)), info)
        .map_err(|e| TrainError::format(path, format!("cannot encode the checkpoint: {e}")))?;
    write_atomically(path, |w| w.write_all(&bytes))
}

/// Reads a checkpoint written by [`save_checkpoint`] (or by PyTorch's
/// `safetensors.torch.save_file`, for the dtypes kiln has). Tensors come back on the CPU with their
/// saved dtypes, sorted by name. Missing, truncated or corrupt files are errors naming the path.
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint, TrainError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| TrainError::io("reading checkpoint", path, e))?;
    checkpoint_from_bytes(&bytes, path)
}

/// [`load_checkpoint`] of a file already read: `bytes` are its contents, `path` names it in errors.
pub(crate) fn checkpoint_from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint, TrainError> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| corrupt(path, bytes, e))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(path, bytes, e))?;
    let metadata = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut tensors = Vec::with_capacity(file.len());
    for (name, view) in file.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let tensor = match view.dtype() {
            Dtype::F32 => Tensor::from_vec(from_le(data, f32::from_le_bytes), &shape, Device::Cpu),
            Dtype::F64 => Tensor::from_vec(from_le(data, f64::from_le_bytes), &shape, Device::Cpu),
            Dtype::I32 => Tensor::from_vec(from_le(data, i32::from_le_bytes), &shape, Device::Cpu),
            Dtype::U8 => Tensor::from_vec(data.to_vec(), &shape, Device::Cpu),
            Dtype::BF16 => Tensor::from_vec(
                from_le(data, half::bf16::from_le_bytes),
                &shape,
                Device::Cpu,
            ),
            Dtype::F16 => Tensor::from_vec(
                from_le(data, half::f16::from_le_bytes),
                &shape,
                Device::Cpu,
            ),
            other => {
                return Err(TrainError::format(
                    path,
                    format!(
                        "tensor {name:?} has dtype {other:?}; kiln reads F32, F64, I32, U8, BF16 and F16 \
                         (convert it before saving, e.g. `t.float()` in PyTorch)"
                    ),
                ))
            }
        }?;
        tensors.push((name, tensor));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Checkpoint { tensors, metadata })
}

fn from_le<T, const N: usize>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from(a)
        })
        .collect()
}

fn corrupt(path: &Path, bytes: &[u8], e: SafeTensorError) -> TrainError {
    let hint = match e {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            " (is the file truncated?)".to_string()
        }
        SafeTensorError::MetadataIncompleteBuffer => data_length_hint(bytes),
        _ => String::new(),
    };
    TrainError::format(
        path,
        format!(
            "not a valid safetensors checkpoint ({} bytes): {e}{hint}",
            bytes.len()
        ),
    )
}

/// Where the tensor data the header describes ends, against the file's length: the file is
/// truncated, or has bytes after the data. Empty when the header itself cannot be read.
fn data_length_hint(bytes: &[u8]) -> String {
    let Some(expected) = described_length(bytes) else {
        return String::new();
    };
    let len = bytes.len() as u64;
    if len < expected {
        format!(" (the header describes {expected} bytes: the file is truncated)")
    } else if len > expected {
        format!(
            " (the header describes {expected} bytes: {} trailing bytes follow the data)",
            len - expected
        )
    } else {
        String::new()
    }
}

/// The file length a safetensors header describes: 8 bytes of header length, the JSON header,
/// and the data up to the largest end offset of its tensors.
fn described_length(bytes: &[u8]) -> Option<u64> {
    let header_len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8u64.checked_add(header_len)?;
    let json = bytes.get(8..usize::try_from(end).ok()?)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json).ok()?;
    let data_end = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    end.checked_add(data_end)
}
