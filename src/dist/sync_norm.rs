//! Synchronized batch norm across the ranks (`kiln train --sync-bn`, PyTorch's `SyncBatchNorm`):
//! the [`ReplicaSum`] that `ops::BatchNorm2d` sums its counts, statistics and gradient sums with.
//!
//! Each sum is an MPI all-reduce through the host, submitted to the communication thread's queue
//! (comm.rs) and waited for at once. The queue also carries the gradient buckets, which wait for
//! the end of backward while batch norms are synchronized (`OverlappedMean::launching_at_finish`),
//! so the sums and the buckets keep one order on every rank. A [C] tensor on a GPU is staged
//! through the host: a few hundred bytes per layer, and the simplest path that is right until
//! NCCL has run on a GPU.

use std::sync::Arc;

use super::collectives::ReduceOp;
use super::comm::submit_all_reduce;
use super::world::World;
use crate::backend::RawTensor;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::ops::ReplicaSum;

/// Sums over the ranks of `world`: the identity with one rank.
#[derive(Debug)]
pub struct RankSum {
    world: &'static World,
}

impl RankSum {
    /// The sum over `world`'s ranks, to hand to each batch norm
    /// ([`crate::ops::BatchNorm2d::synchronize`]).
    pub fn over(world: &'static World) -> Arc<dyn ReplicaSum> {
        Arc::new(RankSum { world })
    }

    /// `locals`, all of element type `T`, summed in one all-reduce of their values end to end.
    fn summed<T>(&self, locals: &[&RawTensor]) -> Result<Vec<RawTensor>>
    where
        T: super::collectives::Wire + crate::core::dtype::Element + Send + 'static,
    {
        let mut mine = Vec::new();
        for local in locals {
            mine.extend(local.to_device(Device::Cpu)?.to_vec::<T>()?);
        }
        let all = submit_all_reduce(self.world, mine, ReduceOp::Sum)?.wait()?;
        let mut rest = &all[..];
        let mut sums = Vec::with_capacity(locals.len());
        for local in locals {
            let (values, tail) = rest.split_at(local.numel());
            rest = tail;
            let host = RawTensor::from_vec(values.to_vec(), local.shape(), Device::Cpu)?;
            sums.push(host.to_device(local.device())?);
        }
        Ok(sums)
    }
}

impl ReplicaSum for RankSum {
    fn count(&self, local: usize) -> Result<usize> {
        let all = submit_all_reduce(self.world, vec![local as u64], ReduceOp::Sum)?.wait()?;
        Ok(all[0] as usize)
    }

    fn values(&self, locals: &[&RawTensor]) -> Result<Vec<RawTensor>> {
        if !self.world.is_distributed() {
            return Ok(locals.iter().map(|&t| t.clone()).collect());
        }
        let dtype = locals.first().map_or(DType::F32, |t| t.dtype());
        if let Some(other) = locals.iter().find(|t| t.dtype() != dtype) {
            return Err(invalid(
                "synchronized batch norm",
                format!("one sum of {dtype:?} and {:?} tensors", other.dtype()),
            ));
        }
        match dtype {
            DType::F32 => self.summed::<f32>(locals),
            DType::F64 => self.summed::<f64>(locals),
            other => Err(invalid(
                "synchronized batch norm",
                format!("{other:?} statistics are not summed over the ranks (f32 and f64 are)"),
            )),
        }
    }
}
