// Elementwise arithmetic on equal-shaped tensors. One thread per element, grid-stride loop.
#include "common.cuh"
#include "half.cuh"

// Mirrors src/cuda/elementwise.rs `AxpbyParams`; T is the storage type (f32, bf16 or f16) of a,
// b and out.
template <typename T>
struct AxpbyParams {
  const T* a;
  const T* b;
  T* out;  // alpha·a + beta·b; may be a itself (each element is read before it is written)
  long long n;
  float alpha, beta;
};

// In f32, rounded once to T: the sum of two 16-bit activations (a residual connection, or two
// gradients meeting at a branch) and the f32 update of running statistics.
template <typename T>
__device__ __forceinline__ void axpby(const AxpbyParams<T>& p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    p.out[i] = from_f32<T>(p.alpha * to_f32(p.a[i]) + p.beta * to_f32(p.b[i]));
  }
}
KILN_STORAGE_KERNELS(axpby, AxpbyParams)

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
