//! Which dataset to read and how: [`DataSpec`] (`kiln train --dataset KIND --data PATH` and the
//! options of each kind), recorded in every checkpoint's dataset description
//! ([`DatasetInfo::origin`](super::DatasetInfo::origin)) so that `kiln eval` reads the same data
//! again; and [`detect`], which tells the kind from what is in a folder.
//!
//! Detection (`--dataset` omitted), in this order:
//! 1. `data_batch_1.bin` in `PATH` or `PATH/cifar-10-batches-bin`: `cifar10`;
//! 2. `train.bin` in `PATH` or `PATH/cifar-100-binary`: `cifar100`;
//! 3. the four Fashion-MNIST file names (`train-images-idx3-ubyte[.gz]`, ...) in
//!    `PATH/fashion-mnist`, or in `PATH` unless its name says it is another MNIST
//!    (contains "mnist" but not "fashion", e.g. `mnist`, `kmnist`): `fashion-mnist`, as
//!    `--data DIR` always meant (MNIST's files have the same names: `--dataset mnist-idx`, or a
//!    folder named for it, reads them with numbered classes);
//! 4. any other MNIST-format IDX files ([`find_idx_files`]): `mnist-idx`;
//! 5. sub-folders holding PNG or JPEG files: `folder`.
//!
//! Anything else is an error that lists what was looked for.

use std::path::{Path, PathBuf};

use clap::builder::PossibleValue;
use serde::{Deserialize, Serialize};

use super::cifar::{cifar100_dir, cifar10_dir, load_cifar10, load_cifar100};
use super::error::{invalid, DataError};
use super::fashion_mnist::{FashionMnist, FASHION_MNIST_CLASSES, FASHION_MNIST_FILES};
use super::image_folder::{has_image_folders, load_image_folder, FolderOptions};
use super::info::Sources;
use super::mnist_idx::{find_idx_files, load_idx_dataset};
use super::samples::{FileDataset, U8Samples};

/// The dataset formats `kiln train --dataset` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetKind {
    /// Fashion-MNIST's four IDX files, with its class names.
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
    /// Any MNIST-format IDX files (MNIST, KMNIST, EMNIST, your own; 1 or 3 channels).
    #[serde(rename = "mnist-idx")]
    MnistIdx,
    #[serde(rename = "cifar10")]
    Cifar10,
    #[serde(rename = "cifar100")]
    Cifar100,
    /// Images in class folders (torchvision's `ImageFolder` layout).
    #[serde(rename = "folder")]
    Folder,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::FashionMnist,
        DatasetKind::MnistIdx,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Folder,
    ];

    /// The `--dataset` spelling.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::MnistIdx => "mnist-idx",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Folder => "folder",
        }
    }

    pub fn parse(name: &str) -> Result<DatasetKind, DataError> {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
                invalid(
                    "dataset",
                    format!("{name:?} is not one of {}", names.join(", ")),
                )
            })
    }
}

impl clap::ValueEnum for DatasetKind {
    fn value_variants<'a>() -> &'a [Self] {
        &DatasetKind::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

/// CIFAR-100's two label sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CifarLabels {
    /// 100 classes.
    #[default]
    Fine,
    /// 20 superclasses.
    Coarse,
}

impl CifarLabels {
    pub fn name(self) -> &'static str {
        match self {
            CifarLabels::Fine => "fine",
            CifarLabels::Coarse => "coarse",
        }
    }
}

impl clap::ValueEnum for CifarLabels {
    fn value_variants<'a>() -> &'a [Self] {
        &[CifarLabels::Fine, CifarLabels::Coarse]
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

/// A dataset to read: its kind, its path and the options that change what is read. Saved in
/// checkpoints (as JSON), so a later `kiln eval` reads the same samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub kind: DatasetKind,
    /// The `--data` path, made absolute; `None` for Fashion-MNIST found by its default search
    /// (`$KILN_DATA`, then the Debian package's folder).
    pub path: Option<PathBuf>,
    /// CIFAR-100's labels (`--labels`); ignored by the other kinds.
    #[serde(default)]
    pub labels: CifarLabels,
    /// Image folders: the side images are resized and center-cropped to (`--image-size`); `None`
    /// keeps the images' own size (they must all have it).
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Image folders: 1 (greyscale) or 3 (RGB) channels (`--channels`); `None`: 1 when every image
    /// is greyscale, else 3.
    #[serde(default)]
    pub channels: Option<usize>,
    /// Image folders without `train/` and `test/`: the fraction of the images held out as the
    /// test set (drawn per class with a fixed seed, so every run and `kiln eval` get the same).
    #[serde(default)]
    pub test_fraction: Option<f64>,
}

impl DataSpec {
    /// `kind` at `path` (made absolute) with the default options.
    pub fn new(kind: DatasetKind, path: Option<&Path>) -> DataSpec {
        DataSpec {
            kind,
            path: path.map(absolute),
            labels: CifarLabels::default(),
            image_size: None,
            channels: None,
            test_fraction: None,
        }
    }

    /// Reads the dataset. `cache_limit` bounds the memory an image folder's decoded samples may
    /// take (`None`: half the available memory; see [`FolderOptions::cache_limit`]).
    pub fn load(&self, cache_limit: Option<u64>) -> Result<FileDataset, DataError> {
        let path = self.path.as_deref();
        let need_path = || {
            path.ok_or_else(|| {
                invalid(
                    "data path",
                    format!(
                        "--dataset {} needs --data PATH (the folder holding its files)",
                        self.kind.name()
                    ),
                )
            })
        };
        match self.kind {
            DatasetKind::FashionMnist => Ok(fashion_mnist_files(FashionMnist::load(path)?)),
            DatasetKind::MnistIdx => load_idx_dataset(need_path()?),
            DatasetKind::Cifar10 => load_cifar10(need_path()?),
            DatasetKind::Cifar100 => load_cifar100(need_path()?, self.labels),
            DatasetKind::Folder => load_image_folder(
                need_path()?,
                &FolderOptions {
                    image_size: self.image_size,
                    channels: self.channels,
                    test_fraction: self.test_fraction,
                    cache_limit,
                },
            ),
        }
    }
}

impl std::fmt::Display for DataSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind.name())?;
        if let Some(path) = &self.path {
            write!(f, " at {}", path.display())?;
        }
        if self.kind == DatasetKind::Cifar100 {
            write!(f, " ({} labels)", self.labels.name())?;
        }
        Ok(())
    }
}

/// `path` made absolute (against the current directory), unchanged if that fails.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Fashion-MNIST as a [`FileDataset`] (its buffers moved, not copied).
fn fashion_mnist_files(fm: FashionMnist) -> FileDataset {
    let samples = |pixels, labels| U8Samples {
        shape: FashionMnist::IMAGE_SHAPE,
        pixels,
        labels,
    };
    FileDataset {
        name: "Fashion-MNIST".into(),
        class_names: FASHION_MNIST_CLASSES.map(String::from).to_vec(),
        sources: Sources {
            train: fm.paths[0].display().to_string(),
            test: fm.paths[2].display().to_string(),
        },
        origin: DataSpec::new(DatasetKind::FashionMnist, Some(&fm.dir)),
        train: samples(fm.train_images, fm.train_labels),
        test: samples(fm.test_images, fm.test_labels),
    }
}

/// Whether `dir` holds the four Fashion-MNIST files (raw or `.gz`).
fn has_fashion_files(dir: &Path) -> bool {
    FASHION_MNIST_FILES
        .iter()
        .all(|name| dir.join(name).is_file() || dir.join(format!("{name}.gz")).is_file())
}

/// The kind of the dataset at `path` (see the module docs).
pub fn detect(path: &Path) -> Result<DatasetKind, DataError> {
    if cifar10_dir(path).is_some() {
        return Ok(DatasetKind::Cifar10);
    }
    if cifar100_dir(path).is_some() {
        return Ok(DatasetKind::Cifar100);
    }
    let name = path
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().to_lowercase());
    let other_mnist = name.contains("mnist") && !name.contains("fashion");
    if has_fashion_files(&path.join("fashion-mnist")) || (!other_mnist && has_fashion_files(path)) {
        return Ok(DatasetKind::FashionMnist);
    }
    if find_idx_files(path).is_ok() {
        return Ok(DatasetKind::MnistIdx);
    }
    if path.is_dir() && has_image_folders(path) {
        return Ok(DatasetKind::Folder);
    }
    Err(DataError::NotFound {
        dataset: "data",
        why: format!(
            "{} {}; looked for CIFAR-10 (data_batch_1.bin), CIFAR-100 (train.bin), MNIST-format \
             IDX files (train-images-idx3-ubyte[.gz], ...) and class folders of PNG/JPEG images \
             (train/CLASS/*.png or CLASS/*.png); pass --dataset to say which it is",
            path.display(),
            if path.exists() {
                "holds none of the formats kiln reads"
            } else {
                "does not exist"
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_their_names() {
        for kind in DatasetKind::ALL {
            assert_eq!(DatasetKind::parse(kind.name()).unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
        let err = DatasetKind::parse("cifar").unwrap_err().to_string();
        assert!(err.contains("cifar10, cifar100"), "{err}");
    }

    #[test]
    fn a_spec_round_trips_and_old_fields_default() {
        let mut spec = DataSpec::new(DatasetKind::Cifar100, Some(Path::new("data")));
        spec.labels = CifarLabels::Coarse;
        assert!(spec.path.as_ref().unwrap().is_absolute());
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<DataSpec>(&json).unwrap(), spec);
        let minimal: DataSpec = serde_json::from_str(r#"{"kind":"folder","path":"/x"}"#).unwrap();
        assert_eq!(minimal.labels, CifarLabels::Fine);
        assert_eq!(minimal.image_size, None);
    }
}
