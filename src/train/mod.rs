//! Training: the loop, metrics, checkpoints, reports.
