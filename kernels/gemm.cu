// Tiled f32 GEMM with shared-memory tiles and 4x4 register blocking, plus the bias add and the
// bias-gradient reduction that convolution and linear layers need around it.
//
// C = alpha·op(A)·op(B) + beta·C, row-major. op(A) is m×k, stored [m][k] or, with trans_a, [k][m];
// op(B) is k×n, stored [k][n] or, with trans_b, [n][k]. The z index picks the batch entry (operand b
// starts at b·stride); with reduce_batch the batch is summed into one C inside each block instead.
// A second batch level, groups (grouped convolution), adds g·group_stride to each operand: z runs
// over (batch entry, group) pairs, group fastest, or over groups alone when the batch is reduced.
// The grid's z is capped at 65535, so a block walks z in steps of gridDim.z.
//
// Mapping: a block of 256 threads computes a 64x64 tile of C; thread (ty, tx) = (tid/16, tid%16)
// owns rows ty + 16·i and columns tx + 16·j, i, j in 0..4. The k loop stages 64x16 panels of A and
// 16x64 panels of B in shared memory; loads are arranged so consecutive threads read consecutive
// addresses for either storage order.
#include "common.cuh"

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_THREADS 256

// Mirrors src/cuda/gemm.rs `GemmParams`.
struct GemmParams {
  const float* a;
  const float* b;
  float* c;
  long long stride_a, stride_b, stride_c;
  long long group_stride_a, group_stride_b, group_stride_c;
  int m, n, k;
  int trans_a, trans_b;
  int batch, reduce_batch;
  int groups;
  float alpha, beta;
};

__device__ __forceinline__ void gemm_load_tiles(const GemmParams& p, const float* a, const float* b,
                                                int m0, int n0, int k0, int tid,
                                                float (*as)[GEMM_BM], float (*bs)[GEMM_BN]) {
  for (int e = tid; e < GEMM_BM * GEMM_BK; e += GEMM_THREADS) {
    int row, kk;
    if (p.trans_a) {  // stored [k][m]: walk m fastest
      kk = e / GEMM_BM;
      row = e % GEMM_BM;
    } else {  // stored [m][k]: walk k fastest
      row = e / GEMM_BK;
      kk = e % GEMM_BK;
    }
    const int gr = m0 + row, gk = k0 + kk;
    float v = 0.0f;
    if (gr < p.m && gk < p.k) {
      v = p.trans_a ? a[(long long)gk * p.m + gr] : a[(long long)gr * p.k + gk];
    }
    as[kk][row] = v;
  }
  for (int e = tid; e < GEMM_BK * GEMM_BN; e += GEMM_THREADS) {
    int col, kk;
    if (p.trans_b) {  // stored [n][k]: walk k fastest
      col = e / GEMM_BK;
      kk = e % GEMM_BK;
    } else {  // stored [k][n]: walk n fastest
      kk = e / GEMM_BN;
      col = e % GEMM_BN;
    }
    const int gc = n0 + col, gk = k0 + kk;
    float v = 0.0f;
    if (gc < p.n && gk < p.k) {
      v = p.trans_b ? b[(long long)gc * p.k + gk] : b[(long long)gk * p.n + gc];
    }
    bs[kk][col] = v;
  }
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS) gemm_f32(const GemmParams p) {
  __shared__ float as[GEMM_BK][GEMM_BM];
  __shared__ float bs[GEMM_BK][GEMM_BN];
  const int tid = threadIdx.x;
  const int ty = tid / 16, tx = tid % 16;
  const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;

  const int outputs = (p.reduce_batch ? 1 : p.batch) * p.groups;
  for (int z = blockIdx.z; z < outputs; z += gridDim.z) {
    const int g = z % p.groups;
    const int first = p.reduce_batch ? 0 : z / p.groups;
    const int last = p.reduce_batch ? p.batch : first + 1;

    float acc[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int bi = first; bi < last; ++bi) {
      const float* a = p.a + bi * p.stride_a + g * p.group_stride_a;
      const float* b = p.b + bi * p.stride_b + g * p.group_stride_b;
      for (int k0 = 0; k0 < p.k; k0 += GEMM_BK) {
        gemm_load_tiles(p, a, b, m0, n0, k0, tid, as, bs);
        __syncthreads();
        for (int kk = 0; kk < GEMM_BK; ++kk) {
          float ra[4], rb[4];
          for (int i = 0; i < 4; ++i) ra[i] = as[kk][ty + 16 * i];
          for (int j = 0; j < 4; ++j) rb[j] = bs[kk][tx + 16 * j];
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) acc[i][j] += ra[i] * rb[j];
        }
        __syncthreads();
      }
    }

    float* c = p.c + (p.reduce_batch ? 0 : (long long)first * p.stride_c) + g * p.group_stride_c;
    for (int i = 0; i < 4; ++i) {
      const int r = m0 + ty + 16 * i;
      if (r >= p.m) continue;
      for (int j = 0; j < 4; ++j) {
        const int col = n0 + tx + 16 * j;
        if (col >= p.n) continue;
        float* out = c + (long long)r * p.n + col;
        // beta == 0 ignores the old C entirely, so NaN garbage in it does not leak (BLAS rule).
        *out = p.beta == 0.0f ? p.alpha * acc[i][j] : p.alpha * acc[i][j] + p.beta * *out;
      }
    }
  }
}
KILN_EMULATE_SYNC(gemm_f32, GemmParams)

// Mirrors src/cuda/gemm.rs `BiasAddParams`.
struct BiasAddParams {
  float* y;            // [outer][channels][inner], updated in place
  const float* bias;   // [channels]
  long long total;     // outer·channels·inner
  int channels, inner;
};

extern "C" __global__ void bias_add_f32(const BiasAddParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.total) { p.y[i] += p.bias[(i / p.inner) % p.channels]; }
}
KILN_EMULATE(bias_add_f32, BiasAddParams)

// Mirrors src/cuda/gemm.rs `BiasGradParams`.
struct BiasGradParams {
  const float* dy;  // [outer][channels][inner]
  float* db;        // [channels], overwritten
  int outer, channels, inner;
};

// One block per channel: each thread sums a fixed strided subset, then a shared-memory tree
// reduction combines them, so the result does not depend on scheduling.
extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK) bias_grad_f32(const BiasGradParams p) {
  __shared__ float partial[KILN_THREADS_PER_BLOCK];
  const int c = blockIdx.x;
  const long long count = (long long)p.outer * p.inner;
  float sum = 0.0f;
  for (long long e = threadIdx.x; e < count; e += blockDim.x) {
    const long long o = e / p.inner, q = e % p.inner;
    sum += p.dy[(o * p.channels + c) * p.inner + q];
  }
  sum = block_reduce(partial, sum, false);
  if (threadIdx.x == 0) p.db[c] = sum;
}
KILN_EMULATE_SYNC(bias_grad_f32, BiasGradParams)
