// Buffer: a named region of memory with an element dtype, a logical shape and a Layout.
// Loads and stores address it by logical indices until the flatten pass applies the layout.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "loom/ir/expr.hpp"
#include "loom/layout/layout.hpp"

namespace loom::ir {

enum class MemoryScope : uint8_t { kGlobal, kShared, kLocal };
const char* memory_scope_name(MemoryScope s);

struct BufferNode {
  std::string name;
  DType dtype;                // scalar element type
  std::vector<Expr> shape;    // logical extents (i64 expressions; may be symbolic)
  Layout layout;
  MemoryScope scope = MemoryScope::kGlobal;
};

class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::shared_ptr<const BufferNode> n) : node_(std::move(n)) {}
  // Row-major unless a layout is given; the layout's shape must equal shape.
  static Buffer make(std::string name, DType dtype, std::vector<Expr> shape,
                     MemoryScope scope = MemoryScope::kGlobal);
  static Buffer make(std::string name, DType dtype, Layout layout,
                     MemoryScope scope = MemoryScope::kGlobal);

  bool defined() const { return node_ != nullptr; }
  const std::shared_ptr<const BufferNode>& node() const { return node_; }
  const BufferNode* operator->() const { return node_.get(); }
  const std::string& name() const { return node_->name; }
  DType dtype() const { return node_->dtype; }
  const std::vector<Expr>& shape() const { return node_->shape; }
  const Layout& layout() const { return node_->layout; }
  MemoryScope scope() const { return node_->scope; }
  int rank() const { return static_cast<int>(node_->shape.size()); }
  bool same_as(const Buffer& o) const { return node_ == o.node_; }

  // buffer(i, j) is a Load at logical index (i, j).
  template <typename... Idx>
  Expr operator()(Idx... idx) const {
    return Load::make(*this, std::vector<Expr>{Expr(idx)...});
  }
  Expr load(std::vector<Expr> indices) const { return Load::make(*this, std::move(indices)); }

 private:
  std::shared_ptr<const BufferNode> node_;
};

}  // namespace loom::ir
