// Checking constructors of expression nodes and the operators that build them.

#include <cmath>
#include <limits>

#include "loom/core/status.hpp"
#include "loom/ir/buffer.hpp"
#include "loom/ir/op.hpp"

namespace loom::ir {

const char* expr_kind_name(ExprKind k) {
  switch (k) {
    case ExprKind::kIntImm: return "IntImm";
    case ExprKind::kFloatImm: return "FloatImm";
    case ExprKind::kVar: return "Var";
    case ExprKind::kAdd: return "Add";
    case ExprKind::kSub: return "Sub";
    case ExprKind::kMul: return "Mul";
    case ExprKind::kDiv: return "Div";
    case ExprKind::kMod: return "Mod";
    case ExprKind::kMin: return "Min";
    case ExprKind::kMax: return "Max";
    case ExprKind::kEQ: return "EQ";
    case ExprKind::kNE: return "NE";
    case ExprKind::kLT: return "LT";
    case ExprKind::kLE: return "LE";
    case ExprKind::kGT: return "GT";
    case ExprKind::kGE: return "GE";
    case ExprKind::kAnd: return "And";
    case ExprKind::kOr: return "Or";
    case ExprKind::kNot: return "Not";
    case ExprKind::kSelect: return "Select";
    case ExprKind::kCast: return "Cast";
    case ExprKind::kLoad: return "Load";
    case ExprKind::kCall: return "Call";
    case ExprKind::kRamp: return "Ramp";
    case ExprKind::kBroadcast: return "Broadcast";
    case ExprKind::kLet: return "Let";
    case ExprKind::kReduce: return "Reduce";
  }
  return "?";
}

const char* reduce_kind_name(ReduceKind k) {
  switch (k) {
    case ReduceKind::kSum: return "sum";
    case ReduceKind::kProd: return "prod";
    case ReduceKind::kMax: return "max";
    case ReduceKind::kMin: return "min";
  }
  return "?";
}

Expr::Expr(int v) : Expr(IntImm::make(DType::i64(), v)) {}
Expr::Expr(int64_t v) : Expr(IntImm::make(DType::i64(), v)) {}
Expr::Expr(float v) : Expr(FloatImm::make(DType::f32(), v)) {}
Expr::Expr(double v) : Expr(FloatImm::make(DType::f32(), v)) {}

Expr IntImm::make(DType t, int64_t value) {
  LOOM_CHECK(t.is_scalar() && (t.is_int() || t.is_bool()), "IntImm of type ", t);
  switch (t.code()) {
    case DTypeCode::kI8: value = static_cast<int8_t>(value); break;
    case DTypeCode::kI32: value = static_cast<int32_t>(value); break;
    case DTypeCode::kBool: value = value != 0; break;
    default: break;
  }
  return make_expr<IntImm>(t, value);
}

Expr FloatImm::make(DType t, double value) {
  LOOM_CHECK(t.is_scalar() && t.is_float(), "FloatImm of type ", t);
  if (t.code() == DTypeCode::kF32) value = static_cast<float>(value);
  return make_expr<FloatImm>(t, value);
}

Var::Var(std::string name, DType t) : Expr(make_expr<VarNode>(t, std::move(name))) {}
Var::Var(const Expr& e) : Expr(e) { LOOM_CHECK(e.is<VarNode>(), "Var from non-variable"); }

template <ExprKind K>
Expr BinaryNode<K>::make(Expr a, Expr b) {
  LOOM_CHECK(a.defined() && b.defined(), expr_kind_name(K), " of undefined operand");
  LOOM_CHECK(a.type() == b.type(), expr_kind_name(K), " of ", a.type(), " and ", b.type());
  DType t = a.type();
  if constexpr (K == ExprKind::kAnd || K == ExprKind::kOr) {
    LOOM_CHECK(t.is_bool(), expr_kind_name(K), " of non-bool ", t);
  } else if constexpr (K >= ExprKind::kEQ && K <= ExprKind::kGE) {
    t = DType::boolean(t.lanes());
  } else if constexpr (K == ExprKind::kMod) {
    LOOM_CHECK(!t.is_bool(), "Mod of bool");
  } else {
    LOOM_CHECK(!t.is_bool() || K == ExprKind::kMin || K == ExprKind::kMax,
               expr_kind_name(K), " of bool");
  }
  return make_expr<BinaryNode<K>>(t, std::move(a), std::move(b));
}

template struct BinaryNode<ExprKind::kAdd>;
template struct BinaryNode<ExprKind::kSub>;
template struct BinaryNode<ExprKind::kMul>;
template struct BinaryNode<ExprKind::kDiv>;
template struct BinaryNode<ExprKind::kMod>;
template struct BinaryNode<ExprKind::kMin>;
template struct BinaryNode<ExprKind::kMax>;
template struct BinaryNode<ExprKind::kEQ>;
template struct BinaryNode<ExprKind::kNE>;
template struct BinaryNode<ExprKind::kLT>;
template struct BinaryNode<ExprKind::kLE>;
template struct BinaryNode<ExprKind::kGT>;
template struct BinaryNode<ExprKind::kGE>;
template struct BinaryNode<ExprKind::kAnd>;
template struct BinaryNode<ExprKind::kOr>;

BinaryView binary_operands(const Expr& e) {
  switch (e.kind()) {
#define LOOM_BIN_CASE(K)                                            \
  case ExprKind::K: {                                               \
    auto* n = static_cast<const BinaryNode<ExprKind::K>*>(e.get()); \
    return {&n->a, &n->b};                                          \
  }
    LOOM_BIN_CASE(kAdd) LOOM_BIN_CASE(kSub) LOOM_BIN_CASE(kMul) LOOM_BIN_CASE(kDiv)
    LOOM_BIN_CASE(kMod) LOOM_BIN_CASE(kMin) LOOM_BIN_CASE(kMax) LOOM_BIN_CASE(kEQ)
    LOOM_BIN_CASE(kNE) LOOM_BIN_CASE(kLT) LOOM_BIN_CASE(kLE) LOOM_BIN_CASE(kGT)
    LOOM_BIN_CASE(kGE) LOOM_BIN_CASE(kAnd) LOOM_BIN_CASE(kOr)
#undef LOOM_BIN_CASE
    default: LOOM_CHECK(false, "binary_operands of ", expr_kind_name(e.kind()));
  }
  return {nullptr, nullptr};
}

Expr make_binary(ExprKind k, Expr a, Expr b) {
  switch (k) {
    case ExprKind::kAdd: return Add::make(std::move(a), std::move(b));
    case ExprKind::kSub: return Sub::make(std::move(a), std::move(b));
    case ExprKind::kMul: return Mul::make(std::move(a), std::move(b));
    case ExprKind::kDiv: return Div::make(std::move(a), std::move(b));
    case ExprKind::kMod: return Mod::make(std::move(a), std::move(b));
    case ExprKind::kMin: return Min::make(std::move(a), std::move(b));
    case ExprKind::kMax: return Max::make(std::move(a), std::move(b));
    case ExprKind::kEQ: return EQ::make(std::move(a), std::move(b));
    case ExprKind::kNE: return NE::make(std::move(a), std::move(b));
    case ExprKind::kLT: return LT::make(std::move(a), std::move(b));
    case ExprKind::kLE: return LE::make(std::move(a), std::move(b));
    case ExprKind::kGT: return GT::make(std::move(a), std::move(b));
    case ExprKind::kGE: return GE::make(std::move(a), std::move(b));
    case ExprKind::kAnd: return And::make(std::move(a), std::move(b));
    case ExprKind::kOr: return Or::make(std::move(a), std::move(b));
    default: LOOM_CHECK(false, "make_binary of ", expr_kind_name(k));
  }
  return Expr();
}

Expr Not::make(Expr a) {
  LOOM_CHECK(a.type().is_bool(), "Not of ", a.type());
  DType t = a.type();
  return make_expr<Not>(t, std::move(a));
}

Expr Select::make(Expr cond, Expr t, Expr f) {
  LOOM_CHECK(t.type() == f.type(), "Select of ", t.type(), " and ", f.type());
  LOOM_CHECK(cond.type().is_bool(), "Select condition of type ", cond.type());
  LOOM_CHECK(cond.type().lanes() == 1 || cond.type().lanes() == t.type().lanes(),
             "Select condition lanes");
  DType ty = t.type();
  return make_expr<Select>(ty, std::move(cond), std::move(t), std::move(f));
}

Expr Cast::make(DType t, Expr value) {
  if (value.type() == t) return value;
  LOOM_CHECK(t.lanes() == value.type().lanes(), "Cast changes lanes ", value.type(), " -> ", t);
  return make_expr<Cast>(t, std::move(value));
}

Expr Load::make(const Buffer& buffer, std::vector<Expr> indices) {
  LOOM_CHECK(buffer.defined(), "Load of undefined buffer");
  int lanes = 1;
  for (const Expr& i : indices) {
    LOOM_CHECK(i.defined() && i.type().is_int(), "Load index of ", buffer.name(), " not integer");
    lanes = std::max(lanes, i.type().lanes());
  }
  return make_expr<Load>(buffer.dtype().with_lanes(lanes), buffer.node(), std::move(indices));
}

namespace {
struct IntrinsicInfo {
  const char* name;
  int arity;
};
// clang-format off
constexpr IntrinsicInfo kIntrinsics[] = {
    {"exp", 1},   {"log", 1},   {"sqrt", 1},  {"rsqrt", 1}, {"tanh", 1}, {"erf", 1},
    {"abs", 1},   {"floor", 1}, {"ceil", 1},  {"round", 1}, {"pow", 2},  {"fma", 3},
    {"reinterpret_f32", 1}, {"reinterpret_i32", 1}, {"final_value", 1}, {"shfl_xor_sync", 2},
    {"mma_m16n8k16", 3}, {"ldmatrix_x4", 2}, {"ldmatrix_x4_trans", 2}, {"cp_async_16", 3},
    {"cp_async_commit", 0}, {"cp_async_wait", 1}, {"bit_xor", 2},
    {"atomic_add_i32", 3}, {"thread_fence", 0}, {"wgmma_m64k16", 7}, {"wgmma_fence", 2},
    {"wgmma_commit", 0}, {"wgmma_wait", 3}, {"fence_proxy_async", 0}, {"prefetch", 1},
    {"prefetch_l1", 1}, {"mbarrier_init", 2}, {"mbarrier_arrive", 1}, {"mbarrier_expect_tx", 2},
    {"mbarrier_wait", 2}, {"tma_load_3d", 9}, {"set_max_registers", 2},
    {"cluster_dims", 1}, {"cluster_sync", 0}, {"fence_mbarrier_init", 0},
    {"mbarrier_arrive_cluster", 2}, {"tma_load_3d_multicast", 10}, {"min_blocks_per_sm", 1},
    {"grid_blocks", 0},
};
// clang-format on

bool is_16_bit_float(DType t) {
  return t.is_scalar() && (t.code() == DTypeCode::kF16 || t.code() == DTypeCode::kBF16);
}

// The CUDA memory intrinsics (see Call): checks of their arguments, then an i32 call.
Expr make_memory_intrinsic(const std::string& name, std::vector<Expr> args) {
  auto load = [&](size_t i) {
    const auto* l = args[i].as<Load>();
    LOOM_CHECK(l && args[i].type().is_scalar(), name, " argument ", i,
               " must be a scalar Load (it stands for the element's address)");
    return l;
  };
  if (name == "mma_m16n8k16") {
    load(0);
    load(1);
    load(2);
    LOOM_CHECK(args[0].type() == DType::f32(), name, " accumulates in f32, not ", args[0].type());
    LOOM_CHECK(is_16_bit_float(args[1].type()) && args[1].type() == args[2].type(), name,
               " multiplies f16 or bf16 fragments, not ", args[1].type(), " and ",
               args[2].type());
  } else if (name == "ldmatrix_x4" || name == "ldmatrix_x4_trans") {
    load(0);
    LOOM_CHECK(load(1)->buffer->scope == MemoryScope::kShared, name, " reads shared memory");
    LOOM_CHECK(args[0].type().bytes() == 2 && args[1].type().bytes() == 2, name,
               " moves 16-bit elements");
  } else if (name == "cp_async_16") {
    LOOM_CHECK(load(0)->buffer->scope == MemoryScope::kShared, name, " writes shared memory");
    LOOM_CHECK(load(1)->buffer->scope == MemoryScope::kGlobal, name, " reads global memory");
    LOOM_CHECK(args[0].type() == args[1].type(), name, " copies between buffers of one type");
    LOOM_CHECK(args[2].type().is_int() && args[2].type().is_scalar(), name,
               " takes an integer byte count");
  } else if (name == "atomic_add_i32") {
    const MemoryScope old_scope = load(0)->buffer->scope;
    LOOM_CHECK(old_scope == MemoryScope::kLocal || old_scope == MemoryScope::kShared, name,
               " stores the old value to local or shared memory");
    LOOM_CHECK(load(1)->buffer->scope == MemoryScope::kGlobal, name, " adds to global memory");
    for (size_t i : {size_t{0}, size_t{1}, size_t{2}})
      LOOM_CHECK(args[i].type() == DType::i32(), name, " works on i32, not ", args[i].type());
    LOOM_CHECK(!args[2].is<Load>(), name, " adds a value, not a Load (which would stand for an "
               "address): load it into a variable first");
  } else if (name == "wgmma_m64k16") {
    load(0);
    LOOM_CHECK(args[0].type() == DType::f32(), name, " accumulates in f32, not ", args[0].type());
    for (size_t i : {size_t{1}, size_t{2}})
      LOOM_CHECK(load(i)->buffer->scope == MemoryScope::kShared, name, " reads shared memory");
    LOOM_CHECK(is_16_bit_float(args[1].type()) && args[1].type() == args[2].type(), name,
               " multiplies f16 or bf16 tiles, not ", args[1].type(), " and ", args[2].type());
    const auto* n = args[3].as<IntImm>();
    LOOM_CHECK(n && n->value >= 8 && n->value <= 256 && n->value % 8 == 0, name,
               " needs a constant N, a multiple of 8 in [8, 256]");
    for (size_t i : {size_t{4}, size_t{5}, size_t{6}}) {
      const auto* bytes = args[i].as<IntImm>();
      LOOM_CHECK(bytes && bytes->value > 0 && bytes->value % 16 == 0 && bytes->value < (1 << 18),
                 name, " needs constant byte strides, multiples of 16 below 2^18");
    }
  } else if (name == "wgmma_fence" || name == "wgmma_wait") {
    LOOM_CHECK(load(0)->buffer->scope == MemoryScope::kLocal && args[0].type() == DType::f32(),
               name, " names the f32 accumulators in registers");
    const auto* count = args[1].as<IntImm>();
    LOOM_CHECK(count && count->value > 0 && count->value <= 128, name,
               " needs a constant count of accumulators in [1, 128]");
    if (name == "wgmma_wait") {
      const auto* n = args[2].as<IntImm>();
      LOOM_CHECK(n && n->value >= 0 && n->value < 8, name, " needs a constant count in [0, 8)");
    }
  } else if (name.rfind("mbarrier_", 0) == 0) {
    const Load* bar = load(0);
    LOOM_CHECK(bar->buffer->scope == MemoryScope::kShared && args[0].type() == DType::i64(), name,
               " names an mbarrier: an i64 element of shared memory");
    if (name == "mbarrier_init" || name == "mbarrier_expect_tx") {
      const auto* n = args[1].as<IntImm>();
      LOOM_CHECK(n && n->value > 0 && n->value < (1 << 20), name,
                 " needs a constant count in [1, 2^20)");
    } else if (name == "mbarrier_wait") {
      LOOM_CHECK(args[1].type().is_int() && args[1].type().is_scalar(), name,
                 " takes an integer phase parity");
    } else if (name == "mbarrier_arrive_cluster") {
      LOOM_CHECK(args[1].type().is_int() && args[1].type().is_scalar(), name,
                 " takes an integer block rank");
    }
  } else if (name == "tma_load_3d" || name == "tma_load_3d_multicast") {
    LOOM_CHECK(load(0)->buffer->scope == MemoryScope::kShared, name, " writes shared memory");
    LOOM_CHECK(load(1)->buffer->scope == MemoryScope::kShared && args[1].type() == DType::i64(),
               name, " completes on an mbarrier: an i64 element of shared memory");
    LOOM_CHECK(load(2)->buffer->scope == MemoryScope::kGlobal, name, " reads global memory");
    LOOM_CHECK(args[0].type() == args[2].type(), name, " copies between buffers of one type");
    for (size_t i = 3; i < 6; ++i)
      LOOM_CHECK(args[i].type().is_int() && args[i].type().is_scalar(), name,
                 " takes integer coordinates");
    for (size_t i = 6; i < 9; ++i) {
      const auto* box = args[i].as<IntImm>();
      LOOM_CHECK(box && box->value >= 1 && box->value <= 256, name,
                 " needs constant box extents in [1, 256]");
    }
    if (name == "tma_load_3d_multicast") {
      const auto* mask = args[9].as<IntImm>();
      LOOM_CHECK(mask && mask->value >= 1 && mask->value < (1 << 16), name,
                 " needs a constant mask of blocks in [1, 2^16)");
    }
  } else if (name == "cluster_dims") {
    const auto* n = args[0].as<IntImm>();
    LOOM_CHECK(n && n->value >= 2 && n->value <= 8, name,
               " needs a constant cluster size in [2, 8]");
  } else if (name == "min_blocks_per_sm") {
    const auto* n = args[0].as<IntImm>();
    LOOM_CHECK(n && n->value >= 1 && n->value <= 32, name,
               " needs a constant block count in [1, 32]");
  } else if (name == "set_max_registers") {
    const auto* n = args[0].as<IntImm>();
    const auto* up = args[1].as<IntImm>();
    LOOM_CHECK(n && n->value >= 24 && n->value <= 256 && n->value % 8 == 0, name,
               " needs a constant count, a multiple of 8 in [24, 256]");
    LOOM_CHECK(up && (up->value == 0 || up->value == 1), name,
               " needs a constant 1 (raise) or 0 (lower)");
  } else if (name == "prefetch" || name == "prefetch_l1") {
    load(0);
  } else if (name == "cp_async_wait") {
    const auto* n = args[0].as<IntImm>();
    LOOM_CHECK(n && n->value >= 0 && n->value < 8, name, " needs a constant count in [0, 8)");
  }
  return make_expr<Call>(DType::i32(), name, std::move(args));
}
}  // namespace

bool Call::takes_addresses(const std::string& name) {
  return name == "mma_m16n8k16" || name == "ldmatrix_x4" || name == "ldmatrix_x4_trans" ||
         name == "cp_async_16" || name == "cp_async_commit" || name == "cp_async_wait" ||
         name == "atomic_add_i32" || name == "thread_fence" || name == "wgmma_m64k16" ||
         name == "wgmma_fence" || name == "wgmma_commit" || name == "wgmma_wait" ||
         name == "fence_proxy_async" || name == "prefetch" || name == "prefetch_l1" ||
         name.rfind("mbarrier_", 0) == 0 || name == "tma_load_3d" || name == "set_max_registers" ||
         name == "tma_load_3d_multicast" || name == "cluster_dims" || name == "cluster_sync" ||
         name == "fence_mbarrier_init" || name == "min_blocks_per_sm";
}

bool Call::is_known(const std::string& name, int* arity) {
  for (const auto& info : kIntrinsics) {
    if (name == info.name) {
      if (arity) *arity = info.arity;
      return true;
    }
  }
  return false;
}

Expr Call::make(const std::string& name, std::vector<Expr> args) {
  int arity = 0;
  LOOM_CHECK(is_known(name, &arity), "unknown intrinsic ", name);
  LOOM_CHECK(static_cast<int>(args.size()) == arity, name, " takes ", arity, " arguments");
  if (takes_addresses(name)) return make_memory_intrinsic(name, std::move(args));
  if (name == "grid_blocks") return make_expr<Call>(DType::i64(), name, std::move(args));
  DType t = args[0].type();
  // The bit casts keep the bits and the lanes and change only how the bits are read.
  if (name == "reinterpret_f32") {
    LOOM_CHECK(t.code() == DTypeCode::kI32, name, " of ", t, " (needs i32)");
    return make_expr<Call>(t.with_code(DTypeCode::kF32), name, std::move(args));
  }
  if (name == "reinterpret_i32") {
    LOOM_CHECK(t.code() == DTypeCode::kF32, name, " of ", t, " (needs f32)");
    return make_expr<Call>(t.with_code(DTypeCode::kI32), name, std::move(args));
  }
  // The marker a template puts on the value of an output store that is final (fusion applies
  // epilogues there); any type, and removed before code generation.
  if (name == "final_value") return make_expr<Call>(t, name, std::move(args));
  // A warp shuffle moves one 32-bit register between lanes; the lane mask is a constant.
  if (name == "shfl_xor_sync") {
    LOOM_CHECK(t == DType::f32() || t == DType::i32(), name, " of ", t,
               " (needs scalar f32 or i32)");
    const auto* mask = args[1].as<IntImm>();
    LOOM_CHECK(mask && mask->value >= 1 && mask->value < 32, name,
               " needs a constant lane mask in [1, 32)");
    return make_expr<Call>(t, name, std::move(args));
  }
  for (const Expr& a : args) LOOM_CHECK(a.type() == t, name, " argument types differ");
  // Bitwise exclusive or of two integers (swizzled layouts); the other intrinsics are float
  // functions, abs also of integers.
  if (name == "bit_xor") {
    LOOM_CHECK(t.is_int(), name, " of ", t, " (needs integers)");
    return make_expr<Call>(t, name, std::move(args));
  }
  LOOM_CHECK(t.is_float() || (name == "abs" && t.is_int()), name, " of ", t);
  return make_expr<Call>(t, name, std::move(args));
}

Expr Ramp::make(Expr base, Expr stride, int lanes) {
  LOOM_CHECK(base.type().is_scalar() && base.type() == stride.type(), "Ramp operand types");
  LOOM_CHECK(lanes > 1, "Ramp of ", lanes, " lanes");
  DType t = base.type().with_lanes(lanes);
  return make_expr<Ramp>(t, std::move(base), std::move(stride), lanes);
}

Expr Broadcast::make(Expr value, int lanes) {
  LOOM_CHECK(value.type().is_scalar(), "Broadcast of vector");
  if (lanes == 1) return value;
  DType t = value.type().with_lanes(lanes);
  return make_expr<Broadcast>(t, std::move(value), lanes);
}

Expr Let::make(Var var, Expr value, Expr body) {
  LOOM_CHECK(var.type() == value.type(), "Let value type differs from its variable");
  DType t = body.type();
  return make_expr<Let>(t, std::move(var), std::move(value), std::move(body));
}

Expr Reduce::make(ReduceKind kind, Expr source, std::vector<IterVar> axes, DType accum_type) {
  LOOM_CHECK(!axes.empty(), "Reduce over no axes");
  source = Cast::make(accum_type, std::move(source));
  return make_expr<Reduce>(accum_type, kind, std::move(source), std::move(axes));
}

Expr Reduce::identity(ReduceKind kind, DType t) {
  switch (kind) {
    case ReduceKind::kSum: return make_zero(t);
    case ReduceKind::kProd: return make_one(t);
    case ReduceKind::kMax: return lowest_value(t);
    case ReduceKind::kMin: return highest_value(t);
  }
  return Expr();
}

Expr Reduce::combine(ReduceKind kind, Expr acc, Expr x) {
  switch (kind) {
    case ReduceKind::kSum: return acc + x;
    case ReduceKind::kProd: return acc * x;
    case ReduceKind::kMax: return max(acc, x);
    case ReduceKind::kMin: return min(acc, x);
  }
  return Expr();
}

// ---- op.hpp -------------------------------------------------------------------------------

Expr make_const(DType t, double value) {
  Expr scalar = t.is_float() ? FloatImm::make(t.element_of(), value)
                             : IntImm::make(t.element_of(), static_cast<int64_t>(value));
  return Broadcast::make(scalar, t.lanes());
}
Expr make_zero(DType t) { return make_const(t, 0); }
Expr make_one(DType t) { return make_const(t, 1); }

std::optional<int64_t> as_const_int(const Expr& e) {
  if (!e.defined()) return std::nullopt;
  if (auto* i = e.as<IntImm>()) return i->value;
  if (auto* b = e.as<Broadcast>()) return as_const_int(b->value);
  return std::nullopt;
}

std::optional<double> as_const_float(const Expr& e) {
  if (!e.defined()) return std::nullopt;
  if (auto* f = e.as<FloatImm>()) return f->value;
  if (auto* b = e.as<Broadcast>()) return as_const_float(b->value);
  return std::nullopt;
}

bool is_const_int(const Expr& e, int64_t v) {
  auto c = as_const_int(e);
  return c && *c == v;
}

namespace {
bool is_imm(const Expr& e) { return e.is<IntImm>() || e.is<FloatImm>(); }

Expr retype_imm(const Expr& imm, DType t) {
  if (auto* i = imm.as<IntImm>()) return make_const(t, static_cast<double>(i->value));
  auto* f = imm.as<FloatImm>();
  LOOM_CHECK(t.is_float(), "float constant ", f->value, " used with ", t);
  return make_const(t, f->value);
}
}  // namespace

void match_types(Expr& a, Expr& b) {
  LOOM_CHECK(a.defined() && b.defined(), "operator on undefined expression");
  if (a.type() == b.type()) return;
  if (is_imm(a) && !is_imm(b)) {
    a = retype_imm(a, b.type());
    return;
  }
  if (is_imm(b) && !is_imm(a)) {
    b = retype_imm(b, a.type());
    return;
  }
  if (a.type().element_of() == b.type().element_of()) {
    if (a.type().is_scalar()) a = Broadcast::make(a, b.type().lanes());
    else if (b.type().is_scalar()) b = Broadcast::make(b, a.type().lanes());
    if (a.type() == b.type()) return;
  }
  if (is_imm(a) && is_imm(b)) {
    // Two literals: widen to float if either is float.
    if (a.type().is_float()) b = retype_imm(b, a.type());
    else a = retype_imm(a, b.type());
    return;
  }
  LOOM_CHECK(false, "mismatched operand types ", a.type(), " and ", b.type());
}

#define LOOM_DEFINE_BINARY_OP(OP, NODE) \
  Expr OP(Expr a, Expr b) {             \
    match_types(a, b);                  \
    return NODE::make(a, b);            \
  }
LOOM_DEFINE_BINARY_OP(operator+, Add)
LOOM_DEFINE_BINARY_OP(operator-, Sub)
LOOM_DEFINE_BINARY_OP(operator*, Mul)
LOOM_DEFINE_BINARY_OP(operator/, Div)
LOOM_DEFINE_BINARY_OP(operator%, Mod)
LOOM_DEFINE_BINARY_OP(operator==, EQ)
LOOM_DEFINE_BINARY_OP(operator!=, NE)
LOOM_DEFINE_BINARY_OP(operator<, LT)
LOOM_DEFINE_BINARY_OP(operator<=, LE)
LOOM_DEFINE_BINARY_OP(operator>, GT)
LOOM_DEFINE_BINARY_OP(operator>=, GE)
LOOM_DEFINE_BINARY_OP(operator&&, And)
LOOM_DEFINE_BINARY_OP(operator||, Or)
LOOM_DEFINE_BINARY_OP(min, Min)
LOOM_DEFINE_BINARY_OP(max, Max)
#undef LOOM_DEFINE_BINARY_OP

Expr operator-(Expr a) { return make_zero(a.type()) - a; }
Expr operator!(Expr a) { return Not::make(std::move(a)); }

Expr select(Expr cond, Expr t, Expr f) {
  match_types(t, f);
  return Select::make(std::move(cond), std::move(t), std::move(f));
}
Expr cast(DType t, Expr v) { return Cast::make(t, std::move(v)); }
Expr exp(Expr x) { return Call::make("exp", {std::move(x)}); }
Expr log(Expr x) { return Call::make("log", {std::move(x)}); }
Expr sqrt(Expr x) { return Call::make("sqrt", {std::move(x)}); }
Expr rsqrt(Expr x) { return Call::make("rsqrt", {std::move(x)}); }
Expr tanh(Expr x) { return Call::make("tanh", {std::move(x)}); }
Expr erf(Expr x) { return Call::make("erf", {std::move(x)}); }
Expr abs(Expr x) { return Call::make("abs", {std::move(x)}); }
Expr floor(Expr x) { return Call::make("floor", {std::move(x)}); }
Expr ceil(Expr x) { return Call::make("ceil", {std::move(x)}); }
Expr round(Expr x) { return Call::make("round", {std::move(x)}); }
Expr pow(Expr x, Expr y) {
  match_types(x, y);
  return Call::make("pow", {std::move(x), std::move(y)});
}
Expr bit_xor(Expr a, Expr b) {
  match_types(a, b);
  if (auto x = as_const_int(a), y = as_const_int(b); x && y && a.type().is_scalar())
    return make_const(a.type(), static_cast<double>(*x ^ *y));
  return Call::make("bit_xor", {std::move(a), std::move(b)});
}
Expr fma(Expr a, Expr b, Expr c) {
  match_types(a, b);
  match_types(a, c);
  return Call::make("fma", {std::move(a), std::move(b), std::move(c)});
}
Expr reinterpret(DType t, Expr x) {
  LOOM_CHECK(t.lanes() == x.type().lanes(), "reinterpret changes lanes ", x.type(), " -> ", t);
  if (t == x.type()) return x;
  if (t.code() == DTypeCode::kF32) return Call::make("reinterpret_f32", {std::move(x)});
  if (t.code() == DTypeCode::kI32) return Call::make("reinterpret_i32", {std::move(x)});
  LOOM_CHECK(false, "reinterpret of ", x.type(), " as ", t, " (f32 <-> i32 only)");
  return Expr();
}
Expr final_value(Expr x) { return Call::make("final_value", {std::move(x)}); }
Expr shfl_xor_sync(Expr x, int lane_mask) {
  return Call::make("shfl_xor_sync", {std::move(x), Expr(int64_t{lane_mask})});
}

Expr sigmoid(Expr x) {
  DType t = x.type();
  return make_one(t) / (make_one(t) + exp(-x));
}

Expr lowest_value(DType t) {
  switch (t.code()) {
    case DTypeCode::kF32: return make_const(t, -std::numeric_limits<float>::infinity());
    case DTypeCode::kF16:
    case DTypeCode::kBF16: return make_const(t, -std::numeric_limits<double>::infinity());
    case DTypeCode::kI8: return make_const(t, -128);
    case DTypeCode::kI32: return make_const(t, std::numeric_limits<int32_t>::min());
    case DTypeCode::kI64:
      return Broadcast::make(IntImm::make(t.element_of(), std::numeric_limits<int64_t>::min()),
                             t.lanes());
    case DTypeCode::kBool: return make_const(t, 0);
  }
  return Expr();
}

Expr highest_value(DType t) {
  switch (t.code()) {
    case DTypeCode::kF32: return make_const(t, std::numeric_limits<float>::infinity());
    case DTypeCode::kF16:
    case DTypeCode::kBF16: return make_const(t, std::numeric_limits<double>::infinity());
    case DTypeCode::kI8: return make_const(t, 127);
    case DTypeCode::kI32: return make_const(t, std::numeric_limits<int32_t>::max());
    case DTypeCode::kI64:
      return Broadcast::make(IntImm::make(t.element_of(), std::numeric_limits<int64_t>::max()),
                             t.lanes());
    case DTypeCode::kBool: return make_const(t, 1);
  }
  return Expr();
}

}  // namespace loom::ir
