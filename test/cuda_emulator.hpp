// Runs the CUDA C++ loom generates on the host CPU, so that machines without a GPU (CI) check
// what the kernels compute, not only that NVRTC compiles them. The source is compiled by the host
// C++ compiler behind a small shim (blockIdx/threadIdx, __syncthreads, __shfl_xor_sync, the CUDA
// math and bit-cast functions, __shared__ arrays) into a shared library. A launch runs every CUDA
// thread of a block as a host thread, the blocks one after another (a thread-block cluster's
// blocks at once, each with its own dynamic shared memory); __syncthreads is a barrier of the
// block's threads and a warp shuffle an exchange among the warp's 32 threads, so barriers and
// shuffles behave as on a GPU. A barrier that not every thread reaches aborts after a timeout.
// cuda_fp16.h and cuda_bf16.h are stand-ins giving the storage types and their rounding
// conversions (all the generated code uses of them). The tensor-core (mma.sync, ldmatrix) and
// cp.async intrinsics are emulated with their PTX fragment layouts.
#pragma once

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>


namespace loom::testing {

namespace emulator_detail {

// Put before the generated source.
inline const char* kShim = R"(// loom CUDA emulator shim
#include <math.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
struct loom_emu_dim3 { unsigned x, y, z; };
extern "C" {
__attribute__((visibility("default"))) thread_local loom_emu_dim3 loom_emu_thread_idx, loom_emu_block_idx;
__attribute__((visibility("default"))) thread_local int loom_emu_rank;  // the block's in its cluster
__attribute__((visibility("default"))) loom_emu_dim3 loom_emu_block_dim, loom_emu_grid_dim;
// The dynamic shared memory of the blocks of the cluster running now, by rank; the threads of
// each rank that have returned from the kernel, over all the launch's clusters so far, and this
// thread's cluster (its count of clusters before): block r of this cluster has exited when
// loom_emu_exited[r] is loom_emu_block_threads * (loom_emu_round + 1).
__attribute__((visibility("default"))) unsigned char* loom_emu_cluster_smem[8];
__attribute__((visibility("default"))) long long loom_emu_exited[8];
__attribute__((visibility("default"))) long long loom_emu_block_threads;
__attribute__((visibility("default"))) thread_local long long loom_emu_round;
__attribute__((visibility("default"))) void (*loom_emu_sync)() = 0;
__attribute__((visibility("default"))) void (*loom_emu_cluster_sync)() = 0;
__attribute__((visibility("default"))) void (*loom_emu_warpgroup_sync)() = 0;
__attribute__((visibility("default"))) float (*loom_emu_shfl_f32)(float, int) = 0;
__attribute__((visibility("default"))) int (*loom_emu_shfl_i32)(int, int) = 0;
__attribute__((visibility("default"))) void loom_emu_set_thread(unsigned tx, unsigned ty, unsigned tz,
                                                                unsigned bx, unsigned by, unsigned bz,
                                                                int rank, long long round) {
  loom_emu_thread_idx = {tx, ty, tz};
  loom_emu_block_idx = {bx, by, bz};
  loom_emu_rank = rank;
  loom_emu_round = round;
}
}
#define threadIdx loom_emu_thread_idx
#define blockIdx loom_emu_block_idx
#define blockDim loom_emu_block_dim
#define gridDim loom_emu_grid_dim
#define __global__ __attribute__((visibility("default")))
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
// A tensor map parameter arrives as the address of its 128 bytes (a reference: one 8-byte word).
#define LOOM_TENSOR_MAP_PARAM(name) const loom_tensor_map& name
// Static shared arrays are the function's statics: the blocks that run at once (a cluster's) share
// them, so a cluster kernel has none (its shared buffers are dynamic shared memory).
#define __shared__ static
// A block's dynamic shared memory: 228 KiB of its own, 1024-aligned, all-ones (NaNs) at the
// launch.
#define LOOM_DYNAMIC_SHARED(name) unsigned char* name = loom_emu_cluster_smem[loom_emu_rank]
#define __cluster_dims__(...)
#define LOOM_CLUSTER_SIZE(kernel, n) \
  extern "C" __attribute__((visibility("default"), used)) const int kernel##_loom_cluster_size = n;
#define __syncthreads() loom_emu_sync()
#define __trap() abort()
static inline float __shfl_xor_sync(unsigned, float v, int m) { return loom_emu_shfl_f32(v, m); }
static inline int __shfl_xor_sync(unsigned, int v, int m) { return loom_emu_shfl_i32(v, m); }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __int_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
#define __threadfence() __atomic_thread_fence(__ATOMIC_SEQ_CST)
)"
// The tensor-core and cp.async intrinsics of loom's preamble (inline PTX there). ldmatrix and mma
// gather the addresses of the warp's 32 lanes and compute each lane's share from the others'
// rows or fragments; the trailing gather keeps every lane's fragments in place until all have
// read them. A cp.async fills its 16 bytes with NaNs at issue and copies the data at the wait that
// needs it: on a GPU the copy lands at some time in between, so a kernel that reads shared memory
// before waiting, or that starts a copy over data some product has yet to read, computes NaNs
// here.
R"(#include <vector>
#include "cuda_fp16.h"
#include "cuda_bf16.h"
extern "C" __attribute__((visibility("default"))) int (*loom_emu_warp_gather)(const void* const*, int,
                                                                            const void**) = 0;
static inline float loom_emu_float(__half h) { return __half2float(h); }
static inline float loom_emu_float(__nv_bfloat16 h) { return __bfloat162float(h); }
template <typename T> static inline void loom_emu_ldmatrix(T* dst, const T* src, bool trans) {
  const void* mine[1] = {src};
  const void* rows[32];
  const int lane = loom_emu_warp_gather(mine, 1, rows);
  for (int m = 0; m < 4; ++m)
    for (int h = 0; h < 2; ++h) {
      const int r = trans ? (lane % 4) * 2 + h : lane / 4, c = trans ? lane / 4 : (lane % 4) * 2 + h;
      dst[m * 2 + h] = static_cast<const T*>(rows[m * 8 + r])[c];
    }
}
template <typename T> static inline void loom_ldmatrix_x4(T* dst, const T* src) { loom_emu_ldmatrix(dst, src, false); }
template <typename T> static inline void loom_ldmatrix_x4_trans(T* dst, const T* src) { loom_emu_ldmatrix(dst, src, true); }
template <typename T> static inline void loom_emu_mma(float* c, const T* a, const T* b) {
  const void* mine[2] = {a, b};
  const void* all[64];
  const int lane = loom_emu_warp_gather(mine, 2, all);
  float d[4];
  for (int r = 0; r < 4; ++r) {
    const int row = lane / 4 + (r / 2) * 8, col = (lane % 4) * 2 + r % 2;
    float sum = c[r];
    for (int k = 0; k < 16; ++k) {
      const T* af = static_cast<const T*>(all[((row % 8) * 4 + (k % 8) / 2) * 2]);
      const T* bf = static_cast<const T*>(all[(col * 4 + (k % 8) / 2) * 2 + 1]);
      sum += loom_emu_float(af[(k / 8) * 4 + (row / 8) * 2 + k % 2]) *
             loom_emu_float(bf[(k / 8) * 2 + k % 2]);
    }
    d[r] = sum;
  }
  loom_emu_warp_gather(mine, 0, all);
  for (int r = 0; r < 4; ++r) c[r] = d[r];
}
static inline void loom_mma_m16n8k16_f16(float* c, const __half* a, const __half* b) { loom_emu_mma(c, a, b); }
static inline void loom_mma_m16n8k16_bf16(float* c, const __nv_bfloat16* a, const __nv_bfloat16* b) { loom_emu_mma(c, a, b); }
struct loom_emu_copy { void* dst; const void* src; long long bytes; };
static thread_local std::vector<loom_emu_copy> loom_emu_uncommitted;
static thread_local std::vector<std::vector<loom_emu_copy>> loom_emu_groups;
template <typename T> static inline void loom_cp_async_16(T* dst, const T* src, long long bytes) {
  memset(dst, 0xFF, 16);  // all-ones: a NaN in every float, half and bfloat16
  loom_emu_uncommitted.push_back({dst, src, bytes});
}
static inline void loom_cp_async_commit() {
  loom_emu_groups.push_back(loom_emu_uncommitted);
  loom_emu_uncommitted.clear();
}
template <int N> static inline void loom_cp_async_wait() {
  while (loom_emu_groups.size() > (size_t)N) {
    for (const loom_emu_copy& c : loom_emu_groups.front()) {
      memcpy(c.dst, c.src, (size_t)c.bytes);
      memset((char*)c.dst + c.bytes, 0, (size_t)(16 - c.bytes));
    }
    loom_emu_groups.erase(loom_emu_groups.begin());
  }
}
)"
// wgmma (sm_90a): each thread computes its own accumulators from the shared tiles, read through
// the hardware's 128-byte swizzle (address bits 4-6 XOR bits 7-9) from the canonical layouts: A
// K-major (row r at (r / 8) * ASBO + (r % 8) * 128), B N-major (column n in atom n / 64 at
// BLBO apart, k row at (k / 8) * BSBO + (k % 8) * 128). As on the GPU, the products are
// asynchronous: a wgmma is only recorded at issue, committed into a group, and computed, from what
// the shared tiles hold then, when a wait lets no more than N groups stay pending. A kernel that
// rewrites a tile before the wait that covers its readers computes wrong products here. The wait
// is the warpgroup's (wgmma.wait_group is .sync.aligned over it, and the group it waits for is
// the warpgroup's): its 128 threads meet before and after computing, so that one thread past the
// wait knows the whole warpgroup's reads done, as on the GPU.
R"(static inline const void* loom_emu_swizzle128(const char* p) {
  const uintptr_t a = (uintptr_t)p;
  return (const void*)(a ^ (((a >> 7) & 7) << 4));
}
template <int N, unsigned ASBO, unsigned BLBO, unsigned BSBO, typename T>
static inline void loom_emu_wgmma_run(float* d, const void* va, const void* vb) {
  const T* a = static_cast<const T*>(va);
  const T* b = static_cast<const T*>(vb);
  const int t = (int)(loom_emu_thread_idx.x % 128), w = t / 32, l = t % 32;
  for (int r = 0; r < N / 2; ++r) {
    const int row = 16 * w + l / 4 + 8 * ((r % 4) / 2), col = 8 * (r / 4) + 2 * (l % 4) + r % 2;
    float sum = 0;
    for (int k = 0; k < 16; ++k) {
      const char* pa = (const char*)a + (row / 8) * ASBO + (row % 8) * 128 + k * 2;
      const char* pb = (const char*)b + (col / 64) * BLBO + (k / 8) * BSBO + (k % 8) * 128 + (col % 64) * 2;
      sum += loom_emu_float(*(const T*)loom_emu_swizzle128(pa)) *
             loom_emu_float(*(const T*)loom_emu_swizzle128(pb));
    }
    d[r] += sum;
  }
}
struct loom_emu_product { void (*run)(float*, const void*, const void*); float* d; const void* a; const void* b; };
static thread_local std::vector<loom_emu_product> loom_emu_wgmma_open;
static thread_local std::vector<std::vector<loom_emu_product>> loom_emu_wgmma_groups;
template <int N, unsigned ASBO, unsigned BLBO, unsigned BSBO, typename T>
static inline void loom_emu_wgmma(float* d, const T* a, const T* b) {
  loom_emu_wgmma_open.push_back({&loom_emu_wgmma_run<N, ASBO, BLBO, BSBO, T>, d, a, b});
}
#define LOOM_EMU_WGMMA(N) \
  template <unsigned A, unsigned BL, unsigned BS> static inline void loom_wgmma_m64n##N##k16_f16(float* d, const __half* a, const __half* b) { loom_emu_wgmma<N, A, BL, BS>(d, a, b); } \
  template <unsigned A, unsigned BL, unsigned BS> static inline void loom_wgmma_m64n##N##k16_bf16(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b) { loom_emu_wgmma<N, A, BL, BS>(d, a, b); }
LOOM_EMU_WGMMA(8) LOOM_EMU_WGMMA(16) LOOM_EMU_WGMMA(24) LOOM_EMU_WGMMA(32) LOOM_EMU_WGMMA(40)
LOOM_EMU_WGMMA(48) LOOM_EMU_WGMMA(56) LOOM_EMU_WGMMA(64) LOOM_EMU_WGMMA(72) LOOM_EMU_WGMMA(80)
LOOM_EMU_WGMMA(88) LOOM_EMU_WGMMA(96) LOOM_EMU_WGMMA(104) LOOM_EMU_WGMMA(112) LOOM_EMU_WGMMA(120)
LOOM_EMU_WGMMA(128) LOOM_EMU_WGMMA(136) LOOM_EMU_WGMMA(144) LOOM_EMU_WGMMA(152) LOOM_EMU_WGMMA(160)
LOOM_EMU_WGMMA(168) LOOM_EMU_WGMMA(176) LOOM_EMU_WGMMA(184) LOOM_EMU_WGMMA(192) LOOM_EMU_WGMMA(200)
LOOM_EMU_WGMMA(208) LOOM_EMU_WGMMA(216) LOOM_EMU_WGMMA(224) LOOM_EMU_WGMMA(232) LOOM_EMU_WGMMA(240)
LOOM_EMU_WGMMA(248) LOOM_EMU_WGMMA(256)
template <int Count> static inline void loom_wgmma_fence(float*) {}
static inline void loom_wgmma_commit() {
  loom_emu_wgmma_groups.push_back(loom_emu_wgmma_open);
  loom_emu_wgmma_open.clear();
}
// The odd blocks of a thread-block cluster compute their products late (20 ms): a block that
// copies into another's shared memory before that one's products have read it is caught there
// (they compute NaNs).
template <int N, int Count> static inline void loom_wgmma_wait(float*) {
  if (loom_emu_rank % 2 == 1) usleep(20000);
  loom_emu_warpgroup_sync();
  while (loom_emu_wgmma_groups.size() > (size_t)N) {
    for (const loom_emu_product& p : loom_emu_wgmma_groups.front()) p.run(p.d, p.a, p.b);
    loom_emu_wgmma_groups.erase(loom_emu_wgmma_groups.begin());
  }
  loom_emu_warpgroup_sync();
}
static inline void loom_fence_proxy_async() {}
)"
// TMA and mbarriers (sm_90). A tensor map holds the emulator's own description of the tensor
// (loom_emu_tensor_map, written by encode_emulated_tensor_map). An mbarrier is host state keyed
// by its shared address, made anew by each init. A copy is recorded on its barrier at issue and
// done, through the 128-byte swizzle of the destination address, when a wait finds every arrival
// of the phase in; until then the destination holds NaNs, written at issue. On a GPU the copy
// lands at some time in between, so a kernel that reads a stage before waiting for it, or that
// copies over a stage some product has yet to read, computes NaNs here. The phase completes when the copies brought
// exactly the bytes announced (expect_tx); more bytes abort, and so does a wait past 30 seconds
// (fewer bytes, or arrivals missing).
R"(#include <chrono>
#include <map>
#include <mutex>
#include <thread>
struct loom_emu_tensor_map {
  const char* base;
  uint32_t rank, element_bytes, swizzle;
  uint64_t dims[5], strides[4];
  uint32_t box[5];
};
struct loom_emu_tma_copy { loom_emu_tensor_map map; char* dst; long long c[5]; };
struct loom_emu_mbarrier { int count = 0, pending = 0; long long tx = 0; unsigned long long phase = 0; std::vector<loom_emu_tma_copy> copies; };
static std::mutex loom_emu_mbarrier_mu;
static std::map<const void*, loom_emu_mbarrier> loom_emu_mbarriers;
static inline void loom_emu_fail(const char* what) { fprintf(stderr, "CUDA emulator: %s\n", what); abort(); }
static inline loom_emu_mbarrier& loom_emu_mbarrier_at(const void* bar) {
  auto it = loom_emu_mbarriers.find(bar);
  if (it == loom_emu_mbarriers.end()) loom_emu_fail("an mbarrier used before its init");
  return it->second;
}
static inline void loom_emu_arrive(loom_emu_mbarrier& b) {
  if (b.pending <= 0) loom_emu_fail("more arrivals on an mbarrier than its count in one phase");
  if (--b.pending == 0 && b.copies.empty() && b.tx == 0) { ++b.phase; b.pending = b.count; }
}
static inline void loom_mbarrier_init(long long* bar, int count) {
  std::lock_guard<std::mutex> lock(loom_emu_mbarrier_mu);
  loom_emu_mbarrier& b = loom_emu_mbarriers[bar];
  b = loom_emu_mbarrier();
  b.count = b.pending = count;
}
static inline void loom_mbarrier_arrive(long long* bar) {
  std::lock_guard<std::mutex> lock(loom_emu_mbarrier_mu);
  loom_emu_arrive(loom_emu_mbarrier_at(bar));
}
static inline void loom_mbarrier_expect_tx(long long* bar, int bytes) {
  std::lock_guard<std::mutex> lock(loom_emu_mbarrier_mu);
  loom_emu_mbarrier& b = loom_emu_mbarrier_at(bar);
  b.tx += bytes;
  loom_emu_arrive(b);
}
// Does copy c, or (poison) fills its destination with all-ones (NaNs) instead.
static inline long long loom_emu_tma_run(const loom_emu_tma_copy& c, bool poison = false) {
  const loom_emu_tensor_map& m = c.map;
  long long n = 1;
  for (uint32_t d = 0; d < m.rank; ++d) n *= m.box[d];
  for (long long i = 0; i < n; ++i) {
    long long rest = i, offset = 0;
    bool inside = true;
    for (uint32_t d = 0; d < m.rank; ++d) {  // innermost first
      const long long x = c.c[d] + rest % m.box[d];
      rest /= m.box[d];
      if (x < 0 || x >= (long long)m.dims[d]) inside = false;
      offset += x * (d == 0 ? m.element_bytes : (long long)m.strides[d - 1]);
    }
    char* to = c.dst + i * m.element_bytes;
    if (m.swizzle == 3) to = (char*)loom_emu_swizzle128(to);
    if (poison) memset(to, 0xFF, m.element_bytes);
    else if (inside) memcpy(to, m.base + offset, m.element_bytes);
    else memset(to, 0, m.element_bytes);
  }
  return n * m.element_bytes;
}
static inline void loom_tma_load_3d(void* dst, const void* map, long long* bar, int c0, int c1, int c2) {
  std::lock_guard<std::mutex> lock(loom_emu_mbarrier_mu);
  loom_emu_tma_copy c{*(const loom_emu_tensor_map*)map, (char*)dst, {c0, c1, c2, 0, 0}};
  if (c.map.rank != 3) loom_emu_fail("a 3-d TMA copy through a tensor map of another rank");
  if (c.map.swizzle == 3 && ((uintptr_t)dst % 1024) != 0) loom_emu_fail("a swizzled TMA copy to shared memory not 1024-aligned");
  loom_emu_tma_run(c, /*poison=*/true);
  loom_emu_mbarrier_at(bar).copies.push_back(c);
}
// Thread-block clusters: the address at p's offset in the shared memory of block `rank` of the
// cluster (mapa), a remote arrival, a multicast copy (one copy per block in the mask, each on
// that block's barrier), the cluster-wide barrier.
template <typename T> static inline T* loom_emu_map(T* p, int rank) {
  unsigned char* mine = loom_emu_cluster_smem[loom_emu_rank];
  const long long offset = (unsigned char*)p - mine;
  if (offset < 0 || offset >= 228 * 1024) loom_emu_fail("a cluster address outside this block's dynamic shared memory");
  if (rank < 0 || rank >= 8 || !loom_emu_cluster_smem[rank]) loom_emu_fail("a block rank outside the cluster");
  if (__atomic_load_n(&loom_emu_exited[rank], __ATOMIC_SEQ_CST) >= loom_emu_block_threads * (loom_emu_round + 1))
    loom_emu_fail("an access to the shared memory of a block of the cluster that has exited");
  return (T*)(loom_emu_cluster_smem[rank] + offset);
}
static inline void loom_mbarrier_arrive_cluster(long long* bar, int rank) {
  loom_mbarrier_arrive(loom_emu_map(bar, rank));
}
static inline void loom_tma_load_3d_multicast(void* dst, const void* map, long long* bar, unsigned short mask,
                                              int c0, int c1, int c2) {
  for (int r = 0; r < 16; ++r)
    if (mask >> r & 1) loom_tma_load_3d(loom_emu_map((char*)dst, r), map, loom_emu_map(bar, r), c0, c1, c2);
}
static inline void loom_fence_mbarrier_init() {}
static inline void loom_cluster_sync() { loom_emu_cluster_sync(); }
static inline void loom_mbarrier_wait(long long* bar, int parity) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(loom_emu_mbarrier_mu);
      loom_emu_mbarrier& b = loom_emu_mbarrier_at(bar);
      if ((int)(b.phase & 1) != parity) return;
      if (b.pending == 0) {  // every arrival in: the copies land (more may still be issued)
        for (const loom_emu_tma_copy& c : b.copies) b.tx -= loom_emu_tma_run(c);
        b.copies.clear();
        if (b.tx < 0) loom_emu_fail("the TMA copies of an mbarrier phase brought more bytes than announced");
        if (b.tx == 0) {
          ++b.phase;
          b.pending = b.count;
          continue;
        }
      }
      if (std::chrono::steady_clock::now() > deadline)
        loom_emu_fail(b.pending ? "an mbarrier wait timed out after 30 seconds, arrivals missing"
                                : "an mbarrier wait timed out after 30 seconds, announced bytes missing");
    }
    std::this_thread::yield();
  }
}
template <int N, int Raise> static inline void loom_set_max_registers() {}
)";

// The emulator's tensor map (the shim's loom_emu_tensor_map) in the 128 bytes at `out`: the
// tensor at `base`, innermost dimension first, as cuTensorMapEncodeTiled takes it.
struct EmulatedTensorMap {
  const char* base;
  uint32_t rank, element_bytes, swizzle;
  uint64_t dims[5], strides[4];
  uint32_t box[5];
};
static_assert(sizeof(EmulatedTensorMap) <= 128, "a tensor map is 128 bytes");
inline void encode_emulated_tensor_map(void* out, const void* base, uint32_t rank,
                                       uint32_t element_bytes, const uint64_t* dims,
                                       const uint64_t* strides, const uint32_t* box,
                                       uint32_t swizzle) {
  EmulatedTensorMap m{};
  m.base = static_cast<const char*>(base);
  m.rank = rank;
  m.element_bytes = element_bytes;
  m.swizzle = swizzle;
  for (uint32_t d = 0; d < rank && d < 5; ++d) {
    m.dims[d] = dims[d];
    m.box[d] = box[d];
    if (d > 0) m.strides[d - 1] = strides[d - 1];
  }
  std::memset(out, 0, 128);
  std::memcpy(out, &m, sizeof m);
}

// Stand-ins for the toolkit's headers: storage types and round-to-nearest-even conversions.
inline const char* kHalfHeader = R"(#pragma once
struct __half { _Float16 v; };
static inline __half __float2half_rn(float f) { return __half{(_Float16)f}; }
static inline float __half2float(__half h) { return (float)h.v; }
)";
inline const char* kBFloat16Header = R"(#pragma once
#include <stdint.h>
#include <string.h>
struct __nv_bfloat16 { uint16_t bits; };
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return __nv_bfloat16{(uint16_t)(u >> 16)};
}
static inline float __bfloat162float(__nv_bfloat16 b) {
  uint32_t u = (uint32_t)b.bits << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
)";

// A barrier of n threads, reusable; gives up (aborting the test program) after a timeout.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait(const char* what) {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t gen = generation_;
    if (++waiting_ == n_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return generation_ != gen; })) {
      std::fprintf(stderr, "CUDA emulator: %s not reached by every thread (%d of %d waited)\n",
                   what, waiting_, n_);
      std::abort();
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_, waiting_ = 0;
  uint64_t generation_ = 0;
};

// One warp's shuffle exchange.
struct Warp {
  explicit Warp(int n) : threads(n), barrier(n) {}
  int threads;
  Barrier barrier;
  float f32[32] = {};
  int i32[32] = {};
  const void* pointers[32][4] = {};
};

// What each emulated CUDA thread knows.
struct ThreadState {
  int tid = 0;
  Barrier* block = nullptr;
  Warp* warp = nullptr;
  Barrier* warpgroup = nullptr;  // the 128 threads of 4 consecutive warps (fewer at the end)
  Barrier* cluster = nullptr;    // every thread of the blocks of the cluster
};
inline thread_local ThreadState* current = nullptr;

inline void sync_threads() { current->block->wait("__syncthreads"); }
inline void sync_warpgroup() { current->warpgroup->wait("a warpgroup-wide wgmma wait"); }
inline void sync_cluster() { current->cluster->wait("a cluster barrier"); }

template <typename T>
T shuffle(T v, int mask, T (Warp::*slots)[32]) {
  Warp& w = *current->warp;
  const int lane = current->tid % 32, other = lane ^ mask;
  (w.*slots)[lane] = v;
  w.barrier.wait("__shfl_xor_sync");
  T r = other < w.threads ? (w.*slots)[other] : v;
  w.barrier.wait("__shfl_xor_sync");
  return r;
}
// The n (at most 4) pointers of every lane of a full warp, lane by lane, into all; returns this
// thread's lane.
inline int warp_gather(const void* const* mine, int n, const void** all) {
  Warp& w = *current->warp;
  const int lane = current->tid % 32;
  if (w.threads != 32 || n > 4) {
    std::fprintf(stderr, "CUDA emulator: a tensor-core instruction in a warp of %d threads\n",
                 w.threads);
    std::abort();
  }
  for (int j = 0; j < n; ++j) w.pointers[lane][j] = mine[j];
  w.barrier.wait("a warp-wide tensor-core instruction");
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < n; ++j) all[l * n + j] = w.pointers[l][j];
  w.barrier.wait("a warp-wide tensor-core instruction");
  return lane;
}
inline float shuffle_f32(float v, int m) { return shuffle(v, m, &Warp::f32); }
inline int shuffle_i32(int v, int m) { return shuffle(v, m, &Warp::i32); }

}  // namespace emulator_detail

class CudaEmulator {
 public:
  struct Dim3 {
    unsigned x = 1, y = 1, z = 1;
  };

  // Compiles `source` (loom's generated CUDA C++) with the host compiler `cxx`; null, with
  // *error set, when that fails.
  static std::unique_ptr<CudaEmulator> compile(const std::string& source, const std::string& cxx,
                                               std::string* error) {
    namespace fs = std::filesystem;
    static std::atomic<int> serial{0};
    const fs::path dir = fs::temp_directory_path() /
                         ("loom-cuda-emu-" + std::to_string(getpid()) + "-" + std::to_string(serial++));
    fs::create_directories(dir);
    const fs::path src = dir / "kernels.cpp", lib = dir / "kernels.so", log = dir / "log.txt";
    std::ofstream(src) << emulator_detail::kShim << source;
    std::ofstream(dir / "cuda_fp16.h") << emulator_detail::kHalfHeader;
    std::ofstream(dir / "cuda_bf16.h") << emulator_detail::kBFloat16Header;
    const std::string command = cxx + " -std=c++17 -O1 -w -fPIC -shared -I" + dir.string() +
                                " -o " + lib.string() + " " + src.string() + " > " +
                                log.string() + " 2>&1";
    if (std::system(command.c_str()) != 0) {
      std::ifstream in(log);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      *error = "host compile of the CUDA source failed: " + text.substr(0, 4000);
      std::error_code ignored;
      fs::remove_all(dir, ignored);
      return nullptr;
    }
    std::unique_ptr<CudaEmulator> e(new CudaEmulator);
    e->dir_ = dir;
    e->lib_ = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!e->lib_) {
      *error = std::string("dlopen: ") + dlerror();
      return nullptr;
    }
    auto set = [&](const char* name, void* fn) {
      *static_cast<void**>(dlsym(e->lib_, name)) = fn;
    };
    set("loom_emu_sync", reinterpret_cast<void*>(&emulator_detail::sync_threads));
    set("loom_emu_shfl_f32", reinterpret_cast<void*>(&emulator_detail::shuffle_f32));
    set("loom_emu_shfl_i32", reinterpret_cast<void*>(&emulator_detail::shuffle_i32));
    set("loom_emu_warp_gather", reinterpret_cast<void*>(&emulator_detail::warp_gather));
    set("loom_emu_warpgroup_sync", reinterpret_cast<void*>(&emulator_detail::sync_warpgroup));
    set("loom_emu_cluster_sync", reinterpret_cast<void*>(&emulator_detail::sync_cluster));
    return e;
  }

  ~CudaEmulator() {
    if (lib_) dlclose(lib_);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // Runs kernel `symbol` over grid x block; args are its parameters in order (buffer addresses
  // and i64 scalars), at most 12. A cluster kernel (LOOM_CLUSTER_SIZE) runs a cluster of blocks
  // at a time, each with its own dynamic shared memory, else one block at a time. Returns an
  // error message, empty on success.
  std::string launch(const std::string& symbol, Dim3 grid, Dim3 block,
                     const std::vector<uint64_t>& args) {
    void* fn = dlsym(lib_, symbol.c_str());
    if (!fn) return "no kernel " + symbol;
    if (args.size() > 12) return "more than 12 kernel arguments";
    const auto* declared = static_cast<const int*>(dlsym(lib_, (symbol + "_loom_cluster_size").c_str()));
    const unsigned cluster = declared ? static_cast<unsigned>(*declared) : 1;
    if (cluster < 1 || cluster > 8 || grid.x % cluster != 0)
      return "kernel " + symbol + ": a grid of " + std::to_string(grid.x) +
             " blocks in clusters of " + std::to_string(cluster);
    using Kernel = void (*)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                            uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
    uint64_t a[12] = {};
    for (size_t k = 0; k < args.size(); ++k) a[k] = args[k];
    *static_cast<Dim3*>(dlsym(lib_, "loom_emu_block_dim")) = block;
    *static_cast<Dim3*>(dlsym(lib_, "loom_emu_grid_dim")) = grid;
    auto set_thread =
        reinterpret_cast<void (*)(unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, int,
                                  long long)>(dlsym(lib_, "loom_emu_set_thread"));
    constexpr size_t kSharedBytes = 228 * 1024;
    auto* smem = static_cast<unsigned char**>(dlsym(lib_, "loom_emu_cluster_smem"));
    std::vector<std::unique_ptr<unsigned char, void (*)(void*)>> shared;
    for (unsigned r = 0; r < 8; ++r) smem[r] = nullptr;
    for (unsigned r = 0; r < cluster; ++r) {
      shared.emplace_back(static_cast<unsigned char*>(std::aligned_alloc(1024, kSharedBytes)), &std::free);
      std::memset(shared.back().get(), 0xFF, kSharedBytes);
      smem[r] = shared.back().get();
    }
    const int threads = static_cast<int>(block.x * block.y * block.z);
    const int all = threads * static_cast<int>(cluster);
    auto* exited = static_cast<long long*>(dlsym(lib_, "loom_emu_exited"));
    for (unsigned r = 0; r < 8; ++r) exited[r] = 0;
    *static_cast<long long*>(dlsym(lib_, "loom_emu_block_threads")) = threads;
    // Per block of the cluster: its barrier, warps and warpgroups.
    struct Block {
      explicit Block(int threads) : barrier(threads) {
        for (int w = 0; w * 32 < threads; ++w)
          warps.push_back(std::make_unique<emulator_detail::Warp>(std::min(32, threads - w * 32)));
        for (int w = 0; w * 128 < threads; ++w)
          warpgroups.push_back(
              std::make_unique<emulator_detail::Barrier>(std::min(128, threads - w * 128)));
      }
      emulator_detail::Barrier barrier;
      std::vector<std::unique_ptr<emulator_detail::Warp>> warps;
      std::vector<std::unique_ptr<emulator_detail::Barrier>> warpgroups;
    };
    std::vector<std::unique_ptr<Block>> blocks;
    for (unsigned r = 0; r < cluster; ++r) blocks.push_back(std::make_unique<Block>(threads));
    emulator_detail::Barrier cluster_barrier(all), cluster_done(all);
    std::vector<std::thread> workers;
    for (int i = 0; i < all; ++i)
      workers.emplace_back([&, i] {
        const int rank = i / threads, t = i % threads;
        Block& b = *blocks[static_cast<size_t>(rank)];
        emulator_detail::ThreadState state{t, &b.barrier, b.warps[static_cast<size_t>(t / 32)].get(),
                                           b.warpgroups[static_cast<size_t>(t / 128)].get(),
                                           &cluster_barrier};
        emulator_detail::current = &state;
        const unsigned tx = static_cast<unsigned>(t) % block.x;
        const unsigned ty = static_cast<unsigned>(t) / block.x % block.y;
        const unsigned tz = static_cast<unsigned>(t) / (block.x * block.y);
        long long round = 0;
        for (unsigned bz = 0; bz < grid.z; ++bz)
          for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = static_cast<unsigned>(rank); bx < grid.x; bx += cluster) {
              set_thread(tx, ty, tz, bx, by, bz, rank, round++);
              reinterpret_cast<Kernel>(fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8],
                                           a[9], a[10], a[11]);
              __atomic_add_fetch(&exited[rank], 1, __ATOMIC_SEQ_CST);
              // The blocks' shared memory is the next cluster's: every thread finishes first.
              cluster_done.wait("the end of a block");
            }
        emulator_detail::current = nullptr;
      });
    for (std::thread& w : workers) w.join();
    return "";
  }

 private:
  CudaEmulator() = default;
  std::filesystem::path dir_;
  void* lib_ = nullptr;
};

}  // namespace loom::testing
