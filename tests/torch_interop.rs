//! PyTorch interoperability: a kiln checkpoint loads into the equivalent torch.nn model and
//! reproduces kiln's logits.
//!
//! For each built-in architecture the test builds the model, moves the batch-norm running
//! statistics away from their defaults with a few training-mode forwards, perturbs the 1-D
//! parameters (biases, batch-norm γ and β) so a swapped or dropped vector cannot go unnoticed,
//! saves a checkpoint, and runs tests/torch_load.py on it with kiln's evaluation-mode logits as the
//! expected values (tolerance 1e-4, absolute).
//!
//! The Python comes from `$KILN_TORCH_PYTHON`, else `~/.cache/kiln/torch-venv/bin/python` (created
//! by bench/cpu_compare.sh; it also needs `pip install safetensors`). Without one the tests print
//! why and pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::nn::{Architecture, Mode, Module};
use kiln::testing::python_with;
use kiln::train::save_checkpoint;
use kiln::train::state::model_tensors;
use kiln::{no_grad, Device, Tensor};

const IN_CHANNELS: usize = 1;
const CLASSES: usize = 10;
const TOLERANCE: &str = "1e-4";

/// A fresh directory under the system temp dir for one architecture's files.
fn scratch_dir(arch: Architecture) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "kiln-torch-interop-{}-{}-{nanos}",
        arch.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Adds N(0, 0.1²) noise to every 1-D parameter (biases, batch-norm γ and β), which kiln
/// initializes to constants for most layers.
fn perturb_vectors(model: &mut dyn Module, seed: u64) {
    for (i, (_, p)) in model.parameters_mut().into_iter().enumerate() {
        if p.shape().len() != 1 {
            continue;
        }
        let noise = Tensor::randn(p.shape(), 0.1, seed + i as u64, Device::Cpu).unwrap();
        let values: Vec<f32> = p
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .zip(noise.to_vec::<f32>().unwrap())
            .map(|(v, n)| v + n)
            .collect();
        *p = Tensor::from_vec(values, p.shape(), Device::Cpu)
            .unwrap()
            .with_grad();
    }
}

fn check_against_torch(arch: Architecture, image_size: usize, batch: usize, train_forwards: usize) {
    let python = match python_with(&["torch", "safetensors"]) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: {} PyTorch interop: {why}", arch.name());
            return;
        }
    };
    let seed = 7;
    let mut model = arch
        .build(IN_CHANNELS, image_size, CLASSES, seed, Device::Cpu)
        .unwrap();
    perturb_vectors(&mut model, 1000);
    let shape = [batch, IN_CHANNELS, image_size, image_size];
    no_grad(|| {
        for step in 0..train_forwards {
            // Offset inputs, so the running means move away from 0 as well as the variances from 1.
            let x = Tensor::randn(&shape, 1.5, 100 + step as u64, Device::Cpu).unwrap();
            let x = Tensor::from_vec(
                x.to_vec::<f32>().unwrap().iter().map(|v| v + 0.5).collect(),
                &shape,
                Device::Cpu,
            )
            .unwrap();
            model.forward(&x, Mode::Train).unwrap();
        }
    });
    let tensors = model_tensors(&model);
    let buffers = model.buffers();
    if train_forwards > 0 {
        assert!(!buffers.is_empty(), "{} has no buffers", arch.name());
        // The checkpoint must carry trained statistics, not the defaults 0 and 1.
        for (name, b) in &buffers {
            let default = if name.ends_with("running_var") {
                1.0
            } else {
                0.0
            };
            let v = b.to_vec::<f32>().unwrap();
            assert!(
                v.iter().any(|&x| (x - default).abs() > 1e-3),
                "{name} still holds its default {default}"
            );
        }
    }

    let x = Tensor::randn(&shape, 1.0, 42, Device::Cpu).unwrap();
    let logits = no_grad(|| model.forward(&x, Mode::Eval)).unwrap();
    assert_eq!(logits.shape(), &[batch, CLASSES]);

    let dir = scratch_dir(arch);
    let checkpoint = dir.join("model.safetensors");
    let io = dir.join("io.safetensors");
    let named: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    let meta = BTreeMap::from([("model".to_string(), arch.name().to_string())]);
    save_checkpoint(&checkpoint, &named, &meta).unwrap();
    let io_tensors = [("input".to_string(), &x), ("logits".to_string(), &logits)];
    save_checkpoint(&io, &io_tensors, &BTreeMap::new()).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torch_load.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&checkpoint)
        .arg(arch.name())
        .arg(&io)
        .args(["--tol", TOLERANCE])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{} {} failed ({}); files kept in {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        python.display(),
        script.display(),
        out.status,
        dir.display()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn lenet5_checkpoint_reproduces_logits_in_pytorch() {
    check_against_torch(Architecture::LeNet5, 28, 3, 0);
}

#[test]
fn lenet5_classic_checkpoint_reproduces_logits_in_pytorch() {
    check_against_torch(Architecture::LeNet5Classic, 28, 3, 0);
}

#[test]
fn vgg_checkpoint_reproduces_logits_in_pytorch() {
    check_against_torch(Architecture::Vgg, 28, 2, 2);
}

/// An odd size (29 → 15 → 8): the strided layers' rounding agrees with PyTorch's on both parities.
#[test]
fn resnet20_checkpoint_reproduces_logits_in_pytorch() {
    check_against_torch(Architecture::ResNet20, 29, 2, 2);
}

/// ResNet-20 at the Fashion-MNIST size: the stride-2 layers round (28 + 2 − 3) / 2 + 1 down to 14,
/// as PyTorch does (`Window2d::floored`).
#[test]
fn resnet20_on_28x28_reproduces_logits_in_pytorch() {
    check_against_torch(Architecture::ResNet20, 28, 2, 2);
}
