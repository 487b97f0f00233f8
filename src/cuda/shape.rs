//! Launchers for kernels/shape.cu.

use super::params::to_i64;
use super::{elementwise_config, kernel_params, kernels, launch, Gpu, GpuBuffer};
use crate::core::error::Result;

/// Mirrors `ConcatFwdParams` in kernels/shape.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ConcatFwdParams {
    src: u64,
    dst: u64,
    total: i64,
    slab: i64,
    whole: i64,
    offset: i64,
}

/// Mirrors `ConcatBwdParams` in kernels/shape.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ConcatBwdParams {
    dy: u64,
    dx: u64,
    total: i64,
    slab: i64,
    whole: i64,
    offset: i64,
}

kernel_params!(ConcatFwdParams, ConcatBwdParams);

/// Where one part sits in a concatenation viewed as [outer][whole]: `outer` rows, the part's
/// `slab` elements per row, starting at `offset` in each row of `whole` elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slab {
    pub outer: usize,
    pub slab: usize,
    pub whole: usize,
    pub offset: usize,
}

impl Slab {
    fn lens(&self) -> Result<(usize, i64, i64, i64, i64)> {
        let total = self.outer * self.slab;
        Ok((
            total,
            to_i64("concat length", total)?,
            to_i64("concat slab", self.slab)?,
            to_i64("concat row", self.whole)?,
            to_i64("concat offset", self.offset)?,
        ))
    }
}

/// dst[o][offset + r] = src[o][r] for every row o and r < slab. Nothing to do for an empty part.
pub(crate) fn concat_fwd(gpu: &Gpu, src: &GpuBuffer, dst: &mut GpuBuffer, at: Slab) -> Result<()> {
    let (n, total, slab, whole, offset) = at.lens()?;
    if n == 0 {
        return Ok(());
    }
    let params = ConcatFwdParams {
        src: src.address(),
        dst: dst.address(),
        total,
        slab,
        whole,
        offset,
    };
    launch(gpu, kernels::CONCAT_FWD_F32, elementwise_config(n), &params)
}

/// dx[o][r] = dy[o][offset + r]: the part's slice of a concatenation. Nothing to do when empty.
pub(crate) fn concat_bwd(gpu: &Gpu, dy: &GpuBuffer, dx: &mut GpuBuffer, at: Slab) -> Result<()> {
    let (n, total, slab, whole, offset) = at.lens()?;
    if n == 0 {
        return Ok(());
    }
    let params = ConcatBwdParams {
        dy: dy.address(),
        dx: dx.address(),
        total,
        slab,
        whole,
        offset,
    };
    launch(gpu, kernels::CONCAT_BWD_F32, elementwise_config(n), &params)
}
