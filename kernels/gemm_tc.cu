// Tensor-core GEMM with 16-bit inputs (bf16 or f16) and f32 accumulation and output, on the
// warp-level `mma.sync.m16n8k16` instruction (sm_80 and later). kernels/cast.cu makes its inputs.
//
// C = alpha·op(A)·op(B) + beta·C (+ row_bias, as gemm_f32), row-major, with gemm_f32's batches,
// groups and batch sums: op(A)
// is m×k, stored [m][k] or, with trans_a, [k][m]; op(B) is k×n, stored [k][n] or, with trans_b,
// [n][k]. A and B hold raw 16-bit patterns; C is f32.
//
// Mapping: a block of 256 threads (8 warps, 2 along m × 4 along n) computes a 128x128 tile of C;
// each warp a 64x32 sub-tile as 4x4 mma tiles of 16x8, i.e. 64 f32 accumulators per thread. The
// k loop stages 128x32 panels of A and B in shared memory, both k-contiguous ([m][k] and [n][k],
// the layouts the mma fragments read), each row padded by 8 elements so the 8 rows a fragment
// load touches fall in distinct banks. Panels are double-buffered: the next panel is fetched into
// registers while the current one is multiplied. When an operand's k is contiguous in memory
// (A not transposed, B transposed), k a multiple of 8 and the base 16-byte aligned (`vec_a`,
// `vec_b`), a thread fetches 8 elements with one 16-byte load; otherwise element by element.
#include "common.cuh"

#define TC_TILE 128
#define TC_BK 32
#define TC_PAD 8
#define TC_THREADS 256
#define TC_LD (TC_BK + TC_PAD)
// Elements of one operand panel each thread fetches per k step.
#define TC_PER_THREAD (TC_TILE * TC_BK / TC_THREADS)

// Mirrors src/cuda/gemm_tc.rs `TcGemmParams`. gemm_tc_bf16 reads bf16 inputs, gemm_tc_f16 f16.
struct TcGemmParams {
  const unsigned short* a;
  const unsigned short* b;
  float* c;
  KILN_GEMM_LAYOUT_FIELDS;
  int vec_a, vec_b;
  const float* row_bias;  // [groups·m] added to each row of C after alpha/beta, or null
  float alpha, beta;
};

// One operand's panel in flight between global and shared memory: TC_PER_THREAD elements.
struct __align__(16) TcPanel {
  unsigned short v[TC_PER_THREAD];
};

// Fetches the TC_TILE x TC_BK panel of an operand whose rows (m for A, n for B) start at `row0`
// and whose k starts at `k0`, into registers. `k_contiguous`: stored [rows][k] (else [k][rows]).
__device__ __forceinline__ void tc_fetch(const unsigned short* src, int rows, int k, int row0,
                                         int k0, bool k_contiguous, bool vec, int tid,
                                         TcPanel& panel) {
  if (vec) {  // 8 consecutive k per 16-byte load; k % 8 == 0, so a vector is all in or all out
    #pragma unroll
    for (int v = 0; v < TC_PER_THREAD / 8; ++v) {
      const int e = (tid + v * TC_THREADS) * 8;
      const int row = e / TC_BK, kk = e % TC_BK;
      const int gr = row0 + row, gk = k0 + kk;
      uint4 chunk = make_uint4(0, 0, 0, 0);
      if (gr < rows && gk < k) chunk = *reinterpret_cast<const uint4*>(src + (long long)gr * k + gk);
      *reinterpret_cast<uint4*>(&panel.v[v * 8]) = chunk;
    }
    return;
  }
  #pragma unroll
  for (int i = 0; i < TC_PER_THREAD; ++i) {
    const int e = tid + i * TC_THREADS;
    // Walk the stored-contiguous dimension fastest so neighbouring threads read neighbours.
    const int row = k_contiguous ? e / TC_BK : e % TC_TILE;
    const int kk = k_contiguous ? e % TC_BK : e / TC_TILE;
    const int gr = row0 + row, gk = k0 + kk;
    unsigned short x = 0;
    if (gr < rows && gk < k) {
      x = k_contiguous ? src[(long long)gr * k + gk] : src[(long long)gk * rows + gr];
    }
    panel.v[i] = x;
  }
}

// Stores a fetched panel into shared memory laid out [row][TC_LD] (k contiguous).
__device__ __forceinline__ void tc_store(const TcPanel& panel, bool k_contiguous, bool vec,
                                         int tid, unsigned short (*dst)[TC_LD]) {
  if (vec) {
    #pragma unroll
    for (int v = 0; v < TC_PER_THREAD / 8; ++v) {
      const int e = (tid + v * TC_THREADS) * 8;
      *reinterpret_cast<uint4*>(&dst[e / TC_BK][e % TC_BK]) =
          *reinterpret_cast<const uint4*>(&panel.v[v * 8]);
    }
    return;
  }
  #pragma unroll
  for (int i = 0; i < TC_PER_THREAD; ++i) {
    const int e = tid + i * TC_THREADS;
    const int row = k_contiguous ? e / TC_BK : e % TC_TILE;
    const int kk = k_contiguous ? e % TC_BK : e / TC_TILE;
    dst[row][kk] = panel.v[i];
  }
}

// Two consecutive 16-bit elements of a shared row as one fragment register (lower k low).
__device__ __forceinline__ uint32_t tc_pair(const unsigned short* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Multiplies the staged panels into the warp's 4x4 tiles of 16x8 accumulators.
template <bool kBf16>
__device__ __forceinline__ void tc_multiply(unsigned short (*as)[TC_LD],
                                            unsigned short (*bs)[TC_LD], int warp_m, int warp_n,
                                            int lane, float (*acc)[4][4]) {
  const int group = lane / 4, t = lane % 4;
  #pragma unroll
  for (int kk = 0; kk < TC_BK; kk += 16) {
    uint32_t a[4][4], b[4][2];
    #pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      const unsigned short* top = &as[warp_m + mi * 16 + group][kk + 2 * t];
      const unsigned short* bottom = top + 8 * TC_LD;
      a[mi][0] = tc_pair(top);
      a[mi][1] = tc_pair(bottom);
      a[mi][2] = tc_pair(top + 8);
      a[mi][3] = tc_pair(bottom + 8);
    }
    #pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const unsigned short* col = &bs[warp_n + ni * 8 + group][kk + 2 * t];
      b[ni][0] = tc_pair(col);
      b[ni][1] = tc_pair(col + 8);
    }
    #pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      #pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
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
template <bool kBf16>
__device__ __forceinline__ void tc_accumulate(const TcGemmParams& p, const unsigned short* a,
                                              const unsigned short* b, int m0, int n0,
                                              unsigned short (*as)[TC_TILE][TC_LD],
                                              unsigned short (*bs)[TC_TILE][TC_LD],
                                              float (*acc)[4][4]) {
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int warp_m = (warp / 4) * 64, warp_n = (warp % 4) * 32;
  const bool a_k_contiguous = !p.trans_a, b_k_contiguous = p.trans_b != 0;
  TcPanel pa, pb;
  tc_fetch(a, p.m, p.k, m0, 0, a_k_contiguous, p.vec_a, tid, pa);
  tc_fetch(b, p.n, p.k, n0, 0, b_k_contiguous, p.vec_b, tid, pb);
  tc_store(pa, a_k_contiguous, p.vec_a, tid, as[0]);
  tc_store(pb, b_k_contiguous, p.vec_b, tid, bs[0]);
  __syncthreads();
  int buffer = 0;
  for (int k0 = 0; k0 < p.k; k0 += TC_BK) {
    const bool more = k0 + TC_BK < p.k;
    if (more) {  // the next panel's loads are in flight while this one is multiplied
      tc_fetch(a, p.m, p.k, m0, k0 + TC_BK, a_k_contiguous, p.vec_a, tid, pa);
      tc_fetch(b, p.n, p.k, n0, k0 + TC_BK, b_k_contiguous, p.vec_b, tid, pb);
    }
    tc_multiply<kBf16>(as[buffer], bs[buffer], warp_m, warp_n, lane, acc);
    if (more) {
      tc_store(pa, a_k_contiguous, p.vec_a, tid, as[buffer ^ 1]);
      tc_store(pb, b_k_contiguous, p.vec_b, tid, bs[buffer ^ 1]);
    }
    // The other buffer is complete, and nobody reads this one any more.
    __syncthreads();
    buffer ^= 1;
  }
}

template <bool kBf16>
__device__ __forceinline__ void gemm_tc(const TcGemmParams& p) {
  __shared__ __align__(16) unsigned short as[2][TC_TILE][TC_LD];
  __shared__ __align__(16) unsigned short bs[2][TC_TILE][TC_LD];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_m = (warp / 4) * 64, warp_n = (warp % 4) * 32;
  const int m0 = blockIdx.y * TC_TILE, n0 = blockIdx.x * TC_TILE;

  // z runs over the output matrices: (batch entry, group) pairs, group fastest, or groups alone
  // when the batch is summed into one C.
  const int outputs = (p.reduce_batch ? 1 : p.batch) * p.groups;
  for (int z = blockIdx.z; z < outputs; z += gridDim.z) {
    const int g = z % p.groups;
    const int first = p.reduce_batch ? 0 : z / p.groups;
    const int last = p.reduce_batch ? p.batch : first + 1;
    float acc[4][4][4];
    #pragma unroll
    for (int mi = 0; mi < 4; ++mi)
      #pragma unroll
      for (int ni = 0; ni < 4; ++ni)
        #pragma unroll
        for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.0f;
    for (int bi = first; bi < last; ++bi) {
      tc_accumulate<kBf16>(p, p.a + bi * p.stride_a + g * p.group_stride_a,
                           p.b + bi * p.stride_b + g * p.group_stride_b, m0, n0, as, bs, acc);
    }

    float* c = p.c + (p.reduce_batch ? 0 : (long long)first * p.stride_c) + g * p.group_stride_c;
    const int group = lane / 4, t = lane % 4;
    #pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      #pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        #pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int row = m0 + warp_m + mi * 16 + group + (r >= 2 ? 8 : 0);
          const int col = n0 + warp_n + ni * 8 + 2 * t + (r & 1);
          if (row >= p.m || col >= p.n) continue;
          float* out = c + (long long)row * p.n + col;
          // beta == 0 ignores the old C entirely (BLAS rule), as gemm_f32 does.
          float v = p.beta == 0.0f ? p.alpha * acc[mi][ni][r]
                                   : p.alpha * acc[mi][ni][r] + p.beta * *out;
          if (p.row_bias) v += p.row_bias[(long long)g * p.m + row];
          *out = v;
        }
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_bf16(const TcGemmParams p) {
  gemm_tc<true>(p);
}
KILN_EMULATE_SYNC(gemm_tc_bf16, TcGemmParams)

extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_f16(const TcGemmParams p) {
  gemm_tc<false>(p);
}
KILN_EMULATE_SYNC(gemm_tc_f16, TcGemmParams)
