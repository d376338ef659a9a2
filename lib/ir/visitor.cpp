// Dispatch and default traversals of IRVisitor and IRMutator.

#include "loom/ir/visitor.hpp"

#include "loom/core/status.hpp"
#include "loom/ir/buffer.hpp"
#include "loom/ir/op.hpp"

namespace loom::ir {

void IRVisitor::visit(const Expr& e) {
  if (!e.defined()) return;
  switch (e.kind()) {
    case ExprKind::kIntImm: return visit_int_imm(e.as<IntImm>());
    case ExprKind::kFloatImm: return visit_float_imm(e.as<FloatImm>());
    case ExprKind::kVar: return visit_var(e.as<VarNode>());
    case ExprKind::kNot: return visit_not(e.as<Not>());
    case ExprKind::kSelect: return visit_select(e.as<Select>());
    case ExprKind::kCast: return visit_cast(e.as<Cast>());
    case ExprKind::kLoad: return visit_load(e.as<Load>());
    case ExprKind::kCall: return visit_call(e.as<Call>());
    case ExprKind::kRamp: return visit_ramp(e.as<Ramp>());
    case ExprKind::kBroadcast: return visit_broadcast(e.as<Broadcast>());
    case ExprKind::kLet: return visit_let(e.as<Let>());
    case ExprKind::kReduce: return visit_reduce(e.as<Reduce>());
    default: {
      BinaryView v = binary_operands(e);
      return visit_binary(e.get(), *v.a, *v.b);
    }
  }
}

void IRVisitor::visit(const Stmt& s) {
  if (!s.defined()) return;
  switch (s.kind()) {
    case StmtKind::kLetStmt: return visit_let_stmt(s.as<LetStmt>());
    case StmtKind::kFor: return visit_for(s.as<For>());
    case StmtKind::kStore: return visit_store(s.as<Store>());
    case StmtKind::kSeq: return visit_seq(s.as<Seq>());
    case StmtKind::kIfThenElse: return visit_if(s.as<IfThenElse>());
    case StmtKind::kAllocate: return visit_allocate(s.as<Allocate>());
    case StmtKind::kBarrier: return visit_barrier(s.as<Barrier>());
    case StmtKind::kEvaluate: return visit_evaluate(s.as<Evaluate>());
  }
}

void IRVisitor::visit_binary(const ExprNode*, const Expr& a, const Expr& b) {
  visit(a);
  visit(b);
}
void IRVisitor::visit_not(const Not* op) { visit(op->a); }
void IRVisitor::visit_select(const Select* op) {
  visit(op->cond);
  visit(op->true_value);
  visit(op->false_value);
}
void IRVisitor::visit_cast(const Cast* op) { visit(op->value); }
void IRVisitor::visit_load(const Load* op) {
  for (const Expr& i : op->indices) visit(i);
}
void IRVisitor::visit_call(const Call* op) {
  for (const Expr& a : op->args) visit(a);
}
void IRVisitor::visit_ramp(const Ramp* op) {
  visit(op->base);
  visit(op->stride);
}
void IRVisitor::visit_broadcast(const Broadcast* op) { visit(op->value); }
void IRVisitor::visit_let(const Let* op) {
  visit(op->value);
  visit(op->body);
}
void IRVisitor::visit_reduce(const Reduce* op) {
  for (const IterVar& iv : op->axes) visit(iv.extent);
  visit(op->source);
}
void IRVisitor::visit_let_stmt(const LetStmt* op) {
  visit(op->value);
  visit(op->body);
}
void IRVisitor::visit_for(const For* op) {
  visit(op->min);
  visit(op->extent);
  visit(op->body);
}
void IRVisitor::visit_store(const Store* op) {
  visit(op->value);
  for (const Expr& i : op->indices) visit(i);
}
void IRVisitor::visit_seq(const Seq* op) {
  for (const Stmt& s : op->stmts) visit(s);
}
void IRVisitor::visit_if(const IfThenElse* op) {
  visit(op->cond);
  visit(op->then_case);
  visit(op->else_case);
}
void IRVisitor::visit_allocate(const Allocate* op) { visit(op->body); }
void IRVisitor::visit_evaluate(const Evaluate* op) { visit(op->value); }

// ---- IRMutator ----------------------------------------------------------------------------

Expr IRMutator::mutate(const Expr& e) {
  if (!e.defined()) return e;
  switch (e.kind()) {
    case ExprKind::kIntImm: return mutate_int_imm(e.as<IntImm>(), e);
    case ExprKind::kFloatImm: return mutate_float_imm(e.as<FloatImm>(), e);
    case ExprKind::kVar: return mutate_var(e.as<VarNode>(), e);
    case ExprKind::kNot: return mutate_not(e.as<Not>(), e);
    case ExprKind::kSelect: return mutate_select(e.as<Select>(), e);
    case ExprKind::kCast: return mutate_cast(e.as<Cast>(), e);
    case ExprKind::kLoad: return mutate_load(e.as<Load>(), e);
    case ExprKind::kCall: return mutate_call(e.as<Call>(), e);
    case ExprKind::kRamp: return mutate_ramp(e.as<Ramp>(), e);
    case ExprKind::kBroadcast: return mutate_broadcast(e.as<Broadcast>(), e);
    case ExprKind::kLet: return mutate_let(e.as<Let>(), e);
    case ExprKind::kReduce: return mutate_reduce(e.as<Reduce>(), e);
    default: return mutate_binary(e.get(), e);
  }
}

Stmt IRMutator::mutate(const Stmt& s) {
  if (!s.defined()) return s;
  switch (s.kind()) {
    case StmtKind::kLetStmt: return mutate_let_stmt(s.as<LetStmt>(), s);
    case StmtKind::kFor: return mutate_for(s.as<For>(), s);
    case StmtKind::kStore: return mutate_store(s.as<Store>(), s);
    case StmtKind::kSeq: return mutate_seq(s.as<Seq>(), s);
    case StmtKind::kIfThenElse: return mutate_if(s.as<IfThenElse>(), s);
    case StmtKind::kAllocate: return mutate_allocate(s.as<Allocate>(), s);
    case StmtKind::kBarrier: return mutate_barrier(s.as<Barrier>(), s);
    case StmtKind::kEvaluate: return mutate_evaluate(s.as<Evaluate>(), s);
  }
  return s;
}

std::vector<Expr> IRMutator::mutate_list(const std::vector<Expr>& in, bool* changed) {
  std::vector<Expr> out;
  out.reserve(in.size());
  for (const Expr& e : in) {
    out.push_back(mutate(e));
    if (!out.back().same_as(e)) *changed = true;
  }
  return out;
}

Expr IRMutator::mutate_binary(const ExprNode* op, const Expr& e) {
  BinaryView v = binary_operands(e);
  Expr a = mutate(*v.a), b = mutate(*v.b);
  if (a.same_as(*v.a) && b.same_as(*v.b)) return e;
  return make_binary(op->kind, a, b);
}
Expr IRMutator::mutate_not(const Not* op, const Expr& e) {
  Expr a = mutate(op->a);
  return a.same_as(op->a) ? e : Not::make(a);
}
Expr IRMutator::mutate_select(const Select* op, const Expr& e) {
  Expr c = mutate(op->cond), t = mutate(op->true_value), f = mutate(op->false_value);
  if (c.same_as(op->cond) && t.same_as(op->true_value) && f.same_as(op->false_value)) return e;
  return Select::make(c, t, f);
}
Expr IRMutator::mutate_cast(const Cast* op, const Expr& e) {
  Expr v = mutate(op->value);
  return v.same_as(op->value) ? e : Cast::make(op->type, v);
}
Expr IRMutator::mutate_load(const Load* op, const Expr& e) {
  bool changed = false;
  auto idx = mutate_list(op->indices, &changed);
  return changed ? Load::make(Buffer(op->buffer), std::move(idx)) : e;
}
Expr IRMutator::mutate_call(const Call* op, const Expr& e) {
  bool changed = false;
  auto args = mutate_list(op->args, &changed);
  return changed ? Call::make(op->name, std::move(args)) : e;
}
Expr IRMutator::mutate_ramp(const Ramp* op, const Expr& e) {
  Expr b = mutate(op->base), s = mutate(op->stride);
  if (b.same_as(op->base) && s.same_as(op->stride)) return e;
  return Ramp::make(b, s, op->lanes);
}
Expr IRMutator::mutate_broadcast(const Broadcast* op, const Expr& e) {
  Expr v = mutate(op->value);
  return v.same_as(op->value) ? e : Broadcast::make(v, op->lanes);
}
Expr IRMutator::mutate_let(const Let* op, const Expr& e) {
  Expr v = mutate(op->value), b = mutate(op->body);
  if (v.same_as(op->value) && b.same_as(op->body)) return e;
  return Let::make(op->var, v, b);
}
Expr IRMutator::mutate_reduce(const Reduce* op, const Expr& e) {
  bool changed = false;
  std::vector<IterVar> axes;
  for (const IterVar& iv : op->axes) {
    Expr ext = mutate(iv.extent);
    changed |= !ext.same_as(iv.extent);
    axes.push_back({iv.var, ext});
  }
  Expr src = mutate(op->source);
  changed |= !src.same_as(op->source);
  return changed ? Reduce::make(op->reduce_kind, src, std::move(axes), op->type) : e;
}

Stmt IRMutator::mutate_let_stmt(const LetStmt* op, const Stmt& s) {
  Expr v = mutate(op->value);
  Stmt b = mutate(op->body);
  if (v.same_as(op->value) && b.same_as(op->body)) return s;
  return LetStmt::make(op->var, v, b);
}
Stmt IRMutator::mutate_for(const For* op, const Stmt& s) {
  Expr mn = mutate(op->min), ext = mutate(op->extent);
  Stmt b = mutate(op->body);
  if (mn.same_as(op->min) && ext.same_as(op->extent) && b.same_as(op->body)) return s;
  return For::make(op->var, mn, ext, op->for_kind, b, op->gpu_axis);
}
Stmt IRMutator::mutate_store(const Store* op, const Stmt& s) {
  Expr v = mutate(op->value);
  bool changed = !v.same_as(op->value);
  auto idx = mutate_list(op->indices, &changed);
  return changed ? Store::make(Buffer(op->buffer), v, std::move(idx)) : s;
}
Stmt IRMutator::mutate_seq(const Seq* op, const Stmt& s) {
  bool changed = false;
  std::vector<Stmt> out;
  for (const Stmt& st : op->stmts) {
    out.push_back(mutate(st));
    changed |= !out.back().same_as(st);
  }
  return changed ? Seq::make(std::move(out)) : s;
}
Stmt IRMutator::mutate_if(const IfThenElse* op, const Stmt& s) {
  Expr c = mutate(op->cond);
  Stmt t = mutate(op->then_case), f = mutate(op->else_case);
  if (c.same_as(op->cond) && t.same_as(op->then_case) && f.same_as(op->else_case)) return s;
  if (!t.defined()) return f.defined() ? IfThenElse::make(!c, f) : Stmt();
  return IfThenElse::make(c, t, f);
}
Stmt IRMutator::mutate_allocate(const Allocate* op, const Stmt& s) {
  Stmt b = mutate(op->body);
  if (b.same_as(op->body)) return s;
  return b.defined() ? Allocate::make(Buffer(op->buffer), b) : Stmt();
}
Stmt IRMutator::mutate_evaluate(const Evaluate* op, const Stmt& s) {
  Expr v = mutate(op->value);
  return v.same_as(op->value) ? s : Evaluate::make(v);
}

namespace {
class FunctionVisitor : public IRVisitor {
 public:
  explicit FunctionVisitor(const std::function<void(const Expr&)>& f) : f_(f) {}
  using IRVisitor::visit;
  void visit(const Expr& e) override {
    if (!e.defined()) return;
    f_(e);
    IRVisitor::visit(e);
  }

 private:
  const std::function<void(const Expr&)>& f_;
};
}  // namespace

void for_each_expr(const Expr& e, const std::function<void(const Expr&)>& f) {
  FunctionVisitor v(f);
  v.visit(e);
}

void for_each_expr(const Stmt& s, const std::function<void(const Expr&)>& f) {
  FunctionVisitor v(f);
  v.visit(s);
}

}  // namespace loom::ir
