// Typed attributes of loom's built-in operators.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "loom/graph/graph.hpp"
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

// layer_norm: normalizes over the dims from axis to the last; epsilon is added to the variance.
struct LayerNormAttrs final : OpAttrs {
  int axis = -1;
  double epsilon = 1e-5;
  std::string to_string() const override {
    char eps[32];
    std::snprintf(eps, sizeof eps, "%.9g", epsilon);  // exact enough for cache keys
    return "axis=" + std::to_string(axis) + ",epsilon=" + eps;
  }
};

struct ReshapeAttrs final : OpAttrs {
  Shape shape;
  std::string to_string() const override { return "shape=" + shape_to_string(shape); }
  std::shared_ptr<const OpAttrs> bind_dims(const DimBindings& dims) const override {
    if (is_static(shape)) return nullptr;
    auto bound = std::make_shared<ReshapeAttrs>();
    bound->shape = loom::bind_dims(shape, dims);
    return bound;
  }
};

struct TransposeAttrs final : OpAttrs {
  std::vector<int> perm;
  std::string to_string() const override { return "perm=" + ints_to_string(perm); }
};

struct GeluAttrs final : OpAttrs {
  bool approximate = false;
  std::string to_string() const override { return approximate ? "tanh" : "erf"; }
};

// conv2d of NCHW input with OIHW weights: strides, padding per side (top, left, bottom, right),
// dilations and the group count.
struct Conv2dAttrs final : OpAttrs {
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int dilation_h = 1, dilation_w = 1;
  int groups = 1;
  std::string to_string() const override {
    return "stride=" + ints_to_string({stride_h, stride_w}) +
           ",pad=" + ints_to_string({pad_top, pad_left, pad_bottom, pad_right}) +
           ",dilation=" + ints_to_string({dilation_h, dilation_w}) +
           ",groups=" + std::to_string(groups);
  }
};

// max_pool2d / avg_pool2d over NCHW: window, strides and padding per side.
struct Pool2dAttrs final : OpAttrs {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  std::string to_string() const override {
    return "kernel=" + ints_to_string({kernel_h, kernel_w}) +
           ",stride=" + ints_to_string({stride_h, stride_w}) +
           ",pad=" + ints_to_string({pad_top, pad_left, pad_bottom, pad_right});
  }
};

// add_scalar / mul_scalar: the scalar operand.
struct ScalarAttrs final : OpAttrs {
  double value = 0;
  std::string to_string() const override { return "value=" + std::to_string(value); }
};

// ---- Data movement and index reductions (concat ... argmin); ONNX semantics ------------------

inline std::string int64s_to_string(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// concat: the axis the inputs are joined along.
struct ConcatAttrs final : OpAttrs {
  int axis = 0;
  std::string to_string() const override { return "axis=" + std::to_string(axis); }
};

// slice: ONNX Slice. axes empty = 0, 1, ...; steps empty = all 1.
struct SliceAttrs final : OpAttrs {
  std::vector<int64_t> starts, ends;
  std::vector<int> axes;
  std::vector<int64_t> steps;
  std::string to_string() const override {
    return "starts=" + int64s_to_string(starts) + ",ends=" + int64s_to_string(ends) +
           ",axes=" + ints_to_string(axes) + ",steps=" + int64s_to_string(steps);
  }
};

// gather (data, indices): the axis of data that indices select along.
struct GatherAttrs final : OpAttrs {
  int axis = 0;
  std::string to_string() const override { return "axis=" + std::to_string(axis); }
};

// pad: one {begin, end} per dim, the mode and the fill value of kConstant.
struct PadAttrs final : OpAttrs {
  std::vector<PadWidth> pads;
  PadMode mode = PadMode::kConstant;
  double value = 0;
  std::string to_string() const override {
    std::string s = "pads=[";
    for (size_t i = 0; i < pads.size(); ++i)
      s += (i ? "," : "") + std::to_string(pads[i].begin) + ":" + std::to_string(pads[i].end);
    const char* mode_name = mode == PadMode::kConstant ? "constant"
                            : mode == PadMode::kReflect ? "reflect"
                                                        : "edge";
    char v[32];
    std::snprintf(v, sizeof v, "%.9g", value);
    return s + "],mode=" + mode_name + ",value=" + v;
  }
};

// flatten: dims before axis become the first output dim, the rest the second.
struct FlattenAttrs final : OpAttrs {
  int axis = 1;
  std::string to_string() const override { return "axis=" + std::to_string(axis); }
};

// squeeze (dims removed; empty = every static dim of extent 1) and unsqueeze (positions of the
// new dims in the output).
struct AxesAttrs final : OpAttrs {
  std::vector<int> axes;
  std::string to_string() const override { return "axes=" + ints_to_string(axes); }
};

// expand: the shape the input is broadcast against (numpy rules).
struct ExpandAttrs final : OpAttrs {
  Shape shape;
  std::string to_string() const override { return "shape=" + shape_to_string(shape); }
  std::shared_ptr<const OpAttrs> bind_dims(const DimBindings& dims) const override {
    if (is_static(shape)) return nullptr;
    auto bound = std::make_shared<ExpandAttrs>();
    bound->shape = loom::bind_dims(shape, dims);
    return bound;
  }
};

// argmax / argmin: one axis and whether it stays as 1.
struct ArgReduceAttrs final : OpAttrs {
  int axis = 0;
  bool keepdims = true;
  std::string to_string() const override {
    return "axis=" + std::to_string(axis) + (keepdims ? ",keepdims" : "");
  }
};

}  // namespace loom::ops
