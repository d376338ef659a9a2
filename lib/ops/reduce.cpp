// Reductions over axes (sum, mean, max, min, prod), argmax/argmin, softmax and log_softmax;
// their CPU templates are in rows_cpu.cpp (none for log_softmax yet) and CUDA templates in
// rows_cuda.cpp.

#include <algorithm>

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"
#include "ops/rows_cpu.hpp"
#include "ops/rows_cuda.hpp"

namespace loom::ops {
namespace {

// Sorted, de-duplicated, non-negative axes; all axes when empty.
absl::StatusOr<std::vector<int>> reduced_axes(const std::vector<int>& axes, int rank) {
  std::vector<int> out;
  if (axes.empty()) {
    for (int d = 0; d < rank; ++d) out.push_back(d);
    return out;
  }
  for (int a : axes) {
    LOOM_ASSIGN_OR_RETURN(int n, normalize_axis(a, rank));
    if (std::find(out.begin(), out.end(), n) != out.end())
      return absl::InvalidArgumentError(str_cat("axis ", a, " is repeated"));
    out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool contains(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }

DType accum_type(DType t) { return t.is_float() ? DType::f32() : DType::i64(); }

OpDef reduce_op(const std::string& name, ir::ReduceKind kind, bool mean) {
  OpDef def;
  def.name = name;
  def.num_inputs = 1;
  def.attrs_type = &typeid(ReduceAttrs);
  def.infer = [](const std::vector<TensorType>& in, const OpAttrs& a) -> absl::StatusOr<TensorType> {
    const auto& attrs = attrs_as<ReduceAttrs>(a);
    if (in[0].dtype.is_bool()) return absl::InvalidArgumentError("reduction of a bool tensor");
    int rank = static_cast<int>(in[0].shape.size());
    LOOM_ASSIGN_OR_RETURN(std::vector<int> axes, reduced_axes(attrs.axes, rank));
    Shape out;
    for (int d = 0; d < rank; ++d) {
      if (!contains(axes, d)) out.push_back(in[0].shape[d]);
      else if (attrs.keepdims) out.push_back(Dim(1));
    }
    return TensorType{out, in[0].dtype};
  };
  def.compute = [kind, mean](const std::vector<te::Tensor>& in, const OpAttrs& a,
                             const std::vector<ir::Expr>& shape, const std::string& name) {
    const auto& attrs = attrs_as<ReduceAttrs>(a);
    const te::Tensor& x = in[0];
    std::vector<int> axes = *reduced_axes(attrs.axes, x.rank());
    std::vector<ir::IterVar> rv;
    ir::Expr count = ir::Expr(int64_t{1});
    for (int d : axes) {
      rv.push_back(te::reduce_axis(x.shape()[d], name + "_r" + std::to_string(d)));
      count = count * x.shape()[d];
    }
    return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
      std::vector<ir::Expr> idx;
      int out_d = 0, r = 0;
      for (int d = 0; d < x.rank(); ++d) {
        if (contains(axes, d)) {
          idx.push_back(rv[r++].var);
          if (attrs.keepdims) ++out_d;
        } else {
          idx.push_back(i[out_d++]);
        }
      }
      const bool accumulates = kind == ir::ReduceKind::kSum || kind == ir::ReduceKind::kProd;
      DType acc = accumulates ? accum_type(x.dtype()) : x.dtype();
      // A rank-0 input has no axis to reduce: the result is its one element.
      ir::Expr v = rv.empty() ? ir::cast(acc, x(idx)) : ir::Reduce::make(kind, x(idx), rv, acc);
      if (mean) v = v / ir::cast(acc, count);
      return ir::cast(x.dtype(), v);
    });
  };
  def.templates.push_back(row_reduce_cpu_template(kind, mean));
  def.templates.push_back(row_reduce_cuda_template(kind, mean));
  return def;
}

// argmax / argmin in two stages: the extreme value of each row, then the smallest index holding
// it (so the first one wins ties).
OpDef arg_reduce_op(const std::string& name, bool is_max) {
  OpDef def;
  def.name = name;
  def.num_inputs = 1;
  def.attrs_type = &typeid(ArgReduceAttrs);
  def.infer = [name](const std::vector<TensorType>& in,
                     const OpAttrs& a) -> absl::StatusOr<TensorType> {
    const auto& attrs = attrs_as<ArgReduceAttrs>(a);
    if (in[0].dtype.is_bool()) return absl::InvalidArgumentError(name + " of a bool tensor");
    const Shape& s = in[0].shape;
    LOOM_ASSIGN_OR_RETURN(int axis, normalize_axis(attrs.axis, static_cast<int>(s.size())));
    if (s[axis].is_static() && s[axis].value() == 0)
      return absl::InvalidArgumentError(str_cat(name, " over dim ", axis, " of extent 0"));
    Shape out;
    for (int d = 0; d < static_cast<int>(s.size()); ++d) {
      if (d != axis) out.push_back(s[d]);
      else if (attrs.keepdims) out.push_back(Dim(1));
    }
    return TensorType{out, DType::i64()};
  };
  def.compute = [is_max](const std::vector<te::Tensor>& in, const OpAttrs& a,
                         const std::vector<ir::Expr>& shape, const std::string& name) {
    const auto& attrs = attrs_as<ArgReduceAttrs>(a);
    const te::Tensor& x = in[0];
    const int axis = *normalize_axis(attrs.axis, x.rank());
    const ir::Expr n = x.shape()[axis];
    // The input index of output index i with k on the reduced axis.
    auto at = [&](const std::vector<ir::Var>& i, ir::Expr k, bool keepdims) {
      std::vector<ir::Expr> idx(i.begin(), i.end());
      if (keepdims) idx[axis] = std::move(k);
      else idx.insert(idx.begin() + axis, std::move(k));
      return idx;
    };
    const DType acc = x.dtype().is_float() ? DType::f32() : x.dtype();
    std::vector<ir::Expr> row_shape = x.shape();
    row_shape[axis] = ir::Expr(int64_t{1});
    ir::IterVar k1 = te::reduce_axis(n, name + "_k");
    te::Tensor best = te::compute(name + "_best", row_shape, [&](const std::vector<ir::Var>& i) {
      ir::Expr v = ir::cast(acc, x(at(i, k1.var, true)));
      return is_max ? te::max(v, {k1}, acc) : te::min(v, {k1}, acc);
    });
    ir::IterVar k2 = te::reduce_axis(n, name + "_k");
    return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
      ir::Expr v = ir::cast(acc, x(at(i, k2.var, attrs.keepdims)));
      ir::Expr hit = v == best(at(i, ir::Expr(int64_t{0}), attrs.keepdims));
      ir::Expr first = te::min(ir::select(hit, ir::Expr(k2.var), n), {k2}, DType::i64());
      // A row with NaN matches nothing; the clamp keeps its index in range.
      return ir::min(first, n - int64_t{1});
    });
  };
  def.templates.push_back(arg_reduce_cuda_template(is_max));
  def.templates.push_back(axis_columns_cuda_template(name));
  return def;
}

// softmax, exp(x - max) / sum, or log_softmax, (x - max) - log(sum), where sum is that of
// exp(x - max) along one axis, in f32: subtracting the max keeps exp from overflowing.
OpDef softmax_op(const std::string& op_name, bool log) {
  OpDef def;
  def.name = op_name;
  def.num_inputs = 1;
  def.attrs_type = &typeid(SoftmaxAttrs);
  def.infer = [op_name](const std::vector<TensorType>& in,
                        const OpAttrs& a) -> absl::StatusOr<TensorType> {
    if (!in[0].dtype.is_float())
      return absl::InvalidArgumentError(op_name + " needs a floating-point tensor, got " +
                                        in[0].dtype.to_string());
    LOOM_ASSIGN_OR_RETURN(int axis, normalize_axis(attrs_as<SoftmaxAttrs>(a).axis,
                                                   static_cast<int>(in[0].shape.size())));
    (void)axis;
    return in[0];
  };
  def.compute = [log](const std::vector<te::Tensor>& in, const OpAttrs& a,
                      const std::vector<ir::Expr>& shape, const std::string& name) {
    const te::Tensor& x = in[0];
    int axis = *normalize_axis(attrs_as<SoftmaxAttrs>(a).axis, x.rank());
    std::vector<ir::Expr> row_shape = shape;
    row_shape[axis] = ir::Expr(int64_t{1});
    auto at = [&](const std::vector<ir::Var>& i, ir::Expr k) {
      std::vector<ir::Expr> idx(i.begin(), i.end());
      idx[axis] = std::move(k);
      return idx;
    };
    auto f32 = [](ir::Expr v) { return ir::cast(DType::f32(), v); };
    ir::IterVar k1 = te::reduce_axis(x.shape()[axis], name + "_k");
    te::Tensor row_max = te::compute(name + "_max", row_shape, [&](const std::vector<ir::Var>& i) {
      return te::max(f32(x(at(i, k1.var))), {k1});
    });
    ir::IterVar k2 = te::reduce_axis(x.shape()[axis], name + "_k");
    te::Tensor row_sum = te::compute(name + "_sum", row_shape, [&](const std::vector<ir::Var>& i) {
      std::vector<ir::Expr> r = at(i, ir::Expr(int64_t{0}));
      return te::sum(ir::exp(f32(x(at(i, k2.var))) - row_max(r)), {k2});
    });
    if (log) {
      // One log per row, not per element.
      te::Tensor log_sum =
          te::compute(name + "_log_sum", row_shape, [&](const std::vector<ir::Var>& i) {
            return ir::log(row_sum(std::vector<ir::Expr>(i.begin(), i.end())));
          });
      return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
        std::vector<ir::Expr> r = at(i, ir::Expr(int64_t{0}));
        std::vector<ir::Expr> idx(i.begin(), i.end());
        return ir::cast(x.dtype(), f32(x(idx)) - row_max(r) - log_sum(r));
      });
    }
    return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
      std::vector<ir::Expr> r = at(i, ir::Expr(int64_t{0}));
      std::vector<ir::Expr> idx(i.begin(), i.end());
      return ir::cast(x.dtype(), ir::exp(f32(x(idx)) - row_max(r)) / row_sum(r));
    });
  };
  if (!log) def.templates.push_back(softmax_cpu_template());
  def.templates.push_back(softmax_cuda_template(log));
  def.templates.push_back(axis_columns_cuda_template(op_name));
  return def;
}

}  // namespace

void register_reduce_ops(OpRegistry& r) {
  for (OpDef d : {reduce_op("sum", ir::ReduceKind::kSum, false),
                  reduce_op("mean", ir::ReduceKind::kSum, true),
                  reduce_op("max", ir::ReduceKind::kMax, false), softmax_op("softmax", false),
                  softmax_op("log_softmax", true),
                  reduce_op("min", ir::ReduceKind::kMin, false),
                  reduce_op("prod", ir::ReduceKind::kProd, false), arg_reduce_op("argmax", true),
                  arg_reduce_op("argmin", false)})
    LOOM_CHECK(r.add(std::move(d)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
