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
//    (ucontext); __syncthreads() switches back to the scheduler, which resumes every fiber of the
//    block in turn, so a barrier really waits for the whole block;
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

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __ldg(ptr) (*(ptr))

// The launch description the Rust side passes: the grid, the block, and the range of linear block
// indices (x fastest, then y, then z) this call must run.
struct KilnEmuLaunch {
  unsigned int grid[3];
  unsigned int block[3];
  unsigned long long block_begin;
  unsigned long long block_end;
};

namespace kiln_emu {

inline thread_local uint3 thread_idx;
inline thread_local uint3 block_idx;
inline thread_local dim3 block_dim;
inline thread_local dim3 grid_dim;

// Fiber state of the block running on this OS thread.
struct Fiber {
  ucontext_t context;
  char* stack = nullptr;
  bool finished = false;
};
constexpr size_t kFiberStackBytes = 256 * 1024;
inline thread_local std::vector<Fiber> fibers;
inline thread_local ucontext_t scheduler_context;
inline thread_local size_t current_fiber = 0;
inline thread_local bool in_fiber_mode = false;
inline thread_local void (*fiber_body)(const void*) = nullptr;
inline thread_local const void* fiber_params = nullptr;

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

inline void fiber_entry() {
  fiber_body(fiber_params);
  fibers[current_fiber].finished = true;
  // Returning resumes uc_link, the scheduler.
}

inline void sync_threads() {
  if (!in_fiber_mode) {
    fail("__syncthreads() called by a kernel registered with KILN_EMULATE; register it with "
         "KILN_EMULATE_SYNC");
  }
  swapcontext(&fibers[current_fiber].context, &scheduler_context);
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
    if (f.stack == nullptr) {
      f.stack = static_cast<char*>(std::malloc(kFiberStackBytes));
      if (f.stack == nullptr) fail("out of memory for fiber stacks");
    }
    f.finished = false;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kFiberStackBytes;
    f.context.uc_link = &scheduler_context;
    makecontext(&f.context, fiber_entry, 0);
  }
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

inline void run_blocks(const KilnEmuLaunch& launch, void (*body)(const void*), const void* params,
                       bool uses_barriers) {
  grid_dim = dim3{launch.grid[0], launch.grid[1], launch.grid[2]};
  block_dim = dim3{launch.block[0], launch.block[1], launch.block[2]};
  const size_t threads = (size_t)launch.block[0] * launch.block[1] * launch.block[2];
  for (unsigned long long b = launch.block_begin; b < launch.block_end; ++b) {
    block_idx = unflatten(b, launch.grid);
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
inline int __float_as_int(float f) {
  int v;
  std::memcpy(&v, &f, sizeof v);
  return v;
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

#endif  // KILN_EMULATION
