//! A real CUDA device through cudarc: probing without panics, the driver-version check, loading
//! the embedded PTX, allocation, copies and launches on one stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    result, sys, CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream,
    DevicePtr, DeviceRepr, LaunchConfig as CudarcLaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::generated;
use super::kernel_image::{self, LoadedImage};
use super::memory::RawBlock;
use super::LaunchConfig;
use crate::core::error::{Error, Result};

/// The CUDA version (as cuDriverGetVersion reports it) whose PTX the embedded kernels use:
/// nvcc 13.0 emits PTX ISA 9.0, which drivers older than CUDA 13.0 (driver 580) reject.
pub(crate) const REQUIRED_DRIVER_VERSION: i32 = 13000;

/// Whether libcuda can be loaded. cudarc panics on first use when it can't, so this comes first.
fn driver_library_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { sys::is_culib_present() }
}

fn driver_version() -> Result<i32> {
    let mut version = 0;
    // SAFETY: libcuda is present (checked by callers); the out-pointer is valid.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result()?;
    Ok(version)
}

fn version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Checks everything short of creating a context; `Ok(n)` is the number of GPUs.
fn probe() -> Result<usize> {
    if !driver_library_present() {
        return Err(Error::CudaUnavailable(
            "libcuda (the NVIDIA driver) was not found".into(),
        ));
    }
    result::init().map_err(|e| Error::CudaUnavailable(format!("cuInit failed: {e}")))?;
    let version = driver_version()?;
    if version < REQUIRED_DRIVER_VERSION {
        return Err(Error::DriverTooOld {
            found: version_string(version),
            required: version_string(REQUIRED_DRIVER_VERSION),
        });
    }
    if !generated::BUILT_WITH_NVCC {
        return Err(Error::NoKernels);
    }
    let count = result::device::get_count()
        .map_err(|e| Error::CudaUnavailable(format!("cuDeviceGetCount failed: {e}")))?;
    Ok(count.max(0) as usize)
}

pub(crate) fn usable_gpu_count() -> usize {
    probe().unwrap_or(0)
}

/// Dynamic shared memory a kernel may take without opting in (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_...).
const STATIC_SHARED_LIMIT: u32 = 48 * 1024;

pub(crate) struct RealGpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    /// The dynamic shared memory each kernel has been allowed beyond 48 KB (set once, not per
    /// launch: a driver call on every GEMM would sit on the hot path).
    shared_opt_in: Mutex<HashMap<&'static str, u32>>,
    /// Which image (machine code or PTX) each module was loaded from.
    images: Vec<(&'static str, LoadedImage)>,
    _modules: Vec<Arc<CudaModule>>,
}

#[cfg(feature = "nccl")]
impl super::Gpu {
    /// The stream this GPU's work runs on, for collectives that must queue behind its kernels
    /// (NCCL); `None` under the emulation.
    pub(crate) fn real_stream(&self) -> Option<Arc<CudaStream>> {
        match &self.backend {
            super::Backend::Real(real) => Some(real.stream.clone()),
            super::Backend::Emulated => None,
        }
    }
}

impl RealGpu {
    pub(crate) fn open(ordinal: usize) -> Result<RealGpu> {
        let count = probe()?;
        if ordinal >= count {
            return Err(Error::CudaUnavailable(format!(
                "no CUDA device {ordinal}: {count} device(s) present"
            )));
        }
        let ctx = CudaContext::new(ordinal)?;
        // kiln runs everything on one stream, so cudarc's per-buffer event tracking is not needed.
        // SAFETY: no buffer of this context is ever used on another stream.
        unsafe { ctx.disable_event_tracking() };
        // A stream of its own rather than the legacy default stream, which cannot be captured into a
        // CUDA graph.
        let stream = ctx.new_stream()?;
        let capability = ctx.compute_capability()?;
        let prefer_sass = kernel_image::prefer_sass()?;
        let mut modules = Vec::new();
        let mut images = Vec::new();
        let mut functions = HashMap::new();
        for (stem, arch, ptx, sass) in generated::MODULES {
            if !kernel_image::ptx_loads_on(arch, capability) {
                continue; // its kernels are absent: `has_kernel` says so, and callers fall back
            }
            let (module, image) =
                load_module(&ctx, stem, arch, ptx, sass, capability, prefer_sass)?;
            for (name, owner) in generated::KERNELS {
                if owner == stem {
                    functions.insert(*name, module.load_function(name)?);
                }
            }
            modules.push(module);
            images.push((*stem, image));
        }
        Ok(RealGpu {
            ctx,
            stream,
            functions,
            shared_opt_in: Mutex::new(HashMap::new()),
            images,
            _modules: modules,
        })
    }

    /// How the modules were loaded: machine code per architecture, or PTX through the JIT.
    pub(crate) fn kernel_images(&self) -> String {
        kernel_image::summary(&self.images)
    }

    /// The driver's TMA descriptor (`CUtensorMap`) of a 2-d 16-bit matrix at `address`:
    /// `dims` = (inner, outer) elements with rows `stride_bytes` apart, copied in boxes of `boxes`
    /// = (inner, outer) elements, 128-byte swizzled in shared memory, zeros past the edges.
    pub(crate) fn tensor_map_2d(
        &self,
        address: u64,
        dims: [u64; 2],
        stride_bytes: u64,
        boxes: [u32; 2],
        bf16: bool,
    ) -> Result<[u64; 16]> {
        use sys::{
            CUtensorMapDataType as Data, CUtensorMapFloatOOBfill as Fill,
            CUtensorMapInterleave as Interleave, CUtensorMapL2promotion as L2,
            CUtensorMapSwizzle as Swizzle,
        };
        let mut map = sys::CUtensorMap { opaque: [0; 16] };
        let strides = [stride_bytes];
        let element_strides = [1u32, 1];
        let data = if bf16 {
            Data::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
        } else {
            Data::CU_TENSOR_MAP_DATA_TYPE_FLOAT16
        };
        // SAFETY: every pointer is to a live local array of the length the rank (2) implies; the
        // driver only encodes the description and keeps no pointer.
        unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut map,
                data,
                2,
                address as *mut core::ffi::c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                element_strides.as_ptr(),
                Interleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                Swizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                L2::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                Fill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        }
        .result()?;
        Ok(map.opaque)
    }

    /// Lets kernel `name` take `bytes` of dynamic shared memory: more than 48 KB needs the kernel's
    /// consent, asked once per kernel and size.
    fn allow_shared(&self, name: &'static str, function: &CudaFunction, bytes: u32) -> Result<()> {
        let mut allowed = self
            .shared_opt_in
            .lock()
            .map_err(|_| Error::Internal("shared-memory opt-in table poisoned".into()))?;
        if allowed.get(name).is_some_and(|&b| b >= bytes) {
            return Ok(());
        }
        // Unlike a launch, setting an attribute does not make the context current on this thread.
        self.ctx.bind_to_thread()?;
        function.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )?;
        allowed.insert(name, bytes);
        Ok(())
    }

    /// Whether kernel `name` was loaded (a Hopper-only module is skipped on other GPUs).
    pub(crate) fn has_kernel(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    pub(crate) fn describe(&self) -> Result<String> {
        let (cc_major, cc_minor) = self.ctx.compute_capability()?;
        let (free, total) = self.ctx.mem_get_info()?;
        Ok(format!(
            "{} (compute capability {cc_major}.{cc_minor}), driver CUDA {}, {:.1} GiB free of {:.1} GiB",
            self.ctx.name()?,
            version_string(driver_version()?),
            free as f64 / (1u64 << 30) as f64,
            total as f64 / (1u64 << 30) as f64
        ))
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    pub(crate) fn alloc(&self, bytes: usize) -> Result<RawBlock> {
        // SAFETY: the memory is uninitialized; every kernel output is fully written before it is read.
        let slice = unsafe { self.stream.alloc::<u8>(bytes) }?;
        let ptr = slice.device_ptr(&self.stream).0;
        Ok(RawBlock::Cuda { slice, ptr })
    }

    pub(crate) fn upload(&self, src: &[u8], dst: &mut CudaSlice<u8>) -> Result<()> {
        let mut view = dst.slice_mut(0..src.len());
        self.stream.memcpy_htod(src, &mut view)?;
        Ok(())
    }

    pub(crate) fn download(&self, src: &CudaSlice<u8>, dst: &mut [u8]) -> Result<()> {
        let view = src.slice(0..dst.len());
        self.stream.memcpy_dtoh(&view, dst)?;
        self.stream.synchronize()?;
        Ok(())
    }

    pub(crate) fn copy(&self, from: u64, to: u64, bytes: usize) -> Result<()> {
        // SAFETY: both addresses are live blocks of this context holding at least `bytes` bytes.
        unsafe { result::memcpy_dtod_async(to, from, bytes, self.stream.cu_stream()) }?;
        Ok(())
    }

    /// Milliseconds `work` takes on the stream, between two timing events.
    pub(crate) fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        // Events created with `None` flags cannot time; ask for the default (timing) kind.
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags)?;
        let end = self.ctx.new_event(flags)?;
        start.record(&self.stream)?;
        work()?;
        end.record(&self.stream)?;
        end.synchronize()?;
        Ok(start.elapsed_ms(&end)? as f64)
    }

    /// Starts recording the stream into a graph. Relaxed mode: kiln's own calls on other streams or
    /// threads are refused by kiln itself (see graph.rs), and relaxed mode keeps the driver from
    /// failing unrelated calls such as a context query.
    pub(crate) fn begin_capture(&self) -> Result<()> {
        Ok(self
            .stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?)
    }

    /// Ends the recording. With `keep`, the graph is instantiated and uploaded (so the first replay
    /// pays no setup); without, it is destroyed (a capture whose work failed).
    pub(crate) fn end_capture(&self, keep: bool) -> Result<Option<CudaGraph>> {
        if !keep {
            // SAFETY: the stream is this context's own and is capturing; the graph handle the
            // driver returns is destroyed right here and never used again.
            unsafe {
                let graph = result::stream::end_capture(self.stream.cu_stream())?;
                if !graph.is_null() {
                    result::graph::destroy(graph)?;
                }
            }
            return Ok(None);
        }
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0))?;
        if let Some(g) = &graph {
            g.upload()?;
        }
        Ok(graph)
    }

    /// Queues `name` with its parameter struct passed by value.
    pub(crate) fn launch<P: DeviceRepr>(
        &self,
        name: &'static str,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<()> {
        let function = self
            .functions
            .get(name)
            .ok_or_else(|| Error::MissingKernel(name.to_string()))?;
        if cfg.shared_bytes > STATIC_SHARED_LIMIT {
            self.allow_shared(name, function, cfg.shared_bytes)?;
        }
        let cfg = CudarcLaunchConfig {
            grid_dim: cfg.grid,
            block_dim: cfg.block,
            shared_mem_bytes: cfg.shared_bytes,
        };
        let mut builder = self.stream.launch_builder(function);
        builder.arg(params);
        // SAFETY: `params` mirrors the kernel's C struct (see each launcher), every pointer in it is
        // a live block of this context sized for the launch, and the grid covers only valid work.
        unsafe { builder.launch(cfg) }?;
        Ok(())
    }
}

/// Module `stem` from its machine code for this device when there is one (and `prefer_sass`),
/// otherwise from its PTX; machine code the driver refuses falls back to the PTX, saying why.
fn load_module(
    ctx: &Arc<CudaContext>,
    stem: &'static str,
    arch: &'static str,
    ptx: &[u8],
    sass: &'static [(&'static str, &'static [u8])],
    capability: (i32, i32),
    prefer_sass: bool,
) -> Result<(Arc<CudaModule>, LoadedImage)> {
    let why = if !prefer_sass {
        format!("{}=ptx", kernel_image::KERNEL_IMAGE_VAR)
    } else if let Some((sass_arch, gz)) = kernel_image::best_sass(sass, capability) {
        let cubin = kernel_image::unpacked(stem, "cubin", gz)?;
        match ctx.load_module(Ptx::from_binary(cubin)) {
            Ok(module) => return Ok((module, LoadedImage::Sass(sass_arch))),
            Err(e) => format!("the driver refused its {sass_arch} machine code: {e}"),
        }
    } else {
        format!(
            "no machine code for compute capability {}.{}",
            capability.0, capability.1
        )
    };
    let text = String::from_utf8(kernel_image::unpacked(stem, "PTX", ptx)?)
        .map_err(|e| Error::Driver(format!("the embedded PTX of {stem} is not text: {e}")))?;
    let module = ctx.load_module(Ptx::from_src(text))?;
    Ok((module, LoadedImage::Ptx { target: arch, why }))
}
