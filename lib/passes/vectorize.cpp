// vectorize_loops: a kVectorized loop of extent L becomes straight-line code on L-lane vectors.
// The loop variable is a Ramp; lane-invariant scalars are broadcast where they meet vectors.

#include <map>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/passes/passes.hpp"

namespace loom::passes {
namespace {

// Identity-based equality of index expressions (variables and buffers by node), conservative:
// kinds it does not know compare unequal.
bool same_index(const ir::Expr& a, const ir::Expr& b) {
  if (a.same_as(b)) return true;
  if (a.kind() != b.kind() || a.type() != b.type()) return false;
  if (auto* x = a.as<ir::IntImm>()) return x->value == b.as<ir::IntImm>()->value;
  if (a.is<ir::VarNode>()) return false;  // distinct nodes are distinct variables
  if (ir::is_binary(a.kind())) {
    ir::BinaryView x = ir::binary_operands(a), y = ir::binary_operands(b);
    return same_index(*x.a, *y.a) && same_index(*x.b, *y.b);
  }
  if (auto* x = a.as<ir::Cast>()) return same_index(x->value, b.as<ir::Cast>()->value);
  return false;
}

bool same_indices(const std::vector<ir::Expr>& a, const std::vector<ir::Expr>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!same_index(a[i], b[i])) return false;
  return true;
}

// A buffer both stored and loaded in the loop body must be accessed at one index: otherwise an
// iteration could read what another lane writes (a loop-carried dependence).
absl::Status check_no_carried_dependence(const ir::For* loop) {
  ir::Stmt body = loop->body;
  absl::Status status;
  class Stores : public ir::IRVisitor {
   public:
    std::map<const ir::BufferNode*, std::vector<std::vector<ir::Expr>>> found;

   protected:
    void visit_store(const ir::Store* op) override {
      found[op->buffer.get()].push_back(op->indices);
      ir::IRVisitor::visit_store(op);
    }
  } stores;
  stores.visit(body);
  ir::for_each_expr(body, [&](const ir::Expr& e) {
    const auto* load = e.as<ir::Load>();
    if (!load || !status.ok()) return;
    auto it = stores.found.find(load->buffer.get());
    if (it == stores.found.end()) return;
    for (const auto& indices : it->second) {
      if (!same_indices(indices, load->indices))
        status = absl::InvalidArgumentError(
            str_cat("loop '", loop->var.name(), "' reads buffer '", load->buffer->name,
                    "' at another index than it writes it (", ir::to_string(e),
                    "): a dependence between iterations"));
    }
  });
  return status;
}

// Rewrites the body of one vectorized loop for `lanes` lanes.
class LaneWidener : public ir::IRMutator {
 public:
  LaneWidener(const ir::For* loop, int lanes) : loop_(loop), lanes_(lanes) {
    replace_[loop->var.node()] = ir::Ramp::make(loop->min, ir::make_one(loop->min.type()), lanes);
  }
  const absl::Status& status() const { return status_; }

  using ir::IRMutator::mutate;

 protected:
  ir::Expr widen(const ir::Expr& e) const {
    return e.type().is_scalar() ? ir::Broadcast::make(e, lanes_) : e;
  }
  bool is_vector(const ir::Expr& e) const { return e.type().is_vector(); }

  ir::Expr mutate_var(const ir::VarNode* op, const ir::Expr& e) override {
    auto it = replace_.find(op);
    return it == replace_.end() ? e : it->second;
  }
  ir::Expr mutate_binary(const ir::ExprNode* op, const ir::Expr& e) override {
    ir::BinaryView v = ir::binary_operands(e);
    ir::Expr a = mutate(*v.a), b = mutate(*v.b);
    if (a.same_as(*v.a) && b.same_as(*v.b)) return e;
    if (is_vector(a) || is_vector(b)) {
      a = widen(a);
      b = widen(b);
    }
    return ir::make_binary(op->kind, a, b);
  }
  ir::Expr mutate_select(const ir::Select* op, const ir::Expr& e) override {
    ir::Expr c = mutate(op->cond), t = mutate(op->true_value), f = mutate(op->false_value);
    if (is_vector(c) || is_vector(t) || is_vector(f)) {
      t = widen(t);
      f = widen(f);
    }
    return ir::Select::make(c, t, f);
  }
  ir::Expr mutate_cast(const ir::Cast* op, const ir::Expr& e) override {
    ir::Expr v = mutate(op->value);
    return ir::Cast::make(op->type.with_lanes(v.type().lanes()), v);
  }
  ir::Expr mutate_call(const ir::Call* op, const ir::Expr& e) override {
    bool changed = false;
    std::vector<ir::Expr> args = mutate_list(op->args, &changed);
    if (!changed) return e;
    bool any_vector = false;
    for (const ir::Expr& a : args) any_vector |= is_vector(a);
    if (any_vector)
      for (ir::Expr& a : args) a = widen(a);
    return ir::Call::make(op->name, std::move(args));
  }
  ir::Expr mutate_let(const ir::Let* op, const ir::Expr& e) override {
    // A lane-dependent binding is substituted into its body rather than given a vector variable.
    ir::Expr value = mutate(op->value);
    if (is_vector(value)) {
      replace_[op->var.node()] = value;
      return mutate(op->body);
    }
    ir::Expr body = mutate(op->body);
    return ir::Let::make(op->var, value, body);
  }
  ir::Expr mutate_ramp(const ir::Ramp*, const ir::Expr& e) override { return fail_expr(e); }
  ir::Expr mutate_broadcast(const ir::Broadcast*, const ir::Expr& e) override {
    return fail_expr(e);
  }
  ir::Expr mutate_reduce(const ir::Reduce*, const ir::Expr& e) override { return fail_expr(e); }

  ir::Stmt mutate_store(const ir::Store* op, const ir::Stmt& s) override {
    bool changed = false;
    std::vector<ir::Expr> indices = mutate_list(op->indices, &changed);
    ir::Expr value = mutate(op->value);
    bool lane_dependent = false;
    for (const ir::Expr& i : indices) lane_dependent |= is_vector(i);
    if (!lane_dependent) {
      fail(str_cat("the store to '", op->buffer->name, "' at an index that does not depend on '",
                   loop_->var.name(),
                   "' would combine all lanes into one location (a reduction "
                   "across lanes)"));
      return s;
    }
    return ir::Store::make(ir::Buffer(op->buffer), widen(value), std::move(indices));
  }
  ir::Stmt mutate_if(const ir::IfThenElse* op, const ir::Stmt& s) override {
    ir::Expr cond = mutate(op->cond);
    if (is_vector(cond)) {
      fail(str_cat("the condition ", ir::to_string(op->cond), " depends on '", loop_->var.name(),
                   "', so lanes would branch differently"));
      return s;
    }
    ir::Stmt then_case = mutate(op->then_case), else_case = mutate(op->else_case);
    return ir::IfThenElse::make(cond, then_case, else_case);
  }
  ir::Stmt mutate_let_stmt(const ir::LetStmt* op, const ir::Stmt& s) override {
    ir::Expr value = mutate(op->value);
    if (is_vector(value)) {
      replace_[op->var.node()] = value;
      return mutate(op->body);
    }
    return ir::LetStmt::make(op->var, value, mutate(op->body));
  }
  ir::Stmt mutate_for(const ir::For* op, const ir::Stmt& s) override {
    fail(str_cat("it contains the loop '", op->var.name(), "'; only innermost loops vectorize"));
    return s;
  }
  ir::Stmt mutate_allocate(const ir::Allocate* op, const ir::Stmt& s) override {
    fail(str_cat("it allocates buffer '", op->buffer->name, "' inside its body"));
    return s;
  }
  ir::Stmt mutate_barrier(const ir::Barrier*, const ir::Stmt& s) override {
    fail("it contains a barrier");
    return s;
  }

 private:
  ir::Expr fail_expr(const ir::Expr& e) {
    fail(str_cat("its body already holds vector or reduction expression ", ir::to_string(e)));
    return e;
  }
  void fail(const std::string& why) {
    if (status_.ok())
      status_ = absl::InvalidArgumentError(
          str_cat("cannot vectorize loop '", loop_->var.name(), "': ", why));
  }

  const ir::For* loop_;
  int lanes_;
  std::map<const ir::VarNode*, ir::Expr> replace_;
  absl::Status status_;
};

class Vectorizer : public ir::IRMutator {
 public:
  absl::Status status;

 protected:
  ir::Stmt mutate_for(const ir::For* op, const ir::Stmt& s) override {
    if (op->for_kind != ir::ForKind::kVectorized) return ir::IRMutator::mutate_for(op, s);
    std::optional<int64_t> lanes = ir::as_const_int(ir::simplify(op->extent));
    if (!lanes || *lanes < 1 || *lanes > kMaxLanes) {
      fail(absl::InvalidArgumentError(str_cat("cannot vectorize loop '", op->var.name(),
                                              "': its extent ", ir::to_string(op->extent),
                                              " is not a constant between 1 and ", kMaxLanes)));
      return s;
    }
    if (*lanes == 1) {  // one lane: the loop runs once at its minimum
      return ir::LetStmt::make(op->var, op->min, op->body);
    }
    if (absl::Status dep = check_no_carried_dependence(op); !dep.ok()) {
      fail(absl::InvalidArgumentError(str_cat("cannot vectorize: ", dep.message())));
      return s;
    }
    LaneWidener widener(op, static_cast<int>(*lanes));
    ir::Stmt out = widener.mutate(op->body);
    if (!widener.status().ok()) {
      fail(widener.status());
      return s;
    }
    return out;
  }

 private:
  static constexpr int64_t kMaxLanes = 64;
  void fail(absl::Status s) {
    if (status.ok()) status = std::move(s);
  }
};

}  // namespace

absl::StatusOr<ir::Func> vectorize_loops(const ir::Func& f) {
  Vectorizer v;
  ir::Func out = f;
  out.body = v.mutate(f.body);
  if (!v.status.ok()) return v.status;
  return out;
}

}  // namespace loom::passes
