//! Launchers for kernels/shape.cu.
