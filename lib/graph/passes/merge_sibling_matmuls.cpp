// merge_sibling_matmuls: matmuls of one tensor x by constant matrices W_1 .. W_n [K, N_i] (the
// query, key and value projections of an attention layer) become one matmul by their
// concatenation [K, N_1 + ... + N_n], whose columns each former product reads back as a slice.
// Where each product's one reader adds a constant bias along its last dim, the biases are
// concatenated too and added once (the merged matmul's epilogue). One GEMM n times as wide fills
// a GPU that n narrow ones (a few tiles each at batch 1) leave mostly idle, in one launch.

#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "graph/passes/rewrite.hpp"
#include "loom/graph/passes.hpp"

namespace loom::passes {
namespace {

bool is_op(const Node& n, const char* op) {
  return n.kind == Node::Kind::kOp && n.op == op;
}

// A matrix W [K, N] that matmul node m multiplies its first input by, stored row-major; null
// where m is something else.
const NDArray* constant_weight(const std::vector<Node>& nodes, const Node& m) {
  if (!is_op(m, "matmul") || !m.type.layout.empty()) return nullptr;
  const Node& w = nodes[m.inputs[1]];
  if (w.kind != Node::Kind::kConstant || !w.type.layout.empty() || w.value.rank() != 2 ||
      w.value.dtype() != m.type.dtype || nodes[m.inputs[0]].type.dtype != m.type.dtype)
    return nullptr;
  return &w.value;
}

// The constant bias that node a adds to matmul node m along its last dim (shape [N], or ones
// before it), keeping m's shape and type; null where a is something else.
const Node* bias_of(const std::vector<Node>& nodes, const Node& a, int m, int64_t n) {
  if (!is_op(a, "add") || !a.type.layout.empty() || a.type.dtype != nodes[m].type.dtype ||
      a.type.shape != nodes[m].type.shape)
    return nullptr;
  for (int side : {0, 1}) {
    if (a.inputs[side] != m) continue;
    const Node& b = nodes[a.inputs[1 - side]];
    if (b.kind != Node::Kind::kConstant || !b.type.layout.empty() || b.value.numel() != n ||
        b.value.dtype() != a.type.dtype || b.value.rank() < 1 || b.value.shape().back() != n ||
        b.value.rank() > static_cast<int>(a.type.shape.size()))
      return nullptr;
    return &b;
  }
  return nullptr;
}

// The arrays' columns side by side: [rows, n_1] ... -> [rows, n_1 + ... ] (a vector [n] is one
// row).
NDArray side_by_side(const std::vector<const NDArray*>& parts) {
  const int64_t rows = parts[0]->rank() == 2 ? parts[0]->shape()[0] : 1;
  int64_t cols = 0;
  for (const NDArray* p : parts) cols += p->shape().back();
  const int64_t bytes = parts[0]->dtype().bytes();
  NDArray out(parts[0]->dtype(), parts[0]->rank() == 2 ? std::vector<int64_t>{rows, cols}
                                                       : std::vector<int64_t>{cols});
  auto* to = static_cast<unsigned char*>(out.data());
  int64_t at = 0;
  for (const NDArray* p : parts) {
    const int64_t n = p->shape().back();
    const auto* from = static_cast<const unsigned char*>(p->data());
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(to + (r * cols + at) * bytes, from + r * n * bytes,
                  static_cast<size_t>(n * bytes));
    at += n;
  }
  return out;
}

}  // namespace

absl::StatusOr<Graph> merge_sibling_matmuls(const Graph& g) {
  LOOM_RETURN_IF_ERROR(g.status());
  const std::vector<Node>& nodes = g.nodes();
  const Uses uses(g);
  // Each live node's readers (a reader reading it twice counts once).
  std::vector<std::vector<int>> readers(nodes.size());
  for (size_t id = 0; id < nodes.size(); ++id) {
    if (!uses.live[id]) continue;
    for (int i : nodes[id].inputs)
      if (readers[i].empty() || readers[i].back() != static_cast<int>(id))
        readers[i].push_back(static_cast<int>(id));
  }
  // Siblings: the matmuls of one x by constant matrices of one K (in graph order).
  struct Group {
    std::vector<int> matmuls;
    std::vector<int64_t> at, cols;    // each product's first column in the merged one, and width
    std::vector<int> adds;            // each product's bias add, where all have one
    std::vector<const Node*> biases;  // and the constant it adds
    Tensor product, biased;           // in the new graph, made at the first member
  };
  std::map<std::pair<int, int64_t>, Group> by_input;
  for (size_t id = 0; id < nodes.size(); ++id) {
    const NDArray* w = uses.live[id] ? constant_weight(nodes, nodes[id]) : nullptr;
    if (w) by_input[{nodes[id].inputs[0], w->shape()[0]}].matmuls.push_back(static_cast<int>(id));
  }
  std::vector<Group> groups;
  std::vector<std::pair<int, size_t>> member(nodes.size(), {-1, 0});  // (group, index) per node
  for (auto& [key, group] : by_input) {
    if (group.matmuls.size() < 2) continue;
    int64_t cols = 0;
    for (int m : group.matmuls) {
      const int64_t n = nodes[nodes[m].inputs[1]].value.shape()[1];
      group.at.push_back(cols);
      group.cols.push_back(n);
      cols += n;
      const Node* bias = nullptr;
      if (uses.readers[m] == 1 && readers[m].size() == 1)
        bias = bias_of(nodes, nodes[readers[m][0]], m, n);
      if (!bias) continue;
      group.adds.push_back(readers[m][0]);
      group.biases.push_back(bias);
    }
    if (group.adds.size() != group.matmuls.size()) {
      group.adds.clear();
      group.biases.clear();
    }
    for (size_t k = 0; k < group.matmuls.size(); ++k) {
      member[group.matmuls[k]] = {static_cast<int>(groups.size()), k};
      if (!group.adds.empty()) member[group.adds[k]] = {static_cast<int>(groups.size()), k};
    }
    groups.push_back(std::move(group));
  }
  if (groups.empty()) return g;

  // Names and values side by side: "a+b+c".
  auto joined = [](const std::vector<const Node*>& constants) {
    std::string names;
    std::vector<const NDArray*> values;
    for (const Node* c : constants) {
      names += (names.empty() ? "" : "+") + c->name;
      values.push_back(&c->value);
    }
    return std::make_pair(names, side_by_side(values));
  };
  Graph out;
  std::vector<Tensor> map;
  LOOM_ASSIGN_OR_RETURN(
      Graph result,
      rebuild(g, out, map, [&](int id, const std::vector<Tensor>&) -> std::optional<Tensor> {
        const auto [index, k] = member[id];
        if (index < 0) return std::nullopt;
        Group& group = groups[static_cast<size_t>(index)];
        if (!group.product.valid()) {  // the first member: the merged matmul (and bias)
          std::vector<const Node*> weights;
          for (int m : group.matmuls) weights.push_back(&nodes[nodes[m].inputs[1]]);
          auto [w_name, w] = joined(weights);
          group.product = map[nodes[group.matmuls[0]].inputs[0]].matmul(out.constant(w_name, w));
          if (!group.biases.empty()) {
            auto [b_name, b] = joined(group.biases);
            group.biased = group.product.add(out.constant(b_name, b));
          }
        }
        // Node id's columns of the merged product (its bias added where id is the add).
        const bool add = is_op(nodes[id], "add");
        const int last = static_cast<int>(nodes[id].type.shape.size()) - 1;
        return (add ? group.biased : group.product)
            .slice({group.at[k]}, {group.at[k] + group.cols[k]}, {last});
      }));
  return rebuild(result, nullptr);  // drops the products and biases merged
}

}  // namespace loom::passes
