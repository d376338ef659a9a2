// What a schedule template sees of one node of a graph (private to lib/).
#pragma once

#include "loom/core/status.hpp"
#include "loom/graph/graph.hpp"
#include "loom/graph/op.hpp"

namespace loom {

// Node n's context on target; false when some tensor's shape is not static (templates then
// never apply).
inline bool template_context(const Graph& g, const Node& n, const Target& target,
                             TemplateContext* ctx) {
  if (!is_static(n.type.shape)) return false;
  ctx->target = target;
  ctx->name = n.name;
  ctx->output = n.type;
  ctx->attrs = n.attrs.get();
  for (int in : n.inputs) {
    const Node& i = g.nodes()[static_cast<size_t>(in)];
    if (!is_static(i.type.shape)) return false;
    ctx->inputs.push_back(i.type);
    ctx->constant_inputs.push_back(i.kind == Node::Kind::kConstant);
  }
  return true;
}

// Whether template t takes the tensors of ctx in their layouts.
inline bool takes_layouts(const ScheduleTemplate& t, const TemplateContext& ctx) {
  if (t.any_layout) return true;
  if (!ctx.output.layout.empty()) return false;
  for (const TensorType& i : ctx.inputs)
    if (!i.layout.empty()) return false;
  return true;
}

// The first template of node n's op that applies to it on target, with its context; null if none
// does (symbolic shapes always use the default schedule). Tensors stored in other layouts go to
// templates that read and write through layouts, else to the default schedule, which does.
inline const ScheduleTemplate* find_template(const Graph& g, const Node& n, const Target& target,
                                             TemplateContext* ctx) {
  const OpDef* def = OpRegistry::global().find(n.op);
  LOOM_CHECK(def, "node of unregistered op ", n.op);
  if (def->templates.empty() || !template_context(g, n, target, ctx)) return nullptr;
  for (const ScheduleTemplate& t : def->templates)
    if (t.target_kind == target.kind() && takes_layouts(t, *ctx) && t.applies && t.applies(*ctx))
      return &t;
  return nullptr;
}

}  // namespace loom
