//! The training infrastructure's error type: file problems name the file, kiln errors pass through.

use std::path::PathBuf;

/// Everything that can go wrong while checkpointing, logging, plotting or guarding a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading, writing or renaming a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its contents are not what kiln expects (truncated, corrupt header, ...).
    #[error("{path}: {why}")]
    Format { path: PathBuf, why: String },

    /// An argument that cannot work (duplicate tensor names, an empty history to plot, ...).
    #[error("invalid {what}: {why}")]
    InvalidArgument { what: &'static str, why: String },

    /// Drawing a plot failed.
    #[error("plotting {path}: {why}")]
    Plot { path: PathBuf, why: String },

    /// The loss became NaN or infinite.
    #[error(
        "the loss is {loss} at step {step}: training diverged. Try a lower learning rate \
         (half or a tenth of it), a learning-rate warm-up, or check the inputs for NaN/inf"
    )]
    NonFiniteLoss { loss: f64, step: u64 },

    /// Another run holds the run directory's lock.
    #[error(
        "{dir} is in use by another kiln run ({holder}): two runs in one directory would mix \
         their results. Wait for that run to end or give this one another --out; if no kiln run \
         uses {dir}, delete {lock}", dir = .dir.display(), lock = .lock.display()
    )]
    RunDirLocked {
        dir: PathBuf,
        lock: PathBuf,
        holder: String,
    },

    /// A new run's directory holds another run's results.
    #[error(
        "{dir} holds another run's results ({found}): pass --resume to continue that run, \
         --overwrite to replace it, or give this run another --out", dir = .dir.display()
    )]
    RunDirHasResults { dir: PathBuf, found: String },

    /// `--resume` with a setting that differs from what the checkpoint was trained with.
    #[error(
        "{path} was trained {saved}, and this run asks for {given}: --resume continues a run \
         exactly as it was trained. Leave out {flag} (its value is read from the checkpoint), or \
         start a fresh run with --out NEW_DIR (or --overwrite to replace this one)",
        path = .path.display()
    )]
    ResumeMismatch {
        path: PathBuf,
        flag: String,
        /// How the checkpoint was trained, e.g. `with --lr 0.01` or `without --augment`.
        saved: String,
        /// What this run asks for, e.g. `--lr 0.1`.
        given: String,
    },

    /// A stop was requested ([`super::request_stop`], Ctrl-C): the run stopped at a step boundary.
    #[error("{}", interrupted_message(.dir, *.last_epoch))]
    Interrupted {
        dir: PathBuf,
        /// The last finished epoch (1-based, counted over restarts), whose state last.safetensors
        /// holds; `None` when no epoch finished.
        last_epoch: Option<usize>,
    },

    /// The threads the CPU work runs on could not be started.
    #[error("starting the CPU thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),

    /// Reading, splitting or batching the data failed (the message names the file or setting).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    #[error(transparent)]
    Kiln(#[from] crate::Error),
}

fn interrupted_message(dir: &std::path::Path, last_epoch: Option<usize>) -> String {
    let dir = dir.display();
    match last_epoch {
        Some(e) => format!(
            "interrupted: stopped at a step boundary; {dir}/last.safetensors holds the state after \
             epoch {e} (the epoch that was running is not kept and is run again on resume), \
             metrics.csv and the plots are in {dir}"
        ),
        None => {
            format!("interrupted before the first epoch ended: {dir} holds no checkpoint to resume")
        }
    }
}

impl TrainError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        TrainError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        TrainError::Format {
            path: path.into(),
            why: why.into(),
        }
    }

    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        TrainError::InvalidArgument {
            what,
            why: why.into(),
        }
    }
}
