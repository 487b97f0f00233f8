//! The benchmark's report: the header naming the device, driver and commit, the Markdown tables
//! (kiln beside its ceiling and beside cuBLAS), the JSON lines bench/gpu_report.py reads, and the
//! atomic file writes.

use super::*;

pub(super) fn header(bench: &Bench) -> Result<String> {
    let mut s = String::new();
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
    let _ = writeln!(s, "- kernel policy (--kernels): {}", bench.policy);
    let _ = writeln!(s, "- commit: {}", commit());
    let _ = writeln!(s, "- date: {}", utc_now());
    let _ = writeln!(
        s,
        "- method: median of {} runs after {} warm-up runs, {}",
        bench.runs,
        bench.warmup,
        if bench.device == Device::CudaEmulated {
            "host clock"
        } else {
            "CUDA events on kiln's stream"
        }
    );
    if bench.shrink > 1 {
        let _ = writeln!(
            s,
            "- EMULATION: shapes shrunk {}x (square GEMMs 128^3 and 512^3); these times are the CPU's, a smoke test only",
            bench.shrink
        );
    }
    let _ = writeln!(
        s,
        "- median ms: lower is better; achieved, fraction of ceiling: higher is better"
    );
    let _ = writeln!(
        s,
        "- achieved GB/s = (bytes read + written) / time, ceiling = device-to-device copy, 2·bytes / time; \
         GEMM and conv layers: TFLOP/s = 2·m·n·k / time, ceiling = cuBLAS SGEMM 4096^3 in this run; \
         training steps: images/s\n"
    );
    Ok(s)
}

pub(super) fn commit() -> String {
    std::env::var("KILN_COMMIT").unwrap_or_else(|_| "unknown (KILN_COMMIT not set)".into())
}

pub(super) fn table(rows: &[Row], ceiling_gb_s: f64, matrix_tflops: Option<f64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| kernel | shape | median ms (lower is better) | achieved (higher is better) | ceiling | fraction of ceiling (higher is better) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for r in rows {
        let secs = r.median_ms * 1e-3;
        let (achieved, ceiling, fraction) = if r.work.images > 0.0 {
            (
                format!("{} images/s", sig3(r.work.images / secs)),
                "—".to_string(),
                "—".to_string(),
            )
        } else if r.work.flops > 0.0 {
            let tflops = r.work.flops / secs / 1e12;
            match matrix_tflops {
                Some(c) => (
                    format!("{} TFLOP/s", sig3(tflops)),
                    format!("{} TFLOP/s (cuBLAS)", sig3(c)),
                    format!("{:.2}", tflops / c),
                ),
                None => (
                    format!("{} TFLOP/s", sig3(tflops)),
                    "— (no cuBLAS)".to_string(),
                    "—".to_string(),
                ),
            }
        } else {
            let gb = gb_per_s(r.work.bytes, r.median_ms);
            (
                format!("{} GB/s", sig3(gb)),
                format!("{} GB/s (copy)", sig3(ceiling_gb_s)),
                format!("{:.2}", gb / ceiling_gb_s),
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.4} | {achieved} | {ceiling} | {fraction} |",
            r.kernel, r.shape, r.median_ms
        );
    }
    s
}

/// kiln's GEMMs beside cuBLAS's on the same inputs, or the line saying why cuBLAS did not run.
pub(super) fn versus(rows: &[Row], reference: &[ReferenceRow], note: &str) -> String {
    let mut s = String::new();
    if reference.is_empty() {
        let _ = writeln!(s, "\ncuBLAS reference: {note}");
        return s;
    }
    let _ = writeln!(s, "\nkiln vs {note}:\n");
    let _ = writeln!(
        s,
        "| GEMM | kiln ms | cuBLAS ms | kiln/cuBLAS time (lower is better) | kiln speed as a fraction of cuBLAS (higher is better) | rel. error kiln vs cuBLAS |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for r in reference {
        let Some(k) = rows
            .iter()
            .find(|k| k.source == "kiln" && k.workload == r.row.workload)
        else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.4} | {:.2} | {:.2} | {:.1e}{} |",
            r.row.shape,
            k.median_ms,
            r.row.median_ms,
            k.median_ms / r.row.median_ms,
            r.row.median_ms / k.median_ms,
            r.rel_err,
            if r.rel_err < 1e-5 {
                ""
            } else {
                " (over 1e-5: not plain f32 agreement)"
            }
        );
    }
    s
}

/// One JSON object per line: a `meta` line, each row, each failure, the ResNet-20 step's peak memory.
/// The run's description: device, commit, date, method, and what became of the cuBLAS comparison.
pub(super) fn meta_json(bench: &Bench, cublas: &str) -> serde_json::Value {
    json!({
        "source": "kiln",
        "workload": "meta",
        "device": bench.device.to_string(),
        "describe": describe(bench.device).unwrap_or_else(|e| e.to_string()),
        "emulated": bench.shrink > 1,
        "commit": commit(),
        "date": utc_now(),
        "warmup": bench.warmup,
        "runs": bench.runs,
        "cublas": cublas,
        "kernels": bench.policy.to_string(),
    })
}

/// One measurement as a JSON object (also what `KILN_BENCH_PROGRESS` gets as each row is taken).
pub(super) fn row_json(r: &Row, runs: usize) -> serde_json::Value {
    json!({
        "source": r.source,
        "workload": r.workload,
        "kernel": r.kernel,
        "shape": r.shape,
        "ms": r.median_ms,
        "runs": runs,
        "bytes": r.work.bytes,
        "flops": r.work.flops,
        "images": r.work.images,
    })
}

pub(super) fn json_lines(
    bench: &Bench,
    rows: &Rows,
    reference: &[ReferenceRow],
    note: &str,
    peak_bytes: Option<usize>,
) -> String {
    let mut lines = vec![meta_json(bench, note)];
    for r in &rows.list {
        let mut line = row_json(r, bench.runs);
        if let Some(rr) = reference
            .iter()
            .find(|rr| rr.row.source == r.source && rr.row.workload == r.workload)
        {
            line["rel_err_vs_kiln"] = json!(rr.rel_err);
        }
        lines.push(line);
    }
    for (what, why) in &rows.failed {
        lines.push(json!({ "source": "kiln", "workload": what, "error": why }));
    }
    if let Some(peak_bytes) = peak_bytes {
        lines.push(json!({
            "source": "kiln",
            "workload": format!("resnet20 train step b{} f32 peak memory", 128 / bench.shrink),
            "peak_bytes": peak_bytes,
            "note": "kiln pool peak over the warm-up and timed steps (live buffers rounded to size classes)",
        }));
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// `x` with three significant digits (at least one decimal), so slow emulated rates don't print as 0.
pub(super) fn sig3(x: f64) -> String {
    let decimals = if x > 0.0 && x.is_finite() {
        (2 - x.log10().floor() as i32).clamp(1, 9) as usize
    } else {
        1
    };
    format!("{x:.decimals$}")
}

/// Writes `text` to a temp file beside `path`, then renames it over `path`; `what` names the
/// setting in errors.
pub(super) fn write_atomically(what: &'static str, path: &Path, text: &str) -> Result<()> {
    let io = |e: std::io::Error| Error::InvalidArgument {
        what,
        why: format!("{}: {e}", path.display()),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument {
            what,
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

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`.
pub(super) fn utc_now() -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    format!("{} UTC", rfc3339[..16].replace('T', " "))
}
