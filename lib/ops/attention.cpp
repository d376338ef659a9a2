// attention(q, kt, v[, mask]): softmax(scale * q kt + mask) v over the last axis, one operator so
// that a GPU template can compute it in one kernel without storing the scores
// (passes::fuse_attention makes it from matmul, mul, add and softmax on CUDA targets). The
// optional mask is added to the scaled scores and broadcasts to them (BERT's [batch, 1, 1, T]
// padding mask of 0 and large negative values). Its definition, the reference, computes in f32
// and rounds the result once.

#include "loom/ops/attrs.hpp"
#include "ops/attention_cuda.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

absl::StatusOr<TensorType> infer_attention(const std::vector<TensorType>& in, const OpAttrs&) {
  if (in.size() != 3 && in.size() != 4)
    return absl::InvalidArgumentError(
        str_cat("attention takes q, kt, v and an optional mask, got ", in.size(), " inputs"));
  const TensorType &q = in[0], &kt = in[1], &v = in[2];
  if (!q.dtype.is_float() || kt.dtype != q.dtype || v.dtype != q.dtype)
    return absl::InvalidArgumentError("attention needs q, kt and v of one floating-point type, got " +
                                      q.dtype.to_string() + ", " + kt.dtype.to_string() + " and " +
                                      v.dtype.to_string());
  const size_t rank = q.shape.size();
  if (rank < 2 || kt.shape.size() != rank || v.shape.size() != rank)
    return absl::InvalidArgumentError(str_cat("attention needs q, kt and v of one rank >= 2, got ",
                                              shape_to_string(q.shape), ", ",
                                              shape_to_string(kt.shape), " and ",
                                              shape_to_string(v.shape)));
  for (size_t d = 0; d + 2 < rank; ++d)
    if (q.shape[d] != kt.shape[d] || q.shape[d] != v.shape[d])
      return absl::InvalidArgumentError("attention's batch dims differ: " + shape_to_string(q.shape) +
                                        ", " + shape_to_string(kt.shape) + ", " +
                                        shape_to_string(v.shape));
  if (q.shape[rank - 1] != kt.shape[rank - 2] || kt.shape[rank - 1] != v.shape[rank - 2])
    return absl::InvalidArgumentError("attention needs q [..., S, D], kt [..., D, T], v [..., T, E], got " +
                                      shape_to_string(q.shape) + ", " + shape_to_string(kt.shape) +
                                      ", " + shape_to_string(v.shape));
  if (in.size() == 4) {
    const TensorType& mask = in[3];
    Shape scores = q.shape;
    scores[rank - 1] = kt.shape[rank - 1];
    absl::StatusOr<Shape> both = broadcast_shapes(scores, mask.shape);
    if (mask.dtype != q.dtype || !both.ok() || *both != scores)
      return absl::InvalidArgumentError(
          "attention's mask must have q's type and broadcast to the scores " +
          shape_to_string(scores) + ", got " + mask.dtype.to_string() + " " +
          shape_to_string(mask.shape));
  }
  Shape out = q.shape;
  out[rank - 1] = v.shape[rank - 1];
  return TensorType{out, q.dtype};
}

te::Tensor compute_attention(const std::vector<te::Tensor>& in, const OpAttrs& attrs,
                             const std::vector<ir::Expr>& shape, const std::string& name) {
  const te::Tensor &q = in[0], &kt = in[1], &v = in[2];
  const int rank = q.rank();
  const float scale = static_cast<float>(attrs_as<AttentionAttrs>(attrs).scale);
  auto f32 = [](ir::Expr e) { return ir::cast(DType::f32(), e); };
  // [..., S, T] scores, then per row their max and the sum of exponentials.
  std::vector<ir::Expr> scores_shape = shape;
  scores_shape[rank - 1] = kt.shape()[rank - 1];
  auto index = [](const std::vector<ir::Var>& i, int drop, std::vector<ir::Expr> tail) {
    std::vector<ir::Expr> idx(i.begin(), i.end() - drop);
    idx.insert(idx.end(), tail.begin(), tail.end());
    return idx;
  };
  ir::IterVar d = te::reduce_axis(q.shape()[rank - 1], name + "_d");
  te::Tensor scores = te::compute(name + "_scores", scores_shape, [&](const std::vector<ir::Var>& i) {
    ir::Expr s =
        te::sum(f32(q(index(i, 1, {d.var}))) * f32(kt(index(i, 2, {d.var, i[rank - 1]}))), {d}) *
        scale;
    return in.size() == 4 ? s + f32(in[3](broadcast_index(in[3], i))) : s;
  });
  std::vector<ir::Expr> row_shape = scores_shape;
  row_shape[rank - 1] = ir::Expr(int64_t{1});
  ir::IterVar t1 = te::reduce_axis(scores_shape[rank - 1], name + "_t");
  te::Tensor row_max = te::compute(name + "_max", row_shape, [&](const std::vector<ir::Var>& i) {
    return te::max(scores(index(i, 1, {t1.var})), {t1});
  });
  ir::IterVar t2 = te::reduce_axis(scores_shape[rank - 1], name + "_t");
  te::Tensor row_sum = te::compute(name + "_sum", row_shape, [&](const std::vector<ir::Var>& i) {
    return te::sum(ir::exp(scores(index(i, 1, {t2.var})) - row_max(index(i, 1, {ir::Expr(int64_t{0})}))),
                   {t2});
  });
  ir::IterVar t3 = te::reduce_axis(scores_shape[rank - 1], name + "_t");
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    const std::vector<ir::Expr> row = index(i, 1, {ir::Expr(int64_t{0})});
    ir::Expr p = ir::exp(scores(index(i, 1, {t3.var})) - row_max(row));
    ir::Expr weighted = te::sum(p * f32(v(index(i, 2, {t3.var, i[rank - 1]}))), {t3});
    return ir::cast(q.dtype(), weighted / row_sum(row));
  });
}

}  // namespace

void register_attention_ops(OpRegistry& r) {
  OpDef def;
  def.name = "attention";
  def.num_inputs = -1;  // 3, or 4 with a mask
  def.attrs_type = &typeid(AttentionAttrs);
  def.infer = infer_attention;
  def.compute = compute_attention;
  def.templates.push_back(attention_tensor_core_cuda_template());
  LOOM_CHECK(r.add(std::move(def)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
