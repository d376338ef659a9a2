// The CUDA schedule template of matmul (private to lib/ops): an f32 SIMT GEMM whose block, warp,
// lane and register levels are task mappings, with double-buffered shared-memory tiles.
#pragma once

#include "loom/graph/op.hpp"

namespace loom::ops {

ScheduleTemplate matmul_cuda_template();

}  // namespace loom::ops
