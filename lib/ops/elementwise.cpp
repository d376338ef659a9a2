// Elementwise operators: binary arithmetic with broadcasting, scalar forms, unary activations.

#include <cmath>

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

using BinaryFn = ir::Expr (*)(ir::Expr, ir::Expr);
using UnaryFn = ir::Expr (*)(ir::Expr);

OpDef binary_op(const std::string& name, BinaryFn fn) {
  OpDef def;
  def.name = name;
  def.injective = true;
  def.num_inputs = 2;
  def.infer = [name](const std::vector<TensorType>& in, const OpAttrs&) -> absl::StatusOr<TensorType> {
    if (in[0].dtype != in[1].dtype)
      return absl::InvalidArgumentError("dtypes " + in[0].dtype.to_string() + " and " +
                                        in[1].dtype.to_string() + " differ");
    if (in[0].dtype.is_bool()) return absl::InvalidArgumentError("arithmetic on bool tensors");
    LOOM_ASSIGN_OR_RETURN(Shape shape, broadcast_shapes(in[0].shape, in[1].shape));
    return TensorType{shape, in[0].dtype};
  };
  def.compute = [fn](const std::vector<te::Tensor>& in, const OpAttrs&,
                     const std::vector<ir::Expr>& shape, const std::string& out) {
    return te::compute(out, shape, [&](const std::vector<ir::Var>& i) {
      return fn(in[0](broadcast_index(in[0], i)), in[1](broadcast_index(in[1], i)));
    });
  };
  return def;
}

OpDef unary_op(const std::string& name, std::function<ir::Expr(ir::Expr, const OpAttrs&)> fn,
               bool float_only = true, const std::type_info* attrs_type = nullptr) {
  OpDef def;
  def.name = name;
  def.attrs_type = attrs_type;
  def.injective = true;
  def.num_inputs = 1;
  def.infer = [float_only](const std::vector<TensorType>& in, const OpAttrs&) -> absl::StatusOr<TensorType> {
    if (float_only && !in[0].dtype.is_float())
      return absl::InvalidArgumentError("needs a floating-point tensor, got " + in[0].dtype.to_string());
    if (in[0].dtype.is_bool()) return absl::InvalidArgumentError("arithmetic on bool tensors");
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

// Half-precision inputs compute in f32 and round once at the end.
ir::Expr in_f32(ir::Expr x, const std::function<ir::Expr(ir::Expr)>& f) {
  DType t = x.type();
  if (t.code() == DTypeCode::kF32 || !t.is_float()) return f(x);
  return ir::cast(t, f(ir::cast(DType::f32(t.lanes()), x)));
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

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  auto add = [&](OpDef d) { LOOM_CHECK(r.add(std::move(d)).ok(), "duplicate built-in op"); };
  add(binary_op("add", [](ir::Expr a, ir::Expr b) { return a + b; }));
  add(binary_op("sub", [](ir::Expr a, ir::Expr b) { return a - b; }));
  add(binary_op("mul", [](ir::Expr a, ir::Expr b) { return a * b; }));
  add(binary_op("div", [](ir::Expr a, ir::Expr b) { return a / b; }));

  add(unary_op("relu", [](ir::Expr x, const OpAttrs&) { return ir::max(x, ir::make_zero(x.type())); },
               /*float_only=*/false));
  add(unary_op("gelu", gelu, true, &typeid(GeluAttrs)));
  add(unary_op("tanh", [](ir::Expr x, const OpAttrs&) { return in_f32(x, [](ir::Expr v) { return ir::tanh(v); }); }));
  add(unary_op("exp", [](ir::Expr x, const OpAttrs&) { return in_f32(x, [](ir::Expr v) { return ir::exp(v); }); }));
  add(unary_op("sigmoid", [](ir::Expr x, const OpAttrs&) { return in_f32(x, [](ir::Expr v) { return ir::sigmoid(v); }); }));
  add(unary_op("add_scalar", [](ir::Expr x, const OpAttrs& a) {
        return x + ir::make_const(x.type(), attrs_as<ScalarAttrs>(a).value);
      }, false, &typeid(ScalarAttrs)));
  add(unary_op("mul_scalar", [](ir::Expr x, const OpAttrs& a) {
        return x * ir::make_const(x.type(), attrs_as<ScalarAttrs>(a).value);
      }, false, &typeid(ScalarAttrs)));
}

}  // namespace loom::ops
