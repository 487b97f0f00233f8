// Helpers shared by every kernel file: index arithmetic, the grid-stride loop, the convolution
// geometry struct. Included first by each .cu; pulls in the CPU emulation shim when built for it.
#pragma once

#include "emulation.h"

#include <cstddef>  // offsetof, for the layout checks against the Rust mirrors

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

// Mirrors src/cuda/graph.rs `StepScalars`: the values of a training step that change from step to
// step. A step replayed from a CUDA graph cannot take them by value (a graph's launch parameters
// are fixed when it is captured), so the host writes them here before each replay and the kernels
// that need them read them through a pointer, which is null in an eager step.
struct KilnStepScalars {
  unsigned long long step;      // the training step (dropout masks)
  float lr;                     // SGD and RMSprop learning rate
  float step_size;              // Adam: lr / (1 − beta1^t)
  float bias_correction2_sqrt;  // Adam: sqrt(1 − beta2^t)
  float decay;                  // AdamW: 1 − lr·wd (1 for Adam)
};

// The shape of a GEMM launch: fields every GEMM kernel's parameter struct has right after its
// operand pointers a, b, c (mirrors src/cuda/gemm.rs `GemmLayout`, nested there at this place).
#define KILN_GEMM_LAYOUT_FIELDS                               \
  long long stride_a, stride_b, stride_c;                     \
  long long group_stride_a, group_stride_b, group_stride_c;   \
  int m, n, k;                                                \
  int trans_a, trans_b;                                       \
  int batch, reduce_batch;                                    \
  int groups

// What every GEMM kernel does with its accumulators, fields each one's parameter struct ends with
// (mirrors src/cuda/gemm.rs `GemmEpilogue`, nested there at this place): C = alpha·acc + beta·C
// + row_bias[g·m + row] + col_bias[g·n + col], stored in f32 or, with c_16bit (the 16-bit GEMMs
// only, beta 0), rounded once to the operands' format.
#define KILN_GEMM_EPILOGUE_FIELDS                                                    \
  const float* row_bias; /* [groups·m] added to each row (a convolution's bias), or null */ \
  const float* col_bias; /* [groups·n] added to each column (a linear layer's), or null */  \
  float alpha, beta;                                                                   \
  int c_16bit

// Mirrors src/cuda/params.rs `ConvGeom`: a convolution or pooling window over an NCHW batch.
struct ConvGeom {
  int batch, channels, in_h, in_w;
  int kernel_h, kernel_w;
  int stride_h, stride_w;
  int pad_h, pad_w;
  int dilation_h, dilation_w;
  int out_h, out_w;
};

// Calls visit(oh, ow, kh, kw) for every output window (oh, ow) whose tap (kh, kw) reads input pixel
// (h, w), in a fixed order. The gathers (col2im, max-pool backward) are built on it.
template <typename Visit>
__device__ __forceinline__ void for_each_window_reading(const ConvGeom& g, int h, int w, Visit visit) {
  for (int kh = 0; kh < g.kernel_h; ++kh) {
    const int oh_num = h + g.pad_h - kh * g.dilation_h;
    if (oh_num < 0 || oh_num % g.stride_h != 0) continue;
    const int oh = oh_num / g.stride_h;
    if (oh >= g.out_h) continue;
    for (int kw = 0; kw < g.kernel_w; ++kw) {
      const int ow_num = w + g.pad_w - kw * g.dilation_w;
      if (ow_num < 0 || ow_num % g.stride_w != 0) continue;
      const int ow = ow_num / g.stride_w;
      if (ow >= g.out_w) continue;
      visit(oh, ow, kh, kw);
    }
  }
}

// Tree reduction of one value per thread over the block (blockDim.x a power of two, scratch holding
// blockDim.x floats): the max (take_max) or the sum, in a fixed order, so the result is
// deterministic. Every thread gets the result; scratch may be reused right after.
__device__ __forceinline__ float block_reduce(float* scratch, float v, bool take_max) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) {
      const float other = scratch[threadIdx.x + half];
      scratch[threadIdx.x] = take_max ? fmaxf(scratch[threadIdx.x], other) : scratch[threadIdx.x] + other;
    }
    __syncthreads();
  }
  const float result = scratch[0];
  __syncthreads();
  return result;
}
