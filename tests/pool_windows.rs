//! Pooling windows beyond the plain floor rule: adaptive average pooling (PyTorch's
//! `adaptive_avg_pool2d`). Outputs and gradients against a reference written from PyTorch's
//! documented window rule and against values PyTorch printed, on every device; f32 parity of the
//! kernels with the CPU on odd sizes; bad sizes as errors.

use kiln::nn::{Mode, Module, Pool2d};
use kiln::testing::{assert_close, check_parity, random_away_from_zero, random_vec};
use kiln::{backend, ops, Device, Error, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

fn tensor<T: kiln::Element>(values: Vec<T>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape, Device::Cpu).unwrap()
}

fn random64(shape: &[usize], seed: u64) -> Vec<f64> {
    random_vec::<f64>(&mut StdRng::seed_from_u64(seed), shape.iter().product())
}

fn random32(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    tensor(
        random_away_from_zero(&mut rng, shape.iter().product(), 1e-3),
        shape,
    )
}

// ---------------------------------------------------------------------------------------------
// Adaptive average pooling.

/// PyTorch's documented window of output `i` of `out` over `len` inputs, written out again here
/// (not kiln's function): start = floor(i·len/out), end = ceil((i + 1)·len/out).
fn torch_window(i: usize, len: usize, out: usize) -> std::ops::Range<usize> {
    let start = (i * len) as f64 / out as f64;
    let end = ((i + 1) * len) as f64 / out as f64;
    start.floor() as usize..end.ceil() as usize
}

/// The forward pass and the gradient of Σ y·dy, by the rule above, one plane at a time.
fn adaptive_reference(
    x: &[f64],
    dy: &[f64],
    [n, c, h, w]: [usize; 4],
    (oh, ow): (usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut dx) = (vec![0.0; n * c * oh * ow], vec![0.0; x.len()]);
    for p in 0..n * c {
        for i in 0..oh {
            for j in 0..ow {
                let (rows, cols) = (torch_window(i, h, oh), torch_window(j, w, ow));
                let size = (rows.len() * cols.len()) as f64;
                let o = p * oh * ow + i * ow + j;
                for r in rows.clone() {
                    for s in cols.clone() {
                        y[o] += x[p * h * w + r * w + s] / size;
                        dx[p * h * w + r * w + s] += dy[o] / size;
                    }
                }
            }
        }
    }
    (y, dx)
}

/// Sizes that divide, do not divide (overlapping windows of two sizes), shrink to 1x1, grow
/// (output larger than the input), and a 1x1 input.
const ADAPTIVE_CASES: [([usize; 4], (usize, usize)); 7] = [
    ([2, 3, 7, 9], (3, 4)),
    ([1, 2, 6, 6], (3, 3)),
    ([1, 1, 5, 5], (7, 3)),
    ([2, 2, 4, 7], (1, 1)),
    ([1, 1, 1, 1], (2, 3)),
    ([3, 1, 13, 11], (5, 7)),
    ([1, 4, 2, 3], (3, 5)),
];

fn adaptive_matches_the_documented_rule(device: Device) {
    for (k, (shape, output)) in ADAPTIVE_CASES.into_iter().enumerate() {
        let x = random64(&shape, k as u64);
        let dy = random64(&[shape[0], shape[1], output.0, output.1], 100 + k as u64);
        let (y_ref, dx_ref) = adaptive_reference(&x, &dy, shape, output);
        let to_f32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let xt = tensor(to_f32(&x), &shape)
            .to_device(device)
            .unwrap()
            .with_grad();
        let y = ops::adaptive_avg_pool2d(&xt, output).unwrap();
        assert_eq!(y.shape(), [shape[0], shape[1], output.0, output.1]);
        let dyt = tensor(to_f32(&dy), y.shape()).to_device(device).unwrap();
        let grads = ops::sum(&ops::mul(&y, &dyt).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let got = y.to_vec::<f32>().unwrap();
        assert_close(&got, &to_f32(&y_ref), 1e-6, 1e-5);
        let dx = grads.get(&xt).unwrap().to_vec::<f32>().unwrap();
        assert_close(&dx, &to_f32(&dx_ref), 1e-6, 1e-5);
    }
}
kiln::test_device!(adaptive_matches_the_documented_rule);

/// Values PyTorch 2.15 printed (in f64; kiln's devices compute in f32):
/// ```python
/// x = torch.arange(35., dtype=torch.float64).reshape(1, 1, 5, 7).requires_grad_()
/// y = F.adaptive_avg_pool2d(x, (3, 4))
/// y.backward(torch.arange(1., 13., dtype=torch.float64).reshape(1, 1, 3, 4))
/// F.adaptive_avg_pool2d(torch.arange(6.).reshape(1, 1, 2, 3), (3, 5))
/// ```
fn adaptive_values_from_pytorch(device: Device) {
    let x = tensor((0..35).map(|v| v as f32).collect(), &[1, 1, 5, 7])
        .to_device(device)
        .unwrap()
        .with_grad();
    let y = ops::adaptive_avg_pool2d(&x, (3, 4)).unwrap();
    let y_torch = [
        4.0, 5.5, 7.5, 9.0, 14.5, 16.0, 18.0, 19.5, 25.0, 26.5, 28.5, 30.0,
    ];
    assert_close(&y.to_vec::<f32>().unwrap(), &y_torch, 1e-6, 1e-6);
    let dy = tensor((1..=12).map(|v| v as f32).collect(), &[1, 1, 3, 4])
        .to_device(device)
        .unwrap();
    let grads = ops::sum(&ops::mul(&y, &dy).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let dx_torch = [
        0.25,
        0.5833333333333333,
        0.3333333333333333,
        0.8333333333333333,
        0.5,
        1.5,
        1.0,
        1.0833333333333335,
        2.083333333333333,
        1.0,
        2.2777777777777777,
        1.2777777777777777,
        3.6111111111111107,
        2.333333333333333,
        0.8333333333333334,
        1.5,
        0.6666666666666666,
        1.4444444444444444,
        0.7777777777777778,
        2.111111111111111,
        1.3333333333333333,
        3.0833333333333335,
        5.416666666666667,
        2.3333333333333335,
        4.944444444444445,
        2.611111111111111,
        6.944444444444445,
        4.333333333333333,
        2.25,
        3.916666666666667,
        1.6666666666666667,
        3.5,
        1.8333333333333333,
        4.833333333333333,
        3.0,
    ];
    let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
    assert_close(&dx, &dx_torch.map(|v| v as f32), 1e-6, 1e-6);
    let small = tensor((0..6).map(|v| v as f32).collect(), &[1, 1, 2, 3])
        .to_device(device)
        .unwrap();
    let grown = ops::adaptive_avg_pool2d(&small, (3, 5)).unwrap();
    let grown_torch = [
        0.0, 0.5, 1.0, 1.5, 2.0, 1.5, 2.0, 2.5, 3.0, 3.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    ];
    assert_close(&grown.to_vec::<f32>().unwrap(), &grown_torch, 1e-7, 1e-7);
}
kiln::test_device!(adaptive_values_from_pytorch);

/// f32 outputs and gradients of the kernels against the CPU, on odd sizes.
fn adaptive_matches_cpu(device: Device) {
    for (k, (shape, output)) in ADAPTIVE_CASES.into_iter().enumerate() {
        let x = random32(&shape, 200 + k as u64);
        check_parity("adaptive_avg_pool2d", device, &[x], ATOL, RTOL, |t| {
            ops::adaptive_avg_pool2d(&t[0], output)
        });
    }
}
kiln::test_device!(adaptive_matches_cpu, gpu);

/// `Pool2d::adaptive_avg` is PyTorch's `AdaptiveAvgPool2d`; (1, 1) equals global average pooling.
#[test]
fn adaptive_layer_and_global_average_agree() {
    let x = random32(&[2, 3, 5, 7], 300);
    let mut layer = Pool2d::adaptive_avg(1, 1);
    let y = layer.forward(&x, Mode::Eval).unwrap();
    let global = ops::global_avg_pool2d(&x).unwrap();
    assert_eq!(y.shape(), global.shape());
    assert_close(
        &y.to_vec::<f32>().unwrap(),
        &global.to_vec::<f32>().unwrap(),
        1e-6,
        1e-6,
    );
    let mut layer = Pool2d::adaptive_avg(2, 3);
    assert_eq!(layer.forward(&x, Mode::Eval).unwrap().shape(), [2, 3, 2, 3]);
    assert_eq!(layer.describe(), "AdaptiveAvgPool2d(2x3)");
}

fn assert_invalid(result: kiln::Result<Tensor>, what: &str) {
    match result {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("{what}: expected an InvalidArgument error, got {other:?}"),
    }
}

#[test]
fn adaptive_bad_sizes_are_errors() {
    let x = random32(&[1, 2, 4, 4], 400);
    assert_invalid(ops::adaptive_avg_pool2d(&x, (0, 2)), "output height 0");
    assert_invalid(ops::adaptive_avg_pool2d(&x, (2, 0)), "output width 0");
    let flat = x.reshape(&[2, 16]).unwrap();
    assert_invalid(ops::adaptive_avg_pool2d(&flat, (1, 1)), "2-d input");
    let empty = tensor(Vec::<f32>::new(), &[0, 2, 4, 4]);
    assert_invalid(ops::adaptive_avg_pool2d(&empty, (1, 1)), "empty batch");
    let a = kiln::shape::AdaptivePool2d::new("test", &[1, 2, 4, 4], (2, 2)).unwrap();
    let wrong = random32(&[1, 2, 3, 3], 401);
    assert!(backend::adaptive_avgpool_fwd(&wrong, &a).is_err());
    assert!(backend::adaptive_avgpool_bwd(&wrong, &a).is_err());
}
