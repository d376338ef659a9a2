// remove_identities: operators whose result is their input (same type, same elements) go.

#include "graph/passes/rewrite.hpp"
#include "loom/graph/passes.hpp"
#include "loom/ops/attrs.hpp"

namespace loom::passes {
namespace {

bool all_equal(const Tensor& t, double v) {
  const NDArray* a = constant_value(t);
  if (!a) return false;
  for (int64_t i = 0; i < a->numel(); ++i)
    if (a->get(i) != v) return false;
  return true;
}

}  // namespace

absl::StatusOr<Graph> remove_identities(const Graph& g) {
  return rebuild(g, [&](int id, const std::vector<Tensor>& in) -> std::optional<Tensor> {
    const Node& n = g.nodes()[id];
    if (n.kind != Node::Kind::kOp) return std::nullopt;
    // The result is operand k itself when it already has the node's type (layout included).
    auto operand = [&](size_t k) -> std::optional<Tensor> {
      if (k < in.size() && in[k].valid() && in[k].dtype() == n.type.dtype &&
          in[k].shape() == n.type.shape &&
          in[k].graph()->nodes[static_cast<size_t>(in[k].id())].type.layout == n.type.layout)
        return in[k];
      return std::nullopt;
    };
    if (n.op == "layout_transform") return operand(0);  // to the layout it already has
    if (n.op == "reshape") return operand(0);
    if (n.op == "transpose") {
      const auto& perm = attrs_as<ops::TransposeAttrs>(*n.attrs).perm;
      for (size_t k = 0; k < perm.size(); ++k)
        if (perm[k] != static_cast<int>(k)) return std::nullopt;
      if (perm.empty() && n.type.shape.size() > 1) return std::nullopt;  // empty reverses
      return operand(0);
    }
    if ((n.op == "add" || n.op == "sub") && all_equal(in[1], 0)) return operand(0);
    if (n.op == "add" && all_equal(in[0], 0)) return operand(1);
    if ((n.op == "mul" || n.op == "div") && all_equal(in[1], 1)) return operand(0);
    if (n.op == "mul" && all_equal(in[0], 1)) return operand(1);
    if (n.op == "add_scalar" && attrs_as<ops::ScalarAttrs>(*n.attrs).value == 0) return operand(0);
    if (n.op == "mul_scalar" && attrs_as<ops::ScalarAttrs>(*n.attrs).value == 1) return operand(0);
    return std::nullopt;
  });
}

}  // namespace loom::passes
