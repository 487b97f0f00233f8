//! Concatenation and other shape operations.
