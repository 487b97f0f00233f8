//! The collectives the training loop uses, on host buffers: MPI's under a launcher, the identity
//! with one rank. Every rank must call the same collectives in the same order with the same
//! lengths (the training loop does: equal step counts, one bucket order); MPI's default error
//! handler aborts the job on a failed call, and the watchdog aborts one that never completes.

use super::world::World;
use crate::core::error::Result;

/// How an all-reduce combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Min,
    Max,
}

/// The element types the collectives carry.
#[cfg(feature = "mpi")]
pub trait Wire: mpi::datatype::Equivalence + Copy + Default {}
#[cfg(feature = "mpi")]
impl<T: mpi::datatype::Equivalence + Copy + Default> Wire for T {}
#[cfg(not(feature = "mpi"))]
pub trait Wire: Copy + Default {}
#[cfg(not(feature = "mpi"))]
impl<T: Copy + Default> Wire for T {}

impl World {
    /// Combines `values` element-wise over the ranks; every rank gets the result.
    pub fn all_reduce<T: Wire>(&self, values: &mut [T], op: ReduceOp) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        mpi_arm::all_reduce(values, op)
    }

    /// Rank 0's `values` on every rank (the lengths must agree).
    pub fn broadcast<T: Wire>(&self, values: &mut [T]) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        mpi_arm::broadcast(values)
    }

    /// Every rank's `values`, concatenated in rank order (the lengths may differ).
    pub fn all_gather<T: Wire>(&self, values: &[T]) -> Result<Vec<Vec<T>>> {
        if !self.is_distributed() {
            return Ok(vec![values.to_vec()]);
        }
        mpi_arm::all_gather(values)
    }

    /// Waits until every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        mpi_arm::barrier()
    }
}

pub(super) fn abort(world: &World, code: i32) -> ! {
    if world.uses_mpi() {
        mpi_arm::abort(code);
    }
    std::process::exit(code)
}

#[cfg(not(feature = "mpi"))]
mod mpi_arm {
    //! Without MPI a world has one rank, and the collectives above return before reaching here.
    use super::*;

    fn unreachable() -> crate::Error {
        crate::Error::Internal("a collective of several ranks in a build without MPI".into())
    }
    pub fn all_reduce<T: Wire>(_: &mut [T], _: ReduceOp) -> Result<()> {
        Err(unreachable())
    }
    pub fn broadcast<T: Wire>(_: &mut [T]) -> Result<()> {
        Err(unreachable())
    }
    pub fn all_gather<T: Wire>(_: &[T]) -> Result<Vec<Vec<T>>> {
        Err(unreachable())
    }
    pub fn barrier() -> Result<()> {
        Err(unreachable())
    }
    pub fn abort(_: i32) {}
}

#[cfg(feature = "mpi")]
mod mpi_arm {
    use std::sync::Mutex;

    use mpi::collective::SystemOperation;
    use mpi::datatype::PartitionMut;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    use super::*;
    use crate::core::error::invalid;
    use crate::dist::watchdog;

    /// MPI was initialized with MPI_THREAD_SERIALIZED: one call at a time, from any thread.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Runs `call` on the world communicator, serialized, under the watchdog.
    fn with_world<R>(what: &'static str, call: impl FnOnce(&SimpleCommunicator) -> R) -> R {
        let _one_at_a_time = SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _watched = watchdog::watch(what);
        call(&SimpleCommunicator::world())
    }

    fn operation(op: ReduceOp) -> SystemOperation {
        match op {
            ReduceOp::Sum => SystemOperation::sum(),
            ReduceOp::Min => SystemOperation::min(),
            ReduceOp::Max => SystemOperation::max(),
        }
    }

    pub fn all_reduce<T: Wire>(values: &mut [T], op: ReduceOp) -> Result<()> {
        let send = values.to_vec();
        with_world("all-reduce", |w| {
            w.all_reduce_into(&send[..], values, operation(op))
        });
        Ok(())
    }

    pub fn broadcast<T: Wire>(values: &mut [T]) -> Result<()> {
        // Unequal lengths would make MPI read past the shorter buffer: compare them first.
        let (mut shortest, mut longest) = ([values.len() as u64], [values.len() as u64]);
        all_reduce(&mut shortest, ReduceOp::Min)?;
        all_reduce(&mut longest, ReduceOp::Max)?;
        if shortest != longest {
            return Err(invalid(
                "broadcast",
                format!(
                    "the ranks hold between {} and {} values: they built different models",
                    shortest[0], longest[0]
                ),
            ));
        }
        with_world("broadcast", |w| w.process_at_rank(0).broadcast_into(values));
        Ok(())
    }

    pub fn all_gather<T: Wire>(values: &[T]) -> Result<Vec<Vec<T>>> {
        let mine = [values.len() as u64];
        let mut counts = vec![0u64; SimpleCommunicator::world().size() as usize];
        with_world("all-gather", |w| {
            w.all_gather_into(&mine[..], &mut counts[..])
        });
        let too_many = || invalid("all-gather", "more than 2^31 values on one rank");
        let counts: Vec<i32> = (counts.iter().map(|&c| i32::try_from(c)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| too_many())?;
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i32, |at, &c| {
                let start = *at;
                *at = at.saturating_add(c);
                Some(start)
            })
            .collect();
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut all = vec![T::default(); total];
        {
            let mut partition = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            with_world("all-gather", |w| {
                w.all_gather_varcount_into(values, &mut partition)
            });
        }
        let mut out = Vec::with_capacity(counts.len());
        let mut rest = &all[..];
        for &c in &counts {
            let (head, tail) = rest.split_at(c as usize);
            out.push(head.to_vec());
            rest = tail;
        }
        Ok(out)
    }

    pub fn barrier() -> Result<()> {
        with_world("barrier", |w| w.barrier());
        Ok(())
    }

    pub fn abort(code: i32) {
        // Not serialized: the rank that aborts may be the one whose collective never returns.
        SimpleCommunicator::world().abort(code)
    }
}
