// Softmax cross-entropy, fused and numerically stable: one block per row for the forward pass
// (max, then sum of exponentials, both as shared-memory tree reductions), elementwise backward.
#include "common.cuh"

// Mirrors src/cuda/loss.rs `SoftmaxXentFwdParams`.
struct SoftmaxXentFwdParams {
  const float* logits;  // [rows][classes]
  const int* labels;    // [rows], validated on the host to lie in 0..classes
  float* probs;         // [rows][classes]
  float* losses;        // [rows]: logsumexp(row) − logit[label]
  int rows, classes;
};

__device__ __forceinline__ float block_reduce(float* scratch, float v, bool take_max) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) {
      const float other = scratch[threadIdx.x + half];
      scratch[threadIdx.x] = take_max ? fmaxf(scratch[threadIdx.x], other) : scratch[threadIdx.x] + other;
    }
    __syncthreads();
  }
  const float result = scratch[0];
  __syncthreads();  // scratch is reused by the next reduction
  return result;
}

extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)
    softmax_xent_fwd_f32(const SoftmaxXentFwdParams p) {
  __shared__ float scratch[KILN_THREADS_PER_BLOCK];
  const int row = blockIdx.x;
  const float* z = p.logits + (long long)row * p.classes;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < p.classes; j += blockDim.x) m = fmaxf(m, z[j]);
  m = block_reduce(scratch, m, true);
  float s = 0.0f;
  for (int j = threadIdx.x; j < p.classes; j += blockDim.x) s += expf(z[j] - m);
  s = block_reduce(scratch, s, false);
  float* prob = p.probs + (long long)row * p.classes;
  for (int j = threadIdx.x; j < p.classes; j += blockDim.x) prob[j] = expf(z[j] - m) / s;
  if (threadIdx.x == 0) p.losses[row] = m + logf(s) - z[p.labels[row]];
}
KILN_EMULATE_SYNC(softmax_xent_fwd_f32, SoftmaxXentFwdParams)

// Mirrors src/cuda/loss.rs `SoftmaxXentBwdParams`.
struct SoftmaxXentBwdParams {
  const float* probs;
  const int* labels;
  float* dlogits;  // scale·(probs − onehot(label))
  long long total;
  int classes;
  float scale;
};

extern "C" __global__ void softmax_xent_bwd_f32(const SoftmaxXentBwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.total) {
    const long long row = i / p.classes;
    const int j = (int)(i % p.classes);
    const float target = j == p.labels[row] ? 1.0f : 0.0f;
    p.dlogits[i] = p.scale * (p.probs[i] - target);
  }
}
KILN_EMULATE(softmax_xent_bwd_f32, SoftmaxXentBwdParams)
