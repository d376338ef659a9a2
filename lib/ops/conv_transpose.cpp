// conv_transpose2d: NCHW input [N, C, H, W], weights [C, O / groups, KH, KW] -> [N, O, OH, OW].
// Output pixel (oh, ow) gathers input pixel (ih, iw) through tap (kh, kw) when
// oh + pad_top = ih * stride_h + kh * dilation_h (likewise for w). Default schedule only.

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

absl::StatusOr<TensorType> infer(const std::vector<TensorType>& in, const OpAttrs& attrs) {
  const auto& a = attrs_as<ConvTranspose2dAttrs>(attrs);
  const Conv2dAttrs& c = a.conv;
  const TensorType &x = in[0], &w = in[1];
  if (x.shape.size() != 4 || w.shape.size() != 4)
    return absl::InvalidArgumentError(str_cat("conv_transpose2d needs rank-4 input and weight, got ",
                                              shape_to_string(x.shape), " and ", shape_to_string(w.shape)));
  if (x.dtype != w.dtype || !x.dtype.is_float())
    return absl::InvalidArgumentError("conv_transpose2d needs floating-point input and weight of one dtype, got " +
                                      x.dtype.to_string() + " and " + w.dtype.to_string());
  if (!x.shape[1].is_static() || !x.shape[2].is_static() || !x.shape[3].is_static() || !is_static(w.shape))
    return absl::InvalidArgumentError("conv_transpose2d: only the batch dim may be symbolic");
  if (c.stride_h <= 0 || c.stride_w <= 0 || c.dilation_h <= 0 || c.dilation_w <= 0 || c.groups <= 0)
    return absl::InvalidArgumentError("conv_transpose2d strides, dilations and groups must be positive, got " + a.to_string());
  if (c.pad_top < 0 || c.pad_left < 0 || c.pad_bottom < 0 || c.pad_right < 0 || a.output_padding_h < 0 ||
      a.output_padding_w < 0)
    return absl::InvalidArgumentError("conv_transpose2d padding must be non-negative, got " + a.to_string());
  if (a.output_padding_h >= std::max(c.stride_h, c.dilation_h) ||
      a.output_padding_w >= std::max(c.stride_w, c.dilation_w))
    return absl::InvalidArgumentError("conv_transpose2d output_padding must be smaller than the stride or the dilation, got " + a.to_string());
  const int64_t ch = x.shape[1].value(), wc = w.shape[0].value(), og = w.shape[1].value();
  if (wc != ch || ch % c.groups != 0)
    return absl::InvalidArgumentError(str_cat("conv_transpose2d weight ", shape_to_string(w.shape),
                                              " does not match input channels ", ch, " with groups ", c.groups));
  auto extent = [](int64_t in, int s, int op, int64_t k, int d, int lo, int hi) {
    return s * (in - 1) + op + d * (k - 1) + 1 - lo - hi;
  };
  const int64_t oh = extent(x.shape[2].value(), c.stride_h, a.output_padding_h, w.shape[2].value(),
                            c.dilation_h, c.pad_top, c.pad_bottom);
  const int64_t ow = extent(x.shape[3].value(), c.stride_w, a.output_padding_w, w.shape[3].value(),
                            c.dilation_w, c.pad_left, c.pad_right);
  if (oh <= 0 || ow <= 0 || og <= 0)
    return absl::InvalidArgumentError(str_cat("conv_transpose2d output would be empty (", oh, " x ", ow, ")"));
  return TensorType{{x.shape[0], Dim(og * c.groups), Dim(oh), Dim(ow)}, x.dtype};
}

te::Tensor compute(const std::vector<te::Tensor>& in, const OpAttrs& attrs,
                   const std::vector<ir::Expr>& shape, const std::string& name) {
  const auto& a = attrs_as<ConvTranspose2dAttrs>(attrs);
  const Conv2dAttrs& c = a.conv;
  const te::Tensor &x = in[0], &w = in[1];
  const int64_t h = *ir::as_const_int(x.shape()[2]), wd = *ir::as_const_int(x.shape()[3]);
  const int64_t cg = *ir::as_const_int(x.shape()[1]) / c.groups;
  const int64_t og = *ir::as_const_int(w.shape()[1]);
  ir::IterVar rc = te::reduce_axis(ir::Expr(cg), name + "_c");
  ir::IterVar rh = te::reduce_axis(w.shape()[2], name + "_kh");
  ir::IterVar rw = te::reduce_axis(w.shape()[3], name + "_kw");
  const ir::Expr zero(int64_t{0});
  // The input index that reaches output o through tap k, and whether one does.
  auto source = [&](ir::Expr o, ir::Expr k, int pad, int dilation, int stride, int64_t n,
                    ir::Expr* index) {
    ir::Expr t = o + int64_t{pad} - k * int64_t{dilation};
    ir::Expr tc = ir::max(t, zero);  // clamped, so both sides of the select stay in bounds
    *index = ir::min(tc / int64_t{stride}, ir::Expr(n - 1));
    return t >= zero && tc % int64_t{stride} == zero && tc / int64_t{stride} < n;
  };
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    ir::Expr ih, iw;
    ir::Expr ok_h = source(i[2], rh.var, c.pad_top, c.dilation_h, c.stride_h, h, &ih);
    ir::Expr ok_w = source(i[3], rw.var, c.pad_left, c.dilation_w, c.stride_w, wd, &iw);
    ir::Expr group = i[1] / og;
    ir::Expr ic = group * cg + rc.var;
    ir::Expr xv = ir::cast(DType::f32(), x({i[0], ic, ih, iw}));
    ir::Expr wv = ir::cast(DType::f32(), w({ic, i[1] % og, rh.var, rw.var}));
    return ir::cast(x.dtype(), te::sum(ir::select(ok_h && ok_w, xv * wv, ir::Expr(0.0f)),
                                       {rc, rh, rw}, DType::f32()));
  });
}

}  // namespace

void register_conv_transpose_ops(OpRegistry& r) {
  OpDef def;
  def.name = "conv_transpose2d";
  def.num_inputs = 2;
  def.attrs_type = &typeid(ConvTranspose2dAttrs);
  def.infer = infer;
  def.compute = compute;
  LOOM_CHECK(r.add(std::move(def)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
