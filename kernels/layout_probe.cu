// Probes of the layout rules that the kernels and their CPU emulation share, for
// tests/layout_oracles.rs. A rule used by both sides (the 128-byte swizzle: the GEMM's stores, the
// emulated wgmma's reads and the emulated TMA's writes) can be wrong in a way no emulated GEMM
// test sees; so each probe runs one rule on index-coded inputs and writes out what it produced,
// and the test compares that with the PTX ISA's description of the rule, written again in Rust.
// On a GPU the instruction itself answers (mma.sync here, wgmma in layout_probe_wgmma.cu), which
// makes the same test a hardware oracle; under emulation the emulated instruction answers.
//
// Launchers: src/cuda/layout_probe.rs. Nothing here is used by training.
#include "common.cuh"
#include "hopper.cuh"

// Mirrors src/cuda/layout_probe.rs `SwizzleProbeParams`.
struct SwizzleProbeParams {
  const unsigned int* offsets;
  unsigned int* out;
  long long n;
};

// out[i] = swizzle_128b(offsets[i]) (kernels/hopper.cuh), one thread per offset.
extern "C" __global__ void layout_probe_swizzle(const SwizzleProbeParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) { p.out[i] = swizzle_128b(p.offsets[i]); }
}
KILN_EMULATE(layout_probe_swizzle, SwizzleProbeParams)

// Mirrors src/cuda/layout_probe.rs `DescriptorProbeParams`.
struct DescriptorProbeParams {
  const unsigned int* fields;  // [n][3]: shared address, leading bytes, stride bytes
  unsigned long long* out;     // [n]
  long long n;
};

// out[i] = wgmma_descriptor(fields[i]) (kernels/hopper.cuh), one thread per descriptor.
extern "C" __global__ void layout_probe_descriptor(const DescriptorProbeParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const unsigned int* f = p.fields + 3 * i;
    p.out[i] = wgmma_descriptor(f[0], f[1], f[2]);
  }
}
KILN_EMULATE(layout_probe_descriptor, DescriptorProbeParams)

// Mirrors src/cuda/layout_probe.rs `MmaProbeParams`.
struct MmaProbeParams {
  const unsigned int* a;  // [32][4]: the A registers of each lane (two 16-bit values each)
  const unsigned int* b;  // [32][2]: the B registers
  const float* c;         // [32][4]: the accumulators going in
  float* d;               // [32][4]: the accumulators coming out
  int bf16;               // 1: bf16 inputs, 0: f16
};

// One warp (a block of 32 threads): lane l loads the registers the caller chose for it, runs one
// mma.sync.m16n8k16 (kiln_mma_*_16816, kernels/emulation.h: the instruction on a GPU, its
// emulation on the CPU) and stores its four accumulators.
extern "C" __global__ void layout_probe_mma_16816(const MmaProbeParams p) {
  const int lane = threadIdx.x % 32;
  uint32_t a[4], b[2];
  float d[4];
  for (int r = 0; r < 4; ++r) a[r] = p.a[4 * lane + r];
  for (int r = 0; r < 2; ++r) b[r] = p.b[2 * lane + r];
  for (int r = 0; r < 4; ++r) d[r] = p.c[4 * lane + r];
  if (p.bf16) {
    kiln_mma_bf16_16816(d, a, b);
  } else {
    kiln_mma_f16_16816(d, a, b);
  }
  for (int r = 0; r < 4; ++r) p.d[4 * lane + r] = d[r];
}
KILN_EMULATE_SYNC(layout_probe_mma_16816, MmaProbeParams)
