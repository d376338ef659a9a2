// Structural hash and equality: the IR is serialised into a token stream in which variables and
// buffers are numbered by first appearance, so names do not matter but sharing does.

#include "loom/ir/structural.hpp"

#include <cstring>
#include <map>

#include "loom/core/hash.hpp"
#include "loom/ir/visitor.hpp"

namespace loom::ir {
namespace {

class Serializer : public IRVisitor {
 public:
  using IRVisitor::visit;
  std::vector<uint64_t> tokens;

  void tok(uint64_t t) { tokens.push_back(t); }
  void type(DType t) { tok((static_cast<uint64_t>(t.code()) << 32) | static_cast<uint32_t>(t.lanes())); }

  void var(const VarNode* v) {
    auto [it, inserted] = vars_.emplace(v, vars_.size());
    tok(0x5641520000000000ULL | it->second);
    if (inserted) type(v->type);
  }
  void buffer(const BufferNode* b) {
    auto [it, inserted] = buffers_.emplace(b, buffers_.size());
    tok(0x4255460000000000ULL | it->second);
    if (inserted) {
      type(b->dtype);
      tok(static_cast<uint64_t>(b->scope));
      tok(b->shape.size());
      for (const Expr& e : b->shape) visit(e);
      tok(b->layout.is_row_major());
      for (const Expr& e : b->layout.strides()) visit(e);
      for (const LayoutStep& s : b->layout.steps()) {
        tok(static_cast<uint64_t>(s.kind));
        tok(static_cast<uint64_t>(s.dim));
        tok(static_cast<uint64_t>(s.a));
        tok(static_cast<uint64_t>(s.b));
        for (int p : s.perm) tok(static_cast<uint64_t>(p));
      }
    }
  }

  void visit(const Expr& e) override {
    if (!e.defined()) {
      tok(0xDEAD);
      return;
    }
    tok(0x4558500000000000ULL | static_cast<uint64_t>(e.kind()));
    type(e.type());
    IRVisitor::visit(e);
  }
  void visit(const Stmt& s) override {
    if (!s.defined()) {
      tok(0xDEAD);
      return;
    }
    tok(0x53544D0000000000ULL | static_cast<uint64_t>(s.kind()));
    IRVisitor::visit(s);
  }

 protected:
  void visit_int_imm(const IntImm* op) override { tok(static_cast<uint64_t>(op->value)); }
  void visit_float_imm(const FloatImm* op) override {
    uint64_t bits;
    std::memcpy(&bits, &op->value, sizeof(bits));
    tok(bits);
  }
  void visit_var(const VarNode* op) override { var(op); }
  void visit_load(const Load* op) override {
    buffer(op->buffer.get());
    tok(op->indices.size());
    IRVisitor::visit_load(op);
  }
  void visit_call(const Call* op) override {
    tok(stable_hash(op->name));
    tok(op->args.size());
    IRVisitor::visit_call(op);
  }
  void visit_ramp(const Ramp* op) override {
    tok(op->lanes);
    IRVisitor::visit_ramp(op);
  }
  void visit_broadcast(const Broadcast* op) override {
    tok(op->lanes);
    IRVisitor::visit_broadcast(op);
  }
  void visit_let(const Let* op) override {
    var(op->var.node());
    IRVisitor::visit_let(op);
  }
  void visit_reduce(const Reduce* op) override {
    tok(static_cast<uint64_t>(op->reduce_kind));
    tok(op->axes.size());
    for (const IterVar& iv : op->axes) var(iv.var.node());
    IRVisitor::visit_reduce(op);
  }
  void visit_let_stmt(const LetStmt* op) override {
    var(op->var.node());
    IRVisitor::visit_let_stmt(op);
  }
  void visit_for(const For* op) override {
    var(op->var.node());
    tok(static_cast<uint64_t>(op->for_kind));
    tok(op->gpu_axis);
    IRVisitor::visit_for(op);
  }
  void visit_store(const Store* op) override {
    buffer(op->buffer.get());
    tok(op->indices.size());
    IRVisitor::visit_store(op);
  }
  void visit_seq(const Seq* op) override {
    tok(op->stmts.size());
    IRVisitor::visit_seq(op);
  }
  void visit_allocate(const Allocate* op) override {
    buffer(op->buffer.get());
    IRVisitor::visit_allocate(op);
  }

 private:
  std::map<const VarNode*, uint64_t> vars_;
  std::map<const BufferNode*, uint64_t> buffers_;
};

uint64_t digest(const std::vector<uint64_t>& tokens) {
  StableHasher h;
  h.bytes(tokens.data(), tokens.size() * sizeof(uint64_t));
  return h.digest();
}

std::vector<uint64_t> serialize(const Func& f) {
  Serializer s;
  s.tok(f.params.size());
  for (const Param& p : f.params) {
    if (auto* b = std::get_if<Buffer>(&p)) {
      s.buffer(b->node().get());
    } else {
      s.var(std::get<Var>(p).node());
    }
  }
  s.visit(f.body);
  s.tok(f.may_alias.size());
  for (size_t a : f.may_alias) s.tok(a);
  return std::move(s.tokens);
}

template <typename T>
std::vector<uint64_t> serialize(const T& x) {
  Serializer s;
  s.visit(x);
  return std::move(s.tokens);
}

}  // namespace

uint64_t structural_hash(const Expr& e) { return digest(serialize(e)); }
uint64_t structural_hash(const Stmt& s) { return digest(serialize(s)); }
uint64_t structural_hash(const Func& f) { return digest(serialize(f)); }

bool structural_equal(const Expr& a, const Expr& b) { return serialize(a) == serialize(b); }
bool structural_equal(const Stmt& a, const Stmt& b) { return serialize(a) == serialize(b); }
bool structural_equal(const Func& a, const Func& b) { return serialize(a) == serialize(b); }

}  // namespace loom::ir
