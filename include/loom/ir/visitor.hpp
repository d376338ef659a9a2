// IRVisitor walks the IR read-only; IRMutator rebuilds it, sharing untouched subtrees.
// Passes subclass one of them and override only the nodes they care about.
#pragma once

#include <functional>

#include "loom/ir/expr.hpp"
#include "loom/ir/stmt.hpp"

namespace loom::ir {

class IRVisitor {
 public:
  virtual ~IRVisitor() = default;
  virtual void visit(const Expr& e);
  virtual void visit(const Stmt& s);

 protected:
  virtual void visit_int_imm(const IntImm*) {}
  virtual void visit_float_imm(const FloatImm*) {}
  virtual void visit_var(const VarNode*) {}
  // All binary nodes (arithmetic, comparison, logic) come here; op->kind tells which.
  virtual void visit_binary(const ExprNode* op, const Expr& a, const Expr& b);
  virtual void visit_not(const Not* op);
  virtual void visit_select(const Select* op);
  virtual void visit_cast(const Cast* op);
  virtual void visit_load(const Load* op);
  virtual void visit_call(const Call* op);
  virtual void visit_ramp(const Ramp* op);
  virtual void visit_broadcast(const Broadcast* op);
  virtual void visit_let(const Let* op);
  virtual void visit_reduce(const Reduce* op);

  virtual void visit_let_stmt(const LetStmt* op);
  virtual void visit_for(const For* op);
  virtual void visit_store(const Store* op);
  virtual void visit_seq(const Seq* op);
  virtual void visit_if(const IfThenElse* op);
  virtual void visit_allocate(const Allocate* op);
  virtual void visit_barrier(const Barrier*) {}
  virtual void visit_evaluate(const Evaluate* op);
};

class IRMutator {
 public:
  virtual ~IRMutator() = default;
  virtual Expr mutate(const Expr& e);
  virtual Stmt mutate(const Stmt& s);

 protected:
  // Each gets the node and its handle e (returned unchanged when nothing changes).
  virtual Expr mutate_int_imm(const IntImm*, const Expr& e) { return e; }
  virtual Expr mutate_float_imm(const FloatImm*, const Expr& e) { return e; }
  virtual Expr mutate_var(const VarNode*, const Expr& e) { return e; }
  virtual Expr mutate_binary(const ExprNode* op, const Expr& e);
  virtual Expr mutate_not(const Not* op, const Expr& e);
  virtual Expr mutate_select(const Select* op, const Expr& e);
  virtual Expr mutate_cast(const Cast* op, const Expr& e);
  virtual Expr mutate_load(const Load* op, const Expr& e);
  virtual Expr mutate_call(const Call* op, const Expr& e);
  virtual Expr mutate_ramp(const Ramp* op, const Expr& e);
  virtual Expr mutate_broadcast(const Broadcast* op, const Expr& e);
  virtual Expr mutate_let(const Let* op, const Expr& e);
  virtual Expr mutate_reduce(const Reduce* op, const Expr& e);

  virtual Stmt mutate_let_stmt(const LetStmt* op, const Stmt& s);
  virtual Stmt mutate_for(const For* op, const Stmt& s);
  virtual Stmt mutate_store(const Store* op, const Stmt& s);
  virtual Stmt mutate_seq(const Seq* op, const Stmt& s);
  virtual Stmt mutate_if(const IfThenElse* op, const Stmt& s);
  virtual Stmt mutate_allocate(const Allocate* op, const Stmt& s);
  virtual Stmt mutate_barrier(const Barrier*, const Stmt& s) { return s; }
  virtual Stmt mutate_evaluate(const Evaluate* op, const Stmt& s);

  // Mutates every expression of a list; sets *changed if any differs.
  std::vector<Expr> mutate_list(const std::vector<Expr>& in, bool* changed);
};

// Calls f on every expression node (pre-order), including those inside statements.
void for_each_expr(const Expr& e, const std::function<void(const Expr&)>& f);
void for_each_expr(const Stmt& s, const std::function<void(const Expr&)>& f);

}  // namespace loom::ir
