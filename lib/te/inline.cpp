// Inlining of injective compute tensors into their consumers (value_at, inline_injective).

#include "loom/te/inline.hpp"

#include <map>

#include "loom/ir/visitor.hpp"

namespace loom::te {
namespace {

using Memo = std::map<const TensorNode*, Tensor>;

// Rewrites one tensor's body at an index. Loads of inlinable producers become their values;
// other loads stay, and with `stages` set, each stage is itself rewritten once (memo) and the
// load redirected to the rewritten stage.
class Inliner : public ir::IRMutator {
 public:
  Inliner(const Tensor& t, const std::vector<ir::Expr>& index,
          const std::set<const TensorNode*>& keep, const std::set<const TensorNode*>& anyway,
          Memo* stages, std::vector<Tensor>* reads)
      : keep_(keep), anyway_(anyway), stages_(stages), reads_(reads) {
    for (size_t k = 0; k < t->axes.size() && k < index.size(); ++k)
      axes_[t->axes[k].node()] = index[k];
    for (const Tensor& in : t->inputs) producers_[in->buffer.node().get()] = in;
  }

  using ir::IRMutator::mutate;

 protected:
  ir::Expr mutate_var(const ir::VarNode* op, const ir::Expr& e) override {
    auto it = axes_.find(op);
    return it == axes_.end() ? e : it->second;
  }
  ir::Expr mutate_load(const ir::Load* op, const ir::Expr& e) override {
    bool changed = false;
    std::vector<ir::Expr> index = mutate_list(op->indices, &changed);
    auto it = producers_.find(op->buffer.get());
    if (it == producers_.end()) return changed ? ir::Load::make(ir::Buffer(op->buffer), index) : e;
    const Tensor& p = it->second;
    const TensorNode* node = p.node().get();
    bool inlinable = !p.is_placeholder() && !keep_.count(node) &&
                     (anyway_.count(node) || !has_reduction(p));
    if (inlinable) {
      Inliner inner(p, index, keep_, anyway_, stages_, reads_);
      return inner.mutate(p->body);
    }
    Tensor target = p;
    if (stages_ && !p.is_placeholder()) {
      auto s = stages_->find(node);
      if (s == stages_->end()) s = stages_->emplace(node, rewrite(p, keep_, stages_)).first;
      target = s->second;
    }
    note_read(target);
    return ir::Load::make(target->buffer, index);
  }

 public:
  // p with its producers inlined, as a new compute tensor (stages rewritten through memo).
  static Tensor rewrite(const Tensor& p, const std::set<const TensorNode*>& keep, Memo* memo) {
    std::vector<Tensor> reads;
    std::vector<ir::Expr> axes(p->axes.begin(), p->axes.end());
    Inliner in(p, axes, keep, {}, memo, &reads);
    ir::Expr body = in.mutate(p->body);
    return compute_from(p.name(), p.shape(), p->axes, body, reads);
  }

 private:
  void note_read(const Tensor& t) {
    if (!reads_) return;
    for (const Tensor& r : *reads_)
      if (r.same_as(t)) return;
    reads_->push_back(t);
  }

  std::map<const ir::VarNode*, ir::Expr> axes_;
  std::map<const ir::BufferNode*, Tensor> producers_;
  std::set<const TensorNode*> keep_, anyway_;
  Memo* stages_;
  std::vector<Tensor>* reads_;
};

}  // namespace

bool has_reduction(const Tensor& t) {
  if (t.is_placeholder()) return false;
  bool found = false;
  ir::for_each_expr(t->body, [&](const ir::Expr& e) { found |= e.is<ir::Reduce>(); });
  return found;
}

ir::Expr value_at(const Tensor& t, const std::vector<ir::Expr>& index,
                  const std::set<const TensorNode*>& keep,
                  const std::set<const TensorNode*>& inline_anyway) {
  if (t.is_placeholder()) return t(index);
  Inliner in(t, index, keep, inline_anyway, nullptr, nullptr);
  return in.mutate(t->body);
}

Tensor inline_injective(const Tensor& t, const std::set<const TensorNode*>& keep) {
  if (t.is_placeholder()) return t;
  Memo memo;
  return Inliner::rewrite(t, keep, &memo);
}

Tensor compute_from(std::string name, std::vector<ir::Expr> shape, std::vector<ir::Var> axes,
                    ir::Expr body, const std::vector<Tensor>& reads) {
  auto n = std::make_shared<TensorNode>();
  n->name = std::move(name);
  n->shape = std::move(shape);
  n->axes = std::move(axes);
  n->body = std::move(body);
  n->dtype = n->body.type();
  n->buffer = ir::Buffer::make(n->name, n->dtype, n->shape);
  std::set<const ir::BufferNode*> loaded;
  ir::for_each_expr(n->body, [&](const ir::Expr& e) {
    if (auto* l = e.as<ir::Load>()) loaded.insert(l->buffer.get());
  });
  for (const Tensor& r : reads)
    if (loaded.count(r->buffer.node().get())) n->inputs.push_back(r);
  return Tensor(std::move(n));
}

}  // namespace loom::te
