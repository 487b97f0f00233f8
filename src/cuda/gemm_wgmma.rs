//! Launcher for kernels/gemm_wgmma.cu: the Hopper tensor-core GEMM on warpgroup MMA (wgmma), for
//! the same products as gemm_tc.rs when both operands can be copied into shared memory 16 bytes at
//! a time. Single products (one batch entry, one group) load their panels with TMA
//! (`gemm_wgmma_tma_*`, tensor maps encoded here per launch); batched, grouped and batch-summed
//! ones with cp.async (`gemm_wgmma_*`). Opt-in (`KernelPolicy::wgmma`, and for the loader and
//! tile `wgmma_tma`, `wgmma_wide`: see [`super::KernelPolicy`]) until a GPU run shows it correct
//! and faster than `gemm_tc` in the same benchmark; it runs under emulation everywhere and on
//! compute capability 9.0 GPUs (H100, H200). Which products take it, and which of its kernels:
//! [`super::gemm_select::select_gemm`]. Which kernels ran: [`super::count_launches`].

use super::gemm::{grid_config, GemmAddresses, GemmEpilogue, GemmLayout};
use super::gemm_select::WgmmaHandle;
use super::params::to_i32;
use super::{kernel_params, launch, Gpu, Kernel, LaunchConfig};
use crate::core::error::Result;
use crate::core::shape::GemmSpec;

/// Tile of C per block (WG_TILE in kernels/gemm_wgmma.cu); 256 threads, as gemm.rs's grid gives.
const TILE: usize = 128;
/// Dynamic shared memory: 4 stages of two 128x64 16-bit panels, plus 1024 bytes of slack for the
/// kernel to align the stages to the 128-byte swizzle's 1024-byte atoms.
const SHARED_BYTES: u32 = 4 * 2 * 128 * 64 * 2 + 1024;
/// The TMA kernels': 4 stages of A's 128x64 panel and B's `tile_n`x64 one, 1024 bytes of slack,
/// and 8 mbarriers (a full and an empty one per stage).
const fn tma_shared_bytes(tile_n: u32) -> u32 {
    4 * (128 * 64 * 2 + tile_n * 64 * 2) + 1024 + 8 * 8
}
/// C tile width of the wide TMA kernels (`gemm_wgmma_tma_wide_*`).
const WIDE_TILE: usize = 256;
/// Threads of the TMA kernel: a producer warpgroup and two consumers.
const TMA_THREADS: u32 = 384;
/// Panel depth (k) of both kernels, and the MN-major box width (one 128-byte swizzle atom).
const BK: u32 = 64;
const ATOM: u32 = 64;

/// Mirrors `WgmmaGemmParams` in kernels/gemm_wgmma.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct WgmmaGemmParams {
    a: u64,
    b: u64,
    c: u64,
    layout: GemmLayout,
    epilogue: GemmEpilogue,
}

/// A TMA descriptor as the kernel reads it (`KilnTensorMap`: the driver's `CUtensorMap`).
#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct TensorMap([u64; 16]);

/// Mirrors `WgmmaTmaParams` in kernels/gemm_wgmma.cu.
#[repr(C, align(128))]
#[derive(Clone, Copy)]
pub(crate) struct WgmmaTmaParams {
    map_a: TensorMap,
    map_b: TensorMap,
    c: u64,
    m: i32,
    n: i32,
    k: i32,
    trans_a: i32,
    trans_b: i32,
    epilogue: GemmEpilogue,
}

// The C side asserts the same offsets of its first epilogue fields (kernels/gemm_wgmma.cu).
const _: () = assert!(std::mem::offset_of!(WgmmaGemmParams, epilogue) == 104);
const _: () = assert!(std::mem::offset_of!(WgmmaTmaParams, epilogue) == 288);

kernel_params!(WgmmaGemmParams, WgmmaTmaParams);

/// The tensor map of an operand stored with `rows` (m or n) and `k`, whose panels are `tile`
/// rows: K-major ([rows][k]) boxes are 64 k x `tile` rows, MN-major ([k][rows]) ones 64 rows x
/// 64 k (one swizzle atom; `tile` / 64 per panel).
fn operand_map(
    gpu: &Gpu,
    address: u64,
    (rows, k): (usize, usize),
    (mn_major, tile): (bool, usize),
    bf16: bool,
) -> Result<TensorMap> {
    let (inner, outer, boxes) = if mn_major {
        (rows, k, [ATOM, BK])
    } else {
        (k, rows, [BK, tile as u32])
    };
    let dims = [inner as u64, outer as u64];
    Ok(TensorMap(gpu.tensor_map_2d(
        address,
        dims,
        inner as u64 * 2,
        boxes,
        bf16,
    )?))
}

/// The TMA kernel on a single product.
fn gemm_wgmma_tma_at(
    gpu: &Gpu,
    kernel: Kernel<WgmmaTmaParams>,
    (bf16, wide): (bool, bool),
    spec: &GemmSpec,
    alpha: f32,
    operands: GemmAddresses,
    beta: f32,
) -> Result<()> {
    let GemmAddresses { a, b, c, .. } = operands;
    let tile_n = if wide { WIDE_TILE } else { TILE };
    let params = WgmmaTmaParams {
        map_a: operand_map(gpu, a, (spec.m, spec.k), (spec.trans_a, TILE), bf16)?,
        map_b: operand_map(gpu, b, (spec.n, spec.k), (!spec.trans_b, tile_n), bf16)?,
        c,
        m: to_i32("gemm m", spec.m)?,
        n: to_i32("gemm n", spec.n)?,
        k: to_i32("gemm k", spec.k)?,
        trans_a: spec.trans_a as i32,
        trans_b: spec.trans_b as i32,
        epilogue: GemmEpilogue::of(&operands, alpha, beta),
    };
    let grid = grid_config(spec, TILE, tile_n);
    let cfg = LaunchConfig {
        grid: (grid.grid.0, grid.grid.1, 1),
        block: (TMA_THREADS, 1, 1),
        shared_bytes: tma_shared_bytes(tile_n as u32),
    };
    launch(gpu, kernel, cfg, &params)
}

/// The cp.async kernel on any product (batches, groups, batch sums).
fn gemm_wgmma_cp_async_at(
    gpu: &Gpu,
    kernel: Kernel<WgmmaGemmParams>,
    spec: &GemmSpec,
    alpha: f32,
    operands: GemmAddresses,
    beta: f32,
) -> Result<()> {
    let GemmAddresses { a, b, c, .. } = operands;
    let params = WgmmaGemmParams {
        a,
        b,
        c,
        layout: GemmLayout::of(spec)?,
        epilogue: GemmEpilogue::of(&operands, alpha, beta),
    };
    to_i32("gemm output matrices", spec.outputs())?;
    let cfg = LaunchConfig {
        shared_bytes: SHARED_BYTES,
        ..grid_config(spec, TILE, TILE)
    };
    launch(gpu, kernel, cfg, &params)
}

/// Runs `kernel` (chosen by `select_gemm`: the handle of a `WgmmaKernel`) on device addresses
/// (ranges checked by the caller).
pub(crate) fn gemm_wgmma_at(
    gpu: &Gpu,
    kernel: WgmmaHandle,
    spec: &GemmSpec,
    alpha: f32,
    operands: GemmAddresses,
    beta: f32,
) -> Result<()> {
    match kernel {
        WgmmaHandle::Tma { kernel, bf16, wide } => {
            gemm_wgmma_tma_at(gpu, kernel, (bf16, wide), spec, alpha, operands, beta)
        }
        WgmmaHandle::CpAsync(kernel) => {
            gemm_wgmma_cp_async_at(gpu, kernel, spec, alpha, operands, beta)
        }
    }
}
