// Inverted dropout. One thread per element in a grid-stride loop.
//
// The keep/drop decision of element i is a pure function of (seed, i): a counter-based hash, so the
// mask is the same whatever the grid, on the GPU, under emulation, and in the CPU twin
// (src/cpu/dropout.rs `dropout_bits`, the same arithmetic on u64 with wrapping multiplies).
#include "common.cuh"
#include "half.cuh"

// SplitMix64's output function (Vigna's splitmix64.c, the constants of Stafford's "Mix13").
__host__ __device__ __forceinline__ unsigned long long dropout_mix(unsigned long long z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// 64 random bits for element i: output i + 1 of a SplitMix64 stream whose state starts at
// mix(seed), i.e. mix(mix(seed) + (i + 1)·γ) with γ the golden-ratio increment.
__host__ __device__ __forceinline__ unsigned long long dropout_bits(unsigned long long seed,
                                                                   unsigned long long i) {
  return dropout_mix(dropout_mix(seed) + (i + 1ULL) * 0x9E3779B97F4A7C15ULL);
}

// Mirrors src/cuda/dropout.rs `DropoutFwdParams`. T is the storage type of x and y (f32, bf16,
// f16: the kept values are scaled in f32 and rounded once).
template <typename T>
struct DropoutFwdParams {
  const T* x;
  T* y;
  unsigned char* mask;           // 1 where the element is kept
  const KilnStepScalars* scalars;  // null: use step
  unsigned long long seed;       // the mask's seed is seed ^ (step + step_offset)·γ: one per step
  unsigned long long step;
  unsigned long long step_offset;
  unsigned long long threshold;  // keep iff the top 32 bits ≥ threshold = round(p·2³²) (2³² drops all)
  long long n;
  float scale;  // 1/(1 − p), or 0 when p = 1
};

// mask = keep(seed, i); y = mask ? x·scale : 0 (a dropped NaN becomes 0, as a multiply by a mask would not).
template <typename T>
__device__ __forceinline__ void dropout_fwd(const DropoutFwdParams<T>& p) {
  const unsigned long long step = (p.scalars ? p.scalars->step : p.step) + p.step_offset;
  const unsigned long long seed = p.seed ^ (step * 0x9E3779B97F4A7C15ULL);
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const bool keep = (dropout_bits(seed, (unsigned long long)i) >> 32) >= p.threshold;
    p.y[i] = from_f32<T>(keep ? to_f32(p.x[i]) * p.scale : 0.0f);
    p.mask[i] = keep ? 1 : 0;
  }
}
KILN_STORAGE_KERNELS(dropout_fwd, DropoutFwdParams)

// Mirrors src/cuda/dropout.rs `DropoutBwdParams`.
template <typename T>
struct DropoutBwdParams {
  const T* dy;
  const unsigned char* mask;
  T* dx;
  long long n;
  float scale;
};

// dx = mask ? dy·scale : 0, with the forward pass's mask.
template <typename T>
__device__ __forceinline__ void dropout_bwd(const DropoutBwdParams<T>& p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    p.dx[i] = from_f32<T>(p.mask[i] ? to_f32(p.dy[i]) * p.scale : 0.0f);
  }
}
KILN_STORAGE_KERNELS(dropout_bwd, DropoutBwdParams)
