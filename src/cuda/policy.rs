//! Which kernels a GPU context runs: a [`KernelPolicy`] value held by each opened device (its
//! default, for long-lived choices such as `kiln train --kernels`: [`set_kernel_policy`]) and
//! overridden for the length of a closure by [`with_kernel_policy`] (tests, the selftest's rows,
//! the benchmark's comparisons). Every launcher reads the policy of the context it launches on
//! ([`crate::cuda::Gpu::kernel_policy`]); the GEMM's choice from it is one pure function,
//! `select_gemm` (src/cuda/gemm_select.rs).
//!
//! The fields, and what they replace (the process-wide switches `set_large_tile_gemm`,
//! `set_flat_tile_gemm`, `set_wgmma_gemm`, `set_wgmma_tma`, `set_wgmma_wide_tiles` and
//! `kiln::backend::set_conv_chunk_bytes`, removed): see [`KernelPolicy`]. On the command line the
//! same policy is a comma list ([`KernelPolicy::parse`]): `default`, or any of `large-tiles`,
//! `flat-tiles`, `wgmma`, `wgmma-cp-async`, `wgmma-wide`, `conv-chunk-bytes=N`.
//!
//! Why the scoped override is thread-local (keyed by device) rather than a write to the
//! context: one context is shared by every thread that uses its device (all the tests of one
//! binary run on the same emulated device), so a scope that wrote the context would leak into
//! the other threads' work and need a lock around every test again. A scope on this thread
//! changes only this thread's launches on that one device; other devices and other threads keep
//! the context's default. Work a scope hands to another thread does not carry the override:
//! launches happen on the thread that calls the op, so that only matters for code that spawns its
//! own threads, which should then set the context's default instead.

use std::cell::RefCell;
use std::fmt;

use crate::core::device::Device;
use crate::core::error::{invalid, Result};

/// Every kernel choice kiln makes at run time, for one GPU context. `Default` is the library's
/// choice: 64x64 f32 tiles, square tiles for products with few rows, `mma.sync` for 16-bit
/// products (and, once wgmma is chosen, TMA loads with 128x128 tiles), 16 MiB column chunks.
/// Each opt-in becomes a default only once a GPU benchmark shows it winning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelPolicy {
    /// Large f32 products (m, n ≥ 128, k ≥ 8) take `gemm_128x128_f32` instead of `gemm_f32`
    /// (was `set_large_tile_gemm`).
    pub large_tiles: bool,
    /// Products with at most 32 rows (not batch sums) take the flat 16x256 / 32x128 (f32) or
    /// 16x256 / 32x256 (tensor-core) tiles instead of square ones, which would be mostly padding
    /// (was `set_flat_tile_gemm`).
    pub flat_tiles: bool,
    /// 16-bit products take the Hopper warpgroup-MMA kernels where the context has them
    /// (compute capability 9.0, or emulation) and the operands allow; else `mma.sync` (gemm_tc)
    /// (was `set_wgmma_gemm`).
    pub wgmma: bool,
    /// Single wgmma products load their panels with TMA (default); `false`: with cp.async, as
    /// batched ones do (was `set_wgmma_tma`).
    pub wgmma_tma: bool,
    /// Single wgmma products wider than 128 columns take 128x256 TMA tiles (was
    /// `set_wgmma_wide_tiles`).
    pub wgmma_wide: bool,
    /// The most bytes one chunk of a convolution's im2col columns may take (at least one image's
    /// columns are always processed together); 16 MiB stays in a large GPU's L2 (was
    /// `kiln::backend::set_conv_chunk_bytes`).
    pub conv_chunk_bytes: usize,
}

impl KernelPolicy {
    /// The library's defaults (see the type).
    pub const DEFAULT: KernelPolicy = KernelPolicy {
        large_tiles: false,
        flat_tiles: false,
        wgmma: false,
        wgmma_tma: true,
        wgmma_wide: false,
        conv_chunk_bytes: DEFAULT_CONV_CHUNK_BYTES,
    };

    /// The policy a `--kernels` value names: `default`, or a comma list of choices applied to the
    /// defaults in order (`large-tiles`, `flat-tiles`, `wgmma`, `wgmma-cp-async` (wgmma with
    /// cp.async loads), `wgmma-wide` (wgmma with 128x256 TMA tiles), `conv-chunk-bytes=N`).
    pub fn parse(list: &str) -> Result<KernelPolicy> {
        let mut policy = KernelPolicy::DEFAULT;
        for name in list.split(',').map(str::trim) {
            policy = policy.with_choice(name).ok_or_else(|| {
                invalid(
                    "--kernels",
                    format!("unknown kernel choice `{name}` in `{list}`; {EXPECTED}"),
                )
            })?;
        }
        Ok(policy)
    }

    fn with_choice(mut self, name: &str) -> Option<KernelPolicy> {
        match name {
            "default" => self = KernelPolicy::DEFAULT,
            "large-tiles" => self.large_tiles = true,
            "flat-tiles" => self.flat_tiles = true,
            "wgmma" => self.wgmma = true,
            "wgmma-cp-async" => (self.wgmma, self.wgmma_tma) = (true, false),
            "wgmma-wide" => (self.wgmma, self.wgmma_wide) = (true, true),
            _ => {
                let bytes = name.strip_prefix("conv-chunk-bytes=")?;
                self.conv_chunk_bytes = bytes.parse().ok()?;
            }
        }
        Some(self)
    }
}

const DEFAULT_CONV_CHUNK_BYTES: usize = 16 << 20;

const EXPECTED: &str = "expected `default` or a comma list of large-tiles, flat-tiles, wgmma, \
                        wgmma-cp-async, wgmma-wide, conv-chunk-bytes=N";

impl Default for KernelPolicy {
    fn default() -> Self {
        KernelPolicy::DEFAULT
    }
}

/// The `--kernels` list that [`KernelPolicy::parse`] reads back as this policy (`default` for
/// the defaults). The wgmma loader fields are printed only with wgmma on, where they choose a
/// kernel.
impl fmt::Display for KernelPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = KernelPolicy::DEFAULT;
        let mut names = Vec::new();
        if self.large_tiles {
            names.push("large-tiles".to_string());
        }
        if self.flat_tiles {
            names.push("flat-tiles".to_string());
        }
        match (self.wgmma, self.wgmma_tma, self.wgmma_wide) {
            (false, ..) => {}
            (true, false, _) => names.push("wgmma-cp-async".to_string()),
            (true, true, false) => names.push("wgmma".to_string()),
            (true, true, true) => names.push("wgmma-wide".to_string()),
        }
        if self.conv_chunk_bytes != d.conv_chunk_bytes {
            names.push(format!("conv-chunk-bytes={}", self.conv_chunk_bytes));
        }
        match names.is_empty() {
            true => f.write_str("default"),
            false => f.write_str(&names.join(",")),
        }
    }
}

thread_local! {
    /// This thread's open scopes, innermost last: (device, policy).
    static SCOPES: RefCell<Vec<(Device, KernelPolicy)>> = const { RefCell::new(Vec::new()) };
}

/// The innermost [`with_kernel_policy`] scope of this thread for `device`, if any.
pub(crate) fn scoped_policy(device: Device) -> Option<KernelPolicy> {
    SCOPES.with(|s| {
        s.borrow()
            .iter()
            .rev()
            .find(|(d, _)| *d == device)
            .map(|(_, p)| *p)
    })
}

/// Closes a scope when dropped: on return, on error and while unwinding from a panic.
struct ScopeGuard {
    depth: usize,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPES.with(|s| s.borrow_mut().truncate(self.depth));
    }
}

/// Runs `f` with `policy` for every launch this thread makes on `device`, then restores what
/// was in force before (also when `f` panics). Scopes nest; the innermost wins. Other threads and
/// other devices are not affected (see the module documentation for why). On the CPU it changes
/// nothing: the CPU runs no kernels.
pub fn with_kernel_policy<R>(device: Device, policy: KernelPolicy, f: impl FnOnce() -> R) -> R {
    let depth = SCOPES.with(|s| {
        let mut scopes = s.borrow_mut();
        scopes.push((device, policy));
        scopes.len() - 1
    });
    let _guard = ScopeGuard { depth };
    f()
}

/// Makes `policy` the default of `device`'s context, for every thread (outside a
/// [`with_kernel_policy`] scope): a long-lived choice such as a command-line flag. An error for
/// the CPU, which has no kernels to choose, or when the device cannot be opened.
pub fn set_kernel_policy(device: Device, policy: KernelPolicy) -> Result<()> {
    super::gpu(device)?.set_default_policy(policy);
    Ok(())
}

/// The policy launches on `device` from this thread use now: the innermost scope's, else the
/// context's default. An error for the CPU or a device that cannot be opened.
pub fn kernel_policy(device: Device) -> Result<KernelPolicy> {
    Ok(super::gpu(device)?.kernel_policy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_parses_and_prints_back() {
        let d = KernelPolicy::DEFAULT;
        assert_eq!(KernelPolicy::default(), d);
        assert_eq!(KernelPolicy::parse("default").unwrap(), d);
        let cases = [
            (
                "large-tiles",
                KernelPolicy {
                    large_tiles: true,
                    ..d
                },
            ),
            (
                "flat-tiles",
                KernelPolicy {
                    flat_tiles: true,
                    ..d
                },
            ),
            ("wgmma", KernelPolicy { wgmma: true, ..d }),
            (
                "wgmma-cp-async",
                KernelPolicy {
                    wgmma: true,
                    wgmma_tma: false,
                    ..d
                },
            ),
            (
                "wgmma-wide",
                KernelPolicy {
                    wgmma: true,
                    wgmma_wide: true,
                    ..d
                },
            ),
            (
                "conv-chunk-bytes=4096",
                KernelPolicy {
                    conv_chunk_bytes: 4096,
                    ..d
                },
            ),
        ];
        for (list, policy) in cases {
            assert_eq!(KernelPolicy::parse(list).unwrap(), policy, "{list}");
            assert_eq!(policy.to_string(), list);
        }
        let all = KernelPolicy::parse("large-tiles, flat-tiles,wgmma-wide").unwrap();
        assert_eq!(all.to_string(), "large-tiles,flat-tiles,wgmma-wide");
        assert_eq!(KernelPolicy::parse(&all.to_string()).unwrap(), all);
        assert_eq!(d.to_string(), "default");
        // `default` in a list starts again from the defaults.
        assert_eq!(KernelPolicy::parse("wgmma,default").unwrap(), d);
    }

    #[test]
    fn a_bad_choice_is_an_error_naming_the_flag_and_the_value() {
        for bad in [
            "fast",
            "",
            "large-tiles,,wgmma",
            "conv-chunk-bytes=lots",
            "Wgmma",
        ] {
            let e = KernelPolicy::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--kernels"), "{e}");
            assert!(e.contains("unknown kernel choice"), "{e}");
            assert!(e.contains("large-tiles, flat-tiles"), "{e}");
        }
        let e = KernelPolicy::parse("large-tiles,fast")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`fast`"), "{e}");
    }

    #[test]
    fn scopes_nest_restore_and_stay_on_their_device_and_thread() {
        let (emu, gpu) = (Device::CudaEmulated, Device::Cuda(7));
        let large = KernelPolicy {
            large_tiles: true,
            ..KernelPolicy::DEFAULT
        };
        let flat = KernelPolicy {
            flat_tiles: true,
            ..KernelPolicy::DEFAULT
        };
        assert_eq!(scoped_policy(emu), None);
        with_kernel_policy(emu, large, || {
            assert_eq!(scoped_policy(emu), Some(large));
            assert_eq!(scoped_policy(gpu), None, "another device");
            with_kernel_policy(gpu, flat, || {
                assert_eq!(scoped_policy(emu), Some(large));
                assert_eq!(scoped_policy(gpu), Some(flat));
            });
            with_kernel_policy(emu, flat, || assert_eq!(scoped_policy(emu), Some(flat)));
            assert_eq!(scoped_policy(emu), Some(large));
            let other = std::thread::spawn(move || scoped_policy(emu))
                .join()
                .unwrap();
            assert_eq!(other, None, "another thread");
        });
        assert_eq!(scoped_policy(emu), None);
    }

    #[test]
    fn a_scope_is_restored_after_an_error_and_a_panic() {
        let emu = Device::CudaEmulated;
        let large = KernelPolicy {
            large_tiles: true,
            ..KernelPolicy::DEFAULT
        };
        let failed: Result<()> = with_kernel_policy(emu, large, || Err(invalid("probe", "no")));
        assert!(failed.is_err());
        assert_eq!(scoped_policy(emu), None);
        let panicked = std::panic::catch_unwind(|| {
            with_kernel_policy(emu, large, || panic!("inside a scope"));
        });
        assert!(panicked.is_err());
        assert_eq!(scoped_policy(emu), None);
    }
}
