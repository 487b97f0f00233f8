//! CPU reference of kernels/shape.cu.
