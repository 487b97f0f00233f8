//! Convolution: its three products (forward, input gradient, weight gradient), and the primitives
//! they are made of: im2col/col2im, the GEMM, bias add and bias gradient.
//!
//! On the GPU each product runs in chunks of images (`conv_gpu`): an im2col (or col2im) and one
//! GEMM launch over the chunk's images and groups; on the CPU, `cpu::conv` runs them image by
//! image with the columns in cache.

use super::cast::{product_operand, rounded_through};
use super::conv_gpu;
use super::storage::{in_storage, storage_format, stored, widen_only, widened};
use super::RawTensor;
use super::{
    cast, check_len, common_device, gpu_f32, gpu_float, gpu_output, host_output, input_shape,
    with_float,
};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::shape::{numel, ConvGeometry, GemmSpec, GroupedConv};
use crate::cpu;
use crate::cuda;
use crate::cuda::params::StorageFormat;

/// A 16-bit activation as a convolution product reads it: as it is on a device whose product
/// format is the activation's (im2col gathers it, the GEMM multiplies it), else widened to f32
/// (exactly; the product rounds it to `mixed` again, if set).
fn as_product_input(t: &RawTensor, mixed: Option<DType>) -> Result<RawTensor> {
    match storage_format(t) {
        Some(format) if t.device() != Device::Cpu && mixed == Some(format) => Ok(t.clone()),
        Some(_) => widened(t),
        None => Ok(t.clone()),
    }
}

/// The 16-bit formats of a matrix product (a convolution's, a linear layer's): `operands`, the
/// format both operands are rounded to before they are multiplied (see [`crate::autocast`]), and
/// `output`, the format the result is stored in (16-bit activations and their gradients, see
/// [`crate::autocast_activations`]). `None` is f32; [`ProductFormats::F32`] is f32 throughout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProductFormats {
    pub operands: Option<DType>,
    pub output: Option<DType>,
}

impl ProductFormats {
    pub const F32: ProductFormats = ProductFormats {
        operands: None,
        output: None,
    };

    /// Operands in `operands` (f32 without), the result in f32.
    pub fn operands(operands: Option<DType>) -> ProductFormats {
        ProductFormats {
            operands,
            output: None,
        }
    }

    /// The same operands, the result stored in `output` (f32 without).
    pub fn stored_in(self, output: Option<DType>) -> ProductFormats {
        ProductFormats { output, ..self }
    }

    /// What this thread's autocast asks for: its product format, and its activation format.
    pub fn of_autocast() -> ProductFormats {
        ProductFormats::operands(crate::autocast::current())
            .stored_in(crate::autocast::activation_format())
    }
}

/// y [N, K, OH, OW] = conv(x [N, C, H, W], w [K, C/G, KH, KW]) (+ bias [K]), the product in
/// `formats`: on a device whose product format is the output's, the GEMM's epilogue rounds each
/// output once as it writes it (no f32 copy of y); elsewhere y is computed in f32 and then
/// rounded, to the same values.
pub fn conv_forward(
    x: &RawTensor,
    w: &RawTensor,
    bias: Option<&RawTensor>,
    conv: &GroupedConv,
    formats: ProductFormats,
) -> Result<RawTensor> {
    let ProductFormats {
        operands: mixed,
        output: store,
    } = formats;
    check_conv_operands(x, w, bias, conv)?;
    let (x, w) = (&as_product_input(x, mixed)?, &as_product_input(w, mixed)?);
    match (x.device(), mixed) {
        (Device::Cpu, _) => {
            let y = with_float!("conv2d", x, |T| {
                let (x, w) = (&rounded_through(x, mixed)?, &rounded_through(w, mixed)?);
                let (xs, ws) = (x.host_slice::<T>("conv2d")?, w.host_slice::<T>("conv2d")?);
                let bs = bias.map(|b| b.host_slice::<T>("conv2d")).transpose()?;
                Ok(host_output::<T>(conv.output_shape(), |y| {
                    cpu::conv::forward(conv, xs, ws, bs, y)
                }))
            })?;
            stored(y, store)
        }
        (_, Some(format)) if store == Some(format) => {
            conv_gpu::forward(x, w, bias, conv, mixed, true)
        }
        _ => stored(conv_gpu::forward(x, w, bias, conv, mixed, false)?, store),
    }
}

/// The devices and shapes of a convolution's operands.
fn check_conv_operands(
    x: &RawTensor,
    w: &RawTensor,
    bias: Option<&RawTensor>,
    conv: &GroupedConv,
) -> Result<()> {
    common_device("conv2d", &[x, w])?;
    x.expect_shape("conv2d input", &conv.input_shape())?;
    w.expect_shape("conv2d weight", &conv.weight_shape())?;
    if let Some(b) = bias {
        common_device("conv2d", &[x, b])?;
        b.expect_shape("conv2d bias", &[conv.out_channels])?;
    }
    Ok(())
}

/// dx [N, C, H, W] = col2im(Wᵀ · dy) for dy [N, K, OH, OW]: the input gradient of
/// [`conv_forward`], and the forward of the transposed convolution, the product in `formats`. A
/// 16-bit output format (the gradient of a 16-bit activation) is written by col2im on a device,
/// each pixel's sum rounded once; elsewhere dx is computed in f32 and then rounded, to the same
/// values.
pub fn conv_input_grad(
    w: &RawTensor,
    dy: &RawTensor,
    conv: &GroupedConv,
    formats: ProductFormats,
) -> Result<RawTensor> {
    let ProductFormats {
        operands: mixed,
        output: store,
    } = formats;
    common_device("conv2d input gradient", &[w, dy])?;
    let (w, dy) = (&as_product_input(w, mixed)?, &as_product_input(dy, mixed)?);
    w.expect_shape("conv2d weight", &conv.weight_shape())?;
    dy.expect_shape("conv2d output gradient", &conv.output_shape())?;
    match dy.device() {
        Device::Cpu => with_float!("conv2d input gradient", dy, |T| {
            let (w, dy) = (&rounded_through(w, mixed)?, &rounded_through(dy, mixed)?);
            let ws = w.host_slice::<T>("conv2d input gradient")?;
            let ds = dy.host_slice::<T>("conv2d input gradient")?;
            stored(
                host_output::<T>(conv.input_shape(), |dx| {
                    cpu::conv::input_grad(conv, ws, ds, dx)
                }),
                store,
            )
        }),
        _ => {
            let dx_storage =
                StorageFormat::of("conv2d input gradient", store.unwrap_or(DType::F32))?;
            conv_gpu::input_grad(w, dy, conv, mixed, dx_storage)
        }
    }
}

/// dW [K, C/G, KH, KW] = Σ_n dy[n] · im2col(x[n])ᵀ: the weight gradient of [`conv_forward`].
/// The columns are recomputed from `x`, never kept from the forward pass.
pub fn conv_weight_grad(
    x: &RawTensor,
    dy: &RawTensor,
    conv: &GroupedConv,
    mixed: Option<DType>,
) -> Result<RawTensor> {
    common_device("conv2d weight gradient", &[x, dy])?;
    let (x, dy) = (&as_product_input(x, mixed)?, &as_product_input(dy, mixed)?);
    x.expect_shape("conv2d input", &conv.input_shape())?;
    dy.expect_shape("conv2d output gradient", &conv.output_shape())?;
    match dy.device() {
        Device::Cpu => with_float!("conv2d weight gradient", dy, |T| {
            let (x, dy) = (&rounded_through(x, mixed)?, &rounded_through(dy, mixed)?);
            let xs = x.host_slice::<T>("conv2d weight gradient")?;
            let ds = dy.host_slice::<T>("conv2d weight gradient")?;
            Ok(host_output::<T>(conv.weight_shape(), |dw| {
                cpu::conv::weight_grad(conv, xs, ds, dw)
            }))
        }),
        _ => conv_gpu::weight_grad(x, dy, conv, mixed),
    }
}

/// Unfolds `x` [N,C,H,W] into columns [N, C·KH·KW, OH·OW] of x's dtype.
pub fn im2col(x: &RawTensor, g: &ConvGeometry) -> Result<RawTensor> {
    in_storage(&["im2col"], [x], |[x]| {
        x.expect_shape("im2col", &input_shape(g))?;
        let shape = vec![g.batch, g.col_rows(), g.col_cols()];
        match x.device() {
            Device::Cpu => with_float!("im2col", x, |T| {
                let xs = x.host_slice::<T>("im2col")?;
                Ok(host_output::<T>(shape, |col| {
                    cpu::im2col::im2col(xs, g, col)
                }))
            }),
            _ => {
                let (gpu, xb, s) = gpu_float("im2col", x)?;
                gpu_output(&gpu, shape, s.dtype(), |col| {
                    cuda::im2col::im2col(&gpu, s, xb, g, col)
                })
            }
        }
    })
}

/// Folds columns back into an image batch [N,C,H,W], summing overlaps.
pub fn col2im(col: &RawTensor, g: &ConvGeometry) -> Result<RawTensor> {
    col.expect_shape("col2im", &[g.batch, g.col_rows(), g.col_cols()])?;
    let shape = vec![g.batch, g.in_channels, g.in_h, g.in_w];
    match col.device() {
        Device::Cpu => with_float!("col2im", col, |T| {
            let cs = col.host_slice::<T>("col2im")?;
            Ok(host_output::<T>(shape, |dx| cpu::im2col::col2im(cs, g, dx)))
        }),
        _ => {
            let (gpu, cb) = gpu_f32("col2im", col)?;
            gpu_output(&gpu, shape, DType::F32, |im| {
                cuda::im2col::col2im(&gpu, cb, g, im)
            })
        }
    }
}

fn check_gemm_lens(spec: &GemmSpec, a: &RawTensor, b: &RawTensor, c_len: usize) -> Result<()> {
    if spec.groups == 0 {
        return Err(crate::core::error::invalid(
            "gemm groups",
            "a GemmSpec needs at least one group",
        ));
    }
    let (la, lb, lc) = spec.required_lens();
    if a.numel() < la || b.numel() < lb || c_len < lc {
        return Err(crate::core::error::invalid(
            "gemm operands",
            format!(
                "{spec:?} needs A ≥ {la}, B ≥ {lb}, C ≥ {lc} elements; got {}, {}, {c_len}",
                a.numel(),
                b.numel()
            ),
        ));
    }
    Ok(())
}

/// A new tensor of `out_shape` holding alpha·op(A)·op(B) (beta = 0).
pub fn gemm(
    spec: &GemmSpec,
    alpha: f64,
    a: &RawTensor,
    b: &RawTensor,
    out_shape: Vec<usize>,
) -> Result<RawTensor> {
    common_device("gemm", &[a, b])?;
    check_gemm_lens(spec, a, b, numel(&out_shape))?;
    if matches!(a.dtype(), DType::BF16 | DType::F16) {
        return gemm_16bit(spec, alpha, (a, b), out_shape, (None, false));
    }
    match a.device() {
        Device::Cpu => with_float!("gemm", a, |T| {
            let (xa, xb) = (a.host_slice::<T>("gemm")?, b.host_slice::<T>("gemm")?);
            Ok(host_output::<T>(out_shape, |c| {
                cpu::gemm::gemm(spec, alpha as T, xa, xb, 0.0 as T, c)
            }))
        }),
        _ => {
            let (gpu, ab) = gpu_f32("gemm", a)?;
            let (_, bb) = gpu_f32("gemm", b)?;
            gpu_output(&gpu, out_shape, DType::F32, |c| {
                cuda::gemm::gemm(&gpu, spec, alpha as f32, ab, bb, 0.0, c)
            })
        }
    }
}

/// [`gemm`] with both operands in `mixed` when set (see [`crate::autocast`]), else as given.
pub(crate) fn gemm_in(
    spec: &GemmSpec,
    alpha: f64,
    a: &RawTensor,
    b: &RawTensor,
    out_shape: Vec<usize>,
    mixed: Option<DType>,
) -> Result<RawTensor> {
    // Without a product format, 16-bit operands (activations) are multiplied in f32.
    let operand = |t: &RawTensor| match mixed {
        Some(_) => product_operand(t, mixed),
        None => widened(t),
    };
    let (a, b) = (operand(a)?, operand(b)?);
    gemm(spec, alpha, &a, &b, out_shape)
}

/// [`gemm`] in `formats`: both operands in the operand format when set (else 16-bit operands are
/// multiplied in f32), and C stored in the output format when set. A device whose product format
/// is the output's writes C straight from the GEMM's epilogue, each value rounded once; elsewhere
/// C is computed in f32 and then rounded, to the same values.
pub fn gemm_mixed(
    spec: &GemmSpec,
    alpha: f64,
    a: &RawTensor,
    b: &RawTensor,
    out_shape: Vec<usize>,
    formats: ProductFormats,
) -> Result<RawTensor> {
    let ProductFormats {
        operands: mixed,
        output: store,
    } = formats;
    match (mixed, store) {
        (Some(format), Some(s)) if s == format && a.device() != Device::Cpu => {
            let (a, b) = (product_operand(a, mixed)?, product_operand(b, mixed)?);
            common_device("gemm", &[&a, &b])?;
            check_gemm_lens(spec, &a, &b, numel(&out_shape))?;
            gemm_16bit(spec, alpha, (&a, &b), out_shape, (None, true))
        }
        _ => stored(gemm_in(spec, alpha, a, b, out_shape, mixed)?, store),
    }
}

/// [`gemm`] of bf16 or f16 operands (both the same) into an f32 result, or into one in their
/// format when `c_16bit`, plus `col_bias` (f32 [n]) per column when given: on the GPU the
/// tensor-core kernel (f32 accumulation; the epilogue adds the bias and rounds each value once);
/// on the CPU the operands are widened to f32 exactly and multiplied in f32.
pub(crate) fn gemm_16bit(
    spec: &GemmSpec,
    alpha: f64,
    (a, b): (&RawTensor, &RawTensor),
    out_shape: Vec<usize>,
    (col_bias, c_16bit): (Option<&RawTensor>, bool),
) -> Result<RawTensor> {
    b.expect_dtype("gemm", a.dtype())?;
    let c_format = c_16bit.then_some(a.dtype());
    match a.device() {
        Device::Cpu => {
            let (a, b) = (cast(a, DType::F32)?, cast(b, DType::F32)?);
            let mut c = gemm(spec, alpha, &a, &b, out_shape)?;
            if let Some(bias) = col_bias {
                bias_add(&mut c, bias, spec.m, spec.n, 1)?;
            }
            stored(c, c_format)
        }
        _ => {
            let (ab, bb) = (a.gpu_buffer("gemm")?, b.gpu_buffer("gemm")?);
            let gpu = ab.gpu().clone();
            let bf16 = a.dtype() == DType::BF16;
            let c_dtype = c_format.unwrap_or(DType::F32);
            let col_bias = col_bias_address("gemm", col_bias, spec)?;
            gpu_output(&gpu, out_shape, c_dtype, |c| {
                let operands = cuda::gemm::GemmAddresses {
                    a: ab.address(),
                    b: bb.address(),
                    c: c.address(),
                    row_bias: 0,
                    col_bias,
                    c_16bit,
                };
                cuda::gemm_tc::gemm_16bit_at(&gpu, spec, alpha as f32, operands, 0.0, bf16)
            })
        }
    }
}

/// The device address of a column bias for a product of `spec` (one f32 per column of one
/// matrix: the product must be a single one), or 0 without one.
pub(crate) fn col_bias_address(
    op: &'static str,
    bias: Option<&RawTensor>,
    spec: &GemmSpec,
) -> Result<u64> {
    let Some(bias) = bias else { return Ok(0) };
    if spec.batch != 1 || spec.groups != 1 {
        return Err(crate::core::error::invalid(
            "column bias",
            format!("{op}: a column bias needs a single product (no batch or groups)"),
        ));
    }
    bias.expect_shape(op, &[spec.n])?;
    Ok(gpu_f32(op, bias)?.1.address())
}

/// y[o][c][i] += bias[c], in place.
pub fn bias_add(
    y: &mut RawTensor,
    bias: &RawTensor,
    outer: usize,
    channels: usize,
    inner: usize,
) -> Result<()> {
    common_device("bias_add", &[y, bias])?;
    bias.expect_shape("bias_add", &[channels])?;
    check_len("bias_add", y, outer * channels * inner)?;
    match y.device() {
        Device::Cpu => with_float!("bias_add", bias, |T| {
            let bs = bias.host_slice::<T>("bias_add")?;
            let ys = y.host_vec_mut::<T>("bias_add")?;
            cpu::gemm::bias_add(ys, bs, outer, channels, inner);
            Ok(())
        }),
        _ => {
            let (gpu, bb) = gpu_f32("bias_add", bias)?;
            y.expect_dtype("bias_add", DType::F32)?;
            cuda::gemm::bias_add(
                &gpu,
                y.gpu_buffer_mut("bias_add")?,
                bb,
                outer,
                channels,
                inner,
            )
        }
    }
}

/// db[c] = Σ dy[o][c][i].
pub fn bias_grad(dy: &RawTensor, outer: usize, channels: usize, inner: usize) -> Result<RawTensor> {
    // The gradient of an f32 bias, summed in f32.
    widen_only(&["bias_grad"], [dy], |[dy]| {
        check_len("bias_grad", dy, outer * channels * inner)?;
        match dy.device() {
            Device::Cpu => with_float!("bias_grad", dy, |T| {
                let ds = dy.host_slice::<T>("bias_grad")?;
                Ok(host_output::<T>(vec![channels], |db| {
                    cpu::gemm::bias_grad(ds, outer, channels, inner, db)
                }))
            }),
            _ => {
                // 16-bit dy (activation gradients) is summed in f32 into the f32 bias gradient.
                let (gpu, db, s) = gpu_float("bias_grad", dy)?;
                gpu_output(&gpu, vec![channels], DType::F32, |out| {
                    cuda::gemm::bias_grad(&gpu, s, db, outer, channels, inner, out)
                })
            }
        }
    })
}
