//! Launchers for kernels/layout_probe.cu and kernels/layout_probe_wgmma.cu: probes that run one
//! layout rule the kernels and their emulation share (the 128-byte swizzle, the wgmma matrix
//! descriptor, the register fragments of mma.sync and wgmma) on inputs the caller chooses, and
//! return what came out. tests/layout_oracles.rs checks the answers against the PTX ISA's
//! descriptions; on a GPU the instructions themselves answer. Nothing in training uses them.

use std::sync::Arc;

use super::params::to_i64;
use super::{
    elementwise_config, gpu, kernel_params, kernels, launch, Gpu, GpuBuffer, LaunchConfig,
};
use crate::core::device::Device;
use crate::core::error::{invalid, Result};

/// Mirrors `SwizzleProbeParams` in kernels/layout_probe.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SwizzleProbeParams {
    offsets: u64,
    out: u64,
    n: i64,
}

/// Mirrors `DescriptorProbeParams` in kernels/layout_probe.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DescriptorProbeParams {
    fields: u64,
    out: u64,
    n: i64,
}

/// Mirrors `MmaProbeParams` in kernels/layout_probe.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MmaProbeParams {
    a: u64,
    b: u64,
    c: u64,
    d: u64,
    bf16: i32,
}

/// Mirrors `WgmmaProbeParams` in kernels/layout_probe_wgmma.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct WgmmaProbeParams {
    image: u64,
    d: u64,
    bf16: i32,
    a_mn_major: i32,
    b_mn_major: i32,
    step: i32,
}

kernel_params!(
    SwizzleProbeParams,
    DescriptorProbeParams,
    MmaProbeParams,
    WgmmaProbeParams
);

/// Bytes of the wgmma probe's A tile (64 m x 64 k) and B tile (128 n x 64 k), 16-bit values.
pub const WGMMA_PROBE_A_BYTES: usize = 64 * 128;
pub const WGMMA_PROBE_B_BYTES: usize = 128 * 128;
/// Threads of the wgmma probe (one warpgroup) and accumulators per thread (m64n128: 64).
pub const WGMMA_PROBE_THREADS: usize = 128;
pub const WGMMA_PROBE_ACCUMULATORS: usize = 64;

/// The 16-bit input format of an mma probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Bf16,
    F16,
}

impl Half {
    fn bf16(self) -> i32 {
        i32::from(self == Half::Bf16)
    }
}

/// The opened GPU (or emulation) of `device`: the probes run kernels, so the CPU is an error.
fn open(device: Device) -> Result<Arc<Gpu>> {
    gpu(device)
}

/// A device buffer holding `values`.
fn uploaded<T: Copy>(g: &Arc<Gpu>, values: &[T]) -> Result<GpuBuffer> {
    let mut buffer = g.alloc(std::mem::size_of_val(values).max(1))?;
    g.upload(values, &mut buffer)?;
    Ok(buffer)
}

/// `swizzle_128b(offset)` (kernels/hopper.cuh) for each offset, computed on `device`.
pub fn swizzle_128b(device: Device, offsets: &[u32]) -> Result<Vec<u32>> {
    let g = open(device)?;
    let input = uploaded(&g, offsets)?;
    let output = g.alloc(std::mem::size_of_val(offsets).max(1))?;
    let params = SwizzleProbeParams {
        offsets: input.address(),
        out: output.address(),
        n: to_i64("swizzle probe length", offsets.len())?,
    };
    launch(
        &g,
        kernels::LAYOUT_PROBE_SWIZZLE,
        elementwise_config(offsets.len()),
        &params,
    )?;
    let mut out = vec![0u32; offsets.len()];
    g.download(&output, &mut out)?;
    Ok(out)
}

/// `wgmma_descriptor(address, leading_bytes, stride_bytes)` (kernels/hopper.cuh) for each triple,
/// computed on `device`.
pub fn wgmma_descriptors(device: Device, fields: &[[u32; 3]]) -> Result<Vec<u64>> {
    let g = open(device)?;
    let flat: Vec<u32> = fields.iter().flatten().copied().collect();
    let input = uploaded(&g, &flat)?;
    let output = g.alloc((fields.len() * 8).max(1))?;
    let params = DescriptorProbeParams {
        fields: input.address(),
        out: output.address(),
        n: to_i64("descriptor probe length", fields.len())?,
    };
    launch(
        &g,
        kernels::LAYOUT_PROBE_DESCRIPTOR,
        elementwise_config(fields.len()),
        &params,
    )?;
    let mut out = vec![0u64; fields.len()];
    g.download(&output, &mut out)?;
    Ok(out)
}

/// One `mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}` by one warp on `device`: lane l holds
/// A registers `a[l]`, B registers `b[l]` and accumulators `c[l]`; returns each lane's
/// accumulators afterwards.
pub fn mma_m16n8k16(
    device: Device,
    format: Half,
    a: &[[u32; 4]; 32],
    b: &[[u32; 2]; 32],
    c: &[[f32; 4]; 32],
) -> Result<[[f32; 4]; 32]> {
    let g = open(device)?;
    let flat_a: Vec<u32> = a.iter().flatten().copied().collect();
    let flat_b: Vec<u32> = b.iter().flatten().copied().collect();
    let flat_c: Vec<f32> = c.iter().flatten().copied().collect();
    let (ab, bb, cb) = (
        uploaded(&g, &flat_a)?,
        uploaded(&g, &flat_b)?,
        uploaded(&g, &flat_c)?,
    );
    let output = g.alloc(32 * 4 * 4)?;
    let params = MmaProbeParams {
        a: ab.address(),
        b: bb.address(),
        c: cb.address(),
        d: output.address(),
        bf16: format.bf16(),
    };
    let cfg = LaunchConfig {
        grid: (1, 1, 1),
        block: (32, 1, 1),
        shared_bytes: 0,
    };
    launch(&g, kernels::LAYOUT_PROBE_MMA_16816, cfg, &params)?;
    let mut flat_d = vec![0f32; 32 * 4];
    g.download(&output, &mut flat_d)?;
    let mut d = [[0f32; 4]; 32];
    for (lane, chunk) in d.iter_mut().zip(flat_d.chunks_exact(4)) {
        lane.copy_from_slice(chunk);
    }
    Ok(d)
}

/// How the wgmma probe's operands are stored and which k16 slice it multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WgmmaProbe {
    pub format: Half,
    /// A stored [k][m] (m contiguous) rather than [m][k].
    pub a_mn_major: bool,
    /// B stored [k][n] (n contiguous) rather than [n][k].
    pub b_mn_major: bool,
    /// The k16 slice of the 64-deep tiles, 0..=3.
    pub step: u32,
}

/// One `wgmma.mma_async.m64n128k16.f32` by one warpgroup on `device`, its operands read from
/// `image` ([`WGMMA_PROBE_A_BYTES`] of A's tile then [`WGMMA_PROBE_B_BYTES`] of B's, the bytes
/// shared memory holds, swizzle included) through descriptors built as kernels/gemm_wgmma.cu
/// builds them. Returns each thread's accumulators ([`WGMMA_PROBE_THREADS`] x
/// [`WGMMA_PROBE_ACCUMULATORS`], thread-major), or `None` where the kernel cannot run (a GPU
/// without compute capability 9.0).
pub fn wgmma_m64n128k16(
    device: Device,
    probe: WgmmaProbe,
    image: &[u8],
) -> Result<Option<Vec<f32>>> {
    if image.len() != WGMMA_PROBE_A_BYTES + WGMMA_PROBE_B_BYTES {
        return Err(invalid(
            "wgmma probe image",
            format!(
                "{} bytes; the tiles take {}",
                image.len(),
                WGMMA_PROBE_A_BYTES + WGMMA_PROBE_B_BYTES
            ),
        ));
    }
    if probe.step > 3 {
        return Err(invalid(
            "wgmma probe step",
            format!(
                "{} is not a k16 slice of a 64-deep tile (0..=3)",
                probe.step
            ),
        ));
    }
    let g = open(device)?;
    if !g.has_kernel(kernels::LAYOUT_PROBE_WGMMA.name()) {
        return Ok(None);
    }
    let input = uploaded(&g, image)?;
    let count = WGMMA_PROBE_THREADS * WGMMA_PROBE_ACCUMULATORS;
    let output = g.alloc(count * 4)?;
    let params = WgmmaProbeParams {
        image: input.address(),
        d: output.address(),
        bf16: probe.format.bf16(),
        a_mn_major: i32::from(probe.a_mn_major),
        b_mn_major: i32::from(probe.b_mn_major),
        step: probe.step as i32,
    };
    let cfg = LaunchConfig {
        grid: (1, 1, 1),
        block: (WGMMA_PROBE_THREADS as u32, 1, 1),
        // The tiles, plus slack to align them to 1024 bytes.
        shared_bytes: (WGMMA_PROBE_A_BYTES + WGMMA_PROBE_B_BYTES + 1024) as u32,
    };
    launch(&g, kernels::LAYOUT_PROBE_WGMMA, cfg, &params)?;
    let mut d = vec![0f32; count];
    g.download(&output, &mut d)?;
    Ok(Some(d))
}
