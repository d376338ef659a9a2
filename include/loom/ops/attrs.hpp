// Typed attributes of loom's built-in operators.
#pragma once

#include <string>
#include <vector>

#include "loom/graph/op.hpp"

namespace loom::ops {

inline std::string ints_to_string(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// sum, mean, max: axes (empty = all) and whether reduced dims stay as 1.
struct ReduceAttrs final : OpAttrs {
  std::vector<int> axes;
  bool keepdims = false;
  std::string to_string() const override {
    return "axes=" + ints_to_string(axes) + (keepdims ? ",keepdims" : "");
  }
};

struct SoftmaxAttrs final : OpAttrs {
  int axis = -1;
  std::string to_string() const override { return "axis=" + std::to_string(axis); }
};

struct ReshapeAttrs final : OpAttrs {
  Shape shape;
  std::string to_string() const override { return "shape=" + shape_to_string(shape); }
};

struct TransposeAttrs final : OpAttrs {
  std::vector<int> perm;
  std::string to_string() const override { return "perm=" + ints_to_string(perm); }
};

struct GeluAttrs final : OpAttrs {
  bool approximate = false;
  std::string to_string() const override { return approximate ? "tanh" : "erf"; }
};

// add_scalar / mul_scalar: the scalar operand.
struct ScalarAttrs final : OpAttrs {
  double value = 0;
  std::string to_string() const override { return "value=" + std::to_string(value); }
};

}  // namespace loom::ops
