// unroll_loops: a kUnrolled loop of constant extent becomes one copy of its body per iteration,
// with the loop variable replaced by the iteration's value and each copy simplified.

#include <optional>

#include "loom/ir/op.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/passes/passes.hpp"

namespace loom::passes {
namespace {

class SubstituteVar : public ir::IRMutator {
 public:
  SubstituteVar(const ir::VarNode* var, ir::Expr value) : var_(var), value_(std::move(value)) {}

 protected:
  ir::Expr mutate_var(const ir::VarNode* op, const ir::Expr& e) override {
    return op == var_ ? value_ : e;
  }

 private:
  const ir::VarNode* var_;
  ir::Expr value_;
};

class Unroller : public ir::IRMutator {
 protected:
  ir::Stmt mutate_for(const ir::For* op, const ir::Stmt& s) override {
    ir::Stmt body = mutate(op->body);  // inner unrolled loops first
    std::optional<int64_t> extent = ir::as_const_int(ir::simplify(op->extent));
    if (op->for_kind != ir::ForKind::kUnrolled || !extent) {
      return body.same_as(op->body)
                 ? s
                 : ir::For::make(op->var, op->min, op->extent, op->for_kind, body, op->gpu_axis);
    }
    std::vector<ir::Stmt> copies;
    for (int64_t i = 0; i < *extent; ++i) {
      ir::Expr value = ir::simplify(op->min + ir::Expr(i));
      copies.push_back(ir::simplify(SubstituteVar(op->var.node(), value).mutate(body)));
    }
    // An empty Seq (extent 0) keeps the enclosing statement well formed.
    return ir::Seq::make(std::move(copies));
  }
};

}  // namespace

ir::Func unroll_loops(const ir::Func& f) {
  ir::Func out = f;
  out.body = Unroller().mutate(f.body);
  return out;
}

}  // namespace loom::passes
