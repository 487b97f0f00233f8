// Softmax cross-entropy, fused and numerically stable: one block per row for the forward pass
// (max, then sum of exponentials, both as shared-memory tree reductions), elementwise backward.
#include "common.cuh"

// The block-wide max of the row z[0..classes), in every thread.
__device__ __forceinline__ float row_max(float* scratch, const float* z, int classes) {
  float m = -INFINITY;
  for (int j = threadIdx.x; j < classes; j += blockDim.x) m = fmaxf(m, z[j]);
  return block_reduce(scratch, m, true);
}

// prob = exp(z − m) / s for the row, m its max and s = Σ exp(z − m).
__device__ __forceinline__ void write_softmax(const float* z, float m, float s, float* prob, int classes) {
  for (int j = threadIdx.x; j < classes; j += blockDim.x) prob[j] = expf(z[j] - m) / s;
}

// Mirrors src/cuda/loss.rs `SoftmaxXentFwdParams`.
struct SoftmaxXentFwdParams {
  const float* logits;  // [rows][classes]
  const int* labels;    // [rows]; a label outside 0..classes gives a NaN loss
  float* probs;         // [rows][classes]
  float* losses;        // [rows]: logsumexp(row) − logit[label]
  int rows, classes;
};

extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)
    softmax_xent_fwd_f32(const SoftmaxXentFwdParams p) {
  __shared__ float scratch[KILN_THREADS_PER_BLOCK];
  const int row = blockIdx.x;
  const float* z = p.logits + (long long)row * p.classes;
  const float m = row_max(scratch, z, p.classes);
  float s = 0.0f;
  for (int j = threadIdx.x; j < p.classes; j += blockDim.x) s += expf(z[j] - m);
  s = block_reduce(scratch, s, false);
  float* prob = p.probs + (long long)row * p.classes;
  write_softmax(z, m, s, prob, p.classes);
  if (threadIdx.x == 0) {
    const int label = p.labels[row];
    p.losses[row] = label >= 0 && label < p.classes ? m + logf(s) - z[label] : NAN;
  }
}
KILN_EMULATE_SYNC(softmax_xent_fwd_f32, SoftmaxXentFwdParams)

// Mirrors src/cuda/loss.rs `SoftmaxXentBwdParams`.
struct SoftmaxXentBwdParams {
  const float* probs;
  const int* labels;
  float* dlogits;  // scale·upstream·(probs − onehot(label))
  const float* upstream;  // one element (the loss's gradient, read here rather than on the host), or null for 1
  long long total;
  int classes;
  float scale;
};

extern "C" __global__ void softmax_xent_bwd_f32(const SoftmaxXentBwdParams p) {
  const float scale = p.upstream ? p.scale * p.upstream[0] : p.scale;
  KILN_GRID_STRIDE_LOOP(i, p.total) {
    const long long row = i / p.classes;
    const int j = (int)(i % p.classes);
    const float target = j == p.labels[row] ? 1.0f : 0.0f;
    p.dlogits[i] = scale * (p.probs[i] - target);
  }
}
KILN_EMULATE(softmax_xent_bwd_f32, SoftmaxXentBwdParams)

// ---- Softmax cross-entropy with class weights w and label smoothing eps (PyTorch's
// F.cross_entropy(weight=w, label_smoothing=eps)). Row i with label y: with −log p_c = log s − (z_c − m)
// (m the row max, s = Σ exp(z − m)),
//   loss_i = (1 − eps)·w_y·(−log p_y) + (eps/C)·Σ_c w_c·(−log p_c)
// and the caller divides Σ loss_i by Σ_i w_{y_i}. The gradient of loss_i is a_i·p − t_i with the
// weighted smoothed target t_ic = (1 − eps)·w_y·[c = y] + (eps/C)·w_c and a_i = Σ_c t_ic
// = (1 − eps)·w_y + (eps/C)·Σ_c w_c. Unweighted smoothing passes w = 1.

// Mirrors src/cuda/loss.rs `SmoothXentFwdParams`.
struct SmoothXentFwdParams {
  const float* logits;   // [rows][classes]
  const int* labels;     // [rows]; a label outside 0..classes gives a NaN loss
  const float* weights;  // [classes]
  float* probs;          // [rows][classes]
  float* losses;         // [rows]: loss_i above
  int rows, classes;
  float smoothing;       // eps
};

// One block per row: max, Σ exp, and Σ w_c·(z_c − m) and Σ w_c as tree reductions in a fixed order.
extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)
    softmax_xent_smooth_fwd_f32(const SmoothXentFwdParams p) {
  __shared__ float scratch[KILN_THREADS_PER_BLOCK];
  const int row = blockIdx.x;
  const float* z = p.logits + (long long)row * p.classes;
  const float m = row_max(scratch, z, p.classes);
  float s = 0.0f, wz = 0.0f, ws = 0.0f;
  for (int j = threadIdx.x; j < p.classes; j += blockDim.x) {
    s += expf(z[j] - m);
    wz += p.weights[j] * (z[j] - m);
    ws += p.weights[j];
  }
  s = block_reduce(scratch, s, false);
  wz = block_reduce(scratch, wz, false);
  ws = block_reduce(scratch, ws, false);
  float* prob = p.probs + (long long)row * p.classes;
  write_softmax(z, m, s, prob, p.classes);
  if (threadIdx.x == 0) {
    const int label = p.labels[row];
    if (label >= 0 && label < p.classes) {
      const float log_s = logf(s);
      const float nll = log_s - (z[label] - m);
      const float smooth = ws * log_s - wz;  // Σ_c w_c·(−log p_c)
      p.losses[row] = (1.0f - p.smoothing) * p.weights[label] * nll +
                      p.smoothing / (float)p.classes * smooth;
    } else {
      p.losses[row] = NAN;
    }
  }
}
KILN_EMULATE_SYNC(softmax_xent_smooth_fwd_f32, SmoothXentFwdParams)

// Mirrors src/cuda/loss.rs `SmoothXentBwdParams`.
struct SmoothXentBwdParams {
  const float* probs;
  const int* labels;
  const float* weights;
  float* dlogits;         // scale·upstream·(a_i·p − t_i)
  const float* upstream;  // one element, or null for 1
  long long total;
  int classes;
  float smoothing;
  float weight_sum;       // Σ_c w_c
  float scale;
};

// One thread per element.
extern "C" __global__ void softmax_xent_smooth_bwd_f32(const SmoothXentBwdParams p) {
  const float scale = p.upstream ? p.scale * p.upstream[0] : p.scale;
  const float per_class = p.smoothing / (float)p.classes;
  KILN_GRID_STRIDE_LOOP(i, p.total) {
    const long long row = i / p.classes;
    const int j = (int)(i % p.classes);
    const int label = p.labels[row];
    if (label < 0 || label >= p.classes) {
      p.dlogits[i] = NAN;
      continue;
    }
    const float w_label = (1.0f - p.smoothing) * p.weights[label];
    const float a = w_label + per_class * p.weight_sum;
    const float target = (j == label ? w_label : 0.0f) + per_class * p.weights[j];
    p.dlogits[i] = scale * (a * p.probs[i] - target);
  }
}
KILN_EMULATE(softmax_xent_smooth_bwd_f32, SmoothXentBwdParams)

// ---- Squared error (MSE, sum of squared errors): elementwise here, reduced by reduce.cu's sum_f32.

// Mirrors src/cuda/loss.rs `SquaredErrorFwdParams`.
struct SquaredErrorFwdParams {
  const float* prediction;
  const float* target;
  float* sq;  // (prediction − target)², elementwise
  long long n;
};

extern "C" __global__ void squared_error_fwd_f32(const SquaredErrorFwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float d = p.prediction[i] - p.target[i];
    p.sq[i] = d * d;
  }
}
KILN_EMULATE(squared_error_fwd_f32, SquaredErrorFwdParams)

// Mirrors src/cuda/loss.rs `SquaredErrorBwdParams`.
struct SquaredErrorBwdParams {
  const float* prediction;
  const float* target;
  float* dprediction;  // scale·(prediction − target); for a mean, scale = 2·dloss/n
  float* dtarget;      // −dprediction, or null when the target needs no gradient
  const float* upstream;  // one element multiplying scale (the loss's gradient), or null for 1
  long long n;
  float scale;
};

extern "C" __global__ void squared_error_bwd_f32(const SquaredErrorBwdParams p) {
  const float scale = p.upstream ? p.scale * p.upstream[0] : p.scale;
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float g = scale * (p.prediction[i] - p.target[i]);
    p.dprediction[i] = g;
    if (p.dtarget != nullptr) p.dtarget[i] = -g;
  }
}
KILN_EMULATE(squared_error_bwd_f32, SquaredErrorBwdParams)

// ---- Binary cross-entropy on logits, in the stable form (no exp of a positive number).

// Mirrors src/cuda/loss.rs `BceLogitsFwdParams`.
struct BceLogitsFwdParams {
  const float* logits;
  const float* targets;
  float* losses;  // max(z, 0) − z·t + log(1 + exp(−|z|)), elementwise
  long long n;
};

extern "C" __global__ void bce_logits_fwd_f32(const BceLogitsFwdParams p) {
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float z = p.logits[i];
    p.losses[i] = fmaxf(z, 0.0f) - z * p.targets[i] + log1pf(expf(-fabsf(z)));
  }
}
KILN_EMULATE(bce_logits_fwd_f32, BceLogitsFwdParams)

// Mirrors src/cuda/loss.rs `BceLogitsBwdParams`.
struct BceLogitsBwdParams {
  const float* logits;
  const float* targets;
  float* dlogits;   // scale·(sigmoid(z) − t); for a mean, scale = dloss/n
  float* dtargets;  // −scale·z, or null when the targets need no gradient
  const float* upstream;  // one element multiplying scale (the loss's gradient), or null for 1
  long long n;
  float scale;
};

extern "C" __global__ void bce_logits_bwd_f32(const BceLogitsBwdParams p) {
  const float scale = p.upstream ? p.scale * p.upstream[0] : p.scale;
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float z = p.logits[i];
    // sigmoid without overflow: e = exp(−|z|) ≤ 1, so neither branch divides by infinity.
    const float e = expf(-fabsf(z));
    const float sigmoid = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    p.dlogits[i] = scale * (sigmoid - p.targets[i]);
    if (p.dtargets != nullptr) p.dtargets[i] = -scale * z;
  }
}
KILN_EMULATE(bce_logits_bwd_f32, BceLogitsBwdParams)

// ---- Sum of squares (the L2 penalty), stage 1 of 2: per-block partial sums.
// Block b covers elements b·256 + tid + k·(gridDim·256) and writes its tree-reduced sum to
// partial[b]; reduce.cu's sum_f32 then adds the partials. The grid is a fixed function of n, so
// the result is deterministic.

// Mirrors src/cuda/loss.rs `SumSquaresParams`.
struct SumSquaresParams {
  const float* x;
  float* partial;  // [gridDim.x]
  long long n;
};

extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)
    sum_squares_f32(const SumSquaresParams p) {
  __shared__ float scratch[KILN_THREADS_PER_BLOCK];
  float s = 0.0f;
  KILN_GRID_STRIDE_LOOP(i, p.n) {
    const float v = p.x[i];
    s += v * v;
  }
  s = block_reduce(scratch, s, false);
  if (threadIdx.x == 0) p.partial[blockIdx.x] = s;
}
KILN_EMULATE_SYNC(sum_squares_f32, SumSquaresParams)

// Mirrors src/cuda/loss.rs `CountCorrectParams`.
struct CountCorrectParams {
  const float* logits;  // [rows][classes]
  const int* labels;    // [rows]
  float* count;         // [1]: rows whose first largest logit is at their label
  int rows, classes;
};

// One block: each thread takes rows in a strided loop, finds the first largest logit of each and
// compares it with the label; the block then adds the per-thread counts in a fixed order. The
// count is exact in f32 up to 2^24 rows. Lets a training step read its accuracy together with its
// loss instead of copying the logits and labels back.
extern "C" __global__ void __launch_bounds__(KILN_THREADS_PER_BLOCK)
    count_correct_f32(const CountCorrectParams p) {
  __shared__ float scratch[KILN_THREADS_PER_BLOCK];
  float correct = 0.0f;
  for (int r = threadIdx.x; r < p.rows; r += blockDim.x) {
    const float* row = p.logits + (long long)r * p.classes;
    int best = 0;
    for (int j = 1; j < p.classes; ++j) {
      if (row[j] > row[best]) best = j;
    }
    correct += best == p.labels[r] ? 1.0f : 0.0f;
  }
  correct = block_reduce(scratch, correct, false);
  if (threadIdx.x == 0) p.count[0] = correct;
}
KILN_EMULATE_SYNC(count_correct_f32, CountCorrectParams)
