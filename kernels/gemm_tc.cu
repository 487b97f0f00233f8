// Tensor-core GEMM with 16-bit inputs (bf16 or f16) and f32 accumulation and output, on the
// warp-level `mma.sync.m16n8k16` instruction (sm_80 and later). kernels/cast.cu makes its inputs.
//
// C = alpha·op(A)·op(B) + beta·C (+ row_bias, as gemm_f32), row-major, with gemm_f32's batches,
// groups and batch sums: op(A)
// is m×k, stored [m][k] or, with trans_a, [k][m]; op(B) is k×n, stored [k][n] or, with trans_b,
// [n][k]. A and B hold raw 16-bit patterns; C is f32.
//
// Mapping: a block of 256 threads (8 warps) computes a TM x TN tile of C: 128x128 (gemm_tc_*: 2
// warps along m × 4 along n, each a 64x32 sub-tile as 4x4 mma tiles of 16x8, 64 f32 accumulators
// per thread), or for products with few rows, such as a 16- or 32-channel convolution, 16x256 or
// 32x256 (gemm_tc_16x256_*, gemm_tc_32x256_*: 8 warps along n, each 16x32 or 32x32), where a
// 128-row tile would be mostly padding. The
// k loop stages TMx32 and TNx32 panels of A and B in shared memory, both k-contiguous ([m][k] and [n][k],
// the layouts the mma fragments read), each row padded by 8 elements so the 8 rows a fragment
// load touches fall in distinct banks. Panels are double-buffered: the next panel is fetched into
// registers while the current one is multiplied. When an operand's k is contiguous in memory
// (A not transposed, B transposed), k a multiple of 8 and the base 16-byte aligned (`vec_a`,
// `vec_b`), a thread fetches 8 elements with one 16-byte load; otherwise element by element.
#include "common.cuh"
#include "half.cuh"

#define TC_BK 32
#define TC_PAD 8
#define TC_THREADS 256
#define TC_LD (TC_BK + TC_PAD)

// Mirrors src/cuda/gemm_tc.rs `TcGemmParams`. gemm_tc_*bf16 read bf16 inputs, gemm_tc_*f16 f16.
struct TcGemmParams {
  const unsigned short* a;
  const unsigned short* b;
  float* c;
  KILN_GEMM_LAYOUT_FIELDS;
  int vec_a, vec_b;
  KILN_GEMM_EPILOGUE_FIELDS;
};
static_assert(offsetof(TcGemmParams, row_bias) == 112, "mirrors src/cuda/gemm_tc.rs TcGemmParams");

// How a block's threads fetch one operand's kRows x TC_BK panel: kScalars elements each one by
// one, or kVectors 16-byte vectors (8 elements) each, the last ones guarded when the panel has
// fewer vectors than the block has threads.
template <int kRows>
struct TcPanelShape {
  static constexpr int kScalars = kRows * TC_BK / TC_THREADS;
  static constexpr int kVectorCount = kRows * TC_BK / 8;
  static constexpr int kVectors = (kVectorCount + TC_THREADS - 1) / TC_THREADS;
  static constexpr int kElements = kScalars > 8 * kVectors ? kScalars : 8 * kVectors;
};

// One operand's panel in flight between global and shared memory.
template <int kRows>
struct __align__(16) TcPanel {
  unsigned short v[TcPanelShape<kRows>::kElements];
};

// Fetches the kRows x TC_BK panel of an operand whose rows (m for A, n for B) start at `row0`
// and whose k starts at `k0`, into registers. `k_contiguous`: stored [rows][k] (else [k][rows]).
template <int kRows>
__device__ __forceinline__ void tc_fetch(const unsigned short* src, int rows, int k, int row0,
                                         int k0, bool k_contiguous, bool vec, int tid,
                                         TcPanel<kRows>& panel) {
  using Shape = TcPanelShape<kRows>;
  if (vec) {  // 8 consecutive k per 16-byte load; k % 8 == 0, so a vector is all in or all out
    #pragma unroll
    for (int v = 0; v < Shape::kVectors; ++v) {
      const int vector = tid + v * TC_THREADS;
      if (vector >= Shape::kVectorCount) break;
      const int e = vector * 8;
      const int row = e / TC_BK, kk = e % TC_BK;
      const int gr = row0 + row, gk = k0 + kk;
      uint4 chunk = make_uint4(0, 0, 0, 0);
      if (gr < rows && gk < k) chunk = *reinterpret_cast<const uint4*>(src + (long long)gr * k + gk);
      *reinterpret_cast<uint4*>(&panel.v[v * 8]) = chunk;
    }
    return;
  }
  #pragma unroll
  for (int i = 0; i < Shape::kScalars; ++i) {
    const int e = tid + i * TC_THREADS;
    // Walk the stored-contiguous dimension fastest so neighbouring threads read neighbours.
    const int row = k_contiguous ? e / TC_BK : e % kRows;
    const int kk = k_contiguous ? e % TC_BK : e / kRows;
    const int gr = row0 + row, gk = k0 + kk;
    unsigned short x = 0;
    if (gr < rows && gk < k) {
      x = k_contiguous ? src[(long long)gr * k + gk] : src[(long long)gk * rows + gr];
    }
    panel.v[i] = x;
  }
}

// Stores a fetched panel into shared memory laid out [row][TC_LD] (k contiguous).
template <int kRows>
__device__ __forceinline__ void tc_store(const TcPanel<kRows>& panel, bool k_contiguous, bool vec,
                                         int tid, unsigned short (*dst)[TC_LD]) {
  using Shape = TcPanelShape<kRows>;
  if (vec) {
    #pragma unroll
    for (int v = 0; v < Shape::kVectors; ++v) {
      const int vector = tid + v * TC_THREADS;
      if (vector >= Shape::kVectorCount) break;
      const int e = vector * 8;
      *reinterpret_cast<uint4*>(&dst[e / TC_BK][e % TC_BK]) =
          *reinterpret_cast<const uint4*>(&panel.v[v * 8]);
    }
    return;
  }
  #pragma unroll
  for (int i = 0; i < Shape::kScalars; ++i) {
    const int e = tid + i * TC_THREADS;
    const int row = k_contiguous ? e / TC_BK : e % kRows;
    const int kk = k_contiguous ? e % TC_BK : e / kRows;
    dst[row][kk] = panel.v[i];
  }
}

// Two consecutive 16-bit elements of a shared row as one fragment register (lower k low).
__device__ __forceinline__ uint32_t tc_pair(const unsigned short* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// The block shape: a TM x TN tile of C, warps kWarpsM along m × kWarpsN along n (8 in all), each
// warp kMi x kNi mma tiles of 16x8.
template <int TM, int TN, int kWarpsM>
struct TcTile {
  static constexpr int kWarpsN = 8 / kWarpsM;
  static constexpr int kWarpRows = TM / kWarpsM, kWarpCols = TN / kWarpsN;
  static constexpr int kMi = kWarpRows / 16, kNi = kWarpCols / 8;
  static_assert(kMi >= 1 && kNi >= 1 && kWarpRows % 16 == 0 && kWarpCols % 8 == 0, "bad tile");
};

// Multiplies the staged panels into the warp's kMi x kNi tiles of 16x8 accumulators.
template <bool kBf16, class Tile>
__device__ __forceinline__ void tc_multiply(unsigned short (*as)[TC_LD],
                                            unsigned short (*bs)[TC_LD], int warp_m, int warp_n,
                                            int lane, float (*acc)[Tile::kNi][4]) {
  const int group = lane / 4, t = lane % 4;
  #pragma unroll
  for (int kk = 0; kk < TC_BK; kk += 16) {
    uint32_t a[Tile::kMi][4], b[Tile::kNi][2];
    #pragma unroll
    for (int mi = 0; mi < Tile::kMi; ++mi) {
      const unsigned short* top = &as[warp_m + mi * 16 + group][kk + 2 * t];
      const unsigned short* bottom = top + 8 * TC_LD;
      a[mi][0] = tc_pair(top);
      a[mi][1] = tc_pair(bottom);
      a[mi][2] = tc_pair(top + 8);
      a[mi][3] = tc_pair(bottom + 8);
    }
    #pragma unroll
    for (int ni = 0; ni < Tile::kNi; ++ni) {
      const unsigned short* col = &bs[warp_n + ni * 8 + group][kk + 2 * t];
      b[ni][0] = tc_pair(col);
      b[ni][1] = tc_pair(col + 8);
    }
    #pragma unroll
    for (int mi = 0; mi < Tile::kMi; ++mi) {
      #pragma unroll
      for (int ni = 0; ni < Tile::kNi; ++ni) {
        if (kBf16) {
          kiln_mma_bf16_16816(acc[mi][ni], a[mi], b[ni]);
        } else {
          kiln_mma_f16_16816(acc[mi][ni], a[mi], b[ni]);
        }
      }
    }
  }
}

// acc += the tile (m0, n0) of op(A)·op(B) for one product (one batch entry of one group).
template <bool kBf16, int TM, int TN, class Tile>
__device__ __forceinline__ void tc_accumulate(const TcGemmParams& p, const unsigned short* a,
                                              const unsigned short* b, int m0, int n0,
                                              unsigned short (*as)[TM][TC_LD],
                                              unsigned short (*bs)[TN][TC_LD],
                                              float (*acc)[Tile::kNi][4]) {
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int warp_m = (warp / Tile::kWarpsN) * Tile::kWarpRows;
  const int warp_n = (warp % Tile::kWarpsN) * Tile::kWarpCols;
  const bool a_k_contiguous = !p.trans_a, b_k_contiguous = p.trans_b != 0;
  TcPanel<TM> pa;
  TcPanel<TN> pb;
  tc_fetch<TM>(a, p.m, p.k, m0, 0, a_k_contiguous, p.vec_a, tid, pa);
  tc_fetch<TN>(b, p.n, p.k, n0, 0, b_k_contiguous, p.vec_b, tid, pb);
  tc_store<TM>(pa, a_k_contiguous, p.vec_a, tid, as[0]);
  tc_store<TN>(pb, b_k_contiguous, p.vec_b, tid, bs[0]);
  __syncthreads();
  int buffer = 0;
  for (int k0 = 0; k0 < p.k; k0 += TC_BK) {
    const bool more = k0 + TC_BK < p.k;
    if (more) {  // the next panel's loads are in flight while this one is multiplied
      tc_fetch<TM>(a, p.m, p.k, m0, k0 + TC_BK, a_k_contiguous, p.vec_a, tid, pa);
      tc_fetch<TN>(b, p.n, p.k, n0, k0 + TC_BK, b_k_contiguous, p.vec_b, tid, pb);
    }
    tc_multiply<kBf16, Tile>(as[buffer], bs[buffer], warp_m, warp_n, lane, acc);
    if (more) {
      tc_store<TM>(pa, a_k_contiguous, p.vec_a, tid, as[buffer ^ 1]);
      tc_store<TN>(pb, b_k_contiguous, p.vec_b, tid, bs[buffer ^ 1]);
    }
    // The other buffer is complete, and nobody reads this one any more.
    __syncthreads();
    buffer ^= 1;
  }
}

// Writes a warp's accumulators (its tile at row0, col0 of the matrix at element c0 of C):
// alpha·acc + beta·C (+ row_bias, + col_bias), skipping the parts past the matrix; in f32, or rounded to the
// operands' format when kC16 (beta is 0 then).
template <bool kBf16, bool kC16, typename Tile>
__device__ __forceinline__ void tc_store_tile(const TcGemmParams& p, int g, long long c0, int row0,
                                              int col0, int lane,
                                              const float (&acc)[Tile::kMi][Tile::kNi][4]) {
  const int group = lane / 4, t = lane % 4;
  #pragma unroll
  for (int mi = 0; mi < Tile::kMi; ++mi) {
    #pragma unroll
    for (int ni = 0; ni < Tile::kNi; ++ni) {
      #pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = row0 + mi * 16 + group + (r >= 2 ? 8 : 0);
        const int col = col0 + ni * 8 + 2 * t + (r & 1);
        if (row >= p.m || col >= p.n) continue;
        const long long out = c0 + (long long)row * p.n + col;
        // beta == 0 ignores the old C entirely (BLAS rule), as gemm_f32 does.
        float v = (kC16 || p.beta == 0.0f) ? p.alpha * acc[mi][ni][r]
                                           : p.alpha * acc[mi][ni][r] + p.beta * p.c[out];
        if (p.row_bias) v += p.row_bias[(long long)g * p.m + row];
        if (p.col_bias) v += p.col_bias[(long long)g * p.n + col];
        gemm_store_c<kBf16>(p.c, out, v, kC16);
      }
    }
  }
}

template <bool kBf16, int TM, int TN, int kWarpsM>
__device__ __forceinline__ void gemm_tc(const TcGemmParams& p) {
  using Tile = TcTile<TM, TN, kWarpsM>;
  __shared__ __align__(16) unsigned short as[2][TM][TC_LD];
  __shared__ __align__(16) unsigned short bs[2][TN][TC_LD];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_m = (warp / Tile::kWarpsN) * Tile::kWarpRows;
  const int warp_n = (warp % Tile::kWarpsN) * Tile::kWarpCols;
  const int m0 = blockIdx.y * TM, n0 = blockIdx.x * TN;

  // z runs over the output matrices: (batch entry, group) pairs, group fastest, or groups alone
  // when the batch is summed into one C.
  const int outputs = (p.reduce_batch ? 1 : p.batch) * p.groups;
  for (int z = blockIdx.z; z < outputs; z += gridDim.z) {
    const int g = z % p.groups;
    const int first = p.reduce_batch ? 0 : z / p.groups;
    const int last = p.reduce_batch ? p.batch : first + 1;
    float acc[Tile::kMi][Tile::kNi][4];
    #pragma unroll
    for (int mi = 0; mi < Tile::kMi; ++mi)
      #pragma unroll
      for (int ni = 0; ni < Tile::kNi; ++ni)
        #pragma unroll
        for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.0f;
    for (int bi = first; bi < last; ++bi) {
      tc_accumulate<kBf16, TM, TN, Tile>(p, p.a + bi * p.stride_a + g * p.group_stride_a,
                                         p.b + bi * p.stride_b + g * p.group_stride_b, m0, n0, as,
                                         bs, acc);
    }

    const long long c0 =
        (p.reduce_batch ? 0 : (long long)first * p.stride_c) + g * p.group_stride_c;
    const int row0 = m0 + warp_m, col0 = n0 + warp_n;
    // One branch for the whole tile (not one per element), which keeps the registers down.
    if (p.c_16bit) {
      tc_store_tile<kBf16, true, Tile>(p, g, c0, row0, col0, lane, acc);
    } else {
      tc_store_tile<kBf16, false, Tile>(p, g, c0, row0, col0, lane, acc);
    }
  }
}

extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_bf16(const TcGemmParams p) {
  gemm_tc<true, 128, 128, 2>(p);
}
KILN_EMULATE_SYNC(gemm_tc_bf16, TcGemmParams)

extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_f16(const TcGemmParams p) {
  gemm_tc<false, 128, 128, 2>(p);
}
KILN_EMULATE_SYNC(gemm_tc_f16, TcGemmParams)

extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_16x256_bf16(const TcGemmParams p) {
  gemm_tc<true, 16, 256, 1>(p);
}
KILN_EMULATE_SYNC(gemm_tc_16x256_bf16, TcGemmParams)

extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_16x256_f16(const TcGemmParams p) {
  gemm_tc<false, 16, 256, 1>(p);
}
KILN_EMULATE_SYNC(gemm_tc_16x256_f16, TcGemmParams)

extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_32x256_bf16(const TcGemmParams p) {
  gemm_tc<true, 32, 256, 1>(p);
}
KILN_EMULATE_SYNC(gemm_tc_32x256_bf16, TcGemmParams)

extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_32x256_f16(const TcGemmParams p) {
  gemm_tc<false, 32, 256, 1>(p);
}
KILN_EMULATE_SYNC(gemm_tc_32x256_f16, TcGemmParams)
