// Loop-IR passes, one per file under lib/passes, and lower(): the flat list that runs them.
// LOOM_DUMP_IR=<dir> writes the IR after every pass.
#pragma once

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

// The default GPU mapping: when the kernel body (through lets and loops of one iteration) is one
// kParallel loop, its iterations go one per thread, threads_per_block threads per block (blockIdx.x,
// threadIdx.x), guarded when they do not divide the extent. Every other kParallel loop becomes
// serial, so a kernel with several loop nests runs in one thread: correct, not fast.
ir::Func bind_gpu_loops(const ir::Func& f, int threads_per_block);

// A scheduled kernel (from a template) -> flattened, simplified loop IR ready for a code generator.
ir::Func lower_scheduled(const ir::Func& f, const Target& target);

// Task -> flattened, simplified loop IR ready for a code generator, using the default schedule.
ir::Func lower(const te::Task& task, const Target& target);

}  // namespace loom::passes
