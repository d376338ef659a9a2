// fold_batch_norm_into_conv: conv2d(x, W) * a, with W constant and a a constant holding one
// value per output channel, becomes conv2d(x, W'), W'[o] = W[o] * a[o]. The shift that follows
// (+ b) stays an add, the convolution's bias.

#include "graph/passes/rewrite.hpp"
#include "loom/graph/passes.hpp"

namespace loom::passes {
namespace {

// a as one value per output channel of an [N, O, H, W] conv result: shape [O, 1, 1] or
// [1, O, 1, 1]; null for anything else.
const NDArray* per_channel(const Node& a, int64_t channels) {
  if (a.kind != Node::Kind::kConstant) return nullptr;
  const auto& s = a.value.shape();
  if (s.size() != 3 && s.size() != 4) return nullptr;
  const size_t c = s.size() - 3;
  for (size_t d = 0; d < s.size(); ++d)
    if (s[d] != (d == c ? channels : 1)) return nullptr;
  return &a.value;
}

}  // namespace

absl::StatusOr<Graph> fold_batch_norm_into_conv(const Graph& g) {
  const std::vector<Node>& nodes = g.nodes();
  const Uses uses(g);
  Graph out;
  std::vector<Tensor> map;
  LOOM_ASSIGN_OR_RETURN(
      Graph result,
      rebuild(g, out, map, [&](int id, const std::vector<Tensor>&) -> std::optional<Tensor> {
        const Node& m = nodes[id];
        if (m.kind != Node::Kind::kOp || m.op != "mul") return std::nullopt;
        for (int side : {0, 1}) {
          const Node& conv = nodes[m.inputs[side]];
          if (conv.kind != Node::Kind::kOp || conv.op != "conv2d" || uses.readers[m.inputs[side]] != 1)
            continue;
          const Node& w = nodes[conv.inputs[1]];
          // The product must not broadcast the conv result to a larger shape.
          if (w.kind != Node::Kind::kConstant || conv.type.shape != m.type.shape) continue;
          const int64_t o = w.value.shape()[0];
          const NDArray* a = per_channel(nodes[m.inputs[1 - side]], o);
          if (!a || a->dtype() != w.value.dtype()) continue;
          NDArray scaled(w.value.dtype(), w.value.shape());
          const int64_t per_o = w.value.numel() / o;
          for (int64_t i = 0; i < w.value.numel(); ++i) scaled.set(i, w.value.get(i) * a->get(i / per_o));
          Tensor wt = out.constant(w.name + "_bn", scaled);
          return keep_layout(out.apply("conv2d", {map[conv.inputs[0]], wt}, conv.attrs), m);
        }
        return std::nullopt;
      }));
  return rebuild(result, nullptr);  // drops the convolutions that were folded
}

}  // namespace loom::passes
