// layout_transform: the same values stored in another layout. Its compute is the identity on
// logical indices; the output buffer's layout does the moving when the access is flattened.

#include "loom/ops/attrs.hpp"
#include "ops/common.hpp"
#include "ops/register.hpp"

namespace loom::ops {
namespace {

absl::StatusOr<TensorType> infer_layout_transform(const std::vector<TensorType>& in,
                                                  const OpAttrs& attrs) {
  const auto& a = attrs_as<LayoutAttrs>(attrs);
  std::vector<ir::Expr> shape;
  for (const Dim& d : in[0].shape) {
    if (!d.is_static())
      return absl::InvalidArgumentError("layout_transform needs static extents, got " +
                                        shape_to_string(in[0].shape));
    shape.push_back(ir::Expr(d.value()));
  }
  Layout l = Layout::of(shape, a.steps);
  if (!l.ok()) return l.status();
  if (!l.is_injective())
    return absl::InvalidArgumentError("layout_transform to " + l.to_string() +
                                      ": a stored tensor's layout must hold each element once "
                                      "(unfold is for kernels' own buffers)");
  TensorType out = in[0];
  out.layout = a.steps;
  return out;
}

te::Tensor compute_layout_transform(const std::vector<te::Tensor>& in, const OpAttrs&,
                                    const std::vector<ir::Expr>& shape, const std::string& name) {
  return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
    return in[0](std::vector<ir::Expr>(i.begin(), i.end()));
  });
}

}  // namespace

void register_layout_ops(OpRegistry& r) {
  OpDef def = injective_op("layout_transform", 1, typeid(LayoutAttrs), infer_layout_transform,
                           compute_layout_transform);
  def.sets_layout = true;
  LOOM_CHECK(r.add(std::move(def)).ok(), "duplicate built-in op");
}

}  // namespace loom::ops
