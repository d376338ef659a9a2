// The CUDA schedule templates of matmul (private to lib/ops): an f32 SIMT GEMM whose block, warp,
// lane and register levels are task mappings, with double-buffered shared-memory tiles, and an
// f16/bf16 tensor-core GEMM (mma.sync m16n8k16, ldmatrix, a cp.async multi-stage pipeline), and
// on sm_90 a warpgroup GEMM (wgmma from swizzled shared tiles).
#pragma once

#include "loom/graph/op.hpp"

namespace loom::ops {

ScheduleTemplate matmul_cuda_template();
// f16/bf16 matmul on tensor cores (tensor_core_cuda.cpp).
ScheduleTemplate matmul_tensor_core_cuda_template();
// f16/bf16 matmul with wgmma on sm_90 (tensor_core_cuda.cpp); tried before the mma.sync one.
ScheduleTemplate matmul_wgmma_cuda_template();

}  // namespace loom::ops
