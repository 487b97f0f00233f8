//! norm primitives.
