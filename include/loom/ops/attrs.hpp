// Typed attributes of loom's built-in operators.
#pragma once

#include <cstdio>
#include <limits>
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

// A double written exactly (round-trips), for cache keys.
inline std::string exact_double(double v) {
  char s[32];
  std::snprintf(s, sizeof s, "%.17g", v);
  return s;
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

// attention(q, kt, v) = softmax(scale * q kt, last axis) v for q [..., S, D], kt [..., D, T] and
// v [..., T, E] of one floating-point type with the same batch dims: what passes::fuse_attention
// makes of that chain of operators on CUDA targets (computed in f32 and rounded once).
struct AttentionAttrs final : OpAttrs {
  double scale = 1.0;
  std::string to_string() const override {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", scale);
    return std::string("scale=") + text;
  }
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

// conv_transpose2d: as conv2d, plus output_padding per spatial dim.
struct ConvTranspose2dAttrs final : OpAttrs {
  Conv2dAttrs conv;
  int output_padding_h = 0, output_padding_w = 0;
  std::string to_string() const override {
    return conv.to_string() + ",output_padding=" + ints_to_string({output_padding_h, output_padding_w});
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

// leaky_relu (the slope below zero) and elu (the scale of alpha * (e^x - 1) below zero).
struct AlphaAttrs final : OpAttrs {
  double alpha = 0;
  std::string to_string() const override { return "alpha=" + exact_double(alpha); }
};

// hard_sigmoid: max(0, min(1, alpha * x + beta)), as ONNX.
struct HardSigmoidAttrs final : OpAttrs {
  double alpha = 0.2;
  double beta = 0.5;
  std::string to_string() const override {
    return "alpha=" + exact_double(alpha) + ",beta=" + exact_double(beta);
  }
};

// clip: bounds of the result; an infinite bound does not clip. With min > max every element
// becomes max (as ONNX). Integer tensors need whole-number bounds.
struct ClipAttrs final : OpAttrs {
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  std::string to_string() const override {
    return "min=" + exact_double(min) + ",max=" + exact_double(max);
  }
};

// cast: the element type of the result (scalar).
struct CastAttrs final : OpAttrs {
  DType dtype;
  std::string to_string() const override { return "dtype=" + dtype.to_string(); }
};

// layout_transform: the same values, stored in the layout row_major(shape) + steps.
struct LayoutAttrs final : OpAttrs {
  std::vector<LayoutStep> steps;
  std::string to_string() const override { return "layout=row_major" + steps_to_string(steps); }
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

// resize: output extents, optional per-dim scales of the coordinate mapping, the modes.
struct ResizeAttrs final : OpAttrs {
  std::vector<int64_t> sizes;
  std::vector<float> scales;  // empty: sizes[d] / input extent
  ResizeMode mode = ResizeMode::kNearest;
  CoordinateMode coordinate = CoordinateMode::kHalfPixel;
  NearestRounding nearest = NearestRounding::kRoundPreferFloor;
  std::string to_string() const override {
    static const char* const modes[] = {"nearest", "linear"};
    static const char* const coordinates[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                              "asymmetric", "tf_half_pixel_for_nearest"};
    static const char* const roundings[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                            "ceil"};
    auto name = [](const char* const* names, size_t count, auto v) {
      const auto k = static_cast<size_t>(v);
      return k < count ? std::string(names[k]) : "invalid(" + std::to_string(k) + ")";
    };
    std::string s = "sizes=" + int64s_to_string(sizes) + ",scales=[";
    for (size_t i = 0; i < scales.size(); ++i) s += (i ? "," : "") + exact_double(scales[i]);
    return s + "],mode=" + name(modes, 2, mode) + ",coordinate=" + name(coordinates, 5, coordinate) +
           ",nearest=" + name(roundings, 4, nearest);
  }
};

}  // namespace loom::ops
