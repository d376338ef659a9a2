// Loop-IR passes, one per file under lib/passes, and lower(): the flat list that runs them.
// LOOM_DUMP_IR=<dir> writes the IR after every pass.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"
#include "loom/te/task.hpp"

namespace loom::passes {

// Rewrites every multi-dimensional Load/Store into one physical element offset by its buffer's
// layout. Code generators accept only flattened IR.
ir::Func flatten_layouts(const ir::Func& f);

// Replaces each kUnrolled loop of constant extent by one simplified copy of its body per
// iteration; a symbolic extent stays a loop (the code generator's unroll hint).
ir::Func unroll_loops(const ir::Func& f);

// Rewrites each kVectorized loop of constant extent L as straight-line code on L-lane vectors:
// the loop variable becomes a Ramp, invariant scalars Broadcasts. An error names a loop whose
// body cannot be vectorized (a store not indexed by the loop variable, a lane-dependent if).
absl::StatusOr<ir::Func> vectorize_loops(const ir::Func& f);

// Makes the outermost serial loop of each loop nest (looking through loops of one iteration)
// parallel when the nest executes at least min_work stores (a symbolic extent counts as 64
// iterations) and the loop's iterations write disjoint elements: each buffer the body writes is
// accessed only at index var in one fixed dim. Runs on multi-dimensional (unflattened) indices.
ir::Func parallelize_outer_loops(const ir::Func& f, int64_t min_work);
// The same, and inside each loop made parallel, the loop directly in its body too when its
// iterations are disjoint, and so on down (for a GPU, which binds the whole nest to threads).
ir::Func parallelize_loop_nests(const ir::Func& f, int64_t min_work);

// The index in shape `to` of the element at index `index` of shape `from`, both row-major over
// the same elements. Dims that match pass their index through unchanged (a vector index there
// stays a Ramp); others are regrouped by division and remainder, on vectors when a vector index
// is among them (a gather or scatter in the end). nullopt when the element counts differ.
std::optional<std::vector<ir::Expr>> reshape_index(const std::vector<ir::Expr>& index,
                                                   const std::vector<ir::Expr>& from,
                                                   const std::vector<ir::Expr>& to);

// What post-scheduling fusion puts around an anchor kernel's output stores (its epilogue).
struct EpilogueFusion {
  // The anchor operator's output shape; the kernel's output buffer may view the same elements
  // in another shape (a GEMM's [G, M, N] for a [batch, seq, N] node), row-major alike.
  std::vector<ir::Expr> anchor_shape;
  // Where the anchor's element at index J (of anchor_shape) lands in `output`; nullopt when a
  // vector index cannot be carried through (the caller's mapping needs scalar indices).
  std::function<std::optional<std::vector<ir::Expr>>(const std::vector<ir::Expr>& J)> output_index;
  // The epilogue's value at scalar index I of `output`, where the anchor's element is v.
  std::function<ir::Expr(const std::vector<ir::Expr>& I, const ir::Expr& v)> value;
  // Whether `lanes` consecutive anchor elements along its last dim, the first at a multiple of
  // `lanes`, land at consecutive positions along the output's last dim (then an aligned vector
  // store stays one vector store). Null: never.
  std::function<bool(int lanes)> last_dim_contiguous;
  std::vector<ir::Buffer> inputs;  // the buffers value() reads, appended to the kernel's params
  ir::Buffer output;               // the fused kernel's output, replacing the anchor's
  // Every anchor element lands at its own position of `output`, stored alike (the epilogue is
  // elementwise ops and reshapes, row-major, or elementwise ops in the anchor's layout). Then the kernel gets one more parameter before `output`, to be
  // bound to the same memory: the output viewed in the kernel's own shape, where partial results
  // stay at the kernel's own indices.
  bool flat_preserving = false;
};

// Post-scheduling fusion of an epilogue: every store of the kernel's output (its last buffer
// parameter) becomes a store of the epilogue's value at the mapped index of e.output; a vector
// store goes through a small local buffer and a vectorized loop over its lanes (a scatter unless
// the lanes stay contiguous; when they do for aligned vectors, an alignment test picks a
// contiguous store at run time). A kernel that
// reads its output (partial sums kept there) must mark its final stores with final_value():
// the others store and reload the partial value at the kernel's own index, in the aliased view
// when e.flat_preserving and the dtype stays, else in scratch memory the kernel allocates (as
// large as its output). The result has the kernel's inputs, then e.inputs, then the view if
// e.flat_preserving, then e.output.
// An error says why the kernel cannot take the epilogue; the caller then runs it separately.
absl::StatusOr<ir::Func> fuse_epilogue(const ir::Func& kernel, const EpilogueFusion& e);

// What post-scheduling fusion puts in place of one input of an anchor kernel (its prologue).
struct PrologueFusion {
  int input = 0;                       // the kernel's buffer parameter it replaces
  std::vector<ir::Expr> input_shape;   // that input's shape (the kernel may view it otherwise)
  // The prologue's value at scalar index J of the input.
  std::function<ir::Expr(const std::vector<ir::Expr>& J)> value;
  std::vector<ir::Buffer> inputs;      // the buffers value() reads, in place of the parameter
};

// Post-scheduling fusion of a prologue: every load of the input becomes the prologue's value at
// that index; a vector load is computed just before its statement into a small local buffer by a
// vectorized loop over its lanes. The parameter is replaced by p.inputs, in place. An error says
// why the kernel cannot take it (it writes the input, say).
absl::StatusOr<ir::Func> fuse_prologue(const ir::Func& kernel, const PrologueFusion& p);

// Removes final_value() marks (lower_scheduled runs it first).
ir::Func strip_final_marks(const ir::Func& f);
// The default GPU mapping: when the kernel body (through lets and loops of one iteration) is one
// kParallel loop (with the kParallel loops of constant extent directly nested in it, collapsed
// into one index space), its iterations go one per thread, threads_per_block threads per block
// (blockIdx.x, threadIdx.x), guarded when they do not divide the extent. Every other kParallel loop becomes
// serial, so a kernel with several loop nests runs in one thread: correct, not fast.
ir::Func bind_gpu_loops(const ir::Func& f, int threads_per_block);

// A scheduled kernel (from a template) -> flattened, simplified loop IR ready for a code generator.
ir::Func lower_scheduled(const ir::Func& f, const Target& target);

// Task -> flattened, simplified loop IR ready for a code generator, using the default schedule.
ir::Func lower(const te::Task& task, const Target& target);

}  // namespace loom::passes
