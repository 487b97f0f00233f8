//! Datasets other than Fashion-MNIST (issue 14, "Your data"): IDX files of any size and 1 or 3
//! channels, the CIFAR-10 and CIFAR-100 binaries, image folders, format detection, every
//! malformed input as an error naming the file (and the sample), the data's description in the
//! checkpoint, and `kiln train` / `kiln eval` on each format through the binary. Every file is
//! written here, in a temporary folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{GrayImage, Rgb, RgbImage};
use kiln::data::{
    detect, find_idx_files, load_cifar10, load_cifar100, load_idx_dataset, load_image_folder,
    read_idx_samples, write_idx_labels, write_idx_samples, Augment, CifarLabels, DataError,
    DataLoader, DataSpec, DatasetKind, DatasetProvider, FolderOptions, IdxSamples,
    IDX_IMAGES4_MAGIC,
};
use kiln::nn::Architecture;
use kiln::train::{load_run_checkpoint, train, TrainConfig};
use kiln::Device;

/// A fresh directory under the system temp dir (its path, and the `tempfile` guard that removes
/// it on drop).
struct TempDir(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let guard = tempfile::Builder::new()
            .prefix(&format!("kiln-datasets-{name}-"))
            .tempdir()
            .unwrap();
        TempDir(guard.path().to_path_buf(), guard)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

fn err_text<T: std::fmt::Debug>(r: Result<T, DataError>) -> String {
    r.expect_err("expected an error").to_string()
}

// ---------------------------------------------------------------------------------------------
// IDX

/// `count` samples of `shape` whose class `n % classes` is a bright row at its own height.
fn idx_samples(count: usize, shape: [usize; 3], classes: usize) -> (IdxSamples, Vec<u8>) {
    let [c, h, w] = shape;
    let mut pixels = vec![20u8; count * c * h * w];
    let labels: Vec<u8> = (0..count).map(|n| (n % classes) as u8).collect();
    for (n, img) in pixels.chunks_mut(c * h * w).enumerate() {
        let row = (n % classes) * h / classes;
        for ch in 0..c {
            let plane = &mut img[ch * h * w..(ch + 1) * h * w];
            plane[row * w..(row + 1) * w].fill(200 + ch as u8 * 20);
        }
        img[0] = n as u8; // distinct samples
    }
    let samples = IdxSamples {
        count,
        shape,
        pixels,
    };
    (samples, labels)
}

/// Writes a train and test pair named `{prefix}{split}-{images|labels}{sep}idxN-ubyte[.gz]`.
fn write_idx_set(
    dir: &Path,
    prefix: &str,
    sep: &str,
    shape: [usize; 3],
    classes: usize,
    counts: (usize, usize),
    gzip: bool,
) {
    let rank = if shape[0] == 1 { 3 } else { 4 };
    let gz = if gzip { ".gz" } else { "" };
    for (split, count) in [("train", counts.0), ("t10k", counts.1)] {
        let (samples, labels) = idx_samples(count, shape, classes);
        let images = dir.join(format!("{prefix}{split}-images{sep}idx{rank}-ubyte{gz}"));
        let label_file = dir.join(format!("{prefix}{split}-labels{sep}idx1-ubyte{gz}"));
        write_idx_samples(&images, &samples, gzip).unwrap();
        write_idx_labels(&label_file, &labels, gzip).unwrap();
    }
}

#[test]
fn idx_of_three_channels_is_channels_last_on_disk_and_channels_first_in_memory() {
    let dir = TempDir::new("idx-rgb");
    let path = dir.path("x-idx4-ubyte");
    // Two 3x2x2 samples whose value names the sample, channel, row and column.
    let pixels: Vec<u8> = (0..2 * 12).map(|i| i as u8).collect();
    let samples = IdxSamples {
        count: 2,
        shape: [3, 2, 2],
        pixels: pixels.clone(),
    };
    write_idx_samples(&path, &samples, false).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], &IDX_IMAGES4_MAGIC.to_be_bytes());
    assert_eq!(
        &bytes[4..20],
        &[0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]
    );
    // Pixel (0, 0) of sample 0 holds its three channels side by side: 0, 4, 8.
    assert_eq!(&bytes[20..26], &[0, 4, 8, 1, 5, 9]);
    assert_eq!(read_idx_samples(&path).unwrap(), samples);

    // A rank-4 file with 2 channels is refused, naming the file and the layout.
    let mut bad = bytes.clone();
    bad[19] = 2;
    bad.truncate(20 + 2 * 2 * 2 * 2);
    std::fs::write(&path, &bad).unwrap();
    let e = err_text(read_idx_samples(&path));
    assert!(
        e.contains("x-idx4-ubyte") && e.contains("channels last") && e.contains("2 channels"),
        "{e}"
    );
    // A rank-2 file is neither images nor images with channels.
    let mut rank2 = vec![0, 0, 8, 2];
    rank2.extend([0, 0, 0, 1, 0, 0, 0, 1, 7]);
    std::fs::write(&path, &rank2).unwrap();
    let e = err_text(read_idx_samples(&path));
    assert!(e.contains("must be 3 or 4-dimensional"), "{e}");
}

#[test]
fn idx_datasets_of_any_size_channels_and_class_count() {
    let dir = TempDir::new("idx-any");
    // 12x10 greyscale, 13 classes, raw files with the Windows-download names.
    write_idx_set(&dir.0, "", ".", [1, 12, 10], 13, (40, 26), false);
    let data = load_idx_dataset(&dir.0).unwrap();
    assert_eq!(data.sample_shape(), [1, 12, 10]);
    assert_eq!(data.num_classes(), 13, "the largest label + 1");
    assert_eq!(data.class_names[12], "12");
    assert_eq!((data.train.len(), data.test.len()), (40, 26));
    assert_eq!(data.origin.kind, DatasetKind::MnistIdx);
    assert!(data.sources.train.ends_with("train-images.idx3-ubyte"));

    // A classes.txt names the classes; a label past them is an error naming file and sample.
    std::fs::write(dir.path("classes.txt"), "zero\none\n").unwrap();
    let e = err_text(load_idx_dataset(&dir.0));
    assert!(
        e.contains("train-labels.idx1-ubyte")
            && e.contains("sample 2")
            && e.contains("label 2 is not in 0..2")
            && e.contains("classes.txt"),
        "{e}"
    );
    let names: String = (0..13).map(|i| format!("c{i}\n")).collect();
    std::fs::write(dir.path("classes.txt"), names).unwrap();
    assert_eq!(load_idx_dataset(&dir.0).unwrap().class_names[3], "c3");

    // 3-channel gzip files with an EMNIST-style prefix beside a second prefixed set.
    let rgb = TempDir::new("idx-prefix");
    write_idx_set(&rgb.0, "mine-rgb-", "-", [3, 8, 8], 4, (20, 8), true);
    write_idx_set(&rgb.0, "mine-grey-", "-", [1, 8, 8], 4, (20, 8), true);
    let e = err_text(load_idx_dataset(&rgb.0));
    assert!(
        e.contains("several IDX datasets") && e.contains("mine-grey, mine-rgb"),
        "{e}"
    );
    let data = load_idx_dataset(&rgb.path("mine-rgb")).unwrap();
    assert_eq!(data.sample_shape(), [3, 8, 8]);
    assert_eq!(data.num_classes(), 4);
    let files = find_idx_files(&rgb.path("mine-grey")).unwrap();
    assert!(files
        .train_images
        .ends_with("mine-grey-train-images-idx3-ubyte.gz"));

    // EMNIST's mapping file names the classes by character code.
    std::fs::write(
        rgb.path("mine-rgb-mapping.txt"),
        "0 48\n1 65\n2 97\n3 122\n",
    )
    .unwrap();
    let data = load_idx_dataset(&rgb.path("mine-rgb")).unwrap();
    assert_eq!(data.class_names, ["0", "A", "a", "z"]);
}

#[test]
fn malformed_idx_datasets_name_the_files() {
    let dir = TempDir::new("idx-bad");
    write_idx_set(&dir.0, "", "-", [1, 8, 8], 3, (10, 5), false);
    // Test images of another size than the training images.
    let (other, _) = idx_samples(5, [1, 9, 8], 3);
    write_idx_samples(&dir.path("t10k-images-idx3-ubyte"), &other, false).unwrap();
    let e = err_text(load_idx_dataset(&dir.0));
    assert!(
        e.contains("t10k-images-idx3-ubyte") && e.contains("[1, 9, 8]") && e.contains("[1, 8, 8]"),
        "{e}"
    );
    // Fewer labels than images.
    let (samples, _) = idx_samples(5, [1, 8, 8], 3);
    write_idx_samples(&dir.path("t10k-images-idx3-ubyte"), &samples, false).unwrap();
    write_idx_labels(&dir.path("t10k-labels-idx1-ubyte"), &[0, 1], false).unwrap();
    let e = err_text(load_idx_dataset(&dir.0));
    assert!(e.contains("5 images") && e.contains("2 labels"), "{e}");
    // A missing file: what was looked for.
    std::fs::remove_file(dir.path("t10k-labels-idx1-ubyte")).unwrap();
    let e = err_text(load_idx_dataset(&dir.0));
    assert!(
        e.contains("lacks") && e.contains("t10k-labels-idx1-ubyte") && e.contains("found only"),
        "{e}"
    );
    // A truncated image file (the reader's own check).
    write_idx_labels(&dir.path("t10k-labels-idx1-ubyte"), &[0; 5], false).unwrap();
    let path = dir.path("train-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let e = err_text(load_idx_dataset(&dir.0));
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// CIFAR

/// A CIFAR record: the label bytes, then pixel value `(label · 10 + plane) % 256` in plane
/// `plane` (R, G, B) and the sample's index in the first pixel.
fn cifar_record(labels: &[u8], index: usize) -> Vec<u8> {
    let mut r = labels.to_vec();
    let label = *labels.last().unwrap();
    for plane in 0..3u8 {
        r.extend(std::iter::repeat_n(
            label.wrapping_mul(10).wrapping_add(plane),
            1024,
        ));
    }
    r[labels.len()] = index as u8;
    r
}

fn write_cifar10(dir: &Path, batches: &[usize], test: usize) {
    let mut n = 0;
    for (b, &count) in batches.iter().enumerate() {
        let bytes: Vec<u8> = (0..count)
            .flat_map(|_| {
                n += 1;
                cifar_record(&[(n % 10) as u8], n)
            })
            .collect();
        std::fs::write(dir.join(format!("data_batch_{}.bin", b + 1)), bytes).unwrap();
    }
    let bytes: Vec<u8> = (0..test)
        .flat_map(|i| cifar_record(&[(i % 10) as u8], i))
        .collect();
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
}

#[test]
fn cifar10_records_are_read_as_label_then_rgb_planes() {
    let dir = TempDir::new("cifar10");
    let root = dir.path("cifar-10-batches-bin");
    std::fs::create_dir_all(&root).unwrap();
    write_cifar10(&root, &[7, 5], 10);
    let data = load_cifar10(&dir.0).unwrap();
    assert_eq!(data.sample_shape(), [3, 32, 32]);
    assert_eq!((data.train.len(), data.test.len()), (12, 10));
    assert_eq!(
        data.class_names[0], "airplane",
        "built in without batches.meta.txt"
    );
    // Sample 8 is record 2 of data_batch_2.bin: n = 9, label 9.
    assert_eq!(data.train.labels[8], 9);
    let img = &data.train.pixels[8 * 3072..9 * 3072];
    assert_eq!((img[0], img[1], img[1024], img[2048]), (9, 90, 91, 92));
    assert!(data.sources.train.ends_with("data_batch_{1..2}.bin"));
    assert_eq!(detect(&dir.0).unwrap(), DatasetKind::Cifar10);

    std::fs::write(
        root.join("batches.meta.txt"),
        "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n",
    )
    .unwrap();
    assert_eq!(load_cifar10(&root).unwrap().class_names[9], "j");
    std::fs::write(root.join("batches.meta.txt"), "a\nb\n").unwrap();
    let e = err_text(load_cifar10(&root));
    assert!(
        e.contains("batches.meta.txt")
            && e.contains("expected 10 class names")
            && e.contains("found 2"),
        "{e}"
    );
}

#[test]
fn malformed_cifar_files_name_the_file_and_the_record() {
    let dir = TempDir::new("cifar-bad");
    write_cifar10(&dir.0, &[4], 3);
    // A truncated record.
    let path = dir.path("data_batch_1.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..3073 * 3 + 100]).unwrap();
    let e = err_text(load_cifar10(&dir.0));
    assert!(
        e.contains("data_batch_1.bin: sample 3: truncated record")
            && e.contains("3073 bytes")
            && e.contains("100 bytes of one more"),
        "{e}"
    );
    // A label out of range.
    let mut bytes = bytes.clone();
    bytes[3073 * 2] = 10;
    std::fs::write(&path, &bytes).unwrap();
    let e = err_text(load_cifar10(&dir.0));
    assert!(
        e.contains("data_batch_1.bin: sample 2: label 10 is not in 0..10"),
        "{e}"
    );
    // A gap in the batch numbers, an empty file, a missing test file.
    bytes[3073 * 2] = 1;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dir.path("data_batch_3.bin"), &bytes).unwrap();
    let e = err_text(load_cifar10(&dir.0));
    assert!(
        e.contains("lacks data_batch_2.bin") && e.contains("{1,3}"),
        "{e}"
    );
    std::fs::write(dir.path("data_batch_2.bin"), b"").unwrap();
    let e = err_text(load_cifar10(&dir.0));
    assert!(
        e.contains("data_batch_2.bin") && e.contains("at least one record"),
        "{e}"
    );
    std::fs::remove_file(dir.path("test_batch.bin")).unwrap();
    let e = err_text(load_cifar10(&dir.0));
    assert!(e.contains("test_batch.bin"), "{e}");
}

#[test]
fn cifar100_fine_and_coarse_labels() {
    let dir = TempDir::new("cifar100");
    let record = |i: usize| cifar_record(&[(i % 20) as u8, (i % 100) as u8], i);
    let train: Vec<u8> = (0..30).flat_map(record).collect();
    let test: Vec<u8> = (0..7).flat_map(record).collect();
    std::fs::write(dir.path("train.bin"), &train).unwrap();
    std::fs::write(dir.path("test.bin"), &test).unwrap();
    let fine = load_cifar100(&dir.0, CifarLabels::Fine).unwrap();
    assert_eq!(fine.num_classes(), 100);
    assert_eq!(fine.train.labels[25], 25);
    assert_eq!(fine.train.pixels[25 * 3072 + 1], 250, "fine label 25 · 10");
    let coarse = load_cifar100(&dir.0, CifarLabels::Coarse).unwrap();
    assert_eq!(coarse.num_classes(), 20);
    assert_eq!(coarse.train.labels[25], 5);
    assert_eq!(coarse.origin.labels, CifarLabels::Coarse);
    assert_eq!(detect(&dir.0).unwrap(), DatasetKind::Cifar100);
    let names: String = (0..20).map(|i| format!("super{i}\n")).collect();
    std::fs::write(dir.path("coarse_label_names.txt"), names).unwrap();
    assert_eq!(
        load_cifar100(&dir.0, CifarLabels::Coarse)
            .unwrap()
            .class_names[19],
        "super19"
    );
    // A coarse label of 20 and a record cut short.
    let mut bad = train.clone();
    bad[3074 * 4] = 20;
    std::fs::write(dir.path("train.bin"), &bad).unwrap();
    let e = err_text(load_cifar100(&dir.0, CifarLabels::Coarse));
    assert!(
        e.contains("train.bin: sample 4: coarse label 20 is not in 0..20"),
        "{e}"
    );
    std::fs::write(dir.path("test.bin"), &test[..3074 * 2 - 1]).unwrap();
    let e = err_text(load_cifar100(&dir.0, CifarLabels::Fine));
    assert!(
        e.contains("test.bin: sample 1: truncated record") && e.contains("3074 bytes"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Image folders

fn rgb_image(w: u32, h: u32, color: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, _| {
        Rgb([color[0], color[1], color[2].wrapping_add(x as u8)])
    })
}

fn save(img: &impl Saveable, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save_to(path);
}

trait Saveable {
    fn save_to(&self, path: &Path);
}
impl Saveable for RgbImage {
    fn save_to(&self, path: &Path) {
        self.save(path).unwrap();
    }
}
impl Saveable for GrayImage {
    fn save_to(&self, path: &Path) {
        self.save(path).unwrap();
    }
}

/// `DIR/train/{cat,ant,bee}/k.png|jpg` and `DIR/test/...`, `size`x`size` RGB.
fn write_folder(dir: &Path, size: u32, per_class: usize) {
    for (split, n) in [("train", per_class), ("test", 2)] {
        for (c, class) in ["cat", "ant", "bee"].iter().enumerate() {
            for k in 0..n {
                let img = rgb_image(size, size, [c as u8 * 100, k as u8, 7]);
                let ext = if k % 2 == 0 { "png" } else { "JPG" };
                save(&img, &dir.join(format!("{split}/{class}/{k}.{ext}")));
            }
        }
    }
}

fn options(image_size: Option<usize>) -> FolderOptions {
    FolderOptions {
        image_size,
        ..FolderOptions::default()
    }
}

#[test]
fn image_folders_take_sorted_class_names_and_decode_png_and_jpeg() {
    let dir = TempDir::new("folder");
    write_folder(&dir.0, 6, 4);
    // Ignored: other extensions, hidden folders and files.
    std::fs::write(dir.path("train/cat/notes.txt"), "not an image").unwrap();
    std::fs::write(dir.path("train/cat/.hidden.png"), "not an image").unwrap();
    save(
        &rgb_image(6, 6, [1, 2, 3]),
        &dir.path("train/.ipynb_checkpoints/x.png"),
    );
    let data = load_image_folder(&dir.0, &options(None)).unwrap();
    assert_eq!(
        data.class_names,
        ["ant", "bee", "cat"],
        "sorted, as torchvision"
    );
    assert_eq!(data.sample_shape(), [3, 6, 6]);
    assert_eq!((data.train.len(), data.test.len()), (12, 6));
    // ant (label 0) is the second folder written: red channel 100 in its PNGs (lossless).
    assert_eq!(data.train.labels[0], 0);
    assert_eq!(data.train.pixels[0], 100);
    assert_eq!(data.train.pixels[36 + 1], 0, "green = k = 0");
    assert_eq!(data.train.pixels[72 + 5], 7 + 5, "blue = 7 + x");
    assert_eq!(detect(&dir.0).unwrap(), DatasetKind::Folder);
    assert_eq!(data.origin.kind, DatasetKind::Folder);
    assert!(data.sources.test.ends_with("test"));

    // Resized (shorter side) and center-cropped: 6x6 -> 4x4.
    let small = load_image_folder(&dir.0, &options(Some(4))).unwrap();
    assert_eq!(small.sample_shape(), [3, 4, 4]);
    assert_eq!(small.origin.image_size, Some(4));

    // --channels 1: every image to greyscale.
    let grey = load_image_folder(
        &dir.0,
        &FolderOptions {
            channels: Some(1),
            ..FolderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(grey.sample_shape(), [1, 6, 6]);
}

#[test]
fn resizing_keeps_the_aspect_and_crops_the_center() {
    let dir = TempDir::new("folder-resize");
    // 12x6, left half black, right half white, one class in one folder: resized to 8x4 then
    // the center 4x4 crop covers columns 2..6: two black, two white.
    let img = GrayImage::from_fn(12, 6, |x, _| image::Luma([if x < 6 { 0 } else { 255 }]));
    for k in 0..10 {
        save(&img, &dir.path(&format!("only/{k}.png")));
    }
    let data = load_image_folder(&dir.0, &options(Some(4))).unwrap();
    assert_eq!(data.sample_shape(), [1, 4, 4], "all greyscale: 1 channel");
    let row = &data.train.pixels[..4];
    assert!(row[0] < 10 && row[3] > 245, "{row:?}");
    // One folder: 10% of each class is the test set, the rest training.
    assert_eq!((data.train.len(), data.test.len()), (9, 1));
    assert_eq!(data.origin.test_fraction, Some(0.1));
}

#[test]
fn mixed_greyscale_and_rgb_images_become_rgb() {
    let dir = TempDir::new("folder-mixed");
    for k in 0..4 {
        save(
            &rgb_image(5, 5, [10, 20, 30]),
            &dir.path(&format!("a/{k}.png")),
        );
        let grey = GrayImage::from_pixel(5, 5, image::Luma([77]));
        save(&grey, &dir.path(&format!("b/{k}.png")));
    }
    let data = load_image_folder(
        &dir.0,
        &FolderOptions {
            test_fraction: Some(0.25),
            ..FolderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(data.sample_shape(), [3, 5, 5]);
    assert_eq!((data.train.len(), data.test.len()), (6, 2));
    let b = data.train.labels.iter().position(|&l| l == 1).unwrap();
    let img = &data.train.pixels[b * 75..(b + 1) * 75];
    assert!(
        img.iter().all(|&p| p == 77),
        "grey replicated to R, G and B"
    );
    // The held-out test images are the same every time.
    let again = load_image_folder(
        &dir.0,
        &FolderOptions {
            test_fraction: Some(0.25),
            ..FolderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(again.test, data.test);
}

#[test]
fn malformed_image_folders_name_the_file_or_folder() {
    let dir = TempDir::new("folder-bad");
    write_folder(&dir.0, 6, 2);
    // An image of another size, without --image-size.
    save(&rgb_image(7, 6, [0, 0, 0]), &dir.path("train/bee/9.png"));
    let e = err_text(load_image_folder(&dir.0, &options(None)));
    assert!(
        e.contains("train/bee/9.png")
            && e.contains("7x6")
            && e.contains("is 6x6")
            && e.contains("--image-size"),
        "{e}"
    );
    assert!(load_image_folder(&dir.0, &options(Some(6))).is_ok());
    std::fs::remove_file(dir.path("train/bee/9.png")).unwrap();
    // A corrupt image.
    std::fs::write(
        dir.path("train/ant/bad.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let e = err_text(load_image_folder(&dir.0, &options(None)));
    assert!(
        e.contains("train/ant/bad.png") && e.contains("cannot decode"),
        "{e}"
    );
    std::fs::remove_file(dir.path("train/ant/bad.png")).unwrap();
    // An empty class folder (only an ignored file in it).
    std::fs::create_dir_all(dir.path("train/dog")).unwrap();
    std::fs::write(dir.path("train/dog/readme.md"), "x").unwrap();
    let e = err_text(load_image_folder(&dir.0, &options(None)));
    assert!(
        e.contains("train/dog") && e.contains("empty class folder"),
        "{e}"
    );
    std::fs::remove_dir_all(dir.path("train/dog")).unwrap();
    // A test class the training split lacks.
    save(&rgb_image(6, 6, [0, 0, 0]), &dir.path("test/eel/0.png"));
    let e = err_text(load_image_folder(&dir.0, &options(None)));
    assert!(e.contains("test/eel") && e.contains("ant, bee, cat"), "{e}");
    std::fs::remove_dir_all(dir.path("test/eel")).unwrap();
    // Bad options and a dataset over the cache limit.
    let e = err_text(load_image_folder(
        &dir.0,
        &FolderOptions {
            channels: Some(2),
            ..FolderOptions::default()
        },
    ));
    assert!(e.contains("1 or 3"), "{e}");
    let e = err_text(load_image_folder(
        &dir.0,
        &FolderOptions {
            image_size: Some(64),
            cache_limit: Some(1000),
            ..FolderOptions::default()
        },
    ));
    assert!(
        e.contains("12 images of 3x64x64") && e.contains("--cache-limit") && e.contains("1000 B"),
        "{e}"
    );
    // train/ without test/.
    std::fs::remove_dir_all(dir.path("test")).unwrap();
    let e = err_text(load_image_folder(&dir.0, &options(None)));
    assert!(e.contains("no test/ folder"), "{e}");
}

#[test]
fn detection_tells_the_formats_apart() {
    let dir = TempDir::new("detect");
    std::fs::write(dir.path("readme.txt"), "hello").unwrap();
    let e = err_text(detect(&dir.0));
    assert!(
        e.contains("holds none of the formats") && e.contains("--dataset"),
        "{e}"
    );
    // Fashion-MNIST's (and MNIST's) file names: Fashion-MNIST, as `--data DIR` always meant,
    // unless the folder is named for another MNIST.
    let plain = dir.path("plain");
    let mnist = dir.path("mnist");
    let nested = dir.path("nested");
    for d in [&plain, &mnist, &nested.join("fashion-mnist")] {
        std::fs::create_dir_all(d).unwrap();
        write_idx_set(d, "", "-", [1, 28, 28], 10, (4, 2), true);
    }
    assert_eq!(detect(&plain).unwrap(), DatasetKind::FashionMnist);
    assert_eq!(detect(&nested).unwrap(), DatasetKind::FashionMnist);
    assert_eq!(detect(&mnist).unwrap(), DatasetKind::MnistIdx);
    // Other IDX names (a prefix, a `.` before idx, idx4 images) are mnist-idx wherever they are.
    let emnist = dir.path("emnist");
    std::fs::create_dir_all(&emnist).unwrap();
    write_idx_set(
        &emnist,
        "emnist-digits-",
        "-",
        [1, 28, 28],
        10,
        (4, 2),
        true,
    );
    assert_eq!(detect(&emnist).unwrap(), DatasetKind::MnistIdx);
    let rgb = dir.path("rgb");
    std::fs::create_dir_all(&rgb).unwrap();
    write_idx_set(&rgb, "", ".", [3, 8, 8], 2, (4, 2), false);
    assert_eq!(detect(&rgb).unwrap(), DatasetKind::MnistIdx);
}

// ---------------------------------------------------------------------------------------------
// Training, the checkpoint's description, augmentation

#[test]
fn any_sample_shape_is_augmented_and_batched() {
    let dir = TempDir::new("augment");
    write_folder(&dir.0, 8, 4);
    let data = load_image_folder(&dir.0, &options(None)).unwrap();
    let splits = data.prepare(0.25, 3).unwrap();
    let augment = Augment {
        hflip: true,
        shift_pad: 2,
        jitter_std: 0.1,
    };
    let loader = DataLoader::new(splits.splits.train, 4, Device::Cpu)
        .unwrap()
        .with_shuffle(1)
        .with_augment(augment)
        .unwrap();
    let batch = loader.host_batch(0, 0).unwrap();
    assert_eq!(batch.shape, [4, 3, 8, 8]);
    assert!(batch.images.iter().all(|x| x.is_finite()));
}

#[test]
fn the_checkpoint_records_the_data_and_reads_it_again() {
    let dir = TempDir::new("train");
    let root = dir.path("cifar");
    std::fs::create_dir_all(&root).unwrap();
    write_cifar10(&root, &[20], 10);
    let data = DataSpec::new(DatasetKind::Cifar10, Some(&root))
        .load(None)
        .unwrap();
    let config = TrainConfig {
        model: Architecture::LeNet5,
        epochs: 1,
        batch_size: 8,
        device: Device::Cpu,
        val_fraction: 0.2,
        out: dir.path("run"),
        ..TrainConfig::default()
    };
    train(&config, &data).unwrap();
    let (_, meta) = load_run_checkpoint(dir.path("run/best.safetensors")).unwrap();
    let info = &meta.dataset;
    assert_eq!(info.sample_shape, [3, 32, 32]);
    assert_eq!(info.class_names[9], "truck");
    assert_eq!(info.normalization.mean.len(), 3);
    let origin = info.origin.clone().expect("the data's origin is recorded");
    assert_eq!(origin.kind, DatasetKind::Cifar10);
    let again = origin.load(None).unwrap();
    assert_eq!(again.test, data.test);
}

// ---------------------------------------------------------------------------------------------
// Through the binary

fn kiln(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `kiln train` for one epoch on the CPU, then `kiln eval` of its checkpoint (which reads the
/// data from the checkpoint).
fn train_and_eval(data: &Path, out: &Path, extra: &[&str]) -> String {
    let data = data.to_str().unwrap();
    let out_dir = out.to_str().unwrap();
    let mut args = vec![
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--data",
        data,
        "--out",
        out_dir,
    ];
    args.extend_from_slice(extra);
    let (ok, text) = kiln(&args);
    assert!(ok, "{text}");
    let best = out.join("best.safetensors");
    let (ok, eval) = kiln(&["eval", best.to_str().unwrap(), "--device", "cpu"]);
    assert!(ok, "{eval}");
    assert!(eval.contains("test accuracy"), "{eval}");
    format!("{text}{eval}")
}

#[test]
fn kiln_trains_and_evaluates_cifar10() {
    let dir = TempDir::new("cli-cifar");
    let root = dir.path("data");
    std::fs::create_dir_all(&root).unwrap();
    write_cifar10(&root, &[16, 16], 10);
    let text = train_and_eval(&root, &dir.path("run"), &["--dataset", "cifar10"]);
    assert!(
        text.contains("CIFAR-10: 32 training and 10 test samples of 3x32x32, 10 classes"),
        "{text}"
    );
    assert!(
        text.contains("airplane"),
        "class names in the report: {text}"
    );
    // --labels is CIFAR-100's.
    let (ok, text) = kiln(&[
        "train",
        "--device",
        "cpu",
        "--data",
        root.to_str().unwrap(),
        "--labels",
        "coarse",
        "--out",
        dir.path("run2").to_str().unwrap(),
    ]);
    assert!(
        !ok && text.contains("--labels applies to --dataset cifar100"),
        "{text}"
    );
}

#[test]
fn kiln_trains_and_evaluates_an_image_folder_of_8x8_images() {
    let dir = TempDir::new("cli-folder");
    write_folder(&dir.path("pets"), 10, 6);
    // Resized to 8x8; LeNet-5 needs 16x16, so VGG.
    let text = train_and_eval(
        &dir.path("pets"),
        &dir.path("run"),
        &["--dataset", "folder", "--image-size", "8", "--model", "vgg"],
    );
    assert!(
        text.contains("18 training and 6 test samples of 3x8x8, 3 classes"),
        "{text}"
    );
    assert!(text.contains("ant") && text.contains("cat"), "{text}");
    let (ok, text) = kiln(&[
        "train",
        "--device",
        "cpu",
        "--data",
        dir.path("pets").to_str().unwrap(),
        "--image-size",
        "8",
        "--out",
        dir.path("run2").to_str().unwrap(),
    ]);
    assert!(
        !ok && text.contains("LeNet-5 needs images of at least 16x16"),
        "{text}"
    );
}

#[test]
fn kiln_trains_and_evaluates_mnist_idx_of_8x8_images_detected() {
    let dir = TempDir::new("cli-idx");
    let data = dir.path("kmnist");
    std::fs::create_dir_all(&data).unwrap();
    write_idx_set(&data, "", "-", [1, 8, 8], 5, (40, 10), true);
    // No --dataset: detected from the files (in a folder named for an MNIST other than
    // Fashion-MNIST, whose file names are the same).
    let text = train_and_eval(&data, &dir.path("run"), &["--model", "resnet20"]);
    assert!(text.contains("data: mnist-idx at"), "{text}");
    assert!(
        text.contains("40 training and 10 test samples of 1x8x8, 5 classes"),
        "{text}"
    );
}
