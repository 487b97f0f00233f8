//! The data pipeline's error type. Every message names the file (or setting) at fault and what
//! was expected, so a broken download or a wrong path can be fixed from the message alone.

use std::path::PathBuf;

/// Everything that can go wrong while reading, splitting or batching data. Bad files and bad
/// arguments are reported here, never by a panic.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Opening or reading a file failed (including a corrupt gzip stream).
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The gzip stream of a compressed file is corrupt or cut short.
    #[error("{}: corrupt or truncated gzip data: {source}", .path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not the IDX magic number that was expected.
    #[error("{}: {why} (magic number 0x{found:08x}, expected 0x{expected:08x})", .path.display())]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
        why: String,
    },

    /// The file is shorter or longer than its header says. Byte counts are of the IDX content
    /// (after gunzip for a `.gz` file).
    #[error("{}: {} file: expected {expected} bytes ({layout}), found {actual}{}",
        .path.display(),
        if .actual < .expected { "truncated" } else { "over-long" },
        if *.gzip { " after gunzip" } else { "" })]
    Length {
        path: PathBuf,
        expected: u64,
        actual: u64,
        layout: String,
        gzip: bool,
    },

    /// The dimensions in the header are not usable (zero, too large, or not what the caller
    /// needs, e.g. Fashion-MNIST images that are not 28×28).
    #[error("{}: bad dimensions {dims:?}: {why}", .path.display())]
    BadDims {
        path: PathBuf,
        dims: Vec<usize>,
        why: String,
    },

    /// One sample (record, image) of a file is wrong: a label out of range, a record cut short,
    /// an image of another size or with other channels than the rest.
    #[error("{}: sample {index}: {why}", .path.display())]
    Sample {
        path: PathBuf,
        index: usize,
        why: String,
    },

    /// A file or folder is not what its format needs: a corrupt image, an empty class folder, a
    /// class-names file with the wrong number of names.
    #[error("{}: {why}", .path.display())]
    BadFile { path: PathBuf, why: String },

    /// Two pieces of data that must agree do not (image and label counts, labels out of range).
    #[error("{what}: {why}")]
    Mismatch { what: String, why: String },

    /// The dataset directory could not be found; the message says how to get the data.
    #[error("{dataset} not found: {why}")]
    NotFound { dataset: &'static str, why: String },

    /// A bad argument to a data function (batch size 0, a validation fraction of 1.5, ...).
    #[error("invalid {what}: {why}")]
    InvalidArgument { what: &'static str, why: String },

    /// Building or uploading a batch tensor failed.
    #[error("{0}")]
    Tensor(Box<crate::Error>),

    /// The data loader's background thread stopped before sending every batch.
    #[error("the data loader's worker thread stopped: {0}")]
    Worker(String),
}

impl From<crate::Error> for DataError {
    fn from(e: crate::Error) -> Self {
        DataError::Tensor(Box::new(e))
    }
}

/// Shorthand for a [`DataError::InvalidArgument`].
pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> DataError {
    DataError::InvalidArgument {
        what,
        why: why.into(),
    }
}

/// Shorthand for a [`DataError::BadFile`].
pub(crate) fn bad_file(path: impl Into<PathBuf>, why: impl Into<String>) -> DataError {
    DataError::BadFile {
        path: path.into(),
        why: why.into(),
    }
}

/// Shorthand for a [`DataError::Io`] naming `path`.
pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}
