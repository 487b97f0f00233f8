// Hopper (sm_90a) building blocks of kernels/gemm_wgmma.cu: asynchronous 16-byte copies into
// shared memory (cp.async), the 128-byte swizzled shared-memory layout, wgmma matrix descriptors,
// the warpgroup tensor-core instruction wgmma.mma_async.m64n{128,256}k16 with f32 accumulators,
// TMA bulk tensor copies, mbarriers, and setmaxnreg.
//
// Under emulation each piece has a CPU twin written from the PTX ISA's definitions:
//  - a copy happens when it is issued (a valid order of an asynchronous copy);
//  - a wgmma is deferred until the wait that retires its group (see kiln_emu::async_issue), then
//    computes the calling thread's accumulators by decoding the descriptors exactly as described
//    below, so a wrong descriptor, swizzle or pipeline order gives a wrong product here as well;
//  - wgmma.wait_group is .sync.aligned: the 32 lanes of a warp leave it together, after every lane
//    has retired its groups;
//  - the shared memory a warp's wgmma read stays reserved until that warp itself releases it:
//    its own wait retires the reads, then one of its own lanes arrives on an mbarrier. A TMA copy
//    into bytes still reserved by any warp fails (see WgmmaReads below), so a release by one warp
//    on behalf of others, which the PTX ISA does not promise to be safe, is an error here.
#pragma once

#include "common.cuh"

// Shared-memory operand tiles use the 128-byte swizzle (the layout TMA also writes): a tile is a
// stack of 128-byte rows, and within each 1024-byte group of 8 rows the 16-byte chunk c of row r is
// stored at chunk c ^ r. It spreads a column of chunks over all banks. Offsets are from a 1024-byte
// aligned base; the swizzle reads only address bits 4-9, so it equally applies to full addresses.
__host__ __device__ __forceinline__ uint32_t swizzle_128b(uint32_t offset) {
  return offset ^ (((offset >> 7) & 7u) << 4);
}

// A wgmma shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format"): bits 0-13 the
// start address, 16-29 the leading-dimension byte offset, 32-45 the stride-dimension byte offset,
// each in units of 16 bytes; bits 62-63 the swizzle mode (1 = 128-byte swizzle).
//  - K-major operand (k contiguous): rows of 64 k (128 bytes); stride = bytes between groups of 8
//    rows (1024); the leading offset is unused.
//  - MN-major operand (m or n contiguous): 64-element-wide atoms of 128-byte k rows; leading = bytes
//    between atoms along m/n, stride = bytes between groups of 8 k rows (1024).
__host__ __device__ __forceinline__ uint64_t wgmma_descriptor(uint32_t shared_address,
                                                             uint32_t leading_bytes,
                                                             uint32_t stride_bytes) {
  return (uint64_t)((shared_address & 0x3ffffu) >> 4) |
         ((uint64_t)((leading_bytes & 0x3ffffu) >> 4) << 16) |
         ((uint64_t)((stride_bytes & 0x3ffffu) >> 4) << 32) | (1ull << 62);
}

#ifdef KILN_EMULATION

namespace kiln_emu {

// Address of `p` in the shared window (the dynamic shared memory starts 16 bytes into it).
inline uint32_t shared_address(const void* p) {
  const unsigned char* window = dynamic_shared() - kDynamicSharedOffset;
  const unsigned char* q = static_cast<const unsigned char*>(p);
  if (q < window + kDynamicSharedOffset || q >= window + shared_window_end) {
    fail("a shared address outside dynamic shared memory");
  }
  return (uint32_t)(q - window);
}

// One 16-bit element of a wgmma operand: row `i` along m (A) or n (B), column `k`, of the tile the
// descriptor starts; `mn_major` is the instruction's transpose flag for that operand.
inline uint16_t descriptor_element(uint64_t desc, bool mn_major, int i, int k) {
  if ((desc >> 62) != 1) fail("wgmma descriptor: only the 128-byte swizzle is emulated");
  const uint32_t start = (uint32_t)(desc & 0x3fff) << 4;
  const uint32_t leading = (uint32_t)((desc >> 16) & 0x3fff) << 4;
  const uint32_t stride = (uint32_t)((desc >> 32) & 0x3fff) << 4;
  const uint32_t offset =
      mn_major ? start + (i / 64) * leading + (i % 64) * 2 + (k % 8) * 128 + (k / 8) * stride
               : start + (i / 8) * stride + (i % 8) * 128 + k * 2;
  const uint32_t at = swizzle_128b(offset);
  if (at < kDynamicSharedOffset || at + 2 > shared_window_end) {
    fail("wgmma descriptor reads outside dynamic shared memory");
  }
  uint16_t bits;
  std::memcpy(&bits, dynamic_shared() - kDynamicSharedOffset + at, sizeof bits);
  return bits;
}

// D (64xN, f32) += A (64x16) · B (16xN) for the calling thread's N/2 accumulators. Thread t of
// the warpgroup (warp w = t / 32, lane l) holds, for j = 0..N/8-1 (PTX ISA, "wgmma register
// fragments", m64nNk16 D): d[4j + 0..1] = D[16w + l/4][8j + 2(l%4) + 0..1] and d[4j + 2..3] the same
// columns of row 16w + l/4 + 8.
template <bool kBf16, int kN>
inline void wgmma_m64nNk16(float* d, uint64_t desc_a, uint64_t desc_b, bool a_mn_major,
                           bool b_mn_major) {
  const size_t linear = (size_t)threadIdx.x + (size_t)threadIdx.y * block_dim.x +
                        (size_t)threadIdx.z * block_dim.x * block_dim.y;
  const int t = (int)(linear % 128), w = t / 32, lane = t % 32;
  auto value = [](uint16_t bits) { return kBf16 ? bf16_bits_to_float(bits) : f16_bits_to_float(bits); };
  async_issue([=] {
    for (int j = 0; j < kN / 8; ++j) {
      for (int r = 0; r < 4; ++r) {
        const int row = 16 * w + lane / 4 + 8 * (r >> 1), col = 8 * j + 2 * (lane % 4) + (r & 1);
        float sum = d[4 * j + r];
        for (int k = 0; k < 16; ++k) {
          sum += value(descriptor_element(desc_a, a_mn_major, row, k)) *
                 value(descriptor_element(desc_b, b_mn_major, col, k));
        }
        d[4 * j + r] = sum;
      }
    }
  });
}

// ---- Which shared bytes each thread's wgmma read, and whether its warp has released them ----
//
// Byte ranges of the shared window, [begin, end), whole 128-byte rows: the 128-byte swizzle moves
// a 16-byte chunk only within its row, so the rows a tile spans before swizzling are the rows its
// bytes lie in after.
struct SharedRange {
  uint32_t begin, end;
};

// One thread's reads, in step with its async work: those of the open group, of each committed
// group not yet retired (oldest first), and those retired by its warp's wait but not yet released
// by an mbarrier arrive of its warp. Kept per thread of the running block; reset when a block
// initializes its mbarriers (before any of its wgmma), and checked by every emulated TMA copy.
struct WgmmaReads {
  std::vector<SharedRange> open;
  std::deque<std::vector<SharedRange>> committed;
  std::vector<SharedRange> retired;
};
inline thread_local std::vector<WgmmaReads> wgmma_reads;

inline size_t linear_thread_index() {
  return (size_t)threadIdx.x + (size_t)threadIdx.y * block_dim.x +
         (size_t)threadIdx.z * block_dim.x * block_dim.y;
}

inline WgmmaReads& reads_of(size_t thread) {
  if (wgmma_reads.size() <= thread) wgmma_reads.resize(thread + 1);
  return wgmma_reads[thread];
}

// Adds `r` to a set of disjoint ranges, merging the ones it overlaps or touches (a set stays as
// small as the distinct stages it covers, however many panels read them).
inline void add_range(std::vector<SharedRange>& set, SharedRange r) {
  for (size_t i = 0; i < set.size();) {
    if (set[i].begin <= r.end && r.begin <= set[i].end) {
      r.begin = std::min(r.begin, set[i].begin);
      r.end = std::max(r.end, set[i].end);
      set[i] = set.back();
      set.pop_back();
    } else {
      ++i;
    }
  }
  set.push_back(r);
}

// The rows a wgmma operand of `rows` (along m or n) x 16 (k) spans, from its descriptor: the
// smallest and the largest unswizzled offset descriptor_element computes, widened to whole rows.
inline SharedRange descriptor_rows(uint64_t desc, bool mn_major, int rows) {
  const uint32_t start = (uint32_t)(desc & 0x3fff) << 4;
  const uint32_t leading = (uint32_t)((desc >> 16) & 0x3fff) << 4;
  const uint32_t stride = (uint32_t)((desc >> 32) & 0x3fff) << 4;
  const uint32_t last = mn_major ? start + (rows / 64 - 1) * leading + 63 * 2 + 7 * 128 + stride
                                 : start + (rows / 8 - 1) * stride + 7 * 128 + 15 * 2;
  return SharedRange{start & ~127u, (last + 2 + 127) & ~127u};
}

inline void record_wgmma_reads(uint64_t desc, bool mn_major, int rows) {
  reads_of(linear_thread_index()).open.push_back(descriptor_rows(desc, mn_major, rows));
}
inline void commit_wgmma_reads() {
  WgmmaReads& r = reads_of(linear_thread_index());
  r.committed.push_back(std::move(r.open));
  r.open.clear();
}
// The groups a wait retires (all but the newest `pending`) move to the retired, unreleased set.
inline void retire_wgmma_reads(size_t pending) {
  WgmmaReads& r = reads_of(linear_thread_index());
  while (r.committed.size() > pending) {
    for (const SharedRange& range : r.committed.front()) add_range(r.retired, range);
    r.committed.pop_front();
  }
}
// An mbarrier arrive by a thread releases what its warp's lanes have retired, and nothing of any
// other warp's.
inline void release_warp_reads() {
  const size_t first = linear_thread_index() / 32 * 32;
  for (size_t t = first; t < first + 32 && t < wgmma_reads.size(); ++t) wgmma_reads[t].retired.clear();
}

// Fails if an asynchronous write of shared bytes [begin, end) hits bytes some warp's wgmma still
// reads (not retired by that warp's wait) or has read without releasing them (no arrive of that
// warp since its wait).
inline void check_unreserved(uint32_t begin, uint32_t end, const char* writer) {
  auto hits = [&](const std::vector<SharedRange>& set) {
    for (const SharedRange& r : set) {
      if (r.begin < end && begin < r.end) return true;
    }
    return false;
  };
  for (size_t t = 0; t < wgmma_reads.size(); ++t) {
    const WgmmaReads& r = wgmma_reads[t];
    bool in_flight = hits(r.open);
    for (const auto& group : r.committed) in_flight = in_flight || hits(group);
    if (in_flight || hits(r.retired)) {
      std::fprintf(stderr,
                   "kiln kernel emulation: %s wrote shared bytes %u..%u that a wgmma of thread %zu "
                   "(warp %zu) %s\n",
                   writer, begin, end, t, t / 32,
                   in_flight ? "still reads (no wait of its warp has retired it)"
                             : "read and its warp has not released (no arrive of that warp since "
                               "the wait that retired it)");
      fail("shared memory overwritten before the warp reading it released it");
    }
  }
}

// The lanes of the calling thread's warp meet (an instruction with .sync.aligned).
inline void converge_warp() {
  const size_t t = linear_thread_index(), warp = t / 32;
  const size_t threads = (size_t)block_dim.x * block_dim.y * block_dim.z;
  if (warp_fragments.size() <= warp) fail("warp state not sized for this block");
  wait_at(warp_fragments[warp].barrier, std::min<size_t>(32, threads - warp * 32));
}

}  // namespace kiln_emu

inline uint32_t kiln_shared_address(const void* p) { return kiln_emu::shared_address(p); }

// 16 bytes from global to shared memory, or 16 zero bytes when !valid (the copy happens at once).
inline void kiln_cp_async_16(void* shared, const void* global, bool valid) {
  if (valid) {
    std::memcpy(shared, global, 16);
  } else {
    std::memset(shared, 0, 16);
  }
}
inline void kiln_cp_async_commit() {}
template <int kPending>
inline void kiln_cp_async_wait() {}
inline void kiln_fence_proxy_async() {}
inline void kiln_wgmma_fence() {}
inline void kiln_wgmma_commit() {
  kiln_emu::async_commit();
  kiln_emu::commit_wgmma_reads();
}
// Retires this thread's groups but the newest kPending, then waits for the rest of its warp, so
// no lane goes on (to release a stage, say) before every lane's wgmma have read their operands.
template <int kPending>
inline void kiln_wgmma_wait() {
  kiln_emu::async_wait(kPending);
  kiln_emu::retire_wgmma_reads(kPending);
  kiln_emu::converge_warp();
}
template <bool kBf16, int kN, int kTransA, int kTransB>
inline void kiln_wgmma(float* d, uint64_t desc_a, uint64_t desc_b) {
  kiln_emu::record_wgmma_reads(desc_a, kTransA != 0, 64);
  kiln_emu::record_wgmma_reads(desc_b, kTransB != 0, kN);
  kiln_emu::wgmma_m64nNk16<kBf16, kN>(d, desc_a, desc_b, kTransA != 0, kTransB != 0);
}
template <int kRegisters>
inline void kiln_setmaxnreg_inc() {}
template <int kRegisters>
inline void kiln_setmaxnreg_dec() {}
template <int kCount>
inline void kiln_keep_registers(float*) {}

#else  // nvcc, compute_90a

__device__ __forceinline__ uint32_t kiln_shared_address(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

// cp.async with a source size of 0 fills the 16 shared bytes with zeros.
__device__ __forceinline__ void kiln_cp_async_16(void* shared, const void* global, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(kiln_shared_address(shared)),
               "l"(global), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void kiln_cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void kiln_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}
// Makes this thread's generic-proxy writes to shared memory (cp.async included) visible to the
// async proxy that wgmma reads shared memory through.
__device__ __forceinline__ void kiln_fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void kiln_wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void kiln_wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void kiln_wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving reads or writes of the accumulators across a wgmma fence or
// wait: the registers are in flight while the asynchronous instruction runs.
template <int kCount>
__device__ __forceinline__ void kiln_keep_registers(float* d) {
  #pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define KILN_WGMMA_M64N128K16(TYPE)                                                        \
  asm volatile(                                                                            \
      "{\n.reg .pred keep;\nsetp.ne.b32 keep, %66, 0;\n"                                   \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " "                     \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "            \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "   \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "   \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "  \
      "%64, %65, keep, 1, 1, %67, %68;\n}\n"                                               \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),            \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),          \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),      \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),      \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),      \
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),      \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),      \
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),      \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),      \
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),      \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                                 \
      : "l"(desc_a), "l"(desc_b), "r"(1), "n"(kTransA), "n"(kTransB))

#define KILN_WGMMA_M64N256K16(TYPE)                                                                        \
  asm volatile(                                                                                            \
      "{\n.reg .pred keep;\nsetp.ne.b32 keep, %130, 0;\n"                                                  \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " "                                     \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                            \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                   \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                   \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "                   \
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "                   \
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "                   \
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "       \
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "  \
      "%128, %129, keep, 1, 1, %131, %132;\n}\n"                                                           \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),                            \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),                          \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),                      \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),                      \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),                      \
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),                      \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),                      \
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),                      \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),                      \
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),                      \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]),                      \
        "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),                      \
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]),                      \
        "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),                      \
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]),                      \
        "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),                      \
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]),                    \
        "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]),                \
        "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]),                \
        "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),                \
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]),                \
        "+f"(d[126]), "+f"(d[127])                                                                         \
      : "l"(desc_a), "l"(desc_b), "r"(1), "n"(kTransA), "n"(kTransB))

// D (64xN, f32) += A (64x16) · B (16xN) by the warpgroup, asynchronously, N = 128 or 256 (see the
// emulation above for the fragment layout). kTransA / kTransB: the operand is MN-major in shared
// memory.
template <bool kBf16, int kN, int kTransA, int kTransB>
__device__ __forceinline__ void kiln_wgmma(float* d, uint64_t desc_a, uint64_t desc_b) {
  static_assert(kN == 128 || kN == 256, "wgmma tiles are 128 or 256 wide here");
  if constexpr (kN == 128 && kBf16) {
    KILN_WGMMA_M64N128K16("bf16");
  } else if constexpr (kN == 128) {
    KILN_WGMMA_M64N128K16("f16");
  } else if constexpr (kBf16) {
    KILN_WGMMA_M64N256K16("bf16");
  } else {
    KILN_WGMMA_M64N256K16("f16");
  }
}

// Moves registers from the producer warpgroup (which needs few) to the consumers (which hold the
// accumulators): the block's register budget is shared out again after launch.
template <int kRegisters>
__device__ __forceinline__ void kiln_setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void kiln_setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

#endif  // KILN_EMULATION

// ---- TMA (cp.async.bulk.tensor) and mbarriers, for gemm_wgmma_tma ----
//
// A tensor map describes a 2-d 16-bit matrix in global memory and the box one copy moves. On a GPU
// it is the driver's opaque CUtensorMap (cuTensorMapEncodeTiled, 128-byte swizzle, zero fill past
// the edges); under emulation src/cuda/gemm_wgmma.rs fills the same 128 bytes with the fields
// below instead. A box lands in shared memory as rows of 128 bytes (its inner dimension is 64
// elements), 128-byte swizzled: exactly the panel layout of the cp.async kernel.
struct __align__(128) KilnTensorMap {
  unsigned long long words[16];
};

#ifdef KILN_EMULATION

namespace kiln_emu {

// The emulated map: words 0-5 = address, inner extent, outer extent, outer stride in bytes,
// box inner, box outer (elements; 2 bytes each).
enum TensorMapWord { kAddress, kInner, kOuter, kStrideBytes, kBoxInner, kBoxOuter };

// An mbarrier as emulated in its 8 shared bytes: the phase bit, arrivals still expected in this
// phase, the arrival count of each phase, and transaction bytes still expected.
struct MbarrierState {
  int32_t tx;
  uint16_t pending;
  uint16_t count_and_phase;  // bits 0-14 count, bit 15 phase
};
static_assert(sizeof(MbarrierState) == 8, "an mbarrier is 8 bytes");

inline MbarrierState* mbarrier(uint64_t* bar) {
  shared_address(bar);  // must be in shared memory
  return reinterpret_cast<MbarrierState*>(bar);
}

inline void mbarrier_complete_if_done(MbarrierState* b) {
  if (b->pending == 0 && b->tx == 0) {
    b->count_and_phase ^= 0x8000;
    b->pending = b->count_and_phase & 0x7fff;
  }
}

}  // namespace kiln_emu

// Also forgets the wgmma reads left by earlier blocks on this OS thread: a block initializes its
// mbarriers before any of its threads issues a wgmma.
inline void kiln_mbarrier_init(uint64_t* bar, unsigned count) {
  kiln_emu::MbarrierState* b = kiln_emu::mbarrier(bar);
  b->tx = 0;
  b->pending = (uint16_t)count;
  b->count_and_phase = (uint16_t)(count & 0x7fff);
  kiln_emu::wgmma_reads.clear();
}
inline void kiln_fence_mbarrier_init() {}
namespace kiln_emu {
inline void mbarrier_arrive(uint64_t* bar) {
  MbarrierState* b = mbarrier(bar);
  if (b->pending == 0) fail("mbarrier: more arrivals than its count");
  --b->pending;
  mbarrier_complete_if_done(b);
}
}  // namespace kiln_emu

// A consumer's release: of the shared memory its warp's retired wgmma read (only its own warp's:
// see kiln_emu::check_unreserved). It lets the waiting producer run before this thread goes on,
// so a stage released too early is refilled while this thread's wgmma on it are still pending, as
// it could be on the GPU. (The producer, conversely, never yields but to wait: it runs as far
// ahead as the barriers let it, which exposes a missing wait on its side.)
inline void kiln_mbarrier_arrive(uint64_t* bar) {
  kiln_emu::release_warp_reads();
  kiln_emu::mbarrier_arrive(bar);
  kiln_emu::yield_fiber();
}
inline void kiln_mbarrier_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  kiln_emu::mbarrier(bar)->tx += (int32_t)bytes;
  kiln_emu::mbarrier_arrive(bar);
}
// Waits until the phase of parity `parity` has completed. A wait that can never end (a
// pipeline bug) fails instead of hanging the test.
inline void kiln_mbarrier_wait(uint64_t* bar, unsigned parity) {
  kiln_emu::MbarrierState* b = kiln_emu::mbarrier(bar);
  for (long spins = 0; ((b->count_and_phase >> 15) & 1u) == (parity & 1u); ++spins) {
    if (spins > 100000) kiln_emu::fail("mbarrier wait never completes (pipeline deadlock)");
    kiln_emu::yield_fiber();
  }
}
// Copies the box at (inner, outer) of `map` to `shared` (1024-byte aligned), zeros past the
// matrix, then completes its bytes on `bar` (at once: a valid order of an asynchronous copy).
inline void kiln_tma_load_2d(void* shared, const KilnTensorMap* map, int inner, int outer,
                             uint64_t* bar) {
  using namespace kiln_emu;
  const unsigned long long* w = map->words;
  const uint32_t at = kiln_shared_address(shared);
  if (at % 1024 != 0) fail("TMA destination not 1024-byte aligned");
  if (w[kBoxInner] * 2 != 128) fail("TMA box rows must be 128 bytes (128-byte swizzle)");
  check_unreserved(at, at + (uint32_t)(w[kBoxOuter] * 128), "a TMA copy");
  const unsigned char* base = reinterpret_cast<const unsigned char*>(w[kAddress]);
  unsigned char* dst = static_cast<unsigned char*>(shared);
  for (unsigned long long j = 0; j < w[kBoxOuter]; ++j) {
    for (unsigned long long i = 0; i < w[kBoxInner]; ++i) {
      const unsigned long long gi = inner + i, gj = outer + j;
      uint16_t v = 0;
      if (inner + (long long)i >= 0 && outer + (long long)j >= 0 && gi < w[kInner] && gj < w[kOuter]) {
        std::memcpy(&v, base + gj * w[kStrideBytes] + gi * 2, 2);
      }
      std::memcpy(dst + swizzle_128b((uint32_t)(j * 128 + i * 2)), &v, 2);
    }
  }
  MbarrierState* b = mbarrier(bar);
  b->tx -= (int32_t)(w[kBoxInner] * w[kBoxOuter] * 2);
  mbarrier_complete_if_done(b);
}

#else  // nvcc, compute_90a

__device__ __forceinline__ void kiln_mbarrier_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(kiln_shared_address(bar)),
               "r"(count)
               : "memory");
}
// Makes initialized mbarriers visible to the other threads and to the async proxy (TMA).
__device__ __forceinline__ void kiln_fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void kiln_mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(kiln_shared_address(bar))
               : "memory");
}
__device__ __forceinline__ void kiln_mbarrier_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   kiln_shared_address(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void kiln_mbarrier_wait(uint64_t* bar, unsigned parity) {
  const uint32_t address = kiln_shared_address(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred ready;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 ready, [%1], %2;\n"
        "selp.u32 %0, 1, 0, ready;\n}\n"
        : "=r"(done)
        : "r"(address), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void kiln_tma_load_2d(void* shared, const KilnTensorMap* map, int inner,
                                                 int outer, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(kiln_shared_address(shared)),
      "l"(reinterpret_cast<unsigned long long>(map)), "r"(inner), "r"(outer),
      "r"(kiln_shared_address(bar))
      : "memory");
}

#endif  // KILN_EMULATION
