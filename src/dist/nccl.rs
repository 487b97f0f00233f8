//! Gradients all-reduced in device memory by NCCL (cudarc's `nccl` module, libnccl.so loaded at
//! run time), for a model on a CUDA device: one communicator per rank on its GPU, made once from
//! a unique id that rank 0 draws and MPI broadcasts; each bucket is one NCCL group of averaging
//! all-reduces queued on the stream kiln's kernels run on, so it waits for the backward pass's
//! kernels and the update's kernels wait for it, with no host copy and no synchronization.
//!
//! Every rank must take the same path (NCCL or the host), or they would wait at different
//! collectives: the ranks agree by an all-reduce of "NCCL usable here" before the first bucket.
//!
//! A queued bucket returns at once, so a rank that stops taking part would leave the others'
//! GPUs waiting with no MPI call to time: each bucket records a CUDA event, and the watchdog
//! ([`overdue`]) ends the job when the oldest has not completed within `KILN_DIST_TIMEOUT`, or
//! when NCCL reports an asynchronous error (a network failure).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::CudaEvent;
use cudarc::nccl::{result as nccl, sys};

use super::collectives::ReduceOp;
use super::in_flight::{Completion, InFlight};
use super::world::World;
use crate::backend::RawTensor;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Result};
use crate::tensor::Tensor;

/// This rank's communicator and the device it was made on.
struct Communicator {
    comm: sys::ncclComm_t,
    device: Device,
}

// SAFETY: an NCCL communicator may be used from any thread, one call at a time; the mutex in
// COMMUNICATOR serializes its calls.
unsafe impl Send for Communicator {}

/// Made on the first bucket; `None`: the ranks reduce through the host (no libnccl on some rank).
static COMMUNICATOR: OnceLock<Option<Mutex<Communicator>>> = OnceLock::new();

/// The buckets queued on the GPU and not yet seen complete, for the watchdog.
static IN_FLIGHT: Mutex<InFlight<CudaEvent>> = Mutex::new(InFlight::new());

impl Completion for CudaEvent {
    fn completed(&self) -> std::result::Result<bool, String> {
        self.context()
            .bind_to_thread()
            .and_then(|()| self.try_is_complete())
            .map_err(|e| format!("{e:?}"))
    }
}

/// Why the job must end, if it must: the oldest queued bucket failed or has waited more than
/// `limit`, or NCCL reports an asynchronous error. Called by the watchdog thread.
pub(super) fn overdue(limit: Duration) -> Option<String> {
    let late = IN_FLIGHT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(Instant::now(), limit);
    late.or_else(async_error)
}

/// NCCL's asynchronous error on this rank's communicator, when it has one (skipped while a
/// bucket is being queued: the watchdog asks again 200 ms later).
fn async_error() -> Option<String> {
    let comm = COMMUNICATOR.get()?.as_ref()?.try_lock().ok()?;
    let mut state = sys::ncclResult_t::ncclSuccess;
    // SAFETY: the communicator is initialized and held under its mutex; `state` is written.
    let asked = unsafe { sys::ncclCommGetAsyncError(comm.comm, &mut state) };
    match (asked, state) {
        (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclSuccess) => None,
        (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclInProgress) => None,
        (sys::ncclResult_t::ncclSuccess, failed) => Some(format!("NCCL reports {failed:?}")),
        (failed, _) => Some(format!("ncclCommGetAsyncError failed: {failed:?}")),
    }
}

fn nccl_error(what: &str, e: nccl::NcclError) -> crate::Error {
    invalid("NCCL", format!("{what}: {e:?}"))
}

/// Whether this process can load libnccl (checked before any NCCL call: cudarc's dynamic loading
/// panics on a missing library).
fn nccl_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { sys::is_culib_present() }
}

/// The gradients on one CUDA device, all f32: the NCCL path's input.
fn on_one_gpu(grads: &[&Tensor]) -> Option<Device> {
    let device = grads.first()?.device();
    let fits = |g: &&Tensor| g.device() == device && g.dtype() == DType::F32;
    (matches!(device, Device::Cuda(_)) && grads.iter().all(fits)).then_some(device)
}

/// Whether every rank can use NCCL for gradients on `device` (so all take the same path).
/// The notice that the host path is taken is printed for a model on a CUDA device only (on the
/// CPU the host path is the expected one).
fn every_rank_can(
    world: &World,
    device: Option<Device>,
    first_device: Option<Device>,
) -> Result<bool> {
    let mine = device.is_some() && nccl_present();
    let mut all = [mine as u8];
    world.all_reduce(&mut all, ReduceOp::Min)?;
    let on_cuda = device.is_some() || matches!(first_device, Some(Device::Cuda(_)));
    if all[0] == 0 && world.is_root() && on_cuda {
        let why = match (device, mine) {
            (None, _) => "the gradients are not all f32 on one CUDA device",
            (Some(_), false) => "libnccl.so could not be loaded",
            (Some(_), true) => "libnccl.so could not be loaded on another rank",
        };
        eprintln!("kiln: gradients are all-reduced through the host and MPI ({why})");
    }
    Ok(all[0] == 1)
}

/// Rank 0's NCCL unique id on every rank.
fn shared_id(world: &World) -> Result<sys::ncclUniqueId> {
    let mut bytes = [0u8; 128];
    if world.is_root() {
        let id = nccl::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
        for (b, c) in bytes.iter_mut().zip(id.internal) {
            *b = c as u8;
        }
    }
    world.broadcast(&mut bytes)?;
    let mut internal = [0 as std::ffi::c_char; 128];
    for (c, b) in internal.iter_mut().zip(bytes) {
        *c = b as std::ffi::c_char;
    }
    Ok(sys::ncclUniqueId { internal })
}

fn open(world: &World, device: Device) -> Result<Communicator> {
    let id = shared_id(world)?;
    // ncclCommInitRank binds the communicator to the current CUDA context: this device's.
    let gpu = crate::cuda::gpu(device)?;
    let stream = gpu
        .real_stream()
        .ok_or_else(|| invalid("NCCL", "not a real GPU"))?;
    stream.context().bind_to_thread()?;
    let mut comm = std::mem::MaybeUninit::uninit();
    let (size, rank) = (world.size() as i32, world.rank() as i32);
    // SAFETY: `comm` is written by NCCL before it is read; the id is the one every rank holds.
    unsafe { nccl::comm_init_rank(comm.as_mut_ptr(), size, id, rank) }
        .map_err(|e| nccl_error("ncclCommInitRank", e))?;
    Ok(Communicator {
        // SAFETY: initialized by the successful call above.
        comm: unsafe { comm.assume_init() },
        device,
    })
}

/// The communicator every rank agreed to use for gradients like `grads`, made on first use.
fn communicator(world: &World, grads: &[&Tensor]) -> Result<Option<&'static Mutex<Communicator>>> {
    if let Some(made) = COMMUNICATOR.get() {
        return Ok(made.as_ref());
    }
    let device = on_one_gpu(grads);
    let first_device = grads.first().map(|g| g.device());
    let made = match (every_rank_can(world, device, first_device)?, device) {
        (true, Some(device)) => {
            let made = open(world, device)?;
            if world.is_root() {
                eprintln!(
                    "kiln: gradients all-reduced by NCCL in device memory ({} rank(s), {device} on rank 0)",
                    world.size()
                );
            }
            Some(Mutex::new(made))
        }
        _ => None,
    };
    Ok(COMMUNICATOR.get_or_init(|| made).as_ref())
}

/// Whether the ranks reduce gradients like `grads` by NCCL (see [`communicator`]; the first
/// call is a collective every rank makes, before any bucket is launched).
pub(super) fn usable(world: &World, grads: &[&Tensor]) -> Result<bool> {
    Ok(communicator(world, grads)?.is_some())
}

/// One bucket's means, queued now as one NCCL group of averaging all-reduces on the stream
/// kiln's kernels run on: the call returns once they are queued (the GPU runs them behind the
/// backward kernels already queued and before the ones queued after), so backward goes on.
pub(super) fn launch_bucket(grads: &[&Tensor]) -> Result<Vec<Tensor>> {
    let comm = COMMUNICATOR
        .get()
        .and_then(Option::as_ref)
        .ok_or_else(|| crate::Error::Internal("an NCCL bucket before the communicator".into()))?;
    let comm = comm.lock().unwrap_or_else(|p| p.into_inner());
    if on_one_gpu(grads) != Some(comm.device) {
        return Err(invalid(
            "NCCL",
            format!(
                "the gradients left {}, the device NCCL was set up on",
                comm.device
            ),
        ));
    }
    let stream = crate::cuda::gpu(comm.device)?
        .real_stream()
        .ok_or_else(|| invalid("NCCL", "not a real GPU"))?;
    stream.context().bind_to_thread()?; // NCCL calls act on the thread's current device
    let mut means = Vec::with_capacity(grads.len());
    nccl::group_start().map_err(|e| nccl_error("ncclGroupStart", e))?;
    let mut queued = Ok(());
    for g in grads {
        let mean = RawTensor::zeros(g.shape(), DType::F32, comm.device)?;
        // SAFETY: both addresses are f32 buffers of numel elements on the communicator's
        // device; `mean` is this function's own; the call is queued on the stream that every
        // kernel reading `mean` later is queued on.
        let call = unsafe {
            nccl::all_reduce(
                g.device_address() as *const std::ffi::c_void,
                mean.device_address() as *mut std::ffi::c_void,
                g.numel(),
                sys::ncclDataType_t::ncclFloat32,
                sys::ncclRedOp_t::ncclAvg,
                comm.comm,
                stream.cu_stream() as sys::cudaStream_t,
            )
        };
        queued = queued.and(call.map(|_| ()));
        means.push(Tensor::from(mean));
    }
    let ended = nccl::group_end().map_err(|e| nccl_error("ncclGroupEnd", e));
    queued.map_err(|e| nccl_error("ncclAllReduce", e))?;
    ended?;
    let done = stream.record_event(None)?;
    IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()).push(
        "NCCL all-reduce",
        Instant::now(),
        done,
    );
    Ok(means)
}

/// What `kiln info` says about NCCL.
pub(super) fn support() -> &'static str {
    match nccl_present() {
        true => "NCCL compiled in (libnccl found: CUDA gradients are reduced in device memory)",
        false => "NCCL compiled in, libnccl not found (CUDA gradients go through the host)",
    }
}
