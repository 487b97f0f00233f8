// Host shim that lets the same kernels/*.cu sources run on the CPU ("kernel emulation").
//
// build.rs compiles every .cu file a second time as C++ with KILN_EMULATION defined. This header
// then supplies what nvcc would: threadIdx/blockIdx/blockDim/gridDim, __shared__, __syncthreads,
// atomics and the math intrinsics the kernels use. The Rust side launches the emulated kernels with
// the same grid/block computation and the same parameter struct as on the GPU, through the
// `kiln_emu_<kernel>` entry points that KILN_EMULATE(...) below generates.
//
// Execution model:
//  - a block runs on one OS thread; different blocks run in parallel on rayon's threads, so
//    atomics are real atomics;
//  - __shared__ variables are `static thread_local`: one copy per OS thread, which is exactly one
//    copy per running block;
//  - kernels registered with KILN_EMULATE_SYNC run each CUDA thread of a block as a fiber
//    (ucontext). __syncthreads() is a counting barrier: a fiber that arrives early switches back to
//    the scheduler until every live thread of the block has arrived (threads that have exited count
//    as arrived, as on Volta and later). Warp-collective operations (the tensor-core mma below)
//    meet the same way at a barrier of their warp's 32 threads;
//  - kernels registered with KILN_EMULATE (no barriers) run their threads one after another on the
//    OS thread's own stack, which is much cheaper. Calling __syncthreads() from such a kernel
//    aborts with a message naming the fix, so a wrong registration can't go unnoticed.
#pragma once

#ifdef KILN_EMULATION

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <new>
#include <vector>

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(4) uchar4 {
  unsigned char x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
  return uint4{x, y, z, w};
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static thread_local
// A kernel's dynamic shared memory (sized by the launch), as bytes, 16-byte aligned.
#define KILN_DYNAMIC_SHARED(name) unsigned char* name = kiln_emu::dynamic_shared()
#define __align__(n) __attribute__((aligned(n)))
#define __ldg(ptr) (*(ptr))

// The launch description the Rust side passes: the grid, the block, and the range of linear block
// indices (x fastest, then y, then z) this call must run.
struct KilnEmuLaunch {
  unsigned int grid[3];
  unsigned int block[3];
  unsigned long long block_begin;
  unsigned long long block_end;
  unsigned int shared_bytes;  // dynamic shared memory per block (KILN_DYNAMIC_SHARED)
};

namespace kiln_emu {

inline thread_local uint3 thread_idx;
inline thread_local uint3 block_idx;
inline thread_local dim3 block_dim;
inline thread_local dim3 grid_dim;

// Fiber state of the block running on this OS thread. The stacks are kept for the next block and
// freed when the OS thread exits (a thread pool built per training run would otherwise leak them).
struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  bool finished = false;
  // Asynchronous tensor-core work (wgmma) this thread issued: the group still open, and the
  // committed groups not yet waited for, oldest first. See async_issue below.
  std::vector<std::function<void()>> open_group;
  std::deque<std::vector<std::function<void()>>> committed;
};
constexpr size_t kFiberStackBytes = 256 * 1024;
inline thread_local std::vector<Fiber> fibers;
inline thread_local ucontext_t scheduler_context;
inline thread_local size_t current_fiber = 0;
inline thread_local bool in_fiber_mode = false;
inline thread_local void (*fiber_body)(const void*) = nullptr;
inline thread_local const void* fiber_params = nullptr;

// A reusable barrier: `arrived` counts the threads waiting in the current generation.
struct Barrier {
  size_t arrived = 0;
  unsigned long long generation = 0;
};
inline thread_local Barrier block_barrier;
inline thread_local size_t live_fibers = 0;

// Per warp of the running block: the fragments its lanes publish for a tensor-core mma.
struct WarpFragments {
  uint32_t a[32][4];
  uint32_t b[32][2];
  Barrier barrier;
};
inline thread_local std::vector<WarpFragments> warp_fragments;

[[noreturn]] inline void fail(const char* message) {
  std::fprintf(stderr, "kiln kernel emulation: %s\n", message);
  std::abort();
}

inline uint3 unflatten(unsigned long long linear, const unsigned int dims[3]) {
  uint3 v;
  v.x = (unsigned int)(linear % dims[0]);
  v.y = (unsigned int)((linear / dims[0]) % dims[1]);
  v.z = (unsigned int)(linear / ((unsigned long long)dims[0] * dims[1]));
  return v;
}

// Lets the other fibers of the block run; this one resumes on a later round of the scheduler.
inline void yield_fiber() { swapcontext(&fibers[current_fiber].context, &scheduler_context); }

// Opens the barrier for the next generation.
inline void release(Barrier& b) {
  b.arrived = 0;
  ++b.generation;
}

// Waits until `participants` threads have arrived at `b`.
inline void wait_at(Barrier& b, size_t participants) {
  const unsigned long long generation = b.generation;
  if (++b.arrived >= participants) {
    release(b);
    return;
  }
  while (b.generation == generation) yield_fiber();
}

inline void fiber_entry() {
  fiber_body(fiber_params);
  Fiber& self = fibers[current_fiber];
  if (!self.open_group.empty() || !self.committed.empty()) {
    fail("a thread exited with asynchronous tensor-core work it never waited for");
  }
  self.finished = true;
  // An exited thread no longer holds up the block's barrier.
  --live_fibers;
  if (block_barrier.arrived > 0 && block_barrier.arrived >= live_fibers) release(block_barrier);
  // Returning resumes uc_link, the scheduler.
}

inline void require_fibers(const char* what) {
  if (!in_fiber_mode) {
    std::fprintf(stderr, "kiln kernel emulation: %s called by a kernel registered with KILN_EMULATE; "
                 "register it with KILN_EMULATE_SYNC\n", what);
    std::abort();
  }
}

inline void sync_threads() {
  require_fibers("__syncthreads()");
  wait_at(block_barrier, live_fibers);
}

// Runs one block whose threads may meet at barriers: every thread is a fiber, resumed round-robin
// until all have finished.
inline void run_block_as_fibers(void (*body)(const void*), const void* params,
                                const unsigned int block[3], size_t threads) {
  if (fibers.size() < threads) fibers.resize(threads);
  fiber_body = body;
  fiber_params = params;
  for (size_t t = 0; t < threads; ++t) {
    Fiber& f = fibers[t];
    if (!f.stack) {
      f.stack.reset(new (std::nothrow) char[kFiberStackBytes]);
      if (!f.stack) fail("out of memory for fiber stacks");
    }
    f.finished = false;
    f.open_group.clear();
    f.committed.clear();
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = kFiberStackBytes;
    f.context.uc_link = &scheduler_context;
    makecontext(&f.context, fiber_entry, 0);
  }
  block_barrier = Barrier{};
  // Sized before any fiber runs: a resize while fibers wait inside would move their fragments.
  if (warp_fragments.size() < (threads + 31) / 32) warp_fragments.resize((threads + 31) / 32);
  for (auto& w : warp_fragments) w.barrier = Barrier{};
  live_fibers = threads;
  in_fiber_mode = true;
  size_t remaining = threads;
  while (remaining > 0) {
    remaining = 0;
    for (size_t t = 0; t < threads; ++t) {
      if (fibers[t].finished) continue;
      current_fiber = t;
      thread_idx = unflatten(t, block);
      swapcontext(&scheduler_context, &fibers[t].context);
      if (!fibers[t].finished) ++remaining;
    }
  }
  in_fiber_mode = false;
}

// Dynamic shared memory of the block running on this OS thread. Like a GPU's, it starts 16-byte
// aligned but not further (here: 16 bytes past a 1024-byte boundary of the shared window), so a
// kernel that needs 1024-byte alignment must align it itself, as it must on the GPU. It is refilled
// with 0xff bytes for every block: a read of a byte no thread wrote sees NaN patterns rather than
// the previous block's data.
constexpr size_t kDynamicSharedOffset = 16;
struct FreeDeleter {
  void operator()(unsigned char* p) const { std::free(p); }
};
inline thread_local std::unique_ptr<unsigned char, FreeDeleter> shared_window;
inline thread_local size_t shared_window_capacity = 0;
// The end of the dynamic shared memory in the window (0: the launch asked for none).
inline thread_local size_t shared_window_end = 0;

inline void prepare_dynamic_shared(size_t bytes) {
  shared_window_end = bytes == 0 ? 0 : kDynamicSharedOffset + bytes;
  if (bytes == 0) return;
  if (shared_window_end > shared_window_capacity) {
    const size_t rounded = (shared_window_end + 1023) / 1024 * 1024;
    shared_window.reset(static_cast<unsigned char*>(std::aligned_alloc(1024, rounded)));
    if (!shared_window) fail("out of memory for dynamic shared memory");
    shared_window_capacity = rounded;
  }
  std::memset(shared_window.get(), 0xff, shared_window_end);
}

inline unsigned char* dynamic_shared() {
  if (shared_window_end == 0) fail("dynamic shared memory used by a launch that asked for none");
  return shared_window.get() + kDynamicSharedOffset;
}

// Asynchronous work of the calling thread (wgmma): `work` is queued in the open group and runs only
// when a later async_wait retires its group, so a kernel that reads its accumulators, or
// overwrites the shared memory the work reads, before waiting computes a wrong result here too.
inline void async_issue(std::function<void()> work) {
  require_fibers("asynchronous tensor-core work");
  fibers[current_fiber].open_group.push_back(std::move(work));
}
inline void async_commit() {
  require_fibers("a commit of asynchronous work");
  Fiber& self = fibers[current_fiber];
  self.committed.push_back(std::move(self.open_group));
  self.open_group.clear();
}
// Runs the oldest committed groups until at most `pending` remain.
inline void async_wait(size_t pending) {
  require_fibers("a wait for asynchronous work");
  Fiber& self = fibers[current_fiber];
  while (self.committed.size() > pending) {
    for (auto& work : self.committed.front()) work();
    self.committed.pop_front();
  }
}

inline void run_blocks(const KilnEmuLaunch& launch, void (*body)(const void*), const void* params,
                       bool uses_barriers) {
  grid_dim = dim3{launch.grid[0], launch.grid[1], launch.grid[2]};
  block_dim = dim3{launch.block[0], launch.block[1], launch.block[2]};
  const size_t threads = (size_t)launch.block[0] * launch.block[1] * launch.block[2];
  for (unsigned long long b = launch.block_begin; b < launch.block_end; ++b) {
    block_idx = unflatten(b, launch.grid);
    prepare_dynamic_shared(launch.shared_bytes);
    if (uses_barriers) {
      run_block_as_fibers(body, params, launch.block, threads);
    } else {
      for (size_t t = 0; t < threads; ++t) {
        thread_idx = unflatten(t, launch.block);
        body(params);
      }
    }
  }
}

}  // namespace kiln_emu

#define threadIdx (kiln_emu::thread_idx)
#define blockIdx (kiln_emu::block_idx)
#define blockDim (kiln_emu::block_dim)
#define gridDim (kiln_emu::grid_dim)

inline void __syncthreads() { kiln_emu::sync_threads(); }

// Atomics: blocks run in parallel on several OS threads, so these must be real atomics.
inline float atomicAdd(float* address, float value) {
  float old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  float desired;
  do {
    desired = old + value;
  } while (!__atomic_compare_exchange(address, &old, &desired, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED));
  return old;
}
inline int atomicAdd(int* address, int value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline int atomicMax(int* address, int value) {
  int old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (old < value &&
         !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
inline int atomicCAS(int* address, int compare, int value) {
  __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}

// Math intrinsics: the fast-math forms map to the exact library functions on the host.
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
inline float __uint_as_float(unsigned int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
inline unsigned int __float_as_uint(float f) {
  unsigned int v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}
inline int __float_as_int(float f) {
  int v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}

// Tensor-core matrix multiply-accumulate of one warp, PTX `mma.sync.aligned.m16n8k16.row.col`
// with f32 accumulators: D (16x8) += A (16x16) · B (16x8), 16-bit inputs passed as raw bits, two
// per 32-bit register, the lower k in the low half. Lane l = 4·group + t holds (PTX ISA, "matrix
// fragments for mma.m16n8k16"):
//   a[0]: A[group][2t, 2t+1]    a[1]: A[group+8][2t, 2t+1]
//   a[2]: A[group][2t+8, 2t+9]  a[3]: A[group+8][2t+8, 2t+9]
//   b[0]: B[2t, 2t+1][group]    b[1]: B[2t+8, 2t+9][group]
//   d[0..1]: D[group][2t, 2t+1] d[2..3]: D[group+8][2t, 2t+1]
// Emulated: every lane publishes its fragments, the warp meets at a barrier, each lane computes its
// four outputs from the whole warp's fragments (products summed in k order in f32), and the warp
// meets again before the shared fragments can be overwritten.
namespace kiln_emu {

inline float bf16_bits_to_float(uint16_t bits) {
  const uint32_t wide = (uint32_t)bits << 16;
  float f;
  std::memcpy(&f, &wide, sizeof f);
  return f;
}

inline float f16_bits_to_float(uint16_t bits) {
  const uint32_t sign = (uint32_t)(bits >> 15) << 31;
  const int exponent = (bits >> 10) & 0x1f;
  const uint32_t mantissa = bits & 0x3ff;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp((float)mantissa, -24);  // zero or subnormal
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? INFINITY : NAN;
  } else {
    magnitude = std::ldexp((float)(mantissa | 0x400), exponent - 25);
  }
  uint32_t out;
  std::memcpy(&out, &magnitude, sizeof out);
  out |= sign;
  float f;
  std::memcpy(&f, &out, sizeof f);
  return f;
}

// Element `half` (0 = low) of a 32-bit fragment register.
inline uint16_t half_of(uint32_t reg, int half) { return (uint16_t)(half ? reg >> 16 : reg & 0xffff); }

template <bool kBf16>
inline void mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  require_fibers("a tensor-core mma");
  const size_t linear = (size_t)threadIdx.x + (size_t)threadIdx.y * block_dim.x +
                        (size_t)threadIdx.z * block_dim.x * block_dim.y;
  const size_t warp = linear / 32, lane = linear % 32;
  if (warp_fragments.size() <= warp) fail("warp fragments not sized for this block");
  WarpFragments& w = warp_fragments[warp];
  for (int r = 0; r < 4; ++r) w.a[lane][r] = a[r];
  for (int r = 0; r < 2; ++r) w.b[lane][r] = b[r];
  wait_at(w.barrier, 32);
  auto value = [](uint16_t bits) { return kBf16 ? bf16_bits_to_float(bits) : f16_bits_to_float(bits); };
  // A[row][k] and B[k][col] from the lanes that hold them.
  auto a_at = [&](int row, int k) {
    const int holder = 4 * (row % 8) + (k % 8) / 2;
    const int reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    return value(half_of(w.a[holder][reg], k % 2));
  };
  auto b_at = [&](int k, int col) {
    const int holder = 4 * col + (k % 8) / 2;
    return value(half_of(w.b[holder][k >= 8 ? 1 : 0], k % 2));
  };
  const int group = (int)lane / 4, t = (int)lane % 4;
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int row = group + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float sum = d[i];
    for (int k = 0; k < 16; ++k) sum += a_at(row, k) * b_at(k, col);
    out[i] = sum;
  }
  wait_at(w.barrier, 32);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

}  // namespace kiln_emu

inline void kiln_mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  kiln_emu::mma_16816<true>(d, a, b);
}
inline void kiln_mma_f16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  kiln_emu::mma_16816<false>(d, a, b);
}

// Entry points. `name` is the kernel, `Params` its parameter struct (passed by value on the GPU,
// by pointer here). Kernels that call __syncthreads() use KILN_EMULATE_SYNC.
#define KILN_EMULATE_IMPL(name, Params, uses_barriers)                                   \
  extern "C" void kiln_emu_##name(const KilnEmuLaunch* launch, const void* params) {     \
    kiln_emu::run_blocks(                                                                \
        *launch, [](const void* p) { name(*static_cast<const Params*>(p)); }, params,    \
        uses_barriers);                                                                  \
  }
#define KILN_EMULATE(name, Params) KILN_EMULATE_IMPL(name, Params, false)
#define KILN_EMULATE_SYNC(name, Params) KILN_EMULATE_IMPL(name, Params, true)

#else  // compiled by nvcc: the registrations vanish

#define KILN_EMULATE(name, Params)
#define KILN_EMULATE_SYNC(name, Params)
// Declared 16-byte aligned so that a kernel needing more (1024 for swizzled tiles) aligns at run time
// (with the compiler folding a declared 1024 alignment, the check would vanish).
#define KILN_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]

#include <cstdint>

// The tensor-core instructions the emulation above stands in for (sm_80 and later).
__device__ __forceinline__ void kiln_mma_bf16_16816(float d[4], const uint32_t a[4],
                                                    const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void kiln_mma_f16_16816(float d[4], const uint32_t a[4],
                                                   const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

#endif  // KILN_EMULATION
