// Kernels of fused groups: one te task per default-scheduled group, and the epilogue that
// post-scheduling fusion puts around a templated anchor's output stores.

#include "graph/fusion.hpp"

#include <algorithm>
#include <set>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/structural.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/te/inline.hpp"

namespace loom::fusion {
namespace {

// Replaces every load of one buffer by an expression (the anchor's value).
class ReplaceLoads : public ir::IRMutator {
 public:
  ReplaceLoads(const ir::BufferNode* buffer, ir::Expr value) : buffer_(buffer), value_(std::move(value)) {}
  using ir::IRMutator::mutate;

 protected:
  ir::Expr mutate_load(const ir::Load* op, const ir::Expr& e) override {
    return op->buffer.get() == buffer_ ? value_ : ir::IRMutator::mutate_load(op, e);
  }

 private:
  const ir::BufferNode* buffer_;
  ir::Expr value_;
};

// The te tensor of every member, computed from placeholders for the values read from outside.
struct MemberTensors {
  std::map<int, te::Tensor> value;
  std::vector<te::Tensor> placeholders;  // in `outside` order
};

absl::StatusOr<MemberTensors> member_tensors(const Graph& g, const std::vector<int>& members,
                                             const std::vector<int>& outside,
                                             const std::function<std::string(int, size_t)>& placeholder_name,
                                             const std::function<std::string(int, size_t)>& compute_name,
                                             DimVars& dims) {
  MemberTensors t;
  for (size_t k = 0; k < outside.size(); ++k) {
    const Node& n = g.nodes()[outside[k]];
    te::Tensor p = te::placeholder(placeholder_name(outside[k], k), n.type.dtype,
                                   Layout::of(dims.shape(n.type.shape), n.type.layout));
    t.value[outside[k]] = p;
    t.placeholders.push_back(p);
  }
  for (size_t k = 0; k < members.size(); ++k) {
    const Node& n = g.nodes()[members[k]];
    if (t.value.count(members[k])) continue;  // given from outside (the anchor of an epilogue)
    const OpDef* def = OpRegistry::global().find(n.op);
    LOOM_CHECK(def, "node of unregistered op ", n.op);
    std::vector<te::Tensor> ins;
    for (int in : n.inputs) ins.push_back(t.value.at(in));
    te::Tensor out = def->compute(ins, *n.attrs, dims.shape(n.type.shape), compute_name(members[k], k));
    if (out.dtype() != n.type.dtype)
      return absl::InternalError("operator " + n.op + " computed " + out.dtype().to_string() +
                                 " but its shape rule promised " + n.type.dtype.to_string());
    t.value[members[k]] = out;
  }
  return t;
}

// Every tensor reachable from roots through their inputs.
std::vector<te::Tensor> reachable(const std::vector<te::Tensor>& roots) {
  std::vector<te::Tensor> out;
  std::set<const te::TensorNode*> seen;
  std::vector<te::Tensor> stack = roots;
  while (!stack.empty()) {
    te::Tensor t = stack.back();
    stack.pop_back();
    if (!seen.insert(t.node().get()).second) continue;
    out.push_back(t);
    for (const te::Tensor& in : t->inputs) stack.push_back(in);
  }
  return out;
}

}  // namespace

ir::Expr DimVars::dim(const Dim& d) {
  if (d.is_static()) return ir::Expr(d.value());
  auto it = vars_.find(d.name());
  if (it == vars_.end()) it = vars_.emplace(d.name(), ir::Var(d.name())).first;
  return it->second;
}

std::vector<ir::Expr> DimVars::shape(const Shape& s) {
  std::vector<ir::Expr> out;
  for (const Dim& d : s) out.push_back(dim(d));
  return out;
}

std::vector<int> outside_inputs(const Graph& g, const std::vector<int>& nodes) {
  std::vector<int> out;
  for (int m : nodes)
    for (int in : g.nodes()[m].inputs)
      if (std::find(nodes.begin(), nodes.end(), in) == nodes.end() &&
          std::find(out.begin(), out.end(), in) == out.end())
        out.push_back(in);
  return out;
}

absl::StatusOr<te::Task> group_task(const Graph& g, const FusedGroup& group, const std::string& name) {
  DimVars dims;
  auto node_name = [&](int id, size_t) { return g.nodes()[id].name; };
  LOOM_ASSIGN_OR_RETURN(MemberTensors t,
                        member_tensors(g, group.nodes, group.inputs, node_name, node_name, dims));
  te::Tensor result = t.value.at(group.output);
  if (group.anchor >= 0 && group.anchor != group.output) {
    // The epilogue reads the anchor at one index; the anchor's value there (reductions and all)
    // is bound once and the epilogue computed from it.
    const te::Tensor& a = t.value.at(group.anchor);
    std::vector<ir::Expr> axes(result->axes.begin(), result->axes.end());
    ir::Expr e = te::value_at(result, axes, {a.node().get()});
    std::vector<ir::Expr> at;
    bool one_index = true;
    ir::for_each_expr(e, [&](const ir::Expr& x) {
      auto* l = x.as<ir::Load>();
      if (!l || l->buffer != a->buffer.node()) return;
      if (at.empty()) at = l->indices;
      for (size_t d = 0; d < at.size(); ++d) one_index &= ir::structural_equal(at[d], l->indices[d]);
    });
    if (!at.empty() && one_index) {
      ir::Var v(a.name() + "_value", a.dtype());
      ir::Expr value = te::value_at(a, at, {}, {a.node().get()});
      ir::Expr body = ir::Let::make(v, value, ReplaceLoads(a->buffer.node().get(), v).mutate(e));
      result = te::compute_from(result.name(), result.shape(), result->axes, body,
                                reachable({result, a}));
    }
  }
  result = te::inline_injective(result);
  const TensorType& type = g.nodes()[group.output].type;
  if (!type.layout.empty()) result = te::with_layout(result, Layout::of(result.shape(), type.layout));
  return te::Task::make(name, t.placeholders, {result});
}

absl::StatusOr<Epilogue> epilogue_of(const Graph& g, const FusedGroup& group) {
  const Node& anchor = g.nodes()[group.anchor];
  std::vector<int> members = group.epilogue();
  if (members.empty()) return absl::InvalidArgumentError("the group has no epilogue");
  Epilogue out;
  DimVars dims;
  // Canonical names: identical layers share one kernel in the cache.
  std::vector<int> outside = {group.anchor};
  for (int in : outside_inputs(g, members))
    if (in != group.anchor) outside.push_back(in);
  out.inputs.assign(outside.begin() + 1, outside.end());
  LOOM_ASSIGN_OR_RETURN(
      MemberTensors t,
      member_tensors(
          g, members, outside,
          [](int, size_t k) { return k == 0 ? std::string("anchor") : str_cat("in", k - 1); },
          [](int, size_t k) { return str_cat("e", k); }, dims));
  const te::Tensor anchor_value = t.placeholders[0];
  const te::Tensor result = t.value.at(group.output);

  // One path of links from the anchor to the output (every path maps indices alike).
  struct Step {
    int node, from;
    IndexLink link;
  };
  std::vector<Step> path;
  std::map<int, std::vector<ir::Expr>> shapes = {{group.anchor, dims.shape(anchor.type.shape)}};
  for (int m : members) {
    shapes[m] = dims.shape(g.nodes()[m].type.shape);
    int from = -1;
    for (int in : g.nodes()[m].inputs)
      if (from < 0 && shapes.count(in)) from = in;
    std::optional<IndexLink> link = from < 0 ? std::nullopt : bijective_link(g, m, from);
    if (!link)
      return absl::InternalError(str_cat("epilogue node '", g.nodes()[m].name,
                                         "' does not map its input's elements one to one"));
    path.push_back(Step{m, from, *link});
  }
  const int output = group.output;
  auto output_index = [path, shapes, output, anchor_id = group.anchor](
                          const std::vector<ir::Expr>& j) -> std::optional<std::vector<ir::Expr>> {
    std::map<int, std::vector<ir::Expr>> index = {{anchor_id, j}};
    for (const Step& s : path) {
      std::optional<std::vector<ir::Expr>> next =
          forward_index(s.link, index.at(s.from), shapes.at(s.from), shapes.at(s.node));
      if (!next) return std::nullopt;
      index[s.node] = std::move(*next);
    }
    return index.at(output);
  };
  out.fusion.anchor_shape = shapes.at(group.anchor);
  // The same storage order at both ends: row-major, or one layout over one shape (elementwise
  // links). A view of the output in the anchor's shape and layout then meets its elements.
  const TensorType& out_type = g.nodes()[output].type;
  out.fusion.flat_preserving =
      anchor.type.layout == out_type.layout &&
      (anchor.type.layout.empty() || anchor.type.shape == out_type.shape) &&
      std::all_of(path.begin(), path.end(), [](const Step& s) { return s.link.preserves_order(); });
  out.fusion.output_index = output_index;
  out.fusion.value = [result, anchor_value](const std::vector<ir::Expr>& at, const ir::Expr& v) {
    ir::Expr e = te::value_at(result, at);
    return ReplaceLoads(anchor_value->buffer.node().get(), v).mutate(e);
  };
  // Aligned runs along the last dim stay runs when every link keeps the last dim last, and each
  // reshape's last extents are multiples of the run.
  out.fusion.last_dim_contiguous = [path, shapes](int lanes) {
    for (const Step& s : path) {
      const std::vector<ir::Expr>& in = shapes.at(s.from);
      const std::vector<ir::Expr>& o = shapes.at(s.node);
      if (in.empty() || o.empty()) return false;
      if (s.link.reshape) {
        std::optional<int64_t> a = ir::as_const_int(in.back()), b = ir::as_const_int(o.back());
        if (!a || !b || *a % lanes != 0 || *b % lanes != 0) return false;
      } else if (s.link.input_dim_of_axis.back() != static_cast<int>(in.size()) - 1) {
        return false;
      }
    }
    return true;
  };
  for (size_t k = 1; k < t.placeholders.size(); ++k) out.fusion.inputs.push_back(t.placeholders[k]->buffer);
  out.fusion.output = ir::Buffer::make(
      "out", result.dtype(), Layout::of(shapes.at(output), g.nodes()[output].type.layout));
  LOOM_ASSIGN_OR_RETURN(te::Task task, te::Task::make("epilogue", t.placeholders, {result}));
  out.text = task.to_string();
  // The output's layout is the stores' (a fused layout_transform leaves the values as they are):
  // part of the text, so that the kernel cache tells such epilogues apart.
  if (const Layout& l = out.fusion.output.layout(); !l.is_row_major())
    out.text += "  output stored " + l.to_string() + "\n";
  return out;
}

namespace {

// The prologue members that compute `root` (root included), in graph order.
std::vector<int> prologue_tree(const Graph& g, const std::vector<int>& prologue, int root) {
  std::set<int> in(prologue.begin(), prologue.end()), tree;
  std::vector<int> stack = {root};
  while (!stack.empty()) {
    int n = stack.back();
    stack.pop_back();
    if (!in.count(n) || !tree.insert(n).second) continue;
    for (int i : g.nodes()[n].inputs) stack.push_back(i);
  }
  return std::vector<int>(tree.begin(), tree.end());
}

}  // namespace

absl::StatusOr<std::vector<Prologue>> prologues_of(const Graph& g, const FusedGroup& group) {
  std::vector<Prologue> out;
  std::vector<int> prologue = group.prologue();
  const Node& anchor = g.nodes()[group.anchor];
  for (size_t i = 0; i < anchor.inputs.size(); ++i) {
    int root = anchor.inputs[i];
    std::vector<int> members = prologue_tree(g, prologue, root);
    if (members.empty()) continue;
    // Kernels may read an input stored in another layout by its physical offsets.
    if (!g.nodes()[root].type.layout.empty())
      return absl::UnimplementedError(str_cat("input ", i, " is stored in layout ",
                                              g.nodes()[root].type.to_string()));
    Prologue p;
    p.inputs = outside_inputs(g, members);
    DimVars dims;
    LOOM_ASSIGN_OR_RETURN(
        MemberTensors t,
        member_tensors(
            g, members, p.inputs, [i](int, size_t k) { return str_cat("p", i, "_in", k); },
            [i](int, size_t k) { return str_cat("p", i, "_e", k); }, dims));
    const te::Tensor value = t.value.at(root);
    p.fusion.input = static_cast<int>(i);
    p.fusion.input_shape = dims.shape(g.nodes()[root].type.shape);
    p.fusion.value = [value](const std::vector<ir::Expr>& j) { return te::value_at(value, j); };
    for (const te::Tensor& ph : t.placeholders) p.fusion.inputs.push_back(ph->buffer);
    LOOM_ASSIGN_OR_RETURN(te::Task task, te::Task::make(str_cat("prologue", i), t.placeholders, {value}));
    p.text = task.to_string();
    out.push_back(std::move(p));
  }
  return out;
}

std::pair<FusedGroup, std::vector<FusedGroup>> split_prologues(const Graph& g,
                                                               const FusedGroup& group) {
  std::vector<int> prologue = group.prologue();
  FusedGroup rest = group;
  rest.nodes.clear();
  for (int m : group.nodes)
    if (std::find(prologue.begin(), prologue.end(), m) == prologue.end()) rest.nodes.push_back(m);
  rest.inputs = outside_inputs(g, rest.nodes);
  std::vector<FusedGroup> split;
  for (int root : g.nodes()[group.anchor].inputs) {
    std::vector<int> members = prologue_tree(g, prologue, root);
    bool done = std::any_of(split.begin(), split.end(),
                            [&](const FusedGroup& s) { return s.output == root; });
    if (members.empty() || done) continue;
    FusedGroup p;
    p.nodes = members;
    p.output = root;
    p.inputs = outside_inputs(g, members);
    split.push_back(std::move(p));
  }
  return {rest, split};
}

std::pair<FusedGroup, FusedGroup> shorten_epilogue(const Graph& g, const FusedGroup& group) {
  std::vector<int> kept = group.nodes;
  std::vector<bool> is_output(g.nodes().size(), false);
  for (int o : g.outputs()) is_output[static_cast<size_t>(o)] = true;
  auto read_outside = [&](int m) {
    if (is_output[static_cast<size_t>(m)]) return true;
    for (size_t c = 0; c < g.nodes().size(); ++c) {
      const std::vector<int>& ins = g.nodes()[c].inputs;
      if (std::find(ins.begin(), ins.end(), m) != ins.end() &&
          std::find(kept.begin(), kept.end(), static_cast<int>(c)) == kept.end())
        return true;
    }
    return false;
  };
  do {
    kept.pop_back();
  } while (kept.back() != group.anchor &&
           std::count_if(kept.begin(), kept.end(), read_outside) > 1);
  FusedGroup shorter = group;
  shorter.nodes = kept;
  shorter.output = kept.back();
  shorter.inputs = outside_inputs(g, kept);
  FusedGroup rest;
  for (int m : group.nodes)
    if (std::find(kept.begin(), kept.end(), m) == kept.end()) rest.nodes.push_back(m);
  rest.output = group.output;
  rest.inputs = outside_inputs(g, rest.nodes);
  return {shorter, rest};
}

absl::StatusOr<ir::Func> fused(const ir::Func& kernel, const std::vector<Prologue>& prologues,
                               const Epilogue* epilogue) {
  ir::Func f = kernel;
  for (auto p = prologues.rbegin(); p != prologues.rend(); ++p) {
    LOOM_ASSIGN_OR_RETURN(f, passes::fuse_prologue(f, p->fusion));
  }
  if (epilogue) {
    LOOM_ASSIGN_OR_RETURN(f, passes::fuse_epilogue(f, epilogue->fusion));
  }
  return f;
}

std::vector<int> anchor_buffers(const Node& anchor, const std::vector<Prologue>& prologues,
                                const Epilogue* epilogue, int output,
                                const std::map<int, int>& replaced) {
  std::vector<std::vector<int>> per_input;
  for (int in : anchor.inputs) per_input.push_back({in});
  for (const Prologue& p : prologues) per_input[static_cast<size_t>(p.fusion.input)] = p.inputs;
  for (const auto& [input, slot] : replaced) per_input[static_cast<size_t>(input)] = {slot};
  std::vector<int> buffers;
  for (const std::vector<int>& b : per_input) buffers.insert(buffers.end(), b.begin(), b.end());
  if (epilogue) {
    buffers.insert(buffers.end(), epilogue->inputs.begin(), epilogue->inputs.end());
    if (epilogue->fusion.flat_preserving) buffers.push_back(output);
  }
  buffers.push_back(output);
  return buffers;
}

}  // namespace loom::fusion
