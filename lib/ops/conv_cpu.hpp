// The CPU schedule templates of conv2d (private to lib/ops): 1x1 as a GEMM, depthwise vectorized
// over output width, Winograd F(2x2, 3x3) for 3x3 stride-1 convs in channel-blocked layouts, and
// a channel-blocked direct convolution for everything else.
#pragma once

#include <vector>

#include "loom/graph/op.hpp"

namespace loom::ops {

// In the order they are tried: conv2d_1x1_gemm, conv2d_depthwise, conv2d_winograd,
// conv2d_direct.
std::vector<ScheduleTemplate> conv2d_cpu_templates();

}  // namespace loom::ops
