// Elementwise operators: binary arithmetic and comparisons with broadcasting, scalar forms,
// unary activations and math functions, clip, where and cast.

#include <cmath>
#include <limits>

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

using BinaryFn = ir::Expr (*)(ir::Expr, ir::Expr);
using UnaryFn = std::function<ir::Expr(ir::Expr, const OpAttrs&)>;

// The element types an operator accepts.
enum class Accepts {
  kFloat,    // f32, f16, bf16
  kNumeric,  // floats and integers
  kAny,      // bool too
};

absl::Status check_accepts(Accepts accepts, DType t) {
  if (accepts == Accepts::kFloat && !t.is_float())
    return absl::InvalidArgumentError("needs a floating-point tensor, got " + t.to_string());
  if (accepts == Accepts::kNumeric && t.is_bool())
    return absl::InvalidArgumentError("arithmetic on bool tensors");
  return absl::OkStatus();
}

// Half-precision inputs compute in f32 and round once at the end.
ir::Expr in_f32(ir::Expr x, const std::function<ir::Expr(ir::Expr)>& f) {
  DType t = x.type();
  if (t.code() == DTypeCode::kF32 || !t.is_float()) return f(x);
  return ir::cast(t, f(ir::cast(DType::f32(t.lanes()), x)));
}

ir::Expr in_f32(ir::Expr a, ir::Expr b, const std::function<ir::Expr(ir::Expr, ir::Expr)>& f) {
  DType t = a.type();
  if (t.code() == DTypeCode::kF32 || !t.is_float()) return f(a, b);
  DType wide = DType::f32(t.lanes());
  return ir::cast(t, f(ir::cast(wide, a), ir::cast(wide, b)));
}

// a / b. Integer division is defined for every divisor, so data never traps the processor:
// x / 0 is 0, and x / -1 is the wrapping negation (INT_MIN / -1 is INT_MIN). Other divisors
// truncate toward zero. Float division is IEEE's.
ir::Expr divide(ir::Expr a, ir::Expr b) {
  if (a.type().is_float()) return a / b;
  const ir::Expr zero = ir::make_zero(b.type());
  const ir::Expr minus_one = zero - ir::make_one(b.type());
  const ir::Expr safe = ir::select(b == zero || b == minus_one, ir::make_one(b.type()), b);
  return ir::select(b == zero, zero, ir::select(b == minus_one, zero - a, a / safe));
}

// output dtype: the operands' (arithmetic) or bool (comparisons).
OpDef binary_op(const std::string& name, BinaryFn fn, Accepts accepts = Accepts::kNumeric,
                bool gives_bool = false) {
  OpDef def;
  def.name = name;
  def.injective = true;
  def.elementwise = true;
  def.num_inputs = 2;
  def.infer = [accepts, gives_bool](const std::vector<TensorType>& in,
                                    const OpAttrs&) -> absl::StatusOr<TensorType> {
    if (in[0].dtype != in[1].dtype)
      return absl::InvalidArgumentError("dtypes " + in[0].dtype.to_string() + " and " +
                                        in[1].dtype.to_string() + " differ");
    LOOM_RETURN_IF_ERROR(check_accepts(accepts, in[0].dtype));
    LOOM_ASSIGN_OR_RETURN(Shape shape, broadcast_shapes(in[0].shape, in[1].shape));
    return TensorType{shape, gives_bool ? DType::boolean() : in[0].dtype};
  };
  def.compute = [fn](const std::vector<te::Tensor>& in, const OpAttrs&,
                     const std::vector<ir::Expr>& shape, const std::string& out) {
    return te::compute(out, shape, [&](const std::vector<ir::Var>& i) {
      return fn(in[0](broadcast_index(in[0], i)), in[1](broadcast_index(in[1], i)));
    });
  };
  return def;
}

OpDef unary_op(const std::string& name, UnaryFn fn, Accepts accepts = Accepts::kFloat,
               const std::type_info* attrs_type = nullptr) {
  OpDef def;
  def.name = name;
  def.attrs_type = attrs_type;
  def.injective = true;
  def.elementwise = true;
  def.num_inputs = 1;
  def.infer = [accepts](const std::vector<TensorType>& in,
                        const OpAttrs&) -> absl::StatusOr<TensorType> {
    LOOM_RETURN_IF_ERROR(check_accepts(accepts, in[0].dtype));
    return in[0];
  };
  def.compute = [fn](const std::vector<te::Tensor>& in, const OpAttrs& attrs,
                     const std::vector<ir::Expr>& shape, const std::string& out) {
    return te::compute(out, shape, [&](const std::vector<ir::Var>& i) {
      return fn(in[0](std::vector<ir::Expr>(i.begin(), i.end())), attrs);
    });
  };
  return def;
}

// A float math function of one argument, computed in f32 for half-precision input.
UnaryFn float_fn(ir::Expr (*f)(ir::Expr)) {
  return [f](ir::Expr x, const OpAttrs&) { return in_f32(x, f); };
}

ir::Expr gelu(ir::Expr x, const OpAttrs& a) {
  bool approximate = attrs_as<GeluAttrs>(a).approximate;
  return in_f32(x, [&](ir::Expr v) {
    if (approximate) {
      // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
      ir::Expr inner = (v + v * v * v * 0.044715) * std::sqrt(2.0 / M_PI);
      return v * 0.5 * (ir::tanh(inner) + 1.0);
    }
    return v * 0.5 * (ir::erf(v * M_SQRT1_2) + 1.0);
  });
}

// x limited to [lo, hi] (either may be undefined: no limit). NaN stays NaN, which min/max
// (minnum/maxnum) would replace by the bound; with lo > hi the result is hi.
ir::Expr clamp(ir::Expr x, ir::Expr lo, ir::Expr hi) {
  if (!x.type().is_float()) {
    if (lo.defined()) x = ir::max(x, lo);
    return hi.defined() ? ir::min(x, hi) : x;
  }
  if (lo.defined()) x = ir::select(x < lo, lo, x);
  if (hi.defined()) x = ir::select(x > hi, hi, x);
  return x;
}

// ONNX HardSigmoid on f32 values.
ir::Expr hard_sigmoid_f32(ir::Expr v, double alpha, double beta) {
  return clamp(v * alpha + beta, ir::make_zero(v.type()), ir::make_one(v.type()));
}

ir::Expr leaky_relu(ir::Expr x, const OpAttrs& a) {
  double alpha = attrs_as<AlphaAttrs>(a).alpha;
  return in_f32(x, [&](ir::Expr v) { return ir::select(v < 0.0, v * alpha, v); });
}

ir::Expr elu(ir::Expr x, const OpAttrs& a) {
  double alpha = attrs_as<AlphaAttrs>(a).alpha;
  return in_f32(x, [&](ir::Expr v) { return ir::select(v < 0.0, (ir::exp(v) - 1.0) * alpha, v); });
}

ir::Expr hard_sigmoid(ir::Expr x, const OpAttrs& a) {
  const auto& attrs = attrs_as<HardSigmoidAttrs>(a);
  return in_f32(x, [&](ir::Expr v) { return hard_sigmoid_f32(v, attrs.alpha, attrs.beta); });
}

ir::Expr neg(ir::Expr x, const OpAttrs&) {
  // x * -1 rather than 0 - x: -(+0) is -0.
  if (x.type().is_float()) return in_f32(x, [](ir::Expr v) { return v * -1.0; });
  return -x;
}

// Minimum and maximum: NaN in either operand gives NaN (numpy, ONNX), where ir::min/max follow
// minnum/maxnum and would return the other operand.
ir::Expr minimum(ir::Expr a, ir::Expr b) {
  if (!a.type().is_float()) return ir::min(a, b);
  return ir::select(a != a || b != b, a + b, ir::min(a, b));
}
ir::Expr maximum(ir::Expr a, ir::Expr b) {
  if (!a.type().is_float()) return ir::max(a, b);
  return ir::select(a != a || b != b, a + b, ir::max(a, b));
}

// ---- clip ------------------------------------------------------------------------------------

// The range of an integer type, as doubles (i64's ends are rounded to 2^63 in magnitude).
std::pair<double, double> int_range(DType t) {
  switch (t.code()) {
    case DTypeCode::kI8:
      return {-128.0, 127.0};
    case DTypeCode::kI32:
      return {-2147483648.0, 2147483647.0};
    default:
      return {-9223372036854775808.0, 9223372036854775807.0};
  }
}

absl::StatusOr<TensorType> infer_clip(const std::vector<TensorType>& in, const OpAttrs& a) {
  const auto& attrs = attrs_as<ClipAttrs>(a);
  DType t = in[0].dtype;
  LOOM_RETURN_IF_ERROR(check_accepts(Accepts::kNumeric, t));
  for (double bound : {attrs.min, attrs.max}) {
    if (std::isnan(bound)) return absl::InvalidArgumentError("clip bound is NaN");
    if (t.is_int() && std::isfinite(bound) && std::floor(bound) != bound)
      return absl::InvalidArgumentError(
          str_cat("clip bound ", bound, " of an ", t.to_string(), " tensor is not a whole number"));
  }
  return in[0];
}

// A bound as a constant of x's type, or undefined where it cannot clip (infinite, or beyond
// the range of an integer type); integer bounds beyond the range saturate at its end.
ir::Expr clip_bound(DType t, double v, bool is_lower) {
  if (t.is_float()) return std::isinf(v) ? ir::Expr() : ir::make_const(t, v);
  auto [lo, hi] = int_range(t);
  if (is_lower ? v <= lo : v >= hi) return ir::Expr();
  if (v <= lo) return ir::lowest_value(t);
  if (v >= hi) return ir::highest_value(t);
  return ir::make_const(t, v);
}

ir::Expr clip(ir::Expr x, const OpAttrs& a) {
  const auto& attrs = attrs_as<ClipAttrs>(a);
  return in_f32(x, [&](ir::Expr v) {
    return clamp(v, clip_bound(v.type(), attrs.min, true), clip_bound(v.type(), attrs.max, false));
  });
}

// ---- where and cast --------------------------------------------------------------------------

OpDef where_op() {
  OpDef def;
  def.name = "where";
  def.injective = true;
  def.elementwise = true;
  def.num_inputs = 3;
  def.infer = [](const std::vector<TensorType>& in, const OpAttrs&) -> absl::StatusOr<TensorType> {
    if (!in[0].dtype.is_bool())
      return absl::InvalidArgumentError("the condition must be a bool tensor, got " +
                                        in[0].dtype.to_string());
    if (in[1].dtype != in[2].dtype)
      return absl::InvalidArgumentError("the values' dtypes " + in[1].dtype.to_string() + " and " +
                                        in[2].dtype.to_string() + " differ");
    LOOM_ASSIGN_OR_RETURN(Shape values, broadcast_shapes(in[1].shape, in[2].shape));
    LOOM_ASSIGN_OR_RETURN(Shape shape, broadcast_shapes(in[0].shape, values));
    return TensorType{shape, in[1].dtype};
  };
  def.compute = [](const std::vector<te::Tensor>& in, const OpAttrs&,
                   const std::vector<ir::Expr>& shape, const std::string& out) {
    return te::compute(out, shape, [&](const std::vector<ir::Var>& i) {
      return ir::select(in[0](broadcast_index(in[0], i)), in[1](broadcast_index(in[1], i)),
                        in[2](broadcast_index(in[2], i)));
    });
  };
  return def;
}

// Any element type to any other: float to int truncates toward zero (out of range is
// undefined, as in C), anything to bool is x != 0, bool to numbers is 0 or 1.
OpDef cast_op() {
  OpDef def;
  def.name = "cast";
  def.injective = true;
  def.elementwise = true;
  def.num_inputs = 1;
  def.attrs_type = &typeid(CastAttrs);
  def.infer = [](const std::vector<TensorType>& in,
                 const OpAttrs& a) -> absl::StatusOr<TensorType> {
    DType to = attrs_as<CastAttrs>(a).dtype;
    if (!to.is_scalar())
      return absl::InvalidArgumentError("cast to " + to.to_string() +
                                        ": tensor elements are scalars, not vectors");
    return TensorType{in[0].shape, to};
  };
  def.compute = [](const std::vector<te::Tensor>& in, const OpAttrs& a,
                   const std::vector<ir::Expr>& shape, const std::string& out) {
    DType to = attrs_as<CastAttrs>(a).dtype;
    return te::compute(out, shape, [&](const std::vector<ir::Var>& i) {
      return ir::cast(to, in[0](std::vector<ir::Expr>(i.begin(), i.end())));
    });
  };
  return def;
}

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  auto add = [&](OpDef d) { LOOM_CHECK(r.add(std::move(d)).ok(), "duplicate built-in op"); };
  add(binary_op("add", [](ir::Expr a, ir::Expr b) { return a + b; }));
  add(binary_op("sub", [](ir::Expr a, ir::Expr b) { return a - b; }));
  add(binary_op("mul", [](ir::Expr a, ir::Expr b) { return a * b; }));
  add(binary_op("div", divide));
  add(binary_op(
      "pow", [](ir::Expr a, ir::Expr b) { return in_f32(a, b, ir::pow); }, Accepts::kFloat));
  add(binary_op("minimum", minimum));
  add(binary_op("maximum", maximum));
  add(binary_op(
      "equal", [](ir::Expr a, ir::Expr b) { return a == b; }, Accepts::kAny, true));
  add(binary_op(
      "less", [](ir::Expr a, ir::Expr b) { return a < b; }, Accepts::kAny, true));
  add(binary_op(
      "less_equal", [](ir::Expr a, ir::Expr b) { return a <= b; }, Accepts::kAny, true));
  add(binary_op(
      "greater", [](ir::Expr a, ir::Expr b) { return a > b; }, Accepts::kAny, true));
  add(binary_op(
      "greater_equal", [](ir::Expr a, ir::Expr b) { return a >= b; }, Accepts::kAny, true));

  add(unary_op(
      "relu", [](ir::Expr x, const OpAttrs&) { return ir::max(x, ir::make_zero(x.type())); },
      Accepts::kNumeric));
  add(unary_op("gelu", gelu, Accepts::kFloat, &typeid(GeluAttrs)));
  add(unary_op("tanh", float_fn(ir::tanh)));
  add(unary_op("exp", float_fn(ir::exp)));
  add(unary_op("sigmoid", float_fn(ir::sigmoid)));
  add(unary_op("erf", float_fn(ir::erf)));
  add(unary_op("log", float_fn(ir::log)));
  add(unary_op("sqrt", float_fn(ir::sqrt)));
  add(unary_op("floor", float_fn(ir::floor)));
  add(unary_op("ceil", float_fn(ir::ceil)));
  add(unary_op("reciprocal", float_fn([](ir::Expr v) { return ir::make_one(v.type()) / v; })));
  add(unary_op("swish", float_fn([](ir::Expr v) { return v * ir::sigmoid(v); })));
  add(unary_op("hard_swish",
               float_fn([](ir::Expr v) { return v * hard_sigmoid_f32(v, 1.0 / 6, 0.5); })));
  add(unary_op("leaky_relu", leaky_relu, Accepts::kFloat, &typeid(AlphaAttrs)));
  add(unary_op("elu", elu, Accepts::kFloat, &typeid(AlphaAttrs)));
  add(unary_op("hard_sigmoid", hard_sigmoid, Accepts::kFloat, &typeid(HardSigmoidAttrs)));
  add(unary_op(
      "abs", [](ir::Expr x, const OpAttrs&) { return in_f32(x, ir::abs); }, Accepts::kNumeric));
  add(unary_op("neg", neg, Accepts::kNumeric));
  OpDef clip_def = unary_op("clip", clip, Accepts::kNumeric, &typeid(ClipAttrs));
  clip_def.infer = infer_clip;
  add(std::move(clip_def));
  add(unary_op(
      "add_scalar",
      [](ir::Expr x, const OpAttrs& a) {
        return x + ir::make_const(x.type(), attrs_as<ScalarAttrs>(a).value);
      },
      Accepts::kNumeric, &typeid(ScalarAttrs)));
  add(unary_op(
      "mul_scalar",
      [](ir::Expr x, const OpAttrs& a) {
        return x * ir::make_const(x.type(), attrs_as<ScalarAttrs>(a).value);
      },
      Accepts::kNumeric, &typeid(ScalarAttrs)));

  add(where_op());
  add(cast_op());
}

}  // namespace loom::ops
