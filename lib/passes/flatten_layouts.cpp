// flatten_layouts: logical indices become physical offsets through each buffer's Layout.

#include "loom/core/status.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/passes/passes.hpp"

namespace loom::passes {
namespace {

class Flatten : public ir::IRMutator {
 protected:
  ir::Expr mutate_load(const ir::Load* op, const ir::Expr& e) override {
    bool changed = false;
    auto idx = mutate_list(op->indices, &changed);
    return ir::Load::make(ir::Buffer(op->buffer), {op->buffer->layout.offset(idx)});
  }
  ir::Stmt mutate_store(const ir::Store* op, const ir::Stmt& s) override {
    bool changed = false;
    ir::Expr v = mutate(op->value);
    auto idx = mutate_list(op->indices, &changed);
    return ir::Store::make(ir::Buffer(op->buffer), v, {op->buffer->layout.offset(idx)});
  }
};

}  // namespace

ir::Func flatten_layouts(const ir::Func& f) {
  ir::Func out = f;
  out.body = Flatten().mutate(f.body);
  return out;
}

}  // namespace loom::passes
