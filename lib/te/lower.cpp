// Default lowering of a Task: one serial loop nest per compute tensor, intermediates allocated,
// each reduction an accumulator initialised, updated in a loop over its axes, then read.

#include "loom/te/lower.hpp"

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/visitor.hpp"

namespace loom::te {
namespace {

// Finds the first (outermost, leftmost) Reduce node of an expression.
const ir::Reduce* find_reduce(const ir::Expr& e, ir::Expr* handle) {
  const ir::Reduce* found = nullptr;
  ir::for_each_expr(e, [&](const ir::Expr& x) {
    if (!found && x.is<ir::Reduce>()) {
      found = x.as<ir::Reduce>();
      *handle = x;
    }
  });
  return found;
}

// Replaces one node (by identity) with another expression.
class ReplaceNode : public ir::IRMutator {
 public:
  ReplaceNode(const ir::Expr& from, ir::Expr to) : from_(from), to_(std::move(to)) {}
  using ir::IRMutator::mutate;
  ir::Expr mutate(const ir::Expr& e) override {
    return e.same_as(from_) ? to_ : ir::IRMutator::mutate(e);
  }

 private:
  ir::Expr from_, to_;
};

ir::Stmt loop_nest(const std::vector<ir::Var>& vars, const std::vector<ir::Expr>& extents,
                   ir::Stmt body) {
  for (int k = static_cast<int>(vars.size()) - 1; k >= 0; --k)
    body = ir::For::make(vars[k], ir::Expr(int64_t{0}), extents[k], ir::ForKind::kSerial, body);
  return body;
}

// Emits statements computing value and handing it to consume; every Reduce inside value
// becomes an accumulator loop that runs before consume.
ir::Stmt emit_value(const ir::Expr& value, const std::function<ir::Stmt(ir::Expr)>& consume,
                    int* counter) {
  ir::Expr handle;
  const ir::Reduce* r = find_reduce(value, &handle);
  if (!r) return consume(value);
  ir::Buffer acc = ir::Buffer::make("acc" + std::to_string((*counter)++), r->type.element_of(),
                                    {ir::Expr(int64_t{1})}, ir::MemoryScope::kLocal);
  ir::Expr zero = ir::Expr(int64_t{0});
  ir::Stmt update = emit_value(
      r->source,
      [&](ir::Expr src) {
        return ir::Store::make(acc, ir::Reduce::combine(r->reduce_kind, acc(zero), src), {zero});
      },
      counter);
  std::vector<ir::Var> vars;
  std::vector<ir::Expr> extents;
  for (const ir::IterVar& iv : r->axes) {
    vars.push_back(iv.var);
    extents.push_back(iv.extent);
  }
  ir::Stmt init = ir::Store::make(acc, ir::Reduce::identity(r->reduce_kind, r->type), {zero});
  ir::Expr rest_value = ReplaceNode(handle, acc(zero)).mutate(value);
  ir::Stmt rest = emit_value(rest_value, consume, counter);
  return ir::Allocate::make(acc, ir::Seq::make({init, loop_nest(vars, extents, update), rest}));
}

// The loops computing tensor t around point (which reads t's axes). A tensor stored in another
// layout is computed in its storage order, so that the innermost loop stores contiguously: the
// loops run over its physical dims, the axes are derived from them, and physical positions that
// hold no element (padding) are skipped.
ir::Stmt storage_order_nest(const Tensor& t, ir::Stmt point) {
  const Layout& layout = t->buffer.layout();
  if (layout.is_row_major() || !layout.ok() || !layout.is_injective())
    return loop_nest(t->axes, t.shape(), point);
  std::vector<ir::Var> physical;
  for (size_t k = 0; k < layout.physical_shape().size(); ++k)
    physical.push_back(ir::Var(t->name + "_p" + std::to_string(k)));
  std::vector<ir::Expr> logical =
      layout.logical_index(std::vector<ir::Expr>(physical.begin(), physical.end()));
  ir::Expr inside;
  for (size_t d = 0; d < logical.size(); ++d) {
    ir::Expr in_dim = logical[d] < t.shape()[d];
    inside = inside.defined() ? (inside && in_dim) : in_dim;
  }
  for (int d = static_cast<int>(t->axes.size()) - 1; d >= 0; --d)
    point = ir::LetStmt::make(t->axes[static_cast<size_t>(d)], logical[static_cast<size_t>(d)], point);
  if (inside.defined()) point = ir::IfThenElse::make(inside, point);
  return loop_nest(physical, layout.physical_shape(), point);
}

}  // namespace

ir::Func lower_default(const Task& task) {
  ir::Func f;
  f.name = task.name();
  for (const Tensor& t : task.inputs()) f.params.push_back(t->buffer);
  for (const Tensor& t : task.outputs()) f.params.push_back(t->buffer);
  for (const ir::Var& v : task.shape_vars()) f.params.push_back(v);

  int counter = 0;
  ir::Stmt body;
  const auto& computes = task.computes();
  for (auto it = computes.rbegin(); it != computes.rend(); ++it) {
    const Tensor& t = *it;
    std::vector<ir::Expr> index(t->axes.begin(), t->axes.end());
    ir::Stmt point = emit_value(
        t->body, [&](ir::Expr v) { return ir::Store::make(t->buffer, v, index); }, &counter);
    ir::Stmt nest = storage_order_nest(t, point);
    body = ir::Seq::make({nest, body});
    if (!task.is_output(t)) body = ir::Allocate::make(t->buffer, body);
  }
  f.body = body;
  return f;
}

}  // namespace loom::te
