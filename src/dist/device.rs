//! The device `--device auto` means on this rank: one GPU per rank, chosen by the rank's place
//! on its node (as `torchrun`'s LOCAL_RANK), so the ranks of one node spread over its GPUs.

use crate::core::device::Device;

/// The environment variables that carry a rank's place on its node: OpenMPI's `mpirun`,
/// Slurm's `srun`, MPICH's Hydra and PMIx launchers.
const LOCAL_RANK_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
    "MPI_LOCALRANKID",
    "PMIX_LOCAL_RANK",
];

/// This process's rank on its node as a launcher announces it, or `None` when no launcher
/// started it (read from the environment: `--device` is parsed before MPI starts).
pub fn launcher_local_rank() -> Option<usize> {
    super::launcher_world_size()?;
    let announced = LOCAL_RANK_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok());
    Some(announced.unwrap_or(0))
}

/// `cuda:<local_rank % gpus>`, or the CPU when the node has no usable GPU.
pub fn device_for_local_rank(local_rank: usize, gpus: usize) -> Device {
    match gpus {
        0 => Device::Cpu,
        n => Device::Cuda(local_rank % n),
    }
}

/// `--device auto`: under a launcher, this rank's GPU ([`device_for_local_rank`]); otherwise the
/// best device ([`Device::best`]).
pub fn auto_device() -> Device {
    match launcher_local_rank() {
        Some(local) => device_for_local_rank(local, crate::cuda::usable_gpu_count()),
        None => Device::best(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_spread_over_the_gpus_of_their_node() {
        let picks: Vec<Device> = (0..5).map(|r| device_for_local_rank(r, 2)).collect();
        use Device::Cuda;
        assert_eq!(picks, [Cuda(0), Cuda(1), Cuda(0), Cuda(1), Cuda(0)]);
        assert_eq!(device_for_local_rank(3, 8), Cuda(3));
    }

    #[test]
    fn without_gpus_every_rank_trains_on_the_cpu() {
        assert!((0..4).all(|r| device_for_local_rank(r, 0) == Device::Cpu));
    }

    #[test]
    fn without_a_launcher_auto_is_the_best_device() {
        if super::super::launcher_world_size().is_none() {
            assert_eq!(launcher_local_rank(), None);
            assert_eq!(auto_device(), Device::best());
        }
    }
}
