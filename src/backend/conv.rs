//! Convolution: its three products (forward, input gradient, weight gradient), and the primitives
//! they are made of: im2col/col2im, the GEMM, bias add and bias gradient.
//!
//! On the GPU each product runs in chunks of images (`conv_gpu`): an im2col (or col2im) and one
//! GEMM launch over the chunk's images and groups; on the CPU, `cpu::conv` runs them image by
//! image with the columns in cache.
//!
//! im2col, col2im, the GEMM and the bias primitives go through the runner (`primitive::run`);
//! the three products dispatch themselves: their operands may differ in dtype (an f32 image with
//! a 16-bit weight or gradient) and their 16-bit rule is the product format's, not the storage
//! rule.

use super::cast::{product_operand, rounded_through};
use super::conv_gpu;
use super::primitive::{run, run_in_place, HostFloat, InPlace, OnGpu, Op, Primitive, Updating};
use super::storage::Unrounded;
use super::storage::{storage_format, stored, widened, StoredOutputs};
use super::{
    check_len, common_device, gpu_output, host_output, input_shape, with_float, RawTensor,
};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Error, Result};
use crate::core::shape::{numel, ConvGeometry, GemmSpec, GroupedConv};
use crate::cpu;
use crate::cuda;
use crate::cuda::params::StorageFormat;
use crate::cuda::GpuBuffer;

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
    run(&Im2col(g), [x])
}

/// Folds columns back into an image batch [N,C,H,W], summing overlaps.
pub fn col2im(col: &RawTensor, g: &ConvGeometry) -> Result<RawTensor> {
    run(&Col2im(Im2col(g)), [col])
}

struct Im2col<'a>(&'a ConvGeometry);

impl Im2col<'_> {
    fn col_shape(&self) -> Vec<usize> {
        vec![self.0.batch, self.0.col_rows(), self.0.col_cols()]
    }
}

impl Primitive<1> for Im2col<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("im2col", &["im2col"])
    }
    fn check(&self, [x]: [&RawTensor; 1]) -> Result<()> {
        x.expect_shape("im2col", &input_shape(self.0))
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        Ok(host_output::<T>(self.col_shape(), |col| {
            cpu::im2col::im2col(x, self.0, col)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        on.output(self.col_shape(), |col| {
            cuda::im2col::im2col(on.gpu, on.format, x, self.0, col)
        })
    }
}

struct Col2im<'a>(Im2col<'a>);

impl Primitive<1> for Col2im<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        // The 16-bit twins of col2im write a 16-bit image from f32 columns (conv_gpu's input
        // gradient); none reads 16-bit columns, so those are refused below, as before.
        Op::new("col2im", &["col2im"])
    }
    fn check(&self, [col]: [&RawTensor; 1]) -> Result<()> {
        col.expect_shape("col2im", &self.0.col_shape())?;
        match storage_format(col) {
            Some(got) => Err(Error::DTypeMismatch {
                op: "col2im",
                expected: DType::F32,
                got,
            }),
            None => Ok(()),
        }
    }
    fn cpu<T: HostFloat>(&self, [col]: [&[T]; 1]) -> Result<RawTensor> {
        Ok(host_output::<T>(input_shape(self.0 .0), |dx| {
            cpu::im2col::col2im(col, self.0 .0, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [col]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        on.output(input_shape(self.0 .0), |im| {
            cuda::im2col::col2im(on.gpu, col, self.0 .0, im)
        })
    }
}

/// A new tensor of `out_shape` holding alpha·op(A)·op(B) (beta = 0).
pub fn gemm(
    spec: &GemmSpec,
    alpha: f64,
    a: &RawTensor,
    b: &RawTensor,
    out_shape: Vec<usize>,
) -> Result<RawTensor> {
    gemm_16bit(spec, alpha, (a, b), out_shape, (None, false))
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
            gemm_16bit(spec, alpha, (&a, &b), out_shape, (None, true))
        }
        _ => stored(gemm_in(spec, alpha, a, b, out_shape, mixed)?, store),
    }
}

/// [`gemm`] of bf16 or f16 operands (both the same) into an f32 result, or into one in their
/// format when `c_16bit`, plus `col_bias` (f32 [n]) per column when given: on the GPU the
/// tensor-core kernel (f32 accumulation; the epilogue adds the bias and rounds each value once);
/// on the CPU the operands are widened to f32 exactly and multiplied in f32. f32 (and, on the
/// CPU, f64) operands are [`gemm`]'s, without a bias.
pub(crate) fn gemm_16bit(
    spec: &GemmSpec,
    alpha: f64,
    (a, b): (&RawTensor, &RawTensor),
    out_shape: Vec<usize>,
    (col_bias, c_16bit): (Option<&RawTensor>, bool),
) -> Result<RawTensor> {
    let product = Gemm {
        spec,
        alpha,
        out_shape,
        col_bias,
        c_16bit,
    };
    Ok(run(&product, [a, b])?.c)
}

struct Gemm<'a> {
    spec: &'a GemmSpec,
    alpha: f64,
    out_shape: Vec<usize>,
    col_bias: Option<&'a RawTensor>,
    c_16bit: bool,
}

/// A product's C: in its operands' 16-bit format with `c_16bit`, else in f32.
struct Product {
    c: RawTensor,
    c_16bit: bool,
}

impl StoredOutputs for Product {
    fn stored(self, format: DType) -> Result<Self> {
        let c = if self.c_16bit {
            self.c.stored(format)?
        } else {
            self.c
        };
        Ok(Product { c, ..self })
    }
}

impl Primitive<2> for Gemm<'_> {
    type Output = Product;
    fn op(&self) -> Op {
        // 16-bit operands go to the tensor-core kernels (gemm_tc and the variants it picks, each
        // with bf16/f16 twins), f32 ones to gemm_f32.
        Op::new("gemm", &["gemm_tc"])
    }
    fn check(&self, [a, b]: [&RawTensor; 2]) -> Result<()> {
        let spec = self.spec;
        if spec.groups == 0 {
            return Err(invalid(
                "gemm groups",
                "a GemmSpec needs at least one group",
            ));
        }
        let ((la, lb, lc), c_len) = (spec.required_lens(), numel(&self.out_shape));
        if a.numel() < la || b.numel() < lb || c_len < lc {
            return Err(invalid(
                "gemm operands",
                format!(
                    "{spec:?} needs A ≥ {la}, B ≥ {lb}, C ≥ {lc} elements; got {}, {}, {c_len}",
                    a.numel(),
                    b.numel()
                ),
            ));
        }
        let Some(bias) = self.col_bias else {
            return Ok(());
        };
        if storage_format(a).is_none() {
            return Err(invalid(
                "column bias",
                "gemm: a column bias goes with 16-bit operands",
            ));
        }
        common_device("gemm", &[a, bias])?;
        check_col_bias("gemm", bias, spec)
    }
    fn cpu<T: HostFloat>(&self, [a, b]: [&[T]; 2]) -> Result<Product> {
        let alpha = <T as num_traits::NumCast>::from(self.alpha).unwrap_or_else(T::nan);
        let bias = self
            .col_bias
            .map(|b| b.host_slice::<T>("gemm"))
            .transpose()?;
        let (m, n) = (self.spec.m, self.spec.n);
        let c = host_output::<T>(self.out_shape.clone(), |c| {
            cpu::gemm::gemm(self.spec, alpha, a, b, T::zero(), c);
            if let Some(bias) = bias {
                // One product (checked): C's first m·n values, as the GPU's epilogue.
                cpu::gemm::bias_add(&mut c[..m * n], bias, m, n, 1);
            }
        });
        Ok(Product {
            c,
            c_16bit: self.c_16bit,
        })
    }
    fn gpu(&self, on: &OnGpu, [a, b]: [&GpuBuffer; 2]) -> Result<Product> {
        let (spec, alpha, c_16bit) = (self.spec, self.alpha as f32, self.c_16bit);
        let c_dtype = if c_16bit {
            on.format.dtype()
        } else {
            DType::F32
        };
        let col_bias = col_bias_address("gemm", self.col_bias, spec)?;
        let c = gpu_output(on.gpu, self.out_shape.clone(), c_dtype, |c| {
            match on.format {
                StorageFormat::F32 => cuda::gemm::gemm(on.gpu, spec, alpha, a, b, 0.0, c),
                format => {
                    let operands = cuda::gemm::GemmAddresses {
                        a: a.address(),
                        b: b.address(),
                        c: c.address(),
                        row_bias: 0,
                        col_bias,
                        c_16bit,
                    };
                    let bf16 = format == StorageFormat::Bf16;
                    cuda::gemm_tc::gemm_16bit_at(on.gpu, spec, alpha, operands, 0.0, bf16)
                }
            }
        })?;
        Ok(Product { c, c_16bit })
    }
}

/// Checks that `bias` can be the column bias of a product of `spec`: one f32 per column of one
/// matrix (no batch or groups).
fn check_col_bias(op: &'static str, bias: &RawTensor, spec: &GemmSpec) -> Result<()> {
    if spec.batch != 1 || spec.groups != 1 {
        return Err(invalid(
            "column bias",
            format!("{op}: a column bias needs a single product (no batch or groups)"),
        ));
    }
    bias.expect_shape(op, &[spec.n])?;
    bias.expect_dtype(op, DType::F32)
}

/// The device address of a column bias for a product of `spec` ([`check_col_bias`]), or 0
/// without one.
pub(crate) fn col_bias_address(
    op: &'static str,
    bias: Option<&RawTensor>,
    spec: &GemmSpec,
) -> Result<u64> {
    let Some(bias) = bias else { return Ok(0) };
    check_col_bias(op, bias, spec)?;
    Ok(bias.gpu_buffer(op)?.address())
}

/// y[o][c][i] += bias[c], in place.
pub fn bias_add(
    y: &mut RawTensor,
    bias: &RawTensor,
    outer: usize,
    channels: usize,
    inner: usize,
) -> Result<()> {
    run_in_place(&Bias([outer, channels, inner]), [y], [bias])
}

/// db[c] = Σ dy[o][c][i]: the gradient of an f32 bias, summed in f32 (16-bit dy included).
pub fn bias_grad(dy: &RawTensor, outer: usize, channels: usize, inner: usize) -> Result<RawTensor> {
    let Unrounded(db) = run(&BiasGrad(Bias([outer, channels, inner])), [dy])?;
    Ok(db)
}

/// [outer, channels, inner]: y's shape around the channels of its bias.
struct Bias([usize; 3]);

impl InPlace<1, 1> for Bias {
    fn op(&self) -> Op {
        Op::new("bias_add", &["bias_add"])
    }
    fn check(&self, [y]: [&RawTensor; 1], [bias]: [&RawTensor; 1]) -> Result<()> {
        let [outer, channels, inner] = self.0;
        bias.expect_shape("bias_add", &[channels])?;
        check_len("bias_add", y, outer * channels * inner)
    }
    fn cpu<T: HostFloat>(&self, [y]: [&mut [T]; 1], [bias]: [&[T]; 1]) -> Result<()> {
        let [outer, channels, inner] = self.0;
        cpu::gemm::bias_add(y, bias, outer, channels, inner);
        Ok(())
    }
    fn gpu(&self, on: Updating, [y]: [&mut GpuBuffer; 1], [bias]: [&GpuBuffer; 1]) -> Result<()> {
        let [outer, channels, inner] = self.0;
        cuda::gemm::bias_add(on.gpu, y, bias, outer, channels, inner)
    }
}

struct BiasGrad(Bias);

impl Primitive<1> for BiasGrad {
    type Output = Unrounded<RawTensor>;
    fn op(&self) -> Op {
        Op::new("bias_grad", &["bias_grad"])
    }
    fn check(&self, [dy]: [&RawTensor; 1]) -> Result<()> {
        let [outer, channels, inner] = self.0 .0;
        check_len("bias_grad", dy, outer * channels * inner)
    }
    fn cpu<T: HostFloat>(&self, [dy]: [&[T]; 1]) -> Result<Self::Output> {
        let [outer, channels, inner] = self.0 .0;
        Ok(Unrounded(host_output::<T>(vec![channels], |db| {
            cpu::gemm::bias_grad(dy, outer, channels, inner, db)
        })))
    }
    fn gpu(&self, on: &OnGpu, [dy]: [&GpuBuffer; 1]) -> Result<Self::Output> {
        let [outer, channels, inner] = self.0 .0;
        let db = gpu_output(on.gpu, vec![channels], DType::F32, |db| {
            cuda::gemm::bias_grad(on.gpu, on.format, dy, outer, channels, inner, db)
        })?;
        Ok(Unrounded(db))
    }
}
