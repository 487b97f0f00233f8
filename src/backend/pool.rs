//! Pooling primitives.

use super::input_shape;
use super::primitive::{run, HostFloat, OnGpu, Op, Primitive};
use super::storage::Index;
use super::{common_device, host_output, RawTensor};
use crate::core::dtype::{DType, Element};
use crate::core::error::{invalid, Result};
use crate::core::shape::{as_nchw, numel, AdaptivePool2d, ConvGeometry};
use crate::cpu;
use crate::cuda;
use crate::cuda::GpuBuffer;

/// [N, C, OH, OW] of a geometry's output.
fn output_shape(g: &ConvGeometry) -> Vec<usize> {
    vec![g.batch, g.in_channels, g.out_h, g.out_w]
}

/// Max pooling: (y [N,C,OH,OW], argmax i32 of the same shape).
pub fn maxpool_fwd(x: &RawTensor, g: &ConvGeometry) -> Result<(RawTensor, RawTensor)> {
    let (y, Index(argmax)) = run(&MaxPool(g), [x])?;
    Ok((y, argmax))
}

struct MaxPool<'a>(&'a ConvGeometry);

impl Primitive<1> for MaxPool<'_> {
    type Output = (RawTensor, Index);
    fn op(&self) -> Op {
        Op::new("max_pool2d", &["maxpool_fwd"])
    }
    fn check(&self, [x]: [&RawTensor; 1]) -> Result<()> {
        x.expect_shape("max_pool2d", &input_shape(self.0))
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<Self::Output> {
        let shape = output_shape(self.0);
        let mut argmax = vec![0i32; numel(&shape)];
        let y = host_output::<T>(shape.clone(), |y| {
            cpu::pool::maxpool_fwd(x, self.0, y, &mut argmax)
        });
        Ok((
            y,
            Index(RawTensor::host(i32::wrap(argmax), shape, DType::I32)),
        ))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<Self::Output> {
        let shape = output_shape(self.0);
        let mut argmax = on.gpu.alloc(numel(&shape) * 4)?;
        let y = on.output(shape.clone(), |y| {
            cuda::pool::maxpool_fwd(on.gpu, on.format, x, self.0, y, &mut argmax)
        })?;
        Ok((y, Index(RawTensor::from_gpu(argmax, shape, DType::I32))))
    }
}

/// Routes dy to the recorded argmax; dx has the input's shape.
pub fn maxpool_bwd(dy: &RawTensor, argmax: &RawTensor, g: &ConvGeometry) -> Result<RawTensor> {
    run(&MaxPoolGrad { argmax, g }, [dy])
}

struct MaxPoolGrad<'a> {
    argmax: &'a RawTensor,
    g: &'a ConvGeometry,
}

impl Primitive<1> for MaxPoolGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("max_pool2d backward", &["maxpool_bwd"])
    }
    fn check(&self, [dy]: [&RawTensor; 1]) -> Result<()> {
        let op = self.op().name;
        common_device(op, &[dy, self.argmax])?;
        self.argmax.expect_dtype(op, DType::I32)?;
        dy.expect_shape(op, &output_shape(self.g))?;
        self.argmax.expect_shape(op, &output_shape(self.g))
    }
    fn cpu<T: HostFloat>(&self, [dy]: [&[T]; 1]) -> Result<RawTensor> {
        let argmax = self.argmax.host_slice::<i32>(self.op().name)?;
        Ok(host_output::<T>(input_shape(self.g), |dx| {
            cpu::pool::maxpool_bwd(dy, argmax, self.g, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [dy]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let argmax = self.argmax.gpu_buffer(self.op().name)?;
        on.output(input_shape(self.g), |dx| {
            cuda::pool::maxpool_bwd(on.gpu, on.format, dy, argmax, self.g, dx)
        })
    }
}

/// Average pooling: y [N,C,OH,OW]. The divisor is `KH·KW` when `count_include_pad`, else the
/// number of in-bounds taps; a window with no in-bounds tap then gives 0.
pub fn avgpool_fwd(x: &RawTensor, g: &ConvGeometry, count_include_pad: bool) -> Result<RawTensor> {
    run(
        &AvgPool {
            g,
            count_include_pad,
        },
        [x],
    )
}

/// Average-pooling backward: dx [N,C,H,W] from dy [N,C,OH,OW].
pub fn avgpool_bwd(dy: &RawTensor, g: &ConvGeometry, count_include_pad: bool) -> Result<RawTensor> {
    run(
        &AvgPoolGrad(AvgPool {
            g,
            count_include_pad,
        }),
        [dy],
    )
}

struct AvgPool<'a> {
    g: &'a ConvGeometry,
    count_include_pad: bool,
}

impl Primitive<1> for AvgPool<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("avg_pool2d", &["avgpool_fwd"])
    }
    fn check(&self, [x]: [&RawTensor; 1]) -> Result<()> {
        x.expect_shape(self.op().name, &input_shape(self.g))
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        Ok(host_output::<T>(output_shape(self.g), |y| {
            cpu::pool::avgpool_fwd(x, self.g, self.count_include_pad, y)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        on.output(output_shape(self.g), |y| {
            cuda::pool::avgpool_fwd(on.gpu, on.format, x, self.g, self.count_include_pad, y)
        })
    }
}

struct AvgPoolGrad<'a>(AvgPool<'a>);

impl Primitive<1> for AvgPoolGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("avg_pool2d backward", &["avgpool_bwd"])
    }
    fn check(&self, [dy]: [&RawTensor; 1]) -> Result<()> {
        dy.expect_shape(self.op().name, &output_shape(self.0.g))
    }
    fn cpu<T: HostFloat>(&self, [dy]: [&[T]; 1]) -> Result<RawTensor> {
        let AvgPool {
            g,
            count_include_pad,
        } = self.0;
        Ok(host_output::<T>(input_shape(g), |dx| {
            cpu::pool::avgpool_bwd(dy, g, count_include_pad, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [dy]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let AvgPool {
            g,
            count_include_pad,
        } = self.0;
        on.output(input_shape(g), |dx| {
            cuda::pool::avgpool_bwd(on.gpu, on.format, dy, g, count_include_pad, dx)
        })
    }
}

/// L2-norm pooling: y [N,C,OH,OW] = sqrt(Σ x²) over each window (padding counts as 0).
pub fn l2pool_fwd(x: &RawTensor, g: &ConvGeometry) -> Result<RawTensor> {
    run(&L2Pool(g), [x])
}

struct L2Pool<'a>(&'a ConvGeometry);

impl Primitive<1> for L2Pool<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("l2_pool2d", &["l2pool_fwd"])
    }
    fn check(&self, [x]: [&RawTensor; 1]) -> Result<()> {
        x.expect_shape(self.op().name, &input_shape(self.0))
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        Ok(host_output::<T>(output_shape(self.0), |y| {
            cpu::pool::l2pool_fwd(x, self.0, y)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        on.output(output_shape(self.0), |y| {
            cuda::pool::l2pool_fwd(on.gpu, x, self.0, y)
        })
    }
}

/// L2-pooling backward from the forward input `x`, its output `y` and `dy`:
/// dx = x · Σ dy / y over the windows containing each pixel; windows with y = 0 pass nothing.
pub fn l2pool_bwd(
    x: &RawTensor,
    y: &RawTensor,
    dy: &RawTensor,
    g: &ConvGeometry,
) -> Result<RawTensor> {
    run(&L2PoolGrad(g), [x, y, dy])
}

struct L2PoolGrad<'a>(&'a ConvGeometry);

impl Primitive<3> for L2PoolGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("l2_pool2d backward", &["l2pool_bwd"])
    }
    fn check(&self, [x, y, dy]: [&RawTensor; 3]) -> Result<()> {
        let op = self.op().name;
        x.expect_shape(op, &input_shape(self.0))?;
        y.expect_shape(op, &output_shape(self.0))?;
        dy.expect_shape(op, &output_shape(self.0))
    }
    fn cpu<T: HostFloat>(&self, [x, y, dy]: [&[T]; 3]) -> Result<RawTensor> {
        Ok(host_output::<T>(input_shape(self.0), |dx| {
            cpu::pool::l2pool_bwd(x, y, dy, self.0, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x, y, dy]: [&GpuBuffer; 3]) -> Result<RawTensor> {
        on.output(input_shape(self.0), |dx| {
            cuda::pool::l2pool_bwd(on.gpu, x, y, dy, self.0, dx)
        })
    }
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
    run(&GlobalAvgPool(x.shape()), [x])
}

/// Global average pooling backward: dy [N,C,1,1] → dx of `input_shape` [N,C,H,W], dy / (H·W).
pub fn global_avgpool_bwd(dy: &RawTensor, input_shape: &[usize]) -> Result<RawTensor> {
    run(&GlobalAvgPoolGrad(GlobalAvgPool(input_shape)), [dy])
}

/// The input shape [N, C, H, W].
struct GlobalAvgPool<'a>(&'a [usize]);

impl GlobalAvgPool<'_> {
    /// (planes N·C, plane length H·W).
    fn planes(&self) -> (usize, usize) {
        let &[n, c, h, w] = self.0 else {
            unreachable!("checked by global_pool_input")
        };
        (n * c, h * w)
    }

    fn pooled_shape(&self) -> Vec<usize> {
        vec![self.0[0], self.0[1], 1, 1]
    }
}

impl Primitive<1> for GlobalAvgPool<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("global_avg_pool2d", &["global_avgpool_fwd"])
    }
    fn check(&self, _: [&RawTensor; 1]) -> Result<()> {
        global_pool_input(self.op().name, self.0).map(drop)
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        let (_, plane_len) = self.planes();
        Ok(host_output::<T>(self.pooled_shape(), |y| {
            cpu::pool::global_avgpool_fwd(x, plane_len, y)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let (planes, plane_len) = self.planes();
        on.output(self.pooled_shape(), |y| {
            cuda::pool::global_avgpool_fwd(on.gpu, on.format, x, planes, plane_len, y)
        })
    }
}

struct GlobalAvgPoolGrad<'a>(GlobalAvgPool<'a>);

impl Primitive<1> for GlobalAvgPoolGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("global_avg_pool2d backward", &["global_avgpool_bwd"])
    }
    fn check(&self, [dy]: [&RawTensor; 1]) -> Result<()> {
        global_pool_input(self.op().name, self.0 .0)?;
        dy.expect_shape(self.op().name, &self.0.pooled_shape())
    }
    fn cpu<T: HostFloat>(&self, [dy]: [&[T]; 1]) -> Result<RawTensor> {
        let (_, plane_len) = self.0.planes();
        Ok(host_output::<T>(self.0 .0.to_vec(), |dx| {
            cpu::pool::global_avgpool_bwd(dy, plane_len, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [dy]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let (planes, plane_len) = self.0.planes();
        on.output(self.0 .0.to_vec(), |dx| {
            cuda::pool::global_avgpool_bwd(on.gpu, on.format, dy, planes, plane_len, dx)
        })
    }
}

/// Adaptive average pooling: y [N,C,OH,OW], each output the mean of its adaptive window of x
/// (see [`AdaptivePool2d`]).
pub fn adaptive_avgpool_fwd(x: &RawTensor, a: &AdaptivePool2d) -> Result<RawTensor> {
    run(&AdaptiveAvgPool(a), [x])
}

/// Adaptive average-pooling backward: dx [N,C,H,W] from dy [N,C,OH,OW].
pub fn adaptive_avgpool_bwd(dy: &RawTensor, a: &AdaptivePool2d) -> Result<RawTensor> {
    run(&AdaptiveAvgPoolGrad(AdaptiveAvgPool(a)), [dy])
}

struct AdaptiveAvgPool<'a>(&'a AdaptivePool2d);

impl Primitive<1> for AdaptiveAvgPool<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("adaptive_avg_pool2d", &["adaptive_avgpool_fwd"])
    }
    fn check(&self, [x]: [&RawTensor; 1]) -> Result<()> {
        x.expect_shape(self.op().name, &self.0.input_shape())
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        Ok(host_output::<T>(self.0.output_shape(), |y| {
            cpu::pool::adaptive_avgpool_fwd(x, self.0, y)
        }))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        on.output(self.0.output_shape(), |y| {
            cuda::pool::adaptive_avgpool_fwd(on.gpu, x, self.0, y)
        })
    }
}

struct AdaptiveAvgPoolGrad<'a>(AdaptiveAvgPool<'a>);

impl Primitive<1> for AdaptiveAvgPoolGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("adaptive_avg_pool2d backward", &["adaptive_avgpool_bwd"])
    }
    fn check(&self, [dy]: [&RawTensor; 1]) -> Result<()> {
        dy.expect_shape(self.op().name, &self.0 .0.output_shape())
    }
    fn cpu<T: HostFloat>(&self, [dy]: [&[T]; 1]) -> Result<RawTensor> {
        let a = self.0 .0;
        Ok(host_output::<T>(a.input_shape(), |dx| {
            cpu::pool::adaptive_avgpool_bwd(dy, a, dx)
        }))
    }
    fn gpu(&self, on: &OnGpu, [dy]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let a = self.0 .0;
        on.output(a.input_shape(), |dx| {
            cuda::pool::adaptive_avgpool_bwd(on.gpu, dy, a, dx)
        })
    }
}
