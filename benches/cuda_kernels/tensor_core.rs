//! The tensor-core GEMM (kernels/gemm_tc.cu) on bf16 inputs with f32 accumulation and output,
//! beside cuBLAS's bf16 GemmEx (compute type 32F, f32 output) on the same inputs: the issue's
//! 4096^3 and 8192^3 products (128^3 and 256^3 under emulation), A [m][k] and
//! B [n][k] (both k-contiguous, the layout both kernels read fastest). The operands are converted
//! to bf16 once, before timing; only the GEMM is timed.

use kiln::backend;
use kiln::{DType, GemmSpec, Result};

use super::{Bench, ReferenceRow, Rows, Work};

/// One product both sides run: its size, the seeds of its operands and its report names.
pub(super) struct HalfProblem {
    size: usize,
    seeds: (u64, u64),
    workload: String,
    shape: String,
}

impl HalfProblem {
    fn spec(&self) -> GemmSpec {
        let s = self.size;
        GemmSpec::new(s, s, s).transpose_b()
    }
}

impl Bench {
    /// The bf16 operands of `p`, on the bench's device.
    fn half_operands(&self, p: &HalfProblem) -> Result<(backend::RawTensor, backend::RawTensor)> {
        let s = p.size;
        let (a, b) = (
            self.randn(&[s, s], p.seeds.0)?,
            self.randn(&[s, s], p.seeds.1)?,
        );
        let (a, b) = (
            backend::cast(&a, DType::BF16)?,
            backend::cast(&b, DType::BF16)?,
        );
        Ok((a, b))
    }

    /// kiln's tensor-core GEMM on the square bf16 products.
    pub(super) fn gemm_tensor_core(&self, rows: &mut Rows) -> Result<Vec<HalfProblem>> {
        let mut problems = Vec::new();
        for (i, s) in [4096, 8192].into_iter().enumerate() {
            let size = if self.shrink > 1 { s / 32 } else { s };
            let shape = format!("{size}x{size}x{size}");
            let p = HalfProblem {
                size,
                seeds: (40 + 10 * i as u64, 41 + 10 * i as u64),
                workload: format!("bf16 gemm {shape}"),
                shape,
            };
            let (a, b) = self.half_operands(&p)?;
            let spec = p.spec();
            let flops = 2.0 * (size as f64).powi(3);
            // Bytes: the two bf16 operands read and the f32 result written, once each.
            let bytes = (size * size) as f64 * (2.0 + 2.0 + 4.0);
            self.row(
                rows,
                "gemm bf16 tensor cores",
                (p.shape.clone(), p.workload.clone()),
                Work::flops(flops, bytes),
                || backend::gemm(&spec, 1.0, &a, &b, vec![size, size]).map(drop),
            )?;
            self.gemm_wgmma_rows(rows, &p, (&a, &b), Work::flops(flops, bytes))?;
            problems.push(p);
        }
        Ok(problems)
    }

    /// Whether the opt-in wgmma GEMM runs on the bench's device (compute capability 9.0, or
    /// emulation): a small bf16 product with it enabled counts as a wgmma launch.
    pub(super) fn wgmma_runs(&self) -> Result<bool> {
        let a = self.randn(&[64, 64], 7)?;
        let a = backend::cast(&a, DType::BF16)?;
        let (ran, launched) = kiln::cuda::count_launches(|| {
            self.under(
                |p| p.wgmma = true,
                || backend::gemm(&GemmSpec::new(64, 64, 64), 1.0, &a, &a, vec![64, 64]),
            )
        });
        ran?;
        Ok(wgmma_launches(&launched) > 0)
    }

    /// The opt-in Hopper kernels (kernels/gemm_wgmma.cu) on the same product, where they run
    /// (compute capability 9.0, or emulation): as " wgmma tma", " wgmma tma wide" (128x256 tiles)
    /// and " wgmma cp.async" rows, one per way of loading and tiling. Each result must agree with
    /// the mma.sync kernel's: all sum the same bf16 products in f32, in different orders.
    fn gemm_wgmma_rows(
        &self,
        rows: &mut Rows,
        p: &HalfProblem,
        (a, b): (&backend::RawTensor, &backend::RawTensor),
        work: Work,
    ) -> Result<()> {
        let spec = p.spec();
        let out = vec![p.size, p.size];
        // The reference: mma.sync, whatever `--kernels` chose.
        let mma_sync = self.under(
            |p| p.wgmma = false,
            || backend::gemm(&spec, 1.0, a, b, out.clone())?.to_vec::<f32>(),
        )?;
        let mut outcome = Ok(());
        for (tma, wide, loader, kernel) in [
            (true, false, "tma", "gemm bf16 wgmma tma"),
            (true, true, "tma wide", "gemm bf16 wgmma tma 128x256"),
            (false, false, "cp.async", "gemm bf16 wgmma cp.async"),
        ] {
            if wide && p.size <= 128 {
                continue; // wide tiles apply to products wider than 128 columns only
            }
            let loader_policy = |p: &mut kiln::cuda::KernelPolicy| {
                (p.wgmma, p.wgmma_tma, p.wgmma_wide) = (true, tma, wide)
            };
            let (c, launched) = kiln::cuda::count_launches(|| {
                self.under(loader_policy, || {
                    backend::gemm(&spec, 1.0, a, b, out.clone()).and_then(|c| c.to_vec())
                })
            });
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            if wgmma_launches(&launched) == 0 {
                eprintln!("  wgmma: not run on this device (not compute capability 9.0)");
                break;
            }
            let err = super::rel_err(&c, &mma_sync);
            eprintln!(
                "  wgmma ({loader}) vs mma.sync bf16 gemm {}: rel err {err:.1e}",
                p.shape
            );
            let workload = format!("{} wgmma {loader}", p.workload);
            if err > 1e-3 {
                let why = format!("differs from the mma.sync kernel's by {err:.1e} (relative)");
                let wrong = kiln::Error::InvalidArgument {
                    what: "wgmma result",
                    why,
                };
                rows.check::<()>(&workload, Err(wrong));
                continue;
            }
            let timed = self.under(loader_policy, || {
                self.row(rows, kernel, (p.shape.clone(), workload), work, || {
                    backend::gemm(&spec, 1.0, a, b, out.clone()).map(drop)
                })
            });
            if let Err(e) = timed {
                outcome = Err(e);
                break;
            }
        }
        outcome
    }

    /// cuBLAS bf16 GemmEx on each problem, on the same inputs as kiln's.
    #[cfg(feature = "bench-cublas")]
    pub(super) fn cublas_bf16(
        &self,
        problems: &[HalfProblem],
    ) -> Result<(Vec<ReferenceRow>, String)> {
        use super::{cublas, median, rel_err, Row};
        let kiln::Device::Cuda(ordinal) = self.device else {
            return Ok((Vec::new(), "not run: no real GPU (emulation)".into()));
        };
        let blas = match std::panic::catch_unwind(|| cublas::Blas::open(ordinal)) {
            Ok(Ok(blas)) => blas,
            Ok(Err(why)) => return Ok((Vec::new(), format!("not run: {why}"))),
            Err(_) => return Ok((Vec::new(), "not run: loading libcublas panicked".into())),
        };
        let mut out = Vec::new();
        for p in problems {
            let (a, b) = self.half_operands(p)?;
            let s = p.size;
            let kiln_c = backend::gemm(&p.spec(), 1.0, &a, &b, vec![s, s])?.to_vec::<f32>()?;
            let bits = |t: &backend::RawTensor| -> Result<Vec<u16>> {
                Ok(t.to_vec::<half::bf16>()?
                    .iter()
                    .map(|h| h.to_bits())
                    .collect())
            };
            let (a, b) = (bits(&a)?, bits(&b)?);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                blas.gemm_bf16_nt((s, s, s), &a, &b, self.warmup, self.runs)
            }));
            let (times, c) = match run {
                Ok(Ok(r)) => r,
                Ok(Err(why)) => return Ok((out, format!("stopped at {}: {why}", p.workload))),
                Err(_) => return Ok((out, format!("stopped at {}: panicked", p.workload))),
            };
            let median_ms = median(&times);
            let rel_err = rel_err(&kiln_c, &c);
            eprintln!(
                "  cuBLAS bf16 gemm {}: {median_ms:.4} ms (kiln vs cuBLAS rel err {rel_err:.1e})",
                p.shape
            );
            out.push(ReferenceRow {
                row: Row {
                    source: "cublas",
                    kernel: "cuBLAS bf16 GemmEx",
                    shape: p.shape.clone(),
                    workload: p.workload.clone(),
                    median_ms,
                    work: Work::flops(2.0 * (s as f64).powi(3), 0.0),
                },
                square: false,
                rel_err,
            });
        }
        Ok((
            out,
            "cuBLAS bf16 GemmEx (compute 32F, f32 output), same process, CUDA events".into(),
        ))
    }

    #[cfg(not(feature = "bench-cublas"))]
    pub(super) fn cublas_bf16(
        &self,
        _problems: &[HalfProblem],
    ) -> Result<(Vec<ReferenceRow>, String)> {
        Ok((
            Vec::new(),
            "not built (build the bench with --features bench-cublas)".into(),
        ))
    }
}

/// Launches of the wgmma kernels among `launched` (from `kiln::cuda::count_launches`).
fn wgmma_launches(launched: &std::collections::BTreeMap<&str, u64>) -> u64 {
    launched
        .iter()
        .filter(|(name, _)| name.starts_with("gemm_wgmma_"))
        .map(|(_, n)| n)
        .sum()
}
