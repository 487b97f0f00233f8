// Concatenation along one axis, and its inverse (the slice of one input).
//
// A tensor viewed around an axis is [outer][axis][inner]. Input i of a concatenation holds
// `slab` = C_i·inner contiguous elements per outer index; the output holds `whole` = ΣC_j·inner,
// and input i's slab starts at `offset` = (ΣC_j for j < i)·inner. The forward launches once per
// input, one thread per input element (a scatter without collisions: every output element has
// exactly one writer); the backward is the gather of the same slab out of dy.
#include "common.cuh"

// Mirrors src/cuda/shape.rs `ConcatFwdParams`.
struct ConcatFwdParams {
  const float* src;  // [outer][slab]
  float* dst;        // [outer][whole]; this input fills [o][offset, offset + slab)
  long long total;   // outer·slab
  long long slab, whole, offset;
};

extern "C" __global__ void concat_fwd_f32(const ConcatFwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.total) {
    const long long o = i / p.slab;
    const long long r = i - o * p.slab;
    p.dst[o * p.whole + p.offset + r] = p.src[i];
  }
}
KILN_EMULATE(concat_fwd_f32, ConcatFwdParams)

// Mirrors src/cuda/shape.rs `ConcatBwdParams`.
struct ConcatBwdParams {
  const float* dy;  // [outer][whole]
  float* dx;        // [outer][slab] = dy[o][offset, offset + slab)
  long long total;  // outer·slab
  long long slab, whole, offset;
};

extern "C" __global__ void concat_bwd_f32(const ConcatBwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.total) {
    const long long o = i / p.slab;
    const long long r = i - o * p.slab;
    p.dx[i] = p.dy[o * p.whole + p.offset + r];
  }
}
KILN_EMULATE(concat_bwd_f32, ConcatBwdParams)
