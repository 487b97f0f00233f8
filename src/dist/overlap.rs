//! Gradients averaged while the backward pass runs (PyTorch DDP's reducer): each bucket is
//! all-reduced as soon as backward has finished all its gradients, overlapping communication
//! with the rest of backward.
//!
//! DDP's rules, kept here:
//! - the buckets are fixed before backward from the parameters' sizes alone ([`buckets`]: reverse
//!   parameter order, the order gradients usually finish in), so they are the same on every rank;
//! - bucket i is launched only once its gradients are all ready *and* buckets 0..i are launched,
//!   so the launch order is identical on every rank even when one rank finishes a gradient early
//!   or the gradients finish out of parameter order (a branch, a residual);
//! - a parameter that gets no gradient in a step (unused: DDP's `find_unused_parameters`)
//!   contributes zeros, filled in at the end of backward on every rank that lacks it, so every
//!   bucket is launched and no rank waits for one that never comes;
//! - [`OverlappedMean::finish`] waits for every bucket: the optimizer step sees the means only.
//!
//! The launch: through the host by the communication thread (comm.rs) on the CPU, by NCCL on
//! kiln's stream for a CUDA model (`--features nccl`: the call returns once queued, so the GPU
//! overlaps it with the backward kernels queued after it), and nothing with one rank.

use std::collections::HashMap;

use super::collectives::ReduceOp;
use super::comm::{submit_all_reduce, PendingReduce};
use super::sync::{buckets, host_values, tensor_like};
use super::world::World;
use crate::backend::{RawTensor, TensorId};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;

/// What one step's reduction did: the evidence that communication started before backward
/// ended, and which parameters were filled with zeros.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlapReport {
    /// The number of buckets.
    pub buckets: usize,
    /// Buckets launched while some parameter's gradient was still to come: communication that
    /// started before backward's last gradient.
    pub launched_before_last_gradient: usize,
    /// Parameter indices in the order their gradients became ready.
    pub ready_order: Vec<usize>,
    /// Parameters that got no gradient: zeros were reduced for them.
    pub unused: Vec<usize>,
}

impl OverlapReport {
    /// Whether the gradients became ready in another order than reverse parameter order.
    pub fn out_of_order(&self) -> bool {
        self.ready_order.windows(2).any(|w| w[0] < w[1])
    }
}

/// How a bucket travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// One rank: the gradients are their own mean.
    Local,
    /// Host buffers, all-reduced by MPI on the communication thread.
    Host,
    /// Device memory, all-reduced by NCCL on kiln's stream.
    #[cfg(feature = "nccl")]
    Nccl,
}

/// A launched bucket.
enum Launched {
    /// The flat sum, pending on the communication thread.
    Host(PendingReduce<f32>),
    /// The means, final (one rank) or queued on the device (NCCL).
    Means(Vec<Tensor>),
}

/// A parameter's place in the reduction.
struct Slot {
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
}

/// One step's gradient mean, fed by backward's gradient-ready hook ([`OverlappedMean::ready`]).
pub struct OverlappedMean {
    world: &'static World,
    slots: Vec<Slot>,
    slot_of: HashMap<TensorId, usize>,
    buckets: Vec<Vec<usize>>,
    bucket_of: Vec<usize>,
    unready: Vec<usize>,
    grads: Vec<Option<Tensor>>,
    launched: Vec<Launched>,
    path: Path,
    /// Whether a bucket is launched as soon as it is ready, or all at [`OverlappedMean::finish`].
    overlap: bool,
    report: OverlapReport,
}

impl OverlappedMean {
    /// A reduction of the gradients of `params` (the trainable parameters, in parameter order)
    /// in buckets of at most `bucket_bytes`.
    pub fn new(world: &'static World, params: &[&Tensor], bucket_bytes: usize) -> Result<Self> {
        let numels: Vec<usize> = params.iter().map(|p| p.numel()).collect();
        let buckets = buckets(&numels, bucket_bytes);
        let mut bucket_of = vec![0; params.len()];
        for (b, bucket) in buckets.iter().enumerate() {
            bucket.iter().for_each(|&i| bucket_of[i] = b);
        }
        let slots = params
            .iter()
            .map(|p| Slot {
                shape: p.shape().to_vec(),
                dtype: p.dtype(),
                device: p.device(),
            })
            .collect();
        Ok(OverlappedMean {
            world,
            slots,
            slot_of: params
                .iter()
                .enumerate()
                .map(|(i, p)| (p.id(), i))
                .collect(),
            unready: buckets.iter().map(Vec::len).collect(),
            report: OverlapReport {
                buckets: buckets.len(),
                ..OverlapReport::default()
            },
            buckets,
            bucket_of,
            grads: vec![None; params.len()],
            launched: Vec::new(),
            path: path(world, params)?,
            overlap: true,
        })
    }

    /// The same reduction with every bucket launched at [`OverlappedMean::finish`], in bucket
    /// order, none during backward: for a backward pass that makes collectives of its own on the
    /// same queue (synchronized batch norm), whose order among the buckets would otherwise depend
    /// on when each rank's gradients became ready (a parameter that gets no gradient on one rank
    /// holds its bucket back to the end there only).
    pub fn launching_at_finish(mut self) -> Self {
        self.overlap = false;
        self
    }

    /// Backward's report that the gradient of the tensor `id` is final. Leaves that are not
    /// among the parameters (an input that requires gradients) are ignored.
    pub fn ready(&mut self, id: TensorId, grad: &Tensor) -> Result<()> {
        let Some(&i) = self.slot_of.get(&id) else {
            return Ok(());
        };
        if self.grads[i].is_some() {
            return Err(Error::Internal(format!(
                "parameter {i}'s gradient was reported twice"
            )));
        }
        self.grads[i] = Some(grad.clone());
        self.report.ready_order.push(i);
        self.unready[self.bucket_of[i]] -= 1;
        match self.overlap {
            true => self.launch_ready(),
            false => Ok(()),
        }
    }

    /// Launches, in bucket order, every bucket whose gradients are all ready.
    fn launch_ready(&mut self) -> Result<()> {
        while self.launched.len() < self.buckets.len() && self.unready[self.launched.len()] == 0 {
            let launched = self.launch(self.launched.len())?;
            self.launched.push(launched);
            let still_to_come = self.unready.iter().any(|&n| n > 0);
            self.report.launched_before_last_gradient += usize::from(still_to_come);
        }
        Ok(())
    }

    fn launch(&self, b: usize) -> Result<Launched> {
        let grads = self.buckets[b]
            .iter()
            .map(|&i| {
                self.grads[i]
                    .as_ref()
                    .ok_or_else(|| Error::Internal("a bucket launched before its gradients".into()))
            })
            .collect::<Result<Vec<&Tensor>>>()?;
        match self.path {
            Path::Local => Ok(Launched::Means(grads.into_iter().cloned().collect())),
            Path::Host => {
                let mut flat = Vec::new();
                for g in grads {
                    flat.extend(host_values(g)?);
                }
                Ok(Launched::Host(submit_all_reduce(
                    self.world,
                    flat,
                    ReduceOp::Sum,
                )?))
            }
            #[cfg(feature = "nccl")]
            Path::Nccl => super::nccl::launch_bucket(&grads).map(Launched::Means),
        }
    }

    /// Ends the step: zeros for every parameter that got no gradient, the remaining buckets
    /// launched, every bucket waited for; the mean gradients in parameter order.
    pub fn finish(mut self) -> Result<(Vec<Tensor>, OverlapReport)> {
        for i in 0..self.slots.len() {
            if self.grads[i].is_none() {
                let slot = &self.slots[i];
                let zeros = RawTensor::zeros(&slot.shape, slot.dtype, slot.device)?;
                self.grads[i] = Some(Tensor::from(zeros));
                self.report.unused.push(i);
                self.unready[self.bucket_of[i]] -= 1;
            }
        }
        self.launch_ready()?;
        let scale = 1.0 / self.world.size() as f32;
        let mut means: Vec<Option<Tensor>> = vec![None; self.slots.len()];
        for (bucket, launched) in self.buckets.iter().zip(self.launched) {
            let bucket_means = match launched {
                Launched::Means(m) => m,
                Launched::Host(pending) => {
                    split_means(&pending.wait()?, bucket, &self.grads, scale)?
                }
            };
            for (&i, mean) in bucket.iter().zip(bucket_means) {
                means[i] = Some(mean);
            }
        }
        let means = means
            .into_iter()
            .map(|m| m.ok_or_else(|| Error::Internal("a gradient in no bucket".into())))
            .collect::<Result<_>>()?;
        Ok((means, self.report))
    }
}

/// A bucket's flat sum cut back into its gradients, each scaled to the mean.
fn split_means(
    sum: &[f32],
    bucket: &[usize],
    grads: &[Option<Tensor>],
    scale: f32,
) -> Result<Vec<Tensor>> {
    let mut rest = sum;
    let mut out = Vec::with_capacity(bucket.len());
    for &i in bucket {
        let like = grads[i]
            .as_ref()
            .ok_or_else(|| Error::Internal("a reduced gradient went missing".into()))?;
        let (mine, tail) = rest.split_at(like.numel());
        rest = tail;
        out.push(tensor_like(mine.iter().map(|v| v * scale).collect(), like)?);
    }
    Ok(out)
}

/// The path every rank takes for gradients like `params` (NCCL where every rank can).
fn path(world: &World, params: &[&Tensor]) -> Result<Path> {
    #[cfg(feature = "nccl")]
    if world.uses_mpi() && super::nccl::usable(world, params)? {
        return Ok(Path::Nccl);
    }
    let _ = params;
    Ok(match world.is_distributed() {
        true => Path::Host,
        false => Path::Local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32]) -> Tensor {
        Tensor::from_vec(values.to_vec(), &[values.len()], Device::Cpu).unwrap()
    }

    /// One rank: buckets of one parameter each (4-byte cap), gradients finishing in the order
    /// 2, 0, 1. Bucket 0 (parameter 2) goes at once; bucket 1 (parameter 1) waits for it, so
    /// parameter 0, ready early, is launched only after parameter 1.
    #[test]
    fn buckets_launch_in_order_as_their_gradients_finish() {
        let world = super::super::world();
        if world.is_distributed() {
            return;
        }
        let params = [tensor(&[1.0]), tensor(&[2.0]), tensor(&[3.0])];
        let refs: Vec<&Tensor> = params.iter().collect();
        let mut mean = OverlappedMean::new(world, &refs, 4).unwrap();
        let grads = [tensor(&[10.0]), tensor(&[20.0]), tensor(&[30.0])];
        mean.ready(params[2].id(), &grads[2]).unwrap();
        assert_eq!(mean.launched.len(), 1);
        mean.ready(params[0].id(), &grads[0]).unwrap();
        assert_eq!(mean.launched.len(), 1, "bucket 2 waits for bucket 1");
        mean.ready(params[1].id(), &grads[1]).unwrap();
        assert_eq!(mean.launched.len(), 3);
        let (means, report) = mean.finish().unwrap();
        assert_eq!(report.launched_before_last_gradient, 1, "bucket 0 only");
        assert_eq!(report.ready_order, [2, 0, 1]);
        assert!(report.out_of_order());
        let values: Vec<f32> = means
            .iter()
            .map(|m| m.to_vec::<f32>().unwrap()[0])
            .collect();
        assert_eq!(values, [10.0, 20.0, 30.0]);
    }

    /// Launched at finish: nothing goes while backward reports gradients, every bucket goes at
    /// the end in order, and the means are the same.
    #[test]
    fn launching_at_finish_launches_nothing_before_the_end() {
        let world = super::super::world();
        if world.is_distributed() {
            return;
        }
        let params = [tensor(&[1.0]), tensor(&[2.0])];
        let refs: Vec<&Tensor> = params.iter().collect();
        let mut mean = OverlappedMean::new(world, &refs, 4)
            .unwrap()
            .launching_at_finish();
        mean.ready(params[1].id(), &tensor(&[20.0])).unwrap();
        mean.ready(params[0].id(), &tensor(&[10.0])).unwrap();
        assert!(mean.launched.is_empty());
        let (means, report) = mean.finish().unwrap();
        assert_eq!(
            (report.buckets, report.launched_before_last_gradient),
            (2, 0)
        );
        let values: Vec<f32> = means
            .iter()
            .map(|m| m.to_vec::<f32>().unwrap()[0])
            .collect();
        assert_eq!(values, [10.0, 20.0]);
    }

    /// A parameter without a gradient gets zeros at the end, and the buckets behind it launch.
    #[test]
    fn an_unused_parameter_gets_zeros_and_releases_the_buckets_behind_it() {
        let world = super::super::world();
        if world.is_distributed() {
            return;
        }
        let params = [tensor(&[1.0, 1.0]), tensor(&[2.0])];
        let refs: Vec<&Tensor> = params.iter().collect();
        let mut mean = OverlappedMean::new(world, &refs, 4).unwrap();
        mean.ready(params[0].id(), &tensor(&[5.0, 6.0])).unwrap();
        assert!(
            mean.launched.is_empty(),
            "bucket 0 (parameter 1) is not ready"
        );
        assert!(mean.ready(params[0].id(), &tensor(&[5.0, 6.0])).is_err());
        let (means, report) = mean.finish().unwrap();
        assert_eq!(report.unused, [1]);
        assert_eq!(report.launched_before_last_gradient, 0);
        assert_eq!(means[1].to_vec::<f32>().unwrap(), [0.0]);
        assert_eq!(means[0].to_vec::<f32>().unwrap(), [5.0, 6.0]);
    }
}
