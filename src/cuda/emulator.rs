//! Runs emulated kernels: the grid's blocks are split into chunks that rayon runs in parallel;
//! inside a chunk, kernels/emulation.h runs each block's threads (as fibers when they use barriers).

use rayon::prelude::*;

use super::generated::{emulated_entry, EmuLaunch};
use super::{KernelParams, LaunchConfig};
use crate::core::error::{Error, Result};

pub(crate) fn launch<P: KernelParams>(
    name: &'static str,
    cfg: LaunchConfig,
    params: &P,
) -> Result<()> {
    // SAFETY: `params` is the kernel's own parameter struct (the launcher's contract), borrowed for
    // the whole call.
    unsafe { launch_raw(name, cfg, params as *const P as *const core::ffi::c_void) }
}

/// [`launch`] with the parameter struct given by address (a launch recorded for a graph replay).
///
/// # Safety
/// `params` must point to kernel `name`'s parameter struct, aligned as that struct is (up to 128
/// bytes: the TMA GEMM's), alive for the call,
/// with every device address in it live and sized for the launch.
pub(crate) unsafe fn launch_raw(
    name: &'static str,
    cfg: LaunchConfig,
    params: *const core::ffi::c_void,
) -> Result<()> {
    let entry = emulated_entry(name).ok_or_else(|| Error::MissingKernel(name.to_string()))?;
    let (gx, gy, gz) = cfg.grid;
    let blocks = gx as u64 * gy as u64 * gz as u64;
    if blocks == 0 || cfg.block.0 * cfg.block.1 * cfg.block.2 == 0 {
        return Ok(());
    }
    let chunks = (rayon::current_num_threads() as u64 * 4).min(blocks);
    let per_chunk = blocks.div_ceil(chunks);
    let params_addr = params as usize;
    (0..chunks).into_par_iter().for_each(|c| {
        let begin = c * per_chunk;
        let end = (begin + per_chunk).min(blocks);
        if begin >= end {
            return;
        }
        let launch = EmuLaunch {
            grid: [gx, gy, gz],
            block: [cfg.block.0, cfg.block.1, cfg.block.2],
            block_begin: begin,
            block_end: end,
            shared_bytes: cfg.shared_bytes,
        };
        // SAFETY: `entry` was generated from the kernel's own KILN_EMULATE registration, so it reads
        // `params` as the same #[repr(C)] struct; every address in it is a live emulated block sized
        // for this launch by the launcher; `params` outlives this call (the launch is synchronous).
        unsafe { entry(&launch, params_addr as *const core::ffi::c_void) };
    });
    Ok(())
}
