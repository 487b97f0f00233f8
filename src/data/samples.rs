//! A dataset read from files, kept as 8-bit pixels until it is split and normalized: what the
//! IDX, CIFAR and image-folder readers return ([`FileDataset`]), and the class-names files they
//! share.

use std::path::Path;

use super::dataset::{Dataset, Normalization, Splits};
use super::error::{bad_file, io_error, DataError};
use super::info::{DatasetInfo, DatasetProvider, DescribedSplits, Sources};
use super::spec::DataSpec;

/// The samples of one split as bytes: pixels `[N, C, H, W]` row-major, labels in
/// `0..num_classes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct U8Samples {
    /// `[C, H, W]` of one sample.
    pub shape: [usize; 3],
    pub pixels: Vec<u8>,
    pub labels: Vec<i32>,
}

impl U8Samples {
    /// No samples of `shape`.
    pub fn empty(shape: [usize; 3]) -> U8Samples {
        U8Samples {
            shape,
            pixels: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one sample (`C·H·W`).
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The samples at `indices`, in that order. Panics on an index out of range (callers pass
    /// indices of this set).
    pub fn subset(&self, indices: &[usize]) -> U8Samples {
        let n = self.sample_len();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * n..(i + 1) * n]);
        }
        U8Samples {
            shape: self.shape,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// The samples as a [`Dataset`], pixels scaled to `[0, 1]`, not normalized.
    pub fn to_dataset(&self, num_classes: usize) -> Result<Dataset, DataError> {
        Dataset::from_u8(&self.pixels, self.labels.clone(), self.shape, num_classes)
    }
}

/// A dataset read from files (IDX, CIFAR binaries, an image folder, Fashion-MNIST): 8-bit train
/// and test samples, one name per class, the files they came from and how to read them again.
#[derive(Clone, Debug)]
pub struct FileDataset {
    /// A human-readable name, e.g. "CIFAR-10" or "image folder /data/pets".
    pub name: String,
    pub class_names: Vec<String>,
    pub train: U8Samples,
    pub test: U8Samples,
    /// The files (or folders) of each split.
    pub sources: Sources,
    /// What reads this dataset again (`kiln eval` takes it from the checkpoint).
    pub origin: DataSpec,
}

impl FileDataset {
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// `[C, H, W]` of one sample.
    pub fn sample_shape(&self) -> [usize; 3] {
        self.train.shape
    }

    /// The training samples as a [`Dataset`], scaled to `[0, 1]`, not normalized.
    pub fn train(&self) -> Result<Dataset, DataError> {
        self.train.to_dataset(self.num_classes())
    }

    /// The test samples as a [`Dataset`], scaled to `[0, 1]`, not normalized.
    pub fn test(&self) -> Result<Dataset, DataError> {
        self.test.to_dataset(self.num_classes())
    }

    /// The description of these samples normalized with `normalization`.
    pub fn info(&self, normalization: Normalization) -> DatasetInfo {
        DatasetInfo {
            name: self.name.clone(),
            sample_shape: self.sample_shape(),
            class_names: self.class_names.clone(),
            normalization,
            sources: self.sources.clone(),
            origin: Some(self.origin.clone()),
        }
    }
}

impl DatasetProvider for FileDataset {
    fn prepare(&self, val_fraction: f64, seed: u64) -> Result<DescribedSplits, DataError> {
        let splits = Splits::new(&self.train()?, self.test()?, val_fraction, seed)?;
        let info = self.info(splits.normalization.clone());
        info.check(&splits.train)?;
        Ok(DescribedSplits { info, splits })
    }
}

/// Reads a class-names file: one name per line, surrounding blanks trimmed, blank lines skipped
/// (CIFAR's `batches.meta.txt` ends with some). `expected` is the number of classes the data
/// needs, if known: a file with another number of names is an error naming it.
pub fn read_class_names(path: &Path, expected: Option<usize>) -> Result<Vec<String>, DataError> {
    let text = std::fs::read(path).map_err(io_error(path))?;
    let text = String::from_utf8(text)
        .map_err(|e| bad_file(path, format!("class names are not UTF-8 text: {e}")))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    match expected {
        Some(n) if names.len() != n => Err(bad_file(
            path,
            format!(
                "expected {n} class names (one per line), found {}",
                names.len()
            ),
        )),
        _ if names.is_empty() => Err(bad_file(path, "holds no class names")),
        _ => Ok(names),
    }
}

/// `"0"`, `"1"`, ... for data without class names.
pub fn numbered_classes(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// The first label of `labels` (read from `path`) outside `0..num_classes`, as an error naming
/// the file and the sample.
pub(crate) fn check_labels(
    path: &Path,
    labels: &[i32],
    num_classes: usize,
    what: &str,
) -> Result<(), DataError> {
    match labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as usize >= num_classes)
    {
        Some((index, &l)) => Err(DataError::Sample {
            path: path.to_path_buf(),
            index,
            why: format!("label {l} is not in 0..{num_classes} ({what})"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_and_conversion() {
        let s = U8Samples {
            shape: [1, 1, 2],
            pixels: vec![0, 255, 51, 102],
            labels: vec![0, 1],
        };
        let t = s.subset(&[1, 1, 0]);
        assert_eq!(t.pixels, [51, 102, 51, 102, 0, 255]);
        assert_eq!(t.labels, [1, 1, 0]);
        let d = s.to_dataset(2).unwrap();
        assert_eq!(d.image(0), &[0.0, 1.0]);
        assert!(s.to_dataset(1).is_err(), "label 1 of 1 class");
    }

    #[test]
    fn labels_out_of_range_name_the_file_and_sample() {
        let err = check_labels(Path::new("l.bin"), &[0, 3, 9], 5, "5 classes").unwrap_err();
        assert_eq!(
            err.to_string(),
            "l.bin: sample 2: label 9 is not in 0..5 (5 classes)"
        );
    }
}
