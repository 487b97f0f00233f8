//! Which embedded image of a kernel module a GPU loads: machine code (SASS cubins built by nvcc
//! for sm_80 and sm_90, see build.rs) when one fits the device, otherwise the PTX, which the
//! driver JIT-compiles (tens of seconds for all modules, once per process unless the driver's
//! cache, `CUDA_CACHE_PATH`, keeps it).
//!
//! The rules, from the CUDA C++ Programming Guide's "Binary Compatibility" and "PTX
//! Compatibility": a cubin for sm_XY runs on compute capability X.Z for every Z >= Y (same major
//! version only); an architecture-specific cubin (sm_90a) and PTX (compute_90a) run on exactly
//! that capability; plain PTX for compute_XY is JIT-compiled for any capability >= X.Y.

use crate::core::error::{Error, Result};

/// `KILN_KERNEL_IMAGE=ptx` makes every module load from its PTX through the driver's JIT, even
/// where machine code fits (to test the JIT path, or to get the PTX's line numbers into
/// compute-sanitizer reports); unset or `sass`, machine code is preferred.
pub(crate) const KERNEL_IMAGE_VAR: &str = "KILN_KERNEL_IMAGE";

/// The image a module was loaded from, for `kiln info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadedImage {
    /// Machine code for this architecture (`sm_90`).
    Sass(&'static str),
    /// PTX for this target, compiled by the driver; `why` says why no machine code was used.
    Ptx { target: &'static str, why: String },
}

/// Whether machine code is wanted (`KILN_KERNEL_IMAGE`); an unknown value is an error naming it.
pub(crate) fn prefer_sass() -> Result<bool> {
    match std::env::var(KERNEL_IMAGE_VAR) {
        Err(_) => Ok(true),
        Ok(v) => match v.trim() {
            "" | "sass" => Ok(true),
            "ptx" => Ok(false),
            other => Err(Error::InvalidArgument {
                what: KERNEL_IMAGE_VAR,
                why: format!("{other:?}: expected sass or ptx"),
            }),
        },
    }
}

/// `(number, architecture-specific)` of `sm_90a`, `compute_80`, ...; `None` for anything else.
fn parse_arch(arch: &str, prefix: &str) -> Option<(i32, bool)> {
    let digits = arch.strip_prefix(prefix)?;
    let (number, specific) = match digits.strip_suffix('a') {
        Some(number) => (number, true),
        None => (digits, false),
    };
    Some((number.parse().ok()?, specific))
}

/// Whether PTX built for `arch` loads on a device of compute capability `(major, minor)`: an
/// architecture-specific target (`compute_90a`) only on exactly that capability, a plain one
/// (`compute_80`) on it and every later one.
pub(crate) fn ptx_loads_on(arch: &str, (major, minor): (i32, i32)) -> bool {
    let Some((number, specific)) = parse_arch(arch, "compute_") else {
        return false;
    };
    let device = major * 10 + minor;
    if specific {
        device == number
    } else {
        device >= number
    }
}

/// Whether a cubin for `arch` (`sm_80`, `sm_90a`) runs on compute capability `(major, minor)`.
pub(crate) fn sass_runs_on(arch: &str, (major, minor): (i32, i32)) -> bool {
    let Some((number, specific)) = parse_arch(arch, "sm_") else {
        return false;
    };
    let (arch_major, arch_minor) = (number / 10, number % 10);
    if specific {
        (arch_major, arch_minor) == (major, minor)
    } else {
        arch_major == major && arch_minor <= minor
    }
}

/// The best of `sass` for the device: the one that runs there with the highest minor version
/// (an exact match first), or `None`.
pub(crate) fn best_sass<'a, T>(
    sass: &'a [(&'static str, T)],
    capability: (i32, i32),
) -> Option<&'a (&'static str, T)> {
    sass.iter()
        .filter(|(arch, _)| sass_runs_on(arch, capability))
        .max_by_key(|(arch, _)| parse_arch(arch, "sm_"))
}

/// The bytes of an embedded image (build.rs gzips what it embeds).
pub(crate) fn unpacked(stem: &str, what: &str, gz: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Driver(format!("the embedded {what} of {stem} is corrupt: {e}")))?;
    Ok(bytes)
}

/// One line for `kiln info`: how many modules run machine code of each architecture, and which
/// were JIT-compiled and why.
pub(crate) fn summary(loaded: &[(&'static str, LoadedImage)]) -> String {
    let mut sass: Vec<(&str, usize)> = Vec::new();
    let mut jit: Vec<String> = Vec::new();
    for (stem, image) in loaded {
        match image {
            LoadedImage::Sass(arch) => match sass.iter_mut().find(|(a, _)| a == arch) {
                Some((_, n)) => *n += 1,
                None => sass.push((arch, 1)),
            },
            LoadedImage::Ptx { target, why } => jit.push(format!("{stem} ({target}: {why})")),
        }
    }
    let mut parts: Vec<String> = sass
        .iter()
        .map(|(arch, n)| format!("{arch} machine code for {n} module(s)"))
        .collect();
    if !jit.is_empty() {
        parts.push(format!("PTX JIT for {}", jit.join(", ")));
    }
    if parts.is_empty() {
        "no kernel modules".to_string()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::{best_sass, ptx_loads_on, sass_runs_on, summary, unpacked, LoadedImage};
    use crate::cuda::generated;

    #[test]
    fn architecture_specific_ptx_loads_only_on_its_own_capability() {
        assert!(ptx_loads_on("compute_80", (8, 0)));
        assert!(ptx_loads_on("compute_80", (9, 0)));
        assert!(ptx_loads_on("compute_80", (12, 0)));
        assert!(!ptx_loads_on("compute_80", (7, 5)));
        assert!(ptx_loads_on("compute_90a", (9, 0)));
        assert!(!ptx_loads_on("compute_90a", (8, 9)));
        assert!(!ptx_loads_on("compute_90a", (10, 0)));
        assert!(!ptx_loads_on("sm_90", (9, 0)));
    }

    /// The CUDA Programming Guide's binary compatibility: sm_80 code runs on 8.6 and 8.9, not on
    /// 9.0; sm_90 only on 9.x; sm_90a only on 9.0.
    #[test]
    fn machine_code_runs_within_its_major_version_only() {
        assert!(sass_runs_on("sm_80", (8, 0)));
        assert!(sass_runs_on("sm_80", (8, 6)));
        assert!(sass_runs_on("sm_80", (8, 9)));
        assert!(!sass_runs_on("sm_80", (9, 0)));
        assert!(!sass_runs_on("sm_80", (7, 5)));
        assert!(!sass_runs_on("sm_86", (8, 0)));
        assert!(sass_runs_on("sm_90", (9, 0)));
        assert!(!sass_runs_on("sm_90", (10, 0)));
        assert!(sass_runs_on("sm_90a", (9, 0)));
        assert!(!sass_runs_on("sm_90a", (9, 1)));
        assert!(!sass_runs_on("compute_90", (9, 0)));
    }

    #[test]
    fn the_closest_machine_code_is_chosen_and_none_for_other_majors() {
        let sass = [("sm_80", 0), ("sm_86", 1), ("sm_90", 2)];
        assert_eq!(best_sass(&sass, (8, 0)).map(|s| s.1), Some(0));
        assert_eq!(best_sass(&sass, (8, 9)).map(|s| s.1), Some(1));
        assert_eq!(best_sass(&sass, (9, 0)).map(|s| s.1), Some(2));
        assert_eq!(best_sass(&sass, (12, 0)), None);
        let hopper = [("sm_90", 0), ("sm_90a", 1)];
        assert_eq!(best_sass(&hopper, (9, 0)).map(|s| s.1), Some(1));
    }

    #[test]
    fn the_summary_counts_machine_code_and_names_jit_modules() {
        let loaded = [
            ("gemm", LoadedImage::Sass("sm_90")),
            ("pool", LoadedImage::Sass("sm_90")),
            ("gemm_wgmma", LoadedImage::Sass("sm_90a")),
            (
                "loss",
                LoadedImage::Ptx {
                    target: "compute_80",
                    why: "KILN_KERNEL_IMAGE=ptx".into(),
                },
            ),
        ];
        assert_eq!(
            summary(&loaded),
            "sm_90 machine code for 2 module(s); sm_90a machine code for 1 module(s); \
             PTX JIT for loss (compute_80: KILN_KERNEL_IMAGE=ptx)"
        );
    }

    /// Every module embeds PTX declaring each of its kernels and, for each SASS architecture, an
    /// ELF cubin for that architecture whose symbol table names each kernel.
    #[test]
    fn every_embedded_module_unpacks_to_ptx_and_cubins_declaring_its_kernels() {
        assert_eq!(generated::MODULES.is_empty(), !generated::BUILT_WITH_NVCC);
        for (stem, arch, ptx_gz, sass) in generated::MODULES {
            let ptx = String::from_utf8(unpacked(stem, "PTX", ptx_gz).unwrap()).unwrap();
            assert!(ptx.contains(".version"), "{stem}: not PTX");
            assert!(ptx.contains(&format!(".target {}", arch.replace("compute_", "sm_"))));
            let kernels: Vec<&str> = generated::KERNELS
                .iter()
                .filter(|(_, owner)| owner == stem)
                .map(|(name, _)| *name)
                .collect();
            for name in &kernels {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{stem}: no {name}"
                );
            }
            for (sass_arch, gz) in sass.iter() {
                let cubin = unpacked(stem, "cubin", gz).unwrap();
                assert_eq!(
                    &cubin[..4],
                    b"\x7fELF",
                    "{stem} {sass_arch}: not an ELF cubin"
                );
                for name in &kernels {
                    let symbol = format!("\0{name}\0");
                    assert!(
                        cubin.windows(symbol.len()).any(|w| w == symbol.as_bytes()),
                        "{stem} {sass_arch}: no symbol {name}"
                    );
                }
            }
        }
    }
}
