//! Batch normalization.
