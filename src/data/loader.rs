//! `DataLoader`: mini-batches of a [`Dataset`] as tensors on a device.
//!
//! - The sample order of epoch `e` is a permutation seeded by `(seed, e)` (or the dataset order
//!   when shuffling is off): the same seed gives the same order, different epochs different ones.
//! - Sample `i`'s augmentation in epoch `e` uses its own rng seeded by `(seed, e, i)`, so the
//!   samples of a batch are augmented in parallel (rayon) with the same values as in sequence.
//! - So batch `b` of epoch `e` is a pure function of the loader's settings, `e` and `b`: it does
//!   not depend on thread timing, and [`DataLoader::host_batch`] rebuilds any batch on its own.
//! - A background thread prepares the host data of the next batches (gather, augmentation) into
//!   a bounded channel of [`PREFETCH`] batches while the consumer uploads and trains on the
//!   current one; the consumer does the host→device copy (device handles stay on its thread).

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::rngs::{SmallRng, StdRng};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use super::augment::Augment;
use super::dataset::Dataset;
use super::error::{invalid, DataError};
use super::shard::Shard;
use crate::core::device::Device;
use crate::tensor::Tensor;

/// How many prepared batches may wait in the channel ahead of the consumer.
pub const PREFETCH: usize = 2;

/// One mini-batch on the host: images `[B, C, H, W]` f32 row-major, labels `[B]` i32, and the
/// dataset indices of its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    pub indices: Vec<usize>,
    pub images: Vec<f32>,
    pub labels: Vec<i32>,
    /// `[B, C, H, W]`.
    pub shape: [usize; 4],
}

impl HostBatch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Copies the batch to `device` as tensors.
    pub fn to_device(self, device: Device) -> Result<Batch, DataError> {
        let images = Tensor::from_vec(self.images, &self.shape, device)?;
        let labels = Tensor::from_vec(self.labels, &[self.shape[0]], device)?;
        Ok(Batch {
            images,
            labels,
            indices: self.indices,
        })
    }
}

/// One mini-batch on a device: images `[B, C, H, W]` f32, labels `[B]` i32.
#[derive(Clone, Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    /// The dataset indices of the samples, in batch order.
    pub indices: Vec<usize>,
}

/// What a batch is made from; cloned into the background thread.
#[derive(Clone, Debug)]
struct Plan {
    dataset: Arc<Dataset>,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    augment: Augment,
    /// The rank's share of each epoch's order ([`Shard::ALL`] in one process).
    shard: Shard,
}

/// SplitMix64's finalizer: a bijective 64-bit mix, for deriving seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one random stream: `stream` 0 is the epoch's permutation, `1 + i` sample `i`'s
/// augmentation.
fn stream_seed(seed: u64, epoch: u64, stream: u64) -> u64 {
    mix(mix(mix(seed) ^ epoch) ^ stream)
}

impl Plan {
    fn num_batches(&self) -> usize {
        let n = self.shard.len_of(self.dataset.len());
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(stream_seed(self.seed, epoch, 0)));
        }
        self.shard.take(&order)
    }

    /// Batch `index` of an epoch whose sample order is `order`.
    fn batch(&self, order: &[usize], epoch: u64, index: usize) -> HostBatch {
        let d = &*self.dataset;
        let start = index * self.batch_size;
        let end = (start + self.batch_size).min(order.len());
        let indices = order[start..end].to_vec();
        let per = d.sample_len();
        let shape = d.sample_shape();
        let mut images = Vec::with_capacity(indices.len() * per);
        for &i in &indices {
            images.extend_from_slice(d.image(i));
        }
        if !self.augment.is_identity() {
            // Samples are independent (one rng each), so they can be augmented in parallel
            // without changing a single value.
            let fill: Vec<f32> = (0..shape[0]).map(|c| d.zero_value(c)).collect();
            images
                .par_chunks_exact_mut(per)
                .zip(indices.par_iter())
                .for_each(|(img, &i)| {
                    let seed = stream_seed(self.seed, epoch, 1 + i as u64);
                    self.augment
                        .apply(img, shape, &fill, &mut SmallRng::seed_from_u64(seed));
                });
        }
        let labels = indices.iter().map(|&i| d.label(i)).collect();
        HostBatch {
            shape: [indices.len(), shape[0], shape[1], shape[2]],
            indices,
            images,
            labels,
        }
    }
}

/// Mini-batches of a dataset on a device. Build with [`DataLoader::new`] and the `with_*`
/// settings; iterate one epoch with [`DataLoader::epoch`].
///
/// ```
/// # use kiln::data::{Augment, DataLoader, Dataset};
/// # use kiln::Device;
/// let data = Dataset::new(vec![0.5; 10 * 4], (0..10).map(|i| i % 2).collect(), [1, 2, 2], 2)?;
/// let loader = DataLoader::new(data, 4, Device::Cpu)?
///     .with_shuffle(7)
///     .with_drop_last(true)
///     .with_augment(Augment { hflip: true, ..Augment::none() })?;
/// for batch in loader.epoch(0) {
///     let batch = batch?;
///     assert_eq!(batch.images.shape(), &[4, 1, 2, 2]);
/// }
/// # Ok::<(), kiln::data::DataError>(())
/// ```
#[derive(Clone, Debug)]
pub struct DataLoader {
    plan: Plan,
    device: Device,
    background: bool,
}

impl DataLoader {
    /// Batches of `batch_size` in dataset order, the last one possibly smaller, no augmentation,
    /// prepared on a background thread.
    pub fn new(
        dataset: impl Into<Arc<Dataset>>,
        batch_size: usize,
        device: Device,
    ) -> Result<DataLoader, DataError> {
        if batch_size == 0 {
            return Err(invalid("batch size", "must be at least 1"));
        }
        Ok(DataLoader {
            plan: Plan {
                dataset: dataset.into(),
                batch_size,
                shuffle: false,
                drop_last: false,
                seed: 0,
                augment: Augment::none(),
                shard: Shard::ALL,
            },
            device,
            background: true,
        })
    }

    /// Shuffles every epoch with a permutation seeded by `(seed, epoch)`; also seeds the
    /// augmentation.
    pub fn with_shuffle(mut self, seed: u64) -> DataLoader {
        self.plan.shuffle = true;
        self.plan.seed = seed;
        self
    }

    /// Keeps the dataset order every epoch; `seed` still seeds the augmentation.
    pub fn with_seed(mut self, seed: u64) -> DataLoader {
        self.plan.seed = seed;
        self
    }

    /// Drops the last batch when it would be smaller than the batch size.
    pub fn with_drop_last(mut self, drop_last: bool) -> DataLoader {
        self.plan.drop_last = drop_last;
        self
    }

    /// Augments every sample (for the training set only).
    pub fn with_augment(mut self, augment: Augment) -> Result<DataLoader, DataError> {
        augment.validate(self.plan.dataset.sample_shape())?;
        self.plan.augment = augment;
        Ok(self)
    }

    /// Iterates only `shard`'s share of each epoch's order (data-parallel training: every rank
    /// shuffles alike, then takes its share; see [`Shard`]).
    pub fn with_shard(mut self, shard: Shard) -> DataLoader {
        self.plan.shard = shard;
        self
    }

    pub fn shard(&self) -> Shard {
        self.plan.shard
    }

    /// Prepares batches on a background thread (the default) or inline when iterated.
    pub fn with_background(mut self, background: bool) -> DataLoader {
        self.background = background;
        self
    }

    pub fn dataset(&self) -> &Dataset {
        &self.plan.dataset
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn batch_size(&self) -> usize {
        self.plan.batch_size
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        self.plan.num_batches()
    }

    /// The sample order of `epoch` (this loader's shard of it, before `drop_last` cuts the tail).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        self.plan.order(epoch)
    }

    /// Batch `index` of `epoch` on the host, built on this thread (the same values the epoch
    /// iterators yield).
    pub fn host_batch(&self, epoch: u64, index: usize) -> Result<HostBatch, DataError> {
        if index >= self.num_batches() {
            return Err(invalid(
                "batch index",
                format!("{index} is out of range for {} batches", self.num_batches()),
            ));
        }
        Ok(self.plan.batch(&self.plan.order(epoch), epoch, index))
    }

    /// The batches of `epoch` on the host.
    pub fn host_batches(&self, epoch: u64) -> HostBatches {
        let total = self.num_batches();
        let inline = |plan: Plan| Source::Inline {
            order: plan.order(epoch),
            plan,
        };
        let source = if self.background && total > 0 {
            let (tx, rx) = sync_channel(PREFETCH);
            let plan = self.plan.clone();
            let spawned = std::thread::Builder::new()
                .name("kiln-data-loader".into())
                .spawn(move || {
                    let order = plan.order(epoch);
                    for index in 0..total {
                        // A send error means the consumer stopped listening: stop quietly.
                        if tx.send(plan.batch(&order, epoch, index)).is_err() {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(handle) => Source::Thread {
                    rx: Some(rx),
                    handle: Some(handle),
                },
                // No thread to be had: prepare inline, same batches.
                Err(_) => inline(self.plan.clone()),
            }
        } else {
            inline(self.plan.clone())
        };
        HostBatches {
            source,
            epoch,
            next: 0,
            total,
        }
    }

    /// The batches of `epoch` as tensors on the loader's device.
    pub fn epoch(&self, epoch: u64) -> Batches {
        Batches {
            host: self.host_batches(epoch),
            device: self.device,
        }
    }
}

enum Source {
    Thread {
        rx: Option<Receiver<HostBatch>>,
        handle: Option<JoinHandle<()>>,
    },
    Inline {
        plan: Plan,
        order: Vec<usize>,
    },
}

/// Iterator over one epoch's host batches (see [`DataLoader::host_batches`]).
pub struct HostBatches {
    source: Source,
    epoch: u64,
    next: usize,
    total: usize,
}

impl Iterator for HostBatches {
    type Item = Result<HostBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        let index = self.next;
        self.next += 1;
        match &mut self.source {
            Source::Inline { plan, order } => Some(Ok(plan.batch(order, self.epoch, index))),
            Source::Thread { rx, handle } => {
                let received = rx.as_ref().map(|rx| rx.recv());
                match received {
                    Some(Ok(batch)) => Some(Ok(batch)),
                    _ => {
                        // The worker ended before sending every batch: it panicked.
                        self.next = self.total;
                        let why = match handle.take().map(|h| h.join()) {
                            Some(Err(panic)) => panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "it panicked".into()),
                            _ => format!("it stopped after {index} of {} batches", self.total),
                        };
                        Some(Err(DataError::Worker(why)))
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for HostBatches {}

impl Drop for HostBatches {
    fn drop(&mut self) {
        if let Source::Thread { rx, handle } = &mut self.source {
            // Closing the channel first unblocks a worker waiting to send, so the join is quick.
            drop(rx.take());
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// Iterator over one epoch's batches as tensors (see [`DataLoader::epoch`]).
pub struct Batches {
    host: HostBatches,
    device: Device,
}

impl Iterator for Batches {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let device = self.device;
        self.host
            .next()
            .map(|b| b.and_then(|b| b.to_device(device)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.host.size_hint()
    }
}

impl ExactSizeIterator for Batches {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_seeds_differ() {
        let a = stream_seed(1, 0, 0);
        assert_ne!(a, stream_seed(1, 1, 0));
        assert_ne!(a, stream_seed(1, 0, 1));
        assert_ne!(a, stream_seed(2, 0, 0));
        assert_eq!(a, stream_seed(1, 0, 0));
    }

    #[test]
    fn batch_counts() {
        let d = Dataset::new(vec![0.0; 10], vec![0; 10], [1, 1, 1], 1).unwrap();
        let l = DataLoader::new(d, 4, Device::Cpu).unwrap();
        assert_eq!(l.num_batches(), 3);
        assert_eq!(l.clone().with_drop_last(true).num_batches(), 2);
        assert!(l.host_batch(0, 3).is_err());
        assert_eq!(l.host_batch(0, 2).unwrap().len(), 2);
    }

    #[test]
    fn sharded_loaders_split_one_shared_permutation() {
        let d = Dataset::new(vec![0.0; 11], vec![0; 11], [1, 1, 1], 1).unwrap();
        let whole = DataLoader::new(d, 2, Device::Cpu).unwrap().with_shuffle(5);
        let rank = |r| whole.clone().with_shard(Shard::training(r, 2).unwrap());
        let full = whole.order(3);
        let (a, b) = (rank(0).order(3), rank(1).order(3));
        assert_eq!((a.len(), b.len()), (6, 6));
        assert_eq!(rank(0).num_batches(), 3);
        for k in 0..6 {
            assert_eq!(a[k], full[2 * k]);
            assert_eq!(b[k], full[(2 * k + 1) % 11]);
        }
        assert_ne!(rank(0).order(4), a, "each epoch reshuffles");
    }

    #[test]
    fn an_abandoned_epoch_stops_its_worker() {
        let d = Dataset::new(vec![0.0; 100], vec![0; 100], [1, 1, 1], 1).unwrap();
        let l = DataLoader::new(d, 1, Device::Cpu).unwrap();
        let mut it = l.host_batches(0);
        assert!(it.next().is_some());
        drop(it); // joins the worker, which is blocked on a full channel: must not hang
    }
}
