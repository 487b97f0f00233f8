//! Training steps of whole networks (`kiln::train::train_step_with`: forward, loss, backward,
//! SGD, with the loss and correct count read back), in f32 and in bf16 mixed precision (bf16
//! activations; the products-only mode as "... f32-activations"), eager and
//! replayed from a CUDA graph (`kiln::train::CapturedStep`, rows named "... cuda-graph"; the bf16
//! one also with the opt-in flat-tile and, on Hopper, wgmma GEMMs: "... cuda-graph flat-tile",
//! "... cuda-graph wgmma"), beside bench/torch_gpu.py's eager PyTorch steps of the same names.

use kiln::nn::models::{lenet5, resnet20};
use kiln::nn::Module;
use kiln::optim::Sgd;
use kiln::train::{train_step_with, CapturedStep, Precision, StepPrecision};
use kiln::{Error, Result, Tensor};

use super::{labels, Bench, Rows, Work};

impl Bench {
    /// A LeNet-5 (ReLU, max pooling) training step on random 1x28x28 images, batch 128, SGD with
    /// momentum 0.9, as `kiln train --model lenet5` runs it.
    pub(super) fn lenet5_step(&self, rows: &mut Rows) -> Result<()> {
        let batch = 128 / self.shrink;
        let x = self.randn(&[batch, 1, 28, 28], 40)?;
        let y = Tensor::from_vec(labels(batch, 10), &[batch], self.device)?;
        for graph in [false, true] {
            let mut model = lenet5(1, 28, 10, false, 1, self.device)?;
            let suffix = if graph { " cuda-graph" } else { "" };
            self.train_steps(
                rows,
                &mut model,
                (0.01, 0.0),
                (&x, &y),
                "lenet5 train step",
                (
                    format!("batch {batch}, 1x28x28{suffix}"),
                    format!("lenet5 train step b{batch}{suffix}"),
                ),
                Mode(Precision::F32, graph),
            )?;
        }
        Ok(())
    }

    /// A ResNet-20 training step on random 3x32x32 images, batch 128, SGD with momentum 0.9 and
    /// weight decay 5e-4. Returns the pool's peak bytes over the timed steps (`None` if they failed).
    pub(super) fn resnet20_step(&self, rows: &mut Rows) -> Result<Option<usize>> {
        let batch = 128 / self.shrink;
        let mut model = resnet20(3, 10, 1, self.device)?;
        let x = self.randn(&[batch, 3, 32, 32], 41)?;
        let y = Tensor::from_vec(labels(batch, 10), &[batch], self.device)?;
        kiln::reset_peak_memory(&self.device)?;
        let failures = rows.failed.len();
        self.train_steps(
            rows,
            &mut model,
            (0.01, 5e-4),
            (&x, &y),
            "resnet20 train step",
            (
                format!("batch {batch}, 3x32x32, f32"),
                format!("resnet20 train step b{batch} f32"),
            ),
            Mode(Precision::F32, false),
        )?;
        let peak = kiln::memory_stats(&self.device)?.peak_bytes;
        // Mixed precision: bf16 activations and products on the tensor cores, f32 master weights
        // (kiln::autocast_activations), against PyTorch's autocast bf16; and the products-only
        // mode (" f32-activations": kiln::autocast) beside it.
        // And each precision replayed from a CUDA graph; the bf16 graph step also with the opt-in
        // GEMM kernels: flat tensor-core tiles (the 16- and 32-channel layers), and the Hopper
        // wgmma kernels where they run.
        let wgmma = self.wgmma_runs()?;
        for (precision, name, graph, gemm) in [
            (Precision::Bf16, "bf16-autocast", false, ""),
            (
                Precision::Bf16Products,
                "bf16-autocast",
                false,
                " f32-activations",
            ),
            (Precision::F32, "f32", true, ""),
            (Precision::Bf16, "bf16-autocast", true, ""),
            (Precision::Bf16, "bf16-autocast", true, " flat-tile"),
            (Precision::Bf16, "bf16-autocast", true, " wgmma"),
        ] {
            if gemm == " wgmma" && !wgmma {
                continue;
            }
            let choice = |p: &mut kiln::cuda::KernelPolicy| match gemm {
                " flat-tile" => p.flat_tiles = true,
                " wgmma" => p.wgmma = true,
                _ => {}
            };
            let mut model = resnet20(3, 10, 1, self.device)?;
            let suffix = format!("{}{gemm}", if graph { " cuda-graph" } else { "" });
            self.under(choice, || {
                self.train_steps(
                    rows,
                    &mut model,
                    (0.01, 5e-4),
                    (&x, &y),
                    "resnet20 train step",
                    (
                        format!("batch {batch}, 3x32x32, {name}{suffix}"),
                        format!("resnet20 train step b{batch} {name}{suffix}"),
                    ),
                    Mode(precision, graph),
                )
            })?;
        }
        if rows.failed.len() > failures {
            return Ok(None);
        }
        Ok(Some(peak))
    }

    /// `(lr, weight_decay)` of the momentum SGD the steps take.
    #[allow(clippy::too_many_arguments)]
    fn train_steps(
        &self,
        rows: &mut Rows,
        model: &mut dyn Module,
        (lr, weight_decay): (f64, f64),
        (x, y): (&Tensor, &Tensor),
        kernel: &'static str,
        names: (String, String),
        Mode(precision, graph): Mode,
    ) -> Result<()> {
        let params: Vec<Tensor> = model
            .parameters()
            .into_iter()
            .map(|(_, t)| t.clone())
            .collect();
        let mut optimizer = Sgd::new(&params, lr, 0.9, weight_decay)?;
        drop(params);
        let mut step = 0;
        let images = x.shape()[0] as f64;
        let mut precision = StepPrecision::new(precision);
        let as_kiln_error = |e: kiln::train::TrainError| Error::InvalidArgument {
            what: "training step",
            why: e.to_string(),
        };
        let mut captured = match graph {
            true => Some(
                CapturedStep::capture(model, &mut optimizer, x, y, 0, &precision)
                    .map_err(as_kiln_error)?
                    .0,
            ),
            false => None,
        };
        self.row(rows, kernel, names, Work::images(images), || {
            step += 1;
            let result = match &mut captured {
                Some(g) => g.replay(model, &mut optimizer, x, y, step),
                None => train_step_with(model, &mut optimizer, x, y, step, &mut precision),
            };
            result.map(drop).map_err(as_kiln_error)
        })
    }
}

/// A step's precision, and whether it is replayed from a CUDA graph.
struct Mode(Precision, bool);
