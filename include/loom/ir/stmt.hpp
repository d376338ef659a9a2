// Loop IR statements: loops of several kinds, stores, sequences, conditionals, allocations.
// Like expressions, they are immutable nodes with checking make() functions.
#pragma once

#include <memory>
#include <vector>

#include "loom/ir/buffer.hpp"
#include "loom/ir/expr.hpp"

namespace loom::ir {

enum class StmtKind : uint8_t {
  kLetStmt, kFor, kStore, kSeq, kIfThenElse, kAllocate, kBarrier, kEvaluate,
};

struct StmtNode {
  explicit StmtNode(StmtKind k) : kind(k) {}
  virtual ~StmtNode() = default;
  const StmtKind kind;
};

class Stmt {
 public:
  Stmt() = default;
  explicit Stmt(std::shared_ptr<const StmtNode> n) : node_(std::move(n)) {}
  bool defined() const { return node_ != nullptr; }
  const StmtNode* get() const { return node_.get(); }
  const StmtNode* operator->() const { return node_.get(); }
  StmtKind kind() const { return node_->kind; }
  bool same_as(const Stmt& o) const { return node_ == o.node_; }
  template <typename T>
  const T* as() const {
    return node_ && node_->kind == T::kKind ? static_cast<const T*>(node_.get()) : nullptr;
  }

 private:
  std::shared_ptr<const StmtNode> node_;
};

template <typename T, typename... Args>
Stmt make_stmt(Args&&... args) {
  return Stmt(std::make_shared<const T>(std::forward<Args>(args)...));
}

struct LetStmt : StmtNode {
  static constexpr StmtKind kKind = StmtKind::kLetStmt;
  LetStmt(Var v, Expr val, Stmt b)
      : StmtNode(kKind), var(std::move(v)), value(std::move(val)), body(std::move(b)) {}
  const Var var;
  const Expr value;
  const Stmt body;
  static Stmt make(Var var, Expr value, Stmt body);
};

enum class ForKind : uint8_t { kSerial, kParallel, kVectorized, kUnrolled, kGpuBlock, kGpuThread };
const char* for_kind_name(ForKind k);

// for (var = min; var < min + extent; ++var) body. GPU kinds name an axis 0..2 (x, y, z).
struct For : StmtNode {
  static constexpr StmtKind kKind = StmtKind::kFor;
  For(Var v, Expr mn, Expr ext, ForKind k, int ax, Stmt b)
      : StmtNode(kKind), var(std::move(v)), min(std::move(mn)), extent(std::move(ext)),
        for_kind(k), gpu_axis(ax), body(std::move(b)) {}
  const Var var;
  const Expr min, extent;
  const ForKind for_kind;
  const int gpu_axis;
  const Stmt body;
  static Stmt make(Var var, Expr min, Expr extent, ForKind kind, Stmt body, int gpu_axis = 0);
};

// buffer[indices] = value. A Ramp index stores a vector.
struct Store : StmtNode {
  static constexpr StmtKind kKind = StmtKind::kStore;
  Store(std::shared_ptr<const BufferNode> b, Expr v, std::vector<Expr> idx)
      : StmtNode(kKind), buffer(std::move(b)), value(std::move(v)), indices(std::move(idx)) {}
  const std::shared_ptr<const BufferNode> buffer;
  const Expr value;
  const std::vector<Expr> indices;
  static Stmt make(const Buffer& buffer, Expr value, std::vector<Expr> indices);
};

struct Seq : StmtNode {
  static constexpr StmtKind kKind = StmtKind::kSeq;
  explicit Seq(std::vector<Stmt> s) : StmtNode(kKind), stmts(std::move(s)) {}
  const std::vector<Stmt> stmts;
  // Flattens nested sequences and drops undefined statements; one statement is returned as is.
  static Stmt make(std::vector<Stmt> stmts);
};

struct IfThenElse : StmtNode {
  static constexpr StmtKind kKind = StmtKind::kIfThenElse;
  IfThenElse(Expr c, Stmt t, Stmt e)
      : StmtNode(kKind), cond(std::move(c)), then_case(std::move(t)), else_case(std::move(e)) {}
  const Expr cond;
  const Stmt then_case, else_case;  // else_case may be undefined
  static Stmt make(Expr cond, Stmt then_case, Stmt else_case = Stmt());
};

// Storage for buffer (its layout's physical size, in its scope) live during body.
struct Allocate : StmtNode {
  static constexpr StmtKind kKind = StmtKind::kAllocate;
  Allocate(std::shared_ptr<const BufferNode> b, Stmt bd)
      : StmtNode(kKind), buffer(std::move(b)), body(std::move(bd)) {}
  const std::shared_ptr<const BufferNode> buffer;
  const Stmt body;
  static Stmt make(const Buffer& buffer, Stmt body);
};

// Synchronises the threads of a GPU block.
struct Barrier : StmtNode {
  static constexpr StmtKind kKind = StmtKind::kBarrier;
  Barrier() : StmtNode(kKind) {}
  static Stmt make();
};

struct Evaluate : StmtNode {
  static constexpr StmtKind kKind = StmtKind::kEvaluate;
  explicit Evaluate(Expr v) : StmtNode(kKind), value(std::move(v)) {}
  const Expr value;
  static Stmt make(Expr value);
};

}  // namespace loom::ir
