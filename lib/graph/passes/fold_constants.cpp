// fold_constants: the nodes that depend on constants only are compiled as one graph of their
// own, run once, and replaced by its results. A build without LLVM evaluates them with the
// reference evaluator instead.

#include <cstring>

#include "graph/passes/rewrite.hpp"
#include "loom/compiler.hpp"
#include "loom/graph/op.hpp"
#include "loom/graph/passes.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/te/evaluate.hpp"

namespace loom::passes {
namespace {

// The outputs of g (no inputs, static shapes), each operator evaluated from its compute
// definition by the te reference evaluator.
absl::StatusOr<std::vector<NDArray>> evaluate_by_reference(const Graph& g) {
  std::vector<NDArray> values(g.nodes().size());
  for (size_t id = 0; id < g.nodes().size(); ++id) {
    const Node& n = g.nodes()[id];
    if (n.kind == Node::Kind::kConstant) values[id] = n.value;
    if (n.kind != Node::Kind::kOp) continue;
    auto extents = [](const Shape& s) {
      std::vector<ir::Expr> out;
      for (const Dim& d : s) out.push_back(ir::Expr(d.value()));
      return out;
    };
    std::vector<te::Tensor> ins;
    std::vector<NDArray> args;
    for (int i : n.inputs) {
      const Node& in = g.nodes()[i];
      ins.push_back(te::placeholder(in.name, in.type.dtype, extents(in.type.shape)));
      args.push_back(values[i]);
    }
    const OpDef* def = OpRegistry::global().find(n.op);
    if (!def) return absl::InternalError("fold-constants: unknown operator " + n.op);
    te::Tensor out = def->compute(ins, *n.attrs, extents(n.type.shape), n.name);
    LOOM_ASSIGN_OR_RETURN(te::Task task, te::Task::make(n.name, ins, {out}));
    LOOM_ASSIGN_OR_RETURN(std::vector<NDArray> result, te::evaluate(task, args));
    values[id] = std::move(result[0]);
  }
  std::vector<NDArray> outs;
  for (int o : g.outputs()) outs.push_back(values[o]);
  return outs;
}

}  // namespace

absl::StatusOr<Graph> fold_constants(const Graph& g, const Target& target) {
  LOOM_RETURN_IF_ERROR(g.status());
  const std::vector<Node>& nodes = g.nodes();
  const Uses uses(g);
  // Foldable: a live operator node whose inputs are constants or foldable (and that has some).
  std::vector<bool> foldable(nodes.size(), false);
  for (size_t id = 0; id < nodes.size(); ++id) {
    const Node& n = nodes[id];
    if (n.kind != Node::Kind::kOp || !uses.live[id] || n.inputs.empty()) continue;
    bool all = true;
    for (int i : n.inputs)
      all = all && (nodes[i].kind == Node::Kind::kConstant || foldable[i]);
    // A value stored in another layout stays computed (folded values are row-major arrays).
    foldable[id] = all && n.type.layout.empty();
  }
  // The frontier: foldable nodes that something not folded (or an output) reads.
  std::vector<bool> frontier(nodes.size(), false);
  for (size_t id = 0; id < nodes.size(); ++id)
    if (uses.live[id] && !foldable[id])
      for (int i : nodes[id].inputs) frontier[i] = foldable[i];
  for (int o : g.outputs()) frontier[o] = foldable[o];
  std::vector<int> folded;
  for (size_t id = 0; id < nodes.size(); ++id)
    if (frontier[id]) folded.push_back(static_cast<int>(id));
  if (folded.empty()) return rebuild(g, nullptr);

  // The constant part as a graph of its own (no inputs), compiled and run once.
  Graph sub;
  std::vector<Tensor> map(nodes.size());
  for (size_t id = 0; id < nodes.size(); ++id) {
    const Node& n = nodes[id];
    if (n.kind == Node::Kind::kConstant) {
      map[id] = sub.constant(n.name, n.value);
    } else if (foldable[id]) {
      std::vector<Tensor> in;
      for (int i : n.inputs) in.push_back(map[i]);
      map[id] = sub.apply(n.op, in, n.attrs);
    }
  }
  for (int id : folded) sub.output(map[id]);
  std::vector<NDArray> values;
  if (runtime::CpuJit::available()) {
    CompileOptions options;
    options.graph_passes = false;
    options.report_progress = false;
    LOOM_ASSIGN_OR_RETURN(CompiledGraph compiled, Compiler(target).compile(sub, options));
    LOOM_ASSIGN_OR_RETURN(values, compiled.run({}));
  } else {
    LOOM_ASSIGN_OR_RETURN(values, evaluate_by_reference(sub));
  }

  Graph out;
  std::vector<Tensor> out_map;
  size_t next = 0;
  std::vector<int> value_of(nodes.size(), -1);
  for (int id : folded) value_of[id] = static_cast<int>(next++);
  LOOM_ASSIGN_OR_RETURN(Graph result,
                        rebuild(g, out, out_map, [&](int id, const std::vector<Tensor>&) -> std::optional<Tensor> {
                          if (value_of[id] < 0) return std::nullopt;
                          return out.constant(nodes[id].name + "_folded", values[value_of[id]]);
                        }));
  return rebuild(result, nullptr);  // drops the folded nodes' inputs, now unread
}

}  // namespace loom::passes
