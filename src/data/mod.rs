//! Datasets and data loading: IDX files (MNIST and its kin, Fashion-MNIST), CIFAR-10/100 binaries,
//! image folders, format detection ([`DataSpec`], [`detect`]), mini-batches, augmentation, and
//! the [`DatasetInfo`] description every provider of splits gives the trainer.
//!
//! ```no_run
//! use kiln::data::{Augment, DataLoader, FashionMnist};
//! use kiln::Device;
//! let fm = FashionMnist::load(None)?; // --data DIR, else $KILN_DATA, else the Debian package
//! let splits = fm.splits(0.1, 42)?; // 54,000 train / 6,000 validation / 10,000 test, normalized
//! let train = DataLoader::new(splits.train, 128, Device::best())?
//!     .with_shuffle(42)
//!     .with_augment(Augment { hflip: true, shift_pad: 2, jitter_std: 0.0 })?;
//! for epoch in 0..2 {
//!     for batch in train.epoch(epoch) {
//!         let batch = batch?; // batch.images: [128, 1, 28, 28] f32, batch.labels: [128] i32
//!     }
//! }
//! # Ok::<(), kiln::data::DataError>(())
//! ```

mod augment;
mod cifar;
mod dataset;
mod error;
mod fashion_mnist;
mod idx;
mod image_folder;
mod info;
mod loader;
mod mnist_idx;
mod samples;
mod shard;
mod spec;

pub use augment::{hflip, shift, Augment};
pub use cifar::{
    cifar100_dir, cifar10_dir, load_cifar10, load_cifar100, read_cifar_file, CIFAR10_CLASSES,
    CIFAR_IMAGE_SHAPE,
};
pub use dataset::{split_indices, Dataset, Normalization, Splits};
pub use error::DataError;
pub use fashion_mnist::{
    find_files, FashionMnist, FashionMnistFiles, DATA_ENV, DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES, FASHION_MNIST_FILES,
};
pub use idx::{
    read_idx_images, read_idx_labels, read_idx_samples, write_idx_images, write_idx_labels,
    write_idx_samples, IdxImages, IdxSamples, IDX_IMAGES4_MAGIC, IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
};
pub(crate) use image_folder::{decode as decode_image, images_below};
pub use image_folder::{
    load_image_folder, parse_size, FolderOptions, BYTES_PER_VALUE, IMAGE_EXTENSIONS,
};
pub use info::{DatasetInfo, DatasetProvider, DescribedSplits, InMemoryDataset, Sources};
pub use loader::{Batch, Batches, DataLoader, HostBatch, HostBatches, PREFETCH};
pub use mnist_idx::{find_idx_files, load_idx_dataset, IdxFiles};
pub use samples::{numbered_classes, read_class_names, FileDataset, U8Samples};
pub use shard::Shard;
pub use spec::{detect, CifarLabels, DataSpec, DatasetKind};
