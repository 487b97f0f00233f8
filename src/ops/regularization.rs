//! Regularization penalties.
