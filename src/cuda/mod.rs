//! The GPU side: one [`Gpu`] per opened device (a real CUDA device or the CPU emulation of the
//! kernels), its memory pool, buffers, copies and kernel launches, and one launcher file per
//! kernels/*.cu file.

pub(crate) mod activation;
pub(crate) mod cast;
#[cfg(feature = "cuda")]
mod context;
mod devices;
#[allow(unused_imports)]
pub(crate) mod dropout;
pub(crate) mod elementwise;
mod emulator;
pub(crate) mod gemm;
pub(crate) mod gemm_select;
pub(crate) mod gemm_tc;
pub(crate) mod gemm_wgmma;
pub(crate) mod graph;
pub(crate) mod im2col;
mod kernel_image;
mod launch;
pub mod layout_probe;
pub(crate) mod loss;
mod memory;
#[allow(unused_imports)]
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod params;
mod policy;
pub(crate) mod pool;
pub(crate) mod reduce;
#[allow(unused_imports)]
pub(crate) mod shape;
mod timing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use devices::{empty_cache, memory_stats, reset_peak_memory, synchronize};
pub use gemm_select::{
    select_gemm, Capabilities, FlatRows, GemmFormat, GemmKernel, GemmOperands, WgmmaKernel,
};
pub use graph::StepScalars;
pub(crate) use graph::{DeviceGraph, PrivatePool};
pub use memory::MemoryStats;
pub(crate) use memory::{size_class, Pool, RawBlock};
pub use policy::{kernel_policy, set_kernel_policy, with_kernel_policy, KernelPolicy};
pub use timing::{median, time_runs};

use crate::core::device::Device;
use crate::core::dtype::HostData;
use crate::core::error::{Error, Result};

pub use launch::{count_launches, kernel_names, launch_counts, LaunchConfig};
pub(crate) use launch::{elementwise_config, kernel_params, launch, KernelParams};

/// The generated table of embedded PTX and emulated entry points (see build.rs).
pub(crate) mod generated {
    /// Launch description shared with kernels/emulation.h (`KilnEmuLaunch`).
    #[repr(C)]
    pub struct EmuLaunch {
        pub grid: [u32; 3],
        pub block: [u32; 3],
        pub block_begin: u64,
        pub block_end: u64,
        pub shared_bytes: u32,
    }
    /// An emulated kernel: runs blocks `block_begin..block_end` of the launch.
    pub type EmuEntry = unsafe extern "C" fn(*const EmuLaunch, *const core::ffi::c_void);
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Whether kernel `op` has 16-bit storage twins in the generated kernel table (`op_bf16` and
/// `op_f16` beside `op_f32`: the `KILN_STORAGE_KERNELS` registrations and the hand-written ones):
/// the one table that says which primitives a device runs on bf16/f16 storage without widening.
pub fn has_16bit_kernels(op: &str) -> bool {
    static OPS: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    OPS.get_or_init(|| {
        let names: std::collections::HashSet<&str> =
            generated::KERNELS.iter().map(|k| k.0).collect();
        names
            .iter()
            .filter_map(|name| name.strip_suffix("_bf16"))
            .filter(|op| names.contains(format!("{op}_f16").as_str()))
            .collect()
    })
    .contains(op)
}

/// Whether nvcc compiled the kernels into this build.
pub fn built_with_kernels() -> bool {
    generated::BUILT_WITH_NVCC
}

/// The PTX target of the embedded kernels (the minimum GPU architecture).
pub fn ptx_arch() -> &'static str {
    generated::PTX_ARCH
}

/// Every PTX target among the embedded modules: [`ptx_arch`] and the architecture-specific ones
/// (`compute_90a`: the Hopper kernels, loaded on compute capability 9.0 alone). Empty without nvcc.
pub fn ptx_targets() -> Vec<&'static str> {
    sorted_unique(generated::MODULES.iter().map(|m| m.1))
}

/// Every architecture the embedded modules carry machine code for (`sm_80`, `sm_90`, `sm_90a`),
/// loaded instead of the PTX where it fits the GPU. Empty without nvcc or with `KILN_SASS=none`.
pub fn sass_targets() -> Vec<&'static str> {
    sorted_unique(
        generated::MODULES
            .iter()
            .flat_map(|m| m.3.iter().map(|s| s.0)),
    )
}

fn sorted_unique(names: impl Iterator<Item = &'static str>) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = names.collect();
    names.sort_unstable();
    names.dedup();
    names
}

enum Backend {
    #[cfg(feature = "cuda")]
    Real(context::RealGpu),
    Emulated,
}

/// An opened GPU (or its emulation): the execution backend, the memory pool and the kernel
/// policy its launches follow.
pub struct Gpu {
    device: Device,
    backend: Backend,
    capabilities: Capabilities,
    /// The policy outside any [`with_kernel_policy`] scope (see src/cuda/policy.rs).
    default_policy: Mutex<KernelPolicy>,
    pool: Mutex<Pool>,
    /// Set while a graph is warmed up or captured (see graph.rs).
    capture: Mutex<Option<graph::CaptureState>>,
}

/// The rules `cuTensorMapEncodeTiled` enforces for a 2-d 16-bit map with the 128-byte swizzle,
/// checked before encoding on both backends, so a map the driver would refuse is the same clear
/// error on a GPU and under emulation.
fn check_tensor_map(
    address: u64,
    dims: [u64; 2],
    stride_bytes: u64,
    boxes: [u32; 2],
) -> Result<()> {
    let why = if address % 16 != 0 {
        Some("the address is not 16-byte aligned")
    } else if dims.iter().any(|&d| d == 0 || d > 1 << 32) {
        Some("an extent is 0 or above 2^32")
    } else if stride_bytes % 16 != 0 || stride_bytes >= 1 << 40 || stride_bytes < dims[0] * 2 {
        Some("the row stride is not a multiple of 16 bytes below 2^40 covering a row")
    } else if boxes.iter().any(|&b| b == 0 || b > 256) || (boxes[0] * 2) % 16 != 0 {
        Some("a box side is 0, above 256, or its rows are not a multiple of 16 bytes")
    } else if boxes[0] * 2 > 128 {
        Some("box rows are wider than the 128-byte swizzle")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::InvalidArgument {
            what: "TMA tensor map",
            why: why.to_string(),
        }),
        None => Ok(()),
    }
}

/// Opens `device` once and returns the shared handle; later calls return the same one.
pub(crate) fn gpu(device: Device) -> Result<Arc<Gpu>> {
    static OPENED: OnceLock<Mutex<HashMap<Device, Arc<Gpu>>>> = OnceLock::new();
    let mut opened = OPENED
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Internal("device registry lock poisoned".into()))?;
    if let Some(g) = opened.get(&device) {
        return Ok(g.clone());
    }
    let backend = match device {
        Device::Cpu => {
            return Err(Error::Unsupported {
                op: "gpu",
                device,
                why: "the CPU has no GPU backend".into(),
            })
        }
        Device::CudaEmulated => Backend::Emulated,
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => Backend::Real(context::RealGpu::open(ordinal)?),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => {
            return Err(Error::CudaUnavailable(
                "kiln was built without the `cuda` feature".into(),
            ))
        }
    };
    let capabilities = match &backend {
        #[cfg(feature = "cuda")]
        Backend::Real(r) => Capabilities {
            wgmma: r.has_kernel("gemm_wgmma_bf16"),
        },
        Backend::Emulated => Capabilities::EMULATED,
    };
    let g = Arc::new(Gpu {
        device,
        backend,
        capabilities,
        default_policy: Mutex::new(KernelPolicy::DEFAULT),
        pool: Mutex::new(Pool::default()),
        capture: Mutex::new(None),
    });
    opened.insert(device, g.clone());
    Ok(g)
}

/// Number of CUDA GPUs kiln can use here; 0 without a driver, a GPU or embedded kernels.
/// Never panics (cudarc panics without libcuda, so the library is probed first).
pub fn usable_gpu_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        context::usable_gpu_count()
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

/// Why CUDA device `ordinal` can't be used, or `None` if it can. Used by tests to say why they skip.
pub fn cuda_unavailable_reason(ordinal: usize) -> Option<String> {
    gpu(Device::Cuda(ordinal)).err().map(|e| e.to_string())
}

/// Driver, device name and memory of a real GPU, for `kiln info` and benchmark reports.
pub fn describe(device: Device) -> Result<String> {
    let g = gpu(device)?;
    Ok(match &g.backend {
        #[cfg(feature = "cuda")]
        Backend::Real(r) => {
            let hopper = if r.has_kernel("gemm_wgmma_bf16") {
                "loaded"
            } else {
                "not loaded (they need compute capability 9.0)"
            };
            format!(
                "{}; Hopper kernels (wgmma, TMA): {hopper}; kernels loaded as {}",
                r.describe()?,
                r.kernel_images()
            )
        }
        Backend::Emulated => "CUDA kernels emulated on the CPU".to_string(),
    })
}

impl Gpu {
    pub fn device(&self) -> Device {
        self.device
    }

    /// What this context can run beyond the common kernels (the Hopper ones).
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// The policy this thread's launches here follow: the innermost [`with_kernel_policy`] scope
    /// for this device, else the context's default.
    pub fn kernel_policy(&self) -> KernelPolicy {
        policy::scoped_policy(self.device).unwrap_or_else(|| self.default_policy())
    }

    /// The policy outside any scope, for every thread (a poisoned lock still holds a whole value).
    pub fn default_policy(&self) -> KernelPolicy {
        *self
            .default_policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the policy outside any scope, for every thread: a long-lived choice (a CLI flag).
    pub fn set_default_policy(&self, policy: KernelPolicy) {
        *self
            .default_policy
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Whether kernel `name` can run here: every kernel under emulation; on a GPU, those whose
    /// module loaded (Hopper-only kernels load on compute capability 9.0 alone).
    pub(crate) fn has_kernel(&self, name: &str) -> bool {
        match &self.backend {
            #[cfg(feature = "cuda")]
            Backend::Real(r) => r.has_kernel(name),
            Backend::Emulated => true,
        }
    }

    /// A TMA descriptor of a 2-d 16-bit matrix, its arguments checked against the driver's rules
    /// (see `RealGpu::tensor_map_2d`); under emulation, the fields kernels/hopper.cuh's emulated TMA reads: address, inner and outer extents, row
    /// stride in bytes, box inner and outer.
    pub(crate) fn tensor_map_2d(
        &self,
        address: u64,
        dims: [u64; 2],
        stride_bytes: u64,
        boxes: [u32; 2],
        bf16: bool,
    ) -> Result<[u64; 16]> {
        check_tensor_map(address, dims, stride_bytes, boxes)?;
        match &self.backend {
            #[cfg(feature = "cuda")]
            Backend::Real(r) => r.tensor_map_2d(address, dims, stride_bytes, boxes, bf16),
            Backend::Emulated => {
                let mut map = [0u64; 16];
                let fields = [address, dims[0], dims[1], stride_bytes];
                map[..4].copy_from_slice(&fields);
                map[4] = u64::from(boxes[0]);
                map[5] = u64::from(boxes[1]);
                Ok(map)
            }
        }
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.pool.lock().map(|p| p.stats()).unwrap_or_default()
    }

    /// Returns the cached blocks to the driver, unless a graph is being captured (freeing memory
    /// on the capturing stream would become part of the graph).
    pub(crate) fn empty_cache(&self) {
        if self.capture_active() {
            return;
        }
        if let Ok(mut p) = self.pool.lock() {
            p.clear_cache();
        }
    }

    pub(crate) fn reset_peak(&self) {
        if let Ok(mut p) = self.pool.lock() {
            p.reset_peak();
        }
    }

    /// Waits until all queued work is done (a no-op under emulation, whose launches are synchronous).
    pub fn synchronize(&self) -> Result<()> {
        self.refuse_while_recording("waiting for the device")?;
        match &self.backend {
            #[cfg(feature = "cuda")]
            Backend::Real(r) => r.synchronize(),
            Backend::Emulated => Ok(()),
        }
    }

    /// An uninitialized buffer of `bytes`, from the cache when a block of its class is free.
    pub(crate) fn alloc(self: &Arc<Self>, bytes: usize) -> Result<GpuBuffer> {
        let class = size_class(bytes);
        if let Some((private, recording)) = self.private_pool()? {
            return self.alloc_private(private, recording, class, bytes);
        }
        let cached = self.lock_pool()?.take_cached(class);
        let (block, fresh) = match cached {
            Some(b) => (b, false),
            None => (self.alloc_fresh(class)?, true),
        };
        self.lock_pool()?.record_alloc(class, fresh);
        Ok(GpuBuffer {
            block: Some(block),
            class,
            bytes,
            gpu: self.clone(),
            home: None,
        })
    }

    /// A buffer from a graph's private pool. While recording, a block the warm-up step did not
    /// leave cached is an error: the capture would have to allocate inside the graph.
    fn alloc_private(
        self: &Arc<Self>,
        private: Arc<PrivatePool>,
        recording: bool,
        class: usize,
        bytes: usize,
    ) -> Result<GpuBuffer> {
        let block = match private.take_cached(class) {
            Some(b) => {
                self.lock_pool()?.record_request();
                b
            }
            None if recording => {
                return Err(Error::GraphCapture(format!(
                    "the captured step asked for a block of {class} bytes that its warm-up step did not use \
                     (the step's allocations must be the same every time)"
                )))
            }
            None => {
                let b = self.alloc_fresh(class)?;
                self.lock_pool()?.record_alloc(class, true);
                b
            }
        };
        Ok(GpuBuffer {
            block: Some(block),
            class,
            bytes,
            gpu: self.clone(),
            home: Some(private),
        })
    }

    fn alloc_fresh(&self, class: usize) -> Result<RawBlock> {
        let oom = || Error::OutOfMemory {
            device: self.device,
            bytes: class,
        };
        let first_try = self.alloc_raw(class);
        match first_try {
            Ok(b) => Ok(b),
            Err(_) => {
                // Give the cache back to the driver and try once more before failing.
                self.lock_pool()?.clear_cache();
                self.alloc_raw(class).map_err(|_| oom())
            }
        }
    }

    fn alloc_raw(&self, class: usize) -> Result<RawBlock> {
        match &self.backend {
            #[cfg(feature = "cuda")]
            Backend::Real(r) => r.alloc(class),
            Backend::Emulated => {
                memory::HostBlock::new(class)
                    .map(RawBlock::Host)
                    .ok_or(Error::OutOfMemory {
                        device: self.device,
                        bytes: class,
                    })
            }
        }
    }

    fn lock_pool(&self) -> Result<std::sync::MutexGuard<'_, Pool>> {
        self.pool
            .lock()
            .map_err(|_| Error::Internal("memory pool lock poisoned".into()))
    }

    /// Copies `src` into the start of `dst`.
    pub(crate) fn upload<T: Copy>(&self, src: &[T], dst: &mut GpuBuffer) -> Result<()> {
        self.refuse_while_recording("a copy from the host")?;
        let bytes = std::mem::size_of_val(src);
        debug_assert!(bytes <= dst.bytes);
        let block = dst.block_mut()?;
        match (&self.backend, block) {
            #[cfg(feature = "cuda")]
            (Backend::Real(r), RawBlock::Cuda { slice, .. }) => r.upload(as_bytes(src), slice),
            (Backend::Emulated, RawBlock::Host(h)) => {
                // SAFETY: the block holds at least `bytes` bytes and does not overlap `src`.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.as_ptr() as *const u8, h_ptr(h), bytes)
                };
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(Error::Internal("buffer belongs to another backend".into())),
        }
    }

    /// Copies host data of any element type into the start of `dst` (which must hold it).
    pub(crate) fn upload_host_data(&self, src: &HostData, dst: &mut GpuBuffer) -> Result<()> {
        match src {
            HostData::F32(v) => self.upload(v, dst),
            HostData::F64(v) => self.upload(v, dst),
            HostData::I32(v) => self.upload(v, dst),
            HostData::U8(v) => self.upload(v, dst),
            HostData::BF16(v) => self.upload(v, dst),
            HostData::F16(v) => self.upload(v, dst),
        }
    }

    /// Copies the first `dst.len()` elements of `src` to the host.
    pub(crate) fn download<T: Copy>(&self, src: &GpuBuffer, dst: &mut [T]) -> Result<()> {
        self.refuse_while_recording("a copy to the host")?;
        let bytes = std::mem::size_of_val(dst);
        debug_assert!(bytes <= src.bytes);
        match (&self.backend, src.block()?) {
            #[cfg(feature = "cuda")]
            (Backend::Real(r), RawBlock::Cuda { slice, .. }) => {
                r.download(slice, as_bytes_mut(dst))
            }
            (Backend::Emulated, RawBlock::Host(h)) => {
                // SAFETY: the block holds at least `bytes` bytes and does not overlap `dst`.
                unsafe {
                    std::ptr::copy_nonoverlapping(h_ptr(h), dst.as_mut_ptr() as *mut u8, bytes)
                };
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(Error::Internal("buffer belongs to another backend".into())),
        }
    }

    /// Copies `bytes` bytes between two buffers of this device.
    pub(crate) fn copy(&self, src: &GpuBuffer, dst: &mut GpuBuffer, bytes: usize) -> Result<()> {
        debug_assert!(bytes <= src.bytes && bytes <= dst.bytes);
        let from = src.address();
        let to = dst.address();
        match &self.backend {
            #[cfg(feature = "cuda")]
            Backend::Real(r) => {
                self.private_pool()?; // an error if another thread is capturing
                r.copy(from, to, bytes)
            }
            Backend::Emulated if self.record_copy(from, to, bytes)? => Ok(()),
            Backend::Emulated => {
                // SAFETY: two distinct live blocks each holding at least `bytes` bytes.
                unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, bytes) };
                Ok(())
            }
        }
    }
}

fn h_ptr(h: &memory::HostBlock) -> *mut u8 {
    memory::host_address(h) as *mut u8
}

#[cfg(feature = "cuda")]
fn as_bytes<T: Copy>(s: &[T]) -> &[u8] {
    // SAFETY: T is plain data (f32, f64, i32, u8); the byte view covers exactly the slice.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, std::mem::size_of_val(s)) }
}

#[cfg(feature = "cuda")]
fn as_bytes_mut<T: Copy>(s: &mut [T]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern is a valid f32/f64/i32/u8.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut u8, std::mem::size_of_val(s)) }
}

/// A block of device memory from a device's pool; returned to the pool when dropped.
pub struct GpuBuffer {
    block: Option<RawBlock>,
    class: usize,
    bytes: usize,
    gpu: Arc<Gpu>,
    /// The graph's private pool the block came from (and returns to), if any.
    home: Option<Arc<PrivatePool>>,
}

impl GpuBuffer {
    /// The address kernels use.
    pub(crate) fn address(&self) -> u64 {
        self.block.as_ref().map(|b| b.address()).unwrap_or(0)
    }

    pub(crate) fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The address of bytes `offset..offset + len` of this buffer, for a kernel that works on
    /// that part of it; an error when the range does not lie inside the buffer.
    pub(crate) fn address_of_range(&self, offset: usize, len: usize) -> Result<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= self.bytes => Ok(self.address() + offset as u64),
            _ => Err(Error::Driver(format!(
                "bytes {offset}..{offset}+{len} lie outside a buffer of {} bytes",
                self.bytes
            ))),
        }
    }

    fn block(&self) -> Result<&RawBlock> {
        self.block
            .as_ref()
            .ok_or_else(|| Error::Driver("buffer already released".into()))
    }

    fn block_mut(&mut self) -> Result<&mut RawBlock> {
        self.block
            .as_mut()
            .ok_or_else(|| Error::Driver("buffer already released".into()))
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            match &self.home {
                Some(private) => private.release(self.class, block),
                None => {
                    if let Ok(mut pool) = self.gpu.pool.lock() {
                        pool.release(self.class, block);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_tensor_map;

    #[test]
    fn emulated_tensor_maps_follow_the_drivers_rules() {
        let ok =
            |address, dims, stride, boxes| check_tensor_map(address, dims, stride, boxes).is_ok();
        // A K-major 300 x 72 bf16 operand, boxes of 64 k x 128 rows: fine.
        assert!(ok(4096, [72, 300], 144, [64, 128]));
        assert!(
            !ok(4104, [72, 300], 144, [64, 128]),
            "address not 16-byte aligned"
        );
        assert!(!ok(4096, [0, 300], 144, [64, 128]), "empty extent");
        assert!(
            !ok(4096, [72, 300], 136, [64, 128]),
            "stride not a multiple of 16"
        );
        assert!(
            !ok(4096, [72, 300], 128, [64, 128]),
            "stride shorter than a row"
        );
        assert!(!ok(4096, [72, 300], 144, [64, 512]), "box side above 256");
        assert!(
            !ok(4096, [72, 300], 144, [128, 64]),
            "box rows wider than the swizzle"
        );
        assert!(
            !ok(4096, [72, 300], 144, [4, 64]),
            "box rows not a multiple of 16 bytes"
        );
    }
}
