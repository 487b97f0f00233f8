//! cuBLAS through cudarc on its own handle, stream and buffers in the device's primary context
//! (the one kiln uses; kiln does not expose its context).

use std::sync::Arc;

use cudarc::cublas::sys::{self as blas_sys, cublasMath_t, cublasOperation_t};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{sys, CudaContext, CudaStream};
use kiln::GemmSpec;

pub struct Blas {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    version: i32,
    math_mode: u32,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Blas {
    /// Loads libcublas, makes a handle on the device's primary context and sets the default
    /// math mode (plain f32 SGEMM: no TF32 tensor cores).
    pub fn open(ordinal: usize) -> Result<Blas, String> {
        // SAFETY: only tries to dlopen libcublas by its usual names.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(format!(
                "libcublas was not found (looked for {}; add its folder to LD_LIBRARY_PATH, \
                 e.g. site-packages/nvidia/cu13/lib of a PyTorch install)",
                cudarc::get_lib_name_candidates("cublas")
                    .iter()
                    .filter(|n| n.starts_with("libcublas.so"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| err("CUDA context", e))?;
        // One stream, so cudarc's per-buffer event tracking is not needed.
        // SAFETY: no buffer of this context handle is used on another stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| err("cublasCreate", e))?;
        let handle = *blas.handle();
        // SAFETY: a live handle; the mode is a valid enum value.
        unsafe { blas_sys::cublasSetMathMode(handle, cublasMath_t::CUBLAS_DEFAULT_MATH) }
            .result()
            .map_err(|e| err("cublasSetMathMode", e))?;
        // Read back as an integer: the library may OR in flags the Rust enum has no value for.
        let mut math_mode: u32 = u32::MAX;
        // SAFETY: a live handle; cuBLAS writes one 32-bit enum through the pointer.
        unsafe { blas_sys::cublasGetMathMode(handle, (&mut math_mode as *mut u32).cast()) }
            .result()
            .map_err(|e| err("cublasGetMathMode", e))?;
        if math_mode & 0xf != cublasMath_t::CUBLAS_DEFAULT_MATH as u32 {
            return Err(format!(
                "cuBLAS math mode is {math_mode} after setting the default (0): SGEMM would not be plain f32"
            ));
        }
        let mut version = 0;
        // SAFETY: a live handle and a valid out-pointer.
        unsafe { blas_sys::cublasGetVersion_v2(handle, &mut version) }
            .result()
            .map_err(|e| err("cublasGetVersion", e))?;
        Ok(Blas {
            ctx,
            stream,
            blas,
            version,
            math_mode,
        })
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "cuBLAS {}.{}.{} (SGEMM, math mode {} = default: f32, no TF32), same process, CUDA events",
            self.version / 10_000,
            self.version / 100 % 100,
            self.version % 100,
            self.math_mode
        );
        for var in ["NVIDIA_TF32_OVERRIDE", "CUBLAS_EMULATE_SINGLE_PRECISION"] {
            if let Ok(v) = std::env::var(var) {
                s.push_str(&format!("; {var}={v}"));
            }
        }
        s
    }

    /// C = A·B for kiln's row-major `spec` (no transposes; batched with strides, 0 = shared),
    /// as the column-major product Cᵀ = Bᵀ·Aᵀ. Returns each timed run's milliseconds and C.
    pub fn sgemm(
        &self,
        spec: &GemmSpec,
        a: &[f32],
        b: &[f32],
        warmup: usize,
        runs: usize,
    ) -> Result<(Vec<f64>, Vec<f32>), String> {
        if spec.trans_a || spec.trans_b || spec.groups > 1 || spec.reduce_batch {
            return Err("only plain (batched) products are compared".into());
        }
        let (m, n, k, batch) = (spec.m, spec.n, spec.k, spec.batch.max(1));
        let span = |stride: usize, len: usize| stride * (batch - 1) + len;
        if a.len() < span(spec.stride_a, m * k) || b.len() < span(spec.stride_b, k * n) {
            return Err("operands shorter than the spec".into());
        }
        let c_len = span(spec.stride_c, m * n);
        let int = |v: usize| i32::try_from(v).map_err(|_| format!("{v} overflows a cuBLAS int"));
        let a_dev = self.stream.clone_htod(a).map_err(|e| err("CUDA", e))?;
        let b_dev = self.stream.clone_htod(b).map_err(|e| err("CUDA", e))?;
        let mut c_dev = self
            .stream
            .alloc_zeros::<f32>(c_len)
            .map_err(|e| err("CUDA", e))?;
        // Column-major: Cᵀ [n x m] = Bᵀ [n x k] · Aᵀ [k x m]; kiln's B is cuBLAS's first operand.
        let gemm = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_N,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: int(n)?,
            n: int(m)?,
            k: int(k)?,
            alpha: 1.0f32,
            lda: int(n)?,
            ldb: int(k)?,
            beta: 0.0f32,
            ldc: int(n)?,
        };
        let batched = StridedBatchedConfig {
            gemm,
            batch_size: int(batch)?,
            stride_a: spec.stride_b as i64,
            stride_b: spec.stride_a as i64,
            stride_c: spec.stride_c as i64,
        };
        let once = || -> Result<(), String> {
            // SAFETY: the buffers hold the extents checked above; the handle runs on `stream`,
            // where they were allocated and filled.
            unsafe {
                if batch == 1 {
                    self.blas.gemm(gemm, &b_dev, &a_dev, &mut c_dev)
                } else {
                    self.blas
                        .gemm_strided_batched(batched, &b_dev, &a_dev, &mut c_dev)
                }
            }
            .map_err(|e| format!("cublasSgemm: {e}"))
        };
        let times = self.timed(warmup, runs, once)?;
        let c = self.stream.clone_dtoh(&c_dev).map_err(|e| err("CUDA", e))?;
        self.ctx.check_err().map_err(|e| err("CUDA", e))?;
        Ok((times, c))
    }

    /// Each of `runs` calls of `once` after `warmup` untimed ones, timed with CUDA events on the
    /// handle's stream, in milliseconds.
    fn timed(
        &self,
        warmup: usize,
        runs: usize,
        mut once: impl FnMut() -> Result<(), String>,
    ) -> Result<Vec<f64>, String> {
        for _ in 0..warmup {
            once()?;
        }
        self.stream.synchronize().map_err(|e| err("CUDA", e))?;
        let mut times = Vec::with_capacity(runs);
        // Events created with `None` flags cannot time; ask for the default (timing) kind.
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        for _ in 0..runs {
            let start = self.ctx.new_event(flags).map_err(|e| err("CUDA", e))?;
            let end = self.ctx.new_event(flags).map_err(|e| err("CUDA", e))?;
            start.record(&self.stream).map_err(|e| err("CUDA", e))?;
            once()?;
            end.record(&self.stream).map_err(|e| err("CUDA", e))?;
            end.synchronize().map_err(|e| err("CUDA", e))?;
            times.push(start.elapsed_ms(&end).map_err(|e| err("CUDA", e))? as f64);
        }
        Ok(times)
    }

    /// C [m][n] (f32) = A [m][k] · B [n][k]ᵀ with A and B in bf16 (raw bits) and f32 accumulation
    /// (cublasGemmEx, compute type 32F, default algorithm: tensor cores), as the column-major
    /// Cᵀ [n x m] = B [n x k] · Aᵀ. Returns each timed run's milliseconds and C.
    pub fn gemm_bf16_nt(
        &self,
        (m, n, k): (usize, usize, usize),
        a: &[u16],
        b: &[u16],
        warmup: usize,
        runs: usize,
    ) -> Result<(Vec<f64>, Vec<f32>), String> {
        use cudarc::cublas::result::gemm_ex;
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        if a.len() < m * k || b.len() < n * k {
            return Err("operands shorter than the product".into());
        }
        let int = |v: usize| i32::try_from(v).map_err(|_| format!("{v} overflows a cuBLAS int"));
        let (mi, ni, ki) = (int(m)?, int(n)?, int(k)?);
        let a_dev = self.stream.clone_htod(a).map_err(|e| err("CUDA", e))?;
        let b_dev = self.stream.clone_htod(b).map_err(|e| err("CUDA", e))?;
        let mut c_dev = self
            .stream
            .alloc_zeros::<f32>(m * n)
            .map_err(|e| err("CUDA", e))?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let handle = *self.blas.handle();
        let once = || -> Result<(), String> {
            let (a_ptr, _a_sync) = a_dev.device_ptr(&self.stream);
            let (b_ptr, _b_sync) = b_dev.device_ptr(&self.stream);
            let (c_ptr, _c_sync) = c_dev.device_ptr_mut(&self.stream);
            // SAFETY: the buffers hold m·k, n·k and m·n elements of the named types on the
            // handle's stream; alpha and beta are f32 as compute type 32F requires.
            unsafe {
                gemm_ex(
                    handle,
                    cublasOperation_t::CUBLAS_OP_T,
                    cublasOperation_t::CUBLAS_OP_N,
                    ni,
                    mi,
                    ki,
                    (&alpha as *const f32).cast(),
                    b_ptr as *const std::ffi::c_void,
                    blas_sys::cudaDataType::CUDA_R_16BF,
                    ki,
                    a_ptr as *const std::ffi::c_void,
                    blas_sys::cudaDataType::CUDA_R_16BF,
                    ki,
                    (&beta as *const f32).cast(),
                    c_ptr as *mut std::ffi::c_void,
                    blas_sys::cudaDataType::CUDA_R_32F,
                    ni,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| format!("cublasGemmEx: {e}"))
        };
        let times = self.timed(warmup, runs, once)?;
        let c = self.stream.clone_dtoh(&c_dev).map_err(|e| err("CUDA", e))?;
        self.ctx.check_err().map_err(|e| err("CUDA", e))?;
        Ok((times, c))
    }
}
