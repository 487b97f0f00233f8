//! The ranks of this run: one process, or the MPI world a launcher started.

use std::sync::OnceLock;

use crate::core::error::{invalid, Result};

/// This process's place among the ranks, and the way to reach the others.
#[derive(Debug)]
pub struct World {
    rank: usize,
    size: usize,
    /// The rank among the ranks on this node (selects the GPU).
    local_rank: usize,
    mpi: bool,
}

static WORLD: OnceLock<World> = OnceLock::new();
const SINGLE: World = World {
    rank: 0,
    size: 1,
    local_rank: 0,
    mpi: false,
};

/// The process's world: what [`init`] started, else one rank of one.
pub fn world() -> &'static World {
    WORLD.get().unwrap_or(&SINGLE)
}

/// The world size a launcher announces in the environment (OpenMPI's `mpirun`, Slurm's `srun`
/// with PMI/PMIx, MPICH's Hydra), or `None` when no launcher started this process.
pub fn launcher_world_size() -> Option<usize> {
    const SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"];
    let from_size = SIZE_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok());
    let under_pmix = std::env::var_os("PMIX_RANK").is_some();
    from_size.or(under_pmix.then_some(0)) // 0: some launcher, size known only to MPI
}

impl World {
    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Rank 0: the one that writes the run's files.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// More than one rank.
    pub fn is_distributed(&self) -> bool {
        self.size > 1
    }

    pub(crate) fn uses_mpi(&self) -> bool {
        self.mpi
    }

    /// Ends every rank of the job (MPI_Abort) after printing `message` with this rank's number:
    /// a rank that failed must not leave the others waiting at a collective. One process exits.
    pub fn abort(&self, message: &str, code: i32) -> ! {
        self.say(message);
        super::collectives::abort(self, code)
    }

    /// Prints `kiln: rank R of N: message` on stderr in one write, so that the lines of ranks
    /// sharing a terminal (mpirun forwards them all) never interleave mid-line, as
    /// `eprintln!` (which writes the text and the newline separately) lets them.
    pub fn say(&self, message: &str) {
        use std::io::Write;
        let line = format!("kiln: rank {} of {}: {message}\n", self.rank, self.size);
        // Nothing useful can be done when stderr is gone.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// MPI for the length of a run: finalized when dropped.
#[must_use = "MPI is finalized when the session is dropped"]
pub struct Session {
    #[cfg(feature = "mpi")]
    universe: Option<mpi::environment::Universe>,
}

impl Session {
    /// On a failed rank of several: prints `message` and ends the job (see [`World::abort`]).
    /// With one rank it returns, and the caller reports the error as usual.
    pub fn abort_if_distributed(&self, message: &str) {
        if world().is_distributed() {
            world().abort(message, 1);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        #[cfg(feature = "mpi")]
        if let Some(universe) = self.universe.take() {
            super::watchdog::stop();
            drop(universe); // MPI_Finalize
        }
    }
}

/// Starts MPI when a launcher started this process (see [`launcher_world_size`]); otherwise (or
/// when called again) [`world`] stays what it was. Built without the `mpi` feature, a launch of
/// several ranks is refused: each would train alone and overwrite the others' files.
pub fn init() -> Result<Session> {
    let Some(announced) = launcher_world_size() else {
        return Ok(empty_session());
    };
    if WORLD.get().is_some() {
        return Ok(empty_session());
    }
    start_mpi(announced)
}

fn empty_session() -> Session {
    Session {
        #[cfg(feature = "mpi")]
        universe: None,
    }
}

#[cfg(not(feature = "mpi"))]
fn start_mpi(announced: usize) -> Result<Session> {
    if announced > 1 {
        return Err(invalid(
            "launch",
            format!(
                "a launcher started {announced} ranks, but this kiln was built without MPI: \
                 rebuild with `cargo build --release --features mpi` (needs libopenmpi-dev)"
            ),
        ));
    }
    Ok(empty_session())
}

#[cfg(feature = "mpi")]
fn start_mpi(_announced: usize) -> Result<Session> {
    use mpi::environment::Threading;
    use mpi::traits::Communicator;
    // The run's collectives are called from its pool thread and the watchdog's abort from
    // another: MPI must allow calls from any thread, one at a time (collectives.rs serializes).
    let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
        .ok_or_else(|| invalid("MPI", "MPI was already initialized in this process"))?;
    if threading < Threading::Serialized {
        return Err(invalid(
            "MPI",
            format!("the MPI library offers thread support {threading:?}; kiln needs Serialized"),
        ));
    }
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let local_rank = local_rank(&world);
    let _ = WORLD.set(World {
        rank,
        size,
        local_rank,
        mpi: true,
    });
    super::watchdog::start();
    Ok(Session {
        universe: Some(universe),
    })
}

/// This rank's position among the ranks that share its node (MPI_COMM_TYPE_SHARED).
#[cfg(feature = "mpi")]
fn local_rank(world: &mpi::topology::SimpleCommunicator) -> usize {
    use mpi::traits::Communicator;
    world
        .split_shared(world.rank())
        .rank()
        .try_into()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_launcher_the_world_is_one_rank() {
        if launcher_world_size().is_some() {
            return; // run under mpirun: the world is MPI's
        }
        let w = world();
        assert_eq!((w.rank(), w.size(), w.local_rank()), (0, 1, 0));
        assert!(w.is_root() && !w.is_distributed());
        let session = init().unwrap();
        session.abort_if_distributed("not reached");
        assert_eq!(world().size(), 1);
    }
}
