//! Training: the loop ([`train`]), metrics, checkpoints, reports.
//!
//! The pieces here work on [`Tensor`](crate::Tensor)s and plain data, so the loop can combine them:
//! - [`save_checkpoint`] / [`load_checkpoint`]: safetensors files PyTorch can read, written
//!   atomically ([`write_atomically`]); a run's [`CheckpointMeta`] in their metadata.
//! - [`train`] takes any [`DatasetProvider`](crate::data::DatasetProvider) and builds the model
//!   from its [`DatasetInfo`](crate::data::DatasetInfo); [`evaluate_checkpoint`] reads it back.
//! - [`EpochMetrics`] and [`MetricsCsv`]: `metrics.csv`, one row per epoch, flushed as it goes.
//! - [`plot_curves`] and [`plot_filters`]: PNG loss/accuracy curves and conv-filter grids.
//! - [`ConfusionMatrix`], [`Progress`], [`EarlyStopping`], [`check_finite`].
//! - Fine-tuning: [`read_init_weights`] / [`apply_init`] (`--init`, `--reset-head`) and
//!   [`freeze`] (`--freeze`, `--frozen-bn`); [`Predictor`]: `kiln predict`'s top classes for image files.
//! - [`load_model_file`]: the model `kiln eval` and `kiln predict` read, from a checkpoint or a
//!   plain `state_dict` ([`PlainModelFlags`]).
//! - [`CapturedStep`]: a training step captured as a CUDA graph and replayed per batch.

mod atomic;
mod checkpoint;
mod config;
mod confusion;
mod distributed;
mod early_stopping;
mod error;
mod evaluate;
mod finetune;
pub mod freeze;
mod graph_step;
mod guard;
pub mod init;
mod interrupt;
mod meta;
mod metrics;
pub mod model_file;
mod plot;
mod precision;
mod predict;
mod progress;
mod run_dir;
pub mod state;
mod trainer;

pub use atomic::write_atomically;
pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint};
pub use config::{OptimizerKind, ScheduleKind, TrainConfig, EXTENDABLE_FLAGS, RESUME_FLAGS};
pub use confusion::ConfusionMatrix;
pub use early_stopping::{Decision, EarlyStopping};
pub use error::TrainError;
pub use evaluate::{
    argmax_rows, evaluate, evaluate_checkpoint, evaluate_loaded, evaluate_model_file,
    CheckpointEvaluation, Evaluation,
};
pub use finetune::prepare_finetuning;
pub use freeze::{freeze, freeze_with_norms, FrozenBn};
pub use graph_step::CapturedStep;
pub use guard::check_finite;
pub use init::{apply_init, find_head, read_init_weights, Head, InitReport, InitWeights};
pub use interrupt::{exit_removing_tracked_files, request_stop, stop_requested};
pub use meta::{load_run_checkpoint, CheckpointMeta, TrainingState, META_KEY, META_VERSION};
pub use metrics::{read_metrics_csv, EpochMetrics, MetricsCsv, PlannedHistory, METRICS_HEADER};
pub use model_file::{load_model_file, ClassList, LoadedModel, PlainModelFlags};
pub use plot::{plot_curves, plot_filters, CURVES_SIZE, FILTER_GAP, FILTER_TILE_PIXELS};
pub use precision::{Precision, ScalerState, StepPrecision};
pub use predict::{image_inputs, prepare_image, ClassScore, Prediction, Predictor};
pub use progress::{EpochTotals, Progress};
pub use run_dir::{RunDir, LOCK_FILE};
pub use trainer::{train, train_step, train_step_with, RunFiles, RunSummary};
