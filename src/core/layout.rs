//! How kernels and their CPU twins see a tensor's elements for one op: the layouts both sides
//! index with, kept here so neither the CUDA launchers nor the CPU reference import the other.

/// A row-major tensor seen as `[outer][len][inner]` for a reduction along one axis: `len` is the
/// axis' size, `outer` the product of the sizes before it, `inner` of those after it. A row is the
/// `len` elements `(o, ·, i)`, `inner` apart in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    pub outer: usize,
    pub len: usize,
    pub inner: usize,
}

impl RowLayout {
    /// The layout of `axis` of `shape`; the caller checks `axis < shape.len()`.
    pub fn along(shape: &[usize], axis: usize) -> RowLayout {
        RowLayout {
            outer: shape[..axis].iter().product(),
            len: shape[axis],
            inner: shape[axis + 1..].iter().product(),
        }
    }

    pub fn rows(&self) -> usize {
        self.outer * self.inner
    }

    pub fn numel(&self) -> usize {
        self.outer * self.len * self.inner
    }
}

/// Maxout's view of its input `[batch][units·pieces][spatial]` (spatial = the product of the dims
/// after the channel axis, 1 for `[N, C]`) and output `[batch][units][spatial]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxoutLayout {
    pub batch: usize,
    pub units: usize,
    pub pieces: usize,
    pub spatial: usize,
}

impl MaxoutLayout {
    pub fn inputs(&self) -> usize {
        self.batch * self.units * self.pieces * self.spatial
    }

    pub fn outputs(&self) -> usize {
        self.batch * self.units * self.spatial
    }
}

/// An NCHW batch seen per channel: `batch` images of `channels` planes of `plane` = H·W values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLayout {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl ChannelLayout {
    /// Values per channel, M = N·H·W.
    pub fn count(&self) -> usize {
        self.batch * self.plane
    }

    /// Elements of the batch, N·C·H·W.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
