//! The data pipeline: IDX files (round trips, every kind of broken file), Fashion-MNIST directory
//! search and loading, validation split, normalization, the data loader's coverage and
//! reproducibility, and the real Fashion-MNIST when it is installed.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln::data::{
    find_files, read_idx_images, read_idx_labels, write_idx_images, write_idx_labels, Augment,
    DataError, DataLoader, Dataset, FashionMnist, IdxImages, Splits, DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES, FASHION_MNIST_FILES,
};
use kiln::Device;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kiln-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An IDX file's bytes: the magic number, the dimensions, then `data`.
fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn images(count: usize, rows: usize, cols: usize) -> IdxImages {
    IdxImages {
        count,
        rows,
        cols,
        pixels: (0..count * rows * cols)
            .map(|i| (i * 7 % 251) as u8)
            .collect(),
    }
}

// ---------------------------------------------------------------- IDX files

#[test]
fn idx_round_trip_raw_and_gzip() {
    let dir = TempDir::new("roundtrip");
    let imgs = images(5, 3, 4);
    let labels = vec![3u8, 1, 4, 1, 5];
    for gz in [false, true] {
        let (ip, lp) = (dir.path(&format!("i{gz}")), dir.path(&format!("l{gz}")));
        write_idx_images(&ip, &imgs, gz).unwrap();
        write_idx_labels(&lp, &labels, gz).unwrap();
        let head = std::fs::read(&ip).unwrap();
        assert_eq!(
            head[..2] == [0x1f, 0x8b],
            gz,
            "gzip magic present iff compressed"
        );
        assert_eq!(read_idx_images(&ip).unwrap(), imgs);
        assert_eq!(read_idx_labels(&lp).unwrap(), labels);
    }
}

#[test]
fn idx_layout_matches_the_spec() {
    // Hand-written file: magic 0x00000803, dims 2×1×3, six pixel bytes.
    let dir = TempDir::new("layout");
    let p = dir.path("x");
    std::fs::write(&p, idx_bytes(0x0803, &[2, 1, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
    let got = read_idx_images(&p).unwrap();
    assert_eq!((got.count, got.rows, got.cols), (2, 1, 3));
    assert_eq!(got.pixels, [1, 2, 3, 4, 5, 6]);
    // And the writer produces exactly these bytes.
    write_idx_images(&p, &got, false).unwrap();
    assert_eq!(
        std::fs::read(&p).unwrap(),
        idx_bytes(0x0803, &[2, 1, 3], &[1, 2, 3, 4, 5, 6])
    );
}

#[test]
fn gzip_is_detected_by_magic_bytes_not_by_name() {
    let dir = TempDir::new("detect");
    let raw = idx_bytes(0x0801, &[3], &[7, 8, 9]);
    let (gz_named_raw, raw_named_gz) = (dir.path("a.gz"), dir.path("b"));
    std::fs::write(&gz_named_raw, &raw).unwrap();
    std::fs::write(&raw_named_gz, gzip(&raw)).unwrap();
    assert_eq!(read_idx_labels(&gz_named_raw).unwrap(), [7, 8, 9]);
    assert_eq!(read_idx_labels(&raw_named_gz).unwrap(), [7, 8, 9]);
}

fn length_error(e: DataError) -> (u64, u64, String) {
    let msg = e.to_string();
    match e {
        DataError::Length {
            expected, actual, ..
        } => (expected, actual, msg),
        other => panic!("expected a length error, got {other:?}"),
    }
}

#[test]
fn truncated_file_is_an_error_naming_file_and_byte_counts() {
    let dir = TempDir::new("trunc");
    // 4 images of 2×3: 16 + 24 = 40 bytes; cut to 35.
    let full = idx_bytes(0x0803, &[4, 2, 3], &[0; 24]);
    for gz in [false, true] {
        let p = dir.path(&format!("cut{gz}"));
        let cut = &full[..35];
        std::fs::write(&p, if gz { gzip(cut) } else { cut.to_vec() }).unwrap();
        let (expected, actual, msg) = length_error(read_idx_images(&p).unwrap_err());
        assert_eq!((expected, actual), (40, 35));
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(
            msg.contains("truncated") && msg.contains("40") && msg.contains("35"),
            "{msg}"
        );
        assert_eq!(msg.contains("after gunzip"), gz, "{msg}");
    }
    // Cut inside the header (after the magic and one dimension).
    let p = dir.path("header");
    std::fs::write(&p, &full[..9]).unwrap();
    let (expected, actual, _) = length_error(read_idx_images(&p).unwrap_err());
    assert_eq!((expected, actual), (16, 9));
    // An empty file.
    std::fs::write(&p, b"").unwrap();
    let (expected, actual, _) = length_error(read_idx_labels(&p).unwrap_err());
    assert_eq!((expected, actual), (8, 0));
}

#[test]
fn overlong_file_is_an_error() {
    let dir = TempDir::new("long");
    let p = dir.path("long");
    // 3 labels: 8 + 3 = 11 bytes expected; 2 extra bytes.
    std::fs::write(&p, idx_bytes(0x0801, &[3], &[1, 2, 3, 4, 5])).unwrap();
    let (expected, actual, msg) = length_error(read_idx_labels(&p).unwrap_err());
    assert_eq!((expected, actual), (11, 13));
    assert!(msg.contains("over-long"), "{msg}");
}

#[test]
fn bad_magic_is_an_error() {
    let dir = TempDir::new("magic");
    let p = dir.path("m");
    let check = |bytes: Vec<u8>, read_images: bool, found_magic: u32, needle: &str| {
        std::fs::write(&p, bytes).unwrap();
        let e = if read_images {
            read_idx_images(&p).map(|_| ())
        } else {
            read_idx_labels(&p).map(|_| ())
        }
        .unwrap_err();
        let msg = e.to_string();
        match e {
            DataError::BadMagic { found, .. } => assert_eq!(found, found_magic, "{msg}"),
            other => panic!("expected BadMagic, got {other:?}"),
        }
        assert!(msg.contains(needle), "{msg}");
        assert!(msg.contains(&p.display().to_string()), "{msg}");
    };
    // Not IDX at all (an HTML error page saved under the file's name).
    check(
        b"<html>not found</html>".to_vec(),
        true,
        0x3c68_746d,
        "not an IDX file",
    );
    // A labels file where images are expected: 1 dimension instead of 3.
    check(
        idx_bytes(0x0801, &[2], &[0, 1]),
        true,
        0x0801,
        "must be 3-dimensional",
    );
    // f32 elements (type 0x0D) are not read.
    check(
        idx_bytes(0x0D01, &[1], &[0; 4]),
        false,
        0x0D01,
        "0x0d (f32) is not supported",
    );
}

#[test]
fn wrong_dims_are_errors() {
    let dir = TempDir::new("dims");
    let p = dir.path("d");
    // 2-d unsigned-byte data read as images.
    std::fs::write(&p, idx_bytes(0x0802, &[2, 2], &[0; 4])).unwrap();
    assert!(matches!(
        read_idx_images(&p),
        Err(DataError::BadMagic { .. })
    ));
    // Zero rows.
    std::fs::write(&p, idx_bytes(0x0803, &[2, 0, 5], &[])).unwrap();
    let e = read_idx_images(&p).unwrap_err();
    assert!(matches!(e, DataError::BadDims { .. }), "{e:?}");
    // Dimensions claiming ~4 GB of pixels in a tiny file: a length error, no huge allocation.
    std::fs::write(&p, idx_bytes(0x0803, &[65535, 256, 256], &[1, 2, 3])).unwrap();
    let (expected, actual, _) = length_error(read_idx_images(&p).unwrap_err());
    assert_eq!((expected, actual), (16 + 65535 * 256 * 256, 19));
}

#[test]
fn missing_and_corrupt_files_are_io_errors_naming_the_file() {
    let dir = TempDir::new("io");
    let missing = dir.path("nope");
    let msg = read_idx_labels(&missing).unwrap_err().to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    // Gzip magic followed by garbage.
    let corrupt = dir.path("corrupt.gz");
    let mut bytes = gzip(&idx_bytes(0x0801, &[100], &[3; 100]));
    let n = bytes.len();
    bytes[12..n - 8].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(&corrupt, bytes).unwrap();
    let e = read_idx_labels(&corrupt).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, DataError::Gzip { .. } | DataError::Length { .. }),
        "{e:?}"
    );
    assert!(msg.contains(&corrupt.display().to_string()), "{msg}");
    // A gzip file cut short.
    let cut = dir.path("cut.gz");
    let bytes = gzip(&idx_bytes(0x0801, &[100], &[3; 100]));
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let e = read_idx_labels(&cut).unwrap_err();
    assert!(matches!(e, DataError::Gzip { .. }), "{e:?}");
    assert!(e.to_string().contains("corrupt or truncated gzip"), "{e}");
}

// ---------------------------------------------------------------- Fashion-MNIST files

/// Writes a small fake Fashion-MNIST (28×28 images) into `dir`, gzipped or raw per file.
fn write_fake_fashion(dir: &Path, n_train: usize, n_test: usize, gz: [bool; 4]) {
    let name = |k: usize| {
        let base = FASHION_MNIST_FILES[k];
        dir.join(if gz[k] {
            format!("{base}.gz")
        } else {
            base.to_string()
        })
    };
    write_idx_images(&name(0), &images(n_train, 28, 28), gz[0]).unwrap();
    let train_labels: Vec<u8> = (0..n_train).map(|i| (i % 10) as u8).collect();
    write_idx_labels(&name(1), &train_labels, gz[1]).unwrap();
    write_idx_images(&name(2), &images(n_test, 28, 28), gz[2]).unwrap();
    let test_labels: Vec<u8> = (0..n_test).map(|i| (9 - i % 10) as u8).collect();
    write_idx_labels(&name(3), &test_labels, gz[3]).unwrap();
}

#[test]
fn fashion_mnist_loads_gzip_and_raw_files() {
    let dir = TempDir::new("fake-fashion");
    write_fake_fashion(&dir.0, 12, 5, [true, false, false, true]);
    let fm = FashionMnist::load(Some(&dir.0)).unwrap();
    assert_eq!((fm.num_train(), fm.num_test()), (12, 5));
    assert_eq!(fm.train_images.len(), 12 * 784);
    assert_eq!(&fm.train_labels[..3], &[0, 1, 2]);
    assert_eq!(&fm.test_labels[..2], &[9, 8]);
    let train = fm.train().unwrap();
    assert_eq!(train.sample_shape(), [1, 28, 28]);
    assert_eq!(train.image(0)[1], 7.0 / 255.0);
    assert_eq!(FASHION_MNIST_CLASSES[9], "Ankle boot");
}

#[test]
fn fashion_mnist_directory_search() {
    let root = TempDir::new("search");
    let nested = root.0.join("fashion-mnist");
    std::fs::create_dir_all(&nested).unwrap();
    write_fake_fashion(&nested, 3, 2, [true; 4]);
    let nowhere = Path::new("/nonexistent/kiln-default");
    // DIR/fashion-mnist is found from --data DIR and from KILN_DATA=DIR.
    let f = find_files(Some(&root.0), None, nowhere).unwrap();
    assert_eq!(f.dir, nested);
    let f = find_files(None, Some(root.0.as_os_str()), nowhere).unwrap();
    assert_eq!(f.dir, nested);
    // --data wins over KILN_DATA; the default is used only when neither is set.
    let e = find_files(Some(nowhere), Some(root.0.as_os_str()), &nested).unwrap_err();
    assert!(e.to_string().contains("--data"), "{e}");
    assert_eq!(find_files(None, None, &nested).unwrap().dir, nested);
    // A partial directory names what is missing.
    std::fs::remove_file(nested.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let e = FashionMnist::load_from(&nested).unwrap_err().to_string();
    assert!(e.contains("t10k-labels-idx1-ubyte[.gz]"), "{e}");
    assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
}

#[test]
fn fashion_mnist_rejects_mismatched_files() {
    let dir = TempDir::new("fashion-bad");
    write_fake_fashion(&dir.0, 4, 3, [false; 4]);
    // 5 labels for 4 images.
    write_idx_labels(&dir.path(FASHION_MNIST_FILES[1]), &[0, 1, 2, 3, 4], false).unwrap();
    let e = FashionMnist::load_from(&dir.0).unwrap_err().to_string();
    assert!(e.contains("4 images but") && e.contains("5 labels"), "{e}");
    // Label 10.
    write_idx_labels(&dir.path(FASHION_MNIST_FILES[1]), &[0, 1, 10, 3], false).unwrap();
    let e = FashionMnist::load_from(&dir.0).unwrap_err().to_string();
    assert!(e.contains("label 10 of sample 2"), "{e}");
    // 27×28 images.
    write_idx_labels(&dir.path(FASHION_MNIST_FILES[1]), &[0; 4], false).unwrap();
    write_idx_images(&dir.path(FASHION_MNIST_FILES[0]), &images(4, 27, 28), false).unwrap();
    let e = FashionMnist::load_from(&dir.0).unwrap_err();
    assert!(matches!(e, DataError::BadDims { .. }), "{e:?}");
}

// ---------------------------------------------------------------- Dataset

/// `n` samples of shape [1, 3, 4]: sample i's values are i + k/100 (k = position), labels i % 3.
fn toy(n: usize) -> Dataset {
    let images = (0..n)
        .flat_map(|i| (0..12).map(move |k| i as f32 + k as f32 / 100.0))
        .collect();
    Dataset::new(images, (0..n as i32).map(|i| i % 3).collect(), [1, 3, 4], 3).unwrap()
}

#[test]
fn validation_split_is_disjoint_and_sized_right() {
    let d = toy(103);
    let (train, val) = d.split_validation(0.2, 5).unwrap();
    // round(103 · 0.2) = round(20.6) = 21.
    assert_eq!((train.len(), val.len()), (82, 21));
    // Sample i is recognisable by its first value (= i).
    let ids =
        |s: &Dataset| -> Vec<usize> { (0..s.len()).map(|j| s.image(j)[0] as usize).collect() };
    let (t, v) = (ids(&train), ids(&val));
    let ts: HashSet<_> = t.iter().copied().collect();
    assert!(v.iter().all(|i| !ts.contains(i)), "disjoint");
    let mut all: Vec<_> = t.iter().chain(&v).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..103).collect::<Vec<_>>(),
        "together: every sample once"
    );
    for (j, &i) in v.iter().enumerate() {
        assert_eq!(val.label(j), (i % 3) as i32, "labels follow their images");
    }
    // Seeded: the same seed gives the same split, another seed another.
    let (_, val2) = d.split_validation(0.2, 5).unwrap();
    assert_eq!(ids(&val2), v);
    let (_, val3) = d.split_validation(0.2, 6).unwrap();
    assert_ne!(ids(&val3), v);
    assert!(d.split_validation(1.0, 0).is_err());
}

#[test]
fn normalization_gives_zero_mean_unit_std_on_the_train_part() {
    let d = toy(50);
    let test = toy(7);
    let s = Splits::new(&d, test, 0.1, 3).unwrap();
    assert_eq!(
        (s.train.len(), s.validation.len(), s.test.len()),
        (45, 5, 7)
    );
    let stats = |x: &[f32]| {
        let n = x.len() as f64;
        let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
        (m, var.sqrt())
    };
    let (m, sd) = stats(s.train.images());
    assert!(
        m.abs() < 1e-5 && (sd - 1.0).abs() < 1e-5,
        "mean {m} std {sd}"
    );
    // The same statistics are applied to the other parts (not refitted): the test set, whose
    // raw values are smaller, comes out with a negative mean.
    assert_eq!(s.test.normalization(), Some(&s.normalization));
    assert_eq!(s.validation.normalization(), Some(&s.normalization));
    let raw_test_0 = toy(7).image(0)[0];
    assert!((s.test.image(0)[0] - s.normalization.apply(0, raw_test_0)).abs() < 1e-6);
    assert!(stats(s.test.images()).0 < -0.5);
}

// ---------------------------------------------------------------- DataLoader

fn all_host_batches(l: &DataLoader, epoch: u64) -> Vec<kiln::data::HostBatch> {
    l.host_batches(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn loader_covers_every_sample_exactly_once_per_epoch() {
    let d = toy(37);
    let l = DataLoader::new(d, 5, Device::Cpu).unwrap().with_shuffle(11);
    assert_eq!(l.num_batches(), 8);
    for epoch in 0..3 {
        let batches = all_host_batches(&l, epoch);
        let sizes: Vec<_> = batches.iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [5, 5, 5, 5, 5, 5, 5, 2]);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..37).collect::<Vec<_>>(), "epoch {epoch}");
        // Images and labels are those of the listed samples.
        for b in &batches {
            for (j, &i) in b.indices.iter().enumerate() {
                assert_eq!(b.images[j * 12], i as f32);
                assert_eq!(b.labels[j], (i % 3) as i32);
            }
        }
    }
    // drop_last: 7 full batches, 35 distinct samples.
    let l = l.with_drop_last(true);
    let batches = all_host_batches(&l, 0);
    assert_eq!(batches.len(), 7);
    let seen: HashSet<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen.len(), 35);
}

#[test]
fn same_seed_same_order_and_epochs_differ() {
    let aug = Augment {
        hflip: true,
        shift_pad: 1,
        jitter_std: 0.1,
    };
    let make = |seed| {
        DataLoader::new(toy(40), 6, Device::Cpu)
            .unwrap()
            .with_shuffle(seed)
            .with_augment(aug.clone())
            .unwrap()
    };
    let (a, b) = (make(9), make(9));
    for epoch in 0..2 {
        assert_eq!(
            all_host_batches(&a, epoch),
            all_host_batches(&b, epoch),
            "same seed, same batches (order and augmented values)"
        );
    }
    assert_ne!(a.order(0), a.order(1), "different epochs, different orders");
    assert_ne!(
        a.order(0),
        make(10).order(0),
        "different seeds, different orders"
    );
    // Without shuffling every epoch is in dataset order.
    let plain = DataLoader::new(toy(10), 3, Device::Cpu).unwrap();
    assert_eq!(plain.order(4), (0..10).collect::<Vec<_>>());
}

#[test]
fn background_batches_equal_inline_batches() {
    // The worker thread's output is a pure function of (settings, epoch, batch index).
    let l = DataLoader::new(toy(53), 4, Device::Cpu)
        .unwrap()
        .with_shuffle(2)
        .with_augment(Augment {
            hflip: true,
            shift_pad: 2,
            jitter_std: 0.05,
        })
        .unwrap();
    let threaded = all_host_batches(&l, 3);
    let inline = all_host_batches(&l.clone().with_background(false), 3);
    assert_eq!(threaded, inline);
    for (k, b) in threaded.iter().enumerate() {
        assert_eq!(b, &l.host_batch(3, k).unwrap());
    }
    // Abandoning an epoch halfway (the worker blocked on a full channel) does not hang.
    let mut it = l.host_batches(4);
    it.next();
    drop(it);
}

#[test]
fn augmentation_pads_with_the_normalized_zero() {
    // All-black raw images, normalized: any flip or shift must leave every value at the
    // normalized value of zero.
    let raw = Dataset::new(vec![0.0; 6 * 16], vec![0; 6], [1, 4, 4], 1).unwrap();
    let mut d = raw.clone();
    d.normalize(&kiln::data::Normalization {
        mean: vec![0.25],
        std: vec![0.5],
    })
    .unwrap();
    assert_eq!(d.zero_value(0), -0.5);
    let l = DataLoader::new(d, 6, Device::Cpu)
        .unwrap()
        .with_shuffle(1)
        .with_augment(Augment {
            hflip: true,
            shift_pad: 3,
            jitter_std: 0.0,
        })
        .unwrap();
    let b = l.host_batch(0, 0).unwrap();
    assert!(b.images.iter().all(|&v| v == -0.5), "{:?}", b.images);
}

fn loader_yields_tensors_on_the_device(device: Device) {
    fn assert_send<T: Send>() {}
    assert_send::<kiln::Tensor>();
    assert_send::<kiln::data::HostBatch>();
    // The CPU, the kernel emulation, and a real GPU when one is usable.
    let l = DataLoader::new(toy(7), 3, device).unwrap().with_shuffle(4);
    let mut count = 0;
    for (k, batch) in l.epoch(0).enumerate() {
        let batch = batch.unwrap();
        let host = l.host_batch(0, k).unwrap();
        assert_eq!(batch.images.device(), device);
        assert_eq!(batch.images.shape(), &host.shape);
        assert_eq!(batch.labels.shape(), &[host.len()]);
        assert_eq!(batch.images.to_vec::<f32>().unwrap(), host.images);
        assert_eq!(batch.labels.to_vec::<i32>().unwrap(), host.labels);
        count += batch.indices.len();
    }
    assert_eq!(count, 7);
}
kiln::test_device!(loader_yields_tensors_on_the_device);

#[test]
fn loader_rejects_bad_settings() {
    assert!(DataLoader::new(toy(3), 0, Device::Cpu).is_err());
    let bad = Augment {
        jitter_std: -0.1,
        ..Augment::none()
    };
    assert!(DataLoader::new(toy(3), 1, Device::Cpu)
        .unwrap()
        .with_augment(bad)
        .is_err());
    // An empty dataset has no batches.
    let empty = Dataset::new(vec![], vec![], [1, 2, 2], 2).unwrap();
    let l = DataLoader::new(empty, 4, Device::Cpu).unwrap();
    assert_eq!(l.epoch(0).count(), 0);
}

// ---------------------------------------------------------------- the real Fashion-MNIST

#[test]
fn real_fashion_mnist() {
    let dir = Path::new(DEFAULT_FASHION_MNIST_DIR);
    if !dir.is_dir() {
        println!(
            "skipping: {} is missing (sudo apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let fm = FashionMnist::load(Some(dir)).unwrap();
    assert_eq!((fm.num_train(), fm.num_test()), (60_000, 10_000));
    assert_eq!(fm.train_images.len(), 60_000 * 28 * 28);
    assert_eq!(fm.test_images.len(), 10_000 * 28 * 28);
    assert!(fm
        .train_labels
        .iter()
        .chain(&fm.test_labels)
        .all(|l| (0..10).contains(l)));
    // First labels, read from the files with Python's gzip module:
    //   gzip.open('train-labels-idx1-ubyte.gz').read()[8:20] -> 9 0 0 3 0 2 7 2 5 5 0 9
    //   gzip.open('t10k-labels-idx1-ubyte.gz').read()[8:16]  -> 9 2 1 1 6 1 4 6
    assert_eq!(
        &fm.train_labels[..12],
        &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9]
    );
    assert_eq!(&fm.test_labels[..8], &[9, 2, 1, 1, 6, 1, 4, 6]);
    assert_eq!(
        FashionMnist::class_name(fm.train_labels[0]),
        Some("Ankle boot")
    );
    // Each class has 6,000 training images (dataset README).
    let mut counts = [0usize; 10];
    fm.train_labels
        .iter()
        .for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [6000; 10]);
    // The first training image: 351 zero pixels, pixel sum 76247 (Python, as above).
    let first = &fm.train_images[..784];
    assert_eq!(first.iter().filter(|&&p| p == 0).count(), 351);
    assert_eq!(first.iter().map(|&p| p as u64).sum::<u64>(), 76_247);
    // Whole training set statistics of pixel/255: mean 0.2860406, std 0.3530242 (Python).
    let n = fm.train().unwrap().fit_normalization();
    assert!((n.mean[0] - 0.286_040_6).abs() < 1e-5, "{n:?}");
    assert!((n.std[0] - 0.353_024_2).abs() < 1e-5, "{n:?}");
    // Splits: 54,000 / 6,000 / 10,000, train part normalized.
    let s = fm.splits(0.1, 0).unwrap();
    assert_eq!(
        (s.train.len(), s.validation.len(), s.test.len()),
        (54_000, 6_000, 10_000)
    );
    let x = s.train.images();
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
    assert!(mean.abs() < 1e-4, "{mean}");
    // One augmented epoch of the loader covers the 54,000 training samples once.
    let l = DataLoader::new(s.train, 1000, Device::Cpu)
        .unwrap()
        .with_shuffle(1)
        .with_augment(Augment {
            hflip: true,
            shift_pad: 2,
            jitter_std: 0.0,
        })
        .unwrap();
    let mut seen = vec![false; 54_000];
    for b in l.host_batches(0) {
        for i in b.unwrap().indices {
            assert!(!seen[i]);
            seen[i] = true;
        }
    }
    assert!(seen.iter().all(|&s| s));
}
