//! Fashion-MNIST (Zalando): 60,000 training and 10,000 test greyscale 28×28 images of 10 kinds
//! of clothing, stored as four IDX files.
//!
//! The directory is found in this order: the directory passed in (`--data DIR`), else
//! `$KILN_DATA`, else `/usr/share/datasets/fashion-mnist` (where Debian's
//! `dataset-fashion-mnist` package puts it). In the first two, the files may sit in `DIR` itself
//! or in `DIR/fashion-mnist`. Each file may be gzip-compressed (`name.gz`) or raw (`name`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Normalization, Splits};
use super::error::DataError;
use super::idx::{read_idx_images, read_idx_labels, IdxImages};
use super::info::{DatasetInfo, DatasetProvider, DescribedSplits, Sources};
use super::spec::{DataSpec, DatasetKind};

/// The environment variable naming the data directory.
pub const DATA_ENV: &str = "KILN_DATA";

/// Where Debian's `dataset-fashion-mnist` package installs the files.
pub const DEFAULT_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The four file names, without `.gz`: train images, train labels, test images, test labels.
pub const FASHION_MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The class names, indexed by label (from the dataset's README,
/// github.com/zalandoresearch/fashion-mnist).
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const HOW_TO_GET: &str = "install it with `sudo apt-get install dataset-fashion-mnist` \
    (Debian/Ubuntu; it goes to /usr/share/datasets/fashion-mnist), or download \
    train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and \
    t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist and pass \
    --data DIR or set KILN_DATA=DIR";

/// Fashion-MNIST in memory: pixels as bytes (`[N, 1, 28, 28]` row-major) and labels as i32.
#[derive(Clone, Debug)]
pub struct FashionMnist {
    /// The directory the files were read from.
    pub dir: PathBuf,
    /// The four files read, in the order of [`FASHION_MNIST_FILES`].
    pub paths: [PathBuf; 4],
    pub train_images: Vec<u8>,
    pub train_labels: Vec<i32>,
    pub test_images: Vec<u8>,
    pub test_labels: Vec<i32>,
}

impl FashionMnist {
    /// `[C, H, W]` of one image.
    pub const IMAGE_SHAPE: [usize; 3] = [1, 28, 28];
    pub const NUM_CLASSES: usize = 10;

    /// Finds the directory (see the module docs) and loads all four files.
    pub fn load(dir: Option<&Path>) -> Result<FashionMnist, DataError> {
        let env = std::env::var_os(DATA_ENV);
        let files = find_files(dir, env.as_deref(), Path::new(DEFAULT_FASHION_MNIST_DIR))?;
        FashionMnist::load_files(&files)
    }

    /// Loads the four files from exactly `dir` (no search).
    pub fn load_from(dir: &Path) -> Result<FashionMnist, DataError> {
        let files = files_in(dir).map_err(|missing| DataError::NotFound {
            dataset: "Fashion-MNIST",
            why: format!(
                "{} lacks {}; {HOW_TO_GET}",
                dir.display(),
                missing.join(", ")
            ),
        })?;
        FashionMnist::load_files(&files)
    }

    fn load_files(files: &FashionMnistFiles) -> Result<FashionMnist, DataError> {
        // The two halves decompress on two threads (most of the ~1 s load is gunzip).
        let (train, test) = std::thread::scope(|s| {
            let train = s.spawn(|| load_pair(&files.paths[0], &files.paths[1]));
            let test = load_pair(&files.paths[2], &files.paths[3]);
            let train = train.join().unwrap_or_else(|_| {
                Err(DataError::Worker("Fashion-MNIST loading panicked".into()))
            });
            (train, test)
        });
        let (train_images, train_labels) = train?;
        let (test_images, test_labels) = test?;
        Ok(FashionMnist {
            dir: files.dir.clone(),
            paths: files.paths.clone(),
            train_images,
            train_labels,
            test_images,
            test_labels,
        })
    }

    pub fn num_train(&self) -> usize {
        self.train_labels.len()
    }

    pub fn num_test(&self) -> usize {
        self.test_labels.len()
    }

    /// The class name of a label, `None` outside `0..10`.
    pub fn class_name(label: i32) -> Option<&'static str> {
        usize::try_from(label)
            .ok()
            .and_then(|l| FASHION_MNIST_CLASSES.get(l).copied())
    }

    /// The training images as a [`Dataset`], pixels scaled to `[0, 1]`, not normalized.
    pub fn train(&self) -> Result<Dataset, DataError> {
        Dataset::from_u8(
            &self.train_images,
            self.train_labels.clone(),
            Self::IMAGE_SHAPE,
            Self::NUM_CLASSES,
        )
    }

    /// The test images as a [`Dataset`], pixels scaled to `[0, 1]`, not normalized.
    pub fn test(&self) -> Result<Dataset, DataError> {
        Dataset::from_u8(
            &self.test_images,
            self.test_labels.clone(),
            Self::IMAGE_SHAPE,
            Self::NUM_CLASSES,
        )
    }

    /// Train / validation (a seeded `val_fraction` of the training images) / test, normalized
    /// with the mean and std of the training part.
    pub fn splits(&self, val_fraction: f64, seed: u64) -> Result<Splits, DataError> {
        Splits::new(&self.train()?, self.test()?, val_fraction, seed)
    }

    /// The description of Fashion-MNIST splits normalized with `normalization`.
    pub fn info(normalization: Normalization, sources: Sources) -> DatasetInfo {
        DatasetInfo {
            name: "Fashion-MNIST".into(),
            sample_shape: Self::IMAGE_SHAPE,
            class_names: FASHION_MNIST_CLASSES.map(String::from).to_vec(),
            normalization,
            sources,
            origin: None,
        }
    }
}

impl DatasetProvider for FashionMnist {
    /// [`FashionMnist::splits`] with their description; the sources are the image files read.
    fn prepare(&self, val_fraction: f64, seed: u64) -> Result<DescribedSplits, DataError> {
        let splits = self.splits(val_fraction, seed)?;
        let sources = Sources {
            train: self.paths[0].display().to_string(),
            test: self.paths[2].display().to_string(),
        };
        let mut info = FashionMnist::info(splits.normalization.clone(), sources);
        info.origin = Some(DataSpec::new(DatasetKind::FashionMnist, Some(&self.dir)));
        info.check(&splits.train)?;
        Ok(DescribedSplits { info, splits })
    }
}

/// Reads one images + labels pair and checks that they belong together.
fn load_pair(images: &Path, labels: &Path) -> Result<(Vec<u8>, Vec<i32>), DataError> {
    let IdxImages {
        count,
        rows,
        cols,
        pixels,
    } = read_idx_images(images)?;
    let [_, h, w] = FashionMnist::IMAGE_SHAPE;
    if (rows, cols) != (h, w) {
        return Err(DataError::BadDims {
            path: images.to_path_buf(),
            dims: vec![count, rows, cols],
            why: format!("Fashion-MNIST images are {h}×{w}"),
        });
    }
    let raw_labels = read_idx_labels(labels)?;
    if raw_labels.len() != count {
        return Err(DataError::Mismatch {
            what: "Fashion-MNIST".into(),
            why: format!(
                "{} has {count} images but {} has {} labels",
                images.display(),
                labels.display(),
                raw_labels.len()
            ),
        });
    }
    if let Some((i, &l)) = raw_labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= FashionMnist::NUM_CLASSES)
    {
        return Err(DataError::Mismatch {
            what: "Fashion-MNIST".into(),
            why: format!(
                "{}: label {l} of sample {i} is not in 0..10",
                labels.display()
            ),
        });
    }
    Ok((pixels, raw_labels.into_iter().map(i32::from).collect()))
}

/// The directory holding the four files and each file's path (`.gz` or raw).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FashionMnistFiles {
    pub dir: PathBuf,
    /// In the order of [`FASHION_MNIST_FILES`].
    pub paths: [PathBuf; 4],
}

/// The four files in `dir` (each as `name.gz`, else `name`), or the names that are missing.
fn files_in(dir: &Path) -> Result<FashionMnistFiles, Vec<String>> {
    let mut paths = Vec::with_capacity(4);
    let mut missing = Vec::new();
    for name in FASHION_MNIST_FILES {
        let gz = dir.join(format!("{name}.gz"));
        let raw = dir.join(name);
        if gz.is_file() {
            paths.push(gz);
        } else if raw.is_file() {
            paths.push(raw);
        } else {
            missing.push(format!("{name}[.gz]"));
        }
    }
    match <[PathBuf; 4]>::try_from(paths) {
        Ok(paths) if missing.is_empty() => Ok(FashionMnistFiles {
            dir: dir.to_path_buf(),
            paths,
        }),
        _ => Err(missing),
    }
}

/// Finds the Fashion-MNIST files: in `explicit` (or `explicit/fashion-mnist`) when given, else
/// in `env` (the value of `$KILN_DATA`, same two places) when set and non-empty, else in
/// `default`. A directory that was asked for but lacks the files is an error, not a reason to
/// look elsewhere. `FashionMnist::load` calls this with the real environment.
pub fn find_files(
    explicit: Option<&Path>,
    env: Option<&OsStr>,
    default: &Path,
) -> Result<FashionMnistFiles, DataError> {
    let (dir, source) = match (explicit, env.filter(|v| !v.is_empty())) {
        (Some(dir), _) => (dir.to_path_buf(), "--data"),
        (None, Some(v)) => (PathBuf::from(v), DATA_ENV),
        (None, None) => {
            return files_in(default).map_err(|missing| DataError::NotFound {
                dataset: "Fashion-MNIST",
                why: if default.is_dir() {
                    format!(
                        "{} (the default; neither --data nor {DATA_ENV} is set) lacks {}; {HOW_TO_GET}",
                        default.display(),
                        missing.join(", ")
                    )
                } else {
                    format!(
                        "no --data directory given, {DATA_ENV} is not set, and the default {} does not exist; {HOW_TO_GET}",
                        default.display()
                    )
                },
            })
        }
    };
    let nested = dir.join("fashion-mnist");
    files_in(&dir)
        .or_else(|missing| files_in(&nested).map_err(|_| missing))
        .map_err(|missing| DataError::NotFound {
            dataset: "Fashion-MNIST",
            why: if dir.is_dir() {
                format!(
                    "{} (from {source}) lacks {} (looked in {} too); {HOW_TO_GET}",
                    dir.display(),
                    missing.join(", "),
                    nested.display()
                )
            } else {
                format!(
                    "{} (from {source}) is not a directory; {HOW_TO_GET}",
                    dir.display()
                )
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names() {
        assert_eq!(FashionMnist::class_name(0), Some("T-shirt/top"));
        assert_eq!(FashionMnist::class_name(9), Some("Ankle boot"));
        assert_eq!(FashionMnist::class_name(10), None);
        assert_eq!(FashionMnist::class_name(-1), None);
    }

    #[test]
    fn missing_default_says_how_to_get_it() {
        let nowhere = Path::new("/nonexistent/kiln-test/fashion-mnist");
        let e = find_files(None, None, nowhere).unwrap_err().to_string();
        assert!(
            e.contains("sudo apt-get install dataset-fashion-mnist"),
            "{e}"
        );
        assert!(e.contains("KILN_DATA"), "{e}");
        assert!(e.contains("/nonexistent/kiln-test/fashion-mnist"), "{e}");
    }

    #[test]
    fn explicit_dir_is_not_silently_replaced() {
        let e = find_files(
            Some(Path::new("/nonexistent/kiln-explicit")),
            Some(OsStr::new("/nonexistent/kiln-env")),
            Path::new(DEFAULT_FASHION_MNIST_DIR),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/nonexistent/kiln-explicit (from --data)"),
            "{e}"
        );
        let e = find_files(
            None,
            Some(OsStr::new("/nonexistent/kiln-env")),
            Path::new(DEFAULT_FASHION_MNIST_DIR),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/kiln-env (from KILN_DATA)"), "{e}");
    }
}
