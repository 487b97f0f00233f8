//! Builds the CUDA kernels twice:
//! 1. with nvcc, for each kernels/*.cu: PTX for `compute_80` (Ampere and newer through the
//!    driver's JIT) and SASS cubins for the GPUs we ship machine code for (`sm_80`, which Ampere and
//!    Ada run, and `sm_90` for Hopper: a process then loads machine code instead of spending tens
//!    of seconds in the JIT), all gzipped and embedded in the library; skipped with one warning
//!    when no nvcc is found. A file whose first line is `// kiln-ptx-arch: ARCH` is compiled for
//!    ARCH instead (gemm_wgmma.cu: `compute_90a` and `sm_90a`, whose Hopper-only instructions load
//!    on compute capability 9.0 alone). `KILN_SASS` overrides the SASS targets (`sm_90`, or `none`
//!    for PTX alone, which builds faster);
//! 2. with the host C++ compiler, under kernels/emulation.h, so the same kernels run on the CPU.
//!
//! It also generates the table of kernels (name, module, emulated entry point) from the
//! `KILN_EMULATE(...)` registrations, and fails if a `__global__` kernel has none; and, from the
//! same registrations, one typed handle per kernel (`kernel_handles.rs`: `RELU_FWD_F32:
//! Kernel<crate::cuda::activation::ReluFwdParams>`), so a launch cannot pair a kernel with another
//! kernel's parameter struct. The handle's Rust type is the registration's C++ struct (template
//! arguments dropped) in `crate::cuda::<file stem>`, unless a `// kiln-mirror: [module::]Type`
//! line right above the C++ struct (and its `template` line) names the Rust mirror.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PTX_ARCH: &str = "compute_80";
/// SASS built for files without their own target: sm_80 runs on every 8.x GPU (Ampere, Ada), sm_90
/// on Hopper; other GPUs (Blackwell) JIT the PTX.
const SASS_ARCHS: &[&str] = &["sm_80", "sm_90"];

struct KernelFile {
    stem: String,
    path: PathBuf,
    /// The PTX target: PTX_ARCH, or the file's `// kiln-ptx-arch:` line.
    arch: String,
    kernels: Vec<String>,
    /// One per kernel, in the order of `kernels`.
    handles: Vec<Handle>,
    /// One per `KILN_STORAGE_KERNELS` registration.
    storage_groups: Vec<StorageGroup>,
}

/// Where a kernel is registered and which Rust struct mirrors its parameters.
struct Handle {
    kernel: String,
    /// The path of the Rust mirror below `crate::cuda` (`activation::ReluFwdParams`).
    rust_type: String,
    /// `kernels/activation.cu:145`.
    at: String,
    /// The registration line as written.
    registration: String,
    /// Where the Rust type was taken from, for the message of a missing type.
    how: String,
    /// The same, short: `C++ Relu16FwdParams, kiln-mirror line 74`.
    source: String,
}

/// The three kernels `op_f32`, `op_bf16`, `op_f16` of one `KILN_STORAGE_KERNELS(op, Params)`.
struct StorageGroup {
    op: String,
    rust_type: String,
    at: String,
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
        "KILN_SASS",
        "KILN_STATIC_LIBSTDCXX",
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
    let images = match &nvcc {
        Some(nvcc) => compile_all(nvcc, &kernel_dir, &files, &out),
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
    let generated = generated_source(&files, &images, nvcc.is_some());
    fs::write(out.join("kernels.rs"), generated).expect("write generated kernel table");
    fs::write(out.join("kernel_handles.rs"), handles_source(&files))
        .expect("write generated kernel handles");
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
            let shown = format!("kernels/{stem}.cu");
            let registrations = registrations(&source, &shown);
            let kernels: Vec<String> = registrations.iter().flat_map(|r| r.kernels()).collect();
            let (handles, storage_groups) = handles(&stem, &shown, &source, &registrations);
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
                handles,
                storage_groups,
            }
        })
        .collect()
}

/// One `KILN_EMULATE(name, Params)` or `KILN_EMULATE_SYNC(name, Params)` line, or one
/// `KILN_STORAGE_KERNELS(op, Params)` line (and its `_SYNC` form; the macro is in
/// kernels/half.cuh), which registers the three kernels `op_f32`, `op_bf16`, `op_f16`.
struct Registration {
    /// The kernel's name, or the storage op's.
    name: String,
    storage: bool,
    /// The C++ parameter struct without template arguments (`Relu16FwdParams`).
    params: String,
    /// 1-based.
    line: usize,
    text: String,
}

impl Registration {
    fn kernels(&self) -> Vec<String> {
        if self.storage {
            ["f32", "bf16", "f16"]
                .iter()
                .map(|s| format!("{}_{s}", self.name))
                .collect()
        } else {
            vec![self.name.clone()]
        }
    }
}

/// Every registration in `source` (shown as `shown` in messages), in order.
fn registrations(source: &str, shown: &str) -> Vec<Registration> {
    let mut found = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let line = line.trim_start();
        let (storage, rest) = if let Some(rest) = line
            .strip_prefix("KILN_STORAGE_KERNELS_SYNC(")
            .or_else(|| line.strip_prefix("KILN_STORAGE_KERNELS("))
        {
            (true, rest)
        } else if let Some(rest) = line
            .strip_prefix("KILN_EMULATE_SYNC(")
            .or_else(|| line.strip_prefix("KILN_EMULATE("))
        {
            (false, rest)
        } else {
            continue;
        };
        let at = format!("{shown}:{}", i + 1);
        let (name, params) = rest.split_once(',').unwrap_or_else(|| {
            panic!("{at}: `{line}` needs two arguments: the kernel and its parameter struct")
        });
        let params = params.rsplit_once(')').map_or(params, |(p, _)| p);
        // `Relu16FwdParams<kiln_bf16>` is mirrored by one Rust struct for every instantiation.
        let params = params.split('<').next().unwrap_or("").trim().to_string();
        let name = name.trim().to_string();
        if !is_identifier(&name) || !is_identifier(&params) {
            panic!("{at}: cannot read the kernel and parameter struct of `{line}`");
        }
        found.push(Registration {
            name,
            storage,
            params,
            line: i + 1,
            text: line.trim_end().to_string(),
        });
    }
    found
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `// kiln-mirror: [module::]Type` annotations of `source`: C++ struct -> (Rust path below
/// `crate::cuda`, where the annotation is). An annotation stands right above its struct, with
/// only comment lines and a `template <...>` line between.
fn mirror_annotations(stem: &str, shown: &str, source: &str) -> Vec<(String, String, String)> {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    let mut found: Vec<(String, String, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(target) = line.strip_prefix("// kiln-mirror:") else {
            continue;
        };
        let at = format!("{shown}:{}", i + 1);
        let target = target.trim();
        let parts: Vec<&str> = target.split("::").collect();
        if parts.len() > 2 || !parts.iter().all(|p| is_identifier(p)) {
            panic!("{at}: `// kiln-mirror: {target}` should name a Rust type as `Type` or `module::Type` (a module of src/cuda/)");
        }
        let path = if parts.len() == 1 {
            format!("{stem}::{target}")
        } else {
            target.to_string()
        };
        let cpp = lines[i + 1..]
            .iter()
            .find(|l| !l.starts_with("//") && !l.starts_with("template"))
            .and_then(|l| l.strip_prefix("struct "))
            .map(|rest| {
                // `struct alignas(16) Name {` and `struct __align__(128) Name {`.
                let rest = match rest.split_once(')') {
                    Some((attr, after)) if attr.contains('(') => after,
                    _ => rest,
                };
                rest.trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| {
                panic!("{at}: `// kiln-mirror: {target}` must stand right above the C++ struct it names a mirror for")
            });
        if found.iter().any(|(c, _, _)| *c == cpp) {
            panic!("{at}: a second `// kiln-mirror:` line for struct {cpp}");
        }
        found.push((cpp, path, at));
    }
    found
}

/// The typed handles of one file's registrations, and its storage-kernel groups.
fn handles(
    stem: &str,
    shown: &str,
    source: &str,
    registrations: &[Registration],
) -> (Vec<Handle>, Vec<StorageGroup>) {
    let mirrors = mirror_annotations(stem, shown, source);
    for (cpp, _, at) in &mirrors {
        if !registrations.iter().any(|r| r.params == *cpp) {
            panic!("{at}: `// kiln-mirror:` on struct {cpp}, which no KILN_EMULATE or KILN_STORAGE_KERNELS registration in {shown} takes");
        }
    }
    let mut handles = Vec::new();
    let mut groups = Vec::new();
    for r in registrations {
        let at = format!("{shown}:{}", r.line);
        let (rust_type, how, source) = match mirrors.iter().find(|(cpp, _, _)| *cpp == r.params)
        {
            Some((_, path, mirror_at)) => (
                path.clone(),
                format!(
                    "the `// kiln-mirror:` line at {mirror_at} names the Rust mirror of C++ `{}`",
                    r.params
                ),
                format!(
                    "C++ {}, kiln-mirror line {}",
                    r.params,
                    mirror_at.rsplit(':').next().unwrap_or("?")
                ),
            ),
            None => (
                format!("{stem}::{}", r.params),
                format!(
                    "the Rust mirror of C++ `{}` is the struct of the same name in src/cuda/{stem}.rs (a `// kiln-mirror: [module::]Type` line above the C++ struct names another)",
                    r.params
                ),
                format!("C++ {}, no kiln-mirror line", r.params),
            ),
        };
        if r.storage {
            groups.push(StorageGroup {
                op: r.name.clone(),
                rust_type: rust_type.clone(),
                at: at.clone(),
            });
        }
        for kernel in r.kernels() {
            handles.push(Handle {
                kernel,
                rust_type: rust_type.clone(),
                at: at.clone(),
                registration: r.text.clone(),
                how: how.clone(),
                source: source.clone(),
            });
        }
    }
    (handles, groups)
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
    let static_cxx = env::var_os("KILN_STATIC_LIBSTDCXX").is_some_and(|v| v != "0");
    if static_cxx {
        build.cpp_link_stdlib(None);
    }
    build.compile("kiln_emulation");
    if static_cxx {
        link_libstdcxx_statically(&build);
    }
}

/// Links libstdc++.a into every executable (`KILN_STATIC_LIBSTDCXX=1`, set by the GPU bundle), so
/// a host whose libstdc++ is older than this compiler's (GLIBCXX_3.4.29 is GCC 11's) runs them.
fn link_libstdcxx_statically(build: &cc::Build) {
    let compiler = build.get_compiler();
    let output = Command::new(compiler.path())
        .arg("-print-file-name=libstdc++.a")
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", compiler.path().display()));
    let archive = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !archive.is_absolute() || !archive.is_file() {
        panic!(
            "KILN_STATIC_LIBSTDCXX is set but {} has no libstdc++.a (Debian: apt-get install libstdc++-12-dev)",
            compiler.path().display()
        );
    }
    let dir = archive.parent().expect("an absolute path has a parent");
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static:-bundle=stdc++");
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

/// What nvcc made of one kernels/*.cu, gzipped: its PTX and its SASS cubins by architecture.
struct ModuleImages {
    ptx: PathBuf,
    sass: Vec<(String, PathBuf)>,
}

/// One nvcc invocation: the PTX of a file, or its cubin for one architecture.
#[derive(Clone)]
enum Job {
    Ptx,
    Sass(String),
}

/// The SASS architectures for `file`: its own target's (`compute_90a` -> `sm_90a`) or
/// [`SASS_ARCHS`], unless `KILN_SASS` says otherwise (`none`, or a comma-separated list).
fn sass_archs(file: &KernelFile) -> Vec<String> {
    let chosen = env::var("KILN_SASS").ok();
    let chosen = chosen.as_deref().map(str::trim).filter(|v| !v.is_empty());
    if chosen == Some("none") {
        return Vec::new();
    }
    if file.arch != PTX_ARCH {
        return vec![file.arch.replacen("compute_", "sm_", 1)];
    }
    match chosen {
        Some(list) => list.split(',').map(|a| a.trim().to_string()).collect(),
        None => SASS_ARCHS.iter().map(|a| a.to_string()).collect(),
    }
}

/// Every file's PTX and cubins, compiled by parallel nvcc processes (ptxas on the large GEMM files
/// takes tens of seconds each). A file is `None` when this nvcc cannot target its own architecture.
fn compile_all(
    nvcc: &Path,
    dir: &Path,
    files: &[KernelFile],
    out: &Path,
) -> Vec<Option<ModuleImages>> {
    let jobs: Vec<(usize, Job)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, f)| {
            std::iter::once((i, Job::Ptx))
                .chain(sass_archs(f).into_iter().map(move |a| (i, Job::Sass(a))))
        })
        .collect();
    let workers = env::var("NUM_JOBS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(2)
        .clamp(1, jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Job, Option<PathBuf>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((i, job)) = jobs.get(k) else { break };
                        done.push((*i, job.clone(), compile(nvcc, dir, &files[*i], job, out)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("an nvcc worker panicked"))
            .collect()
    });
    let mut images: Vec<Option<ModuleImages>> = (0..files.len())
        .map(|_| {
            Some(ModuleImages {
                ptx: PathBuf::new(),
                sass: Vec::new(),
            })
        })
        .collect();
    for (i, job, image) in results {
        let Some(image) = image else {
            images[i] = None;
            continue;
        };
        if let Some(m) = images[i].as_mut() {
            match job {
                Job::Ptx => m.ptx = image,
                Job::Sass(arch) => m.sass.push((arch, image)),
            }
        }
    }
    for m in images.iter_mut().flatten() {
        m.sass.sort();
    }
    images
}

/// One job's gzipped output, or `None` for a file with its own target (`compute_90a`) that this
/// nvcc does not know (before CUDA 12): its kernels are then left out of the GPU build, with a
/// warning, and products fall back to kernels every GPU has. Any other failure stops the build.
fn compile(nvcc: &Path, dir: &Path, file: &KernelFile, job: &Job, out: &Path) -> Option<PathBuf> {
    let mut command = Command::new(nvcc);
    command.args(["-O3", "-std=c++17"]);
    let image = match job {
        Job::Ptx => {
            // Line numbers for compute-sanitizer and profilers, when a driver JITs this PTX.
            command
                .args(["--ptx", "-lineinfo"])
                .arg(format!("-arch={}", file.arch));
            out.join(format!("{}.ptx", file.stem))
        }
        Job::Sass(arch) => {
            command.arg("--cubin").arg(format!("-arch={arch}"));
            out.join(format!("{}.{arch}.cubin", file.stem))
        }
    };
    let output = command
        .arg("-I")
        .arg(dir)
        .arg(&file.path)
        .arg("-o")
        .arg(&image)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if file.arch != PTX_ARCH && stderr.contains("Unsupported gpu architecture") {
            if matches!(job, Job::Ptx) {
                println!(
                    "cargo:warning={}: this nvcc cannot target {}; its kernels are left out (CUDA 12 or newer builds them)",
                    file.path.display(),
                    file.arch
                );
            }
            return None;
        }
        panic!(
            "nvcc failed on {}:\n{}{stderr}",
            file.path.display(),
            String::from_utf8_lossy(&output.stdout),
        );
    }
    Some(gzipped(&image))
}

/// `path` compressed with gzip into `path.gz` (PTX shrinks about tenfold, SASS about fivefold:
/// every executable embeds all of it, and the GPU bundle carries dozens of executables). The gzip
/// header names the file `kiln-<file name>` (`kiln-gemm.ptx`, `kiln-gemm.sm_90.cubin`), which is
/// how scripts/gpu-bundle.sh sees that an executable embeds kernels.
fn gzipped(path: &Path) -> PathBuf {
    use std::io::Write;
    let bytes = fs::read(path).expect("readable nvcc output");
    let name = path
        .file_name()
        .expect("nvcc output file name")
        .to_string_lossy();
    let gz = path.with_file_name(format!("{name}.gz"));
    let file = fs::File::create(&gz).expect("writable OUT_DIR");
    let mut encoder = flate2::GzBuilder::new()
        .filename(format!("kiln-{name}"))
        .write(file, flate2::Compression::best());
    encoder.write_all(&bytes).expect("write compressed kernels");
    encoder.finish().expect("finish compressed kernels");
    gz
}

fn generated_source(
    files: &[KernelFile],
    images: &[Option<ModuleImages>],
    with_nvcc: bool,
) -> String {
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
        "/// One kernels/*.cu: (file stem, PTX target, gzipped PTX, [(SASS architecture, gzipped cubin)])."
    )
    .unwrap();
    writeln!(
        s,
        "pub type Module = (&'static str, &'static str, &'static [u8], &'static [(&'static str, &'static [u8])]);"
    )
    .unwrap();
    writeln!(
        s,
        "/// Every kernels/*.cu nvcc compiled; empty without nvcc."
    )
    .unwrap();
    writeln!(s, "pub const MODULES: &[Module] = &[").unwrap();
    for (f, m) in files.iter().zip(images) {
        let Some(m) = m else { continue };
        let sass: Vec<String> = m
            .sass
            .iter()
            .map(|(arch, p)| format!("({arch:?}, include_bytes!({:?}))", p.display().to_string()))
            .collect();
        writeln!(
            s,
            "    ({:?}, {:?}, include_bytes!({:?}), &[{}]),",
            f.stem,
            f.arch,
            m.ptx.display().to_string(),
            sass.join(", ")
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

/// One `Kernel<P>` constant per kernel and one `StorageKernels<P>` per storage registration.
fn handles_source(files: &[KernelFile]) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "// Generated by build.rs from the kernel registrations in kernels/*.cu. Do not edit.\n\
         // A compile error on a type below: the comment at the end of its line names the\n\
         // registration (file:line) and the C++ struct. The Rust mirror is the struct of the\n\
         // same name in src/cuda/<file stem>.rs, unless a `// kiln-mirror: [module::]Type` line\n\
         // right above the C++ struct (the kiln-mirror line given) names another."
    )
    .unwrap();
    let mut constants: Vec<String> = Vec::new();
    for f in files {
        for h in &f.handles {
            let constant = h.kernel.to_ascii_uppercase();
            writeln!(
                s,
                "/// `{}`, registered at {}: `{}`; {}.",
                h.kernel, h.at, h.registration, h.how
            )
            .unwrap();
            // The type's own line says where it comes from: a compile error shows that line.
            writeln!(
                s,
                "pub(crate) const {constant}: crate::cuda::Kernel<\n    \
                 crate::cuda::{}, // {} ({})\n> = crate::cuda::Kernel::new({:?});",
                h.rust_type, h.at, h.source, h.kernel
            )
            .unwrap();
            constants.push(constant);
        }
        for g in &f.storage_groups {
            let constant = g.op.to_ascii_uppercase();
            let twin = |s: &str| format!("{constant}_{}", s.to_ascii_uppercase());
            writeln!(
                s,
                "/// `{op}_f32`, `{op}_bf16` and `{op}_f16`, registered at {}.",
                g.at,
                op = g.op
            )
            .unwrap();
            writeln!(
                s,
                "pub(crate) const {constant}: crate::cuda::StorageKernels<crate::cuda::{}> =\n    \
                 crate::cuda::StorageKernels::new({}, {}, {});",
                g.rust_type,
                twin("f32"),
                twin("bf16"),
                twin("f16")
            )
            .unwrap();
            constants.push(constant);
        }
    }
    let mut sorted = constants.clone();
    sorted.sort();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        panic!(
            "two kernel handles would be named {}: rename a kernel or storage op in kernels/*.cu",
            w[0]
        );
    }
    writeln!(
        s,
        "/// The name of every [`crate::cuda::Kernel`] constant above, read through the constant."
    )
    .unwrap();
    writeln!(
        s,
        "#[cfg(test)]\npub(crate) const HANDLE_NAMES: &[&str] = &["
    )
    .unwrap();
    for h in files.iter().flat_map(|f| &f.handles) {
        writeln!(s, "    {}.name(),", h.kernel.to_ascii_uppercase()).unwrap();
    }
    writeln!(s, "];").unwrap();
    s
}
