//! Launcher for kernels/gemm_tc.cu: the tensor-core GEMM with bf16 or f16 inputs and f32
//! accumulation and output; the entry point of every 16-bit product, which hands the product to
//! the wgmma kernels (gemm_wgmma.rs) when [`super::gemm_select::select_gemm`] picks them.

use super::gemm::{grid_config, GemmAddresses, GemmEpilogue, GemmLayout};
use super::gemm_select::{select_gemm, GemmFormat, GemmHandle, GemmOperands};
use super::gemm_wgmma::gemm_wgmma_at;
use super::params::to_i32;
use super::{kernel_params, launch, Gpu};
use crate::core::error::{invalid, Error, Result};
use crate::core::shape::GemmSpec;

/// Tile of C per block of the square-tile kernels (gemm_tc_*; 256 threads, as gemm.rs's grid
/// gives): the tallest tile, which bounds the grid's rows.
const TILE: usize = 128;

/// Mirrors `TcGemmParams` in kernels/gemm_tc.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TcGemmParams {
    a: u64,
    b: u64,
    c: u64,
    layout: GemmLayout,
    vec_a: i32,
    vec_b: i32,
    epilogue: GemmEpilogue,
}

// The C side asserts the same offset of its first epilogue field (kernels/gemm_tc.cu).
const _: () = assert!(std::mem::offset_of!(TcGemmParams, epilogue) == 112);

kernel_params!(TcGemmParams);

/// 16-byte loads (8 elements) are valid for an operand whose k is contiguous in memory, whose
/// base is 16-byte aligned, and whose k, batch stride and group stride are multiples of 8 elements.
fn vector_ok(k_contiguous: bool, address: u64, k: usize, strides: [usize; 2]) -> i32 {
    (k_contiguous && address % 16 == 0 && k % 8 == 0 && strides.iter().all(|s| s % 8 == 0)) as i32
}

/// A 16-bit C is written, never read: it needs beta = 0.
pub(crate) fn check_16bit_output(operands: &GemmAddresses, beta: f32) -> Result<()> {
    if operands.c_16bit && beta != 0.0 {
        return Err(invalid(
            "gemm output",
            format!("a 16-bit C is only written (beta = 0), got beta = {beta}"),
        ));
    }
    Ok(())
}

/// C = alpha·op(A)·op(B) + beta·C with A and B 16-bit (bf16 when `bf16`, else f16), as `spec`
/// describes (batches, groups, sums over the batch), on the tensor cores, on device addresses
/// (ranges checked by the caller); C is f32, or 16-bit as `operands.c_16bit` says.
pub(crate) fn gemm_16bit_at(
    gpu: &Gpu,
    spec: &GemmSpec,
    alpha: f32,
    operands: GemmAddresses,
    beta: f32,
    bf16: bool,
) -> Result<()> {
    check_16bit_output(&operands, beta)?;
    if spec.m == 0 || spec.n == 0 || spec.outputs() == 0 {
        return Ok(());
    }
    to_i32("gemm grid", spec.m.div_ceil(TILE))?;
    let GemmAddresses { a, b, c, .. } = operands;
    let format = if bf16 {
        GemmFormat::Bf16
    } else {
        GemmFormat::F16
    };
    let inputs = GemmOperands { format, a, b };
    let kernel = select_gemm(spec, &inputs, &gpu.kernel_policy(), &gpu.capabilities());
    // A 16-bit product is wgmma's or one of the gemm_tc kernels, which all read `TcGemmParams`.
    let handle = match kernel.handle() {
        GemmHandle::TensorCore(handle) => handle,
        GemmHandle::Wgmma(wgmma) => return gemm_wgmma_at(gpu, wgmma, spec, alpha, operands, beta),
        GemmHandle::F32(_) => {
            return Err(Error::Internal(format!(
                "select_gemm chose {} for a 16-bit product",
                kernel.name()
            )))
        }
    };
    let params = TcGemmParams {
        a,
        b,
        c,
        layout: GemmLayout::of(spec)?,
        vec_a: vector_ok(
            !spec.trans_a,
            a,
            spec.k,
            [spec.stride_a, spec.group_stride_a],
        ),
        vec_b: vector_ok(
            spec.trans_b,
            b,
            spec.k,
            [spec.stride_b, spec.group_stride_b],
        ),
        epilogue: GemmEpilogue::of(&operands, alpha, beta),
    };
    to_i32("gemm output matrices", spec.outputs())?;
    let (tile_m, tile_n) = kernel.tile();
    launch(gpu, handle, grid_config(spec, tile_m, tile_n), &params)
}
