// The CUDA lowering of injective tasks (elementwise, broadcast and data-movement ops, which have
// no templates of their own): one grid-stride kernel over the output elements.
#pragma once

#include "absl/status/statusor.h"
#include "loom/core/target.hpp"
#include "loom/ir/func.hpp"
#include "loom/te/task.hpp"
#include "loom/tune/space.hpp"

namespace loom::ops {

// Hardware-centric: threads per block, elements per thread and step ("vector", consecutive
// elements, which gives each thread independent loads in flight) and resident blocks per SM
// (the grid is at most sm_count * blocks_per_sm blocks; the threads stride over the rest).
tune::Space injective_cuda_space(const Target& target);

// A kernel computing every output of `task` (compute tensors of one static shape whose values,
// with injective producers inlined, read only the task's inputs) with the task mapping
//   repeat(steps) * spatial(blocks * threads) * repeat(vector)
// from the threads to the flat output elements. Params as te::lower_default: inputs, outputs.
// An error says why the task does not fit (a reduction, symbolic or differing shapes).
absl::StatusOr<ir::Func> injective_cuda_kernel(const te::Task& task, const Target& target,
                                               const tune::Config& config);

}  // namespace loom::ops
