// Elementwise arithmetic on equal-shaped tensors. One thread per element, grid-stride loop.
#include "common.cuh"

// Mirrors src/cuda/elementwise.rs `AxpbyParams`.
struct AxpbyParams {
  const float* a;
  const float* b;
  float* out;  // alpha·a + beta·b; may be a itself (each element is read before it is written)
  long long n;
  float alpha, beta;
};

extern "C" __global__ void axpby_f32(const AxpbyParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) { p.out[i] = p.alpha * p.a[i] + p.beta * p.b[i]; }
}
KILN_EMULATE(axpby_f32, AxpbyParams)

// Mirrors src/cuda/elementwise.rs `MulParams`.
struct MulParams {
  const float* a;
  const float* b;
  float* out;  // a·b
  long long n;
};

extern "C" __global__ void mul_f32(const MulParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) { p.out[i] = p.a[i] * p.b[i]; }
}
KILN_EMULATE(mul_f32, MulParams)

// Mirrors src/cuda/elementwise.rs `AffineParams`.
struct AffineParams {
  const float* x;
  float* out;             // scale·x + shift
  const float* upstream;  // one element multiplying scale (a backward's upstream gradient), or null
  long long n;
  float scale, shift;
};

extern "C" __global__ void affine_f32(const AffineParams p) {
  const float scale = p.upstream ? p.scale * p.upstream[0] : p.scale;
  KILN_GRID_STRIDE_LOOP(i, p.n) { p.out[i] = scale * p.x[i] + p.shift; }
}
KILN_EMULATE(affine_f32, AffineParams)

// Mirrors src/cuda/elementwise.rs `FillParams`.
struct FillParams {
  float* out;             // value everywhere
  const float* upstream;  // one element multiplying value (a backward's upstream gradient), or null
  long long n;
  float value;
};

// A constant tensor made on the device (no copy from the host, so it can be part of a CUDA graph).
extern "C" __global__ void fill_f32(const FillParams p) {
  const float value = p.upstream ? p.value * p.upstream[0] : p.value;
  KILN_GRID_STRIDE_LOOP(i, p.n) { p.out[i] = value; }
}
KILN_EMULATE(fill_f32, FillParams)
