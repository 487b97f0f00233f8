// kiln-ptx-arch: compute_90a
// The wgmma probe of tests/layout_oracles.rs (see kernels/layout_probe.cu): one warpgroup runs one
// wgmma.mma_async.m64n128k16 on operand tiles the caller laid out in shared memory, with
// descriptors built by wgmma_descriptor (kernels/hopper.cuh) exactly as gemm_wgmma.cu builds them,
// and writes out every thread's 64 accumulators. The test lays the tiles out and decodes the
// accumulators from the PTX ISA's descriptions (128-byte swizzle, canonical K-major and MN-major
// layouts, the m64nNk16 D fragments); on a Hopper GPU the instruction answers, under emulation
// kernels/hopper.cuh's twin does. Hopper only, hence its own PTX target.
#include "common.cuh"
#include "hopper.cuh"

#define PROBE_THREADS 128
#define PROBE_A_BYTES (64 * 128)   // A: 64 (m) x 64 (k) 16-bit values
#define PROBE_B_BYTES (128 * 128)  // B: 128 (n) x 64 (k)
#define PROBE_ATOM_BYTES (64 * 128)  // an MN-major atom: 64 k rows of 64 m or n (gemm_wgmma.cu)

// Mirrors src/cuda/layout_probe.rs `WgmmaProbeParams`.
// kiln-mirror: layout_probe::WgmmaProbeParams
struct WgmmaProbeParams {
  const unsigned char* image;  // PROBE_A_BYTES of A's tile, then PROBE_B_BYTES of B's, as stored
  float* d;                    // [128][64]: thread t's accumulators, in register order
  int bf16;                    // 1: bf16 inputs, 0: f16
  int a_mn_major, b_mn_major;  // the operand's major order (the instruction's transpose flags)
  int step;                    // which k16 slice of the 64-deep tiles to multiply, 0..3
};

// The descriptor of k16 slice `step` of a tile at shared address `base`, as gemm_wgmma.cu's
// wg_descriptor: K-major, rows of 128 bytes with groups of 8 rows 1024 bytes apart, the slice
// 32 bytes into each row; MN-major, atoms PROBE_ATOM_BYTES apart with groups of 8 k rows 1024
// bytes apart, the slice 16 k rows (2048 bytes) in.
template <bool kMnMajor>
__device__ __forceinline__ uint64_t probe_descriptor(uint32_t base, int step) {
  if (kMnMajor) return wgmma_descriptor(base + step * 16 * 128, PROBE_ATOM_BYTES, 1024);
  return wgmma_descriptor(base + step * 32, 16, 1024);
}

template <bool kBf16, bool kAMn, bool kBMn>
__device__ __forceinline__ void wgmma_probe(const WgmmaProbeParams& p, const unsigned char* tiles) {
  const uint32_t base = kiln_shared_address(tiles);
  const uint64_t da = probe_descriptor<kAMn>(base, p.step);
  const uint64_t db = probe_descriptor<kBMn>(base + PROBE_A_BYTES, p.step);
  float acc[64];
  #pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  kiln_keep_registers<64>(acc);
  kiln_wgmma_fence();
  kiln_wgmma<kBf16, 128, kAMn, kBMn>(acc, da, db);
  kiln_wgmma_commit();
  kiln_wgmma_wait<0>();
  kiln_keep_registers<64>(acc);
  #pragma unroll
  for (int i = 0; i < 64; ++i) p.d[threadIdx.x * 64 + i] = acc[i];
}

// One block of PROBE_THREADS threads; dynamic shared memory PROBE_A_BYTES + PROBE_B_BYTES plus
// 1024 bytes of alignment slack.
extern "C" __global__ void __launch_bounds__(PROBE_THREADS)
    layout_probe_wgmma(const WgmmaProbeParams p) {
  KILN_DYNAMIC_SHARED(shared);
  // The swizzle repeats every 1024 bytes of address: the tiles start on such a boundary.
  unsigned char* tiles = shared + ((1024 - (kiln_shared_address(shared) & 1023)) & 1023);
  for (int i = threadIdx.x; i < (PROBE_A_BYTES + PROBE_B_BYTES) / 16; i += PROBE_THREADS) {
    reinterpret_cast<uint4*>(tiles)[i] = reinterpret_cast<const uint4*>(p.image)[i];
  }
  kiln_fence_proxy_async();  // these generic-proxy writes, visible to wgmma's async proxy
  __syncthreads();
  switch ((p.bf16 ? 4 : 0) + (p.a_mn_major ? 2 : 0) + (p.b_mn_major ? 1 : 0)) {
    case 0: wgmma_probe<false, false, false>(p, tiles); break;
    case 1: wgmma_probe<false, false, true>(p, tiles); break;
    case 2: wgmma_probe<false, true, false>(p, tiles); break;
    case 3: wgmma_probe<false, true, true>(p, tiles); break;
    case 4: wgmma_probe<true, false, false>(p, tiles); break;
    case 5: wgmma_probe<true, false, true>(p, tiles); break;
    case 6: wgmma_probe<true, true, false>(p, tiles); break;
    default: wgmma_probe<true, true, true>(p, tiles); break;
  }
}
KILN_EMULATE_SYNC(layout_probe_wgmma, WgmmaProbeParams)
