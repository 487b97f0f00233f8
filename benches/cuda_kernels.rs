//! CUDA kernels on one device, each beside a ceiling measured in the same run, and (with the
//! `bench-cublas` feature) cuBLAS SGEMM on the same shapes in the same process.
//!
//! Not a criterion bench (`harness = false`): a plain program that prints a Markdown report, so the
//! same binary runs on GPU hosts that have no Rust toolchain (see scripts/gpu-bundle.sh).
//!
//! Environment:
//! - `KILN_BENCH_DEVICE`: `cuda:N` (default `cuda:0`) or `emulated` for a smoke run of the same
//!   code on the CPU. When the device can't be opened (no driver, no GPU, built without kernels)
//!   the reason is printed and the program exits 0.
//! - `KILN_COMMIT`: the commit to name in the header (the bundle's run.sh sets it).
//! - `KILN_BENCH_OUT`: a file to write the report to as well (written to a temp file beside it,
//!   then renamed, so a reader never sees half a report).
//! - `KILN_BENCH_JSON`: a file to write one JSON object per measurement to (same atomic write),
//!   `{"source": "kiln"|"cublas", "workload": ..., "ms": ..., "bytes": ..., "flops": ...}`;
//!   bench/gpu_report.py joins it with bench/torch_gpu.py's output (same `workload` names).
//! - `KILN_BENCH_PROGRESS`: a file each row is appended to (one JSON object per line, flushed) as
//!   soon as it is measured, so a run cut short by a time limit still leaves every finished row.
//!
//! Flag: `--kernels LIST` (as `kiln train --kernels`: `default`, or a comma list of large-tiles,
//! flat-tiles, wgmma, wgmma-cp-async, wgmma-wide, conv-chunk-bytes=N) is the kernel policy every
//! row runs under; the comparison rows (128x128 tiles, flat tiles, the wgmma loaders) change one
//! choice of it. Other arguments (`--bench`, which cargo passes) are ignored.
//!
//! Method: each kernel is run `WARMUP` times untimed, then `RUNS` times (1 and 3 under
//! emulation), each run timed with CUDA events on kiln's stream (`kiln::cuda::time_runs`; host
//! clock under emulation); the table gives the median. Each run includes taking its output from
//! kiln's memory pool (cached after warm-up). A failing row is listed at the end and the others
//! still run; the program then exits non-zero.
//! Layer and training-step rows time kiln's public API (autograd included); a training step is
//! `kiln::train::train_step` (forward, loss, backward, SGD; it reads the loss back to the host).
//!
//! cuBLAS (`--features bench-cublas`; libcublas is loaded at run time, from `LD_LIBRARY_PATH` or
//! the usual names): SGEMM with the default math mode (plain f32, no TF32 tensor cores), on its own
//! handle in the same primary context, on the same inputs as kiln's GEMM, timed the same way with
//! CUDA events. Its output is compared with kiln's (relative Frobenius error; f32 lands far under
//! 1e-5, TF32 near 3e-4). Without the library the comparison is skipped with a line saying why.
//!
//! Columns and which way is better:
//! - median ms: lower is better.
//! - achieved: GB/s = (bytes read + bytes written, each operand counted once) / median time for
//!   memory-bound kernels; TFLOP/s = 2·m·n·k·batch / median time for GEMM and convolution layers;
//!   images/s for training steps. Higher is better.
//! - ceiling: memory-bound kernels: the device-to-device copy of a 256 MiB f32 tensor,
//!   2·bytes / median time (what the memory system delivers to a kernel that only streams);
//!   GEMM and convolution: cuBLAS SGEMM 4096^3 in the same run (when it could be loaded).
//! - fraction of ceiling: achieved / ceiling. Higher is better; 1.0 means as fast as a copy (or
//!   as cuBLAS's largest SGEMM).
//!
//! Under emulation every shape shrinks by `EMULATION_SHRINK` (batch, rows and element counts
//! divided by it; the square GEMMs are 512^3 and 128^3 instead of 4096^3 and 1024^3) so the smoke
//! run takes seconds. Its numbers measure the CPU, not a GPU: they only show that every path runs.
//!
//! Run: `cargo bench --bench cuda_kernels [--features bench-cublas]` (real GPU) or
//! `KILN_BENCH_DEVICE=emulated cargo bench --bench cuda_kernels` (smoke run, no GPU needed).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use kiln::backend;
use kiln::cuda::{describe, median, time_runs, with_kernel_policy, KernelPolicy};
use kiln::{ops, ConvGeometry, DType, Device, Error, GemmSpec, Result, Tensor, Window2d};
use serde_json::json;

const WARMUP: usize = 5;
const RUNS: usize = 25;
/// Divides batch sizes, row counts and element counts under emulation.
const EMULATION_SHRINK: usize = 64;
/// Warm-up and timed runs under emulation: a smoke test that every path runs, not a measurement.
const EMULATION_WARMUP: usize = 1;
const EMULATION_RUNS: usize = 3;
const F32: f64 = 4.0;
const I32: f64 = 4.0;
/// Bytes of a bf16 element (16-bit activations).
const BF16: f64 = 2.0;
const U8: f64 = 1.0;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cuda_kernels: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An output file named by an environment variable, checked before the runs, not after them.
fn out_path(var: &'static str) -> Result<Option<std::path::PathBuf>> {
    let out = std::env::var_os(var).map(std::path::PathBuf::from);
    if let Some(dir) = out.as_deref().and_then(Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            return Err(Error::InvalidArgument {
                what: var,
                why: format!("folder {} does not exist", dir.display()),
            });
        }
    }
    Ok(out)
}

/// The policy `--kernels LIST` (or `--kernels=LIST`) names; the defaults without the flag.
fn kernels_flag(mut args: impl Iterator<Item = String>) -> Result<KernelPolicy> {
    while let Some(arg) = args.next() {
        let list = match arg.strip_prefix("--kernels") {
            Some("") => args.next().ok_or_else(|| Error::InvalidArgument {
                what: "--kernels",
                why: "the flag needs a value: default, or a comma list of kernel choices".into(),
            })?,
            Some(rest) => match rest.strip_prefix('=') {
                Some(list) => list.to_string(),
                None => continue,
            },
            None => continue,
        };
        return KernelPolicy::parse(&list);
    }
    Ok(KernelPolicy::DEFAULT)
}

fn run() -> Result<()> {
    let name = std::env::var("KILN_BENCH_DEVICE").unwrap_or_else(|_| "cuda:0".to_string());
    let device = Device::parse(&name)?;
    if device == Device::Cpu {
        return Err(Error::Unsupported {
            op: "cuda_kernels bench",
            device,
            why: "it times GPU kernels; use `cargo bench --bench cpu_kernels` for the CPU".into(),
        });
    }
    if let Err(why) = device.check_available() {
        println!("cuda_kernels: skipped: {device} is not available: {why}");
        return Ok(());
    }
    let policy = kernels_flag(std::env::args().skip(1))?;
    kiln::cuda::set_kernel_policy(device, policy)?;
    let emulated = device == Device::CudaEmulated;
    let bench = Bench {
        device,
        policy,
        shrink: if emulated { EMULATION_SHRINK } else { 1 },
        warmup: if emulated { EMULATION_WARMUP } else { WARMUP },
        runs: if emulated { EMULATION_RUNS } else { RUNS },
    };

    let out = out_path("KILN_BENCH_OUT")?;
    let json_out = out_path("KILN_BENCH_JSON")?;

    let mut report = header(&bench)?;
    print!("{report}");
    let mut rows = Rows::new()?;
    rows.progress_line(&meta_json(&bench, "measured after kiln's rows"));
    // Without the bandwidth ceiling there is no report; any later failure is recorded, the other
    // rows still run, and the program exits non-zero after writing what it measured.
    let ceiling = bench.copy_ceiling(&mut rows)?;
    let r = bench.im2col_col2im(&mut rows);
    rows.check("im2col/col2im", r);
    let r = bench.gemm_square(&mut rows);
    let mut problems = rows.check("square GEMM", r).unwrap_or_default();
    let r = bench.gemm_conv(&mut rows);
    problems.extend(rows.check("conv GEMM", r));
    let r = bench.gemm_tensor_core(&mut rows);
    let half_problems = rows.check("tensor-core GEMM", r).unwrap_or_default();
    let r = bench.maxpool(&mut rows);
    rows.check("maxpool", r);
    let r = bench.relu(&mut rows);
    rows.check("relu", r);
    let r = bench.softmax_xent(&mut rows);
    rows.check("softmax_xent", r);
    let r = bench.sum(&mut rows);
    rows.check("sum", r);
    let r = bench.optimizers(&mut rows);
    rows.check("optimizers", r);
    let r = bench.conv_layers(&mut rows);
    rows.check("conv layers", r);
    let r = bench.lenet5_step(&mut rows);
    rows.check("lenet5 step", r);
    let r = bench.resnet20_step(&mut rows);
    let peak = rows.check("resnet20 step", r).flatten();

    // cuBLAS on the same GEMMs, in this process, after kiln's rows.
    let (mut reference, mut reference_note) = bench.cublas(&problems)?;
    let (half_reference, half_note) = bench.cublas_bf16(&half_problems)?;
    reference.extend(half_reference);
    reference_note.push_str(&format!("; bf16: {half_note}"));
    for r in &reference {
        rows.push(r.row.clone(), bench.runs);
    }
    // The matrix ceiling: cuBLAS's best rate over the square SGEMMs (the largest, in practice).
    let matrix_ceiling = reference
        .iter()
        .filter(|r| r.square)
        .map(|r| r.row.work.flops / (r.row.median_ms * 1e-3) / 1e12)
        .fold(None, |best: Option<f64>, v| {
            Some(best.map_or(v, |b| b.max(v)))
        });

    let mut table = table(&rows.list, ceiling, matrix_ceiling);
    table.push_str(&versus(&rows.list, &reference, &reference_note));
    if let Some(peak) = peak {
        let _ = writeln!(
            table,
            "\nResNet-20 training step, batch {}: peak pool memory {:.1} MiB (live buffers, rounded to size classes)",
            128 / bench.shrink,
            peak as f64 / (1u64 << 20) as f64
        );
    }
    if !rows.failed.is_empty() {
        let _ = writeln!(table, "\nFAILED ({}):", rows.failed.len());
        for (what, why) in &rows.failed {
            let _ = writeln!(table, "- {what}: {why}");
        }
    }
    print!("{table}");
    report.push_str(&table);
    if let Some(out) = out {
        write_atomically("KILN_BENCH_OUT", &out, &report)?;
        println!("\nwrote {}", out.display());
    }
    if let Some(json_out) = json_out {
        let text = json_lines(&bench, &rows, &reference, &reference_note, peak);
        write_atomically("KILN_BENCH_JSON", &json_out, &text)?;
        println!("wrote {}", json_out.display());
    }
    match rows.failed.len() {
        0 => Ok(()),
        n => Err(Error::InvalidArgument {
            what: "benchmarks",
            why: format!("{n} failed (listed above)"),
        }),
    }
}

/// The measured rows, and what failed (a workload or section and the error).
struct Rows {
    list: Vec<Row>,
    failed: Vec<(String, String)>,
    /// `KILN_BENCH_PROGRESS`: each row appended as soon as it is measured.
    progress: Option<std::fs::File>,
}

impl Rows {
    /// Rows that append each measurement to `KILN_BENCH_PROGRESS` when it is set.
    fn new() -> Result<Rows> {
        let progress = match out_path("KILN_BENCH_PROGRESS")? {
            None => None,
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| Error::InvalidArgument {
                        what: "KILN_BENCH_PROGRESS",
                        why: format!("{}: {e}", path.display()),
                    })?,
            ),
        };
        Ok(Rows {
            list: Vec::new(),
            failed: Vec::new(),
            progress,
        })
    }

    /// Keeps `row`, and appends it to the progress file at once.
    fn push(&mut self, row: Row, runs: usize) {
        self.progress_line(&report::row_json(&row, runs));
        self.list.push(row);
    }

    /// One line of the progress file (a write error there only warns: the measurements are still
    /// in the report).
    fn progress_line(&mut self, value: &serde_json::Value) {
        if let Some(file) = self.progress.as_mut() {
            use std::io::Write as _;
            let line = format!("{value}\n");
            if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                eprintln!("KILN_BENCH_PROGRESS: {e}");
            }
        }
    }

    /// The value of a section that ran, or `None` with its error recorded.
    fn check<T>(&mut self, section: &str, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("  {section}: FAILED: {e}");
                self.failed.push((section.to_string(), e.to_string()));
                None
            }
        }
    }
}

/// What one run of a row does: bytes moved (read + written, each operand once), floating-point
/// operations, and images (training steps). The achieved-rate column uses the first that applies:
/// images, then operations, then bytes.
#[derive(Clone, Copy, Default)]
struct Work {
    bytes: f64,
    flops: f64,
    images: f64,
}

impl Work {
    fn bytes(bytes: f64) -> Work {
        Work {
            bytes,
            ..Work::default()
        }
    }
    fn flops(flops: f64, bytes: f64) -> Work {
        Work {
            flops,
            bytes,
            ..Work::default()
        }
    }
    fn images(images: f64) -> Work {
        Work {
            images,
            ..Work::default()
        }
    }
}

#[derive(Clone)]
struct Row {
    /// Who ran it: "kiln" or "cublas".
    source: &'static str,
    kernel: &'static str,
    shape: String,
    /// The name bench/torch_gpu.py gives the same workload (gpu_report.py joins on it).
    workload: String,
    median_ms: f64,
    work: Work,
}

/// A GEMM kiln timed, for the cuBLAS comparison: its spec, the seeds of its random operands and
/// the workload name.
#[cfg_attr(not(feature = "bench-cublas"), allow(dead_code))]
struct GemmProblem {
    spec: GemmSpec,
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    c_shape: Vec<usize>,
    seeds: (u64, u64),
    workload: String,
    shape: String,
    square: bool,
}

/// A cuBLAS row with the agreement of its output with kiln's on the same inputs.
struct ReferenceRow {
    row: Row,
    square: bool,
    /// ‖kiln − cuBLAS‖ / ‖cuBLAS‖ over the whole output.
    rel_err: f64,
}

struct Bench {
    device: Device,
    /// The policy of every row (`--kernels`); comparison rows change one choice of it.
    policy: KernelPolicy,
    shrink: usize,
    warmup: usize,
    runs: usize,
}

impl Bench {
    /// `f` under the bench's policy changed by `change` (a comparison row), on this thread.
    fn under<R>(&self, change: impl FnOnce(&mut KernelPolicy), f: impl FnOnce() -> R) -> R {
        let mut policy = self.policy;
        change(&mut policy);
        with_kernel_policy(self.device, policy, f)
    }

    fn randn(&self, shape: &[usize], seed: u64) -> Result<Tensor> {
        Tensor::randn(shape, 1.0, seed, self.device)
    }

    /// Median milliseconds of `work` over `self.runs` warm runs.
    fn time(&self, work: impl FnMut() -> Result<()>) -> Result<f64> {
        Ok(median(&time_runs(
            self.device,
            self.warmup,
            self.runs,
            work,
        )?))
    }

    /// Times `work` and appends its row, echoing it so a long run shows progress.
    fn row(
        &self,
        rows: &mut Rows,
        kernel: &'static str,
        (shape, workload): (String, String),
        work: Work,
        f: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let median_ms = match self.time(f) {
            Ok(ms) => ms,
            Err(e) => {
                rows.check::<()>(&workload, Err(e));
                return Ok(());
            }
        };
        eprintln!("  {kernel} {shape}: {median_ms:.4} ms");
        rows.push(
            Row {
                source: "kiln",
                kernel,
                shape,
                workload,
                median_ms,
                work,
            },
            self.runs,
        );
        Ok(())
    }

    /// Device-to-device copy of 256 MiB of f32 (4 MiB under emulation): the bandwidth ceiling, GB/s.
    fn copy_ceiling(&self, rows: &mut Rows) -> Result<f64> {
        let n = (256 << 20) / 4 / self.shrink;
        let x = self.randn(&[n], 100)?;
        let bytes = 2.0 * n as f64 * F32;
        let mib = (n * 4) >> 20;
        self.row(
            rows,
            "copy (ceiling)",
            (format!("{mib} MiB f32"), format!("copy {mib}MiB f32")),
            Work::bytes(bytes),
            || backend::copy(&x).map(drop),
        )?;
        match rows.failed.pop() {
            Some((what, why)) => Err(Error::InvalidArgument {
                what: "bandwidth ceiling",
                why: format!("{what}: {why}"),
            }),
            None => Ok(gb_per_s(
                bytes,
                rows.list.last().map_or(0.0, |r| r.median_ms),
            )),
        }
    }

    /// ResNet-20's first stage: x [128, 16, 32, 32], 3x3, stride 1, pad 1.
    fn im2col_col2im(&self, rows: &mut Rows) -> Result<()> {
        let g = ConvGeometry::new(
            [128 / self.shrink, 16, 32, 32],
            Window2d::square(3, 1, 1),
            true,
        )?;
        let x_dims = dims(&[g.batch, g.in_channels, g.in_h, g.in_w]);
        let shape = format!("x {x_dims} 3x3 p1");
        let bytes = (g.input_len() + g.col_len()) as f64 * F32;
        let x = self.randn(&[g.batch, g.in_channels, g.in_h, g.in_w], 1)?;
        self.row(
            rows,
            "im2col",
            (shape.clone(), format!("im2col {x_dims} 3x3p1")),
            Work::bytes(bytes),
            || backend::im2col(&x, &g).map(drop),
        )?;
        let col = self.randn(&[g.batch, g.col_rows(), g.col_cols()], 2)?;
        self.row(
            rows,
            "col2im",
            (shape, format!("col2im {x_dims} 3x3p1")),
            Work::bytes(bytes),
            || backend::col2im(&col, &g).map(drop),
        )
    }

    /// Square products: 1024^3 and 4096^3 on a GPU, 128^3 and 512^3 under emulation.
    fn gemm_square(&self, rows: &mut Rows) -> Result<Vec<GemmProblem>> {
        let mut problems = Vec::new();
        for (i, s) in [1024, 4096].into_iter().enumerate() {
            let s = if self.shrink > 1 { s / 8 } else { s };
            let seeds = (3 + 20 * i as u64, 4 + 20 * i as u64);
            let a = self.randn(&[s, s], seeds.0)?;
            let b = self.randn(&[s, s], seeds.1)?;
            let spec = GemmSpec::new(s, s, s);
            let flops = 2.0 * (s as f64).powi(3);
            let shape = format!("{s}x{s}x{s}");
            let workload = format!("sgemm {shape}");
            self.row(
                rows,
                "gemm",
                (shape.clone(), workload.clone()),
                Work::flops(flops, 3.0 * (s * s) as f64 * F32),
                || backend::gemm(&spec, 1.0, &a, &b, vec![s, s]).map(drop),
            )?;
            // The opt-in 128x128-tile kernel on the same product, to decide which one is default.
            self.under(
                |p| p.large_tiles = true,
                || {
                    self.row(
                        rows,
                        "gemm 128x128 tiles",
                        (shape.clone(), format!("sgemm 128x128-tile kernel {shape}")),
                        Work::flops(flops, 3.0 * (s * s) as f64 * F32),
                        || backend::gemm(&spec, 1.0, &a, &b, vec![s, s]).map(drop),
                    )
                },
            )?;
            problems.push(GemmProblem {
                spec,
                a_shape: vec![s, s],
                b_shape: vec![s, s],
                c_shape: vec![s, s],
                seeds,
                workload,
                shape,
                square: true,
            });
        }
        Ok(problems)
    }

    /// The conv forward of the im2col shape as a batched product: W [16, 144] (shared) times each
    /// image's columns [144, 1024] into y [N, 16, 1024].
    fn gemm_conv(&self, rows: &mut Rows) -> Result<GemmProblem> {
        let g = ConvGeometry::new(
            [128 / self.shrink, 16, 32, 32],
            Window2d::square(3, 1, 1),
            true,
        )?;
        let (m, n, k) = (16, g.col_cols(), g.col_rows());
        let seeds = (5, 6);
        let w = self.randn(&[m, k], seeds.0)?;
        let col = self.randn(&[g.batch, k, n], seeds.1)?;
        let spec = GemmSpec::new(m, n, k).batched(g.batch, 0, k * n, m * n);
        let flops = 2.0 * (g.batch * m * n * k) as f64;
        let bytes = (m * k + g.batch * (k * n + m * n)) as f64 * F32;
        let shape = format!("{}x[{m}x{n}x{k}]", g.batch);
        let workload = format!("sgemm batched {shape}");
        self.row(
            rows,
            "gemm (conv, batched)",
            (shape.clone(), workload.clone()),
            Work::flops(flops, bytes),
            || backend::gemm(&spec, 1.0, &w, &col, vec![g.batch, m, n]).map(drop),
        )?;
        // The opt-in flat-tile kernel (16x256 tiles for these 16 rows) on the same product.
        self.under(
            |p| p.flat_tiles = true,
            || {
                self.row(
                    rows,
                    "gemm (conv, batched) 16x256 tiles",
                    (shape.clone(), format!("sgemm batched {shape} flat-tile")),
                    Work::flops(flops, bytes),
                    || backend::gemm(&spec, 1.0, &w, &col, vec![g.batch, m, n]).map(drop),
                )
            },
        )?;
        Ok(GemmProblem {
            spec,
            a_shape: vec![m, k],
            b_shape: vec![g.batch, k, n],
            c_shape: vec![g.batch, m, n],
            seeds,
            workload,
            shape,
            square: false,
        })
    }

    /// x [128, 64, 32, 32], 2x2 window, stride 2; in f32, and in bf16 (16-bit activations).
    fn maxpool(&self, rows: &mut Rows) -> Result<()> {
        let g = ConvGeometry::new(
            [128 / self.shrink, 64, 32, 32],
            Window2d::square(2, 2, 0),
            true,
        )?;
        let x_dims = dims(&[g.batch, g.in_channels, g.in_h, g.in_w]);
        let shape = format!("x {x_dims} 2x2 s2");
        let input = g.input_len() as f64;
        let out = (g.batch * g.in_channels * g.out_h * g.out_w) as f64;
        let x = self.randn(&[g.batch, g.in_channels, g.in_h, g.in_w], 7)?;
        // Reads x; writes y and the argmax.
        self.row(
            rows,
            "maxpool_fwd",
            (shape.clone(), format!("maxpool_fwd {x_dims} 2x2s2")),
            Work::bytes(input * F32 + out * (F32 + I32)),
            || backend::maxpool_fwd(&x, &g).map(drop),
        )?;
        let (_, argmax) = backend::maxpool_fwd(&x, &g)?;
        let dy = self.randn(&[g.batch, g.in_channels, g.out_h, g.out_w], 8)?;
        // Reads dy and the argmax; writes dx.
        self.row(
            rows,
            "maxpool_bwd",
            (shape.clone(), format!("maxpool_bwd {x_dims} 2x2s2")),
            Work::bytes(out * (F32 + I32) + input * F32),
            || backend::maxpool_bwd(&dy, &argmax, &g).map(drop),
        )?;
        let (x, dy) = (x.to_dtype(DType::BF16)?, dy.to_dtype(DType::BF16)?);
        self.row(
            rows,
            "maxpool_fwd",
            (
                format!("{shape} bf16"),
                format!("maxpool_fwd bf16 {x_dims} 2x2s2"),
            ),
            Work::bytes(input * BF16 + out * (BF16 + I32)),
            || backend::maxpool_fwd(&x, &g).map(drop),
        )?;
        self.row(
            rows,
            "maxpool_bwd",
            (
                format!("{shape} bf16"),
                format!("maxpool_bwd bf16 {x_dims} 2x2s2"),
            ),
            Work::bytes(out * (BF16 + I32) + input * BF16),
            || backend::maxpool_bwd(&dy, &argmax, &g).map(drop),
        )
    }

    /// 2^24 elements, in f32 and in bf16 (16-bit activations).
    fn relu(&self, rows: &mut Rows) -> Result<()> {
        let n = (1 << 24) / self.shrink;
        let x = self.randn(&[n], 9)?;
        let shape = format!("2^{} elements", n.trailing_zeros());
        let short = format!("2^{}", n.trailing_zeros());
        // Reads x; writes y and the mask.
        self.row(
            rows,
            "relu_fwd",
            (shape.clone(), format!("relu_fwd {short}")),
            Work::bytes(n as f64 * (F32 + F32 + U8)),
            || backend::relu_fwd(&x).map(drop),
        )?;
        let (_, mask) = backend::relu_fwd(&x)?;
        let dy = self.randn(&[n], 10)?;
        // Reads dy and the mask; writes dx.
        self.row(
            rows,
            "relu_bwd",
            (shape.clone(), format!("relu_bwd {short}")),
            Work::bytes(n as f64 * (F32 + U8 + F32)),
            || backend::relu_bwd(&dy, &mask).map(drop),
        )?;
        let (x, dy) = (x.to_dtype(DType::BF16)?, dy.to_dtype(DType::BF16)?);
        self.row(
            rows,
            "relu_fwd",
            (format!("{shape} bf16"), format!("relu_fwd bf16 {short}")),
            Work::bytes(n as f64 * (BF16 + BF16 + U8)),
            || backend::relu_fwd(&x).map(drop),
        )?;
        self.row(
            rows,
            "relu_bwd",
            (format!("{shape} bf16"), format!("relu_bwd bf16 {short}")),
            Work::bytes(n as f64 * (BF16 + U8 + BF16)),
            || backend::relu_bwd(&dy, &mask).map(drop),
        )
    }

    /// Logits [4096, 1000].
    fn softmax_xent(&self, rows: &mut Rows) -> Result<()> {
        let (r, k) = (4096 / self.shrink, 1000);
        let logits = self.randn(&[r, k], 11)?;
        let labels = Tensor::from_vec(labels(r, k), &[r], self.device)?;
        // Reads logits and labels; writes probs and one loss per row.
        let bytes = (r * k) as f64 * (F32 + F32) + r as f64 * (I32 + F32);
        self.row(
            rows,
            "softmax_xent_fwd",
            (format!("{r}x{k}"), format!("softmax_xent_fwd {r}x{k}")),
            Work::bytes(bytes),
            || backend::softmax_xent_fwd(&logits, &labels).map(drop),
        )
    }

    /// 2^24 elements to one.
    fn sum(&self, rows: &mut Rows) -> Result<()> {
        let n = (1 << 24) / self.shrink;
        let x = self.randn(&[n], 12)?;
        let short = format!("2^{}", n.trailing_zeros());
        self.row(
            rows,
            "sum",
            (format!("{short} elements"), format!("sum {short}")),
            Work::bytes(n as f64 * F32 + F32),
            || backend::sum(&x, 1.0).map(drop),
        )
    }

    /// One 3x3 convolution layer (pad 1, no bias) at each of ResNet-20's stage shapes, forward and
    /// backward (dx and dW) through the public API: loss = Σ conv(x, w) ⊙ dy with a random dy, so
    /// the backward pass gets a random gradient (bench/torch_gpu.py does the same in PyTorch).
    fn conv_layers(&self, rows: &mut Rows) -> Result<()> {
        for (i, (c, side)) in [(16, 32), (32, 16), (64, 8)].into_iter().enumerate() {
            let n = 128 / self.shrink;
            let seed = 30 + 3 * i as u64;
            let x = self.randn(&[n, c, side, side], seed)?.with_grad();
            let w = Tensor::randn(&[c, c, 3, 3], 0.1, seed + 1, self.device)?.with_grad();
            let dy = self.randn(&[n, c, side, side], seed + 2)?;
            // Forward, dx and dW: three products of 2·N·C·C·9·H·W operations each.
            let flops = 3.0 * 2.0 * (n * c * c * 9 * side * side) as f64;
            let x_dims = dims(&[n, c, side, side]);
            // With 16 or 32 channels the forward and weight-gradient products have m ≤ 32: those
            // layers are timed again with the opt-in flat-tile GEMM kernels.
            let variants: &[bool] = if c <= 32 { &[false, true] } else { &[false] };
            for &flat in variants {
                let tag = if flat { " flat-tile" } else { "" };
                self.under(
                    |p| p.flat_tiles = flat,
                    || {
                        self.row(
                            rows,
                            "conv3x3 layer fwd+bwd",
                            (
                                format!("x {x_dims}, {c}->{c}, p1{tag}"),
                                format!("conv3x3 fwd+bwd {x_dims}{tag}"),
                            ),
                            Work::flops(flops, 0.0),
                            || {
                                let y = ops::conv2d(&x, &w, None, Window2d::square(3, 1, 1))?;
                                ops::sum(&ops::mul(&y, &dy)?)?.backward().map(drop)
                            },
                        )
                    },
                )?;
            }
        }
        Ok(())
    }

    /// cuBLAS SGEMM on each problem, on the same inputs as kiln's; the rows and a note saying
    /// what ran (or why nothing did).
    #[cfg(feature = "bench-cublas")]
    fn cublas(&self, problems: &[GemmProblem]) -> Result<(Vec<ReferenceRow>, String)> {
        let Device::Cuda(ordinal) = self.device else {
            return Ok((Vec::new(), "not run: no real GPU (emulation)".into()));
        };
        // cudarc panics when a library or symbol is missing; keep that from ending the report.
        let opened = std::panic::catch_unwind(|| cublas::Blas::open(ordinal));
        let blas = match opened {
            Ok(Ok(blas)) => blas,
            Ok(Err(why)) => return Ok((Vec::new(), format!("not run: {why}"))),
            Err(_) => {
                return Ok((
                    Vec::new(),
                    "not run: loading libcublas panicked (see the message above)".into(),
                ))
            }
        };
        let mut out = Vec::new();
        for p in problems {
            let a = self.randn(&p.a_shape, p.seeds.0)?;
            let b = self.randn(&p.b_shape, p.seeds.1)?;
            let kiln_c = backend::gemm(&p.spec, 1.0, &a, &b, p.c_shape.clone())?.to_vec::<f32>()?;
            let (a, b) = (a.to_vec::<f32>()?, b.to_vec::<f32>()?);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                blas.sgemm(&p.spec, &a, &b, self.warmup, self.runs)
            }));
            let (times, c) = match run {
                Ok(Ok(r)) => r,
                Ok(Err(why)) => {
                    let note = format!("{} — stopped at {}: {why}", blas.describe(), p.workload);
                    return Ok((out, note));
                }
                Err(_) => {
                    let note = format!("{} — stopped at {}: panicked", blas.describe(), p.workload);
                    return Ok((out, note));
                }
            };
            let median_ms = median(&times);
            let rel_err = rel_err(&kiln_c, &c);
            eprintln!(
                "  cuBLAS sgemm {}: {median_ms:.4} ms (kiln vs cuBLAS rel err {rel_err:.1e})",
                p.shape
            );
            let flops = 2.0 * (p.spec.batch * p.spec.m * p.spec.n * p.spec.k) as f64;
            out.push(ReferenceRow {
                row: Row {
                    source: "cublas",
                    kernel: "cuBLAS sgemm",
                    shape: p.shape.clone(),
                    workload: p.workload.clone(),
                    median_ms,
                    work: Work::flops(flops, 0.0),
                },
                square: p.square,
                rel_err,
            });
        }
        Ok((out, blas.describe()))
    }

    #[cfg(not(feature = "bench-cublas"))]
    fn cublas(&self, _problems: &[GemmProblem]) -> Result<(Vec<ReferenceRow>, String)> {
        Ok((
            Vec::new(),
            "not built (build the bench with --features bench-cublas)".into(),
        ))
    }
}

#[cfg(feature = "bench-cublas")]
#[path = "cuda_kernels/cublas.rs"]
mod cublas;
#[path = "cuda_kernels/optimizers.rs"]
mod optimizers;
#[path = "cuda_kernels/report.rs"]
mod report;
use report::*;
#[path = "cuda_kernels/tensor_core.rs"]
mod tensor_core;
#[path = "cuda_kernels/training_steps.rs"]
mod training_steps;

/// Labels for `rows` examples over `classes` classes, spread over all of them.
fn labels(rows: usize, classes: usize) -> Vec<i32> {
    (0..rows)
        .map(|i| ((i * 7919 + 13) % classes) as i32)
        .collect()
}

/// ‖got − want‖ / ‖want‖ in f64 (NaN compares as infinitely wrong).
#[cfg_attr(not(feature = "bench-cublas"), allow(dead_code))]
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        let d = f64::from(*g) - f64::from(*w);
        diff += d * d;
        norm += f64::from(*w) * f64::from(*w);
    }
    let e = (diff / norm.max(f64::MIN_POSITIVE)).sqrt();
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

fn gb_per_s(bytes: f64, ms: f64) -> f64 {
    bytes / (ms * 1e-3) / 1e9
}

fn dims(d: &[usize]) -> String {
    d.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("x")
}
