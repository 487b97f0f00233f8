//! Launcher for kernels/gemm_wgmma.cu: the Hopper tensor-core GEMM on warpgroup MMA (wgmma), for
//! the same products as gemm_tc.rs when both operands can be copied into shared memory 16 bytes at
//! a time. Opt-in ([`set_wgmma_gemm`]) until a GPU run shows it correct and faster than
//! `gemm_tc` in the same benchmark; it runs under emulation everywhere and on compute capability
//! 9.0 GPUs (H100, H200).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::gemm::{grid_config, GemmAddresses};
use super::params::{to_i32, to_i64};
use super::{kernel_params, launch, Gpu, LaunchConfig};
use crate::error::Result;
use crate::shape::GemmSpec;

/// Tile of C per block (WG_TILE in kernels/gemm_wgmma.cu); 256 threads, as gemm.rs's grid gives.
const TILE: usize = 128;
/// Dynamic shared memory: 4 stages of two 128x64 16-bit panels, plus 1024 bytes of slack for the
/// kernel to align the stages to the 128-byte swizzle's 1024-byte atoms.
const SHARED_BYTES: u32 = 4 * 2 * 128 * 64 * 2 + 1024;

static WGMMA_GEMM: AtomicBool = AtomicBool::new(false);
static WGMMA_LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// Whether 16-bit products take the wgmma kernel where it can run (compute capability 9.0, or
/// emulation) and the operands allow it; otherwise they keep the mma.sync kernel (gemm_tc). Both
/// compute the same product; process-wide.
pub fn set_wgmma_gemm(enabled: bool) {
    WGMMA_GEMM.store(enabled, Ordering::Relaxed);
}

/// How many products the wgmma kernel has run in this process: lets tests and the benchmark
/// confirm which kernel a product took.
pub fn wgmma_launches() -> usize {
    WGMMA_LAUNCHES.load(Ordering::Relaxed)
}

/// Mirrors `WgmmaGemmParams` in kernels/gemm_wgmma.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct WgmmaGemmParams {
    a: u64,
    b: u64,
    c: u64,
    stride_a: i64,
    stride_b: i64,
    stride_c: i64,
    group_stride_a: i64,
    group_stride_b: i64,
    group_stride_c: i64,
    m: i32,
    n: i32,
    k: i32,
    trans_a: i32,
    trans_b: i32,
    batch: i32,
    reduce_batch: i32,
    groups: i32,
    row_bias: u64,
    alpha: f32,
    beta: f32,
}

kernel_params!(WgmmaGemmParams);

/// The kernel copies 8 consecutive elements at a time along an operand's contiguous dimension
/// (`contiguous`: k for a K-major operand, m or n for an MN-major one), so that dimension, the
/// batch and group strides must be multiples of 8 elements and the base 16-byte aligned.
fn copies_whole_chunks(address: u64, contiguous: usize, strides: [usize; 2]) -> bool {
    address % 16 == 0 && contiguous % 8 == 0 && strides.iter().all(|s| s % 8 == 0)
}

/// The wgmma kernel for this product, if it is enabled, can run on `gpu`, and takes the operands.
pub(crate) fn wgmma_kernel(
    gpu: &Gpu,
    spec: &GemmSpec,
    a: u64,
    b: u64,
    bf16: bool,
) -> Option<&'static str> {
    let kernel = if bf16 {
        "gemm_wgmma_bf16"
    } else {
        "gemm_wgmma_f16"
    };
    let a_contiguous = if spec.trans_a { spec.m } else { spec.k };
    let b_contiguous = if spec.trans_b { spec.k } else { spec.n };
    let usable = WGMMA_GEMM.load(Ordering::Relaxed)
        && gpu.has_kernel(kernel)
        && copies_whole_chunks(a, a_contiguous, [spec.stride_a, spec.group_stride_a])
        && copies_whole_chunks(b, b_contiguous, [spec.stride_b, spec.group_stride_b]);
    usable.then_some(kernel)
}

/// Runs `kernel` (from [`wgmma_kernel`]) on device addresses (ranges checked by the caller).
pub(crate) fn gemm_wgmma_at(
    gpu: &Gpu,
    kernel: &'static str,
    spec: &GemmSpec,
    alpha: f32,
    GemmAddresses { a, b, c, row_bias }: GemmAddresses,
    beta: f32,
) -> Result<()> {
    let params = WgmmaGemmParams {
        a,
        b,
        c,
        stride_a: to_i64("gemm stride", spec.stride_a)?,
        stride_b: to_i64("gemm stride", spec.stride_b)?,
        stride_c: to_i64("gemm stride", spec.stride_c)?,
        group_stride_a: to_i64("gemm group stride", spec.group_stride_a)?,
        group_stride_b: to_i64("gemm group stride", spec.group_stride_b)?,
        group_stride_c: to_i64("gemm group stride", spec.group_stride_c)?,
        m: to_i32("gemm m", spec.m)?,
        n: to_i32("gemm n", spec.n)?,
        k: to_i32("gemm k", spec.k)?,
        trans_a: spec.trans_a as i32,
        trans_b: spec.trans_b as i32,
        batch: to_i32("gemm batch", spec.batch)?,
        reduce_batch: spec.reduce_batch as i32,
        groups: to_i32("gemm groups", spec.groups)?,
        row_bias,
        alpha,
        beta,
    };
    to_i32("gemm output matrices", spec.outputs())?;
    let cfg = LaunchConfig {
        shared_bytes: SHARED_BYTES,
        ..grid_config(spec, TILE, TILE)
    };
    launch(gpu, kernel, cfg, &params)?;
    WGMMA_LAUNCHES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
