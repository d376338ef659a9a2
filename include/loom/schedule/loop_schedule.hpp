// LoopSchedule: loop transformation primitives (split, reorder, fuse, tile, unroll, vectorize,
// parallel, compute_at, compute_inline, cache_write) applied in place to a lowered loop-IR Func.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/ir/buffer.hpp"
#include "loom/ir/func.hpp"

namespace loom::schedule {

// What split does with the iterations left over when the factor does not divide the extent.
enum class TailStrategy : uint8_t {
  kAuto,   // a tail loop for constant extents, a guard for symbolic ones
  kLoop,   // a separate tail loop after the main loops: the main body stays guard-free
  kGuard,  // round the outer extent up and guard the body with outer * factor + inner < extent
};

struct SplitLoops {
  ir::Var outer, inner;
};

struct TileLoops {
  ir::Var x_outer, y_outer, x_inner, y_inner;
};

// Holds a Func in logical indices (te::lower_default's output, before flatten_layouts) and
// transforms its loops. Loops are named by their loop variable; every primitive checks that it
// is legal and otherwise returns an error naming the loop or buffer and leaves the Func as it was.
class LoopSchedule {
 public:
  explicit LoopSchedule(ir::Func func) : func_(std::move(func)) {}

  const ir::Func& func() const { return func_; }

  // The variable of the one loop called name; an error when there is none or several.
  absl::StatusOr<ir::Var> loop(const std::string& name) const;
  // A buffer of the func (parameter or allocation) by name.
  absl::StatusOr<ir::Buffer> buffer(const std::string& name) const;

  // loop -> outer (extent ceil or floor of extent / factor) and inner (extent factor).
  absl::StatusOr<SplitLoops> split(const ir::Var& loop, int64_t factor,
                                   TailStrategy tail = TailStrategy::kAuto);
  // Permutes perfectly nested loops; order lists them outermost first. Tail loops left between
  // them by split are distributed into their own nests first.
  absl::Status reorder(const std::vector<ir::Var>& order);
  // Two directly nested loops become one over the product of their extents.
  absl::StatusOr<ir::Var> fuse(const ir::Var& outer, const ir::Var& inner);
  // split(x, fx), split(y, fy), reorder(x_outer, y_outer, x_inner, y_inner).
  absl::StatusOr<TileLoops> tile(const ir::Var& x, const ir::Var& y, int64_t fx, int64_t fy);

  // Marks a loop of constant extent for the unroll pass (passes::unroll_loops).
  absl::Status unroll(const ir::Var& loop);
  // Marks an innermost loop of constant extent for the vectorize pass (passes::vectorize_loops),
  // after checking that its body can become straight-line vector code.
  absl::Status vectorize(const ir::Var& loop);
  // Marks a loop whose iterations write distinct locations as parallel.
  absl::Status parallel(const ir::Var& loop);

  // Moves the loop nest computing the intermediate producer to the start of loop's body,
  // computing only the rectangular region that body reads (inferred from affine indices). The
  // producer's storage moves too: a region-sized buffer of the same name allocated in loop.
  // Every read of producer must lie inside loop; its nest must still be the default one.
  absl::Status compute_at(const ir::Buffer& producer, const ir::Var& loop);
  // Replaces every load of an injective intermediate by its defining expression and removes
  // its loop nest and storage.
  absl::Status compute_inline(const ir::Buffer& buffer);
  // Accumulates the reduction writing buffer under loop into a local tile (one element per
  // point of the loops between loop and the reduction), written back once the reduction is
  // done. Returns the local buffer. The tile's init and write-back loops are named
  // "<loop>.init" and "<loop>.write"; the update loops keep their variables.
  absl::StatusOr<ir::Buffer> cache_write(const ir::Buffer& buffer, const ir::Var& loop);

 private:
  ir::Func func_;
  // Loops created by split as tails (and their distributed copies): reorder may distribute an
  // enclosing loop over them to make the main loops perfectly nested.
  std::set<const ir::VarNode*> tail_loops_;
};

}  // namespace loom::schedule
