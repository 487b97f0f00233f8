// im2col and col2im for NCHW convolution with stride, zero padding and dilation.
//
// Column layout (the whole batch): col[n][r][p] with r = (c·KH + kh)·KW + kw and p = oh·OW + ow,
// so the convolution of image n is the GEMM W[K][C·KH·KW] · col[n] = Y[n][K][OH·OW].
#include "common.cuh"
#include "half.cuh"

// Mirrors src/cuda/im2col.rs `Im2colParams`. T is the storage type of both: f32, or bf16/f16
// activations whose columns are the 16-bit GEMM operand as they are (a gather, nothing to round).
template <typename T>
struct Im2colParams {
  const T* im;  // [N][C][H][W]
  T* col;       // [N][C·KH·KW][OH·OW]
  ConvGeom g;
};

// Column element i of the batch: the input pixel it reads, or 0 in the padding.
template <typename T>
__device__ __forceinline__ float im2col_value(const T* im, const ConvGeom& g, long long i) {
  const long long cols = (long long)g.out_h * g.out_w;
  const long long rows = (long long)g.channels * g.kernel_h * g.kernel_w;
  const int pix = (int)(i % cols);
  const long long nr = i / cols;
  const int r = (int)(nr % rows);
  const int n = (int)(nr / rows);
  const int kw = r % g.kernel_w;
  const int kh = (r / g.kernel_w) % g.kernel_h;
  const int c = r / (g.kernel_w * g.kernel_h);
  const int h = (pix / g.out_w) * g.stride_h - g.pad_h + kh * g.dilation_h;
  const int w = (pix % g.out_w) * g.stride_w - g.pad_w + kw * g.dilation_w;
  if (h < 0 || h >= g.in_h || w < 0 || w >= g.in_w) return 0.0f;
  return to_f32(im[(((long long)n * g.channels + c) * g.in_h + h) * g.in_w + w]);
}

__device__ __forceinline__ long long im2col_len(const ConvGeom& g) {
  return (long long)g.batch * g.channels * g.kernel_h * g.kernel_w * g.out_h * g.out_w;
}

// One thread per column element; consecutive threads write consecutive output pixels p.
template <typename T>
__device__ __forceinline__ void im2col(const Im2colParams<T>& p) {
  KILN_GRID_STRIDE_LOOP(i, im2col_len(p.g)) { p.col[i] = from_f32<T>(im2col_value(p.im, p.g, i)); }
}
KILN_STORAGE_KERNELS(im2col, Im2colParams)

// Mirrors src/cuda/im2col.rs `Im2col16Params`.
struct Im2col16Params {
  const float* im;      // [N][C][H][W]
  unsigned short* col;  // [N][C·KH·KW][OH·OW], bf16 or f16 bits
  ConvGeom g;
  int bf16;  // 1: bf16, 0: f16
};

// im2col straight into the 16-bit operand of the tensor-core GEMM (mixed precision), rounding
// each value to nearest even: one pass instead of im2col and a cast.
extern "C" __global__ void im2col_16bit(const Im2col16Params p) {
  KILN_GRID_STRIDE_LOOP(i, im2col_len(p.g)) {
    const float v = im2col_value(p.im, p.g, i);
    p.col[i] = p.bf16 ? float_to_bf16_bits(v) : float_to_f16_bits(v);
  }
}
KILN_EMULATE(im2col_16bit, Im2col16Params)

// Mirrors src/cuda/im2col.rs `Col2imParams`. The columns are f32 (a GEMM's output); T is the
// storage type of the image: f32, or a 16-bit activation gradient, each pixel's sum rounded once.
template <typename T>
struct Col2imParams {
  const float* col;  // [N][C·KH·KW][OH·OW]
  T* im;             // [N][C][H][W], overwritten
  ConvGeom g;
};

// The adjoint of im2col as a gather: one thread per image pixel sums the column entries that read
// it, in a fixed order, so the result is deterministic and needs no atomics.
template <typename T>
__device__ __forceinline__ void col2im(const Col2imParams<T>& p) {
  const ConvGeom g = p.g;
  const long long cols = (long long)g.out_h * g.out_w;
  const long long rows = (long long)g.channels * g.kernel_h * g.kernel_w;
  const long long total = (long long)g.batch * g.channels * g.in_h * g.in_w;
  KILN_GRID_STRIDE_LOOP(i, total) {
    const int w = (int)(i % g.in_w);
    const int h = (int)((i / g.in_w) % g.in_h);
    const int c = (int)((i / ((long long)g.in_w * g.in_h)) % g.channels);
    const long long n = i / ((long long)g.in_w * g.in_h * g.channels);
    const float* col_n = p.col + n * rows * cols;
    float sum = 0.0f;
    for_each_window_reading(g, h, w, [&](int oh, int ow, int kh, int kw) {
      const int r = (c * g.kernel_h + kh) * g.kernel_w + kw;
      sum += col_n[(long long)r * cols + oh * g.out_w + ow];
    });
    p.im[i] = from_f32<T>(sum);
  }
}
KILN_STORAGE_KERNELS(col2im, Col2imParams)
