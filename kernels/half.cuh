// f32 <-> bf16 / IEEE f16 for one element, as raw 16-bit patterns, rounding to nearest even as
// PyTorch and the `half` crate do. Used by cast.cu and by the kernels that write 16-bit operands
// of the tensor-core GEMM directly (im2col_16bit).
#pragma once

#include "common.cuh"

// f32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ unsigned short float_to_bf16_bits(float f) {
  const unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// f32 -> IEEE f16 bits, round to nearest even, overflow to infinity, subnormals kept.
__device__ __forceinline__ unsigned short float_to_f16_bits(float f) {
  const unsigned int u = __float_as_uint(f);
  const unsigned short sign = (unsigned short)((u >> 16) & 0x8000u);
  const unsigned int magnitude = u & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7e00u;           // NaN
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;          // rounds past 65504: infinity
  if (magnitude < 0x38800000u) {                                // below 2^-14: subnormal or zero
    if (magnitude < 0x33000000u) return sign;                   // at most 2^-25: rounds to ±0
    // value / 2^-24 = mantissa · 2^(exponent − 126), rounded to nearest even.
    const int shift = 126 - (int)(magnitude >> 23);             // 14..24
    const unsigned int mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    unsigned int out = mantissa >> shift;
    const unsigned int rest = mantissa & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (out & 1u))) ++out;
    return sign | (unsigned short)out;
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits.
  const unsigned int rebiased = magnitude - 0x38000000u;
  return sign | (unsigned short)((rebiased + 0xfffu + ((rebiased >> 13) & 1u)) >> 13);
}

// bf16 bits -> f32: exact (bf16 is the top half of an f32).
__device__ __forceinline__ float bf16_bits_to_f32(unsigned short h) {
  return __uint_as_float((unsigned int)h << 16);
}

// IEEE f16 bits -> f32: exact, subnormals, infinities and NaN included.
__device__ __forceinline__ float f16_bits_to_f32(unsigned short h) {
  const unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
  const unsigned int exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return __uint_as_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa · 2^-24, exact in f32.
  const float magnitude = (float)mantissa * 5.9604644775390625e-8f;
  return __uint_as_float(sign | __float_as_uint(magnitude));
}

// Element i of a GEMM's C: f32, or (c_16bit) the 16-bit format of the operands (bf16 when kBf16,
// else f16) rounded once, which is how a layer writes 16-bit activations without an f32 pass.
template <bool kBf16>
__device__ __forceinline__ void gemm_store_c(float* c, long long i, float v, int c_16bit) {
  if (c_16bit) {
    reinterpret_cast<unsigned short*>(c)[i] = kBf16 ? float_to_bf16_bits(v) : float_to_f16_bits(v);
  } else {
    c[i] = v;
  }
}

// The element types activations are stored in: f32, or a 16-bit format as raw bits. Distinct
// types, so a kernel templated on its storage type converts at compile time: it loads with
// to_f32, computes in f32 and rounds each result once with from_f32 (mirrors src/cuda/mod.rs
// `Storage`; the CPU computes the same way, see src/backend/cast.rs).
struct kiln_bf16 {
  unsigned short bits;
};
struct kiln_f16 {
  unsigned short bits;
};

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(kiln_bf16 v) { return bf16_bits_to_f32(v.bits); }
__device__ __forceinline__ float to_f32(kiln_f16 v) { return f16_bits_to_f32(v.bits); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ kiln_bf16 from_f32<kiln_bf16>(float v) {
  return kiln_bf16{float_to_bf16_bits(v)};
}
template <>
__device__ __forceinline__ kiln_f16 from_f32<kiln_f16>(float v) {
  return kiln_f16{float_to_f16_bits(v)};
}

// Instantiates the kernel template `op<T>` (a __device__ function taking `Params<T>`) as the
// extern "C" kernels op_f32, op_bf16 and op_f16, each registered for emulation; the _SYNC form for
// kernels that call __syncthreads. build.rs reads these lines as the three registrations. Every
// such kernel is launched with at most KILN_THREADS_PER_BLOCK threads per block.
#define KILN_STORAGE_KERNELS_IMPL(op, Params, EMULATE)                                  \
  extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)                  \
      op##_f32(const Params<float> p) { op<float>(p); }                                 \
  EMULATE(op##_f32, Params<float>)                                                      \
  extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)                  \
      op##_bf16(const Params<kiln_bf16> p) { op<kiln_bf16>(p); }                        \
  EMULATE(op##_bf16, Params<kiln_bf16>)                                                 \
  extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)                  \
      op##_f16(const Params<kiln_f16> p) { op<kiln_f16>(p); }                           \
  EMULATE(op##_f16, Params<kiln_f16>)
#define KILN_STORAGE_KERNELS(op, Params) KILN_STORAGE_KERNELS_IMPL(op, Params, KILN_EMULATE)
#define KILN_STORAGE_KERNELS_SYNC(op, Params) KILN_STORAGE_KERNELS_IMPL(op, Params, KILN_EMULATE_SYNC)
