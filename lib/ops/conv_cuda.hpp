// The CUDA schedule template of conv2d (private to lib/ops): direct convolution, any groups
// (depthwise included), each thread a register tile of output channels x output pixels.
#pragma once

#include "loom/graph/op.hpp"

namespace loom::ops {

ScheduleTemplate conv2d_cuda_template();
// f16/bf16 conv2d (groups 1) as an implicit GEMM on tensor cores (tensor_core_cuda.cpp).
ScheduleTemplate conv2d_tensor_core_cuda_template();
// f16/bf16 conv2d (groups 1) as an implicit GEMM with wgmma on sm_90 (tensor_core_cuda.cpp);
// tried first.
ScheduleTemplate conv2d_wgmma_cuda_template();

}  // namespace loom::ops
