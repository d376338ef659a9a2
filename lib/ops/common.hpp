// Helpers shared by operator definitions: broadcasting, axis normalisation, error messages.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/shape.hpp"
#include "loom/core/status.hpp"
#include "loom/graph/op.hpp"
#include "loom/ir/op.hpp"
#include "loom/te/tensor.hpp"

namespace loom::ops {

// An injective operator (each output element reads at most one element of each input) with
// typed attributes: the shape and data-movement ops.
inline OpDef injective_op(std::string name, int num_inputs, const std::type_info& attrs,
                          decltype(OpDef::infer) infer, decltype(OpDef::compute) compute) {
  OpDef def;
  def.name = std::move(name);
  def.injective = true;
  def.num_inputs = num_inputs;
  def.attrs_type = &attrs;
  def.infer = std::move(infer);
  def.compute = std::move(compute);
  return def;
}

// Numpy broadcasting of two shapes (aligned at the last dim; a dim of 1 stretches).
inline absl::StatusOr<Shape> broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t k = 0; k < n; ++k) {
    const Dim* da = k < n - a.size() ? nullptr : &a[k - (n - a.size())];
    const Dim* db = k < n - b.size() ? nullptr : &b[k - (n - b.size())];
    if (!da) {
      out[k] = *db;
    } else if (!db) {
      out[k] = *da;
    } else if (*da == *db) {
      out[k] = *da;
    } else if (da->is_static() && da->value() == 1) {
      out[k] = *db;
    } else if (db->is_static() && db->value() == 1) {
      out[k] = *da;
    } else {
      return absl::InvalidArgumentError(str_cat("shapes ", shape_to_string(a), " and ",
                                                shape_to_string(b), " do not broadcast (dim ",
                                                da->to_string(), " vs ", db->to_string(), ")"));
    }
  }
  return out;
}

// The index into a tensor of shape `in` that an output index (of a broadcast shape) reads.
inline std::vector<ir::Expr> broadcast_index(const te::Tensor& in, const std::vector<ir::Var>& out) {
  std::vector<ir::Expr> idx;
  size_t offset = out.size() - in.rank();
  for (int d = 0; d < in.rank(); ++d) {
    if (ir::is_const_int(in.shape()[d], 1)) {
      idx.push_back(ir::Expr(int64_t{0}));
    } else {
      idx.push_back(out[offset + d]);
    }
  }
  return idx;
}

// Axis in [-rank, rank) to [0, rank).
inline absl::StatusOr<int> normalize_axis(int axis, int rank) {
  if (axis < -rank || axis >= rank)
    return absl::InvalidArgumentError(str_cat("axis ", axis, " is out of range for rank ", rank));
  return axis < 0 ? axis + rank : axis;
}

}  // namespace loom::ops
