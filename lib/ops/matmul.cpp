// Batched matrix multiplication with numpy batch broadcasting: [..., M, K] x [..., K, N].

#include "ops/common.hpp"
#include "ops/matmul_cpu.hpp"
#include "ops/matmul_cuda.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

absl::StatusOr<TensorType> infer_matmul(const std::vector<TensorType>& in, const OpAttrs&) {
  const TensorType& a = in[0];
  const TensorType& b = in[1];
  if (a.dtype != b.dtype)
    return absl::InvalidArgumentError("dtypes " + a.dtype.to_string() + " and " + b.dtype.to_string() + " differ");
  if (!a.dtype.is_float() && !a.dtype.is_int())
    return absl::InvalidArgumentError("matmul of " + a.dtype.to_string() + " tensors");
  if (a.shape.size() < 2 || b.shape.size() < 2)
    return absl::InvalidArgumentError(str_cat("matmul needs rank >= 2 operands, got ranks ",
                                              a.shape.size(), " and ", b.shape.size()));
  const Dim& ka = a.shape[a.shape.size() - 1];
  const Dim& kb = b.shape[b.shape.size() - 2];
  if (ka != kb)
    return absl::InvalidArgumentError("inner dimensions differ: " + ka.to_string() + " vs " +
                                      kb.to_string() + " (" + shape_to_string(a.shape) + " x " +
                                      shape_to_string(b.shape) + ")");
  Shape batch_a(a.shape.begin(), a.shape.end() - 2), batch_b(b.shape.begin(), b.shape.end() - 2);
  LOOM_ASSIGN_OR_RETURN(Shape out, broadcast_shapes(batch_a, batch_b));
  out.push_back(a.shape[a.shape.size() - 2]);
  out.push_back(b.shape[b.shape.size() - 1]);
  return TensorType{out, a.dtype};
}

te::Tensor compute_matmul(const std::vector<te::Tensor>& in, const OpAttrs&,
                          const std::vector<ir::Expr>& shape, const std::string& name) {
  const te::Tensor& a = in[0];
  const te::Tensor& b = in[1];
  ir::IterVar k = te::reduce_axis(a.shape()[a.rank() - 1], name + "_k");
  int out_rank = static_cast<int>(shape.size());
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    // Batch indices broadcast like elementwise ops; the last two dims are the matrix.
    std::vector<ir::Var> batch(i.begin(), i.end() - 2);
    auto batch_index = [&](const te::Tensor& t) {
      std::vector<ir::Expr> idx;
      size_t offset = batch.size() - (t.rank() - 2);
      for (int d = 0; d < t.rank() - 2; ++d)
        idx.push_back(ir::is_const_int(t.shape()[d], 1) ? ir::Expr(int64_t{0}) : ir::Expr(batch[offset + d]));
      return idx;
    };
    std::vector<ir::Expr> ia = batch_index(a), ib = batch_index(b);
    ia.push_back(i[out_rank - 2]);
    ia.push_back(k.var);
    ib.push_back(k.var);
    ib.push_back(i[out_rank - 1]);
    DType acc = a.dtype().is_float() ? DType::f32() : DType::i64();
    return ir::cast(a.dtype(), te::sum(ir::cast(acc, a(ia)) * ir::cast(acc, b(ib)), {k}, acc));
  });
}

}  // namespace

void register_matmul_ops(OpRegistry& r) {
  OpDef def;
  def.name = "matmul";
  def.num_inputs = 2;
  def.infer = infer_matmul;
  def.compute = compute_matmul;
  def.templates.push_back(matmul_cpu_template());
  def.templates.push_back(matmul_wgmma_cuda_template());
  def.templates.push_back(matmul_tensor_core_cuda_template());
  def.templates.push_back(matmul_cuda_template());
  LOOM_CHECK(r.add(std::move(def)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
