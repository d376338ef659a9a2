// conv2d: NCHW input [N, C, H, W], OIHW weights [O, C / groups, KH, KW] -> [N, O, OH, OW], with
// strides, asymmetric padding, dilations and groups. Its CPU templates live in conv_cpu.cpp,
// its CUDA template in conv_cuda.cpp.

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/conv_cpu.hpp"
#include "ops/conv_cuda.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

// Output extent of one spatial dim: (in + pads - dilation * (kernel - 1) - 1) / stride + 1.
int64_t conv_out_extent(int64_t in, int pad_lo, int pad_hi, int64_t kernel, int dilation,
                        int stride) {
  int64_t span = in + pad_lo + pad_hi - static_cast<int64_t>(dilation) * (kernel - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

absl::StatusOr<TensorType> infer_conv2d(const std::vector<TensorType>& in, const OpAttrs& a) {
  const auto& attrs = attrs_as<Conv2dAttrs>(a);
  const TensorType& x = in[0];
  const TensorType& w = in[1];
  if (x.shape.size() != 4)
    return absl::InvalidArgumentError(str_cat("conv2d input must have rank 4 (NCHW), got rank ",
                                              x.shape.size(), " ", shape_to_string(x.shape)));
  if (w.shape.size() != 4)
    return absl::InvalidArgumentError(str_cat("conv2d weight must have rank 4 (OIHW), got rank ",
                                              w.shape.size(), " ", shape_to_string(w.shape)));
  if (x.dtype != w.dtype)
    return absl::InvalidArgumentError("conv2d input and weight dtypes differ: " +
                                      x.dtype.to_string() + " vs " + w.dtype.to_string());
  if (!x.dtype.is_float())
    return absl::InvalidArgumentError("conv2d needs floating-point tensors, got " +
                                      x.dtype.to_string());
  for (size_t d = 1; d < 4; ++d)
    if (!x.shape[d].is_static())
      return absl::InvalidArgumentError("conv2d input " + shape_to_string(x.shape) +
                                        ": only the batch dim may be symbolic");
  if (!is_static(w.shape))
    return absl::InvalidArgumentError("conv2d weight " + shape_to_string(w.shape) +
                                      " must have a static shape");
  if (attrs.stride_h <= 0 || attrs.stride_w <= 0)
    return absl::InvalidArgumentError(str_cat("conv2d stride must be positive, got (",
                                              attrs.stride_h, ", ", attrs.stride_w, ")"));
  if (attrs.dilation_h <= 0 || attrs.dilation_w <= 0)
    return absl::InvalidArgumentError(str_cat("conv2d dilation must be positive, got (",
                                              attrs.dilation_h, ", ", attrs.dilation_w, ")"));
  if (attrs.pad_top < 0 || attrs.pad_left < 0 || attrs.pad_bottom < 0 || attrs.pad_right < 0)
    return absl::InvalidArgumentError(str_cat("conv2d padding must be non-negative, got (top ",
                                              attrs.pad_top, ", left ", attrs.pad_left, ", bottom ",
                                              attrs.pad_bottom, ", right ", attrs.pad_right, ")"));
  if (attrs.groups <= 0)
    return absl::InvalidArgumentError(
        str_cat("conv2d groups must be positive, got ", attrs.groups));
  const int64_t c = x.shape[1].value(), h = x.shape[2].value(), wd = x.shape[3].value();
  const int64_t o = w.shape[0].value(), cg = w.shape[1].value();
  const int64_t kh = w.shape[2].value(), kw = w.shape[3].value();
  if (c <= 0 || kh <= 0 || kw <= 0 || cg <= 0)
    return absl::InvalidArgumentError("conv2d has an empty kernel or no input channels: input " +
                                      shape_to_string(x.shape) + ", weight " +
                                      shape_to_string(w.shape));
  if (c % attrs.groups != 0)
    return absl::InvalidArgumentError(
        str_cat("conv2d input channels ", c, " are not divisible by groups ", attrs.groups));
  if (o % attrs.groups != 0)
    return absl::InvalidArgumentError(
        str_cat("conv2d output channels ", o, " are not divisible by groups ", attrs.groups));
  if (cg != c / attrs.groups)
    return absl::InvalidArgumentError(
        str_cat("conv2d channel mismatch: weight ", shape_to_string(w.shape), " has ", cg,
                " input channels per group, but input ", shape_to_string(x.shape), " with groups ",
                attrs.groups, " has ", c / attrs.groups));
  const int64_t oh =
      conv_out_extent(h, attrs.pad_top, attrs.pad_bottom, kh, attrs.dilation_h, attrs.stride_h);
  const int64_t ow =
      conv_out_extent(wd, attrs.pad_left, attrs.pad_right, kw, attrs.dilation_w, attrs.stride_w);
  const Dim& n = x.shape[0];
  if (oh <= 0 || ow <= 0 || o <= 0 || (n.is_static() && n.value() <= 0))
    return absl::InvalidArgumentError(
        str_cat("conv2d output would be empty: input ", shape_to_string(x.shape), ", weight ",
                shape_to_string(w.shape), ", ", attrs.to_string(), " give an output of ",
                n.to_string(), " x ", o, " x ", oh, " x ", ow));
  return TensorType{{n, Dim(o), Dim(oh), Dim(ow)}, x.dtype};
}

te::Tensor compute_conv2d(const std::vector<te::Tensor>& in, const OpAttrs& a,
                          const std::vector<ir::Expr>& shape, const std::string& name) {
  const auto& attrs = attrs_as<Conv2dAttrs>(a);
  const te::Tensor& x = in[0];
  const te::Tensor& w = in[1];
  const int64_t h = *ir::as_const_int(x.shape()[2]), wd = *ir::as_const_int(x.shape()[3]);
  const int64_t og = *ir::as_const_int(w.shape()[0]) / attrs.groups;
  const ir::Expr cg = w.shape()[1];
  ir::IterVar rc = te::reduce_axis(cg, name + "_c");
  ir::IterVar rh = te::reduce_axis(w.shape()[2], name + "_kh");
  ir::IterVar rw = te::reduce_axis(w.shape()[3], name + "_kw");
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    const ir::Var &n = i[0], &o = i[1], &oh = i[2], &ow = i[3];
    ir::Expr ih =
        oh * int64_t{attrs.stride_h} + rh.var * int64_t{attrs.dilation_h} - int64_t{attrs.pad_top};
    ir::Expr iw =
        ow * int64_t{attrs.stride_w} + rw.var * int64_t{attrs.dilation_w} - int64_t{attrs.pad_left};
    ir::Expr ic = o / og * cg + rc.var;
    // Taps in the padding read zero. The index is clamped into the image as well, so that code
    // which evaluates both sides of the select never reads outside the input.
    ir::Expr inside = ih >= int64_t{0} && ih < h && iw >= int64_t{0} && iw < wd;
    ir::Expr ih_c = ir::min(ir::max(ih, ir::Expr(int64_t{0})), ir::Expr(h - 1));
    ir::Expr iw_c = ir::min(ir::max(iw, ir::Expr(int64_t{0})), ir::Expr(wd - 1));
    ir::Expr xv = ir::cast(DType::f32(), x({n, ic, ih_c, iw_c}));
    ir::Expr tap = ir::select(inside, xv, ir::Expr(0.0f));
    ir::Expr wv = ir::cast(DType::f32(), w({o, rc.var, rh.var, rw.var}));
    return ir::cast(x.dtype(), te::sum(tap * wv, {rc, rh, rw}, DType::f32()));
  });
}

}  // namespace

void register_conv_ops(OpRegistry& r) {
  OpDef def;
  def.name = "conv2d";
  def.num_inputs = 2;
  def.attrs_type = &typeid(Conv2dAttrs);
  def.infer = infer_conv2d;
  def.compute = compute_conv2d;
  def.templates = conv2d_cpu_templates();
  def.templates.push_back(conv2d_wgmma_cuda_template());
  def.templates.push_back(conv2d_tensor_core_cuda_template());
  def.templates.push_back(conv2d_cuda_template());
  LOOM_CHECK(r.add(std::move(def)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
