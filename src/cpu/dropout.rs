//! CPU reference of kernels/dropout.cu.
