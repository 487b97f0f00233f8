//! shape primitives.
