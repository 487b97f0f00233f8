//! The activation family: leaky ReLU, ELU, ReLU6, sigmoid, tanh, softmax and log-softmax along an axis,
//! maxout. Hand-computed values, f64 gradient checks through the tape, GPU-vs-CPU parity (outputs
//! and gradients) on every device under test, and bad parameters as errors.
//!
//! Expected literals come from Python's `math` module (`math.exp`, `math.tanh`, `math.expm1`).

use kiln::backend::RawTensor;
use kiln::testing::{assert_close, check_parity, gradcheck, random_away_from_zero, random_vec};
use kiln::{backend, ops, DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

/// softmax([9, 5, 0]): math.exp(v) / sum(math.exp(u) for u in (9, 5, 0)).
const SOFTMAX_950: [f64; 3] = [
    0.9818947940807183,
    0.017984030475110446,
    0.00012117544417123201,
];

fn tensor<T: kiln::Element>(values: Vec<T>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape, Device::Cpu).unwrap()
}

/// f32 values in (−scale, scale) with |v| ≥ 1e-3·scale.
fn random_f32(shape: &[usize], scale: f32, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v = random_away_from_zero(&mut rng, n, 1e-3);
    tensor(v.into_iter().map(|v| v * scale).collect(), shape)
}

/// f64 values uniform in [−scale, scale).
fn random_f64(shape: &[usize], scale: f64, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f64> = random_vec(&mut rng, shape.iter().product());
    tensor(v.into_iter().map(|v| v * scale).collect(), shape)
}

/// f64 values in ±[0.05, 2): a 1e-6 step never crosses the kink at 0 (leaky ReLU, ELU).
fn away_from_zero_f64(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v = random_away_from_zero(&mut rng, shape.iter().product(), 0.025);
    tensor(v.into_iter().map(|v| 2.0 * v as f64).collect(), shape)
}

/// Distinct values 0.01 apart, shuffled: no two maxout pieces within 1e-6 of each other.
fn well_separated(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n)
        .map(|i| (i as f64 - (n / 2) as f64) * 0.01 + 0.005)
        .collect();
    v.shuffle(&mut StdRng::seed_from_u64(seed));
    tensor(v, shape)
}

fn values(t: &RawTensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Hand-computed values, on every device (f32).

fn pointwise_hand_values_on_every_device(device: Device) {
    let x = tensor(vec![0.0_f32, 2.0, -2.0, 0.5, 1000.0, -1000.0], &[2, 3]);
    let xd = x.to_device(device).unwrap();
    // 1 / (1 + math.exp(-v)); ±1000 saturate to exactly 1 and 0 (no inf/inf NaN).
    let s = [0.5, 0.880_797_1, 0.119_202_92, 0.622_459_3, 1.0, 0.0];
    assert_close(&values(&ops::sigmoid(&xd).unwrap()), &s, 1e-7, 1e-6);
    // math.tanh(v)
    let t = [0.0, 0.964_027_6, -0.964_027_6, 0.462_117_16, 1.0, -1.0];
    assert_close(&values(&ops::tanh(&xd).unwrap()), &t, 1e-7, 1e-6);
    let l = [0.0, 2.0, -0.2, 0.5, 1000.0, -100.0];
    assert_close(&values(&ops::leaky_relu(&xd, 0.1).unwrap()), &l, 1e-7, 1e-6);
    // 1.5 · math.expm1(-2), 1.5 · math.expm1(-1000) = −1.5
    let e = [0.0, 2.0, 1.5 * -0.864_664_7, 0.5, 1000.0, -1.5];
    assert_close(&values(&ops::elu(&xd, 1.5).unwrap()), &e, 1e-7, 1e-6);
}
kiln::test_device!(pointwise_hand_values_on_every_device);

/// The gradient at exactly x = 0: `negative_slope` for leaky ReLU and `alpha` for ELU (PyTorch's
/// `x > 0 ? 1 : …` rules); sigmoid'(0) = 1/4, tanh'(0) = 1.
fn gradients_at_zero_follow_pytorch(device: Device) {
    let x = tensor(vec![0.0_f32, 3.0, -1.0], &[3])
        .to_device(device)
        .unwrap();
    let dy = tensor(vec![1.0_f32; 3], &[3]).to_device(device).unwrap();
    let g = backend::leaky_relu_bwd(&x, &dy, 0.2).unwrap();
    assert_close(&values(&g), &[0.2, 1.0, 0.2], 0.0, 0.0);
    let g = backend::elu_bwd(&x, &dy, 0.7).unwrap();
    // 0.7 · math.exp(-1)
    assert_close(&values(&g), &[0.7, 1.0, 0.7 * 0.367_879_44], 1e-7, 1e-6);
    let y = backend::sigmoid_fwd(&x).unwrap();
    assert_eq!(values(&backend::sigmoid_bwd(&y, &dy).unwrap())[0], 0.25);
    let y = backend::tanh_fwd(&x).unwrap();
    assert_eq!(values(&backend::tanh_bwd(&y, &dy).unwrap())[0], 1.0);
}
kiln::test_device!(gradients_at_zero_follow_pytorch);

/// ReLU6 at its edges, forward and backward, through the tape. From PyTorch 2.15:
/// ```python
/// x = torch.tensor([-1., 0., -0., 3., 6., 6.5, float('nan'), 5.999, 1e-7, -1e-7, 7.], requires_grad=True)
/// y = F.relu6(x); y.backward(torch.arange(1., 12.))
/// # y: [0, 0, -0, 3, 6, 6, nan, 5.999, 1e-7, 0, 6]; x.grad: [0, 0, 0, 4, 0, 0, 7, 8, 9, 0, 0]
/// ```
fn relu6_edges_follow_pytorch(device: Device) {
    let x = [
        -1.0_f32,
        0.0,
        -0.0,
        3.0,
        6.0,
        6.5,
        f32::NAN,
        5.999,
        1e-7,
        -1e-7,
        7.0,
    ];
    let y_expected = [
        0.0,
        0.0,
        -0.0,
        3.0,
        6.0,
        6.0,
        f32::NAN,
        5.999,
        1e-7,
        0.0,
        6.0,
    ];
    let dx_expected = [0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 7.0, 8.0, 9.0, 0.0, 0.0];
    let xd = tensor(x.to_vec(), &[11])
        .to_device(device)
        .unwrap()
        .with_grad();
    let y = ops::relu6(&xd).unwrap();
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&values(&y)),
        bits(&y_expected),
        "relu6 forward, {device}"
    );
    let dy = tensor((1..=11).map(|i| i as f32).collect(), &[11])
        .to_device(device)
        .unwrap();
    let grads = ops::sum(&ops::mul(&y, &dy).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let dx = values(grads.get(&xd).unwrap());
    assert_eq!(dx, dx_expected, "relu6 gradient, {device}");
    // 16-bit storage (widened to f32 and rounded back): values exact in bf16 and f16.
    for format in [DType::BF16, DType::F16] {
        let on = |v: &[f32]| {
            let t = tensor(v.to_vec(), &[v.len()]).to_device(device).unwrap();
            t.to_dtype(format).unwrap()
        };
        let x16 = on(&[-1.0, 0.0, 3.0, 6.0, 6.5, 7.0]);
        let y = backend::relu6_fwd(&x16).unwrap();
        assert_eq!(y.dtype(), format, "{device} {format:?}");
        let y32 = values(&y.to_dtype(DType::F32).unwrap());
        assert_eq!(y32, [0.0, 0.0, 3.0, 6.0, 6.0, 6.0], "{device} {format:?}");
        let dx = backend::relu6_bwd(&x16, &on(&[1.0; 6])).unwrap();
        let dx32 = values(&dx.to_dtype(DType::F32).unwrap());
        assert_eq!(dx32, [0.0, 0.0, 1.0, 0.0, 0.0, 0.0], "{device} {format:?}");
    }
}
kiln::test_device!(relu6_edges_follow_pytorch);

/// softmax([9, 5, 0]) along the last axis of [1, 3], and along the channel axis of an NCHW tensor
/// [1, 3, 1, 2] whose second pixel is uniform; log_softmax = log(softmax) there.
fn softmax_hand_values_on_every_device(device: Device) {
    let row = tensor(vec![9.0_f32, 5.0, 0.0], &[1, 3]);
    let nchw = tensor(vec![9.0_f32, 1.0, 5.0, 1.0, 0.0, 1.0], &[1, 3, 1, 2]);
    let p = SOFTMAX_950.map(|v| v as f32);
    let third = 1.0 / 3.0;
    let y = ops::softmax(&row.to_device(device).unwrap(), 1).unwrap();
    assert_close(&values(&y), &p, 1e-7, 1e-5);
    let log = ops::log_softmax(&row.to_device(device).unwrap(), 1).unwrap();
    assert_close(&values(&log), &p.map(f32::ln), 1e-6, 1e-6);
    let y = ops::softmax(&nchw.to_device(device).unwrap(), 1).unwrap();
    assert_close(
        &values(&y),
        &[p[0], third, p[1], third, p[2], third],
        1e-7,
        1e-5,
    );
}
kiln::test_device!(softmax_hand_values_on_every_device);

/// Logits in the thousands (exp overflows f32 at 88.7) on both kernel mappings: short rows (one
/// thread per row) and rows of 300 (one block per row, longer than the block). Each row is a shift
/// of [0, 1, 2, ...], so its softmax is that of the unshifted row.
fn softmax_of_large_logits_does_not_overflow(device: Device) {
    for len in [3usize, 300] {
        let shifts = [1000.0_f32, -3000.0, 5000.0];
        let x: Vec<f32> = shifts
            .iter()
            .flat_map(|&s| (0..len).map(move |j| s + j as f32))
            .collect();
        let x = tensor(x, &[3, len]).to_device(device).unwrap();
        let base: Vec<f32> = (0..len).map(|j| j as f32).collect();
        let base = tensor(base, &[1, len]);
        let expected = values(&ops::softmax(&base, 1).unwrap());
        let expected_log = values(&ops::log_softmax(&base, 1).unwrap());
        let y = values(&ops::softmax(&x, 1).unwrap());
        let log = values(&ops::log_softmax(&x, 1).unwrap());
        for r in 0..3 {
            assert_close(&y[r * len..(r + 1) * len], &expected, 1e-7, 1e-5);
            assert_close(&log[r * len..(r + 1) * len], &expected_log, 1e-6, 1e-6);
        }
        if len == 3 {
            // softmax([0, 1, 2]) = math.exp(j) / (1 + e + e²)
            let p = [0.090_030_57, 0.244_728_48, 0.665_240_94];
            assert_close(&expected, &p, 1e-7, 1e-6);
        }
    }
}
kiln::test_device!(softmax_of_large_logits_does_not_overflow);

/// log_softmax agrees with log(softmax) along every axis of a 4-d tensor (f64 on the CPU, f32 on
/// the devices).
fn log_softmax_is_log_of_softmax(device: Device) {
    let x = random_f64(&[2, 5, 3, 4], 4.0, 11);
    for axis in 0..4 {
        let p = ops::softmax(&x, axis).unwrap().to_vec::<f64>().unwrap();
        let log = ops::log_softmax(&x, axis).unwrap().to_vec::<f64>().unwrap();
        let log_p: Vec<f64> = p.iter().map(|v| v.ln()).collect();
        assert_close(&log, &log_p, 1e-14, 1e-12);
    }
    let x = random_f32(&[2, 5, 3, 4], 4.0, 12);
    if device.is_gpu() {
        let xd = x.to_device(device).unwrap();
        for axis in 0..4 {
            let p = values(&ops::softmax(&xd, axis).unwrap());
            let log = values(&ops::log_softmax(&xd, axis).unwrap());
            let log_p: Vec<f32> = p.iter().map(|v| v.ln()).collect();
            assert_close(&log, &log_p, 1e-5, 1e-5);
        }
    }
}
kiln::test_device!(log_softmax_is_log_of_softmax);

/// Ties go to the first piece, on every device; the gradient reaches the winner only.
fn maxout_ties_go_to_the_first_piece(device: Device) {
    // [1, 6] with pieces 3: units (1, 1, 0) and (-2, 5, 5).
    let x = tensor(vec![1.0_f32, 1.0, 0.0, -2.0, 5.0, 5.0], &[1, 6]);
    let xd = x.to_device(device).unwrap().with_grad();
    let y = ops::maxout(&xd, 3).unwrap();
    assert_eq!(y.shape(), &[1, 2]);
    assert_eq!(values(&y), [1.0, 5.0]);
    let w = tensor(vec![2.0_f32, 3.0], &[1, 2])
        .to_device(device)
        .unwrap();
    let grads = ops::sum(&ops::mul(&y, &w).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let g = values(grads.get(&xd).unwrap());
    assert_eq!(g, [2.0, 0.0, 0.0, 0.0, 3.0, 0.0]);
}
kiln::test_device!(maxout_ties_go_to_the_first_piece);

// ---------------------------------------------------------------------------------------------
// f64 gradient checks through the tape.

#[test]
fn leaky_relu_and_elu_gradients() {
    let x = away_from_zero_f64(&[3, 7], 1);
    for slope in [0.01, 0.2, -0.5] {
        gradcheck("leaky_relu", std::slice::from_ref(&x), |t| {
            ops::leaky_relu(&t[0], slope)
        });
    }
    for alpha in [1.0, 0.3, -0.5] {
        gradcheck("elu", std::slice::from_ref(&x), |t| ops::elu(&t[0], alpha));
    }
}

#[test]
fn sigmoid_and_tanh_gradients() {
    let x = random_f64(&[2, 3, 5], 4.0, 2);
    gradcheck("sigmoid", std::slice::from_ref(&x), |t| ops::sigmoid(&t[0]));
    gradcheck("tanh", std::slice::from_ref(&x), |t| ops::tanh(&t[0]));
    // Composed: the saved outputs stay valid when the result feeds another op.
    gradcheck("tanh of sigmoid", &[x], |t| {
        ops::tanh(&ops::scale(&ops::sigmoid(&t[0])?, 3.0)?)
    });
}

#[test]
fn softmax_and_log_softmax_gradients() {
    let cases: [(&[usize], usize); 6] = [
        (&[4, 7], 1),
        (&[4, 7], 0),
        (&[1, 5], 1),
        (&[2, 3, 4, 5], 1),
        (&[2, 3, 4, 5], 3),
        (&[2, 3, 4, 5], 0),
    ];
    for (i, (shape, axis)) in cases.into_iter().enumerate() {
        let x = random_f64(shape, 3.0, 20 + i as u64);
        gradcheck("softmax", std::slice::from_ref(&x), |t| {
            ops::softmax(&t[0], axis)
        });
        gradcheck("log_softmax", &[x], |t| ops::log_softmax(&t[0], axis));
    }
    // A long row: 40 elements (the devices run these on the block-per-row kernel).
    let x = random_f64(&[2, 40], 3.0, 30);
    gradcheck("softmax long row", std::slice::from_ref(&x), |t| {
        ops::softmax(&t[0], 1)
    });
    gradcheck("log_softmax long row", &[x], |t| ops::log_softmax(&t[0], 1));
}

#[test]
fn maxout_gradients() {
    let cases: [(&[usize], usize); 5] = [
        (&[3, 12], 3),
        (&[1, 6], 2),
        (&[2, 6, 3, 5], 2),
        (&[1, 4, 3, 3], 4),
        (&[2, 3, 2, 2], 1),
    ];
    for (i, (shape, pieces)) in cases.into_iter().enumerate() {
        let x = well_separated(shape, 40 + i as u64);
        gradcheck("maxout", &[x], |t| ops::maxout(&t[0], pieces));
    }
}

// ---------------------------------------------------------------------------------------------
// GPU-vs-CPU parity: outputs and gradients through the tape.

fn pointwise_parity(device: Device) {
    for (i, shape) in [&[3usize, 5, 7, 11][..], &[1, 1037]]
        .into_iter()
        .enumerate()
    {
        let x = random_f32(shape, 3.0, 50 + i as u64);
        let xs = [x];
        check_parity("leaky_relu", device, &xs, ATOL, RTOL, |t| {
            ops::leaky_relu(&t[0], 0.01)
        });
        check_parity("leaky_relu negative slope", device, &xs, ATOL, RTOL, |t| {
            ops::leaky_relu(&t[0], -0.3)
        });
        check_parity("elu", device, &xs, ATOL, RTOL, |t| ops::elu(&t[0], 1.0));
        check_parity("elu alpha 0.4", device, &xs, ATOL, RTOL, |t| {
            ops::elu(&t[0], 0.4)
        });
        check_parity("sigmoid", device, &xs, ATOL, RTOL, |t| ops::sigmoid(&t[0]));
        // Scaled to ±9, so values sit on both sides of both kinks (0 and 6).
        check_parity("relu6", device, &xs, ATOL, RTOL, |t| {
            ops::relu6(&ops::scale(&t[0], 3.0)?)
        });
        check_parity("tanh", device, &xs, ATOL, RTOL, |t| ops::tanh(&t[0]));
    }
    // Large magnitudes: saturation, no NaN.
    let big = random_f32(&[5, 9], 200.0, 59);
    check_parity(
        "sigmoid of large inputs",
        device,
        std::slice::from_ref(&big),
        ATOL,
        RTOL,
        |t| ops::sigmoid(&t[0]),
    );
    check_parity("elu of large inputs", device, &[big], ATOL, RTOL, |t| {
        ops::elu(&t[0], 1.0)
    });
}
kiln::test_device!(pointwise_parity, gpu);

/// Shapes and axes covering both kernel mappings: one thread per row (short rows; the channel axis
/// of NCHW, whose elements are H·W ≥ 32 apart) and one block per row (rows of 33+ elements fewer
/// than 32 apart, including rows longer than the 256-thread block).
fn softmax_parity(device: Device) {
    let cases: [(&[usize], usize); 9] = [
        (&[7, 10], 1),
        (&[1, 13], 1),
        (&[7, 10], 0),
        (&[2, 5, 7, 9], 1),
        (&[1, 3, 5, 5], 1),
        (&[3, 37], 1),
        (&[2, 300], 1),
        (&[1, 600], 1),
        (&[2, 40, 3], 1),
    ];
    for (i, (shape, axis)) in cases.into_iter().enumerate() {
        for scale in [3.0, 2000.0] {
            let x = [random_f32(shape, scale, 60 + i as u64)];
            check_parity("softmax", device, &x, ATOL, RTOL, |t| {
                ops::softmax(&t[0], axis)
            });
            check_parity("log_softmax", device, &x, ATOL, RTOL, |t| {
                ops::log_softmax(&t[0], axis)
            });
        }
    }
}
kiln::test_device!(softmax_parity, gpu);

/// The block-per-row reductions run in a fixed order: two runs give identical bits.
fn softmax_is_deterministic(device: Device) {
    let x = random_f32(&[4, 1000], 5.0, 70);
    let dy = random_f32(&[4, 1000], 1.0, 71);
    let (xd, dyd) = (x.to_device(device).unwrap(), dy.to_device(device).unwrap());
    let run = || {
        let y = backend::softmax_fwd(&xd, 1).unwrap();
        let dx = backend::softmax_bwd(&y, &dyd, 1).unwrap();
        (values(&y), values(&dx))
    };
    assert_eq!(run(), run());
}
kiln::test_device!(softmax_is_deterministic, gpu);

fn maxout_parity(device: Device) {
    let cases: [(&[usize], usize); 5] = [
        (&[3, 12], 3),
        (&[1, 10], 5),
        (&[2, 6, 5, 7], 2),
        (&[1, 4, 3, 3], 4),
        (&[3, 5, 2, 9], 1),
    ];
    for (i, (shape, pieces)) in cases.into_iter().enumerate() {
        let x = random_f32(shape, 1.0, 80 + i as u64);
        let (y, argmax) = backend::maxout_fwd(&x, pieces).unwrap();
        let (gy, gargmax) = backend::maxout_fwd(&x.to_device(device).unwrap(), pieces).unwrap();
        assert_eq!(values(&gy), values(&y));
        assert_eq!(
            gargmax.to_vec::<i32>().unwrap(),
            argmax.to_vec::<i32>().unwrap()
        );
        check_parity("maxout", device, &[x], ATOL, RTOL, |t| {
            ops::maxout(&t[0], pieces)
        });
    }
}
kiln::test_device!(maxout_parity, gpu);

// ---------------------------------------------------------------------------------------------
// Bad parameters are errors, never panics.

fn bad_parameters_are_errors(device: Device) {
    let x = random_f32(&[2, 6, 3, 3], 1.0, 90)
        .to_device(device)
        .unwrap();
    // Slopes and alphas: any finite value (negative ones too, as PyTorch); not NaN or ±∞.
    assert!(ops::leaky_relu(&x, f64::NAN).is_err());
    assert!(ops::leaky_relu(&x, f64::INFINITY).is_err());
    assert!(ops::elu(&x, f64::NAN).is_err());
    assert!(ops::elu(&x, f64::NEG_INFINITY).is_err());
    assert!(ops::leaky_relu(&x, -0.5).is_ok());
    assert!(ops::elu(&x, -0.5).is_ok());
    // Axes out of range.
    assert!(ops::softmax(&x, 4).is_err());
    assert!(ops::log_softmax(&x, 7).is_err());
    let flat = x.reshape(&[2, 54]).unwrap();
    assert!(ops::softmax(&flat, 2).is_err());
    assert!(ops::softmax(&flat, 1).is_ok());
    // Maxout: pieces 0, not dividing C, input of rank < 2.
    assert!(ops::maxout(&x, 0).is_err());
    assert!(ops::maxout(&x, 4).is_err());
    assert!(ops::maxout(&x, 5).is_err());
    assert!(ops::maxout(&x, 6).is_ok());
    assert!(ops::maxout(&x.reshape(&[108]).unwrap(), 2).is_err());
    // Backward passes: mismatched shapes, argmax of the wrong dtype or shape.
    let (y, argmax) = backend::maxout_fwd(&x, 3).unwrap();
    assert_eq!(y.shape(), &[2, 2, 3, 3]);
    assert!(backend::maxout_bwd(&y, &argmax, 0).is_err());
    assert!(backend::maxout_bwd(&y, &y, 3).is_err());
    assert!(backend::maxout_bwd(&x, &argmax, 3).is_err());
    assert!(backend::sigmoid_bwd(&x, &y).is_err());
    assert!(backend::softmax_bwd(&x, &x, 4).is_err());
    assert!(backend::log_softmax_bwd(&y, &x, 1).is_err());
    // Tensors on different devices, and integer inputs.
    let cpu = random_f32(&[2, 3], 1.0, 91);
    let emulated = cpu.to_device(Device::CudaEmulated).unwrap();
    assert!(backend::softmax_bwd(&cpu, &emulated, 1).is_err());
    assert!(backend::tanh_bwd(&emulated, &cpu).is_err());
    assert!(backend::elu_bwd(&cpu, &cpu.to_dtype(DType::F64).unwrap(), 1.0).is_err());
    assert!(backend::relu6_bwd(&cpu, &emulated).is_err());
    let ints = tensor(vec![1_i32, 2, 3], &[3]);
    assert!(ops::sigmoid(&ints).is_err());
    assert!(ops::relu6(&ints).is_err());
    assert!(ops::softmax(&ints, 0).is_err());
    assert!(ops::maxout(&ints.reshape(&[1, 3]).unwrap(), 3).is_err());
}
kiln::test_device!(bad_parameters_are_errors);

/// Empty tensors pass through without a launch.
fn empty_tensors(device: Device) {
    let x = tensor(Vec::<f32>::new(), &[0, 4])
        .to_device(device)
        .unwrap();
    assert_eq!(ops::softmax(&x, 1).unwrap().shape(), &[0, 4]);
    assert_eq!(ops::log_softmax(&x, 0).unwrap().shape(), &[0, 4]);
    assert_eq!(ops::maxout(&x, 2).unwrap().shape(), &[0, 2]);
    assert_eq!(ops::sigmoid(&x).unwrap().shape(), &[0, 4]);
}
kiln::test_device!(empty_tensors);

// ---------------------------------------------------------------------------------------------
// ReLU at exactly zero.

/// 2^-24: the smallest positive f16 (subnormal), exact in bf16 and f32 too.
const TINY: f32 = 5.960_464_5e-8;

/// Exact zeros of both signs next to values of both signs, placed in the vector part and in the
/// tail of both ReLU kernel mappings (30 elements: 7 quads + 2 for f32, 3 groups of 8 + 6 for
/// 16-bit storage); every value is exact in bf16 and f16.
#[rustfmt::skip]
const RELU_X: [f32; 30] = [
    0.0, -0.0, 0.5, -0.5, TINY, -TINY, 0.0, 3.0,
    -0.0, 1.0, 0.0, -2.0, -0.0, 0.25, 0.0, 0.0,
    -0.0, 7.0, -7.0, 0.0, 1.5, -0.0, 0.0, -1.0,
    0.0, -0.0, 4.0, -0.0, 0.0, -0.0,
];

/// PyTorch's `relu(x)` = x where x > 0, else 0 (written out by hand: ±0 give 0).
#[rustfmt::skip]
const RELU_Y: [f32; 30] = [
    0.0, 0.0, 0.5, 0.0, TINY, 0.0, 0.0, 3.0,
    0.0, 1.0, 0.0, 0.0, 0.0, 0.25, 0.0, 0.0,
    0.0, 7.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0,
    0.0, 0.0, 4.0, 0.0, 0.0, 0.0,
];

/// dy = 0.25·(i + 1), and dx = dy where x > 0, else 0, by PyTorch's rule relu'(0) = 0
/// (`threshold_backward(grad, x, 0)`), written out by hand.
#[rustfmt::skip]
const RELU_DX: [f32; 30] = [
    0.0, 0.0, 0.75, 0.0, 1.25, 0.0, 0.0, 2.0,
    0.0, 2.5, 0.0, 0.0, 0.0, 3.5, 0.0, 0.0,
    0.0, 4.5, 0.0, 0.0, 5.25, 0.0, 0.0, 0.0,
    0.0, 0.0, 6.75, 0.0, 0.0, 0.0,
];

/// ReLU's mask and gradient at x = +0 and −0 are 0, forward and backward, in f32 and in both
/// 16-bit storage formats (the relu_*_bf16/f16 kernels on a device), on the CPU and every device;
/// and through the tape in f32.
fn relu_at_exact_zero_passes_no_gradient(device: Device) {
    let dy: Vec<f32> = (0..30).map(|i| 0.25 * (i + 1) as f32).collect();
    let mask_expected: Vec<u8> = RELU_DX.iter().map(|&d| u8::from(d != 0.0)).collect();
    for format in [DType::F32, DType::BF16, DType::F16] {
        let on = |v: &[f32]| {
            tensor(v.to_vec(), &[30])
                .to_dtype(format)
                .unwrap()
                .to_device(device)
                .unwrap()
        };
        let (y, mask) = backend::relu_fwd(&on(&RELU_X)).unwrap();
        assert_eq!(y.dtype(), format, "{device} {format:?}");
        let y32 = values(&y.to_dtype(DType::F32).unwrap());
        assert_eq!(y32, RELU_Y, "relu forward, {device} {format:?}");
        assert_eq!(
            mask.to_vec::<u8>().unwrap(),
            mask_expected,
            "relu mask, {device} {format:?}"
        );
        let dx = backend::relu_bwd(&on(&dy), &mask).unwrap();
        let dx32 = values(&dx.to_dtype(DType::F32).unwrap());
        assert_eq!(dx32, RELU_DX, "relu backward, {device} {format:?}");
    }
    let x = tensor(RELU_X.to_vec(), &[30])
        .to_device(device)
        .unwrap()
        .with_grad();
    let weights = tensor(dy.clone(), &[30]).to_device(device).unwrap();
    let y = ops::relu(&x).unwrap();
    let grads = ops::sum(&ops::mul(&y, &weights).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(&y), RELU_Y, "ops::relu, {device}");
    assert_eq!(
        values(grads.get(&x).unwrap()),
        RELU_DX,
        "ops::relu gradient, {device}"
    );
}
kiln::test_device!(relu_at_exact_zero_passes_no_gradient);
