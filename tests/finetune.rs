//! Fine-tuning (`kiln train --init FILE --freeze PATTERN --reset-head`), on the CPU at small
//! sizes: frozen parameters stay bit-identical and have no optimizer state, a run with all but the
//! head frozen trains only the head, a head-only run on an image folder learns, `--init` starts
//! from exactly the file's weights (a kiln checkpoint, or a plain state_dict in f16/bf16/f64 with
//! int64 buffers), `--resume` keeps the flags, and every mistake is an error naming what is wrong.
//! Batch norms left without a trainable parameter keep their running statistics and normalize
//! by them in training (`--frozen-bn eval`, the default), or track batches (`--frozen-bn train`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::data::{DataSpec, Dataset, DatasetKind, InMemoryDataset};
use kiln::nn::{Architecture, Module};
use kiln::train::state::model_tensors;
use kiln::train::{
    apply_init, find_head, freeze_with_norms, load_run_checkpoint, read_init_weights, train,
    FrozenBn, TrainConfig, TrainError,
};
use kiln::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};

/// LeNet-5's parameters: convs 0 and 3, linear layers 7, 9 and 11 (the head).
const ALL_BUT_HEAD: [&str; 4] = ["0.*", "3.*", "7.*", "9.*"];

/// 3x16x16 images in `classes` classes: class k is a bright 5x5 patch in channel k % 3 at corner
/// k % 4, plus noise.
fn patches(count: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let (side, plane) = (16, 256);
    let mut images = vec![0f32; count * 3 * plane];
    let mut labels = Vec::with_capacity(count);
    for (n, image) in images.chunks_mut(3 * plane).enumerate() {
        let class = n % classes;
        labels.push(class as i32);
        image
            .iter_mut()
            .for_each(|p| *p = rng.random_range(0.0..0.3));
        let (top, left) = (((class % 4) / 2) * 10, (class % 2) * 10);
        for h in top..top + 5 {
            for w in left..left + 5 {
                image[(class % 3) * plane + h * side + w] = rng.random_range(0.8..1.0);
            }
        }
    }
    Dataset::new(images, labels, [3, side, side], classes).unwrap()
}

fn patch_data(classes: usize) -> InMemoryDataset {
    let names = (0..classes).map(|k| format!("patch {k}")).collect();
    InMemoryDataset::new(
        "patches",
        names,
        patches(64, classes, 1),
        patches(16, classes, 2),
    )
    .unwrap()
}

fn config(out: &Path) -> TrainConfig {
    TrainConfig {
        model: Architecture::LeNet5,
        epochs: 1,
        batch_size: 16,
        lr: 0.05,
        device: Device::Cpu,
        seed: 3,
        val_fraction: 0.25,
        out: out.to_path_buf(),
        ..TrainConfig::default()
    }
}

/// A trained 4-class base model's best.safetensors under `root`.
fn base_checkpoint(root: &Path) -> PathBuf {
    train(&config(&root.join("base")), &patch_data(4)).unwrap();
    root.join("base/best.safetensors")
}

/// The model tensors of a checkpoint by model name, as f32 values.
fn weights(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let (ck, _) = load_run_checkpoint(path).unwrap();
    ck.tensors
        .iter()
        .filter_map(|(n, t)| Some((n.strip_prefix("model.")?.to_string(), t)))
        .map(|(n, t)| (n, t.to_vec::<f32>().unwrap()))
        .collect()
}

fn strings(patterns: &[&str]) -> Vec<String> {
    patterns.iter().map(|s| s.to_string()).collect()
}

#[test]
fn frozen_weights_stay_bit_identical_and_have_no_optimizer_state() {
    let root = tempfile::tempdir().unwrap();
    let init = base_checkpoint(root.path());
    let out = root.path().join("tuned");
    let tuned = TrainConfig {
        epochs: 2,
        init: Some(init.clone()),
        freeze: strings(&["0.*", "3.weight"]),
        ..config(&out)
    };
    train(&tuned, &patch_data(4)).unwrap();
    let (before, after) = (weights(&init), weights(&out.join("last.safetensors")));
    for name in ["0.weight", "0.bias", "3.weight"] {
        assert_eq!(before[name], after[name], "{name} is frozen");
    }
    for name in ["3.bias", "7.weight", "11.weight", "11.bias"] {
        assert_ne!(before[name], after[name], "{name} trains");
    }
    // The optimizer keeps one momentum buffer per trainable parameter only, in their order.
    let (ck, meta) = load_run_checkpoint(out.join("last.safetensors")).unwrap();
    let trainable = [
        "3.bias",
        "7.weight",
        "7.bias",
        "9.weight",
        "9.bias",
        "11.weight",
        "11.bias",
    ];
    let state: Vec<&(String, Tensor)> = ck
        .tensors
        .iter()
        .filter(|(n, _)| n.starts_with("optimizer."))
        .collect();
    assert_eq!(
        state.len(),
        trainable.len(),
        "{:?}",
        state.iter().map(|s| &s.0)
    );
    for (i, name) in trainable.iter().enumerate() {
        let buffer = state
            .iter()
            .find(|(n, _)| n.starts_with(&format!("optimizer.{i}.")))
            .unwrap();
        assert_eq!(
            buffer.1.shape(),
            ck.get(&format!("model.{name}")).unwrap().shape()
        );
    }
    let settings = meta.settings.unwrap();
    assert_eq!(settings["--freeze"], r#"["0.*","3.weight"]"#);
    assert_eq!(settings["--init"], init.display().to_string());
    assert_eq!(settings["--reset-head"], "false");

    // --resume keeps the freezing (and does not read --init again: the weights are the run's).
    std::fs::rename(&init, root.path().join("moved.safetensors")).unwrap();
    let resumed = TrainConfig {
        epochs: 3,
        resume: true,
        ..tuned.clone()
    };
    let summary = train(&resumed, &patch_data(4)).unwrap();
    assert_eq!(summary.history.len(), 3);
    let resumed_weights = weights(&out.join("last.safetensors"));
    assert_eq!(resumed_weights["0.weight"], before["0.weight"]);
    assert_ne!(resumed_weights["11.weight"], after["11.weight"]);
    let err = train(
        &TrainConfig {
            freeze: strings(&["0.*"]),
            epochs: 4,
            ..resumed
        },
        &patch_data(4),
    )
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::ResumeMismatch { flag, .. } if flag == "--freeze"),
        "{err}"
    );
}

#[test]
fn with_everything_but_the_head_frozen_only_the_head_trains() {
    let root = tempfile::tempdir().unwrap();
    let init = base_checkpoint(root.path());
    let out = root.path().join("head");
    let summary = train(
        &TrainConfig {
            epochs: 2,
            init: Some(init.clone()),
            freeze: strings(&ALL_BUT_HEAD),
            ..config(&out)
        },
        &patch_data(4),
    )
    .unwrap();
    assert_eq!(summary.history.len(), 2);
    let (before, after) = (weights(&init), weights(&out.join("last.safetensors")));
    assert_eq!(before.len(), 10);
    for (name, values) in &before {
        match name.starts_with("11.") {
            true => assert_ne!(values, &after[name], "the head {name} trains"),
            false => assert_eq!(values, &after[name], "{name} is frozen"),
        }
    }
}

/// `DIR/train/<class>/k.png` and `DIR/test/<class>/k.png`, 16x16 RGB: "blue" is blue with noise,
/// "checks" a red and yellow checkerboard, "stripes" green horizontal stripes.
fn write_folder(dir: &Path, train: usize, test: usize) {
    let mut rng = StdRng::seed_from_u64(11);
    for (split, n) in [("train", train), ("test", test)] {
        for class in ["blue", "checks", "stripes"] {
            std::fs::create_dir_all(dir.join(split).join(class)).unwrap();
            for k in 0..n {
                let mut noise = || rng.random_range(0..40u8);
                let img = image::RgbImage::from_fn(16, 16, |x, y| match class {
                    "blue" => image::Rgb([noise(), noise(), 200 + noise()]),
                    "checks" if (x / 4 + y / 4) % 2 == 0 => image::Rgb([210 + noise(), 20, 20]),
                    "checks" => image::Rgb([210, 210 + noise(), 0]),
                    _ if y % 4 < 2 => image::Rgb([0, 180 + noise(), 0]),
                    _ => image::Rgb([noise(), noise(), noise()]),
                });
                img.save(dir.join(format!("{split}/{class}/{k}.png")))
                    .unwrap();
            }
        }
    }
}

#[test]
fn a_head_only_run_on_an_image_folder_learns() {
    let root = tempfile::tempdir().unwrap();
    let init = base_checkpoint(root.path());
    let folder = root.path().join("pictures");
    write_folder(&folder, 24, 8);
    let data = DataSpec::new(DatasetKind::Folder, Some(&folder))
        .load(None)
        .unwrap();
    assert_eq!(data.num_classes(), 3, "the base model has 4");
    let tuned = |reset_head| TrainConfig {
        epochs: 6,
        batch_size: 8,
        init: Some(init.clone()),
        freeze: strings(&ALL_BUT_HEAD),
        reset_head,
        ..config(&root.path().join(format!("tuned-{reset_head}")))
    };
    let err = train(&tuned(false), &data).unwrap_err().to_string();
    assert!(
        err.contains("11.weight")
            && err.contains("[4, 84]")
            && err.contains("[3, 84]")
            && err.contains("--reset-head")
            && err.contains(&init.display().to_string()),
        "{err}"
    );
    let summary = train(&tuned(true), &data).unwrap();
    // Chance is 1/3 on the 24 test images.
    assert!(
        summary.test_accuracy >= 0.8,
        "test accuracy {}",
        summary.test_accuracy
    );
    assert_eq!(summary.confusion.names(), ["blue", "checks", "stripes"]);
    assert!(summary.confusion.to_string().contains("stripes"));
    let after = weights(&root.path().join("tuned-true/last.safetensors"));
    assert_eq!(after["0.weight"], weights(&init)["0.weight"]);
}

#[test]
fn init_from_a_kiln_checkpoint_starts_from_exactly_its_weights() {
    let root = tempfile::tempdir().unwrap();
    let init = base_checkpoint(root.path());
    let mut model = Architecture::LeNet5
        .build_for([3, 16, 16], 4, 99, Device::Cpu)
        .unwrap();
    let file = read_init_weights(&init).unwrap();
    assert!(file.from_kiln);
    assert_eq!(
        file.tensors.len(),
        10,
        "model tensors only, no optimizer state"
    );
    let report = apply_init(&mut model, &file, false).unwrap();
    assert_eq!((report.loaded, report.reset.len()), (10, 0));
    let loaded: BTreeMap<String, Vec<f32>> = model_tensors(&model)
        .into_iter()
        .map(|(n, t)| (n["model.".len()..].to_string(), t.to_vec().unwrap()))
        .collect();
    assert_eq!(loaded, weights(&init));
    assert!(model.parameters().iter().all(|(_, p)| p.needs_grad()));

    // Through a run: one epoch at a learning rate too small to move an f32 weight's bits much
    // would still move them; instead, a run whose every parameter but one bias is frozen keeps
    // the rest of the file's weights exactly.
    let out = root.path().join("run");
    train(
        &TrainConfig {
            init: Some(init.clone()),
            freeze: strings(&["*.weight", "0.bias", "3.bias", "7.bias", "9.bias"]),
            ..config(&out)
        },
        &patch_data(4),
    )
    .unwrap();
    let (before, after) = (weights(&init), weights(&out.join("last.safetensors")));
    for name in before.keys().filter(|n| *n != "11.bias") {
        assert_eq!(before[name], after[name], "{name}");
    }
}

/// Little-endian bytes of `values` in `dtype` (F32, F64, F16, BF16 or I64).
fn encoded(values: &[f32], dtype: Dtype) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| match dtype {
            Dtype::F32 => v.to_le_bytes().to_vec(),
            Dtype::F64 => (v as f64).to_le_bytes().to_vec(),
            Dtype::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
            Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
            Dtype::I64 => (v as i64).to_le_bytes().to_vec(),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Writes a plain state_dict (no metadata, as `safetensors.torch.save_file(model.state_dict())`)
/// holding `tensors`: name → (dtype, shape, values).
fn write_state_dict(path: &Path, tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<f32>)>) {
    let bytes: HashMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(n, (d, _, v))| (n, encoded(v, *d)))
        .collect();
    let views: Vec<(&String, TensorView)> = tensors
        .iter()
        .map(|(n, (d, shape, _))| (n, TensorView::new(*d, shape.clone(), &bytes[n]).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A LeNet-5 state_dict for 3x16x16 inputs and `classes` classes, with values exact in bf16
/// (multiples of 1/64 below 2), each tensor in one of f32, f64, f16 and bf16, and an int64
/// `num_batches_tracked` as torchvision's batch norms have.
fn lenet_state_dict(classes: usize) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<f32>)> {
    let model = Architecture::LeNet5
        .build_for([3, 16, 16], classes, 5, Device::Cpu)
        .unwrap();
    let dtypes = [Dtype::F32, Dtype::F64, Dtype::F16, Dtype::BF16];
    let mut dict: BTreeMap<_, _> = model
        .parameters()
        .into_iter()
        .enumerate()
        .map(|(i, (name, p))| {
            let n = p.shape().iter().product::<usize>();
            let values = (0..n)
                .map(|j| ((i * 7 + j) % 97) as f32 / 64.0 - 0.75)
                .collect();
            (name, (dtypes[i % 4], p.shape().to_vec(), values))
        })
        .collect();
    dict.insert(
        "3.num_batches_tracked".into(),
        (Dtype::I64, vec![], vec![12.0]),
    );
    dict
}

#[test]
fn a_plain_state_dict_in_any_float_dtype_loads_and_int_buffers_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torch.safetensors");
    let dict = lenet_state_dict(4);
    write_state_dict(&path, &dict);
    let file = read_init_weights(&path).unwrap();
    assert!(!file.from_kiln);
    assert_eq!(file.ignored, ["3.num_batches_tracked"]);
    let mut model = Architecture::LeNet5
        .build_for([3, 16, 16], 4, 0, Device::Cpu)
        .unwrap();
    apply_init(&mut model, &file, false).unwrap();
    for (name, p) in model.parameters() {
        assert_eq!(p.to_vec::<f32>().unwrap(), dict[&name].2, "{name}");
    }

    // --reset-head keeps the freshly built head (another class count) and loads the rest.
    let mut five = Architecture::LeNet5
        .build_for([3, 16, 16], 5, 0, Device::Cpu)
        .unwrap();
    let head = find_head(&five).unwrap();
    assert_eq!(
        (head.weight.as_str(), head.bias.as_deref(), head.classes),
        ("11.weight", Some("11.bias"), 5)
    );
    let fresh = five.parameters()[9].1.to_vec::<f32>().unwrap();
    let report = apply_init(&mut five, &file, true).unwrap();
    assert_eq!(report.reset, ["11.weight", "11.bias"]);
    assert_eq!(five.parameters()[9].1.to_vec::<f32>().unwrap(), fresh);
    assert_eq!(
        five.parameters()[0].1.to_vec::<f32>().unwrap(),
        dict["0.weight"].2
    );
}

/// The error of applying the state_dict `dict` to a 4-class LeNet-5 (read from `dir`).
fn init_error(dir: &Path, dict: &BTreeMap<String, (Dtype, Vec<usize>, Vec<f32>)>) -> String {
    let path = dir.join("edited.safetensors");
    write_state_dict(&path, dict);
    let mut model = Architecture::LeNet5
        .build_for([3, 16, 16], 4, 0, Device::Cpu)
        .unwrap();
    let before = model_tensors(&model)[0].1.to_vec::<f32>().unwrap();
    let err = apply_init(&mut model, &read_init_weights(&path).unwrap(), false)
        .unwrap_err()
        .to_string();
    let after = model_tensors(&model)[0].1.to_vec::<f32>().unwrap();
    assert_eq!(before, after, "a refused file changes nothing");
    assert!(err.contains(&path.display().to_string()), "{err}");
    err
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut missing = lenet_state_dict(4);
    missing.remove("7.bias");
    let err = init_error(dir.path(), &missing);
    assert!(
        err.contains("7.bias") && err.contains("[120]") && err.contains("not in the file"),
        "{err}"
    );

    let mut extra = lenet_state_dict(4);
    extra.insert("fc.weight".into(), (Dtype::F32, vec![2, 2], vec![0.0; 4]));
    let err = init_error(dir.path(), &extra);
    assert!(
        err.contains("fc.weight") && err.contains("[2, 2]") && err.contains("0.weight"),
        "{err}"
    );

    let mut misshaped = lenet_state_dict(4);
    misshaped.insert("3.bias".into(), (Dtype::F32, vec![15], vec![0.0; 15]));
    let err = init_error(dir.path(), &misshaped);
    assert!(
        err.contains("3.bias") && err.contains("[15]") && err.contains("[16]"),
        "{err}"
    );
    assert!(!err.contains("--reset-head"), "not the head: {err}");

    let err = init_error(dir.path(), &lenet_state_dict(10));
    assert!(
        err.contains("11.weight")
            && err.contains("[10, 84]")
            && err.contains("[4, 84]")
            && err.contains("10 classes")
            && err.contains("--reset-head"),
        "{err}"
    );

    let not_weights = dir.path().join("notes.safetensors");
    std::fs::write(&not_weights, "these are notes").unwrap();
    let err = read_init_weights(&not_weights).unwrap_err().to_string();
    assert!(
        err.contains("notes.safetensors") && err.contains("--init"),
        "{err}"
    );
    let err = read_init_weights(&dir.path().join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.safetensors"), "{err}");
}

#[test]
fn freeze_patterns_that_match_nothing_or_everything_and_a_lone_reset_head_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let refused = |c: TrainConfig| train(&c, &patch_data(4)).unwrap_err().to_string();
    let err = refused(TrainConfig {
        freeze: strings(&["0.*", "features.*"]),
        ..config(&out)
    });
    assert!(
        err.contains("\"features.*\"") && err.contains("0.weight") && err.contains("(10 in all)"),
        "{err}"
    );
    let err = refused(TrainConfig {
        freeze: strings(&["*"]),
        ..config(&out)
    });
    assert!(err.contains("nothing to train"), "{err}");
    let err = refused(TrainConfig {
        freeze: strings(&["[0-"]),
        ..config(&out)
    });
    assert!(err.contains("[0-") && err.contains("glob"), "{err}");
    let err = refused(TrainConfig {
        reset_head: true,
        ..config(&out)
    });
    assert!(
        err.contains("--reset-head") && err.contains("--init"),
        "{err}"
    );
    assert!(!out.join("last.safetensors").exists());
}

#[test]
fn the_command_line_fine_tunes_an_image_folder_and_resumes_with_the_flags() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("pictures");
    write_folder(&folder, 8, 2);
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let run = |args: &[&str]| {
        let out = Command::new(kiln).args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let base = root.path().join("base");
    let common = ["train", "--device", "cpu", "--batch-size", "8", "--data"];
    let (ok, text) = run(&[&common[..], &[&path(&folder), "--out", &path(&base)]].concat());
    assert!(ok, "{text}");
    let init = base.join("best.safetensors");
    let tuned = root.path().join("tuned");
    let flags = [
        "--epochs",
        "1",
        "--init",
        &path(&init),
        "--freeze",
        "0.*",
        "--freeze",
        "3.*",
    ];
    let fine_tune = |extra: &[&str]| {
        run(&[
            &common[..],
            &[&path(&folder), "--out", &path(&tuned)],
            &flags,
            extra,
        ]
        .concat())
    };
    let (ok, text) = fine_tune(&[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("fine-tuning from") && text.contains("frozen: 0.* 3.*"),
        "{text}"
    );
    let (ok, text) = run(&[
        "train",
        "--device",
        "cpu",
        "--resume",
        "--epochs",
        "2",
        "--out",
        &path(&tuned),
    ]);
    assert!(ok, "{text}");
    let (ck, meta) = load_run_checkpoint(tuned.join("last.safetensors")).unwrap();
    assert_eq!(meta.epoch, 1);
    assert_eq!(meta.settings.unwrap()["--freeze"], r#"["0.*","3.*"]"#);
    let base_weights = weights(&init);
    let tuned_first = ck.get("model.0.weight").unwrap().to_vec::<f32>().unwrap();
    assert_eq!(tuned_first, base_weights["0.weight"]);

    let (ok, text) = run(&[
        "train",
        "--device",
        "cpu",
        "--reset-head",
        "--data",
        &path(&folder),
    ]);
    assert!(!ok && text.contains("--init"), "{text}");
    let (ok, text) = fine_tune(&["--overwrite", "--freeze", "nothing.here"]);
    assert!(!ok && text.contains("nothing.here"), "{text}");
}

/// On a GPU device (and in a step replayed from a CUDA graph) frozen parameters stay
/// bit-identical too, and the trainable ones train.
fn frozen_parameters_stay_identical_on_a_gpu(device: Device) {
    let root = tempfile::tempdir().unwrap();
    let init = base_checkpoint(root.path());
    for cuda_graph in [false, true] {
        let out = root.path().join(format!("gpu-{cuda_graph}"));
        train(
            &TrainConfig {
                device,
                cuda_graph,
                init: Some(init.clone()),
                freeze: strings(&["0.*", "7.weight"]),
                ..config(&out)
            },
            &patch_data(4),
        )
        .unwrap();
        let (before, after) = (weights(&init), weights(&out.join("last.safetensors")));
        for (name, values) in &before {
            match ["0.weight", "0.bias", "7.weight"].contains(&name.as_str()) {
                true => assert_eq!(
                    values, &after[name],
                    "{name} is frozen (graph {cuda_graph})"
                ),
                false => assert_ne!(values, &after[name], "{name} trains (graph {cuda_graph})"),
            }
        }
    }
}
kiln::test_device!(frozen_parameters_stay_identical_on_a_gpu, gpu);

/// A torchvision-layout state_dict of `arch` for 3x16x16 inputs and ImageNet's 1000 classes, as
/// `safetensors.torch.save_file(model.state_dict())` writes one: kiln's names are torchvision's
/// (tests/torchvision_models.rs checks them against torchvision's own lists), every batch norm
/// has its int64 `num_batches_tracked`. The stand-in for a pretrained model: its batch norms'
/// running statistics are fitted by training-mode forwards of normalized-looking inputs, as a
/// trained model's are, so evaluation sees the statistics training normalized by.
fn torchvision_state_dict(arch: Architecture, path: &Path) {
    use kiln::nn::Mode;
    let mut model = arch.build_for([3, 16, 16], 1000, 21, Device::Cpu).unwrap();
    kiln::no_grad(|| {
        for seed in 0..30 {
            let x = Tensor::randn(&[16, 3, 16, 16], 1.0, 300 + seed, Device::Cpu).unwrap();
            model.forward(&x, Mode::Train).unwrap();
        }
    });
    let mut dict: BTreeMap<String, (Dtype, Vec<usize>, Vec<f32>)> = BTreeMap::new();
    for (name, t) in model.parameters().into_iter().chain(model.buffers()) {
        if let Some(bn) = name.strip_suffix("running_mean") {
            let counter = (Dtype::I64, vec![], vec![100.0]);
            dict.insert(format!("{bn}num_batches_tracked"), counter);
        }
        let values = t.to_vec::<f32>().unwrap();
        dict.insert(name, (Dtype::F32, t.shape().to_vec(), values));
    }
    write_state_dict(path, &dict);
}

/// The issue's target: torchvision's ResNet-18 and MobileNetV2, started from a torchvision
/// state_dict with 1000 classes, get a new 3-class head (`--reset-head`) and train only it
/// (`--freeze` of everything else) on an image folder; the head learns, the trunk (its batch
/// norms' running statistics too, under the default `--frozen-bn eval`) stays bit-identical and
/// the optimizer keeps state for the head only.
///
/// MobileNetV2's frozen trunk has 52 batch norms: normalizing by the statistics of batches of 8
/// (`--frozen-bn train`, PyTorch's plain `requires_grad=False`), its evaluation-mode features
/// drifted from epoch to epoch and validation accuracy swung between 28% and 83% over 8 epochs.
/// With the trunk's statistics frozen it learns steadily: the last epoch's validation accuracy is
/// close to the best.
#[test]
fn torchvision_resnet18_and_mobilenet_v2_fine_tune_their_heads_on_an_image_folder() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("pictures");
    write_folder(&folder, 24, 8);
    let data = DataSpec::new(DatasetKind::Folder, Some(&folder))
        .load(None)
        .unwrap();
    let resnet_trunk = [
        "conv1.*", "bn1.*", "layer1.*", "layer2.*", "layer3.*", "layer4.*",
    ];
    let cases: [(Architecture, &[&str], &str, &str); 2] = [
        (
            Architecture::ResNet18,
            &resnet_trunk,
            "fc",
            "layer3.1.conv2.weight",
        ),
        (
            Architecture::MobileNetV2,
            &["features.*"],
            "classifier.1",
            "features.17.conv.1.0.weight",
        ),
    ];
    for (arch, trunk, head, a_trunk_tensor) in cases {
        let init = root.path().join(format!("{}.safetensors", arch.name()));
        torchvision_state_dict(arch, &init);
        let out = root.path().join(arch.name());
        let tuned = TrainConfig {
            model: arch,
            epochs: 6,
            batch_size: 8,
            lr: 0.005,
            init: Some(init.clone()),
            freeze: strings(trunk),
            reset_head: true,
            ..config(&out)
        };
        let summary = train(&tuned, &data).unwrap();
        let val: Vec<f64> = (summary.history.iter())
            .map(|e| e.val_accuracy.unwrap())
            .collect();
        eprintln!(
            "{}: head-only fine-tuning, test accuracy {:.3} (chance 0.333), validation {val:.3?}",
            arch.name(),
            summary.test_accuracy
        );
        assert!(
            summary.test_accuracy >= 0.8,
            "{}: test accuracy {}",
            arch.name(),
            summary.test_accuracy
        );
        // Stable: the last epoch is within 3 of the 18 validation images of the best.
        let best = val.iter().copied().fold(0.0, f64::max);
        assert!(
            val[val.len() - 1] >= best - 0.17,
            "{}: validation accuracy by epoch {val:?}",
            arch.name()
        );
        let (ck, _) = load_run_checkpoint(out.join("last.safetensors")).unwrap();
        let trained = weights(&out.join("last.safetensors"));
        let original = read_init_weights(&init).unwrap();
        let before = original.tensors[a_trunk_tensor].to_vec::<f32>().unwrap();
        assert_eq!(trained[a_trunk_tensor], before, "{a_trunk_tensor} moved");
        for (name, saved) in &original.tensors {
            if name.contains(".running_") {
                let saved = saved.to_vec::<f32>().unwrap();
                assert_eq!(
                    trained[name], saved,
                    "{name}: a frozen batch norm's statistics"
                );
            }
        }
        assert_eq!(
            trained[&format!("{head}.weight")].len(),
            3 * before_head_width(&original, head)
        );
        // One momentum buffer for each of the head's two tensors, and none for the trunk.
        let state = (ck.tensors.iter()).filter(|(n, _)| n.starts_with("optimizer."));
        let shapes: Vec<Vec<usize>> = state.map(|(_, t)| t.shape().to_vec()).collect();
        let width = before_head_width(&original, head);
        assert_eq!(shapes, [vec![3, width], vec![3]], "{}", arch.name());
    }
}

/// The number of features the head of an init file reads.
fn before_head_width(init: &kiln::train::InitWeights, head: &str) -> usize {
    init.tensors[&format!("{head}.weight")].shape()[1]
}

/// Everything of ResNet-20 but its head (14.*) and the stem batch norm's bias (1.bias).
const RESNET20_TRUNK_BUT_ONE_BIAS: [&str; 4] = ["0.*", "1.weight", "[3-9].*", "1[01].*"];

/// The running statistics of a model's tensors by name (see [`weights`]).
fn running_statistics(tensors: &BTreeMap<String, Vec<f32>>) -> BTreeMap<&String, &Vec<f32>> {
    (tensors.iter())
        .filter(|(n, _)| n.contains(".running_"))
        .collect()
}

/// With `--frozen-bn eval` (the default) a batch norm whose weight and bias are both frozen keeps
/// its running statistics bit-identical through training; the stem's, whose bias trains, tracks
/// the batches, and with `--frozen-bn train` (PyTorch's plain `requires_grad=False`) every one
/// does. The flag is recorded for `--resume`, which refuses another value.
#[test]
fn frozen_batch_norms_keep_their_running_statistics_unless_frozen_bn_is_train() {
    let root = tempfile::tempdir().unwrap();
    let init = root.path().join("resnet20.safetensors");
    torchvision_state_dict(Architecture::ResNet20, &init);
    let before: BTreeMap<String, Vec<f32>> = (read_init_weights(&init).unwrap().tensors.iter())
        .map(|(n, t)| (n.clone(), t.to_vec::<f32>().unwrap()))
        .collect();
    let tuned = |frozen_bn: FrozenBn| TrainConfig {
        model: Architecture::ResNet20,
        init: Some(init.clone()),
        reset_head: true,
        freeze: strings(&RESNET20_TRUNK_BUT_ONE_BIAS),
        frozen_bn,
        ..config(&root.path().join(frozen_bn.name()))
    };
    let run = |frozen_bn: FrozenBn| {
        let config = tuned(frozen_bn);
        train(&config, &patch_data(4)).unwrap();
        let last = config.out.join("last.safetensors");
        let (_, meta) = load_run_checkpoint(&last).unwrap();
        assert_eq!(meta.settings.unwrap()["--frozen-bn"], frozen_bn.name());
        weights(&last)
    };
    let eval = run(FrozenBn::Eval);
    let stats = running_statistics(&eval);
    assert_eq!(stats.len(), 2 * 21, "ResNet-20 has 21 batch norms");
    for (name, after) in stats {
        match name.starts_with("1.") {
            true => assert_ne!(after, &before[name], "{name}: its bias trains"),
            false => assert_eq!(after, &before[name], "{name} is frozen"),
        }
    }
    let plain = run(FrozenBn::Train);
    for (name, after) in running_statistics(&plain) {
        assert_ne!(
            after, &before[name],
            "{name} tracks batches under --frozen-bn train"
        );
    }
    let resumed_elsewhere = TrainConfig {
        out: root.path().join("eval"),
        ..tuned(FrozenBn::Train)
    };
    let err = train(
        &TrainConfig {
            resume: true,
            epochs: 2,
            ..resumed_elsewhere
        },
        &patch_data(4),
    )
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::ResumeMismatch { flag, .. } if flag == "--frozen-bn"),
        "{err}"
    );
}

/// A trunk whose batch norms are all frozen computes the same in training and evaluation mode
/// (ResNet-20 has no dropout), and a training forward leaves its statistics alone; under
/// `--frozen-bn train` the two modes differ.
#[test]
fn a_frozen_trunk_computes_the_same_in_train_and_eval_mode() {
    use kiln::nn::Mode;
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("resnet20.safetensors");
    torchvision_state_dict(Architecture::ResNet20, &init);
    let file = read_init_weights(&init).unwrap();
    let x = Tensor::randn(&[4, 3, 16, 16], 1.0, 77, Device::Cpu).unwrap();
    let forwards = |frozen_bn| {
        let mut model = (Architecture::ResNet20)
            .build_for([3, 16, 16], 1000, 0, Device::Cpu)
            .unwrap();
        apply_init(&mut model, &file, false).unwrap();
        let trunk = strings(&["[0-9].*", "1[01].*"]);
        let (_, norms) = freeze_with_norms(&mut model, &trunk, frozen_bn).unwrap();
        let mut logits = |mode| {
            let y = model.forward(&x, mode).unwrap();
            y.to_vec::<f32>().unwrap()
        };
        let (train, eval) = (logits(Mode::Train), logits(Mode::Eval));
        let buffers: Vec<Vec<f32>> = (model.buffers().into_iter())
            .map(|(_, b)| b.to_vec::<f32>().unwrap())
            .collect();
        (norms, train, eval, buffers)
    };
    let saved: Vec<Vec<f32>> =
        (Architecture::ResNet20.build_for([3, 16, 16], 1000, 0, Device::Cpu))
            .unwrap()
            .buffers()
            .into_iter()
            .map(|(name, _)| file.tensors[&name].to_vec::<f32>().unwrap())
            .collect();
    let (norms, train, eval, buffers) = forwards(FrozenBn::Eval);
    assert_eq!(norms, 21);
    assert_eq!(
        train, eval,
        "frozen statistics: the same logits in both modes"
    );
    assert_eq!(
        buffers, saved,
        "a training forward kept the running statistics"
    );
    let (norms, train, eval, buffers) = forwards(FrozenBn::Train);
    assert_eq!(norms, 0);
    assert_ne!(train, eval, "batch statistics in training mode");
    assert_ne!(buffers, saved, "running statistics updated");
}
