//! CPU reference of kernels/norm.cu.
