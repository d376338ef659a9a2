// Normalization operators: layer_norm over the trailing dims from an axis, with gamma and beta.

#include <cmath>

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"
#include "ops/rows_cpu.hpp"
#include "ops/rows_cuda.hpp"

namespace loom::ops {
namespace {

absl::StatusOr<TensorType> infer_layer_norm(const std::vector<TensorType>& in, const OpAttrs& a) {
  const auto& attrs = attrs_as<LayerNormAttrs>(a);
  const TensorType& x = in[0];
  if (!x.dtype.is_float())
    return absl::InvalidArgumentError("layer_norm needs a floating-point tensor, got " +
                                      x.dtype.to_string());
  int rank = static_cast<int>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(int axis, normalize_axis(attrs.axis, rank));
  if (!(attrs.epsilon >= 0) || !std::isfinite(attrs.epsilon))
    return absl::InvalidArgumentError(
        str_cat("layer_norm epsilon must be finite and >= 0, got ", attrs.epsilon));
  Shape normalized(x.shape.begin() + axis, x.shape.end());
  const char* names[] = {"gamma", "beta"};
  for (int k = 1; k <= 2; ++k) {
    if (in[k].dtype != x.dtype)
      return absl::InvalidArgumentError(str_cat("layer_norm ", names[k - 1], " has dtype ",
                                                in[k].dtype.to_string(), ", x has ",
                                                x.dtype.to_string()));
    if (in[k].shape != normalized)
      return absl::InvalidArgumentError(
          str_cat("layer_norm ", names[k - 1], " has shape ", shape_to_string(in[k].shape),
                  ", expected the normalized dims ", shape_to_string(normalized), " of x ",
                  shape_to_string(x.shape), " (axis ", axis, ")"));
  }
  return x;
}

// mean and variance per row (the dims before axis), both as sums divided by the row length in
// f32, then (x - mean) * rsqrt(var + eps) * gamma + beta.
te::Tensor compute_layer_norm(const std::vector<te::Tensor>& in, const OpAttrs& a,
                              const std::vector<ir::Expr>& shape, const std::string& name) {
  const auto& attrs = attrs_as<LayerNormAttrs>(a);
  const te::Tensor& x = in[0];
  const te::Tensor& gamma = in[1];
  const te::Tensor& beta = in[2];
  const int rank = x.rank();
  const int axis = *normalize_axis(attrs.axis, rank);
  std::vector<ir::Expr> stat_shape = shape;
  ir::Expr count = ir::Expr(int64_t{1});
  for (int d = axis; d < rank; ++d) {
    stat_shape[d] = ir::Expr(int64_t{1});
    count = count * x.shape()[d];
  }
  auto f32 = [](ir::Expr v) { return ir::cast(DType::f32(), std::move(v)); };
  auto reduce_axes = [&](const std::string& suffix) {
    std::vector<ir::IterVar> rv;
    for (int d = axis; d < rank; ++d)
      rv.push_back(te::reduce_axis(x.shape()[d], name + suffix + std::to_string(d)));
    return rv;
  };
  // x at the row of i and the normalized position given by rv.
  auto x_at = [&](const std::vector<ir::Var>& i, const std::vector<ir::IterVar>& rv) {
    std::vector<ir::Expr> idx(i.begin(), i.begin() + axis);
    for (const ir::IterVar& r : rv) idx.push_back(r.var);
    return f32(x(idx));
  };
  auto stat_index = [&](const std::vector<ir::Var>& i) {
    std::vector<ir::Expr> idx(i.begin(), i.end());
    for (int d = axis; d < rank; ++d) idx[d] = ir::Expr(int64_t{0});
    return idx;
  };
  std::vector<ir::IterVar> r1 = reduce_axes("_m");
  te::Tensor mean = te::compute(name + "_mean", stat_shape, [&](const std::vector<ir::Var>& i) {
    return te::sum(x_at(i, r1), r1) / f32(count);
  });
  std::vector<ir::IterVar> r2 = reduce_axes("_v");
  te::Tensor var = te::compute(name + "_var", stat_shape, [&](const std::vector<ir::Var>& i) {
    ir::Expr d = x_at(i, r2) - mean(stat_index(i));
    return te::sum(d * d, r2) / f32(count);
  });
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    std::vector<ir::Expr> idx(i.begin(), i.end());
    std::vector<ir::Expr> trailing(i.begin() + axis, i.end());
    std::vector<ir::Expr> s = stat_index(i);
    ir::Expr eps = ir::make_const(DType::f32(), attrs.epsilon);
    ir::Expr normalized = (f32(x(idx)) - mean(s)) * ir::rsqrt(var(s) + eps);
    return ir::cast(x.dtype(), normalized * f32(gamma(trailing)) + f32(beta(trailing)));
  });
}

}  // namespace

void register_norm_ops(OpRegistry& r) {
  OpDef def;
  def.name = "layer_norm";
  def.num_inputs = 3;
  def.attrs_type = &typeid(LayerNormAttrs);
  def.infer = infer_layer_norm;
  def.compute = compute_layer_norm;
  def.templates.push_back(layer_norm_cpu_template());
  def.templates.push_back(layer_norm_cuda_template());
  LOOM_CHECK(r.add(std::move(def)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
