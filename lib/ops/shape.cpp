// Shape operators: reshape (row-major reinterpretation) and transpose; flatten, squeeze,
// unsqueeze (reshapes with ONNX rules) and expand (numpy broadcast to a shape).

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
    } else if (__builtin_mul_overflow(dst_static, d.value(), &dst_static)) {
      // More elements than int64 holds: the input (whose size the graph checked) has fewer.
      return absl::InvalidArgumentError("cannot reshape " + shape_to_string(src) + " to " +
                                        shape_to_string(dst) + ": its size overflows 64 bits");
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

// ---- flatten, squeeze, unsqueeze, expand -----------------------------------------------------

// The product of dims as one Dim: static, or a lone symbolic dim among static 1s.
absl::StatusOr<Dim> product_dim(const Shape& dims) {
  int64_t product = 1;
  std::vector<Dim> symbolic;
  for (const Dim& d : dims) {
    if (d.is_static()) product *= d.value();
    else symbolic.push_back(d);
  }
  if (symbolic.empty() || product == 0) return Dim(product);
  if (symbolic.size() == 1 && product == 1) return symbolic[0];
  return absl::InvalidArgumentError("flattened dims " + shape_to_string(dims) +
                                    " multiply symbolic dims (only a lone one is supported)");
}

absl::StatusOr<TensorType> infer_flatten(const std::vector<TensorType>& in, const OpAttrs& a) {
  const Shape& s = in[0].shape;
  const int rank = static_cast<int>(s.size());
  int axis = attrs_as<FlattenAttrs>(a).axis;
  if (axis < -rank || axis > rank)
    return absl::InvalidArgumentError(str_cat("flatten axis ", axis, " is out of range [", -rank,
                                              ", ", rank, "]"));
  if (axis < 0) axis += rank;
  LOOM_ASSIGN_OR_RETURN(Dim outer, product_dim(Shape(s.begin(), s.begin() + axis)));
  LOOM_ASSIGN_OR_RETURN(Dim inner, product_dim(Shape(s.begin() + axis, s.end())));
  return TensorType{{outer, inner}, in[0].dtype};
}

// Squeezed dims of s, sorted; empty axes means every static dim of extent 1.
absl::StatusOr<std::vector<int>> squeezed_dims(const Shape& s, const std::vector<int>& axes) {
  const int rank = static_cast<int>(s.size());
  std::vector<int> out;
  if (axes.empty()) {
    for (int d = 0; d < rank; ++d)
      if (s[d].is_static() && s[d].value() == 1) out.push_back(d);
    return out;
  }
  for (int a : axes) {
    LOOM_ASSIGN_OR_RETURN(int d, normalize_axis(a, rank));
    if (std::find(out.begin(), out.end(), d) != out.end())
      return absl::InvalidArgumentError(str_cat("squeeze axis ", a, " is repeated"));
    if (!s[d].is_static() || s[d].value() != 1)
      return absl::InvalidArgumentError(str_cat("squeezed dim ", d, " is ", s[d].to_string(),
                                                ", not 1"));
    out.push_back(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<TensorType> infer_squeeze(const std::vector<TensorType>& in, const OpAttrs& a) {
  const Shape& s = in[0].shape;
  LOOM_ASSIGN_OR_RETURN(std::vector<int> dims, squeezed_dims(s, attrs_as<AxesAttrs>(a).axes));
  Shape out;
  for (int d = 0; d < static_cast<int>(s.size()); ++d)
    if (std::find(dims.begin(), dims.end(), d) == dims.end()) out.push_back(s[d]);
  return TensorType{out, in[0].dtype};
}

te::Tensor compute_squeeze(const std::vector<te::Tensor>& in, const OpAttrs& a,
                           const std::vector<ir::Expr>& shape, const std::string& name) {
  const te::Tensor& x = in[0];
  Shape s;
  for (const ir::Expr& e : x.shape()) s.push_back(ir::is_const_int(e, 1) ? Dim(1) : Dim("other"));
  std::vector<int> dims = *squeezed_dims(s, attrs_as<AxesAttrs>(a).axes);
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    std::vector<ir::Expr> idx;
    size_t out_d = 0;
    for (int d = 0; d < x.rank(); ++d) {
      bool squeezed = std::find(dims.begin(), dims.end(), d) != dims.end();
      idx.push_back(squeezed ? ir::Expr(int64_t{0}) : ir::Expr(i[out_d++]));
    }
    return x(idx);
  });
}

// Positions of the new dims in the output (rank out_rank), sorted.
absl::StatusOr<std::vector<int>> inserted_dims(const std::vector<int>& axes, int out_rank) {
  if (axes.empty()) return absl::InvalidArgumentError("unsqueeze needs at least one axis");
  std::vector<int> out;
  for (int a : axes) {
    LOOM_ASSIGN_OR_RETURN(int d, normalize_axis(a, out_rank));
    if (std::find(out.begin(), out.end(), d) != out.end())
      return absl::InvalidArgumentError(str_cat("unsqueeze axis ", a, " is repeated"));
    out.push_back(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<TensorType> infer_unsqueeze(const std::vector<TensorType>& in, const OpAttrs& a) {
  const auto& axes = attrs_as<AxesAttrs>(a).axes;
  const int out_rank = static_cast<int>(in[0].shape.size() + axes.size());
  LOOM_ASSIGN_OR_RETURN(std::vector<int> dims, inserted_dims(axes, out_rank));
  Shape out;
  size_t next = 0;
  for (int d = 0; d < out_rank; ++d) {
    if (std::find(dims.begin(), dims.end(), d) != dims.end()) out.push_back(Dim(1));
    else out.push_back(in[0].shape[next++]);
  }
  return TensorType{out, in[0].dtype};
}

te::Tensor compute_unsqueeze(const std::vector<te::Tensor>& in, const OpAttrs& a,
                             const std::vector<ir::Expr>& shape, const std::string& name) {
  const int out_rank = static_cast<int>(shape.size());
  std::vector<int> dims = *inserted_dims(attrs_as<AxesAttrs>(a).axes, out_rank);
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    std::vector<ir::Expr> idx;
    for (int d = 0; d < out_rank; ++d)
      if (std::find(dims.begin(), dims.end(), d) == dims.end()) idx.push_back(i[d]);
    return in[0](idx);
  });
}

absl::StatusOr<TensorType> infer_expand(const std::vector<TensorType>& in, const OpAttrs& a) {
  const Shape& to = attrs_as<ExpandAttrs>(a).shape;
  for (const Dim& d : to)
    if (d.is_static() && d.value() < 0)
      return absl::InvalidArgumentError("expand shape " + shape_to_string(to) + " has a negative dim");
  LOOM_ASSIGN_OR_RETURN(Shape out, broadcast_shapes(in[0].shape, to));
  return TensorType{out, in[0].dtype};
}

te::Tensor compute_expand(const std::vector<te::Tensor>& in, const OpAttrs&,
                          const std::vector<ir::Expr>& shape, const std::string& name) {
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    return in[0](broadcast_index(in[0], i));
  });
}

}  // namespace

void register_shape_ops(OpRegistry& r) {
  for (OpDef d :
       {injective_op("reshape", 1, typeid(ReshapeAttrs), infer_reshape, compute_reshape),
        injective_op("transpose", 1, typeid(TransposeAttrs), infer_transpose, compute_transpose),
        injective_op("flatten", 1, typeid(FlattenAttrs), infer_flatten, compute_reshape),
        injective_op("squeeze", 1, typeid(AxesAttrs), infer_squeeze, compute_squeeze),
        injective_op("unsqueeze", 1, typeid(AxesAttrs), infer_unsqueeze, compute_unsqueeze),
        injective_op("expand", 1, typeid(ExpandAttrs), infer_expand, compute_expand)}) {
    d.reshape = d.name == "reshape" || d.name == "flatten" || d.name == "squeeze" ||
                d.name == "unsqueeze";
    LOOM_CHECK(r.add(std::move(d)).ok(), "duplicate built-in op");
  }
}

}  // namespace loom::ops
