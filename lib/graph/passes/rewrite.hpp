// Rebuilding a graph node by node, the way every graph pass does: each old node maps to a tensor
// of the new graph, either a copy (operators re-applied, so shapes are inferred again) or a
// replacement the pass chose. Private to lib/graph/passes.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "loom/core/status.hpp"
#include "loom/graph/graph.hpp"

namespace loom::passes {

// Old node ids that some output depends on, and how many live nodes read each node.
struct Uses {
  std::vector<bool> live;
  std::vector<int> readers;
  explicit Uses(const Graph& g) : live(g.nodes().size(), false), readers(g.nodes().size(), 0) {
    std::vector<int> stack(g.outputs().begin(), g.outputs().end());
    while (!stack.empty()) {
      int n = stack.back();
      stack.pop_back();
      if (live[n]) continue;
      live[n] = true;
      for (int i : g.nodes()[n].inputs) stack.push_back(i);
    }
    for (size_t n = 0; n < g.nodes().size(); ++n)
      if (live[n])
        for (int i : g.nodes()[n].inputs) ++readers[i];
    for (int o : g.outputs()) ++readers[o];
  }
};

// t, a copy of node n, stored in n's layout (the layout assignment's choice; shape rules give
// row-major).
inline Tensor keep_layout(Tensor t, const Node& n) {
  if (t.valid() && !n.type.layout.empty())
    t.graph()->nodes[static_cast<size_t>(t.id())].type.layout = n.type.layout;
  return t;
}

// t, a copy of constant n: a constant stored in a layout holds its physical elements and keeps
// n's type (its logical shape, in its layout).
inline Tensor keep_type(Tensor t, const Node& n) {
  if (t.valid() && !n.type.layout.empty())
    t.graph()->nodes[static_cast<size_t>(t.id())].type = n.type;
  return t;
}

// `replace(id, mapped inputs)` may return the new tensor for old node id (a constant or an op
// node); nullopt copies it. Inputs are always kept, in order; dead nodes are dropped.
using Replace = std::function<std::optional<Tensor>(int id, const std::vector<Tensor>& inputs)>;

inline absl::StatusOr<Graph> rebuild(const Graph& g, Graph& out, std::vector<Tensor>& map,
                                     const Replace& replace) {
  LOOM_RETURN_IF_ERROR(g.status());
  const Uses uses(g);
  map.assign(g.nodes().size(), Tensor());
  for (size_t id = 0; id < g.nodes().size(); ++id) {
    const Node& n = g.nodes()[id];
    if (n.kind == Node::Kind::kInput) {
      map[id] = out.input(n.name, n.type.shape, n.type.dtype);
      continue;
    }
    if (!uses.live[id]) continue;
    std::vector<Tensor> inputs;
    for (int i : n.inputs) inputs.push_back(map[i]);
    std::optional<Tensor> r = replace ? replace(static_cast<int>(id), inputs) : std::nullopt;
    if (r) map[id] = *r;
    else if (n.kind == Node::Kind::kConstant)
      map[id] = keep_type(out.constant(n.name, n.value), n);
    else map[id] = keep_layout(out.apply(n.op, inputs, n.attrs), n);
  }
  for (int o : g.outputs()) out.output(map[o]);
  LOOM_RETURN_IF_ERROR(out.status());
  return out;
}

inline absl::StatusOr<Graph> rebuild(const Graph& g, const Replace& replace) {
  Graph out;
  std::vector<Tensor> map;
  return rebuild(g, out, map, replace);
}

// The constant array behind a tensor of graph `out`, or null.
inline const NDArray* constant_value(const Tensor& t) {
  if (!t.valid()) return nullptr;
  const Node& n = t.graph()->nodes[t.id()];
  return n.kind == Node::Kind::kConstant ? &n.value : nullptr;
}

}  // namespace loom::passes
