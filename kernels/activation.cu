// Elementwise activations. One thread per element in a grid-stride loop.
#include "common.cuh"

// Mirrors src/cuda/activation.rs `ReluFwdParams`.
struct ReluFwdParams {
  const float* x;
  float* y;
  unsigned char* mask;  // 1 where x > 0: the backward pass applies it
  long long n;
};

// y = max(x, 0); mask = x > 0.
extern "C" __global__ void relu_fwd_f32(const ReluFwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float v = p.x[i];
    const bool positive = v > 0.0f;
    p.y[i] = positive ? v : 0.0f;
    p.mask[i] = positive ? 1 : 0;
  }
}
KILN_EMULATE(relu_fwd_f32, ReluFwdParams)

// Mirrors src/cuda/activation.rs `ReluBwdParams`.
struct ReluBwdParams {
  const float* dy;
  const unsigned char* mask;
  float* dx;
  long long n;
};

// dx = dy where the forward input was positive, else 0 (so the gradient at x = 0 is 0).
extern "C" __global__ void relu_bwd_f32(const ReluBwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) { p.dx[i] = p.mask[i] ? p.dy[i] : 0.0f; }
}
KILN_EMULATE(relu_bwd_f32, ReluBwdParams)
