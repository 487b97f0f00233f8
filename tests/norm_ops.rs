//! Dropout and batch normalization: hand-computed values, f64 gradient checks, running statistics,
//! parity of every device with the CPU, the dropout mask's reproducibility, and bad input.

use kiln::backend::RawTensor;
use kiln::backend::{self, BatchNormStats};
use kiln::cpu::dropout::{dropout_keeps, dropout_threshold};
use kiln::ops::{self, BatchNorm2d};
use kiln::testing::{assert_close, check_parity, gradcheck, random_away_from_zero, random_vec};
use kiln::{DType, Device, Error, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// f32 CPU tensor, values uniform in ±[1e-3, 1).
fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec(random_away_from_zero(&mut rng, n, 1e-3), shape, Device::Cpu).unwrap()
}

/// f64 CPU tensor, values `offset + spread·u` with u uniform in [-1, 1).
fn random64(shape: &[usize], seed: u64, offset: f64, spread: f64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let values = random_vec::<f64>(&mut rng, shape.iter().product())
        .into_iter()
        .map(|v| offset + spread * v)
        .collect();
    Tensor::from_vec(values, shape, Device::Cpu).unwrap()
}

fn f32s(t: &RawTensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_vec::<f64>().unwrap()
}

/// Per-channel mean and biased variance of an NCHW f64 tensor, by a plain loop.
fn channel_stats(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = <[usize; 4]>::try_from(x.shape()).unwrap();
    let v = x.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
    let plane = h * w;
    let values = |ch: usize| -> Vec<f64> {
        (0..n)
            .flat_map(|i| v[(i * c + ch) * plane..(i * c + ch + 1) * plane].to_vec())
            .collect()
    };
    (0..c)
        .map(|ch| {
            let vals = values(ch);
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / vals.len() as f64;
            (m, var)
        })
        .unzip()
}

/// A layer with the given γ and β (leaves from a gradcheck or a parity run), on their device and dtype.
fn layer_with(gamma: &Tensor, beta: &Tensor) -> kiln::Result<BatchNorm2d> {
    let mut bn = BatchNorm2d::with_dtype(gamma.numel(), gamma.dtype(), gamma.device())?;
    bn.gamma = gamma.clone();
    bn.beta = beta.clone();
    Ok(bn)
}

// ---------------------------------------------------------------------------------------------
// Batch norm: values

/// x [2, 2, 1, 2]: channel 0 holds 1, 3 (image 0) and 5, 7 (image 1): mean 4, biased variance
/// (9 + 1 + 1 + 9)/4 = 5, x̂ = (−3, −1, 1, 3)/√5; channel 1 holds 2, 4, 2, 4: mean 3, variance 1,
/// x̂ = (−1, 1, −1, 1). With eps = 0, γ = (2, 0.5), β = (1, −1): y = γ·x̂ + β. Running statistics
/// after this step (momentum 0.1, from mean 0 and variance 1): mean 0.1·(4, 3) = (0.4, 0.3), variance
/// 0.9 + 0.1·unbiased = 0.9 + 0.1·(20/3, 4/3).
#[test]
fn batch_norm_output_by_hand() {
    let x = Tensor::from_vec(
        vec![1.0_f32, 3.0, 2.0, 4.0, 5.0, 7.0, 2.0, 4.0],
        &[2, 2, 1, 2],
        Device::Cpu,
    )
    .unwrap();
    let mut bn = BatchNorm2d::new(2, Device::Cpu).unwrap();
    bn.gamma = Tensor::from_vec(vec![2.0_f32, 0.5], &[2], Device::Cpu)
        .unwrap()
        .with_grad();
    bn.beta = Tensor::from_vec(vec![1.0_f32, -1.0], &[2], Device::Cpu)
        .unwrap()
        .with_grad();
    bn.eps = 0.0;
    let y = bn.forward(&x, true).unwrap();
    let s = 5.0_f32.sqrt();
    assert_close(
        &f32s(&y),
        &[
            1.0 - 6.0 / s,
            1.0 - 2.0 / s,
            -1.5,
            -0.5,
            1.0 + 2.0 / s,
            1.0 + 6.0 / s,
            -1.5,
            -0.5,
        ],
        1e-6,
        1e-6,
    );
    assert_close(&f32s(bn.running_mean()), &[0.4, 0.3], 1e-7, 1e-6);
    assert_close(
        &f32s(bn.running_var()),
        &[0.9 + 2.0 / 3.0, 0.9 + 0.4 / 3.0],
        1e-7,
        1e-6,
    );
    // Evaluation with running mean (0.4, 0.3) and variance (1.5667, 1.0333), eps 0: x = 1 in
    // channel 0 gives 2·(1 − 0.4)/√1.5667 + 1.
    let y = bn.forward(&x, false).unwrap();
    let expected = 2.0 * (1.0 - 0.4) / (0.9_f32 + 2.0 / 3.0).sqrt() + 1.0;
    assert_close(&f32s(&y)[..1], &[expected], 1e-6, 1e-6);
    // The defaults are PyTorch's.
    let fresh = BatchNorm2d::new(3, Device::Cpu).unwrap();
    assert_eq!((fresh.momentum, fresh.eps), (0.1, 1e-5));
    assert_eq!(f32s(&fresh.gamma), [1.0; 3]);
    assert_eq!(f32s(&fresh.beta), [0.0; 3]);
    assert_eq!(f32s(fresh.running_mean()), [0.0; 3]);
    assert_eq!(f32s(fresh.running_var()), [1.0; 3]);
    assert!(fresh.gamma.needs_grad() && fresh.beta.needs_grad());
}

/// The training output has per-channel mean β and (biased) variance γ²·var/(var + eps).
#[test]
fn batch_norm_training_output_is_normalized() {
    let x = random64(&[3, 4, 5, 7], 1, 0.5, 2.0);
    let mut bn = BatchNorm2d::with_dtype(4, DType::F64, Device::Cpu).unwrap();
    let y = bn.forward(&x, true).unwrap();
    let (xm, xv) = channel_stats(&x);
    let (ym, yv) = channel_stats(&y);
    assert_close(&ym, &[0.0; 4], 1e-12, 0.0);
    let expected: Vec<f64> = xv.iter().map(|v| v / (v + 1e-5)).collect();
    assert_close(&yv, &expected, 1e-12, 1e-12);
    assert!(
        xm.iter().any(|m| m.abs() > 0.05),
        "the input was not centred"
    );
}

/// Two training steps with momentum 0.3 follow r ← 0.7·r + 0.3·s, with the batch mean for the
/// mean and the unbiased variance var·M/(M − 1) (M = N·H·W = 3·3·3 = 27) for the variance.
#[test]
fn running_statistics_after_two_steps() {
    let mut bn = BatchNorm2d::with_dtype(2, DType::F64, Device::Cpu).unwrap();
    bn.momentum = 0.3;
    let x1 = random64(&[3, 2, 3, 3], 2, 0.7, 1.0);
    let x2 = random64(&[3, 2, 3, 3], 3, -2.0, 3.0);
    bn.forward(&x1, true).unwrap();
    bn.forward(&x2, true).unwrap();
    let unbiased = 27.0 / 26.0;
    let (m1, v1) = channel_stats(&x1);
    let (m2, v2) = channel_stats(&x2);
    let mean: Vec<f64> = (0..2)
        .map(|c| 0.7 * (0.7 * 0.0 + 0.3 * m1[c]) + 0.3 * m2[c])
        .collect();
    let var: Vec<f64> = (0..2)
        .map(|c| 0.7 * (0.7 * 1.0 + 0.3 * unbiased * v1[c]) + 0.3 * unbiased * v2[c])
        .collect();
    assert_close(&f64s(bn.running_mean()), &mean, 1e-14, 1e-13);
    assert_close(&f64s(bn.running_var()), &var, 1e-14, 1e-13);
    // Evaluation changes nothing.
    bn.forward(&x1, false).unwrap();
    assert_close(&f64s(bn.running_mean()), &mean, 0.0, 0.0);
}

/// Mean 1000 and spread 0.1 in f32 on every device: the two-pass statistics keep the variance
/// (about 0.0033) to f32 rounding, where E[x²] − E[x]² would be off by more than the variance itself.
fn batch_norm_statistics_survive_a_large_mean(device: Device) {
    let x = random64(&[3, 2, 17, 19], 4, 1000.0, 0.1)
        .to_dtype(DType::F32)
        .unwrap();
    let (m, v) = channel_stats(&x);
    let (mean, var) = backend::batch_norm_stats(&x.to_device(device).unwrap()).unwrap();
    let to64 = |t: &RawTensor| f32s(t).into_iter().map(f64::from).collect::<Vec<_>>();
    eprintln!("large mean on {device}");
    assert_close(&to64(&mean), &m, 1e-3, 0.0);
    assert_close(&to64(&var), &v, 0.0, 1e-3);
}
kiln::test_device!(batch_norm_statistics_survive_a_large_mean);

// ---------------------------------------------------------------------------------------------
// Batch norm: gradients (f64 central differences through the tape)

#[test]
fn batch_norm_training_gradients() {
    for (i, shape) in [[3, 2, 3, 3], [1, 3, 2, 3], [2, 1, 1, 3]]
        .iter()
        .enumerate()
    {
        let c = shape[1];
        let seed = 10 * i as u64;
        let x = random64(shape, seed, 0.3, 1.0);
        let gamma = random64(&[c], seed + 1, 1.0, 0.5);
        let beta = random64(&[c], seed + 2, 0.0, 1.0);
        gradcheck("batch norm training", &[x, gamma, beta], |t| {
            layer_with(&t[1], &t[2])?.forward(&t[0], true)
        });
    }
}

#[test]
fn batch_norm_eval_gradients() {
    let (x, gamma, beta) = (
        random64(&[3, 2, 3, 3], 20, 0.3, 1.0),
        random64(&[2], 21, 1.0, 0.5),
        random64(&[2], 22, 0.0, 1.0),
    );
    let running_mean = random64(&[2], 23, 0.0, 0.5);
    let running_var = random64(&[2], 24, 1.0, 0.5);
    gradcheck("batch norm eval", &[x, gamma, beta], |t| {
        let mut bn = layer_with(&t[1], &t[2])?;
        bn.set_running_stats(running_mean.clone(), running_var.clone())?;
        bn.forward(&t[0], false)
    });
}

/// Only x needs a gradient: dγ and dβ are still returned, and dx matches the full computation.
#[test]
fn batch_norm_gradient_of_x_alone() {
    let x = random64(&[2, 3, 3, 5], 30, 0.0, 1.0);
    gradcheck("batch norm, x only", &[x], |t| {
        BatchNorm2d::with_dtype(3, DType::F64, Device::Cpu)?.forward(&t[0], true)
    });
}

// ---------------------------------------------------------------------------------------------
// Batch norm: parity with the CPU on every device

const ATOL: f64 = 2e-5;
const RTOL: f64 = 2e-4;

fn batch_norm_matches_cpu(device: Device) {
    // Odd sizes; batch 1; a channel with more than 256 values (the per-channel loop wraps).
    for (i, shape) in [[3, 5, 7, 9], [1, 3, 5, 3], [2, 3, 17, 19]]
        .iter()
        .enumerate()
    {
        let c = shape[1];
        let seed = 40 + 10 * i as u64;
        let x = random64(shape, seed, 0.5, 2.0)
            .to_dtype(DType::F32)
            .unwrap();
        let gamma = random64(&[c], seed + 1, 1.0, 0.5)
            .to_dtype(DType::F32)
            .unwrap();
        let beta = random(&[c], seed + 2);
        let inputs = [x.clone(), gamma.clone(), beta.clone()];
        check_parity("batch norm training", device, &inputs, ATOL, RTOL, |t| {
            layer_with(&t[1], &t[2])?.forward(&t[0], true)
        });
        let running = (random(&[c], seed + 3), random64(&[c], seed + 4, 1.0, 0.5));
        let running = (running.0, running.1.to_dtype(DType::F32).unwrap());
        check_parity("batch norm eval", device, &inputs, ATOL, RTOL, |t| {
            let mut bn = layer_with(&t[1], &t[2])?;
            let d = t[0].device();
            bn.set_running_stats(running.0.to_device(d)?, running.1.to_device(d)?)?;
            bn.forward(&t[0], false)
        });
        // Running statistics after two steps.
        let x2 = random64(shape, seed + 5, -1.0, 0.5)
            .to_dtype(DType::F32)
            .unwrap();
        let mut cpu = BatchNorm2d::new(c, Device::Cpu).unwrap();
        let mut dev = BatchNorm2d::new(c, device).unwrap();
        for x in [&x, &x2] {
            cpu.forward(x, true).unwrap();
            dev.forward(&x.to_device(device).unwrap(), true).unwrap();
        }
        eprintln!("running statistics on {device}");
        assert_close(
            &f32s(dev.running_mean()),
            &f32s(cpu.running_mean()),
            ATOL,
            RTOL,
        );
        assert_close(
            &f32s(dev.running_var()),
            &f32s(cpu.running_var()),
            ATOL,
            RTOL,
        );
    }
}
kiln::test_device!(batch_norm_matches_cpu, gpu);

/// The backward primitive alone, asking for dx or not.
fn batch_norm_backward_primitive_matches_cpu(device: Device) {
    let (x, dy) = (random(&[2, 3, 5, 7], 60), random(&[2, 3, 5, 7], 61));
    let (gamma, mean) = (random(&[3], 62), random(&[3], 63));
    let var = random64(&[3], 64, 1.0, 0.5).to_dtype(DType::F32).unwrap();
    let on = |t: &RawTensor| t.to_device(device).unwrap();
    let (dmean, dvar, dgamma) = (on(&mean), on(&var), on(&gamma));
    for training in [true, false] {
        let cpu_stats = BatchNormStats {
            mean: &mean,
            var: &var,
            gamma: &gamma,
            eps: 1e-5,
        };
        let dev_stats = BatchNormStats {
            mean: &dmean,
            var: &dvar,
            gamma: &dgamma,
            eps: 1e-5,
        };
        let cpu = backend::batch_norm_bwd(&dy, &x, &cpu_stats, training, true).unwrap();
        let dev = backend::batch_norm_bwd(&on(&dy), &on(&x), &dev_stats, training, false).unwrap();
        assert!(dev.dx.is_none());
        assert_close(&f32s(&dev.dgamma), &f32s(&cpu.dgamma), ATOL, RTOL);
        assert_close(&f32s(&dev.dbeta), &f32s(&cpu.dbeta), ATOL, RTOL);
        let dev = backend::batch_norm_bwd(&on(&dy), &on(&x), &dev_stats, training, true).unwrap();
        assert_close(
            &f32s(dev.dx.as_ref().unwrap()),
            &f32s(cpu.dx.as_ref().unwrap()),
            ATOL,
            RTOL,
        );
    }
}
kiln::test_device!(batch_norm_backward_primitive_matches_cpu, gpu);

// ---------------------------------------------------------------------------------------------
// Dropout

/// The mask depends only on (seed, index): the same on the CPU in f32 and f64 and on every device,
/// bit for bit, and so are the outputs (one f32 multiply each).
fn dropout_mask_is_identical_on_every_device(device: Device) {
    let x = random(&[3, 7, 37, 131], 70);
    let (y, mask) = backend::dropout_fwd(&x, 0.37, 12345).unwrap();
    let (_, mask64) = backend::dropout_fwd(&x.to_dtype(DType::F64).unwrap(), 0.37, 12345).unwrap();
    let mask = mask.to_vec::<u8>().unwrap();
    assert_eq!(mask, mask64.to_vec::<u8>().unwrap());
    let expected: Vec<u8> = (0..x.numel() as u64)
        .map(|i| u8::from(dropout_keeps(12345, i, dropout_threshold(0.37))))
        .collect();
    assert_eq!(mask, expected);
    if device.is_gpu() {
        let (gy, gmask) = backend::dropout_fwd(&x.to_device(device).unwrap(), 0.37, 12345).unwrap();
        assert_eq!(gmask.to_vec::<u8>().unwrap(), mask, "mask on {device}");
        assert_eq!(f32s(&gy), f32s(&y), "output on {device}");
        let dy = random(x.shape(), 71);
        let dx = backend::dropout_bwd(
            &dy,
            &Tensor::from_vec(mask.clone(), x.shape(), Device::Cpu).unwrap(),
            0.37,
        )
        .unwrap();
        let gdx = backend::dropout_bwd(&dy.to_device(device).unwrap(), &gmask, 0.37).unwrap();
        assert_eq!(f32s(&gdx), f32s(&dx), "gradient on {device}");
        check_parity(
            "dropout",
            device,
            &[random(&[2, 3, 5, 7], 72)],
            0.0,
            0.0,
            |t| ops::dropout(&t[0], 0.5, true, 99),
        );
    }
}
kiln::test_device!(dropout_mask_is_identical_on_every_device);

/// Over 10⁶ + 3 elements the number kept is Binomial(n, 1 − p): within 5 standard deviations
/// √(n·p·(1 − p)) of n·(1 − p) (a false alarm has probability below 10⁻⁶).
#[test]
fn dropout_kept_fraction_matches_one_minus_p() {
    let n = 1_000_003;
    let x = Tensor::from_vec(vec![1.0_f32; n], &[n], Device::Cpu).unwrap();
    for (p, seed) in [(0.1, 1), (0.5, 2), (0.9, 3), (0.37, u64::MAX)] {
        let (y, mask) = backend::dropout_fwd(&x, p, seed).unwrap();
        let kept = mask
            .to_vec::<u8>()
            .unwrap()
            .iter()
            .map(|&m| m as f64)
            .sum::<f64>();
        let expected = n as f64 * (1.0 - p);
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (kept - expected).abs() <= 5.0 * sd,
            "p = {p}: kept {kept}, expected {expected} ± {sd}"
        );
        // Survivors are scaled by 1/(1 − p), so the mean of y stays near 1.
        let mean = f32s(&y).iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!(
            (mean - 1.0).abs() <= 5.0 * sd / expected,
            "p = {p}: mean {mean}"
        );
    }
    // Another seed, another mask; the same seed, the same mask.
    let a = backend::dropout_fwd(&x, 0.5, 7)
        .unwrap()
        .1
        .to_vec::<u8>()
        .unwrap();
    let b = backend::dropout_fwd(&x, 0.5, 8)
        .unwrap()
        .1
        .to_vec::<u8>()
        .unwrap();
    let a2 = backend::dropout_fwd(&x, 0.5, 7)
        .unwrap()
        .1
        .to_vec::<u8>()
        .unwrap();
    assert_ne!(a, b);
    assert_eq!(a, a2);
}

/// The gradient uses the forward pass's mask: dx = dy/(1 − p) exactly where y = x/(1 − p) ≠ 0.
#[test]
fn dropout_gradient_uses_the_same_mask() {
    let x = random(&[5, 3, 7, 11], 80)
        .to_dtype(DType::F64)
        .unwrap()
        .with_grad();
    let r = random64(x.shape(), 81, 0.0, 1.0);
    let y = ops::dropout(&x, 0.4, true, 2024).unwrap();
    let grads = ops::sum(&ops::mul(&y, &r).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let dx = f64s(grads.get(&x).unwrap());
    let (xs, ys, rs) = (f64s(&x), f64s(&y), f64s(&r));
    let mut kept = 0;
    for i in 0..xs.len() {
        if ys[i] != 0.0 {
            kept += 1;
            assert_eq!(ys[i], xs[i] * (1.0 / 0.6), "y[{i}]");
            assert_eq!(dx[i], rs[i] * (1.0 / 0.6), "dx[{i}]");
        } else {
            assert_eq!(dx[i], 0.0, "dx[{i}]");
        }
    }
    assert!(kept > 0 && kept < xs.len());
    gradcheck("dropout", &[random64(&[3, 5, 7], 82, 0.0, 1.0)], |t| {
        ops::dropout(&t[0], 0.3, true, 5)
    });
}

/// Evaluation (any p) and p = 0 are the identity: the same values, the gradient passes through.
/// p = 1 gives zeros and zero gradients, with no division by zero.
fn dropout_eval_is_identity_and_the_ends_of_p(device: Device) {
    let x = random(&[2, 3, 5], 90).with_grad();
    let r = random(&[2, 3, 5], 91);
    for (p, training) in [(0.5, false), (1.0, false), (0.0, true)] {
        let y = ops::dropout(&x, p, training, 1).unwrap();
        assert_eq!(f32s(&y), f32s(&x));
        let grads = ops::sum(&ops::mul(&y, &r).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(f32s(grads.get(&x).unwrap()), f32s(&r));
    }
    let y = ops::dropout(&x, 1.0, true, 1).unwrap();
    assert_eq!(f32s(&y), vec![0.0; 30]);
    let grads = ops::sum(&ops::mul(&y, &r).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(f32s(grads.get(&x).unwrap()), vec![0.0; 30]);
    if device.is_gpu() {
        let d = x.to_device(device).unwrap();
        assert_eq!(
            f32s(&ops::dropout(&d, 1.0, true, 1).unwrap()),
            vec![0.0; 30]
        );
        assert_eq!(f32s(&ops::dropout(&d, 0.0, true, 1).unwrap()), f32s(&x));
        assert_eq!(f32s(&ops::dropout(&d, 0.7, false, 1).unwrap()), f32s(&x));
    }
}
kiln::test_device!(dropout_eval_is_identity_and_the_ends_of_p);

// ---------------------------------------------------------------------------------------------
// Errors

fn bad_parameters_are_errors(device: Device) {
    let x = random(&[2, 3, 4, 5], 100);
    for p in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        for training in [true, false] {
            let err = ops::dropout(&x, p, training, 0).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidArgument {
                        what: "dropout probability",
                        ..
                    }
                ),
                "{err}"
            );
        }
        assert!(backend::dropout_fwd(&x, p, 0).is_err());
    }
    let (_, mask) = backend::dropout_fwd(&x, 0.5, 0).unwrap();
    assert!(backend::dropout_bwd(&random(&[2, 3, 4, 6], 1), &mask, 0.5).is_err());
    assert!(backend::dropout_bwd(&x, &x, 0.5).is_err(), "an f32 mask");

    // Channel mismatch.
    let mut bn = BatchNorm2d::new(4, Device::Cpu).unwrap();
    let err = bn.forward(&x, true).unwrap_err();
    assert!(err.to_string().contains("4 channels"), "{err}");
    assert!(bn.forward(&x, false).is_err());
    // Not 4-d.
    let mut bn = BatchNorm2d::new(3, Device::Cpu).unwrap();
    for shape in [&[2, 3, 20][..], &[2, 3, 4, 5, 1][..], &[3][..]] {
        let err = bn.forward(&random(shape, 2), true).unwrap_err();
        assert!(err.to_string().contains("4-d"), "{err}");
    }
    assert!(backend::batch_norm_stats(&random(&[6, 20], 3)).is_err());
    // One value per channel cannot be normalized with batch statistics (evaluation is fine).
    let single = random(&[1, 3, 1, 1], 4);
    let err = bn.forward(&single, true).unwrap_err();
    assert!(err.to_string().contains("more than one value"), "{err}");
    assert!(bn.forward(&single, false).is_ok());
    // Hyperparameters and construction.
    bn.momentum = 1.5;
    assert!(bn.forward(&x, true).is_err());
    bn.momentum = 0.1;
    bn.eps = -1.0;
    assert!(bn.forward(&x, true).is_err());
    bn.eps = 1e-5;
    assert!(BatchNorm2d::new(0, Device::Cpu).is_err());
    assert!(bn
        .set_running_stats(random(&[4], 5), random(&[3], 6))
        .is_err());
    // Parameters of another dtype than the input.
    let err = bn
        .forward(&x.to_dtype(DType::F64).unwrap(), true)
        .unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    // The primitives check their per-channel tensors.
    let (mean, var, gamma) = (random(&[3], 7), random(&[3], 8), random(&[2], 9));
    let stats = BatchNormStats {
        mean: &mean,
        var: &var,
        gamma: &gamma,
        eps: 1e-5,
    };
    assert!(backend::batch_norm_fwd(&x, &stats, &mean).is_err());
    assert!(backend::batch_norm_bwd(&x, &x, &stats, true, true).is_err());
    // Parameters on another device than the input.
    if device.is_gpu() {
        let mut bn = BatchNorm2d::new(3, device).unwrap();
        let err = bn.forward(&x, true).unwrap_err();
        assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
    }
}
kiln::test_device!(bad_parameters_are_errors);
