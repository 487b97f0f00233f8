//! The training loop: mini-batch steps with a progress display, validation each epoch, early
//! stopping that keeps the best weights, random restarts, atomic checkpoints every epoch with the
//! optimizer state (so `--resume` continues exactly), then the test evaluation and the reports.

use std::path::{Path, PathBuf};

use super::checkpoint::{save_checkpoint, Checkpoint};
use super::config::{TrainConfig, EXTENDABLE_FLAGS};
use super::confusion::ConfusionMatrix;
use super::distributed;
use super::early_stopping::{Decision, EarlyStopping};
use super::error::TrainError;
use super::evaluate::confusion_matrix;
use super::finetune::prepare_finetuning;
use super::freeze::trains;
use super::graph_step::CapturedStep;
use super::guard::check_finite;
use super::interrupt::{clear_stop_request, stop_requested};
use super::meta::{load_run_checkpoint, CheckpointMeta, TrainingState, META_VERSION};
use super::metrics::{EpochMetrics, MetricsCsv, PlannedHistory};
use super::plot::{plot_curves, plot_filters};
use super::precision::StepPrecision;
use super::run_dir::{check_new_run, clear_results, remove_stale_temps};
use super::state::{
    model_tensors, optimizer_tensors, restore_model, restore_optimizer, snapshot, MODEL_PREFIX,
};
use crate::backend;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::data::{
    Augment, DataLoader, Dataset, DatasetInfo, DatasetProvider, DescribedSplits, Splits,
};
use crate::nn::{Mode, Module, Sequential};
use crate::ops;
use crate::optim::Optimizer;
use crate::tensor::Gradients;
use crate::tensor::Tensor;

/// What a finished run reports.
#[derive(Debug)]
pub struct RunSummary {
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub best_val_accuracy: f64,
    /// The restart and epoch (0-based) whose weights were kept.
    pub best_restart: usize,
    pub best_epoch: usize,
    pub history: Vec<EpochMetrics>,
    pub confusion: ConfusionMatrix,
    pub out: PathBuf,
}

/// The output files of a run directory.
pub struct RunFiles {
    pub last: PathBuf,
    pub best: PathBuf,
    pub metrics: PathBuf,
    pub curves: PathBuf,
    pub filters: PathBuf,
}

impl RunFiles {
    pub fn new(out: &Path) -> RunFiles {
        RunFiles {
            last: out.join("last.safetensors"),
            best: out.join("best.safetensors"),
            metrics: out.join("metrics.csv"),
            curves: out.join("curves.png"),
            filters: out.join("filters.png"),
        }
    }
}

struct Data {
    train: DataLoader,
    val: DataLoader,
    test: DataLoader,
    /// The shape, classes and normalization (fitted on the training part) checkpoints record.
    info: DatasetInfo,
}

fn load_data(config: &TrainConfig, provider: &dyn DatasetProvider) -> Result<Data, TrainError> {
    let DescribedSplits { info, mut splits } =
        provider.prepare(config.val_fraction, config.seed)?;
    check_splits(config, &info, &splits)?;
    if let Some(limit) = config.limit_train {
        let keep: Vec<usize> = (0..limit.min(splits.train.len())).collect();
        splits.train = splits.train.subset(&keep)?;
    }
    let augment = Augment {
        hflip: config.augment,
        shift_pad: if config.augment { 2 } else { 0 },
        jitter_std: config.jitter,
    };
    let loader = |d: Dataset, batch| DataLoader::new(d, batch, config.device);
    let train = loader(splits.train, config.batch_size)?
        .with_shard(distributed::train_shard()?)
        .with_shuffle(config.seed)
        .with_augment(augment)?;
    let eval_batch = config.batch_size.max(256);
    Ok(Data {
        train,
        val: loader(splits.validation, eval_batch)?.with_shard(distributed::eval_shard()?),
        test: loader(splits.test, eval_batch)?.with_shard(distributed::eval_shard()?),
        info,
    })
}

/// An empty training, test or (when asked for) validation split is an error naming the source or
/// flag that emptied it: a run over no batches would save untrained weights as the best. The
/// splits must also match their description (the models are built from it).
fn check_splits(
    config: &TrainConfig,
    info: &DatasetInfo,
    splits: &Splits,
) -> Result<(), TrainError> {
    for split in [&splits.train, &splits.validation, &splits.test] {
        info.check(split)?;
    }
    let total = splits.train.len() + splits.validation.len();
    let fraction = config.val_fraction;
    if total == 0 {
        return Err(TrainError::invalid(
            "training split",
            format!("{} holds 0 images", info.sources.train),
        ));
    }
    if splits.train.is_empty() {
        // (--limit-train 0 is refused by TrainConfig::validate.)
        return Err(TrainError::invalid(
            "training split",
            format!(
                "--val-fraction {fraction} holds out all {total} training images, leaving none \
                 to train on"
            ),
        ));
    }
    if fraction > 0.0 && splits.validation.is_empty() {
        return Err(TrainError::invalid(
            "validation split",
            format!(
                "--val-fraction {fraction} of {total} training images rounds to 0 validation \
                 images: raise it, or pass --val-fraction 0 to train without validation"
            ),
        ));
    }
    if splits.test.is_empty() {
        return Err(TrainError::invalid(
            "test split",
            format!("{} holds 0 images", info.sources.test),
        ));
    }
    Ok(())
}

/// `--class-weights` gives one weight per class of the data, or the error says how many it has.
fn check_class_weights(config: &TrainConfig, info: &DatasetInfo) -> Result<(), TrainError> {
    match &config.criterion.class_weights {
        Some(w) if w.len() != info.num_classes() => Err(TrainError::invalid(
            "--class-weights",
            format!(
                "{} weights for a dataset of {} classes ({}): give one per class",
                w.len(),
                info.num_classes(),
                info.class_names.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// Where a run starts: restart, first epoch to run, and the best result so far.
struct ResumePoint {
    restart: usize,
    epoch: usize,
    best_val: f64,
}

/// Trains as `config` says on the splits `data` provides (any [`DatasetProvider`], e.g. a user's
/// own samples in an [`InMemoryDataset`](crate::data::InMemoryDataset); the model is built for
/// its [`DatasetInfo`]) and writes the run directory; see the module docs.
pub fn train(config: &TrainConfig, data: &dyn DatasetProvider) -> Result<RunSummary, TrainError> {
    // The run executes on a pool thread (RAYON_NUM_THREADS of them, default one per core), so the
    // step's sequential parts and its parallel loops share those threads. Called from outside,
    // every parallel loop would hand its work to the pool and wake this thread afterwards, and
    // this thread would compete for the cores with workers spinning between loops.
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("kiln-train-{i}"))
        .build()?;
    pool.install(|| {
        crate::cuda::with_kernel_policy(config.device, config.kernels, || {
            train_in_pool(config, data)
        })
    })
}

fn train_in_pool(
    config: &TrainConfig,
    provider: &dyn DatasetProvider,
) -> Result<RunSummary, TrainError> {
    config.validate()?;
    distributed::check_config(config)?;
    config.device.check_available()?;
    // The data first: a missing or empty split fails before anything is written to --out.
    let data = load_data(config, provider)?;
    check_class_weights(config, &data.info)?;
    // One run per directory; the lock goes when `_dir` is dropped, however the run ends.
    let _dir = distributed::lock_run_dir(&config.out)?;
    let files = RunFiles::new(&config.out);
    // Everything is checked (the directory, the checkpoint, the history) before a file changes.
    let plan = plan_run(config, &data, &files)?;
    if distributed::is_writer() {
        remove_stale_temps(&config.out)?;
        if !config.resume {
            clear_results(&files)?;
        }
    }
    if plan.history.dropped() > 0 {
        eprintln!(
            "kiln: {} holds {} row(s) past the epoch of {} (a run stopped between the two): they \
             are dropped and those epochs trained again",
            files.metrics.display(),
            plan.history.dropped(),
            files.last.display()
        );
    }
    let (mut csv, mut history) = distributed::open_history(plan.history)?;

    let mut best_val = plan.start.best_val;
    let mut first = Some(plan.first);
    for restart in plan.start.restart..config.restarts {
        let trainee = match first.take() {
            Some(t) => t,
            None => Trainee::new(config, &data.info, restart)?,
        };
        let run = RestartRun {
            config,
            data: &data,
            files: &files,
            restart,
            seed: trainee.seed,
        };
        if run.epochs(trainee, &mut best_val, &mut csv, &mut history)? == Ended::Stopped {
            return Err(interrupted(config, &files, &history));
        }
    }

    // The kept weights: the best validation accuracy over every restart and epoch.
    distributed::wait_for_writer()?;
    let (best, best_meta) = load_run_checkpoint(&files.best)?;
    let mut model = build_model(config, &data.info, config.seed)?;
    restore_model(&mut model, &best.tensors)?;
    let test = distributed::evaluate(&mut model, &data.test)?;
    let confusion = confusion_matrix(&data.info, &test)?;
    if distributed::is_writer() {
        plot_curves(&files.curves, &history)?;
        plot_first_filters(&files.filters, &model_tensors(&model))?;
    }
    Ok(RunSummary {
        test_accuracy: test.accuracy,
        test_loss: test.loss,
        best_val_accuracy: best_val,
        best_restart: best_meta.restart,
        best_epoch: best_meta.epoch,
        history,
        confusion,
        out: config.out.clone(),
    })
}

/// The first conv layer's filters (the first 4-D model tensor) as a grid, if the model has one.
fn plot_first_filters(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), TrainError> {
    match tensors.iter().find(|(_, t)| t.shape().len() == 4) {
        Some((_, w)) => plot_filters(path, w).map(drop),
        None => Ok(()),
    }
}

/// A stopped run's report: the plots of what last.safetensors holds, and the error saying so.
fn interrupted(config: &TrainConfig, files: &RunFiles, history: &[EpochMetrics]) -> TrainError {
    clear_stop_request();
    let stopped = TrainError::Interrupted {
        dir: config.out.clone(),
        last_epoch: history.last().map(|r| r.epoch),
    };
    if history.is_empty() || !files.last.exists() || !distributed::is_writer() {
        return stopped;
    }
    let plotted = plot_curves(&files.curves, history).and_then(|()| {
        let (last, _) = load_run_checkpoint(&files.last)?;
        let model: Vec<_> = last
            .tensors
            .into_iter()
            .filter(|(n, _)| n.starts_with(MODEL_PREFIX))
            .collect();
        plot_first_filters(&files.filters, &model)
    });
    match plotted {
        Ok(()) => stopped,
        Err(e) => e,
    }
}

/// What a run checked before it changes a file: where it starts, the model, optimizer and
/// precision of its first restart (restored from the checkpoint when resuming), and its history.
struct Plan {
    start: ResumePoint,
    first: Trainee,
    history: PlannedHistory,
}

fn plan_run(config: &TrainConfig, data: &Data, files: &RunFiles) -> Result<Plan, TrainError> {
    if !config.resume {
        if distributed::is_writer() {
            check_new_run(&config.out, files, config.overwrite)?;
        }
        return Ok(Plan {
            start: ResumePoint {
                restart: 0,
                epoch: 0,
                best_val: f64::NEG_INFINITY,
            },
            first: Trainee::new(config, &data.info, 0)?,
            history: MetricsCsv::plan_new(&files.metrics),
        });
    }
    let (ck, meta, training) = load_resumable(&files.last, &data.info)?;
    distributed::check_world_size(&meta, &files.last)?;
    check_resume_flags(config, &meta, &files.last)?;
    let start = ResumePoint {
        restart: meta.restart,
        epoch: meta.epoch + 1,
        best_val: meta.best_val_score(),
    };
    // The weights come from the checkpoint, not from --init.
    let mut first = Trainee::build(config, &data.info, start.restart, false)?;
    first.restore(&ck, &meta, &training, &files.last)?;
    first.first_epoch = start.epoch;
    let history = MetricsCsv::plan_resume(&files.metrics, history_rows_before(&start, config))?;
    Ok(Plan {
        start,
        first,
        history,
    })
}

/// A resumed run must be the checkpoint's run: each recorded flag but [`EXTENDABLE_FLAGS`] must
/// agree, or the error names the flag, the checkpoint's value and how to start afresh.
fn check_resume_flags(
    config: &TrainConfig,
    meta: &CheckpointMeta,
    path: &Path,
) -> Result<(), TrainError> {
    let saved = meta.saved_flags();
    for (flag, given) in config.resume_flags() {
        let Some(value) = saved.get(flag) else {
            continue;
        };
        if *value == given || EXTENDABLE_FLAGS.contains(&flag) {
            continue;
        }
        return Err(TrainError::ResumeMismatch {
            path: path.to_path_buf(),
            flag: flag.to_string(),
            saved: described_flag(flag, value, "with", "without"),
            given: described_flag(flag, &given, "", "no"),
        });
    }
    Ok(())
}

/// `with --lr 0.01`, `with --augment`, `without --patience` (or with other words for with/out).
fn described_flag(flag: &str, value: &str, with: &str, without: &str) -> String {
    let with = match with {
        "" => String::new(),
        w => format!("{w} "),
    };
    match value {
        "" | "false" => format!("{without} {flag}"),
        "true" => format!("{with}{flag}"),
        v => format!("{with}{flag} {v}"),
    }
}

/// Rows of metrics.csv that precede the resume point: rows are numbered by a global epoch counter
/// (restart · epochs + epoch), one row per finished epoch.
fn history_rows_before(start: &ResumePoint, config: &TrainConfig) -> usize {
    start.restart * config.epochs + start.epoch
}

/// The configured architecture for the data's sample shape and classes.
fn build_model(config: &TrainConfig, info: &DatasetInfo, seed: u64) -> crate::Result<Sequential> {
    config
        .model
        .build_for(info.sample_shape, info.num_classes(), seed, config.device)
}

/// The run's last checkpoint, its metadata and its training state; refused when it was trained
/// on data of another shape or class count.
fn load_resumable(
    path: &Path,
    info: &DatasetInfo,
) -> Result<(Checkpoint, CheckpointMeta, TrainingState), TrainError> {
    let (ck, meta) = load_run_checkpoint(path)?;
    let saved = &meta.dataset;
    if (saved.sample_shape, saved.num_classes()) != (info.sample_shape, info.num_classes()) {
        return Err(TrainError::format(
            path,
            format!(
                "trained on {} ({:?}, {} classes); this run's data is {} ({:?}, {} classes)",
                saved.name,
                saved.sample_shape,
                saved.num_classes(),
                info.name,
                info.sample_shape,
                info.num_classes()
            ),
        ));
    }
    let training = meta.training.clone().ok_or_else(|| {
        TrainError::format(
            path,
            "has no optimizer state to resume from (a best.safetensors?)",
        )
    })?;
    Ok((ck, meta, training))
}

/// What a restart trains and carries from step to step, and the epoch it starts at.
struct Trainee {
    model: Sequential,
    optimizer: Box<Optimizer>,
    precision: StepPrecision,
    seed: u64,
    first_epoch: usize,
}

impl Trainee {
    /// A new model, optimizer and precision state for `restart`.
    fn new(
        config: &TrainConfig,
        info: &DatasetInfo,
        restart: usize,
    ) -> Result<Trainee, TrainError> {
        Trainee::build(config, info, restart, true)
    }

    /// [`Trainee::new`], starting from the `--init` weights if `with_init` (with the frozen
    /// parameters frozen either way); the optimizer holds only the trainable parameters.
    fn build(
        config: &TrainConfig,
        info: &DatasetInfo,
        restart: usize,
        with_init: bool,
    ) -> Result<Trainee, TrainError> {
        let seed = config.seed + 1000 * restart as u64;
        let mut model = build_model(config, info, seed)?;
        prepare_finetuning(&mut model, config, with_init)?;
        let params: Vec<Tensor> = model
            .parameters()
            .into_iter()
            .filter(|(_, t)| trains(t))
            .map(|(_, t)| t.clone())
            .collect();
        let optimizer =
            config
                .optimizer
                .build(&params, config.lr, config.momentum, config.weight_decay)?;
        drop(params);
        Ok(Trainee {
            model,
            optimizer,
            precision: StepPrecision::new(config.precision)
                .with_criterion(config.criterion.clone()),
            seed,
            first_epoch: 0,
        })
    }

    /// The checkpoint's weights, optimizer state and loss scaler; an error names the file.
    fn restore(
        &mut self,
        ck: &Checkpoint,
        meta: &CheckpointMeta,
        training: &TrainingState,
        path: &Path,
    ) -> Result<(), TrainError> {
        let restored = restore_model(&mut self.model, &ck.tensors)
            .and_then(|()| restore_optimizer(self.optimizer.as_mut(), ck, training))
            .and_then(|()| {
                Ok(self
                    .precision
                    .restore(meta.precision, training.loss_scaler)?)
            });
        restored.map_err(|e| TrainError::format(path, format!("cannot resume from it: {e}")))
    }
}

/// How a restart's epochs ended.
#[derive(Debug, PartialEq)]
enum Ended {
    Finished,
    /// A stop was requested ([`super::request_stop`]): stopped at a step boundary.
    Stopped,
}

struct RestartRun<'a> {
    config: &'a TrainConfig,
    data: &'a Data,
    files: &'a RunFiles,
    restart: usize,
    seed: u64,
}

impl RestartRun<'_> {
    /// Runs epochs `first_epoch..` of this restart (best.safetensors records the overall best),
    /// until they end or a stop is requested.
    fn epochs(
        &self,
        trainee: Trainee,
        best_val: &mut f64,
        csv: &mut Option<MetricsCsv>,
        history: &mut Vec<EpochMetrics>,
    ) -> Result<Ended, TrainError> {
        let Trainee {
            mut model,
            mut optimizer,
            mut precision,
            first_epoch: first,
            ..
        } = trainee;
        let (model, optimizer, precision) = (&mut model, optimizer.as_mut(), &mut precision);
        distributed::broadcast_model(model)?;
        distributed::synchronize_batch_norms(model, self.config.sync_bn);
        let config = self.config;
        let schedule = config
            .schedule
            .build(config.lr, config.epochs, config.warmup_epochs)?;
        let mut early = config
            .patience
            .map(|p| EarlyStopping::new(p, 0.0))
            .transpose()?;
        let mut restart_best: Option<(f64, Vec<(String, Tensor)>)> = None;
        let batches = self.data.train.num_batches();
        let mut progress = distributed::progress(config.epochs, batches);
        if config.restarts > 1 {
            progress.println(&format!(
                "restart {}/{} (seed {})",
                self.restart + 1,
                config.restarts,
                self.seed
            ));
        }
        let mut graph: Option<CapturedStep> = None;
        for epoch in first..config.epochs {
            optimizer.set_lr(schedule.lr_at(epoch as u64))?;
            progress.start_epoch(epoch + 1);
            for (i, batch) in self.data.train.epoch(epoch as u64).enumerate() {
                if stop_requested() {
                    return Ok(Ended::Stopped);
                }
                let batch = batch?;
                let step = (epoch * batches + i) as u64;
                let (images, labels) = (&batch.images, &batch.labels);
                let (loss, correct) = match config.cuda_graph {
                    true => graphed_step(
                        &mut graph,
                        model,
                        &mut *optimizer,
                        images,
                        labels,
                        step,
                        precision,
                    )?,
                    false => {
                        train_step_with(model, &mut *optimizer, images, labels, step, precision)?
                    }
                };
                progress.batch(loss, correct, batch.indices.len());
                distributed::check_in_sync(model, step)?;
            }
            let totals = distributed::reduce_totals(progress.finish_epoch())?;
            // Without a validation set every epoch counts as an improvement: the last one is kept.
            let val = match self.data.val.dataset().is_empty() {
                true => None,
                false => Some(distributed::evaluate(model, &self.data.val)?),
            };
            let val_accuracy = val.as_ref().map(|v| v.accuracy);
            let row = EpochMetrics {
                epoch: self.restart * config.epochs + epoch + 1,
                train_loss: totals.loss,
                train_accuracy: totals.accuracy,
                val_loss: val.as_ref().map(|v| v.loss),
                val_accuracy,
                test_accuracy: None,
                learning_rate: optimizer.lr(),
                seconds: totals.seconds,
                images_per_sec: totals.images_per_sec,
            };
            if let Some(csv) = csv {
                csv.append(&row)?;
            }
            history.push(row);
            if let Some(v) = &val {
                progress.println(&format!(
                    "epoch {}: validation loss {:.4}, accuracy {:.2}%",
                    epoch + 1,
                    v.loss,
                    100.0 * v.accuracy
                ));
            }

            let score = val_accuracy.unwrap_or(f64::INFINITY);
            if score > *best_val || val.is_none() {
                *best_val = score;
                self.save(&self.files.best, model, None, epoch, *best_val)?;
            }
            if restart_best
                .as_ref()
                .is_none_or(|(acc, _)| score > *acc || val.is_none())
            {
                restart_best = Some((score, snapshot(model)?));
            }
            let state = Some((&*optimizer, &*precision));
            self.save(&self.files.last, model, state, epoch, *best_val)?;
            if let (Some(early), Some(acc)) = (&mut early, val_accuracy) {
                if early.update(epoch, acc) == Decision::Stop {
                    progress.println(&format!(
                        "early stopping after epoch {}: no better validation accuracy for {} epochs",
                        epoch + 1,
                        config.patience.unwrap_or(0)
                    ));
                    break;
                }
            }
        }
        // Keep this restart's best weights in the model (the caller compares restarts on disk).
        if let Some((_, weights)) = restart_best {
            restore_model(model, &weights)?;
        }
        Ok(Ended::Finished)
    }

    fn save(
        &self,
        path: &Path,
        model: &Sequential,
        training_state: Option<(&Optimizer, &StepPrecision)>,
        epoch: usize,
        best_val: f64,
    ) -> Result<(), TrainError> {
        if !distributed::is_writer() {
            return Ok(());
        }
        let mut tensors = model_tensors(model);
        let training = training_state.map(|(opt, precision)| {
            let (opt_tensors, state) = optimizer_tensors(opt, precision);
            tensors.extend(opt_tensors);
            state
        });
        let meta = CheckpointMeta {
            version: META_VERSION,
            model: self.config.model,
            dataset: self.data.info.clone(),
            restart: self.restart,
            epoch,
            seed: self.seed,
            batch_size: Some(self.config.batch_size),
            best_val_accuracy: best_val.is_finite().then_some(best_val),
            precision: Some(self.config.precision),
            training,
            settings: Some(
                self.config
                    .resume_flags()
                    .into_iter()
                    .map(|(flag, value)| (flag.to_string(), value))
                    .collect(),
            ),
            world_size: Some(distributed::world_size()).filter(|&n| n > 1),
        };
        let named: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
        save_checkpoint(path, &named, &meta.to_metadata()?)
    }
}

/// One optimization step in f32; returns the batch's mean loss and its number of correct
/// predictions. A non-finite loss stops with an error before the weights are touched.
pub fn train_step(
    model: &mut dyn Module,
    optimizer: &mut Optimizer,
    images: &Tensor,
    labels: &Tensor,
    step: u64,
) -> Result<(f64, usize), TrainError> {
    train_step_with(
        model,
        optimizer,
        images,
        labels,
        step,
        &mut StepPrecision::f32(),
    )
}

/// [`train_step`] in `precision`: the forward pass under [`crate::autocast`] when it names a
/// 16-bit format; with a loss scaler (f16) the backward pass starts from the scaled loss, and a
/// step whose gradients overflow leaves the weights alone (the scaler lowers its scale).
pub fn train_step_with(
    model: &mut dyn Module,
    optimizer: &mut Optimizer,
    images: &Tensor,
    labels: &Tensor,
    step: u64,
    precision: &mut StepPrecision,
) -> Result<(f64, usize), TrainError> {
    model.set_step(step);
    let (logits, loss) =
        forward_and_loss(model, images, labels, precision.mode, &precision.criterion)?;
    // The loss and the correct count come back in one copy (one wait for the device per step).
    let classes = logits.shape().get(1).copied().unwrap_or(0);
    let stats = step_stats(&logits, &loss, labels)?;
    drop(logits);
    let (loss_value, correct) = read_checked_stats(&stats, labels, classes, step)?;
    // Averaged over the ranks (bucket by bucket while backward runs) before the loss scaler
    // looks for overflow: all decide alike.
    let grad_list = match &precision.scaler {
        Some(scaler) => distributed::backward_and_average(model, &scaler.scale_loss(&loss)?, step)?,
        None => distributed::backward_and_average(model, &loss, step)?,
    };
    let unscaled = match &mut precision.scaler {
        Some(scaler) => match scaler.unscale(&grad_list.iter().collect::<Vec<_>>())? {
            Some(unscaled) => Some(unscaled),
            None => return Ok((loss_value, correct)), // overflow: skip this update
        },
        None => None,
    };
    let grad_list: Vec<Tensor> = match unscaled {
        Some(u) => u,
        None => grad_list,
    };
    update(model, optimizer, &grad_list)?;
    Ok((loss_value, correct))
}

/// A step replayed from `graph`, captured first (or again, when the model's or optimizer's tensors
/// were replaced or shared since: a kept best-weights snapshot shares them); a batch of another
/// shape (an epoch's last, smaller one) takes an ordinary step.
fn graphed_step(
    graph: &mut Option<CapturedStep>,
    model: &mut Sequential,
    optimizer: &mut Optimizer,
    images: &Tensor,
    labels: &Tensor,
    step: u64,
    precision: &mut StepPrecision,
) -> Result<(f64, usize), TrainError> {
    if let Some(g) = graph.as_mut() {
        if g.can_replay(model, optimizer, images, labels) {
            return g.replay(model, optimizer, images, labels, step);
        }
        if !g.accepts_batch(images, labels) {
            return train_step_with(model, optimizer, images, labels, step, precision);
        }
    }
    *graph = None; // its private memory goes back before the new capture takes its own
    let (captured, result) =
        CapturedStep::capture(model, optimizer, images, labels, step, precision)?;
    *graph = Some(captured);
    Ok(result)
}

/// The training-mode forward pass (in the mixed-precision `mode` when one is given)
/// and the softmax cross-entropy `criterion`: (logits, loss). With the default criterion the
/// labels are checked only if the loss comes back non-finite ([`read_checked_stats`]); label
/// smoothing and class weights check them as they read them.
pub(crate) fn forward_and_loss(
    model: &mut dyn Module,
    images: &Tensor,
    labels: &Tensor,
    mode: Option<crate::autocast::AutocastMode>,
    criterion: &ops::CrossEntropy,
) -> crate::Result<(Tensor, Tensor)> {
    let forward = |model: &mut dyn Module| -> crate::Result<(Tensor, Tensor)> {
        let logits = model.forward(images, Mode::Train)?;
        let loss = match *criterion == ops::CrossEntropy::default() {
            true => ops::softmax_cross_entropy_deferred_label_check(&logits, labels)?,
            false => ops::softmax_cross_entropy_with(&logits, labels, criterion)?,
        };
        Ok((logits, loss))
    };
    match mode {
        Some(mode) => crate::autocast::with_mode(mode, || forward(model))?,
        None => forward(model),
    }
}

/// Reads [loss, correct count] back (one wait for the device); a non-finite loss is an error,
/// naming a label outside the `classes` if that is why (it makes the loss NaN too).
pub(crate) fn read_checked_stats(
    stats: &Tensor,
    labels: &Tensor,
    classes: usize,
    step: u64,
) -> Result<(f64, usize), TrainError> {
    let (loss, correct) = read_step_stats(stats)?;
    if !loss.is_finite() {
        backend::check_label_values(labels, classes)?;
    }
    check_finite(loss, step)?;
    Ok((loss, correct))
}

/// [loss, correct count] of a batch as one device tensor (read back with one copy).
pub(crate) fn step_stats(logits: &Tensor, loss: &Tensor, labels: &Tensor) -> crate::Result<Tensor> {
    let correct = backend::count_correct(&logits.detach(), labels)?;
    let loss = loss.detach().reshape(&[1])?;
    backend::concat(&[loss.raw(), &correct], 0).map(Tensor::from)
}

/// Reads [loss, correct count] back to the host (one wait for the device).
fn read_step_stats(stats: &Tensor) -> crate::Result<(f64, usize)> {
    let host = stats
        .to_device(Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_vec::<f64>()?;
    Ok((host[0], host[1] as usize))
}

/// Each trainable parameter's gradient, in parameter order (frozen ones have none); an error
/// names a trainable parameter that got none.
fn gradient_list(model: &dyn Module, grads: &Gradients) -> Result<Vec<Tensor>, TrainError> {
    model
        .parameters()
        .into_iter()
        .filter(|(_, p)| trains(p))
        .map(|(name, p)| {
            grads
                .get(p)
                .cloned()
                .ok_or_else(|| TrainError::InvalidArgument {
                    what: "backward",
                    why: format!("parameter {name} received no gradient"),
                })
        })
        .collect()
}

/// The optimizer's update of the model's parameters with `grads` (in parameter order).
fn update(
    model: &mut dyn Module,
    optimizer: &mut Optimizer,
    grads: &[Tensor],
) -> Result<(), TrainError> {
    let grad_refs: Vec<&Tensor> = grads.iter().collect();
    let mut params = model.parameters_mut();
    let mut param_refs: Vec<&mut Tensor> = (params.iter_mut())
        .filter(|(_, p)| trains(p))
        .map(|(_, p)| &mut **p)
        .collect();
    optimizer.step(&mut param_refs, &grad_refs)?;
    Ok(())
}

/// Backward's gradients applied by the optimizer (a step with no loss scaling).
pub(crate) fn apply_update(
    model: &mut dyn Module,
    optimizer: &mut Optimizer,
    grads: &Gradients,
) -> Result<(), TrainError> {
    let list = gradient_list(model, grads)?;
    update(model, optimizer, &list)
}
