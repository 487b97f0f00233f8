//! Average, L2-norm and global average pooling: f64 gradient checks through the tape, parity of
//! outputs and gradients on every device under test (the kernel emulation always, a real GPU where
//! one is usable), hand-computed values on every device, and bad parameters as errors.
//!
//! Max pooling's overlapping 3x3 stride-2 padded windows are already covered by
//! tests/gradcheck.rs (`max_pool_gradients`) and tests/parity.rs (`maxpool_matches_cpu`,
//! `max_pool_layer_matches_cpu_forward_and_backward`), so they are not repeated here; its ties
//! (the first maximal element of a window wins, padding never does) are checked here by hand.

use kiln::backend::RawTensor;
use kiln::testing::{assert_close, check_parity, gradcheck};
use kiln::testing::{random_away_from_zero, random_vec};
use kiln::{backend, ops, ConvGeometry, DType, Device, Error, Tensor, Window2d};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

/// f64 CPU values uniform in [-1, 1).
fn random64(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let values = random_vec::<f64>(&mut rng, shape.iter().product());
    Tensor::from_vec(values, shape, Device::Cpu).unwrap()
}

/// f64 CPU values with magnitudes in [0.25, 1): every L2 window's norm stays far from 0.
fn away_from_zero64(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let values: Vec<f64> = (0..shape.iter().product())
        .map(|_| {
            let v: f64 = rng.random_range(0.25..1.0);
            if rng.random_bool(0.5) {
                v
            } else {
                -v
            }
        })
        .collect();
    Tensor::from_vec(values, shape, Device::Cpu).unwrap()
}

/// f32 CPU values for parity, magnitudes at least 1e-3.
fn random32(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let values = random_away_from_zero(&mut rng, shape.iter().product(), 1e-3);
    Tensor::from_vec(values, shape, Device::Cpu).unwrap()
}

/// Shapes and windows: odd sizes, overlapping 3x3 stride-2 windows with padding 1, batch 1, stride
/// larger than the kernel, dilation, asymmetric ('same' with an even kernel) padding. Average
/// pooling refuses padding past half the window (as PyTorch), so windows that see only padding
/// are an L2-pooling case, [`padding_only_case`].
fn cases() -> Vec<([usize; 4], Window2d)> {
    vec![
        ([2, 3, 7, 9], Window2d::square(3, 2, 1)),
        ([1, 2, 9, 8], Window2d::square(3, 2, 1)),
        ([1, 1, 5, 5], Window2d::square(3, 2, 1)),
        ([2, 2, 7, 5], Window2d::square(2, 3, 0)),
        ([1, 2, 11, 9], Window2d::square(3, 1, 1).with_dilation(2)),
        ([2, 1, 6, 7], Window2d::same((4, 2), (1, 1))),
    ]
}

/// Padding wide enough to leave windows that see only padding (L2 pooling accepts it).
fn padding_only_case() -> ([usize; 4], Window2d) {
    ([1, 2, 2, 3], Window2d::new((1, 2), (2, 1), (2, 1)))
}

fn l2_cases() -> Vec<([usize; 4], Window2d)> {
    let mut cases = cases();
    cases.push(padding_only_case());
    cases
}

#[test]
fn avg_pool_gradients() {
    for (i, (shape, window)) in cases().into_iter().enumerate() {
        let x = random64(&shape, i as u64);
        for include in [true, false] {
            gradcheck("avg_pool2d", std::slice::from_ref(&x), |t| {
                ops::avg_pool2d(&t[0], window, include)
            });
        }
    }
}

#[test]
fn l2_pool_gradients() {
    for (i, (shape, window)) in l2_cases().into_iter().enumerate() {
        gradcheck(
            "l2_pool2d",
            &[away_from_zero64(&shape, 10 + i as u64)],
            |t| ops::l2_pool2d(&t[0], window),
        );
    }
}

#[test]
fn global_avg_pool_gradients() {
    for (i, shape) in [[1, 3, 5, 7], [2, 2, 3, 3], [3, 1, 1, 1]]
        .iter()
        .enumerate()
    {
        gradcheck(
            "global_avg_pool2d",
            &[random64(shape, 20 + i as u64)],
            |t| ops::global_avg_pool2d(&t[0]),
        );
    }
}

/// Pooling after another op: gradients flow through the pooled tensor into what produced it.
#[test]
fn pooling_chains_gradients() {
    let x = away_from_zero64(&[1, 2, 7, 7], 30);
    gradcheck("avg -> l2 -> global", &[x], |t| {
        let h = ops::avg_pool2d(&t[0], Window2d::square(3, 1, 1), false)?;
        let h = ops::l2_pool2d(&h, Window2d::square(3, 2, 1))?;
        ops::global_avg_pool2d(&h)
    });
}

fn avg_pool_matches_cpu_on_every_device(device: Device) {
    for (i, (shape, window)) in cases().into_iter().enumerate() {
        let x = random32(&shape, 40 + i as u64);
        for include in [true, false] {
            check_parity(
                "avg_pool2d",
                device,
                std::slice::from_ref(&x),
                ATOL,
                RTOL,
                |t| ops::avg_pool2d(&t[0], window, include),
            );
        }
    }
}
kiln::test_device!(avg_pool_matches_cpu_on_every_device, gpu);

fn l2_pool_matches_cpu_on_every_device(device: Device) {
    for (i, (shape, window)) in l2_cases().into_iter().enumerate() {
        let x = random32(&shape, 50 + i as u64);
        check_parity("l2_pool2d", device, &[x], ATOL, RTOL, |t| {
            ops::l2_pool2d(&t[0], window)
        });
    }
}
kiln::test_device!(l2_pool_matches_cpu_on_every_device, gpu);

/// ceil_mode windows larger than the (padded) input, overhanging it on both sides: average (both
/// divisors: PyTorch's count_include_pad divisor stops at the padding) and L2 pooling.
fn windows_past_the_input_match_cpu_on_every_device(device: Device) {
    let cases = kiln::testing::pool_windows_past_the_input();
    for (i, (shape, window)) in cases.into_iter().enumerate() {
        let x = random32(&shape, 70 + i as u64);
        for include in [true, false] {
            check_parity(
                "avg_pool2d, window past the input",
                device,
                std::slice::from_ref(&x),
                ATOL,
                RTOL,
                |t| ops::avg_pool2d(&t[0], window, include),
            );
        }
        check_parity(
            "l2_pool2d, window past the input",
            device,
            &[x],
            ATOL,
            RTOL,
            |t| ops::l2_pool2d(&t[0], window),
        );
    }
}
kiln::test_device!(windows_past_the_input_match_cpu_on_every_device, gpu);

/// Planes smaller than, close to, and larger than the 256-thread block, so the kernel's strided
/// per-thread sums and its tree are both exercised.
fn global_avg_pool_matches_cpu_on_every_device(device: Device) {
    for (i, shape) in [[1, 3, 5, 7], [2, 3, 19, 23], [3, 2, 16, 16], [1, 1, 1, 1]]
        .iter()
        .enumerate()
    {
        let x = random32(shape, 60 + i as u64);
        check_parity(
            "global_avg_pool2d",
            device,
            std::slice::from_ref(&x),
            ATOL,
            RTOL,
            |t| ops::global_avg_pool2d(&t[0]),
        );
        // The shared-memory tree adds in a fixed order: repeated runs agree bit for bit.
        let xd = x.to_device(device).unwrap();
        let first = backend::global_avgpool_fwd(&xd)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let again = backend::global_avgpool_fwd(&xd)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(first, again);
    }
}
kiln::test_device!(global_avg_pool_matches_cpu_on_every_device, gpu);

/// The lecture's 4x4 example.
const LECTURE: [f32; 16] = [
    1., 3., 2., 4., 2., 9., 1., 1., 1., 3., 2., 3., 5., 6., 1., 2.,
];

fn lecture_on(device: Device) -> Tensor {
    Tensor::from_vec(LECTURE.to_vec(), &[1, 1, 4, 4], device).unwrap()
}

/// 2x2 windows with stride 2: sums 15, 8, 15, 8 (by hand), so means 3.75, 2, 3.75, 2; sums of
/// squares 95, 22, 71, 18 (by hand), so L2 norms are their square roots; the mean of all 16 values
/// is 46 / 16 = 2.875. Gradients of Σ y: avg gives 1/4 everywhere, global avg 1/16, L2 x / y.
fn lecture_values_on_every_device(device: Device) {
    let window = Window2d::square(2, 2, 0);
    let window_of = |i: usize| (i / 8) * 2 + (i % 4) / 2;
    let norms = [95.0f32, 22.0, 71.0, 18.0].map(f32::sqrt);
    let x = lecture_on(device).with_grad();
    for include in [true, false] {
        let y = ops::avg_pool2d(&x, window, include).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_close(
            &y.to_vec::<f32>().unwrap(),
            &[3.75, 2.0, 3.75, 2.0],
            1e-6,
            0.0,
        );
        let grads = ops::sum(&y).unwrap().backward().unwrap();
        let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
        assert_close(&dx, &[0.25; 16], 1e-7, 0.0);
    }

    let y = ops::l2_pool2d(&x, window).unwrap();
    assert_close(&y.to_vec::<f32>().unwrap(), &norms, 0.0, 1e-6);
    let grads = ops::sum(&y).unwrap().backward().unwrap();
    let expected: Vec<f32> = (0..16).map(|i| LECTURE[i] / norms[window_of(i)]).collect();
    let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
    assert_close(&dx, &expected, 0.0, 1e-6);

    let y = ops::global_avg_pool2d(&x).unwrap();
    assert_eq!(y.shape(), &[1, 1, 1, 1]);
    assert_close(&y.to_vec::<f32>().unwrap(), &[2.875], 0.0, 1e-7);
    let grads = ops::sum(&y).unwrap().backward().unwrap();
    let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
    assert_close(&dx, &[1.0 / 16.0; 16], 0.0, 1e-7);
}
kiln::test_device!(lecture_values_on_every_device);

/// x = [[0,0],[3,4]] with 1x2 windows: norms 0 and 5 (by hand). The zero window passes 0 gradient
/// (not 0/0), the other x / 5; on every device.
fn l2_pool_zero_window_passes_no_gradient_on_every_device(device: Device) {
    let x = Tensor::from_vec(vec![0.0f32, 0.0, 3.0, 4.0], &[1, 1, 2, 2], device)
        .unwrap()
        .with_grad();
    let y = ops::l2_pool2d(&x, Window2d::valid((1, 2), (1, 1))).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), [0.0, 5.0]);
    let grads = ops::sum(&y).unwrap().backward().unwrap();
    let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
    assert_close(&dx, &[0.0, 0.0, 0.6, 0.8], 1e-7, 0.0);
}
kiln::test_device!(l2_pool_zero_window_passes_no_gradient_on_every_device);

/// x = [[1,2,3],[4,5,6],[7,8,9]], 3x3 windows, stride 2, padding 1: each window sees a 2x2 corner
/// (sums 12, 16, 24, 28 by hand), divided by 9 with count_include_pad and by 4 without.
fn avg_pool_padding_modes_on_every_device(device: Device) {
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let x = Tensor::from_vec(x, &[1, 1, 3, 3], device).unwrap();
    let window = Window2d::square(3, 2, 1);
    let y = ops::avg_pool2d(&x, window, true).unwrap();
    let expected = [12.0f32, 16.0, 24.0, 28.0].map(|s| s / 9.0);
    assert_close(&y.to_vec::<f32>().unwrap(), &expected, 0.0, 1e-6);
    let y = ops::avg_pool2d(&x, window, false).unwrap();
    assert_close(
        &y.to_vec::<f32>().unwrap(),
        &[3.0, 4.0, 6.0, 7.0],
        0.0,
        1e-6,
    );
}
kiln::test_device!(avg_pool_padding_modes_on_every_device);

#[track_caller]
fn assert_invalid(result: kiln::Result<Tensor>, what: &str) {
    match result {
        Err(Error::InvalidArgument { what: w, .. }) if w == what => {}
        Err(e) => panic!("expected an invalid {what}, got: {e}"),
        Ok(t) => panic!(
            "expected an invalid {what}, got a tensor of shape {:?}",
            t.shape()
        ),
    }
}

#[test]
fn bad_parameters_are_errors() {
    let x = random32(&[1, 2, 5, 5], 1);
    let zero_stride = Window2d::square(3, 0, 0);
    let too_large = Window2d::square(4, 1, 0).with_dilation(2); // spans 7 > 5
    let padded_too_small = Window2d::square(8, 1, 1); // spans 8 > 5 + 2
    for include in [true, false] {
        assert_invalid(ops::avg_pool2d(&x, zero_stride, include), "stride");
        assert_invalid(ops::avg_pool2d(&x, too_large, include), "kernel size");
        assert_invalid(
            ops::avg_pool2d(&x, padded_too_small, include),
            "kernel size",
        );
        assert_invalid(
            ops::avg_pool2d(&x, Window2d::square(0, 1, 0), include),
            "kernel size",
        );
        let flat = x.reshape(&[2, 5, 5]).unwrap();
        assert_invalid(
            ops::avg_pool2d(&flat, Window2d::square(2, 2, 0), include),
            "input shape",
        );
    }
    assert_invalid(ops::l2_pool2d(&x, zero_stride), "stride");
    assert_invalid(ops::l2_pool2d(&x, too_large), "kernel size");
    assert_invalid(ops::l2_pool2d(&x, padded_too_small), "kernel size");
    assert_invalid(
        ops::l2_pool2d(&x.reshape(&[1, 2, 25]).unwrap(), Window2d::square(2, 2, 0)),
        "input shape",
    );
    assert_invalid(
        ops::l2_pool2d(&x, Window2d::square(2, 1, 0).with_dilation(0)),
        "dilation",
    );
    assert_invalid(
        ops::global_avg_pool2d(&x.reshape(&[2, 25]).unwrap()),
        "input shape",
    );
    assert_invalid(
        ops::global_avg_pool2d(&x.reshape(&[1, 2, 5, 5, 1]).unwrap()),
        "input shape",
    );
    let empty = Tensor::from_vec(Vec::<f32>::new(), &[1, 2, 0, 3], Device::Cpu).unwrap();
    assert_invalid(ops::global_avg_pool2d(&empty), "input shape");
}

/// PyTorch: "pad should be at most half of effective kernel size", per side and axis, for max
/// and average pooling; such padding is what makes windows that see only padding.
#[test]
fn pool_padding_past_half_the_window_is_an_error() {
    let x = random32(&[1, 2, 5, 5], 1);
    let (shape, padding_only) = padding_only_case();
    let small = random32(&shape, 2);
    let refused = [
        (
            &small,
            padding_only,
            "top padding 2 on the height",
            "kernel size 1",
        ),
        (
            &x,
            Window2d::square(3, 1, 2),
            "top padding 2",
            "kernel size 3",
        ),
        (
            &x,
            Window2d::square(2, 1, 2),
            "top padding 2",
            "kernel size 2",
        ),
        (
            &x,
            Window2d::square(3, 1, 1).with_padding(1, 2, 1, 1),
            "bottom padding 2",
            "3",
        ),
        (
            &x,
            Window2d::square(3, 1, 1).with_padding(1, 1, 0, 2),
            "right padding 2 on the width",
            "3",
        ),
        (
            &x,
            Window2d::square(2, 1, 2).with_dilation(2),
            "dilation 2: span 3",
            "at most 1",
        ),
    ];
    for (input, window, side, kernel) in refused {
        let results = [
            ("max_pool2d", ops::max_pool2d(input, window)),
            ("avg_pool2d", ops::avg_pool2d(input, window, true)),
            ("avg_pool2d", ops::avg_pool2d(input, window, false)),
        ];
        for (op, result) in results {
            match result {
                Err(
                    e @ Error::InvalidArgument {
                        what: "padding", ..
                    },
                ) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(op) && msg.contains(side) && msg.contains(kernel),
                        "{msg}"
                    );
                }
                Err(e) => panic!("{op} {window:?}: expected an invalid padding, got: {e}"),
                Ok(_) => panic!("{op} {window:?}: padding past half the window was accepted"),
            }
        }
    }
    // Exactly half is allowed, including 'same' with an even kernel and a dilated span.
    for window in [
        Window2d::square(2, 1, 1),
        Window2d::square(5, 1, 2),
        Window2d::same((4, 2), (1, 1)),
        Window2d::square(2, 1, 1).with_dilation(2),
    ] {
        ops::max_pool2d(&x, window).unwrap();
        ops::avg_pool2d(&x, window, false).unwrap();
    }
}

#[test]
fn mismatched_backend_arguments_are_errors() {
    let g = ConvGeometry::new([1, 2, 5, 5], Window2d::square(3, 2, 1), false).unwrap();
    let x = random32(&[1, 2, 5, 5], 1);
    let y = backend::l2pool_fwd(&x, &g).unwrap();
    assert_eq!(y.shape(), &[1, 2, 3, 3]);
    // Wrong input shape for the geometry.
    assert!(backend::avgpool_fwd(&random32(&[1, 2, 5, 6], 2), &g, true).is_err());
    assert!(backend::l2pool_fwd(&random32(&[2, 2, 5, 5], 2), &g).is_err());
    // Wrong gradient shapes.
    assert!(backend::avgpool_bwd(&random32(&[1, 2, 2, 3], 3), &g, false).is_err());
    assert!(backend::l2pool_bwd(&x, &y, &random32(&[1, 2, 3, 2], 3), &g).is_err());
    assert!(backend::l2pool_bwd(&y, &y, &y, &g).is_err());
    assert!(backend::global_avgpool_bwd(&random32(&[1, 3, 1, 1], 4), &[1, 2, 5, 5]).is_err());
    assert!(backend::global_avgpool_bwd(&random32(&[1, 2, 1, 1], 4), &[1, 2, 5]).is_err());
    // Integer inputs.
    let ints = Tensor::from_vec(vec![1i32; 50], &[1, 2, 5, 5], Device::Cpu).unwrap();
    assert!(matches!(
        backend::avgpool_fwd(&ints, &g, true),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(backend::global_avgpool_fwd(&ints).is_err());
    // Mixed f32 / f64 in the L2 backward.
    let y64 = y.to_dtype(DType::F64).unwrap();
    assert!(backend::l2pool_bwd(&x, &y64, &y, &g).is_err());
    // Tensors on different devices.
    let emulated = x.to_device(Device::CudaEmulated).unwrap();
    assert!(matches!(
        backend::l2pool_bwd(&emulated, &y, &y, &g),
        Err(Error::DeviceMismatch { .. })
    ));
    // f64 on a device: the kernels are f32.
    let x64 = x.to_dtype(DType::F64).unwrap();
    if let Ok(x64_dev) = x64.to_device(Device::CudaEmulated) {
        assert!(backend::l2pool_fwd(&x64_dev, &g).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Max pooling ties: PyTorch's rule is that the first maximal element in the window's row-major
// scan wins (its argmax, and the whole gradient), and padding never does.

/// One max-pool case worked out by hand: the input plane, the window, and per output the max,
/// the argmax (h·W + w in the input plane) and, for dy = 1, 2, 4, … (powers of two, so each
/// input's gradient names the windows that sent it), the input gradient.
struct TieCase {
    name: &'static str,
    shape: [usize; 4],
    window: Window2d,
    x: Vec<f32>,
    y: Vec<f32>,
    argmax: Vec<i32>,
    dx: Vec<f32>,
}

fn tie_cases() -> Vec<TieCase> {
    vec![
        // 3x3 windows, stride 1 (overlapping), over
        //   1 3 3 0 2
        //   3 1 2 3 3
        //   0 3 1 3 0
        //   2 2 2 2 2
        // Every window's max is 3, reached 3 to 5 times; the first in row-major order is (0,1)
        // for windows (0,0) and (0,1), (0,2) for (0,2), (1,0) for (1,0), (1,3) for (1,1) and
        // (1,2). dy = 1, 2, 4, 8, 16, 32: input 1 gets 1 + 2, input 2 4, input 5 8, input 8
        // 16 + 32.
        TieCase {
            name: "3x3 stride 1",
            shape: [1, 1, 4, 5],
            window: Window2d::square(3, 1, 0),
            x: vec![
                1., 3., 3., 0., 2., 3., 1., 2., 3., 3., 0., 3., 1., 3., 0., 2., 2., 2., 2., 2.,
            ],
            y: vec![3.; 6],
            argmax: vec![1, 1, 2, 5, 8, 8],
            dx: vec![
                0., 3., 4., 0., 0., 8., 0., 0., 48., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0.,
            ],
        },
        // A constant −1 plane, 3x3 windows, stride 2, padding 1 (overlapping, each window part
        // padding): every tap that reads the input ties, padding (−inf in PyTorch) never wins,
        // so the max is −1 and the winner the first in-bounds tap: (0,0), (0,1), (1,0), (1,1).
        TieCase {
            name: "3x3 stride 2 pad 1, constant -1",
            shape: [1, 1, 3, 3],
            window: Window2d::square(3, 2, 1),
            x: vec![-1.; 9],
            y: vec![-1.; 4],
            argmax: vec![0, 1, 3, 4],
            dx: vec![1., 2., 0., 4., 8., 0., 0., 0., 0.],
        },
    ]
}

fn max_pool_ties_go_to_the_first_element_in_window_order(device: Device) {
    for case in tie_cases() {
        let g = ConvGeometry::new(case.shape, case.window, false).unwrap();
        let dy: Vec<f32> = (0..case.y.len()).map(|i| (1u32 << i) as f32).collect();
        for format in [DType::F32, DType::BF16, DType::F16] {
            let on = |v: &[f32], shape: &[usize]| {
                Tensor::from_vec(v.to_vec(), shape, Device::Cpu)
                    .unwrap()
                    .to_dtype(format)
                    .unwrap()
                    .to_device(device)
                    .unwrap()
            };
            let what = format!("{}, {device}, {format:?}", case.name);
            let (y, argmax) = backend::maxpool_fwd(&on(&case.x, &case.shape), &g).unwrap();
            let f32s = |t: &RawTensor| t.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
            assert_eq!(f32s(&y), case.y, "max, {what}");
            assert_eq!(
                argmax.to_vec::<i32>().unwrap(),
                case.argmax,
                "argmax, {what}"
            );
            let dx = backend::maxpool_bwd(&on(&dy, y.shape()), &argmax, &g).unwrap();
            assert_eq!(dx.dtype(), format, "{what}");
            assert_eq!(f32s(&dx), case.dx, "input gradient, {what}");
        }
        // The same through the tape (f32).
        let x = Tensor::from_vec(case.x.clone(), &case.shape, device)
            .unwrap()
            .with_grad();
        let y = ops::max_pool2d(&x, case.window).unwrap();
        let weights = Tensor::from_vec(dy.clone(), y.shape(), device).unwrap();
        let grads = ops::sum(&ops::mul(&y, &weights).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(
            dx, case.dx,
            "ops::max_pool2d gradient, {}, {device}",
            case.name
        );
    }
}
kiln::test_device!(max_pool_ties_go_to_the_first_element_in_window_order);
