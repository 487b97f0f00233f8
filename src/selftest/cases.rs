//! The rows of the pointwise primitives: elementwise arithmetic, casts, activations, losses,
//! dropout and the fused optimizer updates; and the list of every row.
//!
//! Each row's function computes its outputs on any device from fixed seeds (inputs made on the
//! CPU and moved there), so the CPU's run is the reference for the device's.

use half::{bf16, f16};

use super::{gemm, layers, Case, Outputs, Tolerance};
use crate::backend::{self, AdamStep, Factor, RawTensor};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::shape::numel;
use crate::tensor::Tensor;
use crate::testing::{random_away_from_zero, rng, rounding_edge_values};

/// Pointwise f32 results (tests/parity.rs's tolerance).
pub(super) const POINTWISE: Tolerance = Tolerance::Close {
    atol: 1e-5,
    rtol: 1e-4,
};

/// An odd 4-d shape: 1155 elements, no multiple of 4 (the 16-byte accesses) or of a block.
pub(super) const SHAPE: [usize; 4] = [3, 5, 7, 11];

/// Values uniform in ±[1e-3, 1), kept away from 0 so that kinks (ReLU at 0) are not decided by
/// rounding, on `device`.
pub(super) fn uniform(shape: &[usize], seed: u64, device: Device) -> Result<RawTensor> {
    let values = random_away_from_zero(&mut rng(seed), numel(shape), 1e-3);
    RawTensor::from_vec(values, shape, device)
}

/// [`uniform`] as an untracked `Tensor`, the input of an op's row.
pub(super) fn input(shape: &[usize], seed: u64, device: Device) -> Result<Tensor> {
    uniform(shape, seed, device).map(Tensor::from)
}

/// Values uniform in [0, 1) on `device` (targets, squared averages).
pub(super) fn unit(shape: &[usize], seed: u64, device: Device) -> Result<RawTensor> {
    RawTensor::uniform(shape, 0.0, 1.0, seed, device)
}

/// Values uniform in [−3, 9), on both sides of both of ReLU6's kinks (0 and 6).
fn relu6_input(device: Device) -> Result<RawTensor> {
    RawTensor::uniform(&SHAPE, -3.0, 9.0, 42, device)
}

/// Every row, in the order the selftest runs them.
pub(super) fn all() -> Vec<Case> {
    let mut cases = pointwise();
    cases.extend(layers::cases());
    cases.extend(gemm::cases());
    cases
}

fn pointwise() -> Vec<Case> {
    let fwd = "forward";
    let bwd = "backward";
    let exact = Tolerance::Exact;
    vec![
        Case::new("add", fwd, POINTWISE, &["axpby_f32"], |d| {
            let (a, b) = (uniform(&SHAPE, 1, d)?, uniform(&SHAPE, 2, d)?);
            Ok(vec![("a + b", backend::add(&a, &b)?)])
        }),
        Case::new("mul", fwd, POINTWISE, &["mul_f32"], |d| {
            let (a, b) = (uniform(&SHAPE, 3, d)?, uniform(&SHAPE, 4, d)?);
            Ok(vec![("a·b", backend::mul(&a, &b)?)])
        }),
        Case::new("axpby", fwd, POINTWISE, &["axpby_f32"], |d| {
            let (a, b) = (uniform(&SHAPE, 5, d)?, uniform(&SHAPE, 6, d)?);
            Ok(vec![("0.5a − 2b", backend::axpby(0.5, &a, -2.0, &b)?)])
        }),
        Case::new("cast f32->bf16", fwd, exact, &["cast_f32_to_16bit"], |d| {
            let x = Tensor::from_vec(cast_inputs(), &[cast_inputs().len()], d)?;
            Ok(vec![("bf16", backend::cast(&x, DType::BF16)?)])
        }),
        Case::new("cast bf16->f32", fwd, exact, &["cast_16bit_to_f32"], |d| {
            let every: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
            let x = Tensor::from_vec(every, &[1 << 16], d)?;
            Ok(vec![("f32", backend::cast(&x, DType::F32)?)])
        }),
        Case::new("cast f32->f16", fwd, exact, &["cast_f32_to_16bit"], |d| {
            let x = Tensor::from_vec(cast_inputs(), &[cast_inputs().len()], d)?;
            Ok(vec![("f16", backend::cast(&x, DType::F16)?)])
        }),
        Case::new("cast f16->f32", fwd, exact, &["cast_16bit_to_f32"], |d| {
            let every: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
            let x = Tensor::from_vec(every, &[1 << 16], d)?;
            Ok(vec![("f32", backend::cast(&x, DType::F32)?)])
        }),
        Case::new("relu", fwd, POINTWISE, &["relu_fwd_f32"], |d| {
            let (y, mask) = backend::relu_fwd(&uniform(&SHAPE, 10, d)?)?;
            Ok(vec![("y", y), ("mask", mask)])
        }),
        Case::new("relu", bwd, POINTWISE, &["relu_bwd_f32"], |d| {
            let (_, mask) = backend::relu_fwd(&uniform(&SHAPE, 10, d)?)?;
            let dy = uniform(&SHAPE, 11, d)?;
            Ok(vec![("dx", backend::relu_bwd(&dy, &mask)?)])
        }),
        Case::new("leaky_relu", fwd, POINTWISE, &["leaky_relu_fwd_f32"], |d| {
            let x = uniform(&SHAPE, 12, d)?;
            Ok(vec![("y", backend::leaky_relu_fwd(&x, 0.1)?)])
        }),
        Case::new("leaky_relu", bwd, POINTWISE, &["leaky_relu_bwd_f32"], |d| {
            let (x, dy) = (uniform(&SHAPE, 12, d)?, uniform(&SHAPE, 13, d)?);
            Ok(vec![("dx", backend::leaky_relu_bwd(&x, &dy, 0.1)?)])
        }),
        Case::new("elu", fwd, POINTWISE, &["elu_fwd_f32"], |d| {
            let x = uniform(&SHAPE, 14, d)?;
            Ok(vec![("y", backend::elu_fwd(&x, 0.7)?)])
        }),
        Case::new("elu", bwd, POINTWISE, &["elu_bwd_f32"], |d| {
            let (x, dy) = (uniform(&SHAPE, 14, d)?, uniform(&SHAPE, 15, d)?);
            Ok(vec![("dx", backend::elu_bwd(&x, &dy, 0.7)?)])
        }),
        Case::new("relu6", fwd, POINTWISE, &["relu6_fwd_f32"], |d| {
            Ok(vec![("y", backend::relu6_fwd(&relu6_input(d)?)?)])
        }),
        Case::new("relu6", bwd, POINTWISE, &["relu6_bwd_f32"], |d| {
            let dy = uniform(&SHAPE, 43, d)?;
            Ok(vec![("dx", backend::relu6_bwd(&relu6_input(d)?, &dy)?)])
        }),
        Case::new("sigmoid", fwd, POINTWISE, &["sigmoid_fwd_f32"], |d| {
            Ok(vec![("y", backend::sigmoid_fwd(&uniform(&SHAPE, 16, d)?)?)])
        }),
        Case::new("sigmoid", bwd, POINTWISE, &["sigmoid_bwd_f32"], |d| {
            let y = backend::sigmoid_fwd(&uniform(&SHAPE, 16, d)?)?;
            let dy = uniform(&SHAPE, 17, d)?;
            Ok(vec![("dx", backend::sigmoid_bwd(&y, &dy)?)])
        }),
        Case::new("tanh", fwd, POINTWISE, &["tanh_fwd_f32"], |d| {
            Ok(vec![("y", backend::tanh_fwd(&uniform(&SHAPE, 18, d)?)?)])
        }),
        Case::new("tanh", bwd, POINTWISE, &["tanh_bwd_f32"], |d| {
            let y = backend::tanh_fwd(&uniform(&SHAPE, 18, d)?)?;
            let dy = uniform(&SHAPE, 19, d)?;
            Ok(vec![("dx", backend::tanh_bwd(&y, &dy)?)])
        }),
        Case::new("softmax", fwd, POINTWISE, SOFTMAX_FWD, |d| {
            softmax_rows(d, 20, |x| backend::softmax_fwd(x, 1), None)
        }),
        Case::new("softmax", bwd, POINTWISE, SOFTMAX_BWD, |d| {
            let fwd = |x: &RawTensor| backend::softmax_fwd(x, 1);
            softmax_rows(d, 20, fwd, Some(|y, dy| backend::softmax_bwd(y, dy, 1)))
        }),
        Case::new("log_softmax", fwd, POINTWISE, SOFTMAX_FWD, |d| {
            softmax_rows(d, 22, |x| backend::log_softmax_fwd(x, 1), None)
        }),
        Case::new("log_softmax", bwd, POINTWISE, SOFTMAX_BWD, |d| {
            let fwd = |x: &RawTensor| backend::log_softmax_fwd(x, 1);
            let bwd = |y: &RawTensor, dy: &RawTensor| backend::log_softmax_bwd(y, dy, 1);
            softmax_rows(d, 22, fwd, Some(bwd))
        }),
        Case::new(
            "softmax_cross_entropy",
            fwd,
            POINTWISE,
            &["softmax_xent_fwd_f32"],
            |d| {
                let (logits, labels) = xent_inputs(d)?;
                let (probs, losses) = backend::softmax_xent_fwd(&logits, &labels)?;
                Ok(vec![("probabilities", probs), ("losses", losses)])
            },
        ),
        Case::new(
            "softmax_cross_entropy",
            bwd,
            POINTWISE,
            &["softmax_xent_bwd_f32"],
            |d| {
                let (logits, labels) = xent_inputs(d)?;
                let (probs, _) = backend::softmax_xent_fwd(&logits, &labels)?;
                Ok(vec![(
                    "dlogits",
                    backend::softmax_xent_bwd(&probs, &labels, 0.3)?,
                )])
            },
        ),
        Case::new(
            "softmax_cross_entropy smoothed, weighted",
            fwd,
            POINTWISE,
            &["softmax_xent_smooth_fwd_f32"],
            |d| {
                let (logits, labels) = xent_inputs(d)?;
                let weights = xent_weights(d)?;
                let targets = xent_targets(&weights);
                let (probs, losses) = backend::softmax_xent_smooth_fwd(&logits, &labels, targets)?;
                Ok(vec![("probabilities", probs), ("losses", losses)])
            },
        ),
        Case::new(
            "softmax_cross_entropy smoothed, weighted",
            bwd,
            POINTWISE,
            &["softmax_xent_smooth_bwd_f32"],
            |d| {
                let (logits, labels) = xent_inputs(d)?;
                let weights = xent_weights(d)?;
                let targets = xent_targets(&weights);
                let (probs, _) = backend::softmax_xent_smooth_fwd(&logits, &labels, targets)?;
                let dlogits =
                    backend::softmax_xent_smooth_bwd(&probs, &labels, targets, 0.3, None)?;
                Ok(vec![("dlogits", dlogits)])
            },
        ),
        Case::new(
            "mse",
            fwd,
            POINTWISE,
            &["squared_error_fwd_f32", "sum_f32"],
            |d| {
                let (p, t) = (uniform(&PAIR, 30, d)?, uniform(&PAIR, 31, d)?);
                let squares = backend::squared_error_fwd(&p, &t)?;
                let mean = backend::sum(&squares, 1.0 / numel(&PAIR) as f64)?;
                Ok(vec![("squared errors", squares), ("mean", mean)])
            },
        ),
        Case::new("mse", bwd, POINTWISE, &["squared_error_bwd_f32"], |d| {
            let (p, t) = (uniform(&PAIR, 30, d)?, uniform(&PAIR, 31, d)?);
            let factor = Factor::new(2.0 / numel(&PAIR) as f64, None);
            let (dp, dt) = backend::squared_error_bwd(&p, &t, factor, true)?;
            Ok(with_optional(vec![("dprediction", dp)], "dtarget", dt))
        }),
        Case::new(
            "bce_with_logits",
            fwd,
            POINTWISE,
            &["bce_logits_fwd_f32", "sum_f32"],
            |d| {
                let (z, t) = bce_inputs(d)?;
                let losses = backend::bce_logits_fwd(&z, &t)?;
                let mean = backend::sum(&losses, 1.0 / numel(&PAIR) as f64)?;
                Ok(vec![("losses", losses), ("mean", mean)])
            },
        ),
        Case::new(
            "bce_with_logits",
            bwd,
            POINTWISE,
            &["bce_logits_bwd_f32"],
            |d| {
                let (z, t) = bce_inputs(d)?;
                let factor = Factor::new(1.0 / numel(&PAIR) as f64, None);
                let (dz, dt) = backend::bce_logits_bwd(&z, &t, factor, true)?;
                Ok(with_optional(vec![("dlogits", dz)], "dtargets", dt))
            },
        ),
        Case::new("dropout", fwd, POINTWISE, &["dropout_fwd_f32"], |d| {
            let (y, mask) = backend::dropout_fwd(&uniform(&SHAPE, 40, d)?, 0.3, 7)?;
            Ok(vec![("y", y), ("mask", mask)])
        }),
        Case::new("dropout", bwd, POINTWISE, &["dropout_bwd_f32"], |d| {
            let (_, mask) = backend::dropout_fwd(&uniform(&SHAPE, 40, d)?, 0.3, 7)?;
            let dy = uniform(&SHAPE, 41, d)?;
            Ok(vec![("dx", backend::dropout_bwd(&dy, &mask, 0.3)?)])
        }),
        Case::new(
            "sgd_momentum",
            "update",
            POINTWISE,
            &["sgd_momentum_f32"],
            |d| {
                let (mut w, mut v) = (uniform(&PARAM, 50, d)?, uniform(&PARAM, 51, d)?);
                for seed in [52, 53] {
                    let g = uniform(&PARAM, seed, d)?;
                    backend::sgd_momentum(
                        &mut w,
                        &g,
                        &mut v,
                        &backend::MomentumStep::new(0.1, 0.9, 1e-3),
                    )?;
                }
                Ok(vec![("weights", w), ("velocity", v)])
            },
        ),
        Case::new("rmsprop", "update", POINTWISE, &["rmsprop_f32"], |d| {
            let (mut w, mut s) = (uniform(&PARAM, 54, d)?, unit(&PARAM, 55, d)?);
            for seed in [56, 57] {
                let g = uniform(&PARAM, seed, d)?;
                backend::rmsprop(
                    &mut w,
                    &g,
                    &mut s,
                    &backend::RmsPropStep::new(0.01, 0.9, 1e-6, 0.1),
                )?;
            }
            Ok(vec![("weights", w), ("square average", s)])
        }),
        Case::new("adam", "update", POINTWISE, &["adam_f32"], |d| {
            let (mut w, mut m) = (uniform(&PARAM, 58, d)?, uniform(&PARAM, 59, d)?);
            let mut v = unit(&PARAM, 60, d)?;
            for (step, seed) in [(1, 61), (2, 62)] {
                let g = uniform(&PARAM, seed, d)?;
                let hp = AdamStep {
                    lr: 0.01,
                    beta1: 0.8,
                    beta2: 0.99,
                    eps: 1e-6,
                    weight_decay: 0.05,
                    decoupled_weight_decay: 0.1,
                    step,
                };
                backend::adam(&mut w, &g, &mut m, &mut v, &hp)?;
            }
            Ok(vec![
                ("weights", w),
                ("first moment", m),
                ("second moment", v),
            ])
        }),
    ]
}

/// Predictions and targets of the losses: 111 elements.
const PAIR: [usize; 2] = [3, 37];
/// A parameter tensor of the optimizer rows: 993 elements.
const PARAM: [usize; 2] = [3, 331];

/// The softmax kernels: a block per row for rows longer than 32 elements fewer than 32 apart,
/// else a thread per row (src/cuda/activation.rs).
const SOFTMAX_FWD: &[&str] = &["softmax_rows_fwd_f32", "softmax_cols_fwd_f32"];
const SOFTMAX_BWD: &[&str] = &["softmax_rows_bwd_f32", "softmax_cols_bwd_f32"];

/// A softmax-like `fwd` along axis 1 of [5, 37, 3] (one block per row) and of [7, 13] (one thread
/// per row); with `bwd`, its backward from the forward output and a random dy instead.
fn softmax_rows(
    d: Device,
    seed: u64,
    fwd: impl Fn(&RawTensor) -> Result<RawTensor>,
    bwd: Option<fn(&RawTensor, &RawTensor) -> Result<RawTensor>>,
) -> Result<Outputs> {
    let mut outputs = Vec::new();
    for (name, shape) in [("long rows", &[5, 37, 3][..]), ("short rows", &[7, 13][..])] {
        let y = fwd(&uniform(shape, seed, d)?)?;
        let out = match bwd {
            Some(bwd) => bwd(&y, &uniform(shape, seed + 1, d)?)?,
            None => y,
        };
        outputs.push((name, out));
    }
    Ok(outputs)
}

fn with_optional(mut outputs: Outputs, name: &'static str, t: Option<RawTensor>) -> Outputs {
    outputs.extend(t.map(|t| (name, t)));
    outputs
}

/// Logits [7, 13] and labels i·5 mod 13.
fn xent_inputs(d: Device) -> Result<(RawTensor, RawTensor)> {
    let labels: Vec<i32> = (0..7).map(|i| i * 5 % 13).collect();
    Ok((
        uniform(&[7, 13], 23, d)?,
        RawTensor::from_vec(labels, &[7], d)?,
    ))
}

/// Class weights 0, 0.5, 1, 1.5, 0, ... for the 13 classes of [`xent_inputs`] (their sum is 9).
fn xent_weights(d: Device) -> Result<RawTensor> {
    let weights: Vec<f32> = (0..13).map(|c| (c % 4) as f32 * 0.5).collect();
    RawTensor::from_vec(weights, &[13], d)
}

/// [`xent_weights`], their sum, and label smoothing 0.1.
fn xent_targets(weights: &RawTensor) -> backend::XentTargets<'_> {
    backend::XentTargets {
        weights,
        weight_sum: 9.0,
        smoothing: 0.1,
    }
}

/// Logits of magnitude up to 4 and targets in [0, 1).
fn bce_inputs(d: Device) -> Result<(RawTensor, RawTensor)> {
    let z = RawTensor::uniform(&PAIR, -4.0, 4.0, 32, d)?;
    Ok((z, unit(&PAIR, 33, d)?))
}

/// The casts' rounding edge values (kiln::testing::rounding_edge_values) and random values at many
/// scales.
fn cast_inputs() -> Vec<f32> {
    let mut v = rounding_edge_values();
    let random = random_away_from_zero(&mut rng(7), 7 * 257, 0.0);
    for (i, scale) in [1e-6f32, 1e-3, 1.0, 1e3, 6e4, 1e6, 1e30].iter().enumerate() {
        v.extend(random[i * 257..][..257].iter().map(|x| x * scale));
    }
    v
}
