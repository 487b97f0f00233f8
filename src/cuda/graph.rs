//! CUDA graphs: a stretch of device work (a whole training step) recorded once and replayed with
//! one launch, which removes the per-kernel launch cost that dominates small networks' steps.
//!
//! A graph fixes every kernel's parameters, so what it replays must find the same memory at the
//! same addresses and take its per-step values from device memory:
//! - **A private memory pool.** While a step is captured, and during the eager warm-up step before
//!   it, every buffer comes from a pool that belongs to the graph ([`PrivatePool`]): its blocks are
//!   never handed to other tensors while the graph exists, so a replay writes only memory that the
//!   graph owns, or the parameters and state it was captured with. The warm-up step sizes the pool:
//!   the captured step makes the same requests in the same order, so it finds every block cached.
//! - **Per-step values in device memory** ([`StepScalars`]): the learning rate, Adam's bias
//!   corrections and the dropout step. During capture the kernels that need them are given a
//!   pointer to them instead of values; the host rewrites them before each replay.
//! - **No host round trip inside the step.** Copies between host and device and waits for the
//!   device are errors while recording (they would break a real capture), on both backends.
//!
//! On a real GPU the stream is captured by the driver (`cuStreamBeginCapture`, relaxed mode). Under
//! emulation the launches and copies are recorded in order and replayed by the emulator, so the
//! same rules (and the tests of them) hold without a GPU.

use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use super::emulator;
use super::memory::{Pool, RawBlock};
use super::{Backend, Gpu, KernelParams, KernelPolicy, LaunchConfig};
use crate::core::error::{Error, Result};

/// The values of a training step that change from step to step, as kernels read them in a replayed
/// graph (mirrors `KilnStepScalars` in kernels/common.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepScalars {
    /// The training step (dropout masks).
    pub step: u64,
    /// SGD's and RMSprop's learning rate.
    pub lr: f32,
    /// Adam: lr / (1 − beta1^t).
    pub step_size: f32,
    /// Adam: sqrt(1 − beta2^t).
    pub bias_correction2_sqrt: f32,
    /// AdamW: 1 − lr·wd (1 for Adam).
    pub decay: f32,
}

/// Device memory reserved for one graph: blocks freed inside the captured work come back here, not
/// to the device's pool, and go back to the device's pool when the graph and every buffer from
/// here are gone.
pub(crate) struct PrivatePool {
    gpu: Arc<Gpu>,
    free: Mutex<Pool>,
}

impl PrivatePool {
    pub(crate) fn take_cached(&self, class: usize) -> Option<RawBlock> {
        self.free.lock().ok()?.take_cached(class)
    }

    pub(crate) fn release(&self, class: usize, block: RawBlock) {
        if let Ok(mut free) = self.free.lock() {
            free.release_unbooked(class, block);
        }
    }
}

impl Drop for PrivatePool {
    fn drop(&mut self) {
        let blocks = match self.free.get_mut() {
            Ok(free) => free.drain(),
            Err(_) => return,
        };
        if let Ok(mut pool) = self.gpu.pool.lock() {
            for (class, block) in blocks {
                pool.release(class, block);
            }
        }
    }
}

/// 128 bytes at the largest alignment a kernel parameter struct has (the TMA GEMM's tensor maps).
#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct ParamBlock([u8; 128]);

/// One op recorded under emulation.
enum Recorded {
    Launch {
        name: &'static str,
        cfg: LaunchConfig,
        /// The parameter struct's bytes, in blocks aligned as the emulated kernel reads them.
        params: Vec<ParamBlock>,
    },
    Copy {
        from: u64,
        to: u64,
        bytes: usize,
    },
}

/// What a device is doing with graphs right now (at most one capture at a time).
pub(crate) struct CaptureState {
    pool: Arc<PrivatePool>,
    thread: ThreadId,
    /// `None` in the eager warm-up step (work runs, memory comes from the private pool).
    recording: Option<Recording>,
}

struct Recording {
    scalars: u64,
    ops: Vec<Recorded>,
}

enum Exec {
    #[cfg(feature = "cuda")]
    Real(cudarc::driver::CudaGraph),
    Emulated(Vec<Recorded>),
}

/// A captured stretch of device work, replayed by [`DeviceGraph::replay`]. It keeps its private
/// pool alive, so the memory its kernels use stays reserved for it.
pub(crate) struct DeviceGraph {
    gpu: Arc<Gpu>,
    exec: Exec,
    /// The kernel policy in force on the capturing thread: the graph's kernels are the ones it
    /// chose, so replaying under another would silently keep the old choice.
    policy: KernelPolicy,
    _pool: Arc<PrivatePool>,
}

impl DeviceGraph {
    /// Queues the recorded work again (on the device's stream; synchronous under emulation). An
    /// error, and nothing queued, when this thread's kernel policy for the device is no longer the
    /// one the graph was captured under: capture again.
    pub(crate) fn replay(&self) -> Result<()> {
        let now = self.gpu.kernel_policy();
        if now != self.policy {
            return Err(capture_error(format!(
                "the graph was captured under kernel policy {} ({:?}) but the policy is now {}                  ({:?}); capture the step again",
                self.policy, self.policy, now, now
            )));
        }
        match &self.exec {
            #[cfg(feature = "cuda")]
            Exec::Real(graph) => Ok(graph.launch()?),
            Exec::Emulated(ops) => {
                for op in ops {
                    replay_emulated(op)?;
                }
                Ok(())
            }
        }
    }

    /// The number of kernel launches and copies replayed per replay (emulation only: the driver's
    /// graph is opaque).
    pub(crate) fn recorded_ops(&self) -> Option<usize> {
        match &self.exec {
            #[cfg(feature = "cuda")]
            Exec::Real(_) => None,
            Exec::Emulated(ops) => Some(ops.len()),
        }
    }

    pub(crate) fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The kernel policy the graph was captured under.
    pub(crate) fn policy(&self) -> KernelPolicy {
        self.policy
    }
}

fn replay_emulated(op: &Recorded) -> Result<()> {
    match op {
        // SAFETY: the blocks are a copy of the parameter struct the launcher built for `name`,
        // 128-byte aligned (as the most aligned struct needs); its addresses are the graph's own
        // blocks or checked tensors (see Copy below).
        Recorded::Launch { name, cfg, params } => unsafe {
            emulator::launch_raw(name, *cfg, params.as_ptr() as *const core::ffi::c_void)
        },
        Recorded::Copy { from, to, bytes } => {
            // SAFETY: both blocks were live and this large when recorded, and they still are: they
            // belong to the graph's private pool (kept alive by the graph) or to tensors whose
            // addresses the graph's owner checks before each replay.
            unsafe { std::ptr::copy_nonoverlapping(*from as *const u8, *to as *mut u8, *bytes) };
            Ok(())
        }
    }
}

/// Clears a device's capture state when the warm-up or the capture ends, even on an error.
struct ClearOnDrop<'a>(&'a Gpu);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.capture.lock() {
            *state = None;
        }
    }
}

/// Ends a real capture left open by a panic (the graph is discarded).
struct EndCaptureOnDrop<'a>(Option<&'a Gpu>);

impl Drop for EndCaptureOnDrop<'_> {
    fn drop(&mut self) {
        #[cfg(feature = "cuda")]
        if let Some(Gpu {
            backend: Backend::Real(r),
            ..
        }) = self.0
        {
            let _ = r.end_capture(false);
        }
    }
}

fn capture_error(why: impl Into<String>) -> Error {
    Error::GraphCapture(why.into())
}

impl Gpu {
    /// A new, empty private pool for one graph.
    pub(crate) fn new_private_pool(self: &Arc<Self>) -> Arc<PrivatePool> {
        Arc::new(PrivatePool {
            gpu: self.clone(),
            free: Mutex::new(Pool::default()),
        })
    }

    /// Runs `work` eagerly with this thread's allocations served from `pool` (a graph's warm-up).
    pub(crate) fn in_private_pool<R>(
        &self,
        pool: &Arc<PrivatePool>,
        work: impl FnOnce() -> R,
    ) -> Result<R> {
        self.enter(pool, None)?;
        let _clear = ClearOnDrop(self);
        Ok(work())
    }

    /// Records the device work `work` queues (which does not run) into a graph whose memory comes
    /// from `pool`; kernels that take per-step values read them from `scalars` (a device address
    /// holding a [`StepScalars`]). `work`'s own result comes back beside the graph.
    pub(crate) fn capture<R>(
        self: &Arc<Self>,
        pool: &Arc<PrivatePool>,
        scalars: u64,
        work: impl FnOnce() -> Result<R>,
    ) -> Result<(DeviceGraph, R)> {
        let policy = self.kernel_policy();
        self.enter(
            pool,
            Some(Recording {
                scalars,
                ops: Vec::new(),
            }),
        )?;
        let clear = ClearOnDrop(self);
        #[cfg(feature = "cuda")]
        if let Backend::Real(r) = &self.backend {
            r.begin_capture()?;
        }
        // Ends the driver's capture even if `work` panics, so the stream is usable afterwards.
        let mut open = EndCaptureOnDrop(Some(self));
        let result = work();
        open.0 = None;
        let ops = self.take_recording();
        let exec = match &self.backend {
            #[cfg(feature = "cuda")]
            Backend::Real(r) => r
                .end_capture(result.is_ok())
                .map_err(|e| capture_error(format!("ending the capture: {e}")))
                .map(|g| g.map(Exec::Real)),
            Backend::Emulated => Ok(Some(Exec::Emulated(ops))),
        };
        drop(clear);
        let value = result?;
        let exec = exec?.ok_or_else(|| capture_error("the driver returned no graph"))?;
        let graph = DeviceGraph {
            gpu: self.clone(),
            exec,
            policy,
            _pool: pool.clone(),
        };
        Ok((graph, value))
    }

    fn enter(&self, pool: &Arc<PrivatePool>, recording: Option<Recording>) -> Result<()> {
        let mut state = self
            .capture
            .lock()
            .map_err(|_| capture_error("capture state lock poisoned"))?;
        if state.is_some() {
            return Err(capture_error(
                "this device is already capturing a graph (one capture at a time)",
            ));
        }
        *state = Some(CaptureState {
            pool: pool.clone(),
            thread: std::thread::current().id(),
            recording,
        });
        Ok(())
    }

    fn take_recording(&self) -> Vec<Recorded> {
        let Ok(mut state) = self.capture.lock() else {
            return Vec::new();
        };
        state
            .as_mut()
            .and_then(|s| s.recording.as_mut())
            .map(|r| std::mem::take(&mut r.ops))
            .unwrap_or_default()
    }

    /// The private pool this thread allocates from, and whether a capture is recording.
    pub(crate) fn private_pool(&self) -> Result<Option<(Arc<PrivatePool>, bool)>> {
        let state = self
            .capture
            .lock()
            .map_err(|_| capture_error("capture state lock poisoned"))?;
        Ok(match &*state {
            Some(s) if s.thread == std::thread::current().id() => {
                Some((s.pool.clone(), s.recording.is_some()))
            }
            Some(s) if s.recording.is_some() => {
                return Err(capture_error(
                    "another thread is capturing a graph on this device",
                ))
            }
            _ => None,
        })
    }

    /// The device address of the step scalars while a graph is being recorded, else 0 (kernels
    /// then take their per-step values by value).
    pub(crate) fn step_scalars_address(&self) -> u64 {
        match self.capture.lock() {
            Ok(state) => match &*state {
                Some(CaptureState {
                    recording: Some(r),
                    thread,
                    ..
                }) if *thread == std::thread::current().id() => r.scalars,
                _ => 0,
            },
            Err(_) => 0,
        }
    }

    /// Whether a graph is being warmed up or recorded on this device.
    pub(crate) fn capture_active(&self) -> bool {
        self.capture.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    /// An error if a capture is recording: `what` (a copy to or from the host, a wait) would run
    /// now on the host, not at each replay.
    pub(crate) fn refuse_while_recording(&self, what: &str) -> Result<()> {
        let recording = self
            .capture
            .lock()
            .map(|s| s.as_ref().is_some_and(|c| c.recording.is_some()))
            .unwrap_or(false);
        if recording {
            return Err(capture_error(format!(
                "{what} inside a captured step: a graph can only hold device work (kernels and device-to-device copies)"
            )));
        }
        Ok(())
    }

    /// Under emulation while recording: stores the launch instead of running it (`true`).
    pub(crate) fn record_launch<P: KernelParams>(
        &self,
        name: &'static str,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<bool> {
        self.record(|| {
            let size = std::mem::size_of::<P>();
            let mut blocks = vec![ParamBlock([0; 128]); size.div_ceil(128)];
            // SAFETY: `blocks` holds at least `size` bytes, aligned as any parameter struct needs,
            // and does not overlap `params`; a raw copy of the struct (padding included) is what a
            // kernel launch passes too.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    params as *const P as *const u8,
                    blocks.as_mut_ptr() as *mut u8,
                    size,
                )
            };
            Recorded::Launch {
                name,
                cfg,
                params: blocks,
            }
        })
    }

    /// Under emulation while recording: stores the copy instead of doing it (`true`).
    pub(crate) fn record_copy(&self, from: u64, to: u64, bytes: usize) -> Result<bool> {
        self.record(|| Recorded::Copy { from, to, bytes })
    }

    fn record(&self, op: impl FnOnce() -> Recorded) -> Result<bool> {
        let mut state = self
            .capture
            .lock()
            .map_err(|_| capture_error("capture state lock poisoned"))?;
        let Some(CaptureState {
            recording: Some(recording),
            thread,
            ..
        }) = state.as_mut()
        else {
            return Ok(false);
        };
        if *thread != std::thread::current().id() {
            return Err(capture_error(
                "another thread is capturing a graph on this device",
            ));
        }
        recording.ops.push(op());
        Ok(true)
    }
}
