//! `kiln predict MODEL INPUT...`: a trained model's top classes for image files.
//!
//! The model file is a kiln checkpoint or a plain `state_dict` with the flags that describe its
//! inputs ([`super::model_file`]). Each image is prepared from what the checkpoint records about
//! its training data ([`DatasetInfo`]), or what the flags say, as an image-folder sample is: decoded by its content, resized (shorter side,
//! bilinear) and center-cropped to the model's square input side, converted to the model's
//! channels (greyscale by luma, or replicated to RGB), scaled to `[0, 1]` and normalized with the
//! training split's mean and standard deviation. A folder stands for the PNG and JPEG files in
//! it and below it, sorted. Images are decoded in parallel and run through the model in batches.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::error::TrainError;
use super::meta::CheckpointMeta;
use super::model_file::{load_model_file, LoadedModel, PlainModelFlags};
use crate::autograd::no_grad;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::data::{decode_image, images_below, DatasetInfo};
use crate::nn::{Mode, Module, Sequential};
use crate::tensor::Tensor;

/// One class of a prediction and its softmax probability.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    pub class: usize,
    pub name: String,
    pub probability: f64,
}

/// The top classes of one image, most probable first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub path: PathBuf,
    pub top: Vec<ClassScore>,
}

/// A model ready to classify images on a device.
pub struct Predictor {
    model: Sequential,
    info: DatasetInfo,
    meta: Option<CheckpointMeta>,
    device: Device,
}

impl Predictor {
    /// The model of the checkpoint at `path` (written by `kiln train`) on `device`.
    pub fn load(path: &Path, device: Device) -> Result<Predictor, TrainError> {
        Predictor::load_with(path, &PlainModelFlags::default(), device)
    }

    /// The model in the file at `path`: a kiln checkpoint, or a plain `state_dict` described by
    /// `flags` ([`super::model_file`]).
    pub fn load_with(
        path: &Path,
        flags: &PlainModelFlags,
        device: Device,
    ) -> Result<Predictor, TrainError> {
        device.check_available()?;
        let LoadedModel { model, info, meta } = load_model_file(path, flags, device)?;
        Ok(Predictor {
            model,
            info,
            meta,
            device,
        })
    }

    /// What the model reads: its input shape, normalization and class names.
    pub fn info(&self) -> &DatasetInfo {
        &self.info
    }

    /// What a kiln checkpoint records about its run; `None` for a plain `state_dict`.
    pub fn meta(&self) -> Option<&CheckpointMeta> {
        self.meta.as_ref()
    }

    /// The `top_k` most probable classes (at most the class count) of each image in `files`, in
    /// order, `batch_size` images per forward pass.
    pub fn predict(
        &mut self,
        files: &[PathBuf],
        top_k: usize,
        batch_size: usize,
    ) -> Result<Vec<Prediction>, TrainError> {
        if top_k == 0 || batch_size == 0 {
            return Err(TrainError::invalid(
                "predict",
                format!("--top-k {top_k} and --batch-size {batch_size} must be at least 1"),
            ));
        }
        let info = self.info.clone();
        let k = top_k.min(info.num_classes());
        let mut predictions = Vec::with_capacity(files.len());
        for batch in files.chunks(batch_size) {
            let samples: Vec<Vec<f32>> = batch
                .par_iter()
                .map(|f| prepare_image(f, &info))
                .collect::<Result<_, _>>()?;
            let probabilities = self.probabilities(samples.concat(), batch.len())?;
            let classes = info.num_classes();
            for (path, row) in batch.iter().zip(probabilities.chunks(classes)) {
                predictions.push(Prediction {
                    path: path.clone(),
                    top: top_classes(row, &info.class_names, k),
                });
            }
        }
        Ok(predictions)
    }

    /// Softmax probabilities [n, classes] (row-major, host) of `n` prepared samples.
    fn probabilities(&mut self, values: Vec<f32>, n: usize) -> Result<Vec<f64>, TrainError> {
        let [c, h, w] = self.info.sample_shape;
        let images =
            Tensor::from_vec(values, &[n, c, h, w], Device::Cpu)?.to_device(self.device)?;
        let logits = no_grad(|| self.model.forward(&images, Mode::Eval))?;
        let logits = logits
            .to_device(Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_vec::<f32>()?;
        let classes = self.info.num_classes();
        Ok(logits.chunks(classes).flat_map(softmax).collect())
    }
}

/// A numerically stable softmax of one row of logits, in f64.
fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` largest probabilities of `row` with their class names, largest first (ties: the lower
/// class first).
fn top_classes(row: &[f64], names: &[String], k: usize) -> Vec<ClassScore> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|class| ClassScore {
            class,
            name: names[class].clone(),
            probability: row[class],
        })
        .collect()
}

/// The image at `path` as the model's normalized `[C, H, W]` input (see the module docs).
pub fn prepare_image(path: &Path, info: &DatasetInfo) -> Result<Vec<f32>, TrainError> {
    let [c, h, w] = info.sample_shape;
    if h != w || !(c == 1 || c == 3) {
        return Err(TrainError::invalid(
            "predict",
            format!(
                "the model reads {c}x{h}x{w} samples ({}); kiln predict reads images into square \
                 samples of 1 or 3 channels",
                info.name
            ),
        ));
    }
    let side = u32::try_from(h).map_err(|_| TrainError::invalid("predict", "image too large"))?;
    let decoded = decode_image(path, Some(side), Some(c))?;
    debug_assert_eq!(
        (decoded.channels, decoded.width, decoded.height),
        (c, side, side)
    );
    let plane = h * w;
    let norm = &info.normalization;
    Ok(decoded
        .pixels
        .iter()
        .enumerate()
        .map(|(i, &p)| norm.apply(i / plane, p as f32 / 255.0))
        .collect())
}

/// The image files `inputs` name: each file itself, each folder's PNG and JPEG files (in it and
/// below it, sorted). A missing input, or a folder without images, is an error naming it.
pub fn image_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, TrainError> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let before = files.len();
            images_below(input, &mut files)?;
            if files.len() == before {
                return Err(TrainError::format(
                    input,
                    "is a folder without PNG or JPEG images (.png, .jpg, .jpeg) in it or below it",
                ));
            }
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            return Err(TrainError::format(input, "no such image file or folder"));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_sum_to_one_and_top_classes_sort_by_probability() {
        // torch.softmax(torch.tensor([1000., 1001., 999.]), 0) = [0.2447, 0.6652, 0.0900]
        let p = softmax(&[1000.0, 1001.0, 999.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((p[1] - 0.665_240_955_8).abs() < 1e-9, "{p:?}");
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let top = top_classes(&p, &names, 2);
        assert_eq!(
            top.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        let tie = top_classes(&[0.5, 0.5], &names[..2], 2);
        assert_eq!(
            (tie[0].class, tie[1].class),
            (0, 1),
            "ties: lower class first"
        );
    }
}
