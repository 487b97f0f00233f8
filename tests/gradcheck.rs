//! Finite-difference gradient checks in f64 on the CPU, through the tape: each op's backward rule
//! against central differences (see `kiln::testing::gradcheck`).

use kiln::testing::{gradcheck, random_vec};
use kiln::{ops, Device, Tensor, Window2d};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::from_vec(
        random_vec::<f64>(&mut rng, shape.iter().product()),
        shape,
        Device::Cpu,
    )
    .unwrap()
}

/// Distinct values 0.01 apart, shuffled: a 1e-6 step never changes a window's winner or a sign,
/// so nothing sits within the kink band of max-pool or ReLU.
fn well_separated(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut values: Vec<f64> = (0..n)
        .map(|i| (i as f64 - (n / 2) as f64) * 0.01 + 0.005)
        .collect();
    values.shuffle(&mut StdRng::seed_from_u64(seed));
    Tensor::from_vec(values, shape, Device::Cpu).unwrap()
}

#[test]
fn conv2d_gradients() {
    let cases = [
        ([2, 3, 7, 9], 4, Window2d::square(3, 2, 1)),
        ([1, 2, 9, 8], 3, Window2d::square(3, 1, 2).with_dilation(2)),
        ([3, 2, 5, 5], 2, Window2d::square(1, 1, 0)),
        ([2, 2, 6, 7], 3, Window2d::same((2, 3), (1, 1))),
    ];
    for (i, (shape, k, window)) in cases.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let x = random(&shape, seed);
        let w = random(&[k, shape[1], window.kernel.0, window.kernel.1], seed + 1);
        let b = random(&[k], seed + 2);
        gradcheck("conv2d", &[x.clone(), w.clone(), b], |t| {
            ops::conv2d(&t[0], &t[1], Some(&t[2]), window)
        });
        gradcheck("conv2d without bias", &[x, w], |t| {
            ops::conv2d(&t[0], &t[1], None, window)
        });
    }
}

/// Adaptive windows that divide, overlap (7 → 3, 9 → 4) and repeat (5 → 7).
#[test]
fn adaptive_avg_pool_gradients() {
    for (i, (shape, output)) in [
        ([2, 3, 7, 9], (3, 4)),
        ([1, 2, 5, 5], (7, 3)),
        ([1, 1, 6, 4], (2, 2)),
    ]
    .into_iter()
    .enumerate()
    {
        let x = random(&shape, 70 + i as u64);
        gradcheck("adaptive_avg_pool2d", &[x], |t| {
            ops::adaptive_avg_pool2d(&t[0], output)
        });
    }
}

#[test]
fn max_pool_gradients() {
    let x = well_separated(&[2, 3, 7, 9], 3);
    for window in [
        Window2d::square(2, 2, 0),
        Window2d::square(3, 2, 1),
        Window2d::square(2, 3, 0),
    ] {
        gradcheck("max_pool2d", std::slice::from_ref(&x), |t| {
            ops::max_pool2d(&t[0], window)
        });
    }
    // ceil_mode: windows that overhang the input (9 with 3/2 and 2/2) and the padding (3/2/1).
    for window in [
        Window2d::square(3, 2, 0),
        Window2d::square(2, 2, 0),
        Window2d::square(3, 2, 1),
    ] {
        gradcheck("max_pool2d ceil_mode", std::slice::from_ref(&x), |t| {
            ops::max_pool2d(&t[0], window.ceil_mode())
        });
    }
}

/// Average pooling with ceil_mode, both divisors, where windows overhang the input and padding.
#[test]
fn avg_pool_ceil_mode_gradients() {
    let x = random(&[2, 3, 7, 9], 80);
    for window in [Window2d::square(3, 2, 0), Window2d::square(2, 2, 1)] {
        for include in [true, false] {
            gradcheck("avg_pool2d ceil_mode", std::slice::from_ref(&x), |t| {
                ops::avg_pool2d(&t[0], window.ceil_mode(), include)
            });
        }
    }
}

/// ceil_mode windows larger than the (padded) input, which overhang it on both sides: 1x1, 2x2, 3x3
/// and non-square planes (the cases of tests/pool_windows.rs), max, both average divisors and L2.
/// Inputs are well separated (0.005 or more from 0 and from each other), so no finite-difference
/// step changes a max winner or crosses L2's kink at 0.
#[test]
fn pooling_gradients_for_windows_larger_than_the_input() {
    let cases = kiln::testing::pool_windows_past_the_input();
    for (i, (shape, window)) in cases.into_iter().enumerate() {
        let x = well_separated(&shape, 90 + i as u64);
        gradcheck(
            "max_pool2d, window past the input",
            std::slice::from_ref(&x),
            |t| ops::max_pool2d(&t[0], window),
        );
        for include in [true, false] {
            gradcheck(
                "avg_pool2d, window past the input",
                std::slice::from_ref(&x),
                |t| ops::avg_pool2d(&t[0], window, include),
            );
        }
        gradcheck(
            "l2_pool2d, window past the input",
            std::slice::from_ref(&x),
            |t| ops::l2_pool2d(&t[0], window),
        );
    }
}

/// ReLU6 on values in (−9, 9) that keep 1e-3 away from both kinks, 0 and 6.
#[test]
fn relu6_gradients_away_from_the_kinks() {
    let mut rng = StdRng::seed_from_u64(61);
    let values: Vec<f64> = random_vec::<f64>(&mut rng, 3 * 5 * 7)
        .into_iter()
        .map(|v| 9.0 * v)
        .map(|v| {
            if v.abs() < 1e-3 || (v - 6.0).abs() < 1e-3 {
                v + 0.01
            } else {
                v
            }
        })
        .collect();
    let x = Tensor::from_vec(values, &[3, 5, 7], Device::Cpu).unwrap();
    gradcheck("relu6", &[x], |t| ops::relu6(&t[0]));
}

#[test]
fn relu_gradients_away_from_the_kink() {
    gradcheck("relu", &[well_separated(&[3, 5, 7], 5)], |t| {
        ops::relu(&t[0])
    });
}

#[test]
fn linear_gradients() {
    let (x, w, b) = (random(&[5, 7], 1), random(&[3, 7], 2), random(&[3], 3));
    gradcheck("linear", &[x, w, b], |t| {
        ops::linear(&t[0], &t[1], Some(&t[2]))
    });
}

#[test]
fn softmax_cross_entropy_gradients() {
    let labels = Tensor::from_vec(vec![0i32, 6, 3, 3], &[4], Device::Cpu).unwrap();
    gradcheck("softmax_cross_entropy", &[random(&[4, 7], 1)], |t| {
        ops::softmax_cross_entropy(&t[0], &labels)
    });
}

/// Label smoothing, class weights (one of them 0) and both together.
#[test]
fn softmax_cross_entropy_with_options_gradients() {
    let labels = Tensor::from_vec(vec![0i32, 6, 3, 3, 1], &[5], Device::Cpu).unwrap();
    let weights = vec![0.5, 2.0, 0.0, 1.5, 1.0, 0.25, 3.0];
    for (eps, w) in [
        (0.1, None),
        (0.0, Some(weights.clone())),
        (0.3, Some(weights)),
    ] {
        let options = ops::CrossEntropy {
            label_smoothing: eps,
            class_weights: w,
        };
        gradcheck("softmax_cross_entropy_with", &[random(&[5, 7], 90)], |t| {
            ops::softmax_cross_entropy_with(&t[0], &labels, &options)
        });
    }
}

#[test]
fn elementwise_gradients_add_at_branches() {
    // x feeds mul twice (x·x) and add once: its gradient is the sum over all three uses.
    let (x, y) = (random(&[3, 4], 1), random(&[3, 4], 2));
    gradcheck("x·x + y·x", &[x, y], |t| {
        ops::add(&ops::mul(&t[0], &t[0])?, &ops::mul(&t[1], &t[0])?)
    });
    gradcheck("scale, sum, mean", &[random(&[2, 5], 3)], |t| {
        let s = ops::sum(&ops::scale(&t[0], 1.5)?)?;
        ops::mul(&s, &ops::mean(&t[0])?)
    });
}

#[test]
fn flatten_and_reshape_pass_gradients_through() {
    gradcheck("flatten", &[random(&[2, 3, 2, 2], 4)], |t| {
        ops::flatten(&ops::relu(&t[0])?)
    });
}

#[test]
fn small_network_gradients() {
    let x = random(&[2, 2, 6, 6], 1);
    let w1 = random(&[3, 2, 3, 3], 2);
    let b1 = random(&[3], 3);
    let w2 = random(&[4, 3 * 3 * 3], 4);
    gradcheck("conv-pool-linear", &[x, w1, b1, w2], |t| {
        let h = ops::conv2d(&t[0], &t[1], Some(&t[2]), Window2d::square(3, 1, 1))?;
        let h = ops::max_pool2d(&h, Window2d::square(2, 2, 0))?;
        ops::linear(&ops::flatten(&h)?, &t[3], None)
    });
}
