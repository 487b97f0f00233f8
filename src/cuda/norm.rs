//! Launchers for kernels/norm.cu.
