//! The process-wide kernel-choice switches (`kiln::cuda::set_*_gemm`, `set_wgmma_*`) a row sets,
//! and the guard that restores their previous values when the row ends, also on failure or panic.

use crate::core::device::Device;
use crate::core::error::Result;
use crate::core::shape::GemmSpec;
use crate::cuda;
use crate::cuda::gemm::{flat_tile_rows, uses_big_tiles};
use crate::cuda::gemm_wgmma::{wgmma_kernel, WgmmaKernel};

/// Every kernel-choice switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KernelChoice {
    /// [`cuda::set_large_tile_gemm`]: 128x128 tiles for large f32 products.
    pub large_tiles: bool,
    /// [`cuda::set_flat_tile_gemm`]: flat tiles for products with at most 32 rows.
    pub flat_tiles: bool,
    /// [`cuda::set_wgmma_gemm`]: the Hopper kernels for 16-bit products.
    pub wgmma: bool,
    /// [`cuda::set_wgmma_tma`]: TMA loads for single wgmma products.
    pub wgmma_tma: bool,
    /// [`cuda::set_wgmma_wide_tiles`]: 128x256 tiles for wide TMA products.
    pub wgmma_wide: bool,
}

impl KernelChoice {
    /// The library's defaults: 64x64 f32 tiles, square tiles for few rows, mma.sync for 16 bits
    /// (and, once wgmma is chosen, TMA with 128x128 tiles). Every row starts from these, so a
    /// switch the caller left on does not send a row to another kernel.
    pub const DEFAULT: KernelChoice = KernelChoice {
        large_tiles: false,
        flat_tiles: false,
        wgmma: false,
        wgmma_tma: true,
        wgmma_wide: false,
    };

    /// The switches now. The launchers have setters only, so each is read back through the
    /// choice it makes (on the emulated device, which has every kernel); reading TMA needs wgmma
    /// on, and reading wide tiles TMA too, so those are switched on for the reading and put back
    /// at once (the caller holds the selftest's lock).
    pub fn current() -> Result<KernelChoice> {
        let large_tiles = uses_big_tiles(&GemmSpec::new(128, 128, 8));
        let flat_tiles = flat_tile_rows(&GemmSpec::new(1, 1, 1)).is_some();
        let emulated = cuda::gpu(Device::CudaEmulated)?;
        // A single product with 8-element-aligned operands wider than one 128 tile: TMA when that
        // loader is on, wide tiles when those are.
        let probe = || wgmma_kernel(&emulated, &GemmSpec::new(8, 256, 8), 0, 0, true);
        let wgmma = probe().is_some();
        cuda::set_wgmma_gemm(true);
        let wgmma_tma = matches!(probe(), Some(WgmmaKernel::Tma { .. }));
        cuda::set_wgmma_tma(true);
        let wgmma_wide = matches!(probe(), Some(WgmmaKernel::Tma { wide: true, .. }));
        cuda::set_wgmma_tma(wgmma_tma);
        cuda::set_wgmma_gemm(wgmma);
        Ok(KernelChoice {
            large_tiles,
            flat_tiles,
            wgmma,
            wgmma_tma,
            wgmma_wide,
        })
    }

    fn apply(self) {
        cuda::set_large_tile_gemm(self.large_tiles);
        cuda::set_flat_tile_gemm(self.flat_tiles);
        cuda::set_wgmma_gemm(self.wgmma);
        cuda::set_wgmma_tma(self.wgmma_tma);
        cuda::set_wgmma_wide_tiles(self.wgmma_wide);
    }
}

/// Sets a row's [`KernelChoice`]; dropping it (at the end of the row, or while unwinding) puts
/// back the switches as they were before.
pub(super) struct ChoiceGuard {
    previous: KernelChoice,
}

impl ChoiceGuard {
    pub fn set(choice: KernelChoice) -> Result<ChoiceGuard> {
        let previous = KernelChoice::current()?;
        choice.apply();
        Ok(ChoiceGuard { previous })
    }
}

impl Drop for ChoiceGuard {
    fn drop(&mut self) {
        self.previous.apply();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the switches back after setting each combination, and restores them on drop.
    #[test]
    fn the_guard_reads_back_and_restores_every_switch() {
        let _lock = super::super::lock();
        let before = KernelChoice::current().unwrap();
        for bits in 0..32u8 {
            let choice = KernelChoice {
                large_tiles: bits & 1 != 0,
                flat_tiles: bits & 2 != 0,
                wgmma: bits & 4 != 0,
                wgmma_tma: bits & 8 != 0,
                wgmma_wide: bits & 16 != 0,
            };
            let guard = ChoiceGuard::set(choice).unwrap();
            assert_eq!(KernelChoice::current().unwrap(), choice);
            {
                let _inner = ChoiceGuard::set(KernelChoice::DEFAULT).unwrap();
                assert_eq!(KernelChoice::current().unwrap(), KernelChoice::DEFAULT);
            }
            assert_eq!(KernelChoice::current().unwrap(), choice);
            drop(guard);
            assert_eq!(KernelChoice::current().unwrap(), before);
        }
    }
}
