//! Shape primitives: concatenation along an axis and its inverse, the slice `narrow`.

use super::primitive::{run, HostFloat, OnGpu, Op, Primitive};
use super::storage::in_storage_list;
use super::RawTensor;
use super::{common_device, gpu_f32, gpu_output, host_output, with_float};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{invalid, Error, Result};
use crate::cpu;
use crate::cuda::{self, shape::Slab, GpuBuffer};

/// `shape` viewed around `axis` as (outer, inner): the products of the dims before and after it.
fn outer_inner(shape: &[usize], axis: usize) -> (usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis + 1..].iter().product(),
    )
}

fn check_axis(op: &'static str, shape: &[usize], axis: usize) -> Result<()> {
    if axis >= shape.len() {
        return Err(invalid(
            "axis",
            format!("{op}: axis {axis} is out of range for shape {shape:?}"),
        ));
    }
    Ok(())
}

/// The shape of the concatenation of `inputs` along `axis`, after checking that there is at least
/// one input, that all share a device and a dtype, and that their shapes differ at most along `axis`.
pub fn concat_shape(inputs: &[&RawTensor], axis: usize) -> Result<Vec<usize>> {
    const OP: &str = "concat";
    let Some(first) = inputs.first() else {
        return Err(invalid("concat inputs", "needs at least one tensor"));
    };
    common_device(OP, inputs)?;
    check_axis(OP, first.shape(), axis)?;
    let mut shape = first.shape().to_vec();
    for (i, t) in inputs.iter().enumerate().skip(1) {
        t.expect_dtype(OP, first.dtype())?;
        let same_elsewhere = t.shape().len() == shape.len()
            && t.shape()
                .iter()
                .zip(&shape)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !same_elsewhere {
            return Err(invalid(
                "concat shapes",
                format!(
                    "input {i} has shape {:?} but input 0 has {:?}: only axis {axis} may differ",
                    t.shape(),
                    first.shape()
                ),
            ));
        }
        shape[axis] += t.shape()[axis];
    }
    Ok(shape)
}

/// The tensors joined along `axis` (every other dim equal; see [`concat_shape`]). Inputs may be
/// empty along `axis`.
pub fn concat<T: AsRef<RawTensor>>(inputs: &[&T], axis: usize) -> Result<RawTensor> {
    let inputs: Vec<&RawTensor> = inputs.iter().map(|t| (*t).as_ref()).collect();
    concat_raw(&inputs, axis)
}

fn concat_raw(inputs: &[&RawTensor], axis: usize) -> Result<RawTensor> {
    const OP: &str = "concat";
    let shape = concat_shape(inputs, axis)?;
    // 16-bit tensors are copied through f32, which holds their values exactly.
    in_storage_list(&["concat_fwd"], inputs, |inputs| {
        let (outer, inner) = outer_inner(&shape, axis);
        let whole = shape[axis] * inner;
        // Each part's slab per outer row and where it starts in the row of the output.
        let mut offset = 0;
        let slabs: Vec<Slab> = inputs
            .iter()
            .map(|t| {
                let slab = t.shape()[axis] * inner;
                offset += slab;
                Slab {
                    outer,
                    slab,
                    whole,
                    offset: offset - slab,
                }
            })
            .collect();
        match inputs[0].device() {
            Device::Cpu => with_float!(OP, inputs[0], |T| {
                let parts = inputs
                    .iter()
                    .map(|t| t.host_slice::<T>(OP))
                    .collect::<Result<Vec<_>>>()?;
                Ok(host_output::<T>(shape, |y| {
                    for (part, at) in parts.iter().zip(&slabs) {
                        cpu::shape::concat_fwd(part, y, at.slab, at.whole, at.offset);
                    }
                }))
            }),
            _ => {
                let parts = inputs
                    .iter()
                    .map(|t| gpu_f32(OP, t))
                    .collect::<Result<Vec<_>>>()?;
                let gpu = parts[0].0.clone();
                gpu_output(&gpu, shape, DType::F32, |y| {
                    for ((_, part), at) in parts.iter().zip(&slabs) {
                        cuda::shape::concat_fwd(&gpu, part, y, *at)?;
                    }
                    Ok(())
                })
            }
        }
    })
}

/// The slice `start..start + len` of `x` along `axis` (a copy): one part of a concatenation, so
/// concat's backward is built on it.
pub fn narrow(x: &RawTensor, axis: usize, start: usize, len: usize) -> Result<RawTensor> {
    check_axis("narrow", x.shape(), axis)?;
    let dim = x.shape()[axis];
    if start.checked_add(len).is_none_or(|end| end > dim) {
        return Err(invalid(
            "narrow range",
            format!(
                "{start}..{start}+{len} is outside axis {axis} of shape {:?}",
                x.shape()
            ),
        ));
    }
    let (outer, inner) = outer_inner(x.shape(), axis);
    let at = Slab {
        outer,
        slab: len * inner,
        whole: dim * inner,
        offset: start * inner,
    };
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    run(&Narrow(at, shape), [x])
}

/// Where the slice lies in each outer row of x, and its shape.
struct Narrow(Slab, Vec<usize>);

impl Primitive<1> for Narrow {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("narrow", &["concat_bwd"])
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        let Narrow(at, shape) = self;
        Ok(host_output::<T>(shape.clone(), |y| {
            cpu::shape::concat_bwd(x, y, at.slab, at.whole, at.offset)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let Narrow(at, shape) = self;
        on.output(shape.clone(), |y| {
            cuda::shape::concat_bwd(on.gpu, x, y, *at)
        })
    }
}
