// Tiled f32 GEMM with shared-memory tiles and 4x4 register blocking, plus the bias add and the
// bias-gradient reduction that convolution and linear layers need around it.
//
// C = alpha·op(A)·op(B) + beta·C (+ row_bias[g·m + row] when given: a convolution's bias; +
// col_bias[g·n + col]: a linear layer's; both added in the epilogue instead of by another pass
// over C), row-major. op(A) is m×k, stored [m][k] or,
// with trans_a, [k][m];
// op(B) is k×n, stored [k][n] or, with trans_b, [n][k]. The z index picks the batch entry (operand b
// starts at b·stride); with reduce_batch the batch is summed into one C inside each block instead.
// A second batch level, groups (grouped convolution), adds g·group_stride to each operand: z runs
// over (batch entry, group) pairs, group fastest, or over groups alone when the batch is reduced.
// The grid's z is capped at 65535, so a block walks z in steps of gridDim.z.
//
// Mapping (gemm_f32): a block of 256 threads computes a 64x64 tile of C; thread (ty, tx) =
// (tid/16, tid%16) owns rows ty + 16·i and columns tx + 16·j, i, j in 0..4. The k loop stages 64x16
// panels of A and 16x64 panels of B in shared memory; loads are arranged so consecutive threads
// read consecutive addresses for either storage order. gemm_32x128_f32 and gemm_16x256_f32 are the
// same code with flatter tiles (see GemmTile) for products with few rows.
#include "common.cuh"
#include "half.cuh"

#define GEMM_BK 16
#define GEMM_THREADS 256

// Mirrors src/cuda/gemm.rs `GemmParams`.
struct GemmParams {
  const float* a;
  const float* b;
  float* c;
  KILN_GEMM_LAYOUT_FIELDS;
  // gemm_128x128_f32 only: 1 when 16-byte vector accesses are valid for that operand (base address
  // 16-byte aligned, batch and group strides and the leading dimension multiples of 4).
  int vec_a, vec_b, vec_c;
  KILN_GEMM_EPILOGUE_FIELDS;  // c_16bit is always 0 here: these kernels write f32
};
static_assert(offsetof(GemmParams, row_bias) == 120, "mirrors src/cuda/gemm.rs GemmParams");

// The bias of row r of group g's C (0 without one).
__device__ __forceinline__ float gemm_row_bias(const float* row_bias, int g, int m, int r) {
  return row_bias ? row_bias[(long long)g * m + r] : 0.0f;
}

// The tile of C a block of 256 threads computes: BM x (4096 / BM). 64x64 is the general kernel;
// 32x128 and 16x256 serve products with few rows (a convolution with 16 or 32 output channels,
// whose 64-row tiles would be mostly padding). Thread (ty, tx) = (tid / TX, tid % TX) with
// TX = 1024 / BM owns rows ty + (BM/4)·i and columns tx + TX·j, i, j in 0..4.
template <int BM>
struct GemmTile {
  static constexpr int BN = 4096 / BM;
  static constexpr int TY = BM / 4;   // thread rows
  static constexpr int TX = 1024 / BM;  // thread columns
};

template <int BM, int BN>
__device__ __forceinline__ void gemm_load_tiles(const GemmParams& p, const float* a, const float* b,
                                                int m0, int n0, int k0, int tid,
                                                float (*as)[BM], float (*bs)[BN]) {
  for (int e = tid; e < BM * GEMM_BK; e += GEMM_THREADS) {
    int row, kk;
    if (p.trans_a) {  // stored [k][m]: walk m fastest
      kk = e / BM;
      row = e % BM;
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
  for (int e = tid; e < GEMM_BK * BN; e += GEMM_THREADS) {
    int col, kk;
    if (p.trans_b) {  // stored [n][k]: walk k fastest
      col = e / GEMM_BK;
      kk = e % GEMM_BK;
    } else {  // stored [k][n]: walk n fastest
      kk = e / BN;
      col = e % BN;
    }
    const int gc = n0 + col, gk = k0 + kk;
    float v = 0.0f;
    if (gc < p.n && gk < p.k) {
      v = p.trans_b ? b[(long long)gc * p.k + gk] : b[(long long)gk * p.n + gc];
    }
    bs[kk][col] = v;
  }
}

template <int BM>
__device__ __forceinline__ void gemm_tiled(const GemmParams& p, float (*as)[BM],
                                           float (*bs)[GemmTile<BM>::BN]) {
  constexpr int BN = GemmTile<BM>::BN, TY = GemmTile<BM>::TY, TX = GemmTile<BM>::TX;
  const int tid = threadIdx.x;
  const int ty = tid / TX, tx = tid % TX;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

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
        gemm_load_tiles<BM, BN>(p, a, b, m0, n0, k0, tid, as, bs);
        __syncthreads();
        for (int kk = 0; kk < GEMM_BK; ++kk) {
          float ra[4], rb[4];
          for (int i = 0; i < 4; ++i) ra[i] = as[kk][ty + TY * i];
          for (int j = 0; j < 4; ++j) rb[j] = bs[kk][tx + TX * j];
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) acc[i][j] += ra[i] * rb[j];
        }
        __syncthreads();
      }
    }

    float* c = p.c + (p.reduce_batch ? 0 : (long long)first * p.stride_c) + g * p.group_stride_c;
    // This group's column bias, found once (see g128_body).
    const float* col_bias = p.col_bias ? p.col_bias + (long long)g * p.n : nullptr;
    for (int i = 0; i < 4; ++i) {
      const int r = m0 + ty + TY * i;
      if (r >= p.m) continue;
      const float bias = gemm_row_bias(p.row_bias, g, p.m, r);
      for (int j = 0; j < 4; ++j) {
        const int col = n0 + tx + TX * j;
        if (col >= p.n) continue;
        float* out = c + (long long)r * p.n + col;
        // beta == 0 ignores the old C entirely, so NaN garbage in it does not leak (BLAS rule).
        float v = p.beta == 0.0f ? p.alpha * acc[i][j] : p.alpha * acc[i][j] + p.beta * *out;
        if (p.row_bias) v += bias;
        if (col_bias) v += col_bias[col];
        *out = v;
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS) gemm_f32(const GemmParams p) {
  __shared__ float as[GEMM_BK][64];
  __shared__ float bs[GEMM_BK][64];
  gemm_tiled<64>(p, as, bs);
}
KILN_EMULATE_SYNC(gemm_f32, GemmParams)

// At most 64 registers, so that 4 blocks (32 warps) fit on an SM, as they did before the column
// bias; ptxas reports no spills at that bound.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 4) gemm_32x128_f32(const GemmParams p) {
  __shared__ float as[GEMM_BK][32];
  __shared__ float bs[GEMM_BK][128];
  gemm_tiled<32>(p, as, bs);
}
KILN_EMULATE_SYNC(gemm_32x128_f32, GemmParams)

extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 4) gemm_16x256_f32(const GemmParams p) {
  __shared__ float as[GEMM_BK][16];
  __shared__ float bs[GEMM_BK][256];
  gemm_tiled<16>(p, as, bs);
}
KILN_EMULATE_SYNC(gemm_16x256_f32, GemmParams)

// ---------------------------------------------------------------------------------------------
// gemm_128x128_f32: the large-matrix path. Same parameters and semantics as gemm_f32.
//
// Mapping: a block of 256 threads computes a 128x128 tile of C; thread (ty, tx) = (tid/16, tid%16)
// owns an 8x8 micro-tile made of 2x2 sub-tiles of 4x4: rows ty·4 + {0..3} and 64 + ty·4 + {0..3},
// columns tx·4 + {0..3} and 64 + tx·4 + {0..3}, so each k step reads two float4 of A and two of B
// from shared memory (a warp reads 2 distinct A vectors, broadcast, and 16 distinct B vectors:
// no bank conflicts). The k loop walks panels of BK = 8: A is kept transposed in shared memory
// ([k][m]) and B as [k][n], both rows padded by 4 floats, and both double-buffered: while the block
// computes on panel t, each thread already holds its part of panel t+1 in registers and stores it
// into the other buffer afterwards, so there is one barrier per panel.
//
// Panel loads: each thread loads 4 elements of the 128x8 A panel and 4 of the 8x128 B panel. An
// operand stored with k contiguous ("k-major": A not transposed, B transposed) gives thread t the
// 4 consecutive k of row t/2 at k offset (t%2)·4; one stored with m (or n) contiguous gives it the 4
// consecutive columns (t%32)·4 of panel row t/32. With vec_a/vec_b these are single 16-byte loads;
// otherwise, and at the matrix edges (rows, columns or k past the end), each element is loaded
// alone behind a bounds check and missing ones are zero. The store of C is float4 under vec_c
// and guarded scalar at the edges.
//
// Registers: launch bounds (256, 2) cap them at 128 so two blocks share an SM. The storage orders
// are run-time flags (uniform branches once per panel): four template instantiations in one
// kernel made ptxas spill more (~280 bytes) than this single body (~32 bytes, outside the FMA
// loop but for two reloads per panel).
#define G128_TILE 128
#define G128_BK 8
#define G128_LD (G128_TILE + 4)  // padded row: k-major stores of 4 rows hit distinct banks
#define G128_THREADS 256

#ifdef KILN_EMULATION
#define G128_UNROLL
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
#else
#define G128_UNROLL _Pragma("unroll")
#endif

struct alignas(16) Gemm128Shared {
  float a[2][G128_BK][G128_LD];  // op(A) panel, [k][m]
  float b[2][G128_BK][G128_LD];  // op(B) panel, [k][n]
};

// This thread's 4 elements of the current panel of one operand. `s` points at its first element;
// `d_left` counts the elements of the 128-wide dimension (m for A, n for B) from it to the edge,
// `k_left` those of k. k_major (stored [d][k]): the 4 elements run along k; otherwise (stored
// [k][d]) along d.
__device__ __forceinline__ float4 g128_load(bool k_major, const float* s, bool vec, int d_left,
                                            int k_left) {
  if (d_left <= 0 || k_left <= 0) return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const int left = k_major ? k_left : d_left;
  if (vec && left >= 4) return *reinterpret_cast<const float4*>(s);
  float4 v;
  v.x = s[0];
  v.y = left > 1 ? s[1] : 0.0f;
  v.z = left > 2 ? s[2] : 0.0f;
  v.w = left > 3 ? s[3] : 0.0f;
  return v;
}

// Stores what g128_load returned (thread tid's elements) into a [k][d] shared panel.
__device__ __forceinline__ void g128_store(bool k_major, float (*s)[G128_LD], float4 v, int tid) {
  if (k_major) {
    const int d = tid >> 1, kq = (tid & 1) * 4;
    s[kq][d] = v.x;
    s[kq + 1][d] = v.y;
    s[kq + 2][d] = v.z;
    s[kq + 3][d] = v.w;
  } else {
    *reinterpret_cast<float4*>(&s[tid >> 5][(tid & 31) * 4]) = v;
  }
}

__device__ __forceinline__ void g128_body(const GemmParams& p, Gemm128Shared& sh) {
  const bool a_kmajor = !p.trans_a, b_kmajor = p.trans_b;
  const int tid = threadIdx.x;
  const int ty = tid >> 4, tx = tid & 15;
  const int m0 = blockIdx.y * G128_TILE, n0 = blockIdx.x * G128_TILE;
  const bool vec_a = p.vec_a != 0, vec_b = p.vec_b != 0;
  const int panels = (p.k + G128_BK - 1) / G128_BK;

  const int outputs = (p.reduce_batch ? 1 : p.batch) * p.groups;
  for (int z = blockIdx.z; z < outputs; z += gridDim.z) {
    const int g = z % p.groups;
    const int first = p.reduce_batch ? 0 : z / p.groups;
    const int last = p.reduce_batch ? p.batch : first + 1;

    float acc[8][8];
    G128_UNROLL
    for (int i = 0; i < 8; ++i) {
      G128_UNROLL
      for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
    }

    for (int bi = first; bi < last; ++bi) {
      // This thread's first element of panel 0 in A and in B, and the step to the next panel.
      const float* a = p.a + bi * p.stride_a + g * p.group_stride_a +
                       (a_kmajor ? (long long)(m0 + (tid >> 1)) * p.k + (tid & 1) * 4
                                 : (long long)(tid >> 5) * p.m + m0 + (tid & 31) * 4);
      const float* b = p.b + bi * p.stride_b + g * p.group_stride_b +
                       (b_kmajor ? (long long)(n0 + (tid >> 1)) * p.k + (tid & 1) * 4
                                 : (long long)(tid >> 5) * p.n + n0 + (tid & 31) * 4);
      const long long a_step = a_kmajor ? G128_BK : (long long)G128_BK * p.m;
      const long long b_step = b_kmajor ? G128_BK : (long long)G128_BK * p.n;
      const int a_d_left = p.m - m0 - (a_kmajor ? tid >> 1 : (tid & 31) * 4);
      const int b_d_left = p.n - n0 - (b_kmajor ? tid >> 1 : (tid & 31) * 4);
      const int a_k_left = p.k - (a_kmajor ? (tid & 1) * 4 : tid >> 5);
      const int b_k_left = p.k - (b_kmajor ? (tid & 1) * 4 : tid >> 5);
      // The previous pass ended at a barrier, so buffer 0 is free.
      float4 na = g128_load(a_kmajor, a, vec_a, a_d_left, a_k_left);
      float4 nb = g128_load(b_kmajor, b, vec_b, b_d_left, b_k_left);
      g128_store(a_kmajor, sh.a[0], na, tid);
      g128_store(b_kmajor, sh.b[0], nb, tid);
      __syncthreads();
      for (int t = 0; t < panels; ++t) {
        const int cur = t & 1;
        const bool more = t + 1 < panels;
        if (more) {  // panel t+1 into registers; its latency hides behind the FMAs below
          a += a_step;
          b += b_step;
          const int k0 = (t + 1) * G128_BK;
          na = g128_load(a_kmajor, a, vec_a, a_d_left, a_k_left - k0);
          nb = g128_load(b_kmajor, b, vec_b, b_d_left, b_k_left - k0);
        }
        G128_UNROLL
        for (int kk = 0; kk < G128_BK; ++kk) {
          const float4 a0 = *reinterpret_cast<const float4*>(&sh.a[cur][kk][ty * 4]);
          const float4 a1 = *reinterpret_cast<const float4*>(&sh.a[cur][kk][64 + ty * 4]);
          const float4 b0 = *reinterpret_cast<const float4*>(&sh.b[cur][kk][tx * 4]);
          const float4 b1 = *reinterpret_cast<const float4*>(&sh.b[cur][kk][64 + tx * 4]);
          const float ra[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
          const float rb[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
          G128_UNROLL
          for (int i = 0; i < 8; ++i) {
            G128_UNROLL
            for (int j = 0; j < 8; ++j) acc[i][j] += ra[i] * rb[j];
          }
        }
        if (more) {  // the other buffer was last read before the previous barrier
          g128_store(a_kmajor, sh.a[cur ^ 1], na, tid);
          g128_store(b_kmajor, sh.b[cur ^ 1], nb, tid);
        }
        __syncthreads();
      }
    }

    float* c = p.c + (p.reduce_batch ? 0 : (long long)first * p.stride_c) + g * p.group_stride_c;
    // This group's column bias, found once (inside the unrolled loop its address arithmetic
    // would cost registers the accumulators need).
    const float* col_bias = p.col_bias ? p.col_bias + (long long)g * p.n : nullptr;
    G128_UNROLL
    for (int i = 0; i < 8; ++i) {
      const int r = m0 + (i >> 2) * 64 + ty * 4 + (i & 3);
      if (r >= p.m) continue;
      float* row = c + (long long)r * p.n;
      const float bias = gemm_row_bias(p.row_bias, g, p.m, r);
      G128_UNROLL
      for (int h = 0; h < 2; ++h) {
        const int col = n0 + h * 64 + tx * 4;
        float v[4];
        G128_UNROLL
        for (int q = 0; q < 4; ++q) v[q] = p.alpha * acc[i][h * 4 + q];
        if (p.vec_c && col + 4 <= p.n) {
          float4* out = reinterpret_cast<float4*>(row + col);
          // beta == 0 ignores the old C entirely, so NaN garbage in it does not leak (BLAS rule).
          if (p.beta != 0.0f) {
            const float4 old = *out;
            v[0] += p.beta * old.x;
            v[1] += p.beta * old.y;
            v[2] += p.beta * old.z;
            v[3] += p.beta * old.w;
          }
          if (p.row_bias) {
            G128_UNROLL
            for (int q = 0; q < 4; ++q) v[q] += bias;
          }
          if (col_bias) {
            G128_UNROLL
            for (int q = 0; q < 4; ++q) v[q] += col_bias[col + q];
          }
          *out = make_float4(v[0], v[1], v[2], v[3]);
        } else {
          G128_UNROLL
          for (int q = 0; q < 4; ++q) {
            if (col + q >= p.n) break;
            float* out = row + col + q;
            float value = p.beta == 0.0f ? v[q] : v[q] + p.beta * *out;
            if (p.row_bias) value += bias;
            if (col_bias) value += col_bias[col + q];
            *out = value;
          }
        }
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(G128_THREADS, 2) gemm_128x128_f32(const GemmParams p) {
  __shared__ Gemm128Shared sh;
  g128_body(p, sh);
}
KILN_EMULATE_SYNC(gemm_128x128_f32, GemmParams)

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
// T is the storage type of dy (f32, or 16-bit activation gradients); the sums and db are f32.
template <typename T>
struct BiasGradParams {
  const T* dy;  // [outer][channels][inner]
  float* db;    // [channels], overwritten
  int outer, channels, inner;
};

// One block per channel: each thread sums a fixed strided subset, then a shared-memory tree
// reduction combines them, so the result does not depend on scheduling.
template <typename T>
__device__ __forceinline__ void bias_grad(const BiasGradParams<T>& p) {
  __shared__ float partial[KILN_THREADS_PER_BLOCK];
  const int c = blockIdx.x;
  const long long count = (long long)p.outer * p.inner;
  float sum = 0.0f;
  for (long long e = threadIdx.x; e < count; e += blockDim.x) {
    const long long o = e / p.inner, q = e % p.inner;
    sum += to_f32(p.dy[(o * p.channels + c) * p.inner + q]);
  }
  sum = block_reduce(partial, sum, false);
  if (threadIdx.x == 0) p.db[c] = sum;
}
KILN_STORAGE_KERNELS_SYNC(bias_grad, BiasGradParams)
