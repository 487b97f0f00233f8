//! Optimizers and schedules: each update rule against its formula on hand-computed values, the L2
//! option, AdamW against Adam + L2, fused kernels against the CPU on every device, bad arguments,
//! checkpoint round trips, no allocation in steps, and convergence on a quadratic. (The schedules'
//! hand-computed tests are unit tests in src/optim/schedule.rs.)
//!
//! Expected literals come from the update formulas (PyTorch's rules, written out in the comments)
//! evaluated by hand in f64 with a calculator; PyTorch itself was not run.

use kiln::backend::{self, AdamStep};
use kiln::optim::{
    Adam, AdamConfig, AdamW, Optimizer, OptimizerState, RmsProp, RmsPropConfig, Sgd,
};
use kiln::testing::{assert_close, gpu_devices_under_test, random_away_from_zero};
use kiln::{memory_stats, DType, Device, Error, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Mutex;

/// Tests that count device allocations take this, so no other test of this binary allocates on
/// the device meanwhile; the parity tests take it too.
static DEVICE: Mutex<()> = Mutex::new(());

fn device_lock() -> std::sync::MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|e| e.into_inner())
}

fn f64s(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()], Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
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
fn step1(opt: &mut dyn Optimizer, w: &mut Tensor, g: &[f64]) {
    opt.step(&mut [w], &[&f64s(g)]).unwrap();
}

fn state_of(opt: &dyn Optimizer, name: &str) -> Vec<f64> {
    values(opt.state().get(name).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Update rules against hand-computed values.

/// Plain SGD, lr 0.5, wd 0.1: w = (2, −1, 0.25).
/// Step 1, g = (1, −0.5, 0.125): g' = g + 0.1·w = (1.2, −0.6, 0.15); w −= 0.5·g' → (1.4, −0.7, 0.175).
/// Step 2, g = (0, 0, 1): g' = (0.14, −0.07, 1.0175); w → (1.33, −0.665, −0.33375).
#[test]
fn sgd_matches_hand_computed_steps() {
    let mut w = f64s(&[2.0, -1.0, 0.25]);
    let mut opt = Sgd::new(&[w.clone()], 0.5, 0.0, 0.1).unwrap();
    step1(&mut opt, &mut w, &[1.0, -0.5, 0.125]);
    assert_close(&values(&w), &[1.4, -0.7, 0.175], 1e-15, 1e-14);
    step1(&mut opt, &mut w, &[0.0, 0.0, 1.0]);
    assert_close(&values(&w), &[1.33, -0.665, -0.33375], 1e-15, 1e-14);
    assert_eq!(opt.steps(), 2);
    assert!(opt.state().tensors.is_empty(), "plain SGD keeps no state");
}

/// Classic momentum, lr 0.1, μ 0.9, wd 0.01, w = (1, −2):
/// step 1, g = (0.5, 0.25): g' = (0.51, 0.23) = v; w = (0.949, −2.023);
/// step 2, g = (−0.1, 0.4): g' = (−0.1 + 0.00949, 0.4 − 0.02023) = (−0.09051, 0.37977);
///   v = 0.9·(0.51, 0.23) + g' = (0.36849, 0.58677); w = (0.912151, −2.081677);
/// step 3, g = (0, 0): g' = (0.00912151, −0.02081677); v = (0.34076251, 0.50727623);
///   w = (0.878074749, −2.1324046230).
#[test]
fn sgd_momentum_matches_hand_computed_steps() {
    let mut w = f64s(&[1.0, -2.0]);
    let mut opt = Sgd::new(&[w.clone()], 0.1, 0.9, 0.01).unwrap();
    step1(&mut opt, &mut w, &[0.5, 0.25]);
    assert_close(&values(&w), &[0.949, -2.023], 1e-15, 1e-14);
    step1(&mut opt, &mut w, &[-0.1, 0.4]);
    assert_close(&values(&w), &[0.912151, -2.081677], 1e-15, 1e-14);
    assert_close(
        &state_of(&opt, "0.momentum_buffer"),
        &[0.36849, 0.58677],
        1e-15,
        1e-14,
    );
    step1(&mut opt, &mut w, &[0.0, 0.0]);
    assert_close(
        &state_of(&opt, "0.momentum_buffer"),
        &[0.34076251, 0.50727623],
        1e-15,
        1e-13,
    );
    assert_close(&values(&w), &[0.878074749, -2.132404623], 1e-15, 1e-13);
}

/// Nesterov (PyTorch's nesterov=True), lr 0.1, μ 0.9, wd 0.01, w = (1, −2):
/// step 1, g = (0.5, 0.25): g' = (0.51, 0.23) = v; update = g' + 0.9·v = (0.969, 0.437);
///   w = (0.9031, −2.0437);
/// step 2, g = (−0.1, 0.4): g' = (−0.090969, 0.379563); v = (0.368031, 0.586563);
///   update = g' + 0.9·v = (0.2402589, 0.9074697); w = (0.87907411, −2.13444697).
#[test]
fn sgd_nesterov_matches_hand_computed_steps() {
    let mut w = f64s(&[1.0, -2.0]);
    let mut opt = Sgd::nesterov(&[w.clone()], 0.1, 0.9, 0.01).unwrap();
    step1(&mut opt, &mut w, &[0.5, 0.25]);
    assert_close(&values(&w), &[0.9031, -2.0437], 1e-15, 1e-14);
    step1(&mut opt, &mut w, &[-0.1, 0.4]);
    assert_close(&values(&w), &[0.87907411, -2.13444697], 1e-15, 1e-14);
    assert_close(
        &state_of(&opt, "0.momentum_buffer"),
        &[0.368031, 0.586563],
        1e-15,
        1e-14,
    );
}

/// RMSprop with PyTorch's defaults (alpha 0.99, eps 1e-8), lr 0.01, w = (1, −2):
/// step 1, g = (0.5, −0.2): s = 0.01·g² = (0.0025, 0.0004); w −= 0.01·g/(sqrt(s) + 1e-8)
///   → (0.900000019999996, −1.900000049999975);
/// step 2, g = (0.5, 0.4): s = (0.004975, 0.001996), sqrt(s) = (0.0705336799, 0.0446766158);
///   w −= (0.0708881105, 0.0895322762) → (0.8291119095, −1.9895323262).
#[test]
fn rmsprop_matches_hand_computed_steps() {
    let mut w = f64s(&[1.0, -2.0]);
    let mut opt = RmsProp::new(&[w.clone()], 0.01).unwrap();
    assert_eq!(
        opt.config(),
        RmsPropConfig {
            lr: 0.01,
            ..RmsPropConfig::default()
        }
    );
    step1(&mut opt, &mut w, &[0.5, -0.2]);
    assert_close(
        &values(&w),
        &[0.900000019999996, -1.900000049999975],
        1e-15,
        1e-14,
    );
    step1(&mut opt, &mut w, &[0.5, 0.4]);
    assert_close(
        &state_of(&opt, "0.square_avg"),
        &[0.004975, 0.001996],
        1e-18,
        1e-13,
    );
    assert_close(&values(&w), &[0.8291119095, -1.9895323262], 1e-9, 0.0);
}

/// Adam with PyTorch's defaults (β 0.9, 0.999, eps 1e-8), lr 0.1, w = 1:
/// step 1, g = 0.5: m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25; w = 1 − 0.1·0.5/(0.5 + 1e-8)
///   = 0.900000002;
/// step 2, g = −0.25: m = 0.02, v = 0.00031225, m̂ = 0.02/0.19 = 0.1052631579,
///   v̂ = 0.00031225/0.001999 = 0.1562031016, sqrt(v̂) = 0.3952253807; w = 0.8733662987;
/// step 3, g = 0.75: m = 0.093, v = 0.00087443775, m̂ = 0.093/0.271 = 0.3431734317,
///   v̂ = 0.00087443775/0.002997001 = 0.2917709237, sqrt(v̂) = 0.5401582395; w = 0.8098342815.
/// The step count t = 1, 2, 3 is the optimizer's; without bias correction step 1 would move w by
/// 0.1·0.05/(0.0158 + 1e-8) ≈ 0.316 instead of 0.1.
#[test]
fn adam_matches_hand_computed_steps() {
    let mut w = f64s(&[1.0]);
    let mut opt = Adam::new(&[w.clone()], 0.1).unwrap();
    step1(&mut opt, &mut w, &[0.5]);
    assert_close(&values(&w), &[0.900000002], 1e-15, 1e-12);
    step1(&mut opt, &mut w, &[-0.25]);
    assert_close(&values(&w), &[0.8733662987], 1e-9, 0.0);
    step1(&mut opt, &mut w, &[0.75]);
    assert_close(&values(&w), &[0.8098342815], 1e-9, 0.0);
    assert_close(&state_of(&opt, "0.exp_avg"), &[0.093], 1e-17, 1e-14);
    assert_close(
        &state_of(&opt, "0.exp_avg_sq"),
        &[0.00087443775],
        1e-17,
        1e-14,
    );
    assert_eq!(opt.steps(), 3);
}

/// AdamW, lr 0.1, wd 0.1, β (0.9, 0.999), eps 1e-8, w = 2:
/// step 1, g = 0.5: w ← 0.99·2 = 1.98, Adam step 0.1·0.5/(0.5 + 1e-8) = 0.099999998 → 1.880000002;
/// step 2, g = 0.5: w ← 0.99·1.880000002 = 1.86120000198; m = 0.095, v = 0.00049975,
///   m̂ = 0.095/0.19 = 0.5, v̂ = 0.00049975/0.001999 = 0.25 → step 0.099999998 → 1.76120000398.
#[test]
fn adamw_matches_hand_computed_steps() {
    let mut w = f64s(&[2.0]);
    let config = AdamConfig {
        lr: 0.1,
        weight_decay: 0.1,
        ..AdamConfig::default()
    };
    let mut opt = AdamW::with_config(&[w.clone()], config).unwrap();
    step1(&mut opt, &mut w, &[0.5]);
    assert_close(&values(&w), &[1.880000002], 1e-15, 1e-12);
    step1(&mut opt, &mut w, &[0.5]);
    assert_close(&values(&w), &[1.76120000398], 1e-15, 1e-12);
    assert_close(&state_of(&opt, "0.exp_avg"), &[0.095], 1e-17, 1e-14);
    assert_eq!(
        AdamW::new(&[w.clone()], 0.1).unwrap().config().weight_decay,
        0.01
    );
}

// ---------------------------------------------------------------------------------------------
// The L2 option and AdamW against Adam + L2.

/// Makes an optimizer for `params` with L2 weight decay `wd`.
type Make = fn(&[Tensor], f64) -> kiln::Result<Box<dyn Optimizer>>;

fn l2_optimizers() -> Vec<(&'static str, Make)> {
    vec![
        ("sgd", |p, wd| Ok(Box::new(Sgd::new(p, 0.1, 0.0, wd)?))),
        ("momentum", |p, wd| Ok(Box::new(Sgd::new(p, 0.1, 0.9, wd)?))),
        ("nesterov", |p, wd| {
            Ok(Box::new(Sgd::nesterov(p, 0.1, 0.9, wd)?))
        }),
        ("rmsprop", |p, wd| {
            let c = RmsPropConfig {
                lr: 0.01,
                weight_decay: wd,
                ..RmsPropConfig::default()
            };
            Ok(Box::new(RmsProp::with_config(p, c)?))
        }),
        ("adam", |p, wd| {
            let c = AdamConfig {
                lr: 0.05,
                weight_decay: wd,
                ..AdamConfig::default()
            };
            Ok(Box::new(Adam::with_config(p, c)?))
        }),
    ]
}

/// Coupled L2: with weight decay wd and gradient g, every optimizer does exactly what it does
/// without weight decay on the gradient g + wd·w (w the weights before the step).
#[test]
fn l2_weight_decay_adds_wd_times_w_to_the_gradient() {
    let wd = 0.3;
    let grads = [[0.5, -0.25, 1.5], [-0.1, 0.4, 0.2], [0.3, 0.3, -0.7]];
    for (name, make) in l2_optimizers() {
        let mut w_l2 = f64s(&[1.0, -2.0, 0.5]);
        let mut w_ref = w_l2.clone();
        let mut with_l2 = make(&[w_l2.clone()], wd).unwrap();
        let mut without = make(&[w_ref.clone()], 0.0).unwrap();
        for g in grads {
            let w_now = values(&w_ref);
            let g_l2: Vec<f64> = g.iter().zip(&w_now).map(|(g, w)| g + wd * w).collect();
            step1(with_l2.as_mut(), &mut w_l2, &g);
            step1(without.as_mut(), &mut w_ref, &g_l2);
            assert_close(&values(&w_l2), &values(&w_ref), 1e-15, 1e-14);
        }
        let moved: f64 = values(&w_l2)
            .iter()
            .zip(&values(&make_plain_run(make, &grads)))
            .map(|(a, b)| (a - b).abs())
            .sum();
        assert!(moved > 1e-3, "{name}: weight decay changed nothing");
        for ((k, a), (_, b)) in with_l2.state().tensors.iter().zip(&without.state().tensors) {
            assert_close(&values(a), &values(b), 1e-15, 1e-14);
            assert!(k.starts_with("0."), "{name}: state name {k}");
        }
    }
}

/// The weights after the same steps without weight decay.
fn make_plain_run(make: Make, grads: &[[f64; 3]]) -> Tensor {
    let mut w = f64s(&[1.0, -2.0, 0.5]);
    let mut opt = make(&[w.clone()], 0.0).unwrap();
    for g in grads {
        step1(opt.as_mut(), &mut w, g);
    }
    w
}

/// AdamW decays w outside the moments; Adam + L2 feeds wd·w through them.
/// With a zero gradient, lr 0.1, wd 0.1, w = 2, one step:
/// AdamW: m = v = 0, the Adam step is 0/(0 + eps) = 0, so w = (1 − 0.01)·2 = 1.98 exactly;
/// Adam + L2: g' = 0.2, m̂ = 0.2, v̂ = 0.04, w = 2 − 0.1·0.2/(0.2 + 1e-8) = 1.9000000050 — the L2
/// term is normalized like a gradient, so it moves w by ≈ lr whatever wd is.
/// Then over several steps with gradients: AdamW = (1 − lr·wd)·w − (plain Adam's step) and its
/// moments equal plain Adam's, which Adam + L2's do not.
#[test]
fn adamw_differs_from_adam_with_l2_as_the_formulas_say() {
    let config = AdamConfig {
        lr: 0.1,
        weight_decay: 0.1,
        ..AdamConfig::default()
    };
    let mut w_adamw = f64s(&[2.0]);
    let mut w_adam = f64s(&[2.0]);
    let mut adamw = AdamW::with_config(&[w_adamw.clone()], config).unwrap();
    let mut adam = Adam::with_config(&[w_adam.clone()], config).unwrap();
    step1(&mut adamw, &mut w_adamw, &[0.0]);
    step1(&mut adam, &mut w_adam, &[0.0]);
    assert_close(&values(&w_adamw), &[1.98], 1e-15, 0.0);
    assert_close(&values(&w_adam), &[1.900000005], 1e-15, 1e-12);

    let mut w_adamw = f64s(&[1.0, -2.0, 0.5]);
    let mut w_plain = w_adamw.clone();
    let mut adamw = AdamW::with_config(&[w_adamw.clone()], config).unwrap();
    let plain_config = AdamConfig {
        weight_decay: 0.0,
        ..config
    };
    let mut plain = Adam::with_config(&[w_plain.clone()], plain_config).unwrap();
    let mut adam_l2 = Adam::with_config(&[w_plain.clone()], config).unwrap();
    let mut w_l2 = w_plain.clone();
    for g in [[0.5, -0.25, 1.5], [-0.1, 0.4, 0.2], [0.3, 0.3, -0.7]] {
        let before_adamw = values(&w_adamw);
        let before_plain = values(&w_plain);
        step1(&mut adamw, &mut w_adamw, &g);
        step1(&mut plain, &mut w_plain, &g);
        step1(&mut adam_l2, &mut w_l2, &g);
        // AdamW's new w = 0.99·w + (plain Adam's step, which does not depend on w).
        let expected: Vec<f64> = (0..3)
            .map(|i| 0.99 * before_adamw[i] + (values(&w_plain)[i] - before_plain[i]))
            .collect();
        assert_close(&values(&w_adamw), &expected, 1e-14, 1e-13);
    }
    for name in ["0.exp_avg", "0.exp_avg_sq"] {
        assert_close(&state_of(&adamw, name), &state_of(&plain, name), 0.0, 0.0);
        let differs = state_of(&adam_l2, name)
            .iter()
            .zip(&state_of(&plain, name))
            .any(|(a, b)| (a - b).abs() > 1e-6);
        assert!(differs, "Adam + L2's {name} should see wd·w");
    }
    let gap: f64 = values(&w_adamw)
        .iter()
        .zip(&values(&w_l2))
        .map(|(a, b)| (a - b).abs())
        .sum();
    assert!(gap > 1e-3, "AdamW and Adam + L2 gave the same weights");
}

// ---------------------------------------------------------------------------------------------
// Fused kernels against the CPU, on every device.

type MakeF32 = fn(&[Tensor]) -> kiln::Result<Box<dyn Optimizer>>;

fn every_optimizer() -> Vec<(&'static str, MakeF32)> {
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

const SHAPES: [&[usize]; 4] = [&[5, 9], &[7], &[3, 1, 3, 3], &[1]];

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec(random_away_from_zero(&mut rng, n, 1e-3), shape, Device::Cpu).unwrap()
}

/// Five steps with fresh random gradients on parameters of odd shapes (plus one long vector to
/// cover many blocks): the parameters and every state tensor match the CPU's.
fn check_kernel_parity(name: &str, make: MakeF32) {
    let _guard = device_lock();
    for device in gpu_devices_under_test(name) {
        let mut shapes: Vec<Vec<usize>> = SHAPES.iter().map(|s| s.to_vec()).collect();
        shapes.push(vec![70_001]);
        let mut cpu_w: Vec<Tensor> = (0..shapes.len())
            .map(|i| random(&shapes[i], i as u64))
            .collect();
        let mut dev_w: Vec<Tensor> = cpu_w.iter().map(|w| w.to_device(device).unwrap()).collect();
        let mut cpu_opt = make(&cpu_w).unwrap();
        let mut dev_opt = make(&dev_w).unwrap();
        for step in 0..5 {
            let g: Vec<Tensor> = (0..shapes.len())
                .map(|i| random(&shapes[i], 100 + 10 * step + i as u64))
                .collect();
            let dev_g: Vec<Tensor> = g.iter().map(|g| g.to_device(device).unwrap()).collect();
            cpu_opt
                .step(
                    &mut cpu_w.iter_mut().collect::<Vec<_>>(),
                    &g.iter().collect::<Vec<_>>(),
                )
                .unwrap();
            dev_opt
                .step(
                    &mut dev_w.iter_mut().collect::<Vec<_>>(),
                    &dev_g.iter().collect::<Vec<_>>(),
                )
                .unwrap();
        }
        for (d, c) in dev_w.iter().zip(&cpu_w) {
            assert_eq!(d.device(), device);
            assert_close(&values(d), &values(c), 1e-5, 1e-4);
        }
        let (dev_state, cpu_state) = (dev_opt.state(), cpu_opt.state());
        assert_eq!(dev_state.step, 5);
        assert_eq!(dev_state.tensors.len(), cpu_state.tensors.len());
        for ((dn, d), (cn, c)) in dev_state.tensors.iter().zip(&cpu_state.tensors) {
            assert_eq!(dn, cn);
            assert_eq!(d.device(), device, "{name}: {dn}");
            assert_close(&values(d), &values(c), 1e-5, 1e-4);
        }
    }
}

#[test]
fn sgd_kernel_matches_cpu() {
    check_kernel_parity("sgd_kernel_matches_cpu", every_optimizer()[0].1);
}

#[test]
fn sgd_momentum_kernel_matches_cpu() {
    check_kernel_parity("sgd_momentum_kernel_matches_cpu", every_optimizer()[1].1);
}

#[test]
fn sgd_nesterov_kernel_matches_cpu() {
    check_kernel_parity("sgd_nesterov_kernel_matches_cpu", every_optimizer()[2].1);
}

#[test]
fn rmsprop_kernel_matches_cpu() {
    check_kernel_parity("rmsprop_kernel_matches_cpu", every_optimizer()[3].1);
}

#[test]
fn adam_kernel_matches_cpu() {
    check_kernel_parity("adam_kernel_matches_cpu", every_optimizer()[4].1);
}

#[test]
fn adamw_kernel_matches_cpu() {
    check_kernel_parity("adamw_kernel_matches_cpu", every_optimizer()[5].1);
}

/// The backend primitives directly, on every device, including both weight decays of `adam` at
/// once (which no optimizer type uses) and a late step count (bias corrections near 1).
#[test]
fn backend_primitives_match_cpu() {
    let _guard = device_lock();
    for device in gpu_devices_under_test("backend_primitives_match_cpu") {
        let shape = [3, 11];
        let (w0, g) = (random(&shape, 1), random(&shape, 2));
        let (s0, m0) = (random(&shape, 3), random(&shape, 4));
        let square = |t: &Tensor| {
            let v: Vec<f32> = t.to_vec::<f32>().unwrap().iter().map(|x| x * x).collect();
            Tensor::from_vec(v, t.shape(), Device::Cpu).unwrap()
        };
        let v0 = square(&s0);
        let on = |t: &Tensor| t.to_device(device).unwrap();
        let hp = AdamStep {
            lr: 0.01,
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.05,
            decoupled_weight_decay: 0.1,
            step: 1000,
        };
        let (mut cw, mut cm, mut cv) = (w0.clone(), m0.clone(), v0.clone());
        let (mut dw, mut dm, mut dv) = (on(&w0), on(&m0), on(&v0));
        backend::adam(&mut cw, &g, &mut cm, &mut cv, &hp).unwrap();
        backend::adam(&mut dw, &on(&g), &mut dm, &mut dv, &hp).unwrap();
        backend::rmsprop(&mut cw, &g, &mut cv, 0.01, 0.9, 1e-6, 0.1).unwrap();
        backend::rmsprop(&mut dw, &on(&g), &mut dv, 0.01, 0.9, 1e-6, 0.1).unwrap();
        backend::sgd_nesterov(&mut cw, &g, &mut cm, 0.05, 0.5, 0.1).unwrap();
        backend::sgd_nesterov(&mut dw, &on(&g), &mut dm, 0.05, 0.5, 0.1).unwrap();
        backend::sgd_momentum(&mut cw, &g, &mut cm, 0.05, 0.5, 0.1).unwrap();
        backend::sgd_momentum(&mut dw, &on(&g), &mut dm, 0.05, 0.5, 0.1).unwrap();
        backend::sgd(&mut cw, &g, 0.05, 0.1).unwrap();
        backend::sgd(&mut dw, &on(&g), 0.05, 0.1).unwrap();
        for (d, c) in [(&dw, &cw), (&dm, &cm), (&dv, &cv)] {
            assert_close(&values(d), &values(c), 1e-5, 1e-4);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bad arguments.

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: kiln::Result<T>, what: &str) {
    match r {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn bad_hyper_parameters_are_errors() {
    let p = [f64s(&[1.0, 2.0])];
    for lr in [-0.1, f64::NAN, f64::INFINITY] {
        assert_invalid(Sgd::new(&p, lr, 0.0, 0.0), "sgd lr");
        assert_invalid(RmsProp::new(&p, lr), "rmsprop lr");
        assert_invalid(Adam::new(&p, lr), "adam lr");
        assert_invalid(AdamW::new(&p, lr), "adamw lr");
    }
    for momentum in [-0.1, 1.0, 1.5, f64::NAN] {
        assert_invalid(Sgd::new(&p, 0.1, momentum, 0.0), "momentum");
        assert_invalid(Sgd::nesterov(&p, 0.1, momentum, 0.0), "nesterov momentum");
    }
    assert_invalid(
        Sgd::nesterov(&p, 0.1, 0.0, 0.0),
        "nesterov without momentum",
    );
    for wd in [-1e-3, f64::NAN] {
        assert_invalid(Sgd::new(&p, 0.1, 0.9, wd), "sgd weight decay");
        let c = RmsPropConfig {
            weight_decay: wd,
            ..Default::default()
        };
        assert_invalid(RmsProp::with_config(&p, c), "rmsprop weight decay");
        let c = AdamConfig {
            weight_decay: wd,
            ..Default::default()
        };
        assert_invalid(Adam::with_config(&p, c), "adam weight decay");
        assert_invalid(AdamW::with_config(&p, c), "adamw weight decay");
    }
    for alpha in [-0.5, 1.0, 2.0] {
        let c = RmsPropConfig {
            alpha,
            ..Default::default()
        };
        assert_invalid(RmsProp::with_config(&p, c), "rmsprop alpha");
    }
    for beta in [-0.1, 1.0, 1.1, f64::NAN] {
        let c1 = AdamConfig {
            beta1: beta,
            ..Default::default()
        };
        let c2 = AdamConfig {
            beta2: beta,
            ..Default::default()
        };
        for c in [c1, c2] {
            assert_invalid(Adam::with_config(&p, c), "adam beta");
            assert_invalid(AdamW::with_config(&p, c), "adamw beta");
        }
    }
    for eps in [0.0, -1e-8, f64::NAN, f64::INFINITY] {
        let c = RmsPropConfig {
            eps,
            ..Default::default()
        };
        assert_invalid(RmsProp::with_config(&p, c), "rmsprop eps");
        let c = AdamConfig {
            eps,
            ..Default::default()
        };
        assert_invalid(Adam::with_config(&p, c), "adam eps");
    }
    // Valid edge values: lr 0 (a warm-up's start), beta1 0, momentum 0.
    assert!(Sgd::new(&p, 0.0, 0.0, 0.0).is_ok());
    let c = AdamConfig {
        beta1: 0.0,
        ..Default::default()
    };
    assert!(Adam::with_config(&p, c).is_ok());

    // set_lr refuses a bad rate and keeps the old one.
    let mut adam = Adam::new(&p, 0.1).unwrap();
    assert_invalid(adam.set_lr(-1.0), "set_lr");
    assert_eq!(adam.lr(), 0.1);
    adam.set_lr(0.05).unwrap();
    assert_eq!(adam.lr(), 0.05);

    // The primitives check too, and Adam's step count starts at 1.
    let (mut w, g, mut m, mut v) = (
        p[0].clone(),
        f64s(&[0.1, 0.2]),
        f64s(&[0.0; 2]),
        f64s(&[0.0; 2]),
    );
    let hp = AdamStep {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled_weight_decay: 0.0,
        step: 0,
    };
    assert_invalid(
        backend::adam(&mut w, &g, &mut m, &mut v, &hp),
        "adam step 0",
    );
    assert_invalid(
        backend::adam(
            &mut w,
            &g,
            &mut m,
            &mut v,
            &AdamStep {
                step: 1,
                beta2: 1.0,
                ..hp
            },
        ),
        "adam beta2 1",
    );
    assert_invalid(backend::sgd(&mut w, &g, -0.1, 0.0), "sgd lr");
    assert_invalid(
        backend::rmsprop(&mut w, &g, &mut v, 0.1, 0.99, 0.0, 0.0),
        "rmsprop eps",
    );
    assert_invalid(
        backend::sgd_nesterov(&mut w, &g, &mut v, 0.1, 0.0, 0.0),
        "nesterov",
    );
    assert_eq!(values(&w), vec![1.0, 2.0], "a rejected primitive changed w");
}

#[test]
fn mismatched_parameters_and_gradients_are_errors() {
    for (name, make) in every_optimizer() {
        let p = [random(&[2, 3], 1), random(&[4], 2)];
        let mut opt = make(&p).unwrap();
        let (mut a, mut b) = (p[0].clone(), p[1].clone());
        let (ga, gb) = (random(&[2, 3], 3), random(&[4], 4));
        // Counts.
        assert_invalid(opt.step(&mut [&mut a, &mut b], &[&ga]), name);
        assert_invalid(opt.step(&mut [&mut a], &[&ga]), name);
        // Shapes: a gradient, and parameters in the wrong order.
        let bad = random(&[3, 2], 5);
        let r = opt.step(&mut [&mut a, &mut b], &[&ga, &bad]);
        assert!(
            matches!(r, Err(Error::ShapeMismatch { .. })),
            "{name}: {r:?}"
        );
        let r = opt.step(&mut [&mut b, &mut a], &[&gb, &ga]);
        assert!(
            matches!(r, Err(Error::ShapeMismatch { .. })),
            "{name}: {r:?}"
        );
        // Dtype and device.
        let g64 = gb.to_dtype(DType::F64).unwrap();
        let r = opt.step(&mut [&mut a, &mut b], &[&ga, &g64]);
        assert!(
            matches!(r, Err(Error::DTypeMismatch { .. })),
            "{name}: {r:?}"
        );
        let g_dev = gb.to_device(Device::CudaEmulated).unwrap();
        assert_invalid(opt.step(&mut [&mut a, &mut b], &[&ga, &g_dev]), name);
        // Nothing moved: the first parameter was not updated before the second was refused.
        assert_eq!(values(&a), values(&p[0]), "{name}");
        assert_eq!(opt.steps(), 0, "{name}");
        opt.step(&mut [&mut a, &mut b], &[&ga, &gb]).unwrap();
        assert_eq!(opt.steps(), 1);
        // Integer parameters cannot be optimized.
        let ints = Tensor::from_vec(vec![1i32, 2], &[2], Device::Cpu).unwrap();
        assert!(
            matches!(make(&[ints]), Err(Error::DTypeMismatch { .. })),
            "{name}"
        );
    }
    // The primitives check shapes and devices of the state too.
    let (mut w, g) = (random(&[3], 1), random(&[3], 2));
    let mut v = random(&[4], 3);
    let r = backend::sgd_momentum(&mut w, &g, &mut v, 0.1, 0.9, 0.0);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let mut v = random(&[3], 3).to_device(Device::CudaEmulated).unwrap();
    let r = backend::sgd_momentum(&mut w, &g, &mut v, 0.1, 0.9, 0.0);
    assert!(matches!(r, Err(Error::DeviceMismatch { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// State: checkpoints, allocation.

/// Three steps, save; two more steps → A. A fresh optimizer (made with another lr), load the
/// saved state and the saved weights, the same two steps → B: B = A exactly, on the CPU and on
/// the devices (state saved on the CPU restores onto a device too).
#[test]
fn saved_state_resumes_exactly() {
    let _guard = device_lock();
    let mut devices = vec![Device::Cpu];
    devices.extend(gpu_devices_under_test("saved_state_resumes_exactly"));
    for device in devices {
        for (name, make) in every_optimizer() {
            let on = |t: &Tensor| t.to_device(device).unwrap();
            let mut w: Vec<Tensor> = (0..SHAPES.len())
                .map(|i| on(&random(SHAPES[i], i as u64)))
                .collect();
            let grads = |step: u64| -> Vec<Tensor> {
                (0..SHAPES.len())
                    .map(|i| on(&random(SHAPES[i], 50 + 7 * step + i as u64)))
                    .collect()
            };
            let run =
                |opt: &mut dyn Optimizer, w: &mut Vec<Tensor>, steps: std::ops::Range<u64>| {
                    for s in steps {
                        let g = grads(s);
                        opt.step(
                            &mut w.iter_mut().collect::<Vec<_>>(),
                            &g.iter().collect::<Vec<_>>(),
                        )
                        .unwrap();
                    }
                };
            let mut opt = make(&w).unwrap();
            run(opt.as_mut(), &mut w, 0..3);
            opt.set_lr(0.02).unwrap();
            // A checkpoint as a file would hold it: on the CPU.
            let saved = opt.state();
            let saved = OptimizerState {
                tensors: saved
                    .tensors
                    .iter()
                    .map(|(n, t)| (n.clone(), t.to_device(Device::Cpu).unwrap()))
                    .collect(),
                ..saved
            };
            let saved_w: Vec<Tensor> = w
                .iter()
                .map(|t| t.to_device(Device::Cpu).unwrap())
                .collect();
            run(opt.as_mut(), &mut w, 3..5);

            let mut w2: Vec<Tensor> = saved_w.iter().map(on).collect();
            let mut resumed = make(&w2).unwrap();
            resumed.set_lr(0.5).unwrap();
            resumed.load_state(&saved).unwrap();
            assert_eq!((resumed.steps(), resumed.lr()), (3, 0.02), "{name}");
            run(resumed.as_mut(), &mut w2, 3..5);
            for (a, b) in w.iter().zip(&w2) {
                assert_eq!(values(a), values(b), "{name} on {device}");
            }
            for ((na, a), (nb, b)) in opt.state().tensors.iter().zip(&resumed.state().tensors) {
                assert_eq!(na, nb);
                assert_eq!(b.device(), device);
                assert_eq!(values(a), values(b), "{name} {na} on {device}");
            }
            assert_eq!(resumed.steps(), 5);
        }
    }
}

#[test]
fn state_names_and_bad_states() {
    let p = [random(&[2, 3], 1), random(&[4], 2)];
    let names = |opt: &dyn Optimizer| -> Vec<String> {
        opt.state().tensors.into_iter().map(|(n, _)| n).collect()
    };
    let adam = Adam::new(&p, 0.1).unwrap();
    assert_eq!(
        names(&adam),
        ["0.exp_avg", "0.exp_avg_sq", "1.exp_avg", "1.exp_avg_sq"]
    );
    assert_eq!(adam.state().optimizer, "adam");
    assert_eq!(names(&AdamW::new(&p, 0.1).unwrap()).len(), 4);
    assert_eq!(
        names(&RmsProp::new(&p, 0.1).unwrap()),
        ["0.square_avg", "1.square_avg"]
    );
    let sgd = Sgd::new(&p, 0.1, 0.9, 0.0).unwrap();
    assert_eq!(names(&sgd), ["0.momentum_buffer", "1.momentum_buffer"]);
    assert!(names(&Sgd::new(&p, 0.1, 0.0, 0.0).unwrap()).is_empty());
    for (_, t) in adam.state().tensors {
        assert!(values(&t).iter().all(|&x| x == 0.0), "state starts at zero");
    }

    let mut target = Adam::new(&p, 0.1).unwrap();
    // Another optimizer's state.
    assert_invalid(
        target.load_state(&AdamW::new(&p, 0.1).unwrap().state()),
        "kind",
    );
    // A missing tensor, a renamed one, a wrong shape, a wrong dtype, a bad lr.
    let good = adam.state();
    let mut s = good.clone();
    s.tensors.pop();
    assert_invalid(target.load_state(&s), "missing");
    let mut s = good.clone();
    s.tensors[3].0 = "1.exp_avg_sqq".into();
    assert_invalid(target.load_state(&s), "renamed");
    let mut s = good.clone();
    s.tensors[0].1 = random(&[3, 2], 9);
    assert!(matches!(
        target.load_state(&s),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut s = good.clone();
    s.tensors[0].1 = s.tensors[0].1.to_dtype(DType::F64).unwrap();
    assert!(matches!(
        target.load_state(&s),
        Err(Error::DTypeMismatch { .. })
    ));
    let mut s = good.clone();
    s.lr = -1.0;
    assert_invalid(target.load_state(&s), "lr");
    // Nothing was changed by the refused loads.
    assert_eq!((target.steps(), target.lr()), (0, 0.1));
    // A state from an optimizer of other parameters.
    let other = Adam::new(&[random(&[2, 3], 1)], 0.1).unwrap();
    assert_invalid(target.load_state(&other.state()), "count");
}

/// The state is allocated when the optimizer is made: no step (not even the first) asks the
/// device's pool for a buffer.
#[test]
fn optimizer_steps_request_no_device_memory() {
    let _guard = device_lock();
    for device in gpu_devices_under_test("optimizer_steps_request_no_device_memory") {
        for (name, make) in every_optimizer() {
            let mut w: Vec<Tensor> = (0..SHAPES.len())
                .map(|i| random(SHAPES[i], i as u64).to_device(device).unwrap())
                .collect();
            let g: Vec<Tensor> = (0..SHAPES.len())
                .map(|i| random(SHAPES[i], 9 + i as u64).to_device(device).unwrap())
                .collect();
            let mut opt = make(&w).unwrap();
            let before = memory_stats(&device).unwrap();
            for _ in 0..4 {
                opt.step(
                    &mut w.iter_mut().collect::<Vec<_>>(),
                    &g.iter().collect::<Vec<_>>(),
                )
                .unwrap();
            }
            let after = memory_stats(&device).unwrap();
            assert_eq!(
                (after.requests, after.device_allocations, after.live_bytes),
                (
                    before.requests,
                    before.device_allocations,
                    before.live_bytes
                ),
                "{name} on {device}: a step allocated: {before:?} -> {after:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Convergence.

/// Each optimizer minimizes Σ (w − target)² (gradient 2(w − target), computed on the host) from
/// w = 0 on the CPU, to within `tol` of the target in a fixed number of steps (AdamW's decay pulls
/// its end point slightly toward 0, hence its looser tolerance).
#[test]
fn every_optimizer_minimizes_a_quadratic() {
    let target = [1.5, -0.75, 0.25, 3.0, -2.0];
    let cases: Vec<(&str, Box<dyn Optimizer>, u64, f64)> = {
        let p = [f64s(&[0.0; 5])];
        let adam = |lr| AdamConfig {
            lr,
            ..AdamConfig::default()
        };
        vec![
            (
                "sgd",
                Box::new(Sgd::new(&p, 0.1, 0.0, 0.0).unwrap()),
                100,
                1e-6,
            ),
            (
                "momentum",
                Box::new(Sgd::new(&p, 0.05, 0.9, 0.0).unwrap()),
                300,
                1e-6,
            ),
            (
                "nesterov",
                Box::new(Sgd::nesterov(&p, 0.05, 0.9, 0.0).unwrap()),
                300,
                1e-6,
            ),
            (
                "rmsprop",
                Box::new(RmsProp::new(&p, 0.01).unwrap()),
                1000,
                1e-6,
            ),
            (
                "adam",
                Box::new(Adam::with_config(&p, adam(0.1)).unwrap()),
                1000,
                1e-6,
            ),
            (
                "adamw",
                Box::new(
                    AdamW::with_config(
                        &p,
                        AdamConfig {
                            weight_decay: 1e-4,
                            ..adam(0.1)
                        },
                    )
                    .unwrap(),
                ),
                1000,
                1e-3,
            ),
        ]
    };
    for (name, mut opt, steps, tol) in cases {
        let mut w = f64s(&[0.0; 5]);
        let loss =
            |w: &[f64]| -> f64 { w.iter().zip(&target).map(|(w, t)| (w - t) * (w - t)).sum() };
        let start = loss(&values(&w));
        for _ in 0..steps {
            let g: Vec<f64> = values(&w)
                .iter()
                .zip(&target)
                .map(|(w, t)| 2.0 * (w - t))
                .collect();
            step1(opt.as_mut(), &mut w, &g);
        }
        let end = values(&w);
        let worst = end
            .iter()
            .zip(&target)
            .map(|(w, t)| (w - t).abs())
            .fold(0.0, f64::max);
        eprintln!("{name}: max |w − target| = {worst:e} after {steps} steps");
        assert!(
            worst < tol,
            "{name}: after {steps} steps |w − target| is {worst:e} (loss {start} → {}), tolerance {tol:e}",
            loss(&end)
        );
    }
}
