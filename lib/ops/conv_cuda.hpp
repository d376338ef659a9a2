// The CUDA schedule template of conv2d (private to lib/ops): direct convolution, any groups
// (depthwise included), each thread a register tile of output channels x output pixels.
#pragma once

#include "loom/graph/op.hpp"

namespace loom::ops {

ScheduleTemplate conv2d_cuda_template();

}  // namespace loom::ops
