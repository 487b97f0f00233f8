// Deterministic sum of a vector: a single block of 256 threads, each summing a fixed strided
// subset, then a shared-memory tree. Used for loss means; large tensors use it in stages.
#include "common.cuh"

// Mirrors src/cuda/reduce.rs `SumParams`.
struct SumParams {
  const float* x;
  float* out;  // out[0] = scale·Σx
  long long n;
  float scale;
};

extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK) sum_f32(const SumParams p) {
  __shared__ float partial[KILN_THREADS_PER_BLOCK];
  float s = 0.0f;
  for (long long i = threadIdx.x; i < p.n; i += blockDim.x) s += p.x[i];
  s = block_reduce(partial, s, false);
  if (threadIdx.x == 0) p.out[0] = p.scale * s;
}
KILN_EMULATE_SYNC(sum_f32, SumParams)
