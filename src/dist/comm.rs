//! All-reduces that run while the caller goes on: one communication thread per process, fed by a
//! channel, runs them one after another in the order they were submitted.
//!
//! Why a thread and not MPI's immediate collectives (`MPI_Iallreduce`): OpenMPI, like most MPIs,
//! advances a non-blocking collective only inside MPI calls, so without a progress thread an
//! `Iallreduce` launched mid-backward would mostly run at the final wait. A thread sitting in a
//! blocking `MPI_Allreduce` makes progress while backward computes. MPI is initialized
//! `MPI_THREAD_SERIALIZED`: every MPI call, from this thread or another, takes the collectives'
//! one lock, so two never overlap. The order of collectives on the world communicator must be
//! the same on every rank: while anything submitted here is unfinished, the only collectives a
//! rank may start go through [`submit_all_reduce`] too (a caller that starts one
//! elsewhere must first wait for everything it submitted) (the queue keeps their order).

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock};

use super::collectives::{ReduceOp, Wire};
use super::world::World;
use crate::core::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// An all-reduce submitted to the communication thread; [`PendingReduce::wait`] gives its result.
pub(super) struct PendingReduce<T> {
    result: Receiver<Result<Vec<T>>>,
}

impl<T> PendingReduce<T> {
    /// Blocks until the all-reduce has completed on this rank.
    pub(super) fn wait(self) -> Result<Vec<T>> {
        self.result.recv().map_err(|_| {
            Error::Internal("the communication thread ended before an all-reduce completed".into())
        })?
    }
}

/// Combines `values` over the ranks on the communication thread (at once with one rank).
pub(super) fn submit_all_reduce<T: Wire + Send + 'static>(
    world: &'static World,
    mut values: Vec<T>,
    op: ReduceOp,
) -> Result<PendingReduce<T>> {
    let (send, result) = mpsc::channel();
    if !world.is_distributed() {
        let _ = send.send(Ok(values));
        return Ok(PendingReduce { result });
    }
    let job: Job = Box::new(move || {
        let reduced = world.all_reduce(&mut values, op).map(|_| values);
        let _ = send.send(reduced); // the submitter may have stopped waiting after an error
    });
    queue()?
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| Error::Internal("the communication thread has ended".into()))?;
    Ok(PendingReduce { result })
}

/// The communication thread's queue, started on first use.
fn queue() -> Result<&'static Mutex<Sender<Job>>> {
    static QUEUE: OnceLock<std::result::Result<Mutex<Sender<Job>>, String>> = OnceLock::new();
    let started = QUEUE.get_or_init(|| {
        let (send, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kiln-dist-comm".into())
            .spawn(move || jobs.into_iter().for_each(|job| job()))
            .map(|_| Mutex::new(send))
            .map_err(|e| e.to_string())
    });
    started
        .as_ref()
        .map_err(|e| Error::Internal(format!("no communication thread: {e}")))
}
