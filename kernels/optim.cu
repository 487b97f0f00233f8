// Fused optimizer updates: one pass over the parameters reads w, g and the state, writes w and state.
#include "common.cuh"

// Mirrors src/cuda/optim.rs `SgdMomentumParams`.
struct SgdMomentumParams {
  float* w;
  const float* g;
  float* velocity;
  long long n;
  float lr, momentum, weight_decay;
};

// PyTorch's SGD: g' = g + wd·w; v = momentum·v + g'; w -= lr·v.
extern "C" __global__ void sgd_momentum_f32(const SgdMomentumParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float g = p.g[i] + p.weight_decay * p.w[i];
    const float v = p.momentum * p.velocity[i] + g;
    p.velocity[i] = v;
    p.w[i] -= p.lr * v;
  }
}
KILN_EMULATE(sgd_momentum_f32, SgdMomentumParams)
