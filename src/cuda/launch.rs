//! One launch path for both backends: the same grid, block and parameter struct go to the GPU
//! (through cudarc) or to the emulated kernel (through the generated `kiln_emu_*` entry points).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::params::StorageFormat;
use super::{generated, Backend, Gpu};
use crate::core::error::{Error, Result};

/// Launches per kernel since the process started: one counter per kernel kiln builds, so a launch
/// costs a hash lookup and an atomic add, no lock.
fn launch_counters() -> &'static HashMap<&'static str, AtomicU64> {
    static COUNTERS: OnceLock<HashMap<&'static str, AtomicU64>> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        generated::KERNELS
            .iter()
            .map(|(name, _)| (*name, AtomicU64::new(0)))
            .collect()
    })
}

/// How many times each kernel was launched in this process, on every device (a CUDA graph's
/// kernels count once, when it is captured, not at each replay): which kernels a workload runs.
/// Kernels that never ran are left out.
pub fn launch_counts() -> BTreeMap<&'static str, u64> {
    launch_counters()
        .iter()
        .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
        .filter(|&(_, count)| count > 0)
        .collect()
}

fn count_launch(name: &'static str) {
    if let Some(count) = launch_counters().get(name) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    THREAD_COUNTS.with(|scopes| {
        for counts in scopes.borrow_mut().iter_mut() {
            *counts.entry(name).or_insert(0) += 1;
        }
    });
}

thread_local! {
    /// The launch counts of this thread's open [`count_launches`] scopes, innermost last.
    static THREAD_COUNTS: RefCell<Vec<BTreeMap<&'static str, u64>>> =
        const { RefCell::new(Vec::new()) };
}

/// Runs `f` and returns, with its result, how many times each kernel was launched by this thread
/// while it ran (a CUDA graph's kernels when it is captured, not at replays). Unlike differences
/// of [`launch_counts`], the work of other threads (tests running in parallel) is not counted,
/// so a test can say exactly which kernels its own products took.
pub fn count_launches<R>(f: impl FnOnce() -> R) -> (R, BTreeMap<&'static str, u64>) {
    struct Scope(usize);
    impl Drop for Scope {
        // Closes the scope also when `f` panics; the counts of a normal return are taken first.
        fn drop(&mut self) {
            THREAD_COUNTS.with(|s| s.borrow_mut().truncate(self.0));
        }
    }
    let depth = THREAD_COUNTS.with(|s| {
        let mut scopes = s.borrow_mut();
        scopes.push(BTreeMap::new());
        scopes.len() - 1
    });
    let scope = Scope(depth);
    let result = f();
    let counts = THREAD_COUNTS.with(|s| s.borrow_mut().get_mut(depth).map(std::mem::take));
    drop(scope);
    (result, counts.unwrap_or_default())
}

/// Names of every kernel kiln builds (for the GPU and for emulation).
pub fn kernel_names() -> Vec<&'static str> {
    generated::KERNELS.iter().map(|(name, _)| *name).collect()
}

/// Grid and block of a launch, and the bytes of dynamic shared memory per block (0 for every
/// kernel but those that declare `KILN_DYNAMIC_SHARED`; the others size theirs statically).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

/// Blocks of 256 threads for a grid-stride loop over `n` elements; the grid is capped because each
/// thread loops, and 1024 blocks of 256 fill any current GPU.
pub(crate) fn elementwise_config(n: usize) -> LaunchConfig {
    const THREADS: usize = 256;
    const MAX_BLOCKS: usize = 65_535;
    let blocks = n.div_ceil(THREADS).clamp(1, MAX_BLOCKS);
    LaunchConfig {
        grid: (blocks as u32, 1, 1),
        block: (THREADS as u32, 1, 1),
        shared_bytes: 0,
    }
}

/// A kernel's `#[repr(C)]` parameter struct, mirrored field by field in its .cu file.
///
/// # Safety
/// The type must be `#[repr(C)]`, contain only plain data (integers, floats, and device addresses as
/// `u64`), and match the C struct exactly.
#[cfg(feature = "cuda")]
pub(crate) unsafe trait KernelParams: cudarc::driver::DeviceRepr + Sync {}
/// See the `cuda` variant.
#[cfg(not(feature = "cuda"))]
pub(crate) unsafe trait KernelParams: Sync {}

/// Implements [`KernelParams`] (and cudarc's `DeviceRepr`) for parameter structs.
macro_rules! kernel_params {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: the struct is #[repr(C)] plain data mirrored in its .cu file.
        #[cfg(feature = "cuda")]
        unsafe impl cudarc::driver::DeviceRepr for $t {}
        // SAFETY: as above.
        unsafe impl $crate::cuda::KernelParams for $t {}
    )*};
}
pub(crate) use kernel_params;

/// A kernel, typed by the `#[repr(C)]` parameter struct it reads: [`launch`] takes the handle and
/// a `&P`, so a kernel cannot be launched with another kernel's parameters. build.rs generates one
/// constant per registered kernel (`cuda::kernels::RELU_FWD_F32`, from `KILN_EMULATE(relu_fwd_f32,
/// ReluFwdParams)` in kernels/activation.cu), whose `P` is the registration's struct.
pub(crate) struct Kernel<P> {
    name: &'static str,
    params: PhantomData<fn(&P)>,
}

impl<P: KernelParams> Kernel<P> {
    /// The handle of kernel `name`; only the generated constants call it.
    pub(crate) const fn new(name: &'static str) -> Kernel<P> {
        Kernel {
            name,
            params: PhantomData,
        }
    }
}

impl<P> Kernel<P> {
    /// The kernel's `extern "C"` name.
    pub(crate) const fn name(self) -> &'static str {
        self.name
    }
}

// Not derived: a derive would ask `P: Clone`.
impl<P> Clone for Kernel<P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P> Copy for Kernel<P> {}

impl<P> std::fmt::Debug for Kernel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernel({})", self.name)
    }
}

/// The three kernels of one storage-templated op (`KILN_STORAGE_KERNELS(op, Params)`:
/// `op_f32`, `op_bf16`, `op_f16`), all reading `P`.
pub(crate) struct StorageKernels<P> {
    f32: Kernel<P>,
    bf16: Kernel<P>,
    f16: Kernel<P>,
}

impl<P> StorageKernels<P> {
    pub(crate) const fn new(f32: Kernel<P>, bf16: Kernel<P>, f16: Kernel<P>) -> StorageKernels<P> {
        StorageKernels { f32, bf16, f16 }
    }

    /// The kernel for storage `s`.
    pub(crate) const fn of(&self, s: StorageFormat) -> Kernel<P> {
        match s {
            StorageFormat::F32 => self.f32,
            StorageFormat::Bf16 => self.bf16,
            StorageFormat::F16 => self.f16,
        }
    }
}

/// The largest grid.y and grid.z a CUDA launch accepts (grid.x goes to 2^31 − 1).
const MAX_GRID_YZ: u32 = 65_535;

/// Refuses a grid the driver would reject, with the kernel named, on both backends alike.
fn check_grid(name: &'static str, cfg: LaunchConfig) -> Result<()> {
    let (_, y, z) = cfg.grid;
    if y > MAX_GRID_YZ || z > MAX_GRID_YZ {
        return Err(Error::InvalidArgument {
            what: "launch grid",
            why: format!(
                "{name} would need {y} x {z} blocks in y and z; CUDA allows at most {MAX_GRID_YZ} each \
                 (a matrix product with more than 65535 row tiles: split it)"
            ),
        });
    }
    Ok(())
}

/// Runs (or queues) `kernel` over `cfg` with `params`, the struct it reads.
pub(crate) fn launch<P: KernelParams>(
    gpu: &Gpu,
    kernel: Kernel<P>,
    cfg: LaunchConfig,
    params: &P,
) -> Result<()> {
    let name = kernel.name();
    check_grid(name, cfg)?;
    count_launch(name);
    match &gpu.backend {
        #[cfg(feature = "cuda")]
        Backend::Real(r) => {
            gpu.private_pool()?; // an error if another thread is capturing (the driver records)
            r.launch(name, cfg, params)
        }
        Backend::Emulated if gpu.record_launch(name, cfg, params)? => Ok(()),
        Backend::Emulated => super::emulator::launch(name, cfg, params),
    }
}

#[cfg(test)]
mod tests {
    use super::count_launches;
    use crate::cuda::{generated, kernels};

    /// Every registered kernel has exactly one typed handle, and every handle names a registered
    /// kernel with an emulated entry point.
    #[test]
    fn one_handle_per_registered_kernel() {
        let mut handles: Vec<&str> = kernels::HANDLE_NAMES.to_vec();
        let mut registered: Vec<&str> = generated::KERNELS.iter().map(|k| k.0).collect();
        handles.sort_unstable();
        registered.sort_unstable();
        let before = handles.len();
        handles.dedup();
        assert_eq!(handles.len(), before, "a kernel has two handles");
        let before = registered.len();
        registered.dedup();
        assert_eq!(registered.len(), before, "a kernel is registered twice");
        assert_eq!(handles, registered);
        for name in handles {
            assert!(generated::emulated_entry(name).is_some(), "{name}");
        }
        // The storage groups hand out their own op's twins.
        use crate::cuda::params::StorageFormat;
        assert_eq!(
            kernels::BIAS_GRAD.of(StorageFormat::F32).name(),
            "bias_grad_f32"
        );
        assert_eq!(
            kernels::BIAS_GRAD.of(StorageFormat::Bf16).name(),
            "bias_grad_bf16"
        );
        assert_eq!(
            kernels::BIAS_GRAD.of(StorageFormat::F16).name(),
            "bias_grad_f16"
        );
    }
    use crate::core::shape::GemmSpec;
    use crate::{backend, Device, Tensor};

    /// One small f32 product on the emulated device: one `gemm_f32` launch.
    fn one_product() {
        let on = |t: Tensor| t.to_device(Device::CudaEmulated).unwrap();
        let a = on(Tensor::from_vec(vec![1.0f32; 4], &[4], Device::Cpu).unwrap());
        backend::gemm(&GemmSpec::new(2, 2, 2), 1.0, &a, &a, vec![4]).unwrap();
    }

    #[test]
    fn scopes_count_this_threads_launches_and_nest() {
        let ((), outer) = count_launches(|| {
            one_product();
            let ((), inner) = count_launches(one_product);
            assert_eq!(inner.get("gemm_f32"), Some(&1));
            // Another thread's launches are its own.
            std::thread::spawn(one_product).join().unwrap();
        });
        assert_eq!(outer.get("gemm_f32"), Some(&2), "{outer:?}");
        let ((), none) = count_launches(|| ());
        assert!(none.is_empty());
        let panicked = std::panic::catch_unwind(|| count_launches(|| panic!("inside a scope")));
        assert!(panicked.is_err());
        let ((), after) = count_launches(one_product);
        assert_eq!(
            after.get("gemm_f32"),
            Some(&1),
            "the panicked scope was closed"
        );
    }
}
