//! Pooling primitives.

use super::input_shape;
use super::storage::{in_storage, Index};
use super::RawTensor;
use super::{common_device, gpu_f32, gpu_float, gpu_output, host_output, with_float};
use crate::core::device::Device;
use crate::core::dtype::{DType, Element};
use crate::core::error::{invalid, Error, Result};
use crate::core::shape::{as_nchw, numel, ConvGeometry};
use crate::cpu;
use crate::cuda;

/// Max pooling: (y [N,C,OH,OW], argmax i32 of the same shape).
pub fn maxpool_fwd(x: &RawTensor, g: &ConvGeometry) -> Result<(RawTensor, RawTensor)> {
    let (y, Index(argmax)) = in_storage(&["maxpool_fwd"], [x], |[x]| {
        x.expect_shape("max_pool2d", &input_shape(g))?;
        let shape = vec![g.batch, g.in_channels, g.out_h, g.out_w];
        match x.device() {
            Device::Cpu => with_float!("max_pool2d", x, |T| {
                let xs = x.host_slice::<T>("max_pool2d")?;
                let mut argmax = vec![0i32; numel(&shape)];
                let y = host_output::<T>(shape.clone(), |y| {
                    cpu::pool::maxpool_fwd(xs, g, y, &mut argmax)
                });
                let argmax = RawTensor::host(i32::wrap(argmax), shape, DType::I32);
                Ok((y, Index(argmax)))
            }),
            _ => {
                let (gpu, xb, s) = gpu_float("max_pool2d", x)?;
                let mut argmax = gpu.alloc(numel(&shape) * 4)?;
                let y = gpu_output(&gpu, shape.clone(), s.dtype(), |y| {
                    cuda::pool::maxpool_fwd(&gpu, s, xb, g, y, &mut argmax)
                })?;
                Ok((y, Index(RawTensor::from_gpu(argmax, shape, DType::I32))))
            }
        }
    })?;
    Ok((y, argmax))
}

/// Routes dy to the recorded argmax; dx has the input's shape.
pub fn maxpool_bwd(dy: &RawTensor, argmax: &RawTensor, g: &ConvGeometry) -> Result<RawTensor> {
    in_storage(&["maxpool_bwd"], [dy], |[dy]| {
        common_device("max_pool2d backward", &[dy, argmax])?;
        argmax.expect_dtype("max_pool2d backward", DType::I32)?;
        let out_shape = [g.batch, g.in_channels, g.out_h, g.out_w];
        dy.expect_shape("max_pool2d backward", &out_shape)?;
        argmax.expect_shape("max_pool2d backward", &out_shape)?;
        let shape = input_shape(g);
        match dy.device() {
            Device::Cpu => with_float!("max_pool2d backward", dy, |T| {
                let ds = dy.host_slice::<T>("max_pool2d backward")?;
                let am = argmax.host_slice::<i32>("max_pool2d backward")?;
                Ok(host_output::<T>(shape, |dx| {
                    cpu::pool::maxpool_bwd(ds, am, g, dx)
                }))
            }),
            _ => {
                let (gpu, db, s) = gpu_float("max_pool2d backward", dy)?;
                let ab = argmax.gpu_buffer("max_pool2d backward")?;
                gpu_output(&gpu, shape, s.dtype(), |dx| {
                    cuda::pool::maxpool_bwd(&gpu, s, db, ab, g, dx)
                })
            }
        }
    })
}

/// [N, C, OH, OW] of a geometry's output.
fn output_shape(g: &ConvGeometry) -> Vec<usize> {
    vec![g.batch, g.in_channels, g.out_h, g.out_w]
}

/// Average pooling: y [N,C,OH,OW]. The divisor is `KH·KW` when `count_include_pad`, else the
/// number of in-bounds taps; a window with no in-bounds tap then gives 0.
pub fn avgpool_fwd(x: &RawTensor, g: &ConvGeometry, count_include_pad: bool) -> Result<RawTensor> {
    const OP: &str = "avg_pool2d";
    in_storage(&["avgpool_fwd"], [x], |[x]| {
        x.expect_shape(OP, &input_shape(g))?;
        let shape = output_shape(g);
        match x.device() {
            Device::Cpu => with_float!(OP, x, |T| {
                let xs = x.host_slice::<T>(OP)?;
                Ok(host_output::<T>(shape, |y| {
                    cpu::pool::avgpool_fwd(xs, g, count_include_pad, y)
                }))
            }),
            _ => {
                let (gpu, xb, s) = gpu_float(OP, x)?;
                gpu_output(&gpu, shape, s.dtype(), |y| {
                    cuda::pool::avgpool_fwd(&gpu, s, xb, g, count_include_pad, y)
                })
            }
        }
    })
}

/// Average-pooling backward: dx [N,C,H,W] from dy [N,C,OH,OW].
pub fn avgpool_bwd(dy: &RawTensor, g: &ConvGeometry, count_include_pad: bool) -> Result<RawTensor> {
    const OP: &str = "avg_pool2d backward";
    in_storage(&["avgpool_bwd"], [dy], |[dy]| {
        dy.expect_shape(OP, &output_shape(g))?;
        let shape = input_shape(g);
        match dy.device() {
            Device::Cpu => with_float!(OP, dy, |T| {
                let ds = dy.host_slice::<T>(OP)?;
                Ok(host_output::<T>(shape, |dx| {
                    cpu::pool::avgpool_bwd(ds, g, count_include_pad, dx)
                }))
            }),
            _ => {
                let (gpu, db, s) = gpu_float(OP, dy)?;
                gpu_output(&gpu, shape, s.dtype(), |dx| {
                    cuda::pool::avgpool_bwd(&gpu, s, db, g, count_include_pad, dx)
                })
            }
        }
    })
}

/// L2-norm pooling: y [N,C,OH,OW] = sqrt(Σ x²) over each window (padding counts as 0).
pub fn l2pool_fwd(x: &RawTensor, g: &ConvGeometry) -> Result<RawTensor> {
    const OP: &str = "l2_pool2d";
    in_storage(&["l2pool_fwd"], [x], |[x]| {
        x.expect_shape(OP, &input_shape(g))?;
        let shape = output_shape(g);
        match x.device() {
            Device::Cpu => with_float!(OP, x, |T| {
                let xs = x.host_slice::<T>(OP)?;
                Ok(host_output::<T>(shape, |y| cpu::pool::l2pool_fwd(xs, g, y)))
            }),
            _ => {
                let (gpu, xb) = gpu_f32(OP, x)?;
                gpu_output(&gpu, shape, DType::F32, |y| {
                    cuda::pool::l2pool_fwd(&gpu, xb, g, y)
                })
            }
        }
    })
}

/// L2-pooling backward from the forward input `x`, its output `y` and `dy`:
/// dx = x · Σ dy / y over the windows containing each pixel; windows with y = 0 pass nothing.
pub fn l2pool_bwd(
    x: &RawTensor,
    y: &RawTensor,
    dy: &RawTensor,
    g: &ConvGeometry,
) -> Result<RawTensor> {
    const OP: &str = "l2_pool2d backward";
    in_storage(&["l2pool_bwd"], [dy, x, y], |[dy, x, y]| {
        common_device(OP, &[x, y, dy])?;
        let shape = input_shape(g);
        x.expect_shape(OP, &shape)?;
        y.expect_shape(OP, &output_shape(g))?;
        dy.expect_shape(OP, &output_shape(g))?;
        match dy.device() {
            Device::Cpu => with_float!(OP, dy, |T| {
                let (xs, ys) = (x.host_slice::<T>(OP)?, y.host_slice::<T>(OP)?);
                let ds = dy.host_slice::<T>(OP)?;
                Ok(host_output::<T>(shape, |dx| {
                    cpu::pool::l2pool_bwd(xs, ys, ds, g, dx)
                }))
            }),
            _ => {
                let (gpu, db) = gpu_f32(OP, dy)?;
                let (_, xb) = gpu_f32(OP, x)?;
                let (_, yb) = gpu_f32(OP, y)?;
                gpu_output(&gpu, shape, DType::F32, |dx| {
                    cuda::pool::l2pool_bwd(&gpu, xb, yb, db, g, dx)
                })
            }
        }
    })
}

/// Checks that `shape` is a 4-d NCHW shape with no zero dimension (a mean over an empty plane has
/// no value).
fn global_pool_input(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    let nchw = as_nchw(op, shape)?;
    if nchw.contains(&0) {
        return Err(invalid(
            "input shape",
            format!("{op}: {shape:?} has a zero dimension"),
        ));
    }
    Ok(nchw)
}

/// Global average pooling: x [N,C,H,W] → y [N,C,1,1], the mean of each plane.
pub fn global_avgpool_fwd(x: &RawTensor) -> Result<RawTensor> {
    const OP: &str = "global_avg_pool2d";
    in_storage(&["global_avgpool_fwd"], [x], |[x]| {
        let [n, c, h, w] = global_pool_input(OP, x.shape())?;
        let (planes, plane_len) = (n * c, h * w);
        let shape = vec![n, c, 1, 1];
        match x.device() {
            Device::Cpu => with_float!(OP, x, |T| {
                let xs = x.host_slice::<T>(OP)?;
                Ok(host_output::<T>(shape, |y| {
                    cpu::pool::global_avgpool_fwd(xs, plane_len, y)
                }))
            }),
            _ => {
                let (gpu, xb, s) = gpu_float(OP, x)?;
                gpu_output(&gpu, shape, s.dtype(), |y| {
                    cuda::pool::global_avgpool_fwd(&gpu, s, xb, planes, plane_len, y)
                })
            }
        }
    })
}

/// Global average pooling backward: dy [N,C,1,1] → dx of `input_shape` [N,C,H,W], dy / (H·W).
pub fn global_avgpool_bwd(dy: &RawTensor, input_shape: &[usize]) -> Result<RawTensor> {
    const OP: &str = "global_avg_pool2d backward";
    in_storage(&["global_avgpool_bwd"], [dy], |[dy]| {
        let [n, c, h, w] = global_pool_input(OP, input_shape)?;
        dy.expect_shape(OP, &[n, c, 1, 1])?;
        let (planes, plane_len) = (n * c, h * w);
        let shape = input_shape.to_vec();
        match dy.device() {
            Device::Cpu => with_float!(OP, dy, |T| {
                let ds = dy.host_slice::<T>(OP)?;
                Ok(host_output::<T>(shape, |dx| {
                    cpu::pool::global_avgpool_bwd(ds, plane_len, dx)
                }))
            }),
            _ => {
                let (gpu, db, s) = gpu_float(OP, dy)?;
                gpu_output(&gpu, shape, s.dtype(), |dx| {
                    cuda::pool::global_avgpool_bwd(&gpu, s, db, planes, plane_len, dx)
                })
            }
        }
    })
}
