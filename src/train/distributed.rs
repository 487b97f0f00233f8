//! The training loop's distributed parts ([`crate::dist`]), so that the loop itself only calls
//! them; with one rank each is a no-op (or the plain behaviour), and a run trains as before.
//!
//! Under `mpirun -np N` the run follows PyTorch DDP:
//! - every rank builds the model, then takes rank 0's weights and buffers ([`broadcast_model`]);
//! - each epoch every rank draws the same seeded permutation and takes its strided share, padded
//!   by wrapping to equal step counts ([`Shard`], `DistributedSampler`'s rule), so the global
//!   batch is N × `--batch-size`;
//! - the gradients are averaged by all-reduce before the update ([`backward_and_average`]), in
//!   buckets of [`BUCKET_BYTES`](crate::dist::BUCKET_BYTES) (`KILN_DIST_BUCKET_MB` sets another
//!   size) launched in the same order on every rank, each as soon as backward has finished its
//!   gradients (overlapping the rest of backward), so every rank applies the same update; `KILN_DIST_CHECK_EVERY=K` (default 100 in debug builds,
//!   off in release builds) compares the ranks' weights by a checksum all-reduce every K steps;
//! - batch norm normalizes each rank's batch by that batch's own statistics (per-rank, as DDP
//!   without SyncBatchNorm); the running statistics are rank 0's, broadcast before each
//!   evaluation (DDP's `broadcast_buffers`). With `--sync-bn` ([`synchronize_batch_norms`]) it
//!   normalizes by the statistics of the global batch, summed over the ranks in each forward
//!   pass (and its gradient sums in backward), as `SyncBatchNorm`: the ranks' running statistics
//!   are then identical, and N ranks of batch B train as one rank of batch N·B (the gradient
//!   buckets are then launched at the end of backward, after the batch norms' sums);
//! - evaluation is sharded without padding and its sums reduced: every rank gets the loss,
//!   accuracy and predictions of the whole split;
//! - only rank 0 locks and writes the run directory (checkpoints, metrics.csv, plots); the
//!   checkpoints record the world size, and `--resume` needs the same one.

use std::path::Path;

use super::config::TrainConfig;
use super::error::TrainError;
use super::evaluate::{evaluate as evaluate_shard, Evaluation};
use super::freeze::trains;
use super::meta::CheckpointMeta;
use super::metrics::{MetricsCsv, PlannedHistory};
use super::progress::{EpochTotals, Progress};
use super::run_dir::RunDir;
use crate::data::{DataLoader, Shard};
use crate::dist::{self, world, ReduceOp};
use crate::nn::Module;
use crate::tensor::Tensor;

/// The steps between two weight checksums in debug builds when `KILN_DIST_CHECK_EVERY` is unset.
pub const DEBUG_CHECK_EVERY: u64 = 100;

fn dist_error(e: crate::Error) -> TrainError {
    TrainError::from(e)
}

/// What only a one-rank run can do: CUDA graphs replay a step with no room for an all-reduce.
pub(crate) fn check_config(config: &TrainConfig) -> Result<(), TrainError> {
    bucket_bytes()?;
    if world().is_distributed() && config.cuda_graph {
        return Err(TrainError::invalid(
            "cuda-graph",
            format!(
                "a captured step has no all-reduce of the gradients: drop --cuda-graph to train \
                 on {} ranks",
                world().size()
            ),
        ));
    }
    Ok(())
}

/// Whether this rank writes the run directory (rank 0).
pub(crate) fn is_writer() -> bool {
    world().is_root()
}

/// The run directory's lock, held by the writing rank only.
pub(crate) fn lock_run_dir(out: &Path) -> Result<Option<RunDir>, TrainError> {
    is_writer().then(|| RunDir::lock(out)).transpose()
}

/// metrics.csv, opened by the writing rank only; every rank keeps the history.
pub(crate) fn open_history(
    planned: PlannedHistory,
) -> Result<(Option<MetricsCsv>, Vec<crate::train::EpochMetrics>), TrainError> {
    if is_writer() {
        let (csv, history) = planned.open()?;
        return Ok((Some(csv), history));
    }
    Ok((None, planned.kept().to_vec()))
}

/// This rank's share of each training epoch (padded to equal step counts).
pub(crate) fn train_shard() -> Result<Shard, TrainError> {
    Ok(Shard::training(world().rank(), world().size())?)
}

/// This rank's share of an evaluation (each sample once).
pub(crate) fn eval_shard() -> Result<Shard, TrainError> {
    Ok(Shard::evaluation(world().rank(), world().size())?)
}

/// Rank 0's parameters and buffers on every rank.
pub(crate) fn broadcast_model(model: &mut dyn Module) -> Result<(), TrainError> {
    if !world().is_distributed() {
        return Ok(());
    }
    broadcast_buffers(model)?;
    let mut params = model.parameters_mut();
    let mut refs: Vec<&mut Tensor> = params.iter_mut().map(|(_, p)| &mut **p).collect();
    dist::broadcast_tensors(world(), &mut refs).map_err(dist_error)
}

/// With `sync`, every batch norm of `model` normalizes over the global batch across the ranks
/// (`--sync-bn`), else over each rank's own batch; with one rank they are the same, and the
/// batch norms stay plain. Rank 0 says how many were synchronized.
pub(crate) fn synchronize_batch_norms(model: &mut dyn Module, sync: bool) {
    let sum = (sync && world().is_distributed()).then(|| dist::RankSum::over(world()));
    let norms = model.batch_norms_mut();
    let count = norms.len();
    for norm in norms {
        norm.inner.synchronize(sum.clone());
    }
    if !(sync && is_writer()) {
        return;
    }
    let message = match (count, world().size()) {
        (0, _) => "--sync-bn: the model has no batch norm".to_string(),
        (_, 1) => format!("--sync-bn: {count} batch norms, one rank: plain batch norm"),
        (_, ranks) => format!("--sync-bn: {count} batch norms normalize over all {ranks} ranks"),
    };
    eprintln!("kiln: {message}");
}

/// Rank 0's buffers (batch norm's running statistics) on every rank.
fn broadcast_buffers(model: &mut dyn Module) -> Result<(), TrainError> {
    let mut buffers = model.buffers_mut();
    let mut refs: Vec<&mut Tensor> = buffers.iter_mut().map(|(_, b)| &mut **b).collect();
    dist::broadcast_tensors(world(), &mut refs).map_err(dist_error)
}

/// The environment variable that sets the gradient bucket size in MB (default 25, as DDP's
/// `bucket_cap_mb`; a fraction such as 0.01 is allowed).
pub const BUCKET_MB_VAR: &str = "KILN_DIST_BUCKET_MB";

/// The environment variable that makes every rank print, after the first step, how its buckets
/// overlapped backward (the evidence the tests read).
pub const OVERLAP_LOG_VAR: &str = "KILN_DIST_LOG_OVERLAP";

/// The gradient bytes one all-reduce carries at most: `KILN_DIST_BUCKET_MB`, else 25 MB.
pub(crate) fn bucket_bytes() -> Result<usize, TrainError> {
    let Ok(text) = std::env::var(BUCKET_MB_VAR) else {
        return Ok(dist::BUCKET_BYTES);
    };
    match text.trim().parse::<f64>() {
        Ok(mb) if mb.is_finite() && mb > 0.0 && mb <= 1e6 => {
            Ok(((mb * 1024.0 * 1024.0) as usize).max(1))
        }
        _ => Err(TrainError::invalid(
            BUCKET_MB_VAR,
            format!("{text:?} is not a bucket size in MB between 0 (exclusive) and 1e6, e.g. 25"),
        )),
    }
}

/// Backward from `loss`, with the trainable parameters' gradients averaged over the ranks in
/// buckets launched while backward runs ([`dist::OverlappedMean`]); the means in parameter order.
/// A trainable parameter that got no gradient gets zeros (on every world size, so one rank and
/// several agree), with a notice naming it once.
pub(crate) fn backward_and_average(
    model: &dyn Module,
    loss: &Tensor,
    step: u64,
) -> Result<Vec<Tensor>, TrainError> {
    let params: Vec<(String, &Tensor)> = (model.parameters().into_iter())
        .filter(|(_, p)| trains(p))
        .collect();
    let refs: Vec<&Tensor> = params.iter().map(|(_, p)| *p).collect();
    let mut mean = dist::OverlappedMean::new(world(), &refs, bucket_bytes()?)?;
    // Synchronized batch norms sum over the ranks during backward on the buckets' queue: the
    // buckets wait for the end, so both keep one order on every rank.
    if model
        .batch_norms()
        .iter()
        .any(|n| n.inner.is_synchronized())
    {
        mean = mean.launching_at_finish();
    }
    loss.backward_with(|id, g| mean.ready(id, g))?;
    let (means, report) = mean.finish()?;
    note_unused(&params, &report);
    if step == 0 && std::env::var_os(OVERLAP_LOG_VAR).is_some() {
        world().say(&overlap_line(&report));
    }
    Ok(means)
}

/// The line `KILN_DIST_LOG_OVERLAP` prints.
fn overlap_line(report: &dist::OverlapReport) -> String {
    format!(
        "{} of {} gradient buckets launched before the last gradient; gradients finished {} \
         reverse parameter order; {} unused",
        report.launched_before_last_gradient,
        report.buckets,
        match report.out_of_order() {
            true => "out of",
            false => "in",
        },
        report.unused.len()
    )
}

/// Says once per run which trainable parameter got no gradient (and so a zero one).
fn note_unused(params: &[(String, &Tensor)], report: &dist::OverlapReport) {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Some(&first) = report.unused.first() {
        SAID.call_once(|| {
            world().say(&format!(
                "parameter {} (and {} more) received no gradient: it is reduced as zeros (DDP's \
                 find_unused_parameters)",
                params[first].0,
                report.unused.len() - 1
            ))
        });
    }
}

/// Every `KILN_DIST_CHECK_EVERY` steps (see the module docs): an error unless the ranks'
/// parameters are identical after step `step`.
pub(crate) fn check_in_sync(model: &dyn Module, step: u64) -> Result<(), TrainError> {
    let every = check_every();
    if !world().is_distributed() || every == 0 || (step + 1) % every != 0 {
        return Ok(());
    }
    let params = model.parameters();
    let refs: Vec<&Tensor> = params.iter().map(|(_, p)| *p).collect();
    dist::sync::check_identical(world(), &refs, &format!("after step {}", step + 1))
        .map_err(dist_error)
}

fn check_every() -> u64 {
    let default = if cfg!(debug_assertions) {
        DEBUG_CHECK_EVERY
    } else {
        0
    };
    std::env::var("KILN_DIST_CHECK_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The progress display: rank 0's; the other ranks report nothing.
pub(crate) fn progress(epochs: usize, batches: usize) -> Progress {
    match is_writer() {
        true => Progress::new(epochs, batches),
        false => Progress::plain(std::io::sink(), epochs, batches, 0),
    }
}

/// An epoch's training totals over every rank: images summed, loss and accuracy weighted by
/// each rank's images, the time of the slowest rank.
pub(crate) fn reduce_totals(mine: EpochTotals) -> Result<EpochTotals, TrainError> {
    if !world().is_distributed() {
        return Ok(mine);
    }
    let images = mine.images as f64;
    let mut sums = [images, mine.loss * images, mine.accuracy * images];
    let mut slowest = [mine.seconds];
    world().all_reduce(&mut sums, ReduceOp::Sum)?;
    world().all_reduce(&mut slowest, ReduceOp::Max)?;
    let [images, loss, correct] = sums;
    let per = |v: f64| if images > 0.0 { v / images } else { 0.0 };
    Ok(EpochTotals {
        images: images as u64,
        loss: per(loss),
        accuracy: per(correct),
        seconds: slowest[0],
        images_per_sec: if slowest[0] > 0.0 {
            images / slowest[0]
        } else {
            0.0
        },
        ..mine
    })
}

/// [`evaluate`](super::evaluate) of the whole split behind `loader` (this rank's
/// [`eval_shard`] of it), on rank 0's buffers: the ranks' predictions gathered back into the
/// loader's order, the loss summed, so every rank gets the one-process result (but for the order
/// of the loss sum).
pub(crate) fn evaluate(
    model: &mut dyn Module,
    loader: &DataLoader,
) -> Result<Evaluation, TrainError> {
    if !world().is_distributed() {
        return evaluate_shard(model, loader);
    }
    broadcast_buffers(model)?;
    let mine = evaluate_shard(model, loader)?;
    let mut loss_sum = [mine.loss * mine.labels.len() as f64];
    world().all_reduce(&mut loss_sum, ReduceOp::Sum)?;
    let as_u64 = |v: &[usize]| v.iter().map(|&x| x as u64).collect::<Vec<_>>();
    let predictions = world().all_gather(&as_u64(&mine.predictions))?;
    let labels = world().all_gather(&as_u64(&mine.labels))?;
    let predictions = interleave(&predictions);
    let labels = interleave(&labels);
    let n = labels.len().max(1) as f64;
    let correct = predictions
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(Evaluation {
        loss: loss_sum[0] / n,
        accuracy: correct as f64 / n,
        predictions,
        labels,
    })
}

/// Evaluation shards back in order: shard `r` holds entries `r, r + N, ...` of the order.
fn interleave(shards: &[Vec<u64>]) -> Vec<usize> {
    let total = shards.iter().map(Vec::len).sum();
    (0..total)
        .map(|k| shards[k % shards.len()][k / shards.len()] as usize)
        .collect()
}

/// The world size a checkpoint records (1 before checkpoints recorded it).
pub(crate) fn world_size() -> usize {
    world().size()
}

/// `--resume` continues on as many ranks as the run had: another world size would change the
/// global batch and the sample order. The error says how to resume or start afresh.
pub(crate) fn check_world_size(meta: &CheckpointMeta, path: &Path) -> Result<(), TrainError> {
    let saved = meta.world_size.unwrap_or(1);
    let now = world().size();
    if saved == now {
        return Ok(());
    }
    let launch = |n: usize| match n {
        1 => "one process (no mpirun)".to_string(),
        n => format!("{n} ranks (mpirun -np {n})"),
    };
    Err(TrainError::format(
        path,
        format!(
            "was trained on {}; this run has {}: resume on {} (the global batch and the sample \
             order depend on the world size), or start a new run with --overwrite",
            launch(saved),
            launch(now),
            launch(saved)
        ),
    ))
}

/// Waits until the writing rank has written what the others read next (the best checkpoint).
pub(crate) fn wait_for_writer() -> Result<(), TrainError> {
    Ok(world().barrier()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_puts_evaluation_shards_back_in_order() {
        let shards = [vec![0, 3, 6], vec![1, 4], vec![2, 5]];
        assert_eq!(interleave(&shards), (0..7).collect::<Vec<_>>());
    }
}
