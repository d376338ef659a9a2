// partition(): anchors absorb their bijective injective consumers (epilogue) and the injective
// producers only they read (prologue); the other injective operators form groups of their own.

#include "loom/graph/partition.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/structural.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/passes/passes.hpp"
#include "loom/te/inline.hpp"
#include "graph/fusion.hpp"
#include "graph/passes/rewrite.hpp"

namespace loom {
namespace {

const OpDef* op_def(const Node& n) {
  return n.kind == Node::Kind::kOp ? OpRegistry::global().find(n.op) : nullptr;
}

bool is_injective(const Node& n) {
  const OpDef* d = op_def(n);
  return d && d->injective;
}


bool is_one(const ir::Expr& e) { return ir::is_const_int(e, 1); }

ir::Expr strip_cast(const ir::Expr& e) {
  if (auto* c = e.as<ir::Cast>()) return strip_cast(c->value);
  return e;
}

}  // namespace

bool IndexLink::is_identity() const {
  if (reshape) return false;
  for (size_t k = 0; k < input_dim_of_axis.size(); ++k)
    if (input_dim_of_axis[k] != static_cast<int>(k) && input_dim_of_axis[k] != -1) return false;
  return true;
}

bool IndexLink::preserves_order() const {
  if (reshape) return true;
  int last = -1;
  for (int d : input_dim_of_axis) {
    if (d < 0) continue;
    if (d < last) return false;
    last = d;
  }
  return true;
}

std::optional<IndexLink> bijective_link(const Graph& g, int consumer, int producer) {
  const Node& c = g.nodes()[consumer];
  const OpDef* def = op_def(c);
  if (!def || !def->injective) return std::nullopt;
  if (def->reshape) {
    if (c.inputs.size() != 1) return std::nullopt;
    IndexLink link;
    link.reshape = true;
    return link;
  }
  fusion::DimVars dims;
  std::map<int, te::Tensor> placeholders;
  std::vector<te::Tensor> ins;
  for (int in : c.inputs) {
    auto it = placeholders.find(in);
    if (it == placeholders.end()) {
      const Node& n = g.nodes()[in];
      it = placeholders.emplace(in, te::placeholder(n.name, n.type.dtype, dims.shape(n.type.shape))).first;
    }
    ins.push_back(it->second);
  }
  auto found = placeholders.find(producer);
  if (found == placeholders.end()) return std::nullopt;
  const te::Tensor& p = found->second;
  te::Tensor out = def->compute(ins, *c.attrs, dims.shape(c.type.shape), c.name);
  std::vector<ir::Expr> axes(out->axes.begin(), out->axes.end());
  ir::Expr body = te::value_at(out, axes);
  // Every load of the producer must be at one index.
  std::vector<ir::Expr> index;
  bool consistent = true;
  ir::for_each_expr(body, [&](const ir::Expr& e) {
    auto* l = e.as<ir::Load>();
    if (!l || l->buffer != p->buffer.node()) return;
    if (index.empty()) {
      index = l->indices;
    } else {
      for (size_t d = 0; d < index.size(); ++d)
        consistent &= ir::structural_equal(index[d], l->indices[d]);
    }
  });
  if (!consistent || static_cast<int>(index.size()) != p.rank()) return std::nullopt;
  IndexLink link;
  link.input_dim_of_axis.assign(axes.size(), -1);
  for (int d = 0; d < p.rank(); ++d) {
    ir::Expr i = strip_cast(index[d]);
    if (ir::is_const_int(i, 0) && is_one(p.shape()[d])) continue;
    auto k = std::find_if(out->axes.begin(), out->axes.end(),
                          [&](const ir::Var& a) { return i.same_as(a); });
    if (k == out->axes.end()) return std::nullopt;
    size_t axis = static_cast<size_t>(k - out->axes.begin());
    if (link.input_dim_of_axis[axis] != -1 ||
        !ir::structural_equal(p.shape()[d], out.shape()[axis]))
      return std::nullopt;
    link.input_dim_of_axis[axis] = d;
  }
  // Every output element reads an input element: axes not read have extent 1.
  for (size_t k = 0; k < axes.size(); ++k)
    if (link.input_dim_of_axis[k] < 0 && !is_one(out.shape()[k])) return std::nullopt;
  return link;
}

std::optional<std::vector<ir::Expr>> forward_index(const IndexLink& link,
                                                   const std::vector<ir::Expr>& in,
                                                   const std::vector<ir::Expr>& in_shape,
                                                   const std::vector<ir::Expr>& out_shape) {
  if (link.reshape) return passes::reshape_index(in, in_shape, out_shape);
  std::vector<ir::Expr> out;
  for (int d : link.input_dim_of_axis)
    out.push_back(d < 0 ? ir::Expr(int64_t{0}) : in[static_cast<size_t>(d)]);
  return out;
}

std::vector<int> FusedGroup::prologue() const {
  std::vector<int> out;
  for (int n : nodes)
    if (anchor >= 0 && n < anchor) out.push_back(n);
  return out;
}

std::vector<int> FusedGroup::epilogue() const {
  std::vector<int> out;
  for (int n : nodes)
    if (anchor >= 0 && n > anchor) out.push_back(n);
  return out;
}

std::string FusedGroup::to_string(const Graph& g) const {
  auto names = [&](const std::vector<int>& ids) {
    std::string s;
    for (int n : ids) s += str_cat(s.empty() ? "" : ", ", g.nodes()[n].op, " '", g.nodes()[n].name, "'");
    return "[" + s + "]";
  };
  std::string s;
  if (anchor < 0) {
    s = "injective " + names(nodes);
  } else {
    std::vector<int> pro = prologue(), epi = epilogue();
    if (!pro.empty()) s += "prologue " + names(pro) + " + ";
    s += str_cat("anchor ", g.nodes()[anchor].op, " '", g.nodes()[anchor].name, "'");
    if (!epi.empty()) s += " + epilogue " + names(epi);
  }
  return s + " -> '" + g.nodes()[output].name + "'";
}

std::vector<FusedGroup> partition(const Graph& g, const PartitionOptions& options) {
  const std::vector<Node>& nodes = g.nodes();
  const int n = static_cast<int>(nodes.size());
  const passes::Uses uses(g);
  std::vector<std::vector<int>> consumers(static_cast<size_t>(n));
  for (int c = 0; c < n; ++c) {
    if (!uses.live[static_cast<size_t>(c)]) continue;
    for (int in : nodes[c].inputs) {
      auto& list = consumers[static_cast<size_t>(in)];
      if (std::find(list.begin(), list.end(), c) == list.end()) list.push_back(c);
    }
  }
  std::vector<bool> is_output(static_cast<size_t>(n), false);
  for (int o : g.outputs()) is_output[static_cast<size_t>(o)] = true;
  auto is_op = [&](int id) { return uses.live[static_cast<size_t>(id)] && nodes[id].kind == Node::Kind::kOp; };

  std::vector<int> owner(static_cast<size_t>(n), -1);
  std::vector<FusedGroup> groups;

  // Anchors and their epilogues.
  for (int a = 0; a < n; ++a) {
    if (!is_op(a) || is_injective(nodes[a])) continue;
    std::vector<int> members = {a};
    std::set<int> member_set = {a};
    std::map<int, bool> identity_path = {{a, true}};  // reached from the anchor by identities only
    std::vector<bool> downstream(static_cast<size_t>(n), false);
    downstream[static_cast<size_t>(a)] = true;
    for (int k = a + 1; k < n; ++k)
      for (int in : nodes[k].inputs) downstream[static_cast<size_t>(k)] = downstream[static_cast<size_t>(k)] || downstream[static_cast<size_t>(in)];
    for (bool added = options.fuse; added;) {
      added = false;
      std::set<int> candidates;
      for (int m : members)
        for (int c : consumers[static_cast<size_t>(m)])
          if (!member_set.count(c) && owner[static_cast<size_t>(c)] < 0) candidates.insert(c);
      for (int c : candidates) {
        if (!is_op(c) || !is_injective(nodes[c])) continue;
        std::vector<int> from_group;
        bool ok = true;
        for (int in : nodes[c].inputs) {
          if (member_set.count(in)) {
            if (std::find(from_group.begin(), from_group.end(), in) == from_group.end())
              from_group.push_back(in);
          } else if (downstream[static_cast<size_t>(in)]) {
            ok = false;  // it depends on the anchor through a node outside the group
          }
        }
        if (!ok) continue;
        bool identity = true;
        for (int p : from_group) {
          std::optional<IndexLink> link = bijective_link(g, c, p);
          if (!link) {
            ok = false;
            break;
          }
          identity = identity && identity_path[p] && link->is_identity();
        }
        // Several group inputs must all be read at the anchor's own index.
        if (!ok || (from_group.size() > 1 && !identity)) continue;
        identity_path[c] = identity;
        members.push_back(c);
        member_set.insert(c);
        added = true;
        break;
      }
    }
    // Only the last member may be read outside the group.
    for (;;) {
      int outside = 0;
      for (int m : members) {
        bool read_outside = is_output[static_cast<size_t>(m)];
        for (int c : consumers[static_cast<size_t>(m)]) read_outside |= !member_set.count(c);
        outside += read_outside;
      }
      if (outside <= 1) break;
      member_set.erase(members.back());
      members.pop_back();
    }
    FusedGroup grp;
    grp.anchor = a;
    grp.nodes = members;
    grp.output = members.back();
    for (int m : members) owner[static_cast<size_t>(m)] = static_cast<int>(groups.size());
    groups.push_back(std::move(grp));
  }

  // The other injective operators: each joins the group of its only consumer when it is not an
  // output (an injective group, or an anchor taking prologues), else ends a group of its own.
  for (int id = n - 1; id >= 0; --id) {
    if (!is_op(id) || owner[static_cast<size_t>(id)] >= 0) continue;
    const std::vector<int>& cs = consumers[static_cast<size_t>(id)];
    int joined = -1;
    if (options.fuse && !is_output[static_cast<size_t>(id)] && cs.size() == 1) {
      int c = cs[0];
      int grp = owner[static_cast<size_t>(c)];
      if (grp >= 0) {
        const FusedGroup& target = groups[static_cast<size_t>(grp)];
        // An anchor's template reads an input stored in another layout by its physical
        // offsets: the node computing it stays a kernel of its own.
        bool anchor_consumer =
            target.anchor == c && nodes[static_cast<size_t>(id)].type.layout.empty();
        bool injective_group = target.anchor < 0;
        bool prologue_chain = target.anchor >= 0 && c < target.anchor;
        if (injective_group || prologue_chain ||
            (anchor_consumer &&
             (!options.anchor_takes_prologue || options.anchor_takes_prologue(c))))
          joined = grp;
      }
    }
    if (joined < 0) {
      FusedGroup grp;
      grp.output = id;
      joined = static_cast<int>(groups.size());
      groups.push_back(std::move(grp));
    }
    owner[static_cast<size_t>(id)] = joined;
    groups[static_cast<size_t>(joined)].nodes.push_back(id);
  }

  for (FusedGroup& grp : groups) {
    std::sort(grp.nodes.begin(), grp.nodes.end());
    grp.inputs = fusion::outside_inputs(g, grp.nodes);
  }
  std::sort(groups.begin(), groups.end(),
            [](const FusedGroup& x, const FusedGroup& y) { return x.output < y.output; });
  return groups;
}

}  // namespace loom
