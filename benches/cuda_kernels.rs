//! CUDA kernels on one device, each beside a ceiling measured in the same run.
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
//!
//! Method: each kernel is run `WARMUP` times untimed, then `RUNS` times, each run timed with CUDA
//! events on kiln's stream (`kiln::cuda::time_runs`; host clock under emulation); the table gives
//! the median. Each run includes taking its output from kiln's memory pool (cached after warm-up).
//!
//! Columns and which way is better:
//! - median ms: lower is better.
//! - achieved: GB/s = (bytes read + bytes written, each operand counted once) / median time for
//!   memory-bound kernels; TFLOP/s = 2·m·n·k·batch / median time for GEMM. Higher is better.
//! - ceiling: the device-to-device copy of a 256 MiB f32 tensor, 2·bytes / median time (what the
//!   memory system delivers to a kernel that only streams). GEMM shows none yet: a cuBLAS
//!   comparison comes later.
//! - fraction of ceiling: achieved / ceiling. Higher is better; 1.0 means as fast as a copy.
//!
//! Under emulation every shape shrinks by `EMULATION_SHRINK` (batch, rows and element counts
//! divided by it; the square GEMM is 512^3 instead of 4096^3) so the smoke run takes seconds. Its
//! numbers measure the CPU, not a GPU: they only show that every path runs.
//!
//! Run: `cargo bench --bench cuda_kernels` (real GPU) or
//! `KILN_BENCH_DEVICE=emulated cargo bench --bench cuda_kernels` (smoke run, no GPU needed).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln::backend;
use kiln::cuda::{describe, median, time_runs};
use kiln::{ConvGeometry, Device, Error, GemmSpec, Result, Tensor, Window2d};

const WARMUP: usize = 5;
const RUNS: usize = 25;
/// Divides batch sizes, row counts and element counts under emulation.
const EMULATION_SHRINK: usize = 64;
const F32: f64 = 4.0;
const I32: f64 = 4.0;
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
    let bench = Bench {
        device,
        shrink: if device == Device::CudaEmulated {
            EMULATION_SHRINK
        } else {
            1
        },
    };

    // Fail before the runs, not after them, when the report can't be written.
    let out = std::env::var_os("KILN_BENCH_OUT").map(std::path::PathBuf::from);
    if let Some(dir) = out.as_deref().and_then(Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            return Err(Error::InvalidArgument {
                what: "KILN_BENCH_OUT",
                why: format!("folder {} does not exist", dir.display()),
            });
        }
    }

    let mut report = header(&bench)?;
    print!("{report}");
    let mut rows = Vec::new();
    let ceiling = bench.copy_ceiling(&mut rows)?;
    bench.im2col_col2im(&mut rows)?;
    bench.gemm_square(&mut rows)?;
    bench.gemm_conv(&mut rows)?;
    bench.maxpool(&mut rows)?;
    bench.relu(&mut rows)?;
    bench.softmax_xent(&mut rows)?;
    bench.sum(&mut rows)?;

    let table = table(&rows, ceiling);
    print!("{table}");
    report.push_str(&table);
    if let Some(out) = out {
        write_atomically(&out, &report)?;
        println!("\nwrote {}", out.display());
    }
    Ok(())
}

/// What a kernel's run does, for the achieved-rate column.
enum Work {
    /// Bytes read plus bytes written.
    Bytes(f64),
    /// Floating-point operations.
    Flops(f64),
}

struct Row {
    kernel: &'static str,
    shape: String,
    median_ms: f64,
    work: Work,
}

struct Bench {
    device: Device,
    shrink: usize,
}

impl Bench {
    fn randn(&self, shape: &[usize], seed: u64) -> Result<Tensor> {
        Tensor::randn(shape, 1.0, seed, self.device)
    }

    /// Median milliseconds of `work` over `RUNS` warm runs.
    fn time(&self, work: impl FnMut() -> Result<()>) -> Result<f64> {
        Ok(median(&time_runs(self.device, WARMUP, RUNS, work)?))
    }

    /// Times `work` and appends its row, echoing it so a long run shows progress.
    fn row(
        &self,
        rows: &mut Vec<Row>,
        kernel: &'static str,
        shape: String,
        work: Work,
        f: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let median_ms = self.time(f)?;
        eprintln!("  {kernel} {shape}: {median_ms:.4} ms");
        rows.push(Row {
            kernel,
            shape,
            median_ms,
            work,
        });
        Ok(())
    }

    /// Device-to-device copy of 256 MiB of f32 (4 MiB under emulation): the bandwidth ceiling, GB/s.
    fn copy_ceiling(&self, rows: &mut Vec<Row>) -> Result<f64> {
        let n = (256 << 20) / 4 / self.shrink;
        let x = self.randn(&[n], 100)?;
        let bytes = 2.0 * n as f64 * F32;
        self.row(
            rows,
            "copy (ceiling)",
            format!("{} MiB f32", (n * 4) >> 20),
            Work::Bytes(bytes),
            || backend::copy(&x).map(drop),
        )?;
        Ok(gb_per_s(bytes, rows.last().map_or(0.0, |r| r.median_ms)))
    }

    /// ResNet-20's first stage: x [128, 16, 32, 32], 3x3, stride 1, pad 1.
    fn im2col_col2im(&self, rows: &mut Vec<Row>) -> Result<()> {
        let g = ConvGeometry::new(
            [128 / self.shrink, 16, 32, 32],
            Window2d::square(3, 1, 1),
            true,
        )?;
        let shape = format!(
            "x {} 3x3 p1",
            dims(&[g.batch, g.in_channels, g.in_h, g.in_w])
        );
        let bytes = (g.input_len() + g.col_len()) as f64 * F32;
        let x = self.randn(&[g.batch, g.in_channels, g.in_h, g.in_w], 1)?;
        self.row(rows, "im2col", shape.clone(), Work::Bytes(bytes), || {
            backend::im2col(&x, &g).map(drop)
        })?;
        let col = self.randn(&[g.batch, g.col_rows(), g.col_cols()], 2)?;
        self.row(rows, "col2im", shape, Work::Bytes(bytes), || {
            backend::col2im(&col, &g).map(drop)
        })
    }

    /// A square product: 4096^3 on a GPU, 512^3 under emulation.
    fn gemm_square(&self, rows: &mut Vec<Row>) -> Result<()> {
        let s = if self.shrink > 1 { 512 } else { 4096 };
        let a = self.randn(&[s, s], 3)?;
        let b = self.randn(&[s, s], 4)?;
        let spec = GemmSpec::new(s, s, s);
        let flops = 2.0 * (s as f64).powi(3);
        self.row(
            rows,
            "gemm",
            format!("{s}x{s}x{s}"),
            Work::Flops(flops),
            || backend::gemm(&spec, 1.0, &a, &b, vec![s, s]).map(drop),
        )
    }

    /// The conv forward of the im2col shape as a batched product: W [16, 144] (shared) times each
    /// image's columns [144, 1024] into y [N, 16, 1024].
    fn gemm_conv(&self, rows: &mut Vec<Row>) -> Result<()> {
        let g = ConvGeometry::new(
            [128 / self.shrink, 16, 32, 32],
            Window2d::square(3, 1, 1),
            true,
        )?;
        let (m, n, k) = (16, g.col_cols(), g.col_rows());
        let w = self.randn(&[m, k], 5)?;
        let col = self.randn(&[g.batch, k, n], 6)?;
        let spec = GemmSpec::new(m, n, k).batched(g.batch, 0, k * n, m * n);
        let flops = 2.0 * (g.batch * m * n * k) as f64;
        self.row(
            rows,
            "gemm (conv, batched)",
            format!("{}x[{m}x{n}x{k}]", g.batch),
            Work::Flops(flops),
            || backend::gemm(&spec, 1.0, &w, &col, vec![g.batch, m, n]).map(drop),
        )
    }

    /// x [128, 64, 32, 32], 2x2 window, stride 2.
    fn maxpool(&self, rows: &mut Vec<Row>) -> Result<()> {
        let g = ConvGeometry::new(
            [128 / self.shrink, 64, 32, 32],
            Window2d::square(2, 2, 0),
            true,
        )?;
        let shape = format!(
            "x {} 2x2 s2",
            dims(&[g.batch, g.in_channels, g.in_h, g.in_w])
        );
        let input = g.input_len() as f64;
        let out = (g.batch * g.in_channels * g.out_h * g.out_w) as f64;
        let x = self.randn(&[g.batch, g.in_channels, g.in_h, g.in_w], 7)?;
        // Reads x; writes y and the argmax.
        self.row(
            rows,
            "maxpool_fwd",
            shape.clone(),
            Work::Bytes(input * F32 + out * (F32 + I32)),
            || backend::maxpool_fwd(&x, &g).map(drop),
        )?;
        let (_, argmax) = backend::maxpool_fwd(&x, &g)?;
        let dy = self.randn(&[g.batch, g.in_channels, g.out_h, g.out_w], 8)?;
        // Reads dy and the argmax; writes dx.
        self.row(
            rows,
            "maxpool_bwd",
            shape,
            Work::Bytes(out * (F32 + I32) + input * F32),
            || backend::maxpool_bwd(&dy, &argmax, &g).map(drop),
        )
    }

    /// 2^24 elements.
    fn relu(&self, rows: &mut Vec<Row>) -> Result<()> {
        let n = (1 << 24) / self.shrink;
        let x = self.randn(&[n], 9)?;
        let shape = format!("2^{} elements", n.trailing_zeros());
        // Reads x; writes y and the mask.
        self.row(
            rows,
            "relu_fwd",
            shape.clone(),
            Work::Bytes(n as f64 * (F32 + F32 + U8)),
            || backend::relu_fwd(&x).map(drop),
        )?;
        let (_, mask) = backend::relu_fwd(&x)?;
        let dy = self.randn(&[n], 10)?;
        // Reads dy and the mask; writes dx.
        self.row(
            rows,
            "relu_bwd",
            shape,
            Work::Bytes(n as f64 * (F32 + U8 + F32)),
            || backend::relu_bwd(&dy, &mask).map(drop),
        )
    }

    /// Logits [4096, 1000].
    fn softmax_xent(&self, rows: &mut Vec<Row>) -> Result<()> {
        let (r, k) = (4096 / self.shrink, 1000);
        let logits = self.randn(&[r, k], 11)?;
        let labels: Vec<i32> = (0..r).map(|i| ((i * 7919) % k) as i32).collect();
        let labels = Tensor::from_vec(labels, &[r], self.device)?;
        // Reads logits and labels; writes probs and one loss per row.
        let bytes = (r * k) as f64 * (F32 + F32) + r as f64 * (I32 + F32);
        self.row(
            rows,
            "softmax_xent_fwd",
            format!("{r}x{k}"),
            Work::Bytes(bytes),
            || backend::softmax_xent_fwd(&logits, &labels).map(drop),
        )
    }

    /// 2^24 elements to one.
    fn sum(&self, rows: &mut Vec<Row>) -> Result<()> {
        let n = (1 << 24) / self.shrink;
        let x = self.randn(&[n], 12)?;
        self.row(
            rows,
            "sum",
            format!("2^{} elements", n.trailing_zeros()),
            Work::Bytes(n as f64 * F32 + F32),
            || backend::sum(&x, 1.0).map(drop),
        )
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

fn header(bench: &Bench) -> Result<String> {
    let mut s = String::new();
    let commit =
        std::env::var("KILN_COMMIT").unwrap_or_else(|_| "unknown (KILN_COMMIT not set)".into());
    let _ = writeln!(s, "# kiln CUDA kernel benchmarks\n");
    let _ = writeln!(
        s,
        "- device: {} — {}",
        bench.device,
        describe(bench.device)?
    );
    let _ = writeln!(
        s,
        "- kernels: {} (PTX {})",
        if kiln::cuda::built_with_kernels() {
            "compiled by nvcc"
        } else {
            "no PTX (emulation only)"
        },
        kiln::cuda::ptx_arch()
    );
    let _ = writeln!(s, "- commit: {commit}");
    let _ = writeln!(s, "- date: {}", utc_now());
    let _ = writeln!(
        s,
        "- method: median of {RUNS} runs after {WARMUP} warm-up runs, {}",
        if bench.device == Device::CudaEmulated {
            "host clock"
        } else {
            "CUDA events on kiln's stream"
        }
    );
    if bench.shrink > 1 {
        let _ = writeln!(
            s,
            "- EMULATION: shapes shrunk {}x (square GEMM 512^3); these times are the CPU's, a smoke test only",
            bench.shrink
        );
    }
    let _ = writeln!(
        s,
        "- median ms: lower is better; achieved, fraction of ceiling: higher is better"
    );
    let _ = writeln!(
        s,
        "- achieved GB/s = (bytes read + written) / time; ceiling = device-to-device copy, 2·bytes / time; GEMM: TFLOP/s = 2·m·n·k / time, no ceiling yet (cuBLAS later)\n"
    );
    Ok(s)
}

fn table(rows: &[Row], ceiling_gb_s: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| kernel | shape | median ms (lower is better) | achieved (higher is better) | ceiling | fraction of ceiling (higher is better) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for r in rows {
        let (achieved, ceiling, fraction) = match r.work {
            Work::Bytes(b) => {
                let gb = gb_per_s(b, r.median_ms);
                (
                    format!("{} GB/s", sig3(gb)),
                    format!("{} GB/s (copy)", sig3(ceiling_gb_s)),
                    format!("{:.2}", gb / ceiling_gb_s),
                )
            }
            Work::Flops(f) => (
                format!("{} TFLOP/s", sig3(f / (r.median_ms * 1e-3) / 1e12)),
                "— (cuBLAS later)".to_string(),
                "—".to_string(),
            ),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.4} | {achieved} | {ceiling} | {fraction} |",
            r.kernel, r.shape, r.median_ms
        );
    }
    s
}

/// `x` with three significant digits (at least one decimal), so slow emulated rates don't print as 0.
fn sig3(x: f64) -> String {
    let decimals = if x > 0.0 && x.is_finite() {
        (2 - x.log10().floor() as i32).clamp(1, 9) as usize
    } else {
        1
    };
    format!("{x:.decimals$}")
}

/// Writes `text` to a temp file beside `path`, then renames it over `path`.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let io = |e: std::io::Error| Error::InvalidArgument {
        what: "KILN_BENCH_OUT",
        why: format!("{}: {e}", path.display()),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument {
            what: "KILN_BENCH_OUT",
            why: format!("{} names no file", path.display()),
        })?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC` (no date crate needed).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
