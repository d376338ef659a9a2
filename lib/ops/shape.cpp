// Shape operators: reshape (row-major reinterpretation) and transpose.

#include <algorithm>
#include <map>

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

absl::StatusOr<TensorType> infer_reshape(const std::vector<TensorType>& in, const OpAttrs& a) {
  const Shape& src = in[0].shape;
  Shape dst = attrs_as<ReshapeAttrs>(a).shape;
  // Static products and symbolic dims (by name, with multiplicity) on both sides.
  int64_t src_static = 1, dst_static = 1;
  std::map<std::string, int> symbols;
  for (const Dim& d : src) {
    if (d.is_static()) src_static *= d.value();
    else ++symbols[d.name()];
  }
  int infer_at = -1;
  for (size_t k = 0; k < dst.size(); ++k) {
    const Dim& d = dst[k];
    if (d.is_symbolic()) {
      if (--symbols[d.name()] < 0)
        return absl::InvalidArgumentError("symbolic dim " + d.name() + " of the new shape " +
                                          shape_to_string(dst) + " is not in the input shape");
    } else if (d.value() == -1) {
      if (infer_at >= 0) return absl::InvalidArgumentError("new shape " + shape_to_string(dst) + " has more than one -1");
      infer_at = static_cast<int>(k);
    } else if (d.value() < 0) {
      return absl::InvalidArgumentError("new shape " + shape_to_string(dst) + " has a negative dim");
    } else {
      dst_static *= d.value();
    }
  }
  std::vector<std::string> missing;
  for (const auto& [name, count] : symbols)
    for (int c = 0; c < count; ++c) missing.push_back(name);
  auto mismatch = [&] {
    return absl::InvalidArgumentError("cannot reshape " + shape_to_string(src) + " to " + shape_to_string(dst));
  };
  if (infer_at >= 0) {
    if (missing.size() > 1 || dst_static == 0 || src_static % dst_static != 0) return mismatch();
    int64_t ratio = src_static / dst_static;
    if (missing.size() == 1) {
      if (ratio != 1) return mismatch();
      dst[infer_at] = Dim(missing[0]);
    } else {
      dst[infer_at] = Dim(ratio);
    }
  } else if (!missing.empty() || src_static != dst_static) {
    return mismatch();
  }
  return TensorType{dst, in[0].dtype};
}

te::Tensor compute_reshape(const std::vector<te::Tensor>& in, const OpAttrs&,
                           const std::vector<ir::Expr>& shape, const std::string& name) {
  const te::Tensor& x = in[0];
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    ir::Expr linear = ir::Expr(int64_t{0});
    for (size_t d = 0; d < shape.size(); ++d) linear = linear * shape[d] + i[d];
    std::vector<ir::Expr> idx(x.rank());
    for (int d = x.rank() - 1; d >= 0; --d) {
      idx[d] = d == 0 ? linear : linear % x.shape()[d];
      linear = linear / x.shape()[d];
    }
    return x(idx);
  });
}

absl::StatusOr<TensorType> infer_transpose(const std::vector<TensorType>& in, const OpAttrs& a) {
  const Shape& s = in[0].shape;
  int rank = static_cast<int>(s.size());
  std::vector<int> perm = attrs_as<TransposeAttrs>(a).perm;
  if (perm.empty())
    for (int d = rank - 1; d >= 0; --d) perm.push_back(d);
  std::vector<int> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  bool ok = static_cast<int>(perm.size()) == rank;
  for (int d = 0; ok && d < rank; ++d) ok = sorted[d] == d;
  if (!ok)
    return absl::InvalidArgumentError("perm " + ints_to_string(perm) + " is not a permutation of " +
                                      std::to_string(rank) + " dims");
  Shape out;
  for (int p : perm) out.push_back(s[p]);
  return TensorType{out, in[0].dtype};
}

te::Tensor compute_transpose(const std::vector<te::Tensor>& in, const OpAttrs& a,
                             const std::vector<ir::Expr>& shape, const std::string& name) {
  const te::Tensor& x = in[0];
  std::vector<int> perm = attrs_as<TransposeAttrs>(a).perm;
  if (perm.empty())
    for (int d = x.rank() - 1; d >= 0; --d) perm.push_back(d);
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    std::vector<ir::Expr> idx(x.rank());
    for (int d = 0; d < x.rank(); ++d) idx[perm[d]] = i[d];
    return x(idx);
  });
}

}  // namespace

void register_shape_ops(OpRegistry& r) {
  OpDef reshape;
  reshape.name = "reshape";
  reshape.injective = true;
  reshape.num_inputs = 1;
  reshape.attrs_type = &typeid(ReshapeAttrs);
  reshape.infer = infer_reshape;
  reshape.compute = compute_reshape;
  OpDef transpose;
  transpose.name = "transpose";
  transpose.injective = true;
  transpose.num_inputs = 1;
  transpose.attrs_type = &typeid(TransposeAttrs);
  transpose.infer = infer_transpose;
  transpose.compute = compute_transpose;
  for (OpDef d : {reshape, transpose}) LOOM_CHECK(r.add(std::move(d)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
