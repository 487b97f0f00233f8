//! Launchers for kernels/dropout.cu.
