// The fluent Tensor methods: each builds typed attributes and applies a registered operator.

#include "loom/graph/graph.hpp"
#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"

namespace loom {

Tensor Tensor::add(const Tensor& o) const { return apply("add", {o}); }
Tensor Tensor::sub(const Tensor& o) const { return apply("sub", {o}); }
Tensor Tensor::mul(const Tensor& o) const { return apply("mul", {o}); }
Tensor Tensor::div(const Tensor& o) const { return apply("div", {o}); }

Tensor Tensor::add(double c) const {
  auto a = std::make_shared<ops::ScalarAttrs>();
  a->value = c;
  return apply("add_scalar", {}, a);
}
Tensor Tensor::mul(double c) const {
  auto a = std::make_shared<ops::ScalarAttrs>();
  a->value = c;
  return apply("mul_scalar", {}, a);
}

Tensor Tensor::relu() const { return apply("relu"); }
Tensor Tensor::gelu(bool approximate) const {
  auto a = std::make_shared<ops::GeluAttrs>();
  a->approximate = approximate;
  return apply("gelu", {}, a);
}
Tensor Tensor::tanh() const { return apply("tanh"); }
Tensor Tensor::exp() const { return apply("exp"); }
Tensor Tensor::sigmoid() const { return apply("sigmoid"); }

namespace {
std::shared_ptr<ops::AlphaAttrs> alpha_attrs(double alpha) {
  auto a = std::make_shared<ops::AlphaAttrs>();
  a->alpha = alpha;
  return a;
}
}  // namespace

Tensor Tensor::leaky_relu(double alpha) const {
  return apply("leaky_relu", {}, alpha_attrs(alpha));
}
Tensor Tensor::elu(double alpha) const { return apply("elu", {}, alpha_attrs(alpha)); }
Tensor Tensor::erf() const { return apply("erf"); }
Tensor Tensor::hard_sigmoid(double alpha, double beta) const {
  auto a = std::make_shared<ops::HardSigmoidAttrs>();
  a->alpha = alpha;
  a->beta = beta;
  return apply("hard_sigmoid", {}, a);
}
Tensor Tensor::hard_swish() const { return apply("hard_swish"); }
Tensor Tensor::swish() const { return apply("swish"); }
Tensor Tensor::log() const { return apply("log"); }
Tensor Tensor::sqrt() const { return apply("sqrt"); }
Tensor Tensor::reciprocal() const { return apply("reciprocal"); }
Tensor Tensor::floor() const { return apply("floor"); }
Tensor Tensor::ceil() const { return apply("ceil"); }
Tensor Tensor::abs() const { return apply("abs"); }
Tensor Tensor::neg() const { return apply("neg"); }
Tensor Tensor::clip(double min, double max) const {
  auto a = std::make_shared<ops::ClipAttrs>();
  a->min = min;
  a->max = max;
  return apply("clip", {}, a);
}
Tensor Tensor::cast(DType dtype) const {
  auto a = std::make_shared<ops::CastAttrs>();
  a->dtype = dtype;
  return apply("cast", {}, a);
}

Tensor Tensor::layout_transform(const Layout& layout) const {
  auto a = std::make_shared<ops::LayoutAttrs>();
  a->steps = layout.steps();
  if (!valid()) return Tensor();
  if (!layout.ok()) return graph()->fail(absl::InvalidArgumentError(std::string(layout.status().message())));
  std::vector<ir::Expr> mine;
  for (const Dim& d : shape()) {
    if (!d.is_static())
      return graph()->fail(absl::InvalidArgumentError("layout_transform of " + name() + " " +
                                             shape_to_string(shape()) + ": needs static extents"));
    mine.push_back(ir::Expr(d.value()));
  }
  bool same = static_cast<int>(mine.size()) == layout.rank();
  for (size_t d = 0; same && d < mine.size(); ++d)
    same = ir::is_const_int(layout.shape()[d], *ir::as_const_int(mine[d]));
  if (!same)
    return graph()->fail(absl::InvalidArgumentError("layout_transform of " + name() + " " +
                                           shape_to_string(shape()) + " with a layout of " +
                                           layout.to_string()));
  return apply("layout_transform", {}, a);
}

Tensor Tensor::pow(const Tensor& o) const { return apply("pow", {o}); }
Tensor Tensor::minimum(const Tensor& o) const { return apply("minimum", {o}); }
Tensor Tensor::maximum(const Tensor& o) const { return apply("maximum", {o}); }
Tensor Tensor::equal(const Tensor& o) const { return apply("equal", {o}); }
Tensor Tensor::less(const Tensor& o) const { return apply("less", {o}); }
Tensor Tensor::less_equal(const Tensor& o) const { return apply("less_equal", {o}); }
Tensor Tensor::greater(const Tensor& o) const { return apply("greater", {o}); }
Tensor Tensor::greater_equal(const Tensor& o) const { return apply("greater_equal", {o}); }
Tensor Tensor::where(const Tensor& if_true, const Tensor& if_false) const {
  return apply("where", {if_true, if_false});
}
Tensor Tensor::matmul(const Tensor& o) const { return apply("matmul", {o}); }

namespace {
ops::Conv2dAttrs conv_attrs(Conv2dOptions::PerDim stride, Conv2dOptions::Padding padding,
                            Conv2dOptions::PerDim dilation, int groups) {
  ops::Conv2dAttrs a;
  a.stride_h = stride.h;
  a.stride_w = stride.w;
  a.pad_top = padding.top;
  a.pad_left = padding.left;
  a.pad_bottom = padding.bottom;
  a.pad_right = padding.right;
  a.dilation_h = dilation.h;
  a.dilation_w = dilation.w;
  a.groups = groups;
  return a;
}
}  // namespace

Tensor Tensor::conv2d(const Tensor& weight, Conv2dOptions o) const {
  return apply("conv2d", {weight},
               std::make_shared<ops::Conv2dAttrs>(conv_attrs(o.stride, o.padding, o.dilation, o.groups)));
}

Tensor Tensor::conv_transpose2d(const Tensor& weight, ConvTranspose2dOptions o) const {
  auto a = std::make_shared<ops::ConvTranspose2dAttrs>();
  a->conv = conv_attrs(o.stride, o.padding, o.dilation, o.groups);
  a->output_padding_h = o.output_padding.h;
  a->output_padding_w = o.output_padding.w;
  return apply("conv_transpose2d", {weight}, a);
}

namespace {
std::shared_ptr<ops::Pool2dAttrs> pool_attrs(const Pool2dOptions& o) {
  auto a = std::make_shared<ops::Pool2dAttrs>();
  a->kernel_h = o.kernel.h;
  a->kernel_w = o.kernel.w;
  a->stride_h = o.stride.h;
  a->stride_w = o.stride.w;
  a->pad_top = o.padding.top;
  a->pad_left = o.padding.left;
  a->pad_bottom = o.padding.bottom;
  a->pad_right = o.padding.right;
  return a;
}
}  // namespace

Tensor Tensor::max_pool2d(Pool2dOptions options) const {
  return apply("max_pool2d", {}, pool_attrs(options));
}
Tensor Tensor::avg_pool2d(Pool2dOptions options) const {
  return apply("avg_pool2d", {}, pool_attrs(options));
}

Tensor Tensor::resize(ResizeOptions options) const {
  auto a = std::make_shared<ops::ResizeAttrs>();
  a->sizes = std::move(options.sizes);
  a->scales = std::move(options.scales);
  a->mode = options.mode;
  a->coordinate = options.coordinate;
  a->nearest = options.nearest;
  return apply("resize", {}, a);
}

namespace {
std::shared_ptr<ops::ReduceAttrs> reduce_attrs(std::vector<int> axes, bool keepdims) {
  auto a = std::make_shared<ops::ReduceAttrs>();
  a->axes = std::move(axes);
  a->keepdims = keepdims;
  return a;
}
}  // namespace

Tensor Tensor::sum(std::vector<int> axes, bool keepdims) const {
  return apply("sum", {}, reduce_attrs(std::move(axes), keepdims));
}
Tensor Tensor::mean(std::vector<int> axes, bool keepdims) const {
  return apply("mean", {}, reduce_attrs(std::move(axes), keepdims));
}
Tensor Tensor::max(std::vector<int> axes, bool keepdims) const {
  return apply("max", {}, reduce_attrs(std::move(axes), keepdims));
}

Tensor Tensor::softmax(int axis) const {
  auto a = std::make_shared<ops::SoftmaxAttrs>();
  a->axis = axis;
  return apply("softmax", {}, a);
}
Tensor Tensor::log_softmax(int axis) const {
  auto a = std::make_shared<ops::SoftmaxAttrs>();
  a->axis = axis;
  return apply("log_softmax", {}, a);
}

Tensor Tensor::layer_norm(const Tensor& gamma, const Tensor& beta, int axis, double eps) const {
  auto a = std::make_shared<ops::LayerNormAttrs>();
  a->axis = axis;
  a->epsilon = eps;
  return apply("layer_norm", {gamma, beta}, a);
}

namespace {
// [C] -> [C, 1, ..., 1], broadcasting per channel against a rank-`rank` [N, C, ...] tensor.
Tensor per_channel(Graph g, const Tensor& t, int rank, const char* op) {
  if (!t.valid()) return Tensor();
  if (t.rank() != 1)
    return g.impl()->fail(absl::InvalidArgumentError(std::string(op) + ": per-channel parameter " + t.name() +
                                                     " must be 1-D, got " + shape_to_string(t.shape())));
  Shape s = {t.shape()[0]};
  for (int d = 2; d < rank; ++d) s.push_back(Dim(1));
  return t.reshape(s);
}
}  // namespace

Tensor Tensor::batch_norm(const Tensor& scale, const Tensor& bias, const Tensor& mean,
                          const Tensor& var, double eps) const {
  if (!valid()) return Tensor();
  Graph g = Graph::adopt(graph_);
  const int r = rank();
  if (r < 2)
    return graph_->fail(absl::InvalidArgumentError("batch_norm needs [N, C, ...], got " + shape_to_string(shape())));
  NDArray e(dtype(), {});
  e.set(0, eps);
  Tensor denom = (per_channel(g, var, r, "batch_norm") + g.constant(name() + "_epsilon", e)).sqrt();
  return (*this - per_channel(g, mean, r, "batch_norm")) / denom * per_channel(g, scale, r, "batch_norm") +
         per_channel(g, bias, r, "batch_norm");
}

Tensor Tensor::instance_norm(const Tensor& scale, const Tensor& bias, double eps) const {
  if (!valid()) return Tensor();
  std::vector<int64_t> spatial;
  for (int d = 2; d < rank(); ++d) {
    if (!shape()[d].is_static())
      return graph_->fail(absl::InvalidArgumentError("instance_norm of " + shape_to_string(shape()) +
                                                     ": the dims after the channels must be static"));
    spatial.push_back(shape()[d].value());
  }
  if (spatial.empty())
    return graph_->fail(absl::InvalidArgumentError("instance_norm needs [N, C, ...] with rank >= 3, got " +
                                                   shape_to_string(shape())));
  NDArray ones(dtype(), spatial), zeros(dtype(), spatial);
  for (int64_t k = 0; k < ones.numel(); ++k) {
    ones.set(k, 1);
    zeros.set(k, 0);
  }
  Graph g = Graph::adopt(graph_);
  Tensor y = layer_norm(g.constant(name() + "_unit_gamma", ones), g.constant(name() + "_zero_beta", zeros), 2, eps);
  return y * per_channel(g, scale, rank(), "instance_norm") +
         per_channel(g, bias, rank(), "instance_norm");
}

Tensor Tensor::conv1d(const Tensor& weight, Conv2dOptions options) const {
  if (!valid() || !weight.valid()) return Tensor();
  if (rank() != 3 || weight.rank() != 3)
    return graph_->fail(absl::InvalidArgumentError("conv1d needs [N, C, L] input and [O, C / groups, K] weight, got " +
                                                   shape_to_string(shape()) + " and " + shape_to_string(weight.shape())));
  options.stride.h = options.dilation.h = 1;
  options.padding.top = options.padding.bottom = 0;
  // Copies: adding nodes may move the graph's node storage under a reference.
  const Shape s = shape(), w = weight.shape();
  Tensor y = reshape({s[0], s[1], 1, s[2]}).conv2d(weight.reshape({w[0], w[1], 1, w[2]}), options);
  if (!y.valid()) return y;
  const Shape ys = y.shape();
  return y.reshape({ys[0], ys[1], ys[3]});
}

Tensor Tensor::reshape(Shape shape) const {
  auto a = std::make_shared<ops::ReshapeAttrs>();
  a->shape = std::move(shape);
  return apply("reshape", {}, a);
}

Tensor Tensor::transpose(std::vector<int> perm) const {
  auto a = std::make_shared<ops::TransposeAttrs>();
  a->perm = std::move(perm);
  return apply("transpose", {}, a);
}

Tensor operator+(const Tensor& a, const Tensor& b) { return a.add(b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return a.sub(b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return a.mul(b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return a.div(b); }
Tensor where(const Tensor& cond, const Tensor& if_true, const Tensor& if_false) {
  return cond.where(if_true, if_false);
}

// ---- Data movement and index reductions ----------------------------------------------------

std::vector<Tensor> Tensor::split(int axis, std::vector<int64_t> sizes) const {
  std::vector<Tensor> parts(sizes.size());
  if (!valid() || !graph_->status.ok()) return parts;
  auto fail = [&](const std::string& what) {
    graph_->fail(absl::InvalidArgumentError(
        str_cat("split(", name(), ": ", dtype().to_string(), shape_to_string(shape()), "): ", what)));
    return parts;
  };
  absl::StatusOr<int> d = ops::normalize_axis(axis, rank());
  if (!d.ok()) return fail(std::string(d.status().message()));
  const Dim& extent = shape()[*d];
  if (extent.is_symbolic()) return fail(str_cat("the split dim ", extent.name(), " is not static"));
  if (sizes.empty()) return fail("no sizes given");
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0) return fail("sizes " + ops::int64s_to_string(sizes) + " hold a negative size");
    total += s;
  }
  if (total != extent.value())
    return fail(str_cat("sizes ", ops::int64s_to_string(sizes), " sum to ", total, ", not to dim ",
                        *d, " of extent ", extent.value()));
  int64_t start = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    parts[k] = slice({start}, {start + sizes[k]}, {*d});
    start += sizes[k];
  }
  return parts;
}

Tensor Tensor::slice(std::vector<int64_t> starts, std::vector<int64_t> ends, std::vector<int> axes,
                     std::vector<int64_t> steps) const {
  auto a = std::make_shared<ops::SliceAttrs>();
  a->starts = std::move(starts);
  a->ends = std::move(ends);
  a->axes = std::move(axes);
  a->steps = std::move(steps);
  return apply("slice", {}, a);
}

Tensor Tensor::gather(const Tensor& indices, int axis) const {
  auto a = std::make_shared<ops::GatherAttrs>();
  a->axis = axis;
  return apply("gather", {indices}, a);
}

Tensor Tensor::pad(std::vector<PadWidth> pads, PadMode mode, double value) const {
  auto a = std::make_shared<ops::PadAttrs>();
  a->pads = std::move(pads);
  a->mode = mode;
  a->value = value;
  return apply("pad", {}, a);
}

Tensor Tensor::flatten(int axis) const {
  auto a = std::make_shared<ops::FlattenAttrs>();
  a->axis = axis;
  return apply("flatten", {}, a);
}

Tensor Tensor::squeeze(std::vector<int> axes) const {
  auto a = std::make_shared<ops::AxesAttrs>();
  // "All dims of extent 1" is resolved now, so binding a symbolic dim to 1 later keeps the rank.
  if (axes.empty())
    for (int d = 0; d < rank(); ++d)
      if (shape()[d].is_static() && shape()[d].value() == 1) axes.push_back(d);
  a->axes = std::move(axes);
  if (a->axes.empty()) return *this;
  return apply("squeeze", {}, a);
}

Tensor Tensor::unsqueeze(std::vector<int> axes) const {
  auto a = std::make_shared<ops::AxesAttrs>();
  a->axes = std::move(axes);
  return apply("unsqueeze", {}, a);
}

Tensor Tensor::expand(Shape shape) const {
  auto a = std::make_shared<ops::ExpandAttrs>();
  a->shape = std::move(shape);
  return apply("expand", {}, a);
}

Tensor Tensor::min(std::vector<int> axes, bool keepdims) const {
  return apply("min", {}, reduce_attrs(std::move(axes), keepdims));
}
Tensor Tensor::prod(std::vector<int> axes, bool keepdims) const {
  return apply("prod", {}, reduce_attrs(std::move(axes), keepdims));
}

namespace {
std::shared_ptr<ops::ArgReduceAttrs> arg_reduce_attrs(int axis, bool keepdims) {
  auto a = std::make_shared<ops::ArgReduceAttrs>();
  a->axis = axis;
  a->keepdims = keepdims;
  return a;
}
}  // namespace

Tensor Tensor::argmax(int axis, bool keepdims) const {
  return apply("argmax", {}, arg_reduce_attrs(axis, keepdims));
}
Tensor Tensor::argmin(int axis, bool keepdims) const {
  return apply("argmin", {}, arg_reduce_attrs(axis, keepdims));
}

Tensor Graph::concat(const std::vector<Tensor>& tensors, int axis) {
  auto a = std::make_shared<ops::ConcatAttrs>();
  a->axis = axis;
  return apply("concat", tensors, a);
}

Tensor concat(const std::vector<Tensor>& tensors, int axis) {
  if (tensors.empty() || !tensors[0].valid()) return Tensor();
  auto a = std::make_shared<ops::ConcatAttrs>();
  a->axis = axis;
  return tensors[0].apply("concat", {tensors.begin() + 1, tensors.end()}, a);
}

}  // namespace loom
