// Private helpers of the loop primitives: loop and store lookup, substitution with fresh loop
// variables, and replacement of statements by node identity.

#include "schedule/schedule_util.hpp"

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/simplify.hpp"

namespace loom::schedule::internal {
namespace {

class LoopCollector : public ir::IRVisitor {
 public:
  std::vector<LoopSite> sites;

 protected:
  void visit_for(const ir::For* op) override {
    sites.push_back({op, stack_});
    stack_.push_back(op);
    ir::IRVisitor::visit_for(op);
    stack_.pop_back();
  }

 private:
  std::vector<const ir::For*> stack_;
};

class StoreCollector : public ir::IRVisitor {
 public:
  explicit StoreCollector(const ir::BufferNode* buf) : buf_(buf) {}
  std::vector<StoreSite> sites;

 protected:
  void visit_for(const ir::For* op) override {
    loops_.push_back(op);
    ir::IRVisitor::visit_for(op);
    loops_.pop_back();
  }
  void visit_allocate(const ir::Allocate* op) override {
    allocations_.push_back(op);
    ir::IRVisitor::visit_allocate(op);
    allocations_.pop_back();
  }
  void visit_store(const ir::Store* op) override {
    if (op->buffer.get() == buf_) sites.push_back({op, loops_, allocations_});
    ir::IRVisitor::visit_store(op);
  }

 private:
  const ir::BufferNode* buf_;
  std::vector<const ir::For*> loops_;
  std::vector<const ir::Allocate*> allocations_;
};

class Substituter : public ir::IRMutator {
 public:
  Substituter(VarMap map, std::string suffix) : map_(std::move(map)), suffix_(std::move(suffix)) {}
  using ir::IRMutator::mutate;

 protected:
  ir::Expr mutate_var(const ir::VarNode* op, const ir::Expr& e) override {
    auto it = map_.find(op);
    return it == map_.end() ? e : it->second;
  }
  ir::Stmt mutate_for(const ir::For* op, const ir::Stmt& s) override {
    if (suffix_.empty()) return ir::IRMutator::mutate_for(op, s);
    ir::Var fresh(op->var.name() + suffix_, op->var.type());
    map_[op->var.node()] = fresh;
    return ir::For::make(fresh, mutate(op->min), mutate(op->extent), op->for_kind, mutate(op->body),
                         op->gpu_axis);
  }

 private:
  VarMap map_;
  std::string suffix_;
};

}  // namespace

std::vector<LoopSite> collect_loops(const ir::Stmt& body) {
  LoopCollector c;
  c.visit(body);
  return std::move(c.sites);
}

absl::StatusOr<LoopSite> find_loop(const ir::Func& f, const ir::Var& var, const char* primitive) {
  if (!var.defined() || !var.is<ir::VarNode>())
    return absl::InvalidArgumentError(str_cat(primitive, ": undefined loop variable"));
  std::vector<LoopSite> hits;
  for (const LoopSite& site : collect_loops(f.body))
    if (site.loop->var.same_as(var)) hits.push_back(site);
  if (hits.empty())
    return absl::NotFoundError(
        str_cat(primitive, ": no loop over '", var.name(), "' in func '", f.name, "'"));
  if (hits.size() > 1)
    return absl::InvalidArgumentError(
        str_cat(primitive, ": the variable '", var.name(), "' belongs to ", hits.size(), " loops"));
  if (var.type() != DType::i64())
    return absl::InvalidArgumentError(str_cat(primitive, ": loop '", var.name(), "' runs over ",
                                              var.type(), "; schedules need i64 loops"));
  return hits[0];
}

bool uses_var(const ir::Expr& e, const ir::VarNode* var) {
  bool found = false;
  ir::for_each_expr(e, [&](const ir::Expr& x) { found |= x.get() == var; });
  return found;
}

bool uses_var(const ir::Stmt& s, const ir::VarNode* var) {
  bool found = false;
  ir::for_each_expr(s, [&](const ir::Expr& x) { found |= x.get() == var; });
  return found;
}

bool contains_loop(const ir::Stmt& s) {
  return !collect_loops(s).empty();
}

std::optional<int64_t> const_extent(const ir::For* loop) {
  return ir::as_const_int(ir::simplify(loop->extent));
}

ir::Expr substitute(const ir::Expr& e, const VarMap& map) {
  return Substituter(map, "").mutate(e);
}
ir::Stmt substitute(const ir::Stmt& s, const VarMap& map) {
  return Substituter(map, "").mutate(s);
}
ir::Stmt copy_with_fresh_loops(const ir::Stmt& s, const VarMap& map, const std::string& suffix) {
  return Substituter(map, suffix).mutate(s);
}

ir::Stmt rebuild_for(const ir::For* op, ir::Stmt body) {
  return ir::For::make(op->var, op->min, op->extent, op->for_kind, std::move(body), op->gpu_axis);
}
ir::Stmt rebuild_for(const ir::For* op, ir::ForKind kind) {
  return ir::For::make(op->var, op->min, op->extent, kind, op->body, op->gpu_axis);
}

ir::Stmt StmtReplacer::mutate(const ir::Stmt& s) {
  if (s.defined()) {
    auto it = replace.find(s.get());
    if (it != replace.end()) return it->second;
  }
  return ir::IRMutator::mutate(s);
}

ir::Stmt StmtReplacer::mutate_for(const ir::For* op, const ir::Stmt& s) {
  ir::Stmt body = mutate(op->body);
  if (!body.defined()) return ir::Stmt();
  return body.same_as(op->body) ? s : rebuild_for(op, body);
}

bool is_param(const ir::Func& f, const ir::BufferNode* buf) {
  for (const ir::Buffer& b : f.buffer_params())
    if (b.node().get() == buf) return true;
  return false;
}

int count_allocations(const ir::Stmt& body, const ir::BufferNode* buf) {
  class Counter : public ir::IRVisitor {
   public:
    explicit Counter(const ir::BufferNode* b) : buf(b) {}
    const ir::BufferNode* buf;
    int count = 0;

   protected:
    void visit_allocate(const ir::Allocate* op) override {
      count += op->buffer.get() == buf;
      ir::IRVisitor::visit_allocate(op);
    }
  } counter(buf);
  counter.visit(body);
  return counter.count;
}

std::vector<StoreSite> collect_stores(const ir::Stmt& body, const ir::BufferNode* buf) {
  StoreCollector c(buf);
  c.visit(body);
  return std::move(c.sites);
}

}  // namespace loom::schedule::internal
