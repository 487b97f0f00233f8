//! Datasets and data loading: IDX files, Fashion-MNIST, mini-batches, augmentation.
