//! One rank's share of an epoch's sample order in data-parallel training.
//!
//! The rule is PyTorch's `DistributedSampler`: every rank computes the same seeded permutation of
//! the `n` samples, the order is padded by wrapping around to a multiple of the world size
//! (`ceil(n / world) * world` entries: the first samples of the permutation appear twice), and
//! rank `r` takes entries `r, r + world, r + 2·world, ...`. Every rank then has exactly
//! `ceil(n / world)` samples, so the ranks take the same number of steps and meet at every
//! gradient all-reduce. Evaluation shards without the padding (the shares then differ by at most
//! one sample), so each sample is counted once when the ranks' sums are reduced.

use super::error::{invalid, DataError};

/// Rank `rank` of `world` ranks, with or without the wrap-around padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
    /// Pad to equal shares by wrapping (training); `false` keeps each sample once (evaluation).
    pub pad: bool,
}

impl Shard {
    /// The whole order: one process.
    pub const ALL: Shard = Shard {
        rank: 0,
        world: 1,
        pad: false,
    };

    /// A training shard (padded); an error for a rank outside the world.
    pub fn training(rank: usize, world: usize) -> Result<Shard, DataError> {
        Shard::new(rank, world, true)
    }

    /// An evaluation shard (not padded).
    pub fn evaluation(rank: usize, world: usize) -> Result<Shard, DataError> {
        Shard::new(rank, world, false)
    }

    fn new(rank: usize, world: usize, pad: bool) -> Result<Shard, DataError> {
        if world == 0 || rank >= world {
            return Err(invalid(
                "shard",
                format!("rank {rank} is outside a world of {world} ranks"),
            ));
        }
        Ok(Shard { rank, world, pad })
    }

    /// How many of `n` samples this rank gets.
    pub fn len_of(&self, n: usize) -> usize {
        match self.pad {
            true if n > 0 => n.div_ceil(self.world),
            _ => n.saturating_sub(self.rank).div_ceil(self.world),
        }
    }

    /// This rank's entries of `order` (the full epoch order, the same on every rank).
    pub fn take(&self, order: &[usize]) -> Vec<usize> {
        if self.world == 1 {
            return order.to_vec();
        }
        let len = self.len_of(order.len());
        (0..len)
            .map(|k| order[(self.rank + k * self.world) % order.len()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch: `list(DistributedSampler(range(10), num_replicas=3, rank=r, shuffle=False))`
    /// gives [0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1] for r = 0, 1, 2.
    #[test]
    fn training_shards_follow_distributed_sampler() {
        let order: Vec<usize> = (0..10).collect();
        let shares: Vec<Vec<usize>> = (0..3)
            .map(|r| Shard::training(r, 3).unwrap().take(&order))
            .collect();
        assert_eq!(
            shares,
            [vec![0, 3, 6, 9], vec![1, 4, 7, 0], vec![2, 5, 8, 1]]
        );
    }

    #[test]
    fn evaluation_shards_cover_each_sample_once() {
        let order: Vec<usize> = (0..10).rev().collect();
        let mut seen: Vec<usize> = (0..3)
            .flat_map(|r| Shard::evaluation(r, 3).unwrap().take(&order))
            .collect();
        assert_eq!(Shard::evaluation(2, 3).unwrap().len_of(10), 3);
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        // Fewer samples than ranks: the last ranks get none.
        assert_eq!(
            Shard::evaluation(2, 3).unwrap().take(&[5, 6]),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn a_rank_outside_the_world_is_refused() {
        assert!(Shard::training(2, 2).is_err());
        assert!(Shard::evaluation(0, 0).is_err());
        assert_eq!(Shard::ALL.take(&[3, 1, 2]), vec![3, 1, 2]);
    }
}
