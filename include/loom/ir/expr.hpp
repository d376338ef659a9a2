// Loop IR expressions: small immutable nodes shared by pointer, each built by a checking make().
// Expr is the handle; arithmetic operators on Expr build nodes (see ir/op.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loom/core/dtype.hpp"

namespace loom::ir {

enum class ExprKind : uint8_t {
  kIntImm, kFloatImm, kVar,
  kAdd, kSub, kMul, kDiv, kMod, kMin, kMax,
  kEQ, kNE, kLT, kLE, kGT, kGE, kAnd, kOr,
  kNot, kSelect, kCast, kLoad, kCall, kRamp, kBroadcast, kLet, kReduce,
};

const char* expr_kind_name(ExprKind k);

struct ExprNode {
  ExprNode(ExprKind kind, DType type) : kind(kind), type(type) {}
  virtual ~ExprNode() = default;
  const ExprKind kind;
  const DType type;
};

// Handle to an immutable expression node. Copying shares the node.
class Expr {
 public:
  Expr() = default;
  explicit Expr(std::shared_ptr<const ExprNode> node) : node_(std::move(node)) {}
  // Integer constants are i64 (the index type) and float constants f32 unless combined with a
  // typed expression, whose type they then adopt (see op.hpp).
  Expr(int v);      // NOLINT
  Expr(int64_t v);  // NOLINT
  Expr(float v);    // NOLINT
  Expr(double v);   // NOLINT

  bool defined() const { return node_ != nullptr; }
  const ExprNode* get() const { return node_.get(); }
  const ExprNode* operator->() const { return node_.get(); }
  ExprKind kind() const { return node_->kind; }
  DType type() const { return node_->type; }
  bool same_as(const Expr& o) const { return node_ == o.node_; }

  template <typename T>
  const T* as() const {
    return node_ && node_->kind == T::kKind ? static_cast<const T*>(node_.get()) : nullptr;
  }
  template <typename T>
  bool is() const {
    return as<T>() != nullptr;
  }

 private:
  std::shared_ptr<const ExprNode> node_;
};

template <typename T, typename... Args>
Expr make_expr(Args&&... args) {
  return Expr(std::make_shared<const T>(std::forward<Args>(args)...));
}

struct IntImm : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kIntImm;
  IntImm(DType t, int64_t v) : ExprNode(kKind, t), value(v) {}
  const int64_t value;
  // Integer or bool constant of the given scalar type (the value is wrapped to its width).
  static Expr make(DType t, int64_t value);
};

struct FloatImm : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kFloatImm;
  FloatImm(DType t, double v) : ExprNode(kKind, t), value(v) {}
  const double value;
  static Expr make(DType t, double value);
};

// A named variable: loop index, let binding or scalar kernel parameter. Identity is the node,
// not the name; two Vars named "i" are different variables.
struct VarNode : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kVar;
  VarNode(DType t, std::string n) : ExprNode(kKind, t), name(std::move(n)) {}
  const std::string name;
};

// A Var handle: an Expr that is known to be a variable.
class Var : public Expr {
 public:
  Var() = default;
  explicit Var(std::string name, DType t = DType::i64());
  explicit Var(const Expr& e);  // e must be a VarNode
  const VarNode* node() const { return as<VarNode>(); }
  const std::string& name() const { return node()->name; }
};

// Binary arithmetic, comparison and logic nodes share one shape.
template <ExprKind K>
struct BinaryNode : ExprNode {
  static constexpr ExprKind kKind = K;
  BinaryNode(DType t, Expr a_, Expr b_) : ExprNode(K, t), a(std::move(a_)), b(std::move(b_)) {}
  const Expr a, b;
  // Both operands must have the same type (same lanes); comparisons give bool.
  static Expr make(Expr a, Expr b);
};

// Integer Div and Mod truncate toward zero (C semantics); float Div is IEEE division.
using Add = BinaryNode<ExprKind::kAdd>;
using Sub = BinaryNode<ExprKind::kSub>;
using Mul = BinaryNode<ExprKind::kMul>;
using Div = BinaryNode<ExprKind::kDiv>;
using Mod = BinaryNode<ExprKind::kMod>;
using Min = BinaryNode<ExprKind::kMin>;
using Max = BinaryNode<ExprKind::kMax>;
using EQ = BinaryNode<ExprKind::kEQ>;
using NE = BinaryNode<ExprKind::kNE>;
using LT = BinaryNode<ExprKind::kLT>;
using LE = BinaryNode<ExprKind::kLE>;
using GT = BinaryNode<ExprKind::kGT>;
using GE = BinaryNode<ExprKind::kGE>;
using And = BinaryNode<ExprKind::kAnd>;
using Or = BinaryNode<ExprKind::kOr>;

inline bool is_binary(ExprKind k) { return k >= ExprKind::kAdd && k <= ExprKind::kOr; }
inline bool is_comparison(ExprKind k) { return k >= ExprKind::kEQ && k <= ExprKind::kGE; }

// Read-only access to the two operands of any binary node.
struct BinaryView {
  const Expr* a;
  const Expr* b;
};
BinaryView binary_operands(const Expr& e);
// Rebuilds a binary node of kind k from new operands.
Expr make_binary(ExprKind k, Expr a, Expr b);

struct Not : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kNot;
  Not(DType t, Expr a_) : ExprNode(kKind, t), a(std::move(a_)) {}
  const Expr a;
  static Expr make(Expr a);
};

struct Select : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kSelect;
  Select(DType t, Expr c, Expr tv, Expr fv)
      : ExprNode(kKind, t), cond(std::move(c)), true_value(std::move(tv)), false_value(std::move(fv)) {}
  const Expr cond, true_value, false_value;
  static Expr make(Expr cond, Expr true_value, Expr false_value);
};

struct Cast : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kCast;
  Cast(DType t, Expr v) : ExprNode(kKind, t), value(std::move(v)) {}
  const Expr value;
  // Returns value unchanged when it already has type t.
  static Expr make(DType t, Expr value);
};

class Buffer;
struct BufferNode;

// Reads buffer[indices]. Before layout flattening there is one index per logical dim; after it
// a single physical element index. A Ramp index gives a vector load.
struct Load : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kLoad;
  Load(DType t, std::shared_ptr<const BufferNode> b, std::vector<Expr> idx)
      : ExprNode(kKind, t), buffer(std::move(b)), indices(std::move(idx)) {}
  const std::shared_ptr<const BufferNode> buffer;
  const std::vector<Expr> indices;
  static Expr make(const Buffer& buffer, std::vector<Expr> indices);
};

// Pure math intrinsic applied elementwise: exp, log, sqrt, rsqrt, tanh, erf, abs, floor, ceil,
// round, pow, fma. Known names only; arguments float (abs also int). bit_xor(a, b) is the
// bitwise exclusive or of two integers (swizzled layouts). The bit casts
// reinterpret_f32 (i32 -> f32) and reinterpret_i32 (f32 -> i32) keep the bits and the lanes.
// final_value(x) is x, marking a template's store of an output element's final value (when the
// kernel also stores partial results there); fusion reads the mark and lowering removes it.
// shfl_xor_sync(x, mask) is CUDA-only: x (scalar f32 or i32) of the lane whose index is this
// lane's xor the constant i64 mask, 1 <= mask < 32, across the whole warp (all 32 lanes must
// execute it, as __shfl_xor_sync(0xffffffff, ...)); the CPU back end rejects it with an error.
//
// prefetch(buf[i]) is a statement (Evaluate of an i32 call) whose Load argument stands for an
// element's address: a hint to bring that element's cache line towards the core (on the CPU
// into L2, prefetcht1; CUDA ignores it). prefetch_l1(buf[i]) is the same hint into L1
// (prefetcht0), for a line needed within the next few hundred cycles. It never faults, and the
// element may lie outside the buffer (past its end, say, where the next block would start): the
// address is computed without LLVM's in-bounds promise and only hinted at, never read.
//
// The CUDA tensor-core and asynchronous-copy intrinsics are statements (Evaluate of an i32 call
// with no value) whose Load arguments stand for the addresses of the elements they name, with
// the warp-wide semantics of the PTX instructions (every lane of the warp executes them):
//   mma_m16n8k16(acc[i], a[j], b[k]): acc[i..i+3] (f32) += A * B for the 16x16 A fragment
//     a[j..j+7] and the 16x8 B fragment b[k..k+3] (both f16 or both bf16), mma.sync.m16n8k16;
//   ldmatrix_x4(dst[i], src[j]) and ldmatrix_x4_trans: four 8x8 matrices of 16-bit elements from
//     shared memory, this lane giving the address of one row (src[j..j+7]), into dst[i..i+7];
//   cp_async_16(dst[i], src[j], bytes): 16 bytes from global src to shared dst, of which the
//     first `bytes` (0 or 16) are read and the rest zero-filled, asynchronously;
//   cp_async_commit(): closes the group of this thread's copies issued since the last commit;
//   cp_async_wait(n): waits until at most n (a constant) of this thread's groups are pending;
//   atomic_add_i32(old[i], target[j], v): target[j] (global i32) += v atomically, the value it
//     held before stored to old[i] (a local or shared i32), by this thread alone;
//   thread_fence(): this thread's writes to global memory before it are seen by every thread
//     of the device before its writes after it (__threadfence);
// and the Hopper (sm_90a) warpgroup instructions, executed by all 128 threads of a warpgroup
// (4 consecutive warps):
//   wgmma_m64k16(acc[i], a[j], b[k], n, a_sbo, b_lbo, b_sbo): acc[i..i+n/2) (f32) += A * B,
//     wgmma.mma_async m64nNk16, asynchronously. A is the 64 x 16 tile of shared memory at a[j],
//     K-major with the 128-byte swizzle (rows 128 bytes apart, 8-row groups a_sbo bytes
//     apart); B the 16 x n tile at b[k], N-major with the 128-byte swizzle (k rows 128 bytes
//     apart, 8-row groups b_sbo apart, 64-column atoms b_lbo apart). Tiles start 1024-aligned
//     but for the offset of their K step within the atom. Accumulator r of thread t (of the
//     warpgroup) is row 16 (t / 32) + (t % 32) / 4 + 8 ((r % 4) / 2), column
//     8 (r / 4) + 2 (t % 4) + r % 2;
//   wgmma_fence(acc[i], count): orders the accumulators' register accesses before it with the
//     wgmma that follow (wgmma.fence);
//   wgmma_commit(): closes the group of wgmma issued since the last commit;
//   wgmma_wait(acc[i], count, n): waits until at most n (a constant) groups are pending, after
//     which acc[i..i+count) hold the products;
//   fence_proxy_async(): this thread's writes to shared memory before it are seen by the
//     asynchronous proxy (wgmma's reads, TMA's copies and their mbarriers) after it;
// and the Hopper asynchronous copies with the transaction barriers they complete on, executed
// by one thread each (mbarrier_wait by every thread that needs the data):
//   mbarrier_init(bar[i], count): bar[i] (a shared i64) becomes a barrier whose phase
//     completes when `count` (a constant) arrivals and every byte it expects have come;
//   mbarrier_arrive(bar[i]): one arrival;
//   mbarrier_expect_tx(bar[i], bytes): one arrival, and `bytes` (a constant) more that the
//     phase waits for (mbarrier.arrive.expect_tx);
//   mbarrier_wait(bar[i], parity): waits until the phase of that parity (0 or 1; the first
//     phase is 0) has completed; a barrier whose phase 0 is pending passes parity 1 at once;
//   tma_load_3d(dst[i], bar[j], src[k], c0, c1, c2, b0, b1, b2): the b0 x b1 x b2 box (constant
//     extents) of the row-major global buffer src (rank 3; src[k]'s index is ignored) at
//     coordinates (c0, c1, c2), outermost first, to shared dst[i] with the 128-byte swizzle,
//     elements past src's extents zero; completes b0 * b1 * b2 * element bytes on bar[j]
//     (cp.async.bulk.tensor through a tensor map the runtime encodes at launch, see
//     runtime::cuda::TensorMapInfo). dst starts 1024-aligned, b2 elements are 128 bytes;
//   set_max_registers(n, raise): the warpgroup's threads keep n registers each from here on
//     (constants; setmaxnreg.inc when raise is 1, .dec when 0);
//   min_blocks_per_sm(n): the kernel's launch bounds promise n blocks an SM (a constant in
//     [1, 32]; __launch_bounds__(threads, n)), so that the compiler keeps its registers to an
//     n-th of an SM's. A statement of the kernel's body; it computes nothing. The kernel's
//     grid is persistent: the runtime launches at most as many blocks as the device holds at
//     once (its occupancy, queried at load), fewer than the grid where the device holds fewer,
//     so the kernel walks its work in steps of grid_blocks();
//   grid_blocks(): the blocks of the grid the kernel was launched with (gridDim.x), an i64
//     value, at least 1;
// and the Hopper thread-block clusters, whose blocks see each other's shared memory:
//   cluster_dims(n): the kernel runs in clusters of n (a constant in [2, 8]) consecutive blocks
//     (__cluster_dims__(n, 1, 1)); block b is block b % n of its cluster, and the grid is a
//     multiple of n blocks. A statement of the kernel's body, before any other cluster call;
//     it computes nothing. A cluster kernel's shared buffers are dynamic shared memory;
//   cluster_sync(): every thread of every block of the cluster waits for the others, its
//     writes to shared memory before it seen by all of them after it (barrier.cluster);
//   fence_mbarrier_init(): this thread's mbarrier_init before it are seen by the cluster's
//     other blocks after their next cluster_sync;
//   mbarrier_arrive_cluster(bar[i], rank): one arrival on the mbarrier at bar[i]'s place in the
//     shared memory of block `rank` of the cluster (mapa, then a remote arrive);
//   tma_load_3d_multicast(dst[i], bar[j], src[k], c0, c1, c2, b0, b1, b2, mask): tma_load_3d,
//     read once and written to dst[i]'s place in the shared memory of each block of the
//     cluster whose bit is set in `mask` (a constant), completing there on bar[j]'s place.
struct Call : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kCall;
  Call(DType t, std::string n, std::vector<Expr> a)
      : ExprNode(kKind, t), name(std::move(n)), args(std::move(a)) {}
  const std::string name;
  const std::vector<Expr> args;
  static Expr make(const std::string& name, std::vector<Expr> args);
  static bool is_known(const std::string& name, int* arity = nullptr);
  // Whether the call's Load arguments are addresses (the CUDA memory intrinsics above).
  static bool takes_addresses(const std::string& name);
};

// The vector base, base + stride, ..., base + (lanes-1) * stride.
struct Ramp : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kRamp;
  Ramp(DType t, Expr b, Expr s, int l)
      : ExprNode(kKind, t), base(std::move(b)), stride(std::move(s)), lanes(l) {}
  const Expr base, stride;
  const int lanes;
  static Expr make(Expr base, Expr stride, int lanes);
};

// A scalar repeated across lanes.
struct Broadcast : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kBroadcast;
  Broadcast(DType t, Expr v, int l) : ExprNode(kKind, t), value(std::move(v)), lanes(l) {}
  const Expr value;
  const int lanes;
  static Expr make(Expr value, int lanes);
};

struct Let : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kLet;
  Let(DType t, Var v, Expr val, Expr b)
      : ExprNode(kKind, t), var(std::move(v)), value(std::move(val)), body(std::move(b)) {}
  const Var var;
  const Expr value, body;
  static Expr make(Var var, Expr value, Expr body);
};

// A reduction axis: var ranges over [0, extent).
struct IterVar {
  Var var;
  Expr extent;
};

enum class ReduceKind : uint8_t { kSum, kProd, kMax, kMin };
const char* reduce_kind_name(ReduceKind k);

// Tensor-expression reduction: combines source over all points of axes, in dtype type.
// Exists only before lowering; lowering turns it into an accumulator loop.
struct Reduce : ExprNode {
  static constexpr ExprKind kKind = ExprKind::kReduce;
  Reduce(DType t, ReduceKind k, Expr s, std::vector<IterVar> ax)
      : ExprNode(kKind, t), reduce_kind(k), source(std::move(s)), axes(std::move(ax)) {}
  const ReduceKind reduce_kind;
  const Expr source;
  const std::vector<IterVar> axes;
  // source is cast to accum_type.
  static Expr make(ReduceKind kind, Expr source, std::vector<IterVar> axes, DType accum_type);
  // The identity of the combiner in type t (0, 1, lowest, highest).
  static Expr identity(ReduceKind kind, DType t);
  // combine(acc, x) for the combiner.
  static Expr combine(ReduceKind kind, Expr acc, Expr x);
};

}  // namespace loom::ir
