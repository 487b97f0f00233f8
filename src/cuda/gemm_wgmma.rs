//! Launcher for kernels/gemm_wgmma.cu: the Hopper tensor-core GEMM on warpgroup MMA (wgmma), for
//! the same products as gemm_tc.rs when both operands can be copied into shared memory 16 bytes at
//! a time. Single products (one batch entry, one group) load their panels with TMA
//! (`gemm_wgmma_tma_*`, tensor maps encoded here per launch); batched, grouped and batch-summed
//! ones with cp.async (`gemm_wgmma_*`). Opt-in ([`set_wgmma_gemm`]) until a GPU run shows it
//! correct and faster than `gemm_tc` in the same benchmark; it runs under emulation everywhere and
//! on compute capability 9.0 GPUs (H100, H200).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::gemm::{grid_config, GemmAddresses, GemmEpilogue, GemmLayout};
use super::params::to_i32;
use super::{kernel_params, launch, Gpu, LaunchConfig};
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

static WGMMA_GEMM: AtomicBool = AtomicBool::new(false);
static WGMMA_TMA: AtomicBool = AtomicBool::new(true);
static WGMMA_WIDE: AtomicBool = AtomicBool::new(false);
static WGMMA_LAUNCHES: AtomicUsize = AtomicUsize::new(0);
static WGMMA_TMA_LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// Whether 16-bit products take the wgmma kernel where it can run (compute capability 9.0, or
/// emulation) and the operands allow it; otherwise they keep the mma.sync kernel (gemm_tc). Both
/// compute the same product; process-wide.
pub fn set_wgmma_gemm(enabled: bool) {
    WGMMA_GEMM.store(enabled, Ordering::Relaxed);
}

/// Whether single products under [`set_wgmma_gemm`] load their panels with TMA (default) or
/// with cp.async like batched ones: lets the benchmark time both loaders. Process-wide.
pub fn set_wgmma_tma(enabled: bool) {
    WGMMA_TMA.store(enabled, Ordering::Relaxed);
}

/// Whether single products wider than 128 columns take the TMA kernel with 128x256 tiles
/// (`gemm_wgmma_tma_wide_*`) rather than 128x128 ones. Opt-in until the GPU bench compares them.
/// Process-wide.
pub fn set_wgmma_wide_tiles(enabled: bool) {
    WGMMA_WIDE.store(enabled, Ordering::Relaxed);
}

/// How many products the wgmma kernels have run in this process: lets tests and the benchmark
/// confirm which kernel a product took.
pub fn wgmma_launches() -> usize {
    WGMMA_LAUNCHES.load(Ordering::Relaxed)
}

/// How many of [`wgmma_launches`] loaded their panels with TMA.
pub fn wgmma_tma_launches() -> usize {
    WGMMA_TMA_LAUNCHES.load(Ordering::Relaxed)
}

/// Mirrors `WgmmaGemmParams` in kernels/gemm_wgmma.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct WgmmaGemmParams {
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
struct WgmmaTmaParams {
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

/// The kernel copies 8 consecutive elements at a time along an operand's contiguous dimension
/// (`contiguous`: k for a K-major operand, m or n for an MN-major one), so that dimension, the
/// batch and group strides must be multiples of 8 elements and the base 16-byte aligned.
fn copies_whole_chunks(address: u64, contiguous: usize, strides: [usize; 2]) -> bool {
    address % 16 == 0 && contiguous % 8 == 0 && strides.iter().all(|s| s % 8 == 0)
}

/// Which wgmma kernel a product takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WgmmaKernel {
    /// cp.async loads, 128x128 tiles (`gemm_wgmma_*`): batched, grouped and batch-summed products.
    CpAsync { bf16: bool },
    /// TMA loads, 128x128 or, `wide`, 128x256 tiles (`gemm_wgmma_tma[_wide]_*`): single products.
    Tma { bf16: bool, wide: bool },
}

impl WgmmaKernel {
    fn name(self) -> &'static str {
        match self {
            WgmmaKernel::CpAsync { bf16: true } => "gemm_wgmma_bf16",
            WgmmaKernel::CpAsync { bf16: false } => "gemm_wgmma_f16",
            WgmmaKernel::Tma {
                bf16: true,
                wide: false,
            } => "gemm_wgmma_tma_bf16",
            WgmmaKernel::Tma {
                bf16: false,
                wide: false,
            } => "gemm_wgmma_tma_f16",
            WgmmaKernel::Tma {
                bf16: true,
                wide: true,
            } => "gemm_wgmma_tma_wide_bf16",
            WgmmaKernel::Tma {
                bf16: false,
                wide: true,
            } => "gemm_wgmma_tma_wide_f16",
        }
    }
}

/// The wgmma kernel for this product, if it is enabled, can run on `gpu`, and takes the operands.
pub(crate) fn wgmma_kernel(
    gpu: &Gpu,
    spec: &GemmSpec,
    a: u64,
    b: u64,
    bf16: bool,
) -> Option<WgmmaKernel> {
    // A tensor map cannot describe an empty matrix: k = 0 (C = beta·C + bias) goes to cp.async.
    let single =
        spec.batch == 1 && spec.groups == 1 && spec.k > 0 && WGMMA_TMA.load(Ordering::Relaxed);
    let kernel = if single {
        let wide = spec.n > TILE && WGMMA_WIDE.load(Ordering::Relaxed);
        WgmmaKernel::Tma { bf16, wide }
    } else {
        WgmmaKernel::CpAsync { bf16 }
    };
    let a_contiguous = if spec.trans_a { spec.m } else { spec.k };
    let b_contiguous = if spec.trans_b { spec.k } else { spec.n };
    let usable = WGMMA_GEMM.load(Ordering::Relaxed)
        && gpu.has_kernel(kernel.name())
        && copies_whole_chunks(a, a_contiguous, [spec.stride_a, spec.group_stride_a])
        && copies_whole_chunks(b, b_contiguous, [spec.stride_b, spec.group_stride_b]);
    usable.then_some(kernel)
}

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
    let kernel = WgmmaKernel::Tma { bf16, wide }.name();
    launch(gpu, kernel, cfg, &params)?;
    WGMMA_TMA_LAUNCHES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The cp.async kernel on any product (batches, groups, batch sums).
fn gemm_wgmma_cp_async_at(
    gpu: &Gpu,
    bf16: bool,
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
    launch(gpu, WgmmaKernel::CpAsync { bf16 }.name(), cfg, &params)
}

/// Runs `kernel` (from [`wgmma_kernel`]) on device addresses (ranges checked by the caller).
pub(crate) fn gemm_wgmma_at(
    gpu: &Gpu,
    kernel: WgmmaKernel,
    spec: &GemmSpec,
    alpha: f32,
    operands: GemmAddresses,
    beta: f32,
) -> Result<()> {
    match kernel {
        WgmmaKernel::Tma { bf16, wide } => {
            gemm_wgmma_tma_at(gpu, (bf16, wide), spec, alpha, operands, beta)?
        }
        WgmmaKernel::CpAsync { bf16 } => {
            gemm_wgmma_cp_async_at(gpu, bf16, spec, alpha, operands, beta)?
        }
    }
    WGMMA_LAUNCHES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
