// The CUDA schedule template of attention (private to lib/ops): one kernel on tensor cores with
// an online softmax, the scores never leaving registers (attention_cuda.cpp).
#pragma once

#include "loom/graph/op.hpp"

namespace loom::ops {

ScheduleTemplate attention_tensor_core_cuda_template();

}  // namespace loom::ops
