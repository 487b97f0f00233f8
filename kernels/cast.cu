// Conversions between f32 and the 16-bit formats (bf16, IEEE f16) of the mixed-precision path
// (the element rules are in half.cuh; src/cpu/cast.rs is the twin).
#include "common.cuh"
#include "half.cuh"

// Mirrors src/cuda/cast.rs `CastParams`.
struct CastParams {
  const void* x;
  void* y;
  long long n;
  int bf16;  // the 16-bit side: 1 bf16, 0 f16
};

// y[i] = x[i] rounded from f32 to the 16-bit format.
extern "C" __global__ void cast_f32_to_16bit(const CastParams p) {
  const float* x = static_cast<const float*>(p.x);
  unsigned short* y = static_cast<unsigned short*>(p.y);
  KILN_GRID_STRIDE_LOOP(i, p.n) { y[i] = p.bf16 ? float_to_bf16_bits(x[i]) : float_to_f16_bits(x[i]); }
}
KILN_EMULATE(cast_f32_to_16bit, CastParams)

// y[i] = x[i] widened from the 16-bit format to f32 (exact).
extern "C" __global__ void cast_16bit_to_f32(const CastParams p) {
  const unsigned short* x = static_cast<const unsigned short*>(p.x);
  float* y = static_cast<float*>(p.y);
  KILN_GRID_STRIDE_LOOP(i, p.n) { y[i] = p.bf16 ? bf16_bits_to_f32(x[i]) : f16_bits_to_f32(x[i]); }
}
KILN_EMULATE(cast_16bit_to_f32, CastParams)
