// Elementwise activations. One thread per element in a grid-stride loop (ReLU: per 4 elements).
#include "common.cuh"
#include "half.cuh"

// Mirrors src/cuda/activation.rs `ReluFwdParams`.
struct ReluFwdParams {
  const float* x;
  float* y;
  unsigned char* mask;  // 1 where x > 0: the backward pass applies it
  long long n;
};

// 16-byte (4-float) accesses when every pointer allows them: the launch gives one thread per 4
// elements, which walk the quads and then the < 4 left over.
__device__ __forceinline__ bool relu_vectors_ok(const void* f0, const void* f1, const void* mask) {
  return ((unsigned long long)f0 % 16 == 0) && ((unsigned long long)f1 % 16 == 0) &&
         ((unsigned long long)mask % 4 == 0);
}

// y = max(x, 0); mask = x > 0.
extern "C" __global__ void relu_fwd_f32(const ReluFwdParams p) {
  const long long quads = relu_vectors_ok(p.x, p.y, p.mask) ? p.n / 4 : 0;
  KILN_GRID_STRIDE_LOOP(q, quads) {
    const float4 v = reinterpret_cast<const float4*>(p.x)[q];
    float4 out;
    uchar4 m;
    m.x = v.x > 0.0f, m.y = v.y > 0.0f, m.z = v.z > 0.0f, m.w = v.w > 0.0f;
    out.x = m.x ? v.x : 0.0f, out.y = m.y ? v.y : 0.0f;
    out.z = m.z ? v.z : 0.0f, out.w = m.w ? v.w : 0.0f;
    reinterpret_cast<float4*>(p.y)[q] = out;
    reinterpret_cast<uchar4*>(p.mask)[q] = m;
  }
  KILN_GRID_STRIDE_LOOP(j, p.n - 4 * quads) {
    const long long i = 4 * quads + j;
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
  const long long quads = relu_vectors_ok(p.dy, p.dx, p.mask) ? p.n / 4 : 0;
  KILN_GRID_STRIDE_LOOP(q, quads) {
    const float4 d = reinterpret_cast<const float4*>(p.dy)[q];
    const uchar4 m = reinterpret_cast<const uchar4*>(p.mask)[q];
    float4 out;
    out.x = m.x ? d.x : 0.0f, out.y = m.y ? d.y : 0.0f;
    out.z = m.z ? d.z : 0.0f, out.w = m.w ? d.w : 0.0f;
    reinterpret_cast<float4*>(p.dx)[q] = out;
  }
  KILN_GRID_STRIDE_LOOP(j, p.n - 4 * quads) {
    const long long i = 4 * quads + j;
    p.dx[i] = p.mask[i] ? p.dy[i] : 0.0f;
  }
}
KILN_EMULATE(relu_bwd_f32, ReluBwdParams)

// ReLU on 16-bit activations (T = kiln_bf16 or kiln_f16): y is x or +0, bit for bit (nothing to
// round), with 16-byte accesses of 8 elements when every pointer allows them; the launch gives one
// thread per 8 elements, which walk the groups of 8 and then the < 8 left over.

// Mirrors src/cuda/activation.rs `ReluFwdParams` (the same fields; x and y hold 16-bit values).
// kiln-mirror: ReluFwdParams
template <typename T>
struct Relu16FwdParams {
  const T* x;
  T* y;
  unsigned char* mask;
  long long n;
};

// Mirrors src/cuda/activation.rs `ReluBwdParams`.
// kiln-mirror: ReluBwdParams
template <typename T>
struct Relu16BwdParams {
  const T* dy;
  const unsigned char* mask;
  T* dx;
  long long n;
};

// Eight 16-bit values (16 bytes) and eight mask bytes, loaded and stored whole.
template <typename T>
struct alignas(16) Relu16Values {
  T v[8];
};
struct alignas(8) Relu16Mask {
  unsigned char m[8];
};

__device__ __forceinline__ bool relu16_vectors_ok(const void* h0, const void* h1, const void* mask) {
  return ((unsigned long long)h0 % 16 == 0) && ((unsigned long long)h1 % 16 == 0) &&
         ((unsigned long long)mask % 8 == 0);
}

template <typename T>
__device__ __forceinline__ void relu_fwd_16(const Relu16FwdParams<T>& p) {
  const long long groups = relu16_vectors_ok(p.x, p.y, p.mask) ? p.n / 8 : 0;
  KILN_GRID_STRIDE_LOOP(q, groups) {
    const Relu16Values<T> in = reinterpret_cast<const Relu16Values<T>*>(p.x)[q];
    Relu16Values<T> out;
    Relu16Mask m;
    for (int k = 0; k < 8; ++k) {
      const bool positive = to_f32(in.v[k]) > 0.0f;
      out.v[k] = positive ? in.v[k] : T{0};
      m.m[k] = positive ? 1 : 0;
    }
    reinterpret_cast<Relu16Values<T>*>(p.y)[q] = out;
    reinterpret_cast<Relu16Mask*>(p.mask)[q] = m;
  }
  KILN_GRID_STRIDE_LOOP(j, p.n - 8 * groups) {
    const long long i = 8 * groups + j;
    const bool positive = to_f32(p.x[i]) > 0.0f;
    p.y[i] = positive ? p.x[i] : T{0};
    p.mask[i] = positive ? 1 : 0;
  }
}

template <typename T>
__device__ __forceinline__ void relu_bwd_16(const Relu16BwdParams<T>& p) {
  const long long groups = relu16_vectors_ok(p.dy, p.dx, p.mask) ? p.n / 8 : 0;
  KILN_GRID_STRIDE_LOOP(q, groups) {
    const Relu16Values<T> d = reinterpret_cast<const Relu16Values<T>*>(p.dy)[q];
    const Relu16Mask m = reinterpret_cast<const Relu16Mask*>(p.mask)[q];
    Relu16Values<T> out;
    for (int k = 0; k < 8; ++k) out.v[k] = m.m[k] ? d.v[k] : T{0};
    reinterpret_cast<Relu16Values<T>*>(p.dx)[q] = out;
  }
  KILN_GRID_STRIDE_LOOP(j, p.n - 8 * groups) {
    const long long i = 8 * groups + j;
    p.dx[i] = p.mask[i] ? p.dy[i] : T{0};
  }
}

extern "C" __global__ void relu_fwd_bf16(const Relu16FwdParams<kiln_bf16> p) { relu_fwd_16(p); }
KILN_EMULATE(relu_fwd_bf16, Relu16FwdParams<kiln_bf16>)
extern "C" __global__ void relu_fwd_f16(const Relu16FwdParams<kiln_f16> p) { relu_fwd_16(p); }
KILN_EMULATE(relu_fwd_f16, Relu16FwdParams<kiln_f16>)
extern "C" __global__ void relu_bwd_bf16(const Relu16BwdParams<kiln_bf16> p) { relu_bwd_16(p); }
KILN_EMULATE(relu_bwd_bf16, Relu16BwdParams<kiln_bf16>)
extern "C" __global__ void relu_bwd_f16(const Relu16BwdParams<kiln_f16> p) { relu_bwd_16(p); }
KILN_EMULATE(relu_bwd_f16, Relu16BwdParams<kiln_f16>)

// ---------------------------------------------------------------------------------------------
// Pointwise activations with a parameter: leaky ReLU (alpha = negative slope), ELU (alpha), and
// the parameter-free ReLU6, sigmoid and tanh (alpha unused). One thread per element, grid-stride loop.
// The backward passes read what the forward saved: the input x for leaky ReLU, ELU and ReLU6, the output
// y for sigmoid and tanh.

// Mirrors src/cuda/activation.rs `PointwiseFwdParams`.
struct PointwiseFwdParams {
  const float* x;
  float* y;
  long long n;
  float alpha;
};

// Mirrors src/cuda/activation.rs `PointwiseBwdParams`.
struct PointwiseBwdParams {
  const float* saved;  // x (leaky ReLU, ELU) or y (sigmoid, tanh)
  const float* dy;
  float* dx;
  long long n;
  float alpha;
};

// y = x > 0 ? x : alpha·x.
extern "C" __global__ void leaky_relu_fwd_f32(const PointwiseFwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float v = p.x[i];
    p.y[i] = v > 0.0f ? v : p.alpha * v;
  }
}
KILN_EMULATE(leaky_relu_fwd_f32, PointwiseFwdParams)

// dx = dy · (x > 0 ? 1 : alpha): the slope at x = 0 is alpha, as PyTorch's leaky_relu_backward.
extern "C" __global__ void leaky_relu_bwd_f32(const PointwiseBwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float d = p.dy[i];
    p.dx[i] = p.saved[i] > 0.0f ? d : p.alpha * d;
  }
}
KILN_EMULATE(leaky_relu_bwd_f32, PointwiseBwdParams)

// y = x > 0 ? x : alpha·(exp(x) − 1), with expm1 so small |x| keeps its digits.
extern "C" __global__ void elu_fwd_f32(const PointwiseFwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float v = p.x[i];
    p.y[i] = v > 0.0f ? v : p.alpha * expm1f(v);
  }
}
KILN_EMULATE(elu_fwd_f32, PointwiseFwdParams)

// dx = dy · (x > 0 ? 1 : alpha·exp(x)): the slope at x = 0 is alpha, as PyTorch's elu_backward.
// alpha·exp(x) equals y + alpha but is computed from x, which keeps its relative precision for
// very negative x.
extern "C" __global__ void elu_bwd_f32(const PointwiseBwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float v = p.saved[i];
    const float d = p.dy[i];
    p.dx[i] = v > 0.0f ? d : d * p.alpha * expf(v);
  }
}
KILN_EMULATE(elu_bwd_f32, PointwiseBwdParams)

// ReLU6 = hardtanh(x, 0, 6): y = x < 0 ? 0 : (x > 6 ? 6 : x); NaN and −0 stay (as PyTorch's clamp).
extern "C" __global__ void relu6_fwd_f32(const PointwiseFwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float v = p.x[i];
    p.y[i] = v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
  }
}
KILN_EMULATE(relu6_fwd_f32, PointwiseFwdParams)

// dx = 0 where x <= 0 or x >= 6, else dy: exactly x = 0 and x = 6 get 0, and NaN passes dy, as
// PyTorch's hardtanh_backward.
extern "C" __global__ void relu6_bwd_f32(const PointwiseBwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float v = p.saved[i];
    p.dx[i] = (v <= 0.0f || v >= 6.0f) ? 0.0f : p.dy[i];
  }
}
KILN_EMULATE(relu6_bwd_f32, PointwiseBwdParams)

// 1 / (1 + exp(−v)) without overflow: exp only ever sees a non-positive argument.
static __device__ __forceinline__ float activation_stable_sigmoid(float v) {
  if (v >= 0.0f) return 1.0f / (1.0f + expf(-v));
  const float e = expf(v);
  return e / (1.0f + e);
}

// y = sigmoid(x).
extern "C" __global__ void sigmoid_fwd_f32(const PointwiseFwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) { p.y[i] = activation_stable_sigmoid(p.x[i]); }
}
KILN_EMULATE(sigmoid_fwd_f32, PointwiseFwdParams)

// dx = dy · y(1 − y), from the saved output.
extern "C" __global__ void sigmoid_bwd_f32(const PointwiseBwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float y = p.saved[i];
    p.dx[i] = p.dy[i] * y * (1.0f - y);
  }
}
KILN_EMULATE(sigmoid_bwd_f32, PointwiseBwdParams)

// y = tanh(x).
extern "C" __global__ void tanh_fwd_f32(const PointwiseFwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) { p.y[i] = tanhf(p.x[i]); }
}
KILN_EMULATE(tanh_fwd_f32, PointwiseFwdParams)

// dx = dy · (1 − y²), from the saved output.
extern "C" __global__ void tanh_bwd_f32(const PointwiseBwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float y = p.saved[i];
    p.dx[i] = p.dy[i] * (1.0f - y * y);
  }
}
KILN_EMULATE(tanh_bwd_f32, PointwiseBwdParams)

// ---------------------------------------------------------------------------------------------
// Softmax and log-softmax along one axis of a row-major tensor viewed as [outer][len][inner]: a
// "row" is the `len` elements (o, ·, i), `inner` apart in memory; rows are numbered r = o·inner + i.
// Both are numerically stable (the row max is subtracted before exp), so logits in the thousands
// do not overflow. `log` selects log-softmax: y = (x − max) − log Σ exp(x − max), subtracting the
// max first so large logits keep their digits (x − (max + log Σ) would round at the max's scale).
//
// Two mappings, chosen on the host (src/cuda/activation.rs `softmax_uses_blocks`):
//  - *_rows_*: one block of 256 threads per row, each thread striding over the row, then
//    shared-memory tree reductions (max, then sum) in a fixed order: deterministic; for long rows.
//  - *_cols_*: one thread per row, looping over the row sequentially: for short rows, and for
//    inner ≥ 32 where neighbouring threads read neighbouring elements (coalesced), e.g. the channel
//    axis of NCHW.
// Backward from the saved output y (log-probabilities for log-softmax):
//   softmax:      dx = y ⊙ (dy − Σ dy⊙y)
//   log-softmax:  dx = dy − exp(y) ⊙ Σ dy

// Mirrors src/cuda/activation.rs `SoftmaxFwdParams`.
struct SoftmaxFwdParams {
  const float* x;
  float* y;
  long long rows;   // outer·inner
  long long inner;  // distance between neighbouring elements of a row
  int len;          // elements per row (the softmax axis)
  int log;          // 1: log-softmax, 0: softmax
};

// Mirrors src/cuda/activation.rs `SoftmaxBwdParams`.
struct SoftmaxBwdParams {
  const float* y;   // the forward output (log-probabilities when log = 1)
  const float* dy;
  float* dx;
  long long rows;
  long long inner;
  int len;
  int log;
};

// Offset of the first element of row r.
static __device__ __forceinline__ long long softmax_row_base(long long r, long long inner, int len) {
  return (r / inner) * (long long)len * inner + r % inner;
}

// One block per row (grid.x = rows, block.x = KILN_THREADS_PER_BLOCK).
extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)
    softmax_rows_fwd_f32(const SoftmaxFwdParams p) {
  __shared__ float scratch[KILN_THREADS_PER_BLOCK];
  const long long base = softmax_row_base(blockIdx.x, p.inner, p.len);
  const float* x = p.x + base;
  float* y = p.y + base;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < p.len; j += blockDim.x) m = fmaxf(m, x[j * p.inner]);
  m = block_reduce(scratch, m, true);
  float s = 0.0f;
  for (int j = threadIdx.x; j < p.len; j += blockDim.x) s += expf(x[j * p.inner] - m);
  s = block_reduce(scratch, s, false);
  if (p.log) {
    const float log_s = logf(s);
    for (int j = threadIdx.x; j < p.len; j += blockDim.x) y[j * p.inner] = (x[j * p.inner] - m) - log_s;
  } else {
    const float inv = 1.0f / s;
    for (int j = threadIdx.x; j < p.len; j += blockDim.x) y[j * p.inner] = expf(x[j * p.inner] - m) * inv;
  }
}
KILN_EMULATE_SYNC(softmax_rows_fwd_f32, SoftmaxFwdParams)

extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)
    softmax_rows_bwd_f32(const SoftmaxBwdParams p) {
  __shared__ float scratch[KILN_THREADS_PER_BLOCK];
  const long long base = softmax_row_base(blockIdx.x, p.inner, p.len);
  const float* y = p.y + base;
  const float* dy = p.dy + base;
  float* dx = p.dx + base;
  float t = 0.0f;  // Σ dy (log-softmax) or Σ dy⊙y (softmax)
  for (int j = threadIdx.x; j < p.len; j += blockDim.x) {
    const long long k = j * p.inner;
    t += p.log ? dy[k] : dy[k] * y[k];
  }
  t = block_reduce(scratch, t, false);
  for (int j = threadIdx.x; j < p.len; j += blockDim.x) {
    const long long k = j * p.inner;
    dx[k] = p.log ? dy[k] - expf(y[k]) * t : y[k] * (dy[k] - t);
  }
}
KILN_EMULATE_SYNC(softmax_rows_bwd_f32, SoftmaxBwdParams)

// One thread per row (grid-stride loop over rows).
extern "C" __global__ void softmax_cols_fwd_f32(const SoftmaxFwdParams p) {
  KILN_GRID_STRIDE_LOOP(r, p.rows) {
    const long long base = softmax_row_base(r, p.inner, p.len);
    const float* x = p.x + base;
    float* y = p.y + base;
    float m = -INFINITY;
    for (int j = 0; j < p.len; ++j) m = fmaxf(m, x[j * p.inner]);
    float s = 0.0f;
    for (int j = 0; j < p.len; ++j) s += expf(x[j * p.inner] - m);
    if (p.log) {
      const float log_s = logf(s);
      for (int j = 0; j < p.len; ++j) y[j * p.inner] = (x[j * p.inner] - m) - log_s;
    } else {
      const float inv = 1.0f / s;
      for (int j = 0; j < p.len; ++j) y[j * p.inner] = expf(x[j * p.inner] - m) * inv;
    }
  }
}
KILN_EMULATE(softmax_cols_fwd_f32, SoftmaxFwdParams)

extern "C" __global__ void softmax_cols_bwd_f32(const SoftmaxBwdParams p) {
  KILN_GRID_STRIDE_LOOP(r, p.rows) {
    const long long base = softmax_row_base(r, p.inner, p.len);
    const float* y = p.y + base;
    const float* dy = p.dy + base;
    float* dx = p.dx + base;
    float t = 0.0f;
    for (int j = 0; j < p.len; ++j) {
      const long long k = j * p.inner;
      t += p.log ? dy[k] : dy[k] * y[k];
    }
    for (int j = 0; j < p.len; ++j) {
      const long long k = j * p.inner;
      dx[k] = p.log ? dy[k] - expf(y[k]) * t : y[k] * (dy[k] - t);
    }
  }
}
KILN_EMULATE(softmax_cols_bwd_f32, SoftmaxBwdParams)

// ---------------------------------------------------------------------------------------------
// Maxout (Goodfellow et al. 2013): x [batch][units·pieces][spatial] → y [batch][units][spatial],
// y = the max over the `pieces` consecutive channels of each unit. The forward pass (one thread per
// output) records the winning piece (0..pieces, the first on ties; a NaN wins only as piece 0,
// like max-pool); the backward pass is a gather (one thread per input element): each input
// channel takes dy where it won, else 0. No atomics, deterministic.

// Mirrors src/cuda/activation.rs `MaxoutFwdParams`.
struct MaxoutFwdParams {
  const float* x;
  float* y;
  int* argmax;        // [batch][units][spatial]: the winning piece
  long long outputs;  // batch·units·spatial
  long long spatial;  // product of the dims after the channel axis (1 for [N, C])
  int pieces;
};

// Mirrors src/cuda/activation.rs `MaxoutBwdParams`.
struct MaxoutBwdParams {
  const float* dy;
  const int* argmax;
  float* dx;
  long long inputs;  // batch·units·pieces·spatial
  long long spatial;
  int pieces;
};

extern "C" __global__ void maxout_fwd_f32(const MaxoutFwdParams p) {
  KILN_GRID_STRIDE_LOOP(o, p.outputs) {
    const long long s = o % p.spatial;
    const long long bu = o / p.spatial;  // batch·units + unit
    const float* x = p.x + bu * p.pieces * p.spatial + s;
    float best = x[0];
    int winner = 0;
    for (int q = 1; q < p.pieces; ++q) {
      const float v = x[q * p.spatial];
      if (v > best) {
        best = v;
        winner = q;
      }
    }
    p.y[o] = best;
    p.argmax[o] = winner;
  }
}
KILN_EMULATE(maxout_fwd_f32, MaxoutFwdParams)

extern "C" __global__ void maxout_bwd_f32(const MaxoutBwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.inputs) {
    const long long s = i % p.spatial;
    const long long bc = i / p.spatial;  // batch·channels + channel
    const int q = (int)(bc % p.pieces);
    const long long o = (bc / p.pieces) * p.spatial + s;
    p.dx[i] = p.argmax[o] == q ? p.dy[o] : 0.0f;
  }
}
KILN_EMULATE(maxout_bwd_f32, MaxoutBwdParams)
