// Batch normalization over an NCHW batch, per channel c over the M = N·H·W values x[n][c][h][w].
//
//   x̂ = (x − mean[c]) / √(var[c] + eps),   y = γ[c]·x̂ + β[c]
//
// Training normalizes with the batch's mean and biased variance (batch_norm_stats_f32), evaluation
// with the running statistics; the same normalize and backward kernels serve both.
// Backward: Σdy and Σdy·x̂ per channel (batch_norm_bwd_reduce_f32, which are dβ and dγ), then
//   training:   dx = γ/σ · (dy − Σdy/M − x̂·Σdy·x̂/M)
//   evaluation: dx = γ/σ · dy
// The per-channel kernels run one block of KILN_THREADS_PER_BLOCK threads per channel: thread t sums
// the channel's values t, t + 256, ... in that order, then a shared-memory tree adds the 256 partial
// sums, so results are deterministic (no atomics).
//
// Every kernel is a template over the storage type T of x, y, dy and dx (f32, bf16, f16: 16-bit
// activations are loaded to f32 and each result rounded once); the statistics, γ, β and the sums
// are f32. The kernels are <op>_f32, <op>_bf16 and <op>_f16.
#include "common.cuh"
#include "half.cuh"

// Value e (0 ≤ e < batch·plane) of channel c: image e / plane, pixel e % plane.
__device__ __forceinline__ long long bn_channel_offset(long long e, long long plane, int channels, int c) {
  const long long n = e / plane, q = e % plane;
  return (n * channels + c) * plane + q;
}

// Sums `partial` (one entry per thread of the block) into partial[0]; every thread must call it and
// may read partial[0] once it returns.
__device__ __forceinline__ void bn_block_tree_sum(float* partial) {
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
}

// Mirrors src/cuda/norm.rs `BatchNormStatsParams`.
template <typename T>
struct BatchNormStatsParams {
  const T* x;
  float* mean;  // [channels]
  float* var;   // [channels], biased: Σ(x − mean)²/M
  long long plane;  // H·W
  int batch, channels;
};

// One block per channel; two passes (the mean, then the squared deviations from it), so a large
// common offset (mean 1000, spread 0.1) costs no precision, unlike E[x²] − E[x]².
template <typename T>
__device__ __forceinline__ void batch_norm_stats(const BatchNormStatsParams<T>& p) {
  __shared__ float partial[KILN_THREADS_PER_BLOCK];
  const int c = blockIdx.x;
  const long long count = (long long)p.batch * p.plane;
  float s = 0.0f;
  for (long long e = threadIdx.x; e < count; e += blockDim.x) {
    s += to_f32(p.x[bn_channel_offset(e, p.plane, p.channels, c)]);
  }
  partial[threadIdx.x] = s;
  bn_block_tree_sum(partial);
  const float mean = partial[0] / (float)count;
  __syncthreads();  // everyone has read partial[0] before it is overwritten
  float sq = 0.0f;
  for (long long e = threadIdx.x; e < count; e += blockDim.x) {
    const float d = to_f32(p.x[bn_channel_offset(e, p.plane, p.channels, c)]) - mean;
    sq += d * d;
  }
  partial[threadIdx.x] = sq;
  bn_block_tree_sum(partial);
  if (threadIdx.x == 0) {
    p.mean[c] = mean;
    p.var[c] = partial[0] / (float)count;
  }
}
KILN_STORAGE_KERNELS_SYNC(batch_norm_stats, BatchNormStatsParams)

// Mirrors src/cuda/norm.rs `BatchNormFwdParams`.
template <typename T>
struct BatchNormFwdParams {
  const T* x;
  const float* mean;
  const float* var;
  const float* gamma;
  const float* beta;
  T* y;
  long long n;      // N·C·H·W
  long long plane;  // H·W
  int channels;
  float eps;
};

// y = γ·(x − mean)/√(var + eps) + β, one thread per element.
template <typename T>
__device__ __forceinline__ void batch_norm_fwd(const BatchNormFwdParams<T>& p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const int c = (int)((i / p.plane) % p.channels);
    const float inv_std = 1.0f / sqrtf(p.var[c] + p.eps);
    p.y[i] = from_f32<T>(p.gamma[c] * ((to_f32(p.x[i]) - p.mean[c]) * inv_std) + p.beta[c]);
  }
}
KILN_STORAGE_KERNELS(batch_norm_fwd, BatchNormFwdParams)

// Mirrors src/cuda/norm.rs `BatchNormBwdReduceParams`.
template <typename T>
struct BatchNormBwdReduceParams {
  const T* dy;
  const T* x;
  const float* mean;
  const float* var;
  float* sum_dy;       // [channels]: Σ dy = dβ
  float* sum_dy_xhat;  // [channels]: Σ dy·x̂ = dγ
  long long plane;
  int batch, channels;
  float eps;
};

// One block per channel, both sums in one pass.
template <typename T>
__device__ __forceinline__ void batch_norm_bwd_reduce(const BatchNormBwdReduceParams<T>& p) {
  __shared__ float partial_dy[KILN_THREADS_PER_BLOCK];
  __shared__ float partial_dy_xhat[KILN_THREADS_PER_BLOCK];
  const int c = blockIdx.x;
  const long long count = (long long)p.batch * p.plane;
  const float mean = p.mean[c];
  const float inv_std = 1.0f / sqrtf(p.var[c] + p.eps);
  float s = 0.0f, sx = 0.0f;
  for (long long e = threadIdx.x; e < count; e += blockDim.x) {
    const long long i = bn_channel_offset(e, p.plane, p.channels, c);
    const float dy = to_f32(p.dy[i]);
    s += dy;
    sx += dy * ((to_f32(p.x[i]) - mean) * inv_std);
  }
  partial_dy[threadIdx.x] = s;
  partial_dy_xhat[threadIdx.x] = sx;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) {
      partial_dy[threadIdx.x] += partial_dy[threadIdx.x + half];
      partial_dy_xhat[threadIdx.x] += partial_dy_xhat[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    p.sum_dy[c] = partial_dy[0];
    p.sum_dy_xhat[c] = partial_dy_xhat[0];
  }
}
KILN_STORAGE_KERNELS_SYNC(batch_norm_bwd_reduce, BatchNormBwdReduceParams)

// Mirrors src/cuda/norm.rs `BatchNormBwdDxParams`.
template <typename T>
struct BatchNormBwdDxParams {
  const T* dy;
  const T* x;
  const float* mean;
  const float* var;
  const float* gamma;
  const float* sum_dy;
  const float* sum_dy_xhat;
  T* dx;
  long long n;
  long long plane;
  int channels;
  int training;  // 1: the statistics came from this batch (subtract the mean terms); 0: constants
  float eps;
  float inv_count;  // 1/M
};

// dx = γ/σ·(dy − Σdy/M − x̂·Σdy·x̂/M) in training, γ/σ·dy in evaluation; one thread per element.
template <typename T>
__device__ __forceinline__ void batch_norm_bwd_dx(const BatchNormBwdDxParams<T>& p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const int c = (int)((i / p.plane) % p.channels);
    const float inv_std = 1.0f / sqrtf(p.var[c] + p.eps);
    float g = to_f32(p.dy[i]);
    if (p.training) {
      const float xhat = (to_f32(p.x[i]) - p.mean[c]) * inv_std;
      g -= p.sum_dy[c] * p.inv_count + xhat * (p.sum_dy_xhat[c] * p.inv_count);
    }
    p.dx[i] = from_f32<T>(p.gamma[c] * inv_std * g);
  }
}
KILN_STORAGE_KERNELS(batch_norm_bwd_dx, BatchNormBwdDxParams)
