//! The three convolution products on a GPU (real or emulated), in chunks of images: a chunk's
//! im2col columns go into one buffer of at most the context's
//! [`KernelPolicy::conv_chunk_bytes`](crate::cuda::KernelPolicy) (16 MiB by default, so it stays
//! in a large GPU's L2 between being written and read by the GEMM) and straight into the GEMM. No batch-sized column buffer is ever allocated, which bounds the peak memory of a training
//! step. Under [`crate::autocast`] im2col writes the 16-bit GEMM operand itself and the
//! products run on the tensor cores.

use super::RawTensor;

use super::cast::product_operand;
use super::{gpu_f32, gpu_float, gpu_output};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::shape::{ConvGeometry, GemmSpec, GroupedConv};
use crate::cuda::gemm::{gemm_at, GemmAddresses};
use crate::cuda::gemm_tc::gemm_16bit_at;
use crate::cuda::im2col::{col2im_at, im2col_16bit_at, im2col_at};
use crate::cuda::params::StorageFormat;
use crate::cuda::{Gpu, GpuBuffer};

/// Bytes of a product operand's elements: 2 in a 16-bit format, else 4 (f32).
fn element_bytes(mixed: Option<DType>) -> usize {
    if mixed.is_some() {
        2
    } else {
        4
    }
}

/// The chunks of a batch: (first image, images) pairs, each at most `per_chunk` images.
fn chunks(batch: usize, per_chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..batch)
        .step_by(per_chunk)
        .map(move |start| (start, per_chunk.min(batch - start)))
}

/// Images per chunk whose columns, `column_bytes` per element, fit `gpu`'s budget (at least 1).
fn images_per_chunk(gpu: &Gpu, g: &ConvGeometry, column_bytes: usize) -> usize {
    let per_image = g.col_rows() * g.col_cols() * column_bytes;
    (gpu.kernel_policy().conv_chunk_bytes / per_image.max(1)).clamp(1, g.batch)
}

/// The geometry of `images` images of `g`.
fn with_batch(g: &ConvGeometry, images: usize) -> ConvGeometry {
    ConvGeometry {
        batch: images,
        ..*g
    }
}

/// Elements of one input image (C·H·W), one output image (K·OH·OW), one image's columns.
fn per_image(conv: &GroupedConv) -> (usize, usize, usize) {
    let g = &conv.geometry;
    (
        g.in_channels * g.in_h * g.in_w,
        conv.out_channels * g.col_cols(),
        g.col_rows() * g.col_cols(),
    )
}

/// Address of images `start..start + n` of `buffer`, `image` elements of `bytes` each.
fn images_at(
    buffer: &GpuBuffer,
    start: usize,
    n: usize,
    image: usize,
    bytes: usize,
) -> Result<u64> {
    buffer.address_of_range(start * image * bytes, n * image * bytes)
}

/// The whole of a tensor's buffer, checked to hold `len` elements of `bytes`.
fn whole(t: &RawTensor, len: usize, bytes: usize) -> Result<u64> {
    t.gpu_buffer("conv2d")?.address_of_range(0, len * bytes)
}

/// im2col of one chunk of `x` (of storage `s`) into `col`, in f32 or in the 16-bit format of
/// `mixed`: a 16-bit `x` is in that format already (see `conv::as_product_input`) and is gathered
/// as it is; an f32 `x` is rounded as it is gathered.
fn im2col_chunk(
    gpu: &Gpu,
    (x, s): (u64, StorageFormat),
    g: &ConvGeometry,
    col: u64,
    mixed: Option<DType>,
) -> Result<()> {
    match (s, mixed) {
        (StorageFormat::F32, Some(format)) => {
            im2col_16bit_at(gpu, x, g, col, format == DType::BF16)
        }
        _ => im2col_at(gpu, s, x, g, col),
    }
}

/// One GEMM on device addresses: on the tensor cores when the operands are 16-bit.
fn gemm_chunk(
    gpu: &Gpu,
    spec: &GemmSpec,
    operands: GemmAddresses,
    beta: f32,
    mixed: Option<DType>,
) -> Result<()> {
    match mixed {
        Some(format) => gemm_16bit_at(gpu, spec, 1.0, operands, beta, format == DType::BF16),
        None => gemm_at(gpu, spec, 1.0, operands, beta),
    }
}

/// y [N, K, OH, OW] = W · im2col(x) + bias, chunk by chunk; the GEMM adds the bias in its epilogue
/// (no second pass over y). With `y_16bit` (a product format is set) y is stored in that format,
/// each output rounded once by the epilogue; else y is f32.
pub(super) fn forward(
    x: &RawTensor,
    w: &RawTensor,
    bias: Option<&RawTensor>,
    conv: &GroupedConv,
    mixed: Option<DType>,
    y_16bit: bool,
) -> Result<RawTensor> {
    let g = &conv.geometry;
    let (gpu, xb, s) = gpu_float("conv2d", x)?;
    let bytes = element_bytes(mixed);
    let (image, out_image, col_image) = per_image(conv);
    let w = product_operand(w, mixed)?;
    let w_at = whole(&w, w.numel(), bytes)?;
    let per_chunk = images_per_chunk(&gpu, g, bytes);
    let bias_at = match bias {
        Some(b) => gpu_f32("conv2d bias", b)?.1.address(),
        None => 0,
    };
    let col = gpu.alloc(per_chunk * col_image * bytes)?;
    let y_dtype = match mixed {
        Some(format) if y_16bit => format,
        _ => DType::F32,
    };
    gpu_output(&gpu, conv.output_shape(), y_dtype, |y| {
        for (start, n) in chunks(g.batch, per_chunk) {
            let col_at = col.address_of_range(0, n * col_image * bytes)?;
            im2col_chunk(
                &gpu,
                (images_at(xb, start, n, image, s.bytes())?, s),
                &with_batch(g, n),
                col_at,
                mixed,
            )?;
            let c = images_at(y, start, n, out_image, y_dtype.size_in_bytes())?;
            let operands = GemmAddresses {
                a: w_at,
                b: col_at,
                c,
                row_bias: bias_at,
                col_bias: 0,
                c_16bit: y_dtype != DType::F32,
            };
            gemm_chunk(&gpu, &conv.forward_spec(n), operands, 0.0, mixed)?;
        }
        Ok(())
    })
}

/// dx [N, C, H, W] = col2im(Wᵀ · dy), chunk by chunk, stored as `dx_storage` (col2im rounds
/// each pixel's f32 sum once when it is 16-bit).
pub(super) fn input_grad(
    w: &RawTensor,
    dy: &RawTensor,
    conv: &GroupedConv,
    mixed: Option<DType>,
    dx_storage: StorageFormat,
) -> Result<RawTensor> {
    let g = &conv.geometry;
    let (gpu, _, _) = gpu_float("conv2d input gradient", dy)?;
    let bytes = element_bytes(mixed);
    let (image, out_image, col_image) = per_image(conv);
    let (w, dy) = (product_operand(w, mixed)?, product_operand(dy, mixed)?);
    let w_at = whole(&w, w.numel(), bytes)?;
    let dy_buffer = dy.gpu_buffer("conv2d input gradient")?;
    // The columns here are the GEMM's f32 output.
    let per_chunk = images_per_chunk(&gpu, g, 4);
    let dcol = gpu.alloc(per_chunk * col_image * 4)?;
    gpu_output(&gpu, conv.input_shape(), dx_storage.dtype(), |dx| {
        for (start, n) in chunks(g.batch, per_chunk) {
            let dcol_at = dcol.address_of_range(0, n * col_image * 4)?;
            let b = images_at(dy_buffer, start, n, out_image, bytes)?;
            let operands = GemmAddresses {
                a: w_at,
                b,
                c: dcol_at,
                row_bias: 0,
                col_bias: 0,
                c_16bit: false,
            };
            gemm_chunk(&gpu, &conv.input_grad_spec(n), operands, 0.0, mixed)?;
            col2im_at(
                &gpu,
                dx_storage,
                dcol_at,
                &with_batch(g, n),
                images_at(dx, start, n, image, dx_storage.bytes())?,
            )?;
        }
        Ok(())
    })
}

/// dW = Σ_n dy[n] · im2col(x[n])ᵀ, the chunks' sums added into dW one after another.
pub(super) fn weight_grad(
    x: &RawTensor,
    dy: &RawTensor,
    conv: &GroupedConv,
    mixed: Option<DType>,
) -> Result<RawTensor> {
    let g = &conv.geometry;
    let (gpu, xb, s) = gpu_float("conv2d weight gradient", x)?;
    let bytes = element_bytes(mixed);
    let (image, out_image, col_image) = per_image(conv);
    let dy = product_operand(dy, mixed)?;
    let dy_buffer = dy.gpu_buffer("conv2d weight gradient")?;
    let per_chunk = images_per_chunk(&gpu, g, bytes);
    let col = gpu.alloc(per_chunk * col_image * bytes)?;
    gpu_output(&gpu, conv.weight_shape(), DType::F32, |dw| {
        let dw_at = dw.address_of_range(0, conv.weight_shape().iter().product::<usize>() * 4)?;
        for (i, (start, n)) in chunks(g.batch, per_chunk).enumerate() {
            let col_at = col.address_of_range(0, n * col_image * bytes)?;
            im2col_chunk(
                &gpu,
                (images_at(xb, start, n, image, s.bytes())?, s),
                &with_batch(g, n),
                col_at,
                mixed,
            )?;
            let a = images_at(dy_buffer, start, n, out_image, bytes)?;
            let operands = GemmAddresses {
                a,
                b: col_at,
                c: dw_at,
                row_bias: 0,
                col_bias: 0,
                c_16bit: false,
            };
            // The first chunk overwrites dW (never reading the fresh buffer), the rest add to it.
            let beta = if i == 0 { 0.0 } else { 1.0 };
            gemm_chunk(&gpu, &conv.weight_grad_spec(n), operands, beta, mixed)?;
        }
        Ok(())
    })
}
