// kiln-ptx-arch: compute_90a
// Tensor-core GEMM for Hopper (sm_90a only) on warpgroup MMA: wgmma.mma_async.m64n128k16 with 16-bit
// inputs (bf16 or f16) read straight from shared memory and f32 accumulators. Same contract as
// gemm_tc.cu (C = alpha·op(A)·op(B) + beta·C + row_bias, batches, groups, batch sums), for operands
// whose contiguous dimension is a multiple of 8 elements at 16-byte aligned addresses (the
// launcher checks; other products take gemm_tc).
//
// Mapping: a block of 256 threads (two warpgroups) computes a 128x128 tile of C; warpgroup g the 64
// rows 64g..64g+63, as one m64n128 accumulator of 64 f32 registers per thread. The k loop runs over
// 64-wide panels in a ring of 4 stages of shared memory (32 KB each: A's 128x64 and B's 64x128
// panel), filled by cp.async 16-byte copies two panels ahead of the one being multiplied; each
// panel is 4 wgmma k16 steps, and one panel's wgmma group stays in flight while the next is issued.
// Each operand panel is stored in the 128-byte swizzled layout (hopper.cuh) in the major order it
// has in global memory, K-major or MN-major, and the instruction's transpose flag says which, so
// every copy is a straight 16-byte move.
//
// gemm_wgmma_tma_* take single products (one batch entry, one group) and load the panels with TMA
// instead: a third warpgroup is the producer, one of its threads issuing each stage's bulk tensor
// copies, and the two consumer warpgroups only multiply. Each stage has a "full" mbarrier (the
// copies' bytes have landed) and an "empty" one (every consumer warp is done reading), so the ring
// runs without block-wide barriers and the loads are as far ahead as there are free stages.
// A stage is released warp by warp: lane 0 of each of the 8 consumer warps arrives on its empty
// barrier (count 8) after that warp's own wgmma.wait_group has retired the wgmma that read it. The
// PTX ISA promises only that a wait retires the executing warp's wgmma, so one warp may not release
// on behalf of the other warps of its warpgroup (CUTLASS and DeepGEMM arrive per warp too). The
// emulation holds the kernel to this: a TMA copy into a stage some warp has read but not itself
// released fails there (kernels/hopper.cuh).
#include "common.cuh"
#include "half.cuh"
#include "hopper.cuh"

#define WG_TILE 128
#define WG_BK 64
#define WG_STAGES 4
#define WG_THREADS 256
#define WG_PANEL_BYTES (WG_TILE * WG_BK * 2)     // one operand's panel: 16 KB
#define WG_STAGE_BYTES (2 * WG_PANEL_BYTES)      // A's panel, then B's
#define WG_CHUNKS_PER_THREAD (WG_PANEL_BYTES / 16 / WG_THREADS)
#define WG_ATOM_BYTES (WG_BK * 128)              // an MN-major atom: 64 k rows of 64 m/n

// Mirrors src/cuda/gemm_wgmma.rs `WgmmaGemmParams`.
struct WgmmaGemmParams {
  const unsigned short* a;
  const unsigned short* b;
  float* c;
  KILN_GEMM_LAYOUT_FIELDS;
  KILN_GEMM_EPILOGUE_FIELDS;
};
static_assert(offsetof(WgmmaGemmParams, row_bias) == 104, "mirrors src/cuda/gemm_wgmma.rs");

// Issues the copies of one operand's 128x64 panel (rows `row0`.. along m or n, k from `k0`) into
// `panel`. K-major: the operand is stored [rows][k]; else [k][rows]. Chunks past the matrix are
// zero-filled (the launcher guarantees a chunk is either wholly inside or wholly outside).
template <bool kMnMajor>
__device__ __forceinline__ void wg_load_panel(unsigned char* panel, const unsigned short* src,
                                              int rows, int k, int row0, int k0) {
  #pragma unroll
  for (int i = 0; i < WG_CHUNKS_PER_THREAD; ++i) {
    const int chunk = threadIdx.x + i * WG_THREADS;
    int row, kk;
    uint32_t offset;
    if (kMnMajor) {  // 64 k rows of 16 chunks of 8 rows; chunks 0-7 in atom 0, 8-15 in atom 1
      kk = chunk / 16;
      const int c = chunk % 16;
      row = 8 * c;
      offset = (c / 8) * WG_ATOM_BYTES + kk * 128 + (c % 8) * 16;
    } else {  // 128 rows of 8 chunks of 8 k
      row = chunk / 8;
      const int c = chunk % 8;
      kk = 8 * c;
      offset = row * 128 + c * 16;
    }
    const int gr = row0 + row, gk = k0 + kk;
    const bool valid = gr < rows && gk < k;
    const unsigned short* from =
        valid ? (kMnMajor ? src + (long long)gk * rows + gr : src + (long long)gr * k + gk) : src;
    kiln_cp_async_16(panel + swizzle_128b(offset), from, valid);
  }
}

// The descriptor of k16 step `step` of a panel: for A the 64 rows of warpgroup `part`, for B all
// its columns (part 0; an MN-major B panel's atoms follow each other WG_ATOM_BYTES apart).
template <bool kMnMajor>
__device__ __forceinline__ uint64_t wg_descriptor(const unsigned char* panel, int part, int step) {
  const uint32_t base = kiln_shared_address(panel);
  if (kMnMajor) {
    return wgmma_descriptor(base + part * WG_ATOM_BYTES + step * 16 * 128, WG_ATOM_BYTES, 1024);
  }
  return wgmma_descriptor(base + part * 64 * 128 + step * 32, 16, 1024);
}

// One 64-deep panel into a warpgroup's 64 x kN accumulators: 4 wgmma k16 steps. A's panel is
// 128 rows (the warpgroup's 64 are `warpgroup`'s half), B's kN rows at `b_panel`.
template <bool kBf16, bool kAMn, bool kBMn, int kN>
__device__ __forceinline__ void wg_mma_panel(const unsigned char* a_panel,
                                             const unsigned char* b_panel, int warpgroup,
                                             float* acc) {
  #pragma unroll
  for (int step = 0; step < WG_BK / 16; ++step) {
    const uint64_t da = wg_descriptor<kAMn>(a_panel, warpgroup, step);
    const uint64_t db = wg_descriptor<kBMn>(b_panel, 0, step);
    kiln_wgmma<kBf16, kN, kAMn, kBMn>(acc, da, db);
  }
}

// acc = the (m0, n0) tile of the sum over batch entries first..last-1 of op(A)·op(B) (one entry
// unless the batch is summed), as one pipeline over all their k panels.
template <bool kBf16, bool kAMn, bool kBMn>
__device__ __forceinline__ void wg_mainloop(const WgmmaGemmParams& p, int g, int first, int last,
                                            int m0, int n0, unsigned char* stages, float acc[64]) {
  const int warpgroup = threadIdx.x / 128;
  const int panels_per_entry = (p.k + WG_BK - 1) / WG_BK;
  const int panels = (last - first) * panels_per_entry;
  auto load = [&](int panel) {
    if (panel < panels) {
      const int bi = first + panel / panels_per_entry, k0 = (panel % panels_per_entry) * WG_BK;
      unsigned char* stage = stages + (panel % WG_STAGES) * WG_STAGE_BYTES;
      wg_load_panel<kAMn>(stage, p.a + bi * p.stride_a + g * p.group_stride_a, p.m, p.k, m0, k0);
      wg_load_panel<kBMn>(stage + WG_PANEL_BYTES, p.b + bi * p.stride_b + g * p.group_stride_b,
                          p.n, p.k, n0, k0);
    }
    kiln_cp_async_commit();  // an empty group past the end keeps the wait counts uniform
  };
  load(0);
  load(1);
  for (int panel = 0; panel < panels; ++panel) {
    kiln_cp_async_wait<1>();  // this panel's copies have landed (the next one's may be in flight)
    kiln_fence_proxy_async();
    // Everyone's copies of this panel are visible, and every warpgroup has retired the wgmma of
    // panel - 2 (the wait below, one iteration ago), so its stage can be refilled.
    __syncthreads();
    load(panel + 2);
    kiln_keep_registers<64>(acc);
    kiln_wgmma_fence();
    const unsigned char* stage = stages + (panel % WG_STAGES) * WG_STAGE_BYTES;
    wg_mma_panel<kBf16, kAMn, kBMn, WG_TILE>(stage, stage + WG_PANEL_BYTES, warpgroup, acc);
    kiln_wgmma_commit();
    kiln_wgmma_wait<1>();  // the previous panel's wgmma are done; this one's stays in flight
    kiln_keep_registers<64>(acc);
  }
  kiln_wgmma_wait<0>();
  kiln_keep_registers<64>(acc);
  kiln_cp_async_wait<0>();
  __syncthreads();  // the stages may be refilled by the next output's prologue
}

// Writes a warpgroup's 64 x kN accumulator tile at (row0, n0) of the matrix at element c0 of C
// [m][n]: alpha·acc + beta·C (+ row_bias[g·m + row], + col_bias[g·n + col]), skipping the parts
// past the matrix; in f32,
// or rounded to the operands' format when c_16bit. `t`: the thread in the warpgroup.
template <bool kBf16, int kN>
__device__ __forceinline__ void wg_store_tile(float* c, long long c0, int c_16bit,
                                              const float* row_bias, const float* col_bias, int g,
                                              int m, int n,
                                              float alpha, float beta, int row0, int n0, int t,
                                              const float* acc) {
  const int w = t / 32, lane = t % 32;
  #pragma unroll
  for (int j = 0; j < kN / 8; ++j) {
    #pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = row0 + 16 * w + lane / 4 + 8 * (r >> 1);
      const int col = n0 + 8 * j + 2 * (lane % 4) + (r & 1);
      if (row >= m || col >= n) continue;
      const long long out = c0 + (long long)row * n + col;
      // beta == 0 ignores the old C entirely (BLAS rule), as the other GEMMs do.
      // A 16-bit C is only written (the launcher refuses beta != 0 with it): never read it as f32.
      float v = (c_16bit || beta == 0.0f) ? alpha * acc[4 * j + r]
                                          : alpha * acc[4 * j + r] + beta * c[out];
      if (row_bias) v += row_bias[(long long)g * m + row];
      if (col_bias) v += col_bias[(long long)g * n + col];
      gemm_store_c<kBf16>(c, out, v, c_16bit);
    }
  }
}

template <bool kBf16>
__device__ __forceinline__ void gemm_wgmma(const WgmmaGemmParams& p) {
  KILN_DYNAMIC_SHARED(shared);
  // The swizzle needs 1024-byte aligned stages; the launch adds 1024 bytes of slack for this.
  unsigned char* stages = shared + ((1024 - (kiln_shared_address(shared) & 1023)) & 1023);
  const int m0 = blockIdx.y * WG_TILE, n0 = blockIdx.x * WG_TILE;
  const int t = threadIdx.x % 128, warpgroup = threadIdx.x / 128;

  const int outputs = (p.reduce_batch ? 1 : p.batch) * p.groups;
  for (int z = blockIdx.z; z < outputs; z += gridDim.z) {
    const int g = z % p.groups;
    const int first = p.reduce_batch ? 0 : z / p.groups;
    const int last = p.reduce_batch ? p.batch : first + 1;
    float acc[64];
    #pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    switch ((p.trans_a ? 2 : 0) + (p.trans_b ? 0 : 1)) {  // A stored [k][m] is MN-major; B [k][n] too
      case 0: wg_mainloop<kBf16, false, false>(p, g, first, last, m0, n0, stages, acc); break;
      case 1: wg_mainloop<kBf16, false, true>(p, g, first, last, m0, n0, stages, acc); break;
      case 2: wg_mainloop<kBf16, true, false>(p, g, first, last, m0, n0, stages, acc); break;
      default: wg_mainloop<kBf16, true, true>(p, g, first, last, m0, n0, stages, acc); break;
    }

    const long long c0 =
        (p.reduce_batch ? 0 : (long long)first * p.stride_c) + g * p.group_stride_c;
    wg_store_tile<kBf16, WG_TILE>(p.c, c0, p.c_16bit, p.row_bias, p.col_bias, g, p.m, p.n,
                                  p.alpha, p.beta,
                                  m0 + 64 * warpgroup, n0, t, acc);
  }
}

extern "C" __global__ void __launch_bounds__(WG_THREADS) gemm_wgmma_bf16(const WgmmaGemmParams p) {
  gemm_wgmma<true>(p);
}
KILN_EMULATE_SYNC(gemm_wgmma_bf16, WgmmaGemmParams)

extern "C" __global__ void __launch_bounds__(WG_THREADS) gemm_wgmma_f16(const WgmmaGemmParams p) {
  gemm_wgmma<false>(p);
}
KILN_EMULATE_SYNC(gemm_wgmma_f16, WgmmaGemmParams)

// ---- TMA-fed variant (single products) ----
//
// Tiles of 128 x kN, kN = 128 or 256 (the wide kernels, gemm_wgmma_tma_wide_*: twice the work per
// A panel, 128 accumulators per consumer thread, which setmaxnreg makes room for by taking
// registers from the producer warpgroup).

#define WG_TMA_THREADS 384  // warpgroup 0 produces, 1 and 2 consume
#define WG_TMA_CONSUMER_WARPS 8  // each releases a stage on its own: the empty barriers' count
static_assert(WG_TMA_CONSUMER_WARPS == (WG_TMA_THREADS - 128) / 32, "every consumer warp arrives");

// Mirrors src/cuda/gemm_wgmma.rs `WgmmaTmaParams`. map_a / map_b: 2-d maps of A and B as stored
// (inner dimension = the contiguous one), boxes of 64 x 128 or 64 x kN (K-major) or 64 x 64
// (MN-major).
struct __align__(128) WgmmaTmaParams {
  KilnTensorMap map_a;
  KilnTensorMap map_b;
  float* c;
  int m, n, k;
  int trans_a, trans_b;
  KILN_GEMM_EPILOGUE_FIELDS;
};
static_assert(offsetof(WgmmaTmaParams, row_bias) == 288, "mirrors src/cuda/gemm_wgmma.rs");

// Bytes of a stage: A's 128 x 64 panel, then B's kN x 64 one.
template <int kN>
__host__ __device__ constexpr int wg_tma_stage_bytes() {
  return WG_PANEL_BYTES + kN * WG_BK * 2;
}

// Issues the copies of one operand's `rows` x 64 panel at rows `row0`, k `k0` into `panel`,
// completing on `full`. K-major: one 64 (k) x `rows` box; MN-major: `rows` / 64 boxes of 64 (rows)
// x 64 (k), one per atom.
template <bool kMnMajor, int kRows>
__device__ __forceinline__ void wg_tma_panel(unsigned char* panel, const KilnTensorMap* map,
                                             int row0, int k0, uint64_t* full) {
  if (kMnMajor) {
    #pragma unroll
    for (int atom = 0; atom < kRows / 64; ++atom) {
      kiln_tma_load_2d(panel + atom * WG_ATOM_BYTES, map, row0 + 64 * atom, k0, full);
    }
  } else {
    kiln_tma_load_2d(panel, map, k0, row0, full);
  }
}

// The producer warpgroup: one thread keeps the ring full, panel after panel.
template <bool kAMn, bool kBMn, int kN>
__device__ __forceinline__ void wg_tma_produce(const WgmmaTmaParams& p, int m0, int n0,
                                               unsigned char* stages, uint64_t* full,
                                               uint64_t* empty) {
  constexpr int kStageBytes = wg_tma_stage_bytes<kN>();
  if (kN == 256) kiln_setmaxnreg_dec<40>();
  if (threadIdx.x != 0) return;
  const int panels = (p.k + WG_BK - 1) / WG_BK;
  for (int panel = 0; panel < panels; ++panel) {
    const int s = panel % WG_STAGES;
    // The stage's previous use (panel - WG_STAGES) must be released by every consumer warp.
    if (panel >= WG_STAGES) kiln_mbarrier_wait(&empty[s], ((panel / WG_STAGES) - 1) & 1);
    unsigned char* stage = stages + s * kStageBytes;
    kiln_mbarrier_arrive_expect_tx(&full[s], kStageBytes);
    wg_tma_panel<kAMn, WG_TILE>(stage, &p.map_a, m0, panel * WG_BK, &full[s]);
    wg_tma_panel<kBMn, kN>(stage + WG_PANEL_BYTES, &p.map_b, n0, panel * WG_BK, &full[s]);
  }
}

// A consumer warpgroup: multiplies each panel once it has landed, releases the previous one, and
// writes its 64 x kN tile. Each of its 4 warps releases a stage itself, lane 0 arriving once the
// warp's own wait has retired the wgmma that read it. The accumulators come to life only here,
// after setmaxnreg has given the consumers the producer's spare registers.
template <bool kBf16, bool kAMn, bool kBMn, int kN>
__device__ __forceinline__ void wg_tma_consume(const WgmmaTmaParams& p, int m0, int n0,
                                               const unsigned char* stages, uint64_t* full,
                                               uint64_t* empty) {
  constexpr int kStageBytes = wg_tma_stage_bytes<kN>();
  if (kN == 256) kiln_setmaxnreg_inc<232>();
  const int consumer = threadIdx.x / 128 - 1;
  const bool warp_leader = threadIdx.x % 32 == 0;
  const int panels = (p.k + WG_BK - 1) / WG_BK;
  float acc[kN / 2];
  #pragma unroll
  for (int i = 0; i < kN / 2; ++i) acc[i] = 0.0f;
  for (int panel = 0; panel < panels; ++panel) {
    const int s = panel % WG_STAGES;
    kiln_mbarrier_wait(&full[s], (panel / WG_STAGES) & 1);
    kiln_keep_registers<kN / 2>(acc);
    kiln_wgmma_fence();
    const unsigned char* stage = stages + s * kStageBytes;
    wg_mma_panel<kBf16, kAMn, kBMn, kN>(stage, stage + WG_PANEL_BYTES, consumer, acc);
    kiln_wgmma_commit();
    kiln_wgmma_wait<1>();  // this warp's wgmma of the previous panel are done: release its stage
    kiln_keep_registers<kN / 2>(acc);
    if (panel > 0 && warp_leader) kiln_mbarrier_arrive(&empty[(panel - 1) % WG_STAGES]);
  }
  kiln_wgmma_wait<0>();
  kiln_keep_registers<kN / 2>(acc);
  wg_store_tile<kBf16, kN>(p.c, 0, p.c_16bit, p.row_bias, p.col_bias, 0, p.m, p.n, p.alpha, p.beta,
                           m0 + 64 * consumer, n0, threadIdx.x % 128, acc);
}

template <bool kBf16, bool kAMn, bool kBMn, int kN>
__device__ __forceinline__ void wg_tma_roles(const WgmmaTmaParams& p, int m0, int n0,
                                             unsigned char* stages, uint64_t* full,
                                             uint64_t* empty) {
  if (threadIdx.x < 128) {
    wg_tma_produce<kAMn, kBMn, kN>(p, m0, n0, stages, full, empty);
  } else {
    wg_tma_consume<kBf16, kAMn, kBMn, kN>(p, m0, n0, stages, full, empty);
  }
}

template <bool kBf16, int kN>
__device__ __forceinline__ void gemm_wgmma_tma(const WgmmaTmaParams& p) {
  KILN_DYNAMIC_SHARED(shared);
  unsigned char* stages = shared + ((1024 - (kiln_shared_address(shared) & 1023)) & 1023);
  // The mbarriers follow the stages (the launch reserves 1024 bytes of alignment slack plus them).
  uint64_t* full = reinterpret_cast<uint64_t*>(stages + WG_STAGES * wg_tma_stage_bytes<kN>());
  uint64_t* empty = full + WG_STAGES;
  if (threadIdx.x == 0) {
    for (int s = 0; s < WG_STAGES; ++s) {
      kiln_mbarrier_init(&full[s], 1);   // the producer's arrive, plus the copies' bytes
      kiln_mbarrier_init(&empty[s], WG_TMA_CONSUMER_WARPS);  // one arrive per consumer warp
    }
    kiln_fence_mbarrier_init();
  }
  __syncthreads();

  const int m0 = blockIdx.y * WG_TILE, n0 = blockIdx.x * kN;
  switch ((p.trans_a ? 2 : 0) + (p.trans_b ? 0 : 1)) {
    case 0: wg_tma_roles<kBf16, false, false, kN>(p, m0, n0, stages, full, empty); break;
    case 1: wg_tma_roles<kBf16, false, true, kN>(p, m0, n0, stages, full, empty); break;
    case 2: wg_tma_roles<kBf16, true, false, kN>(p, m0, n0, stages, full, empty); break;
    default: wg_tma_roles<kBf16, true, true, kN>(p, m0, n0, stages, full, empty); break;
  }
}

extern "C" __global__ void __launch_bounds__(WG_TMA_THREADS)
    gemm_wgmma_tma_bf16(const __grid_constant__ WgmmaTmaParams p) {
  gemm_wgmma_tma<true, 128>(p);
}
KILN_EMULATE_SYNC(gemm_wgmma_tma_bf16, WgmmaTmaParams)

extern "C" __global__ void __launch_bounds__(WG_TMA_THREADS)
    gemm_wgmma_tma_f16(const __grid_constant__ WgmmaTmaParams p) {
  gemm_wgmma_tma<false, 128>(p);
}
KILN_EMULATE_SYNC(gemm_wgmma_tma_f16, WgmmaTmaParams)

extern "C" __global__ void __launch_bounds__(WG_TMA_THREADS, 1)
    gemm_wgmma_tma_wide_bf16(const __grid_constant__ WgmmaTmaParams p) {
  gemm_wgmma_tma<true, 256>(p);
}
KILN_EMULATE_SYNC(gemm_wgmma_tma_wide_bf16, WgmmaTmaParams)

extern "C" __global__ void __launch_bounds__(WG_TMA_THREADS, 1)
    gemm_wgmma_tma_wide_f16(const __grid_constant__ WgmmaTmaParams p) {
  gemm_wgmma_tma<false, 256>(p);
}
KILN_EMULATE_SYNC(gemm_wgmma_tma_wide_f16, WgmmaTmaParams)
