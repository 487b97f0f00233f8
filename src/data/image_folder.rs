//! Images in class folders, torchvision's `ImageFolder` layout (`kiln train --dataset folder`).
//!
//! Layout: `DIR/train/CLASS/...` and `DIR/test/CLASS/...` (the two splits), or `DIR/CLASS/...`
//! alone, from which [`FolderOptions::test_fraction`] of each class's images (rounded) is held
//! out as the test set, drawn with a fixed seed so that every run and `kiln eval` hold out the
//! same images; the trainer then splits its validation set off the rest.
//!
//! - Classes are the sub-folders' names sorted (torchvision's rule: by code point), and a
//!   sample's label is its class's place in that order. The test split's classes must be among
//!   the training split's (a training class may have no test images). Folders and files whose
//!   names start with `.` are skipped (torchvision would take `.ipynb_checkpoints` as a class).
//! - Images are the files with the extension `png`, `jpg` or `jpeg` (any case), in the class
//!   folder or below it; other files are ignored, as torchvision does. A class folder without
//!   any is an error naming it. Images are decoded by their content (the `image` crate); one
//!   that does not decode is an error naming the file.
//! - Size: with `--image-size S`, the shorter side is resized to `S` (the longer to
//!   `floor(S · long / short)`) with a bilinear filter that widens its support when shrinking
//!   (`image`'s `Triangle`, as PIL's bilinear filter behind torchvision's `Resize`), then the
//!   center `S×S` is cropped (torchvision's `CenterCrop`: offset `round((side - S) / 2)`, ties
//!   to even). Without it every image must have the size of the first, else an error names the
//!   file and both sizes.
//! - Channels: `--channels 1` or `3` converts every image (greyscale by `image`'s luma weights,
//!   or replicated to RGB); by default the samples have 1 channel when every image is
//!   greyscale and 3 otherwise, greyscale images then replicated to RGB. Alpha is dropped.
//! - Decoding runs in parallel (rayon) with a progress bar on stderr when it is a terminal.
//!   The decoded samples are kept in memory as bytes; before decoding, their estimated size
//!   (about 9 bytes per pixel value: the bytes, and the f32 samples with the copy made while
//!   splitting) is compared with a limit ([`FolderOptions::cache_limit`], by default half of
//!   `MemAvailable` in `/proc/meminfo`; none where that cannot be read), and a dataset over it
//!   is an error that says how to shrink it: kiln does not stream images from disk.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{ColorType, DynamicImage, ImageReader};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use super::dataset::split_indices;
use super::error::{bad_file, invalid, io_error, DataError};
use super::info::Sources;
use super::samples::{FileDataset, U8Samples};
use super::spec::{DataSpec, DatasetKind};

/// The file extensions read as images (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Bytes of memory per pixel value of the estimate checked against the cache limit.
pub const BYTES_PER_VALUE: u64 = 9;

/// How an image folder is read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FolderOptions {
    /// Resize the shorter side to this and center-crop to a square; `None`: keep the size.
    pub image_size: Option<usize>,
    /// 1 or 3; `None`: 1 when every image is greyscale, else 3.
    pub channels: Option<usize>,
    /// The test fraction of a folder without `train/` and `test/` (default 0.1).
    pub test_fraction: Option<f64>,
    /// The most bytes the decoded dataset may take; `None`: half of the available memory.
    pub cache_limit: Option<u64>,
}

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// The entries of `dir` that are not hidden, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .map(|e| e.map(|e| e.path()).map_err(io_error(dir)))
        .collect::<Result<_, _>>()?;
    entries.retain(|p| !p.file_name().is_some_and(hidden));
    entries.sort();
    Ok(entries)
}

/// The image files in `dir` and below it, in sorted order (also `kiln predict DIR`'s inputs).
pub(crate) fn images_below(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in sorted_entries(dir)? {
        if entry.is_dir() {
            images_below(&entry, out)?;
        } else if is_image(&entry) && entry.is_file() {
            out.push(entry);
        }
    }
    Ok(())
}

/// Whether `dir` looks like an image folder: `dir/train` or `dir` has a sub-folder with an image
/// directly in it.
pub fn has_image_folders(dir: &Path) -> bool {
    let root = if dir.join("train").is_dir() {
        dir.join("train")
    } else {
        dir.to_path_buf()
    };
    let Ok(classes) = sorted_entries(&root) else {
        return false;
    };
    classes.iter().filter(|c| c.is_dir()).any(|c| {
        sorted_entries(c).is_ok_and(|files| files.iter().any(|f| is_image(f) && f.is_file()))
    })
}

/// The class folders of one split: their names and each image with its label.
struct Scanned {
    classes: Vec<String>,
    files: Vec<(PathBuf, i32)>,
}

/// Scans `root`'s class folders. With `classes`, the folders must be among them (the test split
/// takes the training split's classes) and may be missing.
fn scan(root: &Path, classes: Option<&[String]>) -> Result<Scanned, DataError> {
    let folders: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if folders.is_empty() {
        return Err(bad_file(
            root,
            "holds no class folders (expected CLASS/IMAGE.png|jpg|jpeg)",
        ));
    }
    let names: Vec<String> = folders
        .iter()
        .map(|p| {
            p.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    let mut files = Vec::new();
    for (folder, name) in folders.iter().zip(&names) {
        let label = match classes {
            None => names.iter().position(|n| n == name).unwrap_or(0),
            Some(classes) => classes.iter().position(|c| c == name).ok_or_else(|| {
                bad_file(
                    folder,
                    format!(
                        "a test class the training split does not have (its classes: {})",
                        classes.join(", ")
                    ),
                )
            })?,
        };
        let mut images = Vec::new();
        images_below(folder, &mut images)?;
        if images.is_empty() {
            return Err(bad_file(
                folder,
                "empty class folder: no .png, .jpg or .jpeg files in it",
            ));
        }
        files.extend(images.into_iter().map(|p| (p, label as i32)));
    }
    Ok(Scanned {
        classes: names,
        files,
    })
}

/// torchvision's `CenterCrop` offset `int(round((side - size) / 2))`, Python rounding ties to
/// even.
fn crop_offset(side: u32, size: u32) -> u32 {
    let d = side - size;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Resizes the shorter side of `img` to `size` and crops the center `size × size`.
fn resize_and_crop(img: DynamicImage, size: u32) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let (short, long) = (w.min(h), w.max(h));
    let new_long = ((size as u64 * long as u64) / short as u64).max(size as u64) as u32;
    let (nw, nh) = if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    };
    let img = if (nw, nh) == (w, h) {
        img
    } else {
        img.resize_exact(nw, nh, FilterType::Triangle)
    };
    img.crop_imm(crop_offset(nw, size), crop_offset(nh, size), size, size)
}

/// One decoded image: `[C, H, W]` bytes with C 1 or 3.
pub(crate) struct Decoded {
    pub(crate) channels: usize,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) pixels: Vec<u8>,
}

/// The image at `path` as a training sample of the folder is made (`kiln predict` reads its
/// inputs so): resized and cropped to `size`, converted to `channels`.
pub(crate) fn decode(
    path: &Path,
    size: Option<u32>,
    channels: Option<usize>,
) -> Result<Decoded, DataError> {
    let img = ImageReader::open(path)
        .map_err(io_error(path))?
        .with_guessed_format()
        .map_err(io_error(path))?
        .decode()
        .map_err(|e| bad_file(path, format!("cannot decode the image: {e}")))?;
    let grey = matches!(
        img.color(),
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
    );
    let img = match size {
        Some(s) => resize_and_crop(img, s),
        None => img,
    };
    let (width, height) = (img.width(), img.height());
    let channels = channels.unwrap_or(if grey { 1 } else { 3 });
    let pixels = if channels == 1 {
        img.to_luma8().into_raw()
    } else {
        let rgb = img.to_rgb8().into_raw();
        let plane = (width * height) as usize;
        let mut chw = vec![0u8; rgb.len()];
        for (p, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * plane + p] = px[c];
            }
        }
        chw
    };
    Ok(Decoded {
        channels,
        width,
        height,
        pixels,
    })
}

/// Half of `MemAvailable` from `/proc/meminfo`, if it can be read.
fn default_cache_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024 / 2)
}

/// `n` bytes for a person: `"1.5 GiB"`.
fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Parses a size in bytes with an optional binary suffix: `"512M"`, `"8G"`, `"1048576"`,
/// `"2GiB"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use K, M, G or T)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512M or 8G"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("{text:?} must be positive"));
    }
    Ok((value * scale as f64) as u64)
}

/// Loads the image folder at `dir` (see the module docs).
pub fn load_image_folder(dir: &Path, options: &FolderOptions) -> Result<FileDataset, DataError> {
    if let Some(c) = options.channels.filter(|&c| c != 1 && c != 3) {
        return Err(invalid(
            "channels",
            format!("{c}: images are read with 1 or 3 channels"),
        ));
    }
    let size = match options.image_size {
        Some(0) => return Err(invalid("image size", "must be at least 1")),
        Some(s) => {
            Some(u32::try_from(s).map_err(|_| invalid("image size", format!("{s} is too large")))?)
        }
        None => None,
    };
    if !dir.is_dir() {
        return Err(DataError::NotFound {
            dataset: "image folder",
            why: format!("{} is not a directory", dir.display()),
        });
    }
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let mut origin = DataSpec::new(DatasetKind::Folder, Some(dir));
    origin.image_size = options.image_size;
    origin.channels = options.channels;
    // (files, label) of each split, the class names and the sources.
    let (classes, train_files, test_files, sources) = if train_dir.is_dir() {
        if !test_dir.is_dir() {
            return Err(bad_file(
                dir,
                "has a train/ folder but no test/ folder beside it (give both, or put the \
                 class folders in DIR itself to hold out a test fraction)",
            ));
        }
        let train = scan(&train_dir, None)?;
        let test = scan(&test_dir, Some(&train.classes))?;
        let sources = Sources {
            train: train_dir.display().to_string(),
            test: test_dir.display().to_string(),
        };
        (train.classes, train.files, test.files, sources)
    } else {
        let fraction = options.test_fraction.unwrap_or(0.1);
        origin.test_fraction = Some(fraction);
        let all = scan(dir, None)?;
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for label in 0..all.classes.len() as i32 {
            let of_class: Vec<&(PathBuf, i32)> =
                all.files.iter().filter(|(_, l)| *l == label).collect();
            let (keep, held) = split_indices(of_class.len(), fraction, 0)
                .map_err(|e| invalid("test fraction", e.to_string()))?;
            train.extend(keep.iter().map(|&i| of_class[i].clone()));
            test.extend(held.iter().map(|&i| of_class[i].clone()));
        }
        let sources = Sources {
            train: format!("{} (the images not held out for testing)", dir.display()),
            test: format!(
                "{} ({}% of each class's images, held out with a fixed seed)",
                dir.display(),
                fraction * 100.0
            ),
        };
        (all.classes, train, test, sources)
    };

    // The memory the decoded dataset will take, checked before anything is decoded.
    let all_files: Vec<&(PathBuf, i32)> = train_files.iter().chain(&test_files).collect();
    let (side_w, side_h) = match size {
        Some(s) => (s, s),
        None => {
            let first = &all_files[0].0;
            image::image_dimensions(first)
                .map_err(|e| bad_file(first, format!("cannot read the image's size: {e}")))?
        }
    };
    let values_per_image = options.channels.unwrap_or(3) as u64 * side_w as u64 * side_h as u64;
    let estimate = all_files.len() as u64 * values_per_image * BYTES_PER_VALUE;
    let (limit, limit_source) = match options.cache_limit {
        Some(l) => (Some(l), "--cache-limit"),
        None => (
            default_cache_limit(),
            "half of MemAvailable in /proc/meminfo",
        ),
    };
    if let Some(limit) = limit.filter(|&l| estimate > l) {
        return Err(invalid(
            "image cache",
            format!(
                "{} images of {}x{side_h}x{side_w} need about {} in memory, more than the limit \
                 of {} ({limit_source}); kiln keeps the decoded images in memory: pass a smaller \
                 --image-size, or a larger --cache-limit",
                all_files.len(),
                options.channels.unwrap_or(3),
                human_bytes(estimate),
                human_bytes(limit)
            ),
        ));
    }

    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(all_files.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("decoding {pos}/{len} images {wide_bar} {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    let decoded: Vec<Decoded> = all_files
        .par_iter()
        .map(|(path, _)| {
            let d = decode(path, size, options.channels);
            bar.inc(1);
            d
        })
        .collect::<Result<_, _>>()?;
    bar.finish_and_clear();

    // Every image must have the first one's size (after resizing, all do).
    let (w0, h0) = (decoded[0].width, decoded[0].height);
    if let Some((i, d)) = decoded
        .iter()
        .enumerate()
        .find(|(_, d)| (d.width, d.height) != (w0, h0))
    {
        return Err(bad_file(
            &all_files[i].0,
            format!(
                "image of {}x{} (width x height), but {} is {w0}x{h0}: images of different \
                 sizes need --image-size N (resize and center-crop to NxN)",
                d.width,
                d.height,
                all_files[0].0.display()
            ),
        ));
    }
    let channels = options
        .channels
        .unwrap_or(if decoded.iter().any(|d| d.channels == 3) {
            3
        } else {
            1
        });
    let shape = [channels, h0 as usize, w0 as usize];
    let plane = (w0 * h0) as usize;
    let split = |range: std::ops::Range<usize>| {
        let mut out = U8Samples::empty(shape);
        out.pixels.reserve(range.len() * channels * plane);
        for i in range {
            let d = &decoded[i];
            for _ in 0..channels / d.channels {
                out.pixels.extend_from_slice(&d.pixels);
            }
            out.labels.push(all_files[i].1);
        }
        out
    };
    let train = split(0..train_files.len());
    let test = split(train_files.len()..all_files.len());
    let name = format!(
        "image folder {} ({channels}x{h0}x{w0})",
        dir.file_name().map_or(dir.display().to_string(), |n| n
            .to_string_lossy()
            .into_owned())
    );
    Ok(FileDataset {
        name,
        class_names: classes,
        train,
        test,
        sources,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_crop_offsets_round_ties_to_even_as_python() {
        // int(round((side - size) / 2)) in Python: round(0.5) = 0, round(1.5) = 2, round(2.5) = 2.
        assert_eq!(crop_offset(33, 32), 0);
        assert_eq!(crop_offset(35, 32), 2);
        assert_eq!(crop_offset(37, 32), 2);
        assert_eq!(crop_offset(36, 32), 2);
        assert_eq!(crop_offset(32, 32), 0);
    }

    #[test]
    fn the_shorter_side_is_resized_then_the_center_cropped() {
        let img = DynamicImage::new_rgb8(40, 20);
        let out = resize_and_crop(img, 10);
        assert_eq!((out.width(), out.height()), (10, 10));
        let img = DynamicImage::new_luma8(7, 9);
        assert_eq!(resize_and_crop(img, 7).height(), 7);
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("8X").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn extensions_are_compared_without_case() {
        assert!(is_image(Path::new("a/b.PNG")));
        assert!(is_image(Path::new("a/b.JpEg")));
        assert!(!is_image(Path::new("a/b.gif")));
        assert!(!is_image(Path::new("a/png")));
    }
}
