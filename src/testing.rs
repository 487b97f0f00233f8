//! Helpers for tests of kiln and of code built on it: tolerance checks that print the first
//! mismatches and the worst error, seeded random inputs, and the list of devices a parity test
//! should run on (saying why a real GPU is skipped when there is none).

use crate::cpu::Float;
use crate::device::Device;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Asserts `|actual − expected| ≤ atol + rtol·|expected|` element-wise (NaN never passes),
/// printing the first mismatches and the worst error.
#[track_caller]
pub fn assert_close<T: Float>(actual: &[T], expected: &[T], atol: f64, rtol: f64) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let mut mismatches = Vec::new();
    let mut worst = (0.0_f64, 0_usize);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (to_f64(a), to_f64(e));
        let err = (a - e).abs();
        let err = if err.is_nan() { f64::INFINITY } else { err };
        if err > worst.0 || i == 0 {
            worst = (err, i);
        }
        if err > atol + rtol * e.abs() {
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

/// The devices a GPU-vs-CPU parity test runs on: the kernel emulation always, and CUDA device 0
/// when one is usable. When it is not, prints why, once per test, so skipped GPU checks are visible.
pub fn gpu_devices_under_test(test: &str) -> Vec<Device> {
    let mut devices = vec![Device::CudaEmulated];
    match crate::cuda::cuda_unavailable_reason(0) {
        None => devices.push(Device::Cuda(0)),
        Some(why) => eprintln!("{test}: skipping the real-GPU run: {why}"),
    }
    devices
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
