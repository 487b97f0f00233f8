//! Data-parallel training across processes: MPI launches the ranks (`mpirun -np N kiln train`,
//! or Slurm's `srun`), gives each its rank and the world size, and carries the collectives; kiln
//! writes no transport of its own.
//!
//! - [`init`] starts MPI when a launcher started this process (and is a no-op otherwise);
//!   [`world`] is the process's [`World`]: its rank, the world size and the collectives, one rank
//!   of one when MPI is not running. MPI's world communicator is process-wide by MPI's design, so
//!   the world is too.
//! - [`sync`]: the tensor-level steps of PyTorch DDP's semantics: rank 0's weights broadcast at
//!   the start, gradients averaged by all-reduce in buckets (in the same order on every rank),
//!   (by NCCL in device memory for a CUDA model with `--features nccl`), and a checksum all-reduce that tells whether the ranks' weights are still identical.
//! - [`RankSum`]: synchronized batch norm's sums over the ranks (`--sync-bn`).
//! - [`auto_device`]: `--device auto` on a rank is `cuda:<local rank % GPUs>` (CPU without GPUs).
//! - The sample sharding (`DistributedSampler`'s rule) is `data::Shard`; the training
//!   loop's distributed parts are in `train/distributed.rs`.
//!
//! Without the `mpi` cargo feature everything here still compiles: [`world`] is always one rank,
//! and [`init`] refuses to run under a launcher that started several ranks.

mod collectives;
mod comm;
mod device;
#[cfg(feature = "nccl")]
mod in_flight;
#[cfg(feature = "nccl")]
mod nccl;
mod overlap;
pub mod sync;
mod sync_norm;
#[cfg(feature = "mpi")]
mod watchdog;
mod world;

pub use collectives::ReduceOp;
pub use device::{auto_device, device_for_local_rank, launcher_local_rank};
pub use overlap::{OverlapReport, OverlappedMean};
pub use sync::{average_gradients, broadcast_tensors, weights_checksum, BUCKET_BYTES};
pub use sync_norm::RankSum;
pub use world::{init, launcher_world_size, world, Session, World};

/// Whether this build can run several ranks (the `mpi` cargo feature).
pub const MPI_COMPILED: bool = cfg!(feature = "mpi");

/// One line for `kiln info`: whether this build can train on several ranks, and with what.
pub fn support() -> String {
    let mpi = mpi_library().unwrap_or_else(|| "MPI not compiled in (--features mpi)".into());
    let ranks = match world().size() {
        1 => String::new(),
        n => format!("; this process is rank {} of {n}", world().rank()),
    };
    format!("distributed: {mpi}; {}{ranks}", nccl_support())
}

#[cfg(feature = "mpi")]
fn mpi_library() -> Option<String> {
    let version = mpi::environment::library_version().unwrap_or_default();
    let first = version.split([',', '\n']).next().unwrap_or("").trim();
    Some(format!(
        "MPI compiled in ({first}; run under mpirun or srun)"
    ))
}

#[cfg(not(feature = "mpi"))]
fn mpi_library() -> Option<String> {
    None
}

#[cfg(feature = "nccl")]
fn nccl_support() -> &'static str {
    nccl::support()
}

#[cfg(not(feature = "nccl"))]
fn nccl_support() -> &'static str {
    "NCCL not compiled in (--features nccl; CUDA gradients go through the host)"
}
