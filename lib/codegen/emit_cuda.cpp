// emit_cuda: flattened loop IR -> CUDA C++ source, one extern "C" __global__ kernel per func.
// The source is meant to be read: loops stay loops, names stay the IR's names where they can.

#include "codegen/emit_cuda.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "codegen/scoped_bind.hpp"
#include "loom/core/ndarray.hpp"
#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/ir/structural.hpp"
#include "loom/ir/visitor.hpp"

namespace loom::codegen {
namespace {

// Allocations up to this many bytes with a constant size are arrays in registers/local memory;
// larger or symbolic ones come from the device heap (malloc), which default schedules need only
// for intermediates of multi-stage tasks.
constexpr int64_t kMaxLocalArrayBytes = 4096;

// Helpers every kernel may use; the f16/bf16 ones are added when those types appear.
constexpr const char* kPreamble =
    R"(template <typename T> __device__ __forceinline__ T loom_min(T a, T b) { return b < a ? b : a; }
template <typename T> __device__ __forceinline__ T loom_max(T a, T b) { return a < b ? b : a; }
// N consecutive elements read or written at once (one vector access), N * sizeof(T) aligned.
template <typename T, int N> struct alignas(sizeof(T) * N) loom_vec { T v[N]; };
)";
constexpr const char* kF16Preamble = R"(#include <cuda_fp16.h>
__device__ __forceinline__ float loom_round_f16(float x) { return __half2float(__float2half_rn(x)); }
)";
constexpr const char* kBF16Preamble = R"(#include <cuda_bf16.h>
__device__ __forceinline__ float loom_round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
)";

// Static __shared__ arrays of a kernel are limited to 48 KiB; more is dynamic shared memory.
constexpr int64_t kStaticSharedBytes = 48 * 1024;
// The dynamic shared memory of a kernel, as an array of bytes. The test emulator defines its own.
constexpr const char* kDynamicSharedPreamble = R"(#ifndef LOOM_DYNAMIC_SHARED
#define LOOM_DYNAMIC_SHARED(name) extern __shared__ __align__(1024) unsigned char name[]
#endif
)";

// The tensor-core and cp.async intrinsics (ir::Call) as inline PTX. Outside NVRTC's device pass
// (__CUDA_ARCH__ undefined) the includer provides them: the test emulator does.
constexpr const char* kTensorCorePreamble = R"(#if defined(__CUDA_ARCH__)
template <typename T> __device__ __forceinline__ void loom_ldmatrix_x4(T* dst, const T* src) {
  unsigned* d = reinterpret_cast<unsigned*>(dst);
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(src));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(a));
}
template <typename T> __device__ __forceinline__ void loom_ldmatrix_x4_trans(T* dst, const T* src) {
  unsigned* d = reinterpret_cast<unsigned*>(dst);
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(src));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(a));
}
#define LOOM_MMA_M16N8K16(suffix, type, ptx_type) \
  __device__ __forceinline__ void loom_mma_m16n8k16_##suffix(float* c, const type* a, const type* b) { \
    const unsigned* A = reinterpret_cast<const unsigned*>(a); \
    const unsigned* B = reinterpret_cast<const unsigned*>(b); \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." ptx_type "." ptx_type ".f32 " \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n" \
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) \
                 : "r"(A[0]), "r"(A[1]), "r"(A[2]), "r"(A[3]), "r"(B[0]), "r"(B[1])); \
  }
template <typename T>
__device__ __forceinline__ void loom_cp_async_16(T* dst, const T* src, long long bytes) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :: "r"(d), "l"(src), "r"(static_cast<int>(bytes)));
}
__device__ __forceinline__ void loom_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void loom_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" :: "n"(N));
}
#endif
)";

// The Hopper warpgroup intrinsics (sm_90a: wgmma, and the proxy fence that orders shared-memory
// writes before its reads). Descriptors of shared tiles with the 128-byte swizzle: start address,
// leading and stride byte offsets (all >> 4) and the swizzle mode (1 at bit 62). The fences tie
// the accumulators to the asm statements around the asynchronous products, so the compiler keeps
// its own accesses of them outside.
constexpr const char* kWgmmaPreamble = R"(#if defined(__CUDA_ARCH__)
__device__ __forceinline__ unsigned long long loom_wgmma_desc(const void* p, unsigned lbo, unsigned sbo) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  return (unsigned long long)((a & 0x3FFFF) >> 4) | ((unsigned long long)((lbo & 0x3FFFF) >> 4) << 16) |
         ((unsigned long long)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}
template <int Count> __device__ __forceinline__ void loom_wgmma_fence(float* d) {
#pragma unroll
  for (int i = 0; i < Count; ++i) asm volatile("" : "+f"(d[i]) :: "memory");
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void loom_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N, int Count> __device__ __forceinline__ void loom_wgmma_wait(float* d) {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory");
#pragma unroll
  for (int i = 0; i < Count; ++i) asm volatile("" : "+f"(d[i]) :: "memory");
}
__device__ __forceinline__ void loom_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#endif
)";

// The Hopper TMA copies and the mbarriers they complete on (sm_90), and setmaxnreg (sm_90a).
// A tensor map is a kernel parameter of 128 bytes, __grid_constant__ so that its address is its
// place in parameter memory, which the copy reads it from. The test emulator declares such
// parameters its own way (LOOM_TENSOR_MAP_PARAM) and provides the functions.
constexpr const char* kTmaPreamble = R"(struct __align__(64) loom_tensor_map { unsigned long long bytes[16]; };
#ifndef LOOM_TENSOR_MAP_PARAM
#define LOOM_TENSOR_MAP_PARAM(name) const __grid_constant__ loom_tensor_map name
#endif
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ unsigned loom_shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void loom_mbarrier_init(long long* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(loom_shared_address(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void loom_mbarrier_arrive(long long* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(loom_shared_address(bar)) : "memory");
}
__device__ __forceinline__ void loom_mbarrier_expect_tx(long long* bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
               :: "r"(loom_shared_address(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ unsigned loom_mbarrier_try_wait(unsigned a, int parity) {
  unsigned done;
  asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
               : "=r"(done) : "r"(a), "r"(parity) : "memory");
  return done;
}
// A wait that lasts 10 seconds is a protocol error (a phase that never completes): the kernel
// traps, and its launch fails, rather than hanging the device.
__device__ __forceinline__ void loom_mbarrier_wait(long long* bar, int parity) {
  const unsigned a = loom_shared_address(bar);
  if (loom_mbarrier_try_wait(a, parity)) return;
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  while (!loom_mbarrier_try_wait(a, parity)) {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    if (now - start > 10000000000ull) __trap();
  }
}
__device__ __forceinline__ void loom_tma_load_3d(void* dst, const loom_tensor_map* map, long long* bar,
                                                 int c0, int c1, int c2) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
               " [%0], [%1, {%2, %3, %4}], [%5];\n"
               :: "r"(loom_shared_address(dst)), "l"(reinterpret_cast<unsigned long long>(map)),
                  "r"(c0), "r"(c1), "r"(c2), "r"(loom_shared_address(bar)) : "memory");
}
template <int N, int Raise> __device__ __forceinline__ void loom_set_max_registers() {
  if (Raise) asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(N));
  else asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(N));
}
// Thread-block clusters: a copy written to the same offset of the shared memory of every block
// of the cluster in the mask, each completing on its own mbarrier at the barrier's offset; an
// arrival on the barrier at this one's offset in block `rank`; the cluster-wide barrier.
__device__ __forceinline__ void loom_tma_load_3d_multicast(void* dst, const loom_tensor_map* map,
                                                           long long* bar, unsigned short mask,
                                                           int c0, int c1, int c2) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
               ".multicast::cluster [%0], [%1, {%2, %3, %4}], [%5], %6;\n"
               :: "r"(loom_shared_address(dst)), "l"(reinterpret_cast<unsigned long long>(map)),
                  "r"(c0), "r"(c1), "r"(c2), "r"(loom_shared_address(bar)), "h"(mask) : "memory");
}
__device__ __forceinline__ void loom_mbarrier_arrive_cluster(long long* bar, int rank) {
  asm volatile("{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
               "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [remote];\n}\n"
               :: "r"(loom_shared_address(bar)), "r"(rank) : "memory");
}
__device__ __forceinline__ void loom_fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void loom_cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}
#endif
// A cluster kernel's size where the includer wants it (the test emulator: as a symbol).
#ifndef LOOM_CLUSTER_SIZE
#define LOOM_CLUSTER_SIZE(kernel, n)
#endif
)";

// loom_wgmma_m64n<n>k16_<type>: one wgmma.mma_async of the given N, A K-major and B N-major
// (transposed), both with the 128-byte swizzle, f32 accumulators added to.
std::string wgmma_function(int64_t n, const std::string& type) {
  const char* storage = type == "bf16" ? "__nv_bfloat16" : "__half";
  const int64_t regs = n / 2;
  std::string list, outputs;
  for (int64_t i = 0; i < regs; ++i) {
    list += str_cat(i ? ", " : "", "%", i);
    outputs += str_cat(i ? ", " : "", "\"+f\"(d[", i, "])");
  }
  return str_cat(
      "template <unsigned ASBO, unsigned BLBO, unsigned BSBO>\n__device__ __forceinline__ void "
      "loom_wgmma_m64n", n, "k16_", type, "(float* d, const ", storage, "* a, const ", storage,
      "* b) {\n  const unsigned long long da = loom_wgmma_desc(a, 16, ASBO), db = "
      "loom_wgmma_desc(b, BLBO, BSBO);\n  asm volatile(\"{\\n.reg .pred p;\\nsetp.ne.b32 p, %",
      regs + 2, ", 0;\\nwgmma.mma_async.sync.aligned.m64n", n, "k16.f32.", type, ".", type, " {",
      list, "}, %", regs, ", %", regs + 1, ", p, 1, 1, 0, 1;\\n}\\n\"\n    : ", outputs,
      "\n    : \"l\"(da), \"l\"(db), \"r\"(1));\n}\n");
}

// "(a < b)" -> "a < b" where the outer parentheses enclose the whole text (if conditions).
std::string strip_parens(const std::string& s) {
  if (s.size() < 2 || s.front() != '(' || s.back() != ')') return s;
  int depth = 0;
  for (size_t i = 0; i + 1 < s.size(); ++i) {
    depth += s[i] == '(' ? 1 : s[i] == ')' ? -1 : 0;
    if (depth == 0) return s;  // the first parenthesis closes before the end
  }
  return s.substr(1, s.size() - 2);
}

bool is_reserved(const std::string& name) {
  static const std::set<std::string> kReserved = {
      "auto", "bool", "break", "case", "char", "const", "continue", "default", "do", "double",
      "else", "enum", "extern", "false", "float", "for", "goto", "if", "inline", "int", "long",
      "new", "delete", "register", "restrict", "return", "short", "signed", "sizeof", "static",
      "struct", "switch", "template", "this", "true", "typedef", "union", "unsigned", "void",
      "volatile", "while", "class", "namespace", "operator", "private", "public", "protected",
      "virtual", "using", "typename", "friend", "explicit", "mutable", "noexcept", "nullptr",
      "constexpr", "decltype", "static_assert", "thread_local", "alignas", "alignof", "try",
      "catch", "throw", "asm", "and", "or", "not", "xor", "bitand", "bitor", "compl", "threadIdx",
      "blockIdx", "blockDim", "gridDim", "warpSize", "min", "max", "abs", "exp", "log", "sqrt",
      "pow", "fma", "floor", "ceil", "round", "malloc", "free", "half", "main", "std", "assert",
      "printf",
      // Functions the generated code calls: a variable of that name would shadow them.
      "expf", "logf", "sqrtf", "rsqrtf", "tanhf", "erff", "fabsf", "floorf", "ceilf", "roundf",
      "powf", "fmaf", "fmodf", "fminf", "fmaxf", "llabs", "sinf", "cosf", "exp2f"};
  return kReserved.count(name) > 0 || name.rfind("loom_", 0) == 0 || name.rfind("__", 0) == 0 ||
         (name.size() > 1 && name[0] == '_' && name[1] >= 'A' && name[1] <= 'Z');
}

std::string sanitize(const std::string& name, const char* fallback) {
  std::string out;
  for (char c : name) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    out += ok ? c : '_';
  }
  if (out.empty()) out = fallback;
  if (out[0] >= '0' && out[0] <= '9') out = "v" + out;
  return out;
}

// Type of a scalar element in memory.
std::string memory_type(DType t) {
  switch (t.code()) {
    case DTypeCode::kF32:
      return "float";
    case DTypeCode::kF16:
      return "__half";
    case DTypeCode::kBF16:
      return "__nv_bfloat16";
    case DTypeCode::kI8:
      return "signed char";
    case DTypeCode::kI32:
      return "int";
    case DTypeCode::kI64:
      return "long long";
    case DTypeCode::kBool:
      return "unsigned char";
  }
  return "?";
}

// The preamble's loom_vec of `lanes` elements of t in memory: one vector load or store.
std::string vector_type(DType t, int lanes) {
  return str_cat("loom_vec<", memory_type(t), ", ", lanes, ">");
}

// Type of a scalar value in registers: f16/bf16 are computed in float (as the CPU back end does).
std::string register_type(DType t) {
  if (t.is_float()) return "float";
  if (t.is_bool()) return "bool";
  return memory_type(t);
}

std::string float_literal(double v) {
  if (std::isnan(v)) return "__int_as_float(0x7fc00000)";
  if (std::isinf(v)) return v > 0 ? "__int_as_float(0x7f800000)" : "__int_as_float(0xff800000)";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(static_cast<float>(v)));
  std::string s = buf;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  s += "f";
  return v < 0 ? "(" + s + ")" : s;
}

std::string int_literal(DType t, int64_t v) {
  if (t.is_bool()) return v ? "true" : "false";
  std::string digits;
  if (t.code() == DTypeCode::kI64) {
    if (v == std::numeric_limits<int64_t>::min()) return "(-9223372036854775807LL - 1)";
    digits = std::to_string(v) + "LL";
  } else if (t.code() == DTypeCode::kI32) {
    if (v == std::numeric_limits<int32_t>::min()) return "(-2147483647 - 1)";
    digits = std::to_string(v);
  } else {
    return "((signed char)" + std::to_string(v) + ")";
  }
  return v < 0 ? "(" + digits + ")" : digits;
}

// The launch extent of each GPU axis, gathered before emission.
struct LaunchAxes {
  std::array<ir::Expr, 3> grid, block;
};

class GpuLoopCollector : public ir::IRVisitor {
 public:
  LaunchAxes axes;
  absl::Status status;

 protected:
  void visit_for(const ir::For* op) override {
    bool block = op->for_kind == ir::ForKind::kGpuBlock;
    if (block || op->for_kind == ir::ForKind::kGpuThread) {
      if (op->gpu_axis < 0 || op->gpu_axis > 2) {
        if (status.ok())
          status =
              absl::InvalidArgumentError(str_cat("GPU loop over '", op->var.name(), "' has axis ",
                                                 op->gpu_axis, "; axes are 0, 1, 2 (x, y, z)"));
      } else {
        ir::Expr& slot = (block ? axes.grid : axes.block)[static_cast<size_t>(op->gpu_axis)];
        if (!slot.defined())
          slot = op->extent;
        else if (!ir::structural_equal(slot, op->extent))
          slot = ir::simplify(ir::max(slot, op->extent));
      }
    }
    IRVisitor::visit_for(op);
  }
};

// What the kernels of a module need from the preamble.
struct PreambleNeeds {
  bool f16 = false, bf16 = false, tensor_cores = false, dynamic_shared = false, wgmma = false,
       tma = false;
  std::set<std::pair<int64_t, std::string>> wgmma_shapes;  // (N, f16 or bf16)
};

// Shared buffers stored with a swizzle start 1024-aligned (the 128-byte swizzle wgmma and TMA
// apply repeats every 1024 bytes and is computed from the address); others 16-aligned.
int64_t shared_alignment(const ir::BufferNode* b) {
  const std::vector<LayoutStep>& steps = b->layout.steps();
  return std::any_of(steps.begin(), steps.end(),
                     [](const LayoutStep& s) { return s.kind == LayoutStep::Kind::kSwizzle; })
             ? 1024
             : 16;
}
int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The largest power of two, up to 2^20, that provably divides integer expression e; 1 when
// nothing is known. A vector access at index e is aligned to that many elements.
int64_t known_power_of_two(const ir::Expr& e) {
  constexpr int64_t kMax = int64_t{1} << 20;
  if (std::optional<int64_t> c = ir::as_const_int(e)) {
    const uint64_t u = static_cast<uint64_t>(*c);
    return u == 0 ? kMax : static_cast<int64_t>(std::min<uint64_t>(kMax, u & (~u + 1)));
  }
  if (!e.type().is_int() || !e.type().is_scalar()) return 1;
  switch (e.kind()) {
    case ir::ExprKind::kAdd:
    case ir::ExprKind::kSub:
    case ir::ExprKind::kMin:
    case ir::ExprKind::kMax:
    case ir::ExprKind::kMod: {  // a % b is a - b * (a / b)
      ir::BinaryView v = ir::binary_operands(e);
      return std::min(known_power_of_two(*v.a), known_power_of_two(*v.b));
    }
    case ir::ExprKind::kMul: {
      ir::BinaryView v = ir::binary_operands(e);
      return std::min(kMax, known_power_of_two(*v.a) * known_power_of_two(*v.b));
    }
    case ir::ExprKind::kSelect: {
      const auto* op = e.as<ir::Select>();
      return std::min(known_power_of_two(op->true_value), known_power_of_two(op->false_value));
    }
    case ir::ExprKind::kCast: {  // to an integer of 32 bits or more: the low bits stay
      const ir::Expr& v = e.as<ir::Cast>()->value;
      return e.type().bytes() >= 4 ? known_power_of_two(v) : 1;
    }
    default:
      return 1;
  }
}

// v without its outer call to fn when v is exactly one call fn(...); else v.
std::string strip_call(const std::string& v, const std::string& fn) {
  const std::string open = fn + "(";
  if (v.size() <= open.size() || v.compare(0, open.size(), open) != 0) return v;
  int depth = 0;
  for (size_t i = open.size() - 1; i < v.size(); ++i) {
    if (v[i] == '(') ++depth;
    if (v[i] == ')' && --depth == 0)
      return i + 1 == v.size() ? v.substr(open.size(), v.size() - open.size() - 1) : v;
  }
  return v;
}

// The vector loads of an expression that run whenever it is evaluated: not under a select, a
// short-circuit && or ||, or a let, nor arguments that stand for addresses.
class UnconditionalVectorLoads : public ir::IRVisitor {
 public:
  std::vector<const ir::Load*> loads;

 protected:
  void visit_load(const ir::Load* op) override {
    if (op->type.is_vector()) loads.push_back(op);
    ir::IRVisitor::visit_load(op);
  }
  void visit_binary(const ir::ExprNode* op, const ir::Expr& a, const ir::Expr& b) override {
    if (op->kind != ir::ExprKind::kAnd && op->kind != ir::ExprKind::kOr)
      ir::IRVisitor::visit_binary(op, a, b);
  }
  void visit_select(const ir::Select* op) override { visit(op->cond); }
  void visit_let(const ir::Let*) override {}
  void visit_call(const ir::Call* op) override {
    if (!ir::Call::takes_addresses(op->name)) ir::IRVisitor::visit_call(op);
  }
};

// The bytes of a kernel's constant-size shared buffers, each rounded up to 16.
class SharedBytes : public ir::IRVisitor {
 public:
  int64_t bytes = 0;

 protected:
  void visit_allocate(const ir::Allocate* op) override {
    const ir::BufferNode* b = op->buffer.get();
    if (b->scope == ir::MemoryScope::kShared) {
      ir::Expr size = b->layout.physical_size();
      std::optional<int64_t> n = size.defined() ? ir::as_const_int(ir::simplify(size)) : std::nullopt;
      if (n && *n > 0) {
        const int64_t size = *n * b->dtype.bytes();
        bytes = round_up(bytes, shared_alignment(b)) + round_up(size, 16);
      }
    }
    IRVisitor::visit_allocate(op);
  }
};

// What a kernel declares for its signature: its cluster size (ir::Call cluster_dims, 1 when it
// declares none) and the blocks an SM its launch bounds promise (min_blocks_per_sm, 0: none).
class KernelDeclarations : public ir::IRVisitor {
 public:
  int64_t cluster = 1;
  int64_t min_blocks_per_sm = 0;

  static bool is_declaration(const ir::Call* op) {
    return op && (op->name == "cluster_dims" || op->name == "min_blocks_per_sm");
  }

 protected:
  void visit_call(const ir::Call* op) override {
    if (op->name == "cluster_dims") cluster = ir::as_const_int(op->args[0]).value_or(1);
    if (op->name == "min_blocks_per_sm")
      min_blocks_per_sm = ir::as_const_int(op->args[0]).value_or(0);
    IRVisitor::visit_call(op);
  }
};

class StoredBuffers : public ir::IRVisitor {
 public:
  std::set<const ir::BufferNode*> stored;

 protected:
  void visit_store(const ir::Store* op) override {
    stored.insert(op->buffer.get());
    IRVisitor::visit_store(op);
  }
};

class FuncEmitter {
 public:
  // canonical: every C name from its fallback alone ("buf", "v", ...), none from the IR's names,
  // so that funcs that differ in names only emit the same code.
  explicit FuncEmitter(PreambleNeeds* needs, bool canonical = false)
      : needs_(needs), canonical_(canonical) {}

  absl::Status emit_func(const ir::Func& f, const std::string& symbol,
                         runtime::cuda::KernelInfo* info);
  std::string code() const { return globals_ + os_.str(); }

 private:
  struct VarBinding {
    std::string name;
    int lanes;
  };
  // Inclusive bounds of an integer value.
  struct Range {
    int64_t lo, hi;
  };
  struct BufferBinding {
    std::string name;
    DType dtype;
    // Bytes that the address of element 0 is known to be a multiple of; 0: not addressed as
    // vectors (arrays meant for registers).
    int64_t alignment = 0;
  };

  using VarMap = std::map<const ir::VarNode*, VarBinding>;
  using BufferMap = std::map<const ir::BufferNode*, BufferBinding>;

  void fail(absl::Status s) {
    if (status_.ok()) status_ = std::move(s);
  }
  std::string fail_expr(absl::Status s) {
    fail(std::move(s));
    return "0";
  }
  // A C name not used before in this kernel, close to the IR's name.
  std::string fresh(const std::string& base, const char* fallback) {
    std::string name = sanitize(canonical_ ? std::string() : base, fallback);
    if (is_reserved(name)) name += "_";
    std::string candidate = name;
    for (int n = 1; used_.count(candidate); ++n) candidate = name + "_" + std::to_string(n);
    used_.insert(candidate);
    return candidate;
  }
  void note_type(DType t) {
    if (t.code() == DTypeCode::kF16) needs_->f16 = true;
    if (t.code() == DTypeCode::kBF16) needs_->bf16 = true;
  }
  // Rounds a float register to the precision of t (f16/bf16); f32 and others unchanged.
  std::string round_to(DType t, const std::string& v) {
    note_type(t);
    if (t.code() == DTypeCode::kF16) return "loom_round_f16(" + v + ")";
    if (t.code() == DTypeCode::kBF16) return "loom_round_bf16(" + v + ")";
    return v;
  }
  std::string indent() const { return std::string(static_cast<size_t>(2 * depth_), ' '); }
  void line(const std::string& s) { os_ << indent() << s << "\n"; }

  // ---- expressions: the value of lane `lane` of e -------------------------------------------
  std::string expr(const ir::Expr& e, int lane);
  // The range of i64 index arithmetic e (integers, variables of known range, + - * / % min max
  // select) when every step of it stays within int32; nullopt otherwise. Such expressions are
  // emitted in int: 64-bit integer arithmetic takes several instructions on a GPU.
  std::optional<Range> narrow_range(const ir::Expr& e);
  // The range of an i64 variable being declared with value (or bounds) r, bound when it fits.
  bool bind_range(const ir::VarNode* v, std::optional<Range> r) {
    if (!r || r->lo < kIntMin || r->hi > kIntMax) return false;
    ranges_[v] = *r;
    return true;
  }
  std::string binary(const ir::Expr& e, int lane);
  std::string cast(DType from, DType to, const std::string& v);
  std::string call(const ir::Expr& e, const ir::Call* op, int lane);
  std::string memory_intrinsic(const ir::Call* op);
  // A tma_load_3d: the copy through the kernel's tensor map of its source and box (added to
  // tensor_maps_ and the kernel's params on first use).
  std::string tma_load(const ir::Call* op);
  std::string load(const ir::Expr& e, const ir::Load* op, int lane);
  const BufferBinding* find_buffer(const ir::BufferNode* node, const char* what);
  // The ramp of an access to buf at `index` that is one aligned vector access: consecutive
  // elements (stride 1, a power-of-two count, at most 16 bytes) from an index provably a multiple
  // of their count, in global or shared memory; null otherwise.
  static const ir::Ramp* vector_access(const BufferBinding& buf, const ir::Expr& index);
  // Reads each vector load of `value` that vector_access allows as one vector into a local,
  // which load() then takes its lanes from (until vector_loads_ is cleared).
  void read_vector_loads(const ir::Expr& value);

  // ---- statements ---------------------------------------------------------------------------
  void stmt(const ir::Stmt& s);
  void for_loop(const ir::For* op);
  void store(const ir::Store* op);
  void allocate(const ir::Allocate* op);

  std::ostringstream os_;
  int depth_ = 1;
  PreambleNeeds* needs_;
  // Shared buffers are slices of dynamic shared memory (their total passes the static limit, or
  // the kernel runs in clusters): the next free offset.
  bool dynamic_shared_ = false;
  int64_t shared_offset_ = 0;
  std::set<std::string> used_;
  bool canonical_ = false;
  VarMap vars_;
  BufferMap buffers_;
  // Ranges of the i64 variables in scope that fit int32, and what narrow_range found per node.
  static constexpr int64_t kIntMin = -2147483647, kIntMax = 2147483647;
  std::map<const ir::VarNode*, Range> ranges_;
  std::map<const ir::ExprNode*, std::optional<Range>> narrow_memo_;
  std::map<const ir::Load*, std::string> vector_loads_;  // read_vector_loads' locals
  bool narrow_ = false;  // emitting an i64 expression in int
  bool widen_operand_ = false;  // the next expression is an operand of 64-bit arithmetic
  std::set<const ir::VarNode*> params_;
  // Buffer params by position among the func's buffer params; the tensor maps used so far.
  std::map<const ir::BufferNode*, size_t> buffer_position_;
  struct TensorMapUse {
    const ir::BufferNode* buffer;
    std::vector<int64_t> box;
    std::string name;
  };
  std::vector<TensorMapUse> tensor_maps_;
  bool shifts_registers_ = false;  // the kernel calls set_max_registers (setmaxnreg)
  int64_t cluster_ = 1;            // blocks per cluster (cluster_dims)
  LaunchAxes launch_;
  bool bound_[2][3] = {};  // GPU axes bound by enclosing loops: [block/thread][axis]
  std::string symbol_;     // the kernel's
  std::string globals_;    // module-scope arrays of the kernel (before its definition)
  absl::Status status_;
};

// ---- expressions -----------------------------------------------------------------------------

std::string FuncEmitter::expr(const ir::Expr& e, int lane) {
  if (!e.defined())
    return fail_expr(absl::InvalidArgumentError("undefined expression in a kernel"));
  note_type(e.type());
  if (e.type().is_scalar()) lane = 0;
  // An i64 expression whose every step fits int32 is emitted in int; the conditions of its
  // selects are expressions of their own.
  // An operand of 64-bit arithmetic emitted in int is widened first (two int operands would
  // multiply in int).
  const bool widen = widen_operand_;
  widen_operand_ = false;
  if (narrow_ != (e.type() == DType::i64() && (narrow_ || narrow_range(e)))) {
    narrow_ = !narrow_;
    std::string r = expr(e, lane);
    narrow_ = !narrow_;
    return widen && !narrow_ ? "((long long)" + r + ")" : r;
  }
  switch (e.kind()) {
    case ir::ExprKind::kIntImm:
      return int_literal(narrow_ ? DType::i32() : e.type(), e.as<ir::IntImm>()->value);
    case ir::ExprKind::kFloatImm: {
      double v = e.as<ir::FloatImm>()->value;
      // Constants of f16/bf16 are the nearest value of that type, held in a float.
      if (e.type().code() == DTypeCode::kF16) v = f16_to_f32(f32_to_f16(static_cast<float>(v)));
      if (e.type().code() == DTypeCode::kBF16) v = bf16_to_f32(f32_to_bf16(static_cast<float>(v)));
      return float_literal(v);
    }
    case ir::ExprKind::kVar: {
      const auto* op = e.as<ir::VarNode>();
      auto it = vars_.find(op);
      if (it == vars_.end())
        return fail_expr(
            absl::InvalidArgumentError(str_cat("variable '", op->name,
                                               "' is used outside the loop, let or parameter that "
                                               "defines it")));
      if (it->second.lanes > 1) return str_cat(it->second.name, "[", lane, "]");
      // An i64 variable is declared int exactly when its range is known, which is when an
      // expression using it may be emitted in int (expr's entry widens it in 64-bit arithmetic).
      return it->second.name;
    }
    case ir::ExprKind::kNot:
      return "(!" + expr(e.as<ir::Not>()->a, lane) + ")";
    case ir::ExprKind::kSelect: {
      const auto* op = e.as<ir::Select>();
      return "(" + expr(op->cond, lane) + " ? " + expr(op->true_value, lane) + " : " +
             expr(op->false_value, lane) + ")";
    }
    case ir::ExprKind::kCast: {
      const auto* op = e.as<ir::Cast>();
      return cast(op->value.type().element_of(), e.type().element_of(), expr(op->value, lane));
    }
    case ir::ExprKind::kLoad:
      return load(e, e.as<ir::Load>(), lane);
    case ir::ExprKind::kCall:
      return call(e, e.as<ir::Call>(), lane);
    case ir::ExprKind::kRamp: {
      const auto* op = e.as<ir::Ramp>();
      DType t = op->base.type();
      std::string base = expr(op->base, 0);
      if (lane == 0) return base;
      if (t.is_bool())
        return fail_expr(absl::InvalidArgumentError("Ramp of bool is not supported"));
      if (t.is_float())
        return round_to(t, str_cat("(", base, " + ", expr(op->stride, 0), " * ", lane, ".0f)"));
      if (ir::is_const_int(op->stride, 1)) return str_cat("(", base, " + ", lane, ")");
      return str_cat("(", base, " + ", expr(op->stride, 0), " * ", lane, ")");
    }
    case ir::ExprKind::kBroadcast:
      return expr(e.as<ir::Broadcast>()->value, 0);
    case ir::ExprKind::kLet: {
      // A let inside an expression is an immediately called lambda; the variable holds this
      // lane's value.
      const auto* op = e.as<ir::Let>();
      std::string value = expr(op->value, lane);
      std::string name = fresh(op->var.name(), "v");
      ScopedBind<VarMap> bind(vars_, op->var.node(), VarBinding{name, 1});
      std::string body = expr(op->body, lane);
      return str_cat("([&]() -> ", register_type(e.type()), " { const ",
                     register_type(op->value.type()), " ", name, " = ", value, "; return ", body,
                     "; })()");
    }
    case ir::ExprKind::kReduce:
      return fail_expr(absl::InvalidArgumentError(
          "Reduce node reached the CUDA code generator; lower reductions to accumulator loops "
          "first: " +
          ir::to_string(e)));
    default:
      return binary(e, lane);
  }
}

std::optional<FuncEmitter::Range> FuncEmitter::narrow_range(const ir::Expr& e) {
  if (e.type() != DType::i64()) return std::nullopt;
  auto memo = narrow_memo_.find(e.get());
  if (memo != narrow_memo_.end()) return memo->second;
  using Wide = __int128;
  auto fits = [](Wide lo, Wide hi) -> std::optional<Range> {
    if (lo < kIntMin || hi > kIntMax) return std::nullopt;
    return Range{static_cast<int64_t>(lo), static_cast<int64_t>(hi)};
  };
  std::optional<Range> r;
  switch (e.kind()) {
    case ir::ExprKind::kIntImm: {
      const int64_t v = e.as<ir::IntImm>()->value;
      r = fits(v, v);
      break;
    }
    case ir::ExprKind::kVar: {
      auto it = ranges_.find(e.as<ir::VarNode>());
      if (it != ranges_.end()) r = it->second;
      break;
    }
    case ir::ExprKind::kSelect: {
      const auto* op = e.as<ir::Select>();
      std::optional<Range> a = narrow_range(op->true_value), b = narrow_range(op->false_value);
      if (a && b) r = Range{std::min(a->lo, b->lo), std::max(a->hi, b->hi)};
      break;
    }
    case ir::ExprKind::kAdd: case ir::ExprKind::kSub: case ir::ExprKind::kMul:
    case ir::ExprKind::kDiv: case ir::ExprKind::kMod: case ir::ExprKind::kMin:
    case ir::ExprKind::kMax: {
      ir::BinaryView operands = ir::binary_operands(e);
      std::optional<Range> a = narrow_range(*operands.a), b = narrow_range(*operands.b);
      if (!a || !b) break;
      const Wide alo = a->lo, ahi = a->hi, blo = b->lo, bhi = b->hi;
      switch (e.kind()) {
        case ir::ExprKind::kAdd:
          r = fits(alo + blo, ahi + bhi);
          break;
        case ir::ExprKind::kSub:
          r = fits(alo - bhi, ahi - blo);
          break;
        case ir::ExprKind::kMul: {
          const Wide p[] = {alo * blo, alo * bhi, ahi * blo, ahi * bhi};
          r = fits(*std::min_element(p, p + 4), *std::max_element(p, p + 4));
          break;
        }
        case ir::ExprKind::kDiv:
          // C division truncates; by a positive divisor it is monotonic in both operands.
          if (blo > 0) {
            const Wide q[] = {alo / blo, alo / bhi, ahi / blo, ahi / bhi};
            r = fits(*std::min_element(q, q + 4), *std::max_element(q, q + 4));
          }
          break;
        case ir::ExprKind::kMod:
          if (blo > 0) r = fits(alo >= 0 ? 0 : -(bhi - 1), bhi - 1);
          break;
        case ir::ExprKind::kMin:
          r = fits(std::min(alo, blo), std::min(ahi, bhi));
          break;
        default:  // kMax
          r = fits(std::max(alo, blo), std::max(ahi, bhi));
          break;
      }
      break;
    }
    case ir::ExprKind::kCall: {
      // bit_xor of non-negative operands below 2^b is below 2^b.
      const auto* op = e.as<ir::Call>();
      if (op->name != "bit_xor") break;
      std::optional<Range> a = narrow_range(op->args[0]), b = narrow_range(op->args[1]);
      if (!a || !b || a->lo < 0 || b->lo < 0) break;
      Wide below = 1;
      while (below <= std::max(a->hi, b->hi)) below *= 2;
      r = fits(0, below - 1);
      break;
    }
    default:
      break;
  }
  narrow_memo_[e.get()] = r;
  return r;
}

std::string FuncEmitter::binary(const ir::Expr& e, int lane) {
  using K = ir::ExprKind;
  ir::BinaryView operands = ir::binary_operands(e);
  DType t = operands.a->type().element_of();
  K kind = e.kind();
  const bool wide_arithmetic = !narrow_ && t == DType::i64() && !ir::is_comparison(kind);
  widen_operand_ = wide_arithmetic;
  std::string a = expr(*operands.a, lane);
  widen_operand_ = wide_arithmetic;
  std::string b = expr(*operands.b, lane);
  auto infix = [&](const char* op) { return "(" + a + " " + op + " " + b + ")"; };
  auto unsupported = [&] {
    return fail_expr(absl::InvalidArgumentError(
        str_cat(ir::expr_kind_name(kind), " of ", t, " is not supported")));
  };
  switch (kind) {
    case K::kEQ:
      return infix("==");
    case K::kNE:
      return infix("!=");  // unordered for floats, as in the IR
    case K::kLT:
      return infix("<");
    case K::kLE:
      return infix("<=");
    case K::kGT:
      return infix(">");
    case K::kGE:
      return infix(">=");
    default:
      break;
  }
  if (t.is_float()) {
    std::string r;
    switch (kind) {
      case K::kAdd:
        r = infix("+");
        break;
      case K::kSub:
        r = infix("-");
        break;
      case K::kMul:
        r = infix("*");
        break;
      case K::kDiv:
        r = infix("/");
        break;
      case K::kMod:
        r = "fmodf(" + a + ", " + b + ")";
        break;
      case K::kMin:
        r = "fminf(" + a + ", " + b + ")";
        break;  // NaN-ignoring, like minnum
      case K::kMax:
        r = "fmaxf(" + a + ", " + b + ")";
        break;
      default:
        return unsupported();
    }
    return round_to(t, r);
  }
  if (t.is_bool()) {
    switch (kind) {
      case K::kAnd:
      case K::kMin:
        return infix("&&");
      case K::kOr:
      case K::kMax:
        return infix("||");
      default:
        return unsupported();
    }
  }
  // Integers are signed; / and % truncate toward zero in C as in the IR. i8 results wrap back
  // to 8 bits (C would compute them in int).
  std::string type = memory_type(t);
  std::string r;
  switch (kind) {
    case K::kAdd:
      r = infix("+");
      break;
    case K::kSub:
      r = infix("-");
      break;
    case K::kMul:
      r = infix("*");
      break;
    case K::kDiv:
      r = infix("/");
      break;
    case K::kMod:
      r = infix("%");
      break;
    case K::kMin:
      return "loom_min<" + (narrow_ ? std::string("int") : type) + ">(" + a + ", " + b + ")";
    case K::kMax:
      return "loom_max<" + (narrow_ ? std::string("int") : type) + ">(" + a + ", " + b + ")";
    default:
      return unsupported();
  }
  if (t.code() == DTypeCode::kI8) return "((signed char)" + r + ")";
  return r;
}

std::string FuncEmitter::cast(DType from, DType to, const std::string& v) {
  if (from == to) return v;
  if (to.is_bool()) return "(" + v + (from.is_float() ? " != 0.0f)" : " != 0)");
  if (to.is_float()) {
    std::string f = from.is_float() ? v : "((float)" + v + ")";
    return round_to(to, f);
  }
  return "((" + memory_type(to) + ")" + v + ")";
}

std::string FuncEmitter::call(const ir::Expr& e, const ir::Call* op, int lane) {
  if (ir::Call::takes_addresses(op->name)) return memory_intrinsic(op);
  if (op->name == "grid_blocks") return "((long long)gridDim.x)";
  DType t = e.type().element_of();
  std::vector<std::string> args;
  for (const ir::Expr& a : op->args) args.push_back(expr(a, lane));
  const std::string& name = op->name;
  auto unknown = [&] {
    return fail_expr(absl::InvalidArgumentError(str_cat(
        "intrinsic ", name, " of ", t, " with ", args.size(), " arguments is not supported")));
  };
  if (name == "reinterpret_f32" && args.size() == 1) return "__int_as_float(" + args[0] + ")";
  if (name == "reinterpret_i32" && args.size() == 1) return "__float_as_int(" + args[0] + ")";
  if (name == "shfl_xor_sync" && args.size() == 2)
    return "__shfl_xor_sync(0xffffffffu, " + args[0] + ", (int)" + args[1] + ")";
  if (t.is_int()) {
    if (name == "bit_xor" && args.size() == 2) return "(" + args[0] + " ^ " + args[1] + ")";
    if (name != "abs" || args.size() != 1) return unknown();
    if (t.code() == DTypeCode::kI64) return "llabs(" + args[0] + ")";
    if (t.code() == DTypeCode::kI32) return "abs(" + args[0] + ")";
    return "((signed char)abs(" + args[0] + "))";
  }
  if (!t.is_float()) return unknown();
  static const std::map<std::string, std::pair<const char*, size_t>> kFloatFunctions = {
      {"exp", {"expf", 1}},     {"log", {"logf", 1}},     {"sqrt", {"sqrtf", 1}},
      {"rsqrt", {"rsqrtf", 1}}, {"tanh", {"tanhf", 1}},   {"erf", {"erff", 1}},
      {"abs", {"fabsf", 1}},    {"floor", {"floorf", 1}}, {"ceil", {"ceilf", 1}},
      {"round", {"roundf", 1}}, {"pow", {"powf", 2}},     {"fma", {"fmaf", 3}}};
  auto it = kFloatFunctions.find(name);
  if (it == kFloatFunctions.end() || it->second.second != args.size()) return unknown();
  std::string r = std::string(it->second.first) + "(";
  for (size_t i = 0; i < args.size(); ++i) r += (i ? ", " : "") + args[i];
  return round_to(t, r + ")");
}

// The tensor-core, cp.async and atomic intrinsics: calls of the preamble's loom_* functions (or
// CUDA's atomicAdd and __threadfence) with the addresses of their Load arguments.
std::string FuncEmitter::memory_intrinsic(const ir::Call* op) {
  const std::string& name = op->name;
  if (name == "thread_fence") return "__threadfence()";
  if (name == "prefetch" || name == "prefetch_l1")
    return "0";  // a CPU cache hint; GPU kernels stage through shared memory
  const bool warpgroup = name.rfind("wgmma", 0) == 0 || name == "fence_proxy_async";
  const bool tma = name.rfind("mbarrier_", 0) == 0 || name.rfind("tma_load_3d", 0) == 0 ||
                   name == "set_max_registers" || name == "cluster_sync" ||
                   name == "fence_mbarrier_init";
  if (warpgroup) needs_->wgmma = true;
  else if (tma) needs_->tma = true;
  else if (name != "atomic_add_i32") needs_->tensor_cores = true;
  if (name == "set_max_registers") {
    shifts_registers_ = true;
    return str_cat("loom_set_max_registers<", ir::as_const_int(op->args[0]).value_or(0), ", ",
                   ir::as_const_int(op->args[1]).value_or(0), ">()");
  }
  if (name == "tma_load_3d" || name == "tma_load_3d_multicast") return tma_load(op);
  if (name == "cluster_sync") return "loom_cluster_sync()";
  if (name == "fence_mbarrier_init") return "loom_fence_mbarrier_init()";
  if (name == "wgmma_commit") return "loom_wgmma_commit()";
  if (name == "fence_proxy_async") return "loom_fence_proxy_async()";
  if (name == "cp_async_commit") return "loom_cp_async_commit()";
  if (name == "cp_async_wait")
    return str_cat("loom_cp_async_wait<", ir::as_const_int(op->args[0]).value_or(0), ">()");
  std::vector<std::string> args;
  for (const ir::Expr& a : op->args) {
    const auto* l = a.as<ir::Load>();
    if (!l) {
      args.push_back(expr(a, 0));
      continue;
    }
    if (l->indices.size() != 1)
      return fail_expr(absl::InvalidArgumentError(
          str_cat(name, " of buffer '", l->buffer->name, "' needs flattened IR")));
    const BufferBinding* buf = find_buffer(l->buffer.get(), name.c_str());
    if (!buf) return "0";
    note_type(buf->dtype);
    args.push_back("&" + buf->name + "[" + expr(l->indices[0], 0) + "]");
  }
  if (name == "atomic_add_i32")
    return str_cat("(*", args[0], " = atomicAdd(", args[1], ", ", args[2], "))");
  auto constant = [&](size_t i) { return ir::as_const_int(op->args[i]).value_or(0); };
  if (name == "wgmma_fence") return str_cat("loom_wgmma_fence<", constant(1), ">(", args[0], ")");
  if (name == "wgmma_wait")
    return str_cat("loom_wgmma_wait<", constant(2), ", ", constant(1), ">(", args[0], ")");
  if (name == "wgmma_m64k16") {
    const std::string in = op->args[1].type().code() == DTypeCode::kBF16 ? "bf16" : "f16";
    needs_->wgmma_shapes.insert({constant(3), in});
    return str_cat("loom_wgmma_m64n", constant(3), "k16_", in, "<", constant(4), ", ", constant(5),
                   ", ", constant(6), ">(", args[0], ", ", args[1], ", ", args[2], ")");
  }
  if (name == "mma_m16n8k16") {
    const char* in = op->args[1].type().code() == DTypeCode::kBF16 ? "bf16" : "f16";
    return str_cat("loom_mma_m16n8k16_", in, "(", args[0], ", ", args[1], ", ", args[2], ")");
  }
  std::string r = "loom_" + name + "(";
  for (size_t i = 0; i < args.size(); ++i) r += (i ? ", " : "") + args[i];
  return r + ")";
}

std::string FuncEmitter::tma_load(const ir::Call* op) {
  const auto* dst = op->args[0].as<ir::Load>();
  const auto* bar = op->args[1].as<ir::Load>();
  const ir::BufferNode* src = op->args[2].as<ir::Load>()->buffer.get();
  if (!buffer_position_.count(src))
    return fail_expr(absl::InvalidArgumentError(
        str_cat(op->name, " of buffer '", src->name, "', which is not a parameter of the func")));
  if (src->shape.size() != 3 || !src->layout.steps().empty())
    return fail_expr(absl::InvalidArgumentError(str_cat(
        op->name, " of buffer '", src->name, "': TMA copies from row-major rank-3 buffers")));
  std::vector<int64_t> box;
  for (size_t i = 6; i < 9; ++i) box.push_back(ir::as_const_int(op->args[i]).value_or(0));
  if (box[2] * src->dtype.bytes() != 128)
    return fail_expr(absl::InvalidArgumentError(
        str_cat(op->name, " of buffer '", src->name, "': the box's rows are ",
                box[2] * src->dtype.bytes(), " bytes; the 128-byte swizzle takes 128")));
  if (dst->indices.size() != 1 || bar->indices.size() != 1)
    return fail_expr(absl::InvalidArgumentError("tma_load_3d needs flattened IR"));
  const BufferBinding* d = find_buffer(dst->buffer.get(), "tma_load_3d");
  const BufferBinding* b = find_buffer(bar->buffer.get(), "tma_load_3d");
  if (!d || !b) return "0";
  std::string map;
  for (const TensorMapUse& use : tensor_maps_)
    if (use.buffer == src && use.box == box) map = use.name;
  if (map.empty()) {
    map = fresh(src->name + "_map", "map");
    tensor_maps_.push_back({src, box, map});
  }
  const bool multicast = op->name == "tma_load_3d_multicast";
  std::string r = str_cat(multicast ? "loom_tma_load_3d_multicast(&" : "loom_tma_load_3d(&",
                          d->name, "[", expr(dst->indices[0], 0), "], &", map, ", &", b->name,
                          "[", expr(bar->indices[0], 0), "]");
  if (multicast)
    r += str_cat(", (unsigned short)", ir::as_const_int(op->args[9]).value_or(0));
  for (size_t i = 6; i-- > 3;) r += ", (int)(" + expr(op->args[i], 0) + ")";  // innermost first
  return r + ")";
}

const FuncEmitter::BufferBinding* FuncEmitter::find_buffer(const ir::BufferNode* node,
                                                           const char* what) {
  auto it = buffers_.find(node);
  if (it != buffers_.end()) return &it->second;
  fail(absl::InvalidArgumentError(str_cat(what, " of buffer '", node->name,
                                          "', which is neither a parameter of the func nor "
                                          "allocated around the access")));
  return nullptr;
}

std::string FuncEmitter::load(const ir::Expr& e, const ir::Load* op, int lane) {
  if (op->indices.size() != 1)
    return fail_expr(absl::InvalidArgumentError(
        str_cat("Load of buffer '", op->buffer->name, "' has ", op->indices.size(),
                " indices; the CUDA code generator needs flattened IR (one physical element "
                "index per access): ",
                ir::to_string(e))));
  const BufferBinding* buf = find_buffer(op->buffer.get(), "Load");
  if (!buf) return "0";
  auto read = vector_loads_.find(op);
  std::string element = read != vector_loads_.end()
                            ? str_cat(read->second, ".v[", lane, "]")
                            : buf->name + "[" + expr(op->indices[0], lane) + "]";
  switch (buf->dtype.code()) {
    case DTypeCode::kF16:
      return "__half2float(" + element + ")";
    case DTypeCode::kBF16:
      return "__bfloat162float(" + element + ")";
    case DTypeCode::kBool:
      return "(" + element + " != 0)";
    default:
      return element;
  }
}

// ---- statements ------------------------------------------------------------------------------

void FuncEmitter::stmt(const ir::Stmt& s) {
  if (!s.defined() || !status_.ok()) return;
  switch (s.kind()) {
    case ir::StmtKind::kLetStmt: {
      const auto* op = s.as<ir::LetStmt>();
      DType t = op->value.type();
      std::string name = fresh(op->var.name(), "v");
      if (t == DType::i64()) {
        const std::optional<Range> r = narrow_range(op->value);
        line(str_cat("const ", r ? "int" : "long long", " ", name, " = ", expr(op->value, 0), ";"));
        bind_range(op->var.node(), r);
      } else if (t.is_scalar()) {
        line(str_cat("const ", register_type(t), " ", name, " = ", expr(op->value, 0), ";"));
      } else {
        std::string lanes;
        for (int l = 0; l < t.lanes(); ++l) lanes += (l ? ", " : "") + expr(op->value, l);
        line(str_cat("const ", register_type(t), " ", name, "[", t.lanes(), "] = {", lanes, "};"));
      }
      ScopedBind<VarMap> bind(vars_, op->var.node(), VarBinding{name, t.lanes()});
      stmt(op->body);
      ranges_.erase(op->var.node());
      return;
    }
    case ir::StmtKind::kFor:
      return for_loop(s.as<ir::For>());
    case ir::StmtKind::kStore:
      return store(s.as<ir::Store>());
    case ir::StmtKind::kSeq:
      for (const ir::Stmt& child : s.as<ir::Seq>()->stmts) stmt(child);
      return;
    case ir::StmtKind::kIfThenElse: {
      const auto* op = s.as<ir::IfThenElse>();
      if (!op->cond.type().is_scalar())
        return fail(
            absl::InvalidArgumentError("if with a vector condition: " + ir::to_string(op->cond)));
      line("if (" + strip_parens(expr(op->cond, 0)) + ") {");
      ++depth_;
      stmt(op->then_case);
      --depth_;
      if (op->else_case.defined()) {
        line("} else {");
        ++depth_;
        stmt(op->else_case);
        --depth_;
      }
      line("}");
      return;
    }
    case ir::StmtKind::kAllocate:
      return allocate(s.as<ir::Allocate>());
    case ir::StmtKind::kBarrier:
      line("__syncthreads();");
      return;
    case ir::StmtKind::kEvaluate: {
      const ir::Expr& v = s.as<ir::Evaluate>()->value;
      const auto* call = v.as<ir::Call>();
      if (KernelDeclarations::is_declaration(call)) return;  // on the kernel's signature
      for (int l = 0; l < v.type().lanes(); ++l) line("(void)" + expr(v, l) + ";");
      return;
    }
  }
}

void FuncEmitter::for_loop(const ir::For* op) {
  DType t = op->var.type();
  if (!t.is_scalar() || !t.is_int())
    return fail(absl::InvalidArgumentError(
        str_cat("loop variable '", op->var.name(), "' has type ", t, "; loops count integers")));
  // A loop whose bounds are int32 index arithmetic counts in int: constant bounds, or bounds of
  // known range (split-K's slice count for its block, min(slices left, slices per split)).
  // 64-bit loop counters make every index computed from them 64-bit, divisions included.
  std::optional<Range> min = t == DType::i64() ? narrow_range(op->min) : std::nullopt;
  std::optional<Range> extent = min ? narrow_range(op->extent) : std::nullopt;
  const bool narrow =
      min && extent &&
      bind_range(op->var.node(), Range{min->lo, min->hi + std::max<int64_t>(extent->hi, 1) - 1});
  std::string type = narrow ? "int" : memory_type(t);
  std::string name = fresh(op->var.name(), "i");
  bool block = op->for_kind == ir::ForKind::kGpuBlock;
  if (block || op->for_kind == ir::ForKind::kGpuThread) {
    // One iteration per block (thread) along the axis; the launch covers the largest extent bound
    // to the axis, so a smaller one is guarded.
    size_t axis = static_cast<size_t>(op->gpu_axis);
    bool& bound = bound_[block ? 0 : 1][axis];
    if (bound)
      return fail(absl::InvalidArgumentError(
          str_cat("loop over '", op->var.name(), "' binds ", block ? "blockIdx." : "threadIdx.",
                  "xyz"[axis], " inside another loop bound to it")));
    const ir::Expr& launch = (block ? launch_.grid : launch_.block)[axis];
    std::string index = str_cat("(", type, ")", block ? "blockIdx." : "threadIdx.", "xyz"[axis]);
    std::string value = ir::is_const_int(op->min, 0) ? index : expr(op->min, 0) + " + " + index;
    line("{");
    ++depth_;
    line(str_cat("const ", type, " ", name, " = ", value, ";"));
    bool guard = !ir::structural_equal(launch, op->extent);
    if (guard) {
      line(str_cat("if (", index, " < ", expr(op->extent, 0), ") {"));
      ++depth_;
    }
    bound = true;
    {
      ScopedBind<VarMap> bind(vars_, op->var.node(), VarBinding{name, 1});
      stmt(op->body);
    }
    bound = false;
    ranges_.erase(op->var.node());
    if (guard) {
      --depth_;
      line("}");
    }
    --depth_;
    line("}");
    return;
  }
  // Serial, unrolled, and leftover vectorized or parallel loops run in order in the thread.
  std::string lo = expr(op->min, 0);
  std::string hi =
      ir::is_const_int(op->min, 0) ? expr(op->extent, 0) : lo + " + " + expr(op->extent, 0);
  if (op->for_kind == ir::ForKind::kUnrolled) line("#pragma unroll");
  std::string end = fresh(name + "_end", "end");
  line(str_cat("for (", type, " ", name, " = ", lo, ", ", end, " = ", hi, "; ", name, " < ", end,
               "; ++", name, ") {"));
  ++depth_;
  {
    ScopedBind<VarMap> bind(vars_, op->var.node(), VarBinding{name, 1});
    stmt(op->body);
  }
  ranges_.erase(op->var.node());
  --depth_;
  line("}");
}

const ir::Ramp* FuncEmitter::vector_access(const BufferBinding& buf, const ir::Expr& index) {
  const ir::Ramp* ramp = index.as<ir::Ramp>();
  if (!ramp || !ir::is_const_int(ramp->stride, 1)) return nullptr;
  const int lanes = ramp->lanes;
  const int64_t bytes = lanes * buf.dtype.bytes();
  const bool aligned = (lanes & (lanes - 1)) == 0 && bytes <= 16 && buf.alignment >= bytes &&
                       known_power_of_two(ramp->base) >= lanes;
  return aligned ? ramp : nullptr;
}

void FuncEmitter::read_vector_loads(const ir::Expr& value) {
  UnconditionalVectorLoads found;
  found.visit(value);
  for (const ir::Load* load : found.loads) {
    if (load->indices.size() != 1 || vector_loads_.count(load)) continue;
    const BufferBinding* buf = find_buffer(load->buffer.get(), "Load");
    if (!buf) return;
    const ir::Ramp* ramp = vector_access(*buf, load->indices[0]);
    if (!ramp) continue;
    const std::string vec = vector_type(buf->dtype, ramp->lanes);
    const std::string name = fresh(buf->name + "_vec", "vec");
    line(str_cat("const ", vec, " ", name, " = *reinterpret_cast<const ", vec, "*>(&", buf->name,
                 "[", expr(ramp->base, 0), "]);"));
    vector_loads_[load] = name;
  }
}

void FuncEmitter::store(const ir::Store* op) {
  if (op->indices.size() != 1)
    return fail(absl::InvalidArgumentError(str_cat(
        "Store to buffer '", op->buffer->name, "' has ", op->indices.size(),
        " indices; the CUDA code generator needs flattened IR (one physical element index per "
        "access)")));
  const BufferBinding* buf = find_buffer(op->buffer.get(), "Store");
  if (!buf) return;
  const ir::Expr& index = op->indices[0];
  DType vt = op->value.type();
  int lanes = vt.lanes();
  if (index.type().lanes() != lanes)
    return fail(absl::InvalidArgumentError(str_cat("Store of a ", vt, " value to buffer '",
                                                   op->buffer->name, "' at an index of type ",
                                                   index.type(), "; lanes must match")));
  // A value rounded to f16 (bf16) in its float register is stored without that rounding:
  // converting it to memory rounds the same way.
  auto unrounded = [&](const std::string& v) {
    if (buf->dtype.code() == DTypeCode::kF16) return strip_call(v, "loom_round_f16");
    if (buf->dtype.code() == DTypeCode::kBF16) return strip_call(v, "loom_round_bf16");
    return v;
  };
  // A 16-bit element loaded and stored unchanged (a copy, a fused prologue's move) is copied as
  // it is, without the round trip through float.
  auto to_memory = [&](const std::string& v) -> std::string {
    switch (buf->dtype.code()) {
      case DTypeCode::kF16: {
        const std::string raw = strip_call(v, "__half2float");
        return raw != v ? raw : "__float2half_rn(" + v + ")";
      }
      case DTypeCode::kBF16: {
        const std::string raw = strip_call(v, "__bfloat162float");
        return raw != v ? raw : "__float2bfloat16_rn(" + v + ")";
      }
      case DTypeCode::kBool:
        return "(unsigned char)" + v;
      default:
        return v;
    }
  };
  if (lanes == 1) {
    line(str_cat(buf->name, "[", expr(index, 0), "] = ", to_memory(unrounded(expr(op->value, 0))),
                 ";"));
    return;
  }
  // A vector store: every lane is computed before any is stored, as one vector store would.
  line("{");
  ++depth_;
  read_vector_loads(op->value);
  std::string type = register_type(vt.element_of());
  std::vector<std::string> temps;
  for (int l = 0; l < lanes; ++l) {
    temps.push_back(fresh(str_cat(buf->name, "_lane", l), "lane"));
    line(str_cat("const ", type, " ", temps.back(), " = ", unrounded(expr(op->value, l)), ";"));
  }
  vector_loads_.clear();
  if (const ir::Ramp* ramp = vector_access(*buf, index)) {
    const std::string vec = vector_type(buf->dtype, lanes);
    std::string elements;
    for (int l = 0; l < lanes; ++l)
      elements += (l ? ", " : "") + to_memory(temps[static_cast<size_t>(l)]);
    line(str_cat("*reinterpret_cast<", vec, "*>(&", buf->name, "[", expr(ramp->base, 0),
                 "]) = ", vec, "{{", elements, "}};"));
  } else {
    for (int l = 0; l < lanes; ++l)
      line(str_cat(buf->name, "[", expr(index, l), "] = ", to_memory(temps[static_cast<size_t>(l)]),
                   ";"));
  }
  --depth_;
  line("}");
}

void FuncEmitter::allocate(const ir::Allocate* op) {
  const ir::BufferNode* node = op->buffer.get();
  note_type(node->dtype);
  ir::Expr size = node->layout.physical_size();
  if (size.defined()) size = ir::simplify(size);  // products of constant extents fold
  if (!size.defined() || !size.type().is_int() || !size.type().is_scalar())
    return fail(absl::InvalidArgumentError(
        str_cat("buffer '", node->name, "' has no integer physical size to allocate")));
  std::string name = fresh(node->name, "buf");
  std::string type = memory_type(node->dtype);
  std::optional<int64_t> count = ir::as_const_int(size);
  bool heap = false;
  int64_t alignment = 16;  // 0 for arrays in registers
  const bool in_launch = std::any_of(&bound_[0][0], &bound_[0][0] + 6, [](bool b) { return b; });
  if (node->scope == ir::MemoryScope::kGlobal && !in_launch) {
    // Storage of the whole launch, outside every GPU loop: a module-scope __device__ array,
    // zero when the module loads and kept from launch to launch.
    if (!count || *count <= 0)
      return fail(absl::UnimplementedError(
          str_cat("global buffer '", node->name, "' around the launch has size ",
                  ir::to_string(size), "; module memory needs a constant size")));
    name = symbol_ + "_" + name;
    globals_ += str_cat("__device__ __align__(16) ", type, " ", name, "[", *count, "];\n");
  } else if (node->scope == ir::MemoryScope::kShared) {
    if (!count || *count <= 0)
      return fail(absl::UnimplementedError(
          str_cat("shared buffer '", node->name, "' has size ", ir::to_string(size),
                  "; the CUDA code generator supports constant-size shared memory only")));
    const int64_t bytes = *count * node->dtype.bytes();
    alignment = shared_alignment(node);
    if (dynamic_shared_) {
      shared_offset_ = round_up(shared_offset_, shared_alignment(node));
      line(str_cat(type, "* ", name, " = reinterpret_cast<", type, "*>(loom_smem + ",
                   shared_offset_, ");"));
      shared_offset_ += round_up(bytes, 16);
    } else {
      line(str_cat("__shared__ __align__(", shared_alignment(node), ") ", type, " ", name, "[",
                   *count, "];"));
    }
  } else if (count && *count * node->dtype.bytes() <= kMaxLocalArrayBytes) {
    // 16-bit arrays are fragments that tensor-core instructions read as 32-bit registers.
    alignment = 0;
    line(str_cat(node->dtype.bytes() < 4 ? "__align__(16) " : "", type, " ", name, "[",
                 std::max<int64_t>(*count, 1), "];"));
  } else {
    // A heap allocation failure traps: the kernel has no other way to report it.
    heap = true;
    line(str_cat(type, "* ", name, " = (", type, "*)malloc((size_t)(", expr(size, 0), ") * ",
                 node->dtype.bytes(), ");"));
    line(str_cat("if (", name, " == nullptr) __trap();"));
  }
  {
    ScopedBind<BufferMap> bind(buffers_, node, BufferBinding{name, node->dtype, alignment});
    stmt(op->body);
  }
  if (heap) line("free(" + name + ");");
}

// ---- functions -------------------------------------------------------------------------------

// Whether e mentions only the given variables.
bool uses_only(const ir::Expr& e, const std::set<const ir::VarNode*>& allowed,
               std::string* offender) {
  bool ok = true;
  ir::for_each_expr(e, [&](const ir::Expr& x) {
    if (const auto* v = x.as<ir::VarNode>(); v && !allowed.count(v) && ok) {
      ok = false;
      *offender = v->name;
    }
  });
  return ok;
}

absl::Status FuncEmitter::emit_func(const ir::Func& f, const std::string& symbol,
                                    runtime::cuda::KernelInfo* info) {
  StoredBuffers stored;
  stored.visit(f.body);
  std::vector<std::string> params;
  std::vector<std::string> prologue;
  std::set<const void*> seen;
  for (size_t position = 0; position < f.params.size(); ++position) {
    const ir::Param& p = f.params[position];
    if (const auto* buf = std::get_if<ir::Buffer>(&p)) {
      if (!buf->defined()) return absl::InvalidArgumentError("undefined buffer parameter");
      if (!seen.insert(buf->node().get()).second)
        return absl::InvalidArgumentError(
            str_cat("buffer '", buf->name(), "' is listed twice among the parameters"));
      note_type(buf->dtype());
      std::string name = fresh(buf->name(), "buf");
      // Buffers do not alias (the runtime passes one array twice only to params the func lists
      // in may_alias, such as fusion's view of a partial-sum output). Read-only ones are const,
      // which lets the compiler use the read-only data path.
      bool aliased = std::find(f.may_alias.begin(), f.may_alias.end(), position) != f.may_alias.end();
      bool read_only = !stored.stored.count(buf->node().get());
      params.push_back(str_cat(read_only && !aliased ? "const " : "", memory_type(buf->dtype()),
                               aliased ? "* " : "* __restrict__ ", name));
      // The runtime passes arrays kDeviceAlignment (16) bytes aligned, as cuMemAlloc returns
      // them; the cp.async and vector accesses rely on it.
      buffers_[buf->node().get()] = BufferBinding{name, buf->dtype(), 16};
      const size_t buffer_index = buffer_position_.size();
      buffer_position_[buf->node().get()] = buffer_index;
    } else {
      const ir::Var& var = std::get<ir::Var>(p);
      if (!var.defined()) return absl::InvalidArgumentError("undefined scalar parameter");
      if (!seen.insert(var.node()).second)
        return absl::InvalidArgumentError(
            str_cat("scalar '", var.name(), "' is listed twice among the parameters"));
      if (!var.type().is_scalar() || !(var.type().is_int() || var.type().is_bool()))
        return absl::InvalidArgumentError(
            str_cat("scalar parameter '", var.name(), "' has type ", var.type(),
                    "; kernels take integer scalars (passed as i64)"));
      std::string name = fresh(var.name(), "n");
      params_.insert(var.node());
      if (var.type() == DType::i64()) {
        params.push_back("long long " + name);
      } else {
        // Scalars are always passed as 64-bit integers; narrower ones are converted on entry.
        std::string arg = fresh(var.name() + "_arg", "arg");
        params.push_back("long long " + arg);
        prologue.push_back(str_cat(
            "const ", register_type(var.type()), " ", name, " = ",
            var.type().is_bool() ? "(" + arg + " != 0)" : "(" + memory_type(var.type()) + ")" + arg,
            ";"));
      }
      vars_[var.node()] = VarBinding{name, 1};
    }
  }

  GpuLoopCollector loops;
  loops.visit(f.body);
  LOOM_RETURN_IF_ERROR(loops.status);
  launch_ = loops.axes;
  info->symbol = symbol;
  symbol_ = symbol;
  int64_t threads = 1;
  for (size_t a = 0; a < 3; ++a) {
    for (ir::Expr* e : {&launch_.grid[a], &launch_.block[a]}) {
      std::string offender;
      if (e->defined() && !uses_only(*e, params_, &offender))
        return absl::InvalidArgumentError(
            str_cat("the extent ", ir::to_string(*e), " of a GPU loop depends on '", offender,
                    "', which is not a scalar parameter; launch shapes must be computable "
                    "before the launch"));
    }
    info->grid[a] = launch_.grid[a].defined() ? launch_.grid[a] : ir::Expr(int64_t{1});
    info->block[a] = launch_.block[a].defined() ? launch_.block[a] : ir::Expr(int64_t{1});
    std::optional<int64_t> n = ir::as_const_int(info->block[a]);
    threads = n && threads > 0 ? threads * *n : -1;
  }
  if (threads > 1024)
    return absl::InvalidArgumentError(
        str_cat("kernel '", f.name, "' has ", threads, " threads per block; CUDA allows 1024"));

  // Past the static limit, shared buffers are slices of the dynamic shared memory the launch
  // gives (the runtime raises the kernel's limit when it loads the module).
  // A cluster kernel's are always: its blocks' shared memories are windows of one space, and
  // the test emulator gives each block of a cluster its own dynamic shared memory.
  SharedBytes shared;
  shared.visit(f.body);
  KernelDeclarations declared;
  declared.visit(f.body);
  cluster_ = declared.cluster;
  info->cluster = declared.cluster;
  info->min_blocks_per_sm = declared.min_blocks_per_sm;
  if (cluster_ > 1) {
    std::optional<int64_t> blocks = ir::as_const_int(info->grid[0]);
    if (!blocks || *blocks % cluster_ != 0 || !ir::is_const_int(info->grid[1], 1) ||
        !ir::is_const_int(info->grid[2], 1))
      return absl::InvalidArgumentError(
          str_cat("kernel '", f.name, "' runs in clusters of ", cluster_, " blocks; its grid (",
                  ir::to_string(info->grid[0]), " blocks) must be a constant multiple of that"));
  }
  if (shared.bytes > kStaticSharedBytes || (cluster_ > 1 && shared.bytes > 0)) {
    dynamic_shared_ = true;
    needs_->dynamic_shared = true;
    info->dynamic_shared_bytes = shared.bytes;
    prologue.push_back("LOOM_DYNAMIC_SHARED(loom_smem);");
  }

  stmt(f.body);
  LOOM_RETURN_IF_ERROR(status_);
  for (const TensorMapUse& use : tensor_maps_) {
    params.push_back("LOOM_TENSOR_MAP_PARAM(" + use.name + ")");
    info->tensor_maps.push_back({buffer_position_.at(use.buffer), use.buffer->dtype,
                                 use.buffer->shape, use.box});
  }
  std::string body = os_.str();
  os_.str("");
  os_ << "extern \"C\" __global__ void ";
  // A kernel that moves registers between warpgroups (setmaxnreg) also promises one block per
  // SM, unless it promises more itself: ptxas needs the register count at entry fixed by the
  // launch bounds, and some ptxas versions drop every setmaxnreg ("unable to determine register
  // count at entry") when only the block size bounds it.
  if (cluster_ > 1) os_ << "__cluster_dims__(" << cluster_ << ", 1, 1) ";
  const int64_t min_blocks =
      declared.min_blocks_per_sm > 0 ? declared.min_blocks_per_sm : (shifts_registers_ ? 1 : 0);
  if (threads > 0)
    os_ << "__launch_bounds__(" << threads
        << (min_blocks > 0 ? ", " + std::to_string(min_blocks) : std::string()) << ") ";
  os_ << symbol << "(";
  for (size_t i = 0; i < params.size(); ++i) os_ << (i ? ", " : "") << params[i];
  os_ << ") {\n";
  for (const std::string& p : prologue) os_ << "  " << p << "\n";
  os_ << body << "}\n";
  if (cluster_ > 1) os_ << "LOOM_CLUSTER_SIZE(" << symbol << ", " << cluster_ << ")\n";
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EmittedCuda> emit_cuda(const ir::Module& m) {
  EmittedCuda out;
  PreambleNeeds needs;
  std::set<std::string> used;
  // Funcs that emit the same code up to names (identical layers of a model) share one kernel,
  // the first's: NVRTC compiles it once. Each keeps its own KernelInfo (its launch shape is in
  // its own scalar params) with that kernel's symbol.
  std::map<std::string, int> definition_of_code;
  std::vector<std::string> symbol_of_definition;
  for (const ir::Func& f : m.funcs) {
    PreambleNeeds same_needs = needs;
    FuncEmitter canonical(&same_needs, /*canonical=*/true);
    runtime::cuda::KernelInfo shared;
    const bool comparable = canonical.emit_func(f, "kernel", &shared).ok();
    if (comparable) {
      auto it = definition_of_code.find(canonical.code());
      if (it != definition_of_code.end()) {
        shared.symbol = symbol_of_definition[static_cast<size_t>(it->second)];
        out.kernels.push_back(std::move(shared));
        out.definition_of.push_back(it->second);
        continue;
      }
    }
    std::string base = sanitize(f.name, "kernel");
    if (is_reserved(base)) base += "_";
    std::string symbol = base;
    for (int n = 1; used.count(symbol); ++n) symbol = base + "_" + std::to_string(n);
    used.insert(symbol);

    FuncEmitter emitter(&needs);
    runtime::cuda::KernelInfo info;
    absl::Status s = emitter.emit_func(f, symbol, &info);
    if (!s.ok())
      return absl::Status(s.code(),
                          str_cat("func '", f.name, "' of module '", m.name, "': ", s.message()));
    const int definition = static_cast<int>(out.definitions.size());
    out.definitions.push_back("\n" + emitter.code());
    symbol_of_definition.push_back(symbol);
    if (comparable) definition_of_code.emplace(canonical.code(), definition);
    out.kernels.push_back(std::move(info));
    out.definition_of.push_back(definition);
  }
  std::string& src = out.preamble;
  src = str_cat("// CUDA C++ generated by loom for module '", m.name, "' (",
                m.target.is_cuda() ? "sm_" + std::to_string(m.target.sm_arch()) : "any sm", ").\n");
  if (needs.f16) src += kF16Preamble;
  if (needs.bf16) src += kBF16Preamble;
  src += kPreamble;
  if (needs.dynamic_shared) src += kDynamicSharedPreamble;
  if (needs.tensor_cores) {
    src += kTensorCorePreamble;
    src += "#if defined(__CUDA_ARCH__)\n";
    if (needs.f16) src += "LOOM_MMA_M16N8K16(f16, __half, \"f16\")\n";
    if (needs.bf16) src += "LOOM_MMA_M16N8K16(bf16, __nv_bfloat16, \"bf16\")\n";
    src += "#endif\n";
  }
  if (needs.tma) src += kTmaPreamble;
  if (needs.wgmma) {
    src += kWgmmaPreamble;
    src += "#if defined(__CUDA_ARCH__)\n";
    for (const auto& [n, type] : needs.wgmma_shapes) src += wgmma_function(n, type);
    src += "#endif\n";
  }
  out.source = out.preamble;
  for (const std::string& d : out.definitions) out.source += d;
  return out;
}

}  // namespace loom::codegen
