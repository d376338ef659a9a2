// The fluent graph API: an engine builds its model as a Graph of Tensor handles.
// Every method checks its inputs; the first error is kept and returned by Compiler::compile().
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "loom/core/ndarray.hpp"
#include "loom/graph/op.hpp"

namespace loom {

struct GraphImpl;

// Options of Tensor::conv2d. An int sets both spatial dims (every side, for padding); {h, w}
// sets each dim; padding also takes {top, left, bottom, right}, so it may be asymmetric.
struct Conv2dOptions {
  struct PerDim {
    int h = 1, w = 1;
    PerDim(int v) : h(v), w(v) {}  // NOLINT: implicit so options read {.stride = 2}
    PerDim(int h_, int w_) : h(h_), w(w_) {}
  };
  struct Padding {
    int top = 0, left = 0, bottom = 0, right = 0;
    Padding(int v) : top(v), left(v), bottom(v), right(v) {}  // NOLINT
    Padding(int h, int w) : top(h), left(w), bottom(h), right(w) {}
    Padding(int t, int l, int b, int r) : top(t), left(l), bottom(b), right(r) {}
  };
  PerDim stride = 1;
  Padding padding = 0;
  PerDim dilation = 1;
  int groups = 1;
};

// Options of Tensor::conv_transpose2d: as Conv2dOptions, plus extra output rows/columns at the
// end (output_padding, less than the stride or the dilation).
struct ConvTranspose2dOptions {
  Conv2dOptions::PerDim stride = 1;
  Conv2dOptions::Padding padding = 0;
  Conv2dOptions::PerDim dilation = 1;
  Conv2dOptions::PerDim output_padding = 0;
  int groups = 1;
};

// Options of Tensor::max_pool2d and avg_pool2d: the window, strides and padding (as in
// Conv2dOptions). Padded positions never win a max and are not counted by an average.
struct Pool2dOptions {
  Conv2dOptions::PerDim kernel = 1;
  Conv2dOptions::PerDim stride = 1;
  Conv2dOptions::Padding padding = 0;
};

// Tensor::resize (ONNX Resize). mode: the nearest input element, or n-linear interpolation
// along every resized dim. coordinate: how output index o of a dim maps to an input position x,
// with s the dim's scale (output / input extent unless given) and n its input extent:
// kHalfPixel x = (o + 0.5) / s - 0.5; kPytorchHalfPixel the same, but 0 for an output extent
// of 1; kAlignCorners x = o * (n - 1) / (s * n - 1) (0 when s * n = 1); kAsymmetric x = o / s;
// kTfHalfPixelForNearest x = (o + 0.5) / s. nearest: how kNearest rounds x. Positions outside
// the input read its border.
enum class ResizeMode { kNearest, kLinear };
enum class CoordinateMode {
  kHalfPixel,
  kPytorchHalfPixel,
  kAlignCorners,
  kAsymmetric,
  kTfHalfPixelForNearest
};
enum class NearestRounding { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil };
struct ResizeOptions {
  std::vector<int64_t> sizes;  // the output extent of every dim (positive)
  ResizeMode mode = ResizeMode::kNearest;
  CoordinateMode coordinate = CoordinateMode::kHalfPixel;
  NearestRounding nearest = NearestRounding::kRoundPreferFloor;
  // Optional, one per dim: the scale s of the mapping, as ONNX's float scales (whose sizes are
  // floor(n * s)); empty means sizes[d] / n. The mapping is computed exactly from these values.
  std::vector<float> scales;
};

// Tensor::pad: how padded positions are filled (ONNX Pad modes): kConstant with a value,
// kReflect mirrors the input without repeating the border (pads must be below the extent),
// kEdge repeats the border element.
enum class PadMode { kConstant, kReflect, kEdge };
// Padding of one dim: elements added before the first and after the last (non-negative).
struct PadWidth {
  int64_t begin = 0, end = 0;
};

// A value in a graph. Cheap to copy. A Tensor produced from bad input is invalid; ops on it
// produce invalid tensors without adding more errors.
class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<GraphImpl> g, int id) : graph_(std::move(g)), id_(id) {}

  bool valid() const { return graph_ != nullptr && id_ >= 0; }
  int id() const { return id_; }
  const Shape& shape() const;
  DType dtype() const;
  int rank() const { return static_cast<int>(shape().size()); }
  const std::string& name() const;

  // Elementwise arithmetic with numpy-style broadcasting.
  Tensor add(const Tensor& o) const;
  Tensor sub(const Tensor& o) const;
  Tensor mul(const Tensor& o) const;
  Tensor div(const Tensor& o) const;
  // Elementwise with a scalar constant of this tensor's dtype.
  Tensor add(double c) const;
  Tensor mul(double c) const;

  Tensor relu() const;
  // Exact gelu, x * (1 + erf(x / sqrt 2)) / 2; approximate=true gives the tanh form.
  Tensor gelu(bool approximate = false) const;
  Tensor tanh() const;
  Tensor exp() const;
  Tensor sigmoid() const;
  // x below zero becomes alpha * x.
  Tensor leaky_relu(double alpha = 0.01) const;
  // x below zero becomes alpha * (e^x - 1).
  Tensor elu(double alpha = 1.0) const;
  Tensor erf() const;
  // max(0, min(1, alpha * x + beta)), as ONNX HardSigmoid.
  Tensor hard_sigmoid(double alpha = 0.2, double beta = 0.5) const;
  // x * hard_sigmoid(x) with alpha = 1/6, beta = 0.5.
  Tensor hard_swish() const;
  // x * sigmoid(x).
  Tensor swish() const;
  // Natural log and square root (NaN below zero), 1 / x, rounding down and up.
  Tensor log() const;
  Tensor sqrt() const;
  Tensor reciprocal() const;
  Tensor floor() const;
  Tensor ceil() const;
  // Also for integer tensors, where the lowest value (-128 for i8) maps to itself.
  Tensor abs() const;
  Tensor neg() const;
  // Limits to [min, max] (floats and integers; NaN stays NaN). With min > max every element
  // becomes max, as ONNX. Integer tensors take whole-number bounds.
  Tensor clip(double min, double max) const;
  // Converts to another element type: float to int truncates toward zero (values out of the
  // target's range are undefined), to bool is x != 0, bool to a number is 0 or 1.
  Tensor cast(DType dtype) const;
  // The same values stored in `layout`, a Layout built on this tensor's (static) shape:
  // x.layout_transform(Layout::row_major(dims).split(1, 16).reorder({0, 1, 3, 4, 2})) is NCHW16c.
  // Operators read and write their tensors through their layouts; graph outputs are row-major.
  Tensor layout_transform(const Layout& layout) const;

  // Elementwise with numpy-style broadcasting: x^y (floats); the smaller and the larger element
  // (NaN if either is NaN); comparisons giving bool tensors (false where either is NaN).
  Tensor pow(const Tensor& o) const;
  Tensor minimum(const Tensor& o) const;
  Tensor maximum(const Tensor& o) const;
  Tensor equal(const Tensor& o) const;
  Tensor less(const Tensor& o) const;
  Tensor less_equal(const Tensor& o) const;
  Tensor greater(const Tensor& o) const;
  Tensor greater_equal(const Tensor& o) const;
  // This bool tensor picks if_true where it holds, if_false elsewhere; all three broadcast.
  Tensor where(const Tensor& if_true, const Tensor& if_false) const;

  // Batched matrix product [..., M, K] x [..., K, N] -> [..., M, N]; batch dims broadcast.
  Tensor matmul(const Tensor& o) const;

  // 2-D convolution: this is NCHW input [N, C, H, W], weight is OIHW [O, C / groups, KH, KW];
  // the output is [N, O, OH, OW]. No bias (add one with add()).
  Tensor conv2d(const Tensor& weight, Conv2dOptions options = {}) const;
  // 1-D convolution of [N, C, L] with [O, C / groups, K]: conv2d over [N, C, 1, L]; the options'
  // width parts apply (stride.w, dilation.w, padding.left / right).
  Tensor conv1d(const Tensor& weight, Conv2dOptions options = {}) const;
  // Transposed 2-D convolution (the gradient of conv2d with respect to its input): input
  // [N, C, H, W], weight [C, O / groups, KH, KW], output [N, O, OH, OW] with
  // OH = stride_h * (H - 1) + output_padding_h + dilation_h * (KH - 1) + 1 - pad_top - pad_bottom.
  Tensor conv_transpose2d(const Tensor& weight, ConvTranspose2dOptions options = {}) const;

  // Pooling over the spatial dims of NCHW input [N, C, H, W] -> [N, C, OH, OW], with
  // OH = (H + pad_top + pad_bottom - kernel_h) / stride_h + 1 (likewise OW). Global average
  // pooling is mean({2, 3}, true).
  Tensor max_pool2d(Pool2dOptions options) const;
  Tensor avg_pool2d(Pool2dOptions options) const;

  // Resizes every dim to options.sizes (ONNX Resize, nearest or linear; see ResizeOptions), e.g.
  // x.resize({.sizes = {1, 3, 64, 64}, .mode = ResizeMode::kLinear}). Floating-point input, all
  // dims static; the result has the input's dtype (computed in f32).
  Tensor resize(ResizeOptions options) const;

  // Reductions over axes (negative axes count from the end; empty means all).
  Tensor sum(std::vector<int> axes = {}, bool keepdims = false) const;
  Tensor mean(std::vector<int> axes = {}, bool keepdims = false) const;
  Tensor max(std::vector<int> axes = {}, bool keepdims = false) const;

  Tensor softmax(int axis = -1) const;
  // log(softmax(x)), computed as (x - max) - log(sum(exp(x - max))) so it stays finite.
  Tensor log_softmax(int axis = -1) const;
  // Layer normalization over the dims from axis to the last: (x - mean) / sqrt(var + eps) * gamma
  // + beta, with gamma and beta shaped like those dims (floating-point x).
  Tensor layer_norm(const Tensor& gamma, const Tensor& beta, int axis = -1,
                    double eps = 1e-5) const;
  // Inference batch norm of [N, C, ...]: (x - mean) / sqrt(var + eps) * scale + bias, with
  // per-channel [C] tensors. Built from elementwise ops (no op of its own); after a conv2d with
  // constant statistics the graph passes fold it into the convolution's weights.
  Tensor batch_norm(const Tensor& scale, const Tensor& bias, const Tensor& mean, const Tensor& var,
                    double eps = 1e-5) const;
  // Instance norm of [N, C, ...]: each (image, channel) normalized over the remaining dims (a
  // layer_norm from axis 2), then * scale + bias per channel ([C] tensors; static shapes).
  Tensor instance_norm(const Tensor& scale, const Tensor& bias, double eps = 1e-5) const;
  // One dim may be -1 (inferred); symbolic dims carry over by name.
  Tensor reshape(Shape shape) const;
  // perm[i] is the input dim that becomes output dim i; empty reverses the dims.
  Tensor transpose(std::vector<int> perm = {}) const;

  // ---- Data movement and index reductions, with ONNX semantics. Dims whose value a rule needs
  // must be static: sliced, split, padded and concat-axis dims, and flattened ones unless one
  // symbolic dim stands alone. Other dims, symbolic ones included, pass through; gather and the
  // reductions also work along symbolic dims.
  // Row-major parts of sizes along axis (the sizes sum to that dim): one slice node each. Bad
  // input records the error and gives sizes.size() invalid tensors.
  std::vector<Tensor> split(int axis, std::vector<int64_t> sizes) const;
  // ONNX Slice: per listed axis (default 0, 1, ...) elements start, start + step, ... before
  // end (step default 1, may be negative). Negative starts/ends count from the end, and
  // out-of-range ones are clamped; INT64_MAX as end means "to the end" (INT64_MIN with a
  // negative step).
  Tensor slice(std::vector<int64_t> starts, std::vector<int64_t> ends, std::vector<int> axes = {},
               std::vector<int64_t> steps = {}) const;
  // ONNX Gather: indices (i32 or i64, any shape) pick entries along axis; the output shape is
  // shape[:axis] + indices.shape + shape[axis+1:]. Negative indices count from the end; indices
  // still outside [0, extent) are clamped to it (never an out-of-bounds read, no error).
  Tensor gather(const Tensor& indices, int axis = 0) const;
  // One PadWidth per dim, e.g. x.pad({{0, 0}, {1, 2}}, PadMode::kReflect); value fills kConstant.
  Tensor pad(std::vector<PadWidth> pads, PadMode mode = PadMode::kConstant, double value = 0) const;
  // 2-D [prod(shape[:axis]), prod(shape[axis:])]; axis in [-rank, rank].
  Tensor flatten(int axis = 1) const;
  // Removes the listed dims (each of static extent 1); empty removes every static dim of extent
  // 1 that the shape has now (symbolic dims are kept even if bound to 1 later; with none, the
  // tensor itself is returned).
  Tensor squeeze(std::vector<int> axes = {}) const;
  // Inserts dims of extent 1 at the listed positions of the output (negative: from its end).
  Tensor unsqueeze(std::vector<int> axes) const;
  // Numpy broadcast of this tensor against shape (ONNX Expand: a 1 in shape keeps the dim).
  Tensor expand(Shape shape) const;
  // Reductions like sum(): min and product (accumulated in f32 / i64).
  Tensor min(std::vector<int> axes = {}, bool keepdims = false) const;
  Tensor prod(std::vector<int> axes = {}, bool keepdims = false) const;
  // Index (i64) of the largest / smallest element along axis, the first one on ties; ONNX
  // defaults (axis 0, keepdims). A row holding NaN gives an unspecified index in range.
  Tensor argmax(int axis = 0, bool keepdims = true) const;
  Tensor argmin(int axis = 0, bool keepdims = true) const;

  // Applies any registered operator (built-in or user-defined) to this and other inputs.
  Tensor apply(const std::string& op, std::vector<Tensor> others = {},
               std::shared_ptr<const OpAttrs> attrs = nullptr) const;

  GraphImpl* graph() const { return graph_.get(); }

 private:
  std::shared_ptr<GraphImpl> graph_;
  int id_ = -1;
};

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
// cond.where(if_true, if_false).
Tensor where(const Tensor& cond, const Tensor& if_true, const Tensor& if_false);

// Graph::concat on the graph of tensors[0]; an empty list gives an invalid tensor.
Tensor concat(const std::vector<Tensor>& tensors, int axis);

struct Node {
  enum class Kind { kInput, kConstant, kOp };
  Kind kind = Kind::kOp;
  std::string name;
  std::string op;  // for kOp
  std::vector<int> inputs;
  std::shared_ptr<const OpAttrs> attrs;
  TensorType type;
  NDArray value;  // for kConstant
};

class Graph {
 public:
  Graph();
  // A second handle on the graph that owns impl (what Tensor methods use to add nodes).
  static Graph adopt(std::shared_ptr<GraphImpl> impl);

  // A runtime input; dims may be symbolic (Dim("batch")).
  Tensor input(const std::string& name, Shape shape, DType dtype = DType::f32());
  // A constant (weights); the array is shared, not copied.
  Tensor constant(const std::string& name, NDArray value);
  // Marks t as a graph output (in call order).
  void output(const Tensor& t);

  // Applies a registered operator to inputs (all from this graph).
  Tensor apply(const std::string& op, const std::vector<Tensor>& inputs,
               std::shared_ptr<const OpAttrs> attrs = nullptr);

  // Joins tensors (same dtype and rank, equal dims but axis, a static axis dim) along axis.
  Tensor concat(const std::vector<Tensor>& tensors, int axis);

  // OK, or the first error any builder call recorded.
  absl::Status status() const;

  // A copy with symbolic dims bound to values: inputs get those extents and every operator's
  // shape rule runs again, so values that break a rule (or disagree with the symbolic types)
  // give an error naming the node and the bindings. Unbound dims stay symbolic.
  absl::StatusOr<Graph> bind_dims(const DimBindings& dims) const;
  // A deep copy: nodes added to either graph later do not show in the other (constants' data is
  // shared).
  Graph clone() const;
  // Floating-point operations (2 per multiply-add) of the graph's matmuls and (transposed)
  // convolutions, the bulk of any model's work; nodes with symbolic dims count 0 (bind_dims
  // first).
  double flops() const;

  const std::vector<Node>& nodes() const;
  const std::vector<int>& inputs() const;
  const std::vector<int>& outputs() const;
  std::string to_string() const;

  const std::shared_ptr<GraphImpl>& impl() const { return impl_; }

 private:
  std::shared_ptr<GraphImpl> impl_;
};

struct GraphImpl {
  std::vector<Node> nodes;
  std::vector<int> inputs, outputs;
  absl::Status status;
  // Records an error (the first one wins) and returns an invalid tensor.
  Tensor fail(absl::Status s);
};

}  // namespace loom
