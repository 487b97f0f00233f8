//! Any dataset in the MNIST file format (`kiln train --dataset mnist-idx`): MNIST, KMNIST, EMNIST,
//! Fashion-MNIST or a user's own images of any size with 1 or 3 channels, as four IDX files.
//!
//! Files: in the directory `DIR` given, a training and a test pair of images and labels named
//! `[PREFIX-]SPLIT-images-idx3-ubyte` and `[PREFIX-]SPLIT-labels-idx1-ubyte`, where `SPLIT` is
//! `train` for training and `t10k` or `test` for test, the `-` before `idx` may be a `.`
//! (`train-images.idx3-ubyte`, as some downloads name them), images may be `idx4` (see below),
//! and each file may be gzip-compressed (`NAME.gz`, preferred when both are there). EMNIST's
//! folder holds several datasets (`emnist-balanced-train-images-idx3-ubyte.gz`,
//! `emnist-digits-...`): `--data DIR/emnist-balanced` picks one by its prefix; a folder holding
//! several without one picked is an error that lists them.
//!
//! Images are `[count, rows, cols]` (greyscale) or `[count, rows, cols, channels]` with 1 or 3
//! channels, channels last (magic `0x00000804`; see [`read_idx_samples`]). Train and test images
//! must have the same shape.
//!
//! Classes: one name per line in `[PREFIX-]classes.txt` beside the files, if there is one (then
//! every label must be below the number of names); else EMNIST's `[PREFIX-]mapping.txt` (lines
//! `label character-code`, the names are the characters); else the class count is the largest
//! label of either split + 1 and the classes are named by number. (EMNIST letters labels 1..=26,
//! so class 0 of it is empty; EMNIST stores its images transposed, which trains as well but flips
//! up-down where `--augment` flips left-right.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{bad_file, io_error, DataError};
use super::idx::{read_idx_labels, read_idx_samples, IdxSamples};
use super::info::Sources;
use super::samples::{check_labels, numbered_classes, read_class_names, FileDataset, U8Samples};
use super::spec::{DataSpec, DatasetKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Train,
    Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Images,
    Labels,
}

/// `[PREFIX-]SPLIT-PART{-|.}idxN-ubyte` (`.gz` already removed): the prefix (with its trailing
/// `-`, or empty), the split and the part.
fn parse_name(base: &str) -> Option<(String, Role, Part)> {
    for (role, split) in [
        (Role::Train, "train"),
        (Role::Test, "t10k"),
        (Role::Test, "test"),
    ] {
        for (part, word, ranks) in [
            (Part::Images, "images", &["3", "4"][..]),
            (Part::Labels, "labels", &["1"][..]),
        ] {
            let stem = format!("{split}-{word}");
            let Some(at) = base.rfind(&stem) else {
                continue;
            };
            let (prefix, rest) = (&base[..at], &base[at + stem.len()..]);
            if !(prefix.is_empty() || prefix.ends_with('-')) {
                continue;
            }
            let tail_ok = ranks.iter().any(|r| {
                rest == format!("-idx{r}-ubyte").as_str()
                    || rest == format!(".idx{r}-ubyte").as_str()
            });
            if tail_ok {
                return Some((prefix.to_string(), role, part));
            }
        }
    }
    None
}

/// The files found for one prefix, by split and part.
type FilesOf = BTreeMap<(Role, Part), PathBuf>;

/// The four files of one IDX dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxFiles {
    pub dir: PathBuf,
    /// `""` or e.g. `"emnist-balanced-"`.
    pub prefix: String,
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    pub test_images: PathBuf,
    pub test_labels: PathBuf,
}

const LOOKED_FOR: &str = "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], \
    t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] (or test-..., idx4 images, \
    a prefix such as emnist-balanced-, or a . before idx)";

/// Finds the four files: in `path` when it is a directory, else in its parent with the prefix
/// `<file name of path>-` (`--data DIR/emnist-balanced`).
pub fn find_idx_files(path: &Path) -> Result<IdxFiles, DataError> {
    let (dir, wanted) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        let parent = match path.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => path,
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        match name {
            Some(name) if parent.is_dir() => (parent.to_path_buf(), Some(format!("{name}-"))),
            _ => {
                return Err(DataError::NotFound {
                    dataset: "IDX dataset",
                    why: format!("{} is not a directory", path.display()),
                })
            }
        }
    };
    // (prefix) -> (role, part) -> path; a .gz file wins over a raw one of the same name.
    let mut found: BTreeMap<String, FilesOf> = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).map_err(io_error(&dir))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in &names {
        let (base, gz) = match name.strip_suffix(".gz") {
            Some(base) => (base, true),
            None => (name.as_str(), false),
        };
        let Some((prefix, role, part)) = parse_name(base) else {
            continue;
        };
        if wanted.as_ref().is_some_and(|w| *w != prefix) {
            continue;
        }
        let slot = found.entry(prefix).or_default();
        if gz || !slot.contains_key(&(role, part)) {
            slot.insert((role, part), dir.join(name));
        }
    }
    let complete: Vec<(&String, &FilesOf)> =
        found.iter().filter(|(_, files)| files.len() == 4).collect();
    match complete[..] {
        [(prefix, files)] => {
            let get = |role, part| files[&(role, part)].clone();
            Ok(IdxFiles {
                dir: dir.clone(),
                prefix: prefix.clone(),
                train_images: get(Role::Train, Part::Images),
                train_labels: get(Role::Train, Part::Labels),
                test_images: get(Role::Test, Part::Images),
                test_labels: get(Role::Test, Part::Labels),
            })
        }
        [] => {
            let partial = found
                .iter()
                .map(|(prefix, files)| {
                    let have: Vec<String> = files
                        .values()
                        .filter_map(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect();
                    format!(" (found only {} for prefix {prefix:?})", have.join(", "))
                })
                .collect::<String>();
            Err(DataError::NotFound {
                dataset: "IDX dataset",
                why: format!(
                    "{} lacks {LOOKED_FOR}{}{partial}",
                    dir.display(),
                    wanted.map_or(String::new(), |w| format!(" with the prefix {w}")),
                ),
            })
        }
        _ => {
            let prefixes: Vec<&str> = complete
                .iter()
                .map(|(p, _)| p.trim_end_matches('-'))
                .collect();
            Err(DataError::NotFound {
                dataset: "IDX dataset",
                why: format!(
                    "{} holds several IDX datasets ({}): pick one with --data {}",
                    dir.display(),
                    prefixes
                        .iter()
                        .map(|p| if p.is_empty() { "(no prefix)" } else { p })
                        .collect::<Vec<_>>()
                        .join(", "),
                    dir.join(prefixes.iter().find(|p| !p.is_empty()).unwrap_or(&"PREFIX"))
                        .display()
                ),
            })
        }
    }
}

/// Reads one images + labels pair and checks that they belong together.
fn read_pair(images: &Path, labels: &Path) -> Result<U8Samples, DataError> {
    let IdxSamples {
        count,
        shape,
        pixels,
    } = read_idx_samples(images)?;
    let raw = read_idx_labels(labels)?;
    if raw.len() != count {
        return Err(DataError::Mismatch {
            what: "IDX dataset".into(),
            why: format!(
                "{} has {count} images but {} has {} labels",
                images.display(),
                labels.display(),
                raw.len()
            ),
        });
    }
    Ok(U8Samples {
        shape,
        pixels,
        labels: raw.into_iter().map(i32::from).collect(),
    })
}

/// EMNIST's `*-mapping.txt`: lines `label code`, the class name being the character `code`.
fn read_emnist_mapping(path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let mut names: BTreeMap<usize, String> = BTreeMap::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields[..] {
            [label, code] => label.parse::<usize>().ok().zip(
                code.parse::<u32>()
                    .ok()
                    .and_then(char::from_u32)
                    .map(String::from),
            ),
            _ => None,
        };
        let Some((label, name)) = parsed.filter(|(l, _)| *l < 1 << 16) else {
            return Err(bad_file(
                path,
                format!(
                    "line {}: expected \"label character-code\", found {line:?}",
                    line_no + 1
                ),
            ));
        };
        names.insert(label, name);
    }
    let count = names.keys().next_back().map_or(0, |l| l + 1);
    if count == 0 {
        return Err(bad_file(path, "holds no class mapping"));
    }
    Ok((0..count)
        .map(|l| names.get(&l).cloned().unwrap_or_else(|| l.to_string()))
        .collect())
}

/// Loads an IDX dataset from `path` (a directory, or `DIR/PREFIX`; see the module docs).
pub fn load_idx_dataset(path: &Path) -> Result<FileDataset, DataError> {
    let files = find_idx_files(path)?;
    let (train, test) = std::thread::scope(|s| {
        let train = s.spawn(|| read_pair(&files.train_images, &files.train_labels));
        let test = read_pair(&files.test_images, &files.test_labels);
        let train = train
            .join()
            .unwrap_or_else(|_| Err(DataError::Worker("IDX loading panicked".into())));
        (train, test)
    });
    let (train, test) = (train?, test?);
    if test.shape != train.shape {
        return Err(DataError::Mismatch {
            what: "IDX dataset".into(),
            why: format!(
                "{} holds samples of {:?} but {} holds {:?}",
                files.train_images.display(),
                train.shape,
                files.test_images.display(),
                test.shape
            ),
        });
    }
    let names_file = files.dir.join(format!("{}classes.txt", files.prefix));
    let plain_names = files.dir.join("classes.txt");
    let mapping = files.dir.join(format!("{}mapping.txt", files.prefix));
    let names_path = [&names_file, &plain_names, &mapping]
        .into_iter()
        .find(|p| p.is_file());
    let class_names = match names_path {
        Some(p) if *p == mapping => read_emnist_mapping(p)?,
        Some(p) => read_class_names(p, None)?,
        None => {
            let max = train.labels.iter().chain(&test.labels).max().copied();
            numbered_classes(max.map_or(1, |m| m as usize + 1))
        }
    };
    let what = match names_path {
        Some(p) => format!("{} names {} classes", p.display(), class_names.len()),
        None => "the largest label of either split + 1".into(),
    };
    check_labels(&files.train_labels, &train.labels, class_names.len(), &what)?;
    check_labels(&files.test_labels, &test.labels, class_names.len(), &what)?;
    let label = match files.prefix.trim_end_matches('-') {
        "" => files
            .dir
            .file_name()
            .map_or("IDX".into(), |n| n.to_string_lossy().into_owned()),
        p => p.to_string(),
    };
    let [c, h, w] = train.shape;
    Ok(FileDataset {
        name: format!("{label} (IDX, {c}x{h}x{w})"),
        class_names,
        sources: Sources {
            train: files.train_images.display().to_string(),
            test: files.test_images.display().to_string(),
        },
        origin: DataSpec::new(DatasetKind::MnistIdx, Some(path)),
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_of_mnist_emnist_and_windows_downloads() {
        let p = |s: &str| parse_name(s);
        assert_eq!(
            p("train-images-idx3-ubyte"),
            Some((String::new(), Role::Train, Part::Images))
        );
        assert_eq!(
            p("t10k-labels-idx1-ubyte"),
            Some((String::new(), Role::Test, Part::Labels))
        );
        assert_eq!(
            p("train-images.idx3-ubyte"),
            Some((String::new(), Role::Train, Part::Images))
        );
        assert_eq!(
            p("emnist-balanced-test-images-idx3-ubyte"),
            Some(("emnist-balanced-".into(), Role::Test, Part::Images))
        );
        assert_eq!(
            p("cifar-train-images-idx4-ubyte"),
            Some(("cifar-".into(), Role::Train, Part::Images))
        );
        assert_eq!(p("train-labels-idx3-ubyte"), None, "labels are 1-d");
        assert_eq!(p("mytrain-images-idx3-ubyte"), None);
        assert_eq!(p("train-images-idx3-ubyte.txt"), None);
    }
}
