//! dropout primitives.
