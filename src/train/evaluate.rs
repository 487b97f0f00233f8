//! Evaluation: loss, accuracy and predictions of a model over a dataset, without recording.

use std::path::Path;

use super::confusion::ConfusionMatrix;
use super::error::TrainError;
use super::meta::CheckpointMeta;
use super::model_file::{load_model_file, LoadedModel, PlainModelFlags};
use crate::autograd::no_grad;
use crate::core::device::Device;
use crate::core::error::Result;
use crate::data::{DataLoader, Dataset, DatasetInfo};
use crate::nn::{Mode, Module};
use crate::ops;
use crate::tensor::Tensor;

/// Mean loss, accuracy, and each sample's predicted class (in loader order).
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub predictions: Vec<usize>,
    pub labels: Vec<usize>,
}

/// Index of the largest logit of each row of `logits` [N, K] (host copy).
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<usize>> {
    let classes = logits.shape().get(1).copied().unwrap_or(1).max(1);
    let values = logits.to_vec::<f32>()?;
    Ok(values
        .chunks(classes)
        .map(|row| {
            let mut best = 0;
            for (j, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect())
}

/// Runs `model` in evaluation mode over every batch of `loader` (epoch 0 order).
/// An empty dataset is an error: its accuracy would read as 0%.
pub fn evaluate(model: &mut dyn Module, loader: &DataLoader) -> Result<Evaluation, TrainError> {
    if loader.dataset().is_empty() {
        return Err(TrainError::invalid(
            "evaluation",
            "the data set holds 0 images: there is nothing to evaluate",
        ));
    }
    no_grad(|| -> Result<Evaluation, TrainError> {
        let mut eval = Evaluation::default();
        let mut loss_sum = 0.0;
        for batch in loader.epoch(0) {
            let batch = batch?;
            let logits = model.forward(&batch.images, Mode::Eval)?;
            let n = batch.indices.len();
            loss_sum += ops::softmax_cross_entropy(&logits, &batch.labels)?.scalar()? * n as f64;
            eval.predictions.extend(argmax_rows(&logits)?);
            eval.labels.extend(
                batch
                    .labels
                    .to_vec::<i32>()?
                    .into_iter()
                    .map(|l| l as usize),
            );
        }
        let n = eval.labels.len().max(1) as f64;
        let correct = eval
            .predictions
            .iter()
            .zip(&eval.labels)
            .filter(|(p, l)| p == l)
            .count();
        eval.loss = loss_sum / n;
        eval.accuracy = correct as f64 / n;
        Ok(eval)
    })
}

/// The confusion matrix of an evaluation, with the dataset's class names.
pub(crate) fn confusion_matrix(
    info: &DatasetInfo,
    eval: &Evaluation,
) -> Result<ConfusionMatrix, TrainError> {
    let names: Vec<&str> = info.class_names.iter().map(String::as_str).collect();
    let mut confusion = ConfusionMatrix::new(&names);
    confusion.add_all(&eval.predictions, &eval.labels)?;
    Ok(confusion)
}

/// A model file evaluated on a test set: what the model reads, a kiln checkpoint's metadata
/// (`None` for a plain `state_dict`), the evaluation and the confusion matrix.
#[derive(Clone, Debug)]
pub struct CheckpointEvaluation {
    pub info: DatasetInfo,
    pub meta: Option<CheckpointMeta>,
    pub evaluation: Evaluation,
    pub confusion: ConfusionMatrix,
}

/// Evaluates the checkpoint at `path` (written by [`train`](super::train)) on `raw_test`: raw
/// samples, normalized here as the checkpoint's training data was. The model is built from the
/// checkpoint's dataset description, so `raw_test` must have its sample shape and classes.
pub fn evaluate_checkpoint(
    path: impl AsRef<Path>,
    raw_test: Dataset,
    device: Device,
) -> Result<CheckpointEvaluation, TrainError> {
    evaluate_model_file(path.as_ref(), &PlainModelFlags::default(), raw_test, device)
}

/// [`evaluate_checkpoint`] for any model file: a kiln checkpoint, or a plain `state_dict`
/// described by `flags` ([`super::model_file`]), whose normalization `raw_test` gets.
pub fn evaluate_model_file(
    path: &Path,
    flags: &PlainModelFlags,
    raw_test: Dataset,
    device: Device,
) -> Result<CheckpointEvaluation, TrainError> {
    evaluate_loaded(load_model_file(path, flags, device)?, raw_test, device)
}

/// [`evaluate_model_file`] of a model already loaded ([`load_model_file`]) on `device`.
pub fn evaluate_loaded(
    loaded: LoadedModel,
    raw_test: Dataset,
    device: Device,
) -> Result<CheckpointEvaluation, TrainError> {
    let LoadedModel {
        mut model,
        info,
        meta,
    } = loaded;
    let test = info.prepare_raw(raw_test)?;
    let evaluation = evaluate(&mut model, &DataLoader::new(test, 256, device)?)?;
    let confusion = confusion_matrix(&info, &evaluation)?;
    Ok(CheckpointEvaluation {
        info,
        meta,
        evaluation,
        confusion,
    })
}
