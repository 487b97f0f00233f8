//! Property tests for every file reader kiln has: IDX images and labels (raw and gzip), CIFAR
//! binaries, safetensors
//! checkpoints with their metadata, and metrics.csv. Each is fed valid files with random contents
//! and then mutated bytes (truncations, bit flips, huge counts, wrong magics, trailing bytes): the
//! answer is an error every time the file is not what its header says, never a panic; a reader
//! that accepts a file returns exactly what the file holds. Huge counts in a header come with a
//! tiny file, so a reader that allocated by the header before checking the length would run out
//! of memory here.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use kiln::data::{
    read_cifar_file, read_idx_images, read_idx_labels, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
};
use kiln::train::{
    load_checkpoint, load_run_checkpoint, read_metrics_csv, save_checkpoint, METRICS_HEADER,
};
use kiln::{Device, Tensor};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An IDX file: the magic, one big-endian u32 per dimension, the bytes.
fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(payload);
    bytes
}

fn gzipped(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A valid image file's parts: [count, rows, cols] and random pixels.
fn images() -> impl Strategy<Value = (Vec<u32>, Vec<u8>)> {
    (0u32..5, 1u32..6, 1u32..6).prop_flat_map(|(n, r, c)| {
        let len = (n * r * c) as usize;
        (Just(vec![n, r, c]), prop::collection::vec(any::<u8>(), len))
    })
}

/// How a valid file is damaged.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(prop::sample::Index),
    FlipBit(prop::sample::Index, u8),
    HugeDimension(prop::sample::Index, u32),
    Trailing(Vec<u8>),
    Magic(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<prop::sample::Index>(), 1u32 << 20..=u32::MAX)
            .prop_map(|(i, v)| Mutation::HugeDimension(i, v)),
        prop::collection::vec(any::<u8>(), 1..40).prop_map(Mutation::Trailing),
        any::<u32>().prop_map(Mutation::Magic),
    ]
}

/// Applies `m` to an IDX file with `ndims` dimensions.
fn mutate_idx(mut bytes: Vec<u8>, ndims: usize, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::FlipBit(i, bit) => {
            let at = i.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        Mutation::HugeDimension(i, v) => {
            let at = 4 + 4 * i.index(ndims);
            bytes[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        Mutation::Trailing(extra) => bytes.extend(extra),
        Mutation::Magic(magic) => bytes[..4].copy_from_slice(&magic.to_be_bytes()),
    }
    bytes
}

/// Whether `bytes` is an IDX file of `magic` whose content is exactly as long as its header says.
fn consistent_idx(bytes: &[u8], magic: u32) -> bool {
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header || bytes[..4] != magic.to_be_bytes() {
        return false;
    }
    let payload = (0..ndims)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as u128)
        .product::<u128>();
    (bytes.len() - header) as u128 == payload
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cifar_files_are_read_exactly_or_refused(
        records in 0usize..4,
        coarse in any::<bool>(),
        cut in 0usize..3074,
        flip in any::<prop::sample::Index>(),
        seed in any::<u8>(),
    ) {
        // CIFAR-100 records (2 label bytes) of valid labels, then one byte rewritten and the file
        // cut by `cut` bytes.
        let record = 3074;
        let mut bytes: Vec<u8> = (0..records * record)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        for r in 0..records {
            bytes[r * record] %= 20;
            bytes[r * record + 1] %= 100;
        }
        if !bytes.is_empty() {
            let i = flip.index(bytes.len());
            bytes[i] = bytes[i].wrapping_add(seed | 1);
        }
        bytes.truncate(bytes.len().saturating_sub(cut));
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "train.bin", &bytes);
        let (at, classes) = if coarse { (0, 20) } else { (1, 100) };
        let whole = !bytes.is_empty() && bytes.len() % record == 0;
        let labels_ok = bytes.chunks(record).all(|r| (r[at] as usize) < classes);
        match read_cifar_file(&path, 2, at, classes, "label") {
            Ok(read) => {
                prop_assert!(whole && labels_ok);
                prop_assert_eq!(read.len(), bytes.len() / record);
                for (k, r) in bytes.chunks(record).enumerate() {
                    prop_assert_eq!(read.labels[k], r[at] as i32);
                    prop_assert_eq!(&read.pixels[k * 3072..(k + 1) * 3072], &r[2..]);
                }
            }
            Err(e) => {
                prop_assert!(!(whole && labels_ok), "refused a valid file: {e}");
                prop_assert!(e.to_string().contains("train.bin"), "{e}");
            }
        }
    }

    #[test]
    fn idx_images_are_read_exactly_or_refused(
        (dims, pixels) in images(),
        m in mutation(),
        gzip in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let valid = idx_bytes(IDX_IMAGES_MAGIC, &dims, &pixels);
        let read = read_idx_images(&write(dir.path(), "ok.idx", &if gzip { gzipped(&valid) } else { valid.clone() }))
            .unwrap();
        prop_assert_eq!((read.count, read.rows, read.cols), (dims[0] as usize, dims[1] as usize, dims[2] as usize));
        prop_assert_eq!(&read.pixels, &pixels);

        let damaged = mutate_idx(valid, 3, &m);
        let stored = if gzip { gzipped(&damaged) } else { damaged.clone() };
        let result = read_idx_images(&write(dir.path(), "bad.idx", &stored));
        let images_shape = consistent_idx(&damaged, IDX_IMAGES_MAGIC)
            && damaged[8..16].chunks(4).all(|d| d != [0, 0, 0, 0]);
        match result {
            Ok(read) => {
                prop_assert!(images_shape, "accepted an inconsistent file after {m:?}");
                prop_assert_eq!(read.pixels.len(), read.count * read.rows * read.cols);
                prop_assert_eq!(&read.pixels[..], &damaged[16..]);
            }
            Err(e) => {
                prop_assert!(!images_shape, "refused a consistent file after {m:?}: {e}");
                prop_assert!(e.to_string().contains("bad.idx"), "{e}");
            }
        }
    }

    #[test]
    fn idx_labels_are_read_exactly_or_refused(
        labels in prop::collection::vec(any::<u8>(), 0..30),
        m in mutation(),
        gzip in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let valid = idx_bytes(IDX_LABELS_MAGIC, &[labels.len() as u32], &labels);
        let damaged = mutate_idx(valid, 1, &m);
        let stored = if gzip { gzipped(&damaged) } else { damaged.clone() };
        match read_idx_labels(&write(dir.path(), "labels.idx", &stored)) {
            Ok(read) => {
                prop_assert!(consistent_idx(&damaged, IDX_LABELS_MAGIC), "accepted {m:?}");
                prop_assert_eq!(&read[..], &damaged[8..]);
            }
            Err(e) => {
                prop_assert!(!consistent_idx(&damaged, IDX_LABELS_MAGIC), "refused {m:?}: {e}");
                prop_assert!(e.to_string().contains("labels.idx"), "{e}");
            }
        }
    }

    /// A gzip stream cut short or corrupted is an error naming the file, not a panic.
    #[test]
    fn damaged_gzip_streams_are_refused(
        (dims, pixels) in images(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut gz = gzipped(&idx_bytes(IDX_IMAGES_MAGIC, &dims, &pixels));
        gz.truncate(2 + cut.index(gz.len() - 2));
        let at = flip.index(gz.len());
        gz[at] ^= 0x10;
        if let Err(e) = read_idx_images(&write(dir.path(), "cut.idx.gz", &gz)) {
            prop_assert!(e.to_string().contains("cut.idx.gz"), "{e}");
        }
    }

    #[test]
    fn checkpoints_are_read_exactly_or_refused(
        values in prop::collection::vec(-1e3f32..1e3, 1..20),
        m in mutation(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let t = Tensor::from_vec(values.clone(), &[values.len()], Device::Cpu).unwrap();
        let labels = Tensor::from_vec(vec![3i32, -1], &[2], Device::Cpu).unwrap();
        let metadata = BTreeMap::from([("note".to_string(), "fuzz".to_string())]);
        save_checkpoint(&path, &[("w".into(), &t), ("labels".into(), &labels)], &metadata).unwrap();
        let valid = fs::read(&path).unwrap();
        let back = load_checkpoint(&path).unwrap();
        prop_assert_eq!(back.get("w").unwrap().to_vec::<f32>().unwrap(), values);

        let damaged = match &m {
            // The header length itself made huge: the file is far shorter than it claims.
            Mutation::HugeDimension(_, v) => {
                let mut b = valid.clone();
                b[..8].copy_from_slice(&(u64::from(*v) << 16).to_le_bytes());
                b
            }
            Mutation::Magic(v) => {
                let mut b = valid.clone();
                b[..4].copy_from_slice(&v.to_le_bytes());
                b
            }
            other => mutate_idx(valid.clone(), 0, other),
        };
        fs::write(&path, &damaged).unwrap();
        match load_checkpoint(&path) {
            Ok(read) => {
                // Only a flipped bit can leave the file valid (in the data, a name or a metadata
                // value): as long as before, with both tensors.
                prop_assert!(matches!(m, Mutation::FlipBit(..) | Mutation::Magic(_)), "{m:?}");
                prop_assert_eq!(damaged.len(), valid.len());
                prop_assert_eq!(read.tensors.len(), 2);
            }
            Err(e) => prop_assert!(e.to_string().contains("ck.safetensors"), "{e}"),
        }
        // kiln's own metadata is absent or damaged here: an error naming the file, never a panic.
        if let Err(e) = load_run_checkpoint(&path) {
            prop_assert!(e.to_string().contains("ck.safetensors"), "{e}");
        }
    }

    #[test]
    fn metrics_files_with_any_rows_are_read_or_refused(
        with_header in any::<bool>(),
        rows in prop::collection::vec("[0-9a-z.,eE+-]{0,60}", 0..6),
        bytes in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = if with_header { format!("{METRICS_HEADER}\n") } else { String::new() };
        text.push_str(&rows.join("\n"));
        let mut contents = text.into_bytes();
        if !with_header {
            contents.extend(bytes);
        }
        let path = write(dir.path(), "metrics.csv", &contents);
        if let Err(e) = read_metrics_csv(&path) {
            prop_assert!(e.to_string().contains("metrics.csv"), "{e}");
        }
    }
}

/// The trailing-bytes and truncation hints name what is wrong (issue 16: trailing bytes were
/// reported as "is the file truncated?").
#[test]
fn a_checkpoint_with_trailing_bytes_is_not_called_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], Device::Cpu).unwrap();
    save_checkpoint(&path, &[("w".into(), &t)], &BTreeMap::new()).unwrap();
    let valid = fs::read(&path).unwrap();

    let mut longer = valid.clone();
    longer.extend([0u8; 5]);
    fs::write(&path, &longer).unwrap();
    let err = load_checkpoint(&path).unwrap_err().to_string();
    assert!(err.contains("5 trailing bytes"), "{err}");
    assert!(!err.contains("truncated"), "{err}");

    fs::write(&path, &valid[..valid.len() - 4]).unwrap();
    let err = load_checkpoint(&path).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
}
