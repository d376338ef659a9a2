// Layout assignment: the graph rebuilt with each anchor's chosen layouts, layouts flowing
// through elementwise operators and pooling, and conversions only where a reader needs another
// layout.

#include "loom/graph/layouts.hpp"

#include <set>

#include "graph/template_context.hpp"
#include "loom/core/status.hpp"

namespace loom::layouts {
namespace {

const std::vector<LayoutStep>& layout_of(const Tensor& t) {
  return t.graph()->nodes[static_cast<size_t>(t.id())].type.layout;
}

// The same values stored in `want`, converted once per tensor and layout.
class Converter {
 public:
  Tensor operator()(const Tensor& t, const std::vector<LayoutStep>& want) {
    if (layout_of(t) == want) return t;
    const std::string key = str_cat(t.id(), steps_to_string(want));
    auto it = done_.find(key);
    if (it != done_.end()) return it->second;
    std::vector<ir::Expr> shape;
    for (const Dim& d : t.shape()) shape.push_back(ir::Expr(d.is_static() ? d.value() : 0));
    return done_[key] = t.layout_transform(Layout::of(shape, want));
  }

 private:
  std::map<std::string, Tensor> done_;
};

// Whether a tensor of `shape` can be stored in `steps` (static extents, a valid injective layout).
bool fits(const std::vector<LayoutStep>& steps, const Shape& shape) {
  std::vector<ir::Expr> extents;
  for (const Dim& d : shape) {
    if (!d.is_static()) return false;
    extents.push_back(ir::Expr(d.value()));
  }
  Layout l = Layout::of(extents, steps);
  return l.ok() && l.is_injective();
}

}  // namespace

std::string AnchorLayouts::to_string() const {
  std::string s = "in(";
  for (size_t k = 0; k < inputs.size(); ++k)
    s += str_cat(k ? ", " : "", inputs[k].empty() ? "row_major" : steps_to_string(inputs[k]));
  return s + ") out " + (output.empty() ? "row_major" : steps_to_string(output));
}

absl::StatusOr<Graph> apply(const Graph& g, const Assignment& a) {
  LOOM_RETURN_IF_ERROR(g.status());
  Graph out;
  std::vector<Tensor> map(g.nodes().size());
  Converter convert;
  static const std::vector<LayoutStep> kRowMajor;
  for (size_t id = 0; id < g.nodes().size(); ++id) {
    const Node& n = g.nodes()[id];
    if (n.kind == Node::Kind::kInput) {
      map[id] = out.input(n.name, n.type.shape, n.type.dtype);
      continue;
    }
    if (n.kind == Node::Kind::kConstant) {
      map[id] = out.constant(n.name, n.value);
      continue;
    }
    const OpDef* def = OpRegistry::global().find(n.op);
    LOOM_CHECK(def, "node of unregistered op ", n.op);
    auto chosen = a.find(static_cast<int>(id));
    // Pooling keeps its input's layout where that layout fits its output.
    const bool follows = chosen == a.end() && def->follows_input_layout && !n.inputs.empty() &&
                         fits(layout_of(map[static_cast<size_t>(n.inputs[0])]), n.type.shape);
    std::vector<Tensor> inputs;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Tensor& in = map[static_cast<size_t>(n.inputs[k])];
      if (chosen != a.end())
        inputs.push_back(convert(in, k < chosen->second.inputs.size() ? chosen->second.inputs[k]
                                                                      : kRowMajor));
      else if (def->elementwise || def->sets_layout || (follows && k == 0))
        inputs.push_back(in);  // read through any layout
      else
        inputs.push_back(convert(in, kRowMajor));
    }
    Tensor t = out.apply(n.op, inputs, n.attrs);
    LOOM_RETURN_IF_ERROR(out.status());
    Node& made = out.impl()->nodes[static_cast<size_t>(t.id())];
    made.name = n.name;  // the node keeps its name (conversions get names of their own)
    std::vector<LayoutStep>* layout = &made.type.layout;
    if (chosen != a.end()) {
      *layout = chosen->second.output;
    } else if (follows) {
      *layout = layout_of(inputs[0]);
    } else if (def->elementwise) {
      // The layout of the first input with the output's shape (a bias or scale broadcast
      // into it keeps its own).
      for (const Tensor& in : inputs)
        if (in.shape() == t.shape()) {
          *layout = layout_of(in);
          break;
        }
    }
    if (!layout->empty()) {
      std::vector<ir::Expr> shape;
      for (const Dim& d : t.shape()) {
        if (!d.is_static())
          return absl::InvalidArgumentError("node '" + n.name + "' " + shape_to_string(t.shape()) +
                                            ": layouts need static extents");
        shape.push_back(ir::Expr(d.value()));
      }
      Layout l = Layout::of(shape, *layout);
      if (!l.ok() || !l.is_injective())
        return absl::InvalidArgumentError(
            "node '" + n.name + "' " + shape_to_string(t.shape()) + " cannot be stored in layout " +
            steps_to_string(*layout) + (l.ok() ? "" : ": " + std::string(l.status().message())));
    }
    map[id] = t;
  }
  for (int o : g.outputs()) out.output(convert(map[static_cast<size_t>(o)], kRowMajor));
  LOOM_RETURN_IF_ERROR(out.status());
  // A conversion whose generated name an original node also has is renamed.
  std::set<std::string> original;
  for (const Node& n : g.nodes()) original.insert(n.name);
  std::set<int> kept;
  for (const Tensor& t : map)
    if (t.valid()) kept.insert(t.id());
  std::vector<Node>& nodes = out.impl()->nodes;
  for (size_t id = 0; id < nodes.size(); ++id)
    if (!kept.count(static_cast<int>(id)))
      while (original.count(nodes[id].name)) nodes[id].name += "_c";
  return out;
}

std::vector<AnchorLayouts> options(const Graph& g, int n, const Target& target) {
  const Node& node = g.nodes()[static_cast<size_t>(n)];
  const OpDef* def = node.kind == Node::Kind::kOp ? OpRegistry::global().find(node.op) : nullptr;
  TemplateContext ctx;
  if (!def || !template_context(g, node, target, &ctx)) return {};
  // Row-major context: the layouts offered by every template that applies to the node.
  for (TensorType& t : ctx.inputs) t.layout.clear();
  ctx.output.layout.clear();
  std::vector<AnchorLayouts> out;
  for (const ScheduleTemplate& t : def->templates) {
    // Templates that take layouts are asked whatever applies() says of the row-major node (one
    // may take a node in blocked layouts only); their layouts() offer nothing for the others.
    if (t.target_kind != target.kind() || !t.layouts) continue;
    if (!t.any_layout && !(t.applies && t.applies(ctx))) continue;
    LayoutOptions o = t.layouts(ctx);
    if (o.output.empty() && o.inputs.empty()) continue;
    // Every combination, input 0 varying slowest.
    std::vector<AnchorLayouts> combos = {AnchorLayouts{}};
    for (size_t k = 0; k < ctx.inputs.size(); ++k) {
      std::vector<std::vector<LayoutStep>> choices = {{}};
      if (k < o.inputs.size() && !o.inputs[k].empty()) choices = o.inputs[k];
      std::vector<AnchorLayouts> next;
      for (const AnchorLayouts& c : combos)
        for (const std::vector<LayoutStep>& l : choices) {
          AnchorLayouts d = c;
          d.inputs.push_back(l);
          next.push_back(d);
        }
      combos = std::move(next);
    }
    std::vector<std::vector<LayoutStep>> outs = o.output.empty() ? std::vector<std::vector<LayoutStep>>{{}} : o.output;
    for (const AnchorLayouts& c : combos)
      for (const std::vector<LayoutStep>& l : outs) {
        AnchorLayouts d = c;
        d.output = l;
        bool plain = d.output.empty();
        for (const auto& i : d.inputs) plain = plain && i.empty();
        if (std::find(out.begin(), out.end(), d) != out.end()) continue;
        if (plain) out.insert(out.begin(), d);
        else out.push_back(d);
      }
  }
  // Row-major is always a choice (the default schedules take it), first.
  AnchorLayouts plain;
  plain.inputs.assign(ctx.inputs.size(), {});
  if (!out.empty() && !(out.front() == plain)) out.insert(out.begin(), plain);
  if (out.size() == 1) out.clear();  // row-major alone is no choice
  return out;
}

int count_conversions(const Graph& g) {
  int n = 0;
  for (const Node& node : g.nodes())
    if (node.kind == Node::Kind::kOp && node.op == "layout_transform") ++n;
  return n;
}

}  // namespace loom::layouts
