//! `kiln predict CHECKPOINT INPUT...` on the CPU: a tiny model trained on an image folder the
//! test writes predicts its own training images' classes, `--json` prints one parseable object per
//! image, a greyscale model reads RGB images (and an RGB model greyscale ones) by converting
//! them, and a file that is not an image, or a folder without images, is an error naming it.
//! A plain safetensors state_dict (no kiln metadata) with `--model` and its inputs' description
//! predicts as the checkpoint of the same weights, and (with PyTorch) a torchvision-saved file
//! gives torchvision's top-5.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln::data::{DataSpec, DatasetKind};
use kiln::nn::Architecture;
use kiln::train::{
    evaluate_checkpoint, evaluate_model_file, image_inputs, load_run_checkpoint, train, ClassList,
    PlainModelFlags, Predictor, TrainConfig,
};
use kiln::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLASSES: [&str; 3] = ["bright", "dark", "stripes"];

/// The grey value of class `class` at column `x`, plus `noise` (below 25).
fn grey_pixel(class: &str, x: u32, noise: u8) -> u8 {
    match class {
        "bright" => 215 + noise,
        "dark" => noise,
        _ if (x / 2) % 2 == 0 => 230 + noise, // vertical stripes 2 pixels wide
        _ => noise,
    }
}

/// `DIR/train/<class>/k.png` and `DIR/test/<class>/k.png`, 16x16: greyscale files when `grey`,
/// else RGB files of a colour per class (the same brightness pattern, tinted).
fn write_folder(dir: &Path, per_class: usize, grey: bool) {
    let mut rng = StdRng::seed_from_u64(5);
    for split in ["train", "test"] {
        for (c, class) in CLASSES.iter().enumerate() {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for k in 0..per_class {
                let noise: Vec<u8> = (0..256).map(|_| rng.random_range(0..25)).collect();
                let at = |x: u32, y: u32| grey_pixel(class, x, noise[(y * 16 + x) as usize]);
                let path = folder.join(format!("{k}.png"));
                if grey {
                    image::GrayImage::from_fn(16, 16, |x, y| image::Luma([at(x, y)]))
                        .save(&path)
                        .unwrap();
                } else {
                    let tint = [[255, 80, 80], [80, 255, 80], [80, 80, 255]][c];
                    image::RgbImage::from_fn(16, 16, |x, y| {
                        let v = at(x, y) as u32;
                        image::Rgb(tint.map(|t: u32| (v * t / 255) as u8))
                    })
                    .save(&path)
                    .unwrap();
                }
            }
        }
    }
}

/// Trains LeNet-5 on the folder at `dir` and returns its best checkpoint.
fn trained(dir: &Path, out: &Path) -> PathBuf {
    let data = DataSpec::new(DatasetKind::Folder, Some(dir))
        .load(None)
        .unwrap();
    let config = TrainConfig {
        model: Architecture::LeNet5,
        epochs: 8,
        batch_size: 8,
        lr: 0.05,
        device: Device::Cpu,
        seed: 2,
        val_fraction: 0.0,
        out: out.to_path_buf(),
        ..TrainConfig::default()
    };
    let summary = train(&config, &data).unwrap();
    assert!(
        summary.test_accuracy > 0.9,
        "the model must learn the folder first: {}",
        summary.test_accuracy
    );
    out.join("best.safetensors")
}

fn kiln_predict(args: &[&Path], flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("predict")
        .args(args)
        .args(["--device", "cpu"])
        .args(flags)
        .output()
        .unwrap()
}

#[test]
fn a_model_predicts_its_own_training_images_with_names_and_probabilities() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("shades");
    write_folder(&folder, 10, false);
    let checkpoint = trained(&folder, &root.path().join("run"));

    let files = image_inputs(&[folder.join("train")]).unwrap();
    assert_eq!(
        files.len(),
        30,
        "a folder stands for its images, recursively"
    );
    let mut predictor = Predictor::load(&checkpoint, Device::Cpu).unwrap();
    assert_eq!(predictor.info().sample_shape, [3, 16, 16]);
    assert!(predictor.meta().is_some());
    // Batches of 7 do not divide the 30 images.
    let predictions = predictor.predict(&files, 5, 7).unwrap();
    assert_eq!(predictions.len(), 30);
    let mut correct = 0;
    for p in &predictions {
        assert_eq!(p.top.len(), 3, "--top-k 5 is capped at the 3 classes");
        let total: f64 = p.top.iter().map(|s| s.probability).sum();
        assert!((total - 1.0).abs() < 1e-9, "all classes shown: {total}");
        assert!(p
            .top
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability));
        let class = p
            .path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        correct += usize::from(p.top[0].name == class);
        assert_eq!(p.top[0].name, CLASSES[p.top[0].class]);
    }
    assert!(correct >= 28, "{correct} of 30 training images");

    // The command line: a table by default.
    let out = kiln_predict(&[&checkpoint, &files[0], &files[29]], &["--top-k", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&files[0].display().to_string()), "{text}");
    assert!(text.contains("bright") && text.contains('%'), "{text}");
    assert_eq!(
        text.lines().count(),
        2 * 3,
        "a path line and 2 classes per image:\n{text}"
    );
}

#[test]
fn json_output_parses_one_object_per_image() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("shades");
    write_folder(&folder, 10, false);
    let checkpoint = trained(&folder, &root.path().join("run"));
    let out = kiln_predict(
        &[&checkpoint, &folder.join("test/dark")],
        &["--json", "--top-k", "2", "--batch-size", "4"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    for line in &lines {
        assert!(line["path"].as_str().unwrap().contains("dark"));
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["name"], "dark");
        assert_eq!(top[0]["class"], 1);
        let p = top[0]["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p) && p >= top[1]["probability"].as_f64().unwrap());
    }
}

#[test]
fn greyscale_and_rgb_inputs_are_converted_to_the_models_channels() {
    let root = tempfile::tempdir().unwrap();
    let (grey_folder, rgb_folder) = (root.path().join("grey"), root.path().join("rgb"));
    write_folder(&grey_folder, 10, true);
    write_folder(&rgb_folder, 10, false);
    let grey_model = trained(&grey_folder, &root.path().join("grey-run"));
    let mut predictor = Predictor::load(&grey_model, Device::Cpu).unwrap();
    assert_eq!(predictor.info().sample_shape, [1, 16, 16]);
    // A 1-channel model given RGB images: converted to grey by luma. The tinted "bright" and
    // "stripes" images stay brighter than "dark" ones, so those are still told apart.
    let rgb_files = image_inputs(&[rgb_folder.join("train/dark")]).unwrap();
    let predictions = predictor.predict(&rgb_files, 1, 16).unwrap();
    assert!(
        predictions.iter().all(|p| p.top[0].name == "dark"),
        "{predictions:?}"
    );

    // A 3-channel model given greyscale images: replicated to RGB; it runs and names classes.
    let rgb_model = trained(&rgb_folder, &root.path().join("rgb-run"));
    let mut predictor = Predictor::load(&rgb_model, Device::Cpu).unwrap();
    let grey_files = image_inputs(&[grey_folder.join("test")]).unwrap();
    let predictions = predictor.predict(&grey_files, 3, 16).unwrap();
    assert_eq!(predictions.len(), 30);
    assert!(predictions.iter().all(|p| p.top.len() == 3));

    // Images of another size are resized and center-cropped to the model's 16x16.
    let big = root.path().join("big.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([5, 5, 5]))
        .save(&big)
        .unwrap();
    let p = predictor.predict(&[big], 1, 1).unwrap();
    assert_eq!(p[0].top[0].name, "dark");
}

#[test]
fn a_non_image_file_a_missing_input_and_an_empty_folder_are_errors_naming_them() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("shades");
    write_folder(&folder, 4, true);
    let checkpoint = root.path().join("run/best.safetensors");
    let data = DataSpec::new(DatasetKind::Folder, Some(&folder))
        .load(None)
        .unwrap();
    let config = TrainConfig {
        epochs: 1,
        device: Device::Cpu,
        val_fraction: 0.0,
        out: root.path().join("run"),
        ..TrainConfig::default()
    };
    train(&config, &data).unwrap();

    let notes = root.path().join("notes.png");
    std::fs::write(&notes, "not an image at all").unwrap();
    let out = kiln_predict(&[&checkpoint, &notes], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("notes.png") && err.contains("decode"), "{err}");

    let missing = root.path().join("missing.jpg");
    let out = kiln_predict(&[&checkpoint, &missing], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("missing.jpg"),
        "{err}"
    );

    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("readme.txt"), "no images").unwrap();
    let out = kiln_predict(&[&checkpoint, &empty], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("empty") && err.contains("PNG"),
        "{err}"
    );

    let out = kiln_predict(&[&notes, &folder], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("notes.png"), "{err}");

    let mut predictor = Predictor::load(&checkpoint, Device::Cpu).unwrap();
    let err = predictor.predict(&[notes], 0, 1).unwrap_err().to_string();
    assert!(err.contains("--top-k 0"), "{err}");
}

/// The same checkpoint predicts the same probabilities on a GPU device as on the CPU.
fn predictions_on_a_gpu_match_the_cpu(device: Device) {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("shades");
    write_folder(&folder, 10, false);
    let checkpoint = trained(&folder, &root.path().join("run"));
    let files = image_inputs(&[folder.join("test")]).unwrap();
    let on = |device| {
        let mut predictor = Predictor::load(&checkpoint, device).unwrap();
        predictor.predict(&files, 3, 8).unwrap()
    };
    let (cpu, gpu) = (on(Device::Cpu), on(device));
    for (c, g) in cpu.iter().zip(&gpu) {
        assert_eq!(c.top[0].class, g.top[0].class, "{}", c.path.display());
        for (a, b) in c.top.iter().zip(&g.top) {
            assert!(
                (a.probability - b.probability).abs() < 1e-4,
                "{}: {a:?} vs {b:?}",
                c.path.display()
            );
        }
    }
}
kiln::test_device!(predictions_on_a_gpu_match_the_cpu, gpu);

/// The model tensors of a kiln checkpoint as a plain state_dict (f32, no metadata), as
/// `safetensors.torch.save_file(model.state_dict(), path)` writes one.
fn write_plain_state_dict(checkpoint: &Path, path: &Path) {
    let (ck, _) = load_run_checkpoint(checkpoint).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = (ck.tensors.iter())
        .filter_map(|(n, t)| Some((n.strip_prefix("model.")?.to_string(), t)))
        .map(|(n, t)| {
            let bytes = t
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (n, t.shape().to_vec(), bytes)
        })
        .collect();
    let views = tensors.iter().map(|(n, shape, bytes)| {
        let view = safetensors::tensor::TensorView::new(
            safetensors::tensor::Dtype::F32,
            shape.clone(),
            bytes,
        );
        (n.clone(), view.unwrap())
    });
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn joined(values: &[f32]) -> String {
    let spelled: Vec<String> = values.iter().map(f32::to_string).collect();
    spelled.join(",")
}

/// A plain state_dict of a kiln checkpoint's weights, given `--model`, `--image-size`, `--mean`,
/// `--std` and `--classes`, predicts exactly what the checkpoint predicts; a plain file without
/// `--model`, or a checkpoint with one of those flags, is an error saying what to do.
#[test]
fn a_plain_state_dict_predicts_as_the_checkpoint_of_the_same_weights() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("shades");
    write_folder(&folder, 10, false);
    let checkpoint = trained(&folder, &root.path().join("run"));
    let plain = root.path().join("plain.safetensors");
    write_plain_state_dict(&checkpoint, &plain);
    let (_, meta) = load_run_checkpoint(&checkpoint).unwrap();
    let norm = &meta.dataset.normalization;
    let names = root.path().join("classes.txt");
    std::fs::write(&names, CLASSES.join("\n") + "\n").unwrap();
    let files = image_inputs(&[folder.join("test")]).unwrap();

    let expected = Predictor::load(&checkpoint, Device::Cpu)
        .unwrap()
        .predict(&files, 3, 8)
        .unwrap();
    let flags = PlainModelFlags {
        model: Some(Architecture::LeNet5),
        image_size: Some(16),
        mean: Some(norm.mean.clone()),
        std: Some(norm.std.clone()),
        classes: Some(ClassList::File(names.clone())),
    };
    let mut predictor = Predictor::load_with(&plain, &flags, Device::Cpu).unwrap();
    assert!(predictor.meta().is_none());
    assert_eq!(
        predictor.info().sample_shape,
        [3, 16, 16],
        "3 channels: 0.weight's"
    );
    assert_eq!(predictor.predict(&files, 3, 8).unwrap(), expected);

    // Through the command line, in JSON: the same output as the checkpoint's.
    let (mean, std) = (joined(&norm.mean), joined(&norm.std));
    let plain_flags = [
        "--model",
        "lenet5",
        "--image-size",
        "16",
        "--mean",
        &mean,
        "--std",
        &std,
    ];
    let names_flag = ["--classes", names.to_str().unwrap()];
    let json = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let from_checkpoint = json(kiln_predict(
        &[&checkpoint, &folder.join("test")],
        &["--json"],
    ));
    let from_plain = json(kiln_predict(
        &[&plain, &folder.join("test")],
        &[&plain_flags[..], &names_flag, &["--json"]].concat(),
    ));
    assert_eq!(from_plain, from_checkpoint);
    // Without --classes the head's 3 outputs are named 0, 1, 2.
    let numbered = json(kiln_predict(
        &[&plain, &files[0]],
        &[&plain_flags[..], &["--json"]].concat(),
    ));
    assert!(numbered.contains(r#""name":"0""#), "{numbered}");

    // `kiln eval` of the plain file (the folder read at its 16x16, 3 channels) reports what the
    // checkpoint's evaluation does, and so does the library.
    let eval = |model: &Path, flags: &[&str]| kiln_eval_accuracy_line(model, &folder, flags);
    let plain_eval = eval(&plain, &[&plain_flags[..], &names_flag].concat());
    assert_eq!(plain_eval, eval(&checkpoint, &[]));
    assert!(plain_eval.contains("(30 images)"), "{plain_eval}");
    let test = DataSpec::new(DatasetKind::Folder, Some(&folder))
        .load(None)
        .unwrap()
        .test()
        .unwrap();
    let by_checkpoint = evaluate_checkpoint(&checkpoint, test.clone(), Device::Cpu).unwrap();
    let by_plain = evaluate_model_file(&plain, &flags, test, Device::Cpu).unwrap();
    assert_eq!(by_plain.evaluation.loss, by_checkpoint.evaluation.loss);
    assert_eq!(by_plain.confusion.names(), CLASSES);
    assert!(by_plain.meta.is_none() && by_checkpoint.meta.is_some());

    let failure = |args: &[&Path], flags: &[&str]| {
        let out = kiln_predict(args, flags);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = failure(&[&plain, &files[0]], &[]);
    assert!(
        err.contains("plain.safetensors")
            && err.contains("--model")
            && err.contains("mobilenet-v2"),
        "{err}"
    );
    let err = failure(&[&checkpoint, &files[0]], &["--image-size", "16"]);
    assert!(
        err.contains("--image-size") && err.contains("already records its 3x16x16 input"),
        "{err}"
    );
    let err = failure(&[&checkpoint, &files[0]], &["--model", "lenet5"]);
    assert!(err.contains("already records its model (lenet5)"), "{err}");
    let err = failure(
        &[&plain, &files[0]],
        &[&plain_flags[..], &["--classes", "4"]].concat(),
    );
    assert!(
        err.contains("--classes") && err.contains("3 outputs"),
        "{err}"
    );
    let err = failure(&[&plain, &files[0]], &["--model", "resnet18"]);
    assert!(
        err.contains("conv1.weight") && err.contains("resnet18"),
        "{err}"
    );
}

/// torchvision's ResNet-18 (random weights with its batch norms moved off their defaults, 10
/// classes), saved by `safetensors.torch.save_file(model.state_dict())`, predicts through `kiln
/// predict --model resnet18` (224 and ImageNet's normalization by default) torchvision's top-5
/// for a 224x224 PNG (so neither side resizes) within 1e-4: tests/torchvision_predict.py runs
/// `transforms.ToTensor()` and `transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)` and
/// `softmax(model(x))`. `kiln eval --model resnet18` of the same file on an image folder of
/// 224x224 PNGs reports torchvision's mean cross-entropy (to 1e-4) and correct count on its test
/// split, read by `ImageFolder`. Without PyTorch it prints SKIPPED.
#[test]
fn a_torchvision_saved_file_predicts_and_evaluates_as_torchvision() {
    let python = match kiln::testing::python_with(&["torch", "torchvision", "safetensors"]) {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED: kiln predict on a torchvision state_dict: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torchvision_predict.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let (top5, eval_line) = printed.trim_end().rsplit_once('\n').unwrap();
    let expected: Vec<(usize, f64)> = top5
        .lines()
        .map(|line| {
            let (class, p) = line.split_once(' ').unwrap();
            (class.parse().unwrap(), p.parse().unwrap())
        })
        .collect();
    assert_eq!(expected.len(), 5);
    let weights = dir.path().join("resnet18.safetensors");
    let image = dir.path().join("image.png");
    let out = kiln_predict(&[&weights, &image], &["--model", "resnet18", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = json["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    for (got, (class, p)) in top.iter().zip(&expected) {
        let (got_class, got_p) = (
            got["class"].as_u64().unwrap(),
            got["probability"].as_f64().unwrap(),
        );
        println!("class {got_class}: kiln {got_p:.6}, torchvision {p:.6}");
        assert_eq!(got_class as usize, *class, "{top:?} vs {expected:?}");
        assert_eq!(got["name"], class.to_string());
        assert!((got_p - p).abs() < 1e-4, "class {class}: {got_p} vs {p}");
    }
    assert_evaluates_as_torchvision(&weights, &dir.path().join("folder"), eval_line);
}

/// The "test accuracy ..." line of `kiln eval MODEL --device cpu --data FOLDER FLAGS`, which
/// must succeed.
fn kiln_eval_accuracy_line(model: &Path, folder: &Path, flags: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("eval")
        .arg(model)
        .args(["--device", "cpu", "--data"])
        .arg(folder)
        .args(flags)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("test accuracy"))
        .unwrap_or_else(|| panic!("no test accuracy line in:\n{text}"))
        .to_string()
}

/// `kiln eval FILE --model resnet18` on `folder` against the script's `eval LOSS CORRECT` line.
fn assert_evaluates_as_torchvision(weights: &Path, folder: &Path, expected: &str) {
    let mut fields = expected.split(' ').skip(1);
    let loss: f64 = fields.next().unwrap().parse().unwrap();
    let correct: usize = fields.next().unwrap().parse().unwrap();
    let line = kiln_eval_accuracy_line(weights, folder, &["--model", "resnet18"]);
    println!("kiln: {line}; torchvision: loss {loss}, {correct} of 10 correct");
    // "test accuracy A%, loss L (N images)", L printed to 4 decimals.
    let kiln_loss: f64 = line
        .split("loss ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(line.ends_with("(10 images)"), "{line}");
    assert!(
        (kiln_loss - loss).abs() <= 5e-5 + 1e-4 * loss.max(1.0),
        "{line} vs torchvision's loss {loss}"
    );
    let accuracy = format!("test accuracy {:.2}%", 10.0 * correct as f64);
    assert!(line.starts_with(&accuracy), "{line} vs {accuracy}");
}
