//! Which GEMM kernel a product takes: every decision in one pure function, [`select_gemm`], of
//! the product's shape, its operands' format and alignment, the context's [`KernelPolicy`] and
//! what the context can run ([`Capabilities`]). The launchers (gemm.rs, gemm_tc.rs,
//! gemm_wgmma.rs) call it and launch the typed handle of what it names (`GemmKernel::handle`, an
//! exhaustive match); its tests launch nothing.

use super::gemm::GemmParams;
use super::gemm_tc::TcGemmParams;
use super::gemm_wgmma::{WgmmaGemmParams, WgmmaTmaParams};
use super::policy::KernelPolicy;
use super::{kernels, Kernel};
use crate::core::shape::GemmSpec;

/// What a context can run beyond the kernels every GPU kiln supports loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The Hopper wgmma/TMA kernels are loaded: under emulation, and on compute capability 9.0
    /// (their `compute_90a` module loads there alone).
    pub wgmma: bool,
}

impl Capabilities {
    /// The kernel emulation runs every kernel.
    pub const EMULATED: Capabilities = Capabilities { wgmma: true };

    /// A GPU of compute capability `major.minor` with every module kiln builds.
    pub fn of_compute_capability(major: i32, minor: i32) -> Capabilities {
        Capabilities {
            wgmma: (major, minor) == (9, 0),
        }
    }
}

/// The element format of a product's A and B (C is f32, or 16-bit through the epilogue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmFormat {
    F32,
    Bf16,
    F16,
}

/// What [`select_gemm`] needs of the operands beyond the shape: their format and device
/// addresses (the wgmma kernels copy whole 16-byte chunks, so alignment matters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmOperands {
    pub format: GemmFormat,
    pub a: u64,
    pub b: u64,
}

/// Rows of a flat tile: 16 for m ≤ 16, 32 for m ≤ 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlatRows {
    R16,
    R32,
}

/// Which wgmma kernel a product takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmmaKernel {
    /// cp.async loads, 128x128 tiles (`gemm_wgmma_*`): batched, grouped and batch-summed products.
    CpAsync { bf16: bool },
    /// TMA loads, 128x128 or, `wide`, 128x256 tiles (`gemm_wgmma_tma[_wide]_*`): single products.
    Tma { bf16: bool, wide: bool },
}

/// A GEMM kernel with its tile of C per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// `gemm_f32`, 64x64 tiles.
    F32,
    /// `gemm_128x128_f32`.
    F32Large,
    /// `gemm_16x256_f32` or `gemm_32x128_f32`.
    F32Flat(FlatRows),
    /// `mma.sync` tensor cores: `gemm_tc_*` with 128x128 tiles, or flat 16x256 / 32x256 ones.
    TensorCore { bf16: bool, flat: Option<FlatRows> },
    /// The Hopper warpgroup-MMA kernels.
    Wgmma(WgmmaKernel),
}

impl GemmKernel {
    /// The kernel's name in kernels/*.cu.
    pub fn name(self) -> &'static str {
        self.handle().name()
    }

    /// The kernel's typed handle, by the parameter struct its launcher fills.
    pub(crate) fn handle(self) -> GemmHandle {
        use kernels::*;
        use GemmKernel::*;
        match self {
            F32 => GemmHandle::F32(GEMM_F32),
            F32Large => GemmHandle::F32(GEMM_128X128_F32),
            F32Flat(FlatRows::R16) => GemmHandle::F32(GEMM_16X256_F32),
            F32Flat(FlatRows::R32) => GemmHandle::F32(GEMM_32X128_F32),
            TensorCore { bf16, flat } => GemmHandle::TensorCore(match (flat, bf16) {
                (Some(FlatRows::R16), true) => GEMM_TC_16X256_BF16,
                (Some(FlatRows::R16), false) => GEMM_TC_16X256_F16,
                (Some(FlatRows::R32), true) => GEMM_TC_32X256_BF16,
                (Some(FlatRows::R32), false) => GEMM_TC_32X256_F16,
                (None, true) => GEMM_TC_BF16,
                (None, false) => GEMM_TC_F16,
            }),
            Wgmma(w) => GemmHandle::Wgmma(w.handle()),
        }
    }

    /// The tile of C one block computes: (rows, columns).
    pub fn tile(self) -> (usize, usize) {
        use GemmKernel::*;
        match self {
            F32 => (64, 64),
            F32Large => (BIG_TILE, BIG_TILE),
            F32Flat(FlatRows::R16) => (16, 256),
            F32Flat(FlatRows::R32) => (32, 128),
            TensorCore { flat: None, .. } => (128, 128),
            TensorCore {
                flat: Some(rows), ..
            } => (rows.rows(), 256),
            Wgmma(WgmmaKernel::Tma { wide: true, .. }) => (WGMMA_TILE, 2 * WGMMA_TILE),
            Wgmma(_) => (WGMMA_TILE, WGMMA_TILE),
        }
    }
}

impl FlatRows {
    pub fn rows(self) -> usize {
        match self {
            FlatRows::R16 => 16,
            FlatRows::R32 => 32,
        }
    }
}

impl WgmmaKernel {
    pub fn name(self) -> &'static str {
        match self.handle() {
            WgmmaHandle::CpAsync(kernel) => kernel.name(),
            WgmmaHandle::Tma { kernel, .. } => kernel.name(),
        }
    }

    /// The kernel's typed handle, by the parameter struct its launcher fills.
    pub(crate) fn handle(self) -> WgmmaHandle {
        use kernels::*;
        match self {
            WgmmaKernel::CpAsync { bf16: true } => WgmmaHandle::CpAsync(GEMM_WGMMA_BF16),
            WgmmaKernel::CpAsync { bf16: false } => WgmmaHandle::CpAsync(GEMM_WGMMA_F16),
            WgmmaKernel::Tma { bf16, wide } => WgmmaHandle::Tma {
                kernel: match (bf16, wide) {
                    (true, false) => GEMM_WGMMA_TMA_BF16,
                    (true, true) => GEMM_WGMMA_TMA_WIDE_BF16,
                    (false, false) => GEMM_WGMMA_TMA_F16,
                    (false, true) => GEMM_WGMMA_TMA_WIDE_F16,
                },
                bf16,
                wide,
            },
        }
    }
}

/// A [`GemmKernel`] as its launcher takes it: the typed handle, whose parameter struct says which
/// launcher fills it (gemm.rs, gemm_tc.rs, gemm_wgmma.rs).
#[derive(Clone, Copy, Debug)]
pub(crate) enum GemmHandle {
    F32(Kernel<GemmParams>),
    TensorCore(Kernel<TcGemmParams>),
    Wgmma(WgmmaHandle),
}

impl GemmHandle {
    pub(crate) fn name(self) -> &'static str {
        match self {
            GemmHandle::F32(kernel) => kernel.name(),
            GemmHandle::TensorCore(kernel) => kernel.name(),
            GemmHandle::Wgmma(w) => match w {
                WgmmaHandle::CpAsync(kernel) => kernel.name(),
                WgmmaHandle::Tma { kernel, .. } => kernel.name(),
            },
        }
    }
}

/// A [`WgmmaKernel`] as gemm_wgmma.rs takes it: the cp.async kernel, or a TMA kernel with the
/// format its tensor maps describe and its tile width.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WgmmaHandle {
    CpAsync(Kernel<WgmmaGemmParams>),
    Tma {
        kernel: Kernel<WgmmaTmaParams>,
        bf16: bool,
        wide: bool,
    },
}

/// The square tile of `gemm_128x128_f32` and the k panel it needs filled at least once.
const BIG_TILE: usize = 128;
const BIG_BK: usize = 8;
/// The wgmma kernels' tile rows and their narrow tile's columns.
const WGMMA_TILE: usize = 128;

/// The kernel for this product on a context with `capabilities` under `policy`.
pub fn select_gemm(
    spec: &GemmSpec,
    operands: &GemmOperands,
    policy: &KernelPolicy,
    capabilities: &Capabilities,
) -> GemmKernel {
    let flat = flat_rows(spec, policy);
    let bf16 = match operands.format {
        GemmFormat::F32 => return f32_kernel(spec, policy, flat),
        GemmFormat::Bf16 => true,
        GemmFormat::F16 => false,
    };
    if flat.is_none() {
        if let Some(w) = wgmma_kernel(spec, operands, policy, capabilities, bf16) {
            return GemmKernel::Wgmma(w);
        }
    }
    GemmKernel::TensorCore { bf16, flat }
}

/// f32: 128x128 tiles when enabled and both output dimensions fill one (and k one panel); smaller
/// products keep 64x64 tiles, which give more blocks. Alignment does not matter: the f32 kernels
/// fall back to guarded scalar loads per operand.
fn f32_kernel(spec: &GemmSpec, policy: &KernelPolicy, flat: Option<FlatRows>) -> GemmKernel {
    let big = spec.m >= BIG_TILE && spec.n >= BIG_TILE && spec.k >= BIG_BK;
    match flat {
        _ if policy.large_tiles && big => GemmKernel::F32Large,
        Some(rows) => GemmKernel::F32Flat(rows),
        None => GemmKernel::F32,
    }
}

/// The flat tile's rows, if flat tiles are enabled and the product has at most 32 rows. A
/// batch-summed product (a weight gradient) has only ceil(n / tile)·groups blocks: flatter,
/// wider tiles would leave it fewer, so it keeps square ones.
fn flat_rows(spec: &GemmSpec, policy: &KernelPolicy) -> Option<FlatRows> {
    if !policy.flat_tiles || spec.reduce_batch {
        return None;
    }
    match spec.m {
        0..=16 => Some(FlatRows::R16),
        17..=32 => Some(FlatRows::R32),
        _ => None,
    }
}

/// The wgmma kernel, if enabled, loaded, and the operands can be copied in whole chunks. Single
/// products load by TMA (unless the policy says cp.async); a tensor map cannot describe an empty
/// matrix, so k = 0 (C = beta·C + bias) goes to cp.async too.
fn wgmma_kernel(
    spec: &GemmSpec,
    operands: &GemmOperands,
    policy: &KernelPolicy,
    capabilities: &Capabilities,
    bf16: bool,
) -> Option<WgmmaKernel> {
    let a_contiguous = if spec.trans_a { spec.m } else { spec.k };
    let b_contiguous = if spec.trans_b { spec.k } else { spec.n };
    let usable = policy.wgmma
        && capabilities.wgmma
        && copies_whole_chunks(
            operands.a,
            a_contiguous,
            [spec.stride_a, spec.group_stride_a],
        )
        && copies_whole_chunks(
            operands.b,
            b_contiguous,
            [spec.stride_b, spec.group_stride_b],
        );
    if !usable {
        return None;
    }
    let single = spec.batch == 1 && spec.groups == 1 && spec.k > 0;
    Some(if single && policy.wgmma_tma {
        let wide = spec.n > WGMMA_TILE && policy.wgmma_wide;
        WgmmaKernel::Tma { bf16, wide }
    } else {
        WgmmaKernel::CpAsync { bf16 }
    })
}

/// The wgmma kernels copy 8 consecutive elements at a time along an operand's contiguous
/// dimension (`contiguous`: k for a K-major operand, m or n for an MN-major one), so that
/// dimension, the batch and group strides must be multiples of 8 elements and the base 16-byte
/// aligned.
fn copies_whole_chunks(address: u64, contiguous: usize, strides: [usize; 2]) -> bool {
    address % 16 == 0 && contiguous % 8 == 0 && strides.iter().all(|s| s % 8 == 0)
}

#[cfg(test)]
#[path = "gemm_select_tests.rs"]
mod tests;
