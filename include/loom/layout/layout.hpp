// Layout: how a tensor's logical index maps to a physical element offset.
// Row-major with explicit strides today; ALT's split/reorder/fuse/pad/unfold primitives extend it.
#pragma once

#include <string>
#include <vector>

#include "loom/ir/expr.hpp"

namespace loom {

class Layout {
 public:
  Layout() = default;
  // Last dimension contiguous; strides are suffix products of the extents.
  static Layout row_major(std::vector<ir::Expr> shape);
  // Explicit strides (in elements) over a storage of physical_size elements.
  static Layout strided(std::vector<ir::Expr> shape, std::vector<ir::Expr> strides,
                        ir::Expr physical_size);

  int rank() const { return static_cast<int>(shape_.size()); }
  const std::vector<ir::Expr>& shape() const { return shape_; }
  const std::vector<ir::Expr>& strides() const { return strides_; }
  bool is_row_major() const { return row_major_; }

  // Physical element offset of a logical index (one expression per dim).
  ir::Expr offset(const std::vector<ir::Expr>& indices) const;
  // Number of elements the storage must hold.
  ir::Expr physical_size() const { return physical_size_; }

  std::string to_string() const;

 private:
  std::vector<ir::Expr> shape_;
  std::vector<ir::Expr> strides_;
  ir::Expr physical_size_;
  bool row_major_ = true;
};

}  // namespace loom
