//! Losses (MSE, sum of squared errors, binary cross-entropy on logits, sums of losses), the L2
//! penalty, and concat/narrow: hand-computed values, f64 gradient checks through the tape, parity
//! of outputs and gradients on every device under test, and errors for bad input.

use kiln::testing::{assert_close, check_parity, gradcheck, random_away_from_zero, random_vec};
use kiln::{backend, ops, DType, Device, Error, Tensor};
use ndarray::{concatenate, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

/// f64 values uniform in [-scale, scale).
fn random64(shape: &[usize], scale: f64, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f64> = random_vec::<f64>(&mut rng, shape.iter().product())
        .iter()
        .map(|x| scale * x)
        .collect();
    Tensor::from_vec(v, shape, Device::Cpu).unwrap()
}

/// f64 values uniform in [0, 1): targets of a binary cross-entropy.
fn unit64(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f64> = (0..shape.iter().product())
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    Tensor::from_vec(v, shape, Device::Cpu).unwrap()
}

/// f32 values in ±[1e-3, 1)·scale.
fn random32(shape: &[usize], scale: f32, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = random_away_from_zero(&mut rng, shape.iter().product(), 1e-3)
        .iter()
        .map(|x| scale * x)
        .collect();
    Tensor::from_vec(v, shape, Device::Cpu).unwrap()
}

fn unit32(shape: &[usize], seed: u64) -> Tensor {
    unit64(shape, seed).to_dtype(DType::F32).unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn on(t: &Tensor, d: Device) -> Tensor {
    t.to_device(d).unwrap()
}

// ---- Hand-computed values, on every device.

/// mse([1, 2, 3], [1, 0, 0]) = (0 + 4 + 9)/3; d/dp = 2(p − t)/3 = (0, 4/3, 2), d/dt = −d/dp.
/// The sum of squared errors is 13 with gradients ±2(p − t) = ±(0, 4, 6).
fn squared_error_losses_by_hand(device: Device) {
    let p = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], device)
        .unwrap()
        .with_grad();
    let t = Tensor::from_vec(vec![1.0f32, 0.0, 0.0], &[3], device)
        .unwrap()
        .with_grad();
    let loss = ops::mse_loss(&p, &t).unwrap();
    assert_eq!(loss.shape(), &[] as &[usize]);
    assert_eq!(loss.device(), device);
    assert_close(&[loss.scalar().unwrap()], &[13.0 / 3.0], 1e-6, 1e-6);
    let g = loss.backward().unwrap();
    assert_close(
        &f32s(g.get(&p).unwrap()),
        &[0.0, 4.0 / 3.0, 2.0],
        1e-6,
        1e-6,
    );
    assert_close(
        &f32s(g.get(&t).unwrap()),
        &[0.0, -4.0 / 3.0, -2.0],
        1e-6,
        1e-6,
    );

    let loss = ops::sum_squared_error(&p, &t).unwrap();
    assert_eq!(loss.scalar().unwrap(), 13.0);
    let g = loss.backward().unwrap();
    assert_eq!(f32s(g.get(&p).unwrap()), [0.0, 4.0, 6.0]);
    assert_eq!(f32s(g.get(&t).unwrap()), [0.0, -4.0, -6.0]);
}
kiln::test_device!(squared_error_losses_by_hand);

/// z = 0, t = 1: ln(1 + e^0) = ln 2, d/dz = σ(0) − 1 = −1/2, d/dt = −z = 0.
/// z = (1000, −1000, 1000, −1000), t = (1, 1, 0, 1/4): losses 1000·(1 − t) for z = 1000 and 1000·t
/// for z = −1000, i.e. (0, 1000, 1000, 250), mean 562.5; d/dz = (σ(z) − t)/4 with σ(±1000) = 1, 0;
/// d/dt = −z/4. The textbook form −t·ln σ − (1 − t)·ln(1 − σ) gives inf or NaN here.
fn bce_with_logits_by_hand_and_at_large_logits(device: Device) {
    let z = Tensor::from_vec(vec![0.0f32], &[1], device)
        .unwrap()
        .with_grad();
    let t = Tensor::from_vec(vec![1.0f32], &[1], device)
        .unwrap()
        .with_grad();
    let loss = ops::binary_cross_entropy_with_logits(&z, &t).unwrap();
    assert_close(&[loss.scalar().unwrap()], &[2f64.ln()], 1e-7, 1e-7);
    let g = loss.backward().unwrap();
    assert_eq!(f32s(g.get(&z).unwrap()), [-0.5]);
    assert_eq!(f32s(g.get(&t).unwrap()), [0.0]);

    let z = Tensor::from_vec(vec![1000.0f32, -1000.0, 1000.0, -1000.0], &[2, 2], device)
        .unwrap()
        .with_grad();
    let t = Tensor::from_vec(vec![1.0f32, 1.0, 0.0, 0.25], &[2, 2], device)
        .unwrap()
        .with_grad();
    let loss = ops::binary_cross_entropy_with_logits(&z, &t).unwrap();
    assert_eq!(loss.scalar().unwrap(), 562.5);
    let g = loss.backward().unwrap();
    assert_eq!(f32s(g.get(&z).unwrap()), [0.0, -0.25, 0.25, -0.0625]);
    assert_eq!(f32s(g.get(&t).unwrap()), [-250.0, 250.0, -250.0, 250.0]);
}
kiln::test_device!(bce_with_logits_by_hand_and_at_large_logits);

/// Against the textbook form in f64, where it is accurate: z = 2, t = 0.25 gives
/// ln(1 + e²) − 0.5 = 1.626928011...; averaged with z = −0.5, t = 0.7: ln(1 + e^−0.5) + 0.35.
#[test]
fn bce_with_logits_matches_the_textbook_form() {
    let z = Tensor::from_vec(vec![2.0f64, -0.5], &[2], Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![0.25f64, 0.7], &[2], Device::Cpu).unwrap();
    let loss = ops::binary_cross_entropy_with_logits(&z, &t).unwrap();
    let textbook = |z: f64, t: f64| {
        let s = 1.0 / (1.0 + (-z).exp());
        -t * s.ln() - (1.0 - t) * (1.0 - s).ln()
    };
    let expected = (textbook(2.0, 0.25) + textbook(-0.5, 0.7)) / 2.0;
    let by_hand = ((1.0 + 2f64.exp()).ln() - 0.5 + (1.0 + (-0.5f64).exp()).ln() + 0.35) / 2.0;
    assert_close(&[loss.scalar().unwrap()], &[expected], 1e-15, 1e-14);
    assert_close(&[expected], &[by_hand], 1e-15, 1e-14);
}

/// 2·(13/3) + (−0.5)·ln 2 + mse again (so it counts twice): gradients add through ops::add/scale.
fn sums_of_losses_by_hand(device: Device) {
    let p = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], device)
        .unwrap()
        .with_grad();
    let t = Tensor::from_vec(vec![1.0f32, 0.0, 0.0], &[3], device).unwrap();
    let z = Tensor::from_vec(vec![0.0f32], &[1], device)
        .unwrap()
        .with_grad();
    let one = Tensor::from_vec(vec![1.0f32], &[1], device).unwrap();
    let mse = ops::mse_loss(&p, &t).unwrap();
    let bce = ops::binary_cross_entropy_with_logits(&z, &one).unwrap();

    let total = ops::sum_losses(&[&mse, &bce, &mse]).unwrap();
    assert_eq!(total.shape(), &[] as &[usize]);
    assert_close(
        &[total.scalar().unwrap()],
        &[26.0 / 3.0 + 2f64.ln()],
        1e-6,
        1e-6,
    );
    let g = total.backward().unwrap();
    assert_close(
        &f32s(g.get(&p).unwrap()),
        &[0.0, 8.0 / 3.0, 4.0],
        1e-6,
        1e-6,
    );
    assert_eq!(f32s(g.get(&z).unwrap()), [-0.5]);
    assert!(g.get(&t).is_none(), "the target needs no gradient");

    let mse = ops::mse_loss(&p, &t).unwrap();
    let bce = ops::binary_cross_entropy_with_logits(&z, &one).unwrap();
    let total = ops::weighted_sum_losses(&[(&mse, 2.0), (&bce, -0.5)]).unwrap();
    assert_close(
        &[total.scalar().unwrap()],
        &[26.0 / 3.0 - 0.5 * 2f64.ln()],
        1e-6,
        1e-6,
    );
    let g = total.backward().unwrap();
    assert_close(
        &f32s(g.get(&p).unwrap()),
        &[0.0, 8.0 / 3.0, 4.0],
        1e-6,
        1e-6,
    );
    assert_eq!(f32s(g.get(&z).unwrap()), [0.25]);
}
kiln::test_device!(sums_of_losses_by_hand);

/// weight/2·(‖a‖² + ‖b‖²) with a = (1, −2), b = (3): 0.5/2·(5 + 9) = 3.5; gradient 0.5·p.
fn l2_penalty_by_hand(device: Device) {
    let a = Tensor::from_vec(vec![1.0f32, -2.0], &[2], device)
        .unwrap()
        .with_grad();
    let b = Tensor::from_vec(vec![3.0f32], &[1, 1], device)
        .unwrap()
        .with_grad();
    let penalty = ops::l2_penalty(&[&a, &b], 0.5).unwrap();
    assert_eq!(penalty.shape(), &[] as &[usize]);
    assert_eq!(penalty.scalar().unwrap(), 3.5);
    let g = penalty.backward().unwrap();
    assert_eq!(f32s(g.get(&a).unwrap()), [0.5, -1.0]);
    assert_eq!(f32s(g.get(&b).unwrap()), [1.5]);
    let zero = ops::l2_penalty(&[&a], 0.0).unwrap();
    assert_eq!(zero.scalar().unwrap(), 0.0);
}
kiln::test_device!(l2_penalty_by_hand);

/// p = (1, 2, …, m)/m for m = 70_007 (more than 128 blocks of 256 elements, so every stage-1 block
/// of the GPU sum loops): 2/2·Σ(i/m)² = (m + 1)(2m + 1)/(6m) from 1² + … + m² = m(m+1)(2m+1)/6.
fn l2_penalty_over_many_blocks(device: Device) {
    let m = 70_007usize;
    let v: Vec<f32> = (1..=m).map(|i| i as f32 / m as f32).collect();
    let mf = m as f64;
    let expected = (mf + 1.0) * (2.0 * mf + 1.0) / (6.0 * mf);
    let p = Tensor::from_vec(v.clone(), &[7, m / 7], device).unwrap();
    let penalty = ops::l2_penalty(&[&p], 2.0).unwrap();
    assert_close(&[penalty.scalar().unwrap()], &[expected], 0.0, 1e-5);
}
kiln::test_device!(l2_penalty_over_many_blocks);

/// [[1, 2], [3, 4]] and [[5], [6]] along axis 1 give [[1, 2, 5], [3, 4, 6]]; along axis 0,
/// [[1, 2], [3, 4]] and [[7, 8]] give [[1, 2], [3, 4], [7, 8]]. Narrowing gives the parts back.
fn concat_and_narrow_by_hand(device: Device) {
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2], device).unwrap();
    let b = Tensor::from_vec(vec![5.0f32, 6.0], &[2, 1], device).unwrap();
    let c = Tensor::from_vec(vec![7.0f32, 8.0], &[1, 2], device).unwrap();
    let y = ops::concat(&[&a, &b], 1).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(y.device(), device);
    assert_eq!(f32s(&y), [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
    assert_eq!(f32s(&ops::narrow(&y, 1, 0, 2).unwrap()), f32s(&a));
    assert_eq!(f32s(&ops::narrow(&y, 1, 2, 1).unwrap()), f32s(&b));
    let y = ops::concat(&[&a, &c], 0).unwrap();
    assert_eq!(y.shape(), &[3, 2]);
    assert_eq!(f32s(&y), [1.0, 2.0, 3.0, 4.0, 7.0, 8.0]);
    assert_eq!(f32s(&ops::narrow(&y, 0, 2, 1).unwrap()), f32s(&c));
}
kiln::test_device!(concat_and_narrow_by_hand);

/// Along every axis of an NCHW batch (odd sizes, batch 1 included, an empty part), against
/// ndarray's `concatenate`; narrowing each part back out is the identity.
fn concat_round_trips_along_every_axis(device: Device) {
    for (case, base) in [[2usize, 3, 5, 7], [1, 3, 1, 9]].iter().enumerate() {
        for axis in 0..4 {
            let sizes = [base[axis], 2, 0, 1];
            let parts: Vec<Tensor> = sizes
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    let mut shape = *base;
                    shape[axis] = s;
                    on(&random32(&shape, 1.0, (10 * case + i) as u64), device)
                })
                .collect();
            let refs: Vec<&Tensor> = parts.iter().collect();
            let y = ops::concat(&refs, axis).unwrap();
            let views: Vec<_> = parts
                .iter()
                .map(|p| p.to_ndarray::<f32>().unwrap())
                .collect();
            let views: Vec<_> = views.iter().map(|a| a.view()).collect();
            let expected = concatenate(Axis(axis), &views).unwrap();
            assert_eq!(y.shape(), expected.shape());
            assert_eq!(y.to_ndarray::<f32>().unwrap(), expected, "axis {axis}");
            let mut start = 0;
            for (p, &s) in parts.iter().zip(&sizes) {
                let back = ops::narrow(&y, axis, start, s).unwrap();
                assert_eq!(back.shape(), p.shape());
                assert_eq!(f32s(&back), f32s(p));
                start += s;
            }
        }
    }
}
kiln::test_device!(concat_round_trips_along_every_axis);

/// Gradients reach only the parts that require them, each the matching slice of dy.
fn concat_gradient_goes_only_where_needed(device: Device) {
    let a = on(&random32(&[2, 3], 1.0, 1), device).with_grad();
    let b = on(&random32(&[2, 2], 1.0, 2), device);
    let w = Tensor::from_vec(
        vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        &[2, 5],
        device,
    )
    .unwrap();
    let y = ops::concat(&[&b, &a], 1).unwrap();
    let g = ops::sum(&ops::mul(&y, &w).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(&b).is_none());
    assert_eq!(f32s(g.get(&a).unwrap()), [3.0, 4.0, 5.0, 8.0, 9.0, 10.0]);
}
kiln::test_device!(concat_gradient_goes_only_where_needed);

// ---- f64 gradient checks through the tape.

#[test]
fn mse_and_sum_squared_error_gradients() {
    for (i, shape) in [vec![3, 5, 2], vec![1, 7], vec![1]].into_iter().enumerate() {
        let (p, t) = (
            random64(&shape, 2.0, 10 + i as u64),
            random64(&shape, 2.0, 20 + i as u64),
        );
        gradcheck("mse_loss", &[p.clone(), t.clone()], |x| {
            ops::mse_loss(&x[0], &x[1])
        });
        gradcheck("sum_squared_error", &[p, t], |x| {
            ops::sum_squared_error(&x[0], &x[1])
        });
    }
}

#[test]
fn bce_with_logits_gradients() {
    for (i, (shape, scale)) in [(vec![4, 7], 4.0), (vec![1, 1], 1.0), (vec![3, 1, 5], 30.0)]
        .into_iter()
        .enumerate()
    {
        let z = random64(&shape, scale, 30 + i as u64);
        let t = unit64(&shape, 40 + i as u64);
        gradcheck("binary_cross_entropy_with_logits", &[z, t], |x| {
            ops::binary_cross_entropy_with_logits(&x[0], &x[1])
        });
    }
}

/// Losses sharing an input (a feeds all three terms) and one loss listed twice.
#[test]
fn sum_losses_gradients() {
    let a = random64(&[3, 4], 1.0, 50);
    let b = random64(&[3, 4], 1.0, 51);
    let t = unit64(&[3, 4], 52);
    gradcheck("sum_losses", &[a.clone(), b.clone(), t.clone()], |x| {
        let mse = ops::mse_loss(&x[0], &x[1])?;
        let bce = ops::binary_cross_entropy_with_logits(&x[0], &x[2])?;
        ops::sum_losses(&[&mse, &bce, &mse])
    });
    gradcheck("weighted_sum_losses", &[a, b, t], |x| {
        let mse = ops::mse_loss(&x[0], &x[1])?;
        let bce = ops::binary_cross_entropy_with_logits(&x[0], &x[2])?;
        let l2 = ops::l2_penalty(&[&x[0], &x[1]], 0.1)?;
        ops::weighted_sum_losses(&[(&mse, 0.3), (&bce, -1.7), (&l2, 1.0), (&mse, 2.5)])
    });
}

#[test]
fn l2_penalty_gradients() {
    let params = [
        random64(&[4, 3, 3, 3], 1.0, 60),
        random64(&[4], 1.0, 61),
        random64(&[5, 7], 1.0, 62),
    ];
    gradcheck("l2_penalty", &params, |x| {
        ops::l2_penalty(&[&x[0], &x[1], &x[2]], 0.37)
    });
    gradcheck("l2_penalty, a tensor listed twice", &params[..2], |x| {
        ops::l2_penalty(&[&x[0], &x[1], &x[0]], 1.5)
    });
}

#[test]
fn concat_gradients() {
    // Channels of NCHW (with an empty part), features of [N, F], batch and width axes.
    let cases: [(&[[usize; 4]], usize); 3] = [
        (&[[2, 3, 4, 5], [2, 1, 4, 5], [2, 0, 4, 5], [2, 2, 4, 5]], 1),
        (&[[1, 2, 3, 3], [2, 2, 3, 3]], 0),
        (&[[2, 3, 2, 1], [2, 3, 2, 4]], 3),
    ];
    for (i, (shapes, axis)) in cases.into_iter().enumerate() {
        let parts: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(j, s)| random64(s, 1.0, (70 + 10 * i + j) as u64))
            .collect();
        gradcheck("concat", &parts, |x| {
            ops::concat(&x.iter().collect::<Vec<_>>(), axis)
        });
    }
    let parts = [random64(&[3, 5], 1.0, 90), random64(&[3, 2], 1.0, 91)];
    gradcheck("concat [N, F] axis 1", &parts, |x| {
        ops::concat(&[&x[0], &x[1]], 1)
    });
}

#[test]
fn narrow_gradients() {
    let x = random64(&[2, 5, 3, 4], 1.0, 95);
    for (axis, start, len) in [(1, 1, 3), (0, 1, 1), (3, 0, 4), (2, 2, 1)] {
        gradcheck("narrow", std::slice::from_ref(&x), |t| {
            ops::narrow(&t[0], axis, start, len)
        });
    }
}

// ---- Parity of outputs and gradients: each device against the CPU.

fn losses_match_cpu(device: Device) {
    for (i, shape) in [vec![3, 5, 7], vec![1, 1], vec![1, 70_001]]
        .into_iter()
        .enumerate()
    {
        let seed = 100 + 10 * i as u64;
        let (p, t) = (random32(&shape, 2.0, seed), random32(&shape, 2.0, seed + 1));
        check_parity(
            "mse_loss",
            device,
            &[p.clone(), t.clone()],
            ATOL,
            RTOL,
            |x| ops::mse_loss(&x[0], &x[1]),
        );
        check_parity(
            "sum_squared_error",
            device,
            &[p.clone(), t],
            ATOL,
            RTOL,
            |x| ops::sum_squared_error(&x[0], &x[1]),
        );
        let u = unit32(&shape, seed + 2);
        check_parity(
            "bce_with_logits",
            device,
            &[p, u.clone()],
            ATOL,
            RTOL,
            |x| ops::binary_cross_entropy_with_logits(&x[0], &x[1]),
        );
        let z = random32(&shape, 1000.0, seed + 3);
        check_parity(
            "bce_with_logits, |z| up to 1000",
            device,
            &[z, u],
            ATOL,
            RTOL,
            |x| ops::binary_cross_entropy_with_logits(&x[0], &x[1]),
        );
    }
}
kiln::test_device!(losses_match_cpu, gpu);

/// The backward kernels' other path: targets that need no gradient get none.
fn losses_without_target_gradients_match_cpu(device: Device) {
    let p = random32(&[5, 9], 3.0, 120);
    let t = unit32(&[5, 9], 121);
    let grads = |device: Device, bce: bool| {
        let (pd, td) = (on(&p, device).with_grad(), on(&t, device));
        let loss = if bce {
            ops::binary_cross_entropy_with_logits(&pd, &td)
        } else {
            ops::mse_loss(&pd, &td)
        }
        .unwrap();
        let g = loss.backward().unwrap();
        assert!(g.get(&td).is_none());
        (loss.scalar().unwrap() as f32, f32s(g.get(&pd).unwrap()))
    };
    for bce in [false, true] {
        let ((l_dev, g_dev), (l_cpu, g_cpu)) = (grads(device, bce), grads(Device::Cpu, bce));
        assert_close(&[l_dev], &[l_cpu], ATOL, RTOL);
        assert_close(&g_dev, &g_cpu, ATOL, RTOL);
    }
}
kiln::test_device!(losses_without_target_gradients_match_cpu, gpu);

fn sums_of_losses_and_l2_penalty_match_cpu(device: Device) {
    let inputs = [
        random32(&[4, 6], 1.5, 130),
        random32(&[4, 6], 1.5, 131),
        unit32(&[4, 6], 132),
    ];
    check_parity("weighted_sum_losses", device, &inputs, ATOL, RTOL, |x| {
        let mse = ops::mse_loss(&x[0], &x[1])?;
        let bce = ops::binary_cross_entropy_with_logits(&x[0], &x[2])?;
        let both = ops::sum_losses(&[&mse, &bce])?;
        ops::weighted_sum_losses(&[(&both, 0.5), (&mse, -2.0), (&bce, 3.0)])
    });
    let params = [
        random32(&[8, 3, 3, 3], 0.5, 133),
        random32(&[8], 0.5, 134),
        random32(&[97, 1031], 0.5, 135),
    ];
    check_parity("l2_penalty", device, &params, ATOL, RTOL, |x| {
        ops::l2_penalty(&[&x[0], &x[1], &x[2]], 1e-3)
    });
}
kiln::test_device!(sums_of_losses_and_l2_penalty_match_cpu, gpu);

fn concat_and_narrow_match_cpu(device: Device) {
    let nchw = [
        random32(&[3, 5, 7, 9], 1.0, 140),
        random32(&[3, 2, 7, 9], 1.0, 141),
        random32(&[3, 1, 7, 9], 1.0, 142),
    ];
    check_parity("concat channels", device, &nchw, ATOL, RTOL, |x| {
        ops::concat(&[&x[0], &x[1], &x[2]], 1)
    });
    let rows = [random32(&[1, 13], 1.0, 143), random32(&[1, 3], 1.0, 144)];
    check_parity("concat features", device, &rows, ATOL, RTOL, |x| {
        ops::concat(&[&x[0], &x[1]], 1)
    });
    let x = random32(&[3, 5, 7, 9], 1.0, 145);
    check_parity("narrow", device, &[x], ATOL, RTOL, |x| {
        ops::narrow(&x[0], 2, 3, 3)
    });
}
kiln::test_device!(concat_and_narrow_match_cpu, gpu);

// ---- Bad input is an error, never a panic.

fn cpu32(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, Device::Cpu).unwrap()
}

#[test]
fn bad_loss_inputs_are_errors() {
    let emulated = |t: &Tensor| on(t, Device::CudaEmulated);
    let (a, b) = (cpu32(&[2, 3]), cpu32(&[3, 2]));
    let a64 = Tensor::zeros(&[2, 3], DType::F64, Device::Cpu).unwrap();
    let labels = Tensor::zeros(&[2, 3], DType::I32, Device::Cpu).unwrap();
    let empty = cpu32(&[0, 3]);
    type Loss = fn(&Tensor, &Tensor) -> kiln::Result<Tensor>;
    let losses: [(&str, Loss); 3] = [
        ("mse_loss", ops::mse_loss),
        ("sum_squared_error", ops::sum_squared_error),
        ("bce", ops::binary_cross_entropy_with_logits),
    ];
    for (name, loss) in losses {
        let err = loss(&a, &b).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{name}: {err}");
        let err = loss(&a, &a64).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { .. }), "{name}: {err}");
        let err = loss(&a, &emulated(&a)).unwrap_err();
        assert!(matches!(err, Error::DeviceMismatch { .. }), "{name}: {err}");
        let err = loss(&labels, &labels).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { .. }), "{name}: {err}");
        let err = loss(&emulated(&labels), &emulated(&labels)).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { .. }), "{name}: {err}");
        let err = loss(&empty, &empty).unwrap_err();
        assert!(err.to_string().contains("no elements"), "{name}: {err}");
    }
}

#[test]
fn bad_sums_of_losses_are_errors() {
    let one = cpu32(&[]);
    let one64 = Tensor::zeros(&[1], DType::F64, Device::Cpu).unwrap();
    let err = ops::sum_losses(&[]).unwrap_err();
    assert!(err.to_string().contains("at least one loss"), "{err}");
    let err = ops::weighted_sum_losses(&[]).unwrap_err();
    assert!(err.to_string().contains("at least one loss"), "{err}");
    let err = ops::sum_losses(&[&one, &cpu32(&[2])]).unwrap_err();
    assert!(err.to_string().contains("not one element"), "{err}");
    let err = ops::sum_losses(&[&one, &one64]).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    let err = ops::sum_losses(&[&one, &on(&one, Device::CudaEmulated)]).unwrap_err();
    assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
    let labels = Tensor::zeros(&[1], DType::I32, Device::Cpu).unwrap();
    let err = ops::sum_losses(&[&labels]).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    for w in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = ops::weighted_sum_losses(&[(&one, 1.0), (&one, w)]).unwrap_err();
        assert!(err.to_string().contains("not finite"), "{err}");
    }
}

#[test]
fn bad_l2_penalties_are_errors() {
    let p = cpu32(&[3]);
    let err = ops::l2_penalty(&[], 1.0).unwrap_err();
    assert!(err.to_string().contains("at least one"), "{err}");
    for w in [-1e-3, f64::NAN, f64::INFINITY] {
        let err = ops::l2_penalty(&[&p], w).unwrap_err();
        assert!(err.to_string().contains("finite and ≥ 0"), "{err}");
    }
    let err = ops::l2_penalty(&[&p, &on(&p, Device::CudaEmulated)], 1.0).unwrap_err();
    assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
    let p64 = Tensor::zeros(&[3], DType::F64, Device::Cpu).unwrap();
    let err = ops::l2_penalty(&[&p, &p64], 1.0).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    let mask = Tensor::zeros(&[3], DType::U8, Device::Cpu).unwrap();
    let err = ops::l2_penalty(&[&mask], 1.0).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
}

#[test]
fn bad_concats_and_narrows_are_errors() {
    let (a, b) = (cpu32(&[2, 3, 4, 5]), cpu32(&[2, 2, 4, 5]));
    let err = ops::concat(&[], 0).unwrap_err();
    assert!(err.to_string().contains("at least one"), "{err}");
    let err = ops::concat(&[&a, &b], 4).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    let err = ops::concat(&[&a, &b], 0).unwrap_err();
    assert!(err.to_string().contains("only axis 0 may differ"), "{err}");
    let err = ops::concat(&[&a, &cpu32(&[2, 3, 4])], 1).unwrap_err();
    assert!(err.to_string().contains("only axis 1 may differ"), "{err}");
    let err = ops::concat(&[&a, &on(&b, Device::CudaEmulated)], 1).unwrap_err();
    assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
    let b64 = Tensor::zeros(&[2, 2, 4, 5], DType::F64, Device::Cpu).unwrap();
    let err = ops::concat(&[&a, &b64], 1).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    let scalar = cpu32(&[]);
    let err = ops::concat(&[&scalar, &scalar], 0).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");

    let err = ops::narrow(&a, 4, 0, 1).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    for (start, len) in [(2, 2), (4, 0), (usize::MAX, 2)] {
        let err = ops::narrow(&a, 1, start, len).unwrap_err();
        assert!(err.to_string().contains("outside axis 1"), "{err}");
    }
}

fn correct_counts_match_the_cpu_and_ties_go_to_the_first_class(device: Device) {
    let mut rng = StdRng::seed_from_u64(77);
    // 300 rows (more than the kernel's 256 threads), 7 classes; every third row has its largest
    // value twice, so the first of the two must be the prediction.
    let (rows, classes) = (300, 7);
    let mut logits: Vec<f32> = (0..rows * classes)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    for r in (0..rows).step_by(3) {
        let row = &mut logits[r * classes..(r + 1) * classes];
        row[2] = 10.0;
        row[5] = 10.0;
    }
    let labels: Vec<i32> = (0..rows)
        .map(|r| {
            if r % 3 == 0 {
                2 // the first of the two largest classes
            } else {
                rng.random_range(0..classes as i32)
            }
        })
        .collect();
    let expected = (0..rows)
        .filter(|&r| {
            let row = &logits[r * classes..(r + 1) * classes];
            let best = (0..classes).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            best as i32 == labels[r]
        })
        .count();
    let z = Tensor::from_vec(logits, &[rows, classes], Device::Cpu).unwrap();
    let y = Tensor::from_vec(labels, &[rows], Device::Cpu).unwrap();
    assert_eq!(
        backend::count_correct(&z, &y).unwrap().scalar().unwrap(),
        expected as f64
    );
    if device.is_gpu() {
        let on = |t: &Tensor| t.to_device(device).unwrap();
        let got = backend::count_correct(&on(&z), &on(&y))
            .unwrap()
            .scalar()
            .unwrap();
        assert_eq!(got, expected as f64, "on {device:?}");
    }
    let short = Tensor::from_vec(vec![0i32; 5], &[5], Device::Cpu).unwrap();
    assert!(backend::count_correct(&z, &short).is_err());
}
kiln::test_device!(correct_counts_match_the_cpu_and_ties_go_to_the_first_class);

/// The backward rules of the scalar reductions and losses take their upstream gradient on the
/// device (kernels read it; no wait for the device): with a random upstream weight (check_parity
/// scales the output by one), every input's gradient matches the CPU's.
fn scalar_losses_scale_by_an_upstream_gradient_read_on_the_device(device: Device) {
    let f32s = |shape: &[usize], seed| Tensor::randn(shape, 1.0, seed, Device::Cpu).unwrap();
    let pair = [f32s(&[7, 13], 1), f32s(&[7, 13], 2)];
    check_parity("mse", device, &pair, ATOL, RTOL, |t| {
        ops::mse_loss(&t[0], &t[1])
    });
    check_parity("bce", device, &pair, ATOL, RTOL, |t| {
        ops::binary_cross_entropy_with_logits(&t[0], &t[1])
    });
    check_parity("mean", device, &pair[..1], ATOL, RTOL, |t| ops::mean(&t[0]));
    check_parity("sum", device, &pair[..1], ATOL, RTOL, |t| ops::sum(&t[0]));
    check_parity("l2", device, &pair, ATOL, RTOL, |t| {
        ops::l2_penalty(&[&t[0], &t[1]], 0.3)
    });
}
kiln::test_device!(
    scalar_losses_scale_by_an_upstream_gradient_read_on_the_device,
    gpu
);
