//! Helpers for tests of kiln and of code built on it: tolerance checks that print the first
//! mismatches and the worst error, seeded random inputs, and [`test_device!`](crate::test_device),
//! which writes a test once and generates one named `#[test]` per device (saying why a device
//! is skipped).

use crate::core::device::Device;
use crate::cpu::Float;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Asserts `|actual − expected| ≤ atol + rtol·|expected|` element-wise, where a NaN matches only a
/// NaN and an infinity only the same infinity,
/// printing the first mismatches and the worst error.
#[track_caller]
pub fn assert_close<T: Float>(actual: &[T], expected: &[T], atol: f64, rtol: f64) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let mut mismatches = Vec::new();
    let mut worst = (0.0_f64, 0_usize);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (to_f64(a), to_f64(e));
        // A NaN matches only a NaN (an element a kernel must leave untouched, poisoned with NaN),
        // an infinity only the same infinity: with a NaN or infinite reference the tolerance
        // itself is NaN or infinite and would let any value pass.
        let err = if a.is_nan() || e.is_nan() {
            if a.is_nan() && e.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else if a.is_infinite() || e.is_infinite() {
            if a == e {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (a - e).abs()
        };
        if err > worst.0 || i == 0 {
            worst = (err, i);
        }
        if err > atol + rtol * e.abs() || err.is_infinite() {
            mismatches.push(format!(
                "  [{i}] actual {a:e}, expected {e:e}, error {err:e}"
            ));
        }
    }
    if !mismatches.is_empty() {
        panic!(
            "{} of {} elements differ beyond atol {atol:e} + rtol {rtol:e}·|ref|; first:\n{}\nworst error {:e} at [{}]",
            mismatches.len(),
            actual.len(),
            mismatches[..mismatches.len().min(8)].join("\n"),
            worst.0,
            worst.1,
        );
    }
}

pub fn to_f64<T: Float>(x: T) -> f64 {
    x.to_f64().expect("f32 and f64 convert to f64")
}

pub fn from_f64<T: Float>(x: f64) -> T {
    <T as num_traits::NumCast>::from(x).expect("f64 converts to f32 and f64")
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `len` values drawn uniformly from `[-1, 1)`.
pub fn random_vec<T: Float>(rng: &mut StdRng, len: usize) -> Vec<T> {
    (0..len)
        .map(|_| from_f64(rng.random_range(-1.0..1.0)))
        .collect()
}

/// The environment variable that picks which halves of the device-parameterised tests run: a
/// comma-separated subset of `cpu`, `emulated` and `cuda` (unset: all three). The GPU bundle sets
/// `KILN_TEST_DEVICES=cuda` on the GPU host, so its short window is not spent on CPU and emulation
/// work that CI already did; `cpu,emulated` is what a machine without a GPU can run.
pub const TEST_DEVICES_VAR: &str = "KILN_TEST_DEVICES";

/// One half of a device-parameterised test, as `KILN_TEST_DEVICES` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Emulated,
    Cuda,
}

impl DeviceKind {
    const ALL: [DeviceKind; 3] = [DeviceKind::Cpu, DeviceKind::Emulated, DeviceKind::Cuda];

    /// The name `KILN_TEST_DEVICES` and the generated tests' suffixes use.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Emulated => "emulated",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// The device a test of this kind runs on (the first GPU for `Cuda`).
    pub fn device(self) -> Device {
        match self {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Emulated => Device::CudaEmulated,
            DeviceKind::Cuda => Device::Cuda(0),
        }
    }

    fn of(device: Device) -> DeviceKind {
        match device {
            Device::Cpu => DeviceKind::Cpu,
            Device::CudaEmulated => DeviceKind::Emulated,
            Device::Cuda(_) => DeviceKind::Cuda,
        }
    }
}

/// The kinds a value of `KILN_TEST_DEVICES` selects (`None`: all). A name that is not a kind is an
/// error naming it, so a typo in a GPU host's script cannot silently run nothing.
pub fn parse_test_devices(value: Option<&str>) -> Result<Vec<DeviceKind>, String> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DeviceKind::ALL.to_vec());
    };
    value
        .split(',')
        .map(str::trim)
        .map(|name| {
            DeviceKind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| {
                    format!(
                        "{TEST_DEVICES_VAR}={value:?}: {name:?} is not one of cpu, emulated, cuda"
                    )
                })
        })
        .collect()
}

/// Whether this process runs the `kind` half of device-parameterised tests.
/// Panics (this is test code) when `KILN_TEST_DEVICES` names an unknown kind.
pub fn runs_on(kind: DeviceKind) -> bool {
    let value = std::env::var(TEST_DEVICES_VAR).ok();
    parse_test_devices(value.as_deref())
        .unwrap_or_else(|e| panic!("{e}"))
        .contains(&kind)
}

/// `devices` without the kinds `KILN_TEST_DEVICES` leaves out, saying what it skips in the words
/// of [`run_on_device`].
fn selected(test: &str, devices: Vec<Device>) -> Vec<Device> {
    let (kept, dropped): (Vec<Device>, Vec<Device>) = devices
        .into_iter()
        .partition(|&d| runs_on(DeviceKind::of(d)));
    for device in dropped {
        let kind = DeviceKind::of(device).name();
        eprintln!("SKIPPED {test} on {kind}: {TEST_DEVICES_VAR} leaves it out");
    }
    kept
}

/// The devices a GPU-vs-CPU parity test runs on: the kernel emulation, and CUDA device 0 when one
/// is usable. When it is not, prints why, once per test, so skipped GPU checks are visible.
/// `KILN_TEST_DEVICES` can leave either out.
pub fn gpu_devices_under_test(test: &str) -> Vec<Device> {
    let mut devices = vec![Device::CudaEmulated];
    if runs_on(DeviceKind::Cuda) {
        match crate::cuda::cuda_unavailable_reason(0) {
            None => devices.push(Device::Cuda(0)),
            Some(why) => eprintln!("{test}: skipping the real-GPU run: {why}"),
        }
    }
    selected(test, devices)
}

/// The CPU and every device of [`gpu_devices_under_test`], for tests written once and run on each.
pub fn devices_under_test(test: &str) -> Vec<Device> {
    let mut devices = selected(test, vec![Device::Cpu]);
    devices.extend(gpu_devices_under_test(test));
    devices
}

/// Whether a test written for the kernel emulation alone runs here (`KILN_TEST_DEVICES`); says
/// SKIPPED with the reason when it does not.
pub fn emulation_under_test(test: &str) -> bool {
    !selected(test, vec![Device::CudaEmulated]).is_empty()
}

/// Why the `kind` half of a per-device test does not run here, or `None` when it does: left out by
/// `KILN_TEST_DEVICES`, or (CUDA) no driver, GPU or embedded kernels. The CUDA reason keeps the
/// words "skipping the real-GPU run", which the GPU bundle's runner (scripts/gpu-run.sh) greps for
/// to fail a suite that skipped its GPU work on a GPU host.
pub fn skip_reason(kind: DeviceKind) -> Option<String> {
    if !runs_on(kind) {
        return Some(format!("{TEST_DEVICES_VAR} leaves it out"));
    }
    match kind {
        // The emulation is compiled from kernels/*.cu with the host compiler in every build.
        DeviceKind::Cpu | DeviceKind::Emulated => None,
        DeviceKind::Cuda => crate::cuda::cuda_unavailable_reason(0)
            .map(|why| format!("skipping the real-GPU run: {why}")),
    }
}

/// What a per-device test body returns: nothing (it asserts) or a `Result` whose error fails it.
pub trait DeviceTestOutcome {
    /// The failure to report, if any.
    fn failure(self) -> Option<String>;
}

impl DeviceTestOutcome for () {
    fn failure(self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display> DeviceTestOutcome for Result<(), E> {
    fn failure(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

/// The body of one test generated by [`test_device!`](crate::test_device): runs `body` on the
/// `kind` device, or prints `SKIPPED <test> on <kind>: <reason>` and returns (the test passes).
/// A failure panics with a message that names the test and the device, so a report of one
/// device's failure cannot be mistaken for another's.
#[track_caller]
pub fn run_on_device<R: DeviceTestOutcome>(
    kind: DeviceKind,
    test: &str,
    body: impl FnOnce(Device) -> R,
) {
    if let Some(why) = skip_reason(kind) {
        eprintln!("SKIPPED {test} on {}: {why}", kind.name());
        return;
    }
    let device = kind.device();
    let failure = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(device))) {
        Ok(outcome) => outcome.failure(),
        Err(payload) => Some(panic_text(payload.as_ref())),
    };
    if let Some(failure) = failure {
        panic!("{test} failed on {device}: {failure}");
    }
}

/// The message of a caught panic (`panic!` payloads are a `&str` or a `String`).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

#[doc(hidden)]
pub use paste::paste as __paste;

/// Writes a test once and runs it per device, as candle's `test_device!` does: for a function
/// `name(device: Device)` (returning `()` or a `Result`), generates the `#[test]`s `name_cpu`,
/// `name_emulated` and `name_cuda`, so each device passes, fails or is skipped under its own
/// name and a GPU host can run just the `_cuda` ones (libtest's filter: `cargo test _cuda`).
/// A half that `KILN_TEST_DEVICES` leaves out, or a GPU that is not usable, prints
/// `SKIPPED <test> on <device>: <reason>` and passes. See [`run_on_device`].
///
/// `kiln::test_device!(name, gpu)` generates only `name_emulated` and `name_cuda`, for tests
/// that compare a GPU device against the CPU. A test with CPU checks of its own before such a
/// comparison takes every device and wraps the comparison in `if device.is_gpu()`, so its CPU
/// checks are the `_cpu` half.
#[macro_export]
macro_rules! test_device {
    ($name:ident) => {
        $crate::test_device!(@kinds $name; cpu Cpu, emulated Emulated, cuda Cuda);
    };
    ($name:ident, gpu) => {
        $crate::test_device!(@kinds $name; emulated Emulated, cuda Cuda);
    };
    (@kinds $name:ident; $($suffix:ident $kind:ident),*) => {
        $crate::testing::__paste! {
            $(
                #[test]
                fn [<$name _ $suffix>]() {
                    $crate::testing::run_on_device(
                        $crate::testing::DeviceKind::$kind,
                        concat!(stringify!($name), "_", stringify!($suffix)),
                        $name,
                    );
                }
            )*
        }
    };
}

/// The f32 values that single out each rounding rule of the f32 → bf16/f16 casts: ties to even,
/// overflow to infinity, the largest finite values, f16 subnormals and underflow, f32 subnormals,
/// signed zeros, NaN; then the exact midpoints between neighbouring bf16 values, both parities.
/// Callers add random values at the scales they care about.
pub fn rounding_edge_values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65504.0,
        65519.99,
        65520.0,
        -65536.0,
        1e-8,
        5.960_464_5e-8, // 2^-24, the smallest f16 subnormal
        2.980_232_2e-8, // 2^-25: ties to even, to 0
        4.470_348_4e-8, // 3·2^-26: rounds up to 2^-24
        6.103_515_6e-5, // 2^-14, the smallest f16 normal
        6.103_515e-5,   // just below it: rounds into the normals
        1e-40,          // f32 subnormal
        f32::MAX,
        f32::MIN_POSITIVE,
        3.390_625,   // bf16 tie (odd mantissa: rounds up)
        3.382_812_5, // bf16 tie (even mantissa: stays)
        1.000_488_3, // f16 tie 1 + 2^-11
        1.001_464_8, // f16 tie 1 + 3·2^-11
    ];
    v.extend((0..64u32).map(|i| f32::from_bits(0x3f80_8000 + (i << 16))));
    v
}

/// Random f32 values uniform in `[-1, 1)` with magnitudes kept away from 0 by `gap`, so tests of
/// kinks (ReLU at 0) and ties are not decided by rounding.
pub fn random_away_from_zero(rng: &mut StdRng, len: usize, gap: f32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let v: f32 = rng.random_range(gap..1.0);
            if rng.random_bool(0.5) {
                v
            } else {
                -v
            }
        })
        .collect()
}

/// The tape's loss for checks: Σ y ⊙ r with r fixed random values (so dL/dy = r).
fn weighted_sum(y: &crate::Tensor, r: &crate::Tensor) -> crate::Result<crate::Tensor> {
    crate::ops::sum(&crate::ops::mul(y, r)?)
}

fn random_like(t: &crate::Tensor, seed: u64) -> crate::Result<crate::Tensor> {
    let mut rng = rng(seed);
    let values: Vec<f64> = random_vec(&mut rng, t.numel());
    crate::Tensor::from_vec(values, t.shape(), crate::Device::Cpu)?
        .to_dtype(t.dtype())?
        .to_device(t.device())
}

/// Checks the tape's gradients of `f` against central finite differences in f64 on the CPU.
///
/// `inputs` must be f64 CPU tensors; the checked scalar is Σ f(inputs) ⊙ r for a fixed random r.
/// Inputs must keep a margin from kinks (ReLU at 0, max-pool ties) larger than the step 1e-6.
/// Panics with the first mismatch; prints the worst error.
#[track_caller]
pub fn gradcheck(
    name: &str,
    inputs: &[crate::Tensor],
    f: impl Fn(&[crate::Tensor]) -> crate::Result<crate::Tensor>,
) {
    const EPS: f64 = 1e-6;
    let leaves: Vec<crate::Tensor> = inputs.iter().map(|t| t.detach().with_grad()).collect();
    let y = f(&leaves).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let r = random_like(&y, 0x5eed).expect("random weights");
    let grads = weighted_sum(&y, &r)
        .and_then(|l| l.backward())
        .unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    let loss_at = |inputs: &[crate::Tensor]| -> f64 {
        crate::no_grad(|| weighted_sum(&f(inputs)?, &r)?.scalar())
            .expect("forward of a perturbed input")
    };
    let mut worst = 0.0f64;
    for (i, input) in inputs.iter().enumerate() {
        let base = input
            .to_vec::<f64>()
            .expect("gradcheck inputs are f64 CPU tensors");
        let analytic = grads
            .get(&leaves[i])
            .map(|g| g.to_vec::<f64>().expect("f64 gradient"))
            .unwrap_or_else(|| vec![0.0; base.len()]);
        for j in 0..base.len() {
            let perturbed = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let mut all: Vec<crate::Tensor> = inputs.to_vec();
                all[i] = crate::Tensor::from_vec(v, input.shape(), crate::Device::Cpu)
                    .expect("same shape");
                loss_at(&all)
            };
            let numeric = (perturbed(EPS) - perturbed(-EPS)) / (2.0 * EPS);
            let err = (numeric - analytic[j]).abs();
            worst = worst.max(err);
            assert!(
                err <= 1e-6 + 1e-5 * numeric.abs(),
                "{name}: input {i} element {j}: analytic {} vs numeric {numeric}",
                analytic[j]
            );
        }
    }
    eprintln!("{name}: worst gradient error {worst:e}");
}

/// Runs `f` on `inputs` (f32 CPU tensors) on the CPU and on `device`, and checks that the outputs
/// and the gradients of every input (through the tape, for a fixed random output weighting) agree
/// within `atol + rtol·|cpu|`.
#[track_caller]
pub fn check_parity(
    name: &str,
    device: Device,
    inputs: &[crate::Tensor],
    atol: f64,
    rtol: f64,
    f: impl Fn(&[crate::Tensor]) -> crate::Result<crate::Tensor>,
) {
    let run = |d: Device| -> crate::Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let leaves: Vec<crate::Tensor> = inputs
            .iter()
            .map(|t| t.to_device(d).map(|t| t.with_grad()))
            .collect::<crate::Result<_>>()?;
        let y = f(&leaves)?;
        let r = random_like(&y.to_device(Device::Cpu)?, 0x5eed)?.to_device(d)?;
        let grads = weighted_sum(&y, &r)?.backward()?;
        let input_grads = leaves
            .iter()
            .map(|l| match grads.get(l) {
                Some(g) => g.to_vec::<f32>(),
                None => Ok(Vec::new()),
            })
            .collect::<crate::Result<_>>()?;
        Ok((y.to_vec::<f32>()?, input_grads))
    };
    let (cpu_y, cpu_grads) = run(Device::Cpu).unwrap_or_else(|e| panic!("{name} on cpu: {e}"));
    let (dev_y, dev_grads) = run(device).unwrap_or_else(|e| panic!("{name} on {device}: {e}"));
    eprintln!("{name} on {device}: output");
    assert_close(&dev_y, &cpu_y, atol, rtol);
    for (i, (d, c)) in dev_grads.iter().zip(&cpu_grads).enumerate() {
        eprintln!("{name} on {device}: gradient of input {i}");
        assert_close(d, c, atol, rtol);
    }
}

/// A Python that can import every module of `modules` (e.g. `["torch", "safetensors"]`), for tests
/// that compare kiln with PyTorch: `$KILN_TORCH_PYTHON` if set (a broken one panics: it was asked
/// for explicitly), else `~/.cache/kiln/torch-venv/bin/python` (what bench/cpu_compare.sh
/// creates); `Err` says why there is none, for the test's `SKIPPED` line.
pub fn python_with(modules: &[&str]) -> Result<std::path::PathBuf, String> {
    use std::path::{Path, PathBuf};
    let import = format!("import {}", modules.join(", "));
    let works = |python: &Path| {
        std::process::Command::new(python)
            .args(["-c", &import])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if let Some(python) = std::env::var_os("KILN_TORCH_PYTHON") {
        let python = PathBuf::from(python);
        assert!(
            works(&python),
            "KILN_TORCH_PYTHON={} cannot `{import}`",
            python.display()
        );
        return Ok(python);
    }
    let home = std::env::var_os("HOME").ok_or("HOME is not set and KILN_TORCH_PYTHON is unset")?;
    let venv = Path::new(&home).join(".cache/kiln/torch-venv/bin/python");
    let pip = venv.with_file_name("pip");
    if !venv.exists() {
        return Err(format!(
            "no PyTorch: set KILN_TORCH_PYTHON, or create {} (bench/cpu_compare.sh does), then \
             `{} install {}`",
            venv.display(),
            pip.display(),
            modules.join(" ")
        ));
    }
    if !works(&venv) {
        return Err(format!(
            "{} cannot `{import}` (try `{} install {}`)",
            venv.display(),
            pip.display(),
            modules.join(" ")
        ));
    }
    Ok(venv)
}

/// Fashion-MNIST-named IDX files (gzip) of `train` and `test` 28x28 images in `dir` (made if
/// missing), for the tests that run `kiln train` on a small learnable set: image n is of class
/// n % 10, a bright 6x4 patch at one of ten places, plus noise (seeded: the same files each call).
pub fn write_patch_fashion_mnist(dir: &std::path::Path, train: usize, test: usize) {
    use crate::data::{write_idx_images, write_idx_labels, IdxImages, FASHION_MNIST_FILES};
    std::fs::create_dir_all(dir).unwrap();
    let images = |count: usize, seed: u64| {
        let mut rng = rng(seed);
        let mut pixels = vec![0u8; count * 784];
        let labels: Vec<u8> = (0..count).map(|n| (n % 10) as u8).collect();
        for (n, image) in pixels.chunks_mut(784).enumerate() {
            image.iter_mut().for_each(|p| *p = rng.random_range(0..60));
            let (top, left) = (4 + (n % 10 / 5) * 12, 2 + (n % 5) * 5);
            for h in top..top + 6 {
                image[h * 28 + left..h * 28 + left + 4].fill(220);
            }
        }
        let idx = IdxImages {
            count,
            rows: 28,
            cols: 28,
            pixels,
        };
        (idx, labels)
    };
    let path = |i: usize| dir.join(format!("{}.gz", FASHION_MNIST_FILES[i]));
    let (train_images, train_labels) = images(train, 1);
    let (test_images, test_labels) = images(test, 2);
    write_idx_images(&path(0), &train_images, true).unwrap();
    write_idx_labels(&path(1), &train_labels, true).unwrap();
    write_idx_images(&path(2), &test_images, true).unwrap();
    write_idx_labels(&path(3), &test_labels, true).unwrap();
}

/// Pooling inputs `[N, C, H, W]` with ceil_mode windows larger than the (padded) input, which
/// overhang it on both sides: 1x1, 2x2, 3x3 and non-square planes, shared by the gradient checks
/// and the parity tests of such windows (tests/pool_windows.rs checks them against PyTorch).
pub fn pool_windows_past_the_input() -> [([usize; 4], crate::core::shape::PoolWindow); 6] {
    use crate::core::shape::Window2d;
    [
        ([2, 3, 1, 1], Window2d::square(2, 2, 0)),
        ([1, 2, 1, 3], Window2d::square(3, 3, 0)),
        ([2, 2, 2, 2], Window2d::square(3, 2, 1)),
        ([1, 3, 2, 3], Window2d::square(3, 2, 0)),
        ([2, 1, 3, 3], Window2d::square(3, 3, 1)),
        ([1, 2, 3, 2], Window2d::square(2, 3, 1)),
    ]
    .map(|(shape, window)| (shape, window.ceil_mode()))
}

#[cfg(test)]
mod tests {
    use super::{assert_close, parse_test_devices, DeviceKind};

    #[test]
    fn nan_and_infinity_match_only_themselves() {
        assert_close(
            &[f32::INFINITY, f32::NAN, 1.0],
            &[f32::INFINITY, f32::NAN, 1.0],
            1e-6,
            1e-6,
        );
        for (actual, expected) in [
            (1.0f32, f32::INFINITY),
            (f32::NEG_INFINITY, f32::INFINITY),
            (f32::INFINITY, 1.0),
            (f32::NAN, 1.0),
            (1.0, f32::NAN),
            (f32::INFINITY, f32::NAN),
        ] {
            let caught =
                std::panic::catch_unwind(|| assert_close(&[actual], &[expected], 1e-6, 1e-6));
            assert!(caught.is_err(), "{actual} passed for {expected}");
        }
    }

    #[test]
    fn test_devices_parse_subsets_and_reject_unknown_names() {
        let all = vec![DeviceKind::Cpu, DeviceKind::Emulated, DeviceKind::Cuda];
        assert_eq!(parse_test_devices(None).unwrap(), all);
        assert_eq!(parse_test_devices(Some("  ")).unwrap(), all);
        assert_eq!(
            parse_test_devices(Some("cuda")).unwrap(),
            vec![DeviceKind::Cuda]
        );
        assert_eq!(
            parse_test_devices(Some("cpu, emulated")).unwrap(),
            vec![DeviceKind::Cpu, DeviceKind::Emulated]
        );
        let err = parse_test_devices(Some("cuda,gpu")).unwrap_err();
        assert!(
            err.contains("\"gpu\"") && err.contains("KILN_TEST_DEVICES"),
            "{err}"
        );
    }
}
