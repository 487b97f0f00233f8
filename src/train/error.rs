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

    /// The threads the CPU work runs on could not be started.
    #[error("starting the CPU thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),

    /// Reading, splitting or batching the data failed (the message names the file or setting).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    #[error(transparent)]
    Kiln(#[from] crate::Error),
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
