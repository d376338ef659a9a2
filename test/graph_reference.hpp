// A reference interpreter for whole graphs: every operator node is evaluated by the te reference
// evaluator from its compute definition. Independent of lowering, codegen and the runtime.
#pragma once

#include <catch2/catch.hpp>

#include <map>

#include "loom/graph/graph.hpp"
#include "loom/te/evaluate.hpp"
#include "loom/te/task.hpp"

namespace loom::testing {

inline std::vector<NDArray> reference_run(const Graph& g, const std::vector<NDArray>& inputs) {
  std::vector<NDArray> values(g.nodes().size());
  std::map<std::string, int64_t> symbols;
  for (size_t k = 0; k < inputs.size(); ++k) {
    values[g.inputs()[k]] = inputs[k];
    const Shape& s = g.nodes()[g.inputs()[k]].type.shape;
    for (size_t d = 0; d < s.size(); ++d)
      if (s[d].is_symbolic()) symbols[s[d].name()] = inputs[k].shape()[d];
  }
  for (size_t id = 0; id < g.nodes().size(); ++id) {
    const Node& n = g.nodes()[id];
    if (n.kind == Node::Kind::kConstant) values[id] = n.value;
    if (n.kind != Node::Kind::kOp) continue;
    // Static shapes for the reference: symbolic dims are replaced by their bound values.
    auto concrete = [&](const Shape& s) {
      std::vector<ir::Expr> out;
      for (const Dim& d : s) out.push_back(ir::Expr(d.is_static() ? d.value() : symbols.at(d.name())));
      return out;
    };
    std::vector<te::Tensor> ins;
    std::vector<NDArray> args;
    for (int i : n.inputs) {
      ins.push_back(te::placeholder(g.nodes()[i].name, g.nodes()[i].type.dtype, concrete(g.nodes()[i].type.shape)));
      args.push_back(values[i]);
    }
    const OpDef* def = OpRegistry::global().find(n.op);
    te::Tensor out = def->compute(ins, *n.attrs, concrete(n.type.shape), n.name);
    auto task = te::Task::make(n.name, ins, {out});
    REQUIRE(task.ok());
    auto result = te::evaluate(*task, args);
    INFO(result.status().ToString());
    REQUIRE(result.ok());
    values[id] = (*result)[0];
  }
  std::vector<NDArray> outs;
  for (int o : g.outputs()) outs.push_back(values[o]);
  return outs;
}

}  // namespace loom::testing
