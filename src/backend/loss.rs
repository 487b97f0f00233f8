//! Loss primitives: softmax cross-entropy; elementwise squared error and binary cross-entropy on
//! logits (their means are `backend::sum`); the sum of squares of the L2 penalty.

use super::primitive::{run, HostFloat, OnGpu, Op, Primitive};
use super::storage::{storage_format, Unrounded};
use super::{common_device, host_output, Factor, RawTensor};
use crate::core::dtype::DType;
use crate::core::error::{invalid, Error, Result};
use crate::core::shape::numel;
use crate::cpu;
use crate::cuda::{self, GpuBuffer};

/// The losses and the penalty take f32 or f64 (`ops` widens 16-bit logits on the tape): a 16-bit
/// input is refused, as the CPU and GPU arms refuse any type but theirs.
fn refuse_16bit(op: &'static str, t: &RawTensor) -> Result<()> {
    match storage_format(t) {
        Some(got) => Err(Error::DTypeMismatch {
            op,
            expected: DType::F32,
            got,
        }),
        None => Ok(()),
    }
}

/// Softmax cross-entropy per row: (probs [R,K], losses [R]). Labels are validated by the caller.
pub fn softmax_xent_fwd(logits: &RawTensor, labels: &RawTensor) -> Result<(RawTensor, RawTensor)> {
    check_logits_and_labels("softmax_cross_entropy", logits, labels)?;
    softmax_xent_fwd_unchecked_labels(logits, labels)
}

/// [`softmax_xent_fwd`] without reading the labels back to check their values (shapes are
/// checked): a label outside `0..classes` gives that row a NaN loss. For a training step, which
/// reads its loss back anyway and looks at the labels only when the loss is not finite.
pub(crate) fn softmax_xent_fwd_unchecked_labels(
    logits: &RawTensor,
    labels: &RawTensor,
) -> Result<(RawTensor, RawTensor)> {
    let shape = logits.shape();
    Ok(run(&SoftmaxXent(Labelled { shape, labels }), [logits])?.0)
}

/// The shape of logits (or probabilities) [rows, classes] and their i32 labels [rows].
struct Labelled<'a> {
    shape: &'a [usize],
    labels: &'a RawTensor,
}

impl Labelled<'_> {
    fn check(&self, op: &'static str, logits: &RawTensor) -> Result<()> {
        check_logits_and_label_shapes(op, logits, self.labels).map(drop)
    }

    /// (rows, classes), once checked.
    fn dims(&self) -> (usize, usize) {
        (self.shape[0], self.shape[1])
    }
}

struct SoftmaxXent<'a>(Labelled<'a>);

impl Primitive<1> for SoftmaxXent<'_> {
    type Output = Unrounded<(RawTensor, RawTensor)>;
    fn op(&self) -> Op {
        Op::new("softmax_cross_entropy", &["softmax_xent_fwd"])
    }
    fn check(&self, [logits]: [&RawTensor; 1]) -> Result<()> {
        refuse_16bit(self.op().name, logits)?;
        self.0.check(self.op().name, logits)
    }
    fn cpu<T: HostFloat>(&self, [zs]: [&[T]; 1]) -> Result<Self::Output> {
        let (rows, classes) = self.0.dims();
        let ls = self.0.labels.host_slice::<i32>(self.op().name)?;
        let mut losses = vec![T::zero(); rows];
        let probs = host_output::<T>(vec![rows, classes], |p| {
            cpu::loss::softmax_xent_fwd(zs, ls, rows, classes, p, &mut losses)
        });
        let losses = RawTensor::host(T::wrap(losses), vec![rows], T::DTYPE);
        Ok(Unrounded((probs, losses)))
    }
    fn gpu(&self, on: &OnGpu, [zb]: [&GpuBuffer; 1]) -> Result<Self::Output> {
        let (rows, classes) = self.0.dims();
        let lb = self.0.labels.gpu_buffer(self.op().name)?;
        let mut losses = on.gpu.alloc(rows * 4)?;
        let probs = on.output(vec![rows, classes], |p| {
            cuda::loss::softmax_xent_fwd(on.gpu, zb, lb, rows, classes, p, &mut losses)
        })?;
        let losses = RawTensor::from_gpu(losses, vec![rows], DType::F32);
        Ok(Unrounded((probs, losses)))
    }
}

/// The number of rows of `logits` [rows, classes] whose first largest value is at the row's
/// label, as a one-element tensor on the logits' device (f32 on a GPU, exact up to 2^24 rows):
/// a batch's correct predictions, read back together with its loss.
pub fn count_correct(logits: &RawTensor, labels: &RawTensor) -> Result<RawTensor> {
    let shape = logits.shape();
    Ok(run(&CountCorrect(Labelled { shape, labels }), [logits])?.0)
}

struct CountCorrect<'a>(Labelled<'a>);

impl Primitive<1> for CountCorrect<'_> {
    type Output = Unrounded<RawTensor>;
    fn op(&self) -> Op {
        Op::new("count_correct", &["count_correct"])
    }
    fn check(&self, [logits]: [&RawTensor; 1]) -> Result<()> {
        self.0.check(self.op().name, logits)
    }
    fn cpu<T: HostFloat>(&self, [zs]: [&[T]; 1]) -> Result<Self::Output> {
        let ls = self.0.labels.host_slice::<i32>(self.op().name)?;
        let count = cpu::loss::count_correct(zs, ls, self.0.dims().1) as f64;
        Ok(Unrounded(RawTensor::host(
            T::wrap(vec![T::of(count)]),
            vec![1],
            T::DTYPE,
        )))
    }
    fn gpu(&self, on: &OnGpu, [zb]: [&GpuBuffer; 1]) -> Result<Self::Output> {
        let (rows, classes) = self.0.dims();
        let lb = self.0.labels.gpu_buffer(self.op().name)?;
        on.output(vec![1], |count| {
            cuda::loss::count_correct(on.gpu, zb, lb, rows, classes, count)
        })
        .map(Unrounded)
    }
}

/// dlogits = scale·(probs − onehot(labels)).
pub fn softmax_xent_bwd(probs: &RawTensor, labels: &RawTensor, scale: f64) -> Result<RawTensor> {
    check_logits_and_labels("softmax_cross_entropy backward", probs, labels)?;
    softmax_xent_bwd_checked_labels(probs, labels, scale, None)
}

/// [`softmax_xent_bwd`] for labels whose values [`softmax_xent_fwd`] already checked (the tape's
/// backward rule): only shapes are checked, so a training step reads the labels back once, not
/// twice. The factor is `scale · upstream` when a one-element `upstream` gradient is given; a
/// GPU kernel reads it from device memory, so the backward pass does not wait for the device.
pub(crate) fn softmax_xent_bwd_checked_labels(
    probs: &RawTensor,
    labels: &RawTensor,
    scale: f64,
    upstream: Option<&RawTensor>,
) -> Result<RawTensor> {
    let shape = probs.shape();
    let labelled = Labelled { shape, labels };
    run(
        &SoftmaxXentGrad {
            labelled,
            scale,
            upstream,
        },
        [probs],
    )
}

struct SoftmaxXentGrad<'a> {
    labelled: Labelled<'a>,
    scale: f64,
    upstream: Option<&'a RawTensor>,
}

impl Primitive<1> for SoftmaxXentGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("softmax_cross_entropy backward", &["softmax_xent_bwd"])
    }
    fn check(&self, [probs]: [&RawTensor; 1]) -> Result<()> {
        let op = self.op().name;
        refuse_16bit(op, probs)?;
        self.labelled.check(op, probs)?;
        check_upstream(op, probs, self.upstream)
    }
    fn cpu<T: HostFloat>(&self, [ps]: [&[T]; 1]) -> Result<RawTensor> {
        let op = self.op().name;
        let (rows, classes) = self.labelled.dims();
        let ls = self.labelled.labels.host_slice::<i32>(op)?;
        let factor = match self.upstream {
            Some(u) => T::of(self.scale) * u.host_slice::<T>(op)?[0],
            None => T::of(self.scale),
        };
        Ok(host_output::<T>(vec![rows, classes], |d| {
            cpu::loss::softmax_xent_bwd(ps, ls, rows, classes, factor, d)
        }))
    }
    fn gpu(&self, on: &OnGpu, [pb]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let op = self.op().name;
        let dims = self.labelled.dims();
        let lb = self.labelled.labels.gpu_buffer(op)?;
        let ub = self.upstream.map(|u| u.gpu_buffer(op)).transpose()?;
        on.output(vec![dims.0, dims.1], |d| {
            cuda::loss::softmax_xent_bwd(on.gpu, pb, lb, dims, self.scale as f32, ub, d)
        })
    }
}

/// Class weights and label smoothing of softmax cross-entropy, as the primitives take them.
#[derive(Clone, Copy, Debug)]
pub struct XentTargets<'a> {
    /// One weight per class, `[classes]`, in the logits' dtype and on their device.
    pub weights: &'a RawTensor,
    /// The sum of the weights.
    pub weight_sum: f64,
    /// Label smoothing eps, in [0, 1).
    pub smoothing: f64,
}

impl XentTargets<'_> {
    fn check(&self, op: &'static str, classes: usize) -> Result<()> {
        let eps = self.smoothing;
        if !(0.0..1.0).contains(&eps) {
            return Err(invalid(
                "label smoothing",
                format!("{op}: must be in [0, 1), got {eps}"),
            ));
        }
        self.weights.expect_shape(op, &[classes])
    }

    fn on_cpu<'w, T: HostFloat>(&self, weights: &'w [T]) -> cpu::loss::XentTargets<'w, T> {
        cpu::loss::XentTargets {
            weights,
            weight_sum: T::of(self.weight_sum),
            smoothing: T::of(self.smoothing),
        }
    }

    fn on_gpu<'w>(&self, weights: &'w GpuBuffer) -> cuda::loss::XentTargetsOnGpu<'w> {
        cuda::loss::XentTargetsOnGpu {
            weights,
            weight_sum: self.weight_sum as f32,
            smoothing: self.smoothing as f32,
        }
    }
}

/// Softmax cross-entropy with class weights and label smoothing, per row: (probs [R,K], losses
/// [R]) with `losses[i] = (1 − eps)·w_y·(−log p_y) + (eps/K)·Σ_c w_c·(−log p_c)` (PyTorch's, before
/// the mean's division by `Σ_i w_{y_i}`). The labels are read back and checked.
pub fn softmax_xent_smooth_fwd(
    logits: &RawTensor,
    labels: &RawTensor,
    targets: XentTargets,
) -> Result<(RawTensor, RawTensor)> {
    check_logits_and_labels("softmax_cross_entropy", logits, labels)?;
    softmax_xent_smooth_fwd_checked_labels(logits, labels, targets)
}

/// [`softmax_xent_smooth_fwd`] for labels whose values the caller has checked (shapes are checked
/// here), so that they are read back once.
pub(crate) fn softmax_xent_smooth_fwd_checked_labels(
    logits: &RawTensor,
    labels: &RawTensor,
    targets: XentTargets,
) -> Result<(RawTensor, RawTensor)> {
    let labelled = Labelled {
        shape: logits.shape(),
        labels,
    };
    Ok(run(&SmoothXent { labelled, targets }, [logits, targets.weights])?.0)
}

struct SmoothXent<'a> {
    labelled: Labelled<'a>,
    targets: XentTargets<'a>,
}

impl Primitive<2> for SmoothXent<'_> {
    type Output = Unrounded<(RawTensor, RawTensor)>;
    fn op(&self) -> Op {
        Op::new("softmax_cross_entropy", &["softmax_xent_smooth_fwd"])
    }
    fn check(&self, [logits, _]: [&RawTensor; 2]) -> Result<()> {
        let op = self.op().name;
        refuse_16bit(op, logits)?;
        self.labelled.check(op, logits)?;
        self.targets.check(op, self.labelled.dims().1)
    }
    fn cpu<T: HostFloat>(&self, [zs, ws]: [&[T]; 2]) -> Result<Self::Output> {
        let (rows, classes) = self.labelled.dims();
        let ls = self.labelled.labels.host_slice::<i32>(self.op().name)?;
        let mut losses = vec![T::zero(); rows];
        let probs = host_output::<T>(vec![rows, classes], |p| {
            cpu::loss::softmax_xent_smooth_fwd((zs, ls), self.targets.on_cpu(ws), p, &mut losses)
        });
        let losses = RawTensor::host(T::wrap(losses), vec![rows], T::DTYPE);
        Ok(Unrounded((probs, losses)))
    }
    fn gpu(&self, on: &OnGpu, [zb, wb]: [&GpuBuffer; 2]) -> Result<Self::Output> {
        let dims = self.labelled.dims();
        let lb = self.labelled.labels.gpu_buffer(self.op().name)?;
        let mut losses = on.gpu.alloc(dims.0 * 4)?;
        let targets = self.targets.on_gpu(wb);
        let probs = on.output(vec![dims.0, dims.1], |p| {
            cuda::loss::softmax_xent_smooth_fwd(on.gpu, (zb, lb), dims, targets, p, &mut losses)
        })?;
        let losses = RawTensor::from_gpu(losses, vec![dims.0], DType::F32);
        Ok(Unrounded((probs, losses)))
    }
}

/// The gradient of [`softmax_xent_smooth_fwd`]'s losses from its `probs`:
/// `dlogits = scale·upstream·(a·p − t)` with the weighted smoothed target
/// `t_c = (1 − eps)·w_y·[c = y] + (eps/K)·w_c` and `a = Σ_c t_c`. Labels are checked for shape only
/// (the forward read them back); `upstream`, when given, is the loss's one-element gradient.
pub fn softmax_xent_smooth_bwd(
    probs: &RawTensor,
    labels: &RawTensor,
    targets: XentTargets,
    scale: f64,
    upstream: Option<&RawTensor>,
) -> Result<RawTensor> {
    let labelled = Labelled {
        shape: probs.shape(),
        labels,
    };
    let grad = SmoothXentGrad {
        of: SmoothXent { labelled, targets },
        scale,
        upstream,
    };
    run(&grad, [probs, targets.weights])
}

struct SmoothXentGrad<'a> {
    of: SmoothXent<'a>,
    scale: f64,
    upstream: Option<&'a RawTensor>,
}

impl Primitive<2> for SmoothXentGrad<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new(
            "softmax_cross_entropy backward",
            &["softmax_xent_smooth_bwd"],
        )
    }
    fn check(&self, [probs, _]: [&RawTensor; 2]) -> Result<()> {
        let op = self.op().name;
        refuse_16bit(op, probs)?;
        self.of.labelled.check(op, probs)?;
        self.of.targets.check(op, self.of.labelled.dims().1)?;
        check_upstream(op, probs, self.upstream)
    }
    fn cpu<T: HostFloat>(&self, [ps, ws]: [&[T]; 2]) -> Result<RawTensor> {
        let op = self.op().name;
        let (rows, classes) = self.of.labelled.dims();
        let ls = self.of.labelled.labels.host_slice::<i32>(op)?;
        let factor = match self.upstream {
            Some(u) => T::of(self.scale) * u.host_slice::<T>(op)?[0],
            None => T::of(self.scale),
        };
        let targets = self.of.targets.on_cpu(ws);
        Ok(host_output::<T>(vec![rows, classes], |d| {
            cpu::loss::softmax_xent_smooth_bwd((ps, ls), targets, factor, d)
        }))
    }
    fn gpu(&self, on: &OnGpu, [pb, wb]: [&GpuBuffer; 2]) -> Result<RawTensor> {
        let op = self.op().name;
        let dims = self.of.labelled.dims();
        let lb = self.of.labelled.labels.gpu_buffer(op)?;
        let ub = self.upstream.map(|u| u.gpu_buffer(op)).transpose()?;
        let targets = self.of.targets.on_gpu(wb);
        on.output(vec![dims.0, dims.1], |d| {
            let factor = (self.scale as f32, ub);
            cuda::loss::softmax_xent_smooth_bwd(on.gpu, (pb, lb), dims, targets, factor, d)
        })
    }
}

/// (prediction − target)², elementwise, for two tensors of one shape, dtype and device.
pub fn squared_error_fwd(prediction: &RawTensor, target: &RawTensor) -> Result<RawTensor> {
    pair_fwd(PairLoss::SquaredError, [prediction, target])
}

/// dprediction = scale·(prediction − target) and, if `with_target_grad`, dtarget = −dprediction.
/// The mean squared error's backward passes scale = 2·dloss/n.
pub fn squared_error_bwd(
    prediction: &RawTensor,
    target: &RawTensor,
    factor: Factor,
    with_target_grad: bool,
) -> Result<(RawTensor, Option<RawTensor>)> {
    let inputs = [prediction, target];
    pair_bwd(PairLoss::SquaredError, inputs, factor, with_target_grad)
}

/// max(z, 0) − z·t + ln(1 + e^−|z|), elementwise: binary cross-entropy of sigmoid(logits) against
/// `targets` (one shape, dtype and device), stable for logits of any magnitude.
pub fn bce_logits_fwd(logits: &RawTensor, targets: &RawTensor) -> Result<RawTensor> {
    pair_fwd(PairLoss::BceLogits, [logits, targets])
}

/// dlogits = scale·(sigmoid(z) − t) and, if `with_target_grad`, dtargets = −scale·z. The mean
/// loss's backward passes scale = dloss/n.
pub fn bce_logits_bwd(
    logits: &RawTensor,
    targets: &RawTensor,
    factor: Factor,
    with_target_grad: bool,
) -> Result<(RawTensor, Option<RawTensor>)> {
    pair_bwd(
        PairLoss::BceLogits,
        [logits, targets],
        factor,
        with_target_grad,
    )
}

/// scale·Σx² as a one-element tensor [1]; deterministic on every device (on a GPU: fixed per-block
/// partial sums, then one block adds them).
pub fn sum_squares(x: &RawTensor, scale: f64) -> Result<RawTensor> {
    run(
        &SumSquares {
            n: x.numel(),
            scale,
        },
        [x],
    )
}

struct SumSquares {
    n: usize,
    scale: f64,
}

impl Primitive<1> for SumSquares {
    type Output = RawTensor;
    fn op(&self) -> Op {
        Op::new("sum of squares", &["sum_squares", "sum"])
    }
    fn check(&self, [x]: [&RawTensor; 1]) -> Result<()> {
        refuse_16bit(self.op().name, x)
    }
    fn cpu<T: HostFloat>(&self, [x]: [&[T]; 1]) -> Result<RawTensor> {
        let s = cpu::loss::sum_squares(x) * T::of(self.scale);
        Ok(RawTensor::host(T::wrap(vec![s]), vec![1], T::DTYPE))
    }
    fn gpu(&self, on: &OnGpu, [x]: [&GpuBuffer; 1]) -> Result<RawTensor> {
        let blocks = cuda::loss::sum_squares_blocks(self.n);
        let mut partial = on.gpu.alloc(blocks * 4)?;
        cuda::loss::sum_squares(on.gpu, x, self.n, &mut partial)?;
        on.output(vec![1], |out| {
            cuda::reduce::sum(on.gpu, &partial, blocks, self.scale as f32, out)
        })
    }
}

/// Two tensors of one shape (the runner checks their device and dtype), f32 or f64, with at
/// least one element (a mean of nothing is not a loss).
fn check_pair(op: &'static str, a: &RawTensor, b: &RawTensor) -> Result<()> {
    refuse_16bit(op, a)?;
    b.expect_shape(op, a.shape())?;
    if a.numel() == 0 {
        return Err(invalid(
            "loss input",
            format!("{op}: the inputs have no elements (shape {:?})", a.shape()),
        ));
    }
    Ok(())
}

/// The elementwise losses of a prediction and a target of one shape: their kernels' signatures
/// agree, so one forward and one backward primitive serve both.
#[derive(Clone, Copy)]
enum PairLoss {
    SquaredError,
    BceLogits,
}

fn pair_fwd(loss: PairLoss, [a, b]: [&RawTensor; 2]) -> Result<RawTensor> {
    run(&Pair(loss, a.shape()), [a, b])
}

fn pair_bwd(
    loss: PairLoss,
    [a, b]: [&RawTensor; 2],
    factor: Factor,
    with_b_grad: bool,
) -> Result<(RawTensor, Option<RawTensor>)> {
    let grad = PairGrad(Pair(loss, a.shape()), factor, with_b_grad);
    Ok(run(&grad, [a, b])?.0)
}

/// A pair loss and the shape of its inputs.
struct Pair<'a>(PairLoss, &'a [usize]);

impl Primitive<2> for Pair<'_> {
    type Output = RawTensor;
    fn op(&self) -> Op {
        match self.0 {
            PairLoss::SquaredError => Op::new("squared error", &["squared_error_fwd"]),
            PairLoss::BceLogits => Op::new("binary_cross_entropy_with_logits", &["bce_logits_fwd"]),
        }
    }
    fn check(&self, [a, b]: [&RawTensor; 2]) -> Result<()> {
        check_pair(self.op().name, a, b)
    }
    fn cpu<T: HostFloat>(&self, [a, b]: [&[T]; 2]) -> Result<RawTensor> {
        let &Pair(loss, shape) = self;
        let loss = match loss {
            PairLoss::SquaredError => cpu::loss::squared_error_fwd::<T>,
            PairLoss::BceLogits => cpu::loss::bce_logits_fwd::<T>,
        };
        Ok(host_output::<T>(shape.to_vec(), |l| loss(a, b, l)))
    }
    fn gpu(&self, on: &OnGpu, [a, b]: [&GpuBuffer; 2]) -> Result<RawTensor> {
        let &Pair(loss, shape) = self;
        let loss = match loss {
            PairLoss::SquaredError => cuda::loss::squared_error_fwd,
            PairLoss::BceLogits => cuda::loss::bce_logits_fwd,
        };
        on.output(shape.to_vec(), |l| loss(on.gpu, a, b, l, numel(shape)))
    }
}

/// A pair loss's backward: the factor of the gradients, and whether the second input's is wanted.
struct PairGrad<'a>(Pair<'a>, Factor<'a>, bool);

/// The first input's gradient and, if asked, the second's.
type PairGrads = Unrounded<(RawTensor, Option<RawTensor>)>;

impl Primitive<2> for PairGrad<'_> {
    type Output = PairGrads;
    fn op(&self) -> Op {
        match self.0 .0 {
            PairLoss::SquaredError => Op::new("squared error backward", &["squared_error_bwd"]),
            PairLoss::BceLogits => Op::new(
                "binary_cross_entropy_with_logits backward",
                &["bce_logits_bwd"],
            ),
        }
    }
    fn check(&self, [a, b]: [&RawTensor; 2]) -> Result<()> {
        check_pair(self.op().name, a, b)?;
        self.1.check(self.op().name, a)
    }
    fn cpu<T: HostFloat>(&self, [a, b]: [&[T]; 2]) -> Result<PairGrads> {
        let &PairGrad(Pair(loss, shape), factor, with_b_grad) = self;
        let grads = match loss {
            PairLoss::SquaredError => cpu::loss::squared_error_bwd::<T>,
            PairLoss::BceLogits => cpu::loss::bce_logits_bwd::<T>,
        };
        let scale = factor.on_host::<T>(self.op().name)?;
        let mut db = with_b_grad.then(|| vec![T::zero(); b.len()]);
        let da = host_output::<T>(shape.to_vec(), |da| {
            grads(a, b, scale, da, db.as_deref_mut())
        });
        let db = db.map(|d| RawTensor::host(T::wrap(d), shape.to_vec(), T::DTYPE));
        Ok(Unrounded((da, db)))
    }
    fn gpu(&self, on: &OnGpu, [a, b]: [&GpuBuffer; 2]) -> Result<PairGrads> {
        let &PairGrad(Pair(loss, shape), factor, with_b_grad) = self;
        let grads = match loss {
            PairLoss::SquaredError => cuda::loss::squared_error_bwd,
            PairLoss::BceLogits => cuda::loss::bce_logits_bwd,
        };
        let n = numel(shape);
        let (scale, upstream) = (factor.scale as f32, factor.device_address(self.op().name)?);
        let mut db = match with_b_grad {
            true => Some(on.gpu.alloc(n * 4)?),
            false => None,
        };
        let da = on.output(shape.to_vec(), |da| {
            grads(on.gpu, a, b, scale, upstream, (da, db.as_mut()), n)
        })?;
        let db = db.map(|d| RawTensor::from_gpu(d, shape.to_vec(), DType::F32));
        Ok(Unrounded((da, db)))
    }
}

/// Checks a backward pass's `upstream` loss gradient, when given: one element of `probs`'s dtype,
/// on its device.
fn check_upstream(op: &'static str, probs: &RawTensor, upstream: Option<&RawTensor>) -> Result<()> {
    let Some(u) = upstream else {
        return Ok(());
    };
    common_device(op, &[probs, u])?;
    u.expect_dtype(op, probs.dtype())?;
    if u.numel() != 1 {
        return Err(invalid(
            "loss gradient",
            format!("{op}: {:?} is not one element", u.shape()),
        ));
    }
    Ok(())
}

/// Checks logits [rows, classes] and i32 labels [rows] on one device, and (reading the labels
/// back, as they are few) that every label lies in `0..classes`: a bad label is an error, never an
/// out-of-bounds read.
fn check_logits_and_labels(
    op: &'static str,
    logits: &RawTensor,
    labels: &RawTensor,
) -> Result<(usize, usize)> {
    let (rows, classes) = check_logits_and_label_shapes(op, logits, labels)?;
    check_label_values(labels, classes)?;
    Ok((rows, classes))
}

/// Reads `labels` (i32) back and checks that each lies in `0..classes`; the error names the
/// first that does not and its row.
pub fn check_label_values(labels: &RawTensor, classes: usize) -> Result<()> {
    check_host_labels(&labels.to_vec::<i32>()?, classes)
}

/// [`check_label_values`] on labels already read back.
pub fn check_host_labels(host: &[i32], classes: usize) -> Result<()> {
    if let Some((i, bad)) = host
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as usize >= classes)
    {
        return Err(invalid(
            "labels",
            format!("label {bad} at row {i} is outside 0..{classes}"),
        ));
    }
    Ok(())
}

/// Checks logits [rows, classes] (non-empty) and i32 labels [rows] on the same device.
fn check_logits_and_label_shapes(
    op: &'static str,
    logits: &RawTensor,
    labels: &RawTensor,
) -> Result<(usize, usize)> {
    common_device(op, &[logits, labels])?;
    let &[rows, classes] = logits.shape() else {
        return Err(invalid(
            "logits",
            format!("{op}: expected [rows, classes], got {:?}", logits.shape()),
        ));
    };
    if rows == 0 || classes == 0 {
        return Err(invalid(
            "logits",
            format!("{op}: need at least one row and one class"),
        ));
    }
    labels.expect_dtype(op, DType::I32)?;
    labels.expect_shape(op, &[rows])?;
    Ok((rows, classes))
}
