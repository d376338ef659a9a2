// Reference evaluator for tensor expressions: a direct interpreter, independent of lowering and
// code generation. Every operation rounds to its result type, as compiled code does.

#include "loom/te/evaluate.hpp"

#include <cmath>
#include <cstring>
#include <functional>
#include <map>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"

namespace loom::te {
namespace {

struct Value {
  double f = 0;   // for float and int types alike; ints are exact up to 2^53
  int64_t i = 0;  // exact integer value for int/bool types
};

double round_to(DType t, double v) {
  switch (t.code()) {
    case DTypeCode::kF32: return static_cast<float>(v);
    case DTypeCode::kF16: return f16_to_f32(f32_to_f16(static_cast<float>(v)));
    case DTypeCode::kBF16: return bf16_to_f32(f32_to_bf16(static_cast<float>(v)));
    default: return v;
  }
}

int64_t wrap_int(DType t, int64_t v) {
  switch (t.code()) {
    case DTypeCode::kI8: return static_cast<int8_t>(v);
    case DTypeCode::kI32: return static_cast<int32_t>(v);
    case DTypeCode::kBool: return v != 0;
    default: return v;
  }
}

Value make_value(DType t, double f, int64_t i) {
  Value v;
  if (t.is_float()) {
    v.f = round_to(t, f);
    // NaN, infinities and huge values have no integer view (converting them is undefined).
    v.i = std::fabs(v.f) < 9.2e18 ? static_cast<int64_t>(v.f) : 0;
  } else {
    v.i = wrap_int(t, i);
    v.f = static_cast<double>(v.i);
  }
  return v;
}

// a op b on two's complement integers, wrapping on overflow (signed overflow is undefined in C++).
template <typename Op>
int64_t wrapping(int64_t a, int64_t b, Op op) {
  return static_cast<int64_t>(op(static_cast<uint64_t>(a), static_cast<uint64_t>(b)));
}

class Evaluator {
 public:
  std::map<const ir::BufferNode*, NDArray> arrays;
  std::map<const ir::VarNode*, Value> env;
  absl::Status status;

  Value fail(const std::string& msg) {
    if (status.ok()) status = absl::InvalidArgumentError(msg);
    return Value{};
  }

  int64_t eval_int(const ir::Expr& e) { return eval(e).i; }

  Value eval(const ir::Expr& e) {
    if (!status.ok()) return Value{};
    LOOM_CHECK(e.type().is_scalar(), "reference evaluator given a vector expression");
    DType t = e.type();
    switch (e.kind()) {
      case ir::ExprKind::kIntImm: {
        int64_t v = e.as<ir::IntImm>()->value;
        return make_value(t, static_cast<double>(v), v);
      }
      case ir::ExprKind::kFloatImm: return make_value(t, e.as<ir::FloatImm>()->value, 0);
      case ir::ExprKind::kVar: {
        auto it = env.find(e.as<ir::VarNode>());
        if (it == env.end()) return fail("unbound variable " + e.as<ir::VarNode>()->name);
        return it->second;
      }
      case ir::ExprKind::kNot: return make_value(t, 0, !eval(e.as<ir::Not>()->a).i);
      case ir::ExprKind::kSelect: {
        auto* s = e.as<ir::Select>();
        return eval(s->cond).i ? eval(s->true_value) : eval(s->false_value);
      }
      case ir::ExprKind::kCast: {
        Value v = eval(e.as<ir::Cast>()->value);
        DType from = e.as<ir::Cast>()->value.type();
        if (t.is_bool()) return make_value(t, 0, from.is_float() ? v.f != 0 : v.i != 0);
        if (t.is_float()) return make_value(t, from.is_float() ? v.f : static_cast<double>(v.i), 0);
        // float -> int truncates toward zero, as fptosi does.
        return make_value(t, 0, from.is_float() ? static_cast<int64_t>(std::trunc(v.f)) : v.i);
      }
      case ir::ExprKind::kLoad: return eval_load(e.as<ir::Load>());
      case ir::ExprKind::kCall: return eval_call(e.as<ir::Call>());
      case ir::ExprKind::kLet: {
        auto* l = e.as<ir::Let>();
        env[l->var.node()] = eval(l->value);
        return eval(l->body);
      }
      case ir::ExprKind::kReduce: return eval_reduce(e.as<ir::Reduce>());
      case ir::ExprKind::kRamp:
      case ir::ExprKind::kBroadcast:
        return fail("vector expression in a tensor expression");
      default: return eval_binary(e);
    }
  }

  Value eval_binary(const ir::Expr& e) {
    ir::BinaryView ops = ir::binary_operands(e);
    Value a = eval(*ops.a), b = eval(*ops.b);
    DType ot = ops.a->type();
    DType t = e.type();
    bool fl = ot.is_float();
    switch (e.kind()) {
      // Integer arithmetic wraps, as the generated code's does.
      case ir::ExprKind::kAdd: return make_value(t, a.f + b.f, wrapping(a.i, b.i, std::plus<>()));
      case ir::ExprKind::kSub: return make_value(t, a.f - b.f, wrapping(a.i, b.i, std::minus<>()));
      case ir::ExprKind::kMul:
        return make_value(t, a.f * b.f, wrapping(a.i, b.i, std::multiplies<>()));
      case ir::ExprKind::kDiv:
        if (!fl && b.i == 0) return fail("integer division by zero in " + ir::to_string(e));
        // x / -1 negates (wrapping: INT_MIN / -1 overflows in C++).
        return make_value(t, a.f / b.f,
                          fl ? 0 : b.i == -1 ? wrapping(0, a.i, std::minus<>()) : a.i / b.i);
      case ir::ExprKind::kMod:
        if (!fl && b.i == 0) return fail("integer modulo by zero in " + ir::to_string(e));
        return make_value(t, std::fmod(a.f, b.f), fl || b.i == -1 ? 0 : a.i % b.i);
      case ir::ExprKind::kMin: return make_value(t, std::fmin(a.f, b.f), std::min(a.i, b.i));
      case ir::ExprKind::kMax: return make_value(t, std::fmax(a.f, b.f), std::max(a.i, b.i));
      case ir::ExprKind::kEQ: return make_value(t, 0, fl ? a.f == b.f : a.i == b.i);
      case ir::ExprKind::kNE: return make_value(t, 0, fl ? a.f != b.f : a.i != b.i);
      case ir::ExprKind::kLT: return make_value(t, 0, fl ? a.f < b.f : a.i < b.i);
      case ir::ExprKind::kLE: return make_value(t, 0, fl ? a.f <= b.f : a.i <= b.i);
      case ir::ExprKind::kGT: return make_value(t, 0, fl ? a.f > b.f : a.i > b.i);
      case ir::ExprKind::kGE: return make_value(t, 0, fl ? a.f >= b.f : a.i >= b.i);
      case ir::ExprKind::kAnd: return make_value(t, 0, a.i && b.i);
      case ir::ExprKind::kOr: return make_value(t, 0, a.i || b.i);
      default: return fail(std::string("cannot evaluate ") + ir::expr_kind_name(e.kind()));
    }
  }

  Value eval_call(const ir::Call* c) {
    std::vector<Value> a;
    for (const ir::Expr& arg : c->args) a.push_back(eval(arg));
    DType t = c->type;
    const std::string& n = c->name;
    if (n == "abs" && t.is_int()) return make_value(t, 0, std::abs(a[0].i));
    if (n == "bit_xor") return make_value(t, 0, a[0].i ^ a[1].i);
    if (n == "reinterpret_i32") {
      float f = static_cast<float>(a[0].f);
      int32_t bits;
      std::memcpy(&bits, &f, sizeof bits);
      return make_value(t, 0, bits);
    }
    if (n == "reinterpret_f32") {
      int32_t bits = static_cast<int32_t>(a[0].i);
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return make_value(t, f, 0);
    }
    double x = a[0].f, r;
    if (n == "exp") r = std::exp(x);
    else if (n == "log") r = std::log(x);
    else if (n == "sqrt") r = std::sqrt(x);
    else if (n == "rsqrt") r = 1.0 / std::sqrt(x);
    else if (n == "tanh") r = std::tanh(x);
    else if (n == "erf") r = std::erf(x);
    else if (n == "abs") r = std::fabs(x);
    else if (n == "floor") r = std::floor(x);
    else if (n == "ceil") r = std::ceil(x);
    else if (n == "round") r = std::round(x);
    else if (n == "pow") r = std::pow(x, a[1].f);
    else if (n == "fma") r = x * a[1].f + a[2].f;
    else return fail("cannot evaluate intrinsic " + n);
    return make_value(t, r, 0);
  }

  Value eval_load(const ir::Load* l) {
    auto it = arrays.find(l->buffer.get());
    if (it == arrays.end()) return fail("load of unknown tensor " + l->buffer->name);
    const NDArray& a = it->second;
    if (static_cast<int>(l->indices.size()) != a.rank())
      return fail("load of " + l->buffer->name + " with wrong index count");
    int64_t flat = 0;
    for (int d = 0; d < a.rank(); ++d) {
      int64_t i = eval_int(l->indices[d]);
      if (i < 0 || i >= a.shape()[d])
        return fail(str_cat("index ", i, " out of bounds [0, ", a.shape()[d], ") in dim ", d,
                            " of ", l->buffer->name));
      flat = flat * a.shape()[d] + i;
    }
    double v = a.get(flat);
    return make_value(l->type, v, static_cast<int64_t>(v));
  }

  Value eval_reduce(const ir::Reduce* r) {
    DType t = r->type;
    Value acc = eval(ir::Reduce::identity(r->reduce_kind, t));
    std::vector<int64_t> extents;
    for (const ir::IterVar& iv : r->axes) extents.push_back(eval_int(iv.extent));
    std::vector<int64_t> idx(extents.size(), 0);
    for (int64_t e : extents)
      if (e <= 0) return acc;
    while (status.ok()) {
      for (size_t k = 0; k < idx.size(); ++k) env[r->axes[k].var.node()] = make_value(DType::i64(), 0, idx[k]);
      Value x = eval(r->source);
      switch (r->reduce_kind) {
        case ir::ReduceKind::kSum: acc = make_value(t, acc.f + x.f, acc.i + x.i); break;
        case ir::ReduceKind::kProd: acc = make_value(t, acc.f * x.f, acc.i * x.i); break;
        case ir::ReduceKind::kMax:
          acc = make_value(t, std::fmax(acc.f, x.f), std::max(acc.i, x.i));
          break;
        case ir::ReduceKind::kMin:
          acc = make_value(t, std::fmin(acc.f, x.f), std::min(acc.i, x.i));
          break;
      }
      // Odometer increment over the reduction domain, last axis fastest.
      int k = static_cast<int>(idx.size()) - 1;
      while (k >= 0 && ++idx[k] == extents[k]) idx[k--] = 0;
      if (k < 0) break;
    }
    return acc;
  }
};

}  // namespace

absl::StatusOr<std::vector<NDArray>> evaluate(const Task& task, const std::vector<NDArray>& inputs) {
  if (inputs.size() != task.inputs().size())
    return absl::InvalidArgumentError(str_cat("task ", task.name(), " takes ", task.inputs().size(),
                                              " inputs, got ", inputs.size()));
  Evaluator ev;
  // Bind shape variables from the input shapes, then check every input extent.
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& t = task.inputs()[k];
    if (inputs[k].rank() != t.rank() || inputs[k].dtype() != t.dtype())
      return absl::InvalidArgumentError("input " + t.name() + " has the wrong rank or dtype");
    for (int d = 0; d < t.rank(); ++d)
      if (auto* v = t.shape()[d].as<ir::VarNode>(); v && !ev.env.count(v))
        ev.env[v] = make_value(DType::i64(), 0, inputs[k].shape()[d]);
  }
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& t = task.inputs()[k];
    for (int d = 0; d < t.rank(); ++d)
      if (ev.eval_int(t.shape()[d]) != inputs[k].shape()[d])
        return absl::InvalidArgumentError(str_cat("input ", t.name(), " dim ", d, " is ",
                                                  inputs[k].shape()[d], ", expected ",
                                                  ir::to_string(t.shape()[d])));
    ev.arrays[t->buffer.node().get()] = inputs[k];
  }
  LOOM_RETURN_IF_ERROR(ev.status);

  for (const Tensor& t : task.computes()) {
    std::vector<int64_t> shape;
    for (const ir::Expr& e : t.shape()) shape.push_back(ev.eval_int(e));
    NDArray out(t.dtype(), shape);
    std::vector<int64_t> idx(shape.size(), 0);
    for (int64_t flat = 0; flat < out.numel() && ev.status.ok(); ++flat) {
      for (size_t d = 0; d < idx.size(); ++d) ev.env[t->axes[d].node()] = make_value(DType::i64(), 0, idx[d]);
      Value v = ev.eval(t->body);
      out.set(flat, t.dtype().is_float() ? v.f : static_cast<double>(v.i));
      int k = static_cast<int>(idx.size()) - 1;
      while (k >= 0 && ++idx[k] == shape[k]) idx[k--] = 0;
    }
    LOOM_RETURN_IF_ERROR(ev.status);
    ev.arrays[t->buffer.node().get()] = out;
  }
  std::vector<NDArray> outs;
  for (const Tensor& t : task.outputs()) outs.push_back(ev.arrays[t->buffer.node().get()]);
  return outs;
}

}  // namespace loom::te
