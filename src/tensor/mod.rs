//! `Tensor`: a raw tensor (shape, dtype, storage; see `backend::RawTensor`) plus its place on the
//! tape. Everything a raw tensor offers (`shape`, `to_vec`, ...) is reachable through `Deref`; the
//! methods here are the ones the tape changes: a tracked `reshape` and `to_device`, gradients
//! (`with_grad`, `detach`, `backward`), and [`record`], which ops call to put their result on the
//! tape. Tensors are values: cloning shares the storage.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use ndarray::ArrayD;

mod gradients;

pub use gradients::Gradients;

use crate::autograd::{self, BackwardRule, Node};
use crate::backend::{self, RawTensor};
use crate::core::device::Device;
use crate::core::dtype::{DType, Element};
use crate::core::error::{invalid, Result};

pub use crate::backend::TensorId;

/// An n-dimensional array on a device, with its place in the autograd graph. Images are NCHW.
#[derive(Clone)]
pub struct Tensor {
    raw: RawTensor,
    /// Where this tensor sits in the autograd graph; `None` when no gradient flows through it.
    grad: Option<Arc<Node>>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({:?}, {:?}, {})",
            self.shape(),
            self.dtype(),
            self.device()
        )
    }
}

/// A tensor is a raw tensor with a tape node: every primitive (`backend::*`) takes `&Tensor` as
/// the raw tensor it holds.
impl Deref for Tensor {
    type Target = RawTensor;
    fn deref(&self) -> &RawTensor {
        &self.raw
    }
}

/// In-place updates (optimizer steps) change the values, never the tape node.
impl DerefMut for Tensor {
    fn deref_mut(&mut self) -> &mut RawTensor {
        &mut self.raw
    }
}

impl AsRef<RawTensor> for Tensor {
    fn as_ref(&self) -> &RawTensor {
        &self.raw
    }
}

/// A primitive's result as a tensor that needs no gradient.
impl From<RawTensor> for Tensor {
    fn from(raw: RawTensor) -> Tensor {
        Tensor { raw, grad: None }
    }
}

impl Tensor {
    /// A tensor holding `data` in row-major order.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize], device: Device) -> Result<Tensor> {
        RawTensor::from_vec(data, shape, device).map(Tensor::from)
    }

    pub fn from_slice<T: Element>(data: &[T], shape: &[usize], device: Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        RawTensor::zeros(shape, dtype, device).map(Tensor::from)
    }

    /// Standard normal samples scaled by `std` (finite, ≥ 0), reproducible from `seed`.
    pub fn randn(shape: &[usize], std: f32, seed: u64, device: Device) -> Result<Tensor> {
        RawTensor::randn(shape, std, seed, device).map(Tensor::from)
    }

    /// Uniform samples in `[low, high)`, reproducible from `seed`.
    pub fn uniform(
        shape: &[usize],
        low: f32,
        high: f32,
        seed: u64,
        device: Device,
    ) -> Result<Tensor> {
        RawTensor::uniform(shape, low, high, seed, device).map(Tensor::from)
    }

    /// Copies an ndarray into a tensor on `device`.
    pub fn from_ndarray<T: Element>(array: &ArrayD<T>, device: Device) -> Result<Tensor> {
        RawTensor::from_ndarray(array, device).map(Tensor::from)
    }

    /// The raw tensor (values without the tape node).
    pub fn raw(&self) -> &RawTensor {
        &self.raw
    }

    pub fn into_raw(self) -> RawTensor {
        self.raw
    }

    /// The same data under another shape with as many elements (storage is shared).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let reshaped = self.raw.reshape(shape)?;
        let input_shape = self.shape().to_vec();
        Ok(record("reshape", &[self], reshaped, || {
            move |dy: &RawTensor| Ok(vec![Some(dy.reshape(&input_shape)?)])
        }))
    }

    /// A copy on `device` (the same tensor, shared, when it is already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let moved = self.raw.to_device(device)?;
        let from = self.device();
        Ok(record("to_device", &[self], moved, || {
            move |dy: &RawTensor| Ok(vec![Some(dy.to_device(from)?)])
        }))
    }

    /// Converts to `dtype`: f32 ⇄ bf16/f16 on every device, f32 ⇄ f64 on the CPU (the gradient
    /// checks run in f64); other pairs are an error. Untracked, as [`crate::backend::cast`];
    /// `ops::cast` is the tracked one.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        self.raw.to_dtype(dtype).map(Tensor::from)
    }

    /// This tensor as a leaf of the autograd graph: `backward` reports its gradient.
    pub fn with_grad(self) -> Tensor {
        let node = autograd::leaf(self.id());
        Tensor {
            grad: Some(node),
            ..self
        }
    }

    /// Whether gradients flow through this tensor (it is a leaf or the result of recorded ops).
    pub fn needs_grad(&self) -> bool {
        self.grad.is_some()
    }

    /// The same values cut off from the autograd graph.
    pub fn detach(&self) -> Tensor {
        Tensor::from(self.raw.clone())
    }

    /// Gradients of this one-element tensor (a loss) with respect to every leaf it depends on.
    pub fn backward(&self) -> Result<Gradients> {
        let mut grads = Gradients::new();
        self.backward_into(&mut grads)?;
        Ok(grads)
    }

    /// Like [`Tensor::backward`], adding into `grads` (gradient accumulation over several passes).
    /// Each graph can be walked once: its saved activations are freed as backward uses them.
    pub fn backward_into(&self, grads: &mut Gradients) -> Result<()> {
        let root = self.backward_root()?;
        let seed = backend::full_like(self, self.shape(), 1.0)?;
        autograd::backward(root, seed, |id, g| grads.accumulate(id, g))
    }

    /// Like [`Tensor::backward`], and `ready(id, gradient)` is called once for each leaf as soon
    /// as its gradient is final (every op that used it has run its backward rule), while the
    /// rest of the backward pass is still to run: a data-parallel step starts all-reducing a
    /// bucket of gradients there. The leaves are reported in the order their gradients finish.
    pub fn backward_with(
        &self,
        mut ready: impl FnMut(TensorId, &Tensor) -> Result<()>,
    ) -> Result<Gradients> {
        let mut grads = Gradients::new();
        let root = self.backward_root()?;
        let seed = backend::full_like(self, self.shape(), 1.0)?;
        autograd::backward(root, seed, |id, g| {
            grads.accumulate(id, g)?;
            match grads.by_id(id) {
                Some(total) => ready(id, total),
                None => Err(crate::Error::Internal(
                    "a reported gradient went missing".into(),
                )),
            }
        })?;
        Ok(grads)
    }

    /// The tape node backward starts from: this one-element tensor's (a loss).
    fn backward_root(&self) -> Result<&Arc<Node>> {
        if self.numel() != 1 {
            return Err(invalid(
                "backward",
                format!("needs a one-element loss, got shape {:?}", self.shape()),
            ));
        }
        self.grad.as_ref().ok_or_else(|| {
            invalid(
                "backward",
                "the loss does not depend on any tensor that requires gradients",
            )
        })
    }
}

/// Whether an op over `inputs` must be recorded.
pub fn needs_grad(inputs: &[&Tensor]) -> bool {
    autograd::is_grad_enabled() && inputs.iter().any(|t| t.grad.is_some())
}

/// `output` as the result of `op` over `inputs`: on the tape when any input needs gradients.
/// `rule` builds the backward rule only then, so a forward pass that records nothing keeps
/// nothing alive.
pub fn record<F>(
    op: &'static str,
    inputs: &[&Tensor],
    output: impl Into<Tensor>,
    rule: impl FnOnce() -> F,
) -> Tensor
where
    F: FnOnce(&RawTensor) -> Result<Vec<Option<RawTensor>>> + Send + Sync + 'static,
{
    let rule = || -> BackwardRule { Box::new(rule()) };
    attach(op, inputs, output.into(), Some(rule))
}

/// Records an op that has no backward rule: backward through it fails with an error naming it.
pub fn record_without_rule(
    op: &'static str,
    inputs: &[&Tensor],
    output: impl Into<Tensor>,
) -> Tensor {
    attach(op, inputs, output.into(), None::<fn() -> BackwardRule>)
}

fn attach(
    op: &'static str,
    inputs: &[&Tensor],
    output: Tensor,
    rule: Option<impl FnOnce() -> BackwardRule>,
) -> Tensor {
    if !needs_grad(inputs) {
        return output;
    }
    let parents = inputs.iter().map(|t| t.grad.clone()).collect();
    let node = autograd::op_node(op, parents, rule.map(|r| r()));
    Tensor {
        grad: Some(node),
        ..output
    }
}
