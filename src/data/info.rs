//! What a dataset is, apart from its pixels: the sample shape, the class names, the normalization
//! fitted on its training split and where its splits came from. The trainer, evaluation and the
//! checkpoints work from this description alone, so any provider of [`Splits`] can be trained on.

use serde::{Deserialize, Serialize};

use super::dataset::{Dataset, Normalization, Splits};
use super::error::{invalid, DataError};
use super::spec::DataSpec;

/// Where a dataset's training and test samples came from (file paths, or a note for data built
/// in memory); error messages about an empty split name these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    pub train: String,
    pub test: String,
}

/// The description of a dataset a model is trained on; saved in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// A human-readable name (e.g. "Fashion-MNIST").
    pub name: String,
    /// `[channels, height, width]` of one sample.
    pub sample_shape: [usize; 3],
    /// One name per class, indexed by label; its length is the class count.
    pub class_names: Vec<String>,
    /// Fitted on the training split and applied to every split (and to data evaluated later).
    pub normalization: Normalization,
    pub sources: Sources,
    /// How to read this dataset again (its kind, path and options), for data read from files;
    /// `None` for data built in memory and in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<DataSpec>,
}

impl DatasetInfo {
    /// The description of `splits`: their sample shape and normalization, with `class_names`
    /// (as many as the splits' classes).
    pub fn describe(
        name: impl Into<String>,
        class_names: Vec<String>,
        splits: &Splits,
        sources: Sources,
    ) -> Result<DatasetInfo, DataError> {
        let info = DatasetInfo {
            name: name.into(),
            sample_shape: splits.train.sample_shape(),
            class_names,
            normalization: splits.normalization.clone(),
            sources,
            origin: None,
        };
        info.check(&splits.train)?;
        Ok(info)
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Fails unless `data` has this description's sample shape and class count (a model built
    /// for one cannot read the other).
    pub fn check(&self, data: &Dataset) -> Result<(), DataError> {
        if data.sample_shape() != self.sample_shape {
            return Err(DataError::Mismatch {
                what: format!("{} data", self.name),
                why: format!(
                    "samples of shape {:?}, the description says {:?}",
                    data.sample_shape(),
                    self.sample_shape
                ),
            });
        }
        if data.num_classes() != self.num_classes() {
            return Err(DataError::Mismatch {
                what: format!("{} data", self.name),
                why: format!(
                    "{} classes, the description names {}",
                    data.num_classes(),
                    self.num_classes()
                ),
            });
        }
        Ok(())
    }

    /// A raw (unnormalized) dataset checked against this description and normalized as its
    /// training split was.
    pub fn prepare_raw(&self, mut raw: Dataset) -> Result<Dataset, DataError> {
        self.check(&raw)?;
        raw.normalize(&self.normalization)?;
        Ok(raw)
    }
}

/// Splits ready to train on, with their description.
#[derive(Clone, Debug)]
pub struct DescribedSplits {
    pub info: DatasetInfo,
    pub splits: Splits,
}

/// Anything that can hand the trainer its splits: Fashion-MNIST, or a user's own tensors
/// ([`InMemoryDataset`]).
pub trait DatasetProvider: Sync {
    /// Train / validation (`val_fraction` of the training samples, drawn with `seed`) / test,
    /// normalized with the training part's statistics, and their description.
    fn prepare(&self, val_fraction: f64, seed: u64) -> Result<DescribedSplits, DataError>;
}

/// Splits the caller made (with their own validation part): `val_fraction` and `seed` do not
/// apply; the splits must match the description.
impl DatasetProvider for DescribedSplits {
    fn prepare(&self, _val_fraction: f64, _seed: u64) -> Result<DescribedSplits, DataError> {
        for split in [
            &self.splits.train,
            &self.splits.validation,
            &self.splits.test,
        ] {
            self.info.check(split)?;
        }
        Ok(self.clone())
    }
}

/// A dataset built from the caller's own samples (raw, unnormalized): the trainer splits it and
/// fits the normalization as it does for Fashion-MNIST.
#[derive(Clone, Debug)]
pub struct InMemoryDataset {
    pub name: String,
    pub class_names: Vec<String>,
    pub train: Dataset,
    pub test: Dataset,
}

impl InMemoryDataset {
    /// Checks that `class_names` has one name per class of both sets.
    pub fn new(
        name: impl Into<String>,
        class_names: Vec<String>,
        train: Dataset,
        test: Dataset,
    ) -> Result<InMemoryDataset, DataError> {
        for (split, d) in [("training", &train), ("test", &test)] {
            if d.num_classes() != class_names.len() {
                return Err(invalid(
                    "class names",
                    format!(
                        "{} names for the {split} set's {} classes",
                        class_names.len(),
                        d.num_classes()
                    ),
                ));
            }
        }
        Ok(InMemoryDataset {
            name: name.into(),
            class_names,
            train,
            test,
        })
    }
}

impl DatasetProvider for InMemoryDataset {
    fn prepare(&self, val_fraction: f64, seed: u64) -> Result<DescribedSplits, DataError> {
        let splits = Splits::new(&self.train, self.test.clone(), val_fraction, seed)?;
        let sources = Sources {
            train: format!("the in-memory training set of {}", self.name),
            test: format!("the in-memory test set of {}", self.name),
        };
        let info = DatasetInfo::describe(&self.name, self.class_names.clone(), &splits, sources)?;
        Ok(DescribedSplits { info, splits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize, classes: usize) -> Dataset {
        let labels = (0..n).map(|i| (i % classes) as i32).collect();
        let images = (0..n * 12).map(|i| (i % 7) as f32).collect();
        Dataset::new(images, labels, [3, 2, 2], classes).unwrap()
    }

    #[test]
    fn the_description_follows_the_splits_and_refuses_other_shapes() {
        let names = vec!["a".to_string(), "b".to_string()];
        let data = InMemoryDataset::new("toy", names.clone(), set(10, 2), set(4, 2)).unwrap();
        let DescribedSplits { info, splits } = data.prepare(0.2, 1).unwrap();
        assert_eq!(info.sample_shape, [3, 2, 2]);
        assert_eq!(info.num_classes(), 2);
        assert_eq!(info.normalization, splits.normalization);
        assert_eq!(splits.validation.len(), 2);
        let other = Dataset::new(vec![0.0; 4], vec![0], [1, 2, 2], 2).unwrap();
        let err = info.prepare_raw(other).unwrap_err().to_string();
        assert!(
            err.contains("[1, 2, 2]") && err.contains("[3, 2, 2]"),
            "{err}"
        );
        let err = InMemoryDataset::new("toy", names, set(10, 3), set(4, 3)).unwrap_err();
        assert!(err.to_string().contains("2 names"), "{err}");
    }
}
