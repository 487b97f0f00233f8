//! Helpers shared by tests/optim.rs and tests/optim_devices.rs.
#![allow(dead_code)]

use kiln::optim::{Adam, AdamConfig, AdamW, Optimizer, RmsProp, RmsPropConfig, Sgd};
use kiln::testing::random_away_from_zero;
use kiln::{DType, Device, Error, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Mutex;

/// Tests that count device allocations take this, so no other test of this binary allocates on
/// the device meanwhile; the parity tests take it too.
pub static DEVICE: Mutex<()> = Mutex::new(());

pub fn device_lock() -> std::sync::MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn f64s(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()], Device::Cpu).unwrap()
}

pub fn values(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        DType::F64 => t.to_vec::<f64>().unwrap(),
        _ => t
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
    }
}

/// Runs one step of `opt` on a single parameter `w` with gradient `g` (f64 CPU).
pub fn step1(opt: &mut Optimizer, w: &mut Tensor, g: &[f64]) {
    opt.step(&mut [w], &[&f64s(g)]).unwrap();
}

pub fn state_of(opt: &Optimizer, name: &str) -> Vec<f64> {
    values(opt.state().get(name).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Update rules against hand-computed values.

/// Plain SGD, lr 0.5, wd 0.1: w = (2, −1, 0.25).
/// Step 1, g = (1, −0.5, 0.125): g' = g + 0.1·w = (1.2, −0.6, 0.15); w −= 0.5·g' → (1.4, −0.7, 0.175).
pub type MakeF32 = fn(&[Tensor]) -> kiln::Result<Box<Optimizer>>;

pub fn every_optimizer() -> Vec<(&'static str, MakeF32)> {
    vec![
        ("sgd", |p| Ok(Box::new(Sgd::new(p, 0.1, 0.0, 1e-2)?))),
        ("sgd-momentum", |p| {
            Ok(Box::new(Sgd::new(p, 0.1, 0.9, 1e-3)?))
        }),
        ("sgd-nesterov", |p| {
            Ok(Box::new(Sgd::nesterov(p, 0.1, 0.9, 1e-3)?))
        }),
        ("rmsprop", |p| {
            let c = RmsPropConfig {
                lr: 0.01,
                weight_decay: 1e-2,
                ..RmsPropConfig::default()
            };
            Ok(Box::new(RmsProp::with_config(p, c)?))
        }),
        ("adam", |p| {
            let c = AdamConfig {
                lr: 0.01,
                weight_decay: 1e-2,
                ..AdamConfig::default()
            };
            Ok(Box::new(Adam::with_config(p, c)?))
        }),
        ("adamw", |p| Ok(Box::new(AdamW::new(p, 0.01)?))),
    ]
}

pub const SHAPES: [&[usize]; 4] = [&[5, 9], &[7], &[3, 1, 3, 3], &[1]];

pub fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec(random_away_from_zero(&mut rng, n, 1e-3), shape, Device::Cpu).unwrap()
}

#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(r: kiln::Result<T>, what: &str) {
    match r {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}
