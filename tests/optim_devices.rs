//! Optimizers on every device: the fused kernels against the CPU, the backend primitives,
//! checkpoint state round trips (exact resume), no device allocation in steps, and convergence on
//! a quadratic.

mod optim_support;
use optim_support::*;

use kiln::backend::{self, AdamStep};
use kiln::optim::{Adam, AdamConfig, AdamW, Optimizer, OptimizerState, RmsProp, Sgd};
use kiln::testing::assert_close;
use kiln::{memory_stats, DType, Device, Error, Tensor};

// ---------------------------------------------------------------------------------------------
// Fused kernels against the CPU, on every device.

/// Five steps with fresh random gradients on parameters of odd shapes (plus one long vector to
/// cover many blocks): the parameters and every state tensor match the CPU's.
fn check_kernel_parity(name: &str, make: MakeF32, device: Device) {
    let _guard = device_lock();
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

fn sgd_kernel_matches_cpu(device: Device) {
    check_kernel_parity("sgd_kernel_matches_cpu", every_optimizer()[0].1, device);
}
kiln::test_device!(sgd_kernel_matches_cpu, gpu);

fn sgd_momentum_kernel_matches_cpu(device: Device) {
    check_kernel_parity(
        "sgd_momentum_kernel_matches_cpu",
        every_optimizer()[1].1,
        device,
    );
}
kiln::test_device!(sgd_momentum_kernel_matches_cpu, gpu);

fn sgd_nesterov_kernel_matches_cpu(device: Device) {
    check_kernel_parity(
        "sgd_nesterov_kernel_matches_cpu",
        every_optimizer()[2].1,
        device,
    );
}
kiln::test_device!(sgd_nesterov_kernel_matches_cpu, gpu);

fn rmsprop_kernel_matches_cpu(device: Device) {
    check_kernel_parity("rmsprop_kernel_matches_cpu", every_optimizer()[3].1, device);
}
kiln::test_device!(rmsprop_kernel_matches_cpu, gpu);

fn adam_kernel_matches_cpu(device: Device) {
    check_kernel_parity("adam_kernel_matches_cpu", every_optimizer()[4].1, device);
}
kiln::test_device!(adam_kernel_matches_cpu, gpu);

fn adamw_kernel_matches_cpu(device: Device) {
    check_kernel_parity("adamw_kernel_matches_cpu", every_optimizer()[5].1, device);
}
kiln::test_device!(adamw_kernel_matches_cpu, gpu);

/// The backend primitives directly, on every device, including both weight decays of `adam` at
/// once (which no optimizer type uses) and a late step count (bias corrections near 1).
fn backend_primitives_match_cpu(device: Device) {
    let _guard = device_lock();
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
    backend::rmsprop(
        &mut cw,
        &g,
        &mut cv,
        &backend::RmsPropStep::new(0.01, 0.9, 1e-6, 0.1),
    )
    .unwrap();
    backend::rmsprop(
        &mut dw,
        &on(&g),
        &mut dv,
        &backend::RmsPropStep::new(0.01, 0.9, 1e-6, 0.1),
    )
    .unwrap();
    backend::sgd_momentum(
        &mut cw,
        &g,
        &mut cm,
        &backend::MomentumStep::new(0.05, 0.5, 0.1).nesterov(),
    )
    .unwrap();
    backend::sgd_momentum(
        &mut dw,
        &on(&g),
        &mut dm,
        &backend::MomentumStep::new(0.05, 0.5, 0.1).nesterov(),
    )
    .unwrap();
    backend::sgd_momentum(
        &mut cw,
        &g,
        &mut cm,
        &backend::MomentumStep::new(0.05, 0.5, 0.1),
    )
    .unwrap();
    backend::sgd_momentum(
        &mut dw,
        &on(&g),
        &mut dm,
        &backend::MomentumStep::new(0.05, 0.5, 0.1),
    )
    .unwrap();
    backend::sgd(&mut cw, &g, 0.05, 0.1).unwrap();
    backend::sgd(&mut dw, &on(&g), 0.05, 0.1).unwrap();
    for (d, c) in [(&dw, &cw), (&dm, &cm), (&dv, &cv)] {
        assert_close(&values(d), &values(c), 1e-5, 1e-4);
    }
}
kiln::test_device!(backend_primitives_match_cpu, gpu);

/// Three steps, save; two more steps → A. A fresh optimizer (made with another lr), load the
/// saved state and the saved weights, the same two steps → B: B = A exactly, on the CPU and on
/// the devices (state saved on the CPU restores onto a device too).
fn saved_state_resumes_exactly(device: Device) {
    let _guard = device_lock();
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
        let run = |opt: &mut Optimizer, w: &mut Vec<Tensor>, steps: std::ops::Range<u64>| {
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
kiln::test_device!(saved_state_resumes_exactly);

#[test]
fn state_names_and_bad_states() {
    let p = [random(&[2, 3], 1), random(&[4], 2)];
    let names = |opt: &Optimizer| -> Vec<String> {
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
fn optimizer_steps_request_no_device_memory(device: Device) {
    let _guard = device_lock();
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
kiln::test_device!(optimizer_steps_request_no_device_memory, gpu);

// ---------------------------------------------------------------------------------------------
// Convergence.

/// Each optimizer minimizes Σ (w − target)² (gradient 2(w − target), computed on the host) from
/// w = 0 on the CPU, to within `tol` of the target in a fixed number of steps (AdamW's decay pulls
/// its end point slightly toward 0, hence its looser tolerance).
#[test]
fn every_optimizer_minimizes_a_quadratic() {
    let target = [1.5, -0.75, 0.25, 3.0, -2.0];
    let cases: Vec<(&str, Box<Optimizer>, u64, f64)> = {
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

// ---------------------------------------------------------------------------------------------
// Adam's epsilon, where it changes the step.

/// PyTorch's Adam step (torch.optim.Adam / AdamW, amsgrad off) in f64, written from its
/// documented algorithm: g' = g + wd·w; m = b1·m + (1 − b1)·g'; v = b2·v + (1 − b2)·g'²;
/// m̂ = m / (1 − b1^t); v̂ = v / (1 − b2^t); w = (1 − lr·wd_decoupled)·w − lr·m̂ / (sqrt(v̂) + eps).
/// With `eps_inside_root`, the denominator is sqrt(v̂ + eps) instead: the misplacement the test
/// must tell apart.
fn torch_adam(
    w: &mut [f64],
    g: &[f64],
    (m, v): (&mut [f64], &mut [f64]),
    hp: &AdamStep,
    eps_inside_root: bool,
) {
    let t = hp.step as i32;
    let (bc1, bc2) = (1.0 - hp.beta1.powi(t), 1.0 - hp.beta2.powi(t));
    for i in 0..w.len() {
        let g = g[i] + hp.weight_decay * w[i];
        m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g;
        v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g * g;
        let (m_hat, v_hat) = (m[i] / bc1, v[i] / bc2);
        let denom = if eps_inside_root {
            (v_hat + hp.eps).sqrt()
        } else {
            v_hat.sqrt() + hp.eps
        };
        w[i] = (1.0 - hp.lr * hp.decoupled_weight_decay) * w[i] - hp.lr * m_hat / denom;
    }
}

/// Three steps of the fused Adam kernel (and the CPU twin) where eps is as large as sqrt(v̂):
/// gradients of 1e-8..1e-6 with PyTorch's default eps 1e-8, and gradients of 1e-4..1e-1 with
/// eps 1e-2 (plus both weight decays), against [`torch_adam`]. Placing eps inside the root
/// changes nearly every element of these cases by far more than the tolerance (checked here
/// too, so the test keeps its power); on the CPU and every device.
fn adam_epsilon_is_added_to_the_root_of_v_hat(device: Device) {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let _guard = device_lock();
    let n = 1027; // quads and a tail of 3
    let cases = [
        (
            "small gradients, eps 1e-8",
            (1e-8, 1e-6),
            1e-3,
            1e-8,
            (0.0, 0.0),
        ),
        ("eps 1e-2", (1e-4, 1e-1), 1e-2, 1e-2, (1e-3, 0.1)),
    ];
    for (c, &(name, (g_lo, g_hi), lr, eps, (wd, decoupled))) in cases.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(0xada0 + c as u64);
        let w0: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        // Magnitudes log-uniform in [g_lo, g_hi), random signs, fresh for each step.
        let grads: Vec<Vec<f64>> = (0..3)
            .map(|_| {
                (0..n)
                    .map(|_| {
                        let mag: f64 = g_lo * f64::powf(g_hi / g_lo, rng.random_range(0.0..1.0));
                        if rng.random_bool(0.5) {
                            mag
                        } else {
                            -mag
                        }
                    })
                    .collect()
            })
            .collect();
        // f32 inputs: the reference starts from the same rounded values.
        let w0: Vec<f64> = w0.iter().map(|&x| f64::from(x as f32)).collect();
        let grads: Vec<Vec<f64>> = grads
            .iter()
            .map(|g| g.iter().map(|&x| f64::from(x as f32)).collect())
            .collect();
        let hp = |step| AdamStep {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps,
            weight_decay: wd,
            decoupled_weight_decay: decoupled,
            step,
        };
        let reference = |eps_inside_root| {
            let (mut w, mut m, mut v) = (w0.clone(), vec![0.0; n], vec![0.0; n]);
            for (t, g) in grads.iter().enumerate() {
                torch_adam(
                    &mut w,
                    g,
                    (&mut m, &mut v),
                    &hp(t as u64 + 1),
                    eps_inside_root,
                );
            }
            (w, m, v)
        };
        let (w_ref, m_ref, v_ref) = reference(false);
        let (w_wrong, _, _) = reference(true);
        let (atol, rtol) = (5e-7, 1e-6);
        let told_apart = w_wrong
            .iter()
            .zip(&w_ref)
            .filter(|(a, b)| (*a - *b).abs() > atol + rtol * b.abs())
            .count();
        assert!(
            told_apart * 100 >= 95 * n,
            "{name}: eps inside the root moves only {told_apart} of {n} elements past the tolerance"
        );
        let f32s = |v: &[f64]| -> Vec<f32> { v.iter().map(|&x| x as f32).collect() };
        let on = |v: &[f64]| {
            Tensor::from_vec(f32s(v), &[n], Device::Cpu)
                .unwrap()
                .to_device(device)
                .unwrap()
        };
        let (mut w, mut m, mut v) = (on(&w0), on(&vec![0.0; n]), on(&vec![0.0; n]));
        for (t, g) in grads.iter().enumerate() {
            backend::adam(&mut w, &on(g), &mut m, &mut v, &hp(t as u64 + 1)).unwrap();
        }
        eprintln!("checking adam eps, {name}, on {device}");
        assert_close(&values(&w), &w_ref, atol, rtol);
        // Moments: f32 rounding of sums of gradients that partly cancel, relative to the
        // largest gradient.
        assert_close(&values(&m), &m_ref, 1e-6 * g_hi, 1e-5);
        assert_close(&values(&v), &v_ref, 1e-6 * g_hi * g_hi, 1e-5);
    }
}
kiln::test_device!(adam_epsilon_is_added_to_the_root_of_v_hat);
