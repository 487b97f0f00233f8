// Helpers shared by every kernel file: index arithmetic, the grid-stride loop, the convolution
// geometry struct. Included first by each .cu; pulls in the CPU emulation shim when built for it.
#pragma once

#include "emulation.h"

#define KILN_THREADS_PER_BLOCK 256

__host__ __device__ __forceinline__ long long ceil_div(long long a, long long b) {
  return (a + b - 1) / b;
}

// Global index of this thread in a 1-d grid, and the stride of a grid-stride loop.
__device__ __forceinline__ long long global_thread_index() {
  return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_stride() { return (long long)blockDim.x * gridDim.x; }

#define KILN_GRID_STRIDE_LOOP(i, n) \
  for (long long i = global_thread_index(); i < (long long)(n); i += grid_stride())

// Mirrors src/cuda/params.rs `ConvGeom`: a convolution or pooling window over an NCHW batch.
struct ConvGeom {
  int batch, channels, in_h, in_w;
  int kernel_h, kernel_w;
  int stride_h, stride_w;
  int pad_h, pad_w;
  int dilation_h, dilation_w;
  int out_h, out_w;
};
