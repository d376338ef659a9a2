// parallelize_outer_loops: the outermost loop of each loop nest becomes a parallel loop when it
// has enough work and its iterations provably write disjoint elements.

#include <algorithm>
#include <map>
#include <set>

#include "loom/ir/op.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/passes/passes.hpp"

namespace loom::passes {
namespace {

// A symbolic extent (batch, sequence length) is unknown until run time; it counts as this many
// iterations, so that a nest over a few symbolic dims goes parallel.
constexpr int64_t kSymbolicExtentEstimate = 64;

// An estimate of the stores a statement executes (taking the smaller branch of an if),
// saturating.
int64_t work_of(const ir::Stmt& s) {
  constexpr int64_t kCap = int64_t{1} << 40;
  if (!s.defined()) return 0;
  switch (s.kind()) {
    case ir::StmtKind::kFor: {
      const auto* op = s.as<ir::For>();
      int64_t extent =
          std::max<int64_t>(ir::as_const_int(op->extent).value_or(kSymbolicExtentEstimate), 0);
      return std::min(kCap, extent * work_of(op->body));
    }
    case ir::StmtKind::kSeq: {
      int64_t total = 0;
      for (const ir::Stmt& c : s.as<ir::Seq>()->stmts) total = std::min(kCap, total + work_of(c));
      return total;
    }
    case ir::StmtKind::kIfThenElse: {
      const auto* op = s.as<ir::IfThenElse>();
      return std::min(work_of(op->then_case), work_of(op->else_case));
    }
    case ir::StmtKind::kLetStmt:
      return work_of(s.as<ir::LetStmt>()->body);
    case ir::StmtKind::kAllocate:
      return work_of(s.as<ir::Allocate>()->body);
    case ir::StmtKind::kStore:
    case ir::StmtKind::kEvaluate:
      return 1;
    case ir::StmtKind::kBarrier:
      return 0;
  }
  return 0;
}

// Whether the iterations of a loop over var write disjoint elements and read none that another
// iteration writes: every buffer the body stores to (other than its own allocations) is stored
// and loaded only at indices whose dim d is var itself, for one d per buffer.
class DisjointIterations : public ir::IRVisitor {
 public:
  explicit DisjointIterations(const ir::VarNode* var) : var_(var) {}

  bool check(const ir::Stmt& body) {
    visit(body);
    for (const ir::BufferNode* b : stored_) {
      if (allocated_.count(b)) continue;
      const std::vector<const std::vector<ir::Expr>*>& uses = accesses_[b];
      size_t rank = uses.front()->size();
      bool some_dim = false;
      for (size_t d = 0; d < rank && !some_dim; ++d)
        some_dim = std::all_of(uses.begin(), uses.end(), [&](const std::vector<ir::Expr>* idx) {
          return idx->size() == rank && (*idx)[d].get() == var_;
        });
      if (!some_dim) return false;
    }
    return true;
  }

 protected:
  void visit_load(const ir::Load* op) override {
    accesses_[op->buffer.get()].push_back(&op->indices);
    IRVisitor::visit_load(op);
  }
  void visit_store(const ir::Store* op) override {
    stored_.insert(op->buffer.get());
    accesses_[op->buffer.get()].push_back(&op->indices);
    IRVisitor::visit_store(op);
  }
  void visit_allocate(const ir::Allocate* op) override {
    allocated_.insert(op->buffer.get());
    IRVisitor::visit_allocate(op);
  }

 private:
  const ir::VarNode* var_;
  std::set<const ir::BufferNode*> stored_, allocated_;
  std::map<const ir::BufferNode*, std::vector<const std::vector<ir::Expr>*>> accesses_;
};

class ParallelizeOuterLoops : public ir::IRMutator {
 public:
  ParallelizeOuterLoops(int64_t min_work, bool nests) : min_work_(min_work), nests_(nests) {}

 protected:
  // Only outermost loops are considered; their bodies are left as they are (a nested parallel
  // loop would run serially anyway).
  ir::Stmt mutate_for(const ir::For* op, const ir::Stmt& s) override {
    if (op->for_kind != ir::ForKind::kSerial) return s;
    // A loop of one iteration shares nothing: look at the loop directly inside it instead.
    if (ir::is_const_int(op->extent, 1) && op->body.as<ir::For>()) {
      ir::Stmt inner = mutate_for(op->body.as<ir::For>(), op->body);
      if (inner.same_as(op->body)) return s;
      return ir::For::make(op->var, op->min, op->extent, op->for_kind, inner);
    }
    if (work_of(s) < min_work_ || !DisjointIterations(op->var.node()).check(op->body)) return s;
    ir::Stmt body = op->body;
    // A loop directly inside whose iterations are disjoint too (a GPU binds both).
    if (const auto* inner = body.as<ir::For>(); nests_ && inner) body = mutate_for(inner, body);
    return ir::For::make(op->var, op->min, op->extent, ir::ForKind::kParallel, body);
  }

 private:
  int64_t min_work_;
  bool nests_;
};

}  // namespace

ir::Func parallelize_outer_loops(const ir::Func& f, int64_t min_work) {
  ir::Func out = f;
  out.body = ParallelizeOuterLoops(min_work, false).mutate(f.body);
  return out;
}

ir::Func parallelize_loop_nests(const ir::Func& f, int64_t min_work) {
  ir::Func out = f;
  out.body = ParallelizeOuterLoops(min_work, true).mutate(f.body);
  return out;
}

}  // namespace loom::passes
