// eliminate_common_subexpressions: one node per distinct (operator, attributes, inputs), and one
// constant per distinct array (same data, dtype and shape).

#include <map>
#include <string>

#include "graph/passes/rewrite.hpp"
#include "loom/core/status.hpp"
#include "loom/graph/passes.hpp"

namespace loom::passes {

absl::StatusOr<Graph> eliminate_common_subexpressions(const Graph& g) {
  Graph out;
  std::vector<Tensor> map;
  std::map<std::string, Tensor> seen;
  return rebuild(g, out, map, [&](int id, const std::vector<Tensor>& in) -> std::optional<Tensor> {
    const Node& n = g.nodes()[id];
    std::string key;
    if (n.kind == Node::Kind::kConstant) {
      key = str_cat("constant ", reinterpret_cast<uintptr_t>(n.value.data()), " ",
                    n.value.dtype().to_string(), shape_to_string(n.value.shape()));
    } else {
      key = n.op + "(" + (n.attrs ? n.attrs->to_string() : "") + ")" + steps_to_string(n.type.layout);
      for (const Tensor& t : in) key += str_cat(" %", t.id());
    }
    auto it = seen.find(key);
    if (it != seen.end()) return it->second;
    Tensor t = n.kind == Node::Kind::kConstant ? out.constant(n.name, n.value)
                                               : keep_layout(out.apply(n.op, in, n.attrs), n);
    seen.emplace(std::move(key), t);
    return t;
  });
}

}  // namespace loom::passes
