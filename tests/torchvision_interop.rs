//! torchvision's weights load into kiln's networks by name and give torchvision's logits.
//!
//! Each case runs tests/torchvision_logits.py: it builds the torchvision model (random weights,
//! batch-norm statistics and affine parameters moved off their defaults, evaluation mode; the
//! small-input variant for inputs of 32x32 or less) and saves its `state_dict`, an input and the
//! logits. kiln builds the same architecture for that input, loads the file with
//! `nn::load_state_dict` and must reproduce the logits within 1e-4, relative to the largest logit
//! when that is above 1 (ResNet-50's reach 100: f32 rounding alone moves them by 1e-6 of that).
//!
//! The Python comes from `$KILN_TORCH_PYTHON`, else `~/.cache/kiln/torch-venv/bin/python`, and
//! needs torch, torchvision and safetensors; without one these tests print `SKIPPED` and why, and
//! pass. The committed fixture (tests/fixtures/torchvision/mobilenet_v2_w0.1/, written by the same
//! script) is checked in every run, with or without Python.

use std::path::Path;
use std::process::Command;

use kiln::nn::models::{mobilenet_v2, Builder};
use kiln::nn::{load_state_dict, Architecture, Mode, Module, Sequential};
use kiln::testing::python_with;
use kiln::train::load_checkpoint;
use kiln::{no_grad, Device};

const TOLERANCE: f32 = 1e-4;
const CLASSES: usize = 10;

/// `net` on the saved input must give the saved logits.
fn assert_reproduces(net: &mut Sequential, io: &Path, what: &str) {
    let io = load_checkpoint(io).unwrap();
    let (x, expected) = (io.get("input").unwrap(), io.get("logits").unwrap());
    let logits = no_grad(|| net.forward(x, Mode::Eval)).unwrap();
    assert_eq!(logits.shape(), expected.shape(), "{what}");
    let (got, want) = (
        logits.to_vec::<f32>().unwrap(),
        expected.to_vec::<f32>().unwrap(),
    );
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    println!("{what}: worst |kiln − torchvision| = {worst:.2e} (logits up to {scale:.2})");
    let allowed = TOLERANCE * scale.max(1.0);
    assert!(
        worst <= allowed,
        "{what}: logits differ by {worst:e} > {allowed:e}\nkiln:        {:?}\ntorchvision: {:?}",
        &got[..got.len().min(8)],
        &want[..want.len().min(8)]
    );
}

fn check_against_torchvision(arch: Architecture, input: [usize; 3]) {
    let python = match python_with(&["torch", "torchvision", "safetensors"]) {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED: {} torchvision interop: {why}", arch.name());
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let [c, h, w] = input;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torchvision_logits.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["logits", arch.name()])
        .arg(dir.path())
        .args(["--input", &format!("{c}x{h}x{w}")])
        .args(["--classes", &CLASSES.to_string()])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{stderr}",
        python.display(),
        script.display(),
        out.status
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let mut net = arch.build_for(input, CLASSES, 1, Device::Cpu).unwrap();
    load_state_dict(&mut net, &dir.path().join("weights.safetensors")).unwrap();
    let what = format!(
        "{} at {c}x{h}x{w} ({})",
        arch.name(),
        arch.variant(h).unwrap_or("kiln's")
    );
    assert_reproduces(&mut net, &dir.path().join("io.safetensors"), &what);
}

const FIXTURE: &str = "tests/fixtures/torchvision/mobilenet_v2_w0.1";

/// Written by `python tests/torchvision_logits.py logits mobilenet-v2 FIXTURE --input 3x48x48
/// --classes 10 --width-mult 0.1` (torchvision 0.29.2, torch 2.15): the standard network, all
/// widths reduced, so CI checks torchvision's names and logits without Python.
#[test]
fn committed_mobilenet_v2_fixture_reproduces_torchvisions_logits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let mut b = Builder::new(0, Device::Cpu);
    let mut net = mobilenet_v2(0.1, (3, 48, CLASSES), &mut b).unwrap();
    load_state_dict(&mut net, &dir.join("weights.safetensors")).unwrap();
    assert_reproduces(
        &mut net,
        &dir.join("io.safetensors"),
        "mobilenet-v2 x0.1 fixture",
    );
}

/// A file whose tensors do not fit is refused, naming the file and each misfit, and changes nothing.
#[test]
fn a_state_dict_that_does_not_fit_is_refused_by_name() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let file = dir.join("weights.safetensors");
    // Width 0.25 has other channel counts; ResNet-18 has other names altogether.
    let mut b = Builder::new(0, Device::Cpu);
    let mut wider = mobilenet_v2(0.25, (3, 48, CLASSES), &mut b).unwrap();
    let before: Vec<f32> = wider.parameters()[0].1.to_vec().unwrap();
    let err = load_state_dict(&mut wider, &file).unwrap_err().to_string();
    assert!(err.contains("weights.safetensors"), "{err}");
    assert!(err.contains("in the file but"), "{err}");
    let after: Vec<f32> = wider.parameters()[0].1.to_vec().unwrap();
    assert_eq!(before, after, "a refused file changed the network");

    let mut resnet = Architecture::ResNet18
        .build_for([3, 48, 48], CLASSES, 0, Device::Cpu)
        .unwrap();
    let err = load_state_dict(&mut resnet, &file).unwrap_err().to_string();
    assert!(
        err.contains("missing") && err.contains("conv1.weight"),
        "{err}"
    );
    assert!(
        err.contains("unexpected") && err.contains("features.0.0.weight"),
        "{err}"
    );
    let err = load_state_dict(&mut resnet, &dir.join("no-such-file.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-file.safetensors"), "{err}");
}

#[test]
fn alexnet_small_input_matches_torchvision() {
    check_against_torchvision(Architecture::AlexNet, [3, 32, 32]);
}

#[test]
fn alexnet_matches_torchvision() {
    check_against_torchvision(Architecture::AlexNet, [3, 67, 67]);
}

#[test]
fn vgg11_small_input_matches_torchvision() {
    check_against_torchvision(Architecture::Vgg11, [3, 32, 32]);
}

/// The smallest input kiln builds (8x8): 8 → 4 → 2 → 1 → 1 → 1, the last two ceil_mode pools'
/// 2x2 windows overhanging a 1x1 map as PyTorch's do.
#[test]
fn vgg11_small_input_at_the_minimum_matches_torchvision() {
    check_against_torchvision(Architecture::Vgg11, [3, 8, 8]);
}

#[test]
fn vgg11_matches_torchvision() {
    check_against_torchvision(Architecture::Vgg11, [3, 40, 40]);
}

/// 28 → 14 → 7 → 4 → 2 → 1: the small variant's pools round up.
#[test]
fn vgg16_small_input_matches_torchvision() {
    check_against_torchvision(Architecture::Vgg16, [1, 28, 28]);
}

#[test]
fn vgg16_bn_small_input_matches_torchvision() {
    check_against_torchvision(Architecture::Vgg16Bn, [3, 28, 28]);
}

#[test]
fn resnet18_small_input_matches_torchvision() {
    check_against_torchvision(Architecture::ResNet18, [1, 28, 28]);
}

/// An odd size: every strided layer's rounding agrees with PyTorch's.
#[test]
fn resnet18_matches_torchvision() {
    check_against_torchvision(Architecture::ResNet18, [3, 57, 57]);
}

#[test]
fn resnet34_matches_torchvision() {
    check_against_torchvision(Architecture::ResNet34, [3, 48, 48]);
}

#[test]
fn resnet50_small_input_matches_torchvision() {
    check_against_torchvision(Architecture::ResNet50, [3, 32, 32]);
}

#[test]
fn resnet50_matches_torchvision() {
    check_against_torchvision(Architecture::ResNet50, [3, 41, 41]);
}

#[test]
fn googlenet_small_input_matches_torchvision() {
    check_against_torchvision(Architecture::GoogLeNet, [3, 32, 32]);
}

/// 57 → 29 → 14 → 7 → 4 → 2 with the pools rounding up, as torchvision's `ceil_mode=True`.
#[test]
fn googlenet_matches_torchvision() {
    check_against_torchvision(Architecture::GoogLeNet, [3, 57, 57]);
}

#[test]
fn mobilenet_v2_small_input_matches_torchvision() {
    check_against_torchvision(Architecture::MobileNetV2, [3, 32, 32]);
}

#[test]
fn mobilenet_v2_matches_torchvision() {
    check_against_torchvision(Architecture::MobileNetV2, [3, 57, 57]);
}
