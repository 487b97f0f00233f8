//! CIFAR-10 and CIFAR-100 in their binary versions (`cifar-10-binary.tar.gz`,
//! `cifar-100-binary.tar.gz` from www.cs.toronto.edu/~kriz/cifar.html), 32×32 RGB images.
//!
//! - CIFAR-10: each record is 1 label byte (0..10) and 3072 pixel bytes: 1024 red, 1024 green,
//!   1024 blue, each a row-major 32×32 plane (so a record is already `[3, 32, 32]`). Training
//!   records are in `data_batch_1.bin` .. `data_batch_5.bin` (every `data_batch_N.bin` present,
//!   which must be numbered 1, 2, ... without a gap), test records in `test_batch.bin`; the class
//!   names in `batches.meta.txt`, one per line (built in when the file is absent).
//! - CIFAR-100: each record is 1 coarse label byte (0..20), 1 fine label byte (0..100) and the
//!   same 3072 pixel bytes; `train.bin` and `test.bin`, names in `fine_label_names.txt` and
//!   `coarse_label_names.txt` (numbered when absent). [`CifarLabels`] picks the labels trained on
//!   (`--labels fine|coarse`, fine by default).
//!
//! The files may sit in the directory given or in the folder the archive unpacks to
//! (`cifar-10-batches-bin`, `cifar-100-binary`). A file that is not a whole number of records,
//! and a label out of range, is an error naming the file and the record.

use std::path::{Path, PathBuf};

use super::error::{io_error, DataError};
use super::info::Sources;
use super::samples::{numbered_classes, read_class_names, FileDataset, U8Samples};
use super::spec::{CifarLabels, DataSpec, DatasetKind};

/// `[C, H, W]` of a CIFAR image.
pub const CIFAR_IMAGE_SHAPE: [usize; 3] = [3, 32, 32];
const PIXELS: usize = 3 * 32 * 32;

/// CIFAR-10's class names, indexed by label (as in its `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The folder `dir` itself when it holds `probe`, else `dir/nested` when that does.
fn data_dir(dir: &Path, nested: &str, probe: &str) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join(nested)]
        .into_iter()
        .find(|d| d.join(probe).is_file())
}

/// The CIFAR-10 folder under `dir` (`dir` or `dir/cifar-10-batches-bin`), if either holds
/// `data_batch_1.bin`.
pub fn cifar10_dir(dir: &Path) -> Option<PathBuf> {
    data_dir(dir, "cifar-10-batches-bin", "data_batch_1.bin")
}

/// The CIFAR-100 folder under `dir` (`dir` or `dir/cifar-100-binary`), if either holds
/// `train.bin`.
pub fn cifar100_dir(dir: &Path) -> Option<PathBuf> {
    data_dir(dir, "cifar-100-binary", "train.bin")
}

/// Reads the records of one CIFAR file: `label_bytes` label bytes per record (1 for CIFAR-10, 2
/// for CIFAR-100), of which byte `label_at` is kept; every kept label must be below
/// `num_classes` (`what` names the labels in the error).
pub fn read_cifar_file(
    path: &Path,
    label_bytes: usize,
    label_at: usize,
    num_classes: usize,
    what: &str,
) -> Result<U8Samples, DataError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let record = label_bytes + PIXELS;
    let count = bytes.len() / record;
    let layout = if label_bytes == 1 {
        "1 label byte + 3072 pixel bytes".to_string()
    } else {
        format!("{label_bytes} label bytes (coarse, fine) + 3072 pixel bytes")
    };
    if bytes.len() % record != 0 {
        return Err(DataError::Sample {
            path: path.to_path_buf(),
            index: count,
            why: format!(
                "truncated record: a record is {record} bytes ({layout}), the file's {} bytes \
                 hold {count} records and {} bytes of one more",
                bytes.len(),
                bytes.len() % record
            ),
        });
    }
    if count == 0 {
        return Err(DataError::Length {
            path: path.to_path_buf(),
            expected: record as u64,
            actual: 0,
            layout: format!("at least one record of {layout}"),
            gzip: false,
        });
    }
    let mut pixels = Vec::with_capacity(count * PIXELS);
    let mut labels = Vec::with_capacity(count);
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[label_at] as usize;
        if label >= num_classes {
            return Err(DataError::Sample {
                path: path.to_path_buf(),
                index,
                why: format!("{what} {label} is not in 0..{num_classes}"),
            });
        }
        labels.push(label as i32);
        pixels.extend_from_slice(&rec[label_bytes..]);
    }
    Ok(U8Samples {
        shape: CIFAR_IMAGE_SHAPE,
        pixels,
        labels,
    })
}

/// `data_batch_1.bin`, `data_batch_2.bin`, ... in `dir`, in order; a gap in the numbers is an
/// error.
fn training_batches(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut numbers: Vec<u32> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| {
            n.strip_prefix("data_batch_")?
                .strip_suffix(".bin")?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort_unstable();
    for (i, &n) in numbers.iter().enumerate() {
        if n != i as u32 + 1 {
            let listed: Vec<String> = numbers.iter().map(u32::to_string).collect();
            return Err(DataError::NotFound {
                dataset: "CIFAR-10",
                why: format!(
                    "{} lacks data_batch_{}.bin (found data_batch_{{{}}}.bin)",
                    dir.display(),
                    i + 1,
                    listed.join(",")
                ),
            });
        }
    }
    Ok(numbers
        .iter()
        .map(|n| dir.join(format!("data_batch_{n}.bin")))
        .collect())
}

fn merge(parts: Vec<U8Samples>) -> U8Samples {
    let mut all = U8Samples::empty(CIFAR_IMAGE_SHAPE);
    for p in parts {
        all.pixels.extend_from_slice(&p.pixels);
        all.labels.extend_from_slice(&p.labels);
    }
    all
}

fn not_found(dataset: &'static str, dir: &Path, wanted: &str) -> DataError {
    DataError::NotFound {
        dataset,
        why: format!(
            "{} holds no {wanted} (looked in it and in its {} folder); download the binary \
             version from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it there",
            dir.display(),
            if dataset == "CIFAR-10" {
                "cifar-10-batches-bin"
            } else {
                "cifar-100-binary"
            }
        ),
    }
}

/// Loads CIFAR-10 from `dir` (see the module docs).
pub fn load_cifar10(dir: &Path) -> Result<FileDataset, DataError> {
    let root = cifar10_dir(dir).ok_or_else(|| not_found("CIFAR-10", dir, "data_batch_1.bin"))?;
    let test_path = root.join("test_batch.bin");
    if !test_path.is_file() {
        return Err(not_found("CIFAR-10", dir, "test_batch.bin"));
    }
    let meta = root.join("batches.meta.txt");
    let class_names = if meta.is_file() {
        read_class_names(&meta, Some(10))?
    } else {
        CIFAR10_CLASSES.map(String::from).to_vec()
    };
    let batches = training_batches(&root)?;
    let read = |p: &PathBuf| read_cifar_file(p, 1, 0, 10, "label");
    let parts = std::thread::scope(|s| {
        let handles: Vec<_> = batches.iter().map(|p| s.spawn(move || read(p))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(DataError::Worker("CIFAR loading panicked".into())))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let train = merge(parts);
    let test = read(&test_path)?;
    let train_source = match batches.len() {
        1 => batches[0].display().to_string(),
        n => root
            .join(format!("data_batch_{{1..{n}}}.bin"))
            .display()
            .to_string(),
    };
    Ok(FileDataset {
        name: "CIFAR-10".into(),
        class_names,
        train,
        test,
        sources: Sources {
            train: train_source,
            test: test_path.display().to_string(),
        },
        origin: DataSpec::new(DatasetKind::Cifar10, Some(dir)),
    })
}

/// Loads CIFAR-100 from `dir` with its fine (100) or coarse (20) labels.
pub fn load_cifar100(dir: &Path, labels: CifarLabels) -> Result<FileDataset, DataError> {
    let root = cifar100_dir(dir).ok_or_else(|| not_found("CIFAR-100", dir, "train.bin"))?;
    let (train_path, test_path) = (root.join("train.bin"), root.join("test.bin"));
    if !test_path.is_file() {
        return Err(not_found("CIFAR-100", dir, "test.bin"));
    }
    let (classes, label_at, names_file, what) = match labels {
        CifarLabels::Fine => (100, 1, "fine_label_names.txt", "fine label"),
        CifarLabels::Coarse => (20, 0, "coarse_label_names.txt", "coarse label"),
    };
    let names_path = root.join(names_file);
    let class_names = if names_path.is_file() {
        read_class_names(&names_path, Some(classes))?
    } else {
        numbered_classes(classes)
    };
    let (train, test) = std::thread::scope(|s| {
        let train = s.spawn(|| read_cifar_file(&train_path, 2, label_at, classes, what));
        let test = read_cifar_file(&test_path, 2, label_at, classes, what);
        let train = train
            .join()
            .unwrap_or_else(|_| Err(DataError::Worker("CIFAR loading panicked".into())));
        (train, test)
    });
    let mut origin = DataSpec::new(DatasetKind::Cifar100, Some(dir));
    origin.labels = labels;
    Ok(FileDataset {
        name: format!("CIFAR-100 ({} labels)", labels.name()),
        class_names,
        train: train?,
        test: test?,
        sources: Sources {
            train: train_path.display().to_string(),
            test: test_path.display().to_string(),
        },
        origin,
    })
}
