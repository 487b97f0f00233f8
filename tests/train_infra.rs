//! Training infrastructure: checkpoints, metrics CSV, plots, confusion matrix, progress lines,
//! early stopping and the non-finite-loss guard. Everything here is host-side and fast.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln::train::{
    check_finite, load_checkpoint, plot_curves, plot_filters, read_metrics_csv, save_checkpoint,
    ConfusionMatrix, Decision, EarlyStopping, EpochMetrics, MetricsCsv, Progress, TrainError,
    CURVES_SIZE, FILTER_GAP, METRICS_HEADER,
};
use kiln::{DType, Device, Tensor};

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

#[test]
fn checkpoint_round_trip_keeps_names_dtypes_shapes_values_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let w = Tensor::from_vec(
        vec![0.5f32, -1.25, 3.0, 1e-8, -0.0, 7.5],
        &[2, 3],
        Device::Cpu,
    )
    .unwrap();
    let d = Tensor::from_vec(vec![1.0f64 / 3.0, -2.5], &[2], Device::Cpu).unwrap();
    let step = Tensor::from_vec(vec![42i32], &[], Device::Cpu).unwrap();
    let mask = Tensor::from_vec(vec![0u8, 1, 255], &[3, 1], Device::Cpu).unwrap();
    let metadata = meta(&[("epoch", "7"), ("arch", "lenet")]);
    let tensors = [
        ("conv1.weight".to_string(), &w),
        ("scale".to_string(), &d),
        ("step".to_string(), &step),
        ("mask".to_string(), &mask),
    ];
    save_checkpoint(&path, &tensors, &metadata).unwrap();
    assert_eq!(
        files_in(dir.path()),
        ["model.safetensors"],
        "no temporary file left"
    );

    let ck = load_checkpoint(&path).unwrap();
    assert_eq!(ck.metadata, metadata);
    let names: Vec<&str> = ck.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["conv1.weight", "mask", "scale", "step"],
        "sorted by name"
    );
    for (name, original) in &tensors {
        let loaded = ck.get(name).unwrap();
        assert_eq!(loaded.device(), Device::Cpu);
        assert_eq!(loaded.dtype(), original.dtype(), "{name}");
        assert_eq!(loaded.shape(), original.shape(), "{name}");
    }
    // Bit-exact, including -0.0.
    let bits = |t: &Tensor| -> Vec<u32> {
        t.to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(ck.get("conv1.weight").unwrap()), bits(&w));
    assert_eq!(
        ck.get("scale").unwrap().to_vec::<f64>().unwrap(),
        d.to_vec::<f64>().unwrap()
    );
    assert_eq!(ck.get("step").unwrap().to_vec::<i32>().unwrap(), [42]);
    assert_eq!(ck.get("mask").unwrap().to_vec::<u8>().unwrap(), [0, 1, 255]);
    assert!(ck.get("missing").is_none());
}

/// The file follows the safetensors layout PyTorch's `safetensors.torch.load_file` reads: an 8-byte
/// little-endian header length, a JSON header with standard dtype names, shapes and offsets, and
/// `__metadata__`, then the little-endian data.
#[test]
fn checkpoint_file_has_the_standard_safetensors_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    let w = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2], Device::Cpu).unwrap();
    let labels = Tensor::from_vec(vec![-3i32], &[1], Device::Cpu).unwrap();
    save_checkpoint(
        &path,
        &[("fc.weight".into(), &w), ("labels".into(), &labels)],
        &meta(&[("format", "pt")]),
    )
    .unwrap();
    let bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["fc.weight"]["dtype"], "F32");
    assert_eq!(header["fc.weight"]["shape"], serde_json::json!([1, 2]));
    assert_eq!(header["labels"]["dtype"], "I32");
    assert_eq!(header["__metadata__"]["format"], "pt");
    let data = &bytes[8 + n..];
    let at = |name: &str| {
        let o = &header[name]["data_offsets"];
        &data[o[0].as_u64().unwrap() as usize..o[1].as_u64().unwrap() as usize]
    };
    assert_eq!(
        at("fc.weight"),
        [1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat()
    );
    assert_eq!(at("labels"), (-3i32).to_le_bytes());
}

fn checkpoint_of_device_tensors_loads_on_the_cpu(device: Device) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpu.safetensors");
    let w = Tensor::randn(&[3, 2, 3, 3], 0.1, 5, device).unwrap();
    let idx = Tensor::from_vec(vec![4i32, 0, 2], &[3], device).unwrap();
    save_checkpoint(
        &path,
        &[("w".into(), &w), ("idx".into(), &idx)],
        &BTreeMap::new(),
    )
    .unwrap();
    let ck = load_checkpoint(&path).unwrap();
    assert!(ck.metadata.is_empty());
    let lw = ck.get("w").unwrap();
    assert_eq!(lw.device(), Device::Cpu);
    assert_eq!(
        lw.to_vec::<f32>().unwrap(),
        w.to_vec::<f32>().unwrap(),
        "{device}"
    );
    assert_eq!(ck.get("idx").unwrap().to_vec::<i32>().unwrap(), [4, 0, 2]);
}
kiln::test_device!(checkpoint_of_device_tensors_loads_on_the_cpu, gpu);

/// A failed save leaves the previous checkpoint intact and no temporary file behind. The failure
/// here is an invalid tensor list (a duplicate name after a valid tensor); the write failing
/// midway and the final rename failing are tested in src/train/atomic.rs.
#[test]
fn failed_save_over_a_checkpoint_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("best.safetensors");
    let old = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], Device::Cpu).unwrap();
    save_checkpoint(&path, &[("w".into(), &old)], &meta(&[("epoch", "1")])).unwrap();
    let before = fs::read(&path).unwrap();

    let new = Tensor::from_vec(vec![9.0f32; 3], &[3], Device::Cpu).unwrap();
    let err = save_checkpoint(
        &path,
        &[("w".into(), &new), ("w".into(), &new)],
        &meta(&[("epoch", "2")]),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("appears twice"), "{err}");
    for bad in ["", "__metadata__"] {
        assert!(save_checkpoint(&path, &[(bad.into(), &new)], &BTreeMap::new()).is_err());
    }
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(files_in(dir.path()), ["best.safetensors"]);
    let ck = load_checkpoint(&path).unwrap();
    assert_eq!(
        ck.get("w").unwrap().to_vec::<f32>().unwrap(),
        [1.0, 2.0, 3.0]
    );
    assert_eq!(ck.metadata["epoch"], "1");
}

#[test]
fn save_into_a_missing_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-there").join("ck.safetensors");
    let t = Tensor::from_vec(vec![1.0f32], &[1], Device::Cpu).unwrap();
    let err = save_checkpoint(&path, &[("t".into(), &t)], &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, TrainError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("not-there/ck.safetensors"),
        "{err}"
    );
}

#[test]
fn loading_missing_truncated_or_corrupt_files_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let err = load_checkpoint(&missing).unwrap_err();
    assert!(matches!(err, TrainError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.safetensors"), "{err}");

    let good = dir.path().join("good.safetensors");
    let t = Tensor::from_vec((0..100).map(|i| i as f32).collect(), &[10, 10], Device::Cpu).unwrap();
    save_checkpoint(&good, &[("t".into(), &t)], &BTreeMap::new()).unwrap();
    let bytes = fs::read(&good).unwrap();

    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "truncated.safetensors",
            bytes[..bytes.len() - 10].to_vec(),
            "truncated",
        ),
        ("tiny.safetensors", bytes[..5].to_vec(), "truncated"),
        ("empty.safetensors", Vec::new(), "truncated"),
        (
            "garbage.safetensors",
            {
                let mut b = bytes.clone();
                b[8..20].copy_from_slice(b"not json!!!!");
                b
            },
            "not a valid safetensors",
        ),
    ];
    for (name, contents, expect) in cases {
        let path = dir.path().join(name);
        fs::write(&path, contents).unwrap();
        let err = load_checkpoint(&path).unwrap_err();
        assert!(matches!(err, TrainError::Format { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains(expect), "{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

fn epoch(e: usize) -> EpochMetrics {
    EpochMetrics {
        epoch: e,
        train_loss: 2.0 / e as f64,
        train_accuracy: 0.5 + 0.04 * e as f64,
        val_loss: Some(2.2 / e as f64 + 0.1),
        val_accuracy: Some(0.45 + 0.035 * e as f64),
        test_accuracy: if e % 2 == 0 {
            Some(0.4 + 0.03 * e as f64)
        } else {
            None
        },
        // Correctly rounded arithmetic only (powi may differ between call sites).
        learning_rate: 0.1 / e as f64,
        seconds: 12.5 + e as f64,
        images_per_sec: 4800.25,
    }
}

#[test]
fn metrics_csv_has_a_header_and_one_row_per_epoch_on_disk_after_each_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let mut csv = MetricsCsv::create(&path).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        format!("{METRICS_HEADER}\n")
    );
    for e in 1..=3 {
        csv.append(&epoch(e)).unwrap();
        // Readable while the writer is still open: what a crash right now would leave.
        let rows = read_metrics_csv(&path).unwrap();
        assert_eq!(rows, (1..=e).map(epoch).collect::<Vec<_>>());
    }
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,test_accuracy,learning_rate,seconds,images_per_sec"
    );
    assert_eq!(lines.len(), 4);
    assert!(lines[1].starts_with("1,2,0.54,"), "{}", lines[1]);
    assert_eq!(
        lines[1].split(',').nth(5),
        Some(""),
        "no test accuracy in epoch 1"
    );
}

#[test]
fn metrics_csv_resume_keeps_rows_up_to_the_checkpoint_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let mut csv = MetricsCsv::create(&path).unwrap();
    for e in 1..=5 {
        csv.append(&epoch(e)).unwrap();
    }
    drop(csv);
    // The last checkpoint was after epoch 3: rows 4 and 5 are redone.
    let (mut csv, kept) = MetricsCsv::resume(&path, 3).unwrap();
    assert_eq!(kept, (1..=3).map(epoch).collect::<Vec<_>>());
    csv.append(&epoch(4)).unwrap();
    assert_eq!(
        read_metrics_csv(&path).unwrap(),
        (1..=4).map(epoch).collect::<Vec<_>>()
    );
    assert_eq!(files_in(dir.path()), ["metrics.csv"]);

    // Resuming without a file starts one.
    let fresh = dir.path().join("fresh.csv");
    let (_, kept) = MetricsCsv::resume(&fresh, 3).unwrap();
    assert!(kept.is_empty());
    assert_eq!(
        fs::read_to_string(&fresh).unwrap(),
        format!("{METRICS_HEADER}\n")
    );
}

#[test]
fn metrics_csv_with_a_foreign_header_or_bad_row_is_an_error_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    fs::write(&path, "a,b,c\n1,2,3\n").unwrap();
    let err = MetricsCsv::resume(&path, 3).unwrap_err();
    assert!(
        err.to_string().contains("metrics.csv") && err.to_string().contains("header"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "a,b,c\n1,2,3\n",
        "not overwritten"
    );

    fs::write(&path, format!("{METRICS_HEADER}\n1,0.5,x,,,,0.1,1,1\n")).unwrap();
    let err = read_metrics_csv(&path).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Plots

/// (width, height, RGB bytes) of a PNG.
fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    read_png_of(path, png::ColorType::Rgb)
}

/// The size and 8-bit pixels of the PNG at `path`, which must be of colour type `color`.
fn read_png_of(path: &Path, color: png::ColorType) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(fs::read(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, color);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn count_pixels(rgb: &[u8], color: [u8; 3]) -> usize {
    rgb.chunks_exact(3).filter(|p| *p == color).count()
}

#[test]
fn curves_png_has_the_documented_size_and_both_curves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.png");
    let mut history: Vec<EpochMetrics> = (1..=8).map(epoch).collect();
    history[5].val_loss = Some(f64::NAN); // left out, not an error
    plot_curves(&path, &history).unwrap();
    let (w, h, rgb) = read_png(&path);
    assert_eq!((w, h), CURVES_SIZE);
    let white = count_pixels(&rgb, [255, 255, 255]);
    let total = (w * h) as usize;
    assert!(
        white < total * 98 / 100,
        "nearly blank: {white} of {total} pixels white"
    );
    // The series colours (train blue, validation red) are drawn in both panels.
    for color in [[31, 119, 180], [214, 39, 40], [44, 160, 44]] {
        let left = rgb[..]
            .chunks_exact(3)
            .enumerate()
            .filter(|(i, p)| (*i as u32 % w) < w / 2 && **p == color)
            .count();
        let right = count_pixels(&rgb, color) - left;
        if color == [44, 160, 44] {
            assert!(
                left == 0 && right > 50,
                "test accuracy only on the right: {left}, {right}"
            );
        } else {
            assert!(
                left > 50 && right > 50,
                "{color:?}: {left} left, {right} right"
            );
        }
    }
    // Text is drawn: anti-aliased glyph edges are mid greys, which neither the black axes nor the
    // light grid lines (about 204 and 229) produce.
    let grey_text = rgb
        .chunks_exact(3)
        .filter(|p| p[0] == p[1] && p[1] == p[2] && (30..=150).contains(&p[0]))
        .count();
    assert!(
        grey_text > 200,
        "no anti-aliased text found ({grey_text} grey pixels)"
    );

    let one = dir.path().join("one.png");
    plot_curves(&one, &history[..1]).unwrap();
    assert_eq!(read_png(&one).0, CURVES_SIZE.0);

    let err = plot_curves(dir.path().join("none.png"), &[]).unwrap_err();
    assert!(err.to_string().contains("no epochs"), "{err}");
}

#[test]
fn filter_grid_png_tiles_normalized_filters() {
    let dir = tempfile::tempdir().unwrap();
    // 10 RGB filters of 5x5: 4 columns, 3 rows, upscaled by ceil(96 / 5) = 20 to 100-pixel tiles.
    let (k, c, kh, kw) = (10, 3, 5, 5);
    let mut values: Vec<f32> = (0..k * c * kh * kw)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    // Filter 0, red channel: a ramp whose top-left is its minimum and bottom-right its maximum.
    for (i, v) in values[..25].iter_mut().enumerate() {
        *v = -100.0 + i as f32;
    }
    values[25..75].iter_mut().for_each(|v| *v = -50.0);
    values[24] = 100.0;
    let w = Tensor::from_vec(values, &[k, c, kh, kw], Device::Cpu).unwrap();
    let path = dir.path().join("filters.png");
    let (gw, gh) = plot_filters(&path, &w).unwrap();
    let tile = 100;
    assert_eq!(FILTER_GAP, 4);
    assert_eq!(gw as usize, 4 * tile + 5 * FILTER_GAP);
    assert_eq!(gh as usize, 3 * tile + 4 * FILTER_GAP);
    let (pw, ph, rgb) = read_png(&path);
    assert_eq!((pw, ph), (gw, gh));
    let px = |x: usize, y: usize| -> [u8; 3] {
        let i = (y * pw as usize + x) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    };
    let g = FILTER_GAP;
    assert_eq!(
        px(g, g),
        [0, 64, 64],
        "top-left of filter 0: red minimum; g, b = -50 -> (50/200)*255"
    );
    assert_eq!(
        px(g + tile - 1, g + tile - 1),
        [255, 64, 64],
        "bottom-right: red maximum"
    );
    assert_eq!(
        px(g + 19, g + 19),
        px(g, g),
        "one weight spans 20x20 pixels"
    );
    assert_ne!(px(g + 20, g), px(g, g));
    assert_eq!(px(0, 0), [64, 64, 64], "gap colour");
    let distinct: std::collections::HashSet<[u8; 3]> =
        rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    assert!(distinct.len() > 100, "only {} colours", distinct.len());

    // One input channel: a greyscale PNG; 3x3 filters upscale by 32 to 96-pixel tiles.
    let grey = Tensor::randn(&[5, 1, 3, 3], 1.0, 3, Device::Cpu).unwrap();
    let path = dir.path().join("grey.png");
    let (gw, gh) = plot_filters(&path, &grey).unwrap();
    assert_eq!((gw as usize, gh as usize), (3 * 96 + 4 * g, 2 * 96 + 3 * g));
    let (pw, ph, grey_px) = read_png_of(&path, png::ColorType::Grayscale);
    assert_eq!((pw, ph), (gw, gh));
    assert_eq!(grey_px.len(), (gw * gh) as usize, "one byte per pixel");
    assert!(grey_px.contains(&255) && grey_px.contains(&0));
    assert_eq!(grey_px[0], 64, "gap grey");

    // LeNet-5's first layer on greyscale data (6 filters of 5x5), 143x96 pixels before: now each
    // filter is 100 pixels wide.
    let lenet = Tensor::randn(&[6, 1, 5, 5], 1.0, 4, Device::Cpu).unwrap();
    let (lw, lh) = plot_filters(dir.path().join("lenet.png"), &lenet).unwrap();
    assert_eq!((lw, lh), (3 * 100 + 4 * 4, 2 * 100 + 3 * 4));

    let flat = Tensor::zeros(&[2, 3], DType::F32, Device::Cpu).unwrap();
    assert!(plot_filters(dir.path().join("bad.png"), &flat).is_err());
}

// ---------------------------------------------------------------------------------------------
// Confusion matrix

#[test]
fn confusion_matrix_by_hand() {
    let mut m = ConfusionMatrix::new(&["cat", "dog", "bird"]);
    assert_eq!(m.accuracy(), None);
    // (actual, predicted, how many): rows cat 5/2/1, dog 1/7/0, bird 0/2/10.
    let counts = [
        (0, 0, 5),
        (0, 1, 2),
        (0, 2, 1),
        (1, 0, 1),
        (1, 1, 7),
        (2, 1, 2),
        (2, 2, 10),
    ];
    for (actual, predicted, n) in counts {
        for _ in 0..n {
            m.add(predicted, actual).unwrap();
        }
    }
    assert_eq!(m.total(), 28);
    assert_eq!(m.correct(), 22);
    assert_eq!(m.count(0, 1), 2);
    assert_eq!(m.count(1, 0), 1);
    assert_eq!(m.accuracy(), Some(22.0 / 28.0));
    assert_eq!(
        m.per_class_accuracy(),
        [Some(5.0 / 8.0), Some(7.0 / 8.0), Some(10.0 / 12.0)]
    );
    assert_eq!(
        m.to_string(),
        "actual \\ predicted  cat  dog  bird  accuracy\n\
         cat                   5    2     1     62.5%\n\
         dog                   1    7     0     87.5%\n\
         bird                  0    2    10     83.3%\n\
         overall accuracy 78.6% (22/28)"
    );
    let err = m.add(3, 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("class 3 is out of range for 3 classes"),
        "{err}"
    );

    let mut b = ConfusionMatrix::numbered(3);
    b.add_all(&[0, 2, 2], &[0, 2, 1]).unwrap();
    assert_eq!(b.per_class_accuracy(), [Some(1.0), Some(0.0), Some(1.0)]);
    b.reset();
    assert_eq!(b.total(), 0);
    assert_eq!(b.per_class_accuracy(), [None, None, None]);
}

// ---------------------------------------------------------------------------------------------
// Progress

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn progress_plain_lines_every_n_batches_and_at_epoch_end() {
    let out = SharedBuf::default();
    let mut p = Progress::plain(out.clone(), 2, 7, 3);
    assert!(!p.is_bar());
    for e in 1..=2 {
        p.start_epoch(e);
        for b in 0..7 {
            // Batches of 10 images: loss 1.0 for the first three, 0.5 after; 6 of 10 correct.
            p.batch(if b < 3 { 1.0 } else { 0.5 }, 6, 10);
        }
        let totals = p.finish_epoch();
        assert_eq!(totals.epoch, e);
        assert_eq!(totals.batches, 7);
        assert_eq!(totals.images, 70);
        assert!((totals.loss - (3.0 * 1.0 + 4.0 * 0.5) / 7.0).abs() < 1e-12);
        assert!((totals.accuracy - 0.6).abs() < 1e-12);
    }
    p.println("validation: acc 55.00%");
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    // Timing fields vary; check everything else (src/train/progress.rs checks them on a fixed clock).
    let expect = [
        (
            "epoch 1/2  batch 3/7  loss 1.0000  acc 60.00%  ",
            " img/s  eta ",
        ),
        (
            "epoch 1/2  batch 6/7  loss 0.7500  acc 60.00%  ",
            " img/s  eta ",
        ),
        (
            "epoch 1/2  done 7 batches  loss 0.7143  acc 60.00%  ",
            " img/s  ",
        ),
        (
            "epoch 2/2  batch 3/7  loss 1.0000  acc 60.00%  ",
            " img/s  eta ",
        ),
        (
            "epoch 2/2  batch 6/7  loss 0.7500  acc 60.00%  ",
            " img/s  eta ",
        ),
        (
            "epoch 2/2  done 7 batches  loss 0.7143  acc 60.00%  ",
            " img/s  ",
        ),
    ];
    for (line, (head, mid)) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(head),
            "{line:?} should start with {head:?}"
        );
        let rest = &line[head.len()..];
        let (rate, tail) = rest.split_once(mid).unwrap_or_else(|| panic!("{line:?}"));
        assert!(rate.parse::<u64>().is_ok(), "images/s {rate:?} in {line:?}");
        if mid.ends_with("eta ") {
            let (m, s) = tail.split_once(':').unwrap();
            assert!(
                m.parse::<u64>().is_ok() && s.len() == 2 && s.parse::<u64>().is_ok(),
                "{line:?}"
            );
        } else {
            assert!(
                tail.ends_with(" s") && tail[..tail.len() - 2].parse::<f64>().is_ok(),
                "{line:?}"
            );
        }
    }
    assert_eq!(lines[6], "validation: acc 55.00%");
}

// ---------------------------------------------------------------------------------------------
// Early stopping and the loss guard

#[test]
fn early_stopping_counts_patience_from_the_last_improvement() {
    let mut es = EarlyStopping::new(2, 0.01).unwrap();
    assert_eq!(es.best_epoch(), None);
    let steps = [
        (1, 0.50, Decision::Improved),
        (2, 0.60, Decision::Improved),
        (3, 0.605, Decision::Continue), // within min_delta: not an improvement
        (4, 0.62, Decision::Improved),  // patience resets
        (5, 0.61, Decision::Continue),
        (6, f64::NAN, Decision::Stop), // NaN never improves; 2 epochs without improvement
    ];
    for (epoch, acc, expected) in steps {
        assert_eq!(es.update(epoch, acc), expected, "epoch {epoch}");
    }
    assert_eq!(es.best_epoch(), Some(4));
    assert_eq!(es.best_accuracy(), Some(0.62));
    assert_eq!(es.epochs_without_improvement(), 2);

    let mut eager = EarlyStopping::new(0, 0.0).unwrap();
    assert_eq!(eager.update(1, 0.3), Decision::Improved);
    assert_eq!(eager.update(2, 0.3), Decision::Stop, "equal is not better");

    assert!(EarlyStopping::new(3, -0.1).is_err());
    assert!(EarlyStopping::new(3, f64::NAN).is_err());
}

#[test]
fn non_finite_loss_names_the_step_and_suggests_a_lower_learning_rate() {
    assert!(check_finite(2.3, 0).is_ok());
    for (loss, shown) in [
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
    ] {
        let err = check_finite(loss, 1234).unwrap_err();
        assert!(matches!(err, TrainError::NonFiniteLoss { step: 1234, .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("loss is {shown} at step 1234")),
            "{msg}"
        );
        assert!(msg.contains("lower learning rate"), "{msg}");
    }
}
