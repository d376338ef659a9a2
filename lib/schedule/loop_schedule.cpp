// The loop-structure primitives of LoopSchedule: lookup, split, reorder, fuse, tile and the loop
// kinds (unroll, vectorize, parallel). compute_schedule.cpp holds the primitives that move work.

#include "loom/schedule/loop_schedule.hpp"

#include <algorithm>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/passes/passes.hpp"
#include "schedule/schedule_util.hpp"

namespace loom::schedule {

using namespace internal;  // NOLINT: this file is the helpers' one client besides compute

namespace {

constexpr int64_t kMaxUnroll = 1024;
constexpr int64_t kMaxLanes = 64;

absl::Status require_serial(const ir::For* op, const char* primitive) {
  if (op->for_kind == ir::ForKind::kSerial) return absl::OkStatus();
  return absl::FailedPreconditionError(str_cat(primitive, ": loop '", op->var.name(),
                                               "' is already a ", ir::for_kind_name(op->for_kind),
                                               " loop; restructure loops before marking them"));
}

// Buffers a loop reduces into: stored inside it at an index that does not depend on its variable
// (and not allocated inside it, where each iteration has its own copy).
std::vector<const ir::BufferNode*> reduction_targets(const ir::For* loop) {
  class Finder : public ir::IRVisitor {
   public:
    explicit Finder(const ir::VarNode* v) : var(v) {}
    const ir::VarNode* var;
    std::vector<const ir::BufferNode*> local, targets;

   protected:
    void visit_allocate(const ir::Allocate* op) override {
      local.push_back(op->buffer.get());
      ir::IRVisitor::visit_allocate(op);
    }
    void visit_store(const ir::Store* op) override {
      bool indexed = false;
      for (const ir::Expr& i : op->indices) indexed |= uses_var(i, var);
      const ir::BufferNode* b = op->buffer.get();
      if (!indexed && std::find(local.begin(), local.end(), b) == local.end() &&
          std::find(targets.begin(), targets.end(), b) == targets.end())
        targets.push_back(b);
      ir::IRVisitor::visit_store(op);
    }
  } finder(loop->var.node());
  finder.visit(loop->body);
  return finder.targets;
}

// Whether `outer`'s body touches `buf` anywhere but inside the loop `skip`.
bool accessed_outside(const ir::For* outer, const ir::For* skip, const ir::BufferNode* buf) {
  class Finder : public ir::IRVisitor {
   public:
    Finder(const ir::For* s, const ir::BufferNode* b) : skip(s), buf(b) {}
    const ir::For* skip;
    const ir::BufferNode* buf;
    bool found = false;

   protected:
    void visit_for(const ir::For* op) override {
      if (op != skip) ir::IRVisitor::visit_for(op);
    }
    void visit_store(const ir::Store* op) override {
      found |= op->buffer.get() == buf;
      ir::IRVisitor::visit_store(op);
    }
    void visit_load(const ir::Load* op) override {
      found |= op->buffer.get() == buf;
      ir::IRVisitor::visit_load(op);
    }
  } finder(skip, buf);
  finder.visit(outer->body);
  return finder.found;
}

std::vector<ir::Stmt> statements_of(const ir::Stmt& s) {
  if (auto* seq = s.as<ir::Seq>()) return seq->stmts;
  return {s};
}

// Rewrites the nest rooted at `loop` (chain[k], or a rebuilt copy of it) so chain[k..] is
// perfectly nested. A guard (split's if) between two chain loops sinks into the inner one; an
// enclosing loop whose body also holds split tails is distributed over them (each tail gets a
// copy of the loop). Returns a For over chain[k]'s variable, or a Seq of it and tail nests.
absl::StatusOr<ir::Stmt> make_perfect(const ir::For* loop, const std::vector<const ir::For*>& chain,
                                      size_t k, std::set<const ir::VarNode*>* tails) {
  if (k + 1 == chain.size()) return rebuild_for(loop, loop->body);
  const ir::VarNode* next = chain[k + 1]->var.node();
  std::vector<ir::Stmt> items = statements_of(loop->body);
  const ir::IfThenElse* guard = items.size() == 1 ? items[0].as<ir::IfThenElse>() : nullptr;
  if (guard && !guard->else_case.defined()) {
    // Sinking a condition into a loop is legal: loop bounds have no side effects.
    items.clear();
    for (const ir::Stmt& item : statements_of(guard->then_case)) {
      const ir::For* f = item.as<ir::For>();
      items.push_back(f ? rebuild_for(f, ir::IfThenElse::make(guard->cond, f->body))
                        : ir::IfThenElse::make(guard->cond, item));
    }
  }
  std::vector<ir::Stmt> flat;
  for (const ir::Stmt& item : items) {
    const ir::For* f = item.as<ir::For>();
    if (f && f->var.node() == next) {
      LOOM_ASSIGN_OR_RETURN(ir::Stmt inner, make_perfect(f, chain, k + 1, tails));
      for (const ir::Stmt& part : statements_of(inner)) flat.push_back(part);
    } else if (f && tails->count(f->var.node())) {
      flat.push_back(item);
    } else {
      return absl::FailedPreconditionError(
          str_cat("reorder: loops '", loop->var.name(), "' and '", chain[k + 1]->var.name(),
                  "' are not perfectly nested: other statements lie between them"));
    }
  }
  if (flat.size() == 1) return rebuild_for(loop, flat[0]);
  std::vector<ir::Stmt> out;
  for (const ir::Stmt& item : flat) {
    const ir::For* f = item.as<ir::For>();
    if (f->var.node() == next) {
      out.push_back(rebuild_for(loop, item));
      continue;
    }
    ir::Var copy(loop->var.name() + ".tail", loop->var.type());
    tails->insert(copy.node());
    out.push_back(ir::For::make(copy, loop->min, loop->extent, loop->for_kind,
                                substitute(item, {{loop->var.node(), copy}}), loop->gpu_axis));
  }
  return ir::Seq::make(std::move(out));
}

}  // namespace

absl::StatusOr<ir::Var> LoopSchedule::loop(const std::string& name) const {
  std::vector<ir::Var> hits;
  for (const LoopSite& site : collect_loops(func_.body))
    if (site.loop->var.name() == name) hits.push_back(site.loop->var);
  if (hits.empty())
    return absl::NotFoundError(str_cat("no loop named '", name, "' in func '", func_.name, "'"));
  if (hits.size() > 1)
    return absl::InvalidArgumentError(str_cat("loop name '", name, "' is ambiguous: ", hits.size(),
                                              " loops in func '", func_.name, "' are called that"));
  return hits[0];
}

absl::StatusOr<ir::Buffer> LoopSchedule::buffer(const std::string& name) const {
  std::vector<ir::Buffer> hits;
  auto add = [&](const ir::Buffer& b) {
    if (b.name() != name) return;
    for (const ir::Buffer& h : hits)
      if (h.same_as(b)) return;
    hits.push_back(b);
  };
  for (const ir::Buffer& b : func_.buffer_params()) add(b);
  class Allocations : public ir::IRVisitor {
   public:
    std::vector<ir::Buffer> found;

   protected:
    void visit_allocate(const ir::Allocate* op) override {
      found.emplace_back(op->buffer);
      ir::IRVisitor::visit_allocate(op);
    }
  } allocations;
  allocations.visit(func_.body);
  for (const ir::Buffer& b : allocations.found) add(b);
  if (hits.empty())
    return absl::NotFoundError(str_cat("no buffer named '", name, "' in func '", func_.name, "'"));
  if (hits.size() > 1)
    return absl::InvalidArgumentError(str_cat("buffer name '", name, "' is ambiguous"));
  return hits[0];
}

absl::StatusOr<SplitLoops> LoopSchedule::split(const ir::Var& loop, int64_t factor,
                                               TailStrategy tail) {
  LOOM_ASSIGN_OR_RETURN(LoopSite site, find_loop(func_, loop, "split"));
  const ir::For* op = site.loop;
  if (factor < 1)
    return absl::InvalidArgumentError(
        str_cat("split: factor of loop '", op->var.name(), "' must be at least 1, got ", factor));
  LOOM_RETURN_IF_ERROR(require_serial(op, "split"));
  const std::string& name = op->var.name();
  ir::Var outer(name + ".outer", op->var.type()), inner(name + ".inner", op->var.type());
  ir::Expr f(factor);
  std::optional<int64_t> extent = const_extent(op);
  bool divides = extent && *extent % factor == 0;
  bool tail_loop =
      !divides && (tail == TailStrategy::kLoop || (tail == TailStrategy::kAuto && extent));
  ir::Expr index = ir::simplify(op->min + outer * f + inner);
  ir::Stmt body = substitute(op->body, {{op->var.node(), index}});

  ir::Stmt result;
  bool was_tail = tail_loops_.count(op->var.node()) > 0;
  if (divides || tail_loop) {
    ir::Expr outer_extent = extent ? ir::Expr(*extent / factor) : ir::Expr(op->extent / f);
    ir::Stmt main =
        ir::For::make(outer, ir::Expr(int64_t{0}), outer_extent, ir::ForKind::kSerial,
                      ir::For::make(inner, ir::Expr(int64_t{0}), f, ir::ForKind::kSerial, body));
    result = main;
    if (tail_loop) {
      // The leftover iterations run once more after the main loops, on a renamed copy of the body.
      ir::Var rest(name + ".tail", op->var.type());
      ir::Expr rest_extent = extent ? ir::Expr(*extent % factor) : ir::Expr(op->extent % f);
      ir::Expr rest_index = ir::simplify(op->min + outer_extent * f + rest);
      ir::Stmt rest_body = copy_with_fresh_loops(op->body, {{op->var.node(), rest_index}}, ".tail");
      result = ir::Seq::make({main, ir::For::make(rest, ir::Expr(int64_t{0}), rest_extent,
                                                  ir::ForKind::kSerial, rest_body)});
      tail_loops_.insert(rest.node());
    }
  } else {
    ir::Expr outer_extent = ir::simplify((op->extent + (f - 1)) / f);
    ir::Stmt guarded = ir::IfThenElse::make(outer * f + inner < op->extent, body);
    result =
        ir::For::make(outer, ir::Expr(int64_t{0}), outer_extent, ir::ForKind::kSerial,
                      ir::For::make(inner, ir::Expr(int64_t{0}), f, ir::ForKind::kSerial, guarded));
  }
  if (was_tail) tail_loops_.insert(outer.node());
  StmtReplacer r;
  r.replace[op] = result;
  func_.body = r.mutate(func_.body);
  return SplitLoops{outer, inner};
}

absl::Status LoopSchedule::reorder(const std::vector<ir::Var>& order) {
  if (order.empty()) return absl::InvalidArgumentError("reorder: no loops given");
  std::vector<LoopSite> sites;
  for (const ir::Var& v : order) {
    LOOM_ASSIGN_OR_RETURN(LoopSite site, find_loop(func_, v, "reorder"));
    for (const LoopSite& s : sites)
      if (s.loop == site.loop)
        return absl::InvalidArgumentError(
            str_cat("reorder: loop '", v.name(), "' is listed twice"));
    sites.push_back(site);
  }
  if (sites.size() == 1) return absl::OkStatus();

  // The current nesting, outermost first: each loop must lie inside the previous one.
  std::vector<size_t> by_depth(sites.size());
  for (size_t i = 0; i < sites.size(); ++i) by_depth[i] = i;
  std::sort(by_depth.begin(), by_depth.end(), [&](size_t a, size_t b) {
    return sites[a].enclosing.size() < sites[b].enclosing.size();
  });
  std::vector<const ir::For*> chain;
  for (size_t k = 0; k < by_depth.size(); ++k) {
    const LoopSite& s = sites[by_depth[k]];
    if (k > 0) {
      const ir::For* parent = chain.back();
      if (std::find(s.enclosing.begin(), s.enclosing.end(), parent) == s.enclosing.end())
        return absl::FailedPreconditionError(str_cat("reorder: loop '", s.loop->var.name(),
                                                     "' is not nested inside loop '",
                                                     parent->var.name(), "'"));
    }
    chain.push_back(s.loop);
  }

  // A reduction loop may not move outside a loop that initialises or reads its accumulator.
  for (size_t a = 0; a < chain.size(); ++a) {
    for (size_t b = a + 1; b < chain.size(); ++b) {
      // by_depth[k] is where chain[k] goes in the new order.
      if (by_depth[b] > by_depth[a]) continue;
      for (const ir::BufferNode* acc : reduction_targets(chain[b])) {
        if (accessed_outside(chain[a], chain[b], acc))
          return absl::FailedPreconditionError(
              str_cat("reorder: reordering a reduction past its consumer: loop '",
                      chain[b]->var.name(), "' accumulates into '", acc->name, "', which loop '",
                      chain[a]->var.name(), "' initialises or reads outside it"));
      }
    }
  }

  for (const ir::For* f : chain) {
    if (f->for_kind == ir::ForKind::kVectorized && f->var.node() != order.back().node())
      return absl::FailedPreconditionError(
          str_cat("reorder: the vectorized loop '", f->var.name(), "' must stay innermost"));
  }

  std::set<const ir::VarNode*> tails = tail_loops_;
  LOOM_ASSIGN_OR_RETURN(ir::Stmt nest, make_perfect(chain[0], chain, 0, &tails));
  std::vector<ir::Stmt> items = statements_of(nest);
  for (ir::Stmt& item : items) {
    const ir::For* top = item.as<ir::For>();
    if (!top || top->var.node() != chain[0]->var.node()) continue;
    // Walk the now perfect chain, then rebuild it in the requested order.
    std::map<const ir::VarNode*, const ir::For*> levels;
    const ir::For* f = top;
    for (size_t k = 0; k < chain.size(); ++k) {
      levels[f->var.node()] = f;
      if (k + 1 < chain.size()) f = f->body.as<ir::For>();
    }
    ir::Stmt inner = f->body;
    for (const auto& entry : levels) {
      const ir::For* level = entry.second;
      for (const auto& other : levels) {
        if (uses_var(level->min, other.first) || uses_var(level->extent, other.first))
          return absl::FailedPreconditionError(str_cat("reorder: the bounds of loop '",
                                                       level->var.name(), "' depend on loop '",
                                                       other.first->name, "'"));
      }
    }
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      inner = rebuild_for(levels.at(it->node()), inner);
    item = inner;
  }
  if (tails.count(chain[0]->var.node())) tails.insert(order[0].node());
  StmtReplacer r;
  r.replace[chain[0]] = ir::Seq::make(std::move(items));
  func_.body = r.mutate(func_.body);
  tail_loops_ = std::move(tails);
  return absl::OkStatus();
}

absl::StatusOr<ir::Var> LoopSchedule::fuse(const ir::Var& outer, const ir::Var& inner) {
  LOOM_ASSIGN_OR_RETURN(LoopSite o, find_loop(func_, outer, "fuse"));
  LOOM_ASSIGN_OR_RETURN(LoopSite i, find_loop(func_, inner, "fuse"));
  if (o.loop->body.get() != i.loop)
    return absl::FailedPreconditionError(str_cat(
        "fuse: loop '", inner.name(), "' is not the whole body of loop '", outer.name(), "'"));
  LOOM_RETURN_IF_ERROR(require_serial(o.loop, "fuse"));
  LOOM_RETURN_IF_ERROR(require_serial(i.loop, "fuse"));
  if (uses_var(i.loop->min, o.loop->var.node()) || uses_var(i.loop->extent, o.loop->var.node()))
    return absl::FailedPreconditionError(str_cat("fuse: the bounds of loop '", inner.name(),
                                                 "' depend on loop '", outer.name(), "'"));
  ir::Var fused(outer.name() + "." + inner.name() + ".fused", outer.type());
  ir::Expr inner_extent = i.loop->extent;
  ir::Stmt body =
      substitute(i.loop->body, {{o.loop->var.node(), o.loop->min + fused / inner_extent},
                                {i.loop->var.node(), i.loop->min + fused % inner_extent}});
  ir::Expr extent = ir::simplify(o.loop->extent * inner_extent);
  StmtReplacer r;
  r.replace[o.loop] =
      ir::For::make(fused, ir::Expr(int64_t{0}), extent, ir::ForKind::kSerial, body);
  func_.body = r.mutate(func_.body);
  if (tail_loops_.count(o.loop->var.node())) tail_loops_.insert(fused.node());
  return fused;
}

absl::StatusOr<TileLoops> LoopSchedule::tile(const ir::Var& x, const ir::Var& y, int64_t fx,
                                             int64_t fy) {
  // All or nothing: a failed step restores the func.
  ir::Func saved = func_;
  std::set<const ir::VarNode*> saved_tails = tail_loops_;
  auto result = [&]() -> absl::StatusOr<TileLoops> {
    LOOM_ASSIGN_OR_RETURN(SplitLoops sx, split(x, fx));
    LOOM_ASSIGN_OR_RETURN(SplitLoops sy, split(y, fy));
    LOOM_RETURN_IF_ERROR(reorder({sx.outer, sy.outer, sx.inner, sy.inner}));
    return TileLoops{sx.outer, sy.outer, sx.inner, sy.inner};
  }();
  if (!result.ok()) {
    func_ = std::move(saved);
    tail_loops_ = std::move(saved_tails);
  }
  return result;
}

absl::Status LoopSchedule::unroll(const ir::Var& loop) {
  LOOM_ASSIGN_OR_RETURN(LoopSite site, find_loop(func_, loop, "unroll"));
  const ir::For* op = site.loop;
  if (op->for_kind == ir::ForKind::kUnrolled) return absl::OkStatus();
  LOOM_RETURN_IF_ERROR(require_serial(op, "unroll"));
  std::optional<int64_t> extent = const_extent(op);
  if (!extent)
    return absl::FailedPreconditionError(
        str_cat("unroll: loop '", loop.name(), "' has the symbolic extent ",
                ir::to_string(op->extent), "; unrolling needs a constant extent"));
  if (*extent > kMaxUnroll)
    return absl::FailedPreconditionError(str_cat("unroll: loop '", loop.name(), "' has ", *extent,
                                                 " iterations, more than ", kMaxUnroll));
  StmtReplacer r;
  r.replace[op] = rebuild_for(op, ir::ForKind::kUnrolled);
  func_.body = r.mutate(func_.body);
  return absl::OkStatus();
}

absl::Status LoopSchedule::vectorize(const ir::Var& loop) {
  LOOM_ASSIGN_OR_RETURN(LoopSite site, find_loop(func_, loop, "vectorize"));
  const ir::For* op = site.loop;
  if (op->for_kind == ir::ForKind::kVectorized) return absl::OkStatus();
  LOOM_RETURN_IF_ERROR(require_serial(op, "vectorize"));
  std::optional<int64_t> extent = const_extent(op);
  if (!extent || *extent < 1 || *extent > kMaxLanes)
    return absl::FailedPreconditionError(
        str_cat("vectorize: loop '", loop.name(), "' has extent ", ir::to_string(op->extent),
                "; vectorizing needs a constant extent between 1 and ", kMaxLanes));
  std::vector<LoopSite> inside = collect_loops(op->body);
  if (!inside.empty())
    return absl::FailedPreconditionError(str_cat("vectorize: loop '", loop.name(),
                                                 "' is not innermost: loop '",
                                                 inside[0].loop->var.name(), "' is inside it"));
  // The legality check is the pass itself, run on this loop alone.
  ir::Stmt marked = rebuild_for(op, ir::ForKind::kVectorized);
  ir::Func probe{func_.name, {}, marked};
  absl::StatusOr<ir::Func> vectorized = passes::vectorize_loops(probe);
  if (!vectorized.ok())
    return absl::FailedPreconditionError(str_cat("vectorize: ", vectorized.status().message()));
  StmtReplacer r;
  r.replace[op] = marked;
  func_.body = r.mutate(func_.body);
  return absl::OkStatus();
}

absl::Status LoopSchedule::parallel(const ir::Var& loop) {
  LOOM_ASSIGN_OR_RETURN(LoopSite site, find_loop(func_, loop, "parallel"));
  const ir::For* op = site.loop;
  if (op->for_kind == ir::ForKind::kParallel) return absl::OkStatus();
  LOOM_RETURN_IF_ERROR(require_serial(op, "parallel"));
  std::vector<const ir::BufferNode*> shared = reduction_targets(op);
  if (!shared.empty())
    return absl::FailedPreconditionError(str_cat("parallel: loop '", loop.name(),
                                                 "' is a reduction axis: every iteration "
                                                 "writes '",
                                                 shared[0]->name,
                                                 "' at the same index, so iterations would race"));
  for (const ir::For* outer : site.enclosing) {
    if (outer->for_kind == ir::ForKind::kVectorized)
      return absl::FailedPreconditionError(str_cat("parallel: loop '", loop.name(),
                                                   "' is inside the vectorized loop '",
                                                   outer->var.name(), "'"));
  }
  StmtReplacer r;
  r.replace[op] = rebuild_for(op, ir::ForKind::kParallel);
  func_.body = r.mutate(func_.body);
  return absl::OkStatus();
}

}  // namespace loom::schedule
