//! Builds the CUDA kernels twice:
//! 1. with nvcc to PTX for `compute_80` (Ampere and newer through the driver's JIT), embedded in the
//!    library with `include_str!`; skipped with one warning when no nvcc is found. A file whose
//!    first line is `// kiln-ptx-arch: ARCH` is compiled for ARCH instead (gemm_wgmma.cu:
//!    `compute_90a`, whose Hopper-only instructions load on compute capability 9.0 alone);
//! 2. with the host C++ compiler, under kernels/emulation.h, so the same kernels run on the CPU.
//!
//! It also generates the table of kernels (name, module, emulated entry point) from the
//! `KILN_EMULATE(...)` registrations, and fails if a `__global__` kernel has none.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PTX_ARCH: &str = "compute_80";

struct KernelFile {
    stem: String,
    path: PathBuf,
    /// The PTX target: PTX_ARCH, or the file's `// kiln-ptx-arch:` line.
    arch: String,
    kernels: Vec<String>,
}

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernel_dir = root.join("kernels");
    println!("cargo:rerun-if-changed={}", kernel_dir.display());
    for var in [
        "KILN_NVCC",
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "PATH",
        "KILN_REQUIRE_NVCC",
        "KILN_CACHE_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let files = kernel_files(&kernel_dir);
    build_emulation(&kernel_dir, &files);

    let nvcc = if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        find_nvcc()
    } else {
        None
    };
    let ptx = match &nvcc {
        Some(nvcc) => files
            .iter()
            .map(|f| compile_ptx(nvcc, &kernel_dir, f, &out))
            .collect(),
        None => {
            if env::var_os("KILN_REQUIRE_NVCC").is_some_and(|v| v != "0") {
                panic!("KILN_REQUIRE_NVCC is set but no nvcc was found: run scripts/setup-cuda.sh");
            }
            if env::var_os("CARGO_FEATURE_CUDA").is_some() {
                println!(
                    "cargo:warning=nvcc not found: kiln is built without CUDA kernels (CPU and emulation only); run `make setup-cuda` and rebuild"
                );
            }
            Vec::new()
        }
    };
    let generated = generated_source(&files, &ptx, nvcc.is_some());
    fs::write(out.join("kernels.rs"), generated).expect("write generated kernel table");
}

/// Every kernels/*.cu with the kernels it registers for emulation.
fn kernel_files(dir: &Path) -> Vec<KernelFile> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("kernels/ exists")
        .map(|e| e.expect("readable kernels/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            println!("cargo:rerun-if-changed={}", path.display());
            let source = fs::read_to_string(&path).expect("readable .cu file");
            let stem = path
                .file_stem()
                .expect("file stem")
                .to_string_lossy()
                .into_owned();
            let kernels = registered_kernels(&source);
            for kernel in global_kernels(&source) {
                if !kernels.contains(&kernel) {
                    panic!(
                        "{}: kernel {kernel} has no KILN_EMULATE({kernel}, Params) registration",
                        path.display()
                    );
                }
            }
            let arch = source
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("// kiln-ptx-arch:"))
                .map_or(PTX_ARCH, str::trim)
                .to_string();
            KernelFile {
                stem,
                path,
                arch,
                kernels,
            }
        })
        .collect()
}

/// Names in `KILN_EMULATE(name, ...)` and `KILN_EMULATE_SYNC(name, ...)` lines, and the three
/// kernels `op_f32`, `op_bf16`, `op_f16` of each `KILN_STORAGE_KERNELS(op, ...)` line (and its
/// `_SYNC` form; the macro is in kernels/half.cuh).
fn registered_kernels(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in source.lines().map(str::trim_start) {
        let first_argument = |rest: &str| rest.split(',').next().map(|n| n.trim().to_string());
        if let Some(rest) = line
            .strip_prefix("KILN_STORAGE_KERNELS_SYNC(")
            .or_else(|| line.strip_prefix("KILN_STORAGE_KERNELS("))
        {
            if let Some(op) = first_argument(rest) {
                names.extend(["f32", "bf16", "f16"].map(|s| format!("{op}_{s}")));
            }
        } else if let Some(rest) = line
            .strip_prefix("KILN_EMULATE_SYNC(")
            .or_else(|| line.strip_prefix("KILN_EMULATE("))
        {
            names.extend(first_argument(rest));
        }
    }
    names
}

/// Names of `__global__` functions: the identifier before the first `(` after `void`, skipping
/// `__launch_bounds__(...)`.
fn global_kernels(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("__global__ void") {
        rest = &rest[at + "__global__ void".len()..];
        let mut text = rest.trim_start();
        if let Some(after) = text.strip_prefix("__launch_bounds__(") {
            text = after
                .split_once(')')
                .map(|(_, t)| t)
                .unwrap_or("")
                .trim_start();
        }
        let name: String = text
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

fn build_emulation(dir: &Path, files: &[KernelFile]) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .define("KILN_EMULATION", None)
        .include(dir)
        .flag("-x")
        .flag("c++")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-unused-function")
        // `#pragma unroll` is for nvcc.
        .flag_if_supported("-Wno-unknown-pragmas")
        // A note that GCC 4.6 changed how 128-byte-aligned arguments (the TMA GEMM's parameter
        // struct) are passed: both sides here are built by the same compiler.
        .flag_if_supported("-Wno-psabi")
        // Kernels reinterpret shared and global memory as vectors (uint4, float4, 32-bit fragment
        // pairs), which CUDA allows and strict aliasing in host C++ would not.
        .flag("-fno-strict-aliasing")
        .warnings(true);
    for f in files {
        build.file(&f.path);
    }
    build.compile("kiln_emulation");
}

/// nvcc in the documented order: KILN_NVCC, NVCC, CUDA_HOME/CUDA_PATH, PATH, the set-up script's venv.
fn find_nvcc() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for var in ["KILN_NVCC", "NVCC"] {
        if let Some(v) = env::var_os(var) {
            candidates.push(PathBuf::from(v));
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = env::var_os(var) {
            candidates.push(Path::new(&v).join("bin").join("nvcc"));
        }
    }
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.extend(setup_script_nvcc());
    candidates.into_iter().find(|p| p.is_file())
}

/// Where scripts/setup-cuda.sh puts nvcc: <cache>/kiln/cuda-13.0/lib/python3.*/site-packages/nvidia/cu13/bin.
fn setup_script_nvcc() -> Vec<PathBuf> {
    let cache = env::var_os("KILN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            env::var_os("XDG_CACHE_HOME")
                .map(|d| Path::new(&d).join("kiln"))
                .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cache").join("kiln")))
        });
    let Some(lib) = cache.map(|c| c.join("cuda-13.0").join("lib")) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(&lib) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13/bin/nvcc"))
        .collect()
}

/// The PTX of one file, or `None` for a file with its own target (`compute_90a`) that this nvcc
/// does not know (before CUDA 12): its kernels are then left out of the GPU build, with a warning,
/// and products fall back to kernels every GPU has. Any other failure stops the build.
fn compile_ptx(nvcc: &Path, dir: &Path, file: &KernelFile, out: &Path) -> Option<PathBuf> {
    let ptx = out.join(format!("{}.ptx", file.stem));
    let output = Command::new(nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
        .arg(format!("-arch={}", file.arch))
        .arg("-I")
        .arg(dir)
        .arg(&file.path)
        .arg("-o")
        .arg(&ptx)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if file.arch != PTX_ARCH && stderr.contains("Unsupported gpu architecture") {
            println!(
                "cargo:warning={}: this nvcc cannot target {}; its kernels are left out (CUDA 12 or newer builds them)",
                file.path.display(),
                file.arch
            );
            return None;
        }
        panic!(
            "nvcc failed on {}:\n{}{stderr}",
            file.path.display(),
            String::from_utf8_lossy(&output.stdout),
        );
    }
    Some(gzipped(&ptx))
}

/// `path` compressed with gzip into `path.gz` (PTX shrinks about tenfold: every executable embeds
/// all of it, and the GPU bundle carries dozens of executables). The gzip header names the file
/// `kiln-<stem>.ptx`, which is how scripts/gpu-bundle.sh sees that an executable embeds kernels.
fn gzipped(path: &Path) -> PathBuf {
    use std::io::Write;
    let text = fs::read(path).expect("readable PTX");
    let gz = path.with_extension("ptx.gz");
    let file = fs::File::create(&gz).expect("writable OUT_DIR");
    let stem = path.file_stem().expect("PTX file name").to_string_lossy();
    let mut encoder = flate2::GzBuilder::new()
        .filename(format!("kiln-{stem}.ptx"))
        .write(file, flate2::Compression::best());
    encoder.write_all(&text).expect("write compressed PTX");
    encoder.finish().expect("finish compressed PTX");
    gz
}

fn generated_source(files: &[KernelFile], ptx: &[Option<PathBuf>], with_nvcc: bool) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "// Generated by build.rs from kernels/*.cu. Do not edit."
    )
    .unwrap();
    writeln!(s, "/// Whether nvcc compiled the kernels into this build.").unwrap();
    writeln!(s, "pub const BUILT_WITH_NVCC: bool = {with_nvcc};").unwrap();
    writeln!(s, "/// The PTX target the modules were compiled for.").unwrap();
    writeln!(s, "pub const PTX_ARCH: &str = {PTX_ARCH:?};").unwrap();
    writeln!(
        s,
        "/// PTX of each kernels/*.cu: (file stem, PTX target, gzipped PTX); empty without nvcc."
    )
    .unwrap();
    writeln!(s, "pub const PTX_MODULES: &[(&str, &str, &[u8])] = &[").unwrap();
    for (f, p) in files.iter().zip(ptx) {
        let Some(p) = p else { continue };
        writeln!(
            s,
            "    ({:?}, {:?}, include_bytes!({:?})),",
            f.stem,
            f.arch,
            p.display().to_string()
        )
        .unwrap();
    }
    writeln!(s, "];").unwrap();
    writeln!(s, "/// Every kernel: (name, module stem).").unwrap();
    writeln!(s, "pub const KERNELS: &[(&str, &str)] = &[").unwrap();
    for f in files {
        for k in &f.kernels {
            writeln!(s, "    ({k:?}, {:?}),", f.stem).unwrap();
        }
    }
    writeln!(s, "];").unwrap();
    writeln!(s, "extern \"C\" {{").unwrap();
    for k in files.iter().flat_map(|f| &f.kernels) {
        writeln!(
            s,
            "    fn kiln_emu_{k}(launch: *const EmuLaunch, params: *const core::ffi::c_void);"
        )
        .unwrap();
    }
    writeln!(s, "}}").unwrap();
    writeln!(s, "/// The emulated entry point of a kernel, by name.").unwrap();
    writeln!(
        s,
        "pub fn emulated_entry(name: &str) -> Option<EmuEntry> {{"
    )
    .unwrap();
    writeln!(s, "    match name {{").unwrap();
    for k in files.iter().flat_map(|f| &f.kernels) {
        writeln!(s, "        {k:?} => Some(kiln_emu_{k}),").unwrap();
    }
    writeln!(s, "        _ => None,\n    }}\n}}").unwrap();
    s
}
