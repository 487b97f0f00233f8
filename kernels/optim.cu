// Fused optimizer updates: one pass over the parameters reads w, g and the state, writes w and the
// state. Every element is independent, so the updates are deterministic. Each rule is written once
// for one element (`*_one`) and applied to 16-byte quads when every pointer allows (pool blocks
// are 256-byte aligned), then element by element to the < 4 left over; the launch gives one thread
// per 4 parameters. The CPU twins are in src/cpu/optim.rs, the launchers in src/cuda/optim.rs.
//
// Host-side conventions (src/backend/optim.rs): hyper-parameters arrive as f32 already validated;
// anything that depends on the step count (Adam's bias corrections) is computed on the host in f64
// and passed as f32, so the kernels hold no state of their own. In a step replayed from a CUDA
// graph the values that change per step (learning rate, Adam's corrections) come instead from
// `scalars` in device memory (see KilnStepScalars), which the host rewrites before each replay.
#include "common.cuh"

// The lanes of a float4, for applying a per-element rule to a 16-byte load.
__device__ __forceinline__ float& lane(float4& v, int k) {
  switch (k) {
    case 0: return v.x;
    case 1: return v.y;
    case 2: return v.z;
    default: return v.w;
  }
}

__device__ __forceinline__ bool aligned16(const void* a, const void* b, const void* c = nullptr,
                                          const void* d = nullptr) {
  const unsigned long long bits = (unsigned long long)a | (unsigned long long)b |
                                  (unsigned long long)c | (unsigned long long)d;
  return bits % 16 == 0;
}

// Number of quads a kernel takes as float4s, and the first element of the scalar tail.
#define KILN_QUADS(n, ok) ((ok) ? (n) / 4 : 0)
#define KILN_F4(ptr, q) (reinterpret_cast<float4*>(ptr)[q])
#define KILN_CF4(ptr, q) (reinterpret_cast<const float4*>(ptr)[q])

// Mirrors src/cuda/optim.rs `SgdParams`.
struct SgdParams {
  float* w;
  const float* g;
  const KilnStepScalars* scalars;  // null: use lr
  long long n;
  float lr, weight_decay;
};

// Plain SGD with L2 weight decay (no state): w -= lr·(g + wd·w).
__device__ __forceinline__ void sgd_one(float& w, float g, float lr, float wd) {
  w = w - lr * (g + wd * w);
}

extern "C" __global__ void sgd_f32(const SgdParams p) {
  const float lr = p.scalars ? p.scalars->lr : p.lr;
  const long long quads = KILN_QUADS(p.n, aligned16(p.w, p.g));
  KILN_GRID_STRIDE_LOOP(q, quads) {
    float4 w = KILN_F4(p.w, q);
    float4 g = KILN_CF4(p.g, q);
    for (int k = 0; k < 4; ++k) sgd_one(lane(w, k), lane(g, k), lr, p.weight_decay);
    KILN_F4(p.w, q) = w;
  }
  KILN_GRID_STRIDE_LOOP(j, p.n - 4 * quads) {
    const long long i = 4 * quads + j;
    sgd_one(p.w[i], p.g[i], lr, p.weight_decay);
  }
}
KILN_EMULATE(sgd_f32, SgdParams)

// Mirrors src/cuda/optim.rs `SgdMomentumParams`.
struct SgdMomentumParams {
  float* w;
  const float* g;
  float* velocity;
  const KilnStepScalars* scalars;  // null: use lr
  long long n;
  float lr, momentum, weight_decay;
  int nesterov;  // 0: classic momentum, 1: Nesterov
};

// PyTorch's SGD (no dampening): g' = g + wd·w; v = momentum·v + g';
// classic: w -= lr·v; Nesterov: w -= lr·(g' + momentum·v).
__device__ __forceinline__ void sgd_momentum_one(float& w, float g_raw, float& v,
                                                 const SgdMomentumParams& p, float lr) {
  const float g = g_raw + p.weight_decay * w;
  v = p.momentum * v + g;
  const float update = p.nesterov ? g + p.momentum * v : v;
  w = w - lr * update;
}

extern "C" __global__ void sgd_momentum_f32(const SgdMomentumParams p) {
  const float lr = p.scalars ? p.scalars->lr : p.lr;
  const long long quads = KILN_QUADS(p.n, aligned16(p.w, p.g, p.velocity));
  KILN_GRID_STRIDE_LOOP(q, quads) {
    float4 w = KILN_F4(p.w, q), v = KILN_F4(p.velocity, q);
    float4 g = KILN_CF4(p.g, q);
    for (int k = 0; k < 4; ++k) sgd_momentum_one(lane(w, k), lane(g, k), lane(v, k), p, lr);
    KILN_F4(p.w, q) = w;
    KILN_F4(p.velocity, q) = v;
  }
  KILN_GRID_STRIDE_LOOP(j, p.n - 4 * quads) {
    const long long i = 4 * quads + j;
    sgd_momentum_one(p.w[i], p.g[i], p.velocity[i], p, lr);
  }
}
KILN_EMULATE(sgd_momentum_f32, SgdMomentumParams)

// Mirrors src/cuda/optim.rs `RmspropParams`.
struct RmspropParams {
  float* w;
  const float* g;
  float* square_avg;
  const KilnStepScalars* scalars;  // null: use lr
  long long n;
  float lr, alpha, eps, weight_decay;
};

// PyTorch's RMSprop (not centered, no momentum): g' = g + wd·w; s = alpha·s + (1 − alpha)·g'²;
// w -= lr·g' / (sqrt(s) + eps).
__device__ __forceinline__ void rmsprop_one(float& w, float g_raw, float& s,
                                            const RmspropParams& p, float lr) {
  const float g = g_raw + p.weight_decay * w;
  s = p.alpha * s + (1.0f - p.alpha) * g * g;
  w = w - lr * g / (sqrtf(s) + p.eps);
}

extern "C" __global__ void rmsprop_f32(const RmspropParams p) {
  const float lr = p.scalars ? p.scalars->lr : p.lr;
  const long long quads = KILN_QUADS(p.n, aligned16(p.w, p.g, p.square_avg));
  KILN_GRID_STRIDE_LOOP(q, quads) {
    float4 w = KILN_F4(p.w, q), s = KILN_F4(p.square_avg, q);
    float4 g = KILN_CF4(p.g, q);
    for (int k = 0; k < 4; ++k) rmsprop_one(lane(w, k), lane(g, k), lane(s, k), p, lr);
    KILN_F4(p.w, q) = w;
    KILN_F4(p.square_avg, q) = s;
  }
  KILN_GRID_STRIDE_LOOP(j, p.n - 4 * quads) {
    const long long i = 4 * quads + j;
    rmsprop_one(p.w[i], p.g[i], p.square_avg[i], p, lr);
  }
}
KILN_EMULATE(rmsprop_f32, RmspropParams)

// Mirrors src/cuda/optim.rs `AdamParams`.
struct AdamParams {
  float* w;
  const float* g;
  float* exp_avg;
  float* exp_avg_sq;
  const KilnStepScalars* scalars;  // null: use decay, step_size, bias_correction2_sqrt
  long long n;
  float beta1, beta2, eps;
  float weight_decay;           // coupled L2: added to the gradient (Adam's weight_decay)
  float decay;                  // decoupled: w is multiplied by 1 − lr·wd first (AdamW); 1 for Adam
  float step_size;              // lr / (1 − beta1^t)
  float bias_correction2_sqrt;  // sqrt(1 − beta2^t)
};

// The per-step factors of one Adam update.
struct AdamStepFactors {
  float decay, step_size, bias_correction2_sqrt;
};

// PyTorch's Adam / AdamW (no amsgrad), in its order of operations: g' = g + wd·w;
// m = b1·m + (1 − b1)·g'; v = b2·v + (1 − b2)·g'²;
// w = decay·w − step_size·m / (sqrt(v)/sqrt(1 − b2^t) + eps), the step being lr·m̂/(sqrt(v̂) + eps).
// (AdamW's w.mul_(1 − lr·wd) comes first in PyTorch, but the Adam step does not read w, so the
// result is the same.)
__device__ __forceinline__ void adam_one(float& w, float g_raw, float& m, float& v,
                                         const AdamParams& p, const AdamStepFactors& f) {
  const float g = g_raw + p.weight_decay * w;
  m = p.beta1 * m + (1.0f - p.beta1) * g;
  v = p.beta2 * v + (1.0f - p.beta2) * g * g;
  const float denom = sqrtf(v) / f.bias_correction2_sqrt + p.eps;
  w = w * f.decay - f.step_size * m / denom;
}

extern "C" __global__ void adam_f32(const AdamParams p) {
  AdamStepFactors f;
  f.decay = p.scalars ? p.scalars->decay : p.decay;
  f.step_size = p.scalars ? p.scalars->step_size : p.step_size;
  f.bias_correction2_sqrt = p.scalars ? p.scalars->bias_correction2_sqrt : p.bias_correction2_sqrt;
  const long long quads = KILN_QUADS(p.n, aligned16(p.w, p.g, p.exp_avg, p.exp_avg_sq));
  KILN_GRID_STRIDE_LOOP(q, quads) {
    float4 w = KILN_F4(p.w, q), m = KILN_F4(p.exp_avg, q), v = KILN_F4(p.exp_avg_sq, q);
    float4 g = KILN_CF4(p.g, q);
    for (int k = 0; k < 4; ++k) adam_one(lane(w, k), lane(g, k), lane(m, k), lane(v, k), p, f);
    KILN_F4(p.w, q) = w;
    KILN_F4(p.exp_avg, q) = m;
    KILN_F4(p.exp_avg_sq, q) = v;
  }
  KILN_GRID_STRIDE_LOOP(j, p.n - 4 * quads) {
    const long long i = 4 * quads + j;
    adam_one(p.w[i], p.g[i], p.exp_avg[i], p.exp_avg_sq[i], p, f);
  }
}
KILN_EMULATE(adam_f32, AdamParams)
