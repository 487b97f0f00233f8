//! The training loop end to end on a small synthetic dataset written as Fashion-MNIST IDX files:
//! reports are written, the network learns, `--resume` continues exactly, early stopping and
//! restarts work, a diverging run stops with a clear error and keeps its last good checkpoint, and
//! the command line explains bad flags.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::data::{
    write_idx_images, write_idx_labels, FashionMnist, IdxImages, FASHION_MNIST_FILES,
};
use kiln::nn::Architecture;
use kiln::train::{
    load_checkpoint, load_run_checkpoint, read_metrics_csv, train, Precision, RunSummary,
    TrainConfig, TrainError,
};
use kiln::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A fresh directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-training-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 28x28 images whose class is a bright 6x6 patch at one of ten places, plus noise.
fn images(count: usize, seed: u64) -> (IdxImages, Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pixels = vec![0u8; count * 784];
    let mut labels = Vec::with_capacity(count);
    for (n, image) in pixels.chunks_mut(784).enumerate() {
        let class = n % 10;
        labels.push(class as u8);
        image.iter_mut().for_each(|p| *p = rng.random_range(0..60));
        let (top, left) = (4 + (class / 5) * 12, 2 + (class % 5) * 5);
        for h in top..top + 6 {
            for w in left..left + 4 {
                image[h * 28 + w] = 200 + rng.random_range(0..55);
            }
        }
    }
    (
        IdxImages {
            count,
            rows: 28,
            cols: 28,
            pixels,
        },
        labels,
    )
}

/// Writes a synthetic dataset with Fashion-MNIST's file names into `dir`.
fn synthetic_fashion_mnist(dir: &Path, train: usize, test: usize) {
    let (train_images, train_labels) = images(train, 1);
    let (test_images, test_labels) = images(test, 2);
    let path = |i: usize| dir.join(format!("{}.gz", FASHION_MNIST_FILES[i]));
    write_idx_images(&path(0), &train_images, true).unwrap();
    write_idx_labels(&path(1), &train_labels, true).unwrap();
    write_idx_images(&path(2), &test_images, true).unwrap();
    write_idx_labels(&path(3), &test_labels, true).unwrap();
}

/// Trains on the Fashion-MNIST files in `data` (a run's data comes from the caller).
fn train_on(data: &Path, config: &TrainConfig) -> Result<RunSummary, TrainError> {
    let mnist = FashionMnist::load(Some(data))?;
    train(config, &mnist)
}

fn config(out: &Path) -> TrainConfig {
    TrainConfig {
        model: Architecture::LeNet5,
        epochs: 2,
        batch_size: 32,
        lr: 0.02,
        device: Device::Cpu,
        seed: 7,
        val_fraction: 0.2,
        out: out.to_path_buf(),
        ..TrainConfig::default()
    }
}

#[test]
fn a_run_learns_and_writes_every_report() {
    let root = temp_dir("reports");
    synthetic_fashion_mnist(&root, 600, 100);
    let out = root.join("run");
    let summary = train_on(
        &root,
        &TrainConfig {
            epochs: 3,
            ..config(&out)
        },
    )
    .unwrap();
    for file in [
        "best.safetensors",
        "last.safetensors",
        "metrics.csv",
        "curves.png",
        "filters.png",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    assert_eq!(read_metrics_csv(out.join("metrics.csv")).unwrap().len(), 3);
    assert!(
        summary.test_accuracy > 0.5,
        "test accuracy {} is near chance",
        summary.test_accuracy
    );
    assert_eq!(summary.confusion.total(), 100);
    let (best, meta) = load_run_checkpoint(out.join("best.safetensors")).unwrap();
    assert_eq!(meta.model, Architecture::LeNet5);
    assert_eq!(meta.version, kiln::train::META_VERSION);
    assert_eq!(meta.dataset.sample_shape, [1, 28, 28]);
    assert_eq!(meta.dataset.num_classes(), 10);
    assert_eq!(meta.batch_size, Some(32));
    assert!(best.get("model.0.weight").is_some());
}

#[test]
fn resume_continues_exactly_where_the_run_stopped() {
    let root = temp_dir("resume");
    synthetic_fashion_mnist(&root, 300, 60);
    let vgg = |out: &Path, epochs| TrainConfig {
        model: Architecture::Vgg, // has batch norm and dropout: their state must resume too
        epochs,
        optimizer: kiln::train::OptimizerKind::Adam,
        lr: 1e-3,
        augment: true,
        ..config(out)
    };
    let whole = root.join("whole");
    train_on(&root, &vgg(&whole, 3)).unwrap();
    let split = root.join("split");
    train_on(&root, &vgg(&split, 2)).unwrap();
    train_on(
        &root,
        &TrainConfig {
            resume: true,
            ..vgg(&split, 3)
        },
    )
    .unwrap();

    let (a, b) = (
        load_checkpoint(whole.join("last.safetensors")).unwrap(),
        load_checkpoint(split.join("last.safetensors")).unwrap(),
    );
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((name_a, ta), (name_b, tb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(name_a, name_b);
        assert_eq!(
            ta.to_vec::<f32>().unwrap(),
            tb.to_vec::<f32>().unwrap(),
            "{name_a} differs after resuming"
        );
    }
    let (ma, mb) = (
        read_metrics_csv(whole.join("metrics.csv")).unwrap(),
        read_metrics_csv(split.join("metrics.csv")).unwrap(),
    );
    assert_eq!(ma.len(), 3);
    assert_eq!(mb.len(), 3);
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(
            (x.epoch, x.train_loss, x.val_accuracy),
            (y.epoch, y.train_loss, y.val_accuracy)
        );
    }
}

#[test]
fn mixed_precision_runs_learn_and_an_f16_run_resumes_exactly() {
    let root = temp_dir("mixed");
    synthetic_fashion_mnist(&root, 400, 80);
    let bf16 = train_on(
        &root,
        &TrainConfig {
            epochs: 3,
            precision: Precision::Bf16,
            ..config(&root.join("bf16"))
        },
    )
    .unwrap();
    assert!(
        bf16.test_accuracy > 0.5,
        "bf16 test accuracy {}",
        bf16.test_accuracy
    );

    // f16 carries the loss scaler across epochs; it is checkpointed, so resuming is exact.
    let f16 = |out: &Path, epochs| TrainConfig {
        epochs,
        precision: Precision::F16,
        ..config(out)
    };
    let whole = root.join("f16-whole");
    let summary = train_on(&root, &f16(&whole, 3)).unwrap();
    assert!(
        summary.test_accuracy > 0.5,
        "f16 test accuracy {}",
        summary.test_accuracy
    );
    let split = root.join("f16-split");
    train_on(&root, &f16(&split, 2)).unwrap();
    train_on(
        &root,
        &TrainConfig {
            resume: true,
            ..f16(&split, 3)
        },
    )
    .unwrap();
    let ((a, meta_a), (b, meta_b)) = (
        load_run_checkpoint(whole.join("last.safetensors")).unwrap(),
        load_run_checkpoint(split.join("last.safetensors")).unwrap(),
    );
    let scaler =
        |m: &kiln::train::CheckpointMeta| m.training.as_ref().unwrap().loss_scaler.unwrap();
    let scale = |m: &kiln::train::CheckpointMeta| scaler(m).scale;
    assert_eq!(scale(&meta_a), scale(&meta_b));
    assert_eq!(scaler(&meta_a).good_steps, scaler(&meta_b).good_steps);
    assert!(
        scale(&meta_a) <= 65536.0 && scale(&meta_a).log2().fract() == 0.0,
        "scale {}",
        scale(&meta_a)
    );
    for ((name, ta), (_, tb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(
            ta.to_vec::<f32>().unwrap(),
            tb.to_vec::<f32>().unwrap(),
            "{name}"
        );
    }
    // An f32 run's checkpoint cannot continue as an f16 run: resuming keeps the precision.
    let f32_run = root.join("f32");
    train_on(&root, &config(&f32_run)).unwrap();
    let err = train_on(
        &root,
        &TrainConfig {
            resume: true,
            ..f16(&f32_run, 3)
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("--precision f32"), "{err}");
}

#[test]
fn early_stopping_and_restarts_keep_the_best_weights() {
    let root = temp_dir("early");
    synthetic_fashion_mnist(&root, 200, 50);
    let out = root.join("run");
    // A tiny learning rate: validation accuracy cannot improve after the first epoch.
    let stopped = train_on(
        &root,
        &TrainConfig {
            epochs: 6,
            lr: 1e-9,
            patience: Some(2),
            ..config(&out)
        },
    )
    .unwrap();
    assert_eq!(
        stopped.history.len(),
        3,
        "stops two epochs after the last improvement"
    );
    assert_eq!(stopped.best_epoch, 0);

    let restarts = train_on(
        &root,
        &TrainConfig {
            epochs: 1,
            restarts: 3,
            ..config(&root.join("restarts"))
        },
    )
    .unwrap();
    assert_eq!(restarts.history.len(), 3, "one row per restart epoch");
    let best_val = restarts
        .history
        .iter()
        .filter_map(|m| m.val_accuracy)
        .fold(0.0, f64::max);
    assert_eq!(restarts.best_val_accuracy, best_val);
    assert_eq!(
        restarts.history[restarts.best_restart].val_accuracy,
        Some(best_val)
    );
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let root = temp_dir("diverge");
    synthetic_fashion_mnist(&root, 200, 50);
    let out = root.join("run");
    train_on(
        &root,
        &TrainConfig {
            epochs: 1,
            ..config(&out)
        },
    )
    .unwrap();
    // A resumed run keeps the checkpoint's learning rate: another one is refused...
    let diverging = TrainConfig {
        epochs: 3,
        lr: 1e12,
        resume: true,
        ..config(&out)
    };
    let err = train_on(&root, &diverging).unwrap_err();
    assert!(matches!(err, TrainError::ResumeMismatch { .. }), "{err}");
    // ...so the checkpoint is rewritten as if its run had been trained with lr 1e12.
    let last = out.join("last.safetensors");
    let (ck, mut meta) = load_run_checkpoint(&last).unwrap();
    let settings = meta.settings.as_mut().unwrap();
    settings.insert("--lr".into(), "1000000000000".into());
    let named: Vec<(String, &kiln::Tensor)> =
        ck.tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    kiln::train::save_checkpoint(&last, &named, &meta.to_metadata().unwrap()).unwrap();
    let before = std::fs::read(&last).unwrap();
    let err = train_on(&root, &diverging).unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteLoss { .. }), "{err}");
    assert!(err.to_string().contains("learning rate"), "{err}");
    assert_eq!(
        std::fs::read(&last).unwrap(),
        before,
        "the last good checkpoint changed"
    );
}

#[test]
fn the_command_line_trains_evaluates_and_explains_bad_flags() {
    let root = temp_dir("cli");
    synthetic_fashion_mnist(&root, 200, 50);
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let out = root.join("run");
    let run = |args: &[&str]| Command::new(kiln).args(args).output().unwrap();
    // A flag given twice takes its last value: the run has one epoch, not three.
    let trained = run(&[
        "train",
        "--epochs",
        "3",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--data",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let stdout = String::from_utf8_lossy(&trained.stdout);
    assert!(stdout.contains("test accuracy"), "{stdout}");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        2,
        "header and one epoch: {metrics}"
    );
    assert!(
        stdout.contains("Ankle boot"),
        "no confusion matrix: {stdout}"
    );

    let best = out.join("best.safetensors");
    let eval = run(&[
        "eval",
        best.to_str().unwrap(),
        "--device",
        "cpu",
        "--data",
        root.to_str().unwrap(),
    ]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    assert!(String::from_utf8_lossy(&eval.stdout).contains("test accuracy"));

    let summary = run(&["summary", "lenet5"]);
    assert!(String::from_utf8_lossy(&summary.stdout).contains("total parameters: 61706"));

    let bad = run(&[
        "train",
        "--optimizer",
        "sgdd",
        "--data",
        root.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--optimizer") && err.contains("adamw"),
        "{err}"
    );
    let bad_precision = run(&[
        "train",
        "--precision",
        "fp8",
        "--data",
        root.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&bad_precision.stderr);
    assert!(err.contains("--precision") && err.contains("bf16"), "{err}");
    // The schedule and the device too: clap names the flag and the choices.
    let bad_schedule = run(&["train", "--schedule", "linear"]);
    let err = String::from_utf8_lossy(&bad_schedule.stderr);
    assert!(
        err.contains("--schedule") && err.contains("cosine"),
        "{err}"
    );
    let bad_device = run(&["eval", "x.safetensors", "--device", "tpu"]);
    let err = String::from_utf8_lossy(&bad_device.stderr);
    assert!(err.contains("--device") && err.contains("cuda:N"), "{err}");
    let bad_model = run(&["summary", "resnet19"]);
    assert!(String::from_utf8_lossy(&bad_model.stderr).contains("resnet20"));
    let help = run(&["train", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--model",
        "--epochs",
        "--batch-size",
        "--lr",
        "--optimizer",
        "--weight-decay",
        "--augment",
        "--device",
        "--seed",
        "--out",
        "--resume",
        "--patience",
        "--restarts",
        "--precision",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let missing = run(&[
        "train",
        "--data",
        root.join("nowhere").to_str().unwrap(),
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
}

fn cpu_and_gpu_loss_curves_agree_for_the_first_steps(device: Device) {
    use kiln::nn::Module;
    let losses = |device: Device| -> Vec<f64> {
        let mut model = Architecture::LeNet5.build(1, 28, 10, 3, device).unwrap();
        let params: Vec<kiln::Tensor> = model
            .parameters()
            .into_iter()
            .map(|(_, t)| t.clone())
            .collect();
        let mut opt = kiln::train::OptimizerKind::Momentum
            .build(&params, 0.05, 0.9, 0.0)
            .unwrap();
        drop(params);
        (0..4)
            .map(|step| {
                let x = kiln::Tensor::randn(&[6, 1, 28, 28], 1.0, 100 + step, device).unwrap();
                let labels: Vec<i32> = (0..6).map(|i| (i + step as i32) % 10).collect();
                let y = kiln::Tensor::from_vec(labels, &[6], device).unwrap();
                kiln::train::train_step(&mut model, opt.as_mut(), &x, &y, step)
                    .unwrap()
                    .0
            })
            .collect()
    };
    let cpu = losses(Device::Cpu);
    let gpu = losses(device);
    for (step, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        assert!(
            (c - g).abs() <= 1e-5 + 1e-4 * c.abs(),
            "step {step}: cpu loss {c}, {device} loss {g}"
        );
    }
}
kiln::test_device!(cpu_and_gpu_loss_curves_agree_for_the_first_steps, gpu);

fn a_training_step_names_a_label_outside_the_classes(device: Device) {
    use kiln::nn::models::lenet5;
    use kiln::nn::Module;
    use kiln::optim::Sgd;
    let mut model = lenet5(1, 28, 10, false, 3, device).unwrap();
    let params: Vec<kiln::Tensor> = model
        .parameters()
        .into_iter()
        .map(|(_, t)| t.clone())
        .collect();
    let mut sgd = Sgd::new(&params, 0.01, 0.9, 0.0).unwrap();
    drop(params);
    let before: Vec<Vec<f32>> = model
        .parameters()
        .iter()
        .map(|(_, t)| t.to_vec::<f32>().unwrap())
        .collect();
    let x = kiln::Tensor::randn(&[3, 1, 28, 28], 1.0, 4, device).unwrap();
    let y = kiln::Tensor::from_vec(vec![1i32, 12, 4], &[3], device).unwrap();
    let err = kiln::train::train_step(&mut model, &mut sgd, &x, &y, 0).unwrap_err();
    assert!(err.to_string().contains("label 12 at row 1"), "{err}");
    // The step stopped before the update.
    let after: Vec<Vec<f32>> = model
        .parameters()
        .iter()
        .map(|(_, t)| t.to_vec::<f32>().unwrap())
        .collect();
    assert_eq!(before, after, "on {device:?}");
}
kiln::test_device!(a_training_step_names_a_label_outside_the_classes, gpu);

#[test]
fn a_cuda_graph_run_matches_an_ordinary_run() {
    if !kiln::testing::emulation_under_test("a_cuda_graph_run_matches_an_ordinary_run") {
        return;
    }
    let root = temp_dir("cuda-graph");
    // 150 images, 20% held out: three batches of 32 and a last one of 24 per epoch, which takes an
    // ordinary step; each epoch's kept best weights share the parameters, so the step is captured
    // again in the next epoch.
    synthetic_fashion_mnist(&root, 150, 40);
    let run = |name: &str, model: Architecture, cuda_graph: bool| {
        let out = root.join(name);
        let summary = train_on(
            &root,
            &TrainConfig {
                model,
                epochs: 2,
                optimizer: kiln::train::OptimizerKind::Adam,
                lr: 1e-3,
                schedule: kiln::train::ScheduleKind::Cosine,
                device: Device::CudaEmulated,
                cuda_graph,
                ..config(&out)
            },
        )
        .unwrap();
        let rows = read_metrics_csv(out.join("metrics.csv")).unwrap();
        let losses: Vec<_> = rows
            .iter()
            .map(|r| (r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy))
            .collect();
        (losses, summary.test_accuracy)
    };
    // LeNet-5 (batch norm and dropout under graphs are checked in tests/cuda_graph.rs; VGG on
    // the emulated device would take minutes here).
    let ordinary = run("ordinary", Architecture::LeNet5, false);
    let graphed = run("graphed", Architecture::LeNet5, true);
    assert_eq!(ordinary, graphed);
    let err = TrainConfig {
        cuda_graph: true,
        ..config(&root.join("cpu"))
    }
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("cuda-graph"), "{err}");
}

/// An empty split is an error naming the split and what emptied it, raised before --out exists.
#[test]
fn empty_splits_are_errors_before_anything_is_written() {
    let root = temp_dir("empty-splits");
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    synthetic_fashion_mnist(&data, 20, 10);
    let out = root.join("run");
    let refused = |data: &Path, config: TrainConfig, split: &str, named: &str| {
        match train_on(data, &config) {
            Err(e @ TrainError::InvalidArgument { .. }) | Err(e @ TrainError::Kiln(_)) => {
                let msg = e.to_string();
                assert!(msg.contains(split) && msg.contains(named), "{msg}");
            }
            Err(e) => panic!("expected an empty {split} error, got: {e}"),
            Ok(s) => panic!(
                "an empty {split} was accepted (test accuracy {})",
                s.test_accuracy
            ),
        }
        assert!(!out.exists(), "{} was written", out.display());
    };
    refused(
        &data,
        TrainConfig {
            limit_train: Some(0),
            ..config(&out)
        },
        "training split",
        "--limit-train 0",
    );
    refused(
        &data,
        TrainConfig {
            val_fraction: 0.9999,
            ..config(&out)
        },
        "training split",
        "--val-fraction 0.9999",
    );
    // 1% of 20 images rounds to no validation images.
    refused(
        &data,
        TrainConfig {
            val_fraction: 0.01,
            ..config(&out)
        },
        "validation split",
        "--val-fraction 0.01",
    );

    let empty_train = root.join("empty-train");
    std::fs::create_dir_all(&empty_train).unwrap();
    synthetic_fashion_mnist(&empty_train, 0, 10);
    refused(
        &empty_train,
        config(&out),
        "training split",
        FASHION_MNIST_FILES[0],
    );
    let empty_test = root.join("empty-test");
    std::fs::create_dir_all(&empty_test).unwrap();
    synthetic_fashion_mnist(&empty_test, 20, 0);
    refused(
        &empty_test,
        config(&out),
        "test split",
        FASHION_MNIST_FILES[2],
    );

    // Through the command line: a failure exit and the message, no run directory.
    let err = kiln_train_refused(&["--limit-train", "0"], &data, &out);
    assert!(err.contains("--limit-train 0"), "{err}");
    assert!(!out.exists());
}

/// Runs `kiln train --device cpu FLAGS --data DATA --out OUT`, checks that it failed, and returns
/// its standard error.
fn kiln_train_refused(flags: &[&str], data: &Path, out: &Path) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", "--device", "cpu"])
        .args(flags)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(!run.status.success(), "kiln train {flags:?} succeeded");
    String::from_utf8_lossy(&run.stderr).into_owned()
}

/// Negative numbers are values of the numeric flags (not unknown flags), so kiln's own
/// validation explains them.
#[test]
fn negative_numeric_flags_reach_kilns_validation() {
    let root = temp_dir("negative-flags");
    synthetic_fashion_mnist(&root, 20, 10);
    let out = root.join("run");
    let err = kiln_train_refused(&["--lr", "-0.1"], &root, &out);
    assert!(
        err.contains("--lr -0.1") && err.contains("positive") && !err.contains("unexpected"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `--kernels` chooses the run's kernel policy: a good list trains on the emulated GPU and is
/// named in the run's first line; a bad choice is refused naming the flag and the value, before
/// anything is written; `kiln info` prints the policy in force.
#[test]
fn the_kernels_flag_sets_the_runs_policy_and_explains_a_bad_value() {
    let root = temp_dir("kernels-flag");
    synthetic_fashion_mnist(&root, 20, 10);
    let out = root.join("run");
    let err = kiln_train_refused(&["--kernels", "large-tiles,turbo"], &root, &out);
    assert!(
        err.contains("--kernels") && err.contains("`turbo`") && err.contains("flat-tiles"),
        "{err}"
    );
    assert!(!out.exists());

    let kiln = env!("CARGO_BIN_EXE_kiln");
    let trained = Command::new(kiln)
        .args([
            "train",
            "--device",
            "emulated",
            "--epochs",
            "1",
            "--batch-size",
            "8",
        ])
        .args(["--kernels", "flat-tiles,large-tiles,conv-chunk-bytes=4096"])
        .arg("--data")
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&trained.stdout);
    assert!(
        trained.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    assert!(
        stdout.contains("kernels large-tiles,flat-tiles,conv-chunk-bytes=4096"),
        "{stdout}"
    );
    assert!(stdout.contains("test accuracy"), "{stdout}");

    let info = Command::new(kiln).arg("info").output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("kernel policy on "), "{info}");
    assert!(info.contains(": default"), "{info}");
}

/// `kiln eval` on a 0-image test set (and any caller) gets an error, not "test accuracy 0.00%".
#[test]
fn evaluating_an_empty_dataset_is_an_error() {
    let mut model = Architecture::LeNet5
        .build(1, 28, 10, 0, Device::Cpu)
        .unwrap();
    let empty = kiln::data::Dataset::new(vec![], vec![], [1, 28, 28], 10).unwrap();
    let loader = kiln::data::DataLoader::new(empty, 4, Device::Cpu).unwrap();
    let err = kiln::train::evaluate(&mut model, &loader).unwrap_err();
    assert!(err.to_string().contains("0 images"), "{err}");
}

/// 3x16x16 images in 4 classes: class k is a bright 5x5 patch in channel k % 3 at corner k, plus
/// noise (a dataset of another shape than Fashion-MNIST's, built in memory).
fn colour_patches(count: usize, seed: u64) -> kiln::data::Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let (side, plane) = (16, 256);
    let mut images = vec![0f32; count * 3 * plane];
    let mut labels = Vec::with_capacity(count);
    for (n, image) in images.chunks_mut(3 * plane).enumerate() {
        let class = n % 4;
        labels.push(class as i32);
        image
            .iter_mut()
            .for_each(|p| *p = rng.random_range(0.0..0.3));
        let (top, left) = ((class / 2) * 10, (class % 2) * 10);
        for h in top..top + 5 {
            for w in left..left + 5 {
                image[(class % 3) * plane + h * side + w] = rng.random_range(0.8..1.0);
            }
        }
    }
    kiln::data::Dataset::new(images, labels, [3, side, side], 4).unwrap()
}

#[test]
fn a_user_built_dataset_of_another_shape_trains_checkpoints_resumes_and_evaluates() {
    use kiln::data::InMemoryDataset;
    use kiln::train::evaluate_checkpoint;
    let root = temp_dir("user-data");
    let names: Vec<String> = ["red", "green", "blue", "red again"]
        .map(String::from)
        .to_vec();
    let data = InMemoryDataset::new(
        "colour patches",
        names.clone(),
        colour_patches(96, 1),
        colour_patches(32, 2),
    )
    .unwrap();
    let out = root.join("run");
    let run = |epochs, resume| TrainConfig {
        epochs,
        batch_size: 16,
        val_fraction: 0.25,
        resume,
        ..config(&out)
    };
    train(&run(1, false), &data).unwrap();
    let summary = train(&run(2, true), &data).unwrap();
    assert_eq!(summary.history.len(), 2, "resumed after epoch 1");
    assert_eq!(summary.confusion.total(), 32);

    let best = out.join("best.safetensors");
    let (ck, meta) = load_run_checkpoint(&best).unwrap();
    assert_eq!(meta.dataset.sample_shape, [3, 16, 16]);
    assert_eq!(meta.dataset.class_names, names);
    assert_eq!(meta.dataset.normalization.mean.len(), 3);
    assert!(meta.dataset.sources.train.contains("in-memory"), "{meta:?}");
    assert_eq!(ck.get("model.0.weight").unwrap().shape(), &[6, 3, 5, 5]);
    assert_eq!(ck.get("model.11.weight").unwrap().shape(), &[4, 84]);

    // The checkpoint alone rebuilds the model and normalizes raw test samples as training did.
    let evaluated = evaluate_checkpoint(&best, colour_patches(32, 2), Device::Cpu).unwrap();
    assert_eq!(evaluated.evaluation.accuracy, summary.test_accuracy);
    assert_eq!(evaluated.evaluation.loss, summary.test_loss);
    assert_eq!(evaluated.confusion.total(), 32);
    assert!(evaluated.confusion.to_string().contains("red again"));
    let fashion_shaped = kiln::data::Dataset::new(vec![0.0; 784], vec![0], [1, 28, 28], 4).unwrap();
    let err = evaluate_checkpoint(&best, fashion_shaped, Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("[1, 28, 28]") && err.to_string().contains("[3, 16, 16]"),
        "{err}"
    );

    // Resuming on data of another shape is refused, naming both.
    let root_fm = temp_dir("user-data-fm");
    synthetic_fashion_mnist(&root_fm, 40, 10);
    let err = train_on(&root_fm, &run(3, true)).unwrap_err().to_string();
    assert!(
        err.contains("colour patches") && err.contains("Fashion-MNIST"),
        "{err}"
    );
}

/// A checkpoint in version 1's format (one string entry per value, as kiln wrote them before
/// the typed metadata), built here by hand, still loads and evaluates, also through `kiln eval`.
#[test]
fn a_version_1_checkpoint_still_loads_and_evaluates() {
    use kiln::nn::Module;
    use kiln::train::state::{model_tensors, restore_model};
    let root = temp_dir("v1-checkpoint");
    synthetic_fashion_mnist(&root, 40, 30);
    let model = Architecture::LeNet5
        .build(1, 28, 10, 5, Device::Cpu)
        .unwrap();
    let tensors = model_tensors(&model);
    let named: Vec<(String, &kiln::Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    let old: std::collections::BTreeMap<String, String> = [
        ("format", "pt"),
        ("architecture", "lenet5"),
        ("restart", "0"),
        ("epoch", "2"),
        ("seed", "5"),
        ("best_val_accuracy", "8.5e-1"),
        ("normalization_mean", "0.25"),
        ("normalization_std", "0.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let path = root.join("old.safetensors");
    kiln::train::save_checkpoint(&path, &named, &old).unwrap();

    let (_, meta) = load_run_checkpoint(&path).unwrap();
    assert_eq!(meta.version, 1);
    assert_eq!(meta.model, Architecture::LeNet5);
    assert_eq!((meta.epoch, meta.seed), (2, 5));
    assert_eq!(meta.best_val_accuracy, Some(0.85));
    assert_eq!(meta.dataset.sample_shape, [1, 28, 28]);
    assert_eq!(meta.dataset.normalization.std, vec![0.5]);
    assert!(meta.training.is_none());

    let mnist = FashionMnist::load(Some(&root)).unwrap();
    let evaluated =
        kiln::train::evaluate_checkpoint(&path, mnist.test().unwrap(), Device::Cpu).unwrap();
    // The same as evaluating the model by hand on the test set normalized with 0.25 / 0.5.
    let mut by_hand = Architecture::LeNet5
        .build(1, 28, 10, 0, Device::Cpu)
        .unwrap();
    restore_model(&mut by_hand, &model_tensors(&model)).unwrap();
    assert_eq!(by_hand.parameter_count(), model.parameter_count());
    let mut test = mnist.test().unwrap();
    test.normalize(&meta.dataset.normalization).unwrap();
    let loader = kiln::data::DataLoader::new(test, 256, Device::Cpu).unwrap();
    let expected = kiln::train::evaluate(&mut by_hand, &loader).unwrap();
    assert_eq!(evaluated.evaluation.predictions, expected.predictions);
    assert_eq!(evaluated.evaluation.loss, expected.loss);

    let eval = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["eval", path.to_str().unwrap(), "--device", "cpu", "--data"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    assert!(String::from_utf8_lossy(&eval.stdout).contains("(30 images)"));
}

/// A data error of a run reaches the caller as `TrainError::Data`, its message intact.
#[test]
fn a_data_error_is_a_train_error() {
    let root = temp_dir("data-error");
    let train_set = colour_patches(8, 1);
    let test_set =
        kiln::data::Dataset::new(vec![0.0; 2 * 3 * 64], vec![0, 1], [3, 8, 8], 4).unwrap();
    let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let data = kiln::data::InMemoryDataset::new("mismatched", names, train_set, test_set).unwrap();
    let err = train(&config(&root.join("run")), &data).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Data(kiln::data::DataError::Mismatch { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("[3, 8, 8]"), "{err}");
    assert!(!root.join("run").exists());
}

/// `--label-smoothing` and `--class-weights`: a training step minimizes (and reports) PyTorch's
/// `F.cross_entropy(logits, y, weight=w, label_smoothing=eps)` of its forward pass, not the plain
/// cross-entropy; the flags are recorded for `--resume`; bad values are refused before anything
/// is written.
#[test]
fn a_run_minimizes_the_smoothed_and_weighted_cross_entropy() {
    use kiln::nn::models::lenet5;
    use kiln::nn::{Mode, Module};
    use kiln::ops::{softmax_cross_entropy, softmax_cross_entropy_with, CrossEntropy};
    use kiln::train::{train_step_with, StepPrecision};
    let criterion = CrossEntropy {
        label_smoothing: 0.2,
        class_weights: Some((0..10).map(|c| 0.25 + 0.3 * c as f64).collect()),
    };
    // LeNet-5 has no dropout or batch norm: its training forward is its evaluation forward.
    let mut model = lenet5(1, 28, 10, false, 5, Device::Cpu).unwrap();
    let x = kiln::Tensor::randn(&[7, 1, 28, 28], 1.0, 11, Device::Cpu).unwrap();
    let y = kiln::Tensor::from_vec(vec![3i32, 0, 9, 9, 4, 1, 6], &[7], Device::Cpu).unwrap();
    let (expected, plain) = kiln::no_grad(|| {
        let logits = model.forward(&x, Mode::Eval).unwrap();
        let smoothed = softmax_cross_entropy_with(&logits, &y, &criterion).unwrap();
        let plain = softmax_cross_entropy(&logits, &y).unwrap();
        (smoothed.scalar().unwrap(), plain.scalar().unwrap())
    });
    assert!((expected - plain).abs() > 1e-3, "{expected} vs {plain}");
    let params: Vec<kiln::Tensor> = model
        .parameters()
        .into_iter()
        .map(|(_, t)| t.clone())
        .collect();
    let mut sgd = kiln::optim::Sgd::new(&params, 0.01, 0.0, 0.0).unwrap();
    drop(params);
    let mut precision = StepPrecision::f32().with_criterion(criterion.clone());
    let (loss, _) = train_step_with(&mut model, &mut sgd, &x, &y, 0, &mut precision).unwrap();
    assert!(
        (loss - expected).abs() <= 1e-6 * expected.abs(),
        "{loss} vs {expected}"
    );

    // Recorded as the command line spells them, and read back.
    let config = TrainConfig {
        criterion: criterion.clone(),
        ..TrainConfig::default()
    };
    let mut restored = TrainConfig::default();
    for (flag, value) in config.resume_flags() {
        restored.set_resume_flag(flag, &value).unwrap();
    }
    assert_eq!(restored.criterion, criterion);

    // Refused before any file is written: eps outside [0, 1), negative weights, a weight count
    // that is not the class count, and a CUDA graph (which cannot read the labels on the host).
    let root = temp_dir("criterion-flags");
    synthetic_fashion_mnist(&root, 20, 10);
    let out = root.join("run");
    let err = kiln_train_refused(&["--label-smoothing", "1"], &root, &out);
    assert!(err.contains("--label-smoothing 1"), "{err}");
    let err = kiln_train_refused(&["--class-weights", "1,-2"], &root, &out);
    assert!(err.contains("--class-weights"), "{err}");
    let err = kiln_train_refused(&["--class-weights", "1,2,3"], &root, &out);
    assert!(
        err.contains("3 weights") && err.contains("10 classes"),
        "{err}"
    );
    assert!(!out.exists());
    let graphed = TrainConfig {
        cuda_graph: true,
        device: Device::CudaEmulated,
        ..config
    };
    let err = graphed.validate().unwrap_err().to_string();
    assert!(err.contains("--cuda-graph"), "{err}");
}
