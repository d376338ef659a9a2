// emit_llvm: flattened loop IR -> LLVM IR, one internal function plus one exported wrapper per
// func. Unsupported input is collected as an absl::Status while emitting; nothing throws or aborts.

#include "codegen/emit_llvm.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "codegen/scoped_bind.hpp"
#include "llvm/IR/BasicBlock.h"
#include "llvm/IR/Constants.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/Function.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/Intrinsics.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Metadata.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/raw_ostream.h"
#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/visitor.hpp"

namespace loom::codegen {

EmittedModule::EmittedModule() = default;
EmittedModule::EmittedModule(EmittedModule&&) noexcept = default;
EmittedModule& EmittedModule::operator=(EmittedModule&&) noexcept = default;
EmittedModule::~EmittedModule() = default;

namespace {

// Allocations up to this many bytes with a constant size live on the stack.
constexpr int64_t kMaxStackAllocationBytes = 4096;

// Symbols keep only [A-Za-z0-9_] so dumps and disassembly stay readable; a symbol suffix that
// starts with '.' (CpuJit's ".loom<n>") then can never collide with another func's name.
std::string sanitize_symbol(const std::string& name) {
  std::string out;
  for (char c : name) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    out += ok ? c : '_';
  }
  return out.empty() ? "kernel" : out;
}

// The base of a unit-stride Ramp index: such accesses become plain vector loads/stores.
std::optional<ir::Expr> dense_ramp_base(const ir::Expr& index) {
  const ir::Ramp* ramp = index.as<ir::Ramp>();
  if (ramp && ir::is_const_int(ramp->stride, 1)) return ramp->base;
  return std::nullopt;
}

// Variables and buffers a statement refers to, in first-use order (deterministic code). Sizes of
// allocations count as uses: they are evaluated where the allocation is emitted.
class UseCollector : public ir::IRVisitor {
 public:
  std::vector<const ir::VarNode*> vars;
  std::vector<const ir::BufferNode*> buffers;

 protected:
  void visit_var(const ir::VarNode* op) override {
    if (seen_.insert(op).second) vars.push_back(op);
  }
  void visit_load(const ir::Load* op) override {
    use(op->buffer.get());
    IRVisitor::visit_load(op);
  }
  void visit_store(const ir::Store* op) override {
    use(op->buffer.get());
    IRVisitor::visit_store(op);
  }
  void visit_allocate(const ir::Allocate* op) override {
    ir::Expr size = op->buffer->layout.physical_size();
    if (size.defined()) visit(size);
    IRVisitor::visit_allocate(op);
  }

 private:
  void use(const ir::BufferNode* b) {
    if (seen_.insert(b).second) buffers.push_back(b);
  }
  std::set<const void*> seen_;
};

// Emits one ir::Func. Errors are recorded in status_ (first one wins) and emission continues
// with poison values of the right type, so the walk never has to unwind.
class FuncEmitter {
 public:
  FuncEmitter(llvm::Module& module, const EmitOptions& options)
      : ctx_(module.getContext()), module_(module), options_(options), b_(ctx_) {}

  absl::Status emit_func(const ir::Func& f, const std::string& symbol);

 private:
  struct BufferBinding {
    llvm::Value* base;
    DType dtype;
  };

  using VarMap = std::map<const ir::VarNode*, llvm::Value*>;
  using BufferMap = std::map<const ir::BufferNode*, BufferBinding>;

  // ---- types -------------------------------------------------------------------------------
  llvm::Type* element_type(DType t) const {
    switch (t.code()) {
      case DTypeCode::kF32:
        return llvm::Type::getFloatTy(ctx_);
      case DTypeCode::kF16:
        return llvm::Type::getHalfTy(ctx_);
      case DTypeCode::kBF16:
        return llvm::Type::getBFloatTy(ctx_);
      case DTypeCode::kI8:
        return llvm::Type::getInt8Ty(ctx_);
      case DTypeCode::kI32:
        return llvm::Type::getInt32Ty(ctx_);
      case DTypeCode::kI64:
        return llvm::Type::getInt64Ty(ctx_);
      case DTypeCode::kBool:
        return llvm::Type::getInt1Ty(ctx_);
    }
    return nullptr;
  }
  llvm::Type* with_lanes(llvm::Type* scalar, int lanes) const {
    return lanes > 1 ? llvm::FixedVectorType::get(scalar, static_cast<unsigned>(lanes)) : scalar;
  }
  // Type of a value in registers (bool is i1).
  llvm::Type* reg_type(DType t) const { return with_lanes(element_type(t), t.lanes()); }
  // Type of a value in memory (bool is one byte).
  llvm::Type* mem_type(DType t) const {
    llvm::Type* s = t.is_bool() ? llvm::Type::getInt8Ty(ctx_) : element_type(t);
    return with_lanes(s, t.lanes());
  }
  llvm::Type* f32_type(int lanes) const { return with_lanes(llvm::Type::getFloatTy(ctx_), lanes); }
  llvm::Type* i64_type(int lanes) const { return with_lanes(llvm::Type::getInt64Ty(ctx_), lanes); }

  // ---- errors ------------------------------------------------------------------------------
  void fail(absl::Status s) {
    if (status_.ok()) status_ = std::move(s);
  }
  llvm::Value* fail_expr(const ir::Expr& e, absl::Status s) {
    fail(std::move(s));
    return llvm::PoisonValue::get(reg_type(e.type()));
  }

  // ---- conversions -------------------------------------------------------------------------
  // f16/bf16 arithmetic is done in f32: correct everywhere, and x86 without native half-precision
  // arithmetic would promote anyway.
  llvm::Value* to_f32(llvm::Value* v, DType t);
  llvm::Value* from_f32(llvm::Value* v, DType t);
  llvm::Value* cast_value(llvm::Value* v, DType from, DType to);
  llvm::Value* to_index(llvm::Value* v, DType t);
  llvm::Value* splat(int lanes, llvm::Value* v) {
    return lanes > 1 ? b_.CreateVectorSplat(static_cast<unsigned>(lanes), v) : v;
  }

  // ---- expressions -------------------------------------------------------------------------
  llvm::Value* emit(const ir::Expr& e);
  llvm::Value* emit_binary(const ir::Expr& e);
  llvm::Value* emit_ramp(const ir::Expr& e, const ir::Ramp* op);
  llvm::Value* emit_call(const ir::Expr& e, const ir::Call* op);
  llvm::Value* emit_prefetch(const ir::Load* op, bool into_l1);
  llvm::Value* call_libm(const char* name, llvm::Value* x);
  llvm::Value* emit_load(const ir::Expr& e, const ir::Load* op);
  // Pointer to element `index` (scalar or vector of indices) of a buffer.
  llvm::Value* element_ptr(const BufferBinding& buf, llvm::Value* index) {
    return b_.CreateInBoundsGEP(mem_type(buf.dtype), buf.base, index);
  }
  const BufferBinding* find_buffer(const ir::BufferNode* node, const char* what);

  // ---- statements --------------------------------------------------------------------------
  void emit(const ir::Stmt& s);
  void emit_for(const ir::For* op);
  // A counted loop var in [lo, hi) around body, with loop metadata for its kind.
  void emit_loop(const ir::Var& var, llvm::Value* lo, llvm::Value* hi, const ir::Stmt& body,
                 ir::ForKind kind);
  // A parallel loop: its body is outlined into a function that the thread pool calls per chunk
  // of iterations, with the variables and buffers it uses passed through a context array.
  void emit_parallel_for(const ir::For* op);
  llvm::Function* emit_parallel_body(const std::string& symbol, const ir::For* op,
                                     const std::vector<const ir::VarNode*>& vars,
                                     const std::vector<const ir::BufferNode*>& buffers);
  void emit_store(const ir::Store* op);
  void emit_if(const ir::IfThenElse* op);
  void emit_allocate(const ir::Allocate* op);
  llvm::MDNode* loop_metadata(llvm::ArrayRef<llvm::Metadata*> property);

  void set_target_attributes(llvm::Function* fn) const {
    if (!options_.cpu_name.empty()) fn->addFnAttr("target-cpu", options_.cpu_name);
    if (!options_.features.empty()) fn->addFnAttr("target-features", options_.features);
    if (options_.prefer_512_bit_vectors) fn->addFnAttr("prefer-vector-width", "512");
    fn->addFnAttr(llvm::Attribute::NoUnwind);
  }

  llvm::LLVMContext& ctx_;
  llvm::Module& module_;
  const EmitOptions& options_;
  llvm::IRBuilder<> b_;
  llvm::Function* fn_ = nullptr;
  std::string symbol_;       // exported symbol of the func being emitted (names outlined bodies)
  int num_parallel_ = 0;     // outlined parallel bodies so far
  VarMap vars_;
  BufferMap buffers_;
  absl::Status status_;
};

// ---- conversions ---------------------------------------------------------------------------

llvm::Value* FuncEmitter::to_f32(llvm::Value* v, DType t) {
  switch (t.code()) {
    case DTypeCode::kF32:
      return v;
    case DTypeCode::kF16:
      return b_.CreateFPExt(v, f32_type(t.lanes()));
    case DTypeCode::kBF16: {
      // bf16 is the high half of an f32: widen bit-wise (exact, no runtime library needed).
      llvm::Value* bits = b_.CreateBitCast(v, with_lanes(b_.getInt16Ty(), t.lanes()));
      bits = b_.CreateZExt(bits, with_lanes(b_.getInt32Ty(), t.lanes()));
      bits = b_.CreateShl(bits, 16);
      return b_.CreateBitCast(bits, f32_type(t.lanes()));
    }
    default:
      break;
  }
  LOOM_CHECK(false, "to_f32 of ", t);
  return nullptr;
}

llvm::Value* FuncEmitter::from_f32(llvm::Value* v, DType t) {
  switch (t.code()) {
    case DTypeCode::kF32:
      return v;
    case DTypeCode::kF16:
      return b_.CreateFPTrunc(v, reg_type(t));
    case DTypeCode::kBF16: {
      // Round to nearest even on the bit pattern, keeping NaNs quiet; the same rule as
      // loom::f32_to_bf16, and it avoids depending on a libgcc __truncsfbf2.
      llvm::Type* i32 = with_lanes(b_.getInt32Ty(), t.lanes());
      llvm::Value* x = b_.CreateBitCast(v, i32);
      llvm::Value* high = b_.CreateLShr(x, 16);
      llvm::Value* lsb = b_.CreateAnd(high, llvm::ConstantInt::get(i32, 1));
      llvm::Value* rounded = b_.CreateLShr(
          b_.CreateAdd(x, b_.CreateAdd(lsb, llvm::ConstantInt::get(i32, 0x7fff))), 16);
      llvm::Value* quiet_nan = b_.CreateOr(high, llvm::ConstantInt::get(i32, 0x40));
      llvm::Value* bits = b_.CreateSelect(b_.CreateFCmpUNO(v, v), quiet_nan, rounded);
      bits = b_.CreateTrunc(bits, with_lanes(b_.getInt16Ty(), t.lanes()));
      return b_.CreateBitCast(bits, reg_type(t));
    }
    default:
      break;
  }
  LOOM_CHECK(false, "from_f32 to ", t);
  return nullptr;
}

llvm::Value* FuncEmitter::cast_value(llvm::Value* v, DType from, DType to) {
  if (from == to) return v;
  int lanes = to.lanes();
  if (to.is_bool()) {
    if (from.is_float())
      return b_.CreateFCmpUNE(to_f32(v, from), llvm::Constant::getNullValue(f32_type(lanes)));
    return b_.CreateICmpNE(v, llvm::Constant::getNullValue(reg_type(from)));
  }
  if (from.is_bool()) {
    if (to.is_int()) return b_.CreateZExt(v, reg_type(to));
    return from_f32(b_.CreateUIToFP(v, f32_type(lanes)), to);
  }
  if (from.is_float() && to.is_float()) return from_f32(to_f32(v, from), to);
  if (from.is_int() && to.is_int()) return b_.CreateSExtOrTrunc(v, reg_type(to));
  if (from.is_int()) return from_f32(b_.CreateSIToFP(v, f32_type(lanes)), to);
  return b_.CreateFPToSI(to_f32(v, from), reg_type(to));
}

// Indices address memory as i64 (sign-extended, like C's array subscripts).
llvm::Value* FuncEmitter::to_index(llvm::Value* v, DType t) {
  if (t.is_bool()) return b_.CreateZExt(v, i64_type(t.lanes()));
  return b_.CreateSExtOrTrunc(v, i64_type(t.lanes()));
}

// ---- expressions ---------------------------------------------------------------------------

llvm::Value* FuncEmitter::emit(const ir::Expr& e) {
  if (!e.defined()) {
    fail(absl::InvalidArgumentError("undefined expression in a kernel body"));
    return llvm::PoisonValue::get(b_.getInt64Ty());
  }
  switch (e.kind()) {
    case ir::ExprKind::kIntImm: {
      const auto* op = e.as<ir::IntImm>();
      if (e.type().is_bool()) return b_.getInt1(op->value != 0);
      return llvm::ConstantInt::get(reg_type(e.type()), static_cast<uint64_t>(op->value),
                                    /*isSigned=*/true);
    }
    case ir::ExprKind::kFloatImm:
      return llvm::ConstantFP::get(reg_type(e.type()), e.as<ir::FloatImm>()->value);
    case ir::ExprKind::kVar: {
      const auto* op = e.as<ir::VarNode>();
      auto it = vars_.find(op);
      if (it == vars_.end())
        return fail_expr(e, absl::InvalidArgumentError(
                                str_cat("variable '", op->name,
                                        "' is used outside the scope of any loop, let or scalar "
                                        "parameter that defines it")));
      return it->second;
    }
    case ir::ExprKind::kNot:
      return b_.CreateNot(emit(e.as<ir::Not>()->a));
    case ir::ExprKind::kSelect: {
      // A scalar condition may select between vectors: LLVM's select accepts that directly.
      const auto* op = e.as<ir::Select>();
      llvm::Value* cond = emit(op->cond);
      llvm::Value* t = emit(op->true_value);
      llvm::Value* f = emit(op->false_value);
      return b_.CreateSelect(cond, t, f);
    }
    case ir::ExprKind::kCast: {
      const auto* op = e.as<ir::Cast>();
      return cast_value(emit(op->value), op->value.type(), e.type());
    }
    case ir::ExprKind::kLoad:
      return emit_load(e, e.as<ir::Load>());
    case ir::ExprKind::kCall:
      return emit_call(e, e.as<ir::Call>());
    case ir::ExprKind::kRamp:
      return emit_ramp(e, e.as<ir::Ramp>());
    case ir::ExprKind::kBroadcast: {
      const auto* op = e.as<ir::Broadcast>();
      return splat(op->lanes, emit(op->value));
    }
    case ir::ExprKind::kLet: {
      const auto* op = e.as<ir::Let>();
      ScopedBind<VarMap> bind(vars_, op->var.node(), emit(op->value));
      return emit(op->body);
    }
    case ir::ExprKind::kReduce:
      return fail_expr(e, absl::InvalidArgumentError(
                              "Reduce node reached the CPU code generator; lower reductions to "
                              "accumulator loops first: " +
                              ir::to_string(e)));
    default:
      return emit_binary(e);
  }
}

llvm::Value* FuncEmitter::emit_binary(const ir::Expr& e) {
  using K = ir::ExprKind;
  ir::BinaryView operands = ir::binary_operands(e);
  DType t = operands.a->type();
  llvm::Value* a = emit(*operands.a);
  llvm::Value* b = emit(*operands.b);
  K kind = e.kind();

  if (t.is_float()) {
    a = to_f32(a, t);
    b = to_f32(b, t);
    llvm::Value* r = nullptr;
    switch (kind) {
      case K::kAdd:
        r = b_.CreateFAdd(a, b);
        break;
      case K::kSub:
        r = b_.CreateFSub(a, b);
        break;
      case K::kMul:
        r = b_.CreateFMul(a, b);
        break;
      case K::kDiv:
        r = b_.CreateFDiv(a, b);
        break;
      case K::kMod:
        r = b_.CreateFRem(a, b);
        break;
      case K::kMin:
        r = b_.CreateMinNum(a, b);
        break;
      case K::kMax:
        r = b_.CreateMaxNum(a, b);
        break;
      // Ordered comparisons are false on NaN; NE is its exact negation (unordered), as in C.
      case K::kEQ:
        return b_.CreateFCmpOEQ(a, b);
      case K::kNE:
        return b_.CreateFCmpUNE(a, b);
      case K::kLT:
        return b_.CreateFCmpOLT(a, b);
      case K::kLE:
        return b_.CreateFCmpOLE(a, b);
      case K::kGT:
        return b_.CreateFCmpOGT(a, b);
      case K::kGE:
        return b_.CreateFCmpOGE(a, b);
      default:
        return fail_expr(e, absl::InvalidArgumentError(
                                str_cat(ir::expr_kind_name(kind), " of ", t, " is not supported")));
    }
    return from_f32(r, t);
  }

  if (t.is_bool()) {
    switch (kind) {
      case K::kAnd:
      case K::kMin:
        return b_.CreateAnd(a, b);
      case K::kOr:
      case K::kMax:
        return b_.CreateOr(a, b);
      case K::kEQ:
        return b_.CreateICmpEQ(a, b);
      case K::kNE:
        return b_.CreateICmpNE(a, b);
      case K::kLT:
        return b_.CreateICmpULT(a, b);
      case K::kLE:
        return b_.CreateICmpULE(a, b);
      case K::kGT:
        return b_.CreateICmpUGT(a, b);
      case K::kGE:
        return b_.CreateICmpUGE(a, b);
      default:
        return fail_expr(e, absl::InvalidArgumentError(
                                str_cat(ir::expr_kind_name(kind), " of ", t, " is not supported")));
    }
  }

  // Integers are signed; Div and Mod truncate toward zero (C semantics), as sdiv/srem do.
  switch (kind) {
    case K::kAdd:
      return b_.CreateAdd(a, b);
    case K::kSub:
      return b_.CreateSub(a, b);
    case K::kMul:
      return b_.CreateMul(a, b);
    case K::kDiv:
      return b_.CreateSDiv(a, b);
    case K::kMod:
      return b_.CreateSRem(a, b);
    case K::kMin:
      return b_.CreateBinaryIntrinsic(llvm::Intrinsic::smin, a, b);
    case K::kMax:
      return b_.CreateBinaryIntrinsic(llvm::Intrinsic::smax, a, b);
    case K::kEQ:
      return b_.CreateICmpEQ(a, b);
    case K::kNE:
      return b_.CreateICmpNE(a, b);
    case K::kLT:
      return b_.CreateICmpSLT(a, b);
    case K::kLE:
      return b_.CreateICmpSLE(a, b);
    case K::kGT:
      return b_.CreateICmpSGT(a, b);
    case K::kGE:
      return b_.CreateICmpSGE(a, b);
    default:
      return fail_expr(e, absl::InvalidArgumentError(
                              str_cat(ir::expr_kind_name(kind), " of ", t, " is not supported")));
  }
}

llvm::Value* FuncEmitter::emit_ramp(const ir::Expr& e, const ir::Ramp* op) {
  DType t = op->base.type();
  if (t.is_bool()) return fail_expr(e, absl::InvalidArgumentError("Ramp of bool is not supported"));
  llvm::Value* base = emit(op->base);
  llvm::Value* stride = emit(op->stride);
  if (t.is_float()) {
    base = to_f32(base, t);
    stride = to_f32(stride, t);
  }
  llvm::Type* scalar = t.is_float() ? b_.getFloatTy() : element_type(t);
  std::vector<llvm::Constant*> steps;
  for (int i = 0; i < op->lanes; ++i)
    steps.push_back(t.is_float() ? llvm::ConstantFP::get(scalar, i)
                                 : llvm::ConstantInt::get(scalar, i));
  llvm::Value* offsets = llvm::ConstantVector::get(steps);
  if (t.is_float()) {
    llvm::Value* r =
        b_.CreateFAdd(splat(op->lanes, base), b_.CreateFMul(splat(op->lanes, stride), offsets));
    return from_f32(r, e.type());
  }
  return b_.CreateAdd(splat(op->lanes, base), b_.CreateMul(splat(op->lanes, stride), offsets));
}

// Scalar libm call per lane: these functions have no LLVM intrinsic, and the vectorised
// versions would need a vector math library we do not assume.
llvm::Value* FuncEmitter::call_libm(const char* name, llvm::Value* x) {
  llvm::Type* f32 = b_.getFloatTy();
  llvm::FunctionCallee callee =
      module_.getOrInsertFunction(name, llvm::FunctionType::get(f32, {f32}, false));
  if (auto* fn = llvm::dyn_cast<llvm::Function>(callee.getCallee())) {
    fn->setDoesNotThrow();
    fn->setWillReturn();
    fn->setDoesNotAccessMemory();  // tanhf/erff never set errno for float arguments
  }
  auto* vt = llvm::dyn_cast<llvm::FixedVectorType>(x->getType());
  if (!vt) return b_.CreateCall(callee, {x});
  llvm::Value* out = llvm::PoisonValue::get(vt);
  for (unsigned i = 0; i < vt->getNumElements(); ++i) {
    llvm::Value* lane = b_.CreateCall(callee, {b_.CreateExtractElement(x, i)});
    out = b_.CreateInsertElement(out, lane, i);
  }
  return out;
}

llvm::Value* FuncEmitter::emit_call(const ir::Expr& e, const ir::Call* op) {
  DType t = e.type();
  const std::string& name = op->name;
  if (name == "shfl_xor_sync")
    return fail_expr(e, absl::InvalidArgumentError(
                            "shfl_xor_sync is a CUDA warp shuffle; the CPU code generator cannot "
                            "emit it (schedule this kernel with a CPU template)"));
  if (name == "prefetch" || name == "prefetch_l1")
    return emit_prefetch(op->args[0].as<ir::Load>(), name == "prefetch_l1");
  if (name == "grid_blocks")
    return fail_expr(e, absl::InvalidArgumentError(
                            "grid_blocks is a CUDA launch's block count; the CPU code generator "
                            "cannot emit it"));
  if (ir::Call::takes_addresses(name))
    return fail_expr(e, absl::InvalidArgumentError(
                            name + " is a CUDA tensor-core or async-copy intrinsic; the CPU code "
                                   "generator cannot emit it"));
  std::vector<llvm::Value*> args;
  for (const ir::Expr& a : op->args) args.push_back(emit(a));

  if ((name == "reinterpret_f32" || name == "reinterpret_i32") && args.size() == 1)
    return b_.CreateBitCast(args[0], reg_type(t));
  if (t.is_int()) {
    if (name == "abs" && args.size() == 1)
      return b_.CreateBinaryIntrinsic(llvm::Intrinsic::abs, args[0], b_.getFalse());
    if (name == "bit_xor" && args.size() == 2) return b_.CreateXor(args[0], args[1]);
    return fail_expr(
        e, absl::InvalidArgumentError(str_cat("intrinsic ", name, " of ", t, " is not supported")));
  }
  if (!t.is_float())
    return fail_expr(
        e, absl::InvalidArgumentError(str_cat("intrinsic ", name, " of ", t, " is not supported")));
  for (llvm::Value*& a : args) a = to_f32(a, t);

  auto unary = [&](llvm::Intrinsic::ID id) { return b_.CreateUnaryIntrinsic(id, args[0]); };
  llvm::Value* r = nullptr;
  if (name == "exp" && args.size() == 1)
    r = unary(llvm::Intrinsic::exp);
  else if (name == "log" && args.size() == 1)
    r = unary(llvm::Intrinsic::log);
  else if (name == "sqrt" && args.size() == 1)
    r = unary(llvm::Intrinsic::sqrt);
  else if (name == "rsqrt" && args.size() == 1)
    r = b_.CreateFDiv(llvm::ConstantFP::get(args[0]->getType(), 1.0), unary(llvm::Intrinsic::sqrt));
  else if (name == "tanh" && args.size() == 1)
    r = call_libm("tanhf", args[0]);
  else if (name == "erf" && args.size() == 1)
    r = call_libm("erff", args[0]);
  else if (name == "abs" && args.size() == 1)
    r = unary(llvm::Intrinsic::fabs);
  else if (name == "floor" && args.size() == 1)
    r = unary(llvm::Intrinsic::floor);
  else if (name == "ceil" && args.size() == 1)
    r = unary(llvm::Intrinsic::ceil);
  else if (name == "round" && args.size() == 1)
    r = unary(llvm::Intrinsic::round);
  else if (name == "pow" && args.size() == 2)
    r = b_.CreateBinaryIntrinsic(llvm::Intrinsic::pow, args[0], args[1]);
  else if (name == "fma" && args.size() == 3)
    r = b_.CreateIntrinsic(llvm::Intrinsic::fma, {args[0]->getType()}, args);
  else
    return fail_expr(e, absl::InvalidArgumentError(str_cat("unknown intrinsic ", name, " with ",
                                                           args.size(), " arguments")));
  return from_f32(r, t);
}

// prefetcht1 (prefetcht0 into L1): the element's cache line towards L2, for reading (the value
// is a dummy 0).
llvm::Value* FuncEmitter::emit_prefetch(const ir::Load* op, bool into_l1) {
  const BufferBinding* buf = find_buffer(op->buffer.get(), "prefetch");
  if (!buf) return b_.getInt32(0);
  if (op->indices.size() != 1) {
    fail(absl::InvalidArgumentError(str_cat("prefetch of buffer '", op->buffer->name,
                                            "' needs flattened IR (one physical element index)")));
    return b_.getInt32(0);
  }
  // A plain GEP: the element may lie outside the buffer (an in-bounds GEP would make that
  // address poison).
  llvm::Value* ptr = b_.CreateGEP(mem_type(buf->dtype), buf->base,
                                  to_index(emit(op->indices[0]), op->indices[0].type()));
  b_.CreateIntrinsic(llvm::Intrinsic::prefetch, {ptr->getType()},
                     {ptr, b_.getInt32(0), b_.getInt32(into_l1 ? 3 : 2), b_.getInt32(1)});
  return b_.getInt32(0);
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

llvm::Value* FuncEmitter::emit_load(const ir::Expr& e, const ir::Load* op) {
  if (op->indices.size() != 1)
    return fail_expr(e, absl::InvalidArgumentError(str_cat(
                            "Load of buffer '", op->buffer->name, "' has ", op->indices.size(),
                            " indices; the CPU code generator needs flattened IR (one physical "
                            "element index per access): ",
                            ir::to_string(e))));
  const BufferBinding* buf = find_buffer(op->buffer.get(), "Load");
  if (!buf) return llvm::PoisonValue::get(reg_type(e.type()));
  const ir::Expr& index = op->indices[0];
  int lanes = e.type().lanes();
  llvm::Align align(static_cast<uint64_t>(buf->dtype.bytes()));
  llvm::Type* type = mem_type(e.type());
  llvm::Value* raw;
  if (auto base = dense_ramp_base(index); lanes > 1 && base) {
    raw = b_.CreateAlignedLoad(type, element_ptr(*buf, to_index(emit(*base), base->type())), align);
  } else {
    // Scalar index: scalar load. Any other vector index: a gather (x86 AVX2 has native ones;
    // elsewhere the back end scalarises it).
    llvm::Value* ptr = element_ptr(*buf, to_index(emit(index), index.type()));
    if (lanes > 1)
      raw = b_.CreateMaskedGather(type, ptr, align);
    else
      raw = b_.CreateAlignedLoad(type, ptr, align);
  }
  if (buf->dtype.is_bool()) return b_.CreateICmpNE(raw, llvm::Constant::getNullValue(type));
  return raw;
}

// ---- statements ----------------------------------------------------------------------------

void FuncEmitter::emit(const ir::Stmt& s) {
  if (!s.defined() || !status_.ok()) return;
  switch (s.kind()) {
    case ir::StmtKind::kLetStmt: {
      const auto* op = s.as<ir::LetStmt>();
      ScopedBind<VarMap> bind(vars_, op->var.node(), emit(op->value));
      emit(op->body);
      return;
    }
    case ir::StmtKind::kFor:
      return emit_for(s.as<ir::For>());
    case ir::StmtKind::kStore:
      return emit_store(s.as<ir::Store>());
    case ir::StmtKind::kSeq:
      for (const ir::Stmt& child : s.as<ir::Seq>()->stmts) emit(child);
      return;
    case ir::StmtKind::kIfThenElse:
      return emit_if(s.as<ir::IfThenElse>());
    case ir::StmtKind::kAllocate:
      return emit_allocate(s.as<ir::Allocate>());
    case ir::StmtKind::kBarrier:
      fail(absl::UnimplementedError(
          "Barrier (GPU block synchronisation) is not supported by the CPU code generator"));
      return;
    case ir::StmtKind::kEvaluate:
      emit(s.as<ir::Evaluate>()->value);
      return;
  }
}

llvm::MDNode* FuncEmitter::loop_metadata(llvm::ArrayRef<llvm::Metadata*> property) {
  // A loop ID is a distinct node whose first operand is itself, followed by its properties.
  llvm::Metadata* ops[] = {nullptr, llvm::MDNode::get(ctx_, property)};
  llvm::MDNode* id = llvm::MDNode::getDistinct(ctx_, ops);
  id->replaceOperandWith(0, id);
  return id;
}

void FuncEmitter::emit_for(const ir::For* op) {
  if (op->for_kind == ir::ForKind::kGpuBlock || op->for_kind == ir::ForKind::kGpuThread) {
    fail(absl::UnimplementedError(str_cat(
        "loop over '", op->var.name(), "' is a ", ir::for_kind_name(op->for_kind),
        " loop, which the CPU code generator does not support (GPU loops need a CUDA target)")));
    return;
  }
  if (op->for_kind == ir::ForKind::kParallel) return emit_parallel_for(op);
  llvm::Value* lo = emit(op->min);
  llvm::Value* hi = b_.CreateAdd(lo, emit(op->extent), op->var.name() + ".end");
  emit_loop(op->var, lo, hi, op->body, op->for_kind);
}

void FuncEmitter::emit_loop(const ir::Var& loop_var, llvm::Value* lo, llvm::Value* hi,
                            const ir::Stmt& loop_body, ir::ForKind kind) {
  const std::string& name = loop_var.name();
  llvm::BasicBlock* preheader = b_.GetInsertBlock();
  llvm::BasicBlock* header = llvm::BasicBlock::Create(ctx_, name + ".header", fn_);
  llvm::BasicBlock* body = llvm::BasicBlock::Create(ctx_, name + ".body", fn_);
  llvm::BasicBlock* latch = llvm::BasicBlock::Create(ctx_, name + ".latch", fn_);
  llvm::BasicBlock* exit = llvm::BasicBlock::Create(ctx_, name + ".exit", fn_);
  b_.CreateBr(header);

  b_.SetInsertPoint(header);
  llvm::PHINode* var = b_.CreatePHI(reg_type(loop_var.type()), 2, name);
  var->addIncoming(lo, preheader);
  b_.CreateCondBr(b_.CreateICmpSLT(var, hi), body, exit);

  b_.SetInsertPoint(body);
  {
    ScopedBind<VarMap> bind(vars_, loop_var.node(), var);
    emit(loop_body);
  }
  b_.CreateBr(latch);

  b_.SetInsertPoint(latch);
  // The counter stays below hi, so the increment cannot overflow.
  llvm::Value* next = b_.CreateAdd(var, llvm::ConstantInt::get(var->getType(), 1), "", false,
                                   /*HasNSW=*/true);
  llvm::BranchInst* backedge = b_.CreateBr(header);
  var->addIncoming(next, latch);
  if (kind == ir::ForKind::kUnrolled) {
    backedge->setMetadata(llvm::LLVMContext::MD_loop,
                          loop_metadata({llvm::MDString::get(ctx_, "llvm.loop.unroll.full")}));
  } else if (kind == ir::ForKind::kVectorized) {
    llvm::Metadata* enable[] = {llvm::MDString::get(ctx_, "llvm.loop.vectorize.enable"),
                                llvm::ConstantAsMetadata::get(b_.getTrue())};
    backedge->setMetadata(llvm::LLVMContext::MD_loop, loop_metadata(enable));
  } else if (kind == ir::ForKind::kSerial && options_.full_unroll_limit > 0) {
    auto* l = llvm::dyn_cast<llvm::ConstantInt>(lo);
    auto* h = llvm::dyn_cast<llvm::ConstantInt>(hi);
    if (l && h && h->getSExtValue() - l->getSExtValue() > options_.full_unroll_limit)
      backedge->setMetadata(llvm::LLVMContext::MD_loop,
                            loop_metadata({llvm::MDString::get(ctx_, "llvm.loop.unroll.disable")}));
  }
  b_.SetInsertPoint(exit);
}

void FuncEmitter::emit_parallel_for(const ir::For* op) {
  UseCollector uses;
  uses.visit(op->body);
  std::vector<const ir::VarNode*> vars;
  std::vector<const ir::BufferNode*> buffers;
  for (const ir::VarNode* v : uses.vars)
    if (v != op->var.node() && vars_.count(v)) vars.push_back(v);
  for (const ir::BufferNode* b : uses.buffers)
    if (buffers_.count(b)) buffers.push_back(b);

  // The context: one 8-byte slot per captured buffer pointer or variable (widened to i64).
  llvm::IRBuilder<> entry(&fn_->getEntryBlock(), fn_->getEntryBlock().begin());
  size_t slots = std::max<size_t>(1, buffers.size() + vars.size());
  llvm::AllocaInst* context =
      entry.CreateAlloca(b_.getInt64Ty(), entry.getInt64(static_cast<int64_t>(slots)),
                         op->var.name() + ".context");
  unsigned slot = 0;
  for (const ir::BufferNode* b : buffers)
    b_.CreateStore(buffers_.at(b).base,
                   b_.CreateConstInBoundsGEP1_64(b_.getInt64Ty(), context, slot++));
  for (const ir::VarNode* v : vars) {
    llvm::Value* value = vars_.at(v);
    value = v->type.is_bool() ? b_.CreateZExt(value, b_.getInt64Ty())
                              : b_.CreateSExtOrTrunc(value, b_.getInt64Ty());
    b_.CreateStore(value, b_.CreateConstInBoundsGEP1_64(b_.getInt64Ty(), context, slot++));
  }

  FuncEmitter child(module_, options_);
  llvm::Function* trampoline = child.emit_parallel_body(
      str_cat(symbol_, ".par", num_parallel_++), op, vars, buffers);
  if (!child.status_.ok()) return fail(child.status_);

  llvm::Value* lo = emit(op->min);
  llvm::Value* hi = b_.CreateAdd(lo, emit(op->extent), op->var.name() + ".end");
  llvm::FunctionCallee parallel_for = module_.getOrInsertFunction(
      "loom_parallel_for",
      llvm::FunctionType::get(b_.getVoidTy(),
                              {b_.getPtrTy(), b_.getPtrTy(), b_.getInt64Ty(), b_.getInt64Ty()},
                              false));
  b_.CreateCall(parallel_for, {trampoline, context, to_index(lo, op->min.type()),
                               to_index(hi, op->min.type())});
}

llvm::Function* FuncEmitter::emit_parallel_body(const std::string& symbol, const ir::For* op,
                                                const std::vector<const ir::VarNode*>& vars,
                                                const std::vector<const ir::BufferNode*>& buffers) {
  symbol_ = symbol;
  llvm::Type* i64 = b_.getInt64Ty();
  llvm::Type* ptr = b_.getPtrTy();
  // The body takes its captures as typed arguments, buffers noalias, like a func's body; it is
  // inlined into the trampoline, which unpacks the context array.
  std::vector<llvm::Type*> params = {i64, i64};
  for (size_t i = 0; i < buffers.size(); ++i) params.push_back(ptr);
  for (const ir::VarNode* v : vars) params.push_back(reg_type(v->type));
  fn_ = llvm::Function::Create(llvm::FunctionType::get(b_.getVoidTy(), params, false),
                               llvm::Function::InternalLinkage, symbol + ".body", module_);
  set_target_attributes(fn_);
  fn_->addFnAttr(llvm::Attribute::AlwaysInline);
  unsigned arg = 2;
  for (const ir::BufferNode* b : buffers) {
    llvm::Argument* a = fn_->getArg(arg++);
    a->setName(b->name);
    a->addAttr(llvm::Attribute::NoAlias);
    a->addAttr(llvm::Attribute::NoCapture);
    buffers_[b] = BufferBinding{a, b->dtype};
  }
  for (const ir::VarNode* v : vars) {
    llvm::Argument* a = fn_->getArg(arg++);
    a->setName(v->name);
    vars_[v] = a;
  }
  b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", fn_));
  llvm::Type* var_type = reg_type(op->var.type());
  emit_loop(op->var, b_.CreateSExtOrTrunc(fn_->getArg(0), var_type),
            b_.CreateSExtOrTrunc(fn_->getArg(1), var_type), op->body, ir::ForKind::kSerial);
  b_.CreateRetVoid();
  llvm::Function* body = fn_;

  llvm::Function* trampoline =
      llvm::Function::Create(llvm::FunctionType::get(b_.getVoidTy(), {i64, i64, ptr}, false),
                             llvm::Function::InternalLinkage, symbol, module_);
  set_target_attributes(trampoline);
  b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", trampoline));
  llvm::Value* context = trampoline->getArg(2);
  std::vector<llvm::Value*> args = {trampoline->getArg(0), trampoline->getArg(1)};
  unsigned slot = 0;
  for (const ir::BufferNode* b : buffers)
    args.push_back(b_.CreateAlignedLoad(
        ptr, b_.CreateConstInBoundsGEP1_64(i64, context, slot++), llvm::Align(8), b->name));
  for (const ir::VarNode* v : vars) {
    llvm::Value* value = b_.CreateAlignedLoad(
        i64, b_.CreateConstInBoundsGEP1_64(i64, context, slot++), llvm::Align(8), v->name);
    args.push_back(v->type.is_bool() ? b_.CreateICmpNE(value, b_.getInt64(0))
                                     : b_.CreateTrunc(value, reg_type(v->type)));
  }
  b_.CreateCall(body, args);
  b_.CreateRetVoid();
  return trampoline;
}

void FuncEmitter::emit_store(const ir::Store* op) {
  if (op->indices.size() != 1) {
    fail(absl::InvalidArgumentError(str_cat(
        "Store to buffer '", op->buffer->name, "' has ", op->indices.size(),
        " indices; the CPU code generator needs flattened IR (one physical element index per "
        "access)")));
    return;
  }
  const BufferBinding* buf = find_buffer(op->buffer.get(), "Store");
  if (!buf) return;
  const ir::Expr& index = op->indices[0];
  DType vt = op->value.type();
  int lanes = vt.lanes();
  if (index.type().lanes() != lanes) {
    fail(absl::InvalidArgumentError(str_cat("Store of a ", vt, " value to buffer '",
                                            op->buffer->name, "' at an index of type ",
                                            index.type(), "; lanes must match")));
    return;
  }
  llvm::Value* value = emit(op->value);
  if (vt.is_bool()) value = b_.CreateZExt(value, mem_type(vt));
  llvm::Align align(static_cast<uint64_t>(buf->dtype.bytes()));
  if (auto base = dense_ramp_base(index); lanes > 1 && base) {
    b_.CreateAlignedStore(value, element_ptr(*buf, to_index(emit(*base), base->type())), align);
    return;
  }
  llvm::Value* ptr = element_ptr(*buf, to_index(emit(index), index.type()));
  if (lanes > 1)
    b_.CreateMaskedScatter(value, ptr, align);
  else
    b_.CreateAlignedStore(value, ptr, align);
}

void FuncEmitter::emit_if(const ir::IfThenElse* op) {
  llvm::Value* cond = emit(op->cond);
  llvm::BasicBlock* then_bb = llvm::BasicBlock::Create(ctx_, "then", fn_);
  llvm::BasicBlock* else_bb =
      op->else_case.defined() ? llvm::BasicBlock::Create(ctx_, "else", fn_) : nullptr;
  llvm::BasicBlock* merge = llvm::BasicBlock::Create(ctx_, "endif", fn_);
  b_.CreateCondBr(cond, then_bb, else_bb ? else_bb : merge);
  b_.SetInsertPoint(then_bb);
  emit(op->then_case);
  b_.CreateBr(merge);
  if (else_bb) {
    b_.SetInsertPoint(else_bb);
    emit(op->else_case);
    b_.CreateBr(merge);
  }
  b_.SetInsertPoint(merge);
}

void FuncEmitter::emit_allocate(const ir::Allocate* op) {
  const ir::BufferNode* node = op->buffer.get();
  if (node->scope == ir::MemoryScope::kShared) {
    fail(absl::UnimplementedError(str_cat("allocation of buffer '", node->name,
                                          "' in shared memory is GPU-only; the CPU code "
                                          "generator supports global and local scopes")));
    return;
  }
  ir::Expr size = node->layout.physical_size();
  if (!size.defined() || !size.type().is_int() || !size.type().is_scalar()) {
    fail(absl::InvalidArgumentError(
        str_cat("buffer '", node->name, "' has no integer physical size to allocate")));
    return;
  }
  llvm::Type* elem = mem_type(node->dtype);
  int64_t elem_bytes = node->dtype.bytes();
  std::optional<int64_t> count = ir::as_const_int(size);
  if (count && *count >= 0 && *count * elem_bytes <= kMaxStackAllocationBytes) {
    // Constant-size allocas in the entry block are static stack slots, which SROA/mem2reg can
    // promote to registers (accumulators of register tiles).
    llvm::IRBuilder<> entry(&fn_->getEntryBlock(), fn_->getEntryBlock().begin());
    llvm::AllocaInst* slot =
        entry.CreateAlloca(elem, entry.getInt64(std::max<int64_t>(*count, 1)), node->name);
    slot->setAlignment(
        llvm::Align(*count * elem_bytes >= 64 ? 64 : static_cast<uint64_t>(elem_bytes)));
    ScopedBind<BufferMap> bind(buffers_, node, BufferBinding{slot, node->dtype});
    emit(op->body);
    return;
  }
  // Large or symbolic sizes come from the runtime's per-thread scratch blocks (64-byte aligned,
  // reused across calls: no fresh pages per parallel task). Kernels have no error channel, so an
  // allocation failure is not reported (the same as a C++ program running out of memory).
  llvm::Type* i64 = b_.getInt64Ty();
  llvm::Type* ptr_type = b_.getPtrTy();
  llvm::FunctionCallee malloc_fn = module_.getOrInsertFunction(
      "loom_scratch_alloc", llvm::FunctionType::get(ptr_type, {i64}, false));
  llvm::FunctionCallee free_fn = module_.getOrInsertFunction(
      "loom_scratch_free", llvm::FunctionType::get(b_.getVoidTy(), {ptr_type}, false));
  llvm::Value* n = to_index(emit(size), size.type());
  llvm::Value* bytes = b_.CreateMul(n, b_.getInt64(elem_bytes), node->name + ".bytes");
  llvm::Value* storage = b_.CreateCall(malloc_fn, {bytes}, node->name);
  {
    ScopedBind<BufferMap> bind(buffers_, node, BufferBinding{storage, node->dtype});
    emit(op->body);
  }
  b_.CreateCall(free_fn, {storage});
}

// ---- functions -----------------------------------------------------------------------------

absl::Status FuncEmitter::emit_func(const ir::Func& f, const std::string& symbol) {
  // The body function: typed parameters, buffers noalias (the runtime never passes one array
  // twice), internal so that it is inlined into the wrapper and disappears.
  std::vector<llvm::Type*> param_types;
  std::set<const void*> seen;
  for (const ir::Param& p : f.params) {
    if (const auto* buf = std::get_if<ir::Buffer>(&p)) {
      if (!buf->defined()) return absl::InvalidArgumentError("undefined buffer parameter");
      if (!seen.insert(buf->node().get()).second)
        return absl::InvalidArgumentError(
            str_cat("buffer '", buf->name(), "' is listed twice among the parameters"));
      param_types.push_back(b_.getPtrTy());
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
      param_types.push_back(reg_type(var.type()));
    }
  }
  auto* body_type = llvm::FunctionType::get(b_.getVoidTy(), param_types, false);
  fn_ =
      llvm::Function::Create(body_type, llvm::Function::InternalLinkage, symbol + ".body", module_);
  set_target_attributes(fn_);
  fn_->addFnAttr(llvm::Attribute::AlwaysInline);
  for (size_t i = 0; i < f.params.size(); ++i) {
    llvm::Argument* arg = fn_->getArg(static_cast<unsigned>(i));
    if (const auto* buf = std::get_if<ir::Buffer>(&f.params[i])) {
      arg->setName(buf->name());
      if (std::find(f.may_alias.begin(), f.may_alias.end(), i) == f.may_alias.end())
        arg->addAttr(llvm::Attribute::NoAlias);
      arg->addAttr(llvm::Attribute::NoCapture);
      buffers_[buf->node().get()] = BufferBinding{arg, buf->dtype()};
    } else {
      const ir::Var& var = std::get<ir::Var>(f.params[i]);
      arg->setName(var.name());
      vars_[var.node()] = arg;
    }
  }
  symbol_ = symbol;
  b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", fn_));
  emit(f.body);
  b_.CreateRetVoid();
  if (!status_.ok()) return status_;

  // The exported wrapper with the runtime's uniform signature unpacks both arrays.
  llvm::Type* ptr_type = b_.getPtrTy();
  auto* wrapper_type = llvm::FunctionType::get(b_.getVoidTy(), {ptr_type, ptr_type}, false);
  llvm::Function* wrapper =
      llvm::Function::Create(wrapper_type, llvm::Function::ExternalLinkage, symbol, module_);
  set_target_attributes(wrapper);
  llvm::Argument* buffers = wrapper->getArg(0);
  llvm::Argument* scalars = wrapper->getArg(1);
  buffers->setName("buffers");
  scalars->setName("scalars");
  b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", wrapper));
  std::vector<llvm::Value*> args;
  unsigned buffer_index = 0, scalar_index = 0;
  for (const ir::Param& p : f.params) {
    if (const auto* buf = std::get_if<ir::Buffer>(&p)) {
      llvm::Value* slot = b_.CreateConstInBoundsGEP1_64(ptr_type, buffers, buffer_index++);
      args.push_back(b_.CreateAlignedLoad(ptr_type, slot, llvm::Align(8), buf->name()));
    } else {
      const ir::Var& var = std::get<ir::Var>(p);
      llvm::Value* slot = b_.CreateConstInBoundsGEP1_64(b_.getInt64Ty(), scalars, scalar_index++);
      llvm::Value* v = b_.CreateAlignedLoad(b_.getInt64Ty(), slot, llvm::Align(8), var.name());
      args.push_back(var.type().is_bool() ? b_.CreateICmpNE(v, b_.getInt64(0))
                                          : b_.CreateTrunc(v, reg_type(var.type())));
    }
  }
  b_.CreateCall(fn_, args);
  b_.CreateRetVoid();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EmittedModule> emit_llvm(const ir::Module& m, llvm::LLVMContext& ctx,
                                        const EmitOptions& options) {
  EmittedModule out;
  out.module = std::make_unique<llvm::Module>(m.name.empty() ? "loom" : m.name, ctx);
  if (!options.triple.empty()) out.module->setTargetTriple(options.triple);
  if (!options.data_layout.empty()) out.module->setDataLayout(options.data_layout);

  std::set<std::string> used;
  for (const ir::Func& f : m.funcs) {
    // Funcs whose names sanitize alike get a distinguishing ".<n>" before the suffix.
    std::string base = sanitize_symbol(f.name);
    std::string name = base;
    for (int n = 1; used.count(name); ++n) name = base + "." + std::to_string(n);
    used.insert(name);
    std::string symbol = name + options.symbol_suffix;

    FuncEmitter emitter(*out.module, options);
    absl::Status s = emitter.emit_func(f, symbol);
    if (!s.ok())
      return absl::Status(s.code(),
                          str_cat("func '", f.name, "' of module '", m.name, "': ", s.message()));
    out.entry_symbols.push_back(std::move(symbol));
  }

  std::string errors;
  llvm::raw_string_ostream os(errors);
  if (llvm::verifyModule(*out.module, &os)) {
    os.flush();
    return absl::InternalError(
        str_cat("emit_llvm produced invalid LLVM IR for module '", m.name, "': ", errors));
  }
  return out;
}

}  // namespace loom::codegen
