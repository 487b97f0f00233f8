//! The tensor-level steps of data parallelism (PyTorch DDP's semantics) on host buffers:
//! rank 0's weights broadcast, gradients averaged in buckets, and a checksum of the weights.
//! Values travel as f32 (the master weights and their gradients are f32; a 16-bit tensor widens
//! exactly); a tensor on a GPU is staged through the host, unless NCCL reduces it (nccl.rs).

use super::collectives::ReduceOp;
use super::world::World;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::tensor::Tensor;

/// The gradient bytes one all-reduce carries at most (DDP's default `bucket_cap_mb=25`).
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// A tensor's values on the host as f32.
pub(super) fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    match t.dtype() {
        DType::F32 | DType::BF16 | DType::F16 => t
            .to_device(Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_vec::<f32>(),
        other => Err(invalid(
            "distributed tensor",
            format!("{other:?} tensors are not carried between ranks (f32, bf16 and f16 are)"),
        )),
    }
}

/// `values` as a tensor of `like`'s shape, dtype and device.
pub(super) fn tensor_like(values: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(values, like.shape(), Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}

/// Rank 0's values of `tensors` on every rank. Each tensor is replaced by one of the same shape,
/// dtype and device holding them, a gradient leaf again if it was one (as a checkpoint's
/// weights are restored: the optimizer's state goes by position, not by tensor).
pub fn broadcast_tensors(world: &World, tensors: &mut [&mut Tensor]) -> Result<()> {
    if !world.is_distributed() {
        return Ok(());
    }
    let mut flat = Vec::new();
    for t in tensors.iter() {
        flat.extend(host_values(t)?);
    }
    world.broadcast(&mut flat)?;
    let mut rest = &flat[..];
    for t in tensors.iter_mut() {
        let (mine, tail) = rest.split_at(t.numel());
        rest = tail;
        let fresh = tensor_like(mine.to_vec(), t)?;
        **t = match t.needs_grad() {
            true => fresh.with_grad(),
            false => fresh,
        };
    }
    Ok(())
}

/// The parameter indices of each all-reduce: from the last parameter to the first (the order in
/// which backward finishes their gradients), cut where a bucket would pass `bucket_bytes` (a
/// larger tensor is a bucket of its own). A function of the shapes only, so every rank reduces
/// the same buckets in the same order.
pub fn buckets(numels: &[usize], bucket_bytes: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for i in (0..numels.len()).rev() {
        let size = numels[i] * std::mem::size_of::<f32>();
        match out.last_mut() {
            Some(bucket) if bytes + size <= bucket_bytes => bucket.push(i),
            _ => {
                out.push(vec![i]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    out
}

/// The mean over the ranks of each gradient, bucketed as [`buckets`] says, after backward (the
/// training step overlaps them with backward instead: [`super::OverlappedMean`]): on a CUDA
/// device under MPI, by NCCL in device memory (`--features nccl`, even with one rank, when every
/// rank loads libnccl); otherwise through the host, summed by MPI all-reduce then scaled by
/// 1/world. One rank outside NCCL returns `grads` as they are.
pub fn average_gradients(
    world: &'static World,
    grads: Vec<Tensor>,
    bucket_bytes: usize,
) -> Result<Vec<Tensor>> {
    let refs: Vec<&Tensor> = grads.iter().collect();
    let mut mean = super::OverlappedMean::new(world, &refs, bucket_bytes)?;
    for g in grads.iter().rev() {
        mean.ready(g.id(), g)?;
    }
    Ok(mean.finish()?.0)
}

/// A 64-bit FNV-1a hash of the tensors' values (their bits, in order): equal on two ranks
/// exactly when the values are (but for a hash collision).
pub fn weights_checksum(tensors: &[&Tensor]) -> Result<u64> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for t in tensors {
        for v in host_values(t)? {
            for byte in v.to_bits().to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    Ok(hash)
}

/// An error unless every rank holds the same values of `tensors` (one all-reduce of the
/// checksum's minimum and maximum); `when` names the moment in the message.
pub fn check_identical(world: &World, tensors: &[&Tensor], when: &str) -> Result<()> {
    if !world.is_distributed() {
        return Ok(());
    }
    let mine = weights_checksum(tensors)?;
    let (mut lowest, mut highest) = ([mine], [mine]);
    world.all_reduce(&mut lowest, ReduceOp::Min)?;
    world.all_reduce(&mut highest, ReduceOp::Max)?;
    if lowest != highest {
        return Err(crate::Error::Internal(format!(
            "the ranks' weights differ {when} (checksum {mine:016x} on rank {}, others between \
             {:016x} and {:016x}): every rank should apply the same update",
            world.rank(),
            lowest[0],
            highest[0]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_run_from_the_last_parameter_and_respect_the_cap() {
        // 4-byte values: 10 + 20 values fit 120 bytes; 40 values (160 bytes) get their own.
        assert_eq!(
            buckets(&[5, 40, 20, 10], 120),
            vec![vec![3, 2], vec![1], vec![0]]
        );
        assert_eq!(buckets(&[1, 1, 1], BUCKET_BYTES), vec![vec![2, 1, 0]]);
        assert!(buckets(&[], BUCKET_BYTES).is_empty());
    }

    #[test]
    fn one_rank_keeps_its_gradients_and_the_checksum_sees_every_bit() {
        let world = super::super::world();
        if world.is_distributed() {
            return;
        }
        let g = Tensor::from_vec(vec![1.0f32, -2.0], &[2], Device::Cpu).unwrap();
        let back = average_gradients(world, vec![g.clone()], BUCKET_BYTES).unwrap();
        assert_eq!(back[0].id(), g.id());
        let other = Tensor::from_vec(vec![1.0f32, -2.0000002], &[2], Device::Cpu).unwrap();
        let (a, b) = (
            weights_checksum(&[&g]).unwrap(),
            weights_checksum(&[&other]).unwrap(),
        );
        assert_ne!(a, b);
        check_identical(world, &[&g], "now").unwrap();
    }
}
