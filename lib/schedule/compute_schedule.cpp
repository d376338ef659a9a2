// The LoopSchedule primitives that move computation: compute_inline, compute_at (with
// rectangular region inference over affine indices) and cache_write (a local accumulator tile).

#include <algorithm>
#include <functional>
#include <set>

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/schedule/loop_schedule.hpp"
#include "schedule/schedule_util.hpp"

namespace loom::schedule {

using namespace internal;  // NOLINT: the helpers exist for this file and loop_schedule.cpp

namespace {

// The loop nest a default lowering emits for one tensor: loops over the store's index variables,
// perfectly nested, the innermost body computing one point (a reduction's accumulator included).
struct ProducerNest {
  const ir::Store* store = nullptr;
  std::vector<const ir::For*> loops;             // outermost first
  std::vector<int> dim_of_loop;                  // which index each loop runs over
  ir::Stmt point;                                // the innermost loop's body
  const ir::StmtNode* root = nullptr;            // the outermost loop
  std::vector<const ir::Allocate*> allocations;  // around the store, inside the buffer's own
};

absl::Status check_intermediate(const ir::Func& f, const ir::Buffer& buf, const char* primitive) {
  if (!buf.defined()) return absl::InvalidArgumentError(str_cat(primitive, ": undefined buffer"));
  if (is_param(f, buf.node().get()))
    return absl::FailedPreconditionError(
        str_cat(primitive, ": buffer '", buf.name(), "' is an input or output of func '", f.name,
                "'; only intermediates (allocated inside it) can be moved"));
  int n = count_allocations(f.body, buf.node().get());
  if (n != 1)
    return absl::NotFoundError(str_cat(primitive, ": buffer '", buf.name(), "' is allocated ", n,
                                       " times in func '", f.name, "'; expected once"));
  return absl::OkStatus();
}

absl::StatusOr<ProducerNest> find_producer(const ir::Func& f, const ir::Buffer& buf,
                                           const char* primitive) {
  std::vector<StoreSite> stores = collect_stores(f.body, buf.node().get());
  if (stores.size() != 1)
    return absl::FailedPreconditionError(str_cat(primitive, ": buffer '", buf.name(),
                                                 "' is written by ", stores.size(),
                                                 " stores; expected the one of its loop nest"));
  const StoreSite& site = stores[0];
  ProducerNest p;
  p.store = site.store;
  bool inside = false;
  for (const ir::Allocate* a : site.allocations) {
    if (inside) p.allocations.push_back(a);
    inside |= a->buffer.get() == buf.node().get();
  }
  auto transformed = [&] {
    return absl::FailedPreconditionError(
        str_cat(primitive, ": the loop nest computing '", buf.name(),
                "' is not its default one (one loop per index, perfectly nested); apply ",
                primitive, " before scheduling that nest"));
  };
  int rank = buf.rank();
  if (rank == 0)
    return absl::UnimplementedError(str_cat(primitive, ": buffer '", buf.name(),
                                            "' is a scalar (rank 0), which is not supported"));
  if (static_cast<int>(site.loops.size()) < rank) return transformed();
  p.loops.assign(site.loops.end() - rank, site.loops.end());
  for (int k = 0; k + 1 < rank; ++k)
    if (p.loops[k]->body.get() != p.loops[k + 1]) return transformed();
  std::set<int> dims;
  for (const ir::For* loop : p.loops) {
    int dim = -1;
    for (int d = 0; d < rank; ++d)
      if (p.store->indices[d].get() == loop->var.get()) dim = d;
    if (dim < 0 || !dims.insert(dim).second || !ir::is_const_int(loop->min, 0) ||
        !ir::can_prove(loop->extent == buf.shape()[dim]))
      return transformed();
    p.dim_of_loop.push_back(dim);
  }
  p.point = p.loops.back()->body;
  p.root = p.loops[0];
  return p;
}

// Whether e loads one of the buffers.
bool loads_any(const ir::Expr& e, const std::vector<const ir::Allocate*>& allocations) {
  bool found = false;
  ir::for_each_expr(e, [&](const ir::Expr& x) {
    if (auto* load = x.as<ir::Load>())
      for (const ir::Allocate* a : allocations) found |= load->buffer == a->buffer;
  });
  return found;
}

// Replaces loads of an inlined buffer by its defining expression and removes its nest and storage.
class Inliner : public StmtReplacer {
 public:
  Inliner(const ir::BufferNode* buf, const ProducerNest& p) : buf_(buf), p_(p) {
    replace[p.root] = ir::Stmt();
  }

 protected:
  ir::Expr mutate_load(const ir::Load* op, const ir::Expr& e) override {
    if (op->buffer.get() != buf_) return StmtReplacer::mutate_load(op, e);
    VarMap map;
    for (size_t k = 0; k < p_.loops.size(); ++k)
      map[p_.loops[k]->var.node()] = mutate(op->indices[p_.dim_of_loop[k]]);
    return substitute(p_.store->value, map);
  }
  ir::Stmt mutate_allocate(const ir::Allocate* op, const ir::Stmt& s) override {
    if (op->buffer.get() == buf_) return mutate(op->body);
    return StmtReplacer::mutate_allocate(op, s);
  }

 private:
  const ir::BufferNode* buf_;
  const ProducerNest& p_;
};

// index = rest + sum(coeff[v] * v) over the loop variables inside the compute_at loop.
struct Affine {
  std::map<const ir::VarNode*, int64_t> coeff;
  ir::Expr rest = ir::Expr(int64_t{0});
};

std::optional<Affine> linearize(const ir::Expr& e, const std::set<const ir::VarNode*>& inner) {
  bool varies = false;
  ir::for_each_expr(e, [&](const ir::Expr& x) {
    varies |= x.is<ir::VarNode>() && inner.count(x.as<ir::VarNode>());
  });
  if (!varies) return Affine{{}, e};
  if (auto* v = e.as<ir::VarNode>()) return Affine{{{v, 1}}, ir::Expr(int64_t{0})};
  auto scale = [](Affine a, int64_t c) {
    for (auto& [v, k] : a.coeff) k *= c;
    a.rest = a.rest * ir::Expr(c);
    return a;
  };
  if (e.is<ir::Add>() || e.is<ir::Sub>() || e.is<ir::Mul>()) {
    ir::BinaryView ops = ir::binary_operands(e);
    std::optional<Affine> a = linearize(*ops.a, inner), b = linearize(*ops.b, inner);
    if (!a || !b) return std::nullopt;
    if (e.is<ir::Mul>()) {
      std::optional<int64_t> ca =
          a->coeff.empty() ? ir::as_const_int(ir::simplify(a->rest)) : std::nullopt;
      std::optional<int64_t> cb =
          b->coeff.empty() ? ir::as_const_int(ir::simplify(b->rest)) : std::nullopt;
      if (ca) return scale(*b, *ca);
      if (cb) return scale(*a, *cb);
      return std::nullopt;
    }
    if (e.is<ir::Sub>()) b = scale(*b, -1);
    for (const auto& [v, k] : b->coeff) a->coeff[v] += k;
    a->rest = a->rest + b->rest;
    return a;
  }
  return std::nullopt;
}

// Reads of buf inside a statement, each a list of indices.
std::vector<std::vector<ir::Expr>> loads_of(const ir::Stmt& s, const ir::BufferNode* buf) {
  std::vector<std::vector<ir::Expr>> out;
  ir::for_each_expr(s, [&](const ir::Expr& x) {
    if (auto* load = x.as<ir::Load>(); load && load->buffer.get() == buf)
      out.push_back(load->indices);
  });
  return out;
}

// The bounds of every loop around the compute_at loop (and its own), for the simplifier.
ir::BoundsMap bounds_of_loops(const std::vector<const ir::For*>& loops) {
  ir::BoundsMap known;
  for (const ir::For* f : loops) {
    ir::Interval mn = ir::bounds_of(f->min, known), ext = ir::bounds_of(f->extent, known);
    ir::Interval range;
    range.min = mn.min;
    if (mn.max && ext.max) range.max = *mn.max + *ext.max - 1;
    known[f->var.node()] = range;
  }
  return known;
}

}  // namespace

absl::Status LoopSchedule::compute_inline(const ir::Buffer& buffer) {
  LOOM_RETURN_IF_ERROR(check_intermediate(func_, buffer, "compute_inline"));
  std::vector<StoreSite> stores = collect_stores(func_.body, buffer.node().get());
  // The reduction check comes first: a reduction's nest is never a plain injective one.
  for (const StoreSite& s : stores) {
    std::vector<const ir::Allocate*> local;
    bool inside = false;
    for (const ir::Allocate* a : s.allocations) {
      if (inside) local.push_back(a);
      inside |= a->buffer == buffer.node();
    }
    if (loads_any(s.store->value, local))
      return absl::FailedPreconditionError(
          str_cat("compute_inline: buffer '", buffer.name(),
                  "' is a reduction result; only injective computations can be inlined"));
  }
  LOOM_ASSIGN_OR_RETURN(ProducerNest p, find_producer(func_, buffer, "compute_inline"));
  if (p.point.get() != p.store)
    return absl::FailedPreconditionError(str_cat("compute_inline: the nest computing '",
                                                 buffer.name(), "' does more than store it"));
  Inliner inliner(buffer.node().get(), p);
  func_.body = inliner.mutate(func_.body);
  return absl::OkStatus();
}

absl::Status LoopSchedule::compute_at(const ir::Buffer& producer, const ir::Var& loop) {
  LOOM_RETURN_IF_ERROR(check_intermediate(func_, producer, "compute_at"));
  LOOM_ASSIGN_OR_RETURN(LoopSite site, find_loop(func_, loop, "compute_at"));
  LOOM_ASSIGN_OR_RETURN(ProducerNest p, find_producer(func_, producer, "compute_at"));
  const ir::For* at = site.loop;
  const ir::BufferNode* buf = producer.node().get();
  for (const ir::For* f : p.loops) {
    if (f == at ||
        std::find(site.enclosing.begin(), site.enclosing.end(), f) != site.enclosing.end())
      return absl::FailedPreconditionError(str_cat("compute_at: loop '", loop.name(),
                                                   "' is part of the nest computing '",
                                                   producer.name(), "'"));
  }
  if (at->for_kind == ir::ForKind::kVectorized)
    return absl::FailedPreconditionError(
        str_cat("compute_at: loop '", loop.name(), "' is vectorized and cannot hold a loop nest"));
  std::vector<std::vector<ir::Expr>> reads = loads_of(at->body, buf);
  if (reads.empty())
    return absl::FailedPreconditionError(
        str_cat("compute_at: loop '", loop.name(), "' does not read '", producer.name(), "'"));
  if (loads_of(func_.body, buf).size() != reads.size())
    return absl::FailedPreconditionError(
        str_cat("compute_at: buffer '", producer.name(), "' is also read outside loop '",
                loop.name(), "'; computing it there would leave those reads without values"));

  // Region: per dimension, the hull of every read index over the loops inside `at`.
  std::set<const ir::VarNode*> inner;
  std::map<const ir::VarNode*, const ir::For*> inner_loops;
  for (const LoopSite& s : collect_loops(at->body)) {
    inner.insert(s.loop->var.node());
    inner_loops[s.loop->var.node()] = s.loop;
  }
  int rank = producer.rank();
  std::vector<ir::Expr> lo(rank), hi(rank);
  for (const std::vector<ir::Expr>& index : reads) {
    for (int d = 0; d < rank; ++d) {
      std::optional<Affine> a = linearize(index[d], inner);
      auto cannot = [&] {
        return absl::FailedPreconditionError(str_cat("compute_at: cannot infer the region of '",
                                                     producer.name(), "' that loop '", loop.name(),
                                                     "' reads: index ", ir::to_string(index[d]),
                                                     " is not affine in the loops inside it"));
      };
      if (!a) return cannot();
      ir::Expr l = a->rest, h = a->rest;
      for (const auto& [v, c] : a->coeff) {
        if (c == 0) continue;
        const ir::For* f = inner_loops.at(v);
        for (const ir::VarNode* w : inner)
          if (uses_var(f->min, w) || uses_var(f->extent, w)) return cannot();
        ir::Expr first = f->min, last = f->min + f->extent - 1;
        l = l + ir::Expr(c) * (c > 0 ? first : last);
        h = h + ir::Expr(c) * (c > 0 ? last : first);
      }
      lo[d] = lo[d].defined() ? ir::min(lo[d], l) : l;
      hi[d] = hi[d].defined() ? ir::max(hi[d], h) : h;
    }
  }
  std::vector<const ir::For*> around = site.enclosing;
  around.push_back(at);
  ir::BoundsMap known = bounds_of_loops(around);
  VarMap shift;
  std::vector<ir::Expr> extent(rank);
  for (int d = 0; d < rank; ++d) {
    // Clamped to the buffer: guarded reads may name a hull larger than what is ever loaded.
    lo[d] = ir::simplify(ir::max(lo[d], ir::Expr(int64_t{0})), known);
    hi[d] = ir::simplify(ir::min(hi[d], producer.shape()[d] - 1), known);
    extent[d] = ir::simplify(hi[d] - lo[d] + 1, known);
  }
  for (size_t k = 0; k < p.loops.size(); ++k)
    shift[p.loops[k]->var.node()] = p.loops[k]->var + lo[p.dim_of_loop[k]];
  ir::Stmt nest = substitute(p.point, shift);
  for (size_t k = p.loops.size(); k-- > 0;) {
    const ir::For* f = p.loops[k];
    nest = ir::For::make(f->var, ir::Expr(int64_t{0}), extent[p.dim_of_loop[k]], f->for_kind, nest,
                         f->gpu_axis);
  }

  // The region gets its own storage inside `at`: each iteration owns it (so `at` may run in
  // parallel), sized by the region's largest extent when that is a constant.
  std::vector<ir::Expr> storage(rank);
  for (int d = 0; d < rank; ++d) {
    ir::Interval b = ir::bounds_of(extent[d], known);
    storage[d] = b.max ? ir::Expr(std::max<int64_t>(*b.max, 1)) : extent[d];
  }
  ir::Buffer region =
      ir::Buffer::make(producer.name(), producer.dtype(), storage, producer.scope());

  class Mover : public StmtReplacer {
   public:
    const ir::BufferNode* old_buffer;
    ir::Buffer region;
    std::vector<ir::Expr> lo;
    const ir::For* at;
    ir::Stmt nest;

   protected:
    std::vector<ir::Expr> shifted(const std::vector<ir::Expr>& index) {
      std::vector<ir::Expr> out;
      for (size_t d = 0; d < index.size(); ++d)
        out.push_back(ir::simplify(mutate(index[d]) - lo[d]));
      return out;
    }
    ir::Expr mutate_load(const ir::Load* op, const ir::Expr& e) override {
      if (op->buffer.get() != old_buffer) return StmtReplacer::mutate_load(op, e);
      return region.load(shifted(op->indices));
    }
    ir::Stmt mutate_store(const ir::Store* op, const ir::Stmt& s) override {
      if (op->buffer.get() != old_buffer) return StmtReplacer::mutate_store(op, s);
      return ir::Store::make(region, mutate(op->value), shifted(op->indices));
    }
    ir::Stmt mutate_allocate(const ir::Allocate* op, const ir::Stmt& s) override {
      if (op->buffer.get() == old_buffer) return mutate(op->body);
      return StmtReplacer::mutate_allocate(op, s);
    }
    ir::Stmt mutate_for(const ir::For* op, const ir::Stmt& s) override {
      if (op != at) return StmtReplacer::mutate_for(op, s);
      ir::Stmt body = ir::Seq::make({mutate(nest), mutate(op->body)});
      return rebuild_for(op, ir::Allocate::make(region, body));
    }
  } mover;
  mover.old_buffer = buf;
  mover.region = region;
  mover.lo = lo;
  mover.at = at;
  mover.nest = nest;
  mover.replace[p.root] = ir::Stmt();
  func_.body = mover.mutate(func_.body);
  return absl::OkStatus();
}

absl::StatusOr<ir::Buffer> LoopSchedule::cache_write(const ir::Buffer& buffer,
                                                     const ir::Var& loop) {
  if (!buffer.defined()) return absl::InvalidArgumentError("cache_write: undefined buffer");
  LOOM_ASSIGN_OR_RETURN(LoopSite site, find_loop(func_, loop, "cache_write"));
  const ir::For* at = site.loop;
  // Below `at`: perfectly nested spatial loops, then the accumulator of one reduction.
  std::vector<const ir::For*> spatial;
  ir::Stmt s = at->body;
  while (const ir::For* f = s.as<ir::For>()) {
    spatial.push_back(f);
    s = f->body;
  }
  auto no_reduction = [&] {
    return absl::FailedPreconditionError(
        str_cat("cache_write: no reduction into '", buffer.name(),
                "' lies directly under the loops "
                "inside loop '",
                loop.name(),
                "' (expected an accumulator, its update loops and the store "
                "of '",
                buffer.name(), "')"));
  };
  const ir::Allocate* acc = s.as<ir::Allocate>();
  const ir::Seq* seq = acc ? acc->body.as<ir::Seq>() : nullptr;
  if (!seq || seq->stmts.size() != 3) return no_reduction();
  const ir::Store* init = seq->stmts[0].as<ir::Store>();
  const ir::Store* consume = seq->stmts[2].as<ir::Store>();
  if (!init || init->buffer != acc->buffer || !consume) return no_reduction();
  if (consume->buffer != buffer.node())
    return absl::FailedPreconditionError(str_cat("cache_write: the reduction under loop '",
                                                 loop.name(), "' writes '", consume->buffer->name,
                                                 "', not '", buffer.name(), "'"));
  if (!collect_stores(seq->stmts[1], buffer.node().get()).empty()) return no_reduction();
  std::vector<ir::Expr> shape;
  for (const ir::For* f : spatial) {
    if (f->for_kind == ir::ForKind::kVectorized)
      return absl::FailedPreconditionError(
          str_cat("cache_write: loop '", f->var.name(),
                  "' is already vectorized; vectorize the tile's loops after cache_write"));
    for (const ir::For* g : spatial)
      if (uses_var(f->min, g->var.node()) || uses_var(f->extent, g->var.node()))
        return absl::FailedPreconditionError(str_cat("cache_write: the bounds of loop '",
                                                     f->var.name(), "' depend on loop '",
                                                     g->var.name(), "'"));
    shape.push_back(ir::simplify(f->extent));
  }
  if (shape.empty()) shape.push_back(ir::Expr(int64_t{1}));
  ir::Buffer local = ir::Buffer::make(buffer.name() + ".local", acc->buffer->dtype, shape,
                                      ir::MemoryScope::kLocal);

  // A copy of the spatial loops (fresh variables unless suffix is empty) around a body built
  // from the tile index of those variables.
  auto nest =
      [&](const std::string& suffix,
          const std::function<ir::Stmt(const VarMap&, const std::vector<ir::Expr>&)>& body) {
        VarMap map;
        std::vector<ir::Var> vars;
        std::vector<ir::Expr> tile;
        for (const ir::For* f : spatial) {
          ir::Var v = suffix.empty() ? f->var : ir::Var(f->var.name() + suffix, f->var.type());
          map[f->var.node()] = v;
          vars.push_back(v);
          tile.push_back(ir::simplify(v - f->min));
        }
        if (tile.empty()) tile.push_back(ir::Expr(int64_t{0}));
        ir::Stmt out = body(map, tile);
        for (size_t k = spatial.size(); k-- > 0;)
          out = ir::For::make(vars[k], spatial[k]->min, spatial[k]->extent, spatial[k]->for_kind,
                              out, spatial[k]->gpu_axis);
        return out;
      };
  // Accesses of the accumulator become accesses of the tile element of the current point.
  class ToTile : public ir::IRMutator {
   public:
    ToTile(const ir::BufferNode* acc, ir::Buffer local, std::vector<ir::Expr> tile, VarMap map)
        : acc_(acc), local_(std::move(local)), tile_(std::move(tile)), map_(std::move(map)) {}

   protected:
    ir::Expr mutate_var(const ir::VarNode* op, const ir::Expr& e) override {
      auto it = map_.find(op);
      return it == map_.end() ? e : it->second;
    }
    ir::Expr mutate_load(const ir::Load* op, const ir::Expr& e) override {
      if (op->buffer.get() != acc_) return ir::IRMutator::mutate_load(op, e);
      return local_.load(tile_);
    }
    ir::Stmt mutate_store(const ir::Store* op, const ir::Stmt& s) override {
      if (op->buffer.get() != acc_) return ir::IRMutator::mutate_store(op, s);
      return ir::Store::make(local_, mutate(op->value), tile_);
    }

   private:
    const ir::BufferNode* acc_;
    ir::Buffer local_;
    std::vector<ir::Expr> tile_;
    VarMap map_;
  };
  const ir::BufferNode* acc_node = acc->buffer.get();
  auto rewrite = [&](const ir::Stmt& st) {
    return [&, st](const VarMap& map, const std::vector<ir::Expr>& tile) {
      return ToTile(acc_node, local, tile, map).mutate(st);
    };
  };
  ir::Stmt tile_body = ir::Seq::make({
      nest(".init", rewrite(seq->stmts[0])),
      nest("", rewrite(seq->stmts[1])),
      nest(".write", rewrite(seq->stmts[2])),
  });
  StmtReplacer r;
  r.replace[at] = rebuild_for(at, ir::Allocate::make(local, tile_body));
  func_.body = r.mutate(func_.body);
  return local;
}

}  // namespace loom::schedule
