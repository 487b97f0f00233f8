// Pooling over NCHW planes with stride, padding and dilation: max (the forward pass records the
// argmax so the backward pass routes each gradient to the one input that won), average, L2 norm, and
// global average. Every backward pass is a gather (one thread per input pixel, or per input element),
// so results are deterministic and no atomics are needed.
#include "common.cuh"
#include "half.cuh"

// Max, average and global average pooling are templates over the storage type T of x, y, dy and dx
// (f32, bf16, f16: 16-bit values are loaded to f32 and each result rounded once); the kernels are
// <op>_f32, <op>_bf16 and <op>_f16.

// Mirrors src/cuda/pool.rs `MaxPoolFwdParams`.
template <typename T>
struct MaxPoolFwdParams {
  const T* x;  // [N][C][H][W]
  T* y;        // [N][C][OH][OW]
  int* argmax;     // [N][C][OH][OW]: h·W + w of the winner in its input plane, -1 if none
  ConvGeom g;
};

// One thread per output. Padding never wins; ties go to the first tap in row-major window order.
template <typename T>
__device__ __forceinline__ void maxpool_fwd(const MaxPoolFwdParams<T>& p) {
  const ConvGeom g = p.g;
  const long long total = (long long)g.batch * g.channels * g.out_h * g.out_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int ow = (int)(i % g.out_w);
    const int oh = (int)((i / g.out_w) % g.out_h);
    const long long plane = i / ((long long)g.out_w * g.out_h);
    const T* x = p.x + plane * g.in_h * g.in_w;
    float best = -INFINITY;  // a window of padding only: the max of no values, as PyTorch's
    int best_index = -1;
    for (int kh = 0; kh < g.kernel_h; ++kh) {
      const int h = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
      if (h < 0 || h >= g.in_h) continue;
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        const int w = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
        if (w < 0 || w >= g.in_w) continue;
        const float v = to_f32(x[h * g.in_w + w]);
        if (best_index < 0 || v > best) {
          best = v;
          best_index = h * g.in_w + w;
        }
      }
    }
    p.y[i] = from_f32<T>(best);  // one of the inputs (or -inf): exact in T
    p.argmax[i] = best_index;
  }
}
KILN_STORAGE_KERNELS(maxpool_fwd, MaxPoolFwdParams)

// Mirrors src/cuda/pool.rs `MaxPoolBwdParams`.
template <typename T>
struct MaxPoolBwdParams {
  const T* dy;         // [N][C][OH][OW]
  const int* argmax;   // from the forward pass
  T* dx;               // [N][C][H][W], overwritten
  ConvGeom g;
};

// A gather: one thread per input pixel visits the windows that contain it and sums the gradients
// of those whose argmax is this pixel. Deterministic, no atomics.
template <typename T>
__device__ __forceinline__ void maxpool_bwd(const MaxPoolBwdParams<T>& p) {
  const ConvGeom g = p.g;
  const long long total = (long long)g.batch * g.channels * g.in_h * g.in_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int w = (int)(i % g.in_w);
    const int h = (int)((i / g.in_w) % g.in_h);
    const long long plane = i / ((long long)g.in_w * g.in_h);
    const long long out_base = plane * g.out_h * g.out_w;
    const int me = h * g.in_w + w;
    float sum = 0.0f;
    for_each_window_reading(g, h, w, [&](int oh, int ow, int, int) {
      const long long o = out_base + oh * g.out_w + ow;
      if (p.argmax[o] == me) sum += to_f32(p.dy[o]);
    });
    p.dx[i] = from_f32<T>(sum);
  }
}
KILN_STORAGE_KERNELS(maxpool_bwd, MaxPoolBwdParams)

// Number of taps of window `o` along one axis that read the input rather than the padding.
__device__ __forceinline__ int taps_in_bounds(int o, int kernel, int stride, int pad, int dilation,
                                              int in_len) {
  int count = 0;
  for (int k = 0; k < kernel; ++k) {
    const int i = o * stride - pad + k * dilation;
    if (i >= 0 && i < in_len) ++count;
  }
  return count;
}

// Number of taps of window `o` along one axis before `end`: with end = in_len + trailing padding
// (the padded extent), the taps that read the input or its padding, not ceil_mode's overhang.
__device__ __forceinline__ int taps_before(int o, int kernel, int stride, int pad, int dilation,
                                           int end) {
  int count = 0;
  for (int k = 0; k < kernel; ++k) {
    if (o * stride - pad + k * dilation < end) ++count;
  }
  return count;
}

// Divisor of average-pool window (oh, ow), as PyTorch's: with count_include_pad, its taps inside
// the padded input (KH·KW, fewer only where a ceil_mode window overhangs the padded extent
// extent_h x extent_w); else only the in-bounds taps (0 for a window that sees only padding).
__device__ __forceinline__ int avgpool_divisor(const ConvGeom& g, int oh, int ow,
                                               int count_include_pad, int extent_h, int extent_w) {
  if (count_include_pad)
    return taps_before(oh, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, extent_h) *
           taps_before(ow, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, extent_w);
  return taps_in_bounds(oh, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, g.in_h) *
         taps_in_bounds(ow, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, g.in_w);
}

// Mirrors src/cuda/pool.rs `AvgPoolFwdParams`.
template <typename T>
struct AvgPoolFwdParams {
  const T* x;  // [N][C][H][W]
  T* y;        // [N][C][OH][OW]
  ConvGeom g;
  int count_include_pad;  // 1: divide by the taps inside the padded input; 0: by the in-bounds taps
  int extent_h, extent_w;  // the padded input's end: H + bottom padding, W + right padding
};

// One thread per output: the sum of its in-bounds taps in row-major window order, divided by the
// divisor above. A window with divisor 0 (only padding, count_include_pad = 0) gives 0.
template <typename T>
__device__ __forceinline__ void avgpool_fwd(const AvgPoolFwdParams<T>& p) {
  const ConvGeom g = p.g;
  const long long total = (long long)g.batch * g.channels * g.out_h * g.out_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int ow = (int)(i % g.out_w);
    const int oh = (int)((i / g.out_w) % g.out_h);
    const long long plane = i / ((long long)g.out_w * g.out_h);
    const T* x = p.x + plane * g.in_h * g.in_w;
    float sum = 0.0f;
    for (int kh = 0; kh < g.kernel_h; ++kh) {
      const int h = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
      if (h < 0 || h >= g.in_h) continue;
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        const int w = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
        if (w < 0 || w >= g.in_w) continue;
        sum += to_f32(x[h * g.in_w + w]);
      }
    }
    const int divisor = avgpool_divisor(g, oh, ow, p.count_include_pad, p.extent_h, p.extent_w);
    p.y[i] = from_f32<T>(divisor > 0 ? sum / (float)divisor : 0.0f);
  }
}
KILN_STORAGE_KERNELS(avgpool_fwd, AvgPoolFwdParams)

// Mirrors src/cuda/pool.rs `AvgPoolBwdParams`.
template <typename T>
struct AvgPoolBwdParams {
  const T* dy;  // [N][C][OH][OW]
  T* dx;        // [N][C][H][W], overwritten
  ConvGeom g;
  int count_include_pad;
  int extent_h, extent_w;
};

// A gather: one thread per input pixel sums dy / divisor over the windows that read it, in
// row-major tap order. Windows with divisor 0 read no pixel, so they pass no gradient.
template <typename T>
__device__ __forceinline__ void avgpool_bwd(const AvgPoolBwdParams<T>& p) {
  const ConvGeom g = p.g;
  const long long total = (long long)g.batch * g.channels * g.in_h * g.in_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int w = (int)(i % g.in_w);
    const int h = (int)((i / g.in_w) % g.in_h);
    const long long plane = i / ((long long)g.in_w * g.in_h);
    const T* dy = p.dy + plane * g.out_h * g.out_w;
    float sum = 0.0f;
    for_each_window_reading(g, h, w, [&](int oh, int ow, int, int) {
      const int divisor = avgpool_divisor(g, oh, ow, p.count_include_pad, p.extent_h, p.extent_w);
      sum += to_f32(dy[oh * g.out_w + ow]) / (float)divisor;
    });
    p.dx[i] = from_f32<T>(sum);
  }
}
KILN_STORAGE_KERNELS(avgpool_bwd, AvgPoolBwdParams)

// Mirrors src/cuda/pool.rs `L2PoolFwdParams`.
struct L2PoolFwdParams {
  const float* x;  // [N][C][H][W]
  float* y;        // [N][C][OH][OW]
  ConvGeom g;
};

// One thread per output: y = sqrt(Σ x²) over the in-bounds taps (padding counts as 0), summed in
// row-major window order.
extern "C" __global__ void l2pool_fwd_f32(const L2PoolFwdParams p) {
  const ConvGeom g = p.g;
  const long long total = (long long)g.batch * g.channels * g.out_h * g.out_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int ow = (int)(i % g.out_w);
    const int oh = (int)((i / g.out_w) % g.out_h);
    const long long plane = i / ((long long)g.out_w * g.out_h);
    const float* x = p.x + plane * g.in_h * g.in_w;
    float sum = 0.0f;
    for (int kh = 0; kh < g.kernel_h; ++kh) {
      const int h = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
      if (h < 0 || h >= g.in_h) continue;
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        const int w = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
        if (w < 0 || w >= g.in_w) continue;
        const float v = x[h * g.in_w + w];
        sum += v * v;
      }
    }
    p.y[i] = sqrtf(sum);
  }
}
KILN_EMULATE(l2pool_fwd_f32, L2PoolFwdParams)

// Mirrors src/cuda/pool.rs `L2PoolBwdParams`.
struct L2PoolBwdParams {
  const float* x;   // [N][C][H][W], the forward input
  const float* y;   // [N][C][OH][OW], the forward output
  const float* dy;  // [N][C][OH][OW]
  float* dx;        // [N][C][H][W], overwritten
  ConvGeom g;
};

// A gather: dx = x · Σ dy / y over the windows that read the pixel, in row-major tap order.
// Windows with y = 0 (all their taps are 0) pass no gradient.
extern "C" __global__ void l2pool_bwd_f32(const L2PoolBwdParams p) {
  const ConvGeom g = p.g;
  const long long total = (long long)g.batch * g.channels * g.in_h * g.in_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int w = (int)(i % g.in_w);
    const int h = (int)((i / g.in_w) % g.in_h);
    const long long out_base = i / ((long long)g.in_w * g.in_h) * g.out_h * g.out_w;
    float sum = 0.0f;
    for_each_window_reading(g, h, w, [&](int oh, int ow, int, int) {
      const long long o = out_base + oh * g.out_w + ow;
      const float norm = p.y[o];
      if (norm > 0.0f) sum += p.dy[o] / norm;
    });
    p.dx[i] = p.x[i] * sum;
  }
}
KILN_EMULATE(l2pool_bwd_f32, L2PoolBwdParams)

// Mirrors src/cuda/pool.rs `GlobalAvgPoolFwdParams`.
template <typename T>
struct GlobalAvgPoolFwdParams {
  const T* x;  // [planes][plane_len]
  T* y;        // [planes]
  long long planes;
  long long plane_len;
};

// One block of KILN_THREADS_PER_BLOCK threads per plane (grid-stride over planes): thread t sums
// elements t, t + 256, ... of the plane, then a shared-memory tree adds the partial sums in a fixed
// order, so the result is deterministic. y = Σ / plane_len.
template <typename T>
__device__ __forceinline__ void global_avgpool_fwd(const GlobalAvgPoolFwdParams<T>& p) {
  __shared__ float partial[KILN_THREADS_PER_BLOCK];
  for (long long plane = blockIdx.x; plane < p.planes; plane += gridDim.x) {
    const T* x = p.x + plane * p.plane_len;
    float s = 0.0f;
    for (long long i = threadIdx.x; i < p.plane_len; i += blockDim.x) s += to_f32(x[i]);
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int half = KILN_THREADS_PER_BLOCK / 2; half > 0; half /= 2) {
      if ((int)threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) p.y[plane] = from_f32<T>(partial[0] / (float)p.plane_len);
    __syncthreads();  // partial[0] is read before the next plane overwrites it
  }
}
KILN_STORAGE_KERNELS_SYNC(global_avgpool_fwd, GlobalAvgPoolFwdParams)

// Mirrors src/cuda/pool.rs `GlobalAvgPoolBwdParams`.
template <typename T>
struct GlobalAvgPoolBwdParams {
  const T* dy;  // [planes]
  T* dx;        // [planes][plane_len], overwritten
  long long n;      // planes · plane_len
  long long plane_len;
};

// Elementwise: dx = dy of the element's plane / plane_len.
template <typename T>
__device__ __forceinline__ void global_avgpool_bwd(const GlobalAvgPoolBwdParams<T>& p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    p.dx[i] = from_f32<T>(to_f32(p.dy[i / p.plane_len]) / (float)p.plane_len);
  }
}
KILN_STORAGE_KERNELS(global_avgpool_bwd, GlobalAvgPoolBwdParams)

// Adaptive average pooling (PyTorch's adaptive_avg_pool2d): output row i of OH over H input rows
// reads rows [floor(i·H/OH), ceil((i+1)·H/OH)), and likewise for columns; windows overlap and vary
// in size when OH does not divide H (OH > H repeats rows). f32 only (16-bit inputs are widened).

// Mirrors src/cuda/pool.rs `AdaptiveAvgPoolParams`.
struct AdaptiveAvgPoolParams {
  const float* src;  // forward: x [planes][H][W]; backward: dy [planes][OH][OW]
  float* dst;        // forward: y [planes][OH][OW]; backward: dx [planes][H][W], overwritten
  long long planes;  // N·C
  int in_h, in_w, out_h, out_w;
};

__device__ __forceinline__ int adaptive_start(int i, int in_len, int out_len) {
  return (int)(((long long)i * in_len) / out_len);
}
__device__ __forceinline__ int adaptive_end(int i, int in_len, int out_len) {
  return (int)(((long long)(i + 1) * in_len + out_len - 1) / out_len);
}

// One thread per output: the window's sum in row-major order, divided by its size.
extern "C" __global__ void adaptive_avgpool_fwd_f32(const AdaptiveAvgPoolParams p) {
  const long long total = p.planes * p.out_h * p.out_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int ow = (int)(i % p.out_w);
    const int oh = (int)((i / p.out_w) % p.out_h);
    const float* x = p.src + i / ((long long)p.out_w * p.out_h) * p.in_h * p.in_w;
    const int h0 = adaptive_start(oh, p.in_h, p.out_h), h1 = adaptive_end(oh, p.in_h, p.out_h);
    const int w0 = adaptive_start(ow, p.in_w, p.out_w), w1 = adaptive_end(ow, p.in_w, p.out_w);
    float sum = 0.0f;
    for (int h = h0; h < h1; ++h)
      for (int w = w0; w < w1; ++w) sum += x[h * p.in_w + w];
    p.dst[i] = sum / (float)((h1 - h0) * (w1 - w0));
  }
}
KILN_EMULATE(adaptive_avgpool_fwd_f32, AdaptiveAvgPoolParams)

// A gather: one thread per input pixel (h, w) sums dy / window size over the windows that read it,
// rows [floor(h·OH/H), ceil((h+1)·OH/H)) by columns [floor(w·OW/W), ceil((w+1)·OW/W)), row-major.
extern "C" __global__ void adaptive_avgpool_bwd_f32(const AdaptiveAvgPoolParams p) {
  const long long total = p.planes * p.in_h * p.in_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int w = (int)(i % p.in_w);
    const int h = (int)((i / p.in_w) % p.in_h);
    const float* dy = p.src + i / ((long long)p.in_w * p.in_h) * p.out_h * p.out_w;
    float sum = 0.0f;
    for (int oh = adaptive_start(h, p.out_h, p.in_h); oh < adaptive_end(h, p.out_h, p.in_h); ++oh) {
      const int rows = adaptive_end(oh, p.in_h, p.out_h) - adaptive_start(oh, p.in_h, p.out_h);
      for (int ow = adaptive_start(w, p.out_w, p.in_w); ow < adaptive_end(w, p.out_w, p.in_w); ++ow) {
        const int cols = adaptive_end(ow, p.in_w, p.out_w) - adaptive_start(ow, p.in_w, p.out_w);
        sum += dy[oh * p.out_w + ow] / (float)(rows * cols);
      }
    }
    p.dst[i] = sum;
  }
}
KILN_EMULATE(adaptive_avgpool_bwd_f32, AdaptiveAvgPoolParams)
