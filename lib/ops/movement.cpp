// Data movement operators with ONNX semantics: concat, slice, gather and pad.
// Every read is clamped into its input, since generated code evaluates both sides of a select.

#include <algorithm>
#include <cstdint>
#include <limits>

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

using ir::Expr;

Expr i64(int64_t v) {
  return Expr(v);
}
Expr clamp(Expr v, Expr lo, Expr hi) {
  return ir::min(ir::max(std::move(v), std::move(lo)), std::move(hi));
}

// ---- concat ---------------------------------------------------------------------------------

absl::StatusOr<TensorType> infer_concat(const std::vector<TensorType>& in, const OpAttrs& a) {
  if (in.empty()) return absl::InvalidArgumentError("concat needs at least one input");
  const int rank = static_cast<int>(in[0].shape.size());
  LOOM_ASSIGN_OR_RETURN(int axis, normalize_axis(attrs_as<ConcatAttrs>(a).axis, rank));
  Shape out = in[0].shape;
  int64_t total = 0;
  for (size_t k = 0; k < in.size(); ++k) {
    const Shape& s = in[k].shape;
    if (in[k].dtype != in[0].dtype)
      return absl::InvalidArgumentError(str_cat("input ", k, " is ", in[k].dtype.to_string(),
                                                ", input 0 is ", in[0].dtype.to_string()));
    if (static_cast<int>(s.size()) != rank)
      return absl::InvalidArgumentError(
          str_cat("input ", k, " has rank ", s.size(), ", input 0 has rank ", rank));
    for (int d = 0; d < rank; ++d) {
      if (d == axis) continue;
      if (s[d] != out[d])
        return absl::InvalidArgumentError(
            str_cat("input ", k, " has ", s[d].to_string(), " in dim ", d, " where input 0 has ",
                    out[d].to_string(), " (only dim ", axis, " may differ)"));
    }
    if (s[axis].is_symbolic())
      return absl::InvalidArgumentError(str_cat("input ", k, " has the symbolic dim ",
                                                s[axis].name(), " on the concat axis ", axis,
                                                " (it must be static)"));
    total += s[axis].value();
  }
  out[axis] = Dim(total);
  return TensorType{out, in[0].dtype};
}

te::Tensor compute_concat(const std::vector<te::Tensor>& in, const OpAttrs& a,
                          const std::vector<Expr>& shape, const std::string& name) {
  const int axis = *normalize_axis(attrs_as<ConcatAttrs>(a).axis, in[0].rank());
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    auto read = [&](size_t k, int64_t offset, int64_t extent) {
      std::vector<Expr> idx(i.begin(), i.end());
      idx[axis] = clamp(idx[axis] - offset, i64(0), i64(extent - 1));
      return in[k](idx);
    };
    // Innermost select first: the last non-empty input, then each earlier one guards its range.
    std::vector<int64_t> offsets;
    int64_t offset = 0;
    for (const te::Tensor& t : in) {
      offsets.push_back(offset);
      offset += *ir::as_const_int(t.shape()[axis]);
    }
    Expr v;
    for (size_t k = in.size(); k-- > 0;) {
      int64_t extent = *ir::as_const_int(in[k].shape()[axis]);
      if (extent == 0) continue;
      Expr x = read(k, offsets[k], extent);
      v = v.defined() ? ir::select(i[axis] < offsets[k] + extent, x, v) : x;
    }
    return v.defined() ? v : ir::make_zero(in[0].dtype());  // an empty output reads nothing
  });
}

// ---- slice ----------------------------------------------------------------------------------

// One sliced dim: the first input index read, the step and the output extent.
struct SliceRange {
  int64_t start = 0, step = 1, extent = 0;
};

// ONNX Slice rules for a dim of extent n: negative start/end count from the end, then both are
// clamped ([0, n] for positive steps, [0, n-1] and [-1, n-1] for negative ones).
SliceRange slice_range(int64_t n, int64_t start, int64_t end, int64_t step) {
  SliceRange r;
  r.step = step;
  if (n == 0) return r;
  if (start < 0) start += n;
  if (end < 0) end += n;
  if (step > 0) {
    start = std::clamp<int64_t>(start, 0, n);
    end = std::clamp<int64_t>(end, 0, n);
    r.extent = end > start ? (end - start - 1) / step + 1 : 0;
  } else {
    start = std::clamp<int64_t>(start, 0, n - 1);
    end = std::clamp<int64_t>(end, -1, n - 1);
    const int64_t magnitude =
        step == std::numeric_limits<int64_t>::min() ? std::numeric_limits<int64_t>::max() : -step;
    r.extent = start > end ? (start - end - 1) / magnitude + 1 : 0;
  }
  r.start = r.extent > 0 ? start : 0;
  return r;
}

// The SliceRange of every sliced dim by dim (others absent), or an error for bad attributes.
absl::StatusOr<std::vector<std::pair<int, SliceRange>>> slice_ranges(const Shape& s,
                                                                     const SliceAttrs& a) {
  const int rank = static_cast<int>(s.size());
  const size_t n = a.starts.size();
  if (a.ends.size() != n)
    return absl::InvalidArgumentError(
        str_cat("slice has ", n, " starts but ", a.ends.size(), " ends"));
  if (!a.axes.empty() && a.axes.size() != n)
    return absl::InvalidArgumentError(
        str_cat("slice has ", n, " starts but ", a.axes.size(), " axes"));
  if (!a.steps.empty() && a.steps.size() != n)
    return absl::InvalidArgumentError(
        str_cat("slice has ", n, " starts but ", a.steps.size(), " steps"));
  if (a.axes.empty() && static_cast<int>(n) > rank)
    return absl::InvalidArgumentError(str_cat("slice has ", n, " starts for rank ", rank));
  std::vector<std::pair<int, SliceRange>> out;
  for (size_t k = 0; k < n; ++k) {
    int axis = static_cast<int>(k);
    if (!a.axes.empty()) {
      LOOM_ASSIGN_OR_RETURN(axis, normalize_axis(a.axes[k], rank));
    }
    for (const auto& [seen, range] : out)
      if (seen == axis)
        return absl::InvalidArgumentError(str_cat("slice axis ", a.axes[k], " is repeated"));
    const int64_t step = a.steps.empty() ? 1 : a.steps[k];
    if (step == 0) return absl::InvalidArgumentError(str_cat("slice step of axis ", axis, " is 0"));
    if (s[axis].is_symbolic())
      return absl::InvalidArgumentError(
          str_cat("sliced dim ", axis, " (", s[axis].name(), ") must be static"));
    out.emplace_back(axis, slice_range(s[axis].value(), a.starts[k], a.ends[k], step));
  }
  return out;
}

absl::StatusOr<TensorType> infer_slice(const std::vector<TensorType>& in, const OpAttrs& a) {
  LOOM_ASSIGN_OR_RETURN(auto ranges, slice_ranges(in[0].shape, attrs_as<SliceAttrs>(a)));
  Shape out = in[0].shape;
  for (const auto& [axis, r] : ranges) out[axis] = Dim(r.extent);
  return TensorType{out, in[0].dtype};
}

te::Tensor compute_slice(const std::vector<te::Tensor>& in, const OpAttrs& a,
                         const std::vector<Expr>& shape, const std::string& name) {
  const te::Tensor& x = in[0];
  Shape s;
  for (const Expr& e : x.shape()) {
    std::optional<int64_t> v = ir::as_const_int(e);
    s.push_back(v ? Dim(*v) : Dim("symbolic"));
  }
  auto ranges = *slice_ranges(s, attrs_as<SliceAttrs>(a));
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    std::vector<Expr> idx(i.begin(), i.end());
    for (const auto& [axis, r] : ranges) idx[axis] = i64(r.start) + idx[axis] * r.step;
    return x(idx);
  });
}

// ---- gather ---------------------------------------------------------------------------------

absl::StatusOr<TensorType> infer_gather(const std::vector<TensorType>& in, const OpAttrs& a) {
  const TensorType& data = in[0];
  const TensorType& indices = in[1];
  if (indices.dtype != DType::i32() && indices.dtype != DType::i64())
    return absl::InvalidArgumentError("gather indices must be i32 or i64, got " +
                                      indices.dtype.to_string());
  const int rank = static_cast<int>(data.shape.size());
  if (rank == 0) return absl::InvalidArgumentError("gather from a scalar (rank 0)");
  LOOM_ASSIGN_OR_RETURN(int axis, normalize_axis(attrs_as<GatherAttrs>(a).axis, rank));
  if (data.shape[axis].is_static() && data.shape[axis].value() == 0)
    return absl::InvalidArgumentError(str_cat("gather along dim ", axis, " of extent 0"));
  Shape out(data.shape.begin(), data.shape.begin() + axis);
  out.insert(out.end(), indices.shape.begin(), indices.shape.end());
  out.insert(out.end(), data.shape.begin() + axis + 1, data.shape.end());
  return TensorType{out, data.dtype};
}

te::Tensor compute_gather(const std::vector<te::Tensor>& in, const OpAttrs& a,
                          const std::vector<Expr>& shape, const std::string& name) {
  const te::Tensor& x = in[0];
  const te::Tensor& indices = in[1];
  const int axis = *normalize_axis(attrs_as<GatherAttrs>(a).axis, x.rank());
  const int q = indices.rank();
  const Expr n = x.shape()[axis];
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    std::vector<Expr> at(i.begin() + axis, i.begin() + axis + q);
    Expr k = ir::cast(DType::i64(), indices(at));
    k = ir::select(k < i64(0), k + n, k);
    // Out of range after wrapping: clamped, so a bad index reads a border element, never outside.
    k = clamp(k, i64(0), n - i64(1));
    std::vector<Expr> idx(i.begin(), i.begin() + axis);
    idx.push_back(k);
    idx.insert(idx.end(), i.begin() + axis + q, i.end());
    return x(idx);
  });
}

// ---- pad ------------------------------------------------------------------------------------

absl::StatusOr<TensorType> infer_pad(const std::vector<TensorType>& in, const OpAttrs& a) {
  const auto& attrs = attrs_as<PadAttrs>(a);
  const Shape& s = in[0].shape;
  if (attrs.pads.size() != s.size())
    return absl::InvalidArgumentError(str_cat(
        "pad needs one {begin, end} per dim: ", attrs.pads.size(), " given for rank ", s.size()));
  Shape out = s;
  for (size_t d = 0; d < s.size(); ++d) {
    const PadWidth& p = attrs.pads[d];
    if (p.begin < 0 || p.end < 0)
      return absl::InvalidArgumentError(str_cat("pads of dim ", d, " are negative (", p.begin, ", ",
                                                p.end, "); crop with slice instead"));
    if (p.begin == 0 && p.end == 0) continue;
    if (s[d].is_symbolic())
      return absl::InvalidArgumentError(
          str_cat("padded dim ", d, " (", s[d].name(), ") must be static"));
    const int64_t n = s[d].value();
    if (attrs.mode == PadMode::kReflect && (p.begin >= n || p.end >= n))
      return absl::InvalidArgumentError(str_cat("reflect pads of dim ", d, " (", p.begin, ", ",
                                                p.end, ") must be smaller than its extent ", n));
    if (attrs.mode == PadMode::kEdge && n == 0)
      return absl::InvalidArgumentError(str_cat("edge padding of dim ", d, " of extent 0"));
    out[d] = Dim(n + p.begin + p.end);
  }
  return TensorType{out, in[0].dtype};
}

te::Tensor compute_pad(const std::vector<te::Tensor>& in, const OpAttrs& a,
                       const std::vector<Expr>& shape, const std::string& name) {
  const auto& attrs = attrs_as<PadAttrs>(a);
  const te::Tensor& x = in[0];
  const Expr fill = ir::make_const(x.dtype(), attrs.value);
  bool empty = false;
  for (const Expr& e : x.shape()) empty = empty || ir::is_const_int(e, 0);
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) -> Expr {
    if (empty) return fill;  // nothing to read
    std::vector<Expr> idx(i.begin(), i.end());
    Expr inside;
    for (int d = 0; d < x.rank(); ++d) {
      const PadWidth& p = attrs.pads[d];
      if (p.begin == 0 && p.end == 0) continue;
      const int64_t n = *ir::as_const_int(x.shape()[d]);
      Expr j = idx[d] - p.begin;
      switch (attrs.mode) {
        case PadMode::kConstant: {
          Expr in_dim = j >= i64(0) && j < i64(n);
          inside = inside.defined() ? inside && in_dim : in_dim;
          idx[d] = clamp(j, i64(0), i64(n - 1));
          break;
        }
        case PadMode::kEdge:
          idx[d] = clamp(j, i64(0), i64(n - 1));
          break;
        case PadMode::kReflect:
          // Pads are below n, so one reflection at each end lands inside.
          j = ir::select(j < i64(0), -j, j);
          idx[d] = ir::select(j >= i64(n), i64(2 * (n - 1)) - j, j);
          break;
      }
    }
    Expr v = x(idx);
    return inside.defined() ? ir::select(inside, v, fill) : v;
  });
}

}  // namespace

void register_movement_ops(OpRegistry& r) {
  for (OpDef d : {injective_op("concat", -1, typeid(ConcatAttrs), infer_concat, compute_concat),
                  injective_op("slice", 1, typeid(SliceAttrs), infer_slice, compute_slice),
                  injective_op("gather", 2, typeid(GatherAttrs), infer_gather, compute_gather),
                  injective_op("pad", 1, typeid(PadAttrs), infer_pad, compute_pad)})
    LOOM_CHECK(r.add(std::move(d)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
