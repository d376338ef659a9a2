// bind_gpu_loops: the default GPU mapping of a kernel. Its one outermost parallel loop (marked by
// parallelize_outer_loops, which proves the iterations independent) goes one iteration per thread.

#include <algorithm>

#include "loom/ir/op.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/passes/passes.hpp"

namespace loom::passes {
namespace {

// Every parallel loop not bound to the GPU runs serially inside its thread.
class SerializeParallelLoops : public ir::IRMutator {
 public:
  using ir::IRMutator::mutate;

 protected:
  ir::Stmt mutate_for(const ir::For* op, const ir::Stmt& s) override {
    ir::Stmt body = mutate(op->body);
    if (op->for_kind != ir::ForKind::kParallel && body.same_as(op->body)) return s;
    ir::ForKind kind = op->for_kind == ir::ForKind::kParallel ? ir::ForKind::kSerial : op->for_kind;
    return ir::For::make(op->var, op->min, op->extent, kind, body, op->gpu_axis);
  }
};

// for i in [min, min + extent) -> blocks x threads, i = min + block * threads + thread.
ir::Stmt bind(const ir::For* op, int threads_per_block) {
  int64_t threads = threads_per_block;
  std::optional<int64_t> extent = ir::as_const_int(op->extent);
  if (extent) threads = std::min<int64_t>(threads, std::max<int64_t>(*extent, 1));
  ir::Expr blocks = extent ? ir::Expr((*extent + threads - 1) / threads)
                           : (op->extent + ir::Expr(threads - 1)) / ir::Expr(threads);
  ir::Var block(op->var.name() + "_block", op->var.type());
  ir::Var thread(op->var.name() + "_thread", op->var.type());
  ir::Expr flat = block * ir::Expr(threads) + thread;
  ir::Stmt body = SerializeParallelLoops().mutate(op->body);
  if (!extent || *extent % threads != 0)
    body = ir::IfThenElse::make(op->var < op->min + op->extent, body);
  body = ir::LetStmt::make(op->var, op->min + flat, body);
  body = ir::For::make(thread, ir::Expr(int64_t{0}), ir::Expr(threads), ir::ForKind::kGpuThread,
                       body, 0);
  return ir::For::make(block, ir::Expr(int64_t{0}), blocks, ir::ForKind::kGpuBlock, body, 0);
}

// Directly nested parallel loops of constant extents (for i { for j { body } }) as one parallel
// loop over their product, each variable recovered by division and remainder: more threads
// than the outer loop alone gives.
ir::Stmt collapse_nest(const ir::For* op) {
  std::vector<const ir::For*> chain = {op};
  while (true) {
    const auto* inner = chain.back()->body.as<ir::For>();
    if (!inner || inner->for_kind != ir::ForKind::kParallel || !ir::as_const_int(inner->extent) ||
        !ir::as_const_int(chain.back()->extent))
      break;
    chain.push_back(inner);
  }
  if (chain.size() == 1) return ir::Stmt();
  int64_t total = 1;
  for (const ir::For* l : chain) total *= *ir::as_const_int(l->extent);
  ir::Var flat(op->var.name() + "_nest", op->var.type());
  ir::Stmt body = chain.back()->body;
  int64_t stride = 1;
  for (size_t k = chain.size(); k-- > 0;) {
    const int64_t extent = *ir::as_const_int(chain[k]->extent);
    ir::Expr index = stride == 1 ? ir::Expr(flat) : flat / ir::Expr(stride);
    if (k > 0) index = index % ir::Expr(extent);
    body = ir::LetStmt::make(chain[k]->var, chain[k]->min + index, body);
    stride *= extent;
  }
  return ir::For::make(flat, ir::Expr(int64_t{0}), ir::Expr(total), ir::ForKind::kParallel, body);
}

// Rebuilds s with its single parallel loop (found through lets and one-iteration loops) bound.
ir::Stmt bind_outer(const ir::Stmt& s, int threads_per_block, bool* bound) {
  if (const auto* let = s.as<ir::LetStmt>()) {
    ir::Stmt body = bind_outer(let->body, threads_per_block, bound);
    return *bound ? ir::LetStmt::make(let->var, let->value, body) : s;
  }
  if (const auto* loop = s.as<ir::For>()) {
    if (loop->for_kind == ir::ForKind::kParallel) {
      *bound = true;
      if (ir::Stmt nest = collapse_nest(loop); nest.defined())
        return bind(nest.as<ir::For>(), threads_per_block);
      return bind(loop, threads_per_block);
    }
    if (loop->for_kind == ir::ForKind::kSerial && ir::is_const_int(loop->extent, 1)) {
      ir::Stmt body = bind_outer(loop->body, threads_per_block, bound);
      return *bound ? ir::For::make(loop->var, loop->min, loop->extent, loop->for_kind, body) : s;
    }
  }
  return s;
}

}  // namespace

ir::Func bind_gpu_loops(const ir::Func& f, int threads_per_block) {
  ir::Func out = f;
  bool bound = false;
  out.body = bind_outer(f.body, std::max(threads_per_block, 1), &bound);
  if (!bound) out.body = SerializeParallelLoops().mutate(f.body);
  return out;
}

}  // namespace loom::passes
