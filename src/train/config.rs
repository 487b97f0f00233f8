//! What a training run is asked to do.

use std::path::PathBuf;

use super::freeze::FrozenBn;
use super::precision::Precision;
use clap::builder::PossibleValue;

use crate::core::device::Device;
use crate::core::error::{invalid, Result};
use crate::nn::models::parse_value;
use crate::nn::Architecture;
use crate::ops::CrossEntropy;
use crate::optim::{
    Adam, AdamConfig, AdamW, Optimizer, RmsProp, RmsPropConfig, Schedule, Sgd, SgdConfig,
};
use crate::tensor::Tensor;

/// The optimizers `kiln train --optimizer` accepts, spelled as [`OptimizerKind::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Sgd,
    Momentum,
    Nesterov,
    RmsProp,
    Adam,
    AdamW,
}

impl clap::ValueEnum for OptimizerKind {
    fn value_variants<'a>() -> &'a [Self] {
        &OptimizerKind::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 6] = [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum,
        OptimizerKind::Nesterov,
        OptimizerKind::RmsProp,
        OptimizerKind::Adam,
        OptimizerKind::AdamW,
    ];

    pub fn parse(name: &str) -> Result<OptimizerKind> {
        parse_value(name, "optimizer")
    }

    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Nesterov => "nesterov",
            OptimizerKind::RmsProp => "rmsprop",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }

    /// The optimizer over `params`; `weight_decay` is L2 regularization (decoupled for AdamW).
    pub fn build(
        self,
        params: &[Tensor],
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    ) -> Result<Box<Optimizer>> {
        // Adam and AdamW share the configuration; AdamW reads weight_decay as decoupled decay.
        let adam = AdamConfig {
            lr,
            weight_decay,
            ..AdamConfig::default()
        };
        Ok(match self {
            OptimizerKind::Sgd => Box::new(Sgd::new(params, lr, 0.0, weight_decay)?),
            OptimizerKind::Momentum => Box::new(Sgd::new(params, lr, momentum, weight_decay)?),
            OptimizerKind::Nesterov => Box::new(Sgd::with_config(
                params,
                SgdConfig {
                    lr,
                    momentum,
                    weight_decay,
                    nesterov: true,
                },
            )?),
            OptimizerKind::RmsProp => Box::new(RmsProp::with_config(
                params,
                RmsPropConfig {
                    lr,
                    weight_decay,
                    ..RmsPropConfig::default()
                },
            )?),
            OptimizerKind::Adam => Box::new(Adam::with_config(params, adam)?),
            OptimizerKind::AdamW => Box::new(AdamW::with_config(params, adam)?),
        })
    }
}

/// Learning-rate schedules over epochs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScheduleKind {
    Constant,
    /// ×gamma every `every` epochs.
    Step {
        every: u64,
        gamma: f64,
    },
    /// Cosine annealing to 0 over the run.
    Cosine,
}

/// `--schedule step` is [`ScheduleKind::STEP`] (×0.1 every 5 epochs).
impl clap::ValueEnum for ScheduleKind {
    fn value_variants<'a>() -> &'a [Self] {
        &ScheduleKind::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl ScheduleKind {
    /// The step decay the command line's `step` means.
    pub const STEP: ScheduleKind = ScheduleKind::Step {
        every: 5,
        gamma: 0.1,
    };
    pub const ALL: [ScheduleKind; 3] = [
        ScheduleKind::Constant,
        ScheduleKind::STEP,
        ScheduleKind::Cosine,
    ];

    pub fn parse(name: &str) -> Result<ScheduleKind> {
        parse_value(name, "schedule")
    }

    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Constant => "constant",
            ScheduleKind::Step { .. } => "step",
            ScheduleKind::Cosine => "cosine",
        }
    }

    /// The schedule over `epochs` epochs from `lr`, after `warmup` linear warm-up epochs.
    pub fn build(self, lr: f64, epochs: usize, warmup: usize) -> Result<Schedule> {
        let schedule = match self {
            ScheduleKind::Constant => Schedule::constant(lr)?,
            ScheduleKind::Step { every, gamma } => Schedule::step_decay(lr, every, gamma)?,
            ScheduleKind::Cosine => {
                Schedule::cosine(lr, 0.0, epochs.saturating_sub(warmup).max(1) as u64)?
            }
        };
        if warmup > 0 {
            schedule.with_warmup(1.0 / (warmup + 1) as f64, warmup as u64)
        } else {
            Ok(schedule)
        }
    }
}

/// Every knob of a training run (the `kiln train` flags).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub model: Architecture,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: ScheduleKind,
    pub warmup_epochs: usize,
    /// Random horizontal flips and shifts of up to 2 pixels.
    pub augment: bool,
    /// Gaussian input jitter (standard deviation in normalized units; 0 = off).
    pub jitter: f32,
    pub device: Device,
    pub seed: u64,
    /// Fraction of the training set the dataset provider holds out for validation.
    pub val_fraction: f64,
    /// Stop after this many epochs without a better validation accuracy (keeping the best weights).
    pub patience: Option<usize>,
    /// Train this many times from different seeds and keep the best by validation accuracy.
    pub restarts: usize,
    pub out: PathBuf,
    /// Continue from `out/last.safetensors`.
    pub resume: bool,
    /// A new run (not `resume`) replaces the results of another run in `out` (otherwise it is
    /// refused there).
    pub overwrite: bool,
    /// Use only the first N training images (quick runs and tests).
    pub limit_train: Option<usize>,
    /// f32, or mixed precision (bf16/f16 activations and matrix products, f32 master weights; or
    /// only the products in 16 bits).
    pub precision: Precision,
    /// Replay each training step from a CUDA graph ([`super::CapturedStep`]): one launch per step
    /// instead of one per kernel. GPU devices only, f32 or bf16.
    pub cuda_graph: bool,
    /// Which kernels the run's device launches (`--kernels`): applied to the training thread's
    /// work on `device` for the whole run ([`crate::cuda::with_kernel_policy`]).
    pub kernels: crate::cuda::KernelPolicy,
    /// Start from these weights (`--init`: a kiln checkpoint or a plain safetensors state_dict),
    /// matched by name onto the model ([`super::init`]).
    pub init: Option<PathBuf>,
    /// Glob patterns over parameter names (`--freeze`): matching parameters are not trained.
    pub freeze: Vec<String>,
    /// With `init`: the classifier head starts afresh for the data's classes (`--reset-head`).
    pub reset_head: bool,
    /// What a batch norm whose parameters are all frozen does in training (`--frozen-bn`).
    pub frozen_bn: FrozenBn,
    /// Batch norm normalizes with the statistics of the global batch across the ranks
    /// (`--sync-bn`, PyTorch's `SyncBatchNorm`) instead of each rank's own batch.
    pub sync_bn: bool,
    /// The training loss: softmax cross-entropy with `--label-smoothing` and `--class-weights`
    /// (PyTorch's `F.cross_entropy` semantics; evaluation reports the plain cross-entropy).
    pub criterion: CrossEntropy,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: Architecture::LeNet5,
            epochs: 10,
            batch_size: 64,
            lr: 0.01,
            optimizer: OptimizerKind::Momentum,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: ScheduleKind::Constant,
            warmup_epochs: 0,
            augment: false,
            jitter: 0.0,
            device: Device::Cpu,
            seed: 1,
            val_fraction: 0.1,
            patience: None,
            restarts: 1,
            out: PathBuf::from("runs/latest"),
            resume: false,
            overwrite: false,
            limit_train: None,
            precision: Precision::F32,
            cuda_graph: false,
            kernels: crate::cuda::KernelPolicy::DEFAULT,
            init: None,
            freeze: Vec::new(),
            reset_head: false,
            frozen_bn: FrozenBn::Eval,
            sync_bn: false,
            criterion: CrossEntropy::default(),
        }
    }
}

/// The flags a checkpoint records and `--resume` reads back: a resumed run must agree with all but
/// [`EXTENDABLE_FLAGS`].
pub const RESUME_FLAGS: [&str; 24] = [
    "--model",
    "--epochs",
    "--batch-size",
    "--seed",
    "--optimizer",
    "--lr",
    "--momentum",
    "--weight-decay",
    "--schedule",
    "--warmup",
    "--augment",
    "--jitter",
    "--val-fraction",
    "--limit-train",
    "--patience",
    "--restarts",
    "--precision",
    "--init",
    "--freeze",
    "--reset-head",
    "--frozen-bn",
    "--sync-bn",
    "--label-smoothing",
    "--class-weights",
];

/// Recorded flags a resumed run may change: more epochs continue a run.
pub const EXTENDABLE_FLAGS: [&str; 1] = ["--epochs"];

impl TrainConfig {
    /// The value of each of [`RESUME_FLAGS`] as the command line spells it (`""` for an absent
    /// optional flag; `true`/`false` for a switch).
    pub fn resume_flags(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_default();
        let values = [
            self.model.name().to_string(),
            self.epochs.to_string(),
            self.batch_size.to_string(),
            self.seed.to_string(),
            self.optimizer.name().to_string(),
            self.lr.to_string(),
            self.momentum.to_string(),
            self.weight_decay.to_string(),
            self.schedule.name().to_string(),
            self.warmup_epochs.to_string(),
            self.augment.to_string(),
            self.jitter.to_string(),
            self.val_fraction.to_string(),
            opt(self.limit_train),
            opt(self.patience),
            self.restarts.to_string(),
            self.precision.name().to_string(),
            self.init
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            freeze_spelling(&self.freeze),
            self.reset_head.to_string(),
            self.frozen_bn.name().to_string(),
            self.sync_bn.to_string(),
            self.criterion.label_smoothing.to_string(),
            weights_spelling(self.criterion.class_weights.as_deref()),
        ];
        RESUME_FLAGS.into_iter().zip(values).collect()
    }

    /// Sets one of [`RESUME_FLAGS`] from its spelling in [`TrainConfig::resume_flags`].
    pub fn set_resume_flag(&mut self, flag: &str, value: &str) -> Result<()> {
        fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
            v.parse().map_err(|_| {
                invalid(
                    "checkpoint setting",
                    format!("{flag} {v:?} is not a number"),
                )
            })
        }
        let opt = |v: &str| match v.is_empty() {
            true => Ok(None),
            false => num(flag, v).map(Some),
        };
        match flag {
            "--model" => self.model = Architecture::parse(value)?,
            "--epochs" => self.epochs = num(flag, value)?,
            "--batch-size" => self.batch_size = num(flag, value)?,
            "--seed" => self.seed = num(flag, value)?,
            "--optimizer" => self.optimizer = OptimizerKind::parse(value)?,
            "--lr" => self.lr = num(flag, value)?,
            "--momentum" => self.momentum = num(flag, value)?,
            "--weight-decay" => self.weight_decay = num(flag, value)?,
            "--schedule" => self.schedule = ScheduleKind::parse(value)?,
            "--warmup" => self.warmup_epochs = num(flag, value)?,
            "--augment" => self.augment = value == "true",
            "--jitter" => self.jitter = num(flag, value)?,
            "--val-fraction" => self.val_fraction = num(flag, value)?,
            "--limit-train" => self.limit_train = opt(value)?,
            "--patience" => self.patience = opt(value)?,
            "--restarts" => self.restarts = num(flag, value)?,
            "--precision" => self.precision = Precision::parse(value)?,
            "--init" => self.init = (!value.is_empty()).then(|| PathBuf::from(value)),
            "--freeze" => self.freeze = freeze_patterns(value)?,
            "--reset-head" => self.reset_head = value == "true",
            "--frozen-bn" => self.frozen_bn = FrozenBn::parse(value)?,
            "--sync-bn" => self.sync_bn = value == "true",
            "--label-smoothing" => self.criterion.label_smoothing = num(flag, value)?,
            "--class-weights" => self.criterion.class_weights = class_weights(value)?,
            _ => {
                return Err(invalid(
                    "checkpoint setting",
                    format!("unknown flag {flag}"),
                ))
            }
        }
        Ok(())
    }

    /// Checks the numbers before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.restarts == 0 {
            return Err(invalid(
                "training config",
                "epochs, batch size and restarts must be at least 1",
            ));
        }
        if self.resume && self.overwrite {
            return Err(invalid(
                "flags",
                "--resume continues the run in --out and --overwrite replaces it: give one of them",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid(
                "learning rate",
                format!("--lr {} must be a positive number", self.lr),
            ));
        }
        if self.limit_train == Some(0) {
            return Err(invalid(
                "training split",
                "--limit-train 0 keeps no training images: give at least 1",
            ));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(invalid(
                "val-fraction",
                format!("{} is outside [0, 1)", self.val_fraction),
            ));
        }
        if self.val_fraction == 0.0 && (self.patience.is_some() || self.restarts > 1) {
            return Err(invalid(
                "val-fraction",
                "early stopping and restarts choose by validation accuracy: keep a validation set",
            ));
        }
        if !(self.jitter.is_finite() && self.jitter >= 0.0) {
            return Err(invalid("jitter", format!("{} must be ≥ 0", self.jitter)));
        }
        if self.reset_head && self.init.is_none() {
            return Err(invalid(
                "reset-head",
                "--reset-head replaces the classifier head of the --init weights: give --init FILE",
            ));
        }
        if let Some(p) = self.freeze.iter().find(|p| p.is_empty()) {
            return Err(invalid("freeze", format!("{p:?} is an empty pattern")));
        }
        if self.cuda_graph && self.device == crate::Device::Cpu {
            return Err(invalid(
                "cuda-graph",
                "CUDA graphs replay device work: train on a GPU (--device cuda or emulated)",
            ));
        }
        let eps = self.criterion.label_smoothing;
        if !(0.0..1.0).contains(&eps) {
            return Err(invalid(
                "label-smoothing",
                format!("--label-smoothing {eps} is outside [0, 1)"),
            ));
        }
        if let Some(w) = &self.criterion.class_weights {
            if w.iter().any(|w| !(w.is_finite() && *w >= 0.0)) || w.iter().all(|w| *w == 0.0) {
                return Err(invalid(
                    "class-weights",
                    format!("--class-weights {w:?}: each must be finite and ≥ 0, not all 0"),
                ));
            }
        }
        if self.cuda_graph && self.criterion != CrossEntropy::default() {
            return Err(invalid(
                "cuda-graph",
                "label smoothing and class weights check the labels on the host every step: \
                 leave out --cuda-graph",
            ));
        }
        if self.cuda_graph && self.precision.loss_scaled() {
            return Err(invalid(
                "cuda-graph",
                "f16's loss scaler needs the host every step: use --precision f32, bf16 or bf16-products",
            ));
        }
        Ok(())
    }
}

/// `--class-weights` as a checkpoint records them: comma-separated, or `""` for none.
fn weights_spelling(weights: Option<&[f64]>) -> String {
    let spelled: Vec<String> = weights
        .unwrap_or_default()
        .iter()
        .map(f64::to_string)
        .collect();
    spelled.join(",")
}

/// [`weights_spelling`] read back.
fn class_weights(spelled: &str) -> Result<Option<Vec<f64>>> {
    if spelled.is_empty() {
        return Ok(None);
    }
    let weights = spelled.split(',').map(|w| {
        w.trim().parse::<f64>().map_err(|_| {
            invalid(
                "checkpoint setting",
                format!("--class-weights {spelled:?}: {w:?} is not a number"),
            )
        })
    });
    weights.collect::<Result<Vec<f64>>>().map(Some)
}

/// `--freeze` patterns as a checkpoint records them: a JSON list, or `""` for none.
fn freeze_spelling(patterns: &[String]) -> String {
    match patterns.is_empty() {
        true => String::new(),
        false => serde_json::to_string(patterns).unwrap_or_default(),
    }
}

fn freeze_patterns(spelled: &str) -> Result<Vec<String>> {
    if spelled.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(spelled).map_err(|e| {
        invalid(
            "checkpoint setting",
            format!("--freeze {spelled:?} is not a JSON list of patterns: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn optimizers_and_schedules_parse_from_their_names_and_refuse_others() {
        for kind in OptimizerKind::ALL {
            assert_eq!(OptimizerKind::parse(kind.name()).unwrap(), kind);
            assert_eq!(OptimizerKind::from_str(kind.name(), false), Ok(kind));
        }
        for kind in ScheduleKind::ALL {
            assert_eq!(ScheduleKind::parse(kind.name()).unwrap(), kind);
        }
        assert_eq!(ScheduleKind::parse("step").unwrap(), ScheduleKind::STEP);
        let err = OptimizerKind::parse("sgdd").unwrap_err().to_string();
        assert!(err.contains("optimizer") && err.contains("adamw"), "{err}");
        let err = ScheduleKind::parse("linear").unwrap_err().to_string();
        assert!(err.contains("schedule") && err.contains("cosine"), "{err}");
    }

    #[test]
    fn every_resume_flag_reads_back_what_it_wrote() {
        let config = TrainConfig {
            model: Architecture::Vgg,
            epochs: 7,
            batch_size: 3,
            seed: 9,
            optimizer: OptimizerKind::AdamW,
            lr: 0.3,
            momentum: 0.5,
            weight_decay: 1e-4,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 2,
            augment: true,
            jitter: 0.25,
            val_fraction: 0.3,
            limit_train: Some(11),
            patience: Some(4),
            restarts: 2,
            precision: Precision::Bf16,
            init: Some(PathBuf::from("/models/resnet18.safetensors")),
            freeze: vec!["layer1.*".into(), "conv1.weight".into()],
            reset_head: true,
            frozen_bn: FrozenBn::Train,
            sync_bn: true,
            ..TrainConfig::default()
        };
        let mut back = TrainConfig::default();
        for (flag, value) in config.resume_flags() {
            back.set_resume_flag(flag, &value).unwrap();
        }
        assert_eq!(back.resume_flags(), config.resume_flags());
        assert!(back.set_resume_flag("--lr", "fast").is_err());
        assert!(back.set_resume_flag("--nope", "1").is_err());
    }
}
