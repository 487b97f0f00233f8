//! Pooling windows beyond the plain floor rule: adaptive average pooling (PyTorch's
//! `adaptive_avg_pool2d`), and max / average pooling with padding and `ceil_mode`. Outputs and
//! gradients against references written from PyTorch's documented rules and against values
//! PyTorch printed, on every device; f32 parity of the kernels with the CPU on odd sizes; ties;
//! the layer's builders; bad sizes as errors.

use kiln::nn::{Mode, Module, Pool2d};
use kiln::shape::PoolWindow;
use kiln::testing::{assert_close, check_parity, random_away_from_zero, random_vec};
use kiln::{backend, ops, Device, Error, Tensor, Window2d};
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

// ---------------------------------------------------------------------------------------------
// Max and average pooling with padding and ceil_mode.

/// A square pooling window: kernel, stride, padding (every side), ceil_mode.
#[derive(Clone, Copy, Debug)]
struct Square {
    k: usize,
    s: usize,
    p: usize,
    ceil: bool,
}

impl Square {
    fn window(self) -> PoolWindow {
        let w = Window2d::square(self.k, self.s, self.p);
        if self.ceil {
            w.ceil_mode()
        } else {
            w.into()
        }
    }

    /// PyTorch's pooling_output_shape, written out again here in signed arithmetic (a window may
    /// be larger than the padded input): div_rtn(len + 2p − k + (ceil ? s − 1 : 0), s) + 1, less
    /// one in ceil_mode when the last window would start at or past len + p.
    fn out_len(self, len: usize) -> usize {
        let Square { k, s, p, ceil } = self;
        let (len, k, s, p) = (len as i64, k as i64, s as i64, p as i64);
        let slack = if ceil { s - 1 } else { 0 };
        let mut out = (len + 2 * p - k + slack).div_euclid(s) + 1;
        if ceil && (out - 1) * s >= len + p {
            out -= 1;
        }
        assert!(out >= 1, "{self:?} over {len}: PyTorch refuses this window");
        out as usize
    }

    /// Window `o`'s rows as PyTorch's CPU kernels take them: `[start, min(start + k, len + p))`
    /// in padded coordinates (its size, the count_include_pad divisor), then clipped to the input.
    fn rows(self, o: usize, len: usize) -> (std::ops::Range<usize>, usize) {
        let start = (o * self.s) as isize - self.p as isize;
        let end = (start + self.k as isize).min((len + self.p) as isize);
        let size = (end - start) as usize;
        (start.max(0) as usize..end.min(len as isize) as usize, size)
    }
}

#[derive(Clone, Copy, Debug)]
enum Reduce {
    Max,
    Avg {
        count_include_pad: bool,
    },
    /// kiln's L2 pool: sqrt(Σ x²) over the in-bounds elements (no divisor, padding counts 0).
    L2,
}

/// The forward pass and the gradient of Σ y·dy over one [N, C, H, W] input, by PyTorch's rules:
/// max over the in-bounds elements (the first maximal one wins), or their sum over the divisor;
/// for L2, the root of their sum of squares (gradient x·dy/y).
fn pool_reference(
    x: &[f64],
    dy: &[f64],
    [n, c, h, w]: [usize; 4],
    sq: Square,
    reduce: Reduce,
) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = (sq.out_len(h), sq.out_len(w));
    let (mut y, mut dx) = (vec![0.0; n * c * oh * ow], vec![0.0; x.len()]);
    for p in 0..n * c {
        for i in 0..oh {
            for j in 0..ow {
                let ((rows, rh), (cols, cw)) = (sq.rows(i, h), sq.rows(j, w));
                let taps: Vec<usize> = rows
                    .flat_map(|r| cols.clone().map(move |s| p * h * w + r * w + s))
                    .collect();
                let o = p * oh * ow + i * ow + j;
                match reduce {
                    Reduce::Max => {
                        let best =
                            taps.iter().copied().fold(
                                taps[0],
                                |b, t| {
                                    if x[t] > x[b] {
                                        t
                                    } else {
                                        b
                                    }
                                },
                            );
                        y[o] = x[best];
                        dx[best] += dy[o];
                    }
                    Reduce::Avg { count_include_pad } => {
                        let divisor = if count_include_pad {
                            rh * cw
                        } else {
                            taps.len()
                        } as f64;
                        y[o] = taps.iter().map(|&t| x[t]).sum::<f64>() / divisor;
                        taps.iter().for_each(|&t| dx[t] += dy[o] / divisor);
                    }
                    Reduce::L2 => {
                        y[o] = taps.iter().map(|&t| x[t] * x[t]).sum::<f64>().sqrt();
                        taps.iter().for_each(|&t| dx[t] += x[t] * dy[o] / y[o]);
                    }
                }
            }
        }
    }
    (y, dx)
}

fn pooled(x: &Tensor, sq: Square, reduce: Reduce) -> kiln::Result<Tensor> {
    match reduce {
        Reduce::Max => ops::max_pool2d(x, sq.window()),
        Reduce::Avg { count_include_pad } => ops::avg_pool2d(x, sq.window(), count_include_pad),
        Reduce::L2 => ops::l2_pool2d(x, sq.window()),
    }
}

/// torchvision's windows (ResNet's stem 3/2/1; GoogLeNet's 3/2 and 2/2 with ceil_mode and its
/// 3/1/1 ceil_mode branch pool) and odd ones: a last window that overhangs the input, one that
/// overhangs the trailing padding, one dropped for starting in it (5 with 2/2/1), stride > kernel;
/// then windows larger than the (padded) input, which only ceil_mode allows: 1x1, 2x2, 3x3 and
/// non-square planes whose only or last window overhangs on both sides.
const CEIL_CASES: [([usize; 4], Square); 15] = [
    (
        [2, 3, 7, 9],
        Square {
            k: 3,
            s: 2,
            p: 1,
            ceil: false,
        },
    ),
    (
        [1, 2, 9, 8],
        Square {
            k: 3,
            s: 2,
            p: 0,
            ceil: true,
        },
    ),
    (
        [2, 1, 7, 11],
        Square {
            k: 2,
            s: 2,
            p: 0,
            ceil: true,
        },
    ),
    (
        [1, 2, 7, 7],
        Square {
            k: 3,
            s: 1,
            p: 1,
            ceil: true,
        },
    ),
    (
        [1, 1, 5, 6],
        Square {
            k: 2,
            s: 2,
            p: 1,
            ceil: true,
        },
    ),
    (
        [2, 2, 5, 5],
        Square {
            k: 2,
            s: 2,
            p: 1,
            ceil: true,
        },
    ),
    (
        [1, 1, 10, 10],
        Square {
            k: 4,
            s: 3,
            p: 2,
            ceil: true,
        },
    ),
    (
        [1, 3, 8, 13],
        Square {
            k: 3,
            s: 2,
            p: 1,
            ceil: true,
        },
    ),
    (
        [1, 1, 6, 9],
        Square {
            k: 2,
            s: 3,
            p: 0,
            ceil: true,
        },
    ),
    (
        [2, 3, 1, 1],
        Square {
            k: 2,
            s: 2,
            p: 0,
            ceil: true,
        },
    ),
    (
        [1, 2, 1, 3],
        Square {
            k: 3,
            s: 3,
            p: 0,
            ceil: true,
        },
    ),
    (
        [2, 2, 2, 2],
        Square {
            k: 3,
            s: 2,
            p: 1,
            ceil: true,
        },
    ),
    (
        [1, 3, 2, 3],
        Square {
            k: 3,
            s: 2,
            p: 0,
            ceil: true,
        },
    ),
    (
        [2, 1, 3, 3],
        Square {
            k: 3,
            s: 3,
            p: 1,
            ceil: true,
        },
    ),
    (
        [1, 2, 3, 2],
        Square {
            k: 2,
            s: 3,
            p: 1,
            ceil: true,
        },
    ),
];

const REDUCTIONS: [Reduce; 4] = [
    Reduce::Max,
    Reduce::Avg {
        count_include_pad: true,
    },
    Reduce::Avg {
        count_include_pad: false,
    },
    Reduce::L2,
];

fn ceil_mode_matches_the_documented_rule(device: Device) {
    for (k, (shape, sq)) in CEIL_CASES.into_iter().enumerate() {
        for reduce in REDUCTIONS {
            let x = random64(&shape, 500 + k as u64);
            let dy_shape = [
                shape[0],
                shape[1],
                sq.out_len(shape[2]),
                sq.out_len(shape[3]),
            ];
            let dy = random64(&dy_shape, 600 + k as u64);
            let (y_ref, dx_ref) = pool_reference(&x, &dy, shape, sq, reduce);
            let to_f32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let xt = tensor(to_f32(&x), &shape)
                .to_device(device)
                .unwrap()
                .with_grad();
            let y = pooled(&xt, sq, reduce).unwrap();
            assert_eq!(y.shape(), dy_shape, "{shape:?} {sq:?} {reduce:?}");
            let dyt = tensor(to_f32(&dy), &dy_shape).to_device(device).unwrap();
            let grads = ops::sum(&ops::mul(&y, &dyt).unwrap())
                .unwrap()
                .backward()
                .unwrap();
            assert_close(&y.to_vec::<f32>().unwrap(), &to_f32(&y_ref), 1e-6, 1e-5);
            let dx = grads.get(&xt).unwrap().to_vec::<f32>().unwrap();
            assert_close(&dx, &to_f32(&dx_ref), 1e-6, 1e-5);
        }
    }
}
kiln::test_device!(ceil_mode_matches_the_documented_rule);

/// Values PyTorch 2.15 printed for x [1, 1, 5, 6] = (7·i mod 11), which has ties:
/// ```python
/// x = (torch.arange(30., dtype=torch.float64).reshape(1, 1, 5, 6) * 7 % 11).requires_grad_()
/// for f in [lambda t: F.max_pool2d(t, 2, 2, 1, ceil_mode=True),
///           lambda t: F.avg_pool2d(t, 2, 2, 1, ceil_mode=True, count_include_pad=True),
///           lambda t: F.avg_pool2d(t, 2, 2, 1, ceil_mode=True, count_include_pad=False),
///           lambda t: F.avg_pool2d(t, 3, 2, 0, ceil_mode=True, count_include_pad=True)]:
///     x.grad = None; y = f(x)
///     (y * torch.arange(1., y.numel() + 1).reshape(y.shape)).sum().backward()
///     print(y.flatten().tolist(), x.grad.flatten().tolist())
/// ```
fn ceil_mode_values_from_pytorch(device: Device) {
    let x: Vec<f32> = (0..30).map(|i| (i * 7 % 11) as f32).collect();
    let x = tensor(x, &[1, 1, 5, 6])
        .to_device(device)
        .unwrap()
        .with_grad();
    type Case = (Square, Reduce, [usize; 2], &'static [f64], &'static [f64]);
    let sq = |k, s, p| Square {
        k,
        s,
        p,
        ceil: true,
    };
    let cases: [Case; 4] = [
        (
            sq(2, 2, 1),
            Reduce::Max,
            [3, 4],
            &[
                0.0, 7.0, 10.0, 2.0, 9.0, 10.0, 8.0, 9.0, 5.0, 10.0, 9.0, 7.0,
            ],
            &[
                1.0, 2.0, 0.0, 3.0, 0.0, 4.0, 5.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0, 6.0, 0.0,
                0.0, 8.0, 9.0, 0.0, 0.0, 0.0, 0.0, 12.0, 0.0, 10.0, 0.0, 0.0, 11.0, 0.0,
            ],
        ),
        (
            sq(2, 2, 1),
            Reduce::Avg {
                count_include_pad: true,
            },
            [3, 4],
            &[
                0.0, 2.5, 4.0, 0.5, 4.0, 4.75, 5.0, 2.25, 2.0, 6.25, 3.75, 3.0,
            ],
            &[
                0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.25, 1.5, 1.5, 1.75, 1.75, 2.0, 1.25, 1.5, 1.5,
                1.75, 1.75, 2.0, 2.25, 2.5, 2.5, 2.75, 2.75, 3.0, 2.25, 2.5, 2.5, 2.75, 2.75, 3.0,
            ],
        ),
        (
            sq(2, 2, 1),
            Reduce::Avg {
                count_include_pad: false,
            },
            [3, 4],
            &[
                0.0, 5.0, 8.0, 2.0, 8.0, 4.75, 5.0, 4.5, 4.0, 6.25, 3.75, 6.0,
            ],
            &[
                1.0, 1.0, 1.0, 1.5, 1.5, 4.0, 2.5, 1.5, 1.5, 1.75, 1.75, 4.0, 2.5, 1.5, 1.5, 1.75,
                1.75, 4.0, 4.5, 2.5, 2.5, 2.75, 2.75, 6.0, 4.5, 2.5, 2.5, 2.75, 2.75, 6.0,
            ],
        ),
        (
            sq(3, 2, 0),
            Reduce::Avg {
                count_include_pad: true,
            },
            [2, 3],
            &[
                5.0,
                5.555555555555555,
                3.8333333333333335,
                5.888888888888889,
                5.222222222222222,
                5.333333333333333,
            ],
            &[
                0.1111111111111111,
                0.1111111111111111,
                0.3333333333333333,
                0.2222222222222222,
                0.7222222222222222,
                0.5,
                0.1111111111111111,
                0.1111111111111111,
                0.3333333333333333,
                0.2222222222222222,
                0.7222222222222222,
                0.5,
                0.5555555555555556,
                0.5555555555555556,
                1.3333333333333333,
                0.7777777777777778,
                2.2777777777777777,
                1.5,
                0.4444444444444444,
                0.4444444444444444,
                1.0,
                0.5555555555555556,
                1.5555555555555556,
                1.0,
                0.4444444444444444,
                0.4444444444444444,
                1.0,
                0.5555555555555556,
                1.5555555555555556,
                1.0,
            ],
        ),
    ];
    for (sq, reduce, [oh, ow], y_torch, dx_torch) in cases {
        let y = pooled(&x, sq, reduce).unwrap();
        assert_eq!(y.shape(), [1, 1, oh, ow], "{sq:?} {reduce:?}");
        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        assert_close(&y.to_vec::<f32>().unwrap(), &f32s(y_torch), 1e-6, 1e-6);
        let w = tensor((1..=oh * ow).map(|v| v as f32).collect(), &[1, 1, oh, ow])
            .to_device(device)
            .unwrap();
        let grads = ops::sum(&ops::mul(&y, &w).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
        assert_close(&dx, &f32s(dx_torch), 1e-6, 1e-6);
    }
}
kiln::test_device!(ceil_mode_values_from_pytorch);

/// Ties in windows that overhang the end (ceil_mode): the first in-bounds element in row-major
/// window order wins, as without ceil_mode, so the gradient reaches only each window's first tap.
fn ceil_mode_ties_go_to_the_first_element(device: Device) {
    let x = tensor(vec![1.0_f32; 9], &[1, 1, 3, 3])
        .to_device(device)
        .unwrap()
        .with_grad();
    let y = ops::max_pool2d(&x, Window2d::square(2, 2, 0).ceil_mode()).unwrap();
    assert_eq!(y.shape(), [1, 1, 2, 2]);
    assert_eq!(y.to_vec::<f32>().unwrap(), [1.0; 4]);
    let w = tensor(vec![1.0_f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2])
        .to_device(device)
        .unwrap();
    let grads = ops::sum(&ops::mul(&y, &w).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(dx, [1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0]);
}
kiln::test_device!(ceil_mode_ties_go_to_the_first_element);

/// f32 outputs and gradients of the kernels against the CPU on the odd cases above.
fn ceil_mode_matches_cpu(device: Device) {
    for (k, (shape, sq)) in CEIL_CASES.into_iter().enumerate() {
        let x = random32(&shape, 700 + k as u64);
        for reduce in REDUCTIONS {
            check_parity(
                "ceil_mode pooling",
                device,
                std::slice::from_ref(&x),
                ATOL,
                RTOL,
                |t| pooled(&t[0], sq, reduce),
            );
        }
    }
}
kiln::test_device!(ceil_mode_matches_cpu, gpu);

/// torchvision's pooling layers through the builders: output shapes on 112x112 and 7x7 inputs.
#[test]
fn layer_builders_give_torchvisions_shapes() {
    let x = random32(&[1, 2, 112, 112], 800);
    let shape =
        |mut layer: Pool2d, x: &Tensor| layer.forward(x, Mode::Eval).unwrap().shape()[2..].to_vec();
    // ResNet: MaxPool2d(3, 2, padding=1); GoogLeNet: MaxPool2d(3, 2, ceil_mode=True).
    assert_eq!(shape(Pool2d::max(3, 2).padding(1), &x), [56, 56]);
    assert_eq!(shape(Pool2d::max(3, 2).ceil_mode(), &x), [56, 56]);
    assert_eq!(shape(Pool2d::max(3, 2), &x), [55, 55]);
    let small = random32(&[1, 2, 7, 7], 801);
    // GoogLeNet: MaxPool2d(2, 2, ceil_mode=True), MaxPool2d(3, 1, padding=1, ceil_mode=True).
    assert_eq!(shape(Pool2d::max(2, 2).ceil_mode(), &small), [4, 4]);
    assert_eq!(
        shape(Pool2d::max(3, 1).padding(1).ceil_mode(), &small),
        [7, 7]
    );
    assert_eq!(shape(Pool2d::avg(2, 2).ceil_mode(), &small), [4, 4]);
    assert_eq!(shape(Pool2d::avg(3, 2).padding(1), &small), [4, 4]);
    assert_eq!(
        Pool2d::max(3, 1).padding(1).ceil_mode().describe(),
        "MaxPool2d(3x3, stride 1, padding 1, ceil_mode)"
    );
    assert_eq!(Pool2d::max(2, 2).describe(), "MaxPool2d(2x2, stride 2)");
}

const MAX: Reduce = Reduce::Max;
const AVG_INCL: Reduce = Reduce::Avg {
    count_include_pad: true,
};
const AVG_EXCL: Reduce = Reduce::Avg {
    count_include_pad: false,
};
const L2: Reduce = Reduce::L2;

/// ((H, k, s, p), reduction, y, dx) for a 1x1xHxH input, every window ceil_mode.
type TorchCase = (
    (usize, usize, usize, usize),
    Reduce,
    &'static [f64],
    &'static [f64],
);

/// Windows larger than the padded input (ceil_mode lets them overhang it), as PyTorch 2.15
/// printed them (torch venv ~/.cache/kiln/torch-venv, f64), for x = [-2, -1, 1, 2][(3i + 1) % 4]
/// (padding never wins, so an all-negative window gives its maximum, not 0):
/// ```python
/// x = torch.tensor([[-2., -1., 1., 2.][(3 * i + 1) % 4] for i in range(H * H)]).reshape(1, 1, H, H)
/// for f in [lambda t: F.max_pool2d(t, k, s, p, ceil_mode=True),
///           lambda t: F.avg_pool2d(t, k, s, p, ceil_mode=True, count_include_pad=True),
///           lambda t: F.avg_pool2d(t, k, s, p, ceil_mode=True, count_include_pad=False),
///           # kiln's L2 pool sums (F.lp_pool2d would rescale an overhanging window by k²/taps)
///           lambda t: F.avg_pool2d(t * t, k, s, p, ceil_mode=True, divisor_override=1).sqrt()]:
///     x.grad = None; y = f(x.requires_grad_())
///     (y * torch.arange(1., y.numel() + 1).reshape(y.shape)).sum().backward()
///     print(y.flatten().tolist(), x.grad.flatten().tolist())
/// ```
#[rustfmt::skip]
#[allow(clippy::approx_constant)] // PyTorch's values as it printed them (its √2 is 1 ulp below)
const OVERHANGING: [TorchCase; 48] = [
    ((1, 2, 2, 0), MAX, &[-1.0], &[1.0]),
    ((1, 2, 2, 0), AVG_INCL, &[-1.0], &[1.0]),
    ((1, 2, 2, 0), AVG_EXCL, &[-1.0], &[1.0]),
    ((1, 2, 2, 0), L2, &[1.0], &[-1.0]),
    ((1, 3, 3, 0), MAX, &[-1.0], &[1.0]),
    ((1, 3, 3, 0), AVG_INCL, &[-1.0], &[1.0]),
    ((1, 3, 3, 0), AVG_EXCL, &[-1.0], &[1.0]),
    ((1, 3, 3, 0), L2, &[1.0], &[-1.0]),
    ((1, 2, 1, 1), MAX, &[-1.0, -1.0, -1.0, -1.0], &[10.0]),
    ((1, 2, 1, 1), AVG_INCL, &[-0.25, -0.25, -0.25, -0.25], &[2.5]),
    ((1, 2, 1, 1), AVG_EXCL, &[-1.0, -1.0, -1.0, -1.0], &[10.0]),
    ((1, 2, 1, 1), L2, &[1.0, 1.0, 1.0, 1.0], &[-10.0]),
    ((1, 3, 2, 1), MAX, &[-1.0], &[1.0]),
    ((1, 3, 2, 1), AVG_INCL, &[-0.1111111111111111], &[0.1111111111111111]),
    ((1, 3, 2, 1), AVG_EXCL, &[-1.0], &[1.0]),
    ((1, 3, 2, 1), L2, &[1.0], &[-1.0]),
    ((1, 2, 3, 1), MAX, &[-1.0], &[1.0]),
    ((1, 2, 3, 1), AVG_INCL, &[-0.25], &[0.25]),
    ((1, 2, 3, 1), AVG_EXCL, &[-1.0], &[1.0]),
    ((1, 2, 3, 1), L2, &[1.0], &[-1.0]),
    ((2, 3, 2, 0), MAX, &[2.0], &[0.0, 0.0, 1.0, 0.0]),
    ((2, 3, 2, 0), AVG_INCL, &[0.0], &[0.25, 0.25, 0.25, 0.25]),
    ((2, 3, 2, 0), AVG_EXCL, &[0.0], &[0.25, 0.25, 0.25, 0.25]),
    ((2, 3, 2, 0), L2, &[3.1622776601683795], &[-0.31622776601683794, -0.6324555320336759, 0.6324555320336759, 0.31622776601683794]),
    ((2, 3, 3, 0), MAX, &[2.0], &[0.0, 0.0, 1.0, 0.0]),
    ((2, 3, 3, 0), AVG_INCL, &[0.0], &[0.25, 0.25, 0.25, 0.25]),
    ((2, 3, 3, 0), AVG_EXCL, &[0.0], &[0.25, 0.25, 0.25, 0.25]),
    ((2, 3, 3, 0), L2, &[3.1622776601683795], &[-0.31622776601683794, -0.6324555320336759, 0.6324555320336759, 0.31622776601683794]),
    ((2, 3, 2, 1), MAX, &[2.0, 1.0, 2.0, 1.0], &[0.0, 0.0, 4.0, 6.0]),
    ((2, 3, 2, 1), AVG_INCL, &[0.0, -0.16666666666666666, 0.5, 0.25], &[0.1111111111111111, 0.4444444444444444, 0.6111111111111112, 1.9444444444444444]),
    ((2, 3, 2, 1), AVG_EXCL, &[0.0, -0.5, 1.5, 1.0], &[0.25, 1.25, 1.75, 6.75]),
    ((2, 3, 2, 1), L2, &[3.1622776601683795, 2.23606797749979, 2.23606797749979, 1.0], &[-0.31622776601683794, -2.4213099140335075, 3.3157371050334237, 6.552295743516628]),
    ((2, 2, 3, 1), MAX, &[-1.0], &[1.0, 0.0, 0.0, 0.0]),
    ((2, 2, 3, 1), AVG_INCL, &[-0.25], &[0.25, 0.0, 0.0, 0.0]),
    ((2, 2, 3, 1), AVG_EXCL, &[-1.0], &[1.0, 0.0, 0.0, 0.0]),
    ((2, 2, 3, 1), L2, &[1.0], &[-1.0, -0.0, 0.0, 0.0]),
    ((3, 2, 2, 0), MAX, &[1.0, 2.0, 2.0, -1.0], &[0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 3.0, 0.0, 4.0]),
    ((3, 2, 2, 0), AVG_INCL, &[-0.75, 0.0, 1.5, -1.0], &[0.25, 0.25, 1.0, 0.25, 0.25, 1.0, 1.5, 1.5, 4.0]),
    ((3, 2, 2, 0), AVG_EXCL, &[-0.75, 0.0, 1.5, -1.0], &[0.25, 0.25, 1.0, 0.25, 0.25, 1.0, 1.5, 1.5, 4.0]),
    ((3, 2, 2, 0), L2, &[2.6457513110645907, 2.8284271247461903, 2.23606797749979, 1.0], &[-0.3779644730092272, -0.7559289460184544, 1.414213562373095, 0.3779644730092272, -0.3779644730092272, -1.414213562373095, 2.6832815729997477, 1.3416407864998738, -4.0]),
    ((3, 3, 3, 1), MAX, &[1.0, 2.0, 2.0, -1.0], &[0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 3.0, 0.0, 4.0]),
    ((3, 3, 3, 1), AVG_INCL, &[-0.3333333333333333, 0.0, 0.5, -0.25], &[0.1111111111111111, 0.1111111111111111, 0.3333333333333333, 0.1111111111111111, 0.1111111111111111, 0.3333333333333333, 0.5, 0.5, 1.0]),
    ((3, 3, 3, 1), AVG_EXCL, &[-0.75, 0.0, 1.5, -1.0], &[0.25, 0.25, 1.0, 0.25, 0.25, 1.0, 1.5, 1.5, 4.0]),
    ((3, 3, 3, 1), L2, &[2.6457513110645907, 2.8284271247461903, 2.23606797749979, 1.0], &[-0.3779644730092272, -0.7559289460184544, 1.414213562373095, 0.3779644730092272, -0.3779644730092272, -1.414213562373095, 2.6832815729997477, 1.3416407864998738, -4.0]),
    ((3, 2, 3, 1), MAX, &[-1.0, 2.0, 2.0, -1.0], &[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0]),
    ((3, 2, 3, 1), AVG_INCL, &[-0.25, 0.5, 0.5, -0.25], &[0.25, 0.0, 0.5, 0.0, 0.0, 0.0, 0.75, 0.0, 1.0]),
    ((3, 2, 3, 1), AVG_EXCL, &[-1.0, 2.0, 2.0, -1.0], &[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0]),
    ((3, 2, 3, 1), L2, &[1.0, 2.0, 2.0, 1.0], &[-1.0, -0.0, 2.0, 0.0, -0.0, -0.0, 3.0, 0.0, -4.0]),
];

/// ((H, k, s, p), y, dx) of max pooling a 1x1xHxH input of ones, ceil_mode.
type TieCase = ((usize, usize, usize, usize), &'static [f64], &'static [f64]);

/// Ties in windows larger than the input: PyTorch's max_pool2d of ones, backward of
/// Σ y·arange(1, numel + 1) as above; the gradient goes to each window's first in-bounds element.
#[rustfmt::skip]
const OVERHANGING_TIES: [TieCase; 3] = [
    ((2, 3, 2, 1), &[1.0, 1.0, 1.0, 1.0], &[1.0, 2.0, 3.0, 4.0]),
    ((3, 3, 3, 1), &[1.0, 1.0, 1.0, 1.0], &[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0]),
    ((3, 2, 2, 0), &[1.0, 1.0, 1.0, 1.0], &[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0]),
];

/// y = pool(x) and dx = ∂Σ y·w/∂x with w = 1, 2, ... on `device`, in f32, for an HxH plane.
fn pool_and_grad(
    x: &[f32],
    h: usize,
    sq: Square,
    reduce: Reduce,
    device: Device,
) -> (Vec<f32>, Vec<f32>) {
    let x = tensor(x.to_vec(), &[1, 1, h, h])
        .to_device(device)
        .unwrap()
        .with_grad();
    let y = pooled(&x, sq, reduce).unwrap();
    let out = sq.out_len(h);
    assert_eq!(
        y.shape(),
        [1, 1, out, out],
        "{sq:?} {reduce:?} over {h}x{h}"
    );
    let w = tensor(
        (1..=out * out).map(|v| v as f32).collect(),
        &[1, 1, out, out],
    )
    .to_device(device)
    .unwrap();
    let grads = ops::sum(&ops::mul(&y, &w).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
    (y.to_vec::<f32>().unwrap(), dx)
}

fn windows_larger_than_the_input_match_pytorch(device: Device) {
    let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let square = |(k, s, p)| Square {
        k,
        s,
        p,
        ceil: true,
    };
    for ((h, k, s, p), reduce, y_torch, dx_torch) in OVERHANGING {
        let x: Vec<f32> = (0..h * h)
            .map(|i| [-2., -1., 1., 2.][(3 * i + 1) % 4])
            .collect();
        let (y, dx) = pool_and_grad(&x, h, square((k, s, p)), reduce, device);
        let case = format!("{h}x{h}, k {k}, s {s}, p {p}, {reduce:?}");
        assert_eq!(y.len(), y_torch.len(), "{case}");
        assert_close(&y, &f32s(y_torch), 1e-6, 1e-6);
        assert_close(&dx, &f32s(dx_torch), 1e-6, 1e-6);
    }
    for ((h, k, s, p), y_torch, dx_torch) in OVERHANGING_TIES {
        let (y, dx) = pool_and_grad(&vec![1.0; h * h], h, square((k, s, p)), MAX, device);
        assert_eq!(y, f32s(y_torch), "ties, {h}x{h}, k {k}, s {s}, p {p}");
        assert_eq!(dx, f32s(dx_torch), "ties, {h}x{h}, k {k}, s {s}, p {p}");
    }
}
kiln::test_device!(windows_larger_than_the_input_match_pytorch);

/// The error's message, which must name the rule PyTorch names.
fn invalid_message(result: kiln::Result<Tensor>, what: &str) -> String {
    match result {
        Err(err @ Error::InvalidArgument { .. }) => err.to_string(),
        other => panic!("{what}: expected an InvalidArgument error, got {other:?}"),
    }
}

/// PyTorch's two errors (pooling_output_shape, pool2d_shape_check): padding past half the window
/// ("pad should be at most half of effective kernel size") and a window that leaves no output
/// even with ceil_mode's overhang of stride − 1 ("Output size is too small"); and a zero stride.
/// In PyTorch 2.15, F.max_pool2d(torch.zeros(1, 1, 1, 1), 3, 2, 0, ceil_mode=True) and
/// F.max_pool2d(torch.zeros(1, 1, 2, 2), 3, 1, 0, ceil_mode=True) raise "Output size is too
/// small"; F.max_pool2d(torch.zeros(1, 1, 5, 5), 2, 2, 2, ceil_mode=True) raises "pad should be
/// at most half of effective kernel size".
#[test]
fn bad_pool_windows_are_errors_that_say_why() {
    let x = random32(&[1, 1, 5, 5], 900);
    let msg = invalid_message(
        ops::max_pool2d(&x, Window2d::square(2, 2, 2).ceil_mode()),
        "padding 2 with kernel 2",
    );
    assert!(
        msg.contains("at most half of effective kernel size"),
        "{msg}"
    );
    let msg = invalid_message(
        ops::avg_pool2d(&x, Window2d::square(4, 2, 3), true),
        "padding 3 with kernel 4",
    );
    assert!(
        msg.contains("padding 3") && msg.contains("at most 2"),
        "{msg}"
    );
    let one = random32(&[1, 1, 1, 1], 901);
    let two = random32(&[1, 1, 2, 2], 902);
    let too_small = [
        (
            ops::max_pool2d(&one, Window2d::square(3, 2, 0).ceil_mode()),
            "3/2 over 1x1, ceil_mode",
        ),
        (
            ops::max_pool2d(&two, Window2d::square(3, 1, 0).ceil_mode()),
            "3/1 over 2x2, ceil_mode",
        ),
        (
            ops::avg_pool2d(&one, Window2d::square(2, 2, 0), true),
            "2/2 over 1x1",
        ),
        (
            ops::l2_pool2d(&two, Window2d::square(3, 3, 0)),
            "3/3 over 2x2",
        ),
    ];
    for (result, what) in too_small {
        let msg = invalid_message(result, what);
        assert!(msg.contains("output size is too small"), "{what}: {msg}");
    }
    let msg = invalid_message(
        ops::max_pool2d(&x, Window2d::square(2, 0, 0).ceil_mode()),
        "stride 0",
    );
    assert!(msg.contains("stride"), "{msg}");
}

/// A dilated max-pool window whose taps all fall in the padding takes the max of no values: −∞,
/// passing no gradient, as PyTorch's `max_pool2d` (torch 2.15: `F.max_pool2d(x, (2, 2), 1,
/// (1, 0), (3, 1))` of a [1, 1, 2, 5] input is four −∞ and its gradient all 0). kiln also allows
/// padding up to half the dilated span, where such a window can lie between windows that see the
/// input: over 3 rows with k 2, d 4, p 2, the middle of the 3 row windows (taps on rows −1 and 3)
/// is −∞ and the others are rows 2 and 0.
fn a_max_pool_window_of_only_padding_is_minus_infinity(device: Device) {
    let window = |kernel, padding, dilation| Window2d {
        kernel,
        stride: (1, 1),
        padding,
        padding_end: padding,
        dilation,
        floor_output: false,
    };
    let pool = |x: &[f32], shape: &[usize], window: Window2d| {
        let x = tensor(x.to_vec(), shape)
            .to_device(device)
            .unwrap()
            .with_grad();
        let y = ops::max_pool2d(&x, window).unwrap();
        let w: Vec<f32> = (1..=y.numel()).map(|v| v as f32).collect();
        let w = tensor(w, y.shape()).to_device(device).unwrap();
        let grads = ops::sum(&ops::mul(&y, &w).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let dx = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
        (y.shape().to_vec(), y.to_vec::<f32>().unwrap(), dx)
    };
    let x: Vec<f32> = (0..10).map(|i| [-2.0, 1.5, -0.5, 3.0][i % 4]).collect();
    let (shape, y, dx) = pool(&x, &[1, 1, 2, 5], window((2, 2), (1, 0), (3, 1)));
    assert_eq!(shape, [1, 1, 1, 4]);
    assert_eq!(y, [f32::NEG_INFINITY; 4]);
    assert_eq!(dx, [0.0; 10]);

    let x = [1.0, -2.0, 3.0, 4.0, -5.0, 6.0];
    let (shape, y, dx) = pool(&x, &[1, 1, 3, 2], window((2, 1), (2, 0), (4, 1)));
    assert_eq!(shape, [1, 1, 3, 2]);
    let inf = f32::NEG_INFINITY;
    assert_eq!(y, [-5.0, 6.0, inf, inf, 1.0, -2.0]);
    assert_eq!(dx, [5.0, 6.0, 0.0, 0.0, 1.0, 2.0]);
}
kiln::test_device!(a_max_pool_window_of_only_padding_is_minus_infinity);
