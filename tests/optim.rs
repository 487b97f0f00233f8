//! Optimizers: each update rule against its formula on hand-computed values, the L2 option,
//! AdamW against Adam + L2, bad arguments, and an update rule written outside kiln. (Kernels on every device, checkpoint round trips,
//! allocation and convergence are in tests/optim_devices.rs; the schedules' hand-computed tests
//! are unit tests in src/optim/schedule.rs.)
//!
//! Expected literals come from the update formulas (PyTorch's rules, written out in the comments)
//! evaluated by hand in f64 with a calculator; PyTorch itself was not run.

mod optim_support;
use optim_support::*;

use kiln::backend::{self, AdamStep};
use kiln::optim::{
    Adam, AdamConfig, AdamW, Optimizer, RmsProp, RmsPropConfig, Sgd, Step, UpdateRule,
};
use kiln::testing::assert_close;
use kiln::{DType, Device, Error, Tensor};

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
type Make = fn(&[Tensor], f64) -> kiln::Result<Box<Optimizer>>;

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
// Bad arguments.

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
        backend::rmsprop(
            &mut w,
            &g,
            &mut v,
            &backend::RmsPropStep::new(0.1, 0.99, 0.0, 0.0),
        ),
        "rmsprop eps",
    );
    assert_invalid(
        backend::sgd_momentum(
            &mut w,
            &g,
            &mut v,
            &backend::MomentumStep::new(0.1, 0.0, 0.0).nesterov(),
        ),
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
    let r = backend::sgd_momentum(
        &mut w,
        &g,
        &mut v,
        &backend::MomentumStep::new(0.1, 0.9, 0.0),
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let mut v = random(&[3], 3).to_device(Device::CudaEmulated).unwrap();
    let r = backend::sgd_momentum(
        &mut w,
        &g,
        &mut v,
        &backend::MomentumStep::new(0.1, 0.9, 0.0),
    );
    assert!(matches!(r, Err(Error::DeviceMismatch { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// State: checkpoints, allocation.

// ---------------------------------------------------------------------------------------------
// An optimizer written outside kiln, against the slim `UpdateRule` trait.

/// Signum (sign-SGD on a running mean of the gradients): `m = β·m + (1 − β)·g; w −= lr·sign(m)`,
/// f32 only. The rule is all it writes: the learning rate, the step count, the `momentum` state of
/// each parameter and its checkpoint form are `Optimizer`'s.
struct Signum {
    beta: f64,
}

impl UpdateRule for Signum {
    fn name(&self) -> &'static str {
        "signum"
    }

    fn state_names(&self) -> &'static [&'static str] {
        &["momentum"]
    }

    fn update(
        &self,
        w: &mut Tensor,
        g: &Tensor,
        state: &mut [Tensor],
        step: Step,
    ) -> kiln::Result<()> {
        let m = &mut state[0];
        backend::axpby_in_place(self.beta, m, 1.0 - self.beta, g)?;
        let sign: Vec<f32> = m
            .to_vec::<f32>()?
            .iter()
            .map(|&x| if x == 0.0 { 0.0 } else { x.signum() })
            .collect();
        let sign = Tensor::from_vec(sign, m.shape(), m.device())?;
        backend::axpby_in_place(1.0, w, -step.lr, &sign)
    }
}

fn f32s(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()], Device::Cpu).unwrap()
}

/// lr 0.25, β 0.5, w = (1, −2, 0.5):
/// step 1, g = (0.5, −1, 0): m = (0.25, −0.5, 0); w = (0.75, −1.75, 0.5);
/// step 2, g = (−1, −1, 0.5): m = (−0.375, −0.75, 0.25); w = (1, −1.5, 0.25).
#[test]
fn a_user_written_update_rule_gets_the_shared_state_handling() {
    let mut w = f32s(&[1.0, -2.0, 0.5]);
    assert!(Optimizer::with_rule(&[w.clone()], -1.0, Signum { beta: 0.5 }).is_err());
    let mut opt = Optimizer::with_rule(&[w.clone()], 0.25, Signum { beta: 0.5 }).unwrap();
    assert_eq!(opt.name(), "signum");
    opt.step(&mut [&mut w], &[&f32s(&[0.5, -1.0, 0.0])])
        .unwrap();
    assert_eq!(values(&w), [0.75, -1.75, 0.5]);
    assert_eq!(state_of(&opt, "0.momentum"), [0.25, -0.5, 0.0]);
    opt.step(&mut [&mut w], &[&f32s(&[-1.0, -1.0, 0.5])])
        .unwrap();
    assert_eq!(values(&w), [1.0, -1.5, 0.25]);
    assert_eq!(state_of(&opt, "0.momentum"), [-0.375, -0.75, 0.25]);
    assert_eq!(opt.steps(), 2);
    // The shared checks: a gradient of another shape changes nothing.
    let err = opt.step(&mut [&mut w], &[&f32s(&[1.0])]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert_eq!(opt.steps(), 2);
    assert_eq!(values(&w), [1.0, -1.5, 0.25]);

    // state() / load_state(): a new optimizer of the rule resumes exactly where this one is.
    opt.set_lr(0.125).unwrap();
    let saved = opt.state();
    assert_eq!(saved.optimizer, "signum");
    assert_eq!((saved.step, saved.lr), (2, 0.125));
    let names: Vec<&str> = saved.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0.momentum"]);
    let mut resumed = Optimizer::with_rule(&[w.clone()], 0.5, Signum { beta: 0.5 }).unwrap();
    resumed.load_state(&saved).unwrap();
    drop(saved);
    assert_eq!((resumed.steps(), resumed.lr()), (2, 0.125));
    assert_eq!(
        state_of(&resumed, "0.momentum"),
        state_of(&opt, "0.momentum")
    );
    let mut w2 = w.clone();
    let g = f32s(&[0.75, 0.5, -2.0]);
    opt.step(&mut [&mut w], &[&g]).unwrap();
    resumed.step(&mut [&mut w2], &[&g]).unwrap();
    assert_eq!(values(&w), values(&w2));
    assert_eq!(
        state_of(&resumed, "0.momentum"),
        state_of(&opt, "0.momentum")
    );
    assert_eq!(resumed.steps(), 3);

    // A state is restored only into an optimizer of the same rule; nothing changes on error.
    let mut sgd = Sgd::new(&[w.clone()], 0.1, 0.9, 0.0).unwrap();
    assert!(sgd.load_state(&resumed.state()).is_err());
    assert_eq!((sgd.steps(), sgd.lr()), (0, 0.1));
    let adam = Adam::new(&[w.clone()], 0.1).unwrap();
    assert!(resumed.load_state(&adam.state()).is_err());
    assert_eq!(resumed.steps(), 3);
}

/// The same rule trains a small model through `kiln::train::train_step`, which takes it as
/// `&mut Optimizer` like the built-in ones.
#[test]
fn a_user_written_update_rule_trains_a_model() {
    use kiln::nn::{Init, Linear, Module, Sequential};
    let mut model =
        Sequential::new().push(Linear::new(4, 3, Init::KaimingNormal, 5, Device::Cpu).unwrap());
    let params: Vec<Tensor> = model
        .parameters()
        .into_iter()
        .map(|(_, t)| t.clone())
        .collect();
    let mut opt = Optimizer::with_rule(&params, 0.02, Signum { beta: 0.9 }).unwrap();
    drop(params);
    let x = Tensor::randn(&[12, 4], 1.0, 9, Device::Cpu).unwrap();
    let labels: Vec<i32> = (0..12).map(|i| i % 3).collect();
    let y = Tensor::from_vec(labels, &[12], Device::Cpu).unwrap();
    let losses: Vec<f64> = (0..40)
        .map(|step| {
            kiln::train::train_step(&mut model, &mut opt, &x, &y, step)
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(opt.steps(), 40);
    assert!(
        losses[39] < 0.9 * losses[0],
        "the loss did not fall: {:?}",
        losses
    );
    let state = opt.state();
    let names: Vec<&str> = state.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0.momentum", "1.momentum"]);
}
