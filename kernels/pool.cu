// Max pooling over NCHW with stride, padding and dilation; the forward pass records the argmax so
// the backward pass routes each gradient to the one input that won ("gradient goes to the max").
#include "common.cuh"

// Mirrors src/cuda/pool.rs `MaxPoolFwdParams`.
struct MaxPoolFwdParams {
  const float* x;  // [N][C][H][W]
  float* y;        // [N][C][OH][OW]
  int* argmax;     // [N][C][OH][OW]: h·W + w of the winner in its input plane, -1 if none
  ConvGeom g;
};

// One thread per output. Padding never wins; ties go to the first tap in row-major window order.
extern "C" __global__ void maxpool_fwd_f32(const MaxPoolFwdParams p) {
  const ConvGeom g = p.g;
  const long long total = (long long)g.batch * g.channels * g.out_h * g.out_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int ow = (int)(i % g.out_w);
    const int oh = (int)((i / g.out_w) % g.out_h);
    const long long plane = i / ((long long)g.out_w * g.out_h);
    const float* x = p.x + plane * g.in_h * g.in_w;
    float best = 0.0f;
    int best_index = -1;
    for (int kh = 0; kh < g.kernel_h; ++kh) {
      const int h = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
      if (h < 0 || h >= g.in_h) continue;
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        const int w = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
        if (w < 0 || w >= g.in_w) continue;
        const float v = x[h * g.in_w + w];
        if (best_index < 0 || v > best) {
          best = v;
          best_index = h * g.in_w + w;
        }
      }
    }
    p.y[i] = best;
    p.argmax[i] = best_index;
  }
}
KILN_EMULATE(maxpool_fwd_f32, MaxPoolFwdParams)

// Mirrors src/cuda/pool.rs `MaxPoolBwdParams`.
struct MaxPoolBwdParams {
  const float* dy;        // [N][C][OH][OW]
  const int* argmax;      // from the forward pass
  float* dx;              // [N][C][H][W], overwritten
  ConvGeom g;
};

// A gather: one thread per input pixel visits the windows that contain it and sums the gradients
// of those whose argmax is this pixel. Deterministic, no atomics.
extern "C" __global__ void maxpool_bwd_f32(const MaxPoolBwdParams p) {
  const ConvGeom g = p.g;
  const long long total = (long long)g.batch * g.channels * g.in_h * g.in_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int w = (int)(i % g.in_w);
    const int h = (int)((i / g.in_w) % g.in_h);
    const long long plane = i / ((long long)g.in_w * g.in_h);
    const long long out_base = plane * g.out_h * g.out_w;
    const int me = h * g.in_w + w;
    float sum = 0.0f;
    for_each_window_reading(g, h, w, [&](int oh, int ow, int, int) {
      const long long o = out_base + oh * g.out_w + ow;
      if (p.argmax[o] == me) sum += p.dy[o];
    });
    p.dx[i] = sum;
  }
}
KILN_EMULATE(maxpool_bwd_f32, MaxPoolBwdParams)
