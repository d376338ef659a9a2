// fuse_epilogue: a scheduled anchor kernel's output stores become stores of its epilogue's value
// (post-scheduling fusion); strip_final_marks removes the marks templates put on final stores.

#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/structural.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/passes/passes.hpp"

namespace loom::passes {
namespace {

// A loop over vector lanes made here, widened at once (templates may keep kVectorized loops of
// their own for LLVM, which must stay as they are). A body that does not widen (an index that
// loses the lane, in code a template guards away) runs lane by lane instead.
ir::Stmt widen_lanes(const ir::Stmt& loop) {
  ir::Func f;
  f.name = "lanes";
  f.body = loop;
  absl::StatusOr<ir::Func> v = vectorize_loops(f);
  if (v.ok()) return v->body;
  const auto* op = loop.as<ir::For>();
  return ir::For::make(op->var, op->min, op->extent, ir::ForKind::kSerial, op->body);
}

// The index of lane l of a vector access: each ramp becomes its lane's value, broadcasts their
// value; nullopt (with why) for other vector indices or another lane count.
std::optional<std::vector<ir::Expr>> lane_index(const std::vector<ir::Expr>& index, int lanes,
                                                const ir::Var& l, std::string* why) {
  std::vector<ir::Expr> out;
  for (const ir::Expr& i : index) {
    if (auto* r = i.as<ir::Ramp>()) {
      if (r->lanes != lanes) {
        *why = "an index has another lane count than the access";
        return std::nullopt;
      }
      out.push_back(r->base + ir::cast(r->base.type(), l) * r->stride);
    } else if (auto* b = i.as<ir::Broadcast>()) {
      out.push_back(b->value);
    } else if (i.type().is_vector()) {
      *why = "a vector index is neither a ramp nor a broadcast";
      return std::nullopt;
    } else {
      out.push_back(i);
    }
  }
  return out;
}

const ir::Call* final_mark(const ir::Expr& e) {
  const auto* c = e.as<ir::Call>();
  return c && c->name == "final_value" ? c : nullptr;
}

class EpilogueFuser : public ir::IRMutator {
 public:
  EpilogueFuser(const ir::Buffer& out, const EpilogueFusion& e, bool reads_output,
                ir::Buffer partial)
      : out_(out), e_(e), reads_output_(reads_output), partial_(std::move(partial)) {}
  const absl::Status& status() const { return status_; }

  using ir::IRMutator::mutate;

 protected:
  // Only a kernel that keeps partial results reads its output: they are in partial_.
  ir::Expr mutate_load(const ir::Load* op, const ir::Expr& e) override {
    if (op->buffer != out_.node()) return ir::IRMutator::mutate_load(op, e);
    bool changed = false;
    std::vector<ir::Expr> index = mutate_list(op->indices, &changed);
    return ir::Load::make(partial_, index);
  }

  ir::Stmt mutate_store(const ir::Store* op, const ir::Stmt& s) override {
    if (op->buffer != out_.node()) return ir::IRMutator::mutate_store(op, s);
    ir::Expr value = mutate(op->value);
    bool final = !reads_output_;
    if (const ir::Call* mark = final_mark(value)) {
      value = mark->args[0];
      final = true;
    }
    bool changed = false;
    std::vector<ir::Expr> index = mutate_list(op->indices, &changed);
    if (!final && partial_.defined()) return ir::Store::make(partial_, value, index);
    const int lanes = value.type().lanes();
    if (lanes == 1) {
      std::optional<std::vector<ir::Expr>> j = anchor_index(index);
      std::optional<std::vector<ir::Expr>> at = j ? e_.output_index(*j) : std::nullopt;
      if (!at) return fail(s, "a scalar output index could not be mapped");
      return ir::Store::make(e_.output, final ? e_.value(*at, value) : value, *at);
    }
    // A vector store: the lanes go through a local buffer and a loop over them, vectorized
    // afterwards (a contiguous store stays one, anything else becomes a scatter).
    ir::Buffer lanes_buf = ir::Buffer::make(out_.name() + "_lanes" + std::to_string(counter_++),
                                            value.type().element_of(), {ir::Expr(int64_t{lanes})},
                                            ir::MemoryScope::kLocal);
    ir::Var l("lane" + std::to_string(counter_));
    std::string why;
    std::optional<std::vector<ir::Expr>> scalar = lane_index(index, lanes, l, &why);
    if (!scalar) return fail(s, why);
    std::optional<std::vector<ir::Expr>> j = anchor_index(*scalar);
    std::optional<std::vector<ir::Expr>> at = j ? e_.output_index(*j) : std::nullopt;
    if (!at) return fail(s, "an output index could not be mapped");
    ir::Expr v = lanes_buf.load({l});
    ir::Stmt each = widen_lanes(
        ir::For::make(l, ir::Expr(int64_t{0}), ir::Expr(int64_t{lanes}), ir::ForKind::kVectorized,
                      ir::Store::make(e_.output, final ? e_.value(*at, v) : v, *at)));
    ir::Stmt fill = ir::Store::make(
        lanes_buf, value, {ir::Ramp::make(ir::Expr(int64_t{0}), ir::Expr(int64_t{1}), lanes)});
    ir::Stmt store = each;
    if (std::optional<ir::Stmt> fast = aligned_store(index, lanes, final, lanes_buf); fast) {
      const ir::Expr& base = index.back().as<ir::Ramp>()->base;
      store = ir::IfThenElse::make(base % ir::make_const(base.type(), lanes) == ir::make_zero(base.type()),
                                   *fast, each);
    }
    return ir::Allocate::make(lanes_buf, ir::Seq::make({fill, store}));
  }

 private:
  // When the vector runs along the last dim of the kernel's output, whose elements land along
  // the last dim of e.output in runs of `lanes` from aligned starts: an alignment test choosing
  // a contiguous store (the output index of the first lane, plus the lane) over the scatter.
  std::optional<ir::Stmt> aligned_store(const std::vector<ir::Expr>& index, int lanes, bool final,
                                        const ir::Buffer& lanes_buf) {
    if (!final || !e_.last_dim_contiguous || !e_.last_dim_contiguous(lanes)) return std::nullopt;
    const ir::Ramp* r = index.empty() ? nullptr : index.back().as<ir::Ramp>();
    if (!r || !ir::is_const_int(r->stride, 1)) return std::nullopt;
    for (size_t d = 0; d + 1 < index.size(); ++d)
      if (index[d].type().is_vector()) return std::nullopt;
    // The kernel's view and the anchor share the run: both last extents are multiples of it.
    std::optional<int64_t> view_last = ir::as_const_int(out_.shape().back());
    std::optional<int64_t> anchor_last = ir::as_const_int(e_.anchor_shape.back());
    if (!view_last || !anchor_last || *view_last % lanes || *anchor_last % lanes) return std::nullopt;
    std::vector<ir::Expr> first(index.begin(), index.end() - 1);
    first.push_back(r->base);
    std::optional<std::vector<ir::Expr>> j = anchor_index(first);
    std::optional<std::vector<ir::Expr>> at = j ? e_.output_index(*j) : std::nullopt;
    if (!at || at->empty()) return std::nullopt;
    ir::Var l("lane" + std::to_string(counter_++));
    std::vector<ir::Expr> at_lane = *at;
    at_lane.back() = at_lane.back() + ir::cast(at_lane.back().type(), l);
    return widen_lanes(ir::For::make(
        l, ir::Expr(int64_t{0}), ir::Expr(int64_t{lanes}), ir::ForKind::kVectorized,
        ir::Store::make(e_.output, e_.value(at_lane, lanes_buf.load({l})), at_lane)));
  }

  // The anchor's index of the kernel's output element at `index` (in the buffer's own shape).
  std::optional<std::vector<ir::Expr>> anchor_index(const std::vector<ir::Expr>& index) {
    return reshape_index(index, out_.shape(), e_.anchor_shape);
  }
  ir::Stmt fail(const ir::Stmt& s, const std::string& why) {
    if (status_.ok())
      status_ = absl::FailedPreconditionError(
          str_cat("output store ", ir::to_string(s), " cannot take the epilogue: ", why));
    return s;
  }

  const ir::Buffer& out_;
  const EpilogueFusion& e_;
  bool reads_output_;
  ir::Buffer partial_;  // the output in the kernel's own shape, for partial results
  int counter_ = 0;
  absl::Status status_;
};

class StripMarks : public ir::IRMutator {
 protected:
  ir::Expr mutate_call(const ir::Call* op, const ir::Expr& e) override {
    if (op->name == "final_value") return mutate(op->args[0]);
    return ir::IRMutator::mutate_call(op, e);
  }
};

}  // namespace

std::optional<std::vector<ir::Expr>> reshape_index(const std::vector<ir::Expr>& index,
                                                   const std::vector<ir::Expr>& from,
                                                   const std::vector<ir::Expr>& to) {
  std::vector<ir::Expr> out(to.size(), ir::Expr(int64_t{0}));
  int i = static_cast<int>(from.size()) - 1, j = static_cast<int>(to.size()) - 1;
  while (i >= 0 || j >= 0) {
    if (i >= 0 && ir::is_const_int(from[static_cast<size_t>(i)], 1)) {
      --i;
      continue;
    }
    if (j >= 0 && ir::is_const_int(to[static_cast<size_t>(j)], 1)) {
      --j;
      continue;
    }
    if (i < 0 || j < 0) return std::nullopt;  // element counts differ
    if (ir::structural_equal(from[static_cast<size_t>(i)], to[static_cast<size_t>(j)])) {
      out[static_cast<size_t>(j)] = index[static_cast<size_t>(i)];
      --i;
      --j;
      continue;
    }
    // A group of dims on each side with equal products (static), or the rest of both shapes.
    std::optional<int64_t> pf = ir::as_const_int(from[static_cast<size_t>(i)]);
    std::optional<int64_t> pt = ir::as_const_int(to[static_cast<size_t>(j)]);
    int i0 = i, j0 = j;
    if (pf && pt) {
      while (*pf != *pt) {
        if (*pf < *pt) {
          if (--i0 < 0) return std::nullopt;
          std::optional<int64_t> e = ir::as_const_int(from[static_cast<size_t>(i0)]);
          if (!e) return std::nullopt;
          *pf *= *e;
        } else {
          if (--j0 < 0) return std::nullopt;
          std::optional<int64_t> e = ir::as_const_int(to[static_cast<size_t>(j0)]);
          if (!e) return std::nullopt;
          *pt *= *e;
        }
      }
    } else {
      i0 = 0;
      j0 = 0;
    }
    // Vector indices in the group: the arithmetic runs on vectors (a gather or scatter later).
    int lanes = 1;
    for (int d = i0; d <= i; ++d) {
      int l = index[static_cast<size_t>(d)].type().lanes();
      if (l > 1 && lanes > 1 && l != lanes) return std::nullopt;
      lanes = std::max(lanes, l);
    }
    auto widen = [&](const ir::Expr& e) {
      return lanes > 1 && e.type().is_scalar() ? ir::Broadcast::make(e, lanes) : e;
    };
    ir::Expr flat = widen(ir::Expr(int64_t{0}));
    for (int d = i0; d <= i; ++d)
      flat = flat * widen(from[static_cast<size_t>(d)]) + widen(index[static_cast<size_t>(d)]);
    for (int d = j; d >= j0; --d) {
      ir::Expr extent = widen(to[static_cast<size_t>(d)]);
      out[static_cast<size_t>(d)] = d == j0 ? flat : flat % extent;
      flat = flat / extent;
    }
    i = i0 - 1;
    j = j0 - 1;
  }
  return out;
}

absl::StatusOr<ir::Func> fuse_epilogue(const ir::Func& kernel, const EpilogueFusion& e) {
  std::vector<ir::Buffer> buffers = kernel.buffer_params();
  if (buffers.empty()) return absl::InvalidArgumentError("kernel " + kernel.name + " has no output");
  const ir::Buffer out = buffers.back();
  bool reads_output = false, marked = false;
  ir::for_each_expr(kernel.body, [&](const ir::Expr& x) {
    if (auto* l = x.as<ir::Load>()) reads_output |= l->buffer == out.node();
  });
  class Marks : public ir::IRVisitor {
   public:
    const ir::BufferNode* out;
    bool found = false;

   protected:
    void visit_store(const ir::Store* op) override {
      found |= op->buffer.get() == out && final_mark(op->value) != nullptr;
      ir::IRVisitor::visit_store(op);
    }
  } marks;
  marks.out = out.node().get();
  marks.visit(kernel.body);
  marked = marks.found;
  if (reads_output && !marked)
    return absl::FailedPreconditionError(
        str_cat("kernel ", kernel.name, " reads its output '", out.name(),
                "' (partial results) and marks none of its stores final"));
  // Partial results stay at the kernel's own indices (dense vectors): in the output itself when
  // every element lands at its own position there (same dtype), else in scratch memory of the
  // kernel's own, as large as its output.
  ir::Buffer view, partial;
  if (e.flat_preserving) view = ir::Buffer::make(out.name() + "_partial", out.dtype(), out.layout());
  const bool in_place = e.flat_preserving && e.output.dtype() == out.dtype();
  if (reads_output)
    partial = in_place ? view : ir::Buffer::make(out.name() + "_partial", out.dtype(), out.shape());
  EpilogueFuser fuser(out, e, reads_output, partial);
  ir::Func f;
  f.name = kernel.name;
  f.body = fuser.mutate(kernel.body);
  LOOM_RETURN_IF_ERROR(fuser.status());
  if (partial.defined() && !in_place) f.body = ir::Allocate::make(partial, f.body);
  for (size_t i = 0; i + 1 < buffers.size(); ++i) f.params.push_back(buffers[i]);
  for (const ir::Buffer& b : e.inputs) f.params.push_back(b);
  if (view.defined()) {
    f.may_alias = {f.params.size(), f.params.size() + 1};
    f.params.push_back(view);
  }
  f.params.push_back(e.output);
  for (const ir::Var& v : kernel.scalar_params()) f.params.push_back(v);
  return f;
}

ir::Func strip_final_marks(const ir::Func& f) {
  StripMarks strip;
  ir::Func out = f;
  out.body = strip.mutate(f.body);
  return out;
}

}  // namespace loom::passes

// ---- prologues -----------------------------------------------------------------------------

namespace loom::passes {
namespace {

// Rewrites loads of one input. Vector loads met in a statement's own expressions are computed
// into local buffers by statements placed just before it.
class PrologueFuser : public ir::IRMutator {
 public:
  PrologueFuser(const ir::Buffer& in, const PrologueFusion& p) : in_(in), p_(p) {}
  const absl::Status& status() const { return status_; }

  using ir::IRMutator::mutate;

  ir::Stmt mutate(const ir::Stmt& s) override {
    if (!s.defined()) return s;
    // Seq, Allocate and For bodies are statements of their own; the rest evaluate expressions.
    bool own = s.kind() == ir::StmtKind::kStore || s.kind() == ir::StmtKind::kLetStmt ||
               s.kind() == ir::StmtKind::kIfThenElse || s.kind() == ir::StmtKind::kEvaluate ||
               s.kind() == ir::StmtKind::kFor;
    if (!own) return ir::IRMutator::mutate(s);
    std::vector<std::pair<ir::Buffer, ir::Stmt>> saved = std::move(pending_);
    pending_.clear();
    ir::Stmt out = ir::IRMutator::mutate(s);
    // Hoisted loads computed by this statement's own expressions (nested statements wrapped
    // theirs already): fills first, innermost allocation last.
    for (auto it = pending_.rbegin(); it != pending_.rend(); ++it)
      out = ir::Allocate::make(it->first, ir::Seq::make({it->second, out}));
    pending_ = std::move(saved);
    return out;
  }

 protected:
  ir::Expr mutate_load(const ir::Load* op, const ir::Expr& e) override {
    if (op->buffer != in_.node()) return ir::IRMutator::mutate_load(op, e);
    bool changed = false;
    std::vector<ir::Expr> index = mutate_list(op->indices, &changed);
    const int lanes = e.type().lanes();
    if (lanes == 1) {
      std::optional<std::vector<ir::Expr>> j = reshape_index(index, in_.shape(), p_.input_shape);
      if (!j) return fail(e, "its index could not be mapped");
      return p_.value(*j);
    }
    ir::Var l("lane" + std::to_string(counter_));
    std::string why;
    std::optional<std::vector<ir::Expr>> scalar = lane_index(index, lanes, l, &why);
    if (!scalar) return fail(e, why);
    std::optional<std::vector<ir::Expr>> j = reshape_index(*scalar, in_.shape(), p_.input_shape);
    if (!j) return fail(e, "its index could not be mapped");
    ir::Buffer lanes_buf = ir::Buffer::make(in_.name() + "_lanes" + std::to_string(counter_++),
                                            in_.dtype(), {ir::Expr(int64_t{lanes})},
                                            ir::MemoryScope::kLocal);
    pending_.emplace_back(lanes_buf, widen_lanes(ir::For::make(
                                         l, ir::Expr(int64_t{0}), ir::Expr(int64_t{lanes}),
                                         ir::ForKind::kVectorized,
                                         ir::Store::make(lanes_buf, p_.value(*j), {l}))));
    return lanes_buf.load({ir::Ramp::make(ir::Expr(int64_t{0}), ir::Expr(int64_t{1}), lanes)});
  }

  // A memory intrinsic reads its input by address (cp.async): there is no value to replace.
  ir::Expr mutate_call(const ir::Call* op, const ir::Expr& e) override {
    if (ir::Call::takes_addresses(op->name))
      for (const ir::Expr& a : op->args)
        if (const auto* l = a.as<ir::Load>(); l && l->buffer == in_.node())
          return fail(a, str_cat(op->name, " copies it by address"));
    return ir::IRMutator::mutate_call(op, e);
  }

  ir::Stmt mutate_store(const ir::Store* op, const ir::Stmt& s) override {
    if (op->buffer == in_.node() && status_.ok())
      status_ = absl::FailedPreconditionError(
          str_cat("the kernel writes its input '", in_.name(), "'"));
    return ir::IRMutator::mutate_store(op, s);
  }

 private:
  ir::Expr fail(const ir::Expr& e, const std::string& why) {
    if (status_.ok())
      status_ = absl::FailedPreconditionError(
          str_cat("input load ", ir::to_string(e), " cannot take the prologue: ", why));
    return e;
  }

  const ir::Buffer& in_;
  const PrologueFusion& p_;
  std::vector<std::pair<ir::Buffer, ir::Stmt>> pending_;
  int counter_ = 0;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<ir::Func> fuse_prologue(const ir::Func& kernel, const PrologueFusion& p) {
  size_t position = 0;
  int seen = -1;
  for (; position < kernel.params.size(); ++position)
    if (std::holds_alternative<ir::Buffer>(kernel.params[position]) && ++seen == p.input) break;
  if (position == kernel.params.size())
    return absl::InvalidArgumentError(str_cat("kernel ", kernel.name, " has no input ", p.input));
  const ir::Buffer in = std::get<ir::Buffer>(kernel.params[position]);
  PrologueFuser fuser(in, p);
  ir::Func f = kernel;
  f.body = fuser.mutate(kernel.body);
  LOOM_RETURN_IF_ERROR(fuser.status());
  f.params.erase(f.params.begin() + static_cast<std::ptrdiff_t>(position));
  f.params.insert(f.params.begin() + static_cast<std::ptrdiff_t>(position), p.inputs.begin(),
                  p.inputs.end());
  // Positions after the input move by the number of buffers it became.
  for (size_t& a : f.may_alias)
    if (a > position) a = a + p.inputs.size() - 1;
  return f;
}

}  // namespace loom::passes
