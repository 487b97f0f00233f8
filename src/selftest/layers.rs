//! The rows of the layers: convolution (im2col + GEMM, with stride, padding, dilation and
//! groups) and its two backward products, transposed convolution, the five poolings, linear with
//! bias, and batch norm in training.

use super::cases::{input, uniform, POINTWISE, SHAPE};
use super::{Case, Outputs, Tolerance};
use crate::backend::ProductFormats;
use crate::backend::{self, BatchNormStats, RawTensor};
use crate::core::device::Device;
use crate::core::error::{Error, Result};
use crate::core::shape::{AdaptivePool2d, ConvGeometry, GroupedConv, Window2d};
use crate::ops;
use crate::tensor::Tensor;

/// Sums of up to a few hundred products in another order (tests/gemm_kernels.rs's tolerance).
pub(super) const PRODUCTS: Tolerance = Tolerance::Close {
    atol: 1e-4,
    rtol: 1e-4,
};

/// Batch norm's per-channel sums (tests/norm_ops.rs's tolerance).
const NORM: Tolerance = Tolerance::Close {
    atol: 2e-5,
    rtol: 2e-4,
};

/// Adaptive pooling of [`SHAPE`] (7x11) to 3x4: overlapping windows of two sizes on both axes.
fn adaptive() -> Result<AdaptivePool2d> {
    AdaptivePool2d::new("adaptive_avg_pool2d", &SHAPE, (3, 4))
}

/// A convolution with its input x, weight w, bias b and an output gradient dy.
struct ConvOperands {
    conv: GroupedConv,
    x: RawTensor,
    w: RawTensor,
    b: RawTensor,
    dy: RawTensor,
}

impl ConvOperands {
    fn new(conv: GroupedConv, seed: u64, d: Device) -> Result<ConvOperands> {
        Ok(ConvOperands {
            x: uniform(&conv.input_shape(), seed, d)?,
            w: uniform(&conv.weight_shape(), seed + 1, d)?,
            b: uniform(&[conv.out_channels], seed + 2, d)?,
            dy: uniform(&conv.output_shape(), seed + 3, d)?,
            conv,
        })
    }

    fn forward(&self) -> Result<RawTensor> {
        backend::conv_forward(
            &self.x,
            &self.w,
            Some(&self.b),
            &self.conv,
            ProductFormats::F32,
        )
    }

    fn input_grad(&self) -> Result<RawTensor> {
        backend::conv_input_grad(&self.w, &self.dy, &self.conv, ProductFormats::F32)
    }

    fn weight_grad(&self) -> Result<RawTensor> {
        backend::conv_weight_grad(&self.x, &self.dy, &self.conv, None)
    }

    fn bias_grad(&self) -> Result<RawTensor> {
        let g = &self.conv.geometry;
        backend::bias_grad(&self.dy, g.batch, self.conv.out_channels, g.col_cols())
    }
}

/// The two convolutions of the conv2d rows on `d`: x [3, 6, 13, 11] in 2 groups into 10
/// channels with a 3x3 window, stride 2, padding 2 and dilation 2 (7x6 outputs); and x
/// [2, 3, 9, 10] into 7 channels with a 4x3 window dilated (1, 2) and 'same' padding, uneven in
/// height (1 above, 2 below).
fn convolutions(d: Device) -> Result<[ConvOperands; 2]> {
    let grouped = GroupedConv {
        geometry: ConvGeometry::new(
            [3, 6, 13, 11],
            Window2d::square(3, 2, 2).with_dilation(2),
            true,
        )?,
        out_channels: 10,
        groups: 2,
    };
    let same = GroupedConv {
        geometry: ConvGeometry::new([2, 3, 9, 10], Window2d::same((4, 3), (1, 2)), true)?,
        out_channels: 7,
        groups: 1,
    };
    Ok([
        ConvOperands::new(grouped, 100, d)?,
        ConvOperands::new(same, 110, d)?,
    ])
}

/// Max, average and L2 pooling: a 3x3 window, stride 2, padding 1 over [3, 5, 7, 11].
fn pool_geometry() -> Result<ConvGeometry> {
    ConvGeometry::new(SHAPE, Window2d::square(3, 2, 1), false)
}

fn pool_inputs(d: Device) -> Result<(ConvGeometry, RawTensor, RawTensor)> {
    let g = pool_geometry()?;
    let x = uniform(&SHAPE, 110, d)?;
    let dy = uniform(&[g.batch, g.in_channels, g.out_h, g.out_w], 111, d)?;
    Ok((g, x, dy))
}

/// The tape's gradients of Σ y ⊙ r (r fixed random values) with respect to each of `leaves`.
fn tape_gradients(y: &Tensor, leaves: &[(&'static str, &Tensor)], seed: u64) -> Result<Outputs> {
    let r = input(y.shape(), seed, y.device())?;
    let grads = ops::sum(&ops::mul(y, &r)?)?.backward()?;
    leaves
        .iter()
        .map(|&(name, leaf)| {
            let g = grads.get(leaf).ok_or_else(|| {
                crate::core::error::invalid(
                    "selftest",
                    format!("the tape gave no gradient of {name}"),
                )
            })?;
            Ok((name, g.raw().clone()))
        })
        .collect()
}

/// Leaves that require gradients, made on the CPU and moved to `d`.
fn leaf(shape: &[usize], seed: u64, d: Device) -> Result<Tensor> {
    Ok(input(shape, seed, Device::Cpu)?.to_device(d)?.with_grad())
}

/// The transposed convolution: x [2, 6, 5, 4] through w [6, 2, 3, 3] in 2 groups (4 output
/// channels) with bias, stride 2, padding 1, output padding (1, 0): y [2, 4, 10, 7].
fn conv_transpose(d: Device) -> Result<(Tensor, [Tensor; 3])> {
    let x = leaf(&[2, 6, 5, 4], 120, d)?;
    let w = leaf(&[6, 2, 3, 3], 121, d)?;
    let b = leaf(&[4], 122, d)?;
    let window = Window2d::square(3, 2, 1);
    let y = ops::conv_transpose2d(&x, &w, Some(&b), window, (1, 0), 2)?;
    Ok((y, [x, w, b]))
}

fn linear(d: Device) -> Result<(Tensor, [Tensor; 3])> {
    let x = leaf(&[5, 37], 130, d)?;
    let w = leaf(&[11, 37], 131, d)?;
    let b = leaf(&[11], 132, d)?;
    Ok((ops::linear(&x, &w, Some(&b))?, [x, w, b]))
}

/// Batch norm's input [3, 5, 7, 9], γ and β, and the batch statistics computed on `d`.
fn batch_norm_inputs(d: Device) -> Result<[RawTensor; 5]> {
    let x = uniform(&[3, 5, 7, 9], 140, d)?;
    let (gamma, beta) = (uniform(&[5], 141, d)?, uniform(&[5], 142, d)?);
    let (mean, var) = backend::batch_norm_stats(&x)?;
    Ok([x, gamma, beta, mean, var])
}

fn stats<'a>(mean: &'a RawTensor, var: &'a RawTensor, gamma: &'a RawTensor) -> BatchNormStats<'a> {
    BatchNormStats {
        mean,
        var,
        gamma,
        eps: 1e-5,
    }
}

pub(super) fn cases() -> Vec<Case> {
    let (fwd, bwd) = ("forward", "backward");
    vec![
        Case::new("conv2d", fwd, PRODUCTS, &["im2col_f32", "gemm_f32"], |d| {
            let [grouped, same] = convolutions(d)?;
            Ok(vec![
                ("y grouped", grouped.forward()?),
                ("y same", same.forward()?),
            ])
        }),
        Case::new(
            "conv2d",
            "backward dx",
            PRODUCTS,
            &["gemm_f32", "col2im_f32"],
            |d| {
                let [grouped, same] = convolutions(d)?;
                Ok(vec![
                    ("dx grouped", grouped.input_grad()?),
                    ("dx same", same.input_grad()?),
                ])
            },
        ),
        Case::new("conv2d", "backward dW, db", PRODUCTS, CONV_DW, |d| {
            let [grouped, same] = convolutions(d)?;
            Ok(vec![
                ("dW grouped", grouped.weight_grad()?),
                ("db grouped", grouped.bias_grad()?),
                ("dW same", same.weight_grad()?),
                ("db same", same.bias_grad()?),
            ])
        }),
        Case::new("conv_transpose2d", fwd, PRODUCTS, CONV_T_FWD, |d| {
            Ok(vec![("y", conv_transpose(d)?.0.into_raw())])
        }),
        Case::new("conv_transpose2d", bwd, PRODUCTS, CONV_DW, |d| {
            let (y, [x, w, b]) = conv_transpose(d)?;
            tape_gradients(&y, &[("dx", &x), ("dW", &w), ("db", &b)], 123)
        }),
        Case::new("max_pool2d", fwd, POINTWISE, &["maxpool_fwd_f32"], |d| {
            let (g, x, _) = pool_inputs(d)?;
            let (y, argmax) = backend::maxpool_fwd(&x, &g)?;
            Ok(vec![("y", y), ("argmax", argmax)])
        }),
        Case::new("max_pool2d", bwd, POINTWISE, &["maxpool_bwd_f32"], |d| {
            let (g, x, dy) = pool_inputs(d)?;
            let (_, argmax) = backend::maxpool_fwd(&x, &g)?;
            Ok(vec![("dx", backend::maxpool_bwd(&dy, &argmax, &g)?)])
        }),
        Case::new("avg_pool2d", fwd, POINTWISE, &["avgpool_fwd_f32"], |d| {
            let (g, x, _) = pool_inputs(d)?;
            Ok(vec![("y", backend::avgpool_fwd(&x, &g, false)?)])
        }),
        Case::new("avg_pool2d", bwd, POINTWISE, &["avgpool_bwd_f32"], |d| {
            let (g, _, dy) = pool_inputs(d)?;
            Ok(vec![("dx", backend::avgpool_bwd(&dy, &g, false)?)])
        }),
        Case::new("l2_pool2d", fwd, POINTWISE, &["l2pool_fwd_f32"], |d| {
            let (g, x, _) = pool_inputs(d)?;
            Ok(vec![("y", backend::l2pool_fwd(&x, &g)?)])
        }),
        Case::new("l2_pool2d", bwd, POINTWISE, &["l2pool_bwd_f32"], |d| {
            let (g, x, dy) = pool_inputs(d)?;
            let y = backend::l2pool_fwd(&x, &g)?;
            Ok(vec![("dx", backend::l2pool_bwd(&x, &y, &dy, &g)?)])
        }),
        Case::new(
            "global_avg_pool2d",
            fwd,
            POINTWISE,
            &["global_avgpool_fwd_f32"],
            |d| {
                Ok(vec![(
                    "y",
                    backend::global_avgpool_fwd(&uniform(&SHAPE, 112, d)?)?,
                )])
            },
        ),
        Case::new(
            "global_avg_pool2d",
            bwd,
            POINTWISE,
            &["global_avgpool_bwd_f32"],
            |d| {
                let dy = uniform(&[SHAPE[0], SHAPE[1], 1, 1], 113, d)?;
                Ok(vec![("dx", backend::global_avgpool_bwd(&dy, &SHAPE)?)])
            },
        ),
        Case::new(
            "adaptive_avg_pool2d",
            fwd,
            POINTWISE,
            &["adaptive_avgpool_fwd_f32"],
            |d| {
                let x = uniform(&SHAPE, 114, d)?;
                Ok(vec![(
                    "y",
                    backend::adaptive_avgpool_fwd(&x, &adaptive()?)?,
                )])
            },
        ),
        Case::new(
            "adaptive_avg_pool2d",
            bwd,
            POINTWISE,
            &["adaptive_avgpool_bwd_f32"],
            |d| {
                let a = adaptive()?;
                let dy = uniform(&a.output_shape(), 115, d)?;
                Ok(vec![("dx", backend::adaptive_avgpool_bwd(&dy, &a)?)])
            },
        ),
        Case::new("linear", fwd, PRODUCTS, &["gemm_f32"], |d| {
            Ok(vec![("y", linear(d)?.0.into_raw())])
        }),
        Case::new(
            "linear",
            bwd,
            PRODUCTS,
            &["gemm_f32", "bias_grad_f32"],
            |d| {
                let (y, [x, w, b]) = linear(d)?;
                tape_gradients(&y, &[("dx", &x), ("dW", &w), ("db", &b)], 133)
            },
        ),
        Case::new("batch_norm2d", "forward (train)", NORM, BN_FWD, |d| {
            let [x, gamma, beta, mean, var] = batch_norm_inputs(d)?;
            let y = backend::batch_norm_fwd(&x, &stats(&mean, &var, &gamma), &beta)?;
            Ok(vec![("mean", mean), ("variance", var), ("y", y)])
        }),
        Case::new("batch_norm2d", bwd, NORM, BN_BWD, |d| {
            let [x, gamma, _, mean, var] = batch_norm_inputs(d)?;
            let dy = uniform(x.shape(), 143, d)?;
            let g = backend::batch_norm_bwd(&dy, &x, &stats(&mean, &var, &gamma), true, true)?;
            let dx =
                g.dx.ok_or_else(|| Error::Internal("batch norm backward gave no dx".into()))?;
            Ok(vec![("dx", dx), ("dgamma", g.dgamma), ("dbeta", g.dbeta)])
        }),
    ]
}

const CONV_DW: &[&str] = &["im2col_f32", "gemm_f32", "bias_grad_f32"];
const CONV_T_FWD: &[&str] = &["gemm_f32", "col2im_f32", "bias_add_f32"];
const BN_FWD: &[&str] = &["batch_norm_stats_f32", "batch_norm_fwd_f32"];
const BN_BWD: &[&str] = &["batch_norm_bwd_reduce_f32", "batch_norm_bwd_dx_f32"];
