//! Training steps replayed from a CUDA graph: the whole step (forward, loss, backward, optimizer
//! update, the loss and correct count) captured once and then launched as one graph per batch, so
//! a small network's step no longer pays one launch per kernel.
//!
//! ```no_run
//! # use kiln::nn::{Architecture, Module};
//! # use kiln::optim::Sgd;
//! # use kiln::train::{CapturedStep, StepPrecision};
//! # use kiln::{Device, Tensor};
//! # fn batches() -> Vec<(Tensor, Tensor)> { Vec::new() }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::Cuda(0);
//! let mut model = Architecture::LeNet5.build(1, 28, 10, 1, device)?;
//! let params: Vec<Tensor> = model.parameters().into_iter().map(|(_, t)| t.clone()).collect();
//! let mut sgd = Sgd::new(&params, 0.01, 0.9, 0.0)?;
//! drop(params); // the optimizer updates the model's tensors in place: share them with nothing
//! let mut graph: Option<CapturedStep> = None;
//! for (step, (images, labels)) in batches().into_iter().enumerate() {
//!     let step = step as u64;
//!     let (loss, correct) = match &mut graph {
//!         Some(g) if g.can_replay(&model, &sgd, &images, &labels) => {
//!             g.replay(&mut model, &mut sgd, &images, &labels, step)?
//!         }
//!         _ => {
//!             let precision = StepPrecision::f32();
//!             let (g, result) =
//!                 CapturedStep::capture(&mut model, &mut sgd, &images, &labels, step, &precision)?;
//!             graph = Some(g);
//!             result
//!         }
//!     };
//! }
//! # Ok(()) }
//! ```
//!
//! What a replay relies on (see src/cuda/graph.rs for the device side):
//! - the batch is copied into the graph's own input buffers, and it must have the captured shape
//!   (a last, smaller batch takes an eager step instead: [`CapturedStep::can_replay`]);
//! - the parameters, batch-norm statistics and optimizer state are updated in place, and must
//!   still be the buffers the graph was captured with, each owned by its tensor alone (a tensor
//!   that shares one would see the replay's update), and the model and optimizer must be the same
//!   objects (the graph holds their hyper-parameters): [`CapturedStep::can_replay`] checks all
//!   three, and a changed model or optimizer needs a new capture. Hyper-parameters changed in place
//!   after the capture (a batch-norm layer's public `momentum`) are not seen: capture again. A
//!   custom [`Module`] must report every device tensor it updates or replaces through
//!   `parameters` or `buffers`, or a graph cannot see the change;
//! - the learning rate, Adam's bias corrections and the dropout step go to device memory before
//!   each replay (the optimizer's graph scalars: only the built-in update rules' kernels read
//!   them from there, so an optimizer of a rule written outside kiln is not captured).
//! - the graph holds the kernels its capture's [`KernelPolicy`] chose: under another policy (a
//!   [`crate::cuda::with_kernel_policy`] scope, a new context default) [`CapturedStep::can_replay`]
//!   says no and [`CapturedStep::replay`] is an error, so the caller captures again.
//!
//! Differences from [`super::train_step_with`]: a non-finite loss is found after the update (the
//! graph cannot stop half-way), so the weights in memory have taken that step when the error comes
//! back (the last checkpoint on disk is untouched); f16's loss scaler needs the host every step and
//! is not supported.

use crate::autocast::AutocastMode;
use crate::backend;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::cuda::{gpu, DeviceGraph, GpuBuffer, KernelPolicy, StepScalars};
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::tensor::Tensor;

use super::trainer::read_checked_stats;
use super::{StepPrecision, TrainError};

/// A training step captured as a CUDA graph, with the buffers it reads and writes.
pub struct CapturedStep {
    graph: DeviceGraph,
    /// The batch the graph reads: each replay copies its batch here first.
    images: Tensor,
    labels: Tensor,
    /// [loss, correct count], written by the graph.
    stats: Tensor,
    /// The [`StepScalars`] the graph's kernels read.
    scalars: GpuBuffer,
    /// Addresses of the parameters, buffers and optimizer state at capture, in order.
    bound: Vec<u64>,
    /// The model and optimizer objects captured (their hyper-parameters are in the graph).
    owners: (usize, usize),
    mode: Option<AutocastMode>,
    classes: usize,
}

impl CapturedStep {
    /// Trains step `step` on `images`/`labels` eagerly (the warm-up, which also sizes the graph's
    /// private memory) and captures the same step's work as a graph for the next batches. Returns
    /// the graph and the warm-up step's (mean loss, correct count).
    pub fn capture(
        model: &mut dyn Module,
        optimizer: &mut Optimizer,
        images: &Tensor,
        labels: &Tensor,
        step: u64,
        precision: &StepPrecision,
    ) -> Result<(CapturedStep, (f64, usize)), TrainError> {
        let device = images.device();
        if device == Device::Cpu {
            return Err(TrainError::invalid(
                "CUDA graph",
                "graphs replay device work; this batch is on the CPU",
            ));
        }
        if precision.scaler.is_some() {
            return Err(TrainError::invalid(
                "CUDA graph",
                "f16 steps need the host each step for their loss scaler; use f32 or bf16",
            ));
        }
        if precision.criterion != crate::ops::CrossEntropy::default() {
            return Err(TrainError::invalid(
                "CUDA graph",
                "label smoothing and class weights read the labels on the host each step; \
                 train without a graph",
            ));
        }
        graph_scalars(optimizer)?;
        let g = gpu(device)?;
        // Own copies, so a replay's copy into them never writes a tensor the caller holds.
        let static_images = Tensor::from(backend::copy(images.detach().to_device(device)?.raw())?);
        let static_labels = Tensor::from(backend::copy(labels.detach().to_device(device)?.raw())?);
        let scalars = g.alloc(std::mem::size_of::<StepScalars>())?;
        let pool = g.new_private_pool();
        let mode = precision.mode;

        // Tensors shared with others (a kept snapshot) are copied now, in the device's own pool,
        // rather than by the warm-up's update, which would place them in the graph's memory.
        for (_, t) in model.parameters_mut() {
            t.make_unique()?;
        }
        for (_, t) in model.buffers_mut() {
            t.make_unique()?;
        }
        for t in optimizer.state_tensors_mut() {
            t.make_unique()?;
        }
        model.set_step(step);
        let warm_up = g.in_private_pool(&pool, || {
            device_step(model, optimizer, &static_images, &static_labels, mode)
        })??;
        let (warm_up, classes) = warm_up;
        let result = read_checked_stats(&warm_up, &static_labels, classes, step)?;
        drop(warm_up);

        let steps = optimizer.steps();
        model.set_step(step); // the dropout layers' per-step call counts start again from 0
        let (graph, (stats, _)) = g.capture(&pool, scalars.address(), || {
            device_step(model, optimizer, &static_images, &static_labels, mode).map_err(|e| match e
            {
                TrainError::Kiln(k) => k,
                other => crate::Error::GraphCapture(other.to_string()),
            })
        })?;
        optimizer.set_steps(steps); // capturing recorded the update without making it
        let captured = CapturedStep {
            graph,
            images: static_images,
            labels: static_labels,
            stats,
            scalars,
            bound: bound_addresses(model, optimizer),
            owners: owners(model, optimizer),
            mode,
            classes,
        };
        Ok((captured, result))
    }

    /// Whether [`CapturedStep::replay`] can take this batch with this model and optimizer: the
    /// batch has the captured shape, dtype and device, the parameters, buffers and optimizer
    /// state are the buffers the graph was captured with, each owned by its tensor alone, and the
    /// device's kernel policy on this thread is the one captured ([`CapturedStep::policy`]). A
    /// caller that captures again when this says no (as `kiln train --cuda-graph` does) follows a
    /// policy change with a new graph.
    pub fn can_replay(
        &self,
        model: &dyn Module,
        optimizer: &Optimizer,
        images: &Tensor,
        labels: &Tensor,
    ) -> bool {
        self.policy_unchanged()
            && self.accepts_batch(images, labels)
            && owners(model, optimizer) == self.owners
            && bound_tensors(model, optimizer).all(|t| !t.storage_is_shared())
            && bound_addresses(model, optimizer) == self.bound
    }

    /// Whether the batch has the captured shape and dtype, on the graph's device or the host.
    pub fn accepts_batch(&self, images: &Tensor, labels: &Tensor) -> bool {
        let same_layout = |a: &Tensor, b: &Tensor| {
            a.shape() == b.shape()
                && a.dtype() == b.dtype()
                && (b.device() == a.device() || b.device() == Device::Cpu)
        };
        same_layout(&self.images, images) && same_layout(&self.labels, labels)
    }

    /// The format of the matrix products the step was captured with, if any.
    pub fn format(&self) -> Option<DType> {
        self.mode.map(|m| m.format)
    }

    /// The kernel policy the step was captured under ([`crate::cuda::KernelPolicy`]): the graph
    /// holds the kernels it chose, so replaying under another policy is an error.
    pub fn policy(&self) -> KernelPolicy {
        self.graph.policy()
    }

    /// Whether this thread's kernel policy for the graph's device is still the captured one.
    fn policy_unchanged(&self) -> bool {
        self.graph.gpu().kernel_policy() == self.graph.policy()
    }

    /// The mixed-precision mode the step was captured with, if any.
    pub fn mode(&self) -> Option<AutocastMode> {
        self.mode
    }

    /// The number of kernel launches and device copies in the graph, where kiln can see it (under
    /// emulation; a real GPU's graph is opaque to kiln).
    pub fn recorded_ops(&self) -> Option<usize> {
        self.graph.recorded_ops()
    }

    /// Trains step `step` on this batch by replaying the graph; returns the batch's mean loss and
    /// correct count (one wait for the device). An error, and nothing done, when
    /// [`CapturedStep::can_replay`] says no.
    pub fn replay(
        &mut self,
        model: &mut dyn Module,
        optimizer: &mut Optimizer,
        images: &Tensor,
        labels: &Tensor,
        step: u64,
    ) -> Result<(f64, usize), TrainError> {
        if !self.policy_unchanged() {
            let now = self.graph.gpu().kernel_policy();
            return Err(TrainError::invalid(
                "CUDA graph replay",
                format!(
                    "the step was captured under kernel policy {} but the policy is now {now}; \
                     capture the step again",
                    self.policy()
                ),
            ));
        }
        if !self.can_replay(model, optimizer, images, labels) {
            return Err(TrainError::invalid(
                "CUDA graph replay",
                "the batch's shape or the model's or optimizer's tensors differ from the captured \
                 step's; capture the step again",
            ));
        }
        model.set_step(step);
        backend::copy_into(&mut self.images, images)?;
        backend::copy_into(&mut self.labels, labels)?;
        let scalars = StepScalars {
            step,
            ..graph_scalars(optimizer)?
        };
        let g = self.graph.gpu().clone();
        g.upload(&[scalars], &mut self.scalars)?;
        self.graph.replay()?;
        optimizer.set_steps(optimizer.steps() + 1);
        read_checked_stats(&self.stats, &self.labels, self.classes, step)
    }
}

/// The optimizer's per-step values as its kernels read them in a replayed graph; an error for an
/// update rule written outside kiln (its kernels take host values, which a graph would replay
/// unchanged).
fn graph_scalars(optimizer: &Optimizer) -> Result<StepScalars, TrainError> {
    optimizer.graph_scalars().ok_or_else(|| {
        TrainError::invalid(
            "CUDA graph",
            format!(
                "the {:?} update rule is not one of kiln's: its kernels would replay the captured \
                 step's learning rate; train it without a graph",
                optimizer.name()
            ),
        )
    })
}

/// One training step with no host round trip: forward (in the mixed-precision `mode`, if any),
/// loss, backward and the optimizer's update; returns [loss, correct count] on the device and the
/// number of classes.
fn device_step(
    model: &mut dyn Module,
    optimizer: &mut Optimizer,
    images: &Tensor,
    labels: &Tensor,
    mode: Option<AutocastMode>,
) -> Result<(Tensor, usize), TrainError> {
    let default = crate::ops::CrossEntropy::default();
    let (logits, loss) = super::trainer::forward_and_loss(model, images, labels, mode, &default)?;
    let classes = logits.shape().get(1).copied().unwrap_or(0);
    let stats = super::trainer::step_stats(&logits, &loss, labels)?;
    drop(logits);
    let grads = loss.backward()?;
    super::trainer::apply_update(model, optimizer, &grads)?;
    Ok((stats, classes))
}

/// Every tensor a replay updates in place: parameters, buffers, optimizer state.
fn bound_tensors<'a>(
    model: &'a dyn Module,
    optimizer: &'a Optimizer,
) -> impl Iterator<Item = &'a Tensor> {
    let params = model.parameters().into_iter().map(|(_, t)| t);
    let buffers = model.buffers().into_iter().map(|(_, t)| t);
    params.chain(buffers).chain(optimizer.state_tensors())
}

/// The addresses of the model and optimizer objects: a graph replays the hyper-parameters (momentum,
/// betas, weight decay, batch-norm momentum) of the ones it was captured with.
fn owners(model: &dyn Module, optimizer: &Optimizer) -> (usize, usize) {
    (
        model as *const dyn Module as *const () as usize,
        optimizer as *const Optimizer as *const () as usize,
    )
}

fn bound_addresses(model: &dyn Module, optimizer: &Optimizer) -> Vec<u64> {
    bound_tensors(model, optimizer)
        .map(|t| t.device_address())
        .collect()
}
