// Checking constructors of statements, buffers, layouts and funcs.

#include "loom/core/status.hpp"
#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/stmt.hpp"

namespace loom {

namespace ir {

const char* memory_scope_name(MemoryScope s) {
  switch (s) {
    case MemoryScope::kGlobal: return "global";
    case MemoryScope::kShared: return "shared";
    case MemoryScope::kLocal: return "local";
  }
  return "?";
}

const char* for_kind_name(ForKind k) {
  switch (k) {
    case ForKind::kSerial: return "for";
    case ForKind::kParallel: return "parallel for";
    case ForKind::kVectorized: return "vectorized for";
    case ForKind::kUnrolled: return "unrolled for";
    case ForKind::kGpuBlock: return "gpu_block for";
    case ForKind::kGpuThread: return "gpu_thread for";
  }
  return "?";
}

Buffer Buffer::make(std::string name, DType dtype, std::vector<Expr> shape, MemoryScope scope) {
  return make(std::move(name), dtype, Layout::row_major(std::move(shape)), scope);
}

Buffer Buffer::make(std::string name, DType dtype, Layout layout, MemoryScope scope) {
  LOOM_CHECK(dtype.is_scalar(), "buffer ", name, " of vector dtype");
  LOOM_CHECK(layout.ok(), "buffer ", name, ": ", layout.status().message());
  auto n = std::make_shared<BufferNode>();
  n->name = std::move(name);
  n->dtype = dtype;
  n->shape = layout.shape();
  for (const Expr& e : n->shape)
    LOOM_CHECK(e.defined() && e.type() == DType::i64(), "buffer ", n->name, " extent not i64");
  n->layout = std::move(layout);
  n->scope = scope;
  return Buffer(std::move(n));
}

Stmt LetStmt::make(Var var, Expr value, Stmt body) {
  LOOM_CHECK(var.type() == value.type(), "LetStmt value type differs from its variable");
  return make_stmt<LetStmt>(std::move(var), std::move(value), std::move(body));
}

Stmt For::make(Var var, Expr min, Expr extent, ForKind kind, Stmt body, int gpu_axis) {
  LOOM_CHECK(var.defined() && var.type().is_int() && var.type().is_scalar(), "For variable");
  LOOM_CHECK(min.type() == var.type() && extent.type() == var.type(), "For bounds type of ",
             var.name());
  LOOM_CHECK(body.defined(), "For without body");
  LOOM_CHECK(gpu_axis >= 0 && gpu_axis < 3, "gpu axis");
  return make_stmt<For>(std::move(var), std::move(min), std::move(extent), kind, gpu_axis,
                        std::move(body));
}

Stmt Store::make(const Buffer& buffer, Expr value, std::vector<Expr> indices) {
  LOOM_CHECK(buffer.defined(), "Store to undefined buffer");
  LOOM_CHECK(value.type().element_of() == buffer.dtype(), "Store of ", value.type(), " into ",
             buffer.name(), " of ", buffer.dtype());
  for (const Expr& i : indices) {
    LOOM_CHECK(i.defined() && i.type().is_int(), "Store index not integer");
    LOOM_CHECK(i.type().lanes() == 1 || i.type().lanes() == value.type().lanes(),
               "Store index lanes");
  }
  return make_stmt<Store>(buffer.node(), std::move(value), std::move(indices));
}

Stmt Seq::make(std::vector<Stmt> stmts) {
  std::vector<Stmt> flat;
  for (Stmt& s : stmts) {
    if (!s.defined()) continue;
    if (auto* seq = s.as<Seq>()) {
      flat.insert(flat.end(), seq->stmts.begin(), seq->stmts.end());
    } else {
      flat.push_back(std::move(s));
    }
  }
  if (flat.size() == 1) return flat[0];
  return make_stmt<Seq>(std::move(flat));
}

Stmt IfThenElse::make(Expr cond, Stmt then_case, Stmt else_case) {
  LOOM_CHECK(cond.type() == DType::boolean(), "If condition of type ", cond.type());
  LOOM_CHECK(then_case.defined(), "If without then");
  return make_stmt<IfThenElse>(std::move(cond), std::move(then_case), std::move(else_case));
}

Stmt Allocate::make(const Buffer& buffer, Stmt body) {
  LOOM_CHECK(buffer.defined() && body.defined(), "Allocate");
  return make_stmt<Allocate>(buffer.node(), std::move(body));
}

Stmt Barrier::make() { return make_stmt<Barrier>(); }

Stmt Evaluate::make(Expr value) { return make_stmt<Evaluate>(std::move(value)); }

std::vector<Buffer> Func::buffer_params() const {
  std::vector<Buffer> out;
  for (const Param& p : params)
    if (auto* b = std::get_if<Buffer>(&p)) out.push_back(*b);
  return out;
}

std::vector<Var> Func::scalar_params() const {
  std::vector<Var> out;
  for (const Param& p : params)
    if (auto* v = std::get_if<Var>(&p)) out.push_back(*v);
  return out;
}

}  // namespace ir
}  // namespace loom
