// Fused optimizer updates: one pass over the parameters reads w, g and the state, writes w and the
// state. One thread per parameter (grid-stride loop); every element is independent, so the updates
// are deterministic. The CPU twins are in src/cpu/optim.rs, the launchers in src/cuda/optim.rs.
//
// Host-side conventions (src/backend/optim.rs): hyper-parameters arrive as f32 already validated;
// anything that depends on the step count (Adam's bias corrections) is computed on the host in f64
// and passed as f32, so the kernels hold no state of their own. In a step replayed from a CUDA
// graph the values that change per step (learning rate, Adam's corrections) come instead from
// `scalars` in device memory (see KilnStepScalars), which the host rewrites before each replay.
#include "common.cuh"

// Mirrors src/cuda/optim.rs `SgdParams`.
struct SgdParams {
  float* w;
  const float* g;
  const KilnStepScalars* scalars;  // null: use lr
  long long n;
  float lr, weight_decay;
};

// Plain SGD with L2 weight decay (no state): w -= lr·(g + wd·w).
extern "C" __global__ void sgd_f32(const SgdParams p) {
  const float lr = p.scalars ? p.scalars->lr : p.lr;
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float w = p.w[i];
    p.w[i] = w - lr * (p.g[i] + p.weight_decay * w);
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
extern "C" __global__ void sgd_momentum_f32(const SgdMomentumParams p) {
  const float lr = p.scalars ? p.scalars->lr : p.lr;
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float w = p.w[i];
    const float g = p.g[i] + p.weight_decay * w;
    const float v = p.momentum * p.velocity[i] + g;
    p.velocity[i] = v;
    const float update = p.nesterov ? g + p.momentum * v : v;
    p.w[i] = w - lr * update;
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
extern "C" __global__ void rmsprop_f32(const RmspropParams p) {
  const float lr = p.scalars ? p.scalars->lr : p.lr;
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float w = p.w[i];
    const float g = p.g[i] + p.weight_decay * w;
    const float s = p.alpha * p.square_avg[i] + (1.0f - p.alpha) * g * g;
    p.square_avg[i] = s;
    p.w[i] = w - lr * g / (sqrtf(s) + p.eps);
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

// PyTorch's Adam / AdamW (no amsgrad), in its order of operations: g' = g + wd·w;
// m = b1·m + (1 − b1)·g'; v = b2·v + (1 − b2)·g'²;
// w = decay·w − step_size·m / (sqrt(v)/sqrt(1 − b2^t) + eps), the step being lr·m̂/(sqrt(v̂) + eps).
// (AdamW's w.mul_(1 − lr·wd) comes first in PyTorch, but the Adam step does not read w, so the
// result is the same.)
extern "C" __global__ void adam_f32(const AdamParams p) {
  const float decay = p.scalars ? p.scalars->decay : p.decay;
  const float step_size = p.scalars ? p.scalars->step_size : p.step_size;
  const float bias_correction2_sqrt =
      p.scalars ? p.scalars->bias_correction2_sqrt : p.bias_correction2_sqrt;
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float w = p.w[i];
    const float g = p.g[i] + p.weight_decay * w;
    const float m = p.beta1 * p.exp_avg[i] + (1.0f - p.beta1) * g;
    const float v = p.beta2 * p.exp_avg_sq[i] + (1.0f - p.beta2) * g * g;
    p.exp_avg[i] = m;
    p.exp_avg_sq[i] = v;
    const float denom = sqrtf(v) / bias_correction2_sqrt + p.eps;
    p.w[i] = w * decay - step_size * m / denom;
  }
}
KILN_EMULATE(adam_f32, AdamParams)
