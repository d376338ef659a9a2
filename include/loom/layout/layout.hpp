// Layout: how a tensor's logical index maps to a physical element offset. A layout is a base
// (row-major, or explicit strides) followed by ALT's primitives on the physical dims: split,
// reorder, fuse, pad and unfold, and swizzle (an XOR permutation within a dim, for shared
// memory without bank conflicts). Layout::row_major({N, C, H, W}).split(1, 16).reorder({0, 1, 3,
// 4, 2}) is NCHW16c. Each layout knows its physical shape, maps logical indices to physical ones
// and back, and prints a canonical form (part of cache keys).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "loom/ir/expr.hpp"

namespace loom {

// One primitive applied to the physical dims so far.
struct LayoutStep {
  enum class Kind : uint8_t { kSplit, kReorder, kFuse, kPad, kUnfold, kSwizzle };
  Kind kind = Kind::kSplit;
  int dim = 0;
  int by = 0;             // swizzle: the dim whose index permutes dim's
  // split: factor; pad: multiple; unfold: tile, stride; swizzle: width, step
  int64_t a = 0, b = 0;
  std::vector<int> perm;  // reorder
  std::vector<ir::Expr> extents_before;  // the physical extents it applies to
  std::string to_string() const;
  // The same primitive with the same arguments (the recorded extents aside).
  bool operator==(const LayoutStep& o) const {
    return kind == o.kind && dim == o.dim && by == o.by && a == o.a && b == o.b &&
           perm == o.perm;
  }
};

// "" for no steps, else ".split(1, 16).reorder(0, 1, 3, 4, 2)".
std::string steps_to_string(const std::vector<LayoutStep>& steps);

// Steps of the common image layouts, for rank-4 NCHW tensors: NCHW{block}c (channels in blocks
// of `block`, the block innermost; channels past a multiple of block pad) and NHWC.
std::vector<LayoutStep> channels_blocked(int64_t block);
std::vector<LayoutStep> channels_last();
// Convolution weights, rank-4 OIHW, stored HWIO: for each tap its input channels' rows of output
// channels (the B operand of an NHWC implicit GEMM, row-major (KH * KW * I) x O).
std::vector<LayoutStep> weights_hwio();

class Layout {
 public:
  Layout() = default;
  // Last dimension contiguous; strides are suffix products of the extents.
  static Layout row_major(std::vector<ir::Expr> shape);
  // Explicit strides (in elements) over a storage of physical_size elements; takes no primitives.
  static Layout strided(std::vector<ir::Expr> shape, std::vector<ir::Expr> strides,
                        ir::Expr physical_size);

  // Primitives on the physical dims (in their current order). A bad argument (dim out of range,
  // factor below 1, not a permutation, a tile longer than the dim) leaves the layout as it was
  // and records an error in status(); later primitives are then ignored.
  // Dim d of extent E becomes (ceil(E / factor), factor); a factor that does not divide E pads.
  Layout split(int dim, int64_t factor) const;
  // Physical dim k becomes the old dim perm[k].
  Layout reorder(std::vector<int> perm) const;
  // Dims d and d + 1 become one, d outer.
  Layout fuse(int dim) const;
  // Dim d's extent rounds up to a multiple (the padding holds no logical element).
  Layout pad(int dim, int64_t multiple) const;
  // Dim d of extent E becomes overlapped tiles (n, tile), tile t holding t * stride + [0, tile):
  // convolution windows. Elements in several tiles are stored in each; the logical-to-physical
  // map picks the tile that starts at or before it, the last one for the tail.
  Layout unfold(int dim, int64_t tile, int64_t stride) const;
  // Index i of dim d becomes i XOR ((j / step) % width), j the index of dim `by` (not d): a
  // permutation of each row of d, different for each group of `step` rows of `by`. width is a
  // power of two dividing d's static extent, so the result stays in range; the shape does not
  // change. With d the 16-byte chunks of a shared-memory row and `by` the row, the rows one
  // warp-wide access reads fall in different banks (the swizzle CUTLASS and TMA use).
  Layout swizzle(int dim, int by, int64_t width, int64_t step) const;

  // The primitive step applied here (its recorded extents are ignored).
  Layout then(const LayoutStep& step) const;
  // row_major(shape) followed by steps.
  static Layout of(std::vector<ir::Expr> shape, const std::vector<LayoutStep>& steps);

  const absl::Status& status() const { return status_; }
  bool ok() const { return status_.ok(); }

  int rank() const { return static_cast<int>(shape_.size()); }
  const std::vector<ir::Expr>& shape() const { return shape_; }  // logical extents
  const std::vector<ir::Expr>& physical_shape() const { return physical_shape_; }
  const std::vector<LayoutStep>& steps() const { return steps_; }
  // Element strides of the physical dims (row-major over physical_shape() after primitives).
  const std::vector<ir::Expr>& strides() const { return strides_; }
  // Row-major over the logical shape, with no primitive.
  bool is_row_major() const { return row_major_ && steps_.empty(); }
  // Whether each physical element holds at most one logical element and each logical element
  // one physical element (false after unfold).
  bool is_injective() const;

  // The physical index of a logical index, and back. A physical index p holds a logical element
  // when physical_index(logical_index(p)) is p again; the others are padding (or, after unfold,
  // other copies).
  std::vector<ir::Expr> physical_index(const std::vector<ir::Expr>& logical) const;
  std::vector<ir::Expr> logical_index(const std::vector<ir::Expr>& physical) const;
  // The element stride of logical dim d when the offset is affine in it alone (no primitive
  // splits, fuses or unfolds it; reorders and padding keep it): offset(i + e_d) = offset(i) +
  // stride. Null otherwise. Kernels use it to step through a dim with one addition.
  std::optional<ir::Expr> stride_of(int d) const;
  // Physical element offset of a logical index (one expression per dim).
  ir::Expr offset(const std::vector<ir::Expr>& indices) const;
  // Number of elements the storage must hold.
  ir::Expr physical_size() const { return physical_size_; }

  // Canonical text: row_major(1, 64, 56, 56).split(1, 16).reorder(0, 1, 3, 4, 2).
  std::string to_string() const;

 private:
  Layout with(LayoutStep step, std::vector<ir::Expr> physical) const;
  Layout failed(std::string why) const;
  void set_physical(std::vector<ir::Expr> physical);

  std::vector<ir::Expr> shape_;
  std::vector<ir::Expr> physical_shape_;
  std::vector<ir::Expr> strides_;
  ir::Expr physical_size_;
  bool row_major_ = true;
  std::vector<LayoutStep> steps_;
  absl::Status status_;
};

}  // namespace loom
