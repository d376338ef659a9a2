// max_pool2d and avg_pool2d over NCHW input: a window per output pixel, strides, padding per side.
// Padded positions are skipped: they never win a max and an average divides by the taps inside.

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

absl::StatusOr<TensorType> infer_pool2d(const std::string& op, const TensorType& x,
                                        const Pool2dAttrs& a) {
  if (x.shape.size() != 4)
    return absl::InvalidArgumentError(str_cat(op, " input must have rank 4 (NCHW), got rank ",
                                              x.shape.size(), " ", shape_to_string(x.shape)));
  if (!x.dtype.is_float())
    return absl::InvalidArgumentError(op + " needs a floating-point tensor, got " +
                                      x.dtype.to_string());
  if (!x.shape[2].is_static() || !x.shape[3].is_static())
    return absl::InvalidArgumentError(op + " input " + shape_to_string(x.shape) +
                                      ": the spatial dims must be static");
  if (a.kernel_h <= 0 || a.kernel_w <= 0 || a.stride_h <= 0 || a.stride_w <= 0)
    return absl::InvalidArgumentError(str_cat(op, " window and strides must be positive, got ",
                                              a.to_string()));
  if (a.pad_top < 0 || a.pad_left < 0 || a.pad_bottom < 0 || a.pad_right < 0)
    return absl::InvalidArgumentError(str_cat(op, " padding must be non-negative, got ", a.to_string()));
  if (a.pad_top >= a.kernel_h || a.pad_bottom >= a.kernel_h || a.pad_left >= a.kernel_w ||
      a.pad_right >= a.kernel_w)
    return absl::InvalidArgumentError(
        str_cat(op, " padding must be smaller than the window (a window of padding alone has no "
                    "value), got ",
                a.to_string()));
  const int64_t h = x.shape[2].value() + a.pad_top + a.pad_bottom - a.kernel_h;
  const int64_t w = x.shape[3].value() + a.pad_left + a.pad_right - a.kernel_w;
  if (h < 0 || w < 0)
    return absl::InvalidArgumentError(str_cat(op, " window ", a.to_string(),
                                              " is larger than the padded input ",
                                              shape_to_string(x.shape)));
  return TensorType{{x.shape[0], x.shape[1], Dim(h / a.stride_h + 1), Dim(w / a.stride_w + 1)},
                    x.dtype};
}

OpDef pool_op(const std::string& name, bool is_max) {
  OpDef def;
  def.name = name;
  def.num_inputs = 1;
  def.attrs_type = &typeid(Pool2dAttrs);
  def.infer = [name](const std::vector<TensorType>& in, const OpAttrs& a) {
    return infer_pool2d(name, in[0], attrs_as<Pool2dAttrs>(a));
  };
  def.compute = [is_max](const std::vector<te::Tensor>& in, const OpAttrs& attrs,
                         const std::vector<ir::Expr>& shape, const std::string& name) {
    const auto& a = attrs_as<Pool2dAttrs>(attrs);
    const te::Tensor& x = in[0];
    const int64_t h = *ir::as_const_int(x.shape()[2]), w = *ir::as_const_int(x.shape()[3]);
    ir::IterVar rh = te::reduce_axis(ir::Expr(int64_t{a.kernel_h}), name + "_kh");
    ir::IterVar rw = te::reduce_axis(ir::Expr(int64_t{a.kernel_w}), name + "_kw");
    return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
      auto first = [](ir::Expr o, int stride, int pad) { return o * int64_t{stride} - int64_t{pad}; };
      ir::Expr ih = first(i[2], a.stride_h, a.pad_top) + rh.var;
      ir::Expr iw = first(i[3], a.stride_w, a.pad_left) + rw.var;
      ir::Expr inside = ih >= int64_t{0} && ih < h && iw >= int64_t{0} && iw < w;
      // Clamped as well, so code evaluating both sides of the select stays inside the input.
      ir::Expr ih_c = ir::min(ir::max(ih, ir::Expr(int64_t{0})), ir::Expr(h - 1));
      ir::Expr iw_c = ir::min(ir::max(iw, ir::Expr(int64_t{0})), ir::Expr(w - 1));
      ir::Expr v = ir::cast(DType::f32(), x({i[0], i[1], ih_c, iw_c}));
      if (is_max)
        return ir::cast(x.dtype(), te::max(ir::select(inside, v, ir::lowest_value(DType::f32())),
                                           {rh, rw}));
      // Taps inside the image: the window clipped to [0, h) x [0, w).
      auto count = [](ir::Expr lo, int64_t k, int64_t n) {
        return ir::min(lo + k, ir::Expr(n)) - ir::max(lo, ir::Expr(int64_t{0}));
      };
      ir::Expr taps = count(first(i[2], a.stride_h, a.pad_top), a.kernel_h, h) *
                      count(first(i[3], a.stride_w, a.pad_left), a.kernel_w, w);
      ir::Expr total = te::sum(ir::select(inside, v, ir::Expr(0.0f)), {rh, rw}, DType::f32());
      return ir::cast(x.dtype(), total / ir::cast(DType::f32(), taps));
    });
  };
  return def;
}

}  // namespace

void register_pool_ops(OpRegistry& r) {
  for (OpDef def : {pool_op("max_pool2d", true), pool_op("avg_pool2d", false)}) {
    def.follows_input_layout = true;
    LOOM_CHECK(r.add(std::move(def)).ok(), "duplicate built-in op");
  }
}

}  // namespace loom::ops
