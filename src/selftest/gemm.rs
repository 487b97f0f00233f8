//! The rows of the GEMM kernels, each with the kernel policy that chooses it: the 64x64 default, the
//! 128x128 and flat f32 tiles, the mma.sync tensor-core kernels in bf16 and f16 (square and flat
//! tiles), the 16-bit activation kernels under `autocast_activations`, and the Hopper wgmma GEMM
//! with both loaders (skipped where the GPU does not load it).

use super::cases::{input, uniform};
use super::layers::PRODUCTS;
use super::{Case, Outputs, Tolerance};
use crate::backend::ProductFormats;
use crate::backend::{self, RawTensor};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::shape::{ConvGeometry, GemmSpec, GroupedConv, Window2d};
use crate::cuda::KernelPolicy;
use crate::ops;
use crate::tensor::Tensor;

/// alpha·op(A)·op(B) for `spec` (whose output matrices must lie back to back) on fresh operands
/// of the lengths it needs, in `dtype` (rounded on the CPU, then moved to `d`).
fn product(
    d: Device,
    name: &'static str,
    spec: GemmSpec,
    dtype: DType,
    seed: u64,
) -> Result<(&'static str, RawTensor)> {
    let (la, lb, lc) = spec.required_lens();
    let operand = |len, seed| -> Result<RawTensor> {
        let t = uniform(&[len], seed, Device::Cpu)?;
        backend::cast(&t, dtype)?.to_device(d)
    };
    let (a, b) = (operand(la, seed)?, operand(lb, seed + 1)?);
    Ok((name, backend::gemm(&spec, 0.75, &a, &b, vec![lc])?))
}

/// [`product`] of each (name, spec, dtype), the seeds counting up from `seed`.
fn products(d: Device, seed: u64, specs: &[(&'static str, GemmSpec, DType)]) -> Result<Outputs> {
    (0u64..)
        .zip(specs)
        .map(|(i, &(name, spec, dtype))| product(d, name, spec, dtype, seed + 2 * i))
        .collect()
}

fn transposed(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> GemmSpec {
    let mut spec = GemmSpec::new(m, n, k);
    spec.trans_a = ta;
    spec.trans_b = tb;
    spec
}

/// Every transpose of one odd-sized batched product, and the batch summed into one C.
fn every_transpose(d: Device, (m, n, k): (usize, usize, usize), seed: u64) -> Result<Outputs> {
    let names = ["A·B", "Aᵀ·B", "A·Bᵀ", "Aᵀ·Bᵀ"];
    let mut outputs = Vec::new();
    for (i, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        let spec = transposed(m, n, k, ta, tb).batched(2, m * k, k * n, m * n);
        outputs.push(product(d, names[i], spec, DType::F32, seed + i as u64)?);
    }
    let summed = transposed(m, n, k, true, false)
        .batched(2, m * k, k * n, m * n)
        .summed_over_batch();
    outputs.push(product(d, "batch sum", summed, DType::F32, seed + 9)?);
    Ok(outputs)
}

const fn choice(large_tiles: bool, flat_tiles: bool) -> KernelPolicy {
    KernelPolicy {
        large_tiles,
        flat_tiles,
        ..KernelPolicy::DEFAULT
    }
}

const fn wgmma(tma: bool, wide: bool) -> KernelPolicy {
    KernelPolicy {
        wgmma: true,
        wgmma_tma: tma,
        wgmma_wide: wide,
        ..KernelPolicy::DEFAULT
    }
}

/// One rounding of a 16-bit result: two units in the last place of bf16 (8 significant bits) or
/// f16 (11), above the f32 differences of sums in another order.
fn sixteen_bit(format: DType) -> Tolerance {
    let rtol = if format == DType::BF16 { 1.6e-2 } else { 2e-3 };
    Tolerance::Close { atol: 1e-5, rtol }
}

const NO_WGMMA: &str =
    "wgmma needs compute capability 9.0 (H100, H200): this GPU did not load the Hopper kernels";

pub(super) fn cases() -> Vec<Case> {
    let bf16 = DType::BF16;
    let f16 = DType::F16;
    vec![
        Case::new("gemm 64x64", "forward", PRODUCTS, &["gemm_f32"], |d| {
            every_transpose(d, (65, 67, 33), 200)
        }),
        Case::new(
            "gemm 128x128",
            "forward",
            PRODUCTS,
            &["gemm_128x128_f32"],
            |d| every_transpose(d, (130, 129, 37), 210),
        )
        .with_policy(choice(true, false)),
        Case::new("gemm flat tiles", "forward", PRODUCTS, FLAT_F32, |d| {
            let f32 = DType::F32;
            products(
                d,
                220,
                &[
                    ("16 rows", transposed(13, 300, 37, false, false), f32),
                    ("32 rows", transposed(29, 130, 19, true, true), f32),
                ],
            )
        })
        .with_policy(choice(false, true)),
        Case::new("gemm tensor-core bf16", "forward", PRODUCTS, TC_BF16, |d| {
            tensor_core(d, DType::BF16, 230)
        }),
        Case::new("gemm tensor-core f16", "forward", PRODUCTS, TC_F16, |d| {
            tensor_core(d, DType::F16, 240)
        }),
        Case::new(
            "gemm tensor-core flat tiles",
            "forward",
            PRODUCTS,
            FLAT_TC,
            |d| {
                products(
                    d,
                    250,
                    &[
                        (
                            "16 rows bf16",
                            transposed(13, 300, 40, false, true),
                            DType::BF16,
                        ),
                        (
                            "32 rows f16",
                            transposed(29, 130, 24, true, false),
                            DType::F16,
                        ),
                    ],
                )
            },
        )
        .with_policy(choice(false, true)),
        Case::new(
            "16-bit activations bf16",
            "forward",
            sixteen_bit(bf16),
            ACT_FWD_BF16,
            |d| activations_forward(d, DType::BF16),
        ),
        Case::new(
            "16-bit activations bf16",
            "backward",
            sixteen_bit(bf16),
            ACT_BWD_BF16,
            |d| activations_backward(d, DType::BF16),
        ),
        Case::new(
            "16-bit activations f16",
            "forward",
            sixteen_bit(f16),
            ACT_FWD_F16,
            |d| activations_forward(d, DType::F16),
        ),
        Case::new(
            "16-bit activations f16",
            "backward",
            sixteen_bit(f16),
            ACT_BWD_F16,
            |d| activations_backward(d, DType::F16),
        ),
        Case::new(
            "gemm wgmma TMA 128x128",
            "forward",
            PRODUCTS,
            WGMMA_TMA,
            |d| {
                // K-major A and B ([m][k], [n][k]): k = 72 is two 64-deep panels, the last partial.
                wgmma_products(d, transposed(131, 200, 72, false, true), 260)
            },
        )
        .with_policy(wgmma(true, false))
        .needs("gemm_wgmma_tma_bf16", NO_WGMMA),
        Case::new(
            "gemm wgmma TMA 128x256",
            "forward",
            PRODUCTS,
            WGMMA_WIDE,
            |d| {
                // MN-major A and B ([k][m], [k][n]), n past one 128 tile.
                wgmma_products(d, transposed(136, 200, 72, true, false), 270)
            },
        )
        .with_policy(wgmma(true, true))
        .needs("gemm_wgmma_tma_wide_bf16", NO_WGMMA),
        Case::new(
            "gemm wgmma cp.async",
            "forward",
            PRODUCTS,
            WGMMA_CP_ASYNC,
            |d| {
                // A batch of 2 sharing A (batched products always load with cp.async), in bf16; a
                // single product with MN-major A in f16, with TMA off.
                let batched = GemmSpec::new(16, 48, 72).batched(2, 0, 72 * 48, 16 * 48);
                products(
                    d,
                    280,
                    &[
                        ("batched bf16", batched, DType::BF16),
                        (
                            "single f16",
                            transposed(136, 133, 72, true, true),
                            DType::F16,
                        ),
                    ],
                )
            },
        )
        .with_policy(wgmma(false, false))
        .needs("gemm_wgmma_bf16", NO_WGMMA),
    ]
}

const TC_BF16: &[&str] = &["gemm_tc_bf16", "im2col_16bit"];
const TC_F16: &[&str] = &["gemm_tc_f16", "im2col_16bit"];
const FLAT_F32: &[&str] = &["gemm_16x256_f32", "gemm_32x128_f32"];
const FLAT_TC: &[&str] = &["gemm_tc_16x256_bf16", "gemm_tc_32x256_f16"];
const WGMMA_TMA: &[&str] = &["gemm_wgmma_tma_bf16", "gemm_wgmma_tma_f16"];
const WGMMA_WIDE: &[&str] = &["gemm_wgmma_tma_wide_bf16", "gemm_wgmma_tma_wide_f16"];
const WGMMA_CP_ASYNC: &[&str] = &["gemm_wgmma_bf16", "gemm_wgmma_f16"];

/// The mma.sync kernel on 16-bit operands: partial 128 tiles with k no multiple of 8 (scalar
/// loads), and A [m][k], B [n][k] with k a multiple of 8 (16-byte loads) over three panels; then
/// a convolution (f32 input gathered into 16-bit columns) and a linear layer with bias under
/// `autocast(dtype)`, whose products take the kernel with f32 activations.
fn tensor_core(d: Device, dtype: DType, seed: u64) -> Result<Outputs> {
    let x = input(&ACT, seed + 4, d)?;
    let (w, b) = (
        input(&[6, 5, 3, 3], seed + 5, d)?,
        input(&[6], seed + 6, d)?,
    );
    let features = input(&[5, 37], seed + 7, d)?;
    let (fc_w, fc_b) = (input(&[11, 37], seed + 8, d)?, input(&[11], seed + 9, d)?);
    let layers = crate::autocast(dtype, || -> Result<[Tensor; 2]> {
        Ok([
            ops::conv2d(&x, &w, Some(&b), Window2d::square(3, 1, 1))?,
            ops::linear(&features, &fc_w, Some(&fc_b))?,
        ])
    })??;
    let [conv, linear] = layers;
    Ok(vec![
        product(
            d,
            "scalar loads",
            transposed(37, 45, 29, false, false),
            dtype,
            seed,
        )?,
        product(
            d,
            "vector loads",
            transposed(131, 133, 72, false, true),
            dtype,
            seed + 2,
        )?,
        ("autocast conv2d", conv.into_raw()),
        ("autocast linear", linear.into_raw()),
    ])
}

/// A wgmma product in both 16-bit formats.
fn wgmma_products(d: Device, spec: GemmSpec, seed: u64) -> Result<Outputs> {
    products(
        d,
        seed,
        &[("bf16", spec, DType::BF16), ("f16", spec, DType::F16)],
    )
}

/// 16-bit activation shapes: x [2, 5, 9, 7]; a 3x3 convolution into 6 channels (padding 1) and
/// pooling with a 3x3 window, stride 2, padding 1.
const ACT: [usize; 4] = [2, 5, 9, 7];

fn in_format(shape: &[usize], seed: u64, format: DType, d: Device) -> Result<RawTensor> {
    backend::cast(&uniform(shape, seed, Device::Cpu)?, format)?.to_device(d)
}

fn activation_conv() -> Result<GroupedConv> {
    Ok(GroupedConv {
        geometry: ConvGeometry::new(ACT, Window2d::square(3, 1, 1), true)?,
        out_channels: 6,
        groups: 1,
    })
}

/// Layers inside `autocast_activations(format)` on 16-bit inputs, each output stored in the format
/// by its 16-bit kernel: convolution with bias (im2col, the tensor cores, the epilogue's rounding),
/// ReLU, max, average and global average pooling, batch norm in training, dropout, an addition,
/// and linear with bias.
fn activations_forward(d: Device, format: DType) -> Result<Outputs> {
    let x = Tensor::from(in_format(&ACT, 300, format, d)?);
    let other = Tensor::from(in_format(&ACT, 301, format, d)?);
    let features = Tensor::from(in_format(&[5, 37], 302, format, d)?);
    let conv_w = input(&[6, 5, 3, 3], 303, d)?;
    let conv_b = input(&[6], 304, d)?;
    let (fc_w, fc_b) = (input(&[11, 37], 305, d)?, input(&[11], 306, d)?);
    let pool = Window2d::square(3, 2, 1);
    let outputs = crate::autocast_activations(format, || -> Result<Vec<(_, Tensor)>> {
        let mut bn = ops::BatchNorm2d::new(ACT[1], d)?;
        Ok(vec![
            (
                "conv2d",
                ops::conv2d(&x, &conv_w, Some(&conv_b), Window2d::square(3, 1, 1))?,
            ),
            ("relu", ops::relu(&x)?),
            ("max_pool2d", ops::max_pool2d(&x, pool)?),
            ("avg_pool2d", ops::avg_pool2d(&x, pool, false)?),
            ("global_avg_pool2d", ops::global_avg_pool2d(&x)?),
            ("batch_norm2d", bn.forward(&x, true)?),
            ("dropout", ops::dropout(&x, 0.3, true, 7)?),
            ("add", ops::add(&x, &other)?),
            ("linear", ops::linear(&features, &fc_w, Some(&fc_b))?),
        ])
    })??;
    Ok(outputs
        .into_iter()
        .map(|(name, y)| (name, y.into_raw()))
        .collect())
}

/// The backward primitives the tape calls for 16-bit activations, on 16-bit output gradients:
/// ReLU, the poolings, dropout and batch norm (masks, argmax and statistics computed on the same
/// device), and the convolution's input gradient (written in the format by col2im), weight
/// gradient (16-bit operands on the tensor cores) and bias gradient (summed in f32).
fn activations_backward(d: Device, format: DType) -> Result<Outputs> {
    let x = in_format(&ACT, 310, format, d)?;
    let dy = in_format(&ACT, 311, format, d)?;
    let g = ConvGeometry::new(ACT, Window2d::square(3, 2, 1), false)?;
    let dy_pooled = in_format(&[2, 5, g.out_h, g.out_w], 312, format, d)?;
    let (_, relu_mask) = backend::relu_fwd(&x)?;
    let (_, argmax) = backend::maxpool_fwd(&x, &g)?;
    let (_, dropout_mask) = backend::dropout_fwd(&x, 0.3, 7)?;
    let (mean, var) = backend::batch_norm_stats(&x)?;
    let gamma = uniform(&[ACT[1]], 313, d)?;
    let stats = backend::BatchNormStats {
        mean: &mean,
        var: &var,
        gamma: &gamma,
        eps: 1e-5,
    };
    let bn = backend::batch_norm_bwd(&dy, &x, &stats, true, true)?;
    let bn_dx = bn
        .dx
        .ok_or_else(|| crate::Error::Internal("batch norm backward gave no dx".into()))?;
    let conv = activation_conv()?;
    let w = in_format(&[6, 5, 3, 3], 314, format, d)?;
    let conv_dy = in_format(&conv.output_shape(), 315, format, d)?;
    let pixels = conv.geometry.col_cols();
    Ok(vec![
        ("relu", backend::relu_bwd(&dy, &relu_mask)?),
        ("max_pool2d", backend::maxpool_bwd(&dy_pooled, &argmax, &g)?),
        ("avg_pool2d", backend::avgpool_bwd(&dy_pooled, &g, false)?),
        (
            "global_avg_pool2d",
            backend::global_avgpool_bwd(&in_format(&[2, 5, 1, 1], 316, format, d)?, &ACT)?,
        ),
        ("dropout", backend::dropout_bwd(&dy, &dropout_mask, 0.3)?),
        ("batch_norm2d dx", bn_dx),
        ("batch_norm2d dgamma", bn.dgamma),
        ("batch_norm2d dbeta", bn.dbeta),
        (
            "conv2d dx",
            backend::conv_input_grad(
                &w,
                &conv_dy,
                &conv,
                ProductFormats::operands(Some(format)).stored_in(Some(format)),
            )?,
        ),
        (
            "conv2d dW",
            backend::conv_weight_grad(&x, &conv_dy, &conv, Some(format))?,
        ),
        ("conv2d db", backend::bias_grad(&conv_dy, 2, 6, pixels)?),
    ])
}

const ACT_FWD_BF16: &[&str] = &[
    "im2col_bf16",
    "gemm_tc_bf16",
    "relu_fwd_bf16",
    "maxpool_fwd_bf16",
    "avgpool_fwd_bf16",
    "global_avgpool_fwd_bf16",
    "batch_norm_stats_bf16",
    "batch_norm_fwd_bf16",
    "dropout_fwd_bf16",
    "axpby_bf16",
];
const ACT_FWD_F16: &[&str] = &[
    "im2col_f16",
    "gemm_tc_f16",
    "relu_fwd_f16",
    "maxpool_fwd_f16",
    "avgpool_fwd_f16",
    "global_avgpool_fwd_f16",
    "batch_norm_stats_f16",
    "batch_norm_fwd_f16",
    "dropout_fwd_f16",
    "axpby_f16",
];
const ACT_BWD_BF16: &[&str] = &[
    "relu_bwd_bf16",
    "maxpool_bwd_bf16",
    "avgpool_bwd_bf16",
    "global_avgpool_bwd_bf16",
    "dropout_bwd_bf16",
    "batch_norm_bwd_reduce_bf16",
    "batch_norm_bwd_dx_bf16",
    "col2im_bf16",
    "im2col_bf16",
    "gemm_tc_bf16",
    "bias_grad_bf16",
];
const ACT_BWD_F16: &[&str] = &[
    "relu_bwd_f16",
    "maxpool_bwd_f16",
    "avgpool_bwd_f16",
    "global_avgpool_bwd_f16",
    "dropout_bwd_f16",
    "batch_norm_bwd_reduce_f16",
    "batch_norm_bwd_dx_f16",
    "col2im_f16",
    "im2col_f16",
    "gemm_tc_f16",
    "bias_grad_f16",
];
